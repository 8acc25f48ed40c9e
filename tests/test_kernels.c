// SPDX-License-Identifier: MIT
/*
 * The CPU twin of the fused linear op (kernels/): y = deq(Base) x + sum of
 * Ortho x, against a reference computed here in double precision, on each
 * path (scalar, AVX2 and, where the CPU has it, AVX-512), single-threaded
 * and on the pool.
 *
 * Every output is poisoned with NaN before a run, so a row the kernel
 * forgets fails. The bound is relative to what the sum is made of:
 * |y - ref| <= 1e-5 * sum |w x| + 1e-6, plus, where the integer path (AVX2
 * or AVX-512 tiles) may run (groups of a multiple of 16 columns, at most
 * 1024), the error of rounding x to INT16 that kernels/fused.h states:
 * 2^-16 * sum over groups of max |x| * sum |w|.
 */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fp16.h"
#include "kernels.h"
#include "testutil.h"

#define MAX_ORTHO 6
#define REL_TOL 1e-5
#define ABS_TOL 1e-6

/* A Base, its Ortho deltas, the inputs, the reference and the output. */
struct prob {
	struct ok_q8 m;
	int8_t *q;
	float *scales;
	struct ok_ortho o[MAX_ORTHO];
	const struct ok_ortho *op[MAX_ORTHO];
	unsigned int no;
	uint32_t ntok;
	float *x, *y;
	double *ref, *mag, *xqb;
	uint64_t seed;
};

static const char *enc_name(uint32_t enc)
{
	return enc == OK_CSR16 ? "csr16" : enc == OK_CSR32 ? "csr32" :
	       enc == OK_DENSE16 ? "dense16" : "?";
}

static struct prob *prob_new(uint32_t rows, uint32_t cols, uint32_t group,
			     uint32_t ntok, uint64_t seed)
{
	struct prob *p = calloc(1, sizeof(*p));
	size_t ng = (cols + group - 1) / group, k;

	ck_assert_ptr_nonnull(p);
	p->seed = seed;
	p->ntok = ntok;
	p->q = malloc((size_t)rows * cols);
	p->scales = malloc(sizeof(float) * rows * ng);
	p->x = malloc(sizeof(float) * cols * ntok);
	p->y = malloc(sizeof(float) * rows * ntok);
	p->ref = malloc(sizeof(double) * rows * ntok);
	p->mag = malloc(sizeof(double) * rows * ntok);
	p->xqb = malloc(sizeof(double) * rows * ntok);
	ck_assert(p->q && p->scales && p->x && p->y && p->ref && p->mag &&
		  p->xqb);
	for (k = 0; k < (size_t)rows * cols; k++)
		p->q[k] = (int8_t)((int)(tu_rand(&p->seed) % 255) - 127);
	for (k = 0; k < rows * ng; k++)
		p->scales[k] = (0.5f + (tu_randf(&p->seed) + 1) / 2) / 127;
	for (k = 0; k < (size_t)cols * ntok; k++)
		p->x[k] = tu_randf(&p->seed);
	p->m = (struct ok_q8){ p->q, p->scales, rows, cols, group };
	return p;
}

/*
 * Add a delta: CSR (@enc 16 or 32) with each entry present at @density,
 * row @full (when < rows) holding every column; or dense FP16.
 */
static void prob_add(struct prob *p, uint32_t enc, double density,
		     uint32_t full)
{
	const uint32_t rows = p->m.rows, cols = p->m.cols;
	struct ok_ortho *o = &p->o[p->no];
	uint32_t *rp = calloc(rows + 1, sizeof(*rp)), r, c, n = 0;
	uint32_t *c32 = malloc(sizeof(uint32_t) * rows * cols + 4);
	uint16_t *c16 = malloc(sizeof(uint16_t) * rows * cols + 2);
	uint16_t *val = malloc(sizeof(uint16_t) * rows * cols + 2);

	ck_assert(p->no < MAX_ORTHO && rp && c32 && c16 && val);
	for (r = 0; r < rows; r++) {
		for (c = 0; c < cols; c++) {
			double u = (tu_randf(&p->seed) + 1) / 2;

			if (enc != OK_DENSE16 && r != full && u >= density)
				continue;
			c32[n] = c;
			c16[n] = (uint16_t)c;
			val[n++] = f32_to_fp16(tu_randf(&p->seed) * 0.05f);
		}
		rp[r + 1] = n;
	}
	*o = (struct ok_ortho){ enc, rows, cols, rp, NULL, val };
	if (enc == OK_CSR32) {
		o->col = c32;
		free(c16);
	} else {
		o->col = c16;
		free(c32);
	}
	if (enc == OK_DENSE16) {
		free((void *)o->col);
		free(rp);
		o->col = NULL;
		o->rowptr = NULL;
	}
	p->op[p->no] = o;
	p->no++;
}

