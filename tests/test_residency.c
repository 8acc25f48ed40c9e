// SPDX-License-Identifier: MIT
/*
 * The residency manager on its own (lib/residency.c), its units paged in
 * from real shards through the stream: LRU eviction, pinned units kept
 * (and waited for), sets of pins that cannot fit, the prefetch window and
 * its eviction order, an op cancelling a prefetch that holds its room, a
 * drop waiting for the op holding the unit, a failed load wiped, no limit,
 * every slot wiped before it is unmapped, and managers sharing one budget
 * (evicting their own units first, then each other's; waiting for each
 * other's pins; a prefetch leaving the other's window alone).
 */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "ortho.h"
#include "residency.h"
#include "shard.h"
#include "stream.h"
#include "testutil.h"

#define NU 4u
#define ROWS 768u
#define COLS 1024u			/* 1.5 MiB: two chunks */
#define CANARY 16u

struct owner {
	struct ortho_ctx *ctx;
	struct stream *s;
	char *dir;
	struct osh_file f[NU];
	uint8_t key[NU][OSH_KEY_SIZE];
	uint8_t *expect[NU];
	uint64_t size[NU];
	atomic_int gate[NU];		/* 1: a load waits for 0 or a cancel */
	atomic_int loading[NU];
	atomic_int unloads[NU];
};

static struct owner o;
static struct tu_log lg;

static void canary(unsigned int u, uint16_t c[CANARY])
{
	unsigned int k;

	for (k = 0; k < CANARY; k++)
		c[k] = (uint16_t)(0x5100 + (u << 5) + k);
}

static void write_unit(unsigned int u, uint64_t seed)
{
	struct osh_write_params p = { .label = "res", .key = o.key[u] };
	struct osp_tensor_src t = { .name = "w", .rows = ROWS, .cols = COLS,
				    .encoding = OSP_DENSE16,
				    .nnz = (uint64_t)ROWS * COLS };
	size_t n = (size_t)ROWS * COLS, i;
	uint16_t *v = malloc(n * 2), c[CANARY];
	char *path;

	ck_assert_ptr_nonnull(v);
	for (i = 0; i < n; i++)
		v[i] = (uint16_t)(tu_rand(&seed) & 0x2fff);
	canary(u, c);
	for (i = 0; i + CANARY <= n; i += 32768)
		memcpy(&v[i], c, sizeof(c));
	t.val = v;
	ck_assert_int_eq(getrandom(o.key[u], OSH_KEY_SIZE, 0), OSH_KEY_SIZE);
	ck_assert_int_eq(getrandom(p.shard_id, OSH_ID_SIZE, 0), OSH_ID_SIZE);
	ck_assert_int_ge(asprintf(&path, "%s/%u.osh", o.dir, u), 0);
	ck_assert_int_eq(osh_write(o.ctx, path, &p, &t, 1), 0);
	ck_assert_int_eq(osh_open(o.ctx, path, &o.f[u]), 0);
	o.size[u] = o.f[u].hdr.plaintext_len;
	o.expect[u] = malloc(o.size[u]);
	ck_assert_int_eq(osh_read_all(o.ctx, &o.f[u], o.key[u], o.expect[u],
				      NULL), 0);
	free(path);
	free(v);
}

static void setup(void)
{
	unsigned int u;

	memset(&o, 0, sizeof(o));
	tu_log_clear(&lg);
	o.ctx = tu_ctx(&lg);
	o.dir = tu_mkdtemp("residency");
	ck_assert(o.ctx && o.dir);
	ck_assert_int_eq(stream_new(o.ctx, NULL, &o.s), 0);
	for (u = 0; u < NU; u++)
		write_unit(u, 100 + u);
}

static void teardown(void)
{
	unsigned int u;

	for (u = 0; u < NU; u++) {
		osh_close(&o.f[u]);
		free(o.expect[u]);
	}
	stream_free(o.s);
	tu_rmrf(o.dir);
	free(o.dir);
	ortho_ctx_free(o.ctx);
}

