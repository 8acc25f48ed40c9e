// SPDX-License-Identifier: MIT
/*
 * Checkpoint readers: llama2.c and safetensors files written here, read
 * back through the canonical names; every corrupt or unsupported input is
 * refused with the right error and a message naming what is wrong.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint.h"
#include "fp16.h"
#include "testutil.h"

static struct tu_log lg;
static struct ortho_ctx *ctx;
static char *dir;

static void setup(void)
{
	tu_fixture_setup(&lg, &ctx, &dir, "ckpt");
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

/*
 * The value of element @k of canonical tensor @name: multiples of 1/8 in
 * [-4, 4), exact in F16 and BF16, and different from tensor to tensor.
 */
static float val(const char *name, uint64_t k)
{
	uint32_t h = 2166136261u;

	while (*name)
		h = (h ^ (uint8_t)*name++) * 16777619u;
	return (float)((h + k * 7) % 64) * 0.125f - 4.0f;
}

/* ---- llama2.c ---- */

struct l2c {
	int32_t hdr[7];
	float *f;
	size_t nf, cap;
};

static void l2c_put(struct l2c *m, const char *name, uint64_t n)
{
	uint64_t k;

	if (m->nf + n > m->cap) {
		m->cap = (m->nf + n) * 2;
		m->f = realloc(m->f, m->cap * sizeof(float));
		ck_assert_ptr_nonnull(m->f);
	}
	for (k = 0; k < n; k++)
		m->f[m->nf++] = name ? val(name, k) : 7777.0f;
}

static const char *const slot_name[9] = {
	"attn_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w1", "w2", "w3",
};

/* A llama2.c file in the NOTICE's order, written independently of the reader. */
static void l2c_build(struct l2c *m, int dim, int hid, int nl, int nh, int nkv,
		      int vocab, int seq, int shared)
{
	int kv = dim / nh * nkv, s, l;
	char name[64];

	memset(m, 0, sizeof(*m));
	m->hdr[0] = dim;
	m->hdr[1] = hid;
	m->hdr[2] = nl;
	m->hdr[3] = nh;
	m->hdr[4] = nkv;
	m->hdr[5] = shared ? vocab : -vocab;
	m->hdr[6] = seq;
	l2c_put(m, "tok_embeddings", (uint64_t)vocab * dim);
	for (s = 0; s < 9; s++) {
		for (l = 0; l < nl; l++) {
			uint64_t n = s == 0 || s == 5 ? (uint64_t)dim :
				     s == 2 || s == 3 ? (uint64_t)kv * dim :
				     s >= 6 ? (uint64_t)hid * dim :
					      (uint64_t)dim * dim;

			snprintf(name, sizeof(name), "layers.%d.%s", l,
				 slot_name[s]);
			l2c_put(m, name, n);
		}
	}
	l2c_put(m, "norm", dim);
	l2c_put(m, NULL, (uint64_t)seq * (dim / nh));	/* both RoPE tables */
	if (!shared)
		l2c_put(m, "output", (uint64_t)vocab * dim);
}

static void l2c_write(const struct l2c *m, const char *path, long trim)
{
	size_t len = sizeof(m->hdr) + m->nf * sizeof(float);
	char *buf = malloc(len + 16);

	ck_assert_ptr_nonnull(buf);
	memcpy(buf, m->hdr, sizeof(m->hdr));
	memcpy(buf + sizeof(m->hdr), m->f, m->nf * sizeof(float));
	memset(buf + len, 0, 16);
	ck_assert_int_eq(tu_write_file(path, buf, (size_t)((long)len + trim)),
			 0);
	free(buf);
}

static void assert_values(struct ckpt *c)
{
	unsigned int i;
	uint64_t k;

	for (i = 0; i < c->n; i++) {
		const float *w;

		ck_assert_int_eq(ckpt_tensor_f32(&c->t[i], &w), 0);
		for (k = 0; k < ckpt_numel(&c->t[i]); k++)
			if (w[k] != val(c->t[i].name, k))
				ck_abort_msg("%s[%llu] = %g, want %g",
					     c->t[i].name, (unsigned long long)k,
					     w[k], val(c->t[i].name, k));
	}
}

