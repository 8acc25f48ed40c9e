/* SPDX-License-Identifier: MIT */
/*
 * libortho-rt: public API.
 *
 * A model is a Base stream (INT8 of the public checkpoint, always resident)
 * plus Ortho shards (FP16 deltas to a private fine-tune, encrypted, revocable).
 *
 * Naming: every exported name starts with ortho_ and reads object_verb
 * (ortho_model_open, ortho_shard_info_get). Every call returns 0 or a negative
 * errno; nothing prints on its own: messages go to the log callback.
 * Options structs start with their own size (set .sz = sizeof(struct ...)),
 * so they can grow without breaking the ABI; fields past .sz read as zero.
 */
#ifndef ORTHO_H
#define ORTHO_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef ORTHO_API
#define ORTHO_API __attribute__((visibility("default")))
#endif

#define ORTHO_VERSION_MAJOR 0
#define ORTHO_VERSION_MINOR 1

/* Log priorities, as syslog's. */
enum ortho_log_prio {
	ORTHO_LOG_ERR = 3,
	ORTHO_LOG_WARNING = 4,
	ORTHO_LOG_NOTICE = 5,
	ORTHO_LOG_INFO = 6,
	ORTHO_LOG_DEBUG = 7,
};

typedef void (*ortho_log_fn)(void *user, int prio, const char *fmt,
			     va_list ap);

struct ortho_ctx;
struct ortho_model;
struct ortho_tensor;

struct ortho_ctx_opts {
	size_t sz;
	/* "auto", "cpu" or "cuda[:N]"; NULL means "auto". */
	const char *backend;
	/* Compute threads; 0 means one per online CPU. */
	unsigned int threads;
	/*
	 * Messages at or above log_level (ORTHO_LOG_*; 0 means
	 * ORTHO_LOG_WARNING, overridden by the ORTHO_LOG environment variable)
	 * are passed to log_fn; with no log_fn nothing is reported.
	 */
	ortho_log_fn log_fn;
	void *log_user;
	int log_level;
	/*
	 * Byte budget for resident Ortho shards (decrypted, each rounded up
	 * to whole pages) of all the models open in this context together;
	 * 0 means no limit. A model short of room evicts the least recently
	 * used shards no op is using, its own first, then other models'.
	 * A shard of several tensors larger than half the budget is paged
	 * in one tensor at a time. A shard, or such a tensor, larger than
	 * the whole budget is not used (a warning; ops run on the Base
	 * alone for its tensors, and a strict open fails).
	 */
	uint64_t ortho_budget;
	/*
	 * Key authority (orthod): "unix:PATH". NULL means $ORTHO_AUTHORITY,
	 * else /run/ortho/orthod.sock when that exists, else none; "none"
	 * turns it off. Models opened without a key file get their keys
	 * from it, report what is resident, and obey its revocations.
	 */
	const char *authority;
	unsigned int flags;		/* enum ortho_ctx_flags */
};

enum ortho_ctx_flags {
	/*
	 * Revocation notices are handled by the application: it polls
	 * ortho_ctx_get_event_fd() and calls ortho_ctx_process_events().
	 * Without this flag a thread of the library's own handles them.
	 * Either way, a notice that has reached the process is handled
	 * before the next ortho_linear() starts, in the caller's thread if
	 * nobody else has yet: an op never uses a shard whose revocation
	 * the process has been told of.
	 */
	ORTHO_CTX_EVENTS_POLLED = 1u << 0,
	/* Fail ortho_ctx_new() when the authority cannot be reached. */
	ORTHO_CTX_AUTHORITY_REQUIRED = 1u << 1,
};

/**
 * ortho_ctx_new() - create a library context.
 * @opts: options, or NULL for defaults.
 * @out: the new context.
 *
 * An authority that cannot be reached is a warning, and the context goes
 * on without it, unless ORTHO_CTX_AUTHORITY_REQUIRED is set.
 *
 * Return: 0, or -EINVAL for bad options, -ENODEV when the backend asked
 * for is not available, -ENOMEM; with ORTHO_CTX_AUTHORITY_REQUIRED also
 * -ENOTCONN (no authority configured), -ENOENT or -ECONNREFUSED (its
 * socket is missing or nobody listens), -EPROTO (it speaks another
 * protocol).
 */
