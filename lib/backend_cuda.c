// SPDX-License-Identifier: MIT
/*
 * The CUDA backend: Base tensors in cuMemAlloc memory, uploaded once; Ortho
 * tensors in the wiping pool (cuda_pool.c); the fused op from the kernels
 * of kernels/gemv_int8.cu, embedded as a fatbin (kernels/cuda.mk) and loaded with
 * cuModuleLoadData. Each library context gets its own CUDA context and
 * stream, so two contexts never share device state.
 *
 * Locking: dev->lock guards the stream, the scratch buffers and the pool;
 * every entry point takes it and makes the CUDA context current for the
 * duration (push/pop), so any thread may call. ortho_linear() callers on
 * several threads therefore queue on one stream, which is what one device
 * does anyway.
 */
#include "config.h"

#ifdef HAVE_CUDA
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_cuda.h"
#include "backend_cuda_priv.h"
#include "ctx.h"
#include "log.h"

/* The fatbin of kernels/gemv_int8.cu, placed by kernels/cuda.mk's generated .S. */
extern const unsigned char okc_fatbin_gemv_int8[]
	__attribute__((visibility("hidden")));

static const char *const kernel_names[CUDA_NFN] = {
	[CUDA_FN_GEMV1] = OKC_FN_GEMV1,
	[CUDA_FN_GEMV4] = OKC_FN_GEMV4,
	[CUDA_FN_GEMV8] = OKC_FN_GEMV8,
	[CUDA_FN_GEMM] = OKC_FN_GEMM,
};

int cuda_enter(struct cuda_dev *d)
{
	int ret;

	pthread_mutex_lock(&d->lock);
	ret = cuda_ck(d->ctx, d->api, d->api->ctx_push_current(d->cu),
		      "cuCtxPushCurrent");
	if (ret)
		pthread_mutex_unlock(&d->lock);
	return ret;
}

void cuda_leave(struct cuda_dev *d)
{
	CUcontext c;

	cuda_ck(d->ctx, d->api, d->api->ctx_pop_current(&c),
		"cuCtxPopCurrent");
	pthread_mutex_unlock(&d->lock);
}

void cuda_drain(struct cuda_dev *d)
{
	cuda_ck(d->ctx, d->api, d->api->stream_synchronize(d->stream),
		"cuStreamSynchronize(after a failed call)");
}

struct cuda_dev *cuda_dev_of(struct ortho_ctx *ctx)
{
	if (!ctx || ctx->backend != &backend_cuda)
		return NULL;
	return ctx->backend_priv;
}

/* Wipe (the bytes are activations of a private model) and free. */
void cuda_buf_drop(struct cuda_dev *d, struct cuda_buf *b)
{
	const struct cuda_api *api = d->api;

	if (!b->ptr)
		return;
	if (!cuda_ck(d->ctx, api, api->memset_d8_async(b->ptr, 0, b->cap,
						       d->stream),
		     "cuMemsetD8Async(scratch)"))
		cuda_ck(d->ctx, api, api->stream_synchronize(d->stream),
			"cuStreamSynchronize(scratch wipe)");
	cuda_ck(d->ctx, api, api->mem_free(b->ptr), "cuMemFree(scratch)");
	b->ptr = 0;
	b->cap = 0;
}

int cuda_buf_reserve(struct cuda_dev *d, struct cuda_buf *b, size_t need)
{
	size_t cap;
	int ret;

	if (b->cap >= need)
		return 0;
	cuda_buf_drop(d, b);
	cap = need < (1u << 16) ? (1u << 16) : need;
	ret = cuda_ck(d->ctx, d->api, d->api->mem_alloc(&b->ptr, cap),
		      "cuMemAlloc(scratch, %zu bytes)", cap);
	if (ret) {
		b->ptr = 0;
		return ret;
	}
	b->cap = cap;
	return 0;
}

/* ---- host memory pinned for uploads ---- */

/*
 * Best effort: an upload from unpinned memory works too (the driver
 * stages it), so a failure is logged once per context (then at debug
 * level) and the memory stays pageable. Entered.
 */
