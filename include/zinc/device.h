/* zinc — devices: memory with a byte budget, streams, events, copies.
 *
 * One API, two backends (an ops table chosen once, at zn_device_create):
 *
 *   "cpu"   "device memory" is host memory under a byte budget
 *           (memory_limit, DeepSpeed-style device_memory_limit), so a small
 *           GPU can be simulated on any machine.  Every stream is a FIFO
 *           work queue drained by its own thread: copies enqueued on a copy
 *           stream really run beside host functions (kernel launches) on a
 *           compute stream.  Kernels run through zn_device_launch_host on a
 *           stream's thread, using the device's thread pool.
 *   "cuda"  cudaMalloc/cudaFree under the same accounting and budget
 *           (default: the free memory cudaMemGetInfo reports at creation),
 *           cudaStream_t, cudaEvent_t, cudaMemcpyAsync, cudaLaunchHostFunc.
 *           Present when zinc was built with the CUDA toolkit.
 *
 * Semantics are CUDA's, on both backends:
 *   - work enqueued on one stream runs in order, one item at a time;
 *     different streams run concurrently;
 *   - an event recorded on a stream completes when everything enqueued on
 *     that stream before the record has completed; recording again
 *     replaces the previous record (query/synchronize/wait look at the
 *     latest one, as with cudaEventRecord);
 *   - zn_device_stream_wait_event makes later work on the stream wait for
 *     the event's latest record at the time of the call (a never-recorded
 *     event is already complete);
 *   - a `stream` argument of NULL means "synchronously": the operation is
 *     done when the call returns (it does not order against any stream).
 *
 * Errors: every fallible call returns 0 or a negative errno and sets
 * zn_last_error(); constructors return NULL.  A failure inside a host
 * function (its non-zero return) is sticky on its stream: it is returned,
 * with the message the function set, by the next zn_device_stream_synchronize
 * (or zn_device_synchronize), which then clears it.  Later work on that
 * stream still runs.
 *
 * Thread safety: every call may be made from any thread.  A stream or event
 * must not be destroyed while another thread uses it.
 */
#ifndef ZINC_DEVICE_H
#define ZINC_DEVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "zinc/common.h"

