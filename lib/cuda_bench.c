// SPDX-License-Identifier: MIT
/*
 * Device-side timings for ortho-bench and tests/gpu/run.sh: the fused
 * kernels alone (no host copies in the timed span) and the device's copy
 * rate, measured in the same process so the two compare as a ratio. One
 * matrix at a time (cuda_bench_gemv(), backend_cuda.h), or a resident set
 * of them timed a pass at a time (cuda_bench_set_*(), cuda_bench.h).
 */
#include "config.h"

#ifdef HAVE_CUDA
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_cuda.h"
#include "backend_cuda_priv.h"
#include "cuda_bench.h"
#include "log.h"

/* Launches before timing starts: module load, clocks, caches. */
#define BENCH_WARMUP 3
/*
 * A set's pass is queued behind up to HEAD_MAX wipes of a HEAD_BYTES pad
 * (each some 20 us of device time), so the device is still busy with them
 * while the launches are issued and the span holds the kernels back to
 * back, not the host's launch latency (as long as a launch is issued
 * faster than the kernel runs).
 */
#define HEAD_BYTES (64u << 20)
#define HEAD_MAX 64u

struct bench_timer {
	CUevent start, stop;
};

static int timer_new(struct cuda_dev *d, struct bench_timer *t)
{
	int ret;

	t->start = t->stop = NULL;
	ret = cuda_ck(d->ctx, d->api, d->api->event_create(&t->start, 0),
		      "cuEventCreate(bench)");
	if (!ret)
		ret = cuda_ck(d->ctx, d->api, d->api->event_create(&t->stop, 0),
			      "cuEventCreate(bench)");
	return ret;
}

static void timer_free(struct cuda_dev *d, struct bench_timer *t)
{
	if (t->start)
		cuda_ck(d->ctx, d->api, d->api->event_destroy(t->start),
			"cuEventDestroy(bench)");
	if (t->stop)
		cuda_ck(d->ctx, d->api, d->api->event_destroy(t->stop),
			"cuEventDestroy(bench)");
}

static int timer_mark(struct cuda_dev *d, CUevent e)
{
	return cuda_ck(d->ctx, d->api, d->api->event_record(e, d->stream),
		       "cuEventRecord(bench)");
}

/* Wait for the stop mark. Return: 0 and the span in seconds, or -errno. */
static int timer_read(struct cuda_dev *d, struct bench_timer *t, double *s)
{
	float ms = 0;
	int ret;

	ret = cuda_ck(d->ctx, d->api, d->api->event_synchronize(t->stop),
		      "cuEventSynchronize(bench)");
	if (!ret)
		ret = cuda_ck(d->ctx, d->api,
			      d->api->event_elapsed_time(&ms, t->start,
							 t->stop),
			      "cuEventElapsedTime");
	*s = ms / 1e3;
	return ret;
}

/* Entered: x in, warm up, @iters timed launches, optionally y out. */
static int bench_run(struct cuda_dev *d, struct okc_args *a, const float *x,
		     float *y, unsigned int iters, double *sec)
{
	const struct cuda_api *api = d->api;
	size_t xb = (size_t)a->ntok * a->cols * sizeof(float);
	size_t yb = (size_t)a->ntok * a->rows * sizeof(float);
	struct bench_timer t = { NULL, NULL };
	unsigned int i;
	double s = 0;
	int ret;

	ret = cuda_buf_reserve(d, &d->xbuf, xb);
	if (!ret)
		ret = cuda_buf_reserve(d, &d->ybuf, yb);
	if (ret)
		return ret;
	a->x = d->xbuf.ptr;
	a->y = d->ybuf.ptr;
	ret = cuda_ck(d->ctx, api, api->memcpy_htod_async(a->x, x, xb,
							  d->stream),
		      "cuMemcpyHtoDAsync(bench x)");
	if (!ret)
		ret = timer_new(d, &t);
	for (i = 0; !ret && i < BENCH_WARMUP; i++)
		ret = cuda_launch(d, a);
	if (!ret)
		ret = timer_mark(d, t.start);
	for (i = 0; !ret && i < iters; i++)
		ret = cuda_launch(d, a);
	if (!ret)
		ret = timer_mark(d, t.stop);
	if (!ret)
		ret = timer_read(d, &t, &s);
	if (!ret && y)
		ret = cuda_ck(d->ctx, api, api->memcpy_dtoh(y, a->y, yb),
			      "cuMemcpyDtoH(bench y)");
	if (ret)
		cuda_drain(d);
	timer_free(d, &t);
	*sec = s / iters;
	return ret;
}

