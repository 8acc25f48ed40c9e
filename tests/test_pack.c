// SPDX-License-Identifier: MIT
/*
 * The numbers of a pack on 32x32 layers: INT8 quantization and its hard
 * check (fed deliberately broken quantizations to prove each check fires),
 * FP16 Ortho values, and the energy selection against a brute-force sort.
 * Whole packs are in test_pack_model.c.
 */
#include <check.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fp16.h"
#include "quant.h"
#include "select.h"
#include "testutil.h"

#define R 32u
#define C 32u
#define N (R * C)

static struct tu_log lg;
static struct ortho_ctx *ctx;

static void setup(void)
{
	tu_log_clear(&lg);
	ctx = tu_ctx(&lg);
	ck_assert_ptr_nonnull(ctx);
}

static void teardown(void)
{
	ortho_ctx_free(ctx);
}

enum layer_kind { NORMAL, ZERO_GROUP, OUTLIER, CAUCHY, NEG_ZERO, TINY, NKINDS };

static const char *const kind_name[NKINDS] = {
	"normal", "all-zero group", "huge outlier", "heavy tails",
	"negative zero", "subnormal group",
};

static void make_layer(float *w, int kind, uint64_t seed)
{
	uint32_t i;

	for (i = 0; i < N; i++)
		w[i] = 0.02f * tu_randn(&seed);
	switch (kind) {
	case ZERO_GROUP:	/* row 5, columns 8..15 (group 8) and a row */
		memset(w + 5 * C + 8, 0, 8 * sizeof(float));
		memset(w + 9 * C, 0, C * sizeof(float));
		break;
	case OUTLIER:
		w[17 * C + 3] = -1.0e4f;
		break;
	case CAUCHY:
		for (i = 0; i < N; i++)
			w[i] = 0.01f * tanf((float)M_PI * 0.49999f *
					    tu_randf(&seed));
		break;
	case NEG_ZERO:
		for (i = 0; i < N; i += 3)
			w[i] = -0.0f;
		for (i = 0; i < C; i++)
			w[4 * C + i] = -0.0f;
		break;
	case TINY:	/* below 127 * FLT_TRUE_MIN: the scale underflows */
		for (i = 0; i < C; i++)
			w[2 * C + i] = (float)((int)(i % 13) - 6) * FLT_TRUE_MIN;
		for (i = 0; i < C; i++)
			w[3 * C + i] = (float)i * 1e-39f;
		break;
	}
}

/* The bound checked here from the definition, not through quant_check(). */
static void assert_bound(const float *w, const int8_t *q, const float *s,
			 uint32_t group)
{
	uint32_t ng = (C + group - 1) / group, r, c;

	for (r = 0; r < R; r++) {
		for (c = 0; c < C; c++) {
			float sc = s[r * ng + c / group];
			float deq = (float)q[r * C + c] * sc;
			double err = fabs((double)deq - w[r * C + c]);

			ck_assert(sc >= 0.0f && isfinite(sc));
			ck_assert(err <= 0.5 * sc * (1 + 1e-5) + 1e-44);
			if (fabsf(w[r * C + c]) > 0.5f * sc)
				ck_assert((q[r * C + c] > 0) ==
					  (w[r * C + c] > 0));
		}
	}
}

START_TEST(quant_layers)
{
	static const uint32_t groups[] = { 64, 32, 8, 12, 1 };
	float w[N], s[N];
	int8_t q[N];
	struct quant_stats st;
	unsigned int g;

	make_layer(w, _i, 1000 + (uint64_t)_i);
	for (g = 0; g < sizeof(groups) / sizeof(groups[0]); g++) {
		uint32_t group = groups[g], ng = (C + group - 1) / group;

		ck_assert_int_eq(quant_int8(w, R, C, group, q, s), 0);
		if (quant_check(ctx, kind_name[_i], w, R, C, group, q, s, &st))
			ck_abort_msg("%s, group %u: %s", kind_name[_i], group,
				     lg.buf);
		assert_bound(w, q, s, group);
		/* Subnormal scales lose precision; the check allows for it. */
		ck_assert(st.max_err_steps <= (_i == TINY ? 0.51 : 0.5 + 1e-4));
		if (_i == NORMAL && group >= 8)
			ck_assert(st.max_err_steps > 0.4);
		if (_i == ZERO_GROUP && group == 8) {
			ck_assert(s[5 * ng + 1] == 0.0f);
			ck_assert(s[9 * ng] == 0.0f);
		}
		if (_i == OUTLIER && group == 64) {
			ck_assert_int_eq(q[17 * C + 3], -127);
			ck_assert(s[17] == 1.0e4f / 127.0f);
		}
		if (_i == NEG_ZERO)
			ck_assert_int_eq(q[0], 0);
	}
	/* The row is shorter than the group: one group, the whole row. */
	ck_assert_int_eq(quant_int8(w, R, C, 64, q, s), 0);
	for (g = 0; g < R; g++) {
		float m = 0.0f, want;
		uint32_t c;

		for (c = 0; c < C; c++)
			m = fmaxf(m, fabsf(w[g * C + c]));
		want = m / 127.0f;
		if (m > 0.0f && want == 0.0f)
			want = FLT_TRUE_MIN;
		ck_assert(s[g] == want);
	}
}
END_TEST