static int load(void *owner, unsigned int u, void *mem, uint64_t size,
		int urgent, const atomic_int *cancel, uint32_t *bad)
{
	struct stream_req r = { .f = &o.f[u], .key = o.key[u], .len = size,
				.dst = mem, .cancel = cancel,
				.flags = urgent ? STREAM_URGENT : 0 };
	int ret;

	atomic_store(&o.loading[u], 1);
	while (atomic_load(&o.gate[u]) && !atomic_load(cancel))
		usleep(1000);
	ret = stream_read(o.s, &r);
	*bad = r.bad_chunk;
	atomic_store(&o.loading[u], 0);
	return ret;
}

static void unload(void *owner, unsigned int u, void *mem)
{
	atomic_fetch_add(&o.unloads[u], 1);
}

static void name(void *owner, unsigned int u, char *buf, size_t len)
{
	snprintf(buf, len, "test unit %u", u);
}

static const struct res_ops ops = { .load = load, .unload = unload,
				    .name = name };

/* A manager over the NU units with room for @n of them. */
static struct residency *mgr(double n)
{
	struct residency *r;
	unsigned int u, id;
	uint64_t cap = (o.size[0] + 4095) & ~4095ull;

	ck_assert_int_eq(residency_new(o.ctx, (uint64_t)(n * (double)cap), &ops,
				       &o, &r), 0);
	for (u = 0; u < NU; u++) {
		ck_assert_int_eq(residency_add(r, o.size[u], &id), 0);
		ck_assert_uint_eq(id, u);
	}
	return r;
}

static uint32_t state(struct residency *r, unsigned int u)
{
	struct res_unit_info i;

	ck_assert_int_eq(residency_unit_info(r, u, &i), 0);
	return i.state;
}

/* Pin @u, check its bytes, unpin. */
static void use(struct residency *r, unsigned int u)
{
	void *mem;

	ck_assert_uint_eq(residency_pin(r, &u, 1, &mem), 1);
	ck_assert_mem_eq(mem, o.expect[u], o.size[u]);
	residency_unpin(r, &u, 1, &mem);
}

START_TEST(test_lru)
{
	struct residency *r = mgr(2);
	struct res_stats st;

	use(r, 0);
	use(r, 1);
	use(r, 0);
	use(r, 2);
	ck_assert_uint_eq(state(r, 0), ORTHO_SHARD_RESIDENT);
	ck_assert_uint_eq(state(r, 1), ORTHO_SHARD_ABSENT);
	ck_assert_uint_eq(state(r, 2), ORTHO_SHARD_RESIDENT);
	ck_assert_int_eq(atomic_load(&o.unloads[1]), 1);
	residency_get_stats(r, &st);
	ck_assert_uint_eq(st.loads, 3);
	ck_assert_uint_eq(st.evictions, 1);
	ck_assert_uint_le(st.peak, st.budget);
	ck_assert_uint_eq(st.resident, o.size[0] + o.size[2]);
	ck_assert_int_eq(residency_evict(r, 1), -EALREADY);
	ck_assert_int_eq(residency_evict(r, 2), 0);
	ck_assert_uint_eq(state(r, 2), ORTHO_SHARD_ABSENT);
	residency_free(r);
}
END_TEST

struct holder {
	struct residency *r;
	unsigned int u;
	atomic_int pinned, release, done;
	unsigned int got;
};

static void *hold_fn(void *arg)
{
	struct holder *h = arg;
	void *mem;

	h->got = residency_pin(h->r, &h->u, 1, &mem);
	atomic_store(&h->pinned, 1);
	while (!atomic_load(&h->release))
		usleep(1000);
	residency_unpin(h->r, &h->u, 1, &mem);
	atomic_store(&h->done, 1);
	return NULL;
}

