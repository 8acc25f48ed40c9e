// SPDX-License-Identifier: MIT
/*
 * INT8 Base quantization and FP16 Ortho values, with their hard checks.
 *
 * The checks do not trust the quantizer: they recompute each group's absmax
 * from the weights and measure in double what the runtime will compute in
 * float, so a broken quantizer (a wrong scale, a clipped or flipped value,
 * an Ortho value that does not restore the private weight) fails the pack.
 */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdint.h>

#include "fp16.h"
#include "log.h"
#include "quant.h"

/* Float rounding allowed on top of the exact bounds, relative to absmax. */
#define QUANT_REL_SLACK 0x1p-21

static uint32_t ngroups(uint32_t cols, uint32_t group)
{
	return (cols + group - 1) / group;
}

static float group_absmax(const float *w, uint32_t n)
{
	float m = 0.0f;
	uint32_t i;

	for (i = 0; i < n; i++)
		m = fmaxf(m, fabsf(w[i]));
	return m;
}

/*
 * absmax / 127; for absmax so small that the quotient underflows to zero,
 * the smallest subnormal, so that q = w / scale stays finite.
 */
static float group_scale(float absmax)
{
	float s;

	if (absmax == 0.0f)
		return 0.0f;
	s = absmax / (float)QUANT_QMAX;
	return s > 0.0f ? s : FLT_TRUE_MIN;
}

static void quant_group(const float *w, uint32_t n, int8_t *q, float *scale)
{
	float s = group_scale(group_absmax(w, n));
	uint32_t i;

	*scale = s;
	for (i = 0; i < n; i++) {
		double v = s > 0.0f ? round((double)w[i] / s) : 0.0;

		if (v > QUANT_QMAX)
			v = QUANT_QMAX;
		if (v < -QUANT_QMAX)
			v = -QUANT_QMAX;
		q[i] = (int8_t)v;
	}
}

int quant_int8(const float *w, uint32_t rows, uint32_t cols, uint32_t group,
	       int8_t *q, float *scales)
{
	uint32_t ng = group ? ngroups(cols, group) : 0;
	uint64_t i, n = (uint64_t)rows * cols;
	uint32_t r, g;

	if (!rows || !cols || !group)
		return -EINVAL;
	for (i = 0; i < n; i++)
		if (!isfinite(w[i]))
			return -EINVAL;
	for (r = 0; r < rows; r++) {
		for (g = 0; g < ng; g++) {
			uint64_t off = (uint64_t)r * cols + (uint64_t)g * group;
			uint32_t len = cols - g * group < group ?
					       cols - g * group : group;

			quant_group(w + off, len, q + off,
				    &scales[(uint64_t)r * ng + g]);
		}
	}
	return 0;
}

struct group_ctx {
	struct ortho_ctx *ctx;
	const char *name;
	uint32_t row, group;
};

static int group_fail(const struct group_ctx *gc, const char *check,
		      uint32_t col, double a, double b)
{
	olog_err(gc->ctx, "%s: Base check failed: row %u group %u col %u: %s (%.9g vs %.9g)",
		 gc->name, gc->row, gc->group, col, check, a, b);
	return -EDOM;
}

static int check_scale(const struct group_ctx *gc, float absmax, float s)
{
	double want = (double)absmax / QUANT_QMAX;

	if (!isfinite(s) || s < 0.0f)
		return group_fail(gc, "scale not finite and >= 0", 0, s, want);
	if (absmax == 0.0f && s != 0.0f)
		return group_fail(gc, "all-zero group needs scale 0", 0, s, 0);
	/* The grid is the absmax grid: no clipping, no stretching. */
	if (!(fabs((double)s * QUANT_QMAX - absmax) <=
	      QUANT_REL_SLACK * absmax + QUANT_QMAX * (double)FLT_TRUE_MIN))
		return group_fail(gc, "scale is not absmax/127", 0, s, want);
	return 0;
}

static int check_group(const struct group_ctx *gc, const float *w,
		       const int8_t *q, uint32_t n, float s,
		       struct quant_stats *st)
{
	float absmax = group_absmax(w, n);
	double tol = 0.5 * s + QUANT_REL_SLACK * absmax + FLT_MIN;
	uint32_t i;
	int ret;

	ret = check_scale(gc, absmax, s);
	if (ret)
		return ret;
	for (i = 0; i < n; i++) {
		double err = fabs((double)quant_deq(q[i], s) - w[i]);

		if (q[i] < -QUANT_QMAX)
			return group_fail(gc, "q out of +-127", i, q[i], 127);
		if (s == 0.0f && q[i])
			return group_fail(gc, "q nonzero with scale 0", i,
					  q[i], 0);
		if (!(err <= tol))
			return group_fail(gc, "error above half a step", i,
					  err, 0.5 * s);
		if (fabsf(w[i]) > 0.5f * s &&
		    (q[i] == 0 || (q[i] > 0) != (w[i] > 0.0f)))
			return group_fail(gc, "sign flip", i, q[i], w[i]);
		if (err > st->max_err)
			st->max_err = err;
		if (s > 0.0f && err / s > st->max_err_steps)
			st->max_err_steps = err / s;
	}
	return 0;
}

int quant_check(struct ortho_ctx *ctx, const char *name, const float *w,
		uint32_t rows, uint32_t cols, uint32_t group, const int8_t *q,
		const float *scales, struct quant_stats *st)
{
	struct group_ctx gc = { .ctx = ctx, .name = name };
	struct quant_stats local = { 0 };
	uint32_t ng;
	int ret;

	if (!rows || !cols || !group) {
		olog_err(ctx, "%s: Base check failed: empty shape or group",
			 name);
		return -EDOM;
	}
	ng = ngroups(cols, group);
	for (gc.row = 0; gc.row < rows; gc.row++) {
		for (gc.group = 0; gc.group < ng; gc.group++) {
			uint64_t off = (uint64_t)gc.row * cols +
				       (uint64_t)gc.group * group;
			uint32_t len = cols - gc.group * group < group ?
					       cols - gc.group * group : group;

			ret = check_group(&gc, w + off, q + off, len,
					  scales[(uint64_t)gc.row * ng +
						 gc.group],
					  &local);
			if (ret)
				return ret;
		}
	}
	if (st)
		*st = local;
	return 0;
}

/* Half an FP16 ulp of @h (finite). */
static double fp16_half_ulp(uint16_t h)
{
	int e = (h >> 10) & 0x1f;

	return ldexp(1.0, (e ? e : 1) - 15 - 10 - 1);
}

int quant_ortho(float priv, float deq, uint16_t *o)
{
	double r = (double)priv - deq;

	*o = f32_to_fp16((float)r);
	if ((*o & 0x7c00) == 0x7c00)
		return -ERANGE;
	return 0;
}

int quant_ortho_ok(float priv, float deq, uint16_t o)
{
	double err, tol, r;

	if ((o & 0x7c00) == 0x7c00)
		return 0;
	/*
	 * In double the sum is exact; what remains is O's own rounding (via
	 * float, so one float ulp of it) and the runtime's float add.
	 */
	r = (double)priv - deq;
	err = fabs((double)deq + fp16_to_f32(o) - priv);
	tol = fp16_half_ulp(o) + 0x1p-24 * (fabs(priv) + 2.0 * fabs(r));
	return err <= tol;
}
