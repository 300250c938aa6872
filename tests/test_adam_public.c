/* The CPU optimizers through the installed API alone: <zinc/...> headers,
 * the shared libzinc — the way an embedding program (or the offload
 * engine's user) calls them, as docs/design.md shows. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <zinc/adam.h>
#include <zinc/cpu.h>
#include <zinc/hostmem.h>
#include <zinc/threadpool.h>

struct progress {
	size_t done; /* elements; callbacks may run concurrently */
};

static void tile_done(void *user, size_t offset, size_t count)
{
	(void)offset;
	__atomic_add_fetch(&((struct progress *)user)->done, count, __ATOMIC_RELAXED);
}

static void test_embedding_example(void **state)
{
	(void)state;
	const size_t n = 1000003;
	/* Optimizer state: huge pages, staggered arrays. */
	size_t sizes[5] = { n * 4, n * 2, n * 4, n * 4, n * 2 };
	void *a[5];
	size_t region_bytes;
	void *region = zn_hostmem_alloc_arrays(5, sizes, ZN_HOSTMEM_HUGE | ZN_HOSTMEM_PREFAULT, a,
					       &region_bytes);
	assert_non_null(region);
	float *param = a[0], *m = a[2], *v = a[3];
	uint16_t *grad = a[1], *copy = a[4];
	for (size_t i = 0; i < n; i++) {
		param[i] = 1.0f;
		grad[i] = 0x3c00; /* fp16 1.0 */
	}
	struct zn_threadpool *pool = zn_threadpool_create_near(0, region, region_bytes);
	assert_non_null(pool);

	/* fp16 grads scaled by 1/loss_scale: check, then step. */
	struct zn_adam_exec ex = { .pool = pool };
	struct zn_adam_grad_stats st;
	assert_int_equal(zn_adam_grad_check(grad, ZN_DTYPE_F16, n, &ex, &st), 0);
	assert_true(st.finite);
	assert_true(st.sumsq == (double)n);

	struct zn_adam_hparams hp;
	zn_adam_defaults(&hp);
	hp.weight_decay = 0.01;
	struct zn_adam_tensors t = {
		.n = n, .param = param, .grad = grad, .grad_dtype = ZN_DTYPE_F16,
		.exp_avg = m, .exp_avg_sq = v, .param_copy = copy, .copy_dtype = ZN_DTYPE_BF16,
	};
	struct progress pr = { 0 };
	ex.on_tile = tile_done;
	ex.user = &pr;
	assert_int_equal(zn_adam_step(&hp, 1, 1.0f / 1024, &t, &ex), 0);
	assert_int_equal(pr.done, n);
	/* Step 1 of Adam moves every param by lr (m/sqrt(v) = ±1 after the
	 * bias corrections), plus the decoupled decay. */
	float want = (float)(1.0 * (1 - 1e-3 * 0.01) - 1e-3);
	for (size_t i = 0; i < n; i += 9973)
		assert_true(fabsf(param[i] - want) < 1e-6f);
	assert_int_equal(copy[0], 0x3f80); /* bf16 of 0.99899 rounds to 1.0 */

	/* Errors: a negative errno and a message, never a print. */
	hp.beta2 = 1.0;
	assert_int_equal(zn_adam_step(&hp, 2, 1.0f, &t, &ex), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "beta2"));
	enum zn_adam_simd got;
	assert_int_equal(zn_adam_simd_select(ZN_ADAM_SIMD_AUTO, &got), 0);
	assert_string_not_equal(zn_adam_simd_name(got), "?");
	(void)zn_cpu_has(ZN_CPU_AVX2);

	zn_threadpool_destroy(pool);
	zn_hostmem_free(region, region_bytes);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_embedding_example),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
