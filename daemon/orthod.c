// SPDX-License-Identifier: MIT
/*
 * orthod: the key authority of a host. main(), the options, the state
 * directory, the listening socket and the event loop.
 *
 *	orthod --state-dir DIR --socket PATH [--foreground]
 *	       [--admin-group GROUP] [--max-clients N] [--kmod-device PATH]
 *
 * The protocol and the state files are described in daemon/PROTOCOL.md;
 * with the kernel module loaded the keys go into it (orthod-kernel.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "orthod.h"

static int use_syslog;

void dlog(int prio, const char *fmt, ...)
{
	static const char *const names[] = { "emerg", "alert", "crit", "error",
					     "warning", "notice", "info",
					     "debug" };
	va_list ap;

	va_start(ap, fmt);
	if (use_syslog) {
		vsyslog(prio, fmt, ap);
	} else {
		fprintf(stderr, "orthod: %s: ", names[prio & 7]);
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
	}
	va_end(ap);
}

static uint64_t clock_ns(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t now_real_ns(void)
{
	return clock_ns(CLOCK_REALTIME);
}

uint64_t now_mono_ns(void)
{
	return clock_ns(CLOCK_MONOTONIC);
}

int ev_add(struct orthod *d, struct ev_src *src, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = src };

	return epoll_ctl(d->epfd, EPOLL_CTL_ADD, src->fd, &ev) ? -errno : 0;
}

int ev_mod(struct orthod *d, struct ev_src *src, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = src };

	return epoll_ctl(d->epfd, EPOLL_CTL_MOD, src->fd, &ev) ? -errno : 0;
}

void ev_del(struct orthod *d, struct ev_src *src)
{
	if (src->fd >= 0)
		epoll_ctl(d->epfd, EPOLL_CTL_DEL, src->fd, NULL);
}

void proc_comm(pid_t pid, char out[PROTO_COMM_MAX + 1])
{
	char path[64];
	ssize_t n;
	int fd, i;

	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	n = fd >= 0 ? read(fd, out, PROTO_COMM_MAX) : -1;
	if (fd >= 0)
		close(fd);
	if (n <= 0) {
		strcpy(out, "?");
		return;
	}
	out[n] = 0;
	if (out[n - 1] == '\n')
		out[n - 1] = 0;
	for (i = 0; out[i]; i++)
		if (out[i] < 0x20 || out[i] > 0x7e)
			out[i] = '?';
}

struct opts {
	const char *state_dir;
	const char *socket;
	const char *admin_group;
	const char *kmod_device;
	unsigned int max_conns;
	int foreground;
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: orthod --state-dir DIR [--socket PATH] [--foreground]\n"
		"              [--admin-group GROUP] [--max-clients N]\n"
		"  --state-dir DIR      keystore, KEK, policy and audit log (mode 0700)\n"
		"  --socket PATH        the Unix socket (default /run/ortho/orthod.sock)\n"
		"  --foreground         stay attached; log to stderr\n"
		"  --admin-group GROUP  members may import, grant, deny, revoke, read status\n"
		"  --max-clients N      connections at once (default %u)\n"
		"  --kmod-device PATH   the kernel module's device (default /dev/ortho;\n"
		"                       none: keep every key in orthod)\n",
		ORTHOD_MAX_CONNS_DEFAULT);
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {
		{ "state-dir", required_argument, NULL, 'd' },
		{ "socket", required_argument, NULL, 's' },
		{ "foreground", no_argument, NULL, 'f' },
		{ "admin-group", required_argument, NULL, 'g' },
		{ "max-clients", required_argument, NULL, 'm' },
		{ "kmod-device", required_argument, NULL, 'k' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	char *end;
	int ch;

	o->socket = "/run/ortho/orthod.sock";
	o->max_conns = ORTHOD_MAX_CONNS_DEFAULT;
	while ((ch = getopt_long(argc, argv, "d:s:fg:m:k:hV", lo, NULL)) != -1) {
		switch (ch) {
		case 'd': o->state_dir = optarg; break;
		case 's': o->socket = optarg; break;
		case 'f': o->foreground = 1; break;
		case 'g': o->admin_group = optarg; break;
		case 'k': o->kmod_device = optarg; break;
		case 'm':
			o->max_conns = (unsigned int)strtoul(optarg, &end, 10);
			if (*end || !o->max_conns || o->max_conns > 1000000) {
				fprintf(stderr, "orthod: --max-clients: not 1..1000000\n");
				return 2;
			}
			break;
		case 'h': usage(stdout); exit(0);
		case 'V': printf("orthod %s (protocol %u)\n",
				 ORTHO_VERSION_STRING, PROTO_VERSION);
			exit(0);
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc || !o->state_dir) {
		usage(stderr);
		return 2;
	}
	return 0;
}

static int resolve_group(struct orthod *d, const char *name)
{
	struct group *g;
	char *end;
	unsigned long v;

	if (!name)
		return 0;
	v = strtoul(name, &end, 10);
	if (*name && !*end && v < UINT32_MAX) {
		d->admin_gid = (gid_t)v;
	} else {
		g = getgrnam(name);
		if (!g) {
			dlog(LOG_ERR, "--admin-group %s: no such group", name);
			return -ENOENT;
		}
		d->admin_gid = g->gr_gid;
	}
	d->has_admin_gid = 1;
	return 0;
}

static int open_state(struct orthod *d, const char *dir)
{
	struct stat st;

	if (mkdir(dir, 0700) && errno != EEXIST) {
		dlog(LOG_ERR, "%s: %m", dir);
		return -errno;
	}
	d->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (d->dirfd < 0 || fstat(d->dirfd, &st)) {
		dlog(LOG_ERR, "%s: %m", dir);
		return -errno;
	}
	if (st.st_uid != geteuid() || (st.st_mode & 077)) {
		dlog(LOG_ERR, "%s: must be owned by uid %u and mode 0700 (it is %o, uid %u)",
		     dir, (unsigned int)geteuid(), st.st_mode & 0777,
		     (unsigned int)st.st_uid);
		return -EPERM;
	}
	d->lockfd = openat(d->dirfd, "lock", O_RDWR | O_CREAT | O_CLOEXEC |
			   O_NOFOLLOW, 0600);
	if (d->lockfd < 0 || flock(d->lockfd, LOCK_EX | LOCK_NB)) {
		dlog(LOG_ERR, "%s: %s", dir, errno == EWOULDBLOCK ?
		     "another orthod uses this state directory" :
		     strerror(errno));
		return -EBUSY;
	}
	return 0;
}

static int load_state(struct orthod *d)
{
	char why[256];
	int ret;

	ret = audit_open(&d->audit, d->dirfd, why, sizeof(why));
	if (ret) {
		dlog(LOG_ERR, "audit log: %s (%s); the daemon will not run on a damaged log: inspect it, move audit.log and audit.head aside, and start again",
		     why, strerror(-ret));
		return ret;
	}
	ret = ks_open(&d->ks, d->dirfd);
	if (ret) {
		dlog(LOG_ERR, "keystore: %s", strerror(-ret));
		return ret;
	}
	ret = policy_open(&d->pol, d->dirfd);
	if (ret) {
		dlog(LOG_ERR, "policy: %s", strerror(-ret));
		return ret;
	}
	ret = audit_log(&d->audit, "start",
			"pid=%d version=%s protocol=%u shards=%zu rules=%zu",
			(int)getpid(), ORTHO_VERSION_STRING, PROTO_VERSION,
			d->ks.n, d->pol.n);
	if (!ret)
		ret = revoke_recover(d);
	return ret;
}

/* Refuse a path another daemon listens on; clear a stale socket. */
static int clear_socket(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	int fd, busy;

	if (lstat(path, &st))
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode)) {
		dlog(LOG_ERR, "%s: exists and is not a socket", path);
		return -EEXIST;
	}
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	busy = !connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	close(fd);
	if (busy) {
		dlog(LOG_ERR, "%s: another daemon is listening", path);
		return -EADDRINUSE;
	}
	return unlink(path) ? -errno : 0;
}

