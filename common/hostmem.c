/* Large, aligned host allocations (see include/zinc/hostmem.h). */
#include "zn_common.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "zinc/hostmem.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

void *zn_hostmem_alloc(size_t bytes, unsigned flags)
{
	char sz[32];

	if (bytes == 0) {
		zn_set_error("zn_hostmem_alloc: zero bytes requested");
		return NULL;
	}
	size_t len = ZN_ALIGN_UP(bytes, ZN_HOSTMEM_ALIGN);
	/* Over-map by one alignment unit and trim both ends, so the start
	 * falls on a 2 MiB boundary where the kernel can place a huge page. */
	size_t map_len = len + ZN_HOSTMEM_ALIGN;
	uint8_t *raw = mmap(NULL, map_len, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (raw == MAP_FAILED) {
		int e = errno;
		zn_set_error("cannot map %s of host memory: %s",
			     zn_format_size(len, sz, sizeof(sz)), strerror(e));
		return NULL;
	}
	uintptr_t start = ZN_ALIGN_UP((uintptr_t)raw, ZN_HOSTMEM_ALIGN);
	uint8_t *p = (uint8_t *)start;
	if (p > raw)
		munmap(raw, (size_t)(p - raw));
	size_t tail = (size_t)((raw + map_len) - (p + len));
	if (tail)
		munmap(p + len, tail);

	if (flags & ZN_HOSTMEM_HUGE) {
		/* THP in "madvise" mode (the common default) only backs regions
		 * that ask; in "never" mode this is a harmless no-op. */
		if (madvise(p, len, MADV_HUGEPAGE) != 0)
			zn_debug("madvise(MADV_HUGEPAGE) failed: %s", strerror(errno));
	}
	if (flags & ZN_HOSTMEM_NOHUGE) {
		if (madvise(p, len, MADV_NOHUGEPAGE) != 0)
			zn_debug("madvise(MADV_NOHUGEPAGE) failed: %s", strerror(errno));
	}
	if (flags & ZN_HOSTMEM_PREFAULT) {
		if (madvise(p, len, MADV_POPULATE_WRITE) != 0) {
			/* Older kernel: touch one byte per 4 KiB page. */
			long page = sysconf(_SC_PAGESIZE);
			for (size_t off = 0; off < len; off += (size_t)page)
				((volatile uint8_t *)p)[off] = 0;
		}
	}
	if (flags & ZN_HOSTMEM_LOCK) {
		if (mlock(p, len) != 0)
			zn_warn("cannot lock %s of host memory (%s): raise the limit "
				"with `ulimit -l` (RLIMIT_MEMLOCK); continuing unlocked",
				zn_format_size(len, sz, sizeof(sz)), strerror(errno));
	}
	return p;
}

void zn_hostmem_free(void *p, size_t bytes)
{
	if (p)
		munmap(p, ZN_ALIGN_UP(bytes, ZN_HOSTMEM_ALIGN));
}

double zn_hostmem_huge_fraction(const void *p, size_t bytes)
{
	FILE *f = fopen("/proc/self/smaps", "re");
	char line[512];
	uintptr_t lo = (uintptr_t)p, hi = lo + bytes;
	uintptr_t vstart = 0, vend = 0;
	uint64_t huge = 0;
	bool in_range = false;

	if (!f || bytes == 0) {
		if (f)
			fclose(f);
		return -1.0;
	}
	while (fgets(line, sizeof(line), f)) {
		uintptr_t a, b;
		unsigned long long kb;
		if (sscanf(line, "%" SCNxPTR "-%" SCNxPTR " ", &a, &b) == 2 &&
		    strchr(line, '-') < strchr(line, ' ')) {
			vstart = a;
			vend = b;
			in_range = vend > lo && vstart < hi;
		} else if (in_range && sscanf(line, "AnonHugePages: %llu kB", &kb) == 1) {
			/* Count only the part of the VMA inside the range; huge
			 * pages are spread evenly enough for a fraction. */
			uint64_t vlen = vend - vstart;
			uint64_t overlap = ZN_MIN(vend, hi) - ZN_MAX(vstart, lo);
			huge += (uint64_t)((double)kb * 1024.0 * (double)overlap / (double)vlen);
		}
	}
	fclose(f);
	double frac = (double)huge / (double)bytes;
	return frac > 1.0 ? 1.0 : frac;
}

void *zn_hostmem_alloc_arrays(size_t count, const size_t *bytes, unsigned flags, void **arrays,
			      size_t *region_bytes)
{
	size_t total = 0;

	if (count == 0 || !bytes || !arrays || !region_bytes) {
		zn_set_error("zn_hostmem_alloc_arrays: %s", count == 0 ? "no arrays requested"
								       : "NULL argument");
		return NULL;
	}
	/* Offsets first (kept in arrays[] until the region exists): array k
	 * starts after the 64-rounded sizes of the arrays before it and a
	 * ZN_HOSTMEM_STAGGER gap after each. */
	for (size_t k = 0; k < count; k++) {
		size_t len = ZN_ALIGN_UP(bytes[k], 64);
		size_t gap = k ? ZN_HOSTMEM_STAGGER : 0;
		if (len < bytes[k] || total + gap < total || total + gap + len < total + gap) {
			zn_set_error("zn_hostmem_alloc_arrays: array sizes overflow");
			return NULL;
		}
		total += gap;
		arrays[k] = (void *)(uintptr_t)total;
		total += len;
	}
	uint8_t *base = zn_hostmem_alloc(total ? total : 1, flags);
	if (!base)
		return NULL;
	for (size_t k = 0; k < count; k++)
		arrays[k] = base + (uintptr_t)arrays[k];
	*region_bytes = ZN_ALIGN_UP(total ? total : 1, ZN_HOSTMEM_ALIGN);
	return base;
}
