// SPDX-License-Identifier: MIT
/*
 * The authority client (lib/authority.h) and the admin calls
 * (ortho-admin.h) against the real daemon, $BUILD/bin/orthod, started in a
 * temporary state directory for each test: keys and policy, residency,
 * revocation with many holders (and its latency), busy, gone and
 * hung-up holders, revoked shards staying revoked across a restart, a
 * revocation interrupted by a crash being completed at the next start, the
 * revoke-busy record naming many busy holders, and requests whose audit
 * record cannot be written (the daemon's file size limit lowered under it).
 */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "authority.h"
#include "keyfile.h"
#include "ortho-admin.h"
#include "testutil.h"

#define NHOLDERS 16
#define ROUNDS 100

struct daemon {
	char *dir;
	char *state;
	char *sock;
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

static void daemon_run(struct daemon *d)
{
	char *bin = daemon_bin();
	int i;

	ck_assert_msg(!access(bin, X_OK), "%s: not built (make)", bin);
	d->pid = fork();
	ck_assert_int_ge(d->pid, 0);
	if (!d->pid) {
		/* A file size limit then fails its writes with EFBIG. */
		signal(SIGXFSZ, SIG_IGN);
		execl(bin, "orthod", "--state-dir", d->state, "--socket",
		      d->sock, "--foreground", (char *)NULL);
		_exit(127);
	}
	free(bin);
	for (i = 0; i < 500 && !can_connect(d->sock); i++)
		usleep(10000);
	ck_assert_msg(can_connect(d->sock), "orthod did not come up");
}

static void daemon_start(struct daemon *d)
{
	d->dir = tu_mkdtemp("authority");
	ck_assert_ptr_nonnull(d->dir);
	ck_assert_int_ge(asprintf(&d->state, "%s/state", d->dir), 0);
	ck_assert_int_ge(asprintf(&d->sock, "%s/sock", d->dir), 0);
	daemon_run(d);
}

/* Stop with @sig; Return: the daemon's exit status. */
static int daemon_kill(struct daemon *d, int sig)
{
	int st = 0;

	kill(d->pid, sig);
	waitpid(d->pid, &st, 0);
	d->pid = 0;
	return st;
}

static void daemon_stop(struct daemon *d)
{
	if (d->pid)
		ck_assert_int_eq(daemon_kill(d, SIGTERM), 0);
	tu_rmrf(d->dir);
	free(d->dir);
	free(d->state);
	free(d->sock);
}

/* A key file of @n shards, labels from @labels[i % nlabels]. */
static char *write_keys(struct daemon *d, struct keyfile *kf, unsigned int n,
			const char *const *labels, unsigned int nlabels)
{
	uint64_t rng = (uint64_t)getpid() * 7919 + n;
	struct keyfile_entry e;
	unsigned int i, j;
	char *path;

	memset(kf, 0, sizeof(*kf));
	for (i = 0; i < n; i++) {
		memset(&e, 0, sizeof(e));
		for (j = 0; j < OSH_ID_SIZE; j++)
			e.id[j] = (uint8_t)tu_rand(&rng);
		for (j = 0; j < OSH_KEY_SIZE; j++)
			e.key[j] = (uint8_t)tu_rand(&rng);
		e.layer = i;
		strcpy(e.label, labels[i % nlabels]);
		ck_assert_int_eq(keyfile_add(kf, &e), 0);
	}
	ck_assert_int_ge(asprintf(&path, "%s/keys-%u", d->dir, n), 0);
	ck_assert_int_eq(keyfile_save(NULL, path, kf, 1), 0);
	return path;
}

static struct ortho_admin *admin(struct daemon *d)
{
	struct ortho_admin *a = NULL;

	ck_assert_int_eq(ortho_admin_connect(NULL, d->sock, &a), 0);
	return a;
}

static struct authority *client(struct daemon *d)
{
	struct authority *c = NULL;

