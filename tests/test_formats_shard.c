// SPDX-License-Identifier: MIT
/*
 * <id>.osh: round trips, the crypto against the written specification,
 * tampering (each chunk, the tag table, the header, swapped and
 * transplanted chunks), every header rejection.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "secmem.h"
#include "shard.h"
#include "shard_fixture.h"
#include "testutil.h"

static struct tu_log lg;
static struct ortho_ctx *ctx;
static char *dir;

static void setup(void)
{
	tu_fixture_setup(&lg, &ctx, &dir, "shard");
}

static void teardown(void)
{
	tu_fixture_teardown(ctx, dir);
}

static char *in_dir(const char *name)
{
	char *p;

	ck_assert_int_ge(asprintf(&p, "%s/%s", dir, name), 0);
	return p;
}

static void patch(const char *path, uint64_t off, const void *p, size_t n)
{
	int fd = open(path, O_WRONLY);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, p, n, (off_t)off), (ssize_t)n);
	close(fd);
}

static void flip(const char *path, uint64_t off)
{
	int fd = open(path, O_RDWR);
	uint8_t b;

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, &b, 1, (off_t)off), 1);
	b ^= 0x10;
	ck_assert_int_eq(pwrite(fd, &b, 1, (off_t)off), 1);
	close(fd);
}

static uint8_t key_a[OSH_KEY_SIZE];

/* Writes shard @name from @s with key_a; returns its path (caller frees). */
static char *write_shard(const char *name, struct src *s, uint64_t seed)
{
	struct osh_write_params p;
	char *path = in_dir(name);

	params(&p, key_a, seed);
	ck_assert_int_eq(osh_write(ctx, path, &p, s->t, s->n), 0);
	return path;
}

static uint8_t *read_shard(const char *path, const uint8_t *key,
			   struct osh_file *f)
{
	uint32_t bad = 0;
	uint8_t *pt;

	ck_assert_int_eq(osh_open(ctx, path, f), 0);
	pt = secmem_alloc(f->hdr.plaintext_len);
	ck_assert_ptr_nonnull(pt);
	ck_assert_int_eq(osh_read_all(ctx, f, key, pt, &bad), 0);
	ck_assert_uint_eq(bad, UINT32_MAX);
	return pt;
}

START_TEST(shard_round_trip)
{
	struct osp_view_tensor v[4];
	struct osh_file f;
	struct src s;
	uint8_t *pt, id[OSH_ID_SIZE];
	char hex[33], *path;
	unsigned int i;

	small_src(&s);
	path = write_shard("small.osh", &s, 10);
	pt = read_shard(path, key_a, &f);
	ck_assert_uint_eq(f.hdr.chunk_count, 1);
	ck_assert_uint_eq(f.hdr.tensor_count, 4);
	ck_assert_str_eq(f.hdr.label, "tenant-a");
	ck_assert_uint_eq(f.hdr.layer, 3);
	ck_assert_uint_eq(f.hdr.data_offset % 4096, 0);
	ck_assert_uint_eq(f.size % 4096, 0);
	ck_assert_int_eq(osh_check_key(&f, key_a), 0);
	ck_assert_int_eq(osp_parse(ctx, pt, f.hdr.plaintext_len, v, 4), 4);
	for (i = 0; i < 4; i++)
		compare(&v[i], &s.t[i]);
	ck_assert_uint_gt(s.t[1].nnz, 0);
	ck_assert_uint_gt(((const uint32_t *)v[1].col)[s.t[1].nnz - 1], 65535);

	osh_id_to_hex(f.hdr.shard_id, hex);
	ck_assert_uint_eq(strlen(hex), 32);
	ck_assert_int_eq(osh_id_from_hex(hex, id), 0);
	ck_assert_mem_eq(id, f.hdr.shard_id, OSH_ID_SIZE);
	ck_assert_int_eq(osh_id_from_hex("0123", id), -EINVAL);
	ck_assert_int_eq(osh_id_from_hex("0123456789abcdef0123456789abcdeg", id),
			 -EINVAL);
	secmem_free(pt, f.hdr.plaintext_len);
	osh_close(&f);
	src_free(&s);
	free(path);
}
END_TEST

