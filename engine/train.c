/* The trainer (see include/zinc/train.h). */
#include "zn_common.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zinc/adam.h"
#include "zinc/checkpoint.h"
#include "zinc/data.h"
#include "zinc/device.h"
#include "zinc/kernels.h"
#include "zinc/model.h"
#include "zinc/offload.h"
#include "zinc/precision.h"
#include "zinc/safetensors.h"
#include "zinc/threadpool.h"
#include "zinc/trace.h"
#include "zinc/train.h"

#define MAX_TENSORS (12 * 1024 + 8)

struct tstate {
	struct zn_param_desc d;
	void *dparam, *dgrad;          /* device, fp32 */
	float *master, *m, *v, *grad;  /* host (device optimizer: checkpoint staging) */
	float *dmaster, *dm, *dv;      /* device optimizer only */
	uint64_t flat;                 /* offset in the model's flat element order */
	struct zn_tensor *home;        /* offload_param: the parameters' home tier */
};

struct zn_trainer {
	struct zn_config cfg;
	struct zn_gpt2_config mcfg;
	int B, T;
	uint32_t accum;
	struct zn_device *dev;
	struct zn_stream *stream;
	const struct zn_kernels *k;
	struct zn_kctx *kctx;
	struct zn_gpt2 *model;
	struct zn_threadpool *pool;    /* CPU Adam */
	unsigned nt;
	struct tstate *t;
	unsigned nlayers;
	unsigned *first, *count;       /* tensors of each layer */
	struct zn_data *train, *val;
	int32_t *hin, *htgt;           /* host batch */
	int32_t *din, *dtgt;           /* device batch */
	float *hloss;                  /* host copy of per-token losses */
	struct zn_lr_schedule sched;
	struct zn_adam_hparams hp;
	uint64_t step;
	uint64_t host_bytes;
	bool synthetic;                /* random tokens, no data files */
	uint64_t rng;
	enum zn_dtype dtype;           /* precision parameters and gradients are rounded to */
	void *round_buf;               /* device scratch for rounding, 2 bytes per element */
	struct zn_loss_scaler scaler;
	uint64_t updates;              /* optimizer updates applied (Adam's step, the LR's) */
	struct zn_trace *trace;        /* optional */
	bool device_opt;               /* offload_optimizer: none: Adam on the device */
	/* offload_optimizer: nvme: master, m, v live on NVMe in sub-groups of
	 * the flat element order, streamed through the pipelined swapper. */
	struct zn_aio *aio;
	struct zn_store *store;
	struct zn_optswap *os;
	uint64_t total;                /* elements over all tensors */
	/* offload_param (stage 3): parameters live on host or NVMe and visit
	 * the device layer by layer; gradients leave it at each release. */
	bool offload_param;
	struct zn_aio *paio;
	struct zn_store *pstore;
	struct zn_bufpool *ppool;
	struct zn_swapper *psw;
	unsigned *fetched;             /* per layer: outstanding fetches */
	bool *has_grads;               /* per layer: device gradient buffers exist */
	int direction;                 /* +1 forward, -1 backward: what to prefetch */
	float *gstage;                 /* host staging for a layer's gradients (largest tensor) */
	double *dsumsq;                /* device optimizer: the norm's accumulator */
	int32_t *dflag;                /* device optimizer: non-finite flag */
};

void zn_trainer_set_trace(struct zn_trainer *t, struct zn_trace *trace)
{
	t->trace = trace;
}

/* ---- the parameter source: everything resident on the device ------------ */

static int round_to_dtype(struct zn_trainer *t, void *x, size_t n);

/* offload_param: bring a layer's parameters to the device (and make room for
 * its gradients), prefetching the next layer in the pass's direction. */
static int fetch_offloaded(struct zn_trainer *t, unsigned layer, bool want, void **params,
			   void **grads)
{
	int rc = 0;
	if (t->fetched[layer]++ == 0) {
		for (unsigned i = 0; i < t->count[layer] && !rc; i++) {
			struct tstate *s = &t->t[t->first[layer] + i];
			void *host;
			size_t bytes = s->d.numel * 4;
			if ((rc = zn_device_alloc(t->dev, bytes, &s->dparam)))
				break;
			if ((rc = zn_swapper_acquire(t->psw, s->home, &host)))
				break;
			rc = zn_device_copy_async(t->dev, s->dparam, host, bytes,
						  ZN_COPY_HOST_TO_DEVICE, NULL);
			zn_swapper_release(t->psw, s->home, false);
			if (!rc)
				rc = round_to_dtype(t, s->dparam, s->d.numel);
		}
		/* The next layer this pass will want starts its way now. */
		long next = (long)layer + t->direction;
		if (!rc && next >= 0 && next < (long)t->nlayers)
			for (unsigned i = 0; i < t->count[next]; i++)
				zn_swapper_prefetch(t->psw, t->t[t->first[next] + i].home);
	}
	if (!rc && want && !t->has_grads[layer]) {
		for (unsigned i = 0; i < t->count[layer] && !rc; i++) {
			struct tstate *s = &t->t[t->first[layer] + i];
			if (!(rc = zn_device_alloc(t->dev, s->d.numel * 4, &s->dgrad)))
				rc = zn_device_memset(t->dev, s->dgrad, 0, s->d.numel * 4, NULL);
		}
		t->has_grads[layer] = true;
	}
	for (unsigned i = 0; i < t->count[layer]; i++) {
		params[i] = t->t[t->first[layer] + i].dparam;
		if (want)
			grads[i] = t->t[t->first[layer] + i].dgrad;
	}
	return rc;
}

/* The layer leaves the device; with final gradients, those go to the host
 * accumulators first. */
static int release_offloaded(struct zn_trainer *t, unsigned layer, bool written)
{
	int rc = zn_device_stream_synchronize(t->stream);
	if (!rc && written && t->has_grads[layer]) {
		for (unsigned i = 0; i < t->count[layer] && !rc; i++) {
			struct tstate *s = &t->t[t->first[layer] + i];
			if (!(rc = round_to_dtype(t, s->dgrad, s->d.numel)) &&
			    !(rc = zn_device_copy_async(t->dev, t->gstage, s->dgrad, s->d.numel * 4,
							ZN_COPY_DEVICE_TO_HOST, NULL)))
				for (size_t k = 0; k < s->d.numel; k++)
					s->grad[k] += t->gstage[k];
			zn_device_free(t->dev, s->dgrad);
			s->dgrad = NULL;
		}
		t->has_grads[layer] = false;
	}
	if (t->fetched[layer] && --t->fetched[layer] == 0)
		for (unsigned i = 0; i < t->count[layer]; i++) {
			struct tstate *s = &t->t[t->first[layer] + i];
			zn_device_free(t->dev, s->dparam);
			s->dparam = NULL;
		}
	return rc;
}

static int fetch(void *user, unsigned layer, bool want, void **params, void **grads)
{
	struct zn_trainer *t = user;
	if (t->offload_param)
		return fetch_offloaded(t, layer, want, params, grads);
	for (unsigned i = 0; i < t->count[layer]; i++) {
		params[i] = t->t[t->first[layer] + i].dparam;
		if (want)
			grads[i] = t->t[t->first[layer] + i].dgrad;
	}
	return 0;
}

