// SPDX-License-Identifier: MIT
/*
 * The integer path of the AVX2 Base kernel: INT8 weights times x rounded
 * to INT16, summed exactly in INT32 with vpmaddwd, one FP32 multiply-add
 * per group. It takes a third of the instructions per weight of the FP32
 * path (sign extension of 16 weights, one vpmaddwd, one add, against a
 * widening, a conversion and an FMA per 8), which is what lets a GEMV run
 * at the memory's speed instead of the core's. fused.h states its error.
 *
 * x is prepared once per call (okx_xq_prep(): per token and group, the
 * group's absmax sets the scale), either for the whole call by the pool or
 * one block of columns at a time on the stack (okx_madd_rows_direct()).
 * A group whose x holds NaN or Inf, or whose absmax is outside
 * [OKX_XQ_MIN, OKX_XQ_MAX], is marked (scale NaN) and summed in FP32, so
 * NaN and Inf propagate as IEEE says and nothing overflows.
 *
 * Every output is computed the same way whatever the tile it sits in: the
 * INT32 sums are exact, and each of the 8 lanes takes its groups' FP32
 * multiply-adds in column order; at every block of OKX_XBLK columns the
 * lanes are summed into the output. So results never depend on threads,
 * tiles or on who prepared x.
 */
#include "fused.h"

#if OK_HAVE_X86
#include <immintrin.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "csr_avx2.h"

#define OKX __attribute__((target("avx2,fma,f16c")))
#define OKX_INLINE static inline OKX __attribute__((always_inline))

/* Weight bytes ahead of the current group that each row prefetches. */
#ifndef OKX_MADD_PF
#define OKX_MADD_PF 768
#endif

static const int32_t mask_tab[16] = {
	-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0,
};

/**
 * okx_madd_ok() - can the integer path compute @m?
 * @m: the Base.
 *
 * Groups must hold whole 16-column chunks, and few enough of them that an
 * INT32 lane cannot overflow (group / 8 products of at most 2^22 each).
 *
 * Return: 1 when it can (and the CPU has AVX2), else 0.
 */
int okx_madd_ok(const struct ok_q8 *m)
{
	return okx_cpu_ok() && m->group && !(m->group % 16) &&
	       m->group <= OKX_MADD_GROUP_MAX;
}

/**
 * okx_xblk() - columns per block: whole groups, at most OKX_XBLK.
 * @m: the Base (okx_madd_ok()).
 *
 * Return: the block width.
 */
uint32_t okx_xblk(const struct ok_q8 *m)
{
	return OKX_XBLK / m->group * m->group;
}

OKX_INLINE __m256i mask8(uint32_t n)
{
	return _mm256_loadu_si256((const __m256i *)(mask_tab + 8 - n));
}

/* The 8 floats at @p, only the first @n (1..8) read. */
OKX_INLINE __m256 load8_part(const float *p, uint32_t n)
{
	if (n >= 8)
		return _mm256_loadu_ps(p);
	return _mm256_maskload_ps(p, mask8(n));
}

/*
 * One group of one token: absmax sets the scale; q = round(x * 32767 / max)
 * into @q (n values, zeros up to the next multiple of 16). Return: the
 * scale (max / 32767), NaN for a group the kernel must sum in FP32.
 */