struct job {
	const struct osh_file *f;
	uint32_t idx;
	const uint8_t *want;
	int ret;
};

static void *decrypt_one(void *arg)
{
	struct job *j = arg;
	uint64_t len = osh_chunk_len(j->f, j->idx);
	uint8_t *ct = malloc(len), *pt = malloc(len);

	j->ret = -EIO;
	if (ct && pt && pread(j->f->fd, ct, len, (off_t)(j->f->hdr.data_offset +
				(uint64_t)j->idx * OSH_CHUNK_SIZE)) == (ssize_t)len) {
		j->ret = osh_decrypt_chunk(j->f, key_a, j->idx, ct, pt);
		if (!j->ret && memcmp(pt, j->want, len))
			j->ret = -EDOM;
	}
	free(ct);
	free(pt);
	return NULL;
}

START_TEST(shard_multi_chunk)
{
	struct osp_view_tensor v[2];
	struct job jobs[3];
	pthread_t th[3];
	struct osh_file f;
	struct src s;
	char *path;
	uint8_t *pt;
	int i;

	big_src(&s);
	path = write_shard("big.osh", &s, 20);
	pt = read_shard(path, key_a, &f);
	ck_assert_uint_eq(f.hdr.chunk_count, 3);
	ck_assert_uint_gt(f.hdr.plaintext_len, 2 * OSH_CHUNK_SIZE);
	ck_assert_uint_eq(osh_chunk_len(&f, 0), OSH_CHUNK_SIZE);
	ck_assert_uint_eq(osh_chunk_len(&f, 2),
			  f.hdr.plaintext_len - 2 * OSH_CHUNK_SIZE);
	ck_assert_uint_eq(osh_chunk_len(&f, 3), 0);
	ck_assert_int_eq(osh_decrypt_chunk(&f, key_a, 3, pt, pt), -EINVAL);
	ck_assert_uint_eq(f.size, (f.hdr.data_offset + f.hdr.plaintext_len +
				   4095) / 4096 * 4096);
	ck_assert_int_eq(osp_parse(ctx, pt, f.hdr.plaintext_len, v, 2), 2);
	compare(&v[0], &s.t[0]);
	compare(&v[1], &s.t[1]);
	/* Chunks on their own, at once, last first. */
	for (i = 2; i >= 0; i--) {
		jobs[i] = (struct job){ &f, (uint32_t)i,
					pt + (size_t)i * OSH_CHUNK_SIZE, 1 };
		ck_assert_int_eq(pthread_create(&th[i], NULL, decrypt_one,
						&jobs[i]), 0);
	}
	for (i = 0; i < 3; i++) {
		pthread_join(th[i], NULL);
		ck_assert_int_eq(jobs[i].ret, 0);
	}
	secmem_free(pt, f.hdr.plaintext_len);
	osh_close(&f);
	src_free(&s);
	free(path);
}
END_TEST

/* Decrypt chunk @idx with EVP directly, from lib/FORMATS.md alone. */
static int spec_decrypt(const uint8_t *file, uint64_t idx, const uint8_t *key,
			uint8_t *out, size_t len, const uint8_t *ct,
			const uint8_t *tag)
{
	struct osh_header h;
	struct osh_aad aad = { 0 };
	uint8_t iv[12] = { 0 };
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	unsigned int mdlen;
	int outl, ok;

	memcpy(&h, file, sizeof(h));
	memset(h.key_check, 0, sizeof(h.key_check));
	aad.version = h.version;
	memcpy(aad.shard_id, h.shard_id, 16);
	memcpy(aad.model_id, h.model_id, 32);
	aad.chunk_index = idx;
	aad.chunk_count = h.chunk_count;
	aad.plaintext_len = h.plaintext_len;
	EVP_Digest(&h, sizeof(h), aad.header_sha256, &mdlen, EVP_sha256(),
		   NULL);
	memcpy(iv + 4, &idx, 8);
	ok = EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, iv) &&
	     EVP_DecryptUpdate(c, NULL, &outl, (void *)&aad, sizeof(aad)) &&
	     (!len || EVP_DecryptUpdate(c, out, &outl, ct, (int)len)) &&
	     EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16, (void *)tag) &&
	     EVP_DecryptFinal_ex(c, out + len, &outl) > 0;
	EVP_CIPHER_CTX_free(c);
	return ok;
}

