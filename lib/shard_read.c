// SPDX-License-Identifier: MIT
/*
 * Reading <id>.osh. osh_open() checks the header and loads the tag table;
 * nothing is decrypted until a key is offered. Every chunk is opened on its
 * own (osh_decrypt_chunk() shares no state between calls), so the streaming
 * path may decrypt chunks in any order from any thread; osh_read_all() is
 * the simple synchronous path over the same calls.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "shard.h"
#include "shard_priv.h"

/* A limit far above any real layout that keeps the sums below from overflowing. */
#define OSH_MAX_OFFSET (1ull << 56)

static int pread_all(int fd, void *buf, size_t len, uint64_t off)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t r = pread(fd, p, len, (off_t)off);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (!r)
			return -EIO;	/* the file shrank under us */
		p += r;
		off += (uint64_t)r;
		len -= (size_t)r;
	}
	return 0;
}

static int check_label(const struct osh_header *h)
{
	const char *end = memchr(h->label, 0, sizeof(h->label));
	size_t i;

	if (!end)
		return -1;
	for (i = (size_t)(end - h->label); i < sizeof(h->label); i++)
		if (h->label[i])
			return -1;
	return osh_label_ok(h->label) ? 0 : -1;
}

/* The counts and lengths, then where the tag table and the data lie. */
static const char *bad_field(const struct osh_header *h)
{
	uint64_t count = (h->plaintext_len + OSH_CHUNK_SIZE - 1) /
			 OSH_CHUNK_SIZE;
	uint64_t tag_end = h->tag_offset + (uint64_t)h->chunk_count *
					   OSH_TAG_SIZE;
	uint64_t data_end = h->data_offset + h->plaintext_len;
	size_t i;

	if (h->header_size != sizeof(*h))
		return "header_size";
	if (h->chunk_size != OSH_CHUNK_SIZE)
		return "chunk_size";
	if (h->plaintext_len < sizeof(struct osp_header) ||
	    h->plaintext_len > (uint64_t)OSH_MAX_CHUNKS * OSH_CHUNK_SIZE)
		return "plaintext_len";
	if (h->chunk_count > OSH_MAX_CHUNKS || h->chunk_count != count)
		return "chunk_count";
	if (!h->tensor_count || h->tensor_count > ORB_MAX_TENSORS)
		return "tensor_count";
	if (h->tag_offset % ORB_ALIGN || h->tag_offset < sizeof(*h) ||
	    h->tag_offset > OSH_MAX_OFFSET)
		return "tag_offset";
	if (h->data_offset % ORB_ALIGN || h->data_offset < sizeof(*h) ||
	    h->data_offset > OSH_MAX_OFFSET)
		return "data_offset";
	if (h->data_offset < tag_end && h->tag_offset < data_end)
		return "tag_offset/data_offset (tag table and data overlap)";
	/* Padded to a whole page past whichever comes last. */
	if (h->file_size != osh_align(tag_end > data_end ? tag_end : data_end,
				      ORB_ALIGN))
		return "file_size";
	for (i = 0; i < sizeof(h->reserved); i++)
		if (h->reserved[i])
			return "reserved";
	return NULL;
}

static int check_header(struct ortho_ctx *ctx, const char *path,
			const struct osh_header *h, uint64_t fsize)
{
	const char *field;

	if (memcmp(h->magic, OSH_MAGIC, sizeof(h->magic))) {
		olog_err(ctx, "%s: not a shard (bad magic)", path);
		return -EBADMSG;
	}
	if (h->version != OSH_VERSION) {
		olog_err(ctx, "%s: shard format version %u, this library reads %u",
			 path, h->version, OSH_VERSION);
		return -EPROTONOSUPPORT;
	}
	if (check_label(h)) {
		olog_err(ctx, "%s: label unterminated, not NUL-padded or not printable",
			 path);
		return -EBADMSG;
	}
	field = bad_field(h);
	if (field) {
		olog_err(ctx, "%s: header field %s out of range", path, field);
		return -EINVAL;
	}
	if (fsize != h->file_size) {
		olog_err(ctx, "%s: file is %" PRIu64 " bytes, header says %" PRIu64 " (%s)",
			 path, fsize, h->file_size,
			 fsize < h->file_size ? "truncated" : "trailing bytes");
		return -EBADMSG;
	}
	return 0;
}

static int read_header(struct ortho_ctx *ctx, const char *path,
		       struct osh_file *f)
{
	struct stat st;
	int ret;

