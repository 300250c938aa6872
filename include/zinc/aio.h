/* zinc — the io_uring I/O engine.
 *
 * A handle owns `intra_op_parallelism` rings, each driven by its own worker
 * thread with up to `queue_depth` I/Os in flight.  A request (one buffer, one
 * file range) is cut into `block_size` pieces spread over the rings; the
 * caller waits for the whole request.  Every completion is checked: short
 * transfers are resubmitted for the remainder, EAGAIN/EINTR retried, and any
 * other failure is returned as -errno with the file, offset and length.
 *
 * Files are opened with O_DIRECT when the filesystem allows it.  Then the
 * buffer address must be a multiple of zn_aio_file_mem_align() and the file
 * offset and length multiples of zn_aio_file_align(); memory from
 * zn_hostmem_alloc() always satisfies the first.
 *
 * All calls are thread-safe: several threads may submit to and wait on one
 * handle.  A request must be waited for (or polled to completion and then
 * freed with zn_aio_wait) exactly once.
 */
#ifndef ZINC_AIO_H
#define ZINC_AIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "zinc/common.h"
#include "zinc/keys.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The `aio` config block; names and defaults are DeepSpeed's. */
struct zn_aio_config {
	uint64_t block_size;           /* bytes per I/O piece; default 1 MiB; multiple of 4096 */
	uint32_t queue_depth;          /* I/Os in flight per ring; default 8 */
	uint32_t intra_op_parallelism; /* rings (worker threads) per handle; default 1 */
	bool single_submit;            /* one submit syscall per I/O instead of per batch */
	bool overlap_events;           /* refill the queue as each I/O completes (else in batches) */
	bool use_gds;                  /* GPUDirect Storage: not supported yet, rejected */
	bool use_fixed_buffers;        /* zinc: use registered buffers when a request lies in one */
	bool sqpoll;                   /* zinc: kernel-side submission polling thread per ring */
};

/* The key table of the `aio` section (see zinc/keys.h). */
ZN_API extern const struct zn_key_table zn_aio_key_table;

/* Fill `cfg` with the defaults. */
ZN_API void zn_aio_config_default(struct zn_aio_config *cfg);

/* Check a config; 0 or -EINVAL naming the offending key. */
ZN_API int zn_aio_config_validate(const struct zn_aio_config *cfg);

struct zn_aio;
struct zn_aio_file;
struct zn_aio_req;

/* Create a handle (rings and worker threads).  NULL + last error on failure,
 * including an invalid config. */
ZN_API struct zn_aio *zn_aio_create(const struct zn_aio_config *cfg);

/* Wait for every outstanding request, then free the handle.  Files opened
 * on it must be closed first. */
ZN_API void zn_aio_destroy(struct zn_aio *aio);

/* The config the handle runs with. */
ZN_API const struct zn_aio_config *zn_aio_get_config(const struct zn_aio *aio);

enum zn_aio_open_flags {
	ZN_AIO_RDONLY = 0,
	ZN_AIO_RDWR = 1u << 0,
	ZN_AIO_CREATE = 1u << 1,   /* create if missing (mode 0600) */
	ZN_AIO_TRUNC = 1u << 2,    /* truncate to zero length */
	ZN_AIO_BUFFERED = 1u << 3, /* do not try O_DIRECT */
};

/* Open `path` for I/O through `aio`.  With O_DIRECT refused by the
 * filesystem (tmpfs, some overlays) the file is opened buffered and one
 * warning naming the path is logged.  `prealloc` > 0 reserves that many
 * bytes with fallocate (the file size becomes at least `prealloc`); an error
 * such as ENOSPC is returned before anything is written.  The file is
 * registered with every ring (fixed file) where the kernel allows. */
ZN_API int zn_aio_open(struct zn_aio *aio, const char *path, unsigned flags, uint64_t prealloc,
		       struct zn_aio_file **out);

/* Close a file; every request on it must be complete.  0 or -errno. */
ZN_API int zn_aio_close(struct zn_aio_file *f);