START_TEST(shard_matches_spec)
{
	struct osh_file f;
	struct osh_header h;
	struct src s;
	uint8_t *file, *pt, *out;
	char *path;
	size_t n;

	_Static_assert(sizeof(struct osh_aad) == 112, "aad layout");
	big_src(&s);
	path = write_shard("big.osh", &s, 30);
	pt = read_shard(path, key_a, &f);
	file = tu_read_file(path, &n);
	ck_assert_ptr_nonnull(file);
	memcpy(&h, file, sizeof(h));
	ck_assert_uint_eq(h.tag_offset, 4096);
	out = malloc(OSH_CHUNK_SIZE + 16);
	ck_assert(spec_decrypt(file, 1, key_a, out, OSH_CHUNK_SIZE,
			       file + h.data_offset + OSH_CHUNK_SIZE,
			       file + h.tag_offset + 16));
	ck_assert_mem_eq(out, pt + OSH_CHUNK_SIZE, OSH_CHUNK_SIZE);
	/* The key check: the tag of nothing at index 2^64 - 1. */
	ck_assert(spec_decrypt(file, UINT64_MAX, key_a, out, 0, NULL,
			       h.key_check));
	ck_assert(!spec_decrypt(file, UINT64_MAX - 1, key_a, out, 0, NULL,
				h.key_check));
	free(out);
	free(file);
	secmem_free(pt, f.hdr.plaintext_len);
	osh_close(&f);
	src_free(&s);
	free(path);
}
END_TEST

START_TEST(shard_wrong_key)
{
	uint8_t key[OSH_KEY_SIZE], *pt;
	struct osh_file f;
	struct src s;
	uint32_t bad = 0;
	char *path;

	small_src(&s);
	path = write_shard("small.osh", &s, 40);
	memcpy(key, key_a, sizeof(key));
	key[31] ^= 1;
	ck_assert_int_eq(osh_open(ctx, path, &f), 0);
	ck_assert_int_eq(osh_check_key(&f, key), -EKEYREJECTED);
	pt = secmem_alloc(f.hdr.plaintext_len);
	ck_assert_int_eq(osh_read_all(ctx, &f, key, pt, &bad), -EKEYREJECTED);
	ck_assert(tu_log_has(&lg, "key check failed"));
	ck_assert_uint_eq(bad, UINT32_MAX);
	secmem_free(pt, f.hdr.plaintext_len);
	osh_close(&f);
	src_free(&s);
	free(path);
}
END_TEST

static int all_zero(const uint8_t *p, uint64_t n)
{
	uint64_t i;

	for (i = 0; i < n; i++)
		if (p[i])
			return 0;
	return 1;
}

/* Expect osh_read_all() to fail at @chunk with the output wiped. */
static void expect_bad_chunk(const char *path, uint32_t chunk)
{
	struct osh_file f;
	uint32_t bad = 0;
	char needle[32];
	uint8_t *pt;

	ck_assert_int_eq(osh_open(ctx, path, &f), 0);
	pt = secmem_alloc(f.hdr.plaintext_len);
	memset(pt, 0x5a, f.hdr.plaintext_len);
	tu_log_clear(&lg);
	ck_assert_int_eq(osh_read_all(ctx, &f, key_a, pt, &bad), -EBADMSG);
	ck_assert_uint_eq(bad, chunk);
	snprintf(needle, sizeof(needle), "chunk %u of %u", chunk,
		 f.hdr.chunk_count);
	ck_assert_msg(tu_log_has(&lg, needle), "log: %s", lg.buf);
	ck_assert(all_zero(pt, f.hdr.plaintext_len));
	secmem_free(pt, f.hdr.plaintext_len);
	osh_close(&f);
}

