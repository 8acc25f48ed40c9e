// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * ortho.ko: /proc/<pid>/fdinfo/<fd> of an open /dev/ortho.
 *
 * Keys follow the DRM fdinfo convention (Documentation/gpu/drm-usage-stats
 * .rst): "ortho-<name>:\t<value>", one value per line, per-shard keys
 * suffixed with the shard id in hex. Everything except ortho-resident-*
 * is attested by the kernel (who opened the file, who fetched which key,
 * in what state the revocation left it); ortho-resident-* is what the
 * holder reported with ORTHO_IOC_RESIDENT. Pids and ids are shown as the
 * reader sees them.
 *
 *   ortho-driver:	ortho
 *   ortho-client-id:	<unique per open file>
 *   ortho-pid:	<opener's tgid>
 *   ortho-uid:	<opener's euid>
 *   ortho-gid:	<opener's egid>
 *   ortho-revoke-generation:	<module-wide>
 *   ortho-shards:	<holds>
 *   ortho-pending:	<revoked, not yet acknowledged>
 * and per held shard <id>:
 *   ortho-label-<id>:	<label>
 *   ortho-state-<id>:	held | revoked | acked | killed
 *   ortho-resident-<id>:	<bytes>
 *   ortho-holder-pid-<id>:	<tgid that fetched the key>
 *   ortho-holder-uid-<id>:	<its fsuid then>
 *   ortho-generation-<id>:	<its revocation's generation, 0 if live>
 */
#include <linux/fs.h>
#include <linux/pid.h>
#include <linux/seq_file.h>
#include <linux/uidgid.h>

#include "ortho_internal.h"

static const char *const ortho_state_names[] = {
	[ORTHO_HOLD_HELD] = "held",
	[ORTHO_HOLD_REVOKED] = "revoked",
	[ORTHO_HOLD_ACKED] = "acked",
	[ORTHO_HOLD_KILLED] = "killed",
};

static void ortho_show_hold(struct seq_file *m, const struct ortho_hold *h)
{
	struct user_namespace *ns = seq_user_ns(m);
	const struct ortho_key *k = h->key;
	const u8 *id = k->id;
	const int n = ORTHO_IOC_ID_SIZE;

	seq_printf(m, "ortho-label-%*phN:\t%s\n", n, id, k->label);
	seq_printf(m, "ortho-state-%*phN:\t%s\n", n, id,
		   ortho_state_names[h->state]);
	seq_printf(m, "ortho-resident-%*phN:\t%llu\n", n, id, h->resident);
	seq_printf(m, "ortho-holder-pid-%*phN:\t%d\n", n, id, pid_vnr(h->pid));
	seq_printf(m, "ortho-holder-uid-%*phN:\t%u\n", n, id,
		   from_kuid_munged(ns, h->uid));
	seq_printf(m, "ortho-generation-%*phN:\t%llu\n", n, id,
		   k->revoked ? k->generation : 0);
}

void ortho_show_fdinfo(struct seq_file *m, struct file *file)
{
	struct user_namespace *ns = seq_user_ns(m);
	struct ortho_file *of = file->private_data;
	const struct ortho_hold *h;
	unsigned int n = 0;

	mutex_lock(&ortho_lock);
	list_for_each_entry(h, &of->holds, f_node)
		n++;
	seq_puts(m, "ortho-driver:\tortho\n");
	seq_printf(m, "ortho-client-id:\t%llu\n", of->client_id);
	seq_printf(m, "ortho-pid:\t%d\n", pid_vnr(of->opener));
	seq_printf(m, "ortho-uid:\t%u\n", from_kuid_munged(ns, of->uid));
	seq_printf(m, "ortho-gid:\t%u\n", from_kgid_munged(ns, of->gid));
	seq_printf(m, "ortho-revoke-generation:\t%llu\n", ortho_generation());
	seq_printf(m, "ortho-shards:\t%u\n", n);
	seq_printf(m, "ortho-pending:\t%u\n", of->pending);
	list_for_each_entry(h, &of->holds, f_node)
		ortho_show_hold(m, h);
	mutex_unlock(&ortho_lock);
}
