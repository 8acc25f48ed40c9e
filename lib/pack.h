/* SPDX-License-Identifier: MIT */
/*
 * ortho_pack() internals, shared by lib/pack.c (options, checkpoints,
 * Base, report), lib/pack_ortho.c (selection and shards) and
 * lib/pack_dir.c (the output directory: temporary names, install).
 */
#ifndef ORTHO_PACK_H
#define ORTHO_PACK_H

#include <stdint.h>

#include "base.h"
#include "checkpoint.h"
#include "keyfile.h"
#include "ortho.h"
#include "quant.h"
#include "select.h"

/* What the pack measured on one tensor (canonical order). */
struct pack_row {
	struct quant_stats base;
	uint64_t entries;
	uint64_t bytes;
	uint32_t encoding;		/* 0: no Ortho entries */
	struct sel_check sel;
};

struct pack_job {
	struct ortho_ctx *ctx;
	struct ortho_pack_opts o;	/* with the defaults filled in */
	int has_priv;
	struct ckpt pub, priv;
	struct ortho_model_config cfg;

	/* Base: INT8 and scales of each linear tensor (NULL for others). */
	int8_t **q;
	float **scales;
	struct pack_row *rows;
	uint8_t model_id[32];

	/* Output: everything goes to tmpdir, moved into out_dir at the end. */
	char *out;			/* out_dir without trailing slashes */
	char *tmpdir;
	int adding;			/* out_dir already holds this Base */
	int key_existed;
	struct keyfile kf;
	char **shards;			/* names under tmpdir/ortho */
	unsigned int nshards;
	struct sel_check total_sel;

	unsigned int done, steps;	/* progress */
};

/* Return: the path @dir/@name (malloc'd), or NULL. */
char *pack_path(const char *dir, const char *name);

/* One step of progress, reported through opts.progress. */
void pack_step(struct pack_job *j);

/**
 * pack_dir_prepare() - before any work: the key file (-EEXIST without
 * force), out_dir's state (absent, empty, or a packed model whose labels
 * must not include ours) and the temporary directory beside it.
 *
 * Return: 0, -EEXIST, -ENOTDIR, -EINVAL or -errno.
 */
int pack_dir_prepare(struct pack_job *j);

/**
 * pack_dir_check_base() - in an existing out_dir, the new Base must be the
 * one already there (same model id).
 *
 * Return: 0, or -EXDEV.
 */
int pack_dir_check_base(struct pack_job *j);

/**
 * pack_dir_install() - save the key file (or hand the keys to the key
 * authority: pack_authority.c), then move the outputs into place
 * (rename of the whole directory, or of each new shard). On failure what
 * was installed is taken back.
 *
 * Return: 0 or -errno.
 */
int pack_dir_install(struct pack_job *j);

/**
 * pack_to_authority() - do the keys go to the context's key authority
 * (a private model, no key file, a context with an authority)?
 *
 * Return: 1 or 0.
 */
int pack_to_authority(const struct pack_job *j);

/**
 * pack_keys_to_authority() - hand every new shard key to the key
 * authority (it needs root or its admin group).
 *
 * Return: 0, -EPERM, or -errno of the request.
 */
int pack_keys_to_authority(struct pack_job *j);

/* Remove the temporary directory and what is in it. */
void pack_dir_cleanup(struct pack_job *j);

/**
 * pack_ortho() - select the Ortho entries over the whole model, build and
 * check each one, and write one shard per layer under tmpdir/ortho.
 *
 * Return: 0, -EDOM (a check failed), -EIO (no random bytes) or -errno.
 */
int pack_ortho(struct pack_job *j);

#endif
