/* The optimizer: AdamW (or SGD, or Lamb) over every tensor this rank owns
 * (its part) -- the CPU optimizer on host states, the kernels' Adam on the
 * device, or the CPU optimizer streaming NVMe states sub-group by
 * sub-group -- and what then happens to the new parameters, written once
 * for all three; and the overlapped update, which runs the NVMe one on its
 * own thread beside the next step's forward.  Lamb's trust ratio needs each
 * whole tensor's norms before any element moves: a first pass over every
 * tensor's part (summed over the ranks' parts) comes before the update. */
#include "zn_common.h"

#include "train/internal.h"

#include <string.h>

/* Weight decay on matrices only by default, as GPT-2/llm.c, nanoGPT and
 * the Hugging Face Trainer do (not biases, norms); on every parameter with
 * optimizer.params.weight_decay_params: all, as DeepSpeed's optimizer
 * decays whatever parameters a script passes it. */
static struct zn_adam_hparams hparams_for(const struct zn_trainer *t,
					  const struct zn_adam_hparams *hp, const struct tstate *s)
{
	struct zn_adam_hparams h = *hp;
	if (!s->d->decay && t->cfg.optimizer.params.weight_decay_params != ZN_DECAY_ALL)
		h.weight_decay = 0;
	return h;
}

/* Elements [l, l + n) of a resident tensor's part, new fp32 values, onto
 * the device, rounded to the training dtype as parameters are. */
static int params_to_device(struct zn_trainer *t, struct tstate *s, uint64_t l, uint64_t n,
			    const float *src)
{
	float *dp = (float *)s->dparam + s->lo + l;
	int rc = n ? tr_to_device(t, dp, src, n * 4) : 0;
	if (!n || rc)
		return rc;
	t->stats.h2d_bytes += n * 4;
	return tr_round_to_dtype(t, dp, n);
}

/* What happens to new parameters after Adam, for elements [l, l + n) of a
 * tensor's part (within one tile of a tiled one).  Before the update:
 * 16-bit homes are written by the update itself (fused, vectorized, on
 * every thread), into the home's buffer (its tile's: held from the tile's
 * first element to its last, as sub-groups cut tensors). */
static int update_begin(struct zn_trainer *t, struct tstate *s, uint64_t l,
			struct zn_adam_tensors *at)
{
	if (s->resident || t->zr.hdt == ZN_DTYPE_F32)
		return 0;
	int rc = tr_home_open(t, s, l);
	if (!rc) {
		at->param_copy = (uint16_t *)s->hbuf + (l - tr_tile_first(s, s->htile));
		at->copy_dtype = t->zr.hdt;
	}
	return rc;
}

/* After it, `src` (the n new fp32 values) goes where the next forward
 * reads it: the fused home is closed, an fp32 home written, and a
 * resident tensor's values go onto the device -- or, with the update on
 * its own thread, are staged for the compute thread, which owns the
 * device, to apply. */
static int update_end(struct zn_trainer *t, struct tstate *s, uint64_t l, uint64_t n,
		      const float *src)
{
	if (!s->resident && t->zr.hdt != ZN_DTYPE_F32)
		return tr_home_close(t, s, l + n);
	if (!s->resident)
		return tr_home_put(t, s, l, src, n);
	if (t->zr.overlap) {
		memcpy(s->staged + l, src, n * 4);
		s->pending = true;
		return 0;
	}
	return params_to_device(t, s, l, n, src);
}

const char *tr_optimizer_states(const struct zn_trainer *t)
{
	return t->cfg.optimizer.type == ZN_OPT_SGD ? "momentum" : "moments";
}

/* One piece's update by the configured optimizer.  SGD keeps its momentum
 * buffer in exp_avg (exp_avg_sq stays zero); Lamb's moments were updated by
 * lamb_norms, so this is its second pass, at the tensor's trust ratio. */
