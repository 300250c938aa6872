/* Saving a checkpoint: whole (one rank, or stage 0's replicas: the model's
 * files and optimizer.safetensors) or sharded (every rank the states of
 * its parts), piece by piece, committed atomically. */
#include "zn_common.h"

#include "train/internal.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "zinc/checkpoint.h"

/* A Llama's weights leave as a Hugging Face folder, in the training dtype
 * (what transformers' from_pretrained reads). */
static const char *hf_dtype(const struct zn_trainer *t)
{
	return t->zr.dtype == ZN_DTYPE_BF16 ? "bfloat16" : t->zr.dtype == ZN_DTYPE_F16 ? "float16"
										 : "float32";
}

/* The metadata every optimizer file carries (the strings live in *m). */
struct ckpt_meta {
	char step[32], updates[32], shape[512], world[16], rank[16];
	char hex[2 * sizeof(struct zn_data_pos) + 1];
	char shex[2 * sizeof(struct zn_loss_scaler) + 1];
	struct zn_st_meta kv[10];
	char *tiles;                   /* sharded, with tiled tensors: zinc.tile_rows */
};

static size_t ckpt_meta(struct zn_trainer *t, struct ckpt_meta *m, bool sharded)
{
	struct zn_data_pos pos;
	memset(&pos, 0, sizeof(pos));
	if (t->data.train)
		zn_data_tell(t->data.train, &pos);
	tr_hex_encode(&pos, sizeof(pos), m->hex);
	tr_hex_encode(&t->scaler, sizeof(t->scaler), m->shex);
	snprintf(m->step, sizeof(m->step), "%" PRIu64, t->step);
	snprintf(m->updates, sizeof(m->updates), "%" PRIu64, t->updates);
	snprintf(m->world, sizeof(m->world), "%d", t->world);
	snprintf(m->rank, sizeof(m->rank), "%d", t->rank);
	zn_arch_describe(&t->arch, m->shape, sizeof(m->shape));
	struct zn_st_meta kv[9] = { { "zinc.step", m->step }, { "zinc.data_pos", m->hex },
				    { "zinc.model", m->shape }, { "zinc.version", zn_version() },
				    { "zinc.updates", m->updates }, { "zinc.loss_scaler", m->shex },
				    { "zinc.optimizer_states", tr_optimizer_states(t) },
				    { "zinc.world", m->world }, { "zinc.rank", m->rank } };
	memcpy(m->kv, kv, sizeof(kv));
	m->tiles = NULL;
	if (!sharded)
		return 7; /* world and rank: sharded files only */
	/* Parts of tiled tensors hold a piece of each tile (engine/zero's
	 * zn_zero_piece): "name:rows;..." says which, for whoever reads them
	 * back on any number of ranks (sources.c). */
	size_t len = 1;
	for (unsigned i = 0; i < t->tab.nt; i++)
		if (t->t[i].tiled)
			len += strlen(t->t[i].d->name) + 24;
	if (len == 1)
		return 9;
	if (!(m->tiles = malloc(len))) {
		zn_set_error("out of memory");
		return 0;
	}
	size_t at = 0;
	for (unsigned i = 0; i < t->tab.nt; i++)
		if (t->t[i].tiled)
			at += (size_t)snprintf(m->tiles + at, len - at, "%s%s:%" PRIu64, at ? ";" : "",
					       t->t[i].d->name, t->t[i].tile_rows);
	m->kv[9] = (struct zn_st_meta){ "zinc.tile_rows", m->tiles };
	return 10;
}

/* The device optimizer's states of this rank's parts into the host arrays. */
static int stage_device_states(struct zn_trainer *t)
{
	for (unsigned i = 0; i < t->tab.nt && t->zr.device_opt; i++) {
		struct tstate *s = &t->t[i];
		int r;
		if (s->nown && ((r = tr_to_host(t, s->master, s->dmaster, s->nown * 4)) ||
				(r = tr_to_host(t, s->m, s->dm, s->nown * 4)) ||
				(r = tr_to_host(t, s->v, s->dv, s->nown * 4))))
			return r;
	}
	return 0;
}

int tr_agree_rc(struct zn_trainer *t, int rc, const char *what)
{
	if (t->world == 1)
		return rc;
	int32_t mine = rc, *all = calloc((size_t)t->world, sizeof(*all));
	if (!all)
		return zn_error(-ENOMEM, "out of memory");
	int crc = zn_comm_all_gather(t->comm, &mine, all, sizeof(mine), ZN_DTYPE_U8);
	for (int r = 0; r < t->world && !crc && !rc; r++)
		if (all[r])
			rc = zn_error(all[r], "%s: rank %d failed (its own message says why)", what, r);
	free(all);
	return rc ? rc : crc;
}

