/* The config file loader: YAML and DeepSpeed JSON in, positions in errors. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "zinc/configfile.h"

/* ---- helpers ------------------------------------------------------------ */

/* Log messages captured during one load. */
struct capture {
	int count[4]; /* per enum zn_log_level */
	char text[16][512];
	int n;
};

static void capture_sink(enum zn_log_level level, const char *msg, void *user)
{
	struct capture *c = user;

	c->count[level]++;
	if (c->n < (int)(sizeof(c->text) / sizeof(c->text[0])))
		snprintf(c->text[c->n++], sizeof(c->text[0]), "%s", msg);
}

/* The captured message containing `needle`, or NULL. */
static const char *captured(const struct capture *c, const char *needle)
{
	for (int i = 0; i < c->n; i++)
		if (strstr(c->text[i], needle))
			return c->text[i];
	return NULL;
}

static int mkdir_p(const char *path)
{
	char buf[4096];
	size_t len = strlen(path);

	if (len == 0 || len >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, len + 1);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0755) && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, 0755) && errno != EEXIST)
		return -errno;
	return 0;
}

/* A scratch path unique to this process: meson may run tests in parallel. */
static void scratch_path(char *buf, size_t len, const char *name)
{
	const char *dir = getenv("ZINC_TEST_DIR");

	if (!dir || !*dir)
		dir = getenv("TMPDIR");
	if (!dir || !*dir)
		dir = "/tmp";
	assert_int_equal(mkdir_p(dir), 0);
	snprintf(buf, len, "%s/config-%ld-%s", dir, (long)getpid(), name);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
	assert_int_equal(fclose(f), 0);
}

static int load(const char *text, struct zn_config *cfg)
{
	return zn_config_load_string(text, strlen(text), "t.yaml", cfg);
}

/* Assert the last error starts with "t.yaml:POS: " and contains `needle`. */
static void assert_error(const char *pos, const char *needle)
{
	char prefix[64];
	const char *msg = zn_last_error();

	snprintf(prefix, sizeof(prefix), "t.yaml:%s: ", pos);
	if (strncmp(msg, prefix, strlen(prefix)) != 0 || !strstr(msg, needle))
		fail_msg("expected '%s...%s', got '%s'", prefix, needle, msg);
}

static void assert_aio_default(const struct zn_aio_config *a)
{
	assert_int_equal(a->block_size, 1048576);
	assert_int_equal(a->queue_depth, 8);
	assert_int_equal(a->intra_op_parallelism, 1);
	assert_false(a->single_submit);
	assert_true(a->overlap_events);
	assert_false(a->use_gds);
}

/* ---- tests -------------------------------------------------------------- */

static void test_defaults_are_deepspeeds(void **state)
{
	struct zn_config cfg;

	(void)state;
	memset(&cfg, 0xa5, sizeof(cfg));
	zn_config_default(&cfg);
	assert_aio_default(&cfg.aio);
	/* zinc's own keys. */
	assert_true(cfg.aio.use_fixed_buffers);
	assert_false(cfg.aio.sqpoll);
	for (size_t i = 0; zn_config_section(i); i++) {
		const struct zn_cfg_section *sec = zn_config_section(i);
		assert_int_equal(sec->validate(zn_config_section_data(&cfg, sec)), 0);
	}

	/* The empty file and a comment-only file set nothing. */
	memset(&cfg, 0, sizeof(cfg));
	assert_int_equal(load("", &cfg), 0);
	assert_aio_default(&cfg.aio);
	memset(&cfg, 0, sizeof(cfg));
	assert_int_equal(load("# nothing yet\n", &cfg), 0);
	assert_aio_default(&cfg.aio);
}

