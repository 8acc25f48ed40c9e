// SPDX-License-Identifier: MIT
/*
 * The keystore: shard keys, wrapped under a key-encryption key (KEK).
 *
 * On disk, "keystore" is a 56-byte header (the GCM associated data), then
 * the body encrypted with AES-256-GCM under the KEK, then the tag. The body
 * lists every shard ever imported: id, state, layer, label, times, and the
 * key while the shard is active. Revoked shards stay as tombstones, so a
 * revoked id is refused for good.
 *
 * The KEK is 32 random bytes in "kek-<id>" (mode 0600), named by a hash of
 * itself that the keystore header records. Each revocation writes the
 * keystore under a fresh KEK; once the new keystore is durable the old KEK
 * is overwritten in place and unlinked, so old keystore blocks left on the
 * disk cannot be unwrapped. This guards against old disk blocks and a
 * keystore file taken alone; it does not guard against root on the running
 * host, nor against a copy of the whole state directory (PROTOCOL.md).
 *
 * In memory, the shard table (keys included) lives in secmem. A key the
 * kernel module holds (in_kernel, orthod-kernel.c) is wiped from memory;
 * a keystore write then takes it from the current file, decrypted into
 * secmem under the KEK for the length of the write (ks_disk_keys()).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "orthod.h"
#include "secmem.h"

#define KS_FILE "keystore"
#define KS_MAGIC "ORTHOKS1"
#define KS_VERSION 1u
#define KS_HDR_SIZE 56u
#define KS_NONCE 12u
#define KS_TAG 16u
#define KS_MAX_SHARDS 1000000u
#define KS_ENTRY_MAX (16u + 1u + 4u + 2u + PROTO_LABEL_MAX + 16u + 32u)

static int random_bytes(void *p, size_t n)
{
	uint8_t *q = p;

	while (n) {
		ssize_t r = getrandom(q, n, 0);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		q += r;
		n -= (size_t)r;
	}
	return 0;
}

static void kek_id_of(const uint8_t *kek, uint8_t id[16])
{
	static const char tag[] = "ortho-kek-id";
	uint8_t buf[sizeof(tag) + PROTO_KEY_SIZE], md[32];
	unsigned int mdlen = 0;

	memcpy(buf, tag, sizeof(tag));
	memcpy(buf + sizeof(tag), kek, PROTO_KEY_SIZE);
	EVP_Digest(buf, sizeof(buf), md, &mdlen, EVP_sha256(), NULL);
	memcpy(id, md, 16);
	explicit_bzero(buf, sizeof(buf));
}

static void kek_name(const uint8_t id[16], char name[40])
{
	char hex[33];

	proto_id_hex(id, hex);
	memcpy(name, "kek-", 4);
	memcpy(name + 4, hex, 33);
}

/* GCM in one pass; @out has room for @len bytes. Return: 0 or -EBADMSG. */
static int gcm(int enc, const uint8_t *key, const uint8_t *nonce,
	       const uint8_t *aad, size_t aadlen, const uint8_t *in,
	       size_t len, uint8_t *out, uint8_t *tag)
{
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	int n, ok;

	if (!c)
		return -ENOMEM;
	ok = EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, key, nonce, enc) &&
	     EVP_CipherUpdate(c, NULL, &n, aad, (int)aadlen) &&
	     EVP_CipherUpdate(c, out, &n, in, (int)len);
	if (ok && !enc)
		ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, KS_TAG, tag);
	ok = ok && EVP_CipherFinal_ex(c, out + n, &n);
	if (ok && enc)
		ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, KS_TAG, tag);
	EVP_CIPHER_CTX_free(c);
	return ok ? 0 : -EBADMSG;
}

static int table_reserve(struct keystore *ks, size_t n)
{
	struct shard *v;
	size_t cap;

	if (n <= ks->cap)
		return 0;
	if (n > KS_MAX_SHARDS)
		return -ENOSPC;
	cap = ks->cap ? ks->cap * 2 : 64;
	while (cap < n)
		cap *= 2;
	v = secmem_alloc(cap * sizeof(*v));
	if (!v)
		return -ENOMEM;
	if (ks->v)
		memcpy(v, ks->v, ks->n * sizeof(*v));
	secmem_free(ks->v, ks->cap * sizeof(*v));
	ks->v = v;
	ks->cap = cap;
	return 0;
}

