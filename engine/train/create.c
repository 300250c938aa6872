/* Building the trainer, in stages (create() at the end of the build reads
 * them in order): the ranks, the config settled, the device and kernels,
 * the tensors and ZeRO's share of each, the ranks' buffers, scratch, data,
 * the model and optimizer, the starting weights; taking it down; and the
 * small accessors of include/zinc/train.h. */
#include "zn_common.h"
#include "zn_build.h"

#include "train/internal.h"

#include "io/files.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "zinc/checkpoint.h"
#include "zinc/trace.h"

/* What the trainer refuses of a config whatever its data and model (zinc
 * config --check asks it too, so a file it passes trains): engine/zero's
 * rules, which zinc plan asks as well. */
int zn_trainer_check_config(const struct zn_config *c)
{
	return zn_zero_check_config(c);
}

static int check_supported(const struct zn_config *c, bool synthetic)
{
	int rc = zn_trainer_check_config(c);
	if (rc)
		return rc;
	if (!c->data.train[0] && !synthetic)
		return zn_error(-EINVAL, "data.train: give the token shards to train on (make them "
					 "with `zinc prepare-data`)");
	return 0;
}

static void free_states(struct zn_trainer *t)
{
	for (unsigned i = 0; t->t && i < t->tab.nt; i++) {
		struct tstate *s = &t->t[i];
		if (s->dparam)
			zn_device_free(t->dev, s->dparam);
		if (s->dgrad)
			zn_device_free(t->dev, s->dgrad);
		zn_device_free(t->dev, s->sparam);
		zn_device_free(t->dev, s->sgrad);
		if (s->dmaster)
			zn_device_free(t->dev, s->dmaster);
		if (s->dm)
			zn_device_free(t->dev, s->dm);
		if (s->dv)
			zn_device_free(t->dev, s->dv);
		if (s->dhome)
			zn_device_free(t->dev, s->dhome);
		free(s->master);
		free(s->m);
		free(s->v);
		free(s->staged);
		free(s->grad);
		free(s->home);
		free(s->fold);
		free(s->folded);
		free(s->gsq);
		free(s->gfin);
	}
}

void zn_trainer_destroy(struct zn_trainer *t)
{
	if (!t)
		return;
	if (t->opt.running) {
		pthread_join(t->opt.thread, NULL);
		t->opt.running = false;
	}
	pthread_mutex_destroy(&t->opt.lock);
	pthread_cond_destroy(&t->opt.cond);
	if (t->flights.copy) {
		tr_flights_reap(t, true);
		zn_device_stream_destroy(t->flights.copy);
	}
	zn_device_event_destroy(t->flights.ev_compute);
	for (unsigned i = 0; i < GRAD_FLIGHTS; i++)
		zn_device_event_destroy(t->flights.f[i].ev);
	tr_sources_close(&t->src);
	zn_arch_model_destroy(&t->model);
	zn_optswap_destroy(t->nvme.os);
	zn_store_destroy(t->nvme.store);
	zn_aio_destroy(t->nvme.aio);
	zn_swapper_destroy(t->homes.sw);
	zn_bufpool_destroy(t->homes.pool);
	zn_store_destroy(t->homes.store);
	zn_aio_destroy(t->homes.aio);
	for (unsigned i = 0; i < t->nlocks; i++)
		zn_run_unlock(t->locks[i]);
	free(t->layer);
	free(t->fetch.order);
	free(t->gstage);
	free(t->gsums);
	if (t->round_buf)
		zn_device_free(t->dev, t->round_buf);
	if (t->dopt.sumsq)
		zn_device_free(t->dev, t->dopt.sumsq);
	if (t->dopt.flag)
		zn_device_free(t->dev, t->dopt.flag);
	if (t->dopt.gscratch)
		zn_device_free(t->dev, t->dopt.gscratch);
	tr_collectives_close(t);
	tr_gathers_close(t);
	free_states(t);
	free(t->t);
	zn_tensor_table_free(&t->tab);
	if (t->data.din)
		zn_device_free(t->dev, t->data.din);
	if (t->data.dtgt)
		zn_device_free(t->dev, t->data.dtgt);
	free(t->data.hin);
	free(t->data.htgt);
	free(t->data.hloss);
	zn_data_close(t->data.train);
	zn_data_close(t->data.val);
	if (t->kctx)
		t->k->ctx_destroy(t->kctx);
	zn_threadpool_destroy(t->pool);
	if (t->stream)
		zn_device_stream_destroy(t->stream);
	zn_device_destroy(t->dev);
	zn_comm_destroy(t->coll.dcomm);
	if (t->own_comm)
		zn_comm_destroy(t->comm);
	free(t);
}

