// SPDX-License-Identifier: MIT
/*
 * The orthod wire protocol (lib/proto.h): every message round-trips, and
 * every malformed one is refused: a bad header field, a payload cut short
 * at any byte, a trailing byte, a string of the wrong class, an enum out of
 * range, a count larger than the bytes behind it. Random mutations of
 * valid messages either fail or decode to something that re-encodes to the
 * very same bytes (the encoding has no slack).
 */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "testutil.h"

#define BUF 4096

/* A whole message of @type: header and payload written by @fill. */
struct msg {
	uint8_t b[BUF];
	size_t len;
};

typedef void (*fill_fn)(struct pbuf *b);
/* Decode a payload; Return: 0 or -errno. Re-encodes into @out when given. */
typedef int (*parse_fn)(struct pcur *c, struct pbuf *out);

static void build(struct msg *m, uint16_t type, fill_fn fill)
{
	struct pbuf b;
	int n;

	pbuf_init(&b, m->b, sizeof(m->b), 0);
	proto_begin(&b, type, 0x0102030405060708ull);
	fill(&b);
	n = proto_end(&b);
	ck_assert_int_gt(n, 0);
	m->len = (size_t)n;
}

static const uint8_t ID[16] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13,
				14, 15, 16 };

/* ---- the messages, each as (fill, parse) ---- */

static void fill_error(struct pbuf *b)
{
	struct proto_error e = { .err = -EACCES };

	strcpy(e.msg, "shard 0102: not granted");
	proto_put_error(b, &e);
}

static int parse_error(struct pcur *c, struct pbuf *out)
{
	struct proto_error e;
	int ret = proto_get_error(c, &e);

	if (!ret && out)
		proto_put_error(out, &e);
	return ret;
}

static void fill_hello_ok(struct pbuf *b)
{
	struct proto_hello_ok h = { PROTO_VERSION, 42, 1000, 100, 1 };

	proto_put_hello_ok(b, &h);
}

static int parse_hello_ok(struct pcur *c, struct pbuf *out)
{
	struct proto_hello_ok h;
	int ret = proto_get_hello_ok(c, &h);

	if (!ret && out)
		proto_put_hello_ok(out, &h);
	return ret;
}

static void fill_key(struct pbuf *b)
{
	struct proto_key k = { .layer = 7 };

	memcpy(k.id, ID, 16);
	memset(k.key, 0xab, sizeof(k.key));
	strcpy(k.label, "tenant-a");
	proto_put_key(b, &k);
}

static int parse_key(struct pcur *c, struct pbuf *out)
{
	struct proto_key k;

	proto_get_key(c, &k);
	if (!pcur_end(c) && out)
		proto_put_key(out, &k);
	return c->err;
}

static void fill_hold(struct pbuf *b)
{
	struct proto_hold h = { .bytes = 1u << 20, .since_ns = 123456789 };

	memcpy(h.id, ID, 16);
	strcpy(h.device, "cuda:0");
	proto_put_hold(b, &h);
}

static int parse_hold(struct pcur *c, struct pbuf *out)
{
	struct proto_hold h;
	int ret = proto_get_hold(c, &h);

	if (!ret && out)
		proto_put_hold(out, &h);
	return ret;
}

static void fill_release(struct pbuf *b)
{
	struct proto_release r = { .flags = PROTO_RELEASE_KEY };

	memcpy(r.id, ID, 16);
	strcpy(r.device, "cpu");
	proto_put_release(b, &r);
}

static int parse_release(struct pcur *c, struct pbuf *out)
{
	struct proto_release r;
	int ret = proto_get_release(c, &r);

	if (!ret && out)
		proto_put_release(out, &r);
	return ret;
}

static void fill_notice(struct pbuf *b)
{
	struct proto_notice n = { .revoke_id = 9, .deadline_ms = 5000 };

	memcpy(n.id, ID, 16);
	proto_put_notice(b, &n);
}

static int parse_notice(struct pcur *c, struct pbuf *out)
{
	struct proto_notice n;
	int ret = proto_get_notice(c, &n);

	if (!ret && out)
		proto_put_notice(out, &n);
	return ret;
}

static void fill_ack(struct pbuf *b)
{
	struct proto_ack a = { .revoke_id = 9, .status = 0 };

	memcpy(a.id, ID, 16);
	proto_put_ack(b, &a);
}

static int parse_ack(struct pcur *c, struct pbuf *out)
{
	struct proto_ack a;
	int ret = proto_get_ack(c, &a);

	if (!ret && out)
		proto_put_ack(out, &a);
	return ret;
}

