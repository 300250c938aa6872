/* The memory plan (see include/zinc/plan.h).
 *
 * What each tier needs is written as one function per tier below
 * (need_device, need_pinned, need_pageable, and the swap stores of the nvme
 * rows), each the list of engine/train.c's allocations on that tier, so
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
 *
 * Capacities come from the machine: hwloc (host total), /proc/meminfo
 * (MemAvailable) and the cgroup memory limit, getrlimit(RLIMIT_MEMLOCK),
 * statvfs per nvme_path, cudaMemGetInfo in CUDA builds.
 */
#include "zn_common.h"
#include "zn_build.h"

#include <hwloc.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#if ZN_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include "zinc/device.h"
#include "zinc/model.h"

#include "model/arch.h"
#include "zinc/plan.h"

#define A256(x) ZN_ALIGN_UP((uint64_t)(x), (uint64_t)ZN_DEVICE_ALIGN)
#define A4K(x) ZN_ALIGN_UP((uint64_t)(x), 4096u)
#define MAX_DIRS 16 /* per nvme_path value, as the swap store takes them */

/* The model: its tensors in the trainer's order (layer by layer). */
struct geom {
	struct zn_arch a;
	unsigned nt, nlayers;
	struct zn_param_desc *d;  /* nt of them */
	unsigned *layer;          /* each tensor's layer */
	uint64_t P, largest, largest_layer;
	const char *largest_name;
};

static void geom_free(struct geom *g)
{
	free(g->d);
	free(g->layer);
}

static int geom_of(const struct zn_config *cfg, struct geom *g)
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
		geom_free(g);
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

static unsigned elem_bytes(const struct zn_config *c) /* d */
{
	return c->fp16.enabled || c->bf16.enabled ? 2 : 4;
}

static unsigned accum_bytes(const struct zn_config *c) /* ga */
{
	return c->data_types.grad_accum_dtype == ZN_GRAD_ACCUM_FP32 ? 4 : 2;
}

static uint64_t sub_group(const struct zn_config *c, const struct geom *g)
{
	uint64_t sub = c->zero_optimization.sub_group_size;
	return !sub || sub > g->P ? g->P : sub;
}

static const char *dtype_name(const struct zn_config *c)
{
	return c->fp16.enabled ? "fp16" : c->bf16.enabled ? "bf16" : "fp32";
}

static const char *const offload_names[] = { "none", "cpu", "nvme" };

/* The model with the variant's activation checkpointing. */
static struct zn_arch model_of(const struct zn_config *c, const struct geom *g)
{
	struct zn_arch m = g->a;
	m.g.recompute = m.l.recompute = c->activation_checkpointing.enabled;
	m.g.offload_activations = m.l.offload_activations =
		c->activation_checkpointing.cpu_checkpointing;
	return m;
}

static const char *size_text(uint64_t bytes, char *buf)
{
	return zn_format_size(bytes, buf, 32);
}

/* Append to a NUL-terminated string in buf[len], truncating. */
static void append(char *buf, size_t len, const char *fmt, ...) ZN_PRINTF(3, 4);
static void append(char *buf, size_t len, const char *fmt, ...)
{
	size_t n = strlen(buf);
	va_list ap;
	if (n + 1 >= len)
		return;
	va_start(ap, fmt);
	vsnprintf(buf + n, len - n, fmt, ap);
	va_end(ap);
}

static void add_item(struct zn_plan_tier *t, uint64_t bytes, const char *fmt, ...)
	ZN_PRINTF(3, 4);
static void add_item(struct zn_plan_tier *t, uint64_t bytes, const char *fmt, ...)
{
	if (!bytes || t->nitems == ZN_PLAN_MAX_ITEMS)
		return;
	struct zn_plan_item *it = &t->items[t->nitems++];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(it->name, sizeof(it->name), fmt, ap);
	va_end(ap);
	it->bytes = bytes;
	t->needed += bytes;
}

