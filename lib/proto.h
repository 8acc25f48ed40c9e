/* SPDX-License-Identifier: MIT */
/*
 * The orthod wire protocol (daemon/PROTOCOL.md): framing, and the encoding
 * and decoding of every message. Shared by the daemon, the library's
 * authority client and its admin calls.
 *
 * proto.c uses libc only and never logs: the daemon, which links the shared
 * library (that exports the public API alone), compiles it in. Decoders
 * report what is wrong through a static "field: reason" string.
 *
 * Every message is a 24-byte header and a payload of @length bytes:
 *
 *	u32 magic "ORTP" | u16 version | u16 type | u32 flags (0) |
 *	u32 length | u64 request id
 *
 * Payload fields are little-endian integers, fixed-size byte strings, and
 * strings (u16 length, then bytes, no NUL) of a declared class. Lists are a
 * u32 count and the elements. Nothing may follow the last field.
 */
#ifndef ORTHO_PROTO_H
#define ORTHO_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define PROTO_MAGIC 0x5054524fu		/* "ORTP" on the wire */
#define PROTO_VERSION 1u
#define PROTO_HDR_SIZE 24u
#define PROTO_MAX_PAYLOAD (1u << 20)
#define PROTO_MAX_MSG (PROTO_HDR_SIZE + PROTO_MAX_PAYLOAD)

#define PROTO_ID_SIZE 16u
#define PROTO_KEY_SIZE 32u
#define PROTO_LABEL_MAX 63u		/* bytes, without the NUL */
#define PROTO_DEVICE_MAX 15u
#define PROTO_COMM_MAX 15u
#define PROTO_TEXT_MAX 255u
#define PROTO_LINE_MAX 2047u		/* one audit record */
#define PROTO_IMPORT_MAX 1024u		/* keys in one IMPORT */
#define PROTO_LIST_MAX 65536u		/* elements of any other list */
#define PROTO_TIMEOUT_MAX 600000u	/* revoke deadline, ms */

enum proto_type {
	/* requests, client to daemon */
	PROTO_HELLO = 1,
	PROTO_GET_KEY = 2,
	PROTO_HOLD = 3,
	PROTO_RELEASE = 4,
	PROTO_ACK = 5,			/* answers a REVOKE_NOTICE; no reply */
	PROTO_IMPORT = 16,		/* admin */
	PROTO_GRANT = 17,		/* admin */
	PROTO_DENY = 18,		/* admin */
	PROTO_REVOKE = 19,		/* admin */
	PROTO_STATUS = 20,		/* admin */
	PROTO_AUDIT_READ = 21,		/* admin */
	PROTO_AUDIT_VERIFY = 22,	/* admin */
	/* replies, daemon to client, with the request's id */
	PROTO_OK = 128,
	PROTO_ERROR = 129,
	PROTO_HELLO_OK = 130,
	PROTO_KEY = 131,
	PROTO_IMPORT_OK = 132,
	PROTO_REVOKE_RESULT = 133,
	PROTO_STATUS_RESULT = 134,
	PROTO_AUDIT_RECORDS = 135,
	PROTO_AUDIT_VERIFY_RESULT = 136,
	/* unsolicited, daemon to client, request id 0 */
	PROTO_REVOKE_NOTICE = 192,
};

struct proto_hdr {
	uint32_t magic;
	uint16_t version;
	uint16_t type;			/* enum proto_type */
	uint32_t flags;			/* none defined: must be 0 */
	uint32_t length;		/* payload bytes after the header */
	uint64_t req_id;
};

/* String classes: what each string field may hold. */
enum proto_str {
	PSTR_LABEL,	/* 1..63 bytes of 0x21..0x7e */
	PSTR_LABEL_OPT,	/* a label, or empty */
	PSTR_DEVICE,	/* 0..15 bytes of [A-Za-z0-9:._-] */
	PSTR_COMM,	/* 0..15 bytes of 0x20..0x7e */
	PSTR_TEXT,	/* 0..255 bytes of 0x20..0x7e */
	PSTR_LINE,	/* 1..2047 bytes of 0x20..0x7e */
};

/* ---- message bodies ---- */

