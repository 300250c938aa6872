#include "comm_tests.h"

#include "comm_checks.h"

/* The checks print what differed to stderr; here a failure is cmocka's. */
void cc_test_all_reduce(void **state)
{
	assert_int_equal(cc_all_reduce(*state), 0);
}

void cc_test_reduce_scatter(void **state)
{
	assert_int_equal(cc_reduce_scatter(*state), 0);
}

void cc_test_all_gather(void **state)
{
	assert_int_equal(cc_all_gather(*state), 0);
}

void cc_test_broadcast_barrier(void **state)
{
	assert_int_equal(cc_broadcast(*state), 0);
	assert_int_equal(cc_barrier(*state), 0);
}

void cc_test_async(void **state)
{
	assert_int_equal(cc_async_together(*state), 0);
	assert_int_equal(cc_async_overlap(*state), 0);
}

void cc_test_timeout(void **state)
{
	assert_int_equal(cc_timeout(*state), 0);
}
