/* The trainer's private state and the functions its files share (see
 * include/zinc/train.h for what the trainer does).  Not installed; included
 * only by engine/train/'s sources.
 *
 * Functions shared between the trainer's files are named tr_* (hidden in
 * libzinc, like everything without ZN_API); each file's own helpers are
 * static. */
#ifndef ZN_TRAIN_INTERNAL_H
#define ZN_TRAIN_INTERNAL_H

#include "zn_common.h"

#include "model/arch.h"
#include "zero/zero.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "zinc/adam.h"
#include "zinc/comm.h"
#include "zinc/data.h"
#include "zinc/device.h"
#include "zinc/hf.h"
#include "zinc/kernels.h"
#include "zinc/model.h"
#include "zinc/offload.h"
#include "zinc/precision.h"
#include "zinc/safetensors.h"
#include "zinc/threadpool.h"
#include "zinc/train.h"


/* One tensor's state, t->t[i] for the table's tensor i.  Where each part
 * of its model states lives:
 *   dparam, dgrad            fp32 on the device (offload_param, or stage 3
 *                            on several ranks: only while its layer is
 *                            fetched, fetch.c)
 *   master, m, v             host (offload_optimizer cpu; device optimizer:
 *                            checkpoint staging), or NVMe in the optimizer
 *                            swapper's sub-groups (offload_optimizer nvme:
 *                            no host copy at all)
 *   grad                     host gradient accumulator in grad_accum_dtype
 *                            (offload_optimizer cpu/nvme; several ranks),
 *                            or (gnvme) the sums on NVMe in the optimizer
 *                            swapper's sub-groups, sent there at each
 *                            release (grads.c)
 *   home                     offload_param: the parameters in the training
 *                            dtype, on host or NVMe (homes.c)
 * create() (place_tensor) sets the share and allocates what is kept for
 * good; the rest comes and goes as the comments say. */
struct tstate {
	const struct zn_param_desc *d; /* its entry in the table */
	/* ZeRO partitioning over W ranks: every tensor is cut into W parts of
	 * `part` = ceil(numel / W) elements (the last ones shorter or empty);
	 * this rank owns elements [lo, lo + nown).  Its optimizer states
	 * (master, m, v), gradient accumulator, staged values and (stage 3)
	 * home hold only those; `oflat` is their offset in the rank's own
	 * flat order (the optimizer swapper's).  One rank: lo 0, nown = part
	 * = numel, oflat the tensor's offset in the model's. */
	uint64_t lo, nown, part, oflat;
	bool resident;                 /* on the device for good (no offload_param, or
					* under stage3_param_persistence_threshold) */
	bool dev_grads;                /* gradients accumulate on the device over a
					* step's micro-batches (resident tensors, one
					* rank or stage <= 1); else they leave at each
					* release */
	bool gnvme;                    /* ... for NVMe (engine/zero's grads_nvme) */
	uint8_t fl_how;                /* gnvme in flight: how they crossed, and */
	bool fl_first;                 /* whether they start the sums (grads.c) */
	double *gsq;                   /* gnvme: each tile's final gradients' squared
					* sum, and whether all are finite, taken as */
	bool *gfin;                    /* they left (the norm's shares, ntiles) */
	/* Tiles (engine/zero's zn_zero_tile_rows): an offloaded tiled tensor
	 * has a home per tile and its gradients leave tile by tile; the model
	 * takes a tileable one tile by tile (by_tiles), and offloaded it
	 * visits the device a tile at a time (its device buffers below then
	 * hold that tile); another visits whole, read from its tiles' homes. */
	uint64_t tile_rows;            /* 0: whole */
	uint64_t tile_step;            /* this rank's elements of a full tile (its
					* piece, engine/zero's zn_zero_piece; one
					* rank: the tile), nown when whole */
	uint64_t tile_elems;           /* ... of its largest tile (the last may be
					* larger on some ranks) */
	unsigned ntiles;               /* 1 when whole */
	bool tiled;                    /* offloaded and tiled: homes per tile */
	bool by_tiles;                 /* the model takes it tile by tile */
	int tile_on;                   /* the tile on the device, -1 none */
	/* On the device. */
	void *dparam, *dgrad;          /* fp32 */
	void *sparam, *sgrad;          /* 16-bit storage (t->sdt): what the model
	                                * gets -- dparam cast at each fetch, and
	                                * gradients folded into dgrad at each
	                                * release (then zeroed) */
	bool sdirty;                   /* sgrad was handed out since its last fold */
	float *dhome;                  /* stage 3 on several ranks without offload_param:
					* this rank's part, fp32, gathered at each fetch */
	float *dmaster, *dm, *dv;      /* device optimizer only */
	/* In host memory, this rank's part. */
	float *master, *m, *v;         /* see above */
	void *grad;                    /* t->gdt */
	/* offload_param. */
	struct zn_tensor **home;       /* the parameters' home tier (the swapper's), a
					* home per tile (ntiles) */
	struct zn_tensor **fold;       /* a tiled tied embedding (zn_zero_has_folds):
					* each tile's classifier part of its gradients,
					* fp32, kept beside the homes from the
					* classifier's release of the tile until the
					* encoder's fetch of it (fetch.c) */
	bool *folded;                  /* ... tile k's holds this backward's part */
	unsigned fold_parts;           /* ... in this many swap tensors a tile
					* (zn_zero_fold_parts): fold[k * parts + j] */
	void *hbuf;                    /* home buffer held across optimizer sub-groups */
	unsigned htile;                /* ... and the tile it is */
	/* The update (optimizer.c). */
	float *staged;                 /* overlapped update: a resident tensor's new
					* parameters, for the compute thread to apply */
	bool pending;                  /* staged holds an update not applied yet */
	struct zn_lamb_sums lamb;      /* Lamb: this step's norm sums over the whole tensor */
	bool sync;                     /* several ranks: its parameters must be
					* all-gathered after this update */
	struct zn_trainer *owner;      /* for callbacks given only the tensor */
};