static void fill_revoke_label(struct pbuf *b)
{
	struct proto_revoke_req r = { .sel.kind = PROTO_SEL_LABEL,
				      .timeout_ms = 250 };

	strcpy(r.sel.label, "tenant-b");
	proto_put_revoke_req(b, &r);
}

static void fill_revoke_id(struct pbuf *b)
{
	struct proto_revoke_req r = { .sel.kind = PROTO_SEL_ID,
				      .timeout_ms = 600000 };

	memcpy(r.sel.id, ID, 16);
	proto_put_revoke_req(b, &r);
}

static int parse_revoke(struct pcur *c, struct pbuf *out)
{
	struct proto_revoke_req r;
	int ret = proto_get_revoke_req(c, &r);

	if (!ret && out)
		proto_put_revoke_req(out, &r);
	return ret;
}

static void fill_rule(struct pbuf *b)
{
	struct proto_rule r = { .sel.kind = PROTO_SEL_LABEL,
				.principal = PROTO_GID, .allow = 1,
				.who = 100 };

	strcpy(r.sel.label, "x");
	proto_put_rule(b, &r);
}

static int parse_rule(struct pcur *c, struct pbuf *out)
{
	struct proto_rule r;

	proto_get_rule(c, &r);
	if (!pcur_end(c) && out)
		proto_put_rule(out, &r);
	return c->err;
}

static void fill_import(struct pbuf *b)
{
	struct proto_key k = { .layer = 1 };
	int i;

	pbuf_u32(b, 3);
	for (i = 0; i < 3; i++) {
		memcpy(k.id, ID, 16);
		k.id[0] = (uint8_t)i;
		memset(k.key, i, sizeof(k.key));
		strcpy(k.label, i == 2 ? "b" : "a");
		proto_put_key(b, &k);
	}
}

static int parse_import(struct pcur *c, struct pbuf *out)
{
	struct proto_key k;
	uint32_t n = pcur_count(c, PROTO_IMPORT_MAX, PROTO_KEY_MIN, "count");
	uint32_t i;

	if (out)
		pbuf_u32(out, n);
	for (i = 0; i < n && !c->err; i++) {
		proto_get_key(c, &k);
		if (out)
			proto_put_key(out, &k);
	}
	return pcur_end(c);
}

static void fill_audit_req(struct pbuf *b)
{
	struct proto_audit_req r = { .from_seq = 17, .max = 100 };

	proto_put_audit_req(b, &r);
}

static int parse_audit_req(struct pcur *c, struct pbuf *out)
{
	struct proto_audit_req r;
	int ret = proto_get_audit_req(c, &r);

	if (!ret && out)
		proto_put_audit_req(out, &r);
	return ret;
}

static void fill_audit_records(struct pbuf *b)
{
	struct proto_audit_hdr h = { .next_seq = 3, .more = 1 };

	proto_put_audit_hdr(b, &h);
	pbuf_u32(b, 2);
	pbuf_str(b, "1 100 0000 start pid=1");
	pbuf_str(b, "2 200 abcd stop pid=1");
}

static int parse_audit_records(struct pcur *c, struct pbuf *out)
{
	struct proto_audit_hdr h;
	char line[PROTO_LINE_MAX + 1];
	uint32_t n, i;

	proto_get_audit_hdr(c, &h);
	n = pcur_count(c, PROTO_LIST_MAX, PROTO_LINE_MIN, "count");
	if (out) {
		proto_put_audit_hdr(out, &h);
		pbuf_u32(out, n);
	}
	for (i = 0; i < n && !c->err; i++) {
		pcur_str(c, line, sizeof(line), PSTR_LINE, "line");
		if (out)
			pbuf_str(out, line);
	}
	return pcur_end(c);
}

static void fill_verify(struct pbuf *b)
{
	struct proto_verify v = { .ok = 0, .records = 10, .bad_seq = 4 };

	strcpy(v.reason, "previous-record hash does not match");
	proto_put_verify(b, &v);
}

static int parse_verify(struct pcur *c, struct pbuf *out)
{
	struct proto_verify v;
	int ret = proto_get_verify(c, &v);

	if (!ret && out)
		proto_put_verify(out, &v);
	return ret;
}

