/* SPDX-License-Identifier: MIT */
/*
 * The authority client: a connection to orthod (daemon/PROTOCOL.md).
 *
 * The daemon knows the peer from its socket credentials, so there is no
 * login: connect, then ask for keys, report what is resident, and answer
 * revocation notices. Notices arrive at any time, also in the middle of a
 * request; they are queued and handed out by authority_wait_notice().
 *
 * Threads: any number may call these functions at once. Requests are
 * serialised on the socket (one round trip at a time); a thread waiting for
 * notices does not hold up requests. The admin calls (ortho-admin.h) use
 * the same connection code.
 */
#ifndef ORTHO_AUTHORITY_H
#define ORTHO_AUTHORITY_H

#include <stdint.h>

#include "proto.h"

struct ortho_ctx;
struct authority;

/* Round trips other than REVOKE give up after this long. */
#define AUTHORITY_TIMEOUT_MS 30000

struct authority_key {
	uint8_t id[PROTO_ID_SIZE];
	uint8_t key[PROTO_KEY_SIZE];	/* the caller wipes it */
	uint32_t layer;
	char label[PROTO_LABEL_MAX + 1];
};

struct authority_notice {
	uint8_t id[PROTO_ID_SIZE];	/* the revoked shard */
	uint64_t revoke_id;
	uint32_t deadline_ms;		/* 0: already past (a late notice) */
};

/**
 * authority_connect() - connect and say hello.
 * @ctx: for messages (may be NULL).
 * @addr: "unix:PATH" or a plain path.
 * @out: the connection.
 *
 * Return: 0, or -ENOENT / -ECONNREFUSED (no daemon), -EPROTO (not orthod),
 * -EPROTONOSUPPORT (another protocol version), -errno.
 */
int authority_connect(struct ortho_ctx *ctx, const char *addr,
		      struct authority **out);

/* authority_close() - hang up and free. @a may be NULL. */
void authority_close(struct authority *a);

/**
 * authority_is_admin() - whether the daemon counts this peer as an admin.
 * Return: 1 or 0.
 */
int authority_is_admin(const struct authority *a);

/**
 * authority_get_key() - ask for a shard's key.
 * Return: 0, or -EACCES (not granted), -EKEYREVOKED, -ENOKEY (unknown
 * shard), -ECONNRESET (the daemon went away), -errno.
 */
int authority_get_key(struct authority *a, const uint8_t id[PROTO_ID_SIZE],
		      struct authority_key *out);

/**
 * authority_hold() - report a shard resident on @device (replaces an
 * earlier report for the same shard and device).
 * Return: 0 or -errno.
 */
int authority_hold(struct authority *a, const uint8_t id[PROTO_ID_SIZE],
		   const char *device, uint64_t bytes, uint64_t since_ns);

/**
 * authority_release() - report a shard gone from @device ("" or NULL: from
 * every device); with @key_wiped, the key copy is gone as well.
 * Return: 0 or -errno.
 */
int authority_release(struct authority *a, const uint8_t id[PROTO_ID_SIZE],
		      const char *device, int key_wiped);

/**
 * authority_wait_notice() - wait for a revocation notice.
 * @timeout_ms: -1 waits for ever; 0 only looks.
 * Return: 1 with @n filled in, 0 on timeout, -ECANCELED after
 * authority_wake(), -ECONNRESET when the daemon hung up, -errno.
 */
int authority_wait_notice(struct authority *a, int timeout_ms,
			  struct authority_notice *n);

/* authority_wait_event(): @xfd has POLLPRI (or an error). */
#define AUTHORITY_EVENT_FD 2

/**
 * authority_wait_event() - authority_wait_notice(), also watching @xfd
 * for POLLPRI (the kernel module's device: a revocation there).
 * @xfd: a file descriptor, or -1.
 * Return: 1 with @n filled in (notices go first), AUTHORITY_EVENT_FD,
 * or as authority_wait_notice().
 */
int authority_wait_event(struct authority *a, int xfd, int timeout_ms,
			 struct authority_notice *n);

/**
 * authority_take_pending() - without waiting, read what the daemon has
 * sent and take the first queued notice.
 * Return: 1 with @n filled in, 0 when none is waiting.
 *
 * Every notice taken, here or by authority_wait_notice(), must be followed
 * by authority_notice_done() once it is handled (or handed on), so that
 * authority_wait_idle() can tell when none is half-way.
 */
int authority_take_pending(struct authority *a, struct authority_notice *n);
void authority_notice_done(struct authority *a);
/* authority_wait_idle() - wait until every notice taken is done. */
void authority_wait_idle(struct authority *a);

/* authority_wake() - make a waiting authority_wait_notice() return -ECANCELED. */
void authority_wake(struct authority *a);

/**
 * authority_ack() - answer a notice: @status 0 once the key and every
 * device and staging copy of the shard are wiped, else a negative errno.
 * Return: 0 or -errno.
 */
int authority_ack(struct authority *a, const struct authority_notice *n,
		  int status);

/* ---- the transport, shared with the admin calls ---- */

/* A received reply; @payload is wiped and freed by authority_reply_free(). */
struct authority_reply {
	struct proto_hdr h;
	uint8_t *payload;
	size_t cap;
	int secret;			/* payload in secmem */
};

/**
 * authority_call() - send the message in @b (begun with proto_begin() and
 * request id 0; the id is assigned here) and wait @timeout_ms for its reply.
 * An ERROR reply becomes its errno (the message is logged); a reply of
 * another type than @expect is -EPROTO.
 * Return: 0 with @r filled in, or -errno.
 */
int authority_call(struct authority *a, struct pbuf *b, uint16_t expect,
		   int timeout_ms, struct authority_reply *r);
/* Wipe and free a reply's payload. */
void authority_reply_free(struct authority_reply *r);
/* Return: the daemon's text for the last ERROR reply ("" if none). */
const char *authority_last_error(struct authority *a);
/* Return: the context the connection logs to (may be NULL). */
struct ortho_ctx *authority_ctx(const struct authority *a);

#endif /* ORTHO_AUTHORITY_H */
