// SPDX-License-Identifier: MIT
/*
 * Models whose keys come from the key authority: the real daemon,
 * $BUILD/bin/orthod, started for each test with the fixture's keys
 * imported. Keys from the daemon give the same ops as the key file; a
 * shard not granted is NO_KEY with a warning naming it; a revocation, by
 * the library's thread or through the event fd, leaves the shard REVOKED
 * for good, ops Base-only for it and nothing of it resident in the
 * daemon's status, also while another thread runs ops; a daemon that goes
 * away leaves the client running on what it holds.
 */
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "model_fixture.h"
#include "ortho-admin.h"

struct daemon {
	char *dir, *state, *sock, *addr;
	pid_t pid;
};

static char *daemon_bin(void)
{
	const char *b = getenv("BUILD");
	char rel[256];

	snprintf(rel, sizeof(rel), "%s/bin/orthod", b && *b ? b : "build");
	return rel[0] == '/' ? strdup(rel) : tu_srcpath(rel);
}

static int can_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), ok;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	ok = fd >= 0 && !connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	if (fd >= 0)
		close(fd);
	return ok;
}

static struct ortho_admin *admin(struct daemon *d)
{
	struct ortho_admin *a = NULL;

	ck_assert_int_eq(ortho_admin_connect(NULL, d->sock, &a), 0);
	return a;
}

static void grant(struct daemon *d, const char *label)
{
	struct ortho_admin_rule r = { .sz = sizeof(r),
				      .principal = ORTHO_ADMIN_UID,
				      .id = getuid() };
	struct ortho_admin *a = admin(d);

	snprintf(r.label, sizeof(r.label), "%s", label);
	ck_assert_int_eq(ortho_admin_grant(a, &r), 0);
	ortho_admin_close(a);
}

/* orthod in a fresh directory, the fixture's keys imported. */
static void daemon_start(struct daemon *d)
{
	struct ortho_admin_import_result ir = { .sz = sizeof(ir) };
	struct ortho_admin *a;
	char *bin = daemon_bin();
	int i;

	ck_assert_msg(!access(bin, X_OK), "%s: not built (make)", bin);
	d->dir = tu_mkdtemp("model-authority");
	ck_assert_ptr_nonnull(d->dir);
	d->state = path2(d->dir, "state");
	d->sock = path2(d->dir, "sock");
	ck_assert_int_ge(asprintf(&d->addr, "unix:%s", d->sock), 0);
	d->pid = fork();
	ck_assert_int_ge(d->pid, 0);
	if (!d->pid) {
		execl(bin, "orthod", "--state-dir", d->state, "--socket",
		      d->sock, "--foreground", (char *)NULL);
		_exit(127);
	}
	free(bin);
	for (i = 0; i < 500 && !can_connect(d->sock); i++)
		usleep(10000);
	ck_assert_msg(can_connect(d->sock), "orthod did not come up");
	a = admin(d);
	ck_assert_int_eq(ortho_admin_import_keys(a, g_keys, 0, &ir), 0);
	ck_assert_uint_eq(ir.keys, g_nref);
	ortho_admin_close(a);
}

static void daemon_stop(struct daemon *d)
{
	int st = 0;

	if (d->pid) {
		kill(d->pid, SIGTERM);
		waitpid(d->pid, &st, 0);
	}
	tu_rmrf(d->dir);
	free(d->dir);
	free(d->state);
	free(d->sock);
	free(d->addr);
}

static struct ortho_ctx *auth_ctx(struct daemon *d, struct tu_log *l,
				  unsigned int flags)
{
	struct ortho_ctx_opts o = {
		.sz = sizeof(o), .backend = "cpu", .threads = 2,
		.log_fn = tu_log_fn, .log_user = l,
		.log_level = ORTHO_LOG_WARNING, .authority = d->addr,
		.flags = flags | ORTHO_CTX_AUTHORITY_REQUIRED,
	};
	struct ortho_ctx *ctx = NULL;

	if (l)
		tu_log_clear(l);
	ck_assert_int_eq(ortho_ctx_new(&o, &ctx), 0);
	return ctx;
}

