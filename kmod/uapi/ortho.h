/* SPDX-License-Identifier: (GPL-2.0 WITH Linux-syscall-note) OR MIT */
/*
 * /dev/ortho: the ioctl interface of ortho.ko, shared by the module, the
 * library and the tests. kmod/README.md describes the semantics.
 *
 * Every argument struct starts with its own size and grows at the end.
 * The ioctl number carries the caller's struct size (the macros below use
 * sizeof of the structs in this header) and the size field must repeat it.
 * The kernel zero-extends a shorter struct it knows how to handle and
 * refuses a longer one whose extra bytes are not zero (-E2BIG). Fields are
 * fixed width, padding is explicit, pointers travel as __u64, and flags,
 * padding and reserved fields must be zero (-EINVAL). Unknown commands
 * fail with -ENOTTY.
 */
#ifndef ORTHO_UAPI_H
#define ORTHO_UAPI_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define ORTHO_IOC_DEVICE	"/dev/ortho"
#define ORTHO_IOC_MAGIC		0xB9

#define ORTHO_IOC_ID_SIZE	16	/* shard id: 32 hex digits in text */
#define ORTHO_IOC_KEY_SIZE	32	/* AES-256 */
#define ORTHO_IOC_LABEL_MAX	64	/* 1-63 printable chars, NUL-padded */
#define ORTHO_IOC_POLICY_MAX	16	/* uids, and gids, per key */

/* ortho_ioc_status.state */
#define ORTHO_IOC_KEY_LIVE	1
#define ORTHO_IOC_KEY_REVOKED	2

/* ortho_ioc_holder.state */
#define ORTHO_IOC_HOLD_HELD	1	/* has the key of a live shard */
#define ORTHO_IOC_HOLD_REVOKED	2	/* told of the revocation, not acked */
#define ORTHO_IOC_HOLD_ACKED	3
#define ORTHO_IOC_HOLD_KILLED	4	/* missed the grace period */

/* ortho_ioc_revoke.flags: return only when no holder is left pending. */
#define ORTHO_IOC_REVOKE_WAIT	(1u << 0)

/*
 * ORTHO_IOC_ADD (CAP_SYS_ADMIN): install a shard key and who may fetch it.
 * A caller may fetch the key when its fsuid is one of uids[] or it is in
 * one of the groups gids[] (primary or supplementary), checked at each
 * ORTHO_IOC_GET. Unused uids[]/gids[] slots must be zero.
 * Errors: EPERM, EINVAL, EEXIST (the id is known, live or revoked),
 * ENOSPC (max_keys reached).
 */
struct ortho_ioc_add {
	__u32 size;
	__u32 flags;
	__u8 id[ORTHO_IOC_ID_SIZE];
	__u8 key[ORTHO_IOC_KEY_SIZE];		/* not all zero */
	char label[ORTHO_IOC_LABEL_MAX];
	__u32 n_uids;
	__u32 n_gids;
	__u32 uids[ORTHO_IOC_POLICY_MAX];
	__u32 gids[ORTHO_IOC_POLICY_MAX];
	__u64 reserved[4];
};

/*
 * ORTHO_IOC_GET: fetch a key. The open file becomes a holder of the shard:
 * it is told (POLLPRI) when the shard is revoked and must acknowledge.
 * Errors: ENOKEY (unknown id), EKEYREVOKED, EACCES (policy).
 */
struct ortho_ioc_get {
	__u32 size;
	__u32 flags;
	__u8 id[ORTHO_IOC_ID_SIZE];
	__u8 key[ORTHO_IOC_KEY_SIZE];		/* out */
	char label[ORTHO_IOC_LABEL_MAX];	/* out */
	__u64 generation;			/* out: revoke generation now */
	__u64 reserved[4];
};

/* Holders of a shard at its revocation, and what became of them. */
struct ortho_ioc_counts {
	__u32 holders;		/* open files holding it when revoked */
	__u32 acked;		/* acknowledged a wipe */
	__u32 killed;		/* missed the grace period: SIGKILL */
	__u32 closed;		/* closed the file before acknowledging */
};

