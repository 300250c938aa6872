/* The tensor swapper against an in-memory model of what every tensor must
 * contain, over long random sequences of swap_out / prefetch / acquire /
 * release / sync, with fewer buffers than tensors. */
#include "testutil.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "zinc/hostmem.h"
#include "zinc/offload.h"

#define KiB (1024ull)
#define MiB (1024ull * 1024)

struct rig {
	struct zn_aio *aio;
	struct zn_store *store;
	struct zn_bufpool *pool;
	struct zn_swapper *sw;
	struct zn_trace *trace;
};

static void rig_up(struct rig *r, unsigned npaths, size_t nbuf, size_t buf_bytes)
{
	struct zn_aio_config ac;
	zn_aio_config_default(&ac);
	ac.block_size = 128 * KiB;
	ac.queue_depth = 16;
	ac.intra_op_parallelism = 2;
	r->aio = zn_aio_create(&ac);
	assert_non_null(r->aio);
	const char *paths[3];
	for (unsigned i = 0; i < npaths; i++) {
		char name[16];
		snprintf(name, sizeof(name), "sw%u", i);
		paths[i] = tu_path(name);
		mkdir(paths[i], 0700);
	}
	struct zn_store_config sc = { .paths = paths, .npaths = npaths, .capacity = 64 * MiB,
				      .stripe_bytes = 128 * KiB, .checksum = true };
	r->store = zn_store_create(&sc, r->aio);
	assert_non_null(r->store);
	struct zn_bufpool_config pc = { .buffer_count = nbuf, .buffer_bytes = buf_bytes,
					.pin_memory = true, .numa_node = -1 };
	r->pool = zn_bufpool_create(&pc, r->aio);
	assert_non_null(r->pool);
	r->trace = zn_trace_create(1 << 16);
	struct zn_swapper_config c = { r->store, r->pool, r->trace };
	r->sw = zn_swapper_create(&c);
	assert_non_null(r->sw);
}

static void rig_down(struct rig *r)
{
	zn_swapper_destroy(r->sw);
	assert_int_equal(zn_bufpool_free_count(r->pool), zn_bufpool_count(r->pool));
	zn_bufpool_destroy(r->pool);
	zn_store_destroy(r->store);
	zn_trace_destroy(r->trace);
	zn_aio_destroy(r->aio);
}

#define NT 12
#define NBUF 4

struct model {
	struct zn_tensor *t;
	uint64_t bytes;
	uint8_t *expect;   /* what the tensor must contain */
	uint8_t *staging;  /* swap_out source, untouched until synced */
	void *pinned;      /* acquired buffer, or NULL */
	unsigned pins;
	bool nvme;
};

static void check(const struct model *m, const uint8_t *buf, const char *when)
{
	if (memcmp(buf, m->expect, m->bytes) != 0) {
		size_t i = 0;
		while (buf[i] == m->expect[i])
			i++;
		fail_msg("%s: tensor contents differ at byte %zu of %llu", when, i,
			 (unsigned long long)m->bytes);
	}
}

