// SPDX-License-Identifier: MIT
/*
 * kmod_test: the cases about revocation, its enforcement and lifetime:
 * revoke then -EKEYREVOKED, every holder woken (poll, epoll, select),
 * acknowledgement, the kill after the grace period, fdinfo, 32 holders,
 * get/ack racing a revoke, the audit records, unloading with open files.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kt.h"

#define KT_HOLDER_GID 2000
#define KT_WAIT_MS 60000

enum holder_mode {
	HOLD_POLL,	/* poll(POLLPRI), check PENDING, ack */
	HOLD_EPOLL,	/* the same through epoll */
	HOLD_SELECT,	/* the same through select's exceptfds */
	HOLD_IDLE,	/* holds nothing revoked: must not be woken */
	HOLD_NEVER,	/* never acknowledges */
	HOLD_CLOSE,	/* closes its file instead of acknowledging */
};

struct holder_arg {
	const uint8_t *id;
	const uint8_t *key;
	enum holder_mode mode;
	int fdno;		/* dup the fd here when > 0 (fdinfo) */
	uint64_t resident;
};

static int set_grace(unsigned int ms)
{
	char v[16];

	snprintf(v, sizeof(v), "%u", ms);
	return kt_write_file(KT_GRACE_PARAM, v);
}

static int wait_event(int fd, enum holder_mode mode)
{
	struct epoll_event ev = { .events = EPOLLPRI };
	struct timeval tv = { .tv_sec = 30 };
	fd_set ex;
	int ep, n;

	switch (mode) {
	case HOLD_EPOLL:
		ep = epoll_create1(EPOLL_CLOEXEC);
		KT_CHECK(ep >= 0, "epoll_create1: %s", strerror(errno));
		KT_CHECK(!epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev), "epoll_ctl");
		n = epoll_wait(ep, &ev, 1, 30000);
		close(ep);
		KT_CHECK(n == 1 && (ev.events & EPOLLPRI),
			 "epoll_wait: %d events %#x", n, ev.events);
		return 0;
	case HOLD_SELECT:
		FD_ZERO(&ex);
		FD_SET(fd, &ex);
		n = select(fd + 1, NULL, NULL, &ex, &tv);
		KT_CHECK(n == 1 && FD_ISSET(fd, &ex), "select: %d", n);
		return 0;
	default:
		KT_CHECK(!kt_wait_pri(fd, 30000), "no POLLPRI within 30 s");
		return 0;
	}
}

/* Told of the revocation: PENDING names the shard until the ack. */
static int holder_ack(int fd, const struct holder_arg *a)
{
	uint8_t ids[4 * ORTHO_IOC_ID_SIZE];
	uint32_t n = 0, total = 0;

	KT_OK(kt_pending(fd, NULL, &n, &total));
	KT_CHECK(total == 1 && n == 0, "pending total %u n %u", total, n);
	n = 1;
	KT_RET(kt_pending(fd, (uint8_t *)1, &n, &total), -EFAULT);
	n = 4;
	KT_OK(kt_pending(fd, ids, &n, &total));
	KT_CHECK(n == 1 && !memcmp(ids, a->id, ORTHO_IOC_ID_SIZE),
		 "pending lists %u ids, not the revoked one", n);
	KT_CHECK(!kt_wait_pri(fd, 0), "POLLPRI gone before the ack");
	KT_RET(kt_get(fd, a->id, NULL), -EKEYREVOKED);
	KT_OK(kt_ack(fd, a->id));
	KT_CHECK(kt_poll_revents(fd, 0) == 0, "events after the ack");
	n = 0;
	KT_OK(kt_pending(fd, NULL, &n, &total));
	KT_CHECK(total == 0, "pending total %u after the ack", total);
	return 0;
}