/* Byte flipped in chunk 0, 1, 2 and in the last byte of the last chunk. */
START_TEST(shard_flipped_chunk)
{
	static const uint64_t where[] = { 100, OSH_CHUNK_SIZE + 5,
					  2 * OSH_CHUNK_SIZE + 777, 0 };
	struct osh_file f;
	struct src s;
	uint64_t off;
	char *path;

	big_src(&s);
	path = write_shard("big.osh", &s, 50);
	ck_assert_int_eq(osh_open(ctx, path, &f), 0);
	off = _i < 3 ? where[_i] : f.hdr.plaintext_len - 1;
	flip(path, f.hdr.data_offset + off);
	expect_bad_chunk(path, (uint32_t)(off / OSH_CHUNK_SIZE));
	osh_close(&f);
	src_free(&s);
	free(path);
}
END_TEST

START_TEST(shard_flipped_tag)
{
	struct src s;
	char *path;

	big_src(&s);
	path = write_shard("big.osh", &s, 60);
	flip(path, 4096 + 16 + 3);
	expect_bad_chunk(path, 1);
	src_free(&s);
	free(path);
}
END_TEST

/* Chunks 0 and 1 (ciphertext and tags) swapped: bound to their index. */
START_TEST(shard_swapped_chunks)
{
	struct osh_file f;
	struct src s;
	uint8_t *file;
	char *path;
	size_t n;

	big_src(&s);
	path = write_shard("big.osh", &s, 70);
	ck_assert_int_eq(osh_open(ctx, path, &f), 0);
	file = tu_read_file(path, &n);
	patch(path, f.hdr.data_offset, file + f.hdr.data_offset + OSH_CHUNK_SIZE,
	      OSH_CHUNK_SIZE);
	patch(path, f.hdr.data_offset + OSH_CHUNK_SIZE,
	      file + f.hdr.data_offset, OSH_CHUNK_SIZE);
	patch(path, 4096, file + 4096 + 16, 16);
	patch(path, 4096 + 16, file + 4096, 16);
	expect_bad_chunk(path, 0);
	free(file);
	osh_close(&f);
	src_free(&s);
	free(path);
}
END_TEST

/* A chunk and its tag moved from another shard under the same key. */
START_TEST(shard_transplanted_chunk)
{
	uint8_t *other, other_key[OSH_KEY_SIZE];
	struct osh_write_params p;
	struct osh_file f;
	struct src s;
	char *a, *b;
	size_t n;

	big_src(&s);
	a = write_shard("a.osh", &s, 80);
	ck_assert_int_eq(osh_open(ctx, a, &f), 0);
	/* Same key and model, another shard id. */
	params(&p, other_key, 81);
	p.key = key_a;
	memcpy(p.model_id, f.hdr.model_id, 32);
	b = in_dir("b.osh");
	ck_assert_int_eq(osh_write(ctx, b, &p, s.t, s.n), 0);
	other = tu_read_file(b, &n);
	patch(a, f.hdr.data_offset + OSH_CHUNK_SIZE,
	      other + f.hdr.data_offset + OSH_CHUNK_SIZE, OSH_CHUNK_SIZE);
	patch(a, 4096 + 16, other + 4096 + 16, 16);
	expect_bad_chunk(a, 1);
	free(other);
	osh_close(&f);
	src_free(&s);
	free(a);
	free(b);
}
END_TEST

/*
 * Header fields every chunk is bound to: the file still opens (the caller
 * compares model ids), but nothing decrypts under the changed header.
 */
