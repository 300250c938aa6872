/* The cpu device: host memory under a budget, streams as threads.
 *
 * Every stream is a FIFO of work items drained by its own thread, so work
 * on two streams runs concurrently and work on one stream in order — the
 * CUDA model, with the stream thread standing in for the GPU's engines.  A
 * copy stream's thread is the "copy engine": memcpy on it overlaps a host
 * function (a kernel launch using the device's thread pool) on a compute
 * stream.  Nothing runs inline in the enqueuing thread, except with a NULL
 * stream, which means "synchronously" by the header's rule.
 *
 * Events: a record enqueues a marker carrying a sequence number; the
 * stream thread publishes it as the event's `completed` when it reaches the
 * marker.  The event is complete when completed >= recorded (the latest
 * record).  A wait item blocks its stream thread until the event's
 * `completed` reaches the sequence number the event had when the wait was
 * enqueued.  Items hold a reference on the event state, so an event may be
 * destroyed with records or waits still queued. */
#include "zn_build.h"

#include "device/internal.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "zinc/hostmem.h"
#include "zinc/kernels.h"
#include "zinc/threadpool.h"

/* Allocations this large come from zn_hostmem_alloc (2 MiB-aligned, huge
 * pages): copies into them run faster, and that is what large parameter
 * and gradient buffers are.  Smaller ones from posix_memalign. */
#define HUGE_ALLOC_MIN ((size_t)2 << 20) /* bytes */

struct cpu_dev {
	struct zn_threadpool *pool;
};

struct cpu_event {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint64_t recorded;  /* sequence number of the latest record, 0: none */
	uint64_t completed; /* highest record a stream has reached */
	atomic_uint refs;   /* the zn_event, plus one per queued item */
};

enum item_type { IT_HOST, IT_COPY, IT_MEMSET, IT_RECORD, IT_WAIT };

struct item {
	struct item *next;
	enum item_type type;
	union {
		struct {
			zn_device_host_fn fn;
			void *arg;
		} host;
		struct {
			void *dst;
			const void *src;
			size_t bytes;
		} copy;
		struct {
			void *p;
			int value;
			size_t bytes;
		} set;
		struct {
			struct cpu_event *ev;
			uint64_t seq;
		} ev;
	} u;
};

struct cpu_stream {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t work; /* an item was queued, or stop */
	pthread_cond_t done; /* an item finished */
	struct item *head, *tail;
	uint64_t enqueued, finished; /* item counts */
	bool stop;
};

static void event_put(struct cpu_event *ev)
{
	if (atomic_fetch_sub(&ev->refs, 1) == 1) {
		pthread_mutex_destroy(&ev->lock);
		pthread_cond_destroy(&ev->cond);
		free(ev);
	}
}

/* ---- device ------------------------------------------------------------------ */

static int cpu_open(struct zn_device *dev, const struct zn_device_params *c)
{
	struct cpu_dev *cd = calloc(1, sizeof(*cd));
	if (!cd)
		return zn_error(-ENOMEM, "device cpu: out of host memory");
	cd->pool = zn_threadpool_create(c->threads, -1);
	if (!cd->pool) {
		free(cd);
		return -ENOMEM; /* the pool set the message */
	}
	zn_threadpool_name(cd->pool, "zn-compute");
	if (dev->limit == 0) {
		long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
		dev->limit = pages > 0 && psz > 0 ? (uint64_t)pages * (uint64_t)psz : UINT64_MAX;
	}
	dev->impl = cd;
	snprintf(dev->name, sizeof(dev->name), "cpu");
	return 0;
}

static void cpu_close(struct zn_device *dev)
{
	struct cpu_dev *cd = dev->impl;
	zn_threadpool_destroy(cd->pool);
	free(cd);
}

static int cpu_mem_alloc(struct zn_device *dev, size_t bytes, void **out)
{
	void *p = NULL;
	if (bytes >= HUGE_ALLOC_MIN) {
		p = zn_hostmem_alloc(bytes, ZN_HOSTMEM_HUGE);
		if (!p)
			return zn_error(-ENOMEM, "device %s: host memory for %zu bytes: %s",
					dev->name, bytes, zn_last_error());
	} else if (posix_memalign(&p, ZN_DEVICE_ALIGN, bytes) != 0) {
		return zn_error(-ENOMEM, "device %s: out of host memory for %zu bytes", dev->name,
				bytes);
	}
	*out = p;
	return 0;
}

static void cpu_mem_free(struct zn_device *dev, void *p, size_t bytes)
{
	(void)dev;
	if (bytes >= HUGE_ALLOC_MIN)
		zn_hostmem_free(p, bytes);
	else
		free(p);
}

/* ---- streams ------------------------------------------------------------------ */

