// SPDX-License-Identifier: MIT
/*
 * The orthod wire protocol: framing and field codecs (see proto.h and
 * daemon/PROTOCOL.md). libc only, no logging: the daemon compiles this file
 * in, since the shared library exports nothing but the public API.
 *
 * Writers latch the first error in the buffer and readers in the cursor, so
 * a message is built or parsed as straight-line code and checked once.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

/* Payload bounds per type; a length outside them fails the header. */
struct type_bounds {
	uint16_t type;
	const char *name;
	uint32_t min, max;
};

#define SEL_MAX (1u + 2u + PROTO_LABEL_MAX)
#define RULE_MAX (SEL_MAX + 6u)

static const struct type_bounds bounds[] = {
	{ PROTO_HELLO, "HELLO", 4, 4 },
	{ PROTO_GET_KEY, "GET_KEY", PROTO_ID_SIZE, PROTO_ID_SIZE },
	{ PROTO_HOLD, "HOLD", 16 + 3 + 16, 16 + 2 + PROTO_DEVICE_MAX + 16 },
	{ PROTO_RELEASE, "RELEASE", 16 + 2 + 4, 16 + 2 + PROTO_DEVICE_MAX + 4 },
	{ PROTO_ACK, "ACK", 28, 28 },
	{ PROTO_IMPORT, "IMPORT", 4 + PROTO_KEY_MIN, PROTO_MAX_PAYLOAD },
	{ PROTO_GRANT, "GRANT", PROTO_RULE_MIN, RULE_MAX },
	{ PROTO_DENY, "DENY", PROTO_RULE_MIN, RULE_MAX },
	{ PROTO_REVOKE, "REVOKE", PROTO_SEL_MIN + 4, SEL_MAX + 4 },
	{ PROTO_STATUS, "STATUS", 0, 0 },
	{ PROTO_AUDIT_READ, "AUDIT_READ", 12, 12 },
	{ PROTO_AUDIT_VERIFY, "AUDIT_VERIFY", 0, 0 },
	{ PROTO_OK, "OK", 0, 0 },
	{ PROTO_ERROR, "ERROR", 6, 6 + PROTO_TEXT_MAX },
	{ PROTO_HELLO_OK, "HELLO_OK", 15, 15 },
	{ PROTO_KEY, "KEY", PROTO_KEY_MIN, 16 + 32 + 4 + 2 + PROTO_LABEL_MAX },
	{ PROTO_IMPORT_OK, "IMPORT_OK", 8, 8 },
	{ PROTO_REVOKE_RESULT, "REVOKE_RESULT", 24, PROTO_MAX_PAYLOAD },
	{ PROTO_STATUS_RESULT, "STATUS_RESULT", 37, PROTO_MAX_PAYLOAD },
	{ PROTO_AUDIT_RECORDS, "AUDIT_RECORDS", 13, PROTO_MAX_PAYLOAD },
	{ PROTO_AUDIT_VERIFY_RESULT, "AUDIT_VERIFY_RESULT", 19,
	  19 + PROTO_TEXT_MAX },
	{ PROTO_REVOKE_NOTICE, "REVOKE_NOTICE", 28, 28 },
};

static const struct type_bounds *type_find(uint16_t type)
{
	size_t i;

	for (i = 0; i < sizeof(bounds) / sizeof(bounds[0]); i++)
		if (bounds[i].type == type)
			return &bounds[i];
	return NULL;
}

const char *proto_type_name(uint16_t type)
{
	const struct type_bounds *t = type_find(type);

	return t ? t->name : "?";
}

int proto_type_is_request(uint16_t type)
{
	return type_find(type) && type < PROTO_OK;
}

/* ---- writing ---- */

void pbuf_init(struct pbuf *b, void *buf, size_t cap, int growable)
{
	memset(b, 0, sizeof(*b));
	b->p = buf;
	b->cap = cap;
	b->growable = growable;
	b->limit = PROTO_MAX_MSG;
}

void pbuf_release(struct pbuf *b)
{
	if (b->growable && b->p) {
		explicit_bzero(b->p, b->cap);
		free(b->p);
	}
	b->p = NULL;
	b->len = b->cap = 0;
}

