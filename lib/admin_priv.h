/* SPDX-License-Identifier: MIT */
/* Shared by admin.c and admin_status.c: the connection behind ortho-admin.h. */
#ifndef ORTHO_ADMIN_PRIV_H
#define ORTHO_ADMIN_PRIV_H

#include "authority.h"
#include "ortho-admin.h"

struct ortho_admin {
	struct ortho_ctx *ctx;
	struct authority *auth;
};

/**
 * admin_call() - authority_call(), logging a failure as "@what: reason"
 * (the daemon's words when it sent an ERROR).
 * Return: 0 or -errno.
 */
int admin_call(struct ortho_admin *a, struct pbuf *b, uint16_t expect,
	       int timeout_ms, struct authority_reply *r, const char *what);

/**
 * admin_copy_out() - copy a result struct of @full bytes to the caller's
 * @dst, whose leading size_t says how large it is; that field is kept.
 * Return: 0, or -EINVAL when the caller's struct is smaller.
 */
int admin_copy_out(void *dst, const void *src, size_t full);

#endif
