// SPDX-License-Identifier: MIT
/*
 * ortho-bench gemv: the fused INT8 + Ortho linear op against an FP32 GEMV
 * from OpenBLAS, the way a decode step runs it.
 *
 * - Each variant rotates over enough distinct matrices that its working
 *   set is at least 4x the last-level cache, so every call streams its
 *   weights from memory as a layer of a real model would.
 * - OpenBLAS and ours get the same thread count. OpenBLAS runs first; its
 *   idle threads spin for a while after each call, so before ours is timed
 *   it is set to one thread and left to fall asleep. Our pool's workers
 *   sleep between calls and never spin.
 * - Ours: plain INT8, fused with no Ortho, fused with one CSR Ortho of the
 *   given density. They run in rounds, one pass over the matrices each,
 *   the order rotating every round, so drift hits all three alike.
 * - Each call is timed on its own; a variant's figure is the median.
 *
 * --backend cuda[:N] (or auto, when it finds a device) runs the same
 * variants on the device instead: ortho-bench-gemv-cuda.c.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "config.h"
#include "fp16.h"
#include "kernels.h"
#include "ortho-bench.h"
#include "ortho-bench-gemv.h"

#ifdef HAVE_OPENBLAS
#include <cblas.h>
#endif

/* The working set each variant rotates over, in last-level caches. */
#define WS_LLC_FACTOR 4
/* At most this many matrices per set (tiny shapes would want millions). */
#define MAX_MATRICES 65536
/* Timed passes over the set when --iters does not say. */
#define MIN_PASSES 3
/*
 * At least this many timed calls per variant: the calls of a decode step
 * on a shared 2-core VM spread by +-30%, and 2000 samples put a median
 * within about 0.5% (348 let fused/int8 stray past 3% in one run of five).
 */
#define MIN_CALLS 2000
/* OpenBLAS's default spin before its threads sleep: 2^28 TSC cycles. */
#define OPENBLAS_TIMEOUT_LOG2 28

static const char *const var_name[NVAR] = {
	"int8", "fused base only", "fused + Ortho",
};

static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

float gemv_randf(uint64_t *s)
{
	return (float)((int64_t)rng_next(s) >> 40) * 0x1p-23f;
}

static void *big_alloc(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	/* Fewer page faults while filling, fewer TLB misses for both sides. */
	madvise(p, len, MADV_HUGEPAGE);
	return p;
}

static void fill_bytes(void *dst, size_t len, uint64_t *s)
{
	uint8_t *p = dst;
	uint64_t v;
	size_t i;

	for (i = 0; i + 8 <= len; i += 8) {
		v = rng_next(s);
		memcpy(p + i, &v, 8);
	}
	for (; i < len; i++)
		p[i] = (uint8_t)rng_next(s);
}

/*
 * How many matrices of @bytes each make WS_LLC_FACTOR last-level caches,
 * within @cap bytes. Return: the count (0 when two do not fit).
 */
static uint32_t set_count(uint64_t bytes, uint64_t llc, uint64_t cap,
			  int *capped)
{
	uint64_t want = (WS_LLC_FACTOR * llc + bytes - 1) / bytes;

	if (want < 2)
		want = 2;
	if (want > MAX_MATRICES) {
		want = MAX_MATRICES;
		*capped = 1;
	}
	if (want * bytes > cap) {
		want = cap / bytes;
		*capped = 1;
	}
	return want < 2 ? 0 : (uint32_t)want;
}

/* Row @r's columns: k distinct ones in order (Floyd's sample). */
static uint32_t pick_cols(uint64_t *bits, uint32_t cols, uint32_t k,
			  uint64_t *s, uint32_t *out)
{
	uint32_t i, t, w, n = 0;

	memset(bits, 0, ((size_t)cols + 63) / 64 * 8);
	for (i = cols - k; i < cols; i++) {
		t = (uint32_t)(rng_next(s) % ((uint64_t)i + 1));
		if (bits[t / 64] & (1ull << (t % 64)))
			t = i;
		bits[t / 64] |= 1ull << (t % 64);
	}
	for (w = 0; w < (cols + 63) / 64; w++) {
		uint64_t b = bits[w];

		while (b) {
			out[n++] = w * 64 + (uint32_t)__builtin_ctzll(b);
			b &= b - 1;
		}
	}
	return n;
}

