/* SPDX-License-Identifier: MIT */
/*
 * The fixture of the model runtime tests (test_model.c, test_model_shards.c):
 * tiny synthetic llama2.c checkpoints packed with ortho_pack(), and a
 * double-precision reference built by decrypting every shard with the
 * internal API.
 *
 * Two private fine-tunes of one public model are packed into one directory
 * ("a": a dense delta, "b": a sparse one), so that whatever way the packer
 * cuts shards there are several, of two labels, over the same tensors.
 * Another public model with its own fine-tune gives a foreign shard.
 */
#ifndef ORTHO_TEST_MODEL_FIXTURE_H
#define ORTHO_TEST_MODEL_FIXTURE_H

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base.h"
#include "fp16.h"
#include "keyfile.h"
#include "model.h"
#include "ortho.h"
#include "shard.h"
#include "testutil.h"

/* Each program uses its own subset of these helpers. */
#define FIX static __attribute__((unused))

/* Setup runs outside any test: fail loudly without Check. */
#define REQ(c) do { if (!(c)) { fprintf(stderr, "%s:%d: %s failed\n", \
	__FILE__, __LINE__, #c); abort(); } } while (0)

/* The synthetic model: partial INT8 groups (hidden 96), GQA. */
#define DIM 64u
#define HID 96u
#define NL 2u
#define NH 4u
#define NKV 2u
#define VOC 32u
#define SEQ 16u
#define KVD (DIM / NH * NKV)
#define MAXLIN (NL * 7u)

struct lin {
	char name[32];
	size_t off;			/* in the float payload */
	uint32_t rows, cols;
};

static struct lin g_lin[MAXLIN];
static unsigned int g_nlin;
static size_t g_nfloats, g_emb_off;
static float *g_pub, *g_priv_a, *g_priv_b;

static char *g_tmp, *g_dir, *g_keys, *g_other_dir;

/* ---- synthetic checkpoints ---- */

FIX void add_lin(size_t *off, const char *what, uint32_t rows,
		    uint32_t cols)
{
	unsigned int l;

	for (l = 0; l < NL; l++) {
		struct lin *e = &g_lin[g_nlin++];

		snprintf(e->name, sizeof(e->name), "layers.%u.%s", l, what);
		e->off = *off;
		e->rows = rows;
		e->cols = cols;
		*off += (size_t)rows * cols;
	}
}

/* Offsets of the llama2.c layout (tests/data/stories260K/NOTICE). */
FIX void layout(void)
{
	size_t off = 0;

	g_emb_off = 0;
	off += (size_t)VOC * DIM;
	off += (size_t)NL * DIM;		/* rms_att */
	add_lin(&off, "wq", DIM, DIM);
	add_lin(&off, "wk", KVD, DIM);
	add_lin(&off, "wv", KVD, DIM);
	add_lin(&off, "wo", DIM, DIM);
	off += (size_t)NL * DIM;		/* rms_ffn */
	add_lin(&off, "w1", HID, DIM);
	add_lin(&off, "w2", DIM, HID);
	add_lin(&off, "w3", HID, DIM);
	off += DIM;				/* rms_final */
	off += (size_t)SEQ * (DIM / NH / 2) * 2;	/* RoPE tables */
	g_nfloats = off;
}

FIX float *make_public(uint64_t seed)
{
	float *w = malloc(g_nfloats * sizeof(float));
	size_t i;

	REQ(w);
	for (i = 0; i < g_nfloats; i++)
		w[i] = 1.0f + 0.05f * tu_randn(&seed);
	for (i = 0; i < (size_t)VOC * DIM; i++)
		w[g_emb_off + i] = 0.5f * tu_randn(&seed);
	for (i = 0; i < g_nlin; i++) {
		size_t j, n = (size_t)g_lin[i].rows * g_lin[i].cols;

		for (j = 0; j < n; j++)
			w[g_lin[i].off + j] = 0.1f * tu_randn(&seed);
	}
	return w;
}

/* Private = public + a delta in the linear matrices only. */
FIX float *make_private(const float *pub, uint64_t seed, double share)
{
	float *w = malloc(g_nfloats * sizeof(float));
	size_t i, j;

	REQ(w);
	memcpy(w, pub, g_nfloats * sizeof(float));
	for (i = 0; i < g_nlin; i++) {
		size_t n = (size_t)g_lin[i].rows * g_lin[i].cols;

		for (j = 0; j < n; j++)
			if ((tu_rand(&seed) >> 11) <
			    (uint64_t)(share * 9007199254740992.0))
				w[g_lin[i].off + j] += 0.02f * tu_randn(&seed);
	}
	return w;
}

