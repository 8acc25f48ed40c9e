/* SPDX-License-Identifier: MIT */
/*
 * orthod's side of the optional kernel module, /dev/ortho (kmod/README.md).
 *
 * When the module is loaded, orthod puts every active shard key into the
 * kernel with the uids and gids its policy admits, then wipes its own
 * in-memory copy (the wrapped copy on disk stays, so that the keys can be
 * put back after the module is reloaded). Clients fetch keys from the
 * kernel; a revocation goes through the kernel too, which wipes the key,
 * wakes every holder and kills those that do not acknowledge in time.
 *
 * Everything here takes plain data (ids, key bytes, labels, uid and gid
 * lists) and depends on nothing but libc and the module's uapi header, so
 * the daemon's keystore, policy and revocation code call it without this
 * file knowing their structures, and a tool may compile it in as well.
 * Nothing here blocks except orthod_kmod_revoke() with @wait set.
 */
#ifndef ORTHOD_KMOD_H
#define ORTHOD_KMOD_H

#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#define ORTHOD_KMOD_PATH "/dev/ortho"
#define ORTHOD_KMOD_ID_SIZE 16u
#define ORTHOD_KMOD_KEY_SIZE 32u
#define ORTHOD_KMOD_LABEL_MAX 64u	/* with the NUL */
#define ORTHOD_KMOD_POLICY_MAX 16u	/* per list */

struct orthod_kmod {
	int fd;				/* -1: no module */
};

/* Who may fetch a key from the kernel; a deny entry wins. */
struct orthod_kmod_policy {
	uint32_t n_uids, n_gids, n_deny_uids, n_deny_gids;
	uint32_t uids[ORTHOD_KMOD_POLICY_MAX];
	uint32_t gids[ORTHOD_KMOD_POLICY_MAX];
	uint32_t deny_uids[ORTHOD_KMOD_POLICY_MAX];
	uint32_t deny_gids[ORTHOD_KMOD_POLICY_MAX];
};

/* The kernel's record of one shard. */
struct orthod_kmod_shard {
	uint8_t id[ORTHOD_KMOD_ID_SIZE];
	char label[ORTHOD_KMOD_LABEL_MAX];
	int revoked;
	uint32_t grace_ms;		/* of its revocation, else the module's */
	uint64_t generation;		/* of its revocation, 0 while live */
	uint64_t revoked_ns, done_ns;	/* CLOCK_MONOTONIC; done 0: pending */
	uint32_t holders;		/* live: now; revoked: at revocation */
	uint32_t acked, killed, closed;
};

/* One open file holding a shard, as the kernel attests it. */
struct orthod_kmod_holder {
	pid_t pid;			/* 0: outside our pid namespace */
	uid_t uid;
	const char *state;		/* "held", "revoked", "acked", "killed" */
	uint64_t client_id;		/* as in /proc/<pid>/fdinfo */
	uint64_t resident;		/* bytes, as the holder reported */
};

/**
 * orthod_kmod_open() - open the module's device for administration.
 * @km: filled in; fd is -1 on any failure, so the daemon runs on without.
 * @path: the device, NULL for ORTHOD_KMOD_PATH.
 *
 * Return: 0, -ENOENT (the module is not loaded), -EPERM (no
 * CAP_SYS_ADMIN), -ENOTTY (not an ortho device), or -errno.
 */
int orthod_kmod_open(struct orthod_kmod *km, const char *path);

/* orthod_kmod_close() - close the device (keys stay in the kernel). */
void orthod_kmod_close(struct orthod_kmod *km);

/**
 * orthod_kmod_active() - whether keys go to the kernel.
 * @km: the handle.
 *
 * Return: 1 when the device is open, else 0.
 */
int orthod_kmod_active(const struct orthod_kmod *km);

/**
 * orthod_kmod_policy_add() - add one rule of the daemon's policy that
 * matches a shard to the kernel's lists (duplicates are dropped).
 * @p: the policy being built (start from all zeros).
 * @allow: 1 for a grant, 0 for a deny.
 * @is_gid: 1 when @who is a gid, 0 for a uid.
 * @who: the uid or gid.
 *
 * Return: 0, or -E2BIG when the list already has ORTHOD_KMOD_POLICY_MAX
 * entries (the shard's key then has to stay with the daemon).
 */
int orthod_kmod_policy_add(struct orthod_kmod_policy *p, int allow,
			   int is_gid, uint32_t who);

