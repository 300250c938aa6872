/* The memory plan's parts (include/zinc/plan.h), shared between its files
 * and seen by no other:
 *
 *   plan.c     zn_plan_compute(_on): the tiers in order, their capacities
 *              and fits; the helpers every part writes a tier with
 *   need.c     what each tier needs: the model's tensors placed by
 *              engine/zero's rules, and the trainer's buffers beside them
 *   machine.c  what the machine has: this one's host memory, locked-memory
 *              limit, device memory and nvme_path directories, or a
 *              described machine's (zn_plan_machine_parse reads one)
 *   scale.c    zn_plan_largest: the family's shapes, the search over them
 *   advise.c   what to change for a tier that does not fit: the plan of
 *              the config with one change at a time
 *   report.c   zn_plan_format (the text for humans) and zn_plan_check
 */
#ifndef ZN_ENGINE_PLAN_INTERNAL_H
#define ZN_ENGINE_PLAN_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "zinc/device.h"
#include "zinc/plan.h"

#include "model/arch.h"
#include "zero/zero.h"

/* x rounded up to ZN_DEVICE_ALIGN: what a device allocation of x bytes
 * costs the device budget, which counts each allocation so. */
#define A256(x) ZN_ALIGN_UP((uint64_t)(x), (uint64_t)ZN_DEVICE_ALIGN)
/* x rounded up to 4096: swap extents and pinned buffers (O_DIRECT blocks). */
#define A4K(x) ZN_ALIGN_UP((uint64_t)(x), 4096u)

/* The model: its tensors in the trainer's order (layer by layer). */
struct zn_plan_geom {
	struct zn_arch a;
	struct zn_tensor_table tab;    /* the trainer's tensor table */
	uint64_t largest_layer;        /* elements of the largest layer */
	const char *largest_name;      /* the (first) largest tensor's name */
};

int zn_plan_geom_of(const struct zn_config *cfg, struct zn_plan_geom *g);
/* The same for a resolved architecture a shape no config file names
 * (scale.c's): a copied into g. */
int zn_plan_geom_of_arch(const struct zn_arch *a, struct zn_plan_geom *g);
void zn_plan_geom_free(struct zn_plan_geom *g);

/* ZeRO's rules for one rank of the plan, with the hidden-size "auto"s
 * resolved from the geometry's model as the trainer resolves them. */
void zn_plan_zero_rules(struct zn_zero_rules *z, const struct zn_config *c,
			const struct zn_plan_geom *g);

/* zn_plan_compute_on for model g (its config's, or a scaled one) with the
 * rest of cfg: *p is overwritten; m is never NULL (zeroed: this machine). */
int zn_plan_compute_geom(const struct zn_config *cfg, const struct zn_plan_geom *g,
			 const struct zn_plan_machine *m, struct zn_plan *p);

/* Writing a tier: an item of `bytes` (none when 0 or the tier is full),
 * advice, a note; each formats like printf and truncates. */
void zn_plan_item(struct zn_plan_tier *t, uint64_t bytes, const char *fmt, ...) ZN_PRINTF(3, 4);
void zn_plan_advice(struct zn_plan_tier *t, const char *fmt, ...) ZN_PRINTF(2, 3);
/* Append to the NUL-terminated string in buf[len]. */
void zn_plan_append(char *buf, size_t len, const char *fmt, ...) ZN_PRINTF(3, 4);
/* "1.5 GiB": buf holds at least 32 bytes. */
const char *zn_plan_size(uint64_t bytes, char *buf);
/* A new tier at the end of p->tiers, zeroed but for these. */
struct zn_plan_tier *zn_plan_new_tier(struct zn_plan *p, int kind, const char *name, bool hard);

/* ---- need.c: what each tier needs ---------------------------------------
 *
 * Each fills t->items (and so t->needed) from the config alone; the
 * suggestions call them again on changed copies of the config.  0, or
 * -errno with the message set. */
int zn_plan_need_device(const struct zn_config *c, const struct zn_plan_geom *g,
			struct zn_plan_tier *t);
