/* SPDX-License-Identifier: MIT */
/*
 * orthod: the key authority of a host (daemon/PROTOCOL.md).
 *
 * One thread, one epoll loop: every socket, timer and pidfd is an event
 * source whose epoll data points at a struct ev_src embedded first in its
 * owner. Nothing blocks except the short fsyncs of durable state, so a
 * revocation waiting for acknowledgements never holds up other clients.
 *
 * State in --state-dir: keystore (wrapped keys), kek-<id> (the key-encryption
 * key), policy, audit.log and audit.head, and a lock file.
 */
#ifndef ORTHOD_H
#define ORTHOD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <syslog.h>

#include "orthod-kmod.h"
#include "proto.h"

#define ORTHOD_MAX_CONNS_DEFAULT 1024u
#define ORTHOD_OUT_MAX (8u << 20)	/* unsent bytes before a peer is cut */
#define ORTHOD_STALL_NS (10ull * 1000000000ull) /* a message half-sent */
#define ORTHOD_INLINE_PAYLOAD 128u	/* requests other than IMPORT fit */
#define ORTHOD_BIG_MAX (4u * PROTO_MAX_PAYLOAD) /* IMPORTs being read, bytes */

struct orthod;

enum ev_kind {
	EV_LISTEN,
	EV_SIGNAL,
	EV_TICK,
	EV_CONN,
	EV_REVOKE_TIMER,
	EV_PIDFD,
	EV_REVOKE_KPOLL,	/* a revocation polls the kernel module */
};

struct ev_src {
	enum ev_kind kind;
	int fd;
};

/* ---- orthod.c ---- */

