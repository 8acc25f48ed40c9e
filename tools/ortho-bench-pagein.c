// SPDX-License-Identifier: MIT
/*
 * ortho-bench pagein: an encrypted shard from the page cache to resident
 * and decrypted on the CPU backend, against two yardsticks over the same
 * bytes in the same run:
 *
 * - cat: a real cat process copying the shard file to /dev/null (what
 *   reading alone costs, plus a fork and an exec);
 * - aes1: one thread opening the same chunks, already in memory, with the
 *   same AES-256-GCM code (what decryption alone costs on one core).
 *
 * The page-in goes through the residency manager and the streaming code as
 * a model's shard does (io_uring into registered staging, decrypt workers
 * writing straight into the slot); between runs the unit is evicted, so
 * each run reads and decrypts everything again into a slot already mapped.
 * The three run in rounds, their order rotating, and each figure is the
 * median over the rounds.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ortho-bench.h"
#include "ortho.h"
#include "residency.h"
#include "secmem.h"
#include "shard.h"
#include "stream.h"

#define COLS 4096u
#define MAX_RUNS 1000u

struct pagein_opts {
	uint64_t size;
	uint32_t runs, workers, qd, staging_mib;
	int json, direct, pread_only, cold;
	const char *dir;
};

struct pagein {
	struct pagein_opts op;
	struct ortho_ctx *ctx;
	char *dir, *path;
	uint8_t key[OSH_KEY_SIZE];
	struct osh_file f;
	int f_open;
	struct stream *s;
	struct residency *res;
	unsigned int unit;
	uint8_t *ct;			/* every chunk's ciphertext, for aes1 */
	uint8_t *pt;			/* aes1's destination */
	int failed;
};

