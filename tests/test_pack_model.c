// SPDX-License-Identifier: MIT
/*
 * Whole packs with ortho_pack(): tiny synthetic llama2.c models written by
 * the test (dim 32, hidden 64, 2 layers, vocab 32), then the bundled
 * stories260K pair. Every pack that succeeds is decrypted back and checked
 * against the private model; every pack that fails must leave the output
 * directory as it was (absent, or unchanged) and no temporary file behind.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base.h"
#include "fp16.h"
#include "keyfile.h"
#include "shard.h"
#include "testutil.h"

#define D 32u
#define NL 2u
#define NH 4u
#define NKV 2u
#define V 32u
#define SEQ 16u
#define NT (NL * 9 + 2)

static const char *const slot[9] = {
	"attn_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w1", "w2", "w3",
};

struct tmodel {
	uint32_t hid;
	char name[NT][32];
	uint32_t rows[NT], cols[NT];
	int linear[NT];
	float *w[NT];
};

static struct tu_log lg;
static struct ortho_ctx *ctx;
static char *dir;

static void setup(void)
{
	tu_log_clear(&lg);
	ctx = tu_ctx(&lg);
	ck_assert_ptr_nonnull(ctx);
	dir = tu_mkdtemp("pack");
	ck_assert_ptr_nonnull(dir);
}

static void teardown(void)
{
	ortho_ctx_free(ctx);
	tu_rmrf(dir);
	free(dir);
}

static const char *in_dir(const char *name)
{
	static char buf[8][4096];
	static int k;

	k = (k + 1) % 8;
	snprintf(buf[k], sizeof(buf[k]), "%s/%s", dir, name);
	return buf[k];
}

/* ---- synthetic models ---- */

static void set_t(struct tmodel *m, int i, const char *name, uint32_t r,
		  uint32_t c, int linear)
{
	snprintf(m->name[i], sizeof(m->name[i]), "%s", name);
	m->rows[i] = r;
	m->cols[i] = c;
	m->linear[i] = linear;
	m->w[i] = calloc((size_t)r * c, sizeof(float));
	ck_assert_ptr_nonnull(m->w[i]);
}

static void model_public(struct tmodel *m, uint32_t hid, uint64_t seed)
{
	static const int lin[9] = { 0, 1, 1, 1, 1, 0, 1, 1, 1 };
	uint32_t kv = D / NH * NKV;
	char name[32];
	int i = 0, l, s;
	size_t k;

	memset(m, 0, sizeof(*m));
	m->hid = hid;
	set_t(m, i++, "tok_embeddings", V, D, 0);
	for (l = 0; l < (int)NL; l++) {
		for (s = 0; s < 9; s++) {
			uint32_t r = s == 0 || s == 5 ? 1 : s == 2 || s == 3 ? kv :
				     s == 6 || s == 8 ? hid : D;
			uint32_t c = s == 7 ? hid : D;

			snprintf(name, sizeof(name), "layers.%d.%s", l, slot[s]);
			set_t(m, i++, name, r, c, lin[s]);
		}
	}
	set_t(m, i++, "norm", 1, D, 0);
	for (i = 0; i < (int)NT; i++)
		for (k = 0; k < (size_t)m->rows[i] * m->cols[i]; k++)
			m->w[i][k] = m->linear[i] ? 0.1f * tu_randn(&seed) :
				     m->rows[i] == 1 ? 1.0f + 0.05f * tu_randn(&seed) :
						       0.5f * tu_randn(&seed);
}

static float *tw(struct tmodel *m, const char *name)
{
	int i;

	for (i = 0; i < (int)NT; i++)
		if (!strcmp(m->name[i], name))
			return m->w[i];
	ck_abort_msg("no tensor %s", name);
	return NULL;
}

/* A fine-tune: a share of the linear entries moved, the rest untouched. */
static void model_private(struct tmodel *p, const struct tmodel *pub,
			  uint64_t seed, double share)
{
	int i;
	size_t k;

	*p = *pub;
	for (i = 0; i < (int)NT; i++) {
		size_t n = (size_t)pub->rows[i] * pub->cols[i];

		p->w[i] = malloc(n * sizeof(float));
		ck_assert_ptr_nonnull(p->w[i]);
		memcpy(p->w[i], pub->w[i], n * sizeof(float));
		for (k = 0; pub->linear[i] && k < n; k++)
			if ((double)(tu_rand(&seed) >> 11) / 9007199254740992.0 < share)
				p->w[i][k] += 0.01f * tu_randn(&seed);
	}
}

