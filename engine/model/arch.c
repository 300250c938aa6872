/* GPT-2 and the Llama family behind one interface (see arch.h). */
#include "model/arch.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "zinc/hf.h"

int zn_arch_from_config(const struct zn_config *cfg, struct zn_arch *a)
{
	const struct zn_model_config *mc = &cfg->model;
	const struct zn_actckpt_config *ac = &cfg->activation_checkpointing;
	memset(a, 0, sizeof(*a));
	if (mc->type != ZN_MODEL_LLAMA) {
		a->g = (struct zn_gpt2_config){
			.n_layer = (int)mc->n_layer, .n_head = (int)mc->n_head,
			.n_embd = (int)mc->n_embd, .vocab_size = (int)mc->vocab_size,
			.max_seq_len = (int)mc->seq_len, .recompute = ac->enabled,
			.offload_activations = ac->cpu_checkpointing, .profile = ac->profile,
			.act_dtype = zn_config_storage_dtype(cfg),
		};
		return zn_gpt2_config_check(&a->g);
	}
	/* A Llama's shape is its config.json's: model.from's folder (a
	 * pretrained model) or model.config (from scratch). */
	a->llama = true;
	const char *src = mc->config[0] ? mc->config : mc->from;
	if (!src[0])
		return zn_error(-EINVAL, "model.type llama: give model.from (a Hugging Face model "
					 "folder) or model.config (its config.json, to train from "
					 "scratch)");
	int rc = zn_hf_read_config(src, &a->l);
	if (rc)
		return rc;
	a->l.recompute = ac->enabled;
	a->l.offload_activations = ac->cpu_checkpointing;
	a->l.profile = ac->profile;
	a->l.act_dtype = zn_config_storage_dtype(cfg);
	if ((rc = zn_llama_config_check(&a->l)))
		return rc;
	if ((int)mc->seq_len > a->l.max_seq_len)
		return zn_error(-EINVAL, "model.seq_len %u is above the model's "
					 "max_position_embeddings %d (%s): lower model.seq_len",
				mc->seq_len, a->l.max_seq_len, src);
	return 0;
}

unsigned zn_arch_layers(const struct zn_arch *a)
{
	return a->llama ? zn_llama_layers(&a->l) : zn_gpt2_layers(&a->g);
}

unsigned zn_arch_layer_params(const struct zn_arch *a, unsigned layer, struct zn_param_desc *out)
{
	return a->llama ? zn_llama_layer_params(&a->l, layer, out, ZN_ARCH_LAYER_TENSORS_MAX)
			: zn_gpt2_layer_params(&a->g, layer, out, ZN_ARCH_LAYER_TENSORS_MAX);
}

uint64_t zn_arch_num_params(const struct zn_arch *a)
{
	return a->llama ? zn_llama_num_params(&a->l) : zn_gpt2_num_params(&a->g);
}

int zn_arch_vocab(const struct zn_arch *a)
{
	return a->llama ? a->l.vocab_size : a->g.vocab_size;
}

int zn_arch_max_seq_len(const struct zn_arch *a)
{
	return a->llama ? a->l.max_seq_len : a->g.max_seq_len;
}

void zn_arch_init_tensor(const struct zn_arch *a, const struct zn_param_desc *d, uint64_t seed,
			 uint64_t index, float *out)
{
	if (a->llama)
		zn_llama_init_tensor(&a->l, d, seed, index, out);
	else
		zn_gpt2_init_tensor(&a->g, d, seed, index, out);
}

int zn_arch_activation_estimate(const struct zn_arch *a, int B, int T, size_t align,
				uint64_t *device_bytes, uint64_t *host_bytes)
{
	return a->llama ? zn_llama_activation_estimate(&a->l, B, T, align, device_bytes, host_bytes)
			: zn_gpt2_activation_estimate(&a->g, B, T, align, device_bytes, host_bytes);
}

const char *zn_arch_name(const struct zn_arch *a)
{
	return a->llama ? a->l.architecture : "GPT-2";
}

