/* common/threadpool.c and common/cpu.c: every task runs exactly once, every
 * worker once per job, workers bound one per core, no lost wake-ups, and
 * the CPU probe agrees with the compiler's own. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "zn_common.h"
#include "zinc/cpu.h"
#include "zinc/hostmem.h"
#include "zinc/threadpool.h"

static unsigned online_cpus(void)
{
	cpu_set_t cs;
	CPU_ZERO(&cs);
	sched_getaffinity(0, sizeof(cs), &cs);
	return (unsigned)CPU_COUNT(&cs);
}

struct seen {
	atomic_uint calls[64];
	cpu_set_t affinity[64];
	unsigned workers;
};

static void record(void *arg, unsigned worker, unsigned workers)
{
	struct seen *s = arg;
	s->workers = workers;
	if (worker >= 64) /* machines with more cores: the first 64 are checked */
		return;
	atomic_fetch_add(&s->calls[worker], 1);
	CPU_ZERO(&s->affinity[worker]);
	pthread_getaffinity_np(pthread_self(), sizeof(cpu_set_t), &s->affinity[worker]);
}

static void test_run_once_per_worker_and_bound(void **state)
{
	(void)state;
	struct zn_threadpool *pool = zn_threadpool_create(0, -1);
	assert_non_null(pool);
	unsigned n = zn_threadpool_size(pool);
	/* One worker per core: on this machine's topology cores <= CPUs. */
	assert_true(n >= 1 && n <= online_cpus());
	static struct seen s;
	memset(&s, 0, sizeof(s));
	zn_threadpool_run(pool, record, &s);
	assert_int_equal(s.workers, n);
	for (unsigned w = 0; w < n && w < 64; w++) {
		assert_int_equal(atomic_load(&s.calls[w]), 1);
		if (strcmp(zn_threadpool_binding(pool), "unbound") == 0)
			continue;
		/* Bound: each worker to its own core, so no CPU shared between
		 * two workers' masks, and never the whole machine when there
		 * is more than one core. */
		if (n > 1)
			assert_true((unsigned)CPU_COUNT(&s.affinity[w]) < online_cpus());
		for (unsigned x = 0; x < w; x++) {
			cpu_set_t both;
			CPU_AND(&both, &s.affinity[w], &s.affinity[x]);
			assert_int_equal(CPU_COUNT(&both), 0);
		}
	}
	assert_non_null(strstr(zn_threadpool_binding(pool), "cores"));
	zn_threadpool_destroy(pool);
	zn_threadpool_destroy(NULL);
}

struct count_job {
	atomic_uchar *hits;
	atomic_uint max_worker;
	unsigned workers;
};

static void count_task(void *arg, size_t task, unsigned worker)
{
	struct count_job *j = arg;
	atomic_fetch_add(&j->hits[task], 1);
	unsigned m = atomic_load(&j->max_worker);
	while (worker > m && !atomic_compare_exchange_weak(&j->max_worker, &m, worker))
		;
}

static void test_for_each_task_once(void **state)
{
	(void)state;
	static const size_t counts[] = { 0, 1, 2, 3, 7, 64, 1000, 100003 };
	static const unsigned threads[] = { 1, 2, 3, 8 };
	for (size_t t = 0; t < ZN_ARRAY_SIZE(threads); t++) {
		struct zn_threadpool *pool = zn_threadpool_create(threads[t], -1);
		assert_non_null(pool);
		assert_int_equal(zn_threadpool_size(pool), threads[t]);
		for (size_t c = 0; c < ZN_ARRAY_SIZE(counts); c++) {
			struct count_job j = { .hits = calloc(counts[c] + 1, 1) };
			zn_threadpool_for(pool, counts[c], count_task, &j);
			for (size_t i = 0; i < counts[c]; i++)
				if (atomic_load(&j.hits[i]) != 1)
					fail_msg("threads %u, count %zu: task %zu ran %u times",
						 threads[t], counts[c], i, atomic_load(&j.hits[i]));
			assert_true(atomic_load(&j.max_worker) < threads[t]);
			free(j.hits);
		}
		zn_threadpool_destroy(pool);
	}
	/* No pool: in order, in the calling thread. */
	struct count_job j = { .hits = calloc(10, 1) };
	zn_threadpool_for(NULL, 10, count_task, &j);
	for (size_t i = 0; i < 10; i++)
		assert_int_equal(atomic_load(&j.hits[i]), 1);
	assert_int_equal(atomic_load(&j.max_worker), 0);
	free(j.hits);
}

static void add_one(void *arg, size_t task, unsigned worker)
{
	(void)task;
	(void)worker;
	atomic_fetch_add((atomic_ulong *)arg, 1);
}

/* Many tiny jobs back to back: a lost wake-up or a worker running a job
 * twice shows up as a hang (meson's timeout) or a wrong count. */
static void test_many_small_jobs(void **state)
{
	(void)state;
	struct zn_threadpool *pool = zn_threadpool_create(3, -1);
	assert_non_null(pool);
	atomic_ulong total = 0;
	for (int i = 0; i < 20000; i++)
		zn_threadpool_for(pool, 5, add_one, &total);
	assert_int_equal(atomic_load(&total), 100000);
	zn_threadpool_destroy(pool);
}