static void model_free(struct tmodel *m)
{
	int i;

	for (i = 0; i < (int)NT; i++)
		free(m->w[i]);
}

/* The llama2.c layout: header, embedding, each slot for all layers, norm, RoPE. */
static void model_write(const struct tmodel *m, const char *path)
{
	int32_t hdr[7] = { D, (int32_t)m->hid, NL, NH, NKV, V, SEQ };
	size_t rope = (size_t)SEQ * (D / NH), len = sizeof(hdr), cap = 1 << 20;
	char *buf = malloc(cap);
	int l, s;

#define PUT(p, n)                                               \
	do {                                                    \
		ck_assert(len + (n) <= cap);                    \
		memcpy(buf + len, (p), (n));                    \
		len += (n);                                     \
	} while (0)
	ck_assert_ptr_nonnull(buf);
	memcpy(buf, hdr, sizeof(hdr));
	PUT(m->w[0], (size_t)V * D * 4);
	for (s = 0; s < 9; s++) {
		for (l = 0; l < (int)NL; l++) {
			int i = 1 + l * 9 + s;

			PUT(m->w[i], (size_t)m->rows[i] * m->cols[i] * 4);
		}
	}
	PUT(m->w[NT - 1], (size_t)D * 4);
	ck_assert(len + rope * 4 <= cap);
	memset(buf + len, 0, rope * 4);
	len += rope * 4;
#undef PUT
	ck_assert_int_eq(tu_write_file(path, buf, len), 0);
	free(buf);
}

/* ---- packing and reading back ---- */

struct rows_seen {
	unsigned int n;
	struct ortho_pack_tensor_report r[NT + 64];
	char names[NT + 64][64];
};

static void on_report(void *user, const struct ortho_pack_tensor_report *r)
{
	struct rows_seen *rs = user;

	if (rs->n >= NT + 64)
		return;
	rs->r[rs->n] = *r;
	snprintf(rs->names[rs->n], sizeof(rs->names[0]), "%s", r->name);
	rs->r[rs->n].name = rs->names[rs->n];
	rs->n++;
}

static int pack(const char *pub, const char *priv, const char *label,
		const char *keys, const char *out, double keep,
		unsigned int flags, struct ortho_pack_summary *sum,
		struct rows_seen *rs)
{
	struct ortho_pack_opts o = {
		.sz = sizeof(o), .public_path = pub, .private_path = priv,
		.label = label, .key_file = keys, .out_dir = out,
		.keep = keep, .flags = flags,
		.report = rs ? on_report : NULL, .report_user = rs,
	};

	if (sum) {
		memset(sum, 0, sizeof(*sum));
		sum->sz = sizeof(*sum);
	}
	if (rs)
		rs->n = 0;
	tu_log_clear(&lg);
	return ortho_pack(ctx, &o, sum);
}

static void *slurp(const char *path, size_t *len)
{
	void *p = tu_read_file(path, len);

	ck_assert_msg(p != NULL, "cannot read %s", path);
	return p;
}

static int same_file(const char *a, const char *b)
{
	size_t la, lb;
	void *pa = slurp(a, &la), *pb = slurp(b, &lb);
	int same = la == lb && !memcmp(pa, pb, la);

	free(pa);
	free(pb);
	return same;
}

/* Nothing but @n entries in the test directory: no temporary leftovers. */
static void assert_entries(int n)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int k = 0;

	ck_assert_ptr_nonnull(d);
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		ck_assert_msg(!strstr(de->d_name, ".tmp-"), "leftover %s",
			      de->d_name);
		k++;
	}
	closedir(d);
	ck_assert_int_eq(k, n);
}

/* The Ortho value at (r, c) of one decrypted tensor, or NaN when none. */
static float view_at(const struct osp_view_tensor *v, uint32_t r, uint32_t c)
{
	uint32_t k;

	if (v->encoding == OSP_DENSE16)
		return fp16_to_f32(v->val[(size_t)r * v->cols + c]);
	for (k = v->rowptr[r]; k < v->rowptr[r + 1]; k++) {
		uint32_t col = v->encoding == OSP_CSR16 ?
				       ((const uint16_t *)v->col)[k] :
				       ((const uint32_t *)v->col)[k];

		if (col == c)
			return fp16_to_f32(v->val[k]);
	}
	return NAN;
}

/* The base.orb table index of @name. */
static unsigned int base_index(const struct orb_file *bf, const char *name)
{
	unsigned int i;

	for (i = 0; i < bf->hdr->tensor_count; i++)
		if (!strcmp(bf->table[i].name, name))
			return i;
	ck_abort_msg("%s not in base.orb", name);
	return 0;
}