/* @disk: the keys of in_kernel shards by index (ks_disk_keys()), or NULL. */
static void body_encode(const struct keystore *ks, struct pbuf *b,
			const uint8_t *disk)
{
	size_t i;

	pbuf_u32(b, (uint32_t)ks->n);
	for (i = 0; i < ks->n; i++) {
		const struct shard *s = &ks->v[i];

		pbuf_bytes(b, s->id, PROTO_ID_SIZE);
		pbuf_u8(b, s->state);
		pbuf_u32(b, s->layer);
		pbuf_str(b, s->label);
		pbuf_u64(b, s->imported_ns);
		pbuf_u64(b, s->revoked_ns);
		/* A shard that is revoking is already gone from the file. */
		if (s->state != PROTO_SHARD_ACTIVE)
			continue;
		if (!s->in_kernel)
			pbuf_bytes(b, s->key, PROTO_KEY_SIZE);
		else if (disk)
			pbuf_bytes(b, disk + i * PROTO_KEY_SIZE, PROTO_KEY_SIZE);
		else
			b->err = -EINVAL;
	}
}

static void entry_decode(struct pcur *c, struct shard *s)
{
	pcur_bytes(c, s->id, PROTO_ID_SIZE, "shard id");
	s->state = pcur_u8(c, "state");
	s->layer = pcur_u32(c, "layer");
	pcur_str(c, s->label, sizeof(s->label), PSTR_LABEL, "label");
	s->imported_ns = pcur_u64(c, "imported");
	s->revoked_ns = pcur_u64(c, "revoked");
	if (s->state == PROTO_SHARD_ACTIVE)
		pcur_bytes(c, s->key, PROTO_KEY_SIZE, "key");
	else if (s->state != PROTO_SHARD_REVOKING &&
		 s->state != PROTO_SHARD_REVOKED)
		pcur_fail(c, -EBADMSG, "state: unknown");
}

static int body_decode(struct keystore *ks, const uint8_t *p, size_t len)
{
	struct pcur c;
	uint32_t n, i;
	int ret;

	pcur_init(&c, p, len);
	n = pcur_count(&c, KS_MAX_SHARDS, 16 + 1 + 4 + 3 + 16, "shard count");
	ret = c.err ? c.err : table_reserve(ks, n);
	for (i = 0; !ret && i < n && !c.err; i++) {
		entry_decode(&c, &ks->v[i]);
		ks->n = i + 1;
	}
	if (!ret)
		ret = pcur_end(&c);
	if (ret)
		dlog(LOG_ERR, "keystore: body: %s", c.why ? c.why : strerror(-ret));
	return ret;
}

struct ks_hdr {
	uint64_t generation;
	uint8_t kek_id[16];
	uint8_t nonce[KS_NONCE];
	uint32_t blen;
};

static int hdr_decode(const uint8_t *file, size_t len, struct ks_hdr *h)
{
	struct pcur c;
	char magic[8];

	pcur_init(&c, file, len);
	pcur_bytes(&c, magic, 8, "magic");
	if (pcur_u32(&c, "version") != KS_VERSION || memcmp(magic, KS_MAGIC, 8))
		pcur_fail(&c, -EPROTONOSUPPORT, "magic or version");
	if (pcur_u32(&c, "flags"))
		pcur_fail(&c, -EBADMSG, "flags");
	h->generation = pcur_u64(&c, "generation");
	pcur_bytes(&c, h->kek_id, 16, "kek id");
	pcur_bytes(&c, h->nonce, KS_NONCE, "nonce");
	h->blen = pcur_u32(&c, "body length");
	if (!c.err && (size_t)h->blen + KS_HDR_SIZE + KS_TAG != len)
		pcur_fail(&c, -EBADMSG, "body length: not the file's");
	if (c.err)
		dlog(LOG_ERR, "keystore: header: %s", c.why);
	return c.err;
}

