/* fp16 and bf16 <-> fp32 for one element, exact and round-to-nearest-even:
 * the specification of the cast op (cpu loops, cuda kernels and tests).
 *
 *   fp16 -> fp32  exact; NaN stays NaN with its payload (quiet bit set).
 *   fp32 -> fp16  round to nearest, ties to even; subnormals kept; values
 *                 >= 65520 (half-way above the largest, 65504) become Inf;
 *                 NaN becomes a quiet NaN keeping its top payload bits —
 *                 what x86's vcvtps2ph does.
 *   bf16 -> fp32  exact (a shift).
 *   fp32 -> bf16  round to nearest, ties to even; every NaN becomes 0x7fc0,
 *                 as PyTorch's c10::BFloat16.
 * Written with a function-like macro prefix so the .cu files can mark them
 * __host__ __device__. */
#ifndef ZN_KERNELS_KHALF_H
#define ZN_KERNELS_KHALF_H

#include <stdint.h>
#include <string.h>

#ifndef ZN_KH_FN
#define ZN_KH_FN static inline
#endif

ZN_KH_FN uint32_t zn_kh_bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, sizeof(u));
	return u;
}

ZN_KH_FN float zn_kh_float(uint32_t u)
{
	float f;
	memcpy(&f, &u, sizeof(f));
	return f;
}

ZN_KH_FN float zn_kh_f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
	uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;

	if (e == 0x1f) /* Inf, or NaN (made quiet, payload kept) */
		return zn_kh_float(sign | 0x7f800000u | (m << 13) | (m ? 0x400000u : 0));
	if (e == 0) /* zero or subnormal: m * 2^-24, exact in fp32 */
		return zn_kh_float(sign | zn_kh_bits((float)m * 0x1p-24f));
	/* normal: exponent bias 15 -> 127 */
	return zn_kh_float(sign | ((e + 112u) << 23) | (m << 13));
}

ZN_KH_FN uint16_t zn_kh_f32_to_f16(float f)
{
	uint32_t x = zn_kh_bits(f);
	uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;

	if (ax > 0x7f800000u) /* NaN: quiet, top 10 payload bits */
		return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
	if (ax >= 0x477ff000u) /* >= 65520: Inf */
		return (uint16_t)(sign | 0x7c00u);
	if (ax >= 0x38800000u) {
		/* normal in fp16 (>= 2^-14): rebias, then round the 13 dropped
		 * bits to nearest even (a carry into the exponent is right) */
		uint32_t r = ax - 0x38000000u;
		r += 0xfffu + ((r >> 13) & 1u);
		return (uint16_t)(sign | (r >> 13));
	}
	if (ax < 0x33000000u) /* < 2^-25, half the smallest subnormal: +-0 */
		return (uint16_t)sign;
	/* subnormal: the value in units of 2^-24, rounded to nearest even */
	uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u;
	uint32_t shift = 126u - e; /* 14 .. 24 */
	uint32_t q = m >> shift, rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
	if (rem > half || (rem == half && (q & 1u)))
		q++;
	return (uint16_t)(sign | q);
}

ZN_KH_FN float zn_kh_bf16_to_f32(uint16_t b)
{
	return zn_kh_float((uint32_t)b << 16);
}

ZN_KH_FN uint16_t zn_kh_f32_to_bf16(float f)
{
	uint32_t x = zn_kh_bits(f);

	if ((x & 0x7fffffffu) > 0x7f800000u)
		return 0x7fc0;
	/* round to nearest even on the 16 dropped bits; the largest finite
	 * values round up to Inf, as they should */
	x += 0x7fffu + ((x >> 16) & 1u);
	return (uint16_t)(x >> 16);
}

#endif
