// SPDX-License-Identifier: MIT
/*
 * The AVX2 (+FMA, F16C) path of the fused linear op. Every function here
 * carries its own target attribute, so the file builds with the project's
 * plain flags and runs only where okx_cpu_ok() said yes.
 *
 * Shape of the work: a tile is one row and up to four tokens (a GEMM reads
 * each weight row once per four tokens), walking the row group by group.
 * Within a group each token sums into several lane vectors (8-column chunk
 * k into sum k % na: four for a GEMV, two for a GEMM, to hide the FMA
 * latency within 16 registers); the group's vector sum is scaled once and
 * added to the row's accumulator, whose lanes are summed at the end. One
 * row at a time keeps a thread's reads one sequential stream, which the
 * hardware prefetcher follows best. Nothing depends on where a row sits in
 * a thread's block, so every output is the same whatever the thread split.
 *
 * The Ortho deltas of a row are added right after its tiles store it,
 * while those outputs are in L1: one pass over y.
 */
#include "fused.h"

#if OK_HAVE_X86
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "csr_avx2.h"
#include "kernels.h"

#define OKX __attribute__((target("avx2,fma,f16c")))
#define OKX_INLINE static inline OKX __attribute__((always_inline))

/*
 * A tile is one row and up to TILE_MAX tokens (a weight row read once per
 * four tokens); a GEMV keeps NA_MAX partial sums, a GEMM two per token, so
 * that the sums and accumulators fit the 16 vector registers.
 */
#define TILE_MAX 4
#define NA_MAX 4
#ifndef OKX_PF
#define OKX_PF 1024
#endif
#ifndef OKX_HINT
#define OKX_HINT _MM_HINT_T0
#endif

/* okx_mask_tab + 8 - n: the first n lanes on. */
static const int32_t okx_mask_tab[16] = {
	-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0,
};

static int okx_cpu_state = -1;

/**
 * okx_cpu_ok() - does this CPU run the AVX2 path?
 *
 * Return: 1 when it has AVX2, FMA and F16C, else 0.
 */
int okx_cpu_ok(void)
{
	int s = __atomic_load_n(&okx_cpu_state, __ATOMIC_RELAXED);

	if (s < 0) {
		__builtin_cpu_init();
		s = __builtin_cpu_supports("avx2") &&
		    __builtin_cpu_supports("fma") &&
		    __builtin_cpu_supports("f16c");
		__atomic_store_n(&okx_cpu_state, s, __ATOMIC_RELAXED);
	}
	return s;
}

OKX_INLINE __m256 q8_load8(const int8_t *p)
{
	__m128i b = _mm_loadl_epi64((const __m128i *)(const void *)p);

	return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
}

/*
 * The first @n (1..7) weights at @p, the other lanes zero. Byte by byte:
 * a memcpy() call here would make the compiler spill the sums of the hot
 * loop around it.
 */
OKX_INLINE __m256 q8_load_tail(const int8_t *p, uint32_t n)
{
	uint64_t v = 0;
	uint32_t i;

	for (i = 0; i < n; i++)
		v |= (uint64_t)(uint8_t)p[i] << (8 * i);
	return _mm256_cvtepi32_ps(
		_mm256_cvtepi8_epi32(_mm_cvtsi64_si128((int64_t)v)));
}

OKX_INLINE __m256i tail_mask(uint32_t n)
{
	return _mm256_loadu_si256((const __m256i *)(okx_mask_tab + 8 - n));
}

/*
 * One group of @n columns from @c0, for tokens [0, nt): 8-column chunk k
 * sums into a[j][k % na], a last partial chunk (masked, so lanes past it
 * read nothing) likewise. Several sums per token hide the FMA latency.
 */
OKX_INLINE void group_sum(const int8_t *q, const float *const *xt, size_t c0,
			  uint32_t n, __m256 a[TILE_MAX][NA_MAX],
			  const int nt, const int na)
{
	__m256 w;
	__m256i mk;
	uint32_t k, off;
	int j, u;

	for (off = 0; off < n; off += 64)
		_mm_prefetch((const char *)(q + c0 + off + OKX_PF), OKX_HINT);
	for (k = 0; k + 8 * na <= n; k += 8 * na) {
#pragma GCC unroll 4
		for (u = 0; u < na; u++) {
			w = q8_load8(q + c0 + k + 8 * u);
#pragma GCC unroll 4
			for (j = 0; j < nt; j++)
				a[j][u] = _mm256_fmadd_ps(w,
					_mm256_loadu_ps(xt[j] + c0 + k + 8 * u),
					a[j][u]);
		}
	}
	/* The rest: fewer than na chunks, the last maybe partial. */
#pragma GCC unroll 4
	for (u = 0; u < na && k < n; u++, k += 8) {
		if (k + 8 <= n) {
			w = q8_load8(q + c0 + k);
#pragma GCC unroll 4
			for (j = 0; j < nt; j++)
				a[j][u] = _mm256_fmadd_ps(w,
					_mm256_loadu_ps(xt[j] + c0 + k),
					a[j][u]);
			continue;
		}
		mk = tail_mask(n - k);
		w = q8_load_tail(q + c0 + k, n - k);
#pragma GCC unroll 4
		for (j = 0; j < nt; j++)
			a[j][u] = _mm256_fmadd_ps(w,
				_mm256_maskload_ps(xt[j] + c0 + k, mk),
				a[j][u]);
	}
}

