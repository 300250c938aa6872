/* The model architectures the trainer and the memory plan know, each an ops
 * table (struct zn_arch_ops): GPT-2 (gpt2_arch.c over include/zinc/model.h)
 * and the Llama family (llama_arch.c over include/zinc/llama.h).  Not
 * installed.
 *
 * arch.c owns the registry -- model.type, or the first word of a
 * checkpoint's description, picks the table once, when the arch is
 * resolved -- and the zn_arch_* calls, each a dispatch through a->ops.  An
 * architecture's file owns the rest: its config and where it comes from,
 * its tensors and their initialisation, its one-line description, its
 * summaries, its activation estimate, its model instance and its weights
 * in the files other programs read and write.  The trainer and the plan ask
 * only through these calls, so they cannot disagree about a model, and a
 * new architecture is a new table, not an `if` in each. */
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

struct zn_arch_ops;
struct zn_arch_writer;
struct zn_arch_reader;

/* A resolved architecture: the config's model section, with a Llama's shape
 * read from its Hugging Face config.json (model.from's folder, or
 * model.config for training from scratch).  Only the config of ops's
 * architecture is meaningful; only the architecture's own file reads it. */
struct zn_arch {
	const struct zn_arch_ops *ops;
	struct zn_gpt2_config g;       /* ops == &zn_arch_gpt2_ops */
	struct zn_llama_config l;      /* ops == &zn_arch_llama_ops */
};

/* The sizes summaries print (the rest of a shape is the architecture's). */
struct zn_arch_dims {
	int n_layer;      /* L, transformer blocks */
	int n_head;       /* NH, query heads */
	int n_embd;       /* C */
	int vocab_size;   /* V, the real vocabulary (GPT-2's padded rows not counted) */
	int max_seq_len;  /* the most positions the model knows */
	bool tied;        /* the classifier is the embedding (layer 0), fetched
	                   * again by the head with gradients not yet final */
};

/* A model instance: the architecture's model behind `impl`. */
struct zn_arch_model {
	const struct zn_arch *a;
	void *impl;       /* struct zn_gpt2 * or struct zn_llama * */
};

struct zn_arch_ops {
	const char *name;            /* a description's first word: "gpt2", "llama" */
	enum zn_model_type type;     /* the model.type that picks it */

	/* ---- the resolved architecture ---- */
	/* a->g or a->l from the config's model section (activation
	 * checkpointing from its activation_checkpointing section): 0, or
	 * -errno naming the key or file. */
	int (*from_config)(const struct zn_config *cfg, struct zn_arch *a);
	/* One line naming the shape exactly (a checkpoint's "zinc.model"),
	 * starting with `name` and a space; parse reads it back (0, or
	 * -EINVAL).  Floats in C99's hexadecimal form, so they read back
	 * exactly. */
	void (*describe)(const struct zn_arch *a, char *out, size_t len);
	int (*parse)(const char *s, struct zn_arch *a);
	/* "GPT-2", or the config.json's architecture, for messages. */
	const char *(*display_name)(const struct zn_arch *a);
	/* One line for people: the name and the sizes that matter. */
	void (*summary)(const struct zn_arch *a, char *out, size_t len);
	struct zn_arch_dims (*dims)(const struct zn_arch *a);
	/* activation_checkpointing's enabled and cpu_checkpointing. */
	void (*set_checkpointing)(struct zn_arch *a, bool recompute, bool offload_activations);

	/* ---- tensors: layers 0 .. layers-1, each a list of at most
	 * ZN_ARCH_LAYER_TENSORS_MAX, in the model's order ---- */
	unsigned (*layers)(const struct zn_arch *a);
	unsigned (*layer_params)(const struct zn_arch *a, unsigned layer,
				 struct zn_param_desc *out);
	uint64_t (*num_params)(const struct zn_arch *a);
	/* Elements [off, off + n) of tensor d (the table's `index`) as
	 * initialised from `seed`, into out[0 .. n-1]: bit for bit the whole
	 * tensor's. */
	void (*init_tensor)(const struct zn_arch *a, const struct zn_param_desc *d, uint64_t seed,
			    uint64_t index, uint64_t off, uint64_t n, float *out);
	int (*activation_estimate)(const struct zn_arch *a, int B, int T, size_t align,
				   uint64_t *device_bytes, uint64_t *host_bytes);