static int release(void *user, unsigned layer, bool written)
{
	struct zn_trainer *t = user;
	return t->offload_param ? release_offloaded(t, layer, written) : 0;
}

static void *dalloc(void *user, size_t bytes)
{
	void *p = NULL;
	return zn_device_alloc(user, bytes, &p) ? NULL : p;
}

static void dfree(void *user, void *p)
{
	zn_device_free(user, p);
}

static int dzero(void *user, void *p, size_t bytes)
{
	return zn_device_memset(user, p, 0, bytes, NULL);
}

static void *halloc(void *user, size_t bytes)
{
	(void)user;
	/* Page-aligned, so the copies can use DMA once pinned. */
	void *p = NULL;
	if (posix_memalign(&p, 4096, bytes ? bytes : 1) != 0) {
		zn_set_error("out of host memory for %zu bytes of kept activations", bytes);
		return NULL;
	}
	return p;
}

static void hfree(void *user, void *p)
{
	(void)user;
	free(p);
}

static int dto_host(void *user, void *dst, const void *src, size_t bytes)
{
	return zn_device_copy_async(user, dst, src, bytes, ZN_COPY_DEVICE_TO_HOST, NULL);
}

static int dto_device(void *user, void *dst, const void *src, size_t bytes)
{
	return zn_device_copy_async(user, dst, src, bytes, ZN_COPY_HOST_TO_DEVICE, NULL);
}

/* ---- creation --------------------------------------------------------------- */

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
	for (unsigned i = 0; t->t && i < t->nt; i++) {
		struct tstate *s = &t->t[i];
		if (s->dparam)
			zn_device_free(t->dev, s->dparam);
		if (s->dgrad)
			zn_device_free(t->dev, s->dgrad);
		if (s->dmaster)
			zn_device_free(t->dev, s->dmaster);
		if (s->dm)
			zn_device_free(t->dev, s->dm);
		if (s->dv)
			zn_device_free(t->dev, s->dv);
		free(s->master);
		free(s->m);
		free(s->v);
		free(s->grad);
	}
}

void zn_trainer_destroy(struct zn_trainer *t)
{
	if (!t)
		return;
	zn_gpt2_destroy(t->model);
	zn_optswap_destroy(t->os);
	zn_store_destroy(t->store);
	zn_aio_destroy(t->aio);
	zn_swapper_destroy(t->psw);
	zn_bufpool_destroy(t->ppool);
	zn_store_destroy(t->pstore);
	zn_aio_destroy(t->paio);
	free(t->fetched);
	free(t->has_grads);
	free(t->gstage);
	if (t->round_buf)
		zn_device_free(t->dev, t->round_buf);
	if (t->dsumsq)
		zn_device_free(t->dev, t->dsumsq);
	if (t->dflag)
		zn_device_free(t->dev, t->dflag);
	free_states(t);
	free(t->t);
	free(t->first);
	free(t->count);
	if (t->din)
		zn_device_free(t->dev, t->din);
	if (t->dtgt)
		zn_device_free(t->dev, t->dtgt);
	free(t->hin);
	free(t->htgt);
	free(t->hloss);
	zn_data_close(t->train);
	zn_data_close(t->val);
	if (t->kctx)
		t->k->ctx_destroy(t->kctx);
	zn_threadpool_destroy(t->pool);
	if (t->stream)
		zn_device_stream_destroy(t->stream);
	zn_device_destroy(t->dev);
	free(t);
}

static int to_device(struct zn_trainer *t, void *dst, const void *src, size_t bytes)
{
	return zn_device_copy_async(t->dev, dst, src, bytes, ZN_COPY_HOST_TO_DEVICE, NULL);
}

static int to_host(struct zn_trainer *t, void *dst, const void *src, size_t bytes)
{
	return zn_device_copy_async(t->dev, dst, src, bytes, ZN_COPY_DEVICE_TO_HOST, NULL);
}

static int load_checkpoint(struct zn_trainer *t, const char *dir);
static int nvme_setup(struct zn_trainer *t);
static int param_homes_setup(struct zn_trainer *t);

/* Round n fp32 values on the device to the training dtype's precision and
 * range (fp16 overflow becomes Inf), keeping fp32 storage. */
static int round_to_dtype(struct zn_trainer *t, void *x, size_t n)
{
	if (t->dtype == ZN_DTYPE_F32)
		return 0;
	int rc = t->k->cast(t->kctx, t->round_buf, t->dtype, x, ZN_DTYPE_F32, n);
	if (!rc)
		rc = t->k->cast(t->kctx, x, ZN_DTYPE_F32, t->round_buf, t->dtype, n);
	return rc;
}
static int load_pretrained(struct zn_trainer *t, const char *path);

static struct zn_trainer *create(const struct zn_config *cfg, uint64_t max_steps, bool synthetic)
{
	struct zn_trainer *t = calloc(1, sizeof(*t));
	int rc;

	if (!t) {
		zn_set_error("out of memory");
		return NULL;
	}
	t->cfg = *cfg;
	t->synthetic = synthetic;
	t->offload_param = cfg->zero_optimization.offload_param.device != ZN_OFFLOAD_NONE;
	t->direction = 1;
	t->rng = cfg->data.seed | 1;
	if (check_supported(cfg, synthetic))
		goto fail;
	t->B = (int)cfg->batch.micro_batch;
	t->accum = cfg->batch.grad_accum;
	t->T = (int)cfg->model.seq_len;
	if (t->B < 1 || t->accum < 1) {
		zn_set_error("train_batch_size / train_micro_batch_size_per_gpu: give the batch "
			     "size (DeepSpeed's keys)");
		goto fail;
	}
	t->mcfg = (struct zn_gpt2_config){
		.n_layer = (int)cfg->model.n_layer, .n_head = (int)cfg->model.n_head,
		.n_embd = (int)cfg->model.n_embd, .vocab_size = (int)cfg->model.vocab_size,
		.max_seq_len = (int)cfg->model.seq_len,
		.recompute = cfg->activation_checkpointing.enabled,
		.offload_activations = cfg->activation_checkpointing.cpu_checkpointing,
	};
	if (zn_gpt2_config_check(&t->mcfg))
		goto fail;

	/* Device and kernels. */
	struct zn_device_params dp;
	zn_device_params_default(&dp);
	dp.kind = cfg->device.type == ZN_DEVICE_CUDA ? "cuda" : "cpu";
	dp.ordinal = (int)cfg->device.index;
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
	t->kctx = t->k->ctx_create(&kp);
	if (!t->kctx)
		goto fail;
	t->pool = zn_threadpool_create(0, -1);
	if (!t->pool)
		goto fail;

