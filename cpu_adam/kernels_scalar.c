/* The scalar optimizers: the specification.
 *
 * Every other path (kernels_avx2.c, kernels_avx512.c) does exactly these
 * IEEE single-precision operations in this order, so all three agree to the
 * bit; tests/test_adam.c checks that, and checks this file against a
 * double-precision reference.  Built without FMA contraction
 * (-ffp-contract=off, cpu_adam/meson.build): a fused multiply-add rounds
 * once where these lines round twice.
 *
 * Notation per element: θ param, g gradient, m exp_avg, v exp_avg_sq,
 * t the step (from 1), η the learning rate, λ weight_decay.
 */
#include "adam_internal.h"

#include <math.h>

#include "zn_half.h"

static inline float load_grad(const void *g, enum zn_dtype gt, size_t i)
{
	switch (gt) {
	case ZN_DTYPE_F16:
		return zn_f16_to_f32(((const uint16_t *)g)[i]);
	case ZN_DTYPE_BF16:
		return zn_bf16_to_f32(((const uint16_t *)g)[i]);
	default:
		return ((const float *)g)[i];
	}
}

static inline void store_copy(const struct zn_optim_args *a, size_t i, float x)
{
	if (!a->copy)
		return;
	uint16_t *c = a->copy;
	c[i] = a->ct == ZN_DTYPE_BF16 ? zn_f32_to_bf16(x) : zn_f32_to_f16(x);
}

/* Adam (Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR
 * 2015, Algorithm 1) and AdamW (Loshchilov & Hutter, "Decoupled Weight Decay
 * Regularization", ICLR 2019, Algorithm 2), in DeepSpeedCPUAdam's form
 * (csrc/includes/cpu_adam_impl.h) and with torch.optim.Adam(W)'s meaning. */
static void adam(const struct zn_optim_args *a, size_t i0, size_t n)
{
	for (size_t i = i0; i < i0 + n; i++) {
		float p = a->p[i], m = a->m[i], v = a->v[i];
		/* g_t = ∇f(θ_{t-1}) × grad_scale: the loss-scale unscale and
		 * the clipping coefficient, fused into this pass. */
		float g = load_grad(a->g, a->gt, i) * a->scale;
		/* Adam with L2 (adamw_mode off; torch.optim.Adam's
		 * weight_decay): g_t ← g_t + λ θ_{t-1}. */
		if (a->use_l2)
			g = g + a->l2 * p;
		/* Algorithm 1: m_t ← β1 m_{t-1} + (1 − β1) g_t */
		m = a->b1 * m + a->omb1 * g;
		/* Algorithm 1: v_t ← β2 v_{t-1} + (1 − β2) g_t² */
		v = a->b2 * v + a->omb2 * (g * g);
		/* The denominator √v̂_t + ε with v̂_t = v_t / (1 − β2^t), as
		 * √v_t × (1/√(1 − β2^t)) + ε: ε is added after the bias
		 * correction, as in torch and DeepSpeed (Algorithm 1 itself
		 * folds ε differently in its "efficient" form). */
		float den = sqrtf(v) * a->bc2_rsqrt + a->eps;
		/* AdamW, Algorithm 2 line 12: θ ← θ − η λ θ, as θ × (1 − η λ)
		 * (torch: param.mul_(1 - lr * weight_decay)). */
		if (a->use_decay)
			p = p * a->decay;
		/* θ_t ← θ_{t-1} − η/(1 − β1^t) × m_t / den; step_size holds
		 * −η/(1 − β1^t) (−η without bias correction). */
		p = p + a->step_size * (m / den);
		a->p[i] = p;
		a->m[i] = m;
		a->v[i] = v;
		store_copy(a, i, p);
	}
}

/* Adagrad (Duchi, Hazan & Singer, "Adaptive Subgradient Methods", JMLR
 * 2011; diagonal form), as torch.optim.Adagrad with lr_decay 0 and
 * DeepSpeedCPUAdagrad. */
