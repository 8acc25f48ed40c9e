/* SPDX-License-Identifier: MIT */
/*
 * Device memory for resident Ortho tensors (HAVE_CUDA only).
 *
 * One virtual range is reserved up front (cuMemAddressReserve); it is backed
 * by physical chunks of the allocation granularity (cuMemCreate, cuMemMap,
 * cuMemSetAccess) only where an allocation lies, so allocations pack tightly
 * and physical memory follows what is resident. Every free wipes the bytes
 * (cuMemsetD8Async, then waits for it) before the range is reused, and a
 * chunk no allocation touches any more is unmapped and released
 * (cuMemUnmap, cuMemRelease) at once: no Ortho byte survives its tensor.
 *
 * Where the device has no virtual memory management the pool falls back to
 * one cuMemAlloc per allocation, wiped before cuMemFree.
 *
 * Not locked: the caller serialises every call (backend_cuda.c holds its
 * device lock) and has the pool's CUDA context current.
 */
#ifndef ORTHO_CUDA_POOL_H
#define ORTHO_CUDA_POOL_H

#include "config.h"

#ifdef HAVE_CUDA
#include <stddef.h>
#include <stdint.h>

#include "cuda_loader.h"

/* Allocations start on this boundary (16-byte loads, coalescing). */
#define CUDA_POOL_ALIGN 256u

struct cuda_pool_range {
	size_t off, len;
};

/* One allocation from the pool. */
struct cuda_pool_alloc {
	CUdeviceptr ptr;
	size_t size;			/* rounded to CUDA_POOL_ALIGN */
	size_t off;			/* in the range (vmm) */
};

struct cuda_pool {
	const struct cuda_api *api;
	struct ortho_ctx *ctx;		/* for messages */
	CUdevice dev;
	CUstream stream;		/* wipes run here, after earlier work */
	int vmm;			/* 0: the cuMemAlloc fallback */
	CUdeviceptr base;		/* the reserved range */
	size_t size;
	size_t gran;			/* bytes per physical chunk */
	size_t nchunks;
	CUmemGenericAllocationHandle *handle;	/* per chunk, 0: unmapped */
	uint32_t *users;		/* allocations touching each chunk */
	struct cuda_pool_range *free;	/* sorted by offset, coalesced */
	size_t nfree, free_cap;
	size_t in_use;			/* bytes handed out (rounded) */
	size_t mapped;			/* physical bytes mapped */
	unsigned int allocs;		/* live allocations */
	/* The cuMemAlloc fallback's live allocations (wiped at fini). */
	struct cuda_pool_alloc *plain;
	size_t nplain, plain_cap;
};

enum cuda_pool_mode {
	CUDA_POOL_AUTO = 0,		/* vmm when the device has it */
	CUDA_POOL_VMM = 1,		/* vmm or fail */
	CUDA_POOL_PLAIN = 2,		/* one cuMemAlloc per allocation */
};

/**
 * cuda_pool_init() - set up a pool on @dev.
 * @p: the pool, filled in.
 * @ctx: for messages.
 * @api: the driver.
 * @dev: the device (its context current).
 * @stream: the stream wipes are queued on.
 * @reserve: bytes of address space to reserve (rounded up to the
 *           granularity); the most the pool can hold at once.
 * @mode: enum cuda_pool_mode.
 *
 * Return: 0, -EOPNOTSUPP when CUDA_POOL_VMM is asked for and the device
 * lacks it, or the errno of a failed driver call (logged).
 */
int cuda_pool_init(struct cuda_pool *p, struct ortho_ctx *ctx,
		   const struct cuda_api *api, CUdevice dev, CUstream stream,
		   size_t reserve, enum cuda_pool_mode mode);

/**
 * cuda_pool_fini() - wipe and release whatever is still allocated, then the
 * reserved range. Safe on a zeroed or half-set-up pool.
 * @p: the pool.
 */
void cuda_pool_fini(struct cuda_pool *p);

/**
 * cuda_pool_alloc() - @size bytes of device memory.
 * @p: the pool.
 * @size: bytes (> 0).
 * @a: filled in.
 *
 * Return: 0, -EINVAL for a zero size, -ENOSPC when the reserved range has
 * no hole that large, -ENOMEM, or the errno of a failed driver call.
 */
int cuda_pool_alloc(struct cuda_pool *p, size_t size,
		    struct cuda_pool_alloc *a);

/**
 * cuda_pool_free() - wipe an allocation, wait for the wipe, and give its
 * range back; physical chunks left without users are unmapped and released.
 * @p: the pool.
 * @a: the allocation (zeroed on return).
 *
 * Return: 0, or the errno of the failed wipe; the memory is then neither
 * reused nor released (leaked rather than handed out unwiped).
 */
int cuda_pool_free(struct cuda_pool *p, struct cuda_pool_alloc *a);

#endif /* HAVE_CUDA */
#endif
