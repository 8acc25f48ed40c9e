// SPDX-License-Identifier: MIT
/*
 * base.orb: the deterministic writer and the checking reader.
 *
 * The writer lays the file out in one pass: header (written last, once the
 * model id is known), tensor table, then each tensor's data and scales at
 * 4 KiB aligned offsets, padding zero. Nothing in the file depends on time,
 * the host or uninitialised memory, so the same input gives the same bytes.
 * The reader trusts nothing: every field is checked before it is used.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "base.h"
#include "log.h"

#define WBUF_SIZE (1u << 20)

static uint64_t align_up(uint64_t v)
{
	return (v + ORB_ALIGN - 1) & ~(uint64_t)(ORB_ALIGN - 1);
}

static size_t dtype_size(uint32_t dtype)
{
	switch (dtype) {
	case ORTHO_DTYPE_F32:
		return 4;
	case ORTHO_DTYPE_I8:
		return 1;
	case ORTHO_DTYPE_F16:
		return 2;
	}
	return 0;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The first name that occurs twice in @names (sorted in place), or NULL. */
static const char *find_duplicate(const char **names, size_t n)
{
	size_t i;

	qsort(names, n, sizeof(*names), name_cmp);
	for (i = 1; i < n; i++)
		if (!strcmp(names[i - 1], names[i]))
			return names[i];
	return NULL;
}

/* Shared by writer and reader: what cannot be a llama2.c architecture. */
static int check_config(struct ortho_ctx *ctx, const char *what,
			const struct ortho_model_config *c)
{
	const char *bad = NULL;
	unsigned int i;

	if (!c->dim || c->dim > ORB_MAX_DIM)
		bad = "dim";
	else if (!c->hidden_dim || c->hidden_dim > ORB_MAX_DIM)
		bad = "hidden_dim";
	else if (!c->n_layers || c->n_layers > ORB_MAX_DIM)
		bad = "n_layers";
	else if (!c->n_heads || c->n_heads > c->dim || c->dim % c->n_heads)
		bad = "n_heads";
	else if (!c->n_kv_heads || c->n_kv_heads > c->n_heads ||
		 c->n_heads % c->n_kv_heads)
		bad = "n_kv_heads";
	else if (!c->vocab_size || c->vocab_size > ORB_MAX_DIM)
		bad = "vocab_size";
	else if (!c->seq_len || c->seq_len > ORB_MAX_DIM)
		bad = "seq_len";
	else if (c->shared_classifier > 1)
		bad = "shared_classifier";
	else if (!c->group_size || c->group_size > ORB_MAX_DIM)
		bad = "group_size";
	for (i = 0; !bad && i < 7; i++)
		if (c->reserved[i])
			bad = "reserved";
	if (!bad)
		return 0;
	olog_err(ctx, "%s: model config field %s out of range", what, bad);
	return -EINVAL;
}

/* ---- writing ---- */

/* Output with a running SHA-256 (header first, its model_id zeroed). */
struct orb_writer {
	int fd;
	uint64_t pos;		/* file offset of buf[0] */
	size_t fill;
	uint8_t *buf;
	EVP_MD_CTX *md;
};

static int w_flush(struct orb_writer *w)
{
	size_t done = 0;

	if (w->fill && !EVP_DigestUpdate(w->md, w->buf, w->fill))
		return -EIO;
	while (done < w->fill) {
		ssize_t r = pwrite(w->fd, w->buf + done, w->fill - done,
				   (off_t)(w->pos + done));

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		done += (size_t)r;
	}
	w->pos += w->fill;
	w->fill = 0;
	return 0;
}

/* Append @len bytes of @src, or zeros when @src is NULL. */
static int w_put(struct orb_writer *w, const void *src, uint64_t len)
{
	const uint8_t *s = src;
	int ret;

	while (len) {
		size_t n = WBUF_SIZE - w->fill;

		if (n > len)
			n = (size_t)len;
		if (s) {
			memcpy(w->buf + w->fill, s, n);
			s += n;
		} else {
			memset(w->buf + w->fill, 0, n);
		}
		w->fill += n;
		len -= n;
		if (w->fill == WBUF_SIZE) {
			ret = w_flush(w);
			if (ret)
				return ret;
		}
	}
	return 0;
}