/* The body of @file, decrypted under @kek into secmem (h->blen bytes). */
static int body_open(const uint8_t *kek, const uint8_t *file,
		     const struct ks_hdr *h, uint8_t **body)
{
	int ret;

	*body = secmem_alloc(h->blen ? h->blen : 1);
	if (!*body)
		return -ENOMEM;
	ret = gcm(0, kek, h->nonce, file, KS_HDR_SIZE, file + KS_HDR_SIZE,
		  h->blen, *body, (uint8_t *)file + KS_HDR_SIZE + h->blen);
	if (ret) {
		dlog(LOG_ERR, "keystore: authentication failed (tampered, or another KEK)");
		secmem_free(*body, h->blen ? h->blen : 1);
		*body = NULL;
	}
	return ret;
}

static size_t in_kernel_count(const struct keystore *ks)
{
	size_t i, n = 0;

	for (i = 0; i < ks->n; i++)
		n += ks->v[i].in_kernel && ks->v[i].state == PROTO_SHARD_ACTIVE;
	return n;
}

/* Copy the keys of the active in_kernel shards from @body into @keys. */
static int body_keys(const struct keystore *ks, const uint8_t *body,
		     size_t len, uint8_t *keys, size_t want)
{
	struct shard *e = secmem_alloc(sizeof(*e));
	size_t i, found = 0;
	struct pcur c;
	uint32_t n;

	if (!e)
		return -ENOMEM;
	pcur_init(&c, body, len);
	n = pcur_count(&c, KS_MAX_SHARDS, 16 + 1 + 4 + 3 + 16, "shard count");
	for (i = 0; i < n && !c.err; i++) {
		const struct shard *s = &ks->v[i];

		entry_decode(&c, e);
		/* Shards are only ever appended: the file is a prefix. */
		if (!c.err && (i >= ks->n || memcmp(e->id, s->id, PROTO_ID_SIZE)))
			pcur_fail(&c, -EBADMSG, "not the table in memory");
		if (!c.err && s->in_kernel && s->state == PROTO_SHARD_ACTIVE) {
			if (e->state != PROTO_SHARD_ACTIVE)
				pcur_fail(&c, -EBADMSG, "an active key is not");
			memcpy(keys + i * PROTO_KEY_SIZE, e->key, PROTO_KEY_SIZE);
			found++;
		}
		secmem_wipe(e, sizeof(*e));
	}
	secmem_free(e, sizeof(*e));
	if (!c.err && found != want)
		pcur_fail(&c, -EBADMSG, "a key the kernel holds is missing");
	if (c.err)
		dlog(LOG_ERR, "keystore: reading back the keys the kernel holds: %s",
		     c.why);
	return c.err;
}

/*
 * The keys of the active shards whose key the kernel module holds, read
 * back from the current file: indexed like ks->v, PROTO_KEY_SIZE bytes
 * each, in secmem (*@cap bytes; secmem_free() it). NULL when none is
 * in_kernel. The file is always the one written under ks->kek.
 */
static int ks_disk_keys(struct keystore *ks, uint8_t **keys, size_t *cap)
{
	size_t want = in_kernel_count(ks), len = 0;
	uint8_t *file = NULL, *body = NULL;
	struct ks_hdr h;
	int ret;

	*keys = NULL;
	*cap = 0;
	if (!want)
		return 0;
	ret = file_read_all(ks->dirfd, KS_FILE,
			    KS_HDR_SIZE + KS_TAG + 4 +
				    (size_t)KS_MAX_SHARDS * KS_ENTRY_MAX,
			    &file, &len);
	if (ret) {
		dlog(LOG_ERR, "keystore: cannot read it back: %s", strerror(-ret));
		return ret;
	}
	ret = hdr_decode(file, len, &h);
	if (!ret && memcmp(h.kek_id, ks->kek_id, 16)) {
		dlog(LOG_ERR, "keystore: the file is not under the current KEK");
		ret = -EBADMSG;
	}
	if (!ret)
		ret = body_open(ks->kek, file, &h, &body);
	if (!ret) {
		*cap = ks->n * PROTO_KEY_SIZE;
		*keys = secmem_alloc(*cap);
		ret = *keys ? body_keys(ks, body, h.blen, *keys, want) : -ENOMEM;
		secmem_free(body, h.blen ? h.blen : 1);
	}
	free(file);
	if (ret) {
		secmem_free(*keys, *cap);
		*keys = NULL;
		*cap = 0;
	}
	return ret;
}

