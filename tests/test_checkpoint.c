/* Checkpoint directories: commit, abort, crashed saves, `latest`, pruning;
 * manifests (written, verified, a damaged file or tensor named), resume's
 * choice of checkpoint (the newest complete one that verifies), run locks. */
#include "testutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <sys/wait.h>
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

/* A checkpoint of two tensors, "a" and "b" (4 floats each, from `value`),
 * and a config.json beside them. */
static void save2(const char *root, uint64_t step, float value)
{
	struct zn_ckpt *c = zn_ckpt_begin(root, step);
	assert_non_null(c);
	float a[4] = { value, value + 1, value + 2, value + 3 }, b[4] = { -value, 0, 1, 2 };
	struct zn_st_tensor t[2] = {
		{ .name = "a", .dtype = ZN_ST_F32, .ndim = 1, .shape = { 4 }, .data = a, .bytes = 16 },
		{ .name = "b", .dtype = ZN_ST_F32, .ndim = 1, .shape = { 4 }, .data = b, .bytes = 16 },
	};
	assert_int_equal(zn_st_write(zn_ckpt_file(c, "optimizer.safetensors"), t, 2, NULL, 0), 0);
	FILE *f = fopen(zn_ckpt_file(c, "config.json"), "w");
	assert_non_null(f);
	fputs("{\"n\": 1}\n", f);
	fclose(f);
	assert_int_equal(zn_ckpt_commit(c), 0);
}

static const char *step_path(const char *root, uint64_t step, const char *file)
{
	static char path[4400];
	snprintf(path, sizeof(path), "%s/step-%08llu%s%s", root, (unsigned long long)step,
		 file ? "/" : "", file ? file : "");
	return path;
}

/* Flip one bit of byte `off` of `path` (again: put it back). */
static void flip(const char *path, uint64_t off)
{
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	unsigned char b;
	assert_int_equal(pread(fd, &b, 1, (off_t)off), 1);
	b ^= 0x10;
	assert_int_equal(pwrite(fd, &b, 1, (off_t)off), 1);
	close(fd);
}

/* Where tensor `name`'s bytes start in the safetensors file `path`. */
static uint64_t tensor_at(const char *path, const char *name)
{
	struct zn_st_file *f = zn_st_open(path);
	assert_non_null(f);
	const struct zn_st_tensor *t = zn_st_find(f, name);
	assert_non_null(t);
	uint64_t off = zn_st_file_offset(f, t);
	zn_st_close(f);
	return off;
}

static bool ends_with(const char *s, const char *tail)
{
	size_t n = strlen(s), k = strlen(tail);
	return n >= k && strcmp(s + n - k, tail) == 0;
}

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
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

/* The manifest lists every file with its size and checksum and every
 * tensor; verify finds a flipped byte and names the file and the tensor;
 * a truncated or missing file is named too. */
