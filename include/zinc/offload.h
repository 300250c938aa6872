/* zinc — offload: the pinned buffer pool, the NVMe swap store and the
 * tensor swapper (ZeRO-Infinity's NVMe tier).
 *
 *   bufpool  `buffer_count` page-locked, O_DIRECT-aligned, huge-page-backed
 *            host buffers on the NUMA node nearest the disk, registered
 *            with the io_uring engine as fixed buffers.
 *   store    the NVMe space: preallocated swap files in one or more
 *            directories, an extent allocator (tensor -> file ranges, striped
 *            over the directories), optional XXH3 checksums per extent.
 *   swapper  keyed tensors with a home tier (host or NVMe): swap_out,
 *            prefetch, acquire, release, with statistics per tier.
 *
 * All objects are thread-safe.  Functions return 0 or -errno and set the
 * last-error message (zn_last_error); constructors return NULL.
 */
#ifndef ZINC_OFFLOAD_H
#define ZINC_OFFLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "zinc/aio.h"
#include "zinc/common.h"
#include "zinc/keys.h"
#include "zinc/trace.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- config sections: DeepSpeed's zero_optimization.offload_param and
 * zero_optimization.offload_optimizer, with its names, units and defaults.
 * Sizes given in elements (buffer_size, max_in_cpu) stay elements here; the
 * engine multiplies by the element size. */

enum zn_offload_device { ZN_OFFLOAD_NONE, ZN_OFFLOAD_CPU, ZN_OFFLOAD_NVME };

#define ZN_NVME_PATH_MAX 1024

struct zn_offload_param_config {
	int device;                  /* enum zn_offload_device; default none */
	char nvme_path[ZN_NVME_PATH_MAX]; /* one directory, or several separated by ',' */
	bool pin_memory;             /* default true */
	uint32_t buffer_count;       /* default 5; 0 = auto (from the prefetch depth) */
	uint64_t buffer_size;        /* elements per buffer; 0 = auto (the default) */
	uint64_t max_in_cpu;         /* elements kept in host memory; default 1e9 */
	bool checksum;               /* zinc: XXH3 per extent, default true */
	uint64_t stripe_size;        /* zinc: bytes per stripe across nvme paths, default 4 MiB */
};

struct zn_offload_optimizer_config {
	int device;                  /* enum zn_offload_device; default none */
	char nvme_path[ZN_NVME_PATH_MAX];
	bool pin_memory;             /* default true */
	uint32_t buffer_count;       /* default 4 */
	bool pipeline_read;          /* default false */
	bool pipeline_write;         /* default false */
	bool fast_init;              /* default false */
	double ratio;                /* default 1.0; < 1 (Twin-Flow) is not supported yet */
	bool super_offload;          /* default false; true is not supported */
	double cpuadam_cores_perc;   /* default 0.8 */
	bool checksum;               /* zinc: default true */
	uint64_t stripe_size;        /* zinc: default 4 MiB */
	int gradients;               /* zinc: enum zn_offload_grads; default auto */
};

/* Where the gradients of offloaded tensors gather over a step with
 * offload_optimizer nvme: auto -- on NVMe beside the optimizer states
 * where zinc can (one rank), else host accumulators. */
enum zn_offload_grads { ZN_OFFLOAD_GRADS_AUTO, ZN_OFFLOAD_GRADS_HOST, ZN_OFFLOAD_GRADS_NVME };

ZN_API extern const struct zn_key_table zn_offload_param_key_table;
ZN_API extern const struct zn_key_table zn_offload_optimizer_key_table;

struct zn_bufpool_config;

/* The buffer pool offload_param asks for, for parameter tensors of at most
 * `largest_elems` elements (named `largest_name` in messages) of
 * `elem_bytes` each, prefetched `prefetch_depth` tensors ahead:
 * buffer_size auto -> the largest tensor; buffer_count auto -> the
 * prefetch depth + 2 (the tensor in use and one being written back), at
 * least 3.  A buffer_size below the largest tensor is -EINVAL with the value
 * that works.  Fills *out (numa_node -1; near_path: cfg->nvme_path when it
 * names one disk, so cfg must outlive the pool's creation). */
ZN_API int zn_offload_param_pool(const struct zn_offload_param_config *cfg, uint64_t largest_elems,
				 const char *largest_name, size_t elem_bytes,
				 unsigned prefetch_depth, struct zn_bufpool_config *out);

/* Split a nvme_path value ("a,b,c") into at most `max` paths (pointers into
 * `buf`, a copy the caller provides of at least ZN_NVME_PATH_MAX bytes).
 * Returns the count, or -EINVAL for an empty element. */