static int open_socket(struct orthod *d, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int ret;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		dlog(LOG_ERR, "%s: socket path too long", path);
		return -ENAMETOOLONG;
	}
	ret = clear_socket(path);
	if (ret)
		return ret;
	strcpy(sa.sun_path, path);
	d->listen.kind = EV_LISTEN;
	d->listen.fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK |
			      SOCK_CLOEXEC, 0);
	if (d->listen.fd < 0 ||
	    bind(d->listen.fd, (struct sockaddr *)&sa, sizeof(sa)) ||
	    chmod(path, 0666) || listen(d->listen.fd, SOMAXCONN)) {
		dlog(LOG_ERR, "%s: %m", path);
		return -errno;
	}
	d->sock_path = path;
	return ev_add(d, &d->listen, EPOLLIN);
}

static int open_loop(struct orthod *d)
{
	struct itimerspec tick = { { 1, 0 }, { 1, 0 } };
	struct rlimit rl;
	sigset_t set;
	int ret;

	d->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (d->epfd < 0)
		return -errno;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	sigprocmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	/* A file-size limit (LimitFSIZE=) gives EFBIG and a clear error, not death. */
	signal(SIGXFSZ, SIG_IGN);
	d->sig.kind = EV_SIGNAL;
	d->sig.fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	d->tick.kind = EV_TICK;
	d->tick.fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (d->sig.fd < 0 || d->tick.fd < 0 ||
	    timerfd_settime(d->tick.fd, 0, &tick, NULL))
		return -errno;
	ret = ev_add(d, &d->sig, EPOLLIN);
	if (!ret)
		ret = ev_add(d, &d->tick, EPOLLIN);
	/* Room for many clients: the soft descriptor limit up to the hard. */
	if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	d->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	return ret;
}