/* Resident entries the daemon lists for us, of @label (NULL: any). */
static unsigned int resident_count(struct daemon *d, const char *label)
{
	struct ortho_admin_client cl = { .sz = sizeof(cl) };
	struct ortho_admin_resident r = { .sz = sizeof(r) };
	struct ortho_admin *a = admin(d);
	struct ortho_admin_status *st;
	unsigned int i, j, n = 0;

	ck_assert_int_eq(ortho_admin_status_get(a, &st), 0);
	for (i = 0; i < ortho_admin_status_client_count(st); i++) {
		ck_assert_int_eq(ortho_admin_status_client(st, i, &cl), 0);
		if (cl.pid != (uint32_t)getpid())
			continue;
		for (j = 0; j < cl.resident; j++) {
			ck_assert_int_eq(ortho_admin_status_resident(st, i, j,
								     &r), 0);
			n += !label || !strcmp(r.label, label);
		}
	}
	ortho_admin_status_free(st);
	ortho_admin_close(a);
	return n;
}

static unsigned int count_state(struct ortho_model *m, const char *label,
				uint32_t state)
{
	struct ortho_shard_info si;
	unsigned int i, n = 0;

	for (i = 0; i < ortho_model_shard_count(m); i++) {
		shard_info(m, i, &si);
		n += (!label || !strcmp(si.label, label)) && si.state == state;
	}
	return n;
}

static struct ortho_admin_revoke_info revoke_label(struct daemon *d,
						   const char *label)
{
	struct ortho_admin_revoke_opts o = { .sz = sizeof(o), .label = label,
					     .timeout_ms = 10000 };
	struct ortho_admin_revoke_info in = { .sz = sizeof(in) };
	struct ortho_admin_revoke *r = NULL;
	struct ortho_admin *a = admin(d);

	ck_assert_int_eq(ortho_admin_revoke(a, &o, &r), 0);
	ck_assert_int_eq(ortho_admin_revoke_info_get(r, &in), 0);
	ortho_admin_revoke_free(r);
	ortho_admin_close(a);
	return in;
}

/* Every linear tensor: y the same, bit for bit, in @a and @b. */
static void same_outputs(struct ortho_model *a, struct ortho_model *b)
{
	uint64_t seed = 5;
	unsigned int i;

	for (i = 0; i < g_nlin; i++) {
		const struct lin *l = &g_lin[i];
		float *x = rand_vec(2 * l->cols, &seed);
		float ya[2 * HID], yb[2 * HID];
		struct ortho_tensor *ta, *tb;

		ck_assert_int_eq(ortho_model_find_tensor(a, l->name, &ta), 0);
		ck_assert_int_eq(ortho_model_find_tensor(b, l->name, &tb), 0);
		ck_assert_int_eq(ortho_linear(a, ta, x, ya, 2), 0);
		ck_assert_int_eq(ortho_linear(b, tb, x, yb, 2), 0);
		ck_assert_msg(!memcmp(ya, yb, 2 * l->rows * sizeof(float)),
			      "%s: keys from orthod give other outputs",
			      l->name);
		free(x);
	}
}

/*
 * Every linear tensor agrees with W_eff without the shards of @label
 * (NULL: with every shard; "*": without any).
 */
static void check_all_without(struct ortho_model *m, const char *label)
{
	const char *skip[64] = { NULL };
	unsigned int i, n = 0;

	if (label)
		n = ids_of(strcmp(label, "*") ? label : NULL, skip);

	for (i = 0; i < g_nlin; i++)
		check_linear_skip(m, &g_lin[i], skip, n);
}

START_TEST(test_keys_from_daemon)
{
	struct tu_log lg;
	struct daemon d;
	struct ortho_ctx *ctx, *fctx;
	struct ortho_model *m, *fm;

	daemon_start(&d);
	grant(&d, "a");
	grant(&d, "b");
	ctx = auth_ctx(&d, &lg, 0);
	m = open_model(ctx, g_dir, NULL, 0, 0);
	ck_assert_uint_eq(count_state(m, NULL, ORTHO_SHARD_RESIDENT), g_nref);
	fctx = tu_ctx(NULL);
	fm = open_model(fctx, g_dir, g_keys, 0, 0);
	same_outputs(m, fm);
	check_all_without(m, NULL);
	/* Every shard reported resident, once each. */
	ck_assert_uint_eq(resident_count(&d, NULL), g_nref);
	ck_assert_msg(!tu_log_has(&lg, "warning"), "%s", lg.buf);
	ortho_model_close(fm);
	ortho_ctx_free(fctx);
	ortho_model_close(m);
	/* Closed: nothing of ours is resident any more. */
	ck_assert_uint_eq(resident_count(&d, NULL), 0);
	ortho_ctx_free(ctx);
	daemon_stop(&d);
}
END_TEST

