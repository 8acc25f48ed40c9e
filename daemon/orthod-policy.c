// SPDX-License-Identifier: MIT
/*
 * Policy: which uids and gids may receive which shard's key.
 *
 * A rule names a shard (by id, or every shard with a label), a principal
 * (a uid, or a gid matched against the peer's primary and supplementary
 * groups) and grants or denies. A matching deny wins over any grant; with
 * no matching grant the answer is no, for root as for anyone.
 *
 * Stored as text in "policy", replaced whole on every change:
 *
 *	ortho-policy 1
 *	allow uid 1000 label tenant-a
 *	deny gid 100 id 00112233445566778899aabbccddeeff
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "orthod.h"

#define POL_FILE "policy"
#define POL_HEADER "ortho-policy 1"
#define POL_MAX_RULES 65536u
#define POL_LINE_MAX 160u

int sel_match(const struct proto_sel *sel, const struct shard *s)
{
	if (sel->kind == PROTO_SEL_ID)
		return !memcmp(sel->id, s->id, PROTO_ID_SIZE);
	return !strcmp(sel->label, s->label);
}

static int sel_equal(const struct proto_sel *a, const struct proto_sel *b)
{
	if (a->kind != b->kind)
		return 0;
	if (a->kind == PROTO_SEL_ID)
		return !memcmp(a->id, b->id, PROTO_ID_SIZE);
	return !strcmp(a->label, b->label);
}

static int principal_match(const struct proto_rule *r, const struct peer *p)
{
	int i;

	if (r->principal == PROTO_UID)
		return r->who == p->uid;
	if (r->who == p->gid)
		return 1;
	for (i = 0; i < p->ngroups; i++)
		if (r->who == p->groups[i])
			return 1;
	return 0;
}

int policy_check(const struct policy *p, const struct shard *s,
		 const struct peer *who)
{
	int allowed = 0;
	size_t i;

	for (i = 0; i < p->n; i++) {
		const struct proto_rule *r = &p->v[i];

		if (!sel_match(&r->sel, s) || !principal_match(r, who))
			continue;
		if (!r->allow)
			return -EACCES;
		allowed = 1;
	}
	return allowed ? 0 : -EACCES;
}

/* The same rule but for its allow bit: a second one replaces it. */
static int rule_same(const struct proto_rule *a, const struct proto_rule *b)
{
	return sel_equal(&a->sel, &b->sel) && a->principal == b->principal &&
	       a->who == b->who;
}

int policy_kernel(const struct policy *p, const struct shard *s,
		  const struct proto_rule *extra, struct orthod_kmod_policy *out)
{
	size_t i;
	int ret = 0;

	memset(out, 0, sizeof(*out));
	for (i = 0; !ret && i < p->n; i++) {
		const struct proto_rule *r = &p->v[i];

		if (!sel_match(&r->sel, s) || (extra && rule_same(r, extra)))
			continue;
		ret = orthod_kmod_policy_add(out, r->allow,
					     r->principal == PROTO_GID, r->who);
	}
	if (!ret && extra && sel_match(&extra->sel, s))
		ret = orthod_kmod_policy_add(out, extra->allow,
					     extra->principal == PROTO_GID,
					     extra->who);
	return ret;
}

static int rule_line(const struct proto_rule *r, char *buf, size_t cap)
{
	char id[33];
	const char *what = r->sel.label;

	if (r->sel.kind == PROTO_SEL_ID) {
		proto_id_hex(r->sel.id, id);
		what = id;
	}
	return snprintf(buf, cap, "%s %s %" PRIu32 " %s %s\n",
			r->allow ? "allow" : "deny",
			r->principal == PROTO_UID ? "uid" : "gid", r->who,
			r->sel.kind == PROTO_SEL_ID ? "id" : "label", what);
}

static int policy_save(const struct policy *p)
{
	size_t cap = sizeof(POL_HEADER) + 1 + p->n * POL_LINE_MAX, len;
	char *buf = malloc(cap);
	size_t i;
	int ret;

	if (!buf)
		return -ENOMEM;
	len = (size_t)snprintf(buf, cap, "%s\n", POL_HEADER);
	for (i = 0; i < p->n; i++)
		len += (size_t)rule_line(&p->v[i], buf + len, cap - len);
	ret = file_write_durable(p->dirfd, POL_FILE, buf, len, 1);
	free(buf);
	return ret;
}