/* The trainer on its ranks: everything below is sized by this rank's
 * part.  With several ranks the batch follows DeepSpeed's rule,
 * train_batch_size = micro x accumulation x ranks.  NULL + last error. */
static struct zn_trainer *open_ranks(const struct zn_config *cfg, struct zn_comm *comm)
{
	struct zn_trainer *t = calloc(1, sizeof(*t));
	if (!t) {
		zn_set_error("out of memory");
		return NULL;
	}
	t->cfg = *cfg;
	t->comm = comm;
	if (!comm) {
		t->comm = zn_comm_create(NULL);
		t->own_comm = true;
		if (!t->comm) {
			free(t);
			return NULL;
		}
	}
	t->rank = zn_comm_rank(t->comm);
	t->world = zn_comm_size(t->comm);
	if (t->world > 1 && zn_config_resolve_batch(cfg, (uint32_t)t->world, &t->cfg.batch)) {
		if (t->own_comm)
			zn_comm_destroy(t->comm);
		free(t);
		return NULL;
	}
	pthread_mutex_init(&t->opt.lock, NULL);
	pthread_cond_init(&t->opt.cond, NULL);
	return t;
}

/* What the config asks for, checked (the same on every rank) and made
 * this rank's; the model's shape resolved. */
static int settle_config(struct zn_trainer *t, bool synthetic)
{
	const struct zn_config *cfg = &t->cfg;
	int rc;
	t->data.synthetic = synthetic;
	zn_zero_rules_init(&t->zr, cfg, t->rank, t->world);
	t->fetch.direction = 1;
	t->data.rng = cfg->data.seed | 1;
	if ((rc = check_supported(cfg, synthetic)) ||
	    (t->world > 1 && (rc = tr_check_same_config(t))))
		return rc;
	/* One disk per rank: "{rank}" and "{local_rank}" in an nvme_path
	 * become this rank's numbers (/nvme{local_rank}/swap). */
	if ((rc = zn_config_expand_rank(&t->cfg, t->rank, zn_comm_local_rank(t->comm))))
		return rc;
	t->B = (int)cfg->batch.micro_batch;
	t->accum = cfg->batch.grad_accum;
	t->T = (int)cfg->model.seq_len;
	if (t->B < 1 || t->accum < 1)
		return zn_error(-EINVAL, "train_batch_size / train_micro_batch_size_per_gpu: give "
					 "the batch size (DeepSpeed's keys)");
	if ((rc = zn_arch_from_config(cfg, &t->arch)))
		return rc;
	/* The "auto" sizes that follow the hidden size, now that the model
	 * (a Hugging Face config.json's) is known; the rules read them. */
	zn_config_resolve_hidden(&t->cfg, (uint64_t)zn_arch_dims(&t->arch).n_embd);
	zn_zero_rules_init(&t->zr, &t->cfg, t->rank, t->world);
	return 0;
}

/* The device, its compute stream and kernels (in the model's storage
 * dtype), the CPU Adam's threads, and NCCL for GPUs on several ranks. */
