/* SPDX-License-Identifier: MIT */
/*
 * Internal to lib/stream.c (jobs, the work queue, decryption, the read
 * paths) and lib/stream_lane.c (lanes, setup): the structures they share.
 * Locking: lib/stream.c.
 */
#ifndef ORTHO_STREAM_PRIV_H
#define ORTHO_STREAM_PRIV_H

#include <pthread.h>
#include <stdint.h>

#include "staging.h"
#include "stream.h"

#define DIRECT_ALIGN 4096u

struct job;
struct lane;

/* A staging buffer and the read it holds. */
struct sbuf {
	struct sbuf *next;		/* in a work queue */
	struct lane *lane;
	struct job *job;
	unsigned int idx;
	uint32_t chunk;
	uint32_t want;			/* ciphertext bytes of the chunk */
	uint32_t done;			/* bytes read so far */
	unsigned int retries;
	/* The read in flight: into the buffer at boff, len bytes at off. */
	uint32_t boff;
	uint32_t len;
	uint64_t off;
	int direct;			/* issued on the O_DIRECT descriptor */
};

struct lane {
	struct staging st;
	struct sbuf *bufs;
	unsigned int *free;
	unsigned int nfree;
	pthread_cond_t cond;		/* a buffer came back */
	int busy;
	int dead;			/* its ring misbehaved: never reused */
};

struct job {
	struct stream_req *r;
	const struct osh_file *f;
	uint8_t *dst;
	uint32_t end;			/* chunks [next, end) still to read */
	uint32_t next;
	unsigned int pending;		/* read, not yet decrypted */
	int err;
	uint32_t bad;
	int fd;				/* reads go here */
	int dfd;			/* the O_DIRECT descriptor, or -1 */
	int direct;			/* fd is dfd */
	int urgent;
	char id[33];
};

struct stream {
	struct ortho_ctx *ctx;
	pthread_mutex_t lock;
	pthread_cond_t work;		/* items queued, or stop */
	pthread_cond_t lane_cond;	/* a lane came back */
	struct sbuf *qhead[2], *qtail[2];	/* [0]: urgent */
	pthread_t *thr;
	unsigned int nthr;
	int stop;
	struct lane *lanes[STREAM_MAX_LANES];
	unsigned int nlanes, max_lanes;
	unsigned int qd, nbuf;
	unsigned int flags;
	size_t max_read;
	int no_uring;
	int memlock_warned;		/* the RLIMIT_MEMLOCK warning is out */
	unsigned long secmem_seen;	/* secmem_lock_failures() at start */
	struct stream_info stats;
};

/* Decrypt workers' main loop (lib/stream.c). */
void *stream_worker_main(void *arg);

/**
 * stream_lane_get() - a free lane, a new one while under the limit, or
 * wait for one.
 * @s: the stream.
 * @out: the lane, held until stream_lane_put().
 *
 * Return: 0, or -ENOMEM.
 */
int stream_lane_get(struct stream *s, struct lane **out);

/**
 * stream_memlock_check() - warn, once per stream, when secmem (the memory
 * page-ins decrypt into, such as residency slots) could not be locked
 * since the stream started.
 * @s: the stream.
 */
void stream_memlock_check(struct stream *s);

/**
 * stream_lane_put() - hand a lane back (a dead one is freed).
 * @s: the stream.
 * @l: the lane.
 */
void stream_lane_put(struct stream *s, struct lane *l);

#endif
