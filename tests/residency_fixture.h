/* SPDX-License-Identifier: MIT */
/*
 * A synthetic packed model for the residency tests: NL layers, each with
 * two dense 512x1024 linear tensors ("wa", "wc") and a sparse 192x256 one
 * ("wb"), one shard per layer of about 2 MiB (three 1 MiB chunks), written
 * with the library's own writers (orb_write, osh_write, keyfile_save).
 * Every Ortho value is known, so each op can be checked against a double
 * reference, and the dense ones carry a per-layer canary every 64 KiB so
 * that memory can be scanned for plaintext of a given layer.
 */
#ifndef ORTHO_TEST_RESIDENCY_FIXTURE_H
#define ORTHO_TEST_RESIDENCY_FIXTURE_H

#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base.h"
#include "fp16.h"
#include "keyfile.h"
#include "model.h"
#include "ortho.h"
#include "shard.h"
#include "testutil.h"

#define RF static __attribute__((unused))
#define RF_MAXL 16u
#define RF_NT 3u			/* tensors per layer */
#define RF_GROUP 64u
#define RF_CANARY 16u			/* FP16 values */

/* Building runs outside any test: fail loudly without Check. */
#define RQ(c) do { if (!(c)) { fprintf(stderr, "%s:%d: %s failed\n", \
	__FILE__, __LINE__, #c); abort(); } } while (0)

struct rf_tensor {
	char name[32];
	uint32_t rows, cols;
	int8_t *q;
	float *scales;
	float *delta;			/* rows x cols, 0 where no Ortho */
	uint16_t *val;			/* FP16 values as written */
	uint32_t *rowptr, *col;		/* CSR, NULL for dense */
	uint64_t nnz;
};

struct rf_model {
	unsigned int nl;
	char *dir, *keys, *ortho;
	char shard_path[RF_MAXL][300];
	uint64_t shard_bytes[RF_MAXL];	/* plaintext */
	uint64_t data_offset[RF_MAXL];
	uint64_t total;			/* all shards' plaintext */
	struct rf_tensor t[RF_MAXL][RF_NT];
};

static const uint32_t rf_shape[RF_NT][2] = {
	{ 512, 1024 }, { 192, 256 }, { 512, 1024 },
};
static const char *const rf_suffix[RF_NT] = { "wa", "wb", "wc" };

/* The canary of layer @l: finite FP16 values no random fill produces. */
RF void rf_canary(unsigned int l, uint16_t c[RF_CANARY])
{
	unsigned int k;

	for (k = 0; k < RF_CANARY; k++)
		c[k] = (uint16_t)(0x5000 + (l << 6) + k * 3 + 1);
}

static uint16_t rf_small(uint64_t *seed)
{
	/* |v| < 2^-4: exponents 0..10, never the canary's 0x50xx range. */
	uint16_t v = (uint16_t)(tu_rand(seed) & 0x2fff);

	return (uint16_t)(v | ((tu_rand(seed) & 1) << 15));
}

RF void rf_fill_tensor(struct rf_tensor *t, unsigned int l, unsigned int k,
		       uint64_t *seed)
{
	uint32_t ng = orb_ngroups(t->cols, RF_GROUP), r, c;
	size_t n = (size_t)t->rows * t->cols, i;
	uint16_t can[RF_CANARY];

	t->q = malloc(n);
	t->scales = malloc((size_t)t->rows * ng * sizeof(float));
	t->delta = calloc(n, sizeof(float));
	RQ(t->q && t->scales && t->delta);
	for (i = 0; i < n; i++)
		t->q[i] = (int8_t)((int)(tu_rand(seed) % 255) - 127);
	for (i = 0; i < (size_t)t->rows * ng; i++)
		t->scales[i] = 0.001f + 0.009f * (float)(tu_rand(seed) % 1000) /
			       1000.0f;
	if (k != 1) {			/* dense, with the canary */
		t->val = malloc(n * 2);
		RQ(t->val);
		for (i = 0; i < n; i++)
			t->val[i] = rf_small(seed);
		rf_canary(l, can);
		for (i = 0; i + RF_CANARY <= n; i += 32768)
			memcpy(&t->val[i], can, sizeof(can));
		for (i = 0; i < n; i++)
			t->delta[i] = fp16_to_f32(t->val[i]);
		t->nnz = n;
		return;
	}
	t->rowptr = calloc(t->rows + 1, sizeof(uint32_t));
	t->col = malloc(n * sizeof(uint32_t));
	t->val = malloc(n * 2);
	RQ(t->rowptr && t->col && t->val);
	for (r = 0; r < t->rows; r++) {
		for (c = 0; c < t->cols; c++) {
			if (tu_rand(seed) % 10)
				continue;
			t->col[t->nnz] = c;
			t->val[t->nnz] = rf_small(seed);
			t->delta[(size_t)r * t->cols + c] =
				fp16_to_f32(t->val[t->nnz]);
			t->nnz++;
		}
		t->rowptr[r + 1] = (uint32_t)t->nnz;
	}
}

