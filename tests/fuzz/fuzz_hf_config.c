/* A Hugging Face config.json (engine/io/hf_config.c): the model's shape,
 * RoPE scaling, token ids and dtype, as `model.from` and `model.config`
 * read it.  The input is the file. */
#include "fuzz.h"
#include "zinc/hf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *path = fuzz_write("config.json", data, size);
	struct zn_llama_config cfg;

	if (path)
		(void)zn_hf_read_config(path, &cfg);
	return 0;
}
