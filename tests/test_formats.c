// SPDX-License-Identifier: MIT
/*
 * base.orb and the FP16 conversions. Shards are in test_formats_shard.c,
 * their plaintext in test_formats_plaintext.c, the key file and secmem in
 * test_formats_keys.c.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "base.h"
#include "fp16.h"
#include "testutil.h"

static struct tu_log lg;
static struct ortho_ctx *ctx;
static char *dir;

static void setup(void)
{
	tu_fixture_setup(&lg, &ctx, &dir, "formats");
}

static void teardown(void)
{
	tu_fixture_teardown(ctx, dir);
}

static const char *in_dir(const char *name)
{
	return tu_path_in(dir, name);
}

static void patch(const char *path, uint64_t off, const void *p, size_t n)
{
	int fd = open(path, O_WRONLY);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, p, n, (off_t)off), (ssize_t)n);
	close(fd);
}

static void patch32(const char *path, uint64_t off, uint32_t v)
{
	patch(path, off, &v, 4);
}

static void patch64(const char *path, uint64_t off, uint64_t v)
{
	patch(path, off, &v, 8);
}

/* ---- base.orb ---- */

#define NT 4

struct base_src {
	struct ortho_model_config cfg;
	struct orb_tensor_src t[NT];
	float emb[32 * 64];
	float norm[64];
	int8_t wq[64 * 64];
	float wq_s[64 * 2];
	int8_t w2[64 * 172];
	float w2_s[64 * 6];
};

static void fill_i8(int8_t *p, size_t n, uint64_t *s)
{
	size_t i;

	for (i = 0; i < n; i++)
		p[i] = (int8_t)(tu_rand(s) % 255 - 127);
}

static void fill_f32(float *p, size_t n, uint64_t *s, int positive)
{
	size_t i;

	for (i = 0; i < n; i++)
		p[i] = positive ? fabsf(tu_randf(s)) * 0.01f : tu_randn(s);
}

static void base_src_init(struct base_src *b, uint64_t seed)
{
	static const struct ortho_model_config cfg = {
		.dim = 64, .hidden_dim = 172, .n_layers = 2, .n_heads = 8,
		.n_kv_heads = 4, .vocab_size = 32, .seq_len = 64,
		.shared_classifier = 1, .group_size = 32,
	};

	memset(b, 0, sizeof(*b));
	b->cfg = cfg;
	fill_f32(b->emb, 32 * 64, &seed, 0);
	fill_f32(b->norm, 64, &seed, 0);
	fill_i8(b->wq, sizeof(b->wq), &seed);
	fill_f32(b->wq_s, 64 * 2, &seed, 1);
	fill_i8(b->w2, sizeof(b->w2), &seed);
	fill_f32(b->w2_s, 64 * 6, &seed, 1);
	b->t[0] = (struct orb_tensor_src){ "tok_embeddings", ORB_KIND_OTHER,
		ORTHO_DTYPE_F32, 32, 64, 0, UINT32_MAX, b->emb, NULL };
	b->t[1] = (struct orb_tensor_src){ "layers.0.attn_norm",
		ORB_KIND_OTHER, ORTHO_DTYPE_F32, 1, 64, 0, 0, b->norm, NULL };
	b->t[2] = (struct orb_tensor_src){ "layers.0.wq", ORB_KIND_LINEAR,
		ORTHO_DTYPE_I8, 64, 64, 32, 0, b->wq, b->wq_s };
	/* 172 columns: the last group of 32 is partial. */
	b->t[3] = (struct orb_tensor_src){ "layers.1.w2", ORB_KIND_LINEAR,
		ORTHO_DTYPE_I8, 64, 172, 32, 1, b->w2, b->w2_s };
}

static const char *write_base(const char *name, uint64_t seed,
			      uint8_t id[32])
{
	static struct base_src b;
	const char *path = in_dir(name);

	base_src_init(&b, seed);
	ck_assert_int_eq(orb_write(ctx, path, &b.cfg, b.t, NT, id), 0);
	return path;
}