	/* Parameters: device copies, host master and moments. */
	t->nlayers = zn_gpt2_layers(&t->mcfg);
	t->first = calloc(t->nlayers, sizeof(unsigned));
	t->count = calloc(t->nlayers, sizeof(unsigned));
	t->t = calloc(MAX_TENSORS, sizeof(*t->t));
	if (!t->first || !t->count || !t->t) {
		zn_set_error("out of memory");
		goto fail;
	}
	for (unsigned l = 0; l < t->nlayers; l++) {
		struct zn_param_desc d[ZN_GPT2_BLOCK_TENSORS];
		unsigned n = zn_gpt2_layer_params(&t->mcfg, l, d, ZN_GPT2_BLOCK_TENSORS);
		t->first[l] = t->nt;
		t->count[l] = n;
		for (unsigned i = 0; i < n; i++) {
			struct tstate *s = &t->t[t->nt++];
			size_t bytes = d[i].numel * sizeof(float);
			bool nvme = cfg->zero_optimization.offload_optimizer.device ==
				    ZN_OFFLOAD_NVME;
			s->d = d[i];
			s->flat = t->total;
			t->total += d[i].numel;
			s->master = malloc(bytes);
			s->grad = malloc(bytes);
			if (!nvme) {
				s->m = calloc(d[i].numel, sizeof(float));
				s->v = calloc(d[i].numel, sizeof(float));
			}
			t->host_bytes += (nvme ? 2 : 4) * bytes;
			if (!s->master || !s->grad || (!nvme && (!s->m || !s->v))) {
				zn_set_error("out of host memory for the optimizer state");
				goto fail;
			}
			if (!t->offload_param && (zn_device_alloc(t->dev, bytes, &s->dparam) ||
						  zn_device_alloc(t->dev, bytes, &s->dgrad)))
				goto fail;
			if (cfg->zero_optimization.offload_optimizer.device == ZN_OFFLOAD_NONE &&
			    (zn_device_alloc(t->dev, bytes, (void **)&s->dmaster) ||
			     zn_device_alloc(t->dev, bytes, (void **)&s->dm) ||
			     zn_device_alloc(t->dev, bytes, (void **)&s->dv)))
				goto fail;
			zn_gpt2_init_tensor(&t->mcfg, &s->d, cfg->data.seed, t->nt - 1, s->master);
		}
	}

	/* offload_optimizer: none keeps the optimizer on the device (the
	 * kernels' adam op); cpu/nvme runs the CPU Adam on host state. */
	t->device_opt = cfg->zero_optimization.offload_optimizer.device == ZN_OFFLOAD_NONE;
	if (t->device_opt && (zn_device_alloc(t->dev, sizeof(double), (void **)&t->dsumsq) ||
			      zn_device_alloc(t->dev, sizeof(int32_t), (void **)&t->dflag)))
		goto fail;
	/* 16-bit training: rounding scratch as large as the largest tensor. */
	t->dtype = cfg->fp16.enabled ? ZN_DTYPE_F16 : cfg->bf16.enabled ? ZN_DTYPE_BF16
									  : ZN_DTYPE_F32;
	if (zn_loss_scaler_init(&t->scaler, &cfg->fp16))
		goto fail;
	if (t->dtype != ZN_DTYPE_F32) {
		size_t most = 0;
		for (unsigned i = 0; i < t->nt; i++)
			most = ZN_MAX(most, t->t[i].d.numel);
		if (zn_device_alloc(t->dev, most * 2, &t->round_buf))
			goto fail;
	}

	/* Data. */
	struct zn_data_options dopt = {
		.pattern = cfg->data.train, .B = (uint32_t)t->B, .T = (uint32_t)t->T,
		.seed = cfg->data.seed, .shuffle = cfg->data.shuffle,
		.vocab_size = (uint32_t)t->mcfg.vocab_size,
	};
	t->train = synthetic ? NULL : zn_data_open(&dopt);
	if (!t->train && !synthetic)
		goto fail;
	if (cfg->data.val[0] && !synthetic) {
		dopt.pattern = cfg->data.val;
		dopt.shuffle = false;
		t->val = zn_data_open(&dopt);
		if (!t->val)
			goto fail;
	}
	size_t BT = (size_t)t->B * (size_t)t->T;
	t->hin = malloc(BT * 4);
	t->htgt = malloc(BT * 4);
	t->hloss = malloc(BT * 4);
	if (!t->hin || !t->htgt || !t->hloss || zn_device_alloc(t->dev, BT * 4, (void **)&t->din) ||
	    zn_device_alloc(t->dev, BT * 4, (void **)&t->dtgt)) {
		if (!t->hin || !t->htgt || !t->hloss)
			zn_set_error("out of memory");
		goto fail;
	}

	struct zn_model_mem mem = { t->dev, dalloc, dfree, dzero, halloc, hfree, dto_host,
				    dto_device };
	t->model = zn_gpt2_create(&t->mcfg, t->B, t->T, t->k, t->kctx, &mem);
	if (!t->model)
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

	/* Starting weights: a checkpoint to resume, pretrained ones, or init. */
	char dir[4096];
	if (cfg->checkpoint.resume && cfg->checkpoint.dir[0] &&
	    zn_ckpt_latest(cfg->checkpoint.dir, dir, sizeof(dir)) == 0) {
		if (load_checkpoint(t, dir))
			goto fail;
	} else if (cfg->model.from[0] && load_pretrained(t, cfg->model.from)) {
		goto fail;
	}
	if (cfg->zero_optimization.offload_optimizer.device == ZN_OFFLOAD_NVME &&
	    (rc = nvme_setup(t)) != 0)
		goto fail;
	if (t->offload_param) {
		if ((rc = param_homes_setup(t)) != 0)
			goto fail;
		return t;
	}
	for (unsigned i = 0; i < t->nt; i++) {
		struct tstate *s = &t->t[i];
		size_t bytes = s->d.numel * 4;
		rc = to_device(t, s->dparam, s->master, bytes);
		if (!rc && t->device_opt && !(rc = to_device(t, s->dmaster, s->master, bytes)) &&
		    !(rc = to_device(t, s->dm, s->m, bytes)))
			rc = to_device(t, s->dv, s->v, bytes);
		if (!rc)
			rc = round_to_dtype(t, s->dparam, s->d.numel);
		if (rc)
			goto fail;
	}
	return t;
fail:
	zn_trainer_destroy(t);
	return NULL;
}

struct zn_trainer *zn_trainer_create(const struct zn_config *cfg, uint64_t max_steps)
{
	return create(cfg, max_steps, false);
}

struct zn_trainer *zn_trainer_create_synthetic(const struct zn_config *cfg, uint64_t max_steps)
{
	return create(cfg, max_steps, true);
}

uint64_t zn_trainer_steps_done(const struct zn_trainer *t)
{
	return t->step;
}

uint64_t zn_trainer_num_params(const struct zn_trainer *t)
{
	return zn_gpt2_num_params(&t->mcfg);
}


/* ---- parameter homes (offload_param) ------------------------------------- */

/* The tensor's new parameters (its host master) to its home tier. */
static int to_home(struct zn_trainer *t, struct tstate *s)
{
	void *buf;
	int rc = zn_swapper_acquire(t->psw, s->home, &buf);
	if (rc)
		return rc;
	memcpy(buf, s->master, s->d.numel * 4);
	return zn_swapper_release(t->psw, s->home, true);
}

