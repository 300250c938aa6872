/* The comm API on the nccl backend (device buffers), suite `cuda`.
 *
 * meson runs this program alone.  Without NCCL in the build, or without a
 * CUDA device, it prints a TAP plan of zero tests with "# SKIP" and the
 * reason.  Otherwise it checks, in this process:
 *
 *   - the reduction kernel in rank order (engine/comm/nccl_kernels.cu)
 *     against the host reference, bit for bit (comm_checks.c's
 *     cc_reduce_rows): every dtype, SUM and MAX, 1 to 5 rows;
 *   - a one-rank nccl comm over a "self" bootstrap: every collective on
 *     device buffers (copies, one rank), and the argument errors;
 *   - with two or more GPUs and mpirun (ZINC_MPIRUN, set by meson when MPI
 *     was found): this program again under `mpirun -np <GPUs>`, one rank per
 *     GPU over an "mpi" bootstrap, running the shared multi-rank checks
 *     (comm_checks.c, buffers staged through device memory), the timeout
 *     last; otherwise that test reports skip and why.
 *
 * Under mpirun (OMPI_COMM_WORLD_SIZE > 1) only rank 0 writes TAP to stdout;
 * the others write to stderr, and the outer run's stdout is redirected to
 * its stderr, so that one TAP stream reaches meson. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "zn_build.h"
#include "zinc/comm.h"
#include "comm_checks.h"
#include "comm_tests.h"
#include "testutil.h"

#if ZN_HAVE_NCCL
#include <cuda_runtime_api.h>

#include "comm/nccl_kernels.h"

static int n_gpus;
static const char *self_path;

/* ---- device memory for the shared checks (struct cc_mem) --------------- */

static void *dev_alloc(size_t bytes)
{
	void *p = NULL;
	cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
	if (e != cudaSuccess) {
		fprintf(stderr, "cudaMalloc(%zu): %s\n", bytes, cudaGetErrorString(e));
		return NULL;
	}
	return p;
}

static void dev_free(void *p)
{
	if (p)
		cudaFree(p);
}

/* cudaMemcpy from pageable memory may return before the DMA has landed;
 * the comm reads from a stream of its own, so wait for the device. */
static int to_device(void *dst, const void *src, size_t bytes)
{
	cudaError_t e = cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice);
	if (e == cudaSuccess)
		e = cudaDeviceSynchronize();
	if (e != cudaSuccess)
		fprintf(stderr, "copy of %zu bytes to the device: %s\n", bytes, cudaGetErrorString(e));
	return e == cudaSuccess ? 0 : -1;
}

static int to_host(void *dst, const void *src, size_t bytes)
{
	cudaError_t e = cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost);
	if (e != cudaSuccess)
		fprintf(stderr, "copy of %zu bytes to the host: %s\n", bytes, cudaGetErrorString(e));
	return e == cudaSuccess ? 0 : -1;
}

static const struct cc_mem device_mem = {
	.alloc = dev_alloc,
	.free = dev_free,
	.to_device = to_device,
	.to_host = to_host,
};

/* The kernel on staged rows (cc_reduce_fn). */
static int reduce_on_device(enum zn_dtype dt, enum zn_comm_redop op, void *out,
			    const void *rows, int size, size_t m)
{
	const size_t row = m * zn_dtype_size(dt);
	void *d_rows = dev_alloc((size_t)size * row), *d_out = dev_alloc(row);
	int rc = -1;

	if (d_rows && d_out && to_device(d_rows, rows, (size_t)size * row) == 0) {
		cudaError_t e = zn_comm_nccl_reduce(dt, op, d_out, d_rows, size, m, NULL);
		if (e == cudaSuccess)
			e = cudaDeviceSynchronize();
		if (e != cudaSuccess)
			fprintf(stderr, "zn_comm_nccl_reduce: %s\n", cudaGetErrorString(e));
		else
			rc = to_host(out, d_out, row);
	}
	dev_free(d_rows);
	dev_free(d_out);
	return rc;
}

