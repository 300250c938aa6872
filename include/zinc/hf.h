/* zinc — Hugging Face model folders: read a pretrained Llama-family model,
 * write the fine-tuned one back in the form transformers loads.
 *
 * A folder holds
 *
 *   config.json                       LlamaConfig / MistralConfig / Qwen2Config
 *   model.safetensors                 every tensor, when the model is small, or
 *   model.safetensors.index.json      {"metadata": {"total_size": BYTES},
 *                                      "weight_map": {TENSOR: SHARD, ...}}
 *   model-00001-of-0000N.safetensors  the shards the index names
 *
 * with tensor names as in transformers' LlamaForCausalLM
 * ("model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
 * ..., "model.norm.weight", "lm_head.weight" unless tied).  Other files
 * (tokenizer.json, generation_config.json, ...) are not read.  When both
 * model.safetensors and an index are present, model.safetensors is read, as
 * transformers does.
 *
 * Reading never copies a file whole: every shard is memory-mapped (see
 * safetensors.h, which checks each header before a byte of data is used),
 * and zn_hf_read_f32* convert one tensor, or a slice of one, straight from
 * the mapping into the caller's fp32 buffer (BF16 and F16 widen exactly).
 * The pages a read covered are then dropped from this process (they stay in
 * the page cache, which the kernel may reclaim), so a model larger than host
 * memory loads tensor by tensor into the offload tiers.
 *
 * An open zn_hf_model is read-only: several threads may read from it at
 * once.
 *
 * Writing streams too: zn_hf_writer_put* take fp32 values in tensor order,
 * round them to the output dtype (nearest even) and append them to the
 * current shard; only a conversion buffer is held.
 *
 * Tensors are described by struct zn_param_desc (zinc/model.h): `name` is
 * the full Hugging Face name, `ndim` and `shape` the shape as stored in the
 * file (Llama-family tensors are stored as zinc lays them out, torch.nn.
 * Linear's (out, in)); other fields are ignored, except `hf_transposed`,
 * which these functions refuse (GPT-2's Conv1D layout is not a Llama
 * folder's).
 *
 * Errors follow zinc's rule: 0 or -errno, with zn_last_error() naming the
 * file, the key or tensor at fault, and what to do; a bad value in a JSON
 * file is located as "FILE:LINE:COLUMN: ".  -EINVAL: malformed or
 * inconsistent input; -ENOTSUP: a well-formed model zinc does not support
 * (architecture, rope type, dtype); -ENOENT: a missing file or tensor.
 */
#ifndef ZINC_HF_H
#define ZINC_HF_H

#include <stddef.h>
#include <stdint.h>

#include "zinc/common.h"
#include "zinc/llama.h"
#include "zinc/model.h"
#include "zinc/safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- config.json ---------------------------------------------------------- */

/* Read `path` (a folder, whose config.json is read, or the JSON file
 * itself) into *out.  Supported: architectures[0] LlamaForCausalLM,
 * MistralForCausalLM (sliding_window null, absent or >=
 * max_position_embeddings) and Qwen2ForCausalLM (use_sliding_window false;
 * q/k/v biases); hidden_act "silu"; rope_scaling null, {"rope_type":
 * "default"} or {"rope_type": "llama3", factor, low_freq_factor,
 * high_freq_factor, original_max_position_embeddings} ("type" is read as
 * "rope_type"; transformers 5's "rope_parameters" is read the same way).
 * Required: hidden_size, num_hidden_layers, num_attention_heads,
 * intermediate_size, vocab_size, max_position_embeddings, rms_norm_eps.
 * Defaults: num_key_value_heads = num_attention_heads, head_dim =
 * hidden_size / num_attention_heads (filled in), rope_theta 10000,
 * tie_word_embeddings false, attention_bias and mlp_bias false,
 * initializer_range 0.02, bos/eos_token_id -1 (a list gives its first
 * element), torch_dtype "" ("dtype" is read as "torch_dtype").  Keys zinc
 * does not use are ignored.  0, or -EINVAL / -ENOTSUP / -ENOENT naming the
 * file and key. */
ZN_API int zn_hf_read_config(const char *path, struct zn_llama_config *out);

/* Write cfg as config.json at `path` (a file path), atomically, with
 * torch_dtype = `torch_dtype` (NULL: cfg->torch_dtype) and the keys in
 * transformers' order (sorted).  0 or -errno. */
ZN_API int zn_hf_write_config(const char *path, const struct zn_llama_config *cfg,
			      const char *torch_dtype);

/* ---- reading the weights ---------------------------------------------------- */

struct zn_hf_model;