static uint64_t w_tell(const struct orb_writer *w)
{
	return w->pos + w->fill;
}

static int w_pad(struct orb_writer *w)
{
	return w_put(w, NULL, align_up(w_tell(w)) - w_tell(w));
}

static int check_src(struct ortho_ctx *ctx, const struct ortho_model_config *cfg,
		     const struct orb_tensor_src *t, unsigned int i)
{
	const char *name = t->name ? t->name : "(null)";
	uint64_t ns, k;

	if (!t->name || !t->name[0] || strlen(t->name) >= ORB_NAME_MAX) {
		olog_err(ctx, "base: tensor %u: name \"%s\" empty or longer than %u",
			 i, name, ORB_NAME_MAX - 1);
		return -EINVAL;
	}
	if (!t->rows || !t->cols || t->rows > ORB_MAX_DIM ||
	    t->cols > ORB_MAX_DIM) {
		olog_err(ctx, "base: tensor %s: shape %ux%u out of range",
			 name, t->rows, t->cols);
		return -EINVAL;
	}
	if (t->layer != UINT32_MAX && t->layer >= cfg->n_layers) {
		olog_err(ctx, "base: tensor %s: layer %u but the model has %u",
			 name, t->layer, cfg->n_layers);
		return -EINVAL;
	}
	if (!t->data) {
		olog_err(ctx, "base: tensor %s: no data", name);
		return -EINVAL;
	}
	if (t->kind == ORB_KIND_OTHER) {
		if ((t->dtype != ORTHO_DTYPE_F32 && t->dtype != ORTHO_DTYPE_F16) ||
		    t->group_size) {
			olog_err(ctx, "base: tensor %s: a non-linear tensor is F32 or F16 without a group size",
				 name);
			return -EINVAL;
		}
		return 0;
	}
	if (t->kind != ORB_KIND_LINEAR || t->dtype != ORTHO_DTYPE_I8 ||
	    !t->group_size || t->group_size > ORB_MAX_DIM || !t->scales) {
		olog_err(ctx, "base: tensor %s: a linear tensor is I8 with a group size and scales",
			 name);
		return -EINVAL;
	}
	ns = (uint64_t)t->rows * orb_ngroups(t->cols, t->group_size);
	for (k = 0; k < ns; k++) {
		if (!isfinite(t->scales[k]) || t->scales[k] < 0) {
			olog_err(ctx, "base: tensor %s: scale %" PRIu64 " is %g",
				 name, k, (double)t->scales[k]);
			return -EINVAL;
		}
	}
	return 0;
}

static int check_sources(struct ortho_ctx *ctx,
			 const struct ortho_model_config *cfg,
			 const struct orb_tensor_src *t, unsigned int n)
{
	const char **names, *dup;
	unsigned int i;
	int ret;

	if (!n || n > ORB_MAX_TENSORS) {
		olog_err(ctx, "base: %u tensors (1 to %u)", n, ORB_MAX_TENSORS);
		return -EINVAL;
	}
	ret = check_config(ctx, "base", cfg);
	if (ret)
		return ret;
	for (i = 0; i < n; i++) {
		ret = check_src(ctx, cfg, &t[i], i);
		if (ret)
			return ret;
	}
	names = malloc(n * sizeof(*names));
	if (!names)
		return -ENOMEM;
	for (i = 0; i < n; i++)
		names[i] = t[i].name;
	dup = find_duplicate(names, n);
	if (dup) {
		olog_err(ctx, "base: tensor name %s given twice", dup);
		ret = -EINVAL;
	}
	free(names);
	return ret;
}

