/* GPT-2 as an architecture (struct zn_arch_ops, see arch.h): its shape
 * from the config's model section, its one-line description and summary,
 * the model calls of include/zinc/model.h behind the table, and its
 * weights in the files other programs use: Hugging Face's model.safetensors
 * (written and read) and llm.c's .bin checkpoint (read), a piece of a
 * tensor at a time -- the Conv1D weights, transposed in the file, through
 * a block of whole rows (block_rows). */
#include "model/arch.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/files.h"
#include "zinc/safetensors.h"

static int gpt2_from_config(const struct zn_config *cfg, struct zn_arch *a)
{
	const struct zn_model_config *mc = &cfg->model;
	const struct zn_actckpt_config *ac = &cfg->activation_checkpointing;
	a->g = (struct zn_gpt2_config){
		.n_layer = (int)mc->n_layer, .n_head = (int)mc->n_head,
		.n_embd = (int)mc->n_embd, .vocab_size = (int)mc->vocab_size,
		.max_seq_len = (int)mc->seq_len, .recompute = ac->enabled,
		.offload_activations = ac->cpu_checkpointing, .profile = ac->profile,
		.act_dtype = zn_config_storage_dtype(cfg),
	};
	return zn_gpt2_config_check(&a->g);
}

#define DESCRIPTION "gpt2 n_layer=%d n_head=%d n_embd=%d vocab_size=%d seq_len=%d"

static void gpt2_describe(const struct zn_arch *a, char *out, size_t len)
{
	const struct zn_gpt2_config *c = &a->g;
	snprintf(out, len, DESCRIPTION, c->n_layer, c->n_head, c->n_embd, c->vocab_size,
		 c->max_seq_len);
}

static int gpt2_parse(const char *s, struct zn_arch *a)
{
	struct zn_gpt2_config *c = &a->g;
	if (sscanf(s, DESCRIPTION, &c->n_layer, &c->n_head, &c->n_embd, &c->vocab_size,
		   &c->max_seq_len) != 5)
		return zn_error(-EINVAL, "model description '%s' is damaged", s);
	return zn_gpt2_config_check(c);
}

static const char *gpt2_display_name(const struct zn_arch *a)
{
	(void)a;
	return "GPT-2";
}

static void gpt2_summary(const struct zn_arch *a, char *out, size_t len)
{
	const struct zn_gpt2_config *c = &a->g;
	snprintf(out, len, "GPT-2 %d layers, %d heads, %d channels, vocab %d", c->n_layer,
		 c->n_head, c->n_embd, c->vocab_size);
}

/* GPT-2's classifier is always wte. */
static bool gpt2_tied(const struct zn_arch *a)
{
	(void)a;
	return true;
}

ZN_ARCH_MODEL_CALLS(gpt2, g)

/* ---- weights files ----------------------------------------------------- */

/* Room for "transformer." and a tensor's name. */
#define FILE_NAME_MAX (ZN_PARAM_NAME_MAX + 16)

/* A tensor as Hugging Face's GPT-2 model.safetensors holds it: fp32, named
 * "transformer." and zinc's name; c_attn, c_proj and c_fc are Conv1D
 * there, stored transposed (C, OC); wte has the real vocabulary's rows
 * (the padded ones are zinc's own). */
static void file_tensor(const struct zn_gpt2_config *c, const struct zn_param_desc *d,
			char name[FILE_NAME_MAX], struct zn_st_tensor *t)
{
	uint64_t rows = (uint64_t)d->shape[0];
	if (strcmp(d->name, "wte.weight") == 0)
		rows = (uint64_t)c->vocab_size;
	snprintf(name, FILE_NAME_MAX, "transformer.%s", d->name);
	*t = (struct zn_st_tensor){ .name = name, .dtype = ZN_ST_F32, .ndim = d->ndim };
	if (d->hf_transposed) {
		t->shape[0] = (uint64_t)d->shape[1];
		t->shape[1] = rows;
	} else {
		t->shape[0] = rows;
		t->shape[1] = d->ndim == 2 ? (uint64_t)d->shape[1] : 0;
	}
	t->bytes = (d->ndim == 2 ? t->shape[0] * t->shape[1] : rows) * 4;
}