int cuda_bench_gemv(struct ortho_ctx *ctx, const struct ok_q8 *m,
		    const struct ok_ortho *const *o, unsigned int no,
		    const float *x, float *y, uint32_t ntok,
		    unsigned int iters, double *sec)
{
	struct cuda_dev *d = cuda_dev_of(ctx);
	struct backend_q8 bq = { .host = *m };
	const struct backend_ortho **bop = NULL;
	struct backend_ortho *bo = NULL;
	unsigned int i, up = 0;
	struct okc_args a;
	int ret;

	if (!d)
		return -ENODEV;
	if (!iters || !ntok)
		return -EINVAL;
	if (no > OKC_MAX_ORTHO)
		return -E2BIG;
	bo = calloc(no ? no : 1, sizeof(*bo));
	bop = calloc(no ? no : 1, sizeof(*bop));
	ret = bo && bop ? 0 : -ENOMEM;
	if (!ret)
		ret = backend_cuda.base_upload(ctx, &bq);
	for (; !ret && up < no; up++) {
		bo[up].host = *o[up];
		bop[up] = &bo[up];
		ret = backend_cuda.ortho_upload(ctx, &bo[up]);
	}
	if (!ret)
		ret = cuda_args_fill(ctx, &bq, bop, no, ntok, &a);
	if (!ret)
		ret = cuda_enter(d);
	if (!ret) {
		ret = bench_run(d, &a, x, y, iters, sec);
		cuda_leave(d);
	}
	for (i = 0; bo && i < up; i++)
		backend_cuda.ortho_release(ctx, &bo[i]);
	backend_cuda.base_release(ctx, &bq);
	free(bop);
	free(bo);
	return ret;
}

/* Entered: two buffers, one warm-up copy, @iters timed copies. */
static int copy_run(struct cuda_dev *d, CUdeviceptr src, CUdeviceptr dst,
		    size_t bytes, unsigned int iters, double *s)
{
	const struct cuda_api *api = d->api;
	struct bench_timer t = { NULL, NULL };
	unsigned int i;
	int ret;

	ret = cuda_ck(d->ctx, api, api->memset_d8_async(src, 0x5a, bytes,
							d->stream),
		      "cuMemsetD8Async(bench)");
	if (!ret)
		ret = timer_new(d, &t);
	if (!ret)
		ret = cuda_ck(d->ctx, api, api->memcpy_dtod_async(dst, src,
						bytes, d->stream),
			      "cuMemcpyDtoDAsync(bench warm-up)");
	if (!ret)
		ret = timer_mark(d, t.start);
	for (i = 0; !ret && i < iters; i++)
		ret = cuda_ck(d->ctx, api, api->memcpy_dtod_async(dst, src,
						bytes, d->stream),
			      "cuMemcpyDtoDAsync(bench, %zu bytes)", bytes);
	if (!ret)
		ret = timer_mark(d, t.stop);
	if (!ret)
		ret = timer_read(d, &t, s);
	if (ret)
		cuda_drain(d);
	timer_free(d, &t);
	return ret;
}

int cuda_copy_bandwidth(struct ortho_ctx *ctx, size_t bytes,
			unsigned int iters, double *bytes_per_sec)
{
	struct cuda_dev *d = cuda_dev_of(ctx);
	CUdeviceptr src = 0, dst = 0;
	double s = 0;
	int ret;

	if (!d)
		return -ENODEV;
	if (!bytes || !iters)
		return -EINVAL;
	ret = cuda_enter(d);
	if (ret)
		return ret;
	ret = cuda_ck(ctx, d->api, d->api->mem_alloc(&src, bytes),
		      "cuMemAlloc(bench source, %zu bytes)", bytes);
	if (!ret)
		ret = cuda_ck(ctx, d->api, d->api->mem_alloc(&dst, bytes),
			      "cuMemAlloc(bench target, %zu bytes)", bytes);
	if (!ret)
		ret = copy_run(d, src, dst, bytes, iters, &s);
	if (dst)
		cuda_ck(ctx, d->api, d->api->mem_free(dst),
			"cuMemFree(bench target)");
	if (src)
		cuda_ck(ctx, d->api, d->api->mem_free(src),
			"cuMemFree(bench source)");
	cuda_leave(d);
	if (!ret && s <= 0)
		ret = -EIO;
	if (!ret)
		*bytes_per_sec = 2.0 * (double)bytes * iters / s;
	return ret;
}

int cuda_device_describe(struct ortho_ctx *ctx, char *buf, size_t len)
{
	struct cuda_dev *d = cuda_dev_of(ctx);

	if (!d)
		return -ENODEV;
	snprintf(buf, len, "%s, sm_%d%d, %d SMs, %.1f GiB, driver %d.%d",
		 d->name, d->cc_major, d->cc_minor, d->sms,
		 (double)d->total_mem / (1 << 30),
		 d->api->driver_version / 1000,
		 d->api->driver_version % 1000 / 10);
	return 0;
}

