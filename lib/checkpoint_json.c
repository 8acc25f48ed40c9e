// SPDX-License-Identifier: MIT
/*
 * A small, strict JSON reader for checkpoint headers (safetensors) and
 * config.json. Strings are decoded (escapes, surrogate pairs, no NUL);
 * integers are non-negative, without fraction or exponent; any other value
 * can only be checked against the grammar and skipped. Every message names
 * the file and the byte offset.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "checkpoint.h"
#include "log.h"

#define JSON_MAX_DEPTH 64

int json_fail(struct json_in *j, const char *msg)
{
	olog_err(j->ctx, "%s: JSON error at byte %td: %s", j->what,
		 j->p - j->base, msg);
	return -EBADMSG;
}

static void json_ws(struct json_in *j)
{
	while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' ||
				 *j->p == '\n' || *j->p == '\r'))
		j->p++;
}

int json_peek(struct json_in *j)
{
	json_ws(j);
	return j->p < j->end ? (unsigned char)*j->p : -1;
}

int json_char(struct json_in *j, char c)
{
	char msg[32];

	if (json_peek(j) == (unsigned char)c) {
		j->p++;
		return 0;
	}
	snprintf(msg, sizeof(msg), "expected '%c'", c);
	return json_fail(j, msg);
}

static int hex4(struct json_in *j, uint32_t *v)
{
	int i;

	*v = 0;
	if (j->end - j->p < 4)
		return json_fail(j, "short \\u escape");
	for (i = 0; i < 4; i++) {
		char c = *j->p++;

		*v <<= 4;
		if (c >= '0' && c <= '9')
			*v |= (uint32_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			*v |= (uint32_t)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			*v |= (uint32_t)(c - 'A' + 10);
		else
			return json_fail(j, "bad hex digit in \\u escape");
	}
	return 0;
}

/* A \uXXXX escape (after the 'u'), surrogate pairs joined. */
static int json_unicode(struct json_in *j, uint32_t *cp)
{
	uint32_t lo;
	int ret = hex4(j, cp);

	if (ret)
		return ret;
	if (*cp >= 0xdc00 && *cp <= 0xdfff)
		return json_fail(j, "lone low surrogate");
	if (*cp < 0xd800 || *cp > 0xdbff)
		return *cp ? 0 : json_fail(j, "NUL in string");
	if (j->end - j->p < 2 || j->p[0] != '\\' || j->p[1] != 'u')
		return json_fail(j, "lone high surrogate");
	j->p += 2;
	ret = hex4(j, &lo);
	if (ret)
		return ret;
	if (lo < 0xdc00 || lo > 0xdfff)
		return json_fail(j, "bad surrogate pair");
	*cp = 0x10000 + ((*cp - 0xd800) << 10) + (lo - 0xdc00);
	return 0;
}