START_TEST(base_round_trip)
{
	struct base_src *b = malloc(sizeof(*b));
	struct orb_file f;
	uint8_t id[32], id2[32];
	const char *path;
	unsigned int i;

	path = write_base("base.orb", 7, id);
	base_src_init(b, 7);
	ck_assert_int_eq(orb_open(ctx, path, 1, &f), 0);
	ck_assert_mem_eq(f.hdr->model_id, id, 32);
	ck_assert_mem_eq(&f.cfg, &b->cfg, sizeof(f.cfg));
	ck_assert_uint_eq(f.hdr->tensor_count, NT);
	for (i = 0; i < NT; i++) {
		const struct orb_tensor *e = &f.table[i];
		size_t es = e->dtype == ORTHO_DTYPE_I8 ? 1 : 4;

		ck_assert_str_eq(e->name, b->t[i].name);
		ck_assert_uint_eq(e->rows, b->t[i].rows);
		ck_assert_uint_eq(e->cols, b->t[i].cols);
		ck_assert_uint_eq(e->kind, b->t[i].kind);
		ck_assert_uint_eq(e->group_size, b->t[i].group_size);
		ck_assert_uint_eq(e->layer, b->t[i].layer);
		ck_assert_uint_eq(e->data_offset % ORB_ALIGN, 0);
		ck_assert_mem_eq(orb_tensor_data(&f, i), b->t[i].data,
				 (size_t)e->rows * e->cols * es);
		if (e->kind == ORB_KIND_LINEAR) {
			ck_assert_uint_eq(e->scale_offset % ORB_ALIGN, 0);
			ck_assert_mem_eq(orb_tensor_scales(&f, i),
					 b->t[i].scales, e->scale_size);
		} else {
			ck_assert_ptr_null(orb_tensor_scales(&f, i));
		}
	}
	ck_assert_uint_eq(f.table[3].scale_size, 64 * 6 * 4);
	orb_close(&f);
	ck_assert_int_eq(orb_read_model_id(path, id2), 0);
	ck_assert_mem_eq(id, id2, 32);
	free(b);
}
END_TEST

/* The model id is the SHA-256 of the whole file, its own field zeroed. */
START_TEST(base_model_id_is_sha256)
{
	uint8_t id[32], md[32];
	unsigned int len = 0;
	const char *path;
	size_t n;
	uint8_t *buf;

	path = write_base("base.orb", 3, id);
	buf = tu_read_file(path, &n);
	ck_assert_ptr_nonnull(buf);
	ck_assert_uint_eq(n % ORB_ALIGN, 0);
	ck_assert_mem_eq(buf + offsetof(struct orb_header, model_id), id, 32);
	memset(buf + offsetof(struct orb_header, model_id), 0, 32);
	ck_assert_int_eq(EVP_Digest(buf, n, md, &len, EVP_sha256(), NULL), 1);
	ck_assert_mem_eq(md, id, 32);
	free(buf);
}
END_TEST

START_TEST(base_deterministic)
{
	uint8_t id1[32], id2[32], id3[32];
	char p1[4096], p2[4096];
	size_t n1, n2;
	void *b1, *b2;

	snprintf(p1, sizeof(p1), "%s", write_base("a.orb", 11, id1));
	snprintf(p2, sizeof(p2), "%s", write_base("b.orb", 11, id2));
	write_base("c.orb", 12, id3);
	b1 = tu_read_file(p1, &n1);
	b2 = tu_read_file(p2, &n2);
	ck_assert_ptr_nonnull(b1);
	ck_assert_ptr_nonnull(b2);
	ck_assert_uint_eq(n1, n2);
	ck_assert_int_eq(memcmp(b1, b2, n1), 0);
	ck_assert_mem_eq(id1, id2, 32);
	ck_assert_int_ne(memcmp(id1, id3, 32), 0);
	free(b1);
	free(b2);
}
END_TEST