enum proto_sel_kind { PROTO_SEL_ID = 1, PROTO_SEL_LABEL = 2 };
enum proto_principal { PROTO_UID = 1, PROTO_GID = 2 };
enum proto_shard_state {
	PROTO_SHARD_ACTIVE = 1,
	PROTO_SHARD_REVOKING = 2,	/* marked; holders not yet all told */
	PROTO_SHARD_REVOKED = 3,
};
enum proto_outcome {
	PROTO_COMPLETE = 1,	/* acknowledged: key and copies wiped */
	PROTO_BUSY = 2,		/* still holding at the deadline */
	PROTO_GONE = 3,		/* exited before acknowledging */
};
/* RELEASE flags */
#define PROTO_RELEASE_KEY 0x1u		/* the key copy is wiped too */

/* A shard, or every shard with a label. */
struct proto_sel {
	uint8_t kind;			/* enum proto_sel_kind */
	uint8_t id[PROTO_ID_SIZE];	/* PROTO_SEL_ID */
	char label[PROTO_LABEL_MAX + 1]; /* PROTO_SEL_LABEL */
};

struct proto_rule {
	struct proto_sel sel;
	uint8_t principal;		/* enum proto_principal */
	uint8_t allow;			/* 1 grant, 0 deny (in STATUS) */
	uint32_t who;			/* uid or gid */
};

struct proto_error {
	int32_t err;			/* negative errno */
	char msg[PROTO_TEXT_MAX + 1];
};

struct proto_hello_ok {
	uint16_t version;
	uint32_t pid;			/* the daemon's */
	uint32_t uid, gid;		/* the peer, as the daemon sees it */
	uint8_t admin;
};

struct proto_key {			/* KEY reply and IMPORT element */
	uint8_t id[PROTO_ID_SIZE];
	uint8_t key[PROTO_KEY_SIZE];
	uint32_t layer;
	char label[PROTO_LABEL_MAX + 1];
};

struct proto_hold {
	uint8_t id[PROTO_ID_SIZE];
	char device[PROTO_DEVICE_MAX + 1]; /* not empty */
	uint64_t bytes;
	uint64_t since_ns;		/* CLOCK_REALTIME */
};

struct proto_release {
	uint8_t id[PROTO_ID_SIZE];
	char device[PROTO_DEVICE_MAX + 1]; /* empty: every device */
	uint32_t flags;			/* PROTO_RELEASE_* */
};

struct proto_notice {			/* REVOKE_NOTICE */
	uint8_t id[PROTO_ID_SIZE];
	uint64_t revoke_id;
	uint32_t deadline_ms;
};

struct proto_ack {
	uint8_t id[PROTO_ID_SIZE];
	uint64_t revoke_id;
	int32_t status;			/* 0: wiped; else -errno */
};

struct proto_revoke_req {
	struct proto_sel sel;
	uint32_t timeout_ms;		/* 1..PROTO_TIMEOUT_MAX */
};

struct proto_import_ok {
	uint32_t added;
	uint32_t present;		/* already held, same key */
};

struct proto_status_info {
	uint32_t pid;
	uint64_t start_ns;
	uint64_t now_ns;
	uint32_t conns;
	uint8_t truncated;		/* lists cut to fit one message */
};

struct proto_shard_rec {
	uint8_t id[PROTO_ID_SIZE];
	char label[PROTO_LABEL_MAX + 1];
	uint32_t layer;
	uint8_t state;			/* enum proto_shard_state */
	uint32_t holders;
	uint64_t imported_ns;
	uint64_t revoked_ns;		/* 0 unless revoked */
};

struct proto_client_rec {
	uint32_t pid, uid, gid;
	char comm[PROTO_COMM_MAX + 1];
	uint64_t connected_ns;
	uint32_t keys;			/* keys handed out on this connection */
	uint32_t nres;			/* proto_res_rec elements that follow */
};

struct proto_res_rec {
	uint8_t id[PROTO_ID_SIZE];
	char label[PROTO_LABEL_MAX + 1]; /* may be empty: unknown shard */
	char device[PROTO_DEVICE_MAX + 1];
	uint64_t bytes;
	uint64_t since_ns;
};

struct proto_revoke_info {
	uint64_t revoke_id;
	uint64_t elapsed_us;		/* request to last outcome */
	uint32_t nshards;		/* proto_shard_rec elements follow */
};

struct proto_holder_rec {
	uint8_t id[PROTO_ID_SIZE];
	uint32_t pid, uid;
	char comm[PROTO_COMM_MAX + 1];
	uint8_t outcome;		/* enum proto_outcome */
	int32_t err;			/* a failed ACK's status, else 0 */
	uint64_t ack_us;		/* from the request; 0 unless complete */
};

