// SPDX-License-Identifier: MIT
/*
 * ortho-bench gemv --backend cuda[:N] (or auto, when it finds a device):
 * the variants of the CPU run (plain INT8, fused with no Ortho, fused with
 * one CSR Ortho of the given density) on the device, by the same rules.
 *
 * - The set of matrices is sized as on the CPU, with the device's L2 in
 *   place of the last-level cache: at least 4x L2, so every launch streams
 *   its weights from device memory as a layer of a real model would;
 *   capped at half the device's free memory (and of the host's, where the
 *   set is filled first).
 * - The variants run in rounds, one pass over the set each, the order
 *   rotating every round. A pass is timed as one span with events (one
 *   launch per matrix, kernels only, no host copies, queued behind a few
 *   memsets so the device runs the kernels back to back rather than
 *   waiting for each launch); a variant's figure is the median over
 *   passes of the mean time per launch.
 * - The yardstick is the device's own copy rate, cuMemcpyDtoD, measured in
 *   the same run as bytes read plus bytes written per second. A kernel's
 *   effective rate counts what it must move (weights, scales, the Ortho
 *   arrays, x, y), so their ratio says how near the memory system's limit
 *   the kernel gets.
 * - Two matrices' outputs are checked against the CPU twin (ok_fused()):
 *   within 1e-5 of sum |w x| (FP32 sums in another order) plus, where the
 *   CPU twin takes its INT16 path, the x-rounding bound of kernels/fused.h.
 *   A miss, or NaN, fails the run after the figures are printed.
 *
 * The device has one kernel per token count: plain INT8 and fused
 * Base-only are the same launch with no deltas, as on the CPU, where
 * ok_fused() with nothing resident calls the INT8 rows; their ratio is the
 * run's noise.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_cuda.h"
#include "config.h"
#include "cuda_bench.h"
#include "fp16.h"
#include "fused.h"
#include "kernels.h"
#include "ortho.h"
#include "ortho-bench.h"
#include "ortho-bench-gemv.h"

/* The L2 assumed when the driver does not say. */
#define L2_ASSUMED (64ull << 20)
/* Timed passes per variant at least: medians of fewer are noise. */
#define DEV_MIN_PASSES 10
/* The copy yardstick: up to this many bytes per copy, this many copies. */
#define DTOD_MAX_BYTES (1ull << 30)
#define DTOD_ITERS 20
/* Tokens of each checked output compared with the CPU twin. */
#define CHECK_TOKENS 16
/* The comparison's bound, as tests/test_cuda.c has it. */
#define REL_TOL 1e-5
#define ABS_TOL 1e-6

static const char *const var_name[NVAR] = {
	"int8", "fused base only", "fused + Ortho",
};

/* Library messages: errors kept while the backend starts, else printed. */
struct dev_log {
	int collect;
	char first[512];
};

static void dev_log_fn(void *user, int prio, const char *fmt, va_list ap)
{
	struct dev_log *l = user;
	char msg[512];

	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (l->collect && prio <= ORTHO_LOG_ERR) {
		if (!l->first[0])
			snprintf(l->first, sizeof(l->first), "%s", msg);
		return;
	}
	fprintf(stderr, "ortho-bench: %s\n", msg);
}

/* "backend cuda: X" -> "X": the line that quotes it names the backend. */
static const char *reason_of(const struct dev_log *l, int err)
{
	const char *r = l->first;

	if (!*r)
		return strerror(-err);
	if (!strncmp(r, "backend ", 8) && strstr(r, ": "))
		r = strstr(r, ": ") + 2;
	return r;
}

/* Agreement of the device's outputs with the CPU twin's. */
struct twin_check {
	uint32_t matrices, tokens;
	uint64_t outputs, bad;
	double max_abs, max_over_bound;
	int int16;		/* the CPU twin rounds x to INT16 */
};

struct dev_result {
	struct cuda_bench_dev dev;
	const char *backend;
	uint64_t l2;
	int l2_assumed, capped;
	uint32_t passes;
	double sec[NVAR], bytes[NVAR];
	size_t dtod_bytes;
	double dtod_bps;
	double density_actual;
	struct twin_check chk;
};