static void test_random_sequences(void **state)
{
	(void)state;
	for (unsigned npaths = 1; npaths <= 3; npaths += 2) {
		struct rig r;
		struct model m[NT];
		uint64_t rs = 17 + npaths;
		unsigned nvme_pins = 0;

		rig_up(&r, npaths, NBUF, 1 * MiB);
		for (int i = 0; i < NT; i++) {
			char name[16];
			snprintf(name, sizeof(name), "t%d", i);
			m[i].nvme = i % 3 != 0;
			m[i].bytes = 1 + tu_rand(&rs) % (1 * MiB);
			m[i].expect = calloc(1, m[i].bytes);
			m[i].staging = zn_hostmem_alloc(1 * MiB, 0);
			m[i].pinned = NULL;
			m[i].pins = 0;
			assert_int_equal(zn_swapper_add(r.sw, name, m[i].bytes,
							m[i].nvme ? ZN_TIER_NVME : ZN_TIER_HOST,
							&m[i].t),
					 0);
		}
		for (int step = 0; step < 4000; step++) {
			struct model *x = &m[tu_rand(&rs) % NT];
			unsigned op = (unsigned)(tu_rand(&rs) % 10);
			if (op < 2) { /* swap_out new contents */
				if (x->pins)
					continue;
				assert_int_equal(zn_swapper_sync(r.sw, x->t), 0);
				tu_fill_random(x->staging, x->bytes, tu_rand(&rs));
				memcpy(x->expect, x->staging, x->bytes);
				assert_int_equal(zn_swapper_swap_out(r.sw, x->t, x->staging), 0);
			} else if (op < 4) {
				assert_int_equal(zn_swapper_prefetch(r.sw, x->t), 0);
			} else if (op < 7) { /* acquire (maybe again), check, maybe change */
				void *buf;
				if (x->nvme && !x->pins && nvme_pins == NBUF) {
					/* Every buffer pinned by us: must not block. */
					assert_int_equal(zn_swapper_try_acquire(r.sw, x->t, &buf),
							 -EAGAIN);
					continue;
				}
				assert_int_equal(zn_swapper_acquire(r.sw, x->t, &buf), 0);
				if (x->pins)
					assert_ptr_equal(buf, x->pinned);
				else if (x->nvme)
					nvme_pins++;
				x->pinned = buf;
				x->pins++;
				check(x, buf, "acquire");
			} else if (x->pins) { /* release, clean or dirty */
				bool dirty = tu_rand(&rs) % 2;
				if (dirty) {
					size_t off = tu_rand(&rs) % x->bytes;
					size_t n = 1 + tu_rand(&rs) % (x->bytes - off);
					tu_fill_random((uint8_t *)x->pinned + off, n, tu_rand(&rs));
					memcpy(x->expect + off, (uint8_t *)x->pinned + off, n);
				}
				assert_int_equal(zn_swapper_release(r.sw, x->t, dirty), 0);
				if (--x->pins == 0) {
					x->pinned = NULL;
					if (x->nvme)
						nvme_pins--;
				}
			} else {
				assert_int_equal(zn_swapper_release(r.sw, x->t, false), -EINVAL);
			}
		}
		for (int i = 0; i < NT; i++)
			while (m[i].pins--)
				assert_int_equal(zn_swapper_release(r.sw, m[i].t, false), 0);
		assert_int_equal(zn_swapper_flush(r.sw), 0);
		for (int i = 0; i < NT; i++) {
			void *buf;
			assert_int_equal(zn_swapper_acquire(r.sw, m[i].t, &buf), 0);
			check(&m[i], buf, "final");
			assert_int_equal(zn_swapper_release(r.sw, m[i].t, false), 0);
		}
		struct zn_swapper_stats st;
		zn_swapper_get_stats(r.sw, &st);
		assert_true(st.reads[ZN_TIER_NVME] > 0 && st.writes[ZN_TIER_NVME] > 0);
		assert_true(st.hits[ZN_TIER_NVME] > 0 && st.evictions > 0);
		assert_true(st.bytes_read[ZN_TIER_NVME] >= st.reads[ZN_TIER_NVME] * 4096);
		assert_true(st.acquires[ZN_TIER_HOST] > 0 && st.writes[ZN_TIER_HOST] > 0);
		assert_true(zn_trace_count(r.trace) > 0);
		fprintf(stderr,
			"# %u path(s): %llu reads, %llu writes, %llu hits, %llu evictions, "
			"%llu prefetches skipped\n",
			npaths, (unsigned long long)st.reads[ZN_TIER_NVME],
			(unsigned long long)st.writes[ZN_TIER_NVME],
			(unsigned long long)st.hits[ZN_TIER_NVME], (unsigned long long)st.evictions,
			(unsigned long long)st.prefetch_skipped);
		for (int i = 0; i < NT; i++) {
			assert_int_equal(zn_swapper_remove(r.sw, m[i].t), 0);
			free(m[i].expect);
			zn_hostmem_free(m[i].staging, 1 * MiB);
		}
		rig_down(&r);
	}
}