static int open_device(struct zn_trainer *t)
{
	const struct zn_config *cfg = &t->cfg;
	struct zn_device_params dp;
	zn_device_params_default(&dp);
	dp.kind = cfg->device.type == ZN_DEVICE_CUDA ? "cuda" : "cpu";
	/* Several ranks on one node: rank r drives the GPU of its local rank,
	 * as DeepSpeed's launcher arranges. */
	dp.ordinal = t->world > 1 ? zn_comm_local_rank(t->comm) : (int)cfg->device.index;
	dp.memory_limit = cfg->device.memory_limit;
	if (!(t->dev = zn_device_create(&dp)))
		return -EINVAL;
	t->stream = zn_device_stream_create(t->dev, "compute");
	t->k = zn_kernels_get(zn_device_kind(t->dev));
	if (!t->stream || !t->k)
		return -EINVAL;
	struct zn_kernels_params kp;
	zn_kernels_params_default(&kp);
	zn_device_kernels_params(t->dev, t->stream, &kp);
	t->sdt = kp.dtype = zn_config_storage_dtype(cfg);
	if (!(t->kctx = t->k->ctx_create(&kp)) || !(t->pool = zn_threadpool_create(0, -1)))
		return -EINVAL;
	zn_threadpool_name(t->pool, "zn-host");
	if (t->world > 1 && cfg->device.type == ZN_DEVICE_CUDA) {
#if ZN_HAVE_NCCL
		if (!(t->coll.dcomm = zn_comm_create_nccl(t->comm, dp.ordinal)))
			return -EINVAL;
#else
		zn_warn("this zinc was built without NCCL: the GPUs' collectives go through "
			"host memory");
#endif
	}
	return 0;
}

/* One tensor's share (ZeRO's rules) and the buffers it keeps for good:
 * device copies, host optimizer states and gradient accumulators,
 * device optimizer states. */
static int place_tensor(struct zn_trainer *t, struct tstate *s)
{
	const struct zn_zero_rules *zr = &t->zr;
	const struct zn_zero_share sh = zn_zero_share_of(zr, s->d);
	struct zn_zero_arrays za;
	zn_zero_arrays_of(zr, s->d, &sh, &za);
	s->part = sh.part;
	s->lo = sh.lo;
	s->nown = sh.nown;
	s->oflat = t->own_total;
	t->own_total += s->nown;
	s->owner = t;
	s->resident = sh.resident;
	/* Stage 3 on several ranks without offload_param: this rank's part
	 * stays on the device (fp32), gathered at each fetch. */
	if (za.dpart && zn_device_alloc(t->dev, za.dpart, (void **)&s->dhome))
		return -ENOMEM;
	s->dev_grads = sh.dev_grads;
	s->gnvme = za.nvme_grad;
	t->layered |= !s->dev_grads;
	/* Tiles: the model's for every placement; fetched by tiles when
	 * offloaded. */
	s->tile_rows = sh.tile_rows;
	s->ntiles = (unsigned)zn_zero_tiles(zr, s->d);
	s->tiled = sh.tiled;
	s->by_tiles = s->tile_rows && s->d->tileable;
	s->tile_on = -1;
	if (!s->tiled)
		s->ntiles = 1;
	/* This rank's piece of a full tile (the step between its tiles in
	 * its part: every tile before the last is full), and the largest
	 * piece, the last one's on some ranks. */
	s->tile_step = s->nown;
	s->tile_elems = s->nown;
	if (s->tiled) {
		struct zn_zero_piece p0, pl;
		tr_piece(t, s, 0, &p0);
		tr_piece(t, s, s->ntiles - 1, &pl);
		s->tile_step = p0.len;
		s->tile_elems = ZN_MAX(p0.len, pl.len);
	}
	if (zn_zero_has_folds(s->d, &sh) && !(s->folded = calloc(s->ntiles, sizeof(bool))))
		return zn_error(-ENOMEM, "out of memory");
	s->gsq = calloc(s->ntiles, sizeof(*s->gsq));
	s->gfin = calloc(s->ntiles, sizeof(*s->gfin));
	if (!s->gsq || !s->gfin)
		return zn_error(-ENOMEM, "out of memory");
	t->unit = ZN_MAX(t->unit, zn_zero_unit(s->d, &sh));
	/* Host optimizer state unless it lives on NVMe; gradient accumulators
	 * unless the optimizer runs on the device. */
	if (za.hstate) {
		s->master = malloc(za.hstate);
		s->m = calloc(1, za.hstate);
		s->v = calloc(1, za.hstate);
		t->host_bytes += ZN_ZERO_STATES * s->nown * 4;
	}
	if (za.hgrad) {
		s->grad = malloc(za.hgrad);
		t->host_bytes += s->nown * zn_dtype_size(t->zr.gdt);
	}
	if ((za.hstate && (!s->master || !s->m || !s->v)) || (za.hgrad && !s->grad))
		return zn_error(-ENOMEM, "out of host memory for the optimizer state and gradients "
					 "of %" PRIu64 " parameters; set zero_optimization."
					 "offload_optimizer.device: nvme, or "
					 "data_types.grad_accum_dtype: bf16",
				t->tab.total);
	if (za.staged && !(s->staged = malloc(za.staged)))
		return zn_error(-ENOMEM, "out of memory");
	if ((za.dparam && zn_device_alloc(t->dev, za.dparam, &s->dparam)) ||
	    (za.dgrad && zn_device_alloc(t->dev, za.dgrad, &s->dgrad)))
		return -ENOMEM;
	if (za.dstate && (zn_device_alloc(t->dev, za.dstate, (void **)&s->dmaster) ||
			  zn_device_alloc(t->dev, za.dstate, (void **)&s->dm) ||
			  zn_device_alloc(t->dev, za.dstate, (void **)&s->dv)))
		return -ENOMEM;
	zn_zero_count(zr, s->d->numel, &sh, &t->mem); /* zn_trainer_memory */
	return 0;
}

