// SPDX-License-Identifier: MIT
/*
 * orthoctl status: the kernel module's view (kmod/README.md), read from
 * /dev/ortho itself, so that what the kernel attests (which process holds
 * which key, resident bytes as it reports them, revocations with their
 * acknowledgements and kills) is shown beside what orthod says.
 *
 * Text: a "module:" block; JSON: the value of "module", null without the
 * module. Reading it takes CAP_SYS_ADMIN. $ORTHO_KDEV names another device
 * ("none": none), as for the library.
 *
 * orthod's client of the module needs nothing but libc and the module's
 * uapi header; it is compiled in here as orthod and tests/test_kdev.c do.
 */
#include "../daemon/orthod-kmod.c"

#include <errno.h>
#include <string.h>

#include "orthoctl.h"

int octl_kmod_status(FILE *f, int json)
{
	const char *dev = getenv("ORTHO_KDEV");
	struct orthod_kmod km = { .fd = -1 };
	int ret;

	if (dev && !strcmp(dev, "none"))
		ret = -ENOENT;
	else
		ret = orthod_kmod_open(&km, dev);
	if (!ret) {
		ret = orthod_kmod_view_print(f, &km, json);
		orthod_kmod_close(&km);
		if (!ret)
			return 0;
	}
	if (ret == -ENOENT)
		fputs(json ? "null" : "module: not loaded\n", f);
	else if (ret == -EPERM && json)
		fputs("{\"loaded\":true,\"error\":\"needs CAP_SYS_ADMIN\"}", f);
	else if (ret == -EPERM)
		fputs("module: (needs CAP_SYS_ADMIN)\n", f);
	else if (json)
		fprintf(f, "{\"loaded\":true,\"error\":\"%s\"}", strerror(-ret));
	else
		fprintf(f, "module: (%s)\n", strerror(-ret));
	return ret;
}