START_TEST(test_pinned_is_kept)
{
	struct residency *r = mgr(1);
	struct holder a = { .r = r, .u = 0 }, b = { .r = r, .u = 1 };
	pthread_t ta, tb;

	ck_assert_int_eq(pthread_create(&ta, NULL, hold_fn, &a), 0);
	while (!atomic_load(&a.pinned))
		usleep(1000);
	ck_assert_int_eq(pthread_create(&tb, NULL, hold_fn, &b), 0);
	usleep(100000);
	/* No room while 0 is held: 1 waits, 0 stays. */
	ck_assert_int_eq(atomic_load(&b.pinned), 0);
	ck_assert_uint_eq(state(r, 0), ORTHO_SHARD_RESIDENT);
	ck_assert_uint_eq(state(r, 1), ORTHO_SHARD_ABSENT);
	ck_assert_int_eq(residency_evict(r, 0), -EBUSY);
	atomic_store(&a.release, 1);
	while (!atomic_load(&b.pinned))
		usleep(1000);
	ck_assert_uint_eq(b.got, 1);
	ck_assert_uint_eq(state(r, 0), ORTHO_SHARD_ABSENT);
	atomic_store(&b.release, 1);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	residency_free(r);
}
END_TEST

START_TEST(test_set_too_big)
{
	struct residency *r = mgr(1.5);
	unsigned int u[2] = { 0, 1 };
	void *mem[2];

	ck_assert_uint_eq(residency_pin(r, u, 2, mem), 1);
	ck_assert_ptr_nonnull(mem[0]);
	ck_assert_ptr_null(mem[1]);
	ck_assert(tu_log_has(&lg, "test unit 1: does not fit"));
	residency_unpin(r, u, 2, mem);
	residency_free(r);

	/* A unit larger than the whole budget is never loaded. */
	r = mgr(0.5);
	ck_assert_uint_eq(residency_pin(r, u, 1, mem), 0);
	ck_assert(tu_log_has(&lg, "more than the Ortho budget"));
	ck_assert_uint_eq(state(r, 0), ORTHO_SHARD_ABSENT);
	residency_free(r);
}
END_TEST

START_TEST(test_prefetch_window)
{
	struct residency *r = mgr(2);
	unsigned int w1[3] = { 0, 1, 2 }, w2[3] = { 2, 0, 1 };
	struct res_stats st;

	ck_assert_int_eq(residency_prefetch(r, w1, 3), 0);
	residency_wait_idle(r);
	ck_assert_uint_eq(state(r, 0), ORTHO_SHARD_RESIDENT);
	ck_assert_uint_eq(state(r, 1), ORTHO_SHARD_RESIDENT);
	ck_assert_uint_eq(state(r, 2), ORTHO_SHARD_ABSENT);
	/* 2 is wanted first now: 1, wanted last, makes room. */
	ck_assert_int_eq(residency_prefetch(r, w2, 3), 0);
	residency_wait_idle(r);
	ck_assert_uint_eq(state(r, 2), ORTHO_SHARD_RESIDENT);
	ck_assert_uint_eq(state(r, 0), ORTHO_SHARD_RESIDENT);
	ck_assert_uint_eq(state(r, 1), ORTHO_SHARD_ABSENT);
	residency_get_stats(r, &st);
	ck_assert_uint_eq(st.prefetched, 3);
	use(r, 2);
	residency_get_stats(r, &st);
	ck_assert_uint_eq(st.loads, 3);
	residency_free(r);
}
END_TEST

START_TEST(test_op_cancels_prefetch)
{
	struct residency *r = mgr(1);
	unsigned int w = 0;
	struct res_stats st;

	atomic_store(&o.gate[0], 1);
	ck_assert_int_eq(residency_prefetch(r, &w, 1), 0);
	while (!atomic_load(&o.loading[0]))
		usleep(1000);
	ck_assert_uint_eq(state(r, 0), ORTHO_SHARD_LOADING);
	/* The op needs 1, not 0: it does not wait for 0's load. */
	use(r, 1);
	residency_get_stats(r, &st);
	ck_assert_uint_eq(st.cancelled, 1);
	ck_assert_uint_eq(state(r, 0), ORTHO_SHARD_ABSENT);
	ck_assert_uint_eq(state(r, 1), ORTHO_SHARD_RESIDENT);
	atomic_store(&o.gate[0], 0);
	residency_free(r);
}
END_TEST

struct dropper {
	struct residency *r;
	atomic_int done;
	int ret;
};

