// SPDX-License-Identifier: MIT
/* The key file and secmem: where keys live, on disk and in memory. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "keyfile.h"
#include "secmem.h"
#include "shard.h"
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

/* ---- key file ---- */

static void kf_fill(struct keyfile *kf, unsigned int n, uint64_t seed)
{
	struct keyfile_entry e;
	unsigned int i, k;

	memset(kf, 0, sizeof(*kf));
	for (i = 0; i < n; i++) {
		memset(&e, 0, sizeof(e));
		for (k = 0; k < OSH_ID_SIZE; k++)
			e.id[k] = (uint8_t)tu_rand(&seed);
		for (k = 0; k < OSH_KEY_SIZE; k++)
			e.key[k] = (uint8_t)tu_rand(&seed);
		snprintf(e.label, sizeof(e.label), "tenant-%u", i % 3);
		e.layer = i == 2 ? UINT32_MAX : i;
		ck_assert_int_eq(keyfile_add(kf, &e), 0);
	}
}

/* Is @flag in the VmFlags of the mapping holding @p? -1: no smaps. */
static int vmflag(const void *p, const char *flag)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	unsigned long lo, hi, a = (unsigned long)p;
	char line[512], want[8];
	int in = 0, found = -1;

	if (!f)
		return -1;
	snprintf(want, sizeof(want), " %s", flag);
	while (fgets(line, sizeof(line), f)) {
		/* Mapping lines start "lo-hi "; field lines "Name:". */
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2)
			in = a >= lo && a < hi;
		else if (in && !strncmp(line, "VmFlags:", 8)) {
			found = strstr(line, want) != NULL;
			break;
		}
	}
	fclose(f);
	return found;
}

START_TEST(keyfile_round_trip)
{
	const char *path = in_dir("keys");
	struct keyfile kf, back;
	struct stat st;
	unsigned int i;
	uint8_t unknown[OSH_ID_SIZE] = { 0 };

	kf_fill(&kf, 200, 42);
	ck_assert_int_eq(keyfile_save(ctx, path, &kf, 0), 0);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_uint_eq(st.st_mode & 0777, 0600);
	ck_assert_int_eq(tu_count_entries(dir), 1);
	ck_assert_int_eq(keyfile_load(ctx, path, &back), 0);
	ck_assert_uint_eq(back.n, kf.n);
	for (i = 0; i < kf.n; i++) {
		const struct keyfile_entry *e = keyfile_find(&back, kf.e[i].id);

		ck_assert_ptr_eq(e, &back.e[i]);
		ck_assert_mem_eq(e->key, kf.e[i].key, OSH_KEY_SIZE);
		ck_assert_str_eq(e->label, kf.e[i].label);
		ck_assert_uint_eq(e->layer, kf.e[i].layer);
	}
	ck_assert_ptr_null(keyfile_find(&back, unknown));
	/* The entries live where core dumps do not go. */
	ck_assert_int_eq(vmflag(back.e, "dd"), 1);
	keyfile_free(&back);
	ck_assert_ptr_null(back.e);
	keyfile_free(&kf);
}
END_TEST

START_TEST(keyfile_no_overwrite)
{
	const char *path = in_dir("keys");
	struct keyfile a, b, back;
	size_t n1, n2;
	char *before, *after;

	kf_fill(&a, 2, 1);
	kf_fill(&b, 3, 2);
	ck_assert_int_eq(keyfile_save(ctx, path, &a, 0), 0);
	before = tu_read_file(path, &n1);
	tu_log_clear(&lg);
	ck_assert_int_eq(keyfile_save(ctx, path, &b, 0), -EEXIST);
	ck_assert(tu_log_has(&lg, "force"));
	after = tu_read_file(path, &n2);
	ck_assert_uint_eq(n1, n2);
	ck_assert_mem_eq(before, after, n1);
	ck_assert_int_eq(tu_count_entries(dir), 1);
	ck_assert_int_eq(keyfile_save(ctx, path, &b, 1), 0);
	ck_assert_int_eq(tu_count_entries(dir), 1);
	ck_assert_int_eq(keyfile_load(ctx, path, &back), 0);
	ck_assert_uint_eq(back.n, 3);
	ck_assert_mem_eq(back.e[2].key, b.e[2].key, OSH_KEY_SIZE);
	ck_assert_int_eq(keyfile_save(ctx, in_dir("no/such/dir/keys"), &b, 0),
			 -ENOENT);
	keyfile_free(&back);
	keyfile_free(&a);
	keyfile_free(&b);
	free(before);
	free(after);
}
END_TEST

