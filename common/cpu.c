/* CPU feature probe: CPUID for what the processor has, XGETBV for what the
 * operating system saves across context switches (see include/zinc/cpu.h). */
#include "zn_common.h"

#include <pthread.h>

#include "zinc/cpu.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

static bool features[ZN_CPU_FEATURE_COUNT];
static pthread_once_t probe_once = PTHREAD_ONCE_INIT;

static const char *const names[] = {
	[ZN_CPU_AVX] = "avx",
	[ZN_CPU_AVX2] = "avx2",
	[ZN_CPU_FMA] = "fma",
	[ZN_CPU_F16C] = "f16c",
	[ZN_CPU_AVX512F] = "avx512f",
	[ZN_CPU_AVX512BW] = "avx512bw",
	[ZN_CPU_AVX512VL] = "avx512vl",
	[ZN_CPU_AVX512DQ] = "avx512dq",
	[ZN_CPU_AVX512BF16] = "avx512bf16",
};
_Static_assert(ZN_ARRAY_SIZE(names) == ZN_CPU_FEATURE_COUNT, "a name per feature");

#if defined(__x86_64__) || defined(__i386__)
/* XGETBV without -mxsave: the intrinsic would need that flag on this file,
 * and this file must stay baseline x86-64.  Only called after CPUID said
 * OSXSAVE, so the instruction exists. */
static uint64_t xgetbv0(void)
{
	uint32_t eax, edx;

	__asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
	return ((uint64_t)edx << 32) | eax;
}

static void probe(void)
{
	unsigned a, b, c, d;
	unsigned max_leaf = __get_cpuid_max(0, NULL);

	if (max_leaf < 1 || !__get_cpuid(1, &a, &b, &c, &d))
		return;
	bool osxsave = c & (1u << 27);
	bool avx = c & (1u << 28), fma = c & (1u << 12), f16c = c & (1u << 29);
	uint64_t xcr0 = osxsave ? xgetbv0() : 0;
	/* XCR0 bits 1 (SSE) and 2 (AVX upper halves): YMM state saved. */
	bool ymm_os = (xcr0 & 0x6) == 0x6;
	/* Bits 5-7: opmask, upper ZMM0-15, ZMM16-31. */
	bool zmm_os = ymm_os && (xcr0 & 0xe0) == 0xe0;

	features[ZN_CPU_AVX] = avx && ymm_os;
	features[ZN_CPU_FMA] = fma && ymm_os;
	features[ZN_CPU_F16C] = f16c && ymm_os;
	if (max_leaf < 7)
		return;
	__cpuid_count(7, 0, a, b, c, d);
	unsigned max_sub = a;
	features[ZN_CPU_AVX2] = (b & (1u << 5)) && ymm_os;
	features[ZN_CPU_AVX512F] = (b & (1u << 16)) && zmm_os;
	bool f512 = features[ZN_CPU_AVX512F];
	features[ZN_CPU_AVX512DQ] = f512 && (b & (1u << 17));
	features[ZN_CPU_AVX512BW] = f512 && (b & (1u << 30));
	features[ZN_CPU_AVX512VL] = f512 && (b & (1u << 31));
	if (max_sub >= 1) {
		__cpuid_count(7, 1, a, b, c, d);
		features[ZN_CPU_AVX512BF16] = f512 && (a & (1u << 5));
	}
}
#else
static void probe(void)
{
}
#endif

bool zn_cpu_has(enum zn_cpu_feature feature)
{
	if ((unsigned)feature >= ZN_CPU_FEATURE_COUNT)
		return false;
	pthread_once(&probe_once, probe);
	return features[feature];
}

const char *zn_cpu_feature_name(enum zn_cpu_feature feature)
{
	if ((unsigned)feature >= ZN_CPU_FEATURE_COUNT)
		return "?";
	return names[feature];
}