static void prob_free(struct prob *p)
{
	unsigned int i;

	for (i = 0; i < p->no; i++) {
		free((void *)p->o[i].rowptr);
		free((void *)p->o[i].col);
		free((void *)p->o[i].val);
	}
	free(p->q);
	free(p->scales);
	free(p->x);
	free(p->y);
	free(p->ref);
	free(p->mag);
	free(p->xqb);
	free(p);
}

/* One delta's row @r against token @t, into *s and *a (sum of |terms|). */
static void ref_ortho(const struct ok_ortho *o, const float *x, uint32_t r,
		      double *s, double *a)
{
	uint32_t k, c, k0 = 0, k1 = o->cols;
	double v;

	if (o->encoding != OK_DENSE16) {
		k0 = o->rowptr[r];
		k1 = o->rowptr[r + 1];
	}
	for (k = k0; k < k1; k++) {
		if (o->encoding == OK_DENSE16) {
			c = k;
			v = fp16_to_f32(o->val[(size_t)r * o->cols + k]);
		} else {
			c = o->encoding == OK_CSR16 ?
				((const uint16_t *)o->col)[k] :
				((const uint32_t *)o->col)[k];
			v = fp16_to_f32(o->val[k]);
		}
		*s += v * x[c];
		*a += fabs(v * x[c]);
	}
}

static void prob_ref(struct prob *p)
{
	const struct ok_q8 *m = &p->m;
	size_t ng = (m->cols + m->group - 1) / m->group;
	uint32_t t, r, c;
	unsigned int i;

	for (t = 0; t < p->ntok; t++) {
		const float *x = p->x + (size_t)t * m->cols;

		for (r = 0; r < m->rows; r++) {
			double s = 0, a = 0, w, xb = 0, gw = 0, gx = 0;

			for (c = 0; c < m->cols; c++) {
				w = (double)m->q[(size_t)r * m->cols + c] *
				    m->scales[r * ng + c / m->group];
				s += w * x[c];
				a += fabs(w * x[c]);
				gw += fabs(w);
				gx = fmax(gx, fabs(x[c]));
				if ((c + 1) % m->group && c + 1 < m->cols)
					continue;
				xb += ldexp(gx * gw, -16);
				gw = gx = 0;
			}
			p->xqb[(size_t)t * m->rows + r] = xb;
			for (i = 0; i < p->no; i++)
				ref_ortho(p->op[i], x, r, &s, &a);
			p->ref[(size_t)t * m->rows + r] = s;
			p->mag[(size_t)t * m->rows + r] = a;
		}
	}
}

static void poison(float *y, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		y[i] = NAN;
}

/*
 * The paths a test runs: automatic (AVX-512 tiles where the CPU has them,
 * else AVX2, else scalar), scalar, and, where AVX-512 would be chosen, the
 * AVX2 tiles forced.
 */
enum { PATH_AUTO, PATH_SCALAR, PATH_AVX2 };

static void set_path(int path)
{
	ok_force_scalar(path == PATH_SCALAR);
	ok_force_avx2(path == PATH_AVX2);
}

/* Return: how many of the paths above this CPU has to offer. */
static int npaths(void)
{
	return ok_have_avx512() ? 3 : 2;
}

static const char *path_name(int path)
{
	if (path == PATH_SCALAR || !ok_have_avx2())
		return "scalar";
	if (path == PATH_AVX2 || !ok_have_avx512())
		return "avx2";
	return "avx512";
}

/* Can the integer path (and its rounding of x) compute @p? */
static int int_path(const struct prob *p, int path)
{
	return path != PATH_SCALAR && ok_have_avx2() && p->m.group % 16 == 0 &&
	       p->m.group <= 1024;
}

static double bound_at(const struct prob *p, size_t i, int path)
{
	return REL_TOL * p->mag[i] + ABS_TOL +
	       (int_path(p, path) ? p->xqb[i] : 0);
}

