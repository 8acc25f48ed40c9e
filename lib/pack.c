// SPDX-License-Identifier: MIT
/*
 * ortho_pack(): a public checkpoint (and optionally a private fine-tune of
 * it) into base.orb plus one encrypted Ortho shard per layer.
 *
 *   1. options, the key file and out_dir, before any work (pack_dir.c);
 *   2. both checkpoints read and compared: same architecture, no NaN or
 *      Inf, and bit-identical outside the linear matrices, because those
 *      tensors go into Base as they are and would carry private data;
 *   3. Base: INT8 of the public linear matrices, each checked, written
 *      under a temporary name; in an existing out_dir its model id must be
 *      the one already there;
 *   4. Ortho (pack_ortho.c): selection over the whole model, values and
 *      their checks, shards;
 *   5. the key file, then the outputs renamed into place.
 *
 * Any failure stops the pack with the tensor and the check named, and
 * removes whatever it wrote.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "log.h"
#include "pack.h"
#include "shard.h"

char *pack_path(const char *dir, const char *name)
{
	char *p;

	return asprintf(&p, "%s/%s", dir, name) < 0 ? NULL : p;
}

void pack_step(struct pack_job *j)
{
	j->done++;
	if (j->o.progress)
		j->o.progress(j->o.report_user, j->done, j->steps);
}

static int label_ok(const char *label)
{
	size_t i, n = strnlen(label, OSH_LABEL_MAX);

	if (!n || n >= OSH_LABEL_MAX)
		return 0;
	for (i = 0; i < n; i++)
		if (label[i] <= ' ' || label[i] > '~')
			return 0;
	return 1;
}

static int bad_opt(struct pack_job *j, const char *why)
{
	olog_err(j->ctx, "pack: %s", why);
	return -EINVAL;
}

static int pack_opts(struct pack_job *j, const struct ortho_pack_opts *opts)
{
	struct ortho_pack_opts *o = &j->o;
	size_t n;

	if (!opts || opts->sz < offsetof(struct ortho_pack_opts, out_dir) +
					sizeof(opts->out_dir))
		return bad_opt(j, "options missing or too short (set .sz)");
	n = opts->sz < sizeof(*o) ? opts->sz : sizeof(*o);
	memcpy(o, opts, n);
	if (!o->public_path || !*o->public_path || !o->out_dir ||
	    !*o->out_dir)
		return bad_opt(j, "a public checkpoint and an output directory are needed");
	j->has_priv = o->private_path && *o->private_path;
	if (j->has_priv && (!o->label ||
			    ((!o->key_file || !*o->key_file) &&
			     !pack_to_authority(j))))
		return bad_opt(j, "a private model needs a label, and a key "
			       "file or a context with a key authority");
	if (!j->has_priv && (o->label || o->key_file))
		return bad_opt(j, "a label and a key file go with a private model");
	if (j->has_priv && !label_ok(o->label))
		return bad_opt(j, "the label must be 1 to 63 printable characters without blanks");
	if (o->keep == 0.0)
		o->keep = 1.0;
	if (!(o->keep > 0.0 && o->keep <= 1.0))
		return bad_opt(j, "keep must be in (0, 1]");
	if (!o->group_size)
		o->group_size = QUANT_GROUP_DEFAULT;
	if (o->group_size > ORB_MAX_DIM)
		return bad_opt(j, "group size out of range");
	if (o->flags & ~(unsigned int)ORTHO_PACK_FORCE)
		return bad_opt(j, "unknown flags");
	return 0;
}

/* NaN or Inf anywhere is refused, with the tensor and the place named. */
static int check_finite(struct ortho_ctx *ctx, struct ckpt *c)
{
	unsigned int i;
	uint64_t k;

	for (i = 0; i < c->n; i++) {
		struct ckpt_tensor *t = &c->t[i];
		const float *w;
		int ret = ckpt_tensor_f32(t, &w);

		if (ret)
			return ret;
		for (k = 0; k < ckpt_numel(t); k++) {
			if (isfinite(w[k]))
				continue;
			olog_err(ctx, "%s: tensor %s: %s at row %llu col %llu",
				 c->path, t->name, isnan(w[k]) ? "NaN" : "Inf",
				 (unsigned long long)(k / t->cols),
				 (unsigned long long)(k % t->cols));
			return -EINVAL;
		}
		if (t->is_linear)
			ckpt_tensor_release(t);
	}
	return 0;
}

