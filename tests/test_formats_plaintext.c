// SPDX-License-Identifier: MIT
/*
 * The plaintext inside a shard: building and parsing it, every rejection
 * of the parser, the writer's checks of its input, the encoding helpers.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shard.h"
#include "shard_fixture.h"
#include "shard_priv.h"
#include "testutil.h"

static struct tu_log lg;
static struct ortho_ctx *ctx;
static char *dir;

static void setup(void)
{
	tu_fixture_setup(&lg, &ctx, &dir, "plaintext");
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

/* The plaintext of @s as osh_write() builds it, in 64-aligned memory. */
static uint8_t *build(const struct src *s, uint64_t *len)
{
	uint8_t *pt;

	ck_assert_int_eq(osp_layout(ctx, s->t, s->n, len), 0);
	pt = aligned_alloc(64, (*len + 63) / 64 * 64);
	ck_assert_ptr_nonnull(pt);
	memset(pt, 0, *len);
	ck_assert_int_eq(osp_build(ctx, s->t, s->n, pt, *len), 0);
	return pt;
}

START_TEST(plaintext_round_trip)
{
	struct osp_view_tensor v[4];
	unsigned int i;
	uint64_t len;
	struct src s;
	uint8_t *pt;

	small_src(&s);
	pt = build(&s, &len);
	ck_assert_mem_eq(pt, OSP_MAGIC, 8);
	ck_assert_int_eq(osp_parse(ctx, pt, len, v, 4), 4);
	for (i = 0; i < 4; i++) {
		compare(&v[i], &s.t[i]);
		ck_assert_uint_eq(((const uint8_t *)v[i].val - pt) % 2, 0);
	}
	ck_assert_uint_eq((uint64_t)((const uint8_t *)v[0].rowptr - pt) % 64, 0);
	/* A short @out still gets the count; only @max entries are filled. */
	memset(v, 0, sizeof(v));
	ck_assert_int_eq(osp_parse(ctx, pt, len, v, 1), 4);
	ck_assert_str_eq(v[0].name, "layers.0.wq");
	ck_assert_ptr_null(v[1].name);
	ck_assert_int_eq(osp_parse(ctx, pt, len, NULL, 0), 4);
	free(pt);
	src_free(&s);
}
END_TEST

START_TEST(shard_write_rejects)
{
	struct osh_write_params p;
	uint8_t key[OSH_KEY_SIZE];
	struct src s;
	char *path = in_dir("bad.osh");
	uint32_t saved;

	small_src(&s);
	params(&p, key, 1);
	p.label = "two words";
	ck_assert_int_eq(osh_write(ctx, path, &p, s.t, s.n), -EINVAL);
	p.label = "";
	ck_assert_int_eq(osh_write(ctx, path, &p, s.t, s.n), -EINVAL);
	p.label = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
	ck_assert_int_eq(osh_write(ctx, path, &p, s.t, s.n), -EINVAL);
	p.label = "ok";
	ck_assert_int_eq(osh_write(ctx, path, &p, s.t, 0), -EINVAL);
	p.key = NULL;
	ck_assert_int_eq(osh_write(ctx, path, &p, s.t, s.n), -EINVAL);
	p.key = key;
	/* A csr16 column that would wrap to a valid one when narrowed. */
	saved = ((uint32_t *)s.t[0].col)[0];
	((uint32_t *)s.t[0].col)[0] = 65536 + saved;
	ck_assert_int_eq(osh_write(ctx, path, &p, s.t, s.n), -EINVAL);
	((uint32_t *)s.t[0].col)[0] = saved;
	/* rowptr not monotone: caught by the parser before anything is written. */
	((uint32_t *)s.t[0].rowptr)[5] += 1000;
	ck_assert_int_eq(osh_write(ctx, path, &p, s.t, s.n), -EINVAL);
	ck_assert(tu_log_has(&lg, "rowptr decreases"));
	((uint32_t *)s.t[0].rowptr)[5] -= 1000;
	s.t[2].nnz--;
	ck_assert_int_eq(osh_write(ctx, path, &p, s.t, s.n), -EINVAL);
	s.t[2].nnz++;
	s.t[1].encoding = OSP_CSR16;
	ck_assert_int_eq(osh_write(ctx, path, &p, s.t, s.n), -EINVAL);
	s.t[1].encoding = OSP_CSR32;
	s.t[3].name = s.t[0].name;
	ck_assert_int_eq(osh_write(ctx, path, &p, s.t, s.n), -EINVAL);
	ck_assert(tu_log_has(&lg, "twice"));
	s.t[3].name = "layers.0.wo";
	ck_assert_int_eq(tu_count_entries(dir), 0);
	ck_assert_int_eq(osh_write(ctx, path, &p, s.t, s.n), 0);
	ck_assert_int_eq(osh_write(ctx, path, &p, s.t, s.n), -EEXIST);
	ck_assert_int_eq(tu_count_entries(dir), 1);
	src_free(&s);
	free(path);
}
END_TEST

