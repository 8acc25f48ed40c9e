// SPDX-License-Identifier: MIT
/*
 * Admin requests: IMPORT, GRANT, DENY, REVOKE, STATUS, AUDIT_READ and
 * AUDIT_VERIFY. orthod-conn.c lets only root or the admin group get here.
 * Every change is durable before it is answered, and audited: a change
 * whose audit record cannot be written is refused (a grant or deny is
 * recorded before it is made; an import is taken back) and the admin is
 * told why. A revocation goes on without its record (orthod-revoke.c).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "orthod.h"
#include "secmem.h"

/* Leave room under the message limit for the last element written. */
#define STATUS_BUDGET (PROTO_MAX_MSG - 4096u)

static int bad_request(struct orthod *d, struct conn *c, struct pcur *cur)
{
	conn_error(d, c, c->h.req_id, -EBADMSG, "%s: %s",
		   proto_type_name(c->h.type), cur->why ? cur->why : "malformed");
	return -EBADMSG;
}

static void by(const struct conn *c, char *out, size_t cap)
{
	char comm[PROTO_COMM_MAX + 1];

	audit_val(c->peer.comm, comm, sizeof(comm));
	snprintf(out, cap, "by_uid=%u by_pid=%d by_comm=%s", c->peer.uid,
		 (int)c->peer.pid, comm);
}

/* The import records, one per shard added at @from... Return: 0 or -errno,
 * with *@written the records on disk. */
static int audit_imported(struct orthod *d, struct conn *c, size_t from,
			  size_t *written)
{
	char who[96], hex[33], label[PROTO_LABEL_MAX + 1];
	size_t i;
	int ret;

	by(c, who, sizeof(who));
	*written = 0;
	for (i = from; i < d->ks.n; i++) {
		const struct shard *s = &d->ks.v[i];

		proto_id_hex(s->id, hex);
		audit_val(s->label, label, sizeof(label));
		ret = audit_log(&d->audit, "import",
				"shard=%s label=%s layer=%u held_by=%s %s", hex,
				label, s->layer,
				s->state != PROTO_SHARD_ACTIVE ? "none" :
				s->in_kernel ? "kernel" : "orthod", who);
		if (ret)
			return ret;
		(*written)++;
	}
	return 0;
}

/*
 * Take back the shards added at @from.. (their audit records could not be
 * written): out of the table and, durably, out of the keystore file.
 * Not with the kernel module: it cannot give a key back, and writing the
 * keystore reads the keys it holds back from a file that must match the
 * table. Return: 0 or -errno (then the import stands).
 */
static int import_undo(struct orthod *d, size_t from)
{
	size_t n = d->ks.n;
	int ret;

	if (orthod_kmod_active(&d->km))
		return -EREMOTE;
	d->ks.n = from;
	ret = ks_sync(&d->ks);
	if (ret) {
		d->ks.n = n;
		return ret;
	}
	explicit_bzero(d->ks.v + from, (n - from) * sizeof(*d->ks.v));
	return 0;
}

static int import_unaudited(struct orthod *d, struct conn *c, size_t from,
			    size_t written, int err)
{
	size_t n = d->ks.n - from;
	int ret;

	ret = import_undo(d, from);
	if (!ret) {
		/* Best effort: the records before the failed one overclaim. */
		if (written)
			audit_log(&d->audit, "import-undone",
				  "shards=%zu recorded=%zu error=%d", n,
				  written, err);
		dlog(LOG_ERR, "import of %zu keys refused: the audit log could not be written: %s",
		     n, strerror(-err));
		return conn_error(d, c, c->h.req_id, err,
				  "import: nothing imported: the audit log could not be written (%s)",
				  strerror(-err));
	}
	dlog(LOG_ERR, "import of %zu keys: not audited (%s) and not taken back (%s)",
	     n, strerror(-err), strerror(-ret));
	return conn_error(d, c, c->h.req_id, err,
			  "import: the %zu keys are imported, but the audit log could not be written (%s) and the import could not be taken back (%s)",
			  n, strerror(-err),
			  ret == -EREMOTE ? "the kernel module has them" :
			  strerror(-ret));
}