/* The stream device work must be enqueued on to be ordered with the
 * model's kernels: cuda kernels run on the compute stream; cpu ones run
 * when called, so there the work must be done at once (NULL). */
#define TR_KSTREAM(t) ((t)->k->device_memory ? (t)->stream : NULL)

#define GRAD_FLIGHTS 3                 /* layers' gradients in flight at once */
#define GATHER_SLOTS 4                 /* layers gathered ahead at most */

/* Device buffers whose gradients are still crossing on the copy stream:
 * freed once `ev` (recorded after their copies) completes. */
struct grad_flight {
	void *p[2 * ZN_ARCH_LAYER_TENSORS_MAX];
	unsigned n;
	struct zn_event *ev;
};

/* The arguments of an update over NVMe states (optimizer.c's
 * nvme_update, called by the optimizer swapper for each sub-group). */
struct nvme_update {
	struct zn_trainer *t;
	struct zn_adam_hparams hp;
	float grad_scale;
	uint64_t step;                 /* Adam's step of this update */
	struct zn_adam_exec ex;
};

/* A layer's state between its fetches and releases, one per layer: what
 * fetch.c and the stage-3 gathers (gather.c) keep. */
struct layer_state {
	unsigned fetched;              /* outstanding fetches */
	bool has_grads;                /* device gradient buffers exist */
	bool kept;                     /* released but left on the device for reuse */
	bool parts;                    /* stage 3 on several ranks: has partitioned
					* tensors (to gather at a fetch) */
	uint64_t elems;                /* elements that visit the device: fetched from
					* homes (offload_param) or gathered from parts
					* (stage 3, several ranks); the trace's
					* distances are in these */
};

/* The fetch order of a training step, recorded on the first and followed
 * after (DeepSpeed's trace): what to prefetch, and which released layers
 * come back soon enough to stay on the device.  fetch.c's; gather.c reads
 * it to gather ahead. */