FIX void write_ckpt(const char *path, const float *w)
{
	int32_t hdr[7] = { DIM, HID, NL, NH, NKV, VOC, SEQ };
	size_t n = sizeof(hdr) + g_nfloats * sizeof(float);
	char *buf = malloc(n);

	REQ(buf);
	memcpy(buf, hdr, sizeof(hdr));
	memcpy(buf + sizeof(hdr), w, g_nfloats * sizeof(float));
	REQ((tu_write_file(path, buf, n)) == 0);
	free(buf);
}

FIX char *path2(const char *a, const char *b)
{
	char *p;

	REQ((asprintf(&p, "%s/%s", a, b)) >= 0);
	return p;
}

FIX void pack(const char *pub, const char *priv, const char *label,
		 const char *keys, const char *out)
{
	struct ortho_pack_opts o = {
		.sz = sizeof(o),
		.public_path = pub,
		.private_path = priv,
		.label = label,
		.key_file = keys,
		.out_dir = out,
		.group_size = 64,
	};
	struct tu_log lg = { .len = 0 };
	struct ortho_ctx *ctx = tu_ctx(&lg);
	int ret;

	REQ(ctx);
	ret = ortho_pack(ctx, &o, NULL);
	if (ret)
		fprintf(stderr, "pack failed: %d\n%s", ret, lg.buf);
	REQ((ret) == 0);
	ortho_ctx_free(ctx);
}

/* Keys of @a and @b in one file @out. */
FIX void merge_keys(const char *a, const char *b, const char *out)
{
	struct keyfile ka, kb;
	size_t i;

	REQ((keyfile_load(NULL, a, &ka)) == 0);
	REQ((keyfile_load(NULL, b, &kb)) == 0);
	for (i = 0; i < kb.n; i++)
		REQ((keyfile_add(&ka, &kb.e[i])) == 0);
	REQ((keyfile_save(NULL, out, &ka, 1)) == 0);
	keyfile_free(&ka);
	keyfile_free(&kb);
}

FIX void setup_all(void)
{
	char *pub, *pa, *pb, *ka, *kb, *opub, *opriv, *okeys;
	float *other, *other_priv;

	layout();
	g_tmp = tu_mkdtemp("model");
	REQ(g_tmp);
	g_pub = make_public(11);
	g_priv_a = make_private(g_pub, 22, 1.0);
	g_priv_b = make_private(g_pub, 33, 0.05);
	pub = path2(g_tmp, "public.bin");
	pa = path2(g_tmp, "private-a.bin");
	pb = path2(g_tmp, "private-b.bin");
	write_ckpt(pub, g_pub);
	write_ckpt(pa, g_priv_a);
	write_ckpt(pb, g_priv_b);
	g_dir = path2(g_tmp, "model");
	ka = path2(g_tmp, "keys-a");
	kb = path2(g_tmp, "keys-b");
	g_keys = path2(g_tmp, "keys");
	pack(pub, pa, "a", ka, g_dir);
	pack(pub, pb, "b", kb, g_dir);
	merge_keys(ka, kb, g_keys);

	/* Another public model with its own fine-tune. */
	other = make_public(44);
	other_priv = make_private(other, 55, 1.0);
	opub = path2(g_tmp, "other.bin");
	opriv = path2(g_tmp, "other-private.bin");
	write_ckpt(opub, other);
	write_ckpt(opriv, other_priv);
	g_other_dir = path2(g_tmp, "other");
	okeys = path2(g_tmp, "keys-other");
	pack(opub, opriv, "a", okeys, g_other_dir);
	free(other);
	free(other_priv);
	free(pub);
	free(pa);
	free(pb);
	free(ka);
	free(kb);
	free(opub);
	free(opriv);
	free(okeys);
}

/* ---- the reference: every shard decrypted with the internal API ---- */

struct ref_tensor {
	char name[ORB_NAME_MAX];
	double *d;			/* dense delta, rows x cols */
};

struct ref_shard {
	char id[33];
	char label[OSH_LABEL_MAX];
	char *path;
	uint64_t data_offset;
	unsigned int n;
	struct ref_tensor *t;
};

static struct ref_shard g_ref[64];
static unsigned int g_nref;

FIX const struct lin *lin_by_name(const char *name)
{
	unsigned int i;

	for (i = 0; i < g_nlin; i++)
		if (!strcmp(g_lin[i].name, name))
			return &g_lin[i];
	return NULL;
}

