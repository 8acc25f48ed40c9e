/* SPDX-License-Identifier: MIT */
/*
 * Memory for secrets and plaintext shard bytes: anonymous mmap, mlock
 * (best effort: a failed mlock is reported once at debug level), excluded
 * from core dumps (MADV_DONTDUMP) and from fork (MADV_WIPEONFORK), wiped
 * with explicit_bzero before it is unmapped.
 */
#ifndef ORTHO_SECMEM_H
#define ORTHO_SECMEM_H

#include <stddef.h>

/* Return: page-aligned zeroed memory of at least @size bytes, or NULL. */
void *secmem_alloc(size_t size);
/* Wipe and unmap; @size as given to secmem_alloc(). NULL is fine. */
void secmem_free(void *p, size_t size);
/* Wipe in place without freeing. */
void secmem_wipe(void *p, size_t size);

#endif