struct fetch_trace {
	unsigned *order;               /* layers in fetch order */
	size_t n, cap, pos;            /* recorded, allocated, followed so far */
	bool tracking;                 /* inside a training step's passes */
	bool recording, ok;            /* recording this step; a trace to follow */
	int direction;                 /* +1 forward, -1 backward: what to prefetch
					* without a trace (set by the step) */
	uint64_t live_elems;           /* offloaded elements on the device now */
};

/* offload_param: gradients leave the device on their own stream, the copy
 * of layer l overlapping the backward of layer l-1 (grads.c).  Created by
 * tr_param_homes_setup with overlap_comm; copy NULL: they cross
 * synchronously. */
struct grad_flights {
	struct zn_stream *copy;
	struct zn_event *ev_compute;   /* the compute stream's point they wait for */
	struct grad_flight f[GRAD_FLIGHTS]; /* a ring: head, then n in flight */
	unsigned head, n;
};

/* The update of step n on its own thread beside step n+1's forward (stage
 * 3 with NVMe optimizer states: overlap), tensor by tensor in the order
 * the forward wants them; a layer's fetch waits for its own tensors.
 * Nothing changes but the timing: the results are bit-identical.
 * optimizer.c's; `lock` guards done, finished, rc and msg while the thread
 * runs. */
struct opt_thread {
	pthread_t thread;
	bool running;                  /* started and not joined */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned done;                 /* tensors (in order) whose update is complete */
	bool finished;                 /* the thread is done (rc tells how) */
	int rc;
	char msg[512];
	struct nvme_update upd;        /* the NVMe update's arguments (overlapped or not) */
	uint64_t ns;                   /* the last finished update's duration */
	bool joined;                   /* an update finished during this step */
	struct zn_optswap_stats stats; /* ... and what it moved */
};

/* offload_optimizer: none keeps Adam on the device (the kernels' adam op);
 * these are its step's scalars and, on several ranks, the reduced
 * gradients it takes from the host (step.c). */
struct device_opt {
	double *sumsq;                 /* the norm's accumulator */
	int32_t *flag;                 /* non-finite flag */
	float *gscratch;               /* several ranks: reduced gradients */
};

/* offload_optimizer: nvme: master, m, v live on NVMe in sub-groups of the
 * flat element order, streamed through the pipelined swapper (homes.c
 * sets them up; the optimizer and the save stream through them). */
struct nvme_states {
	struct zn_aio *aio;
	struct zn_store *store;
	struct zn_optswap *os;
};

/* offload_param (stage 3): parameters live on host or NVMe and visit the
 * device layer by layer (homes.c sets them up; fetch.c and the optimizer
 * read and write them). */
struct param_homes {
	struct zn_aio *aio;
	struct zn_store *store;
	struct zn_bufpool *pool;
	struct zn_swapper *sw;
};

/* Several ranks: staging for collectives (collectives.c).  GPUs with zinc
 * built with NCCL: the gradients' reduce-scatters and the resident
 * parameters' all-gathers run on device buffers (dsend, drecv: W parts of
 * the largest tensor) through dcomm, so only this rank's part crosses to
 * the host.  dcomm NULL: host staging in cbuf. */
struct collectives {
	struct zn_comm *dcomm;
	void *dsend, *drecv;
	uint8_t *cbuf[2];              /* W parts of the largest tensor (fp32) */
	size_t cbuf_bytes;
};

/* Several ranks (host comm): gradients are reduced in buckets of
 * reduce_bucket_size elements, one collective per bucket (collectives.c).
 * A bucket is W chunks of `cap` elements, chunk r holding part r of each
 * tensor in it (stage 0: one chunk of whole tensors), then room for the
 * result.  Two buckets: one fills while the other's collective runs on the
 * comm's thread (overlap_comm), settled -- waited for, added into the
 * accumulators -- before its buffer is reused.  b[0].buf NULL: none
 * (one rank, or NCCL). */
