/* Joining a checkpoint's parameters into the files a model leaves as
 * (zn_checkpoint_consolidate): the checkpoint's optimizer files opened as
 * a source, the model named by their metadata, every master weight read
 * (put together from the ranks' parts) and written through the
 * architecture's writer a piece at a time -- at most ZN_ARCH_CHUNK
 * elements in memory whatever the model's size, no trainer. */
#include "zn_common.h"

#include "train/internal.h"

#include <glob.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "zinc/checkpoint.h"

/* One step's directory (its manifest or optimizer files are there), not a
 * checkpoint directory. */
static bool is_step_dir(const char *path)
{
	char probe[4400];
	glob_t g;
	snprintf(probe, sizeof(probe), "%s/" ZN_CKPT_MANIFEST, path);
	if (access(probe, F_OK) == 0)
		return true;
	snprintf(probe, sizeof(probe), "%s/optimizer.safetensors", path);
	if (access(probe, F_OK) == 0)
		return true;
	snprintf(probe, sizeof(probe), "%s/optimizer-00000-of-*.safetensors", path);
	if (glob(probe, 0, NULL, &g) != 0)
		return false;
	globfree(&g);
	return true;
}

/* The step directory to consolidate: `path` itself when it is one
 * (checked against its manifest; one without is consolidated with a
 * warning that it cannot be verified), else the newest complete
 * checkpoint under it that verifies (zn_ckpt_find).  *verified: it has a
 * manifest that held. */
static int choose_step(const char *path, bool step, char *dir, size_t len, bool *verified)
{
	char probe[4400];
	*verified = false;
	if (!step) {
		int rc = zn_ckpt_find(path, dir, len);
		if (rc == -ENOENT)
			return zn_error(rc, "'%s' is neither a checkpoint directory (it holds no "
					    "complete step-N) nor one step's directory (it holds no "
					    "optimizer.safetensors or optimizer-RRRRR-of-WWWWW."
					    "safetensors)", path);
		snprintf(probe, sizeof(probe), "%s/" ZN_CKPT_MANIFEST, dir);
		*verified = rc == 0 && access(probe, F_OK) == 0; /* else an older zinc's */
		return rc;
	}
	snprintf(dir, len, "%s", path);
	int rc = zn_ckpt_verify(dir);
	if (rc == -ENODATA) {
		zn_warn("checkpoint '%s' has no manifest.json (written by a zinc before "
			"checksums): it cannot be verified; consolidating it as it is", dir);
		return 0;
	}
	*verified = rc == 0;
	return rc;
}

/* Writing into a step's own directory changes the checkpoint: the
 * checkpoint directory's lock is taken as a run takes it, so that a run
 * training there (which prunes) and this do not meet. */
static int lock_root(const char *path, bool step, struct zn_run_lock **l)
{
	char root[4400], run[96], host[64] = "";
	snprintf(root, sizeof(root), "%s", path);
	if (step) {
		char *slash = strrchr(root, '/');
		while (slash && slash > root && slash[1] == 0) { /* "dir/" */
			*slash = 0;
			slash = strrchr(root, '/');
		}
		if (!slash)
			snprintf(root, sizeof(root), ".");
		else if (slash == root)
			root[1] = 0;
		else
			*slash = 0;
	}
	struct stat st;
	if (stat(root, &st) != 0 || !S_ISDIR(st.st_mode))
		return 0; /* nothing there to consolidate: choose_step says so */
	gethostname(host, sizeof(host) - 1);
	snprintf(run, sizeof(run), "%d@%s", (int)getpid(), host);
	return zn_run_lock(root, ZN_CKPT_LOCK, "checkpoint.dir", run, l);
}

int zn_checkpoint_consolidate(const char *path, const char *out)
{
	return zn_checkpoint_consolidate_into(path, out, NULL, 0);
}

int zn_checkpoint_consolidate_into(const char *path, const char *out, char *wrote, size_t len)
{
	char dir[4096];
	bool verified, step = is_step_dir(path);
	struct zn_run_lock *lock = NULL;
	int crc = out ? 0 : lock_root(path, step, &lock);
	if (!crc)
		crc = choose_step(path, step, dir, sizeof(dir), &verified);
	if (crc) {
		zn_run_unlock(lock);
		return crc;
	}
	struct zn_arch arch;
	struct zn_tensor_table tab = { 0 };
	struct sources src = { .arch = &arch, .tab = &tab };
	struct zn_arch_writer *w = NULL;
	float *master = NULL;
	int rc = tr_sources_open_checkpoint(&src, dir);
	if (rc)
		goto out;
	/* The model, from the metadata every optimizer file carries. */
	const char *ms = zn_st_metadata(tr_sources_meta(&src), "zinc.model");
	if (!ms || zn_arch_parse(ms, &arch)) {
		rc = zn_error(-EINVAL, "checkpoint '%s': its metadata names no model this zinc "
				       "knows (zinc.model = %s)", dir, ms ? ms : "absent");
		goto out;
	}
	if ((rc = zn_tensor_table_build(&tab, &arch)))
		goto out;
	if (!(master = malloc(ZN_MIN(ZN_MAX(tab.largest, 1), ZN_ARCH_CHUNK) * 4))) {
		rc = zn_error(-ENOMEM, "out of memory");
		goto out;
	}
	/* Every master (or part of one) present with its shape, before writing. */
	if ((rc = tr_sources_check_states(&src, dir, 1)))
		goto out;
	/* The architecture's own files (GPT-2: one model.safetensors; a Llama:
	 * a Hugging Face folder), fp32.  By default into the step's own
	 * directory. */
	char target[4200];
	if (out)
		snprintf(target, sizeof(target), "%s", out);
	else
		zn_arch_weights_path(&arch, dir, target, sizeof(target));
	if ((rc = zn_arch_writer_begin(&arch, target, tab.d, tab.nt, "float32", &w)))
		goto out;
	for (unsigned i = 0; i < tab.nt && !rc; i++)
		for (uint64_t p = 0, n; p < tab.d[i].numel && !rc; p += n) {
			n = ZN_MIN(tab.d[i].numel - p, ZN_ARCH_CHUNK);
			if (!(rc = tr_sources_read(&src, i, p, n, master, NULL, NULL)))
				rc = zn_arch_writer_put_part(w, master, n);
		}
	if (!rc) {
		rc = zn_arch_writer_end(w);
		w = NULL;
	}
	/* Written into the step's own directory: its manifest again, so the
	 * checkpoint still verifies (the files it listed were checked above). */
	if (!rc && !out && verified)
		rc = zn_ckpt_manifest_refresh(dir);
	if (!rc && wrote)
		snprintf(wrote, len, "%s", target);
out:
	zn_arch_writer_abort(w);
	tr_sources_close(&src);
	zn_tensor_table_free(&tab);
	free(master);
	zn_run_unlock(lock);
	return rc;
}