RF void rf_write_base(struct ortho_ctx *ctx, struct rf_model *m,
		      uint8_t model_id[32])
{
	struct ortho_model_config cfg = {
		.dim = 1024, .hidden_dim = 1024, .n_layers = m->nl,
		.n_heads = 8, .n_kv_heads = 8, .vocab_size = 32,
		.seq_len = 16, .group_size = RF_GROUP,
	};
	struct orb_tensor_src src[RF_MAXL * RF_NT];
	unsigned int l, k, n = 0;
	char *p;

	for (l = 0; l < m->nl; l++)
		for (k = 0; k < RF_NT; k++) {
			struct rf_tensor *t = &m->t[l][k];

			src[n++] = (struct orb_tensor_src){
				.name = t->name, .kind = ORB_KIND_LINEAR,
				.dtype = ORTHO_DTYPE_I8, .rows = t->rows,
				.cols = t->cols, .group_size = RF_GROUP,
				.layer = l, .data = t->q, .scales = t->scales,
			};
		}
	RQ(asprintf(&p, "%s/base.orb", m->dir) >= 0);
	RQ(orb_write(ctx, p, &cfg, src, n, model_id) == 0);
	free(p);
}

RF void rf_write_shard(struct ortho_ctx *ctx, struct rf_model *m,
		       unsigned int l, const uint8_t model_id[32],
		       struct keyfile *kf)
{
	struct keyfile_entry e = { .layer = l };
	struct osh_write_params p = { .label = "rf", .layer = l, .key = e.key };
	struct osp_tensor_src src[RF_NT];
	struct osh_file f;
	char hex[33];
	unsigned int k;

	RQ(getrandom(e.id, sizeof(e.id), 0) == sizeof(e.id));
	RQ(getrandom(e.key, sizeof(e.key), 0) == sizeof(e.key));
	snprintf(e.label, sizeof(e.label), "rf");
	memcpy(p.shard_id, e.id, sizeof(e.id));
	memcpy(p.model_id, model_id, 32);
	for (k = 0; k < RF_NT; k++) {
		struct rf_tensor *t = &m->t[l][k];

		src[k] = (struct osp_tensor_src){
			.name = t->name, .rows = t->rows, .cols = t->cols,
			.encoding = t->rowptr ? OSP_CSR16 : OSP_DENSE16,
			.nnz = t->nnz, .rowptr = t->rowptr, .col = t->col,
			.val = t->val,
		};
	}
	osh_id_to_hex(e.id, hex);
	snprintf(m->shard_path[l], sizeof(m->shard_path[l]), "%s/%s.osh",
		 m->ortho, hex);
	RQ(osh_write(ctx, m->shard_path[l], &p, src, RF_NT) == 0);
	RQ(keyfile_add(kf, &e) == 0);
	RQ(osh_open(ctx, m->shard_path[l], &f) == 0);
	m->shard_bytes[l] = f.hdr.plaintext_len;
	m->data_offset[l] = f.hdr.data_offset;
	m->total += f.hdr.plaintext_len;
	osh_close(&f);
}

/* Write the model into a fresh directory. */
RF void rf_build(struct rf_model *m, unsigned int nl, uint64_t seed)
{
	struct ortho_ctx *ctx = tu_ctx(NULL);
	struct keyfile kf = { 0 };
	uint8_t model_id[32];
	unsigned int l, k;

	RQ(nl <= RF_MAXL);
	memset(m, 0, sizeof(*m));
	m->nl = nl;
	m->dir = tu_mkdtemp("resmodel");
	RQ(m->dir);
	RQ(asprintf(&m->ortho, "%s/ortho", m->dir) >= 0);
	RQ(asprintf(&m->keys, "%s.keys", m->dir) >= 0);
	RQ(mkdir(m->ortho, 0700) == 0);
	for (l = 0; l < nl; l++)
		for (k = 0; k < RF_NT; k++) {
			struct rf_tensor *t = &m->t[l][k];

			snprintf(t->name, sizeof(t->name), "layers.%u.%s", l,
				 rf_suffix[k]);
			t->rows = rf_shape[k][0];
			t->cols = rf_shape[k][1];
			rf_fill_tensor(t, l, k, &seed);
		}
	rf_write_base(ctx, m, model_id);
	for (l = 0; l < nl; l++)
		rf_write_shard(ctx, m, l, model_id, &kf);
	RQ(keyfile_save(ctx, m->keys, &kf, 1) == 0);
	keyfile_free(&kf);
	ortho_ctx_free(ctx);
}