static int optimizer_run(const struct zn_trainer *t, const struct tstate *s,
			 const struct zn_adam_hparams *h, uint64_t step, float grad_scale,
			 const struct zn_adam_tensors *at, const struct zn_adam_exec *ex)
{
	switch (t->cfg.optimizer.type) {
	case ZN_OPT_SGD:
		return zn_sgd_step(h, step, grad_scale, at, ex);
	case ZN_OPT_LAMB:
		return zn_lamb_apply(h, step, zn_lamb_trust_ratio(h, &s->lamb), at, ex);
	default:
		return zn_adam_step(h, step, grad_scale, at, ex);
	}
}

/* The optimizer over elements [l, l + at->n) of a tensor's part, whose states and
 * gradients `whole` points at, a tile at a time for a tiled tensor (the
 * update is elementwise: the pieces give the bits the whole would), each
 * piece's new parameters sent on by update_begin / update_end. */
static int update_part(struct zn_trainer *t, struct tstate *s, const struct zn_adam_hparams *hp,
		       uint64_t step, float grad_scale, const struct zn_adam_exec *ex, uint64_t l,
		       const struct zn_adam_tensors *whole)
{
	struct zn_adam_hparams h = hparams_for(t, hp, s);
	const size_t gsz = zn_dtype_size(whole->grad_dtype);
	int rc = 0;
	uint64_t done = 0;
	do { /* once at least: an empty part's home is written too */
		const uint64_t k = tr_tile_span(s, l + done, whole->n - done);
		struct zn_adam_tensors at = *whole;
		at.n = k;
		at.param += done;
		at.exp_avg += done;
		at.exp_avg_sq += done;
		at.grad = (const uint8_t *)whole->grad + done * gsz;
		if (!(rc = update_begin(t, s, l + done, &at)) &&
		    !(rc = optimizer_run(t, s, &h, step, grad_scale, &at, ex)))
			rc = update_end(t, s, l + done, k, at.param);
		done += k;
	} while (done < whole->n && !rc);
	return rc;
}

/* Tensor s's piece of a sub-group of `n` elements from `first` (positions
 * in this rank's own flat order), as optimizer arrays over the group's
 * states `st`; *l gets the piece's offset within the tensor's part.
 * false when the tensor has nothing in the group. */
static bool group_piece(const struct zn_trainer *t, const struct tstate *s, uint64_t first,
			uint64_t n, float *const *st, struct zn_adam_tensors *at, uint64_t *l)
{
	uint64_t a = ZN_MAX(first, s->oflat), b = ZN_MIN(first + n, s->oflat + s->nown);
	if (a >= b)
		return false;
	uint64_t o = a - first;
	*l = a - s->oflat;
	/* Gradients: NVMe ones beside the states, in the group. */
	const size_t esz = zn_dtype_size(t->zr.gdt);
	const uint8_t *grad = s->gnvme ? (const uint8_t *)st[ZN_ZERO_STATES] + o * esz
				       : (const uint8_t *)s->grad + *l * esz;
	*at = (struct zn_adam_tensors){ .n = b - a, .param = st[0] + o, .grad = grad,
					.grad_dtype = t->zr.gdt, .exp_avg = st[1] + o,
					.exp_avg_sq = st[2] + o };
	return true;
}

/* One sub-group's update: AdamW over each tensor's part of the group (its
 * own weight decay), and the new parameters straight to where the next
 * forward reads them.  With the overlapped update, the tensors done are
 * published for the fetches waiting on them. */
static int nvme_update(void *user, uint64_t group, uint64_t first, uint64_t n,
		       float *const *st)
{
	struct nvme_update *u = user;
	struct zn_trainer *t = u->t;
	(void)group;
	for (unsigned i = 0; i < t->tab.nt; i++) {
		struct tstate *s = &t->t[i];
		struct zn_adam_tensors at;
		uint64_t l;
		if (!group_piece(t, s, first, n, st, &at, &l))
			continue;
		int rc = update_part(t, s, &u->hp, u->step, u->grad_scale, &u->ex, l, &at);
		if (rc)
			return rc;
		if (t->zr.overlap && l + at.n == s->nown) {
			/* Tensors this rank owns nothing of are done too. */
			unsigned j = i + 1;
			while (j < t->tab.nt && !t->t[j].nown)
				j++;
			pthread_mutex_lock(&t->opt.lock);
			t->opt.done = j;
			pthread_cond_broadcast(&t->opt.cond);
			pthread_mutex_unlock(&t->opt.lock);
		}
	}
	return 0;
}