/*
 * ORTHO_IOC_REVOKE (CAP_SYS_ADMIN): wipe a key for good, bump the revoke
 * generation and tell every holder. Holders that have not acknowledged
 * within the grace period are killed. With ORTHO_IOC_REVOKE_WAIT the call
 * returns when none is pending (EINTR on a signal; the revocation stands).
 * Errors: EPERM, ENOKEY, EKEYREVOKED (already revoked), EINTR.
 */
struct ortho_ioc_revoke {
	__u32 size;
	__u32 flags;
	__u8 id[ORTHO_IOC_ID_SIZE];
	__u64 generation;			/* out: this revocation's */
	struct ortho_ioc_counts counts;		/* out */
	__u32 grace_ms;				/* out: the deadline used */
	__u32 pad;
	__u64 reserved[4];
};

/*
 * ORTHO_IOC_ACK: this open file no longer has the key or the shard's
 * bytes. After a revocation it completes this holder's part; before one it
 * ends the hold (a voluntary eviction). Repeating it is harmless.
 * Errors: ENOKEY, ENOENT (this file does not hold the shard), ETIMEDOUT
 * (too late: the holder was killed).
 */
struct ortho_ioc_ack {
	__u32 size;
	__u32 flags;
	__u8 id[ORTHO_IOC_ID_SIZE];
	__u64 reserved[4];
};

/*
 * ORTHO_IOC_RESIDENT: the holder reports how many bytes of the shard it
 * keeps resident (host and device), shown in fdinfo. Only 0 is accepted
 * once the holder has acknowledged or been killed.
 * Errors: ENOKEY, ENOENT, EKEYREVOKED.
 */
struct ortho_ioc_resident {
	__u32 size;
	__u32 flags;
	__u8 id[ORTHO_IOC_ID_SIZE];
	__u64 bytes;
	__u64 reserved[4];
};

/*
 * ORTHO_IOC_STATUS: a key's state (CAP_SYS_ADMIN, or a caller the policy
 * admits). For a live key counts.holders is the current number of holders.
 * Times are CLOCK_MONOTONIC nanoseconds; done_ns is 0 while a holder is
 * pending. Errors: ENOKEY, EACCES.
 */
struct ortho_ioc_status {
	__u32 size;
	__u32 flags;
	__u8 id[ORTHO_IOC_ID_SIZE];
	__u32 state;				/* out: ORTHO_IOC_KEY_* */
	__u32 grace_ms;				/* out: module parameter now */
	__u64 generation;			/* out: revoked at, 0 if live */
	__u64 current_generation;		/* out: module-wide */
	__u64 revoked_ns;			/* out */
	__u64 done_ns;				/* out */
	struct ortho_ioc_counts counts;		/* out */
	char label[ORTHO_IOC_LABEL_MAX];	/* out */
	__u64 reserved[4];
};

/*
 * ORTHO_IOC_PENDING: the shards this open file holds that were revoked and
 * not yet acknowledged (what POLLPRI announces). ids points to room for
 * count ids; count returns how many were written, total how many there
 * are. count 0 just reads total. Errors: EFAULT.
 */
struct ortho_ioc_pending {
	__u32 size;
	__u32 flags;
	__u64 ids;				/* user pointer: count * 16 B */
	__u32 count;				/* in: room; out: written */
	__u32 total;				/* out */
	__u64 generation;			/* out: revoke generation now */
	__u64 reserved[4];
};

/*
 * ORTHO_IOC_SET_POLICY (CAP_SYS_ADMIN): replace who may fetch a live key.
 * A caller is refused when its fsuid is one of deny_uids[] or it is in one
 * of deny_gids[], whatever the allow lists say; otherwise the allow lists
 * decide as for ORTHO_IOC_ADD. Holders keep the key they already have: a
 * policy change stops new fetches, revocation takes keys back. Unused
 * slots must be zero.
 * Errors: EPERM, EINVAL, ENOKEY, EKEYREVOKED.
 */