	/* ---- a model instance (struct zn_arch_model's impl) ---- */
	/* The model for batches of B sequences of T tokens; NULL + last error. */
	void *(*create)(const struct zn_arch *a, int B, int T, const struct zn_kernels *k,
			struct zn_kctx *ctx, const struct zn_model_mem *mem);
	void (*destroy)(void *impl);
	int (*forward)(void *impl, const struct zn_param_source *src, const int32_t *tokens,
		       const int32_t *targets, bool for_backward, float grad_scale,
		       const float **losses);
	int (*backward)(void *impl, const struct zn_param_source *src, const int32_t *tokens);
	void (*profile_take)(void *impl, struct zn_model_profile *out);

/* ---- the weights in the files other programs read: fp32 in zinc's
	 * layout in memory, the tensors of layer_params in the model's order,
	 * each in pieces of any length (a tensor is never needed whole) ---- */
	/* Where they live in a checkpoint directory: a file's name, or "" when
	 * the directory itself is the model's folder. */
	const char *weights_name;
	/* Write d[0..n-1] to `target` (the file or the folder weights_name
	 * says); `dtype` is the torch dtype of a format that has one
	 * ("bfloat16", "float16", "float32"); `chunk`: the most elements a
	 * buffer of the writer's may hold (writer_bytes says its bytes).
	 * put takes elements [off, off + n) of tensor i, the pieces coming in
	 * order (tensor by tensor, each from its first element on).  end and
	 * abort free the writer; abort, or a failed end, leaves no partial
	 * file behind. */
	int (*writer_begin)(const struct zn_arch *a, const char *target,
			    const struct zn_param_desc *d, unsigned n, const char *dtype,
			    uint64_t chunk, struct zn_arch_writer **w);
	int (*writer_put)(struct zn_arch_writer *w, unsigned i, uint64_t off, const float *values,
			  uint64_t n);
	int (*writer_end)(struct zn_arch_writer *w);
	void (*writer_abort)(struct zn_arch_writer *w);
	uint64_t (*writer_bytes)(const struct zn_arch *a, const struct zn_param_desc *d,
				 unsigned n, uint64_t chunk);
	/* Open pretrained weights at `path`, checking every tensor of d[0..n-1]
	 * (present, dtype, shape) before any is read; get reads elements
	 * [off, off + n) of tensor i, in any order. */
	int (*reader_open)(const struct zn_arch *a, const char *path,
			   const struct zn_param_desc *d, unsigned n, struct zn_arch_reader **r);
	int (*reader_get)(struct zn_arch_reader *r, unsigned i, uint64_t off, uint64_t n,
			  float *values);
	void (*reader_close)(struct zn_arch_reader *r);
};

/* The first member of an architecture's writer and reader: the table that
 * made it, so that the zn_arch_writer_* and zn_arch_reader_* calls find
 * their functions, and what those calls keep (arch.c fills it after the
 * table's open; the table's functions leave it alone): each tensor's
 * elements and, writing, how far the values have come. */
struct zn_arch_writer {
	const struct zn_arch_ops *ops;
	uint64_t *numel;
	unsigned n, cur;               /* tensors; the one being put */
	uint64_t done;                 /* its elements put */
};

struct zn_arch_reader {
	const struct zn_arch_ops *ops;
	uint64_t *numel;
	unsigned n;
};

/* The most elements a piece of a tensor holds while the weights are read,
 * made, converted or written (16 MiB in fp32): what bounds the buffers of
 * a writer, a start-up and a consolidation, whatever the model's size. */
#define ZN_ARCH_CHUNK (UINT64_C(1) << 22)

extern const struct zn_arch_ops zn_arch_gpt2_ops, zn_arch_llama_ops;

/* ---- the registry ---- */

/* Resolve the model section through model.type's table: 0, or -errno
 * naming the key or file. */
int zn_arch_from_config(const struct zn_config *cfg, struct zn_arch *a);
/* One line naming the model's shape exactly; zn_arch_parse picks the table
 * by its first word and reads it back (0, or -EINVAL). */
void zn_arch_describe(const struct zn_arch *a, char *out, size_t len);
int zn_arch_parse(const char *s, struct zn_arch *a);

/* ---- the calls (each a->ops's; see struct zn_arch_ops) ---- */

const char *zn_arch_name(const struct zn_arch *a);
void zn_arch_summary(const struct zn_arch *a, char *out, size_t len);
struct zn_arch_dims zn_arch_dims(const struct zn_arch *a);
int zn_arch_vocab(const struct zn_arch *a);
int zn_arch_max_seq_len(const struct zn_arch *a);
void zn_arch_set_checkpointing(struct zn_arch *a, bool recompute, bool offload_activations);
unsigned zn_arch_layers(const struct zn_arch *a);
unsigned zn_arch_layer_params(const struct zn_arch *a, unsigned layer, struct zn_param_desc *out);
uint64_t zn_arch_num_params(const struct zn_arch *a);
void zn_arch_init_tensor(const struct zn_arch *a, const struct zn_param_desc *d, uint64_t seed,
			 uint64_t index, float *out);