/* Threads share a pool smaller than their combined tensors; each checks
 * its own tensors' contents. */
struct th {
	struct rig *r;
	unsigned id;
	int failures;
};

static void *worker(void *arg)
{
	struct th *w = arg;
	struct zn_tensor *t[4];
	uint8_t *expect[4];
	uint64_t rs = 1000 + w->id;
	const uint64_t bytes = 200 * KiB + w->id * 4096 + 123;

	for (int i = 0; i < 4; i++) {
		char name[32];
		snprintf(name, sizeof(name), "w%u.t%d", w->id, i);
		if (zn_swapper_add(w->r->sw, name, bytes, ZN_TIER_NVME, &t[i]))
			w->failures++;
		expect[i] = calloc(1, bytes);
	}
	for (int step = 0; step < 600 && !w->failures; step++) {
		int i = (int)(tu_rand(&rs) % 4);
		void *buf;
		if (tu_rand(&rs) % 4 == 0)
			zn_swapper_prefetch(w->r->sw, t[(i + 1) % 4]);
		if (zn_swapper_acquire(w->r->sw, t[i], &buf)) {
			w->failures++;
			break;
		}
		if (memcmp(buf, expect[i], bytes) != 0)
			w->failures++;
		bool dirty = tu_rand(&rs) % 2;
		if (dirty) {
			tu_fill_random(buf, bytes, tu_rand(&rs));
			memcpy(expect[i], buf, bytes);
		}
		if (zn_swapper_release(w->r->sw, t[i], dirty))
			w->failures++;
	}
	for (int i = 0; i < 4; i++) {
		if (zn_swapper_remove(w->r->sw, t[i]))
			w->failures++;
		free(expect[i]);
	}
	return NULL;
}

static void test_threads_share_pool(void **state)
{
	(void)state;
	struct rig r;
	rig_up(&r, 2, 3, 256 * KiB);
	pthread_t tid[4];
	struct th w[4];
	for (unsigned i = 0; i < 4; i++) {
		w[i] = (struct th){ &r, i, 0 };
		assert_int_equal(pthread_create(&tid[i], NULL, worker, &w[i]), 0);
	}
	for (unsigned i = 0; i < 4; i++) {
		pthread_join(tid[i], NULL);
		assert_int_equal(w[i].failures, 0);
	}
	struct zn_swapper_stats st;
	zn_swapper_get_stats(r.sw, &st);
	assert_true(st.stall_ns[ZN_TIER_NVME] > 0);
	rig_down(&r);
}

/* More tensors than buffers, one thread: prefetching them all must not
 * deadlock or fail; each can then be acquired in turn. */
/* acquire_overwrite: no read for an absent tensor, the new bytes reach the
 * disk, and a resident tensor is handed back as it is. */
static void test_overwrite(void **state)
{
	(void)state;
	struct rig r;
	struct zn_tensor *t[3];
	rig_up(&r, 1, 2, 64 * KiB);
	for (int i = 0; i < 3; i++) {
		char name[16];
		snprintf(name, sizeof(name), "o%d", i);
		assert_int_equal(zn_swapper_add(r.sw, name, 60 * KiB, ZN_TIER_NVME, &t[i]), 0);
	}
	void *b;
	for (int i = 0; i < 3; i++) {
		assert_int_equal(zn_swapper_acquire_overwrite(r.sw, t[i], &b), 0);
		memset(b, 0x10 + i, 60 * KiB);
		assert_int_equal(zn_swapper_release(r.sw, t[i], true), 0);
	}
	assert_int_equal(zn_swapper_flush(r.sw), 0);
	struct zn_swapper_stats st;
	zn_swapper_get_stats(r.sw, &st);
	assert_int_equal(st.reads[ZN_TIER_NVME], 0);
	assert_int_equal(st.writes[ZN_TIER_NVME], 3);
	/* Read back through the pool (2 buffers, 3 tensors: one was evicted). */
	for (int i = 0; i < 3; i++) {
		assert_int_equal(zn_swapper_acquire(r.sw, t[i], &b), 0);
		for (size_t k = 0; k < 60 * KiB; k++)
			if (((uint8_t *)b)[k] != 0x10 + i)
				fail_msg("tensor %d byte %zu: %u", i, k, ((uint8_t *)b)[k]);
		assert_int_equal(zn_swapper_release(r.sw, t[i], false), 0);
	}
	zn_swapper_get_stats(r.sw, &st);
	assert_true(st.reads[ZN_TIER_NVME] >= 1);
	/* Resident: overwrite gives the same buffer with its bytes. */
	void *c;
	assert_int_equal(zn_swapper_acquire(r.sw, t[2], &b), 0);
	assert_int_equal(zn_swapper_release(r.sw, t[2], false), 0);
	assert_int_equal(zn_swapper_acquire_overwrite(r.sw, t[2], &c), 0);
	assert_ptr_equal(b, c);
	assert_int_equal(((uint8_t *)c)[0], 0x12);
	assert_int_equal(zn_swapper_release(r.sw, t[2], false), 0);
	rig_down(&r);
}