/* The tensors and ZeRO's partition (stage >= 1 over several ranks): every
 * tensor in `world` parts, this rank's part of each in its own flat order;
 * stage 0 (plain data parallelism) keeps whole tensors on every rank.  The
 * precision and placement follow engine/zero's rules. */
static int place_tensors(struct zn_trainer *t)
{
	int rc = zn_tensor_table_build(&t->tab, &t->arch);
	if (rc)
		return rc;
	t->zr.largest = t->tab.largest; /* sub_group_size 0's unit */
	t->t = calloc(ZN_MAX(t->tab.nt, 1), sizeof(*t->t));
	t->layer = calloc(ZN_MAX(t->tab.nlayers, 1), sizeof(*t->layer));
	if (!t->t || !t->layer)
		return zn_error(-ENOMEM, "out of memory");
	for (unsigned i = 0; i < t->tab.nt && !rc; i++) {
		t->t[i].d = &t->tab.d[i];
		rc = place_tensor(t, &t->t[i]);
	}
	t->mem.rank = t->rank;
	t->mem.world = t->world;
	t->mem.stage = t->zr.stage;
	return rc;
}

/* Scratch the step needs: the device optimizer's (its reduced gradients
 * on several ranks, the norm's scalars), a device scratch of 16-bit
 * values as large as the largest tensor for anything 16-bit (rounding,
 * 16-bit homes and accumulators), and the host staging through which
 * later micro-batches' gradients are added. */