static int holder(void *arg)
{
	const struct holder_arg *a = arg;
	uint8_t key[ORTHO_IOC_KEY_SIZE];
	int fd = kt_open();

	KT_CHECK(fd >= 0, "open: %s", kt_strerr(fd));
	if (a->fdno > 0) {
		KT_CHECK(dup2(fd, a->fdno) == a->fdno, "dup2");
		close(fd);
		fd = a->fdno;
	}
	KT_OK(kt_get(fd, a->id, key));
	KT_CHECK(!memcmp(key, a->key, sizeof(key)), "wrong key bytes");
	if (a->resident)
		KT_OK(kt_resident(fd, a->id, a->resident));
	KT_CHECK(kt_poll_revents(fd, 0) == 0, "events before any revocation");
	KT_OK(kt_child_ready());
	switch (a->mode) {
	case HOLD_IDLE:
		KT_OK(kt_child_wait_go());
		KT_CHECK(kt_poll_revents(fd, 0) == 0,
			 "woken by another shard's revocation");
		KT_OK(kt_ack(fd, a->id));
		return 0;
	case HOLD_NEVER:
		for (;;)
			pause();
	case HOLD_CLOSE:
		KT_CHECK(!kt_wait_pri(fd, 30000), "no POLLPRI within 30 s");
		close(fd);
		return kt_child_wait_go();
	default:
		if (wait_event(fd, a->mode))
			return -1;
		return holder_ack(fd, a);
	}
}

static struct kt_ids holder_ids(int i)
{
	struct kt_ids ids = { 1000 + i, KT_HOLDER_GID, 0, { 0 } };

	return ids;
}

static int spawn_holders(struct kt_child *c, int n, struct holder_arg *a)
{
	struct kt_ids ids;
	int i;

	for (i = 0; i < n; i++) {
		ids = holder_ids(i);
		KT_OK(kt_spawn(&c[i], &ids, holder, &a[i]));
	}
	for (i = 0; i < n; i++)
		KT_CHECK(!kt_wait_ready(&c[i], KT_WAIT_MS),
			 "holder %d (pid %d) not ready", i, c[i].pid);
	return 0;
}

static int add_group_shard(int fd, uint8_t *id, uint8_t *key, const char *label)
{
	uint32_t gid = KT_HOLDER_GID, uid = 0;

	kt_new_shard(id, key);
	return kt_add(fd, id, key, label, &uid, 1, &gid, 1);
}

