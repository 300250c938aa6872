/* What the models (gpt2.c, llama.c) share: activation memory (struct
 * zn_acts), activation checkpointing (struct zn_actckpt, with
 * ZN_ACTCKPT_RECOMPUTE), the lifecycle around them (struct zn_model_kind:
 * create's checks and allocation, the estimate's counting, destroy's
 * freeing), the storage-dtype check, the counter-based initialisation and
 * ZN_WITH_LAYER, the fetch/release bracket around a layer.  Private to the
 * models.
 *
 * Activation checkpointing, three modes over L blocks (BT = B * T rows):
 *   plain                   every block keeps its input and its working set
 *   recompute               every block keeps only its input (device); one
 *                           working set is shared and backward runs each
 *                           block's forward again from its input first
 *   + offload_activations   the kept inputs live in host memory: each
 *                           leaves the device after its block's forward and
 *                           comes back before its backward; two device
 *                           buffers (rin) take turns as block inputs
 * The kernels are deterministic, so the three give the same bits.
 */
#ifndef ZN_ENGINE_MODEL_COMMON_H
#define ZN_ENGINE_MODEL_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "zn_common.h"

#include "zinc/model.h"

/* Every activation allocation of a model, so that it can be freed (and
 * counted).  In counting mode nothing is allocated: the sizes are summed
 * (device ones rounded up to `align`) and a dummy non-NULL pointer comes
 * back, so that one allocation routine serves zn_*_create and
 * zn_*_activation_estimate and the two cannot drift. */
struct zn_acts {
	struct zn_model_mem mem;
	void **ptrs;         /* device allocations */
	size_t nptrs, cap;
	void **hptrs;        /* host allocations */
	size_t nhptrs, hcap;
	size_t bytes;        /* device bytes allocated, as asked */
	bool counting;
	uint64_t align;      /* counting: device allocations rounded up to this */
	uint64_t count_dev, count_host;
	int err;             /* the first failure; later calls return NULL */
};

void *zn_acts_dev(struct zn_acts *a, size_t bytes);
void *zn_acts_host(struct zn_acts *a, size_t bytes);
void zn_acts_free(struct zn_acts *a);

/* The block inputs and the checkpointing mode. */
struct zn_actckpt {
	bool recompute, offload, profile;
	int L;
	size_t in_bytes;        /* one block input, (BT, C) */
	void **kept;            /* L block inputs: device (plain, recompute), host (offload) */
	void *rin[2];           /* offload: the device inputs, block l uses rin[l % 2] */
	uint64_t prof_ns[3];    /* recompute, keep, restore */
	const struct zn_model_mem *mem;
};

/* Allocate the kept inputs (and rin) through `a`; mem must outlive c.
 * Returns a->err's state: 0 or -ENOMEM. */
int zn_actckpt_alloc(struct zn_actckpt *c, struct zn_acts *a, const struct zn_model_mem *mem,
		     int L, size_t in_bytes, bool recompute, bool offload, bool profile);
void zn_actckpt_free(struct zn_actckpt *c);
/* The device buffer block l reads its input from (and block l-1 writes). */
void *zn_actckpt_input(struct zn_actckpt *c, int l);
/* The device buffer block l writes its output to: block l+1's input, or
 * `last` (the final residual stream) after the last block. */
void *zn_actckpt_output(struct zn_actckpt *c, int l, void *last);
/* After block l's forward: its input leaves the device (offload only). */
int zn_actckpt_keep(struct zn_actckpt *c, int l);
/* Before block l's backward: its input comes back (offload only). */
int zn_actckpt_restore(struct zn_actckpt *c, int l);
/* profile: synchronize and read the clock (0 when not profiling). */
uint64_t zn_actckpt_prof_start(struct zn_actckpt *c);
void zn_actckpt_prof_end(struct zn_actckpt *c, int which, uint64_t t0);
void zn_actckpt_profile_take(struct zn_actckpt *c, struct zn_model_profile *out);

