/* The Llama family as an architecture (struct zn_arch_ops, see arch.h):
 * its shape from a Hugging Face config.json, its one-line description and
 * summary, the model calls of include/zinc/llama.h behind the table, and
 * its weights as a Hugging Face folder (include/zinc/hf.h), written and
 * read. */
#include "model/arch.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "zinc/hf.h"

/* A Llama's shape is its config.json's: model.from's folder (a pretrained
 * model) or model.config (from scratch); the run options are the config's. */
static int llama_from_config(const struct zn_config *cfg, struct zn_arch *a)
{
	const struct zn_model_config *mc = &cfg->model;
	const struct zn_actckpt_config *ac = &cfg->activation_checkpointing;
	const char *src = mc->config[0] ? mc->config : mc->from;
	if (!src[0])
		return zn_error(-EINVAL, "model.type llama: give model.from (a Hugging Face model "
					 "folder) or model.config (its config.json, to train from "
					 "scratch)");
	ZN_TRY(zn_hf_read_config(src, &a->l));
	a->l.recompute = ac->enabled;
	a->l.offload_activations = ac->cpu_checkpointing;
	a->l.profile = ac->profile;
	a->l.act_dtype = zn_config_storage_dtype(cfg);
	ZN_TRY(zn_llama_config_check(&a->l));
	if ((int)mc->seq_len > a->l.max_seq_len)
		return zn_error(-EINVAL, "model.seq_len %u is above the model's "
					 "max_position_embeddings %d (%s): lower model.seq_len",
				mc->seq_len, a->l.max_seq_len, src);
	return 0;
}

/* Every field config.json gave, "-" for an empty string. */
#define DESCRIPTION                                                                             \
	"llama arch=%s L=%d C=%d NH=%d NKV=%d HS=%d I=%d V=%d maxT=%d eps=%a theta=%a rope=%d " \
	"factor=%a low=%a high=%a orig=%d tie=%d qkv_bias=%d mlp_bias=%d std=%a bos=%d "       \
	"eos=%d dtype=%s"

static void llama_describe(const struct zn_arch *a, char *out, size_t len)
{
	const struct zn_llama_config *l = &a->l;
	snprintf(out, len, DESCRIPTION, l->architecture[0] ? l->architecture : "-", l->n_layer,
		 l->n_embd, l->n_head, l->n_kv_head, l->head_dim, l->intermediate, l->vocab_size,
		 l->max_seq_len, (double)l->norm_eps, (double)l->rope_theta, (int)l->rope_type,
		 (double)l->rope_factor, (double)l->rope_low_freq_factor,
		 (double)l->rope_high_freq_factor, l->rope_original_max_pos, l->tie_embeddings,
		 l->qkv_bias, l->mlp_bias, (double)l->init_std, l->bos_token_id, l->eos_token_id,
		 l->torch_dtype[0] ? l->torch_dtype : "-");
}

static int llama_parse(const char *s, struct zn_arch *a)
{
	struct zn_llama_config *l = &a->l;
	int rope, tie, qb, mb;
	if (sscanf(s, "llama arch=%63s L=%d C=%d NH=%d NKV=%d HS=%d I=%d V=%d maxT=%d eps=%a "
		      "theta=%a rope=%d factor=%a low=%a high=%a orig=%d tie=%d qkv_bias=%d "
		      "mlp_bias=%d std=%a bos=%d eos=%d dtype=%15s",
		   l->architecture, &l->n_layer, &l->n_embd, &l->n_head, &l->n_kv_head,
		   &l->head_dim, &l->intermediate, &l->vocab_size, &l->max_seq_len, &l->norm_eps,
		   &l->rope_theta, &rope, &l->rope_factor, &l->rope_low_freq_factor,
		   &l->rope_high_freq_factor, &l->rope_original_max_pos, &tie, &qb, &mb,
		   &l->init_std, &l->bos_token_id, &l->eos_token_id, l->torch_dtype) != 23)
		return zn_error(-EINVAL, "model description '%s' is damaged or of another zinc", s);
	if (strcmp(l->architecture, "-") == 0)
		l->architecture[0] = 0;
	if (strcmp(l->torch_dtype, "-") == 0)
		l->torch_dtype[0] = 0;
	l->rope_type = (enum zn_rope_type)rope;
	l->tie_embeddings = tie;
	l->qkv_bias = qb;
	l->mlp_bias = mb;
	return zn_llama_config_check(l);
}

static const char *llama_display_name(const struct zn_arch *a)
{
	return a->l.architecture;
}

static void llama_summary(const struct zn_arch *a, char *out, size_t len)
{
	const struct zn_llama_config *l = &a->l;
	snprintf(out, len, "%s %d layers, %d heads (%d key/value), %d channels, MLP %d, vocab %d%s",
		 l->architecture, l->n_layer, l->n_head, l->n_kv_head, l->n_embd, l->intermediate,
		 l->vocab_size, l->tie_embeddings ? ", tied embeddings" : "");
}