int kt_case_revoke(void)
{
	uint8_t id[ORTHO_IOC_ID_SIZE], key[ORTHO_IOC_KEY_SIZE];
	uint8_t id2[ORTHO_IOC_ID_SIZE], key2[ORTHO_IOC_KEY_SIZE];
	struct ortho_ioc_status s0, s;
	struct ortho_ioc_revoke r;
	uint64_t t0;
	int fd = kt_open(), fd2 = kt_open();

	KT_CHECK(fd >= 0 && fd2 >= 0, "open: %s", kt_strerr(fd));
	KT_OK(set_grace(20000));	/* this process holds the key */
	KT_OK(kt_add_for_uid(fd, id, key, "revoke", 0));
	KT_OK(kt_get(fd, id, key2));
	KT_CHECK(!memcmp(key, key2, sizeof(key)), "wrong key bytes");
	KT_OK(kt_status(fd, id, &s0));
	KT_CHECK(s0.counts.holders == 1, "live holders %u", s0.counts.holders);
	t0 = kt_now_ns();
	KT_OK(kt_revoke(fd, id, 0, &r));
	KT_CHECK(r.generation > s0.current_generation, "generation %llu not above %llu",
		 (unsigned long long)r.generation,
		 (unsigned long long)s0.current_generation);
	KT_CHECK(r.counts.holders == 1 && r.grace_ms == 20000,
		 "revoke: holders %u grace %u", r.counts.holders, r.grace_ms);
	KT_RET(kt_get(fd, id, NULL), -EKEYREVOKED);
	KT_RET(kt_get(fd2, id, NULL), -EKEYREVOKED);
	KT_RET(kt_revoke(fd, id, 0, NULL), -EKEYREVOKED);
	KT_RET(kt_add(fd, id, key, "again", NULL, 0, NULL, 0), -EEXIST);
	KT_OK(kt_status(fd, id, &s));
	KT_CHECK(s.state == ORTHO_IOC_KEY_REVOKED && s.generation == r.generation &&
		 s.current_generation >= r.generation,
		 "status: state %u generation %llu", s.state,
		 (unsigned long long)s.generation);
	KT_CHECK(s.revoked_ns >= t0 && !s.done_ns && s.counts.holders == 1 &&
		 !s.counts.acked, "status while pending: done %llu acked %u",
		 (unsigned long long)s.done_ns, s.counts.acked);
	KT_CHECK(!kt_wait_pri(fd, 0), "holder not flagged");
	KT_CHECK(kt_poll_revents(fd2, 0) == 0, "non-holder flagged");
	KT_OK(kt_resident(fd, id, 100));
	KT_OK(kt_ack(fd, id));
	KT_OK(kt_ack(fd, id));
	KT_RET(kt_resident(fd, id, 1), -EKEYREVOKED);
	KT_OK(kt_resident(fd, id, 0));
	KT_CHECK(kt_poll_revents(fd, 0) == 0, "flagged after the ack");
	KT_OK(kt_status(fd, id, &s));
	KT_CHECK(s.counts.acked == 1 && s.done_ns >= s.revoked_ns,
		 "after ack: acked %u done %llu", s.counts.acked,
		 (unsigned long long)s.done_ns);
	/* A revocation nobody holds is done at once. */
	KT_OK(kt_add_for_uid(fd, id2, key2, "revoke-unheld", 0));
	KT_OK(kt_revoke(fd, id2, ORTHO_IOC_REVOKE_WAIT, &r));
	KT_CHECK(!r.counts.holders, "holders %u", r.counts.holders);
	KT_OK(kt_status(fd, id2, &s));
	KT_CHECK(s.done_ns, "unheld revocation not done");
	/* Unknown shards. */
	kt_new_shard(id2, key2);
	KT_RET(kt_revoke(fd, id2, 0, NULL), -ENOKEY);
	KT_RET(kt_get(fd, id2, NULL), -ENOKEY);
	KT_RET(kt_ack(fd, id2), -ENOKEY);
	KT_RET(kt_status(fd, id2, NULL), -ENOKEY);
	KT_RET(kt_resident(fd, id2, 1), -ENOKEY);
	close(fd);
	close(fd2);
	return 0;
}

int kt_case_poll_ack(void)
{
	static const enum holder_mode modes[] = {
		HOLD_POLL, HOLD_POLL, HOLD_EPOLL, HOLD_SELECT, HOLD_IDLE,
	};
	enum { N = sizeof(modes) / sizeof(modes[0]) };
	uint8_t id[ORTHO_IOC_ID_SIZE], key[ORTHO_IOC_KEY_SIZE];
	uint8_t idle_id[ORTHO_IOC_ID_SIZE], idle_key[ORTHO_IOC_KEY_SIZE];
	struct holder_arg a[N];
	struct kt_child c[N];
	struct ortho_ioc_revoke r;
	int fd = kt_open(), i, rc;

	KT_CHECK(fd >= 0, "open: %s", kt_strerr(fd));
	KT_OK(set_grace(30000));
	KT_OK(add_group_shard(fd, id, key, "poll-ack"));
	KT_OK(add_group_shard(fd, idle_id, idle_key, "poll-ack-idle"));
	for (i = 0; i < N; i++) {
		memset(&a[i], 0, sizeof(a[i]));
		a[i].mode = modes[i];
		a[i].id = modes[i] == HOLD_IDLE ? idle_id : id;
		a[i].key = modes[i] == HOLD_IDLE ? idle_key : key;
	}
	if (spawn_holders(c, N, a))
		return -1;
	KT_OK(kt_revoke(fd, id, ORTHO_IOC_REVOKE_WAIT, &r));
	KT_CHECK(r.counts.holders == N - 1 && r.counts.acked == N - 1 &&
		 !r.counts.killed && !r.counts.closed,
		 "holders %u acked %u killed %u closed %u", r.counts.holders,
		 r.counts.acked, r.counts.killed, r.counts.closed);
	KT_OK(kt_send_go(&c[N - 1]));
	for (i = 0; i < N; i++) {
		rc = kt_reap(&c[i], KT_WAIT_MS);
		KT_CHECK(rc == 0, "holder %d (mode %d) exit %d", i, modes[i], rc);
	}
	close(fd);
	return 0;
}

