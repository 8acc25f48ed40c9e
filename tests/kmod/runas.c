// SPDX-License-Identifier: MIT
/*
 * runas UID GID[,GID...] PROGRAM [ARGS...]: run PROGRAM with that identity
 * (the first gid primary, the others supplementary). Used by init.sh to
 * run test cases unprivileged; busybox's su needs a passwd database.
 */
#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RUNAS_MAX_GROUPS 16

static int parse_id(const char *s, unsigned int *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || (*end && *end != ',') || v > 0xfffffffeUL)
		return -1;
	*out = v;
	return 0;
}

int main(int argc, char **argv)
{
	gid_t groups[RUNAS_MAX_GROUPS];
	unsigned int uid, gid, n = 0;
	const char *p;

	if (argc < 4 || parse_id(argv[1], &uid)) {
		fprintf(stderr, "usage: runas UID GID[,GID...] PROGRAM [ARGS...]\n");
		return 2;
	}
	for (p = argv[2]; p; p = strchr(p, ','), p = p ? p + 1 : NULL) {
		if (n == RUNAS_MAX_GROUPS || parse_id(p, &gid)) {
			fprintf(stderr, "runas: bad group list '%s'\n", argv[2]);
			return 2;
		}
		groups[n++] = gid;
	}
	if (setgroups(n - 1, groups + 1) ||
	    setresgid(groups[0], groups[0], groups[0]) ||
	    setresuid(uid, uid, uid)) {
		fprintf(stderr, "runas: cannot become %u:%u: %s\n", uid,
			groups[0], strerror(errno));
		return 1;
	}
	execv(argv[3], argv + 3);
	fprintf(stderr, "runas: %s: %s\n", argv[3], strerror(errno));
	return 127;
}