/* Fill @e for @t, placing its bytes at *@pos onwards. */
static void place_tensor(const struct orb_tensor_src *t, struct orb_tensor *e,
			 uint64_t *pos)
{
	memset(e, 0, sizeof(*e));
	memcpy(e->name, t->name, strlen(t->name));
	e->kind = t->kind;
	e->dtype = t->dtype;
	e->rows = t->rows;
	e->cols = t->cols;
	e->group_size = t->group_size;
	e->layer = t->layer;
	e->data_offset = *pos;
	e->data_size = (uint64_t)t->rows * t->cols * dtype_size(t->dtype);
	*pos = align_up(*pos + e->data_size);
	if (t->kind != ORB_KIND_LINEAR)
		return;
	e->scale_offset = *pos;
	e->scale_size = (uint64_t)t->rows *
			orb_ngroups(t->cols, t->group_size) * 4;
	*pos = align_up(*pos + e->scale_size);
}

static int write_body(struct orb_writer *w, const struct orb_tensor *tab,
		      const struct orb_tensor_src *t, unsigned int n)
{
	unsigned int i;
	int ret;

	ret = w_put(w, tab, (uint64_t)n * sizeof(*tab));
	if (!ret)
		ret = w_pad(w);
	for (i = 0; !ret && i < n; i++) {
		ret = w_put(w, t[i].data, tab[i].data_size);
		if (!ret)
			ret = w_pad(w);
		if (!ret && tab[i].scale_size)
			ret = w_put(w, t[i].scales, tab[i].scale_size);
		if (!ret)
			ret = w_pad(w);
	}
	if (!ret)
		ret = w_flush(w);
	return ret;
}

static int write_file(struct orb_writer *w, struct orb_header *h,
		      const struct orb_tensor *tab,
		      const struct orb_tensor_src *t, unsigned int n)
{
	unsigned int len;
	ssize_t r;
	int ret;

	/* The id covers the header too (config included), id field zeroed. */
	memset(h->model_id, 0, sizeof(h->model_id));
	if (!EVP_DigestInit_ex(w->md, EVP_sha256(), NULL) ||
	    !EVP_DigestUpdate(w->md, h, sizeof(*h)))
		return -EIO;
	w->pos = ORB_ALIGN;
	ret = write_body(w, tab, t, n);
	if (ret)
		return ret;
	if (w->pos != h->file_size)
		return -EIO;
	if (!EVP_DigestFinal_ex(w->md, h->model_id, &len) || len != 32)
		return -EIO;
	r = pwrite(w->fd, h, sizeof(*h), 0);
	if (r != (ssize_t)sizeof(*h))
		return r < 0 ? -errno : -EIO;
	return fsync(w->fd) ? -errno : 0;
}

static void fill_header(struct orb_header *h,
			const struct ortho_model_config *cfg, unsigned int n)
{
	memset(h, 0, sizeof(*h));
	memcpy(h->magic, ORB_MAGIC, sizeof(h->magic));
	h->version = ORB_VERSION;
	h->header_size = sizeof(*h);
	h->tensor_count = n;
	h->table_offset = ORB_ALIGN;
	h->table_size = (uint64_t)n * sizeof(struct orb_tensor);
	h->data_offset = align_up(h->table_offset + h->table_size);
	memcpy(h->config, cfg, sizeof(h->config));
}

int orb_write(struct ortho_ctx *ctx, const char *path,
	      const struct ortho_model_config *cfg,
	      const struct orb_tensor_src *t, unsigned int n,
	      uint8_t model_id[32])
{
	struct orb_writer w = { .fd = -1 };
	struct orb_tensor *tab = NULL;
	struct orb_header *h = NULL;
	unsigned int i;
	uint64_t pos;
	int ret;

	_Static_assert(sizeof(*cfg) == sizeof(h->config), "config size");
	ret = check_sources(ctx, cfg, t, n);
	if (ret)
		return ret;
	h = malloc(sizeof(*h));
	tab = calloc(n, sizeof(*tab));
	w.buf = malloc(WBUF_SIZE);
	w.md = EVP_MD_CTX_new();
	ret = -ENOMEM;
	if (!h || !tab || !w.buf || !w.md)
		goto out;
	fill_header(h, cfg, n);
	pos = h->data_offset;
	for (i = 0; i < n; i++)
		place_tensor(&t[i], &tab[i], &pos);
	h->file_size = pos;

	w.fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (w.fd < 0) {
		ret = -errno;
		olog_err(ctx, "%s: cannot create: %s", path, strerror(-ret));
		goto out;
	}
	ret = write_file(&w, h, tab, t, n);
	if (close(w.fd) && !ret)
		ret = -errno;
	if (ret) {
		olog_err(ctx, "%s: write failed: %s", path, strerror(-ret));
		unlink(path);
		goto out;
	}
	memcpy(model_id, h->model_id, 32);
out:
	EVP_MD_CTX_free(w.md);
	free(w.buf);
	free(tab);
	free(h);
	return ret;
}

