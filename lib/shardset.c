// SPDX-License-Identifier: MIT
/*
 * The shards of a model: found in dir/ortho/, judged (model, label, key),
 * loaded (decrypted into secmem, parsed, checked against the Base, views
 * attached to the Base tensors), described, dropped and wiped.
 *
 * Every shard's state lives in its struct model_shard; shard_load() and
 * shard_unload() are the only ways in and out of RESIDENT, so a residency
 * manager can call them to page shards in and out. Locking: lib/model.h.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "ctx.h"
#include "log.h"
#include "model.h"
#include "secmem.h"
#include "shard.h"

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void shard_fail(struct ortho_model *m, struct model_shard *s,
		       int err, uint32_t bad_chunk)
{
	pthread_rwlock_wrlock(&m->lock);
	s->state = ORTHO_SHARD_FAILED;
	s->error = err;
	s->bad_chunk = bad_chunk;
	pthread_rwlock_unlock(&m->lock);
}

/* Read the header of a shard file; a bad one leaves it FAILED. */
static void shard_read_header(struct ortho_model *m, struct model_shard *s)
{
	struct osh_file f;
	size_t n;
	int ret;

	s->layer = UINT32_MAX;
	s->bad_chunk = UINT32_MAX;
	ret = osh_open(m->ctx, s->path, &f);
	if (ret) {
		/* The id is unknown: name it after its file. */
		n = strcspn(s->file, ".");
		if (n > 32)
			n = 32;
		memcpy(s->id_hex, s->file, n);
		s->id_hex[n] = 0;
		s->state = ORTHO_SHARD_FAILED;
		s->error = ret;
		olog_err(m->ctx, "shard %s: %s: not used (its header cannot "
			 "be read: %s)", s->id_hex, s->path,
			 ortho_strerror(ret));
		return;
	}
	s->header_ok = 1;
	memcpy(s->id, f.hdr.shard_id, OSH_ID_SIZE);
	osh_id_to_hex(s->id, s->id_hex);
	memcpy(s->model_id, f.hdr.model_id, 32);
	n = strnlen(f.hdr.label, sizeof(f.hdr.label) - 1);
	memcpy(s->label, f.hdr.label, n);
	s->label[n] = 0;
	s->layer = f.hdr.layer;
	s->tensor_count = f.hdr.tensor_count;
	s->plaintext_len = f.hdr.plaintext_len;
	s->state = ORTHO_SHARD_ABSENT;
	osh_close(&f);
}

static int shard_cmp(const void *a, const void *b)
{
	const struct model_shard *x = a, *y = b;
	int r;

	if (x->layer != y->layer)
		return x->layer < y->layer ? -1 : 1;
	r = strcmp(x->label, y->label);
	if (r)
		return r;
	r = strcmp(x->id_hex, y->id_hex);
	return r ? r : strcmp(x->file, y->file);
}

static int is_shard_file(const char *name)
{
	size_t n = strlen(name);

	return name[0] != '.' && n > 4 && !strcmp(name + n - 4, ".osh");
}

static int add_shard(struct ortho_model *m, const char *sdir,
		     const char *name, unsigned int *cap)
{
	struct model_shard *s;

	if (m->nshards == MODEL_MAX_SHARDS) {
		olog_err(m->ctx, "%s: more than %u shard files", sdir,
			 MODEL_MAX_SHARDS);
		return -EMFILE;
	}
	if (m->nshards == *cap) {
		unsigned int nc = *cap ? *cap * 2 : 16;

		s = realloc(m->shards, nc * sizeof(*s));
		if (!s)
			return -ENOMEM;
		m->shards = s;
		*cap = nc;
	}
	s = &m->shards[m->nshards];
	memset(s, 0, sizeof(*s));
	if (asprintf(&s->path, "%s/%s", sdir, name) < 0) {
		s->path = NULL;
		return -ENOMEM;
	}
	s->file = s->path + strlen(sdir) + 1;
	m->nshards++;
	shard_read_header(m, s);
	return 0;
}

