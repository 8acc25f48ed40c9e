// SPDX-License-Identifier: MIT
/*
 * The model runtime: ortho_model_open() over a directory ortho_pack() wrote
 * (tests/model_fixture.h), tensors, the fused op against deq(B)x + Ox in
 * double, shard info, labels, Base only, drop (wiped, and an op in flight
 * finishes with the shard) and ops from several threads.
 */
#include <check.h>
#include <errno.h>
#include <stddef.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "model_fixture.h"

START_TEST(test_tensors)
{
	struct ortho_ctx *ctx = tu_ctx(NULL);
	struct ortho_model *m = open_model(ctx, g_dir, g_keys, 0, 0), *m2;
	struct ortho_tensor_info ti = { .sz = sizeof(ti) };
	struct ortho_model_config c;
	struct ortho_tensor *t, *t2;
	uint8_t id[32], fid[32];
	char *p = path2(g_dir, "base.orb");
	float x[DIM] = { 0 }, y[DIM], *buf;

	ck_assert_int_eq(ortho_model_get_config(m, &c), 0);
	ck_assert_uint_eq(c.dim, DIM);
	ck_assert_uint_eq(c.hidden_dim, HID);
	ck_assert_uint_eq(c.n_layers, NL);
	ck_assert_uint_eq(c.n_kv_heads, NKV);
	ck_assert_uint_eq(c.vocab_size, VOC);
	ck_assert_uint_eq(c.shared_classifier, 1);
	ck_assert_uint_eq(c.group_size, 64);
	ck_assert_int_eq(ortho_model_get_id(m, id), 0);
	ck_assert_int_eq(orb_read_model_id(p, fid), 0);
	ck_assert_mem_eq(id, fid, 32);
	ck_assert_int_eq(ortho_model_find_tensor(m, "layers.9.wq", &t),
			 -ENOENT);

	ck_assert_int_eq(ortho_model_find_tensor(m, "tok_embeddings", &t), 0);
	ck_assert_int_eq(ortho_tensor_info_get(t, &ti), 0);
	ck_assert_uint_eq(ti.rows, VOC);
	ck_assert_uint_eq(ti.cols, DIM);
	ck_assert_uint_eq(ti.dtype, ORTHO_DTYPE_F32);
	ck_assert_uint_eq(ti.is_linear, 0);
	ck_assert_mem_eq(ortho_tensor_row_f32(t, 3), g_pub + g_emb_off +
			 3 * DIM, DIM * sizeof(float));
	ck_assert_ptr_null(ortho_tensor_row_f32(t, VOC));
	buf = malloc(VOC * DIM * sizeof(float));
	ck_assert_int_eq(ortho_tensor_read_f32(t, buf, VOC * DIM - 1), -ERANGE);
	ck_assert_int_eq(ortho_tensor_read_f32(t, buf, VOC * DIM), 0);
	ck_assert_mem_eq(buf, g_pub + g_emb_off, VOC * DIM * sizeof(float));
	free(buf);
	ck_assert_int_eq(ortho_linear(m, t, x, y, 1), -EINVAL);

	ck_assert_int_eq(ortho_model_find_tensor(m, "layers.1.w2", &t), 0);
	ck_assert_int_eq(ortho_tensor_info_get(t, &ti), 0);
	ck_assert_uint_eq(ti.rows, DIM);
	ck_assert_uint_eq(ti.cols, HID);
	ck_assert_uint_eq(ti.dtype, ORTHO_DTYPE_I8);
	ck_assert_uint_eq(ti.group_size, 64);
	ck_assert_uint_eq(ti.layer, 1);
	ck_assert_uint_eq(ti.is_linear, 1);
	ck_assert_ptr_null(ortho_tensor_row_f32(t, 0));
	ck_assert_int_eq(ortho_linear(m, t, x, y, 0), -EINVAL);
	ti.sz = sizeof(ti) - 1;
	ck_assert_int_eq(ortho_tensor_info_get(t, &ti), -EINVAL);

	/* A tensor of another model is refused. */
	m2 = open_model(ctx, g_dir, NULL, ORTHO_MODEL_NO_ORTHO, 0);
	ck_assert_int_eq(ortho_model_find_tensor(m2, "layers.0.wq", &t2), 0);
	ck_assert_int_eq(ortho_linear(m, t2, x, y, 1), -EINVAL);
	ortho_model_close(m2);
	ortho_model_close(m);
	ortho_ctx_free(ctx);
	free(p);
}
END_TEST

