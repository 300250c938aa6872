/* cpu_adam/: every SIMD path against the scalar specification (bit for
 * bit) and against a double-precision reference (within a documented
 * tolerance), over 10 steps, for lengths that are not multiples of any
 * vector width and unaligned arrays; conversions; the gradient check;
 * tiles and their callback; bad input; NaN/Inf propagation; the staggered
 * array allocator. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "zn_common.h"
#include "adam_internal.h"
#include "zn_half.h"
#include "zinc/adam.h"
#include "zinc/cpu.h"
#include "zinc/hostmem.h"
#include "zinc/threadpool.h"

#define STEPS 10

enum opt { ADAM, ADAGRAD, LION, LAMB, SGD };
static const char *const opt_names[] = { "adam", "adagrad", "lion", "lamb", "sgd" };

/* ---- helpers ------------------------------------------------------------ */

static uint64_t rng = 0x243f6a8885a308d3ull;

static uint64_t next_u64(void)
{
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return rng * 0x2545f4914f6cdd1dull;
}

static float uniform(float lo, float hi)
{
	return lo + (hi - lo) * (float)(next_u64() >> 40) * 0x1p-24f;
}

/* The usable paths, scalar first. */
static unsigned usable_paths(enum zn_adam_simd *out)
{
	unsigned k = 0;
	for (int s = ZN_ADAM_SIMD_SCALAR; s < ZN_ADAM_SIMD_COUNT; s++) {
		enum zn_adam_simd got;
		if (zn_adam_simd_select((enum zn_adam_simd)s, &got) == 0)
			out[k++] = got;
		else
			print_message("# %s path not available here: %s\n",
				      zn_adam_simd_name((enum zn_adam_simd)s), zn_last_error());
	}
	return k;
}

static int run_opt(enum opt o, const struct zn_adam_hparams *hp, uint64_t step, float scale,
		   const struct zn_adam_tensors *t, const struct zn_adam_exec *ex)
{
	switch (o) {
	case ADAGRAD:
		return zn_adagrad_step(hp, step, scale, t, ex);
	case LION:
		return zn_lion_step(hp, step, scale, t, ex);
	case LAMB:
		return zn_lamb_step(hp, step, scale, t, ex, NULL);
	case SGD:
		return zn_sgd_step(hp, step, scale, t, ex);
	default:
		return zn_adam_step(hp, step, scale, t, ex);
	}
}

/* Arrays with deliberately different misalignments (bytes past a 64-byte
 * boundary; elements stay naturally aligned, as C requires), so no path can
 * rely on vector alignment. */
struct arrays {
	size_t n;
	char *raw[5];
	float *p, *m, *v;
	void *g[STEPS]; /* one gradient per step, of the case's dtype */
	char *graw[STEPS];
	uint16_t *copy;
};

static void *misaligned(char **raw, size_t bytes, size_t off)
{
	*raw = aligned_alloc(64, ZN_ALIGN_UP(bytes + off + 64, 64));
	assert_non_null(*raw);
	return *raw + off;
}

/* copy_off 0 lets the SIMD paths use streaming stores for the copy, 2
 * makes them use ordinary ones: both must give the same bits. */
static void arrays_alloc(struct arrays *a, size_t n, enum zn_dtype gt, size_t copy_off)
{
	memset(a, 0, sizeof(*a));
	a->n = n;
	a->p = misaligned(&a->raw[0], n * 4, 4);
	a->m = misaligned(&a->raw[1], n * 4, 12);
	a->v = misaligned(&a->raw[2], n * 4, 0);
	a->copy = misaligned(&a->raw[3], n * 2, copy_off);
	for (int s = 0; s < STEPS; s++)
		a->g[s] = misaligned(&a->graw[s], n * zn_dtype_size(gt), gt == ZN_DTYPE_F32 ? 20 : 6);
}

static void arrays_free(struct arrays *a)
{
	for (int i = 0; i < 5; i++)
		free(a->raw[i]);
	for (int s = 0; s < STEPS; s++)
		free(a->graw[s]);
}

static void arrays_copy(struct arrays *dst, const struct arrays *src, enum zn_dtype gt)
{
	size_t n = src->n;
	memcpy(dst->p, src->p, n * 4);
	memcpy(dst->m, src->m, n * 4);
	memcpy(dst->v, src->v, n * 4);
	memcpy(dst->copy, src->copy, n * 2);
	for (int s = 0; s < STEPS; s++)
		memcpy(dst->g[s], src->g[s], n * zn_dtype_size(gt));
}

/* Random state and gradients: params ~1, gradients ~1e-2 with a few tiny
 * ones (fp16 subnormals) and a few zeros, moments as after some steps. */
static void arrays_fill(struct arrays *a, enum zn_dtype gt, bool zero_state)
{
	size_t n = a->n;
	float *tmp = malloc(n * 4);
	for (size_t i = 0; i < n; i++) {
		a->p[i] = uniform(-1, 1);
		a->m[i] = zero_state ? 0.0f : uniform(-1e-2f, 1e-2f);
		a->v[i] = zero_state ? 0.0f : uniform(0, 1e-4f);
		a->copy[i] = 0xdead;
	}
	for (int s = 0; s < STEPS; s++) {
		for (size_t i = 0; i < n; i++) {
			uint64_t r = next_u64() % 64;
			tmp[i] = r == 0 ? 0.0f : r == 1 ? uniform(-1e-6f, 1e-6f) : uniform(-1e-2f, 1e-2f);
		}
		if (gt == ZN_DTYPE_F32)
			memcpy(a->g[s], tmp, n * 4);
		else
			zn_optim_scalar.from_f32(tmp, a->g[s], gt, n);
	}
	free(tmp);
}

static struct zn_adam_tensors tensors(const struct arrays *a, int step, enum zn_dtype gt,
				      int ct, enum opt o)
{
	return (struct zn_adam_tensors){
		.n = a->n, .param = a->p, .grad = a->g[step], .grad_dtype = gt,
		.exp_avg = o == ADAGRAD ? NULL : a->m,
		.exp_avg_sq = o == LION || o == SGD ? NULL : a->v,
		.param_copy = ct >= 0 ? a->copy : NULL,
		.copy_dtype = ct >= 0 ? (enum zn_dtype)ct : ZN_DTYPE_F16,
	};
}

static bool same_bits(float x, float y)
{
	return (isnan(x) && isnan(y)) || zn_f32_bits(x) == zn_f32_bits(y);
}

/* ---- the case matrix ---------------------------------------------------- */

struct opt_case {
	enum opt o;
	enum zn_dtype gt;
	int ct; /* -1: no copy */
	double lr, wd;
	bool adamw, bc, zero_state;
	float scale;
	/* Lamb: max_coeff (0: FusedLamb's 10), eps inside the root;
	 * SGD: momentum, dampening, Nesterov. */
	struct {
		double max_coeff;
		bool eps_inside;
		double momentum, dampening;
		bool nesterov;
	} x;
};

