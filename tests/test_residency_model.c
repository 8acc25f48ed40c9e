// SPDX-License-Identifier: MIT
/*
 * The model runtime under an Ortho budget (lib/model_residency.c): shards
 * totalling four times the budget, a budget smaller than one layer's shard
 * (per-tensor units), prefetch, introspection, eviction and close wiping
 * every slot and staging buffer, a tampered chunk in the middle of a
 * stream and a file truncated under an open model (the model goes on with
 * Base), the pread path giving the same bytes, concurrent forward passes
 * from several threads, the EVICTING state while a shard is wiped, and two
 * models in one context sharing its budget.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "residency.h"
#include "residency_fixture.h"
#include "stream.h"

#define NL 9u

static struct rf_model g;
static struct tu_log lg;

static void setup(void)
{
	tu_log_clear(&lg);
}

/* Every op of every layer, @passes times in forward order, checked. */
static void forward(struct ortho_model *mo, unsigned int passes,
		    int prefetch, uint64_t budget)
{
	struct res_stats st;
	unsigned int p, l, k;
	uint64_t seed = 99;

	for (p = 0; p < passes; p++)
		for (l = 0; l < g.nl; l++) {
			if (prefetch)
				ck_assert_int_eq(ortho_model_prefetch(mo, l,
								      g.nl), 0);
			for (k = 0; k < RF_NT; k++) {
				ck_assert_msg(rf_op(mo, &g, l, k, 1, &seed),
					      "layer %u tensor %u wrong", l, k);
				residency_get_stats(mo->res, &st);
				ck_assert_uint_le(st.used, budget);
			}
		}
}

static uint64_t resident_sum(struct ortho_model *mo)
{
	struct ortho_shard_info si;
	uint64_t sum = 0;
	unsigned int l;

	for (l = 0; l < g.nl; l++) {
		rf_info(mo, l, &si);
		sum += si.bytes;
	}
	return sum;
}

struct lscan {
	unsigned int l, hits;
};

static void lscan_fn(void *user, const void *p, size_t len)
{
	struct lscan *s = user;

	if (rf_has_canary(p, len, s->l))
		s->hits++;
}

/* How many slots hold layer @l's plaintext. */
static unsigned int canary_slots(struct ortho_model *mo, unsigned int l)
{
	struct lscan s = { l, 0 };

	residency_for_each_slot(mo->res, lscan_fn, &s);
	return s.hits;
}

static void pressure(uint64_t budget, unsigned int want_units)
{
	struct ortho_ctx *ctx = rf_ctx(budget, &lg);
	struct ortho_model *mo = rf_open(ctx, &g, 0, 0);
	struct res_stats st;

	ck_assert_uint_eq(mo->nunits, want_units);
	forward(mo, 2, 1, budget);
	forward(mo, 1, 0, budget);
	residency_get_stats(mo->res, &st);
	ck_assert_uint_le(st.peak, budget);
	ck_assert_uint_gt(st.evictions, 0);
	ck_assert_uint_le(resident_sum(mo), budget);
	ortho_model_close(mo);
	ortho_ctx_free(ctx);
}

START_TEST(test_pressure_whole_shards)
{
	uint64_t budget = g.total / 4;

	ck_assert_uint_le(g.shard_bytes[0], budget / 2);
	pressure(budget, NL);
}
END_TEST

START_TEST(test_pressure_per_tensor)
{
	/* Less than one layer's shard: a tensor at a time. */
	uint64_t budget = g.shard_bytes[0] * 3 / 4;

	pressure(budget, NL * RF_NT);
}
END_TEST

