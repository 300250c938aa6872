/* Devices: the backend-independent half (include/zinc/device.h).
 *
 * Argument checks, the memory budget, the allocation table and the stream
 * list live here, so both backends enforce and report them the same way. */
#include "zn_build.h"

#include "device/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct zn_device_ops *const backends[] = {
	&zn_device_cpu_ops,
#if ZN_HAVE_CUDA
	&zn_device_cuda_ops,
#endif
};

void zn_device_params_default(struct zn_device_params *c)
{
	memset(c, 0, sizeof(*c));
	c->kind = "cpu";
}

struct zn_device *zn_device_create(const struct zn_device_params *c)
{
	struct zn_device_params def;

	if (!c) {
		zn_device_params_default(&def);
		c = &def;
	}
	const char *kind = c->kind ? c->kind : "cpu";
	const struct zn_device_ops *ops = NULL;
	for (size_t i = 0; i < ZN_ARRAY_SIZE(backends); i++)
		if (strcmp(backends[i]->kind, kind) == 0)
			ops = backends[i];
	if (!ops) {
		if (strcmp(kind, "cuda") == 0)
			zn_set_error("device kind \"cuda\": this zinc was built without the CUDA "
				     "toolkit: use device kind \"cpu\" or rebuild with -Dcuda=enabled");
		else
			zn_set_error("device kind \"%s\" is unknown: use \"cpu\"%s", kind,
				     ZN_HAVE_CUDA ? " or \"cuda\"" : "");
		return NULL;
	}
	if (c->ordinal < 0) {
		zn_set_error("device ordinal %d is negative", c->ordinal);
		return NULL;
	}

	struct zn_device *dev = calloc(1, sizeof(*dev));
	if (!dev) {
		zn_set_error("device: out of host memory");
		return NULL;
	}
	dev->ops = ops;
	dev->ordinal = c->ordinal;
	dev->limit = c->memory_limit;
	dev->slot_cap = 64;
	dev->slots = calloc(dev->slot_cap, sizeof(*dev->slots));
	if (!dev->slots) {
		free(dev);
		zn_set_error("device: out of host memory");
		return NULL;
	}
	pthread_mutex_init(&dev->lock, NULL);
	snprintf(dev->name, sizeof(dev->name), "%s", ops->kind);
	if (ops->open(dev, c) < 0) {
		pthread_mutex_destroy(&dev->lock);
		free(dev->slots);
		free(dev);
		return NULL;
	}
	return dev;
}

void zn_device_destroy(struct zn_device *dev)
{
	if (!dev)
		return;
	while (dev->streams)
		zn_device_stream_destroy(dev->streams);
	while (dev->events)
		zn_device_event_destroy(dev->events);
	for (size_t i = 0; i < dev->slot_cap; i++) {
		struct zn_ptr_slot *sl = &dev->slots[i];
		if (!sl->key)
			continue;
		zn_warn("device %s: %zu bytes at %p were never freed (freed at device destroy)",
			dev->name, sl->bytes, (void *)sl->key);
		dev->ops->mem_free(dev, (void *)sl->key, sl->bytes);
	}
	for (size_t i = 0; i < dev->ncache; i++)
		dev->ops->mem_free(dev, dev->cache[i].p, dev->cache[i].bytes);
	free(dev->cache);
	dev->ops->close(dev);
	pthread_mutex_destroy(&dev->lock);
	free(dev->slots);
	free(dev);
}

const char *zn_device_kind(const struct zn_device *dev)
{
	return dev->ops->kind;
}

const char *zn_device_name(const struct zn_device *dev)
{
	return dev->name;
}

bool zn_device_host_accessible(const struct zn_device *dev)
{
	return dev->ops->host_accessible;
}

/* ---- allocation table ---------------------------------------------------
 * Called with dev->lock held.  Hash: Fibonacci multiply of the address
 * (allocations are 256-byte aligned, so the low bits are all zero). */

static size_t slot_of(const struct zn_device *dev, uintptr_t key)
{
	return (size_t)(((uint64_t)key * 0x9e3779b97f4a7c15ull) >> 20) & (dev->slot_cap - 1);
}

static int table_grow(struct zn_device *dev)
{
	size_t old_cap = dev->slot_cap;
	struct zn_ptr_slot *old = dev->slots;
	struct zn_ptr_slot *slots = calloc(old_cap * 2, sizeof(*slots));
	if (!slots)
		return -ENOMEM;
	dev->slots = slots;
	dev->slot_cap = old_cap * 2;
	for (size_t i = 0; i < old_cap; i++) {
		if (!old[i].key)
			continue;
		size_t j = slot_of(dev, old[i].key);
		while (dev->slots[j].key)
			j = (j + 1) & (dev->slot_cap - 1);
		dev->slots[j] = old[i];
	}
	free(old);
	return 0;
}

