/* SPDX-License-Identifier: MIT */
/*
 * The Ortho selection, one rule over the whole model: rank the entries of
 * every linear tensor by |d| = |W_private - W_public| and keep the smallest
 * set that holds share @keep of the delta's energy (sum of d^2). Ties at the
 * threshold are taken in model order (tensor order, then row-major).
 * keep = 1 keeps every entry with d != 0.
 *
 * The threshold is found without sorting or holding the model in memory:
 * pass 1 histograms the energy by the top 16 bits of |d| (as float bits,
 * which order like the values), pass 2 by the low 16 bits inside the
 * bucket that holds the threshold. Then sel_take() decides each entry in
 * model order. keep = 1 needs no pass at all.
 *
 *	sel_init(&p, keep);
 *	while ((pass = sel_pass_needed(&p)) > 0) {
 *		for each linear tensor: sel_scan(&p, pub, priv, n);
 *		sel_end_pass(&p);
 *	}
 *	for each linear tensor, each entry in order: sel_take(&p, d)
 *
 * struct sel_check verifies the result independently of how it was found.
 */
#ifndef ORTHO_SELECT_H
#define ORTHO_SELECT_H

#include <stdint.h>
#include <string.h>

struct ortho_ctx;

/* A compensated (Neumaier) sum: the energy checks compare sums of many
 * small squares, so plain double accumulation would drift. */
struct sel_sum {
	double s, c;
};

static inline void sel_sum_add(struct sel_sum *a, double x)
{
	double t = a->s + x;

	if (a->s >= x || a->s <= -x)
		a->c += (a->s - t) + x;
	else
		a->c += (x - t) + a->s;
	a->s = t;
}

static inline double sel_sum_get(const struct sel_sum *a)
{
	return a->s + a->c;
}

struct sel_plan {
	double keep;
	int all;		/* keep >= 1: every nonzero delta */
	int pass;		/* 0, 1: histogram passes; 2: decided */
	uint32_t bucket;	/* high 16 bits of the threshold key */
	uint32_t key;		/* threshold: keys above it are kept */
	uint64_t ties;		/* entries with key == @key to keep */
	uint64_t ties_taken;
	struct sel_sum total;	/* the delta's energy */
	struct sel_sum above;	/* energy above the current bucket */
	uint64_t nonzero;
	struct sel_sum *hist;	/* 65536 buckets */
	uint64_t *count;
};

/* The ordering key of a delta: the bits of |d| as a float. */
static inline uint32_t sel_key(float d)
{
	uint32_t k;

	memcpy(&k, &d, 4);
	return k & 0x7fffffffu;
}

/**
 * sel_init() - start a selection keeping share @keep (0 < keep <= 1).
 *
 * Return: 0, -EINVAL for keep out of range, -ENOMEM.
 */
int sel_init(struct sel_plan *p, double keep);
void sel_free(struct sel_plan *p);

/* Return: 1 when sel_scan() must see every tensor (again), 0 when done. */
int sel_pass_needed(const struct sel_plan *p);

/**
 * sel_scan() - feed one tensor to the current pass.
 * @pub: public weights. @priv: private weights. @n: entries.
 *
 * Return: 0, or -ERANGE when a delta overflows float.
 */
int sel_scan(struct sel_plan *p, const float *pub, const float *priv,
	     uint64_t n);

/* Close the current pass (find the bucket, then the key and ties). */
void sel_end_pass(struct sel_plan *p);

/* Return: 1 to keep the entry with delta @d, in model order. */
static inline int sel_take(struct sel_plan *p, float d)
{
	uint32_t k = sel_key(d);

	if (k == 0)
		return 0;
	if (p->all || k > p->key)
		return 1;
	if (k == p->key && p->ties_taken < p->ties) {
		p->ties_taken++;
		return 1;
	}
	return 0;
}

/* Where an entry is, for the check's messages. */
struct sel_at {
	const char *tensor;	/* NULL: no tensor named */
	uint64_t index;		/* row-major in the tensor */
	uint32_t cols;
};

/*
 * The independent check of a selection, fed every entry's decision in
 * model order; sel_check_tensor() names the tensor the next entries
 * belong to, so that a failed check can name where it failed.
 */
struct sel_check {
	struct sel_sum total, kept;
	uint64_t nonzero, taken;
	uint32_t min_taken;	/* smallest key kept */
	uint32_t max_left;	/* largest key left out */
	struct sel_at min_taken_at, max_left_at;

	struct sel_at cur;	/* the next entry */
	struct sel_sum missing;	/* energy left out of the current tensor */
	double worst_missing;	/* most left out of one earlier tensor */
	const char *worst_tensor;
};

static inline void sel_check_init(struct sel_check *c)
{
	memset(c, 0, sizeof(*c));
	c->min_taken = UINT32_MAX;
}

/*
 * The next entries fed belong to tensor @name (@cols columns), from its
 * first entry on. @name must stay valid until sel_check_done().
 */
static inline void sel_check_tensor(struct sel_check *c, const char *name,
				    uint32_t cols)
{
	double m = sel_sum_get(&c->missing);

	if (m > c->worst_missing) {
		c->worst_missing = m;
		c->worst_tensor = c->cur.tensor;
	}
	memset(&c->missing, 0, sizeof(c->missing));
	c->cur.tensor = name;
	c->cur.index = 0;
	c->cur.cols = cols;
}

static inline void sel_check_add(struct sel_check *c, float d, int taken)
{
	uint32_t k = sel_key(d);
	double e = (double)d * d;

	if (k) {
		c->nonzero++;
		sel_sum_add(&c->total, e);
	}
	if (taken) {
		c->taken++;
		sel_sum_add(&c->kept, e);
		if (k < c->min_taken) {
			c->min_taken = k;
			c->min_taken_at = c->cur;
		}
	} else if (k) {
		sel_sum_add(&c->missing, e);
		if (k > c->max_left) {
			c->max_left = k;
			c->max_left_at = c->cur;
		}
	}
	c->cur.index++;
}

/* Return: the share of the energy kept (1 when there is no delta). */
double sel_check_share(const struct sel_check *c);

/**
 * sel_check_done() - the hard selection check: energy kept >= @keep
 * (up to summation rounding), nothing left out that ranks above something
 * kept, every nonzero delta kept when @keep is 1, no zero delta kept, and
 * no smaller set would do.
 * @ctx: for the message naming the check and the tensor, row and column of
 * the offending entry; the energy checks are model-wide and name the
 * tensor with the most energy left out, or the smallest entry kept.
 *
 * Return: 0, or -EDOM.
 */
int sel_check_done(struct ortho_ctx *ctx, const struct sel_check *c,
		   double keep);

#endif
