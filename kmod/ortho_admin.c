// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * ortho.ko: what an administrator (orthod) needs besides add and revoke:
 * replacing a key's policy when a grant changes, and the kernel's view of
 * its table and of each shard's holders for "orthoctl status".
 *
 * The listings are built in a kernel buffer under ortho_lock and copied to
 * user space after unlocking, like ORTHO_IOC_PENDING: a fault in the
 * caller's buffer must not stall every other caller.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/cred.h>
#include <linux/kernel.h>
#include <linux/pid.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>

#include "ortho_internal.h"

/* A holder entry may grow; one page is plenty for any later version. */
#define ORTHO_HOLDER_SIZE_MAX	4096u

static int ortho_policy_parse(struct ortho_policy *p,
			      const struct ortho_ioc_policy *a)
{
	int ret;

	ret = ortho_policy_uids(p->uids, a->uids, a->n_uids);
	if (!ret)
		ret = ortho_policy_gids(p->gids, a->gids, a->n_gids);
	if (!ret)
		ret = ortho_policy_uids(p->deny_uids, a->deny_uids,
					a->n_deny_uids);
	if (!ret)
		ret = ortho_policy_gids(p->deny_gids, a->deny_gids,
					a->n_deny_gids);
	if (ret)
		return ret;
	p->n_uids = a->n_uids;
	p->n_gids = a->n_gids;
	p->n_deny_uids = a->n_deny_uids;
	p->n_deny_gids = a->n_deny_gids;
	return 0;
}

int ortho_ioc_set_policy(struct ortho_file *of, void *data)
{
	struct ortho_ioc_policy *a = data;
	struct ortho_policy p = { 0 };
	struct ortho_key *k;
	int ret;

	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;
	if (a->flags || !ortho_reserved_zero(a->reserved, sizeof(a->reserved)))
		return -EINVAL;
	ret = ortho_policy_parse(&p, a);
	if (ret)
		return ret;
	mutex_lock(&ortho_lock);
	k = ortho_key_find(a->id);
	if (!k) {
		ret = -ENOKEY;
	} else if (k->revoked) {
		ret = -EKEYREVOKED;
	} else {
		k->policy = p;
		audit_log(audit_context(), GFP_KERNEL, AUDIT_KERNEL_OTHER,
			  "op=ortho-policy shard=%*phN uids=%u gids=%u deny_uids=%u deny_gids=%u pid=%d uid=%u",
			  ORTHO_IOC_ID_SIZE, k->id, p.n_uids, p.n_gids,
			  p.n_deny_uids, p.n_deny_gids, task_tgid_nr(current),
			  from_kuid(&init_user_ns, current_uid()));
	}
	mutex_unlock(&ortho_lock);
	return ret;
}

struct ortho_list_walk {
	u8 *ids;
	u32 room;
	u32 n;
	u32 total;
	u32 live;
};

static int ortho_list_one(struct ortho_key *k, void *arg)
{
	struct ortho_list_walk *w = arg;

	if (w->n < w->room)
		memcpy(w->ids + (size_t)w->n++ * ORTHO_IOC_ID_SIZE, k->id,
		       ORTHO_IOC_ID_SIZE);
	w->total++;
	w->live += !k->revoked;
	return 0;
}

int ortho_ioc_list(struct ortho_file *of, void *data)
{
	struct ortho_ioc_list *l = data;
	struct ortho_list_walk w = { 0 };
	int ret = 0;

	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;
	if (l->flags || l->pad ||
	    !ortho_reserved_zero(l->reserved, sizeof(l->reserved)))
		return -EINVAL;
	/* Never more than max_keys ids, so the room is bounded. */
	w.room = min(l->count, ortho_max_keys());
	if (w.room) {
		w.ids = kmalloc_array(w.room, ORTHO_IOC_ID_SIZE, GFP_KERNEL);
		if (!w.ids)
			return -ENOMEM;
	}
	mutex_lock(&ortho_lock);
	ortho_key_for_each(ortho_list_one, &w);
	mutex_unlock(&ortho_lock);
	if (w.n && copy_to_user(u64_to_user_ptr(l->ids), w.ids,
				(size_t)w.n * ORTHO_IOC_ID_SIZE))
		ret = -EFAULT;
	kfree(w.ids);
	l->count = w.n;
	l->total = w.total;
	l->live = w.live;
	return ret;
}

static u32 ortho_hold_uapi_state(enum ortho_hold_state s)
{
	switch (s) {
	case ORTHO_HOLD_HELD:
		return ORTHO_IOC_HOLD_HELD;
	case ORTHO_HOLD_REVOKED:
		return ORTHO_IOC_HOLD_REVOKED;
	case ORTHO_HOLD_ACKED:
		return ORTHO_IOC_HOLD_ACKED;
	case ORTHO_HOLD_KILLED:
		return ORTHO_IOC_HOLD_KILLED;
	}
	return 0;
}

/* Fills up to @room entries; returns how many holds there are. */
static u32 ortho_holders_fill(const struct ortho_key *k,
			      struct ortho_ioc_holder *v, u32 room, u32 *n)
{
	struct user_namespace *ns = current_user_ns();
	const struct ortho_hold *h;
	u32 total = 0;

	*n = 0;
	list_for_each_entry(h, &k->holds, k_node) {
		total++;
		if (*n == room)
			continue;
		v[*n] = (struct ortho_ioc_holder) {
			.pid = pid_vnr(h->pid),
			.uid = from_kuid_munged(ns, h->uid),
			.state = ortho_hold_uapi_state(h->state),
			.client_id = h->file->client_id,
			.resident = h->resident,
		};
		(*n)++;
	}
	return total;
}

static int ortho_holders_copy(const struct ortho_ioc_holders *hs,
			      const struct ortho_ioc_holder *v, u32 n)
{
	u8 __user *dst = u64_to_user_ptr(hs->holders);
	size_t extra = hs->holder_size - sizeof(*v);
	u32 i;

	for (i = 0; i < n; i++, dst += hs->holder_size) {
		if (copy_to_user(dst, &v[i], sizeof(*v)))
			return -EFAULT;
		if (extra && clear_user(dst + sizeof(*v), extra))
			return -EFAULT;
	}
	return 0;
}

int ortho_ioc_holders(struct ortho_file *of, void *data)
{
	struct ortho_ioc_holders *hs = data;
	struct ortho_ioc_holder *v = NULL;
	struct ortho_key *k;
	u32 room, n = 0, total;
	int ret;

	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;
	if (hs->flags || hs->pad ||
	    !ortho_reserved_zero(hs->reserved, sizeof(hs->reserved)))
		return -EINVAL;
	if (hs->count && (hs->holder_size < sizeof(*v) ||
			  hs->holder_size > ORTHO_HOLDER_SIZE_MAX))
		return -EINVAL;
	/* Holds are counted, not bounded: take what fits in a few pages. */
	room = min_t(u32, hs->count, 1024);
	if (room) {
		v = kcalloc(room, sizeof(*v), GFP_KERNEL);
		if (!v)
			return -ENOMEM;
	}
	mutex_lock(&ortho_lock);
	k = ortho_key_find(hs->id);
	if (k)
		total = ortho_holders_fill(k, v, room, &n);
	mutex_unlock(&ortho_lock);
	if (!k) {
		kfree(v);
		return -ENOKEY;
	}
	ret = ortho_holders_copy(hs, v, n);
	kfree(v);
	hs->count = n;
	hs->total = total;
	return ret;
}