START_TEST(test_prefetch_and_info)
{
	uint64_t budget = g.shard_bytes[0] * 2 + 65536;
	struct ortho_ctx *ctx = rf_ctx(budget, &lg);
	struct ortho_model *mo = rf_open(ctx, &g, 0, 0);
	struct ortho_shard_info si;
	struct res_stats st;
	uint64_t seed = 1, now = (uint64_t)time(NULL) * 1000000000ull;
	unsigned int l, k;

	/* Open prefetched the first layers, as far as the budget allows. */
	residency_wait_idle(mo->res);
	for (l = 0; l < NL; l++) {
		rf_info(mo, l, &si);
		if (l < 2) {
			ck_assert_uint_eq(si.state, ORTHO_SHARD_RESIDENT);
			ck_assert_uint_eq(si.bytes, si.plaintext_len);
			ck_assert_str_eq(si.device, "cpu");
			ck_assert_uint_le(si.since_ns, now + 2000000000ull);
			ck_assert_uint_ge(si.since_ns, now - 60000000000ull);
		} else {
			ck_assert_uint_eq(si.state, ORTHO_SHARD_ABSENT);
			ck_assert_uint_eq(si.bytes, 0);
			ck_assert_str_eq(si.device, "");
			ck_assert_uint_eq(si.since_ns, 0);
		}
	}
	residency_get_stats(mo->res, &st);
	ck_assert_uint_eq(st.loads, 2);
	ck_assert_uint_eq(st.prefetched, 2);
	for (k = 0; k < RF_NT; k++)
		ck_assert(rf_op(mo, &g, 0, k, 1, &seed));
	residency_get_stats(mo->res, &st);
	ck_assert_uint_eq(st.loads, 2);	/* no wait: it was there */

	/* At layer 1 the next one loads; layer 0 is needed last. */
	ck_assert_int_eq(ortho_model_prefetch(mo, 1, NL), 0);
	residency_wait_idle(mo->res);
	rf_info(mo, 0, &si);
	ck_assert_uint_eq(si.state, ORTHO_SHARD_ABSENT);
	for (l = 1; l < 3; l++) {
		rf_info(mo, l, &si);
		ck_assert_uint_eq(si.state, ORTHO_SHARD_RESIDENT);
	}
	ck_assert_int_eq(ortho_model_prefetch(mo, NL, 1), -EINVAL);
	ortho_model_close(mo);
	ortho_ctx_free(ctx);
}
END_TEST

struct scan {
	unsigned int slots, dirty, canary;
};

static void scan_fn(void *user, const void *p, size_t len)
{
	struct scan *s = user;
	unsigned int l;

	s->slots++;
	if (!rf_all_zero(p, len))
		s->dirty++;
	for (l = 0; l < NL; l++)
		if (rf_has_canary(p, len, l))
			s->canary++;
}

static struct scan unmapped;

static void unmap_hook(const void *p, size_t len)
{
	scan_fn(&unmapped, p, len);
}

START_TEST(test_wiped_after_eviction_and_close)
{
	uint64_t budget = g.total / 4;
	struct ortho_ctx *ctx = rf_ctx(budget, &lg);
	struct ortho_model *mo = rf_open(ctx, &g, 0, 0);
	struct scan s = { 0 }, st = { 0 }, before = { 0 };
	struct ortho_shard_info si;
	unsigned int l, unit;
	void *mem;

	forward(mo, 1, 1, budget);
	residency_wait_idle(mo->res);
	/* The scan finds plaintext where there is some: layer 0, held. */
	unit = mo->shards[rf_shard_index(mo, 0)].unit0;
	ck_assert_uint_eq(residency_pin(mo->res, &unit, 1, &mem), 1);
	rf_info(mo, 0, &si);
	ck_assert_uint_eq(si.state, ORTHO_SHARD_RESIDENT);
	ck_assert_uint_gt(canary_slots(mo, 0), 0);
	residency_unpin(mo->res, &unit, 1, &mem);
	residency_for_each_slot(mo->res, scan_fn, &before);
	ck_assert_uint_gt(before.canary, 0);
	for (l = 0; l < NL; l++)
		shard_unload(mo, &mo->shards[rf_shard_index(mo, l)],
			     ORTHO_SHARD_ABSENT);
	ck_assert_uint_eq(resident_sum(mo), 0);
	residency_for_each_slot(mo->res, scan_fn, &s);
	ck_assert_uint_gt(s.slots, 0);
	ck_assert_uint_eq(s.canary, 0);
	ck_assert_uint_eq(s.dirty, 0);
	stream_for_each_buffer(mo->stream, scan_fn, &st);
	ck_assert_uint_gt(st.slots, 0);
	ck_assert_uint_eq(st.dirty, 0);

	/* Resident again, then closed: everything unmapped is zero. */
	forward(mo, 1, 0, budget);
	ck_assert_uint_gt(canary_slots(mo, NL - 1), 0);
	memset(&unmapped, 0, sizeof(unmapped));
	ortho_test_unmap_hook = unmap_hook;
	ortho_model_close(mo);
	ortho_test_unmap_hook = NULL;
	ck_assert_uint_gt(unmapped.slots, 1);
	ck_assert_uint_eq(unmapped.canary, 0);
	ck_assert_uint_eq(unmapped.dirty, 0);
	ortho_ctx_free(ctx);
}
END_TEST

