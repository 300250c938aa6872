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

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "config/keys.h"
#include "zinc/configfile.h"

/* Top-level keys of DeepSpeed's config (docs/_pages/config-json.md and
 * runtime/constants.py) that zinc accepts without using, so that a
 * ds_config.json loads as it is, each with why it does nothing here and
 * DeepSpeed's default: a value other than that default is listed in the
 * load's one "do nothing in zinc" warning.  A NULL default marks a section,
 * which counts as set when it is a mapping with `enabled` true (or, without
 * `enabled`, any key).  Sorted (the tests check it); a key moves out of
 * here when it joins the top-level table (engine/config/keys.c). */
static const struct ignored {
	const char *name, *def, *why;
} ignored_keys[] = {
	{ "allgather_size", "5e8", "read only with the boolean zero_optimization, as its "
				   "allgather_bucket_size; zinc reads zero_optimization's" },
	{ "amp", NULL, "NVIDIA Apex AMP; zinc's mixed precision is the fp16 and bf16 sections" },
	{ "autotuning", NULL, "DeepSpeed's autotuner launches trial runs; zinc plan sizes a run "
			      "instead" },
	{ "comet", NULL, "a Comet ML monitor; zinc writes --json-log" },
	{ "comms_logger", NULL, "DeepSpeed's communication logger; zinc --trace records "
				"collectives" },
	{ "communication_data_type", NULL, "the dtype of DeepSpeed's gradient all-reduce; "
					   "zinc's reductions keep their own dtype" },
	{ "compile", NULL, "torch.compile of the model; zinc's kernels are compiled already" },
	{ "compression_training", NULL, "DeepSpeed Compression (quantization and pruning during "
					"training), not in zinc" },
	{ "csv_monitor", NULL, "a CSV monitor; zinc writes --json-log" },
	{ "curriculum_learning", NULL, "needs DeepSpeed's data sampler; zinc's loader visits "
				       "samples in a seeded order" },
	{ "data_efficiency", NULL, "needs DeepSpeed's data sampler and routing; zinc's loader "
				   "visits samples in a seeded order" },
	{ "dataloader_drop_last", "false", "DeepSpeed's PyTorch data loader; zinc's loader "
					   "always takes whole batches" },
	{ "disable_allgather", "false", "a stage 1/2 debugging switch of DeepSpeed's" },
	{ "dump_state", "false", "prints DeepSpeed's engine state at start-up" },
	{ "eigenvalue", NULL, "Hessian eigenvalues for progressive layer drop and quantization, "
			      "not in zinc" },
	{ "elasticity", NULL, "elastic training changes the batch with the GPU count; zinc "
			      "trains the batch the file gives" },
	{ "expert_parallel", NULL, "mixture-of-experts parallelism; zinc's models have no "
				   "experts" },
	{ "flops_profiler", NULL, "DeepSpeed's profiler of a PyTorch module; zinc prints its "
				  "throughput in the step lines" },
	{ "fp32_allreduce", "false", "the all-reduce dtype of DeepSpeed's fp16 optimizers; "
				     "zinc's reductions keep their own dtype" },
	{ "gradient_allreduce_op", "mean", "zinc averages gradients over ranks, DeepSpeed's "
					   "default" },
	{ "gradient_predivide_factor", "1.0", "splits the averaging of an all-reduce before and "
					      "after it, a guard of fp16's range; zinc's averaging "
					      "over ranks is fixed" },
	{ "graph_harvesting", "false", "CUDA graph capture of a PyTorch model" },
	{ "hybrid_engine", NULL, "DeepSpeed-Chat's switch between training and inference "
				 "kernels" },
	{ "managed_gradient_accumulation", "false", "accumulation steps taken by DeepSpeed's "
						    "engine; zinc always accumulates "
						    "gradient_accumulation_steps" },
	{ "memory_breakdown", "false", "DeepSpeed's memory report; zinc plan and the step lines "
				       "report memory" },
	{ "monitor_config", NULL, "DeepSpeed's monitors; zinc writes --json-log" },
	{ "nebula", NULL, "Azure Nebula checkpointing service" },
	{ "pipeline", NULL, "pipeline parallelism; zinc trains the whole model on each rank" },
	{ "prescale_gradients", "false", "divides gradients by the ranks before the all-reduce "
					 "rather than after; zinc's averaging over ranks is "
					 "fixed" },
	{ "progressive_layer_drop", NULL, "needs a model that reads DeepSpeed's layer-drop "
					  "schedule; zinc's models run every layer" },
	{ "quantize_training", NULL, "MoQ quantization during training, not in zinc" },
	{ "seq_parallel_communication_data_type", "fp32", "sequence parallelism (Ulysses); zinc "
							  "has none" },
	{ "sequence_parallel_size", "1", "sequence parallelism (Ulysses); zinc has none" },
	{ "sparse_attention", NULL, "DeepSpeed's sparse attention kernels; zinc's attention is "
				    "dense" },
	{ "sparse_gradients", "false", "sparse embedding gradients for PyTorch modules; zinc's "
				       "are dense" },
	{ "tensor_parallel", NULL, "tensor parallelism (AutoTP); zinc trains the whole model on "
				   "each rank" },
	{ "tensorboard", NULL, "a TensorBoard monitor; zinc writes --json-log" },
	{ "timers", NULL, "DeepSpeed's timers; zinc --trace records every step" },
	{ "torch_autocast", NULL, "PyTorch autocast; zinc's mixed precision is the fp16 and "
				  "bf16 sections" },
	{ "use_data_before_expert_parallelism", "false", "mixture-of-experts parallelism; "
							 "zinc's models have no experts" },
	{ "vocabulary_size", NULL, "read by DeepSpeed's data efficiency; zinc's model.vocab_size "
				   "is the model's" },
	{ "wall_clock_breakdown", "false", "DeepSpeed's timing of forward, backward and step; "
					   "zinc --trace records them" },
	{ "wandb", NULL, "a Weights & Biases monitor; zinc writes --json-log" },
	{ "weight_quantization", NULL, "post-training weight quantization, not in zinc" },
	{ "zero_allow_untested_optimizer", "false", "lets DeepSpeed run a client optimizer with "
						    "ZeRO; zinc runs its own optimizers" },
	{ "zero_force_ds_cpu_optimizer", "true", "makes DeepSpeed refuse a client optimizer with "
						 "offload; zinc always runs its own CPU optimizers" },
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
		/* A section refused whenever given keeps no keys: not listed. */
		if (k->type != ZN_KEY_SECTION || !k->sub->nkeys)
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
	return i < ZN_ARRAY_SIZE(ignored_keys) ? ignored_keys[i].name : NULL;
}

