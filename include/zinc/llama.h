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
};

#ifdef __cplusplus
}
#endif
#endif