static void fill_status(struct pbuf *b)
{
	struct proto_status_info s = { 1, 2, 3, 4, 0 };
	struct proto_shard_rec sh = { .layer = 1, .state = PROTO_SHARD_ACTIVE,
				      .holders = 2, .imported_ns = 5 };
	struct proto_rule r = { .sel.kind = PROTO_SEL_ID,
				.principal = PROTO_UID, .allow = 0, .who = 5 };
	struct proto_client_rec cl = { .pid = 9, .uid = 1000, .gid = 1000,
				       .connected_ns = 77, .keys = 1,
				       .nres = 2 };
	struct proto_res_rec res = { .bytes = 4096, .since_ns = 88 };

	memcpy(sh.id, ID, 16);
	strcpy(sh.label, "a");
	memcpy(r.sel.id, ID, 16);
	strcpy(cl.comm, "ortho-run");
	memcpy(res.id, ID, 16);
	strcpy(res.device, "cpu");
	proto_put_status_info(b, &s);
	pbuf_u32(b, 1);
	proto_put_shard(b, &sh);
	pbuf_u32(b, 1);
	proto_put_rule(b, &r);
	pbuf_u32(b, 1);
	proto_put_client(b, &cl);
	proto_put_res(b, &res);		/* label empty: an unknown shard */
	strcpy(res.label, "a");
	strcpy(res.device, "cuda:1");
	proto_put_res(b, &res);
}

static int parse_status(struct pcur *c, struct pbuf *out)
{
	struct proto_status_info s;
	struct proto_shard_rec sh;
	struct proto_client_rec cl;
	struct proto_res_rec res;
	struct proto_rule r;
	uint32_t n, i, j;

	proto_get_status_info(c, &s);
	if (out)
		proto_put_status_info(out, &s);
	n = pcur_count(c, PROTO_LIST_MAX, PROTO_SHARD_MIN, "shards");
	if (out)
		pbuf_u32(out, n);
	for (i = 0; i < n && !c->err; i++) {
		proto_get_shard(c, &sh);
		if (out)
			proto_put_shard(out, &sh);
	}
	n = pcur_count(c, PROTO_LIST_MAX, PROTO_RULE_MIN, "rules");
	if (out)
		pbuf_u32(out, n);
	for (i = 0; i < n && !c->err; i++) {
		proto_get_rule(c, &r);
		if (out)
			proto_put_rule(out, &r);
	}
	n = pcur_count(c, PROTO_LIST_MAX, PROTO_CLIENT_MIN, "clients");
	if (out)
		pbuf_u32(out, n);
	for (i = 0; i < n && !c->err; i++) {
		proto_get_client(c, &cl);
		if (out)
			proto_put_client(out, &cl);
		for (j = 0; j < cl.nres && !c->err; j++) {
			proto_get_res(c, &res);
			if (out)
				proto_put_res(out, &res);
		}
	}
	return pcur_end(c);
}

static void fill_revoke_result(struct pbuf *b)
{
	struct proto_revoke_info in = { .revoke_id = 3, .elapsed_us = 1500,
					.nshards = 1 };
	struct proto_shard_rec sh = { .layer = 1, .state = PROTO_SHARD_REVOKED,
				      .revoked_ns = 99 };
	struct proto_holder_rec h = { .pid = 7, .uid = 0,
				      .outcome = PROTO_BUSY, .err = -ENOTCONN };

	memcpy(sh.id, ID, 16);
	strcpy(sh.label, "a");
	memcpy(h.id, ID, 16);
	strcpy(h.comm, "stuck proc");
	proto_put_revoke_info(b, &in);
	proto_put_shard(b, &sh);
	pbuf_u32(b, 2);
	proto_put_holder(b, &h);
	h.outcome = PROTO_COMPLETE;
	h.err = 0;
	h.ack_us = 420;
	proto_put_holder(b, &h);
}

static int parse_revoke_result(struct pcur *c, struct pbuf *out)
{
	struct proto_revoke_info in;
	struct proto_shard_rec sh;
	struct proto_holder_rec h;
	uint32_t n, i;

	proto_get_revoke_info(c, &in);
	if (out)
		proto_put_revoke_info(out, &in);
	for (i = 0; i < in.nshards && !c->err; i++) {
		proto_get_shard(c, &sh);
		if (out)
			proto_put_shard(out, &sh);
	}
	n = pcur_count(c, PROTO_LIST_MAX, PROTO_HOLDER_MIN, "holders");
	if (out)
		pbuf_u32(out, n);
	for (i = 0; i < n && !c->err; i++) {
		proto_get_holder(c, &h);
		if (out)
			proto_put_holder(out, &h);
	}
	return pcur_end(c);
}

static void fill_id(struct pbuf *b)
{
	proto_put_id(b, ID);
}

static int parse_id(struct pcur *c, struct pbuf *out)
{
	uint8_t id[16];
	int ret = proto_get_id(c, id);

	if (!ret && out)
		proto_put_id(out, id);
	return ret;
}

