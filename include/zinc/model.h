/* zinc — models: GPT-2 (pre-LayerNorm decoder, learned positions, tied
 * embeddings) on the kernels op table.
 *
 * The model never owns parameter memory.  Its parameters are grouped in
 * layers; before running a layer it asks a parameter source (the engine)
 * for that layer's tensors and their gradient buffers, and hands them back
 * after.  That seam is where ZeRO-3 gathers and offload prefetches:
 *
 *   layer 0        embeddings: wte (Vp, C), wpe (maxT, C)
 *   layer 1 .. L   transformer blocks h.0 .. h.(L-1), 12 tensors each
 *   layer L + 1    the final layernorm ln_f (the classifier reuses wte,
 *                  so it fetches layer 0 again)
 *
 * Forward visits layers 0, 1 .. L, L+1 (and 0 for the classifier);
 * backward visits L+1 (and 0), L .. 1, 0.  Gradients ADD into the buffers
 * the source hands out (gradient accumulation over micro-batches is
 * free); the source zeroes them when it wants.  Activations are the
 * model's: allocated once for (B, T) through the memory functions given at
 * creation.
 *
 * Tensor layouts are the kernels' (include/zinc/kernels.h): matmul weights
 * (OC, C) like torch.nn.Linear.  Hugging Face's GPT-2 stores c_attn, c_proj
 * and c_fc transposed (Conv1D); zn_param_desc.hf_transposed marks those for
 * checkpoint readers and writers.
 *
 * The seam's types -- struct zn_param_desc, zn_param_source, zn_model_mem
 * and zn_model_profile -- are every model's: the Llama family
 * (include/zinc/llama.h) uses them as they are.
 */
#ifndef ZINC_MODEL_H
#define ZINC_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "zinc/common.h"
#include "zinc/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

struct zn_gpt2_config {
	int n_layer;       /* L */
	int n_head;        /* NH */
	int n_embd;        /* C, a multiple of n_head */
	int vocab_size;    /* V */
	int padded_vocab;  /* Vp >= V (0: V rounded up to 128) */
	int max_seq_len;   /* maxT: rows of wpe */
	/* Activation checkpointing: keep only each block's input and recompute
	 * the block during backward (one block's activations instead of L;
	 * the kernels are deterministic, so results are bit-identical). */
	bool recompute;
	/* With recompute: the kept block inputs live in host memory (ZeRO-
	 * Infinity's activation offload, DeepSpeed's cpu_checkpointing) and come
	 * back just before their block's backward; the device holds two. */
	bool offload_activations;
	/* Time the checkpointing (zn_gpt2_profile_take); synchronizes the device
	 * around each timed part when mem->sync is given. */
	bool profile;
	/* Storage dtype of the activations, parameters and gradients the model
	 * hands the kernels: its context's (ZN_DTYPE_F32, the zero value; the
	 * cuda kernels also offer ZN_DTYPE_F16 and ZN_DTYPE_BF16). */
	enum zn_dtype act_dtype;
};

/* Check a config (and fill padded_vocab when 0); 0 or -EINVAL naming the
 * field. */
ZN_API int zn_gpt2_config_check(struct zn_gpt2_config *cfg);

#define ZN_GPT2_BLOCK_TENSORS 12
#define ZN_PARAM_NAME_MAX 64

/* One parameter tensor of a layer. */
struct zn_param_desc {
	char name[ZN_PARAM_NAME_MAX]; /* Hugging Face name without "transformer.": "h.3.ln_1.weight" */
	unsigned ndim;                /* 1 or 2 */
	int64_t shape[2];             /* zinc's layout */
	size_t numel;
	bool hf_transposed;           /* stored (C, OC) by Hugging Face (Conv1D) */
	bool decay;                   /* weight decay applies (matrices; not biases, LN) */
	float init_std;               /* GPT-2 initialisation: normal(0, std); 0: constant */
	float init_value;             /* the constant when init_std is 0 */
	bool tileable;                /* a vocabulary's rows the model can take in tiles
	                               * (an embedding or classifier: see
	                               * zn_param_source's tiles) */
	bool tied;                    /* ... also the classifier (a tied embedding):
	                               * in a backward its tiles come twice, the
	                               * classifier's released unwritten */
};

ZN_API unsigned zn_gpt2_layers(const struct zn_gpt2_config *cfg);   /* L + 2 */
/* The tensors of `layer` into out[0..max-1]; returns how many (0 for a
 * layer that does not exist). */
ZN_API unsigned zn_gpt2_layer_params(const struct zn_gpt2_config *cfg, unsigned layer,
				     struct zn_param_desc *out, unsigned max);
/* Total parameter count (wte counted once, its padded rows included). */
ZN_API uint64_t zn_gpt2_num_params(const struct zn_gpt2_config *cfg);

/* Initialise one tensor in host memory (fp32) as GPT-2 does, from a seed
 * and the tensor's index in the model (so any tensor can be initialised on
 * its own, in any order, on any rank, with the same result).  The padded
 * rows of wte (V .. Vp-1) are zero. */
ZN_API void zn_gpt2_init_tensor(const struct zn_gpt2_config *cfg, const struct zn_param_desc *d,
				uint64_t seed, uint64_t tensor_index, float *out);
/* Elements [off, off + n) of the same, into out[0 .. n-1]: bit for bit the
 * whole tensor's, for a tensor made piece by piece. */
ZN_API void zn_gpt2_init_tensor_range(const struct zn_gpt2_config *cfg,
				      const struct zn_param_desc *d, uint64_t seed,
				      uint64_t tensor_index, uint64_t off, uint64_t n, float *out);

