// SPDX-License-Identifier: MIT
/*
 * The Ortho half of ortho_pack(): the selection over the whole model
 * (select.h), then per layer each linear tensor's Ortho values, checked
 * one by one, encoded the smallest way and written as one encrypted shard
 * with a fresh random id and key.
 *
 * A tensor is walked twice: once to decide and count its entries (the
 * decisions go to a bitmap, since tie-breaking makes them stateful), once
 * to compute and check the values into buffers of the right size. Values
 * live in secmem: they are the private model.
 */
#include <errno.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pack.h"
#include "secmem.h"
#include "shard.h"

static const unsigned int layer_linear[CKPT_LINEAR_PER_LAYER] = {
	1, 2, 3, 4, 6, 7, 8,	/* wq wk wv wo, w1 w2 w3 after the norms */
};

/* The encoded Ortho of one tensor and the buffers behind it. */
struct ortho_buf {
	struct osp_tensor_src src;
	uint32_t *rowptr, *col;
	uint16_t *val;
	size_t val_bytes;
};

static void ortho_buf_free(struct ortho_buf *b)
{
	free(b->rowptr);
	free(b->col);
	secmem_free(b->val, b->val_bytes);
	memset(b, 0, sizeof(*b));
}

static unsigned int linear_index(unsigned int layer, unsigned int k)
{
	return 1 + layer * CKPT_PER_LAYER + layer_linear[k];
}

/* Both models' FP32 views of tensor @i. */
static int views(struct pack_job *j, unsigned int i, const float **pub,
		 const float **priv)
{
	int ret = ckpt_tensor_f32(&j->pub.t[i], pub);

	return ret ?: ckpt_tensor_f32(&j->priv.t[i], priv);
}

static void release(struct pack_job *j, unsigned int i)
{
	ckpt_tensor_release(&j->pub.t[i]);
	ckpt_tensor_release(&j->priv.t[i]);
}

static int select_passes(struct pack_job *j, struct sel_plan *p)
{
	unsigned int l, k;
	int ret;

	while (sel_pass_needed(p)) {
		for (l = 0; l < j->cfg.n_layers; l++) {
			for (k = 0; k < CKPT_LINEAR_PER_LAYER; k++) {
				unsigned int i = linear_index(l, k);
				const float *a, *b;

				ret = views(j, i, &a, &b);
				ret = ret ?: sel_scan(p, a, b,
						      ckpt_numel(&j->pub.t[i]));
				release(j, i);
				if (ret == -ERANGE)
					olog_err(j->ctx, "%s: private - public overflows float",
						 j->pub.t[i].name);
				if (ret)
					return ret == -ERANGE ? -EDOM : ret;
				pack_step(j);
			}
		}
		sel_end_pass(p);
	}
	return 0;
}

/* Walk 1: decide every entry in model order; count what is kept. */
static uint64_t decide(struct pack_job *j, struct sel_plan *p, unsigned int i,
		       const float *pub, const float *priv, uint8_t *mask)
{
	const struct ckpt_tensor *t = &j->pub.t[i];
	uint64_t k, n = ckpt_numel(t), nnz = 0;

	sel_check_tensor(&j->rows[i].sel, t->name, t->cols);
	sel_check_tensor(&j->total_sel, t->name, t->cols);
	for (k = 0; k < n; k++) {
		float d = priv[k] - pub[k];
		int take = sel_take(p, d);

		sel_check_add(&j->rows[i].sel, d, take);
		sel_check_add(&j->total_sel, d, take);
		if (take) {
			mask[k / 8] |= (uint8_t)(1u << (k % 8));
			nnz++;
		}
	}
	return nnz;
}

static int alloc_buf(struct ortho_buf *b, uint32_t rows, uint32_t cols,
		     uint64_t nnz)
{
	uint64_t nval = b->src.encoding == OSP_DENSE16 ?
				(uint64_t)rows * cols : nnz;

	b->val_bytes = nval * sizeof(uint16_t);
	b->val = secmem_alloc(b->val_bytes ? b->val_bytes : 1);
	if (!b->val)
		return -ENOMEM;
	if (b->src.encoding == OSP_DENSE16)
		return 0;
	b->rowptr = calloc((size_t)rows + 1, sizeof(uint32_t));
	b->col = malloc(nnz ? nnz * sizeof(uint32_t) : 1);
	return b->rowptr && b->col ? 0 : -ENOMEM;
}

/* One Ortho value: computed, checked, stored. */
static int put_value(struct pack_job *j, unsigned int i, uint64_t k,
		     float priv, float deq, uint16_t *o)
{
	const struct ckpt_tensor *t = &j->pub.t[i];

	if (quant_ortho(priv, deq, o)) {
		olog_err(j->ctx, "%s: Ortho value at row %llu col %llu overflows FP16 (%.9g)",
			 t->name, (unsigned long long)(k / t->cols),
			 (unsigned long long)(k % t->cols),
			 (double)priv - deq);
		return -EDOM;
	}
	if (!quant_ortho_ok(priv, deq, *o)) {
		olog_err(j->ctx, "%s: Ortho check failed at row %llu col %llu: deq(B) + O does not give W_private within FP16 rounding",
			 t->name, (unsigned long long)(k / t->cols),
			 (unsigned long long)(k % t->cols));
		return -EDOM;
	}
	return 0;
}

