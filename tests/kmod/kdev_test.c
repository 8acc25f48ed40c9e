// SPDX-License-Identifier: MIT
/*
 * kdev_test: the library's /dev/ortho client (lib/kdev.c) and orthod's
 * (daemon/orthod-kmod.c) against the real module, inside qemu. Run by
 * tests/kmod/init.sh like kmod_test:
 *
 *   kdev_test --list          "root <case>" per line
 *   kdev_test CASE            "PASS: CASE" or "FAIL: CASE: why"
 *
 * orthod's calls put keys in and revoke them; children with dropped
 * privileges fetch, report and acknowledge through the library's calls.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kt.h"
#include "kdev.h"
#include "log.h"
#include "orthod-kmod.h"
#include "secmem.h"

#define KD_CASE_TIMEOUT_S 120
#define KD_WAIT_MS 60000

static const char *kd_case_name;

/* The library logs through its context; here there is none to hold it. */
void olog(const struct ortho_ctx *ctx, int prio, const char *fmt, ...)
{
	char msg[300];
	va_list ap;

	if (prio > ORTHO_LOG_WARNING)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	kt_printf("# olog(%d): %s", prio, msg);
}

static int kd_admin(struct orthod_kmod *km)
{
	KT_OK(orthod_kmod_open(km, NULL));
	KT_CHECK(orthod_kmod_active(km), "not active after open");
	return 0;
}

static int kd_open(struct kdev **kd)
{
	KT_OK(kdev_open(NULL, NULL, kd));
	return 0;
}

/* An admin's probe without CAP_SYS_ADMIN. */
static int unpriv_open(void *arg)
{
	struct orthod_kmod km;
	struct kdev *kd;

	KT_RET(orthod_kmod_open(&km, NULL), -EPERM);
	KT_CHECK(!orthod_kmod_active(&km), "active after a failed open");
	/* The library's side needs no privilege. */
	KT_OK(kdev_open(NULL, NULL, &kd));
	kdev_close(kd);
	return 0;
}

static int case_open(void)
{
	const struct kt_ids u1000 = { 1000, 1000, 0, { 0 } };
	struct orthod_kmod km;
	struct kt_child c;
	struct kdev *kd;
	int fd;

	KT_CHECK(kdev_present(NULL), "kdev_present() says no");
	KT_CHECK(!kdev_present("/nonexistent/ortho"), "a missing path is present");
	KT_RET(kdev_open(NULL, "/nonexistent/ortho", &kd), -ENOENT);
	KT_CHECK(!kd, "handle left behind");
	KT_RET(kdev_open(NULL, "/dev/null", &kd), -ENOTTY);
	KT_RET(orthod_kmod_open(&km, "/dev/null"), -ENOTTY);
	KT_RET(orthod_kmod_open(&km, "/nonexistent/ortho"), -ENOENT);
	if (kd_open(&kd) || kd_admin(&km))
		return -1;
	fd = kdev_fd(kd);
	KT_CHECK(fd >= 0 && kt_poll_revents(fd, 0) == 0, "fd %d has events", fd);
	KT_OK(kt_spawn(&c, &u1000, unpriv_open, NULL));
	KT_CHECK(kt_reap(&c, KD_WAIT_MS) == 0, "unprivileged open");
	KT_CHECK(orthod_kmod_grace_ms() == KT_GRACE_MS, "grace %d",
		 orthod_kmod_grace_ms());
	kdev_close(kd);
	orthod_kmod_close(&km);
	KT_CHECK(!orthod_kmod_active(&km), "active after close");
	return 0;
}

struct fetch_probe {
	const uint8_t *id;
	const uint8_t *key;
	const char *label;
	int want;
};

