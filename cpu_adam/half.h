/* Scalar fp16 and bf16 conversions, exact and round-to-nearest-even: the
 * specification the SIMD conversions are tested against.
 *
 * fp32 -> fp16 gives what x86's F16C/AVX-512 vcvtps2ph gives with
 * round-to-nearest-even (subnormals kept, overflow to Inf, NaN quieted
 * with its top payload bits kept); fp16 -> fp32 is exact (vcvtph2ps).
 * bf16 -> fp32 is a shift; fp32 -> bf16 rounds to nearest even and maps
 * every NaN to 0x7fc0, as PyTorch's c10::BFloat16 and DeepSpeed do.  The
 * AVX512-BF16 instruction vcvtneps2bf16 is not used: it flushes subnormal
 * inputs to zero, so it would disagree with torch and with this file. */
#ifndef ZN_ADAM_HALF_H
#define ZN_ADAM_HALF_H

#include <stdint.h>
#include <string.h>

static inline uint32_t zn_f32_bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, sizeof(u));
	return u;
}

static inline float zn_f32_from_bits(uint32_t u)
{
	float f;
	memcpy(&f, &u, sizeof(f));
	return f;
}

static inline float zn_f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16;
	uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;

	if (e == 0x1f) /* Inf, or NaN made quiet with its payload kept */
		return zn_f32_from_bits(sign | 0x7f800000 | (m << 13) | (m ? 0x400000 : 0));
	if (e == 0) {
		/* zero or subnormal: m * 2^-24, exact in fp32 */
		float f = (float)m * 0x1p-24f;
		return zn_f32_from_bits(sign | zn_f32_bits(f));
	}
	/* normal: rebias the exponent from 15 to 127 */
	return zn_f32_from_bits(sign | ((e + 112) << 23) | (m << 13));
}

static inline uint16_t zn_f32_to_f16(float f)
{
	uint32_t x = zn_f32_bits(f);
	uint32_t sign = (x >> 16) & 0x8000;
	uint32_t ax = x & 0x7fffffff;

	if (ax > 0x7f800000) /* NaN: quiet, top 10 payload bits kept */
		return (uint16_t)(sign | 0x7e00 | ((ax >> 13) & 0x3ff));
	if (ax >= 0x477ff000) /* >= 65520, halfway above 65504: rounds to Inf */
		return (uint16_t)(sign | 0x7c00);
	if (ax >= 0x38800000) {
		/* normal in fp16 (>= 2^-14): rebias 127 -> 15, then round the
		 * 13 dropped bits to nearest, ties to even */
		uint32_t r = ax - 0x38000000;
		r += 0xfff + ((r >> 13) & 1);
		return (uint16_t)(sign | (r >> 13));
	}
	if (ax < 0x33000000) /* below 2^-25 (half the smallest subnormal): 0 */
		return (uint16_t)sign;
	/* subnormal in fp16: the value in units of 2^-24, rounded to nearest
	 * even; a carry into 0x400 is the smallest normal, as it should be */
	uint32_t e = ax >> 23, m = (ax & 0x7fffff) | 0x800000;
	uint32_t shift = 126 - e; /* 14..24 */
	uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
	if (rem > half || (rem == half && (q & 1)))
		q++;
	return (uint16_t)(sign | q);
}

static inline float zn_bf16_to_f32(uint16_t b)
{
	return zn_f32_from_bits((uint32_t)b << 16);
}

static inline uint16_t zn_f32_to_bf16(float f)
{
	uint32_t x = zn_f32_bits(f);

	if ((x & 0x7fffffff) > 0x7f800000)
		return 0x7fc0;
	/* round to nearest even on the 16 dropped bits; Inf stays Inf and
	 * the largest finite values round up to Inf, as they should */
	x += 0x7fff + ((x >> 16) & 1);
	return (uint16_t)(x >> 16);
}

#endif