/* Check y against the reference; NaN and Inf in it must come out. */
static void prob_check(const struct prob *p, const float *y, int path,
		       const char *how)
{
	size_t i, n = (size_t)p->m.rows * p->ntok;
	double ref, bound;

	for (i = 0; i < n; i++) {
		ref = p->ref[i];
		if (isnan(ref)) {
			ck_assert_msg(isnan(y[i]), "%s: y[%zu] = %g, want NaN",
				      how, i, y[i]);
			continue;
		}
		if (isinf(ref)) {
			ck_assert_msg(y[i] == ref, "%s: y[%zu] = %g, want %g",
				      how, i, y[i], ref);
			continue;
		}
		bound = bound_at(p, i, path);
		ck_assert_msg(fabs(y[i] - ref) <= bound,
			      "%s: token %zu row %zu: %.9g, want %.9g (bound "
			      "%.3g)", how, i / p->m.rows, i % p->m.rows,
			      y[i], ref, bound);
	}
}

/* Run on @path, through @pool or single-threaded. */
static void prob_run(struct prob *p, struct ok_pool *pool, int path)
{
	set_path(path);
	poison(p->y, (size_t)p->m.rows * p->ntok);
	if (pool)
		ok_fused(pool, &p->m, p->op, p->no, p->x, p->y, p->ntok);
	else
		ok_fused_rows(&p->m, p->op, p->no, p->x, p->y, p->ntok, 0,
			      p->m.rows);
	set_path(PATH_AUTO);
}

static void describe(char *buf, size_t len, const struct prob *p,
		     struct ok_pool *pool, int path)
{
	int n = snprintf(buf, len, "%ux%u g%u ntok %u %s %s", p->m.rows,
			 p->m.cols, p->m.group, p->ntok,
			 path_name(path),
			 pool ? "pool" : "rows");
	unsigned int i;

	for (i = 0; i < p->no && n > 0 && (size_t)n < len; i++)
		n += snprintf(buf + n, len - n, " +%s", enc_name(p->o[i].encoding));
}

/* Both paths, single-threaded and pooled, each checked. */
static void prob_verify(struct prob *p, struct ok_pool *pool)
{
	char how[160];
	int path, pooled;

	prob_ref(p);
	for (path = 0; path < npaths(); path++) {
		for (pooled = 0; pooled <= 1; pooled++) {
			prob_run(p, pooled ? pool : NULL, path);
			describe(how, sizeof(how), p, pooled ? pool : NULL,
				 path);
			prob_check(p, p->y, path, how);
		}
	}
}

static struct ok_pool *pool_or_die(unsigned int threads)
{
	struct ok_pool *pool = NULL;

	ck_assert_int_eq(ok_pool_new(threads, &pool), 0);
	ck_assert_ptr_nonnull(pool);
	return pool;
}

static const uint32_t shapes[][2] = {
	{ 1, 1 }, { 3, 5 }, { 64, 64 }, { 172, 64 }, { 64, 172 },
	{ 257, 1000 }, { 4096, 512 },
};
#define NSHAPES (sizeof(shapes) / sizeof(shapes[0]))
static const uint32_t groups[] = { 64, 32, 128, 48, 7, 1 };
#define NGROUPS (sizeof(groups) / sizeof(groups[0]))
static const uint32_t ntoks[] = { 1, 2, 3, 5, 8 };
#define NNTOK (sizeof(ntoks) / sizeof(ntoks[0]))

/* Big shapes get the common groups and a few token counts only. */
static int skip_combo(size_t si, size_t gi, size_t ti)
{
	uint64_t size = (uint64_t)shapes[si][0] * shapes[si][1];

	if (size >= 1000000)
		return gi > 0 && gi != 3 ? 1 : ntoks[ti] == 2 ||
					       ntoks[ti] == 8;
	if (size >= 100000)
		return gi == 5 && ntoks[ti] > 2;
	return 0;
}

START_TEST(t_base_shapes)
{
	struct ok_pool *pool = pool_or_die(3);
	size_t si, gi, ti;
	struct prob *p;

	for (si = 0; si < NSHAPES; si++) {
		for (gi = 0; gi < NGROUPS; gi++) {
			for (ti = 0; ti < NNTOK; ti++) {
				if (skip_combo(si, gi, ti))
					continue;
				p = prob_new(shapes[si][0], shapes[si][1],
					     groups[gi], ntoks[ti],
					     si * 1000 + gi * 10 + ti + 1);
				prob_verify(p, pool);
				prob_free(p);
			}
		}
	}
	ok_pool_free(pool);
}
END_TEST

