/* Training: one micro-batch's forward and backward, the optimizer step
 * (gradients to the host, norm, clipping, Adam, parameters back) and
 * evaluation. */
#include "zn_common.h"

#include "train/internal.h"

#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "zinc/trace.h"

/* Counters a step's report is the difference of. */
struct traffic {
	uint64_t nvme_read, nvme_write, h2d, d2h, stall_ns;
};

static void traffic_now(struct zn_trainer *t, struct traffic *tr)
{
	memset(tr, 0, sizeof(*tr));
	if (t->homes.sw) {
		struct zn_swapper_stats st;
		zn_swapper_get_stats(t->homes.sw, &st);
		tr->nvme_read = st.bytes_read[ZN_TIER_NVME];
		tr->nvme_write = st.bytes_written[ZN_TIER_NVME];
	}
	tr->h2d = t->stats.h2d_bytes;
	tr->d2h = t->stats.d2h_bytes;
	tr->stall_ns = t->stats.stall_ns;
}

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
	if (!rc && backward) {
		t->fetch.direction = -1;
		rc = zn_arch_backward(&t->model, &src, t->data.din);
		uint64_t t2 = zn_now_ns();
		t->stats.compute_ns += t2 - t1;
		zn_trace_span(t->trace, "backward", "compute", "device", t1, t2, 0);
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

int zn_trainer_step(struct zn_trainer *t, struct zn_step_info *out)
{
	uint64_t t0 = zn_now_ns();
	double loss_sum = 0;
	int rc;

	struct traffic tr0;
	traffic_now(t, &tr0);
	t->stats.compute_ns = 0;
	t->opt.joined = false;
	/* offload_param: gradients accumulate on the host, per layer (the
	 * first micro-batch's copy starts them); resident tensors' on the
	 * device. */
	for (unsigned i = 0; i < t->tab.nt; i++)
		if (t->t[i].dev_grads &&
		    (rc = zn_device_memset(t->dev, t->t[i].dgrad, 0, t->t[i].d->numel * 4, NULL)))
			return rc;
	const struct counters c0 = t->stats;
	/* offload_param: the fetch trace is recorded on a step without one
	 * and followed on the next. */
	if (t->offload_param) {
		t->fetch.tracking = true;
		t->fetch.pos = 0;
		if (!t->fetch.ok) {
			t->fetch.recording = true;
			t->fetch.n = 0;
		}
	}
	for (uint32_t a = 0; a < t->accum; a++) {
		double l;
		t->micro_i = a;
		/* DeepSpeed averages over micro-batches and ranks. */
		if ((rc = micro(t, t->data.train, true, (float)(t->accum * (uint32_t)t->world), &l))) {
			t->fetch.tracking = t->fetch.recording = false;
			return rc;
		}
		loss_sum += l;
	}
	/* Several ranks: the last buckets' reductions; no gathered parameters
	 * outlive the update. */
	if (t->buckets.b[0].buf && (rc = tr_grads_settle_all(t)))
		return rc;
	if (t->gathers.buf && (rc = tr_gather_drain(t)))
		return rc;
	if (t->offload_param) {
		if (t->fetch.recording)
			t->fetch.ok = true;
		t->fetch.tracking = t->fetch.recording = false;
		tr_drop_kept(t);
		/* Every gradient on the host before anything reads them. */
		if (t->flights.copy &&
		    ((rc = tr_flights_reap(t, true)) ||
		     (rc = zn_device_stream_synchronize(t->flights.copy))))
			return rc;
	}
	/* Gradients in the training dtype, then to the host; global norm over
	 * every tensor (of the scaled gradients). */
	double sumsq = 0;
	bool finite = true;
	struct zn_adam_exec ex = { .pool = t->pool };
	const double scale = t->scaler.scale;
	uint64_t tg = zn_now_ns();
	/* The mean loss over every rank's micro-batches (added in rank order). */
	if ((rc = tr_sum_doubles(t, &loss_sum, 1)))
		return rc;
	const bool device_norm = t->device_opt && t->world == 1;
	if (device_norm) {
		/* Norm and overflow check on the device; two scalars come back. */
		double zero = 0;
		int32_t flag = 0;
		if ((rc = tr_to_device(t, t->dopt.sumsq, &zero, sizeof(zero))) ||
		    (rc = tr_to_device(t, t->dopt.flag, &flag, sizeof(flag))))
			return rc;
		for (unsigned i = 0; i < t->tab.nt; i++) {
			struct tstate *s = &t->t[i];
			if ((rc = tr_round_to_dtype(t, s->dgrad, s->d->numel)) ||
			    (rc = t->k->sumsq(t->kctx, t->dopt.sumsq, s->dgrad, ZN_DTYPE_F32,
					      s->d->numel)) ||
			    (rc = t->k->nonfinite(t->kctx, t->dopt.flag, s->dgrad, ZN_DTYPE_F32,
						  s->d->numel)))
				return rc;
		}
		if ((rc = zn_device_stream_synchronize(t->stream)) ||
		    (rc = tr_to_host(t, &sumsq, t->dopt.sumsq, sizeof(sumsq))) ||
		    (rc = tr_to_host(t, &flag, t->dopt.flag, sizeof(flag))))
			return rc;
		finite = flag == 0 && isfinite(sumsq);
	}
	/* Gradients that accumulated on the device cross (and are reduced
	 * over the ranks) now; the others did at release. */
	for (unsigned i = 0; i < t->tab.nt && !device_norm; i++) {
		struct tstate *s = &t->t[i];
		if (s->dev_grads && (rc = t->world > 1 ? tr_grads_reduce(t, s, true)
						       : tr_grads_to_host(t, s, true)))
			return rc;
	}
	if (!device_norm && t->buckets.b[0].buf && (rc = tr_grads_settle_all(t)))
		return rc;
	for (unsigned i = 0; i < t->tab.nt && !device_norm; i++) {
		struct tstate *s = &t->t[i];
		struct zn_adam_grad_stats gst;
		if ((rc = zn_adam_grad_check(s->grad, tr_adam_dtype(t->gdt), s->nown, &ex, &gst)))
			return rc;
		sumsq += gst.sumsq;
		finite &= gst.finite;
	}
	if (t->world > 1 && t->own_total < t->tab.total) {
		/* The global norm and the overflow check over every rank's part
		 * (stage 0's ranks each hold all of it, already summed). */
		double v[2] = { sumsq, finite ? 0 : 1 };
		if ((rc = tr_sum_doubles(t, v, 2)))
			return rc;
		sumsq = v[0];
		finite = v[1] == 0;
	}
	zn_trace_span(t->trace, "gradients to host", "copy", "copies", tg, zn_now_ns(), 0);
	double norm = sqrt(sumsq) / scale;
	bool skipped = false;
	if (!finite && t->dtype != ZN_DTYPE_F16)
		return zn_error(-ERANGE, "step %" PRIu64 ": the gradients hold Inf or NaN (the loss "
					 "diverged); lower optimizer.params.lr or set "
					 "gradient_clipping",
				t->step + 1);
	if (!finite) {
		/* fp16 overflow: skip the update, lower the scale (DeepSpeed). */
		skipped = true;
		rc = zn_loss_scaler_update(&t->scaler, true);
		if (rc)
			return zn_error(rc, "step %" PRIu64 ": fp16 gradients overflow even at the "
					    "minimum loss scale %g; raise fp16.min_loss_scale "
					    "or train in bf16",
					t->step + 1, t->scaler.min_scale);
		zn_info("step %" PRIu64 ": fp16 gradient overflow; step skipped, loss scale "
			"lowered to %g", t->step + 1, t->scaler.scale);
	}
	/* DeepSpeed's clipping: scale by max_norm / (norm + 1e-6) when below 1. */
	float clip = 1.0f;
	if (t->cfg.gradient_clipping > 0 && norm > t->cfg.gradient_clipping)
		clip = (float)(t->cfg.gradient_clipping / (norm + 1e-6));
	struct zn_adam_hparams hp = t->hp;
	hp.lr = zn_lr_at(&t->sched, t->updates);
	uint64_t ta = zn_now_ns();
	if (t->nvme.os && !skipped) {
		t->opt.upd = (struct nvme_update){ .t = t, .hp = hp,
						   .grad_scale = (float)(clip / scale),
						   .step = t->updates + 1, .ex = ex };
		if (t->overlap) {
			rc = tr_opt_launch(t);
		} else if (!(rc = zn_optswap_step(t->nvme.os, tr_nvme_update, &t->opt.upd))) {
			if (t->homes.sw)
				rc = zn_swapper_flush(t->homes.sw);
			if (!rc)
				rc = tr_params_allgather_all(t);
		}
		if (rc)
			return rc;
	}
	for (unsigned i = 0; i < t->tab.nt && !skipped && !t->nvme.os; i++) {
		struct tstate *s = &t->t[i];
		struct zn_adam_hparams h = hp;
		/* Weight decay on matrices only, as GPT-2/llm.c (not biases,
		 * layernorms). */
		if (!s->d->decay)
			h.weight_decay = 0;
		if (t->device_opt) {
			/* On the device: the kernels' Adam, then the new master
			 * becomes the parameters.  Several ranks: over this
			 * rank's part, with its reduced gradients from the host. */
			const float *dg = s->dgrad;
			float *dp = s->dhome ? s->dhome : (float *)s->dparam + s->lo;
			if (t->world > 1) {
				tr_host_to_f32(t->gstage, s->grad, t->gdt, s->nown);
				if ((rc = tr_to_device(t, t->dopt.gscratch, t->gstage, s->nown * 4)))
					return rc;
				dg = t->dopt.gscratch;
			}
			if (s->nown &&
			    ((rc = t->k->adam(t->kctx, &h, t->updates + 1, (float)(clip / scale),
					      s->dmaster, dg, s->dm, s->dv, s->nown)) ||
			     (rc = zn_device_stream_synchronize(t->stream)) ||
			     (rc = zn_device_copy_async(t->dev, dp, s->dmaster, s->nown * 4,
							ZN_COPY_DEVICE_TO_DEVICE, NULL)) ||
			     (rc = tr_round_to_dtype(t, dp, s->nown))))
				return rc;
			continue;
		}
		struct zn_adam_tensors at = { .n = s->nown, .param = s->master, .grad = s->grad,
					      .grad_dtype = tr_adam_dtype(t->gdt), .exp_avg = s->m,
					      .exp_avg_sq = s->v };
		/* 16-bit homes are written by the update itself. */
		bool fused = !s->resident && t->hdt != ZN_DTYPE_F32;
		if (fused) {
			if ((rc = tr_home_open(t, s)))
				return rc;
			at.param_copy = s->hbuf;
			at.copy_dtype = tr_adam_dtype(t->hdt);
		}
		/* Unscale and clip, fused into the update. */
		if ((rc = zn_adam_step(&h, t->updates + 1, (float)(clip / scale), &at, &ex)))
			return rc;
		if (fused) {
			rc = tr_home_close(t, s, s->nown);
		} else if (!s->resident) {
			rc = tr_home_put(t, s, 0, s->master, s->nown);
		} else if (s->nown && !(rc = tr_to_device(t, (float *)s->dparam + s->lo, s->master,
							s->nown * 4))) {
			t->stats.h2d_bytes += s->nown * 4;
			rc = tr_round_to_dtype(t, (float *)s->dparam + s->lo, s->nown);
		}
		if (rc)
			return rc;
	}
	if (!skipped && !t->nvme.os && (rc = tr_params_allgather_all(t)))
		return rc;
	if (!skipped && !t->nvme.os && t->homes.sw && (rc = zn_swapper_flush(t->homes.sw)))
		return rc;
	zn_trace_span(t->trace, skipped ? "skipped (overflow)" : "adam + params to device",
		      "optimizer", "host", ta, zn_now_ns(), 0);
	if (!skipped) {
		t->updates++;
		if ((rc = zn_loss_scaler_update(&t->scaler, false)))
			return rc;
	}
	t->step++;
	if (out) {
		struct zn_device_memstats ms;
		struct traffic tr;
		zn_device_memstats(t->dev, &ms);
		traffic_now(t, &tr);
		uint64_t now = zn_now_ns();
		*out = (struct zn_step_info){
			.step = t->step, .loss = loss_sum / (t->accum * (uint32_t)t->world),
			.lr = hp.lr, .grad_norm = norm,
			.tokens = (uint64_t)t->B * (uint64_t)t->T * t->accum * (uint64_t)t->world,
			.step_s = (double)(now - t0) / 1e9, .device_bytes = ms.in_use,
			.device_peak = ms.peak, .host_bytes = t->host_bytes,
			.loss_scale = scale, .skipped = skipped,
			.compute_s = (double)t->stats.compute_ns / 1e9,
			.optimizer_s = t->overlap ? (t->opt.joined ? (double)t->opt.ns / 1e9 : 0)
						  : (double)(now - ta) / 1e9,
			.stall_s = (double)(tr.stall_ns - tr0.stall_ns) / 1e9,
			.nvme_read_bytes = tr.nvme_read - tr0.nvme_read,
			.nvme_write_bytes = tr.nvme_write - tr0.nvme_write,
			.h2d_bytes = tr.h2d - tr0.h2d, .d2h_bytes = tr.d2h - tr0.d2h,
			.comm_bytes = t->stats.comm_bytes - c0.comm_bytes,
			.comm_elems = t->stats.comm_elems - c0.comm_elems,
			.comm_s = (double)(t->stats.comm_ns - c0.comm_ns) / 1e9,
		};
		struct zn_gpt2_profile gp;
		zn_arch_profile_take(&t->model, &gp);
		out->recompute_s = gp.recompute_s;
		out->act_offload_s = gp.keep_s + gp.restore_s;
		struct zn_optswap_stats os = { 0 };
		if (t->overlap && t->opt.joined)
			os = t->opt.stats; /* the previous step's update, finished in this one */
		else if (t->nvme.os && !t->overlap && !skipped)
			zn_optswap_last_stats(t->nvme.os, &os);
		out->nvme_read_bytes += os.bytes_read;
		out->nvme_write_bytes += os.bytes_written;
		if (!t->overlap)
			out->stall_s += os.read_wait_s + os.write_wait_s;
	}
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
