/* Starting weights: which source the config names (a checkpoint to
 * resume, pretrained weights, or none: initialisation), and every tensor
 * made once from it, piece by piece, and sent where it lives. */
#include "zn_common.h"

#include "train/internal.h"

#include <stdatomic.h>
#include <stdio.h>
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
	/* Checkpoints from before SGD hold Adam's moments. */
	const char *os = zn_st_metadata(f, "zinc.optimizer_states");
	const char *want = tr_optimizer_states(t);
	struct zn_data_pos pos;
	if (!ms || strcmp(ms, shape) != 0) {
		rc = zn_error(-EINVAL, "checkpoint '%s' is of a different model (%s) than the config "
				       "(%s); point checkpoint.dir elsewhere or set "
				       "checkpoint.resume: false", dir, ms ? ms : "unknown", shape);
	} else if (!st || tr_hex_decode(hex, &pos, sizeof(pos))) {
		rc = zn_error(-EINVAL, "checkpoint '%s' lacks its step or data position", dir);
	} else if (!up || tr_hex_decode(sc, &t->scaler, sizeof(t->scaler))) {
		rc = zn_error(-EINVAL, "checkpoint '%s' lacks its update count or loss scaler", dir);
	} else if (strcmp(os ? os : "moments", want) != 0) {
		rc = zn_error(-EINVAL, "checkpoint '%s' holds the optimizer states of %s (%s), the "
				       "config's optimizer keeps %s: resume with the optimizer it "
				       "was saved with, or start a new run from its weights "
				       "(model.from)",
			      dir, os ? os : "moments",
			      strcmp(os ? os : "moments", "momentum") == 0
				      ? "SGD's momentum buffer"
				      : "Adam, AdamW or Lamb: exp_avg and exp_avg_sq",
			      strcmp(want, "momentum") == 0 ? "SGD's momentum buffer"
							    : "Adam's moments");
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

/* checkpoint.resume's checkpoint: the newest complete one under
 * checkpoint.dir whose files match its manifest (zn_ckpt_find: a damaged
 * one is passed over with a warning naming it and the one chosen),
 * chosen by rank 0 -- which reads every rank's files once -- and told to
 * the others.  -ENOENT: none is there (said loudly: the run starts from
 * scratch); other errors refuse the run, since complete checkpoints exist
 * and none can be trusted. */
static int choose_checkpoint(struct zn_trainer *t, char *dir, size_t len)
{
	struct {
		int32_t rc;
		char dir[4096];
	} pick = { 0 };
	if (t->rank == 0)
		pick.rc = zn_ckpt_find(t->cfg.checkpoint.dir, pick.dir, sizeof(pick.dir));
	if (t->world > 1) {
		int rc = zn_comm_broadcast(t->comm, &pick, sizeof(pick), 0);
		if (rc)
			return rc;
		if (t->rank != 0 && pick.rc && pick.rc != -ENOENT)
			return zn_error(pick.rc, "checkpoint.resume: rank 0 found no checkpoint to "
						 "resume from in '%s' (its own message says why)",
					t->cfg.checkpoint.dir);
	}
	if (pick.rc == -ENOENT) {
		if (t->rank == 0)
			zn_warn("checkpoint.resume: there is no complete checkpoint in '%s': the "
				"run starts %s", t->cfg.checkpoint.dir,
				t->cfg.model.from[0] ? "from model.from's weights" : "from scratch");
		return -ENOENT;
	}
	if (!pick.rc)
		snprintf(dir, len, "%s", pick.dir);
	return pick.rc;
}

/* The source of the starting weights: checkpoint.resume's checkpoint when
 * there is one, else model.from's weights, else none. */
int tr_open_weights(struct zn_trainer *t)
{
	const struct zn_config *cfg = &t->cfg;
	char dir[4096];
	t->src.arch = &t->arch;
	t->src.tab = &t->tab;
	t->src.seed = cfg->data.seed;
	if (cfg->checkpoint.resume && cfg->checkpoint.dir[0]) {
		int rc = choose_checkpoint(t, dir, sizeof(dir));
		if (rc == 0)
			return open_checkpoint(t, dir);
		if (rc != -ENOENT)
			return rc;
	}
	if (cfg->model.from[0])
		return tr_sources_open_pretrained(&t->src, cfg->model.from);
	return 0;
}

/* A run of a tensor's elements made in order: [lo, hi) of the tensor,
 * this rank's own in [own_lo, own_hi), element e being element
 * e - base of its part.  A resident tensor is one run, the whole tensor;
 * another is its part, or (tiled) its piece of each tile. */
struct run {
	uint64_t lo, hi, own_lo, own_hi, base;
};

/* Where elements [p, p + *n) of tensor s are made, *n at most
 * ZN_ARCH_CHUNK: this rank's own straight where its states live -- the
 * host arrays, or the NVMe sub-group the optimizer swapper lends (then
 * *n stops at the group's end) -- and (a resident tensor on several
 * ranks) the others' in *chunk, one piece long, allocated when first
 * needed. */
static int piece_at(struct zn_trainer *t, struct groups *g, const struct tstate *s,
		    const struct run *ru, uint64_t p, float **chunk, float **a, uint64_t *n)
{
	const uint64_t own_end = ru->own_hi;
	if (p < ru->own_lo || p >= own_end) {
		*n = ZN_MIN(ZN_ARCH_CHUNK, (p < ru->own_lo ? ru->own_lo : ru->hi) - p);
		if (!*chunk && !(*chunk = malloc(ZN_MIN(ZN_ARCH_CHUNK, t->tab.largest) * 4)))
			return zn_error(-ENOMEM, "out of memory");
		a[0] = *chunk;
		a[1] = a[2] = NULL;
		return 0;
	}
	*n = ZN_MIN(ZN_ARCH_CHUNK, own_end - p);
	return tr_states_at(g, s, p - ru->base, a, n);
}

/* Elements [p, p + n) of tensor s, made in a[] (a[1], a[2] NULL: not this
 * rank's), sent on: a resident tensor's to the device (rounded as the
 * training dtype rounds), this rank's to the parameters' home and the
 * device optimizer's states. */
static int piece_out(struct zn_trainer *t, struct tstate *s, uint64_t base, uint64_t p,
		     uint64_t n, float *const *a, bool fresh)
{
	int rc = 0;
	if (s->resident) {
		float *dp = (float *)s->dparam + p;
		if ((rc = tr_to_device(t, dp, a[0], n * 4)) || (rc = tr_round_to_dtype(t, dp, n)))
			return rc;
		t->stats.h2d_bytes += n * 4;
	}
	if (!a[1])
		return 0;
	const uint64_t o = p - base;
	if (!s->resident && (rc = tr_home_put(t, s, o, a[0], n)))
		return rc;
	if (!t->zr.device_opt || (rc = tr_to_device(t, s->dmaster + o, a[0], n * 4)))
		return rc;
	if (fresh && !(rc = zn_device_memset(t->dev, s->dm + o, 0, n * 4, NULL)))
		return zn_device_memset(t->dev, s->dv + o, 0, n * 4, NULL);
	if (!fresh && !(rc = tr_to_device(t, s->dm + o, a[1], n * 4)))
		return tr_to_device(t, s->dv + o, a[2], n * 4);
	return rc;
}

/* A piece made from its source on the CPU optimizer's threads, in parts
 * of READ_PART elements: initialisation (Box-Muller) and a file's
 * conversion are the start-up's compute, and spread over the cores they
 * keep pace with the disk the states go to.  The values do not depend on
 * how the piece is cut. */
#define READ_PART (UINT64_C(1) << 18)

struct read_job {
	const struct sources *src;
	unsigned i;
	uint64_t p, n;
	float *a[3];
	atomic_int failed;             /* the first failure's rc and message */
	int rc;
	char msg[512];
};

static void read_part(void *arg, size_t task, unsigned worker)
{
	(void)worker;
	struct read_job *j = arg;
	const uint64_t o = task * READ_PART, k = ZN_MIN(READ_PART, j->n - o);
	float *a[3];
	for (int q = 0; q < 3; q++)
		a[q] = j->a[q] ? j->a[q] + o : NULL;
	int rc = tr_sources_read(j->src, j->i, j->p + o, k, a[0], a[1], a[2]);
	if (rc && atomic_exchange(&j->failed, 1) == 0) {
		j->rc = rc;
		snprintf(j->msg, sizeof(j->msg), "%s", zn_last_error());
	}
}

/* Elements [p, p + n) of tensor i into a[] (a[1], a[2] NULL: not read). */
static int read_piece(struct zn_trainer *t, unsigned i, uint64_t p, uint64_t n, float *const *a)
{
	struct read_job j = { .src = &t->src, .i = i, .p = p, .n = n,
			      .a = { a[0], a[1], a[2] } };
	atomic_init(&j.failed, 0);
	zn_threadpool_for(t->pool, ZN_DIV_ROUND_UP(n, READ_PART), read_part, &j);
	return j.rc ? zn_error(j.rc, "%s", j.msg) : 0;
}

/* Every tensor once, in order, a piece of at most ZN_ARCH_CHUNK elements
 * at a time: made from its source where this rank keeps its states (host
 * arrays, or the NVMe sub-groups filled in the optimizer swapper's own
 * buffers), then sent where the parameters live (device, home).  No
 * buffer holds a tensor or a sub-group: only a resident tensor's elements
 * of other ranks pass through one of a piece. */
int tr_materialize(struct zn_trainer *t)
{
	struct groups g = { 0 };
	float *chunk = NULL;
	/* Without a checkpoint the moments start at zero: the host arrays
	 * come zeroed (calloc), the sub-groups and the device are zeroed. */
	const bool fresh = !t->src.ckpt && !t->src.shards;
	int rc = 0;
	if (t->zr.nvme_opt)
		tr_groups_open(&g, t, true);
	for (unsigned i = 0; i < t->tab.nt && !rc; i++) {
		struct tstate *s = &t->t[i];
		/* The device holds a resident tensor whole; the rest is this
		 * rank's part, tile by tile when tiled. */
		for (unsigned k = 0; k < s->ntiles && !rc; k++) {
			struct zn_zero_piece pc;
			tr_piece(t, s, k, &pc);
			const uint64_t lo = pc.first + pc.lo, hi = lo + pc.len;
			const struct run ru = { .lo = s->resident ? 0 : lo,
						.hi = s->resident ? s->d->numel : hi,
						.own_lo = lo, .own_hi = hi, .base = lo - pc.own };
			/* An empty part's (a tile's empty piece's) home is
			 * written too. */
			if (!s->resident && !pc.len)
				rc = tr_home_put_empty(t, s, k);
			for (uint64_t p = ru.lo, n = 0; p < ru.hi && !rc; p += n) {
				float *a[3];
				if ((rc = piece_at(t, &g, s, &ru, p, &chunk, a, &n)))
					break;
				/* Fresh moments: zeros (the host arrays have them). */
				const bool moments = !fresh || t->zr.nvme_opt;
				float *read[3] = { a[0], moments ? a[1] : NULL,
						   moments ? a[2] : NULL };
				if (!(rc = read_piece(t, i, p, n, read)))
					rc = piece_out(t, s, ru.base, p, n, a, fresh);
			}
		}
	}
	if (!rc && t->homes.sw)
		rc = zn_swapper_flush(t->homes.sw);
	if (t->zr.nvme_opt)
		rc = tr_groups_finish(&g, rc); /* the last group's write */
	free(chunk);
	return rc;
}
