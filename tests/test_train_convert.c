/* The trainer's host conversions for gradients that cross in 16 bits
 * (16-bit layers on the device): adding 16-bit addends, and converting
 * between any two dtypes, must give exactly what widening to fp32 first
 * and taking the fp32 path gives -- the path the other placements take --
 * for every bit pattern that matters: signed zeros, subnormals, the
 * largest finite values, infinities, NaN, and random values, over lengths
 * that cross the functions' blocks. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train/internal.h"

static const enum zn_dtype dts[] = { ZN_DTYPE_F32, ZN_DTYPE_F16, ZN_DTYPE_BF16 };

/* n values of dtype dt: specials first, then random bit patterns of
 * moderate exponent (so that sums round, not just overflow). */
static void *values(enum zn_dtype dt, size_t n, uint64_t *rng)
{
	float *f = malloc(n * sizeof(float));
	static const float special[] = { 0.0f, -0.0f, 1e-40f, -1e-40f, 65504.0f, -65504.0f,
					 3.0e38f, INFINITY, -INFINITY, NAN, 1.0f, -2.5f };
	for (size_t i = 0; i < n; i++) {
		if (i < sizeof(special) / sizeof(special[0]))
			f[i] = special[i];
		else
			f[i] = ((float)(tu_rand(rng) % 2000001) - 1e6f) / 997.0f;
	}
	void *out = malloc(n * zn_dtype_size(dt));
	assert_int_equal(zn_dtype_from_f32(out, dt, f, n), 0);
	free(f);
	return out;
}

static void test_accumulate_from_16_bits(void **state)
{
	(void)state;
	uint64_t rng = 5;
	const size_t n = 5000; /* more than two of the functions' blocks */
	for (unsigned a = 0; a < 3; a++) {
		for (unsigned s = 1; s < 3; s++) {
			void *acc = values(dts[a], n, &rng), *add = values(dts[s], n, &rng);
			void *want = malloc(n * zn_dtype_size(dts[a]));
			float *wide = malloc(n * sizeof(float));
			memcpy(want, acc, n * zn_dtype_size(dts[a]));
			assert_int_equal(zn_dtype_to_f32(wide, add, dts[s], n), 0);
			tr_host_accumulate(want, dts[a], wide, n);
			tr_host_accumulate_from(acc, dts[a], add, dts[s], n);
			if (memcmp(acc, want, n * zn_dtype_size(dts[a])) != 0)
				fail_msg("%s += %s differs from the fp32 path",
					 zn_dtype_name(dts[a]), zn_dtype_name(dts[s]));
			free(acc);
			free(add);
			free(want);
			free(wide);
		}
	}
}

static void test_convert(void **state)
{
	(void)state;
	uint64_t rng = 9;
	const size_t n = 4099;
	for (unsigned d = 0; d < 3; d++) {
		for (unsigned s = 0; s < 3; s++) {
			void *src = values(dts[s], n, &rng);
			void *got = malloc(n * zn_dtype_size(dts[d]));
			void *want = malloc(n * zn_dtype_size(dts[d]));
			float *wide = malloc(n * sizeof(float));
			assert_int_equal(zn_dtype_to_f32(wide, src, dts[s], n), 0);
			assert_int_equal(zn_dtype_from_f32(want, dts[d], wide, n), 0);
			tr_host_convert(got, dts[d], src, dts[s], n);
			if (memcmp(got, want, n * zn_dtype_size(dts[d])) != 0)
				fail_msg("%s -> %s differs from the fp32 path",
					 zn_dtype_name(dts[s]), zn_dtype_name(dts[d]));
			free(src);
			free(got);
			free(want);
			free(wide);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_accumulate_from_16_bits),
		cmocka_unit_test(test_convert),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
