// SPDX-License-Identifier: MIT
/*
 * The AVX-512 (F, BW, VL, VNNI) tiles of the integer path: the same INT8
 * weights times the same INT16 x (okx_xq_prep(), q8_madd_avx2.c) as the
 * AVX2 tiles, 32 columns a step: one sign extension of 32 weights and one
 * vpdpwssd per token, exact in INT32, then per group one FP32 multiply-
 * add per lane. That is about half the AVX2 tiles' instructions per
 * weight (on the 2-core Zen 5 VM one core sums 55 GB/s of weights from
 * cache against their 30), so a core outruns its share of the memory's
 * bandwidth and a GEMV streams its weights at the memory's speed.
 *
 * A tile is one row and up to four tokens: each thread then reads one
 * sequential stream of weights (rows are contiguous), which the hardware
 * prefetcher follows best; x, 8 KiB of INT16 for 4096 columns, stays in
 * L1. Columns past a group's end (a group of 16 or 48, the last group of
 * a row) are masked off: masked loads neither read nor fault there.
 *
 * Every (row, token) output is summed the same way whatever tile, block
 * or thread computes it: the INT32 sums are exact, the 16 FP32 lanes take
 * their groups' multiply-adds in column order, and the lanes are summed
 * into the output at the end of each block of columns (fused.h). The
 * results differ from the AVX2 tiles' only in that FP32 rounding (16
 * lanes against 8).
 */
#include "csr_avx2.h"
#include "fused.h"

#if OK_HAVE_X86
#include <immintrin.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#define OKZ __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni," \
				  "avx2,fma,f16c")))
#define OKZ_INLINE static inline OKZ __attribute__((always_inline))

/*
 * Weight bytes ahead of the current group that a row prefetches into L2
 * (rows are contiguous, so near a row's end this reaches into the next
 * one). Tuned on a 2-core Zen 5 VM: 3 KiB streamed 4096 x 4096 and
 * 4096 x 11008 GEMVs 4-12% faster than 1, 2 or 4 KiB, no prefetch at all
 * was 8-20% slower, and into L2 rather than L1 kept more of x in L1 for
 * the Ortho entries (2-5% less Ortho overhead, the same Base speed).
 */
#ifndef OKZ_PF
#define OKZ_PF 3072
#endif

static int okz_cpu_state = -1;

/**
 * okx_avx512_ok() - does this CPU (and OS) run the AVX-512 tiles?
 *
 * The compiler's CPU check counts AVX-512 features only where the OS
 * saves the ZMM state, so a yes here is safe to act on.
 *
 * Return: 1 when it has AVX-512 F, BW, VL and VNNI and the AVX2 path's
 * features, else 0.
 */
int okx_avx512_ok(void)
{
	int s = __atomic_load_n(&okz_cpu_state, __ATOMIC_RELAXED);

	if (s < 0) {
		__builtin_cpu_init();
		s = okx_cpu_ok() && __builtin_cpu_supports("avx512f") &&
		    __builtin_cpu_supports("avx512bw") &&
		    __builtin_cpu_supports("avx512vl") &&
		    __builtin_cpu_supports("avx512vnni");
		__atomic_store_n(&okz_cpu_state, s, __ATOMIC_RELAXED);
	}
	return s;
}

/* A marked group of row @q against token @x in FP32 (16 columns a step,
 * the last one masked). */
static OKZ __attribute__((noinline)) __m512
group_fp32(const int8_t *q, const float *x, uint32_t n)
{
	__m512 s = _mm512_setzero_ps(), w;
	__mmask16 k;
	uint32_t c;

	for (c = 0; c < n; c += 16) {
		k = n - c >= 16 ? (__mmask16)0xffff :
				  (__mmask16)((1u << (n - c)) - 1);
		w = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(
			_mm_maskz_loadu_epi8(k, q + c)));
		s = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(k, x + c), s);
	}
	return s;
}

/* Columns [c, c + 32) of a group: the weights at @w, token j's x at
 * @xp[j], the last @k of them where @k is not all ones. */
OKZ_INLINE void step32(const int8_t *w, const int16_t *const *xp, uint32_t c,
		       __m512i *is, const int NT, const int full, __mmask32 k)
{
	__m512i wv;
	int j;

	if (full)
		wv = _mm512_cvtepi8_epi16(_mm256_loadu_si256(
			(const __m256i *)(const void *)(w + c)));
	else
		wv = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(k, w + c));