static void run_item(struct zn_stream *s, struct item *it)
{
	switch (it->type) {
	case IT_HOST: {
		int rc = it->u.host.fn(it->u.host.arg);
		if (rc != 0)
			zn_stream_fail(s, rc);
		break;
	}
	case IT_COPY:
		memcpy(it->u.copy.dst, it->u.copy.src, it->u.copy.bytes);
		break;
	case IT_MEMSET:
		memset(it->u.set.p, it->u.set.value, it->u.set.bytes);
		break;
	case IT_RECORD:
		break; /* published by stream_main, see there */
	case IT_WAIT: {
		struct cpu_event *ev = it->u.ev.ev;
		pthread_mutex_lock(&ev->lock);
		while (ev->completed < it->u.ev.seq)
			pthread_cond_wait(&ev->cond, &ev->lock);
		pthread_mutex_unlock(&ev->lock);
		event_put(ev);
		break;
	}
	}
}

static void *stream_main(void *arg)
{
	struct zn_stream *s = arg;
	struct cpu_stream *cs = s->impl;

	pthread_mutex_lock(&cs->lock);
	for (;;) {
		while (!cs->head && !cs->stop)
			pthread_cond_wait(&cs->work, &cs->lock);
		if (!cs->head)
			break; /* stop, and the queue is drained */
		struct item *it = cs->head;
		cs->head = it->next;
		if (!cs->head)
			cs->tail = NULL;
		if (it->type == IT_RECORD) {
			/* Publish the record and count it done under the stream's
			 * lock (lock order: stream, then event), so whoever sees
			 * the event complete also sees this stream idle up to it
			 * (zn_device_stream_query), and a synchronize that returns
			 * also sees the event complete. */
			struct cpu_event *ev = it->u.ev.ev;
			pthread_mutex_lock(&ev->lock);
			if (it->u.ev.seq > ev->completed)
				ev->completed = it->u.ev.seq;
			pthread_cond_broadcast(&ev->cond);
			pthread_mutex_unlock(&ev->lock);
			cs->finished++;
			pthread_cond_broadcast(&cs->done);
			event_put(ev);
			free(it);
			continue;
		}
		pthread_mutex_unlock(&cs->lock);
		run_item(s, it);
		free(it);
		pthread_mutex_lock(&cs->lock);
		cs->finished++;
		pthread_cond_broadcast(&cs->done);
	}
	pthread_mutex_unlock(&cs->lock);
	return NULL;
}

static struct item *item_new(struct zn_stream *s, enum item_type type)
{
	struct item *it = calloc(1, sizeof(*it));
	if (!it)
		zn_error(-ENOMEM, "stream \"%s\": out of host memory for a work item", s->name);
	else
		it->type = type;
	return it;
}

static void enqueue(struct zn_stream *s, struct item *it)
{
	struct cpu_stream *cs = s->impl;

	pthread_mutex_lock(&cs->lock);
	if (cs->tail)
		cs->tail->next = it;
	else
		cs->head = it;
	cs->tail = it;
	cs->enqueued++;
	pthread_cond_signal(&cs->work);
	pthread_mutex_unlock(&cs->lock);
}

static int cpu_stream_create(struct zn_stream *s)
{
	struct cpu_stream *cs = calloc(1, sizeof(*cs));
	if (!cs)
		return zn_error(-ENOMEM, "device cpu: out of host memory for stream \"%s\"",
				s->name);
	pthread_mutex_init(&cs->lock, NULL);
	pthread_cond_init(&cs->work, NULL);
	pthread_cond_init(&cs->done, NULL);
	s->impl = cs;
	int e = pthread_create(&cs->thread, NULL, stream_main, s);
	if (e) {
		pthread_mutex_destroy(&cs->lock);
		pthread_cond_destroy(&cs->work);
		pthread_cond_destroy(&cs->done);
		free(cs);
		s->impl = NULL;
		return zn_error(-e, "device cpu: cannot start the thread of stream \"%s\": %s",
				s->name, strerror(e));
	}
	char tname[16];
	snprintf(tname, sizeof(tname), "zn-s-%.10s", s->name);
	pthread_setname_np(cs->thread, tname);
	return 0;
}

static void cpu_stream_destroy(struct zn_stream *s)
{
	struct cpu_stream *cs = s->impl;

	pthread_mutex_lock(&cs->lock);
	cs->stop = true;
	pthread_cond_signal(&cs->work);
	pthread_mutex_unlock(&cs->lock);
	pthread_join(cs->thread, NULL); /* drains the queue first */
	pthread_mutex_destroy(&cs->lock);
	pthread_cond_destroy(&cs->work);
	pthread_cond_destroy(&cs->done);
	free(cs);
}

static int cpu_stream_synchronize(struct zn_stream *s)
{
	struct cpu_stream *cs = s->impl;

	pthread_mutex_lock(&cs->lock);
	uint64_t target = cs->enqueued;
	while (cs->finished < target)
		pthread_cond_wait(&cs->done, &cs->lock);
	pthread_mutex_unlock(&cs->lock);
	return 0;
}

static int cpu_stream_query(struct zn_stream *s)
{
	struct cpu_stream *cs = s->impl;

	pthread_mutex_lock(&cs->lock);
	bool idle = cs->finished == cs->enqueued;
	pthread_mutex_unlock(&cs->lock);
	return idle ? 0 : -EBUSY;
}

static int cpu_launch_host(struct zn_stream *s, zn_device_host_fn fn, void *arg)
{
	struct item *it = item_new(s, IT_HOST);
	if (!it)
		return -ENOMEM;
	it->u.host.fn = fn;
	it->u.host.arg = arg;
	enqueue(s, it);
	return 0;
}

