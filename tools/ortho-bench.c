// SPDX-License-Identifier: MIT
/*
 * ortho-bench: the project's yardsticks, one subcommand each (gemv,
 * pagein, revoke). This file holds the dispatch table and the helpers the
 * subcommands share (clock, median, cache size, option parsing, JSON).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "ortho-bench.h"

struct bench_cmd {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *summary;
};

static const struct bench_cmd bench_cmds[] = {
	{ "gemv", bench_gemv,
	  "fused INT8 + Ortho GEMV against OpenBLAS FP32 (ours, threads);\n"
	  "           --backend cuda: on the device, against its copy rate" },
	{ "pagein", bench_pagein,
	  "encrypted shard page-in against cat and AES-256-GCM" },
	{ "revoke", bench_revoke,
	  "time from revoke to the last holder's acknowledged wipe" },
};

#define NCMDS (sizeof(bench_cmds) / sizeof(bench_cmds[0]))

static void usage(FILE *f)
{
	size_t i;

	fprintf(f, "usage: ortho-bench <command> [options] (--help per command)\n"
		   "\ncommands:\n");
	for (i = 0; i < NCMDS; i++)
		fprintf(f, "  %-8s %s%s\n", bench_cmds[i].name,
			bench_cmds[i].summary,
			bench_cmds[i].fn ? "" : " [not built]");
}

int main(int argc, char **argv)
{
	size_t i;

	if (argc < 2) {
		usage(stderr);
		return BENCH_EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
	    !strcmp(argv[1], "help")) {
		usage(stdout);
		return BENCH_EXIT_OK;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("ortho-bench %s\n", ORTHO_VERSION_STRING);
		return BENCH_EXIT_OK;
	}
	for (i = 0; i < NCMDS; i++) {
		if (strcmp(argv[1], bench_cmds[i].name))
			continue;
		if (!bench_cmds[i].fn) {
			fprintf(stderr, "ortho-bench: '%s' is not built in "
				"this binary\n", argv[1]);
			return BENCH_EXIT_FAIL;
		}
		return bench_cmds[i].fn(argc - 1, argv + 1);
	}
	fprintf(stderr, "ortho-bench: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return BENCH_EXIT_USAGE;
}

double bench_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void bench_sleep(double s)
{
	struct timespec ts;

	if (!(s > 0))
		return;
	ts.tv_sec = (time_t)s;
	ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

double bench_median(double *v, size_t n)
{
	if (!n)
		return NAN;
	qsort(v, n, sizeof(*v), cmp_double);
	if (n & 1)
		return v[n / 2];
	return (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* "32768K", "32M" or a plain number of bytes, as sysfs writes sizes. */
static uint64_t parse_size(const char *s)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return 0;
	switch (*end) {
	case 'K':
		return v << 10;
	case 'M':
		return v << 20;
	case 'G':
		return v << 30;
	default:
		return v;
	}
}

static uint64_t sysfs_llc(void)
{
	char path[96], buf[64];
	uint64_t best = 0, v;
	int i;
	FILE *f;

	/* The highest-level unified cache cpu0 sees. */
	for (i = 0; i < 8; i++) {
		snprintf(path, sizeof(path),
			 "/sys/devices/system/cpu/cpu0/cache/index%d/size", i);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (fgets(buf, sizeof(buf), f)) {
			v = parse_size(buf);
			if (v > best)
				best = v;
		}
		fclose(f);
	}
	return best;
}

uint64_t bench_llc_bytes(int *assumed)
{
	long v = -1;
	uint64_t s;

#ifdef _SC_LEVEL3_CACHE_SIZE
	v = sysconf(_SC_LEVEL3_CACHE_SIZE);
#endif
	*assumed = 0;
	if (v > 0)
		return (uint64_t)v;
	s = sysfs_llc();
	if (s)
		return s;
	*assumed = 1;
	return 32ull << 20;
}

uint64_t bench_mem_avail(void)
{
	char line[128];
	unsigned long long kb;
	uint64_t ret = 0;
	FILE *f = fopen("/proc/meminfo", "r");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) {
			ret = (uint64_t)kb << 10;
			break;
		}
	}
	fclose(f);
	return ret;
}

int bench_parse_u32(const char *opt, const char *s, uint32_t lo, uint32_t hi,
		    uint32_t *out)
{
	unsigned long long v;
	char *end;

	errno = 0;
	v = s ? strtoull(s, &end, 0) : 0;
	if (!s || errno || end == s || *end || s[0] == '-' || v < lo ||
	    v > hi) {
		fprintf(stderr, "ortho-bench: %s wants an integer in "
			"[%u, %u], not '%s'\n", opt, lo, hi, s ? s : "");
		return -EINVAL;
	}
	*out = (uint32_t)v;
	return 0;
}

int bench_parse_double(const char *opt, const char *s, double lo, double hi,
		       double *out)
{
	char *end;
	double v;

	errno = 0;
	v = s ? strtod(s, &end) : 0;
	if (!s || errno || end == s || *end || !(v >= lo && v <= hi)) {
		fprintf(stderr, "ortho-bench: %s wants a number in "
			"[%g, %g], not '%s'\n", opt, lo, hi, s ? s : "");
		return -EINVAL;
	}
	*out = v;
	return 0;
}

static void json_key(struct bench_json *j, const char *key)
{
	if (j->count[j->depth]++)
		fputs(", ", j->f);
	if (key)
		fprintf(j->f, "\"%s\": ", key);
}

void bench_json_begin(struct bench_json *j, FILE *f)
{
	memset(j, 0, sizeof(*j));
	j->f = f;
	fputc('{', f);
}

void bench_json_end(struct bench_json *j)
{
	while (j->depth > 0)
		bench_json_close(j);
	fputs("}\n", j->f);
}

void bench_json_obj(struct bench_json *j, const char *key)
{
	json_key(j, key);
	fputc('{', j->f);
	if (j->depth + 1 < BENCH_JSON_DEPTH)
		j->count[++j->depth] = 0;
}

void bench_json_close(struct bench_json *j)
{
	if (j->depth > 0)
		j->depth--;
	fputc('}', j->f);
}

void bench_json_num(struct bench_json *j, const char *key, double v)
{
	json_key(j, key);
	if (isfinite(v))
		fprintf(j->f, "%.9g", v);
	else
		fputs("null", j->f);
}

void bench_json_int(struct bench_json *j, const char *key, long long v)
{
	json_key(j, key);
	fprintf(j->f, "%lld", v);
}

void bench_json_str(struct bench_json *j, const char *key, const char *v)
{
	const unsigned char *p;

	json_key(j, key);
	if (!v) {
		fputs("null", j->f);
		return;
	}
	fputc('"', j->f);
	for (p = (const unsigned char *)v; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(j->f, "\\%c", *p);
		else if (*p < 0x20)
			fprintf(j->f, "\\u%04x", *p);
		else
			fputc(*p, j->f);
	}
	fputc('"', j->f);
}

void bench_json_bool(struct bench_json *j, const char *key, int v)
{
	json_key(j, key);
	fputs(v ? "true" : "false", j->f);
}

void bench_json_null(struct bench_json *j, const char *key)
{
	json_key(j, key);
	fputs("null", j->f);
}
