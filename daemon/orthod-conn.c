// SPDX-License-Identifier: MIT
/*
 * Connections: accepting, peer credentials, reading framed messages,
 * queueing replies, closing.
 *
 * A peer is trusted for nothing but its kernel-reported credentials
 * (SO_PEERCRED, SO_PEERGROUPS, taken at connect time). Every header is
 * checked before its payload is read, and the payload fits the type's
 * bounds, so a peer can make the daemon hold at most ORTHOD_INLINE_PAYLOAD
 * bytes (an admin's IMPORT: up to PROTO_MAX_PAYLOAD, in secmem). A peer
 * that sends a bad message gets an ERROR and is disconnected; one that
 * stalls mid-message, or leaves ORTHOD_OUT_MAX bytes unread, is cut off.
 *
 * Connections are freed only by conn_reap(), between event batches, so
 * nothing handling an event finds a pointer to a freed connection.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "orthod.h"
#include "secmem.h"

int type_is_admin(uint16_t type)
{
	return type >= PROTO_IMPORT && type < PROTO_OK;
}

static int peer_groups(int fd, struct peer *p)
{
	socklen_t len = 64 * sizeof(gid_t);
	gid_t *g;

	for (;;) {
		g = malloc(len ? len : sizeof(gid_t));
		if (!g)
			return -ENOMEM;
		if (!getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &len))
			break;
		free(g);
		if (errno != ERANGE)
			return -errno;
	}
	p->groups = g;
	p->ngroups = (int)(len / sizeof(gid_t));
	return 0;
}

static int peer_is_admin(const struct orthod *d, const struct peer *p)
{
	int i;

	if (p->uid == 0)
		return 1;
	if (!d->has_admin_gid)
		return 0;
	if (p->gid == d->admin_gid)
		return 1;
	for (i = 0; i < p->ngroups; i++)
		if (p->groups[i] == d->admin_gid)
			return 1;
	return 0;
}

static unsigned int conns_of(const struct orthod *d, uid_t uid)
{
	const struct conn *c;
	unsigned int n = 0;

	for (c = d->conns; c; c = c->next)
		n += c->peer.uid == uid && !c->uncounted;
	return n;
}

/* Holds no key and no bytes, and no revocation answers to it. */
static int conn_idle(struct orthod *d, const struct conn *c)
{
	return !c->dead && !c->nkeys && !c->nholds && !revoke_waits_for(d, c);
}

/*
 * At a limit, the oldest idle connection (of @uid when it is that uid's
 * limit) makes room, so a peer that opens connections and sits on them
 * cannot lock out the admin or anyone else. Marked dead, freed at the reap.
 * Return: 0 when room was made, else -EMFILE.
 */
static int make_room(struct orthod *d, uid_t uid, int own)
{
	struct conn *c, *victim = NULL;

	for (c = d->conns; c; c = c->next)
		if ((!own || c->peer.uid == uid) && conn_idle(d, c))
			victim = c;	/* the list is newest first */
	if (!victim)
		return -EMFILE;
	dlog(LOG_NOTICE, "connection limit: dropping an idle connection of pid %d uid %u",
	     (int)victim->peer.pid, (unsigned int)victim->peer.uid);
	victim->dead = 1;
	d->nconns--;
	victim->uncounted = 1;
	return 0;
}

static int conn_new(struct orthod *d, int fd)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	struct conn *c;
	int ret;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len))
		return -errno;
	if (cred.uid && conns_of(d, cred.uid) >= d->max_conns_uid &&
	    make_room(d, cred.uid, 1))
		return -EMFILE;
	if (d->nconns >= d->max_conns && make_room(d, cred.uid, 0))
		return -EMFILE;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->ev.kind = EV_CONN;
	c->ev.fd = fd;
	c->peer.pid = cred.pid;
	c->peer.uid = cred.uid;
	c->peer.gid = cred.gid;
	c->connected_ns = now_real_ns();
	c->payload = c->inl;
	ret = peer_groups(fd, &c->peer);
	if (!ret)
		ret = ev_add(d, &c->ev, EPOLLIN | EPOLLRDHUP);
	if (ret) {
		free(c->peer.groups);
		free(c);
		return ret;
	}
	c->peer.admin = peer_is_admin(d, &c->peer);
	proc_comm(c->peer.pid, c->peer.comm);
	c->next = d->conns;
	if (d->conns)
		d->conns->prev = c;
	d->conns = c;
	d->nconns++;
	return 0;
}