START_TEST(l2c_round_trip)
{
	struct ckpt c;
	struct l2c m;
	int shared = _i;

	l2c_build(&m, 16, 40, 3, 4, 2, 24, 10, shared);
	l2c_write(&m, in_dir("m.bin"), 0);
	ck_assert_int_eq(ckpt_open(ctx, in_dir("m.bin"), &c), 0);
	ck_assert_uint_eq(c.cfg.dim, 16);
	ck_assert_uint_eq(c.cfg.hidden_dim, 40);
	ck_assert_uint_eq(c.cfg.n_layers, 3);
	ck_assert_uint_eq(c.cfg.n_heads, 4);
	ck_assert_uint_eq(c.cfg.n_kv_heads, 2);
	ck_assert_uint_eq(c.cfg.vocab_size, 24);
	ck_assert_uint_eq(c.cfg.seq_len, 10);
	ck_assert_uint_eq(c.cfg.shared_classifier, shared);
	ck_assert_uint_eq(c.n, 3 * 9 + 2 + !shared);
	ck_assert_int_eq(ckpt_find(&c, "output") >= 0, !shared);
	ck_assert_int_ge(ckpt_find(&c, "layers.2.w2"), 0);
	ck_assert_int_eq(ckpt_find(&c, "layers.3.w2"), -ENOENT);
	ck_assert_uint_eq(c.t[ckpt_find(&c, "layers.1.wk")].rows, 8);
	ck_assert_uint_eq(c.t[ckpt_find(&c, "layers.1.w2")].cols, 40);
	ck_assert_uint_eq(c.t[ckpt_find(&c, "layers.1.w2")].layer, 1);
	ck_assert_uint_eq(c.t[ckpt_find(&c, "layers.1.w2")].is_linear, 1);
	ck_assert_uint_eq(c.t[ckpt_find(&c, "layers.1.ffn_norm")].is_linear, 0);
	assert_values(&c);
	ckpt_close(&c);
	free(m.f);
}
END_TEST

START_TEST(l2c_truncated_or_long)
{
	static const long trims[] = { -4, -1, 4, -(long)(16 * 24 * 4) };
	struct ckpt c;
	struct l2c m;

	l2c_build(&m, 16, 40, 3, 4, 2, 24, 10, 0);
	l2c_write(&m, in_dir("m.bin"), trims[_i]);
	tu_log_clear(&lg);
	ck_assert_int_eq(ckpt_open(ctx, in_dir("m.bin"), &c), -EBADMSG);
	ck_assert(tu_log_has(&lg, trims[_i] < 0 ? "truncated" :
						  "trailing data"));
	ck_assert_ptr_null(c.t);
	free(m.f);
}
END_TEST

static const struct {
	int field;
	int32_t v;
	const char *msg;
} bad_hdr[] = {
	{ 0, -16, "dim is -16" },
	{ 0, 0, "dim is 0" },
	{ 0, 1 << 30, "dim 1073741824 out of range" },
	{ 1, -1, "hidden_dim is -1" },
	{ 2, 0, "n_layers is 0" },
	{ 2, 100000, "n_layers 100000 out of range" },
	{ 3, 3, "not a multiple of n_heads" },
	{ 4, 8, "n_kv_heads 8 out of range" },
	{ 4, 3, "not a multiple of n_kv_heads" },
	{ 5, 0, "vocab_size is 0" },
	{ 5, INT32_MIN, "vocab_size is" },
	{ 6, -10, "seq_len is -10" },
	{ 3, 16, "head size 1 is odd" },
};

