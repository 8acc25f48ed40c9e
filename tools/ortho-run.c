// SPDX-License-Identifier: MIT
/*
 * ortho-run: run a llama2.c-format model packed by ortho-pack through
 * libortho-rt (public API only): perplexity of a text file, generation,
 * and the canary check of a private fine-tune, with its Ortho shards
 * granted or not.
 *
 * Keys come from a key file or from the key authority (orthod); with
 * --repeat, ppl runs in rounds so that a revocation between them shows in
 * the next round's perplexity and shard count.
 *
 * Exit status: 0 ok, 1 runtime error, 2 usage.
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
#include "ortho-run-llama.h"
#include "ortho-run-tokenizer.h"

#define BATCH 64u

struct run_opts {
	const char *cmd, *dir, *tokenizer, *text, *prompt, *canaries;
	const char *key_file, *label, *backend, *authority;
	int no_ortho, strict, verbose, have_seed;
	unsigned int threads;
	unsigned long repeat, interval_ms;
	unsigned long steps;
	double temperature;
	uint64_t seed;
	uint64_t budget;
};

struct run {
	struct run_opts o;
	struct ortho_ctx *ctx;
	struct ortho_model *model;
	struct llama llama;
	struct tokenizer tok;
	uint64_t rng;
};

static void usage(FILE *f)
{
	fputs("usage: ortho-run ppl DIR --tokenizer TOK --text FILE [options]\n"
	      "       ortho-run generate DIR --tokenizer TOK --prompt TEXT "
	      "--steps N\n"
	      "                 [--temperature T] [--seed S] [options]\n"
	      "       ortho-run canaries DIR --tokenizer TOK --canaries TSV "
	      "[options]\n"
	      "options:\n"
	      "  --key-file KEYS  keys of the shards (none: Base only, with "
	      "a warning)\n"
	      "  --authority unix:PATH\n"
	      "                   the key authority (orthod) to get keys from\n"
	      "                   when no --key-file is given\n"
	      "  --no-ortho       Base only: no shard is read\n"
	      "  --label L        only shards with label L\n"
	      "  --strict         fail when a shard cannot be used\n"
	      "  --threads N      compute threads (default: one per CPU)\n"
	      "  --backend B      auto, cpu or cuda[:N]\n"
	      "  --budget BYTES   resident Ortho at most (K, M, G suffixes);\n"
	      "                   shards are paged in and out (default: all)\n"
	      "  --verbose        report the shards in use\n"
	      "ppl options:\n"
	      "  --repeat N       N rounds, each printing \"ppl P tokens T "
	      "shards K\"\n"
	      "                   (K: shards used in that round)\n"
	      "  --interval-ms MS pause between rounds (default 0)\n", f);
}

static int usage_err(const char *fmt, ...)
{
	va_list ap;

	fputs("ortho-run: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\n", stderr);
	usage(stderr);
	return 2;
}

static int parse_ulong(const char *s, unsigned long max, unsigned long *v)
{
	char *end;

	errno = 0;
	*v = strtoul(s, &end, 10);
	return errno || end == s || *end || *s == '-' || *v > max ? -1 : 0;
}

/* "64M", "1G", "65536": bytes, binary multiples. */
static int parse_bytes(const char *s, uint64_t *v)
{
	unsigned long long n;
	char *end;
	int sh = 0;

	errno = 0;
	n = strtoull(s, &end, 10);
	if (errno || end == s || *s == '-')
		return -1;
	if (*end == 'K' || *end == 'k')
		sh = 10;
	else if (*end == 'M' || *end == 'm')
		sh = 20;
	else if (*end == 'G' || *end == 'g')
		sh = 30;
	if (sh)
		end++;
	if (*end || !n || n > (~0ull >> sh))
		return -1;
	*v = (uint64_t)n << sh;
	return 0;
}