/* ---- reading ---- */

static int check_name(const char *name)
{
	const char *end = memchr(name, 0, ORB_NAME_MAX);
	size_t i;

	if (!end || end == name)
		return -1;
	for (i = (size_t)(end - name); i < ORB_NAME_MAX; i++)
		if (name[i])
			return -1;
	return 0;
}

/* [off, off + size) inside a file of @fsize bytes, no overflow. */
static int in_file(uint64_t off, uint64_t size, uint64_t fsize)
{
	return off <= fsize && size <= fsize - off;
}

/* The first header field out of its range, or NULL. */
static const char *bad_header_field(const struct orb_header *h,
				    uint64_t fsize)
{
	size_t i;

	if (h->header_size != sizeof(*h))
		return "header_size";
	if (h->flags)
		return "flags";
	if (!h->tensor_count || h->tensor_count > ORB_MAX_TENSORS)
		return "tensor_count";
	if (h->table_offset != ORB_ALIGN)
		return "table_offset";
	if (h->table_size != (uint64_t)h->tensor_count *
			     sizeof(struct orb_tensor))
		return "table_size";
	if (h->data_offset % ORB_ALIGN ||
	    h->data_offset < h->table_offset + h->table_size ||
	    h->data_offset > fsize)
		return "data_offset";
	if (fsize % ORB_ALIGN)
		return "file_size";
	for (i = 0; i < sizeof(h->reserved); i++)
		if (h->reserved[i])
			return "reserved";
	return NULL;
}

static int check_header(struct ortho_ctx *ctx, const char *path,
			const struct orb_header *h, uint64_t fsize)
{
	const char *field;

	if (memcmp(h->magic, ORB_MAGIC, sizeof(h->magic))) {
		olog_err(ctx, "%s: not a base.orb file (bad magic)", path);
		return -EBADMSG;
	}
	if (h->version != ORB_VERSION) {
		olog_err(ctx, "%s: format version %u, this library reads %u",
			 path, h->version, ORB_VERSION);
		return -EPROTONOSUPPORT;
	}
	if (h->file_size != fsize) {
		olog_err(ctx, "%s: file is %" PRIu64 " bytes, header says %" PRIu64 " (%s)",
			 path, fsize, h->file_size,
			 fsize < h->file_size ? "truncated" : "trailing bytes");
		return -EBADMSG;
	}
	field = bad_header_field(h, fsize);
	if (field) {
		olog_err(ctx, "%s: header field %s out of range", path, field);
		return -EINVAL;
	}
	return 0;
}

