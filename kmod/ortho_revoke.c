// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * ortho.ko: revocation, acknowledgement and the deadline.
 *
 * A revocation wipes the key at once, bumps the module-wide generation and
 * moves every hold of the shard to ORTHO_HOLD_REVOKED, waking the holder's
 * poll with POLLPRI. Each such holder then leaves the pending set in one
 * of three ways: it acknowledges (ORTHO_IOC_ACK), it closes its file, or
 * the grace period runs out and the enforcement work kills it. When none
 * is pending the revocation is done: done_ns is set and waiters woken.
 * Revocations and kills are recorded through the audit subsystem (a no-op
 * when audit is off) and with pr_notice.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/cred.h>
#include <linux/jiffies.h>
#include <linux/kernel.h>
#include <linux/ktime.h>
#include <linux/pid.h>
#include <linux/poll.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>

#include "ortho_internal.h"

static u64 ortho_gen;

u64 ortho_generation(void)
{
	lockdep_assert_held(&ortho_lock);
	return ortho_gen;
}

static void ortho_audit_revoke(const struct ortho_key *k)
{
	audit_log(audit_context(), GFP_KERNEL, AUDIT_KERNEL_OTHER,
		  "op=ortho-revoke shard=%*phN generation=%llu holders=%u grace_ms=%u pid=%d uid=%u auid=%u",
		  ORTHO_IOC_ID_SIZE, k->id, k->generation, k->counts.holders,
		  k->grace_ms, task_tgid_nr(current),
		  from_kuid(&init_user_ns, current_uid()),
		  from_kuid(&init_user_ns, audit_get_loginuid(current)));
	pr_notice("shard %*phN (%s) revoked: generation %llu, %u holders, %u ms to acknowledge\n",
		  ORTHO_IOC_ID_SIZE, k->id, k->label, k->generation,
		  k->counts.holders, k->grace_ms);
}

static void ortho_audit_kill(const struct ortho_key *k,
			     const struct ortho_hold *h)
{
	pid_t pid = pid_nr(h->pid);
	uid_t uid = from_kuid(&init_user_ns, h->uid);

	audit_log(NULL, GFP_KERNEL, AUDIT_KERNEL_OTHER,
		  "op=ortho-kill shard=%*phN generation=%llu pid=%d uid=%u grace_ms=%u",
		  ORTHO_IOC_ID_SIZE, k->id, k->generation, pid, uid,
		  k->grace_ms);
	pr_notice("killed pid %d (uid %u): shard %*phN not acknowledged within %u ms\n",
		  pid, uid, ORTHO_IOC_ID_SIZE, k->id, k->grace_ms);
}

/* A pending holder has gone; finish the revocation when it was the last. */
static void ortho_key_settle(struct ortho_key *k)
{
	const struct ortho_ioc_counts *c = &k->counts;

	if (!k->revoked || k->pending || k->done_ns)
		return;
	k->done_ns = ktime_get_ns();
	/* Not _sync: the work takes ortho_lock, which we hold. */
	cancel_delayed_work(&k->enforce);
	audit_log(NULL, GFP_KERNEL, AUDIT_KERNEL_OTHER,
		  "op=ortho-revoke-done shard=%*phN generation=%llu holders=%u acked=%u killed=%u closed=%u",
		  ORTHO_IOC_ID_SIZE, k->id, k->generation, c->holders,
		  c->acked, c->killed, c->closed);
	pr_info("shard %*phN revocation done in %llu us: %u acked, %u killed, %u closed\n",
		ORTHO_IOC_ID_SIZE, k->id,
		div_u64(k->done_ns - k->revoked_ns, NSEC_PER_USEC),
		c->acked, c->killed, c->closed);
	wake_up_all(&k->done_wq);
}

static void ortho_hold_free(struct ortho_hold *h)
{
	list_del(&h->f_node);
	list_del(&h->k_node);
	put_pid(h->pid);
	kfree(h);
}

static void ortho_revoke_locked(struct ortho_key *k, unsigned int grace)
{
	struct ortho_hold *h;

	memzero_explicit(k->key, sizeof(k->key));
	k->revoked = true;
	k->generation = ++ortho_gen;
	k->grace_ms = grace;
	k->revoked_ns = ktime_get_ns();
	/* A live key's holds are all ORTHO_HOLD_HELD: ack ends them. */
	list_for_each_entry(h, &k->holds, k_node) {
		h->state = ORTHO_HOLD_REVOKED;
		h->file->pending++;
		k->counts.holders++;
		wake_up_interruptible_poll(&h->file->wq, EPOLLPRI);
	}
	k->pending = k->counts.holders;
	ortho_audit_revoke(k);
	if (k->pending)
		schedule_delayed_work(&k->enforce, msecs_to_jiffies(grace));
	else
		ortho_key_settle(k);
}

