// SPDX-License-Identifier: MIT
/*
 * orthod's side of /dev/ortho: see orthod-kmod.h and kmod/README.md.
 *
 * Every call is one or two ioctls on the admin's open file. Argument
 * structs that carry a key are wiped after the call: the daemon's promise
 * is that once the kernel has a key, orthod's memory has none.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "../kmod/uapi/ortho.h"
#include "orthod-kmod.h"

#define KM_GRACE_PARAM "/sys/module/ortho/parameters/grace_ms"

_Static_assert(ORTHOD_KMOD_ID_SIZE == ORTHO_IOC_ID_SIZE, "shard id size");
_Static_assert(ORTHOD_KMOD_KEY_SIZE == ORTHO_IOC_KEY_SIZE, "key size");
_Static_assert(ORTHOD_KMOD_LABEL_MAX == ORTHO_IOC_LABEL_MAX, "label size");
_Static_assert(ORTHOD_KMOD_POLICY_MAX == ORTHO_IOC_POLICY_MAX, "policy size");

static int km_ioctl(const struct orthod_kmod *km, unsigned long cmd, void *arg)
{
	int ret;

	if (km->fd < 0)
		return -ENODEV;
	do {
		ret = ioctl(km->fd, cmd, arg);
	} while (ret < 0 && errno == EINTR && cmd != ORTHO_IOC_REVOKE);
	return ret < 0 ? -errno : 0;
}

int orthod_kmod_open(struct orthod_kmod *km, const char *path)
{
	struct ortho_ioc_list l = { .size = sizeof(l) };
	int ret;

	km->fd = open(path && *path ? path : ORTHOD_KMOD_PATH,
		      O_RDWR | O_CLOEXEC);
	if (km->fd < 0)
		return -errno;
	/* Only the module answers LIST, and only to CAP_SYS_ADMIN. */
	ret = km_ioctl(km, ORTHO_IOC_LIST, &l);
	if (ret) {
		close(km->fd);
		km->fd = -1;
		return ret == -EINVAL ? -ENOTTY : ret;
	}
	return 0;
}

void orthod_kmod_close(struct orthod_kmod *km)
{
	if (km->fd >= 0)
		close(km->fd);
	km->fd = -1;
}

int orthod_kmod_active(const struct orthod_kmod *km)
{
	return km->fd >= 0;
}

static int km_list_add(uint32_t *v, uint32_t *n, uint32_t who)
{
	uint32_t i;

	for (i = 0; i < *n; i++)
		if (v[i] == who)
			return 0;
	if (*n == ORTHOD_KMOD_POLICY_MAX)
		return -E2BIG;
	v[(*n)++] = who;
	return 0;
}

int orthod_kmod_policy_add(struct orthod_kmod_policy *p, int allow,
			   int is_gid, uint32_t who)
{
	if (allow)
		return is_gid ? km_list_add(p->gids, &p->n_gids, who) :
				km_list_add(p->uids, &p->n_uids, who);
	return is_gid ? km_list_add(p->deny_gids, &p->n_deny_gids, who) :
			km_list_add(p->deny_uids, &p->n_deny_uids, who);
}

static int km_policy_arg(struct ortho_ioc_policy *a, const uint8_t *id,
			 const struct orthod_kmod_policy *p)
{
	if (p->n_uids > ORTHOD_KMOD_POLICY_MAX ||
	    p->n_gids > ORTHOD_KMOD_POLICY_MAX ||
	    p->n_deny_uids > ORTHOD_KMOD_POLICY_MAX ||
	    p->n_deny_gids > ORTHOD_KMOD_POLICY_MAX)
		return -EINVAL;
	memset(a, 0, sizeof(*a));
	a->size = sizeof(*a);
	memcpy(a->id, id, ORTHO_IOC_ID_SIZE);
	a->n_uids = p->n_uids;
	a->n_gids = p->n_gids;
	a->n_deny_uids = p->n_deny_uids;
	a->n_deny_gids = p->n_deny_gids;
	memcpy(a->uids, p->uids, p->n_uids * sizeof(uint32_t));
	memcpy(a->gids, p->gids, p->n_gids * sizeof(uint32_t));
	memcpy(a->deny_uids, p->deny_uids, p->n_deny_uids * sizeof(uint32_t));
	memcpy(a->deny_gids, p->deny_gids, p->n_deny_gids * sizeof(uint32_t));
	return 0;
}