START_TEST(quant_refuses_bad_input)
{
	float w[N] = { 0 }, s[N];
	int8_t q[N];

	ck_assert_int_eq(quant_int8(w, 0, C, 64, q, s), -EINVAL);
	ck_assert_int_eq(quant_int8(w, R, C, 0, q, s), -EINVAL);
	w[7] = NAN;
	ck_assert_int_eq(quant_int8(w, R, C, 64, q, s), -EINVAL);
	w[7] = -INFINITY;
	ck_assert_int_eq(quant_int8(w, R, C, 64, q, s), -EINVAL);
}
END_TEST

/* A broken quantization is fed to the check; the named check must fire. */
enum breakage {
	SCALE_DOUBLED, SCALE_CLIPPED, SCALE_NAN, Q_OFF_BY_ONE, Q_MINUS_128,
	SIGN_FLIP, ZERO_GROUP_SCALE, ZERO_GROUP_Q, NBREAK
};

static const char *const break_msg[NBREAK] = {
	"scale is not absmax/127", "scale is not absmax/127",
	"scale not finite", "error above half a step", "q out of +-127",
	"sign flip", "all-zero group needs scale 0", "q nonzero with scale 0",
};

START_TEST(quant_check_fires)
{
	uint32_t k = 6 * C + 5, i;
	float w[N], s[R];
	int8_t q[N];

	make_layer(w, ZERO_GROUP, 77);
	/* Row 6 has a value exactly a hair above half a step. */
	w[6 * C] = 127.0f;
	for (i = 1; i < C; i++)
		w[6 * C + i] = 0.01f;
	w[k] = nextafterf(0.5f, 1.0f);
	ck_assert_int_eq(quant_int8(w, R, C, 64, q, s), 0);
	ck_assert_int_eq(quant_check(ctx, "t", w, R, C, 64, q, s, NULL), 0);
	ck_assert_int_eq(q[k], 1);
	switch (_i) {
	case SCALE_DOUBLED:
		s[3] *= 2.0f;
		break;
	case SCALE_CLIPPED:	/* a smaller grid, the top value clipped */
		s[6] = 0.9f;
		for (i = 0; i < C; i++)
			q[6 * C + i] = (int8_t)fmaxf(-127, fminf(127, roundf(w[6 * C + i] / 0.9f)));
		break;
	case SCALE_NAN:
		s[0] = NAN;
		break;
	case Q_OFF_BY_ONE:
		q[20 * C + 11] += q[20 * C + 11] < 127 ? 1 : -1;
		break;
	case Q_MINUS_128:
		q[6 * C] = -128;
		break;
	case SIGN_FLIP:	/* within the float slack of the error bound */
		q[k] = 0;
		break;
	case ZERO_GROUP_SCALE:
		s[9] = 0.5f;
		break;
	case ZERO_GROUP_Q:
		q[9 * C + 4] = 1;
		break;
	}
	tu_log_clear(&lg);
	ck_assert_int_eq(quant_check(ctx, "layers.0.wq", w, R, C, 64, q, s,
				     NULL), -EDOM);
	ck_assert(tu_log_has(&lg, "layers.0.wq: Base check failed"));
	if (!tu_log_has(&lg, break_msg[_i]))
		ck_abort_msg("case %d: log lacks \"%s\": %s", _i,
			     break_msg[_i], lg.buf);
}
END_TEST

