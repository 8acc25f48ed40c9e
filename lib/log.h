/* SPDX-License-Identifier: MIT */
/* Internal logging through the context's callback; the library never prints. */
#ifndef ORTHO_LOG_H
#define ORTHO_LOG_H

#include "ortho.h"

struct ortho_ctx;

/*
 * olog() - report a message through @ctx's log callback (nothing when @ctx is
 * NULL or the priority is below the context's level). No trailing newline.
 */
void olog(const struct ortho_ctx *ctx, int prio, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define olog_err(ctx, ...) olog(ctx, ORTHO_LOG_ERR, __VA_ARGS__)
#define olog_warn(ctx, ...) olog(ctx, ORTHO_LOG_WARNING, __VA_ARGS__)
#define olog_info(ctx, ...) olog(ctx, ORTHO_LOG_INFO, __VA_ARGS__)
#define olog_dbg(ctx, ...) olog(ctx, ORTHO_LOG_DEBUG, __VA_ARGS__)

#endif
