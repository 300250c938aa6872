/* The optimizers' public entry points: argument checks, per-step
 * constants, the SIMD choice and the split into tiles over a thread pool.
 * The arithmetic lives in kernels_{scalar,avx2,avx512}.c. */
#include "zn_common.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adam_internal.h"
#include "zinc/cpu.h"
#include "zinc/threadpool.h"

/* ---- SIMD choice --------------------------------------------------------- */

static const char *const simd_names[] = {
	[ZN_ADAM_SIMD_AUTO] = "auto",
	[ZN_ADAM_SIMD_SCALAR] = "scalar",
	[ZN_ADAM_SIMD_AVX2] = "avx2",
	[ZN_ADAM_SIMD_AVX512] = "avx512",
};
_Static_assert(ZN_ARRAY_SIZE(simd_names) == ZN_ADAM_SIMD_COUNT, "a name per SIMD path");

/* What each path needs from the CPU (and OS). */
static const enum zn_cpu_feature avx2_needs[] = { ZN_CPU_AVX2, ZN_CPU_FMA, ZN_CPU_F16C };
static const enum zn_cpu_feature avx512_needs[] = { ZN_CPU_AVX512F, ZN_CPU_AVX512BW,
						    ZN_CPU_AVX512VL };

static const struct zn_optim_isa *const isas[] = {
	[ZN_ADAM_SIMD_AUTO] = NULL,
	[ZN_ADAM_SIMD_SCALAR] = &zn_optim_scalar,
#if ZN_ADAM_HAVE_AVX2
	[ZN_ADAM_SIMD_AVX2] = &zn_optim_avx2,
#else
	[ZN_ADAM_SIMD_AVX2] = NULL,
#endif
#if ZN_ADAM_HAVE_AVX512
	[ZN_ADAM_SIMD_AVX512] = &zn_optim_avx512,
#else
	[ZN_ADAM_SIMD_AVX512] = NULL,
#endif
};
_Static_assert(ZN_ARRAY_SIZE(isas) == ZN_ADAM_SIMD_COUNT, "a kernel table per SIMD path");

static struct {
	pthread_once_t once;
	bool usable[ZN_ADAM_SIMD_COUNT];
	char why_not[ZN_ADAM_SIMD_COUNT][128]; /* for an unusable path */
	enum zn_adam_simd best;
} simd = { .once = PTHREAD_ONCE_INIT };

static void why_missing(enum zn_adam_simd s, const enum zn_cpu_feature *needs, size_t n)
{
	char *w = simd.why_not[s];
	size_t len = sizeof(simd.why_not[s]);

	if (!isas[s]) {
		snprintf(w, len, "this build of zinc has no %s code (the compiler lacked the "
			 "flags)", simd_names[s]);
		return;
	}
	int k = snprintf(w, len, "the CPU (or OS) lacks");
	for (size_t i = 0; i < n; i++)
		if (!zn_cpu_has(needs[i]) && k > 0 && (size_t)k < len)
			k += snprintf(w + k, len - (size_t)k, " %s", zn_cpu_feature_name(needs[i]));
}

static void simd_probe(void)
{
	static const struct {
		enum zn_adam_simd s;
		const enum zn_cpu_feature *needs;
		size_t n;
	} paths[] = {
		{ ZN_ADAM_SIMD_AVX512, avx512_needs, ZN_ARRAY_SIZE(avx512_needs) },
		{ ZN_ADAM_SIMD_AVX2, avx2_needs, ZN_ARRAY_SIZE(avx2_needs) },
	};

	simd.usable[ZN_ADAM_SIMD_SCALAR] = true;
	simd.best = ZN_ADAM_SIMD_SCALAR;
	for (size_t i = ZN_ARRAY_SIZE(paths); i-- > 0;) {
		enum zn_adam_simd s = paths[i].s;
		bool ok = isas[s] != NULL;
		for (size_t f = 0; f < paths[i].n; f++)
			ok = ok && zn_cpu_has(paths[i].needs[f]);
		simd.usable[s] = ok;
		if (ok)
			simd.best = s;
		else
			why_missing(s, paths[i].needs, paths[i].n);
	}
	/* Each fallback, once per process. */
	for (size_t i = 0; i < ZN_ARRAY_SIZE(paths); i++) {
		enum zn_adam_simd s = paths[i].s;
		if (simd.usable[s])
			break;
		zn_info("cpu_adam: no %s path: %s; falling back", simd_names[s], simd.why_not[s]);
	}
	zn_debug("cpu_adam: using the %s path", simd_names[simd.best]);
}