const char *zn_config_ignored_why(size_t i)
{
	return i < ZN_ARRAY_SIZE(ignored_keys) ? ignored_keys[i].why : NULL;
}

const char *zn_config_ignored_default(size_t i)
{
	return i < ZN_ARRAY_SIZE(ignored_keys) ? ignored_keys[i].def : NULL;
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

void zn_config_resolve_hidden(struct zn_config *cfg, uint64_t h)
{
	struct zn_zero_config *z = &cfg->zero_optimization;
	const bool z3 = z->stage == 3;

	if (!h)
		return;
	/* The Hugging Face integration's rules (deepspeed.py,
	 * trainer_config_finalize); it fills the stage-3 two only at stage 3,
	 * and DeepSpeed drops an "auto" left unfilled: its default. */
	if (z->reduce_bucket_size == UINT64_MAX)
		z->reduce_bucket_size = h * h;
	if (z->prefetch_bucket_size == UINT64_MAX)
		z->prefetch_bucket_size = z3 ? (uint64_t)(0.9 * (double)(h * h)) : 50000000;
	if (z->param_persistence_threshold == UINT64_MAX)
		z->param_persistence_threshold = z3 ? 10 * h : 100000;
}

void zn_config_resolve_auto(struct zn_config *cfg)
{
	zn_config_resolve_hidden(cfg, cfg->model.n_embd);
}

/* ---- what the loader saw: given and "auto" keys ------------------------- */

int zn_config_section_index(const struct zn_key_table *sec)
{
	for (size_t i = 0; i < ZN_CONFIG_MAX_SECTIONS; i++) {
		const struct zn_key_table *t = zn_config_section(i, NULL);
		if (!t)
			break;
		if (t == sec)
			return (int)i;
	}
	return -1;
}

/* Section and key index of the key at `path`, or false. */
static bool key_at(const char *path, size_t *si, size_t *ki)
{
	const char *dot = strrchr(path, '.');
	const size_t plen = dot ? (size_t)(dot - path) : 0;
	const char *name = dot ? dot + 1 : path, *spath;

	for (size_t i = 0; i < ZN_CONFIG_MAX_SECTIONS; i++) {
		const struct zn_key_table *t = zn_config_section(i, &spath);
		if (!t)
			break;
		if (strlen(spath) != plen || strncmp(spath, path, plen) != 0)
			continue;
		const struct zn_key *k = zn_keys_find(t, name);
		if (!k)
			return false;
		*si = i;
		*ki = (size_t)(k - t->keys);
		return true;
	}
	return false;
}

bool zn_config_key_given(const struct zn_config *cfg, const char *path)
{
	size_t s, k;
	return key_at(path, &s, &k) && (cfg->given[s] >> k & 1);
}

bool zn_config_key_auto(const struct zn_config *cfg, const char *path)
{
	size_t s, k;
	return key_at(path, &s, &k) && (cfg->autos[s] >> k & 1);
}

/* Where each "auto" takes its value from: the Hugging Face Trainer's rule
 * (integrations/deepspeed.py, trainer_config_process and _finalize) with
 * zinc's run standing in for TrainingArguments.  A key not listed keeps
 * DeepSpeed's default, as DeepSpeed itself does with an "auto" left over. */
static const struct auto_rule {
	const char *path, *from;
} auto_rules[] = {
	{ "train_batch_size", "micro-batch x accumulation x ranks" },
	{ "train_micro_batch_size_per_gpu", "train_batch_size / accumulation / ranks" },
	{ "gradient_accumulation_steps", "train_batch_size / micro-batch / ranks" },
	{ "gradient_clipping", "the Trainer's max_grad_norm default" },
	{ "optimizer.params.lr", "the Trainer's learning_rate default" },
	{ "optimizer.params.betas", "the Trainer's adam_beta1, adam_beta2 defaults" },
	{ "optimizer.params.eps", "the Trainer's adam_epsilon default" },
	{ "optimizer.params.weight_decay", "the Trainer's weight_decay default" },
	{ "scheduler.params.warmup_min_lr", "0, as the Trainer fills it" },
	{ "scheduler.params.warmup_max_lr", "optimizer.params.lr" },
	{ "scheduler.params.warmup_num_steps", "the Trainer's warmup_steps default" },
	{ "scheduler.params.total_num_steps", "the run's step count" },
	{ "fp16.enabled", "off: zinc has no --fp16; set it to true for fp16" },
	{ "bf16.enabled", "off: zinc has no --bf16; set it to true for bf16" },
	{ "zero_optimization.reduce_bucket_size", "hidden size^2" },
	{ "zero_optimization.stage3_prefetch_bucket_size", "0.9 hidden size^2 at stage 3" },
	{ "zero_optimization.stage3_param_persistence_threshold", "10 hidden size at stage 3" },
	{ "zero_optimization.offload_param.buffer_count", "sized by zinc from the prefetch" },
	{ "zero_optimization.offload_param.buffer_size", "the largest parameter tensor" },
};

const char *zn_config_auto_rule(size_t i, const char **from)
{
	if (i >= ZN_ARRAY_SIZE(auto_rules))
		return NULL;
	if (from)
		*from = auto_rules[i].from;
	return auto_rules[i].path;
}

/* The learning rate the Trainer uses when none is given
 * (TrainingArguments.learning_rate). */
#define TRAINER_LR 5e-5

void zn_config_resolve_links(struct zn_config *cfg)
{
	if (zn_config_key_auto(cfg, "optimizer.params.lr"))
		cfg->optimizer.params.lr = TRAINER_LR;
	/* Linked, as the Trainer fills both from one learning_rate: a
	 * --set optimizer.params.lr moves the schedule's peak with it. */
	if (zn_config_key_auto(cfg, "scheduler.params.warmup_max_lr"))
		cfg->scheduler.params.warmup_max_lr = cfg->optimizer.params.lr;
	if (zn_config_key_auto(cfg, "gradient_clipping"))
		cfg->gradient_clipping = 1.0;
}

int zn_config_auto_report(const struct zn_config *cfg, char *buf, size_t len)
{
	struct zn_config *c = (struct zn_config *)cfg; /* zn_config_section_data takes it */
	const char *spath;
	size_t used = 0;
	int n = 0;

	if (len)
		buf[0] = '\0';
	for (size_t i = 0; zn_config_section(i, &spath); i++) {
		const struct zn_key_table *t = zn_config_section(i, &spath);
		char sp[256];
		snprintf(sp, sizeof(sp), "%s", spath);
		for (size_t k = 0; k < t->nkeys && k < 64; k++) {
			if (!(cfg->autos[i] >> k & 1))
				continue;
			char path[320], val[128];
			const char *from = "DeepSpeed's default (it drops \"auto\" here)";
			snprintf(path, sizeof(path), "%s%s%s", sp, sp[0] ? "." : "", t->keys[k].name);
			for (size_t r = 0; r < ZN_ARRAY_SIZE(auto_rules); r++)
				if (strcmp(auto_rules[r].path, path) == 0)
					from = auto_rules[r].from;
			zn_keys_format(&t->keys[k], zn_config_section_data(c, t), val, sizeof(val));
			/* The batch sizes as the rule resolved them; a count
			 * whose "auto" stores 0 shows the number. */
			if (strcmp(path, "train_batch_size") == 0)
				snprintf(val, sizeof(val), "%u", cfg->batch.train_batch_size);
			else if (strcmp(path, "train_micro_batch_size_per_gpu") == 0)
				snprintf(val, sizeof(val), "%u", cfg->batch.micro_batch);
			else if (strcmp(path, "gradient_accumulation_steps") == 0)
				snprintf(val, sizeof(val), "%u", cfg->batch.grad_accum);
			else if (strcmp(path, "scheduler.params.warmup_num_steps") == 0)
				snprintf(val, sizeof(val), "%" PRIu64,
					 cfg->scheduler.params.warmup_num_steps);
			if (used < len)
				used += (size_t)snprintf(buf + used, len - used, "%s%s=%s (%s)",
							 n ? ", " : "\"auto\": ", path, val, from);
			n++;
		}
	}
	return n;
}

int zn_config_defaults_report(const struct zn_config *cfg, char *buf, size_t len)
{
	const struct zn_zero_config *z = &cfg->zero_optimization;
	size_t used = 0;
	int n = 0;

#define DIFF(cond, path, text)                                                              \
	do {                                                                                \
		if ((cond) && !zn_config_key_given(cfg, path) && used < len) {              \
			used += (size_t)snprintf(buf + used, len - used, "%s%s %s",          \
						 n ? "; " : "defaults unlike DeepSpeed's: ", \
						 path, text);                                \
			n++;                                                        \
		}                                                                   \
	} while (0)
	if (len)
		buf[0] = '\0';
	DIFF(z->stage == 3 && !z->overlap_comm, "zero_optimization.overlap_comm",
	     "false (DeepSpeed: true at stage 3)");
	DIFF(cfg->gradient_clipping == 0, "gradient_clipping",
	     "0, no clipping (DeepSpeed 0.19: 1.0)");
	DIFF(cfg->bf16.enabled && !cfg->bf16.check_grad_overflow, "bf16.check_grad_overflow",
	     "false: a step with inf/nan gradients stops the run rather than being skipped "
	     "(DeepSpeed: true)");
	DIFF(cfg->optimizer.params.weight_decay > 0 &&
		     cfg->optimizer.params.weight_decay_params == ZN_DECAY_MATRICES,
	     "optimizer.params.weight_decay_params",
	     "matrices: weight decay skips biases and norms (DeepSpeed decays every "
	     "parameter the script passes; set all for that)");
#undef DIFF
	return n;
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