/* Log to stderr (foreground) or syslog; prio as syslog's. */
void dlog(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Return: CLOCK_REALTIME / CLOCK_MONOTONIC in nanoseconds. */
uint64_t now_real_ns(void);
uint64_t now_mono_ns(void);
/* Return: 0 or -errno; adds @src (level-triggered) for @events. */
int ev_add(struct orthod *d, struct ev_src *src, uint32_t events);
/* Return: 0 or -errno; changes the events @src waits for. */
int ev_mod(struct orthod *d, struct ev_src *src, uint32_t events);
/* Removes @src from the loop (its fd stays open). */
void ev_del(struct orthod *d, struct ev_src *src);
/* Read /proc/@pid/comm into @out (sanitised; "?" when unreadable). */
void proc_comm(pid_t pid, char out[PROTO_COMM_MAX + 1]);

/* ---- orthod-file.c: durable state files ---- */

/* Return: 0 or -errno; fsync of the directory @dirfd. */
int dir_sync(int dirfd);
/**
 * file_write_durable() - write @name in @dirfd as a whole: a temporary
 * file (mode 0600), fsync, rename, and (with @sync_dir) fsync the directory.
 * On failure the old file is untouched and no temporary file is left.
 * Return: 0 or -errno.
 */
int file_write_durable(int dirfd, const char *name, const void *buf,
		       size_t len, int sync_dir);
/**
 * file_read_all() - read @name in @dirfd into a new buffer (malloc, with a
 * NUL after the data); -EFBIG past @max bytes. Return: 0 or -errno.
 */
int file_read_all(int dirfd, const char *name, size_t max, uint8_t **buf,
		  size_t *len);
/* Overwrite @name with zeros in place, fsync, unlink. Return: 0 or -errno. */
int file_wipe_unlink(int dirfd, const char *name);

/* ---- orthod-keystore.c: shard keys, wrapped under the KEK on disk ---- */

struct shard {
	uint8_t id[PROTO_ID_SIZE];
	char label[PROTO_LABEL_MAX + 1];
	uint32_t layer;
	uint8_t state;			/* enum proto_shard_state */
	uint8_t in_kernel;		/* the kernel module holds its key */
	uint8_t key[PROTO_KEY_SIZE];	/* zero unless active and not
					 * in_kernel (then only the wrapped
					 * copy on disk is left) */
	uint64_t imported_ns;
	uint64_t revoked_ns;
};

struct keystore {
	int dirfd;
	struct shard *v;		/* in secmem */
	size_t n, cap;
	uint8_t *kek;			/* in secmem, PROTO_KEY_SIZE bytes */
	uint8_t kek_id[16];
	int have_kek;
	uint8_t old_kek_id[16];		/* replaced, not yet destroyed */
	int old_kek;
	uint64_t generation;
};

/* Load (or create) the keystore in @dirfd. Return: 0 or -errno. */
int ks_open(struct keystore *ks, int dirfd);
/* Wipe every key and free. */
void ks_close(struct keystore *ks);
/* Return: the shard with @id, or NULL. */
struct shard *ks_find(struct keystore *ks, const uint8_t id[PROTO_ID_SIZE]);
/**
 * ks_import() - add keys and write the keystore durably. A shard already
 * present with the same key counts as present; with another key, or revoked,
 * the whole import fails (-EEXIST, -EKEYREVOKED) and nothing changes.
 * Return: 0 or -errno; *@added and *@present filled in.
 */
int ks_import(struct keystore *ks, const struct proto_key *keys, uint32_t n,
	      uint32_t *added, uint32_t *present, const char **why);
/**
 * ks_mark_revoking() - the first step of a revocation: mark @n shards
 * revoking, drop their keys from the file and re-wrap the rest under a
 * fresh KEK, durably; then wipe the keys from memory. On failure nothing
 * changes. Return: 0 or -errno.
 */
int ks_mark_revoking(struct keystore *ks, struct shard **s, size_t n);
/**
 * ks_destroy_old_kek() - overwrite and unlink the KEK that the last
 * ks_mark_revoking() replaced, so the keystore blocks it wrapped are
 * useless. Return: 0 or -errno (the next start sweeps it then).
 */
int ks_destroy_old_kek(struct keystore *ks);
/**
 * ks_set_revoked() - mark the revoking shards among @s (NULLs skipped)
 * revoked, in memory; ks_sync() makes it durable. Either state refuses the
 * key, and a start finds revoking ones on disk and completes them.
 * Return: the number changed.
 */
size_t ks_set_revoked(struct keystore *ks, struct shard **s, size_t n);
/* Write the keystore under the current KEK. Return: 0 or -errno. */
int ks_sync(struct keystore *ks);
/*
 * ks_hand_over() - the kernel module has @s's key now: wipe the copy in
 * memory. The wrapped copy on disk stays; keystore writes take the key
 * from there (the file is decrypted under the KEK held in memory).
 */
void ks_hand_over(struct keystore *ks, struct shard *s);

/* ---- orthod-policy.c: who may receive which key ---- */

struct policy {
	int dirfd;
	struct proto_rule *v;
	size_t n, cap;
};

struct peer {
	pid_t pid;
	uid_t uid;
	gid_t gid;
	gid_t *groups;			/* supplementary, from SO_PEERGROUPS */
	int ngroups;
	char comm[PROTO_COMM_MAX + 1];
	int admin;
};

/* Return: 0 or -errno (-EBADMSG for a malformed policy file). */
int policy_open(struct policy *p, int dirfd);
void policy_close(struct policy *p);
/* Add or replace the rule for (selector, principal), durably. Return: 0 or -errno. */
int policy_set(struct policy *p, const struct proto_rule *r);
/* Return: 0 when @who may receive @s's key, else -EACCES. */
int policy_check(const struct policy *p, const struct shard *s,
		 const struct peer *who);
/* Return: 1 when @sel names @s. */
int sel_match(const struct proto_sel *sel, const struct shard *s);
/**
 * policy_kernel() - the kernel module's form of who may fetch @s: every
 * rule that names it, with @extra (may be NULL) added or replacing the
 * rule for the same selector and principal.
 * Return: 0, or -E2BIG when a list passes ORTHOD_KMOD_POLICY_MAX.
 */
int policy_kernel(const struct policy *p, const struct shard *s,
		  const struct proto_rule *extra, struct orthod_kmod_policy *out);

/* ---- orthod-audit.c: the hash-chained log ---- */

struct audit {
	int dirfd;
	int fd;				/* audit.log, O_APPEND */
	int headfd;			/* audit.head */
	uint64_t seq;			/* last record */
	uint8_t hash[32];		/* its SHA-256 */
};

/* Open and check the log (refuses a damaged one). Return: 0 or -errno. */
int audit_open(struct audit *a, int dirfd, char *why, size_t whylen);
void audit_close(struct audit *a);
/**
 * audit_log() - append one record "event k=v ..." (values sanitised by the
 * caller with audit_val()), fsynced. Return: 0 or -errno.
 */
int audit_log(struct audit *a, const char *event, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Copy @s into @out with anything but [!-~] replaced by '_'. */
void audit_val(const char *s, char *out, size_t cap);
/* Re-read the log from disk and check it. Return: 0 or -errno. */
int audit_verify(struct audit *a, struct proto_verify *v);
/**
 * audit_read() - records with seq >= @from into @b as strings, at most @max
 * records and about @budget bytes. Return: the count or -errno.
 */
int audit_read(struct audit *a, uint64_t from, uint32_t max, size_t budget,
	       struct pbuf *b, uint64_t *next, int *more);

/* ---- orthod-registry.c: connections and what they hold ---- */

struct hold {
	uint8_t id[PROTO_ID_SIZE];
	char device[PROTO_DEVICE_MAX + 1];
	uint64_t bytes;
	uint64_t since_ns;
};

struct conn {
	struct ev_src ev;
	struct conn *next, *prev;
	struct peer peer;
	uint64_t connected_ns;
	uint64_t stall_since;		/* monotonic; 0 between messages */
	/* input */
	uint8_t hdr[PROTO_HDR_SIZE];
	size_t hdr_have;
	struct proto_hdr h;
	uint8_t inl[ORTHOD_INLINE_PAYLOAD];
	uint8_t *payload;		/* inl, or secmem for IMPORT */
	size_t pay_have;
	/* output */
	uint8_t *out;
	size_t out_off, out_len, out_cap;
	int closing;			/* close once the output is sent */
	int dead;			/* close at the next reap */
	int uncounted;			/* dropped to make room: not in nconns */
	/* what the peer holds */
	struct hold *holds;
	size_t nholds, cap_holds;
	uint8_t (*keys)[PROTO_ID_SIZE];	/* keys handed out, not released */
	size_t nkeys, cap_keys;
	uint32_t keys_out;		/* keys ever handed out */
};

/* Return: 0 or -ENOMEM; replaces the record for the same shard and device. */
int reg_hold(struct conn *c, const struct proto_hold *h);
/* Forget residency (and the key with PROTO_RELEASE_KEY). */
void reg_release(struct conn *c, const struct proto_release *r);
/* Return: 0 or -ENOMEM; remember that @c received @id's key. */
int reg_key_out(struct conn *c, const uint8_t id[PROTO_ID_SIZE]);
/* Return: 1 when @c holds @id's key or any of its bytes. */
int reg_holds(const struct conn *c, const uint8_t id[PROTO_ID_SIZE]);
/* Forget everything @c holds of @id (after a wipe is acknowledged). */
void reg_drop(struct conn *c, const uint8_t id[PROTO_ID_SIZE]);
void reg_free(struct conn *c);
/* Handle GET_KEY, HOLD, RELEASE and ACK. Return: 0, or -errno to drop @c. */
int client_request(struct orthod *d, struct conn *c);

/* ---- orthod-conn.c: sockets and framing ---- */

/* Accept every pending connection. */
void conn_accept(struct orthod *d);
/* Handle @c's readiness. */
void conn_event(struct orthod *d, struct conn *c, uint32_t events);
/* Queue @len bytes (sent at once when possible). Return: 0 or -errno. */
int conn_send(struct orthod *d, struct conn *c, const void *buf, size_t len);
/* Send the message built in @b (ends it). Return: 0 or -errno. */
int conn_send_pbuf(struct orthod *d, struct conn *c, struct pbuf *b);
/* Reply ERROR @err with a message. Return: 0 or -errno. */
int conn_error(struct orthod *d, struct conn *c, uint64_t req, int err,
	       const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* Reply OK. Return: 0 or -errno. */
int conn_ok(struct orthod *d, struct conn *c, uint64_t req);
/* Close @c now (revocations waiting on it are told). */
void conn_close(struct orthod *d, struct conn *c);
/* Close connections that stalled mid-message. */
void conn_tick(struct orthod *d);
/* Close the connections marked dead or done; between event batches only. */
void conn_reap(struct orthod *d);
/* Return: 1 for a request type only an admin may send. */
int type_is_admin(uint16_t type);

/* ---- orthod-admin.c ---- */

/* Handle the admin requests. Return: 0, or -errno to drop @c. */
int admin_request(struct orthod *d, struct conn *c);

/* ---- orthod-revoke.c ---- */

struct revoke_op;

/* Start a revocation for REVOKE. Return: 0, or -errno to drop @c. */
int revoke_start(struct orthod *d, struct conn *c,
		 const struct proto_revoke_req *r, uint64_t req);
/* An ACK arrived on @c. */
void revoke_ack(struct orthod *d, struct conn *c, const struct proto_ack *a);
/* @c is closing: its waits become pidfd watches or "gone". */
void revoke_conn_gone(struct orthod *d, struct conn *c);
/* A revocation's timer or a watched pidfd fired. */
void revoke_event(struct orthod *d, struct ev_src *src);
/* Return: 1 when a revocation in progress waits on @c (admin or holder). */
int revoke_waits_for(struct orthod *d, const struct conn *c);
/* Tell @c at once that @s is revoked (a late holder). Return: 0 or -errno. */
int revoke_notify_late(struct orthod *d, struct conn *c, const struct shard *s);
/* Holders of @s among the connections. Return: the count. */
uint32_t revoke_holders(struct orthod *d, const struct shard *s);
/* Finish revocations interrupted by a crash (at start). Return: 0 or -errno. */
int revoke_recover(struct orthod *d);
/* Cancel every revocation at shutdown. */
void revoke_shutdown(struct orthod *d);
/* Free finished revocations; between event batches only. */
void revoke_reap(struct orthod *d);

/* ---- orthod-kernel.c: keys in the kernel module (kmod/README.md) ---- */

/*
 * kernel_start() - open the module's device (@path, NULL for /dev/ortho,
 * "none" to leave it alone), revoke there what the keystore has revoked,
 * and put every active key in with its policy. Without the module (or the
 * privilege) one line says so and orthod keeps the keys as before.
 */
void kernel_start(struct orthod *d, const char *path);
void kernel_stop(struct orthod *d);
/* The shards imported at @from.. go to the kernel (after ks_import()). */
void kernel_import(struct orthod *d, size_t from);
/*
 * kernel_rule_check() - would the kernel's policy of every shard @r names
 * still fit with @r? Return: 0, or -E2BIG with @hex naming a shard.
 */
int kernel_rule_check(struct orthod *d, const struct proto_rule *r,
		      char hex[33]);
/* After policy_set(): the kernel's policy of each shard @r names. Return:
 * how many shards were updated. */
size_t kernel_rule_apply(struct orthod *d, const struct proto_rule *r);

/* ---- orthod-krevoke.c: the kernel's half of a revocation ---- */

struct krevoke;

/**
 * krevoke_start() - revoke in the kernel every shard of @ids it holds,
 * and list its holders (the open files of /dev/ortho that fetched it).
 * @out: NULL when the kernel holds none of them.
 * Return: 0 or -ENOMEM.
 */
int krevoke_start(struct orthod *d, const uint8_t (*ids)[PROTO_ID_SIZE],
		  size_t nids, uint64_t t0, struct krevoke **out);
/* Look again. Return: 1 once every kernel revocation is done, else 0. */
int krevoke_poll(struct orthod *d, struct krevoke *k);
/* Return: ms after the revocation when the kernel must be done (grace). */
uint32_t krevoke_grace_ms(const struct krevoke *k);
/* The outcome of every holder still pending (busy) and of those that
 * closed their file (busy if still running, else gone). */
void krevoke_finish(struct orthod *d, struct krevoke *k);
size_t krevoke_count(const struct krevoke *k);
void krevoke_rec(const struct krevoke *k, size_t i,
		 struct proto_holder_rec *out);
/* " kernel_holders=.. kernel_acked=.. ..." and each killed holder. */
void krevoke_audit(const struct krevoke *k, char *buf, size_t cap);
void krevoke_free(struct krevoke *k);

/* ---- the daemon ---- */

struct orthod {
	int epfd;
	struct ev_src listen;
	struct ev_src sig;
	struct ev_src tick;
	int spare_fd;			/* closed to accept on EMFILE */
	int dirfd;
	int lockfd;
	const char *sock_path;
	gid_t admin_gid;
	int has_admin_gid;
	unsigned int max_conns;
	unsigned int max_conns_uid;	/* per uid other than root */
	unsigned int nconns;
	size_t big_bytes;		/* large payloads being read */
	struct conn *conns;
	struct keystore ks;
	struct policy pol;
	struct audit audit;
	struct revoke_op *revokes;
	struct orthod_kmod km;		/* fd -1: keys stay with orthod */
	const char *kmod_path;
	uint64_t start_ns;
	int stop;
};

#endif /* ORTHOD_H */
