// SPDX-License-Identifier: MIT
/*
 * orthod with the kernel module loaded (kmod/README.md, "Using the module
 * with orthod"): the keys go into /dev/ortho and leave orthod's memory.
 *
 * At start, and after each import, every active shard's key is put into
 * the kernel with the uids and gids its rules admit and deny
 * (policy_kernel()); then orthod wipes its copy (ks_hand_over()) and
 * answers GET_KEY for it with -EREMOTE: the client fetches it from
 * /dev/ortho, where the kernel checks the policy at every fetch. A key
 * whose policy does not fit the module's lists, or that the module
 * refuses, stays with orthod as without the module. Grants and denies
 * replace the kernel's policy of every shard they name; revocation goes
 * through the kernel too (orthod-krevoke.c).
 *
 * The open file pins the module while orthod runs. Keys stay in the
 * kernel when orthod stops: a restarted orthod finds them there ("already
 * there") and refreshes their policy; after the module was reloaded it
 * puts them back from the keystore.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "orthod.h"

struct kput_tally {
	size_t added, existed, kept, revoked;
};

/* The kernel had revoked @s behind orthod's back: revoke it here too. */
static void mark_revoked(struct orthod *d, struct shard *s)
{
	char hex[33];
	int ret;

	proto_id_hex(s->id, hex);
	ret = ks_mark_revoking(&d->ks, &s, 1);
	if (!ret && ks_set_revoked(&d->ks, &s, 1))
		ret = ks_sync(&d->ks);
	if (!ret)
		ret = ks_destroy_old_kek(&d->ks);
	dlog(ret ? LOG_ERR : LOG_WARNING,
	     "shard %s: the kernel module has revoked it: revoked here too%s%s",
	     hex, ret ? ": " : "", ret ? strerror(-ret) : "");
	audit_log(&d->audit, "kernel-revoked",
		  "shard=%s note=revoked_in_the_kernel_module error=%d", hex,
		  ret);
}

/* Return: 1 when the kernel holds @s's key now, 0 when orthod keeps it. */
static int put_one(struct orthod *d, struct shard *s, struct kput_tally *t)
{
	struct orthod_kmod_policy p;
	char hex[33];
	int ret, existed = 0;

	proto_id_hex(s->id, hex);
	ret = policy_kernel(&d->pol, s, NULL, &p);
	if (ret) {
		dlog(LOG_WARNING, "shard %s: its rules name more than %u uids, gids, denied uids or denied gids: orthod keeps its key",
		     hex, ORTHOD_KMOD_POLICY_MAX);
		t->kept++;
		return 0;
	}
	ret = orthod_kmod_add(&d->km, s->id, s->key, s->label, &p, &existed);
	if (ret == -EKEYREVOKED) {
		mark_revoked(d, s);
		t->revoked++;
		return 0;
	}
	if (ret) {
		dlog(LOG_WARNING, "shard %s: the kernel module refused it (%s): orthod keeps its key",
		     hex, strerror(-ret));
		t->kept++;
		return 0;
	}
	ks_hand_over(&d->ks, s);
	if (existed)
		t->existed++;
	else
		t->added++;
	return 1;
}

/*
 * A shard the keystore has revoked but the kernel still hands out (orthod
 * stopped between its durable mark and the kernel's revocation): revoke
 * it there now.
 */
static void sync_revoked(struct orthod *d)
{
	uint8_t (*ids)[ORTHOD_KMOD_ID_SIZE];
	struct orthod_kmod_shard ks;
	size_t n, i;
	char hex[33];
	int ret;

	if (orthod_kmod_list(&d->km, &ids, &n, NULL))
		return;
	for (i = 0; i < n; i++) {
		struct shard *s = ks_find(&d->ks, ids[i]);

		if (!s || s->state == PROTO_SHARD_ACTIVE)
			continue;
		s->in_kernel = 1;
		if (orthod_kmod_status(&d->km, ids[i], &ks) || ks.revoked)
			continue;
		ret = orthod_kmod_revoke(&d->km, ids[i], 0, &ks);
		proto_id_hex(ids[i], hex);
		dlog(ret ? LOG_ERR : LOG_NOTICE,
		     "shard %s: revoked here, live in the kernel module: revoked there%s%s",
		     hex, ret ? ": " : "", ret ? strerror(-ret) : "");
		audit_log(&d->audit, "kernel-recovered",
			  "shard=%s holders=%u generation=%" PRIu64 " error=%d",
			  hex, ks.holders, ks.generation, ret);
	}
	free(ids);
}

