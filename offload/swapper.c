/* The tensor swapper: keyed tensors with a home tier, moved between the
 * swap store and the pinned buffer pool.
 *
 * A tensor whose home is NVMe is, at any time, in one of four states:
 *
 *   ABSENT    only on disk (or never written: zeros);
 *   READING   a read into a pool buffer is in flight;
 *   RESIDENT  its bytes are in a pool buffer (clean unless a write-back failed);
 *   WRITING   a write is in flight, from its pool buffer (write-back after a
 *             dirty release) or from a caller's buffer (swap_out).
 *
 * There is no completion thread: an I/O is finished by whichever thread
 * next needs it (acquire, sync, or buffer reclaim), under the rule that one
 * thread at a time waits on a given I/O (`waiting`) while others sleep on
 * the swapper's condition variable.  Buffers come from the pool; when it is
 * empty, the least recently released clean tensor gives its buffer up, then
 * finished or in-flight I/O of unpinned tensors is completed to make more
 * evictable, and only then does acquire wait for another thread's release.
 */
#include "zn_common.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zinc/hostmem.h"
#include "zinc/offload.h"

enum state { ABSENT, READING, RESIDENT, WRITING };

struct zn_tensor {
	struct zn_swapper *sw;
	char name[96];
	uint64_t bytes, padded;
	enum zn_tier home;
	uint8_t *host;              /* host home */
	bool host_big;              /* host from zn_hostmem_alloc (else aligned_alloc) */
	struct zn_extent *ext;      /* NVMe home */

	enum state st;
	uint8_t *buf;               /* pool buffer while READING/RESIDENT/write-back */
	struct zn_store_io *op;     /* the I/O in flight */
	bool op_from_caller;        /* WRITING from the caller's buffer (swap_out) */
	bool waiting;               /* a thread is waiting on op */
	uint64_t op_start;          /* ns, for the trace */
	unsigned pins;
	bool dirty;                 /* resident bytes newer than the disk's */
	bool prefetched;            /* read by prefetch, not acquired since */
	int io_err;                 /* the last failed I/O, reported once by sync */
	char io_msg[256];

	struct zn_tensor *lru_prev, *lru_next; /* evictable: resident, clean, unpinned */
	bool in_lru;
	struct zn_tensor *all_prev, *all_next;
};

struct zn_swapper {
	struct zn_store *store;
	struct zn_bufpool *pool;
	struct zn_trace *trace;
	pthread_mutex_t lock;
	pthread_cond_t cond;        /* any state change */
	struct zn_tensor *lru_head, *lru_tail; /* head: least recently released */
	struct zn_tensor *all;
	struct zn_swapper_stats st;
};

/* ---- lists ----------------------------------------------------------------- */

static void lru_remove(struct zn_swapper *sw, struct zn_tensor *t)
{
	if (!t->in_lru)
		return;
	if (t->lru_prev)
		t->lru_prev->lru_next = t->lru_next;
	else
		sw->lru_head = t->lru_next;
	if (t->lru_next)
		t->lru_next->lru_prev = t->lru_prev;
	else
		sw->lru_tail = t->lru_prev;
	t->lru_prev = t->lru_next = NULL;
	t->in_lru = false;
}

static void lru_push(struct zn_swapper *sw, struct zn_tensor *t)
{
	lru_remove(sw, t);
	t->lru_prev = sw->lru_tail;
	t->lru_next = NULL;
	if (sw->lru_tail)
		sw->lru_tail->lru_next = t;
	else
		sw->lru_head = t;
	sw->lru_tail = t;
	t->in_lru = true;
}

/* ---- I/O completion ---------------------------------------------------------- */

/* Wait for t's I/O (the caller claimed it) and apply the result.  Called
 * and returns with sw->lock held; drops it while waiting. */
