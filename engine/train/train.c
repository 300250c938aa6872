/* The trainer (see include/zinc/train.h). */
#include "zn_common.h"
#include "zn_build.h"

#include "model/arch.h"
#include "zero/zero.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <glob.h>
#include <sys/stat.h>
#include <unistd.h>

#include "zn_half.h"
#include "zinc/adam.h"
#include "zinc/checkpoint.h"
#include "zinc/comm.h"
#include "zinc/data.h"
#include "zinc/hf.h"
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

/* Where each tensor's state lives:
 *   device params, grads     fp32 on the device (offload_param: only while
 *                            its layer is fetched)
 *   master, m, v             host (offload_optimizer cpu; device optimizer:
 *                            checkpoint staging), or NVMe in the optimizer
 *                            swapper's sub-groups (offload_optimizer nvme:
 *                            no host copy at all)
 *   grad                     host gradient accumulator in grad_accum_dtype
 *                            (offload_optimizer cpu/nvme)
 *   home                     offload_param: the parameters in the training
 *                            dtype, on host or NVMe */
struct tstate {
	struct zn_param_desc d;
	void *dparam, *dgrad;          /* device, fp32 */
	void *sparam, *sgrad;          /* 16-bit storage (t->sdt): what the model
	                                * gets -- dparam cast at each fetch, and
	                                * gradients folded into dgrad at each
	                                * release (then zeroed) */
	bool sdirty;                   /* sgrad was handed out since its last fold */
	float *master, *m, *v;         /* host, see above */
	void *grad;                    /* host, t->gdt */
	float *dmaster, *dm, *dv;      /* device optimizer only */
	uint64_t flat;                 /* offset in the model's flat element order */
	struct zn_tensor *home;        /* offload_param: the parameters' home tier */
	bool resident;                 /* on the device for good (no offload_param, or
					* under stage3_param_persistence_threshold) */
	void *hbuf;                    /* home buffer held across optimizer sub-groups */
	float *dhome;                  /* stage 3 on several ranks without offload_param:
					* this rank's part, fp32, on the device */
	float *staged;                 /* overlapped update: a resident tensor's new
					* parameters, for the compute thread to apply */
	bool pending;                  /* staged holds an update not applied yet */
	struct zn_trainer *owner;
	/* ZeRO partitioning over W ranks: every tensor is cut into W parts of
	 * `part` = ceil(numel / W) elements (the last ones shorter or empty);
	 * this rank owns elements [lo, lo + nown).  Its optimizer states
	 * (master, m, v), gradient accumulator, staged values and (stage 3)
	 * home hold only those; `oflat` is their offset in the rank's own
	 * flat order (the optimizer swapper's).  One rank: lo 0, nown = part
	 * = numel, oflat = flat. */
	uint64_t lo, nown, part, oflat;
	bool dev_grads;                /* gradients accumulate on the device over a
					* step's micro-batches (resident tensors, one
					* rank or stage <= 1); else they leave at each
					* release */
	bool sync;                     /* several ranks: its parameters must be
					* all-gathered after this update */
};

/* Device buffers whose gradients are still crossing on the copy stream:
 * freed once `ev` (recorded after their copies) completes. */
#define GRAD_FLIGHTS 3
#define GATHER_SLOTS 4
struct grad_flight {
	void *p[2 * ZN_ARCH_LAYER_TENSORS_MAX];
	unsigned n;
	struct zn_event *ev;
};

struct nvme_update {
	struct zn_trainer *t;
	struct zn_adam_hparams hp;
	float grad_scale;
	uint64_t step;                 /* Adam's step of this update */
	struct zn_adam_exec ex;
};

struct zn_trainer {
	struct zn_config cfg;
	struct zn_arch arch;           /* the model's architecture and shape */
	int B, T;
	uint32_t accum;
	struct zn_device *dev;
	struct zn_stream *stream;
	enum zn_dtype sdt;             /* the model's storage dtype on the device:
	                                * F32, or the 16-bit training dtype on
	                                * cuda (tstate's sparam/sgrad) */
	const struct zn_kernels *k;
	struct zn_kctx *kctx;
	struct zn_arch_model model;
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
	bool layered;                  /* fetch/release per layer do work: offload_param,
					* or gradients that leave at each release */
	struct zn_aio *paio;
	struct zn_store *pstore;
	struct zn_bufpool *ppool;
	struct zn_swapper *psw;
	unsigned *fetched;             /* per layer: outstanding fetches */
	bool *has_grads;               /* per layer: device gradient buffers exist */
	int direction;                 /* +1 forward, -1 backward: what to prefetch */
	float *gstage;                 /* host staging for a layer's gradients (largest tensor) */
	double *dsumsq;                /* device optimizer: the norm's accumulator */
	float *dgscratch;              /* device optimizer, several ranks: reduced gradients */
	int32_t *dflag;                /* device optimizer: non-finite flag */
	bool nvme_opt;                 /* offload_optimizer: nvme (no host master/m/v) */
	enum zn_dtype gdt;             /* host gradient accumulators (grad_accum_dtype) */
	enum zn_dtype hdt;             /* offload_param homes: the training dtype */
	uint32_t micro_i;              /* micro-batch of the step being run */
	uint64_t largest;              /* elements of the largest tensor */
	/* Where the starting weights come from while the trainer is built. */
	struct zn_st_file *src_ckpt;   /* checkpoint.resume: optimizer.safetensors */
	struct zn_st_file **src_shards; /* ... or the parts of src_world ranks */
	int src_world;
	struct zn_st_file *src_st;     /* model.from: a safetensors file */
	struct zn_hf_model *src_hf;    /* model.from: a Hugging Face folder (llama) */
	FILE *src_llmc;                /* model.from: an llm.c .bin checkpoint */
	uint64_t *llmc_off;            /* its byte offset of each tensor */
	const char *src_path;
	/* Per-step traffic, for zn_step_info. */
	uint64_t h2d_bytes, d2h_bytes;
	uint64_t stall_ns;             /* fetches waiting for their parameters */
	uint64_t compute_ns;           /* this step's forward and backward */
	/* The fetch order of a training step, recorded on the first and
	 * followed after (DeepSpeed's trace): what to prefetch, and which
	 * released layers come back soon enough to stay on the device. */
	unsigned *order;               /* layers in fetch order */
	size_t norder, order_cap, tpos;
	bool tracking;                 /* inside a training step's passes */
	bool recording, trace_ok;
	bool *kept;                    /* per layer: left on the device for reuse */
	uint64_t *layer_elems;         /* per layer: offloaded elements */
	uint64_t live_elems;           /* offloaded elements on the device now */
	/* Stage 3 with NVMe optimizer states: the update of step n runs on its
	 * own thread beside step n+1's forward, tensor by tensor in the order
	 * the forward wants them; a layer's fetch waits for its own tensors.
	 * Nothing changes but the timing: the results are bit-identical. */
	bool overlap;
	pthread_t opt_thread;
	bool opt_running;
	pthread_mutex_t opt_lock;
	pthread_cond_t opt_cond;
	unsigned opt_done;             /* tensors (in order) whose update is complete */
	bool opt_finished;             /* the thread is done (opt_rc tells how) */
	int opt_rc;
	char opt_msg[512];
	struct nvme_update upd;
	uint64_t opt_ns;               /* the last finished update's duration */
	/* offload_param: gradients leave the device on their own stream, the
	 * copy of layer l overlapping the backward of layer l-1. */
	struct zn_stream *copy;
	struct zn_event *ev_compute;
	struct grad_flight flights[GRAD_FLIGHTS];
	unsigned flight_head, nflights;
	bool opt_joined;               /* an update finished during this step */
	struct zn_optswap_stats opt_stats; /* ... and what it moved */
	/* Data parallelism (include/zinc/comm.h): rank of world; every
	 * collective is issued by every rank in the same order. */
	struct zn_comm *comm;
	bool own_comm;                 /* created here (destroyed with the trainer) */
	/* GPUs on several ranks, zinc built with NCCL: the gradients' reduce-
	 * scatters and the resident parameters' all-gathers run on device
	 * buffers (dsend, drecv: W parts of the largest tensor) through NCCL,
	 * so only this rank's part crosses to the host.  NULL: host staging. */
	struct zn_comm *dcomm;
	void *dsend, *drecv;
	int rank, world;
	unsigned stage;
	uint64_t own_total;            /* elements this rank owns over all tensors */
	uint8_t *cbuf[2];              /* collective staging: W parts of the largest tensor */
	size_t cbuf_bytes;
	uint64_t comm_bytes;           /* bytes this rank sent in collectives */
	uint64_t comm_elems;           /* ... and elements */
	/* Several ranks (host comm): gradients are reduced in buckets of
	 * reduce_bucket_size elements, one collective per bucket.  A bucket is
	 * W chunks of `bk_cap` elements, chunk r holding part r of each tensor
	 * in it (stage 0: one chunk of whole tensors), then room for the
	 * result.  Two buckets: one fills while the other's collective runs
	 * on the comm's thread (overlap_comm), settled -- waited for, added
	 * into the accumulators -- before its buffer is reused. */
	struct bucket {
		struct bucket_entry {
			struct tstate *s;
			size_t off;        /* elements into each chunk */
			bool first;        /* the step's first micro-batch */
		} *e;
		unsigned n;
		size_t used;           /* elements per chunk */
		struct zn_comm_op *op;
		bool inflight;
		uint8_t *buf;
	} bk[2];
	unsigned bk_cur;
	size_t bk_cap;
	/* Stage 3 on several ranks: the all-gathers of the next fetches'
	 * layers run ahead of them (along the trace, or the pass's direction),
	 * up to stage3_prefetch_bucket_size elements and GATHER_SLOTS layers,
	 * each slot's buffer holding every partitioned tensor's part to send
	 * and every rank's to receive.  A FIFO: a fetch takes the oldest; one
	 * of another layer discards them all (every rank decides the same way:
	 * the decisions read only the trace and the fetch counts). */
	struct gather_slot {
		unsigned layer;
		struct zn_comm_op *op[ZN_ARCH_LAYER_TENSORS_MAX];
		uint8_t *recv[ZN_ARCH_LAYER_TENSORS_MAX];
		uint8_t *buf;
	} pg[GATHER_SLOTS];
	unsigned pg_head, pg_n;
	uint8_t *pgbuf;
	bool *layer_parts;             /* per layer: has partitioned tensors */
	uint64_t comm_ns;              /* the compute thread waiting for collectives */
	/* Per-rank state accounting (zn_trainer_memory). */
	struct zn_rank_memory mem;
};

static int opt_wait_all(struct zn_trainer *t);
static int opt_wait_layer(struct zn_trainer *t, unsigned layer);

/* Counters a step's report is the difference of. */
struct traffic {
	uint64_t nvme_read, nvme_write, h2d, d2h, stall_ns;
};

static void traffic_now(struct zn_trainer *t, struct traffic *tr)
{
	memset(tr, 0, sizeof(*tr));
	if (t->psw) {
		struct zn_swapper_stats st;
		zn_swapper_get_stats(t->psw, &st);
		tr->nvme_read = st.bytes_read[ZN_TIER_NVME];
		tr->nvme_write = st.bytes_written[ZN_TIER_NVME];
	}
	tr->h2d = t->h2d_bytes;
	tr->d2h = t->d2h_bytes;
	tr->stall_ns = t->stall_ns;
}

/* ---- host dtype conversions (common/zn_half.h: round to nearest even,
 * the specification the kernels' conversions are tested against) --------- */

/* n fp32 values to dst in dtype dt (a copy for fp32). */
static void host_from_f32(void *dst, enum zn_dtype dt, const float *src, size_t n)
{
	uint16_t *o = dst;
	if (dt == ZN_DTYPE_F32)
		memcpy(dst, src, n * 4);
	else if (dt == ZN_DTYPE_BF16)
		for (size_t i = 0; i < n; i++)
			o[i] = zn_f32_to_bf16(src[i]);
	else
		for (size_t i = 0; i < n; i++)
			o[i] = zn_f32_to_f16(src[i]);
}

/* acc (dtype dt) += add, rounding the sum to dt. */
static void host_accumulate(void *acc, enum zn_dtype dt, const float *add, size_t n)
{
	if (dt == ZN_DTYPE_F32) {
		float *a = acc;
		for (size_t i = 0; i < n; i++)
			a[i] += add[i];
	} else if (dt == ZN_DTYPE_BF16) {
		uint16_t *a = acc;
		for (size_t i = 0; i < n; i++)
			a[i] = zn_f32_to_bf16(zn_bf16_to_f32(a[i]) + add[i]);
	} else {
		uint16_t *a = acc;
		for (size_t i = 0; i < n; i++)
			a[i] = zn_f32_to_f16(zn_f16_to_f32(a[i]) + add[i]);
	}
}

static enum zn_dtype adam_dtype(enum zn_dtype d)
{
	return d == ZN_DTYPE_BF16 ? ZN_DTYPE_BF16 : d == ZN_DTYPE_F16 ? ZN_DTYPE_F16 : ZN_DTYPE_F32;
}

void zn_trainer_set_trace(struct zn_trainer *t, struct zn_trace *trace)
{
	t->trace = trace;
	if (t->world > 1)
		zn_comm_set_trace(t->comm, trace);
	if (t->psw)
		zn_swapper_set_trace(t->psw, trace);
	if (t->os)
		zn_optswap_set_trace(t->os, trace);
}

/* ---- the parameter source: fetch and release, resident or offloaded ------ */

static int round_to_dtype(struct zn_trainer *t, void *x, size_t n);
static int grads_reduce(struct zn_trainer *t, struct tstate *s, bool first);
static int to_host(struct zn_trainer *t, void *dst, const void *src, size_t bytes);
static int bucket_add(struct zn_trainer *t, struct tstate *s, bool first);
static int params_allgather_all(struct zn_trainer *t);
static int grads_settle_all(struct zn_trainer *t);
static void grads_accumulate(struct zn_trainer *t, struct tstate *s, const void *own, bool first);
static int gather_finish(struct zn_trainer *t, unsigned layer);
static int gather_ahead(struct zn_trainer *t, unsigned layer);
static int gather_drain(struct zn_trainer *t);

/* ---- the fetch trace ------------------------------------------------------ */

/* Follow (or record) the trace at a fetch of `layer`.  A step that departs
 * from the recorded order drops it; the next step records anew. */
static void trace_fetch(struct zn_trainer *t, unsigned layer)
{
	if (!t->tracking)
		return;
	if (t->recording) {
		if (t->norder == t->order_cap) {
			size_t cap = t->order_cap ? 2 * t->order_cap : 64;
			unsigned *q = realloc(t->order, cap * sizeof(*q));
			if (!q) {
				t->recording = false; /* no trace: plain prefetching */
				return;
			}
			t->order = q;
			t->order_cap = cap;
		}
		t->order[t->norder++] = layer;
	} else if (t->trace_ok) {
		if (t->tpos < t->norder && t->order[t->tpos] == layer) {
			t->tpos++;
		} else {
			zn_debug("the fetch order changed at fetch %zu (layer %u); recording it "
				 "again", t->tpos, layer);
			t->trace_ok = false;
		}
	}
}

/* Start reading what the next fetches want: along the trace until
 * stage3_prefetch_bucket_size elements are on their way (as many as the
 * buffers allow); without a trace, the next layer in the pass's
 * direction. */
static void prefetch_ahead(struct zn_trainer *t, unsigned layer)
{
	uint64_t bucket = t->cfg.zero_optimization.prefetch_bucket_size;
	if (!bucket)
		return;
	if (t->tracking && t->trace_ok) {
		uint64_t sum = 0;
		for (size_t j = t->tpos; j < t->norder && sum < bucket; j++) {
			unsigned l = t->order[j];
			if (t->fetched[l] || t->kept[l])
				continue;
			for (unsigned i = 0; i < t->count[l]; i++)
				if (t->t[t->first[l] + i].home)
					zn_swapper_prefetch(t->psw, t->t[t->first[l] + i].home);
			sum += t->layer_elems[l];
		}
		return;
	}
	long next = (long)layer + t->direction;
	if (next >= 0 && next < (long)t->nlayers)
		for (unsigned i = 0; i < t->count[next]; i++)
			if (t->t[t->first[next] + i].home)
				zn_swapper_prefetch(t->psw, t->t[t->first[next] + i].home);
}

/* Whether a layer being released comes back within
 * stage3_max_reuse_distance elements of fetches (and fits under
 * stage3_max_live_parameters): then it stays on the device. */
static bool reused_soon(struct zn_trainer *t, unsigned layer)
{
	const struct zn_zero_config *z = &t->cfg.zero_optimization;
	if (!t->tracking || !t->trace_ok || t->live_elems > z->max_live_parameters)
		return false;
	uint64_t dist = 0;
	for (size_t j = t->tpos; j < t->norder && dist < z->max_reuse_distance; j++) {
		if (t->order[j] == layer)
			return true;
		dist += t->layer_elems[t->order[j]];
	}
	return false;
}

