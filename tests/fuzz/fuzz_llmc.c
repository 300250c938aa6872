/* llm.c's GPT-2 checkpoint (gpt2_124M.bin; engine/model/gpt2_arch.c): its
 * 256-int32 header checked against the model section, then every tensor
 * read from its offset.  The input is the file; the model is a tiny GPT-2
 * (L 1, NH 1, C 4, V 8 padded to 128, maxT 4), so a seed holding that
 * header and its 3,556 floats opens. */
#include <stdlib.h>

#include "fuzz.h"
#include "model/arch.h"
#include "zinc/model.h"

static struct zn_arch arch;
static struct zn_tensor_table tab;
static int ready;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	arch.ops = &zn_arch_gpt2_ops;
	arch.g = (struct zn_gpt2_config){ .n_layer = 1, .n_head = 1, .n_embd = 4, .vocab_size = 8,
					  .max_seq_len = 4 };
	ready = zn_gpt2_config_check(&arch.g) == 0 && zn_tensor_table_build(&tab, &arch) == 0;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *path = fuzz_write("model.bin", data, size);
	struct zn_arch_reader *r;
	float *values;

	if (!ready || !path || zn_arch_reader_open(&arch, path, tab.d, tab.nt, &r) != 0)
		return 0;
	if ((values = malloc(tab.largest * sizeof(float)))) {
		for (unsigned i = 0; i < tab.nt; i++)
			(void)zn_arch_reader_get(r, i, values);
		/* Past a tensor's end: -ERANGE, nothing read. */
		(void)zn_arch_reader_get_range(r, 0, tab.d[0].numel, 1, values);
	}
	free(values);
	zn_arch_reader_close(r);
	return 0;
}
