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
	/*
	 * Optional (NULL on the cpu backend): make host memory that
	 * ortho_upload will copy from a direct copy source (cuda: pinned with
	 * cuMemHostRegister). Best effort: a failure is logged once per
	 * context and uploads copy from pageable memory as before. Callers
	 * use backend_host_register() and backend_host_unregister().
	 */
	int (*host_register)(struct ortho_ctx *ctx, void *p, size_t len);
	void (*host_unregister)(struct ortho_ctx *ctx, void *p);
};

extern const struct ortho_backend backend_cpu;

/*
 * backend_select() - pick and initialise the backend named by @spec
 * ("auto", "cpu", "cuda[:N]"; NULL means "auto").
 * Return: 0, -EINVAL for an unknown name, -ENODEV when not available.
 */
int backend_select(struct ortho_ctx *ctx, const char *spec);

/**
 * backend_host_register() - offer @len bytes at @p, host memory that
 * ortho_upload will copy from, to the backend (the cuda backend pins it).
 * @ctx: the context.
 * @p: page-aligned memory; it stays mapped until backend_host_unregister().
 * @len: its length.
 *
 * Nothing is required of the caller on failure: uploads work either way.
 * Return: 0 when the backend took it, -EOPNOTSUPP when it has no use for
 * it (cpu), else the backend's -errno (already logged).
 */
int backend_host_register(struct ortho_ctx *ctx, void *p, size_t len);

/**
 * backend_host_unregister() - undo backend_host_register(); call it before
 * @p is wiped, reused for other bytes or unmapped, and after every
 * ortho_upload that read it has returned (an upload returns only when its
 * copy is done). A no-op for memory the backend did not take.
 * @ctx: the context.
 * @p: what was given to backend_host_register().
 */
void backend_host_unregister(struct ortho_ctx *ctx, void *p);

#endif
