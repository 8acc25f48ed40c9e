// SPDX-License-Identifier: MIT
/*
 * Writing <id>.osh: the plaintext is built in secmem, checked with the same
 * parser the reader uses (so a shard that cannot be read is never written),
 * then sealed chunk by chunk. Only ciphertext reaches ordinary memory and
 * the file; the plaintext is wiped before returning, on every path.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "secmem.h"
#include "shard.h"
#include "shard_priv.h"

static int pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t r = pwrite(fd, p, len, (off_t)off);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += r;
		off += (uint64_t)r;
		len -= (size_t)r;
	}
	return 0;
}

static void fill_header(struct osh_header *h, const struct osh_write_params *p,
			unsigned int n, uint64_t len)
{
	uint64_t count = (len + OSH_CHUNK_SIZE - 1) / OSH_CHUNK_SIZE;

	memset(h, 0, sizeof(*h));
	memcpy(h->magic, OSH_MAGIC, sizeof(h->magic));
	h->version = OSH_VERSION;
	h->header_size = sizeof(*h);
	memcpy(h->shard_id, p->shard_id, OSH_ID_SIZE);
	memcpy(h->model_id, p->model_id, sizeof(h->model_id));
	memcpy(h->label, p->label, strlen(p->label));
	h->layer = p->layer;
	h->tensor_count = n;
	h->chunk_size = OSH_CHUNK_SIZE;
	h->chunk_count = (uint32_t)count;
	h->plaintext_len = len;
	h->tag_offset = ORB_ALIGN;
	h->data_offset = osh_align(h->tag_offset + count * OSH_TAG_SIZE,
				   ORB_ALIGN);
	/* Padded so that the last chunk, too, can be read in whole pages. */
	h->file_size = osh_align(h->data_offset + len, ORB_ALIGN);
}

static int write_chunks(int fd, const struct osh_header *h,
			const struct osh_aad *aad, const uint8_t *key,
			const uint8_t *pt)
{
	uint8_t *tags, *ct;
	uint32_t i;
	int ret = 0;

	tags = calloc(h->chunk_count, OSH_TAG_SIZE);
	ct = malloc(OSH_CHUNK_SIZE);
	if (!tags || !ct) {
		ret = -ENOMEM;
		goto out;
	}
	for (i = 0; !ret && i < h->chunk_count; i++) {
		uint64_t off = (uint64_t)i * OSH_CHUNK_SIZE;
		size_t n = h->plaintext_len - off < OSH_CHUNK_SIZE ?
			   (size_t)(h->plaintext_len - off) : OSH_CHUNK_SIZE;

		ret = osh_gcm_seal(key, i, aad, pt + off, ct, n,
				   tags + (size_t)i * OSH_TAG_SIZE);
		if (!ret)
			ret = pwrite_all(fd, ct, n, h->data_offset + off);
	}
	if (!ret)
		ret = pwrite_all(fd, tags, (size_t)h->chunk_count * OSH_TAG_SIZE,
				 h->tag_offset);
	if (!ret)
		ret = pwrite_all(fd, h, sizeof(*h), 0);
	if (!ret && fsync(fd))
		ret = -errno;
out:
	free(ct);
	free(tags);
	return ret;
}

static int write_file(struct ortho_ctx *ctx, const char *path,
		      const struct osh_header *h, const struct osh_aad *aad,
		      const uint8_t *key, const uint8_t *pt)
{
	int fd, ret;

	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0) {
		ret = -errno;
		olog_err(ctx, "%s: cannot create: %s", path, strerror(-ret));
		return ret;
	}
	/* Every gap (tag table padding, the tail) reads as zeros. */
	ret = ftruncate(fd, (off_t)h->file_size) ? -errno : 0;
	if (!ret)
		ret = write_chunks(fd, h, aad, key, pt);
	if (close(fd) && !ret)
		ret = -errno;
	if (ret) {
		olog_err(ctx, "%s: write failed: %s", path, strerror(-ret));
		unlink(path);
	}
	return ret;
}

/* The plaintext of @t, built and checked, in secmem. */
static int build_plaintext(struct ortho_ctx *ctx,
			   const struct osp_tensor_src *t, unsigned int n,
			   uint8_t **out, uint64_t *len)
{
	uint8_t *pt;
	int ret;

	ret = osp_layout(ctx, t, n, len);
	if (ret)
		return ret;
	pt = secmem_alloc(*len);
	if (!pt)
		return -ENOMEM;
	ret = osp_build(ctx, t, n, pt, *len);
	if (!ret) {
		ret = osp_parse(ctx, pt, *len, NULL, 0);
		ret = ret < 0 ? -EINVAL : 0;
	}
	if (ret) {
		secmem_free(pt, *len);
		return ret;
	}
	*out = pt;
	return 0;
}

int osh_write(struct ortho_ctx *ctx, const char *path,
	      const struct osh_write_params *p,
	      const struct osp_tensor_src *t, unsigned int n)
{
	struct osh_header h;
	struct osh_aad aad;
	uint8_t *pt = NULL;
	uint64_t len = 0;
	int ret;

	if (!p->key || !osh_label_ok(p->label)) {
		olog_err(ctx, "%s: no key, or label \"%s\" not 1 to %u printable characters without blanks",
			 path, p->label ? p->label : "(null)",
			 OSH_LABEL_MAX - 1);
		return -EINVAL;
	}
	ret = build_plaintext(ctx, t, n, &pt, &len);
	if (ret)
		return ret;
	fill_header(&h, p, n, len);
	ret = osh_aad_init(&aad, &h);
	if (!ret)
		ret = osh_gcm_seal(p->key, OSH_KEYCHECK_NONCE, &aad, NULL, NULL,
				   0, h.key_check);
	if (ret)
		olog_err(ctx, "%s: libcrypto failed", path);
	else
		ret = write_file(ctx, path, &h, &aad, p->key, pt);
	secmem_free(pt, len);
	return ret;
}
