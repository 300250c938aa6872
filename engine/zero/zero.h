/* ZeRO's rules: which of a tensor's model states a rank holds, on which
 * tier, and in how many bytes.  Private to engine/; the one place the
 * trainer (engine/train/) allocates by and the memory plan (engine/plan/)
 * counts by, so that the two cannot disagree about a byte.
 *
 * Partitioning over W ranks: every tensor of n elements is cut into W parts
 * of ceil(n / W) elements (the last ones shorter or empty); rank r owns
 * elements [lo, lo + nown).  Stage 1 partitions the optimizer states
 * (master, m, v), stage 2 the gradient accumulators too, stage 3 the
 * parameters too.  One rank: lo 0, nown = n.
 *
 * What each tier holds of a tensor (zn_zero_arrays_of):
 *   device         fp32: a resident tensor's parameters (no offload_param,
 *                  or below the persistence threshold) for good, another's
 *                  while its layer is fetched; its gradients for good where
 *                  they accumulate there over a step, else while its layer
 *                  is in a backward; this rank's part (stage 3 on several
 *                  ranks without offload_param); master, m, v with
 *                  offload_optimizer none
 *   host           master, m, v unless they live on NVMe (with
 *                  offload_optimizer none: the checkpoint's staging); the
 *                  gradient accumulator in grad_accum_dtype, unless it
 *                  lives on NVMe (grads_nvme); the overlapped update's
 *                  staging of a resident tensor's new values
 *   home           offload_param: the parameters in the training dtype, in
 *                  host memory or on NVMe (zn_zero_home, max_in_cpu)
 *   nvme           offload_optimizer nvme: master, m, v in sub-groups
 *                  (zn_zero_sub_group, zn_zero_optswap_config), and with
 *                  grads_nvme an offloaded tensor's gradient sums
 */
#ifndef ZN_ENGINE_ZERO_H
#define ZN_ENGINE_ZERO_H

#include <stdbool.h>
#include <stdint.h>

#include "zinc/configfile.h"
#include "zinc/kernels.h"
#include "zinc/model.h"
#include "zinc/offload.h"
#include "zinc/train.h"

/* fp32 arrays the optimizer keeps per element: master, exp_avg, exp_avg_sq
 * (Adam's). */
#define ZN_ZERO_STATES 3

/* The rules for rank `rank` of `world` under one config. */
struct zn_zero_rules {
	int rank, world;
	unsigned stage;
	uint64_t parts;          /* stage >= 1: every tensor in `world` parts */
	uint64_t threshold;      /* stage3_param_persistence_threshold, elements */
	uint64_t max_in_cpu;     /* offload_param.max_in_cpu, elements */
	uint64_t sub_group_size; /* elements; 0: DeepSpeed's one parameter per
	                          * sub-group, made sub-groups of `largest`
	                          * elements (zn_zero_sub_group) */
	uint64_t largest;        /* elements of the largest tensor once the table
	                          * is known; 0: not yet (a 0 sub_group_size is
	                          * then one sub-group) */
	uint64_t tile_size;      /* elements per tile of a tileable tensor, 0: none;
	                          * one rank (zn_zero_tile_rows) */
	bool offload_param, device_opt;
	bool nvme_opt;           /* master, m, v on NVMe (offload_optimizer nvme) */
	bool nvme_homes;         /* offload_param nvme: homes past max_in_cpu on NVMe */
	bool overlap;            /* offload_param with nvme_opt: the update overlaps
	                          * the next forward, staging the resident
	                          * tensors' new values in host memory */
	bool partition_params;   /* stage 3: parameters in homes (offload_param)
	                          * or, on several ranks, in parts on the device */
	bool host_grads;         /* gradient accumulators in host memory: for the
	                          * CPU optimizer, or reduced across ranks on the
	                          * host */
	bool grads_nvme;         /* ... except offloaded tensors', which gather on
	                          * NVMe beside the optimizer states, in their
	                          * sub-groups (offload_optimizer nvme with
	                          * offload_param, gradients not host; several
	                          * ranks send their reduced parts) */
	enum zn_dtype dtype;     /* training: what parameters and gradients are
	                          * rounded to */
	bool dev16;              /* offloaded layers visit the device in the
	                          * 16-bit training dtype only (parameters and
	                          * gradients: 16-bit storage with
	                          * offload_param); else in fp32 beside 16-bit
	                          * copies */
	enum zn_dtype gdt, hdt;  /* the host gradient accumulators', the homes' */
};

void zn_zero_rules_init(struct zn_zero_rules *z, const struct zn_config *cfg, int rank,
			int world);

/* The placements and optimizers the trainer runs, checked before a model
 * or data is looked at: offload_param needs stage 3 and the optimizer off
 * the device; zn_zero_check_optimizer.  The trainer, zinc plan and zinc
 * config --check ask it.  0 or -EINVAL naming the key. */
int zn_zero_check_config(const struct zn_config *cfg);

/* Whether the configured optimizer can run where offload_optimizer puts
 * its states: Lamb and SGD only on the CPU optimizer (the device kernels
 * have Adam alone).  0 or -EINVAL saying why; the trainer and the plan ask
 * the same. */
