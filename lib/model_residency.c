// SPDX-License-Identifier: MIT
/*
 * A model's shards under the residency manager. At open each usable
 * shard's plaintext directory is read (one chunk) to learn which Base
 * tensors it adds to, and the shard becomes one unit of residency, or one
 * unit per tensor when it is larger than half the Ortho budget (so that a
 * budget smaller than one layer's shard still runs, a tensor at a time).
 * A per-tensor unit's slot holds a plaintext of its own: a directory of
 * one entry and the tensor's bytes, checked by the same parser.
 *
 * Without a budget every unit is loaded at open, as before; with one, the
 * first layers are prefetched and the rest come on demand. ortho_linear()
 * pins its tensor's units around the op (model_views_get()/_put()).
 *
 * The budget is the context's: every model's manager draws on the
 * context's account (ctx->res_acct), so the shards of all the models open
 * in it together stay within ortho_budget, and a model short of room may
 * evict another's unpinned shards (its own first). The stream and its
 * decrypt workers are the context's too; each model keeps a prefetch
 * thread of its own.
 *
 * A unit's slot is the source of its tensors' uploads: it is offered to
 * the backend (backend_host_register(): the CUDA backend pins it, so the
 * copies are DMA straight from it) once its plaintext is in, and taken
 * back before the manager wipes it. Each upload returns only after its
 * copy is done, so the slot is never wiped or reused under a copy.
 *
 * A shard is used whole or not at all: when one unit of a per-tensor shard
 * fails, the shard is FAILED and its other units are dropped by the next
 * op that meets them. Locking: lib/model.h and lib/residency.h.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "ctx.h"
#include "log.h"
#include "model.h"
#include "residency.h"
#include "secmem.h"
#include "shard.h"
#include "stream.h"

/* A per-tensor unit: osp_header, one osp_tensor, padding, the bytes. */
#define UNIT_HDR 128u

_Static_assert(UNIT_HDR >= sizeof(struct osp_header) +
	       sizeof(struct osp_tensor) && UNIT_HDR % 64 == 0, "UNIT_HDR");

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int shard_usable(const struct model_shard *s)
{
	return s->key && (s->state == ORTHO_SHARD_ABSENT ||
			  s->state == ORTHO_SHARD_LOADING ||
			  s->state == ORTHO_SHARD_RESIDENT ||
			  s->state == ORTHO_SHARD_EVICTING);
}

/* Bytes a unit adds to its shard's resident bytes. */
static uint64_t unit_bytes(const struct model_unit *u)
{
	return u->entry < 0 ? u->size : u->size - UNIT_HDR;
}

/* ---- the shard's state as applications see it (model->lock) ---- */

static void shard_fail(struct ortho_model *m, struct model_shard *s,
		       int err, uint32_t bad_chunk)
{
	pthread_rwlock_wrlock(&m->lock);
	if (shard_usable(s)) {
		s->state = ORTHO_SHARD_FAILED;
		s->error = err;
		s->bad_chunk = err == -EBADMSG ? bad_chunk : UINT32_MAX;
	}
	pthread_rwlock_unlock(&m->lock);
}

/* Return: 0, or the error that keeps @s from loading. */
static int shard_loading(struct ortho_model *m, struct model_shard *s)
{
	int ret = 0;

	pthread_rwlock_wrlock(&m->lock);
	if (!shard_usable(s))
		ret = s->error ? s->error : -ECANCELED;
	else if (s->state == ORTHO_SHARD_ABSENT)
		s->state = ORTHO_SHARD_LOADING;
	pthread_rwlock_unlock(&m->lock);
	return ret;
}

static int shard_resident(struct ortho_model *m, struct model_shard *s,
			  const struct model_unit *u, void *mem)
{
	int ret = 0;

	pthread_rwlock_wrlock(&m->lock);
	if (!shard_usable(s)) {
		ret = s->error ? s->error : -ECANCELED;
	} else {
		if (!s->bytes)
			s->since_ns = now_ns();
		s->state = s->evicting ? ORTHO_SHARD_EVICTING :
					 ORTHO_SHARD_RESIDENT;
		s->bytes += unit_bytes(u);
		if (u->entry < 0) {
			s->pt = mem;
			s->pt_size = s->plaintext_len;
		}
	}
	pthread_rwlock_unlock(&m->lock);
	model_authority_sync(m, s);
	return ret;
}

