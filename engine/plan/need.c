/* What each tier of the memory plan needs (see internal.h): one function
 * per tier, each the list of the trainer's allocations on that tier.  The
 * model states are placed by engine/zero's rules, tensor by tensor, as the
 * trainer places them (zn_zero_share_of, zn_zero_arrays_of, zn_zero_home),
 * so that the plan restates none of them; what is listed here beside them
 * is the trainer's own buffers (scratch, staging, the batch) and the
 * model's activations.  tests/test_plan_cli.py trains with exactly the
 * planned device memory (and 256 bytes less) to hold the two together.
 *
 * The plan is one rank's (rank 0 of 1): every tensor whole.  Letters:
 *
 *   largest  elements of the model's largest tensor
 *   B, T     micro-batch size, tokens per sample; BT = B * T
 *   sub      elements per sub-group of NVMe optimizer states
 *            (zn_zero_sub_group)
 *   A256(x)  x rounded up to ZN_DEVICE_ALIGN: device terms are sums of
 *            A256 per allocation (per tensor), not A256 of the sum
 *   A4K(x)   x rounded up to 4096 (swap extents, pinned buffers)
 */
#include "zn_common.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "plan/internal.h"

void zn_plan_geom_free(struct zn_plan_geom *g)
{
	zn_tensor_table_free(&g->tab);
}

int zn_plan_geom_of(const struct zn_config *cfg, struct zn_plan_geom *g)
{
	/* The model and its tensors exactly as the trainer's create() resolves
	 * them. */
	struct zn_arch a;
	int rc = zn_arch_from_config(cfg, &a);
	if (rc) {
		memset(g, 0, sizeof(*g));
		return rc;
	}
	return zn_plan_geom_of_arch(&a, g);
}

/* The model with the variant's activation checkpointing. */
static struct zn_arch model_of(const struct zn_config *c, const struct zn_plan_geom *g)
{
	struct zn_arch m = g->a;
	zn_arch_set_checkpointing(&m, c->activation_checkpointing.enabled,
				  c->activation_checkpointing.cpu_checkpointing);
	return m;
}

/* ---- where the model states live ------------------------------------------ */

/* engine/zero's arrays of every tensor, summed per tier. */
struct placed {
	struct zn_zero_rules z;
	uint64_t dparam, dgrad;  /* device, sums of A256: parameters and gradients
	                          * kept there (zn_zero_arrays dparam, dgrad) */
	uint64_t dcopy16;        /* ... and of their 16-bit copies, A256 each */
	uint64_t dstate;         /* device, sum of A256: master, m, v */
	uint64_t in_use;         /* device: the offloaded layers there at once */
	uint64_t hstate, hgrad;  /* host: master, m, v; gradient accumulators */
	uint64_t staged;         /* host: the overlapped update's staging */
	uint64_t own;            /* elements whose optimizer states the rank keeps */
	uint64_t gsums;          /* elements of the largest tensor (tile) whose
	                          * gradients gather on NVMe (nvme_grad) */
	uint64_t unit;           /* elements that move at once at most: the largest
	                          * tensor, or tile of a tiled one (zn_zero_unit) */
	struct zn_zero_homes homes;
	bool folds;              /* a tiled tied embedding (zn_zero_fold) */
	uint64_t fold_nvme;      /* ... its folds' part of homes.nvme_bytes */
};

/* The offloaded layers on the device at once, from each layer's fetched
 * bytes: parameters p and gradients g (fp32, or 16-bit with dev16), sums of
 * A256 over its tensors' zn_zero_arrays fparam and fgrad (what is not kept
 * there).  A fetch allocates a layer's parameters, a fetch for backward
 * its gradients too; a release with final gradients frees those, the last
 * release the parameters.  The classifier holds the head (layer L+1) and
 * layer 0 (the tied wte) with gradients; layer 0's gradients then wait
 * until the encoder's backward, beside each block's parameters and
 * gradients: as they are, or (dev16) folded into an fp32 sum w0 made at
 * the classifier's release (ffold) while its 16-bit ones are freed.  An
 * untied model's layer 0 is on the device only for the encoder. */