START_TEST(keyfile_mode)
{
	const char *path = in_dir("keys");
	struct keyfile kf;

	kf_fill(&kf, 1, 5);
	ck_assert_int_eq(keyfile_save(ctx, path, &kf, 0), 0);
	keyfile_free(&kf);
	ck_assert_int_eq(chmod(path, 0640), 0);
	ck_assert_int_eq(keyfile_load(ctx, path, &kf), -EPERM);
	ck_assert(tu_log_has(&lg, "chmod 600"));
	ck_assert_int_eq(chmod(path, 0604), 0);
	ck_assert_int_eq(keyfile_load(ctx, path, &kf), -EPERM);
	ck_assert_int_eq(chmod(path, 0400), 0);
	ck_assert_int_eq(keyfile_load(ctx, path, &kf), 0);
	keyfile_free(&kf);
	ck_assert_int_eq(keyfile_load(ctx, in_dir("none"), &kf), -ENOENT);
}
END_TEST

#define ID1 "00112233445566778899aabbccddeeff"
#define ID2 "ffeeddccbbaa99887766554433221100"
#define KEY "000102030405060708090a0b0c0d0e0f" \
	    "101112131415161718191a1b1c1d1e1f"

struct kf_bad {
	const char *text;
	int err;
	const char *needle;
};

static const struct kf_bad kf_bad[] = {
	{ "ortho-kees 1\n", -EBADMSG, "line 1" },
	{ "", -EBADMSG, "empty" },
	{ "ortho-keys 2\n", -EPROTONOSUPPORT, "version 2" },
	{ "ortho-keys 1\n" ID1 " " KEY " 0\n", -EBADMSG, "line 2: expected 4" },
	{ "ortho-keys 1\n" ID1 " " KEY " 0 a b\n", -EBADMSG, "line 2" },
	{ "ortho-keys 1\n" ID1 " " KEY " 0 a\n" "0011 " KEY " 0 a\n",
	  -EBADMSG, "line 3: shard id" },
	{ "ortho-keys 1\n" ID1 " " KEY "0 0 a\n", -EBADMSG, "line 2: key" },
	{ "ortho-keys 1\n" ID1 " 0g0102030405060708090a0b0c0d0e0f"
	  "101112131415161718191a1b1c1d1e1f 0 a\n", -EBADMSG, "line 2: key" },
	{ "ortho-keys 1\n" ID1 " " KEY " x 0\n", -EBADMSG, "line 2: layer" },
	{ "ortho-keys 1\n" ID1 " " KEY " -1 a\n", -EBADMSG, "line 2: layer" },
	{ "ortho-keys 1\n" ID1 " " KEY " 4294967296 a\n", -EBADMSG,
	  "line 2: layer" },
	{ "ortho-keys 1\n" ID1 " " KEY " 1 "
	  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
	  -EBADMSG, "line 2: label" },
	{ "ortho-keys 1\n" ID1 " " KEY " 1 a\n" ID2 " " KEY " 2 b\n"
	  "# comment\n" ID1 " " KEY " 3 c\n", -EBADMSG,
	  "line 5: shard id already on line 2" },
};