static void fill_none(struct pbuf *b)
{
	(void)b;
}

static int parse_none(struct pcur *c, struct pbuf *out)
{
	(void)out;
	return pcur_end(c);
}

static const struct {
	uint16_t type;
	fill_fn fill;
	parse_fn parse;
} cases[] = {
	{ PROTO_GET_KEY, fill_id, parse_id },
	{ PROTO_HOLD, fill_hold, parse_hold },
	{ PROTO_RELEASE, fill_release, parse_release },
	{ PROTO_ACK, fill_ack, parse_ack },
	{ PROTO_IMPORT, fill_import, parse_import },
	{ PROTO_GRANT, fill_rule, parse_rule },
	{ PROTO_DENY, fill_rule, parse_rule },
	{ PROTO_REVOKE, fill_revoke_label, parse_revoke },
	{ PROTO_REVOKE, fill_revoke_id, parse_revoke },
	{ PROTO_STATUS, fill_none, parse_none },
	{ PROTO_AUDIT_READ, fill_audit_req, parse_audit_req },
	{ PROTO_AUDIT_VERIFY, fill_none, parse_none },
	{ PROTO_OK, fill_none, parse_none },
	{ PROTO_ERROR, fill_error, parse_error },
	{ PROTO_HELLO_OK, fill_hello_ok, parse_hello_ok },
	{ PROTO_KEY, fill_key, parse_key },
	{ PROTO_REVOKE_RESULT, fill_revoke_result, parse_revoke_result },
	{ PROTO_STATUS_RESULT, fill_status, parse_status },
	{ PROTO_AUDIT_RECORDS, fill_audit_records, parse_audit_records },
	{ PROTO_AUDIT_VERIFY_RESULT, fill_verify, parse_verify },
	{ PROTO_REVOKE_NOTICE, fill_notice, parse_notice },
};

#define NCASES (sizeof(cases) / sizeof(cases[0]))

/* Decode @m whole: header, then payload. Return: 0 or -errno. */
static int decode(const uint8_t *p, size_t len, parse_fn parse,
		  struct pbuf *out)
{
	struct proto_hdr h;
	const char *why;
	struct pcur c;
	int ret;

	if (len < PROTO_HDR_SIZE)
		return -EBADMSG;
	ret = proto_hdr_decode(p, &h, &why);
	if (ret)
		return ret;
	if (h.length != len - PROTO_HDR_SIZE)
		return -EBADMSG;
	if (out)
		proto_begin(out, h.type, h.req_id);
	pcur_init(&c, p + PROTO_HDR_SIZE, h.length);
	ret = parse(&c, out);
	if (ret && !c.why)
		ck_abort_msg("an error without a reason");
	return ret;
}

START_TEST(test_round_trip)
{
	size_t i;

	for (i = 0; i < NCASES; i++) {
		struct msg m, back;
		struct proto_hdr h;
		const char *why;
		struct pbuf out;

		build(&m, cases[i].type, cases[i].fill);
		ck_assert_int_eq(proto_hdr_decode(m.b, &h, &why), 0);
		ck_assert_uint_eq(h.magic, PROTO_MAGIC);
		ck_assert_uint_eq(h.version, PROTO_VERSION);
		ck_assert_uint_eq(h.type, cases[i].type);
		ck_assert_uint_eq(h.req_id, 0x0102030405060708ull);
		ck_assert_uint_eq(h.length, m.len - PROTO_HDR_SIZE);
		ck_assert_mem_eq(m.b, "ORTP", 4);
		pbuf_init(&out, back.b, sizeof(back.b), 0);
		ck_assert_msg(!decode(m.b, m.len, cases[i].parse, &out),
			      "%s does not decode", proto_type_name(cases[i].type));
		ck_assert_int_eq(proto_end(&out), (int)m.len);
		ck_assert_mem_eq(back.b, m.b, m.len);
	}
}
END_TEST

START_TEST(test_fields_survive)
{
	struct proto_hold h;
	struct proto_key k;
	struct pcur c;
	struct msg m;

	build(&m, PROTO_HOLD, fill_hold);
	pcur_init(&c, m.b + PROTO_HDR_SIZE, m.len - PROTO_HDR_SIZE);
	ck_assert_int_eq(proto_get_hold(&c, &h), 0);
	ck_assert_mem_eq(h.id, ID, 16);
	ck_assert_str_eq(h.device, "cuda:0");
	ck_assert_uint_eq(h.bytes, 1u << 20);
	ck_assert_uint_eq(h.since_ns, 123456789);

	build(&m, PROTO_KEY, fill_key);
	pcur_init(&c, m.b + PROTO_HDR_SIZE, m.len - PROTO_HDR_SIZE);
	proto_get_key(&c, &k);
	ck_assert_int_eq(pcur_end(&c), 0);
	ck_assert_str_eq(k.label, "tenant-a");
	ck_assert_uint_eq(k.layer, 7);
	ck_assert_uint_eq(k.key[31], 0xab);
}
END_TEST

