// SPDX-License-Identifier: MIT
/*
 * The CUDA backend. Everywhere: backend selection ("auto" falls back to the
 * CPU, a forced "cuda" fails with -ENODEV and says CUDA, bad names are
 * -EINVAL) and, when built with CUDA, the embedded fatbin's contents (sm_80
 * and sm_90 code, compute_90 PTX). With a device: every kernel against its
 * CPU twin ok_fused_rows() on fresh random inputs of many shapes (outputs
 * poisoned first, NaN never passes), NaN and Inf in x, bad input, threads,
 * and the timing helpers. The Ortho pool's accounting and wipe:
 * tests/test_cuda_pool.c.
 *
 * The bound: the device sums in FP32 in its own order, so an output may
 * differ from the CPU twin's by 1e-5 of sum |w x| (plus 1e-6); where the
 * CPU twin takes its AVX2 integer path (ok_have_avx2() and okx_madd_ok():
 * groups of a multiple of 16 columns, at most 1024) it rounds x to INT16
 * per group, and the bound kernels/fused.h states for that is added:
 * 2^-16 * sum over groups of max |x| * sum |w|.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "backend_cuda.h"
#include "ctx.h"
#include "cuda_bench.h"
#include "fp16.h"
#include "fused.h"
#include "gemv_int8_abi.h"
#include "kernels.h"
#include "testutil.h"

#ifdef HAVE_CUDA
#include "backend_cuda_priv.h"
#include "cuda_loader.h"
#include "cuda_pool.h"
#endif

/* Relative to sum |w x| over the output's terms (FP32 sums, any order). */
#define REL_TOL 1e-5
#define ABS_TOL 1e-6

static struct tu_log lg;
static uint64_t seed = 0x0c0da5eedull;

/* ---- random problems and the CPU reference ---- */

struct prob {
	struct ok_q8 m;
	int8_t *q;
	float *sc, *x, *y, *ref;
	uint32_t ntok;
	unsigned int no;
	struct ok_ortho o[8];
	const struct ok_ortho *op[8];
	void *mem[8][3];		/* rowptr, col, val per delta */
};

static void ortho_make(struct prob *p, unsigned int i, uint32_t enc,
		       double density)
{
	uint32_t rows = p->m.rows, cols = p->m.cols, r, c, *rp = NULL;
	size_t n = 0, cap = (size_t)rows * cols;
	uint32_t cut = (uint32_t)(density * 4294967295.0);
	uint16_t *val = malloc(cap * 2);
	uint16_t *c16 = NULL;
	uint32_t *c32 = NULL;

	ck_assert_ptr_nonnull(val);
	if (enc != OK_DENSE16) {
		rp = malloc(((size_t)rows + 1) * 4);
		c16 = enc == OK_CSR16 ? malloc(cap * 2) : NULL;
		c32 = enc == OK_CSR32 ? malloc(cap * 4) : NULL;
		ck_assert(rp && (c16 || c32));
		rp[0] = 0;
	}
	for (r = 0; r < rows; r++) {
		for (c = 0; c < cols; c++) {
			if (rp && (uint32_t)tu_rand(&seed) > cut)
				continue;
			if (c16)
				c16[n] = (uint16_t)c;
			if (c32)
				c32[n] = c;
			val[n++] = f32_to_fp16(tu_randf(&seed) * 0.25f);
		}
		if (rp)
			rp[r + 1] = (uint32_t)n;
	}
	p->o[i] = (struct ok_ortho){ .encoding = enc, .rows = rows,
				     .cols = cols, .rowptr = rp, .val = val };
	p->o[i].col = c16 ? (const void *)c16 : (const void *)c32;
	p->op[i] = &p->o[i];
	p->mem[i][0] = rp;
	p->mem[i][1] = c16 ? (void *)c16 : (void *)c32;
	p->mem[i][2] = val;
}

static void prob_make(struct prob *p, uint32_t rows, uint32_t cols,
		      uint32_t group, uint32_t ntok, const char *encs,
		      double density)
{
	size_t ng = (cols + group - 1) / group, k;

	memset(p, 0, sizeof(*p));
	p->q = malloc((size_t)rows * cols);
	p->sc = malloc(rows * ng * sizeof(float));
	p->x = malloc((size_t)ntok * cols * sizeof(float));
	p->y = malloc((size_t)ntok * rows * sizeof(float));
	p->ref = malloc((size_t)ntok * rows * sizeof(float));
	ck_assert(p->q && p->sc && p->x && p->y && p->ref);
	for (k = 0; k < (size_t)rows * cols; k++)
		p->q[k] = (int8_t)((int)(tu_rand(&seed) % 255) - 127);
	for (k = 0; k < rows * ng; k++)
		p->sc[k] = 0.001f + 0.01f * (float)(tu_rand(&seed) % 1000) /
			   1000.0f;
	for (k = 0; k < (size_t)ntok * cols; k++)
		p->x[k] = tu_randn(&seed);
	p->m = (struct ok_q8){ .q = p->q, .scales = p->sc, .rows = rows,
			       .cols = cols, .group = group };
	p->ntok = ntok;
	for (; encs && *encs && p->no < 8; encs++, p->no++)
		ortho_make(p, p->no, (uint32_t)(*encs - '0'), density);
	ok_fused_rows(&p->m, p->op, p->no, p->x, p->ref, ntok, 0, rows);
}

static void prob_free(struct prob *p)
{
	unsigned int i, j;

	for (i = 0; i < p->no; i++)
		for (j = 0; j < 3; j++)
			free(p->mem[i][j]);
	free(p->q);
	free(p->sc);
	free(p->x);
	free(p->y);
	free(p->ref);
}

