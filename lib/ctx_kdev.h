/* SPDX-License-Identifier: MIT */
/*
 * A context's use of the kernel module, /dev/ortho (lib/kdev.h,
 * kmod/README.md): one open file per context, through which its models
 * fetch keys, report what is resident and acknowledge revocations.
 *
 * The kernel counts one hold per open file and shard, while several models
 * of a context may use the same shard: holds are counted here, and the
 * kernel is told the hold ended (kdev_ack()) only when the last model let
 * go of the key. Resident bytes are summed the same way.
 *
 * Locking: one mutex guards the table; it is a leaf (nothing else is
 * taken under it, no call here waits for anything but an ioctl). The
 * handle is made by ctx_authority_start() and freed by
 * ctx_authority_stop(), with no model open and the notice thread stopped.
 */
#ifndef ORTHO_CTX_KDEV_H
#define ORTHO_CTX_KDEV_H

#include <stdint.h>

#include "kdev.h"

struct ortho_ctx;

/**
 * ctx_kdev_start() - open /dev/ortho for @ctx when the module is loaded
 * ($ORTHO_KDEV names another device, or "none" for none).
 * @ctx: the context, not yet shared.
 *
 * Return: 0, also when there is no module (ctx->kdev stays NULL), or
 * -ENOMEM.
 */
int ctx_kdev_start(struct ortho_ctx *ctx);

/* ctx_kdev_stop() - close the file (no model may be open). */
void ctx_kdev_stop(struct ortho_ctx *ctx);

/**
 * ctx_kdev_get_key() - fetch a shard's key from the kernel and count the
 * hold; the caller gives it back with ctx_kdev_put() or, after a
 * revocation, ctx_kdev_revoked().
 * @ctx: the context (with ->kdev).
 * @id: the shard id.
 * @key: KDEV_KEY_SIZE bytes of secmem.
 *
 * Return: 0, or kdev_get_key()'s -ENOKEY, -EKEYREVOKED, -EACCES, -errno.
 */
int ctx_kdev_get_key(struct ortho_ctx *ctx, const uint8_t id[KDEV_ID_SIZE],
		     uint8_t *key);

/**
 * ctx_kdev_put() - a model wiped its copy of the key: when it was the last,
 * the kernel is told the hold ended.
 * @ctx: the context.
 * @id: the shard id.
 */
void ctx_kdev_put(struct ortho_ctx *ctx, const uint8_t id[KDEV_ID_SIZE]);

/**
 * ctx_kdev_resident() - a model holds @now bytes of the shard resident,
 * where it held @was: the sum over the context's models goes to the kernel
 * (shown in /proc/<pid>/fdinfo).
 */
void ctx_kdev_resident(struct ortho_ctx *ctx, const uint8_t id[KDEV_ID_SIZE],
		       uint64_t was, uint64_t now);

/**
 * ctx_kdev_revoked() - the shard was revoked and every model has wiped it:
 * acknowledge to the kernel, which completes this file's part of the
 * revocation (or ends the hold, when the kernel has not revoked it yet).
 * @ctx: the context.
 * @id: the shard id.
 * @from_kernel: the kernel named it (ORTHO_IOC_PENDING): acknowledge even
 *	when no model counted a hold.
 *
 * Return: 1 when acknowledged, 0 when this file held nothing of it, or
 * -errno (-ETIMEDOUT: too late, the grace period ran out).
 */
int ctx_kdev_revoked(struct ortho_ctx *ctx, const uint8_t id[KDEV_ID_SIZE],
		     int from_kernel);

/* Return: 1 when the kernel has a revocation for this file (POLLPRI now),
 * else 0. */
int ctx_kdev_has_pending(struct ortho_ctx *ctx);

/**
 * ctx_kdev_pending() - the revoked shards this file holds (kdev_pending()).
 * Return: the number written to @ids, or -errno.
 */
int ctx_kdev_pending(struct ortho_ctx *ctx, uint8_t (*ids)[KDEV_ID_SIZE],
		     uint32_t room, uint32_t *total);

/* Return: the device's file descriptor (POLLPRI: a revocation), or -1. */
int ctx_kdev_fd(const struct ortho_ctx *ctx);

/**
 * ctx_kdev_wait() - wait for POLLPRI on the device, until ctx_kdev_wake().
 * Return: 1 (a revocation), 0 (timeout), -ECANCELED (woken) or -errno.
 */
int ctx_kdev_wait(struct ortho_ctx *ctx, int timeout_ms);
void ctx_kdev_wake(struct ortho_ctx *ctx);

/**
 * ctx_kdev_event_fd() - for ORTHO_CTX_EVENTS_POLLED: an epoll descriptor
 * that polls readable when @ev_fd is readable or the device has POLLPRI,
 * so that one descriptor tells the application of both kinds of notice.
 * Return: the descriptor (owned here), or -errno.
 */
int ctx_kdev_event_fd(struct ortho_ctx *ctx, int ev_fd);

#endif