struct buckets {
	struct bucket {
		struct bucket_entry {
			struct tstate *s;
			unsigned k;        /* its tile (0: untiled) */
			size_t off;        /* elements into each chunk */
			bool first;        /* the step's first micro-batch */
		} *e;
		unsigned n;
		size_t used;           /* elements per chunk */
		struct zn_comm_op *op;
		bool inflight;
		uint8_t *buf;
	} b[2];
	unsigned cur;                  /* the filling one */
	size_t cap;
};

/* Stage 3 on several ranks: the all-gathers of the next fetches' layers
 * run ahead of them (along the trace, or the pass's direction), up to
 * stage3_prefetch_bucket_size elements and GATHER_SLOTS layers, each
 * slot's buffer holding every partitioned tensor's part to send and every
 * rank's to receive.  A FIFO: a fetch takes the oldest; one of another
 * layer discards them all (every rank decides the same way: the decisions
 * read only the trace and the fetch counts).  gather.c's; buf NULL: none. */
struct gathers {
	struct gather_slot {
		unsigned layer;
		struct zn_comm_op *op[ZN_ARCH_LAYER_TENSORS_MAX];
		uint8_t *recv[ZN_ARCH_LAYER_TENSORS_MAX];
		uint8_t *buf;
	} slot[GATHER_SLOTS];
	unsigned head, n;
	uint8_t *buf;                  /* the slots' buffers, one allocation */
};

/* Where starting weights are read from (sources.c), for the trainer while
 * it is built and for the consolidation: the files, and the model they
 * are read for.  At most one of ckpt/shards, st, hf, llmc; none: the
 * tensors are initialised. */
struct sources {
	const struct zn_arch *arch;
	const struct zn_tensor_table *tab;
	uint64_t seed;                 /* data.seed: initialisation */
	struct zn_st_file *ckpt;       /* checkpoint.resume: optimizer.safetensors */
	struct zn_st_file **shards;    /* ... or the parts of `world` ranks */
	int world;
	uint64_t *tile_rows;           /* the parts' tiles: tensor i partitioned tile
					* by tile (engine/zero's zn_zero_piece) in
					* tiles of tile_rows[i] rows, 0: whole
					* (metadata zinc.tile_rows); NULL: none */
	struct zn_arch_reader *pretrained; /* model.from: the architecture's weights */
};

/* What moved and how long it waited, counted over the trainer's life by
 * whoever moves it; a step reports the difference (step.c). */
struct counters {
	uint64_t h2d_bytes, d2h_bytes; /* host -> device, device -> host */
	uint64_t stall_ns;             /* waits for parameters and the update */
	uint64_t compute_ns;           /* this step's forward and backward */
	uint64_t comm_bytes;           /* bytes this rank sent in collectives */
	uint64_t comm_elems;           /* ... and elements */
	uint64_t comm_ns;              /* the compute thread waiting for collectives */
};

/* The data a micro-batch reads (step.c). */
struct batch {
	struct zn_data *train, *val;   /* val NULL: no validation split */
	int32_t *hin, *htgt;           /* host batch, (B, T) */
	int32_t *din, *dtgt;           /* device batch */
	float *hloss;                  /* host copy of per-token losses */
	bool synthetic;                /* random tokens, no data files */
	uint64_t rng;                  /* their xorshift state */
};

