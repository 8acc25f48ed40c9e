// SPDX-License-Identifier: MIT
/*
 * kmod_test: the cases about what orthod needs besides add and revoke:
 * replacing a key's policy (deny entries win), listing the key table and
 * the holders of a shard, and that only an administrator may do so.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kt.h"

#define KT_ADMIN_WAIT_MS 60000

static void kt_policy_arg(struct ortho_ioc_policy *p, const uint8_t *id)
{
	memset(p, 0, sizeof(*p));
	p->size = sizeof(*p);
	memcpy(p->id, id, ORTHO_IOC_ID_SIZE);
}

static int kt_list(int fd, uint8_t *ids, uint32_t *count, uint32_t *total,
		   uint32_t *live)
{
	struct ortho_ioc_list l = { .size = sizeof(l) };
	int ret;

	l.ids = (uintptr_t)ids;
	l.count = *count;
	ret = kt_ioctl(fd, ORTHO_IOC_LIST, &l);
	*count = l.count;
	*total = l.total;
	*live = l.live;
	return ret;
}

static int kt_holders(int fd, const uint8_t *id, void *v, uint32_t size,
		      uint32_t *count, uint32_t *total)
{
	struct ortho_ioc_holders h = { .size = sizeof(h) };
	int ret;

	memcpy(h.id, id, ORTHO_IOC_ID_SIZE);
	h.holders = (uintptr_t)v;
	h.holder_size = size;
	h.count = *count;
	ret = kt_ioctl(fd, ORTHO_IOC_HOLDERS, &h);
	*count = h.count;
	*total = h.total;
	return ret;
}

struct get_probe {
	const uint8_t *id;
	int want;
};

static int get_probe(void *arg)
{
	const struct get_probe *p = arg;
	int fd = kt_open();

	KT_CHECK(fd >= 0, "open: %s", kt_strerr(fd));
	KT_RET(kt_get(fd, p->id, NULL), p->want);
	KT_RET(kt_status(fd, p->id, NULL), p->want);
	close(fd);
	return 0;
}

static int probe_as(const struct kt_ids *ids, const uint8_t *id, int want)
{
	struct get_probe p = { id, want };
	struct kt_child c;
	int rc;

	KT_OK(kt_spawn(&c, ids, get_probe, &p));
	rc = kt_reap(&c, KT_ADMIN_WAIT_MS);
	KT_CHECK(rc == 0, "uid %u gid %u (+%d groups): get should give %s",
		 ids->uid, ids->gid, ids->ngroups, kt_strerr(want));
	return 0;
}

/* What a process without CAP_SYS_ADMIN gets from the admin commands. */
static int unpriv_admin(void *arg)
{
	const uint8_t *id = arg;
	struct ortho_ioc_policy p;
	uint32_t n = 0, total, live;
	int fd = kt_open();

	KT_CHECK(fd >= 0, "open: %s", kt_strerr(fd));
	kt_policy_arg(&p, id);
	KT_RET(kt_ioctl(fd, ORTHO_IOC_SET_POLICY, &p), -EPERM);
	KT_RET(kt_list(fd, NULL, &n, &total, &live), -EPERM);
	KT_RET(kt_holders(fd, id, NULL, 0, &n, &total), -EPERM);
	close(fd);
	return 0;
}

static int policy_invalid(int fd, const uint8_t *id)
{
	struct ortho_ioc_policy p;

#define BAD(mutate)							\
	do {								\
		kt_policy_arg(&p, id);					\
		mutate;							\
		KT_RET(kt_ioctl(fd, ORTHO_IOC_SET_POLICY, &p), -EINVAL); \
	} while (0)
	BAD(p.flags = 1);
	BAD(p.reserved[1] = 1);
	BAD(p.n_deny_uids = ORTHO_IOC_POLICY_MAX + 1);
	BAD(p.n_deny_gids = 99);
	BAD(p.deny_uids[3] = 5);
	BAD(p.deny_gids[15] = 5);
	BAD((p.n_deny_uids = 1, p.deny_uids[0] = (uint32_t)-1));
	BAD((p.n_uids = 1, p.uids[0] = (uint32_t)-1));
#undef BAD
	return 0;
}