static void log_stderr(void *user, int prio, const char *fmt, va_list ap)
{
	fprintf(stderr, "ortho-bench pagein: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

/* "512M", "1G", "65536": bytes, binary multiples. */
static int parse_size(const char *s, uint64_t *out)
{
	unsigned long long v;
	char *end;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	switch (*end) {
	case 'k': case 'K': v <<= 10; end++; break;
	case 'm': case 'M': v <<= 20; end++; break;
	case 'g': case 'G': v <<= 30; end++; break;
	}
	if (*end == 'i' && end[1] == 'B')
		end += 2;
	else if (*end == 'B')
		end++;
	if (*end || v < 4096 || v > (64ull << 30))
		return -EINVAL;
	*out = v;
	return 0;
}

static void pagein_usage(FILE *f)
{
	fprintf(f,
		"usage: ortho-bench pagein --size SIZE [options]\n"
		"  --size SIZE       shard plaintext (4K to 64G; K, M, G suffixes)\n"
		"  --runs N          rounds; figures are medians (default 11)\n"
		"  --threads N       decrypt workers (default: online CPUs)\n"
		"  --queue-depth N   reads in flight (default %u)\n"
		"  --staging MIB     staging per page-in, MiB (default %u)\n"
		"  --direct          O_DIRECT reads (cold; bypasses the page cache)\n"
		"  --pread           the pread path instead of io_uring\n"
		"  --cold            drop the file from the page cache before\n"
		"                    each page-in and each cat\n"
		"  --dir DIR         where the shard is written (default $TMPDIR\n"
		"                    or /tmp); removed afterwards\n"
		"  --json            one JSON object on stdout\n",
		STREAM_DEF_QUEUE_DEPTH, STREAM_DEF_STAGING >> 20);
}

static const char *opt_val(int argc, char **argv, int *i, const char *name)
{
	if (strcmp(argv[*i], name) || *i + 1 >= argc)
		return NULL;
	return argv[++*i];
}

static int parse_one(int argc, char **argv, int *i, struct pagein_opts *op)
{
	const char *v;

	if (!strcmp(argv[*i], "--json"))
		op->json = 1;
	else if (!strcmp(argv[*i], "--direct"))
		op->direct = 1;
	else if (!strcmp(argv[*i], "--pread"))
		op->pread_only = 1;
	else if (!strcmp(argv[*i], "--cold"))
		op->cold = 1;
	else if ((v = opt_val(argc, argv, i, "--size"))) {
		if (parse_size(v, &op->size)) {
			fprintf(stderr, "ortho-bench pagein: --size: '%s' is "
				"not a size from 4K to 64G\n", v);
			return -EINVAL;
		}
	} else if ((v = opt_val(argc, argv, i, "--runs")))
		return bench_parse_u32("--runs", v, 1, MAX_RUNS, &op->runs);
	else if ((v = opt_val(argc, argv, i, "--threads")))
		return bench_parse_u32("--threads", v, 1, 1024, &op->workers);
	else if ((v = opt_val(argc, argv, i, "--queue-depth")))
		return bench_parse_u32("--queue-depth", v, 1, 1024, &op->qd);
	else if ((v = opt_val(argc, argv, i, "--staging")))
		return bench_parse_u32("--staging", v, 2, 1024,
				       &op->staging_mib);
	else if ((v = opt_val(argc, argv, i, "--dir")))
		op->dir = v;
	else {
		fprintf(stderr, "ortho-bench pagein: unknown or incomplete "
			"option '%s'\n", argv[*i]);
		return -EINVAL;
	}
	return 0;
}

static int parse_opts(int argc, char **argv, struct pagein_opts *op)
{
	int i, ret = 0;

	for (i = 1; i < argc && !ret; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
			return 1;
		ret = parse_one(argc, argv, &i, op);
	}
	if (!ret && !op->size) {
		fprintf(stderr, "ortho-bench pagein: --size is required\n");
		ret = -EINVAL;
	}
	return ret;
}

/* ---- the synthetic shard ---- */

static int write_shard(struct pagein *b)
{
	struct osh_write_params p = { .label = "bench", .key = b->key };
	struct osp_tensor_src t = { .name = "bench.w", .cols = COLS,
				    .encoding = OSP_DENSE16 };
	uint64_t rows = (b->op.size + 2 * COLS - 1) / (2 * COLS), i, n;
	uint64_t x = 0x9e3779b97f4a7c15ull;
	uint16_t *val;
	int ret;

	if (rows > ORB_MAX_DIM)
		rows = ORB_MAX_DIM;
	n = rows * COLS;
	val = malloc(n * sizeof(*val));
	if (!val)
		return -ENOMEM;
	/* Finite FP16 values: the parser of a real load would accept them. */
	for (i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		val[i] = (uint16_t)(x & 0x3bff);
	}
	t.rows = (uint32_t)rows;
	t.nnz = n;
	t.val = val;
	if (getrandom(b->key, sizeof(b->key), 0) != sizeof(b->key) ||
	    getrandom(p.shard_id, sizeof(p.shard_id), 0) != sizeof(p.shard_id))
		ret = -EIO;
	else
		ret = osh_write(b->ctx, b->path, &p, &t, 1);
	free(val);
	return ret;
}

static int setup_dir(struct pagein *b)
{
	const char *tmp = b->op.dir ? b->op.dir : getenv("TMPDIR");

	if (asprintf(&b->dir, "%s/ortho-pagein-XXXXXX",
		     tmp && *tmp ? tmp : "/tmp") < 0) {
		b->dir = NULL;
		return -ENOMEM;
	}
	if (!mkdtemp(b->dir)) {
		fprintf(stderr, "ortho-bench pagein: %s: %s\n", b->dir,
			strerror(errno));
		free(b->dir);
		b->dir = NULL;
		return -EIO;
	}
	if (asprintf(&b->path, "%s/bench.osh", b->dir) < 0) {
		b->path = NULL;
		return -ENOMEM;
	}
	return 0;
}

/* ---- the three measurements ---- */

static int unit_load(void *owner, unsigned int u, void *mem, uint64_t size,
		     int urgent, const atomic_int *cancel, uint32_t *bad)
{
	struct pagein *b = owner;
	struct stream_req r = { .f = &b->f, .key = b->key, .len = size,
				.dst = mem, .cancel = cancel,
				.flags = urgent ? STREAM_URGENT : 0 };
	int ret = stream_read(b->s, &r);

	*bad = r.bad_chunk;
	return ret;
}

static const struct res_ops bench_ops = { .load = unit_load };

static void drop_cache(struct pagein *b)
{
	if (b->op.cold)
		posix_fadvise(b->f.fd, 0, 0, POSIX_FADV_DONTNEED);
}

static double time_pagein(struct pagein *b)
{
	void *mem;
	double t;

	residency_evict(b->res, b->unit);
	drop_cache(b);
	t = bench_now();
	if (residency_pin(b->res, &b->unit, 1, &mem) != 1) {
		b->failed = 1;
		return NAN;
	}
	t = bench_now() - t;
	residency_unpin(b->res, &b->unit, 1, &mem);
	return t;
}

static double time_cat(struct pagein *b)
{
	double t;
	pid_t pid;
	int st, fd;

	drop_cache(b);
	t = bench_now();
	pid = fork();
	if (pid < 0)
		goto fail;
	if (!pid) {
		fd = open("/dev/null", O_WRONLY);
		if (fd < 0 || dup2(fd, 1) < 0)
			_exit(127);
		execlp("cat", "cat", b->path, (char *)NULL);
		_exit(127);
	}
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st))
		goto fail;
	return bench_now() - t;
fail:
	fprintf(stderr, "ortho-bench pagein: cat %s failed\n", b->path);
	b->failed = 1;
	return NAN;
}