	ck_assert_int_eq(authority_connect(NULL, d->sock, &c), 0);
	return c;
}

static void import_all(struct daemon *d, const char *path, unsigned int n)
{
	struct ortho_admin_import_result r = { .sz = sizeof(r) };
	struct ortho_admin *a = admin(d);

	ck_assert_int_eq(ortho_admin_import_keys(a, path, 0, &r), 0);
	ck_assert_uint_eq(r.keys, n);
	ck_assert_uint_eq(r.added + r.present, n);
	ortho_admin_close(a);
}

static void rule(struct daemon *d, int allow, const char *label,
		 const uint8_t *id, uint32_t principal, uint32_t who)
{
	struct ortho_admin_rule r = { .sz = sizeof(r), .principal = principal,
				      .id = who };
	struct ortho_admin *a = admin(d);

	if (label)
		strcpy(r.label, label);
	else
		proto_id_hex(id, r.shard);
	ck_assert_int_eq(allow ? ortho_admin_grant(a, &r) :
				 ortho_admin_deny(a, &r), 0);
	ortho_admin_close(a);
}

static struct ortho_admin_revoke *do_revoke(struct daemon *d,
					    const uint8_t *id,
					    const char *label, uint32_t ms)
{
	struct ortho_admin_revoke_opts o = { .sz = sizeof(o), .label = label,
					     .timeout_ms = ms };
	struct ortho_admin_revoke *r = NULL;
	struct ortho_admin *a = admin(d);
	char hex[33];

	if (id) {
		proto_id_hex(id, hex);
		o.shard = hex;
	}
	ck_assert_int_eq(ortho_admin_revoke(a, &o, &r), 0);
	ortho_admin_close(a);
	return r;
}

static void revoke_info(const struct ortho_admin_revoke *r,
			struct ortho_admin_revoke_info *in)
{
	in->sz = sizeof(*in);
	ck_assert_int_eq(ortho_admin_revoke_info_get(r, in), 0);
}

static const char *const AB[] = { "tenant-a", "tenant-a", "tenant-b" };

START_TEST(test_keys_and_policy)
{
	struct ortho_admin_import_result ir = { .sz = sizeof(ir) };
	struct authority_key k;
	struct ortho_admin *a;
	struct authority *c;
	struct daemon d;
	struct keyfile kf;
	uint8_t unknown[16] = { 0xee };
	char *path;

	daemon_start(&d);
	path = write_keys(&d, &kf, 3, AB, 3);
	import_all(&d, path, 3);
	a = admin(&d);
	ck_assert_int_eq(ortho_admin_import_keys(a, path, 0, &ir), 0);
	ck_assert_uint_eq(ir.present, 3);
	ck_assert_uint_eq(ir.added, 0);
	ortho_admin_close(a);

	c = client(&d);
	/* No grant, no key: root included. */
	ck_assert_int_eq(authority_get_key(c, kf.e[0].id, &k), -EACCES);
	rule(&d, 1, "tenant-a", NULL, ORTHO_ADMIN_UID, getuid());
	ck_assert_int_eq(authority_get_key(c, kf.e[0].id, &k), 0);
	ck_assert_mem_eq(k.key, kf.e[0].key, 32);
	ck_assert_str_eq(k.label, "tenant-a");
	ck_assert_uint_eq(k.layer, 0);
	ck_assert_int_eq(authority_get_key(c, kf.e[2].id, &k), -EACCES);
	ck_assert_int_eq(authority_get_key(c, unknown, &k), -ENOKEY);
	/* A deny for our group on one shard wins over the label's grant. */
	rule(&d, 0, NULL, kf.e[1].id, ORTHO_ADMIN_GID, getgid());
	ck_assert_int_eq(authority_get_key(c, kf.e[1].id, &k), -EACCES);
	ck_assert_int_eq(authority_get_key(c, kf.e[0].id, &k), 0);
	/* A grant for the same pair replaces the deny. */
	rule(&d, 1, NULL, kf.e[1].id, ORTHO_ADMIN_GID, getgid());
	ck_assert_int_eq(authority_get_key(c, kf.e[1].id, &k), 0);
	ck_assert_mem_eq(k.key, kf.e[1].key, 32);
	explicit_bzero(&k, sizeof(k));
	authority_close(c);
	keyfile_free(&kf);
	free(path);
	daemon_stop(&d);
}
END_TEST

static int find_client(const struct ortho_admin_status *st, pid_t pid,
		       struct ortho_admin_client *out)
{
	unsigned int i, n = ortho_admin_status_client_count(st);