/*
 * Write the keystore under @kek (the current KEK or a fresh one). The body
 * exists in the clear only in secmem; the file holds ciphertext.
 */
static int ks_write(struct keystore *ks, const uint8_t *kek,
		    const uint8_t kek_id[16])
{
	size_t cap = 4 + ks->n * KS_ENTRY_MAX, flen, disk_cap = 0;
	uint8_t *body, *file = NULL, nonce[KS_NONCE], *disk = NULL;
	struct pbuf b, h;
	int ret;

	ret = ks_disk_keys(ks, &disk, &disk_cap);
	if (ret)
		return ret;
	body = secmem_alloc(cap);
	if (!body) {
		secmem_free(disk, disk_cap);
		return -ENOMEM;
	}
	pbuf_init(&b, body, cap, 0);
	b.limit = cap;
	body_encode(ks, &b, disk);
	secmem_free(disk, disk_cap);
	ret = b.err ? b.err : random_bytes(nonce, sizeof(nonce));
	if (ret)
		goto out;
	flen = KS_HDR_SIZE + b.len + KS_TAG;
	file = malloc(flen);
	if (!file) {
		ret = -ENOMEM;
		goto out;
	}
	pbuf_init(&h, file, KS_HDR_SIZE, 0);
	pbuf_bytes(&h, KS_MAGIC, 8);
	pbuf_u32(&h, KS_VERSION);
	pbuf_u32(&h, 0);
	pbuf_u64(&h, ks->generation + 1);
	pbuf_bytes(&h, kek_id, 16);
	pbuf_bytes(&h, nonce, KS_NONCE);
	pbuf_u32(&h, (uint32_t)b.len);
	ret = gcm(1, kek, nonce, file, KS_HDR_SIZE, body, b.len,
		  file + KS_HDR_SIZE, file + KS_HDR_SIZE + b.len);
	if (!ret)
		ret = file_write_durable(ks->dirfd, KS_FILE, file, flen, 1);
	if (!ret)
		ks->generation++;
out:
	free(file);
	secmem_free(body, cap);
	return ret;
}

/* Remove every kek-* but the current one, and temporary files. */
static void ks_sweep(struct keystore *ks)
{
	char cur[40];
	struct dirent *de;
	DIR *dir;
	int fd;

	kek_name(ks->kek_id, cur);
	fd = dup(ks->dirfd);
	if (fd < 0)
		return;
	dir = fdopendir(fd);
	if (!dir) {
		close(fd);
		return;
	}
	while ((de = readdir(dir))) {
		if (!strncmp(de->d_name, "kek-", 4) && strcmp(de->d_name, cur))
			file_wipe_unlink(ks->dirfd, de->d_name);
		else if (!strcmp(de->d_name, ".kek.tmp") ||
			 !strcmp(de->d_name, "." KS_FILE ".tmp"))
			file_wipe_unlink(ks->dirfd, de->d_name);
	}
	closedir(dir);
	dir_sync(ks->dirfd);
}

/*
 * A fresh KEK: written durably under its own name, made current only once
 * the keystore wrapped under it is durable. The old one is destroyed by
 * ks_destroy_old_kek(), which a revocation calls once its notices are out
 * so that the holders' wipes and this overlap; a crash in between leaves
 * it to ks_sweep() at the next start.
 */
