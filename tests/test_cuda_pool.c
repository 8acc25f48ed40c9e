// SPDX-License-Identifier: MIT
/*
 * The CUDA Ortho pool (needs a device; SKIP without one). Random alloc/free
 * churn in both modes, each allocation filled with its own byte and read
 * back, so overlaps show; the accounting returns to zero. The wipe: an
 * Ortho tensor's physical memory is held by a retained handle, the tensor
 * released through the backend, the memory mapped again and scanned: it
 * must be all zero, the pattern nowhere. Likewise for a tensor that shares
 * a chunk with a live one, and for what the pool still held at close.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend.h"
#include "backend_cuda.h"
#include "ctx.h"
#include "testutil.h"

#ifdef HAVE_CUDA
#include "backend_cuda_priv.h"
#include "cuda_loader.h"
#include "cuda_pool.h"

#define PATTERN 0x3c5au		/* FP16 1.088, as u16 */

static struct tu_log lg;
static struct ortho_ctx *gctx;
static struct cuda_dev *dev;
static uint64_t seed = 0x9001ull;

static void setup(void)
{
	struct ortho_ctx_opts o = {
		.sz = sizeof(o),
		.backend = "cuda",
		.threads = 1,
		.log_fn = tu_log_fn,
		.log_user = &lg,
		.log_level = ORTHO_LOG_DEBUG,
	};
	int err;

	tu_log_clear(&lg);
	gctx = NULL;
	err = ortho_ctx_new(&o, &gctx);
	ck_assert_msg(!err, "cuda backend: %d: %s", err, lg.buf);
	dev = cuda_dev_of(gctx);
	ck_assert_ptr_nonnull(dev);
}

static void teardown(void)
{
	ortho_ctx_free(gctx);
}

static void ck_cu(CUresult r, const char *what)
{
	ck_assert_msg(r == CUDA_SUCCESS, "%s: %s", what,
		      cuda_errname(dev->api, r));
}

/* Driver calls need the context current; pushing nests, unlike the lock. */
static void ctx_push(void)
{
	ck_cu(dev->api->ctx_push_current(dev->cu), "cuCtxPushCurrent");
}

static void ctx_pop(void)
{
	CUcontext c;

	ck_cu(dev->api->ctx_pop_current(&c), "cuCtxPopCurrent");
}

static void dev_read(void *dst, CUdeviceptr src, size_t n)
{
	ctx_push();
	ck_cu(dev->api->memcpy_dtoh(dst, src, n), "cuMemcpyDtoH");
	ctx_pop();
}

static size_t count_pattern(const uint8_t *b, size_t n)
{
	size_t k, hits = 0;

	for (k = 0; k + 1 < n; k += 2)
		hits += (b[k] | b[k + 1] << 8) == PATTERN;
	return hits;
}

static size_t count_nonzero(const uint8_t *b, size_t n)
{
	size_t k, nz = 0;

	for (k = 0; k < n; k++)
		nz += b[k] != 0;
	return nz;
}

/* ---- churn ---- */

struct live {
	struct cuda_pool_alloc a;
	uint8_t tag;
};

static void check_live(const struct live *l, unsigned int n)
{
	unsigned int i;
	uint8_t *buf;
	size_t k;

	for (i = 0; i < n; i++) {
		buf = malloc(l[i].a.size);
		ck_assert_ptr_nonnull(buf);
		dev_read(buf, l[i].a.ptr, l[i].a.size);
		for (k = 0; k < l[i].a.size; k++)
			if (buf[k] != l[i].tag)
				break;
		ck_assert_msg(k == l[i].a.size, "allocation %u byte %zu is "
			      "%#x, not its tag %#x", i, k, buf[k], l[i].tag);
		free(buf);
	}
}

