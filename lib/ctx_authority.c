// SPDX-License-Identifier: MIT
/*
 * The context's side of the key authority (orthod): finding and reaching
 * it, the list of open models a revocation must reach, and the notices.
 *
 * A revocation notice names a shard. Handling it means: in every open
 * model that holds the shard, mark it revoked, evict it (ops in flight
 * finish first; the residency manager wipes the slots) and wipe its key;
 * then acknowledge with 0, or with the first error. A notice for a shard
 * no model holds is acknowledged at once.
 *
 * Notices are read by a thread of the library's own, because one that
 * arrives while no request is in flight waits on the socket, and nothing
 * else would look at it. Without ORTHO_CTX_EVENTS_POLLED that thread
 * handles each notice itself. With it, the thread only queues the notice
 * and makes ctx->ev_fd readable; the application's thread handles the
 * queue in ortho_ctx_process_events(). Locking: lib/ctx.h.
 *
 * With the kernel module loaded, the context also holds /dev/ortho
 * (lib/ctx_kdev.h): keys come from there first, and a revocation arrives
 * there too, as POLLPRI on the file, possibly besides orthod's notice for
 * the same shard. Both go through revocation_handle(), which evicts once
 * and acknowledges on each channel. The notice thread waits on both (or on
 * the kernel alone once orthod has gone, since the kernel still kills a
 * holder that does not answer); in polled mode the application's event fd
 * covers both, and every op looks at both first.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "authority.h"
#include "ctx.h"
#include "ctx_kdev.h"
#include "log.h"
#include "model.h"

#define DEFAULT_SOCKET "/run/ortho/orthod.sock"
#define EVQ_MAX 65536u
#define KDEV_BATCH 16u		/* revoked ids read from the kernel at once */

/* ---- the list of open models ---- */

int ctx_model_add(struct ortho_ctx *ctx, struct ortho_model *m)
{
	struct ortho_model **l;
	unsigned int cap;
	int ret = 0;

	pthread_mutex_lock(&ctx->lock);
	if (ctx->models == ctx->model_cap) {
		cap = ctx->model_cap ? 2 * ctx->model_cap : 4;
		l = realloc(ctx->model_list, cap * sizeof(*l));
		if (l) {
			ctx->model_list = l;
			ctx->model_cap = cap;
		} else {
			ret = -ENOMEM;
		}
	}
	if (!ret)
		ctx->model_list[ctx->models++] = m;
	pthread_mutex_unlock(&ctx->lock);
	return ret;
}

void ctx_model_remove(struct ortho_ctx *ctx, struct ortho_model *m)
{
	unsigned int i;

	pthread_mutex_lock(&ctx->lock);
	for (i = 0; i < ctx->models; i++) {
		if (ctx->model_list[i] != m)
			continue;
		ctx->model_list[i] = ctx->model_list[--ctx->models];
		break;
	}
	pthread_mutex_unlock(&ctx->lock);
}

/* ---- handling a revocation ---- */

/*
 * Shard @id is revoked, by orthod's notice @n or (@n NULL) by the kernel:
 * evict and wipe it in every model, then acknowledge where it was held.
 * Repeating it is harmless: a shard revoked through both channels is
 * evicted once and acknowledged on both.
 */
static void revocation_handle(struct ortho_ctx *ctx, const uint8_t *id,
			      const struct authority_notice *n)
{
	unsigned int i, held = 0;
	char hex[33];
	int ret, kret = 0, status = 0;

	/* No open may be between a key request and its model's listing. */
	pthread_rwlock_wrlock(&ctx->open_lock);
	pthread_mutex_lock(&ctx->lock);
	for (i = 0; i < ctx->models; i++) {
		ret = model_authority_revoke(ctx->model_list[i], id);
		if (ret < 0 && !status)
			status = ret;
		held += ret > 0;
	}
	pthread_mutex_unlock(&ctx->lock);
	pthread_rwlock_unlock(&ctx->open_lock);

	proto_id_hex(id, hex);
	/* Wiped everywhere: the kernel hears it first, it may kill. */
	if (ctx->kdev)
		kret = ctx_kdev_revoked(ctx, id, !n);
	if (kret < 0)
		olog_warn(ctx, "shard %s: /dev/ortho: the acknowledgement failed: %s",
			  hex, ortho_strerror(kret));
	else if (kret && !n)
		olog_info(ctx, "shard %s: revocation by /dev/ortho acknowledged "
			  "(%u model%s held it)", hex, held,
			  held == 1 ? "" : "s");
	if (!n)
		return;
	ret = authority_ack(ctx->auth, n, status);
	if (ret)
		olog_warn(ctx, "shard %s: revocation %llu: the acknowledgement "
			  "could not be sent: %s", hex,
			  (unsigned long long)n->revoke_id,
			  ortho_strerror(ret));
	else
		olog_info(ctx, "shard %s: revocation %llu acknowledged (%u "
			  "model%s held it)%s", hex,
			  (unsigned long long)n->revoke_id, held,
			  held == 1 ? "" : "s", status ? " with an error" : "");
}