/* A resident unit is being evicted: the shard is EVICTING until wiped. */
static void shard_evicting(struct ortho_model *m, struct model_shard *s,
			   const struct model_unit *u)
{
	pthread_rwlock_wrlock(&m->lock);
	s->evicting++;
	if (u->entry < 0) {
		s->pt = NULL;
		s->pt_size = 0;
	}
	if (shard_usable(s))
		s->state = ORTHO_SHARD_EVICTING;
	pthread_rwlock_unlock(&m->lock);
}

/*
 * A unit left (@evicted: wiped after shard_evicting(); else cancelled
 * before it was resident): settle the shard's state.
 */
static void shard_settle(struct ortho_model *m, struct model_shard *s,
			 const struct model_unit *u, int evicted)
{
	pthread_rwlock_wrlock(&m->lock);
	if (evicted) {
		s->evicting--;
		s->bytes -= unit_bytes(u);
	}
	if (shard_usable(s)) {
		s->state = s->evicting ? ORTHO_SHARD_EVICTING :
			   s->bytes ? ORTHO_SHARD_RESIDENT :
				      ORTHO_SHARD_ABSENT;
		if (!s->bytes)
			s->since_ns = 0;
	}
	pthread_rwlock_unlock(&m->lock);
	model_authority_sync(m, s);
}

/* ---- opening a shard's file ---- */

static void hex8(const uint8_t *id, char out[9])
{
	snprintf(out, 9, "%02x%02x%02x%02x", id[0], id[1], id[2], id[3]);
}

/* Open @s's file and judge it again: it may have changed since the scan. */
static int shard_open(struct ortho_model *m, struct model_shard *s,
		      struct osh_file *f)
{
	struct ortho_ctx *ctx = m->ctx;
	char a[9], b[9];
	int ret;

	ret = osh_open(ctx, s->path, f);
	if (ret) {
		olog_err(ctx, "shard %s: %s: %s; not used", s->id_hex, s->path,
			 ortho_strerror(ret));
		return ret;
	}
	if (memcmp(f->hdr.model_id, m->orb.hdr->model_id, 32) ||
	    memcmp(f->hdr.shard_id, s->id, OSH_ID_SIZE) ||
	    f->hdr.plaintext_len != s->plaintext_len ||
	    f->hdr.tensor_count != s->tensor_count) {
		hex8(f->hdr.model_id, a);
		hex8(m->orb.hdr->model_id, b);
		olog_err(ctx, "shard %s: %s changed since it was found "
			 "(model %s, Base %s); not used", s->id_hex, s->path,
			 a, b);
		ret = -EXDEV;
		goto err;
	}
	ret = osh_check_key(f, s->key->key);
	if (ret) {
		olog_err(ctx, "shard %s (%s): the key for it does not open it "
			 "(wrong key); not used", s->id_hex, s->file);
		goto err;
	}
	return 0;
err:
	osh_close(f);
	return ret;
}

/* Plaintext bytes [off, off + len) of @s into @dst, through the stream. */
static int shard_read(struct ortho_model *m, struct model_shard *s,
		      const struct osh_file *f, uint64_t off, uint64_t len,
		      void *dst, int urgent, const atomic_int *cancel,
		      uint32_t *bad)
{
	struct stream_req r = {
		.f = f, .key = s->key->key, .off = off, .len = len,
		.dst = dst, .flags = urgent ? STREAM_URGENT : 0,
		.cancel = cancel,
	};
	int ret = stream_read(m->stream, &r);

	*bad = r.bad_chunk;
	if (ret == -EBADMSG)
		olog_err(m->ctx, "shard %s: %s: not used (chunk %u failed "
			 "authentication)", s->id_hex, s->path, r.bad_chunk);
	else if (ret && ret != -ECANCELED)
		olog_err(m->ctx, "shard %s: %s: %s; not used", s->id_hex,
			 s->path, ortho_strerror(ret));
	return ret;
}

/* ---- the directory, read at open ---- */

