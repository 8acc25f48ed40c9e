/* SPDX-License-Identifier: MIT */
/*
 * ortho-bench: shared by the subcommands (one file each,
 * tools/ortho-bench-<verb>.c). A subcommand is int bench_<verb>(argc, argv)
 * with argv[0] the verb; it returns the process exit status. The table in
 * ortho-bench.c lists the verbs; a verb whose file is not in the build is
 * reported as such (its symbol is weak).
 */
#ifndef ORTHO_BENCH_H
#define ORTHO_BENCH_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Exit statuses: success, a run that failed, a bad command line. */
#define BENCH_EXIT_OK 0
#define BENCH_EXIT_FAIL 1
#define BENCH_EXIT_USAGE 2

int bench_gemv(int argc, char **argv);
int bench_pagein(int argc, char **argv) __attribute__((weak));
int bench_revoke(int argc, char **argv) __attribute__((weak));

/**
 * bench_now() - a monotonic clock.
 *
 * Return: seconds since an arbitrary start.
 */
double bench_now(void);

/**
 * bench_sleep() - sleep for @s seconds (restarts after signals).
 */
void bench_sleep(double s);

/**
 * bench_median() - the median of @n samples (sorts @v in place).
 *
 * Return: the median, NaN when @n is 0.
 */
double bench_median(double *v, size_t n);

/**
 * bench_llc_bytes() - the size of the last-level cache.
 * @assumed: set to 1 when neither sysconf nor sysfs told and 32 MiB is
 *	assumed, else 0.
 *
 * Return: bytes.
 */
uint64_t bench_llc_bytes(int *assumed);

/**
 * bench_mem_avail() - memory available to allocate now (MemAvailable).
 *
 * Return: bytes, 0 when unknown.
 */
uint64_t bench_mem_avail(void);

/**
 * bench_parse_u32() - parse option @opt's value @s into @out, in [lo, hi].
 *
 * Return: 0, or -EINVAL after printing why on stderr.
 */
int bench_parse_u32(const char *opt, const char *s, uint32_t lo, uint32_t hi,
		    uint32_t *out);

/**
 * bench_parse_double() - parse option @opt's value @s into @out, in
 * [lo, hi].
 *
 * Return: 0, or -EINVAL after printing why on stderr.
 */
int bench_parse_double(const char *opt, const char *s, double lo, double hi,
		       double *out);

/*
 * A small JSON writer: one object on one line. Keys are plain ASCII from
 * the program; string values are escaped. Non-finite numbers print null.
 */
#define BENCH_JSON_DEPTH 8

struct bench_json {
	FILE *f;
	int depth;
	int count[BENCH_JSON_DEPTH];
};

/** bench_json_begin() - start the top-level object on @f. */
void bench_json_begin(struct bench_json *j, FILE *f);
/** bench_json_end() - close the top-level object and end the line. */
void bench_json_end(struct bench_json *j);
/** bench_json_obj() - open a nested object under @key. */
void bench_json_obj(struct bench_json *j, const char *key);
/** bench_json_close() - close the nested object opened last. */
void bench_json_close(struct bench_json *j);
/** bench_json_num() - @key: @v with up to 9 significant digits. */
void bench_json_num(struct bench_json *j, const char *key, double v);
/** bench_json_int() - @key: @v. */
void bench_json_int(struct bench_json *j, const char *key, long long v);
/** bench_json_str() - @key: "@v" (escaped); NULL prints null. */
void bench_json_str(struct bench_json *j, const char *key, const char *v);
/** bench_json_bool() - @key: true or false. */
void bench_json_bool(struct bench_json *j, const char *key, int v);
/** bench_json_null() - @key: null. */
void bench_json_null(struct bench_json *j, const char *key);

#endif