/* Every prefix of every message fails; so does one byte more. */
START_TEST(test_truncated_and_trailing)
{
	size_t i, cut;

	for (i = 0; i < NCASES; i++) {
		struct msg m;

		build(&m, cases[i].type, cases[i].fill);
		for (cut = 0; cut < m.len; cut++) {
			struct msg t = m;
			uint32_t len = (uint32_t)(cut > PROTO_HDR_SIZE ?
						  cut - PROTO_HDR_SIZE : 0);

			/* The header may claim the short length, or the full. */
			ck_assert_int_ne(decode(t.b, cut, cases[i].parse, NULL), 0);
			if (cut < PROTO_HDR_SIZE)
				continue;
			memcpy(t.b + 12, &len, 4);
			ck_assert_msg(decode(t.b, cut, cases[i].parse, NULL),
				      "%s cut to %zu bytes decodes",
				      proto_type_name(cases[i].type), cut);
		}
		m.b[m.len] = 0;
		{
			uint32_t len = (uint32_t)(m.len + 1 - PROTO_HDR_SIZE);

			memcpy(m.b + 12, &len, 4);
		}
		ck_assert_msg(decode(m.b, m.len + 1, cases[i].parse, NULL),
			      "%s with a trailing byte decodes",
			      proto_type_name(cases[i].type));
	}
}
END_TEST

static int hdr_err(void (*poke)(uint8_t *h))
{
	struct proto_hdr h;
	const char *why = NULL;
	struct msg m;
	int ret;

	build(&m, PROTO_HOLD, fill_hold);
	poke(m.b);
	ret = proto_hdr_decode(m.b, &h, &why);
	ck_assert_msg(!ret || why, "no reason");
	return ret;
}

static void poke_magic(uint8_t *h) { h[0] ^= 1; }
static void poke_version(uint8_t *h) { h[4] = 2; }
static void poke_flags(uint8_t *h) { h[11] = 0x80; }
static void poke_type(uint8_t *h) { h[6] = 99; }
static void poke_type_big(uint8_t *h) { h[7] = 0x40; }
static void poke_long(uint8_t *h) { h[12] = 200; }
static void poke_huge(uint8_t *h) { h[15] = 0xff; }
static void poke_short(uint8_t *h) { h[12] = 3; }

START_TEST(test_bad_header)
{
	ck_assert_int_eq(hdr_err(poke_magic), -EPROTO);
	ck_assert_int_eq(hdr_err(poke_version), -EPROTONOSUPPORT);
	ck_assert_int_eq(hdr_err(poke_flags), -EBADMSG);
	ck_assert_int_eq(hdr_err(poke_type), -EBADRQC);
	ck_assert_int_eq(hdr_err(poke_type_big), -EBADRQC);
	ck_assert_int_eq(hdr_err(poke_long), -EMSGSIZE);
	ck_assert_int_eq(hdr_err(poke_huge), -EMSGSIZE);
	ck_assert_int_eq(hdr_err(poke_short), -EBADMSG);
}
END_TEST

START_TEST(test_size_limits)
{
	uint8_t hdr[PROTO_HDR_SIZE];
	struct proto_hdr h;
	const char *why;
	struct pbuf b;
	uint32_t len = PROTO_MAX_PAYLOAD + 1;
	uint8_t small[PROTO_HDR_SIZE + 4];
	char big[PROTO_LINE_MAX + 2];
	size_t i;

	/* The largest payload passes the header check; one byte more does not. */
	pbuf_init(&b, hdr, sizeof(hdr), 0);
	proto_begin(&b, PROTO_IMPORT, 1);
	memcpy(hdr + 12, &len, 4);
	ck_assert_int_eq(proto_hdr_decode(hdr, &h, &why), -EMSGSIZE);
	len--;
	memcpy(hdr + 12, &len, 4);
	ck_assert_int_eq(proto_hdr_decode(hdr, &h, &why), 0);

	/* A fixed buffer that is too small latches -EMSGSIZE. */
	pbuf_init(&b, small, sizeof(small), 0);
	proto_begin(&b, PROTO_HOLD, 1);
	fill_hold(&b);
	ck_assert_int_eq(proto_end(&b), -EMSGSIZE);

	/* A growable one stops at the message limit. */
	pbuf_init(&b, NULL, 0, 1);
	proto_begin(&b, PROTO_STATUS_RESULT, 1);
	for (i = 0; i < PROTO_MAX_PAYLOAD / 8 + 1; i++)
		pbuf_u64(&b, i);
	ck_assert_int_eq(proto_end(&b), -EMSGSIZE);
	pbuf_release(&b);

	/* A string longer than any class is the encoder's bug: -EINVAL. */
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	pbuf_init(&b, NULL, 0, 1);
	proto_begin(&b, PROTO_ERROR, 1);
	pbuf_u32(&b, (uint32_t)-EIO);
	pbuf_str(&b, big);
	ck_assert_int_eq(proto_end(&b), -EINVAL);
	pbuf_release(&b);
}
END_TEST

