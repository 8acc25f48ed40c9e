// SPDX-License-Identifier: MIT
/*
 * Revocation.
 *
 * 1. The revocation is recorded (audit), then made durable: the shards are
 *    marked revoking and their keys leave the keystore, which is re-wrapped
 *    under a fresh KEK; only then are the keys wiped from memory. From here
 *    on no key is handed out, and a crash completes the revocation at the
 *    next start (revoke_recover()).
 * 2. Every connection holding a shard (it received the key, or reports the
 *    shard resident) gets a REVOKE_NOTICE, and the daemon waits, without
 *    blocking, for one of: an ACK (complete; the holder's records go), the
 *    holder's exit (gone), or the deadline (busy). A holder that hangs up
 *    without an ACK is watched through a pidfd until it exits or the
 *    deadline passes: closing a socket proves nothing about its memory.
 * 3. The outcome is recorded and the admin answered with every holder's
 *    outcome.
 *
 * The records follow what they record here: a revocation whose record
 * cannot be written goes on regardless (a key is never kept because the
 * log is full), and the admin is answered with an ERROR that says it was
 * done and what was not recorded.
 *
 * With the kernel module, the shards whose key the kernel holds are revoked
 * there as well, right after step 1 (orthod-krevoke.c): the kernel wipes
 * its key, wakes its holders and kills those that do not acknowledge within
 * its grace period. The revocation's poll timer follows the kernel until
 * it is done, and the revocation completes when both the daemon's holders
 * and the kernel's have an outcome. The daemon's deadline settles its own
 * holders; the kernel's are waited for up to its grace period and a second
 * more (KERNEL_SLACK_MS), since the kernel itself ends them by then.
 *
 * A revocation is freed only by revoke_reap(), between event batches.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "orthod.h"

#define container_of(p, type, m) ((type *)((char *)(p) - offsetof(type, m)))

#define KPOLL_NS 1000000L	/* how often the kernel's state is read */
#define KERNEL_SLACK_MS 1000u	/* past the kernel's grace period */

struct waiter {
	struct ev_src pidev;		/* EV_PIDFD; fd -1 unless watching */
	struct revoke_op *op;
	struct conn *c;			/* NULL once disconnected */
	uint8_t id[PROTO_ID_SIZE];
	uint32_t pid, uid;
	char comm[PROTO_COMM_MAX + 1];
	uint8_t outcome;		/* 0 while pending */
	int32_t err;
	uint64_t ack_us;
};

struct revoke_op {
	struct ev_src timer;		/* EV_REVOKE_TIMER */
	struct revoke_op *next;
	uint64_t id;
	struct conn *admin;		/* NULL once it hangs up */
	uint64_t req;
	uint64_t t0;			/* monotonic */
	uint64_t elapsed_us;
	uint8_t (*ids)[PROTO_ID_SIZE];	/* the shards */
	size_t nids;
	struct waiter *w;
	size_t nw, pending;
	int done;
	/* The kernel's half (orthod-krevoke.c); NULL without. */
	struct krevoke *k;
	struct ev_src kpoll;		/* EV_REVOKE_KPOLL, periodic */
	int kdone;
	int past_deadline;		/* the daemon's holders are settled */
	/* The first record that could not be written; NULL when none. */
	const char *unaudited;
	int audit_err;
};

static uint64_t since_us(const struct revoke_op *op)
{
	return (now_mono_ns() - op->t0) / 1000;
}

static int send_notice(struct orthod *d, struct conn *c,
		       const uint8_t id[PROTO_ID_SIZE], uint64_t revoke_id,
		       uint32_t deadline_ms)
{
	struct proto_notice n = { .revoke_id = revoke_id,
				  .deadline_ms = deadline_ms };
	uint8_t buf[PROTO_HDR_SIZE + 32];
	struct pbuf b;

	memcpy(n.id, id, PROTO_ID_SIZE);
	pbuf_init(&b, buf, sizeof(buf), 0);
	proto_begin(&b, PROTO_REVOKE_NOTICE, 0);
	proto_put_notice(&b, &n);
	return conn_send_pbuf(d, c, &b);
}

