// SPDX-License-Identifier: MIT
/*
 * The clients of /dev/ortho: the library's (lib/kdev.c) and orthod's
 * (daemon/orthod-kmod.c, compiled in here as orthod does with its share of
 * lib/). Without the module only the refusals are checked and the program
 * says "SKIP: /dev/ortho not present" (exit 77); with it, and as root, a
 * key goes in through orthod's call and comes back through the library's,
 * is revoked, announced with POLLPRI and acknowledged. The same paths run
 * with several uids inside qemu in tests/kmod/kdev_test.c.
 */
#include <check.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "kdev.h"
#include "secmem.h"
#include "testutil.h"
#include "../daemon/orthod-kmod.c"

static char *view(struct orthod_kmod *km, int json)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&buf, &len);

	ck_assert_ptr_nonnull(m);
	ck_assert_int_eq(orthod_kmod_view_print(m, km, json), 0);
	fclose(m);
	return buf;
}

START_TEST(test_absent)
{
	struct tu_log lg = { .len = 0 };
	struct ortho_ctx *ctx = tu_ctx(&lg);
	struct orthod_kmod km = { .fd = 7 };
	struct kdev *kd = (struct kdev *)&lg;
	char *v;

	ck_assert(!kdev_present("/nonexistent/ortho"));
	ck_assert_int_eq(kdev_open(ctx, "/nonexistent/ortho", &kd), -ENOENT);
	ck_assert_ptr_null(kd);
	ck_assert_int_eq(orthod_kmod_open(&km, "/nonexistent/ortho"), -ENOENT);
	ck_assert_int_eq(km.fd, -1);
	ck_assert(!orthod_kmod_active(&km));
	/* A character device that is not ours answers ENOTTY. */
	ck_assert_int_eq(kdev_open(ctx, "/dev/null", &kd), -ENOTTY);
	ck_assert(tu_log_has(&lg, "/dev/null is not the ortho module's device"));
	ck_assert_int_eq(orthod_kmod_open(&km, "/dev/null"), -ENOTTY);
	ck_assert(!orthod_kmod_active(&km));
	v = view(&km, 0);
	ck_assert_str_eq(v, "module: not loaded\n");
	free(v);
	v = view(&km, 1);
	ck_assert_str_eq(v, "{\"loaded\":false}");
	free(v);
	ortho_ctx_free(ctx);
}
END_TEST

START_TEST(test_policy_lists)
{
	struct orthod_kmod_policy p = { 0 };
	uint8_t id[ORTHOD_KMOD_ID_SIZE] = { 1 };
	struct orthod_kmod km = { .fd = -1 };
	uint32_t i;

	for (i = 0; i < ORTHOD_KMOD_POLICY_MAX; i++) {
		ck_assert_int_eq(orthod_kmod_policy_add(&p, 1, 1, 500 + i), 0);
		ck_assert_int_eq(orthod_kmod_policy_add(&p, 0, 0, 700 + i), 0);
	}
	ck_assert_int_eq(orthod_kmod_policy_add(&p, 1, 1, 500), 0);
	ck_assert_int_eq(orthod_kmod_policy_add(&p, 1, 1, 1), -E2BIG);
	ck_assert_int_eq(orthod_kmod_policy_add(&p, 0, 0, 1), -E2BIG);
	ck_assert_int_eq(orthod_kmod_policy_add(&p, 1, 0, 1), 0);
	ck_assert_uint_eq(p.n_gids, ORTHOD_KMOD_POLICY_MAX);
	ck_assert_uint_eq(p.n_deny_uids, ORTHOD_KMOD_POLICY_MAX);
	ck_assert_uint_eq(p.n_uids, 1);
	ck_assert_uint_eq(p.n_deny_gids, 0);
	ck_assert_uint_eq(p.gids[15], 515);
	/* Without the module every call says so, and nothing is sent. */
	ck_assert_int_eq(orthod_kmod_set_policy(&km, id, &p), -ENODEV);
	p.n_uids = ORTHOD_KMOD_POLICY_MAX + 1;
	ck_assert_int_eq(orthod_kmod_set_policy(&km, id, &p), -EINVAL);
}
END_TEST

