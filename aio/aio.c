/* The io_uring engine: handles, rings, worker threads and requests.
 *
 * One handle owns `intra_op_parallelism` rings.  Each ring belongs to one
 * worker thread, which is the only thread that ever touches it: it creates
 * the ring (so IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN apply), prepares
 * and submits SQEs, reaps CQEs and runs registration calls.  Submitting
 * threads only append pieces to a ring's mutex-protected inbox and kick the
 * worker through an eventfd; the worker keeps one read of that eventfd in
 * flight on its own ring, so it always sleeps in exactly one place — waiting
 * for CQEs — and new work wakes it like any completion.
 *
 * A request is cut into block_size pieces; contiguous runs of pieces go to
 * the rings (DeepSpeed splits a request into one slice per thread the same
 * way), starting at a rotating ring so that many small requests spread over
 * all rings.  Each piece completes on its own; the last one to finish
 * completes the request and wakes its waiter.
 */
#include "aio_internal.h"

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

/* Retries of a piece that keeps failing with EAGAIN/EINTR before the error
 * is returned; each retry waits a little longer (see requeue). */
#define MAX_RETRIES 64
/* user_data of the eventfd read; pieces are heap pointers, never this. */
#define EFD_TAG ((uint64_t)1)

struct piece {
	struct piece *next;  /* inbox / local queue link */
	struct zn_aio_req *req;
	uint8_t *buf;        /* where the rest of this piece goes */
	uint64_t off;        /* file offset of the rest */
	uint32_t len;        /* bytes left to transfer */
	uint32_t done;       /* bytes transferred so far */
	uint64_t t_submit;   /* ns, when the current SQE was prepared */
	uint16_t retries;
	int16_t buf_index;   /* fixed buffer slot, or -1 */
};

struct zn_aio_req {
	struct zn_aio_file *file;
	bool write;
	bool done;              /* under lock */
	int err;                /* first error, under lock */
	atomic_uint pending;    /* pieces not finished yet */
	atomic_uint_fast64_t bytes; /* bytes transferred by finished pieces */
	uint64_t offset;
	size_t len;
	uint64_t t_done;        /* ns, when the last piece finished (under lock) */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	char msg[512];          /* message for err, built on the worker thread */
	unsigned npieces;
	struct piece pieces[];
};

struct ctl {
	struct ctl *next;
	int (*fn)(struct ring *, void *);
	void *arg;
	int rc;
	bool done;              /* under aio->ctl_lock */
};

struct ring_stats {
	_Atomic uint64_t ios, bytes_read, bytes_written, fixed_ios, resubmits, errors;
	_Atomic uint64_t lat_hist[ZN_ARRAY_SIZE(((struct zn_aio_stats *)0)->lat_hist)];
};

struct ring {
	struct zn_aio *aio;
	unsigned idx;
	pthread_t thread;
	int efd;
	uint64_t efd_buf;

	/* Shared with submitters, under lock. */
	pthread_mutex_t lock;
	struct piece *inbox_head, *inbox_tail;
	struct ctl *ctl_head;
	bool stop;

	/* Worker-private. */
	struct io_uring uring;
	uint64_t completions;            /* counted for the shorten test hook */
	struct piece *q_head, *q_tail;   /* pieces waiting for an SQE */
	unsigned inflight;               /* piece SQEs submitted, not reaped */

	struct ring_stats stats;

	/* Start-up result, under aio->ctl_lock. */
	bool started;
	int start_err;
	char start_msg[512];
};

struct zn_aio {
	struct zn_aio_config cfg;
	/* Test hook (ZINC_AIO_SHORTEN=N): every Nth completed transfer is
	 * reported shorter than it was; 0 = off. */
	unsigned shorten_every;
	unsigned nrings;
	struct ring *rings;
	atomic_uint next_ring;   /* rotating start ring for requests */

	pthread_mutex_t ctl_lock; /* ring start-up and control-op completion */
	pthread_cond_t ctl_cond;
	pthread_mutex_t reg_lock; /* one registration change at a time */

	/* Fixed buffers: the same slots are registered in every ring. */
	pthread_rwlock_t fix_lock;
	bool fixed_bufs_ok;       /* every ring has a sparse buffer table */
	struct {
		uint8_t *base;
		size_t len;
		void *owner;          /* the buffer zn_aio_register_buffer was given */
	} fix[ZN_AIO_MAX_FIXED_BUFS];

	unsigned fix_hi;          /* slots [0, fix_hi) may be in use */
	bool fixed_files_ok;      /* every ring has a sparse file table */
	pthread_mutex_t file_slot_lock;
	uint8_t file_slot_used[ZN_AIO_MAX_FIXED_FILES];
};

/* ---- latency histogram ------------------------------------------------
 * Log-linear buckets: values below 16 ns have their own bucket; above, 16
 * buckets per power of two (6% resolution), up to 2^35 ns (34 s). */
#define HIST_SUB_BITS 4
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_BUCKETS ZN_ARRAY_SIZE(((struct zn_aio_stats *)0)->lat_hist)

