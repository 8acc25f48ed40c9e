// SPDX-License-Identifier: MIT
/*
 * The Ortho selection (select.h): a two-pass histogram threshold over the
 * whole model, and its independent check.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "select.h"

#define SEL_BUCKETS 65536u
/* Relative rounding allowed between two compensated sums of one energy. */
#define SEL_SLACK 1e-12
/* "<tensor name> row N col N" */
#define SEL_AT_MAX 128

int sel_init(struct sel_plan *p, double keep)
{
	memset(p, 0, sizeof(*p));
	if (!(keep > 0.0 && keep <= 1.0))
		return -EINVAL;
	p->keep = keep;
	p->all = keep >= 1.0;
	p->pass = p->all ? 2 : 0;
	if (p->all)
		return 0;
	p->hist = calloc(SEL_BUCKETS, sizeof(*p->hist));
	p->count = calloc(SEL_BUCKETS, sizeof(*p->count));
	if (!p->hist || !p->count) {
		sel_free(p);
		return -ENOMEM;
	}
	return 0;
}

void sel_free(struct sel_plan *p)
{
	free(p->hist);
	free(p->count);
	p->hist = NULL;
	p->count = NULL;
}

int sel_pass_needed(const struct sel_plan *p)
{
	return p->pass < 2;
}

int sel_scan(struct sel_plan *p, const float *pub, const float *priv,
	     uint64_t n)
{
	uint64_t i;

	for (i = 0; i < n; i++) {
		float d = priv[i] - pub[i];
		uint32_t k = sel_key(d), b;

		if (!isfinite(d))
			return -ERANGE;
		if (!k)
			continue;
		if (p->pass == 0) {
			b = k >> 16;
			sel_sum_add(&p->total, (double)d * d);
			p->nonzero++;
		} else if (k >> 16 == p->bucket) {
			b = k & 0xffff;
		} else {
			continue;
		}
		sel_sum_add(&p->hist[b], (double)d * d);
		p->count[b]++;
	}
	return 0;
}

static double key_energy(uint32_t key)
{
	float v;

	memcpy(&v, &key, 4);
	return (double)v * v;
}

/* Pass 0 done: the bucket where the running energy reaches the target. */
static void end_bucket_pass(struct sel_plan *p, double target)
{
	uint32_t b = SEL_BUCKETS;

	if (!p->nonzero)
		goto all;
	while (b--) {
		if (!p->count[b])
			continue;
		if (sel_sum_get(&p->above) + sel_sum_get(&p->hist[b]) >=
		    target) {
			p->bucket = b;
			memset(p->hist, 0, SEL_BUCKETS * sizeof(*p->hist));
			memset(p->count, 0, SEL_BUCKETS * sizeof(*p->count));
			p->pass = 1;
			return;
		}
		sel_sum_add(&p->above, sel_sum_get(&p->hist[b]));
	}
all:	/* rounding kept the target out of reach: the whole delta it is */
	p->all = 1;
	p->pass = 2;
}

/* The fewest entries of @key that bring @above up to @target. */
static uint64_t ties_needed(double above, double target, double v,
			    uint64_t count)
{
	double m0 = ceil((target - above) / v);
	uint64_t m = m0 < 1.0 ? 1 : m0 > (double)count ? count : (uint64_t)m0;

	while (m > 1 && above + (double)(m - 1) * v >= target)
		m--;
	while (m < count && above + (double)m * v < target)
		m++;
	return m;
}

/* Pass 1 done: the key inside the bucket, and how many of its ties. */
static void end_key_pass(struct sel_plan *p, double target)
{
	uint32_t lo = SEL_BUCKETS, last = SEL_BUCKETS;

	while (lo--) {
		if (!p->count[lo])
			continue;
		last = lo;
		if (sel_sum_get(&p->above) + sel_sum_get(&p->hist[lo]) >=
		    target)
			break;
		sel_sum_add(&p->above, sel_sum_get(&p->hist[lo]));
	}
	if (lo == UINT32_MAX) {	/* rounding: take the whole bucket */
		lo = last;
		p->key = p->bucket << 16 | lo;
		p->ties = p->count[lo];
	} else {
		p->key = p->bucket << 16 | lo;
		p->ties = ties_needed(sel_sum_get(&p->above), target,
				      key_energy(p->key), p->count[lo]);
	}
	p->pass = 2;
}