/* A group wider than the row, and a row that ends in a short group. */
START_TEST(t_group_edges)
{
	static const uint32_t cases[][3] = {
		{ 5, 3, 64 }, { 9, 100, 64 }, { 33, 1001, 64 }, { 40, 77, 76 },
		{ 17, 130, 128 }, { 70, 200, 200 }, { 35, 8, 3 },
	};
	struct ok_pool *pool = pool_or_die(2);
	struct prob *p;
	size_t i;
	uint32_t t;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		for (t = 1; t <= 5; t += 2) {
			p = prob_new(cases[i][0], cases[i][1], cases[i][2], t,
				     77 + i * 3 + t);
			prob_verify(p, pool);
			prob_free(p);
		}
	}
	ok_pool_free(pool);
}
END_TEST

START_TEST(t_ortho_each)
{
	static const uint32_t encs[] = { OK_CSR16, OK_CSR32, OK_DENSE16 };
	static const uint32_t sh[][3] = {
		{ 3, 5, 64 }, { 64, 172, 48 }, { 257, 1000, 64 }, { 172, 64, 32 },
	};
	static const double dens[] = { 0.01, 0.3 };
	struct ok_pool *pool = pool_or_die(3);
	size_t e, s, d, t;
	struct prob *p;

	for (e = 0; e < 3; e++) {
		for (s = 0; s < 4; s++) {
			for (d = 0; d < 2; d++) {
				for (t = 0; t < NNTOK; t += 2) {
					p = prob_new(sh[s][0], sh[s][1],
						     sh[s][2], ntoks[t],
						     e * 100 + s * 10 + d + t);
					prob_add(p, encs[e], dens[d], UINT32_MAX);
					prob_verify(p, pool);
					prob_free(p);
				}
			}
		}
	}
	ok_pool_free(pool);
}
END_TEST

/* Every encoding at once, plus an empty CSR and rows with every column. */
START_TEST(t_ortho_several)
{
	static const uint32_t sh[][3] = {
		{ 172, 64, 64 }, { 257, 1000, 48 }, { 64, 172, 128 },
		{ 3, 5, 2 },
	};
	struct ok_pool *pool = pool_or_die(4);
	size_t s, t;
	struct prob *p;

	for (s = 0; s < 4; s++) {
		for (t = 0; t < NNTOK; t++) {
			p = prob_new(sh[s][0], sh[s][1], sh[s][2], ntoks[t],
				     900 + s * 10 + t);
			prob_add(p, OK_CSR16, 0.02, 0);
			prob_add(p, OK_CSR16, 0.0, UINT32_MAX);
			prob_add(p, OK_CSR32, 0.05, sh[s][0] / 2);
			prob_add(p, OK_DENSE16, 1.0, UINT32_MAX);
			prob_add(p, OK_CSR32, 0.0, sh[s][0] - 1);
			ck_assert_uint_eq(p->o[1].rowptr[sh[s][0]], 0);
			prob_verify(p, pool);
			prob_free(p);
		}
	}
	ok_pool_free(pool);
}
END_TEST

/*
 * The paths agree with each other, not only each with the reference. The
 * AVX-512 and AVX2 tiles round x the same way and sum it exactly in INT32,
 * so they differ by FP32 rounding alone.
 */
START_TEST(t_paths_match)
{
	static const uint32_t sh[][4] = {
		{ 257, 1000, 64, 1 }, { 4096, 512, 64, 1 }, { 172, 64, 48, 5 },
		{ 64, 172, 7, 3 }, { 33, 1001, 128, 8 }, { 40, 1000, 16, 2 },
	};
	size_t s, i, n;
	struct prob *p;
	float *a, *b;
	int path;

	ck_assert(ok_have_avx2());
	for (s = 0; s < sizeof(sh) / sizeof(sh[0]); s++) {
		p = prob_new(sh[s][0], sh[s][1], sh[s][2], sh[s][3], 4242 + s);
		prob_add(p, OK_CSR16, 0.01, 1);
		prob_add(p, OK_DENSE16, 1.0, UINT32_MAX);
		prob_ref(p);
		n = (size_t)p->m.rows * p->ntok;
		a = malloc(sizeof(*a) * n);
		b = malloc(sizeof(*b) * n);
		ck_assert(a && b);
		prob_run(p, NULL, PATH_SCALAR);
		memcpy(b, p->y, sizeof(*b) * n);
		for (path = 0; path < npaths(); path++) {
			if (path == PATH_SCALAR)
				continue;
			prob_run(p, NULL, path);
			for (i = 0; i < n; i++)
				ck_assert_msg(fabs(b[i] - p->y[i]) <=
						      2 * REL_TOL * p->mag[i] +
						      ABS_TOL + p->xqb[i],
					      "shape %zu: %s %.9g scalar %.9g "
					      "at %zu", s, path_name(path),
					      p->y[i], b[i], i);
			if (path == PATH_AUTO)
				memcpy(a, p->y, sizeof(*a) * n);
		}
		if (npaths() > PATH_AVX2) {
			/* p->y: the AVX2 tiles', a: the AVX-512 tiles' */
			for (i = 0; i < n; i++)
				ck_assert_msg(fabs(a[i] - p->y[i]) <=
						      2 * REL_TOL * p->mag[i] +
						      ABS_TOL,
					      "shape %zu: avx512 %.9g avx2 %.9g "
					      "at %zu", s, a[i], p->y[i], i);
		}
		free(a);
		free(b);
		prob_free(p);
	}
}
END_TEST

