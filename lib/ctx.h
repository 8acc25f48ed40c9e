/* SPDX-License-Identifier: MIT */
/* The library context (opaque to applications). */
#ifndef ORTHO_CTX_H
#define ORTHO_CTX_H

#include <pthread.h>

#include "ortho.h"

struct ok_pool;
struct ortho_backend;

struct ortho_ctx {
	ortho_log_fn log_fn;
	void *log_user;
	int log_level;
	unsigned int threads;
	uint64_t ortho_budget;
	char backend_name[32];
	const struct ortho_backend *backend;	/* ops table, see backend.h */
	void *backend_priv;
	struct ok_pool *pool;
	pthread_mutex_t lock;
	unsigned int models;			/* open models */
};

#endif
