/* SPDX-License-Identifier: MIT */
/*
 * Ortho tensors to put in shards, shared by test_formats_shard.c and
 * test_formats_plaintext.c: CSR with a given density, dense, and the two
 * standard sets (one chunk with every encoding; three chunks).
 */
#ifndef ORTHO_SHARD_FIXTURE_H
#define ORTHO_SHARD_FIXTURE_H

#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "fp16.h"
#include "shard.h"
#include "testutil.h"

struct src {
	struct osp_tensor_src t[4];
	unsigned int n;
	void *mem[12];
	unsigned int nmem;
};

static inline void *keep(struct src *s, void *p)
{
	ck_assert_ptr_nonnull(p);
	s->mem[s->nmem++] = p;
	return p;
}

static inline void add_csr(struct src *s, const char *name, uint32_t rows,
		    uint32_t cols, double density, uint32_t enc, uint64_t seed)
{
	struct osp_tensor_src *t = &s->t[s->n++];
	uint32_t r, c, *rp, *col;
	uint16_t *val;
	uint64_t nnz = 0;

	rp = keep(s, calloc(rows + 1, 4));
	col = keep(s, calloc((size_t)(rows * cols * density * 1.5) + 64, 4));
	val = keep(s, calloc((size_t)(rows * cols * density * 1.5) + 64, 2));
	for (r = 0; r < rows; r++) {
		for (c = 0; c < cols; c++) {
			if ((double)(tu_rand(&seed) >> 11) / 9007199254740992.0 >=
			    density)
				continue;
			col[nnz] = c;
			val[nnz++] = f32_to_fp16(tu_randn(&seed) * 0.01f);
		}
		rp[r + 1] = (uint32_t)nnz;
	}
	*t = (struct osp_tensor_src){ name, rows, cols, enc, nnz, rp, col, val };
}

static inline void add_dense(struct src *s, const char *name, uint32_t rows,
		      uint32_t cols, uint64_t seed)
{
	struct osp_tensor_src *t = &s->t[s->n++];
	uint64_t i, n = (uint64_t)rows * cols;
	uint16_t *val = keep(s, malloc(n * 2));

	for (i = 0; i < n; i++)
		val[i] = f32_to_fp16(tu_randn(&seed) * 0.01f);
	*t = (struct osp_tensor_src){ name, rows, cols, OSP_DENSE16, n, NULL,
				      NULL, val };
}

static inline void src_free(struct src *s)
{
	while (s->nmem)
		free(s->mem[--s->nmem]);
}

/* One chunk: every encoding, an empty CSR, a CSR too wide for u16. */
static inline void small_src(struct src *s)
{
	memset(s, 0, sizeof(*s));
	add_csr(s, "layers.0.wq", 64, 64, 0.1, OSP_CSR16, 1);
	add_csr(s, "layers.0.w2", 2, 70000, 0.001, OSP_CSR32, 2);
	add_dense(s, "layers.0.w1", 32, 48, 3);
	add_csr(s, "layers.0.wo", 16, 16, 0, OSP_CSR16, 4);
}

/* Three chunks; the CSR tensor straddles the boundary of chunks 1 and 2. */
static inline void big_src(struct src *s)
{
	memset(s, 0, sizeof(*s));
	add_dense(s, "layers.1.w1", 1024, 1000, 5);
	add_csr(s, "layers.1.w2", 300, 1100, 0.05, OSP_CSR16, 6);
}

static inline void params(struct osh_write_params *p, uint8_t *key, uint64_t seed)
{
	unsigned int i;

	memset(p, 0, sizeof(*p));
	for (i = 0; i < OSH_ID_SIZE; i++)
		p->shard_id[i] = (uint8_t)tu_rand(&seed);
	for (i = 0; i < 32; i++)
		p->model_id[i] = (uint8_t)tu_rand(&seed);
	for (i = 0; i < OSH_KEY_SIZE; i++)
		key[i] = (uint8_t)tu_rand(&seed);
	p->key = key;
	p->label = "tenant-a";
	p->layer = 3;
}

static inline void compare(const struct osp_view_tensor *v,
		    const struct osp_tensor_src *t)
{
	uint64_t k;

	ck_assert_str_eq(v->name, t->name);
	ck_assert_uint_eq(v->rows, t->rows);
	ck_assert_uint_eq(v->cols, t->cols);
	ck_assert_uint_eq(v->encoding, t->encoding);
	ck_assert_uint_eq(v->nnz, t->nnz);
	if (t->nnz)
		ck_assert_mem_eq(v->val, t->val, t->nnz * 2);
	if (t->encoding == OSP_DENSE16) {
		ck_assert_ptr_null(v->rowptr);
		return;
	}
	ck_assert_mem_eq(v->rowptr, t->rowptr, ((size_t)t->rows + 1) * 4);
	for (k = 0; k < t->nnz; k++) {
		uint32_t c = t->encoding == OSP_CSR16 ?
			     ((const uint16_t *)v->col)[k] :
			     ((const uint32_t *)v->col)[k];

		ck_assert_uint_eq(c, t->col[k]);
	}
}

/* Open @path and decrypt all of it with @key into secmem. */

#endif
