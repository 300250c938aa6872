/* A Hugging Face config.json (engine/io/hf_config.c): the model's shape,
 * RoPE scaling, token ids and dtype, as `model.from` and `model.config`
 * read it, then the Llama model's own check of that shape and its
 * parameter count (engine/model/llama.c).  The input is the file. */
#include "fuzz.h"
#include "zinc/hf.h"
#include "zinc/llama.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *path = fuzz_write("config.json", data, size);
	struct zn_llama_config cfg;

	if (path && zn_hf_read_config(path, &cfg) == 0 && zn_llama_config_check(&cfg) == 0)
		(void)zn_llama_num_params(&cfg);
	return 0;
}
