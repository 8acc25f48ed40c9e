/* SPDX-License-Identifier: MIT */
/* Helpers shared by the Check programs. */
#ifndef ORTHO_TESTUTIL_H
#define ORTHO_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

#include "ortho.h"

/* A fresh directory under $TMPDIR (or /tmp); removed by tu_rmrf(). */
char *tu_mkdtemp(const char *tag);
/* rm -rf @path. */
void tu_rmrf(const char *path);
/* Path of a file in the source tree (tests/data/...), from ORTHO_SRCDIR or
 * the current directory. Caller frees. */
char *tu_srcpath(const char *rel);
/* Read a whole file; caller frees. Return: NULL on error. */
void *tu_read_file(const char *path, size_t *len);
/* Write @len bytes to @path (creates or truncates). Return: 0 or -errno. */
int tu_write_file(const char *path, const void *buf, size_t len);
/* Does @path exist? */
int tu_exists(const char *path);
/* Count the entries of a directory (excluding . and ..), -1 when missing. */
int tu_count_entries(const char *dir);

/* A log callback that keeps every message; tu_log_has() searches them. */
struct tu_log {
	char buf[65536];
	size_t len;
};
void tu_log_fn(void *user, int prio, const char *fmt, va_list ap);
int tu_log_has(const struct tu_log *l, const char *needle);
void tu_log_clear(struct tu_log *l);

/* A context on the CPU backend logging into @l (may be NULL). */
struct ortho_ctx *tu_ctx(struct tu_log *l);

/*
 * The fixture most programs share: @lg cleared, a context logging into
 * it, a fresh directory tagged @tag. Fails the test when any is missing.
 */
void tu_fixture_setup(struct tu_log *lg, struct ortho_ctx **ctx, char **dir,
		      const char *tag);
void tu_fixture_teardown(struct ortho_ctx *ctx, char *dir);
/* "@dir/@name" in one of two rotating static buffers. */
const char *tu_path_in(const char *dir, const char *name);

/* Deterministic pseudo-random numbers (xorshift64*). */
uint64_t tu_rand(uint64_t *state);
/* Uniform in [-1, 1). */
float tu_randf(uint64_t *state);
/* Standard normal (Box-Muller). */
float tu_randn(uint64_t *state);

#endif
