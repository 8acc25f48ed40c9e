// SPDX-License-Identifier: MIT
/*
 * ortho-run: the llama2.c tokenizer. Encoding follows llama2.c's encode()
 * step by step (dummy prefix, UTF-8 code points, byte fallback, greedy
 * merges by score), so perplexities match models trained with it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ortho-run-tokenizer.h"

/* Longest piece accepted; llama2.c vocabularies stay far below it. */
#define TOK_MAX_PIECE 4096

static int sorted_cmp(const void *a, const void *b)
{
	return strcmp(((const struct tok_sorted *)a)->str,
		      ((const struct tok_sorted *)b)->str);
}

static int read_exact(FILE *f, void *buf, size_t n)
{
	return fread(buf, 1, n, f) == n ? 0 : -1;
}

static int read_entry(struct tokenizer *t, FILE *f, const char *path,
		      uint32_t i)
{
	int32_t len;

	if (read_exact(f, &t->scores[i], 4) || read_exact(f, &len, 4)) {
		fprintf(stderr, "ortho-run: error: %s: ends at entry %u "
			"of %u\n", path, i, t->n);
		return -EBADMSG;
	}
	if (len < 0 || len > TOK_MAX_PIECE) {
		fprintf(stderr, "ortho-run: error: %s: entry %u has length "
			"%d (0..%d)\n", path, i, len, TOK_MAX_PIECE);
		return -EBADMSG;
	}
	t->vocab[i] = malloc((size_t)len + 1);
	if (!t->vocab[i])
		return -ENOMEM;
	if (read_exact(f, t->vocab[i], (size_t)len)) {
		fprintf(stderr, "ortho-run: error: %s: entry %u is cut short\n",
			path, i);
		return -EBADMSG;
	}
	t->vocab[i][len] = 0;
	if (strlen(t->vocab[i]) != (size_t)len) {
		fprintf(stderr, "ortho-run: error: %s: entry %u holds a NUL "
			"byte\n", path, i);
		return -EBADMSG;
	}
	return 0;
}

static int read_all(struct tokenizer *t, FILE *f, const char *path)
{
	int32_t max_len;
	uint32_t i;
	int ret;

	if (read_exact(f, &max_len, 4) || max_len <= 0 ||
	    max_len > TOK_MAX_PIECE) {
		fprintf(stderr, "ortho-run: error: %s: not a llama2.c "
			"tokenizer (bad max_token_length)\n", path);
		return -EBADMSG;
	}
	t->max_len = (uint32_t)max_len;
	for (i = 0; i < t->n; i++) {
		ret = read_entry(t, f, path, i);
		if (ret)
			return ret;
	}
	if (fgetc(f) != EOF) {
		fprintf(stderr, "ortho-run: error: %s: more than %u entries "
			"(the model's vocabulary size)\n", path, t->n);
		return -EBADMSG;
	}
	return 0;
}

int tok_load(struct tokenizer *t, const char *path, uint32_t vocab_size)
{
	uint32_t i;
	FILE *f;
	int ret;

	memset(t, 0, sizeof(*t));
	if (!vocab_size || vocab_size > (1u << 24))
		return -EINVAL;
	f = fopen(path, "rb");
	if (!f) {
		ret = -errno;
		fprintf(stderr, "ortho-run: error: %s: %s\n", path,
			strerror(-ret));
		return ret;
	}
	t->n = vocab_size;
	t->vocab = calloc(vocab_size, sizeof(*t->vocab));
	t->scores = calloc(vocab_size, sizeof(*t->scores));
	t->sorted = calloc(vocab_size, sizeof(*t->sorted));
	ret = -ENOMEM;
	if (t->vocab && t->scores && t->sorted)
		ret = read_all(t, f, path);
	fclose(f);
	if (ret) {
		tok_free(t);
		return ret;
	}
	for (i = 0; i < vocab_size; i++) {
		t->sorted[i].str = t->vocab[i];
		t->sorted[i].id = (int)i;
		if (strlen(t->vocab[i]) > t->max_len)
			t->max_len = (uint32_t)strlen(t->vocab[i]);
	}
	qsort(t->sorted, vocab_size, sizeof(*t->sorted), sorted_cmp);
	for (i = 0; i < 256; i++)
		t->byte_pieces[i][0] = (char)i;
	return 0;
}

