// SPDX-License-Identifier: MIT
/*
 * Shards and Bases that cannot be used: a tampered chunk, a wrong key, a
 * missing key, a shard of another model, a second copy of a shard, a
 * truncated or modified base.orb. Each bad shard is FAILED (or NO_KEY) with
 * the reason, the others are used, and ORTHO_MODEL_STRICT fails the open.
 */
#include <check.h>
#include <errno.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model_fixture.h"

START_TEST(test_tampered_chunk)
{
	struct tu_log lg = { .len = 0 };
	struct ortho_ctx *ctx = tu_ctx(&lg);
	char *dir = copy_model("tamper"), *p = shard_path(dir, &g_ref[0]);
	struct ortho_model *m;

	flip_byte(p, g_ref[0].data_offset + 17);
	m = open_model(ctx, dir, g_keys, 0, 0);
	check_one_failed(m, &g_ref[0], -EBADMSG, 0);
	ck_assert(tu_log_has(&lg, "chunk 0"));
	ck_assert(tu_log_has(&lg, strrchr(g_ref[0].path, '/') + 1));
	ortho_model_close(m);
	open_model(ctx, dir, g_keys, ORTHO_MODEL_STRICT, -EBADMSG);
	ortho_ctx_free(ctx);
	tu_rmrf(dir);
	free(dir);
	free(p);
}
END_TEST

START_TEST(test_wrong_key)
{
	struct tu_log lg = { .len = 0 };
	struct ortho_ctx *ctx = tu_ctx(&lg);
	char *keys = keys_without(g_ref[1].id, 0);
	struct ortho_model *m = open_model(ctx, g_dir, keys, 0, 0);

	check_one_failed(m, &g_ref[1], -EKEYREJECTED, UINT32_MAX);
	ck_assert(tu_log_has(&lg, "wrong key"));
	ortho_model_close(m);
	open_model(ctx, g_dir, keys, ORTHO_MODEL_STRICT, -EKEYREJECTED);
	ortho_ctx_free(ctx);
	free(keys);
}
END_TEST

START_TEST(test_missing_key)
{
	struct tu_log lg = { .len = 0 };
	struct ortho_ctx *ctx = tu_ctx(&lg);
	char *keys = keys_without(g_ref[0].id, 1);
	const char *ids[64];
	struct ortho_shard_info si;
	struct ortho_model *m;
	unsigned int i, n;

	m = open_model(ctx, g_dir, keys, ORTHO_MODEL_STRICT, 0);
	i = (unsigned int)find_shard(m, g_ref[0].id);
	shard_info(m, i, &si);
	ck_assert_uint_eq(si.state, ORTHO_SHARD_NO_KEY);
	ck_assert_uint_eq(count_in(lg.buf, "have no key"), 1);
	ck_assert(tu_log_has(&lg, "1 of "));
	ids[0] = g_ref[0].id;
	check_linear_skip(m, lin_of(&g_ref[0]), ids, 1);
	ortho_model_close(m);

	/* No key file at all: Base only, one warning line. */
	tu_log_clear(&lg);
	m = open_model(ctx, g_dir, NULL, 0, 0);
	for (i = 0; i < ortho_model_shard_count(m); i++) {
		shard_info(m, i, &si);
		ck_assert_uint_eq(si.state, ORTHO_SHARD_NO_KEY);
	}
	ck_assert_uint_eq(count_in(lg.buf, "have no key"), 1);
	n = ids_of(NULL, ids);
	check_linear_skip(m, lin_of(&g_ref[0]), ids, n);
	ortho_model_close(m);
	ortho_ctx_free(ctx);
	free(keys);
}
END_TEST