/* Does the CPU twin round x to INT16 for @m (kernels/fused.h)? */
static int twin_int16(const struct ok_q8 *m)
{
	return ok_have_avx2() && okx_madd_ok(m);
}

/*
 * The bound of output (t, r): REL_TOL of the sum of |term| (the scale of
 * FP32 rounding there) plus ABS_TOL, plus the INT16 x-rounding bound of
 * the Base part where the CPU twin rounds x.
 */
static double bound_of(const struct prob *p, uint32_t t, uint32_t r,
		       int int16)
{
	const struct ok_q8 *m = &p->m;
	const float *x = p->x + (size_t)t * m->cols;
	size_t ng = (m->cols + m->group - 1) / m->group, k;
	double s = 0, xqb = 0, w, gw = 0, gx = 0;
	uint32_t c, i;

	for (c = 0; c < m->cols; c++) {
		w = fabs((double)m->q[(size_t)r * m->cols + c] *
			 m->scales[r * ng + c / m->group]);
		s += w * fabs(x[c]);
		gw += w;
		gx = fmax(gx, fabs(x[c]));
		if ((c + 1) % m->group && c + 1 < m->cols)
			continue;
		xqb += ldexp(gx * gw, -16);
		gw = gx = 0;
	}
	for (i = 0; i < p->no; i++) {
		const struct ok_ortho *o = &p->o[i];

		if (o->encoding == OK_DENSE16) {
			for (c = 0; c < m->cols; c++)
				s += fabs(fp16_to_f32(o->val[(size_t)r *
						m->cols + c]) * x[c]);
			continue;
		}
		for (k = o->rowptr[r]; k < o->rowptr[r + 1]; k++) {
			c = o->encoding == OK_CSR16 ?
			    ((const uint16_t *)o->col)[k] :
			    ((const uint32_t *)o->col)[k];
			s += fabs(fp16_to_f32(o->val[k]) * x[c]);
		}
	}
	return REL_TOL * s + ABS_TOL + (int16 ? xqb : 0);
}

static double bound(const struct prob *p, uint32_t t, uint32_t r)
{
	return bound_of(p, t, r, twin_int16(&p->m));
}

/*
 * x at its worst for the INT16 rounding: one large value per group sets
 * the step, the rest are a few steps each, so each is off by up to half a
 * step and the error is near the bound, far above FP32 rounding. The
 * reference is computed again.
 */
static void skew_x(struct prob *p)
{
	const uint32_t cols = p->m.cols, g = p->m.group;
	uint32_t t, c;

	for (t = 0; t < p->ntok; t++) {
		float *x = p->x + (size_t)t * cols;

		for (c = 0; c < cols; c++)
			x[c] = c % g ? 1000.0f * 1e-4f * tu_randn(&seed) :
			       (tu_rand(&seed) & 1 ? 1000.0f : -1000.0f);
	}
	ok_fused_rows(&p->m, p->op, p->no, p->x, p->ref, p->ntok, 0,
		      p->m.rows);
}

/*
 * Return: outputs of @y outside the bound around @ref. NaN never passes
 * where the CPU twin is finite; where it is NaN or Inf (NaN or Inf in x),
 * the device must give NaN or that same Inf.
 */
static size_t compare(const struct prob *p, const float *y, const char *what)
{
	size_t bad = 0;
	uint32_t t, r;

	for (t = 0; t < p->ntok; t++) {
		for (r = 0; r < p->m.rows; r++) {
			size_t k = (size_t)t * p->m.rows + r;
			double d = fabs((double)y[k] - p->ref[k]);
			double lim;

			if (isnan(p->ref[k]) && isnan(y[k]))
				continue;
			if (isinf(p->ref[k]) && y[k] == p->ref[k])
				continue;
			lim = isfinite(p->ref[k]) ? bound(p, t, r) : 0;
			if (isfinite(p->ref[k]) && isfinite(y[k]) && d <= lim)
				continue;
			if (bad++ < 4)
				fprintf(stderr, "%s %ux%u ntok %u: "
					"y[t %u][r %u] = %.9g, CPU %.9g, "
					"bound %.3g\n",
					what, p->m.rows, p->m.cols, p->ntok, t,
					r, y[k], p->ref[k], lim);
		}
	}
	return bad;
}

/* ---- selection (everywhere) ---- */

static struct ortho_ctx *ctx_on(const char *spec, int *err)
{
	struct ortho_ctx_opts o = {
		.sz = sizeof(o),
		.backend = spec,
		.threads = 1,
		.log_fn = tu_log_fn,
		.log_user = &lg,
		.log_level = ORTHO_LOG_DEBUG,
	};
	struct ortho_ctx *c = NULL;

	*err = ortho_ctx_new(&o, &c);
	return c;
}

static const char *const bad_names[] = {
	"gpu", "cuda0", "cuda:", "cuda:x", "cuda:-1", "cuda:12345",
	"cuda:0 ", "CUDA", "cpu:0", "", "autox",
};

START_TEST(select_unknown)
{
	int err;

	tu_log_clear(&lg);
	ck_assert_ptr_null(ctx_on(bad_names[_i], &err));
	ck_assert_int_eq(err, -EINVAL);
	ck_assert_msg(tu_log_has(&lg, "unknown backend"), "log: %s", lg.buf);
}
END_TEST