/* The bound of output row @r, token @t (kernels/fused.h, test_cuda.c). */
static double twin_bound(const struct ok_q8 *m, const struct ok_ortho *o,
			 const float *x, uint32_t r, int int16)
{
	const size_t ng = ((size_t)m->cols + m->group - 1) / m->group;
	const int8_t *q = m->q + (size_t)r * m->cols;
	double mag = 0, xqb = 0, gw = 0, gx = 0, w;
	uint32_t c, k;

	for (c = 0; c < m->cols; c++) {
		w = fabs((double)q[c] * m->scales[r * ng + c / m->group]);
		mag += w * fabs(x[c]);
		gw += w;
		gx = fmax(gx, fabs(x[c]));
		if ((c + 1) % m->group && c + 1 < m->cols)
			continue;
		xqb += ldexp(gx * gw, -16);
		gw = gx = 0;
	}
	for (k = o ? o->rowptr[r] : 0; o && k < o->rowptr[r + 1]; k++) {
		c = o->encoding == OK_CSR16 ? ((const uint16_t *)o->col)[k] :
		    ((const uint32_t *)o->col)[k];
		mag += fabs(fp16_to_f32(o->val[k]) * x[c]);
	}
	return REL_TOL * mag + ABS_TOL + (int16 ? xqb : 0);
}

/* Outputs of matrix @i, with its Ortho or without, against the CPU twin. */
static int check_one(struct cuda_bench_set *ds, struct ok_pool *pool,
		     const struct q8_set *set, uint32_t i, int with_ortho,
		     const float *x, uint32_t ntok, float *yd, float *yc,
		     struct twin_check *c)
{
	const struct ok_q8 *m = &set->m[i];
	const struct ok_ortho *o = with_ortho ? &set->o[i] : NULL;
	uint32_t t, r;
	size_t k;
	double d, b;
	int ret;

	ret = cuda_bench_set_output(ds, i, with_ortho, yd);
	if (ret)
		return ret;
	for (k = 0; k < (size_t)ntok * m->rows; k++)
		yc[k] = NAN;
	ok_fused(pool, m, &o, o ? 1 : 0, x, yc, ntok);
	for (t = 0; t < c->tokens; t++) {
		for (r = 0; r < m->rows; r++) {
			k = (size_t)t * m->rows + r;
			b = twin_bound(m, o, x + (size_t)t * m->cols, r,
				       c->int16);
			d = fabs((double)yd[k] - yc[k]);
			c->outputs++;
			if (!isfinite(yd[k]) || !isfinite(yc[k]) ||
			    !(d <= b)) {
				if (c->bad++ < 3)
					fprintf(stderr, "ortho-bench: matrix "
						"%u%s, token %u, row %u: "
						"device %.9g, CPU twin %.9g, "
						"bound %.3g\n", i,
						o ? " + Ortho" : "", t, r,
						yd[k], yc[k], b);
				continue;
			}
			c->max_abs = fmax(c->max_abs, d);
			c->max_over_bound = fmax(c->max_over_bound, d / b);
		}
	}
	return 0;
}

static int check_twin(struct cuda_bench_set *ds, struct ok_pool *pool,
		      const struct q8_set *set, const float *x,
		      uint32_t ntok, struct twin_check *c)
{
	const size_t ny = (size_t)ntok * set->m[0].rows;
	uint32_t idx[2] = { 0, set->n - 1 }, j;
	float *yd = malloc(ny * sizeof(*yd)), *yc = malloc(ny * sizeof(*yc));
	int w, ret = yd && yc ? 0 : -ENOMEM;

	memset(c, 0, sizeof(*c));
	c->int16 = ok_have_avx2() && okx_madd_ok(&set->m[0]);
	c->tokens = ntok < CHECK_TOKENS ? ntok : CHECK_TOKENS;
	c->matrices = set->n > 1 ? 2 : 1;
	for (j = 0; !ret && j < c->matrices; j++)
		for (w = 0; !ret && w < 2; w++)
			ret = check_one(ds, pool, set, idx[j], w, x, ntok, yd,
					yc, c);
	free(yd);
	free(yc);
	return ret;
}