static const struct opt_case cases[] = {
	/* o        grad          copy          lr     wd     adamw  bc     zero   scale */
	{ ADAM,    ZN_DTYPE_F32, -1,           1e-2f, 0.0f,  true,  true,  true,  1.0f, { .max_coeff = 0 } },
	{ ADAM,    ZN_DTYPE_F32, ZN_DTYPE_BF16, 1e-2f, 0.1f,  true,  true,  false, 1.0f, { .max_coeff = 0 } },
	{ ADAM,    ZN_DTYPE_F16, ZN_DTYPE_F16, 1e-3f, 0.1f,  false, true,  true,  0.5f, { .max_coeff = 0 } },
	{ ADAM,    ZN_DTYPE_BF16, -1,           1e-2f, 0.01f, true,  false, false, 1.0f, { .max_coeff = 0 } },
	{ ADAM,    ZN_DTYPE_BF16, ZN_DTYPE_F16, 1e-2f, 0.0f,  false, false, true,  0.7f / 1024, { .max_coeff = 0 } },
	{ ADAGRAD, ZN_DTYPE_F32, -1,           1e-2f, 0.0f,  false, false, true,  1.0f, { .max_coeff = 0 } },
	{ ADAGRAD, ZN_DTYPE_F16, ZN_DTYPE_BF16, 1e-2f, 0.1f,  false, false, false, 2.0f, { .max_coeff = 0 } },
	{ ADAGRAD, ZN_DTYPE_BF16, ZN_DTYPE_F16, 1e-1f, 0.01f, false, false, true,  1.0f, { .max_coeff = 0 } },
	{ LION,    ZN_DTYPE_F32, -1,           1e-3f, 0.0f,  true,  false, true,  1.0f, { .max_coeff = 0 } },
	{ LION,    ZN_DTYPE_F16, ZN_DTYPE_BF16, 1e-3f, 0.5f,  true,  false, false, 1.0f, { .max_coeff = 0 } },
	{ LION,    ZN_DTYPE_BF16, ZN_DTYPE_F16, 1e-4f, 0.1f,  true,  false, true,  3.0f, { .max_coeff = 0 } },
	/* o        grad          copy          lr     wd     adamw  bc     zero   scale  more */
	{ LAMB,    ZN_DTYPE_F32, -1,           1e-2f, 0.0f,  false, true,  true,  1.0f, { .max_coeff = 0 } },
	{ LAMB,    ZN_DTYPE_F32, ZN_DTYPE_BF16, 1e-3f, 0.1f,  false, true,  false, 0.5f, { .eps_inside = true } },
	{ LAMB,    ZN_DTYPE_F16, ZN_DTYPE_F16, 1e-2f, 0.01f, false, false, true,  1.0f, { .max_coeff = 0.05 } },
	{ LAMB,    ZN_DTYPE_BF16, ZN_DTYPE_F16, 1e-2f, 0.1f,  false, true,  false, 2.0f, { .max_coeff = 1e6 } },
	/* o        grad          copy          lr     wd     adamw  bc     zero   scale  more */
	{ SGD,     ZN_DTYPE_F32, -1,           1e-1f, 0.0f,  false, false, false, 1.0f, { .max_coeff = 0 } },
	{ SGD,     ZN_DTYPE_F32, ZN_DTYPE_BF16, 1e-1f, 0.01f, false, false, false, 1.0f, { .momentum = 0.9, .dampening = 0.0, .nesterov = false } },
	{ SGD,     ZN_DTYPE_F16, ZN_DTYPE_F16, 1e-2f, 0.1f,  false, false, false, 0.5f, { .momentum = 0.9, .dampening = 0.0, .nesterov = true } },
	{ SGD,     ZN_DTYPE_BF16, ZN_DTYPE_F16, 1e-1f, 0.0f,  false, false, false, 1.0f, { .momentum = 0.5, .dampening = 0.3, .nesterov = false } },
};

/* Not multiples of 16 or 8 (and some that are), so every tail runs. */
static const size_t lengths[] = { 1, 3, 7, 8, 15, 16, 17, 31, 33, 64, 100, 255, 1000, 4099 };

static struct zn_adam_hparams case_hparams(const struct opt_case *c)
{
	struct zn_adam_hparams hp;
	if (c->o == ADAGRAD)
		zn_adagrad_defaults(&hp);
	else if (c->o == LION)
		zn_lion_defaults(&hp);
	else if (c->o == LAMB)
		zn_lamb_defaults(&hp);
	else if (c->o == SGD)
		zn_sgd_defaults(&hp);
	else
		zn_adam_defaults(&hp);
	if (c->x.max_coeff > 0)
		hp.max_coeff = c->x.max_coeff;
	hp.eps_inside_sqrt = c->x.eps_inside;
	hp.momentum = c->x.momentum;
	hp.dampening = c->x.dampening;
	hp.nesterov = c->x.nesterov;
	hp.lr = c->lr;
	hp.weight_decay = c->wd;
	hp.adamw_mode = c->adamw;
	hp.bias_correction = c->bc;
	if (c->o == LION)
		hp.beta2 = 0.99;
	return hp;
}

static void run_steps(const struct opt_case *c, struct arrays *a, enum zn_adam_simd simd,
		      struct zn_threadpool *pool, size_t tile)
{
	struct zn_adam_hparams hp = case_hparams(c);
	struct zn_adam_exec ex = { .pool = pool, .tile = tile, .simd = simd };
	for (int s = 0; s < STEPS; s++) {
		struct zn_adam_tensors t = tensors(a, s, c->gt, c->ct, c->o);
		int rc = run_opt(c->o, &hp, (uint64_t)s + 1, c->scale, &t, &ex);
		if (rc)
			fail_msg("%s step %d: %d %s", opt_names[c->o], s + 1, rc, zn_last_error());
	}
}

static void compare_bits(const char *what, const struct opt_case *c, size_t ci, size_t n,
			 const struct arrays *x, const struct arrays *ref)
{
	for (size_t i = 0; i < n; i++) {
		const char *bad = !same_bits(x->p[i], ref->p[i])   ? "param"
				  : !same_bits(x->m[i], ref->m[i]) ? "exp_avg"
				  : !same_bits(x->v[i], ref->v[i]) ? "exp_avg_sq"
				  : c->ct >= 0 && x->copy[i] != ref->copy[i] ? "param_copy"
									       : NULL;
		if (bad)
			fail_msg("%s, case %zu (%s, grad %s), n %zu: %s[%zu] differs from the "
				 "scalar path: %a vs %a", what, ci, opt_names[c->o],
				 zn_dtype_name(c->gt), n, bad, i, (double)x->p[i],
				 (double)ref->p[i]);
	}
}

/* Every usable SIMD path gives exactly the scalar path's bits, after 10
 * steps, for every case and length, also split into tiles over 2 threads. */
static void test_paths_bitwise(void **state)
{
	(void)state;
	enum zn_adam_simd paths[ZN_ADAM_SIMD_COUNT];
	unsigned np = usable_paths(paths);
	struct zn_threadpool *pool = zn_threadpool_create(2, -1);
	assert_non_null(pool);

	for (size_t ci = 0; ci < ZN_ARRAY_SIZE(cases); ci++) {
		const struct opt_case *c = &cases[ci];
		for (size_t li = 0; li < ZN_ARRAY_SIZE(lengths); li++) {
			size_t n = lengths[li];
			struct arrays init, ref, x;
			arrays_alloc(&init, n, c->gt, 2);
			arrays_alloc(&ref, n, c->gt, 2);
			arrays_alloc(&x, n, c->gt, li % 2 ? 0 : 2);
			arrays_fill(&init, c->gt, c->zero_state);
			arrays_copy(&ref, &init, c->gt);
			run_steps(c, &ref, ZN_ADAM_SIMD_SCALAR, NULL, 0);
			/* Lamb's norms are summed tile by tile: tiles of 64 are
			 * compared with the scalar path in tiles of 64. */
			struct arrays ref64;
			arrays_alloc(&ref64, n, c->gt, 2);
			arrays_copy(&ref64, &init, c->gt);
			run_steps(c, &ref64, ZN_ADAM_SIMD_SCALAR, NULL, c->o == LAMB ? 64 : 0);
			for (unsigned k = 0; k < np; k++) {
				arrays_copy(&x, &init, c->gt);
				run_steps(c, &x, paths[k], NULL, 0);
				compare_bits(zn_adam_simd_name(paths[k]), c, ci, n, &x, &ref);
				/* Tiles of 64 over two threads: same bits. */
				arrays_copy(&x, &init, c->gt);
				run_steps(c, &x, paths[k], pool, 64);
				compare_bits("tiled", c, ci, n, &x, &ref64);
			}
			arrays_free(&ref64);
			arrays_free(&init);
			arrays_free(&ref);
			arrays_free(&x);
		}
	}
	zn_threadpool_destroy(pool);
}