void conn_accept(struct orthod *d)
{
	int fd, ret;

	for (;;) {
		fd = accept4(d->listen.fd, NULL, NULL,
			     SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0 && (errno == EMFILE || errno == ENFILE) &&
		    d->spare_fd >= 0) {
			/* Out of descriptors: take the peer off the queue. */
			close(d->spare_fd);
			fd = accept(d->listen.fd, NULL, NULL);
			if (fd >= 0)
				close(fd);
			d->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
			continue;
		}
		if (fd < 0)
			return;
		ret = conn_new(d, fd);
		if (ret) {
			if (ret != -EMFILE)
				dlog(LOG_WARNING, "connection refused: %s",
				     strerror(-ret));
			close(fd);
		}
	}
}

static void wipe_payload(struct orthod *d, struct conn *c)
{
	if (c->payload != c->inl) {
		secmem_free(c->payload, c->h.length);
		d->big_bytes -= c->h.length;
		c->payload = c->inl;
	} else {
		explicit_bzero(c->inl, sizeof(c->inl));
	}
	c->hdr_have = 0;
	c->pay_have = 0;
	c->stall_since = 0;
}

static int send_queued(struct conn *c)
{
	while (c->out_off < c->out_len) {
		ssize_t w = send(c->ev.fd, c->out + c->out_off,
				 c->out_len - c->out_off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return errno == EAGAIN ? 0 : -errno;
		explicit_bzero(c->out + c->out_off, (size_t)w);
		c->out_off += (size_t)w;
	}
	c->out_off = c->out_len = 0;
	return 0;
}

static int queue(struct conn *c, const uint8_t *p, size_t len)
{
	size_t have = c->out_len - c->out_off, cap;
	uint8_t *n;

	if (have + len > ORTHOD_OUT_MAX)
		return -ENOBUFS;
	if (c->out_len + len > c->out_cap) {
		cap = c->out_cap ? c->out_cap : 4096;
		while (cap < have + len)
			cap *= 2;
		n = malloc(cap);
		if (!n)
			return -ENOMEM;
		if (have)
			memcpy(n, c->out + c->out_off, have);
		if (c->out) {
			explicit_bzero(c->out, c->out_cap);
			free(c->out);
		}
		c->out = n;
		c->out_cap = cap;
		c->out_off = 0;
		c->out_len = have;
	}
	memcpy(c->out + c->out_len, p, len);
	c->out_len += len;
	return 0;
}

static void update_events(struct orthod *d, struct conn *c)
{
	uint32_t ev = c->closing ? 0 : EPOLLIN | EPOLLRDHUP;

	if (c->out_off < c->out_len)
		ev |= EPOLLOUT;
	ev_mod(d, &c->ev, ev);
}

int conn_send(struct orthod *d, struct conn *c, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	int ret;

	if (c->dead)
		return -ECONNRESET;
	if (c->out_off == c->out_len) {
		while (len) {
			ssize_t w = send(c->ev.fd, p, len,
					 MSG_NOSIGNAL | MSG_DONTWAIT);

			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0 && errno == EAGAIN)
				break;
			if (w < 0) {
				c->dead = 1;
				return -errno;
			}
			p += w;
			len -= (size_t)w;
		}
		if (!len)
			return 0;
	}
	ret = queue(c, p, len);
	if (ret) {
		c->dead = 1;
		return ret;
	}
	update_events(d, c);
	return 0;
}

int conn_send_pbuf(struct orthod *d, struct conn *c, struct pbuf *b)
{
	int n = proto_end(b);

	if (n < 0) {
		dlog(LOG_ERR, "cannot encode a reply: %s", strerror(-n));
		return conn_error(d, c, 0, n, "reply too large");
	}
	return conn_send(d, c, b->p + b->start, (size_t)n);
}

int conn_error(struct orthod *d, struct conn *c, uint64_t req, int err,
	       const char *fmt, ...)
{
	struct proto_error e = { .err = err };
	uint8_t buf[PROTO_HDR_SIZE + 8 + PROTO_TEXT_MAX];
	struct pbuf b;
	va_list ap;
	size_t i;

	va_start(ap, fmt);
	vsnprintf(e.msg, sizeof(e.msg), fmt, ap);
	va_end(ap);
	for (i = 0; e.msg[i]; i++)
		if (e.msg[i] < 0x20 || e.msg[i] > 0x7e)
			e.msg[i] = '?';
	pbuf_init(&b, buf, sizeof(buf), 0);
	proto_begin(&b, PROTO_ERROR, req);
	proto_put_error(&b, &e);
	return conn_send(d, c, buf, (size_t)proto_end(&b));
}

int conn_ok(struct orthod *d, struct conn *c, uint64_t req)
{
	uint8_t buf[PROTO_HDR_SIZE];
	struct pbuf b;

	pbuf_init(&b, buf, sizeof(buf), 0);
	proto_begin(&b, PROTO_OK, req);
	return conn_send(d, c, buf, (size_t)proto_end(&b));
}

