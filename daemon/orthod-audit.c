// SPDX-License-Identifier: MIT
/*
 * The audit log: "audit.log", append-only text, one record a line:
 *
 *	<seq> <unix time ns> <SHA-256 of the previous line, hex> <event> k=v...
 *
 * Record 1 names 64 zeros as its predecessor. Each record is fsynced before
 * the action it records is answered. "audit.head" holds the last record's
 * number and hash (rewritten in place after every append), so a log cut
 * short at a record boundary is caught too, not only an edited one.
 *
 * At start the whole chain is checked. A torn last line (a crash during an
 * append, after which the head still names the record before it) is cut
 * off; any other damage stops the daemon: the log is evidence, and the
 * operator decides what happens to it (PROTOCOL.md).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "orthod.h"

#define LOG_FILE "audit.log"
#define HEAD_FILE "audit.head"
#define HEAD_LEN 86u		/* 20 digits, space, 64 hex, newline */

struct scan {
	uint64_t n;			/* good records */
	uint8_t hash[32];		/* the last good record's */
	off_t good_end;			/* file offset after it */
	int partial;			/* an unterminated last line follows */
	uint64_t bad_seq;		/* first bad record; 0: none */
	const char *reason;
	uint64_t head_seq;		/* the head to look for; 0: none */
	uint8_t head_hash[32];
	int head_found;
	/* reader: called for each good record; nonzero stops */
	int (*fn)(void *user, uint64_t seq, const char *line, size_t len);
	void *user;
};

static void sha256(const void *p, size_t n, uint8_t md[32])
{
	unsigned int len = 0;

	EVP_Digest(p, n, md, &len, EVP_sha256(), NULL);
}

static void hex32(const uint8_t h[32], char out[65])
{
	static const char x[] = "0123456789abcdef";
	int i;

	for (i = 0; i < 32; i++) {
		out[2 * i] = x[h[i] >> 4];
		out[2 * i + 1] = x[h[i] & 15];
	}
	out[64] = 0;
}

void audit_val(const char *s, char *out, size_t cap)
{
	size_t i;

	for (i = 0; s && s[i] && i + 1 < cap; i++)
		out[i] = s[i] > 0x20 && s[i] < 0x7f && s[i] != '=' ? s[i] : '_';
	if (!i && cap > 1)
		out[i++] = '-';
	out[i] = 0;
}

/* Parse a decimal field ending in a space; Return: a pointer past it. */
static const char *field_u64(const char *p, const char *end, uint64_t *v)
{
	const char *start = p;

	*v = 0;
	while (p < end && *p >= '0' && *p <= '9' && p - start < 20)
		*v = *v * 10 + (uint64_t)(*p++ - '0');
	if (p == start || p >= end || *p != ' ')
		return NULL;
	return p + 1;
}

static const char *check_line(const char *line, size_t len, uint64_t seq,
			      const uint8_t prev[32])
{
	const char *p = line, *end = line + len;
	char want[65];
	uint64_t v;
	size_t i;

	if (len > PROTO_LINE_MAX)
		return "record too long";
	for (i = 0; i < len; i++)
		if (line[i] < 0x20 || line[i] > 0x7e)
			return "a control or non-ASCII byte";
	p = field_u64(p, end, &v);
	if (!p || v != seq)
		return "record number out of sequence";
	p = field_u64(p, end, &v);
	if (!p)
		return "time field";
	hex32(prev, want);
	if (end - p < 66 || memcmp(p, want, 64) || p[64] != ' ')
		return "previous-record hash does not match (edited, removed or reordered)";
	p += 65;
	if (p >= end || *p < 'a' || *p > 'z')
		return "no event";
	return NULL;
}

