// SPDX-License-Identifier: MIT
/*
 * The CUDA kernels of the fused linear op, y = deq(Base) x + sum of Ortho x
 * (kernels.h has the contract, ok_fused_rows() is the CPU twin they are
 * tested against). Built to an embedded fatbin (kernels/cuda.mk) and loaded with
 * the driver API, so every kernel is extern "C" and takes one struct
 * okc_args by value (gemv_int8_abi.h); __grid_constant__ lets the Ortho
 * table be indexed at run time without a copy to local memory.
 *
 * GEMV (few tokens): one warp per output row, 16-byte loads of the INT8
 * weights (16 columns per lane), the Ortho row added by the same warp,
 * then a shuffle reduction; lane 0 writes. No atomics, no shared memory.
 * The row is read once for up to NT tokens.
 *
 * GEMM (many tokens): 64 rows x 64 tokens per block, 32 columns per step;
 * the weight tile is dequantized (and dense Ortho deltas added) into
 * shared memory, each thread keeps 4 x 4 outputs in registers. CSR deltas
 * are gathered after the main loop, as they touch ~1% of the columns.
 *
 * Sums are FP32, in a different order from the CPU twin: the two agree to
 * rounding, not bit for bit.
 */
#include <stdint.h>

#include <cuda_fp16.h>

#include "gemv_int8_abi.h"

#define FULL_MASK 0xffffffffu

static_assert(OKC_THREADS == 256, "the GEMM thread layout assumes 256");
static_assert(OKC_GEMM_BM == 64 && OKC_GEMM_BN == 64 && OKC_GEMM_BK == 32,
	      "the GEMM tile loaders assume 64 x 64 x 32");

__device__ __forceinline__ float warp_sum(float v)
{
#pragma unroll
	for (int d = 16; d > 0; d >>= 1)
		v += __shfl_xor_sync(FULL_MASK, v, d);
	return v;
}

__device__ __forceinline__ float h2f(unsigned short h)
{
	return __half2float(__ushort_as_half(h));
}

/* Signed byte @b (0..3) of @w as a float. */
__device__ __forceinline__ float s8(int w, int b)
{
	return (float)(signed char)(w >> (8 * b));
}

/* Four INT8 weights packed in @w times four inputs. */
__device__ __forceinline__ float dot4(int w, float4 x)
{
	float s = s8(w, 0) * x.x;

	s = fmaf(s8(w, 1), x.y, s);
	s = fmaf(s8(w, 2), x.z, s);
	return fmaf(s8(w, 3), x.w, s);
}

/* Two FP16 values packed in @w times two inputs, added to @acc. */
__device__ __forceinline__ float hdot2(unsigned int w, float a, float b,
				       float acc)
{
	acc = fmaf(h2f((unsigned short)(w & 0xffff)), a, acc);
	return fmaf(h2f((unsigned short)(w >> 16)), b, acc);
}

/* ---- GEMV: one warp per row, NT tokens per pass ---- */

/* Token @j's input vector. */
__device__ __forceinline__ const float *xtok(const float *x, int j,
					     unsigned int cols)
{
	return x + (size_t)j * cols;
}

/* Base row, 16 columns per lane per step: cols and group multiples of 16. */
template <int NT>
__device__ __forceinline__ void base_vec16(const int8_t *q, const float *sc,
					   const float *x, unsigned int cols,
					   unsigned int group, unsigned int nt,
					   unsigned int lane, float (&acc)[NT])
{
#pragma unroll 4
	for (unsigned int c = lane * 16; c < cols; c += 32 * 16) {
		const int4 w = __ldg(reinterpret_cast<const int4 *>(q + c));
		const float s = __ldg(sc + c / group);

#pragma unroll
		for (int j = 0; j < NT; j++) {
			if (j < (int)nt) {
				const float4 *xv = reinterpret_cast<
					const float4 *>(xtok(x, j, cols) + c);
				float d = dot4(w.x, __ldg(xv));

				d += dot4(w.y, __ldg(xv + 1));
				d += dot4(w.z, __ldg(xv + 2));
				d += dot4(w.w, __ldg(xv + 3));
				acc[j] = fmaf(s, d, acc[j]);
			}
		}
	}
}

/* Base row, any shape: one column per lane per step. */
template <int NT>
__device__ __forceinline__ void base_any(const int8_t *q, const float *sc,
					 const float *x, unsigned int cols,
					 unsigned int group, unsigned int nt,
					 unsigned int lane, float (&acc)[NT])
{
	for (unsigned int c = lane; c < cols; c += 32) {
		const float w = (float)__ldg(q + c) * __ldg(sc + c / group);

#pragma unroll
		for (int j = 0; j < NT; j++)
			if (j < (int)nt)
				acc[j] = fmaf(w, __ldg(xtok(x, j, cols) + c),
					      acc[j]);
	}
}