struct layers_in_use {
	uint64_t p0, g0, w0, phead, ghead, block; /* block: the largest p + g */
};

static void layer_done(struct layers_in_use *u, const struct zn_plan_geom *g, unsigned l,
		       uint64_t p, uint64_t gr, uint64_t fold)
{
	if (l == 0) {
		u->p0 = p;
		u->g0 = gr;
		u->w0 = fold;
	} else if (l == g->tab.nlayers - 1) {
		u->phead = p;
		u->ghead = gr;
	} else {
		u->block = ZN_MAX(u->block, p + gr);
	}
}

void zn_plan_zero_rules(struct zn_zero_rules *z, const struct zn_config *c,
			const struct zn_plan_geom *g)
{
	zn_zero_rules_init(z, c, 0, 1);
	/* The hidden-size "auto"s as the trainer settles them once the model
	 * is known: here from the geometry's model. */
	if (c->zero_optimization.param_persistence_threshold == UINT64_MAX) {
		struct zn_config *r = malloc(sizeof(*r));
		if (!r)
			return;
		*r = *c;
		zn_config_resolve_hidden(r, (uint64_t)zn_arch_dims(&g->a).n_embd);
		zn_zero_rules_init(z, r, 0, 1);
		free(r);
	}
	z->largest = g->tab.largest;
}

static void placement(const struct zn_config *c, const struct zn_plan_geom *g, struct placed *pl)
{
	struct layers_in_use u = { 0 };
	uint64_t lp = 0, lg = 0, lf = 0; /* the current layer's fetched bytes */

	memset(pl, 0, sizeof(*pl));
	zn_plan_zero_rules(&pl->z, c, g);
	for (unsigned l = 0; l < g->tab.nlayers; l++) {
		for (unsigned i = g->tab.first[l]; i < g->tab.first[l] + g->tab.count[l]; i++) {
			const struct zn_zero_share s = zn_zero_share_of(&pl->z, &g->tab.d[i]);
			struct zn_zero_arrays a;
			zn_zero_arrays_of(&pl->z, &g->tab.d[i], &s, &a);
			pl->dparam += A256(a.dparam);
			pl->dgrad += A256(a.dgrad);
			pl->dcopy16 += A256(a.dparam / 2) + A256(a.dgrad / 2);
			pl->dstate += ZN_ZERO_STATES * A256(a.dstate);
			pl->hstate += ZN_ZERO_STATES * a.hstate;
			pl->hgrad += a.hgrad;
			pl->staged += a.staged;
			pl->own += s.nown;
			const uint64_t unit = zn_zero_unit(&g->tab.d[i], &s);
			pl->unit = ZN_MAX(pl->unit, unit);
			if (a.nvme_grad)
				pl->gsums = ZN_MAX(pl->gsums, unit);
			/* a home per tile of a tiled tensor */
			for (uint64_t k = 0; a.home && k < ZN_DIV_ROUND_UP(s.nown, unit); k++)
				zn_zero_home(&pl->z, &pl->homes, ZN_MIN(unit, s.nown - k * unit),
					     g->tab.d[i].name);
			pl->folds |= zn_zero_has_folds(&g->tab.d[i], &s);
			lp += A256(a.fparam);
			lg += A256(a.fgrad);
			lf += A256(a.ffold);
		}
		layer_done(&u, g, l, lp, lg, lf);
		lp = lg = lf = 0;
	}
	/* A tiled tied embedding's folds, once every home is placed (as the
	 * trainer places them: their parts follow the largest NVMe home). */
	const uint64_t homes_nvme = pl->homes.nvme_bytes;
	for (unsigned i = 0; pl->folds && i < g->tab.nt; i++) {
		const struct zn_param_desc *d = &g->tab.d[i];
		const struct zn_zero_share s = zn_zero_share_of(&pl->z, d);
		if (!zn_zero_has_folds(d, &s))
			continue;
		uint64_t first, n;
		zn_zero_tile(&pl->z, d, 0, &first, &n);
		const unsigned parts = zn_zero_fold_parts(&pl->z, &pl->homes, n);
		for (uint64_t k = 0; k < zn_zero_tiles(&pl->z, d); k++) {
			zn_zero_tile(&pl->z, d, k, &first, &n);
			zn_zero_fold(&pl->z, &pl->homes, n, parts, d->name);
		}
	}
	pl->fold_nvme = pl->homes.nvme_bytes - homes_nvme;
	if (zn_arch_dims(&g->a).tied && pl->folds) {
		/* Tile by tile, its classifier part waits beside the homes: the
		 * head holds a tile (and its fold, with 16-bit layers) at a
		 * time, and so does the encoder. */
		pl->in_use = ZN_MAX(ZN_MAX(u.p0 + u.g0 + u.w0 + u.phead + u.ghead, u.block),
				    u.p0 + u.g0 + u.w0);
	} else if (zn_arch_dims(&g->a).tied) {
		const uint64_t waiting = pl->z.dev16 ? u.w0 : u.g0;
		pl->in_use = ZN_MAX(u.p0 + u.g0 + u.w0 + u.phead + u.ghead, waiting + u.block);
	} else {
		/* Layer 0 comes only to the encoder, alone. */
		pl->in_use = ZN_MAX(ZN_MAX(u.phead + u.ghead, u.block), u.p0 + u.g0);
	}
}

