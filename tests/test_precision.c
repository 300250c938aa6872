/* The fp16 loss scaler and the learning-rate schedules against DeepSpeed's
 * rules: tables of steps worked out by hand, and the published formulas. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "zinc/precision.h"

/* One step of a hand-computed run: the overflow flag fed in, and the scale
 * and hysteresis left after update. */
struct step {
	bool overflow;
	double scale;
	uint32_t hyst;
};

struct scaler_case {
	const char *name;
	uint32_t power, window, hysteresis;
	bool consecutive;
	double min_scale;
	const struct step *steps;
	size_t nsteps;
};

#define O true
#define N false

/* power 4 (scale 16), window 3, hysteresis 1: every overflow halves; the
 * scale doubles after 3 clean steps counted from the last overflow (the
 * first window counts from iteration -1, so it ends at iteration 2). */
static const struct step plain[] = {
	{ N, 16, 1 }, { N, 16, 1 }, { N, 32, 1 },  /* it 0-2: (2 - -1) % 3 == 0 */
	{ O, 16, 1 },                              /* it 3: halve, window restarts */
	{ N, 16, 1 }, { N, 16, 1 }, { N, 32, 1 },  /* it 4-6: (6 - 3) % 3 == 0 */
	{ O, 16, 1 }, { O, 8, 1 }, { O, 4, 1 },    /* an overflow run halves each time */
	{ N, 4, 1 }, { N, 4, 1 }, { N, 8, 1 },     /* it 10-12 */
	{ N, 8, 1 }, { N, 8, 1 }, { N, 16, 1 },    /* keeps doubling every window */
};

/* hysteresis 2, window 2: the first overflow only uses up hysteresis; the
 * second halves; a doubling refills the hysteresis. */
static const struct step hyst[] = {
	{ O, 16, 1 },               /* it 0: hysteresis 2 -> 1, scale kept */
	{ N, 16, 1 },               /* it 1: (1 - 0) % 2 != 0 */
	{ O, 8, 1 },                /* it 2: no hysteresis left: halve */
	{ N, 8, 1 }, { N, 16, 2 },  /* it 3-4: (4 - 2) % 2 == 0: double, refill */
	{ O, 16, 1 }, { O, 8, 1 },  /* it 5-6 */
	{ N, 8, 1 },                /* it 7: not consecutive: hysteresis stays 1 */
	{ O, 4, 1 },                /* it 8: halves at once */
};

/* The same run with consecutive_hysteresis: any clean step refills it. */
static const struct step consec[] = {
	{ O, 16, 1 },               /* it 0 */
	{ N, 16, 2 },               /* it 1: refilled at once */
	{ O, 16, 1 },               /* it 2: used up again, no halving */
	{ N, 16, 2 }, { N, 32, 2 }, /* it 3-4: double at (4 - 2) % 2 == 0 */
	{ O, 32, 1 }, { O, 16, 1 }, /* it 5-6 */
	{ N, 16, 2 },               /* it 7 */
	{ O, 16, 1 },               /* it 8: not halved: hysteresis was refilled */
};

/* min_loss_scale 4 from 16: halving stops at 4. */
static const struct step floor_[] = {
	{ O, 8, 1 }, { O, 4, 1 }, { O, 4, 1 }, { O, 4, 1 },
	{ N, 4, 1 }, { N, 4, 1 }, { N, 8, 1 }, /* window 3 from it 3 */
};

static const struct scaler_case scaler_cases[] = {
	{ "plain", 4, 3, 1, false, 1, plain, sizeof(plain) / sizeof(plain[0]) },
	{ "hysteresis", 4, 2, 2, false, 1, hyst, sizeof(hyst) / sizeof(hyst[0]) },
	{ "consecutive", 4, 2, 2, true, 1, consec, sizeof(consec) / sizeof(consec[0]) },
	{ "minimum", 4, 3, 1, false, 4, floor_, sizeof(floor_) / sizeof(floor_[0]) },
};

