// SPDX-License-Identifier: MIT
/*
 * GEMV/GEMM on the CUDA backend against the device's own copy rate and the
 * CPU twin, on the shapes of a 7B-class model, Ortho at 1% density.
 * Built with the tests when the CUDA toolkit is there (kernels/cuda.mk); exit 77
 * without a device. tests/gpu/run.sh uses --probe, tests/e2e/cuda_build.sh
 * --quick. It times one matrix over and over, so a matrix that fits in the
 * L2 is timed from there; for figures against memory, ortho-bench gemv
 * --backend cuda rotates over a set larger than the L2.
 *
 *   build/tests/gpu-bench [--quick | --probe]
 *
 * --probe only says whether the cuda backend starts (exit 0, or 77 with
 * the library's reason on the SKIP line).
 *
 * Columns: kernel time per op (no host copies), the bytes it must move
 * (weights, scales, Ortho, x, y) per second, that as a share of the
 * cuMemcpyDtoD rate (read + write), GFLOP/s, and the CPU twin's time on
 * every core for one token.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend_cuda.h"
#include "fp16.h"
#include "kernels.h"
#include "ortho.h"

struct shape {
	uint32_t rows, cols;
};

static uint64_t seed = 0xbe7c4ull;

static uint64_t rnd(void)
{
	seed ^= seed >> 12;
	seed ^= seed << 25;
	seed ^= seed >> 27;
	return seed * 0x2545f4914f6cdd1dull;
}

/* The library's first error while starting (why the backend did not). */
static char first_err[512];
static int started;

