// SPDX-License-Identifier: MIT
/*
 * The library context: options, the log callback, the compute pool, the
 * backend, the key authority (lib/ctx_authority.c), and what the models'
 * residency managers share: the Ortho budget and the stream. Locking:
 * lib/ctx.h.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "ctx.h"
#include "kernels.h"
#include "log.h"
#include "backend.h"
#include "residency.h"
#include "stream.h"

/* Fields of @opts that lie within its declared size, the rest zero. */
static void opts_copy(void *dst, size_t dst_sz, const void *src)
{
	size_t n;

	memset(dst, 0, dst_sz);
	if (!src)
		return;
	n = *(const size_t *)src;
	if (n > dst_sz)
		n = dst_sz;
	memcpy(dst, src, n);
}

static int env_log_level(void)
{
	const char *s = getenv("ORTHO_LOG");

	if (!s || !*s)
		return 0;
	if (!strcasecmp(s, "err") || !strcasecmp(s, "error"))
		return ORTHO_LOG_ERR;
	if (!strcasecmp(s, "warning") || !strcasecmp(s, "warn"))
		return ORTHO_LOG_WARNING;
	if (!strcasecmp(s, "notice"))
		return ORTHO_LOG_NOTICE;
	if (!strcasecmp(s, "info"))
		return ORTHO_LOG_INFO;
	if (!strcasecmp(s, "debug"))
		return ORTHO_LOG_DEBUG;
	return atoi(s);
}

void olog(const struct ortho_ctx *ctx, int prio, const char *fmt, ...)
{
	va_list ap;

	if (!ctx || !ctx->log_fn || prio > ctx->log_level)
		return;
	va_start(ap, fmt);
	ctx->log_fn(ctx->log_user, prio, fmt, ap);
	va_end(ap);
}

ORTHO_API int ortho_ctx_new(const struct ortho_ctx_opts *opts,
			    struct ortho_ctx **out)
{
	struct ortho_ctx_opts o;
	struct ortho_ctx *ctx;
	int env, ret;

	if (!out)
		return -EINVAL;
	*out = NULL;
	if (opts && opts->sz < offsetof(struct ortho_ctx_opts, backend))
		return -EINVAL;
	opts_copy(&o, sizeof(o), opts);

	ctx = calloc(1, sizeof(*ctx));
	if (!ctx)
		return -ENOMEM;
	ctx->log_fn = o.log_fn;
	ctx->log_user = o.log_user;
	ctx->log_level = o.log_level ? o.log_level : ORTHO_LOG_WARNING;
	env = env_log_level();
	if (env > 0)
		ctx->log_level = env;
	ctx->ortho_budget = o.ortho_budget;
	ctx->flags = o.flags;
	ctx->ev_fd = -1;
	pthread_mutex_init(&ctx->lock, NULL);
	pthread_mutex_init(&ctx->evq_lock, NULL);
	pthread_rwlock_init(&ctx->open_lock, NULL);
	pthread_mutex_init(&ctx->stream_lock, NULL);
	if (o.flags & ~(ORTHO_CTX_EVENTS_POLLED |
			ORTHO_CTX_AUTHORITY_REQUIRED)) {
		ret = -EINVAL;
		goto err;
	}

	ret = res_account_new(ctx->ortho_budget, &ctx->res_acct);
	if (ret)
		goto err;
	ret = ok_pool_new(o.threads, &ctx->pool);
	if (ret)
		goto err;
	ctx->threads = ok_pool_threads(ctx->pool);

	ret = backend_select(ctx, o.backend);
	if (ret)
		goto err;
	ret = ctx_authority_start(ctx, o.authority);
	if (ret)
		goto err;
	*out = ctx;
	return 0;
err:
	ortho_ctx_free(ctx);
	return ret;
}

ORTHO_API void ortho_ctx_free(struct ortho_ctx *ctx)
{
	if (!ctx)
		return;
	ctx_authority_stop(ctx);
	if (ctx->backend && ctx->backend->fini)
		ctx->backend->fini(ctx);
	ok_pool_free(ctx->pool);
	/* Models left open keep the budget's account alive. */
	res_account_put(ctx->res_acct);
	pthread_mutex_destroy(&ctx->stream_lock);
	pthread_rwlock_destroy(&ctx->open_lock);
	pthread_mutex_destroy(&ctx->evq_lock);
	pthread_mutex_destroy(&ctx->lock);
	free(ctx->model_list);
	free(ctx);
}

int ctx_stream_get(struct ortho_ctx *ctx, struct stream **out)
{
	struct stream_opts so = { 0 };
	int ret = 0;

	pthread_mutex_lock(&ctx->stream_lock);
	if (!ctx->stream) {
		if (stream_opts_env(&so))
			olog_warn(ctx, "ORTHO_STREAM=%s: not understood "
				  "(pread, direct, qd=N, workers=N, "
				  "staging=BYTES); ignored",
				  getenv("ORTHO_STREAM"));
		ret = stream_new(ctx, &so, &ctx->stream);
	}
	if (!ret)
		ctx->stream_users++;
	*out = ctx->stream;
	pthread_mutex_unlock(&ctx->stream_lock);
	return ret;
}

void ctx_stream_put(struct ortho_ctx *ctx)
{
	pthread_mutex_lock(&ctx->stream_lock);
	if (ctx->stream_users && !--ctx->stream_users) {
		stream_free(ctx->stream);
		ctx->stream = NULL;
	}
	pthread_mutex_unlock(&ctx->stream_lock);
}

ORTHO_API const char *ortho_ctx_get_backend(const struct ortho_ctx *ctx)
{
	return ctx->backend_name;
}

ORTHO_API unsigned int ortho_ctx_get_threads(const struct ortho_ctx *ctx)
{
	return ctx->threads;
}

ORTHO_API const char *ortho_strerror(int err)
{
	switch (err) {
	case 0:
		return "success";
	case -EBADMSG:
		return "corrupt or tampered data (authentication failed)";
	case -EKEYREJECTED:
		return "wrong key";
	case -EKEYREVOKED:
		return "key revoked";
	case -ENOKEY:
		return "no key available";
	case -EXDEV:
		return "belongs to another model";
	case -EDOM:
		return "validation failed";
	case -EPROTONOSUPPORT:
		return "unsupported format version";
	default:
		return strerror(-err);
	}
}
