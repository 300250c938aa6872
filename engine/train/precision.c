/* fp16 dynamic loss scaling and learning-rate schedules: DeepSpeed's rules
 * as pure functions of explicit state (see zinc/precision.h). */
#include "zn_common.h"

#include <math.h>
#include <string.h>

#include "zinc/precision.h"

int zn_loss_scaler_init(struct zn_loss_scaler *s, const struct zn_fp16_config *fp16)
{
	memset(s, 0, sizeof(*s));
	s->last_overflow_iter = -1;
	s->window = 1;
	s->hysteresis = s->cur_hysteresis = 1;
	s->min_scale = 1;
	if (!fp16->enabled) {
		s->scale = 1; /* bf16 and fp32 need no scaling */
		return 0;
	}
	if (fp16->loss_scale > 0) {
		s->scale = fp16->loss_scale; /* static */
		return 0;
	}
	if (fp16->loss_scale_window == 0 || fp16->hysteresis == 0)
		return zn_error(-EINVAL, "fp16: loss_scale_window and hysteresis must be at least 1 "
					 "(got %u and %u)",
				fp16->loss_scale_window, fp16->hysteresis);
	s->dynamic = true;
	s->scale = ldexp(1.0, (int)fp16->initial_scale_power);
	s->min_scale = fp16->min_loss_scale;
	s->window = fp16->loss_scale_window;
	s->hysteresis = s->cur_hysteresis = fp16->hysteresis;
	s->consecutive_hysteresis = fp16->consecutive_hysteresis;
	return 0;
}

int zn_loss_scaler_update(struct zn_loss_scaler *s, bool overflow)
{
	int rc = 0;

	if (!s->dynamic) {
		s->iter++;
		return 0;
	}
	if (overflow) {
		/* DynamicLossScaler.update_scale: halve only when no
		 * hysteresis is left; otherwise spend one unit of it. */
		if (s->hysteresis == 1 || s->cur_hysteresis == 1) {
			if (s->scale == s->min_scale)
				rc = -ERANGE;
			s->scale = fmax(s->scale / 2, s->min_scale);
		} else {
			s->cur_hysteresis--;
		}
		s->last_overflow_iter = (int64_t)s->iter;
	} else {
		if (s->consecutive_hysteresis)
			s->cur_hysteresis = s->hysteresis;
		/* A modulo, not a counter: the scale doubles every `window`
		 * steps counted from the last overflow (or from iter -1). */
		if (((int64_t)s->iter - s->last_overflow_iter) % (int64_t)s->window == 0) {
			if (!s->consecutive_hysteresis)
				s->cur_hysteresis = s->hysteresis;
			s->scale *= 2;
		}
	}
	s->iter++;
	if (rc)
		return zn_error(rc, "fp16: gradient overflow with the loss scale already at "
				    "min_loss_scale %g: the model diverged or min_loss_scale is "
				    "too high",
				s->min_scale);
	return 0;
}