ZN_API const char *zn_aio_file_path(const struct zn_aio_file *f);
ZN_API bool zn_aio_file_direct(const struct zn_aio_file *f);      /* opened with O_DIRECT */
ZN_API uint32_t zn_aio_file_align(const struct zn_aio_file *f);   /* offset/length, bytes */
ZN_API uint32_t zn_aio_file_mem_align(const struct zn_aio_file *f); /* buffer address, bytes */
ZN_API int zn_aio_file_fd(const struct zn_aio_file *f);

/* Register [buf, buf+len) with every ring as fixed buffers (cut into
 * pieces of at most 1 GiB, the kernel's limit).  Later I/O whose piece lies
 * inside a registered range uses READ_FIXED/WRITE_FIXED.  No-op returning 0
 * when use_fixed_buffers is false.  Registered memory is locked and counts
 * against RLIMIT_MEMLOCK for unprivileged users; -ENOMEM then says so. */
ZN_API int zn_aio_register_buffer(struct zn_aio *aio, void *buf, size_t len);

/* Forget a registration made with exactly this buf; no request may be
 * using it.  0 or -ENOENT. */
ZN_API int zn_aio_unregister_buffer(struct zn_aio *aio, void *buf);

/* Start reading `len` bytes at `offset` of `f` into `buf` (or writing them
 * from `buf`).  On success *req is the request to wait on.  Alignment is
 * checked here (-EINVAL naming the required alignment).  `len` 0 is allowed
 * and completes at once. */
ZN_API int zn_aio_read(struct zn_aio_file *f, void *buf, size_t len, uint64_t offset,
		       struct zn_aio_req **req);
ZN_API int zn_aio_write(struct zn_aio_file *f, const void *buf, size_t len, uint64_t offset,
			struct zn_aio_req **req);

/* Wait for a request, free it, and return its result: the bytes
 * transferred (a read past end of file transfers fewer than asked) or the
 * first -errno one of its pieces met, with the last error naming the file,
 * offset and length. */
ZN_API ssize_t zn_aio_wait(struct zn_aio_req *req);

/* zn_aio_wait, and *done_ns = when the request finished (CLOCK_MONOTONIC
 * ns, the clock of zn_trace_now), which may be long before this call:
 * traces show I/O ending when the disk was done, not when someone looked. */
ZN_API ssize_t zn_aio_wait_timed(struct zn_aio_req *req, uint64_t *done_ns);

/* True once the request has finished (zn_aio_wait then does not block). */
ZN_API bool zn_aio_done(const struct zn_aio_req *req);

/* Synchronous wrappers: submit and wait.  Bytes transferred or -errno. */
ZN_API ssize_t zn_aio_pread(struct zn_aio_file *f, void *buf, size_t len, uint64_t offset);
ZN_API ssize_t zn_aio_pwrite(struct zn_aio_file *f, const void *buf, size_t len, uint64_t offset);

/* Per-handle counters since creation (or the last zn_aio_stats_reset). */
struct zn_aio_stats {
	uint64_t ios;             /* pieces completed successfully */
	uint64_t bytes_read;
	uint64_t bytes_written;
	uint64_t fixed_ios;       /* of which through registered buffers */
	uint64_t resubmits;       /* short transfers and EAGAIN/EINTR retries */
	uint64_t errors;          /* pieces that failed */
	/* Per-I/O latency from submission to completion, in ns: a
	 * log-linear histogram (see zn_aio_stats_percentile). */
	uint64_t lat_hist[512];
};

ZN_API void zn_aio_stats_get(struct zn_aio *aio, struct zn_aio_stats *out);
ZN_API void zn_aio_stats_reset(struct zn_aio *aio);

/* The latency, in ns, below which `p` percent (0..100) of the I/Os in
 * `stats` completed; 0 when there were none. */
ZN_API uint64_t zn_aio_stats_percentile(const struct zn_aio_stats *stats, double p);

#ifdef __cplusplus
}
#endif
#endif
