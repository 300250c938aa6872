/* A persistent thread pool bound with hwloc (see include/zinc/threadpool.h).
 *
 * Workers sleep on a condition variable and wake when the job generation
 * changes; the last worker to finish a job wakes the submitter.  Jobs are
 * large (an optimizer pass over millions of elements), so a mutex and two
 * condition variables per job cost nothing measurable, and sleeping workers
 * leave the cores to everyone else between steps.
 */
#include "zn_common.h"

#include <hwloc.h>
#include <hwloc/glibc-sched.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zinc/threadpool.h"

struct worker {
	struct zn_threadpool *pool;
	unsigned index;
	pthread_t tid;
};

struct zn_threadpool {
	unsigned n;
	struct worker *workers;
	int node;           /* NUMA node bound to, or -1 */
	char binding[256];  /* for humans */

	pthread_mutex_t run_lock; /* one job at a time */
	pthread_mutex_t lock;     /* guards everything below */
	pthread_cond_t wake;      /* workers: a new generation or stop */
	pthread_cond_t done;      /* submitter: running reached 0 */
	uint64_t gen;
	unsigned running;
	bool stop;
	zn_threadpool_fn fn;
	void *arg;
};

static void *worker_main(void *p)
{
	struct worker *w = p;
	struct zn_threadpool *pool = w->pool;
	uint64_t seen = 0;

	for (;;) {
		pthread_mutex_lock(&pool->lock);
		while (pool->gen == seen && !pool->stop)
			pthread_cond_wait(&pool->wake, &pool->lock);
		if (pool->stop) {
			pthread_mutex_unlock(&pool->lock);
			return NULL;
		}
		seen = pool->gen;
		zn_threadpool_fn fn = pool->fn;
		void *arg = pool->arg;
		pthread_mutex_unlock(&pool->lock);

		fn(arg, w->index, pool->n);

		pthread_mutex_lock(&pool->lock);
		if (--pool->running == 0)
			pthread_cond_signal(&pool->done);
		pthread_mutex_unlock(&pool->lock);
	}
}

static void stop_workers(struct zn_threadpool *pool, unsigned started)
{
	pthread_mutex_lock(&pool->lock);
	pool->stop = true;
	pthread_cond_broadcast(&pool->wake);
	pthread_mutex_unlock(&pool->lock);
	for (unsigned i = 0; i < started; i++)
		pthread_join(pool->workers[i].tid, NULL);
}

static void free_pool(struct zn_threadpool *pool)
{
	pthread_cond_destroy(&pool->done);
	pthread_cond_destroy(&pool->wake);
	pthread_mutex_destroy(&pool->lock);
	pthread_mutex_destroy(&pool->run_lock);
	free(pool->workers);
	free(pool);
}

/* The cores (as cpusets) inside `set`, in topology order; PUs when the
 * topology reports no cores.  Returns the count; *out is malloc'ed. */
static unsigned cores_in(hwloc_topology_t topo, hwloc_const_cpuset_t set, hwloc_bitmap_t **out)
{
	hwloc_obj_type_t type = HWLOC_OBJ_CORE;
	int n = hwloc_get_nbobjs_inside_cpuset_by_type(topo, set, type);
	if (n <= 0) {
		type = HWLOC_OBJ_PU;
		n = hwloc_get_nbobjs_inside_cpuset_by_type(topo, set, type);
	}
	if (n <= 0)
		return 0;
	hwloc_bitmap_t *sets = calloc((size_t)n, sizeof(*sets));
	if (!sets)
		return 0;
	for (int i = 0; i < n; i++) {
		hwloc_obj_t o = hwloc_get_obj_inside_cpuset_by_type(topo, set, type, (unsigned)i);
		sets[i] = hwloc_bitmap_dup(o->cpuset);
		hwloc_bitmap_and(sets[i], sets[i], set);
	}
	*out = sets;
	return (unsigned)n;
}

