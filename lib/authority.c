// SPDX-License-Identifier: MIT
/*
 * The authority client (authority.h): the socket transport shared with the
 * admin calls, and the requests of a library that holds shards.
 *
 * Locking: ->io serialises the socket, one round trip at a time, and is
 * the only lock held while reading it; ->q guards the notice queue, the
 * wake flag and the last error text. A notice read by whichever thread
 * holds ->io is queued and the eventfd poked, so a thread in
 * authority_wait_notice() sees it even when it did not read it itself.
 *
 * Replies small enough to carry a key land in secmem and are wiped.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "authority.h"
#include "log.h"
#include "secmem.h"

#define SECRET_PAYLOAD 4096u	/* replies up to this size go to secmem */
#define TAIL_TIMEOUT_MS 5000	/* for the rest of a message once begun */
#define NOTICE_MAX 65536u

struct authority {
	struct ortho_ctx *ctx;
	int fd;
	int evfd;
	pthread_mutex_t io;
	pthread_mutex_t q;
	struct authority_notice *nq;	/* ->q */
	size_t nn, ncap;		/* ->q */
	int woken;			/* ->q */
	uint64_t taken, done;		/* ->q: notices popped, handled */
	pthread_cond_t idle;		/* ->q: taken == done again */
	char errmsg[PROTO_TEXT_MAX + 1]; /* ->q */
	uint64_t next_req;		/* ->io */
	int dead;			/* ->io; read racily by waiters */
	int admin;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
};

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int left_ms(int64_t deadline)
{
	int64_t d;

	if (deadline < 0)
		return -1;
	d = deadline - mono_ms();
	return d < 0 ? 0 : d > 1000000000 ? 1000000000 : (int)d;
}

