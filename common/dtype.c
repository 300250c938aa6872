/* Element types (include/zinc/dtype.h): names, sizes and the fp32 <->
 * fp16/bf16 array conversions, element by element with zn_half.h (the
 * optimizers and the kernels have vectorized ones of their own, tested
 * against the same header). */
#include "zn_common.h"

#include <string.h>

#include "zinc/dtype.h"
#include "zn_half.h"

static const struct {
	const char *name;
	size_t size; /* bytes */
} dtypes[] = {
	[ZN_DTYPE_F32] = { "fp32", 4 },
	[ZN_DTYPE_F16] = { "fp16", 2 },
	[ZN_DTYPE_BF16] = { "bf16", 2 },
	[ZN_DTYPE_I32] = { "int32", 4 },
	[ZN_DTYPE_U8] = { "uint8", 1 },
};
_Static_assert(ZN_ARRAY_SIZE(dtypes) == ZN_DTYPE_COUNT, "a name and a size per dtype");

const char *zn_dtype_name(enum zn_dtype dtype)
{
	return (unsigned)dtype < ZN_DTYPE_COUNT ? dtypes[dtype].name : "?";
}

size_t zn_dtype_size(enum zn_dtype dtype)
{
	return (unsigned)dtype < ZN_DTYPE_COUNT ? dtypes[dtype].size : 0;
}

/* The cases both directions share: -EINVAL for a type that is not a float
 * one, a copy for fp32.  Returns 1 when the caller has a 16-bit type to
 * convert, else the call's result. */
static int trivial(const char *fn, void *dst, const void *src, enum zn_dtype dtype, size_t n)
{
	if (!zn_dtype_is_float(dtype))
		return zn_error(-EINVAL, "%s: dtype %s (%d) is not fp32, fp16 or bf16", fn,
				zn_dtype_name(dtype), (int)dtype);
	if (dtype != ZN_DTYPE_F32)
		return 1;
	if (n) /* memcpy wants valid pointers even for 0 bytes */
		memcpy(dst, src, n * sizeof(float));
	return 0;
}

/* The dtype is tested once, outside the loops: these run over whole
 * tensors every step (gradient accumulators, parameter homes), and a loop
 * with no branch in it is one the compiler can vectorize. */
int zn_dtype_from_f32(void *dst, enum zn_dtype dtype, const float *src, size_t n)
{
	int rc = trivial("zn_dtype_from_f32", dst, src, dtype, n);
	if (rc != 1)
		return rc;
	uint16_t *d = dst;
	if (dtype == ZN_DTYPE_F16)
		for (size_t i = 0; i < n; i++)
			d[i] = zn_f32_to_f16(src[i]);
	else
		for (size_t i = 0; i < n; i++)
			d[i] = zn_f32_to_bf16(src[i]);
	return 0;
}

int zn_dtype_to_f32(float *dst, const void *src, enum zn_dtype dtype, size_t n)
{
	int rc = trivial("zn_dtype_to_f32", dst, src, dtype, n);
	if (rc != 1)
		return rc;
	const uint16_t *s = src;
	if (dtype == ZN_DTYPE_F16)
		for (size_t i = 0; i < n; i++)
			dst[i] = zn_f16_to_f32(s[i]);
	else
		for (size_t i = 0; i < n; i++)
			dst[i] = zn_bf16_to_f32(s[i]);
	return 0;
}
