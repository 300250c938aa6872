/* The io_uring engine: data round trips, concurrency, fixed buffers, EOF. */
#include "testutil.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "zinc/aio.h"
#include "zinc/hostmem.h"

#define KiB (1024ull)
#define MiB (1024ull * 1024)

/* The configuration matrix every round-trip test runs over. */
static const struct engine_case {
	const char *name;
	uint64_t block_size;
	unsigned queue_depth, threads;
	bool fixed, overlap, single_submit, sqpoll;
} cases[] = {
	{ "defaults", 1 * MiB, 8, 1, true, true, false, false },
	{ "small-blocks", 4 * KiB, 4, 1, true, true, false, false },
	{ "qd1", 64 * KiB, 1, 1, false, true, false, false },
	{ "3-rings", 64 * KiB, 8, 3, true, true, false, false },
	{ "batch-mode", 128 * KiB, 16, 2, false, false, false, false },
	{ "single-submit", 256 * KiB, 32, 1, true, true, true, false },
	{ "sqpoll", 1 * MiB, 8, 1, true, true, false, true },
};

static struct zn_aio *make(const struct engine_case *c)
{
	struct zn_aio_config cfg;
	zn_aio_config_default(&cfg);
	cfg.block_size = c->block_size;
	cfg.queue_depth = c->queue_depth;
	cfg.intra_op_parallelism = c->threads;
	cfg.use_fixed_buffers = c->fixed;
	cfg.overlap_events = c->overlap;
	cfg.single_submit = c->single_submit;
	cfg.sqpoll = c->sqpoll;
	struct zn_aio *aio = zn_aio_create(&cfg);
	if (!aio)
		fprintf(stderr, "# %s: %s\n", c->name, zn_last_error());
	return aio;
}

/* Random aligned writes over a file, checked against a shadow copy kept in
 * memory, then the whole file read back in one request. */
static void test_round_trips(void **state)
{
	(void)state;
	const size_t file_size = 24 * MiB;
	uint8_t *shadow = zn_hostmem_alloc(file_size, 0);
	uint8_t *wbuf = zn_hostmem_alloc(file_size, ZN_HOSTMEM_HUGE);
	uint8_t *rbuf = zn_hostmem_alloc(file_size, ZN_HOSTMEM_HUGE);
	assert_non_null(shadow);
	assert_non_null(wbuf);
	assert_non_null(rbuf);

	for (size_t ci = 0; ci < sizeof(cases) / sizeof(cases[0]); ci++) {
		const struct engine_case *c = &cases[ci];
		struct zn_aio *aio = make(c);
		struct zn_aio_file *f;
		uint64_t rs = 1000 + ci;

		assert_non_null(aio);
		assert_int_equal(zn_aio_open(aio, tu_path("rt.dat"),
					     ZN_AIO_RDWR | ZN_AIO_CREATE | ZN_AIO_TRUNC, file_size, &f),
				 0);
		assert_true(zn_aio_file_direct(f));
		const size_t a = zn_aio_file_align(f);
		assert_true(a >= 512 && a <= 4096);
		if (c->fixed) {
			assert_int_equal(zn_aio_register_buffer(aio, wbuf, file_size), 0);
			assert_int_equal(zn_aio_register_buffer(aio, rbuf, file_size), 0);
		}
		memset(shadow, 0, file_size);

		/* Sizes: one alignment unit, a few, around block boundaries,
		 * several blocks with a tail; offsets anywhere aligned. */
		for (int it = 0; it < 40; it++) {
			size_t units = file_size / a;
			size_t len, off;
			switch (it % 5) {
			case 0: len = a; break;
			case 1: len = a * (1 + tu_rand(&rs) % 7); break;
			case 2: len = (size_t)c->block_size + a; break;
			case 3: len = (size_t)c->block_size * 3 - a; break;
			default: len = a * (1 + tu_rand(&rs) % (units / 4)); break;
			}
			off = a * (tu_rand(&rs) % (units - len / a + 1));
			size_t boff = a * (tu_rand(&rs) % 64); /* buffer position varies too */
			if (boff + len > file_size)
				boff = 0;
			tu_fill_random(wbuf + boff, len, rs);
			assert_int_equal(zn_aio_pwrite(f, wbuf + boff, len, off), (ssize_t)len);
			memcpy(shadow + off, wbuf + boff, len);

			memset(rbuf, 0xa5, len);
			assert_int_equal(zn_aio_pread(f, rbuf, len, off), (ssize_t)len);
			assert_memory_equal(rbuf, shadow + off, len);
		}
		memset(rbuf, 0x5a, file_size);
		assert_int_equal(zn_aio_pread(f, rbuf, file_size, 0), (ssize_t)file_size);
		assert_memory_equal(rbuf, shadow, file_size);

		struct zn_aio_stats st;
		zn_aio_stats_get(aio, &st);
		assert_true(st.bytes_read >= file_size);
		assert_true(st.bytes_written > 0);
		assert_int_equal(st.errors, 0);
		if (!c->fixed)
			assert_int_equal(st.fixed_ios, 0);
		uint64_t p50 = zn_aio_stats_percentile(&st, 50), p99 = zn_aio_stats_percentile(&st, 99);
		assert_true(p50 > 0 && p50 <= p99);

		if (c->fixed) {
			assert_int_equal(zn_aio_unregister_buffer(aio, wbuf), 0);
			assert_int_equal(zn_aio_unregister_buffer(aio, rbuf), 0);
		}
		assert_int_equal(zn_aio_close(f), 0);
		zn_aio_destroy(aio);
	}
	zn_hostmem_free(shadow, file_size);
	zn_hostmem_free(wbuf, file_size);
	zn_hostmem_free(rbuf, file_size);
	unlink(tu_path("rt.dat"));
}