START_TEST(shard_header_bound)
{
	struct osh_file f;
	uint8_t *pt, other_id[32];
	struct src s;
	uint32_t bad;
	char *path;

	small_src(&s);
	path = write_shard("small.osh", &s, 90);
	memset(other_id, 0xee, sizeof(other_id));
	if (_i == 0)
		patch(path, offsetof(struct osh_header, model_id), other_id, 32);
	else if (_i == 1)
		patch(path, offsetof(struct osh_header, label), "tenant-b", 8);
	else if (_i == 2)
		patch(path, offsetof(struct osh_header, layer), "\x04", 1);
	else
		flip(path, offsetof(struct osh_header, plaintext_len));
	ck_assert_int_eq(osh_open(ctx, path, &f), 0);
	if (_i == 0)
		ck_assert_mem_eq(f.hdr.model_id, other_id, 32);
	pt = secmem_alloc(f.hdr.plaintext_len + 16);
	ck_assert_int_eq(osh_read_all(ctx, &f, key_a, pt, &bad), -EKEYREJECTED);
	ck_assert(tu_log_has(&lg, "header was modified"));
	/* Past the key check, the chunk itself fails and is wiped. */
	ck_assert_int_eq(pread(f.fd, pt, osh_chunk_len(&f, 0),
			       (off_t)f.hdr.data_offset),
			 (ssize_t)osh_chunk_len(&f, 0));
	ck_assert_int_eq(osh_decrypt_chunk(&f, key_a, 0, pt, pt), -EBADMSG);
	ck_assert(all_zero(pt, osh_chunk_len(&f, 0)));
	secmem_free(pt, f.hdr.plaintext_len + 16);
	osh_close(&f);
	src_free(&s);
	free(path);
}
END_TEST

#define H(f) offsetof(struct osh_header, f)

struct hdr_bad {
	const char *what;
	uint64_t off;
	int width;		/* 4, 8, or 0 for the special cases */
	uint64_t val;
	int err;
	const char *needle;
};

/* The small shard: one chunk, tag table at 4096, data at 8192. */
static const struct hdr_bad hdr_bad[] = {
	{ "magic", 0, 4, 0x21212121, -EBADMSG, "bad magic" },
	{ "version", H(version), 4, 2, -EPROTONOSUPPORT, "version 2" },
	{ "header_size", H(header_size), 4, 2048, -EINVAL, "header_size" },
	{ "chunk_size", H(chunk_size), 4, 4096, -EINVAL, "chunk_size" },
	{ "chunk_count", H(chunk_count), 4, 2, -EINVAL, "chunk_count" },
	{ "chunk_count max", H(chunk_count), 4, OSH_MAX_CHUNKS + 1, -EINVAL,
	  "chunk_count" },
	{ "plaintext_len huge", H(plaintext_len), 8, 1ull << 50, -EINVAL,
	  "plaintext_len" },
	{ "plaintext_len tiny", H(plaintext_len), 8, 8, -EINVAL,
	  "plaintext_len" },
	{ "tensor_count", H(tensor_count), 4, 0, -EINVAL, "tensor_count" },
	{ "tensor_count max", H(tensor_count), 4, 1u << 17, -EINVAL,
	  "tensor_count" },
	{ "tag misaligned", H(tag_offset), 8, 4100, -EINVAL, "tag_offset" },
	{ "tag in header", H(tag_offset), 8, 0, -EINVAL, "tag_offset" },
	{ "tag on data", H(tag_offset), 8, 8192, -EINVAL, "overlap" },
	{ "data on tags", H(data_offset), 8, 4096, -EINVAL, "overlap" },
	{ "data misaligned", H(data_offset), 8, 8192 + 16, -EINVAL,
	  "data_offset" },
	{ "data far away", H(data_offset), 8, 1ull << 60, -EINVAL,
	  "data_offset" },
	{ "file_size", H(file_size), 8, 3 * 4096 + 4096 * 4, -EINVAL,
	  "file_size" },
	{ "reserved", H(reserved) + 40, 4, 1, -EINVAL, "reserved" },
	{ "label unterminated", 0, 0, 0, -EBADMSG, "label" },
	{ "label with a blank", 0, 0, 1, -EBADMSG, "label" },
	{ "label not NUL-padded", 0, 0, 2, -EBADMSG, "label" },
	{ "truncated data", 0, 0, 3, -EBADMSG, "truncated" },
	{ "truncated header", 0, 0, 4, -EBADMSG, "shorter than the header" },
	{ "trailing bytes", 0, 0, 5, -EBADMSG, "trailing" },
	{ "empty file", 0, 0, 6, -EBADMSG, "shorter than the header" },
};

