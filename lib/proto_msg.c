// SPDX-License-Identifier: MIT
/*
 * The orthod wire protocol: the encoders and decoders of list elements and
 * of every message with a fixed body (proto.h). A decoder checks each field
 * against its range and class, and that nothing follows the last one.
 */
#include <errno.h>
#include <string.h>

#include "proto.h"

/* ---- elements ---- */

void proto_put_sel(struct pbuf *b, const struct proto_sel *s)
{
	pbuf_u8(b, s->kind);
	if (s->kind == PROTO_SEL_ID)
		pbuf_bytes(b, s->id, PROTO_ID_SIZE);
	else
		pbuf_str(b, s->label);
}

void proto_get_sel(struct pcur *c, struct proto_sel *s)
{
	memset(s, 0, sizeof(*s));
	s->kind = pcur_u8(c, "selector kind");
	if (c->err)
		return;
	if (s->kind == PROTO_SEL_ID)
		pcur_bytes(c, s->id, PROTO_ID_SIZE, "selector id");
	else if (s->kind == PROTO_SEL_LABEL)
		pcur_str(c, s->label, sizeof(s->label), PSTR_LABEL,
			 "selector label");
	else
		pcur_fail(c, -EBADMSG, "selector kind: unknown");
}

void proto_put_rule(struct pbuf *b, const struct proto_rule *r)
{
	proto_put_sel(b, &r->sel);
	pbuf_u8(b, r->principal);
	pbuf_u8(b, r->allow);
	pbuf_u32(b, r->who);
}

void proto_get_rule(struct pcur *c, struct proto_rule *r)
{
	proto_get_sel(c, &r->sel);
	r->principal = pcur_u8(c, "principal");
	r->allow = pcur_u8(c, "allow");
	r->who = pcur_u32(c, "uid/gid");
	if (r->principal != PROTO_UID && r->principal != PROTO_GID)
		pcur_fail(c, -EBADMSG, "principal: not uid or gid");
	if (r->allow > 1)
		pcur_fail(c, -EBADMSG, "allow: not 0 or 1");
	if (r->who == UINT32_MAX)
		pcur_fail(c, -EBADMSG, "uid/gid: -1 is not an id");
}

void proto_put_key(struct pbuf *b, const struct proto_key *k)
{
	pbuf_bytes(b, k->id, PROTO_ID_SIZE);
	pbuf_bytes(b, k->key, PROTO_KEY_SIZE);
	pbuf_u32(b, k->layer);
	pbuf_str(b, k->label);
}

void proto_get_key(struct pcur *c, struct proto_key *k)
{
	pcur_bytes(c, k->id, PROTO_ID_SIZE, "shard id");
	pcur_bytes(c, k->key, PROTO_KEY_SIZE, "key");
	k->layer = pcur_u32(c, "layer");
	pcur_str(c, k->label, sizeof(k->label), PSTR_LABEL, "label");
}

static int state_ok(uint8_t s)
{
	return s >= PROTO_SHARD_ACTIVE && s <= PROTO_SHARD_REVOKED;
}

void proto_put_shard(struct pbuf *b, const struct proto_shard_rec *s)
{
	pbuf_bytes(b, s->id, PROTO_ID_SIZE);
	pbuf_str(b, s->label);
	pbuf_u32(b, s->layer);
	pbuf_u8(b, s->state);
	pbuf_u32(b, s->holders);
	pbuf_u64(b, s->imported_ns);
	pbuf_u64(b, s->revoked_ns);
}

void proto_get_shard(struct pcur *c, struct proto_shard_rec *s)
{
	pcur_bytes(c, s->id, PROTO_ID_SIZE, "shard id");
	pcur_str(c, s->label, sizeof(s->label), PSTR_LABEL, "shard label");
	s->layer = pcur_u32(c, "shard layer");
	s->state = pcur_u8(c, "shard state");
	s->holders = pcur_u32(c, "shard holders");
	s->imported_ns = pcur_u64(c, "shard imported");
	s->revoked_ns = pcur_u64(c, "shard revoked");
	if (!c->err && !state_ok(s->state))
		pcur_fail(c, -EBADMSG, "shard state: unknown");
}