/* A revoke with a holder that never acks: it dies after the grace period. */
static int kill_wait_variant(int fd)
{
	uint8_t id[ORTHO_IOC_ID_SIZE], key[ORTHO_IOC_KEY_SIZE];
	struct holder_arg a = { .mode = HOLD_NEVER };
	struct ortho_ioc_revoke r;
	struct kt_child c;
	uint64_t t0, ms;
	int rc;

	KT_OK(add_group_shard(fd, id, key, "kill-wait"));
	a.id = id;
	a.key = key;
	if (spawn_holders(&c, 1, &a))
		return -1;
	t0 = kt_now_ns();
	KT_OK(kt_revoke(fd, id, ORTHO_IOC_REVOKE_WAIT, &r));
	ms = (kt_now_ns() - t0) / 1000000;
	KT_CHECK(r.grace_ms == KT_GRACE_MS && r.counts.killed == 1,
		 "grace %u killed %u", r.grace_ms, r.counts.killed);
	KT_CHECK(ms >= KT_GRACE_MS, "revoke waited %llu ms, grace is %d ms",
		 (unsigned long long)ms, KT_GRACE_MS);
	rc = kt_reap(&c, KT_WAIT_MS);
	KT_CHECK(rc == 128 + SIGKILL, "never-acking holder exit %d, want SIGKILL", rc);
	return 0;
}

int kt_case_kill(void)
{
	static const enum holder_mode modes[] = { HOLD_NEVER, HOLD_POLL, HOLD_CLOSE };
	uint8_t id[ORTHO_IOC_ID_SIZE], key[ORTHO_IOC_KEY_SIZE];
	struct ortho_ioc_revoke r;
	struct ortho_ioc_status s;
	struct holder_arg a[3];
	struct kt_child c[3];
	char needle[64];
	uint64_t t0, ms;
	int fd = kt_open(), i, rc;

	KT_CHECK(fd >= 0, "open: %s", kt_strerr(fd));
	/* The module was loaded with grace_ms=300: the deadline is short. */
	if (kill_wait_variant(fd))
		return -1;
	/* Room for the two good holders to act under emulation. */
	KT_OK(set_grace(1500));
	KT_OK(add_group_shard(fd, id, key, "kill"));
	for (i = 0; i < 3; i++)
		a[i] = (struct holder_arg){ .id = id, .key = key, .mode = modes[i] };
	if (spawn_holders(c, 3, a))
		return -1;
	t0 = kt_now_ns();
	KT_OK(kt_revoke(fd, id, 0, &r));
	KT_CHECK(r.grace_ms == 1500 && r.counts.holders == 3,
		 "grace %u holders %u", r.grace_ms, r.counts.holders);
	rc = kt_reap(&c[0], KT_WAIT_MS);
	ms = (kt_now_ns() - t0) / 1000000;
	KT_CHECK(rc == 128 + SIGKILL, "never-acking holder exit %d, want SIGKILL", rc);
	KT_CHECK(ms >= 1500, "killed after %llu ms, grace is 1500 ms",
		 (unsigned long long)ms);
	rc = kt_reap(&c[1], KT_WAIT_MS);
	KT_CHECK(rc == 0, "acking holder exit %d", rc);
	/* The closing holder is alive: closing is not a reason to kill. */
	KT_OK(kt_send_go(&c[2]));
	rc = kt_reap(&c[2], KT_WAIT_MS);
	KT_CHECK(rc == 0, "closing holder exit %d", rc);
	KT_OK(kt_status(fd, id, &s));
	KT_CHECK(s.counts.holders == 3 && s.counts.acked == 1 &&
		 s.counts.killed == 1 && s.counts.closed == 1,
		 "holders %u acked %u killed %u closed %u", s.counts.holders,
		 s.counts.acked, s.counts.killed, s.counts.closed);
	KT_CHECK(s.done_ns - s.revoked_ns >= 1500000000ull,
		 "done %llu ns after the revocation",
		 (unsigned long long)(s.done_ns - s.revoked_ns));
	snprintf(needle, sizeof(needle), "killed pid %d (uid 1000)", c[0].pid);
	KT_CHECK(kt_dmesg_has(needle) == 1, "kernel log lacks '%s'", needle);
	close(fd);
	return 0;
}

