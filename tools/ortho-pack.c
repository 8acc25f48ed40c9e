// SPDX-License-Identifier: MIT
/*
 * ortho-pack: a public checkpoint (llama2.c .bin or .safetensors), and
 * optionally a private fine-tune of it, into DIR/base.orb and encrypted
 * DIR/ortho/<id>.osh shards; the shard keys go to a key file, or straight
 * to the key authority (orthod) with --authority.
 *
 * Uses the public API only. Exit status: 0 packed, 1 a check failed or the
 * input is bad, 2 usage.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ortho.h"

#define EXIT_USAGE 2

struct tool {
	int header_done;
	int has_priv;
	int quiet;
	int progress_shown;
	const char *authority;
	double t0, last;
};

static const char usage_text[] =
	"usage: ortho-pack --public PUB -o DIR\n"
	"       ortho-pack --public PUB --private PRIV --label NAME --key-file KEYS -o DIR\n"
	"       ortho-pack --public PUB --private PRIV --label NAME --authority unix:SOCK -o DIR\n"
	"                  [--keep E] [--group G] [--force]\n"
	"\n"
	"Packs the public checkpoint PUB (llama2.c .bin or .safetensors) into an\n"
	"INT8 Base, DIR/base.orb. With PRIV, a fine-tune of PUB, the delta goes into\n"
	"encrypted Ortho shards, DIR/ortho/<id>.osh (one per layer), labelled NAME,\n"
	"with their keys written to KEYS (mode 0600), or handed to the key authority\n"
	"orthod at SOCK (as root or its admin group; no key file is written). A DIR\n"
	"that already holds the same Base gets the new shards beside the old ones.\n"
	"\n"
	"  --public PUB      the public checkpoint (Base comes from it alone)\n"
	"  --private PRIV    the private fine-tune (only its linear matrices may differ)\n"
	"  --label NAME      label of the new shards (1-63 printable, no blanks)\n"
	"  --key-file KEYS   where the shard keys go; never overwritten without --force\n"
	"  --authority unix:SOCK\n"
	"                    hand the shard keys to this orthod instead\n"
	"  -o, --out DIR     the packed model directory\n"
	"  --keep E          share of the delta's energy kept in Ortho, 0 < E <= 1\n"
	"                    (default 1: the whole delta)\n"
	"  --group G         INT8 group size along the input dimension (default 64)\n"
	"  --force           overwrite an existing key file\n"
	"  -q, --quiet       no table, only the summary\n"
	"  -v, --verbose     more messages from the library\n"
	"  -h, --help        this text\n"
	"\n"
	"Formats: a .safetensors PUB or PRIV is a Hugging Face Llama checkpoint,\n"
	"with its config.json (head counts) beside it; its q_proj and k_proj rows are\n"
	"taken back from Hugging Face's rotate-half RoPE order to llama2.c's\n"
	"interleaved pairs, so it packs exactly as the same model's llama2.c .bin.\n"
	"Anything else is read as a llama2.c .bin. Tensor names: lib/FORMATS.md.\n"
	"\n"
	"Exit status: 0 packed, 1 a check failed or bad input (nothing written),\n"
	"2 usage.\n";

static void log_fn(void *user, int prio, const char *fmt, va_list ap)
{
	struct tool *t = user;

	if (t && t->progress_shown) {
		fputc('\n', stderr);
		t->progress_shown = 0;
	}
	fputs("ortho-pack: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A progress line, on a terminal, once the pack has run for a second. */
static void progress_fn(void *user, unsigned int done, unsigned int total)
{
	struct tool *t = user;
	double n = now();

	if (n - t->t0 < 1.0 || (n - t->last < 0.2 && done < total))
		return;
	t->last = n;
	fprintf(stderr, "\rortho-pack: %u/%u tensor steps", done, total);
	t->progress_shown = 1;
	if (done == total) {
		fputc('\n', stderr);
		t->progress_shown = 0;
	}
}

static void report_fn(void *user, const struct ortho_pack_tensor_report *r)
{
	struct tool *t = user;
	char shape[32], err[16] = "-", ent[24] = "-", dens[16] = "-";
	char energy[16] = "-";

	if (t->quiet)
		return;
	if (!t->header_done) {
		printf("%-24s %-12s %9s %12s %8s %-8s %9s\n", "tensor", "shape",
		       "base err", "ortho", "density", "encoding", "energy");
		t->header_done = 1;
	}
	snprintf(shape, sizeof(shape), "%ux%u", r->rows, r->cols);
	if (r->is_linear)
		snprintf(err, sizeof(err), "%.3f", r->base_max_err_steps);
	if (t->has_priv && r->is_linear) {
		snprintf(ent, sizeof(ent), "%llu",
			 (unsigned long long)r->ortho_entries);
		snprintf(dens, sizeof(dens), "%.1f%%", 100.0 * r->density);
		snprintf(energy, sizeof(energy), "%.6f", r->energy_kept);
	}
	printf("%-24s %-12s %9s %12s %8s %-8s %9s\n", r->name, shape, err, ent,
	       dens, r->encoding, energy);
}

static void print_summary(const struct tool *t,
			  const struct ortho_pack_summary *s, const char *dir,
			  const char *label)
{
	char id[17];
	int i;

	for (i = 0; i < 8; i++)
		snprintf(id + 2 * i, 3, "%02x", s->model_id[i]);
	printf("packed %s: %u tensors (%u linear), base.orb %.1f KiB, base max error %.3f steps, model id %s",
	       dir, s->tensors, s->linear_tensors, (double)s->base_bytes / 1024,
	       s->base_max_err_steps, id);
	if (t->has_priv)
		printf("; %u shards \"%s\": %llu Ortho entries (%.1f%% of linear), %.1f KiB, energy kept %.6f",
		       s->shards, label, (unsigned long long)s->ortho_entries,
		       s->linear_entries ? 100.0 * (double)s->ortho_entries /
						   (double)s->linear_entries :
					   0.0,
		       (double)s->ortho_bytes / 1024, s->energy_kept);
	printf("\n");
}