void proto_put_client(struct pbuf *b, const struct proto_client_rec *r)
{
	pbuf_u32(b, r->pid);
	pbuf_u32(b, r->uid);
	pbuf_u32(b, r->gid);
	pbuf_str(b, r->comm);
	pbuf_u64(b, r->connected_ns);
	pbuf_u32(b, r->keys);
	pbuf_u32(b, r->nres);
}

void proto_get_client(struct pcur *c, struct proto_client_rec *r)
{
	r->pid = pcur_u32(c, "client pid");
	r->uid = pcur_u32(c, "client uid");
	r->gid = pcur_u32(c, "client gid");
	pcur_str(c, r->comm, sizeof(r->comm), PSTR_COMM, "client comm");
	r->connected_ns = pcur_u64(c, "client connected");
	r->keys = pcur_u32(c, "client keys");
	r->nres = pcur_count(c, PROTO_LIST_MAX, PROTO_RES_MIN,
			     "client resident count");
}

void proto_put_res(struct pbuf *b, const struct proto_res_rec *r)
{
	pbuf_bytes(b, r->id, PROTO_ID_SIZE);
	pbuf_str(b, r->label);
	pbuf_str(b, r->device);
	pbuf_u64(b, r->bytes);
	pbuf_u64(b, r->since_ns);
}

void proto_get_res(struct pcur *c, struct proto_res_rec *r)
{
	pcur_bytes(c, r->id, PROTO_ID_SIZE, "resident shard");
	/* The label is empty for a shard the daemon does not know. */
	pcur_str(c, r->label, sizeof(r->label), PSTR_LABEL_OPT,
		 "resident label");
	pcur_str(c, r->device, sizeof(r->device), PSTR_DEVICE,
		 "resident device");
	r->bytes = pcur_u64(c, "resident bytes");
	r->since_ns = pcur_u64(c, "resident since");
	if (!c->err && !r->device[0])
		pcur_fail(c, -EBADMSG, "resident device: empty");
}

void proto_put_holder(struct pbuf *b, const struct proto_holder_rec *h)
{
	pbuf_bytes(b, h->id, PROTO_ID_SIZE);
	pbuf_u32(b, h->pid);
	pbuf_u32(b, h->uid);
	pbuf_str(b, h->comm);
	pbuf_u8(b, h->outcome);
	pbuf_u32(b, (uint32_t)h->err);
	pbuf_u64(b, h->ack_us);
}

void proto_get_holder(struct pcur *c, struct proto_holder_rec *h)
{
	pcur_bytes(c, h->id, PROTO_ID_SIZE, "holder shard");
	h->pid = pcur_u32(c, "holder pid");
	h->uid = pcur_u32(c, "holder uid");
	pcur_str(c, h->comm, sizeof(h->comm), PSTR_COMM, "holder comm");
	h->outcome = pcur_u8(c, "holder outcome");
	h->err = (int32_t)pcur_u32(c, "holder error");
	h->ack_us = pcur_u64(c, "holder ack time");
	if (!c->err && (h->outcome < PROTO_COMPLETE || h->outcome > PROTO_GONE))
		pcur_fail(c, -EBADMSG, "holder outcome: unknown");
	if (!c->err && h->err > 0)
		pcur_fail(c, -EBADMSG, "holder error: not a negative errno");
}

/* ---- whole messages ---- */

void proto_put_error(struct pbuf *b, const struct proto_error *e)
{
	pbuf_u32(b, (uint32_t)e->err);
	pbuf_str(b, e->msg);
}

int proto_get_error(struct pcur *c, struct proto_error *e)
{
	e->err = (int32_t)pcur_u32(c, "error");
	pcur_str(c, e->msg, sizeof(e->msg), PSTR_TEXT, "error message");
	if (!c->err && (e->err >= 0 || e->err < -4095))
		pcur_fail(c, -EBADMSG, "error: not a negative errno");
	return pcur_end(c);
}

void proto_put_hello_ok(struct pbuf *b, const struct proto_hello_ok *h)
{
	pbuf_u16(b, h->version);
	pbuf_u32(b, h->pid);
	pbuf_u32(b, h->uid);
	pbuf_u32(b, h->gid);
	pbuf_u8(b, h->admin);
}

