/* Training: one micro-batch's forward and backward, the optimizer step in
 * its stages (zero, passes, gradients and norm, overflow, update, report)
 * and evaluation. */
#include "zn_common.h"

#include "train/internal.h"

#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "zinc/trace.h"

/* One micro-batch (B, T) from `d` (synthetic: random tokens): the forward
 * and, with `backward`, the backward, the gradients of the mean loss
 * scaled by the loss scale and divided by scale_den (micro-batches x
 * ranks).  *loss: the mean loss over the targets counted (>= 0). */
static int micro(struct zn_trainer *t, struct zn_data *d, bool backward, float scale_den,
		 double *loss)
{
	const size_t BT = (size_t)t->B * (size_t)t->T;
	const float *dloss;
	int rc = 0;
	if (t->data.synthetic) {
		/* xorshift tokens: a benchmark needs shapes, not meaning. */
		const uint64_t V = (uint64_t)zn_arch_vocab(&t->arch);
		for (size_t i = 0; i < BT; i++) {
			t->data.rng ^= t->data.rng << 13;
			t->data.rng ^= t->data.rng >> 7;
			t->data.rng ^= t->data.rng << 17;
			t->data.hin[i] = (int32_t)(t->data.rng % V);
			t->data.htgt[i] = (int32_t)((t->data.rng >> 20) % V);
		}
	} else if ((rc = zn_data_next_batch(d, t->data.hin, t->data.htgt)) != 0) {
		return rc;
	}
	unsigned counted = 0;
	for (size_t i = 0; i < BT; i++)
		counted += t->data.htgt[i] >= 0;
	/* The previous micro-batch's backward may still be running on the
	 * compute stream and reads din (the embedding's backward, last): the
	 * synchronous copies below are not ordered after it. */
	if ((rc = zn_device_stream_synchronize(t->stream)) ||
	    (rc = tr_to_device(t, t->data.din, t->data.hin, BT * 4)) ||
	    (rc = tr_to_device(t, t->data.dtgt, t->data.htgt, BT * 4)))
		return rc;
	struct zn_param_source src = tr_param_source(t);
	/* DeepSpeed's scaling: each micro-batch's mean loss, divided by the
	 * accumulation steps. */
	float gs = counted ? (float)(backward ? t->scaler.scale : 1.0) /
				     ((float)counted * scale_den)
			   : 0.0f;
	uint64_t t0 = zn_now_ns();
	t->fetch.direction = 1;
	rc = zn_arch_forward(&t->model, &src, t->data.din, t->data.dtgt, backward, gs, &dloss);
	uint64_t t1 = zn_now_ns();
	t->stats.compute_ns += t1 - t0;
	zn_trace_span(t->trace, backward ? "forward" : "eval", "compute", "device", t0, t1, 0);
	/* The previous update read the gradient accumulators this backward
	 * is about to write: it must be over (the forward waited for every
	 * tensor already; this also takes its last writes). */
	if (!rc && backward)
		rc = tr_opt_wait_all(t);
	if (!rc && backward && !(rc = tr_grads_pass_begin(t))) {
		t->fetch.direction = -1;
		rc = zn_arch_backward(&t->model, &src, t->data.din);
		uint64_t t2 = zn_now_ns();
		t->stats.compute_ns += t2 - t1;
		zn_trace_span(t->trace, "backward", "compute", "device", t1, t2, 0);
		/* Its gradients on NVMe are written (or the error says why). */
		int r = tr_grads_pass_end(t);
		rc = rc ? rc : r;
	}
	if (!rc)
		rc = zn_device_stream_synchronize(t->stream);
	if (!rc)
		rc = tr_to_host(t, t->data.hloss, dloss, BT * 4);
	if (rc)
		return rc;
	double sum = 0;
	for (size_t i = 0; i < BT; i++)
		sum += t->data.hloss[i];
	*loss = counted ? sum / counted : 0;
	return 0;
}

