// SPDX-License-Identifier: MIT
/*
 * A context's /dev/ortho: see ctx_kdev.h. The keys themselves never pass
 * through here but on their way from kdev_get_key() to the caller's
 * secmem; this file counts holds and bytes.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "ctx.h"
#include "ctx_kdev.h"
#include "log.h"

struct ckd_hold {
	uint8_t id[KDEV_ID_SIZE];
	unsigned int refs;		/* models holding the key */
	uint64_t bytes;			/* their resident bytes, summed */
};

struct ctx_kdev {
	struct kdev *kd;
	pthread_mutex_t lock;
	struct ckd_hold *v;		/* ->lock */
	size_t n, cap;			/* ->lock */
	int wake_fd;			/* ends ctx_kdev_wait() */
	int ep_fd;			/* ctx_kdev_event_fd(), or -1 */
};

static struct ckd_hold *hold_find(struct ctx_kdev *k, const uint8_t *id)
{
	size_t i;

	for (i = 0; i < k->n; i++)
		if (!memcmp(k->v[i].id, id, KDEV_ID_SIZE))
			return &k->v[i];
	return NULL;
}

static void hold_remove(struct ctx_kdev *k, struct ckd_hold *h)
{
	*h = k->v[--k->n];
}

static struct ckd_hold *hold_add(struct ctx_kdev *k, const uint8_t *id)
{
	struct ckd_hold *h = hold_find(k, id);

	if (h)
		return h;
	if (k->n == k->cap) {
		size_t cap = k->cap ? 2 * k->cap : 16;

		h = realloc(k->v, cap * sizeof(*h));
		if (!h)
			return NULL;
		k->v = h;
		k->cap = cap;
	}
	h = &k->v[k->n++];
	memset(h, 0, sizeof(*h));
	memcpy(h->id, id, KDEV_ID_SIZE);
	return h;
}

int ctx_kdev_start(struct ortho_ctx *ctx)
{
	const char *path = secure_getenv("ORTHO_KDEV");
	struct ctx_kdev *k;
	int ret;

	if (path && !strcmp(path, "none"))
		return 0;
	if (!kdev_present(path))
		return 0;
	k = calloc(1, sizeof(*k));
	if (!k)
		return -ENOMEM;
	k->ep_fd = -1;
	k->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (k->wake_fd < 0) {
		ret = -errno;
		free(k);
		return ret;
	}
	/* kdev_open() says why it cannot; the keys then come from orthod. */
	ret = kdev_open(ctx, path, &k->kd);
	if (ret) {
		close(k->wake_fd);
		free(k);
		return ret == -ENOMEM ? ret : 0;
	}
	pthread_mutex_init(&k->lock, NULL);
	ctx->kdev = k;
	return 0;
}

void ctx_kdev_stop(struct ortho_ctx *ctx)
{
	struct ctx_kdev *k = ctx->kdev;

	if (!k)
		return;
	/* Holds still counted (none, normally) end as "closed". */
	kdev_close(k->kd);
	close(k->wake_fd);
	if (k->ep_fd >= 0)
		close(k->ep_fd);
	pthread_mutex_destroy(&k->lock);
	free(k->v);
	free(k);
	ctx->kdev = NULL;
}

int ctx_kdev_get_key(struct ortho_ctx *ctx, const uint8_t id[KDEV_ID_SIZE],
		     uint8_t *key)
{
	struct ctx_kdev *k = ctx->kdev;
	struct ckd_hold *h;
	int ret;

	pthread_mutex_lock(&k->lock);
	ret = kdev_get_key(k->kd, id, key, NULL, NULL);
	if (!ret) {
		h = hold_add(k, id);
		if (h) {
			h->refs++;
		} else {
			/* Not counted, so not kept: the hold ends here. */
			explicit_bzero(key, KDEV_KEY_SIZE);
			if (!hold_find(k, id))
				kdev_ack(k->kd, id);
			ret = -ENOMEM;
		}
	}
	pthread_mutex_unlock(&k->lock);
	return ret;
}