static void test_manifest(void **state)
{
	(void)state;
	const char *root = tu_path("ck5");
	save2(root, 1, 1.0f);
	char mpath[4400], *text = NULL;
	snprintf(mpath, sizeof(mpath), "%s", step_path(root, 1, ZN_CKPT_MANIFEST));
	FILE *f = fopen(mpath, "r");
	assert_non_null(f);
	text = calloc(1, 1 << 16);
	assert_true(fread(text, 1, (1 << 16) - 1, f) > 0);
	fclose(f);
	assert_non_null(strstr(text, "\"zinc-checkpoint-manifest\""));
	assert_non_null(strstr(text, "\"optimizer.safetensors\""));
	assert_non_null(strstr(text, "\"config.json\""));
	assert_non_null(strstr(text, "\"a\": \""));
	assert_non_null(strstr(text, "\"b\": \""));
	free(text);
	const char *dir = step_path(root, 1, NULL);
	char d[4400];
	snprintf(d, sizeof(d), "%s", dir);
	assert_int_equal(zn_ckpt_verify(d), 0);

	/* One bit of tensor b's data. */
	char opt[4400];
	snprintf(opt, sizeof(opt), "%s", step_path(root, 1, "optimizer.safetensors"));
	uint64_t at = tensor_at(opt, "b") + 5;
	flip(opt, at);
	assert_int_equal(zn_ckpt_verify(d), -EBADMSG);
	assert_non_null(strstr(zn_last_error(), "optimizer.safetensors"));
	assert_non_null(strstr(zn_last_error(), "tensor 'b'"));
	flip(opt, at);
	assert_int_equal(zn_ckpt_verify(d), 0);

	/* One bit of the header: the file is named, no tensor is. */
	flip(opt, 12);
	assert_int_equal(zn_ckpt_verify(d), -EBADMSG);
	assert_non_null(strstr(zn_last_error(), "optimizer.safetensors"));
	assert_null(strstr(zn_last_error(), "tensor '"));
	flip(opt, 12);

	/* Truncated, then missing. */
	char cfg[4400];
	snprintf(cfg, sizeof(cfg), "%s", step_path(root, 1, "config.json"));
	assert_int_equal(truncate(cfg, 3), 0);
	assert_int_equal(zn_ckpt_verify(d), -EBADMSG);
	assert_non_null(strstr(zn_last_error(), "config.json"));
	assert_int_equal(unlink(cfg), 0);
	assert_int_equal(zn_ckpt_verify(d), -ENOENT);
	assert_non_null(strstr(zn_last_error(), "config.json"));
	assert_non_null(strstr(zn_last_error(), "missing"));

	/* Files written into a verified step afterwards (zinc consolidate's
	 * model files): the refreshed manifest lists them and drops the gone;
	 * files older than the manifest keep their entries unread. */
	write_text(cfg, "{\"n\": 1}\n");
	assert_int_equal(zn_ckpt_manifest_write(d), 0);
	char added[4400];
	snprintf(added, sizeof(added), "%s", step_path(root, 1, "model.safetensors"));
	write_text(added, "new weights");
	assert_int_equal(unlink(cfg), 0);
	assert_int_equal(zn_ckpt_manifest_refresh(d), 0);
	assert_int_equal(zn_ckpt_verify(d), 0);
	write_text(added, "new weightz"); /* same size, newer: hashed again */
	assert_int_equal(zn_ckpt_manifest_refresh(d), 0);
	assert_int_equal(zn_ckpt_verify(d), 0);
	struct timespec old_times[2] = { { .tv_sec = 1000000000 }, { .tv_sec = 1000000000 } };
	flip(opt, at);
	assert_int_equal(utimensat(AT_FDCWD, opt, old_times, 0), 0);
	assert_int_equal(zn_ckpt_manifest_refresh(d), 0);
	assert_int_equal(zn_ckpt_verify(d), -EBADMSG); /* kept as listed, not re-read */
	flip(opt, at);
	assert_int_equal(zn_ckpt_verify(d), 0);

	/* A damaged manifest does not vouch for anything. */
	write_text(mpath, "{\"format\": \"zinc-checkpoint-manifest\", \"version\": 1, \"files\": [");
	assert_int_equal(zn_ckpt_verify(d), -EINVAL);
	assert_non_null(strstr(zn_last_error(), ZN_CKPT_MANIFEST));
	write_text(mpath, "{\"format\": \"zinc-checkpoint-manifest\", \"version\": 9}");
	assert_int_equal(zn_ckpt_verify(d), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "version 9"));
	assert_int_equal(zn_ckpt_manifest_write(d), 0);
	assert_int_equal(zn_ckpt_verify(d), 0);

	/* No manifest: not complete. */
	assert_int_equal(unlink(mpath), 0);
	assert_int_equal(zn_ckpt_verify(d), -ENODATA);
}

/* Names a manifest could not read back are not written into one: a
 * safetensors file whose tensor is named with a tab is listed by its sum
 * alone (still verified whole), a file so named is not covered, and a
 * manifest listing such a name, or a negative commit time, is refused. */
