// SPDX-License-Identifier: MIT
/*
 * The CPU twin of the fused linear op: y = deq(Base) x + sum of Ortho x.
 * This file holds the portable scalar path and picks it or the AVX2 path
 * (fused_avx2.c) at run time.
 *
 * Both ok_int8_rows() and ok_fused_rows() expand one inline body; the Ortho
 * add is a branch taken once per row, outside the loop over the weights,
 * so ok_fused_rows() with no Ortho costs what ok_int8_rows() does.
 *
 * Preconditions (checked by whoever loaded the tensors, not here): group
 * >= 1, every Ortho has the Base's shape, row pointers are monotonic and
 * end within the arrays, column indices are below cols. x and y do not
 * overlap.
 */
#include <stddef.h>
#include <stdint.h>

#include "fp16.h"
#include "fused.h"
#include "kernels.h"

/* Tokens that share one read of a weight row. */
#define SC_TOK_BLOCK 4

static int force_scalar;
static int force_avx2;

static inline uint32_t q8_groups(const struct ok_q8 *m)
{
	return (uint32_t)(((uint64_t)m->cols + m->group - 1) / m->group);
}

/*
 * Base part of row @r for tokens [t0, t0 + nt). The sums for one token do
 * not depend on @nt, so a token's result is the same alone or in a block.
 */
static inline void sc_base_block(const struct ok_q8 *m, const float *x,
				 float *y, uint32_t r, uint32_t t0,
				 uint32_t nt)
{
	const size_t cols = m->cols;
	const uint32_t ng = q8_groups(m);
	const int8_t *q = m->q + (size_t)r * cols;
	const float *sc = m->scales + (size_t)r * ng;
	const float *xt = x + (size_t)t0 * cols;
	float acc[SC_TOK_BLOCK] = { 0 };
	size_t c0 = 0, c1, c;
	uint32_t gi, j;

	for (gi = 0; gi < ng; gi++, c0 = c1) {
		float s[SC_TOK_BLOCK] = { 0 };

		c1 = c0 + m->group < cols ? c0 + m->group : cols;
		for (c = c0; c < c1; c++) {
			float w = (float)q[c];

			for (j = 0; j < nt; j++)
				s[j] += w * xt[j * cols + c];
		}
		for (j = 0; j < nt; j++)
			acc[j] += s[j] * sc[gi];
	}
	for (j = 0; j < nt; j++)
		y[(size_t)(t0 + j) * m->rows + r] = acc[j];
}

/*
 * One Ortho delta's row @r, added to tokens [t0, t0 + nt). The layout of x
 * and y is the Base's (@m), whose shape the delta shares.
 */
static void sc_ortho_block(const struct ok_q8 *m, const struct ok_ortho *o,
			   const float *x, float *y, uint32_t r, uint32_t t0,
			   uint32_t nt)
{
	const size_t cols = m->cols;
	const float *xt = x + (size_t)t0 * cols;
	float s[SC_TOK_BLOCK] = { 0 };
	size_t k, k0, k1, c;
	uint32_t j;
	float v;

	if (o->encoding == OK_DENSE16) {
		k0 = (size_t)r * cols;
		for (c = 0; c < cols; c++) {
			v = fp16_to_f32(o->val[k0 + c]);
			for (j = 0; j < nt; j++)
				s[j] += v * xt[j * cols + c];
		}
	} else {
		k0 = o->rowptr[r];
		k1 = o->rowptr[r + 1];
		for (k = k0; k < k1; k++) {
			if (o->encoding == OK_CSR16)
				c = ((const uint16_t *)o->col)[k];
			else
				c = ((const uint32_t *)o->col)[k];
			v = fp16_to_f32(o->val[k]);
			for (j = 0; j < nt; j++)
				s[j] += v * xt[j * cols + c];
		}
	}
	for (j = 0; j < nt; j++)
		y[(size_t)(t0 + j) * m->rows + r] += s[j];
}

static void sc_ortho_row(const struct ok_q8 *m, const struct ok_ortho *const *o,
			 unsigned int no, const float *x, float *y,
			 uint32_t ntok, uint32_t r)
{
	uint32_t t0, nt;
	unsigned int i;

	for (i = 0; i < no; i++) {
		if (o[i]->encoding != OK_CSR16 && o[i]->encoding != OK_CSR32 &&
		    o[i]->encoding != OK_DENSE16)
			continue;
		for (t0 = 0; t0 < ntok; t0 += nt) {
			nt = ntok - t0 < SC_TOK_BLOCK ? ntok - t0 : SC_TOK_BLOCK;
			sc_ortho_block(m, o[i], x, y, r, t0, nt);
		}
	}
}

