/* What a checkpoint's files hold, for the save and the loaders alike: the
 * tensors' Hugging Face shapes, the optimizer states' names and metadata
 * carried as hex strings. */
#include "zn_common.h"

#include "train/internal.h"

#include <stdlib.h>
#include <string.h>

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
void tr_hf_shape(const struct tstate *s, const struct zn_gpt2_config *c, uint64_t shape[2],
		     uint64_t *bytes)
{
	uint64_t rows = (uint64_t)s->d.shape[0];
	if (strcmp(s->d.name, "wte.weight") == 0)
		rows = (uint64_t)c->vocab_size;
	if (s->d.hf_transposed) {
		shape[0] = (uint64_t)s->d.shape[1];
		shape[1] = rows;
	} else {
		shape[0] = rows;
		shape[1] = s->d.ndim == 2 ? (uint64_t)s->d.shape[1] : 0;
	}
	*bytes = (s->d.ndim == 2 ? shape[0] * shape[1] : rows) * 4;
}

void tr_transpose(const float *src, float *dst, int64_t R, int64_t C)
{
	for (int64_t r = 0; r < R; r++)
		for (int64_t k = 0; k < C; k++)
			dst[k * R + r] = src[r * C + k];
}

void tr_model_shape_string(const struct zn_trainer *t, char *out, size_t len)
{
	zn_arch_describe(&t->arch, out, len);
}

/* The tensors' descriptions in model order (for the Hugging Face folder
 * reader and writer); NULL + last error. */
struct zn_param_desc *tr_all_descs(const struct zn_trainer *t)
{
	struct zn_param_desc *d = calloc(t->nt ? t->nt : 1, sizeof(*d));
	if (!d) {
		zn_set_error("out of memory");
		return NULL;
	}
	for (unsigned i = 0; i < t->nt; i++)
		d[i] = t->t[i].d;
	return d;
}

const char *const tr_state_suffix[3] = { "master", "exp_avg", "exp_avg_sq" };
