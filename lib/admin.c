// SPDX-License-Identifier: MIT
/*
 * The admin calls of ortho-admin.h: connecting, importing keys, policy
 * rules and the audit log. Status and revocation results, with their
 * lists, are in admin_status.c. Every call is one round trip (an import of
 * more than PROTO_IMPORT_MAX keys is several, each durable on its own).
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "admin_priv.h"
#include "keyfile.h"
#include "log.h"
#include "secmem.h"

int admin_call(struct ortho_admin *a, struct pbuf *b, uint16_t expect,
	       int timeout_ms, struct authority_reply *r, const char *what)
{
	int ret = authority_call(a->auth, b, expect, timeout_ms, r);

	if (ret)
		olog_err(a->ctx, "%s: %s", what,
			 *authority_last_error(a->auth) ?
			 authority_last_error(a->auth) : ortho_strerror(ret));
	return ret;
}

int admin_copy_out(void *dst, const void *src, size_t full)
{
	size_t sz = *(const size_t *)dst;

	if (sz < full)
		return -EINVAL;
	memcpy((char *)dst + sizeof(size_t), (const char *)src + sizeof(size_t),
	       full - sizeof(size_t));
	return 0;
}

ORTHO_API int ortho_admin_connect(struct ortho_ctx *ctx, const char *path,
				  struct ortho_admin **out)
{
	struct ortho_admin *a;
	int ret;

	if (!out)
		return -EINVAL;
	*out = NULL;
	a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->ctx = ctx;
	ret = authority_connect(ctx, path ? path : ORTHO_ADMIN_SOCKET, &a->auth);
	if (!ret && !authority_is_admin(a->auth)) {
		olog_err(ctx, "%s: orthod takes admin requests from root or its admin group only",
			 path ? path : ORTHO_ADMIN_SOCKET);
		ret = -EPERM;
	}
	if (ret) {
		ortho_admin_close(a);
		return ret;
	}
	*out = a;
	return 0;
}

ORTHO_API void ortho_admin_close(struct ortho_admin *a)
{
	if (!a)
		return;
	authority_close(a->auth);
	free(a);
}

/* ---- keys ---- */

static int import_batch(struct ortho_admin *a, const struct keyfile *kf,
			size_t from, size_t n, struct ortho_admin_import_result *res)
{
	size_t cap = PROTO_HDR_SIZE + 4 + n * (PROTO_KEY_MIN + PROTO_LABEL_MAX);
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
		const struct keyfile_entry *e = &kf->e[i];

		memcpy(k.id, e->id, PROTO_ID_SIZE);
		memcpy(k.key, e->key, PROTO_KEY_SIZE);
		memcpy(k.label, e->label, sizeof(k.label));
		k.layer = e->layer;
		proto_put_key(&b, &k);
	}
	explicit_bzero(&k, sizeof(k));
	ret = admin_call(a, &b, PROTO_IMPORT_OK, AUTHORITY_TIMEOUT_MS, &r,
			 "import");
	secmem_free(buf, cap);
	if (ret)
		return ret;
	pcur_init(&c, r.payload, r.h.length);
	ret = proto_get_import_ok(&c, &ok);
	authority_reply_free(&r);
	if (ret) {
		olog_err(a->ctx, "import: bad reply: %s", c.why);
		return -EPROTO;
	}
	res->added += ok.added;
	res->present += ok.present;
	return 0;
}

/* Overwrite @path in place, then remove it; the keys are in the daemon. */
static int wipe_file(struct ortho_admin *a, const char *path)
{
	static const uint8_t zero[4096];
	char *dup, *dir;
	struct stat st;
	off_t done = 0;
	int fd, dfd, ret = 0;

	fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 || fstat(fd, &st)) {
		ret = -errno;
		goto out;
	}
	while (done < st.st_size) {
		size_t n = st.st_size - done < (off_t)sizeof(zero) ?
			   (size_t)(st.st_size - done) : sizeof(zero);
		ssize_t w = pwrite(fd, zero, n, done);

		if (w <= 0) {
			ret = w < 0 ? -errno : -EIO;
			goto out;
		}
		done += w;
	}
	if (fsync(fd) || unlink(path)) {
		ret = -errno;
		goto out;
	}
	dup = strdup(path);
	dir = dup ? dirname(dup) : NULL;
	dfd = dir ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	free(dup);