static unsigned hist_index(uint64_t v)
{
	if (v < HIST_SUB)
		return (unsigned)v;
	unsigned e = 63u - (unsigned)__builtin_clzll(v);     /* e >= HIST_SUB_BITS */
	unsigned sub = (unsigned)(v >> (e - HIST_SUB_BITS)) & (HIST_SUB - 1);
	unsigned idx = (e - HIST_SUB_BITS + 1) * HIST_SUB + sub;
	return idx < HIST_BUCKETS ? idx : HIST_BUCKETS - 1;
}

/* The largest value that falls in bucket idx. */
static uint64_t hist_upper(unsigned idx)
{
	if (idx < HIST_SUB)
		return idx;
	unsigned e = idx / HIST_SUB - 1 + HIST_SUB_BITS;
	uint64_t sub = idx % HIST_SUB;
	uint64_t lo = (1ull << e) | (sub << (e - HIST_SUB_BITS));
	return lo + (1ull << (e - HIST_SUB_BITS)) - 1;
}

uint64_t zn_aio_stats_percentile(const struct zn_aio_stats *s, double p)
{
	uint64_t total = 0, seen = 0;

	for (unsigned i = 0; i < HIST_BUCKETS; i++)
		total += s->lat_hist[i];
	if (total == 0)
		return 0;
	double want = p / 100.0 * (double)total;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		seen += s->lat_hist[i];
		if ((double)seen >= want && s->lat_hist[i])
			return hist_upper(i);
	}
	return hist_upper(HIST_BUCKETS - 1);
}

#define STAT_ADD(r, field, v) atomic_fetch_add_explicit(&(r)->stats.field, (v), memory_order_relaxed)

void zn_aio_stats_get(struct zn_aio *aio, struct zn_aio_stats *out)
{
	memset(out, 0, sizeof(*out));
	for (unsigned i = 0; i < aio->nrings; i++) {
		struct ring_stats *s = &aio->rings[i].stats;
		out->ios += atomic_load_explicit(&s->ios, memory_order_relaxed);
		out->bytes_read += atomic_load_explicit(&s->bytes_read, memory_order_relaxed);
		out->bytes_written += atomic_load_explicit(&s->bytes_written, memory_order_relaxed);
		out->fixed_ios += atomic_load_explicit(&s->fixed_ios, memory_order_relaxed);
		out->resubmits += atomic_load_explicit(&s->resubmits, memory_order_relaxed);
		out->errors += atomic_load_explicit(&s->errors, memory_order_relaxed);
		for (unsigned b = 0; b < HIST_BUCKETS; b++)
			out->lat_hist[b] += atomic_load_explicit(&s->lat_hist[b], memory_order_relaxed);
	}
}

void zn_aio_stats_reset(struct zn_aio *aio)
{
	for (unsigned i = 0; i < aio->nrings; i++) {
		struct ring_stats *s = &aio->rings[i].stats;
		atomic_store(&s->ios, 0);
		atomic_store(&s->bytes_read, 0);
		atomic_store(&s->bytes_written, 0);
		atomic_store(&s->fixed_ios, 0);
		atomic_store(&s->resubmits, 0);
		atomic_store(&s->errors, 0);
		for (unsigned b = 0; b < HIST_BUCKETS; b++)
			atomic_store(&s->lat_hist[b], 0);
	}
}

/* ---- request completion -------------------------------------------------- */

static void req_complete_locked(struct zn_aio_req *req)
{
	req->t_done = zn_now_ns();
	req->done = true;
	pthread_cond_broadcast(&req->cond);
}

/* A piece is over: with `err` 0 it transferred p->done bytes. */
static void piece_finish(struct ring *r, struct piece *p, int err)
{
	struct zn_aio_req *req = p->req;

	if (err) {
		STAT_ADD(r, errors, 1);
		pthread_mutex_lock(&req->lock);
		/* Keep the first error: later ones are usually its echo. */
		if (!req->err) {
			struct zn_aio_file *f = req->file;
			req->err = err;
			snprintf(req->msg, sizeof(req->msg),
				 "%s of '%s' failed at offset %" PRIu64 ", length %" PRIu32
				 " (request: offset %" PRIu64 ", length %zu): %s",
				 req->write ? "write" : "read", f->path, p->off, p->len,
				 req->offset, req->len, strerror(-err));
		}
		pthread_mutex_unlock(&req->lock);
	}
	atomic_fetch_add_explicit(&req->bytes, p->done, memory_order_relaxed);
	/* acq_rel: the last finisher must see every other piece's bytes and
	 * error before it completes the request. */
	if (atomic_fetch_sub_explicit(&req->pending, 1, memory_order_acq_rel) == 1) {
		pthread_mutex_lock(&req->lock);
		req_complete_locked(req);
		pthread_mutex_unlock(&req->lock);
	}
}

/* ---- the worker ----------------------------------------------------------- */

static void q_push_front(struct ring *r, struct piece *p)
{
	p->next = r->q_head;
	r->q_head = p;
	if (!r->q_tail)
		r->q_tail = p;
}

static struct piece *q_pop(struct ring *r)
{
	struct piece *p = r->q_head;
	if (p) {
		r->q_head = p->next;
		if (!r->q_head)
			r->q_tail = NULL;
	}
	return p;
}

