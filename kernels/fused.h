/* SPDX-License-Identifier: MIT */
/*
 * Private to kernels/: the AVX2 and AVX-512 twins of the scalar row
 * kernels, and the row granularity the pool splits work at.
 *
 * Three paths compute the Base part. The scalar one (fused_cpu.c) and the
 * AVX2 FP32 one (fused_avx2.c) multiply in FP32. The integer one, taken
 * whenever the CPU has AVX2 and the group is a multiple of 16 and at most
 * OKX_MADD_GROUP_MAX, rounds x to INT16 per token and group:
 * sx = max|x| over the group / 32767, xq = round(x / sx), so each x is off
 * by at most sx / 2, and sums q * xq exactly in INT32, with vpmaddwd
 * (q8_madd_avx2.c) or, where the CPU has AVX-512 VNNI, vpdpwssd
 * (q8_madd_avx512.c). Its error against the exact sum is therefore at most
 *
 *	2^-16 * sum over groups g of (max over g of |x|) * sum over g of |w|
 *
 * (w = the dequantized weights), plus the FP32 rounding of one multiply-
 * add per group and lane (about 2^-24 * sum |w x| per group). That is
 * 1/256 of the error the INT8 weights themselves carry, measured the same
 * way. Groups whose x holds NaN or Inf, or an absmax outside
 * [OKX_XQ_MIN, OKX_XQ_MAX], are summed in FP32 instead, so NaN and Inf
 * come out as IEEE arithmetic gives them. The Ortho deltas always use x
 * in FP32; a CSR delta's row is summed eight entries at a time in one
 * order (csr_avx2.h), whether the AVX-512 tiles add it between the groups
 * of its Base row or it is added on its own after them.
 *
 * Every path computes a row's outputs the same way wherever the row sits
 * in a thread's block, so a result never depends on the number of threads.
 * The paths sum in different orders and agree only to rounding (the AVX2
 * and AVX-512 tiles differ only in FP32 lanes, 8 against 16), and the FP32
 * AVX2 path sums a one-token call in a different order than a token of a
 * GEMM; the integer path does not.
 */
#ifndef ORTHO_KERNELS_FUSED_H
#define ORTHO_KERNELS_FUSED_H

#include <stddef.h>
#include <stdint.h>

#include "kernels.h"

/* The AVX2 path exists only where the compiler targets x86. */
#if defined(__x86_64__) || defined(__i386__)
#define OK_HAVE_X86 1
#else
#define OK_HAVE_X86 0
#endif

/* Threads take rows in blocks of this many: whole cache lines of y. */
#define OK_ROW_ALIGN 16

#if OK_HAVE_X86
/**
 * okx_cpu_ok() - does this CPU run the AVX2 path (AVX2, FMA and F16C)?
 *
 * Return: 1 when it does, 0 otherwise.
 */
int okx_cpu_ok(void);

/**
 * okx_fused_rows() - ok_fused_rows() on AVX2 in FP32; only when okx_cpu_ok().
 */
void okx_fused_rows(const struct ok_q8 *m, const struct ok_ortho *const *o,
		    unsigned int no, const float *x, float *y, uint32_t ntok,
		    uint32_t r0, uint32_t r1);

/**
 * okx_int8_rows() - ok_int8_rows() on AVX2 in FP32; only when okx_cpu_ok().
 */
void okx_int8_rows(const struct ok_q8 *m, const float *x, float *y,
		   uint32_t ntok, uint32_t r0, uint32_t r1);

/**
 * okx_ortho_rows() - add every delta of @o to rows [@r, @r1) of each token.
 */
void okx_ortho_rows(const struct ok_q8 *m, const struct ok_ortho *const *o,
		    unsigned int no, const float *x, float *y, uint32_t ntok,
		    uint32_t r, uint32_t r1);

/* The integer path (q8_madd_avx2.c; its AVX-512 tiles q8_madd_avx512.c). */

/* Rows of a one-token call between additions of the unfused deltas. */
#define OKX_ROW_STEP 64
/* Columns the lanes sum over before they are added into the output. */
#define OKX_XBLK 8192
/* Largest group the INT32 sums take without overflow (with margin). */
#define OKX_MADD_GROUP_MAX 1024
/* A group of x with its absmax outside this range is summed in FP32. */
#define OKX_XQ_MIN 0x1p-60f
#define OKX_XQ_MAX 0x1p60f

/* INT16 values per token of a prepared call: cols, padded to 16. */
static inline size_t okx_xq_stride(const struct ok_q8 *m)
{
	return ((size_t)m->cols + 15) & ~(size_t)15;
}

static inline size_t okx_xq_groups(const struct ok_q8 *m)
{
	return ((size_t)m->cols + m->group - 1) / m->group;
}

/* Where a tile finds its tokens' prepared x and its rows and outputs. */
struct okx_tile {
	const struct ok_q8 *m;
	const int16_t *xq[4];	/* column c at xq[j][c - c0] */
	const float *sx[4];	/* group g at sx[j][g - g0] */
	const float *xf[4];	/* FP32 x, column c at xf[j][c] */
	float *y[4];		/* row r at y[j][r] */
	uint32_t c0, c1;	/* the block's columns */
	int chk;		/* some group of these tokens is marked */
	int first;		/* the block starts the row: store, not add */
	int zmm;		/* the AVX-512 tiles (okx_tiles512()) */
	const struct ok_ortho *fuse;	/* CSR delta the zmm tiles add */
};

int okx_madd_ok(const struct ok_q8 *m);
/* The AVX-512 tiles (q8_madd_avx512.c). */
int okx_avx512_ok(void);
void okx_tiles512(const struct okx_tile *in, uint32_t r0, uint32_t r1,
		  int nt);

uint32_t okx_xblk(const struct ok_q8 *m);
int okx_xq_prep(const struct ok_q8 *m, const float *x, uint32_t c0,
		uint32_t c1, int16_t *q, float *sx);
size_t okx_xq_bytes(const struct ok_q8 *m, uint32_t ntok);
void okx_xq_prep_all(const struct ok_q8 *m, const float *x, uint32_t ntok,
		     uint32_t t0, uint32_t t1, void *buf);
void okx_madd_rows(const struct ok_q8 *m, const struct ok_ortho *const *o,
		   unsigned int no, const float *x, void *buf, float *y,
		   uint32_t ntok, uint32_t r0, uint32_t r1);
void okx_madd_rows_direct(const struct ok_q8 *m,
			  const struct ok_ortho *const *o, unsigned int no,
			  const float *x, float *y, uint32_t ntok, uint32_t r0,
			  uint32_t r1);
#else
static inline int okx_cpu_ok(void)
{
	return 0;
}

static inline int okx_madd_ok(const struct ok_q8 *m)
{
	return 0;
}
#endif

#endif