FIX void ref_expand(struct ref_tensor *rt, const struct osp_view_tensor *v)
{
	uint32_t r, k;

	rt->d = calloc((size_t)v->rows * v->cols, sizeof(double));
	REQ(rt->d);
	snprintf(rt->name, sizeof(rt->name), "%s", v->name);
	if (v->encoding == OSP_DENSE16) {
		for (k = 0; k < v->rows * v->cols; k++)
			rt->d[k] = fp16_to_f32(v->val[k]);
		return;
	}
	for (r = 0; r < v->rows; r++)
		for (k = v->rowptr[r]; k < v->rowptr[r + 1]; k++) {
			uint32_t c = v->encoding == OSP_CSR16 ?
				     ((const uint16_t *)v->col)[k] :
				     ((const uint32_t *)v->col)[k];

			rt->d[(size_t)r * v->cols + c] = fp16_to_f32(v->val[k]);
		}
}

FIX void ref_add(const char *path, const struct keyfile *kf)
{
	struct ref_shard *s;
	const struct keyfile_entry *e;
	struct osp_view_tensor v[MAXLIN];
	struct osh_file f;
	uint32_t bad;
	void *pt;
	int n, i;

	REQ(g_nref < 64);
	s = &g_ref[g_nref++];
	REQ((osh_open(NULL, path, &f)) == 0);
	osh_id_to_hex(f.hdr.shard_id, s->id);
	snprintf(s->label, sizeof(s->label), "%s", f.hdr.label);
	s->path = strdup(path);
	s->data_offset = f.hdr.data_offset;
	e = keyfile_find(kf, f.hdr.shard_id);
	REQ(e);
	pt = malloc(f.hdr.plaintext_len);
	REQ(pt);
	REQ((osh_read_all(NULL, &f, e->key, pt, &bad)) == 0);
	n = osp_parse(NULL, pt, f.hdr.plaintext_len, v, MAXLIN);
	REQ((n) > 0);
	REQ(n <= (int)MAXLIN);
	s->n = (unsigned int)n;
	s->t = calloc((size_t)n, sizeof(*s->t));
	for (i = 0; i < n; i++)
		ref_expand(&s->t[i], &v[i]);
	free(pt);
	osh_close(&f);
}

FIX void ref_load(void)
{
	char *sdir = path2(g_dir, "ortho");
	struct keyfile kf;
	struct dirent *de;
	DIR *d = opendir(sdir);
	char *p;

	REQ(d);
	REQ((keyfile_load(NULL, g_keys, &kf)) == 0);
	while ((de = readdir(d))) {
		if (!strstr(de->d_name, ".osh"))
			continue;
		p = path2(sdir, de->d_name);
		ref_add(p, &kf);
		free(p);
	}
	closedir(d);
	keyfile_free(&kf);
	free(sdir);
	REQ((g_nref) >= 2);
}

FIX const struct ref_shard *ref_by_id(const char *id)
{
	unsigned int i;

	for (i = 0; i < g_nref; i++)
		if (!strcmp(g_ref[i].id, id))
			return &g_ref[i];
	return NULL;
}

FIX const double *ref_delta(const struct ref_shard *s, const char *name)
{
	unsigned int i;

	for (i = 0; i < s->n; i++)
		if (!strcmp(s->t[i].name, name))
			return s->t[i].d;
	return NULL;
}

/*
 * W_eff = deq(B) + the deltas of every shard not in @skip (ids), as
 * doubles; deq(B) from ortho_tensor_read_f32(), checked against W_public
 * (within half an INT8 step of its group's absmax) so it is not taken on
 * trust.
 */
FIX double *ref_weff(struct ortho_model *m, const char *name,
			const char *const *skip, unsigned int nskip)
{
	const struct lin *l = lin_by_name(name);
	struct ortho_tensor *t;
	size_t n, i, k;
	double *w;
	float *deq;

	ck_assert_ptr_nonnull(l);
	ck_assert_int_eq(ortho_model_find_tensor(m, name, &t), 0);
	n = (size_t)l->rows * l->cols;
	deq = malloc(n * sizeof(float));
	w = malloc(n * sizeof(double));
	ck_assert_ptr_nonnull(deq);
	ck_assert_ptr_nonnull(w);
	ck_assert_int_eq(ortho_tensor_read_f32(t, deq, n), 0);
	for (i = 0; i < n; i++) {
		size_t r = i / l->cols, c0 = (i % l->cols) / 64 * 64, c;
		double amax = 0.0, pw = g_pub[l->off + i];

		for (c = c0; c < c0 + 64 && c < l->cols; c++)
			amax = fmax(amax,
				    fabs(g_pub[l->off + r * l->cols + c]));
		ck_assert_double_le(fabs(deq[i] - pw), amax / 127.0 * 0.5001);
		w[i] = deq[i];
	}
	for (k = 0; k < g_nref; k++) {
		const double *d = ref_delta(&g_ref[k], name);

		for (i = 0; i < nskip; i++)
			if (!strcmp(skip[i], g_ref[k].id))
				d = NULL;
		for (i = 0; d && i < n; i++)
			w[i] += d[i];
	}
	free(deq);
	return w;
}