/* The engine side of the seam. */
struct zn_param_source {
	void *user;
	/* params[i] / grads[i] for the tensors of `layer` in
	 * zn_gpt2_layer_params order, valid until the matching release.
	 * grads may be NULL when `want_grads` is false. */
	int (*fetch)(void *user, unsigned layer, bool want_grads, void **params, void **grads);
	/* Done with the layer; `grads_written`: its gradients are final for
	 * this backward pass (they may leave the device now). */
	int (*release)(void *user, unsigned layer, bool grads_written);
	/* Optional (NULL: nothing is tiled).  Rows per tile of tensor `idx`
	 * of `layer` (a tileable one), 0 when it comes whole.  A tiled
	 * tensor's params[idx] / grads[idx] from fetch are NULL: the model
	 * takes it tile by tile -- tile k is rows [k R, min((k + 1) R, rows))
	 * -- each between fetch_tile and release_tile, inside its layer's
	 * fetch and release, one tile at a time.  A tile fetched for
	 * gradients and released unwritten has its gradients so far kept for
	 * its next fetch for gradients in the same backward, which adds to
	 * them (a tied embedding: the classifier's part waits for the
	 * encoder's). */
	unsigned (*tile_rows)(void *user, unsigned layer, unsigned idx);
	int (*fetch_tile)(void *user, unsigned layer, unsigned idx, unsigned tile,
			  bool want_grads, void **param, void **grad);
	int (*release_tile)(void *user, unsigned layer, unsigned idx, unsigned tile,
			    bool grads_written);
};

/* Memory for activations (device memory of the kernels' backend). */
struct zn_model_mem {
	void *user;
	void *(*alloc)(void *user, size_t bytes);         /* NULL + last error on failure */
	void (*free)(void *user, void *p);
	int (*memset0)(void *user, void *p, size_t bytes); /* zero device memory */
	/* Host memory and synchronous copies, for offload_activations. */
	void *(*host_alloc)(void *user, size_t bytes);
	void (*host_free)(void *user, void *p);
	int (*to_host)(void *user, void *dst, const void *src, size_t bytes);
	int (*to_device)(void *user, void *dst, const void *src, size_t bytes);
	/* Optional: wait until the device has done everything enqueued, so
	 * that the profile's host clocks time the work, not its launch. */
	int (*sync)(void *user);
};

/* activation_checkpointing.profile: where a model's checkpointing time
 * went, summed since the last zn_gpt2_profile_take or zn_llama_profile_take
 * (seconds). */
struct zn_model_profile {
	double recompute_s;    /* the blocks' forwards run again in backward */
	double keep_s;         /* kept block inputs to host memory (cpu_checkpointing) */
	double restore_s;      /* ... and back before their block's backward */
};

struct zn_gpt2;
ZN_API void zn_gpt2_profile_take(struct zn_gpt2 *m, struct zn_model_profile *out);

/* A model for batches of B sequences of T tokens (T <= max_seq_len) running
 * on kernels `k` with context `ctx`.  NULL + last error. */
ZN_API struct zn_gpt2 *zn_gpt2_create(const struct zn_gpt2_config *cfg, int B, int T,
				      const struct zn_kernels *k, struct zn_kctx *ctx,
				      const struct zn_model_mem *mem);
ZN_API void zn_gpt2_destroy(struct zn_gpt2 *m);
/* Bytes of activations the model holds. */
ZN_API size_t zn_gpt2_activation_bytes(const struct zn_gpt2 *m);

/* The activation memory zn_gpt2_create(cfg, B, T, ...) would allocate,
 * without creating the model: *device_bytes through mem->alloc, each
 * allocation rounded up to `align` bytes (1 or 0: as asked; ZN_DEVICE_ALIGN:
 * as a zn_device budget counts them), and *host_bytes through
 * mem->host_alloc (the kept block inputs with offload_activations, else 0).
 * Either pointer may be NULL.  The three modes, L blocks, BT = B * T:
 *   plain:                   L x (block input + block working set) on the device
 *   recompute:               L x block input + one working set
 *   + offload_activations:   one working set + two block inputs; L inputs on the host
 * plus the classifier's and backward's buffers (logits (BT, Vp) the largest).
 * Returns 0, or -EINVAL for a config, B or T zn_gpt2_create would refuse. */
ZN_API int zn_gpt2_activation_estimate(const struct zn_gpt2_config *cfg, int B, int T,
				       size_t align, uint64_t *device_bytes,
				       uint64_t *host_bytes);

/* Forward pass over tokens (B, T) (device int32).  With targets (B, T)
 * (device int32; < 0: not counted) the losses are computed; `weights`
 * (device fp32, (B,T)) or NULL scale each token's loss.  With `for_backward`
 * the activations needed by zn_gpt2_backward are kept and the logits'
 * gradient is computed in the same pass, scaled by `grad_scale` (1 / counted
 * tokens, times the loss scale).  *losses_out: device pointer to the (B,T)
 * per-token losses (fp32) of this pass, valid until the next forward. */
ZN_API int zn_gpt2_forward(struct zn_gpt2 *m, const struct zn_param_source *src,
			   const int32_t *tokens, const int32_t *targets, const float *weights,
			   bool for_backward, float grad_scale, const float **losses_out);

/* Backward pass after zn_gpt2_forward(..., for_backward = true): adds every
 * parameter's gradient into the buffers the source hands out. */
ZN_API int zn_gpt2_backward(struct zn_gpt2 *m, const struct zn_param_source *src,
			    const int32_t *tokens);

#ifdef __cplusplus
}
#endif
#endif