uint32_t revoke_holders(struct orthod *d, const struct shard *s)
{
	const struct conn *c;
	uint32_t n = 0;

	for (c = d->conns; c; c = c->next)
		n += reg_holds(c, s->id);
	return n;
}

static void put_result(struct orthod *d, struct revoke_op *op, struct pbuf *b)
{
	struct proto_revoke_info info = { .revoke_id = op->id,
					  .elapsed_us = op->elapsed_us };
	size_t i;

	for (i = 0; i < op->nids; i++)
		info.nshards += ks_find(&d->ks, op->ids[i]) != NULL;
	proto_begin(b, PROTO_REVOKE_RESULT, op->req);
	proto_put_revoke_info(b, &info);
	for (i = 0; i < op->nids; i++) {
		const struct shard *s = ks_find(&d->ks, op->ids[i]);
		struct proto_shard_rec r = { 0 };

		if (!s)
			continue;
		memcpy(r.id, s->id, PROTO_ID_SIZE);
		memcpy(r.label, s->label, sizeof(r.label));
		r.layer = s->layer;
		r.state = s->state;
		r.holders = revoke_holders(d, s);
		r.imported_ns = s->imported_ns;
		r.revoked_ns = s->revoked_ns;
		proto_put_shard(b, &r);
	}
	pbuf_u32(b, (uint32_t)(op->nw + krevoke_count(op->k)));
	for (i = 0; i < op->nw; i++) {
		const struct waiter *w = &op->w[i];
		struct proto_holder_rec h = {
			.pid = w->pid, .uid = w->uid, .outcome = w->outcome,
			.err = w->err, .ack_us = w->ack_us,
		};

		memcpy(h.id, w->id, PROTO_ID_SIZE);
		memcpy(h.comm, w->comm, sizeof(h.comm));
		proto_put_holder(b, &h);
	}
	/* Then the holders of /dev/ortho, one per open file and shard. */
	for (i = 0; i < krevoke_count(op->k); i++) {
		struct proto_holder_rec h;

		krevoke_rec(op->k, i, &h);
		proto_put_holder(b, &h);
	}
}

/* A record of @op could not be written: it goes on, and says so at the end. */
static void unaudited(struct revoke_op *op, const char *event, int err)
{
	dlog(LOG_ERR, "revoke %" PRIu64 ": no \"%s\" record in the audit log (%s); the revocation is carried out all the same",
	     op->id, event, strerror(-err));
	if (!op->unaudited) {
		op->unaudited = event;
		op->audit_err = err;
	}
}

/*
 * " busy=PID/UID/COMM/SHARDS" for each busy holder process (SHARDS: the
 * first 8 hex digits of its shard, or "<n>shards" when it holds several),
 * in at most @cap bytes; the processes that do not fit are counted in
 * " more=N", for which @out has 32 bytes more than @cap.
 */
static void busy_list(const struct revoke_op *op, char *out, size_t cap)
{
	size_t i, j, len = 0, more = 0;

	out[0] = 0;
	for (i = 0; i < op->nw; i++) {
		const struct waiter *w = &op->w[i];
		char one[96], comm[PROTO_COMM_MAX + 1], hex[33], what[32];
		size_t n = 0;
		int k, seen = 0;

		if (w->outcome != PROTO_BUSY)
			continue;
		for (j = 0; j < i && !seen; j++)
			seen = op->w[j].outcome == PROTO_BUSY &&
			       op->w[j].pid == w->pid;
		if (seen)
			continue;
		for (j = i; j < op->nw; j++)
			n += op->w[j].outcome == PROTO_BUSY &&
			     op->w[j].pid == w->pid;
		proto_id_hex(w->id, hex);
		if (n == 1)
			snprintf(what, sizeof(what), "%.8s", hex);
		else
			snprintf(what, sizeof(what), "%zushards", n);
		audit_val(w->comm, comm, sizeof(comm));
		k = snprintf(one, sizeof(one), " busy=%u/%u/%s/%s", w->pid,
			     w->uid, comm, what);
		if (more || len + (size_t)k > cap) {
			more++;
			continue;
		}
		memcpy(out + len, one, (size_t)k + 1);
		len += (size_t)k;
	}
	if (more)
		snprintf(out + len, 32, " more=%zu", more);
}