START_TEST(test_not_granted)
{
	const char *bids[64];
	unsigned int nb = ids_of("b", bids);
	struct tu_log lg;
	struct daemon d;
	struct ortho_ctx *ctx;
	struct ortho_model *m;

	daemon_start(&d);
	grant(&d, "a");
	ctx = auth_ctx(&d, &lg, 0);
	m = open_model(ctx, g_dir, NULL, 0, 0);
	ck_assert_uint_eq(count_state(m, "b", ORTHO_SHARD_NO_KEY), nb);
	ck_assert_uint_eq(count_state(m, "a", ORTHO_SHARD_RESIDENT),
			  g_nref - nb);
	/* One warning, naming the shard and why. */
	ck_assert_uint_eq(count_in(lg.buf, "not granted"), 1);
	ck_assert_msg(tu_log_has(&lg, bids[0]), "%s", lg.buf);
	check_all_without(m, "b");
	ck_assert_uint_eq(resident_count(&d, "b"), 0);
	ortho_model_close(m);
	ortho_ctx_free(ctx);
	daemon_stop(&d);
}
END_TEST

START_TEST(test_revoke_by_thread)
{
	const char *aids[64];
	unsigned int na = ids_of("a", aids);
	struct ortho_admin_revoke_info in;
	struct tu_log lg;
	struct daemon d;
	struct ortho_ctx *ctx;
	struct ortho_model *m, *m2;

	daemon_start(&d);
	grant(&d, "a");
	grant(&d, "b");
	ctx = auth_ctx(&d, &lg, 0);
	m = open_model(ctx, g_dir, NULL, 0, 0);
	ck_assert_uint_eq(resident_count(&d, "a"), na);
	in = revoke_label(&d, "a");
	ck_assert_uint_eq(in.shards, na);
	ck_assert_uint_eq(in.holders, na);
	ck_assert_uint_eq(in.complete, na);
	ck_assert_uint_eq(in.busy + in.gone, 0);
	/* Acknowledged means done: revoked, wiped, not reported. */
	ck_assert_uint_eq(count_state(m, "a", ORTHO_SHARD_REVOKED), na);
	ck_assert_uint_eq(resident_count(&d, "a"), 0);
	ck_assert_uint_eq(resident_count(&d, "b"), g_nref - na);
	check_all_without(m, "a");
	/* Never loaded again, whatever is asked. */
	ck_assert_int_eq(ortho_model_prefetch(m, 0, NL), 0);
	check_all_without(m, "a");
	ck_assert_uint_eq(count_state(m, "a", ORTHO_SHARD_REVOKED), na);
	ck_assert_int_eq(ortho_model_drop_shard(m, aids[0]), -EALREADY);
	/* A model opened later gets no key for them. */
	m2 = open_model(ctx, g_dir, NULL, 0, 0);
	ck_assert_uint_eq(count_state(m2, "a", ORTHO_SHARD_REVOKED), na);
	check_all_without(m2, "a");
	ortho_model_close(m2);
	ortho_model_close(m);
	ortho_ctx_free(ctx);
	daemon_stop(&d);
}
END_TEST

struct revoker {
	struct daemon *d;
	const char *label;
	struct ortho_admin_revoke_info in;
	atomic_int done;
};

static void *revoke_main(void *arg)
{
	struct revoker *r = arg;

	r->in = revoke_label(r->d, r->label);
	atomic_store(&r->done, 1);
	return NULL;
}