const char *zn_adam_simd_name(enum zn_adam_simd s)
{
	return (unsigned)s < ZN_ADAM_SIMD_COUNT ? simd_names[s] : "?";
}

int zn_adam_simd_parse(const char *name, enum zn_adam_simd *out)
{
	for (unsigned i = 0; name && i < ZN_ADAM_SIMD_COUNT; i++)
		if (strcmp(name, simd_names[i]) == 0) {
			*out = (enum zn_adam_simd)i;
			return 0;
		}
	return zn_error(-EINVAL, "'%s' is not a SIMD path: use scalar, avx2, avx512 or auto",
			name ? name : "(null)");
}

int zn_adam_simd_select(enum zn_adam_simd want, enum zn_adam_simd *got)
{
	const char *from = "";

	pthread_once(&simd.once, simd_probe);
	if (want == ZN_ADAM_SIMD_AUTO) {
		const char *env = getenv("ZINC_SIMD");
		if (!env || !*env || strcmp(env, "auto") == 0) {
			*got = simd.best;
			return 0;
		}
		if (zn_adam_simd_parse(env, &want) != 0)
			return zn_error(-EINVAL, "ZINC_SIMD=%s is not a SIMD path: use scalar, avx2, "
					"avx512 or auto (or unset it)", env);
		if (want == ZN_ADAM_SIMD_AUTO) {
			*got = simd.best;
			return 0;
		}
		from = "ZINC_SIMD=";
	}
	if ((unsigned)want >= ZN_ADAM_SIMD_COUNT)
		return zn_error(-EINVAL, "SIMD path %d does not exist", (int)want);
	if (!simd.usable[want])
		return zn_error(-ENOTSUP, "%s%s was asked for, but %s; the best here is %s", from,
				simd_names[want], simd.why_not[want], simd_names[simd.best]);
	*got = want;
	return 0;
}

const struct zn_optim_isa *zn_optim_isa_get(enum zn_adam_simd s)
{
	return (unsigned)s < ZN_ADAM_SIMD_COUNT ? isas[s] : NULL;
}

/* ---- defaults ------------------------------------------------------------ */

void zn_adam_defaults(struct zn_adam_hparams *hp)
{
	*hp = (struct zn_adam_hparams){ .lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999,
					.eps = 1e-8, .weight_decay = 0.0,
					.bias_correction = true, .adamw_mode = true };
}

void zn_adagrad_defaults(struct zn_adam_hparams *hp)
{
	*hp = (struct zn_adam_hparams){ .lr = 1e-2, .eps = 1e-10, .weight_decay = 0.0 };
}

void zn_lion_defaults(struct zn_adam_hparams *hp)
{
	*hp = (struct zn_adam_hparams){ .lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999,
					.weight_decay = 0.0 };
}

void zn_lamb_defaults(struct zn_adam_hparams *hp)
{
	zn_adam_defaults(hp);
	hp->max_coeff = 10.0;
	hp->min_coeff = 0.01;
}

void zn_sgd_defaults(struct zn_adam_hparams *hp)
{
	*hp = (struct zn_adam_hparams){ .lr = 1e-3 };
}

/* ---- tiles --------------------------------------------------------------- */

/* Default tiles: at least 4 per worker so a preempted core leaves little
 * behind, at most 1 Mi elements (4 MiB per fp32 array: a callback gets
 * tiles early) and at least 64 Ki (the per-tile cost — an atomic, a
 * prefetcher restarting on a new stream — stays far below 1%). */
#define TILE_MIN ((size_t)64 << 10)
#define TILE_MAX ((size_t)1 << 20)

