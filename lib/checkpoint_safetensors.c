// SPDX-License-Identifier: MIT
/*
 * Single-file Hugging Face Llama checkpoints in the safetensors layout: a
 * u64 header length, a JSON header mapping each tensor name to its dtype,
 * shape and [begin, end) byte offsets in the data that follows.
 *
 * The JSON parser here is deliberately small and strict: the header may
 * only hold objects, strings and arrays of non-negative integers (the
 * "__metadata__" object holds strings only); anything else, a duplicate key
 * or trailing garbage is a corrupt file. config.json, read for the head
 * counts, is general JSON: its other values are parsed and skipped.
 *
 * Hugging Face names map onto the canonical ones (checkpoint.h). The
 * architecture comes from the shapes, the head counts from config.json.
 *
 * RoPE: Hugging Face's conversion script (convert_llama_weights_to_hf)
 * permutes the rows of q_proj and k_proj per head for its rotate-half RoPE:
 * w.view(heads, hs / 2, 2, cols).transpose(1, 2), with num_attention_heads
 * for q and num_key_value_heads for k. ortho (Base, Ortho, ortho-run) uses
 * llama2.c's interleaved pairs, so the reader undoes it: q and k are read
 * back through ckpt_hf_row() (checkpoint.h), and a head count from
 * config.json that does not split their rows into heads of an even size is
 * refused, naming the tensor.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "log.h"

#define ST_HEADER_MAX (100u << 20)	/* the safetensors limit */
#define ST_NAME_MAX 256u
#define ST_MAX_NDIM 4u
#define CONFIG_MAX (4u << 20)

/* ---- the safetensors header ---- */

struct st_entry {
	char name[ST_NAME_MAX];
	uint32_t dtype;
	uint32_t ndim;
	uint64_t shape[ST_MAX_NDIM];
	uint64_t begin, end;
};

struct st_header {
	struct st_entry *e;
	unsigned int n, cap;
};

static int st_dtype(struct json_in *j, const char *name, uint32_t *dtype)
{
	static const char *const names[] = { "F32", "F16", "BF16" };
	char s[16];
	unsigned int i;
	int ret = json_string(j, s, sizeof(s));

	if (ret)
		return ret;
	for (i = 0; i < 3; i++) {
		if (!strcmp(s, names[i])) {
			*dtype = i;	/* enum ckpt_dtype */
			return 0;
		}
	}
	olog_err(j->ctx, "%s: tensor %s: dtype %s is not supported (F32, F16 or BF16)",
		 j->what, name, s);
	return -EINVAL;
}

/* An array of at most @max integers. */
static int st_uints(struct json_in *j, uint64_t *v, uint32_t max, uint32_t *n)
{
	int ret = json_char(j, '[');

	*n = 0;
	if (ret)
		return ret;
	if (json_peek(j) == ']') {
		j->p++;
		return 0;
	}
	for (;;) {
		if (*n == max)
			return json_fail(j, "too many integers in array");
		ret = json_uint(j, &v[(*n)++]);
		if (ret)
			return ret;
		if (json_peek(j) == ',') {
			j->p++;
			continue;
		}
		return json_char(j, ']');
	}
}

static int st_member(struct json_in *j, struct st_entry *e, const char *key,
		     unsigned int *seen)
{
	uint64_t off[2];
	uint32_t n;
	int ret;

	if (!strcmp(key, "dtype") && !(*seen & 1)) {
		*seen |= 1;
		return st_dtype(j, e->name, &e->dtype);
	}
	if (!strcmp(key, "shape") && !(*seen & 2)) {
		*seen |= 2;
		return st_uints(j, e->shape, ST_MAX_NDIM, &e->ndim);
	}
	if (!strcmp(key, "data_offsets") && !(*seen & 4)) {
		*seen |= 4;
		ret = st_uints(j, off, 2, &n);
		if (!ret && n != 2)
			return json_fail(j, "data_offsets needs two integers");
		e->begin = off[0];
		e->end = off[1];
		return ret;
	}
	return json_fail(j, "unknown or repeated key in a tensor entry");
}