/* The pool's split never changes a bit of the result, on any path. */
START_TEST(t_threads_identical)
{
	static const uint32_t sh[][4] = {
		{ 257, 1000, 64, 1 }, { 4096, 512, 64, 1 }, { 4096, 512, 48, 3 },
		{ 1000, 257, 32, 8 }, { 100, 1000, 64, 2 },
	};
	static const unsigned int threads[] = { 2, 3, 4, 7 };
	struct ok_pool *pool;
	size_t s, ti, n, bytes;
	int path;
	struct prob *p;
	float *one;

	for (s = 0; s < sizeof(sh) / sizeof(sh[0]); s++) {
		p = prob_new(sh[s][0], sh[s][1], sh[s][2], sh[s][3], 31 + s);
		prob_add(p, OK_CSR16, 0.01, 3);
		prob_add(p, OK_CSR32, 0.001, UINT32_MAX);
		n = (size_t)p->m.rows * p->ntok;
		bytes = n * sizeof(float);
		one = malloc(bytes);
		ck_assert_ptr_nonnull(one);
		for (path = 0; path < npaths(); path++) {
			prob_run(p, NULL, path);
			memcpy(one, p->y, bytes);
			for (ti = 0; ti < 4; ti++) {
				pool = pool_or_die(threads[ti]);
				prob_run(p, pool, path);
				ck_assert_msg(!memcmp(one, p->y, bytes),
					      "shape %zu, %u threads, %s: "
					      "differs from one thread", s,
					      threads[ti],
					      path_name(path));
				ok_pool_free(pool);
			}
		}
		free(one);
		prob_free(p);
	}
}
END_TEST

/* With no Ortho the fused kernel is the INT8 kernel, bit for bit. */
START_TEST(t_fused_is_int8)
{
	struct ok_pool *pool = pool_or_die(2);
	size_t n, bytes;
	struct prob *p;
	int path;
	uint32_t t;
	float *a;

	for (t = 1; t <= 5; t += 2) {
		p = prob_new(300, 700, 64, t, 5 + t);
		n = (size_t)p->m.rows * t;
		bytes = n * sizeof(float);
		a = malloc(bytes);
		ck_assert_ptr_nonnull(a);
		prob_ref(p);
		for (path = 0; path < npaths(); path++) {
			set_path(path);
			poison(a, n);
			ok_int8(pool, &p->m, p->x, a, t);
			poison(p->y, n);
			ok_fused(pool, &p->m, NULL, 0, p->x, p->y, t);
			ck_assert(!memcmp(a, p->y, bytes));
			prob_check(p, a, path, "ok_int8");
			poison(a, n);
			ok_int8_rows(&p->m, p->x, a, t, 0, p->m.rows);
			ck_assert(!memcmp(a, p->y, bytes));
			set_path(PATH_AUTO);
		}
		free(a);
		prob_free(p);
	}
	ok_pool_free(pool);
}
END_TEST

/* ok_fused_rows() writes its rows of every token and nothing else. */
START_TEST(t_row_range)
{
	static const uint32_t ranges[][2] = {
		{ 0, 1 }, { 5, 77 }, { 76, 77 }, { 16, 64 }, { 70, 500 },
	};
	struct prob *p = prob_new(77, 300, 64, 3, 99);
	uint32_t r, t, r0, r1;
	size_t i;
	int path;
	float v;

	prob_add(p, OK_CSR16, 0.05, 10);
	prob_ref(p);
	for (path = 0; path < npaths(); path++) {
		set_path(path);
		for (i = 0; i < sizeof(ranges) / sizeof(ranges[0]); i++) {
			r0 = ranges[i][0];
			r1 = ranges[i][1];
			poison(p->y, (size_t)p->m.rows * p->ntok);
			ok_fused_rows(&p->m, p->op, p->no, p->x, p->y, p->ntok,
				      r0, r1);
			for (t = 0; t < p->ntok; t++) {
				for (r = 0; r < p->m.rows; r++) {
					i = (size_t)t * p->m.rows + r;
					v = p->y[i];
					if (r < r0 || r >= r1) {
						ck_assert_msg(isnan(v), "row %u "
							"outside [%u, %u) "
							"written", r, r0, r1);
						continue;
					}
					ck_assert(fabs(v - p->ref[i]) <=
						  bound_at(p, i, path));
				}
			}
		}
		set_path(PATH_AUTO);
	}
	prob_free(p);
}
END_TEST

