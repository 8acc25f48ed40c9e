// SPDX-License-Identifier: MIT
/*
 * The key file (lib/FORMATS.md): "ortho-keys 1", then one line per shard,
 * "<shard id, 32 hex> <key, 64 hex> <layer> <label>".
 *
 * Keys only ever pass through secmem: the file is read with read(2) into
 * a secmem buffer (stdio would keep copies in its own buffers), parsed in
 * place, and the buffer is wiped; saving formats into secmem and writes
 * with write(2). Messages name the line but never echo its contents.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keyfile.h"
#include "log.h"
#include "secmem.h"
#include "shard.h"
#include "shard_priv.h"

#define KF_HEADER "ortho-keys"
#define KF_VERSION 1
#define KF_MAX_SIZE (64u << 20)
/* id, key, a u32 layer, a label, three blanks and a newline */
#define KF_LINE_MAX (32 + 64 + 10 + OSH_LABEL_MAX + 4)

static const char hexdig[] = "0123456789abcdef";

static int unhex(const char *s, uint8_t *out, size_t n)
{
	size_t i;

	if (strlen(s) != 2 * n)
		return -1;
	for (i = 0; i < 2 * n; i++) {
		char c = s[i];
		int v;

		if (c >= '0' && c <= '9')
			v = c - '0';
		else if (c >= 'a' && c <= 'f')
			v = c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			v = c - 'A' + 10;
		else
			return -1;
		if (i % 2)
			out[i / 2] |= (uint8_t)v;
		else
			out[i / 2] = (uint8_t)(v << 4);
	}
	return 0;
}

static char *put_hex(char *d, const uint8_t *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		*d++ = hexdig[s[i] >> 4];
		*d++ = hexdig[s[i] & 15];
	}
	return d;
}

static int parse_u32(const char *s, uint32_t *v)
{
	uint64_t x = 0;
	size_t i, n = strlen(s);

	if (!n || n > 10 || (n > 1 && s[0] == '0'))
		return -1;
	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		x = x * 10 + (uint64_t)(s[i] - '0');
	}
	if (x > UINT32_MAX)
		return -1;
	*v = (uint32_t)x;
	return 0;
}

/* Split @s on blanks into at most @max fields. Return: the count, or -1. */
static int split(char *s, char **f, int max)
{
	int n = 0;

	for (;;) {
		while (*s == ' ' || *s == '\t')
			*s++ = 0;
		if (!*s)
			return n;
		if (n == max)
			return -1;
		f[n++] = s;
		while (*s && *s != ' ' && *s != '\t')
			s++;
	}
}

static const char *parse_entry(char *line, struct keyfile_entry *e)
{
	char *f[4];

	memset(e, 0, sizeof(*e));
	if (split(line, f, 4) != 4)
		return "expected 4 fields: shard id, key, layer, label";
	if (unhex(f[0], e->id, OSH_ID_SIZE))
		return "shard id is not 32 hex digits";
	if (unhex(f[1], e->key, OSH_KEY_SIZE))
		return "key is not 64 hex digits";
	if (parse_u32(f[2], &e->layer))
		return "layer is not a number from 0 to 4294967295";
	if (!osh_label_ok(f[3]))
		return "label longer than 63 characters or not printable";
	strcpy(e->label, f[3]);
	return NULL;
}

static int parse_header(struct ortho_ctx *ctx, const char *path, char *line)
{
	char *f[3];
	uint32_t v;

	if (split(line, f, 2) != 2 || strcmp(f[0], KF_HEADER) ||
	    parse_u32(f[1], &v)) {
		olog_err(ctx, "%s: line 1: not a key file (expected \"%s %d\")",
			 path, KF_HEADER, KF_VERSION);
		return -EBADMSG;
	}
	if (v != KF_VERSION) {
		olog_err(ctx, "%s: key file version %u, this library reads %d",
			 path, v, KF_VERSION);
		return -EPROTONOSUPPORT;
	}
	return 0;
}

static int id_cmp(const void *a, const void *b, void *arg)
{
	const struct keyfile *kf = arg;

	return memcmp(kf->e[*(const size_t *)a].id, kf->e[*(const size_t *)b].id,
		      OSH_ID_SIZE);
}

/* Indices of two entries with the same id, or -1 when every id is unique. */
static int find_dup(const struct keyfile *kf, size_t *first, size_t *second)
{
	size_t *ix, i;
	int ret = -1;

	if (kf->n < 2)
		return -1;
	ix = malloc(kf->n * sizeof(*ix));
	if (!ix)
		return -ENOMEM;
	for (i = 0; i < kf->n; i++)
		ix[i] = i;
	qsort_r(ix, kf->n, sizeof(*ix), id_cmp, (void *)kf);
	for (i = 1; i < kf->n; i++) {
		if (!id_cmp(&ix[i - 1], &ix[i], (void *)kf)) {
			*first = ix[i - 1] < ix[i] ? ix[i - 1] : ix[i];
			*second = ix[i - 1] < ix[i] ? ix[i] : ix[i - 1];
			ret = 0;
			break;
		}
	}
	free(ix);
	return ret;
}