static bool arm_eventfd(struct ring *r)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&r->uring);
	if (!sqe)
		return false;
	io_uring_prep_read(sqe, r->efd, &r->efd_buf, sizeof(r->efd_buf), 0);
	io_uring_sqe_set_data64(sqe, EFD_TAG);
	return true;
}

static bool prep_piece(struct ring *r, struct piece *p)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&r->uring);
	struct zn_aio_file *f = p->req->file;
	int fd = f->fixed_slot >= 0 ? f->fixed_slot : f->fd;

	if (!sqe)
		return false;
	if (p->buf_index >= 0) {
		if (p->req->write)
			io_uring_prep_write_fixed(sqe, fd, p->buf, p->len, p->off, p->buf_index);
		else
			io_uring_prep_read_fixed(sqe, fd, p->buf, p->len, p->off, p->buf_index);
	} else {
		if (p->req->write)
			io_uring_prep_write(sqe, fd, p->buf, p->len, p->off);
		else
			io_uring_prep_read(sqe, fd, p->buf, p->len, p->off);
	}
	if (f->fixed_slot >= 0)
		sqe->flags |= IOSQE_FIXED_FILE;
	io_uring_sqe_set_data(sqe, p);
	p->t_submit = zn_now_ns();
	r->inflight++;
	return true;
}

/* Take what submitters left in the inbox; run control ops. */
static bool drain_inbox(struct ring *r)
{
	struct piece *head, *tail;
	struct ctl *ctl;
	bool stop;

	pthread_mutex_lock(&r->lock);
	head = r->inbox_head;
	tail = r->inbox_tail;
	r->inbox_head = r->inbox_tail = NULL;
	ctl = r->ctl_head;
	r->ctl_head = NULL;
	stop = r->stop;
	pthread_mutex_unlock(&r->lock);

	if (head) {
		if (r->q_tail)
			r->q_tail->next = head;
		else
			r->q_head = head;
		r->q_tail = tail;
	}
	while (ctl) {
		struct ctl *next = ctl->next;
		int rc = ctl->fn(r, ctl->arg);
		pthread_mutex_lock(&r->aio->ctl_lock);
		ctl->rc = rc;
		ctl->done = true;
		pthread_cond_broadcast(&r->aio->ctl_cond);
		pthread_mutex_unlock(&r->aio->ctl_lock);
		ctl = next;
	}
	return stop;
}

/* The shorten test hook: a transfer of `res` bytes is reported as one of
 * about half, on the file's alignment (a direct transfer ends short only
 * there, but at end of file), and a read's bytes beyond it are overwritten
 * as if they had not arrived, so that only a resubmission of the rest
 * gives the caller the file's data.  The kernel returns short transfers
 * seldom (a signal, a full pipe, some file systems at extent edges), so the
 * path that handles them is tested through this (tests/test_aio.c). */
static int shorten(struct ring *r, const struct piece *p, int res)
{
	const struct zn_aio_req *req = p->req;
	if (!r->aio->shorten_every || ++r->completions % r->aio->shorten_every)
		return res;
	uint32_t align = req->file->direct ? req->file->align : 1;
	uint32_t cut = (uint32_t)res / 2 / align * align;
	if (cut == 0)
		return res;
	if (!req->write)
		memset(p->buf + cut, 0xA5, (size_t)res - cut);
	return (int)cut;
}

static void handle_cqe(struct ring *r, struct piece *p, int res)
{
	struct zn_aio_req *req = p->req;
	uint64_t lat = zn_now_ns() - p->t_submit;

	if (res > 0)
		res = shorten(r, p, res);

	r->inflight--;
	atomic_fetch_add_explicit(&r->stats.lat_hist[hist_index(lat)], 1, memory_order_relaxed);

	if (res < 0) {
		if ((res == -EAGAIN || res == -EINTR) && p->retries < MAX_RETRIES) {
			p->retries++;
			STAT_ADD(r, resubmits, 1);
			if (res == -EAGAIN && p->retries > 8)
				usleep(100u * p->retries); /* the device is saturated; back off */
			q_push_front(r, p);
			return;
		}
		piece_finish(r, p, res);
		return;
	}

	STAT_ADD(r, ios, 1);
	if (p->buf_index >= 0)
		STAT_ADD(r, fixed_ios, 1);
	if (req->write)
		STAT_ADD(r, bytes_written, (uint64_t)res);
	else
		STAT_ADD(r, bytes_read, (uint64_t)res);

	if ((uint32_t)res >= p->len) {
		p->done += p->len;
		p->len = 0;
		piece_finish(r, p, 0);
		return;
	}
	if (res == 0) {
		if (!req->write) {
			piece_finish(r, p, 0); /* end of file */
			return;
		}
		/* A write that moves nothing and reports no error: retry, then
		 * give up rather than spin. */
		if (p->retries++ < MAX_RETRIES) {
			STAT_ADD(r, resubmits, 1);
			q_push_front(r, p);
		} else {
			piece_finish(r, p, -EIO);
		}
		return;
	}
	/* Short transfer: account for it and resubmit the remainder. */
	p->done += (uint32_t)res;
	p->buf += res;
	p->off += (uint64_t)res;
	p->len -= (uint32_t)res;
	if (!req->write && req->file->direct && (uint32_t)res % req->file->align) {
		/* A direct read ends off the alignment only at end of file; the
		 * remainder could not even be submitted (unaligned offset). */
		piece_finish(r, p, 0);
		return;
	}
	STAT_ADD(r, resubmits, 1);
	q_push_front(r, p);
}