static int open_scratch(struct zn_trainer *t)
{
	/* What moves at once: a tile of a tiled tensor, else a tensor. */
	const size_t largest = t->unit;
	if (t->zr.device_opt && t->world > 1 &&
	    zn_device_alloc(t->dev, largest * 4, (void **)&t->dopt.gscratch))
		return -ENOMEM;
	if (t->zr.device_opt && (zn_device_alloc(t->dev, sizeof(double), (void **)&t->dopt.sumsq) ||
			      zn_device_alloc(t->dev, sizeof(int32_t), (void **)&t->dopt.flag)))
		return -ENOMEM;
	int rc = zn_loss_scaler_init(&t->scaler, &t->cfg.fp16);
	if (rc)
		return rc;
	if ((t->zr.dtype != ZN_DTYPE_F32 || t->zr.gdt != ZN_DTYPE_F32) &&
	    zn_device_alloc(t->dev, largest * 2, &t->round_buf))
		return -ENOMEM;
	/* Gradients cross through it to be added or converted (engine/zero). */
	if (zn_zero_grad_staging(&t->zr, t->accum) && !(t->gstage = malloc(largest * 4)))
		return zn_error(-ENOMEM, "out of memory");
	/* NVMe gradients: a tensor's (a tile's) sums on their way. */
	uint64_t gl = 0;
	for (unsigned i = 0; i < t->tab.nt; i++)
		if (t->t[i].gnvme)
			gl = ZN_MAX(gl, t->t[i].tile_elems);
	if (gl && !(t->gsums = malloc(gl * zn_dtype_size(t->zr.gdt))))
		return zn_error(-ENOMEM, "out of memory");
	return 0;
}

/* The data: this rank's windows of the train split (and the validation
 * split's), and the batch's host and device buffers, (B, T) int32. */
static int open_data(struct zn_trainer *t)
{
	const struct zn_config *cfg = &t->cfg;
	struct zn_data_options dopt = {
		.pattern = cfg->data.train, .B = (uint32_t)t->B, .T = (uint32_t)t->T,
		.seed = cfg->data.seed, .shuffle = cfg->data.shuffle,
		.vocab_size = (uint32_t)zn_arch_vocab(&t->arch),
		.rank = (uint32_t)t->rank, .world = (uint32_t)t->world,
	};
	if (!t->data.synthetic) {
		if (!(t->data.train = zn_data_open(&dopt)))
			return -EINVAL;
		dopt.pattern = cfg->data.val;
		dopt.shuffle = false;
		if (cfg->data.val[0] && !(t->data.val = zn_data_open(&dopt)))
			return -EINVAL;
	}
	const size_t BT = (size_t)t->B * (size_t)t->T;
	t->data.hin = malloc(BT * 4);
	t->data.htgt = malloc(BT * 4);
	t->data.hloss = malloc(BT * 4);
	if (!t->data.hin || !t->data.htgt || !t->data.hloss)
		return zn_error(-ENOMEM, "out of memory");
	if (zn_device_alloc(t->dev, BT * 4, (void **)&t->data.din) ||
	    zn_device_alloc(t->dev, BT * 4, (void **)&t->data.dtgt))
		return -ENOMEM;
	return 0;
}

/* The model on the trainer's memory callbacks; the optimizer (AdamW /
 * Adam with DeepSpeed's names) and its learning-rate schedule, sized by
 * max_steps when total_num_steps is auto. */
static int open_model(struct zn_trainer *t, uint64_t max_steps)
{
	struct zn_model_mem mem = tr_model_mem(t);
	int rc = zn_arch_model_create(&t->model, &t->arch, t->B, t->T, t->k, t->kctx, &mem);
	if (rc)
		return rc;
	const struct zn_optimizer_params *op = &t->cfg.optimizer.params;
	t->hp = (struct zn_adam_hparams){ .lr = op->lr, .beta1 = op->betas[0],
					  .beta2 = op->betas[1], .eps = op->eps,
					  .weight_decay = op->weight_decay,
					  .bias_correction = op->bias_correction,
					  .adamw_mode = op->adam_w_mode, .max_coeff = op->max_coeff,
					  .min_coeff = op->min_coeff,
					  .eps_inside_sqrt = op->eps_inside_sqrt,
					  .momentum = op->momentum, .dampening = op->dampening,
					  .nesterov = op->nesterov };
	if ((rc = zn_lr_schedule_init(&t->sched, &t->cfg.scheduler, op->lr,
				      t->cfg.optimizer.type != ZN_OPT_SGD, max_steps)))
		return rc;
	/* DeepSpeed's OneCycle writes (momentum, 0.99) into the betas: say
	 * so where that replaces the config's beta2. */
	if (t->sched.cycle_momentum && t->sched.type == ZN_SCHED_ONE_CYCLE &&
	    op->betas[1] != 0.99 && t->rank == 0)
		zn_warn("scheduler: OneCycle's cycle_momentum sets the betas to (momentum, 0.99) "
			"each step, as DeepSpeed's does: beta2 is 0.99, not "
			"optimizer.params.betas[1] %g (set cycle_momentum: false to keep it)",
			op->betas[1]);
	return 0;
}