ZN_API int zn_nvme_paths_split(const char *value, char *buf, const char **paths, unsigned max);

/* ---- pinned buffer pool ------------------------------------------------ */

struct zn_bufpool_config {
	size_t buffer_count;     /* >= 1 */
	size_t buffer_bytes;     /* each; rounded up to 4096 */
	bool pin_memory;         /* page-lock: cudaHostRegister (CUDA builds), else mlock */
	int numa_node;           /* bind to this node; -1: nearest to near_path, or none */
	const char *near_path;   /* optional: a file or directory on the disk served */
};

struct zn_bufpool;

/* Host bytes a pool with this config takes: buffer_count buffers of
 * buffer_bytes rounded up to 4096 (0 for a count or size of 0). */
ZN_API uint64_t zn_bufpool_bytes(const struct zn_bufpool_config *cfg);

/* Allocate the pool.  Page-locking that the limits refuse (RLIMIT_MEMLOCK)
 * is a warning, not an error; the pool then works unpinned.  When `aio` is
 * given, the whole pool is registered with it as fixed buffers. */
ZN_API struct zn_bufpool *zn_bufpool_create(const struct zn_bufpool_config *cfg,
					    struct zn_aio *aio);
/* Every buffer must have been released. */
ZN_API void zn_bufpool_destroy(struct zn_bufpool *pool);

/* Take a free buffer, waiting until one is released. */
ZN_API int zn_bufpool_acquire(struct zn_bufpool *pool, void **buf);
/* Take a free buffer or fail at once with -EAGAIN. */
ZN_API int zn_bufpool_try_acquire(struct zn_bufpool *pool, void **buf);
ZN_API void zn_bufpool_release(struct zn_bufpool *pool, void *buf);

ZN_API size_t zn_bufpool_buffer_bytes(const struct zn_bufpool *pool);
ZN_API size_t zn_bufpool_count(const struct zn_bufpool *pool);
ZN_API size_t zn_bufpool_free_count(struct zn_bufpool *pool);
ZN_API bool zn_bufpool_pinned(const struct zn_bufpool *pool);
ZN_API int zn_bufpool_numa_node(const struct zn_bufpool *pool); /* -1: not bound */

/* ---- swap store ---------------------------------------------------------- */

/* The most directories one store spreads over. */
#define ZN_STORE_MAX_PATHS 16

struct zn_store_config {
	const char *const *paths;  /* directories, one per disk */
	unsigned npaths;           /* 1..ZN_STORE_MAX_PATHS */
	uint64_t capacity;         /* bytes over all paths */
	uint64_t stripe_bytes;     /* striping unit; 0: 4 MiB.  Multiple of 4096 */
	bool checksum;             /* XXH3 per extent, verified on every read */
};

/* Bytes of each path's swap file for cfg's capacity, npaths and stripe:
 * its share rounded up to 4096, plus two stripes of slack with several
 * paths (extents are striped from the emptiest path). */
ZN_API uint64_t zn_store_path_bytes(const struct zn_store_config *cfg);

struct zn_store;
struct zn_extent;
struct zn_store_io;

/* Create the swap files (preallocated: a lack of room fails here, before
 * anything is written, naming needed and free bytes per path), after
 * removing swap files a crashed run left in the same directories.  The
 * files are removed again by zn_store_destroy. */
ZN_API struct zn_store *zn_store_create(const struct zn_store_config *cfg, struct zn_aio *aio);
ZN_API void zn_store_destroy(struct zn_store *store);

/* Bytes a buffer must hold for a tensor of `bytes`: rounded up to the
 * direct-I/O alignment, since whole blocks go to the disk. */
ZN_API uint64_t zn_store_padded(const struct zn_store *store, uint64_t bytes);

/* Reserve space for `bytes` named `name` (used in messages).  -ENOSPC with
 * used/free/capacity when the store is full. */
ZN_API int zn_store_alloc(struct zn_store *store, const char *name, uint64_t bytes,
			  struct zn_extent **out);
ZN_API void zn_store_free(struct zn_store *store, struct zn_extent *ext);
ZN_API uint64_t zn_extent_bytes(const struct zn_extent *ext);
ZN_API const char *zn_extent_name(const struct zn_extent *ext);

/* Start writing the extent's bytes from `buf` (zn_store_padded bytes
 * readable), or reading them into `buf` (as many writable).  The buffer must
 * stay untouched until zn_store_wait.  At most one I/O per extent at a time. */