/* Warm-up pass of each variant, then rounds in rotating order. */
static int time_variants(struct cuda_bench_set *ds, uint32_t passes,
			 double sec[NVAR])
{
	double *sm = calloc((size_t)passes * NVAR, sizeof(*sm)), t;
	uint32_t pass, k;
	int v, ret = sm ? 0 : -ENOMEM;

	for (v = 0; !ret && v < NVAR; v++)
		ret = cuda_bench_set_pass(ds, v == V_ORTHO, &t);
	for (pass = 0; !ret && pass < passes; pass++) {
		for (k = 0; !ret && k < NVAR; k++) {
			v = (int)((pass + k) % NVAR);
			ret = cuda_bench_set_pass(ds, v == V_ORTHO, &t);
			sm[(size_t)v * passes + pass] = t;
		}
	}
	for (v = 0; v < NVAR; v++)
		sec[v] = ret ? NAN : bench_median(sm + (size_t)v * passes,
						   passes);
	free(sm);
	return ret;
}

/* Bytes one call must move: weights, scales, Ortho arrays, x and y. */
static void call_bytes(const struct gemv_opts *op, const struct q8_set *set,
		       double bytes[NVAR])
{
	double io = 4.0 * op->ntok * ((double)op->rows + op->cols);
	double nnz = (double)set->nnz / set->n;
	double colsz = op->cols > 65536 ? 4 : 2;

	bytes[V_INT8] = (double)set->base_bytes + io;
	bytes[V_BASE] = bytes[V_INT8];
	bytes[V_ORTHO] = bytes[V_INT8] + 4.0 * (op->rows + 1.0) +
			 nnz * (colsz + 2);
}

static void print_json(const struct gemv_opts *op, const struct q8_set *set,
		       const struct dev_result *r)
{
	const double *s = r->sec, *b = r->bytes;
	const struct twin_check *c = &r->chk;
	struct bench_json j;

	bench_json_begin(&j, stdout);
	bench_json_str(&j, "bench", "gemv");
	bench_json_str(&j, "backend", r->backend);
	bench_json_str(&j, "device", r->dev.desc);
	bench_json_int(&j, "rows", op->rows);
	bench_json_int(&j, "cols", op->cols);
	bench_json_int(&j, "group", op->group);
	bench_json_int(&j, "ntok", op->ntok);
	bench_json_num(&j, "density", op->density);
	bench_json_num(&j, "density_actual", r->density_actual);
	bench_json_str(&j, "ortho_encoding",
		       op->cols > 65536 ? "csr32" : "csr16");
	bench_json_str(&j, "kernel", cuda_bench_kernel(op->ntok));
	bench_json_int(&j, "l2_bytes", (long long)r->l2);
	bench_json_bool(&j, "l2_assumed", r->l2_assumed);
	bench_json_int(&j, "device_free_bytes", (long long)r->dev.free_bytes);
	bench_json_int(&j, "matrices", set->n);
	bench_json_obj(&j, "working_set_bytes");
	bench_json_int(&j, "int8", (long long)(set->base_bytes * set->n));
	bench_json_int(&j, "fused_ortho", (long long)(b[V_ORTHO] * set->n));
	bench_json_close(&j);
	bench_json_bool(&j, "working_set_capped", r->capped);
	bench_json_int(&j, "passes", r->passes);
	bench_json_int(&j, "calls", (long long)r->passes * set->n);
	bench_json_num(&j, "int8_s", s[V_INT8]);
	bench_json_num(&j, "fused_base_only_s", s[V_BASE]);
	bench_json_num(&j, "fused_ortho_s", s[V_ORTHO]);
	bench_json_str(&j, "int8_note", "one kernel: plain INT8 and fused "
		       "Base-only are the same launch with no deltas");
	bench_json_int(&j, "dtod_bytes", (long long)r->dtod_bytes);
	bench_json_num(&j, "dtod_GBps", r->dtod_bps / 1e9);
	bench_json_num(&j, "int8_GBps", b[V_INT8] / s[V_INT8] / 1e9);
	bench_json_num(&j, "fused_base_only_GBps", b[V_BASE] / s[V_BASE] / 1e9);
	bench_json_num(&j, "fused_ortho_GBps", b[V_ORTHO] / s[V_ORTHO] / 1e9);
	bench_json_obj(&j, "ratios");
	bench_json_num(&j, "ortho_overhead", s[V_ORTHO] / s[V_BASE] - 1);
	bench_json_num(&j, "fused_over_int8", s[V_BASE] / s[V_INT8]);
	bench_json_num(&j, "fused_base_over_dtod",
		       b[V_BASE] / s[V_BASE] / r->dtod_bps);
	bench_json_num(&j, "fused_ortho_over_dtod",
		       b[V_ORTHO] / s[V_ORTHO] / r->dtod_bps);
	bench_json_close(&j);
	bench_json_obj(&j, "cpu_twin");
	bench_json_str(&j, "twin_kernel", c->int16 ? "avx2-int16" :
		       ok_have_avx2() ? "avx2" : "scalar");
	bench_json_int(&j, "matrices_checked", c->matrices);
	bench_json_int(&j, "tokens_checked", c->tokens);
	bench_json_int(&j, "outputs_checked", (long long)c->outputs);
	bench_json_int(&j, "outside_bound", (long long)c->bad);
	bench_json_num(&j, "max_abs_err", c->max_abs);
	bench_json_num(&j, "max_err_over_bound", c->max_over_bound);
	bench_json_bool(&j, "twin_ok", !c->bad && c->outputs);
	bench_json_close(&j);
	bench_json_end(&j);
}