static int st_entry(struct json_in *j, struct st_entry *e)
{
	unsigned int seen = 0;
	char key[32];
	int ret = json_char(j, '{');

	while (!ret) {
		ret = json_string(j, key, sizeof(key));
		ret = ret ?: json_char(j, ':');
		ret = ret ?: st_member(j, e, key, &seen);
		if (ret)
			return ret;
		if (json_peek(j) != ',')
			break;
		j->p++;
	}
	ret = ret ?: json_char(j, '}');
	if (!ret && seen != 7)
		return json_fail(j, "tensor entry lacks dtype, shape or data_offsets");
	return ret;
}

/* "__metadata__": an object of strings only. */
static int st_metadata(struct json_in *j)
{
	int ret = json_char(j, '{');

	if (ret)
		return ret;
	if (json_peek(j) == '}') {
		j->p++;
		return 0;
	}
	for (;;) {
		ret = json_string(j, NULL, 0);
		ret = ret ?: json_char(j, ':');
		ret = ret ?: json_string(j, NULL, 0);
		if (ret)
			return ret;
		if (json_peek(j) != ',')
			return json_char(j, '}');
		j->p++;
	}
}

static struct st_entry *st_push(struct st_header *h)
{
	if (h->n == h->cap) {
		unsigned int cap = h->cap ? h->cap * 2 : 64;
		struct st_entry *e;

		if (cap > ORB_MAX_TENSORS)
			return NULL;
		e = realloc(h->e, cap * sizeof(*e));
		if (!e)
			return NULL;
		h->e = e;
		h->cap = cap;
	}
	memset(&h->e[h->n], 0, sizeof(h->e[0]));
	return &h->e[h->n++];
}

static int st_parse(struct json_in *j, struct st_header *h)
{
	char name[ST_NAME_MAX];
	int ret, meta = 0;

	ret = json_char(j, '{');
	if (!ret && json_peek(j) == '}')
		return json_fail(j, "no tensors");
	while (!ret) {
		struct st_entry *e;

		ret = json_string(j, name, sizeof(name));
		ret = ret ?: json_char(j, ':');
		if (ret)
			break;
		if (!strcmp(name, "__metadata__")) {
			if (meta++)
				return json_fail(j, "repeated __metadata__");
			ret = st_metadata(j);
		} else {
			e = st_push(h);
			if (!e)
				return json_fail(j, "too many tensors");
			memcpy(e->name, name, sizeof(name));
			ret = st_entry(j, e);
		}
		if (ret || json_peek(j) != ',')
			break;
		j->p++;
	}
	ret = ret ?: json_char(j, '}');
	/* The writer pads the header with spaces; nothing else may follow. */
	if (!ret && json_peek(j) != -1)
		return json_fail(j, "trailing characters after the header");
	return ret;
}

/* ---- Hugging Face names ---- */

static const struct {
	const char *hf;		/* after "model.layers.N." */
	const char *canon;	/* after "layers.N." */
} layer_names[] = {
	{ "input_layernorm.weight", "attn_norm" },
	{ "self_attn.q_proj.weight", "wq" },
	{ "self_attn.k_proj.weight", "wk" },
	{ "self_attn.v_proj.weight", "wv" },
	{ "self_attn.o_proj.weight", "wo" },
	{ "post_attention_layernorm.weight", "ffn_norm" },
	{ "mlp.gate_proj.weight", "w1" },
	{ "mlp.down_proj.weight", "w2" },
	{ "mlp.up_proj.weight", "w3" },
};

#define HF_SKIP 1	/* a known tensor ortho does not use */

/*
 * The canonical name of @hf into @out; HF_SKIP for RoPE frequency tables,
 * -ENOENT for a name that is not part of a Llama model.
 */