ORTHO_API int ortho_ctx_new(const struct ortho_ctx_opts *opts,
			    struct ortho_ctx **out);

/**
 * ortho_ctx_free() - free a context; every model opened in it must be closed.
 * @ctx: the context, or NULL.
 */
ORTHO_API void ortho_ctx_free(struct ortho_ctx *ctx);

/**
 * ortho_ctx_get_backend() - name of the backend in use ("cpu", "cuda:0").
 * @ctx: the context.
 *
 * Return: a string owned by the context.
 */
ORTHO_API const char *ortho_ctx_get_backend(const struct ortho_ctx *ctx);

/**
 * ortho_ctx_get_threads() - number of compute threads the context uses.
 * @ctx: the context.
 *
 * Return: the thread count (at least 1).
 */
ORTHO_API unsigned int ortho_ctx_get_threads(const struct ortho_ctx *ctx);

/**
 * ortho_ctx_get_event_fd() - a descriptor that polls readable (POLLIN)
 * when a revocation notice waits (with ORTHO_CTX_EVENTS_POLLED).
 * @ctx: the context.
 *
 * The notice may come from orthod or, when orthod uses the kernel module,
 * from /dev/ortho (POLLPRI there); the descriptor covers both (it is then
 * an epoll descriptor over the two), so one poll() on it is enough. Only
 * wait on it and call ortho_ctx_process_events(); do not read from it.
 *
 * Return: the descriptor (owned by the context), -EINVAL without
 * ORTHO_CTX_EVENTS_POLLED (the library's thread handles notices), or
 * -ENOTCONN when the context has no authority.
 */
ORTHO_API int ortho_ctx_get_event_fd(struct ortho_ctx *ctx);

/**
 * ortho_ctx_process_events() - handle every waiting revocation notice:
 * evict the shard from every model of the context, wipe its device,
 * staging and key copies, and acknowledge. An ortho_linear() in flight
 * finishes first; the next one runs without the shard.
 * @ctx: the context.
 *
 * Return: the number of notices handled (0 also when an op handled them
 * first), -EINVAL without ORTHO_CTX_EVENTS_POLLED, -ENOTCONN without an
 * authority, -ECONNRESET once the authority hung up and nothing is left.
 */
ORTHO_API int ortho_ctx_process_events(struct ortho_ctx *ctx);

/**
 * ortho_strerror() - a short description of a negative errno as this
 * library uses it (-EBADMSG: "authentication failed", ...).
 * @err: a negative errno.
 *
 * Return: a static string.
 */
ORTHO_API const char *ortho_strerror(int err);

/* ---- models ---- */

enum ortho_model_flags {
	/* Open Base only: no shard is read or decrypted. */
	ORTHO_MODEL_NO_ORTHO = 1u << 0,
	/*
	 * Fail the open when a shard's file fails a check (header, model
	 * id, wrong key, a tampered chunk). A shard whose key is simply not
	 * held (NO_KEY) is still skipped with a warning.
	 */
	ORTHO_MODEL_STRICT = 1u << 1,
	/* Skip the SHA-256 check of base.orb against its model id. */
	ORTHO_MODEL_NO_VERIFY = 1u << 2,
};

struct ortho_model_opts {
	size_t sz;
	unsigned int flags;		/* enum ortho_model_flags */
	/*
	 * Key source: a key file written by ortho-pack; NULL takes keys from
	 * the context's authority (orthod), when it has one. Shards whose
	 * key is not had are not used (state ORTHO_SHARD_NO_KEY), with one
	 * warning.
	 */
	const char *key_file;
	/* Only shards with this label; NULL means every label. */
	const char *label;
};

