/* What each tier of the memory plan needs (see internal.h).
 *
 * It is written as one function per tier below (zn_plan_need_device,
 * _pinned, _pageable, and the swap stores of the nvme rows), each the list of the trainer's allocations on that tier, so
 * that a change there has one obvious place to be mirrored here.
 * tests/test_plan_cli.py trains with exactly the planned device memory (and
 * 256 bytes less) to hold the two together.  Letters, stated once:
 *
 *   P        parameters (elements) over the tensors of zn_gpt2_layer_params
 *   n_i      elements of tensor i; largest = max n_i
 *   d        bytes of a training element: 2 with fp16 or bf16, else 4 (the
 *            offload_param homes hold this dtype)
 *   ga       bytes of a gradient accumulator element: 2 when
 *            data_types.grad_accum_dtype is fp16/bf16, else 4
 *   B, T     micro-batch size, tokens per sample; BT = B * T
 *   oo, op   offload_optimizer.device, offload_param.device (none/cpu/nvme)
 *   sub      sub_group_size, capped at P (0: P), as the trainer caps it
 *   A256(x)  x rounded up to ZN_DEVICE_ALIGN: what a device allocation of x
 *            costs the device budget; device terms are sums of A256 per
 *            allocation (per tensor), not A256 of the sum
 *   A4K(x)   x rounded up to 4096 (swap extents, pinned buffers)
 *
 * Where op puts a tensor (the trainer's rule, `placement` below): with op
 * none every tensor is resident on the device; with op cpu/nvme a tensor of
 * fewer than stage3_param_persistence_threshold elements stays resident
 * (DeepSpeed's persistence), the others get a home: host memory with op
 * cpu; with op nvme host memory while the homes so far plus this one stay
 * within offload_param.max_in_cpu elements, NVMe after that.
 */
#include "zn_common.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "plan/internal.h"

void zn_plan_geom_free(struct zn_plan_geom *g)
{
	free(g->d);
	free(g->layer);
}

int zn_plan_geom_of(const struct zn_config *cfg, struct zn_plan_geom *g)
{
	memset(g, 0, sizeof(*g));
	/* The model exactly as engine/train.c's create() resolves it. */
	int rc = zn_arch_from_config(cfg, &g->a);
	if (rc)
		return rc;
	g->nlayers = zn_arch_layers(&g->a);
	size_t cap = (size_t)g->nlayers * ZN_ARCH_LAYER_TENSORS_MAX;
	g->d = calloc(cap, sizeof(*g->d));
	g->layer = calloc(cap, sizeof(*g->layer));
	if (!g->d || !g->layer) {
		zn_plan_geom_free(g);
		return zn_error(-ENOMEM, "memory plan: out of memory");
	}
	for (unsigned l = 0; l < g->nlayers; l++) {
		unsigned n = zn_arch_layer_params(&g->a, l, g->d + g->nt);
		uint64_t elems = 0;
		for (unsigned i = 0; i < n; i++, g->nt++) {
			const struct zn_param_desc *d = &g->d[g->nt];
			g->layer[g->nt] = l;
			elems += d->numel;
			if (d->numel > g->largest) {
				g->largest = d->numel;
				g->largest_name = d->name;
			}
		}
		g->P += elems;
		g->largest_layer = ZN_MAX(g->largest_layer, elems);
	}
	return 0;
}

/* ---- settings the formulas read ------------------------------------------ */

unsigned zn_plan_elem_bytes(const struct zn_config *c) /* d */
{
	return c->fp16.enabled || c->bf16.enabled ? 2 : 4;
}

static unsigned accum_bytes(const struct zn_config *c) /* ga */
{
	return c->data_types.grad_accum_dtype == ZN_GRAD_ACCUM_FP32 ? 4 : 2;
}

uint64_t zn_plan_sub_group(const struct zn_config *c, const struct zn_plan_geom *g)
{
	uint64_t sub = c->zero_optimization.sub_group_size;
	return !sub || sub > g->P ? g->P : sub;
}

