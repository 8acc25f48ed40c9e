// SPDX-License-Identifier: MIT
/*
 * ortho-bench revoke: the time from a revoke request to the last holder's
 * acknowledged wipe, with many holders.
 *
 * A real orthod (the one beside this binary) runs in a temporary state
 * directory. Each round imports a fresh synthetic key (label "bench",
 * granted to our uid), every holder process takes it from the daemon with
 * the library's authority client and reports it resident; then the admin
 * connection revokes it and the round's time is the revoke call, from the
 * request to the reply that comes after the last acknowledgement. The
 * daemon's own figure (request to last outcome) is reported beside it.
 *
 * Holders are processes, not threads, so each is a separate peer as a real
 * application would be; they take their orders (the round's shard id)
 * through a pipe and say "ready" through another.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "authority.h"
#include "keyfile.h"
#include "ortho-admin.h"
#include "ortho-bench.h"

#define RV_LABEL "bench"
#define RV_TARGET_MS 50.0
#define RV_MAX_HOLDERS 256u

struct rv_opts {
	uint32_t holders;
	uint32_t rounds;
	uint32_t timeout_ms;
	int json;
};

struct rv_run {
	struct rv_opts o;
	char dir[PATH_MAX];
	char state[PATH_MAX + 8];
	char sock[PATH_MAX + 8];
	char keys[PATH_MAX + 8];
	pid_t daemon;
	pid_t *kids;
	int *orders;			/* write ends, one per holder */
	int ready;			/* read end, shared by the holders */
	uint32_t nkids;
	double *wall_ms, *daemon_ms;
};

static void rv_usage(FILE *f)
{
	fprintf(f,
		"usage: ortho-bench revoke [--holders N] [--rounds N] [--timeout-ms N] [--json]\n"
		"  starts orthod (beside this binary) in a temporary directory; each\n"
		"  round N holder processes take a fresh key and hold it, then it is\n"
		"  revoked; reports the time from the request to the last ack\n"
		"  --holders N     holder processes (default 16, at most %u)\n"
		"  --rounds N      revocations (default 200)\n"
		"  --timeout-ms N  each revocation's deadline (default 5000)\n"
		"  --json          one JSON object\n", RV_MAX_HOLDERS);
}

static int rv_parse(int argc, char **argv, struct rv_opts *o)
{
	static const struct option lo[] = {
		{ "holders", required_argument, NULL, 'n' },
		{ "rounds", required_argument, NULL, 'r' },
		{ "timeout-ms", required_argument, NULL, 't' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int ch;

	o->holders = 16;
	o->rounds = 200;
	o->timeout_ms = 5000;
	optind = 1;
	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (ch) {
		case 'n':
			if (bench_parse_u32("--holders", optarg, 1,
					    RV_MAX_HOLDERS, &o->holders))
				return -EINVAL;
			break;
		case 'r':
			if (bench_parse_u32("--rounds", optarg, 1, 100000,
					    &o->rounds))
				return -EINVAL;
			break;
		case 't':
			if (bench_parse_u32("--timeout-ms", optarg, 1,
					    PROTO_TIMEOUT_MAX, &o->timeout_ms))
				return -EINVAL;
			break;
		case 'j':
			o->json = 1;
			break;
		case 'h':
			return 1;
		default:
			return -EINVAL;
		}
	}
	return optind == argc ? 0 : -EINVAL;
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

/* orthod from the same build: the directory of this executable. */
static int daemon_path(char *out, size_t cap)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	if (n <= 0)
		return -errno;
	self[n] = 0;
	if (snprintf(out, cap, "%s/orthod", dirname(self)) >= (int)cap)
		return -ENAMETOOLONG;
	return access(out, X_OK) ? -errno : 0;
}

static int daemon_start(struct rv_run *r)
{
	char bin[PATH_MAX + 8], log[PATH_MAX + 16];
	int i, fd;

	if (daemon_path(bin, sizeof(bin))) {
		fprintf(stderr, "ortho-bench: revoke: orthod is not beside this binary (make)\n");
		return -ENOENT;
	}
	snprintf(log, sizeof(log), "%s/orthod.log", r->dir);
	r->daemon = fork();
	if (r->daemon < 0)
		return -errno;
	if (!r->daemon) {
		fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd >= 0)
			dup2(fd, 2);
		execl(bin, "orthod", "--state-dir", r->state, "--socket",
		      r->sock, "--foreground", (char *)NULL);
		_exit(127);
	}
	for (i = 0; i < 1000 && !can_connect(r->sock); i++) {
		if (waitpid(r->daemon, NULL, WNOHANG) == r->daemon) {
			r->daemon = 0;
			break;
		}
		bench_sleep(0.01);
	}
	if (!r->daemon || !can_connect(r->sock)) {
		fprintf(stderr, "ortho-bench: revoke: orthod did not come up (see %s)\n",
			log);
		return -ECONNREFUSED;
	}
	return 0;
}

