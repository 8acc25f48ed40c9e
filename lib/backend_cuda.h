/* SPDX-License-Identifier: MIT */
/*
 * The CUDA backend (lib/backend_cuda.c) and what it offers beyond the ops
 * table: host memory pinning (the ops table's host_register is this),
 * asynchronous Ortho uploads for the streaming code, device timings for
 * ortho-bench, and a look at an Ortho tensor's device memory for the
 * tests.
 *
 * Without HAVE_CUDA the backend is not built; the functions below are then
 * inline and answer -ENODEV, so callers need no #ifdef. With it, they
 * answer -ENODEV for a context that runs on another backend.
 */
#ifndef ORTHO_BACKEND_CUDA_H
#define ORTHO_BACKEND_CUDA_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "config.h"

struct ortho_ctx;

#ifdef HAVE_CUDA
extern const struct ortho_backend backend_cuda;

/**
 * cuda_host_register() - pin host memory that uploads copy from, so that
 * cuMemcpyHtoDAsync is DMA straight from it (cuMemHostRegister); the ops
 * table's host_register. Best effort: the first failure in a context is
 * logged as a warning (later ones at debug level) and the memory stays
 * pageable, which uploads handle too.
 * @ctx: a context on the cuda backend.
 * @p: page-aligned memory; it stays mapped until cuda_host_unregister().
 * @len: its length.
 *
 * Return: 0, -ENODEV off the cuda backend, -EINVAL, -ENOMEM, or the
 * driver's errno (-EEXIST: it overlaps pinned memory).
 */
int cuda_host_register(struct ortho_ctx *ctx, void *p, size_t len);

/**
 * cuda_host_unregister() - undo cuda_host_register(): the stream is
 * drained first, so no copy still reads @p, which the caller may then wipe,
 * reuse or unmap. The context's close unpins what is left (with a warning).
 * @ctx: the context.
 * @p: the memory, as given to cuda_host_register().
 *
 * Return: 0, -ENODEV off the cuda backend, -ENOENT when @p is not pinned
 * here (nothing logged), or the driver's errno.
 */
int cuda_host_unregister(struct ortho_ctx *ctx, void *p);

/**
 * cuda_ortho_upload_async() - start copying @o's host view to the device.
 * @ctx: a context on the cuda backend.
 * @o: the tensor; o->dev is set.
 *
 * The host bytes must stay unchanged (not reused, not wiped) until
 * cuda_ortho_upload_wait() returns; the op table's ortho_upload does both.
 * Kernels queued afterwards see the copy (same stream).
 *
 * Return: 0, -EINVAL for a bad view (shape, encoding, row pointers or a
 * column index out of range), -ENODEV off the cuda backend, -ENOMEM.
 */
int cuda_ortho_upload_async(struct ortho_ctx *ctx, struct backend_ortho *o);

/**
 * cuda_ortho_upload_wait() - wait until @o's copy has left the host bytes.
 * @ctx: the context.
 * @o: a tensor given to cuda_ortho_upload_async().
 *
 * Return: 0, or the driver's errno (the tensor is then unusable: release
 * it).
 */
int cuda_ortho_upload_wait(struct ortho_ctx *ctx, struct backend_ortho *o);

/**
 * cuda_ortho_devmem() - where @o lives on the device (tests scan it).
 * @o: an uploaded tensor.
 * @addr: device address of its first byte.
 * @size: bytes it occupies (rounded up).
 *
 * Return: 0, or -ENOENT when @o is not on the device.
 */
int cuda_ortho_devmem(const struct backend_ortho *o, uint64_t *addr,
		      size_t *size);

/**
 * cuda_bench_gemv() - time the fused op on the device: uploads @m and @o,
 * copies @x once, then times @iters launches between two events; the
 * copies are freed (Ortho wiped) before it returns.
 * @ctx: a context on the cuda backend.
 * @m: Base tensor (host).
 * @o: Ortho deltas (host views), @no of them.
 * @no: count (at most 64).
 * @x: @ntok input vectors.
 * @y: NULL, or room for the last launch's @ntok output vectors.
 * @ntok: tokens (1: GEMV; more: the batched kernels).
 * @iters: timed launches (at least 1).
 * @sec: mean seconds per launch, kernel only.
 *
 * Return: 0, -ENODEV off the cuda backend, -EINVAL, -E2BIG, -ENOMEM, or
 * the driver's errno.
 */
int cuda_bench_gemv(struct ortho_ctx *ctx, const struct ok_q8 *m,
		    const struct ok_ortho *const *o, unsigned int no,
		    const float *x, float *y, uint32_t ntok,
		    unsigned int iters, double *sec);

/**
 * cuda_copy_bandwidth() - the device's copy rate: @iters cuMemcpyDtoD of
 * @bytes between two buffers, timed with events.
 * @ctx: a context on the cuda backend.
 * @bytes: size of one copy.
 * @iters: timed copies (at least 1).
 * @bytes_per_sec: bytes read plus bytes written per second (2 x @bytes
 *                 per copy), the yardstick for a memory-bound kernel.
 *
 * Return: 0, -ENODEV off the cuda backend, -EINVAL, -ENOMEM, or the
 * driver's errno.
 */
int cuda_copy_bandwidth(struct ortho_ctx *ctx, size_t bytes,
			unsigned int iters, double *bytes_per_sec);

/**
 * cuda_device_describe() - one line about the context's device, e.g.
 * "NVIDIA H200, sm_90, 132 SMs, 139.8 GiB, driver 13.0".
 * @ctx: a context on the cuda backend.
 * @buf: filled in (NUL-terminated).
 * @len: its size.
 *
 * Return: 0, -ENODEV off the cuda backend.
 */
int cuda_device_describe(struct ortho_ctx *ctx, char *buf, size_t len);

#else /* !HAVE_CUDA: built without the CUDA toolkit */

static inline int cuda_host_register(struct ortho_ctx *ctx, void *p,
				     size_t len)
{
	return -ENODEV;
}

static inline int cuda_host_unregister(struct ortho_ctx *ctx, void *p)
{
	return -ENODEV;
}

static inline int cuda_ortho_upload_async(struct ortho_ctx *ctx,
					  struct backend_ortho *o)
{
	return -ENODEV;
}

static inline int cuda_ortho_upload_wait(struct ortho_ctx *ctx,
					 struct backend_ortho *o)
{
	return -ENODEV;
}

static inline int cuda_ortho_devmem(const struct backend_ortho *o,
				    uint64_t *addr, size_t *size)
{
	return -ENOENT;
}

static inline int cuda_bench_gemv(struct ortho_ctx *ctx,
				  const struct ok_q8 *m,
				  const struct ok_ortho *const *o,
				  unsigned int no, const float *x, float *y,
				  uint32_t ntok, unsigned int iters,
				  double *sec)
{
	return -ENODEV;
}

static inline int cuda_copy_bandwidth(struct ortho_ctx *ctx, size_t bytes,
				      unsigned int iters,
				      double *bytes_per_sec)
{
	return -ENODEV;
}

static inline int cuda_device_describe(struct ortho_ctx *ctx, char *buf,
				       size_t len)
{
	return -ENODEV;
}
#endif /* HAVE_CUDA */
#endif