static int policy_reserve(struct policy *p)
{
	struct proto_rule *v;
	size_t cap;

	if (p->n < p->cap)
		return 0;
	if (p->n >= POL_MAX_RULES)
		return -ENOSPC;
	cap = p->cap ? 2 * p->cap : 32;
	v = realloc(p->v, cap * sizeof(*v));
	if (!v)
		return -ENOMEM;
	p->v = v;
	p->cap = cap;
	return 0;
}

int policy_set(struct policy *p, const struct proto_rule *r)
{
	struct proto_rule old;
	size_t i;
	int ret;

	for (i = 0; i < p->n; i++) {
		if (!rule_same(&p->v[i], r))
			continue;
		if (p->v[i].allow == r->allow)
			return 0;
		old = p->v[i];
		p->v[i] = *r;
		ret = policy_save(p);
		if (ret)
			p->v[i] = old;
		return ret;
	}
	ret = policy_reserve(p);
	if (ret)
		return ret;
	p->v[p->n++] = *r;
	ret = policy_save(p);
	if (ret)
		p->n--;
	return ret;
}

static int parse_u32(const char *s, uint32_t *out)
{
	char *end;
	unsigned long v;

	if (!*s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v >= UINT32_MAX)
		return -EINVAL;
	*out = (uint32_t)v;
	return 0;
}

static int parse_rule(char *line, struct proto_rule *r)
{
	char *f[5], *save = NULL;
	int n = 0;

	memset(r, 0, sizeof(*r));
	for (char *t = strtok_r(line, " ", &save); t;
	     t = strtok_r(NULL, " ", &save)) {
		if (n == 5)
			return -EBADMSG;
		f[n++] = t;
	}
	if (n != 5)
		return -EBADMSG;
	if (!strcmp(f[0], "allow"))
		r->allow = 1;
	else if (strcmp(f[0], "deny"))
		return -EBADMSG;
	if (!strcmp(f[1], "uid"))
		r->principal = PROTO_UID;
	else if (!strcmp(f[1], "gid"))
		r->principal = PROTO_GID;
	else
		return -EBADMSG;
	if (parse_u32(f[2], &r->who))
		return -EBADMSG;
	if (!strcmp(f[3], "id")) {
		r->sel.kind = PROTO_SEL_ID;
		return proto_id_parse(f[4], r->sel.id) ? -EBADMSG : 0;
	}
	if (strcmp(f[3], "label") || !proto_str_valid(f[4], PSTR_LABEL))
		return -EBADMSG;
	r->sel.kind = PROTO_SEL_LABEL;
	strcpy(r->sel.label, f[4]);
	return 0;
}

static int policy_parse(struct policy *p, char *text)
{
	char *save = NULL, *line;
	unsigned int lineno = 1;
	int ret = 0;

	line = strtok_r(text, "\n", &save);
	if (!line || strcmp(line, POL_HEADER)) {
		dlog(LOG_ERR, "policy: line 1: not \"%s\"", POL_HEADER);
		return -EBADMSG;
	}
	while (!ret && (line = strtok_r(NULL, "\n", &save))) {
		struct proto_rule r;

		lineno++;
		ret = parse_rule(line, &r);
		if (ret) {
			dlog(LOG_ERR, "policy: line %u: not a rule", lineno);
			break;
		}
		ret = policy_reserve(p);
		if (!ret)
			p->v[p->n++] = r;
	}
	return ret;
}

int policy_open(struct policy *p, int dirfd)
{
	uint8_t *text;
	size_t len;
	int ret;

	memset(p, 0, sizeof(*p));
	p->dirfd = dirfd;
	ret = file_read_all(dirfd, POL_FILE,
			    (size_t)POL_MAX_RULES * POL_LINE_MAX, &text, &len);
	if (ret == -ENOENT)
		return 0;
	if (ret)
		return ret;
	if (strlen((char *)text) != len) {
		dlog(LOG_ERR, "policy: a NUL byte in the file");
		ret = -EBADMSG;
	} else {
		ret = policy_parse(p, (char *)text);
	}
	free(text);
	if (ret)
		policy_close(p);
	return ret;
}

void policy_close(struct policy *p)
{
	free(p->v);
	p->v = NULL;
	p->n = p->cap = 0;
}
