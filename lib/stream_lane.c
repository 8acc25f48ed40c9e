// SPDX-License-Identifier: MIT
/*
 * Streaming lanes (a ring and its staging buffers, one page-in at a time
 * each, set up on first use) and the stream's setup, options and
 * introspection. Locking: lib/stream.c.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "log.h"
#include "secmem.h"
#include "stream_priv.h"

/* ---- lanes ---- */

static void lane_free(struct lane *l)
{
	if (!l)
		return;
	staging_fini(&l->st);
	pthread_cond_destroy(&l->cond);
	free(l->bufs);
	free(l->free);
	free(l);
}

static void ring_failed(struct stream *s, int err)
{
	int first;

	pthread_mutex_lock(&s->lock);
	first = !s->no_uring;
	s->no_uring = 1;
	pthread_mutex_unlock(&s->lock);
	if (!first)
		return;
	if (err == -EOPNOTSUPP)
		olog_info(s->ctx, "stream: built without liburing: shards "
			  "are read with pread");
	else
		olog_warn(s->ctx, "stream: io_uring is not available (%s): "
			  "shards are read with pread", strerror(-err));
}

/* ---- RLIMIT_MEMLOCK: one warning per stream ---- */

/* Claim the stream's one warning. Return: 1 when the caller logs it. */
static int memlock_claim(struct stream *s)
{
	int first;

	pthread_mutex_lock(&s->lock);
	first = !s->memlock_warned;
	s->memlock_warned = 1;
	pthread_mutex_unlock(&s->lock);
	return first;
}

/* @what failed; say what the limit is and what to do about it. */
static void memlock_warn(struct stream *s, const char *what)
{
	size_t staging = (size_t)s->max_lanes * s->nbuf * OSH_CHUNK_SIZE;
	struct rlimit rl;
	char lim[32];

	if (getrlimit(RLIMIT_MEMLOCK, &rl))
		snprintf(lim, sizeof(lim), "unknown");
	else if (rl.rlim_cur == RLIM_INFINITY)
		snprintf(lim, sizeof(lim), "unlimited");
	else
		snprintf(lim, sizeof(lim), "%llu KiB",
			 (unsigned long long)rl.rlim_cur >> 10);
	olog_warn(s->ctx, "stream: %s; RLIMIT_MEMLOCK is %s: raise it above "
		  "the staging (%zu MiB: up to %u page-ins at once, %zu MiB "
		  "each) plus the Ortho budget (ulimit -l; LimitMEMLOCK= in "
		  "a systemd unit) or grant CAP_IPC_LOCK", what, lim,
		  staging >> 20, s->max_lanes,
		  ((size_t)s->nbuf * OSH_CHUNK_SIZE) >> 20);
}

/* What of @st's locking and registering failed, once per stream. */
static void lane_report(struct stream *s, const struct staging *st)
{
	char what[512];
	size_t n = 0;

	if (!st->locked)
		n += (size_t)snprintf(what + n, sizeof(what) - n, "staging "
				      "buffers not locked in memory (mlock: "
				      "%s): shard plaintext may be written "
				      "to swap", strerror(-st->lock_err));
	if (st->have_ring && !st->fixed_bufs && n < sizeof(what))
		n += (size_t)snprintf(what + n, sizeof(what) - n, "%s not "
				      "registered with io_uring as fixed "
				      "buffers (%s): plain reads, slower",
				      n ? "; staging" : "staging buffers",
				      strerror(-st->bufs_err));
	/* Not a RLIMIT_MEMLOCK matter, and reads name the fd instead. */
	if (st->have_ring && !st->fixed_file)
		olog_dbg(s->ctx, "stream: no registered file slot (%s)",
			 strerror(-st->file_err));
	if (!n || !memlock_claim(s))
		return;
	memlock_warn(s, what);
}

void stream_memlock_check(struct stream *s)
{
	unsigned long n;
	char what[256];
	int warned, err;

	pthread_mutex_lock(&s->lock);
	warned = s->memlock_warned;
	pthread_mutex_unlock(&s->lock);
	if (warned)
		return;
	n = secmem_lock_failures(&err);
	if (n == s->secmem_seen || !memlock_claim(s))
		return;
	snprintf(what, sizeof(what), "secure memory of this process (such "
		 "as the slots shards are decrypted into) not locked in "
		 "memory (mlock: %s): shard plaintext may be written to swap",
		 strerror(-err));
	memlock_warn(s, what);
}