static int parse_lines(struct ortho_ctx *ctx, const char *path, char *buf,
		       size_t len, struct keyfile *kf, unsigned int *lines)
{
	struct keyfile_entry e;
	unsigned int no = 0;
	char *p = buf, *end = buf + len;
	int ret = 0;

	while (!ret && p < end) {
		char *nl = memchr(p, '\n', (size_t)(end - p)), *line = p;
		const char *why;

		if (!nl)
			nl = end;
		*nl = 0;
		if (nl > p && nl[-1] == '\r')
			nl[-1] = 0;
		p = nl + 1;
		if (++no == 1) {
			ret = parse_header(ctx, path, line);
			continue;
		}
		if (!line[strspn(line, " \t")] || line[0] == '#')
			continue;
		why = parse_entry(line, &e);
		if (why) {
			olog_err(ctx, "%s: line %u: %s", path, no, why);
			ret = -EBADMSG;
		} else {
			lines[kf->n] = no;
			ret = keyfile_add(kf, &e);
		}
	}
	explicit_bzero(&e, sizeof(e));
	if (!ret && !no) {
		olog_err(ctx, "%s: empty, not a key file", path);
		ret = -EBADMSG;
	}
	return ret;
}

static int parse(struct ortho_ctx *ctx, const char *path, char *buf,
		 size_t len, struct keyfile *kf)
{
	/* At most one entry per line: count newlines for the line table. */
	size_t nlines = 1, i, a, b;
	unsigned int *lines;
	int ret;

	for (i = 0; i < len; i++)
		nlines += buf[i] == '\n';
	lines = calloc(nlines, sizeof(*lines));
	if (!lines)
		return -ENOMEM;
	ret = parse_lines(ctx, path, buf, len, kf, lines);
	if (!ret) {
		ret = find_dup(kf, &a, &b);
		if (!ret) {
			olog_err(ctx, "%s: line %u: shard id already on line %u",
				 path, lines[b], lines[a]);
			ret = -EBADMSG;
		} else if (ret == -1) {
			ret = 0;
		}
	}
	free(lines);
	return ret;
}

static int read_secret(struct ortho_ctx *ctx, const char *path, int fd,
		       char **buf, size_t *len, size_t *cap)
{
	struct stat st;
	size_t got = 0;

	if (fstat(fd, &st))
		return -errno;
	if (!S_ISREG(st.st_mode)) {
		olog_err(ctx, "%s: not a regular file", path);
		return -EINVAL;
	}
	if (st.st_mode & 077) {
		olog_err(ctx, "%s: key file is accessible by group or others (mode %03o); run chmod 600 %s",
			 path, (unsigned int)(st.st_mode & 0777), path);
		return -EPERM;
	}
	if ((uint64_t)st.st_size > KF_MAX_SIZE) {
		olog_err(ctx, "%s: %lld bytes, too large for a key file", path,
			 (long long)st.st_size);
		return -EFBIG;
	}
	*cap = (size_t)st.st_size + 1;
	*buf = secmem_alloc(*cap);
	if (!*buf)
		return -ENOMEM;
	while (got < (size_t)st.st_size) {
		ssize_t r = read(fd, *buf + got, (size_t)st.st_size - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (!r)
			break;
		got += (size_t)r;
	}
	*len = got;
	return 0;
}

int keyfile_load(struct ortho_ctx *ctx, const char *path, struct keyfile *kf)
{
	size_t len = 0, cap = 0;
	char *buf = NULL;
	int fd, ret;

	memset(kf, 0, sizeof(*kf));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		olog_err(ctx, "%s: cannot open key file: %s", path,
			 strerror(-ret));
		return ret;
	}
	ret = read_secret(ctx, path, fd, &buf, &len, &cap);
	close(fd);
	if (!ret)
		ret = parse(ctx, path, buf, len, kf);
	secmem_free(buf, cap);
	if (ret)
		keyfile_free(kf);
	return ret;
}

const struct keyfile_entry *keyfile_find(const struct keyfile *kf,
					 const uint8_t id[OSH_ID_SIZE])
{
	size_t i;

	for (i = 0; i < kf->n; i++)
		if (!memcmp(kf->e[i].id, id, OSH_ID_SIZE))
			return &kf->e[i];
	return NULL;
}

int keyfile_add(struct keyfile *kf, const struct keyfile_entry *e)
{
	if (kf->n == kf->cap) {
		size_t cap = kf->cap ? kf->cap * 2 : 64;
		struct keyfile_entry *ne = secmem_alloc(cap * sizeof(*ne));

		if (!ne)
			return -ENOMEM;
		if (kf->n)
			memcpy(ne, kf->e, kf->n * sizeof(*ne));
		secmem_free(kf->e, kf->cap * sizeof(*ne));
		kf->e = ne;
		kf->cap = cap;
	}
	kf->e[kf->n++] = *e;
	return 0;
}