static int hostreg_failed(struct cuda_dev *d, size_t len, CUresult r,
			  int err)
{
	if (d->reg_failures++)
		olog_dbg(d->ctx, "CUDA cuMemHostRegister(%zu bytes): %s",
			 len, r ? cuda_errname(d->api, r) : strerror(-err));
	else
		olog_warn(d->ctx, "CUDA cuMemHostRegister(%zu bytes): %s; "
			  "Ortho uploads copy from pageable host memory "
			  "(slower; logged once)", len,
			  r ? cuda_errname(d->api, r) : strerror(-err));
	return err;
}

int cuda_host_register(struct ortho_ctx *ctx, void *p, size_t len)
{
	struct cuda_dev *d = cuda_dev_of(ctx);
	struct cuda_hostreg *n;
	unsigned int cap;
	CUresult r;
	int ret;

	if (!d)
		return -ENODEV;
	if (!p || !len)
		return -EINVAL;
	ret = cuda_enter(d);
	if (ret)
		return ret;
	if (d->nregs == d->regs_cap) {
		cap = d->regs_cap ? 2 * d->regs_cap : 16;
		n = realloc(d->regs, cap * sizeof(*n));
		if (!n) {
			ret = hostreg_failed(d, len, CUDA_SUCCESS, -ENOMEM);
			goto out;
		}
		d->regs = n;
		d->regs_cap = cap;
	}
	r = d->api->mem_host_register(p, len, 0);
	if (r) {
		ret = hostreg_failed(d, len, r, cuda_errno(r));
		goto out;
	}
	d->regs[d->nregs].p = p;
	d->regs[d->nregs].len = len;
	d->nregs++;
out:
	cuda_leave(d);
	return ret;
}

/*
 * Entered: unpin entry @i. The stream is drained first: a copy still
 * queued from the memory (there should be none: an upload returns after
 * its copy's event) reads it before it is unpinned, and the caller wipes
 * or unmaps it only after this returns.
 */
static int hostreg_drop(struct cuda_dev *d, unsigned int i)
{
	struct cuda_hostreg g = d->regs[i];

	d->regs[i] = d->regs[--d->nregs];
	if (d->stream)
		cuda_ck(d->ctx, d->api, d->api->stream_synchronize(d->stream),
			"cuStreamSynchronize(before cuMemHostUnregister)");
	return cuda_ck(d->ctx, d->api, d->api->mem_host_unregister(g.p),
		       "cuMemHostUnregister(%zu bytes)", g.len);
}

int cuda_host_unregister(struct ortho_ctx *ctx, void *p)
{
	struct cuda_dev *d = cuda_dev_of(ctx);
	unsigned int i;
	int ret;

	if (!d)
		return -ENODEV;
	ret = cuda_enter(d);
	if (ret)
		return ret;
	for (i = 0; i < d->nregs && d->regs[i].p != p; i++)
		;
	ret = i < d->nregs ? hostreg_drop(d, i) : -ENOENT;
	cuda_leave(d);
	return ret;
}

static void cuda_op_host_unregister(struct ortho_ctx *ctx, void *p)
{
	cuda_host_unregister(ctx, p);
}

/* With the context current, at teardown: what the owners left pinned. */
static void hostregs_drop_all(struct cuda_dev *d)
{
	if (d->nregs)
		olog_warn(d->ctx, "CUDA: %u host buffers still pinned at "
			  "close; unpinning them", d->nregs);
	while (d->nregs)
		hostreg_drop(d, d->nregs - 1);
	free(d->regs);
	d->regs = NULL;
	d->regs_cap = 0;
}

/* ---- setup ---- */

/* "auto" and "cuda" mean device 0; backend_select() checked the syntax. */
static unsigned int spec_ordinal(const char *spec)
{
	if (spec && !strncmp(spec, "cuda:", 5))
		return (unsigned int)strtoul(spec + 5, NULL, 10);
	return 0;
}

