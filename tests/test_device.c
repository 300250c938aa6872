/* The device API on the cpu backend (include/zinc/device.h).
 *
 * Concurrency and ordering are proved with flags, not timings: a host
 * function on one stream waits (with a generous timeout that fails the
 * test) for something only another stream can produce, so a backend that
 * serialized the streams would fail, not just run slowly. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "zn_common.h"
#include "zinc/device.h"
#include "zinc/kernels.h"
#include "testutil.h"

/* How long a flag wait may take before the test calls it a failure: far
 * beyond any scheduling delay on a loaded CI machine. */
#define WAIT_NS (10ull * 1000000000ull)

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* Spin (politely) until *flag != 0; false after WAIT_NS. */
static bool wait_flag(atomic_int *flag)
{
	uint64_t t0 = now_ns();
	while (!atomic_load(flag)) {
		if (now_ns() - t0 > WAIT_NS)
			return false;
		sleep_ms(1);
	}
	return true;
}

static struct zn_device *open_cpu(uint64_t limit)
{
	struct zn_device_params c;
	zn_device_params_default(&c);
	c.memory_limit = limit;
	c.threads = 2;
	struct zn_device *dev = zn_device_create(&c);
	if (!dev)
		print_message("zn_device_create: %s\n", zn_last_error());
	assert_non_null(dev);
	return dev;
}

static void test_create(void **state)
{
	(void)state;
	struct zn_device_params c;
	zn_device_params_default(&c);
	c.kind = "tpu";
	assert_null(zn_device_create(&c));
	assert_non_null(strstr(zn_last_error(), "\"tpu\" is unknown"));
	c.kind = "cpu";
	c.ordinal = -1;
	assert_null(zn_device_create(&c));
	assert_non_null(strstr(zn_last_error(), "ordinal -1"));

	/* "cuda" is a known kind in any build; here it opens only with a GPU,
	 * and otherwise says why */
	c.ordinal = 0;
	c.kind = "cuda";
	struct zn_device *gpu = zn_device_create(&c);
	if (gpu) {
		assert_string_equal(zn_device_kind(gpu), "cuda");
		zn_device_destroy(gpu);
	} else {
		assert_non_null(strstr(zn_last_error(), "cuda"));
		assert_null(strstr(zn_last_error(), "unknown"));
	}

	struct zn_device *dev = zn_device_create(NULL); /* defaults */
	assert_non_null(dev);
	assert_string_equal(zn_device_kind(dev), "cpu");
	assert_string_equal(zn_device_name(dev), "cpu");
	assert_true(zn_device_host_accessible(dev));
	struct zn_device_memstats st;
	zn_device_memstats(dev, &st);
	assert_true(st.limit > 0); /* the machine's RAM */
	assert_int_equal(st.in_use, 0);
	zn_device_destroy(dev);
	zn_device_destroy(NULL);
}

static void test_budget(void **state)
{
	(void)state;
	struct zn_device *dev = open_cpu(1 << 20);
	void *a = NULL, *b = NULL, *c = NULL;

	assert_int_equal(zn_device_alloc(dev, 512 << 10, &a), 0);
	assert_int_equal(zn_device_alloc(dev, 768 << 10, &b), -ENOMEM);
	assert_null(b);
	const char *m = zn_last_error();
	assert_non_null(strstr(m, "786432 bytes"));  /* requested */
	assert_non_null(strstr(m, "524288 bytes"));  /* in use */
	assert_non_null(strstr(m, "1048576 bytes")); /* limit */
	assert_non_null(strstr(m, "device_memory_limit"));
	/* exactly the rest fits */
	assert_int_equal(zn_device_alloc(dev, 512 << 10, &b), 0);
	assert_int_equal(zn_device_alloc(dev, 1, &c), -ENOMEM);
	/* a failed allocation leaves the accounting alone */
	struct zn_device_memstats st;
	zn_device_memstats(dev, &st);
	assert_int_equal(st.in_use, 1 << 20);
	assert_int_equal(st.allocations, 2);
	assert_int_equal(zn_device_free(dev, a), 0);
	assert_int_equal(zn_device_alloc(dev, 100, &c), 0);
	assert_int_equal(zn_device_free(dev, b), 0);
	assert_int_equal(zn_device_free(dev, c), 0);
	/* larger than the whole budget */
	assert_int_equal(zn_device_alloc(dev, (2 << 20) + 1, &a), -ENOMEM);
	zn_device_destroy(dev);
}

