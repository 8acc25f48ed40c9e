// SPDX-License-Identifier: MIT
/*
 * ortho-run: the llama2.c forward pass. RMSNorm (eps 1e-5), RoPE (theta
 * 10000, interleaved pairs within each head), grouped-query attention with
 * a KV cache, SwiGLU feed-forward w2(silu(w1 x) * w3 x), classifier shared
 * with the token embedding or a linear "output". A call runs a batch of
 * tokens so that every linear layer is one ortho_linear() GEMM.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ortho-run-llama.h"

#define RMS_EPS 1e-5f
#define ROPE_THETA 10000.0f

static int find(struct ortho_model *m, const char *name,
		const struct ortho_tensor **out, uint32_t rows, uint32_t cols,
		int linear)
{
	struct ortho_tensor_info info = { .sz = sizeof(info) };
	struct ortho_tensor *t;
	int ret;

	ret = ortho_model_find_tensor(m, name, &t);
	if (ret) {
		fprintf(stderr, "ortho-run: error: the model has no tensor "
			"%s\n", name);
		return ret;
	}
	ret = ortho_tensor_info_get(t, &info);
	if (ret)
		return ret;
	if ((uint64_t)info.rows * info.cols != (uint64_t)rows * cols ||
	    (linear && (info.rows != rows || !info.is_linear))) {
		fprintf(stderr, "ortho-run: error: tensor %s is %ux%u%s, a "
			"llama2.c model needs %ux%u%s\n", name, info.rows,
			info.cols, info.is_linear ? " linear" : "", rows, cols,
			linear ? " linear" : "");
		return -EINVAL;
	}
	*out = t;
	return 0;
}

/* A norm weight vector, copied out as FP32. */
static int read_vec(struct ortho_model *m, const char *name, uint32_t n,
		    float **out)
{
	const struct ortho_tensor *t;
	int ret;

	ret = find(m, name, &t, 1, n, 0);
	if (ret)
		return ret;
	*out = malloc(n * sizeof(float));
	if (!*out)
		return -ENOMEM;
	return ortho_tensor_read_f32(t, *out, n);
}

static int init_layer(struct llama *l, uint32_t i)
{
	struct llama_layer *ly = &l->layers[i];
	const struct ortho_model_config *c = &l->cfg;
	struct ortho_model *m = l->model;
	struct {
		const char *suffix;
		const struct ortho_tensor **t;
		uint32_t rows, cols;
	} lin[] = {
		{ "wq", &ly->wq, c->dim, c->dim },
		{ "wk", &ly->wk, l->kv_dim, c->dim },
		{ "wv", &ly->wv, l->kv_dim, c->dim },
		{ "wo", &ly->wo, c->dim, c->dim },
		{ "w1", &ly->w1, c->hidden_dim, c->dim },
		{ "w2", &ly->w2, c->dim, c->hidden_dim },
		{ "w3", &ly->w3, c->hidden_dim, c->dim },
	};
	char name[64];
	unsigned int j;
	int ret;

	for (j = 0; j < sizeof(lin) / sizeof(lin[0]); j++) {
		snprintf(name, sizeof(name), "layers.%u.%s", i, lin[j].suffix);
		ret = find(m, name, lin[j].t, lin[j].rows, lin[j].cols, 1);
		if (ret)
			return ret;
	}
	snprintf(name, sizeof(name), "layers.%u.attn_norm", i);
	ret = read_vec(m, name, c->dim, &ly->att_norm);
	if (ret)
		return ret;
	snprintf(name, sizeof(name), "layers.%u.ffn_norm", i);
	return read_vec(m, name, c->dim, &ly->ffn_norm);
}

static int check_config(const struct ortho_model_config *c)
{
	if (!c->dim || !c->hidden_dim || !c->n_layers || !c->n_heads ||
	    !c->n_kv_heads || !c->vocab_size || !c->seq_len ||
	    c->dim % c->n_heads || c->n_heads % c->n_kv_heads ||
	    (c->dim / c->n_heads) % 2 || c->seq_len > (1u << 20) ||
	    c->n_layers > 4096) {
		fprintf(stderr, "ortho-run: error: not a llama2.c "
			"configuration (dim %u, heads %u, kv heads %u, "
			"seq_len %u)\n", c->dim, c->n_heads, c->n_kv_heads,
			c->seq_len);
		return -EINVAL;
	}
	return 0;
}

