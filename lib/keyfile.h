/* SPDX-License-Identifier: MIT */
/*
 * The key file: ortho-pack's stand-in for the authority. A text file, mode
 * 0600, one line per shard (lib/FORMATS.md). Keys are held in secmem.
 */
#ifndef ORTHO_KEYFILE_H
#define ORTHO_KEYFILE_H

#include <stddef.h>
#include <stdint.h>

#include "format.h"

struct ortho_ctx;

struct keyfile_entry {
	uint8_t id[OSH_ID_SIZE];
	uint8_t key[OSH_KEY_SIZE];
	char label[OSH_LABEL_MAX];
	uint32_t layer;
};

struct keyfile {
	struct keyfile_entry *e;	/* in secmem */
	size_t n;
	size_t cap;
};

/**
 * keyfile_load() - read a key file. Refuses one that others can read
 * (mode & 077) with -EPERM, a malformed line with -EBADMSG (line named).
 * Return: 0 or -errno.
 */
int keyfile_load(struct ortho_ctx *ctx, const char *path, struct keyfile *kf);

/* Return: the entry for @id, or NULL. */
const struct keyfile_entry *keyfile_find(const struct keyfile *kf,
					 const uint8_t id[OSH_ID_SIZE]);

/* Append an entry (copied). Return: 0 or -ENOMEM. */
int keyfile_add(struct keyfile *kf, const struct keyfile_entry *e);

/**
 * keyfile_save() - write every entry to @path: a temporary file in the same
 * directory, mode 0600, fsync, rename. Without @force an existing @path is
 * left alone and -EEXIST returned.
 */
int keyfile_save(struct ortho_ctx *ctx, const char *path,
		 const struct keyfile *kf, int force);

/* Wipe and free every entry. */
void keyfile_free(struct keyfile *kf);

#endif