/* Per-row counts: density * cols on average, randomly rounded. */
static uint32_t row_nnz(double density, uint32_t cols, uint64_t *s)
{
	double want = density * cols;
	uint32_t k = (uint32_t)want;

	if ((double)(rng_next(s) >> 11) * 0x1p-53 < want - k)
		k++;
	return k > cols ? cols : k;
}

static int q8_set_ortho(struct q8_set *set, const struct gemv_opts *op,
			uint32_t nnz_max, uint64_t *s)
{
	const uint32_t rows = op->rows, cols = op->cols;
	int wide = cols > 65536;
	uint64_t *bits = malloc(((size_t)cols + 63) / 64 * 8);
	uint32_t *pick = malloc(sizeof(*pick) * cols);
	uint32_t i, r, j, k;
	uint64_t base;

	if (!bits || !pick) {
		free(bits);
		free(pick);
		return -ENOMEM;
	}
	for (i = 0; i < set->n; i++) {
		struct ok_ortho *o = &set->o[i];
		uint32_t *rp = set->rowptr + (size_t)i * (rows + 1);

		base = (uint64_t)i * nnz_max;
		o->encoding = wide ? OK_CSR32 : OK_CSR16;
		o->rows = rows;
		o->cols = cols;
		o->rowptr = rp;
		o->val = set->val + base;
		o->col = wide ? (void *)((uint32_t *)set->col + base) :
				(void *)((uint16_t *)set->col + base);
		rp[0] = 0;
		for (r = 0; r < rows; r++) {
			k = pick_cols(bits, cols,
				      row_nnz(op->density, cols, s), s, pick);
			if ((uint64_t)rp[r] + k > nnz_max)
				k = nnz_max - rp[r];
			for (j = 0; j < k; j++) {
				size_t at = base + rp[r] + j;

				if (wide)
					((uint32_t *)set->col)[at] = pick[j];
				else
					((uint16_t *)set->col)[at] =
						(uint16_t)pick[j];
				set->val[at] = f32_to_fp16(
					gemv_randf(s) * 0.02f);
			}
			rp[r + 1] = rp[r] + k;
		}
		set->nnz += rp[rows];
	}
	free(bits);
	free(pick);
	return 0;
}

void gemv_set_free(struct q8_set *set)
{
	if (set->map)
		munmap(set->map, set->map_len);
	free(set->m);
	free(set->o);
	memset(set, 0, sizeof(*set));
}

/* Lay out and fill @set->n matrices (weights, scales, Ortho) at once. */
static int q8_set_fill(struct q8_set *set, const struct gemv_opts *op,
		       uint32_t nnz_max, uint64_t *s)
{
	const size_t rc = (size_t)op->rows * op->cols;
	const size_t ng = ((size_t)op->cols + op->group - 1) / op->group;
	const size_t colsz = op->cols > 65536 ? 4 : 2;
	size_t q_len = rc * set->n, sc_len = (size_t)op->rows * ng * set->n;
	size_t rp_len = ((size_t)op->rows + 1) * set->n;
	size_t nz_len = (size_t)nnz_max * set->n;
	uint8_t *p;
	float *sc;
	uint32_t i;
	size_t k;

	set->map_len = q_len + 4 * sc_len + 4 * rp_len + (colsz + 2) * nz_len +
		       64;
	set->map = big_alloc(set->map_len);
	set->m = calloc(set->n, sizeof(*set->m));
	set->o = calloc(set->n, sizeof(*set->o));
	if (!set->map || !set->m || !set->o)
		return -ENOMEM;
	p = set->map;
	sc = (float *)(p + q_len + (-q_len & 3));
	set->rowptr = (uint32_t *)(sc + sc_len);
	set->col = set->rowptr + rp_len;
	set->val = (uint16_t *)((uint8_t *)set->col + colsz * nz_len);

	fill_bytes(p, q_len, s);
	for (k = 0; k < sc_len; k++)
		sc[k] = (1.0f + 0.5f * gemv_randf(s)) / 127.0f;
	for (i = 0; i < set->n; i++) {
		set->m[i].q = (const int8_t *)p + rc * i;
		set->m[i].scales = sc + (size_t)op->rows * ng * i;
		set->m[i].rows = op->rows;
		set->m[i].cols = op->cols;
		set->m[i].group = op->group;
	}
	return q8_set_ortho(set, op, nnz_max, s);
}