static inline void sc_rows_body(const struct ok_q8 *m,
				const struct ok_ortho *const *o,
				unsigned int no, const float *x, float *y,
				uint32_t ntok, uint32_t r0, uint32_t r1)
{
	uint32_t r, t0, nt;

	for (r = r0; r < r1; r++) {
		for (t0 = 0; t0 < ntok; t0 += nt) {
			nt = ntok - t0 < SC_TOK_BLOCK ? ntok - t0 : SC_TOK_BLOCK;
			sc_base_block(m, x, y, r, t0, nt);
		}
		/* While the row's outputs are still in L1. */
		if (no)
			sc_ortho_row(m, o, no, x, y, ntok, r);
	}
}

/* Return: 0 when there is nothing to compute (or the shape is unusable). */
static inline int clamp_rows(const struct ok_q8 *m, uint32_t ntok,
			     uint32_t r0, uint32_t *r1)
{
	if (!m->group || !ntok)
		return 0;
	if (*r1 > m->rows)
		*r1 = m->rows;
	return r0 < *r1;
}

/**
 * ok_have_avx2() - is the AVX2 path the one in use?
 *
 * Return: 1 when the CPU has AVX2, FMA and F16C and ok_force_scalar() is
 * off, else 0.
 */
int ok_have_avx2(void)
{
	return !__atomic_load_n(&force_scalar, __ATOMIC_RELAXED) &&
	       okx_cpu_ok();
}

/**
 * ok_have_avx512() - does the integer path run its AVX-512 tiles?
 *
 * Return: 1 when the AVX2 path is in use, the CPU has AVX-512 F, BW, VL
 * and VNNI, and ok_force_avx2() is off, else 0.
 */
int ok_have_avx512(void)
{
#if OK_HAVE_X86
	return ok_have_avx2() &&
	       !__atomic_load_n(&force_avx2, __ATOMIC_RELAXED) &&
	       okx_avx512_ok();
#else
	return 0;
#endif
}

/**
 * ok_force_scalar() - pin the scalar path (tests compare the paths).
 * @on: 1 for the scalar path, 0 for the automatic choice.
 */
void ok_force_scalar(int on)
{
	__atomic_store_n(&force_scalar, !!on, __ATOMIC_RELAXED);
}

/**
 * ok_force_avx2() - keep the integer path to its AVX2 tiles where the CPU
 * has AVX-512 too (tests compare the two).
 * @on: 1 for AVX2, 0 for the automatic choice.
 */
void ok_force_avx2(int on)
{
	__atomic_store_n(&force_avx2, !!on, __ATOMIC_RELAXED);
}

/**
 * ok_fused_rows() - Base plus Ortho for rows [@r0, @r1) of every token, on
 * the calling thread.
 *
 * Rows outside the range are not touched; @r1 beyond the Base is clamped.
 */
void ok_fused_rows(const struct ok_q8 *m, const struct ok_ortho *const *o,
		   unsigned int no, const float *x, float *y, uint32_t ntok,
		   uint32_t r0, uint32_t r1)
{
	if (!no) {
		ok_int8_rows(m, x, y, ntok, r0, r1);
		return;
	}
	if (!clamp_rows(m, ntok, r0, &r1))
		return;
#if OK_HAVE_X86
	if (ok_have_avx2() && okx_madd_ok(m)) {
		okx_madd_rows_direct(m, o, no, x, y, ntok, r0, r1);
		return;
	}
	if (ok_have_avx2()) {
		okx_fused_rows(m, o, no, x, y, ntok, r0, r1);
		return;
	}
#endif
	sc_rows_body(m, o, no, x, y, ntok, r0, r1);
}

/**
 * ok_int8_rows() - Base only for rows [@r0, @r1) of every token, on the
 * calling thread.
 */
void ok_int8_rows(const struct ok_q8 *m, const float *x, float *y,
		  uint32_t ntok, uint32_t r0, uint32_t r1)
{
	if (!clamp_rows(m, ntok, r0, &r1))
		return;
#if OK_HAVE_X86
	if (ok_have_avx2() && okx_madd_ok(m)) {
		okx_madd_rows_direct(m, NULL, 0, x, y, ntok, r0, r1);
		return;
	}
	if (ok_have_avx2()) {
		okx_int8_rows(m, x, y, ntok, r0, r1);
		return;
	}
#endif
	sc_rows_body(m, NULL, 0, x, y, ntok, r0, r1);
}
