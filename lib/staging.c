// SPDX-License-Identifier: MIT
/*
 * Staging buffers of one streaming lane and their io_uring. The buffers are
 * secmem (anonymous, mlocked, MADV_DONTDUMP, wiped before unmap); they are
 * registered with the ring as fixed buffers and the shard file goes into a
 * registered slot, which saves the kernel a page-pinning walk and a file
 * lookup per read. Locking and registering count against RLIMIT_MEMLOCK
 * (unless CAP_IPC_LOCK): what failed is recorded in struct staging, the
 * lane's owner warns, and reads go on into unlocked, unregistered buffers.
 * Only liburing 2.3 calls are used (Debian 12).
 *
 * They are not registered with the CUDA driver: they hold ciphertext,
 * which the CPU decrypts into the residency slot, and the slot is what the
 * backend copies to the device (lib/model_residency.c pins it with
 * backend_host_register()). Pinned here, they would be pages no device
 * copy ever reads.
 *
 * A lane is used by one thread at a time (lib/stream.c hands them out), so
 * nothing here locks.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "log.h"
#include "secmem.h"
#include "staging.h"
#include "stream.h"

void (*ortho_test_unmap_hook)(const void *p, size_t len);

#ifdef HAVE_URING
static void register_bufs(struct staging *st)
{
	struct iovec *iov = calloc(st->nbuf, sizeof(*iov));
	unsigned int b;
	int ret;

	if (!iov) {
		st->bufs_err = -ENOMEM;
		return;
	}
	for (b = 0; b < st->nbuf; b++) {
		iov[b].iov_base = staging_buf(st, b);
		iov[b].iov_len = st->buf_size;
	}
	/*
	 * Pinning counts against RLIMIT_MEMLOCK (without CAP_IPC_LOCK):
	 * without fixed buffers the reads are plain IORING_OP_READ.
	 */
	ret = io_uring_register_buffers(&st->ring, iov, st->nbuf);
	free(iov);
	if (ret) {
		st->bufs_err = ret;
		return;
	}
	st->fixed_bufs = 1;
}

static void register_file_slot(struct staging *st)
{
	int none = -1;
	int ret;

	ret = io_uring_register_files(&st->ring, &none, 1);
	if (ret) {
		st->file_err = ret;
		return;
	}
	st->fixed_file = 1;
}

static int ring_setup(struct ortho_ctx *ctx, struct staging *st,
		      unsigned int qd)
{
	int ret = io_uring_queue_init(qd, &st->ring, 0);

	if (ret)
		return ret;
	st->have_ring = 1;
	register_bufs(st);
	register_file_slot(st);
	return 0;
}
#else
static int ring_setup(struct ortho_ctx *ctx, struct staging *st,
		      unsigned int qd)
{
	return -EOPNOTSUPP;
}
#endif

int staging_init(struct ortho_ctx *ctx, struct staging *st, unsigned int nbuf,
		 size_t buf_size, unsigned int qd, int want_ring,
		 int *ring_err)
{
	memset(st, 0, sizeof(*st));
	*ring_err = -EOPNOTSUPP;
	st->nbuf = nbuf;
	st->buf_size = buf_size;
	st->used = calloc(nbuf, sizeof(*st->used));
	st->mem = secmem_alloc_lock((size_t)nbuf * buf_size, &st->lock_err);
	if (!st->used || !st->mem) {
		staging_fini(st);
		return -ENOMEM;
	}
	st->locked = !st->lock_err;
	if (want_ring)
		*ring_err = ring_setup(ctx, st, qd);
	return 0;
}

void staging_wipe(struct staging *st)
{
	unsigned int b;

	for (b = 0; b < st->nbuf; b++) {
		secmem_wipe(staging_buf(st, b), st->used[b]);
		st->used[b] = 0;
	}
}

void staging_fini(struct staging *st)
{
	size_t len = (size_t)st->nbuf * st->buf_size;

#ifdef HAVE_URING
	if (st->have_ring)
		io_uring_queue_exit(&st->ring);
#endif
	st->have_ring = 0;
	if (st->mem) {
		secmem_wipe(st->mem, len);
		if (ortho_test_unmap_hook)
			ortho_test_unmap_hook(st->mem, len);
		secmem_free(st->mem, len);
	}
	free(st->used);
	memset(st, 0, sizeof(*st));
}

#ifdef HAVE_URING
int staging_set_file(struct staging *st, int fd)
{
	int ret;

	st->file_set = 0;
	if (!st->have_ring || !st->fixed_file)
		return -EOPNOTSUPP;
	ret = io_uring_register_files_update(&st->ring, 0, &fd, 1);
	if (ret < 0)
		return ret;
	st->file_set = fd >= 0;
	return 0;
}

int staging_queue_read(struct staging *st, int fd, unsigned int b,
		       size_t boff, size_t len, uint64_t off)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&st->ring);
	uint8_t *buf = staging_buf(st, b) + boff;

	if (!sqe)
		return -EBUSY;
	if (st->fixed_bufs)
		io_uring_prep_read_fixed(sqe, st->file_set ? 0 : fd, buf,
					 (unsigned int)len, off, (int)b);
	else
		io_uring_prep_read(sqe, st->file_set ? 0 : fd, buf,
				   (unsigned int)len, off);
	if (st->file_set)
		sqe->flags |= IOSQE_FIXED_FILE;
	io_uring_sqe_set_data64(sqe, b);
	staging_touch(st, b, boff + len);
	return 0;
}

int staging_submit(struct staging *st)
{
	int ret;

	do {
		ret = io_uring_submit(&st->ring);
	} while (ret == -EINTR);
	return ret;
}

int staging_reap(struct staging *st, int wait, unsigned int *b, int *res)
{
	struct io_uring_cqe *cqe;
	int ret;

	do {
		ret = wait ? io_uring_wait_cqe(&st->ring, &cqe) :
			     io_uring_peek_cqe(&st->ring, &cqe);
	} while (ret == -EINTR);
	if (ret == -EAGAIN && !wait)
		return 0;
	if (ret)
		return ret;
	*b = (unsigned int)io_uring_cqe_get_data64(cqe);
	*res = cqe->res;
	io_uring_cqe_seen(&st->ring, cqe);
	return 1;
}
#else
int staging_set_file(struct staging *st, int fd)
{
	return -EOPNOTSUPP;
}

int staging_queue_read(struct staging *st, int fd, unsigned int b,
		       size_t boff, size_t len, uint64_t off)
{
	return -EOPNOTSUPP;
}

int staging_submit(struct staging *st)
{
	return -EOPNOTSUPP;
}

int staging_reap(struct staging *st, int wait, unsigned int *b, int *res)
{
	return -EOPNOTSUPP;
}
#endif