static __attribute__((format(printf, 1, 2))) int
usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("ortho-pack: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\nTry 'ortho-pack --help'.\n", stderr);
	return EXIT_USAGE;
}

static int parse_keep(const char *s, double *keep)
{
	char *end;

	errno = 0;
	*keep = strtod(s, &end);
	return errno || end == s || *end || !(*keep > 0.0 && *keep <= 1.0);
}

static int parse_group(const char *s, uint32_t *group)
{
	unsigned long v;
	char *end;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || !v || v > (1ul << 20))
		return 1;
	*group = (uint32_t)v;
	return 0;
}

enum { OPT_PUBLIC = 256, OPT_PRIVATE, OPT_LABEL, OPT_KEYS, OPT_KEEP,
       OPT_GROUP, OPT_FORCE, OPT_AUTHORITY };

static const struct option long_opts[] = {
	{ "public", required_argument, NULL, OPT_PUBLIC },
	{ "private", required_argument, NULL, OPT_PRIVATE },
	{ "label", required_argument, NULL, OPT_LABEL },
	{ "key-file", required_argument, NULL, OPT_KEYS },
	{ "authority", required_argument, NULL, OPT_AUTHORITY },
	{ "out", required_argument, NULL, 'o' },
	{ "keep", required_argument, NULL, OPT_KEEP },
	{ "group", required_argument, NULL, OPT_GROUP },
	{ "force", no_argument, NULL, OPT_FORCE },
	{ "quiet", no_argument, NULL, 'q' },
	{ "verbose", no_argument, NULL, 'v' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/* Return: -1 to go on, else the exit status. */
static int parse_args(int argc, char **argv, struct ortho_pack_opts *o,
		      struct tool *t, int *verbose)
{
	int c;

	while ((c = getopt_long(argc, argv, "o:qvh", long_opts, NULL)) != -1) {
		switch (c) {
		case OPT_PUBLIC:
			o->public_path = optarg;
			break;
		case OPT_PRIVATE:
			o->private_path = optarg;
			break;
		case OPT_LABEL:
			o->label = optarg;
			break;
		case OPT_KEYS:
			o->key_file = optarg;
			break;
		case OPT_AUTHORITY:
			t->authority = optarg;
			break;
		case 'o':
			o->out_dir = optarg;
			break;
		case OPT_FORCE:
			o->flags |= ORTHO_PACK_FORCE;
			break;
		case 'q':
			t->quiet = 1;
			break;
		case 'v':
			*verbose = 1;
			break;
		case 'h':
			fputs(usage_text, stdout);
			return 0;
		case OPT_KEEP:
			if (parse_keep(optarg, &o->keep))
				return usage_error("--keep %s: need 0 < E <= 1",
						   optarg);
			break;
		case OPT_GROUP:
			if (parse_group(optarg, &o->group_size))
				return usage_error("--group %s: need 1 to 1048576",
						   optarg);
			break;
		default:
			return usage_error("bad option");
		}
	}
	if (optind < argc)
		return usage_error("unexpected argument '%s'", argv[optind]);
	if (!o->public_path || !o->out_dir)
		return usage_error("--public and -o are needed");
	t->has_priv = o->private_path != NULL;
	if (t->has_priv && (!o->label || !o->key_file == !t->authority))
		return usage_error("--private needs --label, and --key-file or --authority");
	if (!t->has_priv && (o->label || o->key_file || o->keep != 0.0 ||
			     t->authority || (o->flags & ORTHO_PACK_FORCE)))
		return usage_error("--label, --key-file, --authority, --keep and --force go with --private");
	if (t->authority && (o->flags & ORTHO_PACK_FORCE))
		return usage_error("--force goes with --key-file");
	return -1;
}

int main(int argc, char **argv)
{
	struct tool t = { 0 };
	struct ortho_pack_opts o = { .sz = sizeof(o) };
	struct ortho_pack_summary s = { .sz = sizeof(s) };
	struct ortho_ctx_opts co = { .sz = sizeof(co), .backend = "cpu" };
	struct ortho_ctx *ctx = NULL;
	int verbose = 0, ret;

	ret = parse_args(argc, argv, &o, &t, &verbose);
	if (ret >= 0)
		return ret;
	co.log_fn = log_fn;
	co.log_user = &t;
	co.log_level = verbose ? ORTHO_LOG_INFO : ORTHO_LOG_WARNING;
	/* Only when asked for: the keys then go nowhere else. */
	co.authority = t.authority ? t.authority : "none";
	co.flags = t.authority ? ORTHO_CTX_AUTHORITY_REQUIRED : 0;
	ret = ortho_ctx_new(&co, &ctx);
	if (ret) {
		fprintf(stderr, "ortho-pack: cannot create a context: %s\n",
			ortho_strerror(ret));
		return 1;
	}
	o.report = report_fn;
	o.report_user = &t;
	if (isatty(STDERR_FILENO))
		o.progress = progress_fn;
	t.t0 = t.last = now();
	ret = ortho_pack(ctx, &o, &s);
	ortho_ctx_free(ctx);
	if (ret) {
		if (t.progress_shown)
			fputc('\n', stderr);
		fprintf(stderr, "ortho-pack: pack failed: %s; nothing written\n",
			ortho_strerror(ret));
		return 1;
	}
	print_summary(&t, &s, o.out_dir, o.label);
	return 0;
}
