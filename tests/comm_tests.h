/* comm_checks.h's checks as cmocka tests of one comm, for the programs
 * whose ranks each run the whole table in a process of their own (under
 * mpirun: test_comm_mpi.c, test_comm_nccl.c).  The comm is the tests'
 * state: CC_COMM_TESTS(comm) lists them, the timeout (which leaves the comm
 * unusable) last. */
#ifndef ZN_TEST_COMM_TESTS_H
#define ZN_TEST_COMM_TESTS_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

void cc_test_all_reduce(void **state);
void cc_test_reduce_scatter(void **state);
void cc_test_all_gather(void **state);
void cc_test_broadcast_barrier(void **state);
void cc_test_async(void **state);
void cc_test_timeout(void **state);

#define CC_COMM_TESTS(comm)                                          \
	cmocka_unit_test_prestate(cc_test_all_reduce, (comm)),       \
	cmocka_unit_test_prestate(cc_test_reduce_scatter, (comm)),   \
	cmocka_unit_test_prestate(cc_test_all_gather, (comm)),       \
	cmocka_unit_test_prestate(cc_test_broadcast_barrier, (comm)), \
	cmocka_unit_test_prestate(cc_test_async, (comm)),            \
	cmocka_unit_test_prestate(cc_test_timeout, (comm))

#endif