static int fetch(void *arg)
{
	const struct fetch_probe *p = arg;
	char label[KDEV_LABEL_MAX];
	struct kdev_shard_status st;
	uint64_t gen = ~0ull;
	struct kdev *kd;
	uint8_t *key;

	if (kd_open(&kd))
		return -1;
	key = secmem_alloc(KDEV_KEY_SIZE);
	KT_CHECK(key, "secmem_alloc");
	KT_RET(kdev_get_key(kd, p->id, key, label, &gen), p->want);
	if (!p->want) {
		KT_CHECK(!memcmp(key, p->key, KDEV_KEY_SIZE), "wrong key bytes");
		KT_CHECK(!strcmp(label, p->label), "label '%s'", label);
		KT_CHECK(gen != ~0ull, "no generation");
		KT_OK(kdev_status(kd, p->id, &st));
		KT_CHECK(st.state == KDEV_KEY_LIVE && st.holders == 1,
			 "state %u holders %u", st.state, st.holders);
		KT_OK(kdev_ack(kd, p->id));
		KT_RET(kdev_ack(kd, p->id), -ENOENT);
	}
	secmem_free(key, KDEV_KEY_SIZE);
	kdev_close(kd);
	return 0;
}

static int fetch_as(const struct kt_ids *ids, const uint8_t *id,
		    const uint8_t *key, const char *label, int want)
{
	struct fetch_probe p = { id, key, label, want };
	struct kt_child c;

	KT_OK(kt_spawn(&c, ids, fetch, &p));
	KT_CHECK(kt_reap(&c, KD_WAIT_MS) == 0,
		 "uid %u gid %u: kdev_get_key should give %s", ids->uid,
		 ids->gid, kt_strerr(want));
	return 0;
}

static int policy_lists(void)
{
	struct orthod_kmod_policy p = { 0 };
	uint32_t i;

	for (i = 0; i < ORTHOD_KMOD_POLICY_MAX; i++)
		KT_OK(orthod_kmod_policy_add(&p, 1, 0, 100 + i));
	KT_OK(orthod_kmod_policy_add(&p, 1, 0, 100));
	KT_RET(orthod_kmod_policy_add(&p, 1, 0, 999), -E2BIG);
	KT_OK(orthod_kmod_policy_add(&p, 0, 1, 5));
	KT_OK(orthod_kmod_policy_add(&p, 0, 1, 5));
	KT_CHECK(p.n_uids == ORTHOD_KMOD_POLICY_MAX && p.n_deny_gids == 1 &&
		 !p.n_gids && !p.n_deny_uids, "lists %u %u %u %u", p.n_uids,
		 p.n_gids, p.n_deny_uids, p.n_deny_gids);
	return 0;
}

static int case_fetch_policy(void)
{
	const struct kt_ids u1000 = { 1000, 1000, 0, { 0 } };
	const struct kt_ids g2000 = { 1001, 2000, 0, { 0 } };
	const struct kt_ids supp = { 1002, 1002, 1, { 2000 } };
	const struct kt_ids denied = { 1003, 2000, 0, { 0 } };
	const struct kt_ids other = { 1004, 1004, 0, { 0 } };
	uint8_t id[KDEV_ID_SIZE], key[KDEV_KEY_SIZE], unknown[KDEV_ID_SIZE];
	uint8_t scratch[KDEV_KEY_SIZE];
	struct orthod_kmod_policy p = { 0 };
	struct orthod_kmod km;
	int existed = -1;

	if (policy_lists() || kd_admin(&km))
		return -1;
	kt_new_shard(id, key);
	KT_OK(orthod_kmod_policy_add(&p, 1, 0, 1000));
	KT_OK(orthod_kmod_policy_add(&p, 1, 1, 2000));
	KT_OK(orthod_kmod_policy_add(&p, 0, 0, 1003));
	KT_RET(orthod_kmod_add(&km, id, key, "", &p, NULL), -EINVAL);
	KT_OK(orthod_kmod_add(&km, id, key, "fetch-policy", &p, &existed));
	KT_CHECK(existed == 0, "existed %d for a new key", existed);
	kt_new_shard(unknown, scratch);
	if (fetch_as(&u1000, id, key, "fetch-policy", 0) ||
	    fetch_as(&g2000, id, key, "fetch-policy", 0) ||
	    fetch_as(&supp, id, key, "fetch-policy", 0) ||
	    fetch_as(&denied, id, key, "fetch-policy", -EACCES) ||
	    fetch_as(&other, id, key, "fetch-policy", -EACCES) ||
	    fetch_as(&u1000, unknown, key, "fetch-policy", -ENOKEY))
		return -1;
	/* orthod restarted: the kernel has it, the policy is replaced. */
	memset(&p, 0, sizeof(p));
	KT_OK(orthod_kmod_policy_add(&p, 1, 0, 1004));
	KT_OK(orthod_kmod_add(&km, id, key, "fetch-policy", &p, &existed));
	KT_CHECK(existed == 1, "existed %d for a known key", existed);
	if (fetch_as(&other, id, key, "fetch-policy", 0) ||
	    fetch_as(&u1000, id, key, "fetch-policy", -EACCES))
		return -1;
	/* A grant changed: only the policy moves. */
	KT_OK(orthod_kmod_policy_add(&p, 1, 0, 1000));
	KT_OK(orthod_kmod_set_policy(&km, id, &p));
	if (fetch_as(&u1000, id, key, "fetch-policy", 0))
		return -1;
	KT_RET(orthod_kmod_set_policy(&km, unknown, &p), -ENOKEY);
	KT_OK(orthod_kmod_revoke(&km, id, 0, NULL));
	KT_RET(orthod_kmod_add(&km, id, key, "fetch-policy", &p, &existed),
	       -EKEYREVOKED);
	if (fetch_as(&u1000, id, key, "fetch-policy", -EKEYREVOKED))
		return -1;
	orthod_kmod_close(&km);
	return 0;
}

