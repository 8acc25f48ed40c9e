/* SPDX-License-Identifier: MIT */
/*
 * Staging buffers and the io_uring they are registered with: one lane of
 * lib/stream.c. Internal to the streaming code.
 */
#ifndef ORTHO_STAGING_H
#define ORTHO_STAGING_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

#ifdef HAVE_URING
#include <liburing.h>
#endif

struct ortho_ctx;

struct staging {
	uint8_t *mem;			/* nbuf * buf_size bytes, secmem */
	size_t buf_size;
	unsigned int nbuf;
	size_t *used;			/* bytes touched per buffer since wiped */
	int have_ring;
#ifdef HAVE_URING
	struct io_uring ring;
#endif
	int fixed_bufs;			/* buffers registered with the ring */
	int fixed_file;			/* a file slot registered */
	int file_set;			/* the slot holds a file now */
	int locked;			/* mem is mlocked */
	int lock_err;			/* else mlock's -errno */
	int bufs_err;			/* -errno registering the buffers */
	int file_err;			/* -errno registering the file slot */
};

/**
 * staging_init() - map @nbuf buffers of @buf_size bytes and, when
 * @want_ring, set up a ring of @qd entries and register buffers and a file
 * slot with it. Locking and registration are best effort (plain reads into
 * unregistered buffers work too): st->locked, st->fixed_bufs and
 * st->fixed_file say what worked, st->lock_err, st->bufs_err and
 * st->file_err why not; nothing is logged here, the caller reports it once.
 * A ring that cannot be set up is not an error: @ring_err tells why.
 * @ctx: for messages.
 * @st: filled in.
 * @nbuf: buffers.
 * @buf_size: bytes each, a page multiple.
 * @qd: ring entries.
 * @want_ring: try io_uring.
 * @ring_err: set to 0 when the ring is up, else a negative errno.
 *
 * Return: 0, or -ENOMEM.
 */
int staging_init(struct ortho_ctx *ctx, struct staging *st, unsigned int nbuf,
		 size_t buf_size, unsigned int qd, int want_ring,
		 int *ring_err);

/**
 * staging_fini() - tear the ring down, wipe and unmap the buffers.
 * @st: the lane's staging; safe on a zeroed one.
 */
void staging_fini(struct staging *st);

/* Return: buffer @b. */
static inline uint8_t *staging_buf(const struct staging *st, unsigned int b)
{
	return st->mem + (size_t)b * st->buf_size;
}

/* Note that bytes up to @end of buffer @b were written. */
static inline void staging_touch(struct staging *st, unsigned int b,
				 size_t end)
{
	if (end > st->used[b])
		st->used[b] = end;
}

/**
 * staging_wipe() - wipe what was written into every buffer since the last
 * wipe.
 * @st: the staging.
 */
void staging_wipe(struct staging *st);

/**
 * staging_set_file() - point the ring's file slot at @fd (-1: empty it).
 * @st: the staging.
 * @fd: a file descriptor or -1.
 *
 * Return: 0 when reads go through the registered slot, else a negative
 * errno (reads then use @fd itself).
 */
int staging_set_file(struct staging *st, int fd);

/**
 * staging_queue_read() - queue a read into buffer @b at @boff, @len bytes
 * from @fd at @off; the completion carries @b.
 * @st: the staging, with a ring.
 * @fd: the file (the registered slot is used when set).
 *
 * Return: 0, or -EBUSY when the submission queue is full.
 */
int staging_queue_read(struct staging *st, int fd, unsigned int b,
		       size_t boff, size_t len, uint64_t off);

/**
 * staging_submit() - submit what was queued.
 * @st: the staging.
 *
 * Return: the number submitted, or a negative errno.
 */
int staging_submit(struct staging *st);

/**
 * staging_reap() - take one completion.
 * @st: the staging.
 * @wait: block until one arrives.
 * @b: set to the buffer of the completed read.
 * @res: set to its result (bytes or a negative errno).
 *
 * Return: 1 with a completion, 0 with none (only when !@wait), or a
 * negative errno of waiting.
 */
int staging_reap(struct staging *st, int wait, unsigned int *b, int *res);

#endif
