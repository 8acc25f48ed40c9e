/* SPDX-License-Identifier: MIT */
/*
 * libortho-rt: administering the key authority, orthod.
 *
 * A separate header from ortho.h: applications that run models never need
 * it. orthoctl is written against it alone. The daemon answers these calls
 * only for root or its admin group (orthod --admin-group); anyone else gets
 * -EPERM from ortho_admin_connect().
 *
 * Conventions as in ortho.h: every call returns 0 or a negative errno and
 * reports through the context's log callback; output structs start with
 * their size (set .sz first), fields past it are left alone; results with
 * lists are opaque objects read with _count() and indexed getters.
 *
 * Shards are named by their id, 32 hex digits, or by label (every shard
 * with that label).
 */
#ifndef ORTHO_ADMIN_H
#define ORTHO_ADMIN_H

#include "ortho.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ORTHO_ADMIN_SOCKET "/run/ortho/orthod.sock"

struct ortho_admin;
struct ortho_admin_status;
struct ortho_admin_revoke;

/**
 * ortho_admin_connect() - connect to orthod as an admin.
 * @ctx: the context messages go to (may be NULL: silent).
 * @path: the daemon's socket, or NULL for ORTHO_ADMIN_SOCKET.
 * @out: the connection.
 *
 * Return: 0, or -ENOENT / -ECONNREFUSED (no daemon there), -EPERM (not
 * root nor in the admin group), -EPROTONOSUPPORT (another protocol
 * version), -errno.
 */
ORTHO_API int ortho_admin_connect(struct ortho_ctx *ctx, const char *path,
				  struct ortho_admin **out);

/**
 * ortho_admin_close() - hang up.
 * @a: the connection, or NULL.
 */
ORTHO_API void ortho_admin_close(struct ortho_admin *a);

/* ---- keys ---- */

enum ortho_admin_import_flags {
	/* Once the daemon holds the keys durably, overwrite and remove the file. */
	ORTHO_ADMIN_IMPORT_WIPE = 1u << 0,
};

struct ortho_admin_import_result {
	size_t sz;
	uint32_t keys;		/* in the file */
	uint32_t added;		/* new to the daemon */
	uint32_t present;	/* already held, same key */
	uint32_t wiped;		/* 1: the file was overwritten and removed */
};

/**
 * ortho_admin_import_keys() - hand a key file (as ortho-pack writes it) to
 * the daemon, which keeps the keys wrapped in its keystore.
 * @a: the connection.
 * @key_file: the file (mode 0600).
 * @flags: enum ortho_admin_import_flags.
 * @res: filled in, or NULL.
 *
 * All or nothing: a shard id the daemon holds with another key, or one it
 * revoked, fails the whole import. The file is only wiped after success.
 *
 * Return: 0, or -EBADMSG / -EPERM (bad or readable-by-others key file),
 * -EEXIST, -EKEYREVOKED, an I/O error, -errno.
 */
ORTHO_API int ortho_admin_import_keys(struct ortho_admin *a,
				      const char *key_file, unsigned int flags,
				      struct ortho_admin_import_result *res);

/* ---- policy ---- */

enum ortho_admin_principal {
	ORTHO_ADMIN_UID = 1,
	ORTHO_ADMIN_GID = 2,
};

struct ortho_admin_rule {
	size_t sz;
	char shard[33];		/* a shard id, or "" to go by label */
	char label[64];		/* a label, or "" to go by shard */
	uint32_t principal;	/* enum ortho_admin_principal */
	uint32_t id;		/* the uid or gid */
	uint32_t allow;		/* in a status: 1 grant, 0 deny */
};

/**
 * ortho_admin_grant() - let a uid or gid receive the key of a shard, or of
 * every shard with a label (replacing a deny rule for the same pair).
 * @a: the connection.
 * @rule: exactly one of ->shard and ->label set; ->allow is ignored.
 *
 * Return: 0, or -EINVAL (bad rule), -errno.
 */
ORTHO_API int ortho_admin_grant(struct ortho_admin *a,
				const struct ortho_admin_rule *rule);

/**
 * ortho_admin_deny() - refuse a uid or gid the key (a deny rule wins over
 * any grant; without a grant the answer is already no).
 * @a: the connection.
 * @rule: as for ortho_admin_grant().
 *
 * Return: 0, or -EINVAL (bad rule), -errno.
 */
ORTHO_API int ortho_admin_deny(struct ortho_admin *a,
			       const struct ortho_admin_rule *rule);

/* ---- status ---- */

enum ortho_admin_shard_state {
	ORTHO_ADMIN_SHARD_ACTIVE = 1,
	ORTHO_ADMIN_SHARD_REVOKING = 2,
	ORTHO_ADMIN_SHARD_REVOKED = 3,
};