int orthod_kmod_set_policy(struct orthod_kmod *km, const uint8_t *id,
			   const struct orthod_kmod_policy *p)
{
	struct ortho_ioc_policy a;
	int ret;

	ret = km_policy_arg(&a, id, p);
	if (ret)
		return ret;
	return km_ioctl(km, ORTHO_IOC_SET_POLICY, &a);
}

int orthod_kmod_add(struct orthod_kmod *km, const uint8_t *id,
		    const uint8_t *key, const char *label,
		    const struct orthod_kmod_policy *p, int *existed)
{
	struct ortho_ioc_add a;
	size_t len = label ? strlen(label) : 0;
	int ret;

	if (existed)
		*existed = 0;
	if (!len || len >= ORTHO_IOC_LABEL_MAX)
		return -EINVAL;
	memset(&a, 0, sizeof(a));
	a.size = sizeof(a);
	memcpy(a.id, id, ORTHO_IOC_ID_SIZE);
	memcpy(a.key, key, ORTHO_IOC_KEY_SIZE);
	memcpy(a.label, label, len);
	ret = km_ioctl(km, ORTHO_IOC_ADD, &a);
	explicit_bzero(&a, sizeof(a));
	if (ret == -EEXIST) {
		/* Ids are random 128-bit values: the same id is the same key. */
		if (existed)
			*existed = 1;
	} else if (ret) {
		return ret;
	}
	/* A key that is in but cannot get its policy stays unfetchable. */
	return orthod_kmod_set_policy(km, id, p);
}

static void km_shard_from(struct orthod_kmod_shard *out,
			  const struct ortho_ioc_status *s)
{
	memset(out, 0, sizeof(*out));
	memcpy(out->id, s->id, ORTHO_IOC_ID_SIZE);
	memcpy(out->label, s->label, ORTHO_IOC_LABEL_MAX);
	out->label[ORTHO_IOC_LABEL_MAX - 1] = 0;
	out->revoked = s->state == ORTHO_IOC_KEY_REVOKED;
	out->grace_ms = s->grace_ms;
	out->generation = s->generation;
	out->revoked_ns = s->revoked_ns;
	out->done_ns = s->done_ns;
	out->holders = s->counts.holders;
	out->acked = s->counts.acked;
	out->killed = s->counts.killed;
	out->closed = s->counts.closed;
}

int orthod_kmod_status(struct orthod_kmod *km, const uint8_t *id,
		       struct orthod_kmod_shard *out)
{
	struct ortho_ioc_status s = { .size = sizeof(s) };
	int ret;

	memcpy(s.id, id, ORTHO_IOC_ID_SIZE);
	ret = km_ioctl(km, ORTHO_IOC_STATUS, &s);
	if (!ret)
		km_shard_from(out, &s);
	return ret;
}

int orthod_kmod_revoke(struct orthod_kmod *km, const uint8_t *id, int wait,
		       struct orthod_kmod_shard *out)
{
	struct ortho_ioc_revoke r = { .size = sizeof(r) };
	int ret, sret;

	memcpy(r.id, id, ORTHO_IOC_ID_SIZE);
	if (wait)
		r.flags = ORTHO_IOC_REVOKE_WAIT;
	ret = km_ioctl(km, ORTHO_IOC_REVOKE, &r);
	if (!out || (ret && ret != -EKEYREVOKED && ret != -EINTR))
		return ret;
	/* STATUS has everything REVOKE returns, and the times as well. */
	sret = orthod_kmod_status(km, id, out);
	if (!ret && !sret)
		out->grace_ms = r.grace_ms;
	return ret ? ret : sret;
}

int orthod_kmod_revoke_done(struct orthod_kmod *km, const uint8_t *id,
			    struct orthod_kmod_shard *out)
{
	struct orthod_kmod_shard s;
	int ret;

	ret = orthod_kmod_status(km, id, &s);
	if (ret)
		return ret;
	if (out)
		*out = s;
	if (!s.revoked)
		return -EINVAL;
	return s.done_ns ? 1 : 0;
}

