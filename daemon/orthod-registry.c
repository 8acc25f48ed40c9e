// SPDX-License-Identifier: MIT
/*
 * The residency registry and the requests any client may make.
 *
 * Each connection records the keys handed out on it and what its peer
 * reports resident (shard, device, bytes, since). A connection "holds" a
 * shard while either is recorded; a revocation waits on every holder.
 * Records go with the connection: a client that disconnects is dropped.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "orthod.h"

static int grow(void **v, size_t *cap, size_t n, size_t elem)
{
	size_t ncap;
	void *p;

	if (n < *cap)
		return 0;
	if (n >= PROTO_LIST_MAX)
		return -ENOSPC;
	ncap = *cap ? 2 * *cap : 8;
	p = realloc(*v, ncap * elem);
	if (!p)
		return -ENOMEM;
	*v = p;
	*cap = ncap;
	return 0;
}

int reg_hold(struct conn *c, const struct proto_hold *h)
{
	struct hold *x;
	size_t i;
	int ret;

	for (i = 0; i < c->nholds; i++) {
		x = &c->holds[i];
		if (!memcmp(x->id, h->id, PROTO_ID_SIZE) &&
		    !strcmp(x->device, h->device))
			goto fill;
	}
	ret = grow((void **)&c->holds, &c->cap_holds, c->nholds,
		   sizeof(*c->holds));
	if (ret)
		return ret;
	x = &c->holds[c->nholds++];
fill:
	memcpy(x->id, h->id, PROTO_ID_SIZE);
	memcpy(x->device, h->device, sizeof(x->device));
	x->bytes = h->bytes;
	x->since_ns = h->since_ns;
	return 0;
}

static void drop_keyref(struct conn *c, const uint8_t id[PROTO_ID_SIZE])
{
	size_t i;

	for (i = 0; i < c->nkeys; i++) {
		if (!memcmp(c->keys[i], id, PROTO_ID_SIZE)) {
			memmove(c->keys[i], c->keys[c->nkeys - 1], PROTO_ID_SIZE);
			c->nkeys--;
			return;
		}
	}
}

void reg_release(struct conn *c, const struct proto_release *r)
{
	size_t i = 0;

	while (i < c->nholds) {
		struct hold *x = &c->holds[i];

		if (!memcmp(x->id, r->id, PROTO_ID_SIZE) &&
		    (!r->device[0] || !strcmp(x->device, r->device)))
			*x = c->holds[--c->nholds];
		else
			i++;
	}
	if (r->flags & PROTO_RELEASE_KEY)
		drop_keyref(c, r->id);
}

int reg_key_out(struct conn *c, const uint8_t id[PROTO_ID_SIZE])
{
	size_t i;
	int ret;

	c->keys_out++;
	for (i = 0; i < c->nkeys; i++)
		if (!memcmp(c->keys[i], id, PROTO_ID_SIZE))
			return 0;
	ret = grow((void **)&c->keys, &c->cap_keys, c->nkeys,
		   sizeof(*c->keys));
	if (ret)
		return ret;
	memcpy(c->keys[c->nkeys++], id, PROTO_ID_SIZE);
	return 0;
}

int reg_holds(const struct conn *c, const uint8_t id[PROTO_ID_SIZE])
{
	size_t i;

	for (i = 0; i < c->nkeys; i++)
		if (!memcmp(c->keys[i], id, PROTO_ID_SIZE))
			return 1;
	for (i = 0; i < c->nholds; i++)
		if (!memcmp(c->holds[i].id, id, PROTO_ID_SIZE))
			return 1;
	return 0;
}

void reg_drop(struct conn *c, const uint8_t id[PROTO_ID_SIZE])
{
	struct proto_release r = { .flags = PROTO_RELEASE_KEY };

	memcpy(r.id, id, PROTO_ID_SIZE);
	reg_release(c, &r);
}

void reg_free(struct conn *c)
{
	free(c->holds);
	free(c->keys);
	c->holds = NULL;
	c->keys = NULL;
	c->nholds = c->nkeys = c->cap_holds = c->cap_keys = 0;
}

/* ---- requests ---- */

static int bad_request(struct orthod *d, struct conn *c, struct pcur *cur)
{
	conn_error(d, c, c->h.req_id, -EBADMSG, "%s: %s",
		   proto_type_name(c->h.type), cur->why ? cur->why : "malformed");
	return -EBADMSG;
}

static int do_hello(struct orthod *d, struct conn *c, struct pcur *cur)
{
	struct proto_hello_ok h = {
		.version = PROTO_VERSION,
		.pid = (uint32_t)getpid(),
		.uid = c->peer.uid,
		.gid = c->peer.gid,
		.admin = (uint8_t)c->peer.admin,
	};
	uint8_t buf[64];
	struct pbuf b;

	if (pcur_u32(cur, "flags"))
		pcur_fail(cur, -EBADMSG, "flags: none are defined");
	if (pcur_end(cur))
		return bad_request(d, c, cur);
	pbuf_init(&b, buf, sizeof(buf), 0);
	proto_begin(&b, PROTO_HELLO_OK, c->h.req_id);
	proto_put_hello_ok(&b, &h);
	return conn_send_pbuf(d, c, &b);
}