struct proto_audit_req {
	uint64_t from_seq;
	uint32_t max;			/* records; 1..PROTO_LIST_MAX */
};

struct proto_audit_hdr {		/* then u32 n and n PSTR_LINE strings */
	uint64_t next_seq;
	uint8_t more;
};

struct proto_verify {
	uint8_t ok;
	uint64_t records;
	uint64_t bad_seq;		/* first bad record, when !ok */
	char reason[PROTO_TEXT_MAX + 1];
};

/* ---- writing ---- */

/*
 * An output buffer. With growable set it reallocs up to PROTO_MAX_MSG;
 * messages with keys use a fixed buffer the caller wipes. Errors latch in
 * ->err (-EMSGSIZE, -ENOMEM) and are returned by proto_end().
 */
struct pbuf {
	uint8_t *p;
	size_t len, cap;
	size_t start;			/* the current message's header */
	size_t limit;			/* most bytes from start (PROTO_MAX_MSG) */
	int err;
	int growable;
};

/* Return: none; @buf of @cap bytes (NULL and 0 with @growable). */
void pbuf_init(struct pbuf *b, void *buf, size_t cap, int growable);
/* Free a growable buffer's memory (wiped first). */
void pbuf_release(struct pbuf *b);

/* proto_begin() - start a message at the end of @b. */
void proto_begin(struct pbuf *b, uint16_t type, uint64_t req_id);
/**
 * proto_end() - patch the current message's length.
 * Return: the message's total size, or the latched negative errno.
 */
int proto_end(struct pbuf *b);

void pbuf_u8(struct pbuf *b, uint8_t v);
void pbuf_u16(struct pbuf *b, uint16_t v);
void pbuf_u32(struct pbuf *b, uint32_t v);
void pbuf_u64(struct pbuf *b, uint64_t v);
void pbuf_bytes(struct pbuf *b, const void *p, size_t n);
/* A string; too long a string latches -EINVAL (the encoder's bug). */
void pbuf_str(struct pbuf *b, const char *s);

/* ---- reading ---- */

struct pcur {
	const uint8_t *p;
	size_t len, off;
	int err;			/* first error, latched */
	const char *why;		/* "field: reason" */
};

void pcur_init(struct pcur *c, const void *p, size_t len);
/* Return: the field's value, or 0 after an error (latched). */
uint8_t pcur_u8(struct pcur *c, const char *field);
uint16_t pcur_u16(struct pcur *c, const char *field);
uint32_t pcur_u32(struct pcur *c, const char *field);
uint64_t pcur_u64(struct pcur *c, const char *field);
void pcur_bytes(struct pcur *c, void *dst, size_t n, const char *field);
/* Read a string of class @cls into @dst (@cap with room for the NUL). */
void pcur_str(struct pcur *c, char *dst, size_t cap, enum proto_str cls,
	      const char *field);
/**
 * pcur_count() - a list's u32 count, checked against @max and against the
 * bytes left (each element takes at least @min_elem bytes).
 * Return: the count, or 0 after an error.
 */
uint32_t pcur_count(struct pcur *c, uint32_t max, size_t min_elem,
		    const char *field);
/* Return: 0, or -EBADMSG when bytes are left over or an error latched. */
int pcur_end(struct pcur *c);
/* Latch @err with @why (a static string) unless an error is latched. */
void pcur_fail(struct pcur *c, int err, const char *why);

/* ---- the header ---- */

/**
 * proto_hdr_decode() - parse and check a header: magic (-EPROTO), version
 * (-EPROTONOSUPPORT), flags (-EBADMSG), type (-EBADRQC) and length against
 * the type's bounds (-EMSGSIZE, -EBADMSG).
 * @buf: PROTO_HDR_SIZE bytes.
 * @h: filled in (also on error, as far as it was read).
 * @why: a static string saying what is wrong.
 * Return: 0 or a negative errno.
 */
int proto_hdr_decode(const uint8_t *buf, struct proto_hdr *h,
		     const char **why);
/* Return: 1 for a type the client sends, 0 otherwise. */
int proto_type_is_request(uint16_t type);
/* Return: a static name for @type ("GET_KEY"), or "?". */
const char *proto_type_name(uint16_t type);
/* Return: 1 for a string that is valid in class @cls. */
int proto_str_valid(const char *s, enum proto_str cls);

/* ---- elements (both directions); get_* latch errors in @c ---- */