static char *copy_of(const struct rf_model *m, unsigned int l, char **dst_dir)
{
	char *cmd, *p;

	*dst_dir = tu_mkdtemp("rescopy");
	ck_assert_ptr_nonnull(*dst_dir);
	ck_assert_int_ge(asprintf(&cmd, "cp -a '%s/.' '%s/'", m->dir,
				  *dst_dir), 0);
	ck_assert_int_eq(system(cmd), 0);
	free(cmd);
	ck_assert_int_ge(asprintf(&p, "%s/ortho/%s", *dst_dir,
				  strrchr(m->shard_path[l], '/') + 1), 0);
	return p;
}

static void flip(const char *path, uint64_t off)
{
	FILE *f = fopen(path, "r+b");
	int c;

	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(fseek(f, (long)off, SEEK_SET), 0);
	c = fgetc(f);
	ck_assert_int_eq(fseek(f, (long)off, SEEK_SET), 0);
	fputc(c ^ 0x20, f);
	fclose(f);
}

/* Layer 1 is FAILED with @err and runs on Base; the others are fine. */
static void check_layer1_failed(struct ortho_model *mo, int err,
				uint32_t bad_chunk)
{
	struct ortho_shard_info si;
	uint64_t seed = 3;
	unsigned int k;

	for (k = 0; k < RF_NT; k++)
		ck_assert(rf_op(mo, &g, 1, k, 0, &seed));
	rf_info(mo, 1, &si);
	ck_assert_uint_eq(si.state, ORTHO_SHARD_FAILED);
	ck_assert_int_eq(si.error, err);
	ck_assert_uint_eq(si.bad_chunk, bad_chunk);
	ck_assert_uint_eq(si.bytes, 0);
	ck_assert_str_eq(si.device, "");
	/* Nothing of it is left in any slot. */
	ck_assert_uint_eq(canary_slots(mo, 1), 0);
	for (k = 0; k < RF_NT; k++) {
		ck_assert(rf_op(mo, &g, 0, k, 1, &seed));
		ck_assert(rf_op(mo, &g, 2, k, 1, &seed));
	}
}

/* A tampered chunk in the middle of layer 1's shard, whole or per tensor. */
static void tampered(uint64_t budget, unsigned int chunk)
{
	struct ortho_ctx *ctx = rf_ctx(budget, &lg);
	struct rf_model c = g;
	struct ortho_model *mo;
	uint64_t seed = 4;
	char *dir, *p;
	unsigned int k;

	p = copy_of(&g, 1, &dir);
	flip(p, g.data_offset[1] + (uint64_t)chunk * OSH_CHUNK_SIZE + 4321);
	c.dir = dir;
	mo = rf_open(ctx, &c, 0, 0);
	/* wa (chunks 0-1) first: per tensor it loads before wc fails. */
	for (k = 0; k < RF_NT; k++)
		rf_op(mo, &g, 1, k, 1, &seed);
	check_layer1_failed(mo, -EBADMSG, chunk);
	ck_assert(tu_log_has(&lg, "failed authentication"));
	ortho_model_close(mo);
	/* Strict mode checks every chunk at open. */
	ck_assert_ptr_null(rf_open(ctx, &c, ORTHO_MODEL_STRICT, -EBADMSG));
	ortho_ctx_free(ctx);
	tu_rmrf(dir);
	free(dir);
	free(p);
}

START_TEST(test_tampered_whole_shard)
{
	tampered(g.total / 4, 1);
}
END_TEST

START_TEST(test_tampered_per_tensor)
{
	tampered(g.shard_bytes[0] * 3 / 4, 2);
}
END_TEST

