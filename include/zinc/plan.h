/* zinc — the memory plan: what a training config needs in each memory tier
 * and what this machine has there.
 *
 * `zinc plan CONFIG` prints it; `zinc train` runs the same check first and
 * refuses a configuration that cannot fit (DeepSpeed's
 * estimate_zero3_model_states_mem_needs, but for the actual config).
 *
 * Tiers, in this order:
 *
 *   device         the training device: a GPU (free memory from
 *                  cudaMemGetInfo, or device.memory_limit when lower), or the
 *                  cpu backend (device.memory_limit; 0 = no limit, the
 *                  device is then plain host memory and only the pageable
 *                  host row can run out)
 *   pinned host    page-locked buffers the NVMe tiers stream through
 *                  (capacity: MemAvailable, and RLIMIT_MEMLOCK when it is
 *                  finite and the process is not root).  A shortfall here is
 *                  a warning, not a failure: zinc's buffer pool falls back to
 *                  unpinned buffers (slower transfers) when it cannot lock
 *                  them, so training still runs.
 *   pageable host  every other host array (capacity: MemAvailable, lowered
 *                  by a cgroup memory limit, minus what the pinned tier
 *                  takes); the cpu backend's device memory is counted here
 *                  too, since it is host memory
 *   nvme           one row per distinct nvme_path directory (capacity:
 *                  statvfs free blocks; directories on one filesystem share
 *                  its free space)
 *
 * Or against a described machine (zn_plan_compute_on, `zinc plan
 * --machine`): given capacities replace what this machine measures, and
 * the plan says so.  zn_plan_largest searches the largest model of the
 * config's architecture, scaled as its family scales, that fits.
 *
 * What each tier needs is the trainer's allocation list: the model states
 * placed by the ZeRO rules the trainer allocates by (engine/zero/), and the
 * trainer's buffers beside them, one function per tier (engine/plan/need.c);
 * docs/design.md ("Memory plan") gives the formulas.
 * Byte counts are exact: device allocations rounded up to ZN_DEVICE_ALIGN as
 * the device budget counts them, swap files as the swap store sizes them.
 *
 * The library never prints: zn_plan_format writes the human report into a
 * buffer, and the caller decides where it goes.
 */
#ifndef ZINC_PLAN_H
#define ZINC_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "zinc/common.h"
#include "zinc/configfile.h"
#include "zinc/offload.h"
#include "zinc/train.h"

