// SPDX-License-Identifier: MIT
/*
 * Memory for keys and plaintext shard bytes. Each allocation is its own
 * anonymous mapping so that the madvise() flags apply to it alone and
 * nothing else shares its pages: a core dump leaves it out, a forked child
 * sees zeros, and it is wiped before the pages go back to the kernel.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "secmem.h"

#ifndef MADV_WIPEONFORK
#define MADV_WIPEONFORK 18	/* Linux 4.14; older headers lack it */
#endif

static atomic_ulong lock_failures;
static atomic_int lock_last_err;

static size_t secmem_len(size_t size)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	if (!size)
		size = 1;
	if (size > SIZE_MAX - page)
		return 0;
	return (size + page - 1) & ~(page - 1);
}

void *secmem_alloc_lock(size_t size, int *lock_err)
{
	size_t len = secmem_len(size);
	void *p;
	int err;

	if (!len) {
		errno = ENOMEM;
		return NULL;
	}
	p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	/*
	 * Keeping secrets out of core dumps is not optional; a kernel without
	 * MADV_DONTDUMP gets no secrets from us. Locking and wipe-on-fork are
	 * best effort: RLIMIT_MEMLOCK is often small (failures are counted
	 * for callers to report), and old kernels lack MADV_WIPEONFORK.
	 */
	if (madvise(p, len, MADV_DONTDUMP)) {
		int e = errno;

		munmap(p, len);
		errno = e;
		return NULL;
	}
	(void)madvise(p, len, MADV_WIPEONFORK);
	err = mlock(p, len) ? -errno : 0;
	if (err) {
		atomic_store(&lock_last_err, err);
		atomic_fetch_add(&lock_failures, 1);
	}
	if (lock_err)
		*lock_err = err;
	return p;
}

void *secmem_alloc(size_t size)
{
	return secmem_alloc_lock(size, NULL);
}

unsigned long secmem_lock_failures(int *last_err)
{
	unsigned long n = atomic_load(&lock_failures);

	if (last_err)
		*last_err = n ? atomic_load(&lock_last_err) : 0;
	return n;
}

void secmem_wipe(void *p, size_t size)
{
	if (p && size)
		explicit_bzero(p, size);
}

void secmem_free(void *p, size_t size)
{
	size_t len;

	if (!p)
		return;
	len = secmem_len(size);
	/* The whole mapping: the caller may have used the rounding too. */
	explicit_bzero(p, len);
	(void)munlock(p, len);
	munmap(p, len);
}