START_TEST(l2c_corrupt_header)
{
	struct ckpt c;
	struct l2c m;

	l2c_build(&m, 16, 40, 3, 4, 2, 24, 10, 1);
	m.hdr[bad_hdr[_i].field] = bad_hdr[_i].v;
	l2c_write(&m, in_dir("m.bin"), 0);
	tu_log_clear(&lg);
	ck_assert_int_eq(ckpt_open(ctx, in_dir("m.bin"), &c), -EBADMSG);
	if (!tu_log_has(&lg, bad_hdr[_i].msg))
		ck_abort_msg("case %d: log lacks \"%s\": %s", _i,
			     bad_hdr[_i].msg, lg.buf);
	free(m.f);
}
END_TEST

START_TEST(l2c_short_empty_missing_v1)
{
	static const int32_t v1[7] = { 0x616b3432, 1, 0, 0, 0, 0, 0 };
	struct ckpt c;

	ck_assert_int_eq(tu_write_file(in_dir("short.bin"), "abcdefgh", 8), 0);
	ck_assert_int_eq(ckpt_open(ctx, in_dir("short.bin"), &c), -EBADMSG);
	ck_assert(tu_log_has(&lg, "header needs 28"));
	ck_assert_int_eq(tu_write_file(in_dir("empty.bin"), "", 0), 0);
	ck_assert_int_eq(ckpt_open(ctx, in_dir("empty.bin"), &c), -EBADMSG);
	ck_assert_int_eq(ckpt_open(ctx, in_dir("none.bin"), &c), -ENOENT);
	ck_assert_int_eq(tu_write_file(in_dir("v1.bin"), v1, sizeof(v1)), 0);
	ck_assert_int_eq(ckpt_open(ctx, in_dir("v1.bin"), &c), -EINVAL);
	ck_assert(tu_log_has(&lg, "ak42"));
	ck_assert_int_eq(ckpt_open(ctx, dir, &c), -EINVAL);
}
END_TEST

START_TEST(l2c_real_fixture)
{
	char *path = tu_srcpath("tests/data/stories260K/stories260K.bin");
	const float *w;
	struct ckpt c;
	int i;

	ck_assert_int_eq(ckpt_open(ctx, path, &c), 0);
	ck_assert_uint_eq(c.cfg.dim, 64);
	ck_assert_uint_eq(c.cfg.hidden_dim, 172);
	ck_assert_uint_eq(c.cfg.n_layers, 5);
	ck_assert_uint_eq(c.cfg.n_heads, 8);
	ck_assert_uint_eq(c.cfg.n_kv_heads, 4);
	ck_assert_uint_eq(c.cfg.vocab_size, 512);
	ck_assert_uint_eq(c.cfg.seq_len, 512);
	ck_assert_uint_eq(c.cfg.shared_classifier, 1);
	ck_assert_uint_eq(c.n, 47);
	i = ckpt_find(&c, "layers.4.w3");
	ck_assert_int_ge(i, 0);
	ck_assert_uint_eq(c.t[i].rows, 172);
	/* Right after the header comes the embedding of token 0. */
	ck_assert_int_eq(ckpt_tensor_f32(&c.t[0], &w), 0);
	ck_assert_ptr_eq(w, (const float *)((const char *)c.map + 28));
	/* The final norm ends where the RoPE tables start. */
	i = ckpt_find(&c, "norm");
	ck_assert_int_eq(ckpt_tensor_f32(&c.t[i], &w), 0);
	ck_assert_uint_eq((size_t)((const char *)(w + 64) - (const char *)c.map),
			  c.size - 2 * 512 * 4 * 4);
	ckpt_close(&c);
	free(path);
}
END_TEST

/* ---- safetensors ---- */

#define SD 12	/* dim: 2 heads of 6 (not 4: its RoPE permutation is its own inverse) */
#define SH 16	/* hidden */
#define SV 12	/* vocab */
#define SL 2	/* layers */
#define SKV 6	/* kv_dim: 1 kv head */
#define SHS 6	/* head size */

struct st_t {
	char hf[80];
	char canon[64];
	const char *dtype;
	int ndim;
	uint64_t shape[2];
	int hf_rope;	/* q_proj or k_proj: rows stored in HF's RoPE order */
};

struct st_model {
	struct st_t t[40];
	int n;
};

