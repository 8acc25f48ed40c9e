// SPDX-License-Identifier: MIT
/*
 * kget ID...: fetch each shard's key from /dev/ortho through the library's
 * client (lib/kdev.c), as whoever runs it, and print "ID ok" or "ID
 * -ERRNO" (-13 for EACCES, ...) per line; the key itself is wiped unseen.
 * Used by tests/kmod/e2e.sh to see what the kernel answers a given uid.
 * Exit 0 when every fetch got an answer, 1 on a bad id, 2 on usage, 3
 * when /dev/ortho cannot be opened.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "kdev.h"
#include "log.h"
#include "secmem.h"

/* The library logs through its context; here there is none. */
void olog(const struct ortho_ctx *ctx, int prio, const char *fmt, ...)
{
	va_list ap;

	if (prio > ORTHO_LOG_WARNING)
		return;
	va_start(ap, fmt);
	fputs("kget: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static int parse_id(const char *s, uint8_t id[KDEV_ID_SIZE])
{
	unsigned int i, v;

	if (strlen(s) != 2 * KDEV_ID_SIZE)
		return -EINVAL;
	for (i = 0; i < KDEV_ID_SIZE; i++) {
		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			return -EINVAL;
		id[i] = (uint8_t)v;
	}
	return 0;
}

int main(int argc, char **argv)
{
	uint8_t id[KDEV_ID_SIZE], *key;
	struct kdev *kd;
	int i, ret;

	if (argc < 2) {
		fprintf(stderr, "usage: kget ID...\n");
		return 2;
	}
	if (kdev_open(NULL, NULL, &kd))
		return 3;
	key = secmem_alloc(KDEV_KEY_SIZE);
	if (!key)
		return 3;
	for (i = 1; i < argc; i++) {
		if (parse_id(argv[i], id)) {
			fprintf(stderr, "kget: %s: not a shard id\n", argv[i]);
			return 1;
		}
		ret = kdev_get_key(kd, id, key, NULL, NULL);
		if (ret)
			printf("%s %d\n", argv[i], ret);
		else
			printf("%s ok\n", argv[i]);
		secmem_wipe(key, KDEV_KEY_SIZE);
	}
	secmem_free(key, KDEV_KEY_SIZE);
	kdev_close(kd);
	return 0;
}