/* One nvme_path's lock, unless this trainer holds it already (the
 * parameters' and the optimizer's stores may share a path).  A path that
 * is not a directory is left to the store, whose message says what to do. */
static int lock_swap_path(struct zn_trainer *t, const char *path)
{
	char held[4200];
	for (unsigned i = 0; i < t->nlocks; i++) {
		snprintf(held, sizeof(held), "%s/" ZN_SWAP_LOCK, path);
		if (t->locks[i] && strcmp(zn_run_lock_path(t->locks[i]), held) == 0)
			return 0;
	}
	if (!zn_io_is_dir(path) || t->nlocks == ZN_ARRAY_SIZE(t->locks))
		return 0;
	return zn_run_lock(path, ZN_SWAP_LOCK, "nvme_path", t->run_id, &t->locks[t->nlocks++]);
}

static int lock_swap_paths(struct zn_trainer *t, const char *list)
{
	char buf[ZN_NVME_PATH_MAX];
	const char *paths[ZN_STORE_MAX_PATHS];
	int np = zn_nvme_paths_split(list, buf, paths, ZN_STORE_MAX_PATHS), rc = 0;
	for (int i = 0; i < np && !rc; i++)
		rc = lock_swap_path(t, paths[i]);
	return rc;
}

/* The run's locks, before anything is read or written: checkpoint.dir
 * (made if missing) by rank 0 alone -- the ranks of a run share it and
 * rank 0 commits -- and every nvme_path each rank's swap files go to,
 * taken by the first rank of the run there.  A second run refuses to
 * start, naming the pid that holds the lock, instead of overwriting the
 * first one's checkpoints or sharing its disks unseen. */
static int take_locks(struct zn_trainer *t)
{
	const struct zn_config *cfg = &t->cfg;
	char host[64] = "";
	gethostname(host, sizeof(host) - 1);
	snprintf(t->run_id, sizeof(t->run_id), "%d@%s", (int)getpid(), host);
	int rc = t->world > 1 ? zn_comm_broadcast(t->comm, t->run_id, sizeof(t->run_id), 0) : 0;
	if (rc)
		return rc;
	if (t->rank == 0 && cfg->checkpoint.dir[0]) {
		int mrc = zn_io_mkdirs(cfg->checkpoint.dir);
		rc = mrc ? zn_error(mrc, "checkpoint.dir '%s' cannot be made: %s",
				    cfg->checkpoint.dir, strerror(-mrc))
			 : zn_run_lock(cfg->checkpoint.dir, ZN_CKPT_LOCK, "checkpoint.dir",
				       t->run_id, &t->locks[t->nlocks++]);
	}
	const struct zn_zero_config *z = &cfg->zero_optimization;
	if (!rc && t->zr.nvme_opt)
		rc = lock_swap_paths(t, z->offload_optimizer.nvme_path);
	if (!rc && z->offload_param.device == ZN_OFFLOAD_NVME)
		rc = lock_swap_paths(t, z->offload_param.nvme_path);
	return t->world > 1 ? tr_agree_rc(t, rc, "locking the run's directories") : rc;
}