START_TEST(test_linear_all_shards)
{
	struct ortho_ctx *ctx = tu_ctx(NULL);
	struct ortho_model *m = open_model(ctx, g_dir, g_keys, 0, 0);
	unsigned int i;

	for (i = 0; i < g_nlin; i++) {
		check_linear(m, &g_lin[i], NULL, 1, 100 + i);
		check_linear(m, &g_lin[i], NULL, 5, 200 + i);
	}
	ortho_model_close(m);
	ortho_ctx_free(ctx);
}
END_TEST

START_TEST(test_shard_info)
{
	struct ortho_ctx *ctx = tu_ctx(NULL);
	struct ortho_model *m = open_model(ctx, g_dir, g_keys, 0, 0);
	struct ortho_shard_info si, prev;
	unsigned int i, n = ortho_model_shard_count(m), labels = 0;
	uint64_t now = (uint64_t)time(NULL) * 1000000000ull;

	ck_assert_uint_eq(n, g_nref);
	for (i = 0; i < n; i++) {
		const struct ref_shard *r;

		shard_info(m, i, &si);
		r = ref_by_id(si.id);
		ck_assert_ptr_nonnull(r);
		ck_assert_str_eq(si.label, r->label);
		ck_assert_uint_eq(si.state, ORTHO_SHARD_RESIDENT);
		ck_assert_int_eq(si.error, 0);
		ck_assert_uint_eq(si.bad_chunk, UINT32_MAX);
		ck_assert_uint_gt(si.bytes, 0);
		ck_assert_uint_eq(si.bytes, si.plaintext_len);
		ck_assert_str_eq(si.device, "cpu");
		ck_assert_uint_eq(si.tensors, r->n);
		ck_assert_uint_le(si.since_ns, now + 2000000000ull);
		ck_assert_uint_ge(si.since_ns, now - 3600000000000ull);
		labels |= !strcmp(si.label, "a") ? 1 : 2;
		if (i) {	/* sorted by layer, label, id */
			int c = strcmp(prev.label, si.label);
			int d = strcmp(prev.id, si.id);

			ck_assert(prev.layer < si.layer ||
				  (prev.layer == si.layer &&
				   (c < 0 || (!c && d < 0))));
		}
		prev = si;
	}
	ck_assert_uint_eq(labels, 3);
	/* Size-extensible: the first release's size works, less does not. */
	si.sz = offsetof(struct ortho_shard_info, pad0) - 1;
	ck_assert_int_eq(ortho_shard_info_get(m, 0, &si), -EINVAL);
	memset(&si, 0xa5, sizeof(si));
	si.sz = offsetof(struct ortho_shard_info, pad0);
	ck_assert_int_eq(ortho_shard_info_get(m, 0, &si), 0);
	ck_assert_uint_eq(si.uses, 0xa5a5a5a5a5a5a5a5ull);	/* untouched */
	ck_assert_uint_eq(si.layer, 0);
	si.sz = sizeof(si);
	ck_assert_int_eq(ortho_shard_info_get(m, n, &si), -ERANGE);
	ortho_model_close(m);
	ortho_ctx_free(ctx);
}
END_TEST

