/* common/: byte counts, formatting, edit distance, error messages, host memory. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "zn_common.h"
#include "zinc/hostmem.h"

static void test_parse_size(void **state)
{
	(void)state;
	static const struct {
		const char *text;
		int rc;
		uint64_t v;
	} cases[] = {
		{ "0", 0, 0 },           { "4096", 0, 4096 },       { "1K", 0, 1024 },
		{ "128k", 0, 131072 },   { "1M", 0, 1048576 },      { "1MiB", 0, 1048576 },
		{ "1MB", 0, 1048576 },   { "2G", 0, 2ull << 30 },   { "1T", 0, 1ull << 40 },
		{ "1e8", 0, 100000000 }, { "5e8", 0, 500000000 },   { " 7 ", 0, 7 },
		{ "1.5", -EINVAL, 0 },   { "", -EINVAL, 0 },        { "abc", -EINVAL, 0 },
		{ "-1", -EINVAL, 0 },    { "1X", -EINVAL, 0 },      { "1M2", -EINVAL, 0 },
		{ "99999999999999999999", -ERANGE, 0 },             { "20000000T", -ERANGE, 0 },
		{ "1e300", -ERANGE, 0 },
	};
	for (size_t i = 0; i < ZN_ARRAY_SIZE(cases); i++) {
		uint64_t v = 12345;
		int rc = zn_parse_size(cases[i].text, &v);
		if (rc != cases[i].rc)
			fail_msg("'%s': rc %d, want %d", cases[i].text, rc, cases[i].rc);
		if (rc == 0 && v != cases[i].v)
			fail_msg("'%s': %llu, want %llu", cases[i].text, (unsigned long long)v,
				 (unsigned long long)cases[i].v);
	}
}

static void test_format_size(void **state)
{
	(void)state;
	char b[32];
	assert_string_equal(zn_format_size(0, b, sizeof(b)), "0 B");
	assert_string_equal(zn_format_size(1000, b, sizeof(b)), "1000 B");
	assert_string_equal(zn_format_size(1024, b, sizeof(b)), "1 KiB");
	assert_string_equal(zn_format_size(1536 * 1024, b, sizeof(b)), "1.5 MiB");
	assert_string_equal(zn_format_size(3ull << 30, b, sizeof(b)), "3 GiB");
}

static void test_edit_distance(void **state)
{
	(void)state;
	assert_int_equal(zn_edit_distance("queue_depth", "queue_depth"), 0);
	assert_int_equal(zn_edit_distance("queu_depth", "queue_depth"), 1);
	assert_int_equal(zn_edit_distance("block_szie", "block_size"), 2);
	assert_int_equal(zn_edit_distance("", "abc"), 3);
}

static void test_error_messages(void **state)
{
	(void)state;
	assert_int_equal(zn_error(-ENOSPC, "disk %s full", "x"), -ENOSPC);
	assert_string_equal(zn_last_error(), "disk x full");
	/* Wrapping the previous message in more context must not corrupt it. */
	zn_set_error("outer: %s", zn_last_error());
	assert_string_equal(zn_last_error(), "outer: disk x full");
}

static void test_hostmem(void **state)
{
	(void)state;
	size_t len = 5 * 1024 * 1024 + 3;
	uint8_t *p = zn_hostmem_alloc(len, ZN_HOSTMEM_HUGE | ZN_HOSTMEM_PREFAULT);
	assert_non_null(p);
	assert_int_equal((uintptr_t)p % ZN_HOSTMEM_ALIGN, 0);
	for (size_t i = 0; i < len; i += 4096)
		assert_int_equal(p[i], 0);
	memset(p, 0x5a, len);
	double f = zn_hostmem_huge_fraction(p, len);
	assert_true(f >= 0.0 && f <= 1.0);
	zn_hostmem_free(p, len);
	assert_null(zn_hostmem_alloc(0, 0));
	assert_non_null(strstr(zn_last_error(), "zero"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_size),
		cmocka_unit_test(test_format_size),
		cmocka_unit_test(test_edit_distance),
		cmocka_unit_test(test_error_messages),
		cmocka_unit_test(test_hostmem),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