static int lane_new(struct stream *s, int want_ring, struct lane **out)
{
	struct lane *l = calloc(1, sizeof(*l));
	unsigned int b;
	int ret, ring_err;

	if (!l)
		return -ENOMEM;
	l->bufs = calloc(s->nbuf, sizeof(*l->bufs));
	l->free = calloc(s->nbuf, sizeof(*l->free));
	if (!l->bufs || !l->free) {
		free(l->bufs);
		free(l->free);
		free(l);
		return -ENOMEM;
	}
	pthread_cond_init(&l->cond, NULL);
	ret = staging_init(s->ctx, &l->st, s->nbuf, OSH_CHUNK_SIZE, s->qd,
			   want_ring, &ring_err);
	if (ret) {
		olog_err(s->ctx, "stream: no memory for %u staging buffers",
			 s->nbuf);
		lane_free(l);
		return ret;
	}
	if (want_ring && ring_err)
		ring_failed(s, ring_err);
	lane_report(s, &l->st);
	for (b = 0; b < s->nbuf; b++) {
		l->bufs[b].lane = l;
		l->bufs[b].idx = b;
		l->free[b] = b;
	}
	l->nfree = s->nbuf;
	*out = l;
	return 0;
}

int stream_lane_get(struct stream *s, struct lane **out)
{
	struct lane *l = NULL;
	unsigned int i;
	int ret, want;

	pthread_mutex_lock(&s->lock);
	for (;;) {
		for (i = 0; i < STREAM_MAX_LANES; i++) {
			l = s->lanes[i];
			if (l && !l->busy) {
				l->busy = 1;
				pthread_mutex_unlock(&s->lock);
				*out = l;
				return 0;
			}
		}
		if (s->nlanes < s->max_lanes)
			break;
		pthread_cond_wait(&s->lane_cond, &s->lock);
	}
	s->nlanes++;
	want = !(s->flags & STREAM_PREAD) && !s->no_uring;
	pthread_mutex_unlock(&s->lock);

	ret = lane_new(s, want, &l);
	pthread_mutex_lock(&s->lock);
	if (ret) {
		s->nlanes--;
		pthread_cond_signal(&s->lane_cond);
	} else {
		for (i = 0; s->lanes[i]; i++)
			;
		s->lanes[i] = l;
		l->busy = 1;
		*out = l;
	}
	pthread_mutex_unlock(&s->lock);
	return ret;
}

void stream_lane_put(struct stream *s, struct lane *l)
{
	unsigned int i;

	pthread_mutex_lock(&s->lock);
	l->busy = 0;
	if (l->dead) {
		for (i = 0; i < STREAM_MAX_LANES; i++)
			if (s->lanes[i] == l)
				s->lanes[i] = NULL;
		s->nlanes--;
	}
	pthread_cond_signal(&s->lane_cond);
	pthread_mutex_unlock(&s->lock);
	/* Its ring may still write into the buffers: unmap them only now. */
	if (l->dead)
		lane_free(l);
}

/* ---- setup ---- */

static int opts_check(struct ortho_ctx *ctx, struct stream_opts *o)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

	if (!o->queue_depth)
		o->queue_depth = STREAM_DEF_QUEUE_DEPTH;
	if (!o->staging)
		o->staging = STREAM_DEF_STAGING;
	if (!o->workers)
		o->workers = ncpu > 0 ? (unsigned int)ncpu : 1;
	if (!o->lanes)
		o->lanes = 4;
	if (o->queue_depth > 1024 || o->workers > 1024 ||
	    o->lanes > STREAM_MAX_LANES ||
	    o->staging % OSH_CHUNK_SIZE || o->staging < 2 * OSH_CHUNK_SIZE ||
	    o->staging > 1024ull * OSH_CHUNK_SIZE ||
	    o->max_read % DIRECT_ALIGN ||
	    (o->flags & ~(STREAM_PREAD | STREAM_DIRECT))) {
		olog_err(ctx, "stream: options out of range (queue depth %u, "
			 "staging %zu bytes in whole MiB from 2 MiB, workers "
			 "%u, lanes %u)", o->queue_depth, o->staging,
			 o->workers, o->lanes);
		return -EINVAL;
	}
	/* A read in flight holds a buffer: no deeper than the buffers. */
	if (o->queue_depth > o->staging / OSH_CHUNK_SIZE)
		o->queue_depth = (unsigned int)(o->staging / OSH_CHUNK_SIZE);
	return 0;
}

int stream_new(struct ortho_ctx *ctx, const struct stream_opts *opts,
	       struct stream **out)
{
	struct stream_opts o = { 0 };
	struct stream *s;
	int ret = 0;

