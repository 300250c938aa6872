/* The pinned buffer pool: one huge-page-backed region cut into equal,
 * 4 KiB-aligned buffers, bound to the disk's NUMA node, page-locked and
 * registered with io_uring as fixed buffers. */
#include "zn_common.h"

#include <hwloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "zinc/hostmem.h"
#include "zinc/offload.h"
#include "zn_build.h"

#if ZN_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

struct zn_bufpool {
	uint8_t *base;
	size_t bytes;          /* whole region */
	size_t buf_bytes;      /* each buffer */
	size_t count;
	bool pinned;
	bool cuda_registered;  /* cudaHostRegister, else mlock when pinned */
	bool aio_registered;
	bool over_memlock;     /* not pinned: the locked-memory limit is below it */
	struct zn_aio *aio;
	int numa_node;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	size_t nfree;
	uint32_t *free_stack;  /* indices of free buffers */
	uint8_t *in_use;       /* per buffer, to catch double releases */
};

/* The NUMA node of the block device holding `path`, from sysfs; -1 when
 * unknown (virtual disks, single-node machines). */
static int numa_node_of_path(const char *path)
{
	struct stat st;
	char sys[128];
	int node = -1;

	if (!path || stat(path, &st) != 0)
		return -1;
	/* Partitions have no device/ link of their own; their parent does. */
	static const char *const fmts[] = {
		"/sys/dev/block/%u:%u/device/numa_node",
		"/sys/dev/block/%u:%u/../device/numa_node",
	};
	for (size_t i = 0; i < ZN_ARRAY_SIZE(fmts) && node < 0; i++) {
		snprintf(sys, sizeof(sys), fmts[i], major(st.st_dev), minor(st.st_dev));
		FILE *f = fopen(sys, "re");
		if (!f)
			continue;
		if (fscanf(f, "%d", &node) != 1)
			node = -1;
		fclose(f);
	}
	return node;
}

/* Bind [p, p+len) to NUMA node `node` before it is faulted in. */
static int bind_to_node(void *p, size_t len, int node)
{
	hwloc_topology_t topo;
	int rc = -1;

	if (hwloc_topology_init(&topo) != 0)
		return -1;
	if (hwloc_topology_load(topo) == 0) {
		hwloc_obj_t obj = hwloc_get_numanode_obj_by_os_index(topo, (unsigned)node);
		if (obj)
			rc = hwloc_set_area_membind(topo, p, len, obj->nodeset, HWLOC_MEMBIND_BIND,
						    HWLOC_MEMBIND_BYNODESET);
	}
	hwloc_topology_destroy(topo);
	return rc;
}

static void pin(struct zn_bufpool *p)
{
	char sz[32], lim[32];
	struct rlimit rl;

	zn_format_size(p->bytes, sz, sizeof(sz));
#if ZN_HAVE_CUDA
	/* Registered with CUDA, the same pages serve DMA to the GPU and
	 * O_DIRECT from the disk: no bounce copy in between. */
	if (cudaHostRegister(p->base, p->bytes, cudaHostRegisterDefault) == cudaSuccess) {
		p->pinned = p->cuda_registered = true;
		return;
	}
	(void)cudaGetLastError(); /* no GPU here: clear the error, fall back to mlock */
#endif
	if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    rl.rlim_cur < p->bytes && geteuid() != 0) {
		zn_log(zn_log_first(ZN_ONCE_UNPINNED) ? ZN_LOG_WARN : ZN_LOG_INFO,
		       "pin_memory: the locked-memory limit (ulimit -l) is %s, the buffer pool "
		       "needs %s; continuing with unpinned buffers (raise the limit, e.g. "
		       "`ulimit -l unlimited`, or set pin_memory: false to silence this)",
		       zn_format_size(rl.rlim_cur, lim, sizeof(lim)), sz);
		p->over_memlock = true;
		return;
	}
	if (mlock(p->base, p->bytes) != 0) {
		/* ENOMEM: this pool with those locked before goes over the
		 * limit -- the cause the user is told about once. */
		int e = errno;
		zn_log(e != ENOMEM || zn_log_first(ZN_ONCE_UNPINNED) ? ZN_LOG_WARN : ZN_LOG_INFO,
		       "pin_memory: cannot lock %s of buffers (%s); continuing unpinned", sz,
		       strerror(e));
		p->over_memlock = e == ENOMEM;
		return;
	}
	p->pinned = true;
}

struct zn_bufpool *zn_bufpool_create(const struct zn_bufpool_config *cfg, struct zn_aio *aio)
{
	struct zn_bufpool *p;
	char sz[32];

	if (!cfg || cfg->buffer_count == 0 || cfg->buffer_bytes == 0) {
		zn_set_error("buffer pool: buffer_count and buffer_size must be at least 1");
		return NULL;
	}
	if (cfg->buffer_count > (1u << 20)) {
		zn_set_error("buffer pool: buffer_count %zu is above the limit of 1048576",
			     cfg->buffer_count);
		return NULL;
	}
	p = calloc(1, sizeof(*p));
	if (!p)
		goto oom;
	p->count = cfg->buffer_count;
	/* zn_bufpool_bytes's rule: 4 KiB multiples. */
	p->buf_bytes = ZN_ALIGN_UP(cfg->buffer_bytes, 4096);
	if (p->buf_bytes > SIZE_MAX / p->count) {
		zn_set_error("buffer pool: %zu buffers of %zu bytes overflow", p->count,
			     p->buf_bytes);
		free(p);
		return NULL;
	}
	p->bytes = p->count * p->buf_bytes;
	p->free_stack = calloc(p->count, sizeof(*p->free_stack));
	p->in_use = calloc(p->count, 1);
	if (!p->free_stack || !p->in_use)
		goto oom;

