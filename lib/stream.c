// SPDX-License-Identifier: MIT
/*
 * Page-in of shard chunks: the calling thread reads (io_uring, or pread
 * when there is no ring), a pool of workers decrypts. Each chunk that
 * arrives in a staging buffer becomes a work item; a worker authenticates
 * and decrypts it into the destination and hands the buffer back to the
 * reader, which refills it. The caller decrypts items of its own page-in
 * while it has nothing to read, so a page-in never waits on a busy pool
 * serving another one.
 *
 * Lanes and setup are in lib/stream_lane.c, the shared structures in
 * lib/stream_priv.h.
 *
 * Locking: s->lock guards the work queues, every lane's free list and busy
 * flag, every job's counters and error, and the statistics. Nothing slow
 * runs under it: reads and decryption happen with it released. A lane's
 * ring and staging are touched only by the thread that holds the lane.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "stream_priv.h"

#define MAX_RETRIES 16u

/* ---- the work queue (s->lock held) ---- */

static void queue_push(struct stream *s, struct sbuf *b)
{
	int q = b->job->urgent ? 0 : 1;

	b->next = NULL;
	if (s->qtail[q])
		s->qtail[q]->next = b;
	else
		s->qhead[q] = b;
	s->qtail[q] = b;
}

/* The first item of @j, or of anyone (urgent first) when @j is NULL. */
static struct sbuf *queue_take(struct stream *s, const struct job *j)
{
	struct sbuf *b, *prev;
	int q;

	for (q = 0; q < 2; q++) {
		for (prev = NULL, b = s->qhead[q]; b; prev = b, b = b->next) {
			if (j && b->job != j)
				continue;
			if (prev)
				prev->next = b->next;
			else
				s->qhead[q] = b->next;
			if (s->qtail[q] == b)
				s->qtail[q] = prev;
			return b;
		}
	}
	return NULL;
}

static void buf_put(struct lane *l, struct sbuf *b)
{
	b->job = NULL;
	l->free[l->nfree++] = b->idx;
	pthread_cond_signal(&l->cond);
}

/* Has @j failed or been cancelled? Latches a cancel into j->err. */
static int job_stopped(struct job *j)
{
	if (!j->err && j->r->cancel && atomic_load(j->r->cancel))
		j->err = -ECANCELED;
	return j->err != 0;
}

static void job_fail(struct job *j, int err, uint32_t chunk)
{
	if (j->err)
		return;
	j->err = err;
	if (err == -EBADMSG)
		j->bad = chunk;
}

/* ---- decryption ---- */

/*
 * A chunk wholly in range goes straight to its place in dst; one the range
 * cuts is opened in place and the part in range copied out, after which
 * its plaintext in staging is wiped at once.
 */
static int item_decrypt(struct job *j, struct sbuf *b)
{
	struct stream_req *r = j->r;
	uint8_t *buf = staging_buf(&b->lane->st, b->idx);
	uint64_t cs = (uint64_t)b->chunk * OSH_CHUNK_SIZE;
	uint64_t ce = cs + b->want;
	uint64_t lo = cs > r->off ? cs : r->off;
	uint64_t hi = ce < r->off + r->len ? ce : r->off + r->len;
	int ret;

	if (lo == cs && hi == ce)
		return osh_decrypt_chunk(j->f, r->key, b->chunk, buf,
					 j->dst + (cs - r->off));
	ret = osh_decrypt_chunk(j->f, r->key, b->chunk, buf, buf);
	if (!ret)
		memcpy(j->dst + (lo - r->off), buf + (lo - cs), hi - lo);
	explicit_bzero(buf, b->want);
	return ret;
}

/* Run item @b; called and returns with s->lock held. */
static void item_run(struct stream *s, struct sbuf *b)
{
	struct job *j = b->job;
	int ret = 0;

	if (!job_stopped(j)) {
		pthread_mutex_unlock(&s->lock);
		ret = item_decrypt(j, b);
		pthread_mutex_lock(&s->lock);
	}
	if (ret)
		job_fail(j, ret, b->chunk);
	j->pending--;
	buf_put(b->lane, b);
}

/* Decrypt one item of @j if one is queued (s->lock held). Return: 1 if so. */
static int help_one(struct stream *s, struct job *j)
{
	struct sbuf *b = queue_take(s, j);

	if (!b)
		return 0;
	item_run(s, b);
	return 1;
}

