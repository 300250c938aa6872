/* XXH3-64, by the widest path this CPU runs (see include/zinc/checksum.h):
 * checksum_avx2.c's copy of xxHash's AVX2 loop, or the library's. */
#include "zn_common.h"

#include <pthread.h>
#include <xxhash.h>

#include "zinc/checksum.h"
#include "zinc/cpu.h"

#if ZN_CHECKSUM_HAVE_AVX2
uint64_t zn_checksum64_avx2(const void *p, size_t n);
#endif

static XXH64_hash_t (*impl)(const void *, size_t) = XXH3_64bits;
static const char *impl_name = "baseline";
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void choose(void)
{
#if ZN_CHECKSUM_HAVE_AVX2
	if (zn_cpu_has(ZN_CPU_AVX2)) {
		impl = zn_checksum64_avx2;
		impl_name = "avx2";
	}
#endif
}

uint64_t zn_checksum64(const void *p, size_t n)
{
	pthread_once(&once, choose);
	return impl(p, n);
}

const char *zn_checksum64_path(void)
{
	pthread_once(&once, choose);
	return impl_name;
}