static void adagrad(const struct zn_optim_args *a, size_t i0, size_t n)
{
	for (size_t i = i0; i < i0 + n; i++) {
		float p = a->p[i], s = a->v[i];
		float g = load_grad(a->g, a->gt, i) * a->scale;
		/* L2 weight decay: g_t ← g_t + λ θ_{t-1} */
		if (a->use_l2)
			g = g + a->l2 * p;
		/* s_t ← s_{t-1} + g_t² (the running sum of squares) */
		s = s + g * g;
		/* θ_t ← θ_{t-1} − η g_t / (√s_t + ε); step_size holds −η */
		float den = sqrtf(s) + a->eps;
		p = p + a->step_size * (g / den);
		a->p[i] = p;
		a->v[i] = s;
		store_copy(a, i, p);
	}
}

/* sign(x) as torch.sign: −1, 0 or +1, and 0 for NaN (lion-pytorch and the
 * paper's program use it). */
static inline float sign0(float x)
{
	return (float)(x > 0.0f) - (float)(x < 0.0f);
}

/* Lion (Chen et al., "Symbolic Discovery of Optimization Algorithms",
 * NeurIPS 2023, Algorithm 2), with DeepSpeedCPULion's decoupled decay
 * θ × (1 − η λ). */
static void lion(const struct zn_optim_args *a, size_t i0, size_t n)
{
	for (size_t i = i0; i < i0 + n; i++) {
		float p = a->p[i], m = a->m[i];
		float g = load_grad(a->g, a->gt, i) * a->scale;
		/* c_t ← β1 m_{t-1} + (1 − β1) g_t */
		float c = a->b1 * m + a->omb1 * g;
		/* decoupled decay: θ ← θ (1 − η λ) */
		if (a->use_decay)
			p = p * a->decay;
		/* θ_t ← θ − η sign(c_t); step_size holds −η */
		p = p + a->step_size * sign0(c);
		/* m_t ← β2 m_{t-1} + (1 − β2) g_t */
		m = a->b2 * m + a->omb2 * g;
		a->p[i] = p;
		a->m[i] = m;
		store_copy(a, i, p);
	}
}

/* SGD with momentum, torch.optim.SGD (its _single_tensor_sgd, step for
 * step; Sutskever et al., "On the importance of initialization and
 * momentum in deep learning", ICML 2013, for Nesterov's form). */
static void sgd(const struct zn_optim_args *a, size_t i0, size_t n)
{
	for (size_t i = i0; i < i0 + n; i++) {
		float p = a->p[i];
		float d = load_grad(a->g, a->gt, i) * a->scale;
		/* L2 weight decay: d ← d + λ θ (torch: d_p.add(param, alpha=λ)) */
		if (a->use_l2)
			d = d + a->l2 * p;
		if (a->has_momentum) {
			/* b ← d on the first step (torch clones d_p), else
			 * b ← μ b + (1 − dampening) d */
			float b = a->first ? d : a->b1 * a->m[i] + a->omb1 * d;
			a->m[i] = b;
			/* Nesterov: d ← d + μ b; else d ← b */
			d = a->nesterov ? d + a->b1 * b : b;
		}
		/* θ ← θ − η d; step_size holds −η */
		p = p + a->step_size * d;
		a->p[i] = p;
		store_copy(a, i, p);
	}
}

/* Lamb's update direction u for one element (both passes compute it
 * alike): u = m / (√v + ε) + λ θ, DeepSpeed FusedLamb's (eps_inside_sqrt:
 * √(v + ε)). */
static inline float lamb_u(const struct zn_optim_args *a, float p, float m, float v)
{
	float den = a->eps_inside ? sqrtf(v + a->eps) : sqrtf(v) + a->eps;
	float u = m / den;
	if (a->use_l2)
		u = u + a->l2 * p;
	return u;
}