static struct zn_threadpool *create(unsigned threads, int numa_node, const void *mem,
				    size_t bytes, bool near)
{
	hwloc_topology_t topo;
	hwloc_bitmap_t *cores = NULL;
	unsigned ncores = 0;
	struct zn_threadpool *pool = NULL;
	bool bound = true;

	if (threads > 4096) {
		zn_set_error("zn_threadpool_create: %u threads asked for; at most 4096", threads);
		return NULL;
	}
	if (hwloc_topology_init(&topo) != 0 || hwloc_topology_load(topo) != 0) {
		zn_set_error("zn_threadpool_create: hwloc cannot read the machine's topology");
		return NULL;
	}
	if (near && mem && bytes) {
		/* Which node holds the memory: pages not touched yet belong to
		 * no node, and then every core is as good as any. */
		hwloc_nodeset_t where = hwloc_bitmap_alloc();
		numa_node = -1;
		if (where && hwloc_get_area_memlocation(topo, mem, bytes, where,
							HWLOC_MEMBIND_BYNODESET) == 0 &&
		    !hwloc_bitmap_iszero(where)) {
			numa_node = hwloc_bitmap_first(where);
			if (hwloc_bitmap_weight(where) > 1)
				zn_info("thread pool: the memory spans several NUMA nodes; "
					"binding to node %d, the first", numa_node);
		}
		hwloc_bitmap_free(where);
	}

	hwloc_const_cpuset_t set = hwloc_topology_get_allowed_cpuset(topo);
	hwloc_bitmap_t node_set = NULL;
	if (numa_node >= 0) {
		hwloc_obj_t node = hwloc_get_numanode_obj_by_os_index(topo, (unsigned)numa_node);
		if (!node) {
			zn_set_error("zn_threadpool_create: NUMA node %d does not exist: this machine "
				     "has %d node(s); pass -1 for all cores",
				     numa_node, hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_NUMANODE));
			goto out;
		}
		node_set = hwloc_bitmap_dup(node->cpuset);
		hwloc_bitmap_and(node_set, node_set, set);
		if (hwloc_bitmap_iszero(node_set)) {
			zn_set_error("zn_threadpool_create: NUMA node %d has no core this process "
				     "may use; pass -1 for all cores", numa_node);
			goto out;
		}
		set = node_set;
	}
	ncores = cores_in(topo, set, &cores);
	if (ncores == 0)
		bound = false;

	pool = calloc(1, sizeof(*pool));
	if (!pool) {
		zn_set_error("zn_threadpool_create: out of memory");
		goto out;
	}
	pool->n = threads ? threads : (ncores ? ncores : 1);
	pool->node = bound ? numa_node : -1;
	pool->workers = calloc(pool->n, sizeof(*pool->workers));
	if (!pool->workers) {
		free(pool);
		pool = NULL;
		zn_set_error("zn_threadpool_create: out of memory");
		goto out;
	}
	pthread_mutex_init(&pool->run_lock, NULL);
	pthread_mutex_init(&pool->lock, NULL);
	pthread_cond_init(&pool->wake, NULL);
	pthread_cond_init(&pool->done, NULL);

	if (bound) {
		/* "node 0, cores 0,1": OS indexes of each worker's first PU. */
		int len = numa_node >= 0 ? snprintf(pool->binding, sizeof(pool->binding),
						    "node %d, cores ", numa_node)
					 : snprintf(pool->binding, sizeof(pool->binding), "cores ");
		for (unsigned i = 0; i < ZN_MIN(pool->n, ncores) && len < (int)sizeof(pool->binding);
		     i++)
			len += snprintf(pool->binding + len, sizeof(pool->binding) - (size_t)len,
					"%s%d", i ? "," : "", hwloc_bitmap_first(cores[i]));
		if (pool->n > ncores && len < (int)sizeof(pool->binding))
			snprintf(pool->binding + len, sizeof(pool->binding) - (size_t)len,
				 " (%u workers share %u cores)", pool->n, ncores);
	} else {
		snprintf(pool->binding, sizeof(pool->binding), "unbound");
	}

	for (unsigned i = 0; i < pool->n; i++) {
		pthread_attr_t attr;
		pthread_attr_init(&attr);
		if (bound) {
			/* Born bound: the thread never runs, nor first-touches
			 * memory, anywhere else. */
			cpu_set_t cs;
			hwloc_cpuset_to_glibc_sched_affinity(topo, cores[i % ncores], &cs, sizeof(cs));
			if (pthread_attr_setaffinity_np(&attr, sizeof(cs), &cs) != 0)
				bound = false;
		}
		pool->workers[i] = (struct worker){ .pool = pool, .index = i };
		int rc = pthread_create(&pool->workers[i].tid, &attr, worker_main, &pool->workers[i]);
		if (rc == EINVAL && bound) {
			/* The OS refused the affinity (a restricted cpuset). */
			pthread_attr_destroy(&attr);
			pthread_attr_init(&attr);
			bound = false;
			rc = pthread_create(&pool->workers[i].tid, &attr, worker_main,
					    &pool->workers[i]);
		}
		pthread_attr_destroy(&attr);
		if (rc != 0) {
			zn_set_error("zn_threadpool_create: cannot start thread %u of %u: %s", i + 1,
				     pool->n, strerror(rc));
			stop_workers(pool, i);
			free_pool(pool);
			pool = NULL;
			goto out;
		}
		if (!bound && ncores) {
			static atomic_bool warned;
			if (!atomic_exchange(&warned, true))
				zn_warn("thread pool: the OS refused to bind threads to cores; "
					"running unbound");
			snprintf(pool->binding, sizeof(pool->binding), "unbound");
			pool->node = -1;
			ncores = 0; /* bind no further thread */
		}
	}