/* Architecture of a llama2.c-style model, as stored in base.orb. */
struct ortho_model_config {
	uint32_t dim;
	uint32_t hidden_dim;
	uint32_t n_layers;
	uint32_t n_heads;
	uint32_t n_kv_heads;
	uint32_t vocab_size;
	uint32_t seq_len;
	uint32_t shared_classifier;	/* 1: "output" is "tok_embeddings" */
	uint32_t group_size;		/* INT8 group along the input dimension */
	uint32_t reserved[7];
};

/**
 * ortho_model_open() - open a packed model directory (base.orb, ortho/).
 * @ctx: the context.
 * @dir: the directory ortho-pack wrote.
 * @opts: options, or NULL (Base and every shard whose key is found).
 * @out: the model.
 *
 * Base is loaded and checked against its model id. Each shard is checked
 * (model id, header, key, every chunk's tag); a shard that fails is not used
 * and its state says why (see ortho_shard_info_get()), unless
 * ORTHO_MODEL_STRICT is set, which fails the open instead.
 *
 * Return: 0, or -ENOENT (no base.orb), -EBADMSG (corrupt or tampered file),
 * -EINVAL (header out of range), -ENOMEM, or a shard's error in strict mode.
 */
ORTHO_API int ortho_model_open(struct ortho_ctx *ctx, const char *dir,
			       const struct ortho_model_opts *opts,
			       struct ortho_model **out);

/**
 * ortho_model_close() - close a model, wiping every shard's bytes.
 * @model: the model, or NULL.
 */
ORTHO_API void ortho_model_close(struct ortho_model *model);

/**
 * ortho_model_get_config() - the model's architecture.
 * @model: the model.
 * @cfg: filled in.
 *
 * Return: 0.
 */
ORTHO_API int ortho_model_get_config(const struct ortho_model *model,
				     struct ortho_model_config *cfg);

/**
 * ortho_model_get_id() - the model id (SHA-256 of the Base contents).
 * @model: the model.
 * @id: 32 bytes, filled in.
 *
 * Return: 0.
 */
ORTHO_API int ortho_model_get_id(const struct ortho_model *model,
				 uint8_t id[32]);

/* ---- tensors ---- */

enum ortho_dtype {
	ORTHO_DTYPE_F32 = 0,
	ORTHO_DTYPE_I8 = 1,	/* INT8 with FP32 per-group scales */
	ORTHO_DTYPE_F16 = 2,
};

struct ortho_tensor_info {
	size_t sz;
	const char *name;	/* owned by the model */
	uint32_t rows;		/* output dimension (1 for vectors) */
	uint32_t cols;		/* input dimension */
	uint32_t dtype;		/* enum ortho_dtype of the Base data */
	uint32_t group_size;	/* for ORTHO_DTYPE_I8 */
	uint32_t layer;		/* transformer layer, or UINT32_MAX */
	uint32_t is_linear;	/* 1: usable with ortho_linear() */
};

/**
 * ortho_model_find_tensor() - look a tensor up by name.
 * @model: the model.
 * @name: e.g. "layers.0.wq" (names in lib/FORMATS.md).
 * @out: the tensor, owned by the model.
 *
 * Return: 0, or -ENOENT.
 */
ORTHO_API int ortho_model_find_tensor(const struct ortho_model *model,
				      const char *name,
				      struct ortho_tensor **out);

/**
 * ortho_tensor_info_get() - describe a tensor.
 * @t: the tensor.
 * @info: filled in; set info->sz first.
 *
 * Return: 0, or -EINVAL when info->sz is too small.
 */
ORTHO_API int ortho_tensor_info_get(const struct ortho_tensor *t,
				    struct ortho_tensor_info *info);

/**
 * ortho_tensor_read_f32() - copy a non-linear tensor (embeddings, norms)
 * out as FP32, or a linear one dequantized (Base only).
 * @t: the tensor.
 * @dst: rows * cols floats.
 * @n: number of floats in @dst.
 *
 * Return: 0, or -ERANGE when @n is not rows * cols.
 */
