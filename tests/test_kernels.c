// SPDX-License-Identifier: MIT
/*
 * The CPU twin of the fused linear op (kernels/): y = deq(Base) x + sum of
 * Ortho x, against a reference computed here in double precision, on both
 * paths (scalar and AVX2), single-threaded and on the pool.
 *
 * Every output is poisoned with NaN before a run, so a row the kernel
 * forgets fails. The bound is relative to what the sum is made of:
 * |y - ref| <= 1e-5 * sum |w x| + 1e-6.
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
	double *ref, *mag;
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
	ck_assert(p->q && p->scales && p->x && p->y && p->ref && p->mag);
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
			double s = 0, a = 0, w;

			for (c = 0; c < m->cols; c++) {
				w = (double)m->q[(size_t)r * m->cols + c] *
				    m->scales[r * ng + c / m->group];
				s += w * x[c];
				a += fabs(w * x[c]);
			}
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

/* Check y against the reference; NaN in the reference must come out. */
static void prob_check(const struct prob *p, const float *y, const char *how)
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
		bound = REL_TOL * p->mag[i] + ABS_TOL;
		ck_assert_msg(fabs(y[i] - ref) <= bound,
			      "%s: token %zu row %zu: %.9g, want %.9g (bound "
			      "%.3g)", how, i / p->m.rows, i % p->m.rows,
			      y[i], ref, bound);
	}
}

/* Run on @path (1 scalar, 0 automatic), through @pool or single-threaded. */
static void prob_run(struct prob *p, struct ok_pool *pool, int scalar)
{
	ok_force_scalar(scalar);
	poison(p->y, (size_t)p->m.rows * p->ntok);
	if (pool)
		ok_fused(pool, &p->m, p->op, p->no, p->x, p->y, p->ntok);
	else
		ok_fused_rows(&p->m, p->op, p->no, p->x, p->y, p->ntok, 0,
			      p->m.rows);
	ok_force_scalar(0);
}

static void describe(char *buf, size_t len, const struct prob *p,
		     struct ok_pool *pool, int scalar)
{
	int n = snprintf(buf, len, "%ux%u g%u ntok %u %s %s", p->m.rows,
			 p->m.cols, p->m.group, p->ntok,
			 scalar ? "scalar" : ok_have_avx2() ? "avx2" : "auto",
			 pool ? "pool" : "rows");
	unsigned int i;

	for (i = 0; i < p->no && n > 0 && (size_t)n < len; i++)
		n += snprintf(buf + n, len - n, " +%s", enc_name(p->o[i].encoding));
}

/* Both paths, single-threaded and pooled, each checked. */
static void prob_verify(struct prob *p, struct ok_pool *pool)
{
	char how[160];
	int scalar, pooled;

	prob_ref(p);
	for (scalar = 0; scalar <= 1; scalar++) {
		for (pooled = 0; pooled <= 1; pooled++) {
			prob_run(p, pooled ? pool : NULL, scalar);
			describe(how, sizeof(how), p, pooled ? pool : NULL,
				 scalar);
			prob_check(p, p->y, how);
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

/* The two paths agree with each other, not only each with the reference. */
START_TEST(t_paths_match)
{
	static const uint32_t sh[][4] = {
		{ 257, 1000, 64, 1 }, { 4096, 512, 64, 1 }, { 172, 64, 48, 5 },
		{ 64, 172, 7, 3 }, { 33, 1001, 128, 8 },
	};
	size_t s, i, n;
	struct prob *p;
	float *a;

	ck_assert(ok_have_avx2());
	for (s = 0; s < sizeof(sh) / sizeof(sh[0]); s++) {
		p = prob_new(sh[s][0], sh[s][1], sh[s][2], sh[s][3], 4242 + s);
		prob_add(p, OK_CSR16, 0.01, 1);
		prob_add(p, OK_DENSE16, 1.0, UINT32_MAX);
		prob_ref(p);
		n = (size_t)p->m.rows * p->ntok;
		a = malloc(sizeof(*a) * n);
		ck_assert_ptr_nonnull(a);
		prob_run(p, NULL, 0);
		ck_assert(ok_have_avx2());
		memcpy(a, p->y, sizeof(*a) * n);
		prob_run(p, NULL, 1);
		for (i = 0; i < n; i++)
			ck_assert_msg(fabs(a[i] - p->y[i]) <=
					      2 * REL_TOL * p->mag[i] + ABS_TOL,
				      "shape %zu: avx2 %.9g scalar %.9g at %zu",
				      s, a[i], p->y[i], i);
		free(a);
		prob_free(p);
	}
}
END_TEST