/* ---- the double-precision reference ------------------------------------ */

/* The published algorithms in double, from the same (exactly converted)
 * inputs.  Lion: min_ratio[i] tracks how close the sign's argument came to
 * zero relative to its terms, where float rounding may flip the sign. */
static void ref_steps(const struct opt_case *c, const struct arrays *init, double *p, double *m,
		      double *v, double *min_ratio, double *travel)
{
	struct zn_adam_hparams hp = case_hparams(c);
	size_t n = init->n;
	double *g = malloc(n * sizeof(double));
	float *gf = malloc(n * sizeof(float));
	double b1 = hp.beta1, b2 = hp.beta2, lr = hp.lr, wd = hp.weight_decay, eps = hp.eps;

	for (size_t i = 0; i < n; i++) {
		p[i] = init->p[i];
		m[i] = init->m[i];
		v[i] = init->v[i];
		min_ratio[i] = INFINITY;
		travel[i] = 0;
	}
	for (int s = 0; s < STEPS; s++) {
		double t = s + 1;
		zn_optim_scalar.to_f32(init->g[s], c->gt, gf, n);
		for (size_t i = 0; i < n; i++)
			g[i] = (double)gf[i] * (double)c->scale;
		if (c->o == LAMB) {
			/* You et al. 2020, Algorithm 2, in FusedLamb's form: the
			 * moments, the update u and the whole array's norms, then
			 * the step scaled by the clamped trust ratio. */
			double w2 = 0, u2 = 0, *u = malloc(n * sizeof(double));
			for (size_t i = 0; i < n; i++) {
				m[i] = b1 * m[i] + (1 - b1) * g[i];
				v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
				double den = c->x.eps_inside ? sqrt(v[i] + eps) : sqrt(v[i]) + eps;
				u[i] = m[i] / den + wd * p[i];
				w2 += p[i] * p[i];
				u2 += u[i] * u[i];
			}
			double r = 1;
			if (w2 > 0 && u2 > 0)
				r = fmin(fmax(sqrt(w2) / sqrt(u2), hp.min_coeff), hp.max_coeff);
			double size = c->bc ? lr * sqrt(1 - pow(b2, t)) / (1 - pow(b1, t)) : lr;
			for (size_t i = 0; i < n; i++) {
				double p0 = p[i];
				p[i] -= size * r * u[i];
				travel[i] += fabs(p[i] - p0);
			}
			free(u);
			continue;
		}
		for (size_t i = 0; i < n; i++) {
			double gi = g[i], p0 = p[i];
			switch (c->o) {
			case ADAM: {
				if (wd > 0 && !c->adamw)
					gi += wd * p[i];
				m[i] = b1 * m[i] + (1 - b1) * gi;
				v[i] = b2 * v[i] + (1 - b2) * gi * gi;
				double bc1 = c->bc ? 1 - pow(b1, t) : 1, bc2 = c->bc ? 1 - pow(b2, t) : 1;
				double den = sqrt(v[i] / bc2) + eps;
				if (wd > 0 && c->adamw)
					p[i] *= 1 - lr * wd;
				p[i] -= lr / bc1 * m[i] / den;
				break;
			}
			case ADAGRAD:
				if (wd > 0)
					gi += wd * p[i];
				v[i] += gi * gi;
				p[i] -= lr * gi / (sqrt(v[i]) + eps);
				break;
			case LION: {
				double u = b1 * m[i] + (1 - b1) * gi;
				double mag = fabs(b1 * m[i]) + fabs((1 - b1) * gi);
				if (mag > 0 && fabs(u) / mag < min_ratio[i])
					min_ratio[i] = fabs(u) / mag;
				p[i] *= 1 - lr * wd;
				p[i] -= lr * (double)((u > 0) - (u < 0));
				m[i] = b2 * m[i] + (1 - b2) * gi;
				break;
			}
			case SGD: /* torch.optim.SGD's documented algorithm */
				gi += wd * p[i];
				if (hp.momentum != 0) {
					m[i] = s == 0 ? gi
						      : hp.momentum * m[i] + (1 - hp.dampening) * gi;
					gi = hp.nesterov ? gi + hp.momentum * m[i] : m[i];
				}
				p[i] -= lr * gi;
				break;
			case LAMB:
				break;
			}
			travel[i] += fabs(p[i] - p0);
		}
	}
	free(g);
	free(gf);
}

/* Tolerances, after 10 steps in fp32 against the same steps in double:
 *   param:       |Δ| <= 4e-6·(|p| + travel) + 1e-6·lr, travel being the sum
 *                of the 10 updates' sizes: a step rounds p up to three
 *                times (the decay constant, p·decay, p + update), each by at
 *                most 2^-24 relative, so 10 steps stay within 1.8e-6 of the
 *                largest |p| on the way; 4e-6 leaves a factor 2
 *   exp_avg:     |Δ| <= 1e-5·|m| + 1e-8       (m can cancel to ~0)
 *   exp_avg_sq:  |Δ| <= 1e-5·|v| + 1e-12      (no cancellation: v >= 0)
 * A relative 1e-5 is ~80 fp32 ulps: far above the few ulps 10 steps
 * accumulate, far below any real mistake (a wrong bias correction or a
 * dropped term changes results by 1e-3 relative or more). */
static void test_double_reference(void **state)
{
	(void)state;
	enum zn_adam_simd paths[ZN_ADAM_SIMD_COUNT];
	unsigned np = usable_paths(paths);
	double worst[3] = { 0 };

	for (size_t ci = 0; ci < ZN_ARRAY_SIZE(cases); ci++) {
		const struct opt_case *c = &cases[ci];
		size_t n = 4099;
		struct arrays init, x;
		arrays_alloc(&init, n, c->gt, 2);
		arrays_alloc(&x, n, c->gt, ci % 2 ? 0 : 2);
		arrays_fill(&init, c->gt, c->zero_state);
		double *p = malloc(n * 8), *m = malloc(n * 8), *v = malloc(n * 8), *mr = malloc(n * 8);
		double *tr = malloc(n * 8);
		ref_steps(c, &init, p, m, v, mr, tr);
		for (unsigned k = 0; k < np; k++) {
			arrays_copy(&x, &init, c->gt);
			run_steps(c, &x, paths[k], NULL, 0);
			size_t flips = 0;
			for (size_t i = 0; i < n; i++) {
				double dp = fabs(x.p[i] - p[i]);
				double tp = 4e-6 * (fabs(p[i]) + tr[i]) + 1e-6 * c->lr;
				if (c->o == LION && mr[i] < 1e-5) {
					flips++; /* the sign's argument was ~0: either sign is right */
					continue;
				}
				if (!(dp <= tp))
					fail_msg("%s, case %zu (%s): param[%zu] = %.9g, reference %.9g",
						 zn_adam_simd_name(paths[k]), ci, opt_names[c->o], i,
						 (double)x.p[i], p[i]);
				worst[0] = fmax(worst[0], dp / tp);
				if (c->o != ADAGRAD && (c->o != SGD || c->x.momentum != 0)) {
					double dm = fabs(x.m[i] - m[i]), tm = 1e-5 * fabs(m[i]) + 1e-8;
					if (!(dm <= tm))
						fail_msg("%s, case %zu: exp_avg[%zu] = %.9g, reference %.9g",
							 zn_adam_simd_name(paths[k]), ci, i,
							 (double)x.m[i], m[i]);
					worst[1] = fmax(worst[1], dm / tm);
				}
				if (c->o != LION && c->o != SGD) {
					double dv = fabs(x.v[i] - v[i]), tv = 1e-5 * fabs(v[i]) + 1e-12;
					if (!(dv <= tv))
						fail_msg("%s, case %zu: exp_avg_sq[%zu] = %.9g, reference "
							 "%.9g", zn_adam_simd_name(paths[k]), ci, i,
							 (double)x.v[i], v[i]);
					worst[2] = fmax(worst[2], dv / tv);
				}
				/* The copy is the updated param, rounded to nearest even. */
				if (c->ct >= 0) {
					uint16_t want = c->ct == ZN_DTYPE_BF16 ? zn_f32_to_bf16(x.p[i])
									       : zn_f32_to_f16(x.p[i]);
					if (x.copy[i] != want)
						fail_msg("case %zu: param_copy[%zu] = %#x, want %#x", ci, i,
							 x.copy[i], want);
				}
			}
			assert_true(flips < n / 100);
		}
		free(p);
		free(m);
		free(v);
		free(mr);
		free(tr);
		arrays_free(&init);
		arrays_free(&x);
	}
	print_message("# worst error / tolerance: param %.3f, exp_avg %.3f, exp_avg_sq %.3f\n",
		      worst[0], worst[1], worst[2]);
}