static void on_signal(struct orthod *d)
{
	struct signalfd_siginfo si;

	while (read(d->sig.fd, &si, sizeof(si)) == sizeof(si)) {
		if (si.ssi_signo == SIGHUP)
			continue;
		dlog(LOG_INFO, "signal %u: stopping", si.ssi_signo);
		d->stop = 1;
	}
}

static void run(struct orthod *d)
{
	struct epoll_event ev[64];
	uint64_t ticks;
	int n, i;

	while (!d->stop) {
		n = epoll_wait(d->epfd, ev, 64, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			dlog(LOG_ERR, "epoll_wait: %m");
			return;
		}
		for (i = 0; i < n; i++) {
			struct ev_src *src = ev[i].data.ptr;

			switch (src->kind) {
			case EV_LISTEN: conn_accept(d); break;
			case EV_SIGNAL: on_signal(d); break;
			case EV_TICK:
				if (read(src->fd, &ticks, sizeof(ticks)) > 0)
					conn_tick(d);
				break;
			case EV_CONN:
				conn_event(d, (struct conn *)src, ev[i].events);
				break;
			case EV_REVOKE_TIMER:
			case EV_REVOKE_KPOLL:
			case EV_PIDFD: revoke_event(d, src); break;
			}
		}
		conn_reap(d);
		revoke_reap(d);
	}
}

/* Tell systemd (Type=notify) or the waiting parent that we are up. */
static void notify_ready(int pipe_fd)
{
	const char *ns = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (pipe_fd >= 0) {
		if (write(pipe_fd, "", 1) != 1)
			dlog(LOG_WARNING, "cannot tell the parent: %m");
		close(pipe_fd);
	}
	if (!ns || (ns[0] != '/' && ns[0] != '@') ||
	    strlen(ns) >= sizeof(sa.sun_path))
		return;
	strcpy(sa.sun_path, ns);
	if (sa.sun_path[0] == '@')
		sa.sun_path[0] = 0;
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	sendto(fd, "READY=1", 7, 0, (struct sockaddr *)&sa,
	       (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(ns)));
	close(fd);
}

/* Detach before any secret exists (secmem is wiped in a forked child). */
static int daemonize(void)
{
	int p[2], fd;
	char c;
	pid_t pid;

	if (pipe2(p, O_CLOEXEC))
		return -1;
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid > 0) {
		close(p[1]);
		_exit(read(p[0], &c, 1) == 1 ? 0 : 1);
	}
	close(p[0]);
	setsid();
	if (chdir("/"))
		return -1;
	fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (fd >= 0) {
		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		close(fd);
	}
	openlog("orthod", LOG_PID, LOG_DAEMON);
	use_syslog = 1;
	return p[1];
}

static void shutdown_all(struct orthod *d)
{
	revoke_shutdown(d);
	while (d->conns)
		conn_close(d, d->conns);
	if (d->audit.fd >= 0)
		audit_log(&d->audit, "stop", "pid=%d", (int)getpid());
	if (d->sock_path)
		unlink(d->sock_path);
	/* Its keys stay in the kernel for a restarted orthod to find. */
	kernel_stop(d);
	ks_close(&d->ks);
	policy_close(&d->pol);
	audit_close(&d->audit);
}

int main(int argc, char **argv)
{
	struct orthod d = { .epfd = -1, .dirfd = -1, .lockfd = -1,
			    .spare_fd = -1, .km = { .fd = -1 } };
	struct rlimit nocore = { 0, 0 };
	struct opts o = { 0 };
	int ret, ready = -1;

	d.audit.fd = -1;
	ret = parse_opts(argc, argv, &o);
	if (ret)
		return ret;
	umask(077);
	/* Keys live here: no core dumps, no ptrace by the same uid. */
	setrlimit(RLIMIT_CORE, &nocore);
	prctl(PR_SET_DUMPABLE, 0);
	if (!o.foreground) {
		ready = daemonize();
		if (ready < 0) {
			perror("orthod: daemonize");
			return 1;
		}
	}
	d.max_conns = o.max_conns;
	d.max_conns_uid = o.max_conns / 8 ? o.max_conns / 8 : 1;
	d.start_ns = now_real_ns();
	ret = resolve_group(&d, o.admin_group);
	if (!ret)
		ret = open_state(&d, o.state_dir);
	if (!ret)
		ret = load_state(&d);
	if (!ret)
		kernel_start(&d, o.kmod_device);
	if (!ret)
		ret = open_loop(&d);
	if (!ret)
		ret = open_socket(&d, o.socket);
	if (!ret) {
		dlog(LOG_INFO, "listening on %s (%zu shards, %zu rules)",
		     o.socket, d.ks.n, d.pol.n);
		notify_ready(ready);
		run(&d);
	}
	shutdown_all(&d);
	return ret ? 1 : 0;
}
