/* The device ops table and the state every backend shares.  Not installed.
 *
 * Each backend (cpu.c, cuda.c) is one const table of functions filled with
 * designated initializers; device.c picks the table by kind once, when the
 * device is opened, so no other code asks which backend it runs on and a
 * new backend is a new table.
 *
 * device.c owns what does not depend on the backend: argument checks, the
 * memory budget and its accounting (a pointer -> size table), the list of
 * streams, and the sticky host-function errors.  A backend only moves
 * bytes and runs queues. */
#ifndef ZN_DEVICE_INTERNAL_H
#define ZN_DEVICE_INTERNAL_H

#include "zn_common.h"

#include <pthread.h>

#include "zinc/device.h"

struct zn_device_ops {
	const char *kind; /* "cpu", "cuda" */
	bool host_accessible;
	/* Set dev->impl, dev->name and, when dev->limit is 0, the default
	 * budget.  Returns 0 or -errno with the last error set. */
	int (*open)(struct zn_device *dev, const struct zn_device_params *c);
	void (*close)(struct zn_device *dev);
	/* `bytes` already rounded up to ZN_DEVICE_ALIGN and within budget. */
	int (*mem_alloc)(struct zn_device *dev, size_t bytes, void **out);
	void (*mem_free)(struct zn_device *dev, void *p, size_t bytes);
	/* s == NULL: synchronous. */
	int (*memset)(struct zn_device *dev, void *p, int value, size_t bytes, struct zn_stream *s);
	int (*copy)(struct zn_device *dev, void *dst, const void *src, size_t bytes,
		    enum zn_copy_kind kind, struct zn_stream *s);
	int (*host_register)(struct zn_device *dev, void *p, size_t bytes);
	int (*host_unregister)(struct zn_device *dev, void *p);
	/* Set s->impl. */
	int (*stream_create)(struct zn_stream *s);
	/* Wait for the queue, then free s->impl. */
	void (*stream_destroy)(struct zn_stream *s);
	int (*stream_synchronize)(struct zn_stream *s);
	int (*stream_query)(struct zn_stream *s); /* 0 or -EBUSY */
	int (*launch_host)(struct zn_stream *s, zn_device_host_fn fn, void *arg);
	int (*event_create)(struct zn_event *e);
	void (*event_destroy)(struct zn_event *e);
	int (*event_record)(struct zn_event *e, struct zn_stream *s);
	int (*stream_wait_event)(struct zn_stream *s, struct zn_event *e);
	int (*event_synchronize)(struct zn_event *e);
	int (*event_query)(struct zn_event *e);
	void (*kernels_params)(struct zn_device *dev, struct zn_stream *s,
			       struct zn_kernels_params *p);
};

/* Allocation table: open addressing, linear probing, keyed by address. */
struct zn_ptr_slot {
	uintptr_t key; /* 0: empty */
	size_t bytes;
};

struct zn_device {
	const struct zn_device_ops *ops;
	void *impl;
	int ordinal;
	char name[128];

	pthread_mutex_t lock; /* the fields below */
	uint64_t limit, in_use, peak;
	struct zn_ptr_slot *slots;
	size_t slot_cap, slot_used; /* cap: a power of two */
	/* Freed blocks kept for reuse (a caching allocator, as every GPU
	 * framework has: offload frees and allocates the same layer-sized
	 * blocks all the time, and a fresh cudaMalloc or mmap each time costs
	 * a device synchronization or page faults).  Counted against the
	 * limit; released when an allocation needs the room. */
	struct zn_cached_block { void *p; size_t bytes; } *cache;
	size_t ncache, cache_cap;
	uint64_t cached;
	struct zn_stream *streams; /* list through zn_stream.next */
	struct zn_event *events;   /* list through zn_event.next */
};

struct zn_stream {
	struct zn_device *dev;
	void *impl;
	char name[32];
	struct zn_stream *next, *prev;

	pthread_mutex_t err_lock; /* err, errmsg */
	int err;                  /* first failure since the last synchronize */
	char errmsg[512];
};

struct zn_event {
	struct zn_device *dev;
	void *impl;
	struct zn_event *next, *prev;
};

/* Record a host function's failure on its stream (the first one wins);
 * the message is the calling thread's last error. */
void zn_stream_fail(struct zn_stream *s, int err);

extern const struct zn_device_ops zn_device_cpu_ops;
#if ZN_HAVE_CUDA
extern const struct zn_device_ops zn_device_cuda_ops;
#endif

#endif
