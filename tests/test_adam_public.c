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
#include <zinc/dtype.h>
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

/* The element types and their conversions, which a caller needs to hand
 * the optimizer fp16/bf16 gradients. */
static void test_dtypes(void **state)
{
	(void)state;
	static const char *const names[] = { "fp32", "fp16", "bf16", "int32", "uint8" };
	static const size_t sizes[] = { 4, 2, 2, 4, 1 };
	for (int d = 0; d < ZN_DTYPE_COUNT; d++) {
		assert_string_equal(zn_dtype_name((enum zn_dtype)d), names[d]);
		assert_int_equal(zn_dtype_size((enum zn_dtype)d), sizes[d]);
		assert_int_equal(zn_dtype_is_float((enum zn_dtype)d), d <= ZN_DTYPE_BF16);
	}
	assert_string_equal(zn_dtype_name(ZN_DTYPE_COUNT), "?");
	assert_int_equal(zn_dtype_size(ZN_DTYPE_COUNT), 0);

	/* 1, -2, 65520 (Inf in fp16), 1 + 2^-8 (a tie in bf16: to even), NaN */
	const float src[5] = { 1.0f, -2.0f, 65520.0f, 1.0f + 0x1p-8f, NAN };
	static const uint16_t f16[5] = { 0x3c00, 0xc000, 0x7c00, 0x3c04, 0x7e00 };
	static const uint16_t bf16[5] = { 0x3f80, 0xc000, 0x4780, 0x3f80, 0x7fc0 };
	uint16_t h[5];
	float back[5];
	assert_int_equal(zn_dtype_from_f32(h, ZN_DTYPE_F16, src, 5), 0);
	assert_memory_equal(h, f16, sizeof(h));
	assert_int_equal(zn_dtype_to_f32(back, h, ZN_DTYPE_F16, 2), 0);
	assert_true(back[0] == 1.0f && back[1] == -2.0f);
	assert_int_equal(zn_dtype_from_f32(h, ZN_DTYPE_BF16, src, 5), 0);
	assert_memory_equal(h, bf16, sizeof(h));
	assert_int_equal(zn_dtype_to_f32(back, h, ZN_DTYPE_BF16, 5), 0);
	assert_true(back[2] == 65536.0f && back[3] == 1.0f && isnan(back[4]));
	assert_int_equal(zn_dtype_from_f32(back, ZN_DTYPE_F32, src, 2), 0);
	assert_true(back[0] == 1.0f && back[1] == -2.0f);
	assert_int_equal(zn_dtype_from_f32(h, ZN_DTYPE_I32, src, 1), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "int32"));
	assert_int_equal(zn_dtype_to_f32(back, h, ZN_DTYPE_COUNT, 1), -EINVAL);
}

/* The bandwidth yardsticks zinc adam-bench compares the optimizer with. */
static void test_streams(void **state)
{
	(void)state;
	enum { N = 1000 };
	static float p[N], g[N], m[N], v[N];
	for (size_t i = 0; i < N; i++)
		p[i] = 1.0f, g[i] = 2.0f, m[i] = 0.0f, v[i] = 0.5f;
	struct zn_adam_tensors t = { .n = N, .param = p, .grad = g, .exp_avg = m, .exp_avg_sq = v };
	struct zn_adam_exec ex = { .tile = 100 };
	assert_int_equal(zn_adam_tile_size(N, &ex), 128); /* a multiple of 64 */
	assert_int_equal(zn_adam_triad(&t, &ex), 0);
	assert_true(m[0] == 2.5f && m[N - 1] == 2.5f); /* p + 3 v */
	assert_int_equal(zn_adam_stream7(&t, &ex), 0);
	assert_true(m[N - 1] == 2.25f && v[N - 1] == 2.25f); /* (m + g) / 2, (v + g^2) / 2 */
	t.exp_avg = NULL;
	assert_int_equal(zn_adam_stream7(&t, &ex), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_embedding_example),
		cmocka_unit_test(test_dtypes),
		cmocka_unit_test(test_streams),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