START_TEST(select_cpu)
{
	struct ortho_ctx *c;
	int err;

	c = ctx_on("cpu", &err);
	ck_assert_int_eq(err, 0);
	ck_assert_str_eq(ortho_ctx_get_backend(c), "cpu");
	ck_assert_ptr_eq(c->backend, &backend_cpu);
	ortho_ctx_free(c);
}
END_TEST

/* No usable device (none there, or hidden): auto is the CPU, cuda fails. */
static void expect_no_device(void)
{
	static const char *const forced[] = { "cuda", "cuda:0", "cuda:7" };
	struct ortho_ctx *c;
	unsigned int i;
	int err;

	c = ctx_on(NULL, &err);
	ck_assert_int_eq(err, 0);
	ck_assert_str_eq(ortho_ctx_get_backend(c), "cpu");
	ortho_ctx_free(c);
	c = ctx_on("auto", &err);
	ck_assert_int_eq(err, 0);
	ck_assert_str_eq(ortho_ctx_get_backend(c), "cpu");
	ortho_ctx_free(c);
	for (i = 0; i < 3; i++) {
		tu_log_clear(&lg);
		ck_assert_ptr_null(ctx_on(forced[i], &err));
		ck_assert_int_eq(err, -ENODEV);
		ck_assert_msg(tu_log_has(&lg, "CUDA"), "%s: log: %s",
			      forced[i], lg.buf);
		ck_assert_msg(tu_log_has(&lg, forced[i]), "%s: log: %s",
			      forced[i], lg.buf);
	}
}

START_TEST(select_no_device)
{
	expect_no_device();
}
END_TEST

/*
 * The bound against the device, tried here on the CPU's own FP32 path (the
 * scalar one sums in FP32 in yet another order, as the device does)
 * against the CPU twin's default: it holds, also on x skewed for the INT16
 * rounding, where it holds only with the INT16 term; NaN and a real error
 * do not pass.
 */
static const struct {
	uint32_t rows, cols, group, ntok;
	const char *encs;
	int skew;
} cpu_shapes[] = {
	{ 256, 64, 64, 1, "1", 1 },
	{ 100, 1000, 64, 3, "13", 1 },
	{ 37, 4099, 128, 1, "2", 0 },
	{ 70, 520, 48, 5, "1", 0 },
	{ 300, 2048, 64, 2, "1", 0 },
};

START_TEST(bound_cpu_paths)
{
	struct prob p;
	float *y;
	size_t k, n, over = 0;
	uint32_t t, r;

	prob_make(&p, cpu_shapes[_i].rows, cpu_shapes[_i].cols,
		  cpu_shapes[_i].group, cpu_shapes[_i].ntok,
		  cpu_shapes[_i].encs, 0.02);
	if (cpu_shapes[_i].skew)
		skew_x(&p);
	n = (size_t)p.ntok * p.m.rows;
	y = malloc(n * sizeof(*y));
	ck_assert_ptr_nonnull(y);
	for (k = 0; k < n; k++)
		y[k] = NAN;
	ok_force_scalar(1);
	ok_fused_rows(&p.m, p.op, p.no, p.x, y, p.ntok, 0, p.m.rows);
	ok_force_scalar(0);
	ck_assert_uint_eq(compare(&p, y, "scalar vs default"), 0);
	for (t = 0; t < p.ntok; t++)
		for (r = 0; r < p.m.rows; r++) {
			k = (size_t)t * p.m.rows + r;
			over += fabs((double)y[k] - p.ref[k]) >
				bound_of(&p, t, r, 0);
		}
	if (cpu_shapes[_i].skew && twin_int16(&p.m))
		ck_assert_msg(over > 0, "the INT16 term is never needed");
	if (!twin_int16(&p.m))
		ck_assert_uint_eq(over, 0);
	y[n / 2] = NAN;
	ck_assert_uint_eq(compare(&p, y, "NaN planted (expected)"), 1);
	y[n / 2] = (float)(p.ref[n / 2] + 4 * bound(&p,
			(uint32_t)(n / 2 / p.m.rows), (uint32_t)(n / 2 % p.m.rows)));
	ck_assert_uint_eq(compare(&p, y, "error planted (expected)"), 1);
	free(y);
	prob_free(&p);
}
END_TEST

/* The device timers refuse a context on the CPU, without touching CUDA. */
START_TEST(bench_off_cuda)
{
	static char not_null;
	struct cuda_bench_set *bs = (void *)&not_null;	/* must be cleared */
	struct cuda_bench_dev dev;
	struct ortho_ctx *c;
	struct prob p;
	double v = 0;
	char desc[64];
	int err;

	c = ctx_on("cpu", &err);
	ck_assert_ptr_nonnull(c);
	prob_make(&p, 8, 64, 64, 1, "1", 0.1);
	ck_assert_int_eq(cuda_copy_bandwidth(c, 1 << 20, 1, &v), -ENODEV);
	ck_assert_int_eq(cuda_bench_gemv(c, &p.m, p.op, p.no, p.x, p.y, 1, 1,
					 &v), -ENODEV);
	ck_assert_int_eq(cuda_device_describe(c, desc, sizeof(desc)),
			 -ENODEV);
	ck_assert_int_eq(cuda_bench_device(c, &dev), -ENODEV);
	ck_assert_int_eq(cuda_bench_set_new(c, &p.m, p.o, 1, p.x, 1, &bs),
			 -ENODEV);
	ck_assert_ptr_null(bs);
	cuda_bench_set_free(NULL);
	ortho_ctx_free(c);
	prob_free(&p);
}
END_TEST

/* With a device: the driver's own switch hides it (a forked child). */
START_TEST(select_hidden_device)
{
	ck_assert_int_eq(setenv("CUDA_VISIBLE_DEVICES", "", 1), 0);
	expect_no_device();
}
END_TEST