const char *zn_plan_dtype_name(const struct zn_config *c)
{
	return c->fp16.enabled ? "fp16" : c->bf16.enabled ? "bf16" : "fp32";
}

/* The model with the variant's activation checkpointing. */
static struct zn_arch model_of(const struct zn_config *c, const struct zn_plan_geom *g)
{
	struct zn_arch m = g->a;
	m.g.recompute = m.l.recompute = c->activation_checkpointing.enabled;
	m.g.offload_activations = m.l.offload_activations =
		c->activation_checkpointing.cpu_checkpointing;
	return m;
}
/* ---- where the parameters live ------------------------------------------- */

struct placed {
	uint64_t resident;       /* sum of A256(4 n_i) over device-resident tensors */
	uint64_t resident_elems; /* their elements */
	uint64_t off0, off_head, off_block; /* the same over the offloaded tensors of
					     * layer 0, layer L+1, the largest block */
	uint64_t host_elems;     /* elements with a home in host memory */
	uint64_t nvme_bytes;     /* sum of A4K(d n_i) over NVMe homes */
	uint64_t nvme_largest;   /* elements of the largest NVMe-home tensor */
	const char *nvme_largest_name;
	unsigned offloaded;      /* tensors with a home */
};

/* The trainer's rule (create() and param_homes_setup()), tensor by
 * tensor in order. */
static void placement(const struct zn_config *c, const struct zn_plan_geom *g, struct placed *pl)
{
	const struct zn_zero_config *z = &c->zero_optimization;
	const int op = z->offload_param.device;
	uint64_t *layer_off = calloc(g->nlayers, sizeof(uint64_t));

	memset(pl, 0, sizeof(*pl));
	pl->nvme_largest_name = "";
	for (unsigned i = 0; i < g->nt; i++) {
		const uint64_t n = g->d[i].numel, dev = A256(4 * n);
		if (op == ZN_OFFLOAD_NONE || n < z->param_persistence_threshold) {
			pl->resident += dev;
			pl->resident_elems += n;
			continue;
		}
		pl->offloaded++;
		if (layer_off)
			layer_off[g->layer[i]] += dev;
		if (op == ZN_OFFLOAD_NVME && pl->host_elems + n > z->offload_param.max_in_cpu) {
			pl->nvme_bytes += A4K(n * zn_plan_elem_bytes(c));
			if (n > pl->nvme_largest) {
				pl->nvme_largest = n;
				pl->nvme_largest_name = g->d[i].name;
			}
		} else {
			pl->host_elems += n;
		}
	}
	for (unsigned l = 0; layer_off && l < g->nlayers; l++) {
		if (l == 0)
			pl->off0 = layer_off[l];
		else if (l == g->nlayers - 1)
			pl->off_head = layer_off[l];
		else
			pl->off_block = ZN_MAX(pl->off_block, layer_off[l]);
	}
	free(layer_off);
}

/* ---- what each tier needs ---------------------------------------------------
 *
 * Each function fills t->items (and so t->needed) from the config alone;
 * the suggestions call them again on modified copies of the config. */

/* Device.
 *   resident tensors (all with op none): parameters and gradients, fp32,
 *              2 x sum A256(4 n_i)
 *   oo none:   master, exp_avg, exp_avg_sq of every tensor, 3 x sum
 *              A256(4 n_i), and the norm and overflow scalars A256(8) + A256(4)
 *   offloaded tensors (op cpu/nvme): the layers on the device at once.  A
 *              fetch allocates a layer's parameters, a fetch for backward its
 *              gradients too; a release with final gradients frees those, the
 *              last release the parameters.  The classifier holds layers L+1
 *              and 0 (tied wte) with gradients; layer 0's gradients then stay
 *              until the encoder's backward, beside each block's parameters
 *              and gradients: max(2 (layer0 + layerL+1), layer0 + 2 block),
 *              each over the layer's offloaded tensors
 *   16-bit training or accumulators: scratch A256(2 largest)
 *   16-bit on cuda: the 16-bit copies the kernels compute with, half the
 *              resident parameters + gradients and of the offloaded layers
 *   batch:     tokens and targets, 2 A256(4 BT)
 *   activations: zn_gpt2_activation_estimate(align ZN_DEVICE_ALIGN) */