/* What differs between the models' lifecycles; the rest is written once
 * below. */
struct zn_model_kind {
	const char *name;            /* "GPT-2": begins the messages */
	/* Every activation of model m, through a (allocating or counting):
	 * a->err's state, 0 or -errno. */
	int (*alloc_all)(void *m, struct zn_acts *a);
	/* cpu_checkpointing's host-memory interface: to_device is checked too
	 * where set; offload_error is the message when it is missing. */
	bool offload_to_device;
	const char *offload_error;
	const char *alloc_advice;    /* ends the allocation-failure message */
};

/* A zeroed model of `size` bytes, or NULL with "out of memory" set. */
void *zn_model_calloc(size_t size);

/* zn_*_create after the model's setup (and after m's kernels, context and
 * mem are stored, alloc_all reading them): the host-memory interface
 * cpu_checkpointing needs, the storage dtype against ctx, then every
 * activation through kind->alloc_all on mem.  A failed allocation is worded
 * with the batch B x T, the cause, the bytes allocated so far and the
 * advice.  0 or -errno, the error set; the caller destroys m either way. */
int zn_model_alloc(const struct zn_model_kind *kind, void *m, struct zn_acts *a,
		   bool offload, enum zn_dtype act_dtype, const struct zn_kctx *ctx,
		   const struct zn_model_mem *mem, int B, int T);

/* zn_*_activation_estimate after the model's setup: kind->alloc_all in
 * counting mode, device allocations rounded up to align (0: 1); the device
 * and host bytes to the outputs that are not NULL.  0 or -errno. */
int zn_model_count(const struct zn_model_kind *kind, void *m, struct zn_acts *a, size_t align,
		   uint64_t *device_bytes, uint64_t *host_bytes);

/* zn_*_destroy: the activations, the checkpointing, the L working sets la,
 * then m itself. */
void zn_model_free(void *m, struct zn_acts *a, struct zn_actckpt *ck, void *la);

/* The storage dtype a model is configured for (act_dtype) exists and,
 * given a kernels context (NULL: none yet), is the one it stores.  0, or
 * -EINVAL naming `model`. */
int zn_model_check_storage(const char *model, enum zn_dtype act_dtype,
			   const struct zn_kctx *ctx);

/* Elements [off, off + n) of normal(0, std) values for tensor `index` of
 * a model seeded `seed`: splitmix64 from a state made of both
 * (counter-based: any tensor on its own, in any order, on any rank, and
 * any range of it, with the same values), Box-Muller in double. */
void zn_model_normal(uint64_t seed, uint64_t index, float std, uint64_t off, float *out,
		     size_t n);
/* Elements [off, off + n) of tensor d as initialised: d->init_value, or
 * normal(0, d->init_std) as above. */
void zn_model_init_range(const struct zn_param_desc *d, uint64_t seed, uint64_t index,
			 uint64_t off, uint64_t n, float *out);

/* fetch/release with the layer held in between: on an error the layer is
 * released before returning. */
#define ZN_WITH_LAYER(src, layer, grads, P, G, body)                                \
	do {                                                                        \
		ZN_TRY((src)->fetch((src)->user, (layer), (grads), (P), (G)));      \
		int rc_b = (body);                                                  \
		int rc_r = (src)->release((src)->user, (layer), (grads) && !rc_b); \
		ZN_TRY(rc_b);                                                       \
		ZN_TRY(rc_r);                                                       \
	} while (0)

/* Before a block's backward, with recompute only: `call`, the block's
 * forward run again from its kept input, timed as recompute (profile slot
 * 0). */
#define ZN_ACTCKPT_RECOMPUTE(c, call)                                       \
	do {                                                                \
		if ((c)->recompute) {                                       \
			uint64_t t0_r = zn_actckpt_prof_start(c);           \
			ZN_TRY(call);                                       \
			zn_actckpt_prof_end((c), 0, t0_r);                  \
		}                                                           \
	} while (0)

#endif