START_TEST(base_write_rejects)
{
	static char longname[80];
	struct base_src *b = malloc(sizeof(*b));
	const char *path = in_dir("bad.orb");
	uint8_t id[32];

	base_src_init(b, 1);
	memset(longname, 'x', sizeof(longname) - 1);
	b->t[1].name = longname;
	ck_assert_int_eq(orb_write(ctx, path, &b->cfg, b->t, NT, id), -EINVAL);
	b->t[1].name = b->t[2].name;
	ck_assert_int_eq(orb_write(ctx, path, &b->cfg, b->t, NT, id), -EINVAL);
	ck_assert(tu_log_has(&lg, "given twice"));
	base_src_init(b, 1);
	b->t[2].group_size = 0;
	ck_assert_int_eq(orb_write(ctx, path, &b->cfg, b->t, NT, id), -EINVAL);
	base_src_init(b, 1);
	b->wq_s[5] = NAN;
	ck_assert_int_eq(orb_write(ctx, path, &b->cfg, b->t, NT, id), -EINVAL);
	base_src_init(b, 1);
	b->t[3].layer = 2;
	ck_assert_int_eq(orb_write(ctx, path, &b->cfg, b->t, NT, id), -EINVAL);
	base_src_init(b, 1);
	b->cfg.n_kv_heads = 3;
	ck_assert_int_eq(orb_write(ctx, path, &b->cfg, b->t, NT, id), -EINVAL);
	ck_assert_int_eq(tu_count_entries(dir), 0);
	/* An existing file is never replaced. */
	base_src_init(b, 1);
	ck_assert_int_eq(tu_write_file(path, "x", 1), 0);
	ck_assert_int_eq(orb_write(ctx, path, &b->cfg, b->t, NT, id), -EEXIST);
	free(b);
}
END_TEST

#define HDR(f) offsetof(struct orb_header, f)
#define TEN(i, f) (ORB_ALIGN + (i) * 128 + offsetof(struct orb_tensor, f))
#define CFG(i) (HDR(config) + 4 * (i))

struct base_bad {
	const char *what;
	uint64_t off;
	int width;		/* 4 or 8 bytes; 0: see special cases */
	uint64_t val;
	int err;
	const char *needle;
};