static void hdr_special(const char *path, uint64_t which)
{
	char label[OSH_LABEL_MAX];
	off_t size;
	int fd;

	memset(label, 0, sizeof(label));
	switch (which) {
	case 0:
		memset(label, 'x', sizeof(label));
		break;
	case 1:
		strcpy(label, "tenant a");
		break;
	case 2:
		strcpy(label, "tenant-a");
		label[40] = 'q';
		break;
	}
	if (which < 3) {
		patch(path, H(label), label, sizeof(label));
		return;
	}
	fd = open(path, O_RDWR);
	ck_assert_int_ge(fd, 0);
	size = lseek(fd, 0, SEEK_END);
	if (which == 3)
		ck_assert_int_eq(ftruncate(fd, size - 100), 0);
	else if (which == 4)
		ck_assert_int_eq(ftruncate(fd, 100), 0);
	else if (which == 5)
		ck_assert_int_eq(pwrite(fd, "x", 1, size), 1);
	else
		ck_assert_int_eq(ftruncate(fd, 0), 0);
	close(fd);
}

START_TEST(shard_header_rejects)
{
	const struct hdr_bad *c = &hdr_bad[_i];
	struct osh_file f;
	struct src s;
	char *path;
	int ret;

	small_src(&s);
	path = write_shard("small.osh", &s, 100);
	if (c->width == 4)
		patch(path, c->off, &(uint32_t){ (uint32_t)c->val }, 4);
	else if (c->width == 8)
		patch(path, c->off, &c->val, 8);
	else
		hdr_special(path, c->val);
	tu_log_clear(&lg);
	ret = osh_open(ctx, path, &f);
	if (ret != c->err || !tu_log_has(&lg, c->needle))
		ck_abort_msg("%s: got %d, want %d; log: %s", c->what, ret,
			     c->err, lg.buf);
	ck_assert_int_eq(f.fd, -1);
	ck_assert_ptr_null(f.tags);
	src_free(&s);
	free(path);
}
END_TEST

START_TEST(shard_truncated_big)
{
	struct osh_file f;
	struct src s;
	char *path;

	big_src(&s);
	path = write_shard("big.osh", &s, 110);
	ck_assert_int_eq(truncate(path, 8192 + 2 * OSH_CHUNK_SIZE + 10), 0);
	ck_assert_int_eq(osh_open(ctx, path, &f), -EBADMSG);
	ck_assert(tu_log_has(&lg, "truncated"));
	ck_assert_int_eq(osh_open(ctx, "/nonexistent/x.osh", &f), -ENOENT);
	src_free(&s);
	free(path);
}
END_TEST

static Suite *shard_suite(void)
{
	Suite *s = suite_create("shard");
	TCase *tc;

	tc = tcase_create("shard");
	tcase_set_timeout(tc, 60);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, shard_round_trip);
	tcase_add_test(tc, shard_multi_chunk);
	tcase_add_test(tc, shard_matches_spec);
	tcase_add_test(tc, shard_wrong_key);
	tcase_add_loop_test(tc, shard_flipped_chunk, 0, 4);
	tcase_add_test(tc, shard_flipped_tag);
	tcase_add_test(tc, shard_swapped_chunks);
	tcase_add_test(tc, shard_transplanted_chunk);
	tcase_add_loop_test(tc, shard_header_bound, 0, 4);
	tcase_add_loop_test(tc, shard_header_rejects, 0,
			    sizeof(hdr_bad) / sizeof(hdr_bad[0]));
	tcase_add_test(tc, shard_truncated_big);
	suite_add_tcase(s, tc);

	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(shard_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