static void *drop_fn(void *arg)
{
	struct dropper *d = arg;

	d->ret = residency_drop(d->r, 0, ORTHO_SHARD_REVOKED);
	atomic_store(&d->done, 1);
	return NULL;
}

struct scan {
	unsigned int slots, dirty, canary[NU];
};

static void scan_fn(void *user, const void *p, size_t len)
{
	struct scan *s = user;
	const unsigned char *b = p;
	uint16_t c[CANARY];
	unsigned int u;
	size_t i;

	s->slots++;
	for (i = 0; i < len && !b[i]; i++)
		;
	s->dirty += i < len;
	for (u = 0; u < NU; u++) {
		canary(u, c);
		s->canary[u] += memmem(p, len, c, sizeof(c)) != NULL;
	}
}

START_TEST(test_drop_waits_for_op)
{
	struct residency *r = mgr(2);
	struct holder a = { .r = r, .u = 0 };
	struct dropper d = { .r = r };
	struct scan s = { 0 };
	pthread_t ta, td;
	unsigned int u = 0;
	void *mem;

	ck_assert_int_eq(pthread_create(&ta, NULL, hold_fn, &a), 0);
	while (!atomic_load(&a.pinned))
		usleep(1000);
	ck_assert_int_eq(pthread_create(&td, NULL, drop_fn, &d), 0);
	usleep(100000);
	ck_assert_int_eq(atomic_load(&d.done), 0);
	/* New ops do not get it while it goes. */
	ck_assert_uint_eq(residency_pin(r, &u, 1, &mem), 0);
	atomic_store(&a.release, 1);
	pthread_join(ta, NULL);
	pthread_join(td, NULL);
	ck_assert_int_eq(d.ret, 0);
	ck_assert_uint_eq(state(r, 0), ORTHO_SHARD_REVOKED);
	ck_assert_uint_eq(residency_pin(r, &u, 1, &mem), 0);
	residency_for_each_slot(r, scan_fn, &s);
	ck_assert_uint_eq(s.canary[0], 0);
	ck_assert_int_eq(residency_drop(r, 0, ORTHO_SHARD_DROPPED),
			 -EALREADY);
	ck_assert_int_eq(residency_drop(r, 1, ORTHO_SHARD_ABSENT), -EINVAL);
	residency_free(r);
}
END_TEST

START_TEST(test_failed_load_wiped)
{
	struct residency *r = mgr(2);
	struct res_unit_info info;
	struct scan s = { 0 };
	char *path;
	FILE *f;
	unsigned int u = 3;
	void *mem;

	ck_assert_int_ge(asprintf(&path, "%s/3.osh", o.dir), 0);
	f = fopen(path, "r+b");
	ck_assert_ptr_nonnull(f);
	fseek(f, (long)(o.f[3].hdr.data_offset + OSH_CHUNK_SIZE + 99),
	      SEEK_SET);
	fputc(0x77 ^ fgetc(f), f);
	fclose(f);
	free(path);
	use(r, 2);
	ck_assert_uint_eq(residency_pin(r, &u, 1, &mem), 0);
	ck_assert_int_eq(residency_unit_info(r, 3, &info), 0);
	ck_assert_uint_eq(info.state, ORTHO_SHARD_FAILED);
	ck_assert_int_eq(info.error, -EBADMSG);
	ck_assert_uint_eq(info.bad_chunk, 1);
	ck_assert_uint_eq(info.bytes, 0);
	residency_for_each_slot(r, scan_fn, &s);
	ck_assert_uint_eq(s.slots, 2);		/* 2's, and 3's wiped */
	ck_assert_uint_eq(s.canary[3], 0);
	ck_assert_uint_eq(s.canary[2], 1);
	use(r, 2);
	use(r, 1);
	residency_free(r);
}
END_TEST

START_TEST(test_no_limit)
{
	struct residency *r = mgr(0);
	struct res_stats st;
	unsigned int u;

	for (u = 0; u < NU; u++)
		use(r, u);
	for (u = 0; u < NU; u++)
		ck_assert_uint_eq(state(r, u), ORTHO_SHARD_RESIDENT);
	residency_get_stats(r, &st);
	ck_assert_uint_eq(st.evictions, 0);
	ck_assert_uint_eq(st.budget, 0);
	ck_assert_int_eq(residency_drop(r, 1, ORTHO_SHARD_DROPPED), 0);
	residency_get_stats(r, &st);
	ck_assert_uint_eq(st.resident, 3 * o.size[0]);
	residency_free(r);
}
END_TEST

