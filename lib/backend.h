/* SPDX-License-Identifier: MIT */
/*
 * The backend ops table. "cpu" is always there; "cuda" joins when the
 * driver is found at run time. The residency manager above it is
 * backend-neutral: it asks the backend for memory and for the fused op.
 */
#ifndef ORTHO_BACKEND_H
#define ORTHO_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "kernels.h"

struct ortho_ctx;

/* Device-side view of one Base linear tensor. */
struct backend_q8 {
	struct ok_q8 host;		/* host copy (mapped base.orb) */
	void *dev;			/* backend's handle, NULL on cpu */
};

/* Device-side view of one resident Ortho tensor. */
struct backend_ortho {
	struct ok_ortho host;		/* host view (plaintext in secmem) */
	void *dev;
};

struct ortho_backend {
	const char *name;
	/* Called once per context; fills ctx->backend_name. */
	int (*init)(struct ortho_ctx *ctx, const char *spec);
	void (*fini)(struct ortho_ctx *ctx);
	/* Make a Base tensor usable (upload once); undo at close. */
	int (*base_upload)(struct ortho_ctx *ctx, struct backend_q8 *t);
	void (*base_release)(struct ortho_ctx *ctx, struct backend_q8 *t);
	/* Make an Ortho tensor usable; release wipes device bytes. */
	int (*ortho_upload)(struct ortho_ctx *ctx, struct backend_ortho *o);
	void (*ortho_release)(struct ortho_ctx *ctx, struct backend_ortho *o);
	/* y = deq(t) x + sum o x for ntok tokens (host pointers x, y). */
	int (*linear)(struct ortho_ctx *ctx, const struct backend_q8 *t,
		      const struct backend_ortho *const *o, unsigned int no,
		      const float *x, float *y, uint32_t ntok);
};

extern const struct ortho_backend backend_cpu;

/*
 * backend_select() - pick and initialise the backend named by @spec
 * ("auto", "cpu", "cuda[:N]"; NULL means "auto").
 * Return: 0, -EINVAL for an unknown name, -ENODEV when not available.
 */
int backend_select(struct ortho_ctx *ctx, const char *spec);

#endif
