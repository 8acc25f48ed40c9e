// SPDX-License-Identifier: MIT
/*
 * The shards of a model: found in dir/ortho/, judged (model, label, key
 * from a key file or the authority: lib/model_authority.c),
 * handed to the residency manager (lib/model_residency.c pages them in and
 * out), described, dropped and wiped.
 *
 * Every shard's state lives in its struct model_shard. Locking:
 * lib/model.h.
 */
#include <dirent.h>
#include <errno.h>
#include <stddef.h>
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

void model_free_shards(struct ortho_model *m)
{
	unsigned int i;

	model_residency_stop(m);
	for (i = 0; i < m->nshards; i++)
		free(m->shards[i].path);
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
	/* The authority said so at open (model_authority_keys()). */
	if (s->state == ORTHO_SHARD_REVOKED)
		return 0;
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
	if (!s->key)
		s->state = ORTHO_SHARD_NO_KEY;
	/* Usable: model_residency_start() reads and loads it. */
	return 0;
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
	/* With an authority, model_authority_keys() said why already. */
	if (!m->auth)
		warn_no_key(m, key_file);
	return model_residency_start(m);
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
	/* The first release's struct ended with .tensors. */
	if (info->sz < offsetof(struct ortho_shard_info, pad0))
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
	o.uses = __atomic_load_n(&s->uses, __ATOMIC_RELAXED);
	if (s->state == ORTHO_SHARD_RESIDENT ||
	    s->state == ORTHO_SHARD_EVICTING)
		memcpy(o.device, m->ctx->backend_name,
		       strnlen(m->ctx->backend_name, sizeof(o.device) - 1));
	pthread_rwlock_unlock(&m->lock);
	memcpy(info, &o, info->sz < sizeof(o) ? info->sz : sizeof(o));
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
	pthread_rwlock_rdlock(&m->lock);
	for (i = 0; i < m->nshards; i++) {
		struct model_shard *s = &m->shards[i];

		if (!s->header_ok || memcmp(s->id, bin, OSH_ID_SIZE))
			continue;
		if (!found || s->key)
			found = s;
	}
	pthread_rwlock_unlock(&m->lock);
	if (!found)
		return -ENOENT;
	ret = shard_unload(m, found, ORTHO_SHARD_DROPPED);
	model_authority_sync(m, found);
	if (!ret)
		olog_info(m->ctx, "shard %s: dropped and wiped",
			  found->id_hex);
	return ret;
}