START_TEST(pool_churn)
{
	const struct cuda_api *api = dev->api;
	enum cuda_pool_mode mode = _i ? CUDA_POOL_PLAIN : CUDA_POOL_VMM;
	size_t reserve = 256u << 20, sum = 0, len;
	struct cuda_pool_alloc big;
	struct live l[30];
	struct cuda_pool p;
	unsigned int n = 0, step, tags = 0, i;

	ck_assert_int_eq(cuda_enter(dev), 0);
	ck_assert_int_eq(cuda_pool_init(&p, gctx, api, dev->dev, dev->stream,
					reserve, mode), 0);
	ck_assert_int_eq(p.vmm, mode == CUDA_POOL_VMM);
	ck_assert_int_eq(cuda_pool_alloc(&p, 0, &big), -EINVAL);
	if (p.vmm)
		ck_assert_int_eq(cuda_pool_alloc(&p, p.size + 1, &big),
				 -ENOSPC);
	for (step = 0; step < 400; step++) {
		if (n < 30 && (n == 0 || tu_rand(&seed) % 3)) {
			len = 1 + tu_rand(&seed) % (1u << 20);
			ck_assert_int_eq(cuda_pool_alloc(&p, len, &l[n].a), 0);
			ck_assert_uint_eq(l[n].a.ptr % CUDA_POOL_ALIGN, 0);
			ck_assert_uint_ge(l[n].a.size, len);
			ck_assert_uint_lt(l[n].a.size - len, CUDA_POOL_ALIGN);
			l[n].tag = (uint8_t)(1 + tags++ % 255);
			ck_cu(api->memset_d8_async(l[n].a.ptr, l[n].tag,
						   l[n].a.size, dev->stream),
			      "tag");
			sum += l[n++].a.size;
		} else {
			i = (unsigned int)(tu_rand(&seed) % n);
			sum -= l[i].a.size;
			ck_assert_int_eq(cuda_pool_free(&p, &l[i].a), 0);
			ck_assert_uint_eq(l[i].a.ptr, 0);
			l[i] = l[--n];
		}
		ck_assert_uint_eq(p.in_use, sum);
		ck_assert_uint_eq(p.allocs, n);
		ck_assert_uint_ge(p.mapped, p.in_use);
		if (step % 50 == 49) {
			ck_cu(api->stream_synchronize(dev->stream), "sync");
			check_live(l, n);
		}
	}
	while (n)
		ck_assert_int_eq(cuda_pool_free(&p, &l[--n].a), 0);
	ck_assert_uint_eq(p.in_use, 0);
	ck_assert_uint_eq(p.mapped, 0);
	if (p.vmm) {
		ck_assert_uint_eq(p.nfree, 1);
		ck_assert_uint_eq(p.free[0].off, 0);
		ck_assert_uint_eq(p.free[0].len, p.size);
	}
	cuda_pool_fini(&p);
	cuda_leave(dev);
}
END_TEST

/* ---- wipe ---- */

/* Handles of the chunks under [addr, addr + size), retained. */
struct held {
	CUmemGenericAllocationHandle h[16];
	size_t n;
	size_t skip;		/* bytes from the first chunk to addr */
};

static void hold(struct held *hd, const struct cuda_pool *p,
		 uint64_t addr, size_t size)
{
	size_t c0 = (addr - p->base) / p->gran;
	size_t c1 = (addr + size - 1 - p->base) / p->gran;

	ck_assert_uint_le(c1 - c0 + 1, 16);
	hd->n = c1 - c0 + 1;
	hd->skip = addr - (p->base + c0 * p->gran);
	ctx_push();
	for (size_t i = 0; i < hd->n; i++)
		ck_cu(dev->api->mem_retain_allocation_handle(&hd->h[i],
			(void *)(uintptr_t)(p->base + (c0 + i) * p->gran)),
		      "cuMemRetainAllocationHandle");
	ctx_pop();
}