/* Encode a HOLD with a raw device string. Return: the decode result. */
static int hold_with_device(const char *dev, size_t n)
{
	uint8_t buf[256];
	struct proto_hold h;
	struct pbuf b;
	struct pcur c;

	pbuf_init(&b, buf, sizeof(buf), 0);
	pbuf_bytes(&b, ID, 16);
	pbuf_u16(&b, (uint16_t)n);
	pbuf_bytes(&b, dev, n);
	pbuf_u64(&b, 1);
	pbuf_u64(&b, 2);
	pcur_init(&c, buf, b.len);
	return proto_get_hold(&c, &h);
}

static int key_with_label(const char *label, size_t n)
{
	uint8_t buf[256], key[32] = { 0 };
	struct proto_key k;
	struct pbuf b;
	struct pcur c;

	pbuf_init(&b, buf, sizeof(buf), 0);
	pbuf_bytes(&b, ID, 16);
	pbuf_bytes(&b, key, 32);
	pbuf_u32(&b, 0);
	pbuf_u16(&b, (uint16_t)n);
	pbuf_bytes(&b, label, n);
	pcur_init(&c, buf, b.len);
	proto_get_key(&c, &k);
	return pcur_end(&c);
}

START_TEST(test_string_classes)
{
	char s[80];

	ck_assert_int_eq(hold_with_device("cuda:0", 6), 0);
	ck_assert_int_eq(hold_with_device("", 0), -EBADMSG);
	ck_assert_int_eq(hold_with_device("cuda/0", 6), -EBADMSG);
	ck_assert_int_eq(hold_with_device("cu da", 5), -EBADMSG);
	ck_assert_int_eq(hold_with_device("cuda\0", 5), -EBADMSG);
	ck_assert_int_eq(hold_with_device("0123456789abcdef", 16), -EBADMSG);
	ck_assert_int_eq(hold_with_device("0123456789abcde", 15), 0);

	memset(s, 'a', sizeof(s));
	ck_assert_int_eq(key_with_label(s, 63), 0);
	ck_assert_int_eq(key_with_label(s, 64), -EBADMSG);
	ck_assert_int_eq(key_with_label(s, 0), -EBADMSG);
	ck_assert_int_eq(key_with_label("a b", 3), -EBADMSG);
	ck_assert_int_eq(key_with_label("a\tb", 3), -EBADMSG);
	ck_assert_int_eq(key_with_label("\xc3\xa9", 2), -EBADMSG);

	ck_assert(proto_str_valid("tenant-a", PSTR_LABEL));
	ck_assert(!proto_str_valid("", PSTR_LABEL));
	ck_assert(proto_str_valid("", PSTR_LABEL_OPT));
	ck_assert(proto_str_valid("a b", PSTR_COMM));
	ck_assert(!proto_str_valid("a\nb", PSTR_TEXT));
}
END_TEST

/* Build a payload by hand and decode it with @parse. */
static int raw(parse_fn parse, void (*fill)(struct pbuf *b))
{
	uint8_t buf[512];
	struct pbuf b;
	struct pcur c;

	pbuf_init(&b, buf, sizeof(buf), 0);
	fill(&b);
	ck_assert_int_eq(b.err, 0);
	pcur_init(&c, buf, b.len);
	return parse(&c, NULL);
}

static void bad_sel_kind(struct pbuf *b)
{
	pbuf_u8(b, 3);
	pbuf_bytes(b, ID, 16);
	pbuf_u32(b, 100);
}

static void bad_timeout0(struct pbuf *b)
{
	pbuf_u8(b, PROTO_SEL_ID);
	pbuf_bytes(b, ID, 16);
	pbuf_u32(b, 0);
}