struct holder_arg {
	const uint8_t *id;
	uint64_t resident;
	int ack;		/* 0: never acknowledges */
};

/* The library's loop: POLLPRI, the pending ids, wipe, acknowledge. */
static int holder(void *arg)
{
	const struct holder_arg *a = arg;
	uint8_t ids[4][KDEV_ID_SIZE];
	uint32_t total = 0;
	struct kdev *kd;
	uint8_t *key;
	int n;

	if (kd_open(&kd))
		return -1;
	key = secmem_alloc(KDEV_KEY_SIZE);
	KT_CHECK(key, "secmem_alloc");
	KT_OK(kdev_get_key(kd, a->id, key, NULL, NULL));
	KT_OK(kdev_resident(kd, a->id, a->resident));
	KT_RET(kdev_pending(kd, ids, 4, &total), 0);
	KT_CHECK(total == 0, "%u pending before any revocation", total);
	KT_RET(kdev_wait_revoke(kd, -1, 0), 0);
	KT_OK(kt_child_ready());
	KT_RET(kdev_wait_revoke(kd, -1, KD_WAIT_MS), 1);
	if (!a->ack)
		for (;;)
			pause();
	n = kdev_pending(kd, ids, 4, &total);
	KT_CHECK(n == 1 && total == 1, "pending %d of %u", n, total);
	KT_CHECK(!memcmp(ids[0], a->id, KDEV_ID_SIZE), "another id pending");
	/* Past the revocation a holder may only say "nothing left". */
	secmem_wipe(key, KDEV_KEY_SIZE);
	KT_OK(kdev_resident(kd, a->id, 0));
	KT_OK(kdev_ack(kd, a->id));
	KT_RET(kdev_resident(kd, a->id, 1), -EKEYREVOKED);
	KT_RET(kdev_pending(kd, NULL, 0, &total), 0);
	KT_CHECK(total == 0, "%u pending after the ack", total);
	KT_RET(kdev_wait_revoke(kd, -1, 0), 0);
	KT_RET(kdev_get_key(kd, a->id, key, NULL, NULL), -EKEYREVOKED);
	secmem_free(key, KDEV_KEY_SIZE);
	KT_OK(kt_child_ready());
	KT_OK(kt_child_wait_go());
	kdev_close(kd);
	return 0;
}

static int spawn_holders(struct kt_child *c, struct holder_arg *a, int n)
{
	struct kt_ids ids;
	int i;

	for (i = 0; i < n; i++) {
		ids = (struct kt_ids){ 1000 + i, 2000, 0, { 0 } };
		KT_OK(kt_spawn(&c[i], &ids, holder, &a[i]));
	}
	for (i = 0; i < n; i++)
		KT_CHECK(!kt_wait_ready(&c[i], KD_WAIT_MS), "holder %d not ready",
			 i);
	return 0;
}

