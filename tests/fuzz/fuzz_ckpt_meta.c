/* A checkpoint's metadata, as `zinc consolidate` and a resume read it from
 * the optimizer files' safetensors headers: zinc.model, the model's
 * description ("gpt2 n_layer=12 ..." or "llama arch=..."), parsed back into
 * an architecture whose tensors are then listed (engine/model/gpt2_arch.c,
 * llama_arch.c), and
 * the small structs carried as hex strings (zinc.data_pos,
 * zinc.loss_scaler; engine/train/format.c), and the sharded parts' tiles
 * (zinc.tile_rows, against an untied Llama's tensors).  The input is one
 * such string. */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "model/arch.h"
#include "train/internal.h"
#include "zinc/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	struct zn_arch a;

	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = 0;
	if (zn_arch_parse(s, &a) == 0) {
		struct zn_tensor_table tab = { 0 };
		char back[1024];
		struct zn_arch again;
		(void)zn_arch_num_params(&a);
		zn_arch_summary(&a, back, sizeof(back));
		/* What describe writes, parse reads back. */
		zn_arch_describe(&a, back, sizeof(back));
		if (zn_arch_parse(back, &again) != 0)
			abort();
		if (zn_tensor_table_build(&tab, &a) == 0)
			zn_tensor_table_free(&tab);
	}
	struct zn_data_pos pos;
	struct zn_loss_scaler sc;
	(void)tr_hex_decode(s, &pos, sizeof(pos));
	(void)tr_hex_decode(s, &sc, sizeof(sc));
	static struct zn_tensor_table llama;
	static bool built;
	if (!built) {
		struct zn_arch la;
		if (zn_arch_parse("llama arch=- L=1 C=8 NH=1 NKV=1 HS=8 I=16 V=32 maxT=8 "
				  "eps=0x1p-20 theta=0x1.388p+13 rope=0 factor=0x0p+0 low=0x0p+0 "
				  "high=0x0p+0 orig=0 tie=0 qkv_bias=0 mlp_bias=0 std=0x0p+0 bos=-1 "
				  "eos=-1 dtype=-", &la) ||
		    zn_tensor_table_build(&llama, &la))
			abort();
		built = true;
	}
	uint64_t rows[64] = { 0 };
	const char *bad;
	int len;
	if (llama.nt > 64)
		abort();
	if (tr_tile_rows_parse(s, &llama, rows, &bad, &len) == 0) {
		for (unsigned i = 0; i < llama.nt; i++) /* what it accepted is in range */
			if (rows[i] > (uint64_t)llama.d[i].shape[0])
				abort();
	} else if (bad < s || len < 0 || bad + len > s + size) {
		abort();
	}
	free(s);
	return 0;
}