static OKX float prep_group(const float *x, uint32_t n, int16_t *q)
{
	const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
	const __m256 inf = _mm256_set1_ps(INFINITY);
	__m256 mx = _mm256_setzero_ps(), v, bad = _mm256_setzero_ps(), inv;
	__m256i a, b;
	uint32_t k, npad = (n + 15) & ~15u;
	float m;

	for (k = 0; k < n; k += 8) {
		v = _mm256_and_ps(load8_part(x + k, n - k), absm);
		bad = _mm256_or_ps(bad, _mm256_cmp_ps(v, inf, _CMP_NLT_UQ));
		mx = _mm256_max_ps(mx, v);
	}
	mx = _mm256_max_ps(mx, _mm256_permute2f128_ps(mx, mx, 1));
	mx = _mm256_max_ps(mx, _mm256_shuffle_ps(mx, mx, 0x4e));
	mx = _mm256_max_ps(mx, _mm256_shuffle_ps(mx, mx, 0xb1));
	m = _mm256_cvtss_f32(mx);
	if (_mm256_movemask_ps(bad) || (m != 0 && (m < OKX_XQ_MIN ||
						   m > OKX_XQ_MAX))) {
		memset(q, 0, npad * sizeof(*q));
		return NAN;
	}
	inv = _mm256_set1_ps(m != 0 ? 32767.0f / m : 0.0f);
	for (k = 0; k < npad; k += 16) {
		a = _mm256_cvtps_epi32(_mm256_mul_ps(
			k < n ? load8_part(x + k, n - k) : _mm256_setzero_ps(),
			inv));
		b = _mm256_cvtps_epi32(_mm256_mul_ps(
			k + 8 < n ? load8_part(x + k + 8, n - k - 8) :
				    _mm256_setzero_ps(), inv));
		/* packs works within 128-bit halves: put them back in order */
		a = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xd8);
		_mm256_storeu_si256((__m256i *)(q + k), a);
	}
	return m / 32767.0f;
}

/**
 * okx_xq_prep() - round columns [@c0, @c1) of one token's x for the
 * integer path.
 * @m: the Base (okx_madd_ok()); @c0 is a multiple of its group.
 * @x: the token's x (cols floats).
 * @c0: first column.
 * @c1: end column (a group boundary, or cols).
 * @q: receives c1 - c0 values, zero-padded to a multiple of 16.
 * @sx: receives one scale per group (NaN: sum that group in FP32).
 *
 * Return: 1 when some group is marked NaN, else 0.
 */
int okx_xq_prep(const struct ok_q8 *m, const float *x, uint32_t c0,
		uint32_t c1, int16_t *q, float *sx)
{
	uint32_t c, n;
	int marked = 0;

	for (c = c0; c < c1; c += m->group) {
		n = c1 - c < m->group ? c1 - c : m->group;
		*sx = prep_group(x + c, n, q + (c - c0));
		marked |= isnan(*sx);
		sx++;
	}
	return marked;
}

/* 16 weights at @p; only @n are needed (x is zero past them), but the 16
 * bytes may run past the matrix (@safe 0): then copy those @n. */
OKX_INLINE __m256i w16_tail(const int8_t *p, uint32_t n, int safe)
{
	int8_t b[16] = { 0 };

	if (safe)
		return _mm256_cvtepi8_epi16(
			_mm_loadu_si128((const __m128i *)(const void *)p));
	memcpy(b, p, n);
	return _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b));
}

OKX_INLINE __m256i w16(const int8_t *p)
{
	return _mm256_cvtepi8_epi16(
		_mm_loadu_si128((const __m128i *)(const void *)p));
}

/* A marked group of row @q against token @x, in FP32 lanes (8 columns a
 * lane step, the last step masked). */
static OKX __attribute__((noinline)) __m256
group_fp32(const int8_t *q, const float *x, uint32_t n)
{
	__m256 s = _mm256_setzero_ps(), w;
	uint64_t v;
	uint32_t k, i;

	for (k = 0; k < n; k += 8) {
		if (n - k >= 8) {
			w = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
				_mm_loadl_epi64((const __m128i *)(const void *)
						(q + k))));
		} else {
			for (v = 0, i = 0; i < n - k; i++)
				v |= (uint64_t)(uint8_t)q[k + i] << (8 * i);
			w = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
				_mm_cvtsi64_si128((int64_t)v)));
		}
		s = _mm256_fmadd_ps(w, load8_part(x + k, n - k), s);
	}
	return s;
}

/*
 * Rows [r, r + RT) and tokens 0..NT-1 of @in over its block. RT * NT <= 4
 * keeps the INT32 sums and FP32 lanes in registers.
 */