RF void rf_free(struct rf_model *m)
{
	unsigned int l, k;

	tu_rmrf(m->dir);
	unlink(m->keys);
	for (l = 0; l < m->nl; l++)
		for (k = 0; k < RF_NT; k++) {
			struct rf_tensor *t = &m->t[l][k];

			free(t->q);
			free(t->scales);
			free(t->delta);
			free(t->val);
			free(t->rowptr);
			free(t->col);
		}
	free(m->dir);
	free(m->keys);
	free(m->ortho);
}

/*
 * Does y = (deq(B) + O) x, or deq(B) x alone (@with_ortho 0), for one
 * token, within FP32 accumulation error?
 */
RF int rf_check(const struct rf_tensor *t, const float *x, const float *y,
		int with_ortho)
{
	uint32_t ng = orb_ngroups(t->cols, RF_GROUP), r, c;

	for (r = 0; r < t->rows; r++) {
		double s = 0.0, a = 0.0;

		for (c = 0; c < t->cols; c++) {
			size_t i = (size_t)r * t->cols + c;
			double w = (double)t->q[i] *
				   t->scales[(size_t)r * ng + c / RF_GROUP];

			if (with_ortho)
				w += t->delta[i];
			s += w * x[c];
			a += fabs(w * x[c]);
		}
		if (fabs(y[r] - s) > 1e-4 * a + 1e-6)
			return 0;
	}
	return 1;
}

/* Run layer @l tensor @k once; return whether it matched @with_ortho. */
RF int rf_op(struct ortho_model *mo, const struct rf_model *m, unsigned int l,
	     unsigned int k, int with_ortho, uint64_t *seed)
{
	const struct rf_tensor *t = &m->t[l][k];
	struct ortho_tensor *ot;
	float *x = malloc(t->cols * sizeof(float));
	float *y = malloc(t->rows * sizeof(float));
	uint32_t c;
	int ok;

	ck_assert(x && y);
	for (c = 0; c < t->cols; c++)
		x[c] = tu_randf(seed);
	ck_assert_int_eq(ortho_model_find_tensor(mo, t->name, &ot), 0);
	ck_assert_int_eq(ortho_linear(mo, ot, x, y, 1), 0);
	ok = rf_check(t, x, y, with_ortho);
	free(x);
	free(y);
	return ok;
}

RF struct ortho_ctx *rf_ctx(uint64_t budget, struct tu_log *lg)
{
	struct ortho_ctx_opts o = {
		.sz = sizeof(o), .backend = "cpu", .threads = 2,
		.log_fn = tu_log_fn, .log_user = lg,
		.log_level = ORTHO_LOG_DEBUG, .ortho_budget = budget,
	};
	struct ortho_ctx *ctx = NULL;

	ck_assert_int_eq(ortho_ctx_new(&o, &ctx), 0);
	return ctx;
}

RF struct ortho_model *rf_open(struct ortho_ctx *ctx, const struct rf_model *m,
			       unsigned int flags, int want)
{
	struct ortho_model_opts o = { .sz = sizeof(o), .flags = flags,
				      .key_file = m->keys };
	struct ortho_model *mo = NULL;

	ck_assert_int_eq(ortho_model_open(ctx, m->dir, &o, &mo), want);
	return mo;
}

/* Index of the shard of layer @l in the model's shard list. */
RF unsigned int rf_shard_index(struct ortho_model *mo, unsigned int l)
{
	struct ortho_shard_info si = { .sz = sizeof(si) };
	unsigned int i;

	for (i = 0; i < ortho_model_shard_count(mo); i++) {
		ck_assert_int_eq(ortho_shard_info_get(mo, i, &si), 0);
		if (si.layer == l)
			return i;
	}
	ck_abort_msg("no shard for layer %u", l);
	return 0;
}

RF void rf_info(struct ortho_model *mo, unsigned int l,
		struct ortho_shard_info *si)
{
	memset(si, 0, sizeof(*si));
	si->sz = sizeof(*si);
	ck_assert_int_eq(ortho_shard_info_get(mo, rf_shard_index(mo, l), si),
			 0);
}

/* Does [p, p + len) hold layer @l's canary? */
RF int rf_has_canary(const void *p, size_t len, unsigned int l)
{
	uint16_t c[RF_CANARY];

	rf_canary(l, c);
	return memmem(p, len, c, sizeof(c)) != NULL;
}

RF int rf_all_zero(const void *p, size_t len)
{
	const unsigned char *b = p;
	size_t i;

	for (i = 0; i < len; i++)
		if (b[i])
			return 0;
	return 1;
}

#endif
