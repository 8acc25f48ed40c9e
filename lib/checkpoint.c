// SPDX-License-Identifier: MIT
/*
 * What the checkpoint readers share: mapping the file, the canonical tensor
 * list, the architecture checks and FP32 access with on-demand conversion.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "fp16.h"
#include "log.h"

static int has_suffix(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && !strcmp(s + n - m, suffix);
}

int ckpt_open(struct ortho_ctx *ctx, const char *path, struct ckpt *c)
{
	if (has_suffix(path, ".safetensors"))
		return ckpt_open_safetensors(ctx, path, c);
	return ckpt_open_llama2c(ctx, path, c);
}

int ckpt_map(struct ortho_ctx *ctx, const char *path, struct ckpt *c)
{
	struct stat st;
	int fd, ret = 0;

	memset(c, 0, sizeof(*c));
	c->path = strdup(path);
	if (!c->path)
		return -ENOMEM;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		olog_err(ctx, "%s: cannot open: %s", path, strerror(-ret));
		return ret;
	}
	if (fstat(fd, &st)) {
		ret = -errno;
		olog_err(ctx, "%s: cannot stat: %s", path, strerror(-ret));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		olog_err(ctx, "%s: not a regular file", path);
		ret = -EINVAL;
		goto out;
	}
	if (st.st_size == 0) {
		olog_err(ctx, "%s: empty file", path);
		ret = -EBADMSG;
		goto out;
	}
	c->map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (c->map == MAP_FAILED) {
		ret = -errno;
		c->map = NULL;
		olog_err(ctx, "%s: cannot map: %s", path, strerror(-ret));
		goto out;
	}
	c->size = (size_t)st.st_size;
out:
	close(fd);
	return ret;
}

void ckpt_close(struct ckpt *c)
{
	unsigned int i;

	if (!c)
		return;
	for (i = 0; c->t && i < c->n; i++)
		free(c->t[i].buf);
	free(c->t);
	if (c->map)
		munmap(c->map, c->size);
	free(c->path);
	memset(c, 0, sizeof(*c));
}

int ckpt_find(const struct ckpt *c, const char *name)
{
	unsigned int i;

	for (i = 0; i < c->n; i++)
		if (!strcmp(c->t[i].name, name))
			return (int)i;
	return -ENOENT;
}

/* Elements [@from, @from + @n) of @t's stored data as FP32 into @dst. */
static void convert(const struct ckpt_tensor *t, float *dst, uint64_t from,
		    uint64_t n)
{
	size_t es = t->dtype == CKPT_F32 ? 4 : 2;
	const uint8_t *p = (const uint8_t *)t->src + from * es;
	uint64_t i;

	for (i = 0; i < n; i++) {
		uint16_t h;
		uint32_t bits;

		switch (t->dtype) {
		case CKPT_F16:
			memcpy(&h, p + 2 * i, 2);
			dst[i] = fp16_to_f32(h);
			break;
		case CKPT_BF16:
			memcpy(&h, p + 2 * i, 2);
			bits = (uint32_t)h << 16;
			memcpy(&dst[i], &bits, 4);
			break;
		default:
			memcpy(&dst[i], p + 4 * i, 4);
			break;
		}
	}
}

int ckpt_hf_unpermute(const float *src, float *dst, uint32_t rows,
		      uint32_t cols, uint32_t heads)
{
	uint32_t r, hs;

	if (!heads || rows % heads || (rows / heads) % 2)
		return -EINVAL;
	hs = rows / heads;
	for (r = 0; r < rows; r++)
		memcpy(dst + (size_t)r * cols,
		       src + (size_t)ckpt_hf_row(r, hs) * cols,
		       (size_t)cols * sizeof(float));
	return 0;
}

int ckpt_tensor_f32(struct ckpt_tensor *t, const float **out)
{
	uint64_t n = ckpt_numel(t);
	uint32_t r, hs;

	if (t->dtype == CKPT_F32 && !t->hf_rope_heads &&
	    !((uintptr_t)t->src & 3)) {
		*out = t->src;
		return 0;
	}
	if (!t->buf) {
		t->buf = malloc(n * sizeof(float));
		if (!t->buf)
			return -ENOMEM;
		if (!t->hf_rope_heads) {
			convert(t, t->buf, 0, n);
		} else {
			/* the reader checked: rows = heads * even size */
			hs = t->rows / t->hf_rope_heads;
			for (r = 0; r < t->rows; r++)
				convert(t, t->buf + (uint64_t)r * t->cols,
					(uint64_t)ckpt_hf_row(r, hs) * t->cols,
					t->cols);
		}
	}
	*out = t->buf;
	return 0;
}