static bool llama_tied(const struct zn_arch *a)
{
	return a->l.tie_embeddings;
}

ZN_ARCH_MODEL_CALLS(llama, l)

/* ---- weights: a Hugging Face folder ----------------------------------- */

struct llama_writer {
	struct zn_arch_writer base;
	struct zn_hf_writer *w;
};

static void llama_writer_abort(struct zn_arch_writer *base)
{
	struct llama_writer *w = (struct llama_writer *)base;
	zn_hf_writer_abort(w->w);
	free(w);
}

/* config.json, the shards (transformers' 5 GB each) and their index, in
 * `dtype`: what from_pretrained reads, so a checkpoint's step directory is
 * itself a model.from. */
static int llama_writer_begin(const struct zn_arch *a, const char *target,
			      const struct zn_param_desc *d, unsigned n, const char *dtype,
			      uint64_t chunk, struct zn_arch_writer **out)
{
	(void)chunk; /* its one buffer is smaller */
	/* The folder itself as the user's umask says (the writer makes missing
	 * parents 0755). */
	if (mkdir(target, 0777) != 0 && errno != EEXIST)
		return zn_error(-errno, "cannot make directory '%s': %s", target, strerror(errno));
	struct llama_writer *w = calloc(1, sizeof(*w));
	if (!w)
		return zn_error(-ENOMEM, "out of memory");
	w->base.ops = &zn_arch_llama_ops;
	int rc = zn_hf_writer_begin(target, &a->l, d, n, dtype, ZN_HF_DEFAULT_SHARD_BYTES, &w->w);
	if (rc)
		llama_writer_abort(&w->base);
	else
		*out = &w->base;
	return rc;
}

/* The pieces come in the folder's order: each follows the last. */
static int llama_writer_put(struct zn_arch_writer *base, unsigned i, uint64_t off,
			    const float *values, uint64_t n)
{
	(void)i, (void)off;
	return zn_hf_writer_put_part(((struct llama_writer *)base)->w, values, n);
}

static uint64_t llama_writer_bytes(const struct zn_arch *a, const struct zn_param_desc *d,
				   unsigned n, uint64_t chunk)
{
	(void)a, (void)d, (void)n, (void)chunk;
	return zn_hf_writer_buffer_bytes();
}

static int llama_writer_end(struct zn_arch_writer *base)
{
	struct llama_writer *w = (struct llama_writer *)base;
	int rc = zn_hf_writer_end(w->w);
	free(w);
	return rc;
}

struct llama_reader {
	struct zn_arch_reader base;
	struct zn_hf_model *hf;
	char (*names)[ZN_PARAM_NAME_MAX];  /* tensor i's name in the folder */
};

static void llama_reader_close(struct zn_arch_reader *base)
{
	struct llama_reader *r = (struct llama_reader *)base;
	zn_hf_close(r->hf);
	free(r->names);
	free(r);
}

/* Every tensor checked (present, shape, dtype) now; each piece read from
 * the mapped shards, widened to fp32, when asked for. */
static int llama_reader_open(const struct zn_arch *a, const char *path,
			     const struct zn_param_desc *d, unsigned n, struct zn_arch_reader **out)
{
	(void)a;
	struct llama_reader *r = calloc(1, sizeof(*r));
	if (!r || !(r->names = calloc(n ? n : 1, sizeof(*r->names)))) {
		free(r);
		return zn_error(-ENOMEM, "out of memory");
	}
	r->base.ops = &zn_arch_llama_ops;
	for (unsigned i = 0; i < n; i++)
		memcpy(r->names[i], d[i].name, sizeof(r->names[i]));
	int rc = zn_hf_open(path, &r->hf);
	if (!rc)
		rc = zn_hf_check(r->hf, d, n);
	if (rc)
		llama_reader_close(&r->base);
	else
		*out = &r->base;
	return rc;
}

static int llama_reader_get(struct zn_arch_reader *base, unsigned i, uint64_t off, uint64_t n,
			    float *values)
{
	struct llama_reader *r = (struct llama_reader *)base;
	return zn_hf_read_f32_range(r->hf, r->names[i], off, n, values);
}

const struct zn_arch_ops zn_arch_llama_ops = {
	.name = "llama",
	.type = ZN_MODEL_LLAMA,
	.from_config = llama_from_config,
	.describe = llama_describe,
	.parse = llama_parse,
	.display_name = llama_display_name,
	.summary = llama_summary,
	ZN_ARCH_MODEL_OPS(llama),
	.weights_name = "",
	.writer_begin = llama_writer_begin,
	.writer_put = llama_writer_put,
	.writer_end = llama_writer_end,
	.writer_abort = llama_writer_abort,
	.writer_bytes = llama_writer_bytes,
	.reader_open = llama_reader_open,
	.reader_get = llama_reader_get,
	.reader_close = llama_reader_close,
};