static double time_aes1(struct pagein *b)
{
	uint32_t i, n = b->f.hdr.chunk_count;
	double t = bench_now();

	for (i = 0; i < n; i++) {
		uint64_t off = (uint64_t)i * OSH_CHUNK_SIZE;

		if (osh_decrypt_chunk(&b->f, b->key, i, b->ct + off,
				      b->pt + off)) {
			b->failed = 1;
			return NAN;
		}
	}
	return bench_now() - t;
}

static int load_ciphertext(struct pagein *b)
{
	uint64_t len = b->f.hdr.plaintext_len, done = 0;
	ssize_t n;

	b->ct = secmem_alloc(len);
	b->pt = secmem_alloc(len);
	if (!b->ct || !b->pt)
		return -ENOMEM;
	while (done < len) {
		n = pread(b->f.fd, b->ct + done, len - done,
			  (off_t)(b->f.hdr.data_offset + done));
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		done += (uint64_t)n;
	}
	return 0;
}

static int setup(struct pagein *b)
{
	struct ortho_ctx_opts co = { .sz = sizeof(co), .backend = "cpu",
				     .log_fn = log_stderr, .threads = 1 };
	struct stream_opts so = {
		.workers = b->op.workers, .queue_depth = b->op.qd,
		.staging = (size_t)b->op.staging_mib * OSH_CHUNK_SIZE,
		.flags = (b->op.direct ? STREAM_DIRECT : 0) |
			 (b->op.pread_only ? STREAM_PREAD : 0),
	};
	int ret;

	ret = ortho_ctx_new(&co, &b->ctx);
	if (!ret)
		ret = setup_dir(b);
	if (!ret)
		ret = write_shard(b);
	if (!ret) {
		ret = osh_open(b->ctx, b->path, &b->f);
		b->f_open = !ret;
	}
	if (!ret)
		ret = stream_new(b->ctx, &so, &b->s);
	/* A budget of exactly the shard: the slot is kept and reused. */
	if (!ret)
		ret = residency_new(b->ctx, b->f.hdr.plaintext_len + 4096,
				    &bench_ops, b, &b->res);
	if (!ret)
		ret = residency_add(b->res, b->f.hdr.plaintext_len, &b->unit);
	if (!ret)
		ret = load_ciphertext(b);
	if (ret)
		fprintf(stderr, "ortho-bench pagein: setup failed: %s\n",
			ortho_strerror(ret));
	return ret;
}

static void cleanup(struct pagein *b)
{
	uint64_t len = b->f_open ? b->f.hdr.plaintext_len : 0;

	residency_free(b->res);
	stream_free(b->s);
	secmem_free(b->ct, len);
	secmem_free(b->pt, len);
	if (b->f_open)
		osh_close(&b->f);
	if (b->path)
		unlink(b->path);
	if (b->dir)
		rmdir(b->dir);
	free(b->path);
	free(b->dir);
	ortho_ctx_free(b->ctx);
}

enum { M_PAGEIN, M_CAT, M_AES1, NMEAS };

static const char *const meas_name[NMEAS] = { "pagein", "cat", "aes1" };

static double measure(struct pagein *b, int m)
{
	switch (m) {
	case M_PAGEIN:
		return time_pagein(b);
	case M_CAT:
		return time_cat(b);
	default:
		return time_aes1(b);
	}
}

/* Rounds, the order rotating; @med gets each median. */
static void run_rounds(struct pagein *b, double med[NMEAS])
{
	double *v[NMEAS];
	uint32_t r;
	int k, m;

	for (m = 0; m < NMEAS; m++) {
		v[m] = calloc(b->op.runs, sizeof(double));
		if (!v[m])
			b->failed = 1;
		else
			measure(b, m);	/* warm-up: page cache, slot, rings */
	}
	for (r = 0; r < b->op.runs && !b->failed; r++)
		for (k = 0; k < NMEAS; k++) {
			m = (int)((r + (uint32_t)k) % NMEAS);
			v[m][r] = measure(b, m);
		}
	for (m = 0; m < NMEAS; m++) {
		med[m] = v[m] ? bench_median(v[m], b->op.runs) : NAN;
		free(v[m]);
	}
}