static int dev_attr(struct cuda_dev *d, CUdevice_attribute a, int *v,
		    const char *what)
{
	return cuda_ck(d->ctx, d->api, d->api->device_get_attribute(v, a,
								     d->dev),
		       "cuDeviceGetAttribute(%s)", what);
}

static int dev_pick(struct cuda_dev *d, unsigned int ordinal, int prio)
{
	const struct cuda_api *api = d->api;
	int n = 0, ret;

	ret = cuda_ck(d->ctx, api, api->device_get_count(&n),
		      "cuDeviceGetCount");
	if (ret)
		return ret == -ENODEV ? ret : -EIO;
	if (n <= 0 || ordinal >= (unsigned int)n) {
		olog(d->ctx, prio, "no CUDA device %u (the driver sees %d)",
		     ordinal, n);
		return -ENODEV;
	}
	ret = cuda_ck(d->ctx, api, api->device_get(&d->dev, (int)ordinal),
		      "cuDeviceGet(%u)", ordinal);
	if (!ret)
		ret = cuda_ck(d->ctx, api, api->device_get_name(d->name,
					(int)sizeof(d->name), d->dev),
			      "cuDeviceGetName");
	if (!ret)
		ret = dev_attr(d, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
			       &d->cc_major, "cc major");
	if (!ret)
		ret = dev_attr(d, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
			       &d->cc_minor, "cc minor");
	if (!ret)
		ret = dev_attr(d, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
			       &d->sms, "SM count");
	if (!ret)
		ret = cuda_ck(d->ctx, api, api->device_total_mem(&d->total_mem,
							      d->dev),
			      "cuDeviceTotalMem");
	if (ret)
		return ret;
	d->name[sizeof(d->name) - 1] = 0;
	d->ordinal = ordinal;
	/* The fatbin holds sm_80 and sm_90 code and compute_90 PTX. */
	if (d->cc_major < 8) {
		olog(d->ctx, prio, "CUDA device %u (%s) is sm_%d%d; ortho's "
		     "kernels need sm_80 or newer", ordinal, d->name,
		     d->cc_major, d->cc_minor);
		return -ENODEV;
	}
	return 0;
}

static int dev_module(struct cuda_dev *d)
{
	const struct cuda_api *api = d->api;
	unsigned int i;
	int ret;

	ret = cuda_ck(d->ctx, api, api->module_load_data(&d->mod,
						okc_fatbin_gemv_int8),
		      "cuModuleLoadData(gemv_int8 fatbin) on %s (sm_%d%d)",
		      d->name, d->cc_major, d->cc_minor);
	if (ret) {
		d->mod = NULL;
		return ret;
	}
	for (i = 0; i < CUDA_NFN; i++) {
		ret = cuda_ck(d->ctx, api, api->module_get_function(&d->fn[i],
						d->mod, kernel_names[i]),
			      "cuModuleGetFunction(%s)", kernel_names[i]);
		if (ret)
			return ret;
	}
	return 0;
}

/* With the context current: stream, kernels, pool. */
static int dev_setup(struct cuda_dev *d)
{
	const struct cuda_api *api = d->api;
	int ret;

	ret = cuda_ck(d->ctx, api, api->stream_create(&d->stream,
						CU_STREAM_NON_BLOCKING),
		      "cuStreamCreate");
	if (ret) {
		d->stream = NULL;
		return ret;
	}
	ret = dev_module(d);
	if (ret)
		return ret;
	return cuda_pool_init(&d->pool, d->ctx, api, d->dev, d->stream,
			      d->total_mem, CUDA_POOL_AUTO);
}

/* With the context current: undo dev_setup(), wiping as it goes. */
static void dev_teardown(struct cuda_dev *d)
{
	const struct cuda_api *api = d->api;

	hostregs_drop_all(d);
	if (d->stream) {
		cuda_buf_drop(d, &d->xbuf);
		cuda_buf_drop(d, &d->ybuf);
		cuda_pool_fini(&d->pool);
	}
	if (d->mod)
		cuda_ck(d->ctx, api, api->module_unload(d->mod),
			"cuModuleUnload");
	if (d->stream)
		cuda_ck(d->ctx, api, api->stream_destroy(d->stream),
			"cuStreamDestroy");
	d->mod = NULL;
	d->stream = NULL;
}