/* Lamb's first pass over one sub-group: each tensor's piece's moments,
 * its norm sums added to the tensor's (the group's states, m and v new,
 * are written back by the swapper; the update reads them again). */
static int nvme_lamb_norms(void *user, uint64_t group, uint64_t first, uint64_t n,
			   float *const *st)
{
	struct nvme_update *u = user;
	struct zn_trainer *t = u->t;
	(void)group;
	for (unsigned i = 0; i < t->tab.nt; i++) {
		struct tstate *s = &t->t[i];
		struct zn_adam_tensors at;
		uint64_t l;
		if (!group_piece(t, s, first, n, st, &at, &l))
			continue;
		struct zn_adam_hparams h = hparams_for(t, &u->hp, s);
		int rc = zn_lamb_moments(&h, u->step, u->grad_scale, &at, &u->ex, &s->lamb);
		if (rc)
			return rc;
	}
	return 0;
}

/* Host states: the CPU optimizer over the tensor's part, unscaling and clipping
 * fused into the update. */
static int host_update(struct zn_trainer *t, struct tstate *s, const struct zn_adam_hparams *hp,
		       uint64_t step, float grad_scale, const struct zn_adam_exec *ex)
{
	struct zn_adam_tensors at = { .n = s->nown, .param = s->master, .grad = s->grad,
				      .grad_dtype = t->zr.gdt, .exp_avg = s->m,
				      .exp_avg_sq = s->v };
	return update_part(t, s, hp, step, grad_scale, ex, 0, &at);
}

/* On the device: the kernels' Adam, then the new master becomes the
 * parameters.  Several ranks: over this rank's part, with its reduced
 * gradients from the host. */
static int device_update(struct zn_trainer *t, struct tstate *s, const struct zn_adam_hparams *hp,
			 uint64_t step, float grad_scale)
{
	struct zn_adam_hparams h = hparams_for(t, hp, s);
	const float *dg = s->dgrad;
	float *dp = s->dhome ? s->dhome : (float *)s->dparam + s->lo;
	int rc;
	if (t->world > 1) {
		zn_dtype_to_f32(t->gstage, s->grad, t->zr.gdt, s->nown);
		if ((rc = tr_to_device(t, t->dopt.gscratch, t->gstage, s->nown * 4)))
			return rc;
		dg = t->dopt.gscratch;
	}
	if (!s->nown)
		return 0;
	if ((rc = t->k->adam(t->kctx, &h, step, grad_scale, s->dmaster, dg, s->dm, s->dv,
			     s->nown)) ||
	    (rc = zn_device_stream_synchronize(t->stream)) ||
	    (rc = zn_device_copy_async(t->dev, dp, s->dmaster, s->nown * 4,
				       ZN_COPY_DEVICE_TO_DEVICE, NULL)))
		return rc;
	return tr_round_to_dtype(t, dp, s->nown);
}

/* ---- the overlapped update ------------------------------------------------- */

static void *opt_main(void *arg)
{
	struct zn_trainer *t = arg;
	uint64_t t0 = zn_now_ns();
	int rc = zn_optswap_step(t->nvme.os, nvme_update, &t->opt.upd);
	pthread_mutex_lock(&t->opt.lock);
	t->opt.rc = rc;
	if (rc)
		snprintf(t->opt.msg, sizeof(t->opt.msg), "%s", zn_last_error());
	t->opt.ns = zn_now_ns() - t0;
	t->opt.finished = true;
	pthread_cond_broadcast(&t->opt.cond);
	pthread_mutex_unlock(&t->opt.lock);
	return NULL;
}