/* Statistics for one variant: per-call seconds. */
struct samples {
	double *t;
	size_t n, cap;
};

static int samples_init(struct samples *sm, size_t cap)
{
	sm->t = malloc(sizeof(double) * cap);
	sm->n = 0;
	sm->cap = cap;
	return sm->t ? 0 : -ENOMEM;
}

static void samples_add(struct samples *sm, double t)
{
	if (sm->n < sm->cap)
		sm->t[sm->n++] = t;
}

uint32_t gemv_passes(const struct gemv_opts *op, uint32_t n)
{
	uint64_t calls = op->iters ? op->iters :
		(uint64_t)n * MIN_PASSES > MIN_CALLS ?
		(uint64_t)n * MIN_PASSES : MIN_CALLS;

	return (uint32_t)((calls + n - 1) / n);
}

struct gemv_result {
	double sec[NVAR];
	double fp32_s;
	uint32_t fp32_n, fp32_threads;
	uint64_t fp32_bytes;
	int fp32_capped;
	double fp32_wait_s;
	int matches;
};

#ifdef HAVE_OPENBLAS
static void fp32_call(const struct gemv_opts *op, const float *w,
		      const float *x, float *y)
{
	if (op->ntok == 1)
		cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)op->rows,
			    (int)op->cols, 1.0f, w, (int)op->cols, x, 1, 0.0f,
			    y, 1);
	else
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans,
			    (int)op->ntok, (int)op->rows, (int)op->cols, 1.0f,
			    x, (int)op->cols, w, (int)op->cols, 0.0f, y,
			    (int)op->rows);
}

/* How long OpenBLAS's idle threads may spin after a call (at >= 1 GHz). */
static double openblas_spin_s(void)
{
	const char *e = getenv("OPENBLAS_THREAD_TIMEOUT");
	int v = e && *e ? atoi(e) : 0;

	if (v <= 0)
		v = OPENBLAS_TIMEOUT_LOG2;
	if (v < 4)
		v = 4;
	if (v > 30)
		v = 30;
	return ldexp(1.0, v) / 1e9;
}

static int run_fp32(const struct gemv_opts *op, uint64_t llc, uint64_t cap,
		    const float *x, float *y, struct gemv_result *res)
{
	const size_t rc = (size_t)op->rows * op->cols;
	uint32_t n, pass, passes, i;
	struct samples sm;
	uint64_t s = 0x5eed0f32;
	float *w;
	size_t k;
	double t;

	res->fp32_bytes = rc * 4;
	n = set_count(res->fp32_bytes, llc, cap, &res->fp32_capped);
	if (!n)
		return -ENOMEM;
	w = big_alloc(rc * 4 * n);
	passes = gemv_passes(op, n);
	if (!w || samples_init(&sm, (size_t)passes * n)) {
		if (w)
			munmap(w, rc * 4 * n);
		return -ENOMEM;
	}
	for (k = 0; k < rc * n; k++)
		w[k] = gemv_randf(&s) * (1.0f / 64);
	openblas_set_num_threads((int)op->threads);
	res->fp32_threads = (uint32_t)openblas_get_num_threads();
	for (i = 0; i < n; i++)		/* warm-up: threads, page tables */
		fp32_call(op, w + rc * i, x, y);
	for (pass = 0; pass < passes; pass++) {
		for (i = 0; i < n; i++) {
			t = bench_now();
			fp32_call(op, w + rc * i, x, y);
			samples_add(&sm, bench_now() - t);
		}
	}
	res->fp32_s = bench_median(sm.t, sm.n);
	res->fp32_n = n;
	free(sm.t);
	munmap(w, rc * 4 * n);

	/* Let OpenBLAS's workers stop spinning before ours is timed. */
	openblas_set_num_threads(1);
	res->fp32_wait_s = openblas_spin_s() + 0.4;
	bench_sleep(res->fp32_wait_s);
	return 0;
}
#endif