/* The caching allocator: a freed large block comes back for the next
 * allocation of its size; cached blocks count against the limit and are
 * given back when an allocation needs their room; small blocks are freed. */
static void test_block_cache(void **state)
{
	(void)state;
	struct zn_device *dev = open_cpu(8 << 20);
	void *a = NULL, *b = NULL, *c = NULL;
	struct zn_device_memstats st;

	assert_int_equal(zn_device_alloc(dev, 3 << 20, &a), 0);
	memset(a, 7, 3 << 20);
	assert_int_equal(zn_device_free(dev, a), 0);
	zn_device_memstats(dev, &st);
	assert_int_equal(st.in_use, 0);
	assert_int_equal(st.cached, 3 << 20);
	assert_int_equal(zn_device_alloc(dev, 3 << 20, &b), 0);
	assert_ptr_equal(a, b);
	zn_device_memstats(dev, &st);
	assert_int_equal(st.in_use, 3 << 20);
	assert_int_equal(st.cached, 0);
	/* Another size with a cached block in the way: the block goes. */
	assert_int_equal(zn_device_free(dev, b), 0);
	assert_int_equal(zn_device_alloc(dev, 6 << 20, &c), 0);
	zn_device_memstats(dev, &st);
	assert_int_equal(st.in_use, 6 << 20);
	assert_int_equal(st.cached, 0);
	/* Still a hard limit: cached or not, 6 + 3 MiB do not fit in 8. */
	assert_int_equal(zn_device_alloc(dev, 3 << 20, &a), -ENOMEM);
	assert_int_equal(zn_device_free(dev, c), 0);
	/* Small blocks are not cached. */
	assert_int_equal(zn_device_alloc(dev, 4096, &a), 0);
	assert_int_equal(zn_device_free(dev, a), 0);
	zn_device_memstats(dev, &st);
	assert_int_equal(st.cached, 6 << 20);
	/* Freeing twice is still caught, cached or not. */
	assert_int_equal(zn_device_alloc(dev, 6 << 20, &c), 0);
	assert_int_equal(zn_device_free(dev, c), 0);
	assert_int_equal(zn_device_free(dev, c), -EINVAL);
	zn_device_trim(dev);
	zn_device_memstats(dev, &st);
	assert_int_equal(st.cached, 0);
	assert_int_equal(st.in_use, 0);
	zn_device_destroy(dev);
}

static void test_accounting(void **state)
{
	(void)state;
	struct zn_device *dev = open_cpu(64ull << 20);
	struct zn_device_memstats st;
	enum { N = 1000 };
	void **p = calloc(N, sizeof(*p));
	size_t *sz = calloc(N, sizeof(*sz));
	uint64_t rng = 42, total = 0, peak = 0;
	assert_true(p && sz);

	/* 1 byte counts as ZN_DEVICE_ALIGN */
	assert_int_equal(zn_device_alloc(dev, 1, &p[0]), 0);
	zn_device_memstats(dev, &st);
	assert_int_equal(st.in_use, ZN_DEVICE_ALIGN);
	assert_int_equal(zn_device_free(dev, p[0]), 0);

	/* many sizes, both allocation paths (small, and >= 2 MiB) */
	for (size_t i = 0; i < N; i++) {
		sz[i] = (i % 97 == 0) ? (2u << 20) + (size_t)(tu_rand(&rng) % 5000)
				      : 1 + (size_t)(tu_rand(&rng) % 20000);
		assert_int_equal(zn_device_alloc(dev, sz[i], &p[i]), 0);
		assert_int_equal((uintptr_t)p[i] % ZN_DEVICE_ALIGN, 0);
		memset(p[i], (int)i, sz[i]); /* really ours: ASan checks the bounds */
		total += (sz[i] + ZN_DEVICE_ALIGN - 1) / ZN_DEVICE_ALIGN * ZN_DEVICE_ALIGN;
		if (total > peak)
			peak = total;
		if (i % 3 == 2) { /* free one of the earlier ones */
			size_t j = (size_t)(tu_rand(&rng) % i);
			if (p[j]) {
				assert_int_equal(zn_device_free(dev, p[j]), 0);
				total -= (sz[j] + ZN_DEVICE_ALIGN - 1) / ZN_DEVICE_ALIGN *
					 ZN_DEVICE_ALIGN;
				p[j] = NULL;
			}
		}
	}
	zn_device_memstats(dev, &st);
	assert_int_equal(st.in_use, total);
	assert_int_equal(st.peak, peak);
	assert_int_equal(st.limit, 64ull << 20);
	zn_device_reset_peak(dev);
	zn_device_memstats(dev, &st);
	assert_int_equal(st.peak, total);

	/* a pointer inside an allocation, a foreign one, a double free */
	size_t k = 1;
	while (!p[k])
		k++;
	assert_int_equal(zn_device_free(dev, (char *)p[k] + 256), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "not allocated by device cpu"));
	int local;
	assert_int_equal(zn_device_free(dev, &local), -EINVAL);
	assert_int_equal(zn_device_free(dev, NULL), 0);
	for (size_t i = 0; i < N; i++)
		if (p[i])
			assert_int_equal(zn_device_free(dev, p[i]), 0);
	assert_int_equal(zn_device_free(dev, p[k]), -EINVAL);
	zn_device_memstats(dev, &st);
	assert_int_equal(st.in_use, 0);
	assert_int_equal(st.allocations, 0);
	free(p);
	free(sz);
	zn_device_destroy(dev);
}

