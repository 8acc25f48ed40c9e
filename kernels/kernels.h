/* SPDX-License-Identifier: MIT */
/*
 * The compute contract, shared by the CPU twins (*_cpu.c) and the CUDA
 * kernels (*.cu): y = deq(Base) x + sum over Ortho deltas of O x.
 *
 * Base: INT8, row-major rows x cols, one FP32 scale per group of
 * group_size input columns (the last group of a row may be shorter);
 * deq(q)[r][c] = q[r][c] * scale[r][c / group_size].
 * Ortho: FP16 values, CSR (u16 or u32 column indices, row-sorted) or dense.
 * x holds ntok vectors of cols floats; y receives ntok vectors of rows
 * floats (token t at y + t * rows). y is overwritten, never accumulated.
 * Accumulation is in FP32 per group, the group sum scaled once.
 */
#ifndef ORTHO_KERNELS_H
#define ORTHO_KERNELS_H

#include <stdint.h>

struct ok_q8 {
	const int8_t *q;
	const float *scales;		/* rows * ceil(cols / group) */
	uint32_t rows, cols, group;
};

enum ok_ortho_enc {
	OK_CSR16 = 1,			/* same numbers as enum osp_encoding */
	OK_CSR32 = 2,
	OK_DENSE16 = 3,
};

struct ok_ortho {
	uint32_t encoding;		/* enum ok_ortho_enc */
	uint32_t rows, cols;
	const uint32_t *rowptr;		/* CSR: rows + 1 */
	const void *col;		/* CSR: u16 or u32 per encoding */
	const uint16_t *val;		/* FP16 bits */
};

/* Single-threaded, rows [r0, r1) of every token. Picks AVX2 when the CPU
 * has it (and ok_force_scalar() is off), else scalar. */
void ok_fused_rows(const struct ok_q8 *m, const struct ok_ortho *const *o,
		   unsigned int no, const float *x, float *y, uint32_t ntok,
		   uint32_t r0, uint32_t r1);

/* The plain INT8 kernel, no Ortho code at all (the benchmark's yardstick). */
void ok_int8_rows(const struct ok_q8 *m, const float *x, float *y,
		  uint32_t ntok, uint32_t r0, uint32_t r1);

/* Return: 1 when the AVX2 (and F16C, FMA) path is in use. */
int ok_have_avx2(void);
/* Return: 1 when the integer path runs its AVX-512 VNNI tiles. */
int ok_have_avx512(void);
/* Tests: force the scalar path on (1) or back to automatic (0). */
void ok_force_scalar(int on);
/* Tests: keep to AVX2 where AVX-512 is there (1), or automatic (0). */
void ok_force_avx2(int on);

/*
 * A pool of compute threads. A worker that finished its part of a call
 * looks for the next one for 100 us, then sleeps (kernels/pool.c), so
 * back-to-back calls skip the wake-up and nothing spins for long between
 * bursts of calls. Callers from several threads are fine: when the pool is
 * busy the caller computes alone on its own thread.
 */
struct ok_pool;

/* @threads: total including the caller; 0 means online CPUs. */
int ok_pool_new(unsigned int threads, struct ok_pool **out);
void ok_pool_free(struct ok_pool *p);
unsigned int ok_pool_threads(const struct ok_pool *p);

/* Threaded over rows; small problems run on the caller's thread alone. */
void ok_fused(struct ok_pool *p, const struct ok_q8 *m,
	      const struct ok_ortho *const *o, unsigned int no,
	      const float *x, float *y, uint32_t ntok);
void ok_int8(struct ok_pool *p, const struct ok_q8 *m, const float *x,
	     float *y, uint32_t ntok);

#endif
