/* SPDX-License-Identifier: MIT */
/*
 * Helpers of the ortho.ko tests (static programs run inside qemu as root,
 * and as an unprivileged uid): ioctl wrappers that return 0 or -errno,
 * child processes with dropped privileges, fdinfo and dmesg readers, and
 * the expectation macros that print why a case failed.
 */
#ifndef KT_H
#define KT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "../../kmod/uapi/ortho.h"

#define KT_MODULE_PATH "/lib/modules/ortho.ko"
#define KT_GRACE_PARAM "/sys/module/ortho/parameters/grace_ms"
#define KT_GRACE_MS 300		/* what the init script loads the module with */
#define KT_STATE_DIR "/tmp"	/* setup (root) -> user case hand-over */

/* Record a failure (the first one is the case's reason) and print it. */
void kt_failf(const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Print one line with one write(2): no interleaving with other processes. */
void kt_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Return: the first failure message of this process, or "". */
const char *kt_reason(void);

#define KT_CHECK(cond, ...)						\
	do {								\
		if (!(cond)) {						\
			kt_failf(__FILE__, __LINE__, __VA_ARGS__);	\
			return -1;					\
		}							\
	} while (0)

/* expr returns 0 or -errno; want is 0 or -Exxx. */
#define KT_RET(expr, want)						\
	do {								\
		int kt_r_ = (expr), kt_w_ = (want);			\
		if (kt_r_ != kt_w_) {					\
			kt_failf(__FILE__, __LINE__,			\
				 "%s = %d (%s), want %d (%s)", #expr,	\
				 kt_r_, kt_strerr(kt_r_), kt_w_,	\
				 kt_strerr(kt_w_));			\
			return -1;					\
		}							\
	} while (0)

#define KT_OK(expr) KT_RET(expr, 0)

/* Return: "ok" for 0, else strerror(-err). */
const char *kt_strerr(int err);

/* Random bytes (getrandom). */
void kt_random(void *buf, size_t len);
/* A fresh random shard id and key; the key is never all zero. */
void kt_new_shard(uint8_t id[ORTHO_IOC_ID_SIZE], uint8_t key[ORTHO_IOC_KEY_SIZE]);

/* Return: an fd of /dev/ortho, or -errno. */
int kt_open(void);
/* Return: 0 or -errno of ioctl(fd, cmd, arg). */
int kt_ioctl(int fd, unsigned long cmd, void *arg);

/* A filled-in ORTHO_IOC_ADD argument (size set, policy copied). */
void kt_add_arg(struct ortho_ioc_add *a, const uint8_t *id, const uint8_t *key,
		const char *label, const uint32_t *uids, uint32_t n_uids,
		const uint32_t *gids, uint32_t n_gids);
/* Return: 0 or -errno of ORTHO_IOC_ADD. */
int kt_add(int fd, const uint8_t *id, const uint8_t *key, const char *label,
	   const uint32_t *uids, uint32_t n_uids, const uint32_t *gids,
	   uint32_t n_gids);
/* Add a fresh shard that uid @uid may fetch. Return: 0 or -errno. */
int kt_add_for_uid(int fd, uint8_t *id, uint8_t *key, const char *label,
		   uint32_t uid);
/* Return: 0 or -errno of ORTHO_IOC_GET; @key (may be NULL) receives it. */
int kt_get(int fd, const uint8_t *id, uint8_t *key);
/* Return: 0 or -errno of ORTHO_IOC_REVOKE; @out may be NULL. */
int kt_revoke(int fd, const uint8_t *id, uint32_t flags,
	      struct ortho_ioc_revoke *out);
/* Return: 0 or -errno of ORTHO_IOC_ACK. */
int kt_ack(int fd, const uint8_t *id);
/* Return: 0 or -errno of ORTHO_IOC_RESIDENT. */
int kt_resident(int fd, const uint8_t *id, uint64_t bytes);
/* Return: 0 or -errno of ORTHO_IOC_STATUS. */
int kt_status(int fd, const uint8_t *id, struct ortho_ioc_status *out);
/* Return: 0 or -errno of ORTHO_IOC_PENDING; *count in: room, out: written. */
int kt_pending(int fd, uint8_t *ids, uint32_t *count, uint32_t *total);

/* Return: 0 when poll(POLLPRI) on @fd reports POLLPRI within @ms, else -1. */
int kt_wait_pri(int fd, int ms);
/* Return: poll(2)'s revents for POLLPRI|POLLIN|POLLOUT after @ms. */
int kt_poll_revents(int fd, int ms);

/* ---- child processes ---- */

struct kt_ids {
	uid_t uid;
	gid_t gid;
	int ngroups;
	gid_t groups[4];
};

struct kt_child {
	pid_t pid;
	int ready_rd;		/* the child says "ready" */
	int go_wr;		/* the parent says "go" */
};

typedef int (*kt_child_fn)(void *arg);

/*
 * Fork a child that takes the identity @ids (NULL: stays root) and runs
 * @fn; it exits 0 when @fn returns 0, else 1. Return: 0 or -errno.
 */
int kt_spawn(struct kt_child *c, const struct kt_ids *ids, kt_child_fn fn,
	     void *arg);
/* In a child: tell the parent it is ready / wait for its go. Return: 0/-1. */
int kt_child_ready(void);
int kt_child_wait_go(void);
/* In the parent. Return: 0, or -1 when the child died or timed out. */
int kt_wait_ready(struct kt_child *c, int ms);
int kt_send_go(struct kt_child *c);
/*
 * Reap a child. Return: its exit code, 128 + signal when killed, -1 when
 * it is still running after @ms (it is then killed).
 */
int kt_reap(struct kt_child *c, int ms);
/* Kill and reap every child still running (end of a case). */
void kt_reap_all(void);
/* Drop to @ids in this process. Return: 0 or -errno. */
int kt_drop(const struct kt_ids *ids);

/* ---- /proc and the kernel log ---- */

/*
 * Read the value of @key from /proc/@pid/fdinfo/@fd into @val.
 * Return: 0, -ENOENT when the key is absent, or -errno.
 */
int kt_fdinfo(pid_t pid, int fd, const char *key, char *val, size_t len);
/* Same, for a per-shard key: "<prefix>-<32 hex digits of id>". */
int kt_fdinfo_shard(pid_t pid, int fd, const char *prefix, const uint8_t *id,
		    char *val, size_t len);
/* Return: 1 when the kernel log holds @needle, 0 if not, -errno. */
int kt_dmesg_has(const char *needle);
/* Lowercase hex of a shard id into @hex (33 bytes). */
void kt_hex(const uint8_t *id, char *hex);
/* Return: CLOCK_MONOTONIC in ns. */
uint64_t kt_now_ns(void);
/* Write @val to a sysfs/proc file. Return: 0 or -errno. */
int kt_write_file(const char *path, const char *val);
/* Read a small file into @buf (NUL-terminated). Return: 0 or -errno. */
int kt_read_file(const char *path, char *buf, size_t len);
/* Save/load a shard for a setup -> user case hand-over. Return: 0/-errno. */
int kt_state_save(const char *name, const uint8_t *blob, size_t len);
int kt_state_load(const char *name, uint8_t *blob, size_t len);

/* ---- the cases of kmod_test_revoke.c (each returns 0 or -1) ---- */

int kt_case_revoke(void);
int kt_case_poll_ack(void);
int kt_case_kill(void);
int kt_case_fdinfo(void);
int kt_case_concurrent(void);
int kt_case_race(void);
int kt_case_audit(void);
int kt_case_rmmod(void);

/* ---- the cases of kmod_test_admin.c ---- */

int kt_case_set_policy(void);
int kt_case_list(void);
int kt_case_holders(void);

#endif
