/* The aio config table and zn_aio_create's validation. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "zinc/aio.h"

static void test_defaults_are_deepspeeds(void **state)
{
	(void)state;
	struct zn_aio_config c;
	memset(&c, 0xff, sizeof(c));
	zn_aio_config_default(&c);
	assert_int_equal(c.block_size, 1048576);
	assert_int_equal(c.queue_depth, 8);
	assert_int_equal(c.intra_op_parallelism, 1);
	assert_false(c.single_submit);
	assert_true(c.overlap_events);
	assert_false(c.use_gds);
	assert_true(c.use_fixed_buffers);
	assert_false(c.sqpoll);
	assert_int_equal(zn_aio_config_validate(&c), 0);
}

static void test_set_and_alias(void **state)
{
	(void)state;
	struct zn_aio_config c;
	const struct zn_key_table *s = &zn_aio_key_table;
	zn_aio_config_default(&c);
	assert_int_equal(zn_keys_set(s, &c, "block_size", "128K"), 0);
	assert_int_equal(c.block_size, 131072);
	assert_int_equal(zn_keys_set(s, &c, "thread_count", "4"), 0);
	assert_int_equal(c.intra_op_parallelism, 4);
	assert_int_equal(zn_keys_set(s, &c, "overlap_events", "false"), 0);
	assert_false(c.overlap_events);
	assert_int_equal(zn_keys_set(s, &c, "queu_depth", "4"), -ENOENT);
	assert_non_null(strstr(zn_last_error(), "did you mean 'queue_depth'"));
	assert_int_equal(zn_keys_set(s, &c, "queue_depth", "4K"), -EINVAL);
	assert_int_equal(zn_keys_set(s, &c, "queue_depth", "-1"), -EINVAL);
	assert_int_equal(zn_keys_set(s, &c, "single_submit", "maybe"), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "aio.single_submit"));
	assert_int_equal(zn_keys_set(s, &c, "queue_depth", "0"), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "aio.queue_depth"));
	/* Formatting gives back text the parser accepts, for every key. */
	for (size_t i = 0; i < s->nkeys; i++) {
		char v[64];
		struct zn_aio_config d;
		zn_aio_config_default(&d);
		zn_keys_format(&s->keys[i], &c, v, sizeof(v));
		assert_int_equal(zn_keys_set(s, &d, s->keys[i].name, v), 0);
	}
}

/* Each invalid config is refused at create time, naming the key. */
static void test_invalid_rejected(void **state)
{
	(void)state;
	static const struct {
		const char *key, *value, *msg;
	} bad[] = {
		{ "queue_depth", NULL, "aio.queue_depth" },
		{ "intra_op_parallelism", NULL, "aio.intra_op_parallelism" },
		{ "block_size", NULL, "aio.block_size" },
		{ "use_gds", NULL, "GPUDirect Storage is not supported yet" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct zn_aio_config c;
		zn_aio_config_default(&c);
		switch (i) {
		case 0: c.queue_depth = 0; break;
		case 1: c.intra_op_parallelism = 0; break;
		case 2: c.block_size = 1000; break;
		case 3: c.use_gds = true; break;
		}
		assert_null(zn_aio_create(&c));
		if (!strstr(zn_last_error(), bad[i].msg))
			fail_msg("%s: message '%s' lacks '%s'", bad[i].key, zn_last_error(),
				 bad[i].msg);
	}
	assert_null(zn_aio_create(NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults_are_deepspeeds),
		cmocka_unit_test(test_set_and_alias),
		cmocka_unit_test(test_invalid_rejected),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