int orthod_kmod_list(struct orthod_kmod *km, uint8_t (**ids)[ORTHOD_KMOD_ID_SIZE],
		     size_t *n, size_t *live)
{
	struct ortho_ioc_list l = { .size = sizeof(l) };
	uint8_t (*v)[ORTHOD_KMOD_ID_SIZE] = NULL;
	int ret, tries;

	*ids = NULL;
	*n = 0;
	/* Keys may be added between the count and the copy: try again. */
	for (tries = 0; tries < 8; tries++) {
		l.ids = 0;
		l.count = 0;
		ret = km_ioctl(km, ORTHO_IOC_LIST, &l);
		if (ret)
			return ret;
		if (live)
			*live = l.live;
		if (!l.total)
			return 0;
		v = calloc(l.total, sizeof(*v));
		if (!v)
			return -ENOMEM;
		l.ids = (uintptr_t)v;
		l.count = l.total;
		ret = km_ioctl(km, ORTHO_IOC_LIST, &l);
		if (ret) {
			free(v);
			return ret;
		}
		if (l.count == l.total) {
			if (live)
				*live = l.live;
			*ids = v;
			*n = l.count;
			return 0;
		}
		free(v);
	}
	return -EAGAIN;
}

static const char *km_hold_state(uint32_t s)
{
	switch (s) {
	case ORTHO_IOC_HOLD_HELD:
		return "held";
	case ORTHO_IOC_HOLD_REVOKED:
		return "revoked";
	case ORTHO_IOC_HOLD_ACKED:
		return "acked";
	case ORTHO_IOC_HOLD_KILLED:
		return "killed";
	}
	return "unknown";
}

int orthod_kmod_holders(struct orthod_kmod *km, const uint8_t *id,
			struct orthod_kmod_holder **v, size_t *n)
{
	struct ortho_ioc_holders h = { .size = sizeof(h) };
	struct ortho_ioc_holder *raw = NULL;
	struct orthod_kmod_holder *out;
	uint32_t i, room = 0;
	int ret;

	*v = NULL;
	*n = 0;
	memcpy(h.id, id, ORTHO_IOC_ID_SIZE);
	h.holder_size = sizeof(*raw);
	/* Holders may come and go between calls: grow until all fit. */
	for (;;) {
		h.holders = (uintptr_t)raw;
		h.count = room;
		ret = km_ioctl(km, ORTHO_IOC_HOLDERS, &h);
		if (ret || h.total <= room)
			break;
		free(raw);
		room = h.total + 8;
		raw = calloc(room, sizeof(*raw));
		if (!raw)
			return -ENOMEM;
	}
	if (ret || !h.count) {
		free(raw);
		return ret;
	}
	out = calloc(h.count, sizeof(*out));
	if (!out) {
		free(raw);
		return -ENOMEM;
	}
	for (i = 0; i < h.count; i++) {
		out[i].pid = raw[i].pid;
		out[i].uid = raw[i].uid;
		out[i].state = km_hold_state(raw[i].state);
		out[i].client_id = raw[i].client_id;
		out[i].resident = raw[i].resident;
	}
	free(raw);
	*v = out;
	*n = h.count;
	return 0;
}

int orthod_kmod_grace_ms(void)
{
	char buf[32];
	ssize_t len;
	long v;
	int fd;

	fd = open(KM_GRACE_PARAM, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	len = read(fd, buf, sizeof(buf) - 1);
	if (len < 0) {
		len = -errno;
		close(fd);
		return (int)len;
	}
	close(fd);
	buf[len] = 0;
	v = strtol(buf, NULL, 10);
	return v > 0 && v <= 600000 ? (int)v : -EINVAL;
}

/* ---- the module's view, for orthoctl status ---- */

static void km_hex(const uint8_t *id, char out[2 * ORTHOD_KMOD_ID_SIZE + 1])
{
	static const char digits[] = "0123456789abcdef";
	unsigned int i;

	for (i = 0; i < ORTHOD_KMOD_ID_SIZE; i++) {
		out[2 * i] = digits[id[i] >> 4];
		out[2 * i + 1] = digits[id[i] & 15];
	}
	out[2 * ORTHOD_KMOD_ID_SIZE] = 0;
}

/* Labels are printable ASCII, but may hold a quote or a backslash. */
static void km_json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fputc('\\', f);
		fputc(*s, f);
	}
	fputc('"', f);
}

