/* The inner loops of the cpu kernels, one table per vector path.
 *
 * vec.c is plain C written so the compiler vectorizes it (no libm calls in
 * loops, reductions over explicit lanes, branches as selects); meson
 * compiles it once for the x86-64 baseline (SSE2) and once with AVX2 + FMA,
 * and cpu.c picks a table at run time.  Both are built with
 * -ffp-contract=off and every reduction adds its lanes in the same fixed
 * order, so the two tables give bit-identical results (the test checks). */
#ifndef ZN_KERNELS_VEC_H
#define ZN_KERNELS_VEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "zinc/kernels.h"

/* LayerNorm's epsilon, as torch.nn.LayerNorm's default and GPT-2's. */
#define ZN_LN_EPS 1e-5f

struct zn_kvec {
	const char *name;
	/* out = a + b */
	void (*add)(float *out, const float *a, const float *b, size_t n);
	/* out += a */
	void (*acc)(float *out, const float *a, size_t n);
	/* out = gelu(x); dx += gelu'(x) * dy */
	void (*gelu_fwd)(float *out, const float *x, size_t n);
	void (*gelu_bwd)(float *dx, const float *x, const float *dy, size_t n);
	/* One row of C: out = (x - mean) * rstd * w + b; *mean, *rstd set. */
	void (*ln_fwd)(float *out, float *mean, float *rstd, const float *x, const float *w,
		       const float *b, size_t C);
	/* One row of C: dx += the input gradient (llm.c's three terms). */
	void (*ln_bwd)(float *dx, const float *dy, const float *x, const float *w, float mean,
		       float rstd, size_t C);
	/* A slice of one row: dw += dy * (x - mean) * rstd; db += dy (either
	 * may be NULL). */
	void (*ln_bwd_wb)(float *dw, float *db, const float *dy, const float *x, float mean,
			  float rstd, size_t n);
	/* One row of C, RMSNorm: out = (x * rstd) * w with
	 * rstd = 1 / sqrt(mean(x^2) + eps); *rstd set. */
	void (*rms_fwd)(float *out, float *rstd, const float *x, const float *w, float eps,
			size_t C);
	/* One row of C: dx += the input gradient of RMSNorm. */
	void (*rms_bwd)(float *dx, const float *dy, const float *x, const float *w, float rstd,
			size_t C);
	/* A slice of one row: dw += dy * (x * rstd). */
	void (*rms_bwd_w)(float *dw, const float *dy, const float *x, float rstd, size_t n);
	/* One head of the rotary embedding (rotate_half pairs i, i + half):
	 * out = R x (out may equal x); dx += R^T dy.  cs, sn (half). */
	void (*rope_fwd)(float *out, const float *x, const float *cs, const float *sn, size_t half);
	void (*rope_bwd)(float *dx, const float *dy, const float *cs, const float *sn, size_t half);
	/* out = silu(g) * u (out may equal g or u); dg += dy * u * silu'(g),
	 * du += dy * silu(g) (either may be NULL). */
	void (*swiglu_fwd)(float *out, const float *g, const float *u, size_t n);
	void (*swiglu_bwd)(float *dg, float *du, const float *dy, const float *g, const float *u,
			   size_t n);
	/* p = softmax(p) in place over n > 0; returns log(sum(exp(p))). */
	float (*softmax)(float *p, size_t n);
	/* p = exp(p - lse) in place. */
	void (*softmax_recompute)(float *p, float lse, size_t n);
	/* Softmax backward in place: p = p * (dp - sum(p * dp)). */
	void (*softmax_bwd)(float *p, const float *dp, size_t n);
	/* Cross-entropy of one row of V logits against `target` (in [0, V)):
	 * returns logsumexp(x) - x[target]; when dl is not NULL also
	 * dl = gscale * (softmax(x) - onehot(target)) (dl may equal x). */
	float (*xent)(float *dl, const float *x, size_t V, int target, float gscale);
	/* Conversions and reductions on n elements of a dtype. */
	void (*cast)(void *dst, enum zn_dtype dd, const void *src, enum zn_dtype sd, size_t n);
	void (*scale)(void *x, enum zn_dtype d, float s, size_t n);
	double (*sumsq)(const void *x, enum zn_dtype d, size_t n);
	bool (*nonfinite)(const void *x, enum zn_dtype d, size_t n);
};

extern const struct zn_kvec zn_kvec_base;
#if ZN_KVEC_HAVE_AVX2
extern const struct zn_kvec zn_kvec_avx2;
#endif

#endif