static int add_group_shard(struct orthod_kmod *km, uint8_t *id,
			   const char *label)
{
	struct orthod_kmod_policy p = { 0 };
	uint8_t key[KDEV_KEY_SIZE];

	kt_new_shard(id, key);
	KT_OK(orthod_kmod_policy_add(&p, 1, 1, 2000));
	KT_OK(orthod_kmod_add(&km[0], id, key, label, &p, NULL));
	explicit_bzero(key, sizeof(key));
	return 0;
}

static int wake_fd(void)
{
	struct kdev *kd;
	int p[2];

	if (kd_open(&kd))
		return -1;
	KT_CHECK(!pipe(p), "pipe");
	KT_RET(kdev_wait_revoke(kd, p[0], 20), 0);
	KT_CHECK(write(p[1], "x", 1) == 1, "write");
	KT_RET(kdev_wait_revoke(kd, p[0], KD_WAIT_MS), -ECANCELED);
	close(p[0]);
	close(p[1]);
	kdev_close(kd);
	return 0;
}

static int case_revoke_poll(void)
{
	struct holder_arg a[3];
	struct orthod_kmod_holder *h;
	struct orthod_kmod_shard s;
	struct orthod_kmod km;
	uint8_t id[KDEV_ID_SIZE];
	struct kt_child c[3];
	size_t nh;
	int i, r;

	if (wake_fd() || kd_admin(&km) || add_group_shard(&km, id, "revoke-poll"))
		return -1;
	for (i = 0; i < 3; i++)
		a[i] = (struct holder_arg){ id, 4096u << i, 1 };
	KT_OK(kt_write_file(KT_GRACE_PARAM, "30000"));
	if (spawn_holders(c, a, 3))
		return -1;
	KT_OK(orthod_kmod_holders(&km, id, &h, &nh));
	KT_CHECK(nh == 3, "%zu holders, want 3", nh);
	for (i = 0; i < 3; i++)
		KT_CHECK(!strcmp(h[i].state, "held") && h[i].pid > 0 &&
			 h[i].resident == 4096u << (h[i].uid - 1000),
			 "holder pid %d uid %u %s resident %llu", (int)h[i].pid,
			 (unsigned int)h[i].uid, h[i].state,
			 (unsigned long long)h[i].resident);
	free(h);
	KT_RET(orthod_kmod_revoke_done(&km, id, NULL), -EINVAL);
	KT_OK(orthod_kmod_revoke(&km, id, 0, &s));
	KT_CHECK(s.revoked && s.holders == 3 && s.grace_ms == 30000 &&
		 s.generation, "revoked %d holders %u grace %u generation %llu",
		 s.revoked, s.holders, s.grace_ms,
		 (unsigned long long)s.generation);
	for (i = 0; i < 3; i++)
		KT_CHECK(!kt_wait_ready(&c[i], KD_WAIT_MS),
			 "holder %d did not acknowledge", i);
	r = orthod_kmod_revoke_done(&km, id, &s);
	KT_CHECK(r == 1, "revoke_done %d (%s)", r, kt_strerr(r < 0 ? r : 0));
	KT_CHECK(s.acked == 3 && !s.killed && !s.closed && s.done_ns >= s.revoked_ns,
		 "acked %u killed %u closed %u", s.acked, s.killed, s.closed);
	KT_OK(orthod_kmod_holders(&km, id, &h, &nh));
	KT_CHECK(nh == 3, "%zu holders after the acks", nh);
	for (i = 0; i < 3; i++)
		KT_CHECK(!strcmp(h[i].state, "acked") && !h[i].resident,
			 "holder %d %s resident %llu", i, h[i].state,
			 (unsigned long long)h[i].resident);
	free(h);
	for (i = 0; i < 3; i++) {
		KT_OK(kt_send_go(&c[i]));
		KT_CHECK(kt_reap(&c[i], KD_WAIT_MS) == 0, "holder %d failed", i);
	}
	KT_RET(orthod_kmod_revoke(&km, id, 0, &s), -EKEYREVOKED);
	KT_CHECK(s.revoked && s.acked == 3, "second revoke: record not filled");
	orthod_kmod_close(&km);
	return 0;
}