static int param_homes_setup(struct zn_trainer *t)
{
	const struct zn_offload_param_config *pc = &t->cfg.zero_optimization.offload_param;
	bool nvme = pc->device == ZN_OFFLOAD_NVME;
	struct zn_swapper_config swc = { .trace = t->trace };
	int rc;

	uint64_t most = 0;
	for (unsigned i = 0; i < t->nt; i++)
		most = ZN_MAX(most, t->t[i].d.numel);
	t->fetched = calloc(t->nlayers, sizeof(*t->fetched));
	t->has_grads = calloc(t->nlayers, sizeof(*t->has_grads));
	t->gstage = malloc(most * 4);
	if (!t->fetched || !t->has_grads || !t->gstage)
		return zn_error(-ENOMEM, "out of memory");
	if (nvme) {
		char buf[ZN_NVME_PATH_MAX];
		const char *paths[16];
		int np = zn_nvme_paths_split(pc->nvme_path, buf, paths, 16);
		if (np < 1)
			return zn_error(-EINVAL, "zero_optimization.offload_param.nvme_path: give the "
						 "directory for the parameters' swap files");
		uint64_t largest = 0, bytes = 0;
		const char *name = "";
		for (unsigned i = 0; i < t->nt; i++) {
			if (t->t[i].d.numel > largest) {
				largest = t->t[i].d.numel;
				name = t->t[i].d.name;
			}
			bytes += ZN_ALIGN_UP(t->t[i].d.numel * 4, 4096);
		}
		struct zn_bufpool_config bc;
		if ((rc = zn_offload_param_pool(pc, largest, name, 4, 1, &bc)))
			return rc;
		t->paio = zn_aio_create(&t->cfg.aio);
		if (!t->paio)
			return -EINVAL;
		struct zn_store_config sc = { .paths = paths, .npaths = (unsigned)np,
					      .capacity = bytes, .stripe_bytes = pc->stripe_size,
					      .checksum = pc->checksum };
		t->pstore = zn_store_create(&sc, t->paio);
		t->ppool = t->pstore ? zn_bufpool_create(&bc, t->paio) : NULL;
		if (!t->pstore || !t->ppool)
			return -EINVAL;
		swc.store = t->pstore;
		swc.pool = t->ppool;
	}
	t->psw = zn_swapper_create(&swc);
	if (!t->psw)
		return -EINVAL;
	for (unsigned i = 0; i < t->nt; i++) {
		struct tstate *s = &t->t[i];
		if ((rc = zn_swapper_add(t->psw, s->d.name, s->d.numel * 4,
					 nvme ? ZN_TIER_NVME : ZN_TIER_HOST, &s->home)) ||
		    (rc = to_home(t, s)))
			return rc;
	}
	return zn_swapper_flush(t->psw);
}

/* ---- optimizer states on NVMe (offload_optimizer: nvme) ------------------ */

/* Copy elements [first, first + n) of the flat order between the tensors'
 * host arrays (which: 0 master, 1 exp_avg, 2 exp_avg_sq) and buf; a tensor
 * without that array reads as zeros. */
static void flat_copy(struct zn_trainer *t, int which, uint64_t first, uint64_t n, float *buf,
		      bool to_buf)
{
	for (unsigned i = 0; i < t->nt; i++) {
		struct tstate *s = &t->t[i];
		uint64_t a = ZN_MAX(first, s->flat), b = ZN_MIN(first + n, s->flat + s->d.numel);
		if (a >= b)
			continue;
		float *arr = which == 0 ? s->master : which == 1 ? s->m : s->v;
		float *fb = buf + (a - first);
		if (!to_buf)
			memcpy(arr + (a - s->flat), fb, (b - a) * 4);
		else if (arr)
			memcpy(fb, arr + (a - s->flat), (b - a) * 4);
		else
			memset(fb, 0, (b - a) * 4);
	}
}

static void free_moments(struct zn_trainer *t)
{
	for (unsigned i = 0; i < t->nt; i++) {
		free(t->t[i].m);
		free(t->t[i].v);
		t->t[i].m = t->t[i].v = NULL;
	}
}

/* Move every group's states between NVMe and the tensors' host arrays
 * (m and v allocated for the occasion when `to_nvme` is false). */
static int nvme_transfer(struct zn_trainer *t, bool to_nvme)
{
	uint64_t sub = t->cfg.zero_optimization.sub_group_size;
	if (!sub || sub > t->total)
		sub = t->total;
	float *st[3];
	int rc = 0;
	for (int k = 0; k < 3; k++)
		st[k] = malloc(sub * 4);
	for (unsigned i = 0; i < t->nt && !to_nvme && st[2]; i++) {
		struct tstate *s = &t->t[i];
		if (!s->m)
			s->m = malloc(s->d.numel * 4);
		if (!s->v)
			s->v = malloc(s->d.numel * 4);
		if (!s->m || !s->v)
			rc = zn_error(-ENOMEM, "out of host memory staging the optimizer state");
	}
	if (!st[0] || !st[1] || !st[2])
		rc = zn_error(-ENOMEM, "out of host memory for a sub-group of %" PRIu64 " elements",
			      sub);
	for (uint64_t g = 0; !rc && g < zn_optswap_groups(t->os); g++) {
		uint64_t first = g * sub, n = ZN_MIN(sub, t->total - first);
		if (to_nvme) {
			for (int k = 0; k < 3; k++)
				flat_copy(t, k, first, n, st[k], true);
			rc = zn_optswap_write_group(t->os, g, (const float *const *)st);
		} else if (!(rc = zn_optswap_read_group(t->os, g, st))) {
			for (int k = 0; k < 3; k++)
				flat_copy(t, k, first, n, st[k], false);
		}
	}
	for (int k = 0; k < 3; k++)
		free(st[k]);
	return rc;
}

static int nvme_setup(struct zn_trainer *t)
{
	const struct zn_offload_optimizer_config *oc =
		&t->cfg.zero_optimization.offload_optimizer;
	char buf[ZN_NVME_PATH_MAX];
	const char *paths[16];
	int np = zn_nvme_paths_split(oc->nvme_path, buf, paths, 16);
	if (np < 1)
		return zn_error(-EINVAL, "zero_optimization.offload_optimizer.nvme_path: give the "
					 "directory (or directories, separated by ',') for the "
					 "optimizer states");
	t->aio = zn_aio_create(&t->cfg.aio);
	if (!t->aio)
		return -EINVAL;
	uint64_t sub = t->cfg.zero_optimization.sub_group_size;
	if (!sub || sub > t->total)
		sub = t->total;
	struct zn_optswap_config c = {
		.aio = t->aio, .params = t->total, .sub_group_size = sub, .nstates = 3,
		.buffer_count = oc->buffer_count, .pipeline_read = oc->pipeline_read,
		.pipeline_write = oc->pipeline_write, .pin_memory = oc->pin_memory,
		.trace = t->trace,
	};
	struct zn_store_config sc = { .paths = paths, .npaths = (unsigned)np,
				      .capacity = zn_optswap_store_bytes(&c),
				      .stripe_bytes = oc->stripe_size, .checksum = oc->checksum };
	t->store = zn_store_create(&sc, t->aio);
	if (!t->store)
		return -EINVAL;
	c.store = t->store;
	t->os = zn_optswap_create(&c);
	if (!t->os)
		return -EINVAL;
	/* Initial (or resumed) states go to NVMe; host keeps no moments. */
	int rc = nvme_transfer(t, true);
	free_moments(t);
	return rc;
}