/* ---- NaN and Inf -------------------------------------------------------- */

/* As torch: a NaN or Inf gradient makes that element's param NaN (Adam:
 * Inf/Inf in m/den; Adagrad likewise) and leaves the others alone; Lion's
 * sign(NaN) is 0 as torch.sign's, so NaN reaches m but not the param. */
static void test_nan_inf(void **state)
{
	(void)state;
	enum zn_adam_simd paths[ZN_ADAM_SIMD_COUNT];
	unsigned np = usable_paths(paths);
	const size_t n = 37;
	for (unsigned k = 0; k < np; k++) {
		for (int o = ADAM; o <= LION; o++) {
			float p[37], m[37] = { 0 }, v[37] = { 0 }, g[37];
			for (size_t i = 0; i < n; i++) {
				p[i] = 0.5f;
				g[i] = 0.25f;
			}
			g[3] = NAN;
			g[20] = INFINITY;
			g[36] = -INFINITY;
			struct zn_adam_hparams hp;
			zn_adam_defaults(&hp);
			struct zn_adam_tensors t = { .n = n, .param = p, .grad = g,
						     .exp_avg = m, .exp_avg_sq = v };
			struct zn_adam_exec ex = { .simd = paths[k] };
			assert_int_equal(run_opt((enum opt)o, &hp, 1, 1.0f, &t, &ex), 0);
			for (size_t i = 0; i < n; i++) {
				bool bad = i == 3 || i == 20 || i == 36;
				if (o == LION) {
					assert_false(isnan(p[i]));
					assert_true(bad ? isnan(m[i]) || isinf(m[i]) : isfinite(m[i]));
				} else {
					assert_int_equal(isnan(p[i]) != 0, bad);
				}
			}
		}
	}
}

/* ---- tiles and their callback ------------------------------------------ */

struct tile_log {
	pthread_mutex_t lock;
	size_t count;
	size_t offs[1024], lens[1024];
	const float *want_p;  /* the final params, computed beforehand */
	const float *got_p;
	bool not_final;
};

static void on_tile(void *user, size_t offset, size_t count)
{
	struct tile_log *l = user;
	/* The tile's outputs are final now, while other tiles may still run. */
	if (memcmp(l->got_p + offset, l->want_p + offset, count * sizeof(float)) != 0)
		l->not_final = true;
	pthread_mutex_lock(&l->lock);
	if (l->count < 1024) {
		l->offs[l->count] = offset;
		l->lens[l->count] = count;
	}
	l->count++;
	pthread_mutex_unlock(&l->lock);
}

static int cmp_size(const void *a, const void *b)
{
	size_t x = *(const size_t *)a, y = *(const size_t *)b;
	return x < y ? -1 : x > y;
}

static void test_tiles_callback(void **state)
{
	(void)state;
	const size_t n = 100003;
	struct arrays want, got;
	arrays_alloc(&want, n, ZN_DTYPE_F32, 2);
	arrays_alloc(&got, n, ZN_DTYPE_F32, 0);
	arrays_fill(&want, ZN_DTYPE_F32, false);
	arrays_copy(&got, &want, ZN_DTYPE_F32);
	struct zn_adam_hparams hp;
	zn_adam_defaults(&hp);
	struct zn_adam_tensors t = tensors(&want, 0, ZN_DTYPE_F32, ZN_DTYPE_BF16, ADAM);
	assert_int_equal(zn_adam_step(&hp, 1, 1.0f, &t, NULL), 0);

	struct zn_threadpool *pool = zn_threadpool_create(2, -1);
	assert_non_null(pool);
	static struct tile_log log = { .lock = PTHREAD_MUTEX_INITIALIZER };
	log.want_p = want.p;
	log.got_p = got.p;
	/* 1000 rounds up to 1024, a multiple of ZN_ADAM_TILE_QUANTUM. */
	struct zn_adam_exec ex = { .pool = pool, .tile = 1000, .on_tile = on_tile, .user = &log };
	t = tensors(&got, 0, ZN_DTYPE_F32, ZN_DTYPE_BF16, ADAM);
	assert_int_equal(zn_adam_step(&hp, 1, 1.0f, &t, &ex), 0);
	assert_false(log.not_final);
	assert_int_equal(log.count, (n + 1023) / 1024);
	/* The tiles partition [0, n): sorted offsets 0, 1024, ... */
	size_t offs[1024];
	memcpy(offs, log.offs, log.count * sizeof(size_t));
	qsort(offs, log.count, sizeof(size_t), cmp_size);
	size_t covered = 0;
	for (size_t i = 0; i < log.count; i++) {
		assert_int_equal(offs[i], i * 1024);
		for (size_t k = 0; k < log.count; k++)
			if (log.offs[k] == offs[i])
				covered += log.lens[k];
	}
	assert_int_equal(covered, n);
	assert_memory_equal(got.p, want.p, n * 4);
	assert_memory_equal(got.copy, want.copy, n * 2);
	assert_int_equal(zn_adam_tile_size(n, &ex), 1024);
	zn_threadpool_destroy(pool);
	arrays_free(&want);
	arrays_free(&got);
}

/* ---- gradient check ----------------------------------------------------- */

static void test_grad_check(void **state)
{
	(void)state;
	enum zn_adam_simd paths[ZN_ADAM_SIMD_COUNT];
	unsigned np = usable_paths(paths);
	struct zn_threadpool *pool = zn_threadpool_create(2, -1);
	static const size_t ns[] = { 1, 5, 15, 16, 17, 33, 1000, 70001 };

	for (int gt = ZN_DTYPE_F32; gt <= ZN_DTYPE_BF16; gt++) {
		for (size_t li = 0; li < ZN_ARRAY_SIZE(ns); li++) {
			size_t n = ns[li], es = zn_dtype_size((enum zn_dtype)gt);
			char *raw;
			char *g = misaligned(&raw, n * es, es == 4 ? 36 : 2);
			float *f = malloc(n * 4);
			for (size_t i = 0; i < n; i++)
				f[i] = uniform(-3, 3);
			if (gt == ZN_DTYPE_F32)
				memcpy(g, f, n * 4);
			else
				zn_optim_scalar.from_f32(f, g, (enum zn_dtype)gt, n);
			zn_optim_scalar.to_f32(g, (enum zn_dtype)gt, f, n);
			long double want = 0;
			for (size_t i = 0; i < n; i++)
				want += (long double)f[i] * f[i];
			for (unsigned k = 0; k < np; k++) {
				struct zn_adam_grad_stats st;
				struct zn_adam_exec ex = { .simd = paths[k], .tile = 1024 };
				assert_int_equal(zn_adam_grad_check(g, (enum zn_dtype)gt, n, &ex,
								    &st), 0);
				assert_true(st.finite);
				if (fabsl(st.sumsq - want) > 1e-12L * want)
					fail_msg("%s, %s, n %zu: sumsq %.17g, want %.17Lg",
						 zn_adam_simd_name(paths[k]),
						 zn_dtype_name((enum zn_dtype)gt), n, st.sumsq,
						 want);
				/* The same tiles over two threads: the same bits. */
				struct zn_adam_grad_stats st2;
				ex.pool = pool;
				assert_int_equal(zn_adam_grad_check(g, (enum zn_dtype)gt, n, &ex,
								    &st2), 0);
				assert_true(st2.sumsq == st.sumsq);
				/* Inf or NaN at the start, the middle, the tail. */
				size_t at[3] = { 0, n / 2, n - 1 };
				for (int w = 0; w < 3; w++) {
					for (int kind = 0; kind < 2; kind++) {
						float bad = kind ? NAN : -INFINITY;
						char save[4];
						memcpy(save, g + at[w] * es, es);
						if (gt == ZN_DTYPE_F32)
							memcpy(g + at[w] * 4, &bad, 4);
						else
							zn_optim_scalar.from_f32(&bad, g + at[w] * 2,
										 (enum zn_dtype)gt, 1);
						ex.pool = w == 1 ? pool : NULL;
						assert_int_equal(zn_adam_grad_check(
							g, (enum zn_dtype)gt, n, &ex, &st), 0);
						if (st.finite)
							fail_msg("%s: %s at %zu of %zu not found",
								 zn_adam_simd_name(paths[k]),
								 kind ? "NaN" : "-Inf", at[w], n);
						memcpy(g + at[w] * es, save, es);
					}
				}
			}
			free(raw);
			free(f);
		}
	}
	struct zn_adam_grad_stats st;
	assert_int_equal(zn_adam_grad_check(NULL, ZN_DTYPE_F32, 0, NULL, &st), 0);
	assert_true(st.finite && st.sumsq == 0);
	assert_int_equal(zn_adam_grad_check(NULL, ZN_DTYPE_F32, 5, NULL, &st), -EINVAL);
	assert_int_equal(zn_adam_grad_check(&st, (enum zn_dtype)7, 1, NULL, &st), -EINVAL);
	zn_threadpool_destroy(pool);
}

