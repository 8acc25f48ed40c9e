// SPDX-License-Identifier: MIT
/*
 * kmod_test: the ortho.ko tests, run inside qemu by tests/kmod/init.sh.
 *
 *   kmod_test --list          "<root|user> <case>" per line
 *   kmod_test --setup CASE    root's preparation of a user case
 *   kmod_test CASE            run one case: "PASS: CASE" or "FAIL: CASE: why"
 *
 * This file holds the entry point and the cases about the interface and
 * the policy; kmod_test_revoke.c those about revocation and lifetime;
 * kmod_test_admin.c those about policy updates and the listings.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <termios.h>
#include <unistd.h>

#include "kt.h"

#define KT_CASE_TIMEOUT_S 120

static const char *kt_case_name;

static int case_device(void)
{
	struct stat st;
	char b;
	int fd;

	KT_CHECK(!stat(ORTHO_IOC_DEVICE, &st), "stat %s: %s", ORTHO_IOC_DEVICE,
		 strerror(errno));
	KT_CHECK(S_ISCHR(st.st_mode), "%s is not a character device",
		 ORTHO_IOC_DEVICE);
	KT_CHECK(major(st.st_rdev) == 10, "major %u, want 10 (misc)",
		 major(st.st_rdev));
	KT_CHECK((st.st_mode & 0777) == 0666, "mode %o, want 0666",
		 st.st_mode & 0777);
	fd = kt_open();
	KT_CHECK(fd >= 0, "open: %s", kt_strerr(fd));
	KT_CHECK(read(fd, &b, 1) < 0 && errno == EINVAL, "read() should fail");
	KT_CHECK(lseek(fd, 0, SEEK_SET) < 0 && errno == ESPIPE,
		 "lseek() should fail with ESPIPE");
	KT_CHECK(kt_poll_revents(fd, 0) == 0, "poll reports events with no hold");
	close(fd);
	return 0;
}

static int add_expect(int fd, struct ortho_ioc_add *a, int want)
{
	KT_RET(kt_ioctl(fd, ORTHO_IOC_ADD, a), want);
	return 0;
}

static int case_add_invalid(void)
{
	uint8_t id[ORTHO_IOC_ID_SIZE], key[ORTHO_IOC_KEY_SIZE];
	struct ortho_ioc_status s;
	struct ortho_ioc_add a;
	uint32_t uid = 0;
	int fd = kt_open();

	KT_CHECK(fd >= 0, "open: %s", kt_strerr(fd));
	kt_new_shard(id, key);
#define BAD(mutate)							\
	do {								\
		kt_add_arg(&a, id, key, "good", &uid, 1, NULL, 0);	\
		mutate;							\
		if (add_expect(fd, &a, -EINVAL))			\
			return -1;					\
	} while (0)
	BAD(a.flags = 1);
	BAD(a.reserved[2] = 7);
	BAD(memset(a.id, 0, sizeof(a.id)));
	BAD(memset(a.key, 0, sizeof(a.key)));
	BAD(memset(a.label, 0, sizeof(a.label)));
	BAD(strcpy(a.label, "with space"));
	BAD(strcpy(a.label, "tab\there"));
	BAD(memset(a.label, 'x', sizeof(a.label)));
	BAD(a.label[40] = 'z');
	BAD(a.n_uids = ORTHO_IOC_POLICY_MAX + 1);
	BAD(a.n_gids = 1000);
	BAD(a.uids[5] = 42);
	BAD(a.gids[0] = 42);
	BAD(a.uids[0] = (uint32_t)-1);
	BAD((a.n_gids = 1, a.gids[0] = (uint32_t)-1));
#undef BAD
	/* The same struct, made valid, goes in once. */
	kt_add_arg(&a, id, key, "add-invalid", &uid, 1, NULL, 0);
	KT_OK(kt_ioctl(fd, ORTHO_IOC_ADD, &a));
	KT_RET(kt_ioctl(fd, ORTHO_IOC_ADD, &a), -EEXIST);
	KT_OK(kt_status(fd, id, &s));
	KT_CHECK(s.state == ORTHO_IOC_KEY_LIVE, "state %u", s.state);
	KT_CHECK(!strcmp(s.label, "add-invalid"), "label '%s'", s.label);
	KT_CHECK(s.counts.holders == 0 && !s.generation && !s.revoked_ns,
		 "fresh key has holders %u generation %llu", s.counts.holders,
		 (unsigned long long)s.generation);
	KT_CHECK(s.grace_ms == KT_GRACE_MS, "grace_ms %u", s.grace_ms);
	/* An empty policy is valid: nobody may fetch. */
	kt_new_shard(id, key);
	KT_OK(kt_add(fd, id, key, "nobody", NULL, 0, NULL, 0));
	KT_RET(kt_get(fd, id, NULL), -EACCES);
	close(fd);
	return 0;
}