/* Threads allocating at once never push the total over the budget: the
 * budget is reserved before the backend allocates. */
struct alloc_race {
	struct zn_device *dev;
	atomic_int failures_seen, errors;
};

static void *alloc_worker(void *arg)
{
	struct alloc_race *r = arg;
	uint64_t rng = (uint64_t)(uintptr_t)&rng;
	void *held[8] = { 0 };
	for (int i = 0; i < 2000; i++) {
		int k = (int)(tu_rand(&rng) % 8);
		if (held[k]) {
			if (zn_device_free(r->dev, held[k]) != 0)
				atomic_fetch_add(&r->errors, 1);
			held[k] = NULL;
			continue;
		}
		int rc = zn_device_alloc(r->dev, 1 + (size_t)(tu_rand(&rng) % 65536), &held[k]);
		if (rc == -ENOMEM)
			atomic_fetch_add(&r->failures_seen, 1);
		else if (rc != 0)
			atomic_fetch_add(&r->errors, 1);
	}
	for (int k = 0; k < 8; k++)
		if (held[k] && zn_device_free(r->dev, held[k]) != 0)
			atomic_fetch_add(&r->errors, 1);
	return NULL;
}

static void test_concurrent_alloc(void **state)
{
	(void)state;
	/* 8 threads x up to 8 x 64 KiB wanted, 256 KiB allowed: many refusals */
	struct alloc_race r = { .dev = open_cpu(256 << 10) };
	pthread_t t[8];
	for (int i = 0; i < 8; i++)
		assert_int_equal(pthread_create(&t[i], NULL, alloc_worker, &r), 0);
	for (int i = 0; i < 8; i++)
		pthread_join(t[i], NULL);
	struct zn_device_memstats st;
	zn_device_memstats(r.dev, &st);
	assert_int_equal(atomic_load(&r.errors), 0);
	assert_true(atomic_load(&r.failures_seen) > 0);
	assert_true(st.peak <= st.limit);
	assert_int_equal(st.in_use, 0);
	assert_int_equal(st.allocations, 0);
	zn_device_destroy(r.dev);
}

struct order_log {
	atomic_int n;
	int seen[4096];
};
struct order_arg {
	struct order_log *log;
	int id;
};

static int log_fn(void *arg)
{
	struct order_arg *a = arg;
	a->log->seen[atomic_fetch_add(&a->log->n, 1)] = a->id;
	return 0;
}

