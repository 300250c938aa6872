/* What the three parts of the Hugging Face folder code share (engine/io/
 * hf_config.c, hf_read.c, hf_write.c): the folder's file names and the
 * architectures and dtypes config.json may name. */
#ifndef ZN_IO_HF_INTERNAL_H
#define ZN_IO_HF_INTERNAL_H

#include <stdbool.h>

#include "zinc/safetensors.h"

/* Tensor bytes are used in place and written as they are in memory: the
 * safetensors format is little-endian, and so is every host zinc runs on. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors data is little-endian");

#define ZN_HF_CONFIG_NAME "config.json"
#define ZN_HF_SINGLE_NAME "model.safetensors"
#define ZN_HF_INDEX_NAME "model.safetensors.index.json"
/* config.json and the index are small (an index of a 400B-parameter model
 * is under 1 MiB); anything this large is not one of them. */
#define ZN_HF_MAX_JSON_BYTES (64u << 20)
#define ZN_HF_SUPPORTED_ARCHS "LlamaForCausalLM, MistralForCausalLM and Qwen2ForCausalLM"

/* Whether zinc reads and writes architecture `name` ("LlamaForCausalLM"). */
bool zn_hf_arch_supported(const char *name);

/* config.json's torch_dtype for a dtype name zinc writes ("bf16" or
 * "bfloat16" -> "bfloat16"), and its safetensors dtype in *dt (if dt is
 * not NULL); NULL for a name zinc does not write. */
const char *zn_hf_torch_dtype(const char *s, enum zn_st_dtype *dt);

#endif