#ifdef __cplusplus
extern "C" {
#endif

struct zn_device;
struct zn_stream;
struct zn_event;
struct zn_kernels_params;

/* Every allocation is aligned to at least this many bytes (cudaMalloc's
 * guarantee; the cpu backend matches it so vector loads and the cuda
 * kernels' assumptions hold on both). */
#define ZN_DEVICE_ALIGN ((size_t)256)
/* Freed blocks at least this large are cached for reuse. */
#define ZN_DEVICE_CACHE_MIN ((size_t)1 << 20)

struct zn_device_params {
	const char *kind;      /* "cpu" or "cuda"; NULL: "cpu" */
	int ordinal;           /* cuda: device ordinal (0 ...); cpu: ignored */
	uint64_t memory_limit; /* bytes of device memory zinc may hold at once;
	                        * 0: cpu the machine's RAM, cuda the free memory
	                        * at creation */
	unsigned threads;      /* cpu: workers of the kernels' thread pool
	                        * (0: one per core); cuda: ignored */
};

/* Fill *c with the defaults: "cpu", ordinal 0, no limit, one worker per core. */
ZN_API void zn_device_params_default(struct zn_device_params *c);

/* Open a device.  Returns NULL and sets the last error for an unknown kind
 * (-EINVAL), a zinc built without CUDA or with no such GPU (-ENODEV), a
 * cuda memory_limit above the GPU's free memory, or no memory. */
ZN_API struct zn_device *zn_device_create(const struct zn_device_params *c);

/* Synchronize and destroy every stream and event still open, free every
 * allocation still held (each leak is logged as a warning), close the
 * device.  NULL is allowed. */
ZN_API void zn_device_destroy(struct zn_device *dev);

/* "cpu" or "cuda": also the name of the kernels (zn_kernels_get) to use. */
ZN_API const char *zn_device_kind(const struct zn_device *dev);

/* For humans: "cpu" or "cuda:0 (NVIDIA H100 80GB HBM3)". */
ZN_API const char *zn_device_name(const struct zn_device *dev);

/* True when device memory is plain host memory (the cpu backend): the host
 * may read and write it directly. */
ZN_API bool zn_device_host_accessible(const struct zn_device *dev);

/* ---- memory ---------------------------------------------------------- */

/* Allocate `bytes` (> 0) of device memory, aligned to ZN_DEVICE_ALIGN, into
 * *out.  Counted against the budget as `bytes` rounded up to
 * ZN_DEVICE_ALIGN.  -ENOMEM, with a message giving the requested, in-use
 * and limit bytes, when it would exceed the budget (or the backend has no
 * memory); -EINVAL for bytes == 0 or out == NULL.  Contents undefined. */
ZN_API int zn_device_alloc(struct zn_device *dev, size_t bytes, void **out);

/* Free memory from zn_device_alloc; NULL is a no-op.  -EINVAL for a pointer
 * this device did not allocate (or already freed).  Work still queued that
 * uses the memory must have completed (synchronize first). */
ZN_API int zn_device_free(struct zn_device *dev, void *p);

struct zn_device_memstats {
	uint64_t in_use;      /* bytes held now (rounded sizes) */
	uint64_t peak;        /* most bytes held at once since creation or the
	                       * last zn_device_reset_peak */
	uint64_t limit;       /* the budget */
	uint64_t allocations; /* live allocations */
	uint64_t cached;      /* freed blocks kept for reuse (within the limit,
	                       * given back when an allocation needs room) */
};
ZN_API void zn_device_memstats(struct zn_device *dev, struct zn_device_memstats *out);
/* Give the cached blocks back (torch.cuda.empty_cache). */
ZN_API void zn_device_trim(struct zn_device *dev);
/* Set peak to in_use (to measure one phase). */
ZN_API void zn_device_reset_peak(struct zn_device *dev);

/* Set `bytes` of device memory at p to the byte `value`, enqueued on
 * `stream` (NULL: synchronously). */
ZN_API int zn_device_memset(struct zn_device *dev, void *p, int value, size_t bytes,
			    struct zn_stream *stream);

enum zn_copy_kind {
	ZN_COPY_HOST_TO_DEVICE = 0,
	ZN_COPY_DEVICE_TO_HOST = 1,
	ZN_COPY_DEVICE_TO_DEVICE = 2,
	ZN_COPY_HOST_TO_HOST = 3,
	ZN_COPY_KIND_COUNT
};

/* Copy `bytes` from src to dst (non-overlapping), enqueued on `stream`
 * (NULL: synchronously).  cuda: host memory should be page-locked
 * (zn_device_host_register, or the pinned pool) for the copy to be truly
 * asynchronous; pageable memory works but the call may block.  The host
 * buffer must stay valid until the copy completes.  bytes == 0 is a no-op. */
ZN_API int zn_device_copy_async(struct zn_device *dev, void *dst, const void *src, size_t bytes,
				enum zn_copy_kind kind, struct zn_stream *stream);

/* Page-lock [p, p + bytes) for fast asynchronous copies (cuda:
 * cudaHostRegister; cpu: nothing to do, returns 0).  Undo with
 * zn_device_host_unregister(dev, p) before freeing the memory. */
ZN_API int zn_device_host_register(struct zn_device *dev, void *p, size_t bytes);
ZN_API int zn_device_host_unregister(struct zn_device *dev, void *p);

/* ---- streams ----------------------------------------------------------- */

/* A new stream; `name` (NULL allowed, truncated to 31 characters) labels it
 * in messages and traces.  cpu: starts the stream's thread.  Returns NULL and
 * sets the last error on failure. */
ZN_API struct zn_stream *zn_device_stream_create(struct zn_device *dev, const char *name);

/* Wait for the stream's work, then destroy it.  NULL allowed. */
ZN_API void zn_device_stream_destroy(struct zn_stream *stream);

/* The stream's name, "" when it has none. */
ZN_API const char *zn_device_stream_name(const struct zn_stream *stream);

/* Wait until everything enqueued on the stream so far has completed.
 * Returns the stream's sticky error (see above) or a backend failure. */
ZN_API int zn_device_stream_synchronize(struct zn_stream *stream);

/* 0 when everything enqueued on the stream so far has completed, -EBUSY
 * while not yet (the sticky error is left for synchronize). */
ZN_API int zn_device_stream_query(struct zn_stream *stream);

/* zn_device_stream_synchronize on every stream of the device; the first
 * error is returned (every stream is still waited for). */
ZN_API int zn_device_synchronize(struct zn_device *dev);

/* A function run in stream order: returns 0, or a negative errno after
 * setting the last error (which becomes the stream's sticky error).
 * cpu: runs on the stream's thread — this is how kernels are launched.
 * cuda: runs on a CUDA runtime thread (cudaLaunchHostFunc) and must not
 * call CUDA (nor, so, any zn_device call on a cuda device).  On either
 * backend it must not synchronize its own stream (it would wait for
 * itself); it may query events and streams. */
typedef int (*zn_device_host_fn)(void *arg);

/* Enqueue fn(arg) on the stream. */
ZN_API int zn_device_launch_host(struct zn_stream *stream, zn_device_host_fn fn, void *arg);

/* ---- events ---------------------------------------------------------- */

/* A new event, not yet recorded (so already complete).  NULL on failure. */
ZN_API struct zn_event *zn_device_event_create(struct zn_device *dev);
/* Destroy an event; work that still refers to it is not disturbed.  NULL
 * allowed. */
ZN_API void zn_device_event_destroy(struct zn_event *ev);
/* Record the event on the stream: it completes when everything enqueued on
 * the stream before this call has completed. */
ZN_API int zn_device_event_record(struct zn_event *ev, struct zn_stream *stream);
/* Make work enqueued on `stream` after this call wait for the event's
 * latest record (as of this call). */
ZN_API int zn_device_stream_wait_event(struct zn_stream *stream, struct zn_event *ev);
/* Block until the event's latest record has completed. */
ZN_API int zn_device_event_synchronize(struct zn_event *ev);
/* 0 when the event's latest record has completed, -EBUSY while not yet. */
ZN_API int zn_device_event_query(struct zn_event *ev);

/* ---- kernels ----------------------------------------------------------- */

/* Point a zn_kernels_params (start from zn_kernels_params_default) at this
 * device: cpu sets pool to the device's thread pool (kernels then run inside
 * host functions launched on `stream`); cuda sets cuda_stream to the
 * stream's cudaStream_t (NULL stream: the default stream) and cuda_device
 * to the ordinal.  Other fields are left as they are. */
ZN_API void zn_device_kernels_params(struct zn_device *dev, struct zn_stream *stream,
				     struct zn_kernels_params *p);

#ifdef __cplusplus
}
#endif
#endif