static int fdinfo_expect(pid_t pid, int fd, const char *key, const char *want)
{
	char val[128];

	KT_OK(kt_fdinfo(pid, fd, key, val, sizeof(val)));
	KT_CHECK(!strcmp(val, want), "fdinfo %s: '%s', want '%s'", key, val, want);
	return 0;
}

static int fdinfo_shard(pid_t pid, int fd, const char *prefix,
			const uint8_t *id, const char *want)
{
	char val[128];

	KT_OK(kt_fdinfo_shard(pid, fd, prefix, id, val, sizeof(val)));
	KT_CHECK(!strcmp(val, want), "fdinfo %s: '%s', want '%s'", prefix, val,
		 want);
	return 0;
}

/* Another process's file: the kernel, not the holder, names pid and uid. */
static int fdinfo_other(const uint8_t *id, const uint8_t *key)
{
	struct holder_arg a = { id, key, HOLD_IDLE, 100, 777 };
	struct kt_child c;
	char pid[16];

	if (spawn_holders(&c, 1, &a))
		return -1;
	snprintf(pid, sizeof(pid), "%d", c.pid);
	if (fdinfo_expect(c.pid, 100, "ortho-pid", pid) ||
	    fdinfo_expect(c.pid, 100, "ortho-uid", "1000") ||
	    fdinfo_expect(c.pid, 100, "ortho-gid", "2000") ||
	    fdinfo_expect(c.pid, 100, "ortho-shards", "1") ||
	    fdinfo_shard(c.pid, 100, "ortho-state", id, "held") ||
	    fdinfo_shard(c.pid, 100, "ortho-resident", id, "777") ||
	    fdinfo_shard(c.pid, 100, "ortho-holder-pid", id, pid) ||
	    fdinfo_shard(c.pid, 100, "ortho-holder-uid", id, "1000"))
		return -1;
	KT_OK(kt_send_go(&c));
	KT_CHECK(kt_reap(&c, KT_WAIT_MS) == 0, "fdinfo holder failed");
	return 0;
}