static void test_stream_order(void **state)
{
	(void)state;
	struct zn_device *dev = open_cpu(0);
	struct zn_stream *s = zn_device_stream_create(dev, "compute");
	assert_non_null(s);
	assert_string_equal(zn_device_stream_name(s), "compute");
	static struct order_log log;
	static struct order_arg args[2000];
	atomic_init(&log.n, 0);
	for (int i = 0; i < 2000; i++) {
		args[i] = (struct order_arg){ &log, i };
		assert_int_equal(zn_device_launch_host(s, log_fn, &args[i]), 0);
	}
	assert_int_equal(zn_device_stream_synchronize(s), 0);
	assert_int_equal(atomic_load(&log.n), 2000);
	for (int i = 0; i < 2000; i++)
		assert_int_equal(log.seen[i], i);

	/* copies and memsets in stream order: each copy sees the previous
	 * memset, never the next one */
	enum { B = 1 << 20 };
	void *d = NULL;
	assert_int_equal(zn_device_alloc(dev, B, &d), 0);
	unsigned char *h = malloc((size_t)B * 8);
	assert_non_null(h);
	for (int i = 0; i < 8; i++) {
		assert_int_equal(zn_device_memset(dev, d, i + 1, B, s), 0);
		assert_int_equal(zn_device_copy_async(dev, h + (size_t)i * B, d, B,
						      ZN_COPY_DEVICE_TO_HOST, s),
				 0);
	}
	assert_int_equal(zn_device_stream_synchronize(s), 0);
	for (int i = 0; i < 8; i++) {
		assert_int_equal(h[(size_t)i * B], i + 1);
		assert_int_equal(h[(size_t)i * B + B - 1], i + 1);
	}
	/* synchronous (NULL stream) copy and memset */
	assert_int_equal(zn_device_memset(dev, d, 0x5a, B, NULL), 0);
	assert_int_equal(zn_device_copy_async(dev, h, d, B, ZN_COPY_DEVICE_TO_HOST, NULL), 0);
	assert_int_equal(h[B / 2], 0x5a);
	free(h);
	assert_int_equal(zn_device_free(dev, d), 0);
	zn_device_stream_destroy(s);
	zn_device_destroy(dev);
}

/* ---- a copy on the copy stream overlaps a host function on compute ---- */

struct overlap {
	struct zn_event *copied; /* recorded on the copy stream after the copy */
	atomic_int compute_started, compute_saw_copy, copy_checked;
	const unsigned char *dst;
	size_t bytes;
};

/* The "kernel": runs on the compute stream and does not return until the
 * copy stream's event has completed.  If copies only ran when the compute
 * stream was idle (no copy thread), this would time out. */
static int slow_compute(void *arg)
{
	struct overlap *o = arg;
	atomic_store(&o->compute_started, 1);
	uint64_t t0 = now_ns();
	while (zn_device_event_query(o->copied) == -EBUSY) {
		if (now_ns() - t0 > WAIT_NS)
			return -ETIMEDOUT;
		sleep_ms(1);
	}
	if (o->dst[0] != 0xab || o->dst[o->bytes - 1] != 0xab)
		return -EIO; /* complete means the bytes are there */
	atomic_store(&o->compute_saw_copy, 1);
	return 0;
}

static int copy_waits_for_start(void *arg)
{
	/* Make the copy start only once the compute function is running, so
	 * the two provably overlap in time. */
	struct overlap *o = arg;
	return wait_flag(&o->compute_started) ? 0 : -ETIMEDOUT;
}

static void test_copy_overlaps_compute(void **state)
{
	(void)state;
	struct zn_device *dev = open_cpu(64ull << 20);
	struct zn_stream *compute = zn_device_stream_create(dev, "compute");
	struct zn_stream *h2d = zn_device_stream_create(dev, "h2d");
	assert_true(compute && h2d);
	struct overlap o = { .bytes = 16u << 20 };
	o.copied = zn_device_event_create(dev);
	assert_non_null(o.copied);
	unsigned char *host = malloc(o.bytes);
	void *d = NULL;
	assert_non_null(host);
	memset(host, 0xab, o.bytes);
	assert_int_equal(zn_device_alloc(dev, o.bytes, &d), 0);
	o.dst = d;

	/* record first, so the event is pending before compute looks at it */
	assert_int_equal(zn_device_launch_host(h2d, copy_waits_for_start, &o), 0);
	assert_int_equal(
		zn_device_copy_async(dev, d, host, o.bytes, ZN_COPY_HOST_TO_DEVICE, h2d), 0);
	assert_int_equal(zn_device_event_record(o.copied, h2d), 0);
	assert_int_equal(zn_device_launch_host(compute, slow_compute, &o), 0);

	assert_int_equal(zn_device_stream_synchronize(compute), 0);
	assert_int_equal(zn_device_stream_synchronize(h2d), 0);
	assert_int_equal(atomic_load(&o.compute_saw_copy), 1);
	assert_int_equal(zn_device_event_query(o.copied), 0);

	free(host);
	zn_device_event_destroy(o.copied);
	zn_device_stream_destroy(h2d);
	zn_device_stream_destroy(compute);
	assert_int_equal(zn_device_free(dev, d), 0);
	zn_device_destroy(dev);
}