START_TEST(test_truncated_under_open_model)
{
	struct ortho_ctx *ctx = rf_ctx(g.total / 4, &lg);
	struct rf_model c = g;
	struct ortho_model *mo;
	char *dir, *p;

	p = copy_of(&g, 1, &dir);
	c.dir = dir;
	mo = rf_open(ctx, &c, 0, 0);
	residency_wait_idle(mo->res);
	shard_unload(mo, &mo->shards[rf_shard_index(mo, 1)],
		     ORTHO_SHARD_ABSENT);
	ck_assert_int_eq(truncate(p, (off_t)(g.data_offset[1] +
					     OSH_CHUNK_SIZE + 100)), 0);
	/* The reader sees it at open (the stream tests cover mid-read). */
	check_layer1_failed(mo, -EBADMSG, UINT32_MAX);
	ck_assert(tu_log_has(&lg, "truncated"));
	ortho_model_close(mo);
	ortho_ctx_free(ctx);
	tu_rmrf(dir);
	free(dir);
	free(p);
}
END_TEST

/* Every op's output, in order, with the stream as ORTHO_STREAM says. */
static float *outputs(uint64_t budget, const char *env, size_t *n)
{
	struct ortho_ctx *ctx = rf_ctx(budget, &lg);
	struct ortho_model *mo;
	struct stream_info si;
	struct ortho_tensor *ot;
	float *all, *x;
	uint64_t seed = 8;
	unsigned int l, k;
	size_t off = 0;

	if (env)
		setenv("ORTHO_STREAM", env, 1);
	mo = rf_open(ctx, &g, 0, 0);
	unsetenv("ORTHO_STREAM");
	all = malloc((size_t)NL * RF_NT * 512 * sizeof(float));
	x = malloc(1024 * sizeof(float));
	ck_assert(all && x);
	for (l = 0; l < NL; l++)
		for (k = 0; k < RF_NT; k++) {
			const struct rf_tensor *t = &g.t[l][k];
			uint32_t i;

			for (i = 0; i < t->cols; i++)
				x[i] = tu_randf(&seed);
			ck_assert_int_eq(ortho_model_find_tensor(mo, t->name,
								 &ot), 0);
			ck_assert_int_eq(ortho_linear(mo, ot, x, all + off, 1),
					 0);
			ck_assert(rf_check(t, x, all + off, 1));
			off += t->rows;
		}
	stream_get_info(mo->stream, &si);
	if (env)
		ck_assert_int_eq(si.uring, 0);
	ortho_model_close(mo);
	ortho_ctx_free(ctx);
	free(x);
	*n = off;
	return all;
}

START_TEST(test_pread_same_results)
{
	uint64_t budgets[] = { 0, g.shard_bytes[0] * 3 / 4 };
	unsigned int i;
	size_t n1, n2;

	for (i = 0; i < 2; i++) {
		float *a = outputs(budgets[i], NULL, &n1);
		float *b = outputs(budgets[i], "pread", &n2);

		ck_assert_uint_eq(n1, n2);
		ck_assert_mem_eq(a, b, n1 * sizeof(float));
		free(a);
		free(b);
	}
}
END_TEST

struct conc {
	struct ortho_model *mo;
	uint64_t seed;
	unsigned int fails;
};

static void *conc_fn(void *arg)
{
	struct conc *c = arg;
	unsigned int it, l;

	for (it = 0; it < 40; it++) {
		l = (unsigned int)(tu_rand(&c->seed) % NL);
		if (it % 3 == 0)
			ortho_model_prefetch(c->mo, l, NL);
		if (!rf_op(c->mo, &g, l, (unsigned int)(tu_rand(&c->seed) %
							RF_NT), 1, &c->seed))
			c->fails++;
	}
	return NULL;
}

static void concurrent(uint64_t budget)
{
	struct ortho_ctx *ctx = rf_ctx(budget, &lg);
	struct ortho_model *mo = rf_open(ctx, &g, 0, 0);
	struct conc c[4];
	struct res_stats st;
	pthread_t th[4];
	unsigned int i;

	for (i = 0; i < 4; i++) {
		c[i] = (struct conc){ .mo = mo, .seed = 500 + i };
		ck_assert_int_eq(pthread_create(&th[i], NULL, conc_fn, &c[i]),
				 0);
	}
	for (i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		ck_assert_uint_eq(c[i].fails, 0);
	}
	residency_get_stats(mo->res, &st);
	if (budget)
		ck_assert_uint_le(st.peak, budget);
	ortho_model_close(mo);
	ortho_ctx_free(ctx);
}

START_TEST(test_concurrent_passes)
{
	concurrent(g.total / 4);
	concurrent(g.shard_bytes[0] * 3 / 4);
	concurrent(0);
}
END_TEST