static int audit_outcome(struct orthod *d, struct revoke_op *op,
			 size_t ok, size_t busy, size_t gone)
{
	/* A record's first fields: number, time, hash, event. */
	const size_t lead = 20 + 1 + 20 + 1 + 64 + 1 + 16;
	const char *ev = busy ? "revoke-busy" : "revoke-complete";
	char head[256], kern[1024], *list;
	size_t used;
	int ret;

	snprintf(head, sizeof(head),
		 "revoke=%" PRIu64 " holders=%zu complete=%zu busy=%zu gone=%zu elapsed_us=%" PRIu64,
		 op->id, op->nw + krevoke_count(op->k), ok, busy, gone,
		 op->elapsed_us);
	krevoke_audit(op->k, kern, sizeof(kern));
	/* The busy holders take what is left of the longest record. */
	used = lead + strlen(head) + strlen(kern) + 32;
	list = malloc(PROTO_LINE_MAX + 32);
	if (list)
		busy_list(op, list, used < PROTO_LINE_MAX ?
			  PROTO_LINE_MAX - used : 0);
	ret = audit_log(&d->audit, ev, "%s%s%s", head,
			list ? list : " busy_list=out_of_memory", kern);
	if (ret) {
		dlog(LOG_ERR, "revoke %" PRIu64 ": %s %s%s%s", op->id, ev, head,
		     list ? list : "", kern);
		unaudited(op, ev, ret);
	}
	free(list);
	return ret;
}

static void close_src(struct orthod *d, struct ev_src *src)
{
	if (src->fd < 0)
		return;
	ev_del(d, src);
	close(src->fd);
	src->fd = -1;
}

/* The daemon's deadline: its holders without an outcome are busy. */
static void daemon_deadline(struct orthod *d, struct revoke_op *op)
{
	size_t i;

	for (i = 0; i < op->nw; i++) {
		struct waiter *w = &op->w[i];

		if (!w->outcome) {
			w->outcome = PROTO_BUSY;
			if (!w->c)
				w->err = -ENOTCONN;
			proc_comm((pid_t)w->pid, w->comm);
		}
		close_src(d, &w->pidev);
	}
	op->pending = 0;
	op->past_deadline = 1;
}

static void finish(struct orthod *d, struct revoke_op *op)
{
	size_t i, ok = 0, busy = 0, gone = 0, changed;
	struct shard **s;
	struct pbuf b;

	op->elapsed_us = since_us(op);
	daemon_deadline(d, op);
	for (i = 0; i < op->nw; i++) {
		ok += op->w[i].outcome == PROTO_COMPLETE;
		busy += op->w[i].outcome == PROTO_BUSY;
		gone += op->w[i].outcome == PROTO_GONE;
	}
	if (op->k) {
		if (!op->kdone)
			op->kdone = krevoke_poll(d, op->k);
		krevoke_finish(d, op->k);
		for (i = 0; i < krevoke_count(op->k); i++) {
			struct proto_holder_rec h;

			krevoke_rec(op->k, i, &h);
			ok += h.outcome == PROTO_COMPLETE;
			busy += h.outcome == PROTO_BUSY;
			gone += h.outcome == PROTO_GONE;
		}
	}
	close_src(d, &op->timer);
	close_src(d, &op->kpoll);
	op->done = 1;
	audit_outcome(d, op, ok, busy, gone);
	/*
	 * The keys left the keystore durably at the start; what remains is the
	 * revoking -> revoked mark. The admin hears first: a crash before the
	 * mark reaches the disk leaves "revoking", which the next start
	 * completes, and either state refuses the key.
	 */
	s = calloc(op->nids, sizeof(*s));
	for (i = 0; s && i < op->nids; i++)
		s[i] = ks_find(&d->ks, op->ids[i]);
	changed = s ? ks_set_revoked(&d->ks, s, op->nids) : 0;
	free(s);
	if (op->admin && op->unaudited) {
		conn_error(d, op->admin, op->req, op->audit_err,
			   "revoke %" PRIu64 ": done (the keys are gone for good; holders %zu: complete %zu, busy %zu, gone %zu), but not audited: no %s record (%s)",
			   op->id, op->nw + krevoke_count(op->k), ok, busy, gone,
			   op->unaudited, strerror(-op->audit_err));
	} else if (op->admin) {
		pbuf_init(&b, NULL, 0, 1);
		put_result(d, op, &b);
		conn_send_pbuf(d, op->admin, &b);
		pbuf_release(&b);
	}
	if (changed && ks_sync(&d->ks))
		dlog(LOG_WARNING, "revoke %" PRIu64 ": the final state is not on disk yet (the next start completes it)",
		     op->id);
}