/* Walk 2: the values of the kept entries, in the chosen encoding. */
static int fill(struct pack_job *j, unsigned int i, const float *priv,
		const uint8_t *mask, struct ortho_buf *b)
{
	const struct ckpt_tensor *t = &j->pub.t[i];
	uint32_t g = j->o.group_size, ng = orb_ngroups(t->cols, g), r, c;
	int dense = b->src.encoding == OSP_DENSE16;
	uint64_t k = 0, nz = 0;
	int ret;

	for (r = 0; r < t->rows; r++) {
		for (c = 0; c < t->cols; c++, k++) {
			float deq;
			uint16_t o;

			if (!(mask[k / 8] & (1u << (k % 8))))
				continue;
			deq = quant_deq(j->q[i][k],
					j->scales[i][(uint64_t)r * ng + c / g]);
			ret = put_value(j, i, k, priv[k], deq, &o);
			if (ret)
				return ret;
			if (dense) {
				b->val[k] = o;
			} else {
				b->col[nz] = c;
				b->val[nz++] = o;
			}
		}
		if (!dense)
			b->rowptr[r + 1] = (uint32_t)nz;
	}
	return 0;
}

static int build_tensor(struct pack_job *j, struct sel_plan *p,
			unsigned int i, struct ortho_buf *b)
{
	const struct ckpt_tensor *t = &j->pub.t[i];
	struct pack_row *row = &j->rows[i];
	const float *pub, *priv;
	uint8_t *mask;
	uint64_t nnz;
	int ret;

	sel_check_init(&row->sel);
	ret = views(j, i, &pub, &priv);
	mask = calloc((ckpt_numel(t) + 7) / 8, 1);
	if (ret || !mask) {
		ret = ret ?: -ENOMEM;
		goto out;
	}
	nnz = decide(j, p, i, pub, priv, mask);
	row->entries = nnz;
	if (!nnz)
		goto out;
	b->src = (struct osp_tensor_src){
		.name = t->name, .rows = t->rows, .cols = t->cols,
		.encoding = osp_best_encoding(t->rows, t->cols, nnz),
	};
	b->src.nnz = b->src.encoding == OSP_DENSE16 ? ckpt_numel(t) : nnz;
	ret = alloc_buf(b, t->rows, t->cols, nnz);
	ret = ret ?: fill(j, i, priv, mask, b);
	b->src.rowptr = b->rowptr;
	b->src.col = b->col;
	b->src.val = b->val;
	row->encoding = b->src.encoding;
	row->bytes = osp_encoded_size(b->src.encoding, t->rows, t->cols, nnz);
out:
	free(mask);
	release(j, i);
	return ret;
}

static int add_shard_name(struct pack_job *j, const char *name)
{
	char **v = realloc(j->shards, (j->nshards + 1) * sizeof(*v));

	if (!v)
		return -ENOMEM;
	j->shards = v;
	v[j->nshards] = strdup(name);
	if (!v[j->nshards])
		return -ENOMEM;
	j->nshards++;
	return 0;
}

static int write_shard(struct pack_job *j, uint32_t layer,
		       const struct osp_tensor_src *t, unsigned int n)
{
	struct osh_write_params wp = { .label = j->o.label, .layer = layer };
	struct keyfile_entry e = { .layer = layer };
	uint8_t *key = secmem_alloc(OSH_KEY_SIZE);
	char hex[33], name[40], *dir = NULL, *path = NULL;
	int ret = -ENOMEM;

	if (!key)
		return -ENOMEM;
	if (RAND_bytes(wp.shard_id, OSH_ID_SIZE) != 1 ||
	    RAND_bytes(key, OSH_KEY_SIZE) != 1) {
		olog_err(j->ctx, "pack: no random bytes from libcrypto");
		ret = -EIO;
		goto out;
	}
	memcpy(wp.model_id, j->model_id, sizeof(wp.model_id));
	wp.key = key;
	osh_id_to_hex(wp.shard_id, hex);
	snprintf(name, sizeof(name), "%s.osh", hex);
	dir = pack_path(j->tmpdir, "ortho");
	path = dir ? pack_path(dir, name) : NULL;
	if (!path)
		goto out;
	ret = osh_write(j->ctx, path, &wp, t, n);
	if (ret)
		goto out;
	memcpy(e.id, wp.shard_id, OSH_ID_SIZE);
	memcpy(e.key, key, OSH_KEY_SIZE);
	snprintf(e.label, sizeof(e.label), "%s", j->o.label);
	ret = keyfile_add(&j->kf, &e);
	ret = ret ?: add_shard_name(j, name);
out:
	explicit_bzero(&e, sizeof(e));
	secmem_free(key, OSH_KEY_SIZE);
	free(path);
	free(dir);
	return ret;
}

static int pack_layer(struct pack_job *j, struct sel_plan *p, uint32_t l)
{
	struct ortho_buf b[CKPT_LINEAR_PER_LAYER] = { 0 };
	struct osp_tensor_src src[CKPT_LINEAR_PER_LAYER];
	unsigned int k, n = 0;
	int ret = 0;

	for (k = 0; k < CKPT_LINEAR_PER_LAYER && !ret; k++) {
		ret = build_tensor(j, p, linear_index(l, k), &b[k]);
		if (!ret && b[k].val)
			src[n++] = b[k].src;
		pack_step(j);
	}
	/* A layer the fine-tune left alone gets no shard. */
	if (!ret && n)
		ret = write_shard(j, l, src, n);
	for (k = 0; k < CKPT_LINEAR_PER_LAYER; k++)
		ortho_buf_free(&b[k]);
	return ret;
}

int pack_ortho(struct pack_job *j)
{
	struct sel_plan p;
	uint32_t l;
	int ret;

	ret = sel_init(&p, j->o.keep);
	if (ret)
		return ret;
	sel_check_init(&j->total_sel);
	ret = select_passes(j, &p);
	for (l = 0; !ret && l < j->cfg.n_layers; l++)
		ret = pack_layer(j, &p, l);
	sel_free(&p);
	if (ret)
		return ret;
	return sel_check_done(j->ctx, &j->total_sel, j->o.keep);
}