static int map_name(const char *hf, char *out, size_t cap, uint32_t *layer)
{
	const char *p = hf + strlen("model.layers.");
	unsigned long l = 0;
	unsigned int i;

	*layer = UINT32_MAX;
	if (!strcmp(hf, "model.embed_tokens.weight"))
		return snprintf(out, cap, "tok_embeddings") < 0;
	if (!strcmp(hf, "model.norm.weight"))
		return snprintf(out, cap, "norm") < 0;
	if (!strcmp(hf, "lm_head.weight"))
		return snprintf(out, cap, "output") < 0;
	if (strncmp(hf, "model.layers.", strlen("model.layers.")))
		return -ENOENT;
	if (*p < '0' || *p > '9' || (*p == '0' && p[1] != '.'))
		return -ENOENT;
	while (*p >= '0' && *p <= '9' && l < CKPT_MAX_LAYERS)
		l = l * 10 + (unsigned long)(*p++ - '0');
	if (*p++ != '.' || l >= CKPT_MAX_LAYERS)
		return -ENOENT;
	*layer = (uint32_t)l;
	if (!strcmp(p, "self_attn.rotary_emb.inv_freq"))
		return HF_SKIP;
	for (i = 0; i < sizeof(layer_names) / sizeof(layer_names[0]); i++)
		if (!strcmp(p, layer_names[i].hf))
			return snprintf(out, cap, "layers.%lu.%s", l,
					layer_names[i].canon) < 0;
	return -ENOENT;
}

/* ---- config.json ---- */

struct hf_config {
	uint64_t n_heads, n_kv_heads, seq_len;
};

static int read_small_file(const char *path, char **buf, size_t *len)
{
	struct stat st;
	ssize_t r;
	int fd = open(path, O_RDONLY | O_CLOEXEC), ret = 0;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st)) {
		ret = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode) || st.st_size > CONFIG_MAX) {
		ret = -EFBIG;
		goto out;
	}
	*buf = malloc((size_t)st.st_size + 1);
	if (!*buf) {
		ret = -ENOMEM;
		goto out;
	}
	r = pread(fd, *buf, (size_t)st.st_size, 0);
	if (r != st.st_size) {
		ret = r < 0 ? -errno : -EIO;
		free(*buf);
		*buf = NULL;
		goto out;
	}
	*len = (size_t)st.st_size;
out:
	close(fd);
	return ret;
}

static int config_member(struct json_in *j, struct hf_config *hc)
{
	char key[64];
	int trunc = 0, ret = json_string_t(j, key, sizeof(key), &trunc);

	ret = ret ?: json_char(j, ':');
	if (ret)
		return ret;
	if (trunc)	/* longer than any key we look for */
		return json_skip(j, 1);
	if (!strcmp(key, "num_attention_heads"))
		return json_uint(j, &hc->n_heads);
	if (!strcmp(key, "num_key_value_heads"))
		return json_uint(j, &hc->n_kv_heads);
	if (!strcmp(key, "max_position_embeddings"))
		return json_uint(j, &hc->seq_len);
	return json_skip(j, 1);
}

static int parse_config(struct json_in *j, struct hf_config *hc)
{
	int ret = json_char(j, '{');

	if (!ret && json_peek(j) == '}') {
		j->p++;
		goto tail;
	}
	while (!ret) {
		ret = config_member(j, hc);
		if (ret || json_peek(j) != ',')
			break;
		j->p++;
	}
	ret = ret ?: json_char(j, '}');
tail:
	if (!ret && json_peek(j) != -1)
		return json_fail(j, "trailing characters");
	return ret;
}

/*
 * Every q_proj and k_proj must split into its heads (num_attention_heads,
 * num_key_value_heads) of an even size, or their RoPE permutation cannot
 * be undone.
 */
