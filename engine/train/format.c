/* What a checkpoint's optimizer files hold, for the save, the loaders and
 * the consolidation alike: the states' names and metadata carried as hex
 * strings.  The model's own files (GPT-2's model.safetensors, a Llama's
 * Hugging Face folder) are the architecture's (model/arch.h's
 * zn_arch_writer and zn_arch_reader). */
#include "zn_common.h"

#include "train/internal.h"

#include <stdlib.h>
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

/* Sharded parts of tiled tensors: "name:rows;name:rows" (zinc.tile_rows)
 * into rows[i] for tensor i of tab (the others left alone).  Every entry
 * must name a 2-D tensor of the table and give 1 .. its rows; -1 and
 * *bad (the offending entry, *bad_len bytes) otherwise. */
int tr_tile_rows_parse(const char *v, const struct zn_tensor_table *tab, uint64_t *rows,
		       const char **bad, int *bad_len)
{
	while (v && *v) {
		const char *colon = strchr(v, ':'), *end = strchr(v, ';');
		if (!end)
			end = v + strlen(v);
		char *stop = NULL;
		unsigned long long r = 0;
		if (colon && colon < end && colon[1] >= '0' && colon[1] <= '9')
			r = strtoull(colon + 1, &stop, 10);
		unsigned i = 0;
		while (stop == end && i < tab->nt &&
		       (strlen(tab->d[i].name) != (size_t)(colon - v) ||
			strncmp(tab->d[i].name, v, (size_t)(colon - v)) != 0))
			i++;
		if (stop != end || i == tab->nt || tab->d[i].ndim != 2 || !r ||
		    r > (uint64_t)tab->d[i].shape[0]) {
			*bad = v;
			*bad_len = (int)ZN_MIN(end - v, 200);
			return -1;
		}
		rows[i] = r;
		v = *end ? end + 1 : end;
	}
	return 0;
}