static void print_json(struct pagein *b, const double med[NMEAS],
		       const struct stream_info *si)
{
	double bytes = (double)b->f.hdr.plaintext_len;
	struct bench_json j;
	int m;

	bench_json_begin(&j, stdout);
	bench_json_str(&j, "bench", "pagein");
	bench_json_int(&j, "bytes", (long long)b->f.hdr.plaintext_len);
	bench_json_int(&j, "file_bytes", (long long)b->f.size);
	bench_json_int(&j, "chunks", b->f.hdr.chunk_count);
	bench_json_int(&j, "runs", b->op.runs);
	bench_json_int(&j, "cpus", sysconf(_SC_NPROCESSORS_ONLN));
	bench_json_int(&j, "threads", si->workers);
	bench_json_int(&j, "queue_depth", si->queue_depth);
	bench_json_int(&j, "staging_bytes", (long long)si->staging);
	bench_json_bool(&j, "uring", si->uring);
	bench_json_bool(&j, "direct", si->direct);
	/* Every page-in that asked for O_DIRECT got it. */
	bench_json_bool(&j, "direct_used",
			si->direct_pageins && !si->direct_fallbacks);
	bench_json_bool(&j, "locked", si->locked);
	bench_json_bool(&j, "fixed_bufs", si->fixed_bufs);
	bench_json_bool(&j, "fixed_file", si->fixed_file);
	bench_json_bool(&j, "cold", b->op.cold);
	bench_json_num(&j, "pagein_s", med[M_PAGEIN]);
	bench_json_num(&j, "cat_s", med[M_CAT]);
	bench_json_num(&j, "aes1_s", med[M_AES1]);
	bench_json_obj(&j, "gb_per_s");
	for (m = 0; m < NMEAS; m++)
		bench_json_num(&j, meas_name[m], bytes / med[m] / 1e9);
	bench_json_close(&j);
	bench_json_obj(&j, "ratios");
	bench_json_num(&j, "pagein_vs_aes1", med[M_AES1] / med[M_PAGEIN]);
	bench_json_num(&j, "pagein_vs_cat", med[M_CAT] / med[M_PAGEIN]);
	bench_json_close(&j);
	bench_json_end(&j);
}

static void print_text(struct pagein *b, const double med[NMEAS],
		       const struct stream_info *si)
{
	double bytes = (double)b->f.hdr.plaintext_len;
	int m;

	printf("pagein: %llu bytes, %u chunks, %u decrypt threads, queue "
	       "depth %u, %s%s, median of %u\n",
	       (unsigned long long)b->f.hdr.plaintext_len,
	       b->f.hdr.chunk_count, si->workers, si->queue_depth,
	       si->uring ? "io_uring" : "pread", !si->direct ? "" :
	       si->direct_pageins && !si->direct_fallbacks ? ", O_DIRECT" :
	       ", O_DIRECT refused: buffered", b->op.runs);
	printf("  staging %slocked%s\n", si->locked ? "" : "not ",
	       !si->uring ? "" : si->fixed_bufs && si->fixed_file ?
	       ", fixed buffers and file" : si->fixed_bufs ?
	       ", fixed buffers, no fixed file" : ", no fixed buffers");
	for (m = 0; m < NMEAS; m++)
		printf("  %-7s %9.4f s  %6.2f GB/s\n", meas_name[m], med[m],
		       bytes / med[m] / 1e9);
	printf("  page-in: %.2fx one core's AES-256-GCM, %.2fx cat\n",
	       med[M_AES1] / med[M_PAGEIN], med[M_CAT] / med[M_PAGEIN]);
}

int bench_pagein(int argc, char **argv)
{
	struct pagein b = { .op = { .runs = 11 } };
	struct stream_info si;
	double med[NMEAS];
	int ret;

	ret = parse_opts(argc, argv, &b.op);
	if (ret) {
		pagein_usage(ret > 0 ? stdout : stderr);
		return ret > 0 ? BENCH_EXIT_OK : BENCH_EXIT_USAGE;
	}
	ret = setup(&b);
	if (!ret) {
		run_rounds(&b, med);
		stream_get_info(b.s, &si);
		if (b.failed)
			fprintf(stderr, "ortho-bench pagein: a run failed\n");
		else if (b.op.json)
			print_json(&b, med, &si);
		else
			print_text(&b, med, &si);
	}
	cleanup(&b);
	return ret || b.failed ? BENCH_EXIT_FAIL : BENCH_EXIT_OK;
}