static int ks_rotate(struct keystore *ks)
{
	uint8_t *kek, id[16];
	char name[40];
	int ret;

	ret = ks_destroy_old_kek(ks);
	if (ret)
		return ret;
	kek = secmem_alloc(PROTO_KEY_SIZE);
	if (!kek)
		return -ENOMEM;
	ret = random_bytes(kek, PROTO_KEY_SIZE);
	if (ret)
		goto fail;
	kek_id_of(kek, id);
	kek_name(id, name);
	ret = file_write_durable(ks->dirfd, name, kek, PROTO_KEY_SIZE, 0);
	if (ret)
		goto fail;
	ret = ks_write(ks, kek, id);
	if (ret) {
		file_wipe_unlink(ks->dirfd, name);
		goto fail;
	}
	/* A new state directory has no KEK before its first. */
	memcpy(ks->old_kek_id, ks->kek_id, 16);
	ks->old_kek = ks->have_kek;
	ks->have_kek = 1;
	secmem_free(ks->kek, PROTO_KEY_SIZE);
	ks->kek = kek;
	memcpy(ks->kek_id, id, 16);
	return 0;
fail:
	secmem_free(kek, PROTO_KEY_SIZE);
	return ret;
}

int ks_destroy_old_kek(struct keystore *ks)
{
	char old[40];
	int ret;

	if (!ks->old_kek)
		return 0;
	kek_name(ks->old_kek_id, old);
	ret = file_wipe_unlink(ks->dirfd, old);
	if (!ret)
		ret = dir_sync(ks->dirfd);
	if (ret) {
		dlog(LOG_WARNING, "keystore: could not destroy the old KEK %s: %s",
		     old, strerror(-ret));
		return ret;
	}
	ks->old_kek = 0;
	return 0;
}

static int ks_load(struct keystore *ks, const uint8_t *file, size_t len)
{
	uint8_t *kekbuf = NULL, *body = NULL, id[16];
	char name[40];
	size_t keklen = 0;
	struct ks_hdr h;
	int ret;

	ret = hdr_decode(file, len, &h);
	if (ret)
		return ret;
	ks->generation = h.generation;
	memcpy(ks->kek_id, h.kek_id, 16);
	kek_name(ks->kek_id, name);
	ret = file_read_all(ks->dirfd, name, PROTO_KEY_SIZE, &kekbuf, &keklen);
	if (ret || keklen != PROTO_KEY_SIZE) {
		dlog(LOG_ERR, "keystore: its KEK %s: %s", name,
		     ret ? strerror(-ret) : "not 32 bytes");
		ret = ret ? ret : -EBADMSG;
		goto out;
	}
	memcpy(ks->kek, kekbuf, PROTO_KEY_SIZE);
	kek_id_of(ks->kek, id);
	if (memcmp(id, ks->kek_id, 16)) {
		dlog(LOG_ERR, "keystore: %s does not match its name", name);
		ret = -EBADMSG;
		goto out;
	}
	ret = body_open(ks->kek, file, &h, &body);
	if (!ret) {
		ret = body_decode(ks, body, h.blen);
		secmem_free(body, h.blen ? h.blen : 1);
	}
out:
	if (kekbuf) {
		explicit_bzero(kekbuf, keklen);
		free(kekbuf);
	}
	return ret;
}

int ks_open(struct keystore *ks, int dirfd)
{
	uint8_t *file = NULL;
	size_t len;
	int ret;

	memset(ks, 0, sizeof(*ks));
	ks->dirfd = dirfd;
	ks->kek = secmem_alloc(PROTO_KEY_SIZE);
	if (!ks->kek)
		return -ENOMEM;
	ret = file_read_all(dirfd, KS_FILE,
			    KS_HDR_SIZE + KS_TAG + 4 +
				    (size_t)KS_MAX_SHARDS * KS_ENTRY_MAX,
			    &file, &len);
	if (ret == -ENOENT) {
		/* A new state directory: the first KEK and an empty store. */
		ret = ks_rotate(ks);
		if (!ret)
			ks_sweep(ks);
		return ret;
	}
	if (!ret)
		ret = ks_load(ks, file, len);
	free(file);
	ks->have_kek = !ret;
	if (!ret)
		ks_sweep(ks);
	return ret;
}

void ks_close(struct keystore *ks)
{
	secmem_free(ks->v, ks->cap * sizeof(*ks->v));
	secmem_free(ks->kek, PROTO_KEY_SIZE);
	ks->v = NULL;
	ks->kek = NULL;
	ks->n = ks->cap = 0;
}

