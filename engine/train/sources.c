/* Where starting weights are read from (struct sources): a checkpoint's
 * optimizer files (whole, or the parts of the ranks that saved it), a
 * Hugging Face GPT-2 model.safetensors or Llama folder, or llm.c's GPT-2
 * .bin; without any, each tensor is initialised.  Every tensor is checked
 * when its source is opened and read, whole, when asked for: the trainer
 * (weights.c) and the consolidation read through here alike. */
#include "zn_common.h"

#include "train/internal.h"
#include "zero/zero.h"

#include <glob.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The checkpoint's parts: one file, or one per rank that saved it. */
static int nparts(const struct sources *src)
{
	return src->ckpt ? 1 : src->world;
}

static struct zn_st_file *part_file(const struct sources *src, int r)
{
	return src->ckpt ? src->ckpt : src->shards[r];
}

struct zn_st_file *tr_sources_meta(const struct sources *src)
{
	return part_file(src, 0);
}

/* The optimizer files of a checkpoint: optimizer.safetensors (whole
 * tensors), or optimizer-RRRRR-of-WWWWW.safetensors for W ranks' parts. */
int tr_sources_open_checkpoint(struct sources *src, const char *dir)
{
	char path[4400];
	snprintf(path, sizeof(path), "%s/optimizer.safetensors", dir);
	if (access(path, F_OK) == 0) {
		src->ckpt = zn_st_open(path);
		return src->ckpt ? 0 : -EINVAL;
	}
	glob_t g;
	snprintf(path, sizeof(path), "%s/optimizer-00000-of-*.safetensors", dir);
	int W = 0;
	if (glob(path, 0, NULL, &g) == 0) {
		const char *of = g.gl_pathc == 1 ? strstr(g.gl_pathv[0] + strlen(dir), "-of-") : NULL;
		W = of ? atoi(of + 4) : 0;
		globfree(&g);
	}
	if (W < 1)
		return zn_error(-EINVAL, "checkpoint '%s' has neither optimizer.safetensors nor one "
					 "set of optimizer-RRRRR-of-WWWWW.safetensors parts; point "
					 "checkpoint.dir elsewhere or set checkpoint.resume: false",
				dir);
	src->shards = calloc((size_t)W, sizeof(*src->shards));
	if (!src->shards)
		return zn_error(-ENOMEM, "out of memory");
	src->world = W;
	for (int r = 0; r < W; r++) {
		snprintf(path, sizeof(path), "%s/optimizer-%05d-of-%05d.safetensors", dir, r, W);
		if (access(path, F_OK) != 0)
			return zn_error(-ENOENT, "checkpoint '%s' was saved by %d ranks but the part "
						 "of rank %d (%s) is missing: the checkpoint is "
						 "incomplete; resume from an earlier one", dir, W, r,
					path);
		if (!(src->shards[r] = zn_st_open(path)))
			return -EINVAL;
	}
	return 0;
}

/* The first `nstates` of each tensor's states (master, exp_avg,
 * exp_avg_sq) in the opened optimizer files: every part present, fp32, of
 * its length. */
int tr_sources_check_states(const struct sources *src, const char *dir, int nstates)
{
	const int W = nparts(src);
	for (unsigned i = 0; i < src->tab->nt; i++)
		for (int k = 0; k < nstates; k++) {
			const struct zn_param_desc *d = &src->tab->d[i];
			char name[ZN_PARAM_NAME_MAX + 24];
			snprintf(name, sizeof(name), "%s.%s", d->name, tr_state_suffix[k]);
			for (int r = 0; r < W; r++) {
				uint64_t lo, len;
				zn_zero_part(d->numel, W, r, &lo, &len);
				if (!len)
					continue;
				const struct zn_st_tensor *x = zn_st_find(part_file(src, r), name);
				if (!x || x->dtype != ZN_ST_F32 || x->bytes != len * 4)
					return zn_error(-EINVAL, "checkpoint '%s': tensor '%s'%s is "
								 "missing or has the wrong shape", dir,
							name, W > 1 ? " of a rank's part" : "");
			}
		}
	return 0;
}

