// SPDX-License-Identifier: MIT
/*
 * orthoctl key import KEYFILE [--keep]
 *
 * The keys go to the daemon's keystore; once it holds them durably the
 * file is overwritten and removed, so the clear keys live in one place.
 */
#include <getopt.h>
#include <string.h>

#include "orthoctl.h"

static int key_import(struct octl *o, const char *path, int keep)
{
	struct ortho_admin_import_result res = { .sz = sizeof(res) };
	struct ortho_admin *a;
	int ret;

	ret = octl_connect(o, &a);
	if (ret)
		return OCTL_ERR;
	ret = ortho_admin_import_keys(a, path,
				      keep ? 0 : ORTHO_ADMIN_IMPORT_WIPE, &res);
	ortho_admin_close(a);
	if (ret && !res.added && !res.present) {
		octl_fail("key import", path, ret);
		return OCTL_ERR;
	}
	printf("imported %u key%s from %s: %u new, %u already held\n",
	       res.keys, res.keys == 1 ? "" : "s", path, res.added,
	       res.present);
	if (res.wiped)
		printf("%s: overwritten and removed\n", path);
	if (ret) {
		octl_fail("key import", path, ret);
		return OCTL_ERR;
	}
	return OCTL_OK;
}

int cmd_key(struct octl *o, int argc, char **argv)
{
	static const struct option lo[] = {
		{ "keep", no_argument, NULL, 'k' },
		{ NULL, 0, NULL, 0 },
	};
	int keep = 0, ch;

	if (argc < 2 || strcmp(argv[1], "import")) {
		fprintf(stderr, "usage: orthoctl key import KEYFILE [--keep]\n");
		return OCTL_USAGE;
	}
	argc--;
	argv++;
	optind = 1;
	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		if (ch != 'k') {
			fprintf(stderr, "usage: orthoctl key import KEYFILE [--keep]\n");
			return OCTL_USAGE;
		}
		keep = 1;
	}
	if (optind != argc - 1) {
		fprintf(stderr, "usage: orthoctl key import KEYFILE [--keep]\n");
		return OCTL_USAGE;
	}
	return key_import(o, argv[optind], keep);
}
