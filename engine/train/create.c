/* Building the trainer and taking it down: the ranks, the device and
 * kernels, the tensors and ZeRO's share of each, buffers for collectives,
 * data, the model, the optimizer and the starting weights; and the small
 * accessors of include/zinc/train.h. */
#include "zn_common.h"
#include "zn_build.h"

#include "train/internal.h"
#include "zero/zero.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "zinc/checkpoint.h"
#include "zinc/trace.h"

static int check_supported(const struct zn_config *c, bool synthetic)
{
	bool po = c->zero_optimization.offload_param.device != ZN_OFFLOAD_NONE;
	if (po && c->zero_optimization.stage != 3)
		return zn_error(-EINVAL, "zero_optimization.offload_param needs stage 3");
	if (po && c->zero_optimization.offload_optimizer.device == ZN_OFFLOAD_NONE)
		return zn_error(-EINVAL, "zero_optimization.offload_param: the trainer needs "
					 "offload_optimizer.device cpu or nvme with it");
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
	free(t->layer);
	free(t->fetch.order);
	free(t->gstage);
	if (t->round_buf)
		zn_device_free(t->dev, t->round_buf);
	if (t->dopt.sumsq)
		zn_device_free(t->dev, t->dopt.sumsq);
	if (t->dopt.flag)
		zn_device_free(t->dev, t->dopt.flag);
	if (t->dopt.gscratch)
		zn_device_free(t->dev, t->dopt.gscratch);
	if (t->coll.dsend)
		zn_device_free(t->dev, t->coll.dsend);
	if (t->coll.drecv)
		zn_device_free(t->dev, t->coll.drecv);
	free(t->coll.cbuf[0]);
	free(t->coll.cbuf[1]);
	for (int k = 0; k < 2; k++) {
		if (t->buckets.b[k].inflight)
			zn_comm_wait(t->buckets.b[k].op);
		free(t->buckets.b[k].buf);
		free(t->buckets.b[k].e);
	}
	for (unsigned k = 0; k < t->gathers.n; k++) {
		struct gather_slot *g = &t->gathers.slot[(t->gathers.head + k) % GATHER_SLOTS];
		for (unsigned i = 0; i < ZN_ARCH_LAYER_TENSORS_MAX; i++)
			if (g->op[i])
				zn_comm_wait(g->op[i]);
	}
	free(t->gathers.buf);
	free_states(t);
	free(t->t);
	tr_table_free(&t->tab);
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

static struct zn_trainer *create(const struct zn_config *cfg, uint64_t max_steps, bool synthetic,
				 struct zn_comm *comm)
{
	struct zn_trainer *t = calloc(1, sizeof(*t));
	int rc;

	if (!t) {
		zn_set_error("out of memory");
		return NULL;
	}
	t->cfg = *cfg;
	/* The ranks first: everything below is sized by this rank's part. */
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
	t->stage = cfg->zero_optimization.stage;
	if (t->world > 1) {
		/* DeepSpeed's rule with this many ranks: train_batch_size =
		 * micro x accumulation x ranks. */
		if (zn_config_resolve_batch(cfg, (uint32_t)t->world, &t->cfg.batch)) {
			if (t->own_comm)
				zn_comm_destroy(t->comm);
			free(t);
			return NULL;
		}
		cfg = &t->cfg;
	}
	pthread_mutex_init(&t->opt.lock, NULL);
	pthread_cond_init(&t->opt.cond, NULL);
	t->data.synthetic = synthetic;
	t->offload_param = cfg->zero_optimization.offload_param.device != ZN_OFFLOAD_NONE;
	t->fetch.direction = 1;
	t->data.rng = cfg->data.seed | 1;
	if (check_supported(cfg, synthetic))
		goto fail;
	if (t->world > 1 && tr_check_same_config(t))
		goto fail;
	/* One disk per rank: "{rank}" and "{local_rank}" in an nvme_path
	 * become this rank's numbers (/nvme{local_rank}/swap). */
	if (zn_config_expand_rank(&t->cfg, t->rank, zn_comm_local_rank(t->comm)))
		goto fail;
	t->B = (int)cfg->batch.micro_batch;
	t->accum = cfg->batch.grad_accum;
	t->T = (int)cfg->model.seq_len;
	if (t->B < 1 || t->accum < 1) {
		zn_set_error("train_batch_size / train_micro_batch_size_per_gpu: give the batch "
			     "size (DeepSpeed's keys)");
		goto fail;
	}
	if (zn_arch_from_config(cfg, &t->arch))
		goto fail;

	/* Device and kernels. */
	struct zn_device_params dp;
	zn_device_params_default(&dp);
	dp.kind = cfg->device.type == ZN_DEVICE_CUDA ? "cuda" : "cpu";
	/* Several ranks on one node: rank r drives the GPU of its local rank,
	 * as DeepSpeed's launcher arranges. */
	dp.ordinal = t->world > 1 ? zn_comm_local_rank(t->comm) : (int)cfg->device.index;
	dp.memory_limit = cfg->device.memory_limit;
	t->dev = zn_device_create(&dp);
	if (!t->dev)
		goto fail;
	t->stream = zn_device_stream_create(t->dev, "compute");
	t->k = zn_kernels_get(zn_device_kind(t->dev));
	if (!t->stream || !t->k)
		goto fail;
	struct zn_kernels_params kp;
	zn_kernels_params_default(&kp);
	zn_device_kernels_params(t->dev, t->stream, &kp);
	t->sdt = kp.dtype = zn_config_storage_dtype(cfg);
	t->kctx = t->k->ctx_create(&kp);
	if (!t->kctx)
		goto fail;
	t->pool = zn_threadpool_create(0, -1);
	if (!t->pool)
		goto fail;
	if (t->world > 1 && cfg->device.type == ZN_DEVICE_CUDA) {
#if ZN_HAVE_NCCL
		if (!(t->coll.dcomm = zn_comm_create_nccl(t->comm, dp.ordinal)))
			goto fail;
#else
		zn_warn("this zinc was built without NCCL: the GPUs' collectives go through "
			"host memory");
#endif
	}

	/* Parameters: device copies, host master and moments. */
	if (tr_table_build(&t->tab, &t->arch))
		goto fail;
	t->t = calloc(ZN_MAX(t->tab.nt, 1), sizeof(*t->t));
	t->layer = calloc(ZN_MAX(t->tab.nlayers, 1), sizeof(*t->layer));
	if (!t->t || !t->layer) {
		zn_set_error("out of memory");
		goto fail;
	}
	for (unsigned i = 0; i < t->tab.nt; i++)
		t->t[i].d = &t->tab.d[i];
	/* ZeRO's partition (stage >= 1 over several ranks): every tensor in
	 * `world` parts, this rank's part of each in its own flat order.  Stage
	 * 0 (plain data parallelism) keeps whole tensors on every rank. */
	struct zn_zero_rules zr;
	zn_zero_rules_init(&zr, cfg, t->rank, t->world);
	t->dtype = zr.dtype;
	t->gdt = zr.gdt;
	t->hdt = zr.hdt;
	t->device_opt = zr.device_opt;
	t->nvme_opt = cfg->zero_optimization.offload_optimizer.device == ZN_OFFLOAD_NVME;
	t->overlap = t->offload_param && t->nvme_opt;
	for (unsigned i = 0; i < t->tab.nt; i++) {
		struct tstate *s = &t->t[i];
		size_t bytes = s->d->numel * sizeof(float);
		const struct zn_zero_share sh = zn_zero_share_of(&zr, s->d->numel);
		s->part = sh.part;
		s->lo = sh.lo;
		s->nown = sh.nown;
		s->oflat = t->own_total;
		t->own_total += s->nown;
		const size_t obytes = ZN_MAX(s->nown, 1) * sizeof(float);
		s->owner = t;
		s->resident = sh.resident;
		/* Stage 3 on several ranks without offload_param: this rank's
		 * part stays on the device (fp32), gathered at each fetch. */
		if (!s->resident && !t->offload_param &&
		    zn_device_alloc(t->dev, obytes, (void **)&s->dhome))
			goto fail;
		s->dev_grads = sh.dev_grads;
		t->layered |= !s->dev_grads;
		/* Host optimizer state unless it lives on NVMe; gradient
		 * accumulators unless the optimizer runs on the device. */
		if (!t->nvme_opt) {
			s->master = malloc(obytes);
			s->m = calloc(ZN_MAX(s->nown, 1), sizeof(float));
			s->v = calloc(ZN_MAX(s->nown, 1), sizeof(float));
			t->host_bytes += 3 * s->nown * 4;
		}
		if (zr.host_grads) {
			s->grad = malloc(ZN_MAX(s->nown, 1) * zn_dtype_size(t->gdt));
			t->host_bytes += s->nown * zn_dtype_size(t->gdt);
		}
		if ((!t->nvme_opt && (!s->master || !s->m || !s->v)) || (zr.host_grads && !s->grad)) {
			zn_set_error("out of host memory for the optimizer state and gradients of "
				     "%" PRIu64 " parameters; set zero_optimization.offload_optimizer."
				     "device: nvme, or data_types.grad_accum_dtype: bf16",
				     t->tab.total);
			goto fail;
		}
		if (t->overlap && s->resident && !(s->staged = malloc(obytes))) {
			zn_set_error("out of memory");
			goto fail;
		}
		if (s->resident && zn_device_alloc(t->dev, bytes, &s->dparam))
			goto fail;
		if (s->dev_grads && zn_device_alloc(t->dev, bytes, &s->dgrad))
			goto fail;
		if (t->device_opt && (zn_device_alloc(t->dev, obytes, (void **)&s->dmaster) ||
				      zn_device_alloc(t->dev, obytes, (void **)&s->dm) ||
				      zn_device_alloc(t->dev, obytes, (void **)&s->dv)))
			goto fail;
		zn_zero_count(&zr, s->d->numel, &sh, &t->mem); /* zn_trainer_memory */
	}
	t->mem.rank = t->rank;
	t->mem.world = t->world;
	t->mem.stage = t->stage;
	/* Collectives stage through host buffers: W parts of the largest
	 * tensor (fp32), two so one can fill while the other moves. */
	if (t->world > 1) {
		uint64_t maxpart = 0;
		for (unsigned i = 0; i < t->tab.nt; i++)
			maxpart = ZN_MAX(maxpart, t->t[i].part);
		t->coll.cbuf_bytes = ZN_ALIGN_UP((size_t)maxpart * (size_t)t->world * 4 + 64, 4096);
		for (int k = 0; k < 2; k++)
			if (posix_memalign((void **)&t->coll.cbuf[k], 4096, t->coll.cbuf_bytes)) {
				zn_set_error("out of memory for the collectives' staging (%zu bytes)",
					     t->coll.cbuf_bytes);
				goto fail;
			}
		const size_t dbytes = (size_t)maxpart * (size_t)t->world * 4;
		if (t->coll.dcomm && (zn_device_alloc(t->dev, dbytes, &t->coll.dsend) ||
				      zn_device_alloc(t->dev, dbytes, &t->coll.drecv)))
			goto fail;
		/* Gradient buckets (host comm; NCCL reduces tensor by tensor on
		 * the device): reduce_bucket_size elements over the W chunks,
		 * at most 2^26 (the staging is host memory), at least the
		 * largest part. */
		const uint64_t chunks = t->stage == 0 ? 1 : (uint64_t)t->world;
		uint64_t want = ZN_MIN(ZN_MIN(cfg->zero_optimization.reduce_bucket_size, t->tab.total),
				       (uint64_t)1 << 26);
		t->buckets.cap =
			(size_t)ZN_MAX(want / chunks, t->stage == 0 ? t->tab.largest : maxpart);
		for (int k = 0; k < 2 && !t->coll.dcomm; k++) {
			t->buckets.b[k].e = calloc(t->tab.nt, sizeof(*t->buckets.b[k].e));
			if (!t->buckets.b[k].e ||
			    posix_memalign((void **)&t->buckets.b[k].buf, 4096,
					   t->buckets.cap * ((size_t)chunks + 1) * 4)) {
				zn_set_error("out of memory for the gradient buckets (2 x %zu bytes; "
					     "lower zero_optimization.reduce_bucket_size)",
					     t->buckets.cap * ((size_t)chunks + 1) * 4);
				goto fail;
			}
		}
		/* Stage 3: a layer's gathers, ahead of its fetch. */
		size_t glay = 0;
		for (unsigned l = 0; l < t->tab.nlayers && zr.partition_params; l++) {
			size_t b = 0;
			for (unsigned i = 0; i < t->tab.count[l]; i++)
				b += ZN_ALIGN_UP((size_t)t->t[t->tab.first[l] + i].part *
							 ((size_t)t->world + 1) * 4, 64);
			glay = ZN_MAX(glay, b);
		}
		for (unsigned l = 0; l < t->tab.nlayers; l++)
			for (unsigned i = t->tab.first[l]; i < t->tab.first[l] + t->tab.count[l]; i++)
				if (!t->t[i].resident) {
					t->layer[l].parts = true;
					/* (param_homes_setup counts offload_param's) */
					if (!t->offload_param)
						t->layer[l].elems += t->t[i].d->numel;
				}
		if (glay && posix_memalign((void **)&t->gathers.buf, 4096, GATHER_SLOTS * glay)) {
			zn_set_error("out of memory for stage 3's gather buffers (%u x %zu bytes)",
				     GATHER_SLOTS, glay);
			goto fail;
		}
		for (unsigned k = 0; k < GATHER_SLOTS && t->gathers.buf; k++)
			t->gathers.slot[k].buf = t->gathers.buf + k * glay;
		/* The device optimizer takes its reduced gradients from here. */
		if (t->device_opt &&
		    zn_device_alloc(t->dev, t->tab.largest * 4, (void **)&t->dopt.gscratch))
			goto fail;
	}

	/* offload_optimizer: none keeps the optimizer on the device (the
	 * kernels' adam op); cpu/nvme runs the CPU Adam on host state. */
	if (t->device_opt && (zn_device_alloc(t->dev, sizeof(double), (void **)&t->dopt.sumsq) ||
			      zn_device_alloc(t->dev, sizeof(int32_t), (void **)&t->dopt.flag)))
		goto fail;
	if (zn_loss_scaler_init(&t->scaler, &cfg->fp16))
		goto fail;
	/* 16-bit anything: a device scratch of 16-bit values as large as the
	 * largest tensor (rounding, 16-bit homes and accumulators). */
	if ((t->dtype != ZN_DTYPE_F32 || t->gdt != ZN_DTYPE_F32) &&
	    zn_device_alloc(t->dev, t->tab.largest * 2, &t->round_buf))
		goto fail;
	/* Later micro-batches' gradients are added on the host through this. */
	if ((!t->device_opt || t->world > 1) && !(t->gstage = malloc(t->tab.largest * 4))) {
		zn_set_error("out of memory");
		goto fail;
	}

	/* Data. */
	struct zn_data_options dopt = {
		.pattern = cfg->data.train, .B = (uint32_t)t->B, .T = (uint32_t)t->T,
		.seed = cfg->data.seed, .shuffle = cfg->data.shuffle,
		.vocab_size = (uint32_t)zn_arch_vocab(&t->arch),
		.rank = (uint32_t)t->rank, .world = (uint32_t)t->world,
	};
	t->data.train = synthetic ? NULL : zn_data_open(&dopt);
	if (!t->data.train && !synthetic)
		goto fail;
	if (cfg->data.val[0] && !synthetic) {
		dopt.pattern = cfg->data.val;
		dopt.shuffle = false;
		t->data.val = zn_data_open(&dopt);
		if (!t->data.val)
			goto fail;
	}
	size_t BT = (size_t)t->B * (size_t)t->T;
	t->data.hin = malloc(BT * 4);
	t->data.htgt = malloc(BT * 4);
	t->data.hloss = malloc(BT * 4);
	if (!t->data.hin || !t->data.htgt || !t->data.hloss ||
	    zn_device_alloc(t->dev, BT * 4, (void **)&t->data.din) ||
	    zn_device_alloc(t->dev, BT * 4, (void **)&t->data.dtgt)) {
		if (!t->data.hin || !t->data.htgt || !t->data.hloss)
			zn_set_error("out of memory");
		goto fail;
	}

	struct zn_model_mem mem = tr_model_mem(t);
	if (zn_arch_model_create(&t->model, &t->arch, t->B, t->T, t->k, t->kctx, &mem))
		goto fail;

	/* Optimizer (AdamW / Adam with DeepSpeed's names) and schedule. */
	const struct zn_optimizer_params *op = &cfg->optimizer.params;
	t->hp = (struct zn_adam_hparams){ .lr = op->lr, .beta1 = op->betas[0],
					  .beta2 = op->betas[1], .eps = op->eps,
					  .weight_decay = op->weight_decay,
					  .bias_correction = op->bias_correction,
					  .adamw_mode = op->adam_w_mode };
	if (zn_lr_schedule_init(&t->sched, &cfg->scheduler, op->lr, max_steps))
		goto fail;

	/* Starting weights: a checkpoint to resume, pretrained ones, or init;
	 * then every tensor is made once, in order, and sent where it lives. */
	if (tr_open_weights(t))
		goto fail;
	if (t->nvme_opt && (rc = tr_nvme_setup(t)) != 0)
		goto fail;
	if (t->offload_param && (rc = tr_param_homes_setup(t)) != 0)
		goto fail;
	if ((rc = tr_materialize(t)) != 0)
		goto fail;
	tr_sources_close(&t->src);
	return t;
fail:
	zn_trainer_destroy(t);
	return NULL;
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

void zn_trainer_model_summary(const struct zn_trainer *t, char *out, size_t len)
{
	const struct zn_arch *a = &t->arch;
	if (!a->llama)
		snprintf(out, len, "GPT-2 %d layers, %d heads, %d channels, vocab %d", a->g.n_layer,
			 a->g.n_head, a->g.n_embd, a->g.vocab_size);
	else
		snprintf(out, len, "%s %d layers, %d heads (%d key/value), %d channels, MLP %d, "
			 "vocab %d%s", zn_arch_name(a), a->l.n_layer, a->l.n_head, a->l.n_kv_head,
			 a->l.n_embd, a->l.intermediate, a->l.vocab_size,
			 a->l.tie_embeddings ? ", tied embeddings" : "");
}

void zn_trainer_device_summary(const struct zn_trainer *t, char *out, size_t len)
{
	const char *dev = zn_device_name(t->dev), *dt = zn_dtype_name(t->dtype);
	if (t->dtype == ZN_DTYPE_F32)
		snprintf(out, len, "%s, fp32", dev);
	else
		snprintf(out, len, "%s, %s %s, fp32 master weights", dev, dt,
			 t->sdt == t->dtype ? (t->dtype == ZN_DTYPE_BF16 ? "computed in bf16"
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

int zn_rank_memory_plan(const struct zn_config *cfg, int world, int rank,
			struct zn_rank_memory *out)
{
	struct zn_arch arch;
	struct tensor_table tab;
	if (world < 1 || rank < 0 || rank >= world)
		return zn_error(-EINVAL, "rank %d of %d ranks: ranks are 0 .. world - 1, world >= 1",
				rank, world);
	int rc = zn_arch_from_config(cfg, &arch);
	if (rc || (rc = tr_table_build(&tab, &arch)))
		return rc;
	struct zn_zero_rules zr;
	zn_zero_rules_init(&zr, cfg, rank, world);
	memset(out, 0, sizeof(*out));
	out->rank = rank;
	out->world = world;
	out->stage = zr.stage;
	for (unsigned i = 0; i < tab.nt; i++) {
		const struct zn_zero_share sh = zn_zero_share_of(&zr, tab.d[i].numel);
		zn_zero_count(&zr, tab.d[i].numel, &sh, out);
	}
	tr_table_free(&tab);
	return 0;
}