struct zn_trainer {
	/* What it trains, settled by create(). */
	struct zn_config cfg;
	struct zn_arch arch;           /* the model's architecture and shape */
	int B, T;
	uint32_t accum;
	/* Data parallelism (include/zinc/comm.h): rank of world; every
	 * collective is issued by every rank in the same order. */
	struct zn_comm *comm;
	bool own_comm;                 /* created here (destroyed with the trainer) */
	int rank, world;
	/* Precision and placement: engine/zero's rules for this config and
	 * rank (zr.dtype: what parameters and gradients are rounded to; gdt:
	 * the host gradient accumulators'; hdt: offload_param homes'; stage,
	 * offload_param, device_opt, nvme_opt, overlap: the update on its own
	 * thread, struct opt_thread). */
	struct zn_zero_rules zr;
	enum zn_dtype sdt;             /* the model's storage dtype on the device:
	                                * F32, or the 16-bit training dtype on
	                                * cuda (tstate's sparam/sgrad) */
	bool layered;                  /* fetch/release per layer do work: offload_param,
					* or gradients that leave at each release */
	/* The device, its kernels and the model. */
	struct zn_device *dev;
	struct zn_stream *stream;      /* compute */
	const struct zn_kernels *k;
	struct zn_kctx *kctx;
	struct zn_arch_model model;
	struct zn_threadpool *pool;    /* CPU Adam */
	/* The tensors: the table, and each one's state (tab.nt) and each
	 * layer's (tab.nlayers). */
	struct zn_tensor_table tab;
	struct tstate *t;
	struct layer_state *layer;
	uint64_t own_total;            /* elements this rank owns over all tensors */
	uint64_t unit;                 /* elements that move at once at most: a tile
					* of a tiled tensor, else a tensor (the
					* scratch and staging are this large) */
	/* Scratch. */
	void *round_buf;               /* device, for rounding: 2 bytes per element
					* of the largest tensor */
	float *gstage;                 /* host staging for a tensor's gradients */
	void *gsums;                   /* gnvme: a tensor's gradient sums between
					* NVMe and the staging (grad_accum_dtype) */
	struct zn_optswap_grad_stats gstats0; /* the NVMe gradients' I/O at the
					* step's start */
	/* The optimizer, and the progress a checkpoint saves. */
	struct zn_lr_schedule sched;
	struct zn_adam_hparams hp;
	struct zn_loss_scaler scaler;
	uint64_t step;                 /* steps done */
	uint64_t updates;              /* optimizer updates applied (Adam's step, the LR's) */
	uint32_t micro_i;              /* micro-batch of the step being run */
	/* The parts, each owned as its comment says. */
	struct batch data;
	struct fetch_trace fetch;
	struct grad_flights flights;
	struct collectives coll;
	struct buckets buckets;
	struct gathers gathers;
	struct param_homes homes;
	struct nvme_states nvme;
	struct device_opt dopt;
	struct opt_thread opt;
	struct sources src;
	struct counters stats;
	struct zn_trace *trace;        /* optional */
	/* The run's locks (create.c's take_locks): checkpoint.dir's (rank 0)
	 * and each nvme_path's; run_id: rank 0's "PID@HOST", the same on
	 * every rank, so that ranks of one run share a directory. */
	char run_id[96];
	struct zn_run_lock *locks[1 + 2 * ZN_STORE_MAX_PATHS];
	unsigned nlocks;
	/* Per-rank state accounting (zn_trainer_memory). */
	struct zn_rank_memory mem;
	uint64_t host_bytes;           /* model states in host memory: optimizer
					* states, gradient accumulators, homes */
};

/* The NVMe sub-groups walked in flat order, each lent in turn by the
 * optimizer swapper in its own buffer (zinc/offload.h's
 * zn_optswap_group_*): filled in place at the start, each written behind
 * the filling of the next, or read for a save, the next ones read ahead.
 * No buffer of its own: the swapper's are idle between steps. */
struct groups {
	struct zn_trainer *t;
	uint64_t sub, cur;             /* cur: the group lent, or UINT64_MAX */
	float *st[ZN_ZERO_STATES];     /* its arrays */
	bool put;
};

/* ---- the functions the trainer's files share, along the data path ------- */

/* Synchronous copies (the null stream: after everything enqueued). */
static inline int tr_to_device(struct zn_trainer *t, void *dst, const void *src, size_t bytes)
{
	return zn_device_copy_async(t->dev, dst, src, bytes, ZN_COPY_HOST_TO_DEVICE, NULL);
}

static inline int tr_to_host(struct zn_trainer *t, void *dst, const void *src, size_t bytes)
{
	return zn_device_copy_async(t->dev, dst, src, bytes, ZN_COPY_DEVICE_TO_HOST, NULL);
}

/* convert.c: acc (dtype dt, host) += add, the sum rounded to dt once; n
 * fp32 values on the device rounded to the training dtype (kept fp32).
 * Plain conversions are zinc/dtype.h's zn_dtype_from_f32 / _to_f32. */