ORTHO_API int ortho_tensor_read_f32(const struct ortho_tensor *t, float *dst,
				    size_t n);

/**
 * ortho_tensor_row_f32() - a pointer to one row of an FP32 tensor
 * (e.g. one token's embedding), valid while the model is open.
 * @t: the tensor, of dtype ORTHO_DTYPE_F32.
 * @row: the row.
 *
 * Return: the row, or NULL when out of range or not FP32.
 */
ORTHO_API const float *ortho_tensor_row_f32(const struct ortho_tensor *t,
					    uint32_t row);

/**
 * ortho_linear() - the fused op: y = deq(Base) x + sum of used Ortho x.
 * @model: the model.
 * @t: a linear tensor (rows x cols).
 * @x: ntok input vectors of cols floats, one after another.
 * @y: ntok output vectors of rows floats.
 * @ntok: number of tokens (1: GEMV; more: GEMM).
 *
 * Safe to call from several threads at once on one model.
 *
 * Return: 0, or -EINVAL (not a linear tensor, ntok 0).
 */
ORTHO_API int ortho_linear(struct ortho_model *model,
			   const struct ortho_tensor *t, const float *x,
			   float *y, uint32_t ntok);

/* ---- shards ---- */

enum ortho_shard_state {
	ORTHO_SHARD_ABSENT = 0,		/* known, not loaded */
	ORTHO_SHARD_LOADING = 1,
	ORTHO_SHARD_RESIDENT = 2,	/* in use by ortho_linear() */
	ORTHO_SHARD_EVICTING = 3,	/* being unloaded and wiped */
	ORTHO_SHARD_REVOKED = 4,	/* dropped for good, bytes wiped */
	ORTHO_SHARD_NO_KEY = 5,		/* no key in the key source */
	ORTHO_SHARD_FAILED = 6,		/* bad file; see .error */
	ORTHO_SHARD_DROPPED = 7,	/* dropped by the application, wiped */
};

struct ortho_shard_info {
	size_t sz;
	char id[33];		/* 32 hex digits */
	char label[64];
	uint32_t layer;
	uint32_t state;		/* enum ortho_shard_state */
	int32_t error;		/* negative errno when FAILED */
	uint32_t bad_chunk;	/* chunk that failed authentication, or UINT32_MAX */
	uint64_t bytes;		/* resident plaintext bytes */
	uint64_t plaintext_len;
	uint64_t since_ns;	/* CLOCK_REALTIME when it became resident */
	char device[16];	/* "cpu", "cuda:0" */
	uint32_t tensors;	/* Ortho tensors in the shard */
	uint32_t pad0;		/* zero */
	uint64_t uses;		/* ops that added this shard's Ortho, since
				 * the model was opened (ORTHO_0.2) */
};

/**
 * ortho_model_shard_count() - number of shards in the model directory.
 * @model: the model.
 *
 * Return: the count.
 */
ORTHO_API unsigned int ortho_model_shard_count(const struct ortho_model *model);

/**
 * ortho_shard_info_get() - describe shard @i.
 * @model: the model.
 * @i: 0 .. ortho_model_shard_count() - 1.
 * @info: filled in; set info->sz first.
 *
 * Return: 0, -ERANGE for a bad index, -EINVAL when info->sz is too small.
 */
ORTHO_API int ortho_shard_info_get(const struct ortho_model *model,
				   unsigned int i,
				   struct ortho_shard_info *info);

/**
 * ortho_model_drop_shard() - stop using a shard and wipe its bytes.
 * @model: the model.
 * @id: the shard id (32 hex digits).
 *
 * An op in flight finishes with the shard; the next op runs without it.
 *
 * Return: 0, or -ENOENT for an unknown id, -EALREADY when it is not in use.
 */
ORTHO_API int ortho_model_drop_shard(struct ortho_model *model,
				     const char *id);

