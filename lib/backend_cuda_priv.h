/* SPDX-License-Identifier: MIT */
/*
 * Private to the CUDA backend (backend_cuda.c, cuda_bench.c): the per-
 * context device state and the helpers both files use. HAVE_CUDA only.
 */
#ifndef ORTHO_BACKEND_CUDA_PRIV_H
#define ORTHO_BACKEND_CUDA_PRIV_H

#include "config.h"

#ifdef HAVE_CUDA
#include <pthread.h>

#include "backend.h"
#include "cuda_loader.h"
#include "cuda_pool.h"
#include "gemv_int8_abi.h"

enum cuda_fn {
	CUDA_FN_GEMV1,
	CUDA_FN_GEMV4,
	CUDA_FN_GEMV8,
	CUDA_FN_GEMM,
	CUDA_NFN
};

/* A device buffer that only grows (the op's x and y). */
struct cuda_buf {
	CUdeviceptr ptr;
	size_t cap;
};

/* Host memory pinned for uploads (cuMemHostRegister). */
struct cuda_hostreg {
	void *p;
	size_t len;
};

struct cuda_dev {
	const struct cuda_api *api;
	struct ortho_ctx *ctx;		/* for messages */
	pthread_mutex_t lock;		/* see backend_cuda.c */
	CUdevice dev;
	unsigned int ordinal;
	char name[128];
	int cc_major, cc_minor, sms;
	size_t total_mem;
	CUcontext cu;
	CUstream stream;
	CUmodule mod;
	CUfunction fn[CUDA_NFN];
	struct cuda_buf xbuf, ybuf;
	struct cuda_pool pool;
	struct cuda_hostreg *regs;	/* cuda_host_register()ed, nregs */
	unsigned int nregs, regs_cap;
	unsigned int reg_failures;	/* the first one is logged */
};

/* backend_q8.dev: Base weights then, CUDA_POOL_ALIGN-aligned, scales. */
struct cuda_q8 {
	CUdeviceptr mem;
	size_t size;
	size_t sc_off;
};

/* backend_ortho.dev: one pool allocation holding rowptr, col and val. */
struct cuda_ortho {
	struct cuda_pool_alloc mem;
	struct okc_ortho k;		/* device addresses, for the kernels */
	CUevent done;			/* the upload's copies have finished */
};

/* Return: the context's device state, NULL when not on the cuda backend. */
struct cuda_dev *cuda_dev_of(struct ortho_ctx *ctx);

/* Lock @d and make its CUDA context current. Return: 0 or -errno. */
int cuda_enter(struct cuda_dev *d);
/* Undo cuda_enter(). */
void cuda_leave(struct cuda_dev *d);
/*
 * Entered, after a failed call: wait for the work it queued, so nothing
 * still reads the caller's buffers or the memory about to be freed. A
 * failure is logged, not returned (the first error is the one to report).
 */
void cuda_drain(struct cuda_dev *d);

/* Grow @b to @need bytes (contents lost). Return: 0 or -errno. */
int cuda_buf_reserve(struct cuda_dev *d, struct cuda_buf *b, size_t need);
/* Wipe and free @b. */
void cuda_buf_drop(struct cuda_dev *d, struct cuda_buf *b);

/*
 * Kernel arguments for @t plus @o (x and y left for the caller).
 * Return: 0, -EINVAL (not uploaded, shapes differ, ntok 0), -E2BIG.
 */
int cuda_args_fill(struct ortho_ctx *ctx, const struct backend_q8 *t,
		   const struct backend_ortho *const *o, unsigned int no,
		   uint32_t ntok, struct okc_args *a);

/* Queue the kernel for @a on @d's stream (entered). Return: 0 or -errno. */
int cuda_launch(struct cuda_dev *d, const struct okc_args *a);

#endif /* HAVE_CUDA */
#endif
