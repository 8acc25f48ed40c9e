// SPDX-License-Identifier: MIT
/*
 * Opening and closing a packed model: base.orb mapped and checked, one
 * tensor object per table entry (linear ones handed to the backend), then
 * the shards (lib/shardset.c), with their keys from a key file or from the
 * context's key authority (lib/model_authority.c). And the tensors:
 * description, FP32 copies and rows, and the fused linear op.
 * ortho_linear() pins the shard units its tensor needs while it computes,
 * so the Ortho views it uses stay resident until it returns. Locking
 * rules: lib/model.h.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "ctx.h"
#include "fp16.h"
#include "keyfile.h"
#include "log.h"
#include "model.h"

static void opts_copy(struct ortho_model_opts *o,
		      const struct ortho_model_opts *src)
{
	size_t n;

	memset(o, 0, sizeof(*o));
	if (!src)
		return;
	n = src->sz < sizeof(*o) ? src->sz : sizeof(*o);
	memcpy(o, src, n);
}

static int tensor_setup(struct ortho_model *m, unsigned int i)
{
	const struct orb_tensor *e = &m->orb.table[i];
	struct ortho_tensor *t = &m->tensors[i];
	struct ortho_ctx *ctx = m->ctx;
	int ret;

	t->model = m;
	t->index = i;
	t->name = e->name;
	t->rows = e->rows;
	t->cols = e->cols;
	t->dtype = e->dtype;
	t->layer = e->layer;
	t->data = orb_tensor_data(&m->orb, i);
	if (!t->data) {
		olog_err(ctx, "base.orb: tensor %s: data out of range",
			 t->name);
		return -EBADMSG;
	}
	if (e->kind != ORB_KIND_LINEAR) {
		if (e->dtype != ORTHO_DTYPE_F32 &&
		    e->dtype != ORTHO_DTYPE_F16) {
			olog_err(ctx, "base.orb: tensor %s: dtype %u is not "
				 "supported for a non-linear tensor",
				 t->name, e->dtype);
			return -EBADMSG;
		}
		return 0;
	}
	if (e->dtype != ORTHO_DTYPE_I8 || !e->group_size) {
		olog_err(ctx, "base.orb: linear tensor %s: dtype %u group %u "
			 "(want INT8 with a group size)", t->name, e->dtype,
			 e->group_size);
		return -EBADMSG;
	}
	t->is_linear = 1;
	t->group_size = e->group_size;
	t->q8.host.q = t->data;
	t->q8.host.scales = orb_tensor_scales(&m->orb, i);
	t->q8.host.rows = e->rows;
	t->q8.host.cols = e->cols;
	t->q8.host.group = e->group_size;
	if (!t->q8.host.scales) {
		olog_err(ctx, "base.orb: tensor %s: scales out of range",
			 t->name);
		return -EBADMSG;
	}
	ret = ctx->backend->base_upload(ctx, &t->q8);
	if (ret) {
		olog_err(ctx, "tensor %s: %s backend cannot take it: %s",
			 t->name, ctx->backend_name, ortho_strerror(ret));
		return ret;
	}
	t->uploaded = 1;
	return 0;
}

static int build_tensors(struct ortho_model *m)
{
	unsigned int i, n = m->orb.hdr->tensor_count;
	int ret;

	m->tensors = calloc(n ? n : 1, sizeof(*m->tensors));
	if (!m->tensors)
		return -ENOMEM;
	m->ntensors = n;
	for (i = 0; i < n; i++) {
		ret = tensor_setup(m, i);
		if (ret)
			return ret;
	}
	return 0;
}

static void release_tensors(struct ortho_model *m)
{
	unsigned int i;

	if (!m->tensors)
		return;
	for (i = 0; i < m->ntensors; i++)
		if (m->tensors[i].uploaded)
			m->ctx->backend->base_release(m->ctx,
						      &m->tensors[i].q8);
	free(m->tensors);
	m->tensors = NULL;
}

static int lock_init(struct ortho_model *m)
{
	pthread_rwlockattr_t a;
	int ret;

	/* A steady stream of ops must not starve a drop or a revocation. */
	if (pthread_rwlockattr_init(&a))
		return -ENOMEM;
	pthread_rwlockattr_setkind_np(&a,
			PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	ret = pthread_rwlock_init(&m->lock, &a);
	pthread_rwlockattr_destroy(&a);
	return -ret;
}