int zn_zero_check_optimizer(const struct zn_config *cfg);

/* One tensor's share: parts of ceil(numel / parts) elements, this rank's
 * [lo, lo + nown); whether it stays on the device whole (DeepSpeed's
 * persistence: small tensors are not worth a round trip each layer) and
 * whether its gradients accumulate there over a step (stages 2 and 3 on
 * several ranks reduce them as each layer's become final instead).  An
 * offloaded tiled tensor (`tiled`, zn_zero_tile_rows) is partitioned tile
 * by tile instead, each tile as a tensor of its own (DeepSpeed's
 * TiledLinear makes each tile a parameter): this rank owns a piece of
 * every tile (zn_zero_piece), nown is their sum, part the part of a full
 * tile, lo 0. */
struct zn_zero_share {
	uint64_t part, lo, nown;
	bool resident, dev_grads;
	bool tiled;
	uint64_t tile_rows;      /* zn_zero_tile_rows */
};

struct zn_zero_share zn_zero_share_of(const struct zn_zero_rules *z, const struct zn_param_desc *d);

/* Tile k of a tensor of rows x cols cut in tiles of R rows (R 0: whole,
 * one tile), partitioned over W ranks tile by tile: the tile's elements
 * [first, first + n), rank r's piece of it [first + lo, first + lo + len)
 * -- zn_zero_part of the tile -- at `own` in rank r's part (the tiles'
 * pieces back to back, so one rank's part is the tensor in order), and
 * the tile's part, ceil(n / W).  Ranks' pieces lie in rank order, so the
 * W parts of an all-gather are the tile's elements in order.  Rank r's
 * part holds zn_zero_pieces_own elements. */
struct zn_zero_piece {
	uint64_t first, n, lo, len, own, part;
};
void zn_zero_piece_of(uint64_t rows, uint64_t cols, uint64_t R, int W, int r, uint64_t k,
		      struct zn_zero_piece *p);
uint64_t zn_zero_pieces_own(uint64_t rows, uint64_t cols, uint64_t R, int W, int r);

/* Memory-centric tiling (ZeRO-Infinity): rows per tile of a 2-D tensor
 * of more than tile_size elements -- tiles of whole rows, at most
 * tile_size elements (one row when a row is larger), as even as that
 * allows; 0 for a tensor that comes whole (several ranks tile only with
 * offload_param, whose homes the tiles are).  An offloaded
 * tiled tensor has a home per tile and sends its gradients tile by tile,
 * and the norm takes its share tile by tile in every placement, so that
 * placements keep the same bits.  A tileable one (model.h's
 * zn_param_desc: an untied vocabulary) is also computed tile by tile,
 * and visits the device a tile at a time; another is on the device whole
 * while its layer is (the tied embedding, a large block matrix). */
uint64_t zn_zero_tile_rows(const struct zn_zero_rules *z, const struct zn_param_desc *d);
/* Its tiles (1 when whole), and tile k's first element and length. */
uint64_t zn_zero_tiles(const struct zn_zero_rules *z, const struct zn_param_desc *d);
void zn_zero_tile(const struct zn_zero_rules *z, const struct zn_param_desc *d, uint64_t k,
		  uint64_t *first, uint64_t *n);
/* Elements of a tensor that move between the tiers at once: a tile of an
 * offloaded tiled tensor (what its homes, staging and gradients' way
 * hold), else the whole tensor. */
uint64_t zn_zero_unit(const struct zn_param_desc *d, const struct zn_zero_share *s);

/* The arrays a tensor's share takes, in bytes, one allocation each (0:
 * none).  Arrays of this rank's part hold at least one element, so that an
 * empty part (more ranks than elements) still has an address. */
struct zn_zero_arrays {
	/* device, fp32 */
	uint64_t dparam;  /* the whole tensor's parameters: resident */
	uint64_t dgrad;   /* its gradients, accumulated over a step: dev_grads */
	uint64_t fparam;  /* not resident: the whole tensor's parameters (a
	                   * tile's when tiled) while its layer is fetched (fp32,
	                   * or 16-bit with dev16) */
	uint64_t fgrad;   /* not dev_grads: its gradients while its layer is
	                   * fetched for a backward, until they leave (ditto) */
	uint64_t ffold;   /* dev16: the fp32 sum a tensor's gradients fold into
	                   * when its layer is released before they are final
	                   * (the tied embedding between the classifier and the
	                   * encoder; taken by tiles, a tile's) */
	uint64_t dpart;   /* stage 3 on several ranks without offload_param: this
	                   * rank's part, gathered at each fetch */
	uint64_t dstate;  /* each of master, m, v: offload_optimizer none */
	/* host */
	uint64_t hstate;  /* each of master, m, v (fp32), unless on NVMe */
	uint64_t hgrad;   /* the gradient accumulator (gdt): host_grads, unless
	                   * on NVMe (nvme_grad) */
	bool nvme_grad;   /* its gradients gather on NVMe: grads_nvme, not
	                   * dev_grads */
	uint64_t staged;  /* fp32: overlap's new values of a resident tensor */
	/* host or NVMe */
	uint64_t home;    /* offload_param (hdt): where zn_zero_home says, tile by
	                   * tile when tiled */
};