#ifdef HAVE_CUDA
extern const unsigned char okc_fatbin_gemv_int8[];
extern const unsigned char okc_fatbin_gemv_int8_end[];

static uint64_t rd(const unsigned char *p, unsigned int n)
{
	uint64_t v = 0;

	while (n--)
		v = v << 8 | p[n];
	return v;
}

/*
 * The fatbin container: a 16-byte header (magic 0xba55ed50, version,
 * header size, payload size), then entries of kind (1 PTX, 2 ELF), header
 * size, payload size and, at byte 28, the architecture (80, 90).
 */
START_TEST(fatbin_contents)
{
	const unsigned char *p = okc_fatbin_gemv_int8;
	size_t len = (size_t)(okc_fatbin_gemv_int8_end - p), off;
	int elf80 = 0, elf90 = 0, ptx90 = 0;

	ck_assert_uint_ge(len, 16);
	ck_assert_uint_eq(rd(p, 4), 0xba55ed50u);
	ck_assert_uint_eq(rd(p + 6, 2), 16);
	ck_assert_uint_eq(rd(p + 8, 8) + 16, len);
	for (off = 16; off < len;) {
		uint64_t kind = rd(p + off, 2), hs = rd(p + off + 4, 4);
		uint64_t size = rd(p + off + 8, 8), arch = rd(p + off + 28, 4);

		ck_assert_uint_ge(hs, 64);
		ck_assert_uint_le(off + hs + size, len);
		elf80 += kind == 2 && arch == 80;
		elf90 += kind == 2 && arch == 90;
		ptx90 += kind == 1 && arch == 90;
		off += hs + size;
	}
	ck_assert_msg(elf80 == 1 && elf90 == 1 && ptx90 == 1,
		      "sm_80 %d, sm_90 %d, compute_90 PTX %d", elf80, elf90,
		      ptx90);
}
END_TEST
#endif

/* ---- with a device ---- */

static struct ortho_ctx *gctx;

static void gpu_setup(void)
{
	int err;

	tu_log_clear(&lg);
	gctx = ctx_on("cuda", &err);
	ck_assert_msg(gctx != NULL, "cuda backend: %d: %s", err, lg.buf);
}

static void gpu_teardown(void)
{
	ortho_ctx_free(gctx);
	gctx = NULL;
}

#ifdef HAVE_CUDA
static void ck_cu(CUresult r, const char *what)
{
	ck_assert_msg(r == CUDA_SUCCESS, "%s: CUDA error %d", what, (int)r);
}

/*
 * Fill the device's y scratch with NaN so an unwritten output shows; it is
 * grown to @bytes first, so the op finds it large enough and uses it as it
 * is (a fresh allocation would hold whatever the device had there).
 */
static void poison_y(size_t bytes)
{
	struct cuda_dev *d = cuda_dev_of(gctx);

	ck_assert_int_eq(cuda_enter(d), 0);
	ck_assert_int_eq(cuda_buf_reserve(d, &d->ybuf, bytes), 0);
	ck_cu(d->api->memset_d8_async(d->ybuf.ptr, 0xff, d->ybuf.cap,
				      d->stream), "poison");
	ck_cu(d->api->stream_synchronize(d->stream), "poison sync");
	cuda_leave(d);
}
#else
static void poison_y(size_t bytes)
{
}
#endif

struct dev_prob {
	struct backend_q8 q;
	struct backend_ortho o[8];
	const struct backend_ortho *op[8];
};

static void dev_up(struct dev_prob *dp, const struct prob *p)
{
	const struct ortho_backend *b = gctx->backend;
	unsigned int i;

	memset(dp, 0, sizeof(*dp));
	dp->q.host = p->m;
	ck_assert_int_eq(b->base_upload(gctx, &dp->q), 0);
	for (i = 0; i < p->no; i++) {
		dp->o[i].host = p->o[i];
		dp->op[i] = &dp->o[i];
		ck_assert_int_eq(b->ortho_upload(gctx, &dp->o[i]), 0);
	}
}

static void dev_down(struct dev_prob *dp, unsigned int no)
{
	unsigned int i;

	for (i = 0; i < no; i++)
		gctx->backend->ortho_release(gctx, &dp->o[i]);
	gctx->backend->base_release(gctx, &dp->q);
}

/* Run on the device with y poisoned (host and device) and compare. */
static void run_and_compare(struct prob *p, struct dev_prob *dp,
			    const char *what)
{
	size_t k;

	for (k = 0; k < (size_t)p->ntok * p->m.rows; k++)
		p->y[k] = NAN;
	poison_y((size_t)p->ntok * p->m.rows * sizeof(float));
	ck_assert_int_eq(gctx->backend->linear(gctx, &dp->q, dp->op, p->no,
					       p->x, p->y, p->ntok), 0);
	ck_assert_msg(compare(p, p->y, what) == 0, "%s: outputs differ from "
		      "the CPU twin (see stderr)", what);
}