/* I/O through registered buffers must move exactly the bytes plain I/O
 * moves: write fixed, read plain, and the reverse. */
static void test_fixed_equals_plain(void **state)
{
	(void)state;
	const size_t len = 6 * MiB + 12 * KiB;
	struct engine_case c = { "fixed", 256 * KiB, 8, 2, true, true, false, false };
	struct zn_aio *aio = make(&c);
	struct zn_aio_file *f;
	uint8_t *reg = zn_hostmem_alloc(len, ZN_HOSTMEM_HUGE);
	uint8_t *plain = zn_hostmem_alloc(len, 0);
	struct zn_aio_stats st;

	assert_non_null(aio);
	assert_int_equal(zn_aio_open(aio, tu_path("fx.dat"), ZN_AIO_RDWR | ZN_AIO_CREATE, 0, &f), 0);
	assert_int_equal(zn_aio_register_buffer(aio, reg, len), 0);
	assert_int_equal(zn_aio_register_buffer(aio, reg, len), -EEXIST);

	tu_fill_random(reg, len, 7);
	zn_aio_stats_reset(aio);
	assert_int_equal(zn_aio_pwrite(f, reg, len, 0), (ssize_t)len);
	zn_aio_stats_get(aio, &st);
	assert_true(st.fixed_ios > 0);
	assert_int_equal(st.fixed_ios, st.ios);

	zn_aio_stats_reset(aio);
	assert_int_equal(zn_aio_pread(f, plain, len, 0), (ssize_t)len);
	zn_aio_stats_get(aio, &st);
	assert_int_equal(st.fixed_ios, 0);
	assert_memory_equal(plain, reg, len);

	tu_fill_random(plain, len, 8);
	assert_int_equal(zn_aio_pwrite(f, plain, len, 0), (ssize_t)len);
	memset(reg, 0, len);
	zn_aio_stats_reset(aio);
	assert_int_equal(zn_aio_pread(f, reg, len, 0), (ssize_t)len);
	zn_aio_stats_get(aio, &st);
	assert_true(st.fixed_ios > 0);
	assert_memory_equal(plain, reg, len);

	/* After unregistering, the same buffer goes the plain way. */
	assert_int_equal(zn_aio_unregister_buffer(aio, reg), 0);
	assert_int_equal(zn_aio_unregister_buffer(aio, reg), -ENOENT);
	zn_aio_stats_reset(aio);
	assert_int_equal(zn_aio_pread(f, reg, len, 0), (ssize_t)len);
	zn_aio_stats_get(aio, &st);
	assert_int_equal(st.fixed_ios, 0);
	assert_memory_equal(plain, reg, len);

	assert_int_equal(zn_aio_close(f), 0);
	zn_aio_destroy(aio);
	zn_hostmem_free(reg, len);
	zn_hostmem_free(plain, len);
	unlink(tu_path("fx.dat"));
}

/* Many requests outstanding at once from several threads on one handle,
 * waited for out of order. */
#define NTHREADS 4
#define NREQ 24
#define REGION (2 * MiB)

struct worker {
	struct zn_aio_file *f;
	unsigned id;
	int failures;
};

