/* Host memory as a model's device memory, for the C tests and the oracle
 * helpers: the struct zn_model_mem callbacks over calloc/free/memcpy,
 * counting what the model allocates. */
#ifndef ZN_TESTS_MODEL_HOST_H
#define ZN_TESTS_MODEL_HOST_H

#include <stdint.h>

#include "zinc/model.h"

struct mh_counts {
	uint64_t dev;         /* device bytes, as asked */
	uint64_t dev_aligned; /* ... each rounded up to ZN_DEVICE_ALIGN (a zn_device's count) */
	uint64_t host;        /* host bytes (kept activations) */
	unsigned dev_allocs, host_allocs;
};

/* Callbacks that count into *c (zeroed by the caller; NULL: no counting).
 * Memory comes zeroed; copies are memcpy; no sync. */
struct zn_model_mem mh_host_mem(struct mh_counts *c);

#endif