static int fdinfo_own(int fd, const uint8_t *id1, const uint8_t *id2)
{
	char pid[16], gen[32], val[64], c1[32], c2[32];
	struct ortho_ioc_revoke r;
	int fd2 = kt_open();

	KT_CHECK(fd2 >= 0, "open: %s", kt_strerr(fd2));
	snprintf(pid, sizeof(pid), "%d", getpid());
	KT_OK(kt_get(fd, id1, NULL));
	KT_OK(kt_get(fd, id2, NULL));
	KT_OK(kt_resident(fd, id1, 123456));
	if (fdinfo_expect(getpid(), fd, "ortho-driver", "ortho") ||
	    fdinfo_expect(getpid(), fd, "ortho-pid", pid) ||
	    fdinfo_expect(getpid(), fd, "ortho-uid", "0") ||
	    fdinfo_expect(getpid(), fd, "ortho-shards", "2") ||
	    fdinfo_expect(getpid(), fd, "ortho-pending", "0") ||
	    fdinfo_shard(getpid(), fd, "ortho-label", id1, "fdinfo-one") ||
	    fdinfo_shard(getpid(), fd, "ortho-state", id1, "held") ||
	    fdinfo_shard(getpid(), fd, "ortho-resident", id1, "123456") ||
	    fdinfo_shard(getpid(), fd, "ortho-resident", id2, "0") ||
	    fdinfo_shard(getpid(), fd, "ortho-holder-pid", id1, pid) ||
	    fdinfo_shard(getpid(), fd, "ortho-generation", id1, "0"))
		return -1;
	KT_OK(kt_fdinfo(getpid(), fd, "ortho-client-id", c1, sizeof(c1)));
	KT_OK(kt_fdinfo(getpid(), fd2, "ortho-client-id", c2, sizeof(c2)));
	KT_CHECK(atoll(c1) > 0 && strcmp(c1, c2), "client ids '%s' and '%s'", c1, c2);
	KT_OK(kt_revoke(fd, id1, 0, &r));
	snprintf(gen, sizeof(gen), "%llu", (unsigned long long)r.generation);
	if (fdinfo_shard(getpid(), fd, "ortho-state", id1, "revoked") ||
	    fdinfo_shard(getpid(), fd, "ortho-generation", id1, gen) ||
	    fdinfo_expect(getpid(), fd, "ortho-pending", "1") ||
	    fdinfo_shard(getpid(), fd, "ortho-state", id2, "held"))
		return -1;
	KT_OK(kt_fdinfo(getpid(), fd2, "ortho-revoke-generation", val, sizeof(val)));
	KT_CHECK(strtoull(val, NULL, 10) >= r.generation, "revoke generation %s", val);
	KT_OK(kt_ack(fd, id1));
	if (fdinfo_shard(getpid(), fd, "ortho-state", id1, "acked") ||
	    fdinfo_shard(getpid(), fd, "ortho-resident", id1, "0") ||
	    fdinfo_expect(getpid(), fd, "ortho-pending", "0"))
		return -1;
	/* Acknowledging a live shard ends the hold. */
	KT_OK(kt_ack(fd, id2));
	KT_RET(kt_ack(fd, id2), -ENOENT);
	KT_RET(kt_resident(fd, id2, 1), -ENOENT);
	if (fdinfo_expect(getpid(), fd, "ortho-shards", "1"))
		return -1;
	KT_RET(kt_fdinfo_shard(getpid(), fd, "ortho-state", id2, val, sizeof(val)),
	       -ENOENT);
	close(fd2);
	return 0;
}

int kt_case_fdinfo(void)
{
	uint8_t id1[ORTHO_IOC_ID_SIZE], id2[ORTHO_IOC_ID_SIZE], key[ORTHO_IOC_KEY_SIZE];
	int fd = kt_open();

	KT_CHECK(fd >= 0, "open: %s", kt_strerr(fd));
	KT_OK(set_grace(30000));	/* this process holds a revoked shard */
	KT_OK(add_group_shard(fd, id1, key, "fdinfo-one"));
	KT_OK(add_group_shard(fd, id2, key, "fdinfo-two"));
	if (fdinfo_own(fd, id1, id2))
		return -1;
	KT_OK(add_group_shard(fd, id2, key, "fdinfo-other"));
	if (fdinfo_other(id2, key))
		return -1;
	close(fd);
	return 0;
}