static void test_manifest_names(void **state)
{
	(void)state;
	char d[4400];
	snprintf(d, sizeof(d), "%s", tu_path("ck-names"));
	assert_int_equal(mkdir(d, 0755), 0);
	float a[2] = { 1, 2 };
	struct zn_st_tensor t = { .name = "tab\there", .dtype = ZN_ST_F32, .ndim = 1,
				  .shape = { 2 }, .data = a, .bytes = 8 };
	char p[4500];
	snprintf(p, sizeof(p), "%s/w.safetensors", d);
	assert_int_equal(zn_st_write(p, &t, 1, NULL, 0), 0);
	snprintf(p, sizeof(p), "%s/odd\x01name", d);
	write_text(p, "x");
	assert_int_equal(zn_ckpt_manifest_write(d), 0);
	assert_int_equal(zn_ckpt_verify(d), 0);
	snprintf(p, sizeof(p), "%s/" ZN_CKPT_MANIFEST, d);
	FILE *f = fopen(p, "r");
	assert_non_null(f);
	char text[4096] = "";
	assert_true(fread(text, 1, sizeof(text) - 1, f) > 0);
	fclose(f);
	assert_non_null(strstr(text, "\"w.safetensors\""));
	assert_null(strstr(text, "\"tensors\""));
	assert_null(strstr(text, "odd"));
	snprintf(p, sizeof(p), "%s/w.safetensors", d);
	flip(p, tensor_at(p, "tab\there"));
	assert_int_equal(zn_ckpt_verify(d), -EBADMSG); /* the file's sum covers it */
	assert_non_null(strstr(zn_last_error(), "w.safetensors"));
	flip(p, tensor_at(p, "tab\there"));
	snprintf(p, sizeof(p), "%s/" ZN_CKPT_MANIFEST, d);
	write_text(p, "{\"format\": \"zinc-checkpoint-manifest\", \"version\": 1, "
		      "\"committed_ns\": 5, \"files\": [{\"name\": \"w.safetensors\", "
		      "\"bytes\": 1, \"xxh3\": \"0000000000000000\", "
		      "\"tensors\": {\"a\\tb\": \"0000000000000000\"}}]}");
	assert_int_equal(zn_ckpt_verify(d), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "printable ASCII"));
	write_text(p, "{\"format\": \"zinc-checkpoint-manifest\", \"version\": 1, "
		      "\"committed_ns\": -1, \"files\": []}");
	assert_int_equal(zn_ckpt_verify(d), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "committed_ns"));
}

/* A flipped byte in the newest checkpoint: resume takes the one before,
 * with a warning naming both steps; when none verifies, it refuses. */
static void test_fallback(void **state)
{
	(void)state;
	const char *root = tu_path("ck6");
	char dir[4200], opt[4400];
	save2(root, 10, 1.0f);
	save2(root, 20, 2.0f);
	assert_int_equal(zn_ckpt_find(root, dir, sizeof(dir)), 0);
	assert_true(ends_with(dir, "step-00000020"));

	snprintf(opt, sizeof(opt), "%s", step_path(root, 20, "optimizer.safetensors"));
	flip(opt, tensor_at(opt, "a"));
	tu_log_capture_start();
	assert_int_equal(zn_ckpt_find(root, dir, sizeof(dir)), 0);
	assert_true(ends_with(dir, "step-00000010"));
	/* the damage, named; then the choice, naming both steps */
	assert_int_equal(tu_log_count(ZN_LOG_WARN, "checkpoint step-00000020 in"), 1);
	assert_int_equal(tu_log_count(ZN_LOG_WARN, "tensor 'a'"), 1);
	assert_int_equal(tu_log_count(ZN_LOG_WARN,
				      "using step-00000010 instead of step-00000020"), 1);
	tu_log_capture_stop();
	/* zn_ckpt_latest does not read the files: the newest complete one. */
	assert_int_equal(zn_ckpt_latest(root, dir, sizeof(dir)), 0);
	assert_true(ends_with(dir, "step-00000020"));

	/* Both damaged: refused, naming the newest and its tensor. */
	snprintf(opt, sizeof(opt), "%s", step_path(root, 10, "optimizer.safetensors"));
	flip(opt, tensor_at(opt, "b") + 3);
	tu_log_capture_start();
	assert_int_equal(zn_ckpt_find(root, dir, sizeof(dir)), -EBADMSG);
	tu_log_capture_stop();
	assert_non_null(strstr(zn_last_error(), "step-00000020"));
	assert_non_null(strstr(zn_last_error(), "tensor 'a'"));
	assert_non_null(strstr(zn_last_error(), "checkpoint.resume: false"));

	/* Nothing at all: -ENOENT. */
	assert_int_equal(zn_ckpt_find(tu_path("ck6-none"), dir, sizeof(dir)), -ENOENT);
}

/* `latest` is a hint: dangling, empty, missing or naming an older step,
 * the newest complete step is found; a step directory without a manifest
 * is never chosen; a root written before manifests resumes through
 * `latest`, with a warning that it cannot be verified. */