static void st_add(struct st_model *m, const char *hf, const char *canon,
		   uint64_t r, uint64_t c)
{
	struct st_t *t = &m->t[m->n++];

	snprintf(t->hf, sizeof(t->hf), "%s", hf);
	snprintf(t->canon, sizeof(t->canon), "%s", canon);
	t->dtype = "F32";
	t->ndim = r ? 2 : 1;
	t->shape[0] = r ? r : c;
	t->shape[1] = c;
}

static const char *const hf_slot[9] = {
	"input_layernorm", "self_attn.q_proj", "self_attn.k_proj",
	"self_attn.v_proj", "self_attn.o_proj", "post_attention_layernorm",
	"mlp.gate_proj", "mlp.down_proj", "mlp.up_proj",
};

static void st_build(struct st_model *m, int lm_head)
{
	static const uint64_t rows[9] = { 0, SD, SKV, SKV, SD, 0, SH, SD, SH };
	static const uint64_t cols[9] = { SD, SD, SD, SD, SD, SD, SD, SH, SD };
	char hf[80], canon[64];
	int l, s;

	memset(m, 0, sizeof(*m));
	st_add(m, "model.embed_tokens.weight", "tok_embeddings", SV, SD);
	for (l = 0; l < SL; l++) {
		for (s = 0; s < 9; s++) {
			snprintf(hf, sizeof(hf), "model.layers.%d.%s.weight", l,
				 hf_slot[s]);
			snprintf(canon, sizeof(canon), "layers.%d.%s", l,
				 slot_name[s]);
			st_add(m, hf, canon, rows[s], cols[s]);
			m->t[m->n - 1].hf_rope = s == 1 || s == 2;
		}
	}
	st_add(m, "model.norm.weight", "norm", 0, SD);
	if (lm_head)
		st_add(m, "lm_head.weight", "output", SV, SD);
}

static size_t esize(const char *dtype)
{
	return strcmp(dtype, "F32") ? 2 : 4;
}

static void put_elem(uint8_t *p, const char *dtype, float v)
{
	uint32_t bits;
	uint16_t h;

	memcpy(&bits, &v, 4);
	if (!strcmp(dtype, "F32")) {
		memcpy(p, &v, 4);
		return;
	}
	h = !strcmp(dtype, "F16") ? f32_to_fp16(v) : (uint16_t)(bits >> 16);
	memcpy(p, &h, 2);
}

/*
 * Hugging Face's conversion script (convert_llama_weights_to_hf.py):
 * w.view(heads, hs / 2, 2, cols).transpose(1, 2).reshape(rows, cols), so
 * stored row h * hs + p * hs / 2 + i holds llama2.c row h * hs + 2 * i + p.
 * Return: the llama2.c row that stored row @r holds.
 */
static uint64_t hf_forward_src(uint64_t r, uint64_t hs)
{
	uint64_t j = r % hs, p = j / (hs / 2), i = j % (hs / 2);

	return r - j + 2 * i + p;
}

/* Element @k of stored tensor @t: val() of the llama2.c element it holds. */
static float st_val(const struct st_t *t, uint64_t k)
{
	uint64_t c = t->ndim == 2 ? t->shape[1] : 1;

	if (!t->hf_rope)
		return val(t->canon, k);
	return val(t->canon, hf_forward_src(k / c, SHS) * c + k % c);
}

/*
 * Write @m as safetensors, its header padded with spaces to a multiple of
 * @align (1: none, so the data lands unaligned), with @extra inserted as
 * the first member of the header.
 */