ZN_API int zn_store_write(struct zn_store *store, struct zn_extent *ext, const void *buf,
			  struct zn_store_io **op);
ZN_API int zn_store_read(struct zn_store *store, struct zn_extent *ext, void *buf,
			 struct zn_store_io **op);
/* Wait for an I/O and free it: 0, or -errno naming the tensor; a read whose
 * checksum does not match gives -EBADMSG; a read of an extent whose last
 * write failed gives -EIO (its contents are unknown). */
ZN_API int zn_store_wait(struct zn_store_io *op);
/* The same, and *done_ns = when the disk finished (see zn_aio_wait_timed). */
ZN_API int zn_store_wait_timed(struct zn_store_io *op, uint64_t *done_ns);
ZN_API bool zn_store_io_done(const struct zn_store_io *op);

ZN_API uint64_t zn_store_capacity(const struct zn_store *store);
ZN_API uint64_t zn_store_used(struct zn_store *store);
/* The swap file of path i (for tests and tools). */
ZN_API const char *zn_store_file_path(const struct zn_store *store, unsigned i);

/* ---- tensor swapper ------------------------------------------------------ */

enum zn_tier { ZN_TIER_HOST = 0, ZN_TIER_NVME = 1, ZN_TIER_COUNT };

struct zn_swapper_config {
	struct zn_store *store;    /* required for NVMe-home tensors */
	struct zn_bufpool *pool;   /* buffers NVMe-home tensors are read into */
	struct zn_trace *trace;    /* optional: spans for reads, writes, stalls */
};

struct zn_swapper;
struct zn_tensor;

struct zn_swapper_stats {
	uint64_t bytes_read[ZN_TIER_COUNT], bytes_written[ZN_TIER_COUNT];
	uint64_t reads[ZN_TIER_COUNT], writes[ZN_TIER_COUNT];
	uint64_t acquires[ZN_TIER_COUNT];
	uint64_t hits[ZN_TIER_COUNT];   /* acquires that found the tensor resident */
	uint64_t stall_ns[ZN_TIER_COUNT]; /* time acquire waited for I/O or a buffer */
	uint64_t prefetch_skipped;      /* prefetches with no buffer free */
	uint64_t evictions;
};

ZN_API struct zn_swapper *zn_swapper_create(const struct zn_swapper_config *cfg);
/* Waits for outstanding I/O; every tensor must be released. */
ZN_API void zn_swapper_destroy(struct zn_swapper *sw);

/* Register a tensor of `bytes`.  Host-home tensors get host memory of their
 * own (zeroed); NVMe-home ones an extent (zeroed on first acquire until
 * written).  A tensor larger than the pool's buffers is refused with the
 * buffer size that would work. */
ZN_API int zn_swapper_add(struct zn_swapper *sw, const char *name, uint64_t bytes,
			  enum zn_tier home, struct zn_tensor **out);
/* Forget a released tensor and free its space. */
ZN_API int zn_swapper_remove(struct zn_swapper *sw, struct zn_tensor *t);

/* Write `src` (the tensor's bytes, zn_store_padded readable for NVMe) as
 * the tensor's new contents, asynchronously; `src` must stay untouched until
 * zn_swapper_sync(t) or the next acquire of t.  Host-home: a copy.  A
 * resident copy in a pool buffer is dropped. */
ZN_API int zn_swapper_swap_out(struct zn_swapper *sw, struct zn_tensor *t, const void *src);

/* Start reading an NVMe-home tensor into a pool buffer if it is not
 * resident or on its way.  A hint: when no buffer is free it does nothing
 * (counted in prefetch_skipped) and returns 0. */
ZN_API int zn_swapper_prefetch(struct zn_swapper *sw, struct zn_tensor *t);

/* Wait until the tensor is resident and pin it; *buf is its memory, valid
 * until the matching release.  Blocks while every buffer is pinned. */
ZN_API int zn_swapper_acquire(struct zn_swapper *sw, struct zn_tensor *t, void **buf);
/* The same, but -EAGAIN instead of waiting for a buffer. */
ZN_API int zn_swapper_try_acquire(struct zn_swapper *sw, struct zn_tensor *t, void **buf);
/* Acquire to replace every byte: an absent NVMe-home tensor gets a buffer
 * without being read (its contents are undefined until the caller writes
 * them); release it dirty.  Parameters the optimizer has just updated go
 * home this way, without reading the old ones first. */
ZN_API int zn_swapper_acquire_overwrite(struct zn_swapper *sw, struct zn_tensor *t, void **buf);

