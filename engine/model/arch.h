/* The model architectures the trainer and the memory plan know, behind one
 * interface: GPT-2 (include/zinc/model.h) and the Llama family
 * (include/zinc/llama.h).  Not installed.
 *
 * `struct zn_arch` is a resolved description: the config's model section,
 * with a Llama's shape read from its Hugging Face config.json (model.from's
 * folder, or model.config for training from scratch).  Everything that
 * enumerates tensors, initialises them, names the checkpoint's model or
 * estimates activations goes through here, so the trainer and the plan
 * cannot disagree about a model. */
#ifndef ZN_ARCH_H
#define ZN_ARCH_H

#include "zn_common.h"

#include "zinc/configfile.h"
#include "zinc/llama.h"
#include "zinc/model.h"

/* The most tensors one layer of any architecture has. */
#define ZN_ARCH_LAYER_TENSORS_MAX 16
_Static_assert(ZN_ARCH_LAYER_TENSORS_MAX >= ZN_GPT2_BLOCK_TENSORS &&
		       ZN_ARCH_LAYER_TENSORS_MAX >= ZN_LLAMA_LAYER_TENSORS_MAX,
	       "a layer's tensors must fit");

struct zn_arch {
	bool llama;
	struct zn_gpt2_config g;
	struct zn_llama_config l;
};

/* Resolve the model section (reads config.json for a Llama): 0, or -errno
 * naming the key or file.  Activation checkpointing flags come from the
 * config's activation_checkpointing section. */
int zn_arch_from_config(const struct zn_config *cfg, struct zn_arch *a);

unsigned zn_arch_layers(const struct zn_arch *a);
unsigned zn_arch_layer_params(const struct zn_arch *a, unsigned layer, struct zn_param_desc *out);
uint64_t zn_arch_num_params(const struct zn_arch *a);
int zn_arch_vocab(const struct zn_arch *a);
int zn_arch_max_seq_len(const struct zn_arch *a);
void zn_arch_init_tensor(const struct zn_arch *a, const struct zn_param_desc *d, uint64_t seed,
			 uint64_t index, float *out);
int zn_arch_activation_estimate(const struct zn_arch *a, int B, int T, size_t align,
				uint64_t *device_bytes, uint64_t *host_bytes);
/* One line naming the model's shape exactly (a checkpoint's "zinc.model");
 * zn_arch_parse reads it back (0, or -EINVAL). */
void zn_arch_describe(const struct zn_arch *a, char *out, size_t len);
int zn_arch_parse(const char *s, struct zn_arch *a);
/* "GPT-2" or the config.json's architecture, for messages. */
const char *zn_arch_name(const struct zn_arch *a);

/* A model instance of either kind. */
struct zn_arch_model {
	const struct zn_arch *a;
	struct zn_gpt2 *g;
	struct zn_llama *l;
};
int zn_arch_model_create(struct zn_arch_model *m, const struct zn_arch *a, int B, int T,
			 const struct zn_kernels *k, struct zn_kctx *ctx,
			 const struct zn_model_mem *mem);
void zn_arch_model_destroy(struct zn_arch_model *m);
int zn_arch_forward(struct zn_arch_model *m, const struct zn_param_source *src,
		    const int32_t *tokens, const int32_t *targets, bool for_backward,
		    float grad_scale, const float **losses);
int zn_arch_backward(struct zn_arch_model *m, const struct zn_param_source *src,
		     const int32_t *tokens);
void zn_arch_profile_take(struct zn_arch_model *m, struct zn_model_profile *out);

#endif
