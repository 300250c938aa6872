/* zinc — the configuration file: YAML or JSON, DeepSpeed's key names.
 *
 * A config file is a mapping of sections.  A DeepSpeed ds_config.json is
 * valid input as it is: JSON is YAML's flow syntax, and the top-level keys
 * DeepSpeed documents that zinc does not implement yet are accepted with an
 * INFO log line.  Each section zinc reads (see zn_config_section) is a
 * mapping described by a key table (struct zn_key_table, zinc/keys.h): scalar keys,
 * lists of two numbers (betas) and nested sections (zero_optimization's
 * offload_param); values are parsed, range-checked and validated by that
 * table, and messages name the key by its path
 * ("zero_optimization.offload_param.buffer_count").
 *
 * Every failure about the file's contents starts with "FILE:LINE:COLUMN: "
 * (1-based), so editors can jump to it, and one about a --set override
 * with "--set KEY=VALUE: "; warnings (an unknown top-level key, with the
 * nearest known key) go to the log sink with the same prefix.
 */
#ifndef ZINC_CONFIGFILE_H
#define ZINC_CONFIGFILE_H

#include <stddef.h>

#include <stdbool.h>
#include <stdint.h>

#include "zinc/aio.h"
#include "zinc/common.h"
#include "zinc/keys.h"
#include "zinc/kernels.h"
#include "zinc/offload.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Each struct below is one section; its key table (engine/config/keys.c)
 * holds the names, defaults, ranges and help, which `zinc config` lists. */

/* Every optimizer.type DeepSpeed names, in the order of the key table's
 * choices (engine/config/keys.c); the trainer runs Adam, AdamW, Lamb and
 * SGD, the loader refuses the others by name. */
enum zn_optimizer_type {
	ZN_OPT_ADAM,
	ZN_OPT_ADAMW,
	ZN_OPT_ADAGRAD,
	ZN_OPT_LAMB,
	ZN_OPT_LION,
	ZN_OPT_ONEBIT_ADAM,
	ZN_OPT_ZERO_ONE_ADAM,
	ZN_OPT_ONEBIT_LAMB,
	ZN_OPT_MUADAM,
	ZN_OPT_MUADAMW,
	ZN_OPT_MUSGD,
	ZN_OPT_SGD, /* torch.optim.SGD, which DeepSpeed takes by name */
	ZN_OPT_COUNT
};
enum zn_scheduler_type {
	ZN_SCHED_NONE, /* constant optimizer.params.lr */
	ZN_SCHED_WARMUP_LR,
	ZN_SCHED_WARMUP_DECAY_LR,
	ZN_SCHED_WARMUP_COSINE_LR,
	ZN_SCHED_ONE_CYCLE,
	ZN_SCHED_LR_RANGE_TEST,
	ZN_SCHED_COUNT
};
enum zn_warmup_type { ZN_WARMUP_LOG, ZN_WARMUP_LINEAR };
enum zn_device_type { ZN_DEVICE_CPU, ZN_DEVICE_CUDA };

/* Which parameters weight decay applies to (optimizer.params.weight_decay_params). */
enum zn_decay_params {
	ZN_DECAY_MATRICES, /* 2-D tensors only: not biases, norms (HF Trainer, nanoGPT) */
	ZN_DECAY_ALL,      /* every parameter, as DeepSpeed's optimizer given them all */
};

struct zn_optimizer_params {
	double lr;
	double betas[2];
	double eps;
	double weight_decay;
	bool bias_correction;
	bool adam_w_mode;   /* Adam only: decoupled weight decay (DeepSpeed's default) */
	bool amsgrad;       /* not supported yet */
	bool torch_adam;    /* accepted; zinc always uses its own CPU Adam */
	int weight_decay_params; /* enum zn_decay_params */
	double max_coeff;   /* Lamb: upper bound of the trust ratio */
	double min_coeff;   /* Lamb: lower bound of the trust ratio */
	bool eps_inside_sqrt; /* Lamb: sqrt(v + eps) instead of sqrt(v) + eps */
	double max_grad_norm; /* Lamb: FusedLamb's own clipping; not supported */
	double momentum;    /* SGD */
	double dampening;   /* SGD */
	bool nesterov;      /* SGD */
};