static struct zn_ptr_slot *table_find(struct zn_device *dev, uintptr_t key)
{
	for (size_t j = slot_of(dev, key);; j = (j + 1) & (dev->slot_cap - 1)) {
		if (dev->slots[j].key == key)
			return &dev->slots[j];
		if (!dev->slots[j].key)
			return NULL;
	}
}

/* Remove by backward shift, so probing never needs tombstones. */
static void table_remove(struct zn_device *dev, struct zn_ptr_slot *sl)
{
	size_t mask = dev->slot_cap - 1;
	size_t i = (size_t)(sl - dev->slots);
	size_t j = i;
	for (;;) {
		j = (j + 1) & mask;
		if (!dev->slots[j].key)
			break;
		size_t home = slot_of(dev, dev->slots[j].key);
		/* Move slot j into hole i unless its home lies cyclically in (i, j]. */
		bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
		if (!stays) {
			dev->slots[i] = dev->slots[j];
			i = j;
		}
	}
	dev->slots[i].key = 0;
	dev->slots[i].bytes = 0;
	dev->slot_used--;
}

/* ---- memory --------------------------------------------------------------- */

/* Record a live block (the table slot was reserved) and the peak. */
static void table_insert_locked(struct zn_device *dev, void *p, size_t bytes)
{
	if (dev->in_use > dev->peak)
		dev->peak = dev->in_use;
	size_t j = slot_of(dev, (uintptr_t)p);
	while (dev->slots[j].key)
		j = (j + 1) & (dev->slot_cap - 1);
	dev->slots[j].key = (uintptr_t)p;
	dev->slots[j].bytes = bytes;
}

/* Give cached blocks back until `room` more bytes fit under the limit
 * (SIZE_MAX: all of them).  Drops the lock around each free. */
static void cache_release_locked(struct zn_device *dev, size_t room)
{
	while (dev->ncache && (room == SIZE_MAX || dev->in_use + dev->cached + room > dev->limit)) {
		struct zn_cached_block cb = dev->cache[--dev->ncache];
		dev->cached -= cb.bytes;
		pthread_mutex_unlock(&dev->lock);
		dev->ops->mem_free(dev, cb.p, cb.bytes);
		pthread_mutex_lock(&dev->lock);
	}
}

int zn_device_alloc(struct zn_device *dev, size_t bytes, void **out)
{
	char a[32], b[32], c[32];

	if (!dev || !out)
		return zn_error(-EINVAL, "zn_device_alloc: %s is NULL", !dev ? "dev" : "out");
	*out = NULL;
	if (bytes == 0)
		return zn_error(-EINVAL, "zn_device_alloc: bytes is 0 (ask for at least 1 byte)");
	if (bytes > SIZE_MAX - ZN_DEVICE_ALIGN)
		return zn_error(-ENOMEM, "device %s: cannot allocate %zu bytes: too large",
				dev->name, bytes);
	size_t rounded = ZN_ALIGN_UP(bytes, ZN_DEVICE_ALIGN);

	/* A cached block of the size: no allocation at all. */
	pthread_mutex_lock(&dev->lock);
	for (size_t i = dev->ncache; i-- > 0;) {
		if (dev->cache[i].bytes != rounded)
			continue;
		if ((dev->slot_used + 1) * 2 > dev->slot_cap && table_grow(dev) < 0)
			break;
		void *p = dev->cache[i].p;
		dev->cache[i] = dev->cache[--dev->ncache];
		dev->cached -= rounded;
		dev->in_use += rounded;
		dev->slot_used++;
		table_insert_locked(dev, p, rounded);
		pthread_mutex_unlock(&dev->lock);
		*out = p;
		return 0;
	}
	/* Room: cached blocks go back first. */
	cache_release_locked(dev, rounded);

	/* Reserve first, allocate outside the lock, give back on failure: a
	 * slow cudaMalloc must not hold every other allocation up. */
	if (rounded > dev->limit || dev->in_use > dev->limit - rounded) {
		uint64_t in_use = dev->in_use, limit = dev->limit;
		pthread_mutex_unlock(&dev->lock);
		return zn_error(-ENOMEM,
				"device %s: cannot allocate %s (%zu bytes): %s (%llu bytes) in use, "
				"limit %s (%llu bytes): raise device_memory_limit or keep less on "
				"the device",
				dev->name, zn_format_size(rounded, a, sizeof(a)), rounded,
				zn_format_size(in_use, b, sizeof(b)), (unsigned long long)in_use,
				zn_format_size(limit, c, sizeof(c)), (unsigned long long)limit);
	}
	if ((dev->slot_used + 1) * 2 > dev->slot_cap && table_grow(dev) < 0) {
		pthread_mutex_unlock(&dev->lock);
		return zn_error(-ENOMEM, "device %s: out of host memory for the allocation table",
				dev->name);
	}
	dev->in_use += rounded;
	dev->slot_used++; /* reserve the table slot too */
	pthread_mutex_unlock(&dev->lock);

	void *p = NULL;
	int rc = dev->ops->mem_alloc(dev, rounded, &p);

	pthread_mutex_lock(&dev->lock);
	if (rc < 0) {
		dev->in_use -= rounded;
		dev->slot_used--;
		pthread_mutex_unlock(&dev->lock);
		return rc;
	}
	table_insert_locked(dev, p, rounded);
	pthread_mutex_unlock(&dev->lock);
	*out = p;
	return 0;
}

