// SPDX-License-Identifier: MIT
/*
 * The kernel's half of a revocation (orthod-revoke.c has the daemon's).
 *
 * For each revoked shard whose key the kernel module holds, orthod revokes
 * it there without waiting: the kernel wipes the key, raises POLLPRI on
 * every holder's file and kills, after its grace period, the holders that
 * have not acknowledged. Right after the revocation orthod lists the
 * holders (pid, uid, client id: kernel-attested), then follows them on
 * the revocation's poll timer until the kernel says the revocation is done.
 *
 * A holder leaves the kernel's list when its file is closed, which a
 * killed holder's exit does at once; so a holder that vanishes between two
 * looks was killed or closed its file. The kernel counts both: those seen
 * killed are known, the others are told apart by time (no kill happens
 * before the grace period ends) and the kernel's count. A holder that
 * closed its file without acknowledging proves nothing about its memory:
 * it is "busy" while it still runs (its pidfd, opened at the first look),
 * "gone" once it has exited, as for the daemon's own holders.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "orthod.h"

enum kh_state {
	KH_PENDING,		/* revoked, not acknowledged */
	KH_ACKED,
	KH_KILLED,		/* seen killed, or attributed by the count */
	KH_VANISHED,		/* left the list: killed or closed */
	KH_CLOSED,		/* closed its file before acknowledging */
};

struct kholder {
	uint8_t id[PROTO_ID_SIZE];
	uint64_t client_id;
	uint32_t pid, uid;
	char comm[PROTO_COMM_MAX + 1];
	enum kh_state state;
	uint64_t gone_ns;	/* monotonic: first look that missed it */
	uint64_t ack_us;	/* since the request: first look that saw it */
	int pidfd;
	uint8_t outcome;	/* set by krevoke_finish() */
	int32_t err;
};

struct kshard {
	uint8_t id[PROTO_ID_SIZE];
	int revoked;		/* the kernel has revoked it */
	int done;		/* and no holder is pending there */
	struct orthod_kmod_shard rec;
};

struct krevoke {
	uint64_t t0;		/* the request, monotonic */
	struct kshard *s;
	size_t ns;
	struct kholder *h;
	size_t nh, caph;
};

static int kpidfd_open(pid_t pid)
{
	return pid > 0 ? (int)syscall(SYS_pidfd_open, pid, 0) : -1;
}

static struct kholder *kh_find(struct krevoke *k, const uint8_t *id,
			       uint64_t client_id)
{
	size_t i;

	for (i = 0; i < k->nh; i++)
		if (k->h[i].client_id == client_id &&
		    !memcmp(k->h[i].id, id, PROTO_ID_SIZE))
			return &k->h[i];
	return NULL;
}

static int kh_add(struct krevoke *k, const struct kshard *s,
		  const struct orthod_kmod_holder *v)
{
	struct kholder *h;

	if (k->nh == k->caph) {
		size_t cap = k->caph ? 2 * k->caph : 16;

		h = realloc(k->h, cap * sizeof(*h));
		if (!h)
			return -ENOMEM;
		k->h = h;
		k->caph = cap;
	}
	h = &k->h[k->nh++];
	memset(h, 0, sizeof(*h));
	memcpy(h->id, s->id, PROTO_ID_SIZE);
	h->client_id = v->client_id;
	h->pid = (uint32_t)v->pid;
	h->uid = (uint32_t)v->uid;
	h->state = KH_PENDING;
	proc_comm(v->pid, h->comm);
	h->pidfd = kpidfd_open(v->pid);
	return 0;
}

/*
 * Look at @s's holders: new ones join (only those still pending when the
 * shard was revoked before this request: the others answered that one),
 * known ones move on; one missing from the list has closed its file.
 */
