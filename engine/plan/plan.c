/* The memory plan (include/zinc/plan.h): zn_plan_compute(_on) puts the
 * tiers in order -- device, pinned host, pageable host, then one row per
 * nvme_path directory -- fills each with what training needs (need.c),
 * sets what the machine has, this one or a described one (machine.c), and
 * whether it fits, and asks advise.c what to change for a tier that does
 * not.  The model may be the config's or a shape scale.c made: both are
 * planned by zn_plan_compute_geom.  The helpers every part writes a tier
 * with are here too. */
#include "zn_common.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan/internal.h"

static const char *const offload_names[] = { "none", "cpu", "nvme" };

const char *zn_plan_size(uint64_t bytes, char *buf)
{
	return zn_format_size(bytes, buf, 32);
}

void zn_plan_append(char *buf, size_t len, const char *fmt, ...)
{
	size_t n = strlen(buf);
	va_list ap;
	if (n + 1 >= len)
		return;
	va_start(ap, fmt);
	vsnprintf(buf + n, len - n, fmt, ap);
	va_end(ap);
}

void zn_plan_item(struct zn_plan_tier *t, uint64_t bytes, const char *fmt, ...)
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

void zn_plan_advice(struct zn_plan_tier *t, const char *fmt, ...)
{
	if (t->nadvice == ZN_PLAN_MAX_ADVICE)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(t->advice[t->nadvice++], ZN_PLAN_TEXT_MAX, fmt, ap);
	va_end(ap);
}

struct zn_plan_tier *zn_plan_new_tier(struct zn_plan *p, int kind, const char *name, bool hard)
{
	struct zn_plan_tier *t = &p->tiers[p->ntiers++];
	memset(t, 0, sizeof(*t));
	t->kind = kind;
	t->hard = hard;
	snprintf(t->name, sizeof(t->name), "%s", name);
	return t;
}

/* One line: the model and the settings the plan is for. */
static void summary(const struct zn_config *cfg, const struct zn_plan_geom *g,
		    const struct zn_zero_rules *zr, struct zn_plan *p)
{
	const struct zn_zero_config *z = &cfg->zero_optimization;
	const struct zn_arch *a = &g->a;
	const struct zn_arch_dims dims = zn_arch_dims(a);
	snprintf(p->summary, sizeof(p->summary),
		 "%s %u layers, %u heads, %u channels, vocab %u: %" PRIu64 " parameters; "
		 "micro-batch %u x %u tokens; %s; stage %u, offload_optimizer %s, offload_param "
		 "%s; activation checkpointing %s; device %s",
		 zn_arch_name(a), (unsigned)dims.n_layer, (unsigned)dims.n_head,
		 (unsigned)dims.n_embd, (unsigned)dims.vocab_size,
		 g->tab.total, cfg->batch.micro_batch, cfg->model.seq_len, zn_dtype_name(zr->dtype),
		 z->stage, offload_names[z->offload_optimizer.device],
		 offload_names[z->offload_param.device],
		 !cfg->activation_checkpointing.enabled ? "off"
		 : cfg->activation_checkpointing.cpu_checkpointing ? "on, inputs in host memory"
								   : "on",
		 cfg->device.type == ZN_DEVICE_CPU ? "cpu" : "cuda");
}

int zn_plan_geom_of_arch(const struct zn_arch *a, struct zn_plan_geom *g)
{
	memset(g, 0, sizeof(*g));
	g->a = *a;
	int rc = zn_tensor_table_build(&g->tab, &g->a);
	if (rc)
		return rc;
	g->largest_name = "";
	for (unsigned i = 0; i < g->tab.nt; i++)
		if (!g->largest_name[0] && g->tab.d[i].numel == g->tab.largest)
			g->largest_name = g->tab.d[i].name;
	for (unsigned l = 0; l < g->tab.nlayers; l++) {
		uint64_t elems = 0;
		for (unsigned k = 0; k < g->tab.count[l]; k++)
			elems += g->tab.d[g->tab.first[l] + k].numel;
		g->largest_layer = ZN_MAX(g->largest_layer, elems);
	}
	return 0;
}