/* Unknown or mis-shaped commands: nothing reaches a handler. */
static int malformed_cmds(int fd, struct ortho_ioc_status *s)
{
	struct termios t;

	KT_RET(kt_ioctl(fd, _IOWR(ORTHO_IOC_MAGIC, 0x40, struct ortho_ioc_status), s), -ENOTTY);
	KT_RET(kt_ioctl(fd, _IOWR(ORTHO_IOC_MAGIC, 0x00, struct ortho_ioc_status), s), -ENOTTY);
	KT_RET(kt_ioctl(fd, _IOWR('x', 0x06, struct ortho_ioc_status), s), -ENOTTY);
	KT_RET(kt_ioctl(fd, _IOR(ORTHO_IOC_MAGIC, 0x06, struct ortho_ioc_status), s), -ENOTTY);
	KT_RET(kt_ioctl(fd, _IOW(ORTHO_IOC_MAGIC, 0x06, struct ortho_ioc_status), s), -ENOTTY);
	KT_RET(kt_ioctl(fd, _IO(ORTHO_IOC_MAGIC, 0x06), s), -ENOTTY);
	KT_RET(kt_ioctl(fd, _IOR(ORTHO_IOC_MAGIC, 0x01, struct ortho_ioc_add), s), -ENOTTY);
	KT_RET(kt_ioctl(fd, TCGETS, &t), -ENOTTY);
	return 0;
}

static int malformed_sizes(int fd, const struct ortho_ioc_status *good)
{
	static uint8_t huge[(1u << _IOC_SIZEBITS) - 1];
	const unsigned int rw = _IOC_READ | _IOC_WRITE;
	struct {
		struct ortho_ioc_status s;
		uint8_t tail[64];
	} big;
	struct ortho_ioc_status s = *good;
	unsigned int i;

	s.size = sizeof(s) - 8;
	KT_RET(kt_ioctl(fd, ORTHO_IOC_STATUS, &s), -EINVAL);
	s.size = 0;
	KT_RET(kt_ioctl(fd, ORTHO_IOC_STATUS, &s), -EINVAL);
	s.size = sizeof(s) + 8;
	KT_RET(kt_ioctl(fd, ORTHO_IOC_STATUS, &s), -EINVAL);
	/* A shorter struct than the first version. */
	s.size = sizeof(s) - 8;
	KT_RET(kt_ioctl(fd, _IOC(rw, ORTHO_IOC_MAGIC, 0x06, sizeof(s) - 8), &s), -EINVAL);
	/* A longer one, from a newer header: zero tail accepted, kept. */
	memset(&big, 0, sizeof(big));
	big.s = *good;
	big.s.size = sizeof(big);
	KT_OK(kt_ioctl(fd, _IOC(rw, ORTHO_IOC_MAGIC, 0x06, sizeof(big)), &big));
	KT_CHECK(big.s.state == ORTHO_IOC_KEY_LIVE, "long struct: state %u", big.s.state);
	for (i = 0; i < sizeof(big.tail); i++)
		KT_CHECK(!big.tail[i], "tail byte %u written", i);
	big.tail[63] = 1;
	KT_RET(kt_ioctl(fd, _IOC(rw, ORTHO_IOC_MAGIC, 0x06, sizeof(big)), &big), -E2BIG);
	/* The largest size an ioctl number can carry. */
	memcpy(huge, good, sizeof(*good));
	i = sizeof(huge);
	memcpy(huge, &i, sizeof(i));
	KT_OK(kt_ioctl(fd, _IOC(rw, ORTHO_IOC_MAGIC, 0x06, sizeof(huge)), huge));
	huge[sizeof(huge) - 1] = 0xff;
	KT_RET(kt_ioctl(fd, _IOC(rw, ORTHO_IOC_MAGIC, 0x06, sizeof(huge)), huge), -E2BIG);
	return 0;
}

