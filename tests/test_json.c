/* The JSON writer (zinc/json.h): the compact and pretty layouts byte for
 * byte (pretty as Python's json.dump(indent=2) writes), escapes, number
 * formats, and refusal of bad nesting. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "zinc/json.h"

/* {"a": [1, "x"], "b": {}, "c": [], "d": {"e": null}} */
static void write_sample(struct zn_json *j)
{
	zn_json_begin_object(j);
	zn_json_key(j, "a");
	zn_json_begin_array(j);
	zn_json_uint(j, 1);
	zn_json_string(j, "x");
	zn_json_end_array(j);
	zn_json_key(j, "b");
	zn_json_begin_object(j);
	zn_json_end_object(j);
	zn_json_key(j, "c");
	zn_json_begin_array(j);
	zn_json_end_array(j);
	zn_json_key(j, "d");
	zn_json_begin_object(j);
	zn_json_key(j, "e");
	zn_json_null(j);
	zn_json_end_object(j);
	zn_json_end_object(j);
}

static char *in_memory(unsigned flags, void (*write)(struct zn_json *))
{
	struct zn_json j;
	char *text;
	size_t len;
	assert_int_equal(zn_json_open_memory(&j, flags), 0);
	write(&j);
	assert_int_equal(zn_json_close_memory(&j, &text, &len), 0);
	assert_int_equal(strlen(text), len);
	return text;
}

static void test_layouts(void **state)
{
	(void)state;
	char *compact = in_memory(0, write_sample);
	assert_string_equal(compact, "{\"a\":[1,\"x\"],\"b\":{},\"c\":[],\"d\":{\"e\":null}}");
	free(compact);
	char *line = in_memory(ZN_JSON_LINE, write_sample);
	assert_string_equal(line, "{\"a\":[1,\"x\"],\"b\":{},\"c\":[],\"d\":{\"e\":null}}\n");
	free(line);
	/* python3 -c 'import json,sys; json.dump(SAMPLE, sys.stdout, indent=2)' */
	char *pretty = in_memory(ZN_JSON_PRETTY | ZN_JSON_LINE, write_sample);
	assert_string_equal(pretty, "{\n"
				    "  \"a\": [\n"
				    "    1,\n"
				    "    \"x\"\n"
				    "  ],\n"
				    "  \"b\": {},\n"
				    "  \"c\": [],\n"
				    "  \"d\": {\n"
				    "    \"e\": null\n"
				    "  }\n"
				    "}\n");
	free(pretty);
}

static void write_values(struct zn_json *j)
{
	zn_json_begin_array(j);
	zn_json_string(j, "q\"b\\s\n\x01/é");
	zn_json_int(j, -7);
	zn_json_uint(j, UINT64_MAX);
	zn_json_double(j, 1.0 / 3);
	zn_json_double_exact(j, 0.1);
	zn_json_double(j, NAN);
	zn_json_double_exact(j, INFINITY);
	zn_json_bool(j, true);
	zn_json_bool(j, false);
	zn_json_printf(j, "%.3f", 2.5);
	zn_json_end_array(j);
}

static void test_values(void **state)
{
	(void)state;
	char *text = in_memory(0, write_values);
	assert_string_equal(text, "[\"q\\\"b\\\\s\\u000a\\u0001/é\",-7,18446744073709551615,"
				  "0.333333,0.10000000000000001,null,null,true,false,2.500]");
	free(text);
}

static void too_deep(struct zn_json *j)
{
	for (int i = 0; i <= ZN_JSON_MAX_DEPTH; i++)
		zn_json_begin_array(j);
	for (int i = 0; i <= ZN_JSON_MAX_DEPTH; i++)
		zn_json_end_array(j);
}

static void closed_twice(struct zn_json *j)
{
	zn_json_begin_object(j);
	zn_json_end_object(j);
	zn_json_end_object(j);
}

static void left_open(struct zn_json *j)
{
	zn_json_begin_object(j);
}

static void test_bad_nesting(void **state)
{
	(void)state;
	void (*const bad[])(struct zn_json *) = { too_deep, closed_twice, left_open };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct zn_json j;
		char *text = (char *)"not touched";
		size_t len = 1;
		assert_int_equal(zn_json_open_memory(&j, 0), 0);
		bad[i](&j);
		assert_int_equal(zn_json_close_memory(&j, &text, &len), -EINVAL);
		assert_null(text);
		assert_int_equal(len, 0);
	}
}

static void test_file(void **state)
{
	(void)state;
	FILE *f = tmpfile();
	char buf[256] = "";
	struct zn_json j;
	assert_non_null(f);
	zn_json_init(&j, f, ZN_JSON_LINE);
	write_sample(&j);
	zn_json_init(&j, f, ZN_JSON_LINE); /* a second JSON line */
	write_sample(&j);
	rewind(f);
	assert_int_equal(fread(buf, 1, sizeof(buf) - 1, f), 2 * 43);
	assert_string_equal(buf, "{\"a\":[1,\"x\"],\"b\":{},\"c\":[],\"d\":{\"e\":null}}\n"
				 "{\"a\":[1,\"x\"],\"b\":{},\"c\":[],\"d\":{\"e\":null}}\n");
	fclose(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_layouts),
		cmocka_unit_test(test_values),
		cmocka_unit_test(test_bad_nesting),
		cmocka_unit_test(test_file),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