static int put_utf8(char *out, size_t cap, size_t *len, uint32_t cp)
{
	char b[4];
	size_t n, i;

	if (cp < 0x80) {
		b[0] = (char)cp;
		n = 1;
	} else if (cp < 0x800) {
		b[0] = (char)(0xc0 | cp >> 6);
		b[1] = (char)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		b[0] = (char)(0xe0 | cp >> 12);
		b[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		b[2] = (char)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		b[0] = (char)(0xf0 | cp >> 18);
		b[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
		b[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
		b[3] = (char)(0x80 | (cp & 0x3f));
		n = 4;
	}
	if (!out)
		return 0;
	if (*len + n >= cap)
		return -ENAMETOOLONG;
	for (i = 0; i < n; i++)
		out[(*len)++] = b[i];
	out[*len] = 0;
	return 0;
}

static int json_escape(struct json_in *j, uint32_t *cp)
{
	static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
	const char *s;

	if (j->p >= j->end)
		return json_fail(j, "unterminated string");
	if (*j->p == 'u') {
		j->p++;
		return json_unicode(j, cp);
	}
	s = strchr(from, *j->p);
	if (!*j->p || !s)
		return json_fail(j, "bad escape in string");
	j->p++;
	*cp = (unsigned char)to[s - from];
	return 0;
}

int json_string_t(struct json_in *j, char *out, size_t cap, int *trunc)
{
	size_t len = 0;
	int ret;

	ret = json_char(j, '"');
	if (ret)
		return ret;
	if (out)
		out[0] = 0;
	for (;;) {
		uint32_t cp;

		if (j->p >= j->end)
			return json_fail(j, "unterminated string");
		cp = (unsigned char)*j->p++;
		if (cp == '"')
			return 0;
		if (cp < 0x20)
			return json_fail(j, "control character in string");
		if (cp == '\\') {
			ret = json_escape(j, &cp);
			if (ret)
				return ret;
			ret = put_utf8(out, cap, &len, cp);
		} else {
			ret = 0;
			if (out && len + 1 >= cap) {
				ret = -ENAMETOOLONG;
			} else if (out) {
				out[len++] = (char)cp;
				out[len] = 0;
			}
		}
		if (ret && trunc)
			*trunc = 1;
		else if (ret)
			return json_fail(j, "string too long");
	}
}

/* A non-negative integer (no sign, fraction, exponent or leading zero). */
int json_uint(struct json_in *j, uint64_t *v)
{
	int c = json_peek(j);

	*v = 0;
	if (c == '-')
		return json_fail(j, "negative number where a size is expected");
	if (c < '0' || c > '9')
		return json_fail(j, "expected an integer");
	if (c == '0' && j->end - j->p > 1 && j->p[1] >= '0' && j->p[1] <= '9')
		return json_fail(j, "leading zero");
	while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
		if (*v > (UINT64_MAX - 9) / 10)
			return json_fail(j, "integer too large");
		*v = *v * 10 + (uint64_t)(*j->p++ - '0');
	}
	if (j->p < j->end && (*j->p == '.' || *j->p == 'e' || *j->p == 'E'))
		return json_fail(j, "expected an integer, not a fraction");
	return 0;
}

static int json_digits(struct json_in *j)
{
	const char *s = j->p;

	while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
		j->p++;
	return j->p > s ? 0 : json_fail(j, "bad number");
}

/* Any JSON number, checked against the grammar and skipped. */
static int json_skip_number(struct json_in *j)
{
	int ret;

	if (*j->p == '-')
		j->p++;
	if (j->p < j->end && *j->p == '0')
		j->p++;
	else if ((ret = json_digits(j)))
		return ret;
	if (j->p < j->end && *j->p == '.') {
		j->p++;
		if ((ret = json_digits(j)))
			return ret;
	}
	if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
		j->p++;
		if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
			j->p++;
		if ((ret = json_digits(j)))
			return ret;
	}
	return 0;
}

/* The rest of an object or array after its opening bracket. */
static int json_skip_members(struct json_in *j, int depth, int object)
{
	char close = object ? '}' : ']';
	int ret;

	if (json_peek(j) == close) {
		j->p++;
		return 0;
	}
	for (;;) {
		if (object && ((ret = json_string(j, NULL, 0)) ||
			       (ret = json_char(j, ':'))))
			return ret;
		ret = json_skip(j, depth + 1);
		if (ret)
			return ret;
		if (json_peek(j) == ',') {
			j->p++;
			continue;
		}
		return json_char(j, close);
	}
}

static int json_literal(struct json_in *j, const char *lit)
{
	size_t n = strlen(lit);

	if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n))
		return json_fail(j, "unexpected character");
	j->p += n;
	return 0;
}

/* Any JSON value, checked and skipped. */
int json_skip(struct json_in *j, int depth)
{
	int c = json_peek(j);

	if (depth > JSON_MAX_DEPTH)
		return json_fail(j, "nested too deeply");
	switch (c) {
	case '{':
	case '[':
		j->p++;
		return json_skip_members(j, depth, c == '{');
	case '"':
		return json_string(j, NULL, 0);
	case 't':
		return json_literal(j, "true");
	case 'f':
		return json_literal(j, "false");
	case 'n':
		return json_literal(j, "null");
	case -1:
		return json_fail(j, "unexpected end");
	default:
		if (c == '-' || (c >= '0' && c <= '9'))
			return json_skip_number(j);
		return json_fail(j, "unexpected character");
	}
}

