/* What the vector kernel files (kernels_avx2.c, kernels_avx512.c) share:
 * one specialized loop per (gradient dtype, copy dtype).  Private to
 * cpu_adam/.
 *
 * Each file writes its loops as AI (always-inline) functions
 *     loop(const struct zn_optim_args *a, size_t i0, size_t n, int gt, int ct)
 * and its table entries as `DISPATCH(loop);` in a function with those
 * a, i0 and n: the switch below calls the loop with constant gt and ct, so
 * every dtype test inside it folds away at compile time and each of the
 * nine combinations is its own straight-line loop. */
#ifndef ZN_ADAM_KERNELS_DISPATCH_H
#define ZN_ADAM_KERNELS_DISPATCH_H

#include "adam_internal.h"

#define AI static inline __attribute__((always_inline))

/* The ct of a call without a param copy (a->copy NULL). */
#define NOCOPY (-1)

#define DISPATCH(loop)                                                            \
	do {                                                                      \
		int ct_ = a->copy ? (int)a->ct : NOCOPY;                          \
		switch (a->gt) {                                                  \
		case ZN_DTYPE_F16:                                                \
			DISPATCH_CT(loop, ZN_DTYPE_F16);                          \
			break;                                                    \
		case ZN_DTYPE_BF16:                                               \
			DISPATCH_CT(loop, ZN_DTYPE_BF16);                         \
			break;                                                    \
		default:                                                          \
			DISPATCH_CT(loop, ZN_DTYPE_F32);                          \
			break;                                                    \
		}                                                                 \
	} while (0)
#define DISPATCH_CT(loop, G)                                                      \
	do {                                                                      \
		if (ct_ == ZN_DTYPE_F16)                                          \
			loop(a, i0, n, G, ZN_DTYPE_F16);                          \
		else if (ct_ == ZN_DTYPE_BF16)                                    \
			loop(a, i0, n, G, ZN_DTYPE_BF16);                         \
		else                                                              \
			loop(a, i0, n, G, NOCOPY);                                \
	} while (0)

/* The same for a loop over gradients alone, loop(g, gt, n) (the gradient
 * check): `return DISPATCH_G(sumsq_loop, g, gt, n);`. */
#define DISPATCH_G(loop, g, gt, n)                                                \
	((gt) == ZN_DTYPE_F16    ? loop(g, ZN_DTYPE_F16, n)                       \
	 : (gt) == ZN_DTYPE_BF16 ? loop(g, ZN_DTYPE_BF16, n)                      \
	                         : loop(g, ZN_DTYPE_F32, n))

/* The same for a loop with no copy and a trailing argument,
 * loop(a, i0, n, gt, x) (Lamb's first pass, x its sums):
 * `DISPATCH_GT(lamb1_loop, sums);`. */
#define DISPATCH_GT(loop, x)                                                      \
	do {                                                                      \
		if (a->gt == ZN_DTYPE_F16)                                        \
			loop(a, i0, n, ZN_DTYPE_F16, x);                          \
		else if (a->gt == ZN_DTYPE_BF16)                                  \
			loop(a, i0, n, ZN_DTYPE_BF16, x);                         \
		else                                                              \
			loop(a, i0, n, ZN_DTYPE_F32, x);                          \
	} while (0)

#endif