static void notice_handle(struct ortho_ctx *ctx,
			  const struct authority_notice *n)
{
	revocation_handle(ctx, n->id, n);
}

/*
 * Every shard the kernel says this file holds revoked: handle each; its
 * acknowledgement takes it off the kernel's list (and POLLPRI with it).
 * Return: how many were handled, or -errno.
 */
static int kdev_events(struct ortho_ctx *ctx)
{
	uint8_t ids[KDEV_BATCH][KDEV_ID_SIZE];
	uint32_t total;
	int n, i, done = 0, rounds;

	/* Bounded: an id whose ack fails would stay on the list. */
	for (rounds = 0; rounds < 64; rounds++) {
		n = ctx_kdev_pending(ctx, ids, KDEV_BATCH, &total);
		if (n <= 0)
			return n < 0 && !done ? n : done;
		for (i = 0; i < n; i++)
			revocation_handle(ctx, ids[i], NULL);
		done += n;
		if (total <= (uint32_t)n)
			break;
	}
	return done;
}

static int evq_push(struct ortho_ctx *ctx, const struct authority_notice *n)
{
	uint64_t one = 1;
	size_t cap;
	void *p;
	int ret = 0;

	pthread_mutex_lock(&ctx->evq_lock);
	if (ctx->evq_n == ctx->evq_cap) {
		cap = ctx->evq_cap ? 2 * ctx->evq_cap : 16;
		p = NULL;
		if (cap <= EVQ_MAX)
			p = realloc(ctx->evq, cap * sizeof(*ctx->evq));
		if (p) {
			ctx->evq = p;
			ctx->evq_cap = cap;
		} else {
			ret = -ENOMEM;
		}
	}
	if (!ret)
		ctx->evq[ctx->evq_n++] = *n;
	pthread_mutex_unlock(&ctx->evq_lock);
	if (!ret && write(ctx->ev_fd, &one, sizeof(one)) < 0)
		ret = -errno;
	return ret;
}

static int evq_pop(struct ortho_ctx *ctx, struct authority_notice *n)
{
	int got = 0;

	pthread_mutex_lock(&ctx->evq_lock);
	if (ctx->evq_n) {
		*n = ctx->evq[0];
		memmove(ctx->evq, ctx->evq + 1,
			--ctx->evq_n * sizeof(*ctx->evq));
		got = 1;
	}
	pthread_mutex_unlock(&ctx->evq_lock);
	return got;
}

/* The daemon is gone: what is held stays usable, nothing can revoke it. */
static void auth_lost(struct ortho_ctx *ctx, int err)
{
	uint64_t one = 1;

	olog_warn(ctx, "%s: lost the key authority (%s): the shards in use "
		  "stay in use, no new key can be had", ctx->auth_addr,
		  ortho_strerror(err));
	pthread_mutex_lock(&ctx->evq_lock);
	ctx->auth_lost = 1;
	pthread_mutex_unlock(&ctx->evq_lock);
	/* A polling application learns of it from process_events(). */
	if (ctx->ev_fd >= 0 && write(ctx->ev_fd, &one, sizeof(one)) < 0)
		olog_dbg(ctx, "event fd: %s", ortho_strerror(-errno));
}

/* Wait for the kernel alone (orthod gone): 1, or -ECANCELED, -errno. */
static int wait_kdev_only(struct ortho_ctx *ctx)
{
	int ret;

	do {
		ret = ctx_kdev_wait(ctx, -1);
	} while (ret == -EINTR || !ret);
	return ret < 0 ? ret : AUTHORITY_EVENT_FD;
}