static void bad_timeout_big(struct pbuf *b)
{
	pbuf_u8(b, PROTO_SEL_ID);
	pbuf_bytes(b, ID, 16);
	pbuf_u32(b, PROTO_TIMEOUT_MAX + 1);
}

static void bad_principal(struct pbuf *b)
{
	pbuf_u8(b, PROTO_SEL_LABEL);
	pbuf_str(b, "a");
	pbuf_u8(b, 3);
	pbuf_u8(b, 1);
	pbuf_u32(b, 5);
}

static void bad_allow(struct pbuf *b)
{
	pbuf_u8(b, PROTO_SEL_LABEL);
	pbuf_str(b, "a");
	pbuf_u8(b, PROTO_UID);
	pbuf_u8(b, 2);
	pbuf_u32(b, 5);
}

static void bad_who(struct pbuf *b)
{
	pbuf_u8(b, PROTO_SEL_LABEL);
	pbuf_str(b, "a");
	pbuf_u8(b, PROTO_UID);
	pbuf_u8(b, 1);
	pbuf_u32(b, UINT32_MAX);
}

static void bad_error_positive(struct pbuf *b)
{
	pbuf_u32(b, EACCES);
	pbuf_str(b, "x");
}

static void bad_ack_status(struct pbuf *b)
{
	pbuf_bytes(b, ID, 16);
	pbuf_u64(b, 1);
	pbuf_u32(b, 5);
}

static void bad_ack_id0(struct pbuf *b)
{
	pbuf_bytes(b, ID, 16);
	pbuf_u64(b, 0);
	pbuf_u32(b, 0);
}

static void bad_notice_id0(struct pbuf *b)
{
	pbuf_bytes(b, ID, 16);
	pbuf_u64(b, 0);
	pbuf_u32(b, 10);
}

static void bad_release_flags(struct pbuf *b)
{
	pbuf_bytes(b, ID, 16);
	pbuf_str(b, "cpu");
	pbuf_u32(b, 2);
}

static void bad_audit_max(struct pbuf *b)
{
	pbuf_u64(b, 1);
	pbuf_u32(b, 0);
}

static void bad_import_count(struct pbuf *b)
{
	fill_import(b);
	b->p[0] = 4;		/* four keys claimed, three follow */
}

static void bad_import_huge(struct pbuf *b)
{
	pbuf_u32(b, PROTO_IMPORT_MAX + 1);
}

static void bad_status_state(struct pbuf *b)
{
	fill_status(b);
	b->p[25 + 4 + 16 + 3 + 4] = 9;	/* the shard's state */
}

static void bad_status_nres(struct pbuf *b)
{
	struct proto_status_info s = { 0 };
	struct proto_client_rec cl = { .nres = 1000 };

	proto_put_status_info(b, &s);
	pbuf_u32(b, 0);
	pbuf_u32(b, 0);
	pbuf_u32(b, 1);
	proto_put_client(b, &cl);
}

static void bad_holder_outcome(struct pbuf *b)
{
	fill_revoke_result(b);
	b->p[b->len - 8 - 4 - 1] = 0;	/* the last holder's outcome */
}

static void bad_hello_admin(struct pbuf *b)
{
	struct proto_hello_ok h = { PROTO_VERSION, 1, 2, 3, 2 };

	proto_put_hello_ok(b, &h);
}

static void bad_verify_ok(struct pbuf *b)
{
	struct proto_verify v = { .ok = 7 };

	proto_put_verify(b, &v);
}

static void bad_audit_line_ctrl(struct pbuf *b)
{
	struct proto_audit_hdr h = { 0 };

	proto_put_audit_hdr(b, &h);
	pbuf_u32(b, 1);
	pbuf_str(b, "1 2 3 start\r");
}