START_TEST(test_drop_under_budget)
{
	struct ortho_ctx *ctx = rf_ctx(g.total / 4, &lg);
	struct ortho_model *mo = rf_open(ctx, &g, 0, 0);
	struct ortho_shard_info si;
	struct res_stats a, b;
	uint64_t seed = 12;
	unsigned int k;

	residency_wait_idle(mo->res);
	rf_info(mo, 0, &si);
	ck_assert_uint_eq(si.state, ORTHO_SHARD_RESIDENT);
	ck_assert_uint_gt(canary_slots(mo, 0), 0);
	ck_assert_int_eq(ortho_model_drop_shard(mo, si.id), 0);
	rf_info(mo, 0, &si);
	ck_assert_uint_eq(si.state, ORTHO_SHARD_DROPPED);
	ck_assert_uint_eq(si.bytes, 0);
	ck_assert_uint_eq(canary_slots(mo, 0), 0);
	/* An absent shard drops too, and never comes back. */
	rf_info(mo, 5, &si);
	ck_assert_uint_eq(si.state, ORTHO_SHARD_ABSENT);
	ck_assert_int_eq(ortho_model_drop_shard(mo, si.id), 0);
	ck_assert_int_eq(ortho_model_drop_shard(mo, si.id), -EALREADY);
	residency_get_stats(mo->res, &a);
	for (k = 0; k < RF_NT; k++) {
		ck_assert(rf_op(mo, &g, 0, k, 0, &seed));
		ck_assert(rf_op(mo, &g, 5, k, 0, &seed));
		ck_assert(rf_op(mo, &g, 1, k, 1, &seed));
	}
	residency_get_stats(mo->res, &b);
	rf_info(mo, 5, &si);
	ck_assert_uint_eq(si.state, ORTHO_SHARD_DROPPED);
	ck_assert_uint_le(b.loads - a.loads, 1);
	ortho_model_close(mo);
	ortho_ctx_free(ctx);
}
END_TEST

/* What an eviction's hook saw of the shard, before its slot was wiped. */
static struct {
	struct ortho_model *mo;
	unsigned int calls, canary;
	struct ortho_shard_info si;
} ev;

static void evict_hook(void *owner, unsigned int u)
{
	struct ortho_model *mo = owner;

	if (mo != ev.mo)
		return;
	ev.calls++;
	memset(&ev.si, 0, sizeof(ev.si));
	ev.si.sz = sizeof(ev.si);
	ortho_shard_info_get(mo, mo->units[u].shard, &ev.si);
	ev.canary = canary_slots(mo, ev.si.layer);
}

/* Evict unit @u of @mo, recording what the hook saw. */
static void evict_watched(struct ortho_model *mo, unsigned int u)
{
	memset(&ev, 0, sizeof(ev));
	ev.mo = mo;
	residency_test_evict_hook = evict_hook;
	ck_assert_int_eq(residency_evict(mo->res, u), 0);
	residency_test_evict_hook = NULL;
	ck_assert_uint_eq(ev.calls, 1);
}

/* The unit of layer @l's shard holding tensor @name, per-tensor units. */
static unsigned int unit_of(struct ortho_model *mo, unsigned int l,
			    const char *suffix)
{
	struct model_shard *s = &mo->shards[rf_shard_index(mo, l)];
	unsigned int k;
	char name[32];

	snprintf(name, sizeof(name), "layers.%u.%s", l, suffix);
	for (k = 0; k < s->nunits; k++) {
		struct model_unit *u = &mo->units[s->unit0 + k];

		if (u->entry >= 0 && !strcmp(s->dir[u->entry].e.name, name))
			return s->unit0 + k;
	}
	ck_abort_msg("no unit for %s", name);
	return 0;
}