static int do_import(struct orthod *d, struct conn *c, struct pcur *cur)
{
	struct proto_import_ok ok = { 0 };
	struct proto_key *keys;
	size_t size, from = d->ks.n, written;
	const char *why = NULL;
	uint8_t buf[PROTO_HDR_SIZE + 8];
	struct pbuf b;
	uint32_t n, i;
	int ret;

	n = pcur_count(cur, PROTO_IMPORT_MAX, PROTO_KEY_MIN, "key count");
	if (cur->err || !n) {
		pcur_fail(cur, -EBADMSG, "key count: zero");
		return bad_request(d, c, cur);
	}
	size = n * sizeof(*keys);
	keys = secmem_alloc(size);
	if (!keys)
		return conn_error(d, c, c->h.req_id, -ENOMEM, "out of memory");
	for (i = 0; i < n; i++)
		proto_get_key(cur, &keys[i]);
	if (pcur_end(cur)) {
		secmem_free(keys, size);
		return bad_request(d, c, cur);
	}
	ret = ks_import(&d->ks, keys, n, &ok.added, &ok.present, &why);
	secmem_free(keys, size);
	if (ret)
		return conn_error(d, c, c->h.req_id, ret, "import: %s",
				  why ? why : strerror(-ret));
	/* With the module, the new keys go to the kernel and leave memory. */
	kernel_import(d, from);
	ret = audit_imported(d, c, from, &written);
	if (ret)
		return import_unaudited(d, c, from, written, ret);
	pbuf_init(&b, buf, sizeof(buf), 0);
	proto_begin(&b, PROTO_IMPORT_OK, c->h.req_id);
	proto_put_import_ok(&b, &ok);
	return conn_send_pbuf(d, c, &b);
}

/* The shards whose kernel policy @r is to replace (kernel_rule_apply()). */
static size_t kernel_rule_count(struct orthod *d, const struct proto_rule *r)
{
	size_t i, n = 0;

	if (!orthod_kmod_active(&d->km))
		return 0;
	for (i = 0; i < d->ks.n; i++)
		n += d->ks.v[i].in_kernel &&
		     d->ks.v[i].state == PROTO_SHARD_ACTIVE &&
		     sel_match(&r->sel, &d->ks.v[i]);
	return n;
}

/*
 * GRANT and DENY: recorded first, then made; no record, no change. A
 * policy that could not be written after its record is recorded as
 * failed (grant-failed, deny-failed).
 */
static int do_rule(struct orthod *d, struct conn *c, struct pcur *cur)
{
	struct proto_rule r;
	char who[96], what[PROTO_LABEL_MAX + 8], hex[33];
	const char *ev;
	int ret;

	proto_get_rule(cur, &r);
	if (pcur_end(cur))
		return bad_request(d, c, cur);
	r.allow = c->h.type == PROTO_GRANT;
	ev = r.allow ? "grant" : "deny";
	/* Refused whole when the kernel could not enforce it. */
	if (kernel_rule_check(d, &r, hex))
		return conn_error(d, c, c->h.req_id, -E2BIG,
				  "the kernel module holds the key of shard %s and takes at most %u uids, gids, denied uids and denied gids each: the rule is not added",
				  hex, ORTHOD_KMOD_POLICY_MAX);
	if (r.sel.kind == PROTO_SEL_ID) {
		proto_id_hex(r.sel.id, hex);
		snprintf(what, sizeof(what), "id=%s", hex);
	} else {
		snprintf(what, sizeof(what), "label=");
		audit_val(r.sel.label, what + 6, sizeof(what) - 6);
	}
	by(c, who, sizeof(who));
	ret = audit_log(&d->audit, ev, "%s=%u %s kernel_shards=%zu %s",
			r.principal == PROTO_UID ? "uid" : "gid", r.who, what,
			kernel_rule_count(d, &r), who);
	if (ret)
		return conn_error(d, c, c->h.req_id, ret,
				  "%s: not done: the audit log could not be written (%s)",
				  ev, strerror(-ret));
	ret = policy_set(&d->pol, &r);
	if (ret) {
		audit_log(&d->audit, r.allow ? "grant-failed" : "deny-failed",
			  "%s=%u %s error=%d",
			  r.principal == PROTO_UID ? "uid" : "gid", r.who,
			  what, ret);
		return conn_error(d, c, c->h.req_id, ret,
				  "the policy could not be written");
	}
	kernel_rule_apply(d, &r);
	return conn_ok(d, c, c->h.req_id);
}