static const struct {
	uint32_t rows, cols, group, ntok;
	const char *encs;	/* per delta: 1 csr16, 2 csr32, 3 dense */
	double density;
} shapes[] = {
	{ 64, 64, 64, 1, "1", 0.05 },		/* vec16 path */
	{ 37, 1000, 64, 1, "13", 0.02 },	/* cols % 16 != 0 */
	{ 33, 130, 128, 1, "231", 0.05 },	/* short last group */
	{ 40, 96, 48, 1, "1", 0.1 },		/* group % 16 != 0 */
	{ 4096, 4096, 128, 1, "113", 0.01 },
	{ 24, 512, 64, 3, "13", 0.02 },		/* gemv4 */
	{ 24, 512, 128, 8, "11", 0.02 },	/* gemv8 */
	{ 17, 520, 64, 13, "23", 0.02 },	/* gemv8, two passes */
	{ 100, 160, 64, 17, "132", 0.05 },	/* gemm */
	{ 70, 100, 64, 70, "13", 0.05 },	/* gemm, partial tiles */
	{ 65, 1003, 128, 65, "13", 0.02 },
	{ 1000, 2048, 64, 130, "1", 0.01 },
	{ 9, 70000, 128, 1, "2", 0.01 },	/* csr32 */
	{ 64, 70000, 128, 20, "2", 0.01 },
	{ 16, 256, 64, 5, "", 0 },		/* no Ortho */
	{ 80, 256, 64, 40, "", 0 },
	{ 1, 1, 1, 1, "3", 0 },
	{ 4093, 4099, 64, 1, "13", 0.01 },	/* odd, short last group */
	{ 7, 3, 2, 2, "3", 0.5 },		/* tiny, group 2 */
	{ 129, 4096, 1024, 1, "1", 0.01 },	/* largest INT16 group */
	{ 31, 2048, 2048, 3, "1", 0.01 },	/* group too large for it */
	{ 5, 33, 16, 9, "12", 0.2 },		/* gemv8, odd */
	{ 33, 4099, 128, 33, "31", 0.01 },	/* gemm, odd */
};

START_TEST(gpu_matches_cpu)
{
	struct dev_prob dp;
	struct prob p;
	char what[64];

	prob_make(&p, shapes[_i].rows, shapes[_i].cols, shapes[_i].group,
		  shapes[_i].ntok, shapes[_i].encs, shapes[_i].density);
	dev_up(&dp, &p);
	snprintf(what, sizeof(what), "shape %d", _i);
	run_and_compare(&p, &dp, what);
	/* Fresh inputs through the same uploaded tensors. */
	for (size_t k = 0; k < (size_t)p.ntok * p.m.cols; k++)
		p.x[k] = tu_randn(&seed);
	ok_fused_rows(&p.m, p.op, p.no, p.x, p.ref, p.ntok, 0, p.m.rows);
	run_and_compare(&p, &dp, what);
	dev_down(&dp, p.no);
	prob_free(&p);
}
END_TEST

/*
 * NaN and Inf in x come out as IEEE arithmetic gives them, as on the CPU.
 * CSR deltas only: the GEMM kernel adds a dense delta into the weight tile
 * before it multiplies, (w + o) x instead of w x + o x, which is the same
 * sum to rounding for finite x but not for an infinite one (Inf - Inf).
 */
static const struct {
	uint32_t rows, cols, group, ntok;
} special[] = {
	{ 40, 256, 64, 2 },			/* INT16 path on the CPU */
	{ 40, 250, 50, 2 },			/* FP32 on both */
	{ 64, 512, 64, 20 },			/* gemm */
};

START_TEST(gpu_special_values)
{
	struct dev_prob dp;
	struct prob p;
	char what[64];
	uint32_t r, nan = 0, inf = 0;

	prob_make(&p, special[_i].rows, special[_i].cols, special[_i].group,
		  special[_i].ntok, "12", 0.1);
	p.x[5] = INFINITY;				/* token 0 */
	p.x[p.m.cols + 7] = NAN;			/* token 1 */
	ok_fused_rows(&p.m, p.op, p.no, p.x, p.ref, p.ntok, 0, p.m.rows);
	for (r = 0; r < p.m.rows; r++) {
		nan += isnan(p.ref[r]) + isnan(p.ref[p.m.rows + r]);
		inf += isinf(p.ref[r]);
	}
	ck_assert_msg(inf > 0 && nan >= p.m.rows, "CPU twin: %u Inf, %u NaN",
		      inf, nan);
	dev_up(&dp, &p);
	snprintf(what, sizeof(what), "special %d", _i);
	run_and_compare(&p, &dp, what);
	dev_down(&dp, p.no);
	prob_free(&p);
}
END_TEST

/* The device against the CPU twin where x rounding matters most. */
static const struct {
	uint32_t rows, cols, group, ntok;
	const char *encs;
} skewed[] = {
	{ 256, 64, 64, 1, "1" },
	{ 300, 4096, 128, 1, "13" },
	{ 48, 1024, 64, 8, "1" },
	{ 100, 640, 64, 40, "2" },
};

START_TEST(gpu_skewed_x)
{
	struct dev_prob dp;
	struct prob p;
	char what[64];

	prob_make(&p, skewed[_i].rows, skewed[_i].cols, skewed[_i].group,
		  skewed[_i].ntok, skewed[_i].encs, 0.02);
	skew_x(&p);
	dev_up(&dp, &p);
	snprintf(what, sizeof(what), "skewed %d", _i);
	run_and_compare(&p, &dp, what);
	dev_down(&dp, p.no);
	prob_free(&p);
}
END_TEST