static void dev_free(struct cuda_dev *d)
{
	CUcontext c;

	if (d->cu) {
		if (!cuda_ck(d->ctx, d->api, d->api->ctx_push_current(d->cu),
			     "cuCtxPushCurrent(teardown)")) {
			dev_teardown(d);
			cuda_ck(d->ctx, d->api, d->api->ctx_pop_current(&c),
				"cuCtxPopCurrent(teardown)");
		}
		cuda_ck(d->ctx, d->api, d->api->ctx_destroy(d->cu),
			"cuCtxDestroy");
	}
	pthread_mutex_destroy(&d->lock);
	free(d->regs);
	free(d);
}

static int cuda_init(struct ortho_ctx *ctx, const char *spec)
{
	int quiet = !spec || !strcmp(spec, "auto");
	int prio = quiet ? ORTHO_LOG_DEBUG : ORTHO_LOG_ERR;
	struct cuda_dev *d;
	CUcontext c;
	int ret;

	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->ctx = ctx;
	pthread_mutex_init(&d->lock, NULL);
	ret = cuda_api_get(ctx, prio, &d->api);
	if (!ret)
		ret = dev_pick(d, spec_ordinal(spec), prio);
	if (ret)
		goto err;
	ret = cuda_ck(ctx, d->api, d->api->ctx_create ?
			d->api->ctx_create(&d->cu, 0, d->dev) :
			d->api->ctx_create_v4(&d->cu, NULL, 0, d->dev),
		      "cuCtxCreate on device %u (%s)", d->ordinal, d->name);
	if (ret) {
		d->cu = NULL;
		goto err;
	}
	/* cuCtxCreate made it current here; it is pushed per call instead. */
	ret = dev_setup(d);
	cuda_ck(ctx, d->api, d->api->ctx_pop_current(&c), "cuCtxPopCurrent");
	if (ret)
		goto err;
	ctx->backend_priv = d;
	snprintf(ctx->backend_name, sizeof(ctx->backend_name), "cuda:%u",
		 d->ordinal);
	olog_info(ctx, "backend %s: %s (sm_%d%d, %d SMs, %.1f GiB), driver "
		  "%d.%d, Ortho pool on %s", ctx->backend_name, d->name,
		  d->cc_major, d->cc_minor, d->sms,
		  (double)d->total_mem / (1 << 30),
		  d->api->driver_version / 1000,
		  d->api->driver_version % 1000 / 10,
		  d->pool.vmm ? "virtual memory management" : "cuMemAlloc");
	return 0;
err:
	dev_free(d);
	return ret;
}

static void cuda_fini(struct ortho_ctx *ctx)
{
	struct cuda_dev *d = ctx->backend_priv;

	if (!d)
		return;
	ctx->backend_priv = NULL;
	dev_free(d);
}

/* ---- Base ---- */