/* The optimizer file's tensors: every tensor's three states (this rank's
 * parts: `parts` leaves out the tensors it owns nothing of), named in
 * `names`.  Returns how many. */
static size_t opt_tensors(const struct zn_trainer *t, bool parts, struct zn_st_tensor *ot,
			  char (*names)[ZN_PARAM_NAME_MAX + 24])
{
	size_t n = 0;
	for (unsigned i = 0; i < t->tab.nt; i++) {
		const struct tstate *s = &t->t[i];
		for (int k = 0; k < 3 && (s->nown || !parts); k++, n++) {
			snprintf(names[n], sizeof(names[0]), "%s.%s", s->d->name, tr_state_suffix[k]);
			ot[n] = (struct zn_st_tensor){ .name = names[n], .dtype = ZN_ST_F32,
						       .ndim = 1, .shape = { s->nown },
						       .bytes = s->nown * 4 };
		}
	}
	return n;
}

/* Every tensor's part (`parts`: only the tensors this rank has a part of,
 * the sharded file's list) written where it goes, a piece at a time: its
 * states into the optimizer file by place (the file's j-th tensor's
 * master, exp_avg, exp_avg_sq are its tensors 3j .. 3j + 2), and with mw
 * its master weights, in order, into the model's files.  The NVMe
 * sub-groups are read once each, in the swapper's own buffers; nothing
 * holds a tensor whole. */
static int write_states(struct zn_trainer *t, struct zn_st_writer *ow, struct zn_arch_writer *mw,
			bool parts)
{
	struct groups g = { 0 };
	int rc = 0;
	if (t->zr.nvme_opt)
		tr_groups_open(&g, t, false);
	for (unsigned i = 0, j = 0; i < t->tab.nt && !rc; i++) {
		const struct tstate *s = &t->t[i];
		if (parts && !s->nown)
			continue;
		for (uint64_t p = 0, n = 0; p < s->nown && !rc; p += n) {
			float *a[3];
			n = s->nown - p;
			if ((rc = tr_states_at(&g, s, p, a, &n)) ||
			    (mw && (rc = zn_arch_writer_put_part(mw, a[0], n))))
				break;
			for (int k = 0; k < 3 && !rc; k++)
				rc = zn_st_writer_put_at(ow, 3 * (size_t)j + (size_t)k, p * 4, a[k],
							 n * 4);
		}
		j++;
	}
	if (t->zr.nvme_opt)
		tr_groups_close(&g);
	return rc;
}

/* Rank 0's end of a save: commit (pruning old checkpoints to
 * checkpoint.keep), or abort after a failure (rc, returned). */
static int commit(struct zn_trainer *t, struct zn_ckpt *c, int rc)
{
	if (rc) {
		zn_ckpt_abort(c);
		return rc;
	}
	rc = zn_ckpt_commit(c);
	if (!rc && t->cfg.checkpoint.keep)
		zn_ckpt_prune(t->cfg.checkpoint.dir, t->cfg.checkpoint.keep);
	return rc;
}

/* Partitioned: rank 0 opens the checkpoint's temporary directory and
 * tells the others where it is; each rank writes
 * optimizer-RRRRR-of-WWWWW.safetensors with the master weights and moments
 * of its parts (the parts of each tensor: see struct tstate); rank 0
 * commits only when every rank has written (and fsynced) its file, else
 * the previous checkpoint stays the latest.  `zinc consolidate` joins the
 * parts into model.safetensors; resuming re-partitions them for any
 * number of ranks. */