	for (i = 0; i < n; i++) {
		out->sz = sizeof(*out);
		ck_assert_int_eq(ortho_admin_status_client(st, i, out), 0);
		if (out->pid == (uint32_t)pid && out->resident)
			return (int)i;
	}
	return -1;
}

START_TEST(test_residency)
{
	struct ortho_admin_resident r = { .sz = sizeof(r) };
	struct ortho_admin_client cl;
	struct ortho_admin_status *st;
	struct ortho_admin *a;
	struct authority *c;
	struct keyfile kf;
	struct daemon d;
	char *path, hex[33];
	int i;

	daemon_start(&d);
	path = write_keys(&d, &kf, 3, AB, 3);
	import_all(&d, path, 3);
	c = client(&d);
	ck_assert_int_eq(authority_hold(c, kf.e[0].id, "cuda:0", 4096, 123), 0);
	ck_assert_int_eq(authority_hold(c, kf.e[0].id, "cuda:0", 8192, 124), 0);
	ck_assert_int_eq(authority_hold(c, kf.e[2].id, "cpu", 10, 125), 0);
	ck_assert_int_eq(authority_hold(c, kf.e[2].id, "no/slash", 1, 1),
			 -EINVAL);

	a = admin(&d);
	ck_assert_int_eq(ortho_admin_status_get(a, &st), 0);
	i = find_client(st, getpid(), &cl);
	ck_assert_int_ge(i, 0);
	ck_assert_uint_eq(cl.resident, 2);
	ck_assert_int_eq(ortho_admin_status_resident(st, (unsigned int)i, 0, &r), 0);
	proto_id_hex(kf.e[0].id, hex);
	ck_assert_str_eq(r.shard, hex);
	ck_assert_str_eq(r.label, "tenant-a");
	ck_assert_str_eq(r.device, "cuda:0");
	ck_assert_uint_eq(r.bytes, 8192);
	ck_assert_uint_eq(r.since_ns, 124);
	ck_assert_int_eq(ortho_admin_status_resident(st, (unsigned int)i, 2, &r),
			 -ERANGE);
	ortho_admin_status_free(st);

	ck_assert_int_eq(authority_release(c, kf.e[0].id, NULL, 0), 0);
	ck_assert_int_eq(ortho_admin_status_get(a, &st), 0);
	i = find_client(st, getpid(), &cl);
	ck_assert_int_ge(i, 0);
	ck_assert_uint_eq(cl.resident, 1);
	ortho_admin_status_free(st);

	/* A client that hangs up is dropped. */
	authority_close(c);
	usleep(50000);
	ck_assert_int_eq(ortho_admin_status_get(a, &st), 0);
	ck_assert_int_lt(find_client(st, getpid(), &cl), 0);
	ck_assert_uint_eq(ortho_admin_status_client_count(st), 1);
	ortho_admin_status_free(st);
	ortho_admin_close(a);
	keyfile_free(&kf);
	free(path);
	daemon_stop(&d);
}
END_TEST

/* ---- many holders ---- */

struct holders {
	struct daemon *d;
	struct keyfile *kf;
	pthread_barrier_t ready, done;
	unsigned int round;
	int errors;
};

static void *holder_main(void *arg)
{
	struct holders *h = arg;
	struct authority_notice n;
	struct authority_key k;
	struct authority *c;
	unsigned int r;

	if (authority_connect(NULL, h->d->sock, &c)) {
		__atomic_add_fetch(&h->errors, 1, __ATOMIC_RELAXED);
		c = NULL;
	}
	for (r = 0; r < ROUNDS; r++) {
		const uint8_t *id = h->kf->e[r].id;
		int bad = !c;

		bad = bad || authority_get_key(c, id, &k) ||
		      memcmp(k.key, h->kf->e[r].key, 32);
		bad = bad || authority_hold(c, id, "cpu", 1 << 20, 1);
		pthread_barrier_wait(&h->ready);
		bad = bad || authority_wait_notice(c, 10000, &n) != 1 ||
		      memcmp(n.id, id, 16);
		/* The holder's side of a wipe: key and bytes gone, then ack. */
		explicit_bzero(&k, sizeof(k));
		bad = bad || authority_ack(c, &n, 0);
		if (bad)
			__atomic_add_fetch(&h->errors, 1, __ATOMIC_RELAXED);
		pthread_barrier_wait(&h->done);
	}
	authority_close(c);
	return NULL;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

START_TEST(test_revoke_many_holders)
{
	static const char *const one[] = { "fleet" };
	pthread_t th[NHOLDERS];
	struct holders h = { 0 };
	double wall[ROUNDS], p99;
	struct keyfile kf;
	struct daemon d;
	unsigned int i, r;
	char *path;

	daemon_start(&d);
	path = write_keys(&d, &kf, ROUNDS, one, 1);
	import_all(&d, path, ROUNDS);
	rule(&d, 1, "fleet", NULL, ORTHO_ADMIN_UID, getuid());
	h.d = &d;
	h.kf = &kf;
	pthread_barrier_init(&h.ready, NULL, NHOLDERS + 1);
	pthread_barrier_init(&h.done, NULL, NHOLDERS + 1);
	for (i = 0; i < NHOLDERS; i++)
		ck_assert_int_eq(pthread_create(&th[i], NULL, holder_main, &h), 0);
	for (r = 0; r < ROUNDS; r++) {
		struct ortho_admin_revoke_info in;
		struct ortho_admin_revoke *rv;
		double t0;

		pthread_barrier_wait(&h.ready);
		t0 = now_ms();
		rv = do_revoke(&d, kf.e[r].id, NULL, 5000);
		wall[r] = now_ms() - t0;
		revoke_info(rv, &in);
		ck_assert_uint_eq(in.holders, NHOLDERS);
		ck_assert_uint_eq(in.complete, NHOLDERS);
		ortho_admin_revoke_free(rv);
		pthread_barrier_wait(&h.done);
	}
	for (i = 0; i < NHOLDERS; i++)
		pthread_join(th[i], NULL);
	ck_assert_int_eq(h.errors, 0);
	qsort(wall, ROUNDS, sizeof(wall[0]), cmp_double);
	p99 = wall[(ROUNDS * 99 + 99) / 100 - 1];
	/*
	 * Figures only: the 50 ms p99 goal is measured by ortho-bench revoke,
	 * never asserted here (a loaded CI machine is no place for timing).
	 */
	printf("revoke, %d holders, %d rounds: median %.2f ms, p99 %.2f ms, max %.2f ms\n",
	       NHOLDERS, ROUNDS, wall[ROUNDS / 2], p99, wall[ROUNDS - 1]);
	keyfile_free(&kf);
	free(path);
	daemon_stop(&d);
}
END_TEST

/*
 * A child process that takes the keys of @n shards (@shards, at most 8),
 * reports them resident, then does @what.
 */
enum child_act { CHILD_EXIT, CHILD_HANG_UP, CHILD_SIT };

static pid_t holders_child(struct daemon *d, const uint8_t *const *shards,
			   unsigned int n, enum child_act what)
{
	uint8_t ids[8][16];
	struct authority_notice nt;
	struct authority_key k;
	struct authority *c;
	unsigned int i;
	int p[2];
	char ch;
	pid_t pid;

	ck_assert_uint_le(n, 8);
	/* Copied here: secmem (the key file's entries) reads as zeros in a child. */
	for (i = 0; i < n; i++)
		memcpy(ids[i], shards[i], 16);
	ck_assert_int_eq(pipe(p), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid) {
		close(p[1]);
		ck_assert_int_eq(read(p[0], &ch, 1), 1);
		close(p[0]);
		return pid;
	}
	close(p[0]);
	if (authority_connect(NULL, d->sock, &c))
		_exit(2);
	for (i = 0; i < n; i++)
		if (authority_get_key(c, ids[i], &k) ||
		    authority_hold(c, ids[i], "cpu", 100, 1))
			_exit(2);
	if (write(p[1], "r", 1) != 1)
		_exit(3);
	if (what == CHILD_HANG_UP) {
		authority_close(c);
		pause();
	}
	if (what == CHILD_EXIT && authority_wait_notice(c, 10000, &nt) == 1)
		_exit(0);
	for (;;)
		pause();
}

static pid_t holder_child(struct daemon *d, const uint8_t *shard,
			  enum child_act what)
{
	return holders_child(d, &shard, 1, what);
}

static void expect_holder(const struct ortho_admin_revoke *r, pid_t pid,
			  uint32_t outcome, int32_t err)
{
	struct ortho_admin_holder h = { .sz = sizeof(h) };
	struct ortho_admin_revoke_info in;

	revoke_info(r, &in);
	ck_assert_uint_eq(in.holders, 1);
	ck_assert_int_eq(ortho_admin_revoke_holder(r, 0, &h), 0);
	ck_assert_uint_eq(h.pid, (uint32_t)pid);
	ck_assert_uint_eq(h.uid, getuid());
	ck_assert_str_eq(h.comm, "test_authority");
	ck_assert_uint_eq(h.outcome, outcome);
	ck_assert_int_eq(h.error, err);
	ck_assert_int_eq(ortho_admin_revoke_holder(r, 1, &h), -ERANGE);
}

START_TEST(test_busy_gone_hung_up)
{
	static const char *const lbl[] = { "x" };
	struct ortho_admin_revoke_info in;
	struct ortho_admin_revoke *r;
	struct keyfile kf;
	struct daemon d;
	char *path;
	pid_t pid;
	double t0;
	int st;

	daemon_start(&d);
	path = write_keys(&d, &kf, 3, lbl, 1);
	import_all(&d, path, 3);
	rule(&d, 1, "x", NULL, ORTHO_ADMIN_UID, getuid());

	/* Busy: never answers; named at the deadline. */
	pid = holder_child(&d, kf.e[0].id, CHILD_SIT);
	t0 = now_ms();
	r = do_revoke(&d, kf.e[0].id, NULL, 300);
	ck_assert_double_ge(now_ms() - t0, 290);
	expect_holder(r, pid, ORTHO_ADMIN_BUSY, 0);
	ortho_admin_revoke_free(r);
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);

	/* Gone: exits on the notice; no need to wait for the deadline. */
	pid = holder_child(&d, kf.e[1].id, CHILD_EXIT);
	t0 = now_ms();
	r = do_revoke(&d, kf.e[1].id, NULL, 60000);
	ck_assert_double_lt(now_ms() - t0, 30000);
	expect_holder(r, pid, ORTHO_ADMIN_GONE, 0);
	revoke_info(r, &in);
	ck_assert_uint_eq(in.gone, 1);
	ortho_admin_revoke_free(r);
	waitpid(pid, &st, 0);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);