static void test_section_table(void **state)
{
	struct zn_config cfg;
	size_t n = 0;

	(void)state;
	assert_ptr_equal(zn_config_section(0), &zn_aio_config_section);
	assert_ptr_equal(zn_config_section_data(&cfg, &zn_aio_config_section), &cfg.aio);
	assert_null(zn_config_section_data(&cfg, NULL));
	for (size_t i = 0; zn_config_section(i); i++, n++) {
		const struct zn_cfg_section *sec = zn_config_section(i);
		char *data = zn_config_section_data(&cfg, sec);
		/* A binding to the wrong member would overrun the struct. */
		assert_non_null(data);
		assert_true(data + sec->struct_size <= (char *)&cfg + sizeof(cfg));
	}
	assert_int_equal(n, 1);

	/* The ignored DeepSpeed keys are sorted, and none is a zinc section. */
	assert_non_null(zn_config_ignored_key(0));
	for (size_t i = 0; zn_config_ignored_key(i); i++) {
		const char *k = zn_config_ignored_key(i);
		if (i > 0 && strcmp(zn_config_ignored_key(i - 1), k) >= 0)
			fail_msg("ignored keys not sorted at '%s'", k);
		for (size_t j = 0; zn_config_section(j); j++)
			assert_string_not_equal(k, zn_config_section(j)->name);
	}
}

static const char yaml_text[] =
	"# zinc config\n"
	"train_batch_size: 16\n"
	"zero_optimization:\n"
	"  stage: 3\n"
	"  offload_param: {device: nvme, nvme_path: /local_nvme, buffer_size: 1e8}\n"
	"aio:\n"
	"  block_size: 256K\n"
	"  queue_depth: 32\n"
	"  intra_op_parallelism: 4\n"
	"  single_submit: yes\n"
	"  overlap_events: false\n"
	"  use_gds: false\n";

static const char json_text[] =
	"{\n"
	"  \"train_batch_size\": 16,\n"
	"  \"train_micro_batch_size_per_gpu\": \"auto\",\n"
	"  \"gradient_accumulation_steps\": 1,\n"
	"  \"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": 1e-4, "
	"\"betas\": [0.9, 0.999]}},\n"
	"  \"fp16\": {\"enabled\": true, \"loss_scale\": 0},\n"
	"  \"zero_optimization\": {\n"
	"    \"stage\": 3,\n"
	"    \"offload_optimizer\": {\"device\": \"nvme\", \"nvme_path\": \"/local_nvme\"},\n"
	"    \"offload_param\": {\"device\": \"nvme\", \"buffer_size\": 1e8},\n"
	"    \"stage3_max_live_parameters\": 1e9\n"
	"  },\n"
	"  \"aio\": {\n"
	"    \"block_size\": 2.62144e5,\n"
	"    \"queue_depth\": 32,\n"
	"    \"intra_op_parallelism\": 4,\n"
	"    \"single_submit\": true,\n"
	"    \"overlap_events\": false,\n"
	"    \"use_gds\": false\n"
	"  },\n"
	"  \"steps_per_print\": 10,\n"
	"  \"wall_clock_breakdown\": false\n"
	"}\n";

static void assert_sample_values(const struct zn_aio_config *a)
{
	assert_int_equal(a->block_size, 262144);
	assert_int_equal(a->queue_depth, 32);
	assert_int_equal(a->intra_op_parallelism, 4);
	assert_true(a->single_submit);
	assert_false(a->overlap_events);
	assert_false(a->use_gds);
	assert_true(a->use_fixed_buffers); /* untouched: default */
}