int cuda_bench_device(struct ortho_ctx *ctx, struct cuda_bench_dev *dev)
{
	struct cuda_dev *d = cuda_dev_of(ctx);
	int l2 = 0, ret;

	if (!d)
		return -ENODEV;
	memset(dev, 0, sizeof(*dev));
	ret = cuda_device_describe(ctx, dev->desc, sizeof(dev->desc));
	if (!ret)
		ret = cuda_ck(ctx, d->api, d->api->device_get_attribute(&l2,
					CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE,
					d->dev),
			      "cuDeviceGetAttribute(L2 size)");
	if (ret)
		return ret;
	dev->l2_bytes = l2 > 0 ? (size_t)l2 : 0;
	ret = cuda_enter(d);
	if (ret)
		return ret;
	ret = cuda_ck(ctx, d->api, d->api->mem_get_info(&dev->free_bytes,
							&dev->total_bytes),
		      "cuMemGetInfo");
	cuda_leave(d);
	return ret;
}

/* The choice cuda_launch() makes. */
const char *cuda_bench_kernel(uint32_t ntok)
{
	if (ntok > OKC_GEMV_MAX_NTOK)
		return OKC_FN_GEMM;
	return ntok == 1 ? OKC_FN_GEMV1 : ntok <= 4 ? OKC_FN_GEMV4 :
	       OKC_FN_GEMV8;
}

struct cuda_bench_set {
	struct ortho_ctx *ctx;
	struct cuda_dev *d;
	uint32_t n, ntok;
	struct backend_q8 *q;		/* n */
	struct backend_ortho *o;	/* n, or NULL: no deltas */
	uint32_t nq, no;		/* uploaded so far */
	struct cuda_buf x, y;		/* the set's own, not the op's */
	size_t xbytes, ybytes;
	CUdeviceptr pad;		/* the head start; 0: none */
};

static int set_shapes_ok(struct ortho_ctx *ctx, const struct ok_q8 *m,
			 const struct ok_ortho *o, uint32_t n)
{
	uint32_t i;

	for (i = 0; i < n; i++) {
		if (m[i].rows != m[0].rows || m[i].cols != m[0].cols ||
		    m[i].group != m[0].group ||
		    (o && (o[i].rows != m[0].rows ||
			   o[i].cols != m[0].cols))) {
			olog_err(ctx, "bench set: matrix %u is not %ux%u", i,
				 m[0].rows, m[0].cols);
			return -EINVAL;
		}
	}
	return 0;
}

/* Entered: the set's x (copied in) and y. */
static int set_buffers(struct cuda_bench_set *s, const float *x)
{
	struct cuda_dev *d = s->d;
	int ret;

	ret = cuda_buf_reserve(d, &s->x, s->xbytes);
	if (!ret)
		ret = cuda_buf_reserve(d, &s->y, s->ybytes);
	if (!ret)
		ret = cuda_ck(s->ctx, d->api,
			      d->api->memcpy_htod_async(s->x.ptr, x, s->xbytes,
							d->stream),
			      "cuMemcpyHtoDAsync(bench set x)");
	if (!ret)
		ret = cuda_ck(s->ctx, d->api,
			      d->api->stream_synchronize(d->stream),
			      "cuStreamSynchronize(bench set x)");
	/* Without room for the pad a pass has no head start: no error. */
	if (!ret) {
		CUresult r = d->api->mem_alloc(&s->pad, HEAD_BYTES);

		if (r != CUDA_SUCCESS) {
			olog_info(s->ctx, "bench set: cuMemAlloc(head start, "
				  "%u MiB): %s; passes start cold",
				  HEAD_BYTES >> 20, cuda_errname(d->api, r));
			s->pad = 0;
		}
	}
	return ret;
}

int cuda_bench_set_new(struct ortho_ctx *ctx, const struct ok_q8 *m,
		       const struct ok_ortho *o, uint32_t n, const float *x,
		       uint32_t ntok, struct cuda_bench_set **out)
{
	struct cuda_dev *d = cuda_dev_of(ctx);
	struct cuda_bench_set *s;
	int ret;

	*out = NULL;
	if (!d)
		return -ENODEV;
	if (!m || !n || !x || !ntok)
		return -EINVAL;
	ret = set_shapes_ok(ctx, m, o, n);
	if (ret)
		return ret;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->ctx = ctx;
	s->d = d;
	s->n = n;
	s->ntok = ntok;
	s->xbytes = (size_t)ntok * m[0].cols * sizeof(float);
	s->ybytes = (size_t)ntok * m[0].rows * sizeof(float);
	s->q = calloc(n, sizeof(*s->q));
	s->o = o ? calloc(n, sizeof(*s->o)) : NULL;
	ret = s->q && (s->o || !o) ? 0 : -ENOMEM;
	for (; !ret && s->nq < n; s->nq++) {
		s->q[s->nq].host = m[s->nq];
		ret = backend_cuda.base_upload(ctx, &s->q[s->nq]);
		if (ret)
			break;
	}
	for (; !ret && o && s->no < n; s->no++) {
		s->o[s->no].host = o[s->no];
		ret = backend_cuda.ortho_upload(ctx, &s->o[s->no]);
		if (ret)
			break;
	}
	if (!ret)
		ret = cuda_enter(d);
	if (!ret) {
		ret = set_buffers(s, x);
		cuda_leave(d);
	}
	if (ret) {
		cuda_bench_set_free(s);
		return ret;
	}
	*out = s;
	return 0;
}

