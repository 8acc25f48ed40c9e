// SPDX-License-Identifier: MIT
/*
 * The device memory pool of resident Ortho tensors (see cuda_pool.h).
 * A first-fit free list over one reserved range; physical chunks are
 * counted by the allocations that touch them, mapped on the first and
 * released after the last. Frees never allocate host memory (the list's
 * room is made at alloc time), so a wipe is never followed by a lost range.
 */
#include "config.h"

#ifdef HAVE_CUDA
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_pool.h"
#include "log.h"

static size_t round_up(size_t v, size_t a)
{
	return (v + a - 1) / a * a;
}

static void pool_prop(const struct cuda_pool *p, CUmemAllocationProp *prop)
{
	memset(prop, 0, sizeof(*prop));
	prop->type = CU_MEM_ALLOCATION_TYPE_PINNED;
	prop->location.type = CU_MEM_LOCATION_TYPE_DEVICE;
	prop->location.id = p->dev;
}

static int map_chunk(struct cuda_pool *p, size_t c)
{
	const struct cuda_api *api = p->api;
	CUdeviceptr va = p->base + c * p->gran;
	CUmemGenericAllocationHandle h;
	CUmemAllocationProp prop;
	CUmemAccessDesc acc;
	int ret;

	pool_prop(p, &prop);
	ret = cuda_ck(p->ctx, api, api->mem_create(&h, p->gran, &prop, 0),
		      "cuMemCreate(Ortho pool chunk %zu, %zu bytes)", c,
		      p->gran);
	if (ret)
		return ret;
	ret = cuda_ck(p->ctx, api, api->mem_map(va, p->gran, 0, h, 0),
		      "cuMemMap(Ortho pool chunk %zu)", c);
	if (ret)
		goto err_release;
	memset(&acc, 0, sizeof(acc));
	acc.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
	acc.location.id = p->dev;
	acc.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
	ret = cuda_ck(p->ctx, api, api->mem_set_access(va, p->gran, &acc, 1),
		      "cuMemSetAccess(Ortho pool chunk %zu)", c);
	if (ret)
		goto err_unmap;
	p->handle[c] = h;
	p->mapped += p->gran;
	return 0;
err_unmap:
	cuda_ck(p->ctx, api, api->mem_unmap(va, p->gran),
		"cuMemUnmap(Ortho pool chunk %zu, undo)", c);
err_release:
	cuda_ck(p->ctx, api, api->mem_release(h),
		"cuMemRelease(Ortho pool chunk %zu, undo)", c);
	return ret;
}

/* The chunk's bytes were wiped by the frees of everything that used it. */
static void unmap_chunk(struct cuda_pool *p, size_t c)
{
	const struct cuda_api *api = p->api;
	CUdeviceptr va = p->base + c * p->gran;

	cuda_ck(p->ctx, api, api->mem_unmap(va, p->gran),
		"cuMemUnmap(Ortho pool chunk %zu)", c);
	cuda_ck(p->ctx, api, api->mem_release(p->handle[c]),
		"cuMemRelease(Ortho pool chunk %zu)", c);
	p->handle[c] = 0;
	p->mapped -= p->gran;
}

static int vmm_init(struct cuda_pool *p, size_t reserve)
{
	const struct cuda_api *api = p->api;
	CUmemAllocationProp prop;
	int ret;

	pool_prop(p, &prop);
	ret = cuda_ck(p->ctx, api,
		      api->mem_get_allocation_granularity(&p->gran, &prop,
				CU_MEM_ALLOC_GRANULARITY_MINIMUM),
		      "cuMemGetAllocationGranularity");
	if (ret)
		return ret;
	if (!p->gran || p->gran % CUDA_POOL_ALIGN)
		return -EINVAL;
	p->size = round_up(reserve ? reserve : p->gran, p->gran);
	p->nchunks = p->size / p->gran;
	p->handle = calloc(p->nchunks, sizeof(*p->handle));
	p->users = calloc(p->nchunks, sizeof(*p->users));
	p->free = calloc(2, sizeof(*p->free));
	if (!p->handle || !p->users || !p->free)
		return -ENOMEM;
	p->free_cap = 2;
	ret = cuda_ck(p->ctx, api,
		      api->mem_address_reserve(&p->base, p->size, 0, 0, 0),
		      "cuMemAddressReserve(Ortho pool, %zu bytes)", p->size);
	if (ret) {
		p->base = 0;
		return ret;
	}
	p->free[0].off = 0;
	p->free[0].len = p->size;
	p->nfree = 1;
	p->vmm = 1;
	return 0;
}

static void vmm_undo(struct cuda_pool *p)
{
	free(p->handle);
	free(p->users);
	free(p->free);
	p->handle = NULL;
	p->users = NULL;
	p->free = NULL;
	p->nfree = p->free_cap = 0;
}