static void run_var(struct ok_pool *pool, int v, const struct q8_set *set,
		    uint32_t i, const float *x, float *y, uint32_t ntok)
{
	switch (v) {
	case V_INT8:
		ok_int8(pool, &set->m[i], x, y, ntok);
		break;
	case V_BASE:
		ok_fused(pool, &set->m[i], NULL, 0, x, y, ntok);
		break;
	default: {
		const struct ok_ortho *o = &set->o[i];

		ok_fused(pool, &set->m[i], &o, 1, x, y, ntok);
		break;
	}
	}
}

static int run_ours(const struct gemv_opts *op, struct ok_pool *pool,
		    const struct q8_set *set, const float *x, float *y,
		    struct gemv_result *res)
{
	uint32_t passes = gemv_passes(op, set->n), pass, i, k;
	size_t ylen = (size_t)op->rows * op->ntok;
	struct samples sm[NVAR];
	int v, ret = 0;
	double t;

	for (v = 0; v < NVAR; v++) {
		if (samples_init(&sm[v], (size_t)passes * set->n))
			ret = -ENOMEM;
	}
	for (v = 0; v < NVAR && !ret; v++) {
		for (i = 0; i < set->n; i++)
			run_var(pool, v, set, i, x, y + ylen * v, op->ntok);
	}
	/*
	 * The variants take turns call by call, so a change in the machine's
	 * speed (another job, the clock) falls on all three alike. Slot k of
	 * a step runs variant (pass + k) % NVAR on matrix i + k * n / NVAR:
	 * each variant still visits every matrix once per pass, and a matrix
	 * is read again only after about n others, so weights still stream
	 * from memory.
	 */
	for (pass = 0; pass < passes && !ret; pass++) {
		for (i = 0; i < set->n; i++) {
			for (k = 0; k < NVAR; k++) {
				uint32_t j = (i + k * set->n / NVAR) % set->n;

				v = (int)((pass + k) % NVAR);
				t = bench_now();
				run_var(pool, v, set, j, x, y + ylen * v,
					op->ntok);
				samples_add(&sm[v], bench_now() - t);
			}
		}
	}
	/* Sanity: with no Ortho the two kernels agree bit for bit. */
	for (v = V_INT8; v <= V_BASE && !ret; v++)
		run_var(pool, v, set, 0, x, y + ylen * v, op->ntok);
	res->matches = !memcmp(y + ylen * V_INT8, y + ylen * V_BASE,
			       ylen * sizeof(*y));
	for (v = 0; v < NVAR; v++) {
		res->sec[v] = ret ? NAN : bench_median(sm[v].t, sm[v].n);
		free(sm[v].t);
	}
	return ret;
}

static const char *path_name(void)
{
	return ok_have_avx512() ? "avx512-vnni" : ok_have_avx2() ? "avx2" : "scalar";
}