int model_scan_shards(struct ortho_model *m, const char *dir)
{
	unsigned int cap = 0;
	struct dirent *de;
	char *sdir;
	DIR *d;
	int ret = 0;

	if (asprintf(&sdir, "%s/ortho", dir) < 0)
		return -ENOMEM;
	d = opendir(sdir);
	if (!d) {
		ret = errno == ENOENT ? 0 : -errno;
		if (ret)
			olog_err(m->ctx, "%s: %s", sdir, ortho_strerror(ret));
		free(sdir);
		return ret;
	}
	while (!ret && (de = readdir(d)))
		if (is_shard_file(de->d_name))
			ret = add_shard(m, sdir, de->d_name, &cap);
	closedir(d);
	free(sdir);
	if (!ret && m->nshards)
		qsort(m->shards, m->nshards, sizeof(*m->shards), shard_cmp);
	return ret;
}

static void hex8(const uint8_t *id, char out[9])
{
	snprintf(out, 9, "%02x%02x%02x%02x", id[0], id[1], id[2], id[3]);
}

/* Release what shard_load() built before the shard went resident. */
static void views_free(struct ortho_model *m, struct model_shard *s)
{
	unsigned int i;

	for (i = 0; i < s->nviews; i++)
		if (s->views[i].uploaded)
			m->ctx->backend->ortho_release(m->ctx,
						       &s->views[i].o);
	free(s->views);
	s->views = NULL;
	s->nviews = 0;
}