#pragma GCC unroll 4
	for (j = 0; j < NT; j++)
		is[j] = _mm512_dpwssd_epi32(is[j], wv, full ?
			_mm512_loadu_si512(xp[j] + c) :
			_mm512_maskz_loadu_epi16(k, xp[j] + c));
}

/*
 * One group of a row, @n columns, weights at @w, against the NT tokens'
 * x at @xp[j]: exact INT32 sums into @is. G64: @n is 64.
 */
OKZ_INLINE void group_sums(const int8_t *w, const int16_t *const *xp,
			   uint32_t n, __m512i *is, const int NT,
			   const int G64)
{
	uint32_t c;
	int j;

#pragma GCC unroll 4
	for (j = 0; j < NT; j++)
		is[j] = _mm512_setzero_si512();
	if (G64) {
		step32(w, xp, 0, is, NT, 1, 0);
		step32(w, xp, 32, is, NT, 1, 0);
		return;
	}
	for (c = 0; c + 32 <= n; c += 32)
		step32(w, xp, c, is, NT, 1, 0);
	if (c < n)
		step32(w, xp, c, is, NT, 0, (__mmask32)((1u << (n - c)) - 1));
}

/* What every tile of one okx_tiles512() call shares. */
struct okz_rows {
	const struct okx_tile *in;
	uint32_t ng;		/* groups per row */
	uint32_t g0;		/* the block's first group */
	uint32_t nfull;		/* whole groups in the block */
	uint32_t rest;		/* columns of a short last group, or 0 */
};

/*
 * Fold group @gi's sums @is of tokens 0..NT-1 into @acc: one multiply-add
 * per lane by the product of the x and weight scales. With CHK, a token
 * whose group is marked (x scale NaN) sums that group in FP32 instead.
 */
OKZ_INLINE void fold(const struct okx_tile *in, const float *const *sxp,
		     const int8_t *w, uint32_t gi, uint32_t c, uint32_t n,
		     float sw, const __m512i *is, __m512 *acc, const int NT,
		     const int CHK)
{
	float s;
	int j;

#pragma GCC unroll 4
	for (j = 0; j < NT; j++) {
		s = sxp[j][gi];
		if (CHK && isnan(s)) {
			acc[j] = _mm512_fmadd_ps(
				group_fp32(w, in->xf[j] + c, n),
				_mm512_set1_ps(sw), acc[j]);
			continue;
		}
		acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is[j]),
					 _mm512_set1_ps(s * sw), acc[j]);
	}
}

/*
 * Row @r and tokens 0..NT-1 over the block. G64: the group is 64 wide.
 * CHK: some group of these tokens is marked (its x scale NaN) and is
 * summed in FP32 instead. ORT: add the row of the CSR delta in->fuse too,
 * its steps of eight entries (csr_avx2.h) spread evenly between the
 * groups, so that its reads of x overlap the weights' stream; its sum is
 * added to the output after the Base part, as a separate pass adds it.
 */