START_TEST(ortho_values)
{
	uint64_t seed = 5;
	uint16_t o;
	int i;

	for (i = 0; i < 100000; i++) {
		float priv = 0.1f * tu_randn(&seed);
		float deq = priv + 0.003f * tu_randn(&seed);

		if (i % 7 == 0)
			deq = priv;	/* nothing to restore */
		ck_assert_int_eq(quant_ortho(priv, deq, &o), 0);
		ck_assert(quant_ortho_ok(priv, deq, o));
		/* Two FP16 ulps off, or the wrong sign, is caught. */
		if (o & 0x7fff) {
			ck_assert(!quant_ortho_ok(priv, deq, (uint16_t)(o + 2)));
			ck_assert(!quant_ortho_ok(priv, deq, o ^ 0x8000));
		}
	}
	ck_assert_int_eq(quant_ortho(65504.0f, 0.0f, &o), 0);
	ck_assert(quant_ortho_ok(65504.0f, 0.0f, o));
	ck_assert_int_eq(quant_ortho(65519.0f, 0.0f, &o), 0);
	ck_assert_int_eq(quant_ortho(65520.0f, 0.0f, &o), -ERANGE);
	ck_assert_int_eq(quant_ortho(1.0f, -1.0e5f, &o), -ERANGE);
	ck_assert(!quant_ortho_ok(1.0f, 0.0f, 0x7c00));
	ck_assert(!quant_ortho_ok(1.0f, 0.0f, 0x7e00));
	/* A delta below FP16's range restores within half its ulp. */
	ck_assert_int_eq(quant_ortho(1e-9f, 0.0f, &o), 0);
	ck_assert(quant_ortho_ok(1e-9f, 0.0f, o));
}
END_TEST

/* ---- selection ---- */

static int cmp_desc(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? 1 : x > y ? -1 : 0;
}

/* The smallest k whose top-k squares hold @keep of the total, by sorting. */
static uint64_t brute_k(const float *pub, const float *priv, uint64_t n,
			double keep)
{
	double *e = malloc(n * sizeof(double));
	long double total = 0, acc = 0;
	uint64_t i, k = 0;

	ck_assert_ptr_nonnull(e);
	for (i = 0; i < n; i++) {
		float d = priv[i] - pub[i];

		e[i] = (double)d * d;
		total += e[i];
	}
	qsort(e, n, sizeof(double), cmp_desc);
	while (k < n && e[k] > 0 && (keep >= 1.0 || acc < keep * total))
		acc += e[k++];
	free(e);
	return k;
}

/* The names the selection check is given, a tensor per @n entries. */
static const char *const sel_names[4] = {
	"layers.0.w1", "layers.0.w2", "layers.1.w1", "layers.1.w2",
};

/* Feed @nt tensors of @n entries (@cols wide) and @taken to @chk. */
static void feed_check(struct sel_check *chk, const float *pub,
		       const float *priv, unsigned int nt, uint64_t n,
		       uint32_t cols, const uint8_t *taken)
{
	uint64_t i;

	sel_check_init(chk);
	for (i = 0; i < nt * n; i++) {
		if (i % n == 0)
			sel_check_tensor(chk, sel_names[i / n], cols);
		sel_check_add(chk, priv[i] - pub[i], taken[i]);
	}
}

/* Run the selection over @nt tensors of @n entries; fill @taken. */
static void run_select(const float *pub, const float *priv, unsigned int nt,
		       uint64_t n, double keep, uint8_t *taken,
		       struct sel_check *chk)
{
	struct sel_plan p;
	unsigned int t;
	uint64_t i;

	ck_assert_int_eq(sel_init(&p, keep), 0);
	while (sel_pass_needed(&p)) {
		for (t = 0; t < nt; t++)
			ck_assert_int_eq(sel_scan(&p, pub + t * n, priv + t * n,
						  n), 0);
		sel_end_pass(&p);
	}
	for (i = 0; i < nt * n; i++)
		taken[i] = (uint8_t)sel_take(&p, priv[i] - pub[i]);
	sel_free(&p);
	feed_check(chk, pub, priv, nt, n, C, taken);
}

static void delta_layers(float *pub, float *priv, unsigned int nt,
			 uint64_t seed)
{
	uint64_t i;

	for (i = 0; i < nt * N; i++) {
		pub[i] = 0.05f * tu_randn(&seed);
		priv[i] = pub[i];
		if (i % 5)	/* a fifth of the entries unchanged */
			priv[i] += 0.01f * tu_randn(&seed) *
				   (i % 11 == 0 ? 10.0f : 1.0f);
	}
	priv[3] = -0.0f;	/* -0 against +0 is no delta */
	pub[3] = 0.0f;
}

