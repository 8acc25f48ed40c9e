// SPDX-License-Identifier: MIT
/*
 * The compute pool behind ok_fused() and ok_int8(): threads - 1 workers
 * plus the calling thread, splitting a call's rows.
 *
 * Work split: the rows are cut into contiguous chunks (a multiple of
 * OK_ROW_ALIGN rows, about eight per thread) of equal work, the Ortho
 * entries of their rows counted, not of equal rows, that the caller and
 * the workers claim from one counter. A worker that wakes late simply
 * claims fewer chunks, so the caller never waits for a wake-up, only for
 * chunks already being computed.
 *
 * On the integer path x is rounded once per call into ->xq, not once per
 * chunk: the first ->nprep tickets of a job prepare a few tokens each, and
 * a row chunk starts once every one of them is done (they are claimed
 * before any row chunk, so that wait is for work already under way).
 *
 * Idle workers sleep on a condition variable: nothing spins between calls,
 * so another library timed next to this one (the benchmark's OpenBLAS)
 * keeps every core. Only the caller, inside its own call, spins briefly
 * for the last chunk before it blocks.
 *
 * Locking: ->busy is held by the one caller that owns the workers for a
 * call; a second caller that cannot take it at once computes alone. ->lock
 * guards ->gen, ->job and ->stop and pairs with ->wake (workers) and ->idle
 * (the caller). ->ticket holds (generation << 32 | next chunk) so a worker
 * holding an old job can never claim a chunk of a newer one; ->done counts
 * the chunks finished in the current job.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fused.h"
#include "kernels.h"

/* Below this many multiply-adds a call runs on the caller alone. */
#define POOL_MIN_WORK (64u * 1024u)
/* Chunks per thread: enough to even out a late worker, few enough to be
 * cheap to claim. */
#define POOL_CHUNKS_PER_THREAD 8
#define POOL_MAX_THREADS 1024
/* Caller's bounded wait for the last chunk before it sleeps. */
#define POOL_SPIN 20000
/* Tokens one preparation ticket rounds. */
#define POOL_PREP_TOK 8
/* An Ortho entry costs about this many INT8 weights (gather, FP16). */
#define POOL_NNZ_COST 6

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#endif
}

struct ok_job {
	const struct ok_q8 *m;
	const struct ok_ortho *const *o;
	unsigned int no;
	int fused;
	const float *x;
	float *y;
	uint32_t ntok;
	void *xq;		/* prepared x, NULL off the integer path */
	uint32_t nprep;		/* tickets that prepare x */
	uint32_t nchunks;	/* row chunks after them */
	uint64_t work;		/* of all rows, in cost() units */
	uint32_t gen;
};

struct ok_pool {
	pthread_mutex_t busy;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	pthread_cond_t idle;
	uint32_t gen;
	int stop;
	struct ok_job job;
	uint64_t ticket;
	uint32_t done;
	uint32_t prepped;
	void *xq;		/* grown as calls need, under ->busy */
	size_t xq_len;
	unsigned int threads;
	unsigned int started;
	pthread_t tid[];
};

/* Work of rows [0, r): their weights and their Ortho entries. */
static uint64_t cost(const struct ok_job *j, uint32_t r)
{
	uint64_t w = (uint64_t)r * j->m->cols;
	unsigned int i;

	for (i = 0; i < j->no; i++) {
		if (j->o[i]->encoding == OK_DENSE16)
			w += (uint64_t)r * j->m->cols * POOL_NNZ_COST;
		else if (j->o[i]->encoding == OK_CSR16 ||
			 j->o[i]->encoding == OK_CSR32)
			w += (uint64_t)j->o[i]->rowptr[r] * POOL_NNZ_COST;
	}
	return w;
}

