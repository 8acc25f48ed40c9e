/* SPDX-License-Identifier: MIT */
/*
 * Checkpoint readers for ortho-pack: a llama2.c .bin or a Hugging Face
 * Llama .safetensors file becomes one list of named tensors in the canonical
 * naming and order:
 *
 *   tok_embeddings,
 *   per layer N: layers.N.attn_norm, layers.N.wq, .wk, .wv, .wo,
 *                layers.N.ffn_norm, layers.N.w1, .w2, .w3,
 *   norm, and output only when the classifier is not shared.
 *
 * The file is mapped read-only; tensors are read as FP32 on demand
 * (ckpt_tensor_f32()), so a large model is never copied whole.
 */
#ifndef ORTHO_CHECKPOINT_H
#define ORTHO_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "format.h"
#include "ortho.h"

struct ortho_ctx;

/* Largest layer count a checkpoint may declare (tensor table limit). */
#define CKPT_MAX_LAYERS 4096u
/* Tensors per transformer layer, and linear ones among them. */
#define CKPT_PER_LAYER 9u
#define CKPT_LINEAR_PER_LAYER 7u

enum ckpt_dtype {
	CKPT_F32 = 0,
	CKPT_F16 = 1,
	CKPT_BF16 = 2,
};

struct ckpt_tensor {
	char name[ORB_NAME_MAX];
	uint32_t rows;		/* output dimension, 1 for vectors */
	uint32_t cols;		/* input dimension */
	uint32_t layer;		/* UINT32_MAX outside the layers */
	uint32_t is_linear;	/* wq wk wv wo w1 w2 w3 */
	uint32_t dtype;		/* enum ckpt_dtype of the stored data */
	const void *src;	/* rows * cols elements in the map */
	float *buf;		/* FP32 copy when src cannot be used as is */
	/*
	 * Hugging Face q_proj / k_proj: the stored rows are in rotate-half
	 * order per head; ckpt_tensor_f32() returns them in llama2.c order
	 * (interleaved RoPE pairs). The number of heads, 0 for none.
	 */
	uint32_t hf_rope_heads;
};

struct ckpt {
	char *path;
	void *map;
	size_t size;
	struct ortho_model_config cfg;	/* group_size left 0 */
	struct ckpt_tensor *t;
	unsigned int n;
};

/**
 * ckpt_open() - read a checkpoint: *.safetensors by name, anything else as
 * llama2.c. Every size in the file is checked against its length.
 * @ctx: for messages naming the file and what is wrong.
 * @path: the checkpoint.
 * @c: filled in; ckpt_close() it.
 *
 * Return: 0, -ENOENT, -EBADMSG (corrupt or truncated file), -EINVAL
 * (a valid file this reader does not support), -ENOMEM.
 */
int ckpt_open(struct ortho_ctx *ctx, const char *path, struct ckpt *c);

/* Return: as ckpt_open(), for a llama2.c legacy checkpoint. */
int ckpt_open_llama2c(struct ortho_ctx *ctx, const char *path,
		      struct ckpt *c);

/**
 * ckpt_open_safetensors() - read a single-file Hugging Face Llama
 * checkpoint. The head counts come from config.json in the same directory.
 *
 * Return: as ckpt_open().
 */
int ckpt_open_safetensors(struct ortho_ctx *ctx, const char *path,
			  struct ckpt *c);

/* Unmap and free everything; @c may be zeroed or half filled. */
void ckpt_close(struct ckpt *c);

/* Return: the index of tensor @name, or -ENOENT. */
int ckpt_find(const struct ckpt *c, const char *name);

/**
 * ckpt_tensor_f32() - the tensor's data as FP32, converted on first use.
 * @t: a tensor of an open checkpoint.
 * @out: rows * cols floats, valid until ckpt_tensor_release() or close.
 *
 * Return: 0, or -ENOMEM.
 */
int ckpt_tensor_f32(struct ckpt_tensor *t, const float **out);

/* Free a converted copy (the next ckpt_tensor_f32() converts again). */
void ckpt_tensor_release(struct ckpt_tensor *t);

/**
 * ckpt_hf_row() - the stored row of a Hugging Face q_proj or k_proj that
 * holds row @r in llama2.c order. Hugging Face's conversion script stores
 * w.view(heads, hs / 2, 2, cols).transpose(1, 2), so within each head of
 * @hs rows llama2.c row 2i + p is stored at row p * hs / 2 + i.
 * @r: row in llama2.c order. @hs: head size (rows / heads), even.
 */
static inline uint32_t ckpt_hf_row(uint32_t r, uint32_t hs)
{
	uint32_t j = r % hs;

	return r - j + (j % 2) * (hs / 2) + j / 2;
}

/**
 * ckpt_hf_unpermute() - undo Hugging Face's q/k RoPE row permutation of a
 * @rows x @cols FP32 matrix with @heads heads: dst row r = src row
 * ckpt_hf_row(r, rows / heads).
 *
 * Return: 0, or -EINVAL when @rows does not split into @heads heads of an
 * even size.
 */
int ckpt_hf_unpermute(const float *src, float *dst, uint32_t rows,
		      uint32_t cols, uint32_t heads);

/* Return: number of elements of @t. */
static inline uint64_t ckpt_numel(const struct ckpt_tensor *t)
{
	return (uint64_t)t->rows * t->cols;
}

/* ---- shared by the readers (checkpoint.c) ---- */

/**
 * ckpt_check_config() - check an architecture for consistency: every
 * dimension in 1..ORB_MAX_DIM, heads dividing the width, an even head size.
 * @ctx: for messages. @path: named in them. @cfg: the architecture.
 *
 * Return: 0, or -EBADMSG naming the field.
 */
int ckpt_check_config(struct ortho_ctx *ctx, const char *path,
		      const struct ortho_model_config *cfg);

/**
 * ckpt_layout() - allocate c->t and fill in the canonical names and shapes
 * for c->cfg (src left NULL).
 *
 * Return: 0, or -ENOMEM.
 */
int ckpt_layout(struct ckpt *c);

/**
 * ckpt_map() - map @path read-only into c->map / c->size and copy the path.
 *
 * Return: 0, -ENOENT, -EBADMSG for an empty file, or -errno.
 */
int ckpt_map(struct ortho_ctx *ctx, const char *path, struct ckpt *c);

/* ---- the strict JSON reader (checkpoint_json.c) ---- */

struct json_in {
	struct ortho_ctx *ctx;
	const char *what;	/* the file, named in messages */
	const char *base, *p, *end;
};

/* Log "@what: JSON error at byte N: @msg". Return: -EBADMSG. */
int json_fail(struct json_in *j, const char *msg);
/* Return: the next non-blank character (not consumed), or -1 at the end. */
int json_peek(struct json_in *j);
/* Consume @c after blanks. Return: 0, or -EBADMSG. */
int json_char(struct json_in *j, char c);
/**
 * json_string_t() - a string into @out (@cap bytes with the NUL), or
 * skipped when @out is NULL. A longer string fails unless @trunc is given:
 * then it is cut short and *@trunc set.
 *
 * Return: 0, or -EBADMSG.
 */
int json_string_t(struct json_in *j, char *out, size_t cap, int *trunc);
/* Return: 0 with a non-negative integer in @v, or -EBADMSG. */
int json_uint(struct json_in *j, uint64_t *v);
/* Check any value against the grammar and skip it. Return: 0 or -EBADMSG. */
int json_skip(struct json_in *j, int depth);

static inline int json_string(struct json_in *j, char *out, size_t cap)
{
	return json_string_t(j, out, cap, NULL);
}

#endif