/* ortho-bench's resident set: outputs, timings, errors. */
START_TEST(gpu_bench_set)
{
	struct ok_q8 m[3];
	struct ok_ortho o[3];
	struct cuda_bench_set *bs = NULL;
	struct cuda_bench_dev dev;
	struct prob p[3];
	double sec = 0;
	float *y;
	int i, w;

	for (i = 0; i < 3; i++) {
		prob_make(&p[i], 300, 1000, 64, 2, "1", 0.01);
		if (i)		/* one x for the whole set */
			memcpy(p[i].x, p[0].x, 2 * 1000 * sizeof(float));
		m[i] = p[i].m;
		o[i] = p[i].o[0];
	}
	y = malloc(2 * 300 * sizeof(*y));
	ck_assert_ptr_nonnull(y);
	ck_assert_int_eq(cuda_bench_device(gctx, &dev), 0);
	ck_assert_msg(strstr(dev.desc, "sm_") && dev.free_bytes > 0 &&
		      dev.free_bytes <= dev.total_bytes, "%s, %zu of %zu free",
		      dev.desc, dev.free_bytes, dev.total_bytes);
	ck_assert_str_eq(cuda_bench_kernel(2), OKC_FN_GEMV4);
	ck_assert_str_eq(cuda_bench_kernel(17), OKC_FN_GEMM);

	ck_assert_int_eq(cuda_bench_set_new(gctx, m, o, 3, p[0].x, 2, &bs), 0);
	for (w = 0; w < 2; w++) {
		ck_assert_int_eq(cuda_bench_set_pass(bs, w, &sec), 0);
		ck_assert_msg(isfinite(sec) && sec > 0, "%g s", sec);
		for (i = 0; i < 3; i++) {
			p[i].no = (unsigned int)w;
			ok_fused_rows(&p[i].m, p[i].op, p[i].no, p[i].x,
				      p[i].ref, 2, 0, 300);
			for (size_t k = 0; k < 600; k++)
				y[k] = NAN;
			ck_assert_int_eq(cuda_bench_set_output(bs, (uint32_t)i,
							       w, y), 0);
			ck_assert_uint_eq(compare(&p[i], y, "bench set"), 0);
			p[i].no = 1;
		}
	}
	ck_assert_int_eq(cuda_bench_set_output(bs, 3, 0, y), -EINVAL);
	cuda_bench_set_free(bs);

	/* Without deltas "with Ortho" is refused; shapes must agree. */
	ck_assert_int_eq(cuda_bench_set_new(gctx, m, NULL, 3, p[0].x, 2, &bs),
			 0);
	ck_assert_int_eq(cuda_bench_set_pass(bs, 1, &sec), -EINVAL);
	ck_assert_int_eq(cuda_bench_set_pass(bs, 0, &sec), 0);
	cuda_bench_set_free(bs);
	m[1].cols = 999;
	ck_assert_int_eq(cuda_bench_set_new(gctx, m, o, 3, p[0].x, 2, &bs),
			 -EINVAL);
	ck_assert_ptr_null(bs);
	free(y);
	for (i = 0; i < 3; i++)
		prob_free(&p[i]);
}
END_TEST

START_TEST(gpu_select)
{
	struct ortho_ctx *c;
	int err;

	ck_assert_str_eq(ortho_ctx_get_backend(gctx), "cuda:0");
	c = ctx_on("auto", &err);
	ck_assert_int_eq(err, 0);
	ck_assert_str_eq(ortho_ctx_get_backend(c), "cuda:0");
	ortho_ctx_free(c);
	tu_log_clear(&lg);
	ck_assert_ptr_null(ctx_on("cuda:999", &err));
	ck_assert_int_eq(err, -ENODEV);
	ck_assert_msg(tu_log_has(&lg, "CUDA"), "log: %s", lg.buf);
}
END_TEST

START_TEST(gpu_bad_input)
{
	const struct ortho_backend *b = gctx->backend;
	uint32_t rp[3] = { 0, 2, 1 }, col[2] = { 0, 1 };
	uint16_t val[4] = { 0x3c00, 0x3c00, 0x3c00, 0x3c00 };
	struct backend_ortho bo = { .host = { .encoding = OK_CSR32,
		.rows = 2, .cols = 2, .rowptr = rp, .col = col, .val = val } };
	const struct backend_ortho *bop[65];
	struct dev_prob dp;
	struct prob p;
	unsigned int i;

	ck_assert_int_eq(b->ortho_upload(gctx, &bo), -EINVAL); /* goes back */
	rp[2] = 2;
	col[1] = 2;
	ck_assert_int_eq(b->ortho_upload(gctx, &bo), -EINVAL); /* col >= 2 */
	col[1] = 1;
	bo.host.encoding = 9;
	ck_assert_int_eq(b->ortho_upload(gctx, &bo), -EINVAL);
	ck_assert_ptr_null(bo.dev);
	bo.host.encoding = OK_CSR32;
	ck_assert_int_eq(b->ortho_upload(gctx, &bo), 0);

	prob_make(&p, 3, 2, 2, 1, "", 0);
	dev_up(&dp, &p);
	bop[0] = &bo;			/* 2x2 delta on a 3x2 Base */
	ck_assert_int_eq(b->linear(gctx, &dp.q, bop, 1, p.x, p.y, 1),
			 -EINVAL);
	ck_assert_int_eq(b->linear(gctx, &dp.q, bop, 0, p.x, p.y, 0),
			 -EINVAL);
	for (i = 0; i < 65; i++)
		bop[i] = &bo;
	ck_assert_int_eq(b->linear(gctx, &dp.q, bop, 65, p.x, p.y, 1),
			 -E2BIG);
	dev_down(&dp, 0);
	b->ortho_release(gctx, &bo);
	ck_assert_ptr_null(bo.dev);
	prob_free(&p);
}
END_TEST

struct thr {
	struct dev_prob *dp;
	const struct prob *p;
	size_t bad;
	int err;
};