void ckpt_tensor_release(struct ckpt_tensor *t)
{
	free(t->buf);
	t->buf = NULL;
}

static int dim_ok(struct ortho_ctx *ctx, const char *path, const char *field,
		  uint32_t v, uint32_t max)
{
	if (v >= 1 && v <= max)
		return 0;
	olog_err(ctx, "%s: corrupt header: %s %u out of range 1..%u", path,
		 field, v, max);
	return -EBADMSG;
}

int ckpt_check_config(struct ortho_ctx *ctx, const char *path,
		      const struct ortho_model_config *cfg)
{
	int ret = 0;

	ret = ret ?: dim_ok(ctx, path, "dim", cfg->dim, ORB_MAX_DIM);
	ret = ret ?: dim_ok(ctx, path, "hidden_dim", cfg->hidden_dim,
			    ORB_MAX_DIM);
	ret = ret ?: dim_ok(ctx, path, "n_layers", cfg->n_layers,
			    CKPT_MAX_LAYERS);
	ret = ret ?: dim_ok(ctx, path, "n_heads", cfg->n_heads, cfg->dim);
	ret = ret ?: dim_ok(ctx, path, "n_kv_heads", cfg->n_kv_heads,
			    cfg->n_heads);
	ret = ret ?: dim_ok(ctx, path, "vocab_size", cfg->vocab_size,
			    ORB_MAX_DIM);
	ret = ret ?: dim_ok(ctx, path, "seq_len", cfg->seq_len, ORB_MAX_DIM);
	if (ret)
		return ret;
	if (cfg->dim % cfg->n_heads) {
		olog_err(ctx, "%s: corrupt header: dim %u not a multiple of n_heads %u",
			 path, cfg->dim, cfg->n_heads);
		return -EBADMSG;
	}
	if (cfg->n_heads % cfg->n_kv_heads) {
		olog_err(ctx, "%s: corrupt header: n_heads %u not a multiple of n_kv_heads %u",
			 path, cfg->n_heads, cfg->n_kv_heads);
		return -EBADMSG;
	}
	if ((cfg->dim / cfg->n_heads) % 2) {
		olog_err(ctx, "%s: corrupt header: head size %u is odd (RoPE works on pairs)",
			 path, cfg->dim / cfg->n_heads);
		return -EBADMSG;
	}
	return 0;
}

static void set_tensor(struct ckpt_tensor *t, const char *name,
		       uint32_t layer, uint32_t rows, uint32_t cols,
		       uint32_t linear)
{
	if (layer == UINT32_MAX)
		snprintf(t->name, sizeof(t->name), "%s", name);
	else
		snprintf(t->name, sizeof(t->name), "layers.%u.%s", layer, name);
	t->layer = layer;
	t->rows = rows;
	t->cols = cols;
	t->is_linear = linear;
}

int ckpt_layout(struct ckpt *c)
{
	const struct ortho_model_config *m = &c->cfg;
	uint32_t kv_dim = m->dim / m->n_heads * m->n_kv_heads;
	unsigned int n = m->n_layers * CKPT_PER_LAYER + 2 +
			 (m->shared_classifier ? 0 : 1);
	struct ckpt_tensor *t = calloc(n, sizeof(*t));
	uint32_t l;

	if (!t)
		return -ENOMEM;
	c->t = t;
	c->n = n;
	set_tensor(t++, "tok_embeddings", UINT32_MAX, m->vocab_size, m->dim, 0);
	for (l = 0; l < m->n_layers; l++) {
		set_tensor(t++, "attn_norm", l, 1, m->dim, 0);
		set_tensor(t++, "wq", l, m->dim, m->dim, 1);
		set_tensor(t++, "wk", l, kv_dim, m->dim, 1);
		set_tensor(t++, "wv", l, kv_dim, m->dim, 1);
		set_tensor(t++, "wo", l, m->dim, m->dim, 1);
		set_tensor(t++, "ffn_norm", l, 1, m->dim, 0);
		set_tensor(t++, "w1", l, m->hidden_dim, m->dim, 1);
		set_tensor(t++, "w2", l, m->dim, m->hidden_dim, 1);
		set_tensor(t++, "w3", l, m->hidden_dim, m->dim, 1);
	}
	set_tensor(t++, "norm", UINT32_MAX, 1, m->dim, 0);
	if (!m->shared_classifier)
		set_tensor(t, "output", UINT32_MAX, m->vocab_size, m->dim, 0);
	return 0;
}