/* The tensors' descriptions, copied: the caller's may go. */
static struct zn_param_desc *copy_descs(const struct zn_param_desc *d, unsigned n)
{
	struct zn_param_desc *c = malloc((n ? n : 1) * sizeof(*c));
	if (c)
		memcpy(c, d, n * sizeof(*c));
	return c;
}

/* A Conv1D weight, zinc's (OC, IC) rows, leaves in blocks of whole rows:
 * a block of R rows is R columns of the file's (IC, OC) matrix, written
 * as IC runs of R values, each at its place in the file.  R is what
 * `chunk` elements hold (at least one row, at most the tensor). */
static uint64_t block_rows(const struct zn_param_desc *d, uint64_t chunk)
{
	const uint64_t ic = (uint64_t)d->shape[1], oc = (uint64_t)d->shape[0];
	return ZN_MIN(oc, ZN_MAX(chunk / ic, 1));
}

/* Elements of the writer's buffer: the largest block of rows and one run
 * of its column gathered (0: no Conv1D weight). */
static uint64_t block_elems(const struct zn_param_desc *d, unsigned n, uint64_t chunk)
{
	uint64_t most = 0;
	for (unsigned i = 0; i < n; i++)
		if (d[i].hf_transposed) {
			const uint64_t r = block_rows(&d[i], chunk);
			most = ZN_MAX(most, r * ((uint64_t)d[i].shape[1] + 1));
		}
	return most;
}

static uint64_t gpt2_writer_bytes(const struct zn_arch *a, const struct zn_param_desc *d,
				  unsigned n, uint64_t chunk)
{
	(void)a;
	return block_elems(d, n, chunk) * sizeof(float);
}

struct gpt2_writer {
	struct zn_arch_writer base;
	struct zn_gpt2_config c;
	struct zn_param_desc *d;
	unsigned n;
	uint64_t chunk;
	struct zn_st_writer *w;
	float *block;                  /* a Conv1D weight's rows on their way (block_rows) */
	uint64_t first, filled;        /* the block's first row; its elements in */
};

static void gpt2_writer_abort(struct zn_arch_writer *base)
{
	struct gpt2_writer *w = (struct gpt2_writer *)base;
	zn_st_writer_abort(w->w);
	free(w->block);
	free(w->d);
	free(w);
}

/* One model.safetensors (fp32 whatever `dtype`, with {"format": "pt"}, as
 * transformers' GPT2LMHeadModel reads it), written by place. */
static int gpt2_writer_begin(const struct zn_arch *a, const char *target,
			     const struct zn_param_desc *d, unsigned n, const char *dtype,
			     uint64_t chunk, struct zn_arch_writer **out)
{
	(void)dtype;
	struct gpt2_writer *w = calloc(1, sizeof(*w));
	struct zn_st_tensor *t = calloc(n ? n : 1, sizeof(*t));
	char (*names)[FILE_NAME_MAX] = calloc(n ? n : 1, sizeof(*names));
	const uint64_t block = block_elems(d, n, chunk);
	int rc = 0;
	if (w) {
		w->base.ops = &zn_arch_gpt2_ops;
		w->c = a->g;
		w->n = n;
		w->chunk = chunk;
		w->d = copy_descs(d, n);
		w->block = block ? malloc(block * sizeof(float)) : NULL;
	}
	if (!w || !t || !names || !w->d || (block && !w->block)) {
		rc = zn_error(-ENOMEM, "out of memory for the model's safetensors writer");
	} else {
		for (unsigned i = 0; i < n; i++)
			file_tensor(&a->g, &d[i], names[i], &t[i]);
		const struct zn_st_meta meta[1] = { { "format", "pt" } };
		rc = zn_st_writer_begin(target, t, n, meta, 1, &w->w);
	}
	free(t);
	free(names);
	if (!rc)
		*out = &w->base;
	else if (w)
		gpt2_writer_abort(&w->base);
	return rc;
}