int zn_plan_need_device(const struct zn_config *c, const struct zn_plan_geom *g,
			struct zn_plan_tier *t)
{
	const int op = c->zero_optimization.offload_param.device;
	const int oo = c->zero_optimization.offload_optimizer.device;
	const uint64_t BT = (uint64_t)c->batch.micro_batch * c->model.seq_len;
	struct placed pl;
	uint64_t act = 0, all = 0;

	t->nitems = 0;
	t->needed = 0;
	placement(c, g, &pl);
	for (unsigned i = 0; i < g->nt; i++)
		all += A256(4 * (uint64_t)g->d[i].numel);
	const char *which = op == ZN_OFFLOAD_NONE ? "every layer resident"
						 : "tensors below the persistence threshold";
	zn_plan_item(t, pl.resident, "parameters (fp32, %s)", which);
	zn_plan_item(t, pl.resident, "gradients (fp32, %s)", which);
	if (oo == ZN_OFFLOAD_NONE) {
		zn_plan_item(t, 3 * all, "optimizer states (fp32 master, exp_avg, exp_avg_sq)");
		zn_plan_item(t, A256(sizeof(double)) + A256(sizeof(int32_t)),
			     "gradient norm and overflow flag");
	}
	const uint64_t in_use = ZN_MAX(2 * (pl.off0 + pl.off_head), pl.off0 + 2 * pl.off_block);
	zn_plan_item(t, in_use, "offloaded layers in use (fp32 parameters + gradients)");
	if (zn_plan_elem_bytes(c) == 2 || accum_bytes(c) == 2)
		zn_plan_item(t, A256(2 * g->largest), "16-bit scratch (largest tensor)");
	/* 16-bit training on cuda: the model computes on 16-bit copies of what
	 * it is given (hand_out in train.c): 2 + 2 bytes per element beside the
	 * fp32 ones, about half as much again (alignment aside). */
	if (zn_config_storage_dtype(c) != ZN_DTYPE_F32)
		zn_plan_item(t, pl.resident + in_use / 2,
			     "16-bit copies the kernels compute with (parameters + gradients)");
	zn_plan_item(t, 2 * A256(4 * BT), "batch (tokens, targets)");
	/* cuda: the kernels' context takes its workspaces with cudaMalloc,
	 * outside the device budget but out of the same free memory:
	 * DEFAULT_WORKSPACE + LT_WORKSPACE of kernels/cuda/kernels.cu. */
	if (c->device.type == ZN_DEVICE_CUDA)
		zn_plan_item(t, (64u << 20) + (32u << 20), "kernel workspaces (cuda: attention, "
							   "cuBLASLt)");
	struct zn_arch m = model_of(c, g);
	int rc = zn_arch_activation_estimate(&m, (int)c->batch.micro_batch, (int)c->model.seq_len,
					     ZN_DEVICE_ALIGN, &act, NULL);
	if (rc)
		return rc;
	zn_plan_item(t, act, "activations (%s)",
		     !c->activation_checkpointing.enabled ? "every block kept"
		     : c->activation_checkpointing.cpu_checkpointing
			 ? "recomputed; block inputs in host memory"
					 : "recomputed; block inputs kept");
	return 0;
}

/* Bytes of the optimizer swapper's buffers (oo nvme): slots x 3 arrays x
 * A4K(4 sub), slots as offload/optswap.c counts them. */