START_TEST(test_drop)
{
	struct ortho_ctx *ctx = tu_ctx(NULL);
	struct ortho_model *m = open_model(ctx, g_dir, g_keys, 0, 0);
	struct ortho_shard_info si;
	const struct ref_shard *r;
	unsigned char vec[64];
	const char *skip[1];
	unsigned int i;
	size_t size;
	void *pt;

	shard_info(m, 0, &si);
	r = ref_by_id(si.id);
	skip[0] = r->id;
	pt = m->shards[0].pt;
	size = m->shards[0].pt_size;
	ck_assert_ptr_nonnull(pt);
	ck_assert_uint_le(size, sizeof(vec) * 4096);
	ck_assert_int_eq(mincore(pt, size, vec), 0);

	ck_assert_int_eq(ortho_model_drop_shard(m, si.id), 0);
	shard_info(m, 0, &si);
	ck_assert_uint_eq(si.state, ORTHO_SHARD_DROPPED);
	ck_assert_uint_eq(si.bytes, 0);
	ck_assert_str_eq(si.device, "");
	/* The plaintext is gone: wiped and unmapped. */
	ck_assert_ptr_null(m->shards[0].pt);
	ck_assert_int_eq(mincore(pt, size, vec), -1);
	ck_assert_int_eq(errno, ENOMEM);
	for (i = 0; i < r->n; i++)
		check_linear_skip(m, lin_by_name(r->t[i].name), skip, 1);
	for (i = 1; i < ortho_model_shard_count(m); i++) {
		shard_info(m, i, &si);
		ck_assert_uint_eq(si.state, ORTHO_SHARD_RESIDENT);
	}
	ck_assert_int_eq(ortho_model_drop_shard(m, r->id), -EALREADY);
	ck_assert_int_eq(ortho_model_drop_shard(m,
			 "00000000000000000000000000000000"), -ENOENT);
	ck_assert_int_eq(ortho_model_drop_shard(m, "xyz"), -EINVAL);
	ortho_model_close(m);
	ortho_ctx_free(ctx);
}
END_TEST

struct inflight {
	struct ortho_model *m;
	struct ortho_tensor *t;
	const struct lin *l;
	const float *x;
	const double *with, *without;
	atomic_int dropped, stop;
	atomic_uint nwith, nwithout, bad, bad_after;
};

#define INFLIGHT_NTOK 256u

static void *inflight_fn(void *arg)
{
	struct inflight *f = arg;
	float *y = malloc((size_t)INFLIGHT_NTOK * f->l->rows * sizeof(float));

	while (y && !atomic_load(&f->stop)) {
		int after = atomic_load(&f->dropped);

		if (ortho_linear(f->m, f->t, f->x, y, INFLIGHT_NTOK)) {
			atomic_fetch_add(&f->bad, 1);
			continue;
		}
		if (close_to(f->with, f->l, f->x, y, INFLIGHT_NTOK)) {
			atomic_fetch_add(&f->nwith, 1);
			if (after)
				atomic_fetch_add(&f->bad_after, 1);
		} else if (close_to(f->without, f->l, f->x, y,
				    INFLIGHT_NTOK)) {
			atomic_fetch_add(&f->nwithout, 1);
		} else {
			atomic_fetch_add(&f->bad, 1);
		}
	}
	free(y);
	return NULL;
}