/* Unpin.  `dirty`: the caller changed the bytes; the last release of a
 * dirty NVMe-home tensor starts writing it back (it stays resident as a
 * cache until its buffer is needed). */
ZN_API int zn_swapper_release(struct zn_swapper *sw, struct zn_tensor *t, bool dirty);

/* Wait for the tensor's outstanding I/O; returns its error if it failed. */
ZN_API int zn_swapper_sync(struct zn_swapper *sw, struct zn_tensor *t);
/* Wait for all outstanding I/O; the first error. */
ZN_API int zn_swapper_flush(struct zn_swapper *sw);

ZN_API void zn_swapper_get_stats(struct zn_swapper *sw, struct zn_swapper_stats *out);
/* Spans for reads, writes and stalls from now on go to `trace` (NULL: none). */
ZN_API void zn_swapper_set_trace(struct zn_swapper *sw, struct zn_trace *trace);
ZN_API uint64_t zn_tensor_bytes(const struct zn_tensor *t);
ZN_API enum zn_tier zn_tensor_home(const struct zn_tensor *t);

/* ---- pipelined optimizer swapper ------------------------------------------
 *
 * The optimizer step with its states (fp32 master parameters and the
 * optimizer's moments) on NVMe.  The elements are cut into sub-groups of
 * `sub_group_size`; each sub-group's states live in one extent ([master |
 * state1 | state2], each array padded to 4 KiB).  The step reads group g+1
 * (pipeline_read) while the caller's update runs on group g and group g-1 is
 * written back (pipeline_write); with both off it does the same work
 * serially, as DeepSpeed does.  Writes go to a spare extent and replace the
 * group's old one only once they succeed, so a failed write (a full or
 * size-limited disk) leaves that group's previous states intact.
 */
struct zn_optswap_config {
	struct zn_store *store;    /* where the states live */
	struct zn_aio *aio;        /* the store's engine: buffers are registered with it */
	uint64_t params;           /* elements */
	uint64_t sub_group_size;   /* elements per sub-group */
	unsigned nstates;          /* fp32 arrays per element, master included: 3 for Adam */
	/* Buffers of one sub-group's states each: at least 1 + pipeline_read +
	 * pipeline_write; more deepen the read-ahead.  0: the minimum. */
	unsigned buffer_count;
	bool pipeline_read, pipeline_write;
	bool pin_memory;
	struct zn_trace *trace;    /* optional: read / update / write spans per group */
	/* Gradients beside the states (zn_optswap_grads_*): bytes per
	 * gradient element, 2 or 4; 0: none. */
	unsigned grad_bytes;
};

struct zn_optswap;

/* Store capacity (bytes) the swapper with this config will allocate. */
ZN_API uint64_t zn_optswap_store_bytes(const struct zn_optswap_config *cfg);
/* Host bytes of the swapper's buffers with this config (its pool of slots:
 * one per sub-group being read, updated or written, more with
 * buffer_count when reading ahead). */
ZN_API uint64_t zn_optswap_buffer_bytes(const struct zn_optswap_config *cfg);

ZN_API struct zn_optswap *zn_optswap_create(const struct zn_optswap_config *cfg);
ZN_API void zn_optswap_destroy(struct zn_optswap *os);
/* Spans from now on go to `trace`; not while a step runs. */
ZN_API void zn_optswap_set_trace(struct zn_optswap *os, struct zn_trace *trace);
ZN_API uint64_t zn_optswap_groups(const struct zn_optswap *os);

/* ---- a sub-group's states between steps -----------------------------------
 *
 * For initialisation, checkpoints and checks: sub-group g's state arrays
 * (states[k], k < nstates, each of the group's elements: sub_group_size,
 * the last group's the rest) in one of the swapper's own buffers, lent to
 * the caller, so that filling or saving the states needs no buffer of its
 * own.  Group g uses buffer g % buffers: a group's write runs behind the
 * filling of the next ones, and a read starts the reads of the next
 * groups behind it (a caller going through the groups in order finds them
 * read).  Groups whose buffers differ may be lent at once.  Not during a
 * gradient pass (-EBUSY); a step waits for the writes still in flight and
 * refuses to run while a group is lent.  Arrays never written read as
 * zeros. */

/* Lend group g's arrays to fill: their contents are undefined, every
 * element of every array must be written before zn_optswap_group_write.
 * Waits for the write of the group that last used the buffer and returns
 * its error (that group keeps its previous states).  0 or -errno. */
ZN_API int zn_optswap_group_fill(struct zn_optswap *os, uint64_t g, float **states);
/* The filled group goes to NVMe: its write starts and is waited for by
 * the next fill or read of its buffer, by zn_optswap_group_sync or by a
 * step, which return its error. */