static void who(const struct conn *c, char *out, size_t cap)
{
	char comm[PROTO_COMM_MAX + 1];

	audit_val(c->peer.comm, comm, sizeof(comm));
	snprintf(out, cap, "pid=%d uid=%u gid=%u comm=%s", (int)c->peer.pid,
		 (unsigned int)c->peer.uid, (unsigned int)c->peer.gid, comm);
}

static int refuse_key(struct orthod *d, struct conn *c, const char *hex,
		      int err, const char *why)
{
	char w[128], reason[64];

	who(c, w, sizeof(w));
	audit_val(why, reason, sizeof(reason));	/* one k=v token */
	audit_log(&d->audit, "key-denied", "shard=%s %s reason=%s", hex, w,
		  reason);
	return conn_error(d, c, c->h.req_id, err, "shard %s: %s", hex, why);
}

static int send_key(struct orthod *d, struct conn *c, const struct shard *s)
{
	uint8_t buf[PROTO_HDR_SIZE + 128];
	struct proto_key k;
	struct pbuf b;
	int ret;

	memcpy(k.id, s->id, PROTO_ID_SIZE);
	memcpy(k.key, s->key, PROTO_KEY_SIZE);
	memcpy(k.label, s->label, sizeof(k.label));
	k.layer = s->layer;
	pbuf_init(&b, buf, sizeof(buf), 0);
	proto_begin(&b, PROTO_KEY, c->h.req_id);
	proto_put_key(&b, &k);
	ret = conn_send_pbuf(d, c, &b);
	explicit_bzero(&k, sizeof(k));
	explicit_bzero(buf, sizeof(buf));
	return ret;
}

static int do_get_key(struct orthod *d, struct conn *c, struct pcur *cur)
{
	uint8_t id[PROTO_ID_SIZE];
	struct shard *s;
	char hex[33], w[128], label[PROTO_LABEL_MAX + 1];
	int ret;

	if (proto_get_id(cur, id))
		return bad_request(d, c, cur);
	proto_id_hex(id, hex);
	s = ks_find(&d->ks, id);
	if (!s)
		return refuse_key(d, c, hex, -ENOKEY, "unknown shard");
	if (s->state != PROTO_SHARD_ACTIVE)
		return refuse_key(d, c, hex, -EKEYREVOKED, "revoked");
	if (policy_check(&d->pol, s, &c->peer))
		return refuse_key(d, c, hex, -EACCES, "not granted");
	/* The kernel module has the key, not orthod: ask /dev/ortho. */
	if (s->in_kernel)
		return refuse_key(d, c, hex, -EREMOTE,
				  "held by the kernel module: fetch it from /dev/ortho");
	ret = reg_key_out(c, id);
	who(c, w, sizeof(w));
	audit_val(s->label, label, sizeof(label));
	/* The record is on disk before the key leaves; no record, no key. */
	if (!ret)
		ret = audit_log(&d->audit, "key-out", "shard=%s label=%s %s",
				hex, label, w);
	if (ret) {
		drop_keyref(c, id);
		return conn_error(d, c, c->h.req_id, ret,
				  "shard %s: cannot record the hand-out", hex);
	}
	return send_key(d, c, s);
}

static int do_hold(struct orthod *d, struct conn *c, struct pcur *cur)
{
	struct proto_hold h;
	struct shard *s;
	int ret;

	if (proto_get_hold(cur, &h))
		return bad_request(d, c, cur);
	ret = reg_hold(c, &h);
	if (ret)
		return conn_error(d, c, c->h.req_id, ret, "too many records");
	ret = conn_ok(d, c, c->h.req_id);
	s = ks_find(&d->ks, h.id);
	/* A holder of a revoked shard (say, from before a restart) is told. */
	if (!ret && s && s->state != PROTO_SHARD_ACTIVE)
		ret = revoke_notify_late(d, c, s);
	return ret;
}

static int do_release(struct orthod *d, struct conn *c, struct pcur *cur)
{
	struct proto_release r;

	if (proto_get_release(cur, &r))
		return bad_request(d, c, cur);
	reg_release(c, &r);
	return conn_ok(d, c, c->h.req_id);
}

static int do_ack(struct orthod *d, struct conn *c, struct pcur *cur)
{
	struct proto_ack a;

	if (proto_get_ack(cur, &a))
		return bad_request(d, c, cur);
	revoke_ack(d, c, &a);
	return 0;
}

int client_request(struct orthod *d, struct conn *c)
{
	struct pcur cur;

	pcur_init(&cur, c->payload, c->h.length);
	switch (c->h.type) {
	case PROTO_HELLO:
		return do_hello(d, c, &cur);
	case PROTO_GET_KEY:
		return do_get_key(d, c, &cur);
	case PROTO_HOLD:
		return do_hold(d, c, &cur);
	case PROTO_RELEASE:
		return do_release(d, c, &cur);
	case PROTO_ACK:
		return do_ack(d, c, &cur);
	default:
		return admin_request(d, c);
	}
}