int kt_case_concurrent(void)
{
	enum { N = 32 };
	uint8_t id[ORTHO_IOC_ID_SIZE], key[ORTHO_IOC_KEY_SIZE];
	struct ortho_ioc_revoke r;
	struct holder_arg a[N];
	struct kt_child c[N];
	uint64_t t0;
	int fd = kt_open(), i, rc;

	KT_CHECK(fd >= 0, "open: %s", kt_strerr(fd));
	KT_OK(set_grace(60000));
	KT_OK(add_group_shard(fd, id, key, "concurrent"));
	for (i = 0; i < N; i++)
		a[i] = (struct holder_arg){ .id = id, .key = key,
					    .mode = HOLD_POLL + i % 3 };
	if (spawn_holders(c, N, a))
		return -1;
	t0 = kt_now_ns();
	KT_OK(kt_revoke(fd, id, ORTHO_IOC_REVOKE_WAIT, &r));
	kt_printf("# %d holders acknowledged in %llu ms", N,
		  (unsigned long long)((kt_now_ns() - t0) / 1000000));
	KT_CHECK(r.counts.holders == N && r.counts.acked == N && !r.counts.killed,
		 "holders %u acked %u killed %u", r.counts.holders,
		 r.counts.acked, r.counts.killed);
	for (i = 0; i < N; i++) {
		rc = kt_reap(&c[i], KT_WAIT_MS);
		KT_CHECK(rc == 0, "holder %d exit %d", i, rc);
	}
	close(fd);
	return 0;
}

struct race_arg {
	const uint8_t *id;
	const uint8_t *key;
};

/* Fetch and drop in a loop while the parent revokes. */
static int racer(void *arg)
{
	const struct race_arg *a = arg;
	uint64_t deadline = kt_now_ns() + 60000000000ull;
	uint8_t key[ORTHO_IOC_KEY_SIZE];
	uint32_t n = 0, total = 1;
	int fd = kt_open(), r;

	KT_CHECK(fd >= 0, "open: %s", kt_strerr(fd));
	KT_OK(kt_child_ready());
	for (;;) {
		r = kt_get(fd, a->id, key);
		if (r == -EKEYREVOKED)
			break;
		KT_RET(r, 0);
		KT_CHECK(!memcmp(key, a->key, sizeof(key)), "wrong key bytes");
		/* Ends the hold, or acknowledges a revocation that hit it. */
		KT_OK(kt_ack(fd, a->id));
		KT_CHECK(kt_now_ns() < deadline, "no revocation seen in 60 s");
	}
	KT_OK(kt_pending(fd, NULL, &n, &total));
	KT_CHECK(total == 0, "%u pending after the loop", total);
	KT_RET(kt_get(fd, a->id, NULL), -EKEYREVOKED);
	close(fd);
	return 0;
}

int kt_case_race(void)
{
	enum { N = 8 };
	uint8_t id[ORTHO_IOC_ID_SIZE], key[ORTHO_IOC_KEY_SIZE];
	struct race_arg a = { id, key };
	struct ortho_ioc_revoke r;
	struct ortho_ioc_status s;
	struct kt_child c[N];
	struct kt_ids ids;
	int fd = kt_open(), i, rc;

	KT_CHECK(fd >= 0, "open: %s", kt_strerr(fd));
	KT_OK(set_grace(60000));
	KT_OK(add_group_shard(fd, id, key, "race"));
	for (i = 0; i < N; i++) {
		ids = holder_ids(i);
		KT_OK(kt_spawn(&c[i], &ids, racer, &a));
	}
	for (i = 0; i < N; i++)
		KT_CHECK(!kt_wait_ready(&c[i], KT_WAIT_MS), "racer %d not ready", i);
	usleep(300000);
	KT_OK(kt_revoke(fd, id, ORTHO_IOC_REVOKE_WAIT, &r));
	KT_CHECK(r.counts.holders <= N && !r.counts.killed &&
		 r.counts.acked + r.counts.closed == r.counts.holders,
		 "holders %u acked %u killed %u closed %u", r.counts.holders,
		 r.counts.acked, r.counts.killed, r.counts.closed);
	for (i = 0; i < N; i++) {
		rc = kt_reap(&c[i], KT_WAIT_MS);
		KT_CHECK(rc == 0, "racer %d exit %d", i, rc);
	}
	KT_OK(kt_status(fd, id, &s));
	KT_CHECK(s.done_ns && !s.counts.killed, "done %llu killed %u",
		 (unsigned long long)s.done_ns, s.counts.killed);
	close(fd);
	return 0;
}

