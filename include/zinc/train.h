/* zinc -- the trainer: a model (GPT-2 or a Llama) trained with ZeRO's
 * placements, on one rank or the ranks of a comm (data parallelism).
 *
 * Where the model states live follows the config: parameters and
 * gradients on the device (the cpu backend, or a GPU), or with
 * zero_optimization.offload_param in homes on host memory or NVMe that
 * visit the device layer by layer; the fp32 master weights and AdamW's
 * moments on the device (offload_optimizer: none), in host memory (cpu) or
 * on NVMe in sub-groups (nvme), updated by the CPU Adam in the last two.
 * On several ranks, stage 1 partitions the optimizer states, stage 2 the
 * gradients too, stage 3 the parameters too.  A step:
 *
 *   grads = 0; for each of gradient_accumulation_steps micro-batches:
 *       forward + backward (gradients add up on the device, or leave for
 *       their host accumulators, reduced over the ranks, layer by layer)
 *   global norm; clip coefficient; (non-finite: refuse, or in fp16 skip
 *   the step and lower the loss scale)
 *   AdamW (lr from the schedule); the new parameters back where the next
 *   forward reads them
 *
 * Precision: fp32, bf16 or fp16 (data_types); 16-bit training rounds
 * parameters and gradients to the 16-bit type, so values, overflow and
 * the need for a loss scale are the 16-bit type's; fp16 uses DeepSpeed's
 * dynamic loss scaler.  The placements change where the states live and
 * when they move, not the results: they give the same bits.
 *
 * Checkpoints (checkpoint.dir) hold the model's files (GPT-2: a Hugging
 * Face model.safetensors; a Llama: a Hugging Face folder), the optimizer's
 * (master, exp_avg, exp_avg_sq: optimizer.safetensors, or one file per
 * rank of its parts) and the step, data position and loss scaler in their
 * metadata: resuming, on any number of ranks, continues bit for bit.
 */
#ifndef ZINC_TRAIN_H
#define ZINC_TRAIN_H

#include <stdbool.h>
#include <stdint.h>

#include "zinc/common.h"
#include "zinc/configfile.h"

