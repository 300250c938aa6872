/* The config model's entry points besides loading (include/zinc/configfile.h):
 * defaults, the tree of section tables listed depth-first (for `zinc
 * config` and the docs), the top-level keys of DeepSpeed accepted without
 * use, what a loaded config resolves afterwards (the batch sizes by
 * DeepSpeed's rule, the "auto" bucket sizes by the Hugging Face
 * integration's), the storage dtype and the {rank} expansion of nvme
 * paths.  Reading a file is engine/config/load.c; the key tables are
 * engine/config/keys.c.
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

/* DeepSpeed's batch rule; see zinc/configfile.h. */
int zn_config_resolve_batch(const struct zn_config *cfg, uint32_t world,
			    struct zn_batch *out)
{
	uint64_t train = cfg->train_batch_size, micro = cfg->train_micro_batch_size_per_gpu;
	uint64_t accum = cfg->gradient_accumulation_steps;

	memset(out, 0, sizeof(*out));
	if (world == 0)
		return zn_error(-EINVAL, "batch: world size 0");
	/* DeepSpeed's _set_batch_related_parameters, case by case. */
	if (train && micro && accum) {
		/* checked below */
	} else if (train && micro) {
		accum = train / micro / world;
	} else if (train && accum) {
		micro = train / world / accum;
	} else if (micro && accum) {
		train = micro * accum * world;
	} else if (train) {
		accum = 1;
		micro = train / world;
	} else if (micro) {
		accum = 1;
		train = micro * world;
	} else if (accum) {
		return zn_error(-EINVAL, "gradient_accumulation_steps: given alone; also give "
					 "train_batch_size or train_micro_batch_size_per_gpu");
	} else {
		return 0; /* no training configured */
	}
	/* The divisions above truncate: check the product, as DeepSpeed's
	 * _batch_assertion does, and say which values to change. */
	if (train == 0 || micro == 0 || accum == 0 || train != micro * accum * world ||
	    train > UINT32_MAX)
		return zn_error(-EINVAL,
				"train_batch_size: %llu is not train_micro_batch_size_per_gpu %llu "
				"x gradient_accumulation_steps %llu x world size %u; give two of "
				"the three (or make them agree)",
				(unsigned long long)train, (unsigned long long)micro,
				(unsigned long long)accum, world);
	out->train_batch_size = (uint32_t)train;
	out->micro_batch = (uint32_t)micro;
	out->grad_accum = (uint32_t)accum;
	out->world_size = world;
	return 0;
}

void zn_config_resolve_auto(struct zn_config *cfg)
{
	uint64_t h = cfg->model.n_embd;
	struct zn_zero_config *z = &cfg->zero_optimization;

	if (!h)
		return;
	/* The Hugging Face integration's rules (deepspeed.py, trainer_config_finalize). */
	if (!z->reduce_bucket_size)
		z->reduce_bucket_size = h * h;
	if (z->prefetch_bucket_size == UINT64_MAX)
		z->prefetch_bucket_size = (uint64_t)(0.9 * (double)(h * h));
	if (z->param_persistence_threshold == UINT64_MAX)
		z->param_persistence_threshold = 10 * h;
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
	return cfg->bf16.enabled ? ZN_DTYPE_BF16 : cfg->fp16.enabled ? ZN_DTYPE_F16 : ZN_DTYPE_F32;
}

int zn_config_expand_rank(struct zn_config *cfg, int rank, int local_rank)
{
	int rc = expand_rank(cfg->zero_optimization.offload_param.nvme_path, rank, local_rank);
	return rc ? rc
		  : expand_rank(cfg->zero_optimization.offload_optimizer.nvme_path, rank,
				local_rank);
}