/* The block's rows, transposed: run k of the file's row k holds column k
 * of the block, at the file's row k, column `first`. */
static int flush_block(struct gpt2_writer *w, unsigned i, const struct zn_param_desc *d)
{
	const uint64_t ic = (uint64_t)d->shape[1], oc = (uint64_t)d->shape[0];
	const uint64_t rows = w->filled / ic;
	float *run = w->block + block_rows(d, w->chunk) * ic;
	for (uint64_t k = 0; k < ic; k++) {
		for (uint64_t r = 0; r < rows; r++)
			run[r] = w->block[r * ic + k];
		int rc = zn_st_writer_put_at(w->w, i, (k * oc + w->first) * sizeof(float), run,
					     rows * sizeof(float));
		if (rc)
			return rc;
	}
	w->first += rows;
	w->filled = 0;
	return 0;
}

static int gpt2_writer_put(struct zn_arch_writer *base, unsigned i, uint64_t off,
			   const float *values, uint64_t n)
{
	struct gpt2_writer *w = (struct gpt2_writer *)base;
	const struct zn_param_desc *d = &w->d[i];
	if (!d->hf_transposed) {
		/* In place; wte's padded rows are zinc's own, not the file's. */
		char name[FILE_NAME_MAX];
		struct zn_st_tensor t;
		file_tensor(&w->c, d, name, &t);
		const uint64_t in_file = t.bytes / sizeof(float);
		return off >= in_file ? 0
				      : zn_st_writer_put_at(w->w, i, off * sizeof(float), values,
							    ZN_MIN(n, in_file - off) * sizeof(float));
	}
	const uint64_t ic = (uint64_t)d->shape[1], cap = block_rows(d, w->chunk) * ic;
	if (off == 0)
		w->first = w->filled = 0;
	while (n) {
		const uint64_t k = ZN_MIN(n, cap - w->filled);
		memcpy(w->block + w->filled, values, k * sizeof(float));
		w->filled += k;
		values += k;
		n -= k;
		off += k;
		int rc = w->filled == cap || off == d->numel ? flush_block(w, i, d) : 0;
		if (rc)
			return rc;
	}
	return 0;
}

static int gpt2_writer_end(struct zn_arch_writer *base)
{
	struct gpt2_writer *w = (struct gpt2_writer *)base;
	int rc = zn_st_writer_end(w->w);
	w->w = NULL;
	gpt2_writer_abort(base);
	return rc;
}

/* Pretrained GPT-2: a Hugging Face model.safetensors (names with or without
 * "transformer."; Conv1D weights transposed back), or llm.c's .bin. */
struct gpt2_reader {
	struct zn_arch_reader base;
	struct zn_gpt2_config c;
	struct zn_param_desc *d;
	unsigned n;
	char *path;
	struct zn_st_file *st;         /* model.safetensors */
	FILE *llmc;                    /* llm.c's .bin */
	uint64_t *llmc_off;            /* its byte offset of each tensor */
};

static void gpt2_reader_close(struct zn_arch_reader *base)
{
	struct gpt2_reader *r = (struct gpt2_reader *)base;
	zn_st_close(r->st);
	if (r->llmc)
		fclose(r->llmc);
	free(r->llmc_off);
	free(r->path);
	free(r->d);
	free(r);
}

/* Tensor d in the file, named "transformer." and zinc's name or zinc's
 * name alone (NULL: neither); *want is what the file must hold. */