size_t zn_adam_tile_size(size_t n, const struct zn_adam_exec *ex)
{
	size_t tile = ex ? ex->tile : 0;

	if (tile == 0) {
		unsigned workers = zn_threadpool_size(ex ? ex->pool : NULL);
		tile = ZN_DIV_ROUND_UP(n, (size_t)workers * 4);
		tile = ZN_MIN(ZN_MAX(tile, TILE_MIN), TILE_MAX);
	}
	if (tile > SIZE_MAX - ZN_ADAM_TILE_QUANTUM)
		tile = SIZE_MAX - ZN_ADAM_TILE_QUANTUM;
	return ZN_ALIGN_UP(tile, ZN_ADAM_TILE_QUANTUM);
}

enum op { OP_ADAM, OP_ADAGRAD, OP_LION, OP_SGD, OP_LAMB1, OP_LAMB2, OP_SUMSQ, OP_STREAM7, OP_TRIAD };

struct job {
	enum op op;
	const struct zn_optim_isa *isa;
	struct zn_optim_args args;
	size_t n, tile;
	zn_adam_tile_fn on_tile;
	void *user;
	double *partial; /* OP_SUMSQ: one sum per tile; OP_LAMB1: two */
};

static void run_tile(void *p, size_t t, unsigned worker)
{
	struct job *j = p;
	const struct zn_optim_args *a = &j->args;
	size_t i0 = t * j->tile, cnt = ZN_MIN(j->tile, j->n - i0);
	(void)worker;

	switch (j->op) {
	case OP_ADAM:
		j->isa->adam(a, i0, cnt);
		break;
	case OP_ADAGRAD:
		j->isa->adagrad(a, i0, cnt);
		break;
	case OP_LION:
		j->isa->lion(a, i0, cnt);
		break;
	case OP_SGD:
		j->isa->sgd(a, i0, cnt);
		break;
	case OP_LAMB1:
		/* Nothing final to hand on: the parameters move in pass 2. */
		j->isa->lamb_moments(a, i0, cnt, j->partial + 2 * t);
		return;
	case OP_LAMB2:
		j->isa->lamb_apply(a, i0, cnt);
		break;
	case OP_SUMSQ:
		j->partial[t] = j->isa->sumsq((const char *)a->g + i0 * zn_dtype_size(a->gt),
					      a->gt, cnt);
		return;
	case OP_STREAM7:
		j->isa->stream7(a->p + i0, (const float *)a->g + i0, a->m + i0, a->v + i0, cnt);
		return;
	case OP_TRIAD:
		j->isa->triad(a->m + i0, a->p + i0, a->v + i0, 3.0f, cnt);
		return;
	}
	if (j->on_tile)
		j->on_tile(j->user, i0, cnt);
}

static void run_job(struct job *j, const struct zn_adam_exec *ex)
{
	size_t ntiles = ZN_DIV_ROUND_UP(j->n, j->tile);

	/* One tile: the pool's wake-up would cost more than the work. */
	if (!ex || !ex->pool || ntiles == 1) {
		for (size_t t = 0; t < ntiles; t++)
			run_tile(j, t, 0);
		return;
	}
	zn_threadpool_for(ex->pool, ntiles, run_tile, j);
}

/* ---- argument checks ----------------------------------------------------- */

static bool overlap(const void *a, size_t alen, const void *b, size_t blen)
{
	uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;
	return a && b && x < y + blen && y < x + alen;
}

static int check_dtype(const char *fn, const char *what, enum zn_dtype d, bool allow_fp32)
{
	if (!zn_dtype_is_float(d) || (!allow_fp32 && d == ZN_DTYPE_F32))
		return zn_error(-EINVAL, "%s: %s %d is not %s", fn, what, (int)d,
				allow_fp32 ? "ZN_DTYPE_F32, ZN_DTYPE_F16 or ZN_DTYPE_BF16"
					   : "ZN_DTYPE_F16 or ZN_DTYPE_BF16");
	return 0;
}

static int check_beta(const char *fn, const char *name, double b)
{
	/* !(b >= 0 && b < 1) also catches NaN. */
	if (!(b >= 0.0 && b < 1.0))
		return zn_error(-EINVAL, "%s: %s = %g is outside [0, 1); typical values are 0.9 "
				"(beta1) and 0.999 (beta2)", fn, name, b);
	return 0;
}

/* Everything about a call that is not an array: hyperparameters, step,
 * scale, dtypes, SIMD. */
