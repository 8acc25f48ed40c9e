/* SPDX-License-Identifier: MIT */
/*
 * The launch ABI of kernels/gemv_int8.cu: the one by-value argument every
 * kernel takes, shared by the CUDA C++ kernels and the C host code
 * (lib/backend_cuda.c). Plain fixed-width fields and device addresses as
 * u64, so both compilers lay it out the same; the static asserts hold them
 * to it. The semantics are kernels.h's (the CPU twin ok_fused_rows()).
 */
#ifndef ORTHO_GEMV_INT8_ABI_H
#define ORTHO_GEMV_INT8_ABI_H

#include <stdint.h>

/* Ortho deltas one launch adds (the CPU backend's limit too). */
#define OKC_MAX_ORTHO 64

/* Threads per block of every kernel. */
#define OKC_THREADS 256
/* GEMV: one warp per row. */
#define OKC_GEMV_ROWS (OKC_THREADS / 32)
/* GEMM tile: rows x tokens per block, columns per step. */
#define OKC_GEMM_BM 64
#define OKC_GEMM_BN 64
#define OKC_GEMM_BK 32
/* Up to this many tokens the GEMV kernels (weights read once per 8
 * tokens) beat the tiled GEMM. */
#define OKC_GEMV_MAX_NTOK 16

/* Kernel names in the module (extern "C", so unmangled). */
#define OKC_FN_GEMV1 "okc_gemv1"	/* ntok == 1 */
#define OKC_FN_GEMV4 "okc_gemv4"	/* 4 tokens per pass */
#define OKC_FN_GEMV8 "okc_gemv8"	/* 8 tokens per pass */
#define OKC_FN_GEMM "okc_gemm"		/* tiled, many tokens */

/* Same numbers as enum ok_ortho_enc. */
#define OKC_CSR16 1
#define OKC_CSR32 2
#define OKC_DENSE16 3

/* One Ortho delta on the device: CSR (rowptr, col, val) or dense (val). */
struct okc_ortho {
	uint64_t rowptr;		/* u32[rows + 1]; 0 for dense */
	uint64_t col;			/* u16 or u32[nnz]; 0 for dense */
	uint64_t val;			/* FP16 bits */
	uint32_t encoding;		/* OKC_CSR16, OKC_CSR32, OKC_DENSE16 */
	uint32_t pad;
};

struct okc_args {
	uint64_t q;			/* int8[rows * cols] */
	uint64_t scales;		/* float[rows * ngroups] */
	uint64_t x;			/* float[ntok * cols] */
	uint64_t y;			/* float[ntok * rows], overwritten */
	uint32_t rows, cols, group, ngroups;
	uint32_t ntok, no;		/* tokens; Ortho deltas in o[] */
	uint32_t pad[2];
	struct okc_ortho o[OKC_MAX_ORTHO];
};

#ifdef __cplusplus
static_assert(sizeof(struct okc_ortho) == 32, "okc_ortho layout");
static_assert(sizeof(struct okc_args) == 64 + 32 * OKC_MAX_ORTHO,
	      "okc_args layout");
#else
_Static_assert(sizeof(struct okc_ortho) == 32, "okc_ortho layout");
_Static_assert(sizeof(struct okc_args) == 64 + 32 * OKC_MAX_ORTHO,
	       "okc_args layout");
#endif

#endif