static const struct zn_st_tensor *st_find(const struct gpt2_reader *r,
					  const struct zn_param_desc *d,
					  char name[FILE_NAME_MAX], struct zn_st_tensor *want)
{
	file_tensor(&r->c, d, name, want);
	const struct zn_st_tensor *x = zn_st_find(r->st, name);
	return x ? x : zn_st_find(r->st, d->name);
}

/* Every tensor is checked now, read when asked for. */
static int open_st(struct gpt2_reader *r)
{
	if (!(r->st = zn_st_open(r->path)))
		return -EINVAL;
	for (unsigned i = 0; i < r->n; i++) {
		char name[FILE_NAME_MAX];
		struct zn_st_tensor want;
		const struct zn_st_tensor *x = st_find(r, &r->d[i], name, &want);
		if (!x || x->dtype != ZN_ST_F32 || x->bytes != want.bytes)
			return zn_error(-EINVAL, "'%s': tensor '%s' is missing, not F32, or not "
						 "of the config's shape (%" PRIu64 " elements); "
						 "check the model section against the file",
					r->path, name, want.bytes / 4);
	}
	return 0;
}

/* llm.c's GPT-2 checkpoint (train_gpt2.c, gpt2_124M.bin): a 256-int32
 * header {20240326, version 3 = fp32, maxT, V, L, NH, C, Vp}, then every
 * parameter as one array per kind over all layers, in this order: wte
 * (Vp,C), wpe (maxT,C), ln1w, ln1b, qkvw (L,3C,C), qkvb, attprojw (L,C,C),
 * attprojb, ln2w, ln2b, fcw (L,4C,C), fcb, fcprojw (L,C,4C), fcprojb, lnfw,
 * lnfb.  Its matrices are (OC, C), zinc's layout.  Opened here with each
 * tensor's offset, read when the tensor is asked for. */
#define LLMC_MAGIC 20240326
static int open_llmc(struct gpt2_reader *r)
{
	const struct zn_gpt2_config *c = &r->c;
	const char *path = r->path;
	int32_t h[256];
	if (!(r->llmc = fopen(path, "rb")))
		return zn_error(-errno, "cannot open '%s': %s", path, strerror(errno));
	if (fread(h, 4, 256, r->llmc) != 256 || h[0] != LLMC_MAGIC)
		return zn_error(-EINVAL, "'%s' is not an llm.c GPT-2 checkpoint (magic %d)", path,
				LLMC_MAGIC);
	if (h[1] != 3)
		return zn_error(-EINVAL, "'%s': llm.c checkpoint version %d; only version 3 (fp32) "
					 "is read", path, h[1]);
	if (h[2] != c->max_seq_len || h[3] != c->vocab_size || h[4] != c->n_layer ||
	    h[5] != c->n_head || h[6] != c->n_embd || h[7] != c->padded_vocab)
		return zn_error(-EINVAL, "'%s' holds GPT-2 maxT %d, V %d, L %d, NH %d, C %d, "
					 "Vp %d; set the model section to match (seq_len, "
					 "vocab_size, n_layer, n_head, n_embd)",
				path, h[2], h[3], h[4], h[5], h[6], h[7]);
	const unsigned L = (unsigned)c->n_layer, K = ZN_GPT2_BLOCK_TENSORS;
	if (r->n != 2 + K * L + 2)
		return zn_error(-EINVAL, "'%s': %u tensors asked for, GPT-2 has %u", path, r->n,
				2 + K * L + 2);
	if (!(r->llmc_off = calloc(r->n, sizeof(uint64_t))))
		return zn_error(-ENOMEM, "out of memory");
	/* Tensor order: wte, wpe (0, 1); block l's kind k at 2 + K l + k; ln_f
	 * at 2 + K L. */
	uint64_t off = 256 * 4;
	for (unsigned e = 0; e < 2; e++) {
		r->llmc_off[e] = off;
		off += r->d[e].numel * 4;
	}
	for (unsigned k = 0; k < K; k++)
		for (unsigned l = 0; l < L; l++) {
			r->llmc_off[2 + K * l + k] = off;
			off += r->d[2 + K * l + k].numel * 4;
		}
	for (unsigned e = 0; e < 2; e++) {
		r->llmc_off[2 + K * L + e] = off;
		off += r->d[2 + K * L + e].numel * 4;
	}
	struct stat sb;
	if (fstat(fileno(r->llmc), &sb) != 0 || (uint64_t)sb.st_size < off)
		return zn_error(-EINVAL, "'%s' is truncated: shorter than its header's model "
					 "(%" PRIu64 " bytes)", path, off);
	return 0;
}

