// SPDX-License-Identifier: MIT
/*
 * The shard plaintext: a directory (struct osp_header, struct osp_tensor
 * entries), then each tensor's bytes at a 64-byte aligned offset, in
 * directory order. The parser is the only way plaintext reaches a kernel,
 * so it checks every index a kernel will follow: a tensor that passes can
 * be walked without bounds checks.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "shard.h"
#include "shard_priv.h"

#define OSP_ALIGN 64u

uint64_t osp_encoded_size(uint32_t encoding, uint32_t rows, uint32_t cols,
			  uint64_t nnz)
{
	uint64_t rp = ((uint64_t)rows + 1) * 4;

	switch (encoding) {
	case OSP_CSR16:
		return rp + nnz * (2 + 2);
	case OSP_CSR32:
		return rp + nnz * (4 + 2);
	case OSP_DENSE16:
		return (uint64_t)rows * cols * 2;
	}
	return 0;
}

uint32_t osp_best_encoding(uint32_t rows, uint32_t cols, uint64_t nnz)
{
	uint32_t csr = cols <= 65536 ? OSP_CSR16 : OSP_CSR32;

	if (osp_encoded_size(OSP_DENSE16, rows, cols, nnz) <
	    osp_encoded_size(csr, rows, cols, nnz))
		return OSP_DENSE16;
	return csr;
}

const char *osp_encoding_name(uint32_t encoding)
{
	switch (encoding) {
	case OSP_CSR16:
		return "csr16";
	case OSP_CSR32:
		return "csr32";
	case OSP_DENSE16:
		return "dense16";
	}
	return "?";
}

/* ---- building ---- */

static int check_src(struct ortho_ctx *ctx, const struct osp_tensor_src *t,
		     unsigned int i)
{
	const char *name = t->name ? t->name : "(null)";
	uint64_t cells = (uint64_t)t->rows * t->cols;
	const char *why = NULL;

	if (!t->name || !t->name[0] || strlen(t->name) >= ORB_NAME_MAX)
		why = "name empty or too long";
	else if (!t->rows || !t->cols || t->rows > ORB_MAX_DIM ||
		 t->cols > ORB_MAX_DIM)
		why = "shape out of range";
	else if (t->encoding == OSP_DENSE16 && (t->nnz != cells || !t->val))
		why = "dense16 needs rows * cols values";
	else if (t->encoding != OSP_DENSE16 && t->encoding != OSP_CSR16 &&
		 t->encoding != OSP_CSR32)
		why = "unknown encoding";
	else if (t->encoding != OSP_DENSE16 &&
		 (t->nnz > cells || t->nnz > UINT32_MAX))
		why = "nnz out of range";
	else if (t->encoding != OSP_DENSE16 &&
		 (!t->rowptr || (t->nnz && (!t->col || !t->val))))
		why = "rowptr, col or val missing";
	else if (t->encoding == OSP_CSR16 && t->cols > 65536)
		why = "csr16 with more than 65536 columns";
	if (!why)
		return 0;
	olog_err(ctx, "shard: tensor %u (%s): %s", i, name, why);
	return -EINVAL;
}

int osp_layout(struct ortho_ctx *ctx, const struct osp_tensor_src *t,
	       unsigned int n, uint64_t *len)
{
	uint64_t pos;
	unsigned int i;
	int ret;

	if (!n || n > ORB_MAX_TENSORS) {
		olog_err(ctx, "shard: %u tensors (1 to %u)", n,
			 ORB_MAX_TENSORS);
		return -EINVAL;
	}
	pos = sizeof(struct osp_header) + (uint64_t)n * sizeof(struct osp_tensor);
	for (i = 0; i < n; i++) {
		ret = check_src(ctx, &t[i], i);
		if (ret)
			return ret;
		pos = osh_align(pos, OSP_ALIGN);
		pos += osp_encoded_size(t[i].encoding, t[i].rows, t[i].cols,
					t[i].nnz);
	}
	if (pos > (uint64_t)OSH_MAX_CHUNKS * OSH_CHUNK_SIZE) {
		olog_err(ctx, "shard: %" PRIu64 " bytes of plaintext, more than a shard holds",
			 pos);
		return -EINVAL;
	}
	*len = pos;
	return 0;
}

static int put_cols(struct ortho_ctx *ctx, const struct osp_tensor_src *t,
		    uint8_t *dst)
{
	uint64_t k;

	if (t->encoding == OSP_CSR32) {
		if (t->nnz)
			memcpy(dst, t->col, t->nnz * 4);
		return 0;
	}
	for (k = 0; k < t->nnz; k++) {
		uint16_t c = (uint16_t)t->col[k];

		/* Narrowing would hide an index past the end. */
		if (t->col[k] >= t->cols) {
			olog_err(ctx, "shard: tensor %s: column %u out of range (%u columns)",
				 t->name, t->col[k], t->cols);
			return -EINVAL;
		}
		memcpy(dst + 2 * k, &c, 2);
	}
	return 0;
}

