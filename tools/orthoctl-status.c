// SPDX-License-Identifier: MIT
/*
 * orthoctl status [--json]
 *
 * Text is "key:\tvalue" lines in the style of DRM fdinfo: the daemon, then
 * a block per shard, then a block per connected client with one
 * "client-resident" line per shard and device it reports; then the kernel
 * module's view under "module:" (orthoctl-kmod.c), "module: not loaded"
 * without it. JSON follows the schema "ortho-status/1", with "module"
 * (null without the module).
 */
#include <string.h>

#include "orthoctl.h"

static void daemon_text(const struct ortho_admin_daemon *d,
			const struct ortho_admin_status *st)
{
	char t[40];

	iso_time(t, sizeof(t), d->start_ns);
	printf("orthod-pid:\t%u\n", d->pid);
	printf("orthod-protocol:\t%u\n", d->protocol);
	printf("orthod-started:\t%s\n", t);
	printf("orthod-uptime-s:\t%llu\n",
	       (unsigned long long)((d->now_ns - d->start_ns) / 1000000000ull));
	printf("orthod-connections:\t%u\n", d->connections);
	printf("ortho-shards:\t%u\n", ortho_admin_status_shard_count(st));
	printf("ortho-clients:\t%u\n", ortho_admin_status_client_count(st));
	if (d->truncated)
		printf("ortho-truncated:\tyes\n");
}

static void shards_text(const struct ortho_admin_status *st)
{
	unsigned int i, n = ortho_admin_status_shard_count(st);
	char t[40];

	for (i = 0; i < n; i++) {
		struct ortho_admin_shard s = { .sz = sizeof(s) };

		ortho_admin_status_shard(st, i, &s);
		printf("\nshard:\t%s\n", s.id);
		printf("shard-label:\t%s\n", s.label);
		printf("shard-layer:\t%u\n", s.layer);
		printf("shard-state:\t%s\n", state_name(s.state));
		printf("shard-holders:\t%u\n", s.holders);
		iso_time(t, sizeof(t), s.imported_ns);
		printf("shard-imported:\t%s\n", t);
		if (s.revoked_ns) {
			iso_time(t, sizeof(t), s.revoked_ns);
			printf("shard-revoked:\t%s\n", t);
		}
	}
}

static void clients_text(const struct ortho_admin_status *st)
{
	unsigned int i, j, n = ortho_admin_status_client_count(st);
	char t[40];

	for (i = 0; i < n; i++) {
		struct ortho_admin_client c = { .sz = sizeof(c) };

		ortho_admin_status_client(st, i, &c);
		printf("\nclient-pid:\t%u\n", c.pid);
		printf("client-uid:\t%u\n", c.uid);
		printf("client-gid:\t%u\n", c.gid);
		printf("client-comm:\t%s\n", c.comm);
		iso_time(t, sizeof(t), c.connected_ns);
		printf("client-connected:\t%s\n", t);
		printf("client-keys:\t%u\n", c.keys);
		for (j = 0; j < c.resident; j++) {
			struct ortho_admin_resident r = { .sz = sizeof(r) };

			ortho_admin_status_resident(st, i, j, &r);
			iso_time(t, sizeof(t), r.since_ns);
			printf("client-resident:\t%s %s %s %llu bytes since %s\n",
			       r.shard, r.label[0] ? r.label : "-", r.device,
			       (unsigned long long)r.bytes, t);
		}
	}
}

static void shards_json(const struct ortho_admin_status *st)
{
	unsigned int i, n = ortho_admin_status_shard_count(st);
	char t[40];

	printf(",\"shards\":[");
	for (i = 0; i < n; i++) {
		struct ortho_admin_shard s = { .sz = sizeof(s) };

		ortho_admin_status_shard(st, i, &s);
		printf("%s{\"id\":\"%s\",\"label\":", i ? "," : "", s.id);
		json_str(stdout, s.label);
		iso_time(t, sizeof(t), s.imported_ns);
		printf(",\"layer\":%u,\"state\":\"%s\",\"holders\":%u,\"imported\":\"%s\"",
		       s.layer, state_name(s.state), s.holders, t);
		if (s.revoked_ns) {
			iso_time(t, sizeof(t), s.revoked_ns);
			printf(",\"revoked\":\"%s\"", t);
		}
		putchar('}');
	}
	putchar(']');
}

static void resident_json(const struct ortho_admin_status *st, unsigned int i,
			  unsigned int n)
{
	unsigned int j;
	char t[40];

	printf(",\"resident\":[");
	for (j = 0; j < n; j++) {
		struct ortho_admin_resident r = { .sz = sizeof(r) };

		ortho_admin_status_resident(st, i, j, &r);
		iso_time(t, sizeof(t), r.since_ns);
		printf("%s{\"shard\":\"%s\",\"label\":", j ? "," : "", r.shard);
		json_str(stdout, r.label);
		printf(",\"device\":");
		json_str(stdout, r.device);
		printf(",\"bytes\":%llu,\"since\":\"%s\",\"since_ns\":%llu}",
		       (unsigned long long)r.bytes, t,
		       (unsigned long long)r.since_ns);
	}
	putchar(']');
}

static void clients_json(const struct ortho_admin_status *st)
{
	unsigned int i, n = ortho_admin_status_client_count(st);
	char t[40];

	printf(",\"clients\":[");
	for (i = 0; i < n; i++) {
		struct ortho_admin_client c = { .sz = sizeof(c) };

		ortho_admin_status_client(st, i, &c);
		iso_time(t, sizeof(t), c.connected_ns);
		printf("%s{\"pid\":%u,\"uid\":%u,\"gid\":%u,\"comm\":",
		       i ? "," : "", c.pid, c.uid, c.gid);
		json_str(stdout, c.comm);
		printf(",\"connected\":\"%s\",\"keys\":%u", t, c.keys);
		resident_json(st, i, c.resident);
		putchar('}');
	}
	putchar(']');
}

static void status_json(const struct ortho_admin_daemon *d,
			const struct ortho_admin_status *st)
{
	char t[40];

	iso_time(t, sizeof(t), d->start_ns);
	printf("{\"schema\":\"ortho-status/1\",\"daemon\":{\"pid\":%u,\"protocol\":%u,\"started\":\"%s\",\"connections\":%u,\"truncated\":%s}",
	       d->pid, d->protocol, t, d->connections,
	       d->truncated ? "true" : "false");
	shards_json(st);
	clients_json(st);
	printf(",\"module\":");
	octl_kmod_status(stdout, 1);
	printf("}\n");
}

int cmd_status(struct octl *o, int argc, char **argv)
{
	struct ortho_admin_daemon d = { .sz = sizeof(d) };
	struct ortho_admin_status *st;
	struct ortho_admin *a;
	int json = 0, ret;

	if (argc == 2 && !strcmp(argv[1], "--json")) {
		json = 1;
	} else if (argc != 1) {
		fprintf(stderr, "usage: orthoctl status [--json]\n");
		return OCTL_USAGE;
	}
	if (octl_connect(o, &a))
		return OCTL_ERR;
	ret = ortho_admin_status_get(a, &st);
	ortho_admin_close(a);
	if (ret)
		return OCTL_ERR;
	ortho_admin_status_daemon(st, &d);
	if (json) {
		status_json(&d, st);
	} else {
		daemon_text(&d, st);
		shards_text(st);
		clients_text(st);
		putchar('\n');
		octl_kmod_status(stdout, 0);
	}
	ortho_admin_status_free(st);
	return OCTL_OK;
}
