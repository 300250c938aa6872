/* The comm API on the self backend (include/zinc/comm.h), suite `unit`.
 *
 * One rank: every collective must leave the data bit for bit as one rank
 * has it (the rank-order sum of one row is that row), in the FIFO order of
 * the worker thread; launcher variables asking for more ranks are refused.
 * The mpi backend is tested by test_comm_mpi.c (suite `mpi`). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "zn_build.h"
#include "zinc/comm.h"
#include "testutil.h"

#define N 1001

static void ok(int rc)
{
	if (rc != 0) {
		print_message("comm call failed: %d: %s\n", rc, zn_last_error());
		fail();
	}
}

static struct zn_comm *self_comm(void)
{
	struct zn_comm *c = zn_comm_create("self");
	if (!c) {
		print_message("%s\n", zn_last_error());
		fail();
	}
	return c;
}

static void test_create(void **state)
{
	(void)state;
	unsetenv("WORLD_SIZE");
	unsetenv("OMPI_COMM_WORLD_SIZE");
	unsetenv("LOCAL_RANK");
	struct zn_comm *c = zn_comm_create(NULL); /* automatic: not under mpirun */
	assert_non_null(c);
	assert_string_equal(zn_comm_backend(c), "self");
	assert_int_equal(zn_comm_rank(c), 0);
	assert_int_equal(zn_comm_size(c), 1);
	assert_int_equal(zn_comm_local_rank(c), 0);
	zn_comm_destroy(c);
	zn_comm_destroy(NULL);

	/* Two comms at once are independent. */
	struct zn_comm *a = self_comm(), *b = self_comm();
	ok(zn_comm_barrier(a));
	ok(zn_comm_barrier(b));
	zn_comm_destroy(a);
	zn_comm_destroy(b);
}

static void test_create_errors(void **state)
{
	(void)state;
	assert_null(zn_comm_create("nccl2"));
	assert_non_null(strstr(zn_last_error(), "\"nccl2\" is unknown"));
#if !ZN_HAVE_MPI
	assert_null(zn_comm_create("mpi"));
	assert_non_null(strstr(zn_last_error(), "built without MPI"));
#endif

	/* A launcher that asked for several ranks: self would train alone. */
	setenv("WORLD_SIZE", "4", 1);
	assert_null(zn_comm_create("self"));
	assert_non_null(strstr(zn_last_error(), "WORLD_SIZE"));
	assert_non_null(strstr(zn_last_error(), "4 ranks"));
	setenv("WORLD_SIZE", "1", 1);
	struct zn_comm *c = self_comm();
	zn_comm_destroy(c);
	unsetenv("WORLD_SIZE");

	setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
	assert_null(zn_comm_create("self"));
	assert_non_null(strstr(zn_last_error(), "mpirun started 2 ranks"));
	unsetenv("OMPI_COMM_WORLD_SIZE");

	/* The GPU a one-rank job uses is still the launcher's choice. */
	setenv("LOCAL_RANK", "3", 1);
	c = self_comm();
	assert_int_equal(zn_comm_local_rank(c), 3);
	assert_int_equal(zn_comm_rank(c), 0);
	zn_comm_destroy(c);
	unsetenv("LOCAL_RANK");
}

/* One rank: every reduction gives back the input, bit for bit, whatever
 * the dtype (NaN payloads and -0 included). */
static void test_all_reduce_identity(void **state)
{
	(void)state;
	struct zn_comm *c = self_comm();
	static unsigned char buf[N * 4], ref[N * 4];
	for (int dt = 0; dt < ZN_DTYPE_COUNT; dt++) {
		for (int op = 0; op < ZN_COMM_REDOP_COUNT; op++) {
			size_t bytes = N * zn_dtype_size(dt);
			tu_fill_random(ref, bytes, 42 + (uint64_t)dt);
			memcpy(buf, ref, bytes);
			ok(zn_comm_all_reduce(c, buf, N, dt, op));
			assert_memory_equal(buf, ref, bytes);
		}
	}
	ok(zn_comm_all_reduce(c, NULL, 0, ZN_DTYPE_F32, ZN_COMM_SUM));
	zn_comm_destroy(c);
}