/* An FP32 vocab x dim table: rows from the map, or one FP32 copy. */
static int f32_table(struct llama *l, const struct ortho_tensor *t,
		     float **copy)
{
	size_t n = (size_t)l->cfg.vocab_size * l->cfg.dim;

	if (ortho_tensor_row_f32(t, 0))
		return 0;
	*copy = malloc(n * sizeof(float));
	if (!*copy)
		return -ENOMEM;
	return ortho_tensor_read_f32(t, *copy, n);
}

static int init_embedding(struct llama *l)
{
	const struct ortho_model_config *c = &l->cfg;
	struct ortho_tensor_info info = { .sz = sizeof(info) };
	struct ortho_tensor *out;
	int ret;

	ret = find(l->model, "tok_embeddings", &l->emb, c->vocab_size, c->dim,
		   0);
	if (!ret)
		ret = f32_table(l, l->emb, &l->emb_copy);
	if (ret)
		return ret;
	if (ortho_model_find_tensor(l->model, "output", &out)) {
		if (c->shared_classifier)
			return 0;
		fprintf(stderr, "ortho-run: error: the model has no tensor "
			"output and its classifier is not shared\n");
		return -ENOENT;
	}
	ret = ortho_tensor_info_get(out, &info);
	if (ret)
		return ret;
	if (info.is_linear)
		return find(l->model, "output", &l->cls, c->vocab_size,
			    c->dim, 1);
	ret = find(l->model, "output", &l->cls_rows, c->vocab_size, c->dim,
		   0);
	if (ret)
		return ret;
	return f32_table(l, l->cls_rows, &l->cls_copy);
}

static int alloc_scratch(struct llama *l)
{
	const struct ortho_model_config *c = &l->cfg;
	size_t b = l->max_batch, cache;

	cache = (size_t)c->n_layers * c->seq_len * l->kv_dim;
	l->kcache = calloc(cache, sizeof(float));
	l->vcache = calloc(cache, sizeof(float));
	l->x = malloc(b * c->dim * sizeof(float));
	l->xb = malloc(b * c->dim * sizeof(float));
	l->xb2 = malloc(b * c->dim * sizeof(float));
	l->q = malloc(b * c->dim * sizeof(float));
	l->k = malloc(b * l->kv_dim * sizeof(float));
	l->v = malloc(b * l->kv_dim * sizeof(float));
	l->hb = malloc(b * c->hidden_dim * sizeof(float));
	l->hb2 = malloc(b * c->hidden_dim * sizeof(float));
	l->att = malloc((size_t)c->seq_len * sizeof(float));
	l->logits = malloc(b * c->vocab_size * sizeof(float));
	if (!l->kcache || !l->vcache || !l->x || !l->xb || !l->xb2 || !l->q ||
	    !l->k || !l->v || !l->hb || !l->hb2 || !l->att || !l->logits)
		return -ENOMEM;
	return 0;
}

int llama_init(struct llama *l, struct ortho_model *m, uint32_t max_batch)
{
	struct ortho_model_config *c = &l->cfg;
	uint32_t i;
	int ret;

	memset(l, 0, sizeof(*l));
	l->model = m;
	ret = ortho_model_get_config(m, c);
	if (ret)
		return ret;
	ret = check_config(c);
	if (ret)
		return ret;
	l->head_size = c->dim / c->n_heads;
	l->kv_dim = l->head_size * c->n_kv_heads;
	l->kv_mul = c->n_heads / c->n_kv_heads;
	if (!max_batch || max_batch > c->seq_len)
		max_batch = c->seq_len;
	l->max_batch = max_batch;
	l->layers = calloc(c->n_layers, sizeof(*l->layers));
	if (!l->layers)
		goto nomem;
	for (i = 0; i < c->n_layers; i++) {
		ret = init_layer(l, i);
		if (ret)
			goto err;
	}
	ret = read_vec(m, "norm", c->dim, &l->final_norm);
	if (!ret)
		ret = init_embedding(l);
	if (!ret)
		ret = alloc_scratch(l);
	if (ret)
		goto err;
	return 0;
nomem:
	ret = -ENOMEM;
err:
	llama_free(l);
	return ret;
}