static uint64_t optswap_buffers(const struct zn_config *c, const struct zn_plan_geom *g)
{
	const struct zn_offload_optimizer_config *oc = &c->zero_optimization.offload_optimizer;
	unsigned slots = 1u + oc->pipeline_read + oc->pipeline_write;
	if (oc->pipeline_read && oc->buffer_count > slots)
		slots = oc->buffer_count;
	return (uint64_t)slots * 3 * A4K(4 * zn_plan_sub_group(c, g));
}

/* Bytes of the parameter buffer pool (op nvme with NVMe homes): as the
 * trainer asks zn_offload_param_pool for it (the largest NVMe-home tensor,
 * d bytes, prefetch depth 1): buffer_count x A4K(buffer bytes).  -EINVAL
 * (message set) when offload_param.buffer_size is below that tensor. */
static int param_pool(const struct zn_config *c, const struct placed *pl, uint64_t *bytes)
{
	struct zn_bufpool_config bc;
	*bytes = 0;
	if (!pl->nvme_bytes)
		return 0;
	int rc = zn_offload_param_pool(&c->zero_optimization.offload_param, pl->nvme_largest,
				       pl->nvme_largest_name, zn_plan_elem_bytes(c), 1, &bc);
	if (rc)
		return rc;
	*bytes = (uint64_t)bc.buffer_count * A4K(bc.buffer_bytes);
	return 0;
}

/* Pinned host: the buffers the NVMe tiers stream through, when their
 * section asks for pin_memory (unpinned ones go to `pageable`).
 *   oo nvme:  the optimizer swapper's slots (optswap_buffers)
 *   op nvme:  the parameter pool (param_pool), when any home is on NVMe */
int zn_plan_need_pinned(const struct zn_config *c, const struct zn_plan_geom *g,
			struct zn_plan_tier *t, struct zn_plan_tier *pageable)
{
	const struct zn_zero_config *z = &c->zero_optimization;
	t->nitems = 0;
	t->needed = 0;
	if (z->offload_optimizer.device == ZN_OFFLOAD_NVME) {
		struct zn_plan_tier *to = z->offload_optimizer.pin_memory ? t : pageable;
		zn_plan_item(to, optswap_buffers(c, g), "optimizer swap buffers (sub-groups of %" PRIu64
							" elements)%s", zn_plan_sub_group(c, g),
			     to == t ? "" : ", pin_memory: false");
	}
	if (z->offload_param.device == ZN_OFFLOAD_NVME) {
		struct placed pl;
		uint64_t bytes;
		placement(c, g, &pl);
		int rc = param_pool(c, &pl, &bytes);
		if (rc)
			return rc;
		struct zn_plan_tier *to = z->offload_param.pin_memory ? t : pageable;
		zn_plan_item(to, bytes, "parameter swap buffers%s", to == t ? "" : ", pin_memory: false");
	}
	return 0;
}

/* Pageable host (zn_plan_need_pinned adds unpinned swap buffers here too):
 *   oo cpu:   master, exp_avg, exp_avg_sq, 12 P
 *   oo none:  the same as staging for the device optimizer's checkpoints
 *   oo cpu/nvme: gradient accumulators ga P, and with accumulation a
 *             gradient staging buffer 4 largest
 *   oo nvme:  staging through which the states reach NVMe at the start and
 *             a checkpoint at a save: one sub-group's 3 arrays 12 sub, and
 *             12 largest (start) or 16 largest (save: also a transposed copy)
 *   oo cpu/none, with checkpoint.dir: a transposed tensor at a save, 4 largest
 *   op cpu/nvme: parameter homes in host memory, d x their elements
 *   op cpu/nvme with oo nvme: the overlapped update's staging of the
 *             resident tensors' new values, 4 x their elements
 *   batch:    tokens, targets and per-token losses, 3 x 4 BT
 *   cpu_checkpointing: the kept block inputs (zn_gpt2_activation_estimate)
 *   cpu backend: the device's bytes (its memory is host memory) */