/* What a step carries from one stage to the next, and into its report. */
struct step {
	uint64_t t0, ta;               /* the step's and the optimizer's start, ns */
	struct counters c0;            /* the counters at the start */
	uint64_t nvme_read0, nvme_write0; /* the homes' NVMe bytes at the start */
	double loss_sum;               /* over this rank's micro-batches, then all ranks' */
	double sumsq;                  /* the scaled gradients' squared norm */
	bool finite;                   /* no Inf or NaN in any gradient */
	double scale;                  /* the loss scale the gradients carry */
	double norm, lr, beta1, beta2;
	bool skipped;                  /* fp16 overflow: no update */
};

/* The homes' NVMe traffic so far (the optimizer's is counted apart). */
static void homes_nvme(const struct zn_trainer *t, uint64_t *rd, uint64_t *wr)
{
	*rd = *wr = 0;
	if (t->homes.sw) {
		struct zn_swapper_stats st;
		zn_swapper_get_stats(t->homes.sw, &st);
		*rd = st.bytes_read[ZN_TIER_NVME];
		*wr = st.bytes_written[ZN_TIER_NVME];
	}
}

/* Gradients start at zero: those that accumulate on the device over the
 * step's micro-batches (resident tensors) are zeroed now; the others
 * leave at each release, the first micro-batch's copy starting their
 * host accumulators.  offload_param: the fetch trace is recorded on a step
 * without one and followed on the next. */
static int step_begin(struct zn_trainer *t, struct step *st)
{
	st->t0 = zn_now_ns();
	t->stats.compute_ns = 0;
	t->opt.joined = false;
	st->c0 = t->stats;
	homes_nvme(t, &st->nvme_read0, &st->nvme_write0);
	if (t->zr.grads_nvme)
		zn_optswap_grads_stats(t->nvme.os, &t->gstats0);
	for (unsigned i = 0; i < t->tab.nt; i++) {
		const struct tstate *s = &t->t[i];
		int rc = s->dev_grads ? zn_device_memset(t->dev, s->dgrad, 0, s->d->numel * 4, NULL)
				      : 0;
		if (rc)
			return rc;
		/* No tied tile's classifier part waits from a step that failed
		 * between the classifier and the encoder. */
		for (unsigned k = 0; s->folded && k < s->ntiles; k++)
			s->folded[k] = false;
	}
	if (t->zr.offload_param) {
		t->fetch.tracking = true;
		t->fetch.pos = 0;
		if (!t->fetch.ok) {
			t->fetch.recording = true;
			t->fetch.n = 0;
		}
	}
	return 0;
}

/* Forward and backward over the step's micro-batches, gradients adding
 * up; DeepSpeed averages the loss over micro-batches and ranks. */
static int accumulate(struct zn_trainer *t, struct step *st)
{
	for (uint32_t a = 0; a < t->accum; a++) {
		double l;
		t->micro_i = a;
		int rc = micro(t, t->data.train, true, (float)(t->accum * (uint32_t)t->world), &l);
		if (rc) {
			t->fetch.tracking = t->fetch.recording = false;
			return rc;
		}
		st->loss_sum += l;
	}
	return 0;
}

/* The passes are over: the last buckets' reductions (several ranks), no
 * gathered or kept parameters outlive the update, the trace is recorded,
 * and every gradient that left at a release is in its accumulator. */
static int passes_end(struct zn_trainer *t)
{
	int rc;
	if (t->buckets.b[0].buf && (rc = tr_grads_settle_all(t)))
		return rc;
	if (t->gathers.buf && (rc = tr_gather_drain(t)))
		return rc;
	if (!t->zr.offload_param)
		return 0;
	if (t->fetch.recording)
		t->fetch.ok = true;
	t->fetch.tracking = t->fetch.recording = false;
	tr_drop_kept(t);
	if (!t->flights.copy)
		return 0;
	rc = tr_flights_reap(t, true);
	return rc ? rc : zn_device_stream_synchronize(t->flights.copy);
}

/* The device optimizer on one rank: the norm and the overflow check on
 * the device, over the gradients rounded to the training dtype; two
 * scalars come back. */
