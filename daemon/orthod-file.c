// SPDX-License-Identifier: MIT
/*
 * Durable state files in the state directory. Every file is replaced as a
 * whole (temporary file, fsync, rename, fsync of the directory), so a crash
 * leaves either the old or the new contents, never a mixture.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "orthod.h"

int dir_sync(int dirfd)
{
	return fsync(dirfd) ? -errno : 0;
}

static int write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t w = write(fd, p, len);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

int file_write_durable(int dirfd, const char *name, const void *buf,
		       size_t len, int sync_dir)
{
	char tmp[256];
	int fd, ret;

	if (snprintf(tmp, sizeof(tmp), ".%s.tmp", name) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC |
		    O_NOFOLLOW, 0600);
	if (fd < 0)
		return -errno;
	ret = write_all(fd, buf, len);
	if (!ret && fsync(fd))
		ret = -errno;
	if (close(fd) && !ret)
		ret = -errno;
	if (!ret && renameat(dirfd, tmp, dirfd, name))
		ret = -errno;
	if (ret) {
		unlinkat(dirfd, tmp, 0);
		return ret;
	}
	return sync_dir ? dir_sync(dirfd) : 0;
}

int file_read_all(int dirfd, const char *name, size_t max, uint8_t **buf,
		  size_t *len)
{
	struct stat st;
	uint8_t *p = NULL;
	size_t have = 0;
	int fd, ret = 0;

	*buf = NULL;
	*len = 0;
	fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st)) {
		ret = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		ret = -EINVAL;
		goto out;
	}
	if ((uint64_t)st.st_size > max) {
		ret = -EFBIG;
		goto out;
	}
	p = malloc((size_t)st.st_size + 1);
	if (!p) {
		ret = -ENOMEM;
		goto out;
	}
	while (have < (size_t)st.st_size) {
		ssize_t r = read(fd, p + have, (size_t)st.st_size - have);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			ret = r < 0 ? -errno : -EIO;
			goto out;
		}
		have += (size_t)r;
	}
	p[have] = 0;
	*buf = p;
	*len = have;
	p = NULL;
out:
	free(p);
	close(fd);
	return ret;
}

int file_wipe_unlink(int dirfd, const char *name)
{
	static const uint8_t zero[4096];
	struct stat st;
	off_t done = 0;
	int fd, ret = 0;

	fd = openat(dirfd, name, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	if (fstat(fd, &st)) {
		ret = -errno;
		goto out;
	}
	/* In place, so the old blocks (on a file system that overwrites in
	 * place) no longer hold the secret. */
	while (!ret && done < st.st_size) {
		size_t n = (size_t)(st.st_size - done) < sizeof(zero) ?
			   (size_t)(st.st_size - done) : sizeof(zero);
		ssize_t w = pwrite(fd, zero, n, done);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			ret = w < 0 ? -errno : -EIO;
		else
			done += w;
	}
	if (!ret && fsync(fd))
		ret = -errno;
out:
	close(fd);
	if (unlinkat(dirfd, name, 0) && !ret)
		ret = -errno;
	return ret;
}