struct zn_optimizer_config {
	int type; /* enum zn_optimizer_type */
	bool legacy_fusion; /* accepted, a no-op */
	struct zn_optimizer_params params;
};

struct zn_scheduler_params {
	double warmup_min_lr;
	double warmup_max_lr;
	uint64_t warmup_num_steps;
	int warmup_type;          /* enum zn_warmup_type */
	uint64_t total_num_steps; /* 0 = auto (zinc train's --max-steps) */
	double warmup_min_ratio;
	double cos_min_ratio;
	int64_t last_batch_iteration;
	/* OneCycle; -1 in cycle_min_lr / cycle_max_lr: not given (required),
	 * in cycle_second_step_size / cycle_second_stair_count: DeepSpeed's
	 * None, the first half's value. */
	double cycle_min_lr, cycle_max_lr;
	double decay_lr_rate;
	uint64_t cycle_first_step_size;
	int64_t cycle_second_step_size;
	uint64_t cycle_first_stair_count;
	int64_t cycle_second_stair_count;
	uint64_t decay_step_size;
	bool cycle_momentum;
	double cycle_min_mom, cycle_max_mom;
	double decay_mom_rate;
	/* LRRangeTest */
	double lr_range_test_min_lr;
	uint64_t lr_range_test_step_size;
	double lr_range_test_step_rate;
	bool lr_range_test_staircase;
};

struct zn_scheduler_config {
	int type; /* enum zn_scheduler_type */
	struct zn_scheduler_params params;
};

struct zn_fp16_config {
	bool enabled;
	double loss_scale;            /* 0 = dynamic */
	uint32_t initial_scale_power; /* dynamic: start at 2^this */
	uint32_t loss_scale_window;
	uint32_t hysteresis;
	bool consecutive_hysteresis;
	double min_loss_scale;
	bool auto_cast;
	bool fp16_master_weights_and_grads;
};

struct zn_bf16_config {
	bool enabled;
	bool immediate_grad_update;
	bool check_grad_overflow;  /* zinc skips steps on overflow in fp16 only */
	bool bf16_master_weights_and_grads;
	bool bf16_optimizer_states;
	/* fp16's loss-scaler keys, often copied into bf16: no-ops (bf16 needs
	 * no loss scaling). */
	double loss_scale;
	uint32_t initial_scale_power;
	uint32_t loss_scale_window;
	uint32_t hysteresis;
	bool consecutive_hysteresis;
	double min_loss_scale;
};

/* DeepSpeed's data_types section. */
enum zn_grad_accum_dtype { ZN_GRAD_ACCUM_FP32, ZN_GRAD_ACCUM_FP16, ZN_GRAD_ACCUM_BF16 };
struct zn_data_types_config {
	int grad_accum_dtype;  /* enum zn_grad_accum_dtype; default fp32 */
};

/* DeepSpeed's activation_checkpointing section, plus zinc's `enabled`
 * (DeepSpeed turns checkpointing on in model code; zinc's models read
 * this switch). */
struct zn_actckpt_config {
	bool enabled;                         /* zinc: recompute inside each block */
	bool partition_activations;           /* not supported yet (multi-rank) */
	bool cpu_checkpointing;               /* kept activations in host memory */
	bool contiguous_memory_optimization;  /* accepted: zinc's buffers are contiguous */
	int64_t number_checkpoints;           /* accepted: zinc checkpoints every block */
	bool synchronize_checkpoint_boundary; /* accepted */
	bool profile;                         /* not supported yet */
};

struct zn_zero_loco_config {
	double err_beta;
	uint32_t reset_T;
};