/* ---- wait_event ---------------------------------------------------------- */

struct gate {
	atomic_int open, a_done, b_ran, b_saw_a;
};

static int gated(void *arg)
{
	struct gate *g = arg;
	if (!wait_flag(&g->open))
		return -ETIMEDOUT;
	atomic_store(&g->a_done, 1);
	return 0;
}

static int after_a(void *arg)
{
	struct gate *g = arg;
	atomic_store(&g->b_saw_a, atomic_load(&g->a_done));
	atomic_store(&g->b_ran, 1);
	return 0;
}

static void test_wait_event(void **state)
{
	(void)state;
	struct zn_device *dev = open_cpu(0);
	struct zn_stream *a = zn_device_stream_create(dev, "a");
	struct zn_stream *b = zn_device_stream_create(dev, "b");
	struct zn_event *ev = zn_device_event_create(dev);
	assert_true(a && b && ev);
	struct gate g = { 0 };

	assert_int_equal(zn_device_launch_host(a, gated, &g), 0);
	assert_int_equal(zn_device_event_record(ev, a), 0);
	assert_int_equal(zn_device_stream_wait_event(b, ev), 0);
	assert_int_equal(zn_device_launch_host(b, after_a, &g), 0);

	/* b must still be waiting: a is held by the gate */
	sleep_ms(50);
	assert_int_equal(zn_device_event_query(ev), -EBUSY);
	assert_int_equal(zn_device_stream_query(a), -EBUSY);
	assert_int_equal(zn_device_stream_query(b), -EBUSY);
	assert_int_equal(atomic_load(&g.b_ran), 0);
	atomic_store(&g.open, 1);
	assert_int_equal(zn_device_stream_synchronize(b), 0);
	assert_int_equal(atomic_load(&g.b_ran), 1);
	assert_int_equal(atomic_load(&g.b_saw_a), 1);
	assert_int_equal(zn_device_event_query(ev), 0);
	assert_int_equal(zn_device_event_synchronize(ev), 0);
	assert_int_equal(zn_device_stream_query(a), 0); /* b waited for a's record */
	assert_int_equal(zn_device_stream_query(b), 0);

	/* a wait enqueued before a later record does not wait for it */
	struct gate g2 = { 0 };
	assert_int_equal(zn_device_stream_wait_event(b, ev), 0); /* already complete */
	assert_int_equal(zn_device_launch_host(b, after_a, &g2), 0);
	assert_int_equal(zn_device_launch_host(a, gated, &g2), 0);
	assert_int_equal(zn_device_event_record(ev, a), 0);
	assert_true(wait_flag(&g2.b_ran));
	assert_int_equal(atomic_load(&g2.b_saw_a), 0);
	assert_int_equal(zn_device_event_query(ev), -EBUSY);
	atomic_store(&g2.open, 1);
	assert_int_equal(zn_device_event_synchronize(ev), 0);
	assert_int_equal(zn_device_event_query(ev), 0);

	/* a never-recorded event is complete and waiting on it is free */
	struct zn_event *fresh = zn_device_event_create(dev);
	assert_non_null(fresh);
	assert_int_equal(zn_device_event_query(fresh), 0);
	assert_int_equal(zn_device_event_synchronize(fresh), 0);
	assert_int_equal(zn_device_stream_wait_event(b, fresh), 0);
	assert_int_equal(zn_device_stream_synchronize(b), 0);

	/* destroying an event with a record still queued is allowed */
	struct gate g3 = { 0 };
	assert_int_equal(zn_device_launch_host(a, gated, &g3), 0);
	assert_int_equal(zn_device_event_record(fresh, a), 0);
	assert_int_equal(zn_device_stream_wait_event(b, fresh), 0);
	assert_int_equal(zn_device_launch_host(b, after_a, &g3), 0);
	zn_device_event_destroy(fresh);
	atomic_store(&g3.open, 1);
	assert_int_equal(zn_device_synchronize(dev), 0);
	assert_int_equal(atomic_load(&g3.b_saw_a), 1);

	zn_device_event_destroy(ev);
	zn_device_stream_destroy(a);
	zn_device_stream_destroy(b);
	zn_device_destroy(dev);
}