static void settle(struct orthod *d, struct waiter *w, uint8_t outcome,
		   int32_t err)
{
	struct revoke_op *op = w->op;

	w->outcome = outcome;
	w->err = err;
	if (outcome == PROTO_COMPLETE)
		w->ack_us = since_us(op);
	close_src(d, &w->pidev);
	if (--op->pending == 0 && (!op->k || op->kdone))
		finish(d, op);
}

/* The shards @sel names, their ids copied into @op. Return: count or -errno. */
static int resolve(struct orthod *d, const struct proto_sel *sel,
		   struct revoke_op *op)
{
	size_t i, n = 0;

	for (i = 0; i < d->ks.n; i++)
		n += sel_match(sel, &d->ks.v[i]);
	if (!n)
		return -ENOENT;
	op->ids = calloc(n, PROTO_ID_SIZE);
	if (!op->ids)
		return -ENOMEM;
	for (i = 0; i < d->ks.n; i++)
		if (sel_match(sel, &d->ks.v[i]))
			memcpy(op->ids[op->nids++], d->ks.v[i].id,
			       PROTO_ID_SIZE);
	return (int)n;
}

/* Mark the active shards of @op revoking, durably. */
static int make_durable(struct orthod *d, struct revoke_op *op)
{
	struct shard **s = calloc(op->nids, sizeof(*s));
	size_t i, n = 0;
	int ret;

	if (!s)
		return -ENOMEM;
	for (i = 0; i < op->nids; i++) {
		struct shard *x = ks_find(&d->ks, op->ids[i]);

		if (x && x->state == PROTO_SHARD_ACTIVE)
			s[n++] = x;
	}
	ret = n ? ks_mark_revoking(&d->ks, s, n) : 0;
	free(s);
	return ret;
}

static int add_waiters(struct orthod *d, struct revoke_op *op)
{
	struct conn *c;
	size_t i, n = 0;

	for (c = d->conns; c; c = c->next)
		for (i = 0; i < op->nids; i++)
			n += reg_holds(c, op->ids[i]);
	op->w = calloc(n ? n : 1, sizeof(*op->w));
	if (!op->w)
		return -ENOMEM;
	for (c = d->conns; c; c = c->next) {
		for (i = 0; i < op->nids; i++) {
			struct waiter *w;

			if (!reg_holds(c, op->ids[i]))
				continue;
			w = &op->w[op->nw++];
			w->pidev.kind = EV_PIDFD;
			w->pidev.fd = -1;
			w->op = op;
			w->c = c;
			memcpy(w->id, op->ids[i], PROTO_ID_SIZE);
			w->pid = (uint32_t)c->peer.pid;
			w->uid = c->peer.uid;
			memcpy(w->comm, c->peer.comm, sizeof(w->comm));
		}
	}
	op->pending = op->nw;
	return 0;
}