/* llm.c's GPT-2 checkpoint (train_gpt2.c, gpt2_124M.bin): a 256-int32
 * header {20240326, version 3 = fp32, maxT, V, L, NH, C, Vp}, then every
 * parameter as one array per kind over all layers, in this order: wte
 * (Vp,C), wpe (maxT,C), ln1w, ln1b, qkvw (L,3C,C), qkvb, attprojw (L,C,C),
 * attprojb, ln2w, ln2b, fcw (L,4C,C), fcb, fcprojw (L,C,4C), fcprojb, lnfw,
 * lnfb.  Its matrices are (OC, C), zinc's layout.  Opened here with each
 * tensor's offset, read when the tensor is made. */
#define LLMC_MAGIC 20240326
static int open_llmc(struct sources *src, const char *path)
{
	const struct tensor_table *tab = src->tab;
	FILE *f = fopen(path, "rb");
	int32_t h[256];
	if (!f)
		return zn_error(-errno, "cannot open '%s': %s", path, strerror(errno));
	if (fread(h, 4, 256, f) != 256 || h[0] != LLMC_MAGIC) {
		fclose(f);
		return zn_error(-EINVAL, "'%s' is not an llm.c GPT-2 checkpoint (magic %d)", path,
				LLMC_MAGIC);
	}
	const struct zn_gpt2_config *c = &src->arch->g;
	if (h[1] != 3) {
		fclose(f);
		return zn_error(-EINVAL, "'%s': llm.c checkpoint version %d; only version 3 (fp32) "
					 "is read", path, h[1]);
	}
	if (h[2] != c->max_seq_len || h[3] != c->vocab_size || h[4] != c->n_layer ||
	    h[5] != c->n_head || h[6] != c->n_embd || h[7] != c->padded_vocab) {
		fclose(f);
		return zn_error(-EINVAL, "'%s' holds GPT-2 maxT %d, V %d, L %d, NH %d, C %d, Vp %d; "
					 "set the model section to match (seq_len, vocab_size, "
					 "n_layer, n_head, n_embd)",
				path, h[2], h[3], h[4], h[5], h[6], h[7]);
	}
	uint64_t *at = calloc(tab->nt, sizeof(uint64_t));
	if (!at) {
		fclose(f);
		return zn_error(-ENOMEM, "out of memory");
	}
	/* The 12 per-layer kinds run over all layers before the next kind; their
	 * order is zinc's tensor order within a block. */
	const unsigned L = (unsigned)c->n_layer;
	uint64_t off = 256 * 4;
	for (unsigned e = 0; e < 2; e++) { /* wte, wpe */
		at[tab->first[0] + e] = off;
		off += tab->d[tab->first[0] + e].numel * 4;
	}
	for (unsigned k = 0; k < 12; k++)
		for (unsigned l = 0; l < L; l++) {
			at[tab->first[l + 1] + k] = off;
			off += tab->d[tab->first[l + 1] + k].numel * 4;
		}
	for (unsigned e = 0; e < 2; e++) { /* ln_f */
		at[tab->first[L + 1] + e] = off;
		off += tab->d[tab->first[L + 1] + e].numel * 4;
	}
	struct stat sb;
	if (fstat(fileno(f), &sb) != 0 || (uint64_t)sb.st_size < off) {
		fclose(f);
		free(at);
		return zn_error(-EINVAL, "'%s' is truncated: shorter than its header's model "
					 "(%" PRIu64 " bytes)", path, off);
	}
	src->llmc = f;
	src->llmc_off = at;
	return 0;
}

/* A GPT-2 tensor in a Hugging Face model.safetensors, named with or
 * without "transformer."; `full` gets the first name. */
static const struct zn_st_tensor *find_gpt2(struct zn_st_file *f, const char *name,
					    char full[ZN_PARAM_NAME_MAX + 16])
{
	snprintf(full, ZN_PARAM_NAME_MAX + 16, "transformer.%s", name);
	const struct zn_st_tensor *x = zn_st_find(f, full);
	return x ? x : zn_st_find(f, name);
}

