/* SPDX-License-Identifier: MIT */
/*
 * ortho-bench gemv on the cuda backend (lib/cuda_bench.c): a set of Base
 * matrices, each with one Ortho delta, resident on the device, timed a
 * pass over the whole set at a time, so a working set larger than the
 * device's L2 streams from device memory as a model's layers would. The
 * one-matrix timer and the copy rate are in backend_cuda.h.
 *
 * Without HAVE_CUDA these are inline and answer -ENODEV; with it, they
 * answer -ENODEV for a context that runs on another backend.
 */
#ifndef ORTHO_CUDA_BENCH_H
#define ORTHO_CUDA_BENCH_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "kernels.h"

struct ortho_ctx;
struct cuda_bench_set;

/* What the benchmark reports about the device and sizes its set by. */
struct cuda_bench_dev {
	char desc[256];			/* cuda_device_describe() */
	size_t l2_bytes;		/* the L2 cache (0: not reported) */
	size_t free_bytes, total_bytes;	/* cuMemGetInfo() */
};

#ifdef HAVE_CUDA
/**
 * cuda_bench_device() - describe the context's device.
 * @ctx: a context on the cuda backend.
 * @dev: filled in.
 *
 * Return: 0, -ENODEV off the cuda backend, or the driver's errno.
 */
int cuda_bench_device(struct ortho_ctx *ctx, struct cuda_bench_dev *dev);

/**
 * cuda_bench_kernel() - the kernel the backend launches for @ntok tokens.
 * @ntok: tokens per call.
 *
 * Return: its name in the module ("okc_gemv1", ..., "okc_gemm").
 */
const char *cuda_bench_kernel(uint32_t ntok);

/**
 * cuda_bench_set_new() - upload @n Bases (@m) and their Ortho deltas (@o,
 * one per Base, or NULL for none) and the input @x.
 * @ctx: a context on the cuda backend.
 * @m: Bases of one shape.
 * @o: @n deltas of that shape, or NULL.
 * @n: matrices (at least 1).
 * @x: @ntok input vectors of m->cols floats.
 * @ntok: tokens per call.
 * @out: the set; cuda_bench_set_free() it.
 *
 * Return: 0, -ENODEV off the cuda backend, -EINVAL (shapes, bad deltas),
 * -ENOMEM, -ENOSPC (the Ortho pool), or the driver's errno.
 */
int cuda_bench_set_new(struct ortho_ctx *ctx, const struct ok_q8 *m,
		       const struct ok_ortho *o, uint32_t n, const float *x,
		       uint32_t ntok, struct cuda_bench_set **out);

/**
 * cuda_bench_set_pass() - one launch per matrix of the set, in order,
 * timed as one span with events (kernels only, no host copies).
 * @s: the set.
 * @with_ortho: 1 to add each matrix's delta, 0 for the Base alone.
 * @sec: mean seconds per launch over the pass.
 *
 * Return: 0, -EINVAL (@with_ortho without deltas), or the driver's errno.
 */
int cuda_bench_set_pass(struct cuda_bench_set *s, int with_ortho,
			double *sec);

/**
 * cuda_bench_set_output() - run matrix @i once and copy its outputs back.
 * @s: the set.
 * @i: the matrix.
 * @with_ortho: as for cuda_bench_set_pass().
 * @y: room for ntok * rows floats; overwritten.
 *
 * The device's output buffer is filled with NaN first, so an output the
 * kernel does not write shows.
 *
 * Return: 0, -EINVAL, or the driver's errno.
 */
int cuda_bench_set_output(struct cuda_bench_set *s, uint32_t i,
			  int with_ortho, float *y);

/**
 * cuda_bench_set_free() - release the set: Ortho wiped (the pool does it),
 * inputs and outputs wiped, Bases freed.
 * @s: the set, or NULL.
 */
void cuda_bench_set_free(struct cuda_bench_set *s);

#else /* !HAVE_CUDA */

static inline int cuda_bench_device(struct ortho_ctx *ctx,
				    struct cuda_bench_dev *dev)
{
	return -ENODEV;
}

static inline const char *cuda_bench_kernel(uint32_t ntok)
{
	return "none";
}

static inline int cuda_bench_set_new(struct ortho_ctx *ctx,
				     const struct ok_q8 *m,
				     const struct ok_ortho *o, uint32_t n,
				     const float *x, uint32_t ntok,
				     struct cuda_bench_set **out)
{
	*out = NULL;
	return -ENODEV;
}

static inline int cuda_bench_set_pass(struct cuda_bench_set *s,
				      int with_ortho, double *sec)
{
	return -ENODEV;
}

static inline int cuda_bench_set_output(struct cuda_bench_set *s,
					uint32_t i, int with_ortho, float *y)
{
	return -ENODEV;
}

static inline void cuda_bench_set_free(struct cuda_bench_set *s)
{
}
#endif /* HAVE_CUDA */
#endif
