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
	pbuf_u32(b, (uint32_t)op->nw);
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
}

static void audit_outcome(struct orthod *d, struct revoke_op *op,
			  size_t ok, size_t busy, size_t gone)
{
	char list[1024] = "", comm[PROTO_COMM_MAX + 1];
	size_t i, len = 0;

	for (i = 0; i < op->nw && len < sizeof(list) - 64; i++) {
		const struct waiter *w = &op->w[i];
		char hex[33];

		if (w->outcome != PROTO_BUSY)
			continue;
		proto_id_hex(w->id, hex);
		audit_val(w->comm, comm, sizeof(comm));
		len += (size_t)snprintf(list + len, sizeof(list) - len,
					" busy=%u/%u/%s/%.8s", w->pid, w->uid,
					comm, hex);
	}
	audit_log(&d->audit, busy ? "revoke-busy" : "revoke-complete",
		  "revoke=%" PRIu64 " holders=%zu complete=%zu busy=%zu gone=%zu elapsed_us=%" PRIu64 "%s",
		  op->id, op->nw, ok, busy, gone, op->elapsed_us, list);
}

static void finish(struct orthod *d, struct revoke_op *op)
{
	size_t i, ok = 0, busy = 0, gone = 0, changed;
	struct shard **s;
	struct pbuf b;

	op->elapsed_us = since_us(op);
	for (i = 0; i < op->nw; i++) {
		struct waiter *w = &op->w[i];

		if (!w->outcome) {
			w->outcome = PROTO_BUSY;
			if (!w->c)
				w->err = -ENOTCONN;
			proc_comm((pid_t)w->pid, w->comm);
		}
		if (w->pidev.fd >= 0) {
			ev_del(d, &w->pidev);
			close(w->pidev.fd);
			w->pidev.fd = -1;
		}
		ok += w->outcome == PROTO_COMPLETE;
		busy += w->outcome == PROTO_BUSY;
		gone += w->outcome == PROTO_GONE;
	}
	ev_del(d, &op->timer);
	close(op->timer.fd);
	op->timer.fd = -1;
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
	if (op->admin) {
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
	if (w->pidev.fd >= 0) {
		ev_del(d, &w->pidev);
		close(w->pidev.fd);
		w->pidev.fd = -1;
	}
	if (--op->pending == 0)
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

static int arm_timer(struct orthod *d, struct revoke_op *op, uint32_t ms)
{
	struct itimerspec its = { 0 };

	op->timer.kind = EV_REVOKE_TIMER;
	op->timer.fd = timerfd_create(CLOCK_MONOTONIC,
				      TFD_NONBLOCK | TFD_CLOEXEC);
	if (op->timer.fd < 0)
		return -errno;
	its.it_value.tv_sec = ms / 1000;
	its.it_value.tv_nsec = (long)(ms % 1000) * 1000000L;
	if (timerfd_settime(op->timer.fd, 0, &its, NULL))
		return -errno;
	return ev_add(d, &op->timer, EPOLLIN);
}

static void op_free(struct revoke_op *op)
{
	if (op->timer.fd >= 0)
		close(op->timer.fd);
	free(op->ids);
	free(op->w);
	free(op);
}

static void audit_request(struct orthod *d, struct conn *c,
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
	audit_log(&d->audit, "revoke-requested",
		  "revoke=%" PRIu64 " %s shards=%zu timeout_ms=%u by_uid=%u by_pid=%d by_comm=%s",
		  op->id, what, op->nids, r->timeout_ms, c->peer.uid,
		  (int)c->peer.pid, comm);
}

int revoke_start(struct orthod *d, struct conn *c,
		 const struct proto_revoke_req *r, uint64_t req)
{
	struct revoke_op *op = calloc(1, sizeof(*op));
	size_t i;
	int ret;

	if (!op)
		return conn_error(d, c, req, -ENOMEM, "out of memory");
	op->timer.fd = -1;
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
	op->id = d->audit.seq + 1;
	audit_request(d, c, op, r);
	if (!ret)
		ret = add_waiters(d, op);
	if (!ret && op->nw)
		ret = arm_timer(d, op, r->timeout_ms);
	if (ret) {
		dlog(LOG_ERR, "revoke %" PRIu64 ": %s", op->id, strerror(-ret));
		audit_log(&d->audit, "revoke-failed", "revoke=%" PRIu64 " error=%d",
			  op->id, ret);
		op_free(op);
		return conn_error(d, c, req, ret,
				  "the revocation could not be made durable");
	}
	op->next = d->revokes;
	d->revokes = op;
	for (i = 0; i < op->nw; i++)
		send_notice(d, op->w[i].c, op->w[i].id, op->id, r->timeout_ms);
	/* While the holders wipe: the replaced KEK's blocks become useless. */
	ks_destroy_old_kek(&d->ks);
	if (!op->nw)
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
		audit_log(&d->audit, "revoke-late-complete",
			  "shard=%s pid=%d uid=%u", hex, (int)c->peer.pid,
			  c->peer.uid);
	}
}

int revoke_notify_late(struct orthod *d, struct conn *c, const struct shard *s)
{
	uint64_t id = d->audit.seq + 1;
	char hex[33];

	proto_id_hex(s->id, hex);
	audit_log(&d->audit, "revoke-late-notice", "shard=%s pid=%d uid=%u",
		  hex, (int)c->peer.pid, c->peer.uid);
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

void revoke_event(struct orthod *d, struct ev_src *src)
{
	struct revoke_op *op;
	struct waiter *w;

	if (src->kind == EV_REVOKE_TIMER) {
		op = container_of(src, struct revoke_op, timer);
		if (!op->done)
			finish(d, op);
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
		audit_log(&d->audit, "revoke-recovered",
			  "shard=%s note=interrupted_by_a_restart holders=unknown",
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