/*
 * Base part of row @r for tokens [t0, t0 + nt), stored to y, with @na
 * partial sums per token (a token's result depends on @na, so every tile
 * of one call uses the same).
 */
OKX_INLINE void base_tile(const struct ok_q8 *m, const float *x, float *y,
			  uint32_t r, uint32_t t0, const int nt, const int na)
{
	const size_t cols = m->cols, g = m->group;
	const uint32_t ng = (uint32_t)((cols + g - 1) / g);
	const int8_t *q = m->q + (size_t)r * cols;
	const float *sc = m->scales + (size_t)r * ng, *xt[TILE_MAX];
	__m256 acc[TILE_MAX], a[TILE_MAX][NA_MAX], s, gs;
	size_t c0 = 0;
	uint32_t gi;
	int j, u;

#pragma GCC unroll 4
	for (j = 0; j < nt; j++) {
		xt[j] = x + (size_t)(t0 + j) * cols;
		acc[j] = _mm256_setzero_ps();
	}
	for (gi = 0; gi < ng; gi++, c0 += g) {
#pragma GCC unroll 4
		for (j = 0; j < nt; j++) {
#pragma GCC unroll 4
			for (u = 0; u < na; u++)
				a[j][u] = _mm256_setzero_ps();
		}
		group_sum(q, xt, c0, (uint32_t)(cols - c0 < g ? cols - c0 : g),
			  a, nt, na);
		s = _mm256_broadcast_ss(sc + gi);
#pragma GCC unroll 4
		for (j = 0; j < nt; j++) {
			gs = _mm256_add_ps(a[j][0], a[j][1]);
			if (na == 4)
				gs = _mm256_add_ps(gs, _mm256_add_ps(a[j][2],
								     a[j][3]));
			acc[j] = _mm256_fmadd_ps(gs, s, acc[j]);
		}
	}
#pragma GCC unroll 4
	for (j = 0; j < nt; j++)
		y[(size_t)(t0 + j) * m->rows + r] = okx_hsum8(acc[j]);
}

/* CSR row @r of @o added to tokens [t0, t0 + nt) (csr_avx2.h). */
OKX_INLINE void csr_row(const struct ok_q8 *m, const struct ok_ortho *o,
			const float *x, float *y, uint32_t r, uint32_t t0,
			const int nt)
{
	const float *xt[TILE_MAX];
	float out[TILE_MAX];
	__m256 s[TILE_MAX];
	struct okx_csr c;
	int j;

#pragma GCC unroll 4
	for (j = 0; j < nt; j++) {
		xt[j] = x + (size_t)(t0 + j) * m->cols;
		s[j] = _mm256_setzero_ps();
	}
	okx_csr_begin(&c, o, r);
	okx_csr_end(&c, xt, s, out, nt);
#pragma GCC unroll 4
	for (j = 0; j < nt; j++)
		y[(size_t)(t0 + j) * m->rows + r] += out[j];
}

/* Dense FP16 row @r of @o added to tokens [t0, t0 + nt). */
OKX_INLINE void dense_row(const struct ok_q8 *m, const struct ok_ortho *o,
			  const float *x, float *y, uint32_t r, uint32_t t0,
			  const int nt)
{
	const size_t cols = m->cols;
	const uint16_t *val = o->val + (size_t)r * cols;
	const float *xt[TILE_MAX];
	__m256 s[TILE_MAX], v;
	float tail[TILE_MAX];
	size_t k;
	int j;

#pragma GCC unroll 4
	for (j = 0; j < nt; j++) {
		xt[j] = x + (size_t)(t0 + j) * cols;
		s[j] = _mm256_setzero_ps();
		tail[j] = 0.0f;
	}
	for (k = 0; k + 8 <= cols; k += 8) {
		v = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(val + k)));