int osp_build(struct ortho_ctx *ctx, const struct osp_tensor_src *t,
	      unsigned int n, void *pt, uint64_t len)
{
	struct osp_header h = { .tensor_count = n };
	uint8_t *p = pt;
	uint64_t pos;
	unsigned int i;
	int ret;

	memcpy(h.magic, OSP_MAGIC, sizeof(h.magic));
	memcpy(p, &h, sizeof(h));
	pos = sizeof(h) + (uint64_t)n * sizeof(struct osp_tensor);
	for (i = 0; i < n; i++) {
		struct osp_tensor e = { 0 };
		uint64_t rp = ((uint64_t)t[i].rows + 1) * 4, colsz;
		uint8_t *d;

		pos = osh_align(pos, OSP_ALIGN);
		memcpy(e.name, t[i].name, strlen(t[i].name));
		e.rows = t[i].rows;
		e.cols = t[i].cols;
		e.encoding = t[i].encoding;
		e.nnz = t[i].nnz;
		e.offset = pos;
		memcpy(p + sizeof(h) + (size_t)i * sizeof(e), &e, sizeof(e));
		d = p + pos;
		pos += osp_encoded_size(e.encoding, e.rows, e.cols, e.nnz);
		if (pos > len)
			return -EINVAL;
		if (e.encoding == OSP_DENSE16) {
			memcpy(d, t[i].val, e.nnz * 2);
			continue;
		}
		colsz = e.encoding == OSP_CSR16 ? 2 : 4;
		memcpy(d, t[i].rowptr, rp);
		ret = put_cols(ctx, &t[i], d + rp);
		if (ret)
			return ret;
		if (e.nnz)
			memcpy(d + rp + e.nnz * colsz, t[i].val, e.nnz * 2);
	}
	return pos == len ? 0 : -EINVAL;
}

/* ---- parsing ---- */

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int check_entry(struct ortho_ctx *ctx, const struct osp_tensor *e,
		       unsigned int i, uint64_t start, uint64_t len)
{
	const char *end = memchr(e->name, 0, sizeof(e->name));
	uint64_t cells = (uint64_t)e->rows * e->cols, size;
	const char *why = NULL;

	if (!end || end == e->name) {
		olog_err(ctx, "plaintext: tensor %u: name empty or not NUL-terminated",
			 i);
		return -EBADMSG;
	}
	size = osp_encoded_size(e->encoding, e->rows, e->cols, e->nnz);
	if (!e->rows || !e->cols || e->rows > ORB_MAX_DIM ||
	    e->cols > ORB_MAX_DIM)
		why = "shape out of range";
	else if (!size || e->reserved)
		why = "unknown encoding or reserved field set";
	else if (e->encoding == OSP_DENSE16 && e->nnz != cells)
		why = "dense nnz is not rows * cols";
	else if (e->encoding != OSP_DENSE16 &&
		 (e->nnz > cells || e->nnz > UINT32_MAX))
		why = "nnz out of range";
	else if (e->encoding == OSP_CSR16 && e->cols > 65536)
		why = "csr16 with more than 65536 columns";
	else if (e->offset % OSP_ALIGN)
		why = "offset not 64-byte aligned";
	else if (e->offset < start)
		why = "offset overlaps the directory or the tensor before";
	else if (e->offset > len || size > len - e->offset)
		why = "data runs past the end of the plaintext";
	if (!why)
		return 0;
	olog_err(ctx, "plaintext: tensor %u (%s): %s", i, e->name, why);
	return -EBADMSG;
}

static int check_rowptr(struct ortho_ctx *ctx, const char *name,
			const uint32_t *rp, uint32_t rows, uint64_t nnz)
{
	uint32_t r;

	if (rp[0]) {
		olog_err(ctx, "plaintext: tensor %s: rowptr[0] is %u, not 0",
			 name, rp[0]);
		return -EBADMSG;
	}
	for (r = 0; r < rows; r++) {
		if (rp[r + 1] < rp[r]) {
			olog_err(ctx, "plaintext: tensor %s: rowptr decreases at row %u",
				 name, r);
			return -EBADMSG;
		}
	}
	if (rp[rows] != nnz) {
		olog_err(ctx, "plaintext: tensor %s: rowptr ends at %u, nnz is %" PRIu64,
			 name, rp[rows], nnz);
		return -EBADMSG;
	}
	return 0;
}

static uint32_t col_at(const void *col, int wide, uint64_t k)
{
	return wide ? ((const uint32_t *)col)[k] : ((const uint16_t *)col)[k];
}

