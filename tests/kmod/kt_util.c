// SPDX-License-Identifier: MIT
/*
 * Helpers of the ortho.ko tests: see kt.h. Everything prints with one
 * write(2) per line because parent and children share the serial console.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/klog.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kt.h"

#define KT_MAX_CHILDREN 128

static char kt_first_reason[256];
static int kt_in_child;
static int kt_ready_wr = -1;	/* in a child */
static int kt_go_rd = -1;	/* in a child */
static pid_t kt_children[KT_MAX_CHILDREN];
static int kt_nchildren;

void kt_printf(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';
	if (write(STDOUT_FILENO, buf, n) < 0)
		return;
}

void kt_failf(const char *file, int line, const char *fmt, ...)
{
	char msg[200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (!kt_first_reason[0])
		snprintf(kt_first_reason, sizeof(kt_first_reason), "%s:%d: %s",
			 file, line, msg);
	kt_printf("#%s %s:%d: %s", kt_in_child ? " child:" : "", file, line,
		  msg);
}

const char *kt_reason(void)
{
	return kt_first_reason;
}

const char *kt_strerr(int err)
{
	return err ? strerror(-err) : "ok";
}

void kt_random(void *buf, size_t len)
{
	uint8_t *p = buf;
	ssize_t n;

	while (len) {
		/* Test ids need no entropy; early boot must not block. */
		n = getrandom(p, len, GRND_INSECURE);
		if (n <= 0) {
			n = 1;
			*p = (uint8_t)rand();
		}
		p += n;
		len -= n;
	}
}

void kt_new_shard(uint8_t id[ORTHO_IOC_ID_SIZE], uint8_t key[ORTHO_IOC_KEY_SIZE])
{
	kt_random(id, ORTHO_IOC_ID_SIZE);
	id[0] |= 1;
	kt_random(key, ORTHO_IOC_KEY_SIZE);
	key[0] |= 1;
}

int kt_open(void)
{
	int fd = open(ORTHO_IOC_DEVICE, O_RDWR | O_CLOEXEC);

	return fd < 0 ? -errno : fd;
}

int kt_ioctl(int fd, unsigned long cmd, void *arg)
{
	return ioctl(fd, cmd, arg) < 0 ? -errno : 0;
}

void kt_add_arg(struct ortho_ioc_add *a, const uint8_t *id, const uint8_t *key,
		const char *label, const uint32_t *uids, uint32_t n_uids,
		const uint32_t *gids, uint32_t n_gids)
{
	memset(a, 0, sizeof(*a));
	a->size = sizeof(*a);
	memcpy(a->id, id, ORTHO_IOC_ID_SIZE);
	memcpy(a->key, key, ORTHO_IOC_KEY_SIZE);
	snprintf(a->label, sizeof(a->label), "%s", label);
	a->n_uids = n_uids;
	a->n_gids = n_gids;
	if (n_uids)
		memcpy(a->uids, uids, n_uids * sizeof(*uids));
	if (n_gids)
		memcpy(a->gids, gids, n_gids * sizeof(*gids));
}

int kt_add(int fd, const uint8_t *id, const uint8_t *key, const char *label,
	   const uint32_t *uids, uint32_t n_uids, const uint32_t *gids,
	   uint32_t n_gids)
{
	struct ortho_ioc_add a;

	kt_add_arg(&a, id, key, label, uids, n_uids, gids, n_gids);
	return kt_ioctl(fd, ORTHO_IOC_ADD, &a);
}

int kt_add_for_uid(int fd, uint8_t *id, uint8_t *key, const char *label,
		   uint32_t uid)
{
	kt_new_shard(id, key);
	return kt_add(fd, id, key, label, &uid, 1, NULL, 0);
}

int kt_get(int fd, const uint8_t *id, uint8_t *key)
{
	struct ortho_ioc_get g = { .size = sizeof(g) };
	int ret;

	memcpy(g.id, id, ORTHO_IOC_ID_SIZE);
	ret = kt_ioctl(fd, ORTHO_IOC_GET, &g);
	if (!ret && key)
		memcpy(key, g.key, ORTHO_IOC_KEY_SIZE);
	return ret;
}

int kt_revoke(int fd, const uint8_t *id, uint32_t flags,
	      struct ortho_ioc_revoke *out)
{
	struct ortho_ioc_revoke r = { .size = sizeof(r), .flags = flags };
	int ret;

	memcpy(r.id, id, ORTHO_IOC_ID_SIZE);
	ret = kt_ioctl(fd, ORTHO_IOC_REVOKE, &r);
	if (out)
		*out = r;
	return ret;
}

int kt_ack(int fd, const uint8_t *id)
{
	struct ortho_ioc_ack a = { .size = sizeof(a) };

	memcpy(a.id, id, ORTHO_IOC_ID_SIZE);
	return kt_ioctl(fd, ORTHO_IOC_ACK, &a);
}

int kt_resident(int fd, const uint8_t *id, uint64_t bytes)
{
	struct ortho_ioc_resident r = { .size = sizeof(r), .bytes = bytes };

	memcpy(r.id, id, ORTHO_IOC_ID_SIZE);
	return kt_ioctl(fd, ORTHO_IOC_RESIDENT, &r);
}

int kt_status(int fd, const uint8_t *id, struct ortho_ioc_status *out)
{
	struct ortho_ioc_status s = { .size = sizeof(s) };
	int ret;

	memcpy(s.id, id, ORTHO_IOC_ID_SIZE);
	ret = kt_ioctl(fd, ORTHO_IOC_STATUS, &s);
	if (out)
		*out = s;
	return ret;
}

int kt_pending(int fd, uint8_t *ids, uint32_t *count, uint32_t *total)
{
	struct ortho_ioc_pending p = { .size = sizeof(p) };
	int ret;

	p.ids = (uintptr_t)ids;
	p.count = *count;
	ret = kt_ioctl(fd, ORTHO_IOC_PENDING, &p);
	*count = p.count;
	if (total)
		*total = p.total;
	return ret;
}

int kt_poll_revents(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLPRI | POLLIN | POLLOUT };
	int n;

	do {
		n = poll(&p, 1, ms);
	} while (n < 0 && errno == EINTR);
	return n > 0 ? p.revents : 0;
}