void kernel_start(struct orthod *d, const char *path)
{
	const char *dev = path && *path ? path : ORTHOD_KMOD_PATH;
	struct kput_tally t = { 0 };
	size_t i, in = 0;
	int ret, grace;

	d->km.fd = -1;
	if (path && !strcmp(path, "none"))
		return;
	ret = orthod_kmod_open(&d->km, dev);
	if (ret == -ENOENT || ret == -EPERM) {
		dlog(LOG_INFO, "%s: %s: orthod keeps the keys", dev,
		     ret == -ENOENT ? "the kernel module is not loaded" :
		     "no CAP_SYS_ADMIN for the kernel module");
		return;
	}
	if (ret) {
		dlog(LOG_WARNING, "%s: %s: orthod keeps the keys", dev,
		     strerror(-ret));
		return;
	}
	d->kmod_path = dev;
	sync_revoked(d);
	for (i = 0; i < d->ks.n; i++)
		if (d->ks.v[i].state == PROTO_SHARD_ACTIVE)
			in += put_one(d, &d->ks.v[i], &t);
	grace = orthod_kmod_grace_ms();
	dlog(LOG_INFO, "%s: the kernel module holds %zu keys (%zu put in, %zu already there), orthod %zu; grace %d ms",
	     dev, in, t.added, t.existed, t.kept, grace);
	audit_log(&d->audit, "kernel-start",
		  "device=%s keys=%zu added=%zu existed=%zu kept=%zu revoked=%zu grace_ms=%d",
		  dev, in, t.added, t.existed, t.kept, t.revoked, grace);
}

void kernel_stop(struct orthod *d)
{
	orthod_kmod_close(&d->km);
}

void kernel_import(struct orthod *d, size_t from)
{
	struct kput_tally t = { 0 };
	size_t i;

	if (!orthod_kmod_active(&d->km))
		return;
	for (i = from; i < d->ks.n; i++)
		if (d->ks.v[i].state == PROTO_SHARD_ACTIVE)
			put_one(d, &d->ks.v[i], &t);
}

int kernel_rule_check(struct orthod *d, const struct proto_rule *r,
		      char hex[33])
{
	struct orthod_kmod_policy p;
	size_t i;

	if (!orthod_kmod_active(&d->km))
		return 0;
	for (i = 0; i < d->ks.n; i++) {
		const struct shard *s = &d->ks.v[i];

		if (!s->in_kernel || s->state != PROTO_SHARD_ACTIVE ||
		    !sel_match(&r->sel, s))
			continue;
		if (policy_kernel(&d->pol, s, r, &p)) {
			proto_id_hex(s->id, hex);
			return -E2BIG;
		}
	}
	return 0;
}

size_t kernel_rule_apply(struct orthod *d, const struct proto_rule *r)
{
	struct orthod_kmod_policy p;
	size_t i, n = 0;
	char hex[33];
	int ret;

	if (!orthod_kmod_active(&d->km))
		return 0;
	for (i = 0; i < d->ks.n; i++) {
		struct shard *s = &d->ks.v[i];

		if (!s->in_kernel || s->state != PROTO_SHARD_ACTIVE ||
		    !sel_match(&r->sel, s))
			continue;
		ret = policy_kernel(&d->pol, s, NULL, &p);
		if (!ret)
			ret = orthod_kmod_set_policy(&d->km, s->id, &p);
		if (ret == -EKEYREVOKED) {
			mark_revoked(d, s);
			continue;
		}
		if (ret) {
			/* kernel_rule_check() said it fits: not expected. */
			proto_id_hex(s->id, hex);
			dlog(LOG_ERR, "shard %s: the kernel module's policy could not be replaced: %s",
			     hex, strerror(-ret));
			continue;
		}
		n++;
	}
	return n;
}
