/* What to change when a tier of the memory plan does not fit (see
 * internal.h).  Computed, not canned: each suggestion is the tier's need
 * under the config with that one change (need.c's functions on a changed
 * copy), with the figure it gives and whether that alone fits; for the
 * device, "all of the above together" when none does alone. */
#include "zn_common.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "plan/internal.h"

/* The device need of a variant of the config. */
static uint64_t device_if(const struct zn_config *c, const struct zn_plan_geom *g)
{
	struct zn_plan_tier t;
	memset(&t, 0, sizeof(t));
	return zn_plan_need_device(c, g, &t) ? UINT64_MAX : t.needed;
}

static uint64_t pageable_if(const struct zn_config *c, const struct zn_plan_geom *g)
{
	struct zn_plan_tier d, t, pin;
	memset(&d, 0, sizeof(d));
	memset(&t, 0, sizeof(t));
	memset(&pin, 0, sizeof(pin));
	if (zn_plan_need_device(c, g, &d) || zn_plan_need_pageable(c, g, &d, &t) ||
	    zn_plan_need_pinned(c, g, &pin, &t))
		return UINT64_MAX;
	return t.needed;
}

/* " (fits)" or " (not enough alone)": a suggestion's figure against the
 * tier's capacity. */
static const char *verdict(uint64_t need, uint64_t available)
{
	return need <= available ? " (fits)" : " (not enough alone)";
}

void zn_plan_advise_device(const struct zn_config *c, const struct zn_plan_geom *g,
			   struct zn_plan_tier *t)
{
	char a[32];
	uint64_t need;
	unsigned tried = 0;
	bool one_fits = false;
	struct zn_config *v = malloc(2 * sizeof(*v));
	if (!v)
		return;
	struct zn_config *all = v + 1; /* every change below at once */
	*all = *c;
	const struct zn_zero_config *z = &c->zero_optimization;
#define TRY_VARIANT(text, ...)                                                    \
	do {                                                                      \
		need = device_if(v, g);                                           \
		zn_plan_advice(t, text "%s", ##__VA_ARGS__, zn_plan_size(need, a),         \
			       verdict(need, t->available));                           \
		one_fits |= need <= t->available;                                 \
		tried++;                                                          \
	} while (0)
	if (z->offload_optimizer.device == ZN_OFFLOAD_NONE) {
		*v = *c;
		v->zero_optimization.offload_optimizer.device = ZN_OFFLOAD_CPU;
		all->zero_optimization.offload_optimizer.device = ZN_OFFLOAD_CPU;
		TRY_VARIANT("set zero_optimization.offload_optimizer.device: cpu (ZeRO-Offload: fp32 "
			    "master and Adam moments in host memory): the device then needs %s");
	}
	if (z->offload_param.device == ZN_OFFLOAD_NONE) {
		*v = *c;
		v->zero_optimization.stage = all->zero_optimization.stage = 3;
		v->zero_optimization.offload_param.device = ZN_OFFLOAD_CPU;
		all->zero_optimization.offload_param.device = ZN_OFFLOAD_CPU;
		if (v->zero_optimization.offload_optimizer.device == ZN_OFFLOAD_NONE)
			v->zero_optimization.offload_optimizer.device = ZN_OFFLOAD_CPU;
		/* Tensors below the persistence threshold would stay: say so
		 * when lowering it is what makes the difference. */
		const char *thr = "";
		uint64_t keep = v->zero_optimization.param_persistence_threshold;
		uint64_t with = device_if(v, g);
		v->zero_optimization.param_persistence_threshold = 0;
		if (device_if(v, g) < with) {
			thr = " and stage3_param_persistence_threshold: 0";
			all->zero_optimization.param_persistence_threshold = 0;
		} else {
			v->zero_optimization.param_persistence_threshold = keep;
		}
		TRY_VARIANT("set zero_optimization.stage: 3 with offload_param.device: cpu or nvme%s "
			    "(offload_optimizer.device cpu or nvme with it): parameters visit the "
			    "device a layer at a time, which then needs %s", thr);
	} else if (z->param_persistence_threshold) {
		*v = *c;
		v->zero_optimization.param_persistence_threshold = 0;
		all->zero_optimization.param_persistence_threshold = 0;
		if (device_if(v, g) < t->needed)
			TRY_VARIANT("lower zero_optimization.stage3_param_persistence_threshold from "
				    "%" PRIu64 " to 0 (tensors below it stay on the device): the "
				    "device then needs %s", z->param_persistence_threshold);
	}
	if (!c->activation_checkpointing.enabled || !c->activation_checkpointing.cpu_checkpointing) {
		*v = *c;
		v->activation_checkpointing.enabled = all->activation_checkpointing.enabled = true;
		v->activation_checkpointing.cpu_checkpointing = true;
		all->activation_checkpointing.cpu_checkpointing = true;
		TRY_VARIANT("set activation_checkpointing: {enabled: true, cpu_checkpointing: true} "
			    "(blocks recomputed in backward, their inputs kept in host memory): the "
			    "device then needs %s");
	}
	if (c->batch.micro_batch > 1) {
		/* The largest micro-batch that fits, else 1. */
		uint32_t b = c->batch.micro_batch - 1;
		*v = *c;
		for (; b > 1; b--) {
			v->batch.micro_batch = b;
			if (device_if(v, g) <= t->available)
				break;
		}
		v->batch.micro_batch = all->batch.micro_batch = b;
		TRY_VARIANT("lower train_micro_batch_size_per_gpu from %u to %u (raise "
			    "gradient_accumulation_steps to keep the batch): the device then needs %s",
			    c->batch.micro_batch, b);
	}
	if (!one_fits && tried > 1) {
		*v = *all;
		need = device_if(v, g);
		zn_plan_advice(t, "all of the above together: the device then needs %s%s",
			       zn_plan_size(need, a), verdict(need, t->available));
	}
#undef TRY_VARIANT
	if (t->described)
		zn_plan_advice(t, "or plan for a device with at least %s", zn_plan_size(t->needed, a));
	else if (c->device.type == ZN_DEVICE_CPU)
		zn_plan_advice(t, "or raise device.memory_limit to at least %s",
			       zn_plan_size(t->needed, a));
	else
		zn_plan_advice(t, "or use a GPU with at least %s free", zn_plan_size(t->needed, a));
	free(v);
}