static void print_json(const struct gemv_opts *op, const struct q8_set *set,
		       const struct gemv_result *res, uint64_t llc,
		       int llc_assumed, int capped)
{
	const double *s = res->sec;
	struct bench_json j;

	bench_json_begin(&j, stdout);
	bench_json_str(&j, "bench", "gemv");
	bench_json_int(&j, "rows", op->rows);
	bench_json_int(&j, "cols", op->cols);
	bench_json_int(&j, "group", op->group);
	bench_json_int(&j, "ntok", op->ntok);
	bench_json_int(&j, "threads", op->threads);
	bench_json_num(&j, "density", op->density);
	bench_json_num(&j, "density_actual",
		       (double)set->nnz / set->n / op->rows / op->cols);
	bench_json_str(&j, "ortho_encoding",
		       op->cols > 65536 ? "csr32" : "csr16");
	bench_json_str(&j, "kernel", path_name());
	bench_json_int(&j, "llc_bytes", (long long)llc);
	bench_json_bool(&j, "llc_assumed", llc_assumed);
	bench_json_int(&j, "matrices", set->n);
	bench_json_int(&j, "fp32_matrices", res->fp32_n);
	bench_json_obj(&j, "working_set_bytes");
	bench_json_int(&j, "fp32", (long long)(res->fp32_bytes * res->fp32_n));
	bench_json_int(&j, "int8", (long long)(set->base_bytes * set->n));
	bench_json_int(&j, "fused_ortho",
		       (long long)((set->base_bytes + set->ortho_bytes) *
				   set->n));
	bench_json_close(&j);
	bench_json_bool(&j, "working_set_capped", capped || res->fp32_capped);
	bench_json_int(&j, "calls",
		       (long long)gemv_passes(op, set->n) * set->n);
#ifdef HAVE_OPENBLAS
	bench_json_num(&j, "fp32_s", res->fp32_s);
	bench_json_int(&j, "fp32_calls",
		       (long long)gemv_passes(op, res->fp32_n) * res->fp32_n);
	bench_json_int(&j, "fp32_threads", res->fp32_threads);
	bench_json_str(&j, "blas", openblas_get_config());
	bench_json_num(&j, "blas_settle_s", res->fp32_wait_s);
#else
	bench_json_null(&j, "fp32_s");
	bench_json_str(&j, "note", "built without OpenBLAS: no FP32 "
		       "yardstick (apt-get install libopenblas-dev)");
#endif
	bench_json_num(&j, "int8_s", s[V_INT8]);
	bench_json_num(&j, "fused_base_only_s", s[V_BASE]);
	bench_json_num(&j, "fused_ortho_s", s[V_ORTHO]);
	bench_json_bool(&j, "fused_matches_int8", res->matches);
	bench_json_obj(&j, "ratios");
	bench_json_num(&j, "fp32_over_fused_base", res->fp32_s / s[V_BASE]);
	bench_json_num(&j, "ortho_overhead", s[V_ORTHO] / s[V_BASE] - 1);
	bench_json_num(&j, "fused_over_int8", s[V_BASE] / s[V_INT8]);
	bench_json_close(&j);
	bench_json_end(&j);
}

static void print_row(const char *name, double sec, double bytes,
		      double fp32_s)
{
	printf("  %-18s %10.3f ms %9.2f GB/s", name, sec * 1e3,
	       bytes / sec / 1e9);
	if (isfinite(fp32_s))
		printf(" %8.2fx", fp32_s / sec);
	putchar('\n');
}

static void print_text(const struct gemv_opts *op, const struct q8_set *set,
		       const struct gemv_result *res, uint64_t llc,
		       int llc_assumed, int capped)
{
	double q8b = (double)set->base_bytes;
	int v;

	printf("gemv %u x %u, group %u, %u token%s, %u thread%s, %s kernel\n",
	       op->rows, op->cols, op->group, op->ntok, op->ntok > 1 ? "s" : "",
	       op->threads, op->threads > 1 ? "s" : "", path_name());
	printf("rotating %u INT8 and %u FP32 matrices (last-level cache "
	       "%.1f MiB%s%s)\n", set->n, res->fp32_n, (double)llc / 1048576,
	       llc_assumed ? ", assumed" : "",
	       capped || res->fp32_capped ? "; working set capped" : "");
	printf("Ortho: one CSR per matrix, density %g (%.4g actual)\n\n",
	       op->density, (double)set->nnz / set->n / op->rows / op->cols);
	printf("  %-18s %13s %14s %9s\n", "variant", "median/call",
	       "weights read", "vs FP32");
#ifdef HAVE_OPENBLAS
	print_row("FP32 (OpenBLAS)", res->fp32_s, (double)res->fp32_bytes,
		  res->fp32_s);
#else
	printf("  %-18s (built without OpenBLAS: no FP32 yardstick)\n",
	       "FP32");
#endif
	for (v = 0; v < NVAR; v++)
		print_row(var_name[v], res->sec[v],
			  v == V_ORTHO ? q8b + (double)set->ortho_bytes : q8b,
			  res->fp32_s);
	printf("\nOrtho overhead %+.1f%%, fused/int8 %.3f, FP32/fused %.2fx%s\n",
	       (res->sec[V_ORTHO] / res->sec[V_BASE] - 1) * 100,
	       res->sec[V_BASE] / res->sec[V_INT8],
	       res->fp32_s / res->sec[V_BASE],
	       res->matches ? "" : "  (fused and int8 outputs DIFFER)");
}