out:
	if (fd >= 0)
		close(fd);
	if (ret)
		olog_err(a->ctx, "%s: the keys are imported, but the file could not be wiped: %s",
			 path, strerror(-ret));
	return ret;
}

ORTHO_API int ortho_admin_import_keys(struct ortho_admin *a,
				      const char *key_file, unsigned int flags,
				      struct ortho_admin_import_result *res)
{
	struct ortho_admin_import_result out = { .sz = sizeof(out) };
	struct keyfile kf;
	size_t i, n;
	int ret;

	if (!a || !key_file || (flags & ~ORTHO_ADMIN_IMPORT_WIPE))
		return -EINVAL;
	if (res && res->sz < sizeof(*res))
		return -EINVAL;
	ret = keyfile_load(a->ctx, key_file, &kf);
	if (ret)
		return ret;
	out.keys = (uint32_t)kf.n;
	if (!kf.n) {
		olog_err(a->ctx, "%s: no keys in the file", key_file);
		ret = -ENOKEY;
	}
	for (i = 0; !ret && i < kf.n; i += n) {
		n = kf.n - i < PROTO_IMPORT_MAX ? kf.n - i : PROTO_IMPORT_MAX;
		ret = import_batch(a, &kf, i, n, &out);
	}
	keyfile_free(&kf);
	if (!ret && (flags & ORTHO_ADMIN_IMPORT_WIPE)) {
		ret = wipe_file(a, key_file);
		out.wiped = !ret;
	}
	if (res)
		admin_copy_out(res, &out, sizeof(out));
	return ret;
}

/* ---- policy ---- */

static int rule_to_proto(struct ortho_admin *a, const struct ortho_admin_rule *in,
			 struct proto_rule *r)
{
	memset(r, 0, sizeof(*r));
	if (!in || in->sz < sizeof(*in))
		return -EINVAL;
	if (!!in->shard[0] == !!in->label[0]) {
		olog_err(a->ctx, "rule: name a shard or a label (one of them)");
		return -EINVAL;
	}
	if (in->shard[0]) {
		r->sel.kind = PROTO_SEL_ID;
		if (proto_id_parse(in->shard, r->sel.id)) {
			olog_err(a->ctx, "rule: shard \"%.40s\" is not 32 hex digits",
				 in->shard);
			return -EINVAL;
		}
	} else {
		r->sel.kind = PROTO_SEL_LABEL;
		if (strnlen(in->label, sizeof(in->label)) >= sizeof(r->sel.label) ||
		    !proto_str_valid(in->label, PSTR_LABEL)) {
			olog_err(a->ctx, "rule: label not 1 to %u printable characters without blanks",
				 PROTO_LABEL_MAX);
			return -EINVAL;
		}
		strcpy(r->sel.label, in->label);
	}
	if ((in->principal != ORTHO_ADMIN_UID &&
	     in->principal != ORTHO_ADMIN_GID) || in->id == UINT32_MAX) {
		olog_err(a->ctx, "rule: not a uid or gid");
		return -EINVAL;
	}
	r->principal = (uint8_t)in->principal;
	r->who = in->id;
	return 0;
}

static int set_rule(struct ortho_admin *a, const struct ortho_admin_rule *in,
		    uint16_t type)
{
	uint8_t buf[PROTO_HDR_SIZE + 128];
	struct authority_reply r;
	struct proto_rule rule;
	struct pbuf b;
	int ret;

	if (!a)
		return -EINVAL;
	ret = rule_to_proto(a, in, &rule);
	if (ret)
		return ret;
	rule.allow = type == PROTO_GRANT;
	pbuf_init(&b, buf, sizeof(buf), 0);
	proto_begin(&b, type, 0);
	proto_put_rule(&b, &rule);
	ret = admin_call(a, &b, PROTO_OK, AUTHORITY_TIMEOUT_MS, &r,
			 type == PROTO_GRANT ? "grant" : "deny");
	if (!ret)
		authority_reply_free(&r);
	return ret;
}