static void *many_worker(void *arg)
{
	struct worker *w = arg;
	struct zn_aio_req *reqs[NREQ];
	uint8_t *buf = zn_hostmem_alloc(NREQ * REGION, 0);
	uint8_t *check = zn_hostmem_alloc(NREQ * REGION, 0);
	size_t lens[NREQ];
	uint64_t rs = w->id + 77;

	if (!buf || !check) {
		w->failures++;
		return NULL;
	}
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < NREQ; i++) {
			lens[i] = 4096 * (1 + tu_rand(&rs) % (REGION / 4096));
			tu_fill_random(buf + i * REGION, lens[i], rs + (uint64_t)i);
			uint64_t off = ((uint64_t)w->id * NREQ + (uint64_t)i) * REGION;
			if (zn_aio_write(w->f, buf + i * REGION, lens[i], off, &reqs[i]))
				w->failures++;
		}
		/* Wait in reverse order: completion order must not matter. */
		for (int i = NREQ - 1; i >= 0; i--)
			if (zn_aio_wait(reqs[i]) != (ssize_t)lens[i])
				w->failures++;
		for (int i = 0; i < NREQ; i++) {
			uint64_t off = ((uint64_t)w->id * NREQ + (uint64_t)i) * REGION;
			if (zn_aio_read(w->f, check + i * REGION, lens[i], off, &reqs[i]))
				w->failures++;
		}
		for (int i = 0; i < NREQ; i++) {
			/* Poll some, block on others. */
			if (i % 2)
				while (!zn_aio_done(reqs[i]))
					usleep(10);
			if (zn_aio_wait(reqs[i]) != (ssize_t)lens[i])
				w->failures++;
			if (memcmp(check + i * REGION, buf + i * REGION, lens[i]) != 0)
				w->failures++;
		}
	}
	zn_hostmem_free(buf, NREQ * REGION);
	zn_hostmem_free(check, NREQ * REGION);
	return NULL;
}

static void test_many_outstanding(void **state)
{
	(void)state;
	struct engine_case c = { "many", 128 * KiB, 8, 3, false, true, false, false };
	struct zn_aio *aio = make(&c);
	struct zn_aio_file *f;
	pthread_t th[NTHREADS];
	struct worker w[NTHREADS];

	assert_non_null(aio);
	assert_int_equal(zn_aio_open(aio, tu_path("many.dat"), ZN_AIO_RDWR | ZN_AIO_CREATE,
				     (uint64_t)NTHREADS * NREQ * REGION, &f),
			 0);
	for (unsigned i = 0; i < NTHREADS; i++) {
		w[i] = (struct worker){ f, i, 0 };
		assert_int_equal(pthread_create(&th[i], NULL, many_worker, &w[i]), 0);
	}
	for (unsigned i = 0; i < NTHREADS; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(w[i].failures, 0);
	}
	assert_int_equal(zn_aio_close(f), 0);
	zn_aio_destroy(aio);
	unlink(tu_path("many.dat"));
}

/* Reads past the end of file return the bytes that exist. */
static void test_read_past_eof(void **state)
{
	(void)state;
	struct engine_case c = { "eof", 64 * KiB, 8, 2, true, true, false, false };
	const size_t fsize = 300 * KiB + 1000; /* not a multiple of the alignment */
	uint8_t *data = zn_hostmem_alloc(fsize, 0);
	uint8_t *buf = zn_hostmem_alloc(1 * MiB, 0);
	struct zn_aio *aio = make(&c);
	struct zn_aio_file *f;

	assert_non_null(aio);
	tu_fill_random(data, fsize, 3);
	FILE *fp = fopen(tu_path("eof.dat"), "wb");
	assert_non_null(fp);
	assert_int_equal(fwrite(data, 1, fsize, fp), fsize);
	assert_int_equal(fclose(fp), 0);

	for (unsigned flags = ZN_AIO_RDONLY; flags <= ZN_AIO_BUFFERED; flags += ZN_AIO_BUFFERED) {
		assert_int_equal(zn_aio_open(aio, tu_path("eof.dat"), flags, 0, &f), 0);
		assert_int_equal(zn_aio_file_direct(f), !(flags & ZN_AIO_BUFFERED));
		/* A request straddling EOF: several pieces, the last ones empty. */
		memset(buf, 0, 1 * MiB);
		assert_int_equal(zn_aio_pread(f, buf, 1 * MiB, 0), (ssize_t)fsize);
		assert_memory_equal(buf, data, fsize);
		/* Starting inside the last block. */
		assert_int_equal(zn_aio_pread(f, buf, 64 * KiB, 256 * KiB),
				 (ssize_t)(fsize - 256 * KiB));
		assert_memory_equal(buf, data + 256 * KiB, fsize - 256 * KiB);
		/* Entirely past the end. */
		assert_int_equal(zn_aio_pread(f, buf, 8 * KiB, 1 * MiB), 0);
		assert_int_equal(zn_aio_close(f), 0);
	}
	zn_aio_destroy(aio);
	zn_hostmem_free(data, fsize);
	zn_hostmem_free(buf, 1 * MiB);
	unlink(tu_path("eof.dat"));
}