int proto_get_hello_ok(struct pcur *c, struct proto_hello_ok *h)
{
	h->version = pcur_u16(c, "version");
	h->pid = pcur_u32(c, "daemon pid");
	h->uid = pcur_u32(c, "uid");
	h->gid = pcur_u32(c, "gid");
	h->admin = pcur_u8(c, "admin");
	if (!c->err && h->admin > 1)
		pcur_fail(c, -EBADMSG, "admin: not 0 or 1");
	return pcur_end(c);
}

void proto_put_id(struct pbuf *b, const uint8_t id[PROTO_ID_SIZE])
{
	pbuf_bytes(b, id, PROTO_ID_SIZE);
}

int proto_get_id(struct pcur *c, uint8_t id[PROTO_ID_SIZE])
{
	pcur_bytes(c, id, PROTO_ID_SIZE, "shard id");
	return pcur_end(c);
}

void proto_put_hold(struct pbuf *b, const struct proto_hold *h)
{
	pbuf_bytes(b, h->id, PROTO_ID_SIZE);
	pbuf_str(b, h->device);
	pbuf_u64(b, h->bytes);
	pbuf_u64(b, h->since_ns);
}

int proto_get_hold(struct pcur *c, struct proto_hold *h)
{
	pcur_bytes(c, h->id, PROTO_ID_SIZE, "shard id");
	pcur_str(c, h->device, sizeof(h->device), PSTR_DEVICE, "device");
	h->bytes = pcur_u64(c, "bytes");
	h->since_ns = pcur_u64(c, "since");
	if (!c->err && !h->device[0])
		pcur_fail(c, -EBADMSG, "device: empty");
	return pcur_end(c);
}

void proto_put_release(struct pbuf *b, const struct proto_release *r)
{
	pbuf_bytes(b, r->id, PROTO_ID_SIZE);
	pbuf_str(b, r->device);
	pbuf_u32(b, r->flags);
}

int proto_get_release(struct pcur *c, struct proto_release *r)
{
	pcur_bytes(c, r->id, PROTO_ID_SIZE, "shard id");
	pcur_str(c, r->device, sizeof(r->device), PSTR_DEVICE, "device");
	r->flags = pcur_u32(c, "flags");
	if (!c->err && (r->flags & ~PROTO_RELEASE_KEY))
		pcur_fail(c, -EBADMSG, "flags: unknown bits");
	return pcur_end(c);
}

void proto_put_notice(struct pbuf *b, const struct proto_notice *n)
{
	pbuf_bytes(b, n->id, PROTO_ID_SIZE);
	pbuf_u64(b, n->revoke_id);
	pbuf_u32(b, n->deadline_ms);
}

int proto_get_notice(struct pcur *c, struct proto_notice *n)
{
	pcur_bytes(c, n->id, PROTO_ID_SIZE, "shard id");
	n->revoke_id = pcur_u64(c, "revoke id");
	n->deadline_ms = pcur_u32(c, "deadline");
	if (!c->err && !n->revoke_id)
		pcur_fail(c, -EBADMSG, "revoke id: zero");
	return pcur_end(c);
}

void proto_put_ack(struct pbuf *b, const struct proto_ack *a)
{
	pbuf_bytes(b, a->id, PROTO_ID_SIZE);
	pbuf_u64(b, a->revoke_id);
	pbuf_u32(b, (uint32_t)a->status);
}

int proto_get_ack(struct pcur *c, struct proto_ack *a)
{
	pcur_bytes(c, a->id, PROTO_ID_SIZE, "shard id");
	a->revoke_id = pcur_u64(c, "revoke id");
	a->status = (int32_t)pcur_u32(c, "status");
	if (!c->err && (a->status > 0 || a->status < -4095))
		pcur_fail(c, -EBADMSG, "status: not 0 or a negative errno");
	if (!c->err && !a->revoke_id)
		pcur_fail(c, -EBADMSG, "revoke id: zero");
	return pcur_end(c);
}

void proto_put_revoke_req(struct pbuf *b, const struct proto_revoke_req *r)
{
	proto_put_sel(b, &r->sel);
	pbuf_u32(b, r->timeout_ms);
}