static int check_tensor(struct ortho_ctx *ctx, const char *path,
			const struct orb_file *f, unsigned int i)
{
	const struct orb_tensor *e = &f->table[i];
	const char *field = NULL;
	uint64_t fsize = f->size, dsz;

	if (check_name(e->name)) {
		olog_err(ctx, "%s: tensor %u: name empty, not NUL-terminated or not NUL-padded",
			 path, i);
		return -EBADMSG;
	}
	dsz = (uint64_t)e->rows * e->cols * dtype_size(e->dtype);
	if (e->kind != ORB_KIND_OTHER && e->kind != ORB_KIND_LINEAR)
		field = "kind";
	else if (!dtype_size(e->dtype) ||
		 (e->kind == ORB_KIND_LINEAR) != (e->dtype == ORTHO_DTYPE_I8))
		field = "dtype";
	else if (!e->rows || e->rows > ORB_MAX_DIM)
		field = "rows";
	else if (!e->cols || e->cols > ORB_MAX_DIM)
		field = "cols";
	else if (e->layer != UINT32_MAX && e->layer >= f->cfg.n_layers)
		field = "layer";
	else if (e->data_offset % ORB_ALIGN ||
		 e->data_offset < f->hdr->data_offset)
		field = "data_offset";
	else if (e->data_size != dsz)
		field = "data_size";
	else if (!in_file(e->data_offset, e->data_size, fsize))
		field = "data_offset + data_size";
	else if (e->reserved[0] || e->reserved[1])
		field = "reserved";
	else if (e->kind == ORB_KIND_OTHER &&
		 (e->group_size || e->scale_offset || e->scale_size))
		field = "group_size/scale_offset/scale_size (not linear)";
	else if (e->kind == ORB_KIND_LINEAR &&
		 (!e->group_size || e->group_size > ORB_MAX_DIM))
		field = "group_size";
	else if (e->kind == ORB_KIND_LINEAR &&
		 (e->scale_offset % ORB_ALIGN ||
		  e->scale_offset < f->hdr->data_offset))
		field = "scale_offset";
	else if (e->kind == ORB_KIND_LINEAR &&
		 e->scale_size != (uint64_t)e->rows *
				  orb_ngroups(e->cols, e->group_size) * 4)
		field = "scale_size";
	else if (e->kind == ORB_KIND_LINEAR &&
		 !in_file(e->scale_offset, e->scale_size, fsize))
		field = "scale_offset + scale_size";
	if (!field)
		return 0;
	olog_err(ctx, "%s: tensor %u (%s): field %s out of range", path, i,
		 e->name, field);
	return -EINVAL;
}

struct range {
	uint64_t start, end;
	unsigned int tensor;
};

static int range_cmp(const void *a, const void *b)
{
	const struct range *x = a, *y = b;

	if (x->start != y->start)
		return x->start < y->start ? -1 : 1;
	return x->end < y->end ? -1 : x->end > y->end;
}

static int check_overlaps(struct ortho_ctx *ctx, const char *path,
			  const struct orb_file *f)
{
	unsigned int i, n = f->hdr->tensor_count, k = 0;
	struct range *r = malloc(2 * (size_t)n * sizeof(*r));
	int ret = 0;

	if (!r)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		const struct orb_tensor *e = &f->table[i];

		r[k++] = (struct range){ e->data_offset,
					 e->data_offset + e->data_size, i };
		if (e->scale_size)
			r[k++] = (struct range){ e->scale_offset,
						 e->scale_offset + e->scale_size,
						 i };
	}
	qsort(r, k, sizeof(*r), range_cmp);
	for (i = 1; i < k; i++) {
		if (r[i].start < r[i - 1].end) {
			olog_err(ctx, "%s: tensors %s and %s overlap", path,
				 f->table[r[i - 1].tensor].name,
				 f->table[r[i].tensor].name);
			ret = -EBADMSG;
			break;
		}
	}
	free(r);
	return ret;
}

static int check_table(struct ortho_ctx *ctx, const char *path,
		       const struct orb_file *f)
{
	unsigned int i, n = f->hdr->tensor_count;
	const char **names, *dup;
	int ret;

	for (i = 0; i < n; i++) {
		ret = check_tensor(ctx, path, f, i);
		if (ret)
			return ret;
	}
	names = malloc(n * sizeof(*names));
	if (!names)
		return -ENOMEM;
	for (i = 0; i < n; i++)
		names[i] = f->table[i].name;
	dup = find_duplicate(names, n);
	free(names);
	if (dup) {
		olog_err(ctx, "%s: tensor name %s appears twice", path, dup);
		return -EBADMSG;
	}
	return check_overlaps(ctx, path, f);
}