	p->base = zn_hostmem_alloc(p->bytes, ZN_HOSTMEM_HUGE);
	if (!p->base) {
		zn_set_error("buffer pool: %s (buffer_count %zu x %s)", zn_last_error(), p->count,
			     zn_format_size(p->buf_bytes, sz, sizeof(sz)));
		goto fail;
	}
	p->numa_node = cfg->numa_node >= 0 ? cfg->numa_node : numa_node_of_path(cfg->near_path);
	if (p->numa_node >= 0 && bind_to_node(p->base, p->bytes, p->numa_node) != 0) {
		zn_info("buffer pool: cannot bind to NUMA node %d; memory stays where the kernel "
			"puts it", p->numa_node);
		p->numa_node = -1;
	}
	/* Fault everything in now, on the bound node, as huge pages. */
	if (madvise(p->base, p->bytes, 23 /* MADV_POPULATE_WRITE */) != 0)
		memset(p->base, 0, p->bytes);
	if (cfg->pin_memory)
		pin(p);
	if (aio && p->over_memlock) {
		/* Registering fixed buffers locks their pages under the same
		 * limit: it cannot succeed, and the limit was said. */
		zn_info("buffer pool: not registered as io_uring fixed buffers (over the "
			"locked-memory limit); using plain I/O");
	} else if (aio) {
		int rrc = zn_aio_register_buffer(aio, p->base, p->bytes);
		if (rrc != 0) {
			/* Plain I/O still works; only the fixed-buffer fast path is
			 * lost.  Over the locked-memory limit (-ENOMEM) it is the
			 * limit the user is told about once. */
			zn_log(rrc != -ENOMEM || zn_log_first(ZN_ONCE_UNPINNED) ? ZN_LOG_WARN
										  : ZN_LOG_INFO,
			       "buffer pool: %s; using plain I/O", zn_last_error());
		} else {
			p->aio = aio;
			p->aio_registered = true;
		}
	}

	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	for (size_t i = 0; i < p->count; i++)
		p->free_stack[i] = (uint32_t)(p->count - 1 - i); /* hand out buffer 0 first */
	p->nfree = p->count;
	return p;

oom:
	zn_set_error("buffer pool: out of memory");
fail:
	if (p) {
		free(p->free_stack);
		free(p->in_use);
	}
	free(p);
	return NULL;
}

void zn_bufpool_destroy(struct zn_bufpool *p)
{
	if (!p)
		return;
	if (p->nfree != p->count)
		zn_warn("buffer pool destroyed with %zu of %zu buffers still in use",
			p->count - p->nfree, p->count);
	if (p->aio_registered)
		zn_aio_unregister_buffer(p->aio, p->base);
#if ZN_HAVE_CUDA
	if (p->cuda_registered)
		cudaHostUnregister(p->base);
#endif
	if (p->pinned && !p->cuda_registered)
		munlock(p->base, p->bytes);
	zn_hostmem_free(p->base, p->bytes);
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	free(p->free_stack);
	free(p->in_use);
	free(p);
}

static void *take_locked(struct zn_bufpool *p)
{
	uint32_t i = p->free_stack[--p->nfree];
	p->in_use[i] = 1;
	return p->base + (size_t)i * p->buf_bytes;
}

int zn_bufpool_acquire(struct zn_bufpool *p, void **buf)
{
	pthread_mutex_lock(&p->lock);
	while (p->nfree == 0)
		pthread_cond_wait(&p->cond, &p->lock);
	*buf = take_locked(p);
	pthread_mutex_unlock(&p->lock);
	return 0;
}

int zn_bufpool_try_acquire(struct zn_bufpool *p, void **buf)
{
	int rc = 0;
	pthread_mutex_lock(&p->lock);
	if (p->nfree == 0) {
		*buf = NULL;
		rc = -EAGAIN;
	} else {
		*buf = take_locked(p);
	}
	pthread_mutex_unlock(&p->lock);
	return rc;
}

void zn_bufpool_release(struct zn_bufpool *p, void *buf)
{
	size_t off = (size_t)((uint8_t *)buf - p->base);
	size_t i = off / p->buf_bytes;

	pthread_mutex_lock(&p->lock);
	/* A pointer that is not a buffer start, or a double release, would
	 * corrupt the free stack: refuse it loudly (it is a caller bug). */
	if ((uint8_t *)buf < p->base || i >= p->count || off % p->buf_bytes || !p->in_use[i]) {
		pthread_mutex_unlock(&p->lock);
		zn_log(ZN_LOG_ERROR, "zn_bufpool_release: %p is not a buffer in use from this pool",
		       buf);
		return;
	}
	p->in_use[i] = 0;
	p->free_stack[p->nfree++] = (uint32_t)i;
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
}

uint64_t zn_bufpool_bytes(const struct zn_bufpool_config *cfg)
{
	/* 4 KiB multiples keep every buffer O_DIRECT-aligned for any disk. */
	return (uint64_t)cfg->buffer_count * ZN_ALIGN_UP((uint64_t)cfg->buffer_bytes, 4096);
}

size_t zn_bufpool_buffer_bytes(const struct zn_bufpool *p)
{
	return p->buf_bytes;
}

size_t zn_bufpool_count(const struct zn_bufpool *p)
{
	return p->count;
}

size_t zn_bufpool_free_count(struct zn_bufpool *p)
{
	pthread_mutex_lock(&p->lock);
	size_t n = p->nfree;
	pthread_mutex_unlock(&p->lock);
	return n;
}

bool zn_bufpool_pinned(const struct zn_bufpool *p)
{
	return p->pinned;
}

int zn_bufpool_numa_node(const struct zn_bufpool *p)
{
	return p->numa_node;
}