/* ---- conversions -------------------------------------------------------- */

static void test_conversions(void **state)
{
	(void)state;
	/* Known roundings. */
	static const struct {
		float f;
		uint16_t h, b;
	} known[] = {
		{ 1.0f, 0x3c00, 0x3f80 },
		{ -2.0f, 0xc000, 0xc000 },
		{ 65504.0f, 0x7bff, 0x4780 },
		{ 65519.99f, 0x7bff, 0x4780 },
		{ 65520.0f, 0x7c00, 0x4780 },
		{ 0x1p-24f, 0x0001, 0x3380 },
		{ 0x1p-25f, 0x0000, 0x3300 },  /* halfway to 2^-24: ties to even, 0 */
		{ 0x1.000002p-25f, 0x0001, 0x3300 },
		{ 0x1.8p-24f, 0x0002, 0x33c0 },  /* 1.5 units: ties to even, 2 */
		{ 0x1.ff8p-15f, 0x03ff, 0x3880 }, /* largest fp16 subnormal */
		{ 1.00390625f, 0x3c04, 0x3f80 }, /* 1 + 2^-8: bf16 tie to even, down */
		{ 1.01171875f, 0x3c0c, 0x3f82 }, /* 1 + 3·2^-8: bf16 tie to even, up */
		{ INFINITY, 0x7c00, 0x7f80 },
		{ -INFINITY, 0xfc00, 0xff80 },
		{ 3.4028235e38f, 0x7c00, 0x7f80 }, /* FLT_MAX rounds up to bf16 Inf */
		{ 1e-45f, 0x0000, 0x0000 },
	};
	for (size_t i = 0; i < ZN_ARRAY_SIZE(known); i++) {
		if (zn_f32_to_f16(known[i].f) != known[i].h)
			fail_msg("fp16(%a) = %#x, want %#x", (double)known[i].f,
				 zn_f32_to_f16(known[i].f), known[i].h);
		if (zn_f32_to_bf16(known[i].f) != known[i].b)
			fail_msg("bf16(%a) = %#x, want %#x", (double)known[i].f,
				 zn_f32_to_bf16(known[i].f), known[i].b);
	}
	assert_int_equal(zn_f32_to_bf16(NAN), 0x7fc0);
	assert_int_equal(zn_f32_to_bf16(-NAN), 0x7fc0);
	assert_true(isnan(zn_f16_to_f32(zn_f32_to_f16(NAN))));

	/* Every fp16 and bf16 value to fp32, and 2^20 random fp32 bit
	 * patterns (plus values near the fp16 limits) back: every path
	 * gives the scalar bits. */
	enum zn_adam_simd paths[ZN_ADAM_SIMD_COUNT];
	unsigned np = usable_paths(paths);
	const size_t n16 = 65536, n32 = (1u << 20) + 4096;
	uint16_t *h = malloc(n16 * 2), *o1 = malloc(n32 * 2), *o2 = malloc(n32 * 2);
	float *f1 = malloc(n32 * 4), *f2 = malloc(n32 * 4), *src = malloc(n32 * 4);
	for (size_t i = 0; i < n16; i++)
		h[i] = (uint16_t)i;
	for (size_t i = 0; i < n32; i++) {
		uint32_t u = (uint32_t)next_u64();
		if (i >= (1u << 20)) /* around the fp16 edges: 2^-25, 2^-14, 65504 */
			u = (i & 3) == 0 ? 0x33000000 + (uint32_t)(i & 0x3ff) - 512
			    : (i & 3) == 1 ? 0x38800000 + (uint32_t)(i & 0x3ff) - 512
			    : (i & 3) == 2 ? 0x477ff000 + (uint32_t)(i & 0x3ff) - 512
					   : 0x7f800000 + (uint32_t)(i & 0x3ff);
		src[i] = zn_f32_from_bits(u);
	}
	for (int dt = ZN_DTYPE_F16; dt <= ZN_DTYPE_BF16; dt++) {
		zn_optim_scalar.to_f32(h, (enum zn_dtype)dt, f1, n16);
		zn_optim_scalar.from_f32(src, o1, (enum zn_dtype)dt, n32);
		for (unsigned k = 1; k < np; k++) {
			const struct zn_optim_isa *isa = zn_optim_isa_get(paths[k]);
			isa->to_f32(h, (enum zn_dtype)dt, f2, n16);
			for (size_t i = 0; i < n16; i++)
				if (zn_f32_bits(f1[i]) != zn_f32_bits(f2[i]))
					fail_msg("%s %s -> fp32 of %#zx: %#x, scalar %#x", isa->name,
						 zn_dtype_name((enum zn_dtype)dt), i,
						 zn_f32_bits(f2[i]), zn_f32_bits(f1[i]));
			isa->from_f32(src, o2, (enum zn_dtype)dt, n32);
			for (size_t i = 0; i < n32; i++)
				if (o1[i] != o2[i])
					fail_msg("%s fp32 %#x -> %s: %#x, scalar %#x", isa->name,
						 zn_f32_bits(src[i]),
						 zn_dtype_name((enum zn_dtype)dt), o2[i],
						 o1[i]);
		}
	}
	/* fp16 -> fp32 -> fp16 is the identity except for NaN payloads. */
	for (size_t i = 0; i < n16; i++) {
		float f = zn_f16_to_f32((uint16_t)i);
		if (!isnan(f) && zn_f32_to_f16(f) != i)
			fail_msg("fp16 %#zx does not round-trip", i);
	}
	free(h);
	free(o1);
	free(o2);
	free(f1);
	free(f2);
	free(src);
}

/* ---- bad input ---------------------------------------------------------- */

static void expect_einval(int rc, const char *needle)
{
	if (rc != -EINVAL)
		fail_msg("rc %d, want -EINVAL (%s)", rc, needle);
	if (!strstr(zn_last_error(), needle))
		fail_msg("message '%s' does not mention '%s'", zn_last_error(), needle);
}