int ortho_ioc_revoke(struct ortho_file *of, void *data)
{
	struct ortho_ioc_revoke *r = data;
	unsigned int grace = ortho_grace_ms();
	struct ortho_key *k;
	int ret = 0;

	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;
	if ((r->flags & ~ORTHO_IOC_REVOKE_WAIT) || r->pad ||
	    !ortho_reserved_zero(r->reserved, sizeof(r->reserved)))
		return -EINVAL;
	mutex_lock(&ortho_lock);
	k = ortho_key_find(r->id);
	if (!k)
		ret = -ENOKEY;
	else if (k->revoked)
		ret = -EKEYREVOKED;
	else
		ortho_revoke_locked(k, grace);
	mutex_unlock(&ortho_lock);
	if (ret)
		return ret;
	/* Keys outlive every open file, so k stays valid while we wait. */
	if ((r->flags & ORTHO_IOC_REVOKE_WAIT) &&
	    wait_event_interruptible(k->done_wq, !READ_ONCE(k->pending)))
		return -EINTR;
	mutex_lock(&ortho_lock);
	r->generation = k->generation;
	r->counts = k->counts;
	mutex_unlock(&ortho_lock);
	r->grace_ms = grace;
	return 0;
}

int ortho_ioc_ack(struct ortho_file *of, void *data)
{
	struct ortho_ioc_ack *a = data;
	struct ortho_hold *h;
	struct ortho_key *k;
	int ret = 0;

	if (a->flags || !ortho_reserved_zero(a->reserved, sizeof(a->reserved)))
		return -EINVAL;
	mutex_lock(&ortho_lock);
	k = ortho_key_find(a->id);
	if (!k) {
		ret = -ENOKEY;
		goto out;
	}
	h = ortho_hold_find(of, k);
	if (!h) {
		ret = -ENOENT;
		goto out;
	}
	switch (h->state) {
	case ORTHO_HOLD_HELD:
		ortho_hold_free(h);
		break;
	case ORTHO_HOLD_REVOKED:
		h->state = ORTHO_HOLD_ACKED;
		h->resident = 0;
		of->pending--;
		k->counts.acked++;
		k->pending--;
		ortho_key_settle(k);
		break;
	case ORTHO_HOLD_ACKED:
		break;
	case ORTHO_HOLD_KILLED:
		ret = -ETIMEDOUT;
		break;
	}
out:
	mutex_unlock(&ortho_lock);
	return ret;
}

static u32 ortho_pending_ids(struct ortho_file *of, u8 *ids, u32 room)
{
	struct ortho_hold *h;
	u32 n = 0;

	list_for_each_entry(h, &of->holds, f_node) {
		if (n == room)
			break;
		if (h->state != ORTHO_HOLD_REVOKED)
			continue;
		memcpy(ids + (size_t)n * ORTHO_IOC_ID_SIZE, h->key->id,
		       ORTHO_IOC_ID_SIZE);
		n++;
	}
	return n;
}

int ortho_ioc_pending(struct ortho_file *of, void *data)
{
	struct ortho_ioc_pending *p = data;
	u8 *ids = NULL;
	u32 total, n;
	int ret = 0;

	if (p->flags || !ortho_reserved_zero(p->reserved, sizeof(p->reserved)))
		return -EINVAL;
	mutex_lock(&ortho_lock);
	total = of->pending;
	n = min(p->count, total);
	if (n) {
		ids = kmalloc_array(n, ORTHO_IOC_ID_SIZE, GFP_KERNEL);
		if (!ids) {
			mutex_unlock(&ortho_lock);
			return -ENOMEM;
		}
		n = ortho_pending_ids(of, ids, n);
	}
	p->generation = ortho_gen;
	mutex_unlock(&ortho_lock);
	/* Copied out after unlocking: a fault must not stall every caller. */
	if (n && copy_to_user(u64_to_user_ptr(p->ids), ids,
			      (size_t)n * ORTHO_IOC_ID_SIZE))
		ret = -EFAULT;
	kfree(ids);
	p->count = n;
	p->total = total;
	return ret;
}

void ortho_enforce_work(struct work_struct *work)
{
	struct ortho_key *k = container_of(to_delayed_work(work),
					   struct ortho_key, enforce);
	struct ortho_hold *h;

	mutex_lock(&ortho_lock);
	list_for_each_entry(h, &k->holds, k_node) {
		if (h->state != ORTHO_HOLD_REVOKED)
			continue;
		h->state = ORTHO_HOLD_KILLED;
		h->file->pending--;
		k->counts.killed++;
		k->pending--;
		kill_pid(h->pid, SIGKILL, 1);
		ortho_audit_kill(k, h);
	}
	ortho_key_settle(k);
	mutex_unlock(&ortho_lock);
}

void ortho_file_release_holds(struct ortho_file *of)
{
	struct ortho_hold *h, *tmp;
	struct ortho_key *k;

	mutex_lock(&ortho_lock);
	list_for_each_entry_safe(h, tmp, &of->holds, f_node) {
		k = h->key;
		if (h->state == ORTHO_HOLD_REVOKED) {
			k->counts.closed++;
			k->pending--;
		}
		ortho_hold_free(h);
		ortho_key_settle(k);
	}
	of->pending = 0;
	mutex_unlock(&ortho_lock);
}