static int norm_on_device(struct zn_trainer *t, struct step *st)
{
	double zero = 0;
	int32_t flag = 0;
	int rc;
	if ((rc = tr_to_device(t, t->dopt.sumsq, &zero, sizeof(zero))) ||
	    (rc = tr_to_device(t, t->dopt.flag, &flag, sizeof(flag))))
		return rc;
	for (unsigned i = 0; i < t->tab.nt; i++) {
		struct tstate *s = &t->t[i];
		if ((rc = tr_round_to_dtype(t, s->dgrad, s->d->numel)))
			return rc;
		/* A tiled tensor's share tile by tile, as everywhere. */
		for (uint64_t k = 0; k < zn_zero_tiles(&t->zr, s->d); k++) {
			uint64_t first, n;
			zn_zero_tile(&t->zr, s->d, k, &first, &n);
			const float *g = (const float *)s->dgrad + first;
			if ((rc = t->k->sumsq(t->kctx, t->dopt.sumsq, g, ZN_DTYPE_F32, n)) ||
			    (rc = t->k->nonfinite(t->kctx, t->dopt.flag, g, ZN_DTYPE_F32, n)))
				return rc;
		}
	}
	if ((rc = zn_device_stream_synchronize(t->stream)) ||
	    (rc = tr_to_host(t, &st->sumsq, t->dopt.sumsq, sizeof(st->sumsq))) ||
	    (rc = tr_to_host(t, &flag, t->dopt.flag, sizeof(flag))))
		return rc;
	st->finite = flag == 0 && isfinite(st->sumsq);
	return 0;
}

/* Otherwise: gradients that accumulated on the device cross (and are
 * reduced over the ranks) now, the others did at release; the norm and
 * the overflow check over this rank's accumulators, then over every
 * rank's part (stage 0's ranks each hold all of it, already summed). */
static int norm_on_host(struct zn_trainer *t, struct step *st, const struct zn_adam_exec *ex)
{
	int rc;
	for (unsigned i = 0; i < t->tab.nt; i++) {
		struct tstate *s = &t->t[i];
		if (s->dev_grads && (rc = t->world > 1 ? tr_grads_reduce(t, s, true)
						       : tr_grads_to_host(t, s, true)))
			return rc;
	}
	if (t->buckets.b[0].buf && (rc = tr_grads_settle_all(t)))
		return rc;
	const size_t gsz = zn_dtype_size(t->zr.gdt);
	for (unsigned i = 0; i < t->tab.nt; i++) {
		struct tstate *s = &t->t[i];
		/* A tiled tensor's shares tile by tile (in every placement, so
		 * one rank's norm is the same bits; several ranks take their
		 * pieces', or a whole part's); NVMe gradients' were taken as
		 * they left. */
		const bool whole = !s->tiled && t->world > 1;
		const uint64_t tiles = s->tile_rows && !whole ? zn_zero_tiles(&t->zr, s->d) : 1;
		for (uint64_t k = 0; k < tiles; k++) {
			uint64_t first = 0, n = s->nown;
			if (s->tiled) {
				struct zn_zero_piece pc;
				tr_piece(t, s, (unsigned)k, &pc);
				first = pc.own;
				n = pc.len;
			} else if (tiles > 1) {
				zn_zero_tile(&t->zr, s->d, k, &first, &n);
			}
			struct zn_adam_grad_stats gst = { .sumsq = 0, .finite = true };
			if (s->gnvme)
				gst = (struct zn_adam_grad_stats){ .sumsq = s->gsq[k],
								   .finite = s->gfin[k] };
			else if (n && (rc = zn_adam_grad_check((const uint8_t *)s->grad +
								       first * gsz,
							       t->zr.gdt, n, ex, &gst)))
				return rc;
			st->sumsq += gst.sumsq;
			st->finite &= gst.finite;
		}
	}
	if (t->world > 1 && t->own_total < t->tab.total) {
		double v[2] = { st->sumsq, st->finite ? 0 : 1 };
		if ((rc = tr_sum_doubles(t, v, 2)))
			return rc;
		st->sumsq = v[0];
		st->finite = v[1] == 0;
	}
	return 0;
}

/* The mean loss over every rank's micro-batches (added in rank order), and
 * the global norm of the (scaled) gradients in the training dtype. */