static int opt_launch(struct zn_trainer *t)
{
	t->opt.done = 0;
	while (t->opt.done < t->tab.nt && !t->t[t->opt.done].nown)
		t->opt.done++;
	/* Resident tensors' parts are all-gathered as they are applied. */
	for (unsigned i = 0; i < t->tab.nt && t->world > 1 && t->zr.stage >= 1; i++)
		t->t[i].sync = t->t[i].resident;
	t->opt.finished = false;
	t->opt.rc = 0;
	int err = pthread_create(&t->opt.thread, NULL, opt_main, t);
	if (err)
		return zn_error(-err, "cannot start the optimizer thread: %s", strerror(err));
	pthread_setname_np(t->opt.thread, "zn-update");
	t->opt.running = true;
	return 0;
}

/* A tensor's staged new parameters onto the device. */
static int apply_staged(struct zn_trainer *t, struct tstate *s)
{
	int rc = 0;
	if (s->pending) {
		s->pending = false;
		rc = params_to_device(t, s, 0, s->nown, s->staged);
	}
	/* Several ranks: every rank's new part, on every rank. */
	if (!rc && s->sync) {
		s->sync = false;
		rc = tr_params_allgather(t, s);
	}
	return rc;
}

/* The update is over: join it, apply what it staged, report how it went. */
int tr_opt_wait_all(struct zn_trainer *t)
{
	if (!t->opt.running)
		return 0;
	uint64_t t0 = zn_now_ns();
	pthread_join(t->opt.thread, NULL);
	t->opt.running = false;
	t->stats.stall_ns += zn_now_ns() - t0;
	t->opt.joined = true;
	zn_optswap_last_stats(t->nvme.os, &t->opt.stats);
	if (t->opt.rc)
		return zn_error(t->opt.rc, "%s", t->opt.msg);
	int rc = 0;
	for (unsigned i = 0; i < t->tab.nt && !rc; i++)
		rc = apply_staged(t, &t->t[i]);
	return rc;
}

/* Until the update has finished the layer's tensors; then its resident
 * tensors' new values go onto the device. */
int tr_opt_wait_layer(struct zn_trainer *t, unsigned layer)
{
	unsigned need = t->tab.first[layer] + t->tab.count[layer];
	uint64_t t0 = zn_now_ns();
	bool failed;
	pthread_mutex_lock(&t->opt.lock);
	while (t->opt.done < need && !t->opt.finished)
		pthread_cond_wait(&t->opt.cond, &t->opt.lock);
	failed = t->opt.finished && t->opt.rc;
	pthread_mutex_unlock(&t->opt.lock);
	t->stats.stall_ns += zn_now_ns() - t0;
	if (failed)
		return tr_opt_wait_all(t);
	int rc = 0;
	for (unsigned i = 0; i < t->tab.count[layer] && !rc; i++)
		rc = apply_staged(t, &t->t[t->tab.first[layer] + i]);
	return rc;
}

/* How many tensors (in order) hold their new parameters: all but those
 * the overlapped update has yet to write. */
unsigned tr_opt_done(struct zn_trainer *t)
{
	if (!t->opt.running)
		return t->tab.nt;
	pthread_mutex_lock(&t->opt.lock);
	unsigned done = t->opt.finished ? t->tab.nt : t->opt.done;
	pthread_mutex_unlock(&t->opt.lock);
	return done;
}

/* Lamb's norm sums of each tensor partitioned over ranks (ZeRO parts),
 * summed over the ranks in rank order, two tensors per exchange. */
