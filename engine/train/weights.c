/* Starting weights: a checkpoint to resume (whole or in ranks' parts), a
 * Hugging Face GPT-2 model.safetensors or Llama folder, an llm.c file, or
 * initialisation; every tensor made once and sent where it lives. */
#include "zn_common.h"

#include "train/internal.h"
#include "zero/zero.h"

#include <glob.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Every tensor once, in order: made from its source, then sent where it
 * lives (device, home, host arrays, NVMe sub-groups). */
int tr_materialize(struct zn_trainer *t)
{
	struct groups g = { 0 };
	float *scratch[3] = { NULL, NULL, NULL };
	/* Whole tensors are made in scratch arrays unless the host arrays
	 * hold whole tensors (one rank, states in host memory). */
	const bool whole = !t->nvme_opt && t->own_total == t->total;
	/* Without a checkpoint the moments start at zero: no arrays for
	 * them (a large embedding's would be gigabytes), zeros are written. */
	const bool fresh = !t->src.ckpt && !t->src.shards;
	int rc = 0;
	if (t->nvme_opt && (rc = tr_groups_open(&g, t, true)))
		goto out;
	for (int k = 0; k < (fresh ? 1 : 3) && !rc && !whole; k++)
		if (!(scratch[k] = malloc(t->largest * 4)))
			rc = zn_error(-ENOMEM, "out of memory");
	for (unsigned i = 0; i < t->nt && !rc; i++) {
		struct tstate *s = &t->t[i];
		size_t bytes = s->d.numel * 4, obytes = s->nown * 4;
		float *a[3] = { s->master, s->m, s->v };
		if (!whole)
			memcpy(a, scratch, sizeof(a));
		if (fresh) /* host arrays come zeroed (calloc) */
			a[1] = a[2] = NULL;
		if ((rc = tr_tensor_from_sources(t, i, a[0], a[1], a[2])))
			break;
		/* This rank's part of the states (NULL: zeros). */
		float *own[3] = { a[0] + s->lo, a[1] ? a[1] + s->lo : NULL,
				  a[2] ? a[2] + s->lo : NULL };
		if (!whole && !t->nvme_opt) {
			memcpy(s->master, own[0], obytes);
			if (!fresh) {
				memcpy(s->m, own[1], obytes);
				memcpy(s->v, own[2], obytes);
			}
		}
		if (!s->resident) {
			rc = tr_home_put(t, s, 0, own[0], s->nown);
		} else if (!(rc = tr_to_device(t, s->dparam, a[0], bytes))) {
			t->stats.h2d_bytes += bytes;
			rc = tr_round_to_dtype(t, s->dparam, s->d.numel);
		}
		if (!rc && t->device_opt && s->nown &&
		    !(rc = tr_to_device(t, s->dmaster, own[0], obytes))) {
			if (fresh && !(rc = zn_device_memset(t->dev, s->dm, 0, obytes, NULL)))
				rc = zn_device_memset(t->dev, s->dv, 0, obytes, NULL);
			else if (!fresh && !(rc = tr_to_device(t, s->dm, own[1], obytes)))
				rc = tr_to_device(t, s->dv, own[2], obytes);
		}
		if (!rc && t->nvme_opt)
			rc = tr_groups_move(&g, s, own, true);
	}
	if (!rc && t->homes.sw)
		rc = zn_swapper_flush(t->homes.sw);
out:
	if (t->nvme_opt) {
		int r = tr_groups_close(&g); /* the last group's write */
		rc = rc ? rc : r;
	}
	for (int k = 0; k < 3; k++)
		free(scratch[k]);
	return rc;
}

/* The optimizer files of a checkpoint: optimizer.safetensors (whole
 * tensors), or optimizer-RRRRR-of-WWWWW.safetensors for W ranks' parts.
 * Opens them into t->src.ckpt or t->src.shards. */