static int open_base(struct ortho_model *m, const char *dir)
{
	char *path;
	int ret;

	if (asprintf(&path, "%s/base.orb", dir) < 0)
		return -ENOMEM;
	/* orb_open() names the file and what is wrong with it. */
	ret = orb_open(m->ctx, path, !(m->flags & ORTHO_MODEL_NO_VERIFY),
		       &m->orb);
	if (!ret)
		m->orb_opened = 1;
	free(path);
	return ret;
}

static int open_shards(struct ortho_model *m, const char *dir,
		       const struct ortho_model_opts *o)
{
	int ret;

	if (o->key_file) {
		/* keyfile_load() names the file and the line at fault. */
		ret = keyfile_load(m->ctx, o->key_file, &m->keys);
		if (ret)
			return ret;
	}
	ret = model_scan_shards(m, dir);
	if (!ret && !o->key_file && m->ctx->auth)
		ret = model_authority_keys(m, o->label);
	if (ret)
		return ret;
	return model_load_shards(m, o->label, o->key_file);
}

/* Wipe the shards, then let go of the Base. */
static void model_free(struct ortho_model *m)
{
	/* Every byte and key wiped before the authority is told so, once. */
	pthread_mutex_lock(&m->auth_lock);
	m->auth_closing = 1;
	pthread_mutex_unlock(&m->auth_lock);
	model_residency_stop(m);
	keyfile_free(&m->keys);
	model_authority_close(m);
	model_free_shards(m);
	release_tensors(m);
	if (m->orb_opened)
		orb_close(&m->orb);
	pthread_mutex_destroy(&m->auth_lock);
	pthread_rwlock_destroy(&m->lock);
	free(m);
}

ORTHO_API int ortho_model_open(struct ortho_ctx *ctx, const char *dir,
			       const struct ortho_model_opts *opts,
			       struct ortho_model **out)
{
	struct ortho_model_opts o;
	struct ortho_model *m;
	int ret;

	if (!ctx || !dir || !out)
		return -EINVAL;
	*out = NULL;
	if (opts && opts->sz < offsetof(struct ortho_model_opts, key_file))
		return -EINVAL;
	opts_copy(&o, opts);

	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->ctx = ctx;
	m->flags = o.flags;
	ret = lock_init(m);
	if (ret) {
		free(m);
		return ret;
	}
	pthread_mutex_init(&m->auth_lock, NULL);
	ret = open_base(m, dir);
	if (ret)
		goto err;
	ret = build_tensors(m);
	if (ret)
		goto err;
	/* A revocation waits until the model is listed (lib/ctx.h). */
	pthread_rwlock_rdlock(&ctx->open_lock);
	if (!(m->flags & ORTHO_MODEL_NO_ORTHO))
		ret = open_shards(m, dir, &o);
	if (!ret)
		ret = ctx_model_add(ctx, m);
	if (ret)
		model_free(m);
	pthread_rwlock_unlock(&ctx->open_lock);
	if (ret)
		return ret;
	*out = m;
	return 0;
err:
	model_free(m);
	return ret;
}

ORTHO_API void ortho_model_close(struct ortho_model *m)
{
	struct ortho_ctx *ctx;

	if (!m)
		return;
	ctx = m->ctx;
	ctx_model_remove(ctx, m);
	model_free(m);
}

ORTHO_API int ortho_model_get_config(const struct ortho_model *m,
				     struct ortho_model_config *cfg)
{
	if (!m || !cfg)
		return -EINVAL;
	*cfg = m->orb.cfg;
	return 0;
}

ORTHO_API int ortho_model_get_id(const struct ortho_model *m, uint8_t id[32])
{
	if (!m || !id)
		return -EINVAL;
	memcpy(id, m->orb.hdr->model_id, 32);
	return 0;
}

