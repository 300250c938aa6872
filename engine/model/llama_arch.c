/* The Llama family as an architecture (struct zn_arch_ops, see arch.h):
 * its shape from a Hugging Face config.json, its one-line description and
 * summary, and the model calls of include/zinc/llama.h behind the table. */
#include "model/arch.h"

#include <stdio.h>
#include <string.h>

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

ZN_ARCH_MODEL_CALLS(llama, l)

const struct zn_arch_ops zn_arch_llama_ops = {
	.name = "llama",
	.type = ZN_MODEL_LLAMA,
	.from_config = llama_from_config,
	.describe = llama_describe,
	.parse = llama_parse,
	.display_name = llama_display_name,
	.summary = llama_summary,
	ZN_ARCH_MODEL_OPS(llama),
};
