/* SPDX-License-Identifier: MIT */
/*
 * The library context (opaque to applications).
 *
 * Locking: ->lock guards the list of open models. ->open_lock orders model
 * opens against revocation notices: an open holds it shared from its first
 * key request until the model is on the list, a notice is handled with it
 * held exclusive, so a key handed out during an open is never missed by a
 * revocation. Order: ->open_lock, then ->lock, then a model's locks.
 * ->evq_lock guards the queue of notices waiting for
 * ortho_ctx_process_events(). ->stream_lock guards the stream the models
 * share; it is a leaf, as is the Ortho budget's own lock (lib/residency.c).
 * Everything else is set in ortho_ctx_new() and read-only afterwards.
 */
#ifndef ORTHO_CTX_H
#define ORTHO_CTX_H

#include <pthread.h>

#include "ortho.h"

struct ok_pool;
struct res_account;
struct stream;
struct ortho_backend;
struct authority;
struct authority_notice;
struct ctx_kdev;

struct ortho_ctx {
	ortho_log_fn log_fn;
	void *log_user;
	int log_level;
	unsigned int threads;
	uint64_t ortho_budget;
	unsigned int flags;			/* enum ortho_ctx_flags */
	char backend_name[32];
	const struct ortho_backend *backend;	/* ops table, see backend.h */
	void *backend_priv;
	struct ok_pool *pool;
	pthread_mutex_t lock;
	unsigned int models;			/* open models */
	struct ortho_model **model_list;	/* ->lock */
	unsigned int model_cap;

	/* The key authority (lib/ctx_authority.c); NULL: none. */
	struct authority *auth;
	char auth_addr[128];
	pthread_rwlock_t open_lock;
	int ev_started;
	pthread_t ev_thread;
	int ev_fd;				/* polled mode: an eventfd */
	pthread_mutex_t evq_lock;
	struct authority_notice *evq;		/* ->evq_lock */
	size_t evq_n, evq_cap;
	int auth_lost;				/* ->evq_lock */
	/* /dev/ortho beside the authority (lib/ctx_kdev.h); NULL: none. */
	struct ctx_kdev *kdev;
	/*
	 * What the models' residency managers share (lib/model_residency.c):
	 * the Ortho budget, so that the shards of every model together stay
	 * within ->ortho_budget, and the stream with its decrypt workers.
	 */
	struct res_account *res_acct;
	pthread_mutex_t stream_lock;
	struct stream *stream;			/* ->stream_lock */
	unsigned int stream_users;		/* ->stream_lock */
};

/**
 * ctx_stream_get() - the stream the context's models page shards in
 * with, started by the first (options from $ORTHO_STREAM then).
 * @ctx: the context.
 * @out: the stream; give it back with ctx_stream_put().
 *
 * Return: 0, or -errno of stream_new().
 */
int ctx_stream_get(struct ortho_ctx *ctx, struct stream **out);

/**
 * ctx_stream_put() - a model is done with the stream; the last one stops
 * it (its staging buffers wiped and unmapped).
 * @ctx: the context.
 */
void ctx_stream_put(struct ortho_ctx *ctx);

/**
 * ctx_authority_start() - find the authority (@addr, $ORTHO_AUTHORITY, the
 * default socket), connect, and start handling its notices.
 * @ctx: the context, not yet shared.
 * @addr: the option's value, or NULL.
 *
 * Return: 0 (also when there is none, or it cannot be reached and
 * ORTHO_CTX_AUTHORITY_REQUIRED is not set: one warning), or -errno.
 */
int ctx_authority_start(struct ortho_ctx *ctx, const char *addr);

/**
 * ctx_authority_stop() - stop the notice thread and hang up.
 * @ctx: the context; no model is open.
 */
void ctx_authority_stop(struct ortho_ctx *ctx);

/*
 * ctx_authority_sync() - handle, in the caller's thread, every revocation
 * notice that has reached the process; wait for one being handled. Called
 * before each op, with no lock held.
 */
void ctx_authority_sync(struct ortho_ctx *ctx);

/**
 * ctx_model_add() - put an opened model on the context's list, where
 * revocation notices find it.
 * @ctx: the context.
 * @m: the model.
 *
 * Return: 0 or -ENOMEM.
 */
int ctx_model_add(struct ortho_ctx *ctx, struct ortho_model *m);

/**
 * ctx_model_remove() - take a model off the list (before it is freed);
 * waits for a notice being handled.
 * @ctx: the context.
 * @m: the model (not on the list: nothing happens).
 */
void ctx_model_remove(struct ortho_ctx *ctx, struct ortho_model *m);

#endif