/* Which Base tensor entry @i of @s adds to, checked as a view will be. */
static int dir_entry_check(struct ortho_model *m, struct model_shard *s,
			   unsigned int i, unsigned char *seen, uint64_t start)
{
	struct shard_dir_entry *d = &s->dir[i];
	const struct osp_tensor *e = &d->e;
	uint64_t size = osp_encoded_size(e->encoding, e->rows, e->cols,
					 e->nnz);
	struct ortho_tensor *t;

	if (!memchr(e->name, 0, sizeof(e->name)) || !e->name[0] || !size ||
	    e->offset % 64 || e->offset < start ||
	    e->offset > s->plaintext_len ||
	    size > s->plaintext_len - e->offset) {
		olog_err(m->ctx, "shard %s: plaintext directory entry %u is "
			 "out of range; not used", s->id_hex, i);
		return -EBADMSG;
	}
	t = model_tensor_by_name(m, e->name);
	if (!t || !t->is_linear) {
		olog_err(m->ctx, "shard %s: tensor %s is %s of the Base; "
			 "not used", s->id_hex, e->name,
			 t ? "not a linear tensor" : "not a tensor");
		return -EINVAL;
	}
	if (t->rows != e->rows || t->cols != e->cols) {
		olog_err(m->ctx, "shard %s: tensor %s is %ux%u, the Base has "
			 "%ux%u; not used", s->id_hex, e->name, e->rows,
			 e->cols, t->rows, t->cols);
		return -EINVAL;
	}
	if (seen[t->index]) {
		olog_err(m->ctx, "shard %s: tensor %s appears twice; not used",
			 s->id_hex, e->name);
		return -EINVAL;
	}
	seen[t->index] = 1;
	d->base = t;
	return 0;
}

static int dir_parse(struct ortho_model *m, struct model_shard *s,
		     const uint8_t *p, uint64_t len)
{
	struct osp_header h;
	unsigned char *seen;
	unsigned int i;
	int ret = 0;

	memcpy(&h, p, sizeof(h));
	if (memcmp(h.magic, OSP_MAGIC, sizeof(h.magic)) || h.reserved ||
	    h.tensor_count != s->tensor_count) {
		olog_err(m->ctx, "shard %s: plaintext directory: bad magic or "
			 "%u tensors where the header says %u; not used",
			 s->id_hex, h.tensor_count, s->tensor_count);
		return -EBADMSG;
	}
	s->dir = calloc(s->tensor_count, sizeof(*s->dir));
	seen = calloc(m->ntensors ? m->ntensors : 1, 1);
	if (!s->dir || !seen) {
		free(seen);
		return -ENOMEM;
	}
	for (i = 0; !ret && i < s->tensor_count; i++) {
		memcpy(&s->dir[i].e, p + sizeof(h) + (size_t)i *
		       sizeof(struct osp_tensor), sizeof(struct osp_tensor));
		ret = dir_entry_check(m, s, i, seen, len);
		len = s->dir[i].e.offset +
		      osp_encoded_size(s->dir[i].e.encoding, s->dir[i].e.rows,
				       s->dir[i].e.cols, s->dir[i].e.nnz);
	}
	free(seen);
	return ret;
}

/* Read and check @s's directory; a shard that fails it is FAILED. */
static int dir_read(struct ortho_model *m, struct model_shard *s)
{
	uint64_t len = sizeof(struct osp_header) +
		       (uint64_t)s->tensor_count * sizeof(struct osp_tensor);
	uint32_t bad = UINT32_MAX;
	struct osh_file f;
	void *buf = NULL;
	int ret;

	ret = shard_open(m, s, &f);
	if (ret)
		goto out;
	if (len > s->plaintext_len) {
		olog_err(m->ctx, "shard %s: %u tensors do not fit its "
			 "plaintext; not used", s->id_hex, s->tensor_count);
		ret = -EBADMSG;
	} else if (!(buf = secmem_alloc(len))) {
		ret = -ENOMEM;
	} else {
		ret = shard_read(m, s, &f, 0, len, buf, 1, NULL, &bad);
	}
	if (!ret)
		ret = dir_parse(m, s, buf, len);
	secmem_free(buf, len);
	osh_close(&f);
out:
	if (ret) {
		free(s->dir);
		s->dir = NULL;
		shard_fail(m, s, ret, bad);
	}
	return ret;
}

