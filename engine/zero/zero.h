/* ZeRO's rules: which of a tensor's model states a rank holds, and where.
 * Private to engine/; the one place the trainer (engine/train/) allocates
 * by and the memory plan (engine/plan/) counts by, so that the two cannot
 * disagree about a byte.
 *
 * Partitioning over W ranks: every tensor of n elements is cut into W parts
 * of ceil(n / W) elements (the last ones shorter or empty); rank r owns
 * elements [lo, lo + nown).  Stage 1 partitions the optimizer states
 * (master, m, v), stage 2 the gradient accumulators too, stage 3 the
 * parameters too.  One rank: lo 0, nown = n. */
#ifndef ZN_ENGINE_ZERO_H
#define ZN_ENGINE_ZERO_H

#include <stdbool.h>
#include <stdint.h>

#include "zinc/configfile.h"
#include "zinc/kernels.h"
#include "zinc/train.h"

/* The rules for rank `rank` of `world` under one config. */
struct zn_zero_rules {
	int rank, world;
	unsigned stage;
	uint64_t parts;          /* stage >= 1: every tensor in `world` parts */
	uint64_t threshold;      /* stage3_param_persistence_threshold */
	bool offload_param, device_opt;
	bool partition_params;   /* stage 3: parameters in homes (offload_param)
	                          * or, on several ranks, in parts on the device */
	bool host_grads;         /* gradient accumulators in host memory: for the
	                          * CPU optimizer, or reduced across ranks on the
	                          * host */
	enum zn_dtype dtype;     /* training: what parameters and gradients are
	                          * rounded to */
	enum zn_dtype gdt, hdt;  /* the host gradient accumulators', the homes' */
};

void zn_zero_rules_init(struct zn_zero_rules *z, const struct zn_config *cfg, int rank,
			int world);

/* One tensor's share: parts of ceil(numel / parts) elements, this rank's
 * [lo, lo + nown); whether it stays on the device whole (DeepSpeed's
 * persistence: small tensors are not worth a round trip each layer) and
 * whether its gradients accumulate there over a step (stages 2 and 3 on
 * several ranks reduce them as each layer's become final instead). */
struct zn_zero_share {
	uint64_t part, lo, nown;
	bool resident, dev_grads;
};

struct zn_zero_share zn_zero_share_of(const struct zn_zero_rules *z, uint64_t numel);

/* Adds what the share holds of the model states to *m. */
void zn_zero_count(const struct zn_zero_rules *z, uint64_t numel, const struct zn_zero_share *s,
		   struct zn_rank_memory *m);

/* Where part r of W of an n-element tensor starts, and its length. */
void zn_zero_part(uint64_t n, int W, int r, uint64_t *lo, uint64_t *len);

#endif