/* Entered: queue matrix @i's kernel. */
static int set_launch(struct cuda_bench_set *s, uint32_t i, int with_ortho)
{
	const struct backend_ortho *op[1] = { NULL };
	struct okc_args a;
	int ret;

	if (with_ortho)
		op[0] = &s->o[i];
	ret = cuda_args_fill(s->ctx, &s->q[i], op, with_ortho ? 1 : 0,
			     s->ntok, &a);
	if (ret)
		return ret;
	a.x = s->x.ptr;
	a.y = s->y.ptr;
	return cuda_launch(s->d, &a);
}

int cuda_bench_set_pass(struct cuda_bench_set *s, int with_ortho,
			double *sec)
{
	struct bench_timer t = { NULL, NULL };
	double span = 0;
	uint32_t i;
	int ret;

	if (with_ortho && !s->o)
		return -EINVAL;
	ret = cuda_enter(s->d);
	if (ret)
		return ret;
	ret = timer_new(s->d, &t);
	for (i = 0; !ret && s->pad && i < s->n && i < HEAD_MAX; i++)
		ret = cuda_ck(s->ctx, s->d->api,
			      s->d->api->memset_d8_async(s->pad, 0, HEAD_BYTES,
							 s->d->stream),
			      "cuMemsetD8Async(bench head start)");
	if (!ret)
		ret = timer_mark(s->d, t.start);
	for (i = 0; !ret && i < s->n; i++)
		ret = set_launch(s, i, with_ortho);
	if (!ret)
		ret = timer_mark(s->d, t.stop);
	if (!ret)
		ret = timer_read(s->d, &t, &span);
	if (ret)
		cuda_drain(s->d);
	timer_free(s->d, &t);
	cuda_leave(s->d);
	if (!ret && !(span > 0))
		ret = -EIO;
	if (!ret)
		*sec = span / s->n;
	return ret;
}

int cuda_bench_set_output(struct cuda_bench_set *s, uint32_t i,
			  int with_ortho, float *y)
{
	struct cuda_dev *d = s->d;
	int ret;

	if (i >= s->n || (with_ortho && !s->o))
		return -EINVAL;
	ret = cuda_enter(d);
	if (ret)
		return ret;
	/* All ones: NaN in every float, so an unwritten output shows. */
	ret = cuda_ck(s->ctx, d->api, d->api->memset_d8_async(s->y.ptr, 0xff,
						s->ybytes, d->stream),
		      "cuMemsetD8Async(bench set y)");
	if (!ret)
		ret = set_launch(s, i, with_ortho);
	if (!ret)
		ret = cuda_ck(s->ctx, d->api,
			      d->api->memcpy_dtoh_async(y, s->y.ptr, s->ybytes,
							d->stream),
			      "cuMemcpyDtoHAsync(bench set y)");
	if (!ret)
		ret = cuda_ck(s->ctx, d->api,
			      d->api->stream_synchronize(d->stream),
			      "cuStreamSynchronize(bench set y)");
	else
		cuda_drain(d);
	cuda_leave(d);
	return ret;
}

void cuda_bench_set_free(struct cuda_bench_set *s)
{
	uint32_t i;

	if (!s)
		return;
	for (i = 0; s->o && i < s->no; i++)
		backend_cuda.ortho_release(s->ctx, &s->o[i]);
	for (i = 0; s->q && i < s->nq; i++)
		backend_cuda.base_release(s->ctx, &s->q[i]);
	if (!cuda_enter(s->d)) {
		cuda_buf_drop(s->d, &s->x);
		cuda_buf_drop(s->d, &s->y);
		if (s->pad)
			cuda_ck(s->ctx, s->d->api, s->d->api->mem_free(s->pad),
				"cuMemFree(bench head start)");
		cuda_leave(s->d);
	}
	free(s->o);
	free(s->q);
	free(s);
}
#endif /* HAVE_CUDA */