static struct zn_fp16_config fp16_cfg(uint32_t power, uint32_t window, uint32_t hysteresis,
				      bool consecutive, double min_scale)
{
	struct zn_config c;

	zn_config_default(&c);
	c.fp16.enabled = true;
	c.fp16.initial_scale_power = power;
	c.fp16.loss_scale_window = window;
	c.fp16.hysteresis = hysteresis;
	c.fp16.consecutive_hysteresis = consecutive;
	c.fp16.min_loss_scale = min_scale;
	return c.fp16;
}

static void test_loss_scaler_tables(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(scaler_cases) / sizeof(scaler_cases[0]); i++) {
		const struct scaler_case *sc = &scaler_cases[i];
		struct zn_fp16_config f = fp16_cfg(sc->power, sc->window, sc->hysteresis,
						   sc->consecutive, sc->min_scale);
		struct zn_loss_scaler s;

		assert_int_equal(zn_loss_scaler_init(&s, &f), 0);
		assert_true(s.dynamic);
		assert_true(s.scale == 16);
		for (size_t j = 0; j < sc->nsteps; j++) {
			const struct step *st = &sc->steps[j];
			int rc = zn_loss_scaler_update(&s, st->overflow);
			/* Only an overflow at the floor with no hysteresis is -ERANGE. */
			(void)rc;
			if (s.scale != st->scale || s.cur_hysteresis != st->hyst)
				fail_msg("%s, iteration %zu: scale %g hysteresis %u, expected %g %u",
					 sc->name, j, s.scale, s.cur_hysteresis, st->scale,
					 st->hyst);
		}
		assert_int_equal(s.iter, sc->nsteps);
	}
}

static void test_loss_scaler_minimum_reports(void **state)
{
	struct zn_fp16_config f = fp16_cfg(1, 10, 1, false, 1);
	struct zn_loss_scaler s;

	(void)state;
	assert_int_equal(zn_loss_scaler_init(&s, &f), 0);
	assert_true(s.scale == 2);
	assert_int_equal(zn_loss_scaler_update(&s, true), 0); /* 2 -> 1 */
	assert_true(s.scale == 1);
	/* DeepSpeed raises here (raise_error_at_min_scale); zinc reports. */
	assert_int_equal(zn_loss_scaler_update(&s, true), -ERANGE);
	assert_non_null(strstr(zn_last_error(), "min_loss_scale"));
	assert_true(s.scale == 1);
}

static void test_loss_scaler_default_window(void **state)
{
	/* DeepSpeed's defaults: 2^16, window 1000, hysteresis 2. */
	struct zn_config c;
	struct zn_loss_scaler s;

	(void)state;
	zn_config_default(&c);
	c.fp16.enabled = true;
	assert_int_equal(zn_loss_scaler_init(&s, &c.fp16), 0);
	assert_true(s.scale == 65536);
	/* Iterations 0..998: (it + 1) % 1000 != 0, no change yet. */
	for (int i = 0; i < 999; i++)
		assert_int_equal(zn_loss_scaler_update(&s, false), 0);
	assert_true(s.scale == 65536);
	/* Iteration 999 completes the first window. */
	assert_int_equal(zn_loss_scaler_update(&s, false), 0);
	assert_true(s.scale == 131072);
	assert_int_equal(s.cur_hysteresis, 2);
}

static void test_static_scales(void **state)
{
	struct zn_config c;
	struct zn_loss_scaler s;

	(void)state;
	zn_config_default(&c);
	/* fp16 off (bf16 or fp32): 1, never changes. */
	assert_int_equal(zn_loss_scaler_init(&s, &c.fp16), 0);
	assert_false(s.dynamic);
	assert_true(s.scale == 1);
	/* A static loss_scale stays put through overflows. */
	c.fp16.enabled = true;
	c.fp16.loss_scale = 128;
	assert_int_equal(zn_loss_scaler_init(&s, &c.fp16), 0);
	assert_false(s.dynamic);
	for (int i = 0; i < 5; i++)
		assert_int_equal(zn_loss_scaler_update(&s, i % 2 == 0), 0);
	assert_true(s.scale == 128);
}