void tr_host_accumulate(void *acc, enum zn_dtype dt, const float *add, size_t n);
/* The same with 16-bit addends (dtype sdt), and a plain conversion of n
 * values between any two dtypes. */
void tr_host_accumulate_from(void *acc, enum zn_dtype dt, const void *add, enum zn_dtype sdt,
			     size_t n);
void tr_host_convert(void *dst, enum zn_dtype dt, const void *src, enum zn_dtype sdt, size_t n);
int tr_round_to_dtype(struct zn_trainer *t, void *x, size_t n);

/* fetch.c: what the model is given; kept layers dropped before the
 * parameters change; device memory, kept layers and finished gradient
 * flights given back first when it is short. */
struct zn_param_source tr_param_source(struct zn_trainer *t);
struct zn_model_mem tr_model_mem(struct zn_trainer *t);
void tr_drop_kept(struct zn_trainer *t);
int tr_dev_alloc(struct zn_trainer *t, size_t bytes, void **p);

/* grads.c: one rank's gradients to the host: a tensor's synchronously
 * (`first`: the step's first micro-batch starts the accumulator; gnvme:
 * to its sums on NVMe), a layer's in flight; finished flights' buffers
 * freed (all: waited for); a backward's pass of NVMe gradients begun and
 * ended (nothing without them). */
int tr_grads_to_host(struct zn_trainer *t, struct tstate *s, bool first);
int tr_grads_tile_to_host(struct zn_trainer *t, struct tstate *s, bool first, unsigned k);
int tr_grads_tiles_to_host(struct zn_trainer *t, struct tstate *s, bool first);
int tr_grads_pass_begin(struct zn_trainer *t);
int tr_grads_pass_end(struct zn_trainer *t);
int tr_grads_leave(struct zn_trainer *t, unsigned layer);
int tr_flights_reap(struct zn_trainer *t, bool all);
/* ... and several ranks': this rank's reduced part into its NVMe sums. */
int tr_grads_part_to_nvme(struct zn_trainer *t, struct tstate *s, unsigned k, const void *own,
			  bool first);

/* collectives.c: several ranks.  Each returns 0 or -errno. */
int tr_collectives_setup(struct zn_trainer *t);
void tr_collectives_close(struct zn_trainer *t);
int tr_check_same_config(struct zn_trainer *t);
int tr_grads_reduce(struct zn_trainer *t, struct tstate *s, bool first);
int tr_grads_reduce_tile(struct zn_trainer *t, struct tstate *s, unsigned k, bool first);
int tr_grads_settle_all(struct zn_trainer *t);
int tr_params_allgather(struct zn_trainer *t, struct tstate *s);
int tr_params_allgather_all(struct zn_trainer *t);
int tr_sum_doubles(struct zn_trainer *t, double *v, unsigned n);
int tr_coll_wait(struct zn_trainer *t, int rc, struct zn_comm_op *op);
void tr_count_sent(struct zn_trainer *t, uint64_t elems, size_t esz);

/* gather.c: stage 3 on several ranks. */
int tr_gathers_setup(struct zn_trainer *t, bool partition_params);
void tr_gathers_close(struct zn_trainer *t);
int tr_gather_finish(struct zn_trainer *t, unsigned layer);
int tr_gather_ahead(struct zn_trainer *t, unsigned layer);
int tr_gather_drain(struct zn_trainer *t);
int tr_gather_tile(struct zn_trainer *t, struct tstate *s, unsigned k, uint64_t at);

/* homes.c: the parameters' homes (offload_param) and the optimizer
 * states on NVMe; a home written from new fp32 values (elements
 * [off, off + n) of the tensor's part, across tiles), or its buffer held
 * open for a fused update (the tile of element `off`: a fused update
 * does not cross tiles) and closed after element `end`; the sub-groups
 * walked in flat order: the one holding flat element p lent (its arrays
 * from p in a[], *left elements to the group's end), where element o of a
 * tensor's part has its states (host arrays or a lent group), the lent
 * one given back, and (put) every write waited for (after a failure rc,
 * the group being filled dropped). */