static int cuda_base_upload(struct ortho_ctx *ctx, struct backend_q8 *t)
{
	struct cuda_dev *d = ctx->backend_priv;
	const struct cuda_api *api = d->api;
	const struct ok_q8 *h = &t->host;
	struct cuda_q8 *q;
	size_t qbytes, sbytes, ng;
	int ret;

	t->dev = NULL;
	if (!h->rows || !h->cols || !h->group || !h->q || !h->scales)
		return -EINVAL;
	ng = ((size_t)h->cols + h->group - 1) / h->group;
	qbytes = (size_t)h->rows * h->cols;
	sbytes = (size_t)h->rows * ng * sizeof(float);
	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->sc_off = (qbytes + CUDA_POOL_ALIGN - 1) / CUDA_POOL_ALIGN *
		    CUDA_POOL_ALIGN;
	q->size = q->sc_off + sbytes;
	ret = cuda_enter(d);
	if (ret)
		goto err_free;
	ret = cuda_ck(ctx, api, api->mem_alloc(&q->mem, q->size),
		      "cuMemAlloc(Base %ux%u, %zu bytes)", h->rows, h->cols,
		      q->size);
	if (ret)
		goto err_leave;
	/*
	 * On the backend's stream, then waited for: a synchronous
	 * cuMemcpyHtoD from pageable memory runs on the legacy default
	 * stream and may return before its DMA has landed, and the
	 * non-blocking stream the kernels run on does not wait for it.
	 */
	ret = cuda_ck(ctx, api, api->memcpy_htod_async(q->mem, h->q, qbytes,
						       d->stream),
		      "cuMemcpyHtoDAsync(Base %ux%u weights)", h->rows,
		      h->cols);
	if (!ret)
		ret = cuda_ck(ctx, api, api->memcpy_htod_async(q->mem +
							q->sc_off, h->scales,
							sbytes, d->stream),
			      "cuMemcpyHtoDAsync(Base %ux%u scales)", h->rows,
			      h->cols);
	if (ret)
		cuda_drain(d);
	else
		ret = cuda_ck(ctx, api, api->stream_synchronize(d->stream),
			      "cuStreamSynchronize(Base %ux%u upload)",
			      h->rows, h->cols);
	if (ret) {
		cuda_ck(ctx, api, api->mem_free(q->mem), "cuMemFree(Base)");
		goto err_leave;
	}
	cuda_leave(d);
	t->dev = q;
	return 0;
err_leave:
	cuda_leave(d);
err_free:
	free(q);
	return ret;
}

/* Base is public (a function of the public checkpoint): freed, not wiped. */
static void cuda_base_release(struct ortho_ctx *ctx, struct backend_q8 *t)
{
	struct cuda_dev *d = ctx->backend_priv;
	struct cuda_q8 *q = t->dev;

	if (!q)
		return;
	if (!cuda_enter(d)) {
		/* A launch queued before a failed call may still read it. */
		cuda_drain(d);
		cuda_ck(ctx, d->api, d->api->mem_free(q->mem),
			"cuMemFree(Base)");
		cuda_leave(d);
	}
	free(q);
	t->dev = NULL;
}

/* ---- Ortho ---- */

/* Byte offsets of one Ortho tensor's parts in its pool allocation. */
struct ortho_layout {
	size_t nnz, csz;		/* entries; bytes per column index */
	size_t rp_bytes, col_off, col_bytes, val_off, val_bytes, total;
};

static size_t align_up(size_t v)
{
	return (v + CUDA_POOL_ALIGN - 1) / CUDA_POOL_ALIGN * CUDA_POOL_ALIGN;
}

/*
 * The kernels index x by column and the arrays by row pointer without
 * checks, and a wild device read kills the whole context: so every row
 * pointer and column index is checked here, once, on the host.
 */
static int csr_check(struct ortho_ctx *ctx, const struct ok_ortho *h,
		     size_t *nnz)
{
	const uint32_t *rp = h->rowptr;
	size_t k;
	uint32_t r, c;

	if (!rp || !h->col)
		return -EINVAL;
	for (r = 0; r < h->rows; r++) {
		if (rp[r + 1] < rp[r]) {
			olog_err(ctx, "Ortho %ux%u: row pointer of row %u "
				 "goes back (%u < %u)", h->rows, h->cols,
				 r + 1, rp[r + 1], rp[r]);
			return -EINVAL;
		}
	}
	for (k = rp[0]; k < rp[h->rows]; k++) {
		c = h->encoding == OK_CSR16 ?
			((const uint16_t *)h->col)[k] :
			((const uint32_t *)h->col)[k];
		if (c >= h->cols) {
			olog_err(ctx, "Ortho %ux%u: entry %zu has column %u",
				 h->rows, h->cols, k, c);
			return -EINVAL;
		}
	}
	*nnz = rp[h->rows];
	return 0;
}

static int ortho_layout(struct ortho_ctx *ctx, const struct ok_ortho *h,
			struct ortho_layout *l)
{
	int ret;