struct submitter {
	struct zn_threadpool *pool;
	atomic_ulong *total;
};

static void *submit_loop(void *p)
{
	struct submitter *s = p;
	for (int i = 0; i < 2000; i++)
		zn_threadpool_for(s->pool, 7, add_one, s->total);
	return NULL;
}

/* Two threads submitting to one pool: jobs queue, none is lost. */
static void test_concurrent_submitters(void **state)
{
	(void)state;
	struct zn_threadpool *pool = zn_threadpool_create(2, -1);
	assert_non_null(pool);
	atomic_ulong total = 0;
	struct submitter s = { pool, &total };
	pthread_t a, b;
	pthread_create(&a, NULL, submit_loop, &s);
	pthread_create(&b, NULL, submit_loop, &s);
	pthread_join(a, NULL);
	pthread_join(b, NULL);
	assert_int_equal(atomic_load(&total), 2 * 2000 * 7);
	zn_threadpool_destroy(pool);
}

static void test_numa(void **state)
{
	(void)state;
	/* Node 0 exists on every Linux machine. */
	struct zn_threadpool *pool = zn_threadpool_create(2, 0);
	assert_non_null(pool);
	assert_true(zn_threadpool_numa_node(pool) == 0 ||
		    strcmp(zn_threadpool_binding(pool), "unbound") == 0);
	zn_threadpool_destroy(pool);

	assert_null(zn_threadpool_create(1, 4000));
	assert_non_null(strstr(zn_last_error(), "NUMA node 4000 does not exist"));
	assert_null(zn_threadpool_create(5000, -1));
	assert_non_null(strstr(zn_last_error(), "5000 threads"));

	/* Near touched memory: its node; near untouched memory: all cores. */
	size_t len = 8 << 20;
	char *mem = zn_hostmem_alloc(len, ZN_HOSTMEM_PREFAULT);
	assert_non_null(mem);
	pool = zn_threadpool_create_near(1, mem, len);
	assert_non_null(pool);
	/* Its node where the OS says (move_pages); -1 where it cannot tell
	 * (some containers filter the call). */
	if (zn_threadpool_numa_node(pool) < 0)
		print_message("# the OS did not say where the pages are; pool on all cores\n");
	else
		assert_non_null(strstr(zn_threadpool_binding(pool), "node "));
	zn_threadpool_destroy(pool);
	zn_hostmem_free(mem, len);
	mem = zn_hostmem_alloc(len, 0);
	pool = zn_threadpool_create_near(1, mem, len);
	assert_non_null(pool);
	assert_int_equal(zn_threadpool_numa_node(pool), -1);
	zn_threadpool_destroy(pool);
	zn_hostmem_free(mem, len);
}

static void test_more_workers_than_cores(void **state)
{
	(void)state;
	unsigned n = online_cpus() + 3;
	struct zn_threadpool *pool = zn_threadpool_create(n, -1);
	assert_non_null(pool);
	static struct seen s;
	memset(&s, 0, sizeof(s));
	zn_threadpool_run(pool, record, &s);
	for (unsigned w = 0; w < n && w < 64; w++)
		assert_int_equal(atomic_load(&s.calls[w]), 1);
	zn_threadpool_destroy(pool);
}

/* The probe against the compiler's own (GCC's __builtin_cpu_supports also
 * reads CPUID and XGETBV). */
static void test_cpu_probe(void **state)
{
	(void)state;
#if defined(__x86_64__)
	__builtin_cpu_init();
	assert_int_equal(zn_cpu_has(ZN_CPU_AVX), !!__builtin_cpu_supports("avx"));
	assert_int_equal(zn_cpu_has(ZN_CPU_AVX2), !!__builtin_cpu_supports("avx2"));
	assert_int_equal(zn_cpu_has(ZN_CPU_FMA), !!__builtin_cpu_supports("fma"));
	assert_int_equal(zn_cpu_has(ZN_CPU_AVX512F), !!__builtin_cpu_supports("avx512f"));
	assert_int_equal(zn_cpu_has(ZN_CPU_AVX512BW), !!__builtin_cpu_supports("avx512bw"));
	assert_int_equal(zn_cpu_has(ZN_CPU_AVX512VL), !!__builtin_cpu_supports("avx512vl"));
	assert_int_equal(zn_cpu_has(ZN_CPU_AVX512DQ), !!__builtin_cpu_supports("avx512dq"));
#endif
	assert_false(zn_cpu_has(ZN_CPU_FEATURE_COUNT));
	assert_string_equal(zn_cpu_feature_name(ZN_CPU_AVX512F), "avx512f");
	assert_string_equal(zn_cpu_feature_name(ZN_CPU_FEATURE_COUNT), "?");
	for (int f = 0; f < ZN_CPU_FEATURE_COUNT; f++)
		assert_string_not_equal(zn_cpu_feature_name((enum zn_cpu_feature)f), "?");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_run_once_per_worker_and_bound),
		cmocka_unit_test(test_for_each_task_once),
		cmocka_unit_test(test_many_small_jobs),
		cmocka_unit_test(test_concurrent_submitters),
		cmocka_unit_test(test_numa),
		cmocka_unit_test(test_more_workers_than_cores),
		cmocka_unit_test(test_cpu_probe),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
