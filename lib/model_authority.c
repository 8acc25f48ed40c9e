// SPDX-License-Identifier: MIT
/*
 * A model whose keys come from the key authority (orthod) rather than a
 * key file: the keys are asked for at open, one per shard, and kept in
 * secmem with the model's other keys (model->keys); what is resident is
 * reported as it changes; a revocation notice drops the shard for good.
 *
 * Reports are level-triggered: model_authority_sync() compares what the
 * authority was last told about a shard with the shard's state now and
 * sends the difference, under model->auth_lock. Threads that load and
 * evict units of one shard at once may call it in any order; the last
 * call leaves the authority with the shard's last state.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "authority.h"
#include "ctx.h"
#include "log.h"
#include "model.h"
#include "residency.h"
#include "secmem.h"

/* Shards one warning names; the rest are counted. */
#define NAMED 4

struct tally {
	unsigned int n;
	char names[NAMED][128];
};

static void tally_add(struct tally *t, const struct model_shard *s)
{
	if (t->n < NAMED)
		snprintf(t->names[t->n], sizeof(t->names[0]),
			 "%s (label '%s', layer %d)", s->id_hex, s->label,
			 s->layer == UINT32_MAX ? -1 : (int)s->layer);
	t->n++;
}

/* One line: "<n> shards <what>: id (label, layer), ..., and k more". */
static void tally_warn(struct ortho_model *m, const struct tally *t,
		       const char *what)
{
	char buf[NAMED * 130 + 32];
	size_t len = 0;
	unsigned int i;

	if (!t->n)
		return;
	buf[0] = 0;
	for (i = 0; i < t->n && i < NAMED; i++)
		len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s%s",
					i ? ", " : "", t->names[i]);
	if (t->n > NAMED)
		snprintf(buf + len, sizeof(buf) - len, ", and %u more",
			 t->n - NAMED);
	olog_warn(m->ctx, "%u shard%s %s %s; not used: %s", t->n,
		  t->n == 1 ? "" : "s", what, m->ctx->auth_addr, buf);
}

/* Should @s be asked for: this model's, this label, not a second copy? */
static int wants_key(const struct ortho_model *m, unsigned int i,
		     const char *label)
{
	const struct model_shard *s = &m->shards[i];

	if (!s->header_ok || s->state != ORTHO_SHARD_ABSENT ||
	    memcmp(s->model_id, m->orb.hdr->model_id, 32))
		return 0;
	if (label && strcmp(s->label, label))
		return 0;
	return !(i && m->shards[i - 1].header_ok &&
		 !memcmp(m->shards[i - 1].id, s->id, OSH_ID_SIZE));
}

static int key_keep(struct ortho_model *m, struct model_shard *s,
		    const struct authority_key *k)
{
	struct keyfile_entry e;
	int ret;

	memset(&e, 0, sizeof(e));
	memcpy(e.id, s->id, OSH_ID_SIZE);
	memcpy(e.key, k->key, OSH_KEY_SIZE);
	memcpy(e.label, s->label, sizeof(e.label));
	e.layer = s->layer;
	ret = keyfile_add(&m->keys, &e);
	explicit_bzero(&e, sizeof(e));
	return ret;
}

int model_authority_keys(struct ortho_model *m, const char *label)
{
	struct tally denied = { 0 }, unknown = { 0 }, revoked = { 0 };
	struct authority *a = m->ctx->auth;
	struct authority_key k;
	unsigned int i;
	char what[64];
	int ret = 0;

	m->auth = a;
	for (i = 0; !ret && i < m->nshards; i++) {
		struct model_shard *s = &m->shards[i];

		if (!wants_key(m, i, label))
			continue;
		ret = authority_get_key(a, s->id, &k);
		if (!ret) {
			/* The daemon counts us a holder from here on. */
			s->auth_key = 1;
			ret = key_keep(m, s, &k);
		} else if (ret == -EACCES) {
			tally_add(&denied, s);
			ret = 0;
		} else if (ret == -EKEYREVOKED) {
			s->state = ORTHO_SHARD_REVOKED;
			tally_add(&revoked, s);
			ret = 0;
		} else if (ret == -ENOKEY) {
			tally_add(&unknown, s);
			ret = 0;
		} else {
			olog_warn(m->ctx, "shard %s: no key from %s: %s; not "
				  "used", s->id_hex, m->ctx->auth_addr,
				  ortho_strerror(ret));
			ret = 0;
		}
		explicit_bzero(&k, sizeof(k));
	}
	snprintf(what, sizeof(what), "not granted (uid %u) by",
		 (unsigned int)getuid());
	tally_warn(m, &denied, what);
	tally_warn(m, &revoked, "revoked by");
	tally_warn(m, &unknown, "unknown to");
	return ret;
}