void ctx_kdev_put(struct ortho_ctx *ctx, const uint8_t id[KDEV_ID_SIZE])
{
	struct ctx_kdev *k = ctx->kdev;
	struct ckd_hold *h;
	int ret;

	pthread_mutex_lock(&k->lock);
	h = hold_find(k, id);
	if (h && !--h->refs) {
		hold_remove(k, h);
		ret = kdev_ack(k->kd, id);
		if (ret && ret != -ENOENT && ret != -ETIMEDOUT)
			olog_dbg(ctx, "/dev/ortho: ending a hold: %s",
				 ortho_strerror(ret));
	}
	pthread_mutex_unlock(&k->lock);
}

void ctx_kdev_resident(struct ortho_ctx *ctx, const uint8_t id[KDEV_ID_SIZE],
		       uint64_t was, uint64_t now)
{
	struct ctx_kdev *k = ctx->kdev;
	struct ckd_hold *h;
	int ret;

	pthread_mutex_lock(&k->lock);
	h = hold_find(k, id);
	if (h) {
		h->bytes = h->bytes - was + now;
		ret = kdev_resident(k->kd, id, h->bytes);
		/* After a revocation only 0 is taken: the eviction follows. */
		if (ret)
			olog_dbg(ctx, "/dev/ortho: resident report: %s",
				 ortho_strerror(ret));
	}
	pthread_mutex_unlock(&k->lock);
}

int ctx_kdev_revoked(struct ortho_ctx *ctx, const uint8_t id[KDEV_ID_SIZE],
		     int from_kernel)
{
	struct ctx_kdev *k = ctx->kdev;
	struct ckd_hold *h;
	int ret = 0;

	pthread_mutex_lock(&k->lock);
	h = hold_find(k, id);
	if (h)
		hold_remove(k, h);
	if (h || from_kernel) {
		ret = kdev_ack(k->kd, id);
		if (!ret)
			ret = 1;
		else if (ret == -ENOENT || ret == -ENOKEY)
			ret = 0;
	}
	pthread_mutex_unlock(&k->lock);
	return ret;
}

int ctx_kdev_has_pending(struct ortho_ctx *ctx)
{
	struct pollfd p = { .fd = kdev_fd(ctx->kdev->kd), .events = POLLPRI };

	return poll(&p, 1, 0) == 1 && (p.revents & POLLPRI);
}

int ctx_kdev_pending(struct ortho_ctx *ctx, uint8_t (*ids)[KDEV_ID_SIZE],
		     uint32_t room, uint32_t *total)
{
	return kdev_pending(ctx->kdev->kd, ids, room, total);
}

int ctx_kdev_fd(const struct ortho_ctx *ctx)
{
	return ctx->kdev ? kdev_fd(ctx->kdev->kd) : -1;
}

int ctx_kdev_wait(struct ortho_ctx *ctx, int timeout_ms)
{
	struct ctx_kdev *k = ctx->kdev;
	uint64_t cnt;
	int ret;

	ret = kdev_wait_revoke(k->kd, k->wake_fd, timeout_ms);
	if (ret == -ECANCELED && read(k->wake_fd, &cnt, sizeof(cnt)) < 0)
		olog_dbg(ctx, "/dev/ortho: wake: %s", ortho_strerror(-errno));
	return ret;
}

void ctx_kdev_wake(struct ortho_ctx *ctx)
{
	uint64_t one = 1;

	if (ctx->kdev && write(ctx->kdev->wake_fd, &one, sizeof(one)) < 0)
		olog_dbg(ctx, "/dev/ortho: wake: %s", ortho_strerror(-errno));
}

int ctx_kdev_event_fd(struct ortho_ctx *ctx, int ev_fd)
{
	struct ctx_kdev *k = ctx->kdev;
	struct epoll_event ev = { .events = EPOLLIN };
	struct epoll_event pri = { .events = EPOLLPRI };
	int fd;

	if (k->ep_fd >= 0)
		return k->ep_fd;
	fd = epoll_create1(EPOLL_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (epoll_ctl(fd, EPOLL_CTL_ADD, ev_fd, &ev) ||
	    epoll_ctl(fd, EPOLL_CTL_ADD, kdev_fd(k->kd), &pri)) {
		int ret = -errno;

		close(fd);
		return ret;
	}
	k->ep_fd = fd;
	return fd;
}