/* Starting weights: a checkpoint to resume, pretrained ones, or init; the
 * tiers they go to (NVMe optimizer states, parameter homes); then every
 * tensor is made once, in order, and sent where it lives. */
static int load_weights(struct zn_trainer *t)
{
	int rc;
	if ((rc = take_locks(t)) || (rc = tr_open_weights(t)) || (t->zr.nvme_opt && (rc = tr_nvme_setup(t))) ||
	    (t->zr.offload_param && (rc = tr_param_homes_setup(t))) || (rc = tr_materialize(t)))
		return rc;
	tr_sources_close(&t->src);
	return 0;
}

/* Everything a config asks for, in order; the ranks' buffers
 * (collectives.c, gather.c) once the tensors' parts are known. */
static struct zn_trainer *create(const struct zn_config *cfg, uint64_t max_steps, bool synthetic,
				 struct zn_comm *comm)
{
	struct zn_trainer *t = open_ranks(cfg, comm);
	if (!t)
		return NULL;
	const bool ranks = t->world > 1;
	if (settle_config(t, synthetic) || open_device(t) || place_tensors(t) ||
	    (ranks && (tr_collectives_setup(t) || tr_gathers_setup(t, t->zr.partition_params))) ||
	    open_scratch(t) || open_data(t) || open_model(t, max_steps) || load_weights(t)) {
		zn_trainer_destroy(t);
		return NULL;
	}
	return t;
}

struct zn_trainer *zn_trainer_create(const struct zn_config *cfg, uint64_t max_steps)
{
	return create(cfg, max_steps, false, NULL);
}

struct zn_trainer *zn_trainer_create_comm(const struct zn_config *cfg, uint64_t max_steps,
					  struct zn_comm *comm)
{
	if (!comm) {
		zn_set_error("zn_trainer_create_comm: NULL comm");
		return NULL;
	}
	return create(cfg, max_steps, false, comm);
}

struct zn_trainer *zn_trainer_create_synthetic(const struct zn_config *cfg, uint64_t max_steps)
{
	return create(cfg, max_steps, true, NULL);
}

void zn_trainer_set_trace(struct zn_trainer *t, struct zn_trace *trace)
{
	t->trace = trace;
	if (t->world > 1)
		zn_comm_set_trace(t->comm, trace);
	if (t->homes.sw)
		zn_swapper_set_trace(t->homes.sw, trace);
	if (t->nvme.os)
		zn_optswap_set_trace(t->nvme.os, trace);
}

const struct zn_config *zn_trainer_config(const struct zn_trainer *t)
{
	return &t->cfg;
}

void zn_trainer_model_summary(const struct zn_trainer *t, char *out, size_t len)
{
	zn_arch_summary(&t->arch, out, len);
}

void zn_trainer_device_summary(const struct zn_trainer *t, char *out, size_t len)
{
	const char *dev = zn_device_name(t->dev), *dt = zn_dtype_name(t->zr.dtype);
	if (t->zr.dtype == ZN_DTYPE_F32)
		snprintf(out, len, "%s, fp32", dev);
	else
		snprintf(out, len, "%s, %s %s, fp32 master weights", dev, dt,
			 t->sdt == t->zr.dtype ? (t->zr.dtype == ZN_DTYPE_BF16 ? "computed in bf16"
									 : "computed in fp16")
					    : "values computed in fp32");
}

int zn_trainer_rank(const struct zn_trainer *t)
{
	return t->rank;
}

int zn_trainer_world(const struct zn_trainer *t)
{
	return t->world;
}

void zn_trainer_memory(const struct zn_trainer *t, struct zn_rank_memory *out)
{
	*out = t->mem;
}

uint64_t zn_trainer_steps_done(const struct zn_trainer *t)
{
	return t->step;
}

uint64_t zn_trainer_num_params(const struct zn_trainer *t)
{
	return zn_arch_num_params(&t->arch);
}
