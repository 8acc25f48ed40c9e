/* SPDX-License-Identifier: MIT */
/*
 * Internal to lib/shard_*.c and lib/plaintext.c: the AES-256-GCM layer and
 * the header rules that the writer and the reader share.
 */
#ifndef ORTHO_SHARD_PRIV_H
#define ORTHO_SHARD_PRIV_H

#include <stddef.h>
#include <stdint.h>

#include "format.h"

struct ortho_ctx;
struct osp_tensor_src;

static inline uint64_t osh_align(uint64_t v, uint64_t a)
{
	return (v + a - 1) & ~(a - 1);
}

/**
 * osh_aad_init() - the associated data of @h's chunks (chunk_index 0):
 * version, ids, counts and the SHA-256 of @h with key_check zeroed.
 *
 * Return: 0, or -EIO when libcrypto fails.
 */
int osh_aad_init(struct osh_aad *aad, const struct osh_header *h);

/**
 * osh_gcm_seal() - encrypt @len bytes under nonce @idx and @aad (whose
 * chunk_index is replaced by @idx); @in and @out may be the same buffer.
 * @len may be 0 (the key check).
 *
 * Return: 0, -ENOMEM or -EIO.
 */
int osh_gcm_seal(const uint8_t *key, uint64_t idx, const struct osh_aad *aad,
		 const void *in, void *out, size_t len,
		 uint8_t tag[OSH_TAG_SIZE]);

/**
 * osh_gcm_open() - authenticate and decrypt, the inverse of osh_gcm_seal().
 * @out may hold unauthenticated bytes on failure: the caller wipes it.
 *
 * Return: 0, -EBADMSG when the tag does not match, -ENOMEM or -EIO.
 */
int osh_gcm_open(const uint8_t *key, uint64_t idx, const struct osh_aad *aad,
		 const void *in, void *out, size_t len,
		 const uint8_t tag[OSH_TAG_SIZE]);

/**
 * osh_label_ok() - a label is 1 to 63 printable non-blank ASCII characters
 * (it ends up in key files, logs and /proc output).
 *
 * Return: 1 when @label is acceptable, 0 when not.
 */
int osh_label_ok(const char *label);

/**
 * osp_layout() - check the writer's input and size its plaintext.
 * @len: set to the plaintext length.
 *
 * Return: 0, or -EINVAL (named in a message) for input no shard may hold.
 */
int osp_layout(struct ortho_ctx *ctx, const struct osp_tensor_src *t,
	       unsigned int n, uint64_t *len);

/**
 * osp_build() - encode @t into @pt (@len bytes from osp_layout(), zeroed).
 *
 * Return: 0, or -EINVAL when a column index does not fit its tensor.
 */
int osp_build(struct ortho_ctx *ctx, const struct osp_tensor_src *t,
	      unsigned int n, void *pt, uint64_t len);

#endif
