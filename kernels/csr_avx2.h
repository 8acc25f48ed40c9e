/* SPDX-License-Identifier: MIT */
/*
 * One row of a CSR Ortho delta on AVX2 (+F16C, FMA), in steps a caller can
 * interleave with other work: fused_avx2.c adds a row on its own, the
 * AVX-512 Base tiles (q8_madd_avx512.c) between the groups of the Base row
 * it belongs to, so the delta's scattered reads of x overlap the Base's
 * stream from memory. Both take the same steps in the same order, so a
 * row's sum does not depend on which of them computes it:
 *
 *	okx_csr_begin(&c, o, r);
 *	while (okx_csr_full(&c))	(any number of these)
 *		okx_csr_step(&c, xt, s, nt);
 *	okx_csr_end(&c, xt, s, out, nt);	(the rest, and the sums)
 *
 * Eight entries a step, x read with scalar loads (a gather instruction is
 * slower on several CPUs, AMD's in particular, and a row's entries are
 * few). The last 1..7 entries are the eight ending at the row's end, those
 * before it masked to zero in both factors; only where the row ends within
 * the first eight entries of the delta are they summed one by one.
 */
#ifndef ORTHO_KERNELS_CSR_AVX2_H
#define ORTHO_KERNELS_CSR_AVX2_H

#include "fused.h"

#if OK_HAVE_X86
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#define OKX_CSR_FN static inline __attribute__((target("avx2,fma,f16c"), \
						 always_inline))

/* Rows ahead whose entries okx_csr_begin() starts reading. */
#define OKX_CSR_PF_ROWS 4

/* okx_csr_last + n: the last n (1..7) of 8 lanes on. */
static const int32_t okx_csr_last[16] = {
	0, 0, 0, 0, 0, 0, 0, 0, -1, -1, -1, -1, -1, -1, -1, -1,
};

/* A CSR row being summed: entries [k, k1). */
struct okx_csr {
	const uint16_t *c16;
	const uint32_t *c32;
	const uint16_t *val;
	size_t k, k1;
	int wide;		/* u32 column indices */
};

OKX_CSR_FN float okx_hsum8(__m256 v)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v),
			      _mm256_extractf128_ps(v, 1));

	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
	return _mm_cvtss_f32(s);
}

/*
 * Row @r of @o (OK_CSR16 or OK_CSR32). It also starts reading the entries
 * of row @r + OKX_CSR_PF_ROWS: a row's entries are a few dozen bytes of
 * two arrays, too little for the hardware prefetcher to run ahead on.
 */
OKX_CSR_FN void okx_csr_begin(struct okx_csr *c, const struct ok_ortho *o,
			      uint32_t r)
{
	uint32_t ra = o->rows - r > OKX_CSR_PF_ROWS ? r + OKX_CSR_PF_ROWS :
						      o->rows;
	const char *ca, *va;

	c->c16 = o->col;
	c->c32 = o->col;
	c->val = o->val;
	c->k = o->rowptr[r];
	c->k1 = o->rowptr[r + 1];
	c->wide = o->encoding == OK_CSR32;
	ca = (const char *)o->col + (size_t)o->rowptr[ra] * (c->wide ? 4 : 2);
	va = (const char *)(c->val + o->rowptr[ra]);
	_mm_prefetch(ca, _MM_HINT_T0);
	_mm_prefetch(ca + 64, _MM_HINT_T0);
	_mm_prefetch(va, _MM_HINT_T0);
	_mm_prefetch(va + 64, _MM_HINT_T0);
}

/* Return: 1 when a whole step of eight entries is left. */
OKX_CSR_FN int okx_csr_full(const struct okx_csr *c)
{
	return c->k + 8 <= c->k1;
}

/* x at the columns @i[@o..@o + 4), @i of 16- or 32-bit indices. */
#define OKX_CSR_X4(x, i, o)						\
	_mm_insert_ps(_mm_insert_ps(_mm_insert_ps(			\
		_mm_load_ss((x) + (i)[(o)]),				\
		_mm_load_ss((x) + (i)[(o) + 1]), 0x10),			\
		_mm_load_ss((x) + (i)[(o) + 2]), 0x20),			\
		_mm_load_ss((x) + (i)[(o) + 3]), 0x30)

/* x at the columns of entries [k, k + 8). */
OKX_CSR_FN __m256 okx_csr_x8(const struct okx_csr *c, const float *x,
			     size_t k)
{
	__m128 a, b;

	if (c->wide) {
		a = OKX_CSR_X4(x, c->c32 + k, 0);
		b = OKX_CSR_X4(x, c->c32 + k, 4);
	} else {
		a = OKX_CSR_X4(x, c->c16 + k, 0);
		b = OKX_CSR_X4(x, c->c16 + k, 4);
	}
	return _mm256_insertf128_ps(_mm256_castps128_ps256(a), b, 1);
}

/* Eight entries (okx_csr_full()) into the sums @s of tokens @xt[0..nt). */
OKX_CSR_FN void okx_csr_step(struct okx_csr *c, const float *const *xt,
			     __m256 *s, const int nt)
{
	__m256 v = _mm256_cvtph_ps(
		_mm_loadu_si128((const __m128i *)(c->val + c->k)));
	int j;

#pragma GCC unroll 4
	for (j = 0; j < nt; j++)
		s[j] = _mm256_fmadd_ps(v, okx_csr_x8(c, xt[j], c->k), s[j]);
	c->k += 8;
}

/*
 * The rest of the row into @s, then each token's sum to @out[j]. The sums
 * @s start at zero (okx_csr_begin() does not touch them).
 */
OKX_CSR_FN void okx_csr_end(struct okx_csr *c, const float *const *xt,
			    __m256 *s, float *out, const int nt)
{
	float tail[4] = { 0 };
	__m256 v, mk;
	size_t col;
	int j;

	while (okx_csr_full(c))
		okx_csr_step(c, xt, s, nt);
	if (c->k < c->k1 && c->k1 >= 8) {
		mk = _mm256_castsi256_ps(_mm256_loadu_si256(
			(const __m256i *)(okx_csr_last + (c->k1 - c->k))));
		c->k = c->k1 - 8;
		v = _mm256_and_ps(mk, _mm256_cvtph_ps(_mm_loadu_si128(
			(const __m128i *)(c->val + c->k))));
#pragma GCC unroll 4
		for (j = 0; j < nt; j++)
			s[j] = _mm256_fmadd_ps(v, _mm256_and_ps(mk,
				okx_csr_x8(c, xt[j], c->k)), s[j]);
		c->k = c->k1;
	}
	for (; c->k < c->k1; c->k++) {	/* the delta's first entries */
		col = c->wide ? c->c32[c->k] : c->c16[c->k];
#pragma GCC unroll 4
		for (j = 0; j < nt; j++)
			tail[j] += _cvtsh_ss(c->val[c->k]) * xt[j][col];
	}
#pragma GCC unroll 4
	for (j = 0; j < nt; j++)
		out[j] = okx_hsum8(s[j]) + tail[j];
}

#endif /* OK_HAVE_X86 */
#endif
