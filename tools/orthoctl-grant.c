// SPDX-License-Identifier: MIT
/*
 * orthoctl grant | deny (--label L | --shard ID) (--uid U | --gid G)
 * orthoctl list [--json]
 *
 * A deny rule wins over any grant; with no grant the key is refused.
 */
#include <getopt.h>
#include <string.h>

#include "orthoctl.h"

static int rule_usage(const char *verb)
{
	fprintf(stderr, "usage: orthoctl %s (--label L | --shard ID) (--uid U | --gid G)\n",
		verb);
	return OCTL_USAGE;
}

static int parse_rule(int argc, char **argv, struct ortho_admin_rule *r)
{
	static const struct option lo[] = {
		{ "label", required_argument, NULL, 'l' },
		{ "shard", required_argument, NULL, 's' },
		{ "uid", required_argument, NULL, 'u' },
		{ "gid", required_argument, NULL, 'g' },
		{ NULL, 0, NULL, 0 },
	};
	int ch, nsel = 0, nwho = 0;

	memset(r, 0, sizeof(*r));
	r->sz = sizeof(*r);
	optind = 1;
	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (ch) {
		case 'l':
		case 's':
			if (strlen(optarg) >= sizeof(r->label)) {
				fprintf(stderr, "orthoctl: %s: too long\n", optarg);
				return -1;
			}
			strcpy(ch == 'l' ? r->label : r->shard, optarg);
			nsel++;
			break;
		case 'u':
		case 'g':
			r->principal = ch == 'u' ? ORTHO_ADMIN_UID : ORTHO_ADMIN_GID;
			if ((ch == 'u' ? octl_parse_uid : octl_parse_gid)(optarg, &r->id)) {
				fprintf(stderr, "orthoctl: %s: no such %s\n", optarg,
					ch == 'u' ? "user" : "group");
				return -1;
			}
			nwho++;
			break;
		default:
			return -1;
		}
	}
	if (optind != argc || nsel != 1 || nwho != 1)
		return -1;
	if (r->shard[0] && strlen(r->shard) != 32) {
		fprintf(stderr, "orthoctl: --shard: 32 hex digits\n");
		return -1;
	}
	return 0;
}

static int set_rule(struct octl *o, int argc, char **argv, int allow)
{
	const char *verb = allow ? "grant" : "deny";
	struct ortho_admin_rule r;
	struct ortho_admin *a;
	int ret;

	if (parse_rule(argc, argv, &r))
		return rule_usage(verb);
	if (octl_connect(o, &a))
		return OCTL_ERR;
	ret = allow ? ortho_admin_grant(a, &r) : ortho_admin_deny(a, &r);
	ortho_admin_close(a);
	if (ret)
		return OCTL_ERR;
	printf("%s %s %u %s %s\n", allow ? "granted" : "denied",
	       r.principal == ORTHO_ADMIN_UID ? "uid" : "gid", r.id,
	       r.shard[0] ? "shard" : "label", r.shard[0] ? r.shard : r.label);
	return OCTL_OK;
}

int cmd_grant(struct octl *o, int argc, char **argv)
{
	return set_rule(o, argc, argv, 1);
}

int cmd_deny(struct octl *o, int argc, char **argv)
{
	return set_rule(o, argc, argv, 0);
}

static void list_text(const struct ortho_admin_status *st)
{
	unsigned int i, n = ortho_admin_status_shard_count(st);

	printf("shards: %u\n", n);
	for (i = 0; i < n; i++) {
		struct ortho_admin_shard s = { .sz = sizeof(s) };

		ortho_admin_status_shard(st, i, &s);
		printf("  %s  %-8s layer %-4u holders %-3u %s\n", s.id,
		       state_name(s.state), s.layer, s.holders, s.label);
	}
	n = ortho_admin_status_rule_count(st);
	printf("rules: %u\n", n);
	for (i = 0; i < n; i++) {
		struct ortho_admin_rule r = { .sz = sizeof(r) };

		ortho_admin_status_rule(st, i, &r);
		printf("  %-5s %s %-6u %s %s\n", r.allow ? "allow" : "deny",
		       r.principal == ORTHO_ADMIN_UID ? "uid" : "gid", r.id,
		       r.shard[0] ? "shard" : "label",
		       r.shard[0] ? r.shard : r.label);
	}
}

static void list_json(const struct ortho_admin_status *st)
{
	unsigned int i, n = ortho_admin_status_shard_count(st);

	printf("{\"schema\":\"ortho-list/1\",\"shards\":[");
	for (i = 0; i < n; i++) {
		struct ortho_admin_shard s = { .sz = sizeof(s) };

		ortho_admin_status_shard(st, i, &s);
		printf("%s{\"id\":\"%s\",\"label\":", i ? "," : "", s.id);
		json_str(stdout, s.label);
		printf(",\"layer\":%u,\"state\":\"%s\",\"holders\":%u}",
		       s.layer, state_name(s.state), s.holders);
	}
	printf("],\"rules\":[");
	n = ortho_admin_status_rule_count(st);
	for (i = 0; i < n; i++) {
		struct ortho_admin_rule r = { .sz = sizeof(r) };

		ortho_admin_status_rule(st, i, &r);
		printf("%s{\"%s\":", i ? "," : "", r.shard[0] ? "shard" : "label");
		json_str(stdout, r.shard[0] ? r.shard : r.label);
		printf(",\"%s\":%u,\"allow\":%s}",
		       r.principal == ORTHO_ADMIN_UID ? "uid" : "gid", r.id,
		       r.allow ? "true" : "false");
	}
	printf("]}\n");
}

int cmd_list(struct octl *o, int argc, char **argv)
{
	struct ortho_admin_status *st;
	struct ortho_admin *a;
	int json = 0, ret;

	if (argc == 2 && !strcmp(argv[1], "--json")) {
		json = 1;
	} else if (argc != 1) {
		fprintf(stderr, "usage: orthoctl list [--json]\n");
		return OCTL_USAGE;
	}
	if (octl_connect(o, &a))
		return OCTL_ERR;
	ret = ortho_admin_status_get(a, &st);
	ortho_admin_close(a);
	if (ret)
		return OCTL_ERR;
	if (json)
		list_json(st);
	else
		list_text(st);
	ortho_admin_status_free(st);
	return OCTL_OK;
}