/* Fail every piece still queued; used when the ring itself breaks. */
static void fail_queued(struct ring *r, int err)
{
	struct piece *p;
	while ((p = q_pop(r)))
		piece_finish(r, p, err);
}

static int ring_setup(struct ring *r)
{
	const struct zn_aio_config *cfg = &r->aio->cfg;
	struct io_uring_params params;
	/* One SQE more than the queue depth: the eventfd read is always armed. */
	unsigned entries = cfg->queue_depth + 1;
	int rc;

	if (cfg->sqpoll) {
		memset(&params, 0, sizeof(params));
		params.flags = IORING_SETUP_SQPOLL;
		params.sq_thread_idle = 50; /* ms before the kernel thread sleeps */
		rc = io_uring_queue_init_params(entries, &r->uring, &params);
		if (rc < 0)
			return zn_error(rc, "cannot create an io_uring with sqpoll: %s; set "
					    "aio.sqpoll: false (it needs Linux 5.11+, or root before)",
					strerror(-rc));
	} else {
		/* Newest flags first; each fallback keeps working on older kernels.
		 * SINGLE_ISSUER|DEFER_TASKRUN (6.1): completions run in this thread
		 * when it waits, no task-work interrupts. */
		static const unsigned tries[] = {
			IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
			IORING_SETUP_COOP_TASKRUN,
			0,
		};
		rc = -EINVAL;
		for (size_t i = 0; i < ZN_ARRAY_SIZE(tries) && rc == -EINVAL; i++) {
			memset(&params, 0, sizeof(params));
			params.flags = tries[i];
			rc = io_uring_queue_init_params(entries, &r->uring, &params);
		}
		if (rc == -ENOMEM) {
			/* Some kernels count a ring's memory against the
			 * locked-memory limit of a process without CAP_IPC_LOCK:
			 * at 0 not even a ring of 2 entries can be made, so
			 * lowering the queue depth is no way out. */
			struct rlimit rl = { 0, 0 };
			getrlimit(RLIMIT_MEMLOCK, &rl);
			if (rl.rlim_cur != RLIM_INFINITY)
				return zn_error(rc, "cannot create an io_uring of %u entries: %s; the "
						"locked-memory limit (ulimit -l) is %llu KiB and this "
						"kernel counts io_uring's rings against it: raise it "
						"(ulimit -l %llu or more; at least 16 KiB a ring, 48 "
						"KiB at queue_depth 128), or lower aio.queue_depth",
						entries, strerror(-rc),
						(unsigned long long)rl.rlim_cur / 1024,
						(unsigned long long)rl.rlim_cur / 1024 + 1024);
		}
		if (rc < 0)
			return zn_error(rc, "cannot create an io_uring of %u entries: %s%s", entries,
					strerror(-rc),
					rc == -ENOMEM ? "; raise RLIMIT_MEMLOCK (ulimit -l) or lower "
							"aio.queue_depth" :
					rc == -ENOSYS || rc == -EPERM ?
							"; io_uring is unavailable or disabled on this "
							"system (kernel.io_uring_disabled)" : "");
	}
	/* Sparse tables: slots filled later by register calls.  Missing
	 * support (before 5.19) only costs the fixed-buffer/file speed-up. */
	if (cfg->use_fixed_buffers &&
	    io_uring_register_buffers_sparse(&r->uring, ZN_AIO_MAX_FIXED_BUFS) < 0)
		r->start_err = 1; /* marks: no fixed buffers on this ring */
	if (io_uring_register_files_sparse(&r->uring, ZN_AIO_MAX_FIXED_FILES) < 0)
		r->start_err |= 2; /* marks: no fixed files on this ring */
	return 0;
}