/* ---- units: load and unload ---- */

static void views_free(struct ortho_model *m, struct model_unit *u)
{
	unsigned int i;

	for (i = 0; i < u->nviews; i++)
		if (u->views[i].uploaded)
			m->ctx->backend->ortho_release(m->ctx,
						       &u->views[i].o);
	free(u->views);
	u->views = NULL;
	u->nviews = 0;
}

static int view_setup(struct ortho_model *m, struct model_shard *s,
		      struct model_unit *u, const struct osp_view_tensor *vt,
		      const struct shard_dir_entry *d)
{
	struct shard_view *v = &u->views[u->nviews];
	struct ortho_ctx *ctx = m->ctx;
	int ret;

	/* The plaintext is authenticated: it can only differ if corrupt. */
	if (strcmp(vt->name, d->e.name) || vt->rows != d->e.rows ||
	    vt->cols != d->e.cols) {
		olog_err(ctx, "shard %s: tensor %s differs from the directory "
			 "read at open; not used", s->id_hex, vt->name);
		return -EBADMSG;
	}
	v->base = d->base;
	v->o.host.encoding = vt->encoding;
	v->o.host.rows = vt->rows;
	v->o.host.cols = vt->cols;
	v->o.host.rowptr = vt->rowptr;
	v->o.host.col = vt->col;
	v->o.host.val = vt->val;
	u->nviews++;
	ret = ctx->backend->ortho_upload(ctx, &v->o);
	if (ret) {
		olog_err(ctx, "shard %s: tensor %s: %s backend cannot take "
			 "it: %s", s->id_hex, vt->name, ctx->backend_name,
			 ortho_strerror(ret));
		return ret;
	}
	v->uploaded = 1;
	return 0;
}

/* Parse a unit's plaintext and build its views. */
static int views_build(struct ortho_model *m, struct model_shard *s,
		       struct model_unit *u, const void *mem)
{
	unsigned int i, n = u->entry < 0 ? s->tensor_count : 1;
	struct osp_view_tensor *vt;
	int got, ret = -ENOMEM;

	vt = calloc(n, sizeof(*vt));
	u->views = calloc(n, sizeof(*u->views));
	if (!vt || !u->views)
		goto out;
	got = osp_parse(m->ctx, mem, u->size, vt, n);
	if (got >= 0 && (unsigned int)got != n) {
		olog_err(m->ctx, "shard %s: plaintext holds %d tensors, the "
			 "header says %u", s->id_hex, got, n);
		got = -EBADMSG;
	}
	ret = got < 0 ? got : 0;
	for (i = 0; !ret && i < n; i++)
		ret = view_setup(m, s, u, &vt[i],
				 &s->dir[u->entry < 0 ? i : (unsigned int)u->entry]);
out:
	free(vt);
	return ret;
}

/* Fill a unit's slot: the whole plaintext, or one tensor behind its header. */
static int unit_fill(struct ortho_model *m, struct model_shard *s,
		     struct model_unit *u, uint8_t *mem, int urgent,
		     const atomic_int *cancel, uint32_t *bad)
{
	struct osp_header h = { .tensor_count = 1 };
	struct osp_tensor e;
	struct osh_file f;
	int ret;

	ret = shard_open(m, s, &f);
	if (ret)
		return ret;
	if (u->entry < 0) {
		ret = shard_read(m, s, &f, 0, s->plaintext_len, mem, urgent,
				 cancel, bad);
	} else {
		e = s->dir[u->entry].e;
		memcpy(h.magic, OSP_MAGIC, sizeof(h.magic));
		memcpy(mem, &h, sizeof(h));
		ret = shard_read(m, s, &f, e.offset, u->size - UNIT_HDR,
				 mem + UNIT_HDR, urgent, cancel, bad);
		e.offset = UNIT_HDR;
		memcpy(mem + sizeof(h), &e, sizeof(e));
	}
	osh_close(&f);
	return ret;
}

