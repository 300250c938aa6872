/* zinc — host memory for large arrays and I/O buffers.
 *
 * Every large host array zinc uses (I/O buffers, pinned pools, optimizer
 * state) comes from here: 2 MiB-aligned, transparent huge pages requested,
 * optionally prefaulted and page-locked.  Alignment to 2 MiB satisfies every
 * O_DIRECT alignment, and huge pages matter for I/O: a read into one
 * physically contiguous 2 MiB page needs one DMA segment where 4 KiB pages
 * need 512, and throughput on virtual disks follows that closely.
 */
#ifndef ZINC_HOSTMEM_H
#define ZINC_HOSTMEM_H

#include <stdbool.h>
#include <stddef.h>

#include "zinc/common.h"

#ifdef __cplusplus
extern "C" {
#endif

enum zn_hostmem_flags {
	ZN_HOSTMEM_HUGE = 1u << 0,     /* ask for transparent huge pages (madvise) */
	ZN_HOSTMEM_PREFAULT = 1u << 1, /* fault every page in now, not on first touch */
	ZN_HOSTMEM_LOCK = 1u << 2,     /* mlock; failure is a warning, not an error */
	ZN_HOSTMEM_NOHUGE = 1u << 3,   /* refuse huge pages even with THP "always" */
};

#define ZN_HOSTMEM_ALIGN ((size_t)2 << 20) /* bytes */

/* Allocate `bytes` (rounded up to 2 MiB) of zeroed memory aligned to
 * ZN_HOSTMEM_ALIGN.  Returns NULL and sets the last error on failure. */
ZN_API void *zn_hostmem_alloc(size_t bytes, unsigned flags);

/* Free memory from zn_hostmem_alloc; `bytes` as passed to it. */
ZN_API void zn_hostmem_free(void *p, size_t bytes);

/* Fraction (0..1) of [p, p+bytes) backed by transparent huge pages right now,
 * from /proc/self/smaps; -1 when it cannot be read. */
ZN_API double zn_hostmem_huge_fraction(const void *p, size_t bytes);

/* Gap (bytes) left after each array by zn_hostmem_alloc_arrays: 17 pages
 * and 3 cache lines, a multiple of 64 and of no larger power of two. */
#define ZN_HOSTMEM_STAGGER ((size_t)(17 * 4096 + 3 * 64))

/* Several arrays streamed together (optimizer state: params, grads, m, v)
 * in one region from zn_hostmem_alloc(..., flags): array k is bytes[k] long,
 * 64-byte aligned, and starts ZN_HOSTMEM_STAGGER bytes after the end of
 * array k-1 (rounded up to 64).  Arrays laid out a power of two apart (four
 * 256 MiB arrays back to back) put element i of every array on the same
 * cache sets and DRAM banks and ran a 4-read/3-write stream at half speed on
 * the development machine; staggered ones did not.  Stores the arrays'
 * starts in arrays[0..count-1] and the region's length in *region_bytes;
 * returns the region, to free with zn_hostmem_free(region, *region_bytes),
 * or NULL and sets the last error. */
ZN_API void *zn_hostmem_alloc_arrays(size_t count, const size_t *bytes, unsigned flags,
				     void **arrays, size_t *region_bytes);

#ifdef __cplusplus
}
#endif
#endif