static struct scan unmapped;

static void unmap_hook(const void *p, size_t len)
{
	scan_fn(&unmapped, p, len);
}

START_TEST(test_free_wipes_every_slot)
{
	struct residency *r = mgr(2);
	unsigned int u;

	for (u = 0; u < NU; u++)
		use(r, u);
	memset(&unmapped, 0, sizeof(unmapped));
	ortho_test_unmap_hook = unmap_hook;
	residency_free(r);
	ortho_test_unmap_hook = NULL;
	ck_assert_uint_eq(unmapped.slots, 2);
	ck_assert_uint_eq(unmapped.dirty, 0);
}
END_TEST

/* A manager on account @a over the NU units. */
static struct residency *mgr_on(struct res_account *a)
{
	struct residency *r;
	unsigned int u, id;

	ck_assert_int_eq(residency_new_shared(o.ctx, a, &ops, &o, &r), 0);
	for (u = 0; u < NU; u++) {
		ck_assert_int_eq(residency_add(r, o.size[u], &id), 0);
		ck_assert_uint_eq(id, u);
	}
	return r;
}

static uint64_t unit_cap(void)
{
	return (o.size[0] + 4095) & ~4095ull;
}

START_TEST(test_shared_budget)
{
	struct res_account *a;
	struct residency *r1, *r2;
	struct res_stats s1, s2;

	ck_assert_int_eq(res_account_new(2 * unit_cap(), &a), 0);
	r1 = mgr_on(a);
	r2 = mgr_on(a);
	res_account_put(a);		/* the managers hold it */
	use(r1, 0);
	use(r1, 1);
	/* r2 has nothing of its own: r1's least recently used goes. */
	use(r2, 2);
	ck_assert_uint_eq(state(r1, 0), ORTHO_SHARD_ABSENT);
	ck_assert_uint_eq(state(r1, 1), ORTHO_SHARD_RESIDENT);
	ck_assert_uint_eq(state(r2, 2), ORTHO_SHARD_RESIDENT);
	/* Now its own goes first, though r1's is older. */
	use(r2, 3);
	ck_assert_uint_eq(state(r2, 2), ORTHO_SHARD_ABSENT);
	ck_assert_uint_eq(state(r2, 3), ORTHO_SHARD_RESIDENT);
	ck_assert_uint_eq(state(r1, 1), ORTHO_SHARD_RESIDENT);
	residency_get_stats(r1, &s1);
	residency_get_stats(r2, &s2);
	ck_assert_uint_eq(s1.evictions, 1);
	ck_assert_uint_eq(s2.evictions, 1);
	ck_assert_uint_eq(s1.used + s2.used, 2 * unit_cap());
	ck_assert_uint_eq(s2.shared_used, 2 * unit_cap());
	ck_assert_uint_le(s2.shared_peak, s2.budget);
	ck_assert_uint_eq(s1.shared_peak, s2.shared_peak);
	residency_free(r1);
	residency_get_stats(r2, &s2);
	ck_assert_uint_eq(s2.shared_used, s2.used);
	ck_assert_uint_le(s2.used, unit_cap() * 2);
	residency_free(r2);
}
END_TEST