static void add_advice(struct zn_plan_tier *t, const char *fmt, ...) ZN_PRINTF(2, 3);
static void add_advice(struct zn_plan_tier *t, const char *fmt, ...)
{
	if (t->nadvice == ZN_PLAN_MAX_ADVICE)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(t->advice[t->nadvice++], ZN_PLAN_TEXT_MAX, fmt, ap);
	va_end(ap);
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

/* engine/train.c's rule (create() and param_homes_setup()), tensor by
 * tensor in order. */
static void placement(const struct zn_config *c, const struct geom *g, struct placed *pl)
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
			pl->nvme_bytes += A4K(n * elem_bytes(c));
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
static int need_device(const struct zn_config *c, const struct geom *g, struct zn_plan_tier *t)
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
	add_item(t, pl.resident, "parameters (fp32, %s)", which);
	add_item(t, pl.resident, "gradients (fp32, %s)", which);
	if (oo == ZN_OFFLOAD_NONE) {
		add_item(t, 3 * all, "optimizer states (fp32 master, exp_avg, exp_avg_sq)");
		add_item(t, A256(sizeof(double)) + A256(sizeof(int32_t)),
			 "gradient norm and overflow flag");
	}
	const uint64_t in_use = ZN_MAX(2 * (pl.off0 + pl.off_head), pl.off0 + 2 * pl.off_block);
	add_item(t, in_use, "offloaded layers in use (fp32 parameters + gradients)");
	if (elem_bytes(c) == 2 || accum_bytes(c) == 2)
		add_item(t, A256(2 * g->largest), "16-bit scratch (largest tensor)");
	/* 16-bit training on cuda: the model computes on 16-bit copies of what
	 * it is given (hand_out in train.c): 2 + 2 bytes per element beside the
	 * fp32 ones, about half as much again (alignment aside). */
	if (zn_config_storage_dtype(c) != ZN_DTYPE_F32)
		add_item(t, pl.resident + in_use / 2,
			 "16-bit copies the kernels compute with (parameters + gradients)");
	add_item(t, 2 * A256(4 * BT), "batch (tokens, targets)");
	/* cuda: the kernels' context takes its workspaces with cudaMalloc,
	 * outside the device budget but out of the same free memory:
	 * DEFAULT_WORKSPACE + LT_WORKSPACE of kernels/cuda/kernels.cu. */
	if (c->device.type == ZN_DEVICE_CUDA)
		add_item(t, (64u << 20) + (32u << 20), "kernel workspaces (cuda: attention, "
						       "cuBLASLt)");
	struct zn_arch m = model_of(c, g);
	int rc = zn_arch_activation_estimate(&m, (int)c->batch.micro_batch, (int)c->model.seq_len,
					     ZN_DEVICE_ALIGN, &act, NULL);
	if (rc)
		return rc;
	add_item(t, act, "activations (%s)",
		 !c->activation_checkpointing.enabled ? "every block kept"
		 : c->activation_checkpointing.cpu_checkpointing
			 ? "recomputed; block inputs in host memory"
					 : "recomputed; block inputs kept");
	return 0;
}

/* Bytes of the optimizer swapper's buffers (oo nvme): slots x 3 arrays x
 * A4K(4 sub), slots as offload/optswap.c counts them. */
static uint64_t optswap_buffers(const struct zn_config *c, const struct geom *g)
{
	const struct zn_offload_optimizer_config *oc = &c->zero_optimization.offload_optimizer;
	unsigned slots = 1u + oc->pipeline_read + oc->pipeline_write;
	if (oc->pipeline_read && oc->buffer_count > slots)
		slots = oc->buffer_count;
	return (uint64_t)slots * 3 * A4K(4 * sub_group(c, g));
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
				       pl->nvme_largest_name, elem_bytes(c), 1, &bc);
	if (rc)
		return rc;
	*bytes = (uint64_t)bc.buffer_count * A4K(bc.buffer_bytes);
	return 0;
}

/* Pinned host: the buffers the NVMe tiers stream through, when their
 * section asks for pin_memory (unpinned ones go to `pageable`).
 *   oo nvme:  the optimizer swapper's slots (optswap_buffers)
 *   op nvme:  the parameter pool (param_pool), when any home is on NVMe */
static int need_pinned(const struct zn_config *c, const struct geom *g, struct zn_plan_tier *t,
		       struct zn_plan_tier *pageable)
{
	const struct zn_zero_config *z = &c->zero_optimization;
	t->nitems = 0;
	t->needed = 0;
	if (z->offload_optimizer.device == ZN_OFFLOAD_NVME) {
		struct zn_plan_tier *to = z->offload_optimizer.pin_memory ? t : pageable;
		add_item(to, optswap_buffers(c, g), "optimizer swap buffers (sub-groups of %" PRIu64
						    " elements)%s", sub_group(c, g),
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
		add_item(to, bytes, "parameter swap buffers%s", to == t ? "" : ", pin_memory: false");
	}
	return 0;
}

/* Pageable host (need_pinned adds unpinned swap buffers here too):
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
static int need_pageable(const struct zn_config *c, const struct geom *g,
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
		add_item(t, 12 * g->P, "optimizer states (fp32 master, exp_avg, exp_avg_sq)");
	else if (oo == ZN_OFFLOAD_NONE)
		add_item(t, 12 * g->P, "checkpoint staging (master, exp_avg, exp_avg_sq)");
	if (oo != ZN_OFFLOAD_NONE) {
		add_item(t, accum_bytes(c) * g->P, "gradient accumulators (%s)",
			 accum_bytes(c) == 4 ? "fp32" : "16-bit");
		if (c->batch.grad_accum > 1)
			add_item(t, 4 * g->largest, "gradient staging (largest tensor)");
	}
	if (oo == ZN_OFFLOAD_NVME)
		add_item(t, 12 * sub_group(c, g) + (ckpt ? 16 : 12) * g->largest,
			 "start-up%s staging (a sub-group of states, the largest tensor)",
			 ckpt ? " and checkpoint" : "");
	else if (ckpt)
		add_item(t, 4 * g->largest, "checkpoint staging (a transposed tensor)");
	add_item(t, elem_bytes(c) * pl.host_elems, "parameter homes in host memory (%s)",
		 dtype_name(c));
	/* Stage 3 with NVMe optimizer states: the update overlaps the next
	 * forward and stages the resident tensors' new values. */
	if (oo == ZN_OFFLOAD_NVME && c->zero_optimization.offload_param.device != ZN_OFFLOAD_NONE)
		add_item(t, 4 * pl.resident_elems, "overlapped update: resident tensors' new values");
	add_item(t, 3 * 4 * BT, "batch (tokens, targets, losses)");
	uint64_t host = 0;
	struct zn_arch m = model_of(c, g);
	int rc = zn_arch_activation_estimate(&m, (int)c->batch.micro_batch, (int)c->model.seq_len,
					     ZN_DEVICE_ALIGN, NULL, &host);
	if (rc)
		return rc;
	add_item(t, host, "kept block inputs (cpu_checkpointing)");
	if (c->device.type == ZN_DEVICE_CPU)
		add_item(t, device->needed, "device memory (cpu backend)");
	return 0;
}