static void gemv_usage(FILE *f)
{
	fprintf(f,
		"usage: ortho-bench gemv --rows R --cols C [--threads T] "
		"[--density D]\n"
		"                        [--group G] [--ntok N] [--iters N] "
		"[--json]\n"
		"                        [--backend auto|cpu|cuda[:N]]\n"
		"  --threads  threads for OpenBLAS and ours (default: online "
		"CPUs)\n"
		"  --density  share of the Ortho's entries (default 0.01)\n"
		"  --group    INT8 scale group (default 64)\n"
		"  --ntok     tokens per call; above 1 OpenBLAS runs sgemm\n"
		"  --iters    timed calls per variant (default: 3 passes, "
		">= 2000)\n"
		"  --json     one JSON object instead of the table\n"
		"  --backend  cpu (default); cuda[:N] times the kernels on "
		"that device\n"
		"             against its cuMemcpyDtoD rate; auto takes the "
		"device when\n"
		"             there is one, else the CPU\n");
}

/* --opt value or --opt=value. Return: the value, NULL when missing. */
static const char *opt_val(int argc, char **argv, int *i, const char *name)
{
	size_t n = strlen(name);
	const char *a = argv[*i];

	if (strncmp(a, name, n))
		return NULL;
	if (a[n] == '=')
		return a + n + 1;
	if (a[n] || *i + 1 >= argc)
		return NULL;
	return argv[++*i];
}

static int parse_opts(int argc, char **argv, struct gemv_opts *op)
{
	const uint32_t umax = 1u << 30;
	const char *v;
	int i, ret = 0;

	for (i = 1; i < argc && !ret; i++) {
		if (!strcmp(argv[i], "--json"))
			op->json = 1;
		else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
			return 1;
		else if ((v = opt_val(argc, argv, &i, "--rows")))
			ret = bench_parse_u32("--rows", v, 1, umax, &op->rows);
		else if ((v = opt_val(argc, argv, &i, "--cols")))
			ret = bench_parse_u32("--cols", v, 1, umax, &op->cols);
		else if ((v = opt_val(argc, argv, &i, "--threads")))
			ret = bench_parse_u32("--threads", v, 1, 1024,
					      &op->threads);
		else if ((v = opt_val(argc, argv, &i, "--group")))
			ret = bench_parse_u32("--group", v, 1, umax,
					      &op->group);
		else if ((v = opt_val(argc, argv, &i, "--ntok")))
			ret = bench_parse_u32("--ntok", v, 1, 4096, &op->ntok);
		else if ((v = opt_val(argc, argv, &i, "--iters")))
			ret = bench_parse_u32("--iters", v, 1, 10000000,
					      &op->iters);
		else if ((v = opt_val(argc, argv, &i, "--density")))
			ret = bench_parse_double("--density", v, 0, 1,
						 &op->density);
		else if ((v = opt_val(argc, argv, &i, "--backend")))
			op->backend = v;
		else {
			fprintf(stderr, "ortho-bench gemv: unknown or "
				"incomplete option '%s'\n", argv[i]);
			ret = -EINVAL;
		}
	}
	if (!ret && (!op->rows || !op->cols)) {
		fprintf(stderr, "ortho-bench gemv: --rows and --cols are "
			"required\n");
		ret = -EINVAL;
	}
	return ret;
}

/* Room for each matrix's Ortho: the most entries row_nnz() can give. */
static int nnz_bound(const struct gemv_opts *op, uint32_t *out)
{
	uint64_t k = (uint64_t)(op->density * op->cols) + 1;

	if (k > op->cols)
		k = op->cols;
	if (k * op->rows > UINT32_MAX) {
		fprintf(stderr, "ortho-bench gemv: %llu Ortho entries per "
			"matrix do not fit 32-bit row pointers\n",
			(unsigned long long)(k * op->rows));
		return -E2BIG;
	}
	*out = (uint32_t)(k * op->rows);
	return 0;
}