static int scan_log(struct audit *a, struct scan *s)
{
	static const uint8_t zero[32];
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	FILE *f;
	int fd;

	memcpy(s->hash, zero, 32);
	fd = openat(a->dirfd, LOG_FILE, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	f = fdopen(fd, "r");
	if (!f) {
		close(fd);
		return -ENOMEM;
	}
	while ((len = getline(&line, &cap, f)) > 0) {
		if (line[len - 1] != '\n') {
			s->partial = 1;
			break;
		}
		line[--len] = 0;
		s->reason = check_line(line, (size_t)len, s->n + 1, s->hash);
		if (s->reason) {
			s->bad_seq = s->n + 1;
			break;
		}
		s->n++;
		sha256(line, (size_t)len, s->hash);
		s->good_end += len + 1;
		if (s->n == s->head_seq)
			s->head_found = !memcmp(s->hash, s->head_hash, 32);
		if (s->fn && s->fn(s->user, s->n, line, (size_t)len))
			break;
	}
	free(line);
	fclose(f);
	return 0;
}

static int head_read(struct audit *a, uint64_t *seq, uint8_t hash[32])
{
	char buf[HEAD_LEN + 1];
	unsigned int i;
	ssize_t r;

	r = pread(a->headfd, buf, HEAD_LEN, 0);
	if (r == 0)
		return -ENOENT;
	if (r != HEAD_LEN || buf[20] != ' ' || buf[85] != '\n')
		return -EBADMSG;
	buf[20] = 0;
	*seq = strtoull(buf, NULL, 10);
	for (i = 0; i < 32; i++) {
		char byte[3] = { buf[21 + 2 * i], buf[22 + 2 * i], 0 };
		char *end;

		hash[i] = (uint8_t)strtoul(byte, &end, 16);
		if (*end)
			return -EBADMSG;
	}
	return 0;
}

static int head_write(struct audit *a)
{
	char buf[HEAD_LEN + 1], hex[65];

	hex32(a->hash, hex);
	snprintf(buf, sizeof(buf), "%020" PRIu64 " %s\n", a->seq, hex);
	if (pwrite(a->headfd, buf, HEAD_LEN, 0) != HEAD_LEN)
		return -EIO;
	return fdatasync(a->headfd) ? -errno : 0;
}

/* Compare the log with its head; fix a torn tail and a lagging head. */
static int audit_check_start(struct audit *a, int have_head,
			     char *why, size_t whylen)
{
	struct scan s = { 0 };
	int ret;

	if (have_head) {
		ret = head_read(a, &s.head_seq, s.head_hash);
		if (ret) {
			snprintf(why, whylen, "%s is malformed", HEAD_FILE);
			return -EBADMSG;
		}
	}
	ret = scan_log(a, &s);
	if (ret)
		return ret;
	if (s.bad_seq) {
		snprintf(why, whylen, "record %" PRIu64 ": %s", s.bad_seq,
			 s.reason);
		return -EBADMSG;
	}
	if (s.head_seq && !s.head_found) {
		snprintf(why, whylen,
			 "the head names record %" PRIu64 " but the log %s",
			 s.head_seq, s.n < s.head_seq ? "is shorter (truncated)" :
			 "holds another record there");
		return -EBADMSG;
	}
	if (s.partial) {
		dlog(LOG_WARNING, "audit: cutting a torn last record after %" PRIu64,
		     s.n);
		if (ftruncate(a->fd, s.good_end) || fsync(a->fd))
			return -errno;
	}
	a->seq = s.n;
	memcpy(a->hash, s.hash, 32);
	return head_write(a);
}

int audit_open(struct audit *a, int dirfd, char *why, size_t whylen)
{
	int have_log, have_head, ret;

	memset(a, 0, sizeof(*a));
	a->dirfd = dirfd;
	a->fd = a->headfd = -1;
	why[0] = 0;
	have_log = !faccessat(dirfd, LOG_FILE, F_OK, AT_SYMLINK_NOFOLLOW);
	have_head = !faccessat(dirfd, HEAD_FILE, F_OK, AT_SYMLINK_NOFOLLOW);
	if (have_head && !have_log) {
		snprintf(why, whylen, "%s is missing but %s exists", LOG_FILE,
			 HEAD_FILE);
		return -EBADMSG;
	}
	a->fd = openat(dirfd, LOG_FILE, O_WRONLY | O_APPEND | O_CREAT |
		       O_CLOEXEC | O_NOFOLLOW, 0600);
	a->headfd = openat(dirfd, HEAD_FILE, O_RDWR | O_CREAT | O_CLOEXEC |
			   O_NOFOLLOW, 0600);
	if (a->fd < 0 || a->headfd < 0) {
		ret = -errno;
		snprintf(why, whylen, "open: %s", strerror(errno));
		audit_close(a);
		return ret;
	}
	ret = audit_check_start(a, have_head, why, whylen);
	if (!ret)
		ret = dir_sync(dirfd);
	if (ret)
		audit_close(a);
	return ret;
}

void audit_close(struct audit *a)
{
	if (a->fd >= 0)
		close(a->fd);
	if (a->headfd >= 0)
		close(a->headfd);
	a->fd = a->headfd = -1;
}

static int append(struct audit *a, char *line, size_t len)
{
	off_t end = lseek(a->fd, 0, SEEK_END);
	ssize_t w;

	line[len] = '\n';
	w = write(a->fd, line, len + 1);
	line[len] = 0;
	if (w == (ssize_t)len + 1 && !fdatasync(a->fd))
		return 0;
	/* Leave no torn record behind for the next one to chain onto. */
	if (end >= 0 && ftruncate(a->fd, end))
		dlog(LOG_ERR, "audit: cannot cut a failed append: %m");
	return w < 0 ? -errno : -EIO;
}

int audit_log(struct audit *a, const char *event, const char *fmt, ...)
{
	char line[PROTO_LINE_MAX + 2], prev[65];
	size_t len, i;
	va_list ap;
	int n, ret;

	hex32(a->hash, prev);
	n = snprintf(line, sizeof(line), "%" PRIu64 " %" PRIu64 " %s %s ",
		     a->seq + 1, now_real_ns(), prev, event);
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	len = strlen(line);
	if (len > PROTO_LINE_MAX)
		len = PROTO_LINE_MAX;
	while (len && line[len - 1] == ' ')
		len--;
	line[len] = 0;
	for (i = 0; i < len; i++)
		if (line[i] < 0x20 || line[i] > 0x7e)
			line[i] = '_';
	ret = append(a, line, len);
	if (ret) {
		dlog(LOG_ERR, "audit: cannot append \"%s\": %s", event,
		     strerror(-ret));
		return ret;
	}
	a->seq++;
	sha256(line, len, a->hash);
	ret = head_write(a);
	if (ret)
		dlog(LOG_ERR, "audit: cannot update %s: %s", HEAD_FILE,
		     strerror(-ret));
	return ret;
}

int audit_verify(struct audit *a, struct proto_verify *v)
{
	struct scan s = { 0 };
	uint64_t hseq = 0;
	uint8_t hhash[32];
	int ret;

	memset(v, 0, sizeof(*v));
	ret = scan_log(a, &s);
	if (ret)
		return ret;
	v->records = s.n;
	if (s.bad_seq) {
		v->bad_seq = s.bad_seq;
		snprintf(v->reason, sizeof(v->reason), "%s", s.reason);
	} else if (s.partial) {
		v->bad_seq = s.n + 1;
		snprintf(v->reason, sizeof(v->reason), "a torn last record");
	} else if (s.n < a->seq) {
		v->bad_seq = s.n + 1;
		snprintf(v->reason, sizeof(v->reason),
			 "truncated: %" PRIu64 " records, the daemon wrote %" PRIu64,
			 s.n, a->seq);
	} else if (s.n > a->seq || memcmp(s.hash, a->hash, 32)) {
		v->bad_seq = a->seq;
		snprintf(v->reason, sizeof(v->reason),
			 "the last record is not the one the daemon wrote");
	} else if (head_read(a, &hseq, hhash) || hseq != a->seq ||
		   memcmp(hhash, a->hash, 32)) {
		v->bad_seq = a->seq;
		snprintf(v->reason, sizeof(v->reason), "%s does not match",
			 HEAD_FILE);
	} else {
		v->ok = 1;
	}
	return 0;
}

struct read_ctx {
	uint64_t from;
	uint32_t max, n;
	size_t budget;
	struct pbuf *b;
	uint64_t next;
	int more;
};

static int read_one(void *user, uint64_t seq, const char *line, size_t len)
{
	struct read_ctx *r = user;

	if (seq < r->from)
		return 0;
	if (r->n == r->max || r->b->len + len + 2 > r->budget) {
		r->more = 1;
		return 1;
	}
	pbuf_str(r->b, line);
	r->n++;
	r->next = seq + 1;
	return 0;
}

int audit_read(struct audit *a, uint64_t from, uint32_t max, size_t budget,
	       struct pbuf *b, uint64_t *next, int *more)
{
	struct read_ctx r = { .from = from, .max = max, .budget = budget,
			      .b = b, .next = from };
	struct scan s = { .fn = read_one, .user = &r };
	int ret;

	ret = scan_log(a, &s);
	if (ret)
		return ret;
	if (b->err)
		return b->err;
	*next = r.next;
	*more = r.more;
	return (int)r.n;
}