static int check_call(const char *fn, enum op op, const struct zn_adam_hparams *hp,
		      uint64_t step, float grad_scale, const struct zn_adam_tensors *t,
		      const struct zn_adam_exec *ex, enum zn_adam_simd *isa)
{
	int rc;

	if (!hp || !t)
		return zn_error(-EINVAL, "%s: %s is NULL", fn, !hp ? "hparams" : "tensors");
	if (!(isfinite(hp->lr) && hp->lr >= 0.0))
		return zn_error(-EINVAL, "%s: lr = %g must be finite and >= 0", fn, hp->lr);
	if (!(isfinite(hp->weight_decay) && hp->weight_decay >= 0.0))
		return zn_error(-EINVAL, "%s: weight_decay = %g must be finite and >= 0", fn,
				hp->weight_decay);
	if (op != OP_ADAGRAD && op != OP_SGD) {
		if ((rc = check_beta(fn, "beta1", hp->beta1)) || (rc = check_beta(fn, "beta2",
										  hp->beta2)))
			return rc;
	}
	if (op == OP_SGD) {
		if (!(hp->momentum >= 0.0 && hp->momentum <= 1.0) ||
		    !(hp->dampening >= 0.0 && hp->dampening <= 1.0))
			return zn_error(-EINVAL, "%s: momentum %g and dampening %g must be in "
					"[0, 1]", fn, hp->momentum, hp->dampening);
		if (hp->nesterov && (hp->momentum <= 0.0 || hp->dampening != 0.0))
			return zn_error(-EINVAL, "%s: Nesterov momentum needs momentum > 0 and "
					"dampening 0 (got %g and %g)", fn, hp->momentum,
					hp->dampening);
	}
	if ((op == OP_LAMB1 || op == OP_LAMB2) &&
	    !(hp->min_coeff >= 0.0 && hp->min_coeff <= hp->max_coeff && isfinite(hp->max_coeff)))
		return zn_error(-EINVAL, "%s: min_coeff %g and max_coeff %g must be finite with "
				"0 <= min_coeff <= max_coeff", fn, hp->min_coeff, hp->max_coeff);
	/* eps must survive the rounding to fp32, too. */
	if (op != OP_LION && op != OP_SGD &&
	    !(hp->eps > 0.0 && isfinite((float)hp->eps) && (float)hp->eps > 0.0f))
		return zn_error(-EINVAL, "%s: eps = %g must be > 0 (and a finite fp32); the usual "
				"value is %s", fn, hp->eps, op == OP_ADAM ? "1e-8" : "1e-10");
	if (step == 0)
		return zn_error(-EINVAL, "%s: step 0: steps count from 1, as in torch and DeepSpeed",
				fn);
	if (!isfinite(grad_scale))
		return zn_error(-EINVAL, "%s: grad_scale = %g is not finite: skip this step (the "
				"loss scale overflowed) instead", fn, (double)grad_scale);
	if (op != OP_LAMB2 && (rc = check_dtype(fn, "grad_dtype", t->grad_dtype, true)))
		return rc;
	if (t->param_copy && (rc = check_dtype(fn, "copy_dtype", t->copy_dtype, false)))
		return rc;
	return zn_adam_simd_select(ex ? ex->simd : ZN_ADAM_SIMD_AUTO, isa);
}