int zn_device_free(struct zn_device *dev, void *p)
{
	if (!dev)
		return zn_error(-EINVAL, "zn_device_free: dev is NULL");
	if (!p)
		return 0;
	pthread_mutex_lock(&dev->lock);
	struct zn_ptr_slot *sl = table_find(dev, (uintptr_t)p);
	if (!sl) {
		pthread_mutex_unlock(&dev->lock);
		return zn_error(-EINVAL,
				"zn_device_free: %p was not allocated by device %s or was "
				"already freed",
				p, dev->name);
	}
	size_t bytes = sl->bytes;
	table_remove(dev, sl);
	dev->in_use -= bytes;
	/* Large blocks are kept for the next allocation of their size.  As
	 * with cudaFree, the caller has finished with the block: no queued
	 * work may still touch it. */
	if (bytes >= ZN_DEVICE_CACHE_MIN) {
		if (dev->ncache == dev->cache_cap) {
			size_t cap = dev->cache_cap ? 2 * dev->cache_cap : 16;
			struct zn_cached_block *c = realloc(dev->cache, cap * sizeof(*c));
			if (c) {
				dev->cache = c;
				dev->cache_cap = cap;
			}
		}
		if (dev->ncache < dev->cache_cap) {
			dev->cache[dev->ncache++] = (struct zn_cached_block){ p, bytes };
			dev->cached += bytes;
			pthread_mutex_unlock(&dev->lock);
			return 0;
		}
	}
	pthread_mutex_unlock(&dev->lock);
	dev->ops->mem_free(dev, p, bytes);
	return 0;
}

void zn_device_trim(struct zn_device *dev)
{
	pthread_mutex_lock(&dev->lock);
	cache_release_locked(dev, SIZE_MAX);
	pthread_mutex_unlock(&dev->lock);
}

void zn_device_memstats(struct zn_device *dev, struct zn_device_memstats *out)
{
	pthread_mutex_lock(&dev->lock);
	out->in_use = dev->in_use;
	out->peak = dev->peak;
	out->limit = dev->limit;
	out->allocations = dev->slot_used;
	out->cached = dev->cached;
	pthread_mutex_unlock(&dev->lock);
}

void zn_device_reset_peak(struct zn_device *dev)
{
	pthread_mutex_lock(&dev->lock);
	dev->peak = dev->in_use;
	pthread_mutex_unlock(&dev->lock);
}

static int check_stream(struct zn_device *dev, struct zn_stream *s, const char *fn)
{
	if (s && s->dev != dev)
		return zn_error(-EINVAL, "%s: stream \"%s\" belongs to device %s, not %s", fn,
				s->name, s->dev->name, dev->name);
	return 0;
}

int zn_device_memset(struct zn_device *dev, void *p, int value, size_t bytes,
		     struct zn_stream *stream)
{
	if (!dev || (!p && bytes))
		return zn_error(-EINVAL, "zn_device_memset: %s is NULL", !dev ? "dev" : "p");
	int rc = check_stream(dev, stream, "zn_device_memset");
	if (rc < 0)
		return rc;
	if (bytes == 0)
		return 0;
	return dev->ops->memset(dev, p, value, bytes, stream);
}