static int do_revoke(struct orthod *d, struct conn *c, struct pcur *cur)
{
	struct proto_revoke_req r;

	if (proto_get_revoke_req(cur, &r))
		return bad_request(d, c, cur);
	return revoke_start(d, c, &r, c->h.req_id);
}

static void patch_u32(struct pbuf *b, size_t at, uint32_t v)
{
	int i;

	if (b->err || at + 4 > b->len)
		return;
	for (i = 0; i < 4; i++)
		b->p[at + i] = (uint8_t)(v >> (8 * i));
}

static uint32_t put_shards(struct orthod *d, struct pbuf *b, int *cut)
{
	uint32_t n = 0;
	size_t i;

	for (i = 0; i < d->ks.n && !*cut; i++, n++) {
		const struct shard *s = &d->ks.v[i];
		struct proto_shard_rec r = {
			.layer = s->layer, .state = s->state,
			.imported_ns = s->imported_ns,
			.revoked_ns = s->revoked_ns,
		};

		memcpy(r.id, s->id, PROTO_ID_SIZE);
		memcpy(r.label, s->label, sizeof(r.label));
		r.holders = revoke_holders(d, s);
		proto_put_shard(b, &r);
		*cut = b->len > STATUS_BUDGET;
	}
	return n;
}

static void put_client(struct orthod *d, struct pbuf *b, const struct conn *c)
{
	struct proto_client_rec r = {
		.pid = (uint32_t)c->peer.pid, .uid = c->peer.uid,
		.gid = c->peer.gid, .connected_ns = c->connected_ns,
		.keys = c->keys_out, .nres = (uint32_t)c->nholds,
	};
	size_t i;

	memcpy(r.comm, c->peer.comm, sizeof(r.comm));
	proto_put_client(b, &r);
	for (i = 0; i < c->nholds; i++) {
		const struct hold *h = &c->holds[i];
		const struct shard *s = ks_find(&d->ks, h->id);
		struct proto_res_rec x = { .bytes = h->bytes,
					   .since_ns = h->since_ns };

		memcpy(x.id, h->id, PROTO_ID_SIZE);
		memcpy(x.device, h->device, sizeof(x.device));
		if (s)
			memcpy(x.label, s->label, sizeof(x.label));
		proto_put_res(b, &x);
	}
}