static int check_arrays(const char *fn, enum op op, const struct zn_adam_hparams *hp,
			const struct zn_adam_tensors *t)
{
	bool need_m = op != OP_ADAGRAD && (op != OP_SGD || hp->momentum != 0.0);
	bool need_v = op != OP_LION && op != OP_SGD, need_g = op != OP_LAMB2;
	const char *missing = !t->param ? "param"
			      : need_g && !t->grad ? "grad"
			      : need_m && !t->exp_avg ? "exp_avg"
			      : need_v && !t->exp_avg_sq ? "exp_avg_sq"
						 : NULL;
	if (missing)
		return zn_error(-EINVAL, "%s: %s is NULL", fn, missing);
	if (t->n > SIZE_MAX / 4)
		return zn_error(-EINVAL, "%s: n = %zu elements is too large", fn, t->n);

	size_t f = t->n * 4, h = t->n * 2;
	struct {
		const char *name;
		const void *p;
		size_t len;
	} arr[] = {
		{ "param", t->param, f },
		{ "grad", need_g ? t->grad : NULL, t->n * zn_dtype_size(t->grad_dtype) },
		{ "exp_avg", need_m ? t->exp_avg : NULL, f },
		{ "exp_avg_sq", need_v ? t->exp_avg_sq : NULL, f },
		{ "param_copy", op != OP_LAMB1 ? t->param_copy : NULL, h },
	};
	for (size_t i = 0; i < ZN_ARRAY_SIZE(arr); i++)
		for (size_t k = i + 1; k < ZN_ARRAY_SIZE(arr); k++)
			if (overlap(arr[i].p, arr[i].len, arr[k].p, arr[k].len))
				return zn_error(-EINVAL, "%s: %s and %s overlap; every array must "
						"be separate", fn, arr[i].name, arr[k].name);
	return 0;
}

/* ---- the optimizers ------------------------------------------------------ */

/* Lamb's norm sums depend on the tiles: its automatic tile is a fixed
 * TILE_MIN elements, not the pool-sized one, so the same tensor gives the
 * same sums (and ratio) with any number of threads. */
static size_t lamb_tile(size_t n, const struct zn_adam_exec *ex)
{
	if (ex && ex->tile)
		return zn_adam_tile_size(n, ex);
	struct zn_adam_exec fixed = { .tile = TILE_MIN };
	return zn_adam_tile_size(n, &fixed);
}

/* `ratio`: OP_LAMB2's trust ratio; `sums`: OP_LAMB1's result. */
static int step_call(const char *fn, enum op op, const struct zn_adam_hparams *hp, uint64_t step,
		     float grad_scale, const struct zn_adam_tensors *t,
		     const struct zn_adam_exec *ex, double ratio, struct zn_lamb_sums *sums)
{
	enum zn_adam_simd s;
	double stack_partial[2 * 64];
	int rc = check_call(fn, op, hp, step, grad_scale, t, ex, &s);
	if (rc)
		return rc;
	if (op == OP_LAMB2 && (ratio < 0.0 || isinf(ratio))) /* NaN propagates, as in DeepSpeed */
		return zn_error(-EINVAL, "%s: trust ratio %g must be finite and >= 0 (or NaN)", fn, ratio);
	if (t->n == 0)
		return 0;
	if ((rc = check_arrays(fn, op, hp, t)))
		return rc;

	struct job j = {
		.op = op,
		.isa = isas[s],
		.n = t->n,
		.tile = op == OP_LAMB1 ? lamb_tile(t->n, ex) : zn_adam_tile_size(t->n, ex),
		.on_tile = ex ? ex->on_tile : NULL,
		.user = ex ? ex->user : NULL,
	};
	struct zn_optim_args *a = &j.args;
	*a = (struct zn_optim_args){
		.p = t->param, .g = t->grad, .m = t->exp_avg, .v = t->exp_avg_sq,
		.copy = t->param_copy, .gt = t->grad_dtype, .ct = t->copy_dtype,
		.scale = grad_scale,
		.b1 = (float)hp->beta1, .omb1 = (float)(1.0 - hp->beta1),
		.b2 = (float)hp->beta2, .omb2 = (float)(1.0 - hp->beta2),
		.eps = (float)hp->eps,
		.step_size = (float)-hp->lr, .bc2_rsqrt = 1.0f,
		.decay = (float)(1.0 - hp->lr * hp->weight_decay),
		.l2 = (float)hp->weight_decay,
	};
	bool wd = hp->weight_decay > 0.0;
	switch (op) {
	case OP_ADAM:
		/* Bias corrections in double, rounded once (torch computes
		 * them in Python floats, i.e. double, too). */
		if (hp->bias_correction) {
			double bc1 = 1.0 - pow(hp->beta1, (double)step);
			double bc2 = 1.0 - pow(hp->beta2, (double)step);
			a->step_size = (float)(-hp->lr / bc1);
			a->bc2_rsqrt = (float)(1.0 / sqrt(bc2));
		}
		a->use_decay = wd && hp->adamw_mode;
		a->use_l2 = wd && !hp->adamw_mode;
		break;
	case OP_ADAGRAD:
		a->use_l2 = wd;
		break;
	case OP_LION:
		a->use_decay = wd;
		break;
	case OP_SGD:
		a->b1 = (float)hp->momentum;
		a->omb1 = (float)(1.0 - hp->dampening);
		a->has_momentum = hp->momentum != 0.0;
		a->first = step == 1;
		a->nesterov = hp->nesterov;
		a->use_l2 = wd;
		break;
	case OP_LAMB1:
	case OP_LAMB2: {
		/* FusedLamb: step_size = lr √(1 − β2^t) / (1 − β1^t), times
		 * the ratio; in double, rounded once. */
		double sz = hp->lr;
		if (hp->bias_correction)
			sz = hp->lr * sqrt(1.0 - pow(hp->beta2, (double)step)) /
			     (1.0 - pow(hp->beta1, (double)step));
		a->step_size = (float)(-sz * ratio);
		a->eps_inside = hp->eps_inside_sqrt;
		a->use_l2 = wd;
		if (op == OP_LAMB1)
			a->copy = NULL;
		break;
	}
	default:
		break;
	}
	size_t ntiles = ZN_DIV_ROUND_UP(j.n, j.tile);
	if (op == OP_LAMB1) {
		j.partial = 2 * ntiles <= ZN_ARRAY_SIZE(stack_partial)
				    ? stack_partial
				    : malloc(2 * ntiles * sizeof(double));
		if (!j.partial)
			return zn_error(-ENOMEM, "%s: out of memory for %zu partial sums", fn,
					2 * ntiles);
	}
	run_job(&j, ex);
	if (op == OP_LAMB1) {
		/* In tile order: the same sums whichever worker ran which tile. */
		for (size_t k = 0; k < ntiles; k++) {
			sums->param_sumsq += j.partial[2 * k];
			sums->update_sumsq += j.partial[2 * k + 1];
		}
		if (j.partial != stack_partial)
			free(j.partial);
	}
	return 0;
}