static void free_layer_params(struct zn_trainer *t, unsigned layer)
{
	for (unsigned i = 0; i < t->count[layer]; i++) {
		struct tstate *s = &t->t[t->first[layer] + i];
		if (s->resident)
			continue;
		zn_device_free(t->dev, s->dparam);
		zn_device_free(t->dev, s->sparam);
		zn_device_free(t->dev, s->sgrad);
		s->dparam = s->sparam = s->sgrad = NULL;
	}
	t->live_elems -= t->layer_elems[layer];
	t->kept[layer] = false;
}

/* Before the optimizer changes the parameters: nothing stays. */
static void drop_kept(struct zn_trainer *t)
{
	for (unsigned l = 0; t->kept && l < t->nlayers; l++)
		if (t->kept[l])
			free_layer_params(t, l);
}

/* Layers kept for reuse are a cache: when the device is full they go
 * first, and only then is the allocation refused. */
/* Free the buffers of finished gradient copies (all: wait for them). */
static int flights_reap(struct zn_trainer *t, bool all)
{
	int rc = 0;
	while (t->nflights) {
		struct grad_flight *f = &t->flights[t->flight_head];
		if (all) {
			int r = zn_device_event_synchronize(f->ev);
			rc = rc ? rc : r;
		} else if (zn_device_event_query(f->ev) != 0) {
			break;
		}
		for (unsigned i = 0; i < f->n; i++)
			zn_device_free(t->dev, f->p[i]);
		f->n = 0;
		t->flight_head = (t->flight_head + 1) % GRAD_FLIGHTS;
		t->nflights--;
	}
	return rc;
}

static int dev_alloc(struct zn_trainer *t, size_t bytes, void **p)
{
	int rc = zn_device_alloc(t->dev, bytes, p);
	bool any = t->nflights > 0;
	for (unsigned l = 0; rc == -ENOMEM && l < t->nlayers; l++)
		any |= t->kept[l];
	if (rc == -ENOMEM && any) {
		drop_kept(t);
		flights_reap(t, true);
		rc = zn_device_alloc(t->dev, bytes, p);
	}
	return rc;
}

/* What the model gets for a layer: its parameters (and gradients) on the
 * device.  With 16-bit storage (16-bit training on cuda) those are the
 * tensors' 16-bit copies: the fp32 parameters cast now, on the compute
 * stream (so after whatever wrote them last, before the model's kernels),
 * and zeroed gradient buffers the backward adds into, folded into the fp32
 * gradients at the layer's release (fold_grads). */
static int hand_out(struct zn_trainer *t, unsigned layer, bool want, void **params,
		    void **grads)
{
	int rc = 0;
	for (unsigned i = 0; i < t->count[layer] && !rc; i++) {
		struct tstate *s = &t->t[t->first[layer] + i];
		if (t->sdt == ZN_DTYPE_F32) {
			params[i] = s->dparam;
			if (want)
				grads[i] = s->dgrad;
			continue;
		}
		const size_t n = s->d.numel, bytes = n * zn_dtype_size(t->sdt);
		if (!s->sparam && (rc = dev_alloc(t, bytes, &s->sparam)))
			break;
		if ((rc = t->k->cast(t->kctx, s->sparam, t->sdt, s->dparam, ZN_DTYPE_F32, n)))
			break;
		params[i] = s->sparam;
		if (!want)
			continue;
		if (!s->sgrad && ((rc = dev_alloc(t, bytes, &s->sgrad)) ||
				  (rc = zn_device_memset(t->dev, s->sgrad, 0, bytes, t->stream))))
			break;
		grads[i] = s->sgrad;
		s->sdirty = true;
	}
	return rc;
}

/* A layer's 16-bit gradients into its fp32 ones (added in fp32), then
 * zeroed for what comes next: on the compute stream, after the backward
 * that wrote them.  At every release, also one saying more gradients are
 * to come (the tied wte between the classifier and the encoder): the fp32
 * gradients stay, the 16-bit buffers may not. */
static int fold_grads(struct zn_trainer *t, unsigned layer)
{
	int rc = 0;
	if (t->sdt == ZN_DTYPE_F32)
		return 0;
	for (unsigned i = 0; i < t->count[layer] && !rc; i++) {
		struct tstate *s = &t->t[t->first[layer] + i];
		const size_t n = s->d.numel;
		if (!s->sdirty || !s->sgrad || !s->dgrad)
			continue;
		s->sdirty = false;
		if (!(rc = t->k->accumulate(t->kctx, s->dgrad, ZN_DTYPE_F32, s->sgrad, t->sdt, n)))
			rc = zn_device_memset(t->dev, s->sgrad, 0, n * zn_dtype_size(t->sdt),
					      t->stream);
	}
	return rc;
}

/* offload_param: bring a layer's parameters to the device (and make room for
 * its gradients), prefetching what the next fetches want.  The homes hold
 * the training dtype; 16-bit ones cross as 16 bits and are widened on the
 * device. */
static int fetch_offloaded(struct zn_trainer *t, unsigned layer, bool want, void **params,
			   void **grads)
{
	int rc = 0;
	if (t->opt_running && (rc = opt_wait_layer(t, layer)))
		return rc;
	trace_fetch(t, layer);
	if (t->fetched[layer]++ == 0 && t->kept[layer]) {
		t->kept[layer] = false; /* still on the device from its last use */
	} else if (t->fetched[layer] == 1 && t->pgbuf) {
		/* Several ranks: every rank's parts, gathered ahead or now. */
		t->live_elems += t->layer_elems[layer];
		if (!(rc = gather_finish(t, layer))) {
			prefetch_ahead(t, layer); /* NVMe reads for what comes next */
			rc = gather_ahead(t, layer);
		}
	} else if (t->fetched[layer] == 1) {
		t->live_elems += t->layer_elems[layer];
		for (unsigned i = 0; i < t->count[layer] && !rc; i++) {
			struct tstate *s = &t->t[t->first[layer] + i];
			void *host;
			size_t hbytes = s->d.numel * zn_dtype_size(t->hdt);
			if (s->resident)
				continue;
			if ((rc = dev_alloc(t, s->d.numel * 4, &s->dparam)))
				break;
			uint64_t t0 = zn_now_ns();
			if ((rc = zn_swapper_acquire(t->psw, s->home, &host)))
				break;
			t->stall_ns += zn_now_ns() - t0;
			if (t->hdt == ZN_DTYPE_F32) {
				rc = zn_device_copy_async(t->dev, s->dparam, host, hbytes,
							  ZN_COPY_HOST_TO_DEVICE, NULL);
			} else if (!(rc = zn_device_copy_async(t->dev, t->round_buf, host, hbytes,
							       ZN_COPY_HOST_TO_DEVICE, NULL))) {
				rc = t->k->cast(t->kctx, s->dparam, ZN_DTYPE_F32, t->round_buf, t->hdt,
						s->d.numel);
				if (!rc)
					rc = zn_device_stream_synchronize(t->stream);
			}
			t->h2d_bytes += hbytes;
			zn_swapper_release(t->psw, s->home, false);
		}
		if (!rc)
			prefetch_ahead(t, layer);
	}
	if (!rc && want && !t->has_grads[layer]) {
		for (unsigned i = 0; i < t->count[layer] && !rc; i++) {
			struct tstate *s = &t->t[t->first[layer] + i];
			if (s->dev_grads)
				continue;
			if (!(rc = dev_alloc(t, s->d.numel * 4, &s->dgrad)))
				rc = zn_device_memset(t->dev, s->dgrad, 0, s->d.numel * 4, NULL);
		}
		t->has_grads[layer] = true;
	}
	return rc ? rc : hand_out(t, layer, want, params, grads);
}

/* A tensor's device gradients (fp32, rounded to the training dtype) into
 * its host accumulator: the first micro-batch of a step copies (16-bit
 * accumulators: narrowed on the device, so half the bytes cross), later
 * ones add. */
/* Enqueue on the compute stream what a tensor's device gradients need
 * before they cross: rounding to the training dtype, or, for a first
 * micro-batch into a 16-bit accumulator, narrowing into `narrow` (n 16-bit
 * values).  *src and *bytes say what to copy. */
static int grads_prepare(struct zn_trainer *t, struct tstate *s, bool first, void *narrow,
			 const void **src, size_t *bytes)
{
	const size_t n = s->d.numel;
	int rc = 0;
	if (first && t->gdt != ZN_DTYPE_F32) {
		/* Narrowing to the training dtype itself rounds as
		 * round_to_dtype would (to nearest even, once): that pass is
		 * skipped then. */
		if (t->gdt != t->dtype)
			rc = round_to_dtype(t, s->dgrad, n);
		if (!rc)
			rc = t->k->cast(t->kctx, narrow, t->gdt, s->dgrad, ZN_DTYPE_F32, n);
		*src = narrow;
		*bytes = n * 2;
	} else {
		rc = round_to_dtype(t, s->dgrad, n);
		*src = s->dgrad;
		*bytes = n * 4;
	}
	return rc;
}

/* The same, then across synchronously: the first micro-batch's gradients
 * start the accumulator, later ones are added to it. */
static int grads_to_host(struct zn_trainer *t, struct tstate *s, bool first)
{
	const void *src;
	size_t bytes;
	int rc = grads_prepare(t, s, first, t->round_buf, &src, &bytes);
	if (!rc)
		rc = zn_device_stream_synchronize(t->stream);
	if (rc)
		return rc;
	t->d2h_bytes += bytes;
	if (first)
		return zn_device_copy_async(t->dev, s->grad, src, bytes, ZN_COPY_DEVICE_TO_HOST,
					    NULL);
	if ((rc = zn_device_copy_async(t->dev, t->gstage, src, bytes, ZN_COPY_DEVICE_TO_HOST,
				       NULL)))
		return rc;
	host_accumulate(s->grad, t->gdt, t->gstage, s->d.numel);
	return 0;
}

/* The layer leaves the device; with final gradients, those go to the host
 * accumulators first. */
/* Later micro-batches' gradients are added into the accumulator on the
 * copy stream, after their copy into the staging buffer. */
static int accumulate_fn(void *arg)
{
	struct tstate *s = arg;
	host_accumulate(s->grad, s->owner->gdt, s->owner->gstage, s->d.numel);
	return 0;
}

/* A layer's final gradients leave the device on the copy stream: rounded
 * (or narrowed to a 16-bit accumulator's dtype) on the compute stream,
 * then copied, and added on the host for later micro-batches, in tensor
 * order, while the compute stream goes on with the next layer's backward.
 * Their device buffers are freed once the copies are done. */
static int grads_leave(struct zn_trainer *t, unsigned layer)
{
	const bool first = t->micro_i == 0;
	int rc = flights_reap(t, false);
	if (!rc && t->nflights == GRAD_FLIGHTS) {
		struct grad_flight *o = &t->flights[t->flight_head];
		rc = zn_device_event_synchronize(o->ev);
		if (!rc)
			rc = flights_reap(t, false);
	}
	struct grad_flight *f = &t->flights[(t->flight_head + t->nflights) % GRAD_FLIGHTS];
	struct { void *src; struct tstate *s; size_t bytes; } cp[ZN_ARCH_LAYER_TENSORS_MAX];
	unsigned ncp = 0;
	f->n = 0;
	for (unsigned i = 0; i < t->count[layer] && !rc; i++) {
		struct tstate *s = &t->t[t->first[layer] + i];
		const size_t n = s->d.numel;
		if (s->dev_grads)
			continue;
		f->p[f->n++] = s->dgrad;
		void *narrow = NULL;
		if (first && t->gdt != ZN_DTYPE_F32) {
			rc = dev_alloc(t, n * 2, &narrow);
			if (!rc) {
				f->p[f->n++] = narrow;
			} else if (rc == -ENOMEM) {
				/* No room for a 16-bit copy in flight: this one
				 * crosses synchronously, through the scratch. */
				rc = grads_to_host(t, s, first);
				s->dgrad = NULL;
				continue;
			}
		}
		if (!rc) {
			const void *src;
			size_t bytes;
			rc = grads_prepare(t, s, first, narrow, &src, &bytes);
			cp[ncp++] = (typeof(cp[0])){ (void *)src, s, bytes };
		}
		s->dgrad = NULL;
	}
	if (!rc && !(rc = zn_device_event_record(t->ev_compute, t->stream)))
		rc = zn_device_stream_wait_event(t->copy, t->ev_compute);
	for (unsigned k = 0; k < ncp && !rc; k++) {
		struct tstate *s = cp[k].s;
		t->d2h_bytes += cp[k].bytes;
		if (first) {
			rc = zn_device_copy_async(t->dev, s->grad, cp[k].src, cp[k].bytes,
						  ZN_COPY_DEVICE_TO_HOST, t->copy);
		} else if (!(rc = zn_device_copy_async(t->dev, t->gstage, cp[k].src, cp[k].bytes,
						       ZN_COPY_DEVICE_TO_HOST, t->copy))) {
			rc = zn_device_launch_host(t->copy, accumulate_fn, s);
		}
	}
	if (!rc)
		rc = zn_device_event_record(f->ev, t->copy);
	t->nflights++;
	if (rc) /* what was queued finishes; then everything is freed */
		flights_reap(t, true);
	return rc;
}

/* The layer leaves the device; with final gradients, those start their
 * way to the host accumulators first. */
static int release_offloaded(struct zn_trainer *t, unsigned layer, bool written)
{
	int rc = zn_device_stream_synchronize(t->stream);
	if (!rc && written && t->has_grads[layer] && t->copy && t->world == 1) {
		rc = grads_leave(t, layer);
	} else if (!rc && written && t->has_grads[layer]) {
		for (unsigned i = 0; i < t->count[layer] && !rc; i++) {
			struct tstate *s = &t->t[t->first[layer] + i];
			if (s->dev_grads)
				continue;
			rc = t->world > 1 ? grads_reduce(t, s, t->micro_i == 0)
					  : grads_to_host(t, s, t->micro_i == 0);
			zn_device_free(t->dev, s->dgrad);
			s->dgrad = NULL;
		}
	}
	if (written)
		t->has_grads[layer] = false;
	if (t->fetched[layer] && --t->fetched[layer] == 0) {
		if (reused_soon(t, layer))
			t->kept[layer] = true;
		else
			free_layer_params(t, layer);
	}
	return rc;
}

static int fetch(void *user, unsigned layer, bool want, void **params, void **grads)
{
	struct zn_trainer *t = user;
	if (t->layered)
		return fetch_offloaded(t, layer, want, params, grads);
	return hand_out(t, layer, want, params, grads);
}

static int release(void *user, unsigned layer, bool written)
{
	struct zn_trainer *t = user;
	int rc = fold_grads(t, layer);
	if (!rc && t->layered)
		rc = release_offloaded(t, layer, written);
	return rc;
}

/* The model's memory callbacks (user: the trainer).  The model enqueues
 * its kernels on the compute stream and reuses its buffers layer after
 * layer, so what these do to device memory is ordered after that stream's
 * work: zeroing is enqueued on it, the synchronous copies wait for it. */
static void *dalloc(void *user, size_t bytes)
{
	struct zn_trainer *t = user;
	void *p = NULL;
	return zn_device_alloc(t->dev, bytes, &p) ? NULL : p;
}

static void dfree(void *user, void *p)
{
	struct zn_trainer *t = user;
	zn_device_free(t->dev, p);
}

static int dzero(void *user, void *p, size_t bytes)
{
	struct zn_trainer *t = user;
	/* cuda kernels run on the stream; cpu ones when called, so there a
	 * stream's memset would not be ordered with them */
	const bool on_stream = t->cfg.device.type == ZN_DEVICE_CUDA;
	return zn_device_memset(t->dev, p, 0, bytes, on_stream ? t->stream : NULL);
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
	struct zn_trainer *t = user;
	int rc = zn_device_stream_synchronize(t->stream);
	return rc ? rc : zn_device_copy_async(t->dev, dst, src, bytes, ZN_COPY_DEVICE_TO_HOST, NULL);
}

static int dsync(void *user)
{
	struct zn_trainer *t = user;
	return zn_device_synchronize(t->dev);
}

