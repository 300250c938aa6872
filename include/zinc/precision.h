/* zinc — mixed precision and learning-rate schedules: pure state machines
 * with DeepSpeed's semantics, so the training loop, checkpoints and tests
 * share one definition.
 *
 * The fp16 loss scaler follows deepspeed/runtime/fp16/loss_scaler.py
 * (DynamicLossScaler.update_scale); the schedules follow
 * deepspeed/runtime/lr_schedules.py (WarmupLR, WarmupDecayLR,
 * WarmupCosineLR, OneCycle, LRRangeTest).  docs/design.md ("Precision and schedules") gives the
 * rules in words.
 */
#ifndef ZINC_PRECISION_H
#define ZINC_PRECISION_H

#include <stdbool.h>
#include <stdint.h>

#include "zinc/common.h"
#include "zinc/configfile.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The loss scaler's whole state: saved in checkpoints as it is. */
struct zn_loss_scaler {
	double scale;                /* current loss scale */
	bool dynamic;                /* false: `scale` never changes */
	double min_scale;            /* fp16.min_loss_scale */
	uint32_t window;             /* fp16.loss_scale_window */
	uint32_t hysteresis;         /* fp16.hysteresis (DeepSpeed's delayed_shift) */
	uint32_t cur_hysteresis;     /* overflows still tolerated before halving */
	bool consecutive_hysteresis; /* fp16.consecutive_hysteresis */
	uint64_t iter;               /* updates so far (DeepSpeed's cur_iter) */
	int64_t last_overflow_iter;  /* iter of the last overflow; -1: none yet */
};

/* Set up a scaler from the fp16 section.  fp16 disabled (bf16, fp32): a
 * static scale of 1.  fp16.loss_scale > 0: that static scale.  Otherwise
 * dynamic, starting at 2^initial_scale_power.  Returns 0, or -EINVAL for
 * a window or hysteresis of 0. */
ZN_API int zn_loss_scaler_init(struct zn_loss_scaler *s, const struct zn_fp16_config *fp16);

/* One optimizer step's outcome.  `overflow`: the gradients held an inf or
 * NaN (the step is skipped by the caller).  Dynamic scaling:
 *   overflow:  if hysteresis is 1 (or only one overflow was allowed) the
 *              scale halves, not below min_scale; otherwise one unit of
 *              hysteresis is used up.  The window restarts either way.
 *   no overflow: consecutive_hysteresis refills the hysteresis at once;
 *              after every `window` steps since the last overflow (or the
 *              start) the scale doubles and, without
 *              consecutive_hysteresis, the hysteresis is refilled.
 * Returns 0, or -ERANGE when an overflow hit a scale already at
 * min_scale with no hysteresis left (DeepSpeed raises there; the caller
 * decides whether to stop).  A static scaler only counts the step. */
ZN_API int zn_loss_scaler_update(struct zn_loss_scaler *s, bool overflow);

/* A learning-rate schedule, resolved: lr(step) is a pure function of it. */
struct zn_lr_schedule {
	int type;                  /* enum zn_scheduler_type */
	int warmup_type;           /* enum zn_warmup_type */
	double base_lr;            /* optimizer.params.lr */
	double min_lr, max_lr;     /* WarmupLR, WarmupDecayLR */
	double warmup_min_ratio;   /* WarmupCosineLR */
	double cos_min_ratio;      /* WarmupCosineLR */
	uint64_t warmup_num_steps; /* at least 2, as DeepSpeed uses it */
	uint64_t total_num_steps;
	/* OneCycle: the cycle's halves and stairs (the second's resolved
	 * from DeepSpeed's None), its bounds, the decay after it, and
	 * whether beta1 cycles (false for an optimizer without betas). */
	double cycle_min_lr, cycle_max_lr, decay_lr_rate;
	double first_step_size, second_step_size; /* optimizer steps */
	uint64_t first_stair_count, second_stair_count;
	uint64_t decay_step_size;
	bool cycle_momentum;
	double cycle_min_mom, cycle_max_mom, decay_mom_rate;
	/* LRRangeTest */
	double range_min_lr, range_step_rate;
	uint64_t range_step_size;
	bool range_staircase;
};