uint64_t zn_plan_sub_group(const struct zn_config *c, const struct zn_plan_geom *g)
{
	struct placed pl;
	placement(c, g, &pl);
	return zn_zero_sub_group(&pl.z, pl.own);
}

/* ---- the tiers ------------------------------------------------------------ */

/* The cpu kernels' own scratch for this model, with the device's pool
 * (a worker per core of this machine). */
static uint64_t cpu_workspace(const struct zn_config *c, const struct zn_plan_geom *g)
{
	const struct zn_arch_dims d = zn_arch_dims(&g->a);
	const uint64_t V = (uint64_t)d.vocab_size, Vp = ZN_ALIGN_UP(V, 128);
	uint64_t wide = 0, group = 3 * (uint64_t)(d.n_embd / ZN_MAX(d.n_head, 1));
	/* the widest row: any dimension but the vocabulary's (padded or not) */
	for (unsigned i = 0; i < g->tab.nt; i++)
		for (unsigned k = 0; k < g->tab.d[i].ndim; k++) {
			const uint64_t n = (uint64_t)g->tab.d[i].shape[k];
			if (n != V && n != Vp)
				wide = ZN_MAX(wide, n);
		}
	if (g->a.ops == &zn_arch_llama_ops) {
		const struct zn_llama_config *l = &g->a.l;
		const uint64_t hs = l->head_dim ? (uint64_t)l->head_dim
						: (uint64_t)(l->n_embd / l->n_head);
		group = (uint64_t)(l->n_head / l->n_kv_head + 2) * hs;
		wide = ZN_MAX(wide, (uint64_t)(l->n_head + 2 * l->n_kv_head) * hs);
	}
	struct zn_kernels_params kp;
	zn_kernels_params_default(&kp);
	kp.dtype = zn_config_storage_dtype(c);
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	const struct zn_kernels_cpu_shape sh = {
		.rows = (uint64_t)c->batch.micro_batch * c->model.seq_len,
		.T = c->model.seq_len, .width = wide, .group = group,
		.matrix = g->tab.largest,
		.Vp = Vp,
	};
	return zn_kernels_cpu_workspace_bytes(&kp, cores > 0 ? (unsigned)cores : 1u, &sh);
}