static int gpt2_reader_open(const struct zn_arch *a, const char *path,
			    const struct zn_param_desc *d, unsigned n, struct zn_arch_reader **out)
{
	struct gpt2_reader *r = calloc(1, sizeof(*r));
	if (!r || !(r->d = copy_descs(d, n)) || !(r->path = strdup(path))) {
		if (r)
			gpt2_reader_close(&r->base);
		return zn_error(-ENOMEM, "out of memory");
	}
	r->base.ops = &zn_arch_gpt2_ops;
	r->c = a->g;
	r->n = n;
	size_t len = strlen(path);
	int rc = len > 4 && strcmp(path + len - 4, ".bin") == 0 ? open_llmc(r) : open_st(r);
	if (rc)
		gpt2_reader_close(&r->base);
	else
		*out = &r->base;
	return rc;
}

/* Elements [off, off + n) of tensor i: from the .bin at its offset, or
 * from the mapped file -- a Conv1D weight's zinc element (r, k) is the
 * file's (k, r), gathered; wte's padded rows, not in the file, zeros. */
static int gpt2_reader_get(struct zn_arch_reader *base, unsigned i, uint64_t off, uint64_t n,
			   float *values)
{
	struct gpt2_reader *r = (struct gpt2_reader *)base;
	const struct zn_param_desc *d = &r->d[i];
	if (r->llmc) {
		int rc = zn_io_pread_all(fileno(r->llmc), values, n * sizeof(float),
					 r->llmc_off[i] + off * sizeof(float));
		return rc ? zn_error(rc, "cannot read tensor '%s' from '%s'", d->name, r->path) : 0;
	}
	char name[FILE_NAME_MAX];
	struct zn_st_tensor want;
	const struct zn_st_tensor *x = st_find(r, d, name, &want);
	if (d->hf_transposed) {
		const uint64_t ic = (uint64_t)d->shape[1], oc = (uint64_t)d->shape[0];
		const float *src = x->data;
		for (uint64_t e = off; e < off + n; e++)
			values[e - off] = src[(e % ic) * oc + e / ic];
		return 0;
	}
	const uint64_t in_file = x->bytes / sizeof(float);
	const uint64_t got = off < in_file ? ZN_MIN(n, in_file - off) : 0;
	memset(values + got, 0, (n - got) * sizeof(float));
	return got ? zn_st_read(x, off * sizeof(float), got * sizeof(float), values) : 0;
}

const struct zn_arch_ops zn_arch_gpt2_ops = {
	.name = "gpt2",
	.type = ZN_MODEL_GPT2,
	.from_config = gpt2_from_config,
	.describe = gpt2_describe,
	.parse = gpt2_parse,
	.display_name = gpt2_display_name,
	.summary = gpt2_summary,
	ZN_ARCH_MODEL_OPS(gpt2),
	.weights_name = "model.safetensors",
	.writer_begin = gpt2_writer_begin,
	.writer_put = gpt2_writer_put,
	.writer_end = gpt2_writer_end,
	.writer_abort = gpt2_writer_abort,
	.writer_bytes = gpt2_writer_bytes,
	.reader_open = gpt2_reader_open,
	.reader_get = gpt2_reader_get,
	.reader_close = gpt2_reader_close,
};