/* One dense FP16 delta row; 8 values per 16-byte load when cols % 8 == 0. */
template <int NT>
__device__ __forceinline__ void dense_row(const unsigned short *v,
					  const float *x, unsigned int cols,
					  unsigned int nt, unsigned int lane,
					  float (&acc)[NT])
{
	if ((cols & 7) == 0) {
		for (unsigned int c = lane * 8; c < cols; c += 32 * 8) {
			const uint4 h = __ldg(reinterpret_cast<const uint4 *>(
				v + c));

#pragma unroll
			for (int j = 0; j < NT; j++) {
				if (j < (int)nt) {
					const float4 *xv = reinterpret_cast<
						const float4 *>(xtok(x, j, cols)
								+ c);
					const float4 a = __ldg(xv);
					const float4 b = __ldg(xv + 1);
					float s = acc[j];

					s = hdot2(h.x, a.x, a.y, s);
					s = hdot2(h.y, a.z, a.w, s);
					s = hdot2(h.z, b.x, b.y, s);
					acc[j] = hdot2(h.w, b.z, b.w, s);
				}
			}
		}
		return;
	}
	for (unsigned int c = lane; c < cols; c += 32) {
		const float w = h2f(__ldg(v + c));

#pragma unroll
		for (int j = 0; j < NT; j++)
			if (j < (int)nt)
				acc[j] = fmaf(w, __ldg(xtok(x, j, cols) + c),
					      acc[j]);
	}
}

/* One CSR delta row: the warp's lanes take every 32nd entry. */
template <int NT>
__device__ __forceinline__ void csr_row(const okc_ortho &o, unsigned int r,
					const float *x, unsigned int cols,
					unsigned int nt, unsigned int lane,
					float (&acc)[NT])
{
	const uint32_t *rp = reinterpret_cast<const uint32_t *>(o.rowptr);
	const unsigned short *val =
		reinterpret_cast<const unsigned short *>(o.val);
	const uint32_t k1 = __ldg(rp + r + 1);

	for (uint32_t k = __ldg(rp + r) + lane; k < k1; k += 32) {
		const unsigned int c = o.encoding == OKC_CSR16 ?
			(unsigned int)__ldg(reinterpret_cast<
				const unsigned short *>(o.col) + k) :
			__ldg(reinterpret_cast<const uint32_t *>(o.col) + k);
		const float w = h2f(__ldg(val + k));

#pragma unroll
		for (int j = 0; j < NT; j++)
			if (j < (int)nt)
				acc[j] = fmaf(w, __ldg(xtok(x, j, cols) + c),
					      acc[j]);
	}
}

template <int NT>
__device__ __forceinline__ void gemv_body(const okc_args &a)
{
	const unsigned int lane = threadIdx.x & 31;
	const unsigned int r = blockIdx.x * OKC_GEMV_ROWS + (threadIdx.x >> 5);
	const unsigned int t0 = blockIdx.y * NT;
	const unsigned int cols = a.cols;
	float acc[NT];

	/* Whole warps leave together, so the shuffles below see all lanes. */
	if (r >= a.rows || t0 >= a.ntok)
		return;
	const unsigned int nt = min((unsigned int)NT, a.ntok - t0);
	const int8_t *q = reinterpret_cast<const int8_t *>(a.q) +
			  (size_t)r * cols;
	const float *sc = reinterpret_cast<const float *>(a.scales) +
			  (size_t)r * a.ngroups;
	const float *x = reinterpret_cast<const float *>(a.x) +
			 (size_t)t0 * cols;
	float *y = reinterpret_cast<float *>(a.y);

#pragma unroll
	for (int j = 0; j < NT; j++)
		acc[j] = 0.0f;
	if ((cols & 15) == 0 && (a.group & 15) == 0)
		base_vec16<NT>(q, sc, x, cols, a.group, nt, lane, acc);
	else
		base_any<NT>(q, sc, x, cols, a.group, nt, lane, acc);

	for (unsigned int i = 0; i < a.no; i++) {
		const okc_ortho &o = a.o[i];

		if (o.encoding == OKC_DENSE16)
			dense_row<NT>(reinterpret_cast<const unsigned short *>(
					      o.val) + (size_t)r * cols,
				      x, cols, nt, lane, acc);
		else
			csr_row<NT>(o, r, x, cols, nt, lane, acc);
	}

#pragma unroll
	for (int j = 0; j < NT; j++) {
		const float s = warp_sum(acc[j]);

		if (lane == 0 && j < (int)nt)
			y[(size_t)(t0 + j) * a.rows + r] = s;
	}
}