/* ---- errors ------------------------------------------------------------------ */

static int failing(void *arg)
{
	(void)arg;
	return zn_error(-EDOM, "kernel %d exploded", 7);
}

static void test_sticky_error(void **state)
{
	(void)state;
	struct zn_device *dev = open_cpu(0);
	struct zn_stream *s = zn_device_stream_create(dev, "compute");
	assert_non_null(s);
	static struct order_log log;
	struct order_arg arg = { &log, 1 };
	atomic_init(&log.n, 0);

	assert_int_equal(zn_device_launch_host(s, failing, NULL), 0);
	assert_int_equal(zn_device_launch_host(s, log_fn, &arg), 0); /* still runs */
	assert_int_equal(zn_device_stream_synchronize(s), -EDOM);
	assert_non_null(strstr(zn_last_error(), "kernel 7 exploded"));
	assert_non_null(strstr(zn_last_error(), "\"compute\""));
	assert_int_equal(atomic_load(&log.n), 1);
	assert_int_equal(zn_device_stream_synchronize(s), 0); /* reported once */

	assert_int_equal(zn_device_launch_host(s, failing, NULL), 0);
	assert_int_equal(zn_device_synchronize(dev), -EDOM);
	assert_non_null(strstr(zn_last_error(), "kernel 7 exploded"));
	assert_int_equal(zn_device_synchronize(dev), 0);
	zn_device_stream_destroy(s);
	zn_device_destroy(dev);
}

static void test_bad_arguments(void **state)
{
	(void)state;
	struct zn_device *dev = open_cpu(1 << 20);
	struct zn_device *other = open_cpu(1 << 20);
	struct zn_stream *s = zn_device_stream_create(dev, "s");
	struct zn_stream *so = zn_device_stream_create(other, "other");
	struct zn_event *eo = zn_device_event_create(other);
	void *p = NULL;
	char h[512];
	assert_true(s && so && eo);

	assert_int_equal(zn_device_alloc(dev, 0, &p), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "bytes is 0"));
	assert_int_equal(zn_device_alloc(dev, 8, NULL), -EINVAL);
	assert_int_equal(zn_device_alloc(NULL, 8, &p), -EINVAL);
	assert_int_equal(zn_device_alloc(dev, SIZE_MAX, &p), -ENOMEM);
	assert_int_equal(zn_device_free(NULL, h), -EINVAL);
	assert_int_equal(zn_device_alloc(dev, 512, &p), 0);

	assert_int_equal(zn_device_copy_async(dev, p, h, 512, (enum zn_copy_kind)9, s), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "copy kind 9"));
	assert_int_equal(zn_device_copy_async(dev, NULL, h, 512, ZN_COPY_HOST_TO_DEVICE, s),
			 -EINVAL);
	assert_int_equal(zn_device_copy_async(dev, h, h + 8, 64, ZN_COPY_HOST_TO_HOST, s),
			 -EINVAL);
	assert_non_null(strstr(zn_last_error(), "overlap"));
	assert_int_equal(zn_device_copy_async(dev, p, h, 512, ZN_COPY_HOST_TO_DEVICE, so),
			 -EINVAL);
	assert_non_null(strstr(zn_last_error(), "belongs to device"));
	assert_int_equal(zn_device_copy_async(dev, p, h, 0, ZN_COPY_HOST_TO_DEVICE, s), 0);
	assert_int_equal(zn_device_memset(dev, NULL, 0, 8, s), -EINVAL);
	assert_int_equal(zn_device_memset(dev, p, 0, 8, so), -EINVAL);

	assert_int_equal(zn_device_launch_host(s, NULL, NULL), -EINVAL);
	assert_int_equal(zn_device_launch_host(NULL, log_fn, NULL), -EINVAL);
	assert_int_equal(zn_device_event_record(eo, s), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "event belongs to device"));
	assert_int_equal(zn_device_event_record(NULL, s), -EINVAL);
	assert_int_equal(zn_device_stream_wait_event(s, eo), -EINVAL);
	assert_int_equal(zn_device_event_synchronize(NULL), -EINVAL);
	assert_int_equal(zn_device_event_query(NULL), -EINVAL);
	assert_int_equal(zn_device_stream_synchronize(NULL), -EINVAL);
	assert_int_equal(zn_device_stream_query(NULL), -EINVAL);
	assert_int_equal(zn_device_synchronize(NULL), -EINVAL);
	assert_null(zn_device_stream_create(NULL, "x"));
	assert_null(zn_device_event_create(NULL));
	assert_int_equal(zn_device_host_register(dev, NULL, 8), -EINVAL);
	assert_int_equal(zn_device_host_register(dev, h, sizeof(h)), 0);
	assert_int_equal(zn_device_host_unregister(dev, h), 0);

	/* leaks, streams and events left open are cleaned up by destroy */
	tu_log_capture_start();
	zn_device_destroy(dev);
	assert_int_equal(tu_log_count(ZN_LOG_WARN, "never freed"), 1);
	tu_log_capture_stop();
	zn_device_destroy(other);
}