int tr_param_homes_setup(struct zn_trainer *t);
int tr_nvme_setup(struct zn_trainer *t);
int tr_home_put(struct zn_trainer *t, struct tstate *s, uint64_t off, const float *src,
		uint64_t n);
int tr_home_put_empty(struct zn_trainer *t, struct tstate *s, unsigned k);
int tr_home_open(struct zn_trainer *t, struct tstate *s, uint64_t off);
int tr_home_close(struct zn_trainer *t, struct tstate *s, uint64_t end);
/* Tiles: the tile holding element `off` of a tensor's part, its first
 * element, and how many of [off, off + n) it holds; tile k's piece on
 * this rank (engine/zero's zn_zero_piece: on one rank, the tile). */
unsigned tr_tile_of(const struct tstate *s, uint64_t off);
void tr_piece(const struct zn_trainer *t, const struct tstate *s, unsigned k,
	      struct zn_zero_piece *p);
uint64_t tr_tile_first(const struct tstate *s, unsigned k);
uint64_t tr_tile_span(const struct tstate *s, uint64_t off, uint64_t n);
void tr_groups_open(struct groups *g, struct zn_trainer *t, bool put);
int tr_groups_at(struct groups *g, uint64_t p, float **a, uint64_t *left);
int tr_states_at(struct groups *g, const struct tstate *s, uint64_t o, float **a, uint64_t *n);
int tr_groups_close(struct groups *g);
int tr_groups_finish(struct groups *g, int rc);

/* optimizer.c: one step's update; waiting for the overlapped one (all of
 * it, or a layer's tensors) and applying what it staged. */
int tr_optimizer_step(struct zn_trainer *t, const struct zn_adam_hparams *hp, float grad_scale,
		      const struct zn_adam_exec *ex);
int tr_opt_wait_all(struct zn_trainer *t);
int tr_opt_wait_layer(struct zn_trainer *t, unsigned layer);
unsigned tr_opt_done(struct zn_trainer *t);
/* What the optimizer keeps in its two state arrays, as checkpoints name
 * it (metadata zinc.optimizer_states): "moments" (Adam, AdamW, Lamb:
 * exp_avg and exp_avg_sq) or "momentum" (SGD: its buffer in exp_avg). */
const char *tr_optimizer_states(const struct zn_trainer *t);

/* save.c: every rank's result of something they did together: a rank that
 * failed is named on the others (`what` says what was done). */
int tr_agree_rc(struct zn_trainer *t, int rc, const char *what);

/* weights.c: the starting weights' source (checkpoint.resume's metadata
 * applied: step, data position, loss scaler); every tensor made once. */
int tr_open_weights(struct zn_trainer *t);
int tr_materialize(struct zn_trainer *t);

/* sources.c: a checkpoint's optimizer files, or model.from's weights
 * (every tensor checked); the file with the checkpoint's metadata; the
 * first nstates of every tensor's states present; elements [off, off + n)
 * of tensor i read; closed. */
int tr_sources_open_checkpoint(struct sources *src, const char *dir);
int tr_sources_open_pretrained(struct sources *src, const char *path);
struct zn_st_file *tr_sources_meta(const struct sources *src);
int tr_sources_check_states(struct sources *src, const char *dir, int nstates);
int tr_sources_read(const struct sources *src, unsigned i, uint64_t off, uint64_t n,
		    float *master, float *m, float *v);
void tr_sources_close(struct sources *src);

/* format.c: the states' name suffixes; metadata as hex (decode: 0 or -1);
 * the parts' tiles, zinc.tile_rows (0 or -1).
 * The model's own files are the architecture's (model/arch.h). */
extern const char *const tr_state_suffix[3];
void tr_hex_encode(const void *p, size_t n, char *out);
int tr_hex_decode(const char *hex, void *p, size_t n);
int tr_tile_rows_parse(const char *v, const struct zn_tensor_table *tab, uint64_t *rows,
		       const char **bad, int *bad_len);

#endif