extern "C" __global__ void __launch_bounds__(OKC_THREADS)
okc_gemv1(const __grid_constant__ okc_args a)
{
	gemv_body<1>(a);
}

extern "C" __global__ void __launch_bounds__(OKC_THREADS)
okc_gemv4(const __grid_constant__ okc_args a)
{
	gemv_body<4>(a);
}

extern "C" __global__ void __launch_bounds__(OKC_THREADS)
okc_gemv8(const __grid_constant__ okc_args a)
{
	gemv_body<8>(a);
}

/* ---- GEMM: 64 rows x 64 tokens per block ---- */

/*
 * Tiles are stored column-major (k outer) so the inner loop reads a row of
 * weights and a row of tokens per k; the +1 pad makes both the transposing
 * stores and those reads free of bank conflicts.
 */
#define TILE_LD (OKC_GEMM_BM + 1)

/*
 * Weights [row0, +64) x [k0, +32) into ws[k][row], dequantized, with every
 * dense delta added. Thread: row tid / 4, columns (tid % 4) * 8 .. + 8.
 */
__device__ __forceinline__ void gemm_load_w(const okc_args &a,
					    float (*ws)[TILE_LD],
					    unsigned int row0, unsigned int k0)
{
	const unsigned int rr = threadIdx.x >> 2;
	const unsigned int kk = (threadIdx.x & 3) * 8;
	const unsigned int r = row0 + rr, c0 = k0 + kk, cols = a.cols;
	float w[8];

#pragma unroll
	for (int e = 0; e < 8; e++)
		w[e] = 0.0f;
	if (r < a.rows && c0 < cols) {
		const int8_t *q = reinterpret_cast<const int8_t *>(a.q) +
				  (size_t)r * cols;
		const float *sc = reinterpret_cast<const float *>(a.scales) +
				  (size_t)r * a.ngroups;

		if ((cols & 7) == 0) {
			const int2 v = __ldg(reinterpret_cast<const int2 *>(
				q + c0));

#pragma unroll
			for (int e = 0; e < 4; e++) {
				w[e] = s8(v.x, e);
				w[e + 4] = s8(v.y, e);
			}
		} else {
#pragma unroll
			for (int e = 0; e < 8; e++)
				if (c0 + e < cols)
					w[e] = (float)__ldg(q + c0 + e);
		}
#pragma unroll
		for (int e = 0; e < 8; e++)
			if (c0 + e < cols)
				w[e] *= __ldg(sc + (c0 + e) / a.group);

		for (unsigned int i = 0; i < a.no; i++) {
			const unsigned short *v;

			if (a.o[i].encoding != OKC_DENSE16)
				continue;
			v = reinterpret_cast<const unsigned short *>(
				a.o[i].val) + (size_t)r * cols + c0;
			if ((cols & 7) == 0) {
				const uint4 h = __ldg(
					reinterpret_cast<const uint4 *>(v));
				const unsigned int hw[4] = { h.x, h.y, h.z,
							     h.w };

#pragma unroll
				for (int e = 0; e < 4; e++) {
					w[2 * e] += h2f((unsigned short)
							(hw[e] & 0xffff));
					w[2 * e + 1] += h2f((unsigned short)
							    (hw[e] >> 16));
				}
			} else {
#pragma unroll
				for (int e = 0; e < 8; e++)
					if (c0 + e < cols)
						w[e] += h2f(__ldg(v + e));
			}
		}
	}
#pragma unroll
	for (int e = 0; e < 8; e++)
		ws[kk + e][rr] = w[e];
}

/* Inputs [tok0, +64) x [k0, +32) into xs[k][token]; layout as weights. */
__device__ __forceinline__ void gemm_load_x(const okc_args &a,
					    float (*xs)[TILE_LD],
					    unsigned int tok0, unsigned int k0)
{
	const unsigned int tt = threadIdx.x >> 2;
	const unsigned int kk = (threadIdx.x & 3) * 8;
	const unsigned int t = tok0 + tt, c0 = k0 + kk, cols = a.cols;
	float v[8];

#pragma unroll
	for (int e = 0; e < 8; e++)
		v[e] = 0.0f;
	if (t < a.ntok && c0 < cols) {
		const float *x = reinterpret_cast<const float *>(a.x) +
				 (size_t)t * cols + c0;

		if ((cols & 3) == 0 && c0 + 8 <= cols) {
			const float4 p = __ldg(reinterpret_cast<
					       const float4 *>(x));
			const float4 s = __ldg(reinterpret_cast<
					       const float4 *>(x) + 1);

			v[0] = p.x; v[1] = p.y; v[2] = p.z; v[3] = p.w;
			v[4] = s.x; v[5] = s.y; v[6] = s.z; v[7] = s.w;
		} else {
#pragma unroll
			for (int e = 0; e < 8; e++)
				if (c0 + e < cols)
					v[e] = __ldg(x + e);
		}
	}
#pragma unroll
	for (int e = 0; e < 8; e++)
		xs[kk + e][tt] = v[e];
}