void keyfile_free(struct keyfile *kf)
{
	secmem_free(kf->e, kf->cap * sizeof(*kf->e));
	memset(kf, 0, sizeof(*kf));
}

/* ---- saving ---- */

static int check_entries(struct ortho_ctx *ctx, const char *path,
			 const struct keyfile *kf)
{
	size_t i, a, b;
	int ret;

	for (i = 0; i < kf->n; i++) {
		if (!osh_label_ok(kf->e[i].label)) {
			olog_err(ctx, "%s: entry %zu: label not 1 to %u printable characters without blanks",
				 path, i, OSH_LABEL_MAX - 1);
			return -EINVAL;
		}
	}
	ret = find_dup(kf, &a, &b);
	if (!ret) {
		olog_err(ctx, "%s: entries %zu and %zu have the same shard id",
			 path, a, b);
		return -EINVAL;
	}
	return ret == -1 ? 0 : ret;
}

/* The whole file as text, in secmem. Return: its length. */
static size_t format_text(const struct keyfile *kf, char *d)
{
	char *start = d;
	size_t i;

	d += sprintf(d, "%s %d\n", KF_HEADER, KF_VERSION);
	for (i = 0; i < kf->n; i++) {
		const struct keyfile_entry *e = &kf->e[i];

		d = put_hex(d, e->id, OSH_ID_SIZE);
		*d++ = ' ';
		d = put_hex(d, e->key, OSH_KEY_SIZE);
		d += sprintf(d, " %u %s\n", e->layer, e->label);
	}
	return (size_t)(d - start);
}

static int write_all(int fd, const char *p, size_t len)
{
	while (len) {
		ssize_t r = write(fd, p, len);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += r;
		len -= (size_t)r;
	}
	return 0;
}

static int write_tmp(const struct keyfile *kf, int fd)
{
	size_t cap = 32 + (kf->n + 1) * KF_LINE_MAX, len;
	char *text = secmem_alloc(cap);
	int ret;

	if (!text)
		return -ENOMEM;
	len = format_text(kf, text);
	ret = fchmod(fd, 0600) ? -errno : 0;
	if (!ret)
		ret = write_all(fd, text, len);
	if (!ret && fsync(fd))
		ret = -errno;
	secmem_free(text, cap);
	return ret;
}

/* Move @tmp to @path; without @force never over an existing file. */
static int install(const char *tmp, const char *path, int force)
{
	if (force)
		return rename(tmp, path) ? -errno : 0;
	if (!renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE))
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -errno;
	/* A file system without RENAME_NOREPLACE: link() never replaces. */
	if (link(tmp, path))
		return -errno;
	unlink(tmp);
	return 0;
}

static int sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), ret = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd))
		ret = -errno;
	close(fd);
	return ret;
}

static int save(struct ortho_ctx *ctx, const char *path,
		const struct keyfile *kf, int force, const char *dir,
		char *tmp)
{
	int fd, ret;

	fd = mkostemp(tmp, O_CLOEXEC);	/* O_EXCL, mode 0600 */
	if (fd < 0) {
		ret = -errno;
		olog_err(ctx, "%s: cannot create a temporary file in %s: %s",
			 path, dir, strerror(-ret));
		return ret;
	}
	ret = write_tmp(kf, fd);
	if (close(fd) && !ret)
		ret = -errno;
	if (!ret)
		ret = install(tmp, path, force);
	if (ret) {
		unlink(tmp);
		if (ret == -EEXIST)
			olog_err(ctx, "%s: exists; not overwritten without force",
				 path);
		else
			olog_err(ctx, "%s: cannot write key file: %s", path,
				 strerror(-ret));
		return ret;
	}
	ret = sync_dir(dir);
	if (ret)
		olog_err(ctx, "%s: fsync of %s: %s", path, dir, strerror(-ret));
	return ret;
}

int keyfile_save(struct ortho_ctx *ctx, const char *path,
		 const struct keyfile *kf, int force)
{
	char *d = strdup(path), *b = strdup(path), *tmp = NULL;
	const char *dir, *base;
	struct stat st;
	int ret;

	ret = -ENOMEM;
	if (!d || !b)
		goto out;
	dir = dirname(d);
	base = basename(b);
	if (!force && !lstat(path, &st)) {
		olog_err(ctx, "%s: exists; not overwritten without force",
			 path);
		ret = -EEXIST;
		goto out;
	}
	ret = check_entries(ctx, path, kf);
	if (ret)
		goto out;
	ret = -ENOMEM;
	if (asprintf(&tmp, "%s/.%s.XXXXXX", dir, base) < 0) {
		tmp = NULL;
		goto out;
	}
	ret = save(ctx, path, kf, force, dir, tmp);
out:
	free(tmp);
	free(b);
	free(d);
	return ret;
}
