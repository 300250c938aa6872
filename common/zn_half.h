/* fp16 and bf16 <-> fp32 for one element, exact and round-to-nearest-even:
 * the specification every other conversion in zinc is tested against (the
 * CPU optimizers' SIMD paths, the kernels' cast op on the CPU and the GPU,
 * the collectives' reductions, the checkpoint readers).  Included by every
 * module that converts; not installed.
 *
 *   fp16 -> fp32  exact; NaN stays NaN with its payload (quiet bit set):
 *                 what x86's vcvtph2ps does.
 *   fp32 -> fp16  round to nearest, ties to even; subnormals kept; values
 *                 >= 65520 (half-way above the largest, 65504) become Inf;
 *                 NaN becomes a quiet NaN keeping its top payload bits:
 *                 what x86's F16C/AVX-512 vcvtps2ph does.
 *   bf16 -> fp32  exact (a shift).
 *   fp32 -> bf16  round to nearest, ties to even; every NaN becomes 0x7fc0,
 *                 as PyTorch's c10::BFloat16 and DeepSpeed do.  The
 *                 AVX512-BF16 instruction vcvtneps2bf16 is not used: it
 *                 flushes subnormal inputs to zero, so it would disagree
 *                 with torch and with this file.
 *
 * ZN_HALF_FN prefixes every function, so that CUDA sources can define it as
 * `static inline __host__ __device__` before including this header. */
#ifndef ZN_HALF_H
#define ZN_HALF_H

#include <stdint.h>
#include <string.h>

#ifndef ZN_HALF_FN
#define ZN_HALF_FN static inline
#endif

ZN_HALF_FN uint32_t zn_f32_bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, sizeof(u));
	return u;
}

ZN_HALF_FN float zn_f32_from_bits(uint32_t u)
{
	float f;
	memcpy(&f, &u, sizeof(f));
	return f;
}

ZN_HALF_FN float zn_f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
	uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;

	if (e == 0x1f) /* Inf, or NaN made quiet with its payload kept */
		return zn_f32_from_bits(sign | 0x7f800000u | (m << 13) | (m ? 0x400000u : 0));
	if (e == 0) /* zero or subnormal: m * 2^-24, exact in fp32 */
		return zn_f32_from_bits(sign | zn_f32_bits((float)m * 0x1p-24f));
	/* normal: rebias the exponent from 15 to 127 */
	return zn_f32_from_bits(sign | ((e + 112u) << 23) | (m << 13));
}

ZN_HALF_FN uint16_t zn_f32_to_f16(float f)
{
	uint32_t x = zn_f32_bits(f);
	uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;

	if (ax > 0x7f800000u) /* NaN: quiet, top 10 payload bits kept */
		return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
	if (ax >= 0x477ff000u) /* >= 65520, halfway above 65504: rounds to Inf */
		return (uint16_t)(sign | 0x7c00u);
	if (ax >= 0x38800000u) {
		/* normal in fp16 (>= 2^-14): rebias 127 -> 15, then round the
		 * 13 dropped bits to nearest, ties to even (a carry into the
		 * exponent is right) */
		uint32_t r = ax - 0x38000000u;
		r += 0xfffu + ((r >> 13) & 1u);
		return (uint16_t)(sign | (r >> 13));
	}
	if (ax < 0x33000000u) /* below 2^-25 (half the smallest subnormal): +-0 */
		return (uint16_t)sign;
	/* subnormal in fp16: the value in units of 2^-24, rounded to nearest
	 * even; a carry into 0x400 is the smallest normal, as it should be */
	uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u;
	uint32_t shift = 126u - e; /* 14 .. 24 */
	uint32_t q = m >> shift, rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
	if (rem > half || (rem == half && (q & 1u)))
		q++;
	return (uint16_t)(sign | q);
}

ZN_HALF_FN float zn_bf16_to_f32(uint16_t b)
{
	return zn_f32_from_bits((uint32_t)b << 16);
}

ZN_HALF_FN uint16_t zn_f32_to_bf16(float f)
{
	uint32_t x = zn_f32_bits(f);

	if ((x & 0x7fffffffu) > 0x7f800000u)
		return 0x7fc0;
	/* round to nearest even on the 16 dropped bits; Inf stays Inf and the
	 * largest finite values round up to Inf, as they should */
	x += 0x7fffu + ((x >> 16) & 1u);
	return (uint16_t)(x >> 16);
}

#endif