/**
 * ortho_model_prefetch() - say which layers the next ops will use: layers
 * @layer, @layer + 1, ... (@count of them, wrapping around after the last),
 * soonest first. Their shards are loaded in the background in that order,
 * as far ahead as the Ortho budget allows, making room by evicting shards
 * no op is using: of layers outside the hint first, then those needed
 * after the one being loaded, furthest first. Each call replaces the
 * previous hint; calling it with all layers at the start of each layer
 * keeps the next ones coming while that layer computes. An op never waits
 * for a prefetch of a shard it does not need.
 * @model: the model.
 * @layer: the first layer (0 .. n_layers - 1).
 * @count: how many layers; more than n_layers means all of them.
 *
 * Return: 0, -EINVAL for a bad @layer, -ENOMEM.
 */
ORTHO_API int ortho_model_prefetch(struct ortho_model *model, uint32_t layer,
				   uint32_t count);

/* ---- packing ---- */

enum ortho_pack_flags {
	/* Overwrite an existing key file. */
	ORTHO_PACK_FORCE = 1u << 0,
};

/* One row of the pack report, one per tensor. */
struct ortho_pack_tensor_report {
	size_t sz;
	const char *name;
	uint32_t rows, cols;
	uint32_t is_linear;
	double base_max_err;	/* max |deq(B) - W_public| */
	double base_max_err_steps; /* the same, in quantization steps */
	uint64_t ortho_entries;	/* kept Ortho entries */
	double density;		/* ortho_entries / (rows * cols) */
	const char *encoding;	/* "csr16", "csr32", "dense16", "-" */
	double energy_kept;	/* share of the delta's energy kept */
	uint64_t ortho_bytes;	/* encoded bytes */
};

typedef void (*ortho_pack_report_fn)(void *user,
				     const struct ortho_pack_tensor_report *r);

struct ortho_pack_opts {
	size_t sz;
	const char *public_path;	/* llama2.c .bin or .safetensors */
	const char *private_path;	/* NULL: Base only */
	const char *label;		/* shard label; needed with private */
	/* Needed with private, unless the context has an authority:
	 * then the keys go to it (orthod) and never to a file. */
	const char *key_file;
	const char *out_dir;
	double keep;			/* share of delta energy; 0 means 1 */
	uint32_t group_size;		/* 0 means 64 */
	unsigned int flags;		/* enum ortho_pack_flags */
	ortho_pack_report_fn report;
	void *report_user;
	/* Called with done/total tensors, for a progress line. */
	void (*progress)(void *user, unsigned int done, unsigned int total);
};

struct ortho_pack_summary {
	size_t sz;
	uint32_t tensors;
	uint32_t linear_tensors;
	uint32_t shards;
	uint64_t base_bytes;
	uint64_t ortho_entries;
	uint64_t linear_entries;
	uint64_t ortho_bytes;
	double energy_kept;	/* over the whole model */
	double base_max_err_steps; /* worst over every group */
	uint8_t model_id[32];
};

/**
 * ortho_pack() - pack a public (and optionally a private) checkpoint.
 * @ctx: the context (for logging).
 * @opts: what to pack.
 * @sum: filled in on success, or NULL; set sum->sz first.
 *
 * Writes base.orb and ortho/<id>.osh under opts->out_dir and the shard keys
 * to opts->key_file. Every check in lib/FORMATS.md is hard: on failure the
 * tensor and the check are logged at ORTHO_LOG_ERR and nothing is left
 * behind. An existing out_dir may hold the same Base (same model id): the
 * new shards are added beside the old ones.
 *
 * Return: 0, or -EINVAL (bad options or input), -EBADMSG (corrupt
 * checkpoint), -EDOM (a validation check failed), -EXDEV (out_dir holds
 * another Base), -EEXIST (key file exists without ORTHO_PACK_FORCE),
 * or an I/O error.
 */
ORTHO_API int ortho_pack(struct ortho_ctx *ctx,
			 const struct ortho_pack_opts *opts,
			 struct ortho_pack_summary *sum);

#ifdef __cplusplus
}
#endif
#endif /* ORTHO_H */