static int check_rope_heads(struct ortho_ctx *ctx, const char *path,
			    const char *cpath, const struct st_header *h,
			    const struct hf_config *hc)
{
	char name[ORB_NAME_MAX];
	uint32_t layer;
	unsigned int i;

	for (i = 0; i < h->n; i++) {
		const struct st_entry *e = &h->e[i];
		const char *dot;
		uint64_t heads;
		int q;

		if (map_name(e->name, name, sizeof(name), &layer) != 0 ||
		    layer == UINT32_MAX)
			continue;
		dot = strrchr(name, '.');
		q = !strcmp(dot, ".wq");
		if (!q && strcmp(dot, ".wk"))
			continue;
		heads = q ? hc->n_heads : hc->n_kv_heads;
		if (e->ndim == 2 && e->shape[0] % heads == 0 &&
		    (e->shape[0] / heads) % 2 == 0)
			continue;
		if (e->ndim != 2) {
			olog_err(ctx, "%s: tensor %s is not a matrix", path,
				 e->name);
			return -EINVAL;
		}
		olog_err(ctx, "%s: tensor %s: %llu rows do not split into %s %llu (%s) heads of an even size, so its Hugging Face RoPE row permutation cannot be undone",
			 path, e->name, (unsigned long long)e->shape[0],
			 q ? "num_attention_heads" : "num_key_value_heads",
			 (unsigned long long)heads, cpath);
		return -EBADMSG;
	}
	return 0;
}

/* config.json beside @path: the head counts the shapes cannot tell. */
static int load_config(struct ortho_ctx *ctx, const char *path,
		       const struct st_header *h,
		       struct ortho_model_config *cfg)
{
	struct hf_config hc = { 0 };
	const char *slash = strrchr(path, '/');
	char *cpath = NULL, *buf = NULL;
	struct json_in j;
	size_t len = 0;
	int ret;

	if (asprintf(&cpath, "%.*sconfig.json",
		     slash ? (int)(slash - path + 1) : 0, path) < 0)
		return -ENOMEM;
	ret = read_small_file(cpath, &buf, &len);
	if (ret) {
		olog_err(ctx, "%s: cannot read %s (%s): the head counts (num_attention_heads, num_key_value_heads) come from the config.json beside a safetensors file",
			 path, cpath, strerror(-ret));
		ret = -EINVAL;
		goto out;
	}
	j = (struct json_in){ .ctx = ctx, .what = cpath, .base = buf, .p = buf,
			 .end = buf + len };
	ret = parse_config(&j, &hc);
	if (ret)
		goto out;
	if (!hc.n_heads || !hc.seq_len) {
		olog_err(ctx, "%s: %s missing (needed for %s)", cpath,
			 !hc.n_heads ? "num_attention_heads" :
				       "max_position_embeddings",
			 path);
		ret = -EINVAL;
		goto out;
	}
	if (!hc.n_kv_heads)	/* Hugging Face's default: no grouping */
		hc.n_kv_heads = hc.n_heads;
	if (hc.n_heads > ORB_MAX_DIM || hc.n_kv_heads > ORB_MAX_DIM ||
	    hc.seq_len > ORB_MAX_DIM) {
		olog_err(ctx, "%s: head count or max_position_embeddings out of range",
			 cpath);
		ret = -EBADMSG;
		goto out;
	}
	ret = check_rope_heads(ctx, path, cpath, h, &hc);
	if (ret)
		goto out;
	cfg->n_heads = (uint32_t)hc.n_heads;
	cfg->n_kv_heads = (uint32_t)hc.n_kv_heads;
	cfg->seq_len = (uint32_t)hc.seq_len;
out:
	free(buf);
	free(cpath);
	return ret;
}

/* ---- from the header to the canonical tensors ---- */

static const uint32_t dtype_size[] = { 4, 2, 2 };