struct nvme_update {
	struct zn_trainer *t;
	const struct zn_adam_hparams *hp;
	float grad_scale;
	struct zn_adam_exec *ex;
};

/* One sub-group's update: AdamW over each tensor's part of the group (its
 * own weight decay), and the new master copied to the tensor's host array
 * for the device. */
static int nvme_update(void *user, uint64_t group, uint64_t first, uint64_t n,
		       float *const *st)
{
	struct nvme_update *u = user;
	struct zn_trainer *t = u->t;
	(void)group;
	for (unsigned i = 0; i < t->nt; i++) {
		struct tstate *s = &t->t[i];
		uint64_t a = ZN_MAX(first, s->flat), b = ZN_MIN(first + n, s->flat + s->d.numel);
		if (a >= b)
			continue;
		uint64_t o = a - first, l = a - s->flat;
		struct zn_adam_hparams h = *u->hp;
		if (!s->d.decay)
			h.weight_decay = 0;
		struct zn_adam_tensors at = { .n = b - a, .param = st[0] + o, .grad = s->grad + l,
					      .grad_dtype = ZN_ADAM_FP32, .exp_avg = st[1] + o,
					      .exp_avg_sq = st[2] + o };
		int rc = zn_adam_step(&h, t->updates + 1, u->grad_scale, &at, u->ex);
		if (rc)
			return rc;
		memcpy(s->master + l, st[0] + o, (b - a) * 4);
	}
	return 0;
}

/* ---- one step ------------------------------------------------------------------ */

static int micro(struct zn_trainer *t, struct zn_data *d, bool backward, float scale_den,
		 double *loss)
{
	const size_t BT = (size_t)t->B * (size_t)t->T;
	const float *dloss;
	int rc = 0;
	if (t->synthetic) {
		/* xorshift tokens: a benchmark needs shapes, not meaning. */
		for (size_t i = 0; i < BT; i++) {
			t->rng ^= t->rng << 13;
			t->rng ^= t->rng >> 7;
			t->rng ^= t->rng << 17;
			t->hin[i] = (int32_t)(t->rng % (uint64_t)t->mcfg.vocab_size);
			t->htgt[i] = (int32_t)((t->rng >> 20) % (uint64_t)t->mcfg.vocab_size);
		}
	} else if ((rc = zn_data_next_batch(d, t->hin, t->htgt)) != 0) {
		return rc;
	}
	unsigned counted = 0;
	for (size_t i = 0; i < BT; i++)
		counted += t->htgt[i] >= 0;
	if ((rc = to_device(t, t->din, t->hin, BT * 4)) || (rc = to_device(t, t->dtgt, t->htgt, BT * 4)))
		return rc;
	struct zn_param_source src = { t, fetch, release };
	/* DeepSpeed's scaling: each micro-batch's mean loss, divided by the
	 * accumulation steps. */
	float gs = counted ? (float)(backward ? t->scaler.scale : 1.0) /
				     ((float)counted * scale_den)
			   : 0.0f;
	uint64_t t0 = zn_now_ns();
	t->direction = 1;
	rc = zn_gpt2_forward(t->model, &src, t->din, t->dtgt, NULL, backward, gs, &dloss);
	uint64_t t1 = zn_now_ns();
	zn_trace_span(t->trace, backward ? "forward" : "eval", "compute", "device", t0, t1, 0);
	if (!rc && backward) {
		t->direction = -1;
		rc = zn_gpt2_backward(t->model, &src, t->din);
		zn_trace_span(t->trace, "backward", "compute", "device", t1, zn_now_ns(), 0);
	}
	if (!rc)
		rc = zn_device_stream_synchronize(t->stream);
	if (!rc)
		rc = to_host(t, t->hloss, dloss, BT * 4);
	if (rc)
		return rc;
	double sum = 0;
	for (size_t i = 0; i < BT; i++)
		sum += t->hloss[i];
	*loss = counted ? sum / counted : 0;
	return 0;
}

