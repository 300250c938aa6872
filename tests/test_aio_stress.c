/* Suite `slow`: several threads hammer one handle with mixed reads and
 * writes of random sizes for a while, on every ring layout; every read is
 * checked against what the last completed write to that slot put there.
 * Catches lost pieces, cross-talk between requests and races in the
 * inbox/worker hand-off that short tests miss. */
#include "testutil.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "zinc/aio.h"
#include "zinc/hostmem.h"

#define MiB (1024ull * 1024)
#define NTHREADS 6
#define SLOTS 8              /* per thread; each slot is a file region */
#define SLOT_BYTES (1 * MiB)
#define SECONDS_PER_CASE 6

static const struct {
	unsigned threads, qd;
	uint64_t bs;
	bool fixed, overlap, sqpoll;
} cases[] = {
	{ 1, 32, 64 << 10, true, true, false },
	{ 4, 4, 16 << 10, false, true, false },
	{ 2, 16, 128 << 10, true, false, false },
	{ 3, 8, 256 << 10, true, true, true },
};

struct worker {
	struct zn_aio_file *f;
	unsigned id;
	uint8_t *mem;      /* SLOTS write buffers, then SLOTS read buffers */
	size_t len[SLOTS]; /* bytes last written to each slot */
	uint64_t seed[SLOTS];
	uint64_t deadline;
	unsigned long ops;
	int failures;
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void *hammer(void *arg)
{
	struct worker *w = arg;
	uint64_t rs = 0x1234 + w->id;
	uint8_t *wbuf = w->mem, *rbuf = w->mem + SLOTS * SLOT_BYTES;

	while (now_ns() < w->deadline && !w->failures) {
		/* A batch: some slots written, others read, all outstanding
		 * together, waited for in random order. */
		struct zn_aio_req *req[SLOTS] = { 0 };
		bool is_write[SLOTS];
		size_t want[SLOTS];
		for (unsigned s = 0; s < SLOTS; s++) {
			uint64_t off = ((uint64_t)w->id * SLOTS + s) * SLOT_BYTES;
			is_write[s] = w->len[s] == 0 || tu_rand(&rs) % 2;
			if (is_write[s]) {
				w->len[s] = 4096 * (1 + tu_rand(&rs) % (SLOT_BYTES / 4096));
				w->seed[s] = tu_rand(&rs);
				tu_fill_random(wbuf + s * SLOT_BYTES, w->len[s], w->seed[s]);
				want[s] = w->len[s];
				if (zn_aio_write(w->f, wbuf + s * SLOT_BYTES, w->len[s], off, &req[s]))
					w->failures++;
			} else {
				want[s] = w->len[s];
				memset(rbuf + s * SLOT_BYTES, 0, want[s]);
				if (zn_aio_read(w->f, rbuf + s * SLOT_BYTES, want[s], off, &req[s]))
					w->failures++;
			}
		}
		unsigned order[SLOTS];
		for (unsigned s = 0; s < SLOTS; s++)
			order[s] = s;
		for (unsigned s = SLOTS - 1; s > 0; s--) {
			unsigned k = (unsigned)(tu_rand(&rs) % (s + 1)), t = order[s];
			order[s] = order[k];
			order[k] = t;
		}
		for (unsigned i = 0; i < SLOTS; i++) {
			unsigned s = order[i];
			if (!req[s])
				continue;
			if (zn_aio_wait(req[s]) != (ssize_t)want[s]) {
				fprintf(stderr, "# thread %u slot %u: %s\n", w->id, s, zn_last_error());
				w->failures++;
				continue;
			}
			if (!is_write[s] &&
			    memcmp(rbuf + s * SLOT_BYTES, wbuf + s * SLOT_BYTES, want[s]) != 0) {
				fprintf(stderr, "# thread %u slot %u: data mismatch\n", w->id, s);
				w->failures++;
			}
			w->ops++;
		}
	}
	return NULL;
}

static void test_stress(void **state)
{
	(void)state;
	const size_t per_thread = 2 * SLOTS * SLOT_BYTES;
	uint8_t *mem = zn_hostmem_alloc(NTHREADS * per_thread, ZN_HOSTMEM_HUGE);
	assert_non_null(mem);

	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		struct zn_aio_config cfg;
		zn_aio_config_default(&cfg);
		cfg.intra_op_parallelism = cases[c].threads;
		cfg.queue_depth = cases[c].qd;
		cfg.block_size = cases[c].bs;
		cfg.use_fixed_buffers = cases[c].fixed;
		cfg.overlap_events = cases[c].overlap;
		cfg.sqpoll = cases[c].sqpoll;
		struct zn_aio *aio = zn_aio_create(&cfg);
		struct zn_aio_file *f;
		assert_non_null(aio);
		assert_int_equal(zn_aio_open(aio, tu_path("stress.dat"),
					     ZN_AIO_RDWR | ZN_AIO_CREATE | ZN_AIO_TRUNC,
					     (uint64_t)NTHREADS * SLOTS * SLOT_BYTES, &f),
				 0);
		/* Half of the memory registered: fixed and plain pieces mix. */
		if (cases[c].fixed)
			assert_int_equal(zn_aio_register_buffer(aio, mem, NTHREADS * per_thread / 2),
					 0);

		pthread_t th[NTHREADS];
		struct worker w[NTHREADS];
		uint64_t deadline = now_ns() + SECONDS_PER_CASE * 1000000000ull;
		for (unsigned i = 0; i < NTHREADS; i++) {
			memset(&w[i], 0, sizeof(w[i]));
			w[i].f = f;
			w[i].id = i;
			w[i].mem = mem + i * per_thread;
			w[i].deadline = deadline;
			assert_int_equal(pthread_create(&th[i], NULL, hammer, &w[i]), 0);
		}
		unsigned long ops = 0;
		for (unsigned i = 0; i < NTHREADS; i++) {
			pthread_join(th[i], NULL);
			assert_int_equal(w[i].failures, 0);
			ops += w[i].ops;
		}
		struct zn_aio_stats st;
		zn_aio_stats_get(aio, &st);
		fprintf(stderr, "# case %zu: %lu requests, %llu I/Os, %llu fixed\n", c, ops,
			(unsigned long long)st.ios, (unsigned long long)st.fixed_ios);
		assert_true(ops > 100);
		assert_int_equal(st.errors, 0);
		if (cases[c].fixed)
			assert_true(st.fixed_ios > 0 && st.fixed_ios < st.ios);
		assert_int_equal(zn_aio_close(f), 0);
		zn_aio_destroy(aio);
	}
	zn_hostmem_free(mem, NTHREADS * per_thread);
	unlink(tu_path("stress.dat"));
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
		cmocka_unit_test(test_stress),
	};
	return cmocka_run_group_tests(tests, NULL, teardown);
}
