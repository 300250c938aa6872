/* Joining a checkpoint's parameters into the files a model leaves as
 * (zn_checkpoint_consolidate): the checkpoint's optimizer files opened as
 * a source, the model named by their metadata, every master weight read
 * (put together from the ranks' parts) and written through the
 * architecture's writer a piece at a time -- at most ZN_ARCH_CHUNK
 * elements in memory whatever the model's size, no trainer. */
#include "zn_common.h"

#include "train/internal.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "zinc/checkpoint.h"

int zn_checkpoint_consolidate(const char *path, const char *out)
{
	char dir[4096];
	char latest[4200];
	snprintf(latest, sizeof(latest), "%s/latest", path);
	if (access(latest, F_OK) == 0) {
		int lrc = zn_ckpt_latest(path, dir, sizeof(dir));
		if (lrc)
			return lrc;
	} else {
		snprintf(dir, sizeof(dir), "%s", path);
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
out:
	zn_arch_writer_abort(w);
	tr_sources_close(&src);
	zn_tensor_table_free(&tab);
	free(master);
	return rc;
}