/* The audit records reach the kernel log through kauditd (no auditd). */
int kt_case_audit(void)
{
	static const char *const needles[] = {
		"type=1316", "op=ortho-add shard=", "op=ortho-revoke shard=",
		"op=ortho-kill shard=", "op=ortho-revoke-done shard=",
		"ortho: shard ",
	};
	size_t i;
	int tries, r;

	for (i = 0; i < sizeof(needles) / sizeof(needles[0]); i++) {
		for (tries = 0; tries < 50; tries++) {
			r = kt_dmesg_has(needles[i]);
			if (r)
				break;
			usleep(100000);
		}
		KT_CHECK(r == 1, "kernel log lacks '%s' (%d)", needles[i], r);
	}
	return 0;
}

static int delete_module(const char *name)
{
	return syscall(SYS_delete_module, name, O_NONBLOCK) ? -errno : 0;
}

static int load_module(const char *params)
{
	int fd = open(KT_MODULE_PATH, O_RDONLY | O_CLOEXEC), ret;

	if (fd < 0)
		return -errno;
	ret = syscall(SYS_finit_module, fd, params, 0) ? -errno : 0;
	close(fd);
	return ret;
}

static int rmmod_busy(int fd, const uint8_t *id)
{
	char val[32];
	int r;

	r = delete_module("ortho");
	KT_CHECK(r == -EAGAIN || r == -EBUSY,
		 "rmmod with an open file: %s, want busy", kt_strerr(r));
	KT_OK(kt_status(fd, id, NULL));
	KT_OK(kt_fdinfo(getpid(), fd, "ortho-shards", val, sizeof(val)));
	/* With a revocation pending as well. */
	KT_OK(kt_revoke(fd, id, 0, NULL));
	r = delete_module("ortho");
	KT_CHECK(r == -EAGAIN || r == -EBUSY,
		 "rmmod with a pending revocation: %s", kt_strerr(r));
	return 0;
}

int kt_case_rmmod(void)
{
	uint8_t id[ORTHO_IOC_ID_SIZE], key[ORTHO_IOC_KEY_SIZE];
	struct ortho_ioc_revoke r;
	struct stat st;
	char val[32];
	int fd = kt_open();

	KT_CHECK(fd >= 0, "open: %s", kt_strerr(fd));
	KT_OK(set_grace(30000));
	KT_OK(kt_add_for_uid(fd, id, key, "rmmod", 0));
	KT_OK(kt_get(fd, id, NULL));
	if (rmmod_busy(fd, id))
		return -1;
	/* Closing the file leaves the revocation to settle as "closed". */
	close(fd);
	KT_OK(delete_module("ortho"));
	KT_CHECK(stat(ORTHO_IOC_DEVICE, &st) && errno == ENOENT,
		 "%s still there after unloading", ORTHO_IOC_DEVICE);
	KT_CHECK(stat("/sys/module/ortho", &st) && errno == ENOENT,
		 "/sys/module/ortho still there");
	/* Loaded without parameters, the grace period is the 2 s default. */
	KT_OK(load_module(""));
	KT_OK(kt_read_file(KT_GRACE_PARAM, val, sizeof(val)));
	KT_CHECK(atoi(val) == 2000, "default grace_ms reads '%s'", val);
	KT_OK(set_grace(KT_GRACE_MS));
	fd = kt_open();
	KT_CHECK(fd >= 0, "open after reload: %s", kt_strerr(fd));
	/* A fresh module knows no key. */
	KT_RET(kt_status(fd, id, NULL), -ENOKEY);
	KT_OK(kt_add(fd, id, key, "rmmod-again", NULL, 0, NULL, 0));
	KT_OK(kt_revoke(fd, id, ORTHO_IOC_REVOKE_WAIT, &r));
	KT_CHECK(r.grace_ms == KT_GRACE_MS, "grace %u after reload", r.grace_ms);
	close(fd);
	return 0;
}