static void finish_io_locked(struct zn_swapper *sw, struct zn_tensor *t)
{
	struct zn_store_io *op = t->op;
	t->waiting = true;
	pthread_mutex_unlock(&sw->lock);
	uint64_t end;
	int rc = zn_store_wait_timed(op, &end);
	char msg[256] = "";
	if (rc)
		snprintf(msg, sizeof(msg), "%s", zn_last_error());
	pthread_mutex_lock(&sw->lock);
	t->waiting = false;
	t->op = NULL;

	if (t->st == READING) {
		zn_trace_span(sw->trace, "read", "nvme", "nvme read", t->op_start, end, t->padded);
		if (rc) {
			zn_bufpool_release(sw->pool, t->buf);
			t->buf = NULL;
			t->st = ABSENT;
		} else {
			sw->st.reads[ZN_TIER_NVME]++;
			sw->st.bytes_read[ZN_TIER_NVME] += t->padded;
			t->st = RESIDENT;
			if (!t->pins)
				lru_push(sw, t);
		}
	} else { /* WRITING */
		zn_trace_span(sw->trace, "write", "nvme", "nvme write", t->op_start, end, t->padded);
		if (!rc) {
			sw->st.writes[ZN_TIER_NVME]++;
			sw->st.bytes_written[ZN_TIER_NVME] += t->padded;
		}
		if (t->op_from_caller) {
			t->st = ABSENT;
		} else {
			t->st = RESIDENT;
			/* A failed write-back keeps the bytes dirty in the buffer,
			 * so they are not lost; the next release retries. */
			t->dirty = rc != 0;
			if (!t->pins && !t->dirty)
				lru_push(sw, t);
		}
		t->op_from_caller = false;
	}
	if (rc) {
		t->io_err = rc;
		snprintf(t->io_msg, sizeof(t->io_msg), "%s", msg);
	}
	pthread_cond_broadcast(&sw->cond);
}

/* Until t has no I/O in flight. */
static void wait_io_locked(struct zn_swapper *sw, struct zn_tensor *t)
{
	while (t->op) {
		if (!t->waiting)
			finish_io_locked(sw, t);
		else
			pthread_cond_wait(&sw->cond, &sw->lock);
	}
}

/* Report (once) the error of t's last failed I/O. */
static int take_io_err(struct zn_tensor *t)
{
	int rc = t->io_err;
	if (rc) {
		t->io_err = 0;
		zn_set_error_str(t->io_msg);
	}
	return rc;
}

enum want { FOR_PREFETCH, FOR_TRY, FOR_ACQUIRE };

/* The least recently released tensor whose buffer may be taken.  A
 * prefetch never takes the buffer of another prefetched tensor that has not
 * been used yet: that would only trade one read for another. */
static struct zn_tensor *victim(struct zn_swapper *sw, enum want w)
{
	for (struct zn_tensor *t = sw->lru_head; t; t = t->lru_next)
		if (w != FOR_PREFETCH || !t->prefetched)
			return t;
	return NULL;
}

/* A buffer for a read: free ones first, then the least recently released
 * clean tensor's, then by completing I/O of unpinned tensors; FOR_ACQUIRE
 * then waits for other threads' releases.  -EAGAIN otherwise. */
static int get_buffer_locked(struct zn_swapper *sw, enum want w, bool *stalled, uint8_t **out)
{
	for (;;) {
		void *b;
		if (zn_bufpool_try_acquire(sw->pool, &b) == 0) {
			*out = b;
			return 0;
		}
		struct zn_tensor *v = victim(sw, w);
		if (v) {
			lru_remove(sw, v);
			zn_bufpool_release(sw->pool, v->buf);
			v->buf = NULL;
			v->st = ABSENT;
			v->prefetched = false;
			sw->st.evictions++;
			continue;
		}
		/* Nothing evictable: an unpinned tensor with I/O in flight will
		 * become evictable once that I/O is done.  Prefetches only
		 * complete finished write-backs, never other prefetches. */
		struct zn_tensor *busy = NULL;
		for (struct zn_tensor *t = sw->all; t; t = t->all_next) {
			if (!t->op || t->pins || t->waiting || t->op_from_caller)
				continue;
			if (w == FOR_PREFETCH && t->st != WRITING)
				continue;
			if (zn_store_io_done(t->op)) {
				busy = t;
				break;
			}
			if (!busy)
				busy = t;
		}
		if (busy && (w == FOR_ACQUIRE || zn_store_io_done(busy->op))) {
			*stalled = true;
			finish_io_locked(sw, busy);
			if (w == FOR_PREFETCH && !victim(sw, w))
				return -EAGAIN; /* it became a prefetched tensor's buffer */
			continue;
		}
		if (w != FOR_ACQUIRE)
			return -EAGAIN;
		/* Every buffer is pinned (or being waited on by another thread):
		 * wait for a release.  The timeout is a safety net for pool
		 * buffers released by someone other than this swapper. */
		*stalled = true;
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 10 * 1000 * 1000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&sw->cond, &sw->lock, &ts);
	}
}

