/* The comm API on the mpi backend, suite `mpi`: meson runs this program
 * under `mpirun -np 2` (it works for any number of ranks).
 *
 * Without MPI in the build, or when not launched by mpirun, it prints a TAP
 * plan of zero tests with "# SKIP" and the reason.  Only rank 0 writes TAP
 * to stdout; the other ranks write theirs to stderr, and a failure on any
 * rank makes mpirun, and so the test, fail.
 *
 * The collectives are checked by comm_checks.c, shared with the tcp
 * backend's test: every rank computes the expected result alone, in rank
 * order, and must match it bit for bit. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "zn_build.h"
#include "zinc/comm.h"
#include "comm_checks.h"
#include "comm_tests.h"

#if ZN_HAVE_MPI
static struct zn_comm *C;
static int R, S;

static void test_ranks(void **state)
{
	(void)state;
	assert_string_equal(zn_comm_backend(C), "mpi");
	assert_int_equal(S, atoi(getenv("OMPI_COMM_WORLD_SIZE")));
	assert_int_equal(R, atoi(getenv("OMPI_COMM_WORLD_RANK")));
	const char *lr = getenv("OMPI_COMM_WORLD_LOCAL_RANK");
	if (lr)
		assert_int_equal(zn_comm_local_rank(C), atoi(lr));
}

#endif /* ZN_HAVE_MPI */

int main(void)
{
#if !ZN_HAVE_MPI
	printf("1..0 # SKIP this zinc was built without MPI\n");
	return 0;
#else
	const char *ws = getenv("OMPI_COMM_WORLD_SIZE");
	if (!ws) {
		printf("1..0 # SKIP not launched by mpirun (install openmpi-bin)\n");
		return 0;
	}
	if (atoi(ws) < 2) {
		printf("1..0 # SKIP needs at least 2 ranks, mpirun started %s\n", ws);
		return 0;
	}
	/* One TAP stream: the other ranks report on stderr. */
	const char *wr = getenv("OMPI_COMM_WORLD_RANK");
	if (wr && atoi(wr) != 0)
		dup2(STDERR_FILENO, STDOUT_FILENO);
	C = zn_comm_create(NULL); /* automatic: mpirun is detected */
	if (!C) {
		printf("1..1\nnot ok 1 - zn_comm_create: %s\n", zn_last_error());
		return 1;
	}
	R = zn_comm_rank(C);
	S = zn_comm_size(C);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ranks),
		CC_COMM_TESTS(C),
	};
	int failed = cmocka_run_group_tests(tests, NULL, NULL);
	zn_comm_destroy(C);
	return failed ? 1 : 0;
#endif
}