static void test_latest_is_a_hint(void **state)
{
	(void)state;
	const char *root = tu_path("ck7");
	char dir[4200], latest[4300];
	save2(root, 1, 1.0f);
	save2(root, 2, 2.0f);
	/* A newer step directory without a manifest (copied in half, or
	 * made by hand): not complete. */
	assert_int_equal(mkdir(step_path(root, 3, NULL), 0755), 0);
	write_text(step_path(root, 3, "optimizer.safetensors"), "garbage");
	snprintf(latest, sizeof(latest), "%s/latest", root);
	const char *hints[] = { "step-00000099\n", "", "step-00000001\n", "step-00000003\n",
				"../elsewhere\n", NULL };
	for (unsigned i = 0; i < sizeof(hints) / sizeof(hints[0]); i++) {
		if (hints[i])
			write_text(latest, hints[i]);
		else
			assert_int_equal(unlink(latest), 0);
		assert_int_equal(zn_ckpt_find(root, dir, sizeof(dir)), 0);
		assert_true(ends_with(dir, "step-00000002"));
		assert_int_equal(zn_ckpt_latest(root, dir, sizeof(dir)), 0);
		assert_true(ends_with(dir, "step-00000002"));
	}

	/* The model file listed in the manifest is gone: that step is not
	 * trusted, the one before is. */
	assert_int_equal(unlink(step_path(root, 2, "config.json")), 0);
	tu_log_capture_start();
	assert_int_equal(zn_ckpt_find(root, dir, sizeof(dir)), 0);
	assert_int_equal(tu_log_count(ZN_LOG_WARN, "missing"), 1);
	assert_int_equal(tu_log_count(ZN_LOG_WARN, "instead of step-00000002"), 1);
	tu_log_capture_stop();
	assert_true(ends_with(dir, "step-00000001"));

	/* An older zinc's root: no manifests anywhere; `latest` names the
	 * checkpoint, which loads with a warning. */
	const char *old = tu_path("ck7-old");
	save2(old, 5, 5.0f);
	save2(old, 6, 6.0f);
	assert_int_equal(unlink(step_path(old, 5, ZN_CKPT_MANIFEST)), 0);
	assert_int_equal(unlink(step_path(old, 6, ZN_CKPT_MANIFEST)), 0);
	tu_log_capture_start();
	assert_int_equal(zn_ckpt_find(old, dir, sizeof(dir)), 0);
	assert_int_equal(tu_log_count(ZN_LOG_WARN, "cannot be verified"), 1);
	tu_log_capture_stop();
	assert_true(ends_with(dir, "step-00000006"));
	assert_int_equal(zn_ckpt_latest(old, dir, sizeof(dir)), 0);
	assert_true(ends_with(dir, "step-00000006"));
}

/* Pruning keeps the newest complete checkpoints: a newer step directory
 * without a manifest does not count, so the complete one it would
 * replace stays; newest means last committed. */