struct ortho_admin_daemon {
	size_t sz;
	uint32_t pid;
	uint32_t protocol;
	uint64_t start_ns;	/* CLOCK_REALTIME */
	uint64_t now_ns;
	uint32_t connections;
	uint32_t truncated;	/* 1: lists cut to fit one message */
};

struct ortho_admin_shard {
	size_t sz;
	char id[33];
	char label[64];
	uint32_t layer;
	uint32_t state;		/* enum ortho_admin_shard_state */
	uint32_t holders;	/* connections holding its key or bytes */
	uint64_t imported_ns;
	uint64_t revoked_ns;	/* 0 unless revoked */
};

struct ortho_admin_client {
	size_t sz;
	uint32_t pid, uid, gid;
	char comm[16];
	uint64_t connected_ns;
	uint32_t keys;		/* keys handed to it */
	uint32_t resident;	/* ortho_admin_status_resident() entries */
};

struct ortho_admin_resident {
	size_t sz;
	char shard[33];
	char label[64];		/* "" for a shard the daemon does not know */
	char device[16];	/* "cpu", "cuda:0" */
	uint64_t bytes;
	uint64_t since_ns;
};

/**
 * ortho_admin_status_get() - a snapshot of the daemon: shards, policy rules,
 * connected clients and what each reports resident.
 * @a: the connection.
 * @out: the snapshot; free with ortho_admin_status_free().
 *
 * Return: 0 or -errno.
 */
ORTHO_API int ortho_admin_status_get(struct ortho_admin *a,
				     struct ortho_admin_status **out);

/**
 * ortho_admin_status_free() - free a snapshot.
 * @st: the snapshot, or NULL.
 */
ORTHO_API void ortho_admin_status_free(struct ortho_admin_status *st);

/**
 * ortho_admin_status_daemon() - the daemon itself.
 * @st: the snapshot.
 * @out: filled in; set ->sz first.
 *
 * Return: 0, or -EINVAL when ->sz is too small.
 */
ORTHO_API int ortho_admin_status_daemon(const struct ortho_admin_status *st,
					struct ortho_admin_daemon *out);

/**
 * ortho_admin_status_shard_count() - shards in the snapshot.
 * @st: the snapshot.
 *
 * Return: the count.
 */
ORTHO_API unsigned int
ortho_admin_status_shard_count(const struct ortho_admin_status *st);

/**
 * ortho_admin_status_shard() - shard @i.
 * @st: the snapshot.
 * @i: 0 .. count - 1.
 * @out: filled in; set ->sz first.
 *
 * Return: 0, -ERANGE for a bad index, -EINVAL when ->sz is too small.
 */
ORTHO_API int ortho_admin_status_shard(const struct ortho_admin_status *st,
				       unsigned int i,
				       struct ortho_admin_shard *out);

/**
 * ortho_admin_status_rule_count() - policy rules in the snapshot.
 * @st: the snapshot.
 *
 * Return: the count.
 */
ORTHO_API unsigned int
ortho_admin_status_rule_count(const struct ortho_admin_status *st);

/**
 * ortho_admin_status_rule() - rule @i.
 * @st: the snapshot.
 * @i: 0 .. count - 1.
 * @out: filled in; set ->sz first.
 *
 * Return: 0, -ERANGE, -EINVAL.
 */
ORTHO_API int ortho_admin_status_rule(const struct ortho_admin_status *st,
				      unsigned int i,
				      struct ortho_admin_rule *out);

/**
 * ortho_admin_status_client_count() - connected clients in the snapshot.
 * @st: the snapshot.
 *
 * Return: the count.
 */
ORTHO_API unsigned int
ortho_admin_status_client_count(const struct ortho_admin_status *st);

/**
 * ortho_admin_status_client() - client @i.
 * @st: the snapshot.
 * @i: 0 .. count - 1.
 * @out: filled in; set ->sz first.
 *
 * Return: 0, -ERANGE, -EINVAL.
 */
ORTHO_API int ortho_admin_status_client(const struct ortho_admin_status *st,
					unsigned int i,
					struct ortho_admin_client *out);

/**
 * ortho_admin_status_resident() - what client @i reports resident, entry @j.
 * @st: the snapshot.
 * @i: the client.
 * @j: 0 .. that client's ->resident - 1.
 * @out: filled in; set ->sz first.
 *
 * Return: 0, -ERANGE, -EINVAL.
 */
ORTHO_API int ortho_admin_status_resident(const struct ortho_admin_status *st,
					  unsigned int i, unsigned int j,
					  struct ortho_admin_resident *out);

/* ---- revocation ---- */

struct ortho_admin_revoke_opts {
	size_t sz;
	const char *shard;	/* a shard id, or NULL */
	const char *label;	/* or every shard with this label */
	uint32_t timeout_ms;	/* for the holders' acks; 0 means 5000 */
};

