/* Private structures of the io_uring engine, shared by aio.c and file.c. */
#ifndef ZN_AIO_INTERNAL_H
#define ZN_AIO_INTERNAL_H

#include "zn_common.h"

#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>

#include "zinc/aio.h"

/* Slots of the sparse fixed-buffer and fixed-file tables every ring
 * registers at start-up.  A registration takes one buffer slot per GiB. */
#define ZN_AIO_MAX_FIXED_BUFS 1024u
#define ZN_AIO_MAX_FIXED_FILES 1024u
/* The kernel refuses a single registered buffer above 1 GiB. */
#define ZN_AIO_FIXED_CHUNK ((size_t)1 << 30)

struct zn_aio_file {
	struct zn_aio *aio;
	int fd;
	bool direct;        /* opened with O_DIRECT */
	uint32_t align;     /* file offset and length alignment, bytes */
	uint32_t mem_align; /* buffer address alignment, bytes */
	int fixed_slot;     /* index in every ring's file table, or -1 */
	char path[];
};

/* Run fn(ring, arg) on every ring's worker thread (registration calls must
 * come from the thread that owns a SINGLE_ISSUER ring) and collect the
 * results: 0 when all succeeded, else the first error. */
struct ring;
int zn_aio_on_rings(struct zn_aio *aio, int (*fn)(struct ring *, void *), void *arg);

struct io_uring *zn_aio_ring_uring(struct ring *r);
bool zn_aio_fixed_files_ok(const struct zn_aio *aio);
int zn_aio_file_slot_get(struct zn_aio *aio);
void zn_aio_file_slot_put(struct zn_aio *aio, int slot);

#endif