/* ---- learning-rate schedules ------------------------------------------- */

static void assert_close(double got, double want, uint64_t step)
{
	if (fabs(got - want) > 1e-12 * fmax(1.0, fabs(want)))
		fail_msg("step %llu: lr %.17g, expected %.17g", (unsigned long long)step, got,
			 want);
}

static struct zn_scheduler_config sched(int type, int warmup_type, uint64_t warmup,
					uint64_t total)
{
	struct zn_config c;

	zn_config_default(&c);
	c.scheduler.type = type;
	c.scheduler.params.warmup_type = warmup_type;
	c.scheduler.params.warmup_num_steps = warmup;
	c.scheduler.params.total_num_steps = total;
	c.scheduler.params.warmup_min_lr = 1e-5;
	c.scheduler.params.warmup_max_lr = 1e-3;
	return c.scheduler;
}

static const uint64_t steps[] = { 1, 2, 3, 7, 49, 50, 51, 52, 99, 100, 150, 199, 200, 201, 250 };

/* DeepSpeed's engine steps the schedule after each optimizer step: step t
 * runs with get_lr() at last_batch_iteration t - 1 (and step 0 with the
 * constructor's get_lr() at -1). */
static void test_warmup_lr(void **state)
{
	(void)state;
	for (int wt = 0; wt < 2; wt++) {
		struct zn_scheduler_config c = sched(ZN_SCHED_WARMUP_LR, wt, 50, 0);
		struct zn_lr_schedule s;
		assert_int_equal(zn_lr_schedule_init(&s, &c, 3e-4, true, 0), 0);
		assert_close(zn_lr_at(&s, 0), 1e-5, 0); /* get_lr() before it started: min */
		for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
			uint64_t t = steps[i], lbi = t - 1;
			/* DeepSpeed WarmupLR._get_gamma */
			double g = lbi < 50 ? (wt == ZN_WARMUP_LOG ? log(lbi + 1.0) / log(50.0)
								   : lbi / 50.0)
					    : 1.0;
			assert_close(zn_lr_at(&s, t), 1e-5 + (1e-3 - 1e-5) * g, t);
		}
	}
	/* The values themselves, worked out by hand at a few points. */
	struct zn_scheduler_config c = sched(ZN_SCHED_WARMUP_LR, ZN_WARMUP_LINEAR, 10, 0);
	struct zn_lr_schedule s;
	assert_int_equal(zn_lr_schedule_init(&s, &c, 0, true, 0), 0);
	assert_close(zn_lr_at(&s, 0), 1e-5, 0);
	assert_close(zn_lr_at(&s, 1), 1e-5, 1); /* min twice: the constructor's, then lbi 0 */
	assert_close(zn_lr_at(&s, 6), 1e-5 + 0.5 * (1e-3 - 1e-5), 6);
	assert_close(zn_lr_at(&s, 10), 1e-5 + 0.9 * (1e-3 - 1e-5), 10);
	assert_close(zn_lr_at(&s, 11), 1e-3, 11);
	assert_close(zn_lr_at(&s, 1000000), 1e-3, 1000000);
	/* warmup_num_steps below 2 is used as 2 (DeepSpeed: max(2, n)). */
	c = sched(ZN_SCHED_WARMUP_LR, ZN_WARMUP_LOG, 0, 0);
	assert_int_equal(zn_lr_schedule_init(&s, &c, 0, true, 0), 0);
	assert_close(zn_lr_at(&s, 0), 1e-5, 0);
	assert_close(zn_lr_at(&s, 1), 1e-5, 1);
	assert_close(zn_lr_at(&s, 2), 1e-3, 2); /* log(2) / log(2) */
}