static void *ring_main(void *arg)
{
	struct ring *r = arg;
	struct zn_aio *aio = r->aio;
	const bool overlap = aio->cfg.overlap_events;
	const bool single = aio->cfg.single_submit;
	const unsigned qd = aio->cfg.queue_depth;
	int rc = ring_setup(r);

	pthread_mutex_lock(&aio->ctl_lock);
	r->started = true;
	if (rc) {
		r->start_err = rc;
		snprintf(r->start_msg, sizeof(r->start_msg), "%s", zn_last_error());
	} else {
		if (r->start_err & 1)
			aio->fixed_bufs_ok = false;
		if (r->start_err & 2)
			aio->fixed_files_ok = false;
		r->start_err = 0;
	}
	pthread_cond_broadcast(&aio->ctl_cond);
	pthread_mutex_unlock(&aio->ctl_lock);
	if (rc)
		return NULL;

	bool efd_armed = arm_eventfd(r);
	bool stop = false;

	for (;;) {
		/* Fill the queue.  With overlap_events, top it up whenever a
		 * slot frees; without, only start a new batch once the previous
		 * one has fully completed (DeepSpeed's "sequential" mode). */
		if (overlap || r->inflight == 0) {
			while (r->q_head && r->inflight < qd) {
				struct piece *p = r->q_head;
				if (!prep_piece(r, p))
					break; /* SQ full (sqpoll thread behind): next round */
				q_pop(r);
				if (single)
					io_uring_submit(&r->uring);
			}
		}
		if (!efd_armed)
			efd_armed = arm_eventfd(r);

		if (stop && r->inflight == 0 && !r->q_head)
			break;

		rc = io_uring_submit_and_wait(&r->uring, 1);
		if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY && rc != -ETIME) {
			/* The ring itself failed: nothing queued can proceed. */
			zn_warn("io_uring ring %u failed: %s", r->idx, strerror(-rc));
			fail_queued(r, rc);
		}

		struct io_uring_cqe *cqe;
		unsigned head, seen = 0;
		bool kicked = false;
		io_uring_for_each_cqe(&r->uring, head, cqe) {
			seen++;
			if (cqe->user_data == EFD_TAG) {
				efd_armed = false;
				kicked = true;
				continue;
			}
			handle_cqe(r, io_uring_cqe_get_data(cqe), cqe->res);
		}
		io_uring_cq_advance(&r->uring, seen);
		if (kicked)
			stop |= drain_inbox(r);
	}
	io_uring_queue_exit(&r->uring);
	return NULL;
}

/* ---- control ops on every ring -------------------------------------------- */

static void kick(struct ring *r)
{
	uint64_t one = 1;
	/* eventfd writes only fail on counter overflow, which the worker's
	 * reads prevent; a lost kick would stall, so retry on EINTR. */
	while (write(r->efd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
}

int zn_aio_on_rings(struct zn_aio *aio, int (*fn)(struct ring *, void *), void *arg)
{
	struct ctl *ctls = calloc(aio->nrings, sizeof(*ctls));
	int rc = 0;

	if (!ctls)
		return zn_error(-ENOMEM, "out of memory");
	for (unsigned i = 0; i < aio->nrings; i++) {
		struct ring *r = &aio->rings[i];
		ctls[i] = (struct ctl){ .fn = fn, .arg = arg };
		pthread_mutex_lock(&r->lock);
		ctls[i].next = r->ctl_head;
		r->ctl_head = &ctls[i];
		pthread_mutex_unlock(&r->lock);
		kick(r);
	}
	pthread_mutex_lock(&aio->ctl_lock);
	for (unsigned i = 0; i < aio->nrings; i++) {
		while (!ctls[i].done)
			pthread_cond_wait(&aio->ctl_cond, &aio->ctl_lock);
		if (ctls[i].rc && !rc)
			rc = ctls[i].rc;
	}
	pthread_mutex_unlock(&aio->ctl_lock);
	free(ctls);
	return rc;
}

struct io_uring *zn_aio_ring_uring(struct ring *r)
{
	return &r->uring;
}

bool zn_aio_fixed_files_ok(const struct zn_aio *aio)
{
	return aio->fixed_files_ok;
}

int zn_aio_file_slot_get(struct zn_aio *aio)
{
	int slot = -1;
	pthread_mutex_lock(&aio->file_slot_lock);
	for (unsigned i = 0; i < ZN_AIO_MAX_FIXED_FILES; i++) {
		if (!aio->file_slot_used[i]) {
			aio->file_slot_used[i] = 1;
			slot = (int)i;
			break;
		}
	}
	pthread_mutex_unlock(&aio->file_slot_lock);
	return slot;
}

void zn_aio_file_slot_put(struct zn_aio *aio, int slot)
{
	pthread_mutex_lock(&aio->file_slot_lock);
	aio->file_slot_used[slot] = 0;
	pthread_mutex_unlock(&aio->file_slot_lock);
}

/* ---- handle ---------------------------------------------------------------- */

static void stop_rings(struct zn_aio *aio, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		struct ring *r = &aio->rings[i];
		pthread_mutex_lock(&r->lock);
		r->stop = true;
		pthread_mutex_unlock(&r->lock);
		kick(r);
	}
	for (unsigned i = 0; i < n; i++) {
		pthread_join(aio->rings[i].thread, NULL);
		close(aio->rings[i].efd);
		pthread_mutex_destroy(&aio->rings[i].lock);
	}
}

struct zn_aio *zn_aio_create(const struct zn_aio_config *cfg)
{
	struct zn_aio *aio;
	unsigned started = 0;
	int rc;

	if (!cfg) {
		zn_set_error("zn_aio_create: no config given");
		return NULL;
	}
	if (zn_aio_config_validate(cfg))
		return NULL;
	aio = calloc(1, sizeof(*aio));
	if (!aio)
		goto oom;
	aio->cfg = *cfg;
	const char *hook = getenv("ZINC_AIO_SHORTEN");
	if (hook && hook[0]) {
		char *end;
		unsigned long n = strtoul(hook, &end, 10);
		if (*end || n == 0 || n > 1000000) {
			zn_set_error("ZINC_AIO_SHORTEN='%s': give a count N from 1 to 1000000 (every "
				     "Nth transfer is reported short, a test hook), or unset it", hook);
			free(aio);
			return NULL;
		}
		aio->shorten_every = (unsigned)n;
	}
	aio->nrings = cfg->intra_op_parallelism;
	aio->rings = calloc(aio->nrings, sizeof(*aio->rings));
	if (!aio->rings)
		goto oom;
	aio->fixed_bufs_ok = cfg->use_fixed_buffers;
	aio->fixed_files_ok = true;
	pthread_mutex_init(&aio->ctl_lock, NULL);
	pthread_cond_init(&aio->ctl_cond, NULL);
	pthread_mutex_init(&aio->reg_lock, NULL);
	pthread_mutex_init(&aio->file_slot_lock, NULL);
	pthread_rwlock_init(&aio->fix_lock, NULL);

	for (unsigned i = 0; i < aio->nrings; i++) {
		struct ring *r = &aio->rings[i];
		r->aio = aio;
		r->idx = i;
		r->efd = eventfd(0, EFD_CLOEXEC);
		if (r->efd < 0) {
			zn_set_error("cannot create an eventfd for ring %u: %s", i, strerror(errno));
			goto fail;
		}
		pthread_mutex_init(&r->lock, NULL);
		/* Worker threads block every signal, so the application's
		 * handlers always run on its own threads. */
		sigset_t all, old;
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &old);
		rc = pthread_create(&r->thread, NULL, ring_main, r);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		if (!rc) {
			char name[16];
			snprintf(name, sizeof(name), "zn-io-%u", i % 1000);
			pthread_setname_np(r->thread, name);
		}
		if (rc) {
			close(r->efd);
			pthread_mutex_destroy(&r->lock);
			zn_set_error("cannot start the I/O thread for ring %u: %s", i, strerror(rc));
			goto fail;
		}
		started++;
	}

	/* Wait until every ring is up (or says why not). */
	rc = 0;
	pthread_mutex_lock(&aio->ctl_lock);
	for (unsigned i = 0; i < started; i++) {
		while (!aio->rings[i].started)
			pthread_cond_wait(&aio->ctl_cond, &aio->ctl_lock);
		if (aio->rings[i].start_err && !rc) {
			rc = aio->rings[i].start_err;
			zn_set_error_str(aio->rings[i].start_msg);
		}
	}
	pthread_mutex_unlock(&aio->ctl_lock);
	if (rc) {
		/* Rings that failed have returned already; joining them is safe. */
		stop_rings(aio, started);
		started = 0;
		goto fail_nostop;
	}
	if (cfg->use_fixed_buffers && !aio->fixed_bufs_ok)
		zn_info("io_uring fixed buffers are unavailable on this kernel; using plain I/O");
	return aio;

oom:
	zn_set_error("zn_aio_create: out of memory");
	if (aio)
		free(aio->rings);
	free(aio);
	return NULL;
fail:
	stop_rings(aio, started);
fail_nostop:
	pthread_rwlock_destroy(&aio->fix_lock);
	pthread_mutex_destroy(&aio->file_slot_lock);
	pthread_mutex_destroy(&aio->reg_lock);
	pthread_cond_destroy(&aio->ctl_cond);
	pthread_mutex_destroy(&aio->ctl_lock);
	free(aio->rings);
	free(aio);
	return NULL;
}