/* @src fires @ms after @t0 (monotonic ns), then every @every_ns (0: once). */
static int arm_at(struct orthod *d, struct ev_src *src, enum ev_kind kind,
		  uint64_t t0, uint32_t ms, long every_ns)
{
	uint64_t at = t0 + (uint64_t)ms * 1000000ull;
	struct itimerspec its = { 0 };
	int ret;

	if (src->fd < 0) {
		src->kind = kind;
		src->fd = timerfd_create(CLOCK_MONOTONIC,
					 TFD_NONBLOCK | TFD_CLOEXEC);
		if (src->fd < 0)
			return -errno;
		ret = ev_add(d, src, EPOLLIN);
		if (ret) {
			close(src->fd);
			src->fd = -1;
			return ret;
		}
	}
	/* A time already past still fires (0 would disarm the timer). */
	its.it_value.tv_sec = (time_t)(at / 1000000000ull);
	its.it_value.tv_nsec = (long)(at % 1000000000ull);
	if (!at)
		its.it_value.tv_nsec = 1;
	its.it_interval.tv_nsec = every_ns;
	return timerfd_settime(src->fd, TFD_TIMER_ABSTIME, &its, NULL) ?
	       -errno : 0;
}

static int arm_timer(struct orthod *d, struct revoke_op *op, uint32_t ms)
{
	return arm_at(d, &op->timer, EV_REVOKE_TIMER, op->t0, ms, 0);
}

static void op_free(struct revoke_op *op)
{
	if (op->timer.fd >= 0)
		close(op->timer.fd);
	if (op->kpoll.fd >= 0)
		close(op->kpoll.fd);
	krevoke_free(op->k);
	free(op->ids);
	free(op->w);
	free(op);
}

static int audit_request(struct orthod *d, struct conn *c,
			 struct revoke_op *op, const struct proto_revoke_req *r)
{
	char what[PROTO_LABEL_MAX + 8], comm[PROTO_COMM_MAX + 1], hex[33];

	if (r->sel.kind == PROTO_SEL_ID) {
		proto_id_hex(r->sel.id, hex);
		snprintf(what, sizeof(what), "id=%s", hex);
	} else {
		snprintf(what, sizeof(what), "label=");
		audit_val(r->sel.label, what + 6, sizeof(what) - 6);
	}
	audit_val(c->peer.comm, comm, sizeof(comm));
	return audit_log(&d->audit, "revoke-requested",
		  "revoke=%" PRIu64 " %s shards=%zu timeout_ms=%u by_uid=%u by_pid=%d by_comm=%s",
		  op->id, what, op->nids, r->timeout_ms, c->peer.uid,
		  (int)c->peer.pid, comm);
}

int revoke_start(struct orthod *d, struct conn *c,
		 const struct proto_revoke_req *r, uint64_t req)
{
	struct revoke_op *op = calloc(1, sizeof(*op));
	size_t i;
	int ret, aret, durable;

	if (!op)
		return conn_error(d, c, req, -ENOMEM, "out of memory");
	op->timer.fd = -1;
	op->kpoll.fd = -1;
	op->t0 = now_mono_ns();
	op->admin = c;
	op->req = req;
	ret = resolve(d, &r->sel, op);
	if (ret < 0) {
		op_free(op);
		return conn_error(d, c, req, ret, "%s",
				  ret == -ENOENT ? "no such shard or label" :
				  "out of memory");
	}
	/*
	 * Durable first: once the log says "requested", the key is gone from
	 * the disk, so a crash anywhere after leaves no record of a request
	 * whose key could still be handed out. The revocation's id is the
	 * number of that record, unique across restarts.
	 */
	ret = make_durable(d, op);
	durable = !ret;
	op->id = d->audit.seq + 1;
	aret = audit_request(d, c, op, r);
	if (aret && !ret)
		unaudited(op, "revoke-requested", aret);
	/* The kernel's copy goes at once too, and its holders are woken. */
	if (!ret)
		ret = krevoke_start(d, (const uint8_t (*)[PROTO_ID_SIZE])op->ids,
				    op->nids, op->t0, &op->k);
	op->kdone = !op->k || krevoke_poll(d, op->k);
	if (!ret)
		ret = add_waiters(d, op);
	if (!ret && (op->nw || !op->kdone))
		ret = arm_timer(d, op, r->timeout_ms);
	if (!ret && !op->kdone)
		ret = arm_at(d, &op->kpoll, EV_REVOKE_KPOLL, op->t0, 0,
			     KPOLL_NS);
	if (ret) {
		dlog(LOG_ERR, "revoke %" PRIu64 ": %s", op->id, strerror(-ret));
		if (audit_log(&d->audit, "revoke-failed",
			      "revoke=%" PRIu64 " error=%d", op->id, ret))
			aret = -EIO;
		op_free(op);
		if (durable)
			return conn_error(d, c, req, ret,
					  "the keys are revoked for good, but telling the holders failed (orthod completes it when it next starts)%s",
					  aret ? " (not recorded in the audit log)" : "");
		return conn_error(d, c, req, ret,
				  "the revocation could not be made durable%s",
				  aret ? " (nor recorded in the audit log)" : "");
	}
	op->next = d->revokes;
	d->revokes = op;
	for (i = 0; i < op->nw; i++)
		send_notice(d, op->w[i].c, op->w[i].id, op->id, r->timeout_ms);
	/* While the holders wipe: the replaced KEK's blocks become useless. */
	ks_destroy_old_kek(&d->ks);
	if (!op->nw && op->kdone)
		finish(d, op);
	return 0;
}