static int gradients(struct zn_trainer *t, struct step *st, const struct zn_adam_exec *ex)
{
	uint64_t tg = zn_now_ns();
	st->finite = true;
	st->scale = t->scaler.scale;
	int rc = tr_sum_doubles(t, &st->loss_sum, 1);
	if (!rc)
		rc = t->zr.device_opt && t->world == 1 ? norm_on_device(t, st)
						     : norm_on_host(t, st, ex);
	if (rc)
		return rc;
	zn_trace_span(t->trace, "gradients to host", "copy", "copies", tg, zn_now_ns(), 0);
	st->norm = sqrt(st->sumsq) / st->scale;
	return 0;
}

/* Non-finite gradients: an error in fp32 and bf16 (the loss diverged); in
 * fp16 an overflow -- the update is skipped and the loss scale lowered
 * (DeepSpeed). */
static int overflow(struct zn_trainer *t, struct step *st)
{
	if (st->finite)
		return 0;
	if (t->zr.dtype != ZN_DTYPE_F16)
		return zn_error(-ERANGE, "step %" PRIu64 ": the gradients hold Inf or NaN (the loss "
					 "diverged); lower optimizer.params.lr or set "
					 "gradient_clipping",
				t->step + 1);
	st->skipped = true;
	int rc = zn_loss_scaler_update(&t->scaler, true);
	if (rc)
		return zn_error(rc, "step %" PRIu64 ": fp16 gradients overflow even at the "
				    "minimum loss scale %g; raise fp16.min_loss_scale "
				    "or train in bf16",
				t->step + 1, t->scaler.min_scale);
	zn_info("step %" PRIu64 ": fp16 gradient overflow; step skipped, loss scale "
		"lowered to %g", t->step + 1, t->scaler.scale);
	return 0;
}

/* The optimizer at the schedule's learning rate, the gradients unscaled
 * and clipped (DeepSpeed's clipping: by max_norm / (norm + 1e-6) when
 * above max_norm); then the step is counted. */
static int update(struct zn_trainer *t, struct step *st, const struct zn_adam_exec *ex)
{
	float clip = 1.0f;
	if (t->cfg.gradient_clipping > 0 && st->norm > t->cfg.gradient_clipping)
		clip = (float)(t->cfg.gradient_clipping / (st->norm + 1e-6));
	struct zn_adam_hparams hp = t->hp;
	hp.lr = st->lr = zn_lr_at(&t->sched, t->updates);
	/* OneCycle with cycle_momentum sets the betas each step, as
	 * DeepSpeed's sets param_group['betas']. */
	zn_betas_at(&t->sched, t->updates, &hp.beta1, &hp.beta2);
	st->beta1 = hp.beta1;
	st->beta2 = hp.beta2;
	st->ta = zn_now_ns();
	int rc = st->skipped ? 0 : tr_optimizer_step(t, &hp, (float)(clip / st->scale), ex);
	if (rc)
		return rc;
	zn_trace_span(t->trace, st->skipped ? "skipped (overflow)" : "adam + params to device",
		      "optimizer", "host", st->ta, zn_now_ns(), 0);
	if (!st->skipped) {
		t->updates++;
		if ((rc = zn_loss_scaler_update(&t->scaler, false)))
			return rc;
	}
	t->step++;
	return 0;
}