static void *thr_run(void *arg)
{
	struct thr *t = arg;
	float *y = malloc((size_t)t->p->ntok * t->p->m.rows * sizeof(*y));
	int i;

	for (i = 0; y && i < 20 && !t->err; i++) {
		t->err = gctx->backend->linear(gctx, &t->dp->q, t->dp->op,
					       t->p->no, t->p->x, y,
					       t->p->ntok);
		if (!t->err)
			t->bad += compare(t->p, y, "thread");
	}
	free(y);
	return NULL;
}

START_TEST(gpu_threads)
{
	struct thr t[4];
	pthread_t th[4];
	struct dev_prob dp;
	struct prob p;
	int i;

	prob_make(&p, 300, 512, 64, 2, "13", 0.02);
	dev_up(&dp, &p);
	for (i = 0; i < 4; i++) {
		t[i] = (struct thr){ .dp = &dp, .p = &p };
		ck_assert_int_eq(pthread_create(&th[i], NULL, thr_run, &t[i]),
				 0);
	}
	for (i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		ck_assert_int_eq(t[i].err, 0);
		ck_assert_uint_eq(t[i].bad, 0);
	}
	dev_down(&dp, p.no);
	prob_free(&p);
}
END_TEST

#ifdef HAVE_CUDA
/* Return: how many times @needle occurs in @s. */
static unsigned int count_of(const char *s, const char *needle)
{
	unsigned int n = 0;

	while ((s = strstr(s, needle))) {
		n++;
		s++;
	}
	return n;
}

/* Copy @h's arrays into @buf (64-byte aligned parts); *@out views them. */
static size_t ortho_copy_to(const struct ok_ortho *h, uint8_t *buf,
			    size_t cap, struct ok_ortho *out)
{
	size_t nnz, csz, off = 0, n;

	*out = *h;
	if (h->encoding == OK_DENSE16) {
		nnz = (size_t)h->rows * h->cols;
	} else {
		n = ((size_t)h->rows + 1) * sizeof(uint32_t);
		nnz = ((const uint32_t *)h->rowptr)[h->rows];
		csz = h->encoding == OK_CSR16 ? 2 : 4;
		ck_assert_uint_le(n + 64 + nnz * csz + 64, cap);
		memcpy(buf, h->rowptr, n);
		out->rowptr = (const uint32_t *)buf;
		off = (n + 63) / 64 * 64;
		memcpy(buf + off, h->col, nnz * csz);
		out->col = buf + off;
		off = (off + nnz * csz + 63) / 64 * 64;
	}
	ck_assert_uint_le(off + nnz * 2, cap);
	memcpy(buf + off, h->val, nnz * 2);
	out->val = (const uint16_t *)(buf + off);
	return off + nnz * 2;
}

/*
 * Host memory pinned for uploads (the ops table's host_register): an
 * upload from it returns only when its copy is done (the bytes are wiped
 * right after, and the op still matches the CPU twin); unpinning what is
 * not pinned is a quiet no-op; a failed pin (overlapping pinned memory)
 * is logged once and changes nothing; the CPU backend has no such op; and
 * a context closed with memory still pinned unpins it.
 */