/* Map the held chunks again, read them, drop the handles. */
static uint8_t *held_read(struct held *hd, size_t gran)
{
	const struct cuda_api *api = dev->api;
	size_t len = hd->n * gran, i;
	CUmemAccessDesc acc;
	CUdeviceptr va;
	uint8_t *buf = malloc(len);

	ck_assert_ptr_nonnull(buf);
	memset(&acc, 0, sizeof(acc));
	acc.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
	acc.location.id = dev->dev;
	acc.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
	ctx_push();
	ck_cu(api->mem_address_reserve(&va, len, 0, 0, 0), "reserve");
	for (i = 0; i < hd->n; i++) {
		ck_cu(api->mem_map(va + i * gran, gran, 0, hd->h[i], 0),
		      "cuMemMap");
		ck_cu(api->mem_set_access(va + i * gran, gran, &acc, 1),
		      "cuMemSetAccess");
	}
	dev_read(buf, va, len);
	for (i = 0; i < hd->n; i++) {
		ck_cu(api->mem_unmap(va + i * gran, gran), "cuMemUnmap");
		ck_cu(api->mem_release(hd->h[i]), "cuMemRelease");
	}
	ck_cu(api->mem_address_free(va, len), "cuMemAddressFree");
	ctx_pop();
	return buf;
}

/* A dense (4.7 MiB, three chunks) or CSR16 tensor full of PATTERN. */
static void tensor_make(struct backend_ortho *o, int dense, uint32_t rows,
			uint32_t cols)
{
	size_t nnz = dense ? (size_t)rows * cols : (size_t)rows * 4, k;
	uint16_t *val = malloc(nnz * 2), *col = malloc(nnz * 2 + 2);
	uint32_t *rp = malloc(((size_t)rows + 1) * 4), r;

	ck_assert(val && col && rp);
	for (k = 0; k < nnz; k++) {
		val[k] = PATTERN;
		col[k] = (uint16_t)(k % 4 * 3);
	}
	for (r = 0; r <= rows; r++)
		rp[r] = r * 4;
	memset(o, 0, sizeof(*o));
	o->host = (struct ok_ortho){
		.encoding = dense ? OK_DENSE16 : OK_CSR16, .rows = rows,
		.cols = cols, .rowptr = dense ? NULL : rp,
		.col = dense ? NULL : col, .val = val };
	if (dense) {
		free(rp);
		free(col);
	}
}

static void tensor_free(struct backend_ortho *o)
{
	free((void *)o->host.rowptr);
	free((void *)o->host.col);
	free((void *)o->host.val);
}

START_TEST(wipe_on_release)
{
	const struct ortho_backend *b = gctx->backend;
	struct backend_ortho o;
	struct held hd;
	uint64_t addr;
	size_t size;
	uint8_t *buf;

	ck_assert_msg(dev->pool.vmm, "the pool is not on VMM: %s", lg.buf);
	tensor_make(&o, _i == 0, 600, 4096);
	ck_assert_int_eq(b->ortho_upload(gctx, &o), 0);
	ck_assert_int_eq(cuda_ortho_devmem(&o, &addr, &size), 0);
	buf = malloc(size);
	dev_read(buf, addr, size);
	/* The scan below can see the pattern where it is. */
	ck_assert_uint_ge(count_pattern(buf, size), _i == 0 ? 600 * 4096 :
			  600 * 4);
	free(buf);
	hold(&hd, &dev->pool, addr, size);
	b->ortho_release(gctx, &o);
	ck_assert_ptr_null(o.dev);
	ck_assert_uint_eq(dev->pool.mapped, 0);	/* released by the pool */
	buf = held_read(&hd, dev->pool.gran);
	ck_assert_uint_eq(count_nonzero(buf + hd.skip, size), 0);
	ck_assert_uint_eq(count_pattern(buf, hd.n * dev->pool.gran), 0);
	free(buf);
	tensor_free(&o);
}
END_TEST