START_TEST(encoding_helpers)
{
	ck_assert_uint_eq(osp_encoded_size(OSP_CSR16, 10, 20, 7),
			  11 * 4 + 7 * 4);
	ck_assert_uint_eq(osp_encoded_size(OSP_CSR32, 10, 20, 7),
			  11 * 4 + 7 * 6);
	ck_assert_uint_eq(osp_encoded_size(OSP_DENSE16, 10, 20, 200), 400);
	ck_assert_uint_eq(osp_encoded_size(9, 10, 20, 7), 0);
	ck_assert_uint_eq(osp_best_encoding(100, 100, 10), OSP_CSR16);
	ck_assert_uint_eq(osp_best_encoding(10, 65536, 10), OSP_CSR16);
	ck_assert_uint_eq(osp_best_encoding(10, 65537, 10), OSP_CSR32);
	ck_assert_uint_eq(osp_best_encoding(10, 10, 100), OSP_DENSE16);
	/* 65 * 4 + 4 * nnz against 64 * 64 * 2: a tie stays sparse. */
	ck_assert_uint_eq(osp_best_encoding(64, 64, 1983), OSP_CSR16);
	ck_assert_uint_eq(osp_best_encoding(64, 64, 1984), OSP_DENSE16);
	ck_assert_str_eq(osp_encoding_name(OSP_CSR16), "csr16");
	ck_assert_str_eq(osp_encoding_name(OSP_CSR32), "csr32");
	ck_assert_str_eq(osp_encoding_name(OSP_DENSE16), "dense16");
	ck_assert_str_eq(osp_encoding_name(0), "?");
}
END_TEST

/* ---- plaintext ---- */

static const char *const pt_needle[] = {
	"bad magic", "bad magic", "tensor_count", "tensor_count",
	"shorter than its header", "past the end", "aligned", "overlaps",
	"NUL-terminated", "twice", "unknown encoding", "shape", "reserved",
	"dense nnz", "nnz out of range", "csr16", "rowptr[0]",
	"rowptr decreases", "rowptr ends at", "out of range or out of order",
	"out of range or out of order", "out of range or out of order",
	"not finite",
};

#define NPT (sizeof(pt_needle) / sizeof(pt_needle[0]))

static struct osp_tensor *ent(uint8_t *pt, int i)
{
	return (struct osp_tensor *)(pt + sizeof(struct osp_header) +
				     96 * (size_t)i);
}

/* A row of tensor 0 of the small source with at least two entries. */
static uint32_t busy_row(const struct osp_tensor_src *t)
{
	uint32_t r;

	for (r = 0; r < t->rows; r++)
		if (t->rowptr[r + 1] - t->rowptr[r] >= 2)
			return r;
	ck_abort_msg("no row with two entries");
	return 0;
}

static void pt_mutate(unsigned int which, uint8_t *pt, uint64_t *len,
		      const struct src *s)
{
	struct osp_tensor *e0 = ent(pt, 0), *e1 = ent(pt, 1), *e2 = ent(pt, 2);
	uint32_t *rp0 = (uint32_t *)(pt + e0->offset), r;
	uint16_t *col0 = (uint16_t *)(pt + e0->offset + 65 * 4);
	uint32_t *col1 = (uint32_t *)(pt + e1->offset + 3 * 4);

	switch (which) {
	case 0: pt[0] = 'X'; break;
	case 1: pt[12] = 1; break;			/* header reserved */
	case 2: ((uint32_t *)pt)[2] = 70000; break;
	case 3: ((uint32_t *)pt)[2] = (uint32_t)(*len / 96 + 1); break;
	case 4: *len = 12; break;
	case 5: e0->offset = (*len + 63) & ~63ull; break;
	case 6: e0->offset += 2; break;
	case 7: e1->offset = e0->offset; break;
	case 8: memset(e0->name, 'a', sizeof(e0->name)); break;
	case 9: memcpy(e1->name, e0->name, sizeof(e0->name)); break;
	case 10: e0->encoding = 9; break;
	case 11: e0->rows = 0; break;
	case 12: e0->reserved = 1; break;
	case 13: e2->nnz--; break;
	case 14: e0->nnz = 64 * 64 + 1; break;
	case 15: e0->cols = 70000; break;
	case 16: rp0[0] = 1; break;
	case 17: rp0[10] = rp0[11] + 1; break;
	case 18: rp0[64] = (uint32_t)s->t[0].nnz - 1; break;
	case 19:	/* last entry of the busy row past the last column */
		r = busy_row(&s->t[0]);
		col0[rp0[r + 1] - 1] = 64;
		break;
	case 20:	/* two equal columns in one row */
		r = busy_row(&s->t[0]);
		col0[rp0[r] + 1] = col0[rp0[r]];
		break;
	case 21: col1[e1->nnz - 1] = 70000; break;
	case 22: ((uint16_t *)(pt + e2->offset))[17] = 0x7c00; break;
	}
}

START_TEST(plaintext_rejects)
{
	uint64_t len;
	struct src s;
	uint8_t *pt;
	int ret;

	small_src(&s);
	ck_assert_uint_gt(s.t[0].rowptr[64], s.t[0].rowptr[63]);
	pt = build(&s, &len);
	pt_mutate((unsigned int)_i, pt, &len, &s);
	tu_log_clear(&lg);
	ret = osp_parse(ctx, pt, len, NULL, 0);
	if (ret != -EBADMSG || !tu_log_has(&lg, pt_needle[_i]))
		ck_abort_msg("case %d: got %d; log: %s", _i, ret, lg.buf);
	free(pt);
	src_free(&s);
}
END_TEST

START_TEST(plaintext_misaligned)
{
	uint8_t buf[64] __attribute__((aligned(8)));

	memset(buf, 0, sizeof(buf));
	ck_assert_int_eq(osp_parse(ctx, buf + 4, 32, NULL, 0), -EINVAL);
}
END_TEST

static Suite *plaintext_suite(void)
{
	Suite *s = suite_create("plaintext");
	TCase *tc;

	tc = tcase_create("plaintext");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, plaintext_round_trip);
	tcase_add_loop_test(tc, plaintext_rejects, 0, NPT);
	tcase_add_test(tc, plaintext_misaligned);
	tcase_add_test(tc, shard_write_rejects);
	tcase_add_test(tc, encoding_helpers);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(plaintext_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