static void test_prune_keeps_complete(void **state)
{
	(void)state;
	const char *root = tu_path("ck8");
	char dir[4200];
	for (uint64_t s = 1; s <= 3; s++)
		save2(root, s, (float)s);
	assert_int_equal(mkdir(step_path(root, 4, NULL), 0755), 0);
	assert_int_equal(zn_ckpt_prune(root, 1), 2);
	assert_int_equal(access(step_path(root, 3, ZN_CKPT_MANIFEST), F_OK), 0);
	assert_int_equal(access(step_path(root, 4, NULL), F_OK), 0);
	assert_int_equal(access(step_path(root, 2, NULL), F_OK), -1);
	assert_int_equal(zn_ckpt_find(root, dir, sizeof(dir)), 0);
	assert_true(ends_with(dir, "step-00000003"));

	/* A run started again from scratch in the same root: its step 2 is
	 * newer than the old run's step 20 (the last committed is the newest,
	 * whatever its number), and pruning keeps it. */
	const char *again = tu_path("ck8-again");
	save2(again, 20, 20.0f);
	save2(again, 2, 2.0f);
	assert_int_equal(zn_ckpt_find(again, dir, sizeof(dir)), 0);
	assert_true(ends_with(dir, "step-00000002"));
	assert_int_equal(zn_ckpt_latest(again, dir, sizeof(dir)), 0);
	assert_true(ends_with(dir, "step-00000002"));
	assert_int_equal(zn_ckpt_prune(again, 1), 1);
	assert_int_equal(access(step_path(again, 2, ZN_CKPT_MANIFEST), F_OK), 0);
	assert_int_equal(access(step_path(again, 20, NULL), F_OK), -1);

	/* The clock set back since the last commit (here: that commit's time
	 * moved into the future): the next commit is still the newest. */
	char mpath[4400], text[1 << 14];
	snprintf(mpath, sizeof(mpath), "%s", step_path(again, 2, ZN_CKPT_MANIFEST));
	FILE *f = fopen(mpath, "r");
	assert_non_null(f);
	size_t n = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	text[n] = 0;
	char *at = strstr(text, "\"committed_ns\": ");
	assert_non_null(at);
	at += strlen("\"committed_ns\": ");
	memcpy(at, "4", 1); /* 4e18 ns: the year 2096 */
	while (*++at >= '0' && *at <= '9')
		*at = '0';
	f = fopen(mpath, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	save2(again, 1, 1.0f);
	assert_int_equal(zn_ckpt_find(again, dir, sizeof(dir)), 0);
	assert_true(ends_with(dir, "step-00000001"));
}

/* A second run on a locked directory is refused, naming the holder's pid;
 * a process of the same run shares it; a dead holder blocks nobody. */
static void test_run_lock(void **state)
{
	(void)state;
	const char *root = tu_path("ck9");
	char lockfile[4300], want[64];
	assert_int_equal(mkdir(root, 0755), 0);
	snprintf(lockfile, sizeof(lockfile), "%s/" ZN_CKPT_LOCK, root);

	/* Another process holds it. */
	int go[2], done[2];
	assert_int_equal(pipe(go), 0);
	assert_int_equal(pipe(done), 0);
	pid_t child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		struct zn_run_lock *l = NULL;
		char c = zn_run_lock(root, ZN_CKPT_LOCK, "checkpoint.dir", "7@there", &l) == 0 && l;
		if (write(go[1], &c, 1) != 1 || read(done[0], &c, 1) < 0)
			_exit(1);
		_exit(0); /* dies holding it: the file stays */
	}
	char c = 0;
	assert_int_equal(read(go[0], &c, 1), 1);
	assert_int_equal(c, 1);
	struct zn_run_lock *l = NULL;
	assert_int_equal(zn_run_lock(root, ZN_CKPT_LOCK, "checkpoint.dir", "1@here", &l), -EBUSY);
	assert_null(l);
	snprintf(want, sizeof(want), "pid %d on there", (int)child);
	assert_non_null(strstr(zn_last_error(), want));
	assert_non_null(strstr(zn_last_error(), "checkpoint.dir"));
	/* A process of the holder's run: shares it, holds nothing. */
	assert_int_equal(zn_run_lock(root, ZN_CKPT_LOCK, "checkpoint.dir", "7@there", &l), 0);
	assert_null(l);

	/* The holder dies without letting go: its lock file stays, and blocks
	 * nobody. */
	assert_int_equal(write(done[1], &c, 1), 1);
	int status;
	assert_int_equal(waitpid(child, &status, 0), child);
	assert_int_equal(access(lockfile, F_OK), 0);
	assert_int_equal(zn_run_lock(root, ZN_CKPT_LOCK, "checkpoint.dir", "1@here", &l), 0);
	assert_non_null(l);
	/* ... and the file now names this process. */
	char text[128] = "";
	FILE *f = fopen(lockfile, "r");
	assert_non_null(f);
	assert_non_null(fgets(text, sizeof(text), f));
	fclose(f);
	snprintf(want, sizeof(want), "%d 1@here", (int)getpid());
	assert_true(strncmp(text, want, strlen(want)) == 0);
	/* Held here: another run is refused even within this process. */
	struct zn_run_lock *l2 = NULL;
	assert_int_equal(zn_run_lock(root, ZN_CKPT_LOCK, "checkpoint.dir", "2@b", &l2), -EBUSY);
	snprintf(want, sizeof(want), "pid %d on here", (int)getpid());
	assert_non_null(strstr(zn_last_error(), want));
	zn_run_unlock(l);
	assert_int_equal(access(lockfile, F_OK), -1);
	assert_int_equal(zn_run_lock(root, ZN_CKPT_LOCK, "checkpoint.dir", "2@b", &l2), 0);
	assert_non_null(l2);
	zn_run_unlock(l2);
	close(go[0]);
	close(go[1]);
	close(done[0]);
	close(done[1]);
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
		cmocka_unit_test(test_manifest),
		cmocka_unit_test(test_manifest_names),
		cmocka_unit_test(test_fallback),
		cmocka_unit_test(test_latest_is_a_hint),
		cmocka_unit_test(test_prune_keeps_complete),
		cmocka_unit_test(test_run_lock),
	};
	return cmocka_run_group_tests(tests, NULL, teardown);
}