static void *ev_main(void *arg)
{
	struct ortho_ctx *ctx = arg;
	int polled = !!(ctx->flags & ORTHO_CTX_EVENTS_POLLED);
	/* In polled mode the application's event fd covers the kernel. */
	int kfd = polled ? -1 : ctx_kdev_fd(ctx);
	struct timespec pause = { 0, 10000000 };
	struct authority_notice n;
	int ret, lost = 0;

	for (;;) {
		if (!lost)
			ret = authority_wait_event(ctx->auth, kfd, -1, &n);
		else if (kfd >= 0)
			ret = wait_kdev_only(ctx);
		else
			break;
		if (ret == -ECANCELED)
			break;
		if (ret == -EINTR || !ret)
			continue;
		if (ret == AUTHORITY_EVENT_FD) {
			/* Nothing handled with POLLPRI up: do not spin. */
			if (kdev_events(ctx) <= 0)
				nanosleep(&pause, NULL);
			continue;
		}
		if (ret < 0) {
			if (lost)
				break;
			auth_lost(ctx, ret);
			lost = 1;
			continue;
		}
		if (!polled) {
			notice_handle(ctx, &n);
			authority_notice_done(ctx->auth);
			continue;
		}
		ret = evq_push(ctx, &n);
		if (ret) {
			/* Not dropped silently: the daemon hears of it. */
			olog_err(ctx, "revocation notice: cannot queue it: %s",
				 ortho_strerror(ret));
			authority_ack(ctx->auth, &n, ret);
		}
		authority_notice_done(ctx->auth);
	}
	return NULL;
}

/*
 * Before an op: a notice that has reached this process is handled first,
 * so that the op runs without the shard. This covers a process that was
 * stopped (SIGSTOP) while the notice arrived: on SIGCONT its threads race,
 * and the op must not win. In polled mode too: the application learns of
 * the notice from the event fd as before, but an op never waits for it.
 */
void ctx_authority_sync(struct ortho_ctx *ctx)
{
	struct authority_notice n;

	while (authority_take_pending(ctx->auth, &n) == 1) {
		notice_handle(ctx, &n);
		authority_notice_done(ctx->auth);
	}
	/* One the thread took is handled, or queued, by now. */
	authority_wait_idle(ctx->auth);
	if (ctx->flags & ORTHO_CTX_EVENTS_POLLED)
		while (evq_pop(ctx, &n))
			notice_handle(ctx, &n);
	/*
	 * The kernel's revocations: POLLPRI stays up until the holder's
	 * acknowledgement, which follows the eviction, so when it is down
	 * every shard the kernel revoked is gone from here. One the thread
	 * is handling is handled again (it waits for the same locks).
	 */
	if (ctx->kdev && ctx_kdev_has_pending(ctx))
		kdev_events(ctx);
}

ORTHO_API int ortho_ctx_get_event_fd(struct ortho_ctx *ctx)
{
	if (!ctx)
		return -EINVAL;
	if (!ctx->auth)
		return -ENOTCONN;
	/* Without the flag the library's thread handles them: no events. */
	if (!(ctx->flags & ORTHO_CTX_EVENTS_POLLED))
		return -EINVAL;
	/* With /dev/ortho: an epoll fd over the eventfd and the device. */
	if (ctx->kdev)
		return ctx_kdev_event_fd(ctx, ctx->ev_fd);
	return ctx->ev_fd;
}

ORTHO_API int ortho_ctx_process_events(struct ortho_ctx *ctx)
{
	struct authority_notice n;
	uint64_t cnt;
	int done = 0, lost, ret;

	if (!ctx)
		return -EINVAL;
	if (!ctx->auth)
		return -ENOTCONN;
	if (!(ctx->flags & ORTHO_CTX_EVENTS_POLLED))
		return -EINVAL;
	/* Reset first: a notice queued from here on pokes it again. */
	if (read(ctx->ev_fd, &cnt, sizeof(cnt)) < 0 && errno != EAGAIN)
		return -errno;
	while (evq_pop(ctx, &n)) {
		notice_handle(ctx, &n);
		done++;
	}
	if (ctx->kdev) {
		ret = kdev_events(ctx);
		if (ret > 0)
			done += ret;
	}
	pthread_mutex_lock(&ctx->evq_lock);
	lost = ctx->auth_lost;
	pthread_mutex_unlock(&ctx->evq_lock);
	/* The kernel still revokes without orthod: keep polling then. */
	return done || !lost || ctx->kdev ? done : -ECONNRESET;
}