START_TEST(test_other_model)
{
	struct tu_log lg = { .len = 0 };
	struct ortho_ctx *ctx = tu_ctx(&lg);
	char *dir = copy_model("xdev"), *od = path2(g_other_dir, "ortho");
	char *dst = path2(dir, "ortho/zz-other.osh"), *src = NULL;
	struct ortho_shard_info si;
	struct ortho_model *m;
	struct dirent *de;
	unsigned int i, failed = 0;
	DIR *d = opendir(od);

	while (d && (de = readdir(d)))
		if (!src && strstr(de->d_name, ".osh"))
			src = path2(od, de->d_name);
	closedir(d);
	ck_assert_ptr_nonnull(src);
	copy_file(src, dst);
	m = open_model(ctx, dir, g_keys, 0, 0);
	for (i = 0; i < ortho_model_shard_count(m); i++) {
		shard_info(m, i, &si);
		if (si.state == ORTHO_SHARD_RESIDENT)
			continue;
		ck_assert_uint_eq(si.state, ORTHO_SHARD_FAILED);
		ck_assert_int_eq(si.error, -EXDEV);
		failed++;
	}
	ck_assert_uint_eq(failed, 1);
	ck_assert_uint_eq(ortho_model_shard_count(m), g_nref + 1);
	ck_assert(tu_log_has(&lg, "belongs to model"));
	check_linear_skip(m, lin_of(&g_ref[0]), NULL, 0);
	ortho_model_close(m);
	open_model(ctx, dir, g_keys, ORTHO_MODEL_STRICT, -EXDEV);
	ortho_ctx_free(ctx);
	tu_rmrf(dir);
	free(dir);
	free(od);
	free(dst);
	free(src);
}
END_TEST

START_TEST(test_duplicate_shard)
{
	struct ortho_ctx *ctx = tu_ctx(NULL);
	char *dir = copy_model("dup"), *src = shard_path(dir, &g_ref[0]);
	char *dst = path2(dir, "ortho/copy.osh");
	struct ortho_shard_info si;
	struct ortho_model *m;
	unsigned int i, resident = 0, failed = 0;

	copy_file(src, dst);
	m = open_model(ctx, dir, g_keys, 0, 0);
	for (i = 0; i < ortho_model_shard_count(m); i++) {
		shard_info(m, i, &si);
		if (strcmp(si.id, g_ref[0].id))
			continue;
		resident += si.state == ORTHO_SHARD_RESIDENT;
		failed += si.state == ORTHO_SHARD_FAILED &&
			  si.error == -EEXIST;
	}
	ck_assert_uint_eq(resident, 1);
	ck_assert_uint_eq(failed, 1);
	/* The delta is added once, not twice. */
	check_linear_skip(m, lin_of(&g_ref[0]), NULL, 0);
	ortho_model_close(m);
	ortho_ctx_free(ctx);
	tu_rmrf(dir);
	free(dir);
	free(src);
	free(dst);
}
END_TEST

START_TEST(test_base_corrupt)
{
	struct ortho_ctx *ctx = tu_ctx(NULL);
	char *dir = copy_model("base"), *p = path2(dir, "base.orb");
	size_t n;
	char *b = tu_read_file(p, &n);

	ck_assert_ptr_nonnull(b);
	ck_assert_int_eq(tu_write_file(p, b, n / 2), 0);
	open_model(ctx, dir, g_keys, 0, -EBADMSG);
	ck_assert_int_eq(tu_write_file(p, b, n), 0);
	flip_byte(p, n / 2);
	open_model(ctx, dir, g_keys, 0, -EBADMSG);
	ck_assert_int_eq(unlink(p), 0);
	open_model(ctx, dir, g_keys, 0, -ENOENT);
	ortho_ctx_free(ctx);
	tu_rmrf(dir);
	free(dir);
	free(p);
	free(b);
}
END_TEST

static Suite *shards_suite(void)
{
	Suite *s = suite_create("model_shards");
	TCase *tc = tcase_create("bad input");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_tampered_chunk);
	tcase_add_test(tc, test_wrong_key);
	tcase_add_test(tc, test_missing_key);
	tcase_add_test(tc, test_other_model);
	tcase_add_test(tc, test_duplicate_shard);
	tcase_add_test(tc, test_base_corrupt);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(shards_suite());
	int failed;

	setup_all();
	ref_load();
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	tu_rmrf(g_tmp);
	return failed ? 1 : 0;
}