START_TEST(select_keep_levels)
{
	static const double keeps[] = { 0.5, 0.1, 0.9, 0.99, 0.999999, 1.0 };
	float *pub = malloc(4 * N * sizeof(float));
	float *priv = malloc(4 * N * sizeof(float));
	uint8_t *taken = malloc(4 * N);
	struct sel_check chk;
	double keep = keeps[_i];
	uint64_t i, k, nonzero = 0;
	float min_taken = INFINITY, max_left = 0;

	ck_assert(pub && priv && taken);
	delta_layers(pub, priv, 4, 99);
	run_select(pub, priv, 4, N, keep, taken, &chk);
	ck_assert_int_eq(sel_check_done(ctx, &chk, keep), 0);
	k = brute_k(pub, priv, 4 * N, keep);
	for (i = 0; i < 4 * N; i++) {
		float d = fabsf(priv[i] - pub[i]);

		nonzero += d != 0;
		if (taken[i])
			min_taken = fminf(min_taken, d);
		else
			max_left = fmaxf(max_left, d);
	}
	ck_assert_uint_eq(chk.taken, k);
	ck_assert(max_left <= min_taken);
	ck_assert(sel_check_share(&chk) >= keep * (1 - 1e-12));
	if (keep == 1.0) {
		ck_assert_uint_eq(chk.taken, nonzero);
		ck_assert(!taken[3]);
		ck_assert(sel_check_share(&chk) == 1.0);
	}
	free(pub);
	free(priv);
	free(taken);
}
END_TEST

START_TEST(select_ties_in_order)
{
	float pub[100] = { 0 }, priv[100];
	uint8_t taken[100];
	struct sel_check chk;
	int i;

	for (i = 0; i < 100; i++)
		priv[i] = i % 2 ? 1.0f : -1.0f;
	run_select(pub, priv, 1, 100, 0.5, taken, &chk);
	ck_assert_int_eq(sel_check_done(ctx, &chk, 0.5), 0);
	ck_assert_uint_eq(chk.taken, 50);
	for (i = 0; i < 100; i++)
		ck_assert_int_eq(taken[i], i < 50);
	run_select(pub, priv, 1, 100, 0.505, taken, &chk);
	ck_assert_uint_eq(chk.taken, 51);
}
END_TEST

START_TEST(select_no_delta_and_overflow)
{
	float pub[N], priv[N];
	uint8_t taken[N];
	struct sel_check chk;
	struct sel_plan p;
	int i;

	for (i = 0; i < (int)N; i++)
		pub[i] = priv[i] = (float)i;
	run_select(pub, priv, 1, N, 0.5, taken, &chk);
	ck_assert_uint_eq(chk.taken, 0);
	ck_assert(sel_check_share(&chk) == 1.0);
	ck_assert_int_eq(sel_check_done(ctx, &chk, 0.5), 0);
	priv[9] = 3e38f;
	pub[9] = -3e38f;
	ck_assert_int_eq(sel_init(&p, 0.5), 0);
	ck_assert_int_eq(sel_scan(&p, pub, priv, N), -ERANGE);
	sel_free(&p);
	ck_assert_int_eq(sel_init(&p, 0.0), -EINVAL);
	ck_assert_int_eq(sel_init(&p, 1.5), -EINVAL);
	ck_assert_int_eq(sel_init(&p, NAN), -EINVAL);
}
END_TEST

/* "layers.0.w2 row 3 col 5": entry @i of the halves select_check_fires feeds. */
static const char *half_at(char *buf, size_t len, uint64_t i)
{
	uint64_t k = i % (N / 2);

	snprintf(buf, len, "%s row %llu col %llu", sel_names[i / (N / 2)],
		 (unsigned long long)(k / C), (unsigned long long)(k % C));
	return buf;
}

/*
 * A wrong selection is fed to the check, as two tensors (the halves of one
 * layer): the named check must fire and name where it failed: the tensor,
 * row and column of the offending entry, or for the model-wide energy
 * checks, "model-wide" and the tensor with the most energy left out.
 */