static const struct base_bad base_bad[] = {
	{ "magic", 0, 4, 0x41414141, -EBADMSG, "bad magic" },
	{ "version", HDR(version), 4, 2, -EPROTONOSUPPORT, "version 2" },
	{ "header_size", HDR(header_size), 4, 4095, -EINVAL, "header_size" },
	{ "flags", HDR(flags), 4, 1, -EINVAL, "flags" },
	{ "too many tensors", HDR(tensor_count), 4, ORB_MAX_TENSORS + 1,
	  -EINVAL, "tensor_count" },
	{ "no tensors", HDR(tensor_count), 4, 0, -EINVAL, "tensor_count" },
	{ "table_size", HDR(table_size), 8, 3 * 128, -EINVAL, "table_size" },
	{ "table_offset", HDR(table_offset), 8, 8192, -EINVAL, "table_offset" },
	{ "file_size", HDR(file_size), 8, 4096, -EBADMSG, "header says" },
	{ "header reserved", HDR(reserved) + 100, 4, 1, -EINVAL, "reserved" },
	{ "config dim", CFG(0), 4, 0, -EINVAL, "dim" },
	{ "config n_heads", CFG(3), 4, 7, -EINVAL, "n_heads" },
	{ "config n_kv_heads", CFG(4), 4, 16, -EINVAL, "n_kv_heads" },
	{ "config shared_classifier", CFG(7), 4, 2, -EINVAL,
	  "shared_classifier" },
	{ "config reserved", CFG(12), 4, 1, -EINVAL, "reserved" },
	{ "kind", TEN(1, kind), 4, 7, -EINVAL, "kind" },
	{ "linear as F32", TEN(2, dtype), 4, ORTHO_DTYPE_F32, -EINVAL,
	  "dtype" },
	{ "unknown dtype", TEN(0, dtype), 4, 9, -EINVAL, "dtype" },
	{ "rows 0", TEN(0, rows), 4, 0, -EINVAL, "rows" },
	{ "cols too large", TEN(2, cols), 4, ORB_MAX_DIM + 1, -EINVAL,
	  "cols" },
	{ "layer", TEN(3, layer), 4, 2, -EINVAL, "layer" },
	{ "data misaligned", TEN(2, data_offset), 8, 4096 * 4 + 8, -EINVAL,
	  "data_offset" },
	{ "data in the table", TEN(0, data_offset), 8, 4096, -EINVAL,
	  "data_offset" },
	{ "data_size", TEN(0, data_size), 8, 32 * 64 * 4 + 4, -EINVAL,
	  "data_size" },
	{ "data past the end", TEN(3, data_offset), 8, 1ull << 40, -EINVAL,
	  "data_offset + data_size" },
	{ "scale_size", TEN(3, scale_size), 8, 64 * 5 * 4, -EINVAL,
	  "scale_size" },
	{ "scale misaligned", TEN(3, scale_offset), 8, 4096 * 3 + 4, -EINVAL,
	  "scale_offset" },
	{ "scale past the end", TEN(3, scale_offset), 8, UINT64_MAX & ~4095ull,
	  -EINVAL, "scale_offset + scale_size" },
	{ "linear group 0", TEN(2, group_size), 4, 0, -EINVAL, "group_size" },
	{ "group on F32", TEN(1, group_size), 4, 32, -EINVAL, "group_size" },
	{ "scales on F32", TEN(1, scale_size), 8, 256, -EINVAL, "scale_size" },
	{ "tensor reserved", TEN(1, reserved), 4, 1, -EINVAL, "reserved" },
	{ "overlap", 0, 0, 0, -EBADMSG, "overlap" },
	{ "name unterminated", 0, 0, 1, -EBADMSG, "NUL-terminated" },
	{ "name duplicated", 0, 0, 2, -EBADMSG, "twice" },
	{ "name not NUL-padded", 0, 0, 3, -EBADMSG, "NUL-padded" },
	{ "truncated", 0, 0, 4, -EBADMSG, "truncated" },
	{ "trailing bytes", 0, 0, 5, -EBADMSG, "trailing" },
	{ "content modified", 0, 0, 6, -EBADMSG, "model id" },
	{ "config changed", CFG(6), 4, 77, -EBADMSG, "model id" },
};

/* Mutations that are more than one field write. */
static void base_special(const char *path, uint64_t which)
{
	struct orb_tensor t[NT];
	size_t n;
	uint8_t *buf = tu_read_file(path, &n);

	ck_assert_ptr_nonnull(buf);
	memcpy(t, buf + ORB_ALIGN, sizeof(t));
	switch (which) {
	case 0:		/* wq's data over the embeddings' */
		patch64(path, TEN(2, data_offset), t[0].data_offset + 4096);
		break;
	case 1:
		memset(t[1].name, 'n', ORB_NAME_MAX);
		patch(path, TEN(1, name), t[1].name, ORB_NAME_MAX);
		break;
	case 2:
		patch(path, TEN(3, name), t[2].name, ORB_NAME_MAX);
		break;
	case 3:
		patch(path, TEN(1, name) + ORB_NAME_MAX - 1, "z", 1);
		break;
	case 4:
		ck_assert_int_eq(truncate(path, (off_t)n - 4096), 0);
		break;
	case 5:
		patch(path, n, "tail", 4);
		break;
	case 6:
		buf[t[3].data_offset + 17] ^= 0x40;
		patch(path, t[3].data_offset + 17, &buf[t[3].data_offset + 17],
		      1);
		break;
	}
	free(buf);
}

START_TEST(base_rejects)
{
	const struct base_bad *c = &base_bad[_i];
	const char *path;
	struct orb_file f;
	uint8_t id[32];
	int ret;

	path = write_base("base.orb", 5, id);
	if (c->width == 4)
		patch32(path, c->off, (uint32_t)c->val);
	else if (c->width == 8)
		patch64(path, c->off, c->val);
	else
		base_special(path, c->val);
	tu_log_clear(&lg);
	ret = orb_open(ctx, path, 1, &f);
	if (ret != c->err || !tu_log_has(&lg, c->needle))
		ck_abort_msg("%s: got %d, want %d; log: %s", c->what, ret,
			     c->err, lg.buf);
	ck_assert_ptr_null(f.map);
}
END_TEST