static int config_differs(struct pack_job *j)
{
	const struct ortho_model_config *a = &j->pub.cfg, *b = &j->priv.cfg;
	const char *field = NULL;
	uint32_t va = 0, vb = 0;

#define CMP(f)                                                  \
	do {                                                    \
		if (!field && a->f != b->f) {                   \
			field = #f;                             \
			va = a->f;                              \
			vb = b->f;                              \
		}                                               \
	} while (0)
	CMP(n_layers);
	CMP(shared_classifier);
	CMP(dim);
	CMP(hidden_dim);
	CMP(vocab_size);
	CMP(n_heads);
	CMP(n_kv_heads);
	CMP(seq_len);
#undef CMP
	if (!field)
		return 0;
	olog_err(j->ctx, "%s: %s is %u, the public model's is %u: not a fine-tune of %s",
		 j->priv.path, field, vb, va, j->pub.path);
	return -EINVAL;
}

/* Same shapes, and bit-identical outside the linear matrices. */
static int compare_models(struct pack_job *j)
{
	unsigned int i, bad = 0;

	/* A layer count apart is named as such, not as a missing tensor. */
	if (j->pub.cfg.n_layers != j->priv.cfg.n_layers)
		return config_differs(j);
	for (i = 0; i < j->pub.n; i++) {
		const struct ckpt_tensor *a = &j->pub.t[i], *b;
		int k = ckpt_find(&j->priv, a->name);

		if (k < 0) {
			olog_err(j->ctx, "%s: tensor %s missing", j->priv.path,
				 a->name);
			return -EINVAL;
		}
		b = &j->priv.t[k];
		if (a->rows == b->rows && a->cols == b->cols)
			continue;
		olog_err(j->ctx, "%s: tensor %s: shape %ux%u, the public model's is %ux%u",
			 j->priv.path, a->name, b->rows, b->cols, a->rows,
			 a->cols);
		return -EINVAL;
	}
	/* Same names and shapes; from here on the two lists line up. */
	if (config_differs(j))
		return -EINVAL;
	for (i = 0; i < j->pub.n; i++) {
		struct ckpt_tensor *a = &j->pub.t[i], *b = &j->priv.t[i];
		const float *wa, *wb;
		int ret;

		if (a->is_linear)
			continue;
		ret = ckpt_tensor_f32(a, &wa);
		ret = ret ?: ckpt_tensor_f32(b, &wb);
		if (ret)
			return ret;
		if (memcmp(wa, wb, ckpt_numel(a) * sizeof(float))) {
			olog_err(j->ctx, "%s: tensor %s differs from the public model's: only the linear matrices may differ (it would carry private data into Base)",
				 j->priv.path, a->name);
			bad++;
		}
		ckpt_tensor_release(b);
	}
	return bad ? -EINVAL : 0;
}

static int pack_load(struct pack_job *j)
{
	int ret;

	ret = ckpt_open(j->ctx, j->o.public_path, &j->pub);
	if (ret)
		return ret;
	ret = check_finite(j->ctx, &j->pub);
	if (ret || !j->has_priv)
		return ret;
	ret = ckpt_open(j->ctx, j->o.private_path, &j->priv);
	ret = ret ?: check_finite(j->ctx, &j->priv);
	return ret ?: compare_models(j);
}

static int quantize_one(struct pack_job *j, unsigned int i,
			struct orb_tensor_src *s)
{
	struct ckpt_tensor *t = &j->pub.t[i];
	uint32_t g = j->o.group_size;
	uint64_t ns = (uint64_t)t->rows * orb_ngroups(t->cols, g);
	const float *w;
	int ret;

	ret = ckpt_tensor_f32(t, &w);
	if (ret)
		return ret;
	j->q[i] = malloc(ckpt_numel(t));
	j->scales[i] = malloc(ns * sizeof(float));
	if (!j->q[i] || !j->scales[i])
		return -ENOMEM;
	ret = quant_int8(w, t->rows, t->cols, g, j->q[i], j->scales[i]);
	if (ret) {
		olog_err(j->ctx, "%s: cannot quantize", t->name);
		return ret;
	}
	ret = quant_check(j->ctx, t->name, w, t->rows, t->cols, g, j->q[i],
			  j->scales[i], &j->rows[i].base);
	ckpt_tensor_release(t);
	s->kind = ORB_KIND_LINEAR;
	s->dtype = ORTHO_DTYPE_I8;
	s->group_size = g;
	s->data = j->q[i];
	s->scales = j->scales[i];
	return ret;
}

static int pack_base(struct pack_job *j)
{
	struct orb_tensor_src *src;
	unsigned int i;
	char *path;
	int ret = 0;

	src = calloc(j->pub.n, sizeof(*src));
	if (!src)
		return -ENOMEM;
	for (i = 0; i < j->pub.n && !ret; i++) {
		struct ckpt_tensor *t = &j->pub.t[i];
		const float *w;

		src[i].name = t->name;
		src[i].rows = t->rows;
		src[i].cols = t->cols;
		src[i].layer = t->layer;
		if (t->is_linear) {
			ret = quantize_one(j, i, &src[i]);
		} else {
			ret = ckpt_tensor_f32(t, &w);
			src[i].kind = ORB_KIND_OTHER;
			src[i].dtype = ORTHO_DTYPE_F32;
			src[i].data = w;
		}
		pack_step(j);
	}
	path = pack_path(j->tmpdir, "base.orb");
	if (!ret && !path)
		ret = -ENOMEM;
	if (!ret)
		ret = orb_write(j->ctx, path, &j->cfg, src, j->pub.n,
				j->model_id);
	free(path);
	free(src);
	return ret ?: pack_dir_check_base(j);
}