START_TEST(test_drop_in_flight)
{
	struct ortho_ctx *ctx = tu_ctx(NULL);
	struct ortho_model *m = open_model(ctx, g_dir, g_keys, 0, 0);
	struct inflight f = { .m = m };
	struct ortho_shard_info si;
	const struct ref_shard *r;
	const char *skip[1];
	pthread_t th[2];
	uint64_t seed = 5;
	double *with, *without;
	unsigned int bad, bad_after, nwithout;
	float *x;
	int i;

	shard_info(m, 0, &si);
	r = ref_by_id(si.id);
	skip[0] = r->id;
	f.l = lin_of(r);
	ck_assert_int_eq(ortho_model_find_tensor(m, f.l->name, &f.t), 0);
	x = rand_vec((size_t)INFLIGHT_NTOK * f.l->cols, &seed);
	with = ref_weff(m, f.l->name, NULL, 0);
	without = ref_weff(m, f.l->name, skip, 1);
	f.x = x;
	f.with = with;
	f.without = without;
	for (i = 0; i < 2; i++)
		ck_assert_int_eq(pthread_create(&th[i], NULL, inflight_fn, &f),
				 0);
	while (atomic_load(&f.nwith) < 4 && !atomic_load(&f.bad))
		usleep(1000);
	ck_assert_int_eq(ortho_model_drop_shard(m, si.id), 0);
	atomic_store(&f.dropped, 1);
	while (atomic_load(&f.nwithout) < 4 && !atomic_load(&f.bad))
		usleep(1000);
	atomic_store(&f.stop, 1);
	for (i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	/* Each op saw the shard whole or not at all; none after the drop. */
	bad = atomic_load(&f.bad);
	bad_after = atomic_load(&f.bad_after);
	nwithout = atomic_load(&f.nwithout);
	ck_assert_uint_eq(bad, 0);
	ck_assert_uint_eq(bad_after, 0);
	ck_assert_uint_ge(nwithout, 4);
	shard_info(m, 0, &si);
	ck_assert_uint_eq(si.state, ORTHO_SHARD_DROPPED);
	free(x);
	free(with);
	free(without);
	ortho_model_close(m);
	ortho_ctx_free(ctx);
}
END_TEST

struct conc {
	struct ortho_model *m;
	double *w[MAXLIN];
	uint64_t seed;
	unsigned int fails;
};

static void *conc_fn(void *arg)
{
	struct conc *c = arg;
	float x[4 * HID], y[4 * HID];
	unsigned int it, i;

	for (it = 0; it < 200; it++) {
		unsigned int li = (unsigned int)(tu_rand(&c->seed) % g_nlin);
		uint32_t ntok = 1 + (uint32_t)(tu_rand(&c->seed) % 4);
		const struct lin *l = &g_lin[li];
		struct ortho_tensor *t;

		for (i = 0; i < ntok * l->cols; i++)
			x[i] = tu_randf(&c->seed);
		if (ortho_model_find_tensor(c->m, l->name, &t) ||
		    ortho_linear(c->m, t, x, y, ntok) ||
		    !close_to(c->w[li], l, x, y, ntok))
			c->fails++;
	}
	return NULL;
}

START_TEST(test_concurrent)
{
	struct ortho_ctx *ctx = tu_ctx(NULL);
	struct ortho_model *m = open_model(ctx, g_dir, g_keys, 0, 0);
	struct conc c[4];
	pthread_t th[4];
	unsigned int i, j;

	for (i = 0; i < 4; i++) {
		c[i].m = m;
		c[i].seed = 1000 + i;
		c[i].fails = 0;
		for (j = 0; j < g_nlin; j++)
			c[i].w[j] = i ? c[0].w[j] :
				    ref_weff(m, g_lin[j].name, NULL, 0);
	}
	for (i = 0; i < 4; i++)
		ck_assert_int_eq(pthread_create(&th[i], NULL, conc_fn, &c[i]),
				 0);
	for (i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	for (i = 0; i < 4; i++)
		ck_assert_uint_eq(c[i].fails, 0);
	for (j = 0; j < g_nlin; j++)
		free(c[0].w[j]);
	ortho_model_close(m);
	ortho_ctx_free(ctx);
}
END_TEST

START_TEST(test_label_and_no_ortho)
{
	struct ortho_ctx *ctx = tu_ctx(NULL);
	struct ortho_model_opts o = {
		.sz = sizeof(o), .key_file = g_keys, .label = "a",
	};
	struct ortho_shard_info si;
	struct ortho_model *m;
	const char *ids[64];
	unsigned int i, n;

	ck_assert_int_eq(ortho_model_open(ctx, g_dir, &o, &m), 0);
	for (i = 0; i < ortho_model_shard_count(m); i++) {
		shard_info(m, i, &si);
		ck_assert_uint_eq(si.state, !strcmp(si.label, "a") ?
				  ORTHO_SHARD_RESIDENT : ORTHO_SHARD_ABSENT);
	}
	n = ids_of("b", ids);
	for (i = 0; i < g_nlin; i++)
		check_linear_skip(m, &g_lin[i], ids, n);
	ortho_model_close(m);

	m = open_model(ctx, g_dir, g_keys, ORTHO_MODEL_NO_ORTHO, 0);
	ck_assert_uint_eq(ortho_model_shard_count(m), 0);
	n = ids_of(NULL, ids);
	check_linear_skip(m, &g_lin[3], ids, n);
	ortho_model_close(m);
	ortho_ctx_free(ctx);
}
END_TEST

static Suite *model_suite(void)
{
	Suite *s = suite_create("model");
	TCase *tc = tcase_create("runtime");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_tensors);
	tcase_add_test(tc, test_linear_all_shards);
	tcase_add_test(tc, test_shard_info);
	tcase_add_test(tc, test_label_and_no_ortho);
	tcase_add_test(tc, test_drop);
	tcase_add_test(tc, test_drop_in_flight);
	tcase_add_test(tc, test_concurrent);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(model_suite());
	int failed;

	setup_all();
	ref_load();
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	tu_rmrf(g_tmp);
	return failed ? 1 : 0;
}
