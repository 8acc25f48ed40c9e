// SPDX-License-Identifier: MIT
/*
 * orthoctl audit [--verify] [--from N]
 *
 * Prints the daemon's audit log, or has the daemon re-read it from disk and
 * check the hash chain (exit 1 and the first bad record when it is broken).
 */
#include <getopt.h>
#include <inttypes.h>

#include "orthoctl.h"

static int print_record(void *user, uint64_t seq, const char *record)
{
	(void)user;
	(void)seq;
	return puts(record) < 0;
}

static int verify(struct ortho_admin *a)
{
	struct ortho_admin_audit_check c = { .sz = sizeof(c) };

	if (ortho_admin_audit_verify(a, &c))
		return OCTL_ERR;
	if (c.ok) {
		printf("audit log: ok, %" PRIu64 " records, the chain is intact\n",
		       c.records);
		return OCTL_OK;
	}
	printf("audit log: BROKEN at record %" PRIu64 ": %s (%" PRIu64 " good records before it)\n",
	       c.bad_record, c.reason, c.records);
	return OCTL_ERR;
}

int cmd_audit(struct octl *o, int argc, char **argv)
{
	static const struct option lo[] = {
		{ "verify", no_argument, NULL, 'v' },
		{ "from", required_argument, NULL, 'f' },
		{ NULL, 0, NULL, 0 },
	};
	struct ortho_admin *a;
	uint32_t from = 1;
	int ch, check = 0, ret;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		if (ch == 'v') {
			check = 1;
		} else if (ch == 'f' && !octl_parse_u32(optarg, 1, UINT32_MAX,
							&from)) {
			continue;
		} else {
			fprintf(stderr, "usage: orthoctl audit [--verify] [--from N]\n");
			return OCTL_USAGE;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "usage: orthoctl audit [--verify] [--from N]\n");
		return OCTL_USAGE;
	}
	if (octl_connect(o, &a))
		return OCTL_ERR;
	if (check) {
		ret = verify(a);
	} else {
		ret = ortho_admin_audit_read(a, from, print_record, NULL);
		ret = ret ? OCTL_ERR : OCTL_OK;
	}
	ortho_admin_close(a);
	return ret;
}