void llama_free(struct llama *l)
{
	uint32_t i;

	if (l->layers)
		for (i = 0; i < l->cfg.n_layers; i++) {
			free(l->layers[i].att_norm);
			free(l->layers[i].ffn_norm);
		}
	free(l->layers);
	free(l->final_norm);
	free(l->emb_copy);
	free(l->cls_copy);
	free(l->kcache);
	free(l->vcache);
	free(l->x);
	free(l->xb);
	free(l->xb2);
	free(l->q);
	free(l->k);
	free(l->v);
	free(l->hb);
	free(l->hb2);
	free(l->att);
	free(l->logits);
	memset(l, 0, sizeof(*l));
}

static void rmsnorm(float *o, const float *x, const float *w, uint32_t n)
{
	float ss = 0.0f;
	uint32_t i;

	for (i = 0; i < n; i++)
		ss += x[i] * x[i];
	ss = 1.0f / sqrtf(ss / (float)n + RMS_EPS);
	for (i = 0; i < n; i++)
		o[i] = w[i] * (ss * x[i]);
}

static void softmax(float *x, uint32_t n)
{
	float max = x[0], sum = 0.0f;
	uint32_t i;

	for (i = 1; i < n; i++)
		if (x[i] > max)
			max = x[i];
	for (i = 0; i < n; i++) {
		x[i] = expf(x[i] - max);
		sum += x[i];
	}
	for (i = 0; i < n; i++)
		x[i] /= sum;
}

/* Rotate interleaved pairs of q (all heads) and k (kv heads) at @pos. */
static void rope(const struct llama *l, float *q, float *k, uint32_t pos)
{
	uint32_t i;

	for (i = 0; i < l->cfg.dim; i += 2) {
		uint32_t hd = i % l->head_size;
		float freq = 1.0f / powf(ROPE_THETA,
					 (float)hd / (float)l->head_size);
		float val = (float)pos * freq;
		float fcr = cosf(val), fci = sinf(val), v0, v1;

		v0 = q[i];
		v1 = q[i + 1];
		q[i] = v0 * fcr - v1 * fci;
		q[i + 1] = v0 * fci + v1 * fcr;
		if (i < l->kv_dim) {
			v0 = k[i];
			v1 = k[i + 1];
			k[i] = v0 * fcr - v1 * fci;
			k[i + 1] = v0 * fci + v1 * fcr;
		}
	}
}

/* One token's attention over positions 0 .. pos of layer @li's cache. */
static void attend(struct llama *l, uint32_t li, const float *q, float *out,
		   uint32_t pos)
{
	size_t lo = (size_t)li * l->cfg.seq_len * l->kv_dim;
	float scale = 1.0f / sqrtf((float)l->head_size);
	uint32_t h, t, i;

	for (h = 0; h < l->cfg.n_heads; h++) {
		const float *qh = q + h * l->head_size;
		size_t ko = lo + (h / l->kv_mul) * l->head_size;
		float *oh = out + h * l->head_size;

		for (t = 0; t <= pos; t++) {
			const float *kt = l->kcache + ko +
					  (size_t)t * l->kv_dim;
			float s = 0.0f;

			for (i = 0; i < l->head_size; i++)
				s += qh[i] * kt[i];
			l->att[t] = s * scale;
		}
		softmax(l->att, pos + 1);
		memset(oh, 0, l->head_size * sizeof(float));
		for (t = 0; t <= pos; t++) {
			const float *vt = l->vcache + ko +
					  (size_t)t * l->kv_dim;

			for (i = 0; i < l->head_size; i++)
				oh[i] += l->att[t] * vt[i];
		}
	}
}