OKX_INLINE void tile(const struct okx_tile *in, uint32_t r, const int RT,
		     const int NT)
{
	const struct ok_q8 *m = in->m;
	const size_t cols = m->cols;
	const uint32_t g = m->group, ng = (uint32_t)((cols + g - 1) / g);
	const uint32_t g0 = in->c0 / g;
	const int8_t *q[4], *qend = m->q + (size_t)m->rows * cols;
	const float *sw[4];
	__m256i is[4][4], xv[4], w;
	__m256 acc[4][4], f;
	uint32_t c, gc, gi, n;
	int i, j;

#pragma GCC unroll 4
	for (i = 0; i < RT; i++) {
		q[i] = m->q + (size_t)(r + i) * cols;
		sw[i] = m->scales + (size_t)(r + i) * ng;
#pragma GCC unroll 4
		for (j = 0; j < NT; j++)
			acc[i][j] = _mm256_setzero_ps();
	}
	for (gc = in->c0, gi = g0; gc < in->c1; gc += g, gi++) {
		n = in->c1 - gc < g ? in->c1 - gc : g;
#pragma GCC unroll 4
		for (i = 0; i < RT; i++) {
			_mm_prefetch((const char *)(q[i] + gc + OKX_MADD_PF),
				     _MM_HINT_T0);
#pragma GCC unroll 4
			for (j = 0; j < NT; j++)
				is[i][j] = _mm256_setzero_si256();
		}
		for (c = gc; c < gc + n; c += 16) {
#pragma GCC unroll 4
			for (j = 0; j < NT; j++)
				xv[j] = _mm256_loadu_si256((const __m256i *)
							   (in->xq[j] + c -
							    in->c0));
#pragma GCC unroll 4
			for (i = 0; i < RT; i++) {
				if (c + 16 <= cols)
					w = w16(q[i] + c);
				else
					w = w16_tail(q[i] + c, cols - c,
						     qend - (q[i] + c) >= 16);
#pragma GCC unroll 4
				for (j = 0; j < NT; j++)
					is[i][j] = _mm256_add_epi32(is[i][j],
						_mm256_madd_epi16(w, xv[j]));
			}
		}
#pragma GCC unroll 4
		for (j = 0; j < NT; j++) {
			float s = in->sx[j][gi - g0];

			if (in->chk && isnan(s)) {
#pragma GCC unroll 4
				for (i = 0; i < RT; i++)
					acc[i][j] = _mm256_fmadd_ps(
						group_fp32(q[i] + gc,
							   in->xf[j] + gc, n),
						_mm256_set1_ps(sw[i][gi]),
						acc[i][j]);
				continue;
			}
			f = _mm256_set1_ps(s);
#pragma GCC unroll 4
			for (i = 0; i < RT; i++)
				acc[i][j] = _mm256_fmadd_ps(
					_mm256_cvtepi32_ps(is[i][j]),
					_mm256_mul_ps(f, _mm256_broadcast_ss(
							      sw[i] + gi)),
					acc[i][j]);
		}
	}
#pragma GCC unroll 4
	for (i = 0; i < RT; i++) {
#pragma GCC unroll 4
		for (j = 0; j < NT; j++) {
			float h = okx_hsum8(acc[i][j]);

			if (in->first)
				in->y[j][r + i] = h;
			else
				in->y[j][r + i] += h;
		}
	}
}

/* Rows [r0, r1) of the tokens in @in (@nt of them, 1..4) over its block. */
static OKX void tiles(const struct okx_tile *in, uint32_t r0, uint32_t r1,
		      int nt)
{
	uint32_t r = r0;

	if (in->zmm) {
		okx_tiles512(in, r0, r1, nt);
		return;
	}
	switch (nt) {
	case 1:
		for (; r + 4 <= r1; r += 4)
			tile(in, r, 4, 1);
		for (; r < r1; r++)
			tile(in, r, 1, 1);
		break;
	case 2:
		for (; r + 2 <= r1; r += 2)
			tile(in, r, 2, 2);
		for (; r < r1; r++)
			tile(in, r, 1, 2);
		break;
	case 3:
		for (; r < r1; r++)
			tile(in, r, 1, 3);
		break;
	default:
		for (; r < r1; r++)
			tile(in, r, 1, 4);
		break;
	}
}