static void test_bad_input(void **state)
{
	(void)state;
	float p[8] = { 1, 2, 3, 4, 5, 6, 7, 8 }, g[8] = { 1 }, m[8] = { 0 }, v[8] = { 0 };
	float p0[8];
	memcpy(p0, p, sizeof(p));
	uint16_t c[8];
	struct zn_adam_hparams hp, bad;
	zn_adam_defaults(&hp);
	const struct zn_adam_tensors good = { .n = 8, .param = p, .grad = g, .exp_avg = m,
					      .exp_avg_sq = v };
	struct zn_adam_tensors t;

#define BAD_HPARAM(field, value, needle)                                          \
	do {                                                                      \
		bad = hp;                                                         \
		bad.field = value;                                                \
		expect_einval(zn_adam_step(&bad, 1, 1.0f, &good, NULL), needle);  \
	} while (0)
	BAD_HPARAM(beta1, 1.0, "beta1 = 1 is outside [0, 1)");
	BAD_HPARAM(beta1, -0.1, "beta1");
	BAD_HPARAM(beta1, NAN, "beta1");
	BAD_HPARAM(beta2, 1.0, "beta2");
	BAD_HPARAM(beta2, 1.5, "beta2");
	BAD_HPARAM(eps, 0.0, "eps = 0 must be > 0");
	BAD_HPARAM(eps, -1e-8, "eps");
	BAD_HPARAM(eps, INFINITY, "eps");
	BAD_HPARAM(eps, 1e-60, "eps"); /* 0 in fp32 */
	BAD_HPARAM(lr, -1e-3, "lr");
	BAD_HPARAM(lr, NAN, "lr");
	BAD_HPARAM(lr, INFINITY, "lr");
	BAD_HPARAM(weight_decay, -0.01, "weight_decay");
#undef BAD_HPARAM
	expect_einval(zn_adam_step(NULL, 1, 1.0f, &good, NULL), "hparams is NULL");
	expect_einval(zn_adam_step(&hp, 1, 1.0f, NULL, NULL), "tensors is NULL");
	expect_einval(zn_adam_step(&hp, 0, 1.0f, &good, NULL), "step 0");
	expect_einval(zn_adam_step(&hp, 1, INFINITY, &good, NULL), "grad_scale");
	expect_einval(zn_adam_step(&hp, 1, NAN, &good, NULL), "grad_scale");

	static const char *const names[] = { "param", "grad", "exp_avg", "exp_avg_sq" };
	for (int k = 0; k < 4; k++) {
		t = good;
		if (k == 0)
			t.param = NULL;
		if (k == 1)
			t.grad = NULL;
		if (k == 2)
			t.exp_avg = NULL;
		if (k == 3)
			t.exp_avg_sq = NULL;
		char want[64];
		snprintf(want, sizeof(want), "%s is NULL", names[k]);
		expect_einval(zn_adam_step(&hp, 1, 1.0f, &t, NULL), want);
	}
	/* Adagrad needs no exp_avg, Lion no exp_avg_sq... */
	struct zn_adam_hparams ag, li;
	zn_adagrad_defaults(&ag);
	zn_lion_defaults(&li);
	t = good;
	t.exp_avg = NULL;
	assert_int_equal(zn_adagrad_step(&ag, 1, 1.0f, &t, NULL), 0);
	expect_einval(zn_lion_step(&li, 1, 1.0f, &t, NULL), "exp_avg is NULL");
	t = good;
	t.exp_avg_sq = NULL;
	assert_int_equal(zn_lion_step(&li, 1, 1.0f, &t, NULL), 0);
	expect_einval(zn_adagrad_step(&ag, 1, 1.0f, &t, NULL), "exp_avg_sq is NULL");
	/* ...and Adagrad has no betas (they are not checked), Lion no eps. */
	ag.beta1 = 7;
	t = good;
	assert_int_equal(zn_adagrad_step(&ag, 1, 1.0f, &t, NULL), 0);
	li.eps = 0;
	assert_int_equal(zn_lion_step(&li, 1, 1.0f, &t, NULL), 0);
	li.beta2 = 1;
	expect_einval(zn_lion_step(&li, 1, 1.0f, &t, NULL), "beta2");
	ag.eps = 0;
	expect_einval(zn_adagrad_step(&ag, 1, 1.0f, &t, NULL), "eps");

	/* Types. */
	memcpy(p, p0, sizeof(p));
	t = good;
	t.grad_dtype = (enum zn_dtype)9;
	expect_einval(zn_adam_step(&hp, 1, 1.0f, &t, NULL), "grad_dtype");
	t = good;
	t.param_copy = c;
	t.copy_dtype = ZN_DTYPE_F32;
	expect_einval(zn_adam_step(&hp, 1, 1.0f, &t, NULL), "copy_dtype");
	/* Overlap. */
	t = good;
	t.exp_avg = p + 4;
	expect_einval(zn_adam_step(&hp, 1, 1.0f, &t, NULL), "param and exp_avg overlap");
	t = good;
	t.param_copy = v + 2;
	t.copy_dtype = ZN_DTYPE_BF16;
	expect_einval(zn_adam_step(&hp, 1, 1.0f, &t, NULL), "exp_avg_sq and param_copy overlap");
	/* Nothing was written by any failed call. */
	assert_memory_equal(p, p0, sizeof(p));

	/* n == 0: a no-op, even with NULL arrays. */
	struct zn_adam_tensors empty = { 0 };
	assert_int_equal(zn_adam_step(&hp, 1, 1.0f, &empty, NULL), 0);
	zn_adagrad_defaults(&ag);
	assert_int_equal(zn_adagrad_step(&ag, 1, 1.0f, &empty, NULL), 0);
	zn_lion_defaults(&li);
	assert_int_equal(zn_lion_step(&li, 1, 1.0f, &empty, NULL), 0);
	/* ...but bad hyperparameters are still bad. */
	bad = hp;
	bad.beta1 = 2;
	expect_einval(zn_adam_step(&bad, 1, 1.0f, &empty, NULL), "beta1");
	li.beta2 = 1;
	expect_einval(zn_lion_step(&li, 1, 1.0f, &empty, NULL), "beta2");
}

/* ---- SIMD selection ----------------------------------------------------- */

