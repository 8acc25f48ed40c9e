// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * ortho.ko: the key table, the policy check and the holder bookkeeping.
 *
 * Keys are kept in a small hash table keyed by the shard id (random, so
 * its first bytes hash well). The policy is checked against the caller's
 * credentials at every fetch, not at open: a process that drops its
 * privileges after opening /dev/ortho gets what its new identity may get.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/cred.h>
#include <linux/hashtable.h>
#include <linux/ktime.h>
#include <linux/pid.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/string.h>

#include "ortho_internal.h"

#define ORTHO_HASH_BITS 8

static DEFINE_HASHTABLE(ortho_keys, ORTHO_HASH_BITS);
static unsigned int ortho_nkeys;

static u32 ortho_id_hash(const u8 *id)
{
	return id[0] | id[1] << 8 | id[2] << 16 | (u32)id[3] << 24;
}

bool ortho_reserved_zero(const void *p, size_t len)
{
	return !memchr_inv(p, 0, len);
}

struct ortho_key *ortho_key_find(const u8 *id)
{
	struct ortho_key *k;

	lockdep_assert_held(&ortho_lock);
	hash_for_each_possible(ortho_keys, k, node, ortho_id_hash(id))
		if (!memcmp(k->id, id, ORTHO_IOC_ID_SIZE))
			return k;
	return NULL;
}

int ortho_key_for_each(int (*fn)(struct ortho_key *k, void *arg), void *arg)
{
	struct ortho_key *k;
	int bkt, ret;

	lockdep_assert_held(&ortho_lock);
	hash_for_each(ortho_keys, bkt, k, node) {
		ret = fn(k, arg);
		if (ret)
			return ret;
	}
	return 0;
}

struct ortho_hold *ortho_hold_find(struct ortho_file *of, struct ortho_key *k)
{
	struct ortho_hold *h;

	lockdep_assert_held(&ortho_lock);
	list_for_each_entry(h, &of->holds, f_node)
		if (h->key == k)
			return h;
	return NULL;
}

/* 1-63 printable, non-blank ASCII characters, then NUL padding. */
static bool ortho_label_ok(const char *label)
{
	size_t n = strnlen(label, ORTHO_IOC_LABEL_MAX);
	size_t i;

	if (!n || n == ORTHO_IOC_LABEL_MAX)
		return false;
	for (i = 0; i < n; i++)
		if (label[i] <= ' ' || label[i] > '~')
			return false;
	return ortho_reserved_zero(label + n, ORTHO_IOC_LABEL_MAX - n);
}

static bool ortho_slots_ok(const u32 *src, u32 n)
{
	if (n > ORTHO_IOC_POLICY_MAX)
		return false;
	return ortho_reserved_zero(src + n,
				   (ORTHO_IOC_POLICY_MAX - n) * sizeof(u32));
}

/* Unused slots must be zero, used ones valid ids in the caller's view. */
int ortho_policy_uids(kuid_t *dst, const u32 *src, u32 n)
{
	struct user_namespace *ns = current_user_ns();
	u32 i;

	if (!ortho_slots_ok(src, n))
		return -EINVAL;
	for (i = 0; i < n; i++) {
		dst[i] = make_kuid(ns, src[i]);
		if (!uid_valid(dst[i]))
			return -EINVAL;
	}
	return 0;
}

int ortho_policy_gids(kgid_t *dst, const u32 *src, u32 n)
{
	struct user_namespace *ns = current_user_ns();
	u32 i;

	if (!ortho_slots_ok(src, n))
		return -EINVAL;
	for (i = 0; i < n; i++) {
		dst[i] = make_kgid(ns, src[i]);
		if (!gid_valid(dst[i]))
			return -EINVAL;
	}
	return 0;
}

static int ortho_policy_copy(struct ortho_key *k, const struct ortho_ioc_add *a)
{
	struct ortho_policy *p = &k->policy;
	int ret;

	ret = ortho_policy_uids(p->uids, a->uids, a->n_uids);
	if (!ret)
		ret = ortho_policy_gids(p->gids, a->gids, a->n_gids);
	if (ret)
		return ret;
	p->n_uids = a->n_uids;
	p->n_gids = a->n_gids;
	return 0;
}