/* Is y (ntok x rows) W x within FP32 accumulation error? */
FIX int close_to(const double *w, const struct lin *l, const float *x,
		    const float *y, uint32_t ntok)
{
	uint32_t t, r, c;

	for (t = 0; t < ntok; t++)
		for (r = 0; r < l->rows; r++) {
			const double *wr = w + (size_t)r * l->cols;
			const float *xt = x + (size_t)t * l->cols;
			double s = 0.0, a = 0.0;

			for (c = 0; c < l->cols; c++) {
				s += wr[c] * xt[c];
				a += fabs(wr[c] * xt[c]);
			}
			if (fabs(y[(size_t)t * l->rows + r] - s) >
			    1e-4 * a + 1e-6)
				return 0;
		}
	return 1;
}

FIX float *rand_vec(size_t n, uint64_t *seed)
{
	float *x = malloc(n * sizeof(float));
	size_t i;

	ck_assert_ptr_nonnull(x);
	for (i = 0; i < n; i++)
		x[i] = tu_randf(seed);
	return x;
}

/* ---- helpers ---- */

FIX struct ortho_model *open_model(struct ortho_ctx *ctx, const char *dir,
				      const char *keys, unsigned int flags,
				      int want)
{
	struct ortho_model_opts o = {
		.sz = sizeof(o), .flags = flags, .key_file = keys,
	};
	struct ortho_model *m = NULL;

	ck_assert_int_eq(ortho_model_open(ctx, dir, &o, &m), want);
	if (want)
		ck_assert_ptr_null(m);
	else
		ck_assert_ptr_nonnull(m);
	return m;
}

FIX void copy_file(const char *from, const char *to)
{
	size_t n;
	void *b = tu_read_file(from, &n);

	ck_assert_ptr_nonnull(b);
	ck_assert_int_eq(tu_write_file(to, b, n), 0);
	free(b);
}

/* A private copy of the packed directory to break things in. */
FIX char *copy_model(const char *tag)
{
	char *dst = tu_mkdtemp(tag), *sdir, *ddir, *a, *b;
	struct dirent *de;
	DIR *d;

	ck_assert_ptr_nonnull(dst);
	a = path2(g_dir, "base.orb");
	b = path2(dst, "base.orb");
	copy_file(a, b);
	free(a);
	free(b);
	sdir = path2(g_dir, "ortho");
	ddir = path2(dst, "ortho");
	ck_assert_int_eq(mkdir(ddir, 0700), 0);
	d = opendir(sdir);
	ck_assert_ptr_nonnull(d);
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		a = path2(sdir, de->d_name);
		b = path2(ddir, de->d_name);
		copy_file(a, b);
		free(a);
		free(b);
	}
	closedir(d);
	free(sdir);
	free(ddir);
	return dst;
}

/* The shard file in @dir with the id of reference shard @s. */
FIX char *shard_path(const char *dir, const struct ref_shard *s)
{
	const char *base = strrchr(s->path, '/') + 1;
	char *sd = path2(dir, "ortho"), *p = path2(sd, base);

	free(sd);
	return p;
}

FIX void shard_info(struct ortho_model *m, unsigned int i,
		       struct ortho_shard_info *si)
{
	memset(si, 0, sizeof(*si));
	si->sz = sizeof(*si);
	ck_assert_int_eq(ortho_shard_info_get(m, i, si), 0);
}

FIX int find_shard(struct ortho_model *m, const char *id)
{
	struct ortho_shard_info si;
	unsigned int i;

	for (i = 0; i < ortho_model_shard_count(m); i++) {
		shard_info(m, i, &si);
		if (!strcmp(si.id, id))
			return (int)i;
	}
	return -1;
}

/* A linear tensor that reference shard @s holds. */
FIX const struct lin *lin_of(const struct ref_shard *s)
{
	return lin_by_name(s->t[0].name);
}

