/* SPDX-License-Identifier: MIT */
/* orthoctl: shared by its verbs (one file each). Public API only. */
#ifndef ORTHOCTL_H
#define ORTHOCTL_H

#include <stdint.h>
#include <stdio.h>

#include "ortho.h"
#include "ortho-admin.h"

/* Exit codes */
#define OCTL_OK 0
#define OCTL_ERR 1		/* the request failed */
#define OCTL_USAGE 2		/* bad command line */
#define OCTL_HOLDERS 3		/* revoke: not every holder acknowledged */

struct octl {
	struct ortho_ctx *ctx;
	const char *socket;	/* --socket, $ORTHO_SOCKET, or the default */
};

/* Connect; prints why not. Return: 0 or -errno. */
int octl_connect(struct octl *o, struct ortho_admin **a);
/* Print "orthoctl: <verb>: <what>: <reason>" for a failed call. */
void octl_fail(const char *verb, const char *what, int err);
/* Parse a uid or gid, by number or by name. Return: 0 or -EINVAL. */
int octl_parse_uid(const char *s, uint32_t *out);
int octl_parse_gid(const char *s, uint32_t *out);
/* Parse a decimal u32 in [min, max]. Return: 0 or -EINVAL. */
int octl_parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *out);

/* Write @s as a JSON string (quoted, escaped). */
void json_str(FILE *f, const char *s);
/* Write CLOCK_REALTIME nanoseconds as UTC ISO 8601 ("-" for 0). */
void iso_time(char *buf, size_t cap, uint64_t ns);
/* Return: "active", "revoking", "revoked" or "?". */
const char *state_name(uint32_t state);

int cmd_key(struct octl *o, int argc, char **argv);
int cmd_grant(struct octl *o, int argc, char **argv);
int cmd_deny(struct octl *o, int argc, char **argv);
int cmd_list(struct octl *o, int argc, char **argv);
int cmd_revoke(struct octl *o, int argc, char **argv);
int cmd_status(struct octl *o, int argc, char **argv);
int cmd_audit(struct octl *o, int argc, char **argv);

/* The kernel module's view for status (orthoctl-kmod.c). Return: 0 or
 * -errno (what could not be read is said in the output). */
int octl_kmod_status(FILE *f, int json);

#endif
