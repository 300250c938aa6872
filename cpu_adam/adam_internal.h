/* cpu_adam internals: the per-ISA kernel table and what one call passes to
 * it.  Not installed; only cpu_adam/ and its white-box tests include it. */
#ifndef ZN_ADAM_INTERNAL_H
#define ZN_ADAM_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "zinc/adam.h"

/* Elements per tile are a multiple of this: 64 fp32 = 4 cache lines, 64
 * fp16 = 2, so with 64-byte-aligned arrays no two tiles (and so no two
 * threads) ever write the same cache line, and every SIMD path runs whole
 * vectors except in the last tile. */
#define ZN_ADAM_TILE_QUANTUM 64

/* One optimizer call.  The per-step constants are computed once, in
 * double, rounded to float by adam.c, and shared by every ISA so that all
 * paths round identically.  Kernels index the arrays from element 0; a
 * tile is [i0, i0 + n). */
struct zn_optim_args {
	float *p;
	const void *g;
	float *m;              /* exp_avg */
	float *v;              /* exp_avg_sq (Adagrad: the sum of squares) */
	void *copy;            /* NULL: no copy */
	enum zn_dtype gt;      /* grad dtype */
	enum zn_dtype ct;      /* copy dtype (F16 or BF16) when copy != NULL */

	float scale;     /* grad multiplier */
	float b1, omb1;  /* beta1, 1 - beta1 */
	float b2, omb2;  /* beta2, 1 - beta2 */
	float eps;
	float step_size; /* Adam: -lr / (1 - beta1^t); Adagrad, Lion: -lr */
	float bc2_rsqrt; /* Adam: 1 / sqrt(1 - beta2^t) (1 without bias correction) */
	float decay;     /* decoupled weight decay factor 1 - lr * wd */
	float l2;        /* L2 weight decay added to the gradient: wd */
	bool use_decay;  /* weight_decay > 0 and decoupled (AdamW, Lion) */
	bool use_l2;     /* weight_decay > 0 and L2 (Adam with adamw_mode off, Adagrad, SGD) */
	/* Lamb: u = m / den + l2 * p with use_l2; den = sqrt(v) + eps, or
	 * sqrt(v + eps) with eps_inside; the update p + step_size * u, where
	 * step_size holds -lr * sqrt(1 - beta2^t) / (1 - beta1^t) * ratio. */
	bool eps_inside;
	/* SGD: b1 holds momentum, omb1 1 - dampening, step_size -lr. */
	bool has_momentum; /* momentum != 0: a buffer in m */
	bool first;        /* step 1: the buffer starts as the gradient */
	bool nesterov;
};

/* Lanes of a Lamb norm sum: element i of a tile adds into lane i % 16. */
#define ZN_LAMB_LANES 16

/* One ISA's kernels.  Every function handles any n (tails included) and
 * any alignment. */
struct zn_optim_isa {
	const char *name;
	void (*adam)(const struct zn_optim_args *a, size_t i0, size_t n);
	void (*adagrad)(const struct zn_optim_args *a, size_t i0, size_t n);
	void (*lion)(const struct zn_optim_args *a, size_t i0, size_t n);
	void (*sgd)(const struct zn_optim_args *a, size_t i0, size_t n);
	/* Lamb's first pass over the tile [i0, i0 + n): m, v written;
	 * sums[0] = sum of p^2, sums[1] = sum of u^2 over the tile, each over
	 * ZN_LAMB_LANES lanes added in lane order. */
	void (*lamb_moments)(const struct zn_optim_args *a, size_t i0, size_t n, double sums[2]);
	/* Lamb's second pass: p (and the copy) written. */
	void (*lamb_apply)(const struct zn_optim_args *a, size_t i0, size_t n);
	/* Sum of squares of g[0..n) in double. */
	double (*sumsq)(const void *g, enum zn_dtype gt, size_t n);
	/* dst[i] = src[i] converted; dt FP16 or BF16. */
	void (*from_f32)(const float *src, void *dst, enum zn_dtype dt, size_t n);
	void (*to_f32)(const void *src, enum zn_dtype st, float *dst, size_t n);
	/* Benchmark streams (fp32).  stream7 is Adam-shaped: reads p, g, m, v
	 * and writes p, m, v in place, with trivial arithmetic that keeps the
	 * values bounded.  triad is STREAM's a = b + s * c. */
	void (*stream7)(float *p, const float *g, float *m, float *v, size_t n);
	void (*triad)(float *a, const float *b, const float *c, float s, size_t n);
};

extern const struct zn_optim_isa zn_optim_scalar;
#if ZN_ADAM_HAVE_AVX2
extern const struct zn_optim_isa zn_optim_avx2;
#endif
#if ZN_ADAM_HAVE_AVX512
extern const struct zn_optim_isa zn_optim_avx512;
#endif

/* The kernels of a resolved choice (not AUTO): NULL when not built. */
const struct zn_optim_isa *zn_optim_isa_get(enum zn_adam_simd simd);

#endif
