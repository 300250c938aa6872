/* Checks of the comm API (include/zinc/comm.h) that hold on any backend and
 * any number of ranks, shared by test_comm_mpi.c (ranks started by mpirun),
 * test_comm_tcp.c (ranks forked by the test) and test_comm_nccl.c (device
 * buffers: see cc_use_device_memory).
 *
 * Every rank generates every rank's input from the rank's seed, computes the
 * expected result alone, in rank order (((x0 + x1) + x2) ..., fp16/bf16 in
 * fp32 rounded once, integers wrapping), and compares bit for bit; a NaN is
 * compared as a NaN (comm.h promises one, not its payload).
 *
 * The checks do not use cmocka's asserts: in a forked rank those would jump
 * back into the parent's copy of the test runner.  Each returns 0, or -1
 * after printing what differed (with the rank) to stderr; the caller turns
 * that into its own failure. */
#ifndef ZN_TEST_COMM_CHECKS_H
#define ZN_TEST_COMM_CHECKS_H

#include <stddef.h>
#include <stdint.h>

#include "zinc/comm.h"

/* Memory that a comm's buffers live in, other than the host's (the nccl
 * backend's device memory).  Each function returns 0 (alloc: a pointer),
 * or -1 (NULL) after printing why to stderr.  to_device must have
 * completed when it returns: the comm reads the buffer from its own
 * stream. */
struct cc_mem {
	void *(*alloc)(size_t bytes); /* bytes may be 0 */
	void (*free)(void *p);
	int (*to_device)(void *dst, const void *src, size_t bytes);
	int (*to_host)(void *dst, const void *src, size_t bytes);
};

/* From now on the checks below pass the comm buffers in `mem` (NULL: host
 * memory, the default): each collective's inputs are copied there before
 * it and its outputs back after it (after zn_comm_wait for the _async
 * ones), and the comparisons stay on the host. */
void cc_use_device_memory(const struct cc_mem *mem);

/* all_reduce, SUM and MAX, for every dtype, on n = 0, 1 (fewer elements
 * than ranks), and 100003 (chunks of unequal length); the fp32 sum twice
 * (the same bits each run). */
int cc_all_reduce(struct zn_comm *c);
/* reduce_scatter for every dtype. */
int cc_reduce_scatter(struct zn_comm *c);
/* all_gather, separate buffers and in place, small and streamed sizes. */
int cc_all_gather(struct zn_comm *c);
/* broadcast from every root, small and streamed sizes. */
int cc_broadcast(struct zn_comm *c);
/* barrier waits for the last rank, which enters 200 ms late. */
int cc_barrier(struct zn_comm *c);
/* One op of every kind enqueued at once, waited for in reverse order. */
int cc_async_together(struct zn_comm *c);
/* An _async all_reduce returns at once and completes once the late last
 * rank joins, while the caller computes. */
int cc_async_overlap(struct zn_comm *c);
/* The last rank skips an all_reduce (and stays alive past the others'
 * 1 s timeout): the others fail with -ETIMEDOUT naming the op and that
 * rank, then every collective with -EPIPE ("unusable").  Leaves the comm
 * unusable on every rank but the last. */
int cc_timeout(struct zn_comm *c);

/* A reduction in rank order, as zn_comm_reduce_rows (engine/comm/reduce.c)
 * and the nccl backend's kernel compute it: out[i] = rows[0][i] op
 * rows[1][i] ...
 * Host pointers; returns 0 or -1 after printing why. */
typedef int (*cc_reduce_fn)(enum zn_dtype dt, enum zn_comm_redop op, void *out,
			    const void *rows, int size, size_t m);
/* `reduce` against the reference for every dtype and both reductions, 1 to
 * 5 rows of 1, 1000 and 100003 elements (NaN, +-0, +-Inf among them), bit
 * for bit.  c only names the rank in reports. */
int cc_reduce_rows(struct zn_comm *c, cc_reduce_fn reduce);

/* Monotonic time, ns; sleep. */
uint64_t cc_now_ns(void);
void cc_sleep_ms(unsigned ms);

#endif