static int parse_opt(struct run_opts *o, int c, const char *arg)
{
	unsigned long v;
	char *end;

	switch (c) {
	case 'k': o->tokenizer = arg; break;
	case 't': o->text = arg; break;
	case 'p': o->prompt = arg; break;
	case 'c': o->canaries = arg; break;
	case 'K': o->key_file = arg; break;
	case 'A': o->authority = arg; break;
	case 'l': o->label = arg; break;
	case 'b': o->backend = arg; break;
	case 'n': o->no_ortho = 1; break;
	case 'S': o->strict = 1; break;
	case 'v': o->verbose = 1; break;
	case 'j':
		if (parse_ulong(arg, 1024, &v) || !v)
			return usage_err("--threads wants 1..1024, not '%s'",
					 arg);
		o->threads = (unsigned int)v;
		break;
	case 's':
		if (parse_ulong(arg, 1u << 20, &o->steps) || !o->steps)
			return usage_err("--steps wants a positive count, not "
					 "'%s'", arg);
		break;
	case 'T':
		o->temperature = strtod(arg, &end);
		if (end == arg || *end || !(o->temperature >= 0.0) ||
		    o->temperature > 100.0)
			return usage_err("--temperature wants 0..100, not '%s'",
					 arg);
		break;
	case 'B':
		if (parse_bytes(arg, &o->budget))
			return usage_err("--budget wants a positive size in "
					 "bytes (K, M, G), not '%s'", arg);
		break;
	case 'R':
		if (parse_ulong(arg, 1000000, &o->repeat) || !o->repeat)
			return usage_err("--repeat wants 1..1000000, not '%s'",
					 arg);
		break;
	case 'I':
		if (parse_ulong(arg, 3600000, &o->interval_ms))
			return usage_err("--interval-ms wants 0..3600000, not "
					 "'%s'", arg);
		break;
	case 'r':
		if (parse_ulong(arg, ~0ul, &v))
			return usage_err("--seed wants a number, not '%s'",
					 arg);
		o->seed = v;
		o->have_seed = 1;
		break;
	default:
		return usage_err("unknown option");
	}
	return 0;
}

static int parse_args(int argc, char **argv, struct run_opts *o)
{
	static const struct option lo[] = {
		{ "tokenizer", required_argument, NULL, 'k' },
		{ "text", required_argument, NULL, 't' },
		{ "prompt", required_argument, NULL, 'p' },
		{ "canaries", required_argument, NULL, 'c' },
		{ "key-file", required_argument, NULL, 'K' },
		{ "label", required_argument, NULL, 'l' },
		{ "backend", required_argument, NULL, 'b' },
		{ "no-ortho", no_argument, NULL, 'n' },
		{ "strict", no_argument, NULL, 'S' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "threads", required_argument, NULL, 'j' },
		{ "steps", required_argument, NULL, 's' },
		{ "temperature", required_argument, NULL, 'T' },
		{ "seed", required_argument, NULL, 'r' },
		{ "budget", required_argument, NULL, 'B' },
		{ "authority", required_argument, NULL, 'A' },
		{ "repeat", required_argument, NULL, 'R' },
		{ "interval-ms", required_argument, NULL, 'I' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c, ret;

	if (argc < 2)
		return usage_err("no command");
	o->cmd = argv[1];
	if (!strcmp(o->cmd, "--help") || !strcmp(o->cmd, "-h")) {
		usage(stdout);
		exit(0);
	}
	if (strcmp(o->cmd, "ppl") && strcmp(o->cmd, "generate") &&
	    strcmp(o->cmd, "canaries"))
		return usage_err("unknown command '%s'", o->cmd);
	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc - 1, argv + 1, "", lo, NULL)) != -1) {
		if (c == 'h') {
			usage(stdout);
			exit(0);
		}
		/* In argv + 1, the offending word is at optind - 1. */
		if (c == '?')
			return usage_err("unknown option or missing value: %s",
					 argv[optind]);
		ret = parse_opt(o, c, optarg);
		if (ret)
			return ret;
	}
	if (optind != argc - 2)
		return usage_err("%s wants exactly one model directory",
				 o->cmd);
	o->dir = argv[optind + 1];
	if (!o->tokenizer)
		return usage_err("%s needs --tokenizer", o->cmd);
	if (!strcmp(o->cmd, "ppl") && !o->text)
		return usage_err("ppl needs --text");
	if (strcmp(o->cmd, "ppl") && (o->repeat || o->interval_ms))
		return usage_err("--repeat and --interval-ms go with ppl");
	if (!strcmp(o->cmd, "generate") && (!o->prompt || !o->steps))
		return usage_err("generate needs --prompt and --steps");
	if (!strcmp(o->cmd, "canaries") && !o->canaries)
		return usage_err("canaries needs --canaries");
	return 0;
}