	memset(l, 0, sizeof(*l));
	if (!h->rows || !h->cols || !h->val) {
		olog_err(ctx, "Ortho %ux%u: empty view", h->rows, h->cols);
		return -EINVAL;
	}
	switch (h->encoding) {
	case OK_DENSE16:
		l->nnz = (size_t)h->rows * h->cols;
		l->val_bytes = l->nnz * sizeof(uint16_t);
		l->total = l->val_bytes;
		return 0;
	case OK_CSR16:
		l->csz = sizeof(uint16_t);
		break;
	case OK_CSR32:
		l->csz = sizeof(uint32_t);
		break;
	default:
		olog_err(ctx, "Ortho %ux%u: unknown encoding %u", h->rows,
			 h->cols, h->encoding);
		return -EINVAL;
	}
	ret = csr_check(ctx, h, &l->nnz);
	if (ret)
		return ret;
	l->rp_bytes = ((size_t)h->rows + 1) * sizeof(uint32_t);
	l->col_off = align_up(l->rp_bytes);
	l->col_bytes = l->nnz * l->csz;
	l->val_off = align_up(l->col_off + l->col_bytes);
	l->val_bytes = l->nnz * sizeof(uint16_t);
	l->total = l->val_off + l->val_bytes;
	return 0;
}

static int copy_in(struct cuda_dev *d, CUdeviceptr dst, const void *src,
		   size_t bytes, const char *what)
{
	if (!bytes)
		return 0;
	return cuda_ck(d->ctx, d->api, d->api->memcpy_htod_async(dst, src,
						bytes, d->stream),
		       "cuMemcpyHtoDAsync(Ortho %s, %zu bytes)", what, bytes);
}

/* Entered: allocate, queue the copies, mark their end with co->done. */
static int ortho_queue(struct cuda_dev *d, const struct ok_ortho *h,
		       const struct ortho_layout *l, struct cuda_ortho *co)
{
	const struct cuda_api *api = d->api;
	CUdeviceptr base;
	int ret;

	ret = cuda_pool_alloc(&d->pool, l->total, &co->mem);
	if (ret)
		return ret;
	base = co->mem.ptr;
	ret = cuda_ck(d->ctx, api, api->event_create(&co->done,
						CU_EVENT_DISABLE_TIMING),
		      "cuEventCreate(Ortho upload)");
	if (ret) {
		co->done = NULL;
		return ret;
	}
	co->k.encoding = h->encoding;
	co->k.val = base + l->val_off;
	if (h->encoding != OK_DENSE16) {
		co->k.rowptr = base;
		co->k.col = base + l->col_off;
		ret = copy_in(d, co->k.rowptr, h->rowptr, l->rp_bytes,
			      "row pointers");
		if (!ret)
			ret = copy_in(d, co->k.col, h->col, l->col_bytes,
				      "columns");
	}
	if (!ret)
		ret = copy_in(d, co->k.val, h->val, l->val_bytes, "values");
	if (!ret)
		ret = cuda_ck(d->ctx, api, api->event_record(co->done,
							     d->stream),
			      "cuEventRecord(Ortho upload)");
	return ret;
}

int cuda_ortho_upload_async(struct ortho_ctx *ctx, struct backend_ortho *o)
{
	struct cuda_dev *d = cuda_dev_of(ctx);
	struct ortho_layout l;
	struct cuda_ortho *co;
	int ret;

	if (!d)
		return -ENODEV;
	o->dev = NULL;
	ret = ortho_layout(ctx, &o->host, &l);
	if (ret)
		return ret;
	co = calloc(1, sizeof(*co));
	if (!co)
		return -ENOMEM;
	ret = cuda_enter(d);
	if (ret) {
		free(co);
		return ret;
	}
	ret = ortho_queue(d, &o->host, &l, co);
	if (ret) {
		if (co->done)
			cuda_ck(ctx, d->api, d->api->event_destroy(co->done),
				"cuEventDestroy(Ortho upload)");
		/*
		 * The copies queued finish before the caller may touch the
		 * host bytes again; then what landed is wiped.
		 */
		cuda_drain(d);
		cuda_pool_free(&d->pool, &co->mem);
		cuda_leave(d);
		free(co);
		return ret;
	}
	cuda_leave(d);
	o->dev = co;
	return 0;
}

