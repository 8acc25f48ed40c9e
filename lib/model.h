/* SPDX-License-Identifier: MIT */
/*
 * The model runtime: an opened base.orb, its tensors and the shards found
 * beside it. Internal to the library (struct ortho_model and struct
 * ortho_tensor are opaque to applications).
 *
 * Shards are paged in and out in units (a whole shard, or one tensor of a
 * shard larger than half the Ortho budget) by the model's residency
 * manager (lib/residency.h, lib/model_residency.c), which draws on the
 * context's budget together with the other models' managers: another
 * model's op may evict this model's unpinned units. ortho_linear() pins
 * the units that hold Ortho for its tensor, so they stay resident and
 * their views valid until it returns; a unit's views belong to it and are
 * rebuilt at each load. A drop waits for the ops holding the shard, then
 * wipes it.
 *
 * Locking: model->lock is a writer-preferring rwlock guarding the shard
 * state applications see (state, error, bad_chunk, bytes, since_ns, pt,
 * key, units_dropped, evicting): the unit callbacks and drops change it
 * exclusive, readers take it shared. Everything else in the model is set up by
 * ortho_model_open() and read-only until ortho_model_close().
 *
 * Keys come from a key file or from the context's key authority
 * (lib/model_authority.c); then model->auth_lock serialises what the
 * authority is told about each shard (auth_bytes, auth_key), so that its
 * picture ends where the shard's state ends, whichever thread changed it.
 */
#ifndef ORTHO_MODEL_H
#define ORTHO_MODEL_H

#include <pthread.h>
#include <stdint.h>

#include "backend.h"
#include "base.h"
#include "keyfile.h"
#include "ortho.h"

struct residency;
struct stream;
struct authority;

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
	/* The units that hold Ortho for this tensor (set at open). */
	unsigned int units[MODEL_MAX_VIEWS];
	unsigned int nunits;
};

/* One Ortho tensor of a resident shard. */
struct shard_view {
	struct backend_ortho o;
	struct ortho_tensor *base;	/* the Base tensor it adds to */
	int uploaded;
};

/*
 * A unit of residency: a whole shard (entry -1), or one tensor of it
 * (entry: its index in the shard's directory). Its views point into its
 * slot while it is resident.
 */
struct model_unit {
	unsigned int shard;		/* index in model->shards */
	int entry;
	uint64_t size;			/* slot bytes */
	struct shard_view *views;
	unsigned int nviews;
};

/* One entry of a shard's plaintext directory, read at open. */
struct shard_dir_entry {
	struct osp_tensor e;		/* as in the plaintext */
	struct ortho_tensor *base;	/* the Base tensor it adds to */
};

/* Everything about one shard file, in one place. */
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
	unsigned int evicting;		/* units being evicted */
	uint64_t since_ns;
	void *pt;			/* a whole-shard unit's slot */
	size_t pt_size;			/* its plaintext length */
	int units_dropped;		/* FAILED: its units dropped */
	uint64_t uses;			/* ops that used it (atomic) */

	/* What the authority was told (model->auth_lock). */
	uint64_t auth_bytes;		/* reported resident */
	int auth_key;			/* holds the key it handed out */
	int kdev_key;			/* its key came from /dev/ortho */
	uint64_t kdev_bytes;		/* reported resident there */

	/* Set at open (model_residency.c), read-only afterwards. */
	struct shard_dir_entry *dir;	/* tensor_count entries */
	unsigned int unit0, nunits;	/* its units in model->units */
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
	/* Paging shards in and out (model_residency.c). */
	struct stream *stream;
	struct residency *res;
	struct model_unit *units;
	unsigned int nunits;
	/* The key authority the keys came from, or NULL. */
	struct authority *auth;
	pthread_mutex_t auth_lock;
	int auth_closing;		/* ->auth_lock: no more reports */
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
 * model_residency_start() - read the directory of every shard that can be
 * used, make its units, then load them all (no budget, or strict mode) or
 * prefetch the first layers (a budget). A shard that fails is FAILED with
 * a message naming it.
 * @m: the model, its shards judged.
 *
 * Return: 0, -ENOMEM, or in strict mode the first failed shard's error.
 */