static int do_status(struct orthod *d, struct conn *c, struct pcur *cur)
{
	struct proto_status_info info = {
		.pid = (uint32_t)getpid(), .start_ns = d->start_ns,
		.now_ns = now_real_ns(), .conns = d->nconns,
	};
	const struct conn *x;
	size_t at_info, at, i;
	uint32_t n;
	struct pbuf b;
	int cut = 0, ret;

	if (pcur_end(cur))
		return bad_request(d, c, cur);
	pbuf_init(&b, NULL, 0, 1);
	proto_begin(&b, PROTO_STATUS_RESULT, c->h.req_id);
	at_info = b.len;
	proto_put_status_info(&b, &info);
	at = b.len;
	pbuf_u32(&b, 0);
	patch_u32(&b, at, put_shards(d, &b, &cut));
	at = b.len;
	pbuf_u32(&b, 0);
	for (i = 0, n = 0; i < d->pol.n && !cut; i++, n++) {
		proto_put_rule(&b, &d->pol.v[i]);
		cut = b.len > STATUS_BUDGET;
	}
	patch_u32(&b, at, n);
	at = b.len;
	pbuf_u32(&b, 0);
	for (x = d->conns, n = 0; x && !cut; x = x->next, n++) {
		put_client(d, &b, x);
		cut = b.len > STATUS_BUDGET;
	}
	patch_u32(&b, at, n);
	if (cut && !b.err)
		b.p[at_info + 4 + 8 + 8 + 4] = 1;	/* ->truncated */
	ret = conn_send_pbuf(d, c, &b);
	pbuf_release(&b);
	return ret;
}

static int do_audit_read(struct orthod *d, struct conn *c, struct pcur *cur)
{
	struct proto_audit_req r;
	struct proto_audit_hdr h = { 0 };
	uint64_t next = 0;
	struct pbuf b, hb;
	size_t at;
	int more = 0, n, ret;

	if (proto_get_audit_req(cur, &r))
		return bad_request(d, c, cur);
	pbuf_init(&b, NULL, 0, 1);
	proto_begin(&b, PROTO_AUDIT_RECORDS, c->h.req_id);
	at = b.len;
	proto_put_audit_hdr(&b, &h);
	pbuf_u32(&b, 0);
	n = audit_read(&d->audit, r.from_seq, r.max, STATUS_BUDGET, &b, &next,
		       &more);
	if (n < 0) {
		pbuf_release(&b);
		return conn_error(d, c, c->h.req_id, n, "cannot read the log");
	}
	h.next_seq = next;
	h.more = (uint8_t)more;
	if (!b.err) {
		pbuf_init(&hb, b.p + at, 9, 0);
		proto_put_audit_hdr(&hb, &h);
	}
	patch_u32(&b, at + 9, (uint32_t)n);
	ret = conn_send_pbuf(d, c, &b);
	pbuf_release(&b);
	return ret;
}

static int do_audit_verify(struct orthod *d, struct conn *c, struct pcur *cur)
{
	uint8_t buf[PROTO_HDR_SIZE + 32 + PROTO_TEXT_MAX];
	struct proto_verify v;
	struct pbuf b;
	int ret;

	if (pcur_end(cur))
		return bad_request(d, c, cur);
	ret = audit_verify(&d->audit, &v);
	if (ret)
		return conn_error(d, c, c->h.req_id, ret, "cannot read the log");
	pbuf_init(&b, buf, sizeof(buf), 0);
	proto_begin(&b, PROTO_AUDIT_VERIFY_RESULT, c->h.req_id);
	proto_put_verify(&b, &v);
	return conn_send_pbuf(d, c, &b);
}

int admin_request(struct orthod *d, struct conn *c)
{
	struct pcur cur;

	/* orthod-conn.c checked this at the header; say it again here. */
	if (!c->peer.admin)
		return conn_error(d, c, c->h.req_id, -EPERM, "not an admin");
	pcur_init(&cur, c->payload, c->h.length);
	switch (c->h.type) {
	case PROTO_IMPORT:
		return do_import(d, c, &cur);
	case PROTO_GRANT:
	case PROTO_DENY:
		return do_rule(d, c, &cur);
	case PROTO_REVOKE:
		return do_revoke(d, c, &cur);
	case PROTO_STATUS:
		return do_status(d, c, &cur);
	case PROTO_AUDIT_READ:
		return do_audit_read(d, c, &cur);
	case PROTO_AUDIT_VERIFY:
		return do_audit_verify(d, c, &cur);
	default:
		return conn_error(d, c, c->h.req_id, -EBADRQC,
				  "%s: not handled", proto_type_name(c->h.type));
	}
}