static void test_simd_select(void **state)
{
	(void)state;
	enum zn_adam_simd got, s;
	unsetenv("ZINC_SIMD");
	assert_int_equal(zn_adam_simd_select(ZN_ADAM_SIMD_AUTO, &got), 0);
	/* auto picks the best the CPU has. */
	enum zn_adam_simd want = ZN_ADAM_SIMD_SCALAR;
	if (ZN_ADAM_HAVE_AVX2 && zn_cpu_has(ZN_CPU_AVX2) && zn_cpu_has(ZN_CPU_FMA) &&
	    zn_cpu_has(ZN_CPU_F16C))
		want = ZN_ADAM_SIMD_AVX2;
	if (ZN_ADAM_HAVE_AVX512 && zn_cpu_has(ZN_CPU_AVX512F) && zn_cpu_has(ZN_CPU_AVX512BW) &&
	    zn_cpu_has(ZN_CPU_AVX512VL))
		want = ZN_ADAM_SIMD_AVX512;
	assert_int_equal(got, want);
	/* Each path: available exactly when the CPU has its features. */
	bool has[ZN_ADAM_SIMD_COUNT] = {
		[ZN_ADAM_SIMD_SCALAR] = true,
		[ZN_ADAM_SIMD_AVX2] = ZN_ADAM_HAVE_AVX2 && zn_cpu_has(ZN_CPU_AVX2) &&
				      zn_cpu_has(ZN_CPU_FMA) && zn_cpu_has(ZN_CPU_F16C),
		[ZN_ADAM_SIMD_AVX512] = ZN_ADAM_HAVE_AVX512 && zn_cpu_has(ZN_CPU_AVX512F) &&
					zn_cpu_has(ZN_CPU_AVX512BW) && zn_cpu_has(ZN_CPU_AVX512VL),
	};
	for (int k = ZN_ADAM_SIMD_SCALAR; k < ZN_ADAM_SIMD_COUNT; k++) {
		int rc = zn_adam_simd_select((enum zn_adam_simd)k, &got);
		assert_int_equal(rc, has[k] ? 0 : -ENOTSUP);
		if (!has[k])
			assert_non_null(strstr(zn_last_error(), "lacks"));
	}
	assert_int_equal(zn_adam_simd_select(ZN_ADAM_SIMD_COUNT, &got), -EINVAL);

	/* ZINC_SIMD forces a path for AUTO callers, and only for them. */
	setenv("ZINC_SIMD", "scalar", 1);
	assert_int_equal(zn_adam_simd_select(ZN_ADAM_SIMD_AUTO, &got), 0);
	assert_int_equal(got, ZN_ADAM_SIMD_SCALAR);
	if (has[ZN_ADAM_SIMD_AVX2]) {
		assert_int_equal(zn_adam_simd_select(ZN_ADAM_SIMD_AVX2, &got), 0);
		assert_int_equal(got, ZN_ADAM_SIMD_AVX2);
	}
	setenv("ZINC_SIMD", "auto", 1);
	assert_int_equal(zn_adam_simd_select(ZN_ADAM_SIMD_AUTO, &got), 0);
	assert_int_equal(got, want);
	setenv("ZINC_SIMD", "avx9000", 1);
	assert_int_equal(zn_adam_simd_select(ZN_ADAM_SIMD_AUTO, &got), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "ZINC_SIMD=avx9000"));
	/* ...and the optimizers refuse to run rather than guess. */
	float p = 1, g = 1, m = 0, v = 0;
	struct zn_adam_hparams hp;
	zn_adam_defaults(&hp);
	struct zn_adam_tensors t = { .n = 1, .param = &p, .grad = &g, .exp_avg = &m,
				     .exp_avg_sq = &v };
	assert_int_equal(zn_adam_step(&hp, 1, 1.0f, &t, NULL), -EINVAL);
	assert_true(p == 1);
	for (int k = ZN_ADAM_SIMD_AVX2; k < ZN_ADAM_SIMD_COUNT; k++) {
		if (has[k])
			continue;
		setenv("ZINC_SIMD", zn_adam_simd_name((enum zn_adam_simd)k), 1);
		assert_int_equal(zn_adam_simd_select(ZN_ADAM_SIMD_AUTO, &got), -ENOTSUP);
		assert_non_null(strstr(zn_last_error(), "ZINC_SIMD="));
	}
	unsetenv("ZINC_SIMD");

	for (int k = 0; k < ZN_ADAM_SIMD_COUNT; k++) {
		assert_int_equal(zn_adam_simd_parse(zn_adam_simd_name((enum zn_adam_simd)k), &s), 0);
		assert_int_equal(s, k);
	}
	assert_int_equal(zn_adam_simd_parse("AVX512", &s), -EINVAL);
	assert_string_equal(zn_adam_simd_name(ZN_ADAM_SIMD_COUNT), "?");
	assert_string_equal(zn_dtype_name(ZN_DTYPE_BF16), "bf16");
	assert_int_equal(zn_dtype_size(ZN_DTYPE_F16), 2);
	assert_int_equal(zn_dtype_size(ZN_DTYPE_COUNT), 0);
}

/* DeepSpeed's defaults, and a grad_scale fused into the pass being the
 * same as scaling the gradient first. */
static void test_defaults_and_scale(void **state)
{
	(void)state;
	struct zn_adam_hparams hp;
	zn_adam_defaults(&hp);
	assert_true(hp.lr == 1e-3 && hp.beta1 == 0.9 && hp.beta2 == 0.999 && hp.eps == 1e-8 &&
		    hp.weight_decay == 0 && hp.bias_correction && hp.adamw_mode);
	zn_adagrad_defaults(&hp);
	assert_true(hp.lr == 1e-2 && hp.eps == 1e-10 && hp.weight_decay == 0);
	zn_lion_defaults(&hp);
	assert_true(hp.lr == 1e-3 && hp.beta1 == 0.9 && hp.beta2 == 0.999);

	enum { N = 333 };
	float p1[N], p2[N], m1[N] = { 0 }, m2[N] = { 0 }, v1[N] = { 0 }, v2[N] = { 0 }, g[N], gs[N];
	const float scale = 0.7f / 1024;
	for (int i = 0; i < N; i++) {
		p1[i] = p2[i] = uniform(-1, 1);
		g[i] = uniform(-100, 100);
		gs[i] = g[i] * scale;
	}
	zn_adam_defaults(&hp);
	struct zn_adam_tensors a = { .n = N, .param = p1, .grad = g, .exp_avg = m1, .exp_avg_sq = v1 };
	struct zn_adam_tensors b = { .n = N, .param = p2, .grad = gs, .exp_avg = m2, .exp_avg_sq = v2 };
	for (uint64_t s = 1; s <= 3; s++) {
		assert_int_equal(zn_adam_step(&hp, s, scale, &a, NULL), 0);
		assert_int_equal(zn_adam_step(&hp, s, 1.0f, &b, NULL), 0);
	}
	assert_memory_equal(p1, p2, sizeof(p1));
	assert_memory_equal(v1, v2, sizeof(v1));
}

/* ---- staggered arrays --------------------------------------------------- */

static void test_hostmem_arrays(void **state)
{
	(void)state;
	size_t sizes[4] = { 1000, 4 << 20, 0, 77 };
	void *arr[4];
	size_t region;
	char *base = zn_hostmem_alloc_arrays(4, sizes, ZN_HOSTMEM_HUGE, arr, &region);
	assert_non_null(base);
	assert_ptr_equal(arr[0], base);
	assert_int_equal((uintptr_t)base % ZN_HOSTMEM_ALIGN, 0);
	assert_int_equal(region % ZN_HOSTMEM_ALIGN, 0);
	for (int k = 0; k < 4; k++) {
		assert_int_equal((uintptr_t)arr[k] % 64, 0);
		assert_true((char *)arr[k] + sizes[k] <= base + region);
		memset(arr[k], k + 1, sizes[k]);
		if (k > 0) {
			/* Staggered: the gap after the previous array (its size
			 * rounded to 64) is ZN_HOSTMEM_STAGGER, not a power of two. */
			size_t gap = (size_t)((char *)arr[k] - (char *)arr[k - 1]) -
				     ZN_ALIGN_UP(sizes[k - 1], 64);
			assert_int_equal(gap, ZN_HOSTMEM_STAGGER);
		}
	}
	assert_false(ZN_IS_POW2(ZN_HOSTMEM_STAGGER));
	assert_int_equal(ZN_HOSTMEM_STAGGER % 64, 0);
	assert_int_equal(((unsigned char *)arr[1])[0], 2);
	assert_int_equal(((unsigned char *)arr[0])[999], 1);
	zn_hostmem_free(base, region);

	/* 2^k-element arrays are no longer a power of two apart. */
	size_t big[2] = { 64 << 20, 64 << 20 };
	base = zn_hostmem_alloc_arrays(2, big, 0, arr, &region);
	assert_non_null(base);
	assert_false(ZN_IS_POW2((size_t)((char *)arr[1] - (char *)arr[0])));
	zn_hostmem_free(base, region);

	assert_null(zn_hostmem_alloc_arrays(0, sizes, 0, arr, &region));
	assert_non_null(strstr(zn_last_error(), "no arrays"));
	assert_null(zn_hostmem_alloc_arrays(2, NULL, 0, arr, &region));
	size_t huge_sizes[2] = { SIZE_MAX - 10, 100 };
	assert_null(zn_hostmem_alloc_arrays(2, huge_sizes, 0, arr, &region));
	assert_non_null(strstr(zn_last_error(), "overflow"));
}

/* ---- Lamb in pieces, SGD's and Lamb's refusals --------------------------- */

