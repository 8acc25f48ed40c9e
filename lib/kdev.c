// SPDX-License-Identifier: MIT
/*
 * The library's client of /dev/ortho: see kdev.h and kmod/README.md.
 *
 * The only secret that passes through here is a key on its way from the
 * kernel to the caller. The ioctl argument that carries it lives in its
 * own secmem mapping (out of core dumps, wiped on fork) and is wiped as
 * soon as the key is copied out, so no stack frame or heap block of ours
 * ever holds it.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../kmod/uapi/ortho.h"
#include "kdev.h"
#include "log.h"
#include "secmem.h"

_Static_assert(KDEV_ID_SIZE == ORTHO_IOC_ID_SIZE, "shard id size");
_Static_assert(KDEV_KEY_SIZE == ORTHO_IOC_KEY_SIZE, "key size");
_Static_assert(KDEV_LABEL_MAX == ORTHO_IOC_LABEL_MAX, "label size");
_Static_assert(KDEV_KEY_LIVE == ORTHO_IOC_KEY_LIVE &&
	       KDEV_KEY_REVOKED == ORTHO_IOC_KEY_REVOKED, "key states");

struct kdev {
	int fd;
	struct ortho_ctx *ctx;
};

static const char *kdev_path(const char *path)
{
	return path && *path ? path : KDEV_DEFAULT_PATH;
}

int kdev_present(const char *path)
{
	struct stat st;

	return !stat(kdev_path(path), &st) && S_ISCHR(st.st_mode);
}

static int kdev_ioctl(const struct kdev *kd, unsigned long cmd, void *arg)
{
	int ret;

	do {
		ret = ioctl(kd->fd, cmd, arg);
	} while (ret < 0 && errno == EINTR);
	return ret < 0 ? -errno : 0;
}

int kdev_open(struct ortho_ctx *ctx, const char *path, struct kdev **out)
{
	struct ortho_ioc_pending p = { .size = sizeof(p) };
	const char *dev = kdev_path(path);
	struct kdev *kd;
	int ret;

	*out = NULL;
	kd = calloc(1, sizeof(*kd));
	if (!kd)
		return -ENOMEM;
	kd->ctx = ctx;
	kd->fd = open(dev, O_RDWR | O_CLOEXEC);
	if (kd->fd < 0) {
		ret = -errno;
		if (ret != -ENOENT)
			olog_err(ctx, "%s: cannot open: %s", dev, strerror(-ret));
		free(kd);
		return ret;
	}
	/*
	 * A harmless command that only /dev/ortho answers: anything else at
	 * that path (a stale node, a test's /dev/null) says ENOTTY or worse.
	 */
	ret = kdev_ioctl(kd, ORTHO_IOC_PENDING, &p);
	if (ret) {
		olog_err(ctx, "%s is not the ortho module's device: %s", dev,
			 strerror(-ret));
		close(kd->fd);
		free(kd);
		return ret == -ENOTTY || ret == -EINVAL ? -ENOTTY : ret;
	}
	olog_dbg(ctx, "%s: kernel key authority, revoke generation %llu", dev,
		 (unsigned long long)p.generation);
	*out = kd;
	return 0;
}

void kdev_close(struct kdev *kd)
{
	if (!kd)
		return;
	close(kd->fd);
	free(kd);
}

int kdev_fd(const struct kdev *kd)
{
	return kd->fd;
}

int kdev_get_key(struct kdev *kd, const uint8_t id[KDEV_ID_SIZE],
		 uint8_t *key, char *label, uint64_t *generation)
{
	struct ortho_ioc_get *g;
	int ret;

	g = secmem_alloc(sizeof(*g));
	if (!g)
		return -ENOMEM;
	g->size = sizeof(*g);
	memcpy(g->id, id, KDEV_ID_SIZE);
	ret = kdev_ioctl(kd, ORTHO_IOC_GET, g);
	if (!ret) {
		memcpy(key, g->key, KDEV_KEY_SIZE);
		if (label) {
			memcpy(label, g->label, KDEV_LABEL_MAX);
			label[KDEV_LABEL_MAX - 1] = 0;
		}
		if (generation)
			*generation = g->generation;
	} else if (ret != -ENOKEY && ret != -EACCES && ret != -EKEYREVOKED) {
		olog_err(kd->ctx, "/dev/ortho: fetching a key: %s",
			 strerror(-ret));
	}
	secmem_free(g, sizeof(*g));
	return ret;
}