/* Floats in C99's hexadecimal form: read back exactly. */
void zn_arch_describe(const struct zn_arch *a, char *out, size_t len)
{
	if (!a->llama) {
		snprintf(out, len, "gpt2 n_layer=%d n_head=%d n_embd=%d vocab_size=%d seq_len=%d",
			 a->g.n_layer, a->g.n_head, a->g.n_embd, a->g.vocab_size, a->g.max_seq_len);
		return;
	}
	const struct zn_llama_config *l = &a->l;
	snprintf(out, len,
		 "llama arch=%s L=%d C=%d NH=%d NKV=%d HS=%d I=%d V=%d maxT=%d eps=%a theta=%a "
		 "rope=%d factor=%a low=%a high=%a orig=%d tie=%d qkv_bias=%d mlp_bias=%d std=%a "
		 "bos=%d eos=%d dtype=%s",
		 l->architecture[0] ? l->architecture : "-", l->n_layer, l->n_embd, l->n_head,
		 l->n_kv_head, l->head_dim, l->intermediate, l->vocab_size, l->max_seq_len,
		 (double)l->norm_eps, (double)l->rope_theta, (int)l->rope_type,
		 (double)l->rope_factor, (double)l->rope_low_freq_factor,
		 (double)l->rope_high_freq_factor, l->rope_original_max_pos, l->tie_embeddings,
		 l->qkv_bias, l->mlp_bias, (double)l->init_std, l->bos_token_id, l->eos_token_id,
		 l->torch_dtype[0] ? l->torch_dtype : "-");
}

int zn_arch_parse(const char *s, struct zn_arch *a)
{
	memset(a, 0, sizeof(*a));
	if (strncmp(s, "gpt2 ", 5) == 0) {
		struct zn_gpt2_config *c = &a->g;
		if (sscanf(s, "gpt2 n_layer=%d n_head=%d n_embd=%d vocab_size=%d seq_len=%d",
			   &c->n_layer, &c->n_head, &c->n_embd, &c->vocab_size,
			   &c->max_seq_len) != 5)
			return zn_error(-EINVAL, "model description '%s' is damaged", s);
		return zn_gpt2_config_check(c);
	}
	struct zn_llama_config *l = &a->l;
	int rope, tie, qb, mb;
	a->llama = true;
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

int zn_arch_model_create(struct zn_arch_model *m, const struct zn_arch *a, int B, int T,
			 const struct zn_kernels *k, struct zn_kctx *ctx,
			 const struct zn_model_mem *mem)
{
	memset(m, 0, sizeof(*m));
	m->a = a;
	if (a->llama)
		m->l = zn_llama_create(&a->l, B, T, k, ctx, mem);
	else
		m->g = zn_gpt2_create(&a->g, B, T, k, ctx, mem);
	return m->l || m->g ? 0 : -EINVAL;
}

void zn_arch_model_destroy(struct zn_arch_model *m)
{
	zn_llama_destroy(m->l);
	zn_gpt2_destroy(m->g);
	m->l = NULL;
	m->g = NULL;
}

int zn_arch_forward(struct zn_arch_model *m, const struct zn_param_source *src,
		    const int32_t *tokens, const int32_t *targets, bool for_backward,
		    float grad_scale, const float **losses)
{
	return m->l ? zn_llama_forward(m->l, src, tokens, targets, NULL, for_backward, grad_scale,
				       losses)
		    : zn_gpt2_forward(m->g, src, tokens, targets, NULL, for_backward, grad_scale,
				      losses);
}

int zn_arch_backward(struct zn_arch_model *m, const struct zn_param_source *src,
		     const int32_t *tokens)
{
	return m->l ? zn_llama_backward(m->l, src, tokens) : zn_gpt2_backward(m->g, src, tokens);
}

void zn_arch_profile_take(struct zn_arch_model *m, struct zn_model_profile *out)
{
	if (m->l)
		zn_llama_profile_take(m->l, out);
	else if (m->g)
		zn_gpt2_profile_take(m->g, out);
	else
		memset(out, 0, sizeof(*out));
}