int kt_wait_pri(int fd, int ms)
{
	return (kt_poll_revents(fd, ms) & POLLPRI) ? 0 : -1;
}

/* ---- children ---- */

int kt_drop(const struct kt_ids *ids)
{
	if (setgroups(ids->ngroups, ids->groups) ||
	    setresgid(ids->gid, ids->gid, ids->gid) ||
	    setresuid(ids->uid, ids->uid, ids->uid))
		return -errno;
	return 0;
}

static void kt_child_main(const struct kt_ids *ids, kt_child_fn fn, void *arg)
{
	int ret;

	kt_in_child = 1;
	kt_nchildren = 0;
	if (ids && kt_drop(ids)) {
		kt_failf(__FILE__, __LINE__, "cannot become uid %u gid %u: %s",
			 ids->uid, ids->gid, strerror(errno));
		_exit(1);
	}
	ret = fn(arg);
	_exit(ret ? 1 : 0);
}

int kt_spawn(struct kt_child *c, const struct kt_ids *ids, kt_child_fn fn,
	     void *arg)
{
	int ready[2], go[2];
	pid_t pid;

	if (kt_nchildren == KT_MAX_CHILDREN)
		return -EAGAIN;
	if (pipe2(ready, O_CLOEXEC))
		return -errno;
	if (pipe2(go, O_CLOEXEC)) {
		close(ready[0]);
		close(ready[1]);
		return -errno;
	}
	pid = fork();
	if (pid < 0) {
		close(ready[0]);
		close(ready[1]);
		close(go[0]);
		close(go[1]);
		return -errno;
	}
	if (!pid) {
		close(ready[0]);
		close(go[1]);
		kt_ready_wr = ready[1];
		kt_go_rd = go[0];
		kt_child_main(ids, fn, arg);
	}
	close(ready[1]);
	close(go[0]);
	c->pid = pid;
	c->ready_rd = ready[0];
	c->go_wr = go[1];
	kt_children[kt_nchildren++] = pid;
	return 0;
}

int kt_child_ready(void)
{
	return write(kt_ready_wr, "r", 1) == 1 ? 0 : -1;
}

int kt_child_wait_go(void)
{
	char b;

	return read(kt_go_rd, &b, 1) == 1 ? 0 : -1;
}

int kt_wait_ready(struct kt_child *c, int ms)
{
	struct pollfd p = { .fd = c->ready_rd, .events = POLLIN };
	char b;

	if (poll(&p, 1, ms) != 1)
		return -1;
	return read(c->ready_rd, &b, 1) == 1 ? 0 : -1;
}

