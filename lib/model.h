/* SPDX-License-Identifier: MIT */
/*
 * The model runtime: an opened base.orb, its tensors and the shards found
 * beside it. Internal to the library (struct ortho_model and struct
 * ortho_tensor are opaque to applications).
 *
 * Locking: model->lock is a writer-preferring rwlock. ortho_linear() takes
 * it shared around collecting a tensor's Ortho views and computing with
 * them; attaching or detaching a shard's views (shard_load(),
 * shard_unload()) and every change of a shard's state once the model is
 * open take it exclusive. So an op in flight finishes with the views it
 * found, the next op sees the new set, and a shard's plaintext is wiped
 * only once no op can use it. Everything else in the model is set up by
 * ortho_model_open() and read-only until ortho_model_close().
 */
#ifndef ORTHO_MODEL_H
#define ORTHO_MODEL_H

#include <pthread.h>
#include <stdint.h>

#include "backend.h"
#include "base.h"
#include "keyfile.h"
#include "ortho.h"

/* Ortho views one Base tensor can have at once (the CPU backend's limit). */
#define MODEL_MAX_VIEWS 64u
/* Shard files one model directory may hold. */
#define MODEL_MAX_SHARDS 65536u

struct ortho_tensor {
	struct ortho_model *model;
	unsigned int index;		/* in the base.orb table */
	const char *name;		/* in the mapped table */
	uint32_t rows, cols, dtype, group_size, layer, is_linear;
	const void *data;		/* in the map */
	struct backend_q8 q8;		/* linear only */
	int uploaded;
	/* Resident Ortho views on this tensor; guarded by model->lock. */
	const struct backend_ortho *views[MODEL_MAX_VIEWS];
	unsigned int nviews;
};

/* One Ortho tensor of a resident shard. */
struct shard_view {
	struct backend_ortho o;
	struct ortho_tensor *base;	/* the Base tensor it adds to */
	int uploaded;
};

/*
 * Everything about one shard file, in one place, so that a residency
 * manager can page it in and out with shard_load()/shard_unload().
 */
struct model_shard {
	char *path;			/* dir/ortho/<file> */
	const char *file;		/* the file name within path */
	char id_hex[33];
	uint8_t id[OSH_ID_SIZE];
	int header_ok;			/* the header could be read */
	uint8_t model_id[32];
	char label[OSH_LABEL_MAX];
	uint32_t layer;
	uint32_t tensor_count;
	uint64_t plaintext_len;
	struct keyfile_entry *key;	/* in model->keys, or NULL */

	/* State: changed under model->lock held exclusive. */
	uint32_t state;			/* enum ortho_shard_state */
	int error;			/* negative errno when FAILED */
	uint32_t bad_chunk;		/* UINT32_MAX when none */
	uint64_t bytes;			/* resident plaintext bytes */
	uint64_t since_ns;
	void *pt;			/* plaintext, in secmem */
	size_t pt_size;			/* as given to secmem_alloc() */
	struct shard_view *views;
	unsigned int nviews;
};

struct ortho_model {
	struct ortho_ctx *ctx;
	unsigned int flags;
	struct orb_file orb;
	int orb_opened;
	struct ortho_tensor *tensors;
	unsigned int ntensors;
	struct keyfile keys;
	struct model_shard *shards;
	unsigned int nshards;
	pthread_rwlock_t lock;
};

/**
 * model_scan_shards() - find the .osh files in dir/ortho, read each
 * header and sort them by layer, label and id. Nothing is decrypted.
 * @m: the model (Base already open).
 * @dir: the model directory.
 *
 * A missing ortho/ directory means no shards. A shard whose header cannot
 * be read is listed as FAILED.
 *
 * Return: 0, -ENOMEM, -EMFILE (too many shard files), or -errno of reading
 * the directory.
 */
int model_scan_shards(struct ortho_model *m, const char *dir);

/**
 * model_load_shards() - decide each shard's fate (other model, label, key)
 * and load those that can be used; one warning names the shards without a
 * key.
 * @m: the model, its shards scanned and its keys loaded.
 * @label: only shards with this label, or NULL.
 * @key_file: where the keys came from (for the warning), or NULL.
 *
 * Return: 0, or in strict mode the first failed shard's error.
 */
int model_load_shards(struct ortho_model *m, const char *label,
		      const char *key_file);

/**
 * shard_load() - read, authenticate, decrypt and check shard @s and attach
 * its views to the Base tensors: RESIDENT on success, FAILED (with error,
 * bad_chunk and a message naming the shard) on failure, with nothing of the
 * shard left in memory.
 * @m: the model.
 * @s: a shard with a key, not resident.
 *
 * Return: 0, or the shard's error.
 */
int shard_load(struct ortho_model *m, struct model_shard *s);

/**
 * shard_unload() - detach @s from every Base tensor (waiting for ops in
 * flight), release its device views and wipe and free its plaintext.
 * @m: the model.
 * @s: the shard.
 * @state: the state it ends in (DROPPED, REVOKED, ABSENT).
 *
 * Return: 0, or -EALREADY when @s was not resident.
 */
int shard_unload(struct ortho_model *m, struct model_shard *s,
		 uint32_t state);

/**
 * model_free_shards() - unload every resident shard (wiping it) and free
 * every shard entry.
 * @m: the model; no op may be running.
 */
void model_free_shards(struct ortho_model *m);

/**
 * model_tensor_by_name() - look a Base tensor up.
 * @m: the model.
 * @name: its name in base.orb.
 *
 * Return: the tensor, or NULL.
 */
struct ortho_tensor *model_tensor_by_name(const struct ortho_model *m,
					  const char *name);

#endif