static void log_cb(void *user, int prio, const char *fmt, va_list ap)
{
	const char *kind = prio <= ORTHO_LOG_ERR ? "error: " :
			   prio == ORTHO_LOG_WARNING ? "warning: " : "";

	fprintf(stderr, "ortho-run: %s", kind);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

/* Under a budget, a shard paged out is in use all the same. */
static int shard_paged(const struct run *r, const struct ortho_shard_info *si)
{
	return r->o.budget && (si->state == ORTHO_SHARD_ABSENT ||
			       si->state == ORTHO_SHARD_LOADING ||
			       si->state == ORTHO_SHARD_EVICTING) &&
	       (!r->o.label || !strcmp(si->label, r->o.label));
}

static int shard_in_use(const struct run *r, const struct ortho_shard_info *si)
{
	return si->state == ORTHO_SHARD_RESIDENT || shard_paged(r, si);
}

static void report_shards(const struct run *r)
{
	unsigned int i, n = ortho_model_shard_count(r->model), used = 0;
	struct ortho_shard_info si = { .sz = sizeof(si) };
	int paged;

	if (!r->o.verbose || r->o.no_ortho)
		return;
	for (i = 0; i < n; i++) {
		if (ortho_shard_info_get(r->model, i, &si))
			continue;
		paged = shard_paged(r, &si);
		used += shard_in_use(r, &si);
		fprintf(stderr, "ortho-run: shard %s label %s layer %d: %s\n",
			si.id, si.label[0] ? si.label : "-",
			si.layer == UINT32_MAX ? -1 : (int)si.layer,
			si.state == ORTHO_SHARD_RESIDENT ? "in use" :
			paged ? "in use (paged out)" :
			si.state == ORTHO_SHARD_NO_KEY ? "no key" :
			si.state == ORTHO_SHARD_FAILED ?
			ortho_strerror(si.error) : "not used");
	}
	fprintf(stderr, "ortho-run: %u of %u Ortho shards in use\n", used, n);
}

static int open_all(struct run *r)
{
	struct ortho_ctx_opts co = {
		.sz = sizeof(co),
		.backend = r->o.backend,
		.threads = r->o.threads,
		.log_fn = log_cb,
		.log_level = r->o.verbose ? ORTHO_LOG_INFO : ORTHO_LOG_WARNING,
		.ortho_budget = r->o.budget,
		.authority = r->o.authority,
		/* Asked for by name: not reaching it is an error. */
		.flags = r->o.authority ? ORTHO_CTX_AUTHORITY_REQUIRED : 0,
	};
	struct ortho_model_opts mo = {
		.sz = sizeof(mo),
		.key_file = r->o.key_file,
		.label = r->o.label,
	};
	int ret;

	ret = ortho_ctx_new(&co, &r->ctx);
	if (ret) {
		fprintf(stderr, "ortho-run: error: cannot start the library: "
			"%s\n", ortho_strerror(ret));
		return ret;
	}
	mo.flags = (r->o.no_ortho ? ORTHO_MODEL_NO_ORTHO : 0) |
		   (r->o.strict ? ORTHO_MODEL_STRICT : 0);
	ret = ortho_model_open(r->ctx, r->o.dir, &mo, &r->model);
	if (ret) {
		fprintf(stderr, "ortho-run: error: %s: cannot open the model: "
			"%s\n", r->o.dir, ortho_strerror(ret));
		return ret;
	}
	report_shards(r);
	ret = llama_init(&r->llama, r->model, BATCH);
	if (ret)
		return ret;
	return tok_load(&r->tok, r->o.tokenizer, r->llama.cfg.vocab_size);
}

static void close_all(struct run *r)
{
	tok_free(&r->tok);
	if (r->llama.model)
		llama_free(&r->llama);
	ortho_model_close(r->model);
	ortho_ctx_free(r->ctx);
}

/* Negative log-likelihood of @next under @logits, in double. */
static double nll(const float *logits, uint32_t n, int next)
{
	double max = logits[0], sum = 0.0;
	uint32_t i;

	for (i = 1; i < n; i++)
		if (logits[i] > max)
			max = logits[i];
	for (i = 0; i < n; i++)
		sum += exp((double)logits[i] - max);
	return log(sum) + max - (double)logits[next];
}

static int seq_nll(struct run *r, const int *tok, size_t n, double *total)
{
	struct llama *l = &r->llama;
	uint32_t vs = l->cfg.vocab_size;
	size_t s, t, m;
	int ret;

	for (s = 0; s + 1 < n; s += m) {
		m = n - 1 - s < l->max_batch ? n - 1 - s : l->max_batch;
		ret = llama_forward(l, tok + s, (uint32_t)m, (uint32_t)s);
		if (ret)
			return ret;
		for (t = 0; t < m; t++)
			*total += nll(l->logits + t * vs, vs, tok[s + t + 1]);
	}
	return 0;
}

static char *read_text(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t len = 0, cap = 0, got;

	if (!f) {
		fprintf(stderr, "ortho-run: error: %s: %s\n", path,
			strerror(errno));
		return NULL;
	}
	do {
		if (len + 4096 + 1 > cap) {
			char *nb = realloc(buf, cap ? cap * 2 : 65536);

			if (!nb) {
				free(buf);
				fclose(f);
				return NULL;
			}
			buf = nb;
			cap = cap ? cap * 2 : 65536;
		}
		got = fread(buf + len, 1, cap - len - 1, f);
		len += got;
	} while (got);
	if (ferror(f)) {
		fprintf(stderr, "ortho-run: error: %s: read error\n", path);
		free(buf);
		buf = NULL;
	} else {
		buf[len] = 0;
	}
	fclose(f);
	return buf;
}

/* Next line of @*p (cut in place, without "\r\n"), or NULL at the end. */
static char *next_line(char **p)
{
	char *s = *p, *e;
	size_t n;

	if (!s || !*s)
		return NULL;
	e = strchr(s, '\n');
	if (e) {
		*e = 0;
		*p = e + 1;
	} else {
		*p = s + strlen(s);
	}
	n = strlen(s);
	if (n && s[n - 1] == '\r')
		s[n - 1] = 0;
	return s;
}

static int blank(const char *s)
{
	return s[strspn(s, " \t\r\v\f")] == 0;
}

/* One pass over @text (consumed): the summed NLL and the token count. */
static int ppl_pass(struct run *r, char *text, double *total,
		    uint64_t *count)
{
	char *p = text, *line;
	size_t n;
	int *tok, ret = 0;

	*total = 0.0;
	*count = 0;
	while (!ret && (line = next_line(&p))) {
		if (blank(line))
			continue;
		ret = tok_encode(&r->tok, line, 1, &tok, &n);
		if (ret)
			break;
		if (n > r->llama.cfg.seq_len)
			n = r->llama.cfg.seq_len;
		if (n >= 2) {
			ret = seq_nll(r, tok, n, total);
			*count += n - 1;
		}
		free(tok);
	}
	if (!ret && !*count) {
		fprintf(stderr, "ortho-run: error: %s: no tokens to predict\n",
			r->o.text);
		ret = -EINVAL;
	}
	return ret;
}

static void sleep_ms(unsigned long ms)
{
	struct timespec ts = { .tv_sec = (time_t)(ms / 1000),
			       .tv_nsec = (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* Each shard's use count (ops that added its Ortho) into @uses. */
static void read_uses(const struct run *r, uint64_t *uses)
{
	unsigned int i, n = ortho_model_shard_count(r->model);
	struct ortho_shard_info si = { .sz = sizeof(si) };

	for (i = 0; i < n; i++)
		uses[i] = ortho_shard_info_get(r->model, i, &si) ? 0 : si.uses;
}

/*
 * One round of --repeat. K counts the shards whose Ortho some op of the
 * round added: a round a revocation cut in two shows the shards it still
 * used, a round after it shows none.
 */
static int ppl_round(struct run *r, const char *text, uint64_t *uses)
{
	unsigned int i, k = 0, n = ortho_model_shard_count(r->model);
	struct ortho_shard_info si = { .sz = sizeof(si) };
	char *copy = strdup(text);
	double total;
	uint64_t count;
	int ret;

	if (!copy)
		return -ENOMEM;
	read_uses(r, uses);
	ret = ppl_pass(r, copy, &total, &count);
	free(copy);
	if (ret)
		return ret;
	for (i = 0; i < n; i++)
		k += !ortho_shard_info_get(r->model, i, &si) &&
		     si.uses != uses[i];
	printf("ppl %.4f tokens %llu shards %u\n", exp(total / (double)count),
	       (unsigned long long)count, k);
	/* Watchers read the rounds as they come. */
	return fflush(stdout) ? -errno : 0;
}

static int cmd_ppl(struct run *r)
{
	char *text = read_text(r->o.text);
	uint64_t *used = NULL;
	unsigned long i;
	double total;
	uint64_t count;
	int ret;

	if (!text)
		return -EIO;
	if (!r->o.repeat) {
		ret = ppl_pass(r, text, &total, &count);
		if (!ret)
			printf("ppl %.4f tokens %llu\n",
			       exp(total / (double)count),
			       (unsigned long long)count);
		free(text);
		return ret;
	}
	used = calloc(ortho_model_shard_count(r->model) + 1, sizeof(*used));
	ret = used ? 0 : -ENOMEM;
	for (i = 0; !ret && i < r->o.repeat; i++) {
		if (i && r->o.interval_ms)
			sleep_ms(r->o.interval_ms);
		ret = ppl_round(r, text, used);
	}
	free(used);
	free(text);
	return ret;
}

static int argmax(const float *x, uint32_t n)
{
	uint32_t i, best = 0;

	for (i = 1; i < n; i++)
		if (x[i] > x[best])
			best = i;
	return (int)best;
}

static double rng_uniform(uint64_t *s)
{
	uint64_t x = *s ? *s : 0x9e3779b97f4a7c15ull;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return (double)((x * 0x2545f4914f6cdd1dull) >> 11) /
	       9007199254740992.0;
}

static int sample(struct run *r, const float *logits)
{
	uint32_t vs = r->llama.cfg.vocab_size, i;
	double max = logits[0], sum = 0.0, u, acc = 0.0;

	if (r->o.temperature == 0.0)
		return argmax(logits, vs);
	for (i = 1; i < vs; i++)
		if (logits[i] > max)
			max = logits[i];
	for (i = 0; i < vs; i++)
		sum += exp(((double)logits[i] - max) / r->o.temperature);
	u = rng_uniform(&r->rng) * sum;
	for (i = 0; i < vs; i++) {
		acc += exp(((double)logits[i] - max) / r->o.temperature);
		if (acc > u)
			return (int)i;
	}
	return (int)vs - 1;
}

/*
 * Run the prompt, then up to @steps tokens; stops at BOS/EOS or seq_len.
 * @out gets the generated ids (room for @steps), @ngen their count.
 */
static int generate(struct run *r, const int *prompt, size_t np,
		    unsigned long steps, int *out, size_t *ngen)
{
	struct llama *l = &r->llama;
	uint32_t vs = l->cfg.vocab_size, seq = l->cfg.seq_len;
	size_t s, m = 0, pos;
	int ret, next;

	*ngen = 0;
	if (np >= seq)
		np = seq - 1;
	for (s = 0; s < np; s += m) {
		m = np - s < l->max_batch ? np - s : l->max_batch;
		ret = llama_forward(l, prompt + s, (uint32_t)m, (uint32_t)s);
		if (ret)
			return ret;
	}
	next = sample(r, l->logits + (m - 1) * vs);
	for (pos = np; *ngen < steps; pos++) {
		if (next == TOK_BOS || next == TOK_EOS)
			break;
		out[(*ngen)++] = next;
		if (pos + 1 >= seq || *ngen == steps)
			break;
		ret = llama_forward(l, &next, 1, (uint32_t)pos);
		if (ret)
			return ret;
		next = sample(r, l->logits);
	}
	return 0;
}

/* Append the text of @gen (after token @prev) to a malloc'd string. */
static char *detok(const struct run *r, int prev, const int *gen, size_t n)
{
	size_t i, len = 0, pl;
	char *s = malloc(n * r->tok.max_len + 1);
	const char *p;

	if (!s)
		return NULL;
	for (i = 0; i < n; i++) {
		p = tok_piece(&r->tok, i ? gen[i - 1] : prev, gen[i], &pl);
		memcpy(s + len, p, pl);
		len += pl;
	}
	s[len] = 0;
	return s;
}

static int cmd_generate(struct run *r)
{
	int *prompt, *gen;
	size_t np, ng;
	char *text;
	int ret;

	if (r->o.temperature > 0.0)
		r->rng = r->o.have_seed ? r->o.seed :
			 (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	ret = tok_encode(&r->tok, r->o.prompt, 1, &prompt, &np);
	if (ret)
		return ret;
	gen = malloc(r->o.steps * sizeof(*gen));
	ret = gen ? generate(r, prompt, np, r->o.steps, gen, &ng) : -ENOMEM;
	if (!ret) {
		text = detok(r, prompt[np - 1], gen, ng);
		if (text)
			printf("%s%s\n", r->o.prompt, text);
		else
			ret = -ENOMEM;
		free(text);
	}
	free(gen);
	free(prompt);
	return ret;
}

/* Does @got, spaces removed, start with @want, spaces removed? */
static int starts_nospace(const char *got, const char *want)
{
	for (;;) {
		while (*got == ' ')
			got++;
		while (*want == ' ')
			want++;
		if (!*want)
			return 1;
		if (*got != *want)
			return 0;
		got++;
		want++;
	}
}

static int canary_one(struct run *r, unsigned int idx, const char *prefix,
		      const char *secret, int *hit)
{
	size_t np, ng, want = strlen(secret) + 8;
	int *prompt, gen[256];
	char *cont;
	int ret;

	ret = tok_encode(&r->tok, prefix, 1, &prompt, &np);
	if (ret)
		return ret;
	/* A token holds at least one byte: this covers the secret. */
	ret = generate(r, prompt, np, want < 256 ? want : 256, gen, &ng);
	cont = ret ? NULL : detok(r, prompt[np - 1], gen, ng);
	free(prompt);
	if (ret || !cont)
		return ret ? ret : -ENOMEM;
	*hit = starts_nospace(cont, secret);
	printf("canary %u: %s: \"%s\" ->%s\n", idx,
	       *hit ? "extracted" : "not extracted", prefix, cont);
	free(cont);
	return 0;
}

static int cmd_canaries(struct run *r)
{
	char *text = read_text(r->o.canaries), *p = text, *line, *tab;
	unsigned int n = 0, k = 0, lineno = 0;
	int hit, ret = 0;

	if (!text)
		return -EIO;
	while (!ret && (line = next_line(&p))) {
		lineno++;
		if (blank(line))
			continue;
		tab = strchr(line, '\t');
		if (!tab || blank(tab + 1)) {
			fprintf(stderr, "ortho-run: error: %s line %u: want "
				"prefix TAB secret\n", r->o.canaries, lineno);
			ret = -EINVAL;
			break;
		}
		*tab = 0;
		ret = canary_one(r, ++n, line, tab + 1, &hit);
		k += !ret && hit;
	}
	free(text);
	if (ret)
		return ret;
	if (!n) {
		fprintf(stderr, "ortho-run: error: %s: no canaries\n",
			r->o.canaries);
		return -EINVAL;
	}
	printf("canaries %u/%u\n", k, n);
	return 0;
}

int main(int argc, char **argv)
{
	struct run r;
	int ret;

	memset(&r, 0, sizeof(r));
	ret = parse_args(argc, argv, &r.o);
	if (ret)
		return ret;
	ret = open_all(&r);
	if (!ret) {
		if (!strcmp(r.o.cmd, "ppl"))
			ret = cmd_ppl(&r);
		else if (!strcmp(r.o.cmd, "generate"))
			ret = cmd_generate(&r);
		else
			ret = cmd_canaries(&r);
		if (ret == -ENOMEM)
			fprintf(stderr, "ortho-run: error: out of memory\n");
		else if (ret && ret != -EINVAL && ret != -EIO)
			fprintf(stderr, "ortho-run: error: %s\n",
				ortho_strerror(ret));
	}
	close_all(&r);
	if (fflush(stdout)) {
		fprintf(stderr, "ortho-run: error: writing the output: %s\n",
			strerror(errno));
		return 1;
	}
	return ret ? 1 : 0;
}
