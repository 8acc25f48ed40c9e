/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * ortho.ko internals shared by its files.
 *
 * Locking: one mutex, ortho_lock, guards the key table, every key's state
 * and counters, every hold, and every open file's hold list and pending
 * count. Nothing touches user memory, and nothing waits for another task,
 * while holding it; copies to and from user space happen in the ioctl
 * dispatcher before and after. The waitqueues (a file's wq, a key's
 * done_wq) carry their own locks; waiters read the counts they wait on
 * with READ_ONCE, writers change them under ortho_lock before waking.
 *
 * Lifetime: keys are created by ORTHO_IOC_ADD and live until the module is
 * unloaded (a revoked key stays as a wiped tombstone, so that a late fetch
 * gets -EKEYREVOKED). Holds live until their file is released. An open file
 * pins the module, so the exit path sees no file and no ioctl; it only has
 * to cancel the enforcement work and free the keys.
 */
#ifndef ORTHO_INTERNAL_H
#define ORTHO_INTERNAL_H

#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/types.h>
#include <linux/uidgid.h>
#include <linux/wait.h>
#include <linux/workqueue.h>

#include "uapi/ortho.h"

struct pid;
struct seq_file;
struct file;

enum ortho_hold_state {
	ORTHO_HOLD_HELD,	/* has the key of a live shard */
	ORTHO_HOLD_REVOKED,	/* told of the revocation, not yet acked */
	ORTHO_HOLD_ACKED,	/* acknowledged a wipe */
	ORTHO_HOLD_KILLED,	/* missed the deadline */
};

/* Who may fetch a key: a deny entry wins over any allow entry. */
struct ortho_policy {
	u32 n_uids;
	u32 n_gids;
	u32 n_deny_uids;
	u32 n_deny_gids;
	kuid_t uids[ORTHO_IOC_POLICY_MAX];
	kgid_t gids[ORTHO_IOC_POLICY_MAX];
	kuid_t deny_uids[ORTHO_IOC_POLICY_MAX];
	kgid_t deny_gids[ORTHO_IOC_POLICY_MAX];
};

struct ortho_key {
	struct hlist_node node;
	u8 id[ORTHO_IOC_ID_SIZE];
	u8 key[ORTHO_IOC_KEY_SIZE];
	char label[ORTHO_IOC_LABEL_MAX];
	struct ortho_policy policy;
	bool revoked;
	u64 generation;		/* of its revocation */
	unsigned int grace_ms;	/* the deadline it was given */
	u64 revoked_ns;
	u64 done_ns;
	struct ortho_ioc_counts counts;
	u32 pending;		/* holders still to ack, be killed or close */
	struct list_head holds;	/* ortho_hold.k_node */
	wait_queue_head_t done_wq;
	struct delayed_work enforce;
};

struct ortho_file {
	struct list_head holds;	/* ortho_hold.f_node */
	wait_queue_head_t wq;	/* POLLPRI */
	u32 pending;		/* holds in ORTHO_HOLD_REVOKED */
	u64 client_id;
	struct pid *opener;	/* thread group that opened it */
	kuid_t uid;
	kgid_t gid;
};

struct ortho_hold {
	struct list_head f_node;
	struct list_head k_node;
	struct ortho_key *key;
	struct ortho_file *file;
	struct pid *pid;	/* thread group that fetched the key */
	kuid_t uid;		/* its fsuid then */
	u64 resident;		/* bytes, as the holder reports */
	enum ortho_hold_state state;
};

extern struct mutex ortho_lock;

/* ortho_main.c */

/* Return: the grace period for holders to acknowledge, in milliseconds. */
unsigned int ortho_grace_ms(void);

/* Return: the most keys the module keeps (live and revoked). */
unsigned int ortho_max_keys(void);

/* ortho_keys.c */

/**
 * ortho_ioc_add() - ORTHO_IOC_ADD.
 * @of: the caller's open file
 * @data: struct ortho_ioc_add, copied in
 *
 * Return: 0 or a negative errno (see uapi/ortho.h).
 */
int ortho_ioc_add(struct ortho_file *of, void *data);

/**
 * ortho_ioc_get() - ORTHO_IOC_GET; fills in the key.
 * @of: the caller's open file, which becomes a holder
 * @data: struct ortho_ioc_get
 *
 * Return: 0 or a negative errno.
 */
int ortho_ioc_get(struct ortho_file *of, void *data);

/**
 * ortho_ioc_status() - ORTHO_IOC_STATUS.
 * @of: the caller's open file
 * @data: struct ortho_ioc_status
 *
 * Return: 0 or a negative errno.
 */
int ortho_ioc_status(struct ortho_file *of, void *data);

/**
 * ortho_ioc_resident() - ORTHO_IOC_RESIDENT.
 * @of: the holder's open file
 * @data: struct ortho_ioc_resident
 *
 * Return: 0 or a negative errno.
 */