void zn_plan_advise_pageable(const struct zn_config *c, const struct zn_plan_geom *g,
			     struct zn_plan_tier *t)
{
	char a[32];
	uint64_t need;
	struct zn_config *v = malloc(sizeof(*v));
	if (!v)
		return;
	const struct zn_zero_config *z = &c->zero_optimization;
#define TRY_VARIANT(text)                                                          \
	do {                                                                       \
		need = pageable_if(v, g);                                          \
		zn_plan_advice(t, text "%s", zn_plan_size(need, a), verdict(need, t->available)); \
	} while (0)
	if (z->offload_optimizer.device != ZN_OFFLOAD_NVME) {
		*v = *c;
		v->zero_optimization.offload_optimizer.device = ZN_OFFLOAD_NVME;
		TRY_VARIANT("set zero_optimization.offload_optimizer.device: nvme (ZeRO-Infinity) "
			    "with its nvme_path on an NVMe drive: host memory then needs %s");
	}
	if (z->offload_optimizer.device != ZN_OFFLOAD_NONE &&
	    c->data_types.grad_accum_dtype == ZN_GRAD_ACCUM_FP32) {
		*v = *c;
		v->data_types.grad_accum_dtype = ZN_GRAD_ACCUM_BF16;
		TRY_VARIANT("set data_types.grad_accum_dtype: bf16 (16-bit gradient accumulators): "
			    "host memory then needs %s");
	}
	if (z->offload_param.device == ZN_OFFLOAD_CPU) {
		*v = *c;
		v->zero_optimization.offload_param.device = ZN_OFFLOAD_NVME;
		TRY_VARIANT("set zero_optimization.offload_param.device: nvme: host memory then "
			    "needs %s");
	}
	if (z->offload_optimizer.device == ZN_OFFLOAD_NVME &&
	    z->offload_optimizer.gradients == ZN_OFFLOAD_GRADS_HOST &&
	    z->offload_param.device != ZN_OFFLOAD_NONE) {
		*v = *c;
		v->zero_optimization.offload_optimizer.gradients = ZN_OFFLOAD_GRADS_AUTO;
		TRY_VARIANT("set zero_optimization.offload_optimizer.gradients: nvme (beside the "
			    "optimizer states, no accumulator per parameter): host memory then "
			    "needs %s");
	}
	if (z->offload_param.device == ZN_OFFLOAD_NVME && z->offload_param.max_in_cpu > 0) {
		*v = *c;
		v->zero_optimization.offload_param.max_in_cpu = 0;
		TRY_VARIANT("set zero_optimization.offload_param.max_in_cpu: 0 (every parameter "
			    "home on NVMe): host memory then needs %s");
	}
	if (z->offload_param.device != ZN_OFFLOAD_NONE &&
	    (!z->tile_size || z->tile_size > (1u << 24))) {
		/* Buffers sized by the largest tensor shrink to a tile's. */
		*v = *c;
		v->zero_optimization.tile_size = 1u << 24;
		need = pageable_if(v, g);
		if (need < t->needed)
			zn_plan_advice(t, "set zero_optimization.tile_size: 16777216 (an untied "
					  "vocabulary's tensors in tiles of 16 Mi elements): host "
					  "memory then needs %s%s",
				       zn_plan_size(need, a), verdict(need, t->available));
	}
	if (c->device.type == ZN_DEVICE_CPU && !c->activation_checkpointing.enabled) {
		/* The cpu backend's device memory is host memory. */
		*v = *c;
		v->activation_checkpointing.enabled = true;
		TRY_VARIANT("set activation_checkpointing.enabled: true (the cpu backend's "
			    "activations are host memory): host memory then needs %s");
	}
	if (c->activation_checkpointing.cpu_checkpointing) {
		*v = *c;
		v->activation_checkpointing.cpu_checkpointing = false;
		TRY_VARIANT("set activation_checkpointing.cpu_checkpointing: false (kept inputs on "
			    "the device instead): host memory then needs %s");
	}
#undef TRY_VARIANT
	if (t->described) /* available: the described host less the pinned tier */
		zn_plan_advice(t, "or plan for a host with at least %s (with the pinned tier's)",
			       zn_plan_size(t->needed + (t->total - t->available), a));
	else
		zn_plan_advice(t, "or free host memory (other processes), or use a machine with at "
				  "least %s available", zn_plan_size(t->needed, a));
	free(v);
}