static void klook(struct orthod *d, struct krevoke *k, struct kshard *s,
		  int first)
{
	struct orthod_kmod_holder *v;
	uint64_t now = now_mono_ns();
	size_t n, i;

	if (orthod_kmod_holders(&d->km, s->id, &v, &n))
		return;
	for (i = 0; i < k->nh; i++) {
		struct kholder *h = &k->h[i];
		size_t j;

		if (memcmp(h->id, s->id, PROTO_ID_SIZE) ||
		    (h->state != KH_PENDING && h->state != KH_ACKED))
			continue;
		for (j = 0; j < n && v[j].client_id != h->client_id; j++)
			;
		if (j == n) {
			if (h->state == KH_PENDING) {
				h->state = KH_VANISHED;
				h->gone_ns = now;
			}
		} else if (!strcmp(v[j].state, "acked") &&
			   h->state == KH_PENDING) {
			h->state = KH_ACKED;
			h->ack_us = (now - k->t0) / 1000;
		} else if (!strcmp(v[j].state, "killed")) {
			h->state = KH_KILLED;
		}
	}
	for (i = 0; first && i < n; i++) {
		if (kh_find(k, s->id, v[i].client_id) ||
		    (s->revoked == 2 && strcmp(v[i].state, "revoked")))
			continue;
		if (kh_add(k, s, &v[i]))
			break;
		if (!strcmp(v[i].state, "acked")) {
			k->h[k->nh - 1].state = KH_ACKED;
			k->h[k->nh - 1].ack_us = (now - k->t0) / 1000;
		} else if (!strcmp(v[i].state, "killed")) {
			k->h[k->nh - 1].state = KH_KILLED;
		}
	}
	free(v);
}

/* Revoke @s in the kernel. Return: 0, or -errno (tried again later). */
static int krevoke_one(struct orthod *d, struct krevoke *k, struct kshard *s)
{
	char hex[33];
	int ret;

	ret = orthod_kmod_revoke(&d->km, s->id, 0, &s->rec);
	proto_id_hex(s->id, hex);
	if (ret == -ENOKEY) {
		/* Not the kernel's after all (loaded after orthod's start). */
		s->revoked = 1;
		s->done = 1;
		return 0;
	}
	if (ret && ret != -EKEYREVOKED) {
		dlog(LOG_ERR, "shard %s: the kernel module did not revoke it: %s (trying again)",
		     hex, strerror(-ret));
		return ret;
	}
	/* 1: revoked now; 2: it was already (a second revocation). */
	s->revoked = ret ? 2 : 1;
	klook(d, k, s, 1);
	return 0;
}

int krevoke_start(struct orthod *d, const uint8_t (*ids)[PROTO_ID_SIZE],
		  size_t nids, uint64_t t0, struct krevoke **out)
{
	struct krevoke *k;
	size_t i, n = 0;

	*out = NULL;
	if (!orthod_kmod_active(&d->km))
		return 0;
	for (i = 0; i < nids; i++) {
		const struct shard *s = ks_find(&d->ks, ids[i]);

		n += s && s->in_kernel;
	}
	if (!n)
		return 0;
	k = calloc(1, sizeof(*k));
	if (k)
		k->s = calloc(n, sizeof(*k->s));
	if (!k || !k->s) {
		free(k);
		return -ENOMEM;
	}
	k->t0 = t0;
	for (i = 0; i < nids; i++) {
		const struct shard *s = ks_find(&d->ks, ids[i]);

		if (!s || !s->in_kernel)
			continue;
		memcpy(k->s[k->ns].id, s->id, PROTO_ID_SIZE);
		krevoke_one(d, k, &k->s[k->ns++]);
	}
	*out = k;
	return 0;
}

/* The holders of @s that vanished: killed, as many as the kernel counts
 * and the time allows (no kill before the grace period ends), or closed. */
static void attribute(struct krevoke *k, const struct kshard *s)
{
	uint64_t grace_end = s->rec.revoked_ns +
			     (uint64_t)s->rec.grace_ms * 1000000ull;
	uint32_t seen = 0, left;
	size_t i;
	int pass;

	for (i = 0; i < k->nh; i++)
		seen += !memcmp(k->h[i].id, s->id, PROTO_ID_SIZE) &&
			k->h[i].state == KH_KILLED;
	left = s->rec.killed > seen ? s->rec.killed - seen : 0;
	for (pass = 0; pass < 2; pass++) {
		for (i = 0; i < k->nh; i++) {
			struct kholder *h = &k->h[i];

			if (memcmp(h->id, s->id, PROTO_ID_SIZE) ||
			    h->state != KH_VANISHED)
				continue;
			if (left && (pass || h->gone_ns >= grace_end)) {
				h->state = KH_KILLED;
				left--;
			} else if (pass) {
				h->state = KH_CLOSED;
			}
		}
	}
}