/* Does @w wait for @c's answer to @a? A wipe answers every revocation of
 * the shard (two admins may revoke it at once); a failure only its own. */
static int ack_matches(const struct revoke_op *op, const struct waiter *w,
		       const struct conn *c, const struct proto_ack *a)
{
	if (op->done || w->c != c || w->outcome ||
	    memcmp(w->id, a->id, PROTO_ID_SIZE))
		return 0;
	return !a->status || op->id == a->revoke_id;
}

void revoke_ack(struct orthod *d, struct conn *c, const struct proto_ack *a)
{
	struct revoke_op *op;
	struct shard *s;
	size_t i, n = 0;

	for (op = d->revokes; op; op = op->next)
		for (i = 0; i < op->nw; i++)
			n += ack_matches(op, &op->w[i], c, a);
	if (n) {
		/* Forgotten first, so the results show it held no more. */
		if (!a->status)
			reg_drop(c, a->id);
		for (op = d->revokes; op; op = op->next)
			for (i = 0; i < op->nw; i++)
				if (ack_matches(op, &op->w[i], c, a))
					settle(d, &op->w[i], a->status ?
					       PROTO_BUSY : PROTO_COMPLETE,
					       a->status);
		return;
	}
	/* The answer to a late notice (revoke_notify_late()). */
	s = ks_find(&d->ks, a->id);
	if (s && s->state != PROTO_SHARD_ACTIVE && !a->status &&
	    reg_holds(c, a->id)) {
		char hex[33];

		reg_drop(c, a->id);
		proto_id_hex(a->id, hex);
		if (audit_log(&d->audit, "revoke-late-complete",
			      "shard=%s pid=%d uid=%u", hex, (int)c->peer.pid,
			      c->peer.uid))
			dlog(LOG_ERR, "shard %s: pid %d wiped it late; not in the audit log",
			     hex, (int)c->peer.pid);
	}
}

int revoke_notify_late(struct orthod *d, struct conn *c, const struct shard *s)
{
	uint64_t id = d->audit.seq + 1;
	char hex[33];

	proto_id_hex(s->id, hex);
	/* The notice goes out whether or not it could be recorded. */
	if (audit_log(&d->audit, "revoke-late-notice", "shard=%s pid=%d uid=%u",
		      hex, (int)c->peer.pid, c->peer.uid))
		dlog(LOG_ERR, "shard %s: late notice to pid %d; not in the audit log",
		     hex, (int)c->peer.pid);
	return send_notice(d, c, s->id, id, 0);
}

int revoke_waits_for(struct orthod *d, const struct conn *c)
{
	const struct revoke_op *op;
	size_t i;

	for (op = d->revokes; op; op = op->next) {
		if (op->done)
			continue;
		if (op->admin == c)
			return 1;
		for (i = 0; i < op->nw; i++)
			if (op->w[i].c == c && !op->w[i].outcome)
				return 1;
	}
	return 0;
}