static void test_warmup_decay_lr(void **state)
{
	(void)state;
	for (int wt = 0; wt < 2; wt++) {
		struct zn_scheduler_config c = sched(ZN_SCHED_WARMUP_DECAY_LR, wt, 50, 200);
		struct zn_lr_schedule s;
		assert_int_equal(zn_lr_schedule_init(&s, &c, 3e-4, true, 0), 0);
		assert_close(zn_lr_at(&s, 0), 1e-5, 0);
		for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
			uint64_t t = steps[i], lbi = t - 1;
			double g;
			if (lbi < 50)
				g = wt == ZN_WARMUP_LOG ? log(lbi + 1.0) / log(50.0) : lbi / 50.0;
			else
				g = fmax(0.0, (200.0 - lbi) / fmax(1.0, 200.0 - 50.0));
			assert_close(zn_lr_at(&s, t), 1e-5 + (1e-3 - 1e-5) * g, t);
		}
		/* By hand: halfway through the decay, halfway between min and max. */
		assert_close(zn_lr_at(&s, 126), 1e-5 + 0.5 * (1e-3 - 1e-5), 126);
		assert_close(zn_lr_at(&s, 201), 1e-5, 201);
		assert_close(zn_lr_at(&s, 300), 1e-5, 300); /* clamped at 0 */
	}
	/* total_num_steps auto takes the run's step count; none is an error. */
	struct zn_scheduler_config c = sched(ZN_SCHED_WARMUP_DECAY_LR, 0, 50, 0);
	struct zn_lr_schedule s;
	assert_int_equal(zn_lr_schedule_init(&s, &c, 0, true, 400), 0);
	assert_int_equal(s.total_num_steps, 400);
	assert_int_equal(zn_lr_schedule_init(&s, &c, 0, true, 0), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "total_num_steps"));
}

static void test_warmup_cosine_lr(void **state)
{
	const double lr = 6e-4, wmin = 0.1, cmin = 0.01;

	(void)state;
	for (int wt = 0; wt < 2; wt++) {
		struct zn_scheduler_config c = sched(ZN_SCHED_WARMUP_COSINE_LR, wt, 50, 200);
		struct zn_lr_schedule s;
		c.params.warmup_min_ratio = wmin;
		c.params.cos_min_ratio = cmin;
		assert_int_equal(zn_lr_schedule_init(&s, &c, lr, true, 0), 0);
		/* get_lr() before it started is 0: DeepSpeed's first step. */
		assert_close(zn_lr_at(&s, 0), 0.0, 0);
		for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
			uint64_t t = steps[i], lbi = t - 1;
			double r;
			/* DeepSpeed WarmupCosineLR.get_lr_ratio */
			if (lbi < 50) {
				r = wt == ZN_WARMUP_LOG ? log(lbi + 1.0) / log(50.0) : lbi / 50.0;
				r = wmin + r * (1 - wmin);
			} else {
				double x = fmin(1.0, (lbi - 50.0 + 1) / (200.0 - 50.0));
				r = fmax(0.0, cmin + (1 - cmin) * (1 + cos(M_PI * x)) / 2);
			}
			assert_close(zn_lr_at(&s, t), lr * r, t);
		}
		/* By hand: lbi 49 + 75 is halfway through the cosine. */
		assert_close(zn_lr_at(&s, 125), lr * (cmin + (1 - cmin) * 0.5), 125);
		assert_close(zn_lr_at(&s, 200), lr * cmin, 200);
		assert_close(zn_lr_at(&s, 1), lr * wmin, 1);
		/* Past the total the cosine stays at its end (min(1.0, ...)). */
		assert_close(zn_lr_at(&s, 350), lr * cmin, 350);
	}
	/* A cosine of no length (DeepSpeed warns): refuse total <= warmup. */
	struct zn_scheduler_config c = sched(ZN_SCHED_WARMUP_COSINE_LR, 0, 50, 50);
	struct zn_lr_schedule s;
	assert_int_equal(zn_lr_schedule_init(&s, &c, lr, true, 0), -EINVAL);
}