/* After an error reply, read nothing more and close once it is sent. */
static void conn_fail(struct orthod *d, struct conn *c)
{
	c->closing = 1;
	update_events(d, c);
}

static int header_done(struct orthod *d, struct conn *c)
{
	const char *why;
	int ret;

	ret = proto_hdr_decode(c->hdr, &c->h, &why);
	if (!ret && !proto_type_is_request(c->h.type)) {
		ret = -EBADRQC;
		why = "type: not a request";
	}
	if (!ret && type_is_admin(c->h.type) && !c->peer.admin) {
		ret = -EPERM;
		why = "admin requests need root or the admin group";
	}
	if (ret) {
		conn_error(d, c, c->h.req_id, ret, "%s", why);
		return ret;
	}
	if (c->h.length > sizeof(c->inl)) {
		/* Large payloads are locked memory: bound them all together. */
		if (d->big_bytes + c->h.length > ORTHOD_BIG_MAX) {
			conn_error(d, c, c->h.req_id, -EBUSY,
				   "too many large requests at once; retry");
			return -EBUSY;
		}
		c->payload = secmem_alloc(c->h.length);
		if (!c->payload) {
			c->payload = c->inl;
			conn_error(d, c, c->h.req_id, -ENOMEM, "out of memory");
			return -ENOMEM;
		}
		d->big_bytes += c->h.length;
	}
	return 0;
}

/* Read what is there of one message. Return: 1 complete, 0 not yet, -errno. */
static int read_message(struct orthod *d, struct conn *c)
{
	uint8_t *dst;
	size_t want;
	ssize_t r;
	int ret;

	for (;;) {
		if (c->hdr_have < PROTO_HDR_SIZE) {
			dst = c->hdr + c->hdr_have;
			want = PROTO_HDR_SIZE - c->hdr_have;
		} else if (c->pay_have < c->h.length) {
			dst = c->payload + c->pay_have;
			want = c->h.length - c->pay_have;
		} else {
			return 1;
		}
		r = recv(c->ev.fd, dst, want, MSG_DONTWAIT);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return errno == EAGAIN ? 0 : -errno;
		if (r == 0)
			return -ECONNRESET;
		if (!c->stall_since)
			c->stall_since = now_mono_ns();
		if (c->hdr_have < PROTO_HDR_SIZE) {
			c->hdr_have += (size_t)r;
			if (c->hdr_have == PROTO_HDR_SIZE) {
				ret = header_done(d, c);
				if (ret)
					return ret;
			}
		} else {
			c->pay_have += (size_t)r;
		}
	}
}

static void conn_read(struct orthod *d, struct conn *c)
{
	int budget = 64, ret;

	while (budget-- && !c->closing && !c->dead) {
		ret = read_message(d, c);
		if (ret == 0)
			return;
		if (ret < 0) {
			if (ret == -ECONNRESET || ret == -EPIPE)
				c->dead = 1;
			else
				conn_fail(d, c);
			return;
		}
		ret = client_request(d, c);
		wipe_payload(d, c);
		if (ret)
			conn_fail(d, c);
	}
}

void conn_event(struct orthod *d, struct conn *c, uint32_t events)
{
	if (c->dead)
		return;
	if (events & EPOLLOUT) {
		if (send_queued(c))
			c->dead = 1;
		else
			update_events(d, c);
	}
	if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)) &&
	    !c->closing)
		conn_read(d, c);
	else if (events & (EPOLLHUP | EPOLLERR))
		c->dead = 1;
}

void conn_close(struct orthod *d, struct conn *c)
{
	revoke_conn_gone(d, c);
	ev_del(d, &c->ev);
	close(c->ev.fd);
	if (c->prev)
		c->prev->next = c->next;
	else
		d->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	reg_free(c);
	wipe_payload(d, c);
	if (c->out) {
		explicit_bzero(c->out, c->out_cap);
		free(c->out);
	}
	free(c->peer.groups);
	if (!c->uncounted)
		d->nconns--;
	free(c);
}

void conn_reap(struct orthod *d)
{
	struct conn *c = d->conns, *next;

	for (; c; c = next) {
		next = c->next;
		if (c->dead || (c->closing && c->out_off == c->out_len))
			conn_close(d, c);
	}
}

void conn_tick(struct orthod *d)
{
	uint64_t now = now_mono_ns();
	struct conn *c;

	for (c = d->conns; c; c = c->next)
		if (c->stall_since && now - c->stall_since > ORTHOD_STALL_NS)
			c->dead = 1;
}