START_TEST(test_revoke_polled)
{
	unsigned int na, handled = 0;
	const char *aids[64];
	struct revoker rv = { .label = "a" };
	struct tu_log lg;
	struct daemon d;
	struct ortho_ctx *ctx, *plain;
	struct ortho_model *m;
	struct pollfd pfd;
	pthread_t t;
	int fd, n, i;

	na = ids_of("a", aids);
	daemon_start(&d);
	grant(&d, "a");
	grant(&d, "b");
	plain = auth_ctx(&d, NULL, 0);
	ck_assert_int_eq(ortho_ctx_get_event_fd(plain), -EINVAL);
	ortho_ctx_free(plain);
	plain = tu_ctx(NULL);
	ck_assert_int_eq(ortho_ctx_get_event_fd(plain), -ENOTCONN);
	ck_assert_int_eq(ortho_ctx_process_events(plain), -ENOTCONN);
	ortho_ctx_free(plain);

	ctx = auth_ctx(&d, &lg, ORTHO_CTX_EVENTS_POLLED);
	fd = ortho_ctx_get_event_fd(ctx);
	ck_assert_int_ge(fd, 0);
	m = open_model(ctx, g_dir, NULL, 0, 0);
	pfd = (struct pollfd){ .fd = fd, .events = POLLIN };
	ck_assert_int_eq(poll(&pfd, 1, 0), 0);
	ck_assert_int_eq(ortho_ctx_process_events(ctx), 0);

	rv.d = &d;
	ck_assert_int_eq(pthread_create(&t, NULL, revoke_main, &rv), 0);
	for (i = 0; i < 100 && handled < na; i++) {
		ck_assert_int_eq(poll(&pfd, 1, 5000), 1);
		/* Not handled until the application says so. */
		if (!handled)
			ck_assert_uint_eq(count_state(m, "a",
						      ORTHO_SHARD_REVOKED), 0);
		n = ortho_ctx_process_events(ctx);
		ck_assert_int_ge(n, 0);
		handled += (unsigned int)n;
	}
	ck_assert_uint_eq(handled, na);
	pthread_join(t, NULL);
	ck_assert_uint_eq(rv.in.complete, na);
	ck_assert_uint_eq(rv.in.busy + rv.in.gone, 0);
	ck_assert_uint_eq(count_state(m, "a", ORTHO_SHARD_REVOKED), na);
	ck_assert_uint_eq(resident_count(&d, "a"), 0);
	check_all_without(m, "a");
	ortho_model_close(m);
	ortho_ctx_free(ctx);
	daemon_stop(&d);
}
END_TEST

struct looper {
	struct ortho_model *m;
	const struct lin *l;
	atomic_int stop;
	unsigned long ops;
	int err;
};

static void *loop_main(void *arg)
{
	struct looper *lp = arg;
	uint64_t seed = 9;
	float *x = rand_vec(4 * lp->l->cols, &seed);
	float *y = malloc(4 * lp->l->rows * sizeof(float));
	struct ortho_tensor *t;

	lp->err = ortho_model_find_tensor(lp->m, lp->l->name, &t);
	while (!lp->err && !atomic_load(&lp->stop)) {
		lp->err = ortho_linear(lp->m, t, x, y, 4);
		lp->ops++;
	}
	free(x);
	free(y);
	return NULL;
}

/* Sum of the use counts of the shards of @label (NULL: the others). */
static uint64_t uses_of(struct ortho_model *m, const char *label, int others)
{
	struct ortho_shard_info si;
	uint64_t n = 0;
	unsigned int i;

	for (i = 0; i < ortho_model_shard_count(m); i++) {
		shard_info(m, i, &si);
		if (!strcmp(si.label, label) != !!others)
			n += si.uses;
	}
	return n;
}

/*
 * Polled mode, and the application runs ops before it looks at the event
 * fd: the op handles the notice waiting for it first and runs without the
 * shard, as after SIGSTOP/SIGCONT. The revoke completes all the same.
 */
START_TEST(test_revoke_polled_op_first)
{
	unsigned int na;
	const char *aids[64];
	struct revoker rv = { .label = "a" };
	struct tu_log lg;
	struct daemon d;
	struct ortho_ctx *ctx;
	struct ortho_model *m;
	struct pollfd pfd;
	uint64_t ua, ub;
	pthread_t t;

	na = ids_of("a", aids);
	daemon_start(&d);
	grant(&d, "a");
	grant(&d, "b");
	ctx = auth_ctx(&d, &lg, ORTHO_CTX_EVENTS_POLLED);
	m = open_model(ctx, g_dir, NULL, 0, 0);
	check_all_without(m, NULL);
	ua = uses_of(m, "a", 0);
	ub = uses_of(m, "a", 1);
	ck_assert_uint_gt(ua, 0);
	ck_assert_uint_gt(ub, 0);

	rv.d = &d;
	ck_assert_int_eq(pthread_create(&t, NULL, revoke_main, &rv), 0);
	pfd = (struct pollfd){ .fd = ortho_ctx_get_event_fd(ctx),
			       .events = POLLIN };
	ck_assert_int_eq(poll(&pfd, 1, 5000), 1);
	/* No process_events(): the ops see to it. */
	check_all_without(m, "a");
	pthread_join(t, NULL);
	ck_assert_uint_eq(rv.in.complete, na);
	ck_assert_uint_eq(rv.in.busy + rv.in.gone, 0);
	ck_assert_uint_eq(count_state(m, "a", ORTHO_SHARD_REVOKED), na);
	ck_assert_uint_eq(uses_of(m, "a", 0), ua);
	ck_assert_uint_gt(uses_of(m, "a", 1), ub);
	/* Nothing left for the application; the fd is read empty. */
	ck_assert_int_eq(ortho_ctx_process_events(ctx), 0);
	ck_assert_uint_eq(resident_count(&d, "a"), 0);
	ortho_model_close(m);
	ortho_ctx_free(ctx);
	daemon_stop(&d);
}
END_TEST