static void log_fn(void *user, int prio, const char *fmt, va_list ap)
{
	if (prio > ORTHO_LOG_ERR)
		return;
	if (started) {
		fputs("bench: ", stderr);
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
	} else if (!first_err[0]) {
		vsnprintf(first_err, sizeof(first_err), fmt, ap);
	}
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Base with absmax-like scales; CSR16 Ortho at @density. */
static int make(struct shape s, double density, struct ok_q8 *m,
		struct ok_ortho *o, size_t *obytes)
{
	uint32_t ng = (s.cols + 127) / 128, r, c, *rp;
	size_t n = 0, k, cap = (size_t)(density * s.rows * s.cols * 1.2) + 64;
	uint64_t cut = (uint64_t)(density * 18446744073709551615.0);
	int8_t *q = malloc((size_t)s.rows * s.cols);
	float *sc = malloc((size_t)s.rows * ng * sizeof(float));
	uint16_t *col = malloc(cap * 2), *val = malloc(cap * 2);

	rp = malloc(((size_t)s.rows + 1) * 4);
	if (!q || !sc || !col || !val || !rp)
		return -1;
	for (k = 0; k < (size_t)s.rows * s.cols; k++)
		q[k] = (int8_t)((int)(rnd() % 255) - 127);
	for (k = 0; k < (size_t)s.rows * ng; k++)
		sc[k] = 0.001f + (float)(rnd() % 1000) * 1e-5f;
	rp[0] = 0;
	for (r = 0; r < s.rows; r++) {
		for (c = 0; c < s.cols && n < cap; c++) {
			if (rnd() > cut)
				continue;
			col[n] = (uint16_t)c;
			val[n++] = f32_to_fp16((float)(rnd() % 2001) * 1e-4f -
					       0.1f);
		}
		rp[r + 1] = (uint32_t)n;
	}
	*m = (struct ok_q8){ .q = q, .scales = sc, .rows = s.rows,
			     .cols = s.cols, .group = 128 };
	*o = (struct ok_ortho){ .encoding = OK_CSR16, .rows = s.rows,
				.cols = s.cols, .rowptr = rp, .col = col,
				.val = val };
	*obytes = ((size_t)s.rows + 1) * 4 + n * 4;
	return 0;
}

static void unmake(struct ok_q8 *m, struct ok_ortho *o)
{
	free((void *)m->q);
	free((void *)m->scales);
	free((void *)o->rowptr);
	free((void *)o->col);
	free((void *)o->val);
}

/* Mean seconds of the CPU twin on every core, run for about 0.3 s. */
static double cpu_time(struct ok_pool *pool, const struct ok_q8 *m,
		       const struct ok_ortho *const *o, unsigned int no,
		       const float *x, float *y)
{
	double t0 = now(), t;
	unsigned int n = 0;

	do {
		ok_fused(pool, m, o, no, x, y, 1);
		n++;
		t = now() - t0;
	} while (t < 0.3);
	return t / n;
}

/* One row of the table. Return: 0, or a negative errno. */
static int row(struct ortho_ctx *ctx, struct ok_pool *pool, struct shape s,
	       uint32_t ntok, int with_ortho, double copy_bw)
{
	const struct ok_ortho *op[1];
	struct ok_ortho o;
	struct ok_q8 m;
	size_t obytes, k, bytes;
	unsigned int iters;
	double t = 0, tc = 0;
	float *x, *y;
	int ret;

	if (make(s, 0.01, &m, &o, &obytes))
		return -ENOMEM;
	op[0] = &o;
	x = malloc((size_t)ntok * s.cols * sizeof(float));
	y = malloc((size_t)ntok * s.rows * sizeof(float));
	ret = x && y ? 0 : -ENOMEM;
	for (k = 0; !ret && k < (size_t)ntok * s.cols; k++)
		x[k] = (float)(rnd() % 2001) * 1e-3f - 1.0f;
	if (!ret)
		ret = cuda_bench_gemv(ctx, &m, op, with_ortho, x, y, ntok, 10,
				      &t);
	if (!ret) {
		iters = t > 0 ? (unsigned int)(0.1 / t) : 2000;
		iters = iters < 20 ? 20 : iters > 2000 ? 2000 : iters;
		ret = cuda_bench_gemv(ctx, &m, op, with_ortho, x, y, ntok,
				      iters, &t);
	}
	for (k = 0; !ret && k < (size_t)ntok * s.rows; k++)
		if (!isfinite(y[k]))
			ret = -EIO;
	if (!ret && ntok == 1)
		tc = cpu_time(pool, &m, op, with_ortho, x, y);
	bytes = (size_t)s.rows * s.cols + (size_t)s.rows *
		((s.cols + 127) / 128) * 4 + (with_ortho ? obytes : 0) +
		(size_t)ntok * (s.cols + s.rows) * 4;
	if (!ret) {
		printf("%5ux%-5u %5u  %-5s %9.1f %8.0f %6.1f%% %9.0f",
		       s.rows, s.cols, ntok, with_ortho ? "1%" : "none",
		       t * 1e6, bytes / t / 1e9, bytes / t / copy_bw * 100,
		       2.0 * s.rows * s.cols * ntok / t / 1e9);
		if (tc > 0)
			printf(" %9.1f %6.1fx", tc * 1e6, tc / t);
		printf("\n");
	}
	free(x);
	free(y);
	unmake(&m, &o);
	return ret;
}

int main(int argc, char **argv)
{
	static const struct shape shapes[] = {
		{ 4096, 4096 }, { 11008, 4096 }, { 4096, 11008 },
		{ 14336, 4096 },
	};
	static const uint32_t ntoks[] = { 1, 1, 8, 128 };
	struct ortho_ctx_opts opts = {
		.sz = sizeof(opts),
		.backend = "cuda",
		.log_fn = log_fn,
		.authority = "none",
	};
	int quick = argc > 1 && !strcmp(argv[1], "--quick");
	struct ortho_ctx *ctx = NULL;
	struct ok_pool *pool = NULL;
	double bw = 0;
	unsigned int i, j;
	char desc[256];
	int ret;

	ret = ortho_ctx_new(&opts, &ctx);
	if (ret) {
		printf("SKIP: no CUDA backend: %s\n",
		       first_err[0] ? first_err : ortho_strerror(ret));
		return 77;
	}
	started = 1;
	if (argc > 1 && !strcmp(argv[1], "--probe"))
		goto out;
	ret = cuda_device_describe(ctx, desc, sizeof(desc));
	if (!ret)
		ret = cuda_copy_bandwidth(ctx, (size_t)1 << 30, quick ? 3 : 20,
					  &bw);
	if (!ret)
		ret = ok_pool_new(0, &pool);
	if (ret)
		goto out;
	printf("device: %s\n", desc);
	printf("cuMemcpyDtoD: %.0f GB/s (read + write)\n", bw / 1e9);
	printf("%-11s %5s  %-5s %9s %8s %7s %9s %9s %7s\n", "shape", "ntok",
	       "ortho", "GPU us", "GB/s", "of copy", "GFLOP/s", "CPU us",
	       "vs CPU");
	for (i = 0; !ret && i < (quick ? 1 : 4); i++)
		for (j = 0; !ret && j < (quick ? 2 : 4); j++)
			ret = row(ctx, pool, shapes[i], ntoks[j], j > 0, bw);
out:
	if (ret)
		fprintf(stderr, "bench: %s\n", ortho_strerror(ret));
	ok_pool_free(pool);
	ortho_ctx_free(ctx);
	return ret ? 1 : 0;
}