/* ---- one process ------------------------------------------------------------ */

static void test_reduce_kernel(void **state)
{
	(void)state;
	struct zn_comm *self = zn_comm_create("self"); /* names the rank in reports */
	assert_non_null(self);
	assert_int_equal(cc_reduce_rows(self, reduce_on_device), 0);
	/* Arguments the kernel refuses. */
	assert_int_equal(zn_comm_nccl_reduce(ZN_DTYPE_COUNT, ZN_COMM_SUM, NULL, NULL, 1, 1,
					     NULL), cudaErrorInvalidValue);
	assert_int_equal(zn_comm_nccl_reduce(ZN_DTYPE_F32, ZN_COMM_SUM, NULL, NULL, 0, 1, NULL),
			 cudaErrorInvalidValue);
	assert_int_equal(zn_comm_nccl_reduce(ZN_DTYPE_F32, ZN_COMM_SUM, NULL, NULL, 2, 0, NULL),
			 cudaSuccess);
	zn_comm_destroy(self);
}

static void test_one_rank(void **state)
{
	(void)state;
	struct zn_comm *boot = zn_comm_create("self");
	assert_non_null(boot);
	struct zn_comm *c = zn_comm_create_nccl(boot, 0);
	if (!c)
		fail_msg("zn_comm_create_nccl: %s", zn_last_error());
	zn_comm_destroy(boot); /* the bootstrap is needed only to open */
	assert_string_equal(zn_comm_backend(c), "nccl");
	assert_int_equal(zn_comm_rank(c), 0);
	assert_int_equal(zn_comm_size(c), 1);

	assert_int_equal(cudaSetDevice(0), cudaSuccess);
	cc_use_device_memory(&device_mem);
	assert_int_equal(cc_all_reduce(c), 0);
	assert_int_equal(cc_reduce_scatter(c), 0);
	assert_int_equal(cc_all_gather(c), 0);
	assert_int_equal(cc_broadcast(c), 0);
	assert_int_equal(cc_barrier(c), 0);
	assert_int_equal(cc_async_together(c), 0);
	cc_use_device_memory(NULL);

	/* Device copies must not overlap, even on one rank. */
	float *d = dev_alloc(64 * sizeof(float));
	assert_non_null(d);
	assert_int_equal(zn_comm_reduce_scatter(c, d, d + 8, 16, ZN_DTYPE_F32), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "overlap"));
	dev_free(d);

	/* A nccl comm cannot bootstrap another. */
	assert_null(zn_comm_create_nccl(c, 0));
	assert_non_null(strstr(zn_last_error(), "host memory"));
	zn_comm_destroy(c);
}

static void test_errors(void **state)
{
	(void)state;
	assert_null(zn_comm_create_nccl(NULL, 0));
	assert_non_null(strstr(zn_last_error(), "bootstrap comm is NULL"));
	assert_null(zn_comm_create("nccl"));
	assert_non_null(strstr(zn_last_error(), "zn_comm_create_nccl"));

	struct zn_comm *boot = zn_comm_create("self");
	assert_non_null(boot);
	assert_null(zn_comm_create_nccl(boot, n_gpus)); /* one past the last ordinal */
	assert_non_null(strstr(zn_last_error(), "asked for CUDA device"));
	assert_null(zn_comm_create_nccl(boot, -1));
	assert_non_null(strstr(zn_last_error(), "asked for CUDA device -1"));
	/* The bootstrap is still usable after a failed open. */
	assert_int_equal(zn_comm_barrier(boot), 0);
	zn_comm_destroy(boot);
}