void zn_plan_advise_pinned(const struct zn_config *c, const struct zn_plan_geom *g,
			   struct zn_plan_tier *t, const struct zn_plan_host *h)
{
	char a[32];
	const struct zn_zero_config *z = &c->zero_optimization;
	if (z->offload_optimizer.device == ZN_OFFLOAD_NVME && z->offload_optimizer.pin_memory) {
		zn_plan_advice(t, "lower zero_optimization.sub_group_size (%" PRIu64 " elements: "
				  "each optimizer buffer holds 3 x 4 bytes per element) or "
				  "offload_optimizer.buffer_count (%u)",
			       zn_plan_sub_group(c, g), z->offload_optimizer.buffer_count);
	}
	if (z->offload_param.device == ZN_OFFLOAD_NVME && z->offload_param.pin_memory)
		zn_plan_advice(t, "lower zero_optimization.offload_param.buffer_count");
	if (h->memlock != UINT64_MAX && h->memlock < t->needed)
		zn_plan_advice(t, "raise the locked-memory limit to at least %s (`ulimit -l`, or "
				  "LimitMEMLOCK in a systemd unit)", zn_plan_size(t->needed, a));
	zn_plan_advice(t, "or set pin_memory: false in the offload sections (the buffers then come "
			  "from pageable memory; transfers get slower)");
}