	/* Hung up but alive: still counted as holding, at the deadline. */
	pid = holder_child(&d, kf.e[2].id, CHILD_HANG_UP);
	usleep(50000);
	/* The connection was gone before the revocation: no holder at all. */
	r = do_revoke(&d, kf.e[2].id, NULL, 300);
	ck_assert_int_eq(kill(pid, 0), 0);
	revoke_info(r, &in);
	ck_assert_uint_eq(in.holders, 0);
	ortho_admin_revoke_free(r);
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	keyfile_free(&kf);
	free(path);
	daemon_stop(&d);
}
END_TEST

/* A holder that hangs up after the notice, without an ack, but lives on. */
START_TEST(test_hang_up_after_notice)
{
	static const char *const lbl[] = { "y" };
	struct ortho_admin_revoke *r;
	struct authority_notice n;
	struct authority_key k;
	struct authority *c;
	struct keyfile kf;
	struct daemon d;
	uint8_t id[16];
	char *path;
	pid_t pid;
	int p[2], st;
	char ch;

	daemon_start(&d);
	path = write_keys(&d, &kf, 1, lbl, 1);
	import_all(&d, path, 1);
	rule(&d, 1, "y", NULL, ORTHO_ADMIN_UID, getuid());
	memcpy(id, kf.e[0].id, sizeof(id));
	ck_assert_int_eq(pipe(p), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (!pid) {
		if (authority_connect(NULL, d.sock, &c) ||
		    authority_get_key(c, id, &k) ||
		    write(p[1], "r", 1) != 1 ||
		    authority_wait_notice(c, 10000, &n) != 1)
			_exit(2);
		authority_close(c);
		pause();
		_exit(0);
	}
	ck_assert_int_eq(read(p[0], &ch, 1), 1);
	r = do_revoke(&d, kf.e[0].id, NULL, 400);
	expect_holder(r, pid, ORTHO_ADMIN_BUSY, -ENOTCONN);
	ortho_admin_revoke_free(r);
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	close(p[0]);
	close(p[1]);
	keyfile_free(&kf);
	free(path);
	daemon_stop(&d);
}
END_TEST

static uint32_t shard_state(struct daemon *d, const uint8_t *id)
{
	struct ortho_admin_shard s = { .sz = sizeof(s) };
	struct ortho_admin_status *st;
	struct ortho_admin *a = admin(d);
	unsigned int i, n;
	uint32_t state = 0;
	char hex[33];

	proto_id_hex(id, hex);
	ck_assert_int_eq(ortho_admin_status_get(a, &st), 0);
	n = ortho_admin_status_shard_count(st);
	for (i = 0; i < n; i++) {
		ck_assert_int_eq(ortho_admin_status_shard(st, i, &s), 0);
		if (!strcmp(s.id, hex))
			state = s.state;
	}
	ortho_admin_status_free(st);
	ortho_admin_close(a);
	return state;
}

static void audit_ok(struct daemon *d)
{
	struct ortho_admin_audit_check v = { .sz = sizeof(v) };
	struct ortho_admin *a = admin(d);

	ck_assert_int_eq(ortho_admin_audit_verify(a, &v), 0);
	ck_assert_msg(v.ok, "audit: record %llu: %s",
		      (unsigned long long)v.bad_record, v.reason);
	ck_assert_uint_gt(v.records, 3);
	ortho_admin_close(a);
}

static int count_event(void *user, uint64_t seq, const char *rec)
{
	struct { const char *ev; int n; } *c = user;
	char pat[64];

	(void)seq;
	snprintf(pat, sizeof(pat), " %s ", c->ev);
	c->n += strstr(rec, pat) != NULL;
	return 0;
}

static int events(struct daemon *d, const char *ev)
{
	struct { const char *ev; int n; } c = { ev, 0 };
	struct ortho_admin *a = admin(d);

	ck_assert_int_eq(ortho_admin_audit_read(a, 1, count_event, &c), 0);
	ortho_admin_close(a);
	return c.n;
}

START_TEST(test_revoked_stays_revoked)
{
	struct ortho_admin_import_result ir = { .sz = sizeof(ir) };
	struct ortho_admin_revoke *r;
	struct authority_notice n;
	struct authority_key k;
	struct ortho_admin *a;
	struct authority *c;
	struct keyfile kf;
	struct daemon d;
	char *path;

	daemon_start(&d);
	path = write_keys(&d, &kf, 3, AB, 3);
	import_all(&d, path, 3);
	rule(&d, 1, "tenant-a", NULL, ORTHO_ADMIN_UID, getuid());
	r = do_revoke(&d, NULL, "tenant-a", 1000);
	ortho_admin_revoke_free(r);
	ck_assert_uint_eq(shard_state(&d, kf.e[0].id), ORTHO_ADMIN_SHARD_REVOKED);
	ck_assert_uint_eq(shard_state(&d, kf.e[2].id), ORTHO_ADMIN_SHARD_ACTIVE);

	c = client(&d);
	ck_assert_int_eq(authority_get_key(c, kf.e[0].id, &k), -EKEYREVOKED);
	ck_assert_int_eq(authority_get_key(c, kf.e[1].id, &k), -EKEYREVOKED);
	/* A holder of a revoked shard that reports in is told at once. */
	ck_assert_int_eq(authority_hold(c, kf.e[0].id, "cpu", 1, 1), 0);
	ck_assert_int_eq(authority_wait_notice(c, 2000, &n), 1);
	ck_assert_mem_eq(n.id, kf.e[0].id, 16);
	ck_assert_uint_eq(n.deadline_ms, 0);
	ck_assert_int_eq(authority_ack(c, &n, 0), 0);
	authority_close(c);
	/* Importing a revoked key again is refused, and changes nothing. */
	a = admin(&d);
	ck_assert_int_eq(ortho_admin_import_keys(a, path, 0, &ir), -EKEYREVOKED);
	ortho_admin_close(a);

	/* A restart keeps the keys, the tombstones, the policy, the log. */
	ck_assert_int_eq(daemon_kill(&d, SIGTERM), 0);
	daemon_run(&d);
	c = client(&d);
	ck_assert_int_eq(authority_get_key(c, kf.e[0].id, &k), -EKEYREVOKED);
	rule(&d, 1, "tenant-b", NULL, ORTHO_ADMIN_UID, getuid());
	ck_assert_int_eq(authority_get_key(c, kf.e[2].id, &k), 0);
	ck_assert_mem_eq(k.key, kf.e[2].key, 32);
	authority_close(c);
	audit_ok(&d);
	ck_assert_int_eq(events(&d, "start"), 2);
	ck_assert_int_eq(events(&d, "stop"), 1);
	ck_assert_int_eq(events(&d, "revoke-late-complete"), 1);
	keyfile_free(&kf);
	free(path);
	daemon_stop(&d);
}
END_TEST

struct async_revoke {
	struct daemon *d;
	const uint8_t *id;
	int ret;
};

static void *revoke_thread(void *arg)
{
	struct async_revoke *x = arg;
	struct ortho_admin_revoke_opts o = { .sz = sizeof(o),
					     .timeout_ms = 20000 };
	struct ortho_admin_revoke *r = NULL;
	struct ortho_admin *a;
	char hex[33];

	proto_id_hex(x->id, hex);
	o.shard = hex;
	x->ret = ortho_admin_connect(NULL, x->d->sock, &a);
	if (!x->ret)
		x->ret = ortho_admin_revoke(a, &o, &r);
	ortho_admin_revoke_free(r);
	ortho_admin_close(a);
	return NULL;
}

/*
 * The daemon dies while a revocation waits for a holder: the key is
 * already gone from the keystore, and the next start completes it.
 */
START_TEST(test_crash_mid_revoke)
{
	static const char *const lbl[] = { "z" };
	struct async_revoke x;
	struct authority_key k;
	struct authority *c;
	struct keyfile kf;
	struct daemon d;
	pthread_t th;
	char *path;
	int i, st;

	daemon_start(&d);
	path = write_keys(&d, &kf, 2, lbl, 1);
	import_all(&d, path, 2);
	rule(&d, 1, "z", NULL, ORTHO_ADMIN_UID, getuid());
	c = client(&d);
	ck_assert_int_eq(authority_get_key(c, kf.e[0].id, &k), 0);
	x.d = &d;
	x.id = kf.e[0].id;
	ck_assert_int_eq(pthread_create(&th, NULL, revoke_thread, &x), 0);
	for (i = 0; i < 200 && events(&d, "revoke-requested") < 1; i++)
		usleep(10000);
	usleep(50000);
	st = daemon_kill(&d, SIGKILL);
	ck_assert(WIFSIGNALED(st));
	pthread_join(th, NULL);
	ck_assert_int_ne(x.ret, 0);
	authority_close(c);

	daemon_run(&d);
	ck_assert_uint_eq(shard_state(&d, kf.e[0].id), ORTHO_ADMIN_SHARD_REVOKED);
	ck_assert_uint_eq(shard_state(&d, kf.e[1].id), ORTHO_ADMIN_SHARD_ACTIVE);
	c = client(&d);
	ck_assert_int_eq(authority_get_key(c, kf.e[0].id, &k), -EKEYREVOKED);
	ck_assert_int_eq(authority_get_key(c, kf.e[1].id, &k), 0);
	authority_close(c);
	ck_assert_int_eq(events(&d, "revoke-recovered"), 1);
	audit_ok(&d);
	keyfile_free(&kf);
	free(path);
	daemon_stop(&d);
}
END_TEST

/* A notice that arrives while the holder is busy with its own requests. */
START_TEST(test_notice_during_requests)
{
	static const char *const lbl[] = { "w" };
	struct async_revoke x;
	struct authority_notice n;
	struct authority_key k;
	struct authority *c;
	struct keyfile kf;
	struct daemon d;
	pthread_t th;
	char *path;
	int i, got = 0;

	daemon_start(&d);
	path = write_keys(&d, &kf, 2, lbl, 1);
	import_all(&d, path, 2);
	rule(&d, 1, "w", NULL, ORTHO_ADMIN_UID, getuid());
	c = client(&d);
	ck_assert_int_eq(authority_get_key(c, kf.e[0].id, &k), 0);
	x.d = &d;
	x.id = kf.e[0].id;
	ck_assert_int_eq(pthread_create(&th, NULL, revoke_thread, &x), 0);
	for (i = 0; i < 2000 && !got; i++) {
		ck_assert_int_eq(authority_hold(c, kf.e[1].id, "cpu", i, 1), 0);
		got = authority_wait_notice(c, 0, &n);
	}
	ck_assert_int_eq(got, 1);
	ck_assert_mem_eq(n.id, kf.e[0].id, 16);
	ck_assert_uint_eq(n.deadline_ms, 20000);
	ck_assert_int_eq(authority_ack(c, &n, 0), 0);
	pthread_join(th, NULL);
	ck_assert_int_eq(x.ret, 0);
	ck_assert_int_eq(authority_get_key(c, kf.e[0].id, &k), -EKEYREVOKED);
	ck_assert_int_eq(authority_get_key(c, kf.e[1].id, &k), 0);
	authority_close(c);
	keyfile_free(&kf);
	free(path);
	daemon_stop(&d);
}
END_TEST

/* A child that takes the keys of @n shards of @kf from @first on, reports
 * them resident and sits there: a busy holder of each. */
static pid_t sitter(struct daemon *d, const struct keyfile *kf,
		    unsigned int first, unsigned int n)
{
	const uint8_t *ids[8];
	unsigned int i;

	ck_assert_uint_le(n, 8);
	for (i = 0; i < n; i++)
		ids[i] = kf->e[first + i].id;
	return holders_child(d, ids, n, CHILD_SIT);
}

struct last_rec {
	const char *ev;
	char rec[4096];
	int n;
};

static int keep_last(void *user, uint64_t seq, const char *rec)
{
	struct last_rec *l = user;
	char pat[64];

	(void)seq;
	snprintf(pat, sizeof(pat), " %s ", l->ev);
	if (strstr(rec, pat)) {
		snprintf(l->rec, sizeof(l->rec), "%s", rec);
		l->n++;
	}
	return 0;
}

/* The last record of event @ev into @l (l->n: how many there are). */
static void last_record(struct daemon *d, const char *ev, struct last_rec *l)
{
	struct ortho_admin *a = admin(d);

	memset(l, 0, sizeof(*l));
	l->ev = ev;
	ck_assert_int_eq(ortho_admin_audit_read(a, 1, keep_last, l), 0);
	ortho_admin_close(a);
	ck_assert_int_gt(l->n, 0);
}

static void reap(pid_t *pids, unsigned int n)
{
	unsigned int i;
	int st;

	for (i = 0; i < n; i++) {
		kill(pids[i], SIGKILL);
		waitpid(pids[i], &st, 0);
	}
}

/*
 * The revoke-busy record names every busy process: eight stopped holders
 * of five shards each are eight entries of five shards, not forty entries
 * cut at some length; and where even one entry a process is too many for
 * a record, the ones left out are counted (more=N).
 */
START_TEST(test_busy_record)
{
	static const char *const lbl[] = { "m", "m", "m", "m", "m", "n" };
	struct ortho_admin_revoke_info in;
	struct ortho_admin_revoke *r;
	pid_t pids[80];
	struct last_rec l;
	struct keyfile kf;
	struct daemon d;
	unsigned int i, listed = 0;
	char want[96], *p;
	unsigned long more = 0;
	char *path;

	daemon_start(&d);
	path = write_keys(&d, &kf, 6, lbl, 6);
	import_all(&d, path, 6);
	rule(&d, 1, "m", NULL, ORTHO_ADMIN_UID, getuid());
	rule(&d, 1, "n", NULL, ORTHO_ADMIN_UID, getuid());

	for (i = 0; i < 8; i++)
		pids[i] = sitter(&d, &kf, 0, 5);
	r = do_revoke(&d, NULL, "m", 300);
	revoke_info(r, &in);
	ck_assert_uint_eq(in.holders, 40);
	ck_assert_uint_eq(in.busy, 40);
	ortho_admin_revoke_free(r);
	last_record(&d, "revoke-busy", &l);
	ck_assert_msg(strstr(l.rec, " busy=40 "), "%s", l.rec);
	for (i = 0; i < 8; i++) {
		snprintf(want, sizeof(want), " busy=%d/%u/test_authority/5shards",
			 (int)pids[i], (unsigned int)getuid());
		ck_assert_msg(strstr(l.rec, want), "no \"%s\" in %s", want, l.rec);
	}
	ck_assert_msg(!strstr(l.rec, " more="), "%s", l.rec);
	reap(pids, 8);

	/* 80 processes of one shard each do not fit in one record. */
	for (i = 0; i < 80; i++)
		pids[i] = sitter(&d, &kf, 5, 1);
	r = do_revoke(&d, NULL, "n", 300);
	revoke_info(r, &in);
	ck_assert_uint_eq(in.busy, 80);
	ortho_admin_revoke_free(r);
	last_record(&d, "revoke-busy", &l);
	ck_assert_int_eq(l.n, 2);
	for (p = l.rec; (p = strstr(p, " busy=")); p++)
		listed++;
	listed--;	/* " busy=80 ", the count */
	p = strstr(l.rec, " more=");
	ck_assert_msg(p, "%s", l.rec);
	more = strtoul(p + 6, NULL, 10);
	ck_assert_uint_gt(listed, 0);
	ck_assert_uint_eq(listed + more, 80);
	ck_assert_uint_le(strlen(l.rec), 2047);
	reap(pids, 80);
	audit_ok(&d);
	keyfile_free(&kf);
	free(path);
	daemon_stop(&d);
}
END_TEST

static off_t file_size(struct daemon *d, const char *name)
{
	struct stat st;
	char *path;

	ck_assert_int_ge(asprintf(&path, "%s/%s", d->state, name), 0);
	ck_assert_int_eq(stat(path, &st), 0);
	free(path);
	return st.st_size;
}

/* The daemon may write no file past @bytes (RLIMIT_FSIZE, its soft limit;
 * RLIM_INFINITY lifts it): a full audit log, as far as it can tell. */
static void fsize_limit(struct daemon *d, rlim_t bytes)
{
	struct rlimit rl;

	ck_assert_int_eq(prlimit(d->pid, RLIMIT_FSIZE, NULL, &rl), 0);
	rl.rlim_cur = bytes;
	ck_assert_int_eq(prlimit(d->pid, RLIMIT_FSIZE, &rl, NULL), 0);
}

/*
 * The audit log cannot grow: a grant, a deny and an import are refused and
 * change nothing; a revocation is carried out all the same and answered
 * with an error that says it was done but not recorded. Once the log can
 * grow again it verifies (no torn record) and takes records as before.
 */
START_TEST(test_unaudited)
{
	static const char *const lbl[] = { "u" }, *const lbl2[] = { "v" };
	struct ortho_admin_rule rr = { .sz = sizeof(rr),
				       .principal = ORTHO_ADMIN_UID,
				       .id = 4242 };
	struct ortho_admin_revoke_opts o = { .sz = sizeof(o), .label = "u",
					     .timeout_ms = 5000 };
	struct ortho_admin_import_result ir = { .sz = sizeof(ir) };
	struct ortho_admin_revoke *r = NULL;
	struct authority_key k;
	struct ortho_ctx *ctx;
	struct ortho_admin *a;
	struct authority *c;
	struct keyfile kf, kf2;
	struct daemon d;
	struct tu_log lg;
	char *path, *path2;
	uint64_t records;
	pid_t pid;
	int st;

	tu_log_clear(&lg);
	ctx = tu_ctx(&lg);
	ck_assert_ptr_nonnull(ctx);
	daemon_start(&d);
	path = write_keys(&d, &kf, 3, lbl, 1);
	path2 = write_keys(&d, &kf2, 2, lbl2, 1);
	import_all(&d, path, 3);
	rule(&d, 1, "u", NULL, ORTHO_ADMIN_UID, getuid());
	rule(&d, 0, "u", NULL, ORTHO_ADMIN_UID, 4243);
	/* A holder that exits on the notice: the notice must still go out. */
	pid = holder_child(&d, kf.e[1].id, CHILD_EXIT);
	/* The log is the longest file the daemon writes. */
	ck_assert_int_gt(file_size(&d, "audit.log"),
			 2 * file_size(&d, "keystore") + 512);
	records = (uint64_t)events(&d, "start") + events(&d, "import") +
		  events(&d, "grant") + events(&d, "deny") +
		  events(&d, "key-out");
	fsize_limit(&d, (rlim_t)file_size(&d, "audit.log"));

	ck_assert_int_eq(ortho_admin_connect(ctx, d.sock, &a), 0);
	strcpy(rr.label, "u");
	ck_assert_int_eq(ortho_admin_grant(a, &rr), -EFBIG);
	ck_assert(tu_log_has(&lg, "grant: not done: the audit log could not be written"));
	ck_assert_int_eq(ortho_admin_deny(a, &rr), -EFBIG);
	ck_assert_int_eq(ortho_admin_import_keys(a, path2, 0, &ir), -EFBIG);
	ck_assert(tu_log_has(&lg, "import: nothing imported"));
	ck_assert_int_eq(ortho_admin_revoke(a, &o, &r), -EFBIG);
	ck_assert_ptr_null(r);
	ck_assert(tu_log_has(&lg, "done (the keys are gone for good"));
	ck_assert(tu_log_has(&lg, "not audited: no revoke-requested record"));
	ortho_admin_close(a);
	waitpid(pid, &st, 0);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	ck_assert_uint_eq(shard_state(&d, kf.e[0].id), ORTHO_ADMIN_SHARD_REVOKED);
	ck_assert_uint_eq(shard_state(&d, kf.e[2].id), ORTHO_ADMIN_SHARD_REVOKED);
	ck_assert_uint_eq(shard_state(&d, kf2.e[0].id), 0);

	fsize_limit(&d, RLIM_INFINITY);
	/* Nothing was recorded, nothing half-written. */
	audit_ok(&d);
	ck_assert_uint_eq((uint64_t)events(&d, "start") + events(&d, "import") +
			  events(&d, "grant") + events(&d, "deny") +
			  events(&d, "key-out"), records);
	ck_assert_int_eq(events(&d, "revoke-requested"), 0);
	ck_assert_int_eq(events(&d, "import-undone"), 0);
	/* The grant was not made: uid 4242's rule is not there. */
	a = admin(&d);
	{
		struct ortho_admin_status *sts;
		struct ortho_admin_rule x = { .sz = sizeof(x) };
		unsigned int i, n;

		ck_assert_int_eq(ortho_admin_status_get(a, &sts), 0);
		n = ortho_admin_status_rule_count(sts);
		ck_assert_uint_eq(n, 2);
		for (i = 0; i < n; i++) {
			ck_assert_int_eq(ortho_admin_status_rule(sts, i, &x), 0);
			ck_assert_uint_ne(x.id, 4242);
		}
		ortho_admin_status_free(sts);
	}
	ortho_admin_close(a);
	/* The import was taken back, on disk too; the revocation stands. */
	ck_assert_int_eq(daemon_kill(&d, SIGTERM), 0);
	daemon_run(&d);
	ck_assert_uint_eq(shard_state(&d, kf2.e[0].id), 0);
	ck_assert_uint_eq(shard_state(&d, kf.e[0].id), ORTHO_ADMIN_SHARD_REVOKED);
	c = client(&d);
	ck_assert_int_eq(authority_get_key(c, kf.e[0].id, &k), -EKEYREVOKED);
	authority_close(c);
	/* And the log takes records again. */
	import_all(&d, path2, 2);
	rule(&d, 1, "v", NULL, ORTHO_ADMIN_UID, getuid());
	c = client(&d);
	ck_assert_int_eq(authority_get_key(c, kf2.e[0].id, &k), 0);
	ck_assert_mem_eq(k.key, kf2.e[0].key, 32);
	explicit_bzero(&k, sizeof(k));
	authority_close(c);
	audit_ok(&d);
	keyfile_free(&kf);
	keyfile_free(&kf2);
	free(path);
	free(path2);
	daemon_stop(&d);
	ortho_ctx_free(ctx);
}
END_TEST

static Suite *authority_suite(void)
{
	Suite *s = suite_create("authority");
	TCase *tc = tcase_create("authority");

	tcase_add_test(tc, test_keys_and_policy);
	tcase_add_test(tc, test_residency);
	tcase_add_test(tc, test_revoke_many_holders);
	tcase_add_test(tc, test_busy_gone_hung_up);
	tcase_add_test(tc, test_hang_up_after_notice);
	tcase_add_test(tc, test_revoked_stays_revoked);
	tcase_add_test(tc, test_crash_mid_revoke);
	tcase_add_test(tc, test_notice_during_requests);
	tcase_add_test(tc, test_busy_record);
	tcase_add_test(tc, test_unaudited);
	tcase_set_timeout(tc, 60);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(authority_suite());
	int failed;

	signal(SIGPIPE, SIG_IGN);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