static int start_read_locked(struct zn_swapper *sw, struct zn_tensor *t, uint8_t *buf,
			     bool prefetch)
{
	struct zn_store_io *op;
	int rc = zn_store_read(sw->store, t->ext, buf, &op);
	if (rc) {
		zn_bufpool_release(sw->pool, buf);
		return rc;
	}
	t->buf = buf;
	t->op = op;
	t->op_start = zn_trace_now();
	t->st = READING;
	t->prefetched = prefetch;
	return 0;
}

/* ---- API --------------------------------------------------------------------- */

struct zn_swapper *zn_swapper_create(const struct zn_swapper_config *cfg)
{
	if (!cfg) {
		zn_set_error("zn_swapper_create: no config");
		return NULL;
	}
	if ((cfg->store == NULL) != (cfg->pool == NULL)) {
		zn_set_error("zn_swapper_create: NVMe tensors need both a store and a buffer pool");
		return NULL;
	}
	struct zn_swapper *sw = calloc(1, sizeof(*sw));
	if (!sw) {
		zn_set_error("zn_swapper_create: out of memory");
		return NULL;
	}
	sw->store = cfg->store;
	sw->pool = cfg->pool;
	sw->trace = cfg->trace;
	pthread_mutex_init(&sw->lock, NULL);
	pthread_cond_init(&sw->cond, NULL);
	return sw;
}

static void free_tensor(struct zn_swapper *sw, struct zn_tensor *t)
{
	if (t->buf)
		zn_bufpool_release(sw->pool, t->buf);
	if (t->ext)
		zn_store_free(sw->store, t->ext);
	if (t->host) {
		if (t->host_big)
			zn_hostmem_free(t->host, t->padded);
		else
			free(t->host);
	}
	free(t);
}

void zn_swapper_destroy(struct zn_swapper *sw)
{
	if (!sw)
		return;
	zn_swapper_flush(sw);
	pthread_mutex_lock(&sw->lock);
	while (sw->all) {
		struct zn_tensor *t = sw->all;
		sw->all = t->all_next;
		wait_io_locked(sw, t);
		if (t->pins)
			zn_warn("swapper destroyed while tensor '%s' is acquired", t->name);
		free_tensor(sw, t);
	}
	pthread_mutex_unlock(&sw->lock);
	pthread_cond_destroy(&sw->cond);
	pthread_mutex_destroy(&sw->lock);
	free(sw);
}

int zn_swapper_add(struct zn_swapper *sw, const char *name, uint64_t bytes, enum zn_tier home,
		   struct zn_tensor **out)
{
	char need[32], have[32];
	struct zn_tensor *t;
	int rc;

	*out = NULL;
	if (bytes == 0 || (home != ZN_TIER_HOST && home != ZN_TIER_NVME))
		return zn_error(-EINVAL, "tensor '%s': needs bytes > 0 and a home of host or nvme",
				name);
	if (home == ZN_TIER_NVME && !sw->store)
		return zn_error(-EINVAL, "tensor '%s': home is nvme but the swapper has no swap "
					 "store; set offload device: nvme with an nvme_path", name);
	t = calloc(1, sizeof(*t));
	if (!t)
		return zn_error(-ENOMEM, "out of memory");
	snprintf(t->name, sizeof(t->name), "%s", name);
	t->sw = sw;
	t->bytes = bytes;
	t->home = home;
	if (home == ZN_TIER_NVME) {
		t->padded = zn_store_padded(sw->store, bytes);
		if (t->padded > zn_bufpool_buffer_bytes(sw->pool)) {
			rc = zn_error(-EINVAL,
				      "tensor '%s' needs %s (%llu bytes padded for direct I/O) but "
				      "each offload buffer holds %s: raise buffer_size so a buffer "
				      "holds at least %llu bytes, or set buffer_size: auto",
				      name, zn_format_size(t->padded, need, sizeof(need)),
				      (unsigned long long)t->padded,
				      zn_format_size(zn_bufpool_buffer_bytes(sw->pool), have,
						     sizeof(have)),
				      (unsigned long long)t->padded);
			free(t);
			return rc;
		}
		rc = zn_store_alloc(sw->store, name, bytes, &t->ext);
		if (rc) {
			free(t);
			return rc;
		}
	} else {
		t->padded = ZN_ALIGN_UP(bytes, 4096);
		/* Large arrays get huge pages; small ones would waste most of a
		 * 2 MiB page. */
		t->host_big = t->padded >= ZN_HOSTMEM_ALIGN;
		t->host = t->host_big ? zn_hostmem_alloc(t->padded, ZN_HOSTMEM_HUGE)
				      : aligned_alloc(4096, t->padded);
		if (!t->host) {
			rc = zn_error(-ENOMEM, "tensor '%s': cannot allocate %s of host memory", name,
				      zn_format_size(t->padded, need, sizeof(need)));
			free(t);
			return rc;
		}
		if (!t->host_big)
			memset(t->host, 0, t->padded);
	}
	pthread_mutex_lock(&sw->lock);
	t->all_next = sw->all;
	if (sw->all)
		sw->all->all_prev = t;
	sw->all = t;
	pthread_mutex_unlock(&sw->lock);
	*out = t;
	return 0;
}

