/* SPDX-License-Identifier: MIT */
/*
 * Memory for secrets and plaintext shard bytes: anonymous mmap, mlock
 * (best effort: RLIMIT_MEMLOCK is often small; a failure is counted, and
 * the caller that has a context to log to reports it, see
 * secmem_lock_failures()), excluded from core dumps (MADV_DONTDUMP) and
 * from fork (MADV_WIPEONFORK), wiped with explicit_bzero before it is
 * unmapped.
 */
#ifndef ORTHO_SECMEM_H
#define ORTHO_SECMEM_H

#include <stddef.h>

/* Return: page-aligned zeroed memory of at least @size bytes, or NULL. */
void *secmem_alloc(size_t size);
/*
 * secmem_alloc_lock() - secmem_alloc(), telling whether the pages are
 * locked: @lock_err is set to 0 when mlock() succeeded, else to its
 * negative errno (the memory is usable either way).
 */
void *secmem_alloc_lock(size_t size, int *lock_err);
/*
 * secmem_lock_failures() - how many secmem mappings of this process could
 * not be locked so far; @last_err, when not NULL, gets the negative errno
 * of the latest failure (0 when none).
 */
unsigned long secmem_lock_failures(int *last_err);
/* Wipe and unmap; @size as given to secmem_alloc(). NULL is fine. */
void secmem_free(void *p, size_t size);
/* Wipe in place without freeing. */
void secmem_wipe(void *p, size_t size);

#endif