int ortho_ioc_resident(struct ortho_file *of, void *data);

/**
 * ortho_policy_uids() - read a uid list in the caller's user namespace.
 * @dst: kernel ids
 * @src: the list, ORTHO_IOC_POLICY_MAX slots
 * @n: slots in use; the others must be zero
 *
 * Return: 0, or -EINVAL for a bad count, a non-zero unused slot or an id
 * with no mapping.
 */
int ortho_policy_uids(kuid_t *dst, const u32 *src, u32 n);

/**
 * ortho_policy_gids() - ortho_policy_uids() for groups.
 * @dst: kernel ids
 * @src: the list, ORTHO_IOC_POLICY_MAX slots
 * @n: slots in use
 *
 * Return: 0 or -EINVAL.
 */
int ortho_policy_gids(kgid_t *dst, const u32 *src, u32 n);

/**
 * ortho_key_for_each() - call @fn for every key; caller holds ortho_lock.
 * @fn: callback; a non-zero return stops the walk
 * @arg: passed to @fn
 *
 * Return: what the last @fn call returned, 0 when none stopped the walk.
 */
int ortho_key_for_each(int (*fn)(struct ortho_key *k, void *arg), void *arg);

/**
 * ortho_key_find() - look a key up; caller holds ortho_lock.
 * @id: shard id
 *
 * Return: the key or NULL.
 */
struct ortho_key *ortho_key_find(const u8 *id);

/**
 * ortho_hold_find() - the hold of @of on @k; caller holds ortho_lock.
 * @of: open file
 * @k: key
 *
 * Return: the hold or NULL.
 */
struct ortho_hold *ortho_hold_find(struct ortho_file *of, struct ortho_key *k);

/**
 * ortho_reserved_zero() - check that reserved fields are zero.
 * @p: first byte
 * @len: byte count
 *
 * Return: true when every byte is zero.
 */
bool ortho_reserved_zero(const void *p, size_t len);

/**
 * ortho_keys_exit() - cancel pending enforcement and free every key
 * (wiped). Called once no file is open.
 */
void ortho_keys_exit(void);

/* ortho_revoke.c */

/**
 * ortho_ioc_revoke() - ORTHO_IOC_REVOKE.
 * @of: the caller's open file
 * @data: struct ortho_ioc_revoke
 *
 * Return: 0 or a negative errno.
 */
int ortho_ioc_revoke(struct ortho_file *of, void *data);

/**
 * ortho_ioc_ack() - ORTHO_IOC_ACK.
 * @of: the holder's open file
 * @data: struct ortho_ioc_ack
 *
 * Return: 0 or a negative errno.
 */
int ortho_ioc_ack(struct ortho_file *of, void *data);

/**
 * ortho_ioc_pending() - ORTHO_IOC_PENDING.
 * @of: the holder's open file
 * @data: struct ortho_ioc_pending
 *
 * Return: 0 or a negative errno.
 */
int ortho_ioc_pending(struct ortho_file *of, void *data);

/**
 * ortho_enforce_work() - the grace period of a revocation ran out: kill
 * every holder that has not acknowledged.
 * @work: ortho_key.enforce
 */
void ortho_enforce_work(struct work_struct *work);

/**
 * ortho_file_release_holds() - drop every hold of a file being released;
 * pending ones count as closed. Takes ortho_lock.
 * @of: open file
 */
void ortho_file_release_holds(struct ortho_file *of);

/**
 * ortho_generation() - caller holds ortho_lock.
 *
 * Return: the module-wide revoke generation.
 */
u64 ortho_generation(void);

/* ortho_admin.c */

/**
 * ortho_ioc_set_policy() - ORTHO_IOC_SET_POLICY.
 * @of: the caller's open file
 * @data: struct ortho_ioc_policy
 *
 * Return: 0 or a negative errno.
 */
int ortho_ioc_set_policy(struct ortho_file *of, void *data);

/**
 * ortho_ioc_list() - ORTHO_IOC_LIST.
 * @of: the caller's open file
 * @data: struct ortho_ioc_list
 *
 * Return: 0 or a negative errno.
 */
int ortho_ioc_list(struct ortho_file *of, void *data);

/**
 * ortho_ioc_holders() - ORTHO_IOC_HOLDERS.
 * @of: the caller's open file
 * @data: struct ortho_ioc_holders
 *
 * Return: 0 or a negative errno.
 */
int ortho_ioc_holders(struct ortho_file *of, void *data);

/* ortho_fdinfo.c */

/**
 * ortho_show_fdinfo() - the ortho- keys of /proc/<pid>/fdinfo/<fd>.
 * @m: seq_file
 * @file: an open /dev/ortho
 */
void ortho_show_fdinfo(struct seq_file *m, struct file *file);

#endif /* ORTHO_INTERNAL_H */