out:
	for (unsigned i = 0; i < ncores; i++)
		hwloc_bitmap_free(cores[i]);
	free(cores);
	if (node_set)
		hwloc_bitmap_free(node_set);
	hwloc_topology_destroy(topo);
	return pool;
}

struct zn_threadpool *zn_threadpool_create(unsigned threads, int numa_node)
{
	return create(threads, numa_node < 0 ? -1 : numa_node, NULL, 0, false);
}

struct zn_threadpool *zn_threadpool_create_near(unsigned threads, const void *mem, size_t bytes)
{
	return create(threads, -1, mem, bytes, true);
}

void zn_threadpool_destroy(struct zn_threadpool *pool)
{
	if (!pool)
		return;
	pthread_mutex_lock(&pool->run_lock);
	stop_workers(pool, pool->n);
	pthread_mutex_unlock(&pool->run_lock);
	free_pool(pool);
}

unsigned zn_threadpool_size(const struct zn_threadpool *pool)
{
	return pool ? pool->n : 1;
}

int zn_threadpool_numa_node(const struct zn_threadpool *pool)
{
	return pool ? pool->node : -1;
}

const char *zn_threadpool_binding(const struct zn_threadpool *pool)
{
	return pool ? pool->binding : "unbound";
}

void zn_threadpool_name(struct zn_threadpool *pool, const char *prefix)
{
	for (unsigned i = 0; pool && i < pool->n; i++) {
		char name[16], num[12];
		int k = snprintf(num, sizeof(num), "-%u", i);
		snprintf(name, sizeof(name), "%.*s%s", (int)sizeof(name) - 1 - k, prefix, num);
		pthread_setname_np(pool->workers[i].tid, name);
	}
}

void zn_threadpool_run(struct zn_threadpool *pool, zn_threadpool_fn fn, void *arg)
{
	if (!pool) {
		fn(arg, 0, 1);
		return;
	}
	pthread_mutex_lock(&pool->run_lock);
	pthread_mutex_lock(&pool->lock);
	pool->fn = fn;
	pool->arg = arg;
	pool->running = pool->n;
	pool->gen++;
	pthread_cond_broadcast(&pool->wake);
	while (pool->running)
		pthread_cond_wait(&pool->done, &pool->lock);
	pthread_mutex_unlock(&pool->lock);
	pthread_mutex_unlock(&pool->run_lock);
}

struct for_job {
	zn_threadpool_task_fn fn;
	void *arg;
	size_t count;
	atomic_size_t next; /* the next task not yet handed out */
};

static void for_worker(void *p, unsigned worker, unsigned workers)
{
	struct for_job *job = p;
	(void)workers;
	/* relaxed: the counter only hands out indexes; the job's data was
	 * published by the pool's mutex before any worker woke. */
	for (;;) {
		size_t t = atomic_fetch_add_explicit(&job->next, 1, memory_order_relaxed);
		if (t >= job->count)
			return;
		job->fn(job->arg, t, worker);
	}
}

void zn_threadpool_for(struct zn_threadpool *pool, size_t count, zn_threadpool_task_fn fn,
		       void *arg)
{
	if (count == 0)
		return;
	if (!pool) {
		for (size_t t = 0; t < count; t++)
			fn(arg, t, 0);
		return;
	}
	struct for_job job = { .fn = fn, .arg = arg, .count = count };
	atomic_init(&job.next, 0);
	zn_threadpool_run(pool, for_worker, &job);
}