/* Open the weights of folder `dir`: model.safetensors, or the index and
 * every shard it names (each mapped and its header checked now, so a
 * missing, truncated or damaged shard fails here, naming the file and a
 * tensor the index puts in it).  0 and *out, or -errno with *out NULL. */
ZN_API int zn_hf_open(const char *dir, struct zn_hf_model **out);
ZN_API void zn_hf_close(struct zn_hf_model *m);

/* Where tensor `name` is: its entry in the mapped shard (data points into
 * the mapping) and the shard's path (one pointer per shard, so tensors can
 * be grouped by shard by comparing it).  Either output may be NULL.
 * -ENOENT when the index (or model.safetensors) has no such tensor, or
 * the index names a shard that does not hold it. */
ZN_API int zn_hf_find(const struct zn_hf_model *m, const char *name,
		      const struct zn_st_tensor **tensor, const char **shard_path);

/* Check that every tensor of descs[0..n-1] is present with the expected
 * shape and a dtype zinc converts (F32, F16, BF16); tensors in the files
 * that are not asked for (rotary_emb.inv_freq, ...) are ignored.  Stops at
 * the first problem: -ENOENT (missing), -EINVAL (shape), -ENOTSUP (dtype,
 * or an hf_transposed desc). */
ZN_API int zn_hf_check(const struct zn_hf_model *m, const struct zn_param_desc *descs, size_t n);

/* Elements of tensor `name` (the product of its shape); 0 when absent. */
ZN_API uint64_t zn_hf_numel(const struct zn_hf_model *m, const char *name);

/* Tensor `name`, converted to fp32 into dst[0 .. numel-1] (row-major, as
 * stored). */
ZN_API int zn_hf_read_f32(const struct zn_hf_model *m, const char *name, float *dst);
/* Elements [off, off + n) of the flattened tensor into dst[0 .. n-1] (a
 * rank's partition).  -ERANGE when the range leaves the tensor. */
ZN_API int zn_hf_read_f32_range(const struct zn_hf_model *m, const char *name, uint64_t off,
				uint64_t n, float *dst);

/* ---- writing a folder ------------------------------------------------------ */

struct zn_hf_writer;

#define ZN_HF_DEFAULT_SHARD_BYTES 5000000000ull /* transformers' max_shard_size "5GB" */

/* Start writing a model of n tensors (descs in the order their data will
 * be put) into folder `dir` (created if missing) as `dtype` ("bfloat16",
 * "float16" or "float32"; "bf16", "fp16", "fp32" are accepted), in shards
 * of at most `max_shard_bytes` of tensor data (0: ZN_HF_DEFAULT_SHARD_BYTES;
 * a larger tensor gets a shard of its own), cut in tensor order as
 * transformers cuts them.  One shard is written as model.safetensors with
 * no index, as transformers does.  Nothing appears under a final name
 * before zn_hf_writer_end.  0 and *out, or -errno with *out NULL. */
ZN_API int zn_hf_writer_begin(const char *dir, const struct zn_llama_config *cfg,
			      const struct zn_param_desc *descs, size_t n, const char *dtype,
			      uint64_t max_shard_bytes, struct zn_hf_writer **out);

/* The next tensor's values, all numel of them, as fp32 (its desc's shape,
 * row-major). */
ZN_API int zn_hf_writer_put(struct zn_hf_writer *w, const float *data);
/* The next n values in write order: the rest of the current tensor and on
 * into the following ones, so a tensor can come in pieces (from an offload
 * tier, a partition at a time).  -EINVAL past the last tensor.  After a
 * failure every later call returns the same error; end or abort then. */
ZN_API int zn_hf_writer_put_part(struct zn_hf_writer *w, const float *data, uint64_t n);

/* Host bytes a writer holds while values come, beside its tables (a few
 * hundred bytes a tensor): the buffer they are converted in, whatever
 * the model's size. */
ZN_API uint64_t zn_hf_writer_buffer_bytes(void);

/* Every value was put: publish the folder.  Each shard was written to a
 * hidden temporary name and fsynced as it completed; now they are renamed
 * to their final names, then model.safetensors.index.json and config.json
 * (each written to a temporary name, fsynced and renamed) and the folder
 * fsynced.  Model files of an earlier save the new set does not replace
 * (model-*-of-*.safetensors, model.safetensors, the index) are removed;
 * other files (tokenizer, ...) are left alone.  Frees w.  0 or -errno; on
 * failure the temporary files are removed. */
ZN_API int zn_hf_writer_end(struct zn_hf_writer *w);
/* Throw the folder being written away (temporary files removed; files
 * already in `dir` untouched).  Frees w; NULL is ignored. */
ZN_API void zn_hf_writer_abort(struct zn_hf_writer *w);

#ifdef __cplusplus
}
#endif
#endif