/* This program under mpirun, one rank per GPU. */
static void test_multi_rank(void **state)
{
	(void)state;
	const char *mpirun = getenv("ZINC_MPIRUN");
	if (n_gpus < 2) {
		print_message("needs 2 GPUs, this machine has %d\n", n_gpus);
		skip();
	}
	if (!mpirun || !*mpirun) {
		print_message("ZINC_MPIRUN is not set (a zinc built without MPI or mpirun)\n");
		skip();
	}
	char np[16];
	snprintf(np, sizeof(np), "%d", n_gpus);
	fflush(stdout);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(STDERR_FILENO, STDOUT_FILENO); /* the ranks' TAP is not meson's */
		execl(mpirun, mpirun, "--allow-run-as-root", "--oversubscribe", "-np", np, self_path,
		      (char *)NULL);
		fprintf(stderr, "cannot run %s: %s\n", mpirun, strerror(errno));
		_exit(127);
	}
	int st = 0;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		fail_msg("mpirun -np %s: the ranks failed (status 0x%x): see their output above", np,
			 st);
}

static int one_process(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reduce_kernel),
		cmocka_unit_test(test_one_rank),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_multi_rank),
	};
	return tu_run_group_tests(tests, NULL, NULL) ? 1 : 0;
}

/* ---- under mpirun: one rank per GPU ------------------------------------------ */

static struct zn_comm *C;

static void test_ranks(void **state)
{
	(void)state;
	assert_string_equal(zn_comm_backend(C), "nccl");
	assert_int_equal(zn_comm_size(C), atoi(getenv("OMPI_COMM_WORLD_SIZE")));
	assert_int_equal(zn_comm_rank(C), atoi(getenv("OMPI_COMM_WORLD_RANK")));
}

static int ranks(void)
{
	const char *wr = getenv("OMPI_COMM_WORLD_RANK");
	const char *lws = getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
	if (wr && atoi(wr) != 0)
		dup2(STDERR_FILENO, STDOUT_FILENO);
	if (!ZN_HAVE_MPI) {
		printf("1..0 # SKIP launched by mpirun, but this zinc was built without MPI\n");
		return 0;
	}
	if (lws && atoi(lws) > n_gpus) {
		/* Every rank of the node sees the same count: all skip. */
		printf("1..0 # SKIP %s ranks on this node, %d GPUs: start one rank per GPU\n", lws,
		       n_gpus);
		return 0;
	}
	struct zn_comm *boot = zn_comm_create("mpi");
	if (!boot) {
		printf("1..1\nnot ok 1 - zn_comm_create(\"mpi\"): %s\n", zn_last_error());
		return 1;
	}
	const int device = zn_comm_local_rank(boot);
	C = zn_comm_create_nccl(boot, device);
	if (!C) {
		printf("1..1\nnot ok 1 - zn_comm_create_nccl: %s\n", zn_last_error());
		zn_comm_destroy(boot);
		return 1;
	}
	if (cudaSetDevice(device) != cudaSuccess) { /* the staged buffers' device */
		printf("1..1\nnot ok 1 - cudaSetDevice(%d)\n", device);
		return 1;
	}
	cc_use_device_memory(&device_mem);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ranks),
		CC_COMM_TESTS(C),
	};
	int failed = tu_run_group_tests(tests, NULL, NULL);
	zn_comm_destroy(C);
	zn_comm_destroy(boot); /* finalizes MPI */
	return failed ? 1 : 0;
}
#endif

int main(int argc, char **argv)
{
	(void)argc;
#if !ZN_HAVE_NCCL
	(void)argv;
	printf("1..0 # SKIP this zinc was built without NCCL (or without the cuda backend)\n");
	return 0;
#else
	self_path = argv[0];
	cudaError_t e = cudaGetDeviceCount(&n_gpus);
	if (e != cudaSuccess || n_gpus == 0) {
		printf("1..0 # SKIP no CUDA device (%s)\n",
		       e != cudaSuccess ? cudaGetErrorString(e) : "none found");
		return 0;
	}
	const char *ws = getenv("OMPI_COMM_WORLD_SIZE");
	if (ws && atoi(ws) > 1)
		return ranks();
	return one_process();
#endif
}
