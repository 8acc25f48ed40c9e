// SPDX-License-Identifier: MIT
/*
 * ortho_pack() without a key file: the new shard keys go straight from
 * secmem to the context's key authority (orthod), which keeps them wrapped
 * in its keystore, so they never touch the disk in the clear.
 *
 * The keys are handed over before the shards are installed: a shard whose
 * key the authority does not hold must never appear in the model
 * directory. A pack that fails after that leaves keys in the keystore
 * for shards that do not exist; they open nothing, and the message says so.
 * IMPORT is all or nothing per message; more than PROTO_IMPORT_MAX keys
 * take several, each durable on its own.
 */
#include <errno.h>
#include <string.h>

#include "authority.h"
#include "ctx.h"
#include "log.h"
#include "pack.h"
#include "secmem.h"

int pack_to_authority(const struct pack_job *j)
{
	return j->has_priv && (!j->o.key_file || !*j->o.key_file) &&
	       j->ctx && j->ctx->auth;
}

static int import_batch(struct pack_job *j, size_t from, size_t n,
			struct proto_import_ok *sum)
{
	size_t cap = PROTO_HDR_SIZE + 4 + n * (PROTO_KEY_MIN + PROTO_LABEL_MAX);
	struct authority *a = j->ctx->auth;
	struct proto_import_ok ok;
	struct authority_reply r;
	struct proto_key k;
	struct pcur c;
	struct pbuf b;
	uint8_t *buf;
	size_t i;
	int ret;

	buf = secmem_alloc(cap);
	if (!buf)
		return -ENOMEM;
	pbuf_init(&b, buf, cap, 0);
	proto_begin(&b, PROTO_IMPORT, 0);
	pbuf_u32(&b, (uint32_t)n);
	for (i = from; i < from + n; i++) {
		const struct keyfile_entry *e = &j->kf.e[i];

		memset(&k, 0, sizeof(k));
		memcpy(k.id, e->id, PROTO_ID_SIZE);
		memcpy(k.key, e->key, PROTO_KEY_SIZE);
		memcpy(k.label, e->label, sizeof(k.label) - 1);
		k.layer = e->layer;
		proto_put_key(&b, &k);
	}
	explicit_bzero(&k, sizeof(k));
	ret = authority_call(a, &b, PROTO_IMPORT_OK, AUTHORITY_TIMEOUT_MS, &r);
	secmem_free(buf, cap);
	if (ret) {
		olog_err(j->ctx, "%s: the key authority did not take the keys: "
			 "%s", j->ctx->auth_addr, *authority_last_error(a) ?
			 authority_last_error(a) : ortho_strerror(ret));
		return ret;
	}
	pcur_init(&c, r.payload, r.h.length);
	ret = proto_get_import_ok(&c, &ok);
	authority_reply_free(&r);
	if (ret) {
		olog_err(j->ctx, "%s: bad answer to the key import: %s",
			 j->ctx->auth_addr, c.why);
		return -EPROTO;
	}
	sum->added += ok.added;
	sum->present += ok.present;
	return 0;
}

int pack_keys_to_authority(struct pack_job *j)
{
	struct proto_import_ok sum = { 0 };
	size_t i, n, done = 0;
	int ret = 0;

	if (!authority_is_admin(j->ctx->auth)) {
		olog_err(j->ctx, "%s: handing keys to the key authority takes "
			 "root or its admin group", j->ctx->auth_addr);
		return -EPERM;
	}
	for (i = 0; !ret && i < j->kf.n; i += n) {
		n = j->kf.n - i < PROTO_IMPORT_MAX ? j->kf.n - i :
						     PROTO_IMPORT_MAX;
		ret = import_batch(j, i, n, &sum);
		if (!ret)
			done += n;
	}
	if (ret && done)
		olog_err(j->ctx, "%s: the first %zu keys were imported; they "
			 "belong to shards that are not installed",
			 j->ctx->auth_addr, done);
	if (!ret)
		olog_info(j->ctx, "%s: %zu shard keys handed to the key "
			  "authority (%u new)", j->ctx->auth_addr, j->kf.n,
			  sum.added);
	return ret;
}