static int unit_load(void *owner, unsigned int ui, void *mem, uint64_t size,
		     int urgent, const atomic_int *cancel, uint32_t *bad)
{
	struct ortho_model *m = owner;
	struct model_unit *u = &m->units[ui];
	struct model_shard *s = &m->shards[u->shard];
	int ret;

	*bad = UINT32_MAX;
	ret = shard_loading(m, s);
	if (ret)
		return ret;
	ret = unit_fill(m, s, u, mem, urgent, cancel, bad);
	if (!ret) {
		/* The slot is the uploads' copy source: pinned on CUDA. */
		backend_host_register(m->ctx, mem, size);
		ret = views_build(m, s, u, mem);
	}
	if (!ret)
		ret = shard_resident(m, s, u, mem);
	if (!ret)
		return 0;
	views_free(m, u);
	/* The uploads are done (each waits for its copy); wiped next. */
	backend_host_unregister(m->ctx, mem);
	if (ret == -ECANCELED)
		shard_settle(m, s, u, 0);
	else
		shard_fail(m, s, ret, *bad);
	return ret;
}

static void unit_unload(void *owner, unsigned int ui, void *mem)
{
	struct ortho_model *m = owner;
	struct model_unit *u = &m->units[ui];

	shard_evicting(m, &m->shards[u->shard], u);
	views_free(m, u);
	/* Unpinned before the manager wipes the slot and reuses or unmaps it. */
	backend_host_unregister(m->ctx, mem);
}

/* Wiped: its bytes are gone (and reported gone). */
static void unit_evicted(void *owner, unsigned int ui)
{
	struct ortho_model *m = owner;
	struct model_unit *u = &m->units[ui];

	shard_settle(m, &m->shards[u->shard], u, 1);
}

static void unit_name(void *owner, unsigned int ui, char *buf, size_t len)
{
	struct ortho_model *m = owner;
	struct model_unit *u = &m->units[ui];
	struct model_shard *s = &m->shards[u->shard];

	if (u->entry < 0)
		snprintf(buf, len, "shard %s", s->id_hex);
	else
		snprintf(buf, len, "shard %s tensor %s", s->id_hex,
			 s->dir[u->entry].e.name);
}

static const struct res_ops unit_ops = {
	.load = unit_load,
	.unload = unit_unload,
	.evicted = unit_evicted,
	.name = unit_name,
};

/* ---- units: setup ---- */

static int shard_split(const struct ortho_model *m,
		       const struct model_shard *s)
{
	uint64_t b = m->ctx->ortho_budget;

	return b && s->plaintext_len > b / 2 && s->tensor_count > 1;
}

static unsigned int shard_nunits(const struct ortho_model *m,
				 const struct model_shard *s)
{
	if (!shard_usable(s) || !s->dir)
		return 0;
	return shard_split(m, s) ? s->tensor_count : 1;
}

/* Can each Base tensor @s adds to take one more unit? */
static int shard_units_fit(struct ortho_model *m, struct model_shard *s)
{
	unsigned int i;

	for (i = 0; i < s->tensor_count; i++) {
		if (s->dir[i].base->nunits < MODEL_MAX_VIEWS)
			continue;
		olog_err(m->ctx, "shard %s: tensor %s already has %u Ortho "
			 "shards in use; not used", s->id_hex,
			 s->dir[i].base->name, MODEL_MAX_VIEWS);
		shard_fail(m, s, -E2BIG, UINT32_MAX);
		return -E2BIG;
	}
	return 0;
}

static int shard_add_units(struct ortho_model *m, unsigned int si)
{
	struct model_shard *s = &m->shards[si];
	unsigned int k, i, n = shard_nunits(m, s), id;
	struct model_unit *u;
	int ret;

	s->unit0 = m->nunits;
	for (k = 0; k < n; k++) {
		u = &m->units[m->nunits];
		u->shard = si;
		u->entry = n > 1 ? (int)k : -1;
		u->size = u->entry < 0 ? s->plaintext_len :
			  UNIT_HDR + osp_encoded_size(s->dir[k].e.encoding,
						      s->dir[k].e.rows,
						      s->dir[k].e.cols,
						      s->dir[k].e.nnz);
		ret = residency_add(m->res, u->size, &id);
		if (ret)
			return ret;
		m->nunits++;
		s->nunits++;
		for (i = 0; i < s->tensor_count; i++) {
			struct ortho_tensor *t = s->dir[i].base;

			if (u->entry < 0 || (unsigned int)u->entry == i)
				t->units[t->nunits++] = id;
		}
	}
	return 0;
}

