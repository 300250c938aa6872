/* What a checkpoint's optimizer files hold, for the save, the loaders and
 * the consolidation alike: the states' names and metadata carried as hex
 * strings.  The model's own files (GPT-2's model.safetensors, a Llama's
 * Hugging Face folder) are the architecture's (model/arch.h's
 * zn_arch_writer and zn_arch_reader). */
#include "zn_common.h"

#include "train/internal.h"

#include <string.h>

const char *const tr_state_suffix[3] = { "master", "exp_avg", "exp_avg_sq" };

/* Checkpoint metadata carries small binary structs (data position, loss
 * scaler) as hex strings. */
void tr_hex_encode(const void *p, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		snprintf(out + 2 * i, 3, "%02x", ((const uint8_t *)p)[i]);
}

int tr_hex_decode(const char *hex, void *p, size_t n)
{
	if (!hex || strlen(hex) != 2 * n)
		return -1;
	for (size_t i = 0; i < n; i++) {
		unsigned b;
		if (sscanf(hex + 2 * i, "%2x", &b) != 1)
			return -1;
		((uint8_t *)p)[i] = (uint8_t)b;
	}
	return 0;
}
