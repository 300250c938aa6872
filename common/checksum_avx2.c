/* xxHash's XXH3-64 inlined from the library's header and compiled for
 * AVX2 (this file alone: -mavx2), called only when the CPU has it. */
#define XXH_INLINE_ALL
#define XXH_VECTOR XXH_AVX2
#include <stddef.h>
#include <stdint.h>
#include <xxhash.h>

uint64_t zn_checksum64_avx2(const void *p, size_t n);

uint64_t zn_checksum64_avx2(const void *p, size_t n)
{
	return XXH3_64bits(p, n);
}