/* Room for @n more bytes; growing wipes the old copy before freeing it. */
static uint8_t *pbuf_room(struct pbuf *b, size_t n)
{
	size_t need, cap;
	uint8_t *p;

	if (b->err)
		return NULL;
	need = b->len + n;
	if (need < b->len || need - b->start > b->limit) {
		b->err = -EMSGSIZE;
		return NULL;
	}
	if (need <= b->cap)
		return b->p + b->len;
	if (!b->growable) {
		b->err = -EMSGSIZE;
		return NULL;
	}
	cap = b->cap ? b->cap : 256;
	while (cap < need)
		cap *= 2;
	p = malloc(cap);
	if (!p) {
		b->err = -ENOMEM;
		return NULL;
	}
	if (b->p) {
		memcpy(p, b->p, b->len);
		explicit_bzero(b->p, b->cap);
		free(b->p);
	}
	b->p = p;
	b->cap = cap;
	return b->p + b->len;
}

static void put_le(struct pbuf *b, uint64_t v, size_t n)
{
	uint8_t *p = pbuf_room(b, n);
	size_t i;

	if (!p)
		return;
	for (i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
	b->len += n;
}

void pbuf_u8(struct pbuf *b, uint8_t v)
{
	put_le(b, v, 1);
}

void pbuf_u16(struct pbuf *b, uint16_t v)
{
	put_le(b, v, 2);
}

void pbuf_u32(struct pbuf *b, uint32_t v)
{
	put_le(b, v, 4);
}

void pbuf_u64(struct pbuf *b, uint64_t v)
{
	put_le(b, v, 8);
}

void pbuf_bytes(struct pbuf *b, const void *src, size_t n)
{
	uint8_t *p = pbuf_room(b, n);

	if (!p)
		return;
	memcpy(p, src, n);
	b->len += n;
}

void pbuf_str(struct pbuf *b, const char *s)
{
	size_t n = s ? strlen(s) : 0;

	if (n > PROTO_LINE_MAX) {
		if (!b->err)
			b->err = -EINVAL;
		return;
	}
	pbuf_u16(b, (uint16_t)n);
	if (n)
		pbuf_bytes(b, s, n);
}

void proto_begin(struct pbuf *b, uint16_t type, uint64_t req_id)
{
	if (b->err)
		return;
	b->start = b->len;
	pbuf_u32(b, PROTO_MAGIC);
	pbuf_u16(b, PROTO_VERSION);
	pbuf_u16(b, type);
	pbuf_u32(b, 0);
	pbuf_u32(b, 0);		/* length, patched by proto_end() */
	pbuf_u64(b, req_id);
}

int proto_end(struct pbuf *b)
{
	size_t total, payload, i;
	uint8_t *len;

	if (b->err)
		return b->err;
	total = b->len - b->start;
	if (total < PROTO_HDR_SIZE)
		return -EINVAL;
	payload = total - PROTO_HDR_SIZE;
	if (payload > PROTO_MAX_PAYLOAD)
		return -EMSGSIZE;
	len = b->p + b->start + 12;
	for (i = 0; i < 4; i++)
		len[i] = (uint8_t)(payload >> (8 * i));
	return (int)total;
}

/* ---- reading ---- */

void pcur_init(struct pcur *c, const void *p, size_t len)
{
	memset(c, 0, sizeof(*c));
	c->p = p;
	c->len = len;
}

void pcur_fail(struct pcur *c, int err, const char *why)
{
	if (c->err)
		return;
	c->err = err;
	c->why = why;
}

static const uint8_t *pcur_take(struct pcur *c, size_t n, const char *field)
{
	const uint8_t *p;

	if (c->err)
		return NULL;
	if (n > c->len - c->off) {
		pcur_fail(c, -EBADMSG, field);
		return NULL;
	}
	p = c->p + c->off;
	c->off += n;
	return p;
}

static uint64_t get_le(struct pcur *c, size_t n, const char *field)
{
	const uint8_t *p = pcur_take(c, n, field);
	uint64_t v = 0;
	size_t i;

	if (!p)
		return 0;
	for (i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

uint8_t pcur_u8(struct pcur *c, const char *field)
{
	return (uint8_t)get_le(c, 1, field);
}

uint16_t pcur_u16(struct pcur *c, const char *field)
{
	return (uint16_t)get_le(c, 2, field);
}

uint32_t pcur_u32(struct pcur *c, const char *field)
{
	return (uint32_t)get_le(c, 4, field);
}

uint64_t pcur_u64(struct pcur *c, const char *field)
{
	return get_le(c, 8, field);
}

void pcur_bytes(struct pcur *c, void *dst, size_t n, const char *field)
{
	const uint8_t *p = pcur_take(c, n, field);

	if (p)
		memcpy(dst, p, n);
	else
		memset(dst, 0, n);
}

static int char_ok(unsigned char ch, enum proto_str cls)
{
	switch (cls) {
	case PSTR_LABEL:
	case PSTR_LABEL_OPT:
		return ch >= 0x21 && ch <= 0x7e;
	case PSTR_DEVICE:
		return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		       (ch >= '0' && ch <= '9') || ch == ':' || ch == '.' ||
		       ch == '_' || ch == '-';
	default:
		return ch >= 0x20 && ch <= 0x7e;
	}
}

static void str_bounds(enum proto_str cls, size_t *min, size_t *max)
{
	static const size_t lim[][2] = {
		[PSTR_LABEL] = { 1, PROTO_LABEL_MAX },
		[PSTR_LABEL_OPT] = { 0, PROTO_LABEL_MAX },
		[PSTR_DEVICE] = { 0, PROTO_DEVICE_MAX },
		[PSTR_COMM] = { 0, PROTO_COMM_MAX },
		[PSTR_TEXT] = { 0, PROTO_TEXT_MAX },
		[PSTR_LINE] = { 1, PROTO_LINE_MAX },
	};

	*min = lim[cls][0];
	*max = lim[cls][1];
}

static int bytes_valid(const char *s, size_t n, enum proto_str cls)
{
	size_t min, max, i;

	if ((unsigned int)cls > PSTR_LINE)
		return 0;
	str_bounds(cls, &min, &max);
	if (n < min || n > max)
		return 0;
	for (i = 0; i < n; i++)
		if (!char_ok((unsigned char)s[i], cls))
			return 0;
	return 1;
}

int proto_str_valid(const char *s, enum proto_str cls)
{
	return s && bytes_valid(s, strlen(s), cls);
}

void pcur_str(struct pcur *c, char *dst, size_t cap, enum proto_str cls,
	      const char *field)
{
	uint16_t n = pcur_u16(c, field);
	const uint8_t *p;

	dst[0] = 0;
	if (c->err)
		return;
	p = pcur_take(c, n, field);
	if (!p)
		return;
	if ((size_t)n >= cap || !bytes_valid((const char *)p, n, cls)) {
		pcur_fail(c, -EBADMSG, field);
		return;
	}
	memcpy(dst, p, n);
	dst[n] = 0;
}

uint32_t pcur_count(struct pcur *c, uint32_t max, size_t min_elem,
		    const char *field)
{
	uint32_t n = pcur_u32(c, field);

	if (c->err)
		return 0;
	if (n > max || (uint64_t)n * min_elem > c->len - c->off) {
		pcur_fail(c, -EBADMSG, field);
		return 0;
	}
	return n;
}

int pcur_end(struct pcur *c)
{
	if (!c->err && c->off != c->len)
		pcur_fail(c, -EBADMSG, "trailing bytes");
	return c->err;
}

/* ---- the header ---- */

int proto_hdr_decode(const uint8_t *buf, struct proto_hdr *h,
		     const char **why)
{
	const struct type_bounds *t;
	struct pcur c;

	pcur_init(&c, buf, PROTO_HDR_SIZE);
	h->magic = pcur_u32(&c, "magic");
	h->version = pcur_u16(&c, "version");
	h->type = pcur_u16(&c, "type");
	h->flags = pcur_u32(&c, "flags");
	h->length = pcur_u32(&c, "length");
	h->req_id = pcur_u64(&c, "request id");
	*why = NULL;
	if (h->magic != PROTO_MAGIC) {
		*why = "magic: not an orthod message";
		return -EPROTO;
	}
	if (h->version != PROTO_VERSION) {
		*why = "version: not supported";
		return -EPROTONOSUPPORT;
	}
	if (h->flags) {
		*why = "flags: reserved bits set";
		return -EBADMSG;
	}
	t = type_find(h->type);
	if (!t) {
		*why = "type: unknown";
		return -EBADRQC;
	}
	if (h->length > t->max) {
		*why = "length: too long for the type";
		return -EMSGSIZE;
	}
	if (h->length < t->min) {
		*why = "length: too short for the type";
		return -EBADMSG;
	}
	return 0;
}

/* ---- ids ---- */

void proto_id_hex(const uint8_t id[PROTO_ID_SIZE], char out[33])
{
	static const char hex[] = "0123456789abcdef";
	unsigned int i;

	for (i = 0; i < PROTO_ID_SIZE; i++) {
		out[2 * i] = hex[id[i] >> 4];
		out[2 * i + 1] = hex[id[i] & 15];
	}
	out[32] = 0;
}

static int hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

int proto_id_parse(const char *s, uint8_t id[PROTO_ID_SIZE])
{
	unsigned int i;

	if (!s || strlen(s) != 2 * PROTO_ID_SIZE)
		return -EINVAL;
	for (i = 0; i < PROTO_ID_SIZE; i++) {
		int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -EINVAL;
		id[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}
