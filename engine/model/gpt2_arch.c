/* GPT-2 as an architecture (struct zn_arch_ops, see arch.h): its shape
 * from the config's model section, its one-line description and summary,
 * and the model calls of include/zinc/model.h behind the table. */
#include "model/arch.h"

#include <stdio.h>
#include <string.h>

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

ZN_ARCH_MODEL_CALLS(gpt2, g)

const struct zn_arch_ops zn_arch_gpt2_ops = {
	.name = "gpt2",
	.type = ZN_MODEL_GPT2,
	.from_config = gpt2_from_config,
	.describe = gpt2_describe,
	.parse = gpt2_parse,
	.display_name = gpt2_display_name,
	.summary = gpt2_summary,
	ZN_ARCH_MODEL_OPS(gpt2),
};
