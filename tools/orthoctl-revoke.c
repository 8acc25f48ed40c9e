// SPDX-License-Identifier: MIT
/*
 * orthoctl revoke (ID | --label L) [--timeout-ms N] [--json]
 *
 * Exit 0 only when every holder acknowledged the wipe; 3 when some were
 * busy at the deadline, exited without acknowledging, or were killed by the
 * kernel module after its grace period (each is named).
 */
#include <errno.h>
#include <getopt.h>
#include <string.h>

#include "orthoctl.h"

static const char *outcome_name(uint32_t o)
{
	switch (o) {
	case ORTHO_ADMIN_COMPLETE:
		return "complete";
	case ORTHO_ADMIN_BUSY:
		return "busy";
	case ORTHO_ADMIN_GONE:
		return "gone";
	default:
		return "?";
	}
}

static void holder_text(const struct ortho_admin_holder *h)
{
	printf("holder:\tpid %u uid %u comm %s shard %s: %s", h->pid, h->uid,
	       h->comm, h->shard, outcome_name(h->outcome));
	if (h->outcome == ORTHO_ADMIN_COMPLETE)
		printf(" (acknowledged after %.3f ms)", h->ack_us / 1000.0);
	else if (h->outcome == ORTHO_ADMIN_BUSY && h->error == -ENOTCONN)
		printf(" (hung up without acknowledging; still running)");
	else if (h->outcome == ORTHO_ADMIN_BUSY && h->error)
		printf(" (its wipe failed: %s)", ortho_strerror(h->error));
	else if (h->outcome == ORTHO_ADMIN_BUSY)
		printf(" (no acknowledgement by the deadline)");
	else if (h->error == -ETIMEDOUT)
		printf(" (killed by the kernel module after its grace period)");
	else
		printf(" (exited without acknowledging)");
	putchar('\n');
}

static void print_text(const struct ortho_admin_revoke *r,
		       const struct ortho_admin_revoke_info *in)
{
	unsigned int i;

	printf("revoke:\t%llu\n", (unsigned long long)in->revoke_id);
	printf("elapsed-ms:\t%.3f\n", in->elapsed_us / 1000.0);
	for (i = 0; i < in->shards; i++) {
		struct ortho_admin_shard s = { .sz = sizeof(s) };

		ortho_admin_revoke_shard(r, i, &s);
		printf("shard:\t%s %s %s\n", s.id, s.label, state_name(s.state));
	}
	printf("holders:\t%u (complete %u, busy %u, gone %u)\n", in->holders,
	       in->complete, in->busy, in->gone);
	for (i = 0; i < in->holders; i++) {
		struct ortho_admin_holder h = { .sz = sizeof(h) };

		ortho_admin_revoke_holder(r, i, &h);
		holder_text(&h);
	}
}

static void print_json(const struct ortho_admin_revoke *r,
		       const struct ortho_admin_revoke_info *in)
{
	unsigned int i;

	printf("{\"schema\":\"ortho-revoke/1\",\"revoke\":%llu,\"elapsed_us\":%llu,\"shards\":[",
	       (unsigned long long)in->revoke_id,
	       (unsigned long long)in->elapsed_us);
	for (i = 0; i < in->shards; i++) {
		struct ortho_admin_shard s = { .sz = sizeof(s) };

		ortho_admin_revoke_shard(r, i, &s);
		printf("%s{\"id\":\"%s\",\"label\":", i ? "," : "", s.id);
		json_str(stdout, s.label);
		printf(",\"state\":\"%s\"}", state_name(s.state));
	}
	printf("],\"holders\":[");
	for (i = 0; i < in->holders; i++) {
		struct ortho_admin_holder h = { .sz = sizeof(h) };

		ortho_admin_revoke_holder(r, i, &h);
		printf("%s{\"pid\":%u,\"uid\":%u,\"comm\":", i ? "," : "",
		       h.pid, h.uid);
		json_str(stdout, h.comm);
		printf(",\"shard\":\"%s\",\"outcome\":\"%s\",\"error\":%d,\"ack_us\":%llu}",
		       h.shard, outcome_name(h.outcome), h.error,
		       (unsigned long long)h.ack_us);
	}
	printf("]}\n");
}

/* Name every holder that did not acknowledge, on stderr. */
static void name_laggards(const struct ortho_admin_revoke *r,
			  const struct ortho_admin_revoke_info *in)
{
	unsigned int i;

	fprintf(stderr, "orthoctl: revoke: %u of %u holders did not acknowledge:\n",
		in->busy + in->gone, in->holders);
	for (i = 0; i < in->holders; i++) {
		struct ortho_admin_holder h = { .sz = sizeof(h) };

		ortho_admin_revoke_holder(r, i, &h);
		if (h.outcome != ORTHO_ADMIN_COMPLETE)
			fprintf(stderr, "  %s%s: pid %u uid %u comm %s shard %s\n",
				outcome_name(h.outcome),
				h.outcome == ORTHO_ADMIN_GONE &&
				h.error == -ETIMEDOUT ? " (killed)" : "",
				h.pid, h.uid, h.comm, h.shard);
	}
}

static int revoke_usage(void)
{
	fprintf(stderr, "usage: orthoctl revoke (ID | --label L) [--timeout-ms N] [--json]\n");
	return OCTL_USAGE;
}

int cmd_revoke(struct octl *o, int argc, char **argv)
{
	static const struct option lo[] = {
		{ "label", required_argument, NULL, 'l' },
		{ "timeout-ms", required_argument, NULL, 't' },
		{ "json", no_argument, NULL, 'j' },
		{ NULL, 0, NULL, 0 },
	};
	struct ortho_admin_revoke_opts opts = { .sz = sizeof(opts),
						.timeout_ms = 5000 };
	struct ortho_admin_revoke_info in = { .sz = sizeof(in) };
	struct ortho_admin_revoke *r;
	struct ortho_admin *a;
	int ch, json = 0, ret;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (ch) {
		case 'l':
			opts.label = optarg;
			break;
		case 't':
			if (octl_parse_u32(optarg, 1, 600000, &opts.timeout_ms)) {
				fprintf(stderr, "orthoctl: --timeout-ms: 1 to 600000\n");
				return OCTL_USAGE;
			}
			break;
		case 'j':
			json = 1;
			break;
		default:
			return revoke_usage();
		}
	}
	if (optind < argc)
		opts.shard = argv[optind++];
	if (optind != argc || !opts.shard == !opts.label)
		return revoke_usage();
	if (octl_connect(o, &a))
		return OCTL_ERR;
	ret = ortho_admin_revoke(a, &opts, &r);
	ortho_admin_close(a);
	if (ret)
		return OCTL_ERR;
	ortho_admin_revoke_info_get(r, &in);
	if (json)
		print_json(r, &in);
	else
		print_text(r, &in);
	ret = OCTL_OK;
	if (in.busy || in.gone) {
		name_laggards(r, &in);
		ret = OCTL_HOLDERS;
	}
	ortho_admin_revoke_free(r);
	return ret;
}