	*out = NULL;
	if (opts)
		o = *opts;
	if (opts_check(ctx, &o))
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->thr = calloc(o.workers, sizeof(*s->thr));
	if (!s->thr) {
		free(s);
		return -ENOMEM;
	}
	s->ctx = ctx;
	s->qd = o.queue_depth;
	s->nbuf = (unsigned int)(o.staging / OSH_CHUNK_SIZE);
	s->flags = o.flags;
	s->max_read = o.max_read;
	s->max_lanes = o.lanes;
	/* Failures before the stream are not its to report. */
	s->secmem_seen = secmem_lock_failures(NULL);
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->work, NULL);
	pthread_cond_init(&s->lane_cond, NULL);
	for (s->nthr = 0; s->nthr < o.workers; s->nthr++) {
		ret = -pthread_create(&s->thr[s->nthr], NULL, stream_worker_main, s);
		if (ret)
			break;
	}
	if (ret) {
		olog_err(ctx, "stream: cannot start decrypt workers: %s",
			 strerror(-ret));
		stream_free(s);
		return ret;
	}
	*out = s;
	return 0;
}

void stream_free(struct stream *s)
{
	unsigned int i;

	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	s->stop = 1;
	pthread_cond_broadcast(&s->work);
	pthread_mutex_unlock(&s->lock);
	for (i = 0; i < s->nthr; i++)
		pthread_join(s->thr[i], NULL);
	for (i = 0; i < STREAM_MAX_LANES; i++)
		lane_free(s->lanes[i]);
	pthread_cond_destroy(&s->lane_cond);
	pthread_cond_destroy(&s->work);
	pthread_mutex_destroy(&s->lock);
	free(s->thr);
	free(s);
}

static int env_word(const char *w, size_t n, struct stream_opts *o)
{
	char buf[64];
	char *end;
	unsigned long long v;
	const char *eq;

	if (n >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, w, n);
	buf[n] = 0;
	if (!strcmp(buf, "pread")) {
		o->flags |= STREAM_PREAD;
		return 0;
	}
	if (!strcmp(buf, "direct")) {
		o->flags |= STREAM_DIRECT;
		return 0;
	}
	eq = strchr(buf, '=');
	if (!eq || !eq[1])
		return -EINVAL;
	errno = 0;
	v = strtoull(eq + 1, &end, 0);
	if (errno || *end || v > 1ull << 40)
		return -EINVAL;
	if (!strncmp(buf, "qd=", 3))
		o->queue_depth = (unsigned int)v;
	else if (!strncmp(buf, "workers=", 8))
		o->workers = (unsigned int)v;
	else if (!strncmp(buf, "staging=", 8))
		o->staging = (size_t)v;
	else
		return -EINVAL;
	return 0;
}

int stream_opts_env(struct stream_opts *o)
{
	const char *e = getenv("ORTHO_STREAM");
	struct stream_opts t;
	size_t n;

	if (!e || !*e)
		return 0;
	t = *o;
	while (*e) {
		n = strcspn(e, ",");
		if (n && env_word(e, n, &t))
			return -EINVAL;
		e += n;
		if (*e == ',')
			e++;
	}
	*o = t;
	return 0;
}

void stream_get_info(struct stream *s, struct stream_info *info)
{
	const struct staging *st;
	unsigned int i, n = 0;

	pthread_mutex_lock(&s->lock);
	*info = s->stats;
	info->workers = s->nthr;
	info->queue_depth = s->qd;
	info->staging = (size_t)s->nbuf * OSH_CHUNK_SIZE;
	info->lanes = s->nlanes;
	info->direct = !!(s->flags & STREAM_DIRECT);
	info->uring = 0;
	info->locked = info->fixed_bufs = info->fixed_file = 0;
	for (i = 0; i < STREAM_MAX_LANES; i++)
		if (s->lanes[i]) {
			st = &s->lanes[i]->st;
			if (!n++)
				info->locked = info->fixed_bufs =
					info->fixed_file = 1;
			info->uring |= st->have_ring;
			info->locked &= st->locked;
			info->fixed_bufs &= st->have_ring && st->fixed_bufs;
			info->fixed_file &= st->have_ring && st->fixed_file;
		}
	pthread_mutex_unlock(&s->lock);
}

void stream_for_each_buffer(struct stream *s,
			    void (*fn)(void *user, const void *p, size_t len),
			    void *user)
{
	unsigned int i;

	pthread_mutex_lock(&s->lock);
	for (i = 0; i < STREAM_MAX_LANES; i++)
		if (s->lanes[i])
			fn(user, s->lanes[i]->st.mem,
			   (size_t)s->lanes[i]->st.nbuf *
			   s->lanes[i]->st.buf_size);
	pthread_mutex_unlock(&s->lock);
}
