/* The comm API on the mpi backend, suite `mpi`: meson runs this program
 * under `mpirun -np 2` (it works for any number of ranks).
 *
 * Without MPI in the build, or when not launched by mpirun, it prints a TAP
 * plan of zero tests with "# SKIP" and the reason.  Only rank 0 writes TAP
 * to stdout; the other ranks write theirs to stderr, and a failure on any
 * rank makes mpirun, and so the test, fail.
 *
 * Every rank generates every rank's input from the rank's seed, so each
 * checks its result against a reduction it computes alone, in rank order,
 * and must match it bit for bit. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "zn_config.h"
#include "zinc/comm.h"
#include "testutil.h"

/* Not a multiple of the rank count: uneven all_reduce chunks. */
#define N 100003

static struct zn_comm *C;
static int R, S;

static void ok(int rc)
{
	if (rc != 0) {
		print_message("rank %d: comm call failed: %d: %s\n", R, rc, zn_last_error());
		fail();
	}
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* Rank r's fp32 input: values of very different magnitudes, so that the
 * order of the additions changes the rounded result. */
static void input_f32(float *x, size_t n, int r, uint64_t salt)
{
	uint64_t s = 0x9e3779b97f4a7c15ull * (uint64_t)(r + 1) + salt;
	for (size_t i = 0; i < n; i++) {
		uint64_t u = tu_rand(&s);
		x[i] = ldexpf((float)(u >> 40) / (float)(1 << 24) - 0.5f, (int)(u % 41) - 20);
	}
}

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

/* all_reduce fp32: equal, bit for bit, to ((x0 + x1) + x2) ... computed
 * here, and the same bits when run again. */
static void test_all_reduce_f32(void **state)
{
	(void)state;
	float *buf = malloc(N * sizeof(float)), *x = malloc(N * sizeof(float));
	float *want = calloc(N, sizeof(float)), *first = malloc(N * sizeof(float));
	assert_true(buf && x && want && first);
	for (int r = 0; r < S; r++) {
		input_f32(x, N, r, 1);
		for (size_t i = 0; i < N; i++)
			want[i] = r == 0 ? x[i] : want[i] + x[i];
	}
	for (int run = 0; run < 2; run++) {
		input_f32(buf, N, R, 1);
		ok(zn_comm_all_reduce(C, buf, N, ZN_COMM_F32, ZN_COMM_SUM));
		assert_memory_equal(buf, want, N * sizeof(float));
		if (run == 0)
			memcpy(first, buf, N * sizeof(float));
		else
			assert_memory_equal(buf, first, N * sizeof(float));
	}
	/* Fewer elements than ranks: some ranks reduce nothing. */
	float one = (float)(R + 1);
	ok(zn_comm_all_reduce(C, &one, 1, ZN_COMM_F32, ZN_COMM_SUM));
	assert_true(one == (float)(S * (S + 1) / 2));

	/* MAX, with a NaN on the last rank only: every rank sees NaN there. */
	float m[3] = { (float)R, -(float)R, R == S - 1 ? NAN : 1.0f };
	ok(zn_comm_all_reduce(C, m, 3, ZN_COMM_F32, ZN_COMM_MAX));
	assert_true(m[0] == (float)(S - 1));
	assert_true(m[1] == 0.0f);
	assert_true(isnan(m[2]));
	free(buf);
	free(x);
	free(want);
	free(first);
}

static uint16_t to_bf16(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	return (uint16_t)(u >> 16); /* exact for the values used below */
}

/* The other dtypes, on values whose sums are exact (so independent of the
 * summation rule): bf16/fp16 small integers, int32 wrapping, uint8 wrapping. */
static void test_all_reduce_dtypes(void **state)
{
	(void)state;
	enum { M = 257 };
	uint16_t bf[M], hf[M];
	int32_t i32[M];
	uint8_t u8[M];
	for (int i = 0; i < M; i++) {
		bf[i] = to_bf16((float)(i % 16 + R));
		hf[i] = 0x3c00; /* fp16 1.0 on every rank */
		i32[i] = i == 0 ? INT32_MAX : i * (R + 1);
		u8[i] = (uint8_t)(200 + i);
	}
	ok(zn_comm_all_reduce(C, bf, M, ZN_COMM_BF16, ZN_COMM_SUM));
	ok(zn_comm_all_reduce(C, hf, M, ZN_COMM_F16, ZN_COMM_SUM));
	ok(zn_comm_all_reduce(C, i32, M, ZN_COMM_I32, ZN_COMM_SUM));
	ok(zn_comm_all_reduce(C, u8, M, ZN_COMM_U8, ZN_COMM_SUM));
	for (int i = 0; i < M; i++) {
		float want = (float)(S * (i % 16) + S * (S - 1) / 2);
		assert_int_equal(bf[i], to_bf16(want));
		/* fp16 of S (S < 2048): exponent 15 + floor(log2 S). */
		float fs = (float)S;
		int e = ilogbf(fs);
		uint16_t want_h = (uint16_t)(((15 + e) << 10) |
					     (uint16_t)((fs / ldexpf(1, e) - 1) * 1024));
		assert_int_equal(hf[i], want_h);
		uint32_t wi = 0;
		for (int r = 0; r < S; r++)
			wi += i == 0 ? (uint32_t)INT32_MAX : (uint32_t)(i * (r + 1));
		assert_int_equal((uint32_t)i32[i], wi);
		assert_int_equal(u8[i], (uint8_t)(S * (200 + i)));
	}
}

static void test_reduce_scatter(void **state)
{
	(void)state;
	enum { P = 4099 };
	float *send = malloc((size_t)S * P * sizeof(float)), *x = malloc((size_t)S * P * 4);
	float recv[P], want[P];
	assert_true(send && x);
	for (int r = 0; r < S; r++) {
		input_f32(x, (size_t)S * P, r, 2);
		for (int i = 0; i < P; i++) {
			float v = x[(size_t)R * P + i]; /* rank r's chunk R */
			want[i] = r == 0 ? v : want[i] + v;
		}
	}
	input_f32(send, (size_t)S * P, R, 2);
	ok(zn_comm_reduce_scatter(C, send, recv, P, ZN_COMM_F32));
	assert_memory_equal(recv, want, sizeof(want));
	free(send);
	free(x);
}

static void test_all_gather_broadcast_barrier(void **state)
{
	(void)state;
	enum { P = 1000 };
	int32_t mine[P], *all = malloc((size_t)S * P * sizeof(int32_t));
	assert_non_null(all);
	for (int i = 0; i < P; i++)
		mine[i] = R * 1000000 + i;
	ok(zn_comm_all_gather(C, mine, all, P, ZN_COMM_I32));
	for (int r = 0; r < S; r++)
		for (int i = 0; i < P; i++)
			assert_int_equal(all[(size_t)r * P + i], r * 1000000 + i);
	/* In place. */
	memset(all, 0xff, (size_t)S * P * sizeof(int32_t));
	memcpy(all + (size_t)R * P, mine, sizeof(mine));
	ok(zn_comm_all_gather(C, all + (size_t)R * P, all, P, ZN_COMM_I32));
	for (int r = 0; r < S; r++)
		assert_int_equal(all[(size_t)r * P + 7], r * 1000000 + 7);
	free(all);

	char msg[64];
	int root = S - 1;
	snprintf(msg, sizeof(msg), "from rank %d", R);
	ok(zn_comm_broadcast(C, msg, sizeof(msg), root));
	char want[64];
	snprintf(want, sizeof(want), "from rank %d", root);
	assert_string_equal(msg, want);
	ok(zn_comm_barrier(C));
}

/* An async op stays in flight while the caller works: rank 0 enqueues an
 * all_reduce that cannot finish before the last rank joins 300 ms later,
 * gets control back at once, and computes meanwhile. */
static void test_async_overlap(void **state)
{
	(void)state;
	enum { M = 1 << 20 };
	float *buf = malloc(M * sizeof(float));
	assert_non_null(buf);
	for (size_t i = 0; i < M; i++)
		buf[i] = (float)(R + 1);
	ok(zn_comm_barrier(C));
	if (R == S - 1)
		sleep_ms(300);
	uint64_t t0 = now_ns();
	struct zn_comm_op *op;
	ok(zn_comm_all_reduce_async(C, buf, M, ZN_COMM_F32, ZN_COMM_SUM, &op));
	uint64_t t_enq = now_ns() - t0;
	volatile double work = 0;
	unsigned rounds = 0;
	while (now_ns() - t0 < 100000000ull) { /* 100 ms of "compute" */
		for (int i = 0; i < 1000; i++)
			work += i * 0.5;
		rounds++;
	}
	ok(zn_comm_wait(op));
	uint64_t t_done = now_ns() - t0;
	if (R == 0) {
		assert_true(t_enq < 50000000ull);    /* returned before the peer joined */
		assert_true(t_done >= 200000000ull); /* and the op waited for it */
		assert_true(rounds > 0);
	}
	for (size_t i = 0; i < M; i += 4097)
		assert_true(buf[i] == (float)(S * (S + 1) / 2));
	free(buf);
}

/* Last: the last rank skips a collective.  The others fail with -ETIMEDOUT
 * naming the op and that rank, the comm refuses further collectives, and
 * every rank still finalizes. */
static void test_timeout(void **state)
{
	(void)state;
	ok(zn_comm_barrier(C));
	ok(zn_comm_set_timeout(C, 1.0));
	float v[16] = { 1 };
	if (R == S - 1)
		return; /* skips the all_reduce */
	uint64_t t0 = now_ns();
	int rc = zn_comm_all_reduce(C, v, 16, ZN_COMM_F32, ZN_COMM_SUM);
	uint64_t dt = now_ns() - t0;
	assert_int_equal(rc, -ETIMEDOUT);
	char want[32];
	snprintf(want, sizeof(want), "rank %d", S - 1);
	print_message("# %s\n", zn_last_error());
	assert_non_null(strstr(zn_last_error(), "all_reduce"));
	assert_non_null(strstr(zn_last_error(), want));
	assert_true(dt >= 900000000ull && dt < 30000000000ull);
	assert_int_equal(zn_comm_barrier(C), -EPIPE);
	assert_non_null(strstr(zn_last_error(), "unusable"));
}

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
		cmocka_unit_test(test_all_reduce_f32),
		cmocka_unit_test(test_all_reduce_dtypes),
		cmocka_unit_test(test_reduce_scatter),
		cmocka_unit_test(test_all_gather_broadcast_barrier),
		cmocka_unit_test(test_async_overlap),
		cmocka_unit_test(test_timeout),
	};
	int failed = cmocka_run_group_tests(tests, NULL, NULL);
	zn_comm_destroy(C);
	return failed ? 1 : 0;
#endif
}