/* Device.
 *   resident tensors: parameters and gradients (zn_zero_arrays dparam, dgrad)
 *   offload_optimizer none: master, m, v (dstate), and the norm and
 *              overflow scalars A256(8) + A256(4)
 *   offloaded tensors: the layers on the device at once (layers_in_use)
 *   16-bit training or accumulators: scratch A256(2 largest)
 *   16-bit on cuda: the 16-bit copies the kernels compute with, half the
 *              resident parameters + gradients and of the offloaded layers
 *   batch:     tokens and targets, 2 A256(4 BT)
 *   activations: zn_arch_activation_estimate(align ZN_DEVICE_ALIGN) */
int zn_plan_need_device(const struct zn_config *c, const struct zn_plan_geom *g,
			struct zn_plan_tier *t)
{
	const uint64_t BT = (uint64_t)c->batch.micro_batch * c->model.seq_len;
	struct placed pl;
	uint64_t act = 0;

	t->nitems = 0;
	t->needed = 0;
	placement(c, g, &pl);
	const char *which = pl.z.partition_params ? "tensors below the persistence threshold"
						  : "every layer resident";
	zn_plan_item(t, pl.dparam, "parameters (fp32, %s)", which);
	zn_plan_item(t, pl.dgrad, "gradients (fp32, %s)", which);
	if (pl.z.device_opt) {
		zn_plan_item(t, pl.dstate, "optimizer states (fp32 master, exp_avg, exp_avg_sq)");
		zn_plan_item(t, A256(sizeof(double)) + A256(sizeof(int32_t)),
			     "gradient norm and overflow flag");
	}
	zn_plan_item(t, pl.in_use, "offloaded layers in use (%s parameters + gradients)",
		     pl.z.dev16 ? zn_dtype_name(pl.z.dtype) : "fp32");
	/* The trainer's scratch for rounding to 16 bits (homes, accumulators). */
	if (pl.z.dtype != ZN_DTYPE_F32 || pl.z.gdt != ZN_DTYPE_F32)
		zn_plan_item(t, A256(2 * pl.unit), "16-bit scratch (largest tensor%s)",
			     pl.unit < g->tab.largest ? " or tile" : "");
	/* 16-bit training: the model computes on 16-bit copies of what it is
	 * given (the trainer's hand_out): 2 + 2 bytes per element beside the
	 * resident fp32 ones; offloaded layers visit in 16 bits only (dev16),
	 * the copy itself, or (several ranks) beside their fp32 ones, about
	 * half as much again. */
	if (zn_config_storage_dtype(c) != ZN_DTYPE_F32)
		zn_plan_item(t, pl.dcopy16 + (pl.z.dev16 ? 0 : pl.in_use / 2),
			     "16-bit copies the kernels compute with (parameters + gradients)");
	zn_plan_item(t, 2 * A256(4 * BT), "batch (tokens, targets)");
	/* cuda: the kernels' context takes its workspaces with cudaMalloc,
	 * outside the device budget but out of the same free memory (the
	 * trainer's context has the default parameters' workspace). */
	if (c->device.type == ZN_DEVICE_CUDA) {
		struct zn_kernels_params kp;
		zn_kernels_params_default(&kp);
		zn_plan_item(t, zn_kernels_cuda_workspace_bytes(&kp),
			     "kernel workspaces (cuda: attention, cuBLASLt)");
	}
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

/* The optimizer swapper's config, as the trainer gives it (engine/zero). */
static void optswap_of(const struct zn_config *c, const struct placed *pl,
		       struct zn_optswap_config *oc)
{
	zn_zero_optswap_config(&pl->z, &c->zero_optimization.offload_optimizer, pl->own, oc);
}

/* Bytes of the parameter buffer pool (NVMe homes): the pool engine/zero
 * sizes for the trainer, as offload's buffer pool allocates it.  -EINVAL (message set) when
 * offload_param.buffer_size is below the largest NVMe home. */
static int param_pool(const struct zn_config *c, const struct placed *pl, uint64_t *bytes)
{
	struct zn_bufpool_config bc;
	*bytes = 0;
	if (!pl->homes.nvme_bytes)
		return 0;
	int rc = zn_zero_homes_pool(&pl->z, &c->zero_optimization.offload_param, &pl->homes, &bc);
	if (rc)
		return rc;
	*bytes = zn_bufpool_bytes(&bc);
	return 0;
}

/* Pinned host: the buffers the NVMe tiers stream through, when their
 * section asks for pin_memory (unpinned ones go to `pageable`).
 *   offload_optimizer nvme: the optimizer swapper's slots
 *             (zn_optswap_buffer_bytes)
 *   NVMe homes: the parameter pool (param_pool) */
int zn_plan_need_pinned(const struct zn_config *c, const struct zn_plan_geom *g,
			struct zn_plan_tier *t, struct zn_plan_tier *pageable)
{
	const struct zn_zero_config *z = &c->zero_optimization;
	struct placed pl;
	t->nitems = 0;
	t->needed = 0;
	placement(c, g, &pl);
	if (pl.z.nvme_opt) {
		struct zn_optswap_config oc;
		optswap_of(c, &pl, &oc);
		struct zn_plan_tier *to = z->offload_optimizer.pin_memory ? t : pageable;
		zn_plan_item(to, zn_optswap_buffer_bytes(&oc),
			     "optimizer swap buffers (sub-groups of %" PRIu64 " elements)%s",
			     oc.sub_group_size, to == t ? "" : ", pin_memory: false");
	}
	if (pl.z.nvme_homes) {
		uint64_t bytes;
		int rc = param_pool(c, &pl, &bytes);
		if (rc)
			return rc;
		struct zn_plan_tier *to = z->offload_param.pin_memory ? t : pageable;
		zn_plan_item(to, bytes, "parameter swap buffers%s",
			     to == t ? "" : ", pin_memory: false");
	}
	return 0;
}

/* Pageable host (zn_plan_need_pinned adds unpinned swap buffers here too):
 *   master, m, v unless on NVMe (zn_zero_arrays hstate): the CPU
 *             optimizer's, or the device optimizer's checkpoint staging
 *   host gradient accumulators (hgrad), and with accumulation a gradient
 *             staging buffer 4 largest
 *   gradients on NVMe (grads_nvme): a tensor's sums on their way, the
 *             largest such tensor in grad_accum_dtype
 *   with checkpoint.dir: the model files' writer's buffer at a save
 *             (zn_arch_writer_bytes of ZN_ARCH_CHUNK elements: GPT-2's
 *             block of a Conv1D weight's rows, a Llama folder's conversion
 *             buffer) -- bounded, not the model's: start-up and saves
 *             stream the states in pieces between their sources, the host
 *             arrays and (NVMe states) the optimizer swapper's own
 *             buffers, a sub-group at a time, so no staging holds a tensor
 *             or a sub-group (several ranks add a piece of ZN_ARCH_CHUNK
 *             elements at the start: a resident tensor's parts of other
 *             ranks; the plan is one rank's)
 *   parameter homes in host memory (zn_zero_home)
 *   the overlapped update's staging of the resident tensors' new values
 *   batch:    tokens, targets and per-token losses, 3 x 4 BT
 *   cpu_checkpointing: the kept block inputs (zn_arch_activation_estimate)
 *   cpu backend: the device's bytes (its memory is host memory) */
int zn_plan_need_pageable(const struct zn_config *c, const struct zn_plan_geom *g,
			  const struct zn_plan_tier *device, struct zn_plan_tier *t)
{
	const uint64_t BT = (uint64_t)c->batch.micro_batch * c->model.seq_len;
	const bool ckpt = c->checkpoint.dir[0] != 0;
	struct placed pl;

	t->nitems = 0;
	t->needed = 0;
	placement(c, g, &pl);
	zn_plan_item(t, pl.hstate, "%s",
		     pl.z.device_opt ? "checkpoint staging (master, exp_avg, exp_avg_sq)"
				     : "optimizer states (fp32 master, exp_avg, exp_avg_sq)");
	if (pl.z.host_grads) {
		zn_plan_item(t, pl.hgrad, "gradient accumulators (%s%s)",
			     pl.z.gdt == ZN_DTYPE_F32 ? "fp32" : "16-bit",
			     pl.z.grads_nvme ? ", tensors kept on the device" : "");
		if (zn_zero_grad_staging(&pl.z, c->batch.grad_accum))
			zn_plan_item(t, 4 * pl.unit, "gradient staging (largest tensor%s)",
				     pl.unit < g->tab.largest ? " or tile" : "");
	}
	zn_plan_item(t, pl.gsums * zn_dtype_size(pl.z.gdt),
		     "gradients on their way to NVMe (largest offloaded tensor%s)",
		     pl.gsums < g->tab.largest ? " or tile" : "");
	if (ckpt)
		zn_plan_item(t, zn_arch_writer_bytes(&g->a, g->tab.d, g->tab.nt, ZN_ARCH_CHUNK),
			     "checkpoint staging (the model files' writer)");
	zn_plan_item(t, pl.homes.host_elems * zn_dtype_size(pl.z.hdt),
		     "parameter homes in host memory (%s)", zn_dtype_name(pl.z.hdt));
	zn_plan_item(t, pl.homes.host_fold_bytes,
		     "tied embedding's classifier gradients waiting, per tile (fp32)");
	zn_plan_item(t, pl.staged, "overlapped update: resident tensors' new values");
	zn_plan_item(t, 3 * 4 * BT, "batch (tokens, targets, losses)");
	uint64_t host = 0;
	struct zn_arch m = model_of(c, g);
	int rc = zn_arch_activation_estimate(&m, (int)c->batch.micro_batch, (int)c->model.seq_len,
					     ZN_DEVICE_ALIGN, NULL, &host);
	if (rc)
		return rc;
	zn_plan_item(t, host, "kept block inputs (cpu_checkpointing)");
	if (c->device.type == ZN_DEVICE_CPU) {
		/* the cpu kernels' scratch: host memory beside the device's */
		zn_plan_item(t, cpu_workspace(c, g), "cpu kernels' scratch (attention blocks%s)",
			     zn_config_storage_dtype(c) != ZN_DTYPE_F32
				     ? ", 16-bit operands widened in blocks"
				     : "");
		zn_plan_item(t, device->needed, "device memory (cpu backend)");
	}
	return 0;
}

/* Swap store capacity per section:
 *   optimizer states: zn_optswap_store_bytes of the swapper's config: every
 *             sub-group's states plus one spare per slot
 *   parameter homes: the NVMe homes' bytes (zn_zero_home) */
static uint64_t optimizer_store(const struct zn_config *c, const struct zn_plan_geom *g,
				uint64_t (*bytes)(const struct zn_optswap_config *))
{
	struct placed pl;
	struct zn_optswap_config oc;
	placement(c, g, &pl);
	optswap_of(c, &pl, &oc);
	return bytes(&oc);
}

uint64_t zn_plan_optimizer_store(const struct zn_config *c, const struct zn_plan_geom *g)
{
	return optimizer_store(c, g, zn_optswap_store_bytes);
}

/*   gradients (grads_nvme): zn_optswap_grads_store_bytes, part of the
 *             above: every sub-group's, in grad_accum_dtype */
uint64_t zn_plan_gradient_store(const struct zn_config *c, const struct zn_plan_geom *g)
{
	return optimizer_store(c, g, zn_optswap_grads_store_bytes);
}

uint64_t zn_plan_param_store(const struct zn_config *c, const struct zn_plan_geom *g,
			     uint64_t *folds)
{
	struct placed pl;
	placement(c, g, &pl);
	*folds = pl.fold_nvme;
	return pl.homes.nvme_bytes;
}