/* Every entry's offsets and size against the data region. */
static int check_entry(struct ortho_ctx *ctx, const char *path,
		       const struct st_entry *e, uint64_t data_len)
{
	uint64_t numel = 1, bytes;
	uint32_t i;

	for (i = 0; i < e->ndim; i++) {
		if (e->shape[i] > ORB_MAX_DIM ||
		    __builtin_mul_overflow(numel, e->shape[i], &numel)) {
			olog_err(ctx, "%s: tensor %s: dimension %u (%llu) out of range",
				 path, e->name, i,
				 (unsigned long long)e->shape[i]);
			return -EBADMSG;
		}
	}
	if (e->begin > e->end || e->end > data_len) {
		olog_err(ctx, "%s: tensor %s: data_offsets [%llu, %llu) outside the %llu data bytes",
			 path, e->name, (unsigned long long)e->begin,
			 (unsigned long long)e->end,
			 (unsigned long long)data_len);
		return -EBADMSG;
	}
	if (__builtin_mul_overflow(numel, dtype_size[e->dtype], &bytes) ||
	    bytes != e->end - e->begin) {
		olog_err(ctx, "%s: tensor %s: %llu data bytes for a shape of %llu elements",
			 path, e->name,
			 (unsigned long long)(e->end - e->begin),
			 (unsigned long long)numel);
		return -EBADMSG;
	}
	return 0;
}

static const struct st_entry *find_entry(const struct st_header *h,
					 const char *canon)
{
	char name[ORB_NAME_MAX];
	uint32_t layer;
	unsigned int i;

	for (i = 0; i < h->n; i++)
		if (map_name(h->e[i].name, name, sizeof(name), &layer) == 0 &&
		    !strcmp(name, canon))
			return &h->e[i];
	return NULL;
}

static int need_2d(struct ortho_ctx *ctx, const char *path,
		   const struct st_entry *e, const char *what)
{
	if (e && e->ndim == 2)
		return 0;
	olog_err(ctx, "%s: %s %s", path, what,
		 e ? "is not a matrix" : "missing");
	return -EINVAL;
}

/* The architecture from the shapes (and config.json for the heads). */
static int derive_config(struct ortho_ctx *ctx, const char *path,
			 const struct st_header *h,
			 struct ortho_model_config *cfg)
{
	const struct st_entry *emb = find_entry(h, "tok_embeddings");
	const struct st_entry *w1 = find_entry(h, "layers.0.w1");
	char name[ORB_NAME_MAX];
	uint32_t layer, n_layers = 0;
	unsigned int i;
	int ret;

	ret = need_2d(ctx, path, emb, "model.embed_tokens.weight");
	ret = ret ?: need_2d(ctx, path, w1, "model.layers.0.mlp.gate_proj.weight");
	if (ret)
		return ret;
	for (i = 0; i < h->n; i++) {
		ret = map_name(h->e[i].name, name, sizeof(name), &layer);
		if (ret < 0) {
			olog_err(ctx, "%s: tensor %s is not part of a Llama model (no canonical name)",
				 path, h->e[i].name);
			return -EINVAL;
		}
		if (layer != UINT32_MAX && layer + 1 > n_layers)
			n_layers = layer + 1;
	}
	memset(cfg, 0, sizeof(*cfg));
	cfg->vocab_size = (uint32_t)emb->shape[0];
	cfg->dim = (uint32_t)emb->shape[1];
	cfg->hidden_dim = (uint32_t)w1->shape[0];
	cfg->n_layers = n_layers;
	cfg->shared_classifier = !find_entry(h, "output");
	ret = load_config(ctx, path, h, cfg);
	return ret ?: ckpt_check_config(ctx, path, cfg);
}

/*
 * The heads of a Hugging Face q_proj or k_proj, whose rows are read back
 * in llama2.c order; 0 for any other tensor. load_config() checked that
 * they split the rows into heads of an even size.
 */
static uint32_t rope_heads(const struct ortho_model_config *cfg,
			   const struct ckpt_tensor *t)
{
	const char *dot = strrchr(t->name, '.');

	if (t->layer == UINT32_MAX || !dot)
		return 0;
	if (!strcmp(dot, ".wq"))
		return cfg->n_heads;
	if (!strcmp(dot, ".wk"))
		return cfg->n_kv_heads;
	return 0;
}