/* A NaN in x reaches its token's every row, and only that token. */
START_TEST(t_nan_propagates)
{
	static const uint32_t cols_at[] = { 0, 517, 1002 };	/* 1002: a tail */
	struct ok_pool *pool = pool_or_die(2);
	struct prob *p;
	size_t i;

	for (i = 0; i < 3; i++) {
		p = prob_new(257, 1003, 64, 3, 123 + i);
		prob_add(p, OK_CSR16, 0.01, UINT32_MAX);
		p->x[1 * 1003 + cols_at[i]] = NAN;
		prob_ref(p);
		ck_assert(isnan(p->ref[257 + 5]) && !isnan(p->ref[5]));
		prob_verify(p, pool);
		prob_free(p);
	}

	/* A NaN in an Ortho value: its row, every token. */
	p = prob_new(64, 172, 64, 5, 321);
	prob_add(p, OK_CSR16, 0.05, 9);
	((uint16_t *)p->o[0].val)[p->o[0].rowptr[9] + 3] = 0x7e00;
	prob_ref(p);
	ck_assert(isnan(p->ref[9]) && isnan(p->ref[4 * 64 + 9]));
	ck_assert(!isnan(p->ref[8]));
	prob_verify(p, pool);
	prob_free(p);

	/* Inf in the dense delta's tail (cols % 8 != 0). */
	p = prob_new(20, 13, 8, 2, 322);
	prob_add(p, OK_DENSE16, 1, UINT32_MAX);
	((uint16_t *)p->o[0].val)[4 * 13 + 12] = 0x7c00;
	prob_ref(p);
	ck_assert(isinf(p->ref[4]) || isnan(p->ref[4]));
	prob_verify(p, pool);
	prob_free(p);
	ok_pool_free(pool);
}
END_TEST

/*
 * Tokens of a GEMM never mix: a token's result is the same in any block,
 * alone too (the group is 64: the integer path, whose one-token calls sum
 * as a GEMM's tokens do; the scalar path's do as well).
 */
START_TEST(t_tokens_independent)
{
	struct prob *p = prob_new(100, 333, 64, 8, 7);
	size_t n = 100 * 8, bytes = n * sizeof(float);
	float *full = malloc(bytes);
	int path;
	uint32_t t;

	ck_assert_ptr_nonnull(full);
	prob_add(p, OK_CSR16, 0.05, UINT32_MAX);
	for (path = 0; path < npaths(); path++) {
		prob_run(p, NULL, path);
		memcpy(full, p->y, bytes);
		for (t = 1; t < 8; t++) {
			set_path(path);
			poison(p->y, n);
			ok_fused_rows(&p->m, p->op, p->no, p->x, p->y, t, 0,
				      p->m.rows);
			set_path(PATH_AUTO);
			ck_assert_msg(!memcmp(full, p->y,
					      (size_t)t * 100 * sizeof(float)),
				      "%s: first %u of 8 tokens differ",
				      path_name(path), t);
		}
	}
	free(full);
	prob_free(p);
}
END_TEST

/*
 * A token's outputs do not depend on its neighbours in a GEMM's tile: with
 * a NaN in another token's x the tile takes its slow way (the marked group
 * in FP32, the CSR delta added after the Base instead of between its
 * groups), and this token's bits stay the same.
 */
/* Token 1 all NaN, the others' bits those of @clean. */
static void check_neighbours(const struct prob *p, const float *clean,
			     const char *how)
{
	size_t i, n = (size_t)p->m.rows * p->ntok;

	for (i = 0; i < n; i++) {
		if (i / p->m.rows == 1) {
			ck_assert(isnan(p->y[i]));
			continue;
		}
		ck_assert_msg(!memcmp(&clean[i], &p->y[i], sizeof(float)),
			      "%s: token %zu row %zu changed", how,
			      i / p->m.rows, i % p->m.rows);
	}
}