/* Bytes one directory of a swap store gets: its share of `capacity`,
 * rounded to 4 KiB, plus two stripes of slack with several paths (as
 * offload/store.c sizes its files). */
static uint64_t store_share(uint64_t capacity, unsigned npaths, uint64_t stripe)
{
	return A4K(ZN_DIV_ROUND_UP(capacity, npaths)) + (npaths > 1 ? 2 * stripe : 0);
}

/* Swap store capacity per section:
 *   oo nvme:  zn_optswap_store_bytes({P, sub, 3 states, buffer_count,
 *             pipeline_read, pipeline_write}): every sub-group's states plus
 *             one spare per slot
 *   op nvme:  sum of A4K(d n_i) over the NVMe homes (placement) */
static uint64_t optimizer_store(const struct zn_config *c, const struct geom *g)
{
	const struct zn_offload_optimizer_config *oc = &c->zero_optimization.offload_optimizer;
	struct zn_optswap_config oc2 = {
		.params = g->P, .sub_group_size = sub_group(c, g), .nstates = 3,
		.buffer_count = oc->buffer_count, .pipeline_read = oc->pipeline_read,
		.pipeline_write = oc->pipeline_write,
	};
	return zn_optswap_store_bytes(&oc2);
}

static uint64_t param_store(const struct zn_config *c, const struct geom *g)
{
	struct placed pl;
	placement(c, g, &pl);
	return pl.nvme_bytes;
}

/* ---- what the machine has ----------------------------------------------------- */

struct host_mem {
	uint64_t total;      /* RAM (hwloc), or the cgroup limit when lower */
	uint64_t available;  /* MemAvailable, or what the cgroup limit leaves when lower */
	uint64_t memlock;    /* RLIMIT_MEMLOCK; UINT64_MAX: no limit (or root) */
	bool cgroup;         /* a cgroup limit lowered the figures */
};

static uint64_t meminfo(const char *key)
{
	FILE *f = fopen("/proc/meminfo", "re");
	char line[256];
	uint64_t kib = 0;
	size_t n = strlen(key);
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, key, n) == 0 && line[n] == ':') {
			kib = strtoull(line + n + 1, NULL, 10);
			break;
		}
	fclose(f);
	return kib * 1024;
}

static bool read_u64(const char *path, uint64_t *out)
{
	FILE *f = fopen(path, "re");
	unsigned long long v;
	bool ok = f && fscanf(f, "%llu", &v) == 1; /* "max" does not scan: no limit */
	if (f)
		fclose(f);
	if (ok)
		*out = v;
	return ok;
}

/* The memory limit of this process's cgroup (v2 memory.max, else v1
 * memory.limit_in_bytes, as seen inside the cgroup namespace) and its
 * current usage; false when there is no finite limit. */
static bool cgroup_limit(uint64_t *limit, uint64_t *usage)
{
	char line[512], path[700];
	FILE *f = fopen("/proc/self/cgroup", "re");
	bool found = false;
	if (f) {
		while (!found && fgets(line, sizeof(line), f))
			if (strncmp(line, "0::", 3) == 0) {
				line[strcspn(line, "\n")] = 0;
				const char *rel = strcmp(line + 3, "/") == 0 ? "" : line + 3;
				snprintf(path, sizeof(path), "/sys/fs/cgroup%s/memory.max", rel);
				found = read_u64(path, limit);
				snprintf(path, sizeof(path), "/sys/fs/cgroup%s/memory.current", rel);
				if (found && !read_u64(path, usage))
					*usage = 0;
			}
		fclose(f);
	}
	/* A container without a cgroup namespace may see its own cgroup
	 * mounted at the root. */
	if (!found && (found = read_u64("/sys/fs/cgroup/memory.max", limit)) &&
	    !read_u64("/sys/fs/cgroup/memory.current", usage))
		*usage = 0;
	if (!found && read_u64("/sys/fs/cgroup/memory/memory.limit_in_bytes", limit)) {
		found = *limit < (1ull << 62); /* v1 writes "no limit" as a huge number */
		if (found && !read_u64("/sys/fs/cgroup/memory/memory.usage_in_bytes", usage))
			*usage = 0;
	}
	return found;
}