void zn_aio_destroy(struct zn_aio *aio)
{
	if (!aio)
		return;
	/* Workers finish every queued and in-flight piece before they exit. */
	stop_rings(aio, aio->nrings);
	pthread_rwlock_destroy(&aio->fix_lock);
	pthread_mutex_destroy(&aio->file_slot_lock);
	pthread_mutex_destroy(&aio->reg_lock);
	pthread_cond_destroy(&aio->ctl_cond);
	pthread_mutex_destroy(&aio->ctl_lock);
	free(aio->rings);
	free(aio);
}

const struct zn_aio_config *zn_aio_get_config(const struct zn_aio *aio)
{
	return &aio->cfg;
}

/* ---- fixed buffers --------------------------------------------------------- */

struct buf_update {
	unsigned first, count;
	const struct iovec *iov;
};

static int ring_update_bufs(struct ring *r, void *arg)
{
	const struct buf_update *u = arg;
	int rc = io_uring_register_buffers_update_tag(&r->uring, u->first, u->iov, NULL, u->count);
	return rc < 0 ? rc : 0;
}

int zn_aio_register_buffer(struct zn_aio *aio, void *buf, size_t len)
{
	char sz[32];
	int rc = 0;

	if (!aio->cfg.use_fixed_buffers || !aio->fixed_bufs_ok)
		return 0;
	if (!buf || !len)
		return zn_error(-EINVAL, "zn_aio_register_buffer: empty buffer");
	unsigned count = (unsigned)ZN_DIV_ROUND_UP(len, ZN_AIO_FIXED_CHUNK);
	struct iovec *iov = calloc(count, sizeof(*iov));
	if (!iov)
		return zn_error(-ENOMEM, "out of memory");

	pthread_mutex_lock(&aio->reg_lock);
	/* Find `count` consecutive free slots so one update call per ring
	 * registers the whole buffer. */
	unsigned first = 0, run = 0;
	pthread_rwlock_rdlock(&aio->fix_lock);
	for (unsigned i = 0; i < ZN_AIO_MAX_FIXED_BUFS && run < count; i++) {
		if (aio->fix[i].owner == buf) {
			pthread_rwlock_unlock(&aio->fix_lock);
			rc = zn_error(-EEXIST, "buffer %p is already registered", buf);
			goto out;
		}
		if (aio->fix[i].base) {
			run = 0;
		} else {
			if (run == 0)
				first = i;
			run++;
		}
	}
	pthread_rwlock_unlock(&aio->fix_lock);
	if (run < count) {
		rc = zn_error(-ENOSPC, "cannot register %s more as fixed buffers: all %u slots "
				       "are in use; unregister buffers or set "
				       "aio.use_fixed_buffers: false",
			      zn_format_size(len, sz, sizeof(sz)), ZN_AIO_MAX_FIXED_BUFS);
		goto out;
	}
	for (unsigned i = 0; i < count; i++) {
		size_t off = (size_t)i * ZN_AIO_FIXED_CHUNK;
		iov[i].iov_base = (uint8_t *)buf + off;
		iov[i].iov_len = ZN_MIN(ZN_AIO_FIXED_CHUNK, len - off);
	}
	struct buf_update u = { first, count, iov };
	rc = zn_aio_on_rings(aio, ring_update_bufs, &u);
	if (rc) {
		/* Roll back the rings that took it: empty iovecs clear slots. */
		memset(iov, 0, count * sizeof(*iov));
		zn_aio_on_rings(aio, ring_update_bufs, &u);
		if (rc == -ENOMEM)
			rc = zn_error(rc, "cannot register %s as io_uring fixed buffers: locked "
					  "memory limit reached; raise RLIMIT_MEMLOCK (ulimit -l) "
					  "or set aio.use_fixed_buffers: false",
				      zn_format_size(len, sz, sizeof(sz)));
		else
			rc = zn_error(rc, "cannot register %s as io_uring fixed buffers: %s",
				      zn_format_size(len, sz, sizeof(sz)), strerror(-rc));
		goto out;
	}
	pthread_rwlock_wrlock(&aio->fix_lock);
	for (unsigned i = 0; i < count; i++) {
		aio->fix[first + i].base = iov[i].iov_base;
		aio->fix[first + i].len = iov[i].iov_len;
		aio->fix[first + i].owner = buf;
	}
	aio->fix_hi = ZN_MAX(aio->fix_hi, first + count);
	pthread_rwlock_unlock(&aio->fix_lock);
out:
	pthread_mutex_unlock(&aio->reg_lock);
	free(iov);
	return rc;
}

