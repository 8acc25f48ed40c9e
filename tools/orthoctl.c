// SPDX-License-Identifier: MIT
/*
 * orthoctl: administer the key authority (orthod). One file per verb;
 * this one holds main(), the options every verb shares and the helpers.
 *
 *	orthoctl [--socket PATH] [-v] VERB [ARGS]
 *
 * The daemon is found through --socket, else $ORTHO_SOCKET, else
 * /run/ortho/orthod.sock.
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "orthoctl.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: orthoctl [--socket PATH] [-v] VERB [ARGS]\n"
		"  key import KEYFILE [--keep]   hand the keys to orthod; the file is then\n"
		"                                overwritten and removed (unless --keep)\n"
		"  grant (--label L | --shard ID) (--uid U | --gid G)\n"
		"  deny  (--label L | --shard ID) (--uid U | --gid G)\n"
		"  list [--json]                 shards and policy rules\n"
		"  revoke (ID | --label L) [--timeout-ms N] [--json]\n"
		"                                exit 0 only when every holder acknowledged,\n"
		"                                3 when some are busy or gone\n"
		"  status [--json]               shards, clients and what they hold\n"
		"  audit [--verify] [--from N]   print or check the audit log\n"
		"The daemon: --socket, else $ORTHO_SOCKET, else %s\n",
		ORTHO_ADMIN_SOCKET);
}

static void log_stderr(void *user, int prio, const char *fmt, va_list ap)
{
	(void)user;
	fprintf(stderr, "orthoctl: %s", prio <= ORTHO_LOG_ERR ? "" :
		prio <= ORTHO_LOG_WARNING ? "warning: " : "");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

int octl_connect(struct octl *o, struct ortho_admin **a)
{
	return ortho_admin_connect(o->ctx, o->socket, a);
}

void octl_fail(const char *verb, const char *what, int err)
{
	fprintf(stderr, "orthoctl: %s: %s: %s\n", verb, what,
		ortho_strerror(err));
}

int octl_parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *out)
{
	unsigned long long v;
	char *end;

	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return -EINVAL;
	*out = (uint32_t)v;
	return 0;
}

int octl_parse_uid(const char *s, uint32_t *out)
{
	struct passwd *pw;

	if (!octl_parse_u32(s, 0, UINT32_MAX - 1, out))
		return 0;
	pw = getpwnam(s);
	if (!pw)
		return -EINVAL;
	*out = pw->pw_uid;
	return 0;
}

int octl_parse_gid(const char *s, uint32_t *out)
{
	struct group *gr;

	if (!octl_parse_u32(s, 0, UINT32_MAX - 1, out))
		return 0;
	gr = getgrnam(s);
	if (!gr)
		return -EINVAL;
	*out = gr->gr_gid;
	return 0;
}

void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20 || c == 0x7f)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

void iso_time(char *buf, size_t cap, uint64_t ns)
{
	time_t t = (time_t)(ns / 1000000000ull);
	struct tm tm;

	if (!ns || !gmtime_r(&t, &tm)) {
		snprintf(buf, cap, "-");
		return;
	}
	snprintf(buf, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ",
		 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		 tm.tm_min, tm.tm_sec,
		 (unsigned int)(ns % 1000000000ull / 1000000ull));
}

const char *state_name(uint32_t state)
{
	switch (state) {
	case ORTHO_ADMIN_SHARD_ACTIVE:
		return "active";
	case ORTHO_ADMIN_SHARD_REVOKING:
		return "revoking";
	case ORTHO_ADMIN_SHARD_REVOKED:
		return "revoked";
	default:
		return "?";
	}
}

static const struct verb {
	const char *name;
	int (*fn)(struct octl *o, int argc, char **argv);
} verbs[] = {
	{ "key", cmd_key },
	{ "grant", cmd_grant },
	{ "deny", cmd_deny },
	{ "list", cmd_list },
	{ "revoke", cmd_revoke },
	{ "status", cmd_status },
	{ "audit", cmd_audit },
};

/* Take the shared options off the front; Return: index of the verb or -1. */
static int global_opts(int argc, char **argv, struct octl *o, int *verbose)
{
	int i;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--socket") && i + 1 < argc)
			o->socket = argv[++i];
		else if (!strncmp(argv[i], "--socket=", 9))
			o->socket = argv[i] + 9;
		else if (!strcmp(argv[i], "-v") || !strcmp(argv[i], "--verbose"))
			*verbose = 1;
		else if (argv[i][0] == '-')
			return -1;
		else
			return i;
	}
	return -1;
}

int main(int argc, char **argv)
{
	struct octl o = { 0 };
	struct ortho_ctx_opts co = {
		.sz = sizeof(co), .backend = "cpu", .threads = 1,
		.log_fn = log_stderr,
	};
	int verbose = 0, at, ret, i;
	size_t v;

	if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		usage(stdout);
		return OCTL_OK;
	}
	o.socket = getenv("ORTHO_SOCKET");
	if (!o.socket || !*o.socket)
		o.socket = ORTHO_ADMIN_SOCKET;
	at = global_opts(argc, argv, &o, &verbose);
	if (at < 0) {
		usage(stderr);
		return OCTL_USAGE;
	}
	co.log_level = verbose ? ORTHO_LOG_DEBUG : ORTHO_LOG_WARNING;
	ret = ortho_ctx_new(&co, &o.ctx);
	if (ret) {
		fprintf(stderr, "orthoctl: %s\n", ortho_strerror(ret));
		return OCTL_ERR;
	}
	ret = -1;
	for (v = 0; v < sizeof(verbs) / sizeof(verbs[0]); v++) {
		if (strcmp(argv[at], verbs[v].name))
			continue;
		/* The verb sees itself as argv[0]; --socket may follow it too. */
		for (i = at + 1; i < argc; i++) {
			if (!strcmp(argv[i], "--socket") && i + 1 < argc) {
				o.socket = argv[i + 1];
				memmove(argv + i, argv + i + 2,
					(size_t)(argc - i - 2) * sizeof(*argv));
				argc -= 2;
				argv[argc] = NULL;
				i--;
			}
		}
		ret = verbs[v].fn(&o, argc - at, argv + at);
		break;
	}
	if (ret < 0) {
		fprintf(stderr, "orthoctl: unknown verb \"%s\"\n", argv[at]);
		usage(stderr);
		ret = OCTL_USAGE;
	}
	ortho_ctx_free(o.ctx);
	return ret;
}