START_TEST(base_verify_optional)
{
	struct orb_file f;
	uint8_t id[32];
	char path[4096];

	snprintf(path, sizeof(path), "%s", write_base("base.orb", 5, id));
	base_special(path, 6);
	ck_assert_int_eq(orb_open(ctx, path, 1, &f), -EBADMSG);
	ck_assert_int_eq(orb_open(ctx, path, 0, &f), 0);
	orb_close(&f);
	ck_assert_int_eq(orb_open(ctx, in_dir("none.orb"), 0, &f), -ENOENT);
	ck_assert_int_eq(orb_read_model_id(in_dir("none.orb"), id), -ENOENT);
	patch32(path, HDR(version), 9);
	ck_assert_int_eq(orb_read_model_id(path, id), -EPROTONOSUPPORT);
	patch32(path, 0, 0);
	ck_assert_int_eq(orb_read_model_id(path, id), -EBADMSG);
}
END_TEST

/* ---- fp16 ---- */

/* The value of binary16 @h, from the definition. */
static double ref_f16(uint16_t h, int *is_nan)
{
	int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
	double v;

	*is_nan = e == 31 && m;
	if (e == 0)
		v = ldexp(m, -24);
	else if (e == 31)
		v = INFINITY;
	else
		v = ldexp(1024 + m, e - 25);
	return s ? -v : v;
}

/*
 * binary16 bits of @f: scale to the spacing of half-precision numbers at
 * that magnitude, round to an integer (nearbyint: ties to even, and an even
 * integer is an even significand), overflow at 2^16.
 */
static uint16_t ref_to_f16(float f)
{
	uint16_t sign = signbit(f) ? 0x8000 : 0;
	double a = fabs((double)f), q, r;
	int e;

	if (isnan(f))
		return sign | 0x7e00;
	if (isinf(f))
		return sign | 0x7c00;
	if (a == 0)
		return sign;
	frexp(a, &e);
	e = e - 1 < -14 ? -14 : e - 1;	/* floor(log2 a), at least -14 */
	q = ldexp(1, e - 10);
	r = nearbyint(a / q) * q;
	if (r >= 65536)
		return sign | 0x7c00;
	if (r < ldexp(1, -14))
		return sign | (uint16_t)(r / ldexp(1, -24));
	frexp(r, &e);
	return sign | (uint16_t)((e + 14) << 10) |
	       (uint16_t)(r / ldexp(1, e - 11) - 1024);
}

START_TEST(fp16_decode_all)
{
	unsigned int h;
	int is_nan;

	for (h = 0; h < 65536; h++) {
		double want = ref_f16((uint16_t)h, &is_nan);
		float got = fp16_to_f32((uint16_t)h);

		if (is_nan) {
			ck_assert(isnan(got));
			ck_assert_int_eq(!!signbit(got), h >> 15);
			continue;
		}
		if (got != (float)want || !!signbit(got) != !!signbit(want))
			ck_abort_msg("fp16 %04x: got %a want %a", h,
				     (double)got, want);
	}
}
END_TEST

static void check_enc(float f)
{
	uint16_t got = f32_to_fp16(f), want = ref_to_f16(f);

	if (isnan(f)) {
		ck_assert_uint_eq(got & 0x7c00, 0x7c00);
		ck_assert_uint_ne(got & 0x3ff, 0);
		ck_assert_uint_eq(got & 0x8000, want & 0x8000);
		return;
	}
	if (got != want)
		ck_abort_msg("f32 %a: got %04x want %04x", (double)f, got, want);
}

