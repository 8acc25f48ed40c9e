// SPDX-License-Identifier: MIT
/*
 * The AES-256-GCM layer of the shard format. Every call gets its own
 * EVP_CIPHER_CTX, so chunks can be sealed and opened from any number of
 * threads at once; the context is freed (and cleansed by libcrypto) before
 * returning, so no key schedule outlives the call.
 *
 * Nonce: 4 zero bytes, then the chunk index as little-endian u64. The key
 * is per shard and each chunk index is used once, so a (key, nonce) pair
 * never repeats; the key check uses index OSH_KEYCHECK_NONCE, which no
 * chunk can have (chunk_count <= OSH_MAX_CHUNKS).
 */
#include <ctype.h>
#include <errno.h>
#include <string.h>

#include <openssl/evp.h>

#include "shard.h"
#include "shard_priv.h"

#define GCM_IV_LEN 12

int osh_aad_init(struct osh_aad *aad, const struct osh_header *h)
{
	struct osh_header tmp;
	unsigned int len = 0;
	int ok;

	memset(aad, 0, sizeof(*aad));
	aad->version = h->version;
	memcpy(aad->shard_id, h->shard_id, OSH_ID_SIZE);
	memcpy(aad->model_id, h->model_id, sizeof(aad->model_id));
	aad->chunk_count = h->chunk_count;
	aad->plaintext_len = h->plaintext_len;

	tmp = *h;
	memset(tmp.key_check, 0, sizeof(tmp.key_check));
	ok = EVP_Digest(&tmp, sizeof(tmp), aad->header_sha256, &len,
			EVP_sha256(), NULL);
	return ok && len == 32 ? 0 : -EIO;
}

static void make_nonce(uint64_t idx, uint8_t iv[GCM_IV_LEN])
{
	unsigned int i;

	memset(iv, 0, 4);
	for (i = 0; i < 8; i++)
		iv[4 + i] = (uint8_t)(idx >> (8 * i));
}

/* Key, nonce and AAD into a fresh context for @enc (1) or decryption. */
static EVP_CIPHER_CTX *gcm_start(const uint8_t *key, uint64_t idx,
				 const struct osh_aad *aad, int enc)
{
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	uint8_t iv[GCM_IV_LEN];
	struct osh_aad a = *aad;
	int outl;

	if (!c)
		return NULL;
	a.chunk_index = idx;
	make_nonce(idx, iv);
	if (EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL, enc) &&
	    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_IVLEN, GCM_IV_LEN,
				NULL) &&
	    EVP_CipherInit_ex(c, NULL, NULL, key, iv, enc) &&
	    EVP_CipherUpdate(c, NULL, &outl, (const unsigned char *)&a,
			     (int)sizeof(a)))
		return c;
	EVP_CIPHER_CTX_free(c);
	return NULL;
}

static int gcm_run(EVP_CIPHER_CTX *c, const void *in, void *out, size_t len)
{
	const unsigned char *s = in;
	unsigned char *d = out;
	int outl;

	while (len) {
		int n = len > (1u << 30) ? 1 << 30 : (int)len;

		if (!EVP_CipherUpdate(c, d, &outl, s, n) || outl != n)
			return -EIO;
		s += n;
		d += n;
		len -= (size_t)n;
	}
	return 0;
}

int osh_gcm_seal(const uint8_t *key, uint64_t idx, const struct osh_aad *aad,
		 const void *in, void *out, size_t len,
		 uint8_t tag[OSH_TAG_SIZE])
{
	EVP_CIPHER_CTX *c = gcm_start(key, idx, aad, 1);
	unsigned char fin[16];
	int outl = 0, ret;

	if (!c)
		return -EIO;
	ret = gcm_run(c, in, out, len);
	if (!ret && (!EVP_CipherFinal_ex(c, fin, &outl) || outl ||
		     !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG,
					  OSH_TAG_SIZE, tag)))
		ret = -EIO;
	EVP_CIPHER_CTX_free(c);
	return ret;
}

int osh_gcm_open(const uint8_t *key, uint64_t idx, const struct osh_aad *aad,
		 const void *in, void *out, size_t len,
		 const uint8_t tag[OSH_TAG_SIZE])
{
	EVP_CIPHER_CTX *c = gcm_start(key, idx, aad, 0);
	unsigned char fin[16];
	int outl = 0, ret;

	if (!c)
		return -EIO;
	ret = gcm_run(c, in, out, len);
	if (!ret && !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, OSH_TAG_SIZE,
					 (void *)tag))
		ret = -EIO;
	/* Final is where GCM compares the tag (in constant time). */
	if (!ret && EVP_CipherFinal_ex(c, fin, &outl) <= 0)
		ret = -EBADMSG;
	EVP_CIPHER_CTX_free(c);
	return ret;
}

int osh_label_ok(const char *label)
{
	size_t i, n;

	if (!label)
		return 0;
	n = strnlen(label, OSH_LABEL_MAX);
	if (!n || n >= OSH_LABEL_MAX)
		return 0;
	for (i = 0; i < n; i++)
		if (!isgraph((unsigned char)label[i]))
			return 0;
	return 1;
}

void osh_id_to_hex(const uint8_t id[OSH_ID_SIZE], char hex[33])
{
	static const char digits[] = "0123456789abcdef";
	unsigned int i;

	for (i = 0; i < OSH_ID_SIZE; i++) {
		hex[2 * i] = digits[id[i] >> 4];
		hex[2 * i + 1] = digits[id[i] & 15];
	}
	hex[32] = 0;
}

static int nibble(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int osh_id_from_hex(const char *hex, uint8_t id[OSH_ID_SIZE])
{
	uint8_t tmp[OSH_ID_SIZE];
	unsigned int i;

	if (!hex || strnlen(hex, 33) != 32)
		return -EINVAL;
	for (i = 0; i < OSH_ID_SIZE; i++) {
		int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -EINVAL;
		tmp[i] = (uint8_t)(hi << 4 | lo);
	}
	memcpy(id, tmp, OSH_ID_SIZE);
	return 0;
}