/* Short transfers in the middle of a file: the test hook ZINC_AIO_SHORTEN=1
 * reports every transfer as about half of what it moved (and overwrites a
 * read's bytes beyond that), so each piece completes short again and again
 * and only resubmitting the rest gives the data back.  Direct and buffered
 * files, one ring and several, reads and writes. */
static void test_short_transfers(void **state)
{
	(void)state;
	const size_t fsize = 3 * MiB + 12 * KiB;
	uint8_t *data = zn_hostmem_alloc(fsize, 0);
	uint8_t *buf = zn_hostmem_alloc(fsize, 0);
	assert_non_null(data);
	assert_non_null(buf);
	tu_fill_random(data, fsize, 77);

	assert_int_equal(setenv("ZINC_AIO_SHORTEN", "x", 1), 0);
	struct zn_aio_config cfg;
	zn_aio_config_default(&cfg);
	assert_null(zn_aio_create(&cfg));
	assert_non_null(strstr(zn_last_error(), "ZINC_AIO_SHORTEN='x'"));

	assert_int_equal(setenv("ZINC_AIO_SHORTEN", "1", 1), 0);
	const struct engine_case shorts[] = {
		{ "short-1-ring", 1 * MiB, 8, 1, false, true, false, false },
		{ "short-3-rings", 64 * KiB, 4, 3, true, true, false, false },
	};
	for (size_t ci = 0; ci < sizeof(shorts) / sizeof(shorts[0]); ci++) {
		struct zn_aio *aio = make(&shorts[ci]);
		assert_non_null(aio);
		for (unsigned flags = ZN_AIO_RDWR; flags <= (ZN_AIO_RDWR | ZN_AIO_BUFFERED);
		     flags += ZN_AIO_BUFFERED) {
			struct zn_aio_file *f;
			assert_int_equal(zn_aio_open(aio, tu_path("short.dat"),
						     flags | ZN_AIO_CREATE | ZN_AIO_TRUNC, fsize, &f),
					 0);
			if (shorts[ci].fixed) {
				assert_int_equal(zn_aio_register_buffer(aio, data, fsize), 0);
				assert_int_equal(zn_aio_register_buffer(aio, buf, fsize), 0);
			}
			zn_aio_stats_reset(aio);
			assert_int_equal(zn_aio_pwrite(f, data, fsize, 0), (ssize_t)fsize);
			/* The whole file, then a request in its middle. */
			memset(buf, 0, fsize);
			assert_int_equal(zn_aio_pread(f, buf, fsize, 0), (ssize_t)fsize);
			assert_memory_equal(buf, data, fsize);
			memset(buf, 0, fsize);
			assert_int_equal(zn_aio_pread(f, buf, 1 * MiB + 8 * KiB, 1 * MiB),
					 (ssize_t)(1 * MiB + 8 * KiB));
			assert_memory_equal(buf, data + 1 * MiB, 1 * MiB + 8 * KiB);
			struct zn_aio_stats st;
			zn_aio_stats_get(aio, &st);
			/* Each piece was cut in halves down to one alignment unit. */
			assert_true(st.resubmits >= 3 * fsize / shorts[ci].block_size);
			assert_int_equal(st.errors, 0);
			/* The file itself holds the data (the writes were resumed). */
			FILE *fp = fopen(tu_path("short.dat"), "rb");
			assert_non_null(fp);
			assert_int_equal(fread(buf, 1, fsize, fp), fsize);
			fclose(fp);
			assert_memory_equal(buf, data, fsize);
			if (shorts[ci].fixed) {
				assert_int_equal(zn_aio_unregister_buffer(aio, data), 0);
				assert_int_equal(zn_aio_unregister_buffer(aio, buf), 0);
			}
			assert_int_equal(zn_aio_close(f), 0);
		}
		zn_aio_destroy(aio);
	}
	unsetenv("ZINC_AIO_SHORTEN");
	zn_hostmem_free(data, fsize);
	zn_hostmem_free(buf, fsize);
	unlink(tu_path("short.dat"));
}

