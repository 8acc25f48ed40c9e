// SPDX-License-Identifier: MIT
/*
 * The CPU backend: Base stays in the mapped base.orb, Ortho in secmem
 * plaintext; the fused op runs on the context's thread pool.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "ctx.h"
#include "log.h"

static int cpu_init(struct ortho_ctx *ctx, const char *spec)
{
	snprintf(ctx->backend_name, sizeof(ctx->backend_name), "cpu");
	return 0;
}

static int cpu_base_upload(struct ortho_ctx *ctx, struct backend_q8 *t)
{
	t->dev = NULL;
	return 0;
}

static void cpu_base_release(struct ortho_ctx *ctx, struct backend_q8 *t)
{
}

static int cpu_ortho_upload(struct ortho_ctx *ctx, struct backend_ortho *o)
{
	o->dev = NULL;
	return 0;
}

/* The bytes live in the shard's plaintext, which its owner wipes. */
static void cpu_ortho_release(struct ortho_ctx *ctx, struct backend_ortho *o)
{
}

static int cpu_linear(struct ortho_ctx *ctx, const struct backend_q8 *t,
		      const struct backend_ortho *const *o, unsigned int no,
		      const float *x, float *y, uint32_t ntok)
{
	const struct ok_ortho *ho[64];
	unsigned int i;

	if (no > 64)
		return -E2BIG;
	for (i = 0; i < no; i++)
		ho[i] = &o[i]->host;
	ok_fused(ctx->pool, &t->host, ho, no, x, y, ntok);
	return 0;
}

const struct ortho_backend backend_cpu = {
	.name = "cpu",
	.init = cpu_init,
	.base_upload = cpu_base_upload,
	.base_release = cpu_base_release,
	.ortho_upload = cpu_ortho_upload,
	.ortho_release = cpu_ortho_release,
	.linear = cpu_linear,
	/* No host_register: the op reads the host bytes where they are. */
};
