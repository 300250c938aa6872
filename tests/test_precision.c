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

static const uint64_t steps[] = { 0, 1, 2, 7, 49, 50, 51, 99, 100, 150, 199, 200, 250 };

static void test_warmup_lr(void **state)
{
	(void)state;
	for (int wt = 0; wt < 2; wt++) {
		struct zn_scheduler_config c = sched(ZN_SCHED_WARMUP_LR, wt, 50, 0);
		struct zn_lr_schedule s;
		assert_int_equal(zn_lr_schedule_init(&s, &c, 3e-4, 0), 0);
		for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
			uint64_t t = steps[i];
			/* DeepSpeed WarmupLR._get_gamma */
			double g = t < 50 ? (wt == ZN_WARMUP_LOG ? log(t + 1.0) / log(50.0)
								 : t / 50.0)
					  : 1.0;
			assert_close(zn_lr_at(&s, t), 1e-5 + (1e-3 - 1e-5) * g, t);
		}
	}
	/* The values themselves, worked out by hand at a few points. */
	struct zn_scheduler_config c = sched(ZN_SCHED_WARMUP_LR, ZN_WARMUP_LINEAR, 10, 0);
	struct zn_lr_schedule s;
	assert_int_equal(zn_lr_schedule_init(&s, &c, 0, 0), 0);
	assert_close(zn_lr_at(&s, 0), 1e-5, 0);
	assert_close(zn_lr_at(&s, 5), 1e-5 + 0.5 * (1e-3 - 1e-5), 5);
	assert_close(zn_lr_at(&s, 10), 1e-3, 10);
	assert_close(zn_lr_at(&s, 1000000), 1e-3, 1000000);
	/* warmup_num_steps below 2 is used as 2 (DeepSpeed: max(2, n)). */
	c = sched(ZN_SCHED_WARMUP_LR, ZN_WARMUP_LOG, 0, 0);
	assert_int_equal(zn_lr_schedule_init(&s, &c, 0, 0), 0);
	assert_close(zn_lr_at(&s, 0), 1e-5, 0);
	assert_close(zn_lr_at(&s, 1), 1e-3, 1); /* log(2) / log(2) */
}

static void test_warmup_decay_lr(void **state)
{
	(void)state;
	for (int wt = 0; wt < 2; wt++) {
		struct zn_scheduler_config c = sched(ZN_SCHED_WARMUP_DECAY_LR, wt, 50, 200);
		struct zn_lr_schedule s;
		assert_int_equal(zn_lr_schedule_init(&s, &c, 3e-4, 0), 0);
		for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
			uint64_t t = steps[i];
			double g;
			if (t < 50)
				g = wt == ZN_WARMUP_LOG ? log(t + 1.0) / log(50.0) : t / 50.0;
			else
				g = fmax(0.0, (200.0 - t) / fmax(1.0, 200.0 - 50.0));
			assert_close(zn_lr_at(&s, t), 1e-5 + (1e-3 - 1e-5) * g, t);
		}
		/* By hand: halfway through the decay, halfway between min and max. */
		assert_close(zn_lr_at(&s, 125), 1e-5 + 0.5 * (1e-3 - 1e-5), 125);
		assert_close(zn_lr_at(&s, 200), 1e-5, 200);
		assert_close(zn_lr_at(&s, 300), 1e-5, 300); /* clamped at 0 */
	}
	/* total_num_steps auto takes the run's step count; none is an error. */
	struct zn_scheduler_config c = sched(ZN_SCHED_WARMUP_DECAY_LR, 0, 50, 0);
	struct zn_lr_schedule s;
	assert_int_equal(zn_lr_schedule_init(&s, &c, 0, 400), 0);
	assert_int_equal(s.total_num_steps, 400);
	assert_int_equal(zn_lr_schedule_init(&s, &c, 0, 0), -EINVAL);
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
		assert_int_equal(zn_lr_schedule_init(&s, &c, lr, 0), 0);
		for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
			uint64_t t = steps[i];
			double r;
			/* DeepSpeed WarmupCosineLR.get_lr_ratio */
			if (t < 50) {
				r = wt == ZN_WARMUP_LOG ? log(t + 1.0) / log(50.0) : t / 50.0;
				r = wmin + r * (1 - wmin);
			} else {
				double x = (t - 50.0 + 1) / (200.0 - 50.0);
				r = fmax(0.0, cmin + (1 - cmin) * (1 + cos(M_PI * x)) / 2);
			}
			assert_close(zn_lr_at(&s, t), lr * r, t);
		}
		/* By hand: step 49 + 75 is halfway through the cosine. */
		assert_close(zn_lr_at(&s, 124), lr * (cmin + (1 - cmin) * 0.5), 124);
		assert_close(zn_lr_at(&s, 199), lr * cmin, 199);
		assert_close(zn_lr_at(&s, 0), lr * wmin, 0);
	}
	/* DeepSpeed divides by total - warmup: refuse total <= warmup. */
	struct zn_scheduler_config c = sched(ZN_SCHED_WARMUP_COSINE_LR, 0, 50, 50);
	struct zn_lr_schedule s;
	assert_int_equal(zn_lr_schedule_init(&s, &c, lr, 0), -EINVAL);
}

static void test_no_schedule(void **state)
{
	struct zn_scheduler_config c = sched(ZN_SCHED_NONE, 0, 50, 0);
	struct zn_lr_schedule s;

	(void)state;
	assert_int_equal(zn_lr_schedule_init(&s, &c, 2.5e-4, 0), 0);
	assert_close(zn_lr_at(&s, 0), 2.5e-4, 0);
	assert_close(zn_lr_at(&s, 12345), 2.5e-4, 12345);
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
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