#ifdef __cplusplus
extern "C" {
#endif

struct zn_trainer;

struct zn_step_info {
	uint64_t step;        /* optimizer steps done, this one included */
	double loss;          /* mean over the step's micro-batches */
	double lr;
	double beta1, beta2;  /* the optimizer's betas this step (OneCycle cycles them) */
	double grad_norm;     /* before clipping */
	uint64_t tokens;      /* tokens processed by this step */
	double step_s;
	uint64_t device_bytes, device_peak; /* device memory in use / peak */
	uint64_t host_bytes;  /* model states in host memory: optimizer states,
			       * gradient accumulators, parameter homes */
	double loss_scale;    /* fp16: the dynamic loss scale used by this step; else 1 */
	bool skipped;         /* fp16: the gradients overflowed; no update, scale lowered */
	/* Where the time went and what moved (this step only). */
	double compute_s;     /* forward and backward, parameter fetches included */
	double optimizer_s;   /* the optimizer step and the parameters' way back */
	double stall_s;       /* waits for NVMe: parameter fetches, optimizer reads/writes */
	uint64_t nvme_read_bytes, nvme_write_bytes;
	uint64_t param_read_bytes; /* of nvme_read_bytes, the parameters' homes
				    * (fetches, and a tied embedding's folded
				    * gradient parts kept beside them); the
				    * optimizer's are the rest */
	uint64_t h2d_bytes, d2h_bytes; /* host -> device, device -> host */
	/* activation_checkpointing.profile (0 without it): the blocks' forwards
	 * run again, and the kept inputs' trips to host memory and back. */
	double recompute_s, act_offload_s;
	/* Several ranks: bytes this rank sent in collectives, and the time the
	 * training thread waited for collectives (what was not hidden). */
	uint64_t comm_bytes;
	uint64_t comm_elems;  /* the same in elements, as ZeRO's volumes count them */
	double comm_s;
};

/* What one rank holds of the model states, in bytes over every tier
 * (device, host memory, NVMe): the quantities ZeRO partitions.  Transient
 * buffers (a layer's parameters or gradients while it runs, staging) are
 * not counted. */
struct zn_rank_memory {
	int rank, world;
	unsigned stage;
	uint64_t params;      /* device copies of resident tensors; stage 3: this
			       * rank's parts of the others (their homes) */
	uint64_t grads;       /* gradients kept over a step: device buffers of
			       * tensors accumulating there, host accumulators */
	uint64_t optimizer;   /* fp32 master, exp_avg, exp_avg_sq */
};

/* 0, or -EINVAL naming the key: what zn_trainer_create refuses of a config
 * before it looks at its model and data (placements the trainer does not
 * run, an optimizer where it cannot run).  `zinc config --check` asks it. */
ZN_API int zn_trainer_check_config(const struct zn_config *cfg);

/* Build everything a config asks for: device, kernels, model, parameters
 * (initialised, or from checkpoint.resume / model.from), optimizer state
 * and data.  `max_steps` sizes the LR schedule when total_num_steps is
 * auto.  NULL + last error; the errors of bad input (data, shapes,
 * unsupported settings) are -EINVAL/-ENOENT-style and name the key or file. */
ZN_API struct zn_trainer *zn_trainer_create(const struct zn_config *cfg, uint64_t max_steps);

/* The same with random tokens instead of data files (no data section
 * needed): for benchmarks (zinc train --bench). */
ZN_API struct zn_trainer *zn_trainer_create_synthetic(const struct zn_config *cfg,
						      uint64_t max_steps);
ZN_API void zn_trainer_destroy(struct zn_trainer *t);

struct zn_comm;
/* The same on the ranks of `comm` (include/zinc/comm.h; borrowed, not
 * destroyed): data parallelism with zero_optimization.stage's
 * partitioning.  Every rank must call it with the same config (checked:
 * -EINVAL naming the rank that differs) and cfg->batch resolved for the
 * comm's size (zn_config_resolve_batch).  zn_trainer_create uses a comm of
 * its own: "mpi" under mpirun, else one rank. */
ZN_API struct zn_trainer *zn_trainer_create_comm(const struct zn_config *cfg,
						 uint64_t max_steps, struct zn_comm *comm);
/* This rank and the number of ranks. */
ZN_API int zn_trainer_rank(const struct zn_trainer *t);
ZN_API int zn_trainer_world(const struct zn_trainer *t);
/* Whether `flag` is true on any rank (a collective: every rank calls it),
 * e.g. so that every rank stops after the same step when one was
 * interrupted.  0 or -errno. */
ZN_API int zn_trainer_any(struct zn_trainer *t, bool flag, bool *any);
/* This rank's share of the model states (see struct zn_rank_memory). */
ZN_API void zn_trainer_memory(const struct zn_trainer *t, struct zn_rank_memory *out);

/* zn_rank_memory_plan (zinc/plan.h) gives the same figures from the
 * config alone, before training. */

struct zn_trace;
/* Record spans of every step (forward, backward, gradient copies, Adam,
 * parameter copies) into `trace` (NULL: stop). */
ZN_API void zn_trainer_set_trace(struct zn_trainer *t, struct zn_trace *trace);

/* Run one optimizer step. */
ZN_API int zn_trainer_step(struct zn_trainer *t, struct zn_step_info *out);
/* Mean validation loss over data.val_steps batches (or the whole split
 * when 0); -ENOENT when no validation data is configured. */
ZN_API int zn_trainer_eval(struct zn_trainer *t, double *loss);
/* Steps done so far (after a resume: the checkpoint's). */
ZN_API uint64_t zn_trainer_steps_done(const struct zn_trainer *t);
/* Save a checkpoint under checkpoint.dir (atomically); 0 or -errno. */
ZN_API int zn_trainer_save(struct zn_trainer *t);
/* Join a checkpoint's parameters (the fp32 master weights) into the files
 * a model leaves as, whatever number of ranks saved it: for GPT-2 one
 * Hugging Face model.safetensors at `out` (as a one-rank save writes it),
 * for a Llama a Hugging Face folder (config.json, shards, index) in the
 * directory `out`.  out NULL: into the step's own directory.  `path` is a
 * checkpoint directory (its latest step) or one step's directory.
 * Streams one tensor at a time; files appear whole or not at all.
 * The checkpoint is checked against its manifest first
 * (include/zinc/checkpoint.h): a step directory that does not verify is
 * refused; under a checkpoint directory the newest complete one that
 * verifies is taken (a warning names a damaged newer one).  Written into
 * the step's directory (out NULL), the checkpoint directory's lock is held
 * meanwhile (-EBUSY naming the pid of a run using it) and the step's
 * manifest is brought up to date.  0 or -errno naming the file or
 * tensor. */
ZN_API int zn_checkpoint_consolidate(const char *path, const char *out);
/* The same, with the path written (the file, or the folder) in `wrote`
 * (len bytes; NULL: not wanted). */
ZN_API int zn_checkpoint_consolidate_into(const char *path, const char *out, char *wrote,
					  size_t len);
/* The model in words, for humans: "GPT-2 12 layers, 12 heads, 768
 * channels, vocab 50257" or the config.json's architecture and shape. */
ZN_API void zn_trainer_model_summary(const struct zn_trainer *t, char *out, size_t len);
/* The device and the precision in words: "cuda:0 (NVIDIA H100 80GB HBM3),
 * bf16 computed in bf16, fp32 master weights", "cpu, fp32", or for 16-bit
 * training on the cpu backend "cpu, bf16 values computed in fp32, ...". */
ZN_API void zn_trainer_device_summary(const struct zn_trainer *t, char *out, size_t len);
/* The number of the model's parameters. */
ZN_API uint64_t zn_trainer_num_params(const struct zn_trainer *t);

/* The config the trainer runs: the one it was given, with what only the
 * model could settle filled in (the hidden-size "auto"s, {rank} paths).
 * Valid while the trainer lives. */
ZN_API const struct zn_config *zn_trainer_config(const struct zn_trainer *t);

#ifdef __cplusplus
}
#endif
#endif