/* Elements [lo, hi) of a's Lamb tensors at `step`: one piece of them. */
static struct zn_adam_tensors lamb_piece(const struct arrays *a, int step, enum zn_dtype gt,
					 size_t lo, size_t hi)
{
	struct zn_adam_tensors pt = tensors(a, step, gt, -1, LAMB);
	pt.n = hi - lo;
	pt.param += lo;
	pt.exp_avg += lo;
	pt.exp_avg_sq += lo;
	pt.grad = (const uint8_t *)pt.grad + lo * zn_dtype_size(gt);
	return pt;
}

/* A tensor held in pieces (ZeRO parts, sub-groups) runs Lamb's two passes
 * piece by piece: with pieces cut at tile boundaries the sums, the ratio
 * and every bit equal one call over the whole tensor in the same tiles. */
static void test_lamb_pieces(void **state)
{
	(void)state;
	const struct opt_case *c = &cases[0];
	while (c->o != LAMB)
		c++;
	const size_t n = 1000, cuts[] = { 0, 192, 640, 704, n };
	struct arrays init, whole, parts;
	arrays_alloc(&init, n, c->gt, 2);
	arrays_alloc(&whole, n, c->gt, 2);
	arrays_alloc(&parts, n, c->gt, 2);
	arrays_fill(&init, c->gt, false);
	arrays_copy(&whole, &init, c->gt);
	arrays_copy(&parts, &init, c->gt);
	struct zn_adam_hparams hp = case_hparams(c);
	hp.weight_decay = 0.01;
	struct zn_adam_exec ex = { .tile = 64 };
	for (int s = 0; s < STEPS; s++) {
		double r_whole, r_parts;
		struct zn_adam_tensors t = tensors(&whole, s, c->gt, -1, LAMB);
		assert_int_equal(zn_lamb_step(&hp, (uint64_t)s + 1, 0.5f, &t, &ex, &r_whole), 0);
		struct zn_lamb_sums sums = { 0 };
		for (size_t k = 0; k + 1 < ZN_ARRAY_SIZE(cuts); k++) {
			struct zn_adam_tensors pt = lamb_piece(&parts, s, c->gt, cuts[k], cuts[k + 1]);
			assert_int_equal(zn_lamb_moments(&hp, (uint64_t)s + 1, 0.5f, &pt, &ex, &sums), 0);
		}
		r_parts = zn_lamb_trust_ratio(&hp, &sums);
		assert_true(r_parts == r_whole);
		assert_true(r_parts > hp.min_coeff && r_parts < hp.max_coeff); /* not clamped */
		for (size_t k = 0; k + 1 < ZN_ARRAY_SIZE(cuts); k++) {
			struct zn_adam_tensors pt = lamb_piece(&parts, s, c->gt, cuts[k], cuts[k + 1]);
			pt.grad = NULL; /* the second pass does not read it */
			assert_int_equal(zn_lamb_apply(&hp, (uint64_t)s + 1, r_parts, &pt, &ex), 0);
		}
	}
	compare_bits("pieces", c, 0, n, &parts, &whole);
	arrays_free(&init);
	arrays_free(&whole);
	arrays_free(&parts);

	/* Zero norms: the ratio is 1 (FusedLamb), and the bounds clamp. */
	struct zn_lamb_sums z = { 0.0, 4.0 }, big = { 400.0, 1.0 }, small = { 1e-8, 1.0 };
	assert_true(zn_lamb_trust_ratio(&hp, &z) == 1.0);
	assert_true(zn_lamb_trust_ratio(&hp, &big) == 10.0);
	assert_true(zn_lamb_trust_ratio(&hp, &small) == 0.01);
}

/* The automatic tile of Lamb's norm pass does not follow the pool: one
 * thread and two give the same bits on a tensor large enough that the
 * pool-sized tiles would differ (n / 4 against n / 8). */
static void test_lamb_threads(void **state)
{
	(void)state;
	const size_t n = (size_t)1 << 21;
	float *p[2], *m[2], *v[2], *g = malloc(n * 4);
	assert_non_null(g);
	for (int k = 0; k < 2; k++) {
		p[k] = malloc(n * 4);
		m[k] = calloc(n, 4);
		v[k] = calloc(n, 4);
		assert_true(p[k] && m[k] && v[k]);
	}
	for (size_t i = 0; i < n; i++) {
		p[0][i] = p[1][i] = uniform(-1, 1);
		g[i] = uniform(-1e-2f, 1e-2f);
	}
	struct zn_threadpool *pool = zn_threadpool_create(2, -1);
	assert_non_null(pool);
	struct zn_adam_hparams hp;
	zn_lamb_defaults(&hp);
	hp.weight_decay = 0.01;
	double r[2];
	for (int k = 0; k < 2; k++) {
		struct zn_adam_exec ex = { .pool = k ? pool : NULL };
		struct zn_adam_tensors t = { .n = n, .param = p[k], .grad = g,
					     .grad_dtype = ZN_DTYPE_F32, .exp_avg = m[k],
					     .exp_avg_sq = v[k] };
		assert_int_equal(zn_lamb_step(&hp, 1, 1.0f, &t, &ex, &r[k]), 0);
	}
	assert_true(r[0] == r[1]);
	assert_int_equal(memcmp(p[0], p[1], n * 4), 0);
	zn_threadpool_destroy(pool);
	for (int k = 0; k < 2; k++) {
		free(p[k]);
		free(m[k]);
		free(v[k]);
	}
	free(g);
}

static void test_sgd_lamb_bad_input(void **state)
{
	(void)state;
	float p[4] = { 1, 2, 3, 4 }, g[4] = { 1, 1, 1, 1 }, m[4] = { 0 }, v[4] = { 0 };
	const struct zn_adam_tensors t = { .n = 4, .param = p, .grad = g, .exp_avg = m,
					   .exp_avg_sq = v };
	struct zn_adam_hparams hp;
	zn_sgd_defaults(&hp);
	hp.nesterov = true;
	expect_einval(zn_sgd_step(&hp, 1, 1.0f, &t, NULL), "Nesterov momentum needs momentum > 0");
	hp.nesterov = false;
	hp.momentum = 1.5;
	expect_einval(zn_sgd_step(&hp, 1, 1.0f, &t, NULL), "momentum 1.5");
	hp.momentum = 0.9;
	struct zn_adam_tensors nom = t;
	nom.exp_avg = NULL;
	expect_einval(zn_sgd_step(&hp, 1, 1.0f, &nom, NULL), "exp_avg is NULL");
	hp.momentum = 0; /* no buffer needed */
	assert_int_equal(zn_sgd_step(&hp, 1, 1.0f, &nom, NULL), 0);
	assert_true(p[0] == 1.0f - 1e-3f);

	zn_lamb_defaults(&hp);
	hp.min_coeff = 2;
	hp.max_coeff = 1;
	expect_einval(zn_lamb_step(&hp, 1, 1.0f, &t, NULL, NULL), "min_coeff 2 and max_coeff 1");
	zn_lamb_defaults(&hp);
	expect_einval(zn_lamb_apply(&hp, 1, -1.0, &t, NULL), "trust ratio -1");
	struct zn_lamb_sums sums = { 0 };
	expect_einval(zn_lamb_moments(&hp, 0, 1.0f, &t, NULL, &sums), "step 0");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_simd_select),
		cmocka_unit_test(test_defaults_and_scale),
		cmocka_unit_test(test_paths_bitwise),
		cmocka_unit_test(test_double_reference),
		cmocka_unit_test(test_nan_inf),
		cmocka_unit_test(test_tiles_callback),
		cmocka_unit_test(test_grad_check),
		cmocka_unit_test(test_conversions),
		cmocka_unit_test(test_bad_input),
		cmocka_unit_test(test_lamb_pieces),
		cmocka_unit_test(test_lamb_threads),
		cmocka_unit_test(test_sgd_lamb_bad_input),
		cmocka_unit_test(test_hostmem_arrays),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