/* Elements [off, off + n) of it: bit for bit the whole tensor's. */
void zn_arch_init_range(const struct zn_arch *a, const struct zn_param_desc *d, uint64_t seed,
			uint64_t index, uint64_t off, uint64_t n, float *out);
int zn_arch_activation_estimate(const struct zn_arch *a, int B, int T, size_t align,
				uint64_t *device_bytes, uint64_t *host_bytes);

/* 0, or -EINVAL with the model's message as the last error. */
int zn_arch_model_create(struct zn_arch_model *m, const struct zn_arch *a, int B, int T,
			 const struct zn_kernels *k, struct zn_kctx *ctx,
			 const struct zn_model_mem *mem);
void zn_arch_model_destroy(struct zn_arch_model *m);
int zn_arch_forward(struct zn_arch_model *m, const struct zn_param_source *src,
		    const int32_t *tokens, const int32_t *targets, bool for_backward,
		    float grad_scale, const float **losses);
int zn_arch_backward(struct zn_arch_model *m, const struct zn_param_source *src,
		     const int32_t *tokens);
/* Zeros for a model never created. */
void zn_arch_profile_take(struct zn_arch_model *m, struct zn_model_profile *out);

/* ---- the model's tensors (tensors.c) ---- */

/* The model's tensors in model order and each layer's range of them, from
 * its architecture: built once for whoever walks them -- the trainer, the
 * consolidation, the memory plan. */
struct zn_tensor_table {
	struct zn_param_desc *d;       /* nt descriptions */
	unsigned nt, nlayers;
	unsigned *first, *count;       /* per layer: tensors first .. first + count - 1 */
	uint64_t total;                /* elements over all tensors */
	uint64_t largest;              /* elements of the largest tensor */
};

/* 0 or -ENOMEM (with the last error set); free takes a zeroed table too. */
int zn_tensor_table_build(struct zn_tensor_table *tab, const struct zn_arch *a);
void zn_tensor_table_free(struct zn_tensor_table *tab);

/* ---- the weights in the files other programs read (see struct
 * zn_arch_ops): GPT-2's one model.safetensors (Hugging Face's names and
 * shapes) or llm.c .bin; a Llama's Hugging Face folder ---- */

/* Where the weights live in checkpoint directory `dir`, e.g. a step's:
 * dir/model.safetensors, or dir itself when it is the model's folder. */
const char *zn_arch_weights_name(const struct zn_arch *a);
void zn_arch_weights_path(const struct zn_arch *a, const char *dir, char *out, size_t len);

int zn_arch_writer_begin(const struct zn_arch *a, const char *target,
			 const struct zn_param_desc *d, unsigned n, const char *dtype,
			 struct zn_arch_writer **out);
/* The same with the writer's buffers holding at most `chunk` elements
 * (zn_arch_writer_begin: ZN_ARCH_CHUNK). */
int zn_arch_writer_begin_chunked(const struct zn_arch *a, const char *target,
				 const struct zn_param_desc *d, unsigned n, const char *dtype,
				 uint64_t chunk, struct zn_arch_writer **out);
/* Host bytes such a writer holds while values come (beside its tables):
 * bounded by `chunk`, not by the model. */
uint64_t zn_arch_writer_bytes(const struct zn_arch *a, const struct zn_param_desc *d, unsigned n,
			      uint64_t chunk);
/* The next tensor's values, fp32 in zinc's layout (numel of its desc). */
int zn_arch_writer_put(struct zn_arch_writer *w, const float *values);
/* The next n values in write order: the rest of the current tensor and on
 * into the following ones.  -EINVAL past the last tensor. */
int zn_arch_writer_put_part(struct zn_arch_writer *w, const float *values, uint64_t n);
/* Both free w; abort takes NULL. */
int zn_arch_writer_end(struct zn_arch_writer *w);
void zn_arch_writer_abort(struct zn_arch_writer *w);

int zn_arch_reader_open(const struct zn_arch *a, const char *path,
			const struct zn_param_desc *d, unsigned n, struct zn_arch_reader **out);
/* Tensor i's values, fp32 in zinc's layout (numel of d[i]). */
int zn_arch_reader_get(struct zn_arch_reader *r, unsigned i, float *values);
/* Elements [off, off + n) of it into values[0 .. n-1]; -ERANGE outside it. */
int zn_arch_reader_get_range(struct zn_arch_reader *r, unsigned i, uint64_t off, uint64_t n,
			     float *values);
void zn_arch_reader_close(struct zn_arch_reader *r);

/* ---- for the architectures' files ---- */