int krevoke_poll(struct orthod *d, struct krevoke *k)
{
	size_t i, done = 0;
	int ret;

	for (i = 0; i < k->ns; i++) {
		struct kshard *s = &k->s[i];

		if (!s->done && !s->revoked && krevoke_one(d, k, s))
			continue;
		if (s->done) {
			done++;
			continue;
		}
		ret = orthod_kmod_revoke_done(&d->km, s->id, &s->rec);
		klook(d, k, s, 0);
		if (ret == 1 || ret == -ENOKEY) {
			s->done = 1;
			attribute(k, s);
			done++;
		}
	}
	return done == k->ns;
}

uint32_t krevoke_grace_ms(const struct krevoke *k)
{
	uint32_t g = 0;
	size_t i;

	for (i = 0; i < k->ns; i++)
		if (k->s[i].rec.grace_ms > g)
			g = k->s[i].rec.grace_ms;
	return g;
}

static int exited(int pidfd)
{
	struct pollfd p = { .fd = pidfd, .events = POLLIN };

	return pidfd < 0 || (poll(&p, 1, 0) == 1 && (p.revents & POLLIN));
}

void krevoke_finish(struct orthod *d, struct krevoke *k)
{
	size_t i;

	for (i = 0; i < k->ns; i++)
		if (!k->s[i].done)
			attribute(k, &k->s[i]);
	for (i = 0; i < k->nh; i++) {
		struct kholder *h = &k->h[i];

		h->err = 0;
		switch (h->state) {
		case KH_ACKED:
			h->outcome = PROTO_COMPLETE;
			break;
		case KH_KILLED:
			h->outcome = PROTO_GONE;
			h->err = -ETIMEDOUT;
			break;
		case KH_PENDING:
			h->outcome = PROTO_BUSY;
			break;
		case KH_VANISHED:
		case KH_CLOSED:
			/* Its file is closed; its memory is gone only with it. */
			h->outcome = exited(h->pidfd) ? PROTO_GONE : PROTO_BUSY;
			if (h->outcome == PROTO_BUSY)
				h->err = -ENOTCONN;
			break;
		}
		if (h->pidfd >= 0)
			close(h->pidfd);
		h->pidfd = -1;
	}
}

size_t krevoke_count(const struct krevoke *k)
{
	return k ? k->nh : 0;
}

void krevoke_rec(const struct krevoke *k, size_t i,
		 struct proto_holder_rec *out)
{
	const struct kholder *h = &k->h[i];

	memset(out, 0, sizeof(*out));
	memcpy(out->id, h->id, PROTO_ID_SIZE);
	out->pid = h->pid;
	out->uid = h->uid;
	memcpy(out->comm, h->comm, sizeof(out->comm));
	out->outcome = h->outcome;
	out->err = h->err;
	out->ack_us = h->outcome == PROTO_COMPLETE ? h->ack_us : 0;
}

void krevoke_audit(const struct krevoke *k, char *buf, size_t cap)
{
	uint32_t holders = 0, acked = 0, killed = 0, closed = 0, more = 0;
	char comm[PROTO_COMM_MAX + 1], hex[33];
	size_t i, len;

	buf[0] = 0;
	if (!k)
		return;
	for (i = 0; i < k->ns; i++) {
		holders += k->s[i].rec.holders;
		acked += k->s[i].rec.acked;
		killed += k->s[i].rec.killed;
		closed += k->s[i].rec.closed;
	}
	len = (size_t)snprintf(buf, cap, " kernel_shards=%zu kernel_holders=%u kernel_acked=%u kernel_killed=%u kernel_closed=%u",
			       k->ns, holders, acked, killed, closed);
	/* Each entry takes at most 64 bytes; " more=N" needs 17 at the end. */
	for (i = 0; i < k->nh; i++) {
		const struct kholder *h = &k->h[i];

		if (h->outcome == PROTO_COMPLETE)
			continue;
		if (len + 64 + 17 >= cap) {
			more++;
			continue;
		}
		proto_id_hex(h->id, hex);
		audit_val(h->comm, comm, sizeof(comm));
		len += (size_t)snprintf(buf + len, cap - len, " %s=%u/%u/%s/%.8s",
					h->state == KH_KILLED ? "killed" :
					h->outcome == PROTO_BUSY ? "kbusy" :
					"kgone", h->pid, h->uid, comm, hex);
	}
	if (more)
		snprintf(buf + len, cap - len, " more=%u", more);
}

void krevoke_free(struct krevoke *k)
{
	size_t i;

	if (!k)
		return;
	for (i = 0; i < k->nh; i++)
		if (k->h[i].pidfd >= 0)
			close(k->h[i].pidfd);
	free(k->h);
	free(k->s);
	free(k);
}