static int case_grace_kill(void)
{
	struct holder_arg a[2];
	struct orthod_kmod_shard s;
	struct orthod_kmod km;
	uint8_t id[KDEV_ID_SIZE];
	struct kt_child c[2];
	uint64_t t0;
	int rc;

	if (kd_admin(&km) || add_group_shard(&km, id, "grace-kill"))
		return -1;
	a[0] = (struct holder_arg){ id, 1 << 20, 1 };
	a[1] = (struct holder_arg){ id, 1 << 20, 0 };
	if (spawn_holders(c, a, 2))
		return -1;
	t0 = kt_now_ns();
	KT_OK(orthod_kmod_revoke(&km, id, 1, &s));
	KT_CHECK(kt_now_ns() - t0 >= (uint64_t)KT_GRACE_MS * 900000u,
		 "the waiting revoke returned before the grace period");
	KT_CHECK(s.done_ns && s.holders == 2 && s.acked == 1 && s.killed == 1 &&
		 s.grace_ms == KT_GRACE_MS,
		 "done %llu holders %u acked %u killed %u grace %u",
		 (unsigned long long)s.done_ns, s.holders, s.acked, s.killed,
		 s.grace_ms);
	KT_CHECK(!kt_wait_ready(&c[0], KD_WAIT_MS), "the acking holder failed");
	KT_OK(kt_send_go(&c[0]));
	KT_CHECK(kt_reap(&c[0], KD_WAIT_MS) == 0, "the acking holder failed");
	rc = kt_reap(&c[1], KD_WAIT_MS);
	KT_CHECK(rc == 128 + SIGKILL, "the silent holder ended with %d", rc);
	KT_CHECK(orthod_kmod_revoke_done(&km, id, &s) == 1 && s.killed == 1,
		 "revoke_done after the kill");
	orthod_kmod_close(&km);
	return 0;
}

/* A policy-admitted holder's own view of the shard. */
static int status_holder(void *arg)
{
	struct kdev_shard_status st;
	const uint8_t *id = arg;
	uint8_t *key = secmem_alloc(KDEV_KEY_SIZE);
	struct kdev *kd;

	KT_CHECK(key, "secmem_alloc");
	if (kd_open(&kd))
		return -1;
	KT_OK(kdev_get_key(kd, id, key, NULL, NULL));
	KT_OK(kdev_resident(kd, id, 12345));
	KT_OK(kdev_status(kd, id, &st));
	KT_CHECK(st.state == KDEV_KEY_LIVE && st.holders == 1 &&
		 !strcmp(st.label, "status-view") && st.grace_ms == KT_GRACE_MS,
		 "state %u holders %u label '%s'", st.state, st.holders, st.label);
	KT_OK(kt_child_ready());
	KT_RET(kdev_wait_revoke(kd, -1, KD_WAIT_MS), 1);
	KT_OK(kdev_ack(kd, id));
	KT_OK(kdev_status(kd, id, &st));
	KT_CHECK(st.state == KDEV_KEY_REVOKED && st.acked == 1 && st.done_ns &&
		 st.generation && st.generation <= st.current_generation,
		 "after the ack: state %u acked %u done %llu", st.state,
		 st.acked, (unsigned long long)st.done_ns);
	secmem_free(key, KDEV_KEY_SIZE);
	kdev_close(kd);
	return 0;
}

static int view_has(struct orthod_kmod *km, int json, const char *needle)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&buf, &len);

	KT_CHECK(m, "open_memstream");
	KT_OK(orthod_kmod_view_print(m, km, json));
	fclose(m);
	if (!strstr(buf, needle)) {
		kt_printf("# view:\n%s", buf);
		free(buf);
		KT_CHECK(0, "the %s view lacks '%s'", json ? "JSON" : "text",
			 needle);
	}
	free(buf);
	return 0;
}