/* zero_optimization: every key DeepSpeed's DeepSpeedZeroConfig reads. */
struct zn_zero_config {
	uint32_t stage;           /* 0 to 3 */
	bool contiguous_gradients;
	bool reduce_scatter;
	uint64_t reduce_bucket_size; /* elements; UINT64_MAX = auto (hidden^2) */
	bool use_multi_rank_bucket_allreduce;
	bool allgather_partitions;
	uint64_t allgather_bucket_size;
	bool overlap_comm;
	bool load_from_fp32_weights;
	bool elastic_checkpoint;
	struct zn_offload_param_config offload_param;
	struct zn_offload_optimizer_config offload_optimizer;
	uint64_t sub_group_size;
	uint64_t tile_size;                   /* zinc: elements per tile, 0 off */
	bool cpu_offload;
	bool cpu_offload_param;
	bool cpu_offload_use_pin_memory;
	uint64_t prefetch_bucket_size;        /* UINT64_MAX = auto (0.9 n_embd^2) */
	uint64_t param_persistence_threshold; /* UINT64_MAX = auto (10 n_embd) */
	uint64_t model_persistence_threshold;
	uint64_t max_live_parameters;
	uint64_t max_reuse_distance;
	bool gather_16bit_weights_on_model_save;
	uint64_t module_granularity_threshold;
	bool use_all_reduce_for_fetch_params;
	bool ignore_unused_parameters;
	bool legacy_stage1;
	bool round_robin_gradients;
	uint32_t zero_hpz_partition_size;
	bool zero_quantized_weights;
	bool zero_quantized_nontrainable_weights;
	bool zero_quantized_gradients;
	struct zn_zero_loco_config zeropp_loco_param;
	int64_t mics_shard_size;
	bool mics_hierarchical_params_gather;
	bool memory_efficient_linear;
	bool pipeline_loading_checkpoint;
	bool override_module_apply;
	bool log_trace_cache_warnings;
	bool allgather_sequential;
	bool enable_sanity_checks;
	bool save_muon_momentum_buffer_in_memory;
	uint8_t zenflow;     /* a section refused when given: no keys kept */
	uint8_t leaf_module; /* likewise */
};

/* zinc's own sections. */
enum zn_model_type { ZN_MODEL_GPT2, ZN_MODEL_LLAMA };

struct zn_model_config {
	int type;            /* enum zn_model_type */
	uint32_t n_layer;
	uint32_t n_head;
	uint32_t n_embd;
	uint32_t vocab_size;
	uint32_t seq_len;    /* tokens per sample; also the position table size */
	char from[4096];     /* weights to start from, or "" (random init) */
	char config[4096];   /* llama: a Hugging Face config.json (from scratch) */
};

struct zn_data_config {
	char train[4096];    /* llm.c token shards: a file or a glob */
	char val[4096];
	uint64_t seed;
	bool shuffle;
	uint64_t val_every;  /* optimizer steps between validations; 0 = never */
	uint32_t val_steps;  /* batches per validation */
};

enum zn_tag_validation { ZN_TAG_IGNORE, ZN_TAG_WARN, ZN_TAG_FAIL };

struct zn_ckpt_parallel_write {
	bool pipeline_stage;
};

struct zn_checkpoint_config {
	char dir[4096];      /* "" = no checkpoints */
	uint64_t every;      /* optimizer steps; 0 = only at the end */
	uint32_t keep;       /* newest checkpoints kept; 0 = all */
	bool resume;         /* continue from the newest checkpoint in dir */
	int tag_validation;  /* DeepSpeed's; enum zn_tag_validation */
	bool load_universal;
	bool use_node_local_storage;
	struct zn_ckpt_parallel_write parallel_write;
};

struct zn_device_config {
	int type;              /* enum zn_device_type */
	uint32_t index;        /* cuda: the GPU ordinal */
	uint64_t memory_limit; /* bytes the engine may allocate; 0 = no limit */
};

/* The batch sizes after DeepSpeed's rule (zn_config_resolve_batch). */
struct zn_batch {
	uint32_t train_batch_size;
	uint32_t micro_batch;  /* train_micro_batch_size_per_gpu */
	uint32_t grad_accum;   /* gradient_accumulation_steps */
	uint32_t world_size;
};

/* Sections in the tree of key tables, and keys per section, at most (the
 * unit tests check both). */
#define ZN_CONFIG_MAX_SECTIONS 32
#define ZN_CONFIG_MAX_KEYS 64

/* Everything a config file sets.  Top-level scalars as DeepSpeed names
 * them (0 = not given, or "auto"), then one member per section. */
