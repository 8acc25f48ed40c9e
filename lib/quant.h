/* SPDX-License-Identifier: MIT */
/*
 * The numbers of a pack: INT8 Base quantization (symmetric, per-group
 * absmax along the input dimension) and FP16 Ortho values, each with the
 * hard check that ortho_pack() runs on every tensor it writes.
 */
#ifndef ORTHO_QUANT_H
#define ORTHO_QUANT_H

#include <stdint.h>

struct ortho_ctx;

#define QUANT_GROUP_DEFAULT 64u
#define QUANT_QMAX 127

/* What the Base check measured on one tensor. */
struct quant_stats {
	double max_err;		/* max |deq(B) - W| */
	double max_err_steps;	/* the same in steps (/ scale), worst group */
};

/* The runtime's dequantization, bit for bit. */
static inline float quant_deq(int8_t q, float scale)
{
	return (float)q * scale;
}

/**
 * quant_int8() - quantize a row-major matrix: for each row and each group of
 * @group columns (the last one of a row shorter), scale = absmax / 127 and
 * q = round(w / scale); an all-zero group gets scale 0 and q 0.
 * @w: rows * cols finite floats.
 * @q: rows * cols, filled in.
 * @scales: rows * ngroups, filled in.
 *
 * Return: 0, or -EINVAL for a zero size or group, or a non-finite weight.
 */
int quant_int8(const float *w, uint32_t rows, uint32_t cols, uint32_t group,
	       int8_t *q, float *scales);

/**
 * quant_check() - the hard Base check of one tensor: every scale finite and
 * equal to the group's absmax / 127 (no clipping, no stretching), q within
 * +-127 (0 where the scale is 0), |deq(B) - W| <= scale / 2 plus float
 * rounding, and no sign flip where |W| > scale / 2.
 * @ctx: for the message naming @name, the row, the group and the check.
 * @st: filled in with the measured error; may be NULL.
 *
 * Return: 0, or -EDOM when a check fails.
 */
int quant_check(struct ortho_ctx *ctx, const char *name, const float *w,
		uint32_t rows, uint32_t cols, uint32_t group, const int8_t *q,
		const float *scales, struct quant_stats *st);

/**
 * quant_ortho() - the FP16 Ortho value that makes deq(B) + O = W_private.
 * @priv: W_private. @deq: deq(B) at the same place.
 * @o: FP16 bits, filled in.
 *
 * Return: 0, or -ERANGE when the value overflows FP16.
 */
int quant_ortho(float priv, float deq, uint16_t *o);

/**
 * quant_ortho_ok() - the hard Ortho check of one entry: |deq + O - priv|
 * is at most half an FP16 ulp of O plus float rounding, and O is finite.
 *
 * Return: 1 when it holds, else 0.
 */
int quant_ortho_ok(float priv, float deq, uint16_t o);

#endif
