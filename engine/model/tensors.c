/* The model's tensor table (struct zn_tensor_table): every tensor's
 * description in model order and each layer's range of them, built once
 * from the architecture for whoever walks the model's tensors. */
#include "zn_common.h"

#include "model/arch.h"

#include <stdlib.h>
#include <string.h>

int zn_tensor_table_build(struct zn_tensor_table *tab, const struct zn_arch *a)
{
	struct zn_param_desc d[ZN_ARCH_LAYER_TENSORS_MAX];
	memset(tab, 0, sizeof(*tab));
	tab->nlayers = zn_arch_layers(a);
	for (unsigned l = 0; l < tab->nlayers; l++)
		tab->nt += zn_arch_layer_params(a, l, d);
	tab->d = calloc(tab->nt ? tab->nt : 1, sizeof(*tab->d));
	tab->first = calloc(tab->nlayers ? tab->nlayers : 1, sizeof(*tab->first));
	tab->count = calloc(tab->nlayers ? tab->nlayers : 1, sizeof(*tab->count));
	if (!tab->d || !tab->first || !tab->count) {
		zn_tensor_table_free(tab);
		return zn_error(-ENOMEM, "out of memory for the model's tensor table");
	}
	unsigned nt = 0;
	for (unsigned l = 0; l < tab->nlayers; l++) {
		/* (the arch fills up to ZN_ARCH_LAYER_TENSORS_MAX entries) */
		tab->first[l] = nt;
		tab->count[l] = zn_arch_layer_params(a, l, d);
		memcpy(tab->d + nt, d, tab->count[l] * sizeof(*d));
		for (unsigned i = nt; i < nt + tab->count[l]; i++) {
			tab->total += tab->d[i].numel;
			tab->largest = ZN_MAX(tab->largest, tab->d[i].numel);
		}
		nt += tab->count[l];
	}
	return 0;
}

void zn_tensor_table_free(struct zn_tensor_table *tab)
{
	free(tab->d);
	free(tab->first);
	free(tab->count);
	memset(tab, 0, sizeof(*tab));
}
