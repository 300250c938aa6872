/* zinc — element types: the one dtype enum that the CPU optimizers
 * (zinc/adam.h), the compute kernels (zinc/kernels.h), the collectives
 * (zinc/comm.h) and the trainer's configuration all take, with each type's
 * name and size and the fp32 <-> fp16/bf16 array conversions.
 *
 * Each module says which of the types it accepts: the optimizers and the
 * kernels work on the floating-point ones (F32, F16, BF16), the collectives
 * on all five.  The conversions are the ones every zinc module uses:
 *
 *   fp16 -> fp32  exact (NaN stays NaN, its payload kept, made quiet)
 *   fp32 -> fp16  round to nearest, ties to even; subnormals kept; values
 *                 >= 65520 become Inf; NaN stays a quiet NaN
 *   bf16 -> fp32  exact
 *   fp32 -> bf16  round to nearest, ties to even; every NaN becomes 0x7fc0
 *                 (what PyTorch's c10::BFloat16 gives)
 */
#ifndef ZINC_DTYPE_H
#define ZINC_DTYPE_H

#include <stdbool.h>
#include <stddef.h>

#include "zinc/common.h"

#ifdef __cplusplus
extern "C" {
#endif

enum zn_dtype {
	ZN_DTYPE_F32 = 0,  /* IEEE binary32 */
	ZN_DTYPE_F16 = 1,  /* IEEE binary16 */
	ZN_DTYPE_BF16 = 2, /* bfloat16: fp32's top 16 bits, rounded */
	ZN_DTYPE_I32 = 3,  /* int32_t; sums wrap modulo 2^32 */
	ZN_DTYPE_U8 = 4,   /* uint8_t; sums wrap modulo 2^8 */
	ZN_DTYPE_COUNT
};

/* "fp32", "fp16", "bf16", "int32", "uint8"; "?" for an unknown value. */
ZN_API const char *zn_dtype_name(enum zn_dtype dtype);
/* Bytes per element: 4, 2, 2, 4, 1; 0 for an unknown value. */
ZN_API size_t zn_dtype_size(enum zn_dtype dtype);

/* Whether dtype is F32, F16 or BF16: the types with fp32 arithmetic, which
 * the optimizers and the kernels accept. */
static inline bool zn_dtype_is_float(enum zn_dtype dtype)
{
	return dtype == ZN_DTYPE_F32 || dtype == ZN_DTYPE_F16 || dtype == ZN_DTYPE_BF16;
}

/* dst = n elements of `dtype` converted from the fp32 values in src (a copy
 * for F32), rounded as the header says.  The arrays must not overlap.
 * Returns 0, or -EINVAL (nothing written) when dtype is not a float type. */
ZN_API int zn_dtype_from_f32(void *dst, enum zn_dtype dtype, const float *src, size_t n);
/* dst = n elements of `dtype` in src widened to fp32 (exact).  Returns 0,
 * or -EINVAL (nothing written) when dtype is not a float type. */
ZN_API int zn_dtype_to_f32(float *dst, const void *src, enum zn_dtype dtype, size_t n);

#ifdef __cplusplus
}
#endif
#endif