int zn_lr_schedule_init(struct zn_lr_schedule *s, const struct zn_scheduler_config *cfg,
			double base_lr, bool has_betas, uint64_t total_steps)
{
	const struct zn_scheduler_params *p = &cfg->params;

	memset(s, 0, sizeof(*s));
	s->type = cfg->type;
	s->warmup_type = p->warmup_type;
	s->base_lr = base_lr;
	s->min_lr = p->warmup_min_lr;
	s->max_lr = p->warmup_max_lr;
	s->warmup_min_ratio = p->warmup_min_ratio;
	s->cos_min_ratio = p->cos_min_ratio;
	/* DeepSpeed: warmup_num_steps = max(2, warmup_num_steps), so that
	 * 1 / log(warmup_num_steps) is finite. */
	s->warmup_num_steps = p->warmup_num_steps < 2 ? 2 : p->warmup_num_steps;
	s->total_num_steps = p->total_num_steps ? p->total_num_steps : total_steps;

	/* OneCycle._initialize_cycle: None halves and stair counts are the
	 * first's. */
	s->cycle_min_lr = p->cycle_min_lr;
	s->cycle_max_lr = p->cycle_max_lr;
	s->decay_lr_rate = p->decay_lr_rate;
	s->first_step_size = (double)p->cycle_first_step_size;
	s->second_step_size = p->cycle_second_step_size < 0 ? s->first_step_size
							    : (double)p->cycle_second_step_size;
	s->first_stair_count = p->cycle_first_stair_count;
	s->second_stair_count = p->cycle_second_stair_count < 0
					? p->cycle_first_stair_count
					: (uint64_t)p->cycle_second_stair_count;
	s->decay_step_size = p->decay_step_size;
	/* _initialize_momentum: an optimizer without betas (torch's SGD)
	 * turns cycle_momentum off, with a warning there. */
	s->cycle_momentum = p->cycle_momentum && has_betas;
	s->cycle_min_mom = p->cycle_min_mom;
	s->cycle_max_mom = p->cycle_max_mom;
	s->decay_mom_rate = p->decay_mom_rate;
	s->range_min_lr = p->lr_range_test_min_lr;
	s->range_step_rate = p->lr_range_test_step_rate;
	s->range_step_size = p->lr_range_test_step_size;
	s->range_staircase = p->lr_range_test_staircase;

	switch (cfg->type) {
	case ZN_SCHED_NONE:
	case ZN_SCHED_WARMUP_LR:
		return 0;
	case ZN_SCHED_ONE_CYCLE:
		if (p->cycle_min_lr < 0 || p->cycle_max_lr < 0)
			return zn_error(-EINVAL, "scheduler.params.%s: OneCycle needs it",
					p->cycle_min_lr < 0 ? "cycle_min_lr" : "cycle_max_lr");
		if (p->cycle_first_step_size == 0)
			return zn_error(-EINVAL, "scheduler.params.cycle_first_step_size: must be "
						 "at least 1 (DeepSpeed divides by it)");
		return 0;
	case ZN_SCHED_LR_RANGE_TEST:
		if (p->lr_range_test_step_size == 0)
			return zn_error(-EINVAL, "scheduler.params.lr_range_test_step_size: must "
						 "be at least 1");
		return 0;
	case ZN_SCHED_WARMUP_DECAY_LR:
	case ZN_SCHED_WARMUP_COSINE_LR:
		if (!s->total_num_steps)
			return zn_error(-EINVAL, "scheduler.params.total_num_steps: needed by %s; "
						 "give it, or a step count to zinc train",
					cfg->type == ZN_SCHED_WARMUP_DECAY_LR ? "WarmupDecayLR"
									     : "WarmupCosineLR");
		if (cfg->type == ZN_SCHED_WARMUP_COSINE_LR &&
		    s->total_num_steps <= s->warmup_num_steps)
			return zn_error(-EINVAL, "scheduler.params.total_num_steps: %llu must be "
						 "above warmup_num_steps %llu for WarmupCosineLR",
					(unsigned long long)s->total_num_steps,
					(unsigned long long)s->warmup_num_steps);
		return 0;
	}
	return zn_error(-EINVAL, "scheduler.type: not supported yet");
}

/* The warmup fraction in [0, 1) at last_batch_iteration `step` < W. */
static double warmup_gamma(const struct zn_lr_schedule *s, uint64_t step)
{
	double w = (double)s->warmup_num_steps;

	if (s->warmup_type == ZN_WARMUP_LINEAR)
		return (double)step / w;
	/* DeepSpeed's inverse_log_warm_up * log(...): the product, not the
	 * quotient, which can differ in the last bit. */
	return (1.0 / log(w)) * log((double)step + 1);
}

/* OneCycle._get_scale_factor for optimizer step `step`: DeepSpeed's
 * batch_iteration = last_batch_iteration + 1 = step.  The same double
 * operations in the same order as the Python, so the lr is its float. */
static double one_cycle_scale(const struct zn_lr_schedule *s, uint64_t step)
{
	const double b = (double)step, S = s->first_step_size + s->second_step_size;
	const double ratio = s->first_step_size / S;
	double cycle = floor(1 + b / S), x = 1. + b / S - cycle, f;
	uint64_t stairs;

	if (x <= ratio) {
		f = x / ratio;
		stairs = s->first_stair_count;
	} else {
		f = (x - 1) / (ratio - 1);
		stairs = s->second_stair_count;
	}
	/* Stairs hold lr and momentum flat: DeepSpeed quantizes from the
	 * step within the cycle, not from f (f can land 1e-16 under a
	 * stair at the peak of an uneven cycle). */
	if (stairs > 0) {
		double c = fmod(b, S), pos;
		if (c <= s->first_step_size)
			pos = c * (double)stairs / s->first_step_size;
		else
			pos = (S - c) * (double)stairs / s->second_step_size;
		f = floor(pos) / (double)stairs;
	}
	return f;
}