static int lamb_sum_ranks(struct zn_trainer *t)
{
	int rc = 0;
	for (unsigned i = 0; i < t->tab.nt && !rc && t->zr.parts > 1; i += 2) {
		double v[4] = { t->t[i].lamb.param_sumsq, t->t[i].lamb.update_sumsq };
		unsigned k = i + 1 < t->tab.nt ? 4 : 2;
		if (k == 4) {
			v[2] = t->t[i + 1].lamb.param_sumsq;
			v[3] = t->t[i + 1].lamb.update_sumsq;
		}
		if ((rc = tr_sum_doubles(t, v, k)))
			break;
		t->t[i].lamb = (struct zn_lamb_sums){ v[0], v[1] };
		if (k == 4)
			t->t[i + 1].lamb = (struct zn_lamb_sums){ v[2], v[3] };
	}
	return rc;
}

/* Lamb's first pass: every tensor's moments and its norm sums over the
 * whole tensor -- host states a part at a time, NVMe states a sub-group
 * at a time (one more pass of the swapper), then over the ranks.  On the
 * calling thread, before the update (and its thread) starts, so the
 * ranks' exchange is the compute thread's. */
static int lamb_norms(struct zn_trainer *t, const struct zn_adam_hparams *hp, uint64_t step,
		      float grad_scale, const struct zn_adam_exec *ex)
{
	int rc = 0;
	for (unsigned i = 0; i < t->tab.nt; i++)
		t->t[i].lamb = (struct zn_lamb_sums){ 0 };
	if (t->nvme.os) {
		struct nvme_update u = { .t = t, .hp = *hp, .grad_scale = grad_scale, .step = step,
					 .ex = *ex };
		rc = zn_optswap_step(t->nvme.os, nvme_lamb_norms, &u);
	}
	for (unsigned i = 0; i < t->tab.nt && !rc && !t->nvme.os; i++) {
		struct tstate *s = &t->t[i];
		struct zn_adam_hparams h = hparams_for(t, hp, s);
		struct zn_adam_tensors at = { .n = s->nown, .param = s->master, .grad = s->grad,
					      .grad_dtype = t->zr.gdt, .exp_avg = s->m,
					      .exp_avg_sq = s->v };
		rc = zn_lamb_moments(&h, step, grad_scale, &at, ex, &s->lamb);
	}
	return rc ? rc : lamb_sum_ranks(t);
}

/* The update of one step over every tensor this rank owns: the optimizer
 * at hp's learning rate (and betas), gradients multiplied by grad_scale
 * (unscaling and clipping), the optimizer's step updates + 1; the new
 * parameters where the next forward reads them.  Lamb's norm pass first,
 * on this thread.  NVMe states stream through the sub-groups, on the
 * optimizer's thread with the overlapped update (joined by the next
 * fetches, tr_opt_wait_*). */
int tr_optimizer_step(struct zn_trainer *t, const struct zn_adam_hparams *hp, float grad_scale,
		      const struct zn_adam_exec *ex)
{
	const uint64_t step = t->updates + 1;
	int rc = 0;
	/* Lamb runs on the CPU optimizer only (the trainer refuses it on
	 * the device). */
	if (t->cfg.optimizer.type == ZN_OPT_LAMB && !t->zr.device_opt &&
	    (rc = lamb_norms(t, hp, step, grad_scale, ex)))
		return rc;
	if (t->nvme.os) {
		t->opt.upd = (struct nvme_update){ .t = t, .hp = *hp, .grad_scale = grad_scale,
						   .step = step, .ex = *ex };
		if (t->zr.overlap)
			return opt_launch(t);
		if ((rc = zn_optswap_step(t->nvme.os, nvme_update, &t->opt.upd)) ||
		    (t->homes.sw && (rc = zn_swapper_flush(t->homes.sw))))
			return rc;
		return tr_params_allgather_all(t);
	}
	for (unsigned i = 0; i < t->tab.nt && !rc; i++)
		rc = t->zr.device_opt ? device_update(t, &t->t[i], hp, step, grad_scale)
				   : host_update(t, &t->t[i], hp, step, grad_scale, ex);
	if (!rc)
		rc = tr_params_allgather_all(t);
	if (!rc && t->homes.sw)
		rc = zn_swapper_flush(t->homes.sw);
	return rc;
}