int kt_case_set_policy(void)
{
	const struct kt_ids u1000 = { 1000, 1000, 0, { 0 } };
	const struct kt_ids u1000g = { 1000, 2000, 0, { 0 } };
	const struct kt_ids u1001g = { 1001, 2000, 0, { 0 } };
	const struct kt_ids u1001s = { 1001, 1001, 1, { 2000 } };
	const struct kt_ids u1001d = { 1001, 2000, 1, { 3000 } };
	const struct kt_ids u1002 = { 1002, 1002, 0, { 0 } };
	uint8_t id[ORTHO_IOC_ID_SIZE], key[ORTHO_IOC_KEY_SIZE];
	uint8_t other[ORTHO_IOC_ID_SIZE];
	struct ortho_ioc_policy p;
	struct kt_child c;
	int fd = kt_open();

	KT_CHECK(fd >= 0, "open: %s", kt_strerr(fd));
	KT_OK(kt_add_for_uid(fd, id, key, "set-policy", 1000));
	if (probe_as(&u1000, id, 0) || probe_as(&u1001g, id, -EACCES))
		return -1;
	/* Group 2000 in, uid 1000 out even through that group. */
	kt_policy_arg(&p, id);
	p.n_gids = 1;
	p.gids[0] = 2000;
	p.n_deny_uids = 1;
	p.deny_uids[0] = 1000;
	p.n_deny_gids = 1;
	p.deny_gids[0] = 3000;
	KT_OK(kt_ioctl(fd, ORTHO_IOC_SET_POLICY, &p));
	if (probe_as(&u1000, id, -EACCES) || probe_as(&u1000g, id, -EACCES) ||
	    probe_as(&u1001g, id, 0) || probe_as(&u1001s, id, 0) ||
	    probe_as(&u1001d, id, -EACCES) || probe_as(&u1002, id, -EACCES))
		return -1;
	if (policy_invalid(fd, id))
		return -1;
	/* The rejected calls left the policy as it was. */
	if (probe_as(&u1001g, id, 0))
		return -1;
	KT_OK(kt_spawn(&c, &u1000, unpriv_admin, id));
	KT_CHECK(kt_reap(&c, KT_ADMIN_WAIT_MS) == 0, "unprivileged admin calls");
	/* An empty policy shuts everyone out. */
	kt_policy_arg(&p, id);
	KT_OK(kt_ioctl(fd, ORTHO_IOC_SET_POLICY, &p));
	if (probe_as(&u1001g, id, -EACCES))
		return -1;
	kt_random(other, sizeof(other));
	kt_policy_arg(&p, other);
	KT_RET(kt_ioctl(fd, ORTHO_IOC_SET_POLICY, &p), -ENOKEY);
	KT_OK(kt_revoke(fd, id, 0, NULL));
	kt_policy_arg(&p, id);
	KT_RET(kt_ioctl(fd, ORTHO_IOC_SET_POLICY, &p), -EKEYREVOKED);
	KT_CHECK(kt_dmesg_has("op=ortho-policy") == 1,
		 "no op=ortho-policy audit record");
	close(fd);
	return 0;
}

static int all_zero(const uint8_t *p, size_t len)
{
	while (len--)
		if (*p++)
			return 0;
	return 1;
}

static int list_has(const uint8_t *ids, uint32_t n, const uint8_t *id)
{
	uint32_t i;

	for (i = 0; i < n; i++)
		if (!memcmp(ids + (size_t)i * ORTHO_IOC_ID_SIZE, id,
			    ORTHO_IOC_ID_SIZE))
			return 1;
	return 0;
}