struct ortho_ioc_policy {
	__u32 size;
	__u32 flags;
	__u8 id[ORTHO_IOC_ID_SIZE];
	__u32 n_uids;
	__u32 n_gids;
	__u32 n_deny_uids;
	__u32 n_deny_gids;
	__u32 uids[ORTHO_IOC_POLICY_MAX];
	__u32 gids[ORTHO_IOC_POLICY_MAX];
	__u32 deny_uids[ORTHO_IOC_POLICY_MAX];
	__u32 deny_gids[ORTHO_IOC_POLICY_MAX];
	__u64 reserved[4];
};

/*
 * ORTHO_IOC_LIST (CAP_SYS_ADMIN): the ids of every key the module keeps,
 * live and revoked, in no particular order. ids points to room for count
 * ids; count returns how many were written, total how many there are,
 * live how many of those are live. count 0 just reads the totals.
 * Errors: EPERM, EFAULT.
 */
struct ortho_ioc_list {
	__u32 size;
	__u32 flags;
	__u64 ids;				/* user pointer: count * 16 B */
	__u32 count;				/* in: room; out: written */
	__u32 total;				/* out */
	__u32 live;				/* out */
	__u32 pad;
	__u64 reserved[4];
};

/* One holder of a shard, as ORTHO_IOC_HOLDERS reports it. */
struct ortho_ioc_holder {
	__s32 pid;		/* thread group that fetched the key, in
				 * the caller's pid ns (0 if not in it) */
	__u32 uid;		/* its fsuid at the fetch */
	__u32 state;		/* ORTHO_IOC_HOLD_* */
	__u32 pad;
	__u64 client_id;	/* of its open file, as in fdinfo */
	__u64 resident;		/* bytes, as the holder reported */
};

/*
 * ORTHO_IOC_HOLDERS (CAP_SYS_ADMIN): the open files holding one shard, the
 * kernel-attested part of "who has it". A hold stays listed after its
 * revocation (as revoked, acked or killed) until its file is closed.
 * holders points to room for count entries of holder_size bytes each
 * (at least sizeof(struct ortho_ioc_holder); the kernel fills what it
 * knows and zeroes the rest); count returns how many were written (at
 * most 1024 per call), total how many there are. count 0 just reads total.
 * Errors: EPERM, EINVAL, ENOKEY, EFAULT.
 */
struct ortho_ioc_holders {
	__u32 size;
	__u32 flags;
	__u8 id[ORTHO_IOC_ID_SIZE];
	__u64 holders;				/* user pointer */
	__u32 holder_size;			/* in */
	__u32 count;				/* in: room; out: written */
	__u32 total;				/* out */
	__u32 pad;
	__u64 reserved[4];
};

#define ORTHO_IOC_ADD		_IOW(ORTHO_IOC_MAGIC, 0x01, struct ortho_ioc_add)
#define ORTHO_IOC_GET		_IOWR(ORTHO_IOC_MAGIC, 0x02, struct ortho_ioc_get)
#define ORTHO_IOC_REVOKE	_IOWR(ORTHO_IOC_MAGIC, 0x03, struct ortho_ioc_revoke)
#define ORTHO_IOC_ACK		_IOW(ORTHO_IOC_MAGIC, 0x04, struct ortho_ioc_ack)
#define ORTHO_IOC_RESIDENT	_IOW(ORTHO_IOC_MAGIC, 0x05, struct ortho_ioc_resident)
#define ORTHO_IOC_STATUS	_IOWR(ORTHO_IOC_MAGIC, 0x06, struct ortho_ioc_status)
#define ORTHO_IOC_PENDING	_IOWR(ORTHO_IOC_MAGIC, 0x07, struct ortho_ioc_pending)
#define ORTHO_IOC_SET_POLICY	_IOW(ORTHO_IOC_MAGIC, 0x08, struct ortho_ioc_policy)
#define ORTHO_IOC_LIST		_IOWR(ORTHO_IOC_MAGIC, 0x09, struct ortho_ioc_list)
#define ORTHO_IOC_HOLDERS	_IOWR(ORTHO_IOC_MAGIC, 0x0a, struct ortho_ioc_holders)

#endif /* ORTHO_UAPI_H */