/* Non-zero flags, padding or reserved words in each command. */
static int malformed_reserved(int fd, const uint8_t *id)
{
	struct ortho_ioc_resident res = { .size = sizeof(res) };
	struct ortho_ioc_pending pend = { .size = sizeof(pend) };
	struct ortho_ioc_revoke rev = { .size = sizeof(rev) };
	struct ortho_ioc_status st = { .size = sizeof(st) };
	struct ortho_ioc_get get = { .size = sizeof(get) };
	struct ortho_ioc_ack ack = { .size = sizeof(ack) };

#define RSV(s, cmd)							\
	do {								\
		memcpy((s).id, id, ORTHO_IOC_ID_SIZE);			\
		(s).flags = 0x80;					\
		KT_RET(kt_ioctl(fd, cmd, &(s)), -EINVAL);		\
		(s).flags = 0;						\
		(s).reserved[3] = 1;					\
		KT_RET(kt_ioctl(fd, cmd, &(s)), -EINVAL);		\
		(s).reserved[3] = 0;					\
	} while (0)
	RSV(get, ORTHO_IOC_GET);
	RSV(st, ORTHO_IOC_STATUS);
	RSV(rev, ORTHO_IOC_REVOKE);
	RSV(ack, ORTHO_IOC_ACK);
	RSV(res, ORTHO_IOC_RESIDENT);
#undef RSV
	rev.pad = 1;
	KT_RET(kt_ioctl(fd, ORTHO_IOC_REVOKE, &rev), -EINVAL);
	pend.flags = 1;
	KT_RET(kt_ioctl(fd, ORTHO_IOC_PENDING, &pend), -EINVAL);
	pend.flags = 0;
	pend.reserved[0] = 1;
	KT_RET(kt_ioctl(fd, ORTHO_IOC_PENDING, &pend), -EINVAL);
	/* None of those touched the key. */
	KT_OK(kt_status(fd, id, &st));
	KT_CHECK(st.state == ORTHO_IOC_KEY_LIVE && !st.counts.holders,
		 "state %u holders %u after rejected calls", st.state,
		 st.counts.holders);
	return 0;
}