START_TEST(test_bad_fields)
{
	ck_assert_int_eq(raw(parse_revoke, bad_sel_kind), -EBADMSG);
	ck_assert_int_eq(raw(parse_revoke, bad_timeout0), -EBADMSG);
	ck_assert_int_eq(raw(parse_revoke, bad_timeout_big), -EBADMSG);
	ck_assert_int_eq(raw(parse_rule, bad_principal), -EBADMSG);
	ck_assert_int_eq(raw(parse_rule, bad_allow), -EBADMSG);
	ck_assert_int_eq(raw(parse_rule, bad_who), -EBADMSG);
	ck_assert_int_eq(raw(parse_error, bad_error_positive), -EBADMSG);
	ck_assert_int_eq(raw(parse_ack, bad_ack_status), -EBADMSG);
	ck_assert_int_eq(raw(parse_ack, bad_ack_id0), -EBADMSG);
	ck_assert_int_eq(raw(parse_notice, bad_notice_id0), -EBADMSG);
	ck_assert_int_eq(raw(parse_release, bad_release_flags), -EBADMSG);
	ck_assert_int_eq(raw(parse_audit_req, bad_audit_max), -EBADMSG);
	ck_assert_int_eq(raw(parse_import, bad_import_count), -EBADMSG);
	ck_assert_int_eq(raw(parse_import, bad_import_huge), -EBADMSG);
	ck_assert_int_eq(raw(parse_status, bad_status_state), -EBADMSG);
	ck_assert_int_eq(raw(parse_status, bad_status_nres), -EBADMSG);
	ck_assert_int_eq(raw(parse_revoke_result, bad_holder_outcome), -EBADMSG);
	ck_assert_int_eq(raw(parse_hello_ok, bad_hello_admin), -EBADMSG);
	ck_assert_int_eq(raw(parse_verify, bad_verify_ok), -EBADMSG);
	ck_assert_int_eq(raw(parse_audit_records, bad_audit_line_ctrl),
			 -EBADMSG);
}
END_TEST

/*
 * Random damage: one to four bytes changed anywhere (header included).
 * Whatever decodes must re-encode to exactly the damaged bytes.
 */
START_TEST(test_mutations)
{
	uint64_t rng = 0x5eed;
	size_t i;
	int round, k, accepted = 0, refused = 0;

	for (i = 0; i < NCASES; i++) {
		struct msg m;

		build(&m, cases[i].type, cases[i].fill);
		for (round = 0; round < 3000; round++) {
			struct msg t = m, back;
			struct pbuf out;
			int flips = 1 + (int)(tu_rand(&rng) % 4);

			for (k = 0; k < flips; k++)
				t.b[tu_rand(&rng) % t.len] = (uint8_t)tu_rand(&rng);
			pbuf_init(&out, back.b, sizeof(back.b), 0);
			if (decode(t.b, t.len, cases[i].parse, &out)) {
				refused++;
				continue;
			}
			accepted++;
			ck_assert_int_eq(proto_end(&out), (int)t.len);
			ck_assert_mem_eq(back.b, t.b, t.len);
		}
	}
	ck_assert_int_gt(refused, 0);
	ck_assert_int_gt(accepted, 0);
}
END_TEST

START_TEST(test_ids_and_types)
{
	uint8_t id[16];
	char hex[33];

	proto_id_hex(ID, hex);
	ck_assert_str_eq(hex, "0102030405060708090a0b0c0d0e0f10");
	ck_assert_int_eq(proto_id_parse(hex, id), 0);
	ck_assert_mem_eq(id, ID, 16);
	ck_assert_int_eq(proto_id_parse("0102030405060708090A0B0C0D0E0F10", id), 0);
	ck_assert_mem_eq(id, ID, 16);
	ck_assert_int_eq(proto_id_parse("0102", id), -EINVAL);
	ck_assert_int_eq(proto_id_parse("0102030405060708090a0b0c0d0e0f1g", id),
			 -EINVAL);
	ck_assert_int_eq(proto_id_parse("0102030405060708090a0b0c0d0e0f100", id),
			 -EINVAL);
	ck_assert_int_eq(proto_id_parse(NULL, id), -EINVAL);

	ck_assert(proto_type_is_request(PROTO_GET_KEY));
	ck_assert(proto_type_is_request(PROTO_AUDIT_VERIFY));
	ck_assert(!proto_type_is_request(PROTO_KEY));
	ck_assert(!proto_type_is_request(PROTO_REVOKE_NOTICE));
	ck_assert(!proto_type_is_request(77));
	ck_assert_str_eq(proto_type_name(PROTO_REVOKE_NOTICE), "REVOKE_NOTICE");
	ck_assert_str_eq(proto_type_name(77), "?");
}
END_TEST

static Suite *proto_suite(void)
{
	Suite *s = suite_create("proto");
	TCase *tc = tcase_create("proto");

	tcase_add_test(tc, test_round_trip);
	tcase_add_test(tc, test_fields_survive);
	tcase_add_test(tc, test_truncated_and_trailing);
	tcase_add_test(tc, test_bad_header);
	tcase_add_test(tc, test_size_limits);
	tcase_add_test(tc, test_string_classes);
	tcase_add_test(tc, test_bad_fields);
	tcase_add_test(tc, test_mutations);
	tcase_add_test(tc, test_ids_and_types);
	tcase_set_timeout(tc, 60);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(proto_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