static void test_yaml_and_json_files_agree(void **state)
{
	struct zn_config y, j;
	struct capture cap = { 0 };
	char ypath[4096], jpath[4096];

	(void)state;
	scratch_path(ypath, sizeof(ypath), "zinc.yaml");
	scratch_path(jpath, sizeof(jpath), "ds_config.json");
	write_file(ypath, yaml_text);
	write_file(jpath, json_text);

	zn_log_set_sink(capture_sink, &cap, ZN_LOG_INFO);
	assert_int_equal(zn_config_load_file(ypath, &y), 0);
	/* Known DeepSpeed sections are not warnings, only INFO lines. */
	assert_int_equal(cap.count[ZN_LOG_WARN], 0);
	assert_int_equal(cap.count[ZN_LOG_INFO], 2);
	assert_non_null(captured(&cap, ":3:1: 'zero_optimization' is not used by zinc yet"));

	memset(&cap, 0, sizeof(cap));
	assert_int_equal(zn_config_load_file(jpath, &j), 0);
	assert_int_equal(cap.count[ZN_LOG_WARN], 0);
	assert_int_equal(cap.count[ZN_LOG_INFO], 8);
	assert_non_null(captured(&cap, ":7:3: 'zero_optimization' is not used by zinc yet"));
	zn_log_set_sink(NULL, NULL, ZN_LOG_WARN);

	assert_sample_values(&y.aio);
	assert_sample_values(&j.aio);
	assert_int_equal(unlink(ypath), 0);
	assert_int_equal(unlink(jpath), 0);
}

static void test_thread_count_alias(void **state)
{
	struct zn_config cfg;

	(void)state;
	assert_int_equal(load("aio:\n  thread_count: 3\n", &cfg), 0);
	assert_int_equal(cfg.aio.intra_op_parallelism, 3);
	assert_int_equal(load("{\"aio\": {\"thread_count\": 7}}", &cfg), 0);
	assert_int_equal(cfg.aio.intra_op_parallelism, 7);

	/* Both spellings at once set one field twice. */
	assert_int_equal(load("aio:\n  intra_op_parallelism: 2\n  thread_count: 3\n", &cfg),
			 -EINVAL);
	assert_error("3:3", "set twice");
}

struct bad_value {
	const char *text;
	const char *pos;    /* LINE:COLUMN of the value */
	const char *needle; /* the message must contain this too */
};

static const struct bad_value bad_values[] = {
	{ "aio:\n  queue_depth: 0\n", "2:16", "aio.queue_depth" },
	{ "aio:\n  intra_op_parallelism: 0\n", "2:25", "aio.intra_op_parallelism" },
	{ "aio:\n  block_size: 1000\n", "2:15", "aio.block_size" },
	{ "aio:\n  block_size: abc\n", "2:15", "aio.block_size" },
	/* In range but refused by validate(): the position is still the value's. */
	{ "aio:\n  block_size: 4097\n", "2:15", "aio.block_size: 4097 is not a multiple" },
	{ "aio:\n  queue_depth: 4\n  use_gds: true\n", "3:12",
	  "GPUDirect Storage is not supported yet" },
	{ "aio:\n  single_submit: maybe\n", "2:18", "aio.single_submit" },
	{ "aio:\n  queue_depth: auto\n", "2:16", "'auto'" },
	{ "aio:\n  queue_depth: \"\"\n", "2:16", "aio.queue_depth" },
	{ "{\"aio\": {\"queue_depth\": 0}}", "1:25", "aio.queue_depth" },
	{ "{\n  \"aio\": {\n    \"overlap_events\": \"sometimes\"\n  }\n}\n", "3:23",
	  "aio.overlap_events" },
};

static void test_bad_values(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bad_values) / sizeof(bad_values[0]); i++) {
		const struct bad_value *b = &bad_values[i];
		struct zn_config cfg;

		/* A failed load leaves the output alone. */
		memset(&cfg, 0x5a, sizeof(cfg));
		assert_int_equal(load(b->text, &cfg), -EINVAL);
		assert_error(b->pos, b->needle);
		assert_int_equal(cfg.aio.queue_depth, 0x5a5a5a5a);
	}
}

static void test_unknown_key_in_section(void **state)
{
	struct zn_config cfg;

	(void)state;
	assert_int_equal(load("aio:\n  queue_depth: 8\n  queu_depth: 8\n", &cfg), -ENOENT);
	assert_error("3:3", "did you mean 'queue_depth'");
	assert_int_equal(load("aio:\n  frobnicate: 1\n", &cfg), -ENOENT);
	assert_error("2:3", "unknown key 'frobnicate'");
}

