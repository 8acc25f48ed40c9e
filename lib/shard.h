/* SPDX-License-Identifier: MIT */
/*
 * <id>.osh: building the plaintext, encrypting (AES-256-GCM per chunk),
 * reading and authenticating. lib/FORMATS.md has the layout.
 */
#ifndef ORTHO_SHARD_H
#define ORTHO_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "format.h"

struct ortho_ctx;

/* One Ortho tensor to write. CSR: rowptr[rows+1], col[nnz], val[nnz];
 * dense: val[rows * cols] (rowptr and col NULL). col is always u32 here;
 * the writer narrows it for OSP_CSR16. */
struct osp_tensor_src {
	const char *name;
	uint32_t rows, cols;
	uint32_t encoding;		/* enum osp_encoding */
	uint64_t nnz;
	const uint32_t *rowptr;
	const uint32_t *col;
	const uint16_t *val;		/* FP16 bits */
};

/* Return: encoded size in bytes of one tensor (not counting alignment). */
uint64_t osp_encoded_size(uint32_t encoding, uint32_t rows, uint32_t cols,
			  uint64_t nnz);

/* Return: the smallest encoding for the shape and nnz (csr16 when cols fit
 * in 16 bits, else csr32, or dense16 when that is smaller). */
uint32_t osp_best_encoding(uint32_t rows, uint32_t cols, uint64_t nnz);

/* Return: "csr16", "csr32", "dense16" or "?". */
const char *osp_encoding_name(uint32_t encoding);

struct osh_write_params {
	uint8_t shard_id[OSH_ID_SIZE];
	uint8_t model_id[32];
	const char *label;
	uint32_t layer;
	const uint8_t *key;		/* OSH_KEY_SIZE bytes */
};

/**
 * osh_write() - encode @t into a plaintext (in secmem), encrypt chunk by
 * chunk and write the shard to @path (O_EXCL; removed on failure).
 *
 * Return: 0, -EINVAL for bad input, -errno of I/O or -EIO from libcrypto.
 */
int osh_write(struct ortho_ctx *ctx, const char *path,
	      const struct osh_write_params *p,
	      const struct osp_tensor_src *t, unsigned int n);

/* An opened shard file; nothing decrypted yet. */
struct osh_file {
	int fd;
	uint64_t size;
	struct osh_header hdr;
	uint8_t *tags;			/* chunk_count * 16 */
	struct osh_aad aad;		/* chunk_index filled in per chunk */
};

/**
 * osh_open() - open and check a shard's header and tag table: magic,
 * version, every count, size and offset in range, the file long enough for
 * every chunk. Messages name the file and the field.
 *
 * Return: 0, -ENOENT, -EBADMSG (bad magic, short file), -EINVAL (counts or
 * sizes out of range), -EPROTONOSUPPORT (version).
 */
int osh_open(struct ortho_ctx *ctx, const char *path, struct osh_file *f);
void osh_close(struct osh_file *f);

/* Return: 0 when @key is this shard's key, -EKEYREJECTED when not. */
int osh_check_key(const struct osh_file *f, const uint8_t *key);

/* Plaintext bytes of chunk @idx (the last one may be short). */
uint64_t osh_chunk_len(const struct osh_file *f, uint32_t idx);

/**
 * osh_decrypt_chunk() - authenticate and decrypt chunk @idx.
 * @ct: its ciphertext, osh_chunk_len() bytes; @pt: room for as many.
 *
 * Chunks are independent: any order, any thread.
 * Return: 0, or -EBADMSG when the tag does not match (pt is then wiped).
 */
int osh_decrypt_chunk(const struct osh_file *f, const uint8_t *key,
		      uint32_t idx, const void *ct, void *pt);

/**
 * osh_read_all() - pread and decrypt every chunk into @pt
 * (plaintext_len bytes). The simple synchronous path.
 * @bad_chunk: set to the failing chunk on -EBADMSG.
 *
 * Return: 0, -EKEYREJECTED (wrong key), -EBADMSG (a chunk failed; @pt
 * wiped), -EIO or -errno of the read.
 */
int osh_read_all(struct ortho_ctx *ctx, const struct osh_file *f,
		 const uint8_t *key, void *pt, uint32_t *bad_chunk);

/* A parsed plaintext: pointers into it. */
struct osp_view_tensor {
	const char *name;
	uint32_t rows, cols, encoding;
	uint64_t nnz;
	const uint32_t *rowptr;
	const void *col;		/* u16 or u32 by encoding */
	const uint16_t *val;
};

/**
 * osp_parse() - check a decrypted plaintext and fill @out (up to @max
 * entries): every offset and size in range, rowptr monotone from 0 to nnz,
 * column indices in range and strictly increasing within a row.
 *
 * Return: the tensor count, or -EBADMSG / -EINVAL with a message.
 */
int osp_parse(struct ortho_ctx *ctx, const void *pt, uint64_t len,
	      struct osp_view_tensor *out, unsigned int max);

/* Shard id as 32 lower-case hex digits plus NUL, and back. */
void osh_id_to_hex(const uint8_t id[OSH_ID_SIZE], char hex[33]);
int osh_id_from_hex(const char *hex, uint8_t id[OSH_ID_SIZE]);

#endif