/* Lamb (You et al., "Large Batch Optimization for Deep Learning", ICLR
 * 2020, Algorithm 2) in FusedLamb's form, first pass: Adam's moments
 * (Algorithm 2 lines 6-7, no bias correction here: FusedLamb puts it in
 * the step size) and the squares of ‖θ‖ and ‖u‖ for the trust ratio. */
static void lamb_moments(const struct zn_optim_args *a, size_t i0, size_t n, double sums[2])
{
	double w[ZN_LAMB_LANES] = { 0 }, uu[ZN_LAMB_LANES] = { 0 };
	for (size_t i = i0; i < i0 + n; i++) {
		float p = a->p[i], m = a->m[i], v = a->v[i];
		float g = load_grad(a->g, a->gt, i) * a->scale;
		/* m_t ← β1 m_{t-1} + (1 − β1) g_t;  v_t ← β2 v_{t-1} + (1 − β2) g_t² */
		m = a->b1 * m + a->omb1 * g;
		v = a->b2 * v + a->omb2 * (g * g);
		float u = lamb_u(a, p, m, v);
		a->m[i] = m;
		a->v[i] = v;
		/* Squares of fp32 values are exact in double; each lane's sum
		 * is in element order. */
		size_t k = (i - i0) % ZN_LAMB_LANES;
		w[k] += (double)p * (double)p;
		uu[k] += (double)u * (double)u;
	}
	sums[0] = sums[1] = 0.0;
	for (size_t k = 0; k < ZN_LAMB_LANES; k++) {
		sums[0] += w[k];
		sums[1] += uu[k];
	}
}

/* Second pass, Algorithm 2 line 10: θ_t ← θ_{t-1} − η r u with r the trust
 * ratio; step_size holds −η √(1 − β2^t) / (1 − β1^t) × r. */
static void lamb_apply(const struct zn_optim_args *a, size_t i0, size_t n)
{
	for (size_t i = i0; i < i0 + n; i++) {
		float p = a->p[i];
		float u = lamb_u(a, p, a->m[i], a->v[i]);
		p = p + a->step_size * u;
		a->p[i] = p;
		store_copy(a, i, p);
	}
}

static double sumsq(const void *g, enum zn_dtype gt, size_t n)
{
	double acc = 0.0;

	/* A square of a float is exact in double, and finite squares cannot
	 * overflow a double sum; Inf or NaN anywhere makes the sum non-finite,
	 * which is the whole inf/nan check. */
	for (size_t i = 0; i < n; i++) {
		double x = load_grad(g, gt, i);
		acc += x * x;
	}
	return acc;
}

static void from_f32(const float *src, void *dst, enum zn_dtype dt, size_t n)
{
	uint16_t *d = dst;
	for (size_t i = 0; i < n; i++)
		d[i] = dt == ZN_DTYPE_BF16 ? zn_f32_to_bf16(src[i]) : zn_f32_to_f16(src[i]);
}

static void to_f32(const void *src, enum zn_dtype st, float *dst, size_t n)
{
	for (size_t i = 0; i < n; i++)
		dst[i] = load_grad(src, st, i);
}

static void stream7(float *p, const float *g, float *m, float *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		float mi = 0.5f * (m[i] + g[i]);
		float vi = 0.5f * (v[i] + g[i] * g[i]);
		m[i] = mi;
		v[i] = vi;
		p[i] = p[i] - 1e-3f * mi;
	}
}

static void triad(float *a, const float *b, const float *c, float s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		a[i] = b[i] + s * c[i];
}

const struct zn_optim_isa zn_optim_scalar = {
	.name = "scalar",
	.adam = adam,
	.adagrad = adagrad,
	.lion = lion,
	.sgd = sgd,
	.lamb_moments = lamb_moments,
	.lamb_apply = lamb_apply,
	.sumsq = sumsq,
	.from_f32 = from_f32,
	.to_f32 = to_f32,
	.stream7 = stream7,
	.triad = triad,
};
