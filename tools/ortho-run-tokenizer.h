/* SPDX-License-Identifier: MIT */
/*
 * ortho-run: the llama2.c tokenizer (tok512.bin and friends): a vocabulary
 * of byte strings with merge scores, sentencepiece-style encoding with a
 * dummy " " prefix and byte fallback.
 */
#ifndef ORTHO_RUN_TOKENIZER_H
#define ORTHO_RUN_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#define TOK_BOS 1
#define TOK_EOS 2

struct tok_sorted {
	const char *str;
	int id;
};

struct tokenizer {
	char **vocab;			/* NUL-terminated pieces */
	float *scores;
	uint32_t n;
	uint32_t max_len;		/* longest piece */
	struct tok_sorted *sorted;	/* vocab sorted for lookups */
	char byte_pieces[256][2];	/* "<0xXX>" decodes to one byte */
};

/**
 * tok_load() - read a llama2.c tokenizer file of @vocab_size pieces.
 * @t: filled in.
 * @path: the file.
 * @vocab_size: the model's vocabulary size.
 *
 * Prints what is wrong (file, entry) on stderr.
 * Return: 0, or -EINVAL/-EBADMSG/-ENOMEM/-errno.
 */
int tok_load(struct tokenizer *t, const char *path, uint32_t vocab_size);

/* Free what tok_load() allocated. */
void tok_free(struct tokenizer *t);

/**
 * tok_encode() - encode @text as llama2.c does: optional BOS, a " " piece
 * when @text is not empty, UTF-8 code points (bytes + 3 when a code point
 * has no piece), then the best-scoring adjacent merge until none is left.
 * @t: the tokenizer.
 * @text: NUL-terminated UTF-8.
 * @bos: prepend TOK_BOS.
 * @out: receives a malloc'd array of token ids; caller frees.
 * @n: receives the count.
 *
 * Return: 0 or -ENOMEM.
 */
int tok_encode(const struct tokenizer *t, const char *text, int bos,
	       int **out, size_t *n);

/**
 * tok_piece() - the text of token @id following token @prev: the leading
 * space after BOS is dropped and "<0xXX>" pieces become their byte.
 * @t: the tokenizer.
 * @prev: the token before, or -1.
 * @id: the token.
 * @len: receives the length (a byte piece may be a NUL byte).
 *
 * Return: the bytes (owned by @t), "" for an out-of-range id.
 */
const char *tok_piece(const struct tokenizer *t, int prev, int id,
		      size_t *len);

#endif