static void test_unknown_top_level_key_warns(void **state)
{
	struct capture cap = { 0 };
	struct zn_config cfg;

	(void)state;
	zn_log_set_sink(capture_sink, &cap, ZN_LOG_INFO);
	assert_int_equal(load("train_batch_sise: 8\n"
			      "fp16: {enabled: true}\n"
			      "aio:\n"
			      "  queue_depth: 16\n"
			      "zzzz_qqqq_xxxx: [1, 2]\n",
			      &cfg),
			 0);
	zn_log_set_sink(NULL, NULL, ZN_LOG_WARN);

	/* Loading went on past the warnings. */
	assert_int_equal(cfg.aio.queue_depth, 16);
	assert_int_equal(cap.count[ZN_LOG_WARN], 2);
	assert_int_equal(cap.count[ZN_LOG_INFO], 1);
	assert_non_null(captured(&cap, "t.yaml:1:1: unknown top-level key 'train_batch_sise'"));
	assert_non_null(captured(&cap, "did you mean 'train_batch_size'?"));
	assert_non_null(captured(&cap, "t.yaml:2:1: 'fp16' is not used by zinc yet"));
	const char *far = captured(&cap, "t.yaml:5:1: unknown top-level key 'zzzz_qqqq_xxxx'");
	assert_non_null(far);
	assert_null(strstr(far, "did you mean"));
}

static void test_syntax_errors(void **state)
{
	struct zn_config cfg;

	(void)state;
	/* An unclosed flow sequence: libyaml notices at the end of input. */
	assert_int_equal(load("aio:\n  queue_depth: [1, 2\n", &cfg), -EINVAL);
	assert_error("3:1", "syntax error: did not find expected ',' or ']'");
	assert_non_null(strstr(zn_last_error(), "while parsing a flow sequence at 2:16"));

	/* A JSON file missing a comma between two members. */
	assert_int_equal(load("{\n  \"aio\": {\n    \"queue_depth\": \"8\"\n"
			      "    \"block_size\": 4096\n  }\n}\n",
			      &cfg),
			 -EINVAL);
	assert_error("4:5", "syntax error");

	/* A tab used for indentation. */
	assert_int_equal(load("aio:\n\tqueue_depth: 8\n", &cfg), -EINVAL);
	assert_error("2:1", "syntax error");

	/* Not UTF-8: the reader reports a byte offset, turned into a position. */
	assert_int_equal(load("aio:\n  queue_depth: \xff\n", &cfg), -EINVAL);
	assert_error("2:16", "invalid leading UTF-8 octet");

	/* A second document would be silently ignored. */
	assert_int_equal(load("aio: {queue_depth: 4}\n---\naio: {queue_depth: 8}\n", &cfg),
			 -EINVAL);
	assert_error("3:1", "second YAML document");
}

static void test_missing_file(void **state)
{
	struct zn_config cfg;
	char path[4096];

	(void)state;
	scratch_path(path, sizeof(path), "does-not-exist.yaml");
	assert_int_equal(zn_config_load_file(path, &cfg), -ENOENT);
	assert_non_null(strstr(zn_last_error(), path));
	assert_non_null(strstr(zn_last_error(), "No such file or directory"));

	/* A wrong path to an endless file stops at the size limit. */
	assert_int_equal(zn_config_load_file("/dev/zero", &cfg), -EFBIG);
	assert_non_null(strstr(zn_last_error(), "/dev/zero"));

	/* A directory is not a config file either. */
	char *slash = strrchr(path, '/');
	*slash = '\0';
	assert_int_equal(zn_config_load_file(path, &cfg), -EISDIR);
	assert_non_null(strstr(zn_last_error(), path));
}

