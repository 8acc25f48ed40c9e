// SPDX-License-Identifier: MIT
/*
 * Choosing the backend of a context: "cpu", "cuda[:N]", or "auto", which
 * takes CUDA device 0 when the driver finds one and the CPU otherwise.
 */
#include "config.h"

#include <errno.h>
#include <string.h>

#include "backend.h"
#include "backend_cuda.h"
#include "ctx.h"
#include "log.h"

/* Return: 1 for "cuda" or "cuda:N" (N of 1 to 4 decimal digits), else 0. */
static int is_cuda_spec(const char *spec)
{
	size_t n;

	if (strncmp(spec, "cuda", 4))
		return 0;
	if (!spec[4])
		return 1;
	if (spec[4] != ':')
		return 0;
	n = strspn(spec + 5, "0123456789");
	return n >= 1 && n <= 4 && !spec[5 + n];
}

static int use(struct ortho_ctx *ctx, const struct ortho_backend *b,
	       const char *spec)
{
	int ret = b->init(ctx, spec);

	if (ret)
		return ret;
	ctx->backend = b;
	return 0;
}

static int select_auto(struct ortho_ctx *ctx)
{
#ifdef HAVE_CUDA
	int ret = use(ctx, &backend_cuda, "auto");

	if (!ret)
		return 0;
	if (ret == -ENODEV)
		olog_info(ctx, "backend auto: no usable CUDA device; using "
			  "the CPU");
	else
		olog_warn(ctx, "backend auto: the CUDA device failed to "
			  "start (%s); using the CPU", strerror(-ret));
#endif
	return use(ctx, &backend_cpu, "cpu");
}

static int select_cuda(struct ortho_ctx *ctx, const char *spec)
{
#ifdef HAVE_CUDA
	int ret = use(ctx, &backend_cuda, spec);

	if (!ret)
		return 0;
	olog_err(ctx, "backend %s: CUDA is not available (%s)", spec,
		 strerror(-ret));
	/* ortho_ctx_new() promises -ENODEV for "not available". */
	return ret == -ENOMEM ? ret : -ENODEV;
#else
	olog_err(ctx, "backend %s: this build has no CUDA support (no CUDA "
		 "toolkit when it was built)", spec);
	return -ENODEV;
#endif
}

/**
 * backend_select() - pick and initialise the backend named by @spec.
 * @ctx: the context; ->backend and ->backend_name are set on success.
 * @spec: "auto", "cpu", "cuda" or "cuda:N"; NULL means "auto".
 *
 * Return: 0, -EINVAL for an unknown name, -ENODEV when CUDA was asked for
 * and is not available (not built in, no driver, no such device), -ENOMEM.
 */
int backend_select(struct ortho_ctx *ctx, const char *spec)
{
	if (!spec || !strcmp(spec, "auto"))
		return select_auto(ctx);
	if (!strcmp(spec, "cpu"))
		return use(ctx, &backend_cpu, spec);
	if (is_cuda_spec(spec))
		return select_cuda(ctx, spec);
	olog_err(ctx, "unknown backend '%s' (auto, cpu, cuda[:N])", spec);
	return -EINVAL;
}

int backend_host_register(struct ortho_ctx *ctx, void *p, size_t len)
{
	if (!ctx->backend || !ctx->backend->host_register)
		return -EOPNOTSUPP;
	if (!p || !len)
		return -EINVAL;
	return ctx->backend->host_register(ctx, p, len);
}

void backend_host_unregister(struct ortho_ctx *ctx, void *p)
{
	if (ctx->backend && ctx->backend->host_unregister && p)
		ctx->backend->host_unregister(ctx, p);
}