int zn_plan_need_pageable(const struct zn_config *c, const struct zn_plan_geom *g,
			  const struct zn_plan_tier *device, struct zn_plan_tier *t)
{
	const int oo = c->zero_optimization.offload_optimizer.device;
	const uint64_t BT = (uint64_t)c->batch.micro_batch * c->model.seq_len;
	const bool ckpt = c->checkpoint.dir[0] != 0;
	struct placed pl;

	t->nitems = 0;
	t->needed = 0;
	placement(c, g, &pl);
	if (oo == ZN_OFFLOAD_CPU)
		zn_plan_item(t, 12 * g->P, "optimizer states (fp32 master, exp_avg, exp_avg_sq)");
	else if (oo == ZN_OFFLOAD_NONE)
		zn_plan_item(t, 12 * g->P, "checkpoint staging (master, exp_avg, exp_avg_sq)");
	if (oo != ZN_OFFLOAD_NONE) {
		zn_plan_item(t, accum_bytes(c) * g->P, "gradient accumulators (%s)",
			     accum_bytes(c) == 4 ? "fp32" : "16-bit");
		if (c->batch.grad_accum > 1)
			zn_plan_item(t, 4 * g->largest, "gradient staging (largest tensor)");
	}
	if (oo == ZN_OFFLOAD_NVME)
		zn_plan_item(t, 12 * zn_plan_sub_group(c, g) + (ckpt ? 16 : 12) * g->largest,
			     "start-up%s staging (a sub-group of states, the largest tensor)",
			     ckpt ? " and checkpoint" : "");
	else if (ckpt)
		zn_plan_item(t, 4 * g->largest, "checkpoint staging (a transposed tensor)");
	zn_plan_item(t, zn_plan_elem_bytes(c) * pl.host_elems, "parameter homes in host memory (%s)",
		     zn_plan_dtype_name(c));
	/* Stage 3 with NVMe optimizer states: the update overlaps the next
	 * forward and stages the resident tensors' new values. */
	if (oo == ZN_OFFLOAD_NVME && c->zero_optimization.offload_param.device != ZN_OFFLOAD_NONE)
		zn_plan_item(t, 4 * pl.resident_elems, "overlapped update: resident tensors' new values");
	zn_plan_item(t, 3 * 4 * BT, "batch (tokens, targets, losses)");
	uint64_t host = 0;
	struct zn_arch m = model_of(c, g);
	int rc = zn_arch_activation_estimate(&m, (int)c->batch.micro_batch, (int)c->model.seq_len,
					     ZN_DEVICE_ALIGN, NULL, &host);
	if (rc)
		return rc;
	zn_plan_item(t, host, "kept block inputs (cpu_checkpointing)");
	if (c->device.type == ZN_DEVICE_CPU)
		zn_plan_item(t, device->needed, "device memory (cpu backend)");
	return 0;
}

/* Swap store capacity per section:
 *   oo nvme:  zn_optswap_store_bytes({P, sub, 3 states, buffer_count,
 *             pipeline_read, pipeline_write}): every sub-group's states plus
 *             one spare per slot
 *   op nvme:  sum of A4K(d n_i) over the NVMe homes (placement) */
uint64_t zn_plan_optimizer_store(const struct zn_config *c, const struct zn_plan_geom *g)
{
	const struct zn_offload_optimizer_config *oc = &c->zero_optimization.offload_optimizer;
	struct zn_optswap_config oc2 = {
		.params = g->P, .sub_group_size = zn_plan_sub_group(c, g), .nstates = 3,
		.buffer_count = oc->buffer_count, .pipeline_read = oc->pipeline_read,
		.pipeline_write = oc->pipeline_write,
	};
	return zn_optswap_store_bytes(&oc2);
}

uint64_t zn_plan_param_store(const struct zn_config *c, const struct zn_plan_geom *g)
{
	struct placed pl;
	placement(c, g, &pl);
	return pl.nvme_bytes;
}