/* Fine-tuning: a Llama's Hugging Face folder, a Hugging Face GPT-2
 * model.safetensors (Conv1D weights transposed back when read), or
 * llm.c's .bin checkpoint.  Every tensor is checked now (present, dtype,
 * shape), read when made. */
int tr_sources_open_pretrained(struct sources *src, const char *path)
{
	const struct tensor_table *tab = src->tab;
	size_t n = strlen(path);
	src->path = path;
	if (src->arch->llama) {
		int rc = zn_hf_open(path, &src->hf);
		return rc ? rc : zn_hf_check(src->hf, tab->d, tab->nt);
	}
	if (n > 4 && strcmp(path + n - 4, ".bin") == 0)
		return open_llmc(src, path);
	struct zn_st_file *f = zn_st_open(path);
	if (!f)
		return -EINVAL;
	for (unsigned i = 0; i < tab->nt; i++) {
		char name[ZN_PARAM_NAME_MAX + 16];
		const struct zn_st_tensor *x = find_gpt2(f, tab->d[i].name, name);
		uint64_t shape[2], want;
		tr_hf_shape(&tab->d[i], &src->arch->g, shape, &want);
		if (!x || x->dtype != ZN_ST_F32 || x->bytes != want) {
			zn_st_close(f);
			return zn_error(-EINVAL, "'%s': tensor '%s' is missing, not F32, or not of the "
						 "config's shape (%" PRIu64 " elements); check the "
						 "model section against the file",
					path, name, want / 4);
		}
	}
	src->st = f;
	return 0;
}

void tr_sources_close(struct sources *src)
{
	for (int r = 0; r < src->world && src->shards; r++)
		zn_st_close(src->shards[r]);
	free(src->shards);
	src->shards = NULL;
	src->world = 0;
	zn_hf_close(src->hf);
	src->hf = NULL;
	zn_st_close(src->ckpt);
	zn_st_close(src->st);
	if (src->llmc)
		fclose(src->llmc);
	free(src->llmc_off);
	src->ckpt = src->st = NULL;
	src->llmc = NULL;
	src->llmc_off = NULL;
}

/* Tensor i's starting states, whole: a checkpoint's (put together from
 * the parts that cover it; m or v NULL: not wanted), or pretrained (or
 * freshly initialised) weights with zero moments (m, v NULL: none). */
int tr_sources_read(const struct sources *src, unsigned i, float *master, float *m, float *v)
{
	const struct zn_param_desc *d = &src->tab->d[i];
	size_t bytes = d->numel * 4;
	if (src->ckpt || src->shards) {
		float *a[3] = { master, m, v };
		const int W = nparts(src);
		for (int k = 0; k < 3; k++) {
			char name[ZN_PARAM_NAME_MAX + 24];
			snprintf(name, sizeof(name), "%s.%s", d->name, tr_state_suffix[k]);
			for (int r = 0; r < W && a[k]; r++) {
				uint64_t lo, len;
				zn_zero_part(d->numel, W, r, &lo, &len);
				if (len)
					memcpy(a[k] + lo, zn_st_find(part_file(src, r), name)->data,
					       len * 4);
			}
		}
		return 0;
	}
	if (m)
		memset(m, 0, bytes);
	if (v)
		memset(v, 0, bytes);
	if (src->hf)
		return zn_hf_read_f32(src->hf, d->name, master);
	if (src->llmc) {
		if (fseeko(src->llmc, (off_t)src->llmc_off[i], SEEK_SET) != 0 ||
		    fread(master, 4, d->numel, src->llmc) != d->numel)
			return zn_error(-EIO, "cannot read tensor '%s' from '%s'", d->name,
					src->path);
		return 0;
	}
	if (src->st) {
		char name[ZN_PARAM_NAME_MAX + 16];
		const struct zn_st_tensor *x = find_gpt2(src->st, d->name, name);
		if (d->hf_transposed) {
			tr_transpose(x->data, master, d->shape[1], d->shape[0]);
		} else {
			memset(master, 0, bytes);
			memcpy(master, x->data, x->bytes);
		}
		return 0;
	}
	zn_arch_init_tensor(src->arch, d, src->seed, i, master);
	return 0;
}
