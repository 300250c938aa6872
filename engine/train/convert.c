/* The trainer's dtype conversions: fp32 to and from the 16-bit training
 * dtypes on the host (common/zn_half.h: round to nearest even, the
 * specification the kernels' conversions are tested against), the same
 * dtype in the CPU Adam's and the comm's enums, and rounding on the
 * device to the training dtype's precision. */
#include "zn_common.h"

#include "train/internal.h"

#include <string.h>

#include "zn_half.h"

/* n fp32 values to dst in dtype dt (a copy for fp32). */
void tr_host_from_f32(void *dst, enum zn_dtype dt, const float *src, size_t n)
{
	uint16_t *o = dst;
	if (dt == ZN_DTYPE_F32)
		memcpy(dst, src, n * 4);
	else if (dt == ZN_DTYPE_BF16)
		for (size_t i = 0; i < n; i++)
			o[i] = zn_f32_to_bf16(src[i]);
	else
		for (size_t i = 0; i < n; i++)
			o[i] = zn_f32_to_f16(src[i]);
}

/* acc (dtype dt) += add, rounding the sum to dt. */
void tr_host_accumulate(void *acc, enum zn_dtype dt, const float *add, size_t n)
{
	if (dt == ZN_DTYPE_F32) {
		float *a = acc;
		for (size_t i = 0; i < n; i++)
			a[i] += add[i];
	} else if (dt == ZN_DTYPE_BF16) {
		uint16_t *a = acc;
		for (size_t i = 0; i < n; i++)
			a[i] = zn_f32_to_bf16(zn_bf16_to_f32(a[i]) + add[i]);
	} else {
		uint16_t *a = acc;
		for (size_t i = 0; i < n; i++)
			a[i] = zn_f32_to_f16(zn_f16_to_f32(a[i]) + add[i]);
	}
}

/* n host values of dtype dt into fp32. */
void tr_host_to_f32(float *dst, const void *src, enum zn_dtype dt, size_t n)
{
	const uint16_t *h = src;
	if (dt == ZN_DTYPE_F32)
		memcpy(dst, src, n * 4);
	else if (dt == ZN_DTYPE_BF16)
		for (size_t i = 0; i < n; i++)
			dst[i] = zn_bf16_to_f32(h[i]);
	else
		for (size_t i = 0; i < n; i++)
			dst[i] = zn_f16_to_f32(h[i]);
}

enum zn_adam_dtype tr_adam_dtype(enum zn_dtype d)
{
	return d == ZN_DTYPE_BF16 ? ZN_ADAM_BF16 : d == ZN_DTYPE_F16 ? ZN_ADAM_FP16 : ZN_ADAM_FP32;
}

enum zn_comm_dtype tr_comm_dtype(enum zn_dtype d)
{
	return d == ZN_DTYPE_BF16 ? ZN_COMM_BF16 : d == ZN_DTYPE_F16 ? ZN_COMM_F16 : ZN_COMM_F32;
}

/* Round n fp32 values on the device to the training dtype's precision and
 * range (fp16 overflow becomes Inf), keeping fp32 storage. */
int tr_round_to_dtype(struct zn_trainer *t, void *x, size_t n)
{
	if (t->dtype == ZN_DTYPE_F32)
		return 0;
	int rc = t->k->cast(t->kctx, t->round_buf, t->dtype, x, ZN_DTYPE_F32, n);
	if (!rc)
		rc = t->k->cast(t->kctx, x, ZN_DTYPE_F32, t->round_buf, t->dtype, n);
	return rc;
}