int zn_adam_step(const struct zn_adam_hparams *hp, uint64_t step, float grad_scale,
		 const struct zn_adam_tensors *t, const struct zn_adam_exec *ex)
{
	return step_call("zn_adam_step", OP_ADAM, hp, step, grad_scale, t, ex, 0, NULL);
}

int zn_adagrad_step(const struct zn_adam_hparams *hp, uint64_t step, float grad_scale,
		    const struct zn_adam_tensors *t, const struct zn_adam_exec *ex)
{
	return step_call("zn_adagrad_step", OP_ADAGRAD, hp, step, grad_scale, t, ex, 0, NULL);
}

int zn_lion_step(const struct zn_adam_hparams *hp, uint64_t step, float grad_scale,
		 const struct zn_adam_tensors *t, const struct zn_adam_exec *ex)
{
	return step_call("zn_lion_step", OP_LION, hp, step, grad_scale, t, ex, 0, NULL);
}

int zn_sgd_step(const struct zn_adam_hparams *hp, uint64_t step, float grad_scale,
		const struct zn_adam_tensors *t, const struct zn_adam_exec *ex)
{
	return step_call("zn_sgd_step", OP_SGD, hp, step, grad_scale, t, ex, 0, NULL);
}

int zn_lamb_moments(const struct zn_adam_hparams *hp, uint64_t step, float grad_scale,
		    const struct zn_adam_tensors *t, const struct zn_adam_exec *ex,
		    struct zn_lamb_sums *sums)
{
	if (!sums)
		return zn_error(-EINVAL, "zn_lamb_moments: sums is NULL");
	return step_call("zn_lamb_moments", OP_LAMB1, hp, step, grad_scale, t, ex, 0, sums);
}

double zn_lamb_trust_ratio(const struct zn_adam_hparams *hp, const struct zn_lamb_sums *sums)
{
	/* FusedLamb's lamb_cuda_kernel_part3: 1 unless both norms are
	 * nonzero, then clamped, the upper bound first. */
	double w = sqrt(sums->param_sumsq), u = sqrt(sums->update_sumsq), r = 1.0;
	if (w != 0.0 && u != 0.0) {
		r = w / u;
		if (r > hp->max_coeff)
			r = hp->max_coeff;
		if (r < hp->min_coeff)
			r = hp->min_coeff;
	}
	return r;
}

