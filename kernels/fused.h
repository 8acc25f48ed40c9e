/* SPDX-License-Identifier: MIT */
/*
 * Private to kernels/: the AVX2 twin of the scalar row kernels, and the
 * row granularity the pool splits work at.
 *
 * Both paths compute a row's outputs the same way wherever the row sits in
 * a thread's block, so a result never depends on the number of threads.
 * The scalar and AVX2 paths sum in different orders and agree only to
 * rounding (and the AVX2 path sums a one-token call in a different order
 * than a token of a GEMM).
 */
#ifndef ORTHO_KERNELS_FUSED_H
#define ORTHO_KERNELS_FUSED_H

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
 * okx_fused_rows() - ok_fused_rows() on AVX2; only when okx_cpu_ok().
 */
void okx_fused_rows(const struct ok_q8 *m, const struct ok_ortho *const *o,
		    unsigned int no, const float *x, float *y, uint32_t ntok,
		    uint32_t r0, uint32_t r1);

/**
 * okx_int8_rows() - ok_int8_rows() on AVX2; only when okx_cpu_ok().
 */
void okx_int8_rows(const struct ok_q8 *m, const float *x, float *y,
		   uint32_t ntok, uint32_t r0, uint32_t r1);
#else
static inline int okx_cpu_ok(void)
{
	return 0;
}
#endif

#endif