START_TEST(keyfile_malformed)
{
	const struct kf_bad *c = &kf_bad[_i];
	const char *path = in_dir("keys");
	struct keyfile kf;
	int ret;

	ck_assert_int_eq(tu_write_file(path, c->text, strlen(c->text)), 0);
	ck_assert_int_eq(chmod(path, 0600), 0);
	ret = keyfile_load(ctx, path, &kf);
	if (ret != c->err || !tu_log_has(&lg, c->needle))
		ck_abort_msg("case %d: got %d, want %d; log: %s", _i, ret,
			     c->err, lg.buf);
	/* A message names the line, never the key on it. */
	ck_assert(!tu_log_has(&lg, "0c0d0e0f"));
	ck_assert_ptr_null(kf.e);
	ck_assert_uint_eq(kf.n, 0);
}
END_TEST

START_TEST(keyfile_lenient_layout)
{
	static const char text[] = "ortho-keys 1\r\n\n# a comment\n"
		ID1 "\t" KEY "  7 tenant-a\r\n" ID2 " " KEY " 4294967295 b";
	const char *path = in_dir("keys");
	struct keyfile kf;
	uint8_t id[OSH_ID_SIZE];

	ck_assert_int_eq(tu_write_file(path, text, sizeof(text) - 1), 0);
	ck_assert_int_eq(chmod(path, 0600), 0);
	ck_assert_int_eq(keyfile_load(ctx, path, &kf), 0);
	ck_assert_uint_eq(kf.n, 2);
	ck_assert_str_eq(kf.e[0].label, "tenant-a");
	ck_assert_uint_eq(kf.e[0].layer, 7);
	ck_assert_uint_eq(kf.e[1].layer, UINT32_MAX);
	ck_assert_uint_eq(kf.e[0].key[31], 0x1f);
	ck_assert_int_eq(osh_id_from_hex(ID2, id), 0);
	ck_assert_ptr_eq(keyfile_find(&kf, id), &kf.e[1]);
	keyfile_free(&kf);
	/* A label with a blank would not read back: refused on save. */
	kf_fill(&kf, 1, 3);
	strcpy(kf.e[0].label, "two words");
	ck_assert_int_eq(keyfile_save(ctx, in_dir("k2"), &kf, 0), -EINVAL);
	ck_assert(!tu_exists(in_dir("k2")));
	keyfile_free(&kf);
}
END_TEST

/* ---- secmem ---- */

START_TEST(secmem_basics)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE), i;
	uint8_t *p = secmem_alloc(100), *z = secmem_alloc(0);
	int status;
	pid_t pid;

	ck_assert_ptr_nonnull(p);
	ck_assert_ptr_nonnull(z);
	ck_assert_uint_eq((uintptr_t)p % page, 0);
	for (i = 0; i < page; i++)
		ck_assert_uint_eq(p[i], 0);
	ck_assert_int_eq(vmflag(p, "dd"), 1);
	ck_assert_int_eq(vmflag(p, "wf"), 1);
	memset(p, 0xa5, page);
	secmem_wipe(p + 10, 20);
	for (i = 0; i < page; i++)
		ck_assert_uint_eq(p[i], i >= 10 && i < 30 ? 0 : 0xa5);
	memset(p, 0xa5, page);
	/* A child gets zeros, not the secret. */
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (!pid) {
		for (i = 0; i < page; i++)
			if (p[i])
				_exit(1);
		_exit(0);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	ck_assert_uint_eq(p[page - 1], 0xa5);
	secmem_free(p, 100);
	secmem_free(z, 0);
	secmem_free(NULL, 10);
}
END_TEST

static Suite *keys_suite(void)
{
	Suite *s = suite_create("keys");
	TCase *tc;

	tc = tcase_create("keyfile");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, keyfile_round_trip);
	tcase_add_test(tc, keyfile_no_overwrite);
	tcase_add_test(tc, keyfile_mode);
	tcase_add_loop_test(tc, keyfile_malformed, 0,
			    sizeof(kf_bad) / sizeof(kf_bad[0]));
	tcase_add_test(tc, keyfile_lenient_layout);
	suite_add_tcase(s, tc);

	tc = tcase_create("secmem");
	tcase_add_test(tc, secmem_basics);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(keys_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
