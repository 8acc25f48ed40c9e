/* SPDX-License-Identifier: MIT */
/*
 * Streaming page-in of shard chunks: ciphertext is read into staging
 * buffers (anonymous, mlocked, MADV_DONTDUMP, registered with io_uring as
 * fixed buffers, the shard file registered too; where RLIMIT_MEMLOCK is
 * too small for locking or registering, the stream warns once and reads
 * into unlocked, unregistered buffers) and a pool of decrypt
 * workers authenticates and decrypts each chunk as it arrives, in any
 * order, straight into its destination. When io_uring cannot be used (an
 * old kernel, kernel.io_uring_disabled, a seccomp filter: the ring cannot
 * be set up) the same pipeline is fed by pread(), with one warning.
 *
 * Several page-ins may run at once from different threads: each takes a
 * lane (a ring and its staging buffers) of its own; the workers are shared
 * and serve urgent page-ins first.
 */
#ifndef ORTHO_STREAM_H
#define ORTHO_STREAM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "shard.h"

struct ortho_ctx;
struct stream;

enum stream_flags {
	/* Never use io_uring: pread() feeds the workers. */
	STREAM_PREAD = 1u << 0,
	/*
	 * O_DIRECT reads, for cold reads of large files: the page cache is
	 * bypassed. Falls back to buffered reads where the file system
	 * refuses O_DIRECT: at open, or a read with EINVAL (its alignment).
	 */
	STREAM_DIRECT = 1u << 1,
};

/*
 * Defaults measured with ortho-bench pagein: reads from the page cache
 * complete as they are submitted, so a few staging buffers that stay in
 * the CPU cache between the kernel's copy and the decryption beat a deep
 * queue over a large staging area (which cold O_DIRECT reads do not need
 * either: the device fills the buffers while the workers decrypt).
 */
#define STREAM_DEF_QUEUE_DEPTH 4u
#define STREAM_DEF_STAGING (6u * OSH_CHUNK_SIZE)
#define STREAM_MAX_LANES 8u

struct stream_opts {
	/* Reads in flight per page-in; 0: STREAM_DEF_QUEUE_DEPTH. */
	unsigned int queue_depth;
	/* Staging bytes per lane, whole chunks; 0: STREAM_DEF_STAGING. */
	size_t staging;
	/* Decrypt threads; 0: one per online CPU. */
	unsigned int workers;
	/* Lanes, i.e. page-ins that may run at once; 0: 4. */
	unsigned int lanes;
	unsigned int flags;		/* enum stream_flags */
	/* Tests: cap each read at this many bytes (4 KiB multiple); 0: none. */
	size_t max_read;
};

/**
 * stream_opts_env() - apply the ORTHO_STREAM environment variable to @o: a
 * comma-separated list of "pread" (force the pread path), "direct"
 * (O_DIRECT), "qd=N", "workers=N", "staging=BYTES".
 * @o: options to update.
 *
 * Return: 0, or -EINVAL for a word it does not know (@o is then unchanged).
 */
int stream_opts_env(struct stream_opts *o);

/**
 * stream_new() - start the decrypt workers; lanes are set up on first use.
 * @ctx: for messages.
 * @opts: options, or NULL for the defaults.
 * @out: the stream.
 *
 * Return: 0, -EINVAL (bad options), -ENOMEM, or -errno of pthread_create.
 */
int stream_new(struct ortho_ctx *ctx, const struct stream_opts *opts,
	       struct stream **out);

/**
 * stream_free() - stop the workers and wipe and unmap every staging buffer.
 * @s: the stream, or NULL; no page-in may be running.
 */
void stream_free(struct stream *s);

enum stream_req_flags {
	/* A forward pass waits for it: its chunks go before the others. */
	STREAM_URGENT = 1u << 0,
};

/* One page-in: plaintext bytes [off, off + len) of a shard into dst. */
struct stream_req {
	const struct osh_file *f;
	const uint8_t *key;		/* OSH_KEY_SIZE bytes */
	uint64_t off;
	uint64_t len;
	void *dst;			/* len bytes */
	unsigned int flags;		/* enum stream_req_flags */
	/* When it becomes non-zero the page-in stops with -ECANCELED. */
	const atomic_int *cancel;
	/* Out: the chunk that failed authentication, or UINT32_MAX. */
	uint32_t bad_chunk;
};

/**
 * stream_read() - page in @r: read every chunk the range touches, check its
 * tag and decrypt it. A chunk wholly inside the range is decrypted straight
 * into dst; one the range cuts is decrypted in its staging buffer and the
 * part in range copied. Short reads are resumed; a file that ends early is
 * an error. Staging buffers are wiped before the call returns.
 * @s: the stream.
 * @r: the request; r->bad_chunk is set.
 *
 * On failure dst is wiped and a message names the shard and the chunk.
 *
 * Return: 0, -EBADMSG (a chunk failed authentication), -EIO (the file ends
 * early), -ECANCELED, -EINVAL (range outside the plaintext), -ENOMEM, or
 * -errno of a read.
 */
int stream_read(struct stream *s, struct stream_req *r);

struct stream_info {
	unsigned int workers;
	unsigned int queue_depth;
	size_t staging;			/* bytes per lane */
	unsigned int lanes;		/* set up so far */
	int uring;			/* 1: io_uring in use, 0: pread */
	int direct;			/* STREAM_DIRECT asked for */
	/*
	 * Of every lane set up so far (0 while there is none): its staging
	 * is mlocked; its buffers are registered with its ring as fixed
	 * buffers, and a file slot is (0 on the pread path). Each needs
	 * RLIMIT_MEMLOCK room (or CAP_IPC_LOCK); a stream without it works
	 * and warns once.
	 */
	int locked;
	int fixed_bufs;
	int fixed_file;
	/*
	 * STREAM_DIRECT page-ins read with O_DIRECT from start to end, and
	 * those that read buffered instead (O_DIRECT refused at open, or its
	 * reads refused with EINVAL: alignment the file system wants).
	 */
	uint64_t direct_pageins;
	uint64_t direct_fallbacks;
	uint64_t reads;			/* read requests completed */
	uint64_t short_reads;		/* of which resumed after a short read */
	uint64_t bytes;			/* ciphertext bytes read */
};

/**
 * stream_get_info() - what the stream runs with and has done.
 * @s: the stream.
 * @info: filled in.
 */
void stream_get_info(struct stream *s, struct stream_info *info);

/**
 * stream_for_each_buffer() - tests: call @fn on every staging buffer.
 * @s: the stream; no page-in may be running.
 * @fn: called with each buffer and its length.
 * @user: passed to @fn.
 */
void stream_for_each_buffer(struct stream *s,
			    void (*fn)(void *user, const void *p, size_t len),
			    void *user);

/*
 * Tests: when set, called with every pool slot and staging buffer after it
 * was wiped and just before it is unmapped, so a test can check that no
 * plaintext outlives its use. NULL in normal use.
 */
extern void (*ortho_test_unmap_hook)(const void *p, size_t len);

#endif