void *stream_worker_main(void *arg)
{
	struct stream *s = arg;
	struct sbuf *b;

	pthread_mutex_lock(&s->lock);
	for (;;) {
		b = queue_take(s, NULL);
		if (b) {
			item_run(s, b);
			continue;
		}
		if (s->stop)
			break;
		pthread_cond_wait(&s->work, &s->lock);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

/* A buffer fully read: hand it to the workers (s->lock held). */
static void item_ready(struct stream *s, struct job *j, struct sbuf *b)
{
	if (job_stopped(j)) {
		buf_put(b->lane, b);
		return;
	}
	j->pending++;
	queue_push(s, b);
	pthread_cond_signal(&s->work);
}

/* Wait until every item of @j is decrypted, helping meanwhile. */
static void job_drain(struct stream *s, struct lane *l, struct job *j)
{
	pthread_mutex_lock(&s->lock);
	while (j->pending)
		if (!help_one(s, j))
			pthread_cond_wait(&l->cond, &s->lock);
	pthread_mutex_unlock(&s->lock);
}

/* Take a free buffer for the next chunk, or help, or wait (s->lock held). */
static struct sbuf *buf_next(struct stream *s, struct lane *l, struct job *j,
			     int may_wait)
{
	struct sbuf *b;

	while (!l->nfree && may_wait && !job_stopped(j) && j->next < j->end)
		if (!help_one(s, j))
			pthread_cond_wait(&l->cond, &s->lock);
	if (!l->nfree || job_stopped(j) || j->next >= j->end)
		return NULL;
	b = &l->bufs[l->free[--l->nfree]];
	b->job = j;
	b->chunk = j->next++;
	b->want = (uint32_t)osh_chunk_len(j->f, b->chunk);
	b->done = 0;
	b->retries = 0;
	return b;
}

/* Where the rest of @b's chunk is read from, and how much to ask for. */
static void read_span(const struct stream *s, const struct job *j,
		      struct sbuf *b)
{
	size_t from = b->done, to = b->want;

	if (j->direct) {
		/* O_DIRECT wants aligned offsets and lengths; past EOF is fine. */
		from &= ~(size_t)(DIRECT_ALIGN - 1);
		to = (to + DIRECT_ALIGN - 1) & ~(size_t)(DIRECT_ALIGN - 1);
	}
	if (s->max_read && to - from > s->max_read)
		to = from + s->max_read;
	b->boff = (uint32_t)from;
	b->len = (uint32_t)(to - from);
	b->off = j->f->hdr.data_offset + (uint64_t)b->chunk * OSH_CHUNK_SIZE +
		 from;
	b->direct = j->direct;
}

/*
 * O_DIRECT reads of @j were refused with @err (EINVAL: the file system
 * took the flag at open but wants other alignment): read the rest of the
 * job buffered. Reads already issued on the O_DIRECT descriptor fail or
 * complete on their own and are read again buffered where they failed.
 */
static void job_buffered(struct stream *s, struct lane *l, struct job *j,
			 int err)
{
	if (!j->direct)
		return;
	j->direct = 0;
	j->fd = j->f->fd;
	/* A slot that cannot be updated is left: reads then name j->fd. */
	if (l->st.file_set)
		staging_set_file(&l->st, j->fd);
	olog_dbg(s->ctx, "shard %s: O_DIRECT reads refused (%s): buffered "
		 "reads", j->id, strerror(-err));
}

/*
 * Account for @res more bytes of @b's read. Return: 1 when the chunk is
 * complete, 0 when more must be read, or a negative errno (logged).
 */
static int read_progress(struct stream *s, struct job *j, struct sbuf *b,
			 int res)
{
	if (res == -EINVAL && b->direct) {
		job_buffered(s, b->lane, j, res);
		return 0;
	}
	if (res < 0) {
		if ((res == -EAGAIN || res == -EINTR) &&
		    b->retries++ < MAX_RETRIES)
			return 0;
		olog_err(s->ctx, "shard %s: chunk %u: read at byte %" PRIu64
			 ": %s", j->id, b->chunk, b->off, strerror(-res));
		return res;
	}
	/* O_DIRECT re-reads from an aligned offset: no progress is EOF too. */
	if (!res || b->boff + (size_t)res <= b->done) {
		olog_err(s->ctx, "shard %s: chunk %u: the file ends at byte %"
			 PRIu64 ", inside the chunk (truncated?)", j->id,
			 b->chunk, b->off + (uint64_t)res);
		return -EIO;
	}
	b->done = (uint32_t)(b->boff + (size_t)res);
	pthread_mutex_lock(&s->lock);
	s->stats.reads++;
	s->stats.bytes += (uint64_t)res;
	if (b->done < b->want)
		s->stats.short_reads++;
	pthread_mutex_unlock(&s->lock);
	return b->done >= b->want;
}

/* ---- the pread path ---- */

static int pread_chunk(struct stream *s, struct lane *l, struct job *j,
		       struct sbuf *b)
{
	uint8_t *buf = staging_buf(&l->st, b->idx);
	ssize_t n;
	int ret;

	do {
		read_span(s, j, b);
		staging_touch(&l->st, b->idx, (size_t)b->boff + b->len);
		n = pread(j->fd, buf + b->boff, b->len, (off_t)b->off);
		ret = read_progress(s, j, b, n < 0 ? -errno : (int)n);
	} while (!ret);
	return ret < 0 ? ret : 0;
}

static void run_pread(struct stream *s, struct lane *l, struct job *j)
{
	struct sbuf *b;
	int ret;

	for (;;) {
		pthread_mutex_lock(&s->lock);
		b = buf_next(s, l, j, 1);
		pthread_mutex_unlock(&s->lock);
		if (!b)
			break;
		ret = pread_chunk(s, l, j, b);
		pthread_mutex_lock(&s->lock);
		if (ret) {
			job_fail(j, ret, b->chunk);
			buf_put(l, b);
		} else {
			item_ready(s, j, b);
		}
		pthread_mutex_unlock(&s->lock);
	}
	job_drain(s, l, j);
}

/* ---- the io_uring path ---- */

struct uring_run {
	unsigned int owned;		/* buffers on the I/O side */
	unsigned int unsubmitted;	/* of which queued, not submitted */
};

static void issue(struct stream *s, struct lane *l, struct job *j,
		  struct sbuf *b, struct uring_run *u)
{
	read_span(s, j, b);
	/* The ring has qd entries and never more than qd reads are owned. */
	if (staging_queue_read(&l->st, j->fd, b->idx, b->boff, b->len,
			       b->off))
		abort();
	u->unsubmitted++;
}

/* A completion for @b: resubmit the rest, hand it on, or fail the job. */
static void on_cqe(struct stream *s, struct lane *l, struct job *j,
		   struct sbuf *b, int res, struct uring_run *u)
{
	int ret = read_progress(s, j, b, res);

	pthread_mutex_lock(&s->lock);
	if (!ret && !job_stopped(j)) {
		pthread_mutex_unlock(&s->lock);
		issue(s, l, j, b, u);
		return;
	}
	u->owned--;
	if (ret < 0)
		job_fail(j, ret, b->chunk);
	if (ret > 0)
		item_ready(s, j, b);
	else
		buf_put(l, b);
	pthread_mutex_unlock(&s->lock);
}

static int uring_submit(struct stream *s, struct lane *l, struct job *j,
			struct uring_run *u)
{
	int ret = staging_submit(&l->st);

	if (ret >= 0) {
		u->unsubmitted -= (unsigned int)ret;
		return 0;
	}
	if (ret == -EAGAIN || ret == -EBUSY)
		return 0;	/* completions first, then again */
	olog_err(s->ctx, "shard %s: io_uring submit: %s", j->id,
		 strerror(-ret));
	/* Reads left in its queue must never land in reused buffers. */
	l->dead = 1;
	u->owned -= u->unsubmitted;
	u->unsubmitted = 0;
	pthread_mutex_lock(&s->lock);
	job_fail(j, ret, UINT32_MAX);
	pthread_mutex_unlock(&s->lock);
	return ret;
}

/* One completion, or help with decryption while none is there. */
static int uring_reap(struct stream *s, struct lane *l, struct job *j,
		      struct uring_run *u)
{
	unsigned int b;
	int got, res, helped;

	got = staging_reap(&l->st, 0, &b, &res);
	if (!got) {
		pthread_mutex_lock(&s->lock);
		helped = help_one(s, j);
		pthread_mutex_unlock(&s->lock);
		if (helped)
			return 0;
		got = staging_reap(&l->st, 1, &b, &res);
	}
	if (got < 0) {
		olog_err(s->ctx, "shard %s: io_uring wait: %s", j->id,
			 strerror(-got));
		/* Its reads may still complete: never hand the lane out. */
		l->dead = 1;
		pthread_mutex_lock(&s->lock);
		job_fail(j, got, UINT32_MAX);
		pthread_mutex_unlock(&s->lock);
		return got;
	}
	if (got && b < l->st.nbuf)
		on_cqe(s, l, j, &l->bufs[b], res, u);
	return 0;
}

static void run_uring(struct stream *s, struct lane *l, struct job *j)
{
	struct uring_run u = { 0 };
	struct sbuf *b;

	for (;;) {
		pthread_mutex_lock(&s->lock);
		while (u.owned < s->qd &&
		       (b = buf_next(s, l, j, !u.owned))) {
			pthread_mutex_unlock(&s->lock);
			issue(s, l, j, b, &u);
			u.owned++;
			pthread_mutex_lock(&s->lock);
		}
		pthread_mutex_unlock(&s->lock);
		if (!u.owned)
			break;
		if (u.unsubmitted && uring_submit(s, l, j, &u))
			break;
		if (u.owned > u.unsubmitted && uring_reap(s, l, j, &u))
			break;
	}
	job_drain(s, l, j);
}

/* ---- page-in ---- */

static void job_open_fd(struct stream *s, struct job *j)
{
	char path[64];
	int fd;

	j->fd = j->f->fd;
	j->dfd = -1;
	if (!(s->flags & STREAM_DIRECT))
		return;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", j->f->fd);
	fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
	if (fd < 0) {
		olog_dbg(s->ctx, "shard %s: no O_DIRECT here (%s): buffered "
			 "reads", j->id, strerror(errno));
		return;
	}
	j->fd = j->dfd = fd;
	j->direct = 1;
}

/* Close @j's O_DIRECT descriptor and count how the page-in read. */
static void job_close_fd(struct stream *s, struct job *j)
{
	if (!(s->flags & STREAM_DIRECT))
		return;
	if (j->dfd >= 0)
		close(j->dfd);
	pthread_mutex_lock(&s->lock);
	if (j->direct)
		s->stats.direct_pageins++;
	else
		s->stats.direct_fallbacks++;
	pthread_mutex_unlock(&s->lock);
}

static int job_init(struct job *j, struct stream_req *r)
{
	uint64_t pt_len;

	memset(j, 0, sizeof(*j));
	r->bad_chunk = UINT32_MAX;
	if (!r->f || !r->key || !r->dst || !r->len)
		return -EINVAL;
	pt_len = r->f->hdr.plaintext_len;
	if (r->off > pt_len || r->len > pt_len - r->off)
		return -EINVAL;
	j->r = r;
	j->f = r->f;
	j->dst = r->dst;
	j->next = (uint32_t)(r->off / OSH_CHUNK_SIZE);
	j->end = (uint32_t)((r->off + r->len + OSH_CHUNK_SIZE - 1) /
			    OSH_CHUNK_SIZE);
	j->bad = UINT32_MAX;
	j->urgent = !!(r->flags & STREAM_URGENT);
	osh_id_to_hex(r->f->hdr.shard_id, j->id);
	return 0;
}

int stream_read(struct stream *s, struct stream_req *r)
{
	struct lane *l;
	struct job j;
	int ret;

	ret = job_init(&j, r);
	if (ret)
		return ret;
	ret = stream_lane_get(s, &l);
	if (ret)
		return ret;
	stream_memlock_check(s);
	job_open_fd(s, &j);
	if (l->st.have_ring) {
		staging_set_file(&l->st, j.fd);
		run_uring(s, l, &j);
		if (!l->dead)
			staging_set_file(&l->st, -1);
	} else {
		run_pread(s, l, &j);
	}
	staging_wipe(&l->st);
	job_close_fd(s, &j);
	stream_lane_put(s, l);
	if (!j.err)
		return 0;
	explicit_bzero(r->dst, r->len);
	if (j.err == -EBADMSG) {
		r->bad_chunk = j.bad;
		olog_err(s->ctx, "shard %s: chunk %u of %u failed "
			 "authentication (tampered or corrupt)", j.id, j.bad,
			 r->f->hdr.chunk_count);
	}
	return j.err;
}
