/* The config model's entry points besides loading (include/zinc/configfile.h):
 * defaults, the tree of section tables listed depth-first (for `zinc
 * config` and the docs), the top-level keys of DeepSpeed accepted without
 * use, the storage dtype and the {rank} expansion of nvme paths.  Reading a
 * file is engine/config/load.c; the key tables are engine/config/keys.c.
 */
#include "zn_common.h"

#include <stdio.h>
#include <string.h>

#include "config/keys.h"
#include "zinc/configfile.h"

/* Top-level keys of DeepSpeed's config (docs/_pages/config-json.md and
 * runtime/constants.py) that zinc accepts without using yet, so that a
 * ds_config.json loads as it is.  Sorted (the tests check it); a key moves
 * out of here when it joins the top-level table (engine/config/keys.c). */
static const char *const ignored_keys[] = {
	"amp",
	"autotuning",
	"comet",
	"comms_logger",
	"communication_data_type",
	"compile",
	"compression_training",
	"csv_monitor",
	"curriculum_learning",
	"data_efficiency",
	"dataloader_drop_last",
	"disable_allgather",
	"dump_state",
	"eigenvalue",
	"elasticity",
	"flops_profiler",
	"fp32_allreduce",
	"gradient_predivide_factor",
	"graph_harvesting",
	"hybrid_engine",
	"memory_breakdown",
	"monitor_config",
	"nebula",
	"pipeline",
	"prescale_gradients",
	"progressive_layer_drop",
	"quantize_training",
	"seq_parallel_communication_data_type",
	"sparse_attention",
	"sparse_gradients",
	"tensor_parallel",
	"tensorboard",
	"timers",
	"torch_autocast",
	"use_data_before_expert_parallelism",
	"vocabulary_size",
	"wall_clock_breakdown",
	"wandb",
	"weight_quantization",
	"zero_allow_untested_optimizer",
	"zero_force_ds_cpu_optimizer",
};

void zn_config_default(struct zn_config *cfg)
{
	zn_keys_defaults(&zn_config_key_table, cfg);
}

const struct zn_key_table *zn_config_root(void)
{
	return &zn_config_key_table;
}

/* Depth-first walk of the section tree: the section numbered `*n` (counting
 * down), with its offset in struct zn_config and its path. */
struct section_walk {
	size_t n;                          /* sections left to skip */
	const struct zn_key_table *want; /* or find by table */
	const struct zn_key_table *found;
	size_t offset;
	char path[256];
};

static bool walk(struct section_walk *w, const struct zn_key_table *sec, size_t offset,
		 const char *path)
{
	if (w->want ? sec == w->want : w->n-- == 0) {
		w->found = sec;
		w->offset = offset;
		snprintf(w->path, sizeof(w->path), "%s", path);
		return true;
	}
	for (size_t i = 0; i < sec->nkeys; i++) {
		const struct zn_key *k = &sec->keys[i];
		char sub[256];
		if (k->type != ZN_KEY_SECTION)
			continue;
		snprintf(sub, sizeof(sub), "%s%s%s", path, path[0] ? "." : "", k->name);
		if (walk(w, k->sub, offset + k->offset, sub))
			return true;
	}
	return false;
}

const struct zn_key_table *zn_config_section(size_t i, const char **path)
{
	static _Thread_local char path_buf[256];
	struct section_walk w = { .n = i };

	if (!walk(&w, &zn_config_key_table, 0, ""))
		return NULL;
	if (path) {
		memcpy(path_buf, w.path, sizeof(path_buf));
		*path = path_buf;
	}
	return w.found;
}

void *zn_config_section_data(struct zn_config *cfg, const struct zn_key_table *sec)
{
	struct section_walk w = { .want = sec };

	if (!sec || !walk(&w, &zn_config_key_table, 0, ""))
		return NULL;
	return (char *)cfg + w.offset;
}

const char *zn_config_ignored_key(size_t i)
{
	return i < ZN_ARRAY_SIZE(ignored_keys) ? ignored_keys[i] : NULL;
}

/* "{rank}" and "{local_rank}" in `path` (ZN_NVME_PATH_MAX bytes) become the
 * numbers. */
static int expand_rank(char *path, int rank, int local_rank)
{
	char out[ZN_NVME_PATH_MAX];
	size_t o = 0;
	for (const char *p = path; *p;) {
		const char *key = strncmp(p, "{rank}", 6) == 0         ? "{rank}"
				  : strncmp(p, "{local_rank}", 12) == 0 ? "{local_rank}"
									 : NULL;
		int n = key ? snprintf(out + o, sizeof(out) - o, "%d",
				       key[1] == 'r' ? rank : local_rank)
			    : snprintf(out + o, sizeof(out) - o, "%c", *p);
		if (n < 0 || (size_t)n >= sizeof(out) - o)
			return zn_error(-ENAMETOOLONG, "nvme_path is too long with the rank put "
						       "in (at most %d bytes): '%s'",
					ZN_NVME_PATH_MAX - 1, path);
		o += (size_t)n;
		p += key ? strlen(key) : 1;
	}
	memcpy(path, out, o + 1);
	return 0;
}

enum zn_dtype zn_config_storage_dtype(const struct zn_config *cfg)
{
	if (cfg->device.type != ZN_DEVICE_CUDA)
		return ZN_DTYPE_F32;
	return cfg->bf16.enabled ? ZN_DTYPE_BF16 : cfg->fp16.enabled ? ZN_DTYPE_F16 : ZN_DTYPE_F32;
}

int zn_config_expand_rank(struct zn_config *cfg, int rank, int local_rank)
{
	int rc = expand_rank(cfg->zero_optimization.offload_param.nvme_path, rank, local_rank);
	return rc ? rc
		  : expand_rank(cfg->zero_optimization.offload_optimizer.nvme_path, rank,
				local_rank);
}