/*
 * One decrypted tensor against the models: where the fine-tune moved an
 * entry, deq(B) + O = W_private within FP16 rounding; elsewhere no entry
 * (csr) and deq(B) within half a step of W_public. Return: entries seen.
 */
static uint64_t verify_tensor(const struct orb_file *bf,
			      const struct osp_view_tensor *v,
			      struct tmodel *pub, struct tmodel *priv)
{
	const float *wpub = tw(pub, v->name), *wpriv = tw(priv, v->name);
	unsigned int bi = base_index(bf, v->name);
	const int8_t *q = orb_tensor_data(bf, bi);
	const float *sc = orb_tensor_scales(bf, bi);
	uint32_t g = bf->table[bi].group_size, ng = (v->cols + g - 1) / g;
	uint64_t seen = 0;
	uint32_t r, c;

	for (r = 0; r < v->rows; r++) {
		for (c = 0; c < v->cols; c++) {
			size_t k = (size_t)r * v->cols + c;
			float s = sc[r * ng + c / g], deq = (float)q[k] * s;
			float o = view_at(v, r, c);
			int moved = wpriv[k] != wpub[k];

			ck_assert(fabs(deq - wpub[k]) <= 0.5 * s * (1 + 1e-5));
			if (v->encoding != OSP_DENSE16)
				ck_assert_int_eq(!isnan(o), moved);
			if (moved)
				ck_assert_msg(fabs((double)deq + o - wpriv[k]) <=
						      fabs(o) * 0x1p-11 + 1e-7,
					      "%s[%u,%u]", v->name, r, c);
			seen += moved;
		}
	}
	return seen;
}

/*
 * Decrypt every shard of @label in @out with @keys (a pack with keep 1)
 * and check every linear tensor in it. Return: the Ortho entries seen.
 */
static uint64_t verify_dir(const char *out, const char *label,
			   const char *keys, struct tmodel *pub,
			   struct tmodel *priv)
{
	char path[4096];
	struct orb_file bf;
	struct keyfile kf = { 0 };
	struct osp_view_tensor v[16];
	uint64_t seen = 0;
	struct dirent *de;
	DIR *d;

	snprintf(path, sizeof(path), "%s/base.orb", out);
	ck_assert_int_eq(orb_open(ctx, path, 1, &bf), 0);
	ck_assert_int_eq(keyfile_load(ctx, keys, &kf), 0);
	snprintf(path, sizeof(path), "%s/ortho", out);
	d = opendir(path);
	ck_assert_ptr_nonnull(d);
	while ((de = readdir(d))) {
		const struct keyfile_entry *e;
		struct osh_file f;
		uint32_t bad;
		void *pt;
		int n, t;

		if (de->d_name[0] == '.')
			continue;
		ck_assert_int_eq(strlen(de->d_name), 36);
		ck_assert_str_eq(de->d_name + 32, ".osh");
		snprintf(path, sizeof(path), "%s/ortho/%s", out, de->d_name);
		ck_assert_int_eq(osh_open(ctx, path, &f), 0);
		if (strcmp(f.hdr.label, label)) {
			osh_close(&f);
			continue;
		}
		e = keyfile_find(&kf, f.hdr.shard_id);
		ck_assert_ptr_nonnull(e);
		pt = malloc(f.hdr.plaintext_len);
		ck_assert_ptr_nonnull(pt);
		ck_assert_int_eq(osh_read_all(ctx, &f, e->key, pt, &bad), 0);
		n = osp_parse(ctx, pt, f.hdr.plaintext_len, v, 16);
		ck_assert_int_gt(n, 0);
		for (t = 0; t < n; t++) {
			ck_assert_uint_eq(bf.table[base_index(&bf, v[t].name)].layer,
					  f.hdr.layer);
			seen += verify_tensor(&bf, &v[t], pub, priv);
		}
		free(pt);
		osh_close(&f);
	}
	closedir(d);
	keyfile_free(&kf);
	orb_close(&bf);
	return seen;
}

static uint64_t count_deltas(struct tmodel *pub, struct tmodel *priv)
{
	uint64_t n = 0;
	size_t k;
	int i;

	for (i = 0; i < (int)NT; i++)
		for (k = 0; pub->linear[i] &&
			    k < (size_t)pub->rows[i] * pub->cols[i]; k++)
			n += pub->w[i][k] != priv->w[i][k];
	return n;
}