static void test_reduce_scatter_all_gather(void **state)
{
	(void)state;
	struct zn_comm *c = self_comm();
	float send[N], recv[N], gathered[N];
	tu_fill_random(send, sizeof(send), 7);
	ok(zn_comm_reduce_scatter(c, send, recv, N, ZN_DTYPE_F32));
	assert_memory_equal(recv, send, sizeof(send));

	ok(zn_comm_all_gather(c, send, gathered, N, ZN_DTYPE_F32));
	assert_memory_equal(gathered, send, sizeof(send));
	/* In place: send is this rank's slot of recv. */
	memcpy(gathered, send, sizeof(send));
	ok(zn_comm_all_gather(c, gathered, gathered, N, ZN_DTYPE_F32));
	assert_memory_equal(gathered, send, sizeof(send));

	int32_t ints[5] = { 1, -2, 3, INT32_MAX, INT32_MIN }, iout[5];
	ok(zn_comm_all_gather(c, ints, iout, 5, ZN_DTYPE_I32));
	assert_memory_equal(iout, ints, sizeof(ints));
	zn_comm_destroy(c);
}

static void test_broadcast_barrier(void **state)
{
	(void)state;
	struct zn_comm *c = self_comm();
	char msg[] = "zinc";
	ok(zn_comm_broadcast(c, msg, sizeof(msg), 0));
	assert_string_equal(msg, "zinc");
	ok(zn_comm_barrier(c));
	assert_int_equal(zn_comm_broadcast(c, msg, sizeof(msg), 1), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "root 1 is not a rank"));
	zn_comm_destroy(c);
}

/* The worker runs ops in the order they were enqueued: each op below reads
 * what the one before it wrote. */
static void test_async_fifo(void **state)
{
	(void)state;
	struct zn_comm *c = self_comm();
	enum { K = 16 };
	static float a[K][N];
	struct zn_comm_op *ops[K];
	tu_fill_random(a[0], sizeof(a[0]), 99);
	for (int k = 1; k < K; k++) {
		/* a[k] <- a[k-1]: correct only after op k-1 has run. */
		if (k % 2)
			ok(zn_comm_all_gather_async(c, a[k - 1], a[k], N, ZN_DTYPE_F32, &ops[k]));
		else
			ok(zn_comm_reduce_scatter_async(c, a[k - 1], a[k], N, ZN_DTYPE_F32,
							&ops[k]));
	}
	struct zn_comm_op *bar;
	ok(zn_comm_barrier_async(c, &bar));
	ok(zn_comm_wait(bar)); /* FIFO: everything before it is done too */
	for (int k = 1; k < K; k++) {
		ok(zn_comm_wait(ops[k]));
		assert_memory_equal(a[k], a[0], sizeof(a[0]));
	}
	/* Ops never waited for are freed by destroy (no leak under ASan). */
	struct zn_comm_op *orphan;
	ok(zn_comm_all_reduce_async(c, a[0], N, ZN_DTYPE_F32, ZN_COMM_SUM, &orphan));
	zn_comm_destroy(c);
}

static void test_bad_arguments(void **state)
{
	(void)state;
	struct zn_comm *c = self_comm();
	float buf[8] = { 0 };
	struct zn_comm_op *op = (struct zn_comm_op *)buf;

	assert_int_equal(zn_comm_all_reduce(c, buf, 8, ZN_DTYPE_COUNT, ZN_COMM_SUM), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "dtype"));
	assert_int_equal(zn_comm_all_reduce(c, buf, 8, ZN_DTYPE_F32, ZN_COMM_REDOP_COUNT), -EINVAL);
	assert_int_equal(zn_comm_all_reduce_async(c, NULL, 8, ZN_DTYPE_F32, ZN_COMM_SUM, &op),
			 -EINVAL);
	assert_null(op);
	assert_non_null(strstr(zn_last_error(), "buf is NULL"));
	assert_int_equal(zn_comm_all_gather(c, buf + 1, buf, 4, ZN_DTYPE_F32), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "overlaps"));
	assert_int_equal(zn_comm_wait(NULL), -EINVAL);

	assert_int_equal(zn_comm_set_timeout(c, 0), -EINVAL);
	assert_int_equal(zn_comm_set_timeout(c, -1), -EINVAL);
	assert_int_equal(zn_comm_set_timeout(c, 1.0 / 0.0), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "timeout"));
	ok(zn_comm_set_timeout(c, 0.5));
	ok(zn_comm_barrier(c));

	assert_int_equal(zn_dtype_size(ZN_DTYPE_F32), 4);
	assert_int_equal(zn_dtype_size(ZN_DTYPE_BF16), 2);
	assert_int_equal(zn_dtype_size(ZN_DTYPE_U8), 1);
	assert_int_equal(zn_dtype_size(ZN_DTYPE_COUNT), 0);
	zn_comm_destroy(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create),
		cmocka_unit_test(test_create_errors),
		cmocka_unit_test(test_all_reduce_identity),
		cmocka_unit_test(test_reduce_scatter_all_gather),
		cmocka_unit_test(test_broadcast_barrier),
		cmocka_unit_test(test_async_fifo),
		cmocka_unit_test(test_bad_arguments),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