START_TEST(select_check_fires)
{
	static const char *const msg[] = {
		"model-wide: energy kept", ": ranking: |d| = ",
		"model-wide: not the smallest set", ": keep 1 kept",
		": an entry with no delta was kept",
	};
	static const double keep[] = { 0.5, 0.5, 0.5, 1.0, 1.0 };
	float pub[N], priv[N];
	uint8_t taken[N];
	struct sel_check chk;
	uint64_t i, lo = 0, hi = 0, first_min = N, first_max = N;
	double missing[2] = { 0, 0 };
	char want[2][256], at[128];

	delta_layers(pub, priv, 1, 3);
	run_select(pub, priv, 2, N / 2, keep[_i], taken, &chk);
	ck_assert_int_eq(sel_check_done(ctx, &chk, keep[_i]), 0);
	/* The smallest kept entry and the largest left out. */
	for (i = 0; i < N; i++) {
		float d = fabsf(priv[i] - pub[i]);

		if (taken[i] && (!taken[lo] || d < fabsf(priv[lo] - pub[lo])))
			lo = i;
		if (!taken[i] && d > 0 &&
		    (taken[hi] || d > fabsf(priv[hi] - pub[hi])))
			hi = i;
	}
	switch (_i) {
	case 0:	/* drop the smallest kept: short of the energy */
		taken[lo] = 0;
		break;
	case 1:	/* swap it for a smaller one */
		taken[lo] = 0;
		for (i = 0; i < N; i++)
			if (!taken[i] && i != lo && priv[i] != pub[i])
				break;
		taken[i] = 1;
		break;
	case 2:	/* one more than needed */
		taken[hi] = 1;
		break;
	case 3:	/* keep 1 with one delta left out */
		taken[lo] = 0;
		break;
	case 4:	/* an entry with no delta */
		taken[0] = 1;
		ck_assert(priv[0] == pub[0]);
		break;
	}
	/* Where the check must say it failed, found here on its own. */
	for (i = 0; i < N; i++) {
		float d = fabsf(priv[i] - pub[i]);

		if (taken[i] && (first_min == N ||
				 d < fabsf(priv[first_min] - pub[first_min])))
			first_min = i;
		if (!taken[i] && d > 0 &&
		    (first_max == N ||
		     d > fabsf(priv[first_max] - pub[first_max])))
			first_max = i;
		if (!taken[i])
			missing[i / (N / 2)] += (double)d * d;
	}
	switch (_i) {
	case 0:
		snprintf(want[0], sizeof(want[0]), "most energy left out of %s (",
			 sel_names[missing[1] > missing[0]]);
		snprintf(want[1], sizeof(want[1]), "energy kept");
		break;
	case 1:
		snprintf(want[0], sizeof(want[0]), "%s: ranking",
			 half_at(at, sizeof(at), first_max));
		snprintf(want[1], sizeof(want[1]), "kept at %s",
			 half_at(at, sizeof(at), first_min));
		ck_assert_uint_eq(first_max, lo);
		break;
	case 2:
		snprintf(want[0], sizeof(want[0]), "without the smallest, at %s)",
			 half_at(at, sizeof(at), first_min));
		snprintf(want[1], sizeof(want[1]), "not the smallest");
		break;
	case 3:
		snprintf(want[0], sizeof(want[0]), "%s: keep 1 kept",
			 half_at(at, sizeof(at), first_max));
		snprintf(want[1], sizeof(want[1]), "nonzero deltas (|d| = ");
		ck_assert_uint_eq(first_max, lo);
		break;
	case 4:
		snprintf(want[0], sizeof(want[0]), "%s: an entry",
			 half_at(at, sizeof(at), 0));
		snprintf(want[1], sizeof(want[1]), "layers.0.w1 row 0 col 0");
		break;
	}
	feed_check(&chk, pub, priv, 2, N / 2, C, taken);
	tu_log_clear(&lg);
	ck_assert_int_eq(sel_check_done(ctx, &chk, keep[_i]), -EDOM);
	if (!tu_log_has(&lg, msg[_i]) || !tu_log_has(&lg, want[0]) ||
	    !tu_log_has(&lg, want[1]))
		ck_abort_msg("case %d: log lacks \"%s\", \"%s\" or \"%s\": %s",
			     _i, msg[_i], want[0], want[1], lg.buf);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("pack");
	TCase *tq = tcase_create("quant");
	TCase *ts = tcase_create("select");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tq, setup, teardown);
	tcase_add_loop_test(tq, quant_layers, 0, NKINDS);
	tcase_add_test(tq, quant_refuses_bad_input);
	tcase_add_loop_test(tq, quant_check_fires, 0, NBREAK);
	tcase_add_test(tq, ortho_values);
	suite_add_tcase(s, tq);

	tcase_add_checked_fixture(ts, setup, teardown);
	tcase_add_loop_test(ts, select_keep_levels, 0, 6);
	tcase_add_test(ts, select_ties_in_order);
	tcase_add_test(ts, select_no_delta_and_overflow);
	tcase_add_loop_test(ts, select_check_fires, 0, 5);
	suite_add_tcase(s, ts);

	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