static int ortho_add_check(const struct ortho_ioc_add *a)
{
	if (a->flags || !ortho_reserved_zero(a->reserved, sizeof(a->reserved)))
		return -EINVAL;
	if (ortho_reserved_zero(a->id, sizeof(a->id)) ||
	    ortho_reserved_zero(a->key, sizeof(a->key)))
		return -EINVAL;
	if (!ortho_label_ok(a->label))
		return -EINVAL;
	return 0;
}

static void ortho_audit_add(const struct ortho_key *k)
{
	audit_log(audit_context(), GFP_KERNEL, AUDIT_KERNEL_OTHER,
		  "op=ortho-add shard=%*phN uids=%u gids=%u pid=%d uid=%u auid=%u",
		  ORTHO_IOC_ID_SIZE, k->id, k->policy.n_uids, k->policy.n_gids,
		  task_tgid_nr(current),
		  from_kuid(&init_user_ns, current_uid()),
		  from_kuid(&init_user_ns, audit_get_loginuid(current)));
}

int ortho_ioc_add(struct ortho_file *of, void *data)
{
	struct ortho_ioc_add *a = data;
	struct ortho_key *k;
	int ret;

	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;
	ret = ortho_add_check(a);
	if (ret)
		return ret;
	k = kzalloc(sizeof(*k), GFP_KERNEL);
	if (!k)
		return -ENOMEM;
	ret = ortho_policy_copy(k, a);
	if (ret)
		goto err_free;
	memcpy(k->id, a->id, sizeof(k->id));
	memcpy(k->key, a->key, sizeof(k->key));
	memcpy(k->label, a->label, sizeof(k->label));
	INIT_LIST_HEAD(&k->holds);
	init_waitqueue_head(&k->done_wq);
	INIT_DELAYED_WORK(&k->enforce, ortho_enforce_work);

	mutex_lock(&ortho_lock);
	if (ortho_key_find(k->id)) {
		ret = -EEXIST;
		goto err_unlock;
	}
	if (ortho_nkeys >= ortho_max_keys()) {
		ret = -ENOSPC;
		goto err_unlock;
	}
	hash_add(ortho_keys, &k->node, ortho_id_hash(k->id));
	ortho_nkeys++;
	ortho_audit_add(k);
	mutex_unlock(&ortho_lock);
	pr_info("shard %*phN (%s) added\n", ORTHO_IOC_ID_SIZE, k->id, k->label);
	return 0;

err_unlock:
	mutex_unlock(&ortho_lock);
err_free:
	kfree_sensitive(k);
	return ret;
}

/* Uses the caller's credentials now, whatever they were at open. */
static bool ortho_policy_allows(const struct ortho_key *k)
{
	const struct ortho_policy *p = &k->policy;
	kuid_t uid = current_fsuid();
	u32 i;

	for (i = 0; i < p->n_deny_uids; i++)
		if (uid_eq(uid, p->deny_uids[i]))
			return false;
	for (i = 0; i < p->n_deny_gids; i++)
		if (in_group_p(p->deny_gids[i]))
			return false;
	for (i = 0; i < p->n_uids; i++)
		if (uid_eq(uid, p->uids[i]))
			return true;
	for (i = 0; i < p->n_gids; i++)
		if (in_group_p(p->gids[i]))
			return true;
	return false;
}

static int ortho_hold_add(struct ortho_file *of, struct ortho_key *k)
{
	struct ortho_hold *h;

	if (ortho_hold_find(of, k))
		return 0;
	h = kzalloc(sizeof(*h), GFP_KERNEL);
	if (!h)
		return -ENOMEM;
	h->key = k;
	h->file = of;
	h->pid = get_pid(task_tgid(current));
	h->uid = current_fsuid();
	h->state = ORTHO_HOLD_HELD;
	list_add_tail(&h->f_node, &of->holds);
	list_add_tail(&h->k_node, &k->holds);
	return 0;
}