/**
 * okx_xq_bytes() - room okx_xq_prep_all() needs for @ntok tokens of @m.
 * @m: the Base (okx_madd_ok()).
 * @ntok: tokens.
 *
 * Return: bytes, 0 when that would overflow.
 */
size_t okx_xq_bytes(const struct ok_q8 *m, uint32_t ntok)
{
	uint64_t per = okx_xq_stride(m) * 2 + 4 * okx_xq_groups(m) + 4;

	if (per * ntok > SIZE_MAX / 2)
		return 0;
	return (size_t)(per * ntok);
}

/* Token @t's arrays in a whole-call buffer of @ntok tokens. */
static void xq_at(const struct ok_q8 *m, void *buf, uint32_t ntok, uint32_t t,
		  int16_t **q, float **sx, int32_t **marked)
{
	uint8_t *b = buf;
	size_t qs = okx_xq_stride(m), ng = okx_xq_groups(m);

	*q = (int16_t *)(void *)b + qs * t;
	*sx = (float *)(void *)(b + 2 * qs * ntok) + ng * t;
	*marked = (int32_t *)(void *)(b + (2 * qs + 4 * ng) * ntok) + t;
}

/**
 * okx_xq_prep_all() - prepare tokens [@t0, @t1) of a call into @buf.
 * @m: the Base (okx_madd_ok()).
 * @x: the call's x (ntok tokens of cols floats).
 * @ntok: tokens in the call (the layout of @buf).
 * @t0: first token to prepare.
 * @t1: end token.
 * @buf: okx_xq_bytes(@m, @ntok) bytes, 4-byte aligned.
 */
void okx_xq_prep_all(const struct ok_q8 *m, const float *x, uint32_t ntok,
		     uint32_t t0, uint32_t t1, void *buf)
{
	int32_t *marked;
	int16_t *q;
	float *sx;

	for (; t0 < t1; t0++) {
		xq_at(m, buf, ntok, t0, &q, &sx, &marked);
		*marked = okx_xq_prep(m, x + (size_t)t0 * m->cols, 0, m->cols,
				      q, sx);
	}
}

/*
 * The delta the AVX-512 tiles add themselves, between the groups of each
 * row's last block (so its reads of x overlap the Base's stream): the
 * first one, when it is CSR. Return: it, or NULL.
 */
static const struct ok_ortho *fused_delta(const struct ok_ortho *const *o,
					  unsigned int no, int zmm)
{
	if (!zmm || !no)
		return NULL;
	return o[0]->encoding == OK_CSR16 || o[0]->encoding == OK_CSR32 ?
	       o[0] : NULL;
}

/* Tokens [t0, t0 + nt) of a prepared call, block [c0, c1). */
static void tile_in_call(struct okx_tile *in, const struct ok_q8 *m,
			 const float *x, void *buf, float *y, uint32_t ntok,
			 uint32_t t0, int nt, uint32_t c0, uint32_t c1)
{
	int32_t *marked;
	int16_t *q;
	float *sx;
	int j;

	in->m = m;
	in->c0 = c0;
	in->c1 = c1;
	in->first = c0 == 0;
	in->chk = 0;
	for (j = 0; j < nt; j++) {
		xq_at(m, buf, ntok, t0 + j, &q, &sx, &marked);
		in->xq[j] = q + c0;
		in->sx[j] = sx + c0 / m->group;
		in->xf[j] = x + (size_t)(t0 + j) * m->cols;
		in->y[j] = y + (size_t)(t0 + j) * m->rows;
		in->chk |= *marked;
	}
}