int cuda_pool_init(struct cuda_pool *p, struct ortho_ctx *ctx,
		   const struct cuda_api *api, CUdevice dev, CUstream stream,
		   size_t reserve, enum cuda_pool_mode mode)
{
	int has_vmm = 0, ret;

	memset(p, 0, sizeof(*p));
	p->api = api;
	p->ctx = ctx;
	p->dev = dev;
	p->stream = stream;
	if (mode == CUDA_POOL_PLAIN)
		return 0;
	ret = cuda_ck(ctx, api, api->device_get_attribute(&has_vmm,
			CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED,
			dev), "cuDeviceGetAttribute(VMM)");
	if (ret)
		return ret;
	if (has_vmm) {
		ret = vmm_init(p, reserve);
		if (!ret)
			return 0;
		vmm_undo(p);
	} else {
		ret = -EOPNOTSUPP;
	}
	if (mode == CUDA_POOL_VMM) {
		olog_err(ctx, "CUDA Ortho pool: no virtual memory management "
			 "on this device: %s", strerror(-ret));
		return ret;
	}
	olog_info(ctx, "CUDA Ortho pool: virtual memory management not "
		  "usable (%s); one cuMemAlloc per tensor", strerror(-ret));
	return 0;
}

/* Wipe every chunk (or plain allocation) still in use, then release it. */
void cuda_pool_fini(struct cuda_pool *p)
{
	const struct cuda_api *api = p->api;
	size_t c;

	if (p->allocs)
		olog_err(p->ctx, "CUDA Ortho pool: %u allocations (%zu bytes) "
			 "still live at close; wiping them", p->allocs,
			 p->in_use);
	if (p->vmm) {
		for (c = 0; c < p->nchunks; c++) {
			if (!p->handle[c])
				continue;
			cuda_ck(p->ctx, api, api->memset_d8_async(p->base +
					c * p->gran, 0, p->gran, p->stream),
				"cuMemsetD8Async(Ortho pool chunk %zu)", c);
			cuda_ck(p->ctx, api, api->stream_synchronize(p->stream),
				"cuStreamSynchronize(Ortho pool wipe)");
			unmap_chunk(p, c);
		}
		if (p->base)
			cuda_ck(p->ctx, api,
				api->mem_address_free(p->base, p->size),
				"cuMemAddressFree(Ortho pool)");
	}
	for (c = 0; c < p->nplain; c++) {
		struct cuda_pool_alloc *a = &p->plain[c];

		if (!cuda_ck(p->ctx, api, api->memset_d8_async(a->ptr, 0,
							a->size, p->stream),
			     "cuMemsetD8Async(Ortho tensor at close)"))
			cuda_ck(p->ctx, api, api->stream_synchronize(p->stream),
				"cuStreamSynchronize(Ortho wipe at close)");
		cuda_ck(p->ctx, api, api->mem_free(a->ptr),
			"cuMemFree(Ortho tensor at close)");
	}
	free(p->plain);
	vmm_undo(p);
	memset(p, 0, sizeof(*p));
}

/* Map (or count) the chunks of [off, off + len); undone on failure. */
static int chunks_get(struct cuda_pool *p, size_t off, size_t len)
{
	size_t c0 = off / p->gran, c1 = (off + len - 1) / p->gran, c;
	int ret;

	for (c = c0; c <= c1; c++) {
		if (!p->users[c]) {
			ret = map_chunk(p, c);
			if (ret)
				goto undo;
		}
		p->users[c]++;
	}
	return 0;
undo:
	while (c-- > c0)
		if (!--p->users[c])
			unmap_chunk(p, c);
	return ret;
}

static void chunks_put(struct cuda_pool *p, size_t off, size_t len)
{
	size_t c0 = off / p->gran, c1 = (off + len - 1) / p->gran, c;

	for (c = c0; c <= c1; c++)
		if (!--p->users[c])
			unmap_chunk(p, c);
}

static int vmm_alloc(struct cuda_pool *p, size_t len,
		     struct cuda_pool_alloc *a)
{
	struct cuda_pool_range *r;
	size_t i, off;
	int ret;