static void print_text(const struct gemv_opts *op, const struct q8_set *set,
		       const struct dev_result *r)
{
	const struct twin_check *c = &r->chk;
	int v;

	printf("gemv %u x %u, group %u, %u token%s, %s on %s (%s)\n",
	       op->rows, op->cols, op->group, op->ntok,
	       op->ntok > 1 ? "s" : "", cuda_bench_kernel(op->ntok),
	       r->backend, r->dev.desc);
	printf("rotating %u INT8 matrices (L2 %.1f MiB%s%s), %u passes\n",
	       set->n, (double)r->l2 / 1048576, r->l2_assumed ? ", assumed" :
	       "", r->capped ? "; working set capped" : "", r->passes);
	printf("Ortho: one CSR per matrix, density %g (%.4g actual)\n",
	       op->density, r->density_actual);
	printf("cuMemcpyDtoD: %.1f GB/s (read + write, %zu MiB copies)\n\n",
	       r->dtod_bps / 1e9, r->dtod_bytes >> 20);
	printf("  %-18s %13s %12s %9s\n", "variant", "median/call",
	       "moved", "of DtoD");
	for (v = 0; v < NVAR; v++)
		printf("  %-18s %10.2f us %7.1f GB/s %8.1f%%\n", var_name[v],
		       r->sec[v] * 1e6, r->bytes[v] / r->sec[v] / 1e9,
		       r->bytes[v] / r->sec[v] / r->dtod_bps * 100);
	printf("\nOrtho overhead %+.1f%%, fused/int8 %.3f\n",
	       (r->sec[V_ORTHO] / r->sec[V_BASE] - 1) * 100,
	       r->sec[V_BASE] / r->sec[V_INT8]);
	printf("CPU twin (%s): %llu outputs of %u matrices, max |error| %.3g, "
	       "%.3f of the bound%s\n", c->int16 ? "avx2-int16" : "fp32",
	       (unsigned long long)c->outputs, c->matrices, c->max_abs,
	       c->max_over_bound, c->bad ? ", SOME OUTSIDE IT" : "");
}

/* The copy yardstick: up to 1 GiB per copy, a quarter of what is free. */
static int copy_rate(struct ortho_ctx *ctx, struct dev_result *r)
{
	size_t bytes = r->dev.free_bytes / 4;

	if (bytes > DTOD_MAX_BYTES)
		bytes = DTOD_MAX_BYTES;
	bytes &= ~(size_t)((1u << 20) - 1);
	if (!bytes)
		return -ENOMEM;
	r->dtod_bytes = bytes;
	return cuda_copy_bandwidth(ctx, bytes, DTOD_ITERS, &r->dtod_bps);
}

