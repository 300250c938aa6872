/* Starting weights: which source the config names (a checkpoint to
 * resume, pretrained weights, or none: initialisation), and every tensor
 * made once from it and sent where it lives. */
#include "zn_common.h"

#include "train/internal.h"

#include <stdlib.h>
#include <string.h>

#include "zinc/checkpoint.h"

/* Resuming: the checkpoint's metadata now (step, data position, loss
 * scaler: a mismatch fails before anything is built), its tensors later,
 * one at a time, from the mapped files.  A checkpoint of another number of
 * ranks is re-partitioned: every tensor is put together from the parts
 * that cover it and this rank takes its own. */
static int open_checkpoint(struct zn_trainer *t, const char *dir)
{
	char shape[512];
	int rc = tr_sources_open_checkpoint(&t->src, dir);
	if (rc)
		return rc;
	struct zn_st_file *f = tr_sources_meta(&t->src);
	zn_arch_describe(&t->arch, shape, sizeof(shape));
	const char *ms = zn_st_metadata(f, "zinc.model");
	const char *st = zn_st_metadata(f, "zinc.step");
	const char *hex = zn_st_metadata(f, "zinc.data_pos");
	const char *up = zn_st_metadata(f, "zinc.updates");
	const char *sc = zn_st_metadata(f, "zinc.loss_scaler");
	struct zn_data_pos pos;
	if (!ms || strcmp(ms, shape) != 0) {
		rc = zn_error(-EINVAL, "checkpoint '%s' is of a different model (%s) than the config "
				       "(%s); point checkpoint.dir elsewhere or set "
				       "checkpoint.resume: false", dir, ms ? ms : "unknown", shape);
	} else if (!st || tr_hex_decode(hex, &pos, sizeof(pos))) {
		rc = zn_error(-EINVAL, "checkpoint '%s' lacks its step or data position", dir);
	} else if (!up || tr_hex_decode(sc, &t->scaler, sizeof(t->scaler))) {
		rc = zn_error(-EINVAL, "checkpoint '%s' lacks its update count or loss scaler", dir);
	}
	/* The parts of one save: the same step in every one. */
	for (int r = 1; r < t->src.world && !rc; r++) {
		const char *sr = zn_st_metadata(t->src.shards[r], "zinc.step");
		if (!sr || strcmp(sr, st) != 0)
			rc = zn_error(-EINVAL, "checkpoint '%s': the part of rank %d is of step %s, "
					       "rank 0's of step %s: the checkpoint is damaged; "
					       "resume from an earlier one", dir, r,
					sr ? sr : "unknown", st);
	}
	/* Every tensor (or part) present with its shape, before anything is
	 * built. */
	if (!rc)
		rc = tr_sources_check_states(&t->src, dir, 3);
	if (!rc && t->data.train)
		rc = zn_data_seek(t->data.train, &pos);
	if (rc)
		return rc;
	t->step = strtoull(st, NULL, 10);
	t->updates = strtoull(up, NULL, 10);
	return 0;
}

/* The source of the starting weights: checkpoint.resume's latest
 * checkpoint when there is one, else model.from's weights, else none. */
int tr_open_weights(struct zn_trainer *t)
{
	const struct zn_config *cfg = &t->cfg;
	char dir[4096];
	t->src.arch = &t->arch;
	t->src.tab = &t->tab;
	t->src.seed = cfg->data.seed;
	if (cfg->checkpoint.resume && cfg->checkpoint.dir[0] &&
	    zn_ckpt_latest(cfg->checkpoint.dir, dir, sizeof(dir)) == 0)
		return open_checkpoint(t, dir);
	if (cfg->model.from[0])
		return tr_sources_open_pretrained(&t->src, cfg->model.from);
	return 0;
}

/* Every tensor once, in order: made from its source, then sent where it
 * lives (device, home, host arrays, NVMe sub-groups). */
int tr_materialize(struct zn_trainer *t)
{
	struct groups g = { 0 };
	float *scratch[3] = { NULL, NULL, NULL };
	/* Whole tensors are made in scratch arrays unless the host arrays
	 * hold whole tensors (one rank, states in host memory). */
	const bool whole = !t->zr.nvme_opt && t->own_total == t->tab.total;
	/* Without a checkpoint the moments start at zero: no arrays for
	 * them (a large embedding's would be gigabytes), zeros are written. */
	const bool fresh = !t->src.ckpt && !t->src.shards;
	int rc = 0;
	if (t->zr.nvme_opt)
		tr_groups_open(&g, t, true);
	for (int k = 0; k < (fresh ? 1 : 3) && !rc && !whole; k++)
		if (!(scratch[k] = malloc(t->tab.largest * 4)))
			rc = zn_error(-ENOMEM, "out of memory");
	for (unsigned i = 0; i < t->tab.nt && !rc; i++) {
		struct tstate *s = &t->t[i];
		size_t bytes = s->d->numel * 4, obytes = s->nown * 4;
		float *a[3] = { s->master, s->m, s->v };
		if (!whole)
			memcpy(a, scratch, sizeof(a));
		if (fresh) /* host arrays come zeroed (calloc) */
			a[1] = a[2] = NULL;
		if ((rc = tr_sources_read(&t->src, i, a[0], a[1], a[2])))
			break;
		/* This rank's part of the states (NULL: zeros). */
		float *own[3] = { a[0] + s->lo, a[1] ? a[1] + s->lo : NULL,
				  a[2] ? a[2] + s->lo : NULL };
		if (!whole && !t->zr.nvme_opt) {
			memcpy(s->master, own[0], obytes);
			if (!fresh) {
				memcpy(s->m, own[1], obytes);
				memcpy(s->v, own[2], obytes);
			}
		}
		if (!s->resident) {
			rc = tr_home_put(t, s, 0, own[0], s->nown);
		} else if (!(rc = tr_to_device(t, s->dparam, a[0], bytes))) {
			t->stats.h2d_bytes += bytes;
			rc = tr_round_to_dtype(t, s->dparam, s->d->numel);
		}
		if (!rc && t->zr.device_opt && s->nown &&
		    !(rc = tr_to_device(t, s->dmaster, own[0], obytes))) {
			if (fresh && !(rc = zn_device_memset(t->dev, s->dm, 0, obytes, NULL)))
				rc = zn_device_memset(t->dev, s->dv, 0, obytes, NULL);
			else if (!fresh && !(rc = tr_to_device(t, s->dm, own[1], obytes)))
				rc = tr_to_device(t, s->dv, own[2], obytes);
		}
		if (!rc && t->zr.nvme_opt)
			rc = tr_groups_move(&g, s, own);
	}
	if (!rc && t->homes.sw)
		rc = zn_swapper_flush(t->homes.sw);
	if (t->zr.nvme_opt) {
		int r = tr_groups_finish(&g); /* the last group's write */
		rc = rc ? rc : r;
	}
	for (int k = 0; k < 3; k++)
		free(scratch[k]);
	return rc;
}