	/* Room for the free that splits a hole in two, made now. */
	if (p->free_cap < (size_t)p->allocs + 2) {
		size_t cap = 2 * ((size_t)p->allocs + 2);

		r = realloc(p->free, cap * sizeof(*r));
		if (!r)
			return -ENOMEM;
		p->free = r;
		p->free_cap = cap;
	}
	for (i = 0; i < p->nfree; i++)
		if (p->free[i].len >= len)
			break;
	if (i == p->nfree) {
		olog_err(p->ctx, "CUDA Ortho pool: no free range of %zu bytes "
			 "(%zu of %zu in use)", len, p->in_use, p->size);
		return -ENOSPC;
	}
	off = p->free[i].off;
	ret = chunks_get(p, off, len);
	if (ret)
		return ret;
	p->free[i].off += len;
	p->free[i].len -= len;
	if (!p->free[i].len) {
		memmove(&p->free[i], &p->free[i + 1],
			(p->nfree - i - 1) * sizeof(*p->free));
		p->nfree--;
	}
	a->ptr = p->base + off;
	a->off = off;
	return 0;
}

/* One cuMemAlloc, listed so that cuda_pool_fini() can wipe it. */
static int plain_alloc(struct cuda_pool *p, size_t len,
		       struct cuda_pool_alloc *a)
{
	struct cuda_pool_alloc *l;
	int ret;

	if (p->nplain == p->plain_cap) {
		size_t cap = p->plain_cap ? 2 * p->plain_cap : 16;

		l = realloc(p->plain, cap * sizeof(*l));
		if (!l)
			return -ENOMEM;
		p->plain = l;
		p->plain_cap = cap;
	}
	ret = cuda_ck(p->ctx, p->api, p->api->mem_alloc(&a->ptr, len),
		      "cuMemAlloc(Ortho tensor, %zu bytes)", len);
	if (ret) {
		a->ptr = 0;
		return ret;
	}
	p->plain[p->nplain].ptr = a->ptr;
	p->plain[p->nplain].size = len;
	p->plain[p->nplain].off = 0;
	p->nplain++;
	p->mapped += len;
	return 0;
}

/* Off the list (it is there: the pool handed it out). */
static void plain_forget(struct cuda_pool *p, CUdeviceptr ptr)
{
	size_t i;

	for (i = 0; i < p->nplain; i++) {
		if (p->plain[i].ptr == ptr) {
			p->plain[i] = p->plain[--p->nplain];
			return;
		}
	}
}

int cuda_pool_alloc(struct cuda_pool *p, size_t size,
		    struct cuda_pool_alloc *a)
{
	size_t len;
	int ret;

	memset(a, 0, sizeof(*a));
	if (!size || size > SIZE_MAX - CUDA_POOL_ALIGN)
		return -EINVAL;
	len = round_up(size, CUDA_POOL_ALIGN);
	if (p->vmm) {
		ret = vmm_alloc(p, len, a);
	} else {
		ret = plain_alloc(p, len, a);
	}
	if (ret)
		return ret;
	a->size = len;
	p->in_use += len;
	p->allocs++;
	return 0;
}

/* Give [off, off + len) back, merging with its neighbours. */
static void range_put(struct cuda_pool *p, size_t off, size_t len)
{
	struct cuda_pool_range *f = p->free;
	size_t i = 0;

	while (i < p->nfree && f[i].off < off)
		i++;
	if (i > 0 && f[i - 1].off + f[i - 1].len == off) {
		f[i - 1].len += len;
		if (i < p->nfree && off + len == f[i].off) {
			f[i - 1].len += f[i].len;
			memmove(&f[i], &f[i + 1],
				(p->nfree - i - 1) * sizeof(*f));
			p->nfree--;
		}
		return;
	}
	if (i < p->nfree && off + len == f[i].off) {
		f[i].off = off;
		f[i].len += len;
		return;
	}
	/* free_cap >= allocs + 2 was made sure of by the alloc. */
	memmove(&f[i + 1], &f[i], (p->nfree - i) * sizeof(*f));
	f[i].off = off;
	f[i].len = len;
	p->nfree++;
}

int cuda_pool_free(struct cuda_pool *p, struct cuda_pool_alloc *a)
{
	const struct cuda_api *api = p->api;
	int ret;

	if (!a->ptr)
		return 0;
	ret = cuda_ck(p->ctx, api, api->memset_d8_async(a->ptr, 0, a->size,
							p->stream),
		      "cuMemsetD8Async(Ortho wipe, %zu bytes)", a->size);
	if (!ret)
		ret = cuda_ck(p->ctx, api, api->stream_synchronize(p->stream),
			      "cuStreamSynchronize(Ortho wipe)");
	if (ret)
		return ret;
	if (p->vmm) {
		chunks_put(p, a->off, a->size);
		range_put(p, a->off, a->size);
	} else {
		plain_forget(p, a->ptr);
		cuda_ck(p->ctx, api, api->mem_free(a->ptr),
			"cuMemFree(Ortho tensor)");
		p->mapped -= a->size;
	}
	p->in_use -= a->size;
	p->allocs--;
	memset(a, 0, sizeof(*a));
	return 0;
}
#endif /* HAVE_CUDA */
