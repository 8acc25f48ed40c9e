// SPDX-License-Identifier: MIT
/*
 * The compute pool behind ok_fused() and ok_int8(): threads - 1 workers
 * plus the calling thread, splitting a call's rows.
 *
 * Work split: the rows are cut into contiguous chunks of equal rows (a
 * multiple of OK_ROW_ALIGN, POOL_CHUNKS_PER_THREAD per thread). They are
 * not weighed by their Ortho entries: finding those boundaries read the
 * row pointers at the start of every call, cold, and cost more than the
 * imbalance the taking of chunks below evens out anyway. Thread i owns a
 * contiguous range of chunks and takes them from its front, so it reads
 * one sequential stream of weights: the hardware prefetcher follows that,
 * and on the 2-core VM the same GEMV ran 13% slower with its chunks dealt
 * out in turn. A thread whose range is done takes chunks from the back of
 * the others' ranges, so a worker that wakes late simply computes less,
 * and the caller never waits for a wake-up, only for chunks under way.
 *
 * On the integer path x is rounded once per call into ->xq, not once per
 * chunk: the first ->nprep tickets of ->prep_next prepare a few tokens
 * each, and a thread starts on rows once every one of them is done (they
 * are taken before any rows, so that wait is for work under way).
 *
 * Idle workers: a worker that finished its part of a call looks for the
 * next call for POOL_IDLE_SPIN_NS, then sleeps on a condition variable, so
 * a model's back-to-back calls do not each pay for a wake-up, and nothing
 * spins for long between a program's bursts of calls. The caller, inside
 * its own call, spins briefly for the last chunk before it blocks.
 *
 * Locking: ->busy is held by the one caller that owns the workers for a
 * call; a second caller that cannot take it at once computes alone. ->lock
 * guards ->job, ->live and the writes of ->gen and ->stop, and pairs with
 * ->wake (workers) and ->idle (the caller). A worker joins a job only
 * under ->lock while ->live, counting itself in ->active; the caller ends
 * the job by clearing ->live and waiting for ->active to drop to zero, so
 * no worker ever holds an old job while the ranges are set for a new one.
 * ->done counts the chunks finished in the current job.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fused.h"
#include "kernels.h"

/* Below this many multiply-adds a call runs on the caller alone. */
#define POOL_MIN_WORK (64u * 1024u)
/* Chunks per thread: enough that the threads end close together (a chunk
 * of a 4096 x 4096 GEMV on 2 threads is 64 rows, about 10 us), few enough
 * to be cheap to claim. */
#define POOL_CHUNKS_PER_THREAD 32
#define POOL_MAX_THREADS 1024
/* Caller's bounded wait for the last chunk before it sleeps. */
#define POOL_SPIN 20000
/* How long a worker that finished its part looks for the next call before
 * it sleeps: a model's calls come back to back, and waking a sleeping
 * thread cost 10-60 us on the 2-core VM, a tenth of a 4096 x 4096 GEMV. */
#define POOL_IDLE_SPIN_NS 100000
/* Tokens one preparation ticket rounds. */
#define POOL_PREP_TOK 8

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
	uint32_t nchunks;	/* row chunks */
	uint32_t per;		/* rows in a chunk */
};

/* A thread's chunks [front, back), alone on its cache line. */
struct pool_range {
	uint64_t fb;		/* front << 32 | back */
	char pad[56];
};

struct pool_thread {
	struct ok_pool *p;
	unsigned int id;
	pthread_t tid;
};

struct ok_pool {
	pthread_mutex_t busy;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	pthread_cond_t idle;
	uint32_t gen;
	int stop;
	int live;		/* workers may still join ->job */
	struct ok_job job;
	uint32_t prep_next;
	uint32_t prepped;
	uint32_t done;
	uint32_t active;	/* workers inside the current job */
	struct pool_range *range;	/* per thread, the caller's first */
	void *xq;		/* grown as calls need, under ->busy */
	size_t xq_len;
	unsigned int threads;
	unsigned int started;
	struct pool_thread th[];
};