/* First row of chunk @c: the aligned row where its share of work starts. */
static uint32_t chunk_start(const struct ok_job *j, uint32_t c)
{
	const uint32_t rows = j->m->rows;
	uint64_t want;
	uint32_t lo = 0, hi, mid;

	if (!c)
		return 0;
	if (c >= j->nchunks)
		return rows;
	want = (uint64_t)((double)j->work * c / j->nchunks);
	hi = (rows + OK_ROW_ALIGN - 1) / OK_ROW_ALIGN;
	while (lo < hi) {		/* first aligned row with cost >= want */
		mid = lo + (hi - lo) / 2;
		if (cost(j, mid * OK_ROW_ALIGN < rows ?
			    mid * OK_ROW_ALIGN : rows) < want)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo * OK_ROW_ALIGN < rows ? lo * OK_ROW_ALIGN : rows;
}

static void job_prep(const struct ok_job *j, uint32_t c)
{
#if OK_HAVE_X86
	uint32_t t0 = c * POOL_PREP_TOK;
	uint32_t t1 = j->ntok - t0 < POOL_PREP_TOK ? j->ntok : t0 + POOL_PREP_TOK;

	okx_xq_prep_all(j->m, j->x, j->ntok, t0, t1, j->xq);
#endif
}

static void job_rows(const struct ok_job *j, uint32_t c)
{
	uint32_t r0 = chunk_start(j, c), r1 = chunk_start(j, c + 1);

	if (r0 >= r1)
		return;
#if OK_HAVE_X86
	if (j->xq) {
		okx_madd_rows(j->m, j->fused ? j->o : NULL, j->fused ? j->no : 0,
			      j->x, j->xq, j->y, j->ntok, r0, r1);
		return;
	}
#endif
	if (j->fused)
		ok_fused_rows(j->m, j->o, j->no, j->x, j->y, j->ntok, r0, r1);
	else
		ok_int8_rows(j->m, j->x, j->y, j->ntok, r0, r1);
}

/* Claim the next chunk of job @gen. Return: 0 when there is none left. */
static int claim(struct ok_pool *p, uint32_t gen, uint32_t nchunks,
		 uint32_t *c)
{
	uint64_t t = __atomic_load_n(&p->ticket, __ATOMIC_RELAXED);

	for (;;) {
		if ((uint32_t)(t >> 32) != gen || (uint32_t)t >= nchunks)
			return 0;
		if (__atomic_compare_exchange_n(&p->ticket, &t, t + 1, 1,
						__ATOMIC_ACQ_REL,
						__ATOMIC_RELAXED)) {
			*c = (uint32_t)t;
			return 1;
		}
	}
}

/* Wait (spinning: it is work under way) until x is prepared. */
static void wait_prep(struct ok_pool *p, const struct ok_job *j)
{
	while (__atomic_load_n(&p->prepped, __ATOMIC_ACQUIRE) != j->nprep)
		cpu_relax();
}

/* Compute tickets of @j until none is left; the last one done wakes the
 * caller. */
static void run_chunks(struct ok_pool *p, const struct ok_job *j, int caller)
{
	const uint32_t total = j->nprep + j->nchunks;
	uint32_t c;

	while (claim(p, j->gen, total, &c)) {
		if (c < j->nprep) {
			job_prep(j, c);
			__atomic_add_fetch(&p->prepped, 1, __ATOMIC_RELEASE);
			continue;
		}
		wait_prep(p, j);
		job_rows(j, c - j->nprep);
		if (__atomic_add_fetch(&p->done, 1, __ATOMIC_ACQ_REL) ==
			    j->nchunks && !caller) {
			pthread_mutex_lock(&p->lock);
			pthread_cond_signal(&p->idle);
			pthread_mutex_unlock(&p->lock);
		}
	}
}

static void *worker(void *arg)
{
	struct ok_pool *p = arg;
	uint32_t seen = 0;
	struct ok_job j;

	pthread_mutex_lock(&p->lock);
	for (;;) {
		while (p->gen == seen && !p->stop)
			pthread_cond_wait(&p->wake, &p->lock);
		if (p->stop)
			break;
		seen = p->gen;
		j = p->job;
		pthread_mutex_unlock(&p->lock);
		run_chunks(p, &j, 0);
		pthread_mutex_lock(&p->lock);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

static void wait_chunks(struct ok_pool *p, uint32_t nchunks)
{
	int i;

	for (i = 0; i < POOL_SPIN; i++) {
		if (__atomic_load_n(&p->done, __ATOMIC_ACQUIRE) == nchunks)
			return;
		cpu_relax();
	}
	pthread_mutex_lock(&p->lock);
	while (__atomic_load_n(&p->done, __ATOMIC_ACQUIRE) != nchunks)
		pthread_cond_wait(&p->idle, &p->lock);
	pthread_mutex_unlock(&p->lock);
}

/* Room for the call's prepared x in ->xq. Return: 0 when there is none. */
static int xq_room(struct ok_pool *p, const struct ok_q8 *m, uint32_t ntok)
{
#if OK_HAVE_X86
	size_t need = okx_xq_bytes(m, ntok);
	void *n;

	if (!need)
		return 0;
	if (need <= p->xq_len)
		return 1;
	n = realloc(p->xq, need);
	if (!n)
		return 0;
	p->xq = n;
	p->xq_len = need;
	return 1;
#else
	return 0;
#endif
}

static void run_alone(const struct ok_q8 *m, const struct ok_ortho *const *o,
		      unsigned int no, int fused, const float *x, float *y,
		      uint32_t ntok)
{
	if (fused)
		ok_fused_rows(m, o, no, x, y, ntok, 0, m->rows);
	else
		ok_int8_rows(m, x, y, ntok, 0, m->rows);
}

static void run(struct ok_pool *p, const struct ok_q8 *m,
		const struct ok_ortho *const *o, unsigned int no, int fused,
		const float *x, float *y, uint32_t ntok)
{
	uint64_t work = (uint64_t)m->rows * m->cols * ntok;
	struct ok_job j = { .m = m, .o = o, .no = no, .fused = fused,
			    .x = x, .y = y, .ntok = ntok };
	uint32_t per;

	if (!m->group || !ntok)
		return;
	if (fused && !no)	/* nothing resident: exactly the INT8 kernel */
		fused = j.fused = 0;
	if (!p || p->threads < 2 || work < POOL_MIN_WORK ||
	    m->rows < 2 * OK_ROW_ALIGN || pthread_mutex_trylock(&p->busy)) {
		run_alone(m, o, no, fused, x, y, ntok);
		return;
	}
	if (ok_have_avx2() && okx_madd_ok(m)) {
		if (!xq_room(p, m, ntok)) {
			pthread_mutex_unlock(&p->busy);
			run_alone(m, o, no, fused, x, y, ntok);
			return;
		}
		j.xq = p->xq;
		j.nprep = (ntok + POOL_PREP_TOK - 1) / POOL_PREP_TOK;
	}
	per = m->rows / (p->threads * POOL_CHUNKS_PER_THREAD);
	per = (per + OK_ROW_ALIGN - 1) / OK_ROW_ALIGN * OK_ROW_ALIGN;
	if (!per)
		per = OK_ROW_ALIGN;
	j.nchunks = (uint32_t)(((uint64_t)m->rows + per - 1) / per);
	j.work = cost(&j, m->rows);

	pthread_mutex_lock(&p->lock);
	j.gen = ++p->gen;
	if (!j.gen)	/* 0 is the workers' "seen nothing yet" */
		j.gen = ++p->gen;
	p->job = j;
	__atomic_store_n(&p->done, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&p->prepped, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&p->ticket, (uint64_t)j.gen << 32, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->lock);

	run_chunks(p, &j, 1);
	wait_chunks(p, j.nchunks);
	pthread_mutex_unlock(&p->busy);
}

/**
 * ok_fused() - y = deq(Base) x + sum of Ortho x over the pool's threads.
 *
 * @p may be NULL (the caller computes alone). Small problems, and callers
 * that find the pool busy with another call, run on the caller's thread.
 */
void ok_fused(struct ok_pool *p, const struct ok_q8 *m,
	      const struct ok_ortho *const *o, unsigned int no,
	      const float *x, float *y, uint32_t ntok)
{
	run(p, m, o, no, 1, x, y, ntok);
}

/**
 * ok_int8() - y = deq(Base) x over the pool's threads, no Ortho code.
 */
void ok_int8(struct ok_pool *p, const struct ok_q8 *m, const float *x,
	     float *y, uint32_t ntok)
{
	run(p, m, NULL, 0, 0, x, y, ntok);
}

static void stop_workers(struct ok_pool *p)
{
	unsigned int i;

	pthread_mutex_lock(&p->lock);
	p->stop = 1;
	pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->lock);
	for (i = 0; i < p->started; i++)
		pthread_join(p->tid[i], NULL);
	p->started = 0;
}

/* Workers start with every signal blocked: signals are the app's. */
static int start_workers(struct ok_pool *p)
{
	sigset_t all, old;
	int ret = 0;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	while (p->started + 1 < p->threads) {
		ret = -pthread_create(&p->tid[p->started], NULL, worker, p);
		if (ret)
			break;
		p->started++;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return ret;
}

/**
 * ok_pool_new() - start a compute pool.
 * @threads: threads in all, the caller's included; 0 for the online CPUs.
 * @out: the new pool.
 *
 * Return: 0, -EINVAL (no @out, or more than 1024 threads), -ENOMEM, or the
 * error of pthread_create() (nothing is left running then).
 */
int ok_pool_new(unsigned int threads, struct ok_pool **out)
{
	struct ok_pool *p;
	long n;
	int ret;

	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!threads) {
		n = sysconf(_SC_NPROCESSORS_ONLN);
		threads = n > 0 ? (unsigned int)(n < POOL_MAX_THREADS ?
						 n : POOL_MAX_THREADS) : 1;
	}
	if (threads > POOL_MAX_THREADS)
		return -EINVAL;
	p = calloc(1, sizeof(*p) + sizeof(pthread_t) * threads);
	if (!p)
		return -ENOMEM;
	p->threads = threads;
	pthread_mutex_init(&p->busy, NULL);
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->wake, NULL);
	pthread_cond_init(&p->idle, NULL);
	ret = start_workers(p);
	if (ret) {
		ok_pool_free(p);
		return ret;
	}
	*out = p;
	return 0;
}

/**
 * ok_pool_free() - stop the workers and free @p (NULL is fine). No call may
 * be running on the pool.
 */
void ok_pool_free(struct ok_pool *p)
{
	if (!p)
		return;
	stop_workers(p);
	free(p->xq);
	pthread_cond_destroy(&p->idle);
	pthread_cond_destroy(&p->wake);
	pthread_mutex_destroy(&p->lock);
	pthread_mutex_destroy(&p->busy);
	free(p);
}

/**
 * ok_pool_threads() - threads a call may use, the caller's included.
 *
 * Return: that number (1 for a NULL pool).
 */
unsigned int ok_pool_threads(const struct ok_pool *p)
{
	return p ? p->threads : 1;
}