static void test_no_schedule(void **state)
{
	struct zn_scheduler_config c = sched(ZN_SCHED_NONE, 0, 50, 0);
	struct zn_lr_schedule s;

	(void)state;
	assert_int_equal(zn_lr_schedule_init(&s, &c, 2.5e-4, true, 0), 0);
	assert_close(zn_lr_at(&s, 0), 2.5e-4, 0);
	assert_close(zn_lr_at(&s, 12345), 2.5e-4, 12345);
}

/* ---- OneCycle and LRRangeTest against DeepSpeed's objects ---------------- */

/* deepspeed/runtime/lr_schedules.py's OneCycle as the engine drives it,
 * written out again here from the Python: the constructor puts cycle_min_lr
 * and (cycle_min_mom, 0.99) into the param group, the optimizer step runs
 * with what the group holds, then the engine calls step(), which advances
 * last_batch_iteration and recomputes both.  Kept apart from
 * engine/train/precision.c on purpose: the step counting is what this
 * checks as much as the formulas. */
struct ds_one_cycle {
	double min_lr, max_lr, decay_lr_rate, s1, s2, total, ratio;
	double n1, n2; /* stair counts */
	double decay_step_size, min_mom, max_mom, decay_mom_rate;
	bool cycle_momentum;
	int64_t last_batch_iteration;
	double group_lr, group_beta1, group_beta2; /* the param group */
};

static double ds_scale(const struct ds_one_cycle *o)
{
	double batch_iteration = (double)(o->last_batch_iteration + 1);
	double cycle = floor(1 + batch_iteration / o->total);
	double x = 1. + batch_iteration / o->total - cycle;
	double scale_factor, stair_count;
	if (x <= o->ratio) {
		scale_factor = x / o->ratio;
		stair_count = o->n1;
	} else {
		scale_factor = (x - 1) / (o->ratio - 1);
		stair_count = o->n2;
	}
	if (stair_count > 0) {
		double cycle_iteration = fmod(batch_iteration, o->total), stair_position;
		if (cycle_iteration <= o->s1)
			stair_position = cycle_iteration * stair_count / o->s1;
		else
			stair_position = (o->total - cycle_iteration) * stair_count / o->s2;
		scale_factor = floor(stair_position) / stair_count;
	}
	return scale_factor;
}

static void ds_one_cycle_step(struct ds_one_cycle *o)
{
	o->last_batch_iteration++;
	double lbi = (double)o->last_batch_iteration;
	if (lbi < o->total) {
		double f = ds_scale(o);
		o->group_lr = o->min_lr + (o->max_lr - o->min_lr) * f;
		if (o->cycle_momentum)
			o->group_beta1 = o->max_mom - (o->max_mom - o->min_mom) * f;
	} else {
		double d = lbi - o->total + 1;
		bool skip_lr = o->decay_step_size == 0 || o->decay_lr_rate == 0;
		bool skip_mom = o->decay_step_size == 0 || o->decay_mom_rate == 0;
		o->group_lr = skip_lr ? o->min_lr
				      : o->min_lr / (1 + o->decay_lr_rate * (d / o->decay_step_size));
		if (o->cycle_momentum)
			o->group_beta1 = skip_mom ? o->max_mom
						  : o->max_mom * (1 + o->decay_mom_rate *
									  (d / o->decay_step_size));
	}
	if (o->cycle_momentum)
		o->group_beta2 = 0.99;
}

struct one_cycle_case {
	double min_lr, max_lr, decay_lr_rate;
	uint64_t s1;
	int64_t s2; /* -1: None */
	uint64_t n1;
	int64_t n2; /* -1: None */
	uint64_t decay_step_size;
	bool cycle_momentum;
	double min_mom, max_mom, decay_mom_rate;
};

