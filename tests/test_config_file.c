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
	for (size_t i = 0; zn_config_section(i, NULL); i++) {
		const struct zn_key_table *sec = zn_config_section(i, NULL);
		if (sec->validate)
			assert_int_equal(sec->validate(zn_config_section_data(&cfg, sec)), 0);
	}
	/* DeepSpeed's defaults of the training sections. */
	assert_int_equal(cfg.optimizer.type, ZN_OPT_ADAMW);
	assert_true(cfg.optimizer.params.betas[0] == 0.9 && cfg.optimizer.params.betas[1] == 0.999);
	assert_false(cfg.fp16.enabled);
	assert_true(cfg.fp16.loss_scale == 0);
	assert_int_equal(cfg.fp16.initial_scale_power, 16);
	assert_int_equal(cfg.fp16.loss_scale_window, 1000);
	assert_int_equal(cfg.fp16.hysteresis, 2);
	assert_true(cfg.fp16.min_loss_scale == 1);
	assert_int_equal(cfg.zero_optimization.stage, 0);
	assert_int_equal(cfg.zero_optimization.reduce_bucket_size, 500000000);
	assert_int_equal(cfg.zero_optimization.prefetch_bucket_size, 50000000);
	assert_int_equal(cfg.zero_optimization.param_persistence_threshold, 100000);
	assert_int_equal(cfg.zero_optimization.mics_shard_size, -1);
	assert_int_equal(cfg.zero_optimization.offload_param.buffer_count, 5);
	assert_int_equal(cfg.scheduler.params.warmup_num_steps, 1000);
	assert_true(cfg.scheduler.params.cos_min_ratio == 0.0001);
	assert_int_equal(cfg.steps_per_print, 10);
	assert_int_equal(cfg.train_batch_size, 0); /* auto */
	assert_int_equal(cfg.batch.train_batch_size, 0);

	/* The empty file and a comment-only file set nothing. */
	memset(&cfg, 0, sizeof(cfg));
	assert_int_equal(load("", &cfg), 0);
	assert_aio_default(&cfg.aio);
	memset(&cfg, 0, sizeof(cfg));
	assert_int_equal(load("# nothing yet\n", &cfg), 0);
	assert_aio_default(&cfg.aio);
}

/* --set: replaces a key, adds keys and whole sections, takes flow values,
 * and reports a bad override by its own text. */
static void test_overrides(void **state)
{
	(void)state;
	const char *tmp = getenv("TMPDIR");
	char path[4096];
	snprintf(path, sizeof(path), "%s/zinc-set-XXXXXX.yaml", tmp && *tmp ? tmp : "/tmp");
	int fd = mkstemps(path, 5);
	assert_true(fd >= 0);
	FILE *f = fdopen(fd, "w");
	assert_non_null(f);
	fputs("train_micro_batch_size_per_gpu: 2\n"
	      "optimizer: {type: AdamW, params: {lr: 0.001}}\n"
	      "zero_optimization:\n  stage: 2\n", f);
	fclose(f);
	struct zn_config c;
	const char *sets[] = {
		"zero_optimization.stage=3",                           /* replaced */
		"zero_optimization.offload_param.device=cpu",          /* new section */
		"optimizer.params.betas=[0.8, 0.9]",                   /* flow value */
		"bf16={enabled: true}",                                /* a mapping */
		"train_micro_batch_size_per_gpu=4",
	};
	assert_int_equal(zn_config_load_file_set(path, sets, 5, &c), 0);
	assert_int_equal(c.zero_optimization.stage, 3);
	assert_int_equal(c.zero_optimization.offload_param.device, ZN_OFFLOAD_CPU);
	assert_true(c.optimizer.params.betas[0] == 0.8 && c.optimizer.params.betas[1] == 0.9);
	assert_true(c.optimizer.params.lr == 0.001); /* untouched */
	assert_true(c.bf16.enabled);
	assert_int_equal(c.batch.micro_batch, 4);

	const char *typo[] = { "zero_optimization.offload_param.devcie=cpu" };
	assert_int_equal(zn_config_load_file_set(path, typo, 1, &c), -ENOENT);
	assert_non_null(strstr(zn_last_error(), "--set zero_optimization.offload_param.devcie=cpu"));
	assert_non_null(strstr(zn_last_error(), "device"));
	const char *bad[] = { "zero_optimization.stage=7" };
	assert_int_equal(zn_config_load_file_set(path, bad, 1, &c), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "--set zero_optimization.stage=7"));
	const char *noeq[] = { "zero_optimization.stage" };
	assert_int_equal(zn_config_load_file_set(path, noeq, 1, &c), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "KEY=VALUE"));
	const char *notsec[] = { "zero_optimization.stage.x=1" };
	assert_int_equal(zn_config_load_file_set(path, notsec, 1, &c), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "is not a section"));
	/* A failed load leaves the config alone. */
	assert_int_equal(c.zero_optimization.stage, 3);
	unlink(path);
}

