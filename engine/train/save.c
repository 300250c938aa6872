/* Saving a checkpoint: whole (one rank, or stage 0's replicas) or
 * sharded (every rank its parts), tensor by tensor. */
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
	return t->dtype == ZN_DTYPE_BF16 ? "bfloat16" : t->dtype == ZN_DTYPE_F16 ? "float16"
										 : "float32";
}

/* The metadata every optimizer file carries (the strings live in *m). */
struct ckpt_meta {
	char step[32], updates[32], shape[512], world[16], rank[16];
	char hex[2 * sizeof(struct zn_data_pos) + 1];
	char shex[2 * sizeof(struct zn_loss_scaler) + 1];
	struct zn_st_meta kv[8];
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
	tr_model_shape_string(t, m->shape, sizeof(m->shape));
	struct zn_st_meta kv[8] = { { "zinc.step", m->step }, { "zinc.data_pos", m->hex },
				    { "zinc.model", m->shape }, { "zinc.version", zn_version() },
				    { "zinc.updates", m->updates }, { "zinc.loss_scaler", m->shex },
				    { "zinc.world", m->world }, { "zinc.rank", m->rank } };
	memcpy(m->kv, kv, sizeof(kv));
	return sharded ? 8 : 6;
}

/* The device optimizer's states of this rank's parts into the host arrays. */
static int stage_device_states(struct zn_trainer *t)
{
	for (unsigned i = 0; i < t->nt && t->device_opt; i++) {
		struct tstate *s = &t->t[i];
		int r;
		if (s->nown && ((r = tr_to_host(t, s->master, s->dmaster, s->nown * 4)) ||
				(r = tr_to_host(t, s->m, s->dm, s->nown * 4)) ||
				(r = tr_to_host(t, s->v, s->dv, s->nown * 4))))
			return r;
	}
	return 0;
}

/* Every rank's result of a step they took together: a rank that failed is
 * named on the others. */