static void test_duplicate_keys(void **state)
{
	struct zn_config cfg;

	(void)state;
	assert_int_equal(load("aio:\n  queue_depth: 8\n  block_size: 4096\n  queue_depth: 16\n",
			      &cfg),
			 -EINVAL);
	assert_error("4:3", "duplicate key 'queue_depth' (first given at line 2)");

	/* Whole sections, too. */
	assert_int_equal(load("aio: {queue_depth: 8}\naio: {queue_depth: 16}\n", &cfg), -EINVAL);
	assert_error("2:1", "duplicate key 'aio'");

	/* DeepSpeed refuses repeats at any depth, in sections zinc ignores too. */
	assert_int_equal(load("{\"zero_optimization\": {\"stage\": 1,\n"
			      " \"stage\": 2}}",
			      &cfg),
			 -EINVAL);
	assert_error("2:2", "duplicate key 'stage'");
}

static void test_wrong_node_kinds(void **state)
{
	struct zn_config cfg;

	(void)state;
	assert_int_equal(load("aio:\n  queue_depth:\n    value: 8\n", &cfg), -EINVAL);
	assert_error("3:5", "aio.queue_depth: expected a single value, found a mapping");
	assert_int_equal(load("aio:\n  queue_depth: [8]\n", &cfg), -EINVAL);
	assert_error("2:16", "aio.queue_depth: expected a single value, found a sequence");
	assert_int_equal(load("aio: 5\n", &cfg), -EINVAL);
	assert_error("1:6", "aio: expected a mapping");
	assert_int_equal(load("- aio\n", &cfg), -EINVAL);
	assert_error("1:1", "the top level must be a mapping");
	assert_int_equal(load("aio:\n  [a]: 1\n", &cfg), -EINVAL);
	assert_error("2:3", "keys must be scalars");
}

static void test_null_keeps_default(void **state)
{
	struct zn_config cfg;

	(void)state;
	assert_int_equal(load("aio:\n  queue_depth: ~\n  block_size: null\n"
			      "  single_submit:\n  intra_op_parallelism: 2\n",
			      &cfg),
			 0);
	assert_int_equal(cfg.aio.queue_depth, 8);
	assert_int_equal(cfg.aio.block_size, 1048576);
	assert_false(cfg.aio.single_submit);
	assert_int_equal(cfg.aio.intra_op_parallelism, 2);

	assert_int_equal(load("aio:\n", &cfg), 0);
	assert_aio_default(&cfg.aio);
	assert_int_equal(load("{\"aio\": null}", &cfg), 0);
	assert_aio_default(&cfg.aio);
}

static void test_value_spellings(void **state)
{
	struct zn_config cfg;

	(void)state;
	/* DeepSpeed writes counts as 1e8; quoted numbers are still numbers. */
	assert_int_equal(load("aio: {block_size: 8.192e3, queue_depth: \"64\", "
			      "single_submit: on, overlap_events: 0}\n",
			      &cfg),
			 0);
	assert_int_equal(cfg.aio.block_size, 8192);
	assert_int_equal(cfg.aio.queue_depth, 64);
	assert_true(cfg.aio.single_submit);
	assert_false(cfg.aio.overlap_events);

	/* A "\0" escape must not cut a key or value short. */
	assert_int_equal(load("aio: {\"queue_depth\\0x\": 4}\n", &cfg), -EINVAL);
	assert_error("1:7", "NUL");
	assert_int_equal(load("aio: {queue_depth: \"4\\0junk\"}\n", &cfg), -EINVAL);
	assert_error("1:20", "NUL");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults_are_deepspeeds),
		cmocka_unit_test(test_section_table),
		cmocka_unit_test(test_yaml_and_json_files_agree),
		cmocka_unit_test(test_thread_count_alias),
		cmocka_unit_test(test_bad_values),
		cmocka_unit_test(test_unknown_key_in_section),
		cmocka_unit_test(test_unknown_top_level_key_warns),
		cmocka_unit_test(test_syntax_errors),
		cmocka_unit_test(test_missing_file),
		cmocka_unit_test(test_duplicate_keys),
		cmocka_unit_test(test_wrong_node_kinds),
		cmocka_unit_test(test_null_keeps_default),
		cmocka_unit_test(test_value_spellings),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