/* Point each canonical tensor at its entry; every shape must match. */
static int bind_tensors(struct ortho_ctx *ctx, struct ckpt *c,
			const struct st_header *h, const uint8_t *data)
{
	char name[ORB_NAME_MAX];
	uint32_t layer;
	unsigned int i;

	for (i = 0; i < h->n; i++) {
		const struct st_entry *e = &h->e[i];
		struct ckpt_tensor *t;
		int k;

		if (map_name(e->name, name, sizeof(name), &layer) == HF_SKIP)
			continue;
		k = ckpt_find(c, name);
		if (k < 0) {
			olog_err(ctx, "%s: tensor %s: layer beyond the model", c->path,
				 e->name);
			return -EINVAL;
		}
		t = &c->t[k];
		if (t->src) {
			olog_err(ctx, "%s: tensor %s appears twice", c->path,
				 e->name);
			return -EBADMSG;
		}
		if (t->rows == 1 ? e->ndim != 1 || e->shape[0] != t->cols :
				   e->ndim != 2 || e->shape[0] != t->rows ||
				   e->shape[1] != t->cols) {
			olog_err(ctx, "%s: tensor %s: shape does not fit the model (%s is %ux%u)",
				 c->path, e->name, t->name, t->rows, t->cols);
			return -EINVAL;
		}
		t->dtype = e->dtype;
		t->src = data + e->begin;
		t->hf_rope_heads = rope_heads(&c->cfg, t);
	}
	for (i = 0; i < c->n; i++) {
		if (!c->t[i].src) {
			olog_err(ctx, "%s: tensor %s missing", c->path,
				 c->t[i].name);
			return -EINVAL;
		}
	}
	return 0;
}

static int read_header(struct ortho_ctx *ctx, struct ckpt *c,
		       struct st_header *h, uint64_t *hlen)
{
	struct json_in j;
	unsigned int i;
	int ret;

	if (c->size < 8) {
		olog_err(ctx, "%s: truncated: %zu bytes", c->path, c->size);
		return -EBADMSG;
	}
	memcpy(hlen, c->map, 8);
	if (*hlen < 2 || *hlen > ST_HEADER_MAX || *hlen > c->size - 8) {
		olog_err(ctx, "%s: corrupt header: length %llu (the file has %zu bytes)",
			 c->path, (unsigned long long)*hlen, c->size);
		return -EBADMSG;
	}
	j = (struct json_in){ .ctx = ctx, .what = c->path,
			 .base = (const char *)c->map + 8,
			 .p = (const char *)c->map + 8,
			 .end = (const char *)c->map + 8 + *hlen };
	ret = st_parse(&j, h);
	for (i = 0; !ret && i < h->n; i++)
		ret = check_entry(ctx, c->path, &h->e[i], c->size - 8 - *hlen);
	return ret;
}

int ckpt_open_safetensors(struct ortho_ctx *ctx, const char *path,
			  struct ckpt *c)
{
	struct st_header h = { 0 };
	uint64_t hlen;
	int ret;

	ret = ckpt_map(ctx, path, c);
	ret = ret ?: read_header(ctx, c, &h, &hlen);
	ret = ret ?: derive_config(ctx, path, &h, &c->cfg);
	ret = ret ?: ckpt_layout(c);
	ret = ret ?: bind_tensors(ctx, c, &h,
				  (const uint8_t *)c->map + 8 + hlen);
	free(h.e);
	if (ret) {
		ckpt_close(c);
		return ret;
	}
	olog_info(ctx, "%s: safetensors checkpoint: dim %u, hidden %u, %u layers, %u/%u heads, vocab %u%s",
		  path, c->cfg.dim, c->cfg.hidden_dim, c->cfg.n_layers,
		  c->cfg.n_heads, c->cfg.n_kv_heads, c->cfg.vocab_size,
		  c->cfg.shared_classifier ? "" : ", separate classifier");
	return 0;
}
