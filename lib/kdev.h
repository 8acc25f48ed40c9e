/* SPDX-License-Identifier: MIT */
/*
 * The library's client of /dev/ortho (kmod/README.md), the optional kernel
 * module that keeps shard keys in the kernel.
 *
 * When the module is loaded and knows a shard, the kernel, not orthod,
 * hands out its key: it checks the caller's uid and groups at each fetch,
 * and the open file becomes a holder. A revocation wipes the key in the
 * kernel and raises POLLPRI on every holder's file; the holder lists the
 * revoked ids (kdev_pending()), wipes and evicts the shard, and
 * acknowledges (kdev_ack()) within the module's grace period, or the
 * kernel kills the process. The kernel tracks holders per open file and
 * process, so a process should open the device once and fetch its keys
 * itself (not in a parent before fork).
 *
 * Threads: every call may be made from any thread at any time; the kernel
 * serialises them. kdev_close() must not race the others.
 */
#ifndef ORTHO_KDEV_H
#define ORTHO_KDEV_H

#include <stdint.h>

struct ortho_ctx;
struct kdev;

#define KDEV_ID_SIZE 16u
#define KDEV_KEY_SIZE 32u
#define KDEV_LABEL_MAX 64u		/* with the NUL */
#define KDEV_DEFAULT_PATH "/dev/ortho"

/* kdev_shard_status.state */
enum kdev_key_state {
	KDEV_KEY_LIVE = 1,
	KDEV_KEY_REVOKED = 2,
};

/* The kernel's view of one shard (ORTHO_IOC_STATUS). */
struct kdev_shard_status {
	uint32_t state;			/* enum kdev_key_state */
	uint32_t grace_ms;		/* the module's grace period now */
	uint64_t generation;		/* of its revocation, 0 while live */
	uint64_t current_generation;	/* module-wide */
	uint64_t revoked_ns;		/* CLOCK_MONOTONIC, 0 while live */
	uint64_t done_ns;		/* every holder gone; 0 while pending */
	uint32_t holders;		/* live: now; revoked: at revocation */
	uint32_t acked;
	uint32_t killed;		/* missed the grace period */
	uint32_t closed;		/* closed the file before acking */
	char label[KDEV_LABEL_MAX];
};

/**
 * kdev_present() - whether the module's device exists.
 * @path: the device, NULL for KDEV_DEFAULT_PATH.
 *
 * Return: 1 when it exists and is a character device, else 0.
 */
int kdev_present(const char *path);

/**
 * kdev_open() - open the device and check that it is /dev/ortho.
 * @ctx: for messages (may be NULL).
 * @path: the device, NULL for KDEV_DEFAULT_PATH.
 * @out: the handle.
 *
 * Return: 0, -ENOENT when the module is not loaded, -ENOTTY when @path is
 * not an ortho device, or -errno.
 */
int kdev_open(struct ortho_ctx *ctx, const char *path, struct kdev **out);

/* kdev_close() - close the file: held shards count as closed. NULL is fine. */
void kdev_close(struct kdev *kd);

/**
 * kdev_fd() - the file, for a caller's own poll set (POLLPRI: a shard this
 * file holds was revoked).
 * @kd: the handle.
 *
 * Return: the file descriptor.
 */
int kdev_fd(const struct kdev *kd);

/**
 * kdev_get_key() - fetch a shard's key; this file becomes its holder.
 * @kd: the handle.
 * @id: the shard id.
 * @key: KDEV_KEY_SIZE bytes of the caller's secure memory (secmem); the
 *	only place the key is left in user space.
 * @label: KDEV_LABEL_MAX bytes for the shard's label, or NULL.
 * @generation: the module's revoke generation at the fetch, or NULL.
 *
 * Return: 0, -ENOKEY (the kernel does not know the shard: ask orthod),
 * -EKEYREVOKED, -EACCES (the policy refuses this uid and its groups), or
 * -errno.
 */
int kdev_get_key(struct kdev *kd, const uint8_t id[KDEV_ID_SIZE],
		 uint8_t *key, char *label, uint64_t *generation);

/**
 * kdev_ack() - this file no longer has the key or any byte of the shard:
 * completes its part of a revocation, or ends a live hold (an eviction).
 * Repeating it is harmless.
 *
 * Return: 0, -ENOENT (this file does not hold it), -ETIMEDOUT (too late:
 * the grace period ran out), -ENOKEY, or -errno.
 */
int kdev_ack(struct kdev *kd, const uint8_t id[KDEV_ID_SIZE]);

/**
 * kdev_resident() - report how many bytes of the shard this process keeps
 * resident (host and device), shown in /proc/<pid>/fdinfo.
 *
 * Return: 0, -ENOENT (not held), -EKEYREVOKED (nonzero after an ack), or
 * -errno.
 */
int kdev_resident(struct kdev *kd, const uint8_t id[KDEV_ID_SIZE],
		  uint64_t bytes);

/**
 * kdev_wait_revoke() - wait until a shard this file holds is revoked.
 * @kd: the handle.
 * @wake_fd: a file that ends the wait when readable (an eventfd or pipe
 *	the caller writes to when shutting down), or -1.
 * @timeout_ms: -1 waits for ever, 0 only looks.
 *
 * Return: 1 when a revocation is pending (POLLPRI), 0 on timeout,
 * -ECANCELED when @wake_fd became readable, or -errno.
 */
int kdev_wait_revoke(struct kdev *kd, int wake_fd, int timeout_ms);

/**
 * kdev_pending() - the shards this file holds that were revoked and not
 * yet acknowledged.
 * @kd: the handle.
 * @ids: room for @room ids (may be NULL when @room is 0).
 * @room: how many fit.
 * @total: how many there are (may be more than @room), or NULL.
 *
 * Return: the number of ids written, or -errno.
 */
int kdev_pending(struct kdev *kd, uint8_t (*ids)[KDEV_ID_SIZE], uint32_t room,
		 uint32_t *total);

/**
 * kdev_status() - the kernel's view of one shard (for CAP_SYS_ADMIN, or a
 * caller the shard's policy admits).
 *
 * Return: 0, -ENOKEY, -EACCES, or -errno.
 */
int kdev_status(struct kdev *kd, const uint8_t id[KDEV_ID_SIZE],
		struct kdev_shard_status *st);

#endif /* ORTHO_KDEV_H */