static int recv_exact(int fd, void *buf, size_t n, int64_t deadline)
{
	uint8_t *p = buf;

	while (n) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		ssize_t r;
		int pr = poll(&pfd, 1, left_ms(deadline));

		if (pr < 0 && errno == EINTR)
			continue;
		if (pr < 0)
			return -errno;
		if (!pr)
			return -ETIMEDOUT;
		r = recv(fd, p, n, MSG_DONTWAIT);
		if (r < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (r < 0)
			return -errno;
		if (!r)
			return -ECONNRESET;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

static int send_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return errno == EPIPE ? -ECONNRESET : -errno;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

void authority_reply_free(struct authority_reply *r)
{
	if (!r->payload)
		return;
	if (r->secret) {
		secmem_free(r->payload, r->cap);
	} else {
		explicit_bzero(r->payload, r->cap);
		free(r->payload);
	}
	r->payload = NULL;
}

/* One message from the daemon. Called with ->io held. */
static int recv_msg(struct authority *a, struct authority_reply *r,
		    int64_t deadline)
{
	uint8_t hdr[PROTO_HDR_SIZE];
	const char *why;
	int ret;

	memset(r, 0, sizeof(*r));
	ret = recv_exact(a->fd, hdr, 1, deadline);
	if (!ret)
		ret = recv_exact(a->fd, hdr + 1, sizeof(hdr) - 1,
				 mono_ms() + TAIL_TIMEOUT_MS);
	if (ret)
		return ret;
	ret = proto_hdr_decode(hdr, &r->h, &why);
	if (!ret && proto_type_is_request(r->h.type)) {
		ret = -EPROTO;
		why = "type: a request, from the daemon";
	}
	if (ret) {
		olog_err(a->ctx, "%s: bad message from the daemon: %s",
			 a->path, why);
		return ret;
	}
	r->cap = r->h.length ? r->h.length : 1;
	r->secret = r->cap <= SECRET_PAYLOAD;
	r->payload = r->secret ? secmem_alloc(r->cap) : malloc(r->cap);
	if (!r->payload)
		return -ENOMEM;
	ret = recv_exact(a->fd, r->payload, r->h.length,
			 mono_ms() + TAIL_TIMEOUT_MS);
	if (ret)
		authority_reply_free(r);
	return ret;
}

static int queue_notice(struct authority *a, const struct authority_reply *r)
{
	struct proto_notice n;
	struct pcur c;
	uint64_t one = 1;
	int ret = 0;

	pcur_init(&c, r->payload, r->h.length);
	if (proto_get_notice(&c, &n)) {
		olog_err(a->ctx, "%s: bad REVOKE_NOTICE: %s", a->path, c.why);
		return -EPROTO;
	}
	pthread_mutex_lock(&a->q);
	if (a->nn == a->ncap) {
		size_t cap = a->ncap ? 2 * a->ncap : 16;
		void *p = cap <= NOTICE_MAX ?
			  realloc(a->nq, cap * sizeof(*a->nq)) : NULL;

		if (p) {
			a->nq = p;
			a->ncap = cap;
		} else {
			ret = -ENOMEM;
		}
	}
	if (!ret) {
		struct authority_notice *x = &a->nq[a->nn++];

		memcpy(x->id, n.id, PROTO_ID_SIZE);
		x->revoke_id = n.revoke_id;
		x->deadline_ms = n.deadline_ms;
	}
	pthread_mutex_unlock(&a->q);
	if (!ret && write(a->evfd, &one, sizeof(one)) < 0)
		ret = -errno;
	return ret;
}

static void set_errmsg(struct authority *a, const char *msg)
{
	pthread_mutex_lock(&a->q);
	snprintf(a->errmsg, sizeof(a->errmsg), "%s", msg);
	pthread_mutex_unlock(&a->q);
}

/* An ERROR reply: its errno, with the daemon's words kept. */
static int take_error(struct authority *a, const struct authority_reply *r)
{
	struct proto_error e;
	struct pcur c;

	pcur_init(&c, r->payload, r->h.length);
	if (proto_get_error(&c, &e)) {
		olog_err(a->ctx, "%s: bad ERROR reply: %s", a->path, c.why);
		return -EPROTO;
	}
	set_errmsg(a, e.msg);
	olog_dbg(a->ctx, "%s: orthod: %s", a->path, e.msg);
	return e.err;
}

static int wait_reply(struct authority *a, uint64_t req, uint16_t expect,
		      int64_t deadline, struct authority_reply *r)
{
	int ret;

	for (;;) {
		ret = recv_msg(a, r, deadline);
		if (ret)
			return ret;
		if (r->h.type == PROTO_REVOKE_NOTICE) {
			ret = queue_notice(a, r);
			authority_reply_free(r);
			if (ret)
				return ret;
			continue;
		}
		if (r->h.req_id != req) {
			olog_err(a->ctx, "%s: a reply to request %llu, waiting for %llu",
				 a->path, (unsigned long long)r->h.req_id,
				 (unsigned long long)req);
			ret = -EPROTO;
		} else if (r->h.type == PROTO_ERROR) {
			ret = take_error(a, r);
		} else if (r->h.type != expect) {
			olog_err(a->ctx, "%s: a %s reply, expected %s", a->path,
				 proto_type_name(r->h.type),
				 proto_type_name(expect));
			ret = -EPROTO;
		}
		if (ret)
			authority_reply_free(r);
		return ret;
	}
}

int authority_call(struct authority *a, struct pbuf *b, uint16_t expect,
		   int timeout_ms, struct authority_reply *r)
{
	int64_t deadline = timeout_ms < 0 ? -1 : mono_ms() + timeout_ms;
	uint64_t req;
	int n, ret, i;

	memset(r, 0, sizeof(*r));
	pthread_mutex_lock(&a->io);
	if (a->dead) {
		ret = -ECONNRESET;
		goto out;
	}
	req = ++a->next_req;
	for (i = 0; i < 8 && !b->err; i++)
		b->p[b->start + 16 + i] = (uint8_t)(req >> (8 * i));
	n = proto_end(b);
	ret = n < 0 ? n : send_all(a->fd, b->p + b->start, (size_t)n);
	if (!ret)
		ret = wait_reply(a, req, expect, deadline, r);
	/* Lost framing, or a reply still on its way: the stream is unusable. */
	if (ret == -ETIMEDOUT || ret == -EPROTO || ret == -ECONNRESET ||
	    ret == -EPIPE)
		a->dead = 1;
out:
	pthread_mutex_unlock(&a->io);
	return ret;
}

struct ortho_ctx *authority_ctx(const struct authority *a)
{
	return a->ctx;
}

const char *authority_last_error(struct authority *a)
{
	return a->errmsg;
}

static int hello(struct authority *a)
{
	struct proto_hello_ok h;
	struct authority_reply r;
	uint8_t buf[PROTO_HDR_SIZE + 4];
	struct pcur c;
	struct pbuf b;
	int ret;

	pbuf_init(&b, buf, sizeof(buf), 0);
	proto_begin(&b, PROTO_HELLO, 0);
	pbuf_u32(&b, 0);
	ret = authority_call(a, &b, PROTO_HELLO_OK, AUTHORITY_TIMEOUT_MS, &r);
	if (ret)
		return ret;
	pcur_init(&c, r.payload, r.h.length);
	ret = proto_get_hello_ok(&c, &h);
	authority_reply_free(&r);
	if (ret) {
		olog_err(a->ctx, "%s: bad HELLO_OK: %s", a->path, c.why);
		return -EPROTO;
	}
	a->admin = h.admin;
	olog_dbg(a->ctx, "%s: orthod pid %u, protocol %u, we are uid %u%s",
		 a->path, h.pid, h.version, h.uid, h.admin ? " (admin)" : "");
	return 0;
}

int authority_connect(struct ortho_ctx *ctx, const char *addr,
		      struct authority **out)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct authority *a;
	int ret;

	*out = NULL;
	if (!addr)
		return -EINVAL;
	if (!strncmp(addr, "unix:", 5))
		addr += 5;
	if (!*addr || strlen(addr) >= sizeof(sa.sun_path)) {
		olog_err(ctx, "authority address \"%s\": not a socket path", addr);
		return -EINVAL;
	}
	a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->ctx = ctx;
	strcpy(a->path, addr);
	strcpy(sa.sun_path, addr);
	pthread_mutex_init(&a->io, NULL);
	pthread_mutex_init(&a->q, NULL);
	pthread_cond_init(&a->idle, NULL);
	a->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	a->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (a->fd < 0 || a->evfd < 0 ||
	    connect(a->fd, (struct sockaddr *)&sa, sizeof(sa))) {
		ret = -errno;
		olog_err(ctx, "%s: cannot reach orthod: %s", addr,
			 strerror(errno));
		goto fail;
	}
	ret = hello(a);
	if (ret)
		goto fail;
	*out = a;
	return 0;
fail:
	authority_close(a);
	return ret;
}

void authority_close(struct authority *a)
{
	if (!a)
		return;
	if (a->fd >= 0)
		close(a->fd);
	if (a->evfd >= 0)
		close(a->evfd);
	pthread_mutex_destroy(&a->io);
	pthread_mutex_destroy(&a->q);
	pthread_cond_destroy(&a->idle);
	free(a->nq);
	free(a);
}

int authority_is_admin(const struct authority *a)
{
	return a->admin;
}

int authority_get_key(struct authority *a, const uint8_t id[PROTO_ID_SIZE],
		      struct authority_key *out)
{
	struct authority_reply r;
	struct proto_key k;
	uint8_t buf[PROTO_HDR_SIZE + PROTO_ID_SIZE];
	struct pcur c;
	struct pbuf b;
	int ret;

	pbuf_init(&b, buf, sizeof(buf), 0);
	proto_begin(&b, PROTO_GET_KEY, 0);
	proto_put_id(&b, id);
	ret = authority_call(a, &b, PROTO_KEY, AUTHORITY_TIMEOUT_MS, &r);
	if (ret)
		return ret;
	pcur_init(&c, r.payload, r.h.length);
	proto_get_key(&c, &k);
	ret = pcur_end(&c);
	if (!ret && memcmp(k.id, id, PROTO_ID_SIZE)) {
		pcur_fail(&c, -EPROTO, "shard id: not the one asked for");
		ret = -EPROTO;
	}
	if (ret) {
		olog_err(a->ctx, "%s: bad KEY reply: %s", a->path, c.why);
	} else {
		memcpy(out->id, k.id, PROTO_ID_SIZE);
		memcpy(out->key, k.key, PROTO_KEY_SIZE);
		memcpy(out->label, k.label, sizeof(out->label));
		out->layer = k.layer;
	}
	explicit_bzero(&k, sizeof(k));
	authority_reply_free(&r);
	return ret ? -EPROTO : 0;
}

static int call_ok(struct authority *a, struct pbuf *b)
{
	struct authority_reply r;
	int ret;

	ret = authority_call(a, b, PROTO_OK, AUTHORITY_TIMEOUT_MS, &r);
	if (!ret)
		authority_reply_free(&r);
	return ret;
}

int authority_hold(struct authority *a, const uint8_t id[PROTO_ID_SIZE],
		   const char *device, uint64_t bytes, uint64_t since_ns)
{
	struct proto_hold h = { .bytes = bytes, .since_ns = since_ns };
	uint8_t buf[PROTO_HDR_SIZE + 64];
	struct pbuf b;

	if (!device || !*device || !proto_str_valid(device, PSTR_DEVICE))
		return -EINVAL;
	memcpy(h.id, id, PROTO_ID_SIZE);
	strcpy(h.device, device);
	pbuf_init(&b, buf, sizeof(buf), 0);
	proto_begin(&b, PROTO_HOLD, 0);
	proto_put_hold(&b, &h);
	return call_ok(a, &b);
}

int authority_release(struct authority *a, const uint8_t id[PROTO_ID_SIZE],
		      const char *device, int key_wiped)
{
	struct proto_release rel = { .flags = key_wiped ? PROTO_RELEASE_KEY : 0 };
	uint8_t buf[PROTO_HDR_SIZE + 64];
	struct pbuf b;

	if (device && !proto_str_valid(device, PSTR_DEVICE))
		return -EINVAL;
	memcpy(rel.id, id, PROTO_ID_SIZE);
	if (device)
		strcpy(rel.device, device);
	pbuf_init(&b, buf, sizeof(buf), 0);
	proto_begin(&b, PROTO_RELEASE, 0);
	proto_put_release(&b, &rel);
	return call_ok(a, &b);
}

int authority_ack(struct authority *a, const struct authority_notice *n,
		  int status)
{
	struct proto_ack ack = { .revoke_id = n->revoke_id, .status = status };
	uint8_t buf[PROTO_HDR_SIZE + 32];
	struct pbuf b;
	int len, ret;

	if (status > 0 || status < -4095)
		return -EINVAL;
	memcpy(ack.id, n->id, PROTO_ID_SIZE);
	pbuf_init(&b, buf, sizeof(buf), 0);
	proto_begin(&b, PROTO_ACK, 0);
	proto_put_ack(&b, &ack);
	len = proto_end(&b);
	if (len < 0)
		return len;
	pthread_mutex_lock(&a->io);
	ret = a->dead ? -ECONNRESET : send_all(a->fd, buf, (size_t)len);
	pthread_mutex_unlock(&a->io);
	return ret;
}

/* Take a queued notice. Return: 1, or -ECANCELED after a wake, or 0. */
static int pop_notice(struct authority *a, struct authority_notice *n)
{
	int ret = 0;

	pthread_mutex_lock(&a->q);
	if (a->nn) {
		*n = a->nq[0];
		memmove(a->nq, a->nq + 1, --a->nn * sizeof(*a->nq));
		a->taken++;
		ret = 1;
	} else if (a->woken) {
		a->woken = 0;
		ret = -ECANCELED;
	}
	pthread_mutex_unlock(&a->q);
	return ret;
}

/* Read what the daemon sent while no request was in flight. */
static int drain_socket(struct authority *a)
{
	struct pollfd pfd = { .fd = a->fd, .events = POLLIN };
	struct authority_reply r;
	int ret = 0;

	pthread_mutex_lock(&a->io);
	while (!ret && !a->dead && poll(&pfd, 1, 0) == 1) {
		ret = recv_msg(a, &r, mono_ms() + TAIL_TIMEOUT_MS);
		if (ret)
			break;
		if (r.h.type == PROTO_REVOKE_NOTICE) {
			ret = queue_notice(a, &r);
		} else {
			olog_err(a->ctx, "%s: an unrequested %s from the daemon",
				 a->path, proto_type_name(r.h.type));
			ret = -EPROTO;
		}
		authority_reply_free(&r);
	}
	if (ret)
		a->dead = 1;
	pthread_mutex_unlock(&a->io);
	return ret;
}

int authority_wait_event(struct authority *a, int xfd, int timeout_ms,
			 struct authority_notice *n)
{
	int64_t deadline = timeout_ms < 0 ? -1 : mono_ms() + timeout_ms;
	uint64_t cnt;
	int ret;

	for (;;) {
		struct pollfd pfd[3] = {
			{ .fd = a->evfd, .events = POLLIN },
			{ .fd = a->fd, .events = POLLIN },
			{ .fd = xfd, .events = POLLPRI },
		};

		ret = pop_notice(a, n);
		if (ret)
			return ret;
		if (__atomic_load_n(&a->dead, __ATOMIC_RELAXED))
			return -ECONNRESET;
		ret = poll(pfd, xfd >= 0 ? 3 : 2, left_ms(deadline));
		if (ret < 0 && errno == EINTR)
			continue;
		if (ret < 0)
			return -errno;
		if (!ret)
			return 0;
		if (pfd[0].revents & POLLIN) {
			if (read(a->evfd, &cnt, sizeof(cnt)) < 0 &&
			    errno != EAGAIN)
				return -errno;
		}
		if (pfd[1].revents & (POLLIN | POLLHUP | POLLERR)) {
			ret = drain_socket(a);
			if (ret) {
				int got = pop_notice(a, n);

				return got ? got : ret;
			}
		}
		/* A notice queued meanwhile is taken at the next call. */
		if (xfd >= 0 && (pfd[2].revents & (POLLPRI | POLLERR | POLLNVAL)))
			return AUTHORITY_EVENT_FD;
	}
}

int authority_wait_notice(struct authority *a, int timeout_ms,
			  struct authority_notice *n)
{
	return authority_wait_event(a, -1, timeout_ms, n);
}

int authority_take_pending(struct authority *a, struct authority_notice *n)
{
	struct pollfd pfd = { .fd = a->fd, .events = POLLIN };
	int ret = 0;

	if (!__atomic_load_n(&a->dead, __ATOMIC_RELAXED) &&
	    poll(&pfd, 1, 0) == 1)
		drain_socket(a);
	pthread_mutex_lock(&a->q);
	if (a->nn) {
		*n = a->nq[0];
		memmove(a->nq, a->nq + 1, --a->nn * sizeof(*a->nq));
		a->taken++;
		ret = 1;
	}
	pthread_mutex_unlock(&a->q);
	return ret;
}

void authority_notice_done(struct authority *a)
{
	pthread_mutex_lock(&a->q);
	a->done++;
	pthread_cond_broadcast(&a->idle);
	pthread_mutex_unlock(&a->q);
}

void authority_wait_idle(struct authority *a)
{
	pthread_mutex_lock(&a->q);
	while (a->taken != a->done)
		pthread_cond_wait(&a->idle, &a->q);
	pthread_mutex_unlock(&a->q);
}

void authority_wake(struct authority *a)
{
	uint64_t one = 1;

	pthread_mutex_lock(&a->q);
	a->woken = 1;
	pthread_mutex_unlock(&a->q);
	if (write(a->evfd, &one, sizeof(one)) < 0)
		olog_dbg(a->ctx, "%s: wake: %s", a->path, strerror(errno));
}