struct ortho_tensor *model_tensor_by_name(const struct ortho_model *m,
					  const char *name)
{
	unsigned int i;

	/* orb_open() made the names unique; models have few tensors. */
	for (i = 0; i < m->ntensors; i++)
		if (!strcmp(m->tensors[i].name, name))
			return &m->tensors[i];
	return NULL;
}

ORTHO_API int ortho_model_find_tensor(const struct ortho_model *m,
				      const char *name,
				      struct ortho_tensor **out)
{
	struct ortho_tensor *t;

	if (!m || !name || !out)
		return -EINVAL;
	t = model_tensor_by_name(m, name);
	*out = t;
	return t ? 0 : -ENOENT;
}

ORTHO_API int ortho_tensor_info_get(const struct ortho_tensor *t,
				    struct ortho_tensor_info *info)
{
	struct ortho_tensor_info i = { 0 };
	size_t sz;

	if (!t || !info)
		return -EINVAL;
	sz = info->sz;
	if (sz < sizeof(i))
		return -EINVAL;
	i.sz = sz;
	i.name = t->name;
	i.rows = t->rows;
	i.cols = t->cols;
	i.dtype = t->dtype;
	i.group_size = t->group_size;
	i.layer = t->layer;
	i.is_linear = t->is_linear;
	memcpy(info, &i, sizeof(i));
	return 0;
}

/* deq(q)[r][c] = q[r][c] * scale[r][c / group], as kernels/kernels.h says. */
static void dequant_q8(const struct ok_q8 *q, float *dst)
{
	uint32_t ng = (q->cols + q->group - 1) / q->group;
	uint32_t r, c;

	for (r = 0; r < q->rows; r++) {
		const int8_t *qr = q->q + (size_t)r * q->cols;
		const float *sr = q->scales + (size_t)r * ng;
		float *d = dst + (size_t)r * q->cols;

		for (c = 0; c < q->cols; c++)
			d[c] = (float)qr[c] * sr[c / q->group];
	}
}

ORTHO_API int ortho_tensor_read_f32(const struct ortho_tensor *t, float *dst,
				    size_t n)
{
	size_t i, total;

	if (!t || !dst)
		return -EINVAL;
	total = (size_t)t->rows * t->cols;
	if (n != total)
		return -ERANGE;
	if (t->is_linear) {
		dequant_q8(&t->q8.host, dst);
		return 0;
	}
	switch (t->dtype) {
	case ORTHO_DTYPE_F32:
		memcpy(dst, t->data, total * sizeof(float));
		return 0;
	case ORTHO_DTYPE_F16: {
		const uint16_t *h = t->data;

		for (i = 0; i < total; i++)
			dst[i] = fp16_to_f32(h[i]);
		return 0;
	}
	default:
		return -EINVAL;
	}
}

ORTHO_API const float *ortho_tensor_row_f32(const struct ortho_tensor *t,
					    uint32_t row)
{
	if (!t || t->is_linear || t->dtype != ORTHO_DTYPE_F32 ||
	    row >= t->rows)
		return NULL;
	return (const float *)t->data + (size_t)row * t->cols;
}

ORTHO_API int ortho_linear(struct ortho_model *m, const struct ortho_tensor *t,
			   const float *x, float *y, uint32_t ntok)
{
	const struct backend_ortho *views[MODEL_MAX_VIEWS];
	void *mem[MODEL_MAX_VIEWS];
	struct ortho_ctx *ctx;
	unsigned int nv;
	int ret;

	if (!m || !t || !x || !y || !ntok || t->model != m || !t->is_linear)
		return -EINVAL;
	ctx = m->ctx;
	if (ctx->auth)
		ctx_authority_sync(ctx);
	/* Its shards stay resident, and their views valid, until put. */
	nv = model_views_get(m, t, views, mem);
	ret = ctx->backend->linear(ctx, &t->q8, views, nv, x, y, ntok);
	model_views_put(m, t, mem);
	return ret;
}
