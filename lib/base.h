/* SPDX-License-Identifier: MIT */
/* base.orb: writing (deterministic: same input, same bytes) and reading. */
#ifndef ORTHO_BASE_H
#define ORTHO_BASE_H

#include <stddef.h>
#include <stdint.h>

#include "format.h"
#include "ortho.h"

struct ortho_ctx;

/* One tensor to write. */
struct orb_tensor_src {
	const char *name;
	uint32_t kind;		/* enum orb_kind */
	uint32_t dtype;		/* enum ortho_dtype: I8 for linear, else F32 */
	uint32_t rows, cols;
	uint32_t group_size;	/* linear only */
	uint32_t layer;		/* UINT32_MAX when none */
	const void *data;	/* rows * cols elements of dtype */
	const float *scales;	/* linear: rows * ngroups */
};

static inline uint32_t orb_ngroups(uint32_t cols, uint32_t group)
{
	return (cols + group - 1) / group;
}

/**
 * orb_write() - write base.orb to @path (the caller renames it into place).
 * @ctx: for messages (may be NULL).
 * @path: file to create (O_EXCL); removed again on failure.
 * @cfg: the architecture, stored in the header.
 * @t: the tensors, in file order.
 * @n: how many.
 * @model_id: filled in with the SHA-256 that names this Base.
 *
 * Return: 0, -EINVAL for bad input (names too long, sizes), or -errno of I/O.
 */
int orb_write(struct ortho_ctx *ctx, const char *path,
	      const struct ortho_model_config *cfg,
	      const struct orb_tensor_src *t, unsigned int n,
	      uint8_t model_id[32]);

/* An opened base.orb: the file is mapped read-only. */
struct orb_file {
	void *map;
	size_t size;
	const struct orb_header *hdr;
	const struct orb_tensor *table;	/* hdr->tensor_count entries */
	struct ortho_model_config cfg;
};

/**
 * orb_open() - map and check base.orb: magic, version, every count, size and
 * offset in range and aligned, names NUL-terminated and unique, and (when
 * @verify) the SHA-256 against the model id.
 * @ctx: for messages naming what is wrong.
 * @path: the file.
 * @verify: check the model id.
 * @f: filled in.
 *
 * Return: 0, -ENOENT, -EBADMSG (bad magic, hash mismatch, bad table),
 * -EINVAL (counts or sizes out of range), -EPROTONOSUPPORT (version).
 */
int orb_open(struct ortho_ctx *ctx, const char *path, int verify,
	     struct orb_file *f);
void orb_close(struct orb_file *f);

/* Pointers into the map for table entry @i (checked by orb_open()). */
const void *orb_tensor_data(const struct orb_file *f, unsigned int i);
const float *orb_tensor_scales(const struct orb_file *f, unsigned int i);

/* Return: the model id of base.orb at @path without a full open, or -errno. */
int orb_read_model_id(const char *path, uint8_t model_id[32]);

#endif