void zn_zero_arrays_of(const struct zn_zero_rules *z, const struct zn_param_desc *d,
		       const struct zn_zero_share *s, struct zn_zero_arrays *a);

/* Adds what the share holds of the model states to *m, the rank's own
 * accounting (zn_trainer_memory): resident tensors whole, the rest as
 * exactly nown elements (no array's one-element floor). */
void zn_zero_count(const struct zn_zero_rules *z, uint64_t numel, const struct zn_zero_share *s,
		   struct zn_rank_memory *m);

/* Each rank's share of the model states from the config alone: the
 * tensors of the config's model under the rules for `rank` of `world`,
 * counted as zn_zero_count counts them (0, or -EINVAL for a rank outside
 * 0 .. world - 1, or zn_arch_from_config's error). */
int zn_zero_rank_memory(const struct zn_config *cfg, int world, int rank,
			struct zn_rank_memory *out);

/* Whether the trainer stages gradients on the host through a buffer of
 * the largest tensor in fp32: to add later micro-batches' (accum > 1) or
 * to convert 16-bit layers' (dev16) to another accumulator dtype, and on
 * several ranks for every reduced part. */
bool zn_zero_grad_staging(const struct zn_zero_rules *z, uint32_t accum);

/* Where part r of W of an n-element tensor starts, and its length. */
void zn_zero_part(uint64_t n, int W, int r, uint64_t *lo, uint64_t *len);

/* offload_param's homes, tensor after tensor in the model's order: host
 * memory with device cpu; with nvme (DeepSpeed's max_in_cpu) host memory
 * while the host homes so far plus this one stay within max_in_cpu
 * elements, NVMe after that.  Start from zeros. */
struct zn_zero_homes {
	uint64_t host_elems;      /* elements of the homes in host memory */
	uint64_t host_fold_bytes; /* the folds' bytes there (zn_zero_fold) */
	uint64_t nvme_bytes;      /* the NVMe swap store's capacity: the NVMe
	                           * homes' bytes, each rounded up to 4096 */
	uint64_t nvme_largest;    /* elements of the largest NVMe home */
	const char *nvme_largest_name; /* its tensor's name (NULL: none) */
};

/* The home of a tensor (not resident, offload_param) of whose part this
 * rank owns `nown` elements, counted into *h. */
enum zn_tier zn_zero_home(const struct zn_zero_rules *z, struct zn_zero_homes *h, uint64_t nown,
			  const char *name);
/* Whether a tensor's tiles have folds: a tied embedding taken tile by tile
 * (zn_zero_share tiled, the model's tileable and tied), whose classifier
 * part of a tile's gradient waits, in fp32, for the encoder's. */
bool zn_zero_has_folds(const struct zn_param_desc *d, const struct zn_zero_share *s);
/* The fold of a tile of n elements (fp32, the whole tile's: every rank
 * computes all of it before the reduction) beside the homes, counted into
 * *h once every home is: on NVMe with offload_param nvme, else in host
 * memory.  On NVMe it is kept in `parts` swap tensors (zn_zero_part of
 * the tile), zn_zero_fold_parts of a tensor's full tile: each no larger
 * than the largest NVMe home, so the homes' buffers hold it and do not
 * grow for it (with no NVMe home, each the size of the tile's home). */
unsigned zn_zero_fold_parts(const struct zn_zero_rules *z, const struct zn_zero_homes *h,
			    uint64_t n_full);
enum zn_tier zn_zero_fold(const struct zn_zero_rules *z, struct zn_zero_homes *h, uint64_t n,
			  unsigned parts, const char *name);

/* The pinned buffer pool the NVMe homes are read through: as large as the
 * largest NVMe home, in the homes' dtype, one layer of prefetch (the
 * trainer's).  0, or zn_offload_param_pool's -EINVAL (message set), e.g.
 * for a pc->buffer_size below that home. */
int zn_zero_homes_pool(const struct zn_zero_rules *z, const struct zn_offload_param_config *pc,
		       const struct zn_zero_homes *h, struct zn_bufpool_config *out);

/* Elements per sub-group of the NVMe optimizer states: sub_group_size (0:
 * all), capped at the `own` elements whose states this rank keeps; at
 * least 1. */
uint64_t zn_zero_sub_group(const struct zn_zero_rules *z, uint64_t own);

/* The optimizer swapper's config for `own` elements of states (its
 * store, aio and trace left NULL for the caller): sub-groups, ZN_ZERO_STATES
 * arrays, offload_optimizer's buffers, pipelining and pinning, and the
 * gradients beside them with grads_nvme. */
void zn_zero_optswap_config(const struct zn_zero_rules *z,
			    const struct zn_offload_optimizer_config *oc, uint64_t own,
			    struct zn_optswap_config *out);

#endif