static int units_build(struct ortho_model *m)
{
	unsigned int i, n = 0;
	int ret;

	for (i = 0; i < m->nshards; i++)
		n += shard_nunits(m, &m->shards[i]);
	m->units = calloc(n ? n : 1, sizeof(*m->units));
	if (!m->units)
		return -ENOMEM;
	for (i = 0; i < m->nshards; i++) {
		if (!shard_nunits(m, &m->shards[i]) ||
		    shard_units_fit(m, &m->shards[i]))
			continue;
		ret = shard_add_units(m, i);
		if (ret)
			return ret;
	}
	return 0;
}

/* ---- whole shards ---- */

/* Drop every unit of @s for good (to @state). */
static void shard_drop_units(struct ortho_model *m, struct model_shard *s,
			     uint32_t state)
{
	unsigned int k;

	for (k = 0; k < s->nunits; k++)
		residency_drop(m->res, s->unit0 + k, state);
}

int shard_load(struct ortho_model *m, struct model_shard *s)
{
	unsigned int k, id;
	void *mem;
	int ret = 0;

	if (!m->res || !shard_usable(s))
		return -EINVAL;
	for (k = 0; k < s->nunits && !ret; k++) {
		id = s->unit0 + k;
		if (residency_pin(m->res, &id, 1, &mem)) {
			residency_unpin(m->res, &id, 1, &mem);
			continue;
		}
		pthread_rwlock_rdlock(&m->lock);
		ret = s->state == ORTHO_SHARD_FAILED ? s->error : -E2BIG;
		pthread_rwlock_unlock(&m->lock);
	}
	if (ret == -E2BIG)
		return ret;
	if (ret) {
		s->units_dropped = 1;
		shard_drop_units(m, s, ORTHO_SHARD_FAILED);
	}
	return ret;
}

int shard_unload(struct ortho_model *m, struct model_shard *s,
		 uint32_t state)
{
	unsigned int k;
	int usable;

	pthread_rwlock_rdlock(&m->lock);
	usable = shard_usable(s);
	pthread_rwlock_unlock(&m->lock);
	if (!usable || !m->res)
		return -EALREADY;
	if (state == ORTHO_SHARD_ABSENT) {
		for (k = 0; k < s->nunits; k++)
			residency_evict(m->res, s->unit0 + k);
		return 0;
	}
	/* Ops holding a unit finish with it first; then it is wiped. */
	shard_drop_units(m, s, state);
	pthread_rwlock_wrlock(&m->lock);
	s->state = state;
	s->bytes = 0;
	s->since_ns = 0;
	s->pt = NULL;
	s->pt_size = 0;
	if (s->key) {
		/* Dropped for good: the key goes too. */
		secmem_wipe(s->key->key, sizeof(s->key->key));
		s->key = NULL;
	}
	pthread_rwlock_unlock(&m->lock);
	return 0;
}

/* ---- the op's side ---- */

unsigned int model_views_get(struct ortho_model *m,
			     const struct ortho_tensor *t,
			     const struct backend_ortho **views, void **mem)
{
	unsigned int i, k, nv = 0;

	if (!t->nunits || !residency_pin(m->res, t->units, t->nunits, mem))
		return 0;
	for (i = 0; i < t->nunits; i++) {
		struct model_unit *u = &m->units[t->units[i]];

		unsigned int nv0 = nv;

		for (k = 0; mem[i] && k < u->nviews; k++)
			if (u->views[k].base == t)
				views[nv++] = &u->views[k].o;
		if (nv > nv0)
			__atomic_add_fetch(&m->shards[u->shard].uses, 1,
					   __ATOMIC_RELAXED);
	}
	return nv;
}