int kt_case_list(void)
{
	uint8_t a[ORTHO_IOC_ID_SIZE], b[ORTHO_IOC_ID_SIZE];
	uint8_t key[ORTHO_IOC_KEY_SIZE], *ids;
	uint32_t n = 0, t0, l0, total, live;
	struct ortho_ioc_list l;
	int fd = kt_open();

	KT_CHECK(fd >= 0, "open: %s", kt_strerr(fd));
	KT_OK(kt_list(fd, NULL, &n, &t0, &l0));
	KT_CHECK(n == 0 && l0 <= t0, "empty list: count %u live %u total %u",
		 n, l0, t0);
	KT_OK(kt_add_for_uid(fd, a, key, "list-a", 0));
	KT_OK(kt_add_for_uid(fd, b, key, "list-b", 0));
	KT_OK(kt_revoke(fd, b, 0, NULL));
	n = 0;
	KT_OK(kt_list(fd, NULL, &n, &total, &live));
	KT_CHECK(total == t0 + 2 && live == l0 + 1,
		 "total %u live %u, want %u and %u", total, live, t0 + 2,
		 l0 + 1);
	ids = calloc(total + 1, ORTHO_IOC_ID_SIZE);
	KT_CHECK(ids, "calloc");
	n = total + 1;
	KT_OK(kt_list(fd, ids, &n, &total, &live));
	KT_CHECK(n == total, "wrote %u of %u", n, total);
	KT_CHECK(list_has(ids, n, a) && list_has(ids, n, b),
		 "the list lacks a new key");
	/* Less room than keys: a prefix, and the true total. */
	n = 1;
	memset(ids, 0, ORTHO_IOC_ID_SIZE * 2);
	KT_OK(kt_list(fd, ids, &n, &total, &live));
	KT_CHECK(n == 1 && total == t0 + 2, "room 1: count %u total %u", n,
		 total);
	KT_CHECK(all_zero(ids + ORTHO_IOC_ID_SIZE, ORTHO_IOC_ID_SIZE),
		 "wrote past the room it was given");
	free(ids);
	memset(&l, 0, sizeof(l));
	l.size = sizeof(l);
	l.pad = 1;
	KT_RET(kt_ioctl(fd, ORTHO_IOC_LIST, &l), -EINVAL);
	l.pad = 0;
	l.reserved[3] = 1;
	KT_RET(kt_ioctl(fd, ORTHO_IOC_LIST, &l), -EINVAL);
	l.reserved[3] = 0;
	l.count = 4;
	l.ids = 8;
	KT_RET(kt_ioctl(fd, ORTHO_IOC_LIST, &l), -EFAULT);
	close(fd);
	return 0;
}

struct hold_arg {
	const uint8_t *id;
	uint64_t resident;
};

/* Fetch, report, then acknowledge the revocation when it comes. */
static int holder(void *arg)
{
	const struct hold_arg *a = arg;
	int fd = kt_open();

	KT_CHECK(fd >= 0, "open: %s", kt_strerr(fd));
	KT_OK(kt_get(fd, a->id, NULL));
	KT_OK(kt_resident(fd, a->id, a->resident));
	KT_OK(kt_child_ready());
	KT_CHECK(!kt_wait_pri(fd, KT_ADMIN_WAIT_MS), "no POLLPRI");
	KT_OK(kt_ack(fd, a->id));
	KT_OK(kt_child_ready());
	return kt_child_wait_go();
}

/* Each child appears once, with its pid, uid, resident bytes and @state. */
static int holders_expect(int fd, const uint8_t *id, const struct kt_child *c,
			  const struct hold_arg *a, uint32_t state)
{
	struct ortho_ioc_holder v[4];
	uint32_t n = 4, total, i, j, seen = 0;

	KT_OK(kt_holders(fd, id, v, sizeof(v[0]), &n, &total));
	KT_CHECK(n == 2 && total == 2, "count %u total %u, want 2", n, total);
	for (i = 0; i < n; i++) {
		for (j = 0; j < 2 && v[i].pid != c[j].pid; j++)
			;
		KT_CHECK(j < 2, "holder pid %d is no child", v[i].pid);
		seen |= 1u << j;
		KT_CHECK(v[i].uid == 1000 + j, "pid %d uid %u", v[i].pid,
			 v[i].uid);
		KT_CHECK(v[i].state == state, "pid %d state %u, want %u",
			 v[i].pid, v[i].state, state);
		KT_CHECK(v[i].resident == (state == ORTHO_IOC_HOLD_ACKED ?
					   0 : a[j].resident),
			 "pid %d resident %llu", v[i].pid,
			 (unsigned long long)v[i].resident);
		KT_CHECK(v[i].client_id && !v[i].pad, "client id %llu pad %u",
			 (unsigned long long)v[i].client_id, v[i].pad);
	}
	KT_CHECK(seen == 3, "a child is missing from the holders");
	return 0;
}