int kt_send_go(struct kt_child *c)
{
	return write(c->go_wr, "g", 1) == 1 ? 0 : -1;
}

static void kt_forget(pid_t pid)
{
	int i;

	for (i = 0; i < kt_nchildren; i++) {
		if (kt_children[i] == pid) {
			kt_children[i] = kt_children[--kt_nchildren];
			return;
		}
	}
}

int kt_reap(struct kt_child *c, int ms)
{
	int status, waited = 0;
	pid_t r;

	for (;;) {
		r = waitpid(c->pid, &status, WNOHANG);
		if (r == c->pid)
			break;
		if (r < 0 || waited >= ms) {
			kill(c->pid, SIGKILL);
			waitpid(c->pid, &status, 0);
			status = -1;
			break;
		}
		usleep(10000);
		waited += 10;
	}
	close(c->ready_rd);
	close(c->go_wr);
	kt_forget(c->pid);
	if (status == -1)
		return -1;
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

void kt_reap_all(void)
{
	while (kt_nchildren) {
		kill(kt_children[0], SIGKILL);
		waitpid(kt_children[0], NULL, 0);
		kt_forget(kt_children[0]);
	}
}

/* ---- files ---- */

int kt_read_file(const char *path, char *buf, size_t len)
{
	ssize_t n, got = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	while ((size_t)got < len - 1) {
		n = read(fd, buf + got, len - 1 - got);
		if (n < 0) {
			n = -errno;
			close(fd);
			return n;
		}
		if (!n)
			break;
		got += n;
	}
	buf[got] = 0;
	close(fd);
	return 0;
}

int kt_write_file(const char *path, const char *val)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = write(fd, val, strlen(val));
	n = n < 0 ? -errno : 0;
	close(fd);
	return n;
}

int kt_fdinfo(pid_t pid, int fd, const char *key, char *val, size_t len)
{
	char path[64], buf[8192], *p, *end;
	size_t klen = strlen(key);
	int ret;

	snprintf(path, sizeof(path), "/proc/%d/fdinfo/%d", (int)pid, fd);
	ret = kt_read_file(path, buf, sizeof(buf));
	if (ret)
		return ret;
	for (p = buf; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		if (strncmp(p, key, klen) || p[klen] != ':' || p[klen + 1] != '\t')
			continue;
		p += klen + 2;
		end = strchr(p, '\n');
		if (!end)
			end = p + strlen(p);
		snprintf(val, len, "%.*s", (int)(end - p), p);
		return 0;
	}
	return -ENOENT;
}

void kt_hex(const uint8_t *id, char *hex)
{
	int i;

	for (i = 0; i < ORTHO_IOC_ID_SIZE; i++)
		sprintf(hex + 2 * i, "%02x", id[i]);
}

int kt_fdinfo_shard(pid_t pid, int fd, const char *prefix, const uint8_t *id,
		    char *val, size_t len)
{
	char key[96], hex[33];

	kt_hex(id, hex);
	snprintf(key, sizeof(key), "%s-%s", prefix, hex);
	return kt_fdinfo(pid, fd, key, val, len);
}

int kt_dmesg_has(const char *needle)
{
	int size = klogctl(10, NULL, 0);	/* SYSLOG_ACTION_SIZE_BUFFER */
	char *buf;
	int n, found;

	if (size <= 0)
		return -errno;
	buf = malloc(size + 1);
	if (!buf)
		return -ENOMEM;
	n = klogctl(3, buf, size);		/* SYSLOG_ACTION_READ_ALL */
	if (n < 0) {
		n = -errno;
		free(buf);
		return n;
	}
	buf[n] = 0;
	found = strstr(buf, needle) != NULL;
	free(buf);
	return found;
}

uint64_t kt_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + ts.tv_nsec;
}

int kt_state_save(const char *name, const uint8_t *blob, size_t len)
{
	char path[128];
	int fd, ret = 0;

	snprintf(path, sizeof(path), KT_STATE_DIR "/kt-%s", name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	if (write(fd, blob, len) != (ssize_t)len)
		ret = -EIO;
	close(fd);
	return ret;
}

int kt_state_load(const char *name, uint8_t *blob, size_t len)
{
	char path[128];
	int fd, ret = 0;

	snprintf(path, sizeof(path), KT_STATE_DIR "/kt-%s", name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (read(fd, blob, len) != (ssize_t)len)
		ret = -EIO;
	close(fd);
	return ret;
}