static void test_section_table(void **state)
{
	struct zn_config cfg;
	size_t n = 0;

	(void)state;
	const char *path = NULL;
	bool seen_offload = false;

	zn_config_default(&cfg);
	assert_ptr_equal(zn_config_section(0, &path), zn_config_root());
	assert_string_equal(path, "");
	assert_ptr_equal(zn_config_section_data(&cfg, zn_config_root()), &cfg);
	assert_ptr_equal(zn_config_section_data(&cfg, &zn_aio_key_table), &cfg.aio);
	assert_ptr_equal(zn_config_section_data(&cfg, &zn_offload_param_key_table),
			 &cfg.zero_optimization.offload_param);
	assert_null(zn_config_section_data(&cfg, NULL));
	for (size_t i = 0; zn_config_section(i, &path); i++, n++) {
		const struct zn_key_table *sec = zn_config_section(i, &path);
		char *data = zn_config_section_data(&cfg, sec);
		/* A binding to the wrong member would overrun the struct. */
		assert_non_null(data);
		assert_true(data + sec->struct_size <= (char *)&cfg + sizeof(cfg));
		if (sec == &zn_offload_param_key_table) {
			assert_string_equal(path, "zero_optimization.offload_param");
			seen_offload = true;
		}
		/* Every default parses and every section key has a table. */
		for (size_t k = 0; k < sec->nkeys; k++) {
			const struct zn_key *key = &sec->keys[k];
			if (key->type == ZN_KEY_SECTION) {
				assert_non_null(key->sub);
				continue;
			}
			assert_non_null(key->def);
			assert_non_null(key->help);
			assert_true(zn_keys_is_default(key, data));
		}
	}
	assert_true(seen_offload);
	/* root, optimizer(+params), scheduler(+params), fp16, bf16, zero(+offload
	 * x2, loco), activation_checkpointing, data_types, aio, model, data,
	 * checkpoint(+parallel_write), device. */
	assert_int_equal(n, 19);

	/* The ignored DeepSpeed keys are sorted, and none is a zinc section. */
	assert_non_null(zn_config_ignored_key(0));
	for (size_t i = 0; zn_config_ignored_key(i); i++) {
		const char *k = zn_config_ignored_key(i);
		if (i > 0 && strcmp(zn_config_ignored_key(i - 1), k) >= 0)
			fail_msg("ignored keys not sorted at '%s'", k);
		assert_null(zn_keys_find(zn_config_root(), k));
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
	"    \"offload_param\": {\"device\": \"nvme\", \"nvme_path\": \"/nvme\", "
	"\"buffer_size\": 1e8},\n"
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
	/* Every section is read now: no warning, no INFO line. */
	assert_int_equal(cap.count[ZN_LOG_WARN], 0);
	assert_int_equal(cap.count[ZN_LOG_INFO], 0);

	memset(&cap, 0, sizeof(cap));
	assert_int_equal(zn_config_load_file(jpath, &j), 0);
	assert_int_equal(cap.count[ZN_LOG_WARN], 0);
	/* Only DeepSpeed's not-implemented-yet section is an INFO line. */
	assert_int_equal(cap.count[ZN_LOG_INFO], 1);
	assert_non_null(captured(&cap, ":22:3: 'wall_clock_breakdown' is not used by zinc: "));
	zn_log_set_sink(NULL, NULL, ZN_LOG_WARN);

	assert_int_equal(y.zero_optimization.stage, 3);
	assert_int_equal(y.zero_optimization.offload_param.device, ZN_OFFLOAD_NVME);
	assert_int_equal(y.zero_optimization.offload_param.buffer_size, 100000000);
	assert_int_equal(y.batch.train_batch_size, 16);
	assert_int_equal(y.batch.micro_batch, 16);
	assert_int_equal(y.batch.grad_accum, 1);
	assert_int_equal(j.batch.micro_batch, 16); /* "auto" from 16 / 1 / 1 */
	assert_true(j.optimizer.params.lr == 1e-4);
	assert_true(j.fp16.enabled);
	assert_int_equal(j.zero_optimization.offload_optimizer.device, ZN_OFFLOAD_NVME);
	assert_int_equal(j.zero_optimization.max_live_parameters, 1000000000);

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

/* Every key's error of a file at once (each with its line), the first's
 * code returned; a refused optimizer type is said without its
 * parameters'; one error keeps its own message. */
static void test_every_error_at_once(void **state)
{
	struct zn_config cfg;
	(void)state;
	memset(&cfg, 0x5a, sizeof(cfg));
	assert_int_equal(load("train_micro_batch_size_per_gpu: -3\n"
			      "aio:\n  queu_depth: 8\n  block_size: 12abc\n"
			      "optimizer: {type: OneBitAdam, params: {max_coeff: 2, freeze_step: 3}}\n"
			      "zero_optimization: {stage: 7}\n",
			      &cfg),
			 -EINVAL);
	const char *e = zn_last_error();
	assert_non_null(strstr(e, "5 errors:"));
	assert_non_null(strstr(e, ":1:33: train_micro_batch_size_per_gpu"));
	assert_non_null(strstr(e, ":3:3: aio: unknown key 'queu_depth'"));
	assert_non_null(strstr(e, ":4:15: aio.block_size"));
	assert_non_null(strstr(e, "OneBitAdam is refused"));
	assert_null(strstr(e, "max_coeff"));
	assert_non_null(strstr(e, ":6:28: zero_optimization.stage"));
	assert_int_equal(cfg.aio.queue_depth, 0x5a5a5a5a); /* nothing written */
	/* more than ten: the first ten, and how many there were */
	char text[1024] = "";
	for (int i = 0; i < 12; i++)
		snprintf(text + strlen(text), sizeof(text) - strlen(text), "bad_key_%d: 1\n", i);
	strcat(text, "zero_optimization: {stage: 9, bad_a: 1, bad_b: 2}\n");
	assert_int_equal(load(text, &cfg), -EINVAL); /* the first one's code */
	e = zn_last_error();
	assert_non_null(strstr(e, "3 errors:")); /* unknown top-level keys only warn */
	assert_non_null(strstr(e, "bad_a"));
	assert_non_null(strstr(e, "bad_b"));
	assert_int_equal(load("aio: {a1: 1, a2: 1, a3: 1, a4: 1, a5: 1, a6: 1, a7: 1, a8: 1, "
			      "a9: 1, a10: 1, a11: 1, a12: 1}\n", &cfg),
			 -ENOENT);
	e = zn_last_error();
	assert_non_null(strstr(e, "12 errors (the first 10):"));
	assert_non_null(strstr(e, "'a10'"));
	assert_null(strstr(e, "'a11'"));
	/* one error: its message as it always was */
	assert_int_equal(load("aio:\n  queu_depth: 8\n", &cfg), -ENOENT);
	assert_null(strstr(zn_last_error(), "errors"));
	assert_error("2:3", "did you mean 'queue_depth'");
}

static void test_unknown_top_level_key_warns(void **state)
{
	struct capture cap = { 0 };
	struct zn_config cfg;

	(void)state;
	zn_log_set_sink(capture_sink, &cap, ZN_LOG_INFO);
	assert_int_equal(load("tensorbord: {enabled: true}\n"
			      "wandb: {enabled: true}\n"
			      "aio:\n"
			      "  queue_depth: 16\n"
			      "zzzz_qqqq_xxxx: [1, 2]\n",
			      &cfg),
			 0);
	zn_log_set_sink(NULL, NULL, ZN_LOG_WARN);

	/* Loading went on past the warnings: the two unknown keys, and the
	 * one line listing what does nothing (wandb, enabled). */
	assert_int_equal(cfg.aio.queue_depth, 16);
	assert_int_equal(cap.count[ZN_LOG_WARN], 3);
	assert_int_equal(cap.count[ZN_LOG_INFO], 1);
	assert_non_null(captured(&cap, "t.yaml:1:1: unknown top-level key 'tensorbord'"));
	assert_non_null(captured(&cap, "did you mean 'tensorboard'?"));
	assert_non_null(captured(&cap, "t.yaml:2:1: 'wandb' is not used by zinc: "));
	assert_non_null(captured(&cap, "t.yaml: 1 key does nothing in zinc: wandb (a Weights"));
	const char *far = captured(&cap, "t.yaml:5:1: unknown top-level key 'zzzz_qqqq_xxxx'");
	assert_non_null(far);
	assert_null(strstr(far, "did you mean"));
}

/* What an override adds is named by the override, in errors and in
 * warnings alike; an empty file has no section to set a key in. */
static void test_override_positions(void **state)
{
	struct capture cap = { 0 };
	struct zn_config cfg;
	const char *unknown[] = { "trian_batch_size=8" }, *key[] = { "aio.queue_depth=4" };
	const char *text = "aio: {queue_depth: 2}\n";

	(void)state;
	zn_log_set_sink(capture_sink, &cap, ZN_LOG_INFO);
	/* A misspelt key zinc reads is an error, named by the override. */
	assert_int_equal(zn_config_load_string_set(text, strlen(text), "t.yaml", unknown, 1, &cfg),
			 -EINVAL);
	zn_log_set_sink(NULL, NULL, ZN_LOG_WARN);
	assert_non_null(strstr(zn_last_error(), "--set trian_batch_size=8: unknown top-level key "
						"'trian_batch_size'; did you mean "
						"'train_batch_size'?"));
	/* An empty file is an empty mapping that --set fills. */
	assert_int_equal(zn_config_load_string_set("", 0, "t.yaml", key, 1, &cfg), 0);
	assert_int_equal(cfg.aio.queue_depth, 4);
}

/* YAML aliases name one node twice: a mapping may be shared by sections. */
static void test_aliases(void **state)
{
	struct zn_config cfg;

	(void)state;
	assert_int_equal(load("x-common: &a {enabled: true}\n"
			      "bf16: *a\n",
			      &cfg),
			 0);
	assert_true(cfg.bf16.enabled);
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

	/* A JavaScript-style comment in a JSON file: named on its own line
	 * (libyaml would report the next member's). */
	assert_int_equal(load("{\n  // micro-batch\n  \"train_micro_batch_size_per_gpu\": 8\n}\n",
			      &cfg),
			 -EINVAL);
	assert_error("2:1", "'//' comments are neither JSON nor YAML");

	/* 200,000 nested lists: refused where they pass 100 levels (libyaml
	 * would not finish), quoted and commented brackets not counted. */
	enum { DEEP = 200000 };
	char *deep = malloc(2 * DEEP + 16);
	assert_non_null(deep);
	size_t n = (size_t)sprintf(deep, "{\"a\": ");
	memset(deep + n, '[', DEEP);
	memset(deep + n + DEEP, ']', DEEP);
	strcpy(deep + n + 2 * DEEP, "}");
	assert_int_equal(load(deep, &cfg), -EINVAL);
	assert_error("1:106", "nested deeper than 100 levels");
	/* An apostrophe inside a plain scalar opens no quoted string: the
	 * nesting after it counts all the same (it once hid 200,000 levels);
	 * the block mapping is the first level. */
	n = (size_t)sprintf(deep, "it's: ");
	memset(deep + n, '[', DEEP);
	memset(deep + n + DEEP, ']', DEEP);
	deep[n + 2 * DEEP] = 0;
	assert_int_equal(load(deep, &cfg), -EINVAL);
	assert_error("1:106", "nested deeper than 100 levels");
	free(deep);
	char quoted[1024];
	n = (size_t)sprintf(quoted, "aio: {queue_depth: 4} # [[[[\nx: \"");
	for (int i = 0; i < 150; i++)
		quoted[n++] = '{';
	strcpy(quoted + n, "\"\n");
	assert_int_equal(load(quoted, &cfg), 0);
	assert_int_equal(cfg.aio.queue_depth, 4);
}

/* Keys that only mean something together are checked when the file is
 * read (so `zinc config --check` says it too). */
/* Numbers too large for 64 bits are out of range, not "not a number". */
static void test_huge_numbers(void **state)
{
	struct zn_config cfg;

	(void)state;
	assert_int_equal(load("train_micro_batch_size_per_gpu: 18446744073709551616\n", &cfg),
			 -EINVAL);
	assert_error("1:33", "18446744073709551616 is out of range");
	assert_int_equal(load("zero_optimization: {sub_group_size: 1e300}\n", &cfg), -EINVAL);
	assert_error("1:37", "1e300 is out of range");
}

static void test_cross_key_checks(void **state)
{
	struct zn_config cfg;

	(void)state;
	assert_int_equal(load("activation_checkpointing: {cpu_checkpointing: true}\n", &cfg),
			 -EINVAL);
	assert_error("1:47", "needs activation_checkpointing.enabled: true");
	assert_int_equal(load("activation_checkpointing: {enabled: true, cpu_checkpointing: true}\n",
			      &cfg),
			 0);
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


/* A ds_config.json with every section zinc reads, and zinc's own. */
static const char full_json[] =
	"{\n"
	"  \"train_batch_size\": 32,\n"
	"  \"train_micro_batch_size_per_gpu\": 4,\n"
	"  \"gradient_accumulation_steps\": 8,\n"
	"  \"gradient_clipping\": 1.0,\n"
	"  \"steps_per_print\": 5,\n"
	"  \"optimizer\": {\"type\": \"adam\", \"params\": {\"lr\": 3e-4, \"betas\": [0.8, 0.95],\n"
	"                \"eps\": 1e-6, \"weight_decay\": 0.1, \"adam_w_mode\": false}},\n"
	"  \"scheduler\": {\"type\": \"WarmupDecayLR\", \"params\": {\"warmup_min_lr\": 0,\n"
	"                \"warmup_max_lr\": 3e-4, \"warmup_num_steps\": 100,\n"
	"                \"warmup_type\": \"linear\", \"total_num_steps\": 1000}},\n"
	"  \"fp16\": {\"enabled\": true, \"loss_scale\": 0, \"initial_scale_power\": 12,\n"
	"           \"loss_scale_window\": 500, \"hysteresis\": 3, \"consecutive_hysteresis\": true,\n"
	"           \"min_loss_scale\": 2, \"auto_cast\": false},\n"
	"  \"bf16\": {\"enabled\": false},\n"
	"  \"zero_optimization\": {\n"
	"    \"stage\": 3, \"contiguous_gradients\": true, \"overlap_comm\": true,\n"
	"    \"reduce_bucket_size\": \"auto\", \"allgather_bucket_size\": 2e8,\n"
	"    \"sub_group_size\": 1e8, \"stage3_prefetch_bucket_size\": \"auto\",\n"
	"    \"stage3_param_persistence_threshold\": \"auto\",\n"
	"    \"stage3_max_live_parameters\": 3e8, \"stage3_max_reuse_distance\": 3e8,\n"
	"    \"stage3_gather_16bit_weights_on_model_save\": true,\n"
	"    \"zero_quantized_weights\": false, \"mics_shard_size\": -1,\n"
	"    \"offload_param\": {\"device\": \"cpu\", \"pin_memory\": true},\n"
	"    \"offload_optimizer\": {\"device\": \"nvme\", \"nvme_path\": \"/nvme\",\n"
	"                          \"buffer_count\": 6}\n"
	"  },\n"
	"  \"aio\": {\"block_size\": 1048576, \"queue_depth\": 16},\n"
	"  \"model\": {\"type\": \"gpt2\", \"n_layer\": 4, \"n_head\": 4, \"n_embd\": 256,\n"
	"            \"vocab_size\": 256, \"seq_len\": 128},\n"
	"  \"data\": {\"train\": \"shards/train_*.bin\", \"val\": \"shards/val.bin\", \"seed\": 7},\n"
	"  \"checkpoint\": {\"dir\": \"ckpt\", \"every\": 100, \"tag_validation\": \"Fail\"},\n"
	"  \"device\": {\"type\": \"cuda\", \"memory_limit\": \"2G\"}\n"
	"}\n";

static void test_full_ds_config(void **state)
{
	struct capture cap = { 0 };
	struct zn_config c;

	(void)state;
	zn_log_set_sink(capture_sink, &cap, ZN_LOG_INFO);
	assert_int_equal(load(full_json, &c), 0);
	zn_log_set_sink(NULL, NULL, ZN_LOG_WARN);
	/* One line: the 16-bit gather at save and the tag check do nothing
	 * in zinc. */
	assert_int_equal(cap.count[ZN_LOG_WARN] + cap.count[ZN_LOG_INFO], 1);
	assert_non_null(captured(&cap, "2 keys do nothing in zinc: zero_optimization."
				       "stage3_gather_16bit_weights_on_model_save=true ("));
	assert_non_null(captured(&cap, "; checkpoint.tag_validation=Fail (zinc's ranks"));

	assert_int_equal(c.batch.train_batch_size, 32);
	assert_int_equal(c.batch.micro_batch, 4);
	assert_int_equal(c.batch.grad_accum, 8);
	assert_true(c.gradient_clipping == 1.0);
	assert_int_equal(c.steps_per_print, 5);
	assert_int_equal(c.optimizer.type, ZN_OPT_ADAM); /* case-insensitive, as DeepSpeed */
	assert_true(c.optimizer.params.lr == 3e-4);
	assert_true(c.optimizer.params.betas[0] == 0.8);
	assert_true(c.optimizer.params.betas[1] == 0.95);
	assert_true(c.optimizer.params.eps == 1e-6);
	assert_true(c.optimizer.params.weight_decay == 0.1);
	assert_false(c.optimizer.params.adam_w_mode);
	assert_int_equal(c.scheduler.type, ZN_SCHED_WARMUP_DECAY_LR);
	assert_int_equal(c.scheduler.params.warmup_type, ZN_WARMUP_LINEAR);
	assert_int_equal(c.scheduler.params.total_num_steps, 1000);
	assert_true(c.fp16.enabled);
	assert_int_equal(c.fp16.initial_scale_power, 12);
	assert_int_equal(c.fp16.loss_scale_window, 500);
	assert_int_equal(c.fp16.hysteresis, 3);
	assert_true(c.fp16.consecutive_hysteresis);
	assert_true(c.fp16.min_loss_scale == 2);
	const struct zn_zero_config *z = &c.zero_optimization;
	assert_int_equal(z->stage, 3);
	assert_true(z->overlap_comm);
	/* "auto" sizes follow the model, as the Hugging Face integration sets them. */
	assert_int_equal(z->reduce_bucket_size, 256 * 256);
	assert_int_equal(z->prefetch_bucket_size, (uint64_t)(0.9 * 256 * 256));
	assert_int_equal(z->param_persistence_threshold, 2560);
	assert_int_equal(z->allgather_bucket_size, 200000000);
	assert_int_equal(z->sub_group_size, 100000000);
	assert_int_equal(z->max_live_parameters, 300000000);
	assert_true(z->gather_16bit_weights_on_model_save);
	assert_int_equal(z->offload_param.device, ZN_OFFLOAD_CPU);
	assert_int_equal(z->offload_optimizer.device, ZN_OFFLOAD_NVME);
	assert_int_equal(z->offload_optimizer.buffer_count, 6);
	assert_string_equal(z->offload_optimizer.nvme_path, "/nvme");
	assert_int_equal(c.aio.queue_depth, 16);
	assert_int_equal(c.model.n_layer, 4);
	assert_int_equal(c.model.n_embd, 256);
	assert_int_equal(c.model.vocab_size, 256);
	assert_int_equal(c.model.seq_len, 128);
	assert_string_equal(c.data.train, "shards/train_*.bin");
	assert_int_equal(c.data.seed, 7);
	assert_string_equal(c.checkpoint.dir, "ckpt");
	assert_int_equal(c.checkpoint.every, 100);
	assert_int_equal(c.checkpoint.tag_validation, ZN_TAG_FAIL);
	assert_int_equal(c.device.type, ZN_DEVICE_CUDA);
	assert_int_equal(c.device.memory_limit, 2ull << 30);
}

struct batch_case {
	const char *text;
	int rc;
	uint32_t train, micro, accum; /* expected when rc == 0 */
	const char *needle;           /* expected in the message otherwise */
};

/* DeepSpeed's _set_batch_related_parameters, every branch (world size 1). */
static const struct batch_case batch_cases[] = {
	{ "train_batch_size: 32\ntrain_micro_batch_size_per_gpu: 4\n"
	  "gradient_accumulation_steps: 8\n", 0, 32, 4, 8, NULL },
	{ "train_batch_size: 32\ntrain_micro_batch_size_per_gpu: 4\n", 0, 32, 4, 8, NULL },
	{ "train_batch_size: 32\ngradient_accumulation_steps: 4\n", 0, 32, 8, 4, NULL },
	{ "train_micro_batch_size_per_gpu: 4\ngradient_accumulation_steps: 3\n", 0, 12, 4, 3,
	  NULL },
	{ "train_batch_size: 24\n", 0, 24, 24, 1, NULL },
	{ "train_micro_batch_size_per_gpu: 6\n", 0, 6, 6, 1, NULL },
	{ "train_batch_size: auto\ntrain_micro_batch_size_per_gpu: 2\n"
	  "gradient_accumulation_steps: auto\n", 0, 2, 2, 1, NULL },
	{ "", 0, 0, 0, 0, NULL },
	{ "train_batch_size: 32\ntrain_micro_batch_size_per_gpu: 4\n"
	  "gradient_accumulation_steps: 4\n", -EINVAL, 0, 0, 0,
	  "train_batch_size: 32 is not train_micro_batch_size_per_gpu 4 x "
	  "gradient_accumulation_steps 4 x world size 1" },
	/* 30 / 4 truncates to 7: DeepSpeed's assertion catches it, so does zinc. */
	{ "train_batch_size: 30\ntrain_micro_batch_size_per_gpu: 4\n", -EINVAL, 0, 0, 0,
	  "train_batch_size: 30 is not" },
	{ "gradient_accumulation_steps: 4\n", -EINVAL, 0, 0, 0, "given alone" },
	{ "train_batch_size: 0\n", -EINVAL, 0, 0, 0, "train_batch_size: 0 is out of range" },
};

static void test_batch_rule(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(batch_cases) / sizeof(batch_cases[0]); i++) {
		const struct batch_case *b = &batch_cases[i];
		struct zn_config c;
		int rc = load(b->text, &c);

		if (rc != b->rc)
			fail_msg("case %zu: rc %d, expected %d (%s)", i, rc, b->rc,
				 zn_last_error());
		if (rc) {
			if (!strstr(zn_last_error(), b->needle))
				fail_msg("case %zu: '%s' lacks '%s'", i, zn_last_error(),
					 b->needle);
			assert_non_null(strstr(zn_last_error(), "t.yaml:"));
			continue;
		}
		assert_int_equal(c.batch.train_batch_size, b->train);
		assert_int_equal(c.batch.micro_batch, b->micro);
		assert_int_equal(c.batch.grad_accum, b->accum);
	}

	/* Several ranks: the same rule with the world size in the product. */
	struct zn_config c;
	struct zn_batch out;
	zn_config_default(&c);
	c.train_batch_size = 64;
	c.train_micro_batch_size_per_gpu = 4;
	assert_int_equal(zn_config_resolve_batch(&c, 4, &out), 0);
	assert_int_equal(out.grad_accum, 4);
	assert_int_equal(out.world_size, 4);
	c.gradient_accumulation_steps = 2;
	assert_int_equal(zn_config_resolve_batch(&c, 4, &out), -EINVAL);
}

static void test_betas(void **state)
{
	struct zn_config c;

	(void)state;
	assert_int_equal(load("optimizer:\n  params:\n    betas: [0.5, 0.75]\n", &c), 0);
	assert_true(c.optimizer.params.betas[0] == 0.5 && c.optimizer.params.betas[1] == 0.75);
	assert_int_equal(load("optimizer:\n  params:\n    betas:\n      - 0.25\n      - 0.5\n",
			      &c),
			 0);
	assert_true(c.optimizer.params.betas[0] == 0.25 && c.optimizer.params.betas[1] == 0.5);
	/* "auto": the Hugging Face Trainer's defaults (learning_rate 5e-5). */
	assert_int_equal(load("optimizer: {params: {betas: auto, lr: auto}}\n", &c), 0);
	assert_true(c.optimizer.params.betas[1] == 0.999 && c.optimizer.params.lr == 5e-5);

	assert_int_equal(load("optimizer:\n  params:\n    betas: [0.9]\n", &c), -EINVAL);
	assert_error("3:12", "optimizer.params.betas: expected a list of two numbers, found 1 item");
	assert_int_equal(load("optimizer:\n  params:\n    betas: [0.9, 0.99, 0.999]\n", &c),
			 -EINVAL);
	assert_error("3:12", "found 3 items");
	assert_int_equal(load("optimizer:\n  params:\n    betas: [0.9, x]\n", &c), -EINVAL);
	assert_error("3:12", "optimizer.params.betas: '0.9, x' is not a list of two numbers");
	assert_int_equal(load("optimizer:\n  params:\n    betas: [0.9, 1.5]\n", &c), -EINVAL);
	assert_error("3:12", "optimizer.params.betas: 0.9, 1.5 is out of range");
	assert_int_equal(load("optimizer:\n  params:\n    betas: [[0.9], 0.9]\n", &c), -EINVAL);
	assert_error("3:12", "nested a sequence");
	assert_int_equal(load("optimizer:\n  params:\n    betas: {a: 1}\n", &c), -EINVAL);
	assert_error("3:12", "expected a list of two numbers, found a mapping");
}

static const struct bad_value nested_bad[] = {
	/* Messages name the full key path and point at the value. */
	{ "zero_optimization:\n  stage: 3\n  offload_param:\n    buffer_count: 0\n", "4:19",
	  "zero_optimization.offload_param.buffer_count: 0 is out of range" },
	{ "{\"zero_optimization\": {\"stage\": 3,\n  \"offload_param\": {\"buffer_count\": "
	  "\"many\"}}}",
	  "2:37", "zero_optimization.offload_param.buffer_count: 'many'" },
	{ "zero_optimization:\n  offload_optimizer:\n    device: nvme\n", "2:3",
	  "zero_optimization.offload_optimizer.nvme_path: required" },
	{ "zero_optimization:\n  offload_optimizer:\n    ratio: 0.5\n", "3:12",
	  "zero_optimization.offload_optimizer.ratio: 0.5 is not supported yet" },
	/* The type is checked before the parameters only that type takes. */
	{ "optimizer:\n  params: {freeze_step: 400, cuda_aware: false}\n  type: OneBitAdam\n",
	  "3:9", "optimizer.type: OneBitAdam is refused: it compresses the gradients" },
	{ "optimizer: {type: ZeroOneAdam, params: {var_freeze_step: 10}}\n", "1:19",
	  "optimizer.type: ZeroOneAdam is refused" },
	{ "optimizer: {params: {max_coeff: 0.3}, type: OneBitLamb}\n", "1:45",
	  "optimizer.type: OneBitLamb is refused" },
	{ "scheduler: {params: {cycle_min_lr: 0.1}, type: OneCycle}\n", "1:21",
	  "scheduler.params.cycle_max_lr: OneCycle needs it" },
	{ "scheduler: {type: WarmupLR, params: {cycle_max_lr: 0.1}}\n", "1:52",
	  "scheduler.params.cycle_max_lr: WarmupLR does not take it" },
	{ "scheduler: {type: OneCycle, params: {cycle_min_lr: 0, cycle_max_lr: 1, "
	  "warmup_num_steps: 5}}\n", "1:90",
	  "scheduler.params.warmup_num_steps: OneCycle does not take it" },
	{ "scheduler: {type: LRRangeTest, params: {lr_range_test_step_size: 0}}\n", "1:66",
	  "scheduler.params.lr_range_test_step_size: 0 is out of range" },
	{ "optimizer: {type: SGD, params: {betas: [0.8, 0.9]}}\n", "1:40",
	  "optimizer.params.betas: SGD does not take it" },
	{ "optimizer: {type: SGD, params: {nesterov: true, momentum: 0}}\n", "1:43",
	  "optimizer.params.nesterov: Nesterov momentum needs momentum > 0" },
	{ "optimizer: {type: AdamW, params: {max_coeff: 2}}\n", "1:46",
	  "optimizer.params.max_coeff: AdamW does not take it" },
	{ "optimizer: {type: Lamb, params: {min_coeff: 2, max_coeff: 1}}\n", "1:45",
	  "optimizer.params.min_coeff: 2 is above max_coeff 1" },
	{ "zero_optimization:\n  stage: 4\n", "2:10", "zero_optimization.stage: 4 is out of range" },
	{ "optimizer:\n  type: Lion\n", "2:9", "optimizer.type: Lion is not supported yet" },
	{ "optimizer:\n  type: SGD2\n", "2:9", "optimizer.type: 'SGD2' is not one of" },
	{ "optimizer:\n  params:\n    lr: -1\n", "3:9", "optimizer.params.lr: -1 is out of range" },
	{ "scheduler:\n  type: OneCycle\n", "1:1", "scheduler.params.cycle_min_lr: OneCycle needs it" },
	{ "scheduler:\n  type: WarmupCosineLR\n  params: {warmup_max_lr: 0.1}\n", "3:27",
	  "scheduler.params.warmup_max_lr: WarmupCosineLR does not take it" },
	{ "scheduler:\n  params:\n    warmup_type: exp\n", "3:18",
	  "scheduler.params.warmup_type: 'exp' is not one of: log, linear" },
	{ "fp16: {enabled: true}\nbf16: {enabled: true}\n", "2:17", "both enabled" },
	{ "fp16:\n  hysteresis: 0\n", "2:15", "fp16.hysteresis: 0 is out of range" },
	{ "model:\n  n_head: 5\n", "1:1", "model.n_embd: 768 is not a multiple of n_head 5" },
	{ "device:\n  type: tpu\n", "2:9", "device.type: 'tpu' is not one of: cpu, cuda" },
	{ "gradient_clipping: -1\n", "1:20", "gradient_clipping: -1 is out of range" },
	{ "steps_per_print: [1]\n", "1:18", "steps_per_print: expected a single value" },
};

static void test_nested_errors(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(nested_bad) / sizeof(nested_bad[0]); i++) {
		struct zn_config c;
		memset(&c, 0x5a, sizeof(c));
		if (load(nested_bad[i].text, &c) != -EINVAL)
			fail_msg("case %zu loaded: %s", i, nested_bad[i].text);
		assert_error(nested_bad[i].pos, nested_bad[i].needle);
		assert_int_equal(c.aio.queue_depth, 0x5a5a5a5a); /* untouched */
	}
}

static const struct bad_value unsupported[] = {
	{ "zero_optimization:\n  zero_quantized_weights: true\n", "2:27",
	  "zero_optimization.zero_quantized_weights: true is not supported yet" },
	{ "zero_optimization:\n  mics_shard_size: 8\n", "2:20",
	  "zero_optimization.mics_shard_size: 8 is not supported yet" },
	{ "zero_optimization:\n  zeropp_loco_param: {err_beta: 0.8}\n", "2:3",
	  "zero_optimization.zeropp_loco_param: not supported yet" },
	{ "bf16:\n  bf16_optimizer_states: true\n", "2:26",
	  "bf16.bf16_optimizer_states: true is not supported yet" },
	{ "zero_optimization: {zenflow: {topk_ratio: 0.1}}\n", "1:21",
	  "zero_optimization.zenflow: not supported yet" },
	{ "{\"zero_optimization\": {\"stage3_module_granularity_threshold\": 100}}", "1:63",
	  "stage3_module_granularity_threshold: 100 is not supported yet" },
	{ "fp16:\n  auto_cast: true\n", "2:14", "fp16.auto_cast: true is not supported yet" },
	{ "optimizer: {params: {amsgrad: true}}\n", "1:31", "optimizer.params.amsgrad: true" },
	{ "checkpoint:\n  parallel_write: {pipeline_stage: true}\n", "2:3",
	  "checkpoint.parallel_write: not supported yet" },
	{ "checkpoint:\n  load_universal: true\n", "2:19", "not supported yet" },
};

static void test_not_supported_yet(void **state)
{
	struct zn_config c;

	(void)state;
	for (size_t i = 0; i < sizeof(unsupported) / sizeof(unsupported[0]); i++) {
		if (load(unsupported[i].text, &c) != -EINVAL)
			fail_msg("case %zu loaded: %s", i, unsupported[i].text);
		assert_error(unsupported[i].pos, unsupported[i].needle);
	}
	/* The same keys at their defaults load: a ds_config.json may spell
	 * defaults out. */
	assert_int_equal(load("zero_optimization:\n  zero_quantized_weights: false\n"
			      "  mics_shard_size: -1\n  cpu_offload: false\n"
			      "  stage3_module_granularity_threshold: 0\n"
			      "  zeropp_loco_param: null\nfp16: {auto_cast: false}\n",
			      &c),
			 0);
}

static void test_unknown_nested_keys(void **state)
{
	struct zn_config c;

	(void)state;
	assert_int_equal(load("zero_optimization:\n  offload_param:\n    bufer_count: 4\n", &c),
			 -ENOENT);
	assert_error("3:5", "zero_optimization.offload_param: unknown key 'bufer_count'; did "
			    "you mean 'buffer_count'?");
	assert_int_equal(load("zero_optimization:\n  ofload_param: {}\n", &c), -ENOENT);
	assert_error("2:3", "zero_optimization: unknown key 'ofload_param'; did you mean "
			    "'offload_param'?");
	assert_int_equal(load("optimizer:\n  params:\n    beta: [0.9, 0.9]\n", &c), -ENOENT);
	assert_error("3:5", "optimizer.params: unknown key 'beta'; did you mean 'betas'?");
	assert_int_equal(load("scheduler: {params: {warmup_num_step: 10}}\n", &c), -ENOENT);
	assert_error("1:22", "did you mean 'warmup_num_steps'?");
	assert_int_equal(load("model: {n_layers: 2}\n", &c), -ENOENT);
	assert_error("1:9", "model: unknown key 'n_layers'; did you mean 'n_layer'?");
	/* The stage3_ names and DeepSpeed's field names are one key. */
	assert_int_equal(load("zero_optimization:\n  stage3_prefetch_bucket_size: 10\n"
			      "  prefetch_bucket_size: 20\n",
			      &c),
			 -EINVAL);
	assert_error("3:3", "zero_optimization.stage3_prefetch_bucket_size: set twice");
	assert_int_equal(load("zero_optimization: {stage3_gather_fp16_weights_on_model_save: "
			      "true}\n",
			      &c),
			 0);
	assert_true(c.zero_optimization.gather_16bit_weights_on_model_save);
	/* bfloat16 is DeepSpeed's older name of the bf16 section. */
	assert_int_equal(load("bfloat16: {enabled: true}\n", &c), 0);
	assert_true(c.bf16.enabled);
	assert_int_equal(load("bfloat16: {enabled: true}\nbf16: {enabled: true}\n", &c), -EINVAL);
	assert_error("2:1", "bf16: set twice");

	/* A typo of a section zinc reads would train without it: an error
	 * with the nearest. */
	assert_int_equal(load("zero_optimisation: {stage: 3}\n", &c), -EINVAL);
	assert_error("1:1", "unknown top-level key 'zero_optimisation'; did you mean "
			    "'zero_optimization'?");
	assert_int_equal(load("optimiser: {}\n", &c), -EINVAL);
	assert_error("1:1", "did you mean 'optimizer'?");
}

static void test_auto_values(void **state)
{
	struct zn_config c;

	(void)state;
	/* Without a model the sizes stay auto (0) for the engine to size. */
	assert_int_equal(load("model: ~\nzero_optimization: {reduce_bucket_size: auto}\n"
			      "fp16: {enabled: auto}\ngradient_clipping: auto\n"
			      "scheduler: {type: WarmupDecayLR, params: {total_num_steps: auto,"
			      " warmup_max_lr: auto}}\n",
			      &c),
			 0);
	/* model defaults to GPT-2 124M's n_embd 768. */
	assert_int_equal(c.zero_optimization.reduce_bucket_size, 768 * 768);
	assert_false(c.fp16.enabled);
	assert_true(c.gradient_clipping == 1.0); /* the Trainer's max_grad_norm */
	assert_int_equal(c.scheduler.params.total_num_steps, 0);
	assert_true(c.scheduler.params.warmup_max_lr == 0.001); /* optimizer.params.lr's */
	/* zn_config_resolve_auto leaves given values alone. */
	c.zero_optimization.reduce_bucket_size = UINT64_MAX;
	c.zero_optimization.prefetch_bucket_size = 123;
	c.model.n_embd = 10;
	zn_config_resolve_auto(&c);
	assert_int_equal(c.zero_optimization.reduce_bucket_size, 100);
	assert_int_equal(c.zero_optimization.prefetch_bucket_size, 123);
	/* The ds_config.json the Hugging Face docs give for ZeRO-3 loads as it is. */
	assert_int_equal(load("{\"fp16\": {\"enabled\": \"auto\", \"loss_scale\": 0,"
			      " \"loss_scale_window\": 1000, \"initial_scale_power\": 16,"
			      " \"hysteresis\": 2, \"min_loss_scale\": 1},"
			      " \"bf16\": {\"enabled\": \"auto\"},"
			      " \"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": \"auto\","
			      " \"betas\": \"auto\", \"eps\": \"auto\", \"weight_decay\": \"auto\"}},"
			      " \"scheduler\": {\"type\": \"WarmupLR\", \"params\": {"
			      "\"warmup_min_lr\": \"auto\", \"warmup_max_lr\": \"auto\","
			      " \"warmup_num_steps\": \"auto\"}},"
			      " \"zero_optimization\": {\"stage\": 3, \"offload_optimizer\": "
			      "{\"device\": \"cpu\", \"pin_memory\": true}, \"offload_param\": "
			      "{\"device\": \"cpu\", \"pin_memory\": true}, \"overlap_comm\": true,"
			      " \"contiguous_gradients\": true, \"sub_group_size\": 1e9,"
			      " \"reduce_bucket_size\": \"auto\","
			      " \"stage3_prefetch_bucket_size\": \"auto\","
			      " \"stage3_param_persistence_threshold\": \"auto\","
			      " \"stage3_max_live_parameters\": 1e9, \"stage3_max_reuse_distance\": 1e9,"
			      " \"stage3_gather_16bit_weights_on_model_save\": true},"
			      " \"gradient_accumulation_steps\": \"auto\", \"gradient_clipping\": \"auto\","
			      " \"steps_per_print\": 2000, \"train_batch_size\": \"auto\","
			      " \"train_micro_batch_size_per_gpu\": \"auto\", \"wall_clock_breakdown\": false}",
			      &c),
			 0);
	assert_int_equal(c.scheduler.params.warmup_num_steps, 0);
	assert_int_equal(c.batch.train_batch_size, 0); /* not configured: all auto */
	assert_int_equal(c.zero_optimization.param_persistence_threshold, 7680);
	assert_int_equal(c.zero_optimization.prefetch_bucket_size, (uint64_t)(0.9 * 768 * 768));
	/* For these two an explicit 0 means none, as in DeepSpeed, not auto. */
	assert_int_equal(load("zero_optimization: {stage: 3, stage3_param_persistence_threshold: 0,"
			      " stage3_prefetch_bucket_size: 0}\n", &c), 0);
	assert_int_equal(c.zero_optimization.param_persistence_threshold, 0);
	assert_int_equal(c.zero_optimization.prefetch_bucket_size, 0);

	/* DeepSpeed drops "auto" on every key of its pydantic sections: the
	 * default stands, and the load records it. */
	assert_int_equal(load("zero_optimization: {stage: auto, overlap_comm: auto}\n", &c), 0);
	assert_int_equal(c.zero_optimization.stage, 0);
	assert_true(zn_config_key_auto(&c, "zero_optimization.stage"));
	assert_true(zn_config_key_given(&c, "zero_optimization.overlap_comm"));
	assert_false(zn_config_key_given(&c, "zero_optimization.sub_group_size"));
	/* Keys of other sections refuse it with a clear message. */
	assert_int_equal(load("aio: {queue_depth: auto}\n", &c), -EINVAL);
	assert_error("1:20", "'auto' is not accepted for this key");
}

/* Load `text` with `sets` overrides, warnings captured in `cap`. */
static int load_set(const char *text, const char *const *sets, size_t n, struct capture *cap,
		    struct zn_config *c)
{
	if (cap)
		zn_log_set_sink(capture_sink, cap, ZN_LOG_INFO);
	int rc = zn_config_load_string_set(text, strlen(text), "t.yaml", sets, n, c);
	zn_log_set_sink(NULL, NULL, ZN_LOG_WARN);
	return rc;
}

/* Each "auto" as the Hugging Face Trainer fills it, one rule at a time. */
static void test_hf_auto_rules(void **state)
{
	struct zn_config c;
	char line[4096];

	(void)state;
	/* The schedule's peak is the optimizer's lr, whatever sets it. */
	static const char linked[] =
		"optimizer: {type: AdamW, params: {lr: 2e-4}}\n"
		"scheduler: {type: WarmupDecayLR, params: {warmup_max_lr: auto, total_num_steps: "
		"auto}}\n";
	assert_int_equal(load(linked, &c), 0);
	assert_true(c.scheduler.params.warmup_max_lr == 2e-4);
	const char *lr[] = { "optimizer.params.lr=3e-5" };
	assert_int_equal(load_set(linked, lr, 1, NULL, &c), 0);
	assert_true(c.optimizer.params.lr == 3e-5 && c.scheduler.params.warmup_max_lr == 3e-5);
	assert_true(zn_config_key_auto(&c, "scheduler.params.warmup_max_lr"));
	assert_false(zn_config_key_auto(&c, "optimizer.params.lr"));
	assert_true(zn_config_key_given(&c, "optimizer.params.lr"));
	assert_int_equal(c.scheduler.params.total_num_steps, 0); /* the run's, later */
	/* Both auto: the Trainer's learning_rate default, in both. */
	assert_int_equal(load("optimizer: {params: {lr: auto}}\n"
			      "scheduler: {type: WarmupLR, params: {warmup_max_lr: auto}}\n", &c),
			 0);
	assert_true(c.optimizer.params.lr == 5e-5 && c.scheduler.params.warmup_max_lr == 5e-5);
	/* A given peak is not touched. */
	assert_int_equal(load("optimizer: {params: {lr: 1e-4}}\n"
			      "scheduler: {type: WarmupLR, params: {warmup_max_lr: 0.01}}\n", &c),
			 0);
	assert_true(c.scheduler.params.warmup_max_lr == 0.01);
	/* Clipping: the Trainer's max_grad_norm 1.0; the Trainer's zeros. */
	assert_int_equal(load("gradient_clipping: auto\nscheduler: {type: WarmupLR, params: "
			      "{warmup_min_lr: auto, warmup_num_steps: auto}}\n"
			      "optimizer: {params: {weight_decay: auto, eps: auto}}\n", &c),
			 0);
	assert_true(c.gradient_clipping == 1.0 && c.scheduler.params.warmup_min_lr == 0);
	assert_int_equal(c.scheduler.params.warmup_num_steps, 0);
	assert_true(c.optimizer.params.weight_decay == 0 && c.optimizer.params.eps == 1e-8);
	/* The batch identity: any two give the third, "auto" counting as
	 * absent. */
	assert_int_equal(load("train_batch_size: 24\ntrain_micro_batch_size_per_gpu: auto\n"
			      "gradient_accumulation_steps: 3\n", &c),
			 0);
	assert_int_equal(c.batch.micro_batch, 8);
	assert_int_equal(load("train_batch_size: auto\ntrain_micro_batch_size_per_gpu: 4\n"
			      "gradient_accumulation_steps: 2\n", &c),
			 0);
	assert_int_equal(c.batch.train_batch_size, 8);
	assert_int_equal(load("train_batch_size: 12\ntrain_micro_batch_size_per_gpu: 4\n"
			      "gradient_accumulation_steps: auto\n", &c),
			 0);
	assert_int_equal(c.batch.grad_accum, 3);
	/* The hidden size: hidden^2 for the reduce bucket at any stage; the
	 * stage-3 two at stage 3 only (DeepSpeed's defaults below it). */
	static const char hidden[] =
		"model: {n_embd: 64, n_head: 4}\n"
		"zero_optimization: {stage: %d, reduce_bucket_size: auto, "
		"stage3_prefetch_bucket_size: auto, stage3_param_persistence_threshold: auto}\n";
	char text[512];
	snprintf(text, sizeof(text), hidden, 3);
	assert_int_equal(load(text, &c), 0);
	assert_int_equal(c.zero_optimization.reduce_bucket_size, 64 * 64);
	assert_int_equal(c.zero_optimization.prefetch_bucket_size, (uint64_t)(0.9 * 64 * 64));
	assert_int_equal(c.zero_optimization.param_persistence_threshold, 640);
	snprintf(text, sizeof(text), hidden, 2);
	assert_int_equal(load(text, &c), 0);
	assert_int_equal(c.zero_optimization.reduce_bucket_size, 64 * 64);
	assert_int_equal(c.zero_optimization.prefetch_bucket_size, 50000000);
	assert_int_equal(c.zero_optimization.param_persistence_threshold, 100000);
	/* A llama's hidden size comes from its config.json: the sizes stay
	 * auto until the trainer (or the plan) knows it. */
	assert_int_equal(load("model: {type: llama}\nzero_optimization: {stage: 3, "
			      "reduce_bucket_size: auto, stage3_param_persistence_threshold: "
			      "auto}\n", &c),
			 0);
	assert_true(c.zero_optimization.reduce_bucket_size == UINT64_MAX);
	zn_config_resolve_hidden(&c, 3072);
	assert_int_equal(c.zero_optimization.reduce_bucket_size, 3072ull * 3072);
	assert_int_equal(c.zero_optimization.param_persistence_threshold, 30720);

	/* One line says what each became, and from what. */
	assert_int_equal(load_set(linked, lr, 1, NULL, &c), 0);
	assert_int_equal(zn_config_auto_report(&c, line, sizeof(line)), 2);
	assert_non_null(strstr(line, "scheduler.params.warmup_max_lr=3e-05 (optimizer.params.lr)"));
	assert_non_null(strstr(line, "scheduler.params.total_num_steps="));
	assert_int_equal(load("a_key_zinc_does_not_know: 1\n", &c), 0);
	assert_int_equal(zn_config_auto_report(&c, line, sizeof(line)), 0);
	assert_string_equal(line, "");
	/* DeepSpeed drops "auto" on its pydantic sections' keys. */
	assert_int_equal(load("zero_optimization: {stage: 3, "
			      "stage3_gather_16bit_weights_on_model_save: auto}\n"
			      "bf16: {enabled: auto}\n", &c),
			 0);
	assert_false(c.zero_optimization.gather_16bit_weights_on_model_save || c.bf16.enabled);
	assert_int_equal(zn_config_auto_report(&c, line, sizeof(line)), 2);
	assert_non_null(strstr(line, "bf16.enabled=false (off: zinc has no --bf16"));
	assert_non_null(strstr(line, "save=false (DeepSpeed's default"));
	/* The defaults unlike DeepSpeed's that apply to a stage-3 file without
	 * overlap_comm or gradient_clipping. */
	assert_int_equal(zn_config_defaults_report(&c, line, sizeof(line)), 2);
	assert_non_null(strstr(line, "zero_optimization.overlap_comm false (DeepSpeed: true at "
				     "stage 3)"));
	assert_non_null(strstr(line, "gradient_clipping 0"));
	assert_int_equal(load("gradient_clipping: 0\nzero_optimization: {stage: 3, overlap_comm: "
			      "false}\n", &c),
			 0);
	assert_int_equal(zn_config_defaults_report(&c, line, sizeof(line)), 0);
	assert_int_equal(load("optimizer: {params: {weight_decay: 0.1}}\n", &c), 0);
	assert_int_equal(zn_config_defaults_report(&c, line, sizeof(line)), 2);
	assert_non_null(strstr(line, "weight_decay_params matrices"));
}

/* DeepSpeed's other spellings and placements, each read with its meaning. */
static void test_deepspeed_spellings(void **state)
{
	struct zn_config c;
	(void)state;

	/* Deprecated keys with a replacement, read as it with a warning. */
	struct capture cap = { 0 };
	assert_int_equal(load_set("zero_optimization: {stage: 2, cpu_offload: true}\n", NULL, 0,
				  &cap, &c),
			 0);
	assert_int_equal(c.zero_optimization.offload_optimizer.device, ZN_OFFLOAD_CPU);
	assert_non_null(captured(&cap, "cpu_offload is deprecated by DeepSpeed; read as "
				       "offload_optimizer.device: cpu"));
	memset(&cap, 0, sizeof(cap));
	assert_int_equal(load_set("zero_optimization: {stage: 3, cpu_offload_param: true, "
				  "cpu_offload: true}\n", NULL, 0, &cap, &c),
			 0);
	assert_int_equal(c.zero_optimization.offload_param.device, ZN_OFFLOAD_CPU);
	assert_int_equal(cap.count[ZN_LOG_WARN], 2);
	/* Deprecated and its replacement together: refused, as DeepSpeed does. */
	assert_int_equal(load("zero_optimization: {stage: 2, cpu_offload: true, "
			      "offload_optimizer: {device: cpu}}\n", &c),
			 -EINVAL);
	assert_error("1:44", "cpu_offload: given with offload_optimizer");
	/* DeepSpeed reads cpu_offload_use_pin_memory nowhere: a listed no-op. */
	memset(&cap, 0, sizeof(cap));
	assert_int_equal(load_set("zero_optimization: {cpu_offload_use_pin_memory: true}\n", NULL,
				  0, &cap, &c),
			 0);
	assert_non_null(captured(&cap, "1 key does nothing in zinc: zero_optimization."
				       "cpu_offload_use_pin_memory=true (deprecated"));
	/* The 16-bit gather: the stage3_ name, the field name, the fp16 name. */
	static const char *const gather[] = { "stage3_gather_16bit_weights_on_model_save",
					      "gather_16bit_weights_on_model_save",
					      "stage3_gather_fp16_weights_on_model_save" };
	for (int i = 0; i < 3; i++) {
		char text[256];
		memset(&cap, 0, sizeof(cap));
		snprintf(text, sizeof(text), "zero_optimization: {%s: true}\n", gather[i]);
		assert_int_equal(load_set(text, NULL, 0, &cap, &c), 0);
		assert_true(c.zero_optimization.gather_16bit_weights_on_model_save);
		assert_int_equal(cap.count[ZN_LOG_WARN], i == 2 ? 2 : 1); /* deprecated; no-op */
	}
	/* Every stage3_ key by its pydantic field name too. */
	assert_int_equal(load("zero_optimization: {prefetch_bucket_size: 7, "
			      "param_persistence_threshold: 8, max_live_parameters: 9, "
			      "max_reuse_distance: 10}\n", &c),
			 0);
	assert_int_equal(c.zero_optimization.prefetch_bucket_size, 7);
	assert_int_equal(c.zero_optimization.param_persistence_threshold, 8);
	assert_int_equal(c.zero_optimization.max_live_parameters, 9);
	assert_int_equal(c.zero_optimization.max_reuse_distance, 10);
	/* The boolean zero_optimization: stage 1 (or 0), with a warning. */
	memset(&cap, 0, sizeof(cap));
	assert_int_equal(load_set("zero_optimization: true\n", NULL, 0, &cap, &c), 0);
	assert_int_equal(c.zero_optimization.stage, 1);
	assert_non_null(captured(&cap, "DeepSpeed's deprecated form; read as stage 1"));
	assert_int_equal(load("zero_optimization: false\n", &c), 0);
	assert_int_equal(c.zero_optimization.stage, 0);
	assert_int_equal(load("zero_optimization: maybe\n", &c), -EINVAL);
	/* aio inside zero_optimization: read as the top-level aio. */
	memset(&cap, 0, sizeof(cap));
	assert_int_equal(load_set("zero_optimization: {stage: 3, aio: {queue_depth: 32}}\n", NULL,
				  0, &cap, &c),
			 0);
	assert_int_equal(c.aio.queue_depth, 32);
	assert_non_null(captured(&cap, "aio belongs at the top level"));
	assert_int_equal(load("aio: {queue_depth: 4}\nzero_optimization: {aio: {queue_depth: "
			      "32}}\n", &c),
			 -EINVAL);
	assert_error("2:21", "an aio section is also at the top level (line 1)");
	/* aio's older thread_count. */
	assert_int_equal(load("aio: {thread_count: 3}\n", &c), 0);
	assert_int_equal(c.aio.intra_op_parallelism, 3);
	/* fp16's loss-scaler keys in bf16: tolerated, listed when set. */
	memset(&cap, 0, sizeof(cap));
	assert_int_equal(load_set("bf16: {enabled: true, loss_scale: 0, initial_scale_power: 16, "
				  "loss_scale_window: 1000, hysteresis: 2, min_loss_scale: 1}\n",
				  NULL, 0, &cap, &c),
			 0);
	assert_int_equal(cap.count[ZN_LOG_WARN], 0);
	assert_int_equal(load_set("bf16: {enabled: true, loss_scale: 128}\n", NULL, 0, &cap, &c),
			 0);
	assert_non_null(captured(&cap, "bf16.loss_scale=128 (bf16 has fp32's exponent range"));
	/* offload_param below stage 3: DeepSpeed warns and does not use it. */
	memset(&cap, 0, sizeof(cap));
	assert_int_equal(load_set("zero_optimization: {stage: 2, offload_param: {device: cpu}}\n",
				  NULL, 0, &cap, &c),
			 0);
	assert_int_equal(c.zero_optimization.offload_param.device, ZN_OFFLOAD_NONE);
	assert_non_null(captured(&cap, "offload_param: parameter offload is a stage 3 feature"));
	/* partition_activations without model parallelism: a listed no-op. */
	memset(&cap, 0, sizeof(cap));
	assert_int_equal(load_set("activation_checkpointing: {partition_activations: true}\n",
				  NULL, 0, &cap, &c),
			 0);
	assert_non_null(captured(&cap, "partition_activations=true (it splits checkpoints"));
	/* The zeros DeepSpeed allows. */
	assert_int_equal(load("zero_optimization: {sub_group_size: 0, reduce_bucket_size: 0, "
			      "stage3_model_persistence_threshold: 0, "
			      "stage3_param_persistence_threshold: 1000}\n", &c),
			 0);
	assert_int_equal(c.zero_optimization.sub_group_size, 0);
	assert_int_equal(c.zero_optimization.reduce_bucket_size, 0);
	assert_int_equal(c.zero_optimization.param_persistence_threshold, 0);
	assert_int_equal(load("zero_optimization: {stage3_model_persistence_threshold: 5}\n", &c),
			 -EINVAL);
	assert_error("1:57", "stage3_model_persistence_threshold: 5 is not supported yet");
	/* An abbreviated DeepSpeed key is suggested by its full name. */
	memset(&cap, 0, sizeof(cap));
	assert_int_equal(load_set("seq_parallel_comm_data_type: fp16\n", NULL, 0, &cap, &c), 0);
	assert_non_null(captured(&cap, "did you mean 'seq_parallel_communication_data_type'?"));
	/* The DeepSpeed sections zinc does not use: quiet at their defaults,
	 * listed (once) when they would do something. */
	memset(&cap, 0, sizeof(cap));
	assert_int_equal(load_set("tensorboard: {enabled: false, output_path: x}\n"
				  "prescale_gradients: false\ngradient_predivide_factor: 1.0\n"
				  "zero_force_ds_cpu_optimizer: true\n", NULL, 0, &cap, &c),
			 0);
	assert_int_equal(cap.count[ZN_LOG_WARN], 0);
	assert_int_equal(load_set("progressive_layer_drop: {enabled: true, theta: 0.5}\n"
				  "prescale_gradients: true\ngradient_predivide_factor: 8\n"
				  "data_efficiency: {enabled: true}\n", NULL, 0, &cap, &c),
			 0);
	assert_int_equal(cap.count[ZN_LOG_WARN], 1);
	assert_non_null(captured(&cap, "4 keys do nothing in zinc: progressive_layer_drop ("));
	assert_non_null(captured(&cap, "gradient_predivide_factor=8 ("));
}

/* One disk per rank: the placeholders become the rank's numbers. */
/* Each DeepSpeed key zinc honours, alone in a file with a value unlike
 * its default and every other key's, lands in the field named here --
 * written down independently of the key tables' offsets -- and nowhere
 * else: the loaded config differs from the defaults' in that field's bytes
 * only (and, for the two deprecated cpu_offload keys, the placement they
 * stand for).  A key bound to a neighbour's field, or to a field of the
 * same type in another section, passed every other test while both kept
 * their defaults.  (The batch keys follow DeepSpeed's batch rule, which
 * test_batch_rule covers.) */
enum ds_kind { DS_U32, DS_U64, DS_DBL, DS_BOOL, DS_INT, DS_STR };
struct ds_case {
	const char *text;
	size_t off, size;
	enum ds_kind kind;
	double num;          /* DS_U32, DS_U64, DS_DBL, DS_BOOL (0/1), DS_INT (an enum) */
	const char *str;     /* DS_STR */
	size_t off2, size2;  /* a second field the key sets (0, 0: none) */
	const char *base;    /* the file without the key (NULL: empty), when the key
			      * needs another (offload needs a ZeRO stage) */
};
#define F(field) offsetof(struct zn_config, field), sizeof(((struct zn_config *)0)->field)
#define Z(field) F(zero_optimization.field)
static const struct ds_case ds_cases[] = {
	{ "gradient_clipping: 0.37", F(gradient_clipping), DS_DBL, 0.37, NULL, 0, 0, NULL },
	{ "steps_per_print: 11", F(steps_per_print), DS_U64, 11, NULL, 0, 0, NULL },
	{ "optimizer: {type: Adam}", F(optimizer.type), DS_INT, ZN_OPT_ADAM, NULL, 0, 0, NULL },
	{ "optimizer: {params: {lr: 0.0123}}", F(optimizer.params.lr), DS_DBL, 0.0123, NULL, 0, 0, NULL },
	{ "optimizer: {params: {eps: 1.3e-7}}", F(optimizer.params.eps), DS_DBL, 1.3e-7, NULL, 0, 0, NULL },
	{ "optimizer: {params: {weight_decay: 0.047}}", F(optimizer.params.weight_decay), DS_DBL,
	  0.047, NULL, 0, 0, NULL },
	{ "optimizer: {params: {bias_correction: false}}", F(optimizer.params.bias_correction),
	  DS_BOOL, 0, NULL, 0, 0, NULL },
	{ "optimizer: {type: Adam, params: {adam_w_mode: false}}", F(optimizer.params.adam_w_mode),
	  DS_BOOL, 0, NULL, F(optimizer.type), NULL },
	{ "scheduler: {type: WarmupCosineLR}", F(scheduler.type), DS_INT, ZN_SCHED_WARMUP_COSINE_LR,
	  NULL, 0, 0, NULL },
	{ "scheduler: {params: {warmup_min_lr: 0.00017}}", F(scheduler.params.warmup_min_lr), DS_DBL,
	  0.00017, NULL, 0, 0, NULL },
	{ "scheduler: {params: {warmup_max_lr: 0.0029}}", F(scheduler.params.warmup_max_lr), DS_DBL,
	  0.0029, NULL, 0, 0, NULL },
	{ "scheduler: {params: {warmup_num_steps: 13}}", F(scheduler.params.warmup_num_steps),
	  DS_U64, 13, NULL, 0, 0, NULL },
	{ "scheduler: {params: {warmup_type: linear}}", F(scheduler.params.warmup_type), DS_INT,
	  ZN_WARMUP_LINEAR, NULL, 0, 0, NULL },
	{ "scheduler: {params: {total_num_steps: 17}}", F(scheduler.params.total_num_steps), DS_U64,
	  17, NULL, 0, 0, NULL },
	{ "scheduler: {params: {warmup_min_ratio: 0.019}}", F(scheduler.params.warmup_min_ratio),
	  DS_DBL, 0.019, NULL, 0, 0, NULL },
	{ "scheduler: {params: {cos_min_ratio: 0.023}}", F(scheduler.params.cos_min_ratio), DS_DBL,
	  0.023, NULL, 0, 0, NULL },
	{ "fp16: {enabled: true}", F(fp16.enabled), DS_BOOL, 1, NULL, 0, 0, NULL },
	{ "fp16: {loss_scale: 29}", F(fp16.loss_scale), DS_DBL, 29, NULL, 0, 0, NULL },
	{ "fp16: {initial_scale_power: 31}", F(fp16.initial_scale_power), DS_U32, 31, NULL, 0, 0, NULL },
	{ "fp16: {loss_scale_window: 37}", F(fp16.loss_scale_window), DS_U32, 37, NULL, 0, 0, NULL },
	{ "fp16: {hysteresis: 41}", F(fp16.hysteresis), DS_U32, 41, NULL, 0, 0, NULL },
	{ "fp16: {consecutive_hysteresis: true}", F(fp16.consecutive_hysteresis), DS_BOOL, 1, NULL,
	  0, 0, NULL },
	{ "fp16: {min_loss_scale: 43}", F(fp16.min_loss_scale), DS_DBL, 43, NULL, 0, 0, NULL },
	{ "bf16: {enabled: true}", F(bf16.enabled), DS_BOOL, 1, NULL, 0, 0, NULL },
	{ "zero_optimization: {stage: 2}", Z(stage), DS_U32, 2, NULL, 0, 0, NULL },
	{ "zero_optimization: {reduce_bucket_size: 47}", Z(reduce_bucket_size), DS_U64, 47, NULL,
	  0, 0, NULL },
	{ "zero_optimization: {allgather_bucket_size: 53}", Z(allgather_bucket_size), DS_U64, 53,
	  NULL, 0, 0, NULL },
	{ "zero_optimization: {overlap_comm: true}", Z(overlap_comm), DS_BOOL, 1, NULL, 0, 0, NULL },
	{ "zero_optimization: {sub_group_size: 59}", Z(sub_group_size), DS_U64, 59, NULL, 0, 0, NULL },
	{ "zero_optimization: {stage: 1, cpu_offload: true}", Z(cpu_offload), DS_BOOL, 1, NULL,
	  Z(offload_optimizer.device), "zero_optimization: {stage: 1}" },
	{ "zero_optimization: {stage: 3, cpu_offload_param: true}", Z(cpu_offload_param), DS_BOOL,
	  1, NULL, Z(offload_param.device), "zero_optimization: {stage: 3}" },
	{ "zero_optimization: {stage3_prefetch_bucket_size: 61}", Z(prefetch_bucket_size), DS_U64,
	  61, NULL, 0, 0, NULL },
	{ "zero_optimization: {stage3_param_persistence_threshold: 67}",
	  Z(param_persistence_threshold), DS_U64, 67, NULL, 0, 0, NULL },
	/* 0 keeps nothing resident: the persistence threshold becomes 0 too */
	{ "zero_optimization: {stage3_model_persistence_threshold: 0}",
	  Z(model_persistence_threshold), DS_U64, 0, NULL, Z(param_persistence_threshold), NULL },
	{ "zero_optimization: {stage3_max_live_parameters: 71}", Z(max_live_parameters), DS_U64, 71,
	  NULL, 0, 0, NULL },
	{ "zero_optimization: {stage3_max_reuse_distance: 73}", Z(max_reuse_distance), DS_U64, 73,
	  NULL, 0, 0, NULL },
	/* (below stage 3 DeepSpeed ignores offload_param, and so does zinc) */
	{ "zero_optimization: {stage: 3, offload_param: {device: cpu}}", Z(offload_param.device),
	  DS_INT, ZN_OFFLOAD_CPU, NULL, 0, 0, "zero_optimization: {stage: 3}" },
	{ "zero_optimization: {offload_param: {nvme_path: /p79}}", Z(offload_param.nvme_path),
	  DS_STR, 0, "/p79", 0, 0, NULL },
	{ "zero_optimization: {offload_param: {pin_memory: false}}", Z(offload_param.pin_memory),
	  DS_BOOL, 0, NULL, 0, 0, NULL },
	{ "zero_optimization: {offload_param: {buffer_count: 83}}", Z(offload_param.buffer_count),
	  DS_U32, 83, NULL, 0, 0, NULL },
	{ "zero_optimization: {offload_param: {buffer_size: 89}}", Z(offload_param.buffer_size),
	  DS_U64, 89, NULL, 0, 0, NULL },
	{ "zero_optimization: {offload_param: {max_in_cpu: 97}}", Z(offload_param.max_in_cpu),
	  DS_U64, 97, NULL, 0, 0, NULL },
	{ "zero_optimization: {stage: 1, offload_optimizer: {device: nvme, nvme_path: /n}}",
	  Z(offload_optimizer.device), DS_INT, ZN_OFFLOAD_NVME, NULL, 0, 0,
	  "zero_optimization: {stage: 1, offload_optimizer: {nvme_path: /n}}" },
	{ "zero_optimization: {offload_optimizer: {nvme_path: /o101}}",
	  Z(offload_optimizer.nvme_path), DS_STR, 0, "/o101", 0, 0, NULL },
	{ "zero_optimization: {offload_optimizer: {pin_memory: false}}",
	  Z(offload_optimizer.pin_memory), DS_BOOL, 0, NULL, 0, 0, NULL },
	{ "zero_optimization: {offload_optimizer: {buffer_count: 103}}",
	  Z(offload_optimizer.buffer_count), DS_U32, 103, NULL, 0, 0, NULL },
	{ "zero_optimization: {offload_optimizer: {pipeline_read: true}}",
	  Z(offload_optimizer.pipeline_read), DS_BOOL, 1, NULL, 0, 0, NULL },
	{ "zero_optimization: {offload_optimizer: {pipeline_write: true}}",
	  Z(offload_optimizer.pipeline_write), DS_BOOL, 1, NULL, 0, 0, NULL },
	{ "activation_checkpointing: {enabled: true, cpu_checkpointing: true}",
	  F(activation_checkpointing.cpu_checkpointing), DS_BOOL, 1, NULL, 0, 0,
	  "activation_checkpointing: {enabled: true}" },
	{ "activation_checkpointing: {profile: true}", F(activation_checkpointing.profile), DS_BOOL,
	  1, NULL, 0, 0, NULL },
	{ "data_types: {grad_accum_dtype: bf16}", F(data_types.grad_accum_dtype), DS_INT,
	  ZN_GRAD_ACCUM_BF16, NULL, 0, 0, NULL },
	{ "aio: {block_size: 4096}", F(aio.block_size), DS_U64, 4096, NULL, 0, 0, NULL },
	{ "aio: {queue_depth: 107}", F(aio.queue_depth), DS_U32, 107, NULL, 0, 0, NULL },
	{ "aio: {intra_op_parallelism: 109}", F(aio.intra_op_parallelism), DS_U32, 109, NULL, 0,
	    0, NULL },
	{ "aio: {single_submit: true}", F(aio.single_submit), DS_BOOL, 1, NULL, 0, 0, NULL },
	{ "aio: {overlap_events: false}", F(aio.overlap_events), DS_BOOL, 0, NULL, 0, 0, NULL },
};
#undef F
#undef Z

static bool ds_field_is(const struct ds_case *k, const char *base)
{
	const char *p = base + k->off;
	switch (k->kind) {
	case DS_U32: return *(const uint32_t *)(const void *)p == (uint32_t)k->num;
	case DS_U64: return *(const uint64_t *)(const void *)p == (uint64_t)k->num;
	case DS_DBL: return *(const double *)(const void *)p == k->num;
	case DS_BOOL: return *(const bool *)(const void *)p == (k->num != 0);
	case DS_INT: return *(const int *)(const void *)p == (int)k->num;
	case DS_STR: return strcmp(p, k->str) == 0;
	}
	return false;
}

static void test_each_deepspeed_key_lands_in_its_field(void **state)
{
	(void)state;
	static struct zn_config def, c; /* large: not on the stack */
	for (size_t i = 0; i < sizeof(ds_cases) / sizeof(ds_cases[0]); i++) {
		const struct ds_case *k = &ds_cases[i];
		if (load(k->base ? k->base : "", &def) != 0)
			fail_msg("'%s': %s", k->base, zn_last_error());
		if (load(k->text, &c) != 0)
			fail_msg("'%s': %s", k->text, zn_last_error());
		const char *a = (const char *)&def, *b = (const char *)&c;
		if (!ds_field_is(k, b))
			fail_msg("'%s' did not land in its field", k->text);
		if (ds_field_is(k, a))
			fail_msg("'%s': the test's value is the default", k->text);
		/* (up to the record of which keys were given) */
		for (size_t o = 0; o < offsetof(struct zn_config, given); o++) {
			bool mine = (o >= k->off && o < k->off + k->size) ||
				    (k->size2 && o >= k->off2 && o < k->off2 + k->size2);
			if (!mine && a[o] != b[o])
				fail_msg("'%s' also changed the config at byte %zu (its field is at "
					 "%zu, %zu bytes)", k->text, o, k->off, k->size);
		}
	}
}

static void test_expand_rank(void **state)
{
	(void)state;
	struct zn_config c;
	zn_config_default(&c);
	snprintf(c.zero_optimization.offload_param.nvme_path, ZN_NVME_PATH_MAX,
		 "/nvme{local_rank}/p,/scratch/r{rank}");
	snprintf(c.zero_optimization.offload_optimizer.nvme_path, ZN_NVME_PATH_MAX, "/o{rank}{rank}");
	assert_int_equal(zn_config_expand_rank(&c, 12, 3), 0);
	assert_string_equal(c.zero_optimization.offload_param.nvme_path, "/nvme3/p,/scratch/r12");
	assert_string_equal(c.zero_optimization.offload_optimizer.nvme_path, "/o1212");
	/* Nothing to replace: unchanged. */
	assert_int_equal(zn_config_expand_rank(&c, 0, 0), 0);
	assert_string_equal(c.zero_optimization.offload_optimizer.nvme_path, "/o1212");
	/* Too long with the numbers in: refused, the path untouched. */
	/* (1017 characters, then "{rank}" and its NUL fill the buffer; a
	 * 7-digit rank makes one character too many.) */
	memset(c.zero_optimization.offload_param.nvme_path, 'a', ZN_NVME_PATH_MAX - 7);
	memcpy(c.zero_optimization.offload_param.nvme_path + ZN_NVME_PATH_MAX - 7, "{rank}", 7);
	assert_int_equal(zn_config_expand_rank(&c, 123456, 0), 0);
	memset(c.zero_optimization.offload_param.nvme_path, 'a', ZN_NVME_PATH_MAX - 7);
	memcpy(c.zero_optimization.offload_param.nvme_path + ZN_NVME_PATH_MAX - 7, "{rank}", 7);
	assert_int_equal(zn_config_expand_rank(&c, 1234567, 0), -ENAMETOOLONG);
	assert_non_null(strstr(zn_last_error(), "too long"));
	assert_non_null(strstr(c.zero_optimization.offload_param.nvme_path, "{rank}"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults_are_deepspeeds),
		cmocka_unit_test(test_section_table),
		cmocka_unit_test(test_overrides),
		cmocka_unit_test(test_yaml_and_json_files_agree),
		cmocka_unit_test(test_thread_count_alias),
		cmocka_unit_test(test_bad_values),
		cmocka_unit_test(test_every_error_at_once),
		cmocka_unit_test(test_unknown_key_in_section),
		cmocka_unit_test(test_unknown_top_level_key_warns),
		cmocka_unit_test(test_override_positions),
		cmocka_unit_test(test_aliases),
		cmocka_unit_test(test_syntax_errors),
		cmocka_unit_test(test_huge_numbers),
		cmocka_unit_test(test_cross_key_checks),
		cmocka_unit_test(test_missing_file),
		cmocka_unit_test(test_duplicate_keys),
		cmocka_unit_test(test_wrong_node_kinds),
		cmocka_unit_test(test_null_keeps_default),
		cmocka_unit_test(test_value_spellings),
		cmocka_unit_test(test_full_ds_config),
		cmocka_unit_test(test_batch_rule),
		cmocka_unit_test(test_betas),
		cmocka_unit_test(test_nested_errors),
		cmocka_unit_test(test_not_supported_yet),
		cmocka_unit_test(test_unknown_nested_keys),
		cmocka_unit_test(test_auto_values),
		cmocka_unit_test(test_each_deepspeed_key_lands_in_its_field),
		cmocka_unit_test(test_expand_rank),
		cmocka_unit_test(test_hf_auto_rules),
		cmocka_unit_test(test_deepspeed_spellings),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