/**
 * okx_madd_rows() - rows [@r0, @r1) of every token on the integer path,
 * with x already prepared for the whole call.
 * @m: the Base (okx_madd_ok()).
 * @o: the Ortho deltas (@no of them, may be 0).
 * @no: their count.
 * @x: the call's x.
 * @buf: the call's prepared x (okx_xq_prep_all() for every token).
 * @y: the call's y.
 * @ntok: tokens.
 * @r0: first row.
 * @r1: end row (within the Base).
 *
 * The AVX-512 tiles add the first delta themselves where it is CSR
 * (fused_delta()); the other deltas are added in order after each step of
 * rows' last block, while those outputs are in L1. The order of the
 * additions is the same either way: Base, then each delta in turn.
 */
void okx_madd_rows(const struct ok_q8 *m, const struct ok_ortho *const *o,
		   unsigned int no, const float *x, void *buf, float *y,
		   uint32_t ntok, uint32_t r0, uint32_t r1)
{
	const uint32_t blk = okx_xblk(m);
	const uint32_t step = ntok == 1 ? OKX_ROW_STEP : 1;
	const int zmm = ok_have_avx512();
	const struct ok_ortho *fd = fused_delta(o, no, zmm);
	struct okx_tile in = { .zmm = zmm };
	uint32_t r, re, c0, c1, t;
	int nt;

	for (r = r0; r < r1; r = re) {
		re = r1 - r < step ? r1 : r + step;
		for (c0 = 0; c0 < m->cols; c0 = c1) {
			c1 = m->cols - c0 < blk ? m->cols : c0 + blk;
			in.fuse = c1 == m->cols ? fd : NULL;
			for (t = 0; t < ntok; t += (uint32_t)nt) {
				nt = ntok - t < 4 ? (int)(ntok - t) : 4;
				tile_in_call(&in, m, x, buf, y, ntok, t, nt,
					     c0, c1);
				tiles(&in, r, re, nt);
			}
		}
		if (no > !!fd)
			okx_ortho_rows(m, o + !!fd, no - !!fd, x, y, ntok, r,
				       re);
	}
}

/**
 * okx_madd_rows_direct() - okx_madd_rows() preparing x itself, a token and
 * a block at a time on the stack (no allocation; the same results).
 * @m: the Base (okx_madd_ok()).
 * @o: the Ortho deltas.
 * @no: their count.
 * @x: x.
 * @y: y.
 * @ntok: tokens.
 * @r0: first row.
 * @r1: end row (within the Base).
 */
void okx_madd_rows_direct(const struct ok_q8 *m,
			  const struct ok_ortho *const *o, unsigned int no,
			  const float *x, float *y, uint32_t ntok, uint32_t r0,
			  uint32_t r1)
{
	int16_t q[OKX_XBLK + 16] __attribute__((aligned(32)));
	float sx[OKX_XBLK / 16];
	const uint32_t blk = okx_xblk(m);
	const int zmm = ok_have_avx512();
	const struct ok_ortho *fd = fused_delta(o, no, zmm);
	struct okx_tile in = { .m = m, .zmm = zmm };
	uint32_t t, c0, c1;

	in.xq[0] = q;
	in.sx[0] = sx;
	for (t = 0; t < ntok; t++) {
		in.xf[0] = x + (size_t)t * m->cols;
		in.y[0] = y + (size_t)t * m->rows;
		for (c0 = 0; c0 < m->cols; c0 = c1) {
			c1 = m->cols - c0 < blk ? m->cols : c0 + blk;
			in.chk = okx_xq_prep(m, in.xf[0], c0, c1, q, sx);
			in.c0 = c0;
			in.c1 = c1;
			in.first = c0 == 0;
			in.fuse = c1 == m->cols ? fd : NULL;
			tiles(&in, r0, r1, 1);
		}
		if (no > !!fd)
			okx_ortho_rows(m, o + !!fd, no - !!fd, in.xf[0],
				       in.y[0], 1, r0, r1);
	}
}

#endif /* OK_HAVE_X86 */