/* O_DIRECT rejects misaligned buffers, offsets and lengths up front with a
 * message naming the alignment; nothing is submitted. */
static void test_misaligned(void **state)
{
	(void)state;
	struct engine_case c = { "mis", 64 * KiB, 8, 1, false, true, false, false };
	struct zn_aio *aio = make(&c);
	struct zn_aio_file *f;
	uint8_t *buf = zn_hostmem_alloc(1 * MiB, 0);
	struct zn_aio_req *req = (struct zn_aio_req *)&req;
	char want[64];

	assert_non_null(aio);
	assert_int_equal(zn_aio_open(aio, tu_path("mis.dat"), ZN_AIO_RDWR | ZN_AIO_CREATE,
				     1 * MiB, &f),
			 0);
	snprintf(want, sizeof(want), "multiples of %u bytes", zn_aio_file_align(f));
	const struct {
		size_t boff, len;
		uint64_t off;
	} bad[] = { { 1, 4096, 0 }, { 0, 4096, 512 + 1 }, { 0, 1000, 0 }, { 0, 4097, 4096 } };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(zn_aio_read(f, buf + bad[i].boff, bad[i].len, bad[i].off, &req),
				 -EINVAL);
		assert_null(req);
		assert_non_null(strstr(zn_last_error(), want));
		assert_non_null(strstr(zn_last_error(), "mis.dat"));
		assert_int_equal(zn_aio_pwrite(f, buf + bad[i].boff, bad[i].len, bad[i].off),
				 -EINVAL);
	}
	/* Zero-length requests complete at once with 0. */
	assert_int_equal(zn_aio_read(f, buf, 0, 0, &req), 0);
	assert_true(zn_aio_done(req));
	assert_int_equal(zn_aio_wait(req), 0);
	assert_int_equal(zn_aio_close(f), 0);
	zn_aio_destroy(aio);
	zn_hostmem_free(buf, 1 * MiB);
	unlink(tu_path("mis.dat"));
}

/* The latency histogram's percentiles bound the recorded values. */
static void test_percentiles(void **state)
{
	(void)state;
	struct zn_aio_stats st;
	memset(&st, 0, sizeof(st));
	assert_int_equal(zn_aio_stats_percentile(&st, 50), 0);

	/* Run real I/O and check the histogram holds one entry per I/O. */
	struct engine_case c = { "lat", 64 * KiB, 4, 1, false, true, false, false };
	struct zn_aio *aio = make(&c);
	struct zn_aio_file *f;
	uint8_t *buf = zn_hostmem_alloc(1 * MiB, 0);
	assert_non_null(aio);
	assert_int_equal(zn_aio_open(aio, tu_path("lat.dat"), ZN_AIO_RDWR | ZN_AIO_CREATE, 1 * MiB,
				     &f),
			 0);
	uint64_t t0 = 0;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	t0 = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	assert_int_equal(zn_aio_pwrite(f, buf, 1 * MiB, 0), (ssize_t)(1 * MiB));
	clock_gettime(CLOCK_MONOTONIC, &ts);
	uint64_t elapsed = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec - t0;
	zn_aio_stats_get(aio, &st);
	uint64_t n = 0;
	for (size_t i = 0; i < sizeof(st.lat_hist) / sizeof(st.lat_hist[0]); i++)
		n += st.lat_hist[i];
	assert_int_equal(n, st.ios);
	assert_int_equal(st.ios, 16);
	/* No single I/O can take longer than the whole request (+6% bucket). */
	assert_true(zn_aio_stats_percentile(&st, 100) <= elapsed + elapsed / 15);
	assert_true(zn_aio_stats_percentile(&st, 1) <= zn_aio_stats_percentile(&st, 99));
	assert_int_equal(zn_aio_close(f), 0);
	zn_aio_destroy(aio);
	zn_hostmem_free(buf, 1 * MiB);
	unlink(tu_path("lat.dat"));
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
		cmocka_unit_test(test_round_trips),
		cmocka_unit_test(test_fixed_equals_plain),
		cmocka_unit_test(test_many_outstanding),
		cmocka_unit_test(test_read_past_eof),
		cmocka_unit_test(test_misaligned),
		cmocka_unit_test(test_short_transfers),
		cmocka_unit_test(test_percentiles),
	};
	return cmocka_run_group_tests(tests, NULL, teardown);
}
