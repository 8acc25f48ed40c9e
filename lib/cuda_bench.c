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
		d->api->event_destroy(t->start);
	if (t->stop)
		d->api->event_destroy(t->stop);
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
		d->api->mem_free(dst);
	if (src)
		d->api->mem_free(src);
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
#endif /* HAVE_CUDA */