START_TEST(test_evicting_state)
{
	struct ortho_ctx *ctx = rf_ctx(g.total / 4, &lg);
	struct ortho_model *mo = rf_open(ctx, &g, 0, 0);
	struct ortho_shard_info si, before;
	uint64_t seed = 21;

	/* A whole shard: EVICTING, bytes still there, until it is wiped. */
	residency_wait_idle(mo->res);
	rf_info(mo, 0, &si);
	ck_assert_uint_eq(si.state, ORTHO_SHARD_RESIDENT);
	evict_watched(mo, mo->shards[rf_shard_index(mo, 0)].unit0);
	ck_assert_uint_eq(ev.si.layer, 0);
	ck_assert_uint_eq(ev.si.state, ORTHO_SHARD_EVICTING);
	ck_assert_uint_eq(ev.si.bytes, si.plaintext_len);
	ck_assert_str_eq(ev.si.device, "cpu");
	ck_assert_uint_gt(ev.canary, 0);
	rf_info(mo, 0, &si);
	ck_assert_uint_eq(si.state, ORTHO_SHARD_ABSENT);
	ck_assert_uint_eq(si.bytes, 0);
	ck_assert_uint_eq(canary_slots(mo, 0), 0);
	ck_assert(rf_op(mo, &g, 0, 0, 1, &seed));
	ortho_model_close(mo);
	ortho_ctx_free(ctx);

	/* One tensor of a shard: EVICTING, then RESIDENT with the rest. */
	ctx = rf_ctx(g.shard_bytes[0] * 3 / 4, &lg);
	mo = rf_open(ctx, &g, 0, 0);
	residency_wait_idle(mo->res);
	ck_assert(rf_op(mo, &g, 0, 0, 1, &seed));
	ck_assert(rf_op(mo, &g, 0, 1, 1, &seed));
	rf_info(mo, 0, &before);
	ck_assert_uint_eq(before.state, ORTHO_SHARD_RESIDENT);
	evict_watched(mo, unit_of(mo, 0, "wb"));
	ck_assert_uint_eq(ev.si.state, ORTHO_SHARD_EVICTING);
	ck_assert_uint_eq(ev.si.bytes, before.bytes);
	rf_info(mo, 0, &si);
	ck_assert_uint_eq(si.state, ORTHO_SHARD_RESIDENT);
	ck_assert_uint_gt(si.bytes, 0);
	ck_assert_uint_lt(si.bytes, before.bytes);
	ck_assert_uint_eq(si.since_ns, before.since_ns);
	ck_assert(rf_op(mo, &g, 0, 1, 1, &seed));
	ortho_model_close(mo);
	ortho_ctx_free(ctx);
}
END_TEST

/*
 * Both models at rest (their prefetch threads idle): resident bytes of
 * both, through the API, in any state, and the context's slot bytes
 * (mapped or reserved) now and at their peak, are within @budget.
 */
static void two_within(struct ortho_model **mo, uint64_t budget)
{
	struct res_stats a, b;

	residency_wait_idle(mo[0]->res);
	residency_wait_idle(mo[1]->res);
	ck_assert_uint_le(resident_sum(mo[0]) + resident_sum(mo[1]), budget);
	residency_get_stats(mo[0]->res, &a);
	residency_get_stats(mo[1]->res, &b);
	ck_assert_uint_eq(a.shared_used, b.shared_used);
	ck_assert_uint_eq(a.shared_used, a.used + b.used);
	ck_assert_uint_le(a.shared_used, budget);
	ck_assert_uint_le(a.shared_peak, budget);
}

/* The packed model opened twice in one context under @budget. */
static struct ortho_ctx *two_open(uint64_t budget, struct ortho_model **mo)
{
	struct ortho_ctx *ctx = rf_ctx(budget, &lg);
	uint64_t seed = 31, had;

	ck_assert_uint_lt(budget, 2 * g.total);
	mo[0] = rf_open(ctx, &g, 0, 0);
	residency_wait_idle(mo[0]->res);
	had = resident_sum(mo[0]);
	ck_assert_uint_gt(had, 0);
	mo[1] = rf_open(ctx, &g, 0, 0);
	/* One stream (decrypt workers) for both. */
	ck_assert_ptr_eq(mo[0]->stream, mo[1]->stream);
	two_within(mo, budget);
	/*
	 * The first filled the budget with its next layers; the second's
	 * prefetch leaves them alone, its op does not.
	 */
	ck_assert_uint_eq(resident_sum(mo[1]), 0);
	ck_assert(rf_op(mo[1], &g, 0, 0, 1, &seed));
	ck_assert_uint_lt(resident_sum(mo[0]), had);
	ck_assert_uint_gt(resident_sum(mo[1]), 0);
	two_within(mo, budget);
	return ctx;
}