/* Two small tensors in one chunk: freeing one wipes it in place. */
START_TEST(wipe_shared_chunk)
{
	const struct ortho_backend *b = gctx->backend;
	struct backend_ortho o1, o2;
	uint64_t a1, a2;
	size_t s1, s2;
	uint8_t *buf;

	tensor_make(&o1, 1, 64, 256);
	tensor_make(&o2, 1, 64, 256);
	ck_assert_int_eq(b->ortho_upload(gctx, &o1), 0);
	ck_assert_int_eq(b->ortho_upload(gctx, &o2), 0);
	ck_assert_int_eq(cuda_ortho_devmem(&o1, &a1, &s1), 0);
	ck_assert_int_eq(cuda_ortho_devmem(&o2, &a2, &s2), 0);
	if (dev->pool.vmm)
		ck_assert_uint_eq((a1 - dev->pool.base) / dev->pool.gran,
				  (a2 - dev->pool.base) / dev->pool.gran);
	b->ortho_release(gctx, &o1);
	buf = malloc(s1 > s2 ? s1 : s2);
	if (dev->pool.vmm) {	/* still mapped: o2 lives in the chunk */
		dev_read(buf, a1, s1);
		ck_assert_uint_eq(count_nonzero(buf, s1), 0);
	}
	dev_read(buf, a2, s2);
	ck_assert_uint_eq(count_pattern(buf, s2), 64 * 256);
	b->ortho_release(gctx, &o2);
	ck_assert_uint_eq(dev->pool.mapped, 0);
	ck_assert_uint_eq(dev->pool.in_use, 0);
	free(buf);
	tensor_free(&o1);
	tensor_free(&o2);
}
END_TEST

/* Close with an allocation still live: the pool wipes the chunk anyway. */
START_TEST(wipe_at_close)
{
	const struct cuda_api *api = dev->api;
	struct cuda_pool_alloc a;
	struct cuda_pool p;
	struct held hd;
	uint8_t *buf;

	ck_assert_int_eq(cuda_enter(dev), 0);
	ck_assert_int_eq(cuda_pool_init(&p, gctx, api, dev->dev, dev->stream,
					64u << 20, CUDA_POOL_VMM), 0);
	ck_assert_int_eq(cuda_pool_alloc(&p, 3u << 20, &a), 0);
	ck_cu(api->memset_d8_async(a.ptr, 0x5a, a.size, dev->stream), "fill");
	ck_cu(api->stream_synchronize(dev->stream), "sync");
	hold(&hd, &p, a.ptr, a.size);
	tu_log_clear(&lg);
	cuda_pool_fini(&p);
	ck_assert_msg(tu_log_has(&lg, "still live"), "log: %s", lg.buf);
	buf = held_read(&hd, dev->pool.gran);
	ck_assert_uint_eq(count_nonzero(buf, hd.n * dev->pool.gran), 0);
	free(buf);
	cuda_leave(dev);
}
END_TEST

/* In a child, so this process never initialises CUDA before forking. */
static int device_usable(void)
{
	pid_t pid = fork();
	int st = 0;

	if (pid == 0) {
		const struct cuda_api *api;
		CUdevice d;
		int n = 0, major = 0;

		if (cuda_api_get(NULL, ORTHO_LOG_DEBUG, &api) ||
		    api->device_get_count(&n) || n < 1 ||
		    api->device_get(&d, 0) ||
		    api->device_get_attribute(&major,
				CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
				d) || major < 8)
			_exit(1);
		_exit(0);
	}
	return pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) &&
	       WEXITSTATUS(st) == 0;
}

int main(void)
{
	SRunner *sr;
	TCase *tc;
	Suite *s;
	int failed;

	if (!device_usable()) {
		printf("SKIP: no usable CUDA device (driver, sm_80+)\n");
		return 77;
	}
	s = suite_create("cuda_pool");
	tc = tcase_create("pool");
	tcase_set_timeout(tc, 120);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_loop_test(tc, pool_churn, 0, 2);
	tcase_add_loop_test(tc, wipe_on_release, 0, 2);
	tcase_add_test(tc, wipe_shared_chunk);
	tcase_add_test(tc, wipe_at_close);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}

#else /* !HAVE_CUDA */

int main(void)
{
	printf("SKIP: built without the CUDA toolkit\n");
	return 77;
}
#endif
