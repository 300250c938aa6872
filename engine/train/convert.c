/* The trainer's two conversions that are not plain casts: adding fp32
 * gradients into a 16-bit host accumulator (common/zn_half.h: round to
 * nearest even, the specification the kernels' conversions are tested
 * against), and rounding fp32 values on the device to the training dtype's
 * precision and range.  Plain casts are zinc/dtype.h's. */
#include "zn_common.h"

#include "train/internal.h"

#include "zn_half.h"

#include <string.h>

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

/* 16-bit values (dtype sdt) widened a block at a time for the two below:
 * fp32 is exact for both 16-bit formats, so these give what adding or
 * converting their fp32 values gives. */
#define WIDEN_BLOCK 2048

void tr_host_accumulate_from(void *acc, enum zn_dtype dt, const void *add, enum zn_dtype sdt,
			     size_t n)
{
	float w[WIDEN_BLOCK];
	const size_t asz = zn_dtype_size(dt), ssz = zn_dtype_size(sdt);
	for (size_t i = 0; i < n; i += WIDEN_BLOCK) {
		const size_t k = ZN_MIN(n - i, (size_t)WIDEN_BLOCK);
		(void)zn_dtype_to_f32(w, (const uint8_t *)add + i * ssz, sdt, k);
		tr_host_accumulate((uint8_t *)acc + i * asz, dt, w, k);
	}
}

void tr_host_convert(void *dst, enum zn_dtype dt, const void *src, enum zn_dtype sdt, size_t n)
{
	float w[WIDEN_BLOCK];
	const size_t dsz = zn_dtype_size(dt), ssz = zn_dtype_size(sdt);
	if (dt == sdt) {
		memcpy(dst, src, n * dsz);
		return;
	}
	for (size_t i = 0; i < n; i += WIDEN_BLOCK) {
		const size_t k = ZN_MIN(n - i, (size_t)WIDEN_BLOCK);
		(void)zn_dtype_to_f32(w, (const uint8_t *)src + i * ssz, sdt, k);
		(void)zn_dtype_from_f32((uint8_t *)dst + i * dsz, dt, w, k);
	}
}

/* Round n fp32 values on the device to the training dtype's precision and
 * range (fp16 overflow becomes Inf), keeping fp32 storage. */
int tr_round_to_dtype(struct zn_trainer *t, void *x, size_t n)
{
	if (t->zr.dtype == ZN_DTYPE_F32)
		return 0;
	int rc = t->k->cast(t->kctx, t->round_buf, t->zr.dtype, x, ZN_DTYPE_F32, n);
	if (!rc)
		rc = t->k->cast(t->kctx, x, ZN_DTYPE_F32, t->round_buf, t->zr.dtype, n);
	return rc;
}