static void two_close(struct ortho_ctx *ctx, struct ortho_model **mo)
{
	uint64_t seed = 32;
	unsigned int k;

	/* The second goes on alone, on the stream they shared. */
	ortho_model_close(mo[0]);
	for (k = 0; k < RF_NT; k++)
		ck_assert(rf_op(mo[1], &g, NL - 1, k, 1, &seed));
	ortho_model_close(mo[1]);
	ortho_ctx_free(ctx);
}

START_TEST(test_two_models_interleaved)
{
	uint64_t budgets[] = { g.total / 4, g.shard_bytes[0] * 3 / 4 };
	struct ortho_model *mo[2];
	struct ortho_ctx *ctx;
	unsigned int b, n, k, i, at[2];
	struct res_stats st;
	uint64_t seed = 33;

	for (b = 0; b < 2; b++) {
		ctx = two_open(budgets[b], mo);
		/* Two forward passes each, four layers apart, op by op. */
		for (n = 0; n < 2 * NL; n++) {
			for (i = 0; i < 2; i++) {
				at[i] = (n + i * 4) % NL;
				ck_assert_int_eq(ortho_model_prefetch(mo[i],
								      at[i],
								      NL), 0);
			}
			for (k = 0; k < RF_NT; k++)
				for (i = 0; i < 2; i++) {
					ck_assert_msg(rf_op(mo[i], &g, at[i],
							    k, 1, &seed),
						      "model %u layer %u "
						      "tensor %u wrong", i,
						      at[i], k);
					two_within(mo, budgets[b]);
				}
		}
		for (i = 0; i < 2; i++) {
			residency_get_stats(mo[i]->res, &st);
			ck_assert_uint_gt(st.evictions, 0);
			ck_assert_uint_le(st.peak, budgets[b]);
		}
		two_close(ctx, mo);
	}
}
END_TEST

struct two {
	struct ortho_model **mo;
	unsigned int first;
	uint64_t seed;
	unsigned int fails;
};

/* Ops on both models in turn, random layers, with prefetch hints. */
static void *two_fn(void *arg)
{
	struct two *t = arg;
	struct ortho_model *mo;
	unsigned int it, l;

	for (it = 0; it < 40; it++) {
		mo = t->mo[(t->first + it / 2) % 2];
		l = (unsigned int)(tu_rand(&t->seed) % NL);
		if (it % 3 == 0)
			ortho_model_prefetch(mo, l, NL);
		if (!rf_op(mo, &g, l, (unsigned int)(tu_rand(&t->seed) %
						     RF_NT), 1, &t->seed))
			t->fails++;
	}
	return NULL;
}

START_TEST(test_two_models_threads)
{
	uint64_t budgets[] = { g.total / 4, g.shard_bytes[0] * 3 / 4 };
	struct ortho_model *mo[2];
	struct ortho_ctx *ctx;
	struct two t[2];
	pthread_t th[2];
	unsigned int b, i;

	for (b = 0; b < 2; b++) {
		ctx = two_open(budgets[b], mo);
		for (i = 0; i < 2; i++) {
			t[i] = (struct two){ .mo = mo, .first = i,
					     .seed = 700 + i };
			ck_assert_int_eq(pthread_create(&th[i], NULL, two_fn,
							&t[i]), 0);
		}
		for (i = 0; i < 2; i++) {
			pthread_join(th[i], NULL);
			ck_assert_uint_eq(t[i].fails, 0);
		}
		two_within(mo, budgets[b]);
		two_close(ctx, mo);
	}
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("residency_model");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, NULL);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_pressure_whole_shards);
	tcase_add_test(tc, test_pressure_per_tensor);
	tcase_add_test(tc, test_prefetch_and_info);
	tcase_add_test(tc, test_wiped_after_eviction_and_close);
	tcase_add_test(tc, test_tampered_whole_shard);
	tcase_add_test(tc, test_tampered_per_tensor);
	tcase_add_test(tc, test_truncated_under_open_model);
	tcase_add_test(tc, test_pread_same_results);
	tcase_add_test(tc, test_concurrent_passes);
	tcase_add_test(tc, test_drop_under_budget);
	tcase_add_test(tc, test_evicting_state);
	tcase_add_test(tc, test_two_models_interleaved);
	tcase_add_test(tc, test_two_models_threads);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr;
	int failed;

	rf_build(&g, NL, 2024);
	sr = srunner_create(suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	rf_free(&g);
	return failed ? 1 : 0;
}
