// SPDX-License-Identifier: MIT
/*
 * The output side of ortho_pack(): everything is written into a temporary
 * directory beside out_dir ("<parent>/.<name>.tmp-<random>", on the same
 * file system so that rename works) and moved into place only after every
 * check passed. A new out_dir is one rename of the whole directory; adding
 * a private model to an existing one renames each new shard into its
 * ortho/, and takes them back if one rename fails.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "pack.h"
#include "shard.h"

#define TMP_TRIES 16

static int sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), ret = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd))
		ret = -errno;
	close(fd);
	return ret;
}

static int has_suffix(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n > m && !strcmp(s + n - m, suffix);
}

/* A label already used by a shard in out_dir/ortho is refused. */
static int check_labels(struct pack_job *j)
{
	char *dir = pack_path(j->out, "ortho");
	struct dirent *de;
	DIR *d;
	int ret = 0;

	if (!dir)
		return -ENOMEM;
	d = opendir(dir);
	if (!d) {
		ret = errno == ENOENT ? 0 : -errno;
		if (ret)
			olog_err(j->ctx, "%s: cannot list: %s", dir,
				 strerror(-ret));
		free(dir);
		return ret;
	}
	while (!ret && (de = readdir(d))) {
		struct osh_file f;
		char *path;

		if (!has_suffix(de->d_name, ".osh"))
			continue;
		path = pack_path(dir, de->d_name);
		if (!path) {
			ret = -ENOMEM;
			break;
		}
		ret = osh_open(j->ctx, path, &f);
		if (ret) {
			olog_err(j->ctx, "%s: cannot read the existing shard, so its label is unknown",
				 path);
		} else {
			if (!strncmp(f.hdr.label, j->o.label, OSH_LABEL_MAX)) {
				olog_err(j->ctx, "%s: label \"%s\" is already in %s",
					 j->out, j->o.label, path);
				ret = -EEXIST;
			}
			osh_close(&f);
		}
		free(path);
	}
	closedir(d);
	free(dir);
	return ret;
}

/* Absent, empty (both get the new directory), or a packed model. */
static int check_out_dir(struct pack_job *j)
{
	struct stat st;
	char *base;
	int n = 0;
	DIR *d;

	if (stat(j->out, &st))
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISDIR(st.st_mode)) {
		olog_err(j->ctx, "%s: exists and is not a directory", j->out);
		return -ENOTDIR;
	}
	base = pack_path(j->out, "base.orb");
	if (!base)
		return -ENOMEM;
	j->adding = !access(base, F_OK);
	free(base);
	if (j->adding)
		return j->has_priv ? check_labels(j) : 0;
	d = opendir(j->out);
	if (!d)
		return -errno;
	while (readdir(d))
		n++;
	closedir(d);
	if (n > 2) {
		olog_err(j->ctx, "%s: exists, is not empty and holds no base.orb",
			 j->out);
		return -EEXIST;
	}
	return 0;
}

static int make_tmpdir(struct pack_job *j)
{
	const char *slash = strrchr(j->out, '/');
	const char *name = slash ? slash + 1 : j->out;
	int plen = slash ? (int)(slash - j->out) : 1;
	const char *parent = slash ? j->out : ".";
	unsigned char rnd[4];
	int i, ret = -EEXIST;

	if (slash == j->out)	/* "/name" */
		plen = 0;
	for (i = 0; i < TMP_TRIES && ret == -EEXIST; i++) {
		if (RAND_bytes(rnd, sizeof(rnd)) != 1)
			return -EIO;
		free(j->tmpdir);
		ret = asprintf(&j->tmpdir, "%.*s/.%s.tmp-%02x%02x%02x%02x",
			       plen, parent, name, rnd[0], rnd[1], rnd[2],
			       rnd[3]);
		if (ret < 0) {
			j->tmpdir = NULL;
			return -ENOMEM;
		}
		ret = mkdir(j->tmpdir, 0777) ? -errno : 0;
	}
	if (ret) {
		olog_err(j->ctx, "%s: cannot create a temporary directory: %s",
			 j->tmpdir, strerror(-ret));
		free(j->tmpdir);
		j->tmpdir = NULL;
	}
	return ret;
}

int pack_dir_prepare(struct pack_job *j)
{
	struct stat st;
	size_t n;
	char *sub;
	int ret;

	if (j->has_priv && !pack_to_authority(j)) {
		j->key_existed = !lstat(j->o.key_file, &st);
		if (j->key_existed && !(j->o.flags & ORTHO_PACK_FORCE)) {
			olog_err(j->ctx, "%s: key file exists; not overwritten without force",
				 j->o.key_file);
			return -EEXIST;
		}
	}
	j->out = strdup(j->o.out_dir);
	if (!j->out)
		return -ENOMEM;
	n = strlen(j->out);
	while (n > 1 && j->out[n - 1] == '/')
		j->out[--n] = 0;
	ret = check_out_dir(j);
	ret = ret ?: make_tmpdir(j);
	if (ret || !j->has_priv)
		return ret;
	sub = pack_path(j->tmpdir, "ortho");
	if (!sub)
		return -ENOMEM;
	ret = mkdir(sub, 0777) ? -errno : 0;
	free(sub);
	return ret;
}

