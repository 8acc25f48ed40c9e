/* SPDX-License-Identifier: MIT */
/*
 * On-disk layouts of base.orb and <id>.osh (lib/FORMATS.md explains them).
 * Everything little-endian (the library refuses big-endian hosts at build
 * time), fixed-width fields, explicit padding, reserved fields zero.
 */
#ifndef ORTHO_FORMAT_H
#define ORTHO_FORMAT_H

#include <stdint.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "ortho formats are little-endian; this host is not"
#endif

#define ORB_ALIGN 4096u
#define ORB_NAME_MAX 64u		/* including the NUL */
#define ORB_MAX_TENSORS 65536u
#define ORB_MAX_DIM (1u << 20)

/* ---- base.orb ---- */

#define ORB_MAGIC "ORTHOBAS"		/* 8 bytes, no NUL */
#define ORB_VERSION 1u

struct orb_header {			/* at offset 0, padded to 4096 */
	char magic[8];
	uint32_t version;
	uint32_t header_size;		/* 4096 */
	uint32_t tensor_count;
	uint32_t flags;			/* 0 */
	uint64_t table_offset;		/* 4096 */
	uint64_t table_size;		/* tensor_count * 128 */
	uint64_t data_offset;		/* first tensor's data, aligned */
	uint64_t file_size;
	/* SHA-256 of the file from table_offset to file_size. */
	uint8_t model_id[32];
	/* struct ortho_model_config, as in ortho.h (16 x u32). */
	uint32_t config[16];
	uint8_t reserved[4096 - 8 - 4 * 4 - 8 * 4 - 32 - 64];
};

enum orb_kind {
	ORB_KIND_OTHER = 0,		/* stored as is (embeddings, norms) */
	ORB_KIND_LINEAR = 1,		/* INT8 + per-group FP32 scales */
};

struct orb_tensor {			/* 128 bytes each */
	char name[ORB_NAME_MAX];	/* NUL-terminated, NUL-padded */
	uint32_t kind;			/* enum orb_kind */
	uint32_t dtype;			/* enum ortho_dtype */
	uint32_t rows;
	uint32_t cols;
	uint32_t group_size;		/* linear only, else 0 */
	uint32_t layer;			/* UINT32_MAX when not in a layer */
	uint64_t data_offset;		/* aligned to ORB_ALIGN */
	uint64_t data_size;		/* rows * cols * sizeof(dtype) */
	uint64_t scale_offset;		/* linear: aligned; else 0 */
	uint64_t scale_size;		/* rows * ngroups * 4; else 0 */
	uint32_t reserved[2];
};

_Static_assert(sizeof(struct orb_header) == 4096, "orb_header size");
_Static_assert(sizeof(struct orb_tensor) == 128, "orb_tensor size");

/* ---- <id>.osh ---- */

#define OSH_MAGIC "ORTHOSHD"
#define OSH_VERSION 1u
#define OSH_CHUNK_SIZE (1u << 20)
#define OSH_MAX_CHUNKS (1u << 20)	/* 1 TiB of plaintext */
#define OSH_TAG_SIZE 16u
#define OSH_KEY_SIZE 32u
#define OSH_ID_SIZE 16u
#define OSH_LABEL_MAX 64u

struct osh_header {			/* at offset 0, padded to 4096 */
	char magic[8];
	uint32_t version;
	uint32_t header_size;		/* 4096 */
	uint8_t shard_id[OSH_ID_SIZE];	/* random */
	uint8_t model_id[32];		/* the Base it belongs to */
	char label[OSH_LABEL_MAX];	/* NUL-terminated, NUL-padded */
	uint32_t layer;
	uint32_t tensor_count;
	uint32_t chunk_size;		/* OSH_CHUNK_SIZE */
	uint32_t chunk_count;
	uint64_t plaintext_len;
	uint64_t tag_offset;		/* 4096 */
	uint64_t data_offset;		/* aligned; chunk i at + i * chunk_size */
	uint64_t file_size;
	/*
	 * GCM tag over no plaintext with nonce OSH_KEYCHECK_NONCE and the
	 * header's AAD: tells a wrong key apart from a tampered chunk.
	 */
	uint8_t key_check[OSH_TAG_SIZE];
	uint8_t reserved[4096 - 8 - 8 - 16 - 32 - 64 - 16 - 32 - 16];
};

_Static_assert(sizeof(struct osh_header) == 4096, "osh_header size");

/*
 * Associated data of every chunk: binds the format version, the shard, the
 * Base model, the chunk's place and count, and (through header_sha256) every
 * other header field. GCM nonce: 4 zero bytes then the chunk index as u64.
 */
struct osh_aad {
	uint32_t version;
	uint32_t reserved;		/* 0 */
	uint8_t shard_id[OSH_ID_SIZE];
	uint8_t model_id[32];
	uint64_t chunk_index;
	uint64_t chunk_count;
	uint64_t plaintext_len;
	/* SHA-256 of the 4096-byte header with key_check zeroed. */
	uint8_t header_sha256[32];
};

#define OSH_KEYCHECK_NONCE UINT64_MAX	/* chunk_index field of its AAD too */

/*
 * Plaintext: a directory, then each tensor's data at a 64-byte aligned
 * offset from the start of the plaintext.
 */
#define OSP_MAGIC "ORTHOPLN"

struct osp_header {
	char magic[8];
	uint32_t tensor_count;
	uint32_t reserved;
};

enum osp_encoding {
	OSP_CSR16 = 1,	/* u32 rowptr[rows+1], u16 col[nnz], f16 val[nnz] */
	OSP_CSR32 = 2,	/* u32 rowptr[rows+1], u32 col[nnz], f16 val[nnz] */
	OSP_DENSE16 = 3, /* f16 val[rows * cols] */
};

struct osp_tensor {			/* 96 bytes each, after osp_header */
	char name[ORB_NAME_MAX];	/* a linear tensor of the Base */
	uint32_t rows;
	uint32_t cols;
	uint32_t encoding;		/* enum osp_encoding */
	uint32_t reserved;
	uint64_t nnz;			/* rows * cols for dense */
	uint64_t offset;		/* from plaintext start, 64-aligned */
	/* size is implied by encoding, rows, cols and nnz */
};

_Static_assert(sizeof(struct osp_tensor) == 96, "osp_tensor size");

#endif /* ORTHO_FORMAT_H */