int gemv_setup(const struct gemv_opts *op, uint64_t llc, uint64_t cap,
	       struct q8_set *set, int *capped)
{
	const size_t ng = ((size_t)op->cols + op->group - 1) / op->group;
	size_t colsz = op->cols > 65536 ? 4 : 2;
	uint64_t s = 0x5eed0008;
	uint32_t nnz_max;
	int ret;

	ret = nnz_bound(op, &nnz_max);
	if (ret)
		return ret;
	set->base_bytes = (size_t)op->rows * op->cols + 4 * ng * op->rows;
	set->ortho_bytes = 4 * ((size_t)op->rows + 1) +
			   (size_t)(op->density * op->rows * op->cols) *
				   (colsz + 2);
	set->n = set_count(set->base_bytes + set->ortho_bytes, llc, cap,
			   capped);
	if (!set->n) {
		fprintf(stderr, "ortho-bench gemv: not enough memory for two "
			"%u x %u matrices\n", op->rows, op->cols);
		return -ENOMEM;
	}
	ret = q8_set_fill(set, op, nnz_max, &s);
	if (ret)
		fprintf(stderr, "ortho-bench gemv: setting up %u matrices: "
			"%s\n", set->n, strerror(-ret));
	return ret;
}

uint64_t gemv_host_cap(void)
{
	uint64_t cap = bench_mem_avail() / 2;

	if (!cap || cap > (8ull << 30))
		cap = 8ull << 30;
	return cap;
}

int bench_gemv(int argc, char **argv)
{
	struct gemv_opts op = { .group = 64, .ntok = 1, .density = 0.01 };
	struct gemv_result res = { .fp32_s = NAN };
	struct q8_set set = { 0 };
	struct ok_pool *pool = NULL;
	uint64_t llc, cap, s = GEMV_SEED_X;
	float *x = NULL, *y = NULL;
	int ret, llc_assumed, capped = 0, ran = 0;
	size_t k;

	ret = parse_opts(argc, argv, &op);
	if (ret) {
		gemv_usage(ret > 0 ? stdout : stderr);
		return ret > 0 ? BENCH_EXIT_OK : BENCH_EXIT_USAGE;
	}
	ret = ok_pool_new(op.threads, &pool);
	if (ret) {
		fprintf(stderr, "ortho-bench gemv: thread pool: %s\n",
			strerror(-ret));
		return BENCH_EXIT_FAIL;
	}
	op.threads = ok_pool_threads(pool);
	ret = gemv_device(&op, pool, &ran);
	if (ran) {
		ok_pool_free(pool);
		return ret;
	}
	llc = bench_llc_bytes(&llc_assumed);
	/* Each set in turn may take half of what is free, 8 GiB at most. */
	cap = gemv_host_cap();

	x = malloc(sizeof(*x) * op.cols * op.ntok);
	y = malloc(sizeof(*y) * op.rows * op.ntok * NVAR);
	if (!x || !y) {
		ret = -ENOMEM;
		goto out;
	}
	for (k = 0; k < (size_t)op.cols * op.ntok; k++)
		x[k] = gemv_randf(&s);
#ifdef HAVE_OPENBLAS
	ret = run_fp32(&op, llc, cap, x, y, &res);
	if (ret) {
		fprintf(stderr, "ortho-bench gemv: FP32 matrices: %s\n",
			strerror(-ret));
		goto out;
	}
#endif
	ret = gemv_setup(&op, llc, cap, &set, &capped);
	if (ret)
		goto out;
	ret = run_ours(&op, pool, &set, x, y, &res);
	if (ret) {
		fprintf(stderr, "ortho-bench gemv: %s\n", strerror(-ret));
		goto out;
	}
	if (op.json)
		print_json(&op, &set, &res, llc, llc_assumed, capped);
	else
		print_text(&op, &set, &res, llc, llc_assumed, capped);
out:
	gemv_set_free(&set);
	free(x);
	free(y);
	ok_pool_free(pool);
	return ret ? BENCH_EXIT_FAIL : BENCH_EXIT_OK;
}