int zn_device_copy_async(struct zn_device *dev, void *dst, const void *src, size_t bytes,
			 enum zn_copy_kind kind, struct zn_stream *stream)
{
	if (!dev)
		return zn_error(-EINVAL, "zn_device_copy_async: dev is NULL");
	if ((unsigned)kind >= ZN_COPY_KIND_COUNT)
		return zn_error(-EINVAL, "zn_device_copy_async: copy kind %d is unknown (0..%d)",
				(int)kind, ZN_COPY_KIND_COUNT - 1);
	if (bytes && (!dst || !src))
		return zn_error(-EINVAL, "zn_device_copy_async: %s is NULL (%zu bytes)",
				!dst ? "dst" : "src", bytes);
	int rc = check_stream(dev, stream, "zn_device_copy_async");
	if (rc < 0)
		return rc;
	if (bytes == 0)
		return 0;
	const char *d = dst, *s = src;
	if (d < s + bytes && s < d + bytes)
		return zn_error(-EINVAL,
				"zn_device_copy_async: dst %p and src %p overlap (%zu bytes)", dst,
				src, bytes);
	return dev->ops->copy(dev, dst, src, bytes, kind, stream);
}

int zn_device_host_register(struct zn_device *dev, void *p, size_t bytes)
{
	if (!dev || !p || !bytes)
		return zn_error(-EINVAL, "zn_device_host_register: %s",
				!dev ? "dev is NULL" : !p ? "p is NULL" : "bytes is 0");
	return dev->ops->host_register(dev, p, bytes);
}

int zn_device_host_unregister(struct zn_device *dev, void *p)
{
	if (!dev || !p)
		return zn_error(-EINVAL, "zn_device_host_unregister: %s is NULL",
				!dev ? "dev" : "p");
	return dev->ops->host_unregister(dev, p);
}

/* ---- streams ---------------------------------------------------------------- */

struct zn_stream *zn_device_stream_create(struct zn_device *dev, const char *name)
{
	if (!dev) {
		zn_set_error("zn_device_stream_create: dev is NULL");
		return NULL;
	}
	struct zn_stream *s = calloc(1, sizeof(*s));
	if (!s) {
		zn_set_error("device %s: out of host memory for a stream", dev->name);
		return NULL;
	}
	s->dev = dev;
	snprintf(s->name, sizeof(s->name), "%s", name ? name : "");
	pthread_mutex_init(&s->err_lock, NULL);
	if (dev->ops->stream_create(s) < 0) {
		pthread_mutex_destroy(&s->err_lock);
		free(s);
		return NULL;
	}
	pthread_mutex_lock(&dev->lock);
	s->next = dev->streams;
	if (dev->streams)
		dev->streams->prev = s;
	dev->streams = s;
	pthread_mutex_unlock(&dev->lock);
	return s;
}

void zn_device_stream_destroy(struct zn_stream *s)
{
	if (!s)
		return;
	struct zn_device *dev = s->dev;
	dev->ops->stream_destroy(s);
	pthread_mutex_lock(&dev->lock);
	if (s->prev)
		s->prev->next = s->next;
	else
		dev->streams = s->next;
	if (s->next)
		s->next->prev = s->prev;
	pthread_mutex_unlock(&dev->lock);
	if (s->err)
		zn_warn("device %s: stream \"%s\" destroyed with an unreported error: %s",
			dev->name, s->name, s->errmsg);
	pthread_mutex_destroy(&s->err_lock);
	free(s);
}

const char *zn_device_stream_name(const struct zn_stream *s)
{
	return s->name;
}

void zn_stream_fail(struct zn_stream *s, int err)
{
	if (err >= 0)
		err = -EIO; /* a host function that broke the return rule */
	pthread_mutex_lock(&s->err_lock);
	if (!s->err) {
		s->err = err;
		snprintf(s->errmsg, sizeof(s->errmsg), "%s", zn_last_error());
	}
	pthread_mutex_unlock(&s->err_lock);
}

int zn_device_stream_synchronize(struct zn_stream *s)
{
	if (!s)
		return zn_error(-EINVAL, "zn_device_stream_synchronize: stream is NULL");
	int rc = s->dev->ops->stream_synchronize(s);
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&s->err_lock);
	rc = s->err;
	if (rc)
		zn_set_error("stream \"%s\" of device %s: a host function failed: %s", s->name,
			     s->dev->name, s->errmsg);
	s->err = 0;
	s->errmsg[0] = 0;
	pthread_mutex_unlock(&s->err_lock);
	return rc;
}