/* The entries an architecture forwards unchanged to its model's config and
 * API: GPT-2's and the Llama family's are parallel (the same field names,
 * zn_gpt2_layers(&a->g) and zn_llama_layers(&a->l), ...), so one adapter
 * serves both.  In an architecture's file, ZN_ARCH_MODEL_CALLS(gpt2, g)
 * defines the static functions gpt2_dims ... gpt2_profile_take that
 * ZN_ARCH_MODEL_OPS(gpt2) names in its table; the file defines
 * gpt2_tied(a) before it. */
#define ZN_ARCH_MODEL_CALLS(model, cfg)                                                          \
	static struct zn_arch_dims model##_dims(const struct zn_arch *a)                         \
	{                                                                                        \
		return (struct zn_arch_dims){ .n_layer = a->cfg.n_layer,                         \
					      .n_head = a->cfg.n_head,                           \
					      .n_embd = a->cfg.n_embd,                           \
					      .vocab_size = a->cfg.vocab_size,                   \
					      .max_seq_len = a->cfg.max_seq_len,                 \
					      .tied = model##_tied(a) };                         \
	}                                                                                        \
	static void model##_set_checkpointing(struct zn_arch *a, bool recompute,                 \
					      bool offload)                                      \
	{                                                                                        \
		a->cfg.recompute = recompute;                                                    \
		a->cfg.offload_activations = offload;                                            \
	}                                                                                        \
	static unsigned model##_layers(const struct zn_arch *a)                                  \
	{                                                                                        \
		return zn_##model##_layers(&a->cfg);                                             \
	}                                                                                        \
	static unsigned model##_layer_params(const struct zn_arch *a, unsigned layer,            \
					     struct zn_param_desc *out)                          \
	{                                                                                        \
		return zn_##model##_layer_params(&a->cfg, layer, out,                            \
						 ZN_ARCH_LAYER_TENSORS_MAX);                     \
	}                                                                                        \
	static uint64_t model##_num_params(const struct zn_arch *a)                              \
	{                                                                                        \
		return zn_##model##_num_params(&a->cfg);                                         \
	}                                                                                        \
	static void model##_init_tensor(const struct zn_arch *a,                                 \
					const struct zn_param_desc *d, uint64_t seed,            \
					uint64_t index, uint64_t off, uint64_t n, float *out)    \
	{                                                                                        \
		zn_##model##_init_tensor_range(&a->cfg, d, seed, index, off, n, out);            \
	}                                                                                        \
	static int model##_activation_estimate(const struct zn_arch *a, int B, int T,            \
					       size_t align, uint64_t *device_bytes,             \
					       uint64_t *host_bytes)                             \
	{                                                                                        \
		return zn_##model##_activation_estimate(&a->cfg, B, T, align,                    \
							device_bytes, host_bytes);               \
	}                                                                                        \
	static void *model##_create(const struct zn_arch *a, int B, int T,                       \
				    const struct zn_kernels *k, struct zn_kctx *ctx,             \
				    const struct zn_model_mem *mem)                              \
	{                                                                                        \
		return zn_##model##_create(&a->cfg, B, T, k, ctx, mem);                          \
	}                                                                                        \
	static void model##_destroy(void *m)                                                     \
	{                                                                                        \
		zn_##model##_destroy(m);                                                         \
	}                                                                                        \
	static int model##_forward(void *m, const struct zn_param_source *src,                   \
				   const int32_t *tokens, const int32_t *targets,                \
				   bool for_backward, float grad_scale,                          \
				   const float **losses)                                         \
	{                                                                                        \
		return zn_##model##_forward(m, src, tokens, targets, NULL,                       \
					    for_backward, grad_scale, losses);                   \
	}                                                                                        \
	static int model##_backward(void *m, const struct zn_param_source *src,                  \
				    const int32_t *tokens)                                       \
	{                                                                                        \
		return zn_##model##_backward(m, src, tokens);                                    \
	}                                                                                        \
	static void model##_profile_take(void *m, struct zn_model_profile *out)                  \
	{                                                                                        \
		zn_##model##_profile_take(m, out);                                               \
	}

#define ZN_ARCH_MODEL_OPS(model)                                                                 \
	.dims = model##_dims, .set_checkpointing = model##_set_checkpointing,                    \
	.layers = model##_layers, .layer_params = model##_layer_params,                          \
	.num_params = model##_num_params, .init_tensor = model##_init_tensor,                    \
	.activation_estimate = model##_activation_estimate, .create = model##_create,            \
	.destroy = model##_destroy, .forward = model##_forward,                                  \
	.backward = model##_backward, .profile_take = model##_profile_take

#endif