int kdev_ack(struct kdev *kd, const uint8_t id[KDEV_ID_SIZE])
{
	struct ortho_ioc_ack a = { .size = sizeof(a) };
	int ret;

	memcpy(a.id, id, KDEV_ID_SIZE);
	ret = kdev_ioctl(kd, ORTHO_IOC_ACK, &a);
	if (ret == -ETIMEDOUT)
		olog_err(kd->ctx, "/dev/ortho: acknowledged a revocation after its grace period");
	return ret;
}

int kdev_resident(struct kdev *kd, const uint8_t id[KDEV_ID_SIZE],
		  uint64_t bytes)
{
	struct ortho_ioc_resident r = { .size = sizeof(r), .bytes = bytes };

	memcpy(r.id, id, KDEV_ID_SIZE);
	return kdev_ioctl(kd, ORTHO_IOC_RESIDENT, &r);
}

static int64_t kdev_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int kdev_wait_revoke(struct kdev *kd, int wake_fd, int timeout_ms)
{
	struct pollfd p[2] = {
		{ .fd = kd->fd, .events = POLLPRI },
		{ .fd = wake_fd, .events = POLLIN },
	};
	int64_t end = timeout_ms > 0 ? kdev_now_ms() + timeout_ms : 0;
	int left = timeout_ms, n;

	for (;;) {
		n = poll(p, wake_fd >= 0 ? 2 : 1, left);
		if (n > 0)
			break;
		if (!n)
			return 0;
		if (errno != EINTR)
			return -errno;
		/* A signal cut the wait short: wait out the rest. */
		if (timeout_ms > 0) {
			left = (int)(end - kdev_now_ms());
			if (left < 0)
				left = 0;
		}
	}
	if (p[0].revents & POLLPRI)
		return 1;
	if (p[0].revents & (POLLERR | POLLNVAL))
		return -EBADF;
	return -ECANCELED;
}

int kdev_pending(struct kdev *kd, uint8_t (*ids)[KDEV_ID_SIZE], uint32_t room,
		 uint32_t *total)
{
	struct ortho_ioc_pending p = { .size = sizeof(p) };
	int ret;

	p.ids = (uintptr_t)ids;
	p.count = ids ? room : 0;
	ret = kdev_ioctl(kd, ORTHO_IOC_PENDING, &p);
	if (ret)
		return ret;
	if (total)
		*total = p.total;
	return (int)p.count;
}

int kdev_status(struct kdev *kd, const uint8_t id[KDEV_ID_SIZE],
		struct kdev_shard_status *st)
{
	struct ortho_ioc_status s = { .size = sizeof(s) };
	int ret;

	memcpy(s.id, id, KDEV_ID_SIZE);
	ret = kdev_ioctl(kd, ORTHO_IOC_STATUS, &s);
	if (ret)
		return ret;
	memset(st, 0, sizeof(*st));
	st->state = s.state;
	st->grace_ms = s.grace_ms;
	st->generation = s.generation;
	st->current_generation = s.current_generation;
	st->revoked_ns = s.revoked_ns;
	st->done_ns = s.done_ns;
	st->holders = s.counts.holders;
	st->acked = s.counts.acked;
	st->killed = s.counts.killed;
	st->closed = s.counts.closed;
	memcpy(st->label, s.label, sizeof(st->label));
	st->label[KDEV_LABEL_MAX - 1] = 0;
	return 0;
}