/*
 * One holder: for each shard id read from @orders, take the key, report it
 * resident, say ready, wait for the notice, wipe, acknowledge.
 */
static int holder_loop(const char *sock, int orders, int ready)
{
	struct authority_notice n;
	struct authority_key k;
	struct authority *a;
	uint8_t id[PROTO_ID_SIZE];
	int ret;

	ret = authority_connect(NULL, sock, &a);
	if (ret)
		return 2;
	while (read(orders, id, sizeof(id)) == (ssize_t)sizeof(id)) {
		ret = authority_get_key(a, id, &k);
		if (!ret)
			ret = authority_hold(a, id, "cpu", 1u << 20,
					     (uint64_t)time(NULL) * 1000000000ull);
		if (ret || write(ready, "r", 1) != 1)
			break;
		ret = authority_wait_notice(a, 60000, &n);
		if (ret != 1 || memcmp(n.id, id, sizeof(id))) {
			ret = ret < 0 ? ret : -EPROTO;
			break;
		}
		/* The wipe a real holder does: key, device and staging. */
		explicit_bzero(&k, sizeof(k));
		ret = authority_ack(a, &n, 0);
		if (ret)
			break;
	}
	explicit_bzero(&k, sizeof(k));
	authority_close(a);
	return ret ? 3 : 0;
}

static int holders_start(struct rv_run *r)
{
	int rp[2], op[2];
	uint32_t i;

	if (pipe2(rp, O_CLOEXEC))
		return -errno;
	r->ready = rp[0];
	for (i = 0; i < r->o.holders; i++) {
		pid_t pid;

		if (pipe2(op, O_CLOEXEC))
			return -errno;
		pid = fork();
		if (pid < 0) {
			close(op[0]);
			close(op[1]);
			return -errno;
		}
		if (!pid) {
			uint32_t j;

			close(op[1]);
			close(rp[0]);
			for (j = 0; j < r->nkids; j++)
				close(r->orders[j]);
			_exit(holder_loop(r->sock, op[0], rp[1]));
		}
		close(op[0]);
		r->orders[r->nkids] = op[1];
		r->kids[r->nkids++] = pid;
	}
	close(rp[1]);
	return 0;
}

/* A fresh synthetic key, handed to the daemon through a key file. */
static int import_fresh(struct rv_run *r, struct ortho_admin *a,
			uint8_t id[PROTO_ID_SIZE])
{
	struct ortho_admin_import_result res = { .sz = sizeof(res) };
	struct keyfile kf = { 0 };
	struct keyfile_entry e;
	int ret;

	memset(&e, 0, sizeof(e));
	if (getrandom(e.id, sizeof(e.id), 0) != (ssize_t)sizeof(e.id) ||
	    getrandom(e.key, sizeof(e.key), 0) != (ssize_t)sizeof(e.key))
		return -EIO;
	strcpy(e.label, RV_LABEL);
	memcpy(id, e.id, PROTO_ID_SIZE);
	ret = keyfile_add(&kf, &e);
	explicit_bzero(&e, sizeof(e));
	if (!ret)
		ret = keyfile_save(NULL, r->keys, &kf, 1);
	keyfile_free(&kf);
	if (!ret)
		ret = ortho_admin_import_keys(a, r->keys, ORTHO_ADMIN_IMPORT_WIPE,
					      &res);
	if (!ret && res.added != 1)
		ret = -EEXIST;
	return ret;
}