	if (fstat(f->fd, &st))
		return -errno;
	if (!S_ISREG(st.st_mode)) {
		olog_err(ctx, "%s: not a regular file", path);
		return -EINVAL;
	}
	f->size = (uint64_t)st.st_size;
	if (f->size < sizeof(f->hdr)) {
		olog_err(ctx, "%s: %" PRIu64 " bytes, shorter than the header",
			 path, f->size);
		return -EBADMSG;
	}
	ret = pread_all(f->fd, &f->hdr, sizeof(f->hdr), 0);
	if (ret) {
		olog_err(ctx, "%s: read: %s", path, strerror(-ret));
		return ret;
	}
	return check_header(ctx, path, &f->hdr, f->size);
}

int osh_open(struct ortho_ctx *ctx, const char *path, struct osh_file *f)
{
	size_t tsz;
	int ret;

	memset(f, 0, sizeof(*f));
	f->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (f->fd < 0) {
		ret = -errno;
		olog_err(ctx, "%s: cannot open: %s", path, strerror(-ret));
		return ret;
	}
	ret = read_header(ctx, path, f);
	if (ret)
		goto err;
	tsz = (size_t)f->hdr.chunk_count * OSH_TAG_SIZE;
	f->tags = malloc(tsz);
	if (!f->tags) {
		ret = -ENOMEM;
		goto err;
	}
	ret = pread_all(f->fd, f->tags, tsz, f->hdr.tag_offset);
	if (ret) {
		olog_err(ctx, "%s: reading the tag table: %s", path,
			 strerror(-ret));
		goto err;
	}
	ret = osh_aad_init(&f->aad, &f->hdr);
	if (!ret)
		return 0;
err:
	osh_close(f);
	return ret;
}

void osh_close(struct osh_file *f)
{
	free(f->tags);
	if (f->fd >= 0)
		close(f->fd);
	memset(f, 0, sizeof(*f));
	f->fd = -1;
}

int osh_check_key(const struct osh_file *f, const uint8_t *key)
{
	int ret = osh_gcm_open(key, OSH_KEYCHECK_NONCE, &f->aad, NULL, NULL, 0,
			       f->hdr.key_check);

	return ret == -EBADMSG ? -EKEYREJECTED : ret;
}

uint64_t osh_chunk_len(const struct osh_file *f, uint32_t idx)
{
	uint64_t off = (uint64_t)idx * OSH_CHUNK_SIZE;

	if (idx >= f->hdr.chunk_count)
		return 0;
	if (f->hdr.plaintext_len - off < OSH_CHUNK_SIZE)
		return f->hdr.plaintext_len - off;
	return OSH_CHUNK_SIZE;
}

int osh_decrypt_chunk(const struct osh_file *f, const uint8_t *key,
		      uint32_t idx, const void *ct, void *pt)
{
	size_t len = (size_t)osh_chunk_len(f, idx);
	int ret;

	if (idx >= f->hdr.chunk_count)
		return -EINVAL;
	ret = osh_gcm_open(key, idx, &f->aad, ct, pt, len,
			   f->tags + (size_t)idx * OSH_TAG_SIZE);
	if (ret)
		explicit_bzero(pt, len);
	return ret;
}

static int read_chunks(struct ortho_ctx *ctx, const struct osh_file *f,
		       const uint8_t *key, uint8_t *pt, uint32_t *bad_chunk,
		       const char *id)
{
	uint32_t i;
	int ret;

	for (i = 0; i < f->hdr.chunk_count; i++) {
		uint64_t off = (uint64_t)i * OSH_CHUNK_SIZE;
		size_t len = (size_t)osh_chunk_len(f, i);

		ret = pread_all(f->fd, pt + off, len, f->hdr.data_offset + off);
		if (ret) {
			olog_err(ctx, "shard %s: reading chunk %u: %s", id, i,
				 strerror(-ret));
			return ret;
		}
		/* GCM decrypts in place when input and output coincide. */
		ret = osh_decrypt_chunk(f, key, i, pt + off, pt + off);
		if (ret == -EBADMSG) {
			olog_err(ctx, "shard %s: chunk %u of %u failed authentication (tampered or corrupt)",
				 id, i, f->hdr.chunk_count);
			if (bad_chunk)
				*bad_chunk = i;
		}
		if (ret)
			return ret;
	}
	return 0;
}

int osh_read_all(struct ortho_ctx *ctx, const struct osh_file *f,
		 const uint8_t *key, void *pt, uint32_t *bad_chunk)
{
	char id[33];
	int ret;

	osh_id_to_hex(f->hdr.shard_id, id);
	if (bad_chunk)
		*bad_chunk = UINT32_MAX;
	ret = osh_check_key(f, key);
	if (ret == -EKEYREJECTED) {
		olog_err(ctx, "shard %s (%s): key check failed: wrong key, or the header was modified",
			 id, f->hdr.label);
		return ret;
	}
	if (ret)
		return ret;
	ret = read_chunks(ctx, f, key, pt, bad_chunk, id);
	if (ret)
		explicit_bzero(pt, f->hdr.plaintext_len);
	return ret;
}
