// SPDX-License-Identifier: MIT
/*
 * llama2.c legacy checkpoints (tests/data/stories260K/NOTICE): seven int32
 * (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len),
 * then float32 arrays: token embedding, each per-layer array for all layers
 * in turn, the final norm, two RoPE tables (skipped: ortho-run computes
 * RoPE itself) and, when vocab_size is negative, the classifier.
 *
 * The header decides every size, so it is checked before anything else and
 * the whole layout must match the file's length to the byte: a short or a
 * long file is a corrupt one.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "checkpoint.h"
#include "log.h"

#define L2C_HEADER_BYTES 28u
/* The first word of llama2.c's versioned exports ("ak42"). */
#define L2C_MAGIC_V1 0x616b3432

static const char *const hdr_field[7] = {
	"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads",
	"vocab_size", "seq_len",
};

static int read_header(struct ortho_ctx *ctx, struct ckpt *c)
{
	struct ortho_model_config *cfg = &c->cfg;
	int32_t h[7];
	int i;

	if (c->size < L2C_HEADER_BYTES) {
		olog_err(ctx, "%s: truncated: %zu bytes, a llama2.c header needs %u",
			 c->path, c->size, L2C_HEADER_BYTES);
		return -EBADMSG;
	}
	memcpy(h, c->map, sizeof(h));
	if (h[0] == L2C_MAGIC_V1) {
		olog_err(ctx, "%s: a versioned llama2.c export (magic \"ak42\"); only the legacy layout is supported",
			 c->path);
		return -EINVAL;
	}
	for (i = 0; i < 7; i++) {
		if (i == 5 ? h[i] != 0 && h[i] != INT32_MIN : h[i] > 0)
			continue;
		olog_err(ctx, "%s: corrupt header: %s is %d", c->path,
			 hdr_field[i], h[i]);
		return -EBADMSG;
	}
	cfg->dim = (uint32_t)h[0];
	cfg->hidden_dim = (uint32_t)h[1];
	cfg->n_layers = (uint32_t)h[2];
	cfg->n_heads = (uint32_t)h[3];
	cfg->n_kv_heads = (uint32_t)h[4];
	cfg->vocab_size = (uint32_t)(h[5] < 0 ? -h[5] : h[5]);
	cfg->seq_len = (uint32_t)h[6];
	/* A negative vocab_size is llama2.c's flag: separate classifier. */
	cfg->shared_classifier = h[5] > 0;
	return ckpt_check_config(ctx, c->path, cfg);
}

/* Give the canonical tensors their place in the file; return the end. */
static uint64_t place_tensors(struct ckpt *c)
{
	const struct ortho_model_config *m = &c->cfg;
	uint64_t off = L2C_HEADER_BYTES;
	uint32_t head_size = m->dim / m->n_heads;
	unsigned int slot, l;

	c->t[0].src = (const uint8_t *)c->map + off;
	off += ckpt_numel(&c->t[0]) * 4;
	/* Each per-layer array holds all layers, in canonical slot order. */
	for (slot = 0; slot < CKPT_PER_LAYER; slot++) {
		for (l = 0; l < m->n_layers; l++) {
			struct ckpt_tensor *t = &c->t[1 + l * CKPT_PER_LAYER +
						      slot];

			t->src = (const uint8_t *)c->map + off;
			off += ckpt_numel(t) * 4;
		}
	}
	c->t[c->n - (m->shared_classifier ? 1 : 2)].src =
		(const uint8_t *)c->map + off;
	off += (uint64_t)m->dim * 4;
	off += 2 * ((uint64_t)m->seq_len * head_size / 2) * 4;
	if (!m->shared_classifier) {
		c->t[c->n - 1].src = (const uint8_t *)c->map + off;
		off += ckpt_numel(&c->t[c->n - 1]) * 4;
	}
	return off;
}

/*
 * The size the header implies, computed without touching the map, so that
 * no pointer beyond the file is ever formed.
 */
static uint64_t implied_size(const struct ortho_model_config *m)
{
	uint64_t kv_dim = (uint64_t)m->dim / m->n_heads * m->n_kv_heads;
	uint64_t per_layer = 2ull * m->dim + 2ull * m->dim * m->dim +
			     2ull * kv_dim * m->dim +
			     3ull * m->hidden_dim * m->dim;
	uint64_t rope = 2 * ((uint64_t)m->seq_len * (m->dim / m->n_heads) / 2);
	uint64_t floats = (uint64_t)m->vocab_size * m->dim +
			  per_layer * m->n_layers + m->dim + rope;

	if (!m->shared_classifier)
		floats += (uint64_t)m->vocab_size * m->dim;
	return L2C_HEADER_BYTES + floats * 4;
}

int ckpt_open_llama2c(struct ortho_ctx *ctx, const char *path,
		      struct ckpt *c)
{
	uint64_t want;
	int ret;

	ret = ckpt_map(ctx, path, c);
	if (ret)
		goto err;
	ret = read_header(ctx, c);
	if (ret)
		goto err;
	want = implied_size(&c->cfg);
	if (want != c->size) {
		olog_err(ctx, "%s: %s: the header implies %llu bytes, the file has %zu",
			 path, want > c->size ? "truncated" : "trailing data",
			 (unsigned long long)want, c->size);
		ret = -EBADMSG;
		goto err;
	}
	ret = ckpt_layout(c);
	if (ret)
		goto err;
	if (place_tensors(c) != want) {
		olog_err(ctx, "%s: internal layout mismatch", path);
		ret = -EBADMSG;
		goto err;
	}
	olog_info(ctx, "%s: llama2.c checkpoint: dim %u, hidden %u, %u layers, %u/%u heads, vocab %u%s",
		  path, c->cfg.dim, c->cfg.hidden_dim, c->cfg.n_layers,
		  c->cfg.n_heads, c->cfg.n_kv_heads, c->cfg.vocab_size,
		  c->cfg.shared_classifier ? "" : ", separate classifier");
	return 0;
err:
	ckpt_close(c);
	return ret;
}