OKZ_INLINE void tile(const struct okz_rows *z, uint32_t r, const int NT,
		     const int G64, const int CHK, const int ORT)
{
	const struct okx_tile *in = z->in;
	const struct ok_q8 *m = in->m;
	const uint32_t g = G64 ? 64 : m->group, nfull = z->nfull;
	const int8_t *w = m->q + (size_t)r * m->cols + in->c0;
	const float *sw = m->scales + (size_t)r * z->ng + z->g0;
	const int16_t *xp[4];
	const float *sxp[4], *xf[4];
	float od[4], v;
	struct okx_csr oc;
	__m512i is[4];
	__m512 acc[4];
	__m256 os[4];
	uint32_t gi, stride = 1, cd = 1;
	int j;

#pragma GCC unroll 4
	for (j = 0; j < NT; j++) {
		xp[j] = in->xq[j];
		sxp[j] = in->sx[j];
		xf[j] = in->xf[j];
		acc[j] = _mm512_setzero_ps();
		if (ORT)
			os[j] = _mm256_setzero_ps();
	}
	if (ORT) {
		okx_csr_begin(&oc, in->fuse, r);
		stride = (uint32_t)(nfull / ((oc.k1 - oc.k) / 8 + 1));
		if (!stride)
			stride = 1;
		cd = stride;
	}
	for (gi = 0; gi < nfull; gi++) {
		_mm_prefetch((const char *)(w + OKZ_PF), _MM_HINT_T1);
		group_sums(w, xp, g, is, NT, G64);
		fold(in, sxp, w, gi, in->c0 + gi * g, g, sw[gi], is, acc, NT,
		     CHK);
		if (ORT && !--cd) {
			cd = stride;
			if (okx_csr_full(&oc))
				okx_csr_step(&oc, xf, os, NT);
		}
		w += g;
#pragma GCC unroll 4
		for (j = 0; j < NT; j++)
			xp[j] += g;
	}
	if (z->rest) {
		group_sums(w, xp, z->rest, is, NT, 0);
		fold(in, sxp, w, gi, in->c0 + gi * g, z->rest, sw[gi], is,
		     acc, NT, CHK);
	}
	if (ORT)
		okx_csr_end(&oc, xf, os, od, NT);
#pragma GCC unroll 4
	for (j = 0; j < NT; j++) {
		v = _mm512_reduce_add_ps(acc[j]);
		if (!in->first)
			v = in->y[j][r] + v;
		if (ORT)
			v = v + od[j];
		in->y[j][r] = v;
	}
}

/* Row @r of the CSR delta in->fuse added to tokens 0..NT-1 on its own. */
OKZ_INLINE void csr_alone(const struct okx_tile *in, uint32_t r,
			  const int NT)
{
	const float *xf[4];
	float od[4];
	struct okx_csr oc;
	__m256 os[4];
	int j;

#pragma GCC unroll 4
	for (j = 0; j < NT; j++) {
		xf[j] = in->xf[j];
		os[j] = _mm256_setzero_ps();
	}
	okx_csr_begin(&oc, in->fuse, r);
	okx_csr_end(&oc, xf, os, od, NT);
#pragma GCC unroll 4
	for (j = 0; j < NT; j++)
		in->y[j][r] += od[j];
}

/* Rows [r0, r1) of NT tokens: the fast tiles unless a group is marked. */
OKZ_INLINE void rows_nt(const struct okz_rows *z, uint32_t r0, uint32_t r1,
			const int NT)
{
	const int g64 = z->in->m->group == 64, ort = !!z->in->fuse;
	uint32_t r;

	if (z->in->chk) {
		for (r = r0; r < r1; r++)
			tile(z, r, NT, 0, 1, 0);
		for (r = r0; ort && r < r1; r++)
			csr_alone(z->in, r, NT);
	} else if (g64 && ort) {
		for (r = r0; r < r1; r++)
			tile(z, r, NT, 1, 0, 1);
	} else if (g64) {
		for (r = r0; r < r1; r++)
			tile(z, r, NT, 1, 0, 0);
	} else if (ort) {
		for (r = r0; r < r1; r++)
			tile(z, r, NT, 0, 0, 1);
	} else {
		for (r = r0; r < r1; r++)
			tile(z, r, NT, 0, 0, 0);
	}
}

/**
 * okx_tiles512() - rows [@r0, @r1) of the @nt (1..4) tokens of @in over
 * its block, on AVX-512; only when okx_avx512_ok().
 * @in: the block, its tokens' prepared x and their outputs.
 * @r0: first row.
 * @r1: end row.
 * @nt: tokens.
 */
OKZ void okx_tiles512(const struct okx_tile *in, uint32_t r0, uint32_t r1,
		      int nt)
{
	const struct ok_q8 *m = in->m;
	const uint32_t g = m->group;
	struct okz_rows z = {
		.in = in,
		.ng = (uint32_t)(((size_t)m->cols + g - 1) / g),
		.g0 = in->c0 / g,
		.nfull = (in->c1 - in->c0) / g,
		.rest = (in->c1 - in->c0) % g,
	};

	switch (nt) {
	case 1:
		rows_nt(&z, r0, r1, 1);
		break;
	case 2:
		rows_nt(&z, r0, r1, 2);
		break;
	case 3:
		rows_nt(&z, r0, r1, 3);
		break;
	default:
		rows_nt(&z, r0, r1, 4);
		break;
	}
}

#endif /* OK_HAVE_X86 */