static int case_status_view(void)
{
	const struct kt_ids u1000 = { 1000, 2000, 0, { 0 } };
	uint8_t id[KDEV_ID_SIZE], (*ids)[KDEV_ID_SIZE];
	char hex[33], line[160];
	struct orthod_kmod km = { .fd = -1 };
	struct kt_child c;
	size_t n, live, i;

	KT_OK(view_has(&km, 0, "module: not loaded"));
	KT_OK(view_has(&km, 1, "{\"loaded\":false}"));
	if (kd_admin(&km) || add_group_shard(&km, id, "status-view"))
		return -1;
	KT_OK(orthod_kmod_list(&km, &ids, &n, &live));
	for (i = 0; i < n && memcmp(ids[i], id, KDEV_ID_SIZE); i++)
		;
	KT_CHECK(i < n && live >= 1 && live <= n, "list: %zu ids, %zu live",
		 n, live);
	free(ids);
	KT_OK(kt_spawn(&c, &u1000, status_holder, id));
	KT_CHECK(!kt_wait_ready(&c, KD_WAIT_MS), "holder not ready");
	kt_hex(id, hex);
	snprintf(line, sizeof(line), "  shard %s status-view: live, 1 holders\n"
		 "    pid %d uid 1000 held resident 12345 client ", hex, c.pid);
	KT_OK(view_has(&km, 0, "module: /dev/ortho, grace 300 ms, "));
	KT_OK(view_has(&km, 0, line));
	snprintf(line, sizeof(line), "{\"id\":\"%s\",\"label\":\"status-view\","
		 "\"state\":\"live\"", hex);
	KT_OK(view_has(&km, 1, line));
	snprintf(line, sizeof(line), "\"holder\":[{\"pid\":%d,\"uid\":1000,"
		 "\"state\":\"held\",\"resident\":12345", c.pid);
	KT_OK(view_has(&km, 1, line));
	KT_OK(orthod_kmod_revoke(&km, id, 1, NULL));
	KT_CHECK(kt_reap(&c, KD_WAIT_MS) == 0, "holder failed");
	snprintf(line, sizeof(line), "  shard %s status-view: revoked (generation ",
		 hex);
	KT_OK(view_has(&km, 0, line));
	KT_OK(view_has(&km, 0, " ms: 1 holders, 1 acked, 0 killed, 0 closed\n"));
	KT_OK(view_has(&km, 1, "\"state\":\"revoked\""));
	orthod_kmod_close(&km);
	return 0;
}

struct kd_case {
	const char *name;
	int (*run)(void);
};

static const struct kd_case kd_cases[] = {
	{ "kdev-open", case_open },
	{ "kdev-fetch-policy", case_fetch_policy },
	{ "kdev-revoke-poll", case_revoke_poll },
	{ "kdev-grace-kill", case_grace_kill },
	{ "kdev-status-view", case_status_view },
};

static void kd_timeout(int sig)
{
	char msg[160];
	int n;

	n = snprintf(msg, sizeof(msg), "FAIL: %s: timed out after %d s\n",
		     kd_case_name, KD_CASE_TIMEOUT_S);
	if (write(STDOUT_FILENO, msg, n) < 0)
		_exit(2);
	kt_reap_all();
	_exit(1);
}

int main(int argc, char **argv)
{
	const size_t n = sizeof(kd_cases) / sizeof(kd_cases[0]);
	size_t i;
	int ret;

	setvbuf(stdout, NULL, _IONBF, 0);
	if (argc == 2 && !strcmp(argv[1], "--list")) {
		for (i = 0; i < n; i++)
			printf("root %s\n", kd_cases[i].name);
		return 0;
	}
	for (i = 0; argc == 2 && i < n; i++)
		if (!strcmp(kd_cases[i].name, argv[1]))
			break;
	if (argc != 2 || i == n) {
		fprintf(stderr, "usage: kdev_test --list | CASE\n");
		return 2;
	}
	kd_case_name = kd_cases[i].name;
	signal(SIGALRM, kd_timeout);
	alarm(KD_CASE_TIMEOUT_S);
	ret = kd_cases[i].run();
	kt_reap_all();
	alarm(0);
	kt_write_file(KT_GRACE_PARAM, "300");
	if (ret)
		kt_printf("FAIL: %s: %s", kd_case_name,
			  kt_reason()[0] ? kt_reason() : "failed");
	else
		kt_printf("PASS: %s", kd_case_name);
	return ret ? 1 : 0;
}