static int save_sharded(struct zn_trainer *t)
{
	struct zn_ckpt *c = NULL;
	char dir[4200] = "";
	int rc = 0;
	zn_device_trim(t->dev);
	if (t->rank == 0) {
		c = zn_ckpt_begin(t->cfg.checkpoint.dir, t->step);
		if (c)
			snprintf(dir, sizeof(dir), "%s", zn_ckpt_file(c, ""));
		else
			rc = -EIO;
	}
	int brc = zn_comm_broadcast(t->comm, dir, sizeof(dir), 0);
	if (brc) {
		if (c)
			zn_ckpt_abort(c);
		return brc;
	}
	if ((rc = tr_agree_rc(t, rc, "checkpoint")))
		return rc;
	struct zn_st_tensor *ot = calloc(3 * (size_t)t->tab.nt, sizeof(*ot));
	char (*names)[ZN_PARAM_NAME_MAX + 24] = calloc(3 * (size_t)t->tab.nt, sizeof(*names));
	struct zn_st_writer *ow = NULL;
	size_t n = 0;
	if (!ot || !names)
		rc = zn_error(-ENOMEM, "out of memory");
	if (!rc)
		n = opt_tensors(t, true, ot, names);
	char path[4400];
	snprintf(path, sizeof(path), "%soptimizer-%05d-of-%05d.safetensors", dir, t->rank,
		 t->world);
	struct ckpt_meta m;
	size_t nm = ckpt_meta(t, &m, true);
	if (!rc && !nm)
		rc = -ENOMEM;
	if (!rc)
		rc = zn_st_writer_begin(path, ot, n, m.kv, nm, &ow);
	if (!rc)
		rc = write_states(t, ow, NULL, true);
	if (!rc) {
		rc = zn_st_writer_end(ow);
		ow = NULL;
	}
	zn_st_writer_abort(ow);
	free(m.tiles);
	free(names);
	free(ot);
	/* Commit only what every rank wrote; then every rank learns how
	 * rank 0's commit went. */
	rc = tr_agree_rc(t, rc, "checkpoint");
	int32_t crc = t->rank == 0 ? commit(t, c, rc) : 0;
	if (rc)
		return rc;
	if ((rc = zn_comm_broadcast(t->comm, &crc, sizeof(crc), 0)))
		return rc;
	if (crc && t->rank != 0)
		return zn_error(crc, "checkpoint: rank 0 could not commit it (its own message says "
				     "why); the previous checkpoint is still the latest");
	return crc;
}

/* One rank, or replicas: the model's files (GPT-2's model.safetensors, or
 * a Llama's Hugging Face folder in the training dtype, what transformers'
 * from_pretrained reads) and optimizer.safetensors, side by side in the
 * checkpoint's directory. */
static int save_whole(struct zn_trainer *t)
{
	/* Cached device blocks are not needed while saving: their memory
	 * (host memory, on the cpu backend) goes back. */
	zn_device_trim(t->dev);
	struct zn_ckpt *c = zn_ckpt_begin(t->cfg.checkpoint.dir, t->step);
	if (!c)
		return -EIO;
	struct zn_st_tensor *ot = calloc(3 * (size_t)t->tab.nt, sizeof(*ot));
	char (*names)[ZN_PARAM_NAME_MAX + 24] = calloc(3 * (size_t)t->tab.nt, sizeof(*names));
	struct zn_arch_writer *mw = NULL;
	struct zn_st_writer *ow = NULL;
	int rc = 0;
	if (!ot || !names) {
		rc = zn_error(-ENOMEM, "out of memory");
		goto out;
	}
	size_t n = opt_tensors(t, false, ot, names);
	struct ckpt_meta meta;
	size_t nmeta = ckpt_meta(t, &meta, false);
	if ((rc = zn_arch_writer_begin(&t->arch, zn_ckpt_file(c, zn_arch_weights_name(&t->arch)),
				       t->tab.d, t->tab.nt, hf_dtype(t), &mw)))
		goto out;
	if ((rc = zn_st_writer_begin(zn_ckpt_file(c, "optimizer.safetensors"), ot, n, meta.kv,
				     nmeta, &ow)))
		goto out;
	rc = write_states(t, ow, mw, false);
	if (!rc) {
		rc = zn_arch_writer_end(mw);
		mw = NULL;
	}
	if (!rc) {
		rc = zn_st_writer_end(ow);
		ow = NULL;
	}
out:
	zn_arch_writer_abort(mw);
	zn_st_writer_abort(ow);
	rc = commit(t, c, rc);
	free(names);
	free(ot);
	return rc;
}

/* A checkpoint is written a piece at a time (write_states), so saving
 * holds no tensor whole whatever the model's size: host states are
 * written from where they are, NVMe states from the optimizer swapper's
 * buffers a sub-group at a time, and the model's files need only their
 * writer's bounded buffer (zn_arch_writer_bytes).  One rank, or replicas
 * (stage 0): rank 0 writes the model's files and optimizer.safetensors
 * side by side.  Partitioned
 * states (stage >= 1 on several ranks): every rank writes its parts into
 * one directory, committed when all have (see save_sharded). */
int zn_trainer_save(struct zn_trainer *t)
{
	if (!t->cfg.checkpoint.dir[0])
		return zn_error(-EINVAL, "checkpoint.dir: not set; nowhere to save");
	int rc = tr_opt_wait_all(t);
	if (!rc && t->homes.sw)
		rc = zn_swapper_flush(t->homes.sw);
	if (!rc)
		rc = stage_device_states(t);
	if (t->world == 1 || rc)
		return rc ? rc : save_whole(t);
	if (t->own_total == t->tab.total)
		return tr_agree_rc(t, t->rank == 0 ? save_whole(t) : 0, "checkpoint");
	return save_sharded(t);
}