int zn_swapper_remove(struct zn_swapper *sw, struct zn_tensor *t)
{
	pthread_mutex_lock(&sw->lock);
	if (t->pins) {
		pthread_mutex_unlock(&sw->lock);
		return zn_error(-EBUSY, "tensor '%s' is still acquired (%u times)", t->name, t->pins);
	}
	wait_io_locked(sw, t);
	lru_remove(sw, t);
	if (t->all_prev)
		t->all_prev->all_next = t->all_next;
	else
		sw->all = t->all_next;
	if (t->all_next)
		t->all_next->all_prev = t->all_prev;
	free_tensor(sw, t);
	pthread_cond_broadcast(&sw->cond);
	pthread_mutex_unlock(&sw->lock);
	return 0;
}

int zn_swapper_swap_out(struct zn_swapper *sw, struct zn_tensor *t, const void *src)
{
	int rc = 0;

	pthread_mutex_lock(&sw->lock);
	wait_io_locked(sw, t);
	if (t->pins) {
		rc = zn_error(-EBUSY, "swap_out of tensor '%s' while it is acquired: release it "
				      "first", t->name);
		goto out;
	}
	if (t->home == ZN_TIER_HOST) {
		memcpy(t->host, src, t->bytes);
		sw->st.writes[ZN_TIER_HOST]++;
		sw->st.bytes_written[ZN_TIER_HOST] += t->bytes;
		goto out;
	}
	/* The new contents replace any resident copy. */
	if (t->buf) {
		lru_remove(sw, t);
		zn_bufpool_release(sw->pool, t->buf);
		t->buf = NULL;
		pthread_cond_broadcast(&sw->cond);
	}
	t->dirty = false;
	t->st = ABSENT;
	struct zn_store_io *op;
	rc = zn_store_write(sw->store, t->ext, src, &op);
	if (rc)
		goto out;
	t->op = op;
	t->op_from_caller = true;
	t->op_start = zn_trace_now();
	t->st = WRITING;
out:
	pthread_mutex_unlock(&sw->lock);
	return rc;
}

int zn_swapper_prefetch(struct zn_swapper *sw, struct zn_tensor *t)
{
	int rc = 0;

	if (t->home != ZN_TIER_NVME)
		return 0;
	pthread_mutex_lock(&sw->lock);
	if (t->st == ABSENT && !t->op) {
		uint8_t *buf;
		bool stalled = false;
		if (get_buffer_locked(sw, FOR_PREFETCH, &stalled, &buf) != 0)
			sw->st.prefetch_skipped++;
		else if (t->st == ABSENT && !t->op) /* nobody raced us while unlocked */
			rc = start_read_locked(sw, t, buf, true);
		else
			zn_bufpool_release(sw->pool, buf);
	}
	pthread_mutex_unlock(&sw->lock);
	return rc;
}

static int acquire(struct zn_swapper *sw, struct zn_tensor *t, void **out, bool block,
		   bool overwrite)
{
	uint64_t t0 = zn_trace_now();
	bool stalled = false;
	int rc = 0;

	pthread_mutex_lock(&sw->lock);
	sw->st.acquires[t->home]++;
	if (t->home == ZN_TIER_HOST) {
		t->pins++;
		sw->st.hits[ZN_TIER_HOST]++;
		*out = t->host;
		pthread_mutex_unlock(&sw->lock);
		return 0;
	}
	for (;;) {
		if (t->st == RESIDENT) {
			t->pins++;
			t->prefetched = false;
			lru_remove(sw, t);
			*out = t->buf;
			break;
		}
		if (t->op) {
			/* A read (prefetched), or a write that must land before
			 * the bytes can be read or changed again. */
			stalled = true;
			wait_io_locked(sw, t);
			if (t->st == ABSENT && (rc = take_io_err(t)) != 0)
				break;
			continue;
		}
		/* ABSENT: read it now. */
		uint8_t *buf;
		rc = get_buffer_locked(sw, block ? FOR_ACQUIRE : FOR_TRY, &stalled, &buf);
		if (rc)
			break;
		if (t->st != ABSENT || t->op) { /* another thread got there first */
			zn_bufpool_release(sw->pool, buf);
			continue;
		}
		if (overwrite) {
			/* The caller writes every byte: nothing to read. */
			t->buf = buf;
			t->st = RESIDENT;
			t->prefetched = false;
			continue;
		}
		stalled = true;
		rc = start_read_locked(sw, t, buf, false);
		if (rc)
			break;
	}
	uint64_t now = zn_trace_now();
	if (stalled) {
		sw->st.stall_ns[ZN_TIER_NVME] += now - t0;
		zn_trace_span(sw->trace, "stall", "nvme", "acquire stall", t0, now, 0);
	} else if (!rc) {
		sw->st.hits[ZN_TIER_NVME]++;
	}
	pthread_mutex_unlock(&sw->lock);
	if (rc == -EAGAIN)
		zn_set_error("tensor '%s': no offload buffer is free", t->name);
	return rc;
}