/* As root with the module loaded: the whole round through one process. */
START_TEST(test_round)
{
	struct orthod_kmod_policy p = { 0 };
	uint8_t id[KDEV_ID_SIZE], key[KDEV_KEY_SIZE], ids[2][KDEV_ID_SIZE];
	struct orthod_kmod_holder *h;
	struct kdev_shard_status st;
	struct orthod_kmod_shard s;
	char label[KDEV_LABEL_MAX], *v;
	struct orthod_kmod km;
	uint32_t total;
	struct kdev *kd;
	uint8_t *got;
	size_t nh;

	ck_assert_int_eq(getrandom(id, sizeof(id), 0), (ssize_t)sizeof(id));
	ck_assert_int_eq(getrandom(key, sizeof(key), 0), (ssize_t)sizeof(key));
	id[0] |= 1;
	key[0] |= 1;
	ck_assert_int_eq(orthod_kmod_open(&km, NULL), 0);
	ck_assert_int_eq(orthod_kmod_policy_add(&p, 1, 0, getuid()), 0);
	ck_assert_int_eq(orthod_kmod_add(&km, id, key, "test-kdev", &p, NULL), 0);
	ck_assert_int_eq(kdev_open(NULL, NULL, &kd), 0);
	got = secmem_alloc(KDEV_KEY_SIZE);
	ck_assert_ptr_nonnull(got);
	ck_assert_int_eq(kdev_get_key(kd, id, got, label, NULL), 0);
	ck_assert_mem_eq(got, key, KDEV_KEY_SIZE);
	ck_assert_str_eq(label, "test-kdev");
	ck_assert_int_eq(kdev_resident(kd, id, 777), 0);
	ck_assert_int_eq(orthod_kmod_holders(&km, id, &h, &nh), 0);
	ck_assert_uint_eq(nh, 1);
	ck_assert_int_eq(h[0].pid, getpid());
	ck_assert_uint_eq(h[0].resident, 777);
	free(h);
	v = view(&km, 0);
	ck_assert_ptr_nonnull(strstr(v, "test-kdev: live, 1 holders"));
	free(v);
	ck_assert_int_eq(kdev_wait_revoke(kd, -1, 0), 0);
	ck_assert_int_eq(orthod_kmod_revoke(&km, id, 0, &s), 0);
	ck_assert(s.revoked && s.holders == 1 && !s.done_ns);
	ck_assert_int_eq(orthod_kmod_revoke_done(&km, id, NULL), 0);
	ck_assert_int_eq(kdev_wait_revoke(kd, -1, 5000), 1);
	ck_assert_int_eq(kdev_pending(kd, ids, 2, &total), 1);
	ck_assert_uint_eq(total, 1);
	ck_assert_mem_eq(ids[0], id, KDEV_ID_SIZE);
	secmem_wipe(got, KDEV_KEY_SIZE);
	ck_assert_int_eq(kdev_ack(kd, id), 0);
	ck_assert_int_eq(kdev_pending(kd, NULL, 0, &total), 0);
	ck_assert_uint_eq(total, 0);
	ck_assert_int_eq(orthod_kmod_revoke_done(&km, id, &s), 1);
	ck_assert_uint_eq(s.acked, 1);
	ck_assert_int_eq(kdev_status(kd, id, &st), 0);
	ck_assert_uint_eq(st.state, KDEV_KEY_REVOKED);
	ck_assert_int_eq(kdev_get_key(kd, id, got, NULL, NULL), -EKEYREVOKED);
	secmem_free(got, KDEV_KEY_SIZE);
	kdev_close(kd);
	orthod_kmod_close(&km);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("kdev");
	TCase *tc = tcase_create("kdev");
	int present = kdev_present(NULL), failed;
	SRunner *sr;

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_absent);
	tcase_add_test(tc, test_policy_lists);
	if (present && !geteuid())
		tcase_add_test(tc, test_round);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	if (failed)
		return 1;
	if (!present) {
		printf("SKIP: /dev/ortho not present\n");
		return 77;
	}
	if (geteuid()) {
		printf("SKIP: /dev/ortho needs root to add keys\n");
		return 77;
	}
	return 0;
}