static int run_device(const struct gemv_opts *op, struct ortho_ctx *ctx,
		      struct ok_pool *pool)
{
	struct dev_result r = { .backend = ortho_ctx_get_backend(ctx) };
	struct cuda_bench_set *ds = NULL;
	struct q8_set set = { 0 };
	uint64_t cap, s = GEMV_SEED_X;
	const char *what = "device";
	float *x = NULL;
	size_t k;
	int ret;

	ret = cuda_bench_device(ctx, &r.dev);
	if (!ret) {
		what = "cuMemcpyDtoD";
		ret = copy_rate(ctx, &r);
	}
	if (ret)
		goto out;
	r.l2 = r.dev.l2_bytes;
	if (!r.l2) {
		r.l2 = L2_ASSUMED;
		r.l2_assumed = 1;
	}
	cap = gemv_host_cap();
	if (r.dev.free_bytes / 2 < cap)
		cap = r.dev.free_bytes / 2;
	x = malloc(sizeof(*x) * op->cols * op->ntok);
	if (!x) {
		ret = -ENOMEM;
		goto out;
	}
	for (k = 0; k < (size_t)op->cols * op->ntok; k++)
		x[k] = gemv_randf(&s);
	what = NULL;		/* gemv_setup() says why it fails */
	ret = gemv_setup(op, r.l2, cap, &set, &r.capped);
	if (ret)
		goto out;
	r.density_actual = (double)set.nnz / set.n / op->rows / op->cols;
	call_bytes(op, &set, r.bytes);
	what = "uploading the matrices";
	ret = cuda_bench_set_new(ctx, set.m, set.o, set.n, x, op->ntok, &ds);
	r.passes = gemv_passes(op, set.n);
	if (r.passes < DEV_MIN_PASSES)
		r.passes = DEV_MIN_PASSES;
	if (!ret) {
		what = "timing";
		ret = time_variants(ds, r.passes, r.sec);
	}
	if (!ret) {
		what = "checking against the CPU twin";
		ret = check_twin(ds, pool, &set, x, op->ntok, &r.chk);
	}
	if (ret)
		goto out;
	if (op->json)
		print_json(op, &set, &r);
	else
		print_text(op, &set, &r);
	if (r.chk.bad)
		fprintf(stderr, "ortho-bench: %llu of %llu device outputs "
			"outside the CPU twin's bound\n",
			(unsigned long long)r.chk.bad,
			(unsigned long long)r.chk.outputs);
out:
	if (ret && what)
		fprintf(stderr, "ortho-bench: backend %s: %s: %s\n",
			r.backend, what, strerror(-ret));
	cuda_bench_set_free(ds);
	gemv_set_free(&set);
	free(x);
	return ret || r.chk.bad ? BENCH_EXIT_FAIL : BENCH_EXIT_OK;
}

int gemv_device(const struct gemv_opts *op, struct ok_pool *pool, int *ran)
{
	struct dev_log lg = { .collect = 1 };
	struct ortho_ctx_opts o = {
		.sz = sizeof(o),
		.backend = op->backend,
		.threads = 1,
		.log_fn = dev_log_fn,
		.log_user = &lg,
		.authority = "none",
	};
	struct ortho_ctx *ctx = NULL;
	int ret;

	*ran = 0;
	if (!op->backend || !strcmp(op->backend, "cpu"))
		return BENCH_EXIT_OK;
	ret = ortho_ctx_new(&o, &ctx);
	lg.collect = 0;
	if (ret == -ENODEV) {
		*ran = 1;
		fprintf(stderr, "ortho-bench: backend %s: no CUDA "
			"driver/device (%s)\n", op->backend,
			reason_of(&lg, ret));
		return BENCH_EXIT_FAIL;
	}
	if (ret) {
		*ran = 1;
		fprintf(stderr, "ortho-bench: backend %s: %s\n", op->backend,
			reason_of(&lg, ret));
		return ret == -EINVAL ? BENCH_EXIT_USAGE : BENCH_EXIT_FAIL;
	}
	if (strncmp(ortho_ctx_get_backend(ctx), "cuda", 4)) {
		ortho_ctx_free(ctx);	/* auto found no device: the CPU */
		return BENCH_EXIT_OK;
	}
	*ran = 1;
	ret = run_device(op, ctx, pool);
	ortho_ctx_free(ctx);
	return ret;
}