static int verify_id(struct ortho_ctx *ctx, const char *path,
		     const struct orb_file *f)
{
	const uint8_t *p = (const uint8_t *)f->map + f->hdr->table_offset;
	struct orb_header h = *f->hdr;
	EVP_MD_CTX *md_ctx;
	uint8_t md[32];
	unsigned int len = 0;
	int ok;

	memset(h.model_id, 0, sizeof(h.model_id));
	md_ctx = EVP_MD_CTX_new();
	if (!md_ctx)
		return -ENOMEM;
	ok = EVP_DigestInit_ex(md_ctx, EVP_sha256(), NULL) &&
	     EVP_DigestUpdate(md_ctx, &h, sizeof(h)) &&
	     EVP_DigestUpdate(md_ctx, p, f->size - f->hdr->table_offset) &&
	     EVP_DigestFinal_ex(md_ctx, md, &len) && len == 32;
	EVP_MD_CTX_free(md_ctx);
	if (!ok)
		return -EIO;
	if (memcmp(md, f->hdr->model_id, 32)) {
		olog_err(ctx, "%s: contents do not match the model id (corrupt or modified)",
			 path);
		return -EBADMSG;
	}
	return 0;
}

static int map_file(struct ortho_ctx *ctx, const char *path,
		    struct orb_file *f)
{
	struct stat st;
	int fd, ret = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		olog_err(ctx, "%s: cannot open: %s", path, strerror(-ret));
		return ret;
	}
	if (fstat(fd, &st)) {
		ret = -errno;
	} else if (!S_ISREG(st.st_mode)) {
		olog_err(ctx, "%s: not a regular file", path);
		ret = -EINVAL;
	} else if ((uint64_t)st.st_size < sizeof(struct orb_header)) {
		olog_err(ctx, "%s: %lld bytes, shorter than the header", path,
			 (long long)st.st_size);
		ret = -EBADMSG;
	} else {
		f->size = (size_t)st.st_size;
		f->map = mmap(NULL, f->size, PROT_READ, MAP_SHARED, fd, 0);
		if (f->map == MAP_FAILED) {
			ret = -errno;
			f->map = NULL;
			olog_err(ctx, "%s: mmap: %s", path, strerror(-ret));
		}
	}
	close(fd);
	return ret;
}

int orb_open(struct ortho_ctx *ctx, const char *path, int verify,
	     struct orb_file *f)
{
	int ret;

	memset(f, 0, sizeof(*f));
	ret = map_file(ctx, path, f);
	if (ret)
		return ret;
	f->hdr = f->map;
	ret = check_header(ctx, path, f->hdr, f->size);
	if (ret)
		goto err;
	memcpy(&f->cfg, f->hdr->config, sizeof(f->cfg));
	ret = check_config(ctx, path, &f->cfg);
	if (ret)
		goto err;
	f->table = (const struct orb_tensor *)((const uint8_t *)f->map +
					       f->hdr->table_offset);
	ret = check_table(ctx, path, f);
	if (!ret && verify)
		ret = verify_id(ctx, path, f);
	if (!ret)
		return 0;
err:
	orb_close(f);
	return ret;
}

void orb_close(struct orb_file *f)
{
	if (f->map)
		munmap(f->map, f->size);
	memset(f, 0, sizeof(*f));
}

const void *orb_tensor_data(const struct orb_file *f, unsigned int i)
{
	if (i >= f->hdr->tensor_count)
		return NULL;
	return (const uint8_t *)f->map + f->table[i].data_offset;
}

const float *orb_tensor_scales(const struct orb_file *f, unsigned int i)
{
	if (i >= f->hdr->tensor_count || f->table[i].kind != ORB_KIND_LINEAR)
		return NULL;
	return (const float *)((const uint8_t *)f->map +
			       f->table[i].scale_offset);
}

int orb_read_model_id(const char *path, uint8_t model_id[32])
{
	struct orb_header h;
	ssize_t r;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	r = pread(fd, &h, sizeof(h), 0);
	if (r < 0)
		r = -errno;
	close(fd);
	if (r < 0)
		return (int)r;
	if (r != (ssize_t)sizeof(h) || memcmp(h.magic, ORB_MAGIC, 8))
		return -EBADMSG;
	if (h.version != ORB_VERSION)
		return -EPROTONOSUPPORT;
	memcpy(model_id, h.model_id, 32);
	return 0;
}