void proto_put_sel(struct pbuf *b, const struct proto_sel *s);
void proto_get_sel(struct pcur *c, struct proto_sel *s);
void proto_put_rule(struct pbuf *b, const struct proto_rule *r);
void proto_get_rule(struct pcur *c, struct proto_rule *r);
void proto_put_key(struct pbuf *b, const struct proto_key *k);
void proto_get_key(struct pcur *c, struct proto_key *k);
void proto_put_shard(struct pbuf *b, const struct proto_shard_rec *s);
void proto_get_shard(struct pcur *c, struct proto_shard_rec *s);
void proto_put_client(struct pbuf *b, const struct proto_client_rec *r);
void proto_get_client(struct pcur *c, struct proto_client_rec *r);
void proto_put_res(struct pbuf *b, const struct proto_res_rec *r);
void proto_get_res(struct pcur *c, struct proto_res_rec *r);
void proto_put_holder(struct pbuf *b, const struct proto_holder_rec *h);
void proto_get_holder(struct pcur *c, struct proto_holder_rec *h);

/* Smallest encoded size of each list element, for pcur_count(). */
#define PROTO_SEL_MIN 4u		/* kind, a label of one byte */
#define PROTO_RULE_MIN (PROTO_SEL_MIN + 6u)
#define PROTO_KEY_MIN (16u + 32u + 4u + 3u)
#define PROTO_SHARD_MIN (16u + 3u + 4u + 1u + 4u + 16u)
#define PROTO_CLIENT_MIN (12u + 2u + 8u + 8u)
#define PROTO_RES_MIN (16u + 2u + 3u + 16u)
#define PROTO_HOLDER_MIN (16u + 8u + 2u + 1u + 4u + 8u)
#define PROTO_LINE_MIN 3u

/* ---- whole messages with a fixed body ---- */

void proto_put_error(struct pbuf *b, const struct proto_error *e);
int proto_get_error(struct pcur *c, struct proto_error *e);
void proto_put_hello_ok(struct pbuf *b, const struct proto_hello_ok *h);
int proto_get_hello_ok(struct pcur *c, struct proto_hello_ok *h);
void proto_put_hold(struct pbuf *b, const struct proto_hold *h);
int proto_get_hold(struct pcur *c, struct proto_hold *h);
void proto_put_release(struct pbuf *b, const struct proto_release *r);
int proto_get_release(struct pcur *c, struct proto_release *r);
void proto_put_notice(struct pbuf *b, const struct proto_notice *n);
int proto_get_notice(struct pcur *c, struct proto_notice *n);
void proto_put_ack(struct pbuf *b, const struct proto_ack *a);
int proto_get_ack(struct pcur *c, struct proto_ack *a);
void proto_put_revoke_req(struct pbuf *b, const struct proto_revoke_req *r);
int proto_get_revoke_req(struct pcur *c, struct proto_revoke_req *r);
void proto_put_import_ok(struct pbuf *b, const struct proto_import_ok *r);
int proto_get_import_ok(struct pcur *c, struct proto_import_ok *r);
void proto_put_status_info(struct pbuf *b, const struct proto_status_info *s);
void proto_get_status_info(struct pcur *c, struct proto_status_info *s);
void proto_put_revoke_info(struct pbuf *b, const struct proto_revoke_info *r);
void proto_get_revoke_info(struct pcur *c, struct proto_revoke_info *r);
void proto_put_audit_req(struct pbuf *b, const struct proto_audit_req *r);
int proto_get_audit_req(struct pcur *c, struct proto_audit_req *r);
void proto_put_audit_hdr(struct pbuf *b, const struct proto_audit_hdr *h);
void proto_get_audit_hdr(struct pcur *c, struct proto_audit_hdr *h);
void proto_put_verify(struct pbuf *b, const struct proto_verify *v);
int proto_get_verify(struct pcur *c, struct proto_verify *v);
/* GET_KEY: the shard id alone. */
void proto_put_id(struct pbuf *b, const uint8_t id[PROTO_ID_SIZE]);
int proto_get_id(struct pcur *c, uint8_t id[PROTO_ID_SIZE]);

/* Hex helpers for ids: 32 lowercase digits and a NUL. */
void proto_id_hex(const uint8_t id[PROTO_ID_SIZE], char out[33]);
/* Return: 0, or -EINVAL unless @s is exactly 32 hex digits. */
int proto_id_parse(const char *s, uint8_t id[PROTO_ID_SIZE]);

#endif /* ORTHO_PROTO_H */