static int agree_rc(struct zn_trainer *t, int rc, const char *what)
{
	if (t->world == 1)
		return rc;
	int32_t mine = rc, *all = calloc((size_t)t->world, sizeof(*all));
	if (!all)
		return zn_error(-ENOMEM, "out of memory");
	int crc = zn_comm_all_gather(t->comm, &mine, all, sizeof(mine), ZN_COMM_U8);
	for (int r = 0; r < t->world && !crc && !rc; r++)
		if (all[r])
			rc = zn_error(all[r], "%s: rank %d failed (its own message says why)", what, r);
	free(all);
	return rc ? rc : crc;
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
	if ((rc = agree_rc(t, rc, "checkpoint")))
		return rc;
	struct zn_st_tensor *ot = calloc(3 * (size_t)t->nt, sizeof(*ot));
	char (*names)[ZN_PARAM_NAME_MAX + 24] = calloc(3 * (size_t)t->nt, sizeof(*names));
	float *scratch[3] = { NULL, NULL, NULL };
	struct groups g = { 0 };
	struct zn_st_writer *ow = NULL;
	size_t n = 0;
	if (!ot || !names)
		rc = zn_error(-ENOMEM, "out of memory");
	for (int k = 0; k < 3 && !rc && t->nvme_opt; k++)
		if (!(scratch[k] = malloc(t->largest * 4)))
			rc = zn_error(-ENOMEM, "out of memory for checkpoint staging");
	if (!rc && t->nvme_opt)
		rc = tr_groups_open(&g, t, false);
	for (unsigned i = 0; i < t->nt && !rc; i++) {
		const struct tstate *s = &t->t[i];
		for (int k = 0; k < 3 && s->nown; k++, n++) {
			snprintf(names[n], sizeof(names[0]), "%s.%s", s->d.name, tr_state_suffix[k]);
			ot[n] = (struct zn_st_tensor){ .name = names[n], .dtype = ZN_ST_F32,
						       .ndim = 1, .shape = { s->nown },
						       .bytes = s->nown * 4 };
		}
	}
	char path[4400];
	snprintf(path, sizeof(path), "%soptimizer-%05d-of-%05d.safetensors", dir, t->rank,
		 t->world);
	struct ckpt_meta m;
	size_t nm = ckpt_meta(t, &m, true);
	if (!rc)
		rc = zn_st_writer_begin(path, ot, n, m.kv, nm, &ow);
	for (unsigned i = 0; i < t->nt && !rc; i++) {
		struct tstate *s = &t->t[i];
		float *a[3] = { s->master, s->m, s->v };
		if (!s->nown)
			continue;
		if (t->nvme_opt) {
			memcpy(a, scratch, sizeof(a));
			if ((rc = tr_groups_move(&g, s, a, false)))
				break;
		}
		for (int k = 0; k < 3 && !rc; k++)
			rc = zn_st_writer_put(ow, a[k], s->nown * 4);
	}
	if (!rc) {
		rc = zn_st_writer_end(ow);
		ow = NULL;
	}
	zn_st_writer_abort(ow);
	if (t->nvme_opt)
		tr_groups_close(&g);
	for (int k = 0; k < 3; k++)
		free(scratch[k]);
	free(names);
	free(ot);
	/* Commit only what every rank wrote; then every rank learns how
	 * rank 0's commit went. */
	rc = agree_rc(t, rc, "checkpoint");
	int32_t crc = 0;
	if (t->rank == 0) {
		if (rc) {
			zn_ckpt_abort(c);
		} else {
			crc = zn_ckpt_commit(c);
			if (!crc && t->cfg.checkpoint.keep)
				zn_ckpt_prune(t->cfg.checkpoint.dir, t->cfg.checkpoint.keep);
		}
	}
	if (rc)
		return rc;
	if ((rc = zn_comm_broadcast(t->comm, &crc, sizeof(crc), 0)))
		return rc;
	if (crc && t->rank != 0)
		return zn_error(crc, "checkpoint: rank 0 could not commit it (its own message says "
				     "why); the previous checkpoint is still the latest");
	return crc;
}

