/* zinc — Llama-family decoders (Llama 2/3, Mistral without sliding window,
 * Qwen2 with qkv bias): RMSNorm, rotary position embeddings, SwiGLU MLP,
 * grouped-query attention, no biases (except Qwen2's q/k/v), tied or untied
 * embeddings.
 *
 * The configuration mirrors a Hugging Face config.json (LlamaConfig's
 * field names in the comments), so it is read from one and written back to
 * one (include/zinc/hf.h).  The model itself (zn_llama_*) uses the same
 * parameter-source seam as GPT-2 (include/zinc/model.h): it owns no
 * parameter memory.
 */
#ifndef ZINC_LLAMA_H
#define ZINC_LLAMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "zinc/common.h"
#include "zinc/model.h"

#ifdef __cplusplus
extern "C" {
#endif

enum zn_rope_type {
	ZN_ROPE_DEFAULT = 0, /* rope_scaling absent or {"rope_type": "default"} */
	ZN_ROPE_LLAMA3 = 1,  /* {"rope_type": "llama3", factor, low_freq_factor,
			      *  high_freq_factor, original_max_position_embeddings} */
};

#define ZN_LLAMA_ARCH_MAX 64

struct zn_llama_config {
	char architecture[ZN_LLAMA_ARCH_MAX]; /* architectures[0]: "LlamaForCausalLM",
					       * "MistralForCausalLM", "Qwen2ForCausalLM" */
	int n_layer;          /* num_hidden_layers */
	int n_embd;           /* hidden_size (C) */
	int n_head;           /* num_attention_heads (NH); head_dim = C / NH unless head_dim is given */
	int n_kv_head;        /* num_key_value_heads (NKV; NH % NKV == 0); defaults to NH */
	int head_dim;         /* head_dim (HS); 0 in a config = C / NH */
	int intermediate;     /* intermediate_size (the SwiGLU MLP's width) */
	int vocab_size;       /* vocab_size (V) */
	int max_seq_len;      /* max_position_embeddings */
	float norm_eps;       /* rms_norm_eps */
	float rope_theta;     /* rope_theta (10000 when absent) */
	enum zn_rope_type rope_type;
	float rope_factor;    /* rope_scaling.factor (llama3) */
	float rope_low_freq_factor;   /* rope_scaling.low_freq_factor */
	float rope_high_freq_factor;  /* rope_scaling.high_freq_factor */
	int rope_original_max_pos;    /* rope_scaling.original_max_position_embeddings */
	bool tie_embeddings;  /* tie_word_embeddings */
	bool qkv_bias;        /* attention_bias, or Qwen2 (which always has q/k/v biases) */
	bool mlp_bias;        /* mlp_bias (false in every released Llama) */
	float init_std;       /* initializer_range (0.02), for training from scratch */
	int bos_token_id, eos_token_id; /* carried to the saved config.json (-1: absent) */
	char torch_dtype[16]; /* torch_dtype of the source ("bfloat16"), written back */

	/* Run options, not from config.json (the model's, as in struct
	 * zn_gpt2_config): activation checkpointing (keep each block's input
	 * only, recompute the block in backward; bit-identical results),
	 * its inputs in host memory (DeepSpeed's cpu_checkpointing), and
	 * timing it (zn_llama_profile_take). */
	bool recompute;
	bool offload_activations;
	bool profile;
	/* Storage dtype of what the model hands the kernels (as GPT-2's). */
	enum zn_dtype act_dtype;
};

/* ---- the model (engine/model/llama.c) ---------------------------------------
 *
 * Shapes: B batch, T tokens (positions 0 .. T-1 in every sequence), BT =
 * B*T, C = n_embd, NH = n_head, NKV = n_kv_head, HS = head_dim, QD = NH*HS,
 * KD = NKV*HS, I = intermediate, V = vocab_size (not padded: the logits are
 * (BT, V), so tensors keep Hugging Face's shapes).  Per block (pre-norm):
 *
 *   x1   = rmsnorm(res) * w_in                              (BT, C)
 *   q, k, v = x1 @ Wq^T (+bq), x1 @ Wk^T (+bk), x1 @ Wv^T (+bv)
 *                                                           (BT, QD), (BT, KD) x2
 *   qkv  = [rope(q) | rope(k) | v]                          (BT, QD + 2 KD)
 *   att  = causal grouped-query attention(qkv)              (BT, QD)
 *   res2 = res + att @ Wo^T                                 (BT, C)
 *   x2   = rmsnorm(res2) * w_post                           (BT, C)
 *   h    = silu(x2 @ Wgate^T) * (x2 @ Wup^T)                (BT, I)
 *   out  = res2 + h @ Wdown^T                               (BT, C)
 *
 * res_0 = embed_tokens[tokens]; logits = rmsnorm(res_L) * w_norm @ W^T with
 * W = lm_head, or embed_tokens when tie_embeddings.
 *
 * Layers for the parameter source (include/zinc/model.h's seam):
 *   0        model.embed_tokens.weight (V, C)
 *   1 .. L   model.layers.N.*, in transformers' state_dict order:
 *            self_attn.{q,k,v}_proj.weight (+ .bias with qkv_bias),
 *            self_attn.o_proj.weight, mlp.{gate,up,down}_proj.weight
 *            (+ .bias with mlp_bias), input_layernorm.weight,
 *            post_attention_layernorm.weight
 *   L + 1    model.norm.weight, then lm_head.weight (V, C) unless tied; a
 *            tied classifier fetches layer 0 again (its gradient is final
 *            after the embedding's backward, as GPT-2's wte)
 * Matrices are (out, in) as torch.nn.Linear and transformers store them:
 * hf_transposed is false for every tensor.
 */

/* Check a config and fill its defaults: n_kv_head 0 -> n_head, head_dim 0
 * -> n_embd / n_head, rope_theta 0 -> 10000, init_std 0 -> 0.02.  0, or
 * -EINVAL naming the field and the rule. */
ZN_API int zn_llama_config_check(struct zn_llama_config *cfg);

/* The most tensors a layer has (a block with every bias). */
#define ZN_LLAMA_LAYER_TENSORS_MAX 16

ZN_API unsigned zn_llama_layers(const struct zn_llama_config *cfg); /* L + 2 */
/* The tensors of `layer` into out[0..max-1] (names as transformers'
 * LlamaForCausalLM state_dict); returns how many (0 for a layer that does
 * not exist).  cfg as zn_llama_config_check leaves it. */
ZN_API unsigned zn_llama_layer_params(const struct zn_llama_config *cfg, unsigned layer,
				      struct zn_param_desc *out, unsigned max);
/* Total parameter count (a tied embedding counted once). */
ZN_API uint64_t zn_llama_num_params(const struct zn_llama_config *cfg);
/* Initialise one tensor in host memory (fp32) as transformers'
 * LlamaPreTrainedModel does: matrices normal(0, init_std), biases 0,
 * RMSNorm weights 1; counter-based from the seed and the tensor's index in
 * the model, as zn_gpt2_init_tensor. */
ZN_API void zn_llama_init_tensor(const struct zn_llama_config *cfg, const struct zn_param_desc *d,
				 uint64_t seed, uint64_t tensor_index, float *out);
/* Elements [off, off + n) of the same, as zn_gpt2_init_tensor_range. */
ZN_API void zn_llama_init_tensor_range(const struct zn_llama_config *cfg,
				       const struct zn_param_desc *d, uint64_t seed,
				       uint64_t tensor_index, uint64_t off, uint64_t n, float *out);
/* The rotary embedding's inverse frequencies, head_dim / 2 of them, in fp32
 * with transformers' operations in its order (modeling_rope_utils.py):
 *   default  1 / rope_theta^(2i / HS)
 *   llama3   those, with wavelength 2 pi / f: kept below
 *            original_max_pos / high_freq_factor, divided by factor above
 *            original_max_pos / low_freq_factor, blended in between.
 * 0, or -EINVAL for a config zn_llama_config_check refuses. */
ZN_API int zn_llama_rope_inv_freq(const struct zn_llama_config *cfg, float *out);

struct zn_llama;

/* A model for batches of B sequences of T tokens (T <= max_seq_len) on
 * kernels `k` with context `ctx`, activations from `mem` (as
 * zn_gpt2_create).  NULL + last error. */
ZN_API struct zn_llama *zn_llama_create(const struct zn_llama_config *cfg, int B, int T,
					const struct zn_kernels *k, struct zn_kctx *ctx,
					const struct zn_model_mem *mem);
ZN_API void zn_llama_destroy(struct zn_llama *m);
/* Bytes of device activations the model holds. */
ZN_API size_t zn_llama_activation_bytes(const struct zn_llama *m);
/* What zn_llama_create(cfg, B, T, ...) would allocate, as
 * zn_gpt2_activation_estimate says it (the same allocation code runs,
 * counting instead of allocating). */
ZN_API int zn_llama_activation_estimate(const struct zn_llama_config *cfg, int B, int T,
					size_t align, uint64_t *device_bytes,
					uint64_t *host_bytes);
/* Forward and backward: zn_gpt2_forward's and zn_gpt2_backward's contract
 * (tokens, targets < 0 ignored, weights, grad_scale, losses_out). */
ZN_API int zn_llama_forward(struct zn_llama *m, const struct zn_param_source *src,
			    const int32_t *tokens, const int32_t *targets, const float *weights,
			    bool for_backward, float grad_scale, const float **losses_out);
ZN_API int zn_llama_backward(struct zn_llama *m, const struct zn_param_source *src,
			     const int32_t *tokens);
/* activation_checkpointing.profile's times since the last call. */
ZN_API void zn_llama_profile_take(struct zn_llama *m, struct zn_model_profile *out);

#ifdef __cplusplus
}
#endif
#endif