/* Only the context is made current: the wait touches no shared state. */
int cuda_ortho_upload_wait(struct ortho_ctx *ctx, struct backend_ortho *o)
{
	struct cuda_dev *d = cuda_dev_of(ctx);
	struct cuda_ortho *co = o->dev;
	CUcontext c;
	int ret;

	if (!d)
		return -ENODEV;
	if (!co)
		return -EINVAL;
	ret = cuda_ck(ctx, d->api, d->api->ctx_push_current(d->cu),
		      "cuCtxPushCurrent");
	if (ret)
		return ret;
	ret = cuda_ck(ctx, d->api, d->api->event_synchronize(co->done),
		      "cuEventSynchronize(Ortho %ux%u upload)", o->host.rows,
		      o->host.cols);
	cuda_ck(ctx, d->api, d->api->ctx_pop_current(&c), "cuCtxPopCurrent");
	return ret;
}

int cuda_ortho_devmem(const struct backend_ortho *o, uint64_t *addr,
		      size_t *size)
{
	const struct cuda_ortho *co = o->dev;

	if (!co || !co->mem.ptr)
		return -ENOENT;
	*addr = co->mem.ptr;
	*size = co->mem.size;
	return 0;
}

static int cuda_ortho_upload(struct ortho_ctx *ctx, struct backend_ortho *o)
{
	int ret;

	ret = cuda_ortho_upload_async(ctx, o);
	if (ret)
		return ret;
	ret = cuda_ortho_upload_wait(ctx, o);
	if (ret)
		backend_cuda.ortho_release(ctx, o);
	return ret;
}

/* Wipe on the device (the pool does it), then forget. */
static void cuda_ortho_release(struct ortho_ctx *ctx, struct backend_ortho *o)
{
	struct cuda_dev *d = ctx->backend_priv;
	struct cuda_ortho *co = o->dev;
	int ret;

	if (!co)
		return;
	ret = cuda_enter(d);
	if (!ret) {
		if (co->done)
			cuda_ck(ctx, d->api, d->api->event_destroy(co->done),
				"cuEventDestroy");
		ret = cuda_pool_free(&d->pool, &co->mem);
		cuda_leave(d);
	}
	if (ret)
		olog_err(ctx, "Ortho tensor %ux%u: device wipe failed (%s); "
			 "its %zu bytes stay out of use", o->host.rows,
			 o->host.cols, strerror(-ret), co->mem.size);
	free(co);
	o->dev = NULL;
}

/* ---- the fused op ---- */

int cuda_args_fill(struct ortho_ctx *ctx, const struct backend_q8 *t,
		   const struct backend_ortho *const *o, unsigned int no,
		   uint32_t ntok, struct okc_args *a)
{
	const struct cuda_q8 *q = t->dev;
	const struct ok_q8 *h = &t->host;
	unsigned int i;

	if (!q || !ntok)
		return -EINVAL;
	if (no > OKC_MAX_ORTHO)
		return -E2BIG;
	memset(a, 0, sizeof(*a));
	a->q = q->mem;
	a->scales = q->mem + q->sc_off;
	a->rows = h->rows;
	a->cols = h->cols;
	a->group = h->group;
	a->ngroups = (uint32_t)(((uint64_t)h->cols + h->group - 1) / h->group);
	a->ntok = ntok;
	a->no = no;
	for (i = 0; i < no; i++) {
		const struct cuda_ortho *co = o[i]->dev;

		if (!co || o[i]->host.rows != h->rows ||
		    o[i]->host.cols != h->cols) {
			olog_err(ctx, "Ortho delta %u: %s for a %ux%u Base",
				 i, co ? "shape differs" : "not uploaded",
				 h->rows, h->cols);
			return -EINVAL;
		}
		a->o[i] = co->k;
	}
	return 0;
}