ORTHO_API int ortho_admin_grant(struct ortho_admin *a,
				const struct ortho_admin_rule *rule)
{
	return set_rule(a, rule, PROTO_GRANT);
}

ORTHO_API int ortho_admin_deny(struct ortho_admin *a,
			       const struct ortho_admin_rule *rule)
{
	return set_rule(a, rule, PROTO_DENY);
}

/* ---- audit ---- */

static int audit_page(struct ortho_admin *a, uint64_t *from,
		      ortho_admin_audit_fn fn, void *user, int *more)
{
	struct proto_audit_req q = { .from_seq = *from, .max = 4096 };
	char line[PROTO_LINE_MAX + 1];
	uint8_t buf[PROTO_HDR_SIZE + 16];
	struct proto_audit_hdr h;
	struct authority_reply r;
	struct pcur c;
	struct pbuf b;
	uint32_t n, i;
	int ret;

	pbuf_init(&b, buf, sizeof(buf), 0);
	proto_begin(&b, PROTO_AUDIT_READ, 0);
	proto_put_audit_req(&b, &q);
	ret = admin_call(a, &b, PROTO_AUDIT_RECORDS, AUTHORITY_TIMEOUT_MS, &r,
			 "audit");
	if (ret)
		return ret;
	pcur_init(&c, r.payload, r.h.length);
	proto_get_audit_hdr(&c, &h);
	n = pcur_count(&c, PROTO_LIST_MAX, PROTO_LINE_MIN, "record count");
	for (i = 0; !ret && i < n && !c.err; i++) {
		pcur_str(&c, line, sizeof(line), PSTR_LINE, "record");
		if (!c.err)
			ret = fn(user, strtoull(line, NULL, 10), line);
	}
	if (!ret && pcur_end(&c)) {
		olog_err(a->ctx, "audit: bad reply: %s", c.why);
		ret = -EPROTO;
	}
	if (!ret && h.more && h.next_seq <= *from) {
		olog_err(a->ctx, "audit: the daemon does not move on from record %llu",
			 (unsigned long long)*from);
		ret = -EPROTO;
	}
	authority_reply_free(&r);
	*from = h.next_seq;
	*more = h.more;
	return ret;
}

ORTHO_API int ortho_admin_audit_read(struct ortho_admin *a, uint64_t from_seq,
				     ortho_admin_audit_fn fn, void *user)
{
	int more = 1, ret = 0;

	if (!a || !fn)
		return -EINVAL;
	while (!ret && more)
		ret = audit_page(a, &from_seq, fn, user, &more);
	return ret;
}

ORTHO_API int ortho_admin_audit_verify(struct ortho_admin *a,
				       struct ortho_admin_audit_check *out)
{
	struct ortho_admin_audit_check res = { .sz = sizeof(res) };
	uint8_t buf[PROTO_HDR_SIZE];
	struct authority_reply r;
	struct proto_verify v;
	struct pcur c;
	struct pbuf b;
	int ret;

	if (!a || !out || out->sz < sizeof(*out))
		return -EINVAL;
	pbuf_init(&b, buf, sizeof(buf), 0);
	proto_begin(&b, PROTO_AUDIT_VERIFY, 0);
	ret = admin_call(a, &b, PROTO_AUDIT_VERIFY_RESULT, AUTHORITY_TIMEOUT_MS,
			 &r, "audit verify");
	if (ret)
		return ret;
	pcur_init(&c, r.payload, r.h.length);
	ret = proto_get_verify(&c, &v);
	authority_reply_free(&r);
	if (ret) {
		olog_err(a->ctx, "audit verify: bad reply: %s", c.why);
		return -EPROTO;
	}
	res.ok = v.ok;
	res.records = v.records;
	res.bad_record = v.bad_seq;
	memcpy(res.reason, v.reason, sizeof(res.reason));
	return admin_copy_out(out, &res, sizeof(res));
}