static int malformed_pointers(int fd, const struct ortho_ioc_status *good)
{
	long pg = sysconf(_SC_PAGESIZE);
	uint8_t *map;
	struct ortho_ioc_get *g;

	KT_RET(kt_ioctl(fd, ORTHO_IOC_STATUS, NULL), -EFAULT);
	KT_RET(kt_ioctl(fd, ORTHO_IOC_STATUS, (void *)1), -EFAULT);
	KT_RET(kt_ioctl(fd, ORTHO_IOC_STATUS, (void *)0xffff888000000000ull), -EFAULT);
	map = mmap(NULL, 2 * pg, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	KT_CHECK(map != MAP_FAILED, "mmap: %s", strerror(errno));
	KT_CHECK(!mprotect(map + pg, pg, PROT_NONE), "mprotect");
	/* Straddling the end of the readable page. */
	memcpy(map + pg - 16, good, 16);
	KT_RET(kt_ioctl(fd, ORTHO_IOC_STATUS, map + pg - 16), -EFAULT);
	KT_RET(kt_ioctl(fd, ORTHO_IOC_STATUS, map + pg), -EFAULT);
	/* Readable, not writable: the result cannot be copied out. */
	memcpy(map, good, sizeof(*good));
	KT_CHECK(!mprotect(map, pg, PROT_READ), "mprotect");
	KT_RET(kt_ioctl(fd, ORTHO_IOC_STATUS, map), -EFAULT);
	KT_CHECK(!mprotect(map, pg, PROT_READ | PROT_WRITE), "mprotect");
	g = (struct ortho_ioc_get *)map;
	memset(g, 0, sizeof(*g));
	g->size = sizeof(*g);
	memcpy(g->id, good->id, ORTHO_IOC_ID_SIZE);
	KT_CHECK(!mprotect(map, pg, PROT_READ), "mprotect");
	KT_RET(kt_ioctl(fd, ORTHO_IOC_GET, g), -EFAULT);
	munmap(map, 2 * pg);
	/* The get above made this file a holder; ending the hold works. */
	KT_OK(kt_ack(fd, good->id));
	KT_RET(kt_ack(fd, good->id), -ENOENT);
	return 0;
}

static int case_malformed(void)
{
	uint8_t id[ORTHO_IOC_ID_SIZE], key[ORTHO_IOC_KEY_SIZE];
	struct ortho_ioc_status s = { .size = sizeof(s) };
	int fd = kt_open();

	KT_CHECK(fd >= 0, "open: %s", kt_strerr(fd));
	KT_OK(kt_add_for_uid(fd, id, key, "malformed", 0));
	memcpy(s.id, id, sizeof(id));
	if (malformed_cmds(fd, &s) || malformed_sizes(fd, &s) ||
	    malformed_reserved(fd, id) || malformed_pointers(fd, &s))
		return -1;
	close(fd);
	return 0;
}

struct policy_probe {
	const uint8_t *id;
	const uint8_t *key;
	int want;		/* of the get */
	int reopen_as_root;	/* use the fd inherited from the parent */
	int fd;
};

static int probe_get(void *arg)
{
	struct policy_probe *p = arg;
	uint8_t key[ORTHO_IOC_KEY_SIZE];
	int fd = p->reopen_as_root ? p->fd : kt_open();

	KT_CHECK(fd >= 0, "open: %s", kt_strerr(fd));
	KT_RET(kt_get(fd, p->id, key), p->want);
	if (!p->want)
		KT_CHECK(!memcmp(key, p->key, sizeof(key)), "wrong key bytes");
	KT_RET(kt_status(fd, p->id, NULL), p->want);
	if (!p->want)
		KT_OK(kt_ack(fd, p->id));
	return 0;
}

/* Run probe_get as @ids; expect @want. */
static int probe(const struct kt_ids *ids, const uint8_t *id, const uint8_t *key,
		 int want, int inherited_fd)
{
	struct policy_probe p = { id, key, want, inherited_fd >= 0, inherited_fd };
	struct kt_child c;
	int rc;

	KT_OK(kt_spawn(&c, ids, probe_get, &p));
	rc = kt_reap(&c, 30000);
	KT_CHECK(rc == 0, "uid %u gid %u: get should give %s (child exit %d)",
		 ids ? ids->uid : 0, ids ? ids->gid : 0, kt_strerr(want), rc);
	return 0;
}

static int case_policy_uid(void)
{
	const struct kt_ids u1000 = { 1000, 1000, 0, { 0 } };
	const struct kt_ids u1001 = { 1001, 1000, 0, { 0 } };
	uint8_t id[ORTHO_IOC_ID_SIZE], key[ORTHO_IOC_KEY_SIZE];
	uint32_t uids[] = { 1000, 1005 };
	int fd = kt_open();

	KT_CHECK(fd >= 0, "open: %s", kt_strerr(fd));
	kt_new_shard(id, key);
	KT_OK(kt_add(fd, id, key, "policy-uid", uids, 2, NULL, 0));
	if (probe(&u1000, id, key, 0, -1) || probe(&u1001, id, key, -EACCES, -1))
		return -1;
	/* Root gets no exception: uid 0 is not in the policy. */
	KT_RET(kt_get(fd, id, NULL), -EACCES);
	close(fd);
	return 0;
}

static int case_policy_gid(void)
{
	const struct kt_ids primary = { 1002, 2000, 0, { 0 } };
	const struct kt_ids supplementary = { 1002, 3000, 1, { 2000 } };
	const struct kt_ids neither = { 1002, 3000, 2, { 3001, 3002 } };
	const struct kt_ids by_uid = { 1003, 3000, 0, { 0 } };
	uint8_t id[ORTHO_IOC_ID_SIZE], key[ORTHO_IOC_KEY_SIZE];
	uint32_t gids[] = { 2000 }, uid = 1003;
	int fd = kt_open();

	KT_CHECK(fd >= 0, "open: %s", kt_strerr(fd));
	kt_new_shard(id, key);
	KT_OK(kt_add(fd, id, key, "policy-gid", &uid, 1, gids, 1));
	if (probe(&primary, id, key, 0, -1) ||
	    probe(&supplementary, id, key, 0, -1) ||
	    probe(&neither, id, key, -EACCES, -1) ||
	    probe(&by_uid, id, key, 0, -1))
		return -1;
	close(fd);
	return 0;
}

/* The policy follows the caller's identity at each call, not the opener's. */
static int case_creds_at_call(void)
{
	const struct kt_ids u1000 = { 1000, 1000, 0, { 0 } };
	const struct kt_ids u1001 = { 1001, 1001, 0, { 0 } };
	uint8_t id[ORTHO_IOC_ID_SIZE], key[ORTHO_IOC_KEY_SIZE];
	int fd = kt_open();

	KT_CHECK(fd >= 0, "open: %s", kt_strerr(fd));
	KT_OK(kt_add_for_uid(fd, id, key, "creds-at-call", 1000));
	/* Root opened fd; children use it after dropping privileges. */
	if (probe(&u1000, id, key, 0, fd) || probe(&u1001, id, key, -EACCES, fd))
		return -1;
	KT_RET(kt_get(fd, id, NULL), -EACCES);
	close(fd);
	return 0;
}

struct unpriv_state {
	uint8_t mine[ORTHO_IOC_ID_SIZE];
	uint8_t mine_key[ORTHO_IOC_KEY_SIZE];
	uint8_t other[ORTHO_IOC_ID_SIZE];
};

static int setup_unpriv(void)
{
	struct unpriv_state st;
	uint8_t key[ORTHO_IOC_KEY_SIZE];
	int fd = kt_open();

	KT_CHECK(fd >= 0, "open: %s", kt_strerr(fd));
	KT_OK(kt_add_for_uid(fd, st.mine, st.mine_key, "unpriv-mine", 1000));
	KT_OK(kt_add_for_uid(fd, st.other, key, "unpriv-other", 4242));
	KT_OK(kt_state_save("unpriv", (uint8_t *)&st, sizeof(st)));
	close(fd);
	return 0;
}

/* Run by init.sh as uid 1000 (tests/kmod/runas). */
static int case_unpriv(void)
{
	uint8_t id[ORTHO_IOC_ID_SIZE], key[ORTHO_IOC_KEY_SIZE];
	struct unpriv_state st;
	uint32_t uid = 1000, n = 0;
	int fd;

	KT_CHECK(getuid() == 1000 && geteuid() == 1000, "runs as uid %u, want 1000",
		 getuid());
	KT_OK(kt_state_load("unpriv", (uint8_t *)&st, sizeof(st)));
	fd = kt_open();
	KT_CHECK(fd >= 0, "open as uid 1000: %s", kt_strerr(fd));
	kt_new_shard(id, key);
	KT_RET(kt_add(fd, id, key, "sneaky", &uid, 1, NULL, 0), -EPERM);
	KT_RET(kt_revoke(fd, st.mine, 0, NULL), -EPERM);
	KT_RET(kt_revoke(fd, st.other, 0, NULL), -EPERM);
	KT_OK(kt_get(fd, st.mine, key));
	KT_CHECK(!memcmp(key, st.mine_key, sizeof(key)), "wrong key bytes");
	KT_RET(kt_get(fd, st.other, NULL), -EACCES);
	KT_OK(kt_status(fd, st.mine, NULL));
	KT_RET(kt_status(fd, st.other, NULL), -EACCES);
	KT_RET(kt_get(fd, id, NULL), -ENOKEY);
	KT_OK(kt_resident(fd, st.mine, 4096));
	KT_OK(kt_pending(fd, NULL, &n, NULL));
	KT_OK(kt_ack(fd, st.mine));
	KT_RET(kt_ack(fd, st.other), -ENOENT);
	/* Writing the module parameter needs root. */
	KT_RET(kt_write_file(KT_GRACE_PARAM, "5000"), -EACCES);
	close(fd);
	return 0;
}

static int case_grace_param(void)
{
	char buf[32];

	KT_OK(kt_read_file(KT_GRACE_PARAM, buf, sizeof(buf)));
	KT_CHECK(atoi(buf) == KT_GRACE_MS, "grace_ms reads '%s'", buf);
	KT_RET(kt_write_file(KT_GRACE_PARAM, "0"), -EINVAL);
	KT_RET(kt_write_file(KT_GRACE_PARAM, "600001"), -EINVAL);
	KT_RET(kt_write_file(KT_GRACE_PARAM, "soon"), -EINVAL);
	KT_OK(kt_write_file(KT_GRACE_PARAM, "1234"));
	KT_OK(kt_read_file(KT_GRACE_PARAM, buf, sizeof(buf)));
	KT_CHECK(atoi(buf) == 1234, "grace_ms reads '%s' after writing 1234", buf);
	KT_OK(kt_write_file(KT_GRACE_PARAM, "300"));
	KT_OK(kt_read_file("/sys/module/ortho/parameters/max_keys", buf, sizeof(buf)));
	KT_CHECK(atoi(buf) == 4096, "max_keys reads '%s'", buf);
	return 0;
}

struct kt_case {
	const char *name;
	int user;			/* run as uid 1000 by init.sh */
	int (*setup)(void);		/* as root, before a user case */
	int (*run)(void);
};

static const struct kt_case kt_cases[] = {
	{ "device", 0, NULL, case_device },
	{ "grace-param", 0, NULL, case_grace_param },
	{ "add-invalid", 0, NULL, case_add_invalid },
	{ "malformed", 0, NULL, case_malformed },
	{ "policy-uid", 0, NULL, case_policy_uid },
	{ "policy-gid", 0, NULL, case_policy_gid },
	{ "creds-at-call", 0, NULL, case_creds_at_call },
	{ "unpriv", 1, setup_unpriv, case_unpriv },
	{ "revoke", 0, NULL, kt_case_revoke },
	{ "poll-ack", 0, NULL, kt_case_poll_ack },
	{ "kill", 0, NULL, kt_case_kill },
	{ "fdinfo", 0, NULL, kt_case_fdinfo },
	{ "concurrent", 0, NULL, kt_case_concurrent },
	{ "race", 0, NULL, kt_case_race },
	{ "audit", 0, NULL, kt_case_audit },
	{ "set-policy", 0, NULL, kt_case_set_policy },
	{ "list", 0, NULL, kt_case_list },
	{ "holders", 0, NULL, kt_case_holders },
	{ "rmmod", 0, NULL, kt_case_rmmod },
};

static void kt_timeout(int sig)
{
	char msg[160];
	int n;

	n = snprintf(msg, sizeof(msg), "FAIL: %s: timed out after %d s\n",
		     kt_case_name, KT_CASE_TIMEOUT_S);
	if (write(STDOUT_FILENO, msg, n) < 0)
		_exit(2);
	kt_reap_all();
	_exit(1);
}

static const struct kt_case *kt_find(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof(kt_cases) / sizeof(kt_cases[0]); i++)
		if (!strcmp(kt_cases[i].name, name))
			return &kt_cases[i];
	return NULL;
}