START_TEST(t_marked_neighbour)
{
	static const uint32_t sh[][3] = {
		{ 100, 1000, 64 }, { 77, 300, 48 }, { 64, 8200, 64 },
	};
	struct ok_pool *pool = pool_or_die(2);
	struct ok_pool *use;
	struct prob *p;
	char how[160];
	float *clean;
	size_t s, n;
	int path, pooled;

	for (s = 0; s < sizeof(sh) / sizeof(sh[0]); s++) {
		p = prob_new(sh[s][0], sh[s][1], sh[s][2], 4, 600 + s);
		prob_add(p, OK_CSR16, 0.03, 5);
		prob_add(p, OK_CSR32, 0.01, UINT32_MAX);
		n = (size_t)p->m.rows * 4;
		clean = malloc(sizeof(*clean) * n);
		ck_assert_ptr_nonnull(clean);
		for (path = 0; path < npaths(); path++) {
			for (pooled = 0; pooled <= 1; pooled++) {
				use = pooled ? pool : NULL;
				p->x[sh[s][1] + 3] = 0.5f;
				prob_run(p, use, path);
				memcpy(clean, p->y, sizeof(*clean) * n);
				p->x[sh[s][1] + 3] = NAN;
				prob_run(p, use, path);
				describe(how, sizeof(how), p, use, path);
				check_neighbours(p, clean, how);
			}
		}
		free(clean);
		prob_free(p);
	}
	ok_pool_free(pool);
}
END_TEST

/*
 * One pool, many calls back to back and with pauses longer than the
 * workers' spin between them (they fall asleep and are woken), shapes and
 * token counts changing from call to call: every result is the one a
 * single thread computes, bit for bit.
 */
START_TEST(t_pool_calls)
{
	static const uint32_t sh[][4] = {
		{ 4096, 256, 64, 1 }, { 300, 700, 64, 3 }, { 1024, 512, 48, 1 },
		{ 64, 2048, 64, 2 }, { 2000, 100, 7, 1 },
	};
	enum { NSH = sizeof(sh) / sizeof(sh[0]) };
	struct ok_pool *pool = pool_or_die(3);
	struct prob *p[NSH];
	float *want[NSH];
	size_t s, n;
	int i;

	for (s = 0; s < NSH; s++) {
		p[s] = prob_new(sh[s][0], sh[s][1], sh[s][2], sh[s][3], 50 + s);
		if (s % 2)
			prob_add(p[s], OK_CSR16, 0.02, UINT32_MAX);
		n = (size_t)sh[s][0] * sh[s][3];
		want[s] = malloc(sizeof(float) * n);
		ck_assert_ptr_nonnull(want[s]);
		prob_run(p[s], NULL, PATH_AUTO);
		memcpy(want[s], p[s]->y, sizeof(float) * n);
	}
	for (i = 0; i < 200; i++) {
		s = (size_t)(i * 7 + i / 5) % NSH;
		n = (size_t)sh[s][0] * sh[s][3];
		if (i % 50 == 49)
			usleep(1000);
		prob_run(p[s], pool, PATH_AUTO);
		ck_assert_msg(!memcmp(want[s], p[s]->y, sizeof(float) * n),
			      "call %d (shape %zu) differs", i, s);
	}
	for (s = 0; s < NSH; s++) {
		free(want[s]);
		prob_free(p[s]);
	}
	ok_pool_free(pool);
}
END_TEST

/* Four threads calling into one pool at once: each gets its own answer. */
#define CONC_THREADS 4
#define CONC_ROUNDS 40

struct conc {
	struct ok_pool *pool;
	struct prob *p;
	float *want, *y;
	int bad;
};

static void *conc_main(void *arg)
{
	struct conc *c = arg;
	size_t n = (size_t)c->p->m.rows * c->p->ntok;
	int i;

	for (i = 0; i < CONC_ROUNDS; i++) {
		poison(c->y, n);
		ok_fused(c->pool, &c->p->m, c->p->op, c->p->no, c->p->x, c->y,
			 c->p->ntok);
		if (memcmp(c->y, c->want, n * sizeof(float)))
			c->bad++;
	}
	return NULL;
}