struct zn_config {
	uint32_t train_batch_size;
	uint32_t train_micro_batch_size_per_gpu;
	uint32_t gradient_accumulation_steps;
	double gradient_clipping;  /* max global gradient norm; 0 = no clipping */
	uint64_t steps_per_print;
	struct zn_optimizer_config optimizer;
	struct zn_scheduler_config scheduler;
	struct zn_fp16_config fp16;
	struct zn_bf16_config bf16;
	struct zn_zero_config zero_optimization;
	struct zn_actckpt_config activation_checkpointing;
	struct zn_data_types_config data_types;
	struct zn_aio_config aio;
	struct zn_model_config model;
	struct zn_data_config data;
	struct zn_checkpoint_config checkpoint;
	struct zn_device_config device;
	/* Filled by the loader (world size 1) and zn_config_resolve_batch;
	 * all 0 when the file gives no batch size at all. */
	struct zn_batch batch;
	/* What the loader saw, per key: bit k of word s is key k of the s-th
	 * section of zn_config_section (given: the file or --set named it;
	 * autos: its value was "auto").  Asked through zn_config_key_given /
	 * zn_config_key_auto. */
	uint64_t given[ZN_CONFIG_MAX_SECTIONS];
	uint64_t autos[ZN_CONFIG_MAX_SECTIONS];
};

/* Fill `cfg` with every section's defaults (DeepSpeed's where it has one). */
ZN_API void zn_config_default(struct zn_config *cfg);

/* Read the YAML or JSON file at `path` into `out`: every section starts
 * from its defaults and takes the values the file gives.  Returns 0, or
 * -errno when the file cannot be read (the message names the path),
 * -EINVAL for a syntax error or a bad value, -ENOENT for an unknown key
 * inside a section zinc reads (the message names the nearest valid key),
 * -EFBIG for a file over 64 MiB, -ENOMEM.  On failure `out` is unchanged. */
ZN_API int zn_config_load_file(const char *path, struct zn_config *out);

/* The same with overrides, as `zinc train --set` gives them: each
 * "a.b.c=VALUE" (VALUE in YAML: a scalar, or a flow list or mapping)
 * replaces or adds key c of section a.b before the file is checked, and a
 * bad one is reported as "--set a.b.c=VALUE: ...". */
ZN_API int zn_config_load_file_set(const char *path, const char *const *sets, size_t nsets,
				   struct zn_config *out);

/* The same for `len` bytes of `text` (need not be NUL-terminated).
 * `name` stands for the file name in messages; NULL means "<string>". */
ZN_API int zn_config_load_string(const char *text, size_t len, const char *name,
				 struct zn_config *out);
/* ... with overrides, as zn_config_load_file_set takes them. */
ZN_API int zn_config_load_string_set(const char *text, size_t len, const char *name,
				     const char *const *sets, size_t nsets, struct zn_config *out);

/* DeepSpeed's batch rule: train_batch_size = micro × accumulation × world.
 * Any two of the three (not given or "auto" counts as absent) determine the
 * third; train alone means accumulation 1; micro alone means accumulation 1;
 * all three must agree.  Fills `out` and returns 0, or -EINVAL saying which
 * values disagree (or that only gradient_accumulation_steps was given).
 * Nothing given: `out` all 0 and 0 returned (no training configured). */
ZN_API int zn_config_resolve_batch(const struct zn_config *cfg, uint32_t world_size,
				   struct zn_batch *out);

/* One disk per rank: "{rank}" and "{local_rank}" in the nvme_path keys
 * become these numbers (/nvme{local_rank}/swap -> /nvme1/swap).  0, or
 * -ENAMETOOLONG naming the path. */
ZN_API int zn_config_expand_rank(struct zn_config *cfg, int rank, int local_rank);

/* The dtype the model's parameters, gradients and activations are stored
 * in on the device (the kernels context's storage dtype): the training
 * dtype (bf16, fp16 or fp32), on both backends. */
ZN_API enum zn_dtype zn_config_storage_dtype(const struct zn_config *cfg);