/**
 * orthod_kmod_add() - put a shard key into the kernel with its policy.
 * The key goes in with an empty policy, then the policy is set, so the
 * key is never fetchable under a policy without its deny entries.
 * @km: the handle.
 * @id: the shard id.
 * @key: the key; the caller wipes its copy once this returns 0.
 * @label: 1-63 printable characters without blanks.
 * @p: who may fetch it.
 * @existed: set to 1 when the kernel already had the id (orthod restarted
 *	while the module stayed loaded); its policy is replaced. May be NULL.
 *
 * Return: 0, -EKEYREVOKED (the kernel revoked it: mark it revoked),
 * -ENOSPC (the module's max_keys), -EINVAL, -EPERM, or -errno.
 */
int orthod_kmod_add(struct orthod_kmod *km, const uint8_t *id,
		    const uint8_t *key, const char *label,
		    const struct orthod_kmod_policy *p, int *existed);

/**
 * orthod_kmod_set_policy() - replace who may fetch a key (after a grant or
 * deny changed the daemon's policy). Holders keep the key they have.
 *
 * Return: 0, -ENOKEY, -EKEYREVOKED, -EINVAL, or -errno.
 */
int orthod_kmod_set_policy(struct orthod_kmod *km, const uint8_t *id,
			   const struct orthod_kmod_policy *p);

/**
 * orthod_kmod_revoke() - revoke in the kernel: the key is wiped, every
 * holder woken (POLLPRI) and killed if it does not acknowledge within the
 * module's grace period.
 * @km: the handle.
 * @id: the shard id.
 * @wait: block until no holder is pending (for tools and tests; orthod's
 *	event loop passes 0 and polls orthod_kmod_revoke_done()).
 * @out: the shard's record after the call (may be NULL).
 *
 * Return: 0, -ENOKEY (the kernel never had it), -EKEYREVOKED (already
 * revoked; @out still filled in), -EINTR (@wait cut short; the revocation
 * stands), or -errno.
 */
int orthod_kmod_revoke(struct orthod_kmod *km, const uint8_t *id, int wait,
		       struct orthod_kmod_shard *out);

/**
 * orthod_kmod_revoke_done() - whether a kernel revocation is complete:
 * every holder acknowledged, closed its file or was killed.
 * @km: the handle.
 * @id: the shard id.
 * @out: the shard's record, with the counts (may be NULL).
 *
 * Return: 1 when done, 0 while a holder is pending, -EINVAL when the
 * shard is not revoked, -ENOKEY, or -errno.
 */
int orthod_kmod_revoke_done(struct orthod_kmod *km, const uint8_t *id,
			    struct orthod_kmod_shard *out);

/**
 * orthod_kmod_status() - the kernel's record of one shard.
 *
 * Return: 0, -ENOKEY, or -errno.
 */
int orthod_kmod_status(struct orthod_kmod *km, const uint8_t *id,
		       struct orthod_kmod_shard *out);

/**
 * orthod_kmod_list() - every shard id the kernel keeps.
 * @km: the handle.
 * @ids: set to a malloc'ed array (free() it); NULL when there is none.
 * @n: the number of ids.
 * @live: how many of them are live (may be NULL).
 *
 * Return: 0 or -errno.
 */
int orthod_kmod_list(struct orthod_kmod *km, uint8_t (**ids)[ORTHOD_KMOD_ID_SIZE],
		     size_t *n, size_t *live);

/**
 * orthod_kmod_holders() - the open files holding a shard.
 * @km: the handle.
 * @id: the shard id.
 * @v: set to a malloc'ed array (free() it); NULL when there is none.
 * @n: the number of holders.
 *
 * Return: 0, -ENOKEY, or -errno.
 */
int orthod_kmod_holders(struct orthod_kmod *km, const uint8_t *id,
			struct orthod_kmod_holder **v, size_t *n);

/**
 * orthod_kmod_grace_ms() - the module's grace period now.
 *
 * Return: milliseconds (> 0), or -errno.
 */
int orthod_kmod_grace_ms(void);

/**
 * orthod_kmod_view_print() - print the module's view for "orthoctl
 * status": the grace period, then every shard with its state, counts and
 * kernel-attested holders. Text is indented two spaces under a "module:"
 * heading; @json prints one JSON object instead (no trailing newline).
 * @f: where to print.
 * @km: the handle; when no module is open the view says so.
 * @json: 1 for JSON.
 *
 * Return: 0, or -errno (nothing is printed when the listing fails).
 */
int orthod_kmod_view_print(FILE *f, struct orthod_kmod *km, int json);

#endif /* ORTHOD_KMOD_H */