static int check_cols(struct ortho_ctx *ctx, const struct osp_view_tensor *v)
{
	int wide = v->encoding == OSP_CSR32;
	uint32_t r;

	for (r = 0; r < v->rows; r++) {
		uint64_t k = v->rowptr[r];
		uint32_t c, prev = 0;

		for (; k < v->rowptr[r + 1]; k++) {
			c = col_at(v->col, wide, k);
			if (c >= v->cols || (k > v->rowptr[r] && c <= prev)) {
				olog_err(ctx, "plaintext: tensor %s: row %u: column %u out of range or out of order",
					 v->name, r, c);
				return -EBADMSG;
			}
			prev = c;
		}
	}
	return 0;
}

static int check_vals(struct ortho_ctx *ctx, const struct osp_view_tensor *v)
{
	uint64_t k;

	for (k = 0; k < v->nnz; k++) {
		if ((v->val[k] & 0x7c00) == 0x7c00) {
			olog_err(ctx, "plaintext: tensor %s: value %" PRIu64 " is not finite",
				 v->name, k);
			return -EBADMSG;
		}
	}
	return 0;
}

/* Point @v into the plaintext at @e and check what a kernel will follow. */
static int check_body(struct ortho_ctx *ctx, const uint8_t *p,
		      const struct osp_tensor *e, struct osp_view_tensor *v)
{
	uint64_t rp = ((uint64_t)e->rows + 1) * 4;
	int ret;

	v->rows = e->rows;
	v->cols = e->cols;
	v->encoding = e->encoding;
	v->nnz = e->nnz;
	if (e->encoding == OSP_DENSE16) {
		v->rowptr = NULL;
		v->col = NULL;
		v->val = (const uint16_t *)(p + e->offset);
		return check_vals(ctx, v);
	}
	v->rowptr = (const uint32_t *)(p + e->offset);
	v->col = p + e->offset + rp;
	v->val = (const uint16_t *)(p + e->offset + rp +
				    e->nnz * (e->encoding == OSP_CSR16 ? 2 : 4));
	ret = check_rowptr(ctx, v->name, v->rowptr, e->rows, e->nnz);
	if (!ret)
		ret = check_cols(ctx, v);
	if (!ret)
		ret = check_vals(ctx, v);
	return ret;
}

static int check_unique(struct ortho_ctx *ctx, const char **names,
			unsigned int n)
{
	unsigned int i;

	qsort(names, n, sizeof(*names), name_cmp);
	for (i = 1; i < n; i++) {
		if (!strcmp(names[i - 1], names[i])) {
			olog_err(ctx, "plaintext: tensor %s appears twice",
				 names[i]);
			return -EBADMSG;
		}
	}
	return 0;
}

static int check_header(struct ortho_ctx *ctx, const void *pt, uint64_t len,
			struct osp_header *h)
{
	if ((uintptr_t)pt % 8) {
		olog_err(ctx, "plaintext: buffer not 8-byte aligned");
		return -EINVAL;
	}
	if (len < sizeof(*h)) {
		olog_err(ctx, "plaintext: %" PRIu64 " bytes, shorter than its header",
			 len);
		return -EBADMSG;
	}
	memcpy(h, pt, sizeof(*h));
	if (memcmp(h->magic, OSP_MAGIC, sizeof(h->magic)) || h->reserved) {
		olog_err(ctx, "plaintext: bad magic or reserved field");
		return -EBADMSG;
	}
	if (!h->tensor_count || h->tensor_count > ORB_MAX_TENSORS ||
	    sizeof(*h) + (uint64_t)h->tensor_count *
			 sizeof(struct osp_tensor) > len) {
		olog_err(ctx, "plaintext: tensor_count %u out of range",
			 h->tensor_count);
		return -EBADMSG;
	}
	return 0;
}

int osp_parse(struct ortho_ctx *ctx, const void *pt, uint64_t len,
	      struct osp_view_tensor *out, unsigned int max)
{
	const uint8_t *p = pt;
	struct osp_header h;
	const char **names;
	uint64_t start;
	unsigned int i;
	int ret;

	ret = check_header(ctx, pt, len, &h);
	if (ret)
		return ret;
	names = malloc(h.tensor_count * sizeof(*names));
	if (!names)
		return -ENOMEM;
	start = sizeof(h) + (uint64_t)h.tensor_count * sizeof(struct osp_tensor);
	for (i = 0; i < h.tensor_count; i++) {
		const struct osp_tensor *e = (const struct osp_tensor *)
			(p + sizeof(h) + (size_t)i * sizeof(*e));
		struct osp_view_tensor v = { .name = e->name };

		ret = check_entry(ctx, e, i, start, len);
		if (!ret)
			ret = check_body(ctx, p, e, &v);
		if (ret)
			goto out;
		start = e->offset + osp_encoded_size(e->encoding, e->rows,
						     e->cols, e->nnz);
		names[i] = e->name;
		if (out && i < max)
			out[i] = v;
	}
	ret = check_unique(ctx, names, h.tensor_count);
	if (!ret)
		ret = (int)h.tensor_count;
out:
	free(names);
	return ret;
}
