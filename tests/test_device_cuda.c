/* The device API on the cuda backend (suite `cuda`).
 *
 * Without a CUDA build or without a GPU the program prints a TAP plan of
 * zero tests with "# SKIP" and the reason, which meson reports as skipped.
 * The checks mirror test_device.c: budget and accounting, stream order,
 * copies in both directions, events across streams, host functions and
 * their sticky errors, pinned registration. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "zn_build.h"
#include "zn_common.h"
#include "zinc/device.h"
#include "zinc/kernels.h"

#if ZN_HAVE_CUDA
#include <cuda_runtime_api.h>

static struct zn_device *open_cuda(uint64_t limit)
{
	struct zn_device_params c;
	zn_device_params_default(&c);
	c.kind = "cuda";
	c.memory_limit = limit;
	struct zn_device *dev = zn_device_create(&c);
	if (!dev)
		print_message("zn_device_create: %s\n", zn_last_error());
	assert_non_null(dev);
	return dev;
}

static void test_create(void **state)
{
	(void)state;
	struct zn_device *dev = open_cuda(0);
	assert_string_equal(zn_device_kind(dev), "cuda");
	assert_non_null(strstr(zn_device_name(dev), "cuda:0"));
	assert_false(zn_device_host_accessible(dev));
	struct zn_device_memstats st;
	zn_device_memstats(dev, &st);
	assert_true(st.limit > 0); /* the free memory */
	zn_device_destroy(dev);

	struct zn_device_params c;
	zn_device_params_default(&c);
	c.kind = "cuda";
	c.ordinal = 1000;
	assert_null(zn_device_create(&c));
	assert_non_null(strstr(zn_last_error(), "cuda:1000"));
	c.ordinal = 0;
	c.memory_limit = UINT64_MAX / 2;
	assert_null(zn_device_create(&c));
	assert_non_null(strstr(zn_last_error(), "free"));
}

static void test_budget(void **state)
{
	(void)state;
	struct zn_device *dev = open_cuda(1 << 20);
	void *a = NULL, *b = NULL;
	assert_int_equal(zn_device_alloc(dev, 512 << 10, &a), 0);
	assert_int_equal((uintptr_t)a % ZN_DEVICE_ALIGN, 0);
	assert_int_equal(zn_device_alloc(dev, 768 << 10, &b), -ENOMEM);
	assert_non_null(strstr(zn_last_error(), "786432 bytes"));
	assert_non_null(strstr(zn_last_error(), "524288 bytes"));
	assert_non_null(strstr(zn_last_error(), "1048576 bytes"));
	assert_int_equal(zn_device_alloc(dev, 512 << 10, &b), 0);
	struct zn_device_memstats st;
	zn_device_memstats(dev, &st);
	assert_int_equal(st.in_use, 1 << 20);
	assert_int_equal(st.peak, 1 << 20);
	assert_int_equal(zn_device_free(dev, a), 0);
	assert_int_equal(zn_device_free(dev, a), -EINVAL);
	assert_int_equal(zn_device_free(dev, b), 0);
	zn_device_memstats(dev, &st);
	assert_int_equal(st.in_use, 0);
	zn_device_destroy(dev);
}

struct flag_arg {
	atomic_int *counter;
	int expect;
	atomic_int *bad;
};

static int count_fn(void *arg)
{
	struct flag_arg *f = arg;
	if (atomic_fetch_add(f->counter, 1) != f->expect)
		atomic_store(f->bad, 1);
	return 0;
}

static int failing(void *arg)
{
	(void)arg;
	return zn_error(-EDOM, "host function %d failed", 3);
}