/* Where the step's time went and what it moved. */
static void report(struct zn_trainer *t, const struct step *st, struct zn_step_info *out)
{
	struct zn_device_memstats ms;
	const struct counters *c = &t->stats, *c0 = &st->c0;
	uint64_t rd, wr;
	zn_device_memstats(t->dev, &ms);
	homes_nvme(t, &rd, &wr);
	uint64_t now = zn_now_ns();
	*out = (struct zn_step_info){
		.step = t->step, .loss = st->loss_sum / (t->accum * (uint32_t)t->world),
		.lr = st->lr, .beta1 = st->beta1, .beta2 = st->beta2, .grad_norm = st->norm,
		.tokens = (uint64_t)t->B * (uint64_t)t->T * t->accum * (uint64_t)t->world,
		.step_s = (double)(now - st->t0) / 1e9, .device_bytes = ms.in_use,
		.device_peak = ms.peak, .host_bytes = t->host_bytes,
		.loss_scale = st->scale, .skipped = st->skipped,
		.compute_s = (double)c->compute_ns / 1e9,
		.optimizer_s = t->zr.overlap ? (t->opt.joined ? (double)t->opt.ns / 1e9 : 0)
					  : (double)(now - st->ta) / 1e9,
		.stall_s = (double)(c->stall_ns - c0->stall_ns) / 1e9,
		.nvme_read_bytes = rd - st->nvme_read0, .nvme_write_bytes = wr - st->nvme_write0,
		.param_read_bytes = rd - st->nvme_read0,
		.h2d_bytes = c->h2d_bytes - c0->h2d_bytes,
		.d2h_bytes = c->d2h_bytes - c0->d2h_bytes,
		.comm_bytes = c->comm_bytes - c0->comm_bytes,
		.comm_elems = c->comm_elems - c0->comm_elems,
		.comm_s = (double)(c->comm_ns - c0->comm_ns) / 1e9,
	};
	struct zn_model_profile gp;
	zn_arch_profile_take(&t->model, &gp);
	out->recompute_s = gp.recompute_s;
	out->act_offload_s = gp.keep_s + gp.restore_s;
	struct zn_optswap_stats os = { 0 };
	if (t->zr.overlap && t->opt.joined)
		os = t->opt.stats; /* the previous step's update, finished in this one */
	else if (t->nvme.os && !t->zr.overlap && !st->skipped)
		zn_optswap_last_stats(t->nvme.os, &os);
	out->nvme_read_bytes += os.bytes_read;
	out->nvme_write_bytes += os.bytes_written;
	if (t->zr.grads_nvme) { /* the backward's gradients */
		struct zn_optswap_grad_stats gs;
		zn_optswap_grads_stats(t->nvme.os, &gs);
		out->nvme_read_bytes += gs.bytes_read - t->gstats0.bytes_read;
		out->nvme_write_bytes += gs.bytes_written - t->gstats0.bytes_written;
		out->stall_s += gs.wait_s - t->gstats0.wait_s;
	}
	if (!t->zr.overlap)
		out->stall_s += os.read_wait_s + os.write_wait_s;
}

/* One optimizer step, as llm.c's training loop reads: zero the gradients,
 * forward and backward over the micro-batches, the gradients to where the
 * optimizer reads them and their norm, the overflow check, the update. */
int zn_trainer_step(struct zn_trainer *t, struct zn_step_info *out)
{
	struct step st = { 0 };
	const struct zn_adam_exec ex = { .pool = t->pool };
	int rc;
	if ((rc = step_begin(t, &st)) || (rc = accumulate(t, &st)) || (rc = passes_end(t)) ||
	    (rc = gradients(t, &st, &ex)) || (rc = overflow(t, &st)) ||
	    (rc = update(t, &st, &ex)))
		return rc;
	if (out)
		report(t, &st, out);
	return 0;
}

int zn_trainer_eval(struct zn_trainer *t, double *loss)
{
	int wrc = tr_opt_wait_all(t);
	if (wrc)
		return wrc;
	if (!t->data.val)
		return zn_error(-ENOENT, "data.val: no validation data configured");
	/* Each rank evaluates its turns of the split's windows; the whole
	 * split is as many rounds as give every rank a window. */
	uint64_t n = t->cfg.data.val_steps
			     ? t->cfg.data.val_steps
			     : ZN_MAX(zn_data_batches_per_epoch(t->data.val) / (uint64_t)t->world, 1);
	double sum = 0;
	zn_data_rewind(t->data.val);
	for (uint64_t i = 0; i < n; i++) {
		double l;
		int rc = micro(t, t->data.val, false, 1.0f, &l);
		if (rc)
			return rc;
		sum += l;
	}
	int rc = tr_sum_doubles(t, &sum, 1);
	*loss = n ? sum / (double)(n * (uint64_t)t->world) : 0;
	return rc;
}
