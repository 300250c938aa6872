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
			double base_lr, uint64_t total_steps)
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

	switch (cfg->type) {
	case ZN_SCHED_NONE:
	case ZN_SCHED_WARMUP_LR:
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

/* The warmup fraction in [0, 1) for step < W. */
static double warmup_gamma(const struct zn_lr_schedule *s, uint64_t step)
{
	double w = (double)s->warmup_num_steps;

	if (s->warmup_type == ZN_WARMUP_LINEAR)
		return (double)step / w;
	return log((double)step + 1) / log(w);
}

double zn_lr_at(const struct zn_lr_schedule *s, uint64_t step)
{
	double t = (double)s->total_num_steps, w = (double)s->warmup_num_steps, g, r;
	bool warm = step < s->warmup_num_steps;

	switch (s->type) {
	case ZN_SCHED_WARMUP_LR:
		g = warm ? warmup_gamma(s, step) : 1.0;
		return s->min_lr + (s->max_lr - s->min_lr) * g;
	case ZN_SCHED_WARMUP_DECAY_LR:
		g = warm ? warmup_gamma(s, step) : fmax(0.0, (t - (double)step) / fmax(1.0, t - w));
		return s->min_lr + (s->max_lr - s->min_lr) * g;
	case ZN_SCHED_WARMUP_COSINE_LR:
		if (warm) {
			r = s->warmup_min_ratio + warmup_gamma(s, step) * (1 - s->warmup_min_ratio);
		} else {
			double x = ((double)step - w + 1) / (t - w);
			r = (1 + cos(M_PI * x)) / 2;
			r = fmax(0.0, s->cos_min_ratio + (1 - s->cos_min_ratio) * r);
		}
		return s->base_lr * r;
	default:
		return s->base_lr;
	}
}