int tr_open_optimizer_files(struct zn_trainer *t, const char *dir)
{
	char path[4400];
	snprintf(path, sizeof(path), "%s/optimizer.safetensors", dir);
	if (access(path, F_OK) == 0) {
		t->src.ckpt = zn_st_open(path);
		return t->src.ckpt ? 0 : -EINVAL;
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
	t->src.shards = calloc((size_t)W, sizeof(*t->src.shards));
	if (!t->src.shards)
		return zn_error(-ENOMEM, "out of memory");
	t->src.world = W;
	for (int r = 0; r < W; r++) {
		snprintf(path, sizeof(path), "%s/optimizer-%05d-of-%05d.safetensors", dir, r, W);
		if (access(path, F_OK) != 0)
			return zn_error(-ENOENT, "checkpoint '%s' was saved by %d ranks but the part "
						 "of rank %d (%s) is missing: the checkpoint is "
						 "incomplete; resume from an earlier one", dir, W, r,
					path);
		if (!(t->src.shards[r] = zn_st_open(path)))
			return -EINVAL;
	}
	return 0;
}

/* The first `nstates` of each tensor's states (master, exp_avg,
 * exp_avg_sq) in the opened optimizer files: every part present, fp32, of
 * its length. */
int tr_check_states(const struct zn_trainer *t, const char *dir, int nstates)
{
	const int W = t->src.ckpt ? 1 : t->src.world;
	for (unsigned i = 0; i < t->nt; i++)
		for (int k = 0; k < nstates; k++) {
			char name[ZN_PARAM_NAME_MAX + 24];
			snprintf(name, sizeof(name), "%s.%s", t->t[i].d.name, tr_state_suffix[k]);
			for (int r = 0; r < W; r++) {
				uint64_t lo, len;
				zn_zero_part(t->t[i].d.numel, W, r, &lo, &len);
				if (!len)
					continue;
				const struct zn_st_tensor *x =
					zn_st_find(t->src.ckpt ? t->src.ckpt : t->src.shards[r], name);
				if (!x || x->dtype != ZN_ST_F32 || x->bytes != len * 4)
					return zn_error(-EINVAL, "checkpoint '%s': tensor '%s'%s is "
								 "missing or has the wrong shape", dir,
							name, W > 1 ? " of a rank's part" : "");
			}
		}
	return 0;
}

/* Resuming: the checkpoint's metadata now (step, data position, loss
 * scaler: a mismatch fails before anything is built), its tensors later,
 * one at a time, from the mapped files.  A checkpoint of another number of
 * ranks is re-partitioned: every tensor is put together from the parts
 * that cover it and this rank takes its own. */
int tr_open_checkpoint(struct zn_trainer *t, const char *dir)
{
	char shape[512];
	int rc = tr_open_optimizer_files(t, dir);
	if (rc)
		return rc;
	struct zn_st_file *f = t->src.ckpt ? t->src.ckpt : t->src.shards[0];
	tr_model_shape_string(t, shape, sizeof(shape));
	const char *ms = zn_st_metadata(f, "zinc.model");
	const char *st = zn_st_metadata(f, "zinc.step");
	const char *hex = zn_st_metadata(f, "zinc.data_pos");
	const char *up = zn_st_metadata(f, "zinc.updates");
	const char *sc = zn_st_metadata(f, "zinc.loss_scaler");
	struct zn_data_pos pos;
	if (!ms || strcmp(ms, shape) != 0) {
		rc = zn_error(-EINVAL, "checkpoint '%s' is of a different model (%s) than the config "
				       "(%s); point checkpoint.dir elsewhere or set "
				       "checkpoint.resume: false", dir, ms ? ms : "unknown", shape);
	} else if (!st || tr_hex_decode(hex, &pos, sizeof(pos))) {
		rc = zn_error(-EINVAL, "checkpoint '%s' lacks its step or data position", dir);
	} else if (!up || tr_hex_decode(sc, &t->scaler, sizeof(t->scaler))) {
		rc = zn_error(-EINVAL, "checkpoint '%s' lacks its update count or loss scaler", dir);
	}
	/* The parts of one save: the same step in every one. */
	for (int r = 1; r < t->src.world && !rc; r++) {
		const char *sr = zn_st_metadata(t->src.shards[r], "zinc.step");
		if (!sr || strcmp(sr, st) != 0)
			rc = zn_error(-EINVAL, "checkpoint '%s': the part of rank %d is of step %s, "
					       "rank 0's of step %s: the checkpoint is damaged; "
					       "resume from an earlier one", dir, r,
					sr ? sr : "unknown", st);
	}
	/* Every tensor (or part) present with its shape, before anything is
	 * built. */
	if (!rc)
		rc = tr_check_states(t, dir, 3);
	if (!rc && t->data.train)
		rc = zn_data_seek(t->data.train, &pos);
	if (rc)
		return rc;
	t->step = strtoull(st, NULL, 10);
	t->updates = strtoull(up, NULL, 10);
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
static int open_llmc(struct zn_trainer *t, const char *path)
{
	FILE *f = fopen(path, "rb");
	int32_t h[256];
	if (!f)
		return zn_error(-errno, "cannot open '%s': %s", path, strerror(errno));
	if (fread(h, 4, 256, f) != 256 || h[0] != LLMC_MAGIC) {
		fclose(f);
		return zn_error(-EINVAL, "'%s' is not an llm.c GPT-2 checkpoint (magic %d)", path,
				LLMC_MAGIC);
	}
	const struct zn_gpt2_config *c = &t->arch.g;
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
	t->src.llmc_off = calloc(t->nt, sizeof(uint64_t));
	if (!t->src.llmc_off) {
		fclose(f);
		return zn_error(-ENOMEM, "out of memory");
	}
	/* The 12 per-layer kinds run over all layers before the next kind; their
	 * order is zinc's tensor order within a block. */
	const unsigned L = (unsigned)c->n_layer;
	uint64_t off = 256 * 4;
	for (unsigned e = 0; e < 2; e++) { /* wte, wpe */
		t->src.llmc_off[t->first[0] + e] = off;
		off += t->t[t->first[0] + e].d.numel * 4;
	}
	for (unsigned k = 0; k < 12; k++)
		for (unsigned l = 0; l < L; l++) {
			t->src.llmc_off[t->first[l + 1] + k] = off;
			off += t->t[t->first[l + 1] + k].d.numel * 4;
		}
	for (unsigned e = 0; e < 2; e++) { /* ln_f */
		t->src.llmc_off[t->first[L + 1] + e] = off;
		off += t->t[t->first[L + 1] + e].d.numel * 4;
	}
	struct stat sb;
	if (fstat(fileno(f), &sb) != 0 || (uint64_t)sb.st_size < off) {
		fclose(f);
		return zn_error(-EINVAL, "'%s' is truncated: shorter than its header's model "
					 "(%" PRIu64 " bytes)", path, off);
	}
	t->src.llmc = f;
	return 0;
}

/* Fine-tuning: a Hugging Face GPT-2 model.safetensors (names with or
 * without "transformer."; Conv1D weights transposed back), or llm.c's
 * .bin checkpoint.  Every tensor is checked now, read when made. */
int tr_open_pretrained(struct zn_trainer *t, const char *path)
{
	size_t n = strlen(path);
	t->src.path = path;
	if (t->arch.llama) {
		/* A Hugging Face folder: every tensor checked (present, shape,
		 * dtype) now; read from the mapped shards when made. */
		struct zn_param_desc *descs = tr_all_descs(t);
		int rc = descs ? zn_hf_open(path, &t->src.hf) : -ENOMEM;
		if (!rc)
			rc = zn_hf_check(t->src.hf, descs, t->nt);
		free(descs);
		return rc;
	}
	if (n > 4 && strcmp(path + n - 4, ".bin") == 0)
		return open_llmc(t, path);
	struct zn_st_file *f = zn_st_open(path);
	if (!f)
		return -EINVAL;
	for (unsigned i = 0; i < t->nt; i++) {
		struct tstate *s = &t->t[i];
		char name[ZN_PARAM_NAME_MAX + 16];
		snprintf(name, sizeof(name), "transformer.%s", s->d.name);
		const struct zn_st_tensor *x = zn_st_find(f, name);
		if (!x)
			x = zn_st_find(f, s->d.name);
		uint64_t shape[2], want;
		tr_hf_shape(s, &t->arch.g, shape, &want);
		if (!x || x->dtype != ZN_ST_F32 || x->bytes != want) {
			zn_st_close(f);
			return zn_error(-EINVAL, "'%s': tensor '%s' is missing, not F32, or not of the "
						 "config's shape (%" PRIu64 " elements); check the "
						 "model section against the file",
					path, name, want / 4);
		}
	}
	t->src.st = f;
	return 0;
}

void tr_close_sources(struct zn_trainer *t)
{
	for (int r = 0; r < t->src.world && t->src.shards; r++)
		zn_st_close(t->src.shards[r]);
	free(t->src.shards);
	t->src.shards = NULL;
	t->src.world = 0;
	zn_hf_close(t->src.hf);
	t->src.hf = NULL;
	zn_st_close(t->src.ckpt);
	zn_st_close(t->src.st);
	if (t->src.llmc)
		fclose(t->src.llmc);
	free(t->src.llmc_off);
	t->src.ckpt = t->src.st = NULL;
	t->src.llmc = NULL;
	t->src.llmc_off = NULL;
}

/* Tensor i's starting states: a resumed checkpoint's, or pretrained (or
 * freshly initialised) weights with zero moments. */
int tr_tensor_from_sources(struct zn_trainer *t, unsigned i, float *master, float *m,
			       float *v)
{
	struct tstate *s = &t->t[i];
	size_t bytes = s->d.numel * 4;
	if (t->src.ckpt || t->src.shards) {
		float *a[3] = { master, m, v };
		int W = t->src.ckpt ? 1 : t->src.world;
		for (int k = 0; k < 3; k++) {
			char name[ZN_PARAM_NAME_MAX + 24];
			snprintf(name, sizeof(name), "%s.%s", s->d.name, tr_state_suffix[k]);
			for (int r = 0; r < W; r++) {
				uint64_t lo, len;
				zn_zero_part(s->d.numel, W, r, &lo, &len);
				if (len)
					memcpy(a[k] + lo,
					       zn_st_find(t->src.ckpt ? t->src.ckpt
								      : t->src.shards[r], name)->data,
					       len * 4);
			}
		}
		return 0;
	}
	if (m)
		memset(m, 0, bytes);
	if (v)
		memset(v, 0, bytes);
	if (t->src.hf)
		return zn_hf_read_f32(t->src.hf, s->d.name, master);
	if (t->src.llmc) {
		if (fseeko(t->src.llmc, (off_t)t->src.llmc_off[i], SEEK_SET) != 0 ||
		    fread(master, 4, s->d.numel, t->src.llmc) != s->d.numel)
			return zn_error(-EIO, "cannot read tensor '%s' from '%s'", s->d.name,
					t->src.path);
		return 0;
	}
	if (t->src.st) {
		char name[ZN_PARAM_NAME_MAX + 16];
		snprintf(name, sizeof(name), "transformer.%s", s->d.name);
		const struct zn_st_tensor *x = zn_st_find(t->src.st, name);
		if (!x)
			x = zn_st_find(t->src.st, s->d.name);
		if (s->d.hf_transposed) {
			tr_transpose(x->data, master, s->d.shape[1], s->d.shape[0]);
		} else {
			memset(master, 0, bytes);
			memcpy(master, x->data, x->bytes);
		}
		return 0;
	}
	zn_arch_init_tensor(&t->arch, &s->d, t->cfg.data.seed, i, master);
	return 0;
}
