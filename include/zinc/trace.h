/* zinc — a trace recorder for Chrome / Perfetto trace-event JSON.
 *
 * Spans (name, category, track, start, duration, bytes) are appended by any
 * thread and written as one JSON file that chrome://tracing and
 * ui.perfetto.dev open, so a user can see whether reads, writes and compute
 * overlap.  Recording costs a mutex and a few stores per span; spans are
 * meant for operations of microseconds or more (I/O requests, tile updates),
 * not per element.
 */
#ifndef ZINC_TRACE_H
#define ZINC_TRACE_H

#include <stdint.h>

#include "zinc/common.h"

#ifdef __cplusplus
extern "C" {
#endif

struct zn_trace;

/* A recorder holding at most `max_spans` spans (later ones are counted as
 * dropped, never reallocated mid-run).  NULL + last error on failure. */
ZN_API struct zn_trace *zn_trace_create(uint64_t max_spans);
ZN_API void zn_trace_destroy(struct zn_trace *t);

/* Monotonic nanoseconds, the clock spans are measured with. */
ZN_API uint64_t zn_trace_now(void);

/* Record a span.  `name` and `cat` must be string literals or otherwise
 * outlive the recorder (they are stored by pointer).  `track` groups spans
 * into one row of the viewer (e.g. "nvme read", "adam"); `bytes` (0 for
 * none) appears in the span's args.  t may be NULL: then nothing happens,
 * so callers need no "tracing enabled?" checks. */
ZN_API void zn_trace_span(struct zn_trace *t, const char *name, const char *cat,
			  const char *track, uint64_t start_ns, uint64_t end_ns, uint64_t bytes);

/* Forget every span recorded so far; times restart from now. */
ZN_API void zn_trace_reset(struct zn_trace *t);

/* Spans recorded and dropped so far. */
ZN_API uint64_t zn_trace_count(const struct zn_trace *t);
ZN_API uint64_t zn_trace_dropped(const struct zn_trace *t);

/* Write every span as trace-event JSON to `path` (written to a temporary
 * file, then renamed, so a reader never sees half a trace).  0 or -errno. */
ZN_API int zn_trace_write(struct zn_trace *t, const char *path);

#ifdef __cplusplus
}
#endif
#endif