START_TEST(fp16_encode)
{
	uint64_t s = 99;
	unsigned int h, i;
	int is_nan;

	for (h = 0; h < 65536; h++) {
		double v = ref_f16((uint16_t)h, &is_nan), next;

		check_enc((float)v);
		if (is_nan)
			continue;
		ck_assert_uint_eq(f32_to_fp16((float)v), h);
		/* Halfway to the next half (exact in float), and either side. */
		if ((h & 0x7fff) >= 0x7bff)
			continue;
		next = ref_f16((uint16_t)(h + 1), &is_nan);
		check_enc((float)((v + next) / 2));
		check_enc(nextafterf((float)((v + next) / 2), 0));
		check_enc(nextafterf((float)((v + next) / 2), INFINITY));
		check_enc(-nextafterf((float)((v + next) / 2), INFINITY));
	}
	for (i = 0; i < (1u << 20); i++) {
		uint32_t bits = (uint32_t)tu_rand(&s);
		float f;

		if (i % 4)	/* mostly magnitudes near half's range */
			bits = (bits & 0x807fffffu) |
			       ((uint32_t)(127 - 27 + tu_rand(&s) % 45) << 23);
		memcpy(&f, &bits, 4);
		check_enc(f);
	}
}
END_TEST

START_TEST(fp16_special)
{
	ck_assert_uint_eq(f32_to_fp16(0.0f), 0x0000);
	ck_assert_uint_eq(f32_to_fp16(-0.0f), 0x8000);
	ck_assert(signbit(fp16_to_f32(0x8000)) && fp16_to_f32(0x8000) == 0);
	ck_assert_uint_eq(f32_to_fp16(INFINITY), 0x7c00);
	ck_assert_uint_eq(f32_to_fp16(-INFINITY), 0xfc00);
	ck_assert(isinf(fp16_to_f32(0xfc00)) && fp16_to_f32(0xfc00) < 0);
	ck_assert(isnan(fp16_to_f32(0x7e00)));
	ck_assert(isnan(fp16_to_f32(f32_to_fp16(NAN))));
	ck_assert_uint_eq(f32_to_fp16(65504.0f), 0x7bff);
	ck_assert_uint_eq(f32_to_fp16(65519.99f), 0x7bff);
	ck_assert_uint_eq(f32_to_fp16(65520.0f), 0x7c00);
	ck_assert_uint_eq(f32_to_fp16(1e10f), 0x7c00);
	ck_assert_uint_eq(f32_to_fp16(ldexpf(1, -24)), 0x0001);
	ck_assert_uint_eq(f32_to_fp16(ldexpf(1, -25)), 0x0000);
	ck_assert_uint_eq(f32_to_fp16(nextafterf(ldexpf(1, -25), 1)), 0x0001);
	ck_assert_uint_eq(f32_to_fp16(ldexpf(3, -25)), 0x0002);
	ck_assert_uint_eq(f32_to_fp16(ldexpf(1, -14)), 0x0400);
	ck_assert_uint_eq(f32_to_fp16(-ldexpf(1023, -24)), 0x83ff);
	ck_assert_uint_eq(f32_to_fp16(1e-45f), 0x0000);
	ck_assert_uint_eq(f32_to_fp16(-1e-45f), 0x8000);
	ck_assert_uint_eq(f32_to_fp16(1.0f + ldexpf(1, -11)), 0x3c00);
	ck_assert_uint_eq(f32_to_fp16(1.0f + ldexpf(3, -11)), 0x3c02);
	ck_assert_uint_eq(f32_to_fp16(2047.0f * ldexpf(1, -11) + 1), 0x4000);
}
END_TEST

static Suite *formats_suite(void)
{
	Suite *s = suite_create("formats");
	TCase *tc;

	tc = tcase_create("base");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, base_round_trip);
	tcase_add_test(tc, base_model_id_is_sha256);
	tcase_add_test(tc, base_deterministic);
	tcase_add_test(tc, base_write_rejects);
	tcase_add_loop_test(tc, base_rejects, 0,
			    sizeof(base_bad) / sizeof(base_bad[0]));
	tcase_add_test(tc, base_verify_optional);
	suite_add_tcase(s, tc);

	tc = tcase_create("fp16");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, fp16_decode_all);
	tcase_add_test(tc, fp16_encode);
	tcase_add_test(tc, fp16_special);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(formats_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