int cuda_launch(struct cuda_dev *d, const struct okc_args *a)
{
	unsigned int gx, gy, nt;
	void *params[] = { (void *)a };
	CUfunction f;

	if (a->ntok <= OKC_GEMV_MAX_NTOK) {
		nt = a->ntok == 1 ? 1 : a->ntok <= 4 ? 4 : 8;
		f = d->fn[nt == 1 ? CUDA_FN_GEMV1 :
			  nt == 4 ? CUDA_FN_GEMV4 : CUDA_FN_GEMV8];
		gx = (a->rows + OKC_GEMV_ROWS - 1) / OKC_GEMV_ROWS;
		gy = (a->ntok + nt - 1) / nt;
	} else {
		f = d->fn[CUDA_FN_GEMM];
		gx = (unsigned int)(((uint64_t)a->ntok + OKC_GEMM_BN - 1) /
				    OKC_GEMM_BN);
		gy = (a->rows + OKC_GEMM_BM - 1) / OKC_GEMM_BM;
		if (gy > 65535) {
			olog_err(d->ctx, "CUDA GEMM: %u rows is more than the "
				 "grid holds (%u)", a->rows,
				 65535u * OKC_GEMM_BM);
			return -E2BIG;
		}
	}
	return cuda_ck(d->ctx, d->api,
		       d->api->launch_kernel(f, gx, gy, 1, OKC_THREADS, 1, 1,
					     0, d->stream, params, NULL),
		       "cuLaunchKernel(%ux%u, %u tokens, %u deltas)", a->rows,
		       a->cols, a->ntok, a->no);
}

static int cuda_linear(struct ortho_ctx *ctx, const struct backend_q8 *t,
		       const struct backend_ortho *const *o, unsigned int no,
		       const float *x, float *y, uint32_t ntok)
{
	struct cuda_dev *d = ctx->backend_priv;
	const struct cuda_api *api = d->api;
	size_t xb, yb;
	struct okc_args a;
	int ret;

	ret = cuda_args_fill(ctx, t, o, no, ntok, &a);
	if (ret)
		return ret;
	xb = (size_t)ntok * a.cols * sizeof(float);
	yb = (size_t)ntok * a.rows * sizeof(float);
	ret = cuda_enter(d);
	if (ret)
		return ret;
	ret = cuda_buf_reserve(d, &d->xbuf, xb);
	if (!ret)
		ret = cuda_buf_reserve(d, &d->ybuf, yb);
	if (ret)
		goto out;
	a.x = d->xbuf.ptr;
	a.y = d->ybuf.ptr;
	ret = cuda_ck(ctx, api, api->memcpy_htod_async(a.x, x, xb, d->stream),
		      "cuMemcpyHtoDAsync(x, %zu bytes)", xb);
	if (!ret)
		ret = cuda_launch(d, &a);
	if (!ret)
		ret = cuda_ck(ctx, api, api->memcpy_dtoh_async(y, a.y, yb,
							       d->stream),
			      "cuMemcpyDtoHAsync(y, %zu bytes)", yb);
	if (!ret)
		ret = cuda_ck(ctx, api, api->stream_synchronize(d->stream),
			      "cuStreamSynchronize(linear %ux%u)", a.rows,
			      a.cols);
	else
		/* Nothing queued may read x or write y after the return. */
		cuda_drain(d);
out:
	cuda_leave(d);
	return ret;
}

const struct ortho_backend backend_cuda = {
	.name = "cuda",
	.init = cuda_init,
	.fini = cuda_fini,
	.base_upload = cuda_base_upload,
	.base_release = cuda_base_release,
	.ortho_upload = cuda_ortho_upload,
	.ortho_release = cuda_ortho_release,
	.linear = cuda_linear,
	.host_register = cuda_host_register,
	.host_unregister = cuda_op_host_unregister,
};
#endif /* HAVE_CUDA */
