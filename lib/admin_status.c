// SPDX-License-Identifier: MIT
/*
 * The admin calls that return lists: the status snapshot and a
 * revocation's outcome. Each reply is decoded whole (every field checked,
 * see proto.h) into an object the getters read.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "admin_priv.h"
#include "log.h"

struct ortho_admin_status {
	struct proto_status_info info;
	struct proto_shard_rec *shards;
	uint32_t nshards;
	struct proto_rule *rules;
	uint32_t nrules;
	struct proto_client_rec *clients;
	uint32_t nclients;
	size_t *res_start;		/* per client, into res */
	struct proto_res_rec *res;
	size_t nres, cap_res;
};

struct ortho_admin_revoke {
	struct proto_revoke_info info;
	struct proto_shard_rec *shards;
	struct proto_holder_rec *holders;
	uint32_t nholders;
};

static void *alloc_list(struct pcur *c, uint32_t *n, size_t min, size_t elem,
			const char *field)
{
	void *p;

	*n = pcur_count(c, PROTO_LIST_MAX, min, field);
	if (c->err)
		return NULL;
	p = calloc(*n ? *n : 1, elem);
	if (!p)
		pcur_fail(c, -ENOMEM, "out of memory");
	return p;
}

static void get_residents(struct pcur *c, struct ortho_admin_status *st,
			  uint32_t n)
{
	uint32_t j;

	if (st->nres + n > st->cap_res) {
		size_t cap = st->cap_res ? st->cap_res : 16;
		void *p;

		while (cap < st->nres + n)
			cap *= 2;
		p = realloc(st->res, cap * sizeof(*st->res));
		if (!p) {
			pcur_fail(c, -ENOMEM, "out of memory");
			return;
		}
		st->res = p;
		st->cap_res = cap;
	}
	for (j = 0; j < n && !c->err; j++)
		proto_get_res(c, &st->res[st->nres++]);
}

static int decode_status(struct pcur *c, struct ortho_admin_status *st)
{
	uint32_t i;

	proto_get_status_info(c, &st->info);
	st->shards = alloc_list(c, &st->nshards, PROTO_SHARD_MIN,
				sizeof(*st->shards), "shard count");
	for (i = 0; i < st->nshards && !c->err; i++)
		proto_get_shard(c, &st->shards[i]);
	st->rules = alloc_list(c, &st->nrules, PROTO_RULE_MIN,
			       sizeof(*st->rules), "rule count");
	for (i = 0; i < st->nrules && !c->err; i++)
		proto_get_rule(c, &st->rules[i]);
	st->clients = alloc_list(c, &st->nclients, PROTO_CLIENT_MIN,
				 sizeof(*st->clients), "client count");
	if (!c->err) {
		st->res_start = calloc(st->nclients + 1, sizeof(size_t));
		if (!st->res_start)
			pcur_fail(c, -ENOMEM, "out of memory");
	}
	for (i = 0; i < st->nclients && !c->err; i++) {
		proto_get_client(c, &st->clients[i]);
		st->res_start[i] = st->nres;
		get_residents(c, st, st->clients[i].nres);
	}
	return pcur_end(c);
}

ORTHO_API void ortho_admin_status_free(struct ortho_admin_status *st)
{
	if (!st)
		return;
	free(st->shards);
	free(st->rules);
	free(st->clients);
	free(st->res_start);
	free(st->res);
	free(st);
}

ORTHO_API int ortho_admin_status_get(struct ortho_admin *a,
				     struct ortho_admin_status **out)
{
	struct ortho_admin_status *st;
	uint8_t buf[PROTO_HDR_SIZE];
	struct authority_reply r;
	struct pcur c;
	struct pbuf b;
	int ret;

	if (!a || !out)
		return -EINVAL;
	*out = NULL;
	pbuf_init(&b, buf, sizeof(buf), 0);
	proto_begin(&b, PROTO_STATUS, 0);
	ret = admin_call(a, &b, PROTO_STATUS_RESULT, AUTHORITY_TIMEOUT_MS, &r,
			 "status");
	if (ret)
		return ret;
	st = calloc(1, sizeof(*st));
	if (!st) {
		authority_reply_free(&r);
		return -ENOMEM;
	}
	pcur_init(&c, r.payload, r.h.length);
	ret = decode_status(&c, st);
	authority_reply_free(&r);
	if (ret) {
		olog_err(a->ctx, "status: bad reply: %s", c.why);
		ortho_admin_status_free(st);
		return ret == -ENOMEM ? ret : -EPROTO;
	}
	*out = st;
	return 0;
}