/* A shard FAILED by one of its units: drop the others, once. */
static void shard_cleanup(struct ortho_model *m, struct model_shard *s)
{
	int todo;

	pthread_rwlock_wrlock(&m->lock);
	todo = s->state == ORTHO_SHARD_FAILED && !s->units_dropped;
	s->units_dropped |= todo;
	pthread_rwlock_unlock(&m->lock);
	if (todo)
		shard_drop_units(m, s, ORTHO_SHARD_FAILED);
}

void model_views_put(struct ortho_model *m, const struct ortho_tensor *t,
		     void **mem)
{
	unsigned int i;

	if (!t->nunits)
		return;
	residency_unpin(m->res, t->units, t->nunits, mem);
	for (i = 0; i < t->nunits; i++)
		shard_cleanup(m, &m->shards[m->units[t->units[i]].shard]);
}

/* ---- open and close ---- */

static int start_strict_err(struct ortho_model *m, struct model_shard *s,
			    int ret)
{
	olog_err(m->ctx, "shard %s: %s (strict mode: the model is not "
		 "opened)", s->id_hex, ortho_strerror(ret));
	return ret;
}

/* The context's stream, and a manager on the context's budget. */
static int streams_new(struct ortho_model *m)
{
	int ret;

	ret = ctx_stream_get(m->ctx, &m->stream);
	if (!ret)
		ret = residency_new_shared(m->ctx, m->ctx->res_acct, &unit_ops,
					   m, &m->res);
	return ret;
}

/* Without a budget everything loads now; with one, the first layers. */
static int units_start(struct ortho_model *m)
{
	int strict = !!(m->flags & ORTHO_MODEL_STRICT);
	unsigned int i;
	int ret;

	if (m->ctx->ortho_budget && !strict)
		return ortho_model_prefetch(m, 0, m->orb.cfg.n_layers);
	for (i = 0; i < m->nshards; i++) {
		struct model_shard *s = &m->shards[i];

		if (!s->nunits || !shard_usable(s))
			continue;
		ret = shard_load(m, s);
		if (ret && strict)
			return start_strict_err(m, s, ret);
	}
	return 0;
}

int model_residency_start(struct ortho_model *m)
{
	int strict = !!(m->flags & ORTHO_MODEL_STRICT);
	unsigned int i, n = 0;
	int ret;

	for (i = 0; i < m->nshards; i++)
		n += shard_usable(&m->shards[i]);
	if (!n)
		return 0;
	ret = streams_new(m);
	for (i = 0; !ret && i < m->nshards; i++) {
		struct model_shard *s = &m->shards[i];

		if (!shard_usable(s))
			continue;
		ret = dir_read(m, s);
		if (ret == -ENOMEM || (ret && strict))
			return strict ? start_strict_err(m, s, ret) : ret;
		ret = 0;
	}
	if (!ret)
		ret = units_build(m);
	if (!ret)
		ret = units_start(m);
	return ret;
}

void model_residency_stop(struct ortho_model *m)
{
	unsigned int i;

	residency_free(m->res);
	m->res = NULL;
	if (m->stream)
		ctx_stream_put(m->ctx);
	m->stream = NULL;
	free(m->units);
	m->units = NULL;
	m->nunits = 0;
	for (i = 0; i < m->nshards; i++) {
		free(m->shards[i].dir);
		m->shards[i].dir = NULL;
	}
}

ORTHO_API int ortho_model_prefetch(struct ortho_model *m, uint32_t layer,
				   uint32_t count)
{
	uint32_t nl, k, l;
	unsigned int *win, i, n = 0;
	int ret;

	if (!m)
		return -EINVAL;
	nl = m->orb.cfg.n_layers;
	if (!m->res || !nl)
		return 0;
	if (layer >= nl)
		return -EINVAL;
	if (count > nl)
		count = nl;
	win = malloc((m->nunits ? m->nunits : 1) * sizeof(*win));
	if (!win)
		return -ENOMEM;
	/* Shards are sorted by layer, units by shard: soonest first. */
	for (k = 0; k < count; k++) {
		l = (layer + k) % nl;
		for (i = 0; i < m->nunits; i++)
			if (m->shards[m->units[i].shard].layer == l)
				win[n++] = i;
	}
	ret = residency_prefetch(m->res, win, n);
	free(win);
	return ret;
}