static const struct one_cycle_case one_cycle_cases[] = {
	/* DeepSpeed's defaults for everything but the bounds and sizes */
	{ 1e-4, 1e-3, 0, 10, -1, 0, -1, 0, true, 0.8, 0.9, 0 },
	/* uneven halves, decay of both */
	{ 0.004, 0.015, 0.01, 7, 3, 0, -1, 4, true, 0.85, 0.95, 0.002 },
	/* QANet's ds_bsz512_1cycle.json, scaled down: stairs in both halves */
	{ 0.004, 0.015, 0.01, 100, 10, 10, 10, 100, true, 0.8, 0.9, 0 },
	/* stairs in the first half only, the second's None = the first's */
	{ 1e-3, 3e-3, 0.5, 12, 9, 3, -1, 5, false, 0.8, 0.9, 0 },
	{ 1e-3, 3e-3, 0.5, 12, 9, 4, 0, 5, true, 0.5, 0.99, 0.1 },
	/* no second half */
	{ 2e-4, 8e-4, 0, 6, 0, 0, -1, 0, true, 0.8, 0.9, 0 },
	/* uneven stairs whose peak lands a hair off in floating point */
	{ 1e-5, 1e-2, 1, 3, 7, 3, 7, 1, true, 0.8, 0.9, 0.05 },
};

static void test_one_cycle(void **state)
{
	(void)state;
	for (size_t ci = 0; ci < sizeof(one_cycle_cases) / sizeof(one_cycle_cases[0]); ci++) {
		const struct one_cycle_case *k = &one_cycle_cases[ci];
		struct zn_config cfg;
		zn_config_default(&cfg);
		struct zn_scheduler_params *p = &cfg.scheduler.params;
		cfg.scheduler.type = ZN_SCHED_ONE_CYCLE;
		p->cycle_min_lr = k->min_lr;
		p->cycle_max_lr = k->max_lr;
		p->decay_lr_rate = k->decay_lr_rate;
		p->cycle_first_step_size = k->s1;
		p->cycle_second_step_size = k->s2;
		p->cycle_first_stair_count = k->n1;
		p->cycle_second_stair_count = k->n2;
		p->decay_step_size = k->decay_step_size;
		p->cycle_momentum = k->cycle_momentum;
		p->cycle_min_mom = k->min_mom;
		p->cycle_max_mom = k->max_mom;
		p->decay_mom_rate = k->decay_mom_rate;
		struct zn_lr_schedule s;
		assert_int_equal(zn_lr_schedule_init(&s, &cfg.scheduler, 0.5, true, 0), 0);

		double s2 = k->s2 < 0 ? (double)k->s1 : (double)k->s2;
		struct ds_one_cycle o = {
			.min_lr = k->min_lr, .max_lr = k->max_lr, .decay_lr_rate = k->decay_lr_rate,
			.s1 = (double)k->s1, .s2 = s2, .total = (double)k->s1 + s2,
			.ratio = (double)k->s1 / ((double)k->s1 + s2), .n1 = (double)k->n1,
			.n2 = k->n2 < 0 ? (double)k->n1 : (double)k->n2,
			.decay_step_size = (double)k->decay_step_size, .min_mom = k->min_mom,
			.max_mom = k->max_mom, .decay_mom_rate = k->decay_mom_rate,
			.cycle_momentum = k->cycle_momentum, .last_batch_iteration = -1,
			/* the constructor's values; the optimizer's own betas
			 * stay without cycle_momentum */
			.group_lr = k->min_lr, .group_beta1 = k->cycle_momentum ? k->min_mom : 0.3,
			.group_beta2 = k->cycle_momentum ? 0.99 : 0.4,
		};
		uint64_t last = (uint64_t)o.total * 3 + 20;
		for (uint64_t step = 0; step <= last; step++) {
			/* Optimizer step `step` runs with the group's values ... */
			double b1 = 0.3, b2 = 0.4;
			bool set = zn_betas_at(&s, step, &b1, &b2);
			if (zn_lr_at(&s, step) != o.group_lr || set != k->cycle_momentum ||
			    b1 != o.group_beta1 || b2 != o.group_beta2)
				fail_msg("case %zu step %llu: lr %.17g beta1 %.17g beta2 %g, "
					 "DeepSpeed %.17g %.17g %g",
					 ci, (unsigned long long)step, zn_lr_at(&s, step), b1, b2,
					 o.group_lr, o.group_beta1, o.group_beta2);
			/* ... then the engine steps the schedule. */
			ds_one_cycle_step(&o);
		}
	}
}

