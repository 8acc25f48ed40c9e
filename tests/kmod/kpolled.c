// SPDX-License-Identifier: MIT
/*
 * kpolled MODEL_DIR AUTHORITY: a library client in polled mode
 * (ORTHO_CTX_EVENTS_POLLED), for tests/kmod/orthod_e2e.sh. It opens the
 * model with keys from the authority (and /dev/ortho), prints "ready N"
 * with N shards resident, then only polls ortho_ctx_get_event_fd() and
 * calls ortho_ctx_process_events() when it is readable: it runs no op, so
 * a revocation is handled only when the event fd says so. Each shard that
 * becomes REVOKED is printed once ("revoked ID"). With the module, the
 * event fd must fire for the kernel's POLLPRI too, also once orthod is
 * gone, or the kernel kills this process after its grace period.
 * Runs until SIGTERM, or 600 s.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "ortho.h"

#define KP_MAX_SHARDS 64u

int main(int argc, char **argv)
{
	struct ortho_ctx_opts co = { .sz = sizeof(co) };
	struct ortho_shard_info si;
	struct ortho_model *m;
	struct ortho_ctx *ctx;
	char seen[KP_MAX_SHARDS] = { 0 };
	unsigned int i, n, resident = 0;
	time_t end = time(NULL) + 600;
	struct timespec pause = { 0, 200000000 };
	struct pollfd p;
	int ret;

	if (argc != 3) {
		fprintf(stderr, "usage: kpolled MODEL_DIR AUTHORITY\n");
		return 2;
	}
	co.authority = argv[2];
	co.flags = ORTHO_CTX_EVENTS_POLLED | ORTHO_CTX_AUTHORITY_REQUIRED;
	ret = ortho_ctx_new(&co, &ctx);
	if (!ret)
		ret = ortho_model_open(ctx, argv[1], NULL, &m);
	if (ret) {
		fprintf(stderr, "kpolled: %s\n", ortho_strerror(ret));
		return 1;
	}
	n = ortho_model_shard_count(m);
	for (i = 0; i < n && i < KP_MAX_SHARDS; i++) {
		si.sz = sizeof(si);
		if (!ortho_shard_info_get(m, i, &si) &&
		    si.state == ORTHO_SHARD_RESIDENT)
			resident++;
	}
	p.fd = ortho_ctx_get_event_fd(ctx);
	p.events = POLLIN;
	if (p.fd < 0) {
		fprintf(stderr, "kpolled: event fd: %s\n", ortho_strerror(p.fd));
		return 1;
	}
	printf("ready %u\n", resident);
	fflush(stdout);
	while (time(NULL) < end) {
		ret = poll(&p, 1, 1000);
		if (ret <= 0)
			continue;
		ret = ortho_ctx_process_events(ctx);
		printf("events %d\n", ret);
		for (i = 0; i < n && i < KP_MAX_SHARDS; i++) {
			si.sz = sizeof(si);
			if (seen[i] || ortho_shard_info_get(m, i, &si) ||
			    si.state != ORTHO_SHARD_REVOKED)
				continue;
			seen[i] = 1;
			printf("revoked %s\n", si.id);
		}
		fflush(stdout);
		/* Handled, the fd must not stay readable (no busy loop). */
		if (ret <= 0 && poll(&p, 1, 0) == 1) {
			printf("still readable after process_events: %d\n", ret);
			fflush(stdout);
			nanosleep(&pause, NULL);
		}
	}
	ortho_model_close(m);
	ortho_ctx_free(ctx);
	return 0;
}