START_TEST(t_concurrent_callers)
{
	static const uint32_t sh[CONC_THREADS][3] = {
		{ 512, 512, 1 }, { 257, 1000, 3 }, { 1024, 256, 1 },
		{ 300, 700, 2 },
	};
	struct ok_pool *pool = pool_or_die(3);
	struct conc c[CONC_THREADS];
	pthread_t tid[CONC_THREADS];
	size_t n;
	int i;

	for (i = 0; i < CONC_THREADS; i++) {
		c[i].pool = pool;
		c[i].bad = 0;
		c[i].p = prob_new(sh[i][0], sh[i][1], 64, sh[i][2], 600 + i);
		prob_add(c[i].p, i & 1 ? OK_CSR32 : OK_CSR16, 0.02, 1);
		n = (size_t)sh[i][0] * sh[i][2];
		c[i].want = malloc(n * sizeof(float));
		c[i].y = malloc(n * sizeof(float));
		ck_assert(c[i].want && c[i].y);
		prob_run(c[i].p, NULL, 0);
		memcpy(c[i].want, c[i].p->y, n * sizeof(float));
	}
	for (i = 0; i < CONC_THREADS; i++)
		ck_assert_int_eq(pthread_create(&tid[i], NULL, conc_main,
						&c[i]), 0);
	for (i = 0; i < CONC_THREADS; i++)
		pthread_join(tid[i], NULL);
	for (i = 0; i < CONC_THREADS; i++) {
		ck_assert_msg(!c[i].bad, "caller %d: %d of %d runs wrong", i,
			      c[i].bad, CONC_ROUNDS);
		prob_ref(c[i].p);
		prob_check(c[i].p, c[i].y, 0, "concurrent");
		free(c[i].want);
		free(c[i].y);
		prob_free(c[i].p);
	}
	ok_pool_free(pool);
}
END_TEST

START_TEST(t_pool_api)
{
	long online = sysconf(_SC_NPROCESSORS_ONLN);
	struct ok_pool *pool = (struct ok_pool *)&pool;
	struct prob *p;

	ck_assert_int_eq(ok_pool_new(2, NULL), -EINVAL);
	ck_assert_int_eq(ok_pool_new(5000, &pool), -EINVAL);
	ck_assert_ptr_null(pool);
	ck_assert_uint_eq(ok_pool_threads(NULL), 1);
	ok_pool_free(NULL);

	pool = pool_or_die(0);
	ck_assert_uint_eq(ok_pool_threads(pool), online > 0 ? online : 1);
	ok_pool_free(pool);

	/* One thread, and no pool at all: the caller computes alone. */
	p = prob_new(300, 400, 64, 2, 17);
	prob_add(p, OK_CSR16, 0.02, UINT32_MAX);
	pool = pool_or_die(1);
	ck_assert_uint_eq(ok_pool_threads(pool), 1);
	prob_ref(p);
	prob_run(p, pool, 0);
	prob_check(p, p->y, 0, "1-thread pool");
	ok_pool_free(pool);
	poison(p->y, 600);
	ok_fused(NULL, &p->m, p->op, p->no, p->x, p->y, 2);
	prob_check(p, p->y, 0, "no pool");
	prob_free(p);
}
END_TEST

/* The calls with nothing to do touch nothing. */
START_TEST(t_empty_calls)
{
	struct prob *p = prob_new(40, 50, 64, 1, 3);
	struct ok_pool *pool = pool_or_die(2);

	poison(p->y, 40);
	ok_fused(pool, &p->m, NULL, 0, p->x, p->y, 0);
	ok_fused_rows(&p->m, NULL, 0, p->x, p->y, 1, 10, 10);
	ok_fused_rows(&p->m, NULL, 0, p->x, p->y, 1, 50, 60);
	ok_int8_rows(&p->m, p->x, p->y, 1, 30, 20);
	ck_assert(isnan(p->y[0]) && isnan(p->y[10]) && isnan(p->y[39]));
	ok_pool_free(pool);
	prob_free(p);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("kernels");
	TCase *tc = tcase_create("cpu");
	SRunner *sr;
	int failed;

	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, t_base_shapes);
	tcase_add_test(tc, t_group_edges);
	tcase_add_test(tc, t_ortho_each);
	tcase_add_test(tc, t_ortho_several);
	tcase_add_test(tc, t_threads_identical);
	tcase_add_test(tc, t_fused_is_int8);
	tcase_add_test(tc, t_row_range);
	tcase_add_test(tc, t_nan_propagates);
	tcase_add_test(tc, t_tokens_independent);
	tcase_add_test(tc, t_marked_neighbour);
	tcase_add_test(tc, t_pool_calls);
	tcase_add_test(tc, t_concurrent_callers);
	tcase_add_test(tc, t_pool_api);
	tcase_add_test(tc, t_empty_calls);
	if (ok_have_avx2())
		tcase_add_test(tc, t_paths_match);
	else
		printf("SKIP: t_paths_match: this CPU has no AVX2+FMA+F16C, "
		       "only the scalar path runs\n");
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