static void st_write(const struct st_model *m, const char *path,
		     const char *extra, int align)
{
	char *json = malloc(65536), *buf;
	size_t jl = 0, off = 0, total = 0;
	uint64_t hl;
	int i;

	ck_assert_ptr_nonnull(json);
	jl += (size_t)sprintf(json + jl, "{%s", extra ? extra : "");
	for (i = 0; i < m->n; i++) {
		const struct st_t *t = &m->t[i];
		size_t b = (size_t)t->shape[0] * (t->ndim == 2 ? t->shape[1] : 1) *
			   esize(t->dtype);

		jl += (size_t)sprintf(json + jl, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[%llu",
				      i || extra ? "," : "", t->hf, t->dtype,
				      (unsigned long long)t->shape[0]);
		if (t->ndim == 2)
			jl += (size_t)sprintf(json + jl, ",%llu",
					      (unsigned long long)t->shape[1]);
		jl += (size_t)sprintf(json + jl, "],\"data_offsets\":[%zu,%zu]}",
				      off, off + b);
		off += b;
	}
	json[jl++] = '}';
	while (jl % (size_t)align)
		json[jl++] = ' ';
	total = 8 + jl + off;
	buf = calloc(1, total);
	ck_assert_ptr_nonnull(buf);
	hl = jl;
	memcpy(buf, &hl, 8);
	memcpy(buf + 8, json, jl);
	off = 8 + jl;
	for (i = 0; i < m->n; i++) {
		const struct st_t *t = &m->t[i];
		uint64_t k, n = t->shape[0] * (t->ndim == 2 ? t->shape[1] : 1);

		for (k = 0; k < n; k++, off += esize(t->dtype))
			put_elem((uint8_t *)buf + off, t->dtype,
				 st_val(t, k));
	}
	ck_assert_int_eq(tu_write_file(path, buf, total), 0);
	free(buf);
	free(json);
}

static const char config_json[] =
	"{\n  \"architectures\": [\"LlamaForCausalLM\"],\n"
	"  \"hidden_act\": \"silu\", \"rms_norm_eps\": 1e-05,\n"
	"  \"rope_scaling\": null, \"tie_word_embeddings\": false,\n"
	"  \"nested\": {\"num_attention_heads\": 99, \"x\": [1, -2.5e3, true]},\n"
	"  \"a very long key that is longer than any key the reader looks for, to be skipped\": 1,\n"
	"  \"num_attention_heads\": 2, \"num_key_value_heads\": 1,\n"
	"  \"max_position_embeddings\": 32, \"torch_dtype\": \"float32\"\n}\n";

static void write_config(const char *text)
{
	ck_assert_int_eq(tu_write_file(in_dir("config.json"), text,
				       strlen(text)), 0);
}

START_TEST(st_round_trip)
{
	static const char *const dtypes[] = { "F32", "F16", "BF16" };
	const char *path = in_dir("model.safetensors");
	struct st_model m;
	struct ckpt c;
	int i;

	st_build(&m, _i != 1);
	for (i = 0; i < m.n; i++)
		m.t[i].dtype = dtypes[(i + _i) % 3];
	/* A RoPE table and metadata are allowed and ignored. */
	st_write(&m, path,
		 "\"__metadata__\":{\"format\":\"pt\",\"note\":\"\\u00e9\\ud83d\\ude00\\n\"},"
		 "\"model.layers.1.self_attn.rotary_emb.inv_freq\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}",
		 _i == 2 ? 1 : 8);
	write_config(config_json);
	ck_assert_int_eq(ckpt_open(ctx, path, &c), 0);
	ck_assert_uint_eq(c.cfg.dim, SD);
	ck_assert_uint_eq(c.cfg.hidden_dim, SH);
	ck_assert_uint_eq(c.cfg.n_layers, SL);
	ck_assert_uint_eq(c.cfg.n_heads, 2);
	ck_assert_uint_eq(c.cfg.n_kv_heads, 1);
	ck_assert_uint_eq(c.cfg.vocab_size, SV);
	ck_assert_uint_eq(c.cfg.seq_len, 32);
	ck_assert_uint_eq(c.cfg.shared_classifier, _i == 1);
	ck_assert_uint_eq(c.n, SL * 9 + 2 + (_i != 1));
	assert_values(&c);
	ckpt_close(&c);
}
END_TEST

static const struct {
	const char *header;
	const char *msg;
} garbage[] = {
	{ "not json", "expected '{'" },
	{ "{\"abc\"", "expected ':'" },
	{ "{}", "no tensors" },
	{ "{\"a\":}", "expected '{'" },
	{ "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},}", "expected '\"'" },
	{ "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}} x", "trailing" },
	{ "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", "negative" },
	{ "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", "fraction" },
	{ "{\"a\":{\"dtype\":\"F32\",\"shape\":[01],\"data_offsets\":[0,4]}}", "leading zero" },
	{ "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", "unknown or repeated key" },
	{ "{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", "unknown or repeated key" },
	{ "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", "lacks" },
	{ "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", "two integers" },
	{ "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", "too many" },
	{ "{\"a\tb\":{}}", "control character" },
	{ "{\"a\\qb\":{}}", "bad escape" },
	{ "{\"a\\ud800\":{}}", "lone high surrogate" },
	{ "{\"a\\u0000\":{}}", "NUL" },
	{ "{\"a\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,4]}}", "too large" },
	{ "{\"__metadata__\":{\"a\":1},\"b\":{}}", "expected '\"'" },
	{ "{\"__metadata__\":{},\"__metadata__\":{}}", "repeated __metadata__" },
	{ "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]} ", "expected '}'" },
};

static void write_raw_st(const char *path, const char *header, uint64_t hl,
			 size_t data)
{
	size_t jl = strlen(header);
	char *buf = calloc(1, 8 + jl + data);

	ck_assert_ptr_nonnull(buf);
	memcpy(buf, &hl, 8);
	memcpy(buf + 8, header, jl);
	ck_assert_int_eq(tu_write_file(path, buf, 8 + jl + data), 0);
	free(buf);
}

START_TEST(st_json_garbage)
{
	const char *path = in_dir("g.safetensors");
	struct ckpt c;

	write_config(config_json);
	write_raw_st(path, garbage[_i].header, strlen(garbage[_i].header), 64);
	tu_log_clear(&lg);
	ck_assert_int_eq(ckpt_open(ctx, path, &c), -EBADMSG);
	if (!tu_log_has(&lg, garbage[_i].msg))
		ck_abort_msg("case %d: log lacks \"%s\": %s", _i,
			     garbage[_i].msg, lg.buf);
}
END_TEST

START_TEST(st_bad_lengths_and_offsets)
{
	static const char one[] =
		"{\"model.norm.weight\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[%s]}}";
	static const char *const offs[] = { "0,20", "8,4", "0,12", "60,80" };
	const char *path = in_dir("o.safetensors");
	char hdr[256];
	struct ckpt c;
	unsigned int i;

	write_config(config_json);
	/* Header length beyond the file, zero, or absurd. */
	write_raw_st(path, "{}", 1000, 0);
	ck_assert_int_eq(ckpt_open(ctx, path, &c), -EBADMSG);
	ck_assert(tu_log_has(&lg, "corrupt header: length 1000"));
	write_raw_st(path, "{}", 0, 0);
	ck_assert_int_eq(ckpt_open(ctx, path, &c), -EBADMSG);
	write_raw_st(path, "{}", UINT64_MAX, 0);
	ck_assert_int_eq(ckpt_open(ctx, path, &c), -EBADMSG);
	ck_assert_int_eq(tu_write_file(path, "1234", 4), 0);
	ck_assert_int_eq(ckpt_open(ctx, path, &c), -EBADMSG);
	/* Offsets outside the 16 data bytes, reversed, or not the shape's size. */
	for (i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
		snprintf(hdr, sizeof(hdr), one, offs[i]);
		write_raw_st(path, hdr, strlen(hdr), 16);
		tu_log_clear(&lg);
		ck_assert_int_eq(ckpt_open(ctx, path, &c), -EBADMSG);
		ck_assert(tu_log_has(&lg, "model.norm.weight"));
	}
}
END_TEST

START_TEST(st_unsupported)
{
	const char *path = in_dir("u.safetensors");
	struct st_model m;
	struct ckpt c;

	st_build(&m, 1);
	write_config(config_json);
	switch (_i) {
	case 0:	/* a dtype the reader does not convert */
		m.t[3].dtype = "F64";
		break;
	case 1:	/* a tensor that is not part of a Llama model */
		snprintf(m.t[3].hf, sizeof(m.t[3].hf),
			 "model.layers.0.self_attn.q_proj.bias");
		break;
	case 2:	/* a missing tensor */
		m.n--;
		m.t[4] = m.t[m.n];
		break;
	case 3:	/* a shape that does not fit */
		m.t[3].shape[0] = SKV + 2;
		break;
	case 4:	/* no config.json */
		unlink(in_dir("config.json"));
		break;
	case 5:	/* config.json without the head count */
		write_config("{\"max_position_embeddings\": 32}");
		break;
	case 6:	/* the same tensor twice */
		m.t[m.n++] = m.t[5];
		break;
	}
	st_write(&m, path, NULL, 8);
	tu_log_clear(&lg);
	ck_assert_int_eq(ckpt_open(ctx, path, &c), _i == 6 ? -EBADMSG : -EINVAL);
	switch (_i) {
	case 0:
		ck_assert(tu_log_has(&lg, "dtype F64 is not supported"));
		break;
	case 1:
		ck_assert(tu_log_has(&lg, "q_proj.bias is not part"));
		break;
	case 2:
		ck_assert(tu_log_has(&lg, "missing"));
		break;
	case 3:
		ck_assert(tu_log_has(&lg, "shape does not fit"));
		break;
	case 4:
		ck_assert(tu_log_has(&lg, "config.json"));
		break;
	case 5:
		ck_assert(tu_log_has(&lg, "num_attention_heads missing"));
		break;
	case 6:
		ck_assert(tu_log_has(&lg, "appears twice"));
		break;
	}
}
END_TEST

START_TEST(st_config_garbage)
{
	struct st_model m;
	struct ckpt c;
	char path[4096];

	/* in_dir()'s buffers rotate: keep a copy */
	snprintf(path, sizeof(path), "%s", in_dir("c.safetensors"));

	st_build(&m, 1);
	st_write(&m, path, NULL, 8);
	write_config("{\"num_attention_heads\": 2, \"max_position_embeddings\": 32,}");
	ck_assert_int_eq(ckpt_open(ctx, path, &c), -EBADMSG);
	write_config("{\"num_attention_heads\": 2.0, \"max_position_embeddings\": 32}");
	ck_assert_int_eq(ckpt_open(ctx, path, &c), -EBADMSG);
	/* Head counts that do not split q or k: the tensor is named. */
	write_config("{\"num_attention_heads\": 5, \"max_position_embeddings\": 32}");
	tu_log_clear(&lg);
	ck_assert_int_eq(ckpt_open(ctx, path, &c), -EBADMSG);
	ck_assert_msg(tu_log_has(&lg, "tensor model.layers.0.self_attn.q_proj.weight: 12 rows do not split into num_attention_heads 5"),
		      "%s", lg.buf);
	write_config("{\"num_attention_heads\": 4, \"max_position_embeddings\": 32}");
	tu_log_clear(&lg);
	ck_assert_int_eq(ckpt_open(ctx, path, &c), -EBADMSG);
	ck_assert_msg(tu_log_has(&lg, "q_proj.weight: 12 rows do not split into num_attention_heads 4 (") &&
		      tu_log_has(&lg, "config.json) heads of an even size"),
		      "%s", lg.buf);
	write_config("{\"num_attention_heads\": 2, \"num_key_value_heads\": 4, \"max_position_embeddings\": 32}");
	tu_log_clear(&lg);
	ck_assert_int_eq(ckpt_open(ctx, path, &c), -EBADMSG);
	ck_assert_msg(tu_log_has(&lg, "tensor model.layers.0.self_attn.k_proj.weight: 6 rows do not split into num_key_value_heads 4"),
		      "%s", lg.buf);
	write_config("{\"num_attention_heads\": 2, \"max_position_embeddings\": 32} x");
	ck_assert_int_eq(ckpt_open(ctx, path, &c), -EBADMSG);
	write_config("{\"num_attention_heads\": 2, \"max_position_embeddings\": 32, \"n\": nul}");
	ck_assert_int_eq(ckpt_open(ctx, path, &c), -EBADMSG);
	write_config("{\"num_attention_heads\": 2, \"max_position_embeddings\": 32, \"f\": -}");
	ck_assert_int_eq(ckpt_open(ctx, path, &c), -EBADMSG);
	write_config("{\"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"max_position_embeddings\": 32, \"o\": {}}");
	tu_log_clear(&lg);
	ck_assert_msg(ckpt_open(ctx, path, &c) == 0, "%s", lg.buf);
	ckpt_close(&c);
}
END_TEST

/*
 * Undoing Hugging Face's q/k permutation on small matrices with known
 * values: 2 heads of 6 rows, 2 columns, value = 10 * stored row + column.
 */
START_TEST(hf_unpermute_known)
{
	/* llama2.c row 2i + p of a head is stored at p * 3 + i. */
	static const uint32_t from[12] = { 0, 3, 1, 4, 2, 5,
					   6, 9, 7, 10, 8, 11 };
	float src[12 * 2], dst[12 * 2], back[24 * 3], fwd[24 * 3];
	uint32_t r, c;

	for (r = 0; r < 12; r++)
		for (c = 0; c < 2; c++)
			src[r * 2 + c] = (float)(10 * r + c);
	ck_assert_int_eq(ckpt_hf_unpermute(src, dst, 12, 2, 2), 0);
	for (r = 0; r < 12; r++) {
		ck_assert_uint_eq(ckpt_hf_row(r, 6), from[r]);
		for (c = 0; c < 2; c++)
			ck_assert_float_eq(dst[r * 2 + c],
					   (float)(10 * from[r] + c));
	}
	/* One head: the same order. */
	ck_assert_int_eq(ckpt_hf_unpermute(src, dst, 6, 2, 1), 0);
	for (r = 0; r < 6; r++)
		ck_assert_float_eq(dst[r * 2], (float)(10 * from[r]));
	/* The inverse of the script's forward permutation, 3 heads of 8. */
	for (r = 0; r < 24; r++)
		for (c = 0; c < 3; c++)
			fwd[r * 3 + c] = (float)(hf_forward_src(r, 8) * 3 + c);
	ck_assert_int_eq(ckpt_hf_unpermute(fwd, back, 24, 3, 3), 0);
	for (r = 0; r < 24 * 3; r++)
		ck_assert_float_eq(back[r], (float)r);
	/* Heads that do not split the rows, or of an odd size. */
	ck_assert_int_eq(ckpt_hf_unpermute(src, dst, 12, 2, 5), -EINVAL);
	ck_assert_int_eq(ckpt_hf_unpermute(src, dst, 12, 2, 4), -EINVAL);
	ck_assert_int_eq(ckpt_hf_unpermute(src, dst, 12, 2, 0), -EINVAL);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("checkpoint");
	TCase *tc = tcase_create("llama2c");
	TCase *ts = tcase_create("safetensors");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_loop_test(tc, l2c_round_trip, 0, 2);
	tcase_add_loop_test(tc, l2c_truncated_or_long, 0, 4);
	tcase_add_loop_test(tc, l2c_corrupt_header, 0,
			    sizeof(bad_hdr) / sizeof(bad_hdr[0]));
	tcase_add_test(tc, l2c_short_empty_missing_v1);
	tcase_add_test(tc, l2c_real_fixture);
	suite_add_tcase(s, tc);

	tcase_add_checked_fixture(ts, setup, teardown);
	tcase_add_loop_test(ts, st_round_trip, 0, 3);
	tcase_add_loop_test(ts, st_json_garbage, 0,
			    sizeof(garbage) / sizeof(garbage[0]));
	tcase_add_test(ts, st_bad_lengths_and_offsets);
	tcase_add_loop_test(ts, st_unsupported, 0, 7);
	tcase_add_test(ts, st_config_garbage);
	tcase_add_test(ts, hf_unpermute_known);
	suite_add_tcase(s, ts);

	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