static int save_whole(struct zn_trainer *t)
{
	/* Cached device blocks are not needed while saving: their memory
	 * (host memory, on the cpu backend) goes to the staging instead. */
	zn_device_trim(t->dev);
	struct zn_ckpt *c = zn_ckpt_begin(t->cfg.checkpoint.dir, t->step);
	if (!c)
		return -EIO;
	struct zn_st_tensor *mt = calloc(t->nt, sizeof(*mt));
	struct zn_st_tensor *ot = calloc(3 * (size_t)t->nt, sizeof(*ot));
	char (*names)[ZN_PARAM_NAME_MAX + 24] = calloc(4 * (size_t)t->nt, sizeof(*names));
	float *scratch[4] = { NULL, NULL, NULL, NULL };
	struct groups g = { 0 };
	struct zn_st_writer *mw = NULL, *ow = NULL;
	struct zn_hf_writer *hw = NULL;
	int rc = 0;
	if (!mt || !ot || !names) {
		rc = zn_error(-ENOMEM, "out of memory");
		goto out;
	}
	/* scratch[3]: a transposed tensor; 0-2: NVMe states of one tensor. */
	for (int k = 0; k < (t->nvme_opt ? 4 : 1) && !rc; k++)
		if (!(scratch[3 - k] = malloc(t->largest * 4)))
			rc = zn_error(-ENOMEM, "out of memory for checkpoint staging");
	if (!rc && t->nvme_opt)
		rc = tr_groups_open(&g, t, false);
	if (rc)
		goto out;
	for (unsigned i = 0; i < t->nt; i++) {
		const struct tstate *s = &t->t[i];
		snprintf(names[4 * i], sizeof(names[0]), "transformer.%s", s->d.name);
		mt[i] = (struct zn_st_tensor){ .name = names[4 * i], .dtype = ZN_ST_F32,
					       .ndim = s->d.ndim };
		if (!t->arch.llama)
			tr_hf_shape(s, &t->arch.g, mt[i].shape, &mt[i].bytes);
		for (int k = 0; k < 3; k++) {
			snprintf(names[4 * i + 1 + k], sizeof(names[0]), "%s.%s", s->d.name,
				 tr_state_suffix[k]);
			ot[3 * i + k] = (struct zn_st_tensor){
				.name = names[4 * i + 1 + k], .dtype = ZN_ST_F32, .ndim = 1,
				.shape = { s->d.numel }, .bytes = s->d.numel * 4 };
		}
	}
	struct ckpt_meta meta;
	size_t nmeta = ckpt_meta(t, &meta, false);
	struct zn_st_meta mmeta[1] = { { "format", "pt" } };
	/* The model: GPT-2's model.safetensors, or a Llama's Hugging Face
	 * folder (config.json, shards, index) in the checkpoint directory. */
	if (t->arch.llama) {
		struct zn_param_desc *descs = tr_all_descs(t);
		rc = descs ? zn_hf_writer_begin(zn_ckpt_file(c, ""), &t->arch.l, descs, t->nt,
						hf_dtype(t), ZN_HF_DEFAULT_SHARD_BYTES, &hw)
			   : -ENOMEM;
		free(descs);
	} else {
		rc = zn_st_writer_begin(zn_ckpt_file(c, "model.safetensors"), mt, t->nt, mmeta, 1,
					&mw);
	}
	if (rc || (rc = zn_st_writer_begin(zn_ckpt_file(c, "optimizer.safetensors"), ot,
					   3 * (size_t)t->nt, meta.kv, nmeta, &ow)))
		goto out;
	for (unsigned i = 0; i < t->nt && !rc; i++) {
		struct tstate *s = &t->t[i];
		float *a[3] = { s->master, s->m, s->v };
		if (t->nvme_opt) {
			memcpy(a, scratch, sizeof(a));
			if ((rc = tr_groups_move(&g, s, a, false)))
				break;
		}
		const float *mdata = a[0];
		if (s->d.hf_transposed) {
			tr_transpose(a[0], scratch[3], s->d.shape[0], s->d.shape[1]);
			mdata = scratch[3];
		}
		rc = hw ? zn_hf_writer_put(hw, mdata) : zn_st_writer_put(mw, mdata, mt[i].bytes);
		for (int k = 0; k < 3 && !rc; k++)
			rc = zn_st_writer_put(ow, a[k], s->d.numel * 4);
	}
	if (!rc) {
		rc = hw ? zn_hf_writer_end(hw) : zn_st_writer_end(mw);
		mw = NULL;
		hw = NULL;
	}
	if (!rc) {
		rc = zn_st_writer_end(ow);
		ow = NULL;
	}
out:
	zn_st_writer_abort(mw);
	zn_hf_writer_abort(hw);
	zn_st_writer_abort(ow);
	if (rc) {
		zn_ckpt_abort(c);
	} else {
		rc = zn_ckpt_commit(c);
		if (!rc && t->cfg.checkpoint.keep)
			zn_ckpt_prune(t->cfg.checkpoint.dir, t->cfg.checkpoint.keep);
	}
	if (t->nvme_opt)
		tr_groups_close(&g);
	for (int k = 0; k < 4; k++)
		free(scratch[k]);
	free(names);
	free(mt);
	free(ot);
	return rc;
}

/* A checkpoint is written tensor by tensor, so saving needs one tensor's
 * states in memory whatever the model's size (NVMe states come back one
 * sub-group at a time).  One rank, or replicas (stage 0): rank 0 writes
 * model.safetensors and optimizer.safetensors side by side.  Partitioned
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
	if (t->own_total == t->total)
		return agree_rc(t, t->rank == 0 ? save_whole(t) : 0, "checkpoint");
	return save_sharded(t);
}