static int cpu_memset(struct zn_device *dev, void *p, int value, size_t bytes,
		      struct zn_stream *s)
{
	(void)dev;
	if (!s) {
		memset(p, value, bytes);
		return 0;
	}
	struct item *it = item_new(s, IT_MEMSET);
	if (!it)
		return -ENOMEM;
	it->u.set.p = p;
	it->u.set.value = value;
	it->u.set.bytes = bytes;
	enqueue(s, it);
	return 0;
}

static int cpu_copy(struct zn_device *dev, void *dst, const void *src, size_t bytes,
		    enum zn_copy_kind kind, struct zn_stream *s)
{
	(void)dev;
	(void)kind; /* all one address space here */
	if (!s) {
		memcpy(dst, src, bytes);
		return 0;
	}
	struct item *it = item_new(s, IT_COPY);
	if (!it)
		return -ENOMEM;
	it->u.copy.dst = dst;
	it->u.copy.src = src;
	it->u.copy.bytes = bytes;
	enqueue(s, it);
	return 0;
}

static int cpu_host_register(struct zn_device *dev, void *p, size_t bytes)
{
	(void)dev;
	(void)p;
	(void)bytes;
	return 0; /* host memory is already "pinned" for a host device */
}

static int cpu_host_unregister(struct zn_device *dev, void *p)
{
	(void)dev;
	(void)p;
	return 0;
}

/* ---- events --------------------------------------------------------------- */

static int cpu_event_create(struct zn_event *e)
{
	struct cpu_event *ev = calloc(1, sizeof(*ev));
	if (!ev)
		return zn_error(-ENOMEM, "device cpu: out of host memory for an event");
	pthread_mutex_init(&ev->lock, NULL);
	pthread_cond_init(&ev->cond, NULL);
	atomic_init(&ev->refs, 1);
	e->impl = ev;
	return 0;
}

static void cpu_event_destroy(struct zn_event *e)
{
	event_put(e->impl);
}

static int cpu_event_record(struct zn_event *e, struct zn_stream *s)
{
	struct cpu_event *ev = e->impl;
	struct item *it = item_new(s, IT_RECORD);
	if (!it)
		return -ENOMEM;
	pthread_mutex_lock(&ev->lock);
	it->u.ev.seq = ++ev->recorded;
	pthread_mutex_unlock(&ev->lock);
	it->u.ev.ev = ev;
	atomic_fetch_add(&ev->refs, 1);
	enqueue(s, it);
	return 0;
}

static int cpu_stream_wait_event(struct zn_stream *s, struct zn_event *e)
{
	struct cpu_event *ev = e->impl;
	pthread_mutex_lock(&ev->lock);
	uint64_t seq = ev->recorded;
	bool done = ev->completed >= seq;
	pthread_mutex_unlock(&ev->lock);
	if (done)
		return 0; /* nothing to wait for: enqueue nothing */
	struct item *it = item_new(s, IT_WAIT);
	if (!it)
		return -ENOMEM;
	it->u.ev.ev = ev;
	it->u.ev.seq = seq;
	atomic_fetch_add(&ev->refs, 1);
	enqueue(s, it);
	return 0;
}

static int cpu_event_synchronize(struct zn_event *e)
{
	struct cpu_event *ev = e->impl;
	pthread_mutex_lock(&ev->lock);
	uint64_t seq = ev->recorded;
	while (ev->completed < seq)
		pthread_cond_wait(&ev->cond, &ev->lock);
	pthread_mutex_unlock(&ev->lock);
	return 0;
}

static int cpu_event_query(struct zn_event *e)
{
	struct cpu_event *ev = e->impl;
	pthread_mutex_lock(&ev->lock);
	bool done = ev->completed >= ev->recorded;
	pthread_mutex_unlock(&ev->lock);
	return done ? 0 : -EBUSY;
}

static void cpu_kernels_params(struct zn_device *dev, struct zn_stream *s,
			       struct zn_kernels_params *p)
{
	(void)s;
	p->pool = ((struct cpu_dev *)dev->impl)->pool;
}

const struct zn_device_ops zn_device_cpu_ops = {
	.kind = "cpu",
	.host_accessible = true,
	.open = cpu_open,
	.close = cpu_close,
	.mem_alloc = cpu_mem_alloc,
	.mem_free = cpu_mem_free,
	.memset = cpu_memset,
	.copy = cpu_copy,
	.host_register = cpu_host_register,
	.host_unregister = cpu_host_unregister,
	.stream_create = cpu_stream_create,
	.stream_destroy = cpu_stream_destroy,
	.stream_synchronize = cpu_stream_synchronize,
	.stream_query = cpu_stream_query,
	.launch_host = cpu_launch_host,
	.event_create = cpu_event_create,
	.event_destroy = cpu_event_destroy,
	.event_record = cpu_event_record,
	.stream_wait_event = cpu_stream_wait_event,
	.event_synchronize = cpu_event_synchronize,
	.event_query = cpu_event_query,
	.kernels_params = cpu_kernels_params,
};