int proto_get_revoke_req(struct pcur *c, struct proto_revoke_req *r)
{
	proto_get_sel(c, &r->sel);
	r->timeout_ms = pcur_u32(c, "timeout");
	if (!c->err && (!r->timeout_ms || r->timeout_ms > PROTO_TIMEOUT_MAX))
		pcur_fail(c, -EBADMSG, "timeout: out of range");
	return pcur_end(c);
}

void proto_put_import_ok(struct pbuf *b, const struct proto_import_ok *r)
{
	pbuf_u32(b, r->added);
	pbuf_u32(b, r->present);
}

int proto_get_import_ok(struct pcur *c, struct proto_import_ok *r)
{
	r->added = pcur_u32(c, "added");
	r->present = pcur_u32(c, "present");
	if (!c->err && (r->added > PROTO_IMPORT_MAX ||
			r->present > PROTO_IMPORT_MAX))
		pcur_fail(c, -EBADMSG, "import counts: out of range");
	return pcur_end(c);
}

void proto_put_status_info(struct pbuf *b, const struct proto_status_info *s)
{
	pbuf_u32(b, s->pid);
	pbuf_u64(b, s->start_ns);
	pbuf_u64(b, s->now_ns);
	pbuf_u32(b, s->conns);
	pbuf_u8(b, s->truncated);
}

void proto_get_status_info(struct pcur *c, struct proto_status_info *s)
{
	s->pid = pcur_u32(c, "daemon pid");
	s->start_ns = pcur_u64(c, "start time");
	s->now_ns = pcur_u64(c, "time");
	s->conns = pcur_u32(c, "connections");
	s->truncated = pcur_u8(c, "truncated");
	if (!c->err && s->truncated > 1)
		pcur_fail(c, -EBADMSG, "truncated: not 0 or 1");
}

void proto_put_revoke_info(struct pbuf *b, const struct proto_revoke_info *r)
{
	pbuf_u64(b, r->revoke_id);
	pbuf_u64(b, r->elapsed_us);
	pbuf_u32(b, r->nshards);
}

void proto_get_revoke_info(struct pcur *c, struct proto_revoke_info *r)
{
	r->revoke_id = pcur_u64(c, "revoke id");
	r->elapsed_us = pcur_u64(c, "elapsed");
	r->nshards = pcur_count(c, PROTO_LIST_MAX, PROTO_SHARD_MIN,
				"shard count");
}

void proto_put_audit_req(struct pbuf *b, const struct proto_audit_req *r)
{
	pbuf_u64(b, r->from_seq);
	pbuf_u32(b, r->max);
}

int proto_get_audit_req(struct pcur *c, struct proto_audit_req *r)
{
	r->from_seq = pcur_u64(c, "from");
	r->max = pcur_u32(c, "max");
	if (!c->err && (!r->max || r->max > PROTO_LIST_MAX))
		pcur_fail(c, -EBADMSG, "max: out of range");
	return pcur_end(c);
}

void proto_put_audit_hdr(struct pbuf *b, const struct proto_audit_hdr *h)
{
	pbuf_u64(b, h->next_seq);
	pbuf_u8(b, h->more);
}

void proto_get_audit_hdr(struct pcur *c, struct proto_audit_hdr *h)
{
	h->next_seq = pcur_u64(c, "next record");
	h->more = pcur_u8(c, "more");
	if (!c->err && h->more > 1)
		pcur_fail(c, -EBADMSG, "more: not 0 or 1");
}

void proto_put_verify(struct pbuf *b, const struct proto_verify *v)
{
	pbuf_u8(b, v->ok);
	pbuf_u64(b, v->records);
	pbuf_u64(b, v->bad_seq);
	pbuf_str(b, v->reason);
}

int proto_get_verify(struct pcur *c, struct proto_verify *v)
{
	v->ok = pcur_u8(c, "ok");
	v->records = pcur_u64(c, "records");
	v->bad_seq = pcur_u64(c, "bad record");
	pcur_str(c, v->reason, sizeof(v->reason), PSTR_TEXT, "reason");
	if (!c->err && v->ok > 1)
		pcur_fail(c, -EBADMSG, "ok: not 0 or 1");
	return pcur_end(c);
}