START_TEST(test_revoke_under_load)
{
	const char *aids[64];
	unsigned int na = ids_of("a", aids), k;
	struct ortho_admin_revoke_info in;
	struct looper lp[2];
	struct daemon d;
	struct ortho_ctx *ctx;
	struct ortho_model *m;
	pthread_t t[2];

	daemon_start(&d);
	grant(&d, "a");
	grant(&d, "b");
	ctx = auth_ctx(&d, NULL, 0);
	m = open_model(ctx, g_dir, NULL, 0, 0);
	for (k = 0; k < 2; k++) {
		memset(&lp[k], 0, sizeof(lp[k]));
		lp[k].m = m;
		lp[k].l = lin_of(&g_ref[k]);
		ck_assert_int_eq(pthread_create(&t[k], NULL, loop_main,
						&lp[k]), 0);
	}
	usleep(50000);
	in = revoke_label(&d, "a");
	usleep(50000);
	for (k = 0; k < 2; k++) {
		atomic_store(&lp[k].stop, 1);
		pthread_join(t[k], NULL);
		ck_assert_int_eq(lp[k].err, 0);
		ck_assert_uint_gt(lp[k].ops, 0);
	}
	ck_assert_uint_eq(in.complete, na);
	ck_assert_uint_eq(in.busy + in.gone, 0);
	ck_assert_uint_eq(count_state(m, "a", ORTHO_SHARD_REVOKED), na);
	check_all_without(m, "a");
	ck_assert_uint_eq(resident_count(&d, "a"), 0);
	ortho_model_close(m);
	ortho_ctx_free(ctx);
	daemon_stop(&d);
}
END_TEST

START_TEST(test_daemon_gone)
{
	struct tu_log lg;
	struct daemon d;
	struct ortho_ctx *ctx;
	struct ortho_model *m, *m2;
	time_t t0;
	int st;

	daemon_start(&d);
	grant(&d, "a");
	grant(&d, "b");
	ctx = auth_ctx(&d, &lg, 0);
	m = open_model(ctx, g_dir, NULL, 0, 0);
	kill(d.pid, SIGKILL);
	waitpid(d.pid, &st, 0);
	d.pid = 0;
	t0 = time(NULL);
	/* What is held stays in use. */
	check_all_without(m, NULL);
	ck_assert_uint_eq(count_state(m, NULL, ORTHO_SHARD_RESIDENT), g_nref);
	ck_assert_int_eq(ortho_model_drop_shard(m, g_ref[0].id), 0);
	check_linear(m, lin_of(&g_ref[0]), g_ref[0].id, 1, 3);
	/* New keys cannot be had: the shards are not used. */
	m2 = open_model(ctx, g_dir, NULL, 0, 0);
	ck_assert_uint_eq(count_state(m2, NULL, ORTHO_SHARD_RESIDENT), 0);
	check_all_without(m2, "*");
	ortho_model_close(m2);
	ortho_model_close(m);
	ortho_ctx_free(ctx);
	ck_assert_int_le(time(NULL) - t0, 5);
	daemon_stop(&d);
}
END_TEST

static Suite *authority_suite(void)
{
	Suite *s = suite_create("model_authority");
	TCase *tc = tcase_create("model_authority");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_keys_from_daemon);
	tcase_add_test(tc, test_not_granted);
	tcase_add_test(tc, test_revoke_by_thread);
	tcase_add_test(tc, test_revoke_polled);
	tcase_add_test(tc, test_revoke_polled_op_first);
	tcase_add_test(tc, test_revoke_under_load);
	tcase_add_test(tc, test_daemon_gone);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(authority_suite());
	int failed;

	setup_all();
	ref_load();
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	tu_rmrf(g_tmp);
	return failed ? 1 : 0;
}