int zn_trainer_step(struct zn_trainer *t, struct zn_step_info *out)
{
	uint64_t t0 = zn_now_ns();
	double loss_sum = 0;
	int rc;

	for (unsigned i = 0; i < t->nt; i++) {
		/* offload_param: gradients accumulate on the host, per layer. */
		if (t->offload_param)
			memset(t->t[i].grad, 0, t->t[i].d.numel * 4);
		else if ((rc = zn_device_memset(t->dev, t->t[i].dgrad, 0, t->t[i].d.numel * 4,
						NULL)))
			return rc;
	}
	for (uint32_t a = 0; a < t->accum; a++) {
		double l;
		if ((rc = micro(t, t->train, true, (float)t->accum, &l)))
			return rc;
		loss_sum += l;
	}
	/* Gradients in the training dtype, then to the host; global norm over
	 * every tensor (of the scaled gradients). */
	double sumsq = 0;
	bool finite = true;
	struct zn_adam_exec ex = { .pool = t->pool };
	const double scale = t->scaler.scale;
	uint64_t tg = zn_now_ns();
	if (t->device_opt) {
		/* Norm and overflow check on the device; two scalars come back. */
		double zero = 0;
		int32_t flag = 0;
		if ((rc = to_device(t, t->dsumsq, &zero, sizeof(zero))) ||
		    (rc = to_device(t, t->dflag, &flag, sizeof(flag))))
			return rc;
		for (unsigned i = 0; i < t->nt; i++) {
			struct tstate *s = &t->t[i];
			if ((rc = round_to_dtype(t, s->dgrad, s->d.numel)) ||
			    (rc = t->k->sumsq(t->kctx, t->dsumsq, s->dgrad, ZN_DTYPE_F32, s->d.numel)) ||
			    (rc = t->k->nonfinite(t->kctx, t->dflag, s->dgrad, ZN_DTYPE_F32,
						  s->d.numel)))
				return rc;
		}
		if ((rc = zn_device_stream_synchronize(t->stream)) ||
		    (rc = to_host(t, &sumsq, t->dsumsq, sizeof(sumsq))) ||
		    (rc = to_host(t, &flag, t->dflag, sizeof(flag))))
			return rc;
		finite = flag == 0 && isfinite(sumsq);
	}
	for (unsigned i = 0; i < t->nt && !t->device_opt; i++) {
		struct tstate *s = &t->t[i];
		struct zn_adam_grad_stats gst;
		/* offload_param: already on the host, rounded at release. */
		if (!t->offload_param &&
		    ((rc = round_to_dtype(t, s->dgrad, s->d.numel)) ||
		     (rc = zn_device_stream_synchronize(t->stream)) ||
		     (rc = to_host(t, s->grad, s->dgrad, s->d.numel * 4))))
			return rc;
		if ((rc = zn_adam_grad_check(s->grad, ZN_ADAM_FP32, s->d.numel, &ex, &gst)))
			return rc;
		sumsq += gst.sumsq;
		finite &= gst.finite;
	}
	zn_trace_span(t->trace, "gradients to host", "copy", "copies", tg, zn_now_ns(), 0);
	double norm = sqrt(sumsq) / scale;
	bool skipped = false;
	if (!finite && t->dtype != ZN_DTYPE_F16)
		return zn_error(-ERANGE, "step %" PRIu64 ": the gradients hold Inf or NaN (the loss "
					 "diverged); lower optimizer.params.lr or set "
					 "gradient_clipping",
				t->step + 1);
	if (!finite) {
		/* fp16 overflow: skip the update, lower the scale (DeepSpeed). */
		skipped = true;
		rc = zn_loss_scaler_update(&t->scaler, true);
		if (rc)
			return zn_error(rc, "step %" PRIu64 ": fp16 gradients overflow even at the "
					    "minimum loss scale %g; raise fp16.min_loss_scale "
					    "or train in bf16",
					t->step + 1, t->scaler.min_scale);
		zn_info("step %" PRIu64 ": fp16 gradient overflow; step skipped, loss scale "
			"lowered to %g", t->step + 1, t->scaler.scale);
	}
	/* DeepSpeed's clipping: scale by max_norm / (norm + 1e-6) when below 1. */
	float clip = 1.0f;
	if (t->cfg.gradient_clipping > 0 && norm > t->cfg.gradient_clipping)
		clip = (float)(t->cfg.gradient_clipping / (norm + 1e-6));
	struct zn_adam_hparams hp = t->hp;
	hp.lr = zn_lr_at(&t->sched, t->updates);
	uint64_t ta = zn_now_ns();
	if (t->os && !skipped) {
		struct nvme_update u = { t, &hp, (float)(clip / scale), &ex };
		if ((rc = zn_optswap_step(t->os, nvme_update, &u)))
			return rc;
		for (unsigned i = 0; i < t->nt; i++)
			if (t->offload_param ? (rc = to_home(t, &t->t[i])) != 0
					     : ((rc = to_device(t, t->t[i].dparam, t->t[i].master,
								t->t[i].d.numel * 4)) ||
						(rc = round_to_dtype(t, t->t[i].dparam,
								     t->t[i].d.numel))))
				return rc;
	}
	for (unsigned i = 0; i < t->nt && !skipped && !t->os; i++) {
		struct tstate *s = &t->t[i];
		struct zn_adam_hparams h = hp;
		/* Weight decay on matrices only, as GPT-2/llm.c (not biases,
		 * layernorms). */
		if (!s->d.decay)
			h.weight_decay = 0;
		if (t->device_opt) {
			/* On the device: the kernels' Adam, then the new master
			 * becomes the parameters. */
			if ((rc = t->k->adam(t->kctx, &h, t->updates + 1, (float)(clip / scale),
					     s->dmaster, s->dgrad, s->dm, s->dv, s->d.numel)) ||
			    (rc = zn_device_stream_synchronize(t->stream)) ||
			    (rc = zn_device_copy_async(t->dev, s->dparam, s->dmaster, s->d.numel * 4,
						       ZN_COPY_DEVICE_TO_DEVICE, NULL)) ||
			    (rc = round_to_dtype(t, s->dparam, s->d.numel)))
				return rc;
			continue;
		}
		struct zn_adam_tensors at = { .n = s->d.numel, .param = s->master, .grad = s->grad,
					      .grad_dtype = ZN_ADAM_FP32, .exp_avg = s->m,
					      .exp_avg_sq = s->v };
		/* Unscale and clip, fused into the update. */
		if ((rc = zn_adam_step(&h, t->updates + 1, (float)(clip / scale), &at, &ex)))
			return rc;
		if (t->offload_param)
			rc = to_home(t, s);
		else if (!(rc = to_device(t, s->dparam, s->master, s->d.numel * 4)))
			rc = round_to_dtype(t, s->dparam, s->d.numel);
		if (rc)
			return rc;
	}
	zn_trace_span(t->trace, skipped ? "skipped (overflow)" : "adam + params to device",
		      "optimizer", "host", ta, zn_now_ns(), 0);
	if (!skipped) {
		t->updates++;
		if ((rc = zn_loss_scaler_update(&t->scaler, false)))
			return rc;
	}
	t->step++;
	if (out) {
		struct zn_device_memstats ms;
		zn_device_memstats(t->dev, &ms);
		*out = (struct zn_step_info){
			.step = t->step, .loss = loss_sum / t->accum, .lr = hp.lr, .grad_norm = norm,
			.tokens = (uint64_t)t->B * (uint64_t)t->T * t->accum,
			.step_s = (double)(zn_now_ns() - t0) / 1e9, .device_bytes = ms.in_use,
			.device_peak = ms.peak, .host_bytes = t->host_bytes,
			.loss_scale = scale, .skipped = skipped,
		};
	}
	return 0;
}

int zn_trainer_eval(struct zn_trainer *t, double *loss)
{
	if (!t->val)
		return zn_error(-ENOENT, "data.val: no validation data configured");
	uint64_t n = t->cfg.data.val_steps ? t->cfg.data.val_steps
					   : zn_data_batches_per_epoch(t->val);
	double sum = 0;
	zn_data_rewind(t->val);
	for (uint64_t i = 0; i < n; i++) {
		double l;
		int rc = micro(t, t->val, false, 1.0f, &l);
		if (rc)
			return rc;
		sum += l;
	}
	*loss = n ? sum / (double)n : 0;
	return 0;
}

/* Checkpoint metadata carries small binary structs (data position, loss
 * scaler) as hex strings. */
static void hex_encode(const void *p, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		snprintf(out + 2 * i, 3, "%02x", ((const uint8_t *)p)[i]);
}

static int hex_decode(const char *hex, void *p, size_t n)
{
	if (!hex || strlen(hex) != 2 * n)
		return -1;
	for (size_t i = 0; i < n; i++) {
		unsigned b;
		if (sscanf(hex + 2 * i, "%2x", &b) != 1)
			return -1;
		((uint8_t *)p)[i] = (uint8_t)b;
	}
	return 0;
}

/* ---- checkpoints ------------------------------------------------------------- */

/* HF stores c_attn / c_proj / c_fc transposed: (C, OC). */
static float *hf_layout(const struct tstate *s, const struct zn_gpt2_config *c, uint64_t *rows)
{
	const int64_t R = s->d.shape[0], Cc = s->d.shape[1];
	*rows = (uint64_t)R;
	if (strcmp(s->d.name, "wte.weight") == 0)
		*rows = (uint64_t)c->vocab_size; /* the padded rows are zinc's own */
	if (!s->d.hf_transposed)
		return NULL;
	float *o = malloc(s->d.numel * 4);
	if (!o)
		return NULL;
	for (int64_t r = 0; r < R; r++)
		for (int64_t k = 0; k < Cc; k++)
			o[k * R + r] = s->master[r * Cc + k];
	return o;
}