/* Send what changed since the last report (m->auth_lock held). */
static void sync_locked(struct ortho_model *m, struct model_shard *s)
{
	const char *dev = m->ctx->backend_name;
	uint64_t bytes, since;
	int key, ret = 0;

	pthread_rwlock_rdlock(&m->lock);
	bytes = s->bytes;
	since = s->since_ns;
	key = s->key != NULL;
	pthread_rwlock_unlock(&m->lock);

	if (bytes && bytes != s->auth_bytes) {
		ret = authority_hold(m->auth, s->id, dev, bytes, since);
		s->auth_bytes = bytes;
	} else if (!bytes && s->auth_bytes) {
		ret = authority_release(m->auth, s->id, dev,
					!key && s->auth_key);
		s->auth_bytes = 0;
		if (!key)
			s->auth_key = 0;
	}
	if (!ret && !key && s->auth_key) {
		ret = authority_release(m->auth, s->id, NULL, 1);
		s->auth_key = 0;
	}
	/* A lost daemon is reported once, by the notice thread. */
	if (ret && ret != -ECONNRESET)
		olog_dbg(m->ctx, "shard %s: residency report to %s: %s",
			 s->id_hex, m->ctx->auth_addr, ortho_strerror(ret));
}

void model_authority_sync(struct ortho_model *m, struct model_shard *s)
{
	if (!m->auth)
		return;
	pthread_mutex_lock(&m->auth_lock);
	if (!m->auth_closing)
		sync_locked(m, s);
	pthread_mutex_unlock(&m->auth_lock);
}

int shard_revoke(struct ortho_model *m, struct model_shard *s)
{
	unsigned int k;
	int held;

	pthread_rwlock_rdlock(&m->lock);
	held = s->key || s->bytes;
	pthread_rwlock_unlock(&m->lock);
	if (!held)
		return 0;
	/* Whatever state its units are in, none is used again. */
	for (k = 0; m->res && k < s->nunits; k++)
		residency_drop(m->res, s->unit0 + k, ORTHO_SHARD_REVOKED);
	pthread_rwlock_wrlock(&m->lock);
	s->state = ORTHO_SHARD_REVOKED;
	s->units_dropped = 1;
	s->bytes = 0;
	s->since_ns = 0;
	s->pt = NULL;
	s->pt_size = 0;
	if (s->key) {
		secmem_wipe(s->key->key, sizeof(s->key->key));
		s->key = NULL;
	}
	pthread_rwlock_unlock(&m->lock);
	return 1;
}

int model_authority_revoke(struct ortho_model *m,
			   const uint8_t id[OSH_ID_SIZE])
{
	unsigned int i;
	int held = 0;

	for (i = 0; i < m->nshards; i++) {
		struct model_shard *s = &m->shards[i];

		if (!s->header_ok || memcmp(s->id, id, OSH_ID_SIZE))
			continue;
		if (!shard_revoke(m, s))
			continue;
		held = 1;
		olog_warn(m->ctx, "shard %s (label '%s'): revoked by %s: "
			  "evicted and wiped, not used any more", s->id_hex,
			  s->label, m->ctx->auth_addr);
		if (!m->auth)
			continue;
		/* The acknowledgement tells the daemon the key is gone. */
		pthread_mutex_lock(&m->auth_lock);
		s->auth_key = 0;
		pthread_mutex_unlock(&m->auth_lock);
		model_authority_sync(m, s);
	}
	return held;
}

void model_authority_close(struct ortho_model *m)
{
	unsigned int i;

	if (!m->auth)
		return;
	pthread_mutex_lock(&m->auth_lock);
	m->auth_closing = 1;
	for (i = 0; i < m->nshards; i++) {
		struct model_shard *s = &m->shards[i];

		if (!s->auth_key && !s->auth_bytes)
			continue;
		authority_release(m->auth, s->id, NULL, 1);
		s->auth_key = 0;
		s->auth_bytes = 0;
	}
	pthread_mutex_unlock(&m->auth_lock);
}