#pragma GCC unroll 4
		for (j = 0; j < nt; j++)
			s[j] = _mm256_fmadd_ps(v, _mm256_loadu_ps(xt[j] + k),
					       s[j]);
	}
	for (; k < cols; k++) {
#pragma GCC unroll 4
		for (j = 0; j < nt; j++)
			tail[j] += _cvtsh_ss(val[k]) * xt[j][k];
	}
#pragma GCC unroll 4
	for (j = 0; j < nt; j++)
		y[(size_t)(t0 + j) * m->rows + r] += okx_hsum8(s[j]) + tail[j];
}

OKX_INLINE void ortho_row_nt(const struct ok_q8 *m, const struct ok_ortho *o,
			     const float *x, float *y, uint32_t r, uint32_t t0,
			     const int nt)
{
	switch (o->encoding) {
	case OK_CSR16:
	case OK_CSR32:
		csr_row(m, o, x, y, r, t0, nt);
		break;
	case OK_DENSE16:
		dense_row(m, o, x, y, r, t0, nt);
		break;
	}
}

/**
 * okx_ortho_rows() - add every delta of @o to rows [@r, @r1) of each token.
 * @m: the Base (the layout of x and y).
 * @o: the deltas.
 * @no: their count.
 * @x: x.
 * @y: y, holding the Base part of those rows.
 * @ntok: tokens.
 * @r: first row.
 * @r1: end row.
 */
OKX void okx_ortho_rows(const struct ok_q8 *m, const struct ok_ortho *const *o,
			unsigned int no, const float *x, float *y, uint32_t ntok,
			uint32_t r, uint32_t r1)
{
	unsigned int i;
	uint32_t t0;

	for (; r < r1; r++) {
		for (i = 0; i < no; i++) {
			for (t0 = 0; t0 + 4 <= ntok; t0 += 4)
				ortho_row_nt(m, o[i], x, y, r, t0, 4);
			switch (ntok - t0) {
			case 3:
				ortho_row_nt(m, o[i], x, y, r, t0, 3);
				break;
			case 2:
				ortho_row_nt(m, o[i], x, y, r, t0, 2);
				break;
			case 1:
				ortho_row_nt(m, o[i], x, y, r, t0, 1);
				break;
			}
		}
	}
}

/* Row @r, every token: whole 4-token tiles, then what is left over. */
OKX_INLINE void gemm_row(const struct ok_q8 *m, const float *x, float *y,
			 uint32_t ntok, uint32_t r)
{
	uint32_t t0;

	for (t0 = 0; t0 + 4 <= ntok; t0 += 4)
		base_tile(m, x, y, r, t0, 4, 2);
	switch (ntok - t0) {
	case 3:
		base_tile(m, x, y, r, t0, 3, 2);
		break;
	case 2:
		base_tile(m, x, y, r, t0, 2, 2);
		break;
	case 1:
		base_tile(m, x, y, r, t0, 1, 2);
		break;
	}
}

/*
 * The one body behind both entry points; with @no a constant 0 the Ortho
 * branch folds away, and with @no a variable it sits outside the loops
 * over the weights, taken once per row while the row's outputs are in L1.
 */
OKX_INLINE void rows_body(const struct ok_q8 *m,
			  const struct ok_ortho *const *o, unsigned int no,
			  const float *x, float *y, uint32_t ntok, uint32_t r0,
			  uint32_t r1)
{
	uint32_t r;

	for (r = r0; r < r1; r++) {
		if (ntok == 1)
			base_tile(m, x, y, r, 0, 1, 4);
		else
			gemm_row(m, x, y, ntok, r);
		if (no)
			okx_ortho_rows(m, o, no, x, y, ntok, r, r + 1);
	}
}

/**
 * okx_fused_rows() - ok_fused_rows() on AVX2; only when okx_cpu_ok().
 */
OKX void okx_fused_rows(const struct ok_q8 *m,
			const struct ok_ortho *const *o, unsigned int no,
			const float *x, float *y, uint32_t ntok, uint32_t r0,
			uint32_t r1)
{
	rows_body(m, o, no, x, y, ntok, r0, r1);
}

/**
 * okx_int8_rows() - ok_int8_rows() on AVX2; only when okx_cpu_ok().
 */
OKX void okx_int8_rows(const struct ok_q8 *m, const float *x, float *y,
		       uint32_t ntok, uint32_t r0, uint32_t r1)
{
	rows_body(m, NULL, 0, x, y, ntok, r0, r1);
}

#endif /* OK_HAVE_X86 */
