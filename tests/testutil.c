// SPDX-License-Identifier: MIT
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <check.h>

#include "testutil.h"

char *tu_mkdtemp(const char *tag)
{
	const char *tmp = getenv("TMPDIR");
	char *p;

	if (asprintf(&p, "%s/ortho-%s-XXXXXX", tmp && *tmp ? tmp : "/tmp",
		     tag) < 0)
		return NULL;
	if (!mkdtemp(p)) {
		free(p);
		return NULL;
	}
	return p;
}

static int rm_one(const char *path, const struct stat *st, int flag,
		  struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

void tu_rmrf(const char *path)
{
	if (path)
		nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

char *tu_srcpath(const char *rel)
{
	const char *top = getenv("ORTHO_SRCDIR");
	char *p;

	if (asprintf(&p, "%s/%s", top && *top ? top : ".", rel) < 0)
		return NULL;
	return p;
}

void *tu_read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	long n;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) || (n = ftell(f)) < 0 ||
	    fseek(f, 0, SEEK_SET))
		goto out;
	buf = malloc((size_t)n + 1);
	if (!buf)
		goto out;
	if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
		free(buf);
		buf = NULL;
		goto out;
	}
	buf[n] = 0;
	if (len)
		*len = (size_t)n;
out:
	fclose(f);
	return buf;
}

int tu_write_file(const char *path, const void *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	const char *p = buf;

	if (fd < 0)
		return -errno;
	while (len) {
		ssize_t w = write(fd, p, len);

		if (w < 0) {
			int e = errno;

			close(fd);
			return -e;
		}
		p += w;
		len -= (size_t)w;
	}
	return close(fd) ? -errno : 0;
}

int tu_exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

int tu_count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	if (!d)
		return -1;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

void tu_log_fn(void *user, int prio, const char *fmt, va_list ap)
{
	struct tu_log *l = user;
	int n;

	if (!l || l->len >= sizeof(l->buf) - 2)
		return;
	n = vsnprintf(l->buf + l->len, sizeof(l->buf) - l->len - 1, fmt, ap);
	if (n < 0)
		return;
	l->len += (size_t)n;
	if (l->len > sizeof(l->buf) - 2)
		l->len = sizeof(l->buf) - 2;
	l->buf[l->len++] = '\n';
	l->buf[l->len] = 0;
	if (getenv("ORTHO_TEST_VERBOSE"))
		fprintf(stderr, "log(%d): %.*s", prio, n + 1,
			l->buf + l->len - (size_t)n - 1);
}

int tu_log_has(const struct tu_log *l, const char *needle)
{
	return l->len && strstr(l->buf, needle) != NULL;
}

void tu_log_clear(struct tu_log *l)
{
	l->len = 0;
	l->buf[0] = 0;
}

struct ortho_ctx *tu_ctx(struct tu_log *l)
{
	struct ortho_ctx_opts o = {
		.sz = sizeof(o),
		.backend = "cpu",
		.log_fn = tu_log_fn,
		.log_user = l,
		.log_level = ORTHO_LOG_DEBUG,
		.authority = "none",	/* never the host's orthod */
	};
	struct ortho_ctx *ctx = NULL;

	if (ortho_ctx_new(&o, &ctx))
		return NULL;
	return ctx;
}

void tu_fixture_setup(struct tu_log *lg, struct ortho_ctx **ctx, char **dir,
		      const char *tag)
{
	tu_log_clear(lg);
	*ctx = tu_ctx(lg);
	ck_assert_ptr_nonnull(*ctx);
	*dir = tu_mkdtemp(tag);
	ck_assert_ptr_nonnull(*dir);
}

void tu_fixture_teardown(struct ortho_ctx *ctx, char *dir)
{
	ortho_ctx_free(ctx);
	tu_rmrf(dir);
	free(dir);
}

const char *tu_path_in(const char *dir, const char *name)
{
	static __thread char buf[2][4096];
	static __thread int k;

	k ^= 1;
	snprintf(buf[k], sizeof(buf[k]), "%s/%s", dir, name);
	return buf[k];
}

uint64_t tu_rand(uint64_t *s)
{
	uint64_t x = *s ? *s : 0x9e3779b97f4a7c15ull;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545f4914f6cdd1dull;
}

float tu_randf(uint64_t *s)
{
	return (float)((double)(tu_rand(s) >> 11) / 9007199254740992.0 * 2.0 -
		       1.0);
}

float tu_randn(uint64_t *s)
{
	double u1 = ((double)(tu_rand(s) >> 11) + 1.0) / 9007199254740993.0;
	double u2 = (double)(tu_rand(s) >> 11) / 9007199254740992.0;

	return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}