int zn_device_stream_query(struct zn_stream *s)
{
	if (!s)
		return zn_error(-EINVAL, "zn_device_stream_query: stream is NULL");
	return s->dev->ops->stream_query(s);
}

int zn_device_synchronize(struct zn_device *dev)
{
	if (!dev)
		return zn_error(-EINVAL, "zn_device_synchronize: dev is NULL");
	/* The list lock is not held while waiting (host functions may create
	 * streams); snapshot the streams first. */
	pthread_mutex_lock(&dev->lock);
	size_t n = 0;
	for (struct zn_stream *s = dev->streams; s; s = s->next)
		n++;
	struct zn_stream **v = calloc(n ? n : 1, sizeof(*v));
	if (!v) {
		pthread_mutex_unlock(&dev->lock);
		return zn_error(-ENOMEM, "zn_device_synchronize: out of host memory");
	}
	n = 0;
	for (struct zn_stream *s = dev->streams; s; s = s->next)
		v[n++] = s;
	pthread_mutex_unlock(&dev->lock);

	int first = 0;
	char msg[1024] = "";
	for (size_t i = 0; i < n; i++) {
		int rc = zn_device_stream_synchronize(v[i]);
		if (rc < 0 && !first) {
			first = rc;
			snprintf(msg, sizeof(msg), "%s", zn_last_error());
		}
	}
	free(v);
	if (first)
		zn_set_error_str(msg);
	return first;
}

int zn_device_launch_host(struct zn_stream *s, zn_device_host_fn fn, void *arg)
{
	if (!s || !fn)
		return zn_error(-EINVAL, "zn_device_launch_host: %s is NULL", !s ? "stream" : "fn");
	return s->dev->ops->launch_host(s, fn, arg);
}

/* ---- events ----------------------------------------------------------------- */

struct zn_event *zn_device_event_create(struct zn_device *dev)
{
	if (!dev) {
		zn_set_error("zn_device_event_create: dev is NULL");
		return NULL;
	}
	struct zn_event *e = calloc(1, sizeof(*e));
	if (!e) {
		zn_set_error("device %s: out of host memory for an event", dev->name);
		return NULL;
	}
	e->dev = dev;
	if (dev->ops->event_create(e) < 0) {
		free(e);
		return NULL;
	}
	pthread_mutex_lock(&dev->lock);
	e->next = dev->events;
	if (dev->events)
		dev->events->prev = e;
	dev->events = e;
	pthread_mutex_unlock(&dev->lock);
	return e;
}

void zn_device_event_destroy(struct zn_event *e)
{
	if (!e)
		return;
	struct zn_device *dev = e->dev;
	pthread_mutex_lock(&dev->lock);
	if (e->prev)
		e->prev->next = e->next;
	else
		dev->events = e->next;
	if (e->next)
		e->next->prev = e->prev;
	pthread_mutex_unlock(&dev->lock);
	dev->ops->event_destroy(e);
	free(e);
}

static int check_pair(struct zn_event *e, struct zn_stream *s, const char *fn)
{
	if (!e || !s)
		return zn_error(-EINVAL, "%s: %s is NULL", fn, !e ? "event" : "stream");
	if (e->dev != s->dev)
		return zn_error(-EINVAL, "%s: the event belongs to device %s, stream \"%s\" to %s",
				fn, e->dev->name, s->name, s->dev->name);
	return 0;
}

int zn_device_event_record(struct zn_event *e, struct zn_stream *s)
{
	int rc = check_pair(e, s, "zn_device_event_record");
	return rc < 0 ? rc : s->dev->ops->event_record(e, s);
}

int zn_device_stream_wait_event(struct zn_stream *s, struct zn_event *e)
{
	int rc = check_pair(e, s, "zn_device_stream_wait_event");
	return rc < 0 ? rc : s->dev->ops->stream_wait_event(s, e);
}

int zn_device_event_synchronize(struct zn_event *e)
{
	if (!e)
		return zn_error(-EINVAL, "zn_device_event_synchronize: event is NULL");
	return e->dev->ops->event_synchronize(e);
}

int zn_device_event_query(struct zn_event *e)
{
	if (!e)
		return zn_error(-EINVAL, "zn_device_event_query: event is NULL");
	return e->dev->ops->event_query(e);
}

void zn_device_kernels_params(struct zn_device *dev, struct zn_stream *s,
			      struct zn_kernels_params *p)
{
	dev->ops->kernels_params(dev, s, p);
}