START_TEST(test_shared_pinned_waits)
{
	struct res_account *a;
	struct residency *r1, *r2;
	struct holder h1, h2;
	uint64_t used, peak;
	pthread_t t1, t2;

	ck_assert_int_eq(res_account_new(unit_cap(), &a), 0);
	r1 = mgr_on(a);
	r2 = mgr_on(a);
	memset(&h1, 0, sizeof(h1));
	memset(&h2, 0, sizeof(h2));
	h1.r = r1;
	h1.u = 0;
	h2.r = r2;
	h2.u = 1;
	ck_assert_int_eq(pthread_create(&t1, NULL, hold_fn, &h1), 0);
	while (!atomic_load(&h1.pinned))
		usleep(1000);
	ck_assert_int_eq(pthread_create(&t2, NULL, hold_fn, &h2), 0);
	usleep(100000);
	/* The room is r1's pinned unit: r2 waits, r1's stays. */
	ck_assert_int_eq(atomic_load(&h2.pinned), 0);
	ck_assert_uint_eq(state(r1, 0), ORTHO_SHARD_RESIDENT);
	ck_assert_uint_eq(state(r2, 1), ORTHO_SHARD_ABSENT);
	atomic_store(&h1.release, 1);
	while (!atomic_load(&h2.pinned))
		usleep(1000);
	ck_assert_uint_eq(h2.got, 1);
	ck_assert_uint_eq(state(r1, 0), ORTHO_SHARD_ABSENT);
	ck_assert_uint_eq(state(r2, 1), ORTHO_SHARD_RESIDENT);
	atomic_store(&h2.release, 1);
	pthread_join(t1, NULL);
	pthread_join(t2, NULL);
	res_account_get_stats(a, &used, &peak);
	ck_assert_uint_le(peak, unit_cap());
	residency_free(r2);
	residency_free(r1);
	res_account_get_stats(a, &used, &peak);
	ck_assert_uint_eq(used, 0);
	res_account_put(a);
}
END_TEST

START_TEST(test_shared_prefetch)
{
	unsigned int w1[2] = { 0, 1 }, w2[2] = { 2, 3 }, u = 2;
	struct res_account *a;
	struct residency *r1, *r2;

	ck_assert_int_eq(res_account_new(2 * unit_cap(), &a), 0);
	r1 = mgr_on(a);
	r2 = mgr_on(a);
	res_account_put(a);
	ck_assert_int_eq(residency_prefetch(r1, w1, 2), 0);
	residency_wait_idle(r1);
	ck_assert_uint_eq(state(r1, 0), ORTHO_SHARD_RESIDENT);
	ck_assert_uint_eq(state(r1, 1), ORTHO_SHARD_RESIDENT);
	/* r2's prefetch leaves r1's window alone... */
	ck_assert_int_eq(residency_prefetch(r2, &u, 1), 0);
	residency_wait_idle(r2);
	ck_assert_uint_eq(state(r2, 2), ORTHO_SHARD_ABSENT);
	ck_assert_uint_eq(state(r1, 1), ORTHO_SHARD_RESIDENT);
	/* ...an op of r2's does not: r1's unit needed last goes. */
	use(r2, 2);
	ck_assert_uint_eq(state(r1, 0), ORTHO_SHARD_RESIDENT);
	ck_assert_uint_eq(state(r1, 1), ORTHO_SHARD_ABSENT);
	/* Outside r1's window now, r1's unit is fair game for a prefetch. */
	ck_assert_int_eq(residency_prefetch(r1, NULL, 0), 0);
	ck_assert_int_eq(residency_prefetch(r2, w2, 2), 0);
	residency_wait_idle(r2);
	ck_assert_uint_eq(state(r1, 0), ORTHO_SHARD_ABSENT);
	ck_assert_uint_eq(state(r2, 2), ORTHO_SHARD_RESIDENT);
	ck_assert_uint_eq(state(r2, 3), ORTHO_SHARD_RESIDENT);
	use(r2, 3);
	residency_free(r1);
	residency_free(r2);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("residency");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_lru);
	tcase_add_test(tc, test_pinned_is_kept);
	tcase_add_test(tc, test_set_too_big);
	tcase_add_test(tc, test_prefetch_window);
	tcase_add_test(tc, test_op_cancels_prefetch);
	tcase_add_test(tc, test_drop_waits_for_op);
	tcase_add_test(tc, test_failed_load_wiped);
	tcase_add_test(tc, test_no_limit);
	tcase_add_test(tc, test_free_wipes_every_slot);
	tcase_add_test(tc, test_shared_budget);
	tcase_add_test(tc, test_shared_pinned_waits);
	tcase_add_test(tc, test_shared_prefetch);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
