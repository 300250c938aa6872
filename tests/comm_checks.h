/* Checks of the comm API (include/zinc/comm.h) that hold on any backend and
 * any number of ranks, shared by test_comm_mpi.c (ranks started by mpirun)
 * and test_comm_tcp.c (ranks forked by the test).
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

#include <stdint.h>

#include "zinc/comm.h"

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

/* Monotonic time, ns; sleep. */
uint64_t cc_now_ns(void);
void cc_sleep_ms(unsigned ms);

#endif