static int wait_ready(struct rv_run *r)
{
	uint32_t got = 0;
	char buf[RV_MAX_HOLDERS];

	while (got < r->o.holders) {
		ssize_t n = read(r->ready, buf, r->o.holders - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -EPIPE;
		got += (uint32_t)n;
	}
	return 0;
}

static int one_round(struct rv_run *r, struct ortho_admin *a, uint32_t round)
{
	struct ortho_admin_revoke_opts ro = { .sz = sizeof(ro),
					      .timeout_ms = r->o.timeout_ms };
	struct ortho_admin_revoke_info in = { .sz = sizeof(in) };
	struct ortho_admin_revoke *rv = NULL;
	uint8_t id[PROTO_ID_SIZE];
	char hex[33];
	double t0;
	uint32_t i;
	int ret;

	ret = import_fresh(r, a, id);
	for (i = 0; !ret && i < r->nkids; i++)
		if (write(r->orders[i], id, sizeof(id)) != (ssize_t)sizeof(id))
			ret = -EPIPE;
	if (!ret)
		ret = wait_ready(r);
	if (ret)
		return ret;
	proto_id_hex(id, hex);
	ro.shard = hex;
	t0 = bench_now();
	ret = ortho_admin_revoke(a, &ro, &rv);
	r->wall_ms[round] = (bench_now() - t0) * 1e3;
	if (ret)
		return ret;
	ret = ortho_admin_revoke_info_get(rv, &in);
	if (!ret && (in.holders != r->o.holders ||
		     in.complete != r->o.holders)) {
		fprintf(stderr, "ortho-bench: revoke: round %u: %u holders, %u complete, %u busy, %u gone\n",
			round, in.holders, in.complete, in.busy, in.gone);
		ret = -EIO;
	}
	r->daemon_ms[round] = in.elapsed_us / 1e3;
	ortho_admin_revoke_free(rv);
	return ret;
}

static int run_rounds(struct rv_run *r)
{
	struct ortho_admin_rule rule = { .sz = sizeof(rule),
					 .principal = ORTHO_ADMIN_UID,
					 .id = (uint32_t)getuid() };
	struct ortho_admin *a = NULL;
	uint32_t i;
	int ret;

	ret = ortho_admin_connect(NULL, r->sock, &a);
	if (ret) {
		fprintf(stderr, "ortho-bench: revoke: cannot connect as admin: %s\n",
			strerror(-ret));
		return ret;
	}
	strcpy(rule.label, RV_LABEL);
	ret = ortho_admin_grant(a, &rule);
	for (i = 0; !ret && i < r->o.rounds; i++)
		ret = one_round(r, a, i);
	if (ret)
		fprintf(stderr, "ortho-bench: revoke: round %u: %s\n", i,
			strerror(-ret));
	ortho_admin_close(a);
	return ret;
}

static void teardown(struct rv_run *r)
{
	uint32_t i;
	int st;

	for (i = 0; i < r->nkids; i++)
		close(r->orders[i]);
	for (i = 0; i < r->nkids; i++) {
		kill(r->kids[i], SIGTERM);
		waitpid(r->kids[i], &st, 0);
	}
	if (r->ready >= 0)
		close(r->ready);
	if (r->daemon > 0) {
		kill(r->daemon, SIGTERM);
		waitpid(r->daemon, &st, 0);
	}
}

/* Remove the temporary directory and what orthod left in it. */
static void remove_dir(const char *dir)
{
	pid_t pid = fork();

	if (!pid) {
		execlp("rm", "rm", "-rf", "--", dir, (char *)NULL);
		_exit(127);
	}
	if (pid > 0)
		waitpid(pid, NULL, 0);
}

static double pct(double *v, size_t n, double p)
{
	size_t k = (size_t)(p * (double)n + 0.999999);

	bench_median(v, n);		/* sorts */
	return v[k ? k - 1 : 0];
}

static void report(struct rv_run *r)
{
	size_t n = r->o.rounds;
	double med = bench_median(r->wall_ms, n), p99 = pct(r->wall_ms, n, 0.99);
	double max = r->wall_ms[n - 1];
	double dmed = bench_median(r->daemon_ms, n);
	double dp99 = pct(r->daemon_ms, n, 0.99);
	struct bench_json j;

	if (!r->o.json) {
		printf("revoke: %u holders, %u rounds: median %.2f ms, p99 %.2f ms, max %.2f ms (daemon: median %.2f, p99 %.2f); p99/%.0f ms = %.2f\n",
		       r->o.holders, r->o.rounds, med, p99, max, dmed, dp99,
		       RV_TARGET_MS, p99 / RV_TARGET_MS);
		return;
	}
	bench_json_begin(&j, stdout);
	bench_json_str(&j, "bench", "revoke");
	bench_json_int(&j, "holders", r->o.holders);
	bench_json_int(&j, "rounds", r->o.rounds);
	bench_json_int(&j, "cpus", sysconf(_SC_NPROCESSORS_ONLN));
	bench_json_num(&j, "median_ms", med);
	bench_json_num(&j, "p99_ms", p99);
	bench_json_num(&j, "max_ms", max);
	bench_json_num(&j, "daemon_median_ms", dmed);
	bench_json_num(&j, "daemon_p99_ms", dp99);
	bench_json_num(&j, "target_p99_ms", RV_TARGET_MS);
	bench_json_obj(&j, "ratios");
	bench_json_num(&j, "p99_vs_50ms", p99 / RV_TARGET_MS);
	bench_json_close(&j);
	bench_json_end(&j);
}

static int rv_setup(struct rv_run *r)
{
	const char *tmp = getenv("TMPDIR");

	snprintf(r->dir, sizeof(r->dir), "%s/ortho-bench-revoke-XXXXXX",
		 tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(r->dir)) {
		r->dir[0] = 0;
		return -errno;
	}
	snprintf(r->state, sizeof(r->state), "%s/state", r->dir);
	snprintf(r->sock, sizeof(r->sock), "%s/sock", r->dir);
	snprintf(r->keys, sizeof(r->keys), "%s/keys", r->dir);
	if (strlen(r->sock) >= sizeof(((struct sockaddr_un *)0)->sun_path))
		return -ENAMETOOLONG;
	r->kids = calloc(r->o.holders, sizeof(*r->kids));
	r->orders = calloc(r->o.holders, sizeof(*r->orders));
	r->wall_ms = calloc(r->o.rounds, sizeof(double));
	r->daemon_ms = calloc(r->o.rounds, sizeof(double));
	if (!r->kids || !r->orders || !r->wall_ms || !r->daemon_ms)
		return -ENOMEM;
	return 0;
}

/**
 * bench_revoke() - the revoke subcommand.
 * @argc: argument count, argv[0] being "revoke".
 * @argv: arguments.
 *
 * Return: a process exit status (BENCH_EXIT_*).
 */
int bench_revoke(int argc, char **argv)
{
	struct rv_run r = { .ready = -1 };
	int ret;

	ret = rv_parse(argc, argv, &r.o);
	if (ret) {
		rv_usage(ret > 0 ? stdout : stderr);
		return ret > 0 ? BENCH_EXIT_OK : BENCH_EXIT_USAGE;
	}
	/* A holder that dies must not kill us through a pipe. */
	signal(SIGPIPE, SIG_IGN);
	ret = rv_setup(&r);
	if (ret)
		fprintf(stderr, "ortho-bench: revoke: %s\n", strerror(-ret));
	if (!ret)
		ret = daemon_start(&r);
	if (!ret) {
		ret = holders_start(&r);
		if (ret)
			fprintf(stderr, "ortho-bench: revoke: holders: %s\n",
				strerror(-ret));
	}
	if (!ret)
		ret = run_rounds(&r);
	teardown(&r);
	if (!ret)
		report(&r);
	if (r.dir[0])
		remove_dir(r.dir);
	free(r.kids);
	free(r.orders);
	free(r.wall_ms);
	free(r.daemon_ms);
	return ret ? BENCH_EXIT_FAIL : BENCH_EXIT_OK;
}