enum ortho_admin_outcome {
	ORTHO_ADMIN_COMPLETE = 1,	/* acknowledged: everything wiped */
	ORTHO_ADMIN_BUSY = 2,		/* still holding at the deadline */
	ORTHO_ADMIN_GONE = 3,		/* exited without acknowledging */
};

struct ortho_admin_revoke_info {
	size_t sz;
	uint64_t revoke_id;
	uint64_t elapsed_us;	/* request to the last holder's outcome */
	uint32_t shards;
	uint32_t holders;
	uint32_t complete, busy, gone;
};

struct ortho_admin_holder {
	size_t sz;
	char shard[33];
	char label[64];
	uint32_t pid, uid;
	char comm[16];
	uint32_t outcome;	/* enum ortho_admin_outcome */
	int32_t error;		/* busy: the holder's failed ack, or
				 * -ENOTCONN (hung up, still running) */
	uint64_t ack_us;	/* complete: from the request */
};

/**
 * ortho_admin_revoke() - revoke a shard, or every shard with a label: the
 * key is destroyed (the keystore re-wrapped under a fresh KEK), no key is
 * handed out again, and every process holding it is told and waited for
 * until @opts->timeout_ms.
 * @a: the connection.
 * @opts: what to revoke.
 * @out: the outcome, per holder; free with ortho_admin_revoke_free().
 *
 * Revoking a revoked shard again tells whoever still holds it again.
 *
 * Return: 0 when the daemon answered (check the holders' outcomes), or
 * -ENOENT (no such shard or label), -EINVAL, -errno.
 */
ORTHO_API int ortho_admin_revoke(struct ortho_admin *a,
				 const struct ortho_admin_revoke_opts *opts,
				 struct ortho_admin_revoke **out);

/**
 * ortho_admin_revoke_free() - free an outcome.
 * @r: the outcome, or NULL.
 */
ORTHO_API void ortho_admin_revoke_free(struct ortho_admin_revoke *r);

/**
 * ortho_admin_revoke_info_get() - the totals.
 * @r: the outcome.
 * @out: filled in; set ->sz first.
 *
 * Return: 0, or -EINVAL when ->sz is too small.
 */
ORTHO_API int ortho_admin_revoke_info_get(const struct ortho_admin_revoke *r,
					  struct ortho_admin_revoke_info *out);

/**
 * ortho_admin_revoke_shard() - revoked shard @i (0 .. info.shards - 1).
 * @r: the outcome.
 * @i: the index.
 * @out: filled in; set ->sz first.
 *
 * Return: 0, -ERANGE, -EINVAL.
 */
ORTHO_API int ortho_admin_revoke_shard(const struct ortho_admin_revoke *r,
				       unsigned int i,
				       struct ortho_admin_shard *out);

/**
 * ortho_admin_revoke_holder() - holder @i (0 .. info.holders - 1).
 * @r: the outcome.
 * @i: the index.
 * @out: filled in; set ->sz first.
 *
 * Return: 0, -ERANGE, -EINVAL.
 */
ORTHO_API int ortho_admin_revoke_holder(const struct ortho_admin_revoke *r,
					unsigned int i,
					struct ortho_admin_holder *out);

/* ---- audit ---- */

/* One record, "<seq> <time ns> <prev hash> <event> k=v..."; nonzero stops. */
typedef int (*ortho_admin_audit_fn)(void *user, uint64_t seq,
				    const char *record);

/**
 * ortho_admin_audit_read() - the audit log's records from @from_seq on
 * (1 is the first), in order.
 * @a: the connection.
 * @from_seq: the first record wanted.
 * @fn: called for each record.
 * @user: passed to @fn.
 *
 * Return: 0, @fn's nonzero return, or -errno.
 */
ORTHO_API int ortho_admin_audit_read(struct ortho_admin *a, uint64_t from_seq,
				     ortho_admin_audit_fn fn, void *user);

struct ortho_admin_audit_check {
	size_t sz;
	uint32_t ok;		/* 1: the chain holds and ends where it should */
	uint64_t records;	/* good records read */
	uint64_t bad_record;	/* the first bad one, when !ok */
	char reason[256];
};

/**
 * ortho_admin_audit_verify() - have the daemon re-read its log from disk
 * and check the hash chain and that it ends with the last record written.
 * @a: the connection.
 * @out: filled in; set ->sz first.
 *
 * Return: 0 when checked (see ->ok), or -errno.
 */
ORTHO_API int ortho_admin_audit_verify(struct ortho_admin *a,
				       struct ortho_admin_audit_check *out);

#ifdef __cplusplus
}
#endif
#endif /* ORTHO_ADMIN_H */