ZN_API int zn_optswap_group_write(struct zn_optswap *os, uint64_t g);
/* Lend group g's arrays as they are on NVMe, until
 * zn_optswap_group_release.  0 or -errno. */
ZN_API int zn_optswap_group_read(struct zn_optswap *os, uint64_t g, const float **states);
ZN_API void zn_optswap_group_release(struct zn_optswap *os, uint64_t g);
/* Every write of a lent group waited for and every read ahead of one
 * dropped: 0, or the first write's error. */
ZN_API int zn_optswap_group_sync(struct zn_optswap *os);

/* The same, copied: sub-group g's arrays written from (read into) the
 * caller's states[k], synchronously. */
ZN_API int zn_optswap_write_group(struct zn_optswap *os, uint64_t g, const float *const *states);
ZN_API int zn_optswap_read_group(struct zn_optswap *os, uint64_t g, float *const *states);

/* The update of one sub-group, in place: states[k] are its arrays (in a
 * pinned buffer), `first` the index of its first element, `n` its length;
 * with cfg.grad_bytes, states[nstates] holds the group's gradients (read,
 * not written back).  The caller's closure writes the fp16/bf16 parameter
 * copy where it wants it.  0, or -errno to stop the step. */
typedef int (*zn_optswap_update_fn)(void *user, uint64_t group, uint64_t first, uint64_t n,
				    float *const *states);

/* ---- gradients on NVMe ----------------------------------------------------
 *
 * With cfg.grad_bytes, every sub-group also has a gradient extent: its
 * elements' gradients, which the caller sends during a backward pass and
 * zn_optswap_step reads with the group's states (states[nstates] of the
 * update points at them, grad_bytes per element, in the caller's dtype).
 * Between steps the swapper's buffers are idle and carry them: a group's
 * gradients gather in a buffer as they come and are written once all the
 * elements declared with zn_optswap_grads_expect have come.  A pass that
 * accumulates first reads each group's previous sum (zn_optswap_grads_get),
 * reading ahead to the groups below: a backward pass sends its gradients
 * in descending element order, and when it reads, adds to and sends
 * each group's piece of a tensor before the next group's, one group is
 * open at a time: one buffer is enough; more let writes and reads overlap.
 * Groups nothing is expected of have no gradients (zeros for the step).
 */

/* Elements [first, first + n) get gradients in every pass. */
ZN_API int zn_optswap_grads_expect(struct zn_optswap *os, uint64_t first, uint64_t n);
/* A pass starts: `accumulate` says the caller will add to the previous
 * pass's sums (read through zn_optswap_grads_get); -EBUSY during a step. */
ZN_API int zn_optswap_grads_begin(struct zn_optswap *os, bool accumulate);
/* The previous pass's gradients of [first, first + n) into dst. */
ZN_API int zn_optswap_grads_get(struct zn_optswap *os, uint64_t first, uint64_t n, void *dst);
/* This pass's gradients of [first, first + n) (every expected element
 * once): copied into their groups' buffers, a group written once whole. */
ZN_API int zn_optswap_grads_put(struct zn_optswap *os, uint64_t first, uint64_t n,
				const void *src);
/* The pass is over: every write waited for, every expected element sent
 * (else -EPROTO naming the first group short of them). */
ZN_API int zn_optswap_grads_end(struct zn_optswap *os);

/* What the passes moved so far, and how long they waited for the disk. */
struct zn_optswap_grad_stats {
	uint64_t bytes_read, bytes_written;
	double wait_s;
};
ZN_API void zn_optswap_grads_stats(const struct zn_optswap *os,
				   struct zn_optswap_grad_stats *out);
/* Bytes of the gradient extents on NVMe (part of zn_optswap_store_bytes). */
ZN_API uint64_t zn_optswap_grads_store_bytes(const struct zn_optswap_config *cfg);

/* One optimizer step over every sub-group.  0, or the first error (the
 * groups already written hold their new states, the failed one its old). */
ZN_API int zn_optswap_step(struct zn_optswap *os, zn_optswap_update_fn update, void *user);

/* Seconds of the last step: total, and the time the step waited for reads
 * (stall), spent in updates, and waited for writes. */
struct zn_optswap_stats {
	double step_s, read_wait_s, update_s, write_wait_s;
	uint64_t bytes_read, bytes_written;
};
ZN_API void zn_optswap_last_stats(const struct zn_optswap *os, struct zn_optswap_stats *out);

#ifdef __cplusplus
}
#endif
#endif
