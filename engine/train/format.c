/* What a checkpoint's files hold, for the save, the loaders and the
 * consolidation alike: the optimizer states' names, metadata carried as
 * hex strings, and the model's own files -- GPT-2's Hugging Face
 * model.safetensors (fp32; Conv1D weights transposed, the real
 * vocabulary's rows) or a Llama's Hugging Face folder -- written through
 * one model writer. */
#include "zn_common.h"

#include "train/internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const char *const tr_state_suffix[3] = { "master", "exp_avg", "exp_avg_sq" };

/* Checkpoint metadata carries small binary structs (data position, loss
 * scaler) as hex strings. */
void tr_hex_encode(const void *p, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		snprintf(out + 2 * i, 3, "%02x", ((const uint8_t *)p)[i]);
}

int tr_hex_decode(const char *hex, void *p, size_t n)
{
	if (!hex || strlen(hex) != 2 * n)
		return -1;
	for (size_t i = 0; i < n; i++) {
		unsigned b;
		if (sscanf(hex + 2 * i, "%2x", &b) != 1)
			return -1;
		((uint8_t *)p)[i] = (uint8_t)b;
	}
	return 0;
}

/* The shape a tensor has in model.safetensors: Hugging Face's.  c_attn,
 * c_proj and c_fc are Conv1D there, stored transposed (C, OC); wte has the
 * real vocabulary's rows (the padded ones are zinc's own). */
void tr_hf_shape(const struct zn_param_desc *d, const struct zn_gpt2_config *c, uint64_t shape[2],
		 uint64_t *bytes)
{
	uint64_t rows = (uint64_t)d->shape[0];
	if (strcmp(d->name, "wte.weight") == 0)
		rows = (uint64_t)c->vocab_size;
	if (d->hf_transposed) {
		shape[0] = (uint64_t)d->shape[1];
		shape[1] = rows;
	} else {
		shape[0] = rows;
		shape[1] = d->ndim == 2 ? (uint64_t)d->shape[1] : 0;
	}
	*bytes = (d->ndim == 2 ? shape[0] * shape[1] : rows) * 4;
}

/* (R, C) into (C, R). */
void tr_transpose(const float *src, float *dst, int64_t R, int64_t C)
{
	for (int64_t r = 0; r < R; r++)
		for (int64_t k = 0; k < C; k++)
			dst[k * R + r] = src[r * C + k];
}

static void model_writer_free(struct model_writer *w)
{
	free(w->mt);
	free(w->names);
	free(w->tbuf);
	w->mt = NULL;
	w->names = NULL;
	w->tbuf = NULL;
}

int tr_model_writer_begin(struct model_writer *w, const struct zn_arch *a,
			  const struct tensor_table *tab, const char *dir, const char *file,
			  const char *dtype)
{
	const unsigned nt = tab->nt;
	memset(w, 0, sizeof(*w));
	w->tab = tab;
	w->mt = calloc(nt ? nt : 1, sizeof(*w->mt));
	w->names = calloc(nt ? nt : 1, sizeof(*w->names));
	w->tbuf = malloc(ZN_MAX(tab->largest, 1) * 4);
	if (!w->mt || !w->names || !w->tbuf) {
		model_writer_free(w);
		return zn_error(-ENOMEM, "out of memory for the model's files");
	}
	int rc;
	if (a->llama) {
		if (mkdir(dir, 0777) != 0 && errno != EEXIST)
			rc = zn_error(-errno, "cannot make directory '%s': %s", dir, strerror(errno));
		else
			rc = zn_hf_writer_begin(dir, &a->l, tab->d, nt, dtype,
						ZN_HF_DEFAULT_SHARD_BYTES, &w->hf);
	} else {
		for (unsigned i = 0; i < nt; i++) {
			snprintf(w->names[i], sizeof(w->names[0]), "transformer.%s", tab->d[i].name);
			w->mt[i] = (struct zn_st_tensor){ .name = w->names[i], .dtype = ZN_ST_F32,
							  .ndim = tab->d[i].ndim };
			tr_hf_shape(&tab->d[i], &a->g, w->mt[i].shape, &w->mt[i].bytes);
		}
		const struct zn_st_meta meta[1] = { { "format", "pt" } };
		rc = zn_st_writer_begin(file, w->mt, nt, meta, 1, &w->st);
	}
	if (rc)
		model_writer_free(w);
	return rc;
}

/* Tensor i (in table order, after tensor i - 1): its fp32 master. */
int tr_model_writer_put(struct model_writer *w, unsigned i, const float *master)
{
	const struct zn_param_desc *d = &w->tab->d[i];
	if (d->hf_transposed) {
		tr_transpose(master, w->tbuf, d->shape[0], d->shape[1]);
		master = w->tbuf;
	}
	return w->hf ? zn_hf_writer_put(w->hf, master)
		     : zn_st_writer_put(w->st, master, w->mt[i].bytes);
}

int tr_model_writer_end(struct model_writer *w)
{
	int rc = w->hf ? zn_hf_writer_end(w->hf) : zn_st_writer_end(w->st);
	w->hf = NULL;
	w->st = NULL;
	model_writer_free(w);
	return rc;
}

void tr_model_writer_abort(struct model_writer *w)
{
	zn_st_writer_abort(w->st);
	zn_hf_writer_abort(w->hf);
	w->hf = NULL;
	w->st = NULL;
	model_writer_free(w);
}