static int dto_device(void *user, void *dst, const void *src, size_t bytes)
{
	struct zn_trainer *t = user;
	int rc = zn_device_stream_synchronize(t->stream);
	return rc ? rc : zn_device_copy_async(t->dev, dst, src, bytes, ZN_COPY_HOST_TO_DEVICE, NULL);
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

static void close_sources(struct zn_trainer *t);

static void free_states(struct zn_trainer *t)
{
	for (unsigned i = 0; t->t && i < t->nt; i++) {
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
	if (t->opt_running) {
		pthread_join(t->opt_thread, NULL);
		t->opt_running = false;
	}
	pthread_mutex_destroy(&t->opt_lock);
	pthread_cond_destroy(&t->opt_cond);
	if (t->copy) {
		flights_reap(t, true);
		zn_device_stream_destroy(t->copy);
	}
	zn_device_event_destroy(t->ev_compute);
	for (unsigned i = 0; i < GRAD_FLIGHTS; i++)
		zn_device_event_destroy(t->flights[i].ev);
	close_sources(t);
	zn_arch_model_destroy(&t->model);
	zn_optswap_destroy(t->os);
	zn_store_destroy(t->store);
	zn_aio_destroy(t->aio);
	zn_swapper_destroy(t->psw);
	zn_bufpool_destroy(t->ppool);
	zn_store_destroy(t->pstore);
	zn_aio_destroy(t->paio);
	free(t->fetched);
	free(t->has_grads);
	free(t->kept);
	free(t->layer_elems);
	free(t->order);
	free(t->gstage);
	if (t->round_buf)
		zn_device_free(t->dev, t->round_buf);
	if (t->dsumsq)
		zn_device_free(t->dev, t->dsumsq);
	if (t->dflag)
		zn_device_free(t->dev, t->dflag);
	if (t->dgscratch)
		zn_device_free(t->dev, t->dgscratch);
	if (t->dsend)
		zn_device_free(t->dev, t->dsend);
	if (t->drecv)
		zn_device_free(t->dev, t->drecv);
	free(t->cbuf[0]);
	free(t->cbuf[1]);
	for (int k = 0; k < 2; k++) {
		if (t->bk[k].inflight)
			zn_comm_wait(t->bk[k].op);
		free(t->bk[k].buf);
		free(t->bk[k].e);
	}
	for (unsigned k = 0; k < t->pg_n; k++) {
		struct gather_slot *g = &t->pg[(t->pg_head + k) % GATHER_SLOTS];
		for (unsigned i = 0; i < ZN_ARCH_LAYER_TENSORS_MAX; i++)
			if (g->op[i])
				zn_comm_wait(g->op[i]);
	}
	free(t->pgbuf);
	free(t->layer_parts);
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
	zn_comm_destroy(t->dcomm);
	if (t->own_comm)
		zn_comm_destroy(t->comm);
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

static int open_checkpoint(struct zn_trainer *t, const char *dir);
static int open_pretrained(struct zn_trainer *t, const char *path);
static int materialize(struct zn_trainer *t);
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


/* ---- several ranks: ZeRO's collectives -------------------------------------
 *
 * Every collective is issued by every rank in the same order: the ranks
 * run the same model over the same layers, so the order of fetches,
 * releases and updates is the same everywhere.  The comm's reductions add
 * in rank order, so two ranks with one micro-batch each sum their
 * gradients exactly as one rank accumulating both does (g0 + g1). */

static enum zn_dtype comm_dtype(enum zn_dtype d)
{
	return d == ZN_DTYPE_BF16 ? ZN_DTYPE_BF16 : d == ZN_DTYPE_F16 ? ZN_DTYPE_F16 : ZN_DTYPE_F32;
}

/* What this rank sends: elements (ZeRO's volumes are in elements) and bytes. */
static void count_sent(struct zn_trainer *t, uint64_t elems, size_t esz)
{
	t->comm_elems += elems;
	t->comm_bytes += elems * esz;
}

/* Run an enqueued collective to its end, counting the wait. */
static int coll_wait(struct zn_trainer *t, int rc, struct zn_comm_op *op)
{
	if (rc)
		return rc;
	uint64_t t0 = zn_now_ns();
	rc = zn_comm_wait(op);
	uint64_t t1 = zn_now_ns();
	t->comm_ns += t1 - t0;
	zn_trace_span(t->trace, "collective", "comm", "comm", t0, t1, 0);
	return rc;
}

/* v[0..n) summed over ranks in rank order, in double (n <= 4). */
static int sum_doubles(struct zn_trainer *t, double *v, unsigned n)
{
	if (t->world == 1)
		return 0;
	double *all = (double *)(void *)t->cbuf[1];
	struct zn_comm_op *op = NULL;
	memcpy(t->cbuf[0], v, n * sizeof(double));
	int rc = zn_comm_all_gather_async(t->comm, t->cbuf[0], all, n * sizeof(double), ZN_DTYPE_U8,
					  &op);
	rc = coll_wait(t, rc, op);
	if (rc)
		return rc;
	for (unsigned k = 0; k < n; k++) {
		double s = all[k];
		for (int r = 1; r < t->world; r++)
			s += all[(size_t)r * n + k];
		v[k] = s;
	}
	return 0;
}

int zn_trainer_any(struct zn_trainer *t, bool flag, bool *any)
{
	double v = flag ? 1 : 0;
	int rc = sum_doubles(t, &v, 1);
	*any = v > 0;
	return rc;
}

/* n host values of dtype dt into fp32. */
static void host_to_f32(float *dst, const void *src, enum zn_dtype dt, size_t n)
{
	const uint16_t *h = src;
	if (dt == ZN_DTYPE_F32)
		memcpy(dst, src, n * 4);
	else if (dt == ZN_DTYPE_BF16)
		for (size_t i = 0; i < n; i++)
			dst[i] = zn_bf16_to_f32(h[i]);
	else
		for (size_t i = 0; i < n; i++)
			dst[i] = zn_f16_to_f32(h[i]);
}

/* A tensor's device gradient (fp32, all of it), summed over the ranks,
 * into this rank's part of its accumulator: `first` starts the
 * accumulator, later micro-batches add to it.  The gradient crosses in the
 * accumulators' dtype (rounded to the training dtype first, as one rank
 * does), padded to world parts for the reduce-scatter; stage 0 all-reduces
 * the whole tensor. */
static int grads_reduce_device(struct zn_trainer *t, struct tstate *s, bool first);

/* Enqueue the sum over ranks of a staged gradient on `c`: stage 0 all-
 * reduces it in place, stages 1-3 reduce-scatter it into recv.  *own: where
 * this rank's part will be. */
static int grads_enqueue(struct zn_trainer *t, struct zn_comm *c, struct tstate *s, void *send,
			 void *recv, struct zn_comm_op **op, const void **own)
{
	const size_t n = s->d.numel, esz = zn_dtype_size(t->gdt);
	if (t->stage == 0) {
		count_sent(t, 2 * (uint64_t)(t->world - 1) * n / (uint64_t)t->world, esz);
		*own = send;
		return zn_comm_all_reduce_async(c, send, n, comm_dtype(t->gdt), ZN_COMM_SUM, op);
	}
	count_sent(t, (uint64_t)(t->world - 1) * s->part, esz);
	*own = recv;
	return zn_comm_reduce_scatter_async(c, send, recv, s->part, comm_dtype(t->gdt), op);
}

/* A tensor's final gradient on its way to being summed over the ranks:
 * through NCCL on the device at once, or into the host comm's buckets
 * (reduced when full and at the step's end, grads_settle_all). */
static int grads_reduce(struct zn_trainer *t, struct tstate *s, bool first)
{
	return t->dcomm ? grads_reduce_device(t, s, first) : bucket_add(t, s, first);
}

/* The same through NCCL on device buffers: the gradient, in the
 * accumulators' dtype, padded to W parts in dsend; reduced into drecv;
 * only this rank's part comes to the host. */
static int grads_reduce_device(struct zn_trainer *t, struct tstate *s, bool first)
{
	const size_t n = s->d.numel, esz = zn_dtype_size(t->gdt);
	uint8_t *send = t->dsend;
	struct zn_comm_op *op = NULL;
	int rc = round_to_dtype(t, s->dgrad, n);
	if (!rc && t->gdt == ZN_DTYPE_F32)
		rc = zn_device_copy_async(t->dev, send, s->dgrad, n * 4, ZN_COPY_DEVICE_TO_DEVICE,
					  t->stream);
	else if (!rc)
		rc = t->k->cast(t->kctx, send, t->gdt, s->dgrad, ZN_DTYPE_F32, n);
	const size_t total = (t->stage == 0 ? n : s->part * (size_t)t->world) * esz;
	if (!rc && total > n * esz)
		rc = zn_device_memset(t->dev, send + n * esz, 0, total - n * esz, t->stream);
	if (!rc) /* NCCL takes the data as it is when the op is enqueued */
		rc = zn_device_stream_synchronize(t->stream);
	if (rc)
		return rc;
	const void *own;
	rc = grads_enqueue(t, t->dcomm, s, send, t->drecv, &op, &own);
	if ((rc = coll_wait(t, rc, op)) ||
	    (s->nown && (rc = to_host(t, t->gstage, own, s->nown * esz))))
		return rc;
	t->d2h_bytes += s->nown * esz;
	grads_accumulate(t, s, t->gstage, first);
	return 0;
}

/* Add a settled reduce-scatter's part into the tensor's accumulator. */
static void grads_accumulate(struct zn_trainer *t, struct tstate *s, const void *own, bool first)
{
	const size_t esz = zn_dtype_size(t->gdt);
	if (first) {
		memcpy(s->grad, own, s->nown * esz);
	} else if (t->gdt == ZN_DTYPE_F32) {
		host_accumulate(s->grad, t->gdt, own, s->nown);
	} else {
		host_to_f32(t->gstage, own, t->gdt, s->nown);
		host_accumulate(s->grad, t->gdt, t->gstage, s->nown);
	}
}

/* Wait for bucket k's collective and add every entry's part (this rank's
 * share of the sum) into its tensor's accumulator. */
static int bucket_settle(struct zn_trainer *t, unsigned k)
{
	struct bucket *b = &t->bk[k];
	const size_t esz = zn_dtype_size(t->gdt);
	const size_t chunks = t->stage == 0 ? 1 : (size_t)t->world;
	int rc = 0;
	if (b->inflight) {
		rc = coll_wait(t, 0, b->op);
		const uint8_t *recv = t->stage == 0 ? b->buf : b->buf + chunks * t->bk_cap * esz;
		for (unsigned i = 0; i < b->n && !rc; i++)
			grads_accumulate(t, b->e[i].s, recv + b->e[i].off * esz, b->e[i].first);
	}
	b->inflight = false;
	b->n = 0;
	b->used = 0;
	return rc;
}

/* The filling bucket's collective is enqueued (its chunks first packed
 * together: reduce_scatter wants chunk r at r x used); without
 * overlap_comm it is waited for at once; the other bucket, older, is
 * settled so it can fill next.  The comm's FIFO and this order keep every
 * tensor's micro-batches in order. */
static int bucket_flush(struct zn_trainer *t)
{
	struct bucket *b = &t->bk[t->bk_cur];
	const size_t esz = zn_dtype_size(t->gdt);
	int rc = 0;
	if (b->n) {
		if (t->stage == 0) {
			rc = zn_comm_all_reduce_async(t->comm, b->buf, b->used, comm_dtype(t->gdt),
						      ZN_COMM_SUM, &b->op);
			count_sent(t, 2 * (uint64_t)(t->world - 1) * b->used / (uint64_t)t->world,
				   esz);
		} else {
			for (int r = 1; r < t->world && b->used < t->bk_cap; r++)
				memmove(b->buf + (size_t)r * b->used * esz,
					b->buf + (size_t)r * t->bk_cap * esz, b->used * esz);
			rc = zn_comm_reduce_scatter_async(t->comm, b->buf,
							  b->buf + (size_t)t->world * t->bk_cap * esz,
							  b->used, comm_dtype(t->gdt), &b->op);
			count_sent(t, (uint64_t)(t->world - 1) * b->used, esz);
		}
		b->inflight = !rc;
		if (!rc && !t->cfg.zero_optimization.overlap_comm)
			rc = bucket_settle(t, t->bk_cur);
	}
	t->bk_cur ^= 1;
	int r = bucket_settle(t, t->bk_cur);
	return rc ? rc : r;
}

/* A tensor's final gradient (its device buffer, all of it) into the filling
 * bucket, each rank's part into that rank's chunk; a full bucket goes
 * first. */
static int bucket_add(struct zn_trainer *t, struct tstate *s, bool first)
{
	const size_t n = s->d.numel, esz = zn_dtype_size(t->gdt);
	const size_t part = t->stage == 0 ? n : s->part;
	int rc = 0;
	if (t->bk[t->bk_cur].used + part > t->bk_cap && (rc = bucket_flush(t)))
		return rc;
	struct bucket *b = &t->bk[t->bk_cur];
	const void *src = s->dgrad;
	if (!(rc = round_to_dtype(t, s->dgrad, n)) && t->gdt != ZN_DTYPE_F32) {
		rc = t->k->cast(t->kctx, t->round_buf, t->gdt, s->dgrad, ZN_DTYPE_F32, n);
		src = t->round_buf;
	}
	if (!rc)
		rc = zn_device_stream_synchronize(t->stream);
	const int chunks = t->stage == 0 ? 1 : t->world;
	for (int r = 0; r < chunks && !rc; r++) {
		uint64_t lo = 0, len = n;
		if (t->stage > 0)
			zn_zero_part(n, t->world, r, &lo, &len);
		uint8_t *dst = b->buf + ((size_t)r * t->bk_cap + b->used) * esz;
		if (len)
			rc = to_host(t, dst, (const uint8_t *)src + lo * esz, len * esz);
		memset(dst + len * esz, 0, (part - len) * esz);
	}
	if (rc)
		return rc;
	t->d2h_bytes += n * esz;
	b->e[b->n++] = (struct bucket_entry){ .s = s, .off = b->used, .first = first };
	b->used += part;
	return 0;
}

/* Every bucket reduced and added in (the step's end). */
static int grads_settle_all(struct zn_trainer *t)
{
	int rc = bucket_flush(t);              /* the filling one; settles the older */
	int r = bucket_settle(t, t->bk_cur ^ 1); /* the one just flushed */
	return rc ? rc : r;
}

/* After an update (stage >= 1, several ranks): each rank holds the new
 * values of its part of a resident tensor; every rank gets all of them.
 * They cross in the training dtype (exact: the device copy is rounded to
 * it). */
/* The same through NCCL: this rank's part (in the training dtype) into
 * dsend, every rank's into drecv, widened into the parameters. */
static int params_allgather_device(struct zn_trainer *t, struct tstate *s)
{
	const size_t n = s->d.numel, esz = zn_dtype_size(t->dtype);
	uint8_t *send = t->dsend;
	float *own = (float *)s->dparam + s->lo;
	struct zn_comm_op *op = NULL;
	int rc = 0;
	if (s->nown && t->dtype == ZN_DTYPE_F32)
		rc = zn_device_copy_async(t->dev, send, own, s->nown * 4, ZN_COPY_DEVICE_TO_DEVICE,
					  t->stream);
	else if (s->nown)
		rc = t->k->cast(t->kctx, send, t->dtype, own, ZN_DTYPE_F32, s->nown);
	if (!rc && s->part > s->nown)
		rc = zn_device_memset(t->dev, send + s->nown * esz, 0, (s->part - s->nown) * esz,
				      t->stream);
	if (!rc)
		rc = zn_device_stream_synchronize(t->stream);
	if (rc)
		return rc;
	rc = zn_comm_all_gather_async(t->dcomm, send, t->drecv, s->part * esz, ZN_DTYPE_U8, &op);
	count_sent(t, (uint64_t)(t->world - 1) * s->part, esz);
	if ((rc = coll_wait(t, rc, op)))
		return rc;
	if (t->dtype == ZN_DTYPE_F32)
		return zn_device_copy_async(t->dev, s->dparam, t->drecv, n * 4,
					    ZN_COPY_DEVICE_TO_DEVICE, NULL);
	return t->k->cast(t->kctx, s->dparam, ZN_DTYPE_F32, t->drecv, t->dtype, n);
}

static int params_allgather(struct zn_trainer *t, struct tstate *s)
{
	const size_t n = s->d.numel, esz = zn_dtype_size(t->dtype);
	uint8_t *send = t->cbuf[0], *recv = t->cbuf[1];
	float *own = (float *)s->dparam + s->lo;
	struct zn_comm_op *op = NULL;
	int rc = 0;
	if (t->stage == 0 || t->world == 1)
		return 0;
	if (t->dcomm)
		return params_allgather_device(t, s);
	if (t->dtype != ZN_DTYPE_F32 && s->nown)
		rc = t->k->cast(t->kctx, t->round_buf, t->dtype, own, ZN_DTYPE_F32, s->nown);
	if (!rc)
		rc = zn_device_stream_synchronize(t->stream);
	if (!rc && s->nown)
		rc = to_host(t, send, t->dtype == ZN_DTYPE_F32 ? (void *)own : t->round_buf,
			     s->nown * esz);
	if (rc)
		return rc;
	memset(send + s->nown * esz, 0, (s->part - s->nown) * esz);
	rc = zn_comm_all_gather_async(t->comm, send, recv, s->part * esz, ZN_DTYPE_U8, &op);
	count_sent(t, (uint64_t)(t->world - 1) * s->part, esz);
	if ((rc = coll_wait(t, rc, op)))
		return rc;
	t->d2h_bytes += s->nown * esz;
	t->h2d_bytes += n * esz;
	if (t->dtype == ZN_DTYPE_F32)
		return to_device(t, s->dparam, recv, n * 4);
	if ((rc = to_device(t, t->round_buf, recv, n * esz)))
		return rc;
	return t->k->cast(t->kctx, s->dparam, ZN_DTYPE_F32, t->round_buf, t->dtype, n);
}

/* After an update (stage >= 1, several ranks): every resident tensor's new
 * parts to every rank, in buckets of allgather_bucket_size elements over
 * the ranks, one all-gather per bucket, through the gradient buckets'
 * buffers (idle by now): chunk r of a bucket is rank r's parts of its
 * tensors, back to back.  NCCL goes tensor by tensor on the device. */
static int params_allgather_all(struct zn_trainer *t)
{
	if (t->stage == 0 || t->world == 1)
		return 0;
	if (t->dcomm || !t->bk[0].buf) {
		int rc = 0;
		for (unsigned i = 0; i < t->nt && !rc; i++)
			if (t->t[i].resident)
				rc = params_allgather(t, &t->t[i]);
		return rc;
	}
	const size_t esz = zn_dtype_size(t->dtype), W = (size_t)t->world;
	const size_t cap = ZN_MAX(ZN_MIN(t->bk_cap, (size_t)(t->cfg.zero_optimization
								  .allgather_bucket_size / W)),
				  1);
	uint8_t *send = t->bk[0].buf, *recv = t->bk[1].buf;
	int rc = 0;
	for (unsigned i = 0; i < t->nt && !rc;) {
		/* The bucket: tensors i .. j-1 (a tensor larger than the bucket
		 * alone: bk_cap holds the largest part). */
		size_t used = 0;
		unsigned j = i;
		for (; j < t->nt; j++) {
			const struct tstate *s = &t->t[j];
			if (!s->resident)
				continue;
			if (used && used + s->part > cap)
				break;
			/* This rank's part, rounded on the device, in the
			 * training dtype. */
			float *own = (float *)s->dparam + s->lo;
			if (s->nown && t->dtype != ZN_DTYPE_F32)
				rc = t->k->cast(t->kctx, t->round_buf, t->dtype, own, ZN_DTYPE_F32,
						s->nown);
			if (!rc)
				rc = zn_device_stream_synchronize(t->stream);
			if (!rc && s->nown)
				rc = to_host(t, send + used * esz,
					     t->dtype == ZN_DTYPE_F32 ? (void *)own : t->round_buf,
					     s->nown * esz);
			if (rc)
				return rc;
			memset(send + (used + s->nown) * esz, 0, (s->part - s->nown) * esz);
			t->d2h_bytes += s->nown * esz;
			used += s->part;
		}
		struct zn_comm_op *op = NULL;
		if (used) {
			rc = zn_comm_all_gather_async(t->comm, send, recv, used * esz, ZN_DTYPE_U8, &op);
			count_sent(t, (uint64_t)(t->world - 1) * used, esz);
			rc = coll_wait(t, rc, op);
		}
		/* Every rank's parts of each tensor onto the device. */
		size_t off = 0;
		for (unsigned k = i; k < j && !rc; k++) {
			struct tstate *s = &t->t[k];
			if (!s->resident)
				continue;
			void *dst = t->dtype == ZN_DTYPE_F32 ? s->dparam : t->round_buf;
			for (size_t r = 0; r < W && !rc; r++) {
				uint64_t lo, len;
				zn_zero_part(s->d.numel, t->world, (int)r, &lo, &len);
				if (len)
					rc = to_device(t, (uint8_t *)dst + lo * esz,
						       recv + (r * used + off) * esz, len * esz);
			}
			if (!rc && t->dtype != ZN_DTYPE_F32)
				rc = t->k->cast(t->kctx, s->dparam, ZN_DTYPE_F32, t->round_buf, t->dtype,
						s->d.numel);
			t->h2d_bytes += s->d.numel * esz;
			off += s->part;
		}
		i = j;
	}
	return rc;
}

/* ---- stage 3 on several ranks: gathering a layer's parts ----------------- */

/* Start the all-gathers of a layer's partitioned tensors into the next free
 * slot: each rank's part (from its home, in the homes' dtype, or from the
 * device), one nonblocking all-gather per tensor on the comm's thread. */
static int gather_start(struct zn_trainer *t, unsigned layer)
{
	const size_t esz = zn_dtype_size(t->hdt);
	struct gather_slot *g = &t->pg[(t->pg_head + t->pg_n++) % GATHER_SLOTS];
	uint8_t *buf = g->buf;
	int rc = 0;
	memset(g->op, 0, sizeof(g->op));
	g->layer = layer;
	for (unsigned i = 0; i < t->count[layer] && !rc; i++) {
		struct tstate *s = &t->t[t->first[layer] + i];
		if (s->resident)
			continue;
		uint8_t *send = buf, *recv = buf + s->part * esz;
		buf += ZN_ALIGN_UP((size_t)s->part * ((size_t)t->world + 1) * 4, 64);
		g->recv[i] = recv;
		if (s->dhome) {
			if (s->nown && !(rc = zn_device_stream_synchronize(t->stream)))
				rc = to_host(t, send, s->dhome, s->nown * 4);
		} else {
			void *host;
			uint64_t t0 = zn_now_ns();
			if (!(rc = zn_swapper_acquire(t->psw, s->home, &host))) {
				memcpy(send, host, s->nown * esz);
				zn_swapper_release(t->psw, s->home, false);
			}
			t->stall_ns += zn_now_ns() - t0;
		}
		if (rc)
			break;
		memset(send + s->nown * esz, 0, (s->part - s->nown) * esz);
		rc = zn_comm_all_gather_async(t->comm, send, recv, s->part * esz, ZN_DTYPE_U8,
					      &g->op[i]);
		count_sent(t, (uint64_t)(t->world - 1) * s->part, esz);
	}
	return rc;
}

/* Wait for every gather in flight and drop what they brought (a fetch went
 * elsewhere, or the parameters are about to change). */
static int gather_drain(struct zn_trainer *t)
{
	int rc = 0;
	for (; t->pg_n; t->pg_n--, t->pg_head = (t->pg_head + 1) % GATHER_SLOTS) {
		struct gather_slot *g = &t->pg[t->pg_head];
		for (unsigned i = 0; i < ZN_ARCH_LAYER_TENSORS_MAX; i++)
			if (g->op[i]) {
				int r = coll_wait(t, 0, g->op[i]);
				rc = rc ? rc : r;
				g->op[i] = NULL;
			}
	}
	return rc;
}

/* The layer's tensors onto the device from its gathers: the oldest slot's
 * when it is this layer's, else (the others discarded) started now. */
static int gather_finish(struct zn_trainer *t, unsigned layer)
{
	const size_t esz = zn_dtype_size(t->hdt);
	int rc = 0;
	if (t->pg_n && t->pg[t->pg_head].layer != layer)
		rc = gather_drain(t);
	if (!rc && !t->pg_n)
		rc = gather_start(t, layer);
	struct gather_slot *g = &t->pg[t->pg_head];
	for (unsigned i = 0; i < t->count[layer]; i++) {
		struct tstate *s = &t->t[t->first[layer] + i];
		const size_t n = s->d.numel;
		if (s->resident || !g->op[i])
			continue;
		int r = coll_wait(t, 0, g->op[i]);
		g->op[i] = NULL;
		if (rc || (rc = r))
			continue;
		if ((rc = dev_alloc(t, n * 4, &s->dparam)))
			continue;
		t->h2d_bytes += n * esz;
		if (t->hdt == ZN_DTYPE_F32) {
			rc = to_device(t, s->dparam, g->recv[i], n * 4);
		} else if (!(rc = to_device(t, t->round_buf, g->recv[i], n * esz)) &&
			   !(rc = t->k->cast(t->kctx, s->dparam, ZN_DTYPE_F32, t->round_buf, t->hdt,
					     n))) {
			rc = zn_device_stream_synchronize(t->stream);
		}
	}
	if (t->pg_n) {
		t->pg_n--;
		t->pg_head = (t->pg_head + 1) % GATHER_SLOTS;
	}
	return rc;
}

/* After a fetch: gather ahead what the next fetches want (along the trace,
 * or the next layers in the pass's direction), layers that are not on the
 * device and not on their way already, while fewer than
 * stage3_prefetch_bucket_size elements are in flight and a slot is free
 * (0: none ahead).  With the overlapped update running, a layer's new
 * values must be in first. */
static int gather_ahead(struct zn_trainer *t, unsigned layer)
{
	const uint64_t bucket = t->cfg.zero_optimization.prefetch_bucket_size;
	uint64_t inflight = 0;
	unsigned last = layer;
	int rc = 0;
	for (unsigned k = 0; k < t->pg_n; k++)
		inflight += t->layer_elems[t->pg[(t->pg_head + k) % GATHER_SLOTS].layer];
	/* Predictions continue after what is already on its way. */
	const bool traced = t->tracking && t->trace_ok;
	size_t pos = t->tpos + t->pg_n;
	if (t->pg_n)
		last = t->pg[(t->pg_head + t->pg_n - 1) % GATHER_SLOTS].layer;
	while (!rc && t->pg_n < GATHER_SLOTS && inflight < bucket) {
		long next;
		if (traced)
			next = pos < t->norder ? (long)t->order[pos++] : -1;
		else
			next = (long)last + t->direction;
		if (next < 0 || next >= (long)t->nlayers)
			break;
		last = (unsigned)next;
		if (t->fetched[next] || t->kept[next] || !t->layer_parts[next])
			break; /* on the device already: the chain of predictions ends */
		if (t->opt_running && (rc = opt_wait_layer(t, (unsigned)next)))
			break;
		rc = gather_start(t, (unsigned)next);
		inflight += t->layer_elems[next];
	}
	return rc;
}

/* FNV-1a over the config (64 bits): the ranks compare theirs. */
static uint64_t config_hash(const struct zn_config *c)
{
	struct zn_config x = *c;
	x.device.index = 0; /* ranks pick their own GPU */
	uint64_t h = 0xcbf29ce484222325ull;
	const uint8_t *p = (const uint8_t *)&x;
	for (size_t i = 0; i < sizeof(x); i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	return h;
}

/* Every rank must train the same thing: a rank whose config differs from
 * rank 0's is named on every rank. */
static int check_same_config(struct zn_trainer *t)
{
	uint64_t h = config_hash(&t->cfg), *all = calloc((size_t)t->world, sizeof(*all));
	if (!all)
		return zn_error(-ENOMEM, "out of memory");
	int rc = zn_comm_all_gather(t->comm, &h, all, sizeof(h), ZN_DTYPE_U8);
	for (int r = 1; r < t->world && !rc; r++)
		if (all[r] != all[0])
			rc = zn_error(-EINVAL, "rank %d was given another configuration than rank 0 "
					       "(the config files or --set options differ): give "
					       "every rank the same ones", r);
	free(all);
	return rc;
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
	pthread_mutex_init(&t->opt_lock, NULL);
	pthread_cond_init(&t->opt_cond, NULL);
	t->synthetic = synthetic;
	t->offload_param = cfg->zero_optimization.offload_param.device != ZN_OFFLOAD_NONE;
	t->direction = 1;
	t->rng = cfg->data.seed | 1;
	if (check_supported(cfg, synthetic))
		goto fail;
	if (t->world > 1 && check_same_config(t))
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
		if (!(t->dcomm = zn_comm_create_nccl(t->comm, dp.ordinal)))
			goto fail;
#else
		zn_warn("this zinc was built without NCCL: the GPUs' collectives go through "
			"host memory");
#endif
	}

	/* Parameters: device copies, host master and moments. */
	t->nlayers = zn_arch_layers(&t->arch);
	t->first = calloc(t->nlayers, sizeof(unsigned));
	t->count = calloc(t->nlayers, sizeof(unsigned));
	t->t = calloc(MAX_TENSORS, sizeof(*t->t));
	t->fetched = calloc(t->nlayers, sizeof(*t->fetched));
	t->has_grads = calloc(t->nlayers, sizeof(*t->has_grads));
	t->kept = calloc(t->nlayers, sizeof(*t->kept));
	t->layer_elems = calloc(t->nlayers, sizeof(*t->layer_elems));
	if (!t->first || !t->count || !t->t || !t->fetched || !t->has_grads || !t->kept ||
	    !t->layer_elems) {
		zn_set_error("out of memory");
		goto fail;
	}
	for (unsigned l = 0; l < t->nlayers; l++) {
		struct zn_param_desc d[ZN_ARCH_LAYER_TENSORS_MAX];
		unsigned n = zn_arch_layer_params(&t->arch, l, d);
		t->first[l] = t->nt;
		t->count[l] = n;
		for (unsigned i = 0; i < n; i++) {
			struct tstate *s = &t->t[t->nt++];
			s->d = d[i];
			s->flat = t->total;
			t->total += d[i].numel;
			t->largest = ZN_MAX(t->largest, d[i].numel);
		}
	}
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
	for (unsigned i = 0; i < t->nt; i++) {
		struct tstate *s = &t->t[i];
		size_t bytes = s->d.numel * sizeof(float);
		const struct zn_zero_share sh = zn_zero_share_of(&zr, s->d.numel);
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
				     t->total);
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
		zn_zero_count(&zr, s->d.numel, &sh, &t->mem); /* zn_trainer_memory */
	}
	t->mem.rank = t->rank;
	t->mem.world = t->world;
	t->mem.stage = t->stage;
	/* Collectives stage through host buffers: W parts of the largest
	 * tensor (fp32), two so one can fill while the other moves. */
	if (t->world > 1) {
		uint64_t maxpart = 0;
		for (unsigned i = 0; i < t->nt; i++)
			maxpart = ZN_MAX(maxpart, t->t[i].part);
		t->cbuf_bytes = ZN_ALIGN_UP((size_t)maxpart * (size_t)t->world * 4 + 64, 4096);
		for (int k = 0; k < 2; k++)
			if (posix_memalign((void **)&t->cbuf[k], 4096, t->cbuf_bytes)) {
				zn_set_error("out of memory for the collectives' staging (%zu bytes)",
					     t->cbuf_bytes);
				goto fail;
			}
		if (t->dcomm && (zn_device_alloc(t->dev, (size_t)maxpart * (size_t)t->world * 4,
						 &t->dsend) ||
				 zn_device_alloc(t->dev, (size_t)maxpart * (size_t)t->world * 4,
						 &t->drecv)))
			goto fail;
		/* Gradient buckets (host comm; NCCL reduces tensor by tensor on
		 * the device): reduce_bucket_size elements over the W chunks,
		 * at most 2^26 (the staging is host memory), at least the
		 * largest part. */
		const uint64_t chunks = t->stage == 0 ? 1 : (uint64_t)t->world;
		uint64_t want = ZN_MIN(ZN_MIN(cfg->zero_optimization.reduce_bucket_size, t->total),
				       (uint64_t)1 << 26);
		t->bk_cap = (size_t)ZN_MAX(want / chunks, t->stage == 0 ? t->largest : maxpart);
		for (int k = 0; k < 2 && !t->dcomm; k++) {
			t->bk[k].e = calloc(t->nt, sizeof(*t->bk[k].e));
			if (!t->bk[k].e ||
			    posix_memalign((void **)&t->bk[k].buf, 4096,
					   t->bk_cap * ((size_t)chunks + 1) * 4)) {
				zn_set_error("out of memory for the gradient buckets (2 x %zu bytes; "
					     "lower zero_optimization.reduce_bucket_size)",
					     t->bk_cap * ((size_t)chunks + 1) * 4);
				goto fail;
			}
		}
		/* Stage 3: a layer's gathers, ahead of its fetch. */
		size_t glay = 0;
		for (unsigned l = 0; l < t->nlayers && zr.partition_params; l++) {
			size_t b = 0;
			for (unsigned i = 0; i < t->count[l]; i++)
				b += ZN_ALIGN_UP((size_t)t->t[t->first[l] + i].part *
							 ((size_t)t->world + 1) * 4, 64);
			glay = ZN_MAX(glay, b);
		}
		t->layer_parts = calloc(t->nlayers, sizeof(*t->layer_parts));
		for (unsigned i = 0; t->layer_parts && i < t->nt; i++)
			for (unsigned l = 0; l < t->nlayers; l++)
				if (i >= t->first[l] && i < t->first[l] + t->count[l] &&
				    !t->t[i].resident) {
					t->layer_parts[l] = true;
					/* (param_homes_setup counts offload_param's) */
					if (!t->offload_param)
						t->layer_elems[l] += t->t[i].d.numel;
				}
		if (!t->layer_parts ||
		    (glay && posix_memalign((void **)&t->pgbuf, 4096, GATHER_SLOTS * glay))) {
			zn_set_error("out of memory for stage 3's gather buffers (%u x %zu bytes)",
				     GATHER_SLOTS, glay);
			goto fail;
		}
		for (unsigned k = 0; k < GATHER_SLOTS && t->pgbuf; k++)
			t->pg[k].buf = t->pgbuf + k * glay;
		/* The device optimizer takes its reduced gradients from here. */
		if (t->device_opt && zn_device_alloc(t->dev, t->largest * 4, (void **)&t->dgscratch))
			goto fail;
	}

	/* offload_optimizer: none keeps the optimizer on the device (the
	 * kernels' adam op); cpu/nvme runs the CPU Adam on host state. */
	if (t->device_opt && (zn_device_alloc(t->dev, sizeof(double), (void **)&t->dsumsq) ||
			      zn_device_alloc(t->dev, sizeof(int32_t), (void **)&t->dflag)))
		goto fail;
	if (zn_loss_scaler_init(&t->scaler, &cfg->fp16))
		goto fail;
	/* 16-bit anything: a device scratch of 16-bit values as large as the
	 * largest tensor (rounding, 16-bit homes and accumulators). */
	if ((t->dtype != ZN_DTYPE_F32 || t->gdt != ZN_DTYPE_F32) &&
	    zn_device_alloc(t->dev, t->largest * 2, &t->round_buf))
		goto fail;
	/* Later micro-batches' gradients are added on the host through this. */
	if ((!t->device_opt || t->world > 1) && !(t->gstage = malloc(t->largest * 4))) {
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

	struct zn_model_mem mem = { t, dalloc, dfree, dzero, halloc, hfree, dto_host,
				    dto_device, dsync };
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
	char dir[4096];
	if (cfg->checkpoint.resume && cfg->checkpoint.dir[0] &&
	    zn_ckpt_latest(cfg->checkpoint.dir, dir, sizeof(dir)) == 0) {
		if (open_checkpoint(t, dir))
			goto fail;
	} else if (cfg->model.from[0] && open_pretrained(t, cfg->model.from)) {
		goto fail;
	}
	if (t->nvme_opt && (rc = nvme_setup(t)) != 0)
		goto fail;
	if (t->offload_param && (rc = param_homes_setup(t)) != 0)
		goto fail;
	if ((rc = materialize(t)) != 0)
		goto fail;
	close_sources(t);
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

int zn_rank_memory_plan(const struct zn_config *cfg, int world, int rank,
			struct zn_rank_memory *out)
{
	struct zn_arch arch;
	if (world < 1 || rank < 0 || rank >= world)
		return zn_error(-EINVAL, "rank %d of %d ranks: ranks are 0 .. world - 1, world >= 1",
				rank, world);
	int rc = zn_arch_from_config(cfg, &arch);
	if (rc)
		return rc;
	struct zn_zero_rules zr;
	zn_zero_rules_init(&zr, cfg, rank, world);
	memset(out, 0, sizeof(*out));
	out->rank = rank;
	out->world = world;
	out->stage = zr.stage;
	for (unsigned l = 0; l < zn_arch_layers(&arch); l++) {
		struct zn_param_desc d[ZN_ARCH_LAYER_TENSORS_MAX];
		unsigned n = zn_arch_layer_params(&arch, l, d);
		for (unsigned i = 0; i < n; i++) {
			const struct zn_zero_share sh = zn_zero_share_of(&zr, d[i].numel);
			zn_zero_count(&zr, d[i].numel, &sh, out);
		}
	}
	return 0;
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


/* ---- parameter homes (offload_param) ------------------------------------- */

/* Elements [off, off + n) of a tensor's new parameters go into its home
 * buffer, in the home dtype.  The buffer is taken (without reading the old
 * bytes) when the tensor's first element comes and given back, to be
 * written home, after its last: the optimizer's sub-groups cut tensors. */
static int home_open(struct zn_trainer *t, struct tstate *s)
{
	return s->hbuf ? 0 : zn_swapper_acquire_overwrite(t->psw, s->home, &s->hbuf);
}

/* Elements up to `end` are in: after the tensor's last, its home is written. */
static int home_close(struct zn_trainer *t, struct tstate *s, uint64_t end)
{
	if (end < s->nown)
		return 0;
	s->hbuf = NULL;
	return zn_swapper_release(t->psw, s->home, true);
}

static int home_put(struct zn_trainer *t, struct tstate *s, uint64_t off, const float *src,
		    uint64_t n)
{
	if (s->dhome) { /* a part kept on the device: rounded as parameters are */
		int r = n ? to_device(t, s->dhome + off, src, n * 4) : 0;
		return r ? r : round_to_dtype(t, s->dhome + off, n);
	}
	int rc = home_open(t, s);
	if (rc)
		return rc;
	size_t esz = zn_dtype_size(t->hdt);
	host_from_f32((uint8_t *)s->hbuf + off * esz, t->hdt, src, n);
	return home_close(t, s, off + n);
}

static int param_homes_setup(struct zn_trainer *t)
{
	const struct zn_offload_param_config *pc = &t->cfg.zero_optimization.offload_param;
	bool nvme = pc->device == ZN_OFFLOAD_NVME;
	struct zn_swapper_config swc = { .trace = t->trace };
	size_t esz = zn_dtype_size(t->hdt);
	int rc;

	/* overlap_comm (DeepSpeed: overlap the gradient reduction with the
	 * backward; on one rank the reduction is the way to the host): a
	 * stream of their own, up to GRAD_FLIGHTS layers in flight. */
	if (t->cfg.zero_optimization.overlap_comm) {
		t->copy = zn_device_stream_create(t->dev, "gradients");
		t->ev_compute = t->copy ? zn_device_event_create(t->dev) : NULL;
		if (!t->ev_compute)
			return -ENOMEM;
		for (unsigned i = 0; i < GRAD_FLIGHTS; i++)
			if (!(t->flights[i].ev = zn_device_event_create(t->dev)))
				return -ENOMEM;
	}
	for (unsigned l = 0; l < t->nlayers; l++)
		for (unsigned i = 0; i < t->count[l]; i++)
			if (!t->t[t->first[l] + i].resident)
				t->layer_elems[l] += t->t[t->first[l] + i].d.numel;
	/* Each offloaded tensor's home: host memory for all with device cpu;
	 * with nvme, DeepSpeed's max_in_cpu -- the first tensors, up to that
	 * many elements, stay in host memory, the rest go to NVMe. */
	enum zn_tier *tier = calloc(t->nt, sizeof(*tier));
	if (!tier)
		return zn_error(-ENOMEM, "out of memory");
	uint64_t in_cpu = 0, nvme_bytes = 0, largest = 0;
	const char *name = "";
	for (unsigned i = 0; i < t->nt; i++) {
		struct tstate *s = &t->t[i];
		if (s->resident)
			continue;
		/* This rank's part: one rank's homes hold whole tensors. */
		tier[i] = ZN_TIER_HOST;
		if (nvme && in_cpu + s->nown > pc->max_in_cpu) {
			tier[i] = ZN_TIER_NVME;
			nvme_bytes += ZN_ALIGN_UP(ZN_MAX(s->nown, 1) * esz, 4096);
			if (s->nown > largest) {
				largest = s->nown;
				name = s->d.name;
			}
		} else {
			in_cpu += s->nown;
		}
	}
	t->host_bytes += in_cpu * esz;
	if (nvme_bytes) {
		char buf[ZN_NVME_PATH_MAX];
		const char *paths[16];
		int np = zn_nvme_paths_split(pc->nvme_path, buf, paths, 16);
		struct zn_bufpool_config bc;
		if (np < 1)
			rc = zn_error(-EINVAL, "zero_optimization.offload_param.nvme_path: give the "
					       "directory for the parameters' swap files");
		else
			rc = zn_offload_param_pool(pc, largest, name, esz, 1, &bc);
		if (rc) {
			free(tier);
			return rc;
		}
		t->paio = zn_aio_create(&t->cfg.aio);
		struct zn_store_config sc = { .paths = paths, .npaths = (unsigned)np,
					      .capacity = nvme_bytes, .stripe_bytes = pc->stripe_size,
					      .checksum = pc->checksum };
		t->pstore = t->paio ? zn_store_create(&sc, t->paio) : NULL;
		t->ppool = t->pstore ? zn_bufpool_create(&bc, t->paio) : NULL;
		if (!t->ppool) {
			free(tier);
			return -EINVAL;
		}
		swc.store = t->pstore;
		swc.pool = t->ppool;
	}
	t->psw = zn_swapper_create(&swc);
	rc = 0;
	for (unsigned i = 0; t->psw && i < t->nt && !rc; i++)
		if (!t->t[i].resident)
			rc = zn_swapper_add(t->psw, t->t[i].d.name, ZN_MAX(t->t[i].nown, 1) * esz,
					    tier[i], &t->t[i].home);
	free(tier);
	return !t->psw ? -EINVAL : rc;
}

/* ---- optimizer states on NVMe (offload_optimizer: nvme) ------------------ */

static uint64_t sub_group(const struct zn_trainer *t)
{
	uint64_t sub = t->cfg.zero_optimization.sub_group_size;
	uint64_t total = ZN_MAX(t->own_total, 1);
	return !sub || sub > total ? total : sub;
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
	struct zn_optswap_config c = {
		.aio = t->aio, .params = ZN_MAX(t->own_total, 1), .sub_group_size = sub_group(t),
		.nstates = 3,
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
	return t->os ? 0 : -EINVAL;
}

/* Sub-group buffers that take tensors' states in flat order (writing each
 * group to NVMe once it is full) or give them out (reading each group
 * when first needed): how the states reach NVMe at the start and a
 * checkpoint at a save, with one group and one tensor in memory. */
struct groups {
	struct zn_trainer *t;
	uint64_t sub, cur;     /* cur: the group in st, or UINT64_MAX */
	float *st[3];
	/* Putting: a full group is written by a thread of its own from a
	 * second set of buffers while the next one fills (start-up writes a
	 * model's states once: sequential, but not waited for). */
	bool writer;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	float *wst[3];
	uint64_t wgroup;
	bool wbusy, wstop;
	int wrc;
	char wmsg[512];
};

static void *groups_writer(void *arg)
{
	struct groups *g = arg;
	pthread_mutex_lock(&g->mu);
	for (;;) {
		while (!g->wbusy && !g->wstop)
			pthread_cond_wait(&g->cv, &g->mu);
		if (!g->wbusy)
			break;
		pthread_mutex_unlock(&g->mu);
		int rc = zn_optswap_write_group(g->t->os, g->wgroup, (const float *const *)g->wst);
		pthread_mutex_lock(&g->mu);
		if (rc && !g->wrc) {
			g->wrc = rc;
			snprintf(g->wmsg, sizeof(g->wmsg), "%s", zn_last_error());
		}
		g->wbusy = false;
		pthread_cond_broadcast(&g->cv);
	}
	pthread_mutex_unlock(&g->mu);
	return NULL;
}

/* Until the writer is idle; its first failure (with its message). */
static int groups_wait(struct groups *g)
{
	if (!g->writer)
		return 0;
	pthread_mutex_lock(&g->mu);
	while (g->wbusy)
		pthread_cond_wait(&g->cv, &g->mu);
	int rc = g->wrc;
	pthread_mutex_unlock(&g->mu);
	return rc ? zn_error(rc, "%s", g->wmsg) : 0;
}

/* Hand group gi (the filled st) to the writer and fill the other set. */
static int groups_write(struct groups *g, uint64_t gi)
{
	if (!g->writer)
		return zn_optswap_write_group(g->t->os, gi, (const float *const *)g->st);
	int rc = groups_wait(g);
	if (rc)
		return rc;
	pthread_mutex_lock(&g->mu);
	for (int k = 0; k < 3; k++) {
		float *x = g->wst[k];
		g->wst[k] = g->st[k];
		g->st[k] = x;
	}
	g->wgroup = gi;
	g->wbusy = true;
	pthread_cond_broadcast(&g->cv);
	pthread_mutex_unlock(&g->mu);
	return 0;
}

static int groups_open(struct groups *g, struct zn_trainer *t, bool put)
{
	memset(g, 0, sizeof(*g));
	g->t = t;
	g->sub = sub_group(t);
	g->cur = UINT64_MAX;
	for (int k = 0; k < 3; k++)
		if (!(g->st[k] = malloc(g->sub * 4)) || (put && !(g->wst[k] = malloc(g->sub * 4))))
			return zn_error(-ENOMEM, "out of host memory for a sub-group of %" PRIu64
						 " elements; lower zero_optimization.sub_group_size",
					g->sub);
	if (put) {
		pthread_mutex_init(&g->mu, NULL);
		pthread_cond_init(&g->cv, NULL);
		int err = pthread_create(&g->thread, NULL, groups_writer, g);
		if (err) {
			pthread_mutex_destroy(&g->mu);
			pthread_cond_destroy(&g->cv);
			return zn_error(-err, "cannot start the sub-group writer: %s", strerror(err));
		}
		g->writer = true;
	}
	return 0;
}

/* Putting: the last write waited for (its result returned). */
static int groups_close(struct groups *g)
{
	int rc = groups_wait(g);
	if (g->writer) {
		pthread_mutex_lock(&g->mu);
		g->wstop = true;
		pthread_cond_broadcast(&g->cv);
		pthread_mutex_unlock(&g->mu);
		pthread_join(g->thread, NULL);
		pthread_mutex_destroy(&g->mu);
		pthread_cond_destroy(&g->cv);
		g->writer = false;
	}
	for (int k = 0; k < 3; k++) {
		free(g->st[k]);
		free(g->wst[k]);
	}
	return rc;
}

/* Tensor s's states (3 arrays of its part, nown) into the groups (`put`: a
 * group is written once full) or out of them (a group is read when first
 * needed). */
static int groups_move(struct groups *g, const struct tstate *s, float *const *a, bool put)
{
	const uint64_t end = s->oflat + s->nown;
	for (uint64_t p = s->oflat; p < end;) {
		uint64_t gi = p / g->sub, gfirst = gi * g->sub;
		uint64_t gend = ZN_MIN(gfirst + g->sub, ZN_MAX(g->t->own_total, 1));
		uint64_t take = ZN_MIN(end, gend) - p;
		int rc;
		if (!put && g->cur != gi) {
			if ((rc = zn_optswap_read_group(g->t->os, gi, g->st)))
				return rc;
			g->cur = gi;
		}
		for (int k = 0; k < 3; k++) {
			float *grp = g->st[k] + (p - gfirst);
			if (!a[k]) { /* put: zeros (fresh moments) */
				memset(grp, 0, take * 4);
				continue;
			}
			float *ten = a[k] + (p - s->oflat);
			memcpy(put ? grp : ten, put ? ten : grp, take * 4);
		}
		p += take;
		if (put && p == gend && (rc = groups_write(g, gi)))
			return rc;
	}
	return 0;
}

/* ---- starting weights ------------------------------------------------------- */

static int tensor_from_sources(struct zn_trainer *t, unsigned i, float *master, float *m,
			       float *v);

/* Every tensor once, in order: made from its source, then sent where it
 * lives (device, home, host arrays, NVMe sub-groups). */
static int materialize(struct zn_trainer *t)
{
	struct groups g = { 0 };
	float *scratch[3] = { NULL, NULL, NULL };
	/* Whole tensors are made in scratch arrays unless the host arrays
	 * hold whole tensors (one rank, states in host memory). */
	const bool whole = !t->nvme_opt && t->own_total == t->total;
	/* Without a checkpoint the moments start at zero: no arrays for
	 * them (a large embedding's would be gigabytes), zeros are written. */
	const bool fresh = !t->src_ckpt && !t->src_shards;
	int rc = 0;
	if (t->nvme_opt && (rc = groups_open(&g, t, true)))
		goto out;
	for (int k = 0; k < (fresh ? 1 : 3) && !rc && !whole; k++)
		if (!(scratch[k] = malloc(t->largest * 4)))
			rc = zn_error(-ENOMEM, "out of memory");
	for (unsigned i = 0; i < t->nt && !rc; i++) {
		struct tstate *s = &t->t[i];
		size_t bytes = s->d.numel * 4, obytes = s->nown * 4;
		float *a[3] = { s->master, s->m, s->v };
		if (!whole)
			memcpy(a, scratch, sizeof(a));
		if (fresh) /* host arrays come zeroed (calloc) */
			a[1] = a[2] = NULL;
		if ((rc = tensor_from_sources(t, i, a[0], a[1], a[2])))
			break;
		/* This rank's part of the states (NULL: zeros). */
		float *own[3] = { a[0] + s->lo, a[1] ? a[1] + s->lo : NULL,
				  a[2] ? a[2] + s->lo : NULL };
		if (!whole && !t->nvme_opt) {
			memcpy(s->master, own[0], obytes);
			if (!fresh) {
				memcpy(s->m, own[1], obytes);
				memcpy(s->v, own[2], obytes);
			}
		}
		if (!s->resident) {
			rc = home_put(t, s, 0, own[0], s->nown);
		} else if (!(rc = to_device(t, s->dparam, a[0], bytes))) {
			t->h2d_bytes += bytes;
			rc = round_to_dtype(t, s->dparam, s->d.numel);
		}
		if (!rc && t->device_opt && s->nown && !(rc = to_device(t, s->dmaster, own[0], obytes))) {
			if (fresh && !(rc = zn_device_memset(t->dev, s->dm, 0, obytes, NULL)))
				rc = zn_device_memset(t->dev, s->dv, 0, obytes, NULL);
			else if (!fresh && !(rc = to_device(t, s->dm, own[1], obytes)))
				rc = to_device(t, s->dv, own[2], obytes);
		}
		if (!rc && t->nvme_opt)
			rc = groups_move(&g, s, own, true);
	}
	if (!rc && t->psw)
		rc = zn_swapper_flush(t->psw);
out:
	if (t->nvme_opt) {
		int r = groups_close(&g); /* the last group's write */
		rc = rc ? rc : r;
	}
	for (int k = 0; k < 3; k++)
		free(scratch[k]);
	return rc;
}

/* One sub-group's update: AdamW over each tensor's part of the group (its
 * own weight decay), and the new parameters straight to where the next
 * forward reads them: the device, or the tensor's home. */
static int nvme_update(void *user, uint64_t group, uint64_t first, uint64_t n,
		       float *const *st)
{
	struct nvme_update *u = user;
	struct zn_trainer *t = u->t;
	(void)group;
	for (unsigned i = 0; i < t->nt; i++) {
		struct tstate *s = &t->t[i];
		/* Positions in this rank's own flat order; l is within its part. */
		uint64_t a = ZN_MAX(first, s->oflat), b = ZN_MIN(first + n, s->oflat + s->nown);
		if (a >= b)
			continue;
		uint64_t o = a - first, l = a - s->oflat;
		struct zn_adam_hparams h = u->hp;
		if (!s->d.decay)
			h.weight_decay = 0;
		struct zn_adam_tensors at = {
			.n = b - a, .param = st[0] + o,
			.grad = (const uint8_t *)s->grad + l * zn_dtype_size(t->gdt),
			.grad_dtype = adam_dtype(t->gdt), .exp_avg = st[1] + o,
			.exp_avg_sq = st[2] + o };
		/* 16-bit homes: the update writes them as it goes (fused,
		 * vectorized, on every thread). */
		bool fused = !s->resident && t->hdt != ZN_DTYPE_F32;
		int rc;
		if (fused) {
			if ((rc = home_open(t, s)))
				return rc;
			at.param_copy = (uint16_t *)s->hbuf + l;
			at.copy_dtype = adam_dtype(t->hdt);
		}
		if ((rc = zn_adam_step(&h, u->step, u->grad_scale, &at, &u->ex)))
			return rc;
		if (fused) {
			rc = home_close(t, s, l + (b - a));
		} else if (!s->resident) {
			rc = home_put(t, s, l, st[0] + o, b - a);
		} else if (t->overlap) {
			/* The compute thread owns the device: it applies these. */
			memcpy(s->staged + l, st[0] + o, (b - a) * 4);
			s->pending = true;
		} else {
			float *dp = (float *)s->dparam + s->lo + l;
			if (!(rc = to_device(t, dp, st[0] + o, (b - a) * 4)))
				rc = round_to_dtype(t, dp, b - a);
			t->h2d_bytes += (b - a) * 4;
		}
		if (rc)
			return rc;
		if (t->overlap && b == s->oflat + s->nown) {
			/* Tensors this rank owns nothing of are done too. */
			unsigned j = i + 1;
			while (j < t->nt && !t->t[j].nown)
				j++;
			pthread_mutex_lock(&t->opt_lock);
			t->opt_done = j;
			pthread_cond_broadcast(&t->opt_cond);
			pthread_mutex_unlock(&t->opt_lock);
		}
	}
	return 0;
}

/* ---- the overlapped update ------------------------------------------------- */

static void *opt_main(void *arg)
{
	struct zn_trainer *t = arg;
	uint64_t t0 = zn_now_ns();
	int rc = zn_optswap_step(t->os, nvme_update, &t->upd);
	pthread_mutex_lock(&t->opt_lock);
	t->opt_rc = rc;
	if (rc)
		snprintf(t->opt_msg, sizeof(t->opt_msg), "%s", zn_last_error());
	t->opt_ns = zn_now_ns() - t0;
	t->opt_finished = true;
	pthread_cond_broadcast(&t->opt_cond);
	pthread_mutex_unlock(&t->opt_lock);
	return NULL;
}

static int opt_launch(struct zn_trainer *t)
{
	t->opt_done = 0;
	while (t->opt_done < t->nt && !t->t[t->opt_done].nown)
		t->opt_done++;
	/* Resident tensors' parts are all-gathered as they are applied. */
	for (unsigned i = 0; i < t->nt && t->world > 1 && t->stage >= 1; i++)
		t->t[i].sync = t->t[i].resident;
	t->opt_finished = false;
	t->opt_rc = 0;
	int err = pthread_create(&t->opt_thread, NULL, opt_main, t);
	if (err)
		return zn_error(-err, "cannot start the optimizer thread: %s", strerror(err));
	t->opt_running = true;
	return 0;
}

/* A tensor's staged new parameters onto the device. */
static int apply_staged(struct zn_trainer *t, struct tstate *s)
{
	int rc = 0;
	if (s->pending) {
		float *dp = (float *)s->dparam + s->lo;
		s->pending = false;
		if (!(rc = to_device(t, dp, s->staged, s->nown * 4)))
			rc = round_to_dtype(t, dp, s->nown);
		t->h2d_bytes += s->nown * 4;
	}
	/* Several ranks: every rank's new part, on every rank. */
	if (!rc && s->sync) {
		s->sync = false;
		rc = params_allgather(t, s);
	}
	return rc;
}

/* The update is over: join it, apply what it staged, report how it went. */
static int opt_wait_all(struct zn_trainer *t)
{
	if (!t->opt_running)
		return 0;
	uint64_t t0 = zn_now_ns();
	pthread_join(t->opt_thread, NULL);
	t->opt_running = false;
	t->stall_ns += zn_now_ns() - t0;
	t->opt_joined = true;
	zn_optswap_last_stats(t->os, &t->opt_stats);
	if (t->opt_rc)
		return zn_error(t->opt_rc, "%s", t->opt_msg);
	int rc = 0;
	for (unsigned i = 0; i < t->nt && !rc; i++)
		rc = apply_staged(t, &t->t[i]);
	return rc;
}

/* Until the update has finished the layer's tensors; then its resident
 * tensors' new values go onto the device. */
static int opt_wait_layer(struct zn_trainer *t, unsigned layer)
{
	unsigned need = t->first[layer] + t->count[layer];
	uint64_t t0 = zn_now_ns();
	bool failed;
	pthread_mutex_lock(&t->opt_lock);
	while (t->opt_done < need && !t->opt_finished)
		pthread_cond_wait(&t->opt_cond, &t->opt_lock);
	failed = t->opt_finished && t->opt_rc;
	pthread_mutex_unlock(&t->opt_lock);
	t->stall_ns += zn_now_ns() - t0;
	if (failed)
		return opt_wait_all(t);
	int rc = 0;
	for (unsigned i = 0; i < t->count[layer] && !rc; i++)
		rc = apply_staged(t, &t->t[t->first[layer] + i]);
	return rc;
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
			t->hin[i] = (int32_t)(t->rng % (uint64_t)zn_arch_vocab(&t->arch));
			t->htgt[i] = (int32_t)((t->rng >> 20) % (uint64_t)zn_arch_vocab(&t->arch));
		}
	} else if ((rc = zn_data_next_batch(d, t->hin, t->htgt)) != 0) {
		return rc;
	}
	unsigned counted = 0;
	for (size_t i = 0; i < BT; i++)
		counted += t->htgt[i] >= 0;
	/* The previous micro-batch's backward may still be running on the
	 * compute stream and reads din (the embedding's backward, last): the
	 * synchronous copies below are not ordered after it. */
	if ((rc = zn_device_stream_synchronize(t->stream)) ||
	    (rc = to_device(t, t->din, t->hin, BT * 4)) || (rc = to_device(t, t->dtgt, t->htgt, BT * 4)))
		return rc;
	struct zn_param_source src = { t, fetch, release };
	/* DeepSpeed's scaling: each micro-batch's mean loss, divided by the
	 * accumulation steps. */
	float gs = counted ? (float)(backward ? t->scaler.scale : 1.0) /
				     ((float)counted * scale_den)
			   : 0.0f;
	uint64_t t0 = zn_now_ns();
	t->direction = 1;
	rc = zn_arch_forward(&t->model, &src, t->din, t->dtgt, backward, gs, &dloss);
	uint64_t t1 = zn_now_ns();
	t->compute_ns += t1 - t0;
	zn_trace_span(t->trace, backward ? "forward" : "eval", "compute", "device", t0, t1, 0);
	/* The previous update read the gradient accumulators this backward
	 * is about to write: it must be over (the forward waited for every
	 * tensor already; this also takes its last writes). */
	if (!rc && backward)
		rc = opt_wait_all(t);
	if (!rc && backward) {
		t->direction = -1;
		rc = zn_arch_backward(&t->model, &src, t->din);
		uint64_t t2 = zn_now_ns();
		t->compute_ns += t2 - t1;
		zn_trace_span(t->trace, "backward", "compute", "device", t1, t2, 0);
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

	struct traffic tr0;
	traffic_now(t, &tr0);
	t->compute_ns = 0;
	t->opt_joined = false;
	/* offload_param: gradients accumulate on the host, per layer (the
	 * first micro-batch's copy starts them); resident tensors' on the
	 * device. */
	for (unsigned i = 0; i < t->nt; i++)
		if (t->t[i].dev_grads &&
		    (rc = zn_device_memset(t->dev, t->t[i].dgrad, 0, t->t[i].d.numel * 4, NULL)))
			return rc;
	const uint64_t comm0 = t->comm_bytes, commns0 = t->comm_ns, celems0 = t->comm_elems;
	/* offload_param: the fetch trace is recorded on a step without one
	 * and followed on the next. */
	if (t->offload_param) {
		t->tracking = true;
		t->tpos = 0;
		if (!t->trace_ok) {
			t->recording = true;
			t->norder = 0;
		}
	}
	for (uint32_t a = 0; a < t->accum; a++) {
		double l;
		t->micro_i = a;
		/* DeepSpeed averages over micro-batches and ranks. */
		if ((rc = micro(t, t->train, true, (float)(t->accum * (uint32_t)t->world), &l))) {
			t->tracking = t->recording = false;
			return rc;
		}
		loss_sum += l;
	}
	/* Several ranks: the last buckets' reductions; no gathered parameters
	 * outlive the update. */
	if (t->bk[0].buf && (rc = grads_settle_all(t)))
		return rc;
	if (t->pgbuf && (rc = gather_drain(t)))
		return rc;
	if (t->offload_param) {
		if (t->recording)
			t->trace_ok = true;
		t->tracking = t->recording = false;
		drop_kept(t);
		/* Every gradient on the host before anything reads them. */
		if (t->copy &&
		    ((rc = flights_reap(t, true)) || (rc = zn_device_stream_synchronize(t->copy))))
			return rc;
	}
	/* Gradients in the training dtype, then to the host; global norm over
	 * every tensor (of the scaled gradients). */
	double sumsq = 0;
	bool finite = true;
	struct zn_adam_exec ex = { .pool = t->pool };
	const double scale = t->scaler.scale;
	uint64_t tg = zn_now_ns();
	/* The mean loss over every rank's micro-batches (added in rank order). */
	if ((rc = sum_doubles(t, &loss_sum, 1)))
		return rc;
	const bool device_norm = t->device_opt && t->world == 1;
	if (device_norm) {
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
	/* Gradients that accumulated on the device cross (and are reduced
	 * over the ranks) now; the others did at release. */
	for (unsigned i = 0; i < t->nt && !device_norm; i++) {
		struct tstate *s = &t->t[i];
		if (s->dev_grads && (rc = t->world > 1 ? grads_reduce(t, s, true)
						       : grads_to_host(t, s, true)))
			return rc;
	}
	if (!device_norm && t->bk[0].buf && (rc = grads_settle_all(t)))
		return rc;
	for (unsigned i = 0; i < t->nt && !device_norm; i++) {
		struct tstate *s = &t->t[i];
		struct zn_adam_grad_stats gst;
		if ((rc = zn_adam_grad_check(s->grad, adam_dtype(t->gdt), s->nown, &ex, &gst)))
			return rc;
		sumsq += gst.sumsq;
		finite &= gst.finite;
	}
	if (t->world > 1 && t->own_total < t->total) {
		/* The global norm and the overflow check over every rank's part
		 * (stage 0's ranks each hold all of it, already summed). */
		double v[2] = { sumsq, finite ? 0 : 1 };
		if ((rc = sum_doubles(t, v, 2)))
			return rc;
		sumsq = v[0];
		finite = v[1] == 0;
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
		t->upd = (struct nvme_update){ .t = t, .hp = hp, .grad_scale = (float)(clip / scale),
					       .step = t->updates + 1, .ex = ex };
		if (t->overlap) {
			rc = opt_launch(t);
		} else if (!(rc = zn_optswap_step(t->os, nvme_update, &t->upd))) {
			if (t->psw)
				rc = zn_swapper_flush(t->psw);
			if (!rc)
				rc = params_allgather_all(t);
		}
		if (rc)
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
			 * becomes the parameters.  Several ranks: over this
			 * rank's part, with its reduced gradients from the host. */
			const float *dg = s->dgrad;
			float *dp = s->dhome ? s->dhome : (float *)s->dparam + s->lo;
			if (t->world > 1) {
				host_to_f32(t->gstage, s->grad, t->gdt, s->nown);
				if ((rc = to_device(t, t->dgscratch, t->gstage, s->nown * 4)))
					return rc;
				dg = t->dgscratch;
			}
			if (s->nown &&
			    ((rc = t->k->adam(t->kctx, &h, t->updates + 1, (float)(clip / scale),
					      s->dmaster, dg, s->dm, s->dv, s->nown)) ||
			     (rc = zn_device_stream_synchronize(t->stream)) ||
			     (rc = zn_device_copy_async(t->dev, dp, s->dmaster, s->nown * 4,
							ZN_COPY_DEVICE_TO_DEVICE, NULL)) ||
			     (rc = round_to_dtype(t, dp, s->nown))))
				return rc;
			continue;
		}
		struct zn_adam_tensors at = { .n = s->nown, .param = s->master, .grad = s->grad,
					      .grad_dtype = adam_dtype(t->gdt), .exp_avg = s->m,
					      .exp_avg_sq = s->v };
		/* 16-bit homes are written by the update itself. */
		bool fused = !s->resident && t->hdt != ZN_DTYPE_F32;
		if (fused) {
			if ((rc = home_open(t, s)))
				return rc;
			at.param_copy = s->hbuf;
			at.copy_dtype = adam_dtype(t->hdt);
		}
		/* Unscale and clip, fused into the update. */
		if ((rc = zn_adam_step(&h, t->updates + 1, (float)(clip / scale), &at, &ex)))
			return rc;
		if (fused) {
			rc = home_close(t, s, s->nown);
		} else if (!s->resident) {
			rc = home_put(t, s, 0, s->master, s->nown);
		} else if (s->nown && !(rc = to_device(t, (float *)s->dparam + s->lo, s->master,
							s->nown * 4))) {
			t->h2d_bytes += s->nown * 4;
			rc = round_to_dtype(t, (float *)s->dparam + s->lo, s->nown);
		}
		if (rc)
			return rc;
	}
	if (!skipped && !t->os && (rc = params_allgather_all(t)))
		return rc;
	if (!skipped && !t->os && t->psw && (rc = zn_swapper_flush(t->psw)))
		return rc;
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
		struct traffic tr;
		zn_device_memstats(t->dev, &ms);
		traffic_now(t, &tr);
		uint64_t now = zn_now_ns();
		*out = (struct zn_step_info){
			.step = t->step, .loss = loss_sum / (t->accum * (uint32_t)t->world),
			.lr = hp.lr, .grad_norm = norm,
			.tokens = (uint64_t)t->B * (uint64_t)t->T * t->accum * (uint64_t)t->world,
			.step_s = (double)(now - t0) / 1e9, .device_bytes = ms.in_use,
			.device_peak = ms.peak, .host_bytes = t->host_bytes,
			.loss_scale = scale, .skipped = skipped,
			.compute_s = (double)t->compute_ns / 1e9,
			.optimizer_s = t->overlap ? (t->opt_joined ? (double)t->opt_ns / 1e9 : 0)
						  : (double)(now - ta) / 1e9,
			.stall_s = (double)(tr.stall_ns - tr0.stall_ns) / 1e9,
			.nvme_read_bytes = tr.nvme_read - tr0.nvme_read,
			.nvme_write_bytes = tr.nvme_write - tr0.nvme_write,
			.h2d_bytes = tr.h2d - tr0.h2d, .d2h_bytes = tr.d2h - tr0.d2h,
			.comm_bytes = t->comm_bytes - comm0, .comm_elems = t->comm_elems - celems0,
			.comm_s = (double)(t->comm_ns - commns0) / 1e9,
		};
		struct zn_gpt2_profile gp;
		zn_arch_profile_take(&t->model, &gp);
		out->recompute_s = gp.recompute_s;
		out->act_offload_s = gp.keep_s + gp.restore_s;
		struct zn_optswap_stats os = { 0 };
		if (t->overlap && t->opt_joined)
			os = t->opt_stats; /* the previous step's update, finished in this one */
		else if (t->os && !t->overlap && !skipped)
			zn_optswap_last_stats(t->os, &os);
		out->nvme_read_bytes += os.bytes_read;
		out->nvme_write_bytes += os.bytes_written;
		if (!t->overlap)
			out->stall_s += os.read_wait_s + os.write_wait_s;
	}
	return 0;
}

int zn_trainer_eval(struct zn_trainer *t, double *loss)
{
	int wrc = opt_wait_all(t);
	if (wrc)
		return wrc;
	if (!t->val)
		return zn_error(-ENOENT, "data.val: no validation data configured");
	/* Each rank evaluates its turns of the split's windows; the whole
	 * split is as many rounds as give every rank a window. */
	uint64_t n = t->cfg.data.val_steps
			     ? t->cfg.data.val_steps
			     : ZN_MAX(zn_data_batches_per_epoch(t->val) / (uint64_t)t->world, 1);
	double sum = 0;
	zn_data_rewind(t->val);
	for (uint64_t i = 0; i < n; i++) {
		double l;
		int rc = micro(t, t->val, false, 1.0f, &l);
		if (rc)
			return rc;
		sum += l;
	}
	int rc = sum_doubles(t, &sum, 1);
	*loss = n ? sum / (double)(n * (uint64_t)t->world) : 0;
	return rc;
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

/* The shape a tensor has in model.safetensors: Hugging Face's.  c_attn,
 * c_proj and c_fc are Conv1D there, stored transposed (C, OC); wte has the
 * real vocabulary's rows (the padded ones are zinc's own). */
static void hf_shape(const struct tstate *s, const struct zn_gpt2_config *c, uint64_t shape[2],
		     uint64_t *bytes)
{
	uint64_t rows = (uint64_t)s->d.shape[0];
	if (strcmp(s->d.name, "wte.weight") == 0)
		rows = (uint64_t)c->vocab_size;
	if (s->d.hf_transposed) {
		shape[0] = (uint64_t)s->d.shape[1];
		shape[1] = rows;
	} else {
		shape[0] = rows;
		shape[1] = s->d.ndim == 2 ? (uint64_t)s->d.shape[1] : 0;
	}
	*bytes = (s->d.ndim == 2 ? shape[0] * shape[1] : rows) * 4;
}

static void transpose(const float *src, float *dst, int64_t R, int64_t C)
{
	for (int64_t r = 0; r < R; r++)
		for (int64_t k = 0; k < C; k++)
			dst[k * R + r] = src[r * C + k];
}

static void model_shape_string(const struct zn_trainer *t, char *out, size_t len)
{
	zn_arch_describe(&t->arch, out, len);
}

/* A Llama's weights leave as a Hugging Face folder, in the training dtype
 * (what transformers' from_pretrained reads). */
static const char *hf_dtype(const struct zn_trainer *t)
{
	return t->dtype == ZN_DTYPE_BF16 ? "bfloat16" : t->dtype == ZN_DTYPE_F16 ? "float16"
										 : "float32";
}

/* The tensors' descriptions in model order (for the Hugging Face folder
 * reader and writer); NULL + last error. */
static struct zn_param_desc *all_descs(const struct zn_trainer *t)
{
	struct zn_param_desc *d = calloc(t->nt ? t->nt : 1, sizeof(*d));
	if (!d) {
		zn_set_error("out of memory");
		return NULL;
	}
	for (unsigned i = 0; i < t->nt; i++)
		d[i] = t->t[i].d;
	return d;
}

static const char *const state_suffix[3] = { "master", "exp_avg", "exp_avg_sq" };

/* The metadata every optimizer file carries (the strings live in *m). */
struct ckpt_meta {
	char step[32], updates[32], shape[512], world[16], rank[16];
	char hex[2 * sizeof(struct zn_data_pos) + 1];
	char shex[2 * sizeof(struct zn_loss_scaler) + 1];
	struct zn_st_meta kv[8];
};

static size_t ckpt_meta(struct zn_trainer *t, struct ckpt_meta *m, bool sharded)
{
	struct zn_data_pos pos;
	memset(&pos, 0, sizeof(pos));
	if (t->train)
		zn_data_tell(t->train, &pos);
	hex_encode(&pos, sizeof(pos), m->hex);
	hex_encode(&t->scaler, sizeof(t->scaler), m->shex);
	snprintf(m->step, sizeof(m->step), "%" PRIu64, t->step);
	snprintf(m->updates, sizeof(m->updates), "%" PRIu64, t->updates);
	snprintf(m->world, sizeof(m->world), "%d", t->world);
	snprintf(m->rank, sizeof(m->rank), "%d", t->rank);
	model_shape_string(t, m->shape, sizeof(m->shape));
	struct zn_st_meta kv[8] = { { "zinc.step", m->step }, { "zinc.data_pos", m->hex },
				    { "zinc.model", m->shape }, { "zinc.version", zn_version() },
				    { "zinc.updates", m->updates }, { "zinc.loss_scaler", m->shex },
				    { "zinc.world", m->world }, { "zinc.rank", m->rank } };
	memcpy(m->kv, kv, sizeof(kv));
	return sharded ? 8 : 6;
}

/* The device optimizer's states of this rank's parts into the host arrays. */
static int stage_device_states(struct zn_trainer *t)
{
	for (unsigned i = 0; i < t->nt && t->device_opt; i++) {
		struct tstate *s = &t->t[i];
		int r;
		if (s->nown && ((r = to_host(t, s->master, s->dmaster, s->nown * 4)) ||
				(r = to_host(t, s->m, s->dm, s->nown * 4)) ||
				(r = to_host(t, s->v, s->dv, s->nown * 4))))
			return r;
	}
	return 0;
}

/* Every rank's result of a step they took together: a rank that failed is
 * named on the others. */
static int agree_rc(struct zn_trainer *t, int rc, const char *what)
{
	if (t->world == 1)
		return rc;
	int32_t mine = rc, *all = calloc((size_t)t->world, sizeof(*all));
	if (!all)
		return zn_error(-ENOMEM, "out of memory");
	int crc = zn_comm_all_gather(t->comm, &mine, all, sizeof(mine), ZN_DTYPE_U8);
	for (int r = 0; r < t->world && !crc && !rc; r++)
		if (all[r])
			rc = zn_error(all[r], "%s: rank %d failed (its own message says why)", what, r);
	free(all);
	return rc ? rc : crc;
}

static int save_whole(struct zn_trainer *t);
static int save_sharded(struct zn_trainer *t);

/* A checkpoint is written tensor by tensor, so saving needs one tensor's
 * states in memory whatever the model's size (NVMe states come back one
 * sub-group at a time).  One rank, or replicas (stage 0): rank 0 writes
 * model.safetensors and optimizer.safetensors side by side.  Partitioned
 * states (stage >= 1 on several ranks): every rank writes its parts into
 * one directory, committed when all have (see save_sharded). */
int zn_trainer_save(struct zn_trainer *t)
{
	if (!t->cfg.checkpoint.dir[0])
		return zn_error(-EINVAL, "checkpoint.dir: not set; nowhere to save");
	int rc = opt_wait_all(t);
	if (!rc && t->psw)
		rc = zn_swapper_flush(t->psw);
	if (!rc)
		rc = stage_device_states(t);
	if (t->world == 1 || rc)
		return rc ? rc : save_whole(t);
	if (t->own_total == t->total)
		return agree_rc(t, t->rank == 0 ? save_whole(t) : 0, "checkpoint");
	return save_sharded(t);
}

/* Partitioned: rank 0 opens the checkpoint's temporary directory and
 * tells the others where it is; each rank writes
 * optimizer-RRRRR-of-WWWWW.safetensors with the master weights and moments
 * of its parts (the parts of each tensor: see struct tstate); rank 0
 * commits only when every rank has written (and fsynced) its file, else
 * the previous checkpoint stays the latest.  `zinc consolidate` joins the
 * parts into model.safetensors; resuming re-partitions them for any
 * number of ranks. */
static int save_sharded(struct zn_trainer *t)
{
	struct zn_ckpt *c = NULL;
	char dir[4200] = "";
	int rc = 0;
	zn_device_trim(t->dev);
	if (t->rank == 0) {
		c = zn_ckpt_begin(t->cfg.checkpoint.dir, t->step);
		if (c)
			snprintf(dir, sizeof(dir), "%s", zn_ckpt_file(c, ""));
		else
			rc = -EIO;
	}
	int brc = zn_comm_broadcast(t->comm, dir, sizeof(dir), 0);
	if (brc) {
		if (c)
			zn_ckpt_abort(c);
		return brc;
	}
	if ((rc = agree_rc(t, rc, "checkpoint")))
		return rc;
	struct zn_st_tensor *ot = calloc(3 * (size_t)t->nt, sizeof(*ot));
	char (*names)[ZN_PARAM_NAME_MAX + 24] = calloc(3 * (size_t)t->nt, sizeof(*names));
	float *scratch[3] = { NULL, NULL, NULL };
	struct groups g = { 0 };
	struct zn_st_writer *ow = NULL;
	size_t n = 0;
	if (!ot || !names)
		rc = zn_error(-ENOMEM, "out of memory");
	for (int k = 0; k < 3 && !rc && t->nvme_opt; k++)
		if (!(scratch[k] = malloc(t->largest * 4)))
			rc = zn_error(-ENOMEM, "out of memory for checkpoint staging");
	if (!rc && t->nvme_opt)
		rc = groups_open(&g, t, false);
	for (unsigned i = 0; i < t->nt && !rc; i++) {
		const struct tstate *s = &t->t[i];
		for (int k = 0; k < 3 && s->nown; k++, n++) {
			snprintf(names[n], sizeof(names[0]), "%s.%s", s->d.name, state_suffix[k]);
			ot[n] = (struct zn_st_tensor){ .name = names[n], .dtype = ZN_ST_F32,
						       .ndim = 1, .shape = { s->nown },
						       .bytes = s->nown * 4 };
		}
	}
	char path[4400];
	snprintf(path, sizeof(path), "%soptimizer-%05d-of-%05d.safetensors", dir, t->rank,
		 t->world);
	struct ckpt_meta m;
	size_t nm = ckpt_meta(t, &m, true);
	if (!rc)
		rc = zn_st_writer_begin(path, ot, n, m.kv, nm, &ow);
	for (unsigned i = 0; i < t->nt && !rc; i++) {
		struct tstate *s = &t->t[i];
		float *a[3] = { s->master, s->m, s->v };
		if (!s->nown)
			continue;
		if (t->nvme_opt) {
			memcpy(a, scratch, sizeof(a));
			if ((rc = groups_move(&g, s, a, false)))
				break;
		}
		for (int k = 0; k < 3 && !rc; k++)
			rc = zn_st_writer_put(ow, a[k], s->nown * 4);
	}
	if (!rc) {
		rc = zn_st_writer_end(ow);
		ow = NULL;
	}
	zn_st_writer_abort(ow);
	if (t->nvme_opt)
		groups_close(&g);
	for (int k = 0; k < 3; k++)
		free(scratch[k]);
	free(names);
	free(ot);
	/* Commit only what every rank wrote; then every rank learns how
	 * rank 0's commit went. */
	rc = agree_rc(t, rc, "checkpoint");
	int32_t crc = 0;
	if (t->rank == 0) {
		if (rc) {
			zn_ckpt_abort(c);
		} else {
			crc = zn_ckpt_commit(c);
			if (!crc && t->cfg.checkpoint.keep)
				zn_ckpt_prune(t->cfg.checkpoint.dir, t->cfg.checkpoint.keep);
		}
	}
	if (rc)
		return rc;
	if ((rc = zn_comm_broadcast(t->comm, &crc, sizeof(crc), 0)))
		return rc;
	if (crc && t->rank != 0)
		return zn_error(crc, "checkpoint: rank 0 could not commit it (its own message says "
				     "why); the previous checkpoint is still the latest");
	return crc;
}

static int save_whole(struct zn_trainer *t)
{
	/* Cached device blocks are not needed while saving: their memory
	 * (host memory, on the cpu backend) goes to the staging instead. */
	zn_device_trim(t->dev);
	struct zn_ckpt *c = zn_ckpt_begin(t->cfg.checkpoint.dir, t->step);
	if (!c)
		return -EIO;
	struct zn_st_tensor *mt = calloc(t->nt, sizeof(*mt));
	struct zn_st_tensor *ot = calloc(3 * (size_t)t->nt, sizeof(*ot));
	char (*names)[ZN_PARAM_NAME_MAX + 24] = calloc(4 * (size_t)t->nt, sizeof(*names));
	float *scratch[4] = { NULL, NULL, NULL, NULL };
	struct groups g = { 0 };
	struct zn_st_writer *mw = NULL, *ow = NULL;
	struct zn_hf_writer *hw = NULL;
	int rc = 0;
	if (!mt || !ot || !names) {
		rc = zn_error(-ENOMEM, "out of memory");
		goto out;
	}
	/* scratch[3]: a transposed tensor; 0-2: NVMe states of one tensor. */
	for (int k = 0; k < (t->nvme_opt ? 4 : 1) && !rc; k++)
		if (!(scratch[3 - k] = malloc(t->largest * 4)))
			rc = zn_error(-ENOMEM, "out of memory for checkpoint staging");
	if (!rc && t->nvme_opt)
		rc = groups_open(&g, t, false);
	if (rc)
		goto out;
	for (unsigned i = 0; i < t->nt; i++) {
		const struct tstate *s = &t->t[i];
		snprintf(names[4 * i], sizeof(names[0]), "transformer.%s", s->d.name);
		mt[i] = (struct zn_st_tensor){ .name = names[4 * i], .dtype = ZN_ST_F32,
					       .ndim = s->d.ndim };
		if (!t->arch.llama)
			hf_shape(s, &t->arch.g, mt[i].shape, &mt[i].bytes);
		for (int k = 0; k < 3; k++) {
			snprintf(names[4 * i + 1 + k], sizeof(names[0]), "%s.%s", s->d.name,
				 state_suffix[k]);
			ot[3 * i + k] = (struct zn_st_tensor){
				.name = names[4 * i + 1 + k], .dtype = ZN_ST_F32, .ndim = 1,
				.shape = { s->d.numel }, .bytes = s->d.numel * 4 };
		}
	}
	struct ckpt_meta meta;
	size_t nmeta = ckpt_meta(t, &meta, false);
	struct zn_st_meta mmeta[1] = { { "format", "pt" } };
	/* The model: GPT-2's model.safetensors, or a Llama's Hugging Face
	 * folder (config.json, shards, index) in the checkpoint directory. */
	if (t->arch.llama) {
		struct zn_param_desc *descs = all_descs(t);
		rc = descs ? zn_hf_writer_begin(zn_ckpt_file(c, ""), &t->arch.l, descs, t->nt,
						hf_dtype(t), ZN_HF_DEFAULT_SHARD_BYTES, &hw)
			   : -ENOMEM;
		free(descs);
	} else {
		rc = zn_st_writer_begin(zn_ckpt_file(c, "model.safetensors"), mt, t->nt, mmeta, 1,
					&mw);
	}
	if (rc || (rc = zn_st_writer_begin(zn_ckpt_file(c, "optimizer.safetensors"), ot,
					   3 * (size_t)t->nt, meta.kv, nmeta, &ow)))
		goto out;
	for (unsigned i = 0; i < t->nt && !rc; i++) {
		struct tstate *s = &t->t[i];
		float *a[3] = { s->master, s->m, s->v };
		if (t->nvme_opt) {
			memcpy(a, scratch, sizeof(a));
			if ((rc = groups_move(&g, s, a, false)))
				break;
		}
		const float *mdata = a[0];
		if (s->d.hf_transposed) {
			transpose(a[0], scratch[3], s->d.shape[0], s->d.shape[1]);
			mdata = scratch[3];
		}
		rc = hw ? zn_hf_writer_put(hw, mdata) : zn_st_writer_put(mw, mdata, mt[i].bytes);
		for (int k = 0; k < 3 && !rc; k++)
			rc = zn_st_writer_put(ow, a[k], s->d.numel * 4);
	}
	if (!rc) {
		rc = hw ? zn_hf_writer_end(hw) : zn_st_writer_end(mw);
		mw = NULL;
		hw = NULL;
	}
	if (!rc) {
		rc = zn_st_writer_end(ow);
		ow = NULL;
	}
out:
	zn_st_writer_abort(mw);
	zn_hf_writer_abort(hw);
	zn_st_writer_abort(ow);
	if (rc) {
		zn_ckpt_abort(c);
	} else {
		rc = zn_ckpt_commit(c);
		if (!rc && t->cfg.checkpoint.keep)
			zn_ckpt_prune(t->cfg.checkpoint.dir, t->cfg.checkpoint.keep);
	}
	if (t->nvme_opt)
		groups_close(&g);
	for (int k = 0; k < 4; k++)
		free(scratch[k]);
	free(names);
	free(mt);
	free(ot);
	return rc;
}

/* The optimizer files of a checkpoint: optimizer.safetensors (whole
 * tensors), or optimizer-RRRRR-of-WWWWW.safetensors for W ranks' parts.
 * Opens them into t->src_ckpt or t->src_shards. */
static int open_optimizer_files(struct zn_trainer *t, const char *dir)
{
	char path[4400];
	snprintf(path, sizeof(path), "%s/optimizer.safetensors", dir);
	if (access(path, F_OK) == 0) {
		t->src_ckpt = zn_st_open(path);
		return t->src_ckpt ? 0 : -EINVAL;
	}
	glob_t g;
	snprintf(path, sizeof(path), "%s/optimizer-00000-of-*.safetensors", dir);
	int W = 0;
	if (glob(path, 0, NULL, &g) == 0) {
		const char *of = g.gl_pathc == 1 ? strstr(g.gl_pathv[0] + strlen(dir), "-of-") : NULL;
		W = of ? atoi(of + 4) : 0;
		globfree(&g);
	}
	if (W < 1)
		return zn_error(-EINVAL, "checkpoint '%s' has neither optimizer.safetensors nor one "
					 "set of optimizer-RRRRR-of-WWWWW.safetensors parts; point "
					 "checkpoint.dir elsewhere or set checkpoint.resume: false",
				dir);
	t->src_shards = calloc((size_t)W, sizeof(*t->src_shards));
	if (!t->src_shards)
		return zn_error(-ENOMEM, "out of memory");
	t->src_world = W;
	for (int r = 0; r < W; r++) {
		snprintf(path, sizeof(path), "%s/optimizer-%05d-of-%05d.safetensors", dir, r, W);
		if (access(path, F_OK) != 0)
			return zn_error(-ENOENT, "checkpoint '%s' was saved by %d ranks but the part "
						 "of rank %d (%s) is missing: the checkpoint is "
						 "incomplete; resume from an earlier one", dir, W, r,
					path);
		if (!(t->src_shards[r] = zn_st_open(path)))
			return -EINVAL;
	}
	return 0;
}

/* The first `nstates` of each tensor's states (master, exp_avg,
 * exp_avg_sq) in the opened optimizer files: every part present, fp32, of
 * its length. */
static int check_states(const struct zn_trainer *t, const char *dir, int nstates)
{
	const int W = t->src_ckpt ? 1 : t->src_world;
	for (unsigned i = 0; i < t->nt; i++)
		for (int k = 0; k < nstates; k++) {
			char name[ZN_PARAM_NAME_MAX + 24];
			snprintf(name, sizeof(name), "%s.%s", t->t[i].d.name, state_suffix[k]);
			for (int r = 0; r < W; r++) {
				uint64_t lo, len;
				zn_zero_part(t->t[i].d.numel, W, r, &lo, &len);
				if (!len)
					continue;
				const struct zn_st_tensor *x =
					zn_st_find(t->src_ckpt ? t->src_ckpt : t->src_shards[r], name);
				if (!x || x->dtype != ZN_ST_F32 || x->bytes != len * 4)
					return zn_error(-EINVAL, "checkpoint '%s': tensor '%s'%s is "
								 "missing or has the wrong shape", dir,
							name, W > 1 ? " of a rank's part" : "");
			}
		}
	return 0;
}

/* Resuming: the checkpoint's metadata now (step, data position, loss
 * scaler: a mismatch fails before anything is built), its tensors later,
 * one at a time, from the mapped files.  A checkpoint of another number of
 * ranks is re-partitioned: every tensor is put together from the parts
 * that cover it and this rank takes its own. */
static int open_checkpoint(struct zn_trainer *t, const char *dir)
{
	char shape[512];
	int rc = open_optimizer_files(t, dir);
	if (rc)
		return rc;
	struct zn_st_file *f = t->src_ckpt ? t->src_ckpt : t->src_shards[0];
	model_shape_string(t, shape, sizeof(shape));
	const char *ms = zn_st_metadata(f, "zinc.model");
	const char *st = zn_st_metadata(f, "zinc.step");
	const char *hex = zn_st_metadata(f, "zinc.data_pos");
	const char *up = zn_st_metadata(f, "zinc.updates");
	const char *sc = zn_st_metadata(f, "zinc.loss_scaler");
	struct zn_data_pos pos;
	if (!ms || strcmp(ms, shape) != 0) {
		rc = zn_error(-EINVAL, "checkpoint '%s' is of a different model (%s) than the config "
				       "(%s); point checkpoint.dir elsewhere or set "
				       "checkpoint.resume: false", dir, ms ? ms : "unknown", shape);
	} else if (!st || hex_decode(hex, &pos, sizeof(pos))) {
		rc = zn_error(-EINVAL, "checkpoint '%s' lacks its step or data position", dir);
	} else if (!up || hex_decode(sc, &t->scaler, sizeof(t->scaler))) {
		rc = zn_error(-EINVAL, "checkpoint '%s' lacks its update count or loss scaler", dir);
	}
	/* The parts of one save: the same step in every one. */
	for (int r = 1; r < t->src_world && !rc; r++) {
		const char *sr = zn_st_metadata(t->src_shards[r], "zinc.step");
		if (!sr || strcmp(sr, st) != 0)
			rc = zn_error(-EINVAL, "checkpoint '%s': the part of rank %d is of step %s, "
					       "rank 0's of step %s: the checkpoint is damaged; "
					       "resume from an earlier one", dir, r,
					sr ? sr : "unknown", st);
	}
	/* Every tensor (or part) present with its shape, before anything is
	 * built. */
	if (!rc)
		rc = check_states(t, dir, 3);
	if (!rc && t->train)
		rc = zn_data_seek(t->train, &pos);
	if (rc)
		return rc;
	t->step = strtoull(st, NULL, 10);
	t->updates = strtoull(up, NULL, 10);
	return 0;
}

/* llm.c's GPT-2 checkpoint (train_gpt2.c, gpt2_124M.bin): a 256-int32
 * header {20240326, version 3 = fp32, maxT, V, L, NH, C, Vp}, then every
 * parameter as one array per kind over all layers, in this order: wte
 * (Vp,C), wpe (maxT,C), ln1w, ln1b, qkvw (L,3C,C), qkvb, attprojw (L,C,C),
 * attprojb, ln2w, ln2b, fcw (L,4C,C), fcb, fcprojw (L,C,4C), fcprojb, lnfw,
 * lnfb.  Its matrices are (OC, C), zinc's layout.  Opened here with each
 * tensor's offset, read when the tensor is made. */
#define LLMC_MAGIC 20240326
static int open_llmc(struct zn_trainer *t, const char *path)
{
	FILE *f = fopen(path, "rb");
	int32_t h[256];
	if (!f)
		return zn_error(-errno, "cannot open '%s': %s", path, strerror(errno));
	if (fread(h, 4, 256, f) != 256 || h[0] != LLMC_MAGIC) {
		fclose(f);
		return zn_error(-EINVAL, "'%s' is not an llm.c GPT-2 checkpoint (magic %d)", path,
				LLMC_MAGIC);
	}
	const struct zn_gpt2_config *c = &t->arch.g;
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
	t->llmc_off = calloc(t->nt, sizeof(uint64_t));
	if (!t->llmc_off) {
		fclose(f);
		return zn_error(-ENOMEM, "out of memory");
	}
	/* The 12 per-layer kinds run over all layers before the next kind; their
	 * order is zinc's tensor order within a block. */
	const unsigned L = (unsigned)c->n_layer;
	uint64_t off = 256 * 4;
	for (unsigned e = 0; e < 2; e++) { /* wte, wpe */
		t->llmc_off[t->first[0] + e] = off;
		off += t->t[t->first[0] + e].d.numel * 4;
	}
	for (unsigned k = 0; k < 12; k++)
		for (unsigned l = 0; l < L; l++) {
			t->llmc_off[t->first[l + 1] + k] = off;
			off += t->t[t->first[l + 1] + k].d.numel * 4;
		}
	for (unsigned e = 0; e < 2; e++) { /* ln_f */
		t->llmc_off[t->first[L + 1] + e] = off;
		off += t->t[t->first[L + 1] + e].d.numel * 4;
	}
	struct stat sb;
	if (fstat(fileno(f), &sb) != 0 || (uint64_t)sb.st_size < off) {
		fclose(f);
		return zn_error(-EINVAL, "'%s' is truncated: shorter than its header's model "
					 "(%" PRIu64 " bytes)", path, off);
	}
	t->src_llmc = f;
	return 0;
}

/* Fine-tuning: a Hugging Face GPT-2 model.safetensors (names with or
 * without "transformer."; Conv1D weights transposed back), or llm.c's
 * .bin checkpoint.  Every tensor is checked now, read when made. */
static int open_pretrained(struct zn_trainer *t, const char *path)
{
	size_t n = strlen(path);
	t->src_path = path;
	if (t->arch.llama) {
		/* A Hugging Face folder: every tensor checked (present, shape,
		 * dtype) now; read from the mapped shards when made. */
		struct zn_param_desc *descs = all_descs(t);
		int rc = descs ? zn_hf_open(path, &t->src_hf) : -ENOMEM;
		if (!rc)
			rc = zn_hf_check(t->src_hf, descs, t->nt);
		free(descs);
		return rc;
	}
	if (n > 4 && strcmp(path + n - 4, ".bin") == 0)
		return open_llmc(t, path);
	struct zn_st_file *f = zn_st_open(path);
	if (!f)
		return -EINVAL;
	for (unsigned i = 0; i < t->nt; i++) {
		struct tstate *s = &t->t[i];
		char name[ZN_PARAM_NAME_MAX + 16];
		snprintf(name, sizeof(name), "transformer.%s", s->d.name);
		const struct zn_st_tensor *x = zn_st_find(f, name);
		if (!x)
			x = zn_st_find(f, s->d.name);
		uint64_t shape[2], want;
		hf_shape(s, &t->arch.g, shape, &want);
		if (!x || x->dtype != ZN_ST_F32 || x->bytes != want) {
			zn_st_close(f);
			return zn_error(-EINVAL, "'%s': tensor '%s' is missing, not F32, or not of the "
						 "config's shape (%" PRIu64 " elements); check the "
						 "model section against the file",
					path, name, want / 4);
		}
	}
	t->src_st = f;
	return 0;
}

static void close_sources(struct zn_trainer *t)
{
	for (int r = 0; r < t->src_world && t->src_shards; r++)
		zn_st_close(t->src_shards[r]);
	free(t->src_shards);
	t->src_shards = NULL;
	t->src_world = 0;
	zn_hf_close(t->src_hf);
	t->src_hf = NULL;
	zn_st_close(t->src_ckpt);
	zn_st_close(t->src_st);
	if (t->src_llmc)
		fclose(t->src_llmc);
	free(t->llmc_off);
	t->src_ckpt = t->src_st = NULL;
	t->src_llmc = NULL;
	t->llmc_off = NULL;
}

/* Tensor i's starting states: a resumed checkpoint's, or pretrained (or
 * freshly initialised) weights with zero moments. */
static int tensor_from_sources(struct zn_trainer *t, unsigned i, float *master, float *m,
			       float *v)
{
	struct tstate *s = &t->t[i];
	size_t bytes = s->d.numel * 4;
	if (t->src_ckpt || t->src_shards) {
		float *a[3] = { master, m, v };
		int W = t->src_ckpt ? 1 : t->src_world;
		for (int k = 0; k < 3; k++) {
			char name[ZN_PARAM_NAME_MAX + 24];
			snprintf(name, sizeof(name), "%s.%s", s->d.name, state_suffix[k]);
			for (int r = 0; r < W; r++) {
				uint64_t lo, len;
				zn_zero_part(s->d.numel, W, r, &lo, &len);
				if (len)
					memcpy(a[k] + lo,
					       zn_st_find(t->src_ckpt ? t->src_ckpt
								      : t->src_shards[r], name)->data,
					       len * 4);
			}
		}
		return 0;
	}
	if (m)
		memset(m, 0, bytes);
	if (v)
		memset(v, 0, bytes);
	if (t->src_hf)
		return zn_hf_read_f32(t->src_hf, s->d.name, master);
	if (t->src_llmc) {
		if (fseeko(t->src_llmc, (off_t)t->llmc_off[i], SEEK_SET) != 0 ||
		    fread(master, 4, s->d.numel, t->src_llmc) != s->d.numel)
			return zn_error(-EIO, "cannot read tensor '%s' from '%s'", s->d.name,
					t->src_path);
		return 0;
	}
	if (t->src_st) {
		char name[ZN_PARAM_NAME_MAX + 16];
		snprintf(name, sizeof(name), "transformer.%s", s->d.name);
		const struct zn_st_tensor *x = zn_st_find(t->src_st, name);
		if (!x)
			x = zn_st_find(t->src_st, s->d.name);
		if (s->d.hf_transposed) {
			transpose(x->data, master, s->d.shape[1], s->d.shape[0]);
		} else {
			memset(master, 0, bytes);
			memcpy(master, x->data, x->bytes);
		}
		return 0;
	}
	zn_arch_init_tensor(&t->arch, &s->d, t->cfg.data.seed, i, master);
	return 0;
}

/* ---- consolidation ------------------------------------------------------------ */

int zn_checkpoint_consolidate(const char *path, const char *out)
{
	char dir[4096];
	char latest[4200];
	snprintf(latest, sizeof(latest), "%s/latest", path);
	if (access(latest, F_OK) == 0) {
		int lrc = zn_ckpt_latest(path, dir, sizeof(dir));
		if (lrc)
			return lrc;
	} else {
		snprintf(dir, sizeof(dir), "%s", path);
	}
	struct zn_trainer *t = calloc(1, sizeof(*t));
	if (!t)
		return zn_error(-ENOMEM, "out of memory");
	t->world = 1;
	struct zn_st_tensor *mt = NULL;
	struct zn_param_desc *descs = NULL;
	char (*names)[ZN_PARAM_NAME_MAX + 16] = NULL;
	float *a[4] = { NULL, NULL, NULL, NULL };
	struct zn_st_writer *w = NULL;
	struct zn_hf_writer *hw = NULL;
	char target[4200];
	int rc = open_optimizer_files(t, dir);
	if (rc)
		goto out;
	/* The model, from the metadata every optimizer file carries. */
	struct zn_st_file *f = t->src_ckpt ? t->src_ckpt : t->src_shards[0];
	const char *ms = zn_st_metadata(f, "zinc.model");
	if (!ms || zn_arch_parse(ms, &t->arch)) {
		rc = zn_error(-EINVAL, "checkpoint '%s': its metadata names no model this zinc "
				       "knows (zinc.model = %s)", dir, ms ? ms : "absent");
		goto out;
	}
	t->nlayers = zn_arch_layers(&t->arch);
	t->t = calloc(MAX_TENSORS, sizeof(*t->t));
	if (!t->t) {
		rc = zn_error(-ENOMEM, "out of memory");
		goto out;
	}
	for (unsigned l = 0; l < t->nlayers; l++) {
		struct zn_param_desc d[ZN_ARCH_LAYER_TENSORS_MAX];
		unsigned n = zn_arch_layer_params(&t->arch, l, d);
		for (unsigned i = 0; i < n; i++) {
			t->t[t->nt].d = d[i];
			t->largest = ZN_MAX(t->largest, d[i].numel);
			t->nt++;
		}
	}
	mt = calloc(t->nt, sizeof(*mt));
	names = calloc(t->nt, sizeof(*names));
	descs = all_descs(t);
	for (int k = 0; k < 4; k++)
		a[k] = malloc(t->largest * 4);
	if (!mt || !names || !descs || !a[0] || !a[1] || !a[2] || !a[3]) {
		rc = zn_error(-ENOMEM, "out of memory");
		goto out;
	}
	for (unsigned i = 0; i < t->nt && !t->arch.llama; i++) {
		snprintf(names[i], sizeof(names[0]), "transformer.%s", t->t[i].d.name);
		mt[i] = (struct zn_st_tensor){ .name = names[i], .dtype = ZN_ST_F32,
					       .ndim = t->t[i].d.ndim };
		hf_shape(&t->t[i], &t->arch.g, mt[i].shape, &mt[i].bytes);
	}
	/* Every master (or part of one) present with its shape, before writing. */
	if (!rc)
		rc = check_states(t, dir, 1);
	/* GPT-2: one model.safetensors (fp32); a Llama: a Hugging Face folder
	 * (fp32 masters, sharded, config.json).  By default into the step's
	 * own directory. */
	if (t->arch.llama)
		snprintf(target, sizeof(target), "%s", out ? out : dir);
	else if (out)
		snprintf(target, sizeof(target), "%s", out);
	else
		snprintf(target, sizeof(target), "%s/model.safetensors", dir);
	struct zn_st_meta meta[1] = { { "format", "pt" } };
	if (!rc && t->arch.llama) {
		if (mkdir(target, 0777) != 0 && errno != EEXIST)
			rc = zn_error(-errno, "cannot make directory '%s': %s", target,
				      strerror(errno));
		if (!rc)
			rc = zn_hf_writer_begin(target, &t->arch.l, descs, t->nt, "float32",
						ZN_HF_DEFAULT_SHARD_BYTES, &hw);
	} else if (!rc) {
		rc = zn_st_writer_begin(target, mt, t->nt, meta, 1, &w);
	}
	for (unsigned i = 0; i < t->nt && !rc; i++) {
		const struct tstate *s = &t->t[i];
		if ((rc = tensor_from_sources(t, i, a[0], a[1], a[2])))
			break;
		const float *m = a[0];
		if (s->d.hf_transposed) {
			transpose(a[0], a[3], s->d.shape[0], s->d.shape[1]);
			m = a[3];
		}
		rc = hw ? zn_hf_writer_put(hw, m) : zn_st_writer_put(w, m, mt[i].bytes);
	}
	if (!rc) {
		rc = hw ? zn_hf_writer_end(hw) : zn_st_writer_end(w);
		w = NULL;
		hw = NULL;
	}
out:
	zn_st_writer_abort(w);
	zn_hf_writer_abort(hw);
	close_sources(t);
	for (int k = 0; k < 4; k++)
		free(a[k]);
	free(descs);
	free(names);
	free(mt);
	free(t->t);
	free(t);
	return rc;
}