/* Resolve the scheduler section with the optimizer's lr; `total_steps`
 * stands in for total_num_steps: "auto" (0), e.g. zinc train's step count.
 * `has_betas`: the optimizer has betas (Adam, Lamb), which OneCycle's
 * cycle_momentum cycles; without them (SGD) DeepSpeed turns
 * cycle_momentum off, and so does this.
 * Returns 0, or -EINVAL when WarmupDecayLR or WarmupCosineLR has no total
 * step count, WarmupCosineLR's total is not above its warmup (a cosine of
 * no length: DeepSpeed warns and decays in one step), or OneCycle lacks a
 * bound or has a cycle of zero length. */
ZN_API int zn_lr_schedule_init(struct zn_lr_schedule *s, const struct zn_scheduler_config *cfg,
			       double base_lr, bool has_betas, uint64_t total_steps);

/* The learning rate for optimizer step `step` (0-based): DeepSpeed's
 * get_lr() with last_batch_iteration b = step - 1, which is what DeepSpeed's
 * engine runs optimizer step `step` with (the schedule is stepped after
 * each optimizer step; its constructor set the lr of step 0 from get_lr()
 * at -1: warmup_min_lr for WarmupLR and WarmupDecayLR, 0 for
 * WarmupCosineLR, the formulas' values at b = -1 for OneCycle and
 * LRRangeTest).  For step >= 1:
 *   none:           base_lr
 *   WarmupLR:       min + (max - min) * g, g = log(b + 1) / log(W) (log)
 *                   or b / W (linear) while b < W, else 1
 *   WarmupDecayLR:  the same warmup, then g = max(0, (T - b) / max(1, T - W))
 *   WarmupCosineLR: base_lr * r; warmup r = wmin + (1 - wmin) * g, then
 *                   r = max(0, cmin + (1 - cmin) * (1 + cos(pi x)) / 2),
 *                   x = min(1, (b - W + 1) / max(1, T - W))
 * with W = warmup_num_steps (at least 2), T = total_num_steps.
 *   OneCycle, LRRangeTest, for every step (0 included), with their
 *   batch_iteration c = b + 1 = step:
 *   OneCycle:       while b < S (S = S1 + S2): x = 1 + c / S - floor(1 + c / S),
 *                   f = x / r if x <= r (r = S1 / S), else (x - 1) / (r - 1);
 *                   with N stairs in that half, f = floor(k N / S1) / N
 *                   rising, floor((S - k) N / S2) / N falling (k = c mod S);
 *                   lr = min + (max - min) f.  After: min / (1 +
 *                   decay_lr_rate (b - S + 1) / decay_step_size), or min
 *                   without decay.
 *   LRRangeTest:    min_lr (1 + rate * c / step_size), c / step_size floored
 *                   with the staircase. */
ZN_API double zn_lr_at(const struct zn_lr_schedule *s, uint64_t step);

/* OneCycle with cycle_momentum: the betas of optimizer step `step`
 * (counted as zn_lr_at's).  DeepSpeed sets param_group['betas'] to
 * (momentum, 0.99) -- beta2 0.99 whatever the optimizer's -- with
 *   step 0: min_mom (what the constructor sets; the formula would give
 *           max_mom, which DeepSpeed's first step() then jumps to)
 *   b < S:  momentum = max_mom - (max_mom - min_mom) f (f as the lr's)
 *   after:  max_mom (1 + decay_mom_rate (b - S + 1) / decay_step_size), or
 *           max_mom without decay.
 * Returns true and sets *beta1, *beta2; false (leaving them) for every
 * other schedule, which keeps the optimizer's betas. */
ZN_API bool zn_betas_at(const struct zn_lr_schedule *s, uint64_t step, double *beta1,
			double *beta2);

#ifdef __cplusplus
}
#endif
#endif