int ortho_ioc_get(struct ortho_file *of, void *data)
{
	struct ortho_ioc_get *g = data;
	struct ortho_key *k;
	int ret;

	if (g->flags || !ortho_reserved_zero(g->reserved, sizeof(g->reserved)))
		return -EINVAL;
	mutex_lock(&ortho_lock);
	k = ortho_key_find(g->id);
	if (!k) {
		ret = -ENOKEY;
		goto out;
	}
	if (k->revoked) {
		ret = -EKEYREVOKED;
		goto out;
	}
	if (!ortho_policy_allows(k)) {
		ret = -EACCES;
		goto out;
	}
	/* The hold exists before the key leaves: a revoke now reaches it. */
	ret = ortho_hold_add(of, k);
	if (ret)
		goto out;
	memcpy(g->key, k->key, sizeof(g->key));
	memcpy(g->label, k->label, sizeof(g->label));
	g->generation = ortho_generation();
out:
	mutex_unlock(&ortho_lock);
	return ret;
}

static u32 ortho_live_holders(const struct ortho_key *k)
{
	const struct ortho_hold *h;
	u32 n = 0;

	list_for_each_entry(h, &k->holds, k_node)
		n += h->state == ORTHO_HOLD_HELD;
	return n;
}

int ortho_ioc_status(struct ortho_file *of, void *data)
{
	struct ortho_ioc_status *s = data;
	struct ortho_key *k;
	int ret = 0;

	if (s->flags || !ortho_reserved_zero(s->reserved, sizeof(s->reserved)))
		return -EINVAL;
	mutex_lock(&ortho_lock);
	k = ortho_key_find(s->id);
	if (!k) {
		ret = -ENOKEY;
		goto out;
	}
	if (!capable(CAP_SYS_ADMIN) && !ortho_policy_allows(k)) {
		ret = -EACCES;
		goto out;
	}
	s->state = k->revoked ? ORTHO_IOC_KEY_REVOKED : ORTHO_IOC_KEY_LIVE;
	s->grace_ms = ortho_grace_ms();
	s->generation = k->generation;
	s->current_generation = ortho_generation();
	s->revoked_ns = k->revoked_ns;
	s->done_ns = k->done_ns;
	s->counts = k->counts;
	if (!k->revoked)
		s->counts.holders = ortho_live_holders(k);
	memcpy(s->label, k->label, sizeof(s->label));
out:
	mutex_unlock(&ortho_lock);
	return ret;
}

int ortho_ioc_resident(struct ortho_file *of, void *data)
{
	struct ortho_ioc_resident *r = data;
	struct ortho_hold *h;
	struct ortho_key *k;
	int ret = 0;

	if (r->flags || !ortho_reserved_zero(r->reserved, sizeof(r->reserved)))
		return -EINVAL;
	mutex_lock(&ortho_lock);
	k = ortho_key_find(r->id);
	if (!k) {
		ret = -ENOKEY;
		goto out;
	}
	h = ortho_hold_find(of, k);
	if (!h) {
		ret = -ENOENT;
		goto out;
	}
	/* Past the ack (or the kill) the bytes are gone by definition. */
	if (r->bytes && (h->state == ORTHO_HOLD_ACKED ||
			 h->state == ORTHO_HOLD_KILLED)) {
		ret = -EKEYREVOKED;
		goto out;
	}
	h->resident = r->bytes;
out:
	mutex_unlock(&ortho_lock);
	return ret;
}

void ortho_keys_exit(void)
{
	struct ortho_key *k;
	struct hlist_node *tmp;
	int bkt;

	/* No file is open, so no hold is left and nothing queues work. */
	hash_for_each_safe(ortho_keys, bkt, tmp, k, node) {
		cancel_delayed_work_sync(&k->enforce);
		WARN_ON(!list_empty(&k->holds));
		hash_del(&k->node);
		kfree_sensitive(k);
	}
	ortho_nkeys = 0;
}