int zn_aio_unregister_buffer(struct zn_aio *aio, void *buf)
{
	struct iovec empty[1] = { { NULL, 0 } };
	int rc = -ENOENT;

	if (!aio->cfg.use_fixed_buffers || !aio->fixed_bufs_ok)
		return 0;
	pthread_mutex_lock(&aio->reg_lock);
	for (unsigned i = 0; i < ZN_AIO_MAX_FIXED_BUFS; i++) {
		if (aio->fix[i].owner != buf)
			continue;
		/* Stop new requests from picking the slot before the rings
		 * drop it. */
		pthread_rwlock_wrlock(&aio->fix_lock);
		aio->fix[i].base = NULL;
		aio->fix[i].len = 0;
		aio->fix[i].owner = NULL;
		pthread_rwlock_unlock(&aio->fix_lock);
		struct buf_update u = { i, 1, empty };
		rc = zn_aio_on_rings(aio, ring_update_bufs, &u);
	}
	pthread_mutex_unlock(&aio->reg_lock);
	if (rc == -ENOENT)
		return zn_error(rc, "buffer %p is not registered", buf);
	return rc;
}

/* The fixed slot holding [p, p+len), or -1; caller holds fix_lock. */
static int fixed_slot_of(const struct zn_aio *aio, const uint8_t *p, size_t len)
{
	for (unsigned i = 0; i < aio->fix_hi; i++) {
		const uint8_t *b = aio->fix[i].base;
		if (b && p >= b && p + len <= b + aio->fix[i].len)
			return (int)i;
	}
	return -1;
}

/* ---- requests --------------------------------------------------------------- */

static int submit(struct zn_aio_file *f, uint8_t *buf, size_t len, uint64_t off, bool write,
		  struct zn_aio_req **out)
{
	struct zn_aio *aio = f->aio;
	const uint64_t bs = aio->cfg.block_size;

	*out = NULL;
	if (f->direct && ((uintptr_t)buf % f->mem_align || off % f->align || len % f->align))
		return zn_error(-EINVAL,
				"%s of '%s' is misaligned for O_DIRECT: buffer %p, offset %" PRIu64
				", length %zu must be multiples of %u bytes (buffer address: %u); "
				"allocate with zn_hostmem_alloc and round sizes up",
				write ? "write" : "read", f->path, (void *)buf, off, len, f->align,
				f->mem_align);
	if (off > INT64_MAX || len > INT64_MAX - off)
		return zn_error(-EINVAL, "%s of '%s': offset %" PRIu64 " + length %zu overflows",
				write ? "write" : "read", f->path, off, len);

