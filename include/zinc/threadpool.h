/* zinc — a small persistent thread pool, bound to cores with hwloc.
 *
 * Memory-bound loops (the CPU optimizers, casts, norms) run fastest when
 * each thread stays on one core near the memory it streams: a pool's
 * workers are created once, each bound to one core of one NUMA node (or of
 * the whole machine), and sleep between jobs.  The thread that submits a
 * job waits for it; it does not take part, so every piece of work runs on a
 * bound core.
 *
 * Jobs on one pool run one at a time (concurrent callers queue).  Never
 * submit a job from inside a job of the same pool: it would wait for itself.
 */
#ifndef ZINC_THREADPOOL_H
#define ZINC_THREADPOOL_H

#include <stddef.h>

#include "zinc/common.h"

#ifdef __cplusplus
extern "C" {
#endif

struct zn_threadpool;

/* Start `threads` workers (0: one per core) bound to the cores of NUMA node
 * `numa_node` (its OS index; -1: all cores of the machine), worker i to the
 * i-th core, wrapping around when there are more workers than cores.
 * Returns NULL and sets the last error when the node does not exist or a
 * thread cannot be started.  A binding the OS refuses (a restricted
 * container) is logged once as a warning, and the pool runs unbound. */
ZN_API struct zn_threadpool *zn_threadpool_create(unsigned threads, int numa_node);

/* The same, bound to the NUMA node that holds most of [mem, mem + bytes)
 * (pages not yet touched do not count; none touched: all cores). */
ZN_API struct zn_threadpool *zn_threadpool_create_near(unsigned threads, const void *mem,
							size_t bytes);

/* Stop the workers (after the running job, if any) and free the pool.
 * NULL is allowed. */
ZN_API void zn_threadpool_destroy(struct zn_threadpool *pool);

/* Number of workers. */
ZN_API unsigned zn_threadpool_size(const struct zn_threadpool *pool);

/* The NUMA node the workers are bound to, or -1 (all cores, or unbound). */
ZN_API int zn_threadpool_numa_node(const struct zn_threadpool *pool);

/* Where the workers run, for humans: "node 0, cores 0,1" or "unbound". */
ZN_API const char *zn_threadpool_binding(const struct zn_threadpool *pool);

/* Name the workers "<prefix>-<i>" (as top -H and perf show them; the
 * prefix is cut to fit the OS's 15 characters).  NULL pool: nothing. */
ZN_API void zn_threadpool_name(struct zn_threadpool *pool, const char *prefix);

/* Run fn(arg, worker, workers) once on every worker, worker = 0..workers-1,
 * and return when all have returned.  pool == NULL runs fn(arg, 0, 1) in the
 * calling thread. */
typedef void (*zn_threadpool_fn)(void *arg, unsigned worker, unsigned workers);
ZN_API void zn_threadpool_run(struct zn_threadpool *pool, zn_threadpool_fn fn, void *arg);

/* Run fn(arg, task, worker) for task = 0..count-1, each task exactly once,
 * tasks handed out in increasing order to whichever worker is free (a
 * slow or preempted core takes fewer), and return when all are done.
 * pool == NULL runs them in order in the calling thread (worker 0). */
typedef void (*zn_threadpool_task_fn)(void *arg, size_t task, unsigned worker);
ZN_API void zn_threadpool_for(struct zn_threadpool *pool, size_t count, zn_threadpool_task_fn fn,
			      void *arg);

#ifdef __cplusplus
}
#endif
#endif