int zn_plan_compute_geom(const struct zn_config *cfg, const struct zn_plan_geom *g,
			 const struct zn_plan_machine *m, struct zn_plan *p)
{
	const struct zn_zero_config *z = &cfg->zero_optimization;
	struct zn_zero_rules zr;
	char a[32], b[32];
	int rc;

	memset(p, 0, sizeof(*p));
	zn_plan_zero_rules(&zr, cfg, g);
	p->params = g->tab.total;
	p->largest = g->tab.largest;
	p->largest_layer = g->largest_layer;
	snprintf(p->largest_name, sizeof(p->largest_name), "%s", g->largest_name);
	summary(cfg, g, &zr, p);

	struct zn_plan_tier *dev = zn_plan_new_tier(p, ZN_PLAN_DEVICE, "device", true);
	struct zn_plan_tier *pin = zn_plan_new_tier(p, ZN_PLAN_PINNED, "pinned host", false);
	struct zn_plan_tier *pag = zn_plan_new_tier(p, ZN_PLAN_PAGEABLE, "pageable host", true);
	if ((rc = zn_plan_need_device(cfg, g, dev)) ||
	    (rc = zn_plan_need_pageable(cfg, g, dev, pag)) ||
	    (rc = zn_plan_need_pinned(cfg, g, pin, pag)))
		return rc;

	/* NVMe: one row per distinct directory. */
	struct zn_plan_dir dirs[2 * ZN_STORE_MAX_PATHS];
	unsigned ndirs = 0;
	/* Gradients on NVMe: each micro-batch after a step's first reads and
	 * rewrites them, which the row says (a larger micro-batch is cheaper
	 * than accumulation there). */
	char gwhat[96];
	const uint32_t acc = cfg->batch.grad_accum;
	if (acc > 1)
		snprintf(gwhat, sizeof(gwhat), "gradients (%s; read and rewritten by %u of %u "
			 "micro-batches)", zr.gdt == ZN_DTYPE_F32 ? "fp32" : "16-bit", acc - 1, acc);
	else
		snprintf(gwhat, sizeof(gwhat), "gradients (%s, in the optimizer's sub-groups)",
			 zr.gdt == ZN_DTYPE_F32 ? "fp32" : "16-bit");
	if (zr.nvme_opt &&
	    (rc = zn_plan_nvme_section(p, m, dirs, &ndirs, 0, z->offload_optimizer.nvme_path,
				       zn_plan_optimizer_store(cfg, g),
				       z->offload_optimizer.stripe_size,
				       "optimizer states (fp32 master, exp_avg, exp_avg_sq)",
				       zn_plan_gradient_store(cfg, g), gwhat)))
		return rc;
	/* Homes go to NVMe only past max_in_cpu; with none there, the trainer
	 * never opens offload_param's nvme_path and neither does the plan. */
	uint64_t folds = 0;
	uint64_t pbytes = zr.nvme_homes ? zn_plan_param_store(cfg, g, &folds) : 0;
	if (pbytes &&
	    (rc = zn_plan_nvme_section(p, m, dirs, &ndirs, 1, z->offload_param.nvme_path, pbytes,
				       z->offload_param.stripe_size,
				       zn_dtype_size(zr.hdt) == 2 ? "parameters (16-bit)"
								 : "parameters (fp32)",
				       folds,
				       "tied embedding's classifier gradients waiting (fp32, "
				       "per tile)")))
		return rc;
	zn_plan_nvme_fit(p, dirs, ndirs);
	zn_plan_machine_text(p, m, ndirs);

	/* Capacities and fits. */
	struct zn_plan_host h;
	zn_plan_host_memory(m, &h);
	zn_plan_device_capacity(cfg, m, dev);
	dev->fits = !dev->known || dev->counted_elsewhere || dev->needed <= dev->available;

	pin->known = true;
	pin->described = pag->described = h.described;
	pin->total = h.total;
	pin->available = ZN_MIN(h.available, h.memlock);
	snprintf(pin->source, sizeof(pin->source), "%s%s",
		 h.described			? "the described host memory"
		 : h.memlock < h.available ? "the locked-memory limit (ulimit -l)"
					   : "MemAvailable",
		 h.cgroup ? " (cgroup memory limit applied)" : "");
	pin->fits = pin->needed <= pin->available;
	if (!pin->fits)
		snprintf(pin->note, sizeof(pin->note), "warning only: buffers that cannot be "
			 "page-locked are used unpinned (slower transfers)");

	pag->known = true;
	pag->total = h.total;
	pag->available = h.available > pin->needed ? h.available - pin->needed : 0;
	snprintf(pag->source, sizeof(pag->source), "%s%s%s%s",
		 h.described ? "the described host memory" : "MemAvailable",
		 h.cgroup ? " within the cgroup memory limit" : "",
		 pin->needed ? ", less the pinned tier's " : "",
		 pin->needed ? zn_plan_size(pin->needed, a) : "");
	pag->fits = pag->needed <= pag->available;
	if (dev->counted_elsewhere)
		snprintf(pag->note, sizeof(pag->note), "includes the cpu backend's device memory "
			 "(%s)", zn_plan_size(dev->needed, b));
	if (zr.nvme_homes && !pbytes) {
		zn_plan_append(pag->note, sizeof(pag->note),
			       "%soffload_param.max_in_cpu (%" PRIu64 ") keeps every offloaded "
			       "parameter in host memory; lower it to send them to nvme",
			       pag->note[0] ? "; " : "", z->offload_param.max_in_cpu);
	}

	if (!dev->fits)
		zn_plan_advise_device(cfg, g, dev);
	if (!pag->fits)
		zn_plan_advise_pageable(cfg, g, pag);
	if (!pin->fits)
		zn_plan_advise_pinned(cfg, g, pin, &h);
	return 0;
}

int zn_plan_compute_on(const struct zn_config *cfg, const struct zn_plan_machine *m,
		       struct zn_plan *p)
{
	static const struct zn_plan_machine here; /* nothing described */
	struct zn_plan_geom g;
	int rc;

	if (!cfg || !p)
		return zn_error(-EINVAL, "zn_plan_compute: a config and a plan are required");
	memset(p, 0, sizeof(*p));
	if (cfg->batch.micro_batch < 1 || cfg->batch.grad_accum < 1)
		return zn_error(-EINVAL, "train_batch_size / train_micro_batch_size_per_gpu: give "
					 "the batch size (DeepSpeed's keys)");
	if ((rc = zn_zero_check_config(cfg)) || (rc = zn_plan_geom_of(cfg, &g)))
		return rc;
	rc = zn_plan_compute_geom(cfg, &g, m ? m : &here, p);
	zn_plan_geom_free(&g);
	return rc;
}

int zn_plan_compute(const struct zn_config *cfg, struct zn_plan *p)
{
	return zn_plan_compute_on(cfg, NULL, p);
}

bool zn_plan_fits(const struct zn_plan *p)
{
	for (unsigned i = 0; p && i < p->ntiers; i++)
		if (p->tiers[i].hard && !p->tiers[i].fits)
			return false;
	return p != NULL;
}

int zn_rank_memory_plan(const struct zn_config *cfg, int world, int rank,
			struct zn_rank_memory *out)
{
	return zn_zero_rank_memory(cfg, world, rank, out);
}