/* ---- kernels launched on a stream ------------------------------------------ */

struct scale_job {
	const struct zn_kernels *k;
	struct zn_kctx *ctx;
	float *x;
	size_t n;
};

static int scale_fn(void *arg)
{
	struct scale_job *j = arg;
	return j->k->scale(j->ctx, j->x, ZN_DTYPE_F32, 2.0f, j->n);
}

static void test_kernels_on_stream(void **state)
{
	(void)state;
	struct zn_device *dev = open_cpu(0);
	struct zn_stream *s = zn_device_stream_create(dev, "compute");
	assert_non_null(s);
	const struct zn_kernels *k = zn_kernels_get(zn_device_kind(dev));
	assert_non_null(k);
	struct zn_kernels_params kp;
	zn_kernels_params_default(&kp);
	zn_device_kernels_params(dev, s, &kp);
	assert_non_null(kp.pool);
	struct scale_job j = { .k = k, .n = 100000 };
	j.ctx = k->ctx_create(&kp);
	assert_non_null(j.ctx);
	float *h = malloc(j.n * sizeof(float));
	assert_non_null(h);
	for (size_t i = 0; i < j.n; i++)
		h[i] = (float)i;
	void *d = NULL;
	assert_int_equal(zn_device_alloc(dev, j.n * sizeof(float), &d), 0);
	j.x = d;
	assert_int_equal(zn_device_copy_async(dev, d, h, j.n * sizeof(float),
					      ZN_COPY_HOST_TO_DEVICE, s),
			 0);
	assert_int_equal(zn_device_launch_host(s, scale_fn, &j), 0);
	assert_int_equal(zn_device_copy_async(dev, h, d, j.n * sizeof(float),
					      ZN_COPY_DEVICE_TO_HOST, s),
			 0);
	assert_int_equal(zn_device_stream_synchronize(s), 0);
	for (size_t i = 0; i < j.n; i++)
		assert_true(h[i] == 2.0f * (float)i);
	k->ctx_destroy(j.ctx);
	free(h);
	assert_int_equal(zn_device_free(dev, d), 0);
	zn_device_destroy(dev); /* also destroys the stream */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create),
		cmocka_unit_test(test_budget),
		cmocka_unit_test(test_accounting),
		cmocka_unit_test(test_block_cache),
		cmocka_unit_test(test_concurrent_alloc),
		cmocka_unit_test(test_stream_order),
		cmocka_unit_test(test_copy_overlaps_compute),
		cmocka_unit_test(test_wait_event),
		cmocka_unit_test(test_sticky_error),
		cmocka_unit_test(test_bad_arguments),
		cmocka_unit_test(test_kernels_on_stream),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