int zn_trainer_save(struct zn_trainer *t)
{
	if (!t->cfg.checkpoint.dir[0])
		return zn_error(-EINVAL, "checkpoint.dir: not set; nowhere to save");
	/* The device optimizer's state is staged in the host arrays. */
	for (unsigned i = 0; i < t->nt && t->device_opt; i++) {
		struct tstate *s = &t->t[i];
		int r;
		if ((r = to_host(t, s->master, s->dmaster, s->d.numel * 4)) ||
		    (r = to_host(t, s->m, s->dm, s->d.numel * 4)) ||
		    (r = to_host(t, s->v, s->dv, s->d.numel * 4)))
			return r;
	}
	/* NVMe-resident states are staged through host memory for the file. */
	if (t->os) {
		int r = nvme_transfer(t, false);
		if (r) {
			free_moments(t);
			return r;
		}
	}
	struct zn_ckpt *c = zn_ckpt_begin(t->cfg.checkpoint.dir, t->step);
	if (!c) {
		if (t->os)
			free_moments(t);
		return -EIO;
	}
	struct zn_st_tensor *mt = calloc(t->nt, sizeof(*mt));
	struct zn_st_tensor *ot = calloc(3 * (size_t)t->nt, sizeof(*ot));
	char (*names)[ZN_PARAM_NAME_MAX + 24] = calloc(4 * (size_t)t->nt, sizeof(*names));
	float **tmp = calloc(t->nt, sizeof(float *));
	int rc = 0;
	if (!mt || !ot || !names || !tmp) {
		rc = zn_error(-ENOMEM, "out of memory");
		goto out;
	}
	for (unsigned i = 0; i < t->nt; i++) {
		const struct tstate *s = &t->t[i];
		uint64_t rows;
		tmp[i] = hf_layout(s, &t->mcfg, &rows);
		snprintf(names[4 * i], sizeof(names[0]), "transformer.%s", s->d.name);
		mt[i] = (struct zn_st_tensor){ .name = names[4 * i], .dtype = ZN_ST_F32,
					       .ndim = s->d.ndim };
		if (s->d.hf_transposed) {
			mt[i].shape[0] = (uint64_t)s->d.shape[1];
			mt[i].shape[1] = (uint64_t)s->d.shape[0];
			mt[i].data = tmp[i];
		} else {
			mt[i].shape[0] = rows;
			mt[i].shape[1] = (uint64_t)s->d.shape[1];
			mt[i].data = s->master;
		}
		mt[i].bytes = (s->d.ndim == 2 ? mt[i].shape[0] * mt[i].shape[1] : rows) * 4;
		if (s->d.hf_transposed && !tmp[i]) {
			rc = zn_error(-ENOMEM, "out of memory");
			goto out;
		}
		const float *arr[3] = { s->master, s->m, s->v };
		static const char *const suf[3] = { "master", "exp_avg", "exp_avg_sq" };
		for (int k = 0; k < 3; k++) {
			snprintf(names[4 * i + 1 + k], sizeof(names[0]), "%s.%s", s->d.name, suf[k]);
			ot[3 * i + k] = (struct zn_st_tensor){
				.name = names[4 * i + 1 + k], .dtype = ZN_ST_F32, .ndim = 1,
				.shape = { s->d.numel }, .data = arr[k], .bytes = s->d.numel * 4 };
		}
	}
	struct zn_data_pos pos;
	memset(&pos, 0, sizeof(pos));
	if (t->train)
		zn_data_tell(t->train, &pos);
	char step[32], updates[32], shape[128], hex[2 * sizeof(pos) + 1];
	char shex[2 * sizeof(t->scaler) + 1];
	hex_encode(&pos, sizeof(pos), hex);
	hex_encode(&t->scaler, sizeof(t->scaler), shex);
	snprintf(step, sizeof(step), "%" PRIu64, t->step);
	snprintf(updates, sizeof(updates), "%" PRIu64, t->updates);
	snprintf(shape, sizeof(shape), "gpt2 n_layer=%d n_head=%d n_embd=%d vocab_size=%d "
				       "seq_len=%d", t->mcfg.n_layer, t->mcfg.n_head,
		 t->mcfg.n_embd, t->mcfg.vocab_size, t->mcfg.max_seq_len);
	struct zn_st_meta mmeta[1] = { { "format", "pt" } };
	struct zn_st_meta ometa[6] = { { "zinc.step", step }, { "zinc.data_pos", hex },
				       { "zinc.model", shape }, { "zinc.version", zn_version() },
				       { "zinc.updates", updates }, { "zinc.loss_scaler", shex } };
	rc = zn_st_write(zn_ckpt_file(c, "model.safetensors"), mt, t->nt, mmeta, 1);
	if (!rc)
		rc = zn_st_write(zn_ckpt_file(c, "optimizer.safetensors"), ot, 3 * (size_t)t->nt,
				 ometa, 6);
out:
	if (rc) {
		zn_ckpt_abort(c);
	} else {
		rc = zn_ckpt_commit(c);
		if (!rc && t->cfg.checkpoint.keep)
			zn_ckpt_prune(t->cfg.checkpoint.dir, t->cfg.checkpoint.keep);
	}
	for (unsigned i = 0; tmp && i < t->nt; i++)
		free(tmp[i]);
	free(tmp);
	free(names);
	free(mt);
	free(ot);
	if (t->os)
		free_moments(t);
	return rc;
}