ORTHO_API int ortho_admin_status_daemon(const struct ortho_admin_status *st,
					struct ortho_admin_daemon *out)
{
	struct ortho_admin_daemon d = {
		.pid = st->info.pid, .protocol = PROTO_VERSION,
		.start_ns = st->info.start_ns, .now_ns = st->info.now_ns,
		.connections = st->info.conns, .truncated = st->info.truncated,
	};

	return admin_copy_out(out, &d, sizeof(d));
}

static void shard_out(const struct proto_shard_rec *s,
		      struct ortho_admin_shard *o)
{
	memset(o, 0, sizeof(*o));
	proto_id_hex(s->id, o->id);
	memcpy(o->label, s->label, sizeof(o->label));
	o->layer = s->layer;
	o->state = s->state;
	o->holders = s->holders;
	o->imported_ns = s->imported_ns;
	o->revoked_ns = s->revoked_ns;
}

ORTHO_API unsigned int
ortho_admin_status_shard_count(const struct ortho_admin_status *st)
{
	return st->nshards;
}

ORTHO_API int ortho_admin_status_shard(const struct ortho_admin_status *st,
				       unsigned int i,
				       struct ortho_admin_shard *out)
{
	struct ortho_admin_shard o;

	if (i >= st->nshards)
		return -ERANGE;
	shard_out(&st->shards[i], &o);
	return admin_copy_out(out, &o, sizeof(o));
}

ORTHO_API unsigned int
ortho_admin_status_rule_count(const struct ortho_admin_status *st)
{
	return st->nrules;
}

ORTHO_API int ortho_admin_status_rule(const struct ortho_admin_status *st,
				      unsigned int i,
				      struct ortho_admin_rule *out)
{
	const struct proto_rule *r;
	struct ortho_admin_rule o = { 0 };

	if (i >= st->nrules)
		return -ERANGE;
	r = &st->rules[i];
	if (r->sel.kind == PROTO_SEL_ID)
		proto_id_hex(r->sel.id, o.shard);
	else
		memcpy(o.label, r->sel.label, sizeof(o.label));
	o.principal = r->principal;
	o.id = r->who;
	o.allow = r->allow;
	return admin_copy_out(out, &o, sizeof(o));
}

ORTHO_API unsigned int
ortho_admin_status_client_count(const struct ortho_admin_status *st)
{
	return st->nclients;
}

ORTHO_API int ortho_admin_status_client(const struct ortho_admin_status *st,
					unsigned int i,
					struct ortho_admin_client *out)
{
	const struct proto_client_rec *c;
	struct ortho_admin_client o = { 0 };

	if (i >= st->nclients)
		return -ERANGE;
	c = &st->clients[i];
	o.pid = c->pid;
	o.uid = c->uid;
	o.gid = c->gid;
	memcpy(o.comm, c->comm, sizeof(o.comm));
	o.connected_ns = c->connected_ns;
	o.keys = c->keys;
	o.resident = c->nres;
	return admin_copy_out(out, &o, sizeof(o));
}

ORTHO_API int ortho_admin_status_resident(const struct ortho_admin_status *st,
					  unsigned int i, unsigned int j,
					  struct ortho_admin_resident *out)
{
	const struct proto_res_rec *x;
	struct ortho_admin_resident o = { 0 };

	if (i >= st->nclients || j >= st->clients[i].nres)
		return -ERANGE;
	x = &st->res[st->res_start[i] + j];
	proto_id_hex(x->id, o.shard);
	memcpy(o.label, x->label, sizeof(o.label));
	memcpy(o.device, x->device, sizeof(o.device));
	o.bytes = x->bytes;
	o.since_ns = x->since_ns;
	return admin_copy_out(out, &o, sizeof(o));
}

/* ---- revocation ---- */

static int decode_revoke(struct pcur *c, struct ortho_admin_revoke *r)
{
	uint32_t i;

	proto_get_revoke_info(c, &r->info);
	r->shards = calloc(r->info.nshards ? r->info.nshards : 1,
			   sizeof(*r->shards));
	if (!r->shards)
		pcur_fail(c, -ENOMEM, "out of memory");
	for (i = 0; i < r->info.nshards && !c->err; i++)
		proto_get_shard(c, &r->shards[i]);
	r->holders = alloc_list(c, &r->nholders, PROTO_HOLDER_MIN,
				sizeof(*r->holders), "holder count");
	for (i = 0; i < r->nholders && !c->err; i++)
		proto_get_holder(c, &r->holders[i]);
	return pcur_end(c);
}