/* First row of chunk @c: chunks are ->per rows (the last may be short). */
static uint32_t chunk_start(const struct ok_job *j, uint32_t c)
{
	uint64_t r = (uint64_t)c * j->per;

	return r < j->m->rows ? (uint32_t)r : j->m->rows;
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

/* Take chunk @c from the front (@back 0) or the back of range @r.
 * Return: 0 when the range is empty. */
static int claim(struct pool_range *r, int back, uint32_t *c)
{
	uint64_t v = __atomic_load_n(&r->fb, __ATOMIC_RELAXED), n;
	uint32_t f, b;

	for (;;) {
		f = (uint32_t)(v >> 32);
		b = (uint32_t)v;
		if (f >= b)
			return 0;
		n = back ? ((uint64_t)f << 32 | (b - 1)) :
			   ((uint64_t)(f + 1) << 32 | b);
		if (__atomic_compare_exchange_n(&r->fb, &v, n, 1,
						__ATOMIC_ACQ_REL,
						__ATOMIC_RELAXED)) {
			*c = back ? b - 1 : f;
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

/*
 * Thread @self's part of @j: x's preparation tickets, its own range from
 * the front, then the other ranges from the back; the thread that finishes
 * the last chunk wakes the caller.
 */
static void run_chunks(struct ok_pool *p, const struct ok_job *j,
		       unsigned int self)
{
	unsigned int i, t;
	uint32_t c;

	while ((c = __atomic_fetch_add(&p->prep_next, 1, __ATOMIC_RELAXED)) <
	       j->nprep) {
		job_prep(j, c);
		__atomic_add_fetch(&p->prepped, 1, __ATOMIC_RELEASE);
	}
	wait_prep(p, j);
	for (i = 0; i < p->threads; i++) {
		t = (self + i) % p->threads;
		while (claim(&p->range[t], i != 0, &c)) {
			job_rows(j, c);
			if (__atomic_add_fetch(&p->done, 1, __ATOMIC_ACQ_REL) ==
				    j->nchunks && self) {
				pthread_mutex_lock(&p->lock);
				pthread_cond_broadcast(&p->idle);
				pthread_mutex_unlock(&p->lock);
			}
		}
	}
}

static uint64_t now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* Look for a job newer than @seen (or a stop) for POOL_IDLE_SPIN_NS. */
static void idle_spin(struct ok_pool *p, uint32_t seen)
{
	uint64_t t0 = now_ns();
	unsigned int i;

	for (i = 1;; i++) {
		if (__atomic_load_n(&p->gen, __ATOMIC_ACQUIRE) != seen ||
		    __atomic_load_n(&p->stop, __ATOMIC_RELAXED))
			return;
		cpu_relax();
		if (!(i % 64) && now_ns() - t0 > POOL_IDLE_SPIN_NS)
			return;
	}
}

static void *worker(void *arg)
{
	struct pool_thread *th = arg;
	struct ok_pool *p = th->p;
	uint32_t seen = 0;
	struct ok_job j;

	for (;;) {
		idle_spin(p, seen);
		pthread_mutex_lock(&p->lock);
		while (p->gen == seen && !p->stop)
			pthread_cond_wait(&p->wake, &p->lock);
		if (p->stop)
			break;
		seen = p->gen;
		if (!p->live) {		/* that call is over already */
			pthread_mutex_unlock(&p->lock);
			continue;
		}
		__atomic_add_fetch(&p->active, 1, __ATOMIC_RELAXED);
		j = p->job;
		pthread_mutex_unlock(&p->lock);
		run_chunks(p, &j, th->id);
		if (!__atomic_sub_fetch(&p->active, 1, __ATOMIC_ACQ_REL)) {
			pthread_mutex_lock(&p->lock);
			pthread_cond_broadcast(&p->idle);
			pthread_mutex_unlock(&p->lock);
		}
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

/* Spin a while, then sleep on ->idle, until *@v reads @want. */
static void wait_for(struct ok_pool *p, const uint32_t *v, uint32_t want)
{
	int i;

	for (i = 0; i < POOL_SPIN; i++) {
		if (__atomic_load_n(v, __ATOMIC_ACQUIRE) == want)
			return;
		cpu_relax();
	}
	pthread_mutex_lock(&p->lock);
	while (__atomic_load_n(v, __ATOMIC_ACQUIRE) != want)
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

/* Deal chunks [0, @n) out to the threads' ranges, in order. */
static void set_ranges(struct ok_pool *p, uint32_t n)
{
	uint32_t per = (n + p->threads - 1) / p->threads, f, b;
	unsigned int i;

	for (i = 0; i < p->threads; i++) {
		f = per * i < n ? per * i : n;
		b = f + per < n ? f + per : n;
		__atomic_store_n(&p->range[i].fb, (uint64_t)f << 32 | b,
				 __ATOMIC_RELAXED);
	}
}

static void run(struct ok_pool *p, const struct ok_q8 *m,
		const struct ok_ortho *const *o, unsigned int no, int fused,
		const float *x, float *y, uint32_t ntok)
{
	uint64_t work = (uint64_t)m->rows * m->cols * ntok;
	struct ok_job j = { .m = m, .o = o, .no = no, .fused = fused,
			    .x = x, .y = y, .ntok = ntok };
	uint32_t per, gen;

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
	j.per = per;
	j.nchunks = (uint32_t)(((uint64_t)m->rows + per - 1) / per);

	pthread_mutex_lock(&p->lock);
	gen = p->gen + 1;
	if (!gen)	/* 0 is the workers' "seen nothing yet" */
		gen = 1;
	p->job = j;
	p->live = 1;
	__atomic_store_n(&p->done, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&p->prep_next, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&p->prepped, 0, __ATOMIC_RELAXED);
	set_ranges(p, j.nchunks);
	/* Spinning workers see the job here, sleeping ones when woken. */
	__atomic_store_n(&p->gen, gen, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->lock);

	run_chunks(p, &j, 0);
	wait_for(p, &p->done, j.nchunks);
	pthread_mutex_lock(&p->lock);
	p->live = 0;
	pthread_mutex_unlock(&p->lock);
	wait_for(p, &p->active, 0);
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
	__atomic_store_n(&p->stop, 1, __ATOMIC_RELAXED);
	pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->lock);
	for (i = 0; i < p->started; i++)
		pthread_join(p->th[i].tid, NULL);
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
		p->th[p->started].p = p;
		p->th[p->started].id = p->started + 1;
		ret = -pthread_create(&p->th[p->started].tid, NULL, worker,
				      &p->th[p->started]);
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
	p = calloc(1, sizeof(*p) + sizeof(p->th[0]) * threads);
	if (!p)
		return -ENOMEM;
	p->range = aligned_alloc(64, sizeof(*p->range) * threads);
	if (!p->range) {
		free(p);
		return -ENOMEM;
	}
	memset(p->range, 0, sizeof(*p->range) * threads);
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
	free(p->range);
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