/* Values worked by hand from the paper's triangle: min at the start and
 * the end of the cycle, max at the end of the first half, linear between;
 * beta1 the mirror image. */
static void test_one_cycle_by_hand(void **state)
{
	struct zn_config cfg;
	struct zn_lr_schedule s;
	double b1, b2;

	(void)state;
	zn_config_default(&cfg);
	cfg.scheduler.type = ZN_SCHED_ONE_CYCLE;
	cfg.scheduler.params.cycle_min_lr = 0.001;
	cfg.scheduler.params.cycle_max_lr = 0.011;
	cfg.scheduler.params.cycle_first_step_size = 10;
	cfg.scheduler.params.cycle_second_step_size = 40;
	cfg.scheduler.params.decay_step_size = 10;
	cfg.scheduler.params.decay_lr_rate = 1;
	assert_int_equal(zn_lr_schedule_init(&s, &cfg.scheduler, 1, true, 0), 0);
	assert_close(zn_lr_at(&s, 0), 0.001, 0);
	assert_close(zn_lr_at(&s, 5), 0.006, 5);
	assert_close(zn_lr_at(&s, 10), 0.011, 10);
	assert_close(zn_lr_at(&s, 30), 0.006, 30);
	assert_close(zn_lr_at(&s, 50), 0.001, 50);
	assert_close(zn_lr_at(&s, 60), 0.0005, 60); /* 10 steps = one unit of decay */
	assert_close(zn_lr_at(&s, 70), 0.001 / 3, 70);
	assert_true(zn_betas_at(&s, 0, &b1, &b2));
	assert_close(b1, 0.8, 0); /* the constructor's cycle_min_mom */
	assert_true(zn_betas_at(&s, 1, &b1, &b2));
	assert_close(b1, 0.89, 1);
	assert_true(zn_betas_at(&s, 10, &b1, &b2));
	assert_close(b1, 0.8, 10);
	assert_close(b2, 0.99, 10);
	assert_true(zn_betas_at(&s, 30, &b1, &b2));
	assert_close(b1, 0.85, 30);
	assert_true(zn_betas_at(&s, 70, &b1, &b2));
	assert_close(b1, 0.9, 70); /* no decay_mom_rate */

	/* Two stairs per half: flat on each, the peak on the step it lands. */
	cfg.scheduler.params.cycle_first_stair_count = 2;
	assert_int_equal(zn_lr_schedule_init(&s, &cfg.scheduler, 1, true, 0), 0);
	assert_close(zn_lr_at(&s, 4), 0.001, 4);
	assert_close(zn_lr_at(&s, 5), 0.006, 5);
	assert_close(zn_lr_at(&s, 9), 0.006, 9);
	assert_close(zn_lr_at(&s, 10), 0.011, 10);
	assert_close(zn_lr_at(&s, 11), 0.006, 11); /* the second half's first stair */
	assert_close(zn_lr_at(&s, 30), 0.006, 30);
	assert_close(zn_lr_at(&s, 31), 0.001, 31);

	/* SGD has no betas: DeepSpeed turns cycle_momentum off. */
	assert_int_equal(zn_lr_schedule_init(&s, &cfg.scheduler, 1, false, 0), 0);
	assert_false(zn_betas_at(&s, 3, &b1, &b2));

	cfg.scheduler.params.cycle_max_lr = -1; /* not given */
	assert_int_equal(zn_lr_schedule_init(&s, &cfg.scheduler, 1, true, 0), -EINVAL);
}