static int load_checkpoint(struct zn_trainer *t, const char *dir)
{
	char path[4200], shape[128];
	snprintf(path, sizeof(path), "%s/optimizer.safetensors", dir);
	struct zn_st_file *f = zn_st_open(path);
	if (!f)
		return -EINVAL;
	int rc = 0;
	snprintf(shape, sizeof(shape), "gpt2 n_layer=%d n_head=%d n_embd=%d vocab_size=%d "
				       "seq_len=%d", t->mcfg.n_layer, t->mcfg.n_head,
		 t->mcfg.n_embd, t->mcfg.vocab_size, t->mcfg.max_seq_len);
	const char *ms = zn_st_metadata(f, "zinc.model");
	const char *st = zn_st_metadata(f, "zinc.step");
	const char *hex = zn_st_metadata(f, "zinc.data_pos");
	if (!ms || strcmp(ms, shape) != 0) {
		rc = zn_error(-EINVAL, "checkpoint '%s' is of a different model (%s) than the config "
				       "(%s); point checkpoint.dir elsewhere or set "
				       "checkpoint.resume: false", dir, ms ? ms : "unknown", shape);
		goto out;
	}
	struct zn_data_pos pos;
	if (!st || hex_decode(hex, &pos, sizeof(pos))) {
		rc = zn_error(-EINVAL, "checkpoint '%s' lacks its step or data position", dir);
		goto out;
	}
	for (unsigned i = 0; i < t->nt && !rc; i++) {
		struct tstate *s = &t->t[i];
		/* With NVMe states the moments are staged here until nvme_setup
		 * writes them out. */
		if (!s->m)
			s->m = malloc(s->d.numel * 4);
		if (!s->v)
			s->v = malloc(s->d.numel * 4);
		if (!s->m || !s->v) {
			rc = zn_error(-ENOMEM, "out of memory loading '%s'", dir);
			break;
		}
		float *arr[3] = { s->master, s->m, s->v };
		static const char *const suf[3] = { "master", "exp_avg", "exp_avg_sq" };
		for (int k = 0; k < 3; k++) {
			char name[ZN_PARAM_NAME_MAX + 24];
			snprintf(name, sizeof(name), "%s.%s", s->d.name, suf[k]);
			const struct zn_st_tensor *x = zn_st_find(f, name);
			if (!x || x->dtype != ZN_ST_F32 || x->bytes != s->d.numel * 4) {
				rc = zn_error(-EINVAL, "checkpoint '%s': tensor '%s' is missing or "
						       "has the wrong shape", dir, name);
				break;
			}
			memcpy(arr[k], x->data, x->bytes);
		}
	}
	if (!rc && t->train)
		rc = zn_data_seek(t->train, &pos);
	const char *up = zn_st_metadata(f, "zinc.updates");
	const char *sc = zn_st_metadata(f, "zinc.loss_scaler");
	if (!rc && (!up || hex_decode(sc, &t->scaler, sizeof(t->scaler))))
		rc = zn_error(-EINVAL, "checkpoint '%s' lacks its update count or loss scaler", dir);
	if (!rc) {
		t->step = strtoull(st, NULL, 10);
		t->updates = strtoull(up, NULL, 10);
	}
out:
	zn_st_close(f);
	return rc;
}

/* llm.c's GPT-2 checkpoint (train_gpt2.c, gpt2_124M.bin): a 256-int32
 * header {20240326, version 3 = fp32, maxT, V, L, NH, C, Vp}, then every
 * parameter as one array per kind over all layers, in this order: wte
 * (Vp,C), wpe (maxT,C), ln1w, ln1b, qkvw (L,3C,C), qkvb, attprojw (L,C,C),
 * attprojb, ln2w, ln2b, fcw (L,4C,C), fcb, fcprojw (L,C,4C), fcprojb, lnfw,
 * lnfb.  Its matrices are (OC, C), zinc's layout. */
#define LLMC_MAGIC 20240326
static int load_llmc(struct zn_trainer *t, const char *path)
{
	FILE *f = fopen(path, "rb");
	int32_t h[256];
	int rc = 0;
	if (!f)
		return zn_error(-errno, "cannot open '%s': %s", path, strerror(errno));
	if (fread(h, 4, 256, f) != 256 || h[0] != LLMC_MAGIC) {
		fclose(f);
		return zn_error(-EINVAL, "'%s' is not an llm.c GPT-2 checkpoint (magic %d)", path,
				LLMC_MAGIC);
	}
	const struct zn_gpt2_config *c = &t->mcfg;
	if (h[1] != 3) {
		fclose(f);
		return zn_error(-EINVAL, "'%s': llm.c checkpoint version %d; only version 3 (fp32) "
					 "is read", path, h[1]);
	}
	if (h[2] != c->max_seq_len || h[3] != c->vocab_size || h[4] != c->n_layer ||
	    h[5] != c->n_head || h[6] != c->n_embd || h[7] != c->padded_vocab) {
		fclose(f);
		return zn_error(-EINVAL, "'%s' holds GPT-2 maxT %d, V %d, L %d, NH %d, C %d, Vp %d; "
					 "set the model section to match (seq_len, vocab_size, "
					 "n_layer, n_head, n_embd)",
				path, h[2], h[3], h[4], h[5], h[6], h[7]);
	}
	/* The 12 per-layer kinds run over all layers before the next kind; their
	 * order is zinc's tensor order within a block. */
	const unsigned L = (unsigned)c->n_layer;
	for (unsigned e = 0; e < 2 && !rc; e++) /* wte, wpe */
		if (fread(t->t[t->first[0] + e].master, 4, t->t[t->first[0] + e].d.numel, f) !=
		    t->t[t->first[0] + e].d.numel)
			rc = -EIO;
	for (unsigned k = 0; k < 12 && !rc; k++)
		for (unsigned l = 0; l < L && !rc; l++) {
			struct tstate *s = &t->t[t->first[l + 1] + k];
			if (fread(s->master, 4, s->d.numel, f) != s->d.numel)
				rc = -EIO;
		}
	for (unsigned e = 0; e < 2 && !rc; e++) { /* ln_f */
		struct tstate *s = &t->t[t->first[L + 1] + e];
		if (fread(s->master, 4, s->d.numel, f) != s->d.numel)
			rc = -EIO;
	}
	fclose(f);
	if (rc)
		return zn_error(rc, "'%s' is truncated: shorter than its header's model", path);
	return 0;
}

/* Fine-tuning: a Hugging Face GPT-2 model.safetensors (names with or
 * without "transformer."; Conv1D weights transposed back), or llm.c's
 * .bin checkpoint. */
static int load_pretrained(struct zn_trainer *t, const char *path)
{
	size_t n = strlen(path);
	if (n > 4 && strcmp(path + n - 4, ".bin") == 0)
		return load_llmc(t, path);
	struct zn_st_file *f = zn_st_open(path);
	int rc = 0;
	if (!f)
		return -EINVAL;
	for (unsigned i = 0; i < t->nt && !rc; i++) {
		struct tstate *s = &t->t[i];
		char name[ZN_PARAM_NAME_MAX + 16];
		snprintf(name, sizeof(name), "transformer.%s", s->d.name);
		const struct zn_st_tensor *x = zn_st_find(f, name);
		if (!x)
			x = zn_st_find(f, s->d.name);
		uint64_t rows = (uint64_t)s->d.shape[0];
		if (strcmp(s->d.name, "wte.weight") == 0)
			rows = (uint64_t)t->mcfg.vocab_size;
		uint64_t want = s->d.ndim == 2 ? rows * (uint64_t)s->d.shape[1] : rows;
		if (!x || x->dtype != ZN_ST_F32 || x->bytes != want * 4) {
			rc = zn_error(-EINVAL, "'%s': tensor '%s' is missing, not F32, or not of the "
					       "config's shape (%" PRIu64 " elements); check the "
					       "model section against the file", path, name, want);
			break;
		}
		const float *src = x->data;
		if (s->d.hf_transposed) {
			const int64_t R = s->d.shape[0], Cc = s->d.shape[1];
			for (int64_t r = 0; r < R; r++)
				for (int64_t k = 0; k < Cc; k++)
					s->master[r * Cc + k] = src[k * R + r];
		} else {
			memset(s->master, 0, s->d.numel * 4);
			memcpy(s->master, src, x->bytes);
		}
	}
	zn_st_close(f);
	return rc;
}
