/* The optimizer over NVMe states: one sub-group's AdamW update writing the
 * new parameters where the next forward reads them, and the overlapped
 * update that runs it on its own thread beside the next step's forward. */
#include "zn_common.h"

#include "train/internal.h"

#include <string.h>

/* One sub-group's update: AdamW over each tensor's part of the group (its
 * own weight decay), and the new parameters straight to where the next
 * forward reads them: the device, or the tensor's home. */
int tr_nvme_update(void *user, uint64_t group, uint64_t first, uint64_t n,
		       float *const *st)
{
	struct nvme_update *u = user;
	struct zn_trainer *t = u->t;
	(void)group;
	for (unsigned i = 0; i < t->tab.nt; i++) {
		struct tstate *s = &t->t[i];
		/* Positions in this rank's own flat order; l is within its part. */
		uint64_t a = ZN_MAX(first, s->oflat), b = ZN_MIN(first + n, s->oflat + s->nown);
		if (a >= b)
			continue;
		uint64_t o = a - first, l = a - s->oflat;
		struct zn_adam_hparams h = u->hp;
		if (!s->d->decay)
			h.weight_decay = 0;
		struct zn_adam_tensors at = {
			.n = b - a, .param = st[0] + o,
			.grad = (const uint8_t *)s->grad + l * zn_dtype_size(t->gdt),
			.grad_dtype = tr_adam_dtype(t->gdt), .exp_avg = st[1] + o,
			.exp_avg_sq = st[2] + o };
		/* 16-bit homes: the update writes them as it goes (fused,
		 * vectorized, on every thread). */
		bool fused = !s->resident && t->hdt != ZN_DTYPE_F32;
		int rc;
		if (fused) {
			if ((rc = tr_home_open(t, s)))
				return rc;
			at.param_copy = (uint16_t *)s->hbuf + l;
			at.copy_dtype = tr_adam_dtype(t->hdt);
		}
		if ((rc = zn_adam_step(&h, u->step, u->grad_scale, &at, &u->ex)))
			return rc;
		if (fused) {
			rc = tr_home_close(t, s, l + (b - a));
		} else if (!s->resident) {
			rc = tr_home_put(t, s, l, st[0] + o, b - a);
		} else if (t->overlap) {
			/* The compute thread owns the device: it applies these. */
			memcpy(s->staged + l, st[0] + o, (b - a) * 4);
			s->pending = true;
		} else {
			float *dp = (float *)s->dparam + s->lo + l;
			if (!(rc = tr_to_device(t, dp, st[0] + o, (b - a) * 4)))
				rc = tr_round_to_dtype(t, dp, b - a);
			t->stats.h2d_bytes += (b - a) * 4;
		}
		if (rc)
			return rc;
		if (t->overlap && b == s->oflat + s->nown) {
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

static void *opt_main(void *arg)
{
	struct zn_trainer *t = arg;
	uint64_t t0 = zn_now_ns();
	int rc = zn_optswap_step(t->nvme.os, tr_nvme_update, &t->opt.upd);
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

int tr_opt_launch(struct zn_trainer *t)
{
	t->opt.done = 0;
	while (t->opt.done < t->tab.nt && !t->t[t->opt.done].nown)
		t->opt.done++;
	/* Resident tensors' parts are all-gathered as they are applied. */
	for (unsigned i = 0; i < t->tab.nt && t->world > 1 && t->stage >= 1; i++)
		t->t[i].sync = t->t[i].resident;
	t->opt.finished = false;
	t->opt.rc = 0;
	int err = pthread_create(&t->opt.thread, NULL, opt_main, t);
	if (err)
		return zn_error(-err, "cannot start the optimizer thread: %s", strerror(err));
	t->opt.running = true;
	return 0;
}

/* A tensor's staged new parameters onto the device. */
static int apply_staged(struct zn_trainer *t, struct tstate *s)
{
	int rc = 0;
	if (s->pending) {
		float *dp = (float *)s->dparam + s->lo;
		s->pending = false;
		if (!(rc = tr_to_device(t, dp, s->staged, s->nown * 4)))
			rc = tr_round_to_dtype(t, dp, s->nown);
		t->stats.h2d_bytes += s->nown * 4;
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
