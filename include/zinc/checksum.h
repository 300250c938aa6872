/* zinc — the checksum of swapped bytes (the swap store's extents).
 *
 * XXH3-64 (xxHash, the Debian libxxhash), computed with the widest vector
 * unit the CPU has: the library's own build is baseline x86-64 (SSE2), and
 * every byte zinc swaps is checksummed when written and verified when read,
 * on the cores the compute shares.  The value is XXH3_64bits' to the bit,
 * whichever path computes it (the algorithm is defined on the bytes, not
 * the instructions).
 */
#ifndef ZINC_CHECKSUM_H
#define ZINC_CHECKSUM_H

#include <stddef.h>
#include <stdint.h>

#include "zinc/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* XXH3_64bits(p, n) (seed 0). */
ZN_API uint64_t zn_checksum64(const void *p, size_t n);

/* The path zn_checksum64 takes on this CPU: "avx2" or "baseline". */
ZN_API const char *zn_checksum64_path(void);

#ifdef __cplusplus
}
#endif
#endif