static int kt_run(const struct kt_case *c, int setup)
{
	int ret;

	kt_case_name = c->name;
	signal(SIGALRM, kt_timeout);
	alarm(KT_CASE_TIMEOUT_S);
	ret = setup ? (c->setup ? c->setup() : 0) : c->run();
	kt_reap_all();
	alarm(0);
	/* Cases may lengthen the grace period; the next one expects 300. */
	if (!geteuid())
		kt_write_file(KT_GRACE_PARAM, "300");
	if (ret)
		kt_printf("FAIL: %s%s: %s", c->name, setup ? " (setup)" : "",
			  kt_reason()[0] ? kt_reason() : "failed");
	else if (!setup)
		kt_printf("PASS: %s", c->name);
	return ret ? 1 : 0;
}

int main(int argc, char **argv)
{
	const struct kt_case *c;
	size_t i;

	setvbuf(stdout, NULL, _IONBF, 0);
	if (argc == 2 && !strcmp(argv[1], "--list")) {
		for (i = 0; i < sizeof(kt_cases) / sizeof(kt_cases[0]); i++)
			printf("%s %s\n", kt_cases[i].user ? "user" : "root",
			       kt_cases[i].name);
		return 0;
	}
	if (argc == 3 && !strcmp(argv[1], "--setup")) {
		c = kt_find(argv[2]);
		return c ? kt_run(c, 1) : 2;
	}
	if (argc != 2 || !(c = kt_find(argv[1]))) {
		fprintf(stderr, "usage: kmod_test --list | --setup CASE | CASE\n");
		return 2;
	}
	return kt_run(c, 0);
}
