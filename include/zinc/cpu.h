/* zinc — CPU feature probe.
 *
 * What the processor and the operating system together allow: an AVX-512
 * instruction needs both the CPUID bit and the OS saving the ZMM and opmask
 * registers on context switches (XCR0, read with XGETBV).  Probed once, on
 * first use; thread-safe.  On a machine that is not x86-64 every feature
 * reads false and only portable code runs.
 */
#ifndef ZINC_CPU_H
#define ZINC_CPU_H

#include <stdbool.h>

#include "zinc/common.h"

#ifdef __cplusplus
extern "C" {
#endif

enum zn_cpu_feature {
	ZN_CPU_AVX = 0,    /* AVX, with YMM state enabled by the OS */
	ZN_CPU_AVX2,
	ZN_CPU_FMA,        /* FMA3 */
	ZN_CPU_F16C,       /* fp16 <-> fp32 conversions */
	ZN_CPU_AVX512F,    /* with ZMM and opmask state enabled by the OS */
	ZN_CPU_AVX512BW,
	ZN_CPU_AVX512VL,
	ZN_CPU_AVX512DQ,
	ZN_CPU_AVX512BF16, /* vcvtneps2bf16 and friends */
	ZN_CPU_FEATURE_COUNT
};

/* True when the CPU has `feature` and the OS enables its register state. */
ZN_API bool zn_cpu_has(enum zn_cpu_feature feature);

/* Lower-case name of a feature ("avx512f"), or "?" for an unknown value. */
ZN_API const char *zn_cpu_feature_name(enum zn_cpu_feature feature);

#ifdef __cplusplus
}
#endif
#endif