static void test_more_tensors_than_buffers(void **state)
{
	(void)state;
	struct rig r;
	struct zn_tensor *t[10];
	rig_up(&r, 1, 2, 64 * KiB);
	for (int i = 0; i < 10; i++) {
		char name[16];
		snprintf(name, sizeof(name), "m%d", i);
		assert_int_equal(zn_swapper_add(r.sw, name, 60 * KiB, ZN_TIER_NVME, &t[i]), 0);
	}
	for (int i = 0; i < 10; i++)
		assert_int_equal(zn_swapper_prefetch(r.sw, t[i]), 0);
	struct zn_swapper_stats st;
	zn_swapper_get_stats(r.sw, &st);
	assert_true(st.prefetch_skipped >= 8);
	void *a, *b, *c;
	assert_int_equal(zn_swapper_acquire(r.sw, t[0], &a), 0);
	assert_int_equal(zn_swapper_acquire(r.sw, t[1], &b), 0);
	assert_int_equal(zn_swapper_try_acquire(r.sw, t[2], &c), -EAGAIN);
	assert_non_null(strstr(zn_last_error(), "m2"));
	assert_int_equal(zn_swapper_release(r.sw, t[0], false), 0);
	assert_int_equal(zn_swapper_try_acquire(r.sw, t[2], &c), 0);
	assert_int_equal(zn_swapper_release(r.sw, t[1], false), 0);
	assert_int_equal(zn_swapper_release(r.sw, t[2], false), 0);
	for (int i = 0; i < 10; i++) {
		assert_int_equal(zn_swapper_acquire(r.sw, t[i], &a), 0);
		assert_int_equal(zn_swapper_release(r.sw, t[i], false), 0);
	}
	rig_down(&r);
}

/* A tensor larger than the buffers is refused with the size that works. */
static void test_buffer_too_small(void **state)
{
	(void)state;
	struct rig r;
	struct zn_tensor *t;
	rig_up(&r, 1, 2, 64 * KiB);
	assert_int_equal(zn_swapper_add(r.sw, "embedding", 100 * KiB + 1, ZN_TIER_NVME, &t),
			 -EINVAL);
	assert_null(t);
	assert_non_null(strstr(zn_last_error(), "embedding"));
	assert_non_null(strstr(zn_last_error(), "at least 106496 bytes"));
	assert_non_null(strstr(zn_last_error(), "buffer_size"));
	/* Host-home tensors have no such limit. */
	assert_int_equal(zn_swapper_add(r.sw, "big-host", 3 * MiB, ZN_TIER_HOST, &t), 0);
	assert_int_equal(zn_swapper_remove(r.sw, t), 0);
	rig_down(&r);
}

static int teardown(void **state)
{
	(void)state;
	tu_scratch_cleanup();
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_random_sequences),
		cmocka_unit_test(test_threads_share_pool),
		cmocka_unit_test(test_more_tensors_than_buffers),
		cmocka_unit_test(test_overwrite),
		cmocka_unit_test(test_buffer_too_small),
	};
	return cmocka_run_group_tests(tests, NULL, teardown);
}