static void report_rows(struct pack_job *j, struct ortho_pack_summary *s)
{
	unsigned int i;

	for (i = 0; i < j->pub.n; i++) {
		const struct ckpt_tensor *t = &j->pub.t[i];
		const struct pack_row *pr = &j->rows[i];
		struct ortho_pack_tensor_report r = {
			.sz = sizeof(r),
			.name = t->name,
			.rows = t->rows,
			.cols = t->cols,
			.is_linear = t->is_linear,
			.base_max_err = pr->base.max_err,
			.base_max_err_steps = pr->base.max_err_steps,
			.ortho_entries = pr->entries,
			.density = (double)pr->entries / (double)ckpt_numel(t),
			.encoding = pr->encoding ?
					    osp_encoding_name(pr->encoding) :
					    "-",
			.energy_kept = !j->has_priv ? 0.0 :
				       sel_check_share(&pr->sel),
			.ortho_bytes = pr->bytes,
		};

		if (t->is_linear) {
			s->linear_tensors++;
			s->linear_entries += ckpt_numel(t);
		}
		s->ortho_entries += pr->entries;
		s->ortho_bytes += pr->bytes;
		if (pr->base.max_err_steps > s->base_max_err_steps)
			s->base_max_err_steps = pr->base.max_err_steps;
		if (j->o.report)
			j->o.report(j->o.report_user, &r);
	}
}

static void fill_summary(struct pack_job *j, struct ortho_pack_summary *out)
{
	struct ortho_pack_summary s = { .sz = sizeof(s) };
	struct stat st;
	char *path = pack_path(j->o.out_dir, "base.orb");
	size_t n;

	s.tensors = j->pub.n;
	s.shards = j->nshards;
	s.energy_kept = j->has_priv ? sel_check_share(&j->total_sel) : 0.0;
	memcpy(s.model_id, j->model_id, sizeof(s.model_id));
	if (path && !stat(path, &st))
		s.base_bytes = (uint64_t)st.st_size;
	free(path);
	report_rows(j, &s);
	if (!out || out->sz < sizeof(size_t))
		return;
	n = out->sz < sizeof(s) ? out->sz : sizeof(s);
	s.sz = out->sz;
	memcpy(out, &s, n);
}

static int pack_alloc(struct pack_job *j)
{
	unsigned int passes = j->has_priv && j->o.keep < 1.0 ? 2 : 0;
	unsigned int linear = j->pub.cfg.n_layers * CKPT_LINEAR_PER_LAYER;

	j->cfg = j->pub.cfg;
	j->cfg.group_size = j->o.group_size;
	j->q = calloc(j->pub.n, sizeof(*j->q));
	j->scales = calloc(j->pub.n, sizeof(*j->scales));
	j->rows = calloc(j->pub.n, sizeof(*j->rows));
	if (!j->q || !j->scales || !j->rows)
		return -ENOMEM;
	j->steps = j->pub.n + (j->has_priv ? (passes + 1) * linear : 0);
	return 0;
}

static void pack_free(struct pack_job *j)
{
	unsigned int i;

	for (i = 0; j->q && i < j->pub.n; i++) {
		free(j->q[i]);
		free(j->scales[i]);
	}
	for (i = 0; i < j->nshards; i++)
		free(j->shards[i]);
	free(j->shards);
	free(j->q);
	free(j->scales);
	free(j->rows);
	keyfile_free(&j->kf);
	ckpt_close(&j->pub);
	ckpt_close(&j->priv);
}

ORTHO_API int ortho_pack(struct ortho_ctx *ctx,
			 const struct ortho_pack_opts *opts,
			 struct ortho_pack_summary *sum)
{
	struct pack_job j = { .ctx = ctx };
	int ret;

	ret = pack_opts(&j, opts);
	ret = ret ?: pack_dir_prepare(&j);
	ret = ret ?: pack_load(&j);
	ret = ret ?: pack_alloc(&j);
	ret = ret ?: pack_base(&j);
	if (!ret && j.has_priv)
		ret = pack_ortho(&j);
	ret = ret ?: pack_dir_install(&j);
	if (!ret) {
		fill_summary(&j, sum);
		olog_info(ctx, "pack: %s written (%u shards)", j.o.out_dir,
			  j.nshards);
	}
	pack_dir_cleanup(&j);
	pack_free(&j);
	return ret;
}