static int holders_shapes(int fd, const uint8_t *id)
{
	struct {
		struct ortho_ioc_holder h;
		uint8_t tail[16];
	} big[3];
	struct ortho_ioc_holders hs = { .size = sizeof(hs) };
	uint8_t other[ORTHO_IOC_ID_SIZE];
	uint32_t n = 0, total, i;

	KT_OK(kt_holders(fd, id, NULL, 0, &n, &total));
	KT_CHECK(n == 0 && total == 2, "count 0: count %u total %u", n, total);
	memset(big, 0xff, sizeof(big));
	n = 1;
	KT_OK(kt_holders(fd, id, big, sizeof(big[0]), &n, &total));
	KT_CHECK(n == 1 && total == 2, "room 1: count %u total %u", n, total);
	for (i = 0; i < sizeof(big[0].tail); i++)
		KT_CHECK(!big[0].tail[i], "tail byte %u not cleared", i);
	KT_CHECK(big[1].h.pid == -1, "wrote past the room it was given");
	n = 1;
	KT_RET(kt_holders(fd, id, big, sizeof(big[0].h) - 8, &n, &total),
	       -EINVAL);
	n = 1;
	KT_RET(kt_holders(fd, id, big, 8192, &n, &total), -EINVAL);
	n = 2;
	KT_RET(kt_holders(fd, id, (void *)8, sizeof(big[0].h), &n, &total),
	       -EFAULT);
	kt_random(other, sizeof(other));
	n = 0;
	KT_RET(kt_holders(fd, other, NULL, 0, &n, &total), -ENOKEY);
	memcpy(hs.id, id, ORTHO_IOC_ID_SIZE);
	hs.pad = 1;
	KT_RET(kt_ioctl(fd, ORTHO_IOC_HOLDERS, &hs), -EINVAL);
	hs.pad = 0;
	hs.flags = 2;
	KT_RET(kt_ioctl(fd, ORTHO_IOC_HOLDERS, &hs), -EINVAL);
	return 0;
}

int kt_case_holders(void)
{
	uint8_t id[ORTHO_IOC_ID_SIZE], key[ORTHO_IOC_KEY_SIZE];
	uint32_t uids[] = { 1000, 1001 };
	struct hold_arg a[2] = { { id, 4096 }, { id, 1 << 20 } };
	uint32_t n = 0, total;
	struct kt_child c[2];
	struct kt_ids ids;
	int fd = kt_open(), i;

	KT_CHECK(fd >= 0, "open: %s", kt_strerr(fd));
	kt_new_shard(id, key);
	KT_OK(kt_add(fd, id, key, "holders", uids, 2, NULL, 0));
	for (i = 0; i < 2; i++) {
		ids = (struct kt_ids){ 1000 + i, 1000, 0, { 0 } };
		KT_OK(kt_spawn(&c[i], &ids, holder, &a[i]));
		KT_CHECK(!kt_wait_ready(&c[i], KT_ADMIN_WAIT_MS),
			 "holder %d not ready", i);
	}
	if (holders_expect(fd, id, c, a, ORTHO_IOC_HOLD_HELD) ||
	    holders_shapes(fd, id))
		return -1;
	KT_OK(kt_write_file(KT_GRACE_PARAM, "30000"));
	KT_OK(kt_revoke(fd, id, 0, NULL));
	for (i = 0; i < 2; i++)
		KT_CHECK(!kt_wait_ready(&c[i], KT_ADMIN_WAIT_MS),
			 "holder %d did not acknowledge", i);
	if (holders_expect(fd, id, c, a, ORTHO_IOC_HOLD_ACKED))
		return -1;
	for (i = 0; i < 2; i++) {
		KT_OK(kt_send_go(&c[i]));
		KT_CHECK(kt_reap(&c[i], KT_ADMIN_WAIT_MS) == 0,
			 "holder %d failed", i);
	}
	/* Closed files are no holders any more. */
	KT_OK(kt_holders(fd, id, NULL, 0, &n, &total));
	KT_CHECK(total == 0, "%u holders after every file closed", total);
	close(fd);
	return 0;
}