int model_residency_start(struct ortho_model *m);

/**
 * model_residency_stop() - unload every unit, wipe and unmap every slot
 * and staging buffer, free the units.
 * @m: the model; no op may be running.
 */
void model_residency_stop(struct ortho_model *m);

/**
 * shard_load() - page in every unit of shard @s now (it may be evicted
 * again under the budget). A unit that fails leaves the shard FAILED with
 * error, bad_chunk and a message naming it, and nothing of it in memory.
 * @m: the model.
 * @s: a shard with a key.
 *
 * Return: 0, the shard's error, or -E2BIG when a unit is larger than the
 * budget.
 */
int shard_load(struct ortho_model *m, struct model_shard *s);

/**
 * shard_unload() - evict @s (@state ABSENT: it may come back), or drop it
 * for good (DROPPED, REVOKED: its key is wiped too). Ops holding it finish
 * first; its device views are released and its slots wiped.
 * @m: the model.
 * @s: the shard.
 * @state: the state it ends in.
 *
 * Return: 0, or -EALREADY when @s was not in use.
 */
int shard_unload(struct ortho_model *m, struct model_shard *s,
		 uint32_t state);

/**
 * shard_revoke() - the authority revoked @s: drop its units for good
 * (ops holding them finish first, slots wiped), wipe its key, state
 * REVOKED.
 * @m: the model.
 * @s: the shard.
 *
 * Return: 1 when the model held the shard (its key or bytes), else 0.
 */
int shard_revoke(struct ortho_model *m, struct model_shard *s);

/**
 * model_authority_keys() - ask the context's authority for the key of
 * every shard of this model (and label) found by model_scan_shards(); a
 * refused one ends NO_KEY (one warning names them all), a revoked one
 * REVOKED.
 * @m: the model, its shards scanned, no keys loaded.
 * @label: only shards with this label, or NULL.
 *
 * Return: 0, or -ENOMEM.
 */
int model_authority_keys(struct ortho_model *m, const char *label);

/**
 * model_authority_sync() - tell the authority what is resident of @s now,
 * and that its key is wiped once it is; nothing without an authority.
 * @m: the model.
 * @s: the shard; no lock held.
 */
void model_authority_sync(struct ortho_model *m, struct model_shard *s);

/**
 * model_authority_revoke() - a revocation notice for shard @id: every
 * copy of it in @m is revoked (shard_revoke()).
 * @m: the model.
 * @id: the shard id.
 *
 * Return: 1 when @m held it, else 0.
 */
int model_authority_revoke(struct ortho_model *m,
			   const uint8_t id[OSH_ID_SIZE]);

/**
 * model_authority_close() - the model is closing: no more reports; each
 * shard it held is released with its key wiped.
 * @m: the model; its residency stopped and its keys wiped.
 */
void model_authority_close(struct ortho_model *m);

/**
 * model_views_get() - pin the units holding Ortho for @t and collect its
 * views from those that could be used; an op then runs with them.
 * @m: the model.
 * @t: a linear tensor.
 * @views: room for MODEL_MAX_VIEWS.
 * @mem: room for MODEL_MAX_VIEWS; passed to model_views_put().
 *
 * Return: the number of views.
 */
unsigned int model_views_get(struct ortho_model *m,
			     const struct ortho_tensor *t,
			     const struct backend_ortho **views, void **mem);

/**
 * model_views_put() - end the op: unpin what model_views_get() pinned.
 * @m: the model.
 * @t: the tensor.
 * @mem: as model_views_get() left it.
 */
void model_views_put(struct ortho_model *m, const struct ortho_tensor *t,
		     void **mem);

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