static int view_setup(struct ortho_model *m, struct model_shard *s,
		      const struct osp_view_tensor *vt, unsigned char *seen)
{
	struct shard_view *v = &s->views[s->nviews];
	struct ortho_ctx *ctx = m->ctx;
	struct ortho_tensor *t;
	int ret;

	t = model_tensor_by_name(m, vt->name);
	if (!t || !t->is_linear) {
		olog_err(ctx, "shard %s: tensor %s is %s of the Base; "
			 "not used", s->id_hex, vt->name,
			 t ? "not a linear tensor" : "not a tensor");
		return -EINVAL;
	}
	if (t->rows != vt->rows || t->cols != vt->cols) {
		olog_err(ctx, "shard %s: tensor %s is %ux%u, the Base has "
			 "%ux%u; not used", s->id_hex, vt->name, vt->rows,
			 vt->cols, t->rows, t->cols);
		return -EINVAL;
	}
	if (seen[t->index]) {
		olog_err(ctx, "shard %s: tensor %s appears twice; not used",
			 s->id_hex, vt->name);
		return -EINVAL;
	}
	seen[t->index] = 1;
	v->base = t;
	v->o.host.encoding = vt->encoding;
	v->o.host.rows = vt->rows;
	v->o.host.cols = vt->cols;
	v->o.host.rowptr = vt->rowptr;
	v->o.host.col = vt->col;
	v->o.host.val = vt->val;
	s->nviews++;
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

/* Parse the plaintext and build one view per Ortho tensor. */
static int views_build(struct ortho_model *m, struct model_shard *s)
{
	struct osp_view_tensor *vt;
	unsigned char *seen;
	unsigned int i;
	int n, ret = -ENOMEM;

	vt = calloc(s->tensor_count ? s->tensor_count : 1, sizeof(*vt));
	s->views = calloc(s->tensor_count ? s->tensor_count : 1,
			  sizeof(*s->views));
	seen = calloc(m->ntensors ? m->ntensors : 1, 1);
	if (!vt || !s->views || !seen)
		goto out;
	n = osp_parse(m->ctx, s->pt, s->plaintext_len, vt, s->tensor_count);
	if (n >= 0 && (unsigned int)n != s->tensor_count) {
		olog_err(m->ctx, "shard %s: plaintext holds %d tensors, the "
			 "header says %u", s->id_hex, n, s->tensor_count);
		n = -EBADMSG;
	}
	ret = n < 0 ? n : 0;
	for (i = 0; !ret && i < s->tensor_count; i++)
		ret = view_setup(m, s, &vt[i], seen);
out:
	free(seen);
	free(vt);
	return ret;
}

/* Make the views visible to ortho_linear(): all of them or none. */
static int views_attach(struct ortho_model *m, struct model_shard *s)
{
	unsigned int i;

	pthread_rwlock_wrlock(&m->lock);
	for (i = 0; i < s->nviews; i++) {
		if (s->views[i].base->nviews >= MODEL_MAX_VIEWS) {
			pthread_rwlock_unlock(&m->lock);
			olog_err(m->ctx, "shard %s: tensor %s already has %u "
				 "Ortho shards in use; not used", s->id_hex,
				 s->views[i].base->name, MODEL_MAX_VIEWS);
			return -E2BIG;
		}
	}
	for (i = 0; i < s->nviews; i++) {
		struct ortho_tensor *t = s->views[i].base;

		t->views[t->nviews++] = &s->views[i].o;
	}
	s->state = ORTHO_SHARD_RESIDENT;
	s->error = 0;
	s->bad_chunk = UINT32_MAX;
	s->bytes = s->plaintext_len;
	s->since_ns = now_ns();
	pthread_rwlock_unlock(&m->lock);
	return 0;
}

static int shard_decrypt(struct ortho_model *m, struct model_shard *s,
			 uint32_t *bad)
{
	struct ortho_ctx *ctx = m->ctx;
	struct osh_file f;
	char a[9], b[9];
	int ret;

	ret = osh_open(ctx, s->path, &f);
	if (ret) {
		olog_err(ctx, "shard %s: %s: %s; not used", s->id_hex, s->path,
			 ortho_strerror(ret));
		return ret;
	}
	/* The file may have changed since the scan: judge it again. */
	if (memcmp(f.hdr.model_id, m->orb.hdr->model_id, 32) ||
	    memcmp(f.hdr.shard_id, s->id, OSH_ID_SIZE) ||
	    f.hdr.plaintext_len != s->plaintext_len ||
	    f.hdr.tensor_count != s->tensor_count) {
		hex8(f.hdr.model_id, a);
		hex8(m->orb.hdr->model_id, b);
		olog_err(ctx, "shard %s: %s changed since it was found "
			 "(model %s, Base %s); not used", s->id_hex, s->path,
			 a, b);
		ret = -EXDEV;
		goto out;
	}
	ret = osh_check_key(&f, s->key->key);
	if (ret) {
		olog_err(ctx, "shard %s (%s): the key for it does not open it "
			 "(wrong key); not used", s->id_hex, s->file);
		goto out;
	}
	s->pt_size = s->plaintext_len ? s->plaintext_len : 1;
	s->pt = secmem_alloc(s->pt_size);
	if (!s->pt) {
		ret = -ENOMEM;
		goto out;
	}
	ret = osh_read_all(ctx, &f, s->key->key, s->pt, bad);
	if (ret == -EBADMSG)
		olog_err(ctx, "shard %s: %s: not used (chunk %u failed "
			 "authentication)", s->id_hex, s->path, *bad);
	else if (ret)
		olog_err(ctx, "shard %s: %s: %s; not used", s->id_hex,
			 s->path, ortho_strerror(ret));
out:
	osh_close(&f);
	return ret;
}

int shard_load(struct ortho_model *m, struct model_shard *s)
{
	uint32_t bad = UINT32_MAX;
	int ret;

	if (!s->header_ok || !s->key || s->state == ORTHO_SHARD_RESIDENT)
		return -EINVAL;
	pthread_rwlock_wrlock(&m->lock);
	s->state = ORTHO_SHARD_LOADING;
	pthread_rwlock_unlock(&m->lock);

	ret = shard_decrypt(m, s, &bad);
	if (!ret)
		ret = views_build(m, s);
	if (!ret)
		ret = views_attach(m, s);
	if (!ret) {
		olog_dbg(m->ctx, "shard %s (%s, layer %u): resident, %u "
			 "tensors, %llu bytes", s->id_hex, s->label, s->layer,
			 s->nviews, (unsigned long long)s->bytes);
		return 0;
	}
	views_free(m, s);
	secmem_free(s->pt, s->pt_size);
	s->pt = NULL;
	s->pt_size = 0;
	shard_fail(m, s, ret, ret == -EBADMSG ? bad : UINT32_MAX);
	return ret;
}

static void views_detach(struct model_shard *s)
{
	unsigned int i, j;

	for (i = 0; i < s->nviews; i++) {
		struct ortho_tensor *t = s->views[i].base;

		for (j = 0; j < t->nviews; j++) {
			if (t->views[j] != &s->views[i].o)
				continue;
			memmove(&t->views[j], &t->views[j + 1],
				(t->nviews - j - 1) * sizeof(t->views[0]));
			t->nviews--;
			break;
		}
	}
}

int shard_unload(struct ortho_model *m, struct model_shard *s,
		 uint32_t state)
{
	pthread_rwlock_wrlock(&m->lock);
	if (s->state != ORTHO_SHARD_RESIDENT) {
		pthread_rwlock_unlock(&m->lock);
		return -EALREADY;
	}
	/* Ops in flight held the lock shared: they are done with it now. */
	views_detach(s);
	s->state = ORTHO_SHARD_EVICTING;
	pthread_rwlock_unlock(&m->lock);

	views_free(m, s);
	secmem_free(s->pt, s->pt_size);
	if (state != ORTHO_SHARD_ABSENT && s->key) {
		/* Dropped for good: the key goes too. */
		secmem_wipe(s->key->key, sizeof(s->key->key));
		s->key = NULL;
	}

	pthread_rwlock_wrlock(&m->lock);
	s->pt = NULL;
	s->pt_size = 0;
	s->bytes = 0;
	s->state = state;
	pthread_rwlock_unlock(&m->lock);
	return 0;
}

void model_free_shards(struct ortho_model *m)
{
	unsigned int i;

	for (i = 0; i < m->nshards; i++) {
		shard_unload(m, &m->shards[i], ORTHO_SHARD_ABSENT);
		free(m->shards[i].path);
	}
	free(m->shards);
	m->shards = NULL;
	m->nshards = 0;
}

/* Another model's shard, another label's, a copy of one seen, no key? */
static int shard_judge(struct ortho_model *m, unsigned int i,
		       const char *label)
{
	struct model_shard *s = &m->shards[i];
	char a[9], b[9];

	if (s->state == ORTHO_SHARD_FAILED)
		return s->error;
	if (memcmp(s->model_id, m->orb.hdr->model_id, 32)) {
		hex8(s->model_id, a);
		hex8(m->orb.hdr->model_id, b);
		olog_err(m->ctx, "shard %s: belongs to model %s not %s (%s); "
			 "not used", s->id_hex, a, b, s->file);
		shard_fail(m, s, -EXDEV, UINT32_MAX);
		return -EXDEV;
	}
	if (label && strcmp(s->label, label))
		return 0;
	if (i && m->shards[i - 1].header_ok &&
	    !memcmp(m->shards[i - 1].id, s->id, OSH_ID_SIZE)) {
		olog_err(m->ctx, "shard %s: %s is a second copy of %s; not "
			 "used", s->id_hex, s->file, m->shards[i - 1].file);
		shard_fail(m, s, -EEXIST, UINT32_MAX);
		return -EEXIST;
	}
	/* The entries are the model's own copy (m->keys). */
	s->key = (struct keyfile_entry *)keyfile_find(&m->keys, s->id);
	if (!s->key) {
		s->state = ORTHO_SHARD_NO_KEY;
		return 0;
	}
	return shard_load(m, s);
}

#define NOKEY_LABELS 4

/* One warning line for every shard without a key, counted by label. */
static void warn_no_key(struct ortho_model *m, const char *key_file)
{
	const char *lab[NOKEY_LABELS];
	unsigned int cnt[NOKEY_LABELS] = { 0 };
	unsigned int i, j, nl = 0, other = 0, total = 0;
	char buf[512];
	size_t len = 0;

	for (i = 0; i < m->nshards; i++) {
		if (m->shards[i].state != ORTHO_SHARD_NO_KEY)
			continue;
		total++;
		for (j = 0; j < nl; j++)
			if (!strcmp(lab[j], m->shards[i].label))
				break;
		if (j == nl && nl < NOKEY_LABELS)
			lab[nl++] = m->shards[i].label;
		if (j < nl)
			cnt[j]++;
		else
			other++;
	}
	if (!total)
		return;
	buf[0] = 0;
	for (j = 0; j < nl && len < sizeof(buf); j++)
		len += (size_t)snprintf(buf + len, sizeof(buf) - len,
					"%s%u with label '%s'", j ? ", " : "",
					cnt[j], lab[j]);
	if (other && len < sizeof(buf))
		snprintf(buf + len, sizeof(buf) - len, ", %u more", other);
	olog_warn(m->ctx, "%u of %u shards have no key %s%s and are not "
		  "used (%s)", total, m->nshards,
		  key_file ? "in " : "(no key file given)",
		  key_file ? key_file : "", buf);
}

int model_load_shards(struct ortho_model *m, const char *label,
		      const char *key_file)
{
	unsigned int i;
	int ret;

	for (i = 0; i < m->nshards; i++) {
		ret = shard_judge(m, i, label);
		if (ret && (m->flags & ORTHO_MODEL_STRICT)) {
			olog_err(m->ctx, "shard %s: %s (strict mode: the model "
				 "is not opened)", m->shards[i].id_hex,
				 ortho_strerror(ret));
			return ret;
		}
	}
	warn_no_key(m, key_file);
	return 0;
}

ORTHO_API unsigned int ortho_model_shard_count(const struct ortho_model *m)
{
	return m ? m->nshards : 0;
}

ORTHO_API int ortho_shard_info_get(const struct ortho_model *cm,
				   unsigned int i,
				   struct ortho_shard_info *info)
{
	/* The lock is the model's, not part of what callers see as const. */
	struct ortho_model *m = (struct ortho_model *)cm;
	struct ortho_shard_info o = { 0 };
	const struct model_shard *s;

	if (!m || !info)
		return -EINVAL;
	if (info->sz < sizeof(o))
		return -EINVAL;
	if (i >= m->nshards)
		return -ERANGE;
	s = &m->shards[i];
	o.sz = info->sz;
	snprintf(o.id, sizeof(o.id), "%s", s->id_hex);
	snprintf(o.label, sizeof(o.label), "%s", s->label);
	o.layer = s->layer;
	o.plaintext_len = s->plaintext_len;
	o.tensors = s->tensor_count;
	pthread_rwlock_rdlock(&m->lock);
	o.state = s->state;
	o.error = s->error;
	o.bad_chunk = s->bad_chunk;
	o.bytes = s->bytes;
	o.since_ns = s->since_ns;
	if (s->state == ORTHO_SHARD_RESIDENT ||
	    s->state == ORTHO_SHARD_EVICTING)
		memcpy(o.device, m->ctx->backend_name,
		       strnlen(m->ctx->backend_name, sizeof(o.device) - 1));
	pthread_rwlock_unlock(&m->lock);
	memcpy(info, &o, sizeof(o));
	return 0;
}

ORTHO_API int ortho_model_drop_shard(struct ortho_model *m, const char *id)
{
	uint8_t bin[OSH_ID_SIZE];
	struct model_shard *found = NULL;
	unsigned int i;
	int ret;

	if (!m || !id)
		return -EINVAL;
	if (osh_id_from_hex(id, bin))
		return -EINVAL;
	/* A second copy of a shard has its id too: prefer the one in use. */
	for (i = 0; i < m->nshards; i++) {
		struct model_shard *s = &m->shards[i];

		if (!s->header_ok || memcmp(s->id, bin, OSH_ID_SIZE))
			continue;
		if (!found || s->state == ORTHO_SHARD_RESIDENT)
			found = s;
	}
	if (!found)
		return -ENOENT;
	ret = shard_unload(m, found, ORTHO_SHARD_DROPPED);
	if (!ret)
		olog_info(m->ctx, "shard %s: dropped and wiped",
			  found->id_hex);
	return ret;
}