/* ---- finding and reaching the authority ---- */

/* Return: 1 with @buf set, 0 for none, -EINVAL for a bad address. */
static int auth_resolve(struct ortho_ctx *ctx, const char *addr, char *buf,
			size_t len)
{
	const char *src = "the authority option";

	if (!addr || !*addr) {
		addr = secure_getenv("ORTHO_AUTHORITY");
		src = "ORTHO_AUTHORITY";
	}
	if (!addr || !*addr) {
		if (access(DEFAULT_SOCKET, F_OK))
			return 0;
		addr = "unix:" DEFAULT_SOCKET;
	}
	if (!strcmp(addr, "none"))
		return 0;
	if ((strncmp(addr, "unix:", 5) && addr[0] != '/') ||
	    strlen(addr) >= len || !addr[addr[0] == '/' ? 1 : 5]) {
		olog_err(ctx, "%s \"%s\": not an authority address (want "
			 "unix:PATH or none)", src, addr);
		return -EINVAL;
	}
	strcpy(buf, addr);
	return 1;
}

static int ev_start(struct ortho_ctx *ctx)
{
	int ret;

	if (ctx->flags & ORTHO_CTX_EVENTS_POLLED) {
		ctx->ev_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (ctx->ev_fd < 0)
			return -errno;
	}
	ret = -pthread_create(&ctx->ev_thread, NULL, ev_main, ctx);
	if (ret) {
		olog_err(ctx, "cannot start the revocation thread: %s",
			 ortho_strerror(ret));
		return ret;
	}
	ctx->ev_started = 1;
	return 0;
}

int ctx_authority_start(struct ortho_ctx *ctx, const char *addr)
{
	int required = !!(ctx->flags & ORTHO_CTX_AUTHORITY_REQUIRED);
	ortho_log_fn fn = ctx->log_fn;
	int ret;

	ret = auth_resolve(ctx, addr, ctx->auth_addr, sizeof(ctx->auth_addr));
	if (ret <= 0) {
		if (!ret && required) {
			olog_err(ctx, "no key authority (none given, no "
				 "ORTHO_AUTHORITY, no %s)", DEFAULT_SOCKET);
			return -ENOTCONN;
		}
		return ret;
	}
	/* Not required: one warning below says it all. */
	if (!required)
		ctx->log_fn = NULL;
	ret = authority_connect(ctx, ctx->auth_addr, &ctx->auth);
	ctx->log_fn = fn;
	if (ret && required)
		return ret;
	if (ret) {
		olog_warn(ctx, "%s: cannot reach the key authority (%s): going "
			  "on without it", ctx->auth_addr, ortho_strerror(ret));
		return 0;
	}
	/* Keys from the kernel first, when the module is loaded. */
	ret = ctx_kdev_start(ctx);
	if (!ret)
		ret = ev_start(ctx);
	if (ret) {
		ctx_kdev_stop(ctx);
		authority_close(ctx->auth);
		ctx->auth = NULL;
	}
	return ret;
}

void ctx_authority_stop(struct ortho_ctx *ctx)
{
	struct authority_notice n;

	if (ctx->ev_started) {
		/* It waits on orthod's socket, or on /dev/ortho alone. */
		authority_wake(ctx->auth);
		ctx_kdev_wake(ctx);
		pthread_join(ctx->ev_thread, NULL);
		ctx->ev_started = 0;
	}
	/* Queued notices with no model left: nothing is held any more. */
	while (ctx->auth && evq_pop(ctx, &n))
		authority_ack(ctx->auth, &n, 0);
	authority_close(ctx->auth);
	ctx->auth = NULL;
	ctx_kdev_stop(ctx);
	if (ctx->ev_fd >= 0)
		close(ctx->ev_fd);
	ctx->ev_fd = -1;
	free(ctx->evq);
	ctx->evq = NULL;
	ctx->evq_n = ctx->evq_cap = 0;
}