/* Resolve the "auto" sizes that follow from the model's hidden size, as
 * the Hugging Face integration does (trainer_config_finalize):
 * zero_optimization.reduce_bucket_size = hidden^2, and at stage 3
 * stage3_prefetch_bucket_size = 0.9 hidden^2 and
 * stage3_param_persistence_threshold = 10 hidden (below stage 3 these two
 * take DeepSpeed's defaults, as "auto" left there does).  The loader does
 * this for a model whose shape the file gives (gpt2); the trainer and the
 * plan once the model is known (a Hugging Face config.json's hidden size).
 * No-op when hidden is 0 or nothing is "auto". */
ZN_API void zn_config_resolve_hidden(struct zn_config *cfg, uint64_t hidden);

/* zn_config_resolve_hidden with model.n_embd. */
ZN_API void zn_config_resolve_auto(struct zn_config *cfg);

/* Whether the key at `path` ("scheduler.params.warmup_max_lr",
 * "train_batch_size") was given by the file or --set / was "auto" there.
 * False for a path that names no key. */
ZN_API bool zn_config_key_given(const struct zn_config *cfg, const char *path);
ZN_API bool zn_config_key_auto(const struct zn_config *cfg, const char *path);

/* One line (no newline) saying what each "auto" became and from what
 * ("auto: optimizer.params.lr=3e-05 (...), ..."), into buf; returns how
 * many keys were "auto" (0: buf is ""). */
ZN_API int zn_config_auto_report(const struct zn_config *cfg, char *buf, size_t len);

/* The i-th rule of "auto": the key's path, and in *from (if not NULL)
 * where its value comes from; NULL past the last.  A key that takes
 * "auto" and has no rule keeps its default. */
ZN_API const char *zn_config_auto_rule(size_t i, const char **from);

/* One line naming the defaults zinc uses that differ from DeepSpeed's and
 * matter to this config (keys the file left out); returns how many (0:
 * buf is ""). */
ZN_API int zn_config_defaults_report(const struct zn_config *cfg, char *buf, size_t len);

/* What the loader did with each key of a file, for `zinc config --check
 * --keys` and the tests of real DeepSpeed configs. */
enum zn_key_use {
	ZN_USE_READ,       /* honoured */
	ZN_USE_MAPPED,     /* `path` as the file spells it (an alias, a deprecated
			    * name, a misplaced section) is read as `note` */
	ZN_USE_AUTO,       /* "auto", resolved (zn_config_auto_report says to what) */
	ZN_USE_NOOP,       /* accepted, does nothing in zinc; `note` says why */
	ZN_USE_IGNORED,    /* a DeepSpeed section zinc does not use; `note` says why */
	ZN_USE_UNKNOWN,    /* an unknown top-level key, warned about */
};
typedef void (*zn_config_key_fn)(void *ctx, const char *path, enum zn_key_use use,
				 const char *note);

/* zn_config_load_file_set, calling `fn` once per key of the file (and of
 * --set) with what was done with it.  A refused key is not reported: the
 * load fails naming it. */
ZN_API int zn_config_load_file_explain(const char *path, const char *const *sets, size_t nsets,
				       struct zn_config *out, zn_config_key_fn fn, void *ctx);

/* The top-level table: its scalar keys and, as ZN_KEY_SECTION keys, every
 * section (nested ones inside their parents). */
ZN_API const struct zn_key_table *zn_config_root(void);

/* The i-th section zinc reads, depth-first from the top level (i = 0, the
 * root, named ""), or NULL past the last one: for listings, docs and
 * printing a whole config.  `path` (if not NULL) gets its dotted path
 * ("zero_optimization.offload_param"; "" for the root). */
ZN_API const struct zn_key_table *zn_config_section(size_t i, const char **path);

/* The struct inside `cfg` that `sec` describes (&cfg->aio for the aio
 * table, cfg itself for the root), or NULL when `sec` is not one of
 * zn_config_section()'s. */
ZN_API void *zn_config_section_data(struct zn_config *cfg, const struct zn_key_table *sec);

/* The i-th top-level key that DeepSpeed documents and zinc accepts without
 * using yet (0-based, sorted), or NULL past the last one; `why` (if not
 * NULL) gets the reason it does nothing in zinc. */
ZN_API const char *zn_config_ignored_key(size_t i);
ZN_API const char *zn_config_ignored_why(size_t i);

#ifdef __cplusplus
}
#endif
#endif