/* ortho_linear() on @l with random x agrees with W_eff without @skip. */
FIX void check_linear(struct ortho_model *m, const struct lin *l,
			 const char *skip, uint32_t ntok, uint64_t seed)
{
	const char *sk[1] = { skip };
	struct ortho_tensor *t;
	double *w = ref_weff(m, l->name, sk, skip ? 1 : 0);
	float *x = rand_vec((size_t)ntok * l->cols, &seed);
	float *y = malloc((size_t)ntok * l->rows * sizeof(float));

	ck_assert_int_eq(ortho_model_find_tensor(m, l->name, &t), 0);
	ck_assert_int_eq(ortho_linear(m, t, x, y, ntok), 0);
	ck_assert_msg(close_to(w, l, x, y, ntok), "%s: ortho_linear differs "
		      "from deq(B)x + Ox", l->name);
	free(w);
	free(x);
	free(y);
}


/* Every id of the reference shards with label @label (NULL: all). */
FIX unsigned int ids_of(const char *label, const char **ids)
{
	unsigned int i, n = 0;

	for (i = 0; i < g_nref; i++)
		if (!label || !strcmp(g_ref[i].label, label))
			ids[n++] = g_ref[i].id;
	return n;
}

FIX void check_linear_skip(struct ortho_model *m, const struct lin *l,
			      const char *const *skip, unsigned int nskip)
{
	uint64_t seed = 77;
	struct ortho_tensor *t;
	double *w = ref_weff(m, l->name, skip, nskip);
	float *x = rand_vec(2 * l->cols, &seed);
	float y[2 * HID];

	ck_assert_int_eq(ortho_model_find_tensor(m, l->name, &t), 0);
	ck_assert_int_eq(ortho_linear(m, t, x, y, 2), 0);
	ck_assert_msg(close_to(w, l, x, y, 2), "%s differs", l->name);
	free(w);
	free(x);
}

/* Flip one byte of @path at @off. */
FIX void flip_byte(const char *path, uint64_t off)
{
	size_t n;
	unsigned char *b = tu_read_file(path, &n);

	ck_assert_ptr_nonnull(b);
	ck_assert_uint_lt(off, n);
	b[off] ^= 0x40;
	ck_assert_int_eq(tu_write_file(path, b, n), 0);
	free(b);
}

/* Shard @r is FAILED with @err, every other one resident, ops skip it. */
FIX void check_one_failed(struct ortho_model *m, const struct ref_shard *r,
			     int err, uint32_t bad_chunk)
{
	struct ortho_shard_info si;
	const char *skip[1] = { r->id };
	unsigned int i, failed = 0;

	for (i = 0; i < ortho_model_shard_count(m); i++) {
		shard_info(m, i, &si);
		if (strcmp(si.id, r->id) || si.state == ORTHO_SHARD_RESIDENT) {
			ck_assert_uint_eq(si.state, ORTHO_SHARD_RESIDENT);
			continue;
		}
		ck_assert_uint_eq(si.state, ORTHO_SHARD_FAILED);
		ck_assert_int_eq(si.error, err);
		ck_assert_uint_eq(si.bad_chunk, bad_chunk);
		ck_assert_uint_eq(si.bytes, 0);
		failed++;
	}
	ck_assert_uint_eq(failed, 1);
	for (i = 0; i < r->n; i++)
		check_linear_skip(m, lin_by_name(r->t[i].name), skip, 1);
}

/* A key file of g_keys with shard @id's key changed (@drop: left out). */
FIX char *keys_without(const char *id, int drop)
{
	struct keyfile kf, out = { 0 };
	uint8_t bin[OSH_ID_SIZE];
	char *p = path2(g_tmp, drop ? "keys-missing" : "keys-wrong");
	size_t i;

	ck_assert_int_eq(osh_id_from_hex(id, bin), 0);
	ck_assert_int_eq(keyfile_load(NULL, g_keys, &kf), 0);
	for (i = 0; i < kf.n; i++) {
		struct keyfile_entry e = kf.e[i];

		if (!memcmp(e.id, bin, OSH_ID_SIZE)) {
			if (drop)
				continue;
			e.key[5] ^= 1;
		}
		ck_assert_int_eq(keyfile_add(&out, &e), 0);
	}
	ck_assert_int_eq(keyfile_save(NULL, p, &out, 1), 0);
	keyfile_free(&kf);
	keyfile_free(&out);
	return p;
}

FIX unsigned int count_in(const char *hay, const char *needle)
{
	unsigned int n = 0;

	while ((hay = strstr(hay, needle))) {
		n++;
		hay++;
	}
	return n;
}


#endif