void zn_swapper_set_trace(struct zn_swapper *sw, struct zn_trace *trace)
{
	pthread_mutex_lock(&sw->lock);
	sw->trace = trace;
	pthread_mutex_unlock(&sw->lock);
}

int zn_swapper_acquire(struct zn_swapper *sw, struct zn_tensor *t, void **buf)
{
	return acquire(sw, t, buf, true, false);
}

int zn_swapper_try_acquire(struct zn_swapper *sw, struct zn_tensor *t, void **buf)
{
	return acquire(sw, t, buf, false, false);
}

int zn_swapper_acquire_overwrite(struct zn_swapper *sw, struct zn_tensor *t, void **buf)
{
	return acquire(sw, t, buf, true, true);
}

int zn_swapper_release(struct zn_swapper *sw, struct zn_tensor *t, bool dirty)
{
	int rc = 0;

	pthread_mutex_lock(&sw->lock);
	if (t->pins == 0) {
		pthread_mutex_unlock(&sw->lock);
		return zn_error(-EINVAL, "release of tensor '%s', which is not acquired", t->name);
	}
	t->pins--;
	if (t->home == ZN_TIER_HOST) {
		pthread_mutex_unlock(&sw->lock);
		return 0;
	}
	t->dirty |= dirty;
	if (t->pins == 0) {
		if (t->dirty) {
			/* Write back at once; the buffer stays as a cache. */
			struct zn_store_io *op;
			rc = zn_store_write(sw->store, t->ext, t->buf, &op);
			if (!rc) {
				t->dirty = false;
				t->op = op;
				t->op_from_caller = false;
				t->op_start = zn_trace_now();
				t->st = WRITING;
			}
		} else {
			lru_push(sw, t);
		}
		pthread_cond_broadcast(&sw->cond);
	}
	pthread_mutex_unlock(&sw->lock);
	return rc;
}

int zn_swapper_sync(struct zn_swapper *sw, struct zn_tensor *t)
{
	pthread_mutex_lock(&sw->lock);
	wait_io_locked(sw, t);
	int rc = take_io_err(t);
	pthread_mutex_unlock(&sw->lock);
	return rc;
}

int zn_swapper_flush(struct zn_swapper *sw)
{
	int first = 0;
	char msg[256] = "";

	pthread_mutex_lock(&sw->lock);
	for (bool again = true; again;) {
		again = false;
		for (struct zn_tensor *t = sw->all; t; t = t->all_next) {
			if (t->op) {
				wait_io_locked(sw, t);
				again = true; /* the list may have changed while unlocked */
				break;
			}
		}
	}
	for (struct zn_tensor *t = sw->all; t; t = t->all_next) {
		int rc = take_io_err(t);
		if (rc && !first) {
			first = rc;
			snprintf(msg, sizeof(msg), "%s", zn_last_error());
		}
	}
	pthread_mutex_unlock(&sw->lock);
	if (first)
		zn_set_error_str(msg);
	return first;
}

void zn_swapper_get_stats(struct zn_swapper *sw, struct zn_swapper_stats *out)
{
	pthread_mutex_lock(&sw->lock);
	*out = sw->st;
	pthread_mutex_unlock(&sw->lock);
}

uint64_t zn_tensor_bytes(const struct zn_tensor *t)
{
	return t->bytes;
}

enum zn_tier zn_tensor_home(const struct zn_tensor *t)
{
	return t->home;
}