void tok_free(struct tokenizer *t)
{
	uint32_t i;

	if (t->vocab)
		for (i = 0; i < t->n; i++)
			free(t->vocab[i]);
	free(t->vocab);
	free(t->scores);
	free(t->sorted);
	memset(t, 0, sizeof(*t));
}

static int lookup(const struct tokenizer *t, const char *s)
{
	struct tok_sorted key = { .str = s }, *r;

	r = bsearch(&key, t->sorted, t->n, sizeof(*t->sorted), sorted_cmp);
	return r ? r->id : -1;
}

/* Code points, or their bytes + 3 when the vocabulary lacks them. */
static size_t encode_points(const struct tokenizer *t, const char *text,
			    int *tok, size_t n)
{
	char buf[8];
	size_t len = 0, i;
	const char *c;
	int id;

	for (c = text; *c; c++) {
		if ((*c & 0xC0) != 0x80)
			len = 0;
		buf[len++] = *c;
		buf[len] = 0;
		if ((c[1] & 0xC0) == 0x80 && len < 4)
			continue;
		id = lookup(t, buf);
		if (id >= 0) {
			tok[n++] = id;
		} else {
			for (i = 0; i < len; i++)
				tok[n++] = (unsigned char)buf[i] + 3;
		}
		len = 0;
	}
	return n;
}

/* Merge the best-scoring adjacent pair until no pair is in the vocab. */
static void merge_pairs(const struct tokenizer *t, int *tok, size_t *np,
			char *buf)
{
	size_t n = *np, i, best_idx;
	float best_score;
	int best_id, id;

	for (;;) {
		best_score = -1e10f;
		best_id = -1;
		best_idx = 0;
		for (i = 0; i + 1 < n; i++) {
			sprintf(buf, "%s%s", t->vocab[tok[i]],
				t->vocab[tok[i + 1]]);
			id = lookup(t, buf);
			if (id >= 0 && t->scores[id] > best_score) {
				best_score = t->scores[id];
				best_id = id;
				best_idx = i;
			}
		}
		if (best_id < 0)
			break;
		tok[best_idx] = best_id;
		memmove(&tok[best_idx + 1], &tok[best_idx + 2],
			(n - best_idx - 2) * sizeof(*tok));
		n--;
	}
	*np = n;
}

int tok_encode(const struct tokenizer *t, const char *text, int bos,
	       int **out, size_t *np)
{
	size_t n = 0, i;
	char *buf;
	int *tok;
	int sp;

	*out = NULL;
	*np = 0;
	tok = malloc((strlen(text) + 3) * sizeof(*tok));
	buf = malloc((size_t)t->max_len * 2 + 8);
	if (!tok || !buf) {
		free(tok);
		free(buf);
		return -ENOMEM;
	}
	if (bos)
		tok[n++] = TOK_BOS;
	sp = lookup(t, " ");
	if (text[0] && sp >= 0)
		tok[n++] = sp;
	n = encode_points(t, text, tok, n);
	/* Byte fallback ids beyond a tiny vocabulary cannot be merged. */
	for (i = 0; i < n; i++)
		if ((uint32_t)tok[i] >= t->n)
			tok[i] = 0;
	merge_pairs(t, tok, &n, buf);
	free(buf);
	*out = tok;
	*np = n;
	return 0;
}

const char *tok_piece(const struct tokenizer *t, int prev, int id,
		      size_t *len)
{
	const char *p;
	unsigned int b;
	char tail;

	if (id < 0 || (uint32_t)id >= t->n) {
		*len = 0;
		return "";
	}
	p = t->vocab[id];
	if (prev == TOK_BOS && p[0] == ' ')
		p++;
	if (sscanf(p, "<0x%02X>%c", &b, &tail) == 1 && strlen(p) == 6) {
		*len = 1;
		return t->byte_pieces[b & 0xff];
	}
	*len = strlen(p);
	return p;
}
