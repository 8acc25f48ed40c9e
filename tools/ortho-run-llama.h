/* SPDX-License-Identifier: MIT */
/*
 * ortho-run: a llama2.c-architecture forward pass over an open ortho model.
 * Every linear layer goes through ortho_linear() (Base plus the shards in
 * use); norms and embeddings are read through the public API.
 */
#ifndef ORTHO_RUN_LLAMA_H
#define ORTHO_RUN_LLAMA_H

#include <stdint.h>

#include "ortho.h"

struct llama_layer {
	const struct ortho_tensor *wq, *wk, *wv, *wo, *w1, *w2, *w3;
	float *att_norm, *ffn_norm;	/* dim floats each */
};

struct llama {
	struct ortho_model *model;
	struct ortho_model_config cfg;
	uint32_t head_size, kv_dim, kv_mul;
	uint32_t max_batch;		/* tokens per llama_forward() */
	const struct ortho_tensor *emb;	/* tok_embeddings, vocab x dim */
	float *emb_copy;		/* when the embedding is not FP32 */
	const struct ortho_tensor *cls;	/* a linear classifier or NULL */
	const struct ortho_tensor *cls_rows; /* an FP32 "output", or NULL */
	float *cls_copy;		/* when that is not FP32 */
	float *final_norm;
	struct llama_layer *layers;
	float *kcache, *vcache;		/* [layer][seq_len][kv_dim] */
	/* Scratch for max_batch tokens. */
	float *x, *xb, *xb2, *hb, *hb2, *q, *k, *v, *att;
	float *logits;			/* max_batch x vocab */
};

/**
 * llama_init() - find the tensors of a llama2.c model and allocate the
 * KV cache and scratch.
 * @l: filled in.
 * @m: the open model.
 * @max_batch: most tokens one llama_forward() call takes (1..seq_len).
 *
 * Prints what is missing on stderr.
 * Return: 0, -ENOENT (a tensor is missing), -EINVAL (wrong shape), -ENOMEM.
 */
int llama_init(struct llama *l, struct ortho_model *m, uint32_t max_batch);

/* Free what llama_init() allocated (not the model). */
void llama_free(struct llama *l);

/**
 * llama_forward() - run @n tokens at positions @pos .. @pos + n - 1 (the KV
 * cache holds the positions before @pos) and leave their logits in
 * l->logits (n x vocab).
 * @l: the model.
 * @tok: the token ids.
 * @n: 1 .. max_batch.
 * @pos: first position; pos + n <= seq_len.
 *
 * Return: 0, -EINVAL (bad token or position), or ortho_linear()'s error.
 */
int llama_forward(struct llama *l, const int *tok, uint32_t n, uint32_t pos);

#endif
