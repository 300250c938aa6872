/* A plain scalar Adam for tests that need an update to drive (the
 * optimizer swapper's): DeepSpeedCPUAdam's semantics, element by element,
 * so grouping a call differently cannot change a bit. */
#ifndef ZN_TEST_OPTIMIZER_REF_H
#define ZN_TEST_OPTIMIZER_REF_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#define ZN_MIN_T(a, b) ((a) < (b) ? (a) : (b))
#define ZN_ALIGN_UP_T(x, a) ((((x) + (a) - 1) / (a)) * (a))

struct zn_optim_ref_hp {
	float lr, beta1, beta2, eps, weight_decay;
	bool adamw, bias_correction;
};

/* fp32 -> bf16, round to nearest even (NaN stays NaN). */
static inline uint16_t zn_ref_bf16(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	if ((u & 0x7fffffffu) > 0x7f800000u)
		return (uint16_t)((u >> 16) | 0x40);
	u += 0x7fffu + ((u >> 16) & 1u);
	return (uint16_t)(u >> 16);
}

static inline void zn_optim_ref_adam(const struct zn_optim_ref_hp *hp, int64_t step, float *p,
				     float *m, float *v, const float *g, uint16_t *copy, uint64_t n)
{
	float bc1 = 1.0f, bc2 = 1.0f;
	if (hp->bias_correction) {
		bc1 = 1.0f - powf(hp->beta1, (float)step);
		bc2 = 1.0f / sqrtf(1.0f - powf(hp->beta2, (float)step));
	}
	const float step_size = -hp->lr / bc1, decay = -hp->lr * hp->weight_decay;
	for (uint64_t i = 0; i < n; i++) {
		float grad = g[i], param = p[i];
		if (hp->weight_decay > 0 && !hp->adamw)
			grad = param * hp->weight_decay + grad;
		m[i] = m[i] * hp->beta1 + grad * (1 - hp->beta1);
		v[i] = v[i] * hp->beta2 + grad * grad * (1 - hp->beta2);
		float denom = sqrtf(v[i]) * bc2 + hp->eps;
		if (hp->weight_decay > 0 && hp->adamw)
			param += decay * param;
		p[i] = m[i] / denom * step_size + param;
		if (copy)
			copy[i] = zn_ref_bf16(p[i]);
	}
}

#endif