START_TEST(gpu_host_register)
{
	const struct ortho_backend *b = gctx->backend;
	struct cuda_dev *d = cuda_dev_of(gctx);
	size_t len = 4 << 20, used;
	struct ortho_ctx *c;
	struct dev_prob dp;
	struct prob p;
	uint8_t *buf;
	int err;

	ck_assert_ptr_nonnull(b->host_register);
	buf = mmap(NULL, len, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(buf, MAP_FAILED);
	prob_make(&p, 300, 512, 64, 1, "1", 0.02);
	memset(&dp, 0, sizeof(dp));
	dp.q.host = p.m;
	ck_assert_int_eq(b->base_upload(gctx, &dp.q), 0);
	used = ortho_copy_to(&p.o[0], buf, len, &dp.o[0].host);
	dp.op[0] = &dp.o[0];

	tu_log_clear(&lg);
	ck_assert_int_eq(backend_host_register(gctx, buf, len), 0);
	ck_assert_uint_eq(d->nregs, 1);
	ck_assert_int_eq(b->ortho_upload(gctx, &dp.o[0]), 0);
	memset(buf, 0xff, used);	/* the copy must have left it */
	poison_y((size_t)p.m.rows * sizeof(float));
	ck_assert_int_eq(b->linear(gctx, &dp.q, dp.op, 1, p.x, p.y, 1), 0);
	ck_assert_uint_eq(compare(&p, p.y, "pinned upload"), 0);

	/* Overlapping pinned memory: refused, logged once, nothing kept. */
	ck_assert_int_eq(cuda_host_register(gctx, buf + 4096, 4096), -EEXIST);
	ck_assert_int_eq(cuda_host_register(gctx, buf + 8192, 4096), -EEXIST);
	ck_assert_uint_eq(d->nregs, 1);
	ck_assert_msg(count_of(lg.buf, "logged once") == 1, "log: %s",
		      lg.buf);
	tu_log_clear(&lg);
	backend_host_unregister(gctx, buf + 4096);	/* not pinned */
	ck_assert_uint_eq(d->nregs, 1);
	backend_host_unregister(gctx, buf);
	ck_assert_uint_eq(d->nregs, 0);
	ck_assert_int_eq(cuda_host_unregister(gctx, buf), -ENOENT);
	ck_assert_msg(lg.len == 0, "log: %s", lg.buf);
	b->ortho_release(gctx, &dp.o[0]);
	b->base_release(gctx, &dp.q);

	c = ctx_on("cpu", &err);
	ck_assert_ptr_nonnull(c);
	ck_assert_ptr_null(c->backend->host_register);
	ck_assert_int_eq(backend_host_register(c, buf, len), -EOPNOTSUPP);
	backend_host_unregister(c, buf);
	ortho_ctx_free(c);

	c = ctx_on("cuda", &err);
	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(backend_host_register(c, buf, len), 0);
	tu_log_clear(&lg);
	ortho_ctx_free(c);		/* unpins it */
	ck_assert_msg(tu_log_has(&lg, "still pinned at close"), "log: %s",
		      lg.buf);
	ck_assert_int_eq(munmap(buf, len), 0);
	prob_free(&p);
}
END_TEST
#endif

START_TEST(gpu_bench_helpers)
{
	struct ortho_ctx *cpu;
	struct prob p;
	double bw = 0, sec = 0;
	char desc[256];
	int err;

	ck_assert_int_eq(cuda_copy_bandwidth(gctx, 64 << 20, 5, &bw), 0);
	ck_assert_msg(isfinite(bw) && bw > 1e9, "copy rate %g B/s", bw);
	prob_make(&p, 512, 1024, 64, 1, "1", 0.01);
	ck_assert_int_eq(cuda_bench_gemv(gctx, &p.m, p.op, p.no, p.x, p.y, 1,
					 10, &sec), 0);
	ck_assert_msg(isfinite(sec) && sec > 0, "%g s", sec);
	ck_assert_uint_eq(compare(&p, p.y, "bench"), 0);
	ck_assert_int_eq(cuda_device_describe(gctx, desc, sizeof(desc)), 0);
	ck_assert_msg(strstr(desc, "sm_"), "%s", desc);
	cpu = ctx_on("cpu", &err);
	ck_assert_ptr_nonnull(cpu);
	ck_assert_int_eq(cuda_copy_bandwidth(cpu, 1 << 20, 1, &bw), -ENODEV);
	ck_assert_int_eq(cuda_bench_gemv(cpu, &p.m, p.op, p.no, p.x, NULL, 1,
					 1, &sec), -ENODEV);
	ortho_ctx_free(cpu);
	prob_free(&p);
}
END_TEST

/* ---- the runner ---- */

/* In a child, so this process never initialises CUDA before forking. */
static int device_usable(char *why, size_t len)
{
#ifdef HAVE_CUDA
	pid_t pid = fork();
	int st = 0;

	if (pid == 0) {
		const struct cuda_api *api;
		CUdevice dev;
		int n = 0, major = 0;

		if (cuda_api_get(NULL, ORTHO_LOG_DEBUG, &api))
			_exit(2);
		if (api->device_get_count(&n) || n < 1)
			_exit(3);
		if (api->device_get(&dev, 0) ||
		    api->device_get_attribute(&major,
				CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
				dev) || major < 8)
			_exit(4);
		_exit(0);
	}
	if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
		st = 0x7f00;
	switch (WEXITSTATUS(st)) {
	case 0:
		return 1;
	case 2:
		snprintf(why, len, "no CUDA driver (libcuda.so.1)");
		return 0;
	case 3:
		snprintf(why, len, "the CUDA driver sees no device");
		return 0;
	case 4:
		snprintf(why, len, "CUDA device 0 is older than sm_80");
		return 0;
	default:
		snprintf(why, len, "the device probe failed");
		return 0;
	}
#else
	snprintf(why, len, "built without the CUDA toolkit");
	return 0;
#endif
}

static TCase *gpu_tcase(void)
{
	TCase *tc = tcase_create("gpu");

	tcase_set_timeout(tc, 300);
	tcase_add_checked_fixture(tc, gpu_setup, gpu_teardown);
	tcase_add_test(tc, gpu_select);
	tcase_add_loop_test(tc, gpu_matches_cpu, 0,
			    sizeof(shapes) / sizeof(shapes[0]));
	tcase_add_loop_test(tc, gpu_special_values, 0,
			    sizeof(special) / sizeof(special[0]));
	tcase_add_loop_test(tc, gpu_skewed_x, 0,
			    sizeof(skewed) / sizeof(skewed[0]));
	tcase_add_test(tc, gpu_bench_set);
	tcase_add_test(tc, gpu_bad_input);
	tcase_add_test(tc, gpu_threads);
	tcase_add_test(tc, gpu_bench_helpers);
#ifdef HAVE_CUDA
	tcase_add_test(tc, gpu_host_register);
#endif
	return tc;
}

int main(void)
{
	Suite *s = suite_create("cuda");
	TCase *tc = tcase_create("select");
	const char *fork_env = getenv("CK_FORK");
	int dev, forking = !fork_env || strcmp(fork_env, "no");
	char why[128] = "";
	SRunner *sr;
	int failed;

	dev = device_usable(why, sizeof(why));
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, select_unknown, 0,
			    sizeof(bad_names) / sizeof(bad_names[0]));
	tcase_add_test(tc, select_cpu);
	tcase_add_test(tc, bench_off_cuda);
	tcase_add_loop_test(tc, bound_cpu_paths, 0,
			    sizeof(cpu_shapes) / sizeof(cpu_shapes[0]));
	if (!dev)
		tcase_add_test(tc, select_no_device);
	else if (forking)
		tcase_add_test(tc, select_hidden_device);
#ifdef HAVE_CUDA
	tcase_add_test(tc, fatbin_contents);
#endif
	suite_add_tcase(s, tc);
	if (dev)
		suite_add_tcase(s, gpu_tcase());
	else
		printf("SKIP: GPU tests: %s\n", why);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