struct shard *ks_find(struct keystore *ks, const uint8_t id[PROTO_ID_SIZE])
{
	size_t i;

	for (i = 0; i < ks->n; i++)
		if (!memcmp(ks->v[i].id, id, PROTO_ID_SIZE))
			return &ks->v[i];
	return NULL;
}

/* Is @k already in the table (or earlier in this import)? @disk: as
 * ks_disk_keys() gives them. */
static int import_check(struct keystore *ks, const struct proto_key *k,
			const uint8_t *disk, const char **why)
{
	struct shard *s = ks_find(ks, k->id);
	const uint8_t *key;

	if (!s)
		return 0;
	if (s->state != PROTO_SHARD_ACTIVE) {
		*why = "a revoked shard id";
		return -EKEYREVOKED;
	}
	key = s->key;
	if (s->in_kernel)
		key = disk + (size_t)(s - ks->v) * PROTO_KEY_SIZE;
	if (memcmp(key, k->key, PROTO_KEY_SIZE) || s->layer != k->layer ||
	    strcmp(s->label, k->label)) {
		*why = "a shard id already held with another key or label";
		return -EEXIST;
	}
	return 1;
}

int ks_import(struct keystore *ks, const struct proto_key *keys, uint32_t n,
	      uint32_t *added, uint32_t *present, const char **why)
{
	size_t old_n = ks->n, disk_cap = 0;
	uint64_t now = now_real_ns();
	uint8_t *disk = NULL;
	uint32_t i;
	int ret;

	*added = *present = 0;
	*why = NULL;
	/* Taken before the table may move: indexed like it. */
	ret = ks_disk_keys(ks, &disk, &disk_cap);
	if (ret)
		*why = "the keystore could not be read back";
	if (!ret)
		ret = table_reserve(ks, ks->n + n);
	for (i = 0; !ret && i < n; i++) {
		struct shard *s;

		ret = import_check(ks, &keys[i], disk, why);
		if (ret > 0) {
			(*present)++;
			ret = 0;
			continue;
		}
		if (ret)
			break;
		s = &ks->v[ks->n++];
		memset(s, 0, sizeof(*s));
		memcpy(s->id, keys[i].id, PROTO_ID_SIZE);
		memcpy(s->key, keys[i].key, PROTO_KEY_SIZE);
		memcpy(s->label, keys[i].label, sizeof(s->label));
		s->layer = keys[i].layer;
		s->state = PROTO_SHARD_ACTIVE;
		s->imported_ns = now;
		(*added)++;
	}
	secmem_free(disk, disk_cap);
	if (!ret && *added)
		ret = ks_write(ks, ks->kek, ks->kek_id);
	if (ret) {
		explicit_bzero(ks->v + old_n, (ks->n - old_n) * sizeof(*ks->v));
		ks->n = old_n;
		*added = *present = 0;
	}
	return ret;
}

int ks_mark_revoking(struct keystore *ks, struct shard **s, size_t n)
{
	uint64_t now = now_real_ns();
	size_t i;
	int ret;

	for (i = 0; i < n; i++) {
		s[i]->state = PROTO_SHARD_REVOKING;
		s[i]->revoked_ns = now;
	}
	ret = ks_rotate(ks);
	for (i = 0; i < n; i++) {
		if (ret) {
			s[i]->state = PROTO_SHARD_ACTIVE;
			s[i]->revoked_ns = 0;
		} else {
			explicit_bzero(s[i]->key, PROTO_KEY_SIZE);
		}
	}
	return ret;
}

size_t ks_set_revoked(struct keystore *ks, struct shard **s, size_t n)
{
	size_t i, changed = 0;

	for (i = 0; i < n; i++) {
		if (s[i] && s[i]->state == PROTO_SHARD_REVOKING) {
			s[i]->state = PROTO_SHARD_REVOKED;
			changed++;
		}
	}
	return changed;
}

int ks_sync(struct keystore *ks)
{
	return ks_write(ks, ks->kek, ks->kek_id);
}

void ks_hand_over(struct keystore *ks, struct shard *s)
{
	explicit_bzero(s->key, PROTO_KEY_SIZE);
	s->in_kernel = 1;
}
