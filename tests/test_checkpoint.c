/* Checkpoint directories: commit, abort, crashed saves, `latest`, pruning. */
#include "testutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "zinc/checkpoint.h"
#include "zinc/safetensors.h"

static void save(const char *root, uint64_t step, float value)
{
	struct zn_ckpt *c = zn_ckpt_begin(root, step);
	assert_non_null(c);
	struct zn_st_tensor t = { .name = "w", .dtype = ZN_ST_F32, .ndim = 1, .shape = { 1 },
				  .data = &value, .bytes = 4 };
	assert_int_equal(zn_st_write(zn_ckpt_file(c, "model.safetensors"), &t, 1, NULL, 0), 0);
	assert_int_equal(zn_ckpt_commit(c), 0);
}

static float load(const char *dir)
{
	char path[4200];
	snprintf(path, sizeof(path), "%s/model.safetensors", dir);
	struct zn_st_file *f = zn_st_open(path);
	assert_non_null(f);
	float v = *(const float *)zn_st_find(f, "w")->data;
	zn_st_close(f);
	return v;
}

static int count_entries(const char *dir, const char *needle)
{
	return tu_count_entries(dir, NULL, needle, NULL);
}

static void test_commit_and_latest(void **state)
{
	(void)state;
	const char *root = tu_path("ck1");
	char dir[4200];
	assert_int_equal(zn_ckpt_latest(root, dir, sizeof(dir)), -ENOENT);
	save(root, 10, 1.0f);
	assert_int_equal(zn_ckpt_latest(root, dir, sizeof(dir)), 0);
	assert_non_null(strstr(dir, "step-00000010"));
	assert_true(load(dir) == 1.0f);
	save(root, 20, 2.0f);
	assert_int_equal(zn_ckpt_latest(root, dir, sizeof(dir)), 0);
	assert_true(load(dir) == 2.0f);
	/* Saving a step again replaces it. */
	save(root, 20, 3.0f);
	assert_int_equal(zn_ckpt_latest(root, dir, sizeof(dir)), 0);
	assert_true(load(dir) == 3.0f);
	assert_int_equal(count_entries(root, "tmp"), 0);
}

static void test_abort_and_crash(void **state)
{
	(void)state;
	const char *root = tu_path("ck2");
	char dir[4200], stale[4200];
	save(root, 1, 5.0f);

	struct zn_ckpt *c = zn_ckpt_begin(root, 2);
	assert_non_null(c);
	FILE *f = fopen(zn_ckpt_file(c, "half-written"), "w");
	fputs("partial", f);
	fclose(f);
	zn_ckpt_abort(c);
	assert_int_equal(count_entries(root, "step-00000002"), 0);
	assert_int_equal(zn_ckpt_latest(root, dir, sizeof(dir)), 0);
	assert_true(load(dir) == 5.0f);

	/* A save that died mid-way (its PID is gone): cleaned up next time,
	 * and never mistaken for the latest. */
	snprintf(stale, sizeof(stale), "%s/step-00000003.tmp-999999", root);
	assert_int_equal(mkdir(stale, 0755), 0);
	/* ... and the half-written `latest` of a save killed while it wrote
	 * it (a live process's is left alone). */
	char latest_tmp[4300], live_tmp[4300];
	snprintf(latest_tmp, sizeof(latest_tmp), "%s/latest.tmp.999999", root);
	snprintf(live_tmp, sizeof(live_tmp), "%s/latest.tmp.1", root);
	f = fopen(latest_tmp, "w");
	fputs("step-0000", f);
	fclose(f);
	f = fopen(live_tmp, "w");
	fclose(f);
	assert_int_equal(zn_ckpt_latest(root, dir, sizeof(dir)), 0);
	assert_true(load(dir) == 5.0f);
	tu_log_capture_start();
	save(root, 4, 6.0f);
	assert_int_equal(tu_log_count(ZN_LOG_INFO, "did not finish"), 2);
	tu_log_capture_stop();
	assert_int_equal(access(stale, F_OK), -1);
	assert_int_equal(access(latest_tmp, F_OK), -1);
	assert_int_equal(access(live_tmp, F_OK), 0); /* PID 1 lives */
	unlink(live_tmp);
}

static void test_commit_failure_keeps_previous(void **state)
{
	(void)state;
	const char *root = tu_path("ck3");
	char dir[4200], blocker[4200];
	save(root, 1, 7.0f);
	/* A save whose files vanish before the commit: it fails, and the
	 * previous checkpoint stays the newest complete one. */
	struct zn_ckpt *c = zn_ckpt_begin(root, 2);
	assert_non_null(c);
	char tmp[4200];
	snprintf(tmp, sizeof(tmp), "%s", zn_ckpt_file(c, ""));
	tmp[strlen(tmp) - 1] = 0; /* the trailing '/' */
	assert_int_equal(rmdir(tmp), 0);
	assert_true(zn_ckpt_commit(c) < 0);
	assert_non_null(strstr(zn_last_error(), "previous checkpoint"));
	assert_int_equal(zn_ckpt_latest(root, dir, sizeof(dir)), 0);
	assert_true(load(dir) == 7.0f);

	/* `latest` cannot be replaced (a non-empty directory): a hint, so the
	 * save still completes, with a warning, and is found without it. */
	snprintf(blocker, sizeof(blocker), "%s/latest", root);
	assert_int_equal(unlink(blocker), 0);
	assert_int_equal(mkdir(blocker, 0755), 0);
	snprintf(blocker, sizeof(blocker), "%s/latest/x", root);
	assert_int_equal(mkdir(blocker, 0755), 0);
	tu_log_capture_start();
	save(root, 3, 8.0f);
	assert_int_equal(tu_log_count(ZN_LOG_WARN, "latest"), 1);
	tu_log_capture_stop();
	assert_int_equal(zn_ckpt_latest(root, dir, sizeof(dir)), 0);
	assert_true(load(dir) == 8.0f);
	assert_int_equal(zn_ckpt_find(root, dir, sizeof(dir)), 0);
	assert_true(load(dir) == 8.0f);
	assert_int_equal(count_entries(root, "tmp"), 0);
	assert_null(zn_ckpt_begin(tu_path("ck3/step-00000001/model.safetensors/x"), 1));
}

static void test_prune(void **state)
{
	(void)state;
	const char *root = tu_path("ck4");
	char dir[4200];
	for (uint64_t s = 1; s <= 5; s++)
		save(root, s * 100, (float)s);
	assert_int_equal(zn_ckpt_prune(root, 2), 3);
	assert_int_equal(count_entries(root, "step-"), 2);
	assert_int_equal(zn_ckpt_latest(root, dir, sizeof(dir)), 0);
	assert_true(load(dir) == 5.0f);
	assert_int_equal(zn_ckpt_prune(root, 2), 0);
}

static int teardown(void **state)
{
	(void)state;
	tu_scratch_cleanup();
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_commit_and_latest),
		cmocka_unit_test(test_abort_and_crash),
		cmocka_unit_test(test_commit_failure_keeps_previous),
		cmocka_unit_test(test_prune),
	};
	return cmocka_run_group_tests(tests, NULL, teardown);
}