#ifdef __cplusplus
extern "C" {
#endif

enum zn_plan_tier_kind {
	ZN_PLAN_DEVICE,
	ZN_PLAN_PINNED,
	ZN_PLAN_PAGEABLE,
	ZN_PLAN_NVME,
};

#define ZN_PLAN_MAX_ITEMS 12     /* named parts of one tier's need */
#define ZN_PLAN_MAX_ADVICE 6     /* suggestions for a tier that does not fit */
#define ZN_PLAN_MAX_TIERS 35     /* 3 + up to 16 nvme_path directories per section */
#define ZN_PLAN_TEXT_MAX 512

/* One named part of a tier's need: "optimizer states (fp32 master, m, v)". */
struct zn_plan_item {
	char name[96];
	uint64_t bytes;
};

struct zn_plan_tier {
	int kind;                   /* enum zn_plan_tier_kind */
	char name[ZN_NVME_PATH_MAX]; /* "device", "pinned host", "pageable host", or the directory */
	uint64_t needed;            /* bytes: the sum of items[] */
	uint64_t available;         /* bytes this machine offers the tier (valid if known) */
	uint64_t total;             /* bytes of the resource behind it (RAM, disk size); 0: n/a */
	bool known;                 /* false: capacity unknown (a cuda build without a GPU) */
	/* The tier's need is checked in another row (the cpu backend without
	 * device.memory_limit: the device is host memory). */
	bool counted_elsewhere;
	bool fits;                  /* needed <= available (true when unknown or elsewhere) */
	bool hard;                  /* false: a shortfall is a warning (pinned host) */
	bool described;             /* capacity from a described machine, not measured */
	char source[ZN_PLAN_TEXT_MAX]; /* where `available` comes from, for humans */
	char note[ZN_PLAN_TEXT_MAX];   /* anything else the reader needs ("" for none) */
	unsigned nitems;
	struct zn_plan_item items[ZN_PLAN_MAX_ITEMS];
	unsigned nadvice;           /* what to change, when it does not fit */
	char advice[ZN_PLAN_MAX_ADVICE][ZN_PLAN_TEXT_MAX];
};

/* A machine to plan for instead of this one (`zinc plan --machine`): each
 * capacity in bytes, 0 where this machine's is measured as usual.
 *
 *   device  the training device's memory, the device row's capacity
 *           (device.memory_limit still applies when lower).  For the cpu
 *           backend too: there it caps the device's allocations as
 *           device.memory_limit does, and since they are host memory the
 *           pageable host row counts them as well.
 *   host    host memory: the total and the available memory of both host
 *           rows (pinned and pageable come out of it, as out of
 *           MemAvailable); neither a locked-memory limit nor a cgroup
 *           applies to a described machine.
 *   disk    NVMe disks' free space.  One disk holds every nvme_path
 *           directory and they share it; with several, the config's
 *           directories take one each, in the order they first appear
 *           (offload_optimizer.nvme_path's list, then offload_param's), and
 *           directories beyond the last disk share the last.  Directories
 *           are told apart by their path, which need not exist here. */
#define ZN_PLAN_MAX_DISKS 16
struct zn_plan_machine {
	uint64_t device;
	uint64_t host;
	unsigned ndisks;
	uint64_t disk[ZN_PLAN_MAX_DISKS];
};

/* About 220 KiB: allocate it rather than putting it on a small stack. */
struct zn_plan {
	/* The model and the settings the plan was made for. */
	char summary[ZN_PLAN_TEXT_MAX]; /* one line: model, batch, precision, placements */
	uint64_t params;            /* P: parameters (elements) */
	uint64_t largest;           /* elements of the largest tensor */
	char largest_name[64];
	uint64_t largest_layer;     /* elements of the largest layer */
	/* The machine: described (some capacity given), what was given, and
	 * one line saying which capacities are described and which measured
	 * ("" when none is described). */
	bool described;
	struct zn_plan_machine machine;
	char machine_text[ZN_PLAN_TEXT_MAX];
	unsigned ntiers;
	struct zn_plan_tier tiers[ZN_PLAN_MAX_TIERS];
};

/* Work out what `cfg` needs per tier and what this machine has (hwloc and
 * /proc/meminfo for host memory, getrlimit for page-locking, statvfs for
 * each nvme_path, cudaMemGetInfo for a GPU when zinc was built with CUDA).
 * Nothing is allocated on any tier and nothing is printed.  Returns 0 (the
 * plan may still say it does not fit: zn_plan_fits), or -errno with the
 * last-error message for a config that cannot be planned: a bad model
 * shape or batch (-EINVAL), offload_param without stage 3 (-EINVAL), an
 * offload_param buffer_size below the largest tensor (-EINVAL), an
 * nvme_path directory that does not exist or cannot take files (-ENOENT,
 * -ENOTDIR, -EACCES; the message names the key and the path). */
ZN_API int zn_plan_compute(const struct zn_config *cfg, struct zn_plan *out);

/* zn_plan_compute against machine `m` (NULL: this one).  Described parts
 * are not measured: a described device needs no GPU, and with described
 * disks no nvme_path directory need exist (a path list that is empty or
 * too long is still refused).  The same errors otherwise. */
ZN_API int zn_plan_compute_on(const struct zn_config *cfg, const struct zn_plan_machine *m,
			      struct zn_plan *out);

/* Add the parts of `text` to *m (zero it first): comma-separated
 * "device=SIZE", "host=SIZE" and "nvme=SIZE" in any order, nvme repeated
 * once per disk (at most ZN_PLAN_MAX_DISKS), SIZE as the config's size
 * keys read it (zn_parse_size: K, M, G, T with an optional B or iB, all
 * powers of 1024; or a plain byte count such as 1.2e12).  0, or -EINVAL
 * with a message naming the part that is wrong (unknown, repeated, not a
 * size, or 0). */
ZN_API int zn_plan_machine_parse(const char *text, struct zn_plan_machine *m);

/* True when every tier whose shortfall stops training fits (pinned host
 * only warns; unknown capacities are not counted as shortfalls). */
ZN_API bool zn_plan_fits(const struct zn_plan *p);

/* The report for humans: a table (tier, needed, available, total, fits)
 * with GiB/MiB units, then per tier its parts with exact byte counts
 * ("device needs 12.3 MiB (12902400 bytes)"), and for each tier that does
 * not fit what to change.  Writes at most `len` bytes including the NUL
 * (truncating); returns the length the whole report has (like snprintf),
 * or -EINVAL when p is NULL. */
ZN_API int zn_plan_format(const struct zn_plan *p, char *buf, size_t len);

/* The check `zinc train` runs before training: zn_plan_compute, then
 * zn_plan_fits.  Returns 0 when the configuration fits (a pinned-host
 * shortfall is logged as a warning, the process's one about unpinned
 * buffers: the buffer pools that then fall back log theirs as info),
 * -ENOMEM when it does not (the last
 * error says which tiers are short; `report`, if not NULL, gets the
 * zn_plan_format report with the suggestions), or zn_plan_compute's error
 * for a config that cannot be planned (`report` gets ""). */
ZN_API int zn_plan_check(const struct zn_config *cfg, char *report, size_t len);

/* The same figures from the config alone, for rank `rank` of `world`
 * (what zinc/train.h's zn_trainer_memory reports once it trains; zinc
 * plan --ranks):
 * ZeRO's partitions -- optimizer states from stage 1, gradients from
 * stage 2, parameters in stage 3 -- each tensor cut into world parts of
 * ceil(n / world), as DeepSpeed's estimate_zero*_model_states_mem_needs
 * estimate them, but for this config's placements and dtypes.  0, or
 * -EINVAL (bad rank/world, or a model the config cannot describe). */
ZN_API int zn_rank_memory_plan(const struct zn_config *cfg, int world, int rank,
			       struct zn_rank_memory *out);

/* ---- the largest model that fits ---------------------------------------- */

/* One model shape of a family.  GPT-2: n_kv_head = n_head, head_dim 64,
 * intermediate 4 n_embd. */
struct zn_plan_shape {
	uint32_t n_layer;      /* L, blocks */
	uint32_t n_embd;       /* C, hidden size */
	uint32_t n_head;       /* query heads, C / head_dim */
	uint32_t n_kv_head;    /* key/value heads */
	uint32_t head_dim;
	uint32_t intermediate; /* the MLP's width */
	uint32_t vocab_size;
	uint64_t params;       /* elements of every tensor */
};

enum zn_plan_largest_result {
	ZN_PLAN_LARGEST_FOUND, /* fit fits; over, the next size up, does not */
	ZN_PLAN_LARGEST_NONE,  /* even the family's smallest shape (over) does not fit */
	ZN_PLAN_LARGEST_ALL,   /* even the family's largest shape (fit) fits */
};

/* About 450 KiB: allocate it. */
struct zn_plan_largest {
	int result;                  /* enum zn_plan_largest_result */
	int model_type;              /* enum zn_model_type of the family */
	char family[16];             /* "Llama", "GPT-2" */
	char smallest[32], biggest[32]; /* the family's ends ("Llama-3.2-1B") */
	uint32_t step;               /* hidden sizes are multiples of it */
	struct zn_plan_shape fit;    /* FOUND, ALL */
	struct zn_plan_shape over;   /* FOUND, NONE */
	struct zn_plan fit_plan;     /* fit's plan (FOUND, ALL) */
	struct zn_plan over_plan;    /* over's plan (FOUND, NONE), unless over_error */
	/* over could not be planned at all (a config limit such as
	 * offload_param.buffer_size below its largest tensor): why, else "". */
	char over_error[ZN_PLAN_TEXT_MAX];
	unsigned plans;              /* plans the search computed */
};

/* The largest model of cfg's architecture that fits machine `m` (NULL:
 * this one), everything but the model's shape as cfg says.  The shapes are
 * the family's published sizes and those between:
 *
 *   Llama  (hidden, layers) 1B (2048, 16), 3B (3072, 28), 8B (4096, 32),
 *          70B (8192, 80), 405B (16384, 126); head_dim 128; cfg's
 *          key/value heads (all heads when cfg has as many as query
 *          heads), so the hidden size is a multiple of 128 x kv heads;
 *          intermediate 256 x round(3.5 hidden / 256); cfg's vocabulary,
 *          tying and the rest of its config.json.
 *   GPT-2  124M (768, 12), 350M (1024, 24), 774M (1280, 36), 1558M (1600,
 *          48); head_dim 64, so the hidden size is a multiple of 64;
 *          cfg's vocabulary and seq_len.
 *
 * A target parameter count N between two published sizes' counts (their
 * shapes with cfg's vocabulary and heads) puts the hidden size and the
 * depth the same fraction of the way between theirs, each then rounded
 * to the nearest allowed value (halves up).  The search bisects on N for
 * the largest shape whose plan (zn_plan_compute_on of cfg with that shape)
 * fits, assuming needs grow with the model.  0, or -errno for a config
 * that cannot be planned at its own shape (zn_plan_compute's errors) or a
 * family this search does not know. */
ZN_API int zn_plan_largest(const struct zn_config *cfg, const struct zn_plan_machine *m,
			   struct zn_plan_largest *out);

#ifdef __cplusplus
}
#endif
#endif