static int pidfd_open(pid_t pid)
{
	return (int)syscall(SYS_pidfd_open, pid, 0);
}

void revoke_conn_gone(struct orthod *d, struct conn *c)
{
	struct revoke_op *op;
	size_t i;

	for (op = d->revokes; op; op = op->next) {
		if (op->admin == c)
			op->admin = NULL;
		for (i = 0; !op->done && i < op->nw; i++) {
			struct waiter *w = &op->w[i];

			if (w->c != c)
				continue;
			w->c = NULL;
			if (w->outcome)
				continue;
			w->pidev.fd = pidfd_open((pid_t)w->pid);
			if (w->pidev.fd >= 0 && ev_add(d, &w->pidev, EPOLLIN)) {
				close(w->pidev.fd);
				w->pidev.fd = -1;
			}
			if (w->pidev.fd < 0)
				settle(d, w, PROTO_GONE, 0);
		}
	}
}

/* The deadline: the daemon's holders are settled; the kernel's have
 * until its grace period ends, which the kernel enforces itself. */
static void on_deadline(struct orthod *d, struct revoke_op *op)
{
	uint32_t until;

	if (op->done)
		return;
	if (!op->k || op->kdone || op->past_deadline) {
		finish(d, op);
		return;
	}
	daemon_deadline(d, op);
	until = krevoke_grace_ms(op->k) + KERNEL_SLACK_MS;
	if ((now_mono_ns() - op->t0) / 1000000ull >= until ||
	    arm_timer(d, op, until))
		finish(d, op);
}

static void on_kpoll(struct orthod *d, struct revoke_op *op)
{
	uint64_t ticks;

	if (read(op->kpoll.fd, &ticks, sizeof(ticks)) < 0 || op->done ||
	    op->kdone)
		return;
	op->kdone = krevoke_poll(d, op->k);
	if (!op->kdone)
		return;
	close_src(d, &op->kpoll);
	if (!op->pending)
		finish(d, op);
}

void revoke_event(struct orthod *d, struct ev_src *src)
{
	struct waiter *w;

	if (src->kind == EV_REVOKE_TIMER) {
		on_deadline(d, container_of(src, struct revoke_op, timer));
		return;
	}
	if (src->kind == EV_REVOKE_KPOLL) {
		on_kpoll(d, container_of(src, struct revoke_op, kpoll));
		return;
	}
	w = container_of(src, struct waiter, pidev);
	if (!w->outcome && !w->op->done)
		settle(d, w, PROTO_GONE, 0);
}

int revoke_recover(struct orthod *d)
{
	struct shard **s;
	size_t i, n = 0;
	int ret;

	s = calloc(d->ks.n ? d->ks.n : 1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	for (i = 0; i < d->ks.n; i++) {
		char hex[33];

		if (d->ks.v[i].state != PROTO_SHARD_REVOKING)
			continue;
		s[n++] = &d->ks.v[i];
		proto_id_hex(d->ks.v[i].id, hex);
		/* Completed whether or not it could be recorded. */
		if (audit_log(&d->audit, "revoke-recovered",
			      "shard=%s note=interrupted_by_a_restart holders=unknown",
			      hex))
			dlog(LOG_ERR, "shard %s: its interrupted revocation is completed; not in the audit log",
			     hex);
	}
	ret = ks_set_revoked(&d->ks, s, n) ? ks_sync(&d->ks) : 0;
	free(s);
	return ret;
}

void revoke_shutdown(struct orthod *d)
{
	struct revoke_op *op;

	for (op = d->revokes; op; op = op->next)
		if (!op->done)
			finish(d, op);
	revoke_reap(d);
}

void revoke_reap(struct orthod *d)
{
	struct revoke_op **pp = &d->revokes, *op;

	while ((op = *pp)) {
		if (op->done) {
			*pp = op->next;
			op_free(op);
		} else {
			pp = &op->next;
		}
	}
}