static int revoke_request(struct ortho_admin *a,
			  const struct ortho_admin_revoke_opts *opts,
			  struct proto_revoke_req *q)
{
	memset(q, 0, sizeof(*q));
	if (!opts || opts->sz < sizeof(*opts) || !opts->shard == !opts->label) {
		olog_err(a->ctx, "revoke: name a shard or a label (one of them)");
		return -EINVAL;
	}
	q->timeout_ms = opts->timeout_ms ? opts->timeout_ms : 5000;
	if (q->timeout_ms > PROTO_TIMEOUT_MAX) {
		olog_err(a->ctx, "revoke: timeout over %u ms", PROTO_TIMEOUT_MAX);
		return -EINVAL;
	}
	if (opts->shard) {
		q->sel.kind = PROTO_SEL_ID;
		if (!proto_id_parse(opts->shard, q->sel.id))
			return 0;
		olog_err(a->ctx, "revoke: shard \"%.40s\" is not 32 hex digits",
			 opts->shard);
		return -EINVAL;
	}
	q->sel.kind = PROTO_SEL_LABEL;
	if (!proto_str_valid(opts->label, PSTR_LABEL)) {
		olog_err(a->ctx, "revoke: label not 1 to %u printable characters without blanks",
			 PROTO_LABEL_MAX);
		return -EINVAL;
	}
	strcpy(q->sel.label, opts->label);
	return 0;
}

ORTHO_API int ortho_admin_revoke(struct ortho_admin *a,
				 const struct ortho_admin_revoke_opts *opts,
				 struct ortho_admin_revoke **out)
{
	struct ortho_admin_revoke *rv;
	struct proto_revoke_req q;
	uint8_t buf[PROTO_HDR_SIZE + 96];
	struct authority_reply r;
	struct pcur c;
	struct pbuf b;
	int ret;

	if (!a || !out)
		return -EINVAL;
	*out = NULL;
	ret = revoke_request(a, opts, &q);
	if (ret)
		return ret;
	pbuf_init(&b, buf, sizeof(buf), 0);
	proto_begin(&b, PROTO_REVOKE, 0);
	proto_put_revoke_req(&b, &q);
	/* The daemon answers by the deadline; allow for the durable writes. */
	ret = admin_call(a, &b, PROTO_REVOKE_RESULT,
			 (int)q.timeout_ms + AUTHORITY_TIMEOUT_MS, &r, "revoke");
	if (ret)
		return ret;
	rv = calloc(1, sizeof(*rv));
	if (!rv) {
		authority_reply_free(&r);
		return -ENOMEM;
	}
	pcur_init(&c, r.payload, r.h.length);
	ret = decode_revoke(&c, rv);
	authority_reply_free(&r);
	if (ret) {
		olog_err(a->ctx, "revoke: bad reply: %s", c.why);
		ortho_admin_revoke_free(rv);
		return ret == -ENOMEM ? ret : -EPROTO;
	}
	*out = rv;
	return 0;
}

ORTHO_API void ortho_admin_revoke_free(struct ortho_admin_revoke *r)
{
	if (!r)
		return;
	free(r->shards);
	free(r->holders);
	free(r);
}

ORTHO_API int ortho_admin_revoke_info_get(const struct ortho_admin_revoke *r,
					  struct ortho_admin_revoke_info *out)
{
	struct ortho_admin_revoke_info o = {
		.revoke_id = r->info.revoke_id,
		.elapsed_us = r->info.elapsed_us,
		.shards = r->info.nshards,
		.holders = r->nholders,
	};
	uint32_t i;

	for (i = 0; i < r->nholders; i++) {
		o.complete += r->holders[i].outcome == PROTO_COMPLETE;
		o.busy += r->holders[i].outcome == PROTO_BUSY;
		o.gone += r->holders[i].outcome == PROTO_GONE;
	}
	return admin_copy_out(out, &o, sizeof(o));
}

ORTHO_API int ortho_admin_revoke_shard(const struct ortho_admin_revoke *r,
				       unsigned int i,
				       struct ortho_admin_shard *out)
{
	struct ortho_admin_shard o;

	if (i >= r->info.nshards)
		return -ERANGE;
	shard_out(&r->shards[i], &o);
	return admin_copy_out(out, &o, sizeof(o));
}

ORTHO_API int ortho_admin_revoke_holder(const struct ortho_admin_revoke *r,
					unsigned int i,
					struct ortho_admin_holder *out)
{
	const struct proto_holder_rec *h;
	struct ortho_admin_holder o = { 0 };
	uint32_t k;

	if (i >= r->nholders)
		return -ERANGE;
	h = &r->holders[i];
	proto_id_hex(h->id, o.shard);
	for (k = 0; k < r->info.nshards; k++)
		if (!memcmp(r->shards[k].id, h->id, PROTO_ID_SIZE))
			memcpy(o.label, r->shards[k].label, sizeof(o.label));
	o.pid = h->pid;
	o.uid = h->uid;
	memcpy(o.comm, h->comm, sizeof(o.comm));
	o.outcome = h->outcome;
	o.error = h->err;
	o.ack_us = h->ack_us;
	return admin_copy_out(out, &o, sizeof(o));
}
