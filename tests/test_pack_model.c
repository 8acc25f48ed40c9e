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
	tu_fixture_setup(&lg, &ctx, &dir, "pack");
}

static void teardown(void)
{
	tu_fixture_teardown(ctx, dir);
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

/* Head counts written by model_write() when set: same shapes, other model. */
static int32_t g_heads, g_kv_heads;

/* The llama2.c layout: header, embedding, each slot for all layers, norm, RoPE. */
static void model_write(const struct tmodel *m, const char *path)
{
	int32_t hdr[7] = { D, (int32_t)m->hid, NL, g_heads ? g_heads : (int32_t)NH,
			   g_kv_heads ? g_kv_heads : (int32_t)NKV, V, SEQ };
	size_t rope = (size_t)SEQ * (D / (g_heads ? g_heads : (int32_t)NH)), len = sizeof(hdr), cap = 1 << 20;
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

/*
 * The same model as a Hugging Face checkpoint: @path (.safetensors, F32)
 * and config.json beside it. q_proj and k_proj are written with their
 * rows permuted as transformers' convert_llama_weights_to_hf.py does,
 * w.view(heads, hs / 2, 2, cols).transpose(1, 2).reshape(rows, cols): stored
 * row h * hs + p * hs / 2 + i holds llama2.c row h * hs + 2 * i + p. With
 * @permute 0 they are written in llama2.c order (a wrong conversion).
 */
static const char *const hf_slot[9] = {
	"input_layernorm", "self_attn.q_proj", "self_attn.k_proj",
	"self_attn.v_proj", "self_attn.o_proj", "post_attention_layernorm",
	"mlp.gate_proj", "mlp.down_proj", "mlp.up_proj",
};

static void model_write_hf(const struct tmodel *m, const char *path,
			   const char *config, int permute)
{
	size_t cap = 1 << 20, jcap = 16384, jl = 0, off = 0, len;
	char *json = malloc(jcap), *buf = malloc(cap), name[80];
	uint32_t hs = D / NH, r, j;
	uint64_t hl;
	int i;

	ck_assert(json && buf);
	jl += (size_t)snprintf(json, jcap, "{\"__metadata__\":{\"format\":\"pt\"}");
	for (i = 0; i < (int)NT; i++) {
		size_t b = (size_t)m->rows[i] * m->cols[i] * 4;

		if (i == 0)
			snprintf(name, sizeof(name), "model.embed_tokens.weight");
		else if (i == (int)NT - 1)
			snprintf(name, sizeof(name), "model.norm.weight");
		else
			snprintf(name, sizeof(name), "model.layers.%d.%s.weight",
				 (i - 1) / 9, hf_slot[(i - 1) % 9]);
		if (m->rows[i] == 1)
			jl += (size_t)snprintf(json + jl, jcap - jl,
					       ",\"%s\":{\"dtype\":\"F32\",\"shape\":[%u],\"data_offsets\":[%zu,%zu]}",
					       name, m->cols[i], off, off + b);
		else
			jl += (size_t)snprintf(json + jl, jcap - jl,
					       ",\"%s\":{\"dtype\":\"F32\",\"shape\":[%u,%u],\"data_offsets\":[%zu,%zu]}",
					       name, m->rows[i], m->cols[i], off,
					       off + b);
		ck_assert_uint_lt(jl, jcap - 8);
		off += b;
	}
	json[jl++] = '}';
	while (jl % 8)
		json[jl++] = ' ';
	len = 8 + jl + off;
	ck_assert_uint_le(len, cap);
	hl = jl;
	memcpy(buf, &hl, 8);
	memcpy(buf + 8, json, jl);
	off = 8 + jl;
	for (i = 0; i < (int)NT; i++) {
		int qk = i > 0 && i < (int)NT - 1 &&
			 ((i - 1) % 9 == 1 || (i - 1) % 9 == 2);

		for (r = 0; r < m->rows[i]; r++) {
			uint32_t src = r;

			if (qk && permute) {
				j = r % hs;
				src = r - j + 2 * (j % (hs / 2)) + j / (hs / 2);
			}
			memcpy(buf + off, m->w[i] + (size_t)src * m->cols[i],
			       (size_t)m->cols[i] * 4);
			off += (size_t)m->cols[i] * 4;
		}
	}
	ck_assert_int_eq(tu_write_file(path, buf, len), 0);
	snprintf(json, jcap,
		 "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": %u,\n"
		 " \"num_attention_heads\": %u, \"num_key_value_heads\": %u,\n"
		 " \"max_position_embeddings\": %u, \"rms_norm_eps\": 1e-05}\n",
		 D, NH, NKV, SEQ);
	ck_assert_int_eq(tu_write_file(config, json, strlen(json)), 0);
	free(json);
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

static uint32_t g_group;	/* 0: the default */

static int pack(const char *pub, const char *priv, const char *label,
		const char *keys, const char *out, double keep,
		unsigned int flags, struct ortho_pack_summary *sum,
		struct rows_seen *rs)
{
	struct ortho_pack_opts o = {
		.sz = sizeof(o), .public_path = pub, .private_path = priv,
		.label = label, .key_file = keys, .out_dir = out,
		.keep = keep, .flags = flags, .group_size = g_group,
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
 * Call @fn with each shard of @label in @out, opened, and its plaintext
 * (decrypted with @keys; @fn owns it). Shards of other labels are skipped,
 * unless @only: then every shard must be of @label.
 */
typedef void (*shard_fn)(void *user, const struct osh_file *f, void *pt);

static void each_shard(const char *out, const char *label, const char *keys,
		       int only, shard_fn fn, void *user)
{
	struct keyfile kf = { 0 };
	char path[4096];
	struct dirent *de;
	DIR *d;

	ck_assert_int_eq(keyfile_load(ctx, keys, &kf), 0);
	snprintf(path, sizeof(path), "%s/ortho", out);
	d = opendir(path);
	ck_assert_ptr_nonnull(d);
	while ((de = readdir(d))) {
		const struct keyfile_entry *e;
		struct osh_file f;
		uint32_t bad;
		void *pt;

		if (de->d_name[0] == '.')
			continue;
		ck_assert_int_eq(strlen(de->d_name), 36);
		ck_assert_str_eq(de->d_name + 32, ".osh");
		snprintf(path, sizeof(path), "%s/ortho/%s", out, de->d_name);
		ck_assert_int_eq(osh_open(ctx, path, &f), 0);
		if (strcmp(f.hdr.label, label)) {
			ck_assert_msg(!only, "%s: a shard of label %s", path,
				      f.hdr.label);
			osh_close(&f);
			continue;
		}
		e = keyfile_find(&kf, f.hdr.shard_id);
		ck_assert_ptr_nonnull(e);
		pt = malloc(f.hdr.plaintext_len);
		ck_assert_ptr_nonnull(pt);
		ck_assert_int_eq(osh_read_all(ctx, &f, e->key, pt, &bad), 0);
		fn(user, &f, pt);
		osh_close(&f);
	}
	closedir(d);
	keyfile_free(&kf);
}

struct verify_state {
	struct orb_file bf;
	struct tmodel *pub, *priv;
	uint64_t seen;
};

static void verify_shard(void *user, const struct osh_file *f, void *pt)
{
	struct verify_state *vs = user;
	struct osp_view_tensor v[16];
	int n, t;

	n = osp_parse(ctx, pt, f->hdr.plaintext_len, v, 16);
	ck_assert_int_gt(n, 0);
	for (t = 0; t < n; t++) {
		ck_assert_uint_eq(vs->bf.table[base_index(&vs->bf,
							  v[t].name)].layer,
				  f->hdr.layer);
		vs->seen += verify_tensor(&vs->bf, &v[t], vs->pub, vs->priv);
	}
	free(pt);
}

/*
 * Decrypt every shard of @label in @out with @keys (a pack with keep 1)
 * and check every linear tensor in it. Return: the Ortho entries seen.
 */
static uint64_t verify_dir(const char *out, const char *label,
			   const char *keys, struct tmodel *pub,
			   struct tmodel *priv)
{
	struct verify_state vs = { .pub = pub, .priv = priv };
	char path[4096];

	snprintf(path, sizeof(path), "%s/base.orb", out);
	ck_assert_int_eq(orb_open(ctx, path, 1, &vs.bf), 0);
	each_shard(out, label, keys, 0, verify_shard, &vs);
	orb_close(&vs.bf);
	return vs.seen;
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

/* ---- the tests ---- */

static struct tmodel pub, pa, pb;

/* pub.bin, a.bin (a dense fine-tune) and b.bin (a sparse one). */
static void models(void)
{
	model_public(&pub, 64, 1);
	model_private(&pa, &pub, 2, 0.7);
	model_private(&pb, &pub, 3, 0.02);
	model_write(&pub, in_dir("pub.bin"));
	model_write(&pa, in_dir("a.bin"));
	model_write(&pb, in_dir("b.bin"));
}

static void models_free(void)
{
	model_free(&pub);
	model_free(&pa);
	model_free(&pb);
}

static void assert_summary(const struct ortho_pack_summary *s,
			   const struct rows_seen *rs, uint64_t deltas)
{
	uint64_t lin = 0, ent = 0;
	unsigned int i;

	ck_assert_uint_eq(s->tensors, NT);
	ck_assert_uint_eq(s->linear_tensors, NL * 7);
	ck_assert_uint_eq(s->shards, NL);
	ck_assert(s->energy_kept >= 1.0 - 1e-12 && s->energy_kept <= 1.0 + 1e-12);
	ck_assert_uint_eq(s->ortho_entries, deltas);
	ck_assert(s->base_max_err_steps > 0.4 && s->base_max_err_steps <= 0.5 + 1e-4);
	ck_assert_uint_eq(rs->n, NT);
	ck_assert_str_eq(rs->r[0].name, "tok_embeddings");
	ck_assert_str_eq(rs->r[1].name, "layers.0.attn_norm");
	ck_assert_str_eq(rs->r[NT - 1].name, "norm");
	for (i = 0; i < rs->n; i++) {
		const struct ortho_pack_tensor_report *r = &rs->r[i];

		ck_assert_uint_eq(r->is_linear, pub.linear[i]);
		ck_assert_uint_eq(r->rows, pub.rows[i]);
		ck_assert(fabs(r->density - (double)r->ortho_entries /
						    (r->rows * r->cols)) < 1e-12);
		if (!r->is_linear) {
			ck_assert_str_eq(r->encoding, "-");
			ck_assert_uint_eq(r->ortho_entries, 0);
			continue;
		}
		ck_assert(r->base_max_err_steps <= 0.5 + 1e-4);
		ck_assert(r->base_max_err > 0);
		ck_assert(r->energy_kept >= 1.0 - 1e-12);
		lin += (uint64_t)r->rows * r->cols;
		ent += r->ortho_entries;
	}
	ck_assert_uint_eq(s->linear_entries, lin);
	ck_assert_uint_eq(s->ortho_entries, ent);
}

START_TEST(pack_private_and_read_back)
{
	struct ortho_pack_summary s;
	struct rows_seen rs;
	struct stat st;
	unsigned int i;
	int ret;

	g_group = _i ? 24 : 0;	/* 24: every row ends in a short group */
	models();
	ret = pack(in_dir("pub.bin"), in_dir("a.bin"), "tenant-a",
		   in_dir("keys"), in_dir("out"), 0, 0, &s, &rs);
	ck_assert_msg(ret == 0, "%d: %s", ret, lg.buf);
	assert_summary(&s, &rs, count_deltas(&pub, &pa));
	ck_assert_int_eq(stat(in_dir("keys"), &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0600);
	ck_assert_int_eq(stat(in_dir("out/base.orb"), &st), 0);
	ck_assert_uint_eq(s.base_bytes, (uint64_t)st.st_size);
	ck_assert_int_eq(tu_count_entries(in_dir("out/ortho")), NL);
	ck_assert_uint_eq(verify_dir(in_dir("out"), "tenant-a", in_dir("keys"),
				     &pub, &pa),
			  count_deltas(&pub, &pa));
	/* The sparse fine-tune is stored as csr. */
	ret = pack(in_dir("pub.bin"), in_dir("b.bin"), "tenant-b",
		   in_dir("keys-b"), in_dir("out-b"), 1.0, 0, &s, &rs);
	ck_assert_msg(ret == 0, "%d: %s", ret, lg.buf);
	assert_summary(&s, &rs, count_deltas(&pub, &pb));
	for (i = 0; i < rs.n; i++)
		if (rs.r[i].is_linear)
			ck_assert_str_eq(rs.r[i].encoding, "csr16");
	ck_assert_uint_eq(verify_dir(in_dir("out-b"), "tenant-b",
				     in_dir("keys-b"), &pub, &pb),
			  count_deltas(&pub, &pb));
	assert_entries(7);
	g_group = 0;
	models_free();
}
END_TEST

START_TEST(base_is_public_only)
{
	struct ortho_pack_summary s1, s2, s3;

	models();
	ck_assert_int_eq(pack(in_dir("pub.bin"), in_dir("a.bin"), "a",
			      in_dir("k1"), in_dir("o1"), 0, 0, &s1, NULL), 0);
	ck_assert_int_eq(pack(in_dir("pub.bin"), in_dir("b.bin"), "b",
			      in_dir("k2"), in_dir("o2"), 0.5, 0, &s2, NULL), 0);
	ck_assert_int_eq(pack(in_dir("pub.bin"), NULL, NULL, NULL,
			      in_dir("o3"), 0, 0, &s3, NULL), 0);
	ck_assert(same_file(in_dir("o1/base.orb"), in_dir("o2/base.orb")));
	ck_assert(same_file(in_dir("o1/base.orb"), in_dir("o3/base.orb")));
	ck_assert_mem_eq(s1.model_id, s2.model_id, 32);
	ck_assert_mem_eq(s1.model_id, s3.model_id, 32);
	/* Base only: no shard, no key file. */
	ck_assert_uint_eq(s3.shards, 0);
	ck_assert_uint_eq(s3.ortho_entries, 0);
	ck_assert_int_le(tu_count_entries(in_dir("o3/ortho")), 0);
	assert_entries(8);
	models_free();
}
END_TEST

struct layers {
	void **pt;
	uint64_t *len;
};

static void keep_layer(void *user, const struct osh_file *f, void *pt)
{
	struct layers *ly = user;
	struct osp_view_tensor v[16];

	ck_assert_uint_lt(f->hdr.layer, NL);
	ck_assert_ptr_null(ly->pt[f->hdr.layer]);
	ly->len[f->hdr.layer] = f->hdr.plaintext_len;
	ly->pt[f->hdr.layer] = pt;
	ck_assert_int_gt(osp_parse(ctx, pt, f->hdr.plaintext_len, v, 16), 0);
}

/* The plaintext of every shard of @label in @out, by layer. */
static void decrypt_layers(const char *out, const char *label,
			   const char *keys, void *pt[NL], uint64_t len[NL])
{
	struct layers ly = { pt, len };

	memset(pt, 0, NL * sizeof(*pt));
	each_shard(out, label, keys, 1, keep_layer, &ly);
}

/*
 * The model as Hugging Face safetensors (q/k permuted the HF way) packs to
 * exactly what the llama2.c .bin gives: the same model id, a byte-identical
 * base.orb, and shards that decrypt to the same Ortho. Written without the
 * permutation it gives another Base.
 */
START_TEST(safetensors_same_pack)
{
	struct ortho_pack_summary sb, sh, s1, s2;
	void *ptb[NL], *pth[NL];
	uint64_t lb[NL], lh[NL];
	unsigned int l;

	models();
	ck_assert_int_eq(mkdir(in_dir("hf"), 0755), 0);
	ck_assert_int_eq(mkdir(in_dir("bad"), 0755), 0);
	model_write_hf(&pub, in_dir("hf/pub.safetensors"),
		       in_dir("hf/config.json"), 1);
	model_write_hf(&pa, in_dir("hf/a.safetensors"),
		       in_dir("hf/config.json"), 1);
	model_write_hf(&pub, in_dir("bad/pub.safetensors"),
		       in_dir("bad/config.json"), 0);
	ck_assert_int_eq(pack(in_dir("pub.bin"), in_dir("a.bin"), "a",
			      in_dir("kb"), in_dir("ob"), 0, 0, &sb, NULL), 0);
	ck_assert_msg(pack(in_dir("hf/pub.safetensors"),
			   in_dir("hf/a.safetensors"), "a", in_dir("kh"),
			   in_dir("oh"), 0, 0, &sh, NULL) == 0, "%s", lg.buf);
	ck_assert(tu_log_has(&lg, "safetensors checkpoint: dim 32, hidden 64, 2 layers, 4/2 heads"));
	ck_assert_mem_eq(sb.model_id, sh.model_id, 32);
	ck_assert(same_file(in_dir("ob/base.orb"), in_dir("oh/base.orb")));
	ck_assert_uint_eq(sb.ortho_entries, sh.ortho_entries);
	ck_assert_uint_eq(sh.shards, NL);
	decrypt_layers(in_dir("ob"), "a", in_dir("kb"), ptb, lb);
	decrypt_layers(in_dir("oh"), "a", in_dir("kh"), pth, lh);
	for (l = 0; l < NL; l++) {
		ck_assert_ptr_nonnull(ptb[l]);
		ck_assert_ptr_nonnull(pth[l]);
		ck_assert_uint_eq(lb[l], lh[l]);
		ck_assert_msg(!memcmp(ptb[l], pth[l], lb[l]),
			      "layer %u: the Ortho differs", l);
		free(ptb[l]);
		free(pth[l]);
	}
	ck_assert_uint_eq(verify_dir(in_dir("oh"), "a", in_dir("kh"), &pub, &pa),
			  count_deltas(&pub, &pa));
	/* Base only, from either format: the same Base. */
	ck_assert_int_eq(pack(in_dir("hf/pub.safetensors"), NULL, NULL, NULL,
			      in_dir("o1"), 0, 0, &s1, NULL), 0);
	ck_assert(same_file(in_dir("ob/base.orb"), in_dir("o1/base.orb")));
	/* q and k left in llama2.c order are read as HF order: wrong. */
	ck_assert_int_eq(pack(in_dir("bad/pub.safetensors"), NULL, NULL, NULL,
			      in_dir("o2"), 0, 0, &s2, NULL), 0);
	ck_assert(memcmp(s1.model_id, s2.model_id, 32));
	models_free();
}
END_TEST

START_TEST(second_private_model)
{
	struct ortho_pack_summary s;
	size_t blen;
	void *base;

	models();
	ck_assert_int_eq(pack(in_dir("pub.bin"), in_dir("a.bin"), "a",
			      in_dir("k1"), in_dir("out"), 0, 0, &s, NULL), 0);
	base = slurp(in_dir("out/base.orb"), &blen);
	ck_assert_int_eq(pack(in_dir("pub.bin"), in_dir("b.bin"), "b",
			      in_dir("k2"), in_dir("out"), 0, 0, &s, NULL), 0);
	ck_assert_uint_eq(s.shards, NL);
	ck_assert_int_eq(tu_count_entries(in_dir("out/ortho")), 2 * NL);
	ck_assert_int_eq(tu_write_file(in_dir("base.copy"), base, blen), 0);
	ck_assert(same_file(in_dir("out/base.orb"), in_dir("base.copy")));
	ck_assert_uint_eq(verify_dir(in_dir("out"), "a", in_dir("k1"), &pub, &pa),
			  count_deltas(&pub, &pa));
	ck_assert_uint_eq(verify_dir(in_dir("out"), "b", in_dir("k2"), &pub, &pb),
			  count_deltas(&pub, &pb));
	/* A label already there is refused; nothing changes. */
	ck_assert_int_eq(pack(in_dir("pub.bin"), in_dir("b.bin"), "a",
			      in_dir("k3"), in_dir("out"), 0, 0, &s, NULL),
			 -EEXIST);
	ck_assert(tu_log_has(&lg, "label \"a\" is already"));
	ck_assert_int_eq(tu_count_entries(in_dir("out/ortho")), 2 * NL);
	ck_assert(!tu_exists(in_dir("k3")));
	ck_assert(same_file(in_dir("out/base.orb"), in_dir("base.copy")));
	assert_entries(7);
	free(base);
	models_free();
}
END_TEST

START_TEST(other_public_model_refused)
{
	struct tmodel p2, c2;
	struct ortho_pack_summary s;
	size_t blen;
	void *base;

	models();
	model_public(&p2, 64, 9);
	model_private(&c2, &p2, 10, 0.5);
	model_write(&p2, in_dir("p2.bin"));
	model_write(&c2, in_dir("c2.bin"));
	ck_assert_int_eq(pack(in_dir("pub.bin"), in_dir("a.bin"), "a",
			      in_dir("k1"), in_dir("out"), 0, 0, &s, NULL), 0);
	base = slurp(in_dir("out/base.orb"), &blen);
	ck_assert_int_eq(tu_write_file(in_dir("base.copy"), base, blen), 0);
	free(base);
	ck_assert_int_eq(pack(in_dir("p2.bin"), in_dir("c2.bin"), "c",
			      in_dir("k2"), in_dir("out"), 0, 0, &s, NULL),
			 -EXDEV);
	ck_assert(tu_log_has(&lg, "holds another Base"));
	ck_assert(!tu_exists(in_dir("k2")));
	ck_assert_int_eq(tu_count_entries(in_dir("out/ortho")), NL);
	ck_assert(same_file(in_dir("out/base.orb"), in_dir("base.copy")));
	ck_assert_int_eq(pack(in_dir("p2.bin"), NULL, NULL, NULL, in_dir("out"),
			      0, 0, &s, NULL), -EXDEV);
	/* The same public model alone: nothing to add, nothing changed. */
	ck_assert_int_eq(pack(in_dir("pub.bin"), NULL, NULL, NULL, in_dir("out"),
			      0, 0, &s, NULL), 0);
	ck_assert_int_eq(tu_count_entries(in_dir("out/ortho")), NL);
	ck_assert_int_eq(tu_count_entries(in_dir("out")), 2);
	ck_assert(same_file(in_dir("out/base.orb"), in_dir("base.copy")));
	assert_entries(8);
	model_free(&p2);
	model_free(&c2);
	models_free();
}
END_TEST

/* A private model broken in one way: refused, and nothing written. */
START_TEST(private_refused)
{
	static const struct {
		const char *tensor;
		int err;
		const char *msg;
	} c[] = {
		{ "layers.1.ffn_norm", -EINVAL, "layers.1.ffn_norm differs" },
		{ "tok_embeddings", -EINVAL, "tok_embeddings differs" },
		{ "layers.0.wv", -EINVAL, "layers.0.wv: NaN at row" },
		{ "layers.1.w1", -EINVAL, "layers.1.w1: Inf at row" },
		{ "layers.1.w2", -EDOM, "layers.1.w2: Ortho value at row 0 col 5 overflows FP16" },
		{ "shape", -EINVAL, "layers.0.w1: shape 48x32" },
		{ "heads", -EINVAL, "n_heads is 8, the public model's is 4" },
	};
	struct tmodel bad;

	models();
	if (!strcmp(c[_i].tensor, "shape")) {
		model_public(&bad, 48, 1);
	} else if (!strcmp(c[_i].tensor, "heads")) {
		model_private(&bad, &pa, 0, 0.0);
		g_heads = 8;	/* head size 4, kv_dim 16: the same shapes */
		g_kv_heads = 4;
	} else {
		model_private(&bad, &pa, 0, 0.0);
		tw(&bad, c[_i].tensor)[5] += 0.5f;
		if (_i == 1)	/* every differing tensor is named */
			tw(&bad, "norm")[0] = 2.0f;
		if (_i == 2)
			tw(&bad, c[_i].tensor)[40] = NAN;
		if (_i == 3)
			tw(&bad, c[_i].tensor)[40] = -INFINITY;
		if (_i == 4)
			tw(&bad, c[_i].tensor)[5] = tw(&pub, c[_i].tensor)[5] + 1e5f;
	}
	model_write(&bad, in_dir("bad.bin"));
	g_heads = g_kv_heads = 0;
	ck_assert_int_eq(pack(in_dir("pub.bin"), in_dir("bad.bin"), "x",
			      in_dir("keys"), in_dir("out"), 0, 0, NULL, NULL),
			 c[_i].err);
	if (!tu_log_has(&lg, c[_i].msg))
		ck_abort_msg("case %d: log lacks \"%s\": %s", _i, c[_i].msg,
			     lg.buf);
	if (_i == 1)
		ck_assert(tu_log_has(&lg, "tensor norm differs"));
	ck_assert(!tu_exists(in_dir("out")));
	ck_assert(!tu_exists(in_dir("keys")));
	assert_entries(4);
	/* The same check on the public side: Inf in a norm. */
	if (_i == 3) {
		tw(&bad, c[_i].tensor)[40] = 0.0f;
		tw(&bad, "norm")[7] = INFINITY;
		model_write(&bad, in_dir("bad.bin"));
		ck_assert_int_eq(pack(in_dir("bad.bin"), NULL, NULL, NULL,
				      in_dir("out"), 0, 0, NULL, NULL), -EINVAL);
		ck_assert(tu_log_has(&lg, "tensor norm: Inf at row 0 col 7"));
		ck_assert(!tu_exists(in_dir("out")));
	}
	model_free(&bad);
	models_free();
}
END_TEST

START_TEST(key_file_exists)
{
	struct ortho_pack_summary s;
	struct stat st;
	size_t len;
	char *old;

	models();
	ck_assert_int_eq(tu_write_file(in_dir("keys"), "old\n", 4), 0);
	ck_assert_int_eq(pack(in_dir("pub.bin"), in_dir("a.bin"), "a",
			      in_dir("keys"), in_dir("out"), 0, 0, &s, NULL),
			 -EEXIST);
	ck_assert(!tu_exists(in_dir("out")));
	old = slurp(in_dir("keys"), &len);
	ck_assert_str_eq(old, "old\n");
	free(old);
	assert_entries(4);
	ck_assert_int_eq(pack(in_dir("pub.bin"), in_dir("a.bin"), "a",
			      in_dir("keys"), in_dir("out"), 0,
			      ORTHO_PACK_FORCE, &s, NULL), 0);
	ck_assert_int_eq(stat(in_dir("keys"), &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0600);
	ck_assert_uint_eq(verify_dir(in_dir("out"), "a", in_dir("keys"), &pub, &pa),
			  count_deltas(&pub, &pa));
	models_free();
}
END_TEST

static int cmp_desc(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? 1 : x > y ? -1 : 0;
}

/* keep E: the smallest set over the whole model, against a sort. */
START_TEST(keep_share)
{
	static const double keeps[] = { 0.5, 0.9 };
	double keep = keeps[_i], *e = malloc(NT * 64 * 64 * sizeof(double));
	struct ortho_pack_summary s;
	struct rows_seen rs;
	long double total = 0, acc = 0;
	uint64_t n = 0, k = 0;
	size_t j;
	int i;

	ck_assert_ptr_nonnull(e);
	models();
	for (i = 0; i < (int)NT; i++) {
		for (j = 0; pub.linear[i] && j < (size_t)pub.rows[i] * pub.cols[i]; j++) {
			float d = pa.w[i][j] - pub.w[i][j];

			e[n] = (double)d * d;
			total += e[n++];
		}
	}
	qsort(e, n, sizeof(double), cmp_desc);
	while (acc < keep * total)
		acc += e[k++];
	ck_assert_int_eq(pack(in_dir("pub.bin"), in_dir("a.bin"), "a",
			      in_dir("keys"), in_dir("out"), keep, 0, &s, &rs), 0);
	ck_assert_uint_eq(s.ortho_entries, k);
	ck_assert(s.energy_kept >= keep && s.energy_kept < keep + 0.01);
	ck_assert_uint_lt(s.ortho_entries, count_deltas(&pub, &pa));
	for (i = 0; i < (int)rs.n; i++)
		ck_assert(rs.r[i].energy_kept >= 0.0 && rs.r[i].energy_kept <= 1.0);
	free(e);
	models_free();
}
END_TEST

START_TEST(bad_out_dir_and_options)
{
	struct ortho_pack_opts o = { .sz = sizeof(o) };

	models();
	ck_assert_int_eq(mkdir(in_dir("full"), 0755), 0);
	ck_assert_int_eq(tu_write_file(in_dir("full/x"), "x", 1), 0);
	ck_assert_int_eq(pack(in_dir("pub.bin"), NULL, NULL, NULL,
			      in_dir("full"), 0, 0, NULL, NULL), -EEXIST);
	ck_assert_int_eq(tu_count_entries(in_dir("full")), 1);
	ck_assert_int_eq(pack(in_dir("pub.bin"), NULL, NULL, NULL,
			      in_dir("a.bin"), 0, 0, NULL, NULL), -ENOTDIR);
	ck_assert_int_eq(pack(in_dir("pub.bin"), in_dir("a.bin"), "has blank",
			      in_dir("k"), in_dir("out"), 0, 0, NULL, NULL), -EINVAL);
	ck_assert_int_eq(pack(in_dir("pub.bin"), in_dir("a.bin"), "a", NULL,
			      in_dir("out"), 0, 0, NULL, NULL), -EINVAL);
	ck_assert_int_eq(pack(in_dir("pub.bin"), NULL, "a", NULL,
			      in_dir("out"), 0, 0, NULL, NULL), -EINVAL);
	ck_assert_int_eq(pack(in_dir("pub.bin"), in_dir("a.bin"), "a",
			      in_dir("k"), in_dir("out"), 1.5, 0, NULL, NULL),
			 -EINVAL);
	ck_assert_int_eq(pack(in_dir("none.bin"), NULL, NULL, NULL,
			      in_dir("out"), 0, 0, NULL, NULL), -ENOENT);
	ck_assert_int_eq(ortho_pack(ctx, NULL, NULL), -EINVAL);
	o.public_path = in_dir("pub.bin");
	ck_assert_int_eq(ortho_pack(ctx, &o, NULL), -EINVAL);
	assert_entries(4);
	/* An empty directory is as good as none. */
	ck_assert_int_eq(mkdir(in_dir("empty"), 0755), 0);
	ck_assert_int_eq(pack(in_dir("pub.bin"), NULL, NULL, NULL,
			      in_dir("empty/"), 0, 0, NULL, NULL), 0);
	ck_assert(tu_exists(in_dir("empty/base.orb")));
	models_free();
}
END_TEST

/* The bundled pair: the figures of tests/data/FIXTURES.md. */
START_TEST(real_fixture)
{
	char *pubp = tu_srcpath("tests/data/stories260K/stories260K.bin");
	char *privp = tu_srcpath("tests/data/private-a/stories260K-private-a.bin");
	struct ortho_pack_summary s;
	struct rows_seen rs;
	unsigned int i;
	int ret;

	ret = pack(pubp, privp, "private-a", in_dir("keys"), in_dir("model"),
		   0, 0, &s, &rs);
	ck_assert_msg(ret == 0, "%d: %s", ret, lg.buf);
	ck_assert_uint_eq(s.tensors, 47);
	ck_assert_uint_eq(s.linear_tensors, 35);
	ck_assert_uint_eq(s.shards, 5);
	ck_assert(s.base_max_err_steps <= 0.5 + 1e-4);
	ck_assert(s.energy_kept >= 1.0 - 1e-12);
	ck_assert_uint_eq(s.linear_entries, 226560);
	ck_assert((double)s.ortho_entries / (double)s.linear_entries >= 0.99);
	for (i = 0; i < rs.n; i++) {
		ck_assert(rs.r[i].base_max_err_steps <= 0.5 + 1e-4);
		if (rs.r[i].is_linear)
			ck_assert(rs.r[i].density >= 0.95);
	}
	ck_assert_int_eq(tu_count_entries(in_dir("model/ortho")), 5);
	free(pubp);
	free(privp);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("pack_model");
	TCase *tc = tcase_create("synthetic");
	TCase *tf = tcase_create("fixture");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, pack_private_and_read_back, 0, 2);
	tcase_add_test(tc, base_is_public_only);
	tcase_add_test(tc, safetensors_same_pack);
	tcase_add_test(tc, second_private_model);
	tcase_add_test(tc, other_public_model_refused);
	tcase_add_loop_test(tc, private_refused, 0, 7);
	tcase_add_test(tc, key_file_exists);
	tcase_add_loop_test(tc, keep_share, 0, 2);
	tcase_add_test(tc, bad_out_dir_and_options);
	suite_add_tcase(s, tc);

	tcase_add_checked_fixture(tf, setup, teardown);
	tcase_set_timeout(tf, 60);
	tcase_add_test(tf, real_fixture);
	suite_add_tcase(s, tf);

	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