void sel_end_pass(struct sel_plan *p)
{
	double target = p->keep * sel_sum_get(&p->total);

	if (p->pass == 0)
		end_bucket_pass(p, target);
	else if (p->pass == 1)
		end_key_pass(p, target);
	p->ties_taken = 0;
}

double sel_check_share(const struct sel_check *c)
{
	double total = sel_sum_get(&c->total);

	return total > 0.0 ? sel_sum_get(&c->kept) / total : 1.0;
}

static float key_value(uint32_t key)
{
	float v;

	memcpy(&v, &key, 4);
	return v;
}

/* "layers.0.wq row 3 col 5" into @buf. */
static const char *at_str(char *buf, size_t len, const struct sel_at *a)
{
	if (!a->tensor)
		snprintf(buf, len, "an unnamed tensor, entry %llu",
			 (unsigned long long)a->index);
	else if (!a->cols)
		snprintf(buf, len, "%s entry %llu", a->tensor,
			 (unsigned long long)a->index);
	else
		snprintf(buf, len, "%s row %llu col %llu", a->tensor,
			 (unsigned long long)(a->index / a->cols),
			 (unsigned long long)(a->index % a->cols));
	return buf;
}

/* The tensor with the most energy left out, current one included. */
static const char *worst_tensor(const struct sel_check *c, double *missing)
{
	double m = sel_sum_get(&c->missing);

	if (m > c->worst_missing) {
		*missing = m;
		return c->cur.tensor ? c->cur.tensor : "an unnamed tensor";
	}
	*missing = c->worst_missing;
	return c->worst_tensor ? c->worst_tensor : "an unnamed tensor";
}

int sel_check_done(struct ortho_ctx *ctx, const struct sel_check *c,
		   double keep)
{
	double total = sel_sum_get(&c->total), kept = sel_sum_get(&c->kept);
	char a[SEL_AT_MAX], b[SEL_AT_MAX];
	const char *worst;
	double missing;

	if (c->taken && c->min_taken == 0) {
		olog_err(ctx, "Ortho selection check failed: %s: an entry with no delta was kept",
			 at_str(a, sizeof(a), &c->min_taken_at));
		return -EDOM;
	}
	if (c->taken && c->max_left > c->min_taken) {
		olog_err(ctx, "Ortho selection check failed: %s: ranking: |d| = %.9g left out while |d| = %.9g kept at %s",
			 at_str(a, sizeof(a), &c->max_left_at),
			 key_value(c->max_left), key_value(c->min_taken),
			 at_str(b, sizeof(b), &c->min_taken_at));
		return -EDOM;
	}
	if (keep >= 1.0 && c->taken != c->nonzero) {
		olog_err(ctx, "Ortho selection check failed: %s: keep 1 kept %llu of %llu nonzero deltas (|d| = %.9g left out)",
			 at_str(a, sizeof(a), &c->max_left_at),
			 (unsigned long long)c->taken,
			 (unsigned long long)c->nonzero,
			 key_value(c->max_left));
		return -EDOM;
	}
	if (total > 0.0 && !(kept >= keep * total * (1.0 - SEL_SLACK))) {
		worst = worst_tensor(c, &missing);
		olog_err(ctx, "Ortho selection check failed: model-wide: energy kept %.12f < %.12f; most energy left out of %s (%.12f of the delta's)",
			 kept / total, keep, worst, missing / total);
		return -EDOM;
	}
	if (keep < 1.0 && c->taken &&
	    kept - key_energy(c->min_taken) >=
		    keep * total * (1.0 + SEL_SLACK)) {
		olog_err(ctx, "Ortho selection check failed: model-wide: not the smallest set (%llu entries hold more than %.12f without the smallest, at %s)",
			 (unsigned long long)c->taken, keep,
			 at_str(a, sizeof(a), &c->min_taken_at));
		return -EDOM;
	}
	return 0;
}