/*
 * The CSR deltas of this thread's 4 rows for its 4 tokens, gathered from
 * x in global memory (L2-resident: the block's tokens were just read).
 */
__device__ __forceinline__ void gemm_csr(const okc_args &a,
					 unsigned int row0, unsigned int tok0,
					 float (&acc)[4][4])
{
	const unsigned int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
	const float *x = reinterpret_cast<const float *>(a.x);
	const size_t cols = a.cols;

	for (unsigned int i = 0; i < a.no; i++) {
		const okc_ortho &o = a.o[i];
		const uint32_t *rp;
		const unsigned short *val;

		if (o.encoding == OKC_DENSE16)
			continue;
		rp = reinterpret_cast<const uint32_t *>(o.rowptr);
		val = reinterpret_cast<const unsigned short *>(o.val);
#pragma unroll
		for (int m = 0; m < 4; m++) {
			const unsigned int r = row0 + tx + 16 * m;

			if (r >= a.rows)
				continue;
			const uint32_t k1 = __ldg(rp + r + 1);

			for (uint32_t k = __ldg(rp + r); k < k1; k++) {
				const size_t c = o.encoding == OKC_CSR16 ?
					(size_t)__ldg(reinterpret_cast<
						const unsigned short *>(o.col) +
						k) :
					(size_t)__ldg(reinterpret_cast<
						const uint32_t *>(o.col) + k);
				const float w = h2f(__ldg(val + k));

#pragma unroll
				for (int n = 0; n < 4; n++) {
					const unsigned int t = tok0 + ty +
							       16 * n;

					if (t < a.ntok)
						acc[m][n] = fmaf(w,
							__ldg(x + t * cols + c),
							acc[m][n]);
				}
			}
		}
	}
}

/*
 * Thread (tx, ty) = (tid % 16, tid / 16) owns rows row0 + tx + 16 m and
 * tokens tok0 + ty + 16 n: neighbouring threads write neighbouring rows of
 * one token, so the stores to y coalesce.
 */
extern "C" __global__ void __launch_bounds__(OKC_THREADS)
okc_gemm(const __grid_constant__ okc_args a)
{
	__shared__ float ws[OKC_GEMM_BK][TILE_LD];
	__shared__ float xs[OKC_GEMM_BK][TILE_LD];
	const unsigned int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
	const unsigned int tok0 = blockIdx.x * OKC_GEMM_BN;
	const unsigned int row0 = blockIdx.y * OKC_GEMM_BM;
	float *y = reinterpret_cast<float *>(a.y);
	float acc[4][4];

#pragma unroll
	for (int m = 0; m < 4; m++)
#pragma unroll
		for (int n = 0; n < 4; n++)
			acc[m][n] = 0.0f;

	for (unsigned int k0 = 0; k0 < a.cols; k0 += OKC_GEMM_BK) {
		gemm_load_w(a, ws, row0, k0);
		gemm_load_x(a, xs, tok0, k0);
		__syncthreads();
#pragma unroll
		for (int k = 0; k < OKC_GEMM_BK; k++) {
			float w[4], v[4];

#pragma unroll
			for (int m = 0; m < 4; m++)
				w[m] = ws[k][tx + 16 * m];
#pragma unroll
			for (int n = 0; n < 4; n++)
				v[n] = xs[k][ty + 16 * n];
#pragma unroll
			for (int m = 0; m < 4; m++)
#pragma unroll
				for (int n = 0; n < 4; n++)
					acc[m][n] = fmaf(w[m], v[n],
							 acc[m][n]);
		}
		__syncthreads();
	}

	gemm_csr(a, row0, tok0, acc);

#pragma unroll
	for (int n = 0; n < 4; n++) {
		const unsigned int t = tok0 + ty + 16 * n;

#pragma unroll
		for (int m = 0; m < 4; m++) {
			const unsigned int r = row0 + tx + 16 * m;

			if (r < a.rows && t < a.ntok)
				y[(size_t)t * a.rows + r] = acc[m][n];
		}
	}
}