static void test_copies_events_order(void **state)
{
	(void)state;
	struct zn_device *dev = open_cuda(0);
	struct zn_stream *compute = zn_device_stream_create(dev, "compute");
	struct zn_stream *h2d = zn_device_stream_create(dev, "h2d");
	struct zn_stream *d2h = zn_device_stream_create(dev, "d2h");
	struct zn_event *up = zn_device_event_create(dev);
	struct zn_event *done = zn_device_event_create(dev);
	assert_true(compute && h2d && d2h && up && done);
	assert_int_equal(zn_device_event_query(up), 0); /* never recorded */

	enum { N = 8 << 20 };
	unsigned char *h = malloc(N), *back = malloc(N);
	assert_true(h && back);
	for (size_t i = 0; i < N; i++)
		h[i] = (unsigned char)(i * 7 + 1);
	assert_int_equal(zn_device_host_register(dev, h, N), 0);
	assert_int_equal(zn_device_host_register(dev, back, N), 0);
	void *d = NULL, *d2 = NULL;
	assert_int_equal(zn_device_alloc(dev, N, &d), 0);
	assert_int_equal(zn_device_alloc(dev, N, &d2), 0);

	/* h2d on its stream, d2d on compute after the event, d2h after that */
	assert_int_equal(zn_device_copy_async(dev, d, h, N, ZN_COPY_HOST_TO_DEVICE, h2d), 0);
	assert_int_equal(zn_device_event_record(up, h2d), 0);
	assert_int_equal(zn_device_stream_wait_event(compute, up), 0);
	assert_int_equal(zn_device_memset(dev, d2, 0, N, compute), 0);
	assert_int_equal(zn_device_copy_async(dev, d2, d, N, ZN_COPY_DEVICE_TO_DEVICE, compute),
			 0);
	assert_int_equal(zn_device_event_record(done, compute), 0);
	assert_int_equal(zn_device_stream_wait_event(d2h, done), 0);
	assert_int_equal(zn_device_copy_async(dev, back, d2, N, ZN_COPY_DEVICE_TO_HOST, d2h), 0);
	assert_int_equal(zn_device_stream_synchronize(d2h), 0);
	assert_int_equal(zn_device_stream_query(d2h), 0);
	assert_int_equal(zn_device_event_synchronize(done), 0);
	assert_int_equal(zn_device_event_query(done), 0);
	assert_memory_equal(h, back, N);

	/* host functions run in stream order */
	atomic_int counter = 0, bad = 0;
	struct flag_arg args[64];
	for (int i = 0; i < 64; i++) {
		args[i] = (struct flag_arg){ &counter, i, &bad };
		assert_int_equal(zn_device_launch_host(compute, count_fn, &args[i]), 0);
	}
	assert_int_equal(zn_device_stream_synchronize(compute), 0);
	assert_int_equal(atomic_load(&counter), 64);
	assert_int_equal(atomic_load(&bad), 0);

	/* sticky host-function errors */
	assert_int_equal(zn_device_launch_host(compute, failing, NULL), 0);
	assert_int_equal(zn_device_synchronize(dev), -EDOM);
	assert_non_null(strstr(zn_last_error(), "host function 3 failed"));
	assert_int_equal(zn_device_synchronize(dev), 0);

	/* a synchronous memset and copy */
	assert_int_equal(zn_device_memset(dev, d, 0x77, N, NULL), 0);
	assert_int_equal(zn_device_copy_async(dev, back, d, N, ZN_COPY_DEVICE_TO_HOST, NULL), 0);
	assert_int_equal(back[0], 0x77);
	assert_int_equal(back[N - 1], 0x77);

	/* kernels params point at the stream */
	struct zn_kernels_params kp;
	zn_kernels_params_default(&kp);
	zn_device_kernels_params(dev, compute, &kp);
	assert_non_null(kp.cuda_stream);
	assert_int_equal(kp.cuda_device, 0);

	/* a CUDA failure carries call, file and line */
	assert_int_equal(zn_device_host_register(dev, h, N), -EEXIST);
	assert_non_null(strstr(zn_last_error(), "cudaHostRegister"));
	assert_non_null(strstr(zn_last_error(), "device/cuda.c:"));

	assert_int_equal(zn_device_host_unregister(dev, h), 0);
	assert_int_equal(zn_device_host_unregister(dev, back), 0);
	free(h);
	free(back);
	assert_int_equal(zn_device_free(dev, d), 0);
	assert_int_equal(zn_device_free(dev, d2), 0);
	zn_device_destroy(dev); /* streams and events too */
}
#endif /* ZN_HAVE_CUDA */

int main(void)
{
#if !ZN_HAVE_CUDA
	printf("1..0 # SKIP this zinc was built without the CUDA toolkit\n");
	return 0;
#else
	int n = 0;
	cudaError_t e = cudaGetDeviceCount(&n);
	if (e != cudaSuccess || n == 0) {
		printf("1..0 # SKIP no CUDA device (%s)\n",
		       e != cudaSuccess ? cudaGetErrorString(e) : "none found");
		return 0;
	}
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create),
		cmocka_unit_test(test_budget),
		cmocka_unit_test(test_copies_events_order),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
#endif
}