static void test_lr_range_test(void **state)
{
	static const struct {
		double min_lr, rate;
		uint64_t size;
		bool staircase;
	} cases[] = {
		{ 1e-3, 1.0, 2000, false }, { 1e-4, 5, 7, false }, { 1e-4, 5, 7, true },
		{ 0.02, 0.25, 1, true },    { 3e-5, 0, 10, false },
	};
	(void)state;
	for (size_t ci = 0; ci < sizeof(cases) / sizeof(cases[0]); ci++) {
		struct zn_config cfg;
		zn_config_default(&cfg);
		cfg.scheduler.type = ZN_SCHED_LR_RANGE_TEST;
		cfg.scheduler.params.lr_range_test_min_lr = cases[ci].min_lr;
		cfg.scheduler.params.lr_range_test_step_rate = cases[ci].rate;
		cfg.scheduler.params.lr_range_test_step_size = cases[ci].size;
		cfg.scheduler.params.lr_range_test_staircase = cases[ci].staircase;
		struct zn_lr_schedule s;
		double b1, b2;
		assert_int_equal(zn_lr_schedule_init(&s, &cfg.scheduler, 9, true, 0), 0);
		/* LRRangeTest as the engine drives it: the constructor sets
		 * min_lr; each step() recomputes from last_batch_iteration. */
		int64_t last_batch_iteration = -1;
		double group_lr = cases[ci].min_lr;
		for (uint64_t step = 0; step < 300; step++) {
			if (zn_lr_at(&s, step) != group_lr)
				fail_msg("case %zu step %llu: lr %.17g, DeepSpeed %.17g", ci,
					 (unsigned long long)step, zn_lr_at(&s, step), group_lr);
			assert_false(zn_betas_at(&s, step, &b1, &b2));
			last_batch_iteration++;
			double interval = (double)(last_batch_iteration + 1) / (double)cases[ci].size;
			if (cases[ci].staircase)
				interval = floor(interval);
			group_lr = cases[ci].min_lr * (1 + cases[ci].rate * interval);
		}
	}
	/* By hand: step_size 10, rate 1: double at step 10, continuous. */
	struct zn_config cfg;
	struct zn_lr_schedule s;
	zn_config_default(&cfg);
	cfg.scheduler.type = ZN_SCHED_LR_RANGE_TEST;
	cfg.scheduler.params.lr_range_test_step_size = 10;
	assert_int_equal(zn_lr_schedule_init(&s, &cfg.scheduler, 9, true, 0), 0);
	assert_close(zn_lr_at(&s, 5), 1.5e-3, 5);
	assert_close(zn_lr_at(&s, 10), 2e-3, 10);
	cfg.scheduler.params.lr_range_test_staircase = true;
	assert_int_equal(zn_lr_schedule_init(&s, &cfg.scheduler, 9, true, 0), 0);
	assert_close(zn_lr_at(&s, 9), 1e-3, 9);
	assert_close(zn_lr_at(&s, 20), 3e-3, 20);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_loss_scaler_tables),
		cmocka_unit_test(test_loss_scaler_minimum_reports),
		cmocka_unit_test(test_loss_scaler_default_window),
		cmocka_unit_test(test_static_scales),
		cmocka_unit_test(test_warmup_lr),
		cmocka_unit_test(test_warmup_decay_lr),
		cmocka_unit_test(test_warmup_cosine_lr),
		cmocka_unit_test(test_no_schedule),
		cmocka_unit_test(test_one_cycle),
		cmocka_unit_test(test_one_cycle_by_hand),
		cmocka_unit_test(test_lr_range_test),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