static void km_text_shard(FILE *f, const struct orthod_kmod_shard *s,
			  const struct orthod_kmod_holder *h, size_t nh)
{
	char hex[2 * ORTHOD_KMOD_ID_SIZE + 1];
	size_t i;

	km_hex(s->id, hex);
	fprintf(f, "  shard %s %s: ", hex, s->label);
	if (!s->revoked)
		fprintf(f, "live, %" PRIu32 " holders\n", s->holders);
	else if (s->done_ns)
		fprintf(f, "revoked (generation %" PRIu64 ") in %.3f ms: %" PRIu32
			" holders, %" PRIu32 " acked, %" PRIu32 " killed, %" PRIu32
			" closed\n", s->generation,
			(double)(s->done_ns - s->revoked_ns) / 1e6, s->holders,
			s->acked, s->killed, s->closed);
	else
		fprintf(f, "revoking (generation %" PRIu64 ", grace %" PRIu32
			" ms): %" PRIu32 " holders, %" PRIu32 " acked, %" PRIu32
			" closed, %" PRIu32 " pending\n", s->generation,
			s->grace_ms, s->holders, s->acked, s->closed,
			s->holders - s->acked - s->closed - s->killed);
	for (i = 0; i < nh; i++)
		fprintf(f, "    pid %d uid %u %s resident %" PRIu64
			" client %" PRIu64 "\n", (int)h[i].pid,
			(unsigned int)h[i].uid, h[i].state, h[i].resident,
			h[i].client_id);
}

static void km_json_shard(FILE *f, const struct orthod_kmod_shard *s,
			  const struct orthod_kmod_holder *h, size_t nh)
{
	char hex[2 * ORTHOD_KMOD_ID_SIZE + 1];
	size_t i;

	km_hex(s->id, hex);
	fprintf(f, "{\"id\":\"%s\",\"label\":", hex);
	km_json_str(f, s->label);
	fprintf(f, ",\"state\":\"%s\",\"generation\":%" PRIu64
		",\"revoked_ns\":%" PRIu64 ",\"done_ns\":%" PRIu64
		",\"holders\":%" PRIu32 ",\"acked\":%" PRIu32
		",\"killed\":%" PRIu32 ",\"closed\":%" PRIu32 ",\"holder\":[",
		!s->revoked ? "live" : s->done_ns ? "revoked" : "revoking",
		s->generation, s->revoked_ns, s->done_ns, s->holders, s->acked,
		s->killed, s->closed);
	for (i = 0; i < nh; i++)
		fprintf(f, "%s{\"pid\":%d,\"uid\":%u,\"state\":\"%s\""
			",\"resident\":%" PRIu64 ",\"client_id\":%" PRIu64 "}",
			i ? "," : "", (int)h[i].pid, (unsigned int)h[i].uid,
			h[i].state, h[i].resident, h[i].client_id);
	fputs("]}", f);
}

/* One shard; a shard that vanished between the list and now is skipped. */
static int km_view_shard(FILE *f, struct orthod_kmod *km, const uint8_t *id,
			 int json, size_t *shown)
{
	struct orthod_kmod_holder *h;
	struct orthod_kmod_shard s;
	size_t nh;
	int ret;

	ret = orthod_kmod_status(km, id, &s);
	if (!ret)
		ret = orthod_kmod_holders(km, id, &h, &nh);
	if (ret)
		return ret == -ENOKEY ? 0 : ret;
	if (json) {
		if (*shown)
			fputc(',', f);
		km_json_shard(f, &s, h, nh);
	} else {
		km_text_shard(f, &s, h, nh);
	}
	(*shown)++;
	free(h);
	return 0;
}

static int km_view(FILE *f, struct orthod_kmod *km, int json)
{
	uint8_t (*ids)[ORTHOD_KMOD_ID_SIZE];
	int grace = orthod_kmod_grace_ms();
	size_t n, live, i, shown = 0;
	int ret;

	ret = orthod_kmod_list(km, &ids, &n, &live);
	if (ret)
		return ret;
	if (json)
		fprintf(f, "{\"loaded\":true,\"grace_ms\":%d,\"keys\":%zu,"
			"\"live\":%zu,\"shards\":[", grace > 0 ? grace : 0, n,
			live);
	else
		fprintf(f, "module: /dev/ortho, grace %d ms, %zu keys (%zu live)\n",
			grace > 0 ? grace : 0, n, live);
	for (i = 0; i < n && !ret; i++)
		ret = km_view_shard(f, km, ids[i], json, &shown);
	free(ids);
	if (json)
		fputs("]}", f);
	return ret;
}

int orthod_kmod_view_print(FILE *f, struct orthod_kmod *km, int json)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *m;
	int ret;

	if (!orthod_kmod_active(km)) {
		fputs(json ? "{\"loaded\":false}" : "module: not loaded\n", f);
		return 0;
	}
	/* Built in memory first, so that a failure prints nothing. */
	m = open_memstream(&buf, &len);
	if (!m)
		return -errno;
	ret = km_view(m, km, json);
	if (fclose(m) && !ret)
		ret = -ENOMEM;
	if (!ret && fwrite(buf, 1, len, f) != len)
		ret = -EIO;
	free(buf);
	return ret;
}