/* OneCycle's phase: in the cycle (DeepSpeed: last_batch_iteration <
 * total_size) or, *after set, that many steps into the decay. */
static bool one_cycle_in_cycle(const struct zn_lr_schedule *s, uint64_t step, double *after)
{
	const double lbi = (double)step - 1, S = s->first_step_size + s->second_step_size;
	*after = lbi - S + 1;
	return lbi < S;
}

bool zn_betas_at(const struct zn_lr_schedule *s, uint64_t step, double *beta1, double *beta2)
{
	double after;

	if (s->type != ZN_SCHED_ONE_CYCLE || !s->cycle_momentum)
		return false;
	*beta2 = 0.99; /* OneCycle's (mom, 0.99) tuples */
	if (step == 0) /* the constructor's (cycle_min_mom, 0.99), not the formula's */
		*beta1 = s->cycle_min_mom;
	else if (one_cycle_in_cycle(s, step, &after))
		*beta1 = s->cycle_max_mom -
			 (s->cycle_max_mom - s->cycle_min_mom) * one_cycle_scale(s, step);
	else if (s->decay_step_size == 0 || s->decay_mom_rate == 0)
		*beta1 = s->cycle_max_mom;
	else
		*beta1 = s->cycle_max_mom *
			 (1 + s->decay_mom_rate * (after / (double)s->decay_step_size));
	return true;
}

double zn_lr_at(const struct zn_lr_schedule *s, uint64_t step)
{
	/* DeepSpeed's engine steps the schedule after each optimizer step,
	 * and the constructor set the lr of the first: step k runs with
	 * get_lr() at last_batch_iteration k - 1, step 0 with get_lr() at -1,
	 * which WarmupLR and WarmupDecayLR answer with warmup_min_lr and
	 * WarmupCosineLR with 0. */
	const uint64_t lbi = step - 1; /* used only where step >= 1 */
	double t = (double)s->total_num_steps, w = (double)s->warmup_num_steps, g, r;
	bool warm = step >= 1 && lbi < s->warmup_num_steps;

	switch (s->type) {
	case ZN_SCHED_WARMUP_LR:
		if (step == 0)
			return s->min_lr;
		g = warm ? warmup_gamma(s, lbi) : 1.0;
		return s->min_lr + (s->max_lr - s->min_lr) * g;
	case ZN_SCHED_WARMUP_DECAY_LR:
		if (step == 0)
			return s->min_lr;
		g = warm ? warmup_gamma(s, lbi) : fmax(0.0, (t - (double)lbi) / fmax(1.0, t - w));
		return s->min_lr + (s->max_lr - s->min_lr) * g;
	case ZN_SCHED_WARMUP_COSINE_LR:
		if (step == 0)
			return 0.0;
		if (warm) {
			r = s->warmup_min_ratio + warmup_gamma(s, lbi) * (1 - s->warmup_min_ratio);
		} else {
			/* Progress held at 1 after the total, as DeepSpeed's
			 * min(1.0, ...): the cosine does not rise again. */
			double x = fmin(1.0, ((double)lbi - w + 1) / fmax(1.0, t - w));
			r = (1 + cos(M_PI * x)) / 2;
			r = fmax(0.0, s->cos_min_ratio + (1 - s->cos_min_ratio) * r);
		}
		return s->base_lr * r;
	case ZN_SCHED_ONE_CYCLE: {
		double after;
		if (one_cycle_in_cycle(s, step, &after))
			return s->cycle_min_lr +
			       (s->cycle_max_lr - s->cycle_min_lr) * one_cycle_scale(s, step);
		if (s->decay_step_size == 0 || s->decay_lr_rate == 0)
			return s->cycle_min_lr;
		return s->cycle_min_lr /
		       (1 + s->decay_lr_rate * (after / (double)s->decay_step_size));
	}
	case ZN_SCHED_LR_RANGE_TEST: {
		double q = (double)step / (double)s->range_step_size;
		return s->range_min_lr * (1 + s->range_step_rate * (s->range_staircase ? floor(q) : q));
	}
	default:
		return s->base_lr;
	}
}