	size_t n = len ? (size_t)ZN_DIV_ROUND_UP(len, bs) : 0;
	if (n > UINT32_MAX)
		return zn_error(-EINVAL, "request of %zu bytes has too many pieces", len);
	struct zn_aio_req *req = calloc(1, sizeof(*req) + n * sizeof(struct piece));
	if (!req)
		return zn_error(-ENOMEM, "out of memory for a request of %zu pieces", n);
	req->file = f;
	req->write = write;
	req->offset = off;
	req->len = len;
	req->npieces = (unsigned)n;
	atomic_init(&req->pending, (unsigned)n);
	atomic_init(&req->bytes, 0);
	pthread_mutex_init(&req->lock, NULL);
	pthread_cond_init(&req->cond, NULL);

	if (n == 0) {
		req->done = true;
		*out = req;
		return 0;
	}

	/* Fixed-buffer slot: looked up once for the whole request (the usual
	 * case: a request inside one registered buffer), else per piece. */
	bool fixed = aio->cfg.use_fixed_buffers && aio->fixed_bufs_ok;
	int whole = -1;
	if (fixed) {
		pthread_rwlock_rdlock(&aio->fix_lock);
		whole = fixed_slot_of(aio, buf, len);
	}
	for (size_t i = 0; i < n; i++) {
		struct piece *p = &req->pieces[i];
		p->req = req;
		p->buf = buf + i * bs;
		p->off = off + i * bs;
		p->len = (uint32_t)ZN_MIN(bs, len - i * bs);
		p->buf_index = (int16_t)(whole >= 0 ? whole
					 : fixed ? fixed_slot_of(aio, p->buf, p->len) : -1);
	}
	if (fixed)
		pthread_rwlock_unlock(&aio->fix_lock);

	/* Contiguous runs of pieces per ring: each ring streams through its
	 * own part of the range, which keeps device access sequential. */
	unsigned nr = aio->nrings;
	unsigned start = atomic_fetch_add_explicit(&aio->next_ring, 1, memory_order_relaxed);
	*out = req;
	for (unsigned k = 0; k < nr; k++) {
		size_t lo = n * k / nr, hi = n * (k + 1) / nr;
		if (lo == hi)
			continue;
		struct ring *r = &aio->rings[(start + k) % nr];
		for (size_t i = lo; i + 1 < hi; i++)
			req->pieces[i].next = &req->pieces[i + 1];
		req->pieces[hi - 1].next = NULL;
		pthread_mutex_lock(&r->lock);
		if (r->inbox_tail)
			r->inbox_tail->next = &req->pieces[lo];
		else
			r->inbox_head = &req->pieces[lo];
		r->inbox_tail = &req->pieces[hi - 1];
		pthread_mutex_unlock(&r->lock);
		kick(r);
	}
	return 0;
}

int zn_aio_read(struct zn_aio_file *f, void *buf, size_t len, uint64_t offset,
		struct zn_aio_req **req)
{
	return submit(f, buf, len, offset, false, req);
}

int zn_aio_write(struct zn_aio_file *f, const void *buf, size_t len, uint64_t offset,
		 struct zn_aio_req **req)
{
	/* The engine never writes through buf; the cast is for the shared
	 * piece structure. */
	return submit(f, (uint8_t *)(uintptr_t)buf, len, offset, true, req);
}

bool zn_aio_done(const struct zn_aio_req *req)
{
	return atomic_load_explicit(&req->pending, memory_order_acquire) == 0;
}

ssize_t zn_aio_wait_timed(struct zn_aio_req *req, uint64_t *done_ns)
{
	ssize_t rc;

	pthread_mutex_lock(&req->lock);
	while (!req->done)
		pthread_cond_wait(&req->cond, &req->lock);
	if (req->err) {
		rc = req->err;
		zn_set_error_str(req->msg);
	} else {
		rc = (ssize_t)atomic_load(&req->bytes);
	}
	if (done_ns)
		*done_ns = req->t_done ? req->t_done : zn_now_ns(); /* 0 pieces: now */
	pthread_mutex_unlock(&req->lock);
	pthread_cond_destroy(&req->cond);
	pthread_mutex_destroy(&req->lock);
	free(req);
	return rc;
}

ssize_t zn_aio_wait(struct zn_aio_req *req)
{
	return zn_aio_wait_timed(req, NULL);
}

ssize_t zn_aio_pread(struct zn_aio_file *f, void *buf, size_t len, uint64_t offset)
{
	struct zn_aio_req *req;
	int rc = zn_aio_read(f, buf, len, offset, &req);
	return rc ? rc : zn_aio_wait(req);
}

ssize_t zn_aio_pwrite(struct zn_aio_file *f, const void *buf, size_t len, uint64_t offset)
{
	struct zn_aio_req *req;
	int rc = zn_aio_write(f, buf, len, offset, &req);
	return rc ? rc : zn_aio_wait(req);
}