static int attention_block(struct llama *l, uint32_t li, uint32_t n,
			   uint32_t pos)
{
	const struct llama_layer *ly = &l->layers[li];
	uint32_t dim = l->cfg.dim, kvd = l->kv_dim, t, i;
	size_t lo = (size_t)li * l->cfg.seq_len * kvd;
	int ret;

	for (t = 0; t < n; t++)
		rmsnorm(l->xb + t * dim, l->x + t * dim, ly->att_norm, dim);
	ret = ortho_linear(l->model, ly->wq, l->xb, l->q, n);
	if (!ret)
		ret = ortho_linear(l->model, ly->wk, l->xb, l->k, n);
	if (!ret)
		ret = ortho_linear(l->model, ly->wv, l->xb, l->v, n);
	if (ret)
		return ret;
	for (t = 0; t < n; t++) {
		rope(l, l->q + t * dim, l->k + t * kvd, pos + t);
		memcpy(l->kcache + lo + (size_t)(pos + t) * kvd,
		       l->k + t * kvd, kvd * sizeof(float));
		memcpy(l->vcache + lo + (size_t)(pos + t) * kvd,
		       l->v + t * kvd, kvd * sizeof(float));
	}
	for (t = 0; t < n; t++)
		attend(l, li, l->q + t * dim, l->xb2 + t * dim, pos + t);
	ret = ortho_linear(l->model, ly->wo, l->xb2, l->xb, n);
	if (ret)
		return ret;
	for (i = 0; i < n * dim; i++)
		l->x[i] += l->xb[i];
	return 0;
}

static int ffn_block(struct llama *l, uint32_t li, uint32_t n)
{
	const struct llama_layer *ly = &l->layers[li];
	uint32_t dim = l->cfg.dim, t, i;
	size_t nh = (size_t)n * l->cfg.hidden_dim;
	int ret;

	for (t = 0; t < n; t++)
		rmsnorm(l->xb + t * dim, l->x + t * dim, ly->ffn_norm, dim);
	ret = ortho_linear(l->model, ly->w1, l->xb, l->hb, n);
	if (!ret)
		ret = ortho_linear(l->model, ly->w3, l->xb, l->hb2, n);
	if (ret)
		return ret;
	for (i = 0; i < nh; i++) {
		float a = l->hb[i];

		l->hb[i] = a / (1.0f + expf(-a)) * l->hb2[i];
	}
	ret = ortho_linear(l->model, ly->w2, l->hb, l->xb, n);
	if (ret)
		return ret;
	for (i = 0; i < n * dim; i++)
		l->x[i] += l->xb[i];
	return 0;
}

static const float *table_row(const struct llama *l,
			      const struct ortho_tensor *t, const float *copy,
			      uint32_t row)
{
	if (copy)
		return copy + (size_t)row * l->cfg.dim;
	return ortho_tensor_row_f32(t, row);
}

/*
 * A shared classifier is the FP32 embedding, not a linear tensor: a plain
 * FP32 product with its rows.
 */
static int classify(struct llama *l, uint32_t n)
{
	uint32_t dim = l->cfg.dim, vs = l->cfg.vocab_size, t, v, i;
	const struct ortho_tensor *rt = l->cls_rows ? l->cls_rows : l->emb;
	const float *copy = l->cls_rows ? l->cls_copy : l->emb_copy;

	if (l->cls)
		return ortho_linear(l->model, l->cls, l->xb, l->logits, n);
	for (v = 0; v < vs; v++) {
		const float *e = table_row(l, rt, copy, v);

		for (t = 0; t < n; t++) {
			const float *xt = l->xb + t * dim;
			float s = 0.0f;

			for (i = 0; i < dim; i++)
				s += e[i] * xt[i];
			l->logits[(size_t)t * vs + v] = s;
		}
	}
	return 0;
}

int llama_forward(struct llama *l, const int *tok, uint32_t n, uint32_t pos)
{
	uint32_t dim = l->cfg.dim, t, li;
	int ret;

	if (!n || n > l->max_batch || pos > l->cfg.seq_len - n)
		return -EINVAL;
	for (t = 0; t < n; t++) {
		if (tok[t] < 0 || (uint32_t)tok[t] >= l->cfg.vocab_size)
			return -EINVAL;
		memcpy(l->x + t * dim,
		       table_row(l, l->emb, l->emb_copy, (uint32_t)tok[t]),
		       dim * sizeof(float));
	}
	for (li = 0; li < l->cfg.n_layers; li++) {
		/* The next layers' shards load while this one computes. */
		ret = ortho_model_prefetch(l->model, li, l->cfg.n_layers);
		if (!ret)
			ret = attention_block(l, li, n, pos);
		if (!ret)
			ret = ffn_block(l, li, n);
		if (ret)
			return ret;
	}
	for (t = 0; t < n; t++)
		rmsnorm(l->xb + t * dim, l->x + t * dim, l->final_norm, dim);
	return classify(l, n);
}