static void host_memory(struct host_mem *h)
{
	memset(h, 0, sizeof(*h));
	hwloc_topology_t topo;
	if (hwloc_topology_init(&topo) == 0) {
		if (hwloc_topology_load(topo) == 0)
			h->total = hwloc_get_root_obj(topo)->total_memory;
		hwloc_topology_destroy(topo);
	}
	h->available = meminfo("MemAvailable");
	/* hwloc sums the NUMA nodes' memory (those this process may use); a
	 * figure below MemAvailable (some virtual machines report partial
	 * nodes) cannot be the machine's, and the kernel's MemTotal is used. */
	if (h->total < h->available)
		h->total = meminfo("MemTotal");
	uint64_t limit, usage;
	if (cgroup_limit(&limit, &usage) && limit < h->total) {
		h->cgroup = true;
		h->total = limit;
		h->available = ZN_MIN(h->available, limit > usage ? limit - usage : 0);
	}
	/* As offload/bufpool.c decides: root is not held to the limit. */
	struct rlimit rl;
	h->memlock = UINT64_MAX;
	if (geteuid() != 0 && getrlimit(RLIMIT_MEMLOCK, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
		h->memlock = rl.rlim_cur;
}

static void device_capacity(const struct zn_config *c, struct zn_plan_tier *t)
{
	char a[32];
	if (c->device.type == ZN_DEVICE_CPU) {
		if (c->device.memory_limit) {
			t->known = true;
			t->available = c->device.memory_limit;
			snprintf(t->source, sizeof(t->source), "device.memory_limit (cpu backend)");
		} else {
			t->counted_elsewhere = true;
			snprintf(t->source, sizeof(t->source),
				 "host memory (cpu backend, no device.memory_limit): checked in "
				 "the pageable host row");
		}
		return;
	}
#if ZN_HAVE_CUDA
	size_t free_b = 0, total_b = 0;
	int count = 0;
	cudaError_t e = cudaGetDeviceCount(&count);
	if (e == cudaSuccess && (int)c->device.index >= count)
		e = cudaErrorInvalidDevice;
	if (e == cudaSuccess)
		e = cudaSetDevice((int)c->device.index);
	if (e == cudaSuccess)
		e = cudaMemGetInfo(&free_b, &total_b);
	if (e != cudaSuccess) {
		(void)cudaGetLastError();
		snprintf(t->source, sizeof(t->source), "unknown: cuda:%u: %s", c->device.index,
			 cudaGetErrorString(e));
		return;
	}
	t->known = true;
	t->total = total_b;
	t->available = free_b;
	snprintf(t->source, sizeof(t->source), "cuda:%u free memory (cudaMemGetInfo)",
		 c->device.index);
	if (c->device.memory_limit && c->device.memory_limit < free_b) {
		t->available = c->device.memory_limit;
		snprintf(t->source, sizeof(t->source), "device.memory_limit (cuda:%u has %s free)",
			 c->device.index, size_text(free_b, a));
	} else if (c->device.memory_limit) {
		snprintf(t->note, sizeof(t->note), "device.memory_limit %s is more than the GPU's "
			 "free memory; the device refuses it: lower it",
			 size_text(c->device.memory_limit, a));
	}
#else
	(void)a;
	snprintf(t->source, sizeof(t->source), "unknown: zinc was built without CUDA");
#endif
}

/* ---- nvme rows ------------------------------------------------------------------ */

struct dir {
	unsigned row;          /* index into plan->tiers */
	dev_t dev;
	ino_t ino;
	bool keys[2];          /* 0 offload_optimizer, 1 offload_param */
};

static const char *const section_key[2] = {
	"zero_optimization.offload_optimizer.nvme_path",
	"zero_optimization.offload_param.nvme_path",
};

/* Add one section's swap store to the rows of its directories. */
static int nvme_section(struct zn_plan *p, struct dir *dirs, unsigned *ndirs, int which,
			const char *value, uint64_t capacity, uint64_t stripe, const char *what)
{
	char buf[ZN_NVME_PATH_MAX];
	const char *paths[MAX_DIRS];
	int np = zn_nvme_paths_split(value, buf, paths, MAX_DIRS);
	if (np < 1)
		return zn_error(-EINVAL, "%s: '%s' has an empty path or more than %d; give the "
					 "directory (or directories, separated by ',')",
				section_key[which], value, MAX_DIRS);
	uint64_t share = store_share(capacity, (unsigned)np, stripe);
	for (int i = 0; i < np; i++) {
		struct stat st;
		if (stat(paths[i], &st) != 0) {
			int e = errno;
			if (e == ENOENT)
				return zn_error(-ENOENT, "%s: '%s' does not exist; create it or point "
							 "the key at a directory on an NVMe drive",
						section_key[which], paths[i]);
			return zn_error(-e, "%s: '%s': %s", section_key[which], paths[i],
					strerror(e));
		}
		if (!S_ISDIR(st.st_mode))
			return zn_error(-ENOTDIR, "%s: '%s' is not a directory; point the key at a "
						  "directory on an NVMe drive",
					section_key[which], paths[i]);
		if (access(paths[i], W_OK | X_OK) != 0) {
			int e = errno;
			return zn_error(-e, "%s: '%s': cannot create swap files there (%s); fix its "
					    "permissions or point the key at another directory",
					section_key[which], paths[i], strerror(e));
		}
		unsigned k = 0;
		while (k < *ndirs && !(dirs[k].dev == st.st_dev && dirs[k].ino == st.st_ino))
			k++;
		if (k == *ndirs) {
			struct statvfs vfs;
			if (statvfs(paths[i], &vfs) != 0) {
				int e = errno;
				return zn_error(-e, "%s: '%s': %s", section_key[which], paths[i],
						strerror(e));
			}
			struct zn_plan_tier *t = &p->tiers[p->ntiers];
			memset(t, 0, sizeof(*t));
			t->kind = ZN_PLAN_NVME;
			t->hard = true;
			t->known = true;
			snprintf(t->name, sizeof(t->name), "%s", paths[i]);
			t->available = (uint64_t)vfs.f_bavail * vfs.f_frsize;
			t->total = (uint64_t)vfs.f_blocks * vfs.f_frsize;
			snprintf(t->source, sizeof(t->source), "free space of its filesystem (statvfs)");
			/* A filesystem that keeps no count (ramfs: 0 blocks in
			 * all) has no limit to check against. */
			if (vfs.f_blocks == 0) {
				t->known = false;
				snprintf(t->source, sizeof(t->source),
					 "unknown: its filesystem reports no size (ramfs?)");
			}
			dirs[k] = (struct dir){ .row = p->ntiers++, .dev = st.st_dev,
						.ino = st.st_ino };
			(*ndirs)++;
		}
		dirs[k].keys[which] = true;
		add_item(&p->tiers[dirs[k].row], share, "%s%s", what,
			 np > 1 ? ", its share of the stripes" : "");
	}
	return 0;
}

/* Directories on one filesystem share its free space: each row's fit is
 * checked against the sum over its filesystem. */
static void nvme_fit(struct zn_plan *p, const struct dir *dirs, unsigned ndirs)
{
	char a[32], b[32];
	for (unsigned i = 0; i < ndirs; i++) {
		struct zn_plan_tier *t = &p->tiers[dirs[i].row];
		uint64_t together = 0;
		unsigned others = 0;
		for (unsigned k = 0; k < ndirs; k++)
			if (dirs[k].dev == dirs[i].dev) {
				together += p->tiers[dirs[k].row].needed;
				others += k != i;
			}
		t->fits = !t->known || together <= t->available;
		if (others && t->known)
			snprintf(t->note, sizeof(t->note), "shares its filesystem with %u other "
				 "director%s here: together they need %s of its %s free",
				 others, others == 1 ? "y" : "ies", size_text(together, a),
				 size_text(t->available, b));
		if (t->fits)
			continue;
		char keys[160] = "";
		for (int s = 0; s < 2; s++)
			if (dirs[i].keys[s])
				append(keys, sizeof(keys), "%s%s", keys[0] ? " or " : "",
				       section_key[s]);
		add_advice(t, "'%s' needs %s but has %s free: free space there, point %s at a "
			      "directory with more room, or list several directories on other "
			      "disks separated by ',' to stripe over them",
			   t->name, size_text(together, a), size_text(t->available, b), keys);
	}
}

/* ---- suggestions ------------------------------------------------------------------ */

/* The device need of a variant of the config. */
static uint64_t device_if(const struct zn_config *c, const struct geom *g)
{
	struct zn_plan_tier t;
	memset(&t, 0, sizeof(t));
	return need_device(c, g, &t) ? UINT64_MAX : t.needed;
}

static uint64_t pageable_if(const struct zn_config *c, const struct geom *g)
{
	struct zn_plan_tier d, t, pin;
	memset(&d, 0, sizeof(d));
	memset(&t, 0, sizeof(t));
	memset(&pin, 0, sizeof(pin));
	if (need_device(c, g, &d) || need_pageable(c, g, &d, &t) || need_pinned(c, g, &pin, &t))
		return UINT64_MAX;
	return t.needed;
}

/* " (fits)" or " (not enough alone)": a suggestion's figure against the
 * tier's capacity. */
static const char *verdict(uint64_t need, uint64_t available)
{
	return need <= available ? " (fits)" : " (not enough alone)";
}

static void advise_device(const struct zn_config *c, const struct geom *g,
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
		add_advice(t, text "%s", ##__VA_ARGS__, size_text(need, a),         \
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
		add_advice(t, "all of the above together: the device then needs %s%s",
			   size_text(need, a), verdict(need, t->available));
	}
#undef TRY_VARIANT
	if (c->device.type == ZN_DEVICE_CPU)
		add_advice(t, "or raise device.memory_limit to at least %s", size_text(t->needed, a));
	else
		add_advice(t, "or use a GPU with at least %s free", size_text(t->needed, a));
	free(v);
}

static void advise_pageable(const struct zn_config *c, const struct geom *g,
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
		add_advice(t, text "%s", size_text(need, a), verdict(need, t->available)); \
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
	add_advice(t, "or free host memory (other processes), or use a machine with at least %s "
		      "available", size_text(t->needed, a));
	free(v);
}

static void advise_pinned(const struct zn_config *c, const struct geom *g, struct zn_plan_tier *t,
			  const struct host_mem *h)
{
	char a[32];
	const struct zn_zero_config *z = &c->zero_optimization;
	if (z->offload_optimizer.device == ZN_OFFLOAD_NVME && z->offload_optimizer.pin_memory) {
		add_advice(t, "lower zero_optimization.sub_group_size (%" PRIu64 " elements: each "
			      "optimizer buffer holds 3 x 4 bytes per element) or "
			      "offload_optimizer.buffer_count (%u)",
			   sub_group(c, g), z->offload_optimizer.buffer_count);
	}
	if (z->offload_param.device == ZN_OFFLOAD_NVME && z->offload_param.pin_memory)
		add_advice(t, "lower zero_optimization.offload_param.buffer_count");
	if (h->memlock != UINT64_MAX && h->memlock < t->needed)
		add_advice(t, "raise the locked-memory limit to at least %s (`ulimit -l`, or "
			      "LimitMEMLOCK in a systemd unit)", size_text(t->needed, a));
	add_advice(t, "or set pin_memory: false in the offload sections (the buffers then come "
		      "from pageable memory; transfers get slower)");
}

/* ---- the plan ------------------------------------------------------------------ */

static struct zn_plan_tier *new_tier(struct zn_plan *p, int kind, const char *name, bool hard)
{
	struct zn_plan_tier *t = &p->tiers[p->ntiers++];
	memset(t, 0, sizeof(*t));
	t->kind = kind;
	t->hard = hard;
	snprintf(t->name, sizeof(t->name), "%s", name);
	return t;
}

static int compute(const struct zn_config *cfg, const struct geom *g, struct zn_plan *p)
{
	const struct zn_zero_config *z = &cfg->zero_optimization;
	char a[32], b[32];
	int rc;

	p->params = g->P;
	p->largest = g->largest;
	p->largest_layer = g->largest_layer;
	snprintf(p->largest_name, sizeof(p->largest_name), "%s", g->largest_name);
	snprintf(p->summary, sizeof(p->summary),
		 "%s %u layers, %u heads, %u channels, vocab %u: %" PRIu64 " parameters; "
		 "micro-batch %u x %u tokens; %s; stage %u, offload_optimizer %s, offload_param "
		 "%s; activation checkpointing %s; device %s",
		 zn_arch_name(&g->a),
		 g->a.llama ? (unsigned)g->a.l.n_layer : cfg->model.n_layer,
		 g->a.llama ? (unsigned)g->a.l.n_head : cfg->model.n_head,
		 g->a.llama ? (unsigned)g->a.l.n_embd : cfg->model.n_embd,
		 (unsigned)zn_arch_vocab(&g->a), g->P, cfg->batch.micro_batch, cfg->model.seq_len, dtype_name(cfg), z->stage,
		 offload_names[z->offload_optimizer.device], offload_names[z->offload_param.device],
		 !cfg->activation_checkpointing.enabled ? "off"
		 : cfg->activation_checkpointing.cpu_checkpointing ? "on, inputs in host memory"
								   : "on",
		 cfg->device.type == ZN_DEVICE_CPU ? "cpu" : "cuda");

	struct zn_plan_tier *dev = new_tier(p, ZN_PLAN_DEVICE, "device", true);
	struct zn_plan_tier *pin = new_tier(p, ZN_PLAN_PINNED, "pinned host", false);
	struct zn_plan_tier *pag = new_tier(p, ZN_PLAN_PAGEABLE, "pageable host", true);
	if ((rc = need_device(cfg, g, dev)) || (rc = need_pageable(cfg, g, dev, pag)) ||
	    (rc = need_pinned(cfg, g, pin, pag)))
		return rc;

	/* NVMe: one row per distinct directory. */
	struct dir dirs[2 * MAX_DIRS];
	unsigned ndirs = 0;
	if (z->offload_optimizer.device == ZN_OFFLOAD_NVME &&
	    (rc = nvme_section(p, dirs, &ndirs, 0, z->offload_optimizer.nvme_path,
			       optimizer_store(cfg, g), z->offload_optimizer.stripe_size,
			       "optimizer states (fp32 master, exp_avg, exp_avg_sq)")))
		return rc;
	/* Homes go to NVMe only past max_in_cpu; with none there, the trainer
	 * never opens offload_param's nvme_path and neither does the plan. */
	uint64_t pbytes = z->offload_param.device == ZN_OFFLOAD_NVME ? param_store(cfg, g) : 0;
	if (pbytes && (rc = nvme_section(p, dirs, &ndirs, 1, z->offload_param.nvme_path, pbytes,
					 z->offload_param.stripe_size,
					 elem_bytes(cfg) == 2 ? "parameters (16-bit)"
							      : "parameters (fp32)")))
		return rc;
	nvme_fit(p, dirs, ndirs);

	/* Capacities and fits. */
	struct host_mem h;
	host_memory(&h);
	device_capacity(cfg, dev);
	dev->fits = !dev->known || dev->counted_elsewhere || dev->needed <= dev->available;

	pin->known = true;
	pin->total = h.total;
	pin->available = ZN_MIN(h.available, h.memlock);
	snprintf(pin->source, sizeof(pin->source), "%s%s",
		 h.memlock < h.available ? "the locked-memory limit (ulimit -l)" : "MemAvailable",
		 h.cgroup ? " (cgroup memory limit applied)" : "");
	pin->fits = pin->needed <= pin->available;
	if (!pin->fits)
		snprintf(pin->note, sizeof(pin->note), "warning only: buffers that cannot be "
			 "page-locked are used unpinned (slower transfers)");

	pag->known = true;
	pag->total = h.total;
	pag->available = h.available > pin->needed ? h.available - pin->needed : 0;
	snprintf(pag->source, sizeof(pag->source), "MemAvailable%s%s%s",
		 h.cgroup ? " within the cgroup memory limit" : "",
		 pin->needed ? ", less the pinned tier's " : "",
		 pin->needed ? size_text(pin->needed, a) : "");
	pag->fits = pag->needed <= pag->available;
	if (dev->counted_elsewhere)
		snprintf(pag->note, sizeof(pag->note), "includes the cpu backend's device memory "
			 "(%s)", size_text(dev->needed, b));
	if (z->offload_param.device == ZN_OFFLOAD_NVME && !pbytes) {
		append(pag->note, sizeof(pag->note), "%soffload_param.max_in_cpu (%" PRIu64 ") keeps "
		       "every offloaded parameter in host memory; lower it to send them to nvme",
		       pag->note[0] ? "; " : "", z->offload_param.max_in_cpu);
	}

	if (!dev->fits)
		advise_device(cfg, g, dev);
	if (!pag->fits)
		advise_pageable(cfg, g, pag);
	if (!pin->fits)
		advise_pinned(cfg, g, pin, &h);
	return 0;
}

int zn_plan_compute(const struct zn_config *cfg, struct zn_plan *p)
{
	struct geom g;
	int rc;

	if (!cfg || !p)
		return zn_error(-EINVAL, "zn_plan_compute: a config and a plan are required");
	memset(p, 0, sizeof(*p));
	if (cfg->batch.micro_batch < 1 || cfg->batch.grad_accum < 1)
		return zn_error(-EINVAL, "train_batch_size / train_micro_batch_size_per_gpu: give "
					 "the batch size (DeepSpeed's keys)");
	if (cfg->zero_optimization.offload_param.device != ZN_OFFLOAD_NONE &&
	    cfg->zero_optimization.stage != 3)
		return zn_error(-EINVAL, "zero_optimization.offload_param needs stage 3");
	if ((rc = geom_of(cfg, &g)))
		return rc;
	rc = compute(cfg, &g, p);
	geom_free(&g);
	return rc;
}

bool zn_plan_fits(const struct zn_plan *p)
{
	for (unsigned i = 0; p && i < p->ntiers; i++)
		if (p->tiers[i].hard && !p->tiers[i].fits)
			return false;
	return p != NULL;
}

/* ---- the report ------------------------------------------------------------------ */

struct out {
	char *buf;
	size_t len, pos; /* pos: the whole report's length so far (may exceed len) */
};

static void put(struct out *o, const char *fmt, ...) ZN_PRINTF(2, 3);
static void put(struct out *o, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	size_t room = o->pos < o->len ? o->len - o->pos : 0;
	int n = vsnprintf(room ? o->buf + o->pos : NULL, room, fmt, ap);
	va_end(ap);
	if (n > 0)
		o->pos += (size_t)n;
}

static const char *status_text(const struct zn_plan_tier *t, char *buf, size_t len)
{
	char a[32];
	if (t->counted_elsewhere)
		snprintf(buf, len, "see pageable host");
	else if (!t->known)
		snprintf(buf, len, "unknown");
	else if (t->fits)
		snprintf(buf, len, "fits");
	else
		snprintf(buf, len, "%s by %s", t->hard ? "SHORT" : "warning: short",
			 size_text(t->needed - t->available, a));
	return buf;
}

static const char *row_name(const struct zn_plan_tier *t, char *buf, size_t len)
{
	snprintf(buf, len, "%s%s", t->kind == ZN_PLAN_NVME ? "nvme " : "", t->name);
	return buf;
}

int zn_plan_format(const struct zn_plan *p, char *buf, size_t len)
{
	if (!p)
		return zn_error(-EINVAL, "zn_plan_format: no plan");
	struct out o = { buf, buf ? len : 0, 0 };
	char a[32], b[32], c[32], st[64], name[ZN_NVME_PATH_MAX + 8];
	int w = 13, wi = 40; /* "pageable host"; item names */
	for (unsigned i = 0; i < p->ntiers; i++) {
		w = ZN_MAX(w, (int)strlen(row_name(&p->tiers[i], name, sizeof(name))));
		for (unsigned k = 0; k < p->tiers[i].nitems; k++)
			wi = ZN_MAX(wi, (int)strlen(p->tiers[i].items[k].name));
	}
	w = ZN_MIN(w, 48);

	if (o.len)
		o.buf[0] = 0;
	put(&o, "memory plan: %s\n", p->summary);
	put(&o, "largest tensor %s (%" PRIu64 " elements), largest layer %" PRIu64
		" elements\n\n", p->largest_name, p->largest, p->largest_layer);
	put(&o, "%-*s  %10s  %10s  %10s  %s\n", w, "tier", "needed", "available", "total",
	    "status");
	for (unsigned i = 0; i < p->ntiers; i++) {
		const struct zn_plan_tier *t = &p->tiers[i];
		put(&o, "%-*s  %10s  %10s  %10s  %s\n", w, row_name(t, name, sizeof(name)),
		    size_text(t->needed, a),
		    t->counted_elsewhere ? "host" : t->known ? size_text(t->available, b) : "unknown",
		    t->total ? size_text(t->total, c) : "-", status_text(t, st, sizeof(st)));
	}
	uint64_t tot[3] = { 0, 0, 0 }; /* device, host (pinned + pageable), nvme */
	for (unsigned i = 0; i < p->ntiers; i++) {
		int k = p->tiers[i].kind;
		tot[k == ZN_PLAN_DEVICE ? 0 : k == ZN_PLAN_NVME ? 2 : 1] += p->tiers[i].needed;
	}
	put(&o, "totals: device %s (%" PRIu64 " bytes), host %s (%" PRIu64 " bytes), nvme %s (%"
		PRIu64 " bytes)\n", size_text(tot[0], a), tot[0], size_text(tot[1], b), tot[1],
	    size_text(tot[2], c), tot[2]);
	for (unsigned i = 0; i < p->ntiers; i++) {
		const struct zn_plan_tier *t = &p->tiers[i];
		put(&o, "\n%s needs %s (%" PRIu64 " bytes)", row_name(t, name, sizeof(name)),
		    size_text(t->needed, a), t->needed);
		if (t->known && !t->counted_elsewhere)
			put(&o, "; has %s (%" PRIu64 " bytes) from %s\n", size_text(t->available, b),
			    t->available, t->source);
		else
			put(&o, "; capacity: %s\n", t->source);
		for (unsigned k = 0; k < t->nitems; k++)
			put(&o, "  %-*s  %10s  (%" PRIu64 " bytes)\n", wi, t->items[k].name,
			    size_text(t->items[k].bytes, a), t->items[k].bytes);
		if (t->note[0])
			put(&o, "  note: %s\n", t->note);
	}
	bool any = false;
	for (unsigned i = 0; i < p->ntiers; i++) {
		const struct zn_plan_tier *t = &p->tiers[i];
		if (t->fits || !t->known || t->counted_elsewhere)
			continue;
		if (!any)
			put(&o, "\nwhat to change:\n");
		any = true;
		put(&o, "  %s%s needs %s, has %s:\n", t->hard ? "" : "(warning) ",
		    row_name(t, name, sizeof(name)), size_text(t->needed, a),
		    size_text(t->available, b));
		for (unsigned k = 0; k < t->nadvice; k++)
			put(&o, "    - %s\n", t->advice[k]);
	}
	put(&o, "\n%s\n", zn_plan_fits(p) ? "fits: yes" : "fits: NO (training would run out "
							  "of memory; see what to change above)");
	return (int)ZN_MIN(o.pos, (size_t)INT32_MAX);
}

int zn_plan_check(const struct zn_config *cfg, char *report, size_t len)
{
	struct zn_plan *p = malloc(sizeof(*p));
	char a[32], b[32], name[ZN_NVME_PATH_MAX + 8];
	int rc;

	if (report && len)
		report[0] = 0;
	if (!p)
		return zn_error(-ENOMEM, "memory plan: out of memory");
	if ((rc = zn_plan_compute(cfg, p)) != 0) {
		free(p);
		return rc;
	}
	for (unsigned i = 0; i < p->ntiers; i++) {
		const struct zn_plan_tier *t = &p->tiers[i];
		if (!t->hard && !t->fits)
			zn_warn("memory plan: %s needs %s but %s allows %s; the buffers that cannot "
				"be page-locked are used unpinned (slower transfers)",
				t->name, size_text(t->needed, a), t->source,
				size_text(t->available, b));
	}
	if (zn_plan_fits(p)) {
		free(p);
		return 0;
	}
	char msg[1024] = "";
	for (unsigned i = 0; i < p->ntiers; i++) {
		const struct zn_plan_tier *t = &p->tiers[i];
		if (t->hard && !t->fits)
			append(msg, sizeof(msg), "%s%s needs %s but has %s (%s)",
			       msg[0] ? "; " : "",
				 row_name(t, name, sizeof(name)), size_text(t->needed, a),
				 size_text(t->available, b), t->source);
	}
	if (report && len)
		zn_plan_format(p, report, len);
	free(p);
	return zn_error(-ENOMEM, "the configuration does not fit this machine: %s (run `zinc "
				 "plan CONFIG` for the report and what to change)", msg);
}