int zn_lamb_apply(const struct zn_adam_hparams *hp, uint64_t step, double ratio,
		  const struct zn_adam_tensors *t, const struct zn_adam_exec *ex)
{
	return step_call("zn_lamb_apply", OP_LAMB2, hp, step, 1.0f, t, ex, ratio, NULL);
}

int zn_lamb_step(const struct zn_adam_hparams *hp, uint64_t step, float grad_scale,
		 const struct zn_adam_tensors *t, const struct zn_adam_exec *ex, double *ratio_out)
{
	struct zn_lamb_sums sums = { 0 };
	int rc = zn_lamb_moments(hp, step, grad_scale, t, ex, &sums);
	if (rc)
		return rc;
	double r = zn_lamb_trust_ratio(hp, &sums);
	if (ratio_out)
		*ratio_out = r;
	return zn_lamb_apply(hp, step, r, t, ex);
}

int zn_adam_grad_check(const void *grad, enum zn_dtype dtype, size_t n,
		       const struct zn_adam_exec *ex, struct zn_adam_grad_stats *out)
{
	enum zn_adam_simd s;
	double stack_partial[256];
	int rc;

	if (!out)
		return zn_error(-EINVAL, "zn_adam_grad_check: out is NULL");
	if ((rc = check_dtype("zn_adam_grad_check", "dtype", dtype, true)))
		return rc;
	if ((rc = zn_adam_simd_select(ex ? ex->simd : ZN_ADAM_SIMD_AUTO, &s)))
		return rc;
	if (n == 0) {
		*out = (struct zn_adam_grad_stats){ .sumsq = 0.0, .finite = true };
		return 0;
	}
	if (!grad)
		return zn_error(-EINVAL, "zn_adam_grad_check: grad is NULL");

	struct job j = { .op = OP_SUMSQ, .isa = isas[s], .n = n, .tile = zn_adam_tile_size(n, ex) };
	j.args.g = grad;
	j.args.gt = dtype;
	size_t ntiles = ZN_DIV_ROUND_UP(n, j.tile);
	j.partial = ntiles <= ZN_ARRAY_SIZE(stack_partial) ? stack_partial
							   : malloc(ntiles * sizeof(double));
	if (!j.partial)
		return zn_error(-ENOMEM, "zn_adam_grad_check: out of memory for %zu partial sums",
				ntiles);
	run_job(&j, ex);
	/* Partial sums added in tile order: the same result whichever worker
	 * computed which tile. */
	double sum = 0.0;
	for (size_t t = 0; t < ntiles; t++)
		sum += j.partial[t];
	if (j.partial != stack_partial)
		free(j.partial);
	*out = (struct zn_adam_grad_stats){ .sumsq = sum, .finite = isfinite(sum) };
	return 0;
}

/* ---- benchmark streams --------------------------------------------------- */

static int stream_call(enum op op, const struct zn_adam_tensors *t, const struct zn_adam_exec *ex)
{
	enum zn_adam_simd s;
	int rc = zn_adam_simd_select(ex ? ex->simd : ZN_ADAM_SIMD_AUTO, &s);
	if (rc)
		return rc;
	if (t->n == 0)
		return 0;
	if (!t->param || !t->exp_avg || !t->exp_avg_sq || (op == OP_STREAM7 && !t->grad))
		return zn_error(-EINVAL, "benchmark stream: NULL array");
	struct job j = { .op = op, .isa = isas[s], .n = t->n, .tile = zn_adam_tile_size(t->n, ex) };
	j.args = (struct zn_optim_args){ .p = t->param, .g = t->grad, .m = t->exp_avg,
					 .v = t->exp_avg_sq, .gt = ZN_DTYPE_F32 };
	run_job(&j, ex);
	return 0;
}

int zn_adam_stream7(const struct zn_adam_tensors *t, const struct zn_adam_exec *ex)
{
	return stream_call(OP_STREAM7, t, ex);
}

int zn_adam_triad(const struct zn_adam_tensors *t, const struct zn_adam_exec *ex)
{
	return stream_call(OP_TRIAD, t, ex);
}