/* `device`: the device row (the cpu backend's device memory is host memory). */
int zn_plan_need_pageable(const struct zn_config *c, const struct zn_plan_geom *g,
			  const struct zn_plan_tier *device, struct zn_plan_tier *t);
/* Unpinned (pin_memory: false) swap buffers go to `pageable`. */
int zn_plan_need_pinned(const struct zn_config *c, const struct zn_plan_geom *g,
			struct zn_plan_tier *t, struct zn_plan_tier *pageable);
/* The swap stores' capacities in bytes: the optimizer states
 * (offload_optimizer nvme), and the parameter homes on NVMe (0: none, so
 * offload_param's nvme_path is not used). */
uint64_t zn_plan_optimizer_store(const struct zn_config *c, const struct zn_plan_geom *g);
uint64_t zn_plan_gradient_store(const struct zn_config *c, const struct zn_plan_geom *g);
uint64_t zn_plan_param_store(const struct zn_config *c, const struct zn_plan_geom *g,
			     uint64_t *folds);
/* The elements per sub-group of the NVMe optimizer states. */
uint64_t zn_plan_sub_group(const struct zn_config *c, const struct zn_plan_geom *g);

/* ---- machine.c: what the machine has ---------------------------------------
 *
 * Each takes the machine description `m` (never NULL): a part it gives
 * replaces what this machine would measure. */

struct zn_plan_host {
	uint64_t total;      /* RAM (hwloc), or the cgroup limit when lower */
	uint64_t available;  /* MemAvailable, or what the cgroup limit leaves when lower */
	uint64_t memlock;    /* RLIMIT_MEMLOCK; UINT64_MAX: no limit (or root, or described) */
	bool cgroup;         /* a cgroup limit lowered the figures */
	bool described;      /* m->host: total = available = m->host */
};

void zn_plan_host_memory(const struct zn_plan_machine *m, struct zn_plan_host *h);
/* The device row's capacity (known, available, total, source, note). */
void zn_plan_device_capacity(const struct zn_config *c, const struct zn_plan_machine *m,
			     struct zn_plan_tier *t);

/* One nvme row per distinct directory: by device and inode here; on a
 * described machine by path, `dev` then the index of its disk. */
struct zn_plan_dir {
	unsigned row;          /* index into plan->tiers */
	dev_t dev;
	ino_t ino;
	bool keys[2];          /* 0 offload_optimizer, 1 offload_param */
};

/* Add one section's swap store (`which`: 0 offload_optimizer, 1
 * offload_param; `value` its nvme_path) of `capacity` bytes to the rows of
 * its directories, making rows for new ones; `part` bytes of it (0: none)
 * listed apart as `part_what`.  0, or -errno naming the key and the path
 * that cannot take swap files. */
int zn_plan_nvme_section(struct zn_plan *p, const struct zn_plan_machine *m,
			 struct zn_plan_dir *dirs, unsigned *ndirs, int which, const char *value,
			 uint64_t capacity, uint64_t stripe, const char *what, uint64_t part,
			 const char *part_what);
/* Each row's fit, directories on one filesystem (or described disk)
 * checked together. */
void zn_plan_nvme_fit(struct zn_plan *p, const struct zn_plan_dir *dirs, unsigned ndirs);
/* p->machine_text: what was described and what measured; `ndirs` nvme
 * directories took the described disks. */
void zn_plan_machine_text(struct zn_plan *p, const struct zn_plan_machine *m, unsigned ndirs);

/* ---- advise.c: what to change ----------------------------------------------- */

void zn_plan_advise_device(const struct zn_config *c, const struct zn_plan_geom *g,
			   struct zn_plan_tier *t);
void zn_plan_advise_pageable(const struct zn_config *c, const struct zn_plan_geom *g,
			     struct zn_plan_tier *t);
void zn_plan_advise_pinned(const struct zn_config *c, const struct zn_plan_geom *g,
			   struct zn_plan_tier *t, const struct zn_plan_host *h);

#endif