static void hex_id(const uint8_t id[32], char out[17])
{
	int i;

	for (i = 0; i < 8; i++)
		snprintf(out + 2 * i, 3, "%02x", id[i]);
}

int pack_dir_check_base(struct pack_job *j)
{
	uint8_t have[32];
	char a[17], b[17];
	char *path;
	int ret;

	if (!j->adding)
		return 0;
	path = pack_path(j->out, "base.orb");
	if (!path)
		return -ENOMEM;
	ret = orb_read_model_id(path, have);
	if (ret)
		olog_err(j->ctx, "%s: cannot read its model id: %s", path,
			 strerror(-ret));
	free(path);
	if (ret)
		return ret;
	if (memcmp(have, j->model_id, 32)) {
		hex_id(have, a);
		hex_id(j->model_id, b);
		olog_err(j->ctx, "%s holds another Base (model id %s...); %s gives %s...: refused",
			 j->out, a, j->o.public_path, b);
		return -EXDEV;
	}
	return 0;
}

/* Undo the first @n shard moves into out_dir/ortho. */
static void unmove(struct pack_job *j, const char *dst, unsigned int n,
		   int made_dir)
{
	unsigned int i;

	for (i = 0; i < n; i++) {
		char *p = pack_path(dst, j->shards[i]);

		if (p)
			unlink(p);
		free(p);
	}
	if (made_dir)
		rmdir(dst);
}

static int move_shards(struct pack_job *j)
{
	char *src = pack_path(j->tmpdir, "ortho"), *dst = pack_path(j->out, "ortho");
	unsigned int i = 0;
	int made = 0, ret = 0;

	if (!src || !dst) {
		ret = -ENOMEM;
		goto out;
	}
	if (!mkdir(dst, 0777))
		made = 1;
	else if (errno != EEXIST)
		ret = -errno;
	for (; !ret && i < j->nshards; i++) {
		char *a = pack_path(src, j->shards[i]);
		char *b = pack_path(dst, j->shards[i]);

		ret = !a || !b ? -ENOMEM : rename(a, b) ? -errno : 0;
		free(a);
		free(b);
	}
	if (ret) {
		olog_err(j->ctx, "%s: cannot move the new shards in: %s", dst,
			 strerror(-ret));
		unmove(j, dst, ret ? i - 1 : i, made);
	} else {
		ret = sync_dir(dst);
	}
out:
	free(src);
	free(dst);
	return ret;
}

static int install_new(struct pack_job *j)
{
	char *parent = strdup(j->out), *slash;
	int ret;

	if (!parent)
		return -ENOMEM;
	ret = rename(j->tmpdir, j->out) ? -errno : 0;
	if (ret) {
		olog_err(j->ctx, "%s: cannot move the new model into place: %s",
			 j->out, strerror(-ret));
	} else {
		free(j->tmpdir);
		j->tmpdir = NULL;
		slash = strrchr(parent, '/');
		if (slash)
			*(slash == parent ? slash + 1 : slash) = 0;
		sync_dir(slash ? parent : ".");
	}
	free(parent);
	return ret;
}

int pack_dir_install(struct pack_job *j)
{
	int ret = 0;

	if (pack_to_authority(j))
		ret = pack_keys_to_authority(j);
	else if (j->has_priv)
		ret = keyfile_save(j->ctx, j->o.key_file, &j->kf,
				   !!(j->o.flags & ORTHO_PACK_FORCE));
	if (ret)
		return ret;
	if (!j->adding)
		ret = install_new(j);
	else if (j->nshards)
		ret = move_shards(j);
	if (ret && j->has_priv && !pack_to_authority(j) && !j->key_existed)
		unlink(j->o.key_file);
	return ret;
}

void pack_dir_cleanup(struct pack_job *j)
{
	char *sub, *base;
	struct dirent *de;
	DIR *d;

	if (j->tmpdir) {
		sub = pack_path(j->tmpdir, "ortho");
		base = pack_path(j->tmpdir, "base.orb");
		d = sub ? opendir(sub) : NULL;
		while (d && (de = readdir(d))) {
			char *p = pack_path(sub, de->d_name);

			if (p && strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
				unlink(p);
			free(p);
		}
		if (d)
			closedir(d);
		if (sub)
			rmdir(sub);
		if (base)
			unlink(base);
		rmdir(j->tmpdir);
		free(sub);
		free(base);
		free(j->tmpdir);
		j->tmpdir = NULL;
	}
	free(j->out);
	j->out = NULL;
}
