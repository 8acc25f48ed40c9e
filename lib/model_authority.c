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
 *
 * With the kernel module loaded (ctx->kdev), a key is asked of /dev/ortho
 * first: the kernel checks the policy and counts this process a holder
 * (kdev_key). Only a shard the kernel does not know is asked of orthod,
 * which answers -EREMOTE for one whose key it has handed to the kernel.
 * What is resident is reported to both: the kernel shows it in fdinfo,
 * orthod in its status (and notifies this process too when revoking).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "authority.h"
#include "ctx.h"
#include "ctx_kdev.h"
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

/* One line: "<n> shards <what> <src>; not used: id (label, layer), ...". */
static void tally_warn(struct ortho_model *m, const struct tally *t,
		       const char *what, const char *src)
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
		  t->n == 1 ? "" : "s", what, src, buf);
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
		    const uint8_t *key)
{
	struct keyfile_entry e;
	int ret;

	memset(&e, 0, sizeof(e));
	memcpy(e.id, s->id, OSH_ID_SIZE);
	memcpy(e.key, key, OSH_KEY_SIZE);
	memcpy(e.label, s->label, sizeof(e.label));
	e.layer = s->layer;
	ret = keyfile_add(&m->keys, &e);
	explicit_bzero(&e, sizeof(e));
	return ret;
}

struct key_tallies {
	struct tally denied, unknown, revoked;		/* by orthod */
	struct tally kdenied, krevoked, remote;		/* by the kernel */
};

/*
 * From /dev/ortho. Return: 1 when the key is kept, 0 when the shard is
 * settled otherwise (refused, revoked), -ENOKEY to ask orthod, -ENOMEM.
 */
static int key_from_kernel(struct ortho_model *m, struct model_shard *s,
			   uint8_t *buf, struct key_tallies *t)
{
	int ret;

	ret = ctx_kdev_get_key(m->ctx, s->id, buf);
	if (!ret) {
		ret = key_keep(m, s, buf);
		secmem_wipe(buf, OSH_KEY_SIZE);
		if (ret) {
			ctx_kdev_put(m->ctx, s->id);
			return ret;
		}
		/* The kernel counts this process a holder from here on. */
		s->kdev_key = 1;
		return 1;
	}
	if (ret == -EACCES) {
		tally_add(&t->kdenied, s);
		return 0;
	}
	if (ret == -EKEYREVOKED) {
		s->state = ORTHO_SHARD_REVOKED;
		tally_add(&t->krevoked, s);
		return 0;
	}
	/* -ENOKEY: orthod keeps it; anything else, kdev.c said why. */
	return -ENOKEY;
}

/* From orthod. Return: 0 (kept or settled otherwise) or -ENOMEM. */
static int key_from_daemon(struct ortho_model *m, struct model_shard *s,
			   struct key_tallies *t)
{
	struct authority_key k;
	int ret;

	ret = authority_get_key(m->auth, s->id, &k);
	if (!ret) {
		/* The daemon counts us a holder from here on. */
		s->auth_key = 1;
		ret = key_keep(m, s, k.key);
	} else if (ret == -EACCES) {
		tally_add(&t->denied, s);
		ret = 0;
	} else if (ret == -EKEYREVOKED) {
		s->state = ORTHO_SHARD_REVOKED;
		tally_add(&t->revoked, s);
		ret = 0;
	} else if (ret == -ENOKEY) {
		tally_add(&t->unknown, s);
		ret = 0;
	} else if (ret == -EREMOTE) {
		tally_add(&t->remote, s);
		ret = 0;
	} else {
		olog_warn(m->ctx, "shard %s: no key from %s: %s; not used",
			  s->id_hex, m->ctx->auth_addr, ortho_strerror(ret));
		ret = 0;
	}
	explicit_bzero(&k, sizeof(k));
	return ret;
}

int model_authority_keys(struct ortho_model *m, const char *label)
{
	struct key_tallies t;
	const char *addr = m->ctx->auth_addr;
	uint8_t *kbuf = NULL;
	unsigned int i;
	char what[64];
	int ret = 0;

	memset(&t, 0, sizeof(t));
	m->auth = m->ctx->auth;
	if (m->ctx->kdev) {
		kbuf = secmem_alloc(OSH_KEY_SIZE);
		if (!kbuf)
			return -ENOMEM;
	}
	for (i = 0; !ret && i < m->nshards; i++) {
		struct model_shard *s = &m->shards[i];

		if (!wants_key(m, i, label))
			continue;
		ret = kbuf ? key_from_kernel(m, s, kbuf, &t) : -ENOKEY;
		if (ret == -ENOKEY)
			ret = key_from_daemon(m, s, &t);
		else if (ret > 0)
			ret = 0;
	}
	secmem_free(kbuf, OSH_KEY_SIZE);
	snprintf(what, sizeof(what), "not granted (uid %u) by",
		 (unsigned int)getuid());
	tally_warn(m, &t.denied, what, addr);
	tally_warn(m, &t.kdenied, what, "/dev/ortho (the kernel refused it)");
	tally_warn(m, &t.revoked, "revoked by", addr);
	tally_warn(m, &t.krevoked, "revoked by", "/dev/ortho");
	tally_warn(m, &t.unknown, "unknown to", addr);
	tally_warn(m, &t.remote, m->ctx->kdev ?
		   "in the kernel module (/dev/ortho did not hand them out), not handed out by" :
		   "in the kernel module (no /dev/ortho here), not handed out by",
		   addr);
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

	if (s->kdev_key) {
		if (bytes != s->kdev_bytes)
			ctx_kdev_resident(m->ctx, s->id, s->kdev_bytes, bytes);
		s->kdev_bytes = bytes;
		/* Dropped for good: the kernel's hold ends with the last. */
		if (!key) {
			ctx_kdev_put(m->ctx, s->id);
			s->kdev_key = 0;
		}
	}
	if (!m->auth)
		return;
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
	if (!m->auth && !m->ctx->kdev)
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
		olog_warn(m->ctx, "shard %s (label '%s'): revoked by %s%s: "
			  "evicted and wiped, not used any more", s->id_hex,
			  s->label, m->ctx->auth_addr,
			  s->kdev_key ? " and /dev/ortho" : "");
		if (!m->auth && !m->ctx->kdev)
			continue;
		/*
		 * The acknowledgements tell the daemon and the kernel the key
		 * is gone (revocation_handle()): neither hears of it here.
		 */
		pthread_mutex_lock(&m->auth_lock);
		s->auth_key = 0;
		s->kdev_key = 0;
		s->kdev_bytes = 0;
		pthread_mutex_unlock(&m->auth_lock);
		model_authority_sync(m, s);
	}
	return held;
}

void model_authority_close(struct ortho_model *m)
{
	unsigned int i;

	if (!m->auth && !m->ctx->kdev)
		return;
	pthread_mutex_lock(&m->auth_lock);
	m->auth_closing = 1;
	for (i = 0; i < m->nshards; i++) {
		struct model_shard *s = &m->shards[i];

		if (s->kdev_key) {
			if (s->kdev_bytes)
				ctx_kdev_resident(m->ctx, s->id, s->kdev_bytes,
						  0);
			ctx_kdev_put(m->ctx, s->id);
			s->kdev_key = 0;
			s->kdev_bytes = 0;
		}
		if (!m->auth || (!s->auth_key && !s->auth_bytes))
			continue;
		authority_release(m->auth, s->id, NULL, 1);
		s->auth_key = 0;
		s->auth_bytes = 0;
	}
	pthread_mutex_unlock(&m->auth_lock);
}
