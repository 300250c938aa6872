/* The "nccl" comm backend: GPU ranks, collectives on device buffers.
 *
 * It is a comm backend like the others (comm/internal.h): the shared code
 * runs the collectives on the worker thread, in FIFO order, with the same
 * algorithms (reduce_scatter into `size` rows, then the rows added in rank
 * order; all_reduce as reduce_scatter + all_gather), and this file
 * supplies the exchange and, because the buffers are device memory, the
 * scratch rows, the copies and the reduction (zn_comm_mem_ops).  NCCL's own collectives
 * are not used: ncclAllReduce's ring and tree add in an order that depends
 * on the topology, the message size and the NCCL version, and comm.h
 * promises rank order.  So NCCL only moves bytes, with ncclSend/ncclRecv in
 * one group per exchange (any order of sends and receives is then safe),
 * and nccl_kernels.cu adds the rows in rank order.
 *
 * Everything is enqueued on one stream of the comm's own (non-blocking:
 * it never waits for the legacy default stream), so the rows a reduction
 * reads are the ones the exchange before it received; finish, at the end
 * of each collective, polls that stream until the deadline.
 *
 * Timeouts.  The communicator is nonblocking (ncclCommInitRankConfig with
 * blocking = 0): no NCCL call waits for a peer; a call may return
 * ncclInProgress, and ncclCommGetAsyncError is polled until it leaves that
 * state.  Past the deadline the communicator is aborted (ncclCommAbort,
 * which also makes NCCL's kernels on the stream return), the stream is
 * drained, and the collective fails with -ETIMEDOUT; the comm then answers
 * -EPIPE to every later one.
 *
 * Set-up (open, on the worker thread, over the caller's bootstrap comm):
 * this rank's checks (device, stream; rank 0 also creates NCCL's unique
 * id), the id broadcast from rank 0, every rank's status all-gathered, and
 * only then ncclCommInitRankConfig: a rank that cannot take part makes
 * every rank fail at once, naming it, instead of leaving the others in
 * NCCL's set-up until the timeout.
 *
 * CUDA and NCCL status codes are converted at the call site by one macro
 * per library, ZN_CUDA (common's zn_cuda.h, shared with the device and the
 * kernels) and ZN_NCCL (below), so that every failure returns a negative
 * errno whose message names the call, its file and line.  All CUDA and
 * NCCL calls are made on the worker thread, whose current device open
 * sets. */
#include "zn_build.h"

#include "comm/internal.h"
#include "comm/nccl_kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "zn_cuda.h"
/* nccl.h declares ncclGroupStart() and a few others without (void). */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#include <nccl.h>
#pragma GCC diagnostic pop

#if NCCL_VERSION_CODE < 21400
#error "the nccl backend needs NCCL >= 2.14 (nonblocking communicators)"
#endif

#define ID_MAGIC 0x5a4e4e43u /* "ZNNC": the unique id message over the bootstrap */
#define ID_VERSION 1u
/* Seconds close and a drain after an abort wait before giving up. */
#define CLOSE_WAIT_S 10.0
/* Scratch grows in steps of this many bytes (fewer cudaMalloc/cudaFree,
 * each of which synchronizes the device). */
#define SCRATCH_STEP ((size_t)1 << 20)

struct nccl_open_arg {
	struct zn_comm *bootstrap;
	int device;
};

struct nccl_impl {
	int device;            /* CUDA ordinal */
	ncclComm_t comm;       /* NULL before set-up and after an abort */
	cudaStream_t stream;   /* every enqueued piece of work */
	void *scratch;         /* device, scratch_bytes */
	size_t scratch_bytes;
	/* The collective in progress: whether anything was enqueued, since
	 * when, and the peers it exchanges with (for timeout messages). */
	bool in_op;
	uint64_t op_start_ns;
	bool *peers;           /* [size] */
};

#define ZN_CUDA_WHO "comm nccl: "

/* An NCCL status to a zinc error naming the call, file and line, with
 * NCCL's own last message (ncclGetLastError: the calling thread's). */
static int nccl_status(ncclResult_t r, const char *call, const char *file, int line)
{
	const char *detail = ncclGetLastError(NULL);
	int err;

	switch (r) {
	case ncclInvalidArgument:
	case ncclInvalidUsage:
		err = -EINVAL;
		break;
	case ncclRemoteError: /* a peer failed or its connection broke */
		err = -EPIPE;
		break;
	default: /* ncclUnhandledCudaError, ncclSystemError, ncclInternalError */
		err = -EIO;
		break;
	}
	return zn_error(err, "comm nccl: %s failed at %s:%d: %s%s%s", call, zn_source_name(file),
			line, ncclGetErrorString(r), detail && *detail ? ": " : "",
			detail ? detail : "");
}

/* ncclInProgress is not a failure: a nonblocking communicator's calls
 * return it while their work goes on in the background (wait_comm). */
#define ZN_NCCL(call)                                                                    \
	do {                                                                             \
		ncclResult_t zn_nc_r_ = (call);                                          \
		if (zn_nc_r_ != ncclSuccess && zn_nc_r_ != ncclInProgress)               \
			return nccl_status(zn_nc_r_, #call, __FILE__, __LINE__);         \
	} while (0)

/* Between polls: spin for fast collectives, then give the core back to
 * the compute threads (50 us of latency against seconds), as the mpi
 * backend does. */
static void poll_pause(unsigned spin)
{
	if (spin > 1000) {
		struct timespec ts = { 0, 50000 };
		nanosleep(&ts, NULL);
	}
}

static void begin(struct nccl_impl *n)
{
	if (!n->in_op) {
		n->in_op = true;
		n->op_start_ns = zn_now_ns();
	}
}

/* Wait for the stream to go idle, at most CLOSE_WAIT_S (after an abort,
 * NCCL's kernels return; a kernel of zinc's own ends by itself). */
static void drain(struct zn_comm *c, struct nccl_impl *n)
{
	const uint64_t give_up = zn_now_ns() + (uint64_t)(CLOSE_WAIT_S * 1e9);
	for (unsigned spin = 0; n->stream && zn_now_ns() < give_up; spin++) {
		if (cudaStreamQuery(n->stream) != cudaErrorNotReady)
			return;
		poll_pause(spin);
	}
	if (n->stream)
		zn_warn("comm nccl: rank %d's stream still busy %.3g s after the communicator was "
			"aborted", c->rank, CLOSE_WAIT_S);
}

static void abort_comm(struct zn_comm *c, struct nccl_impl *n)
{
	if (n->comm) {
		ncclCommAbort(n->comm);
		n->comm = NULL;
	}
	drain(c, n);
}

/* -ETIMEDOUT for `what` on this rank: aborts the communicator first. */
static int timed_out(struct zn_comm *c, struct nccl_impl *n, const char *what, uint64_t start)
{
	struct zn_comm_ranks peers = { 0 };
	bool any = false;

	for (int p = 0; p < c->size; p++)
		any |= p != c->rank && n->peers[p];
	for (int p = 0; p < c->size; p++) {
		if (p == c->rank || (any && !n->peers[p]))
			continue;
		zn_comm_ranks_add(&peers, "rank ", p);
	}
	const double waited = (double)(zn_now_ns() - start) / 1e9;
	abort_comm(c, n);
	return zn_error(-ETIMEDOUT, "comm nccl: %s on rank %d timed out (waited %.3g s exchanging "
			"with %s; NCCL does not say which %s did not take part): every rank must "
			"issue the same collectives in the same order; raise the timeout with "
			"zn_comm_set_timeout or ZINC_COMM_TIMEOUT if they are only slow",
			what, c->rank, waited, peers.count ? peers.text : "no peer",
			peers.count > 1 ? "of them" : "one");
}

/* Wait until the nonblocking communicator has left ncclInProgress after
 * `call` (made at `line`): 0, its error (then aborted), or -ETIMEDOUT for
 * `what`, which started at `start` (ns). */
static int wait_comm(struct zn_comm *c, struct nccl_impl *n, uint64_t start, uint64_t deadline,
		     const char *what, const char *call, int line)
{
	for (unsigned spin = 0;; spin++) {
		ncclResult_t st = ncclSuccess;
		ZN_NCCL(ncclCommGetAsyncError(n->comm, &st));
		if (st == ncclSuccess)
			return 0;
		if (st != ncclInProgress) {
			int rc = nccl_status(st, call, __FILE__, line);
			abort_comm(c, n);
			return rc;
		}
		if (zn_now_ns() >= deadline)
			return timed_out(c, n, what, start);
		poll_pause(spin);
	}
}

/* ---- set-up ---------------------------------------------------------------- */

/* The message rank 0 broadcasts over the bootstrap. */
struct id_msg {
	uint32_t magic, version;
	int32_t status; /* rank 0's set-up: 0 or -errno (then id is not valid) */
	uint32_t id_bytes;
	ncclUniqueId id;
};

/* This rank's part of the set-up, before any peer is involved. */
static int local_setup(struct zn_comm *c, struct nccl_impl *n, struct id_msg *msg)
{
	int count = 0;
	cudaError_t e = cudaGetDeviceCount(&count);
	if (e != cudaSuccess || count == 0)
		return zn_error(-ENODEV, "comm nccl: rank %d has no CUDA device (%s): the nccl backend "
				"needs one GPU per rank", c->rank,
				e != cudaSuccess ? cudaGetErrorString(e) : "none found");
	if (n->device < 0 || n->device >= count) {
		const char *vis = getenv("CUDA_VISIBLE_DEVICES");
		return zn_error(-ENODEV, "comm nccl: rank %d asked for CUDA device %d, but this process "
				"sees %d (ordinals 0..%d%s%s): pass the local rank, and start at most "
				"as many ranks per node as there are GPUs", c->rank, n->device, count,
				count - 1, vis ? ", CUDA_VISIBLE_DEVICES=" : "", vis ? vis : "");
	}
	ZN_CUDA(cudaSetDevice(n->device));
	ZN_CUDA(cudaStreamCreateWithFlags(&n->stream, cudaStreamNonBlocking));
	if (c->rank == 0)
		ZN_NCCL(ncclGetUniqueId(&msg->id));
	return 0;
}

static int nccl_open(struct zn_comm *c)
{
	const struct nccl_open_arg *a = c->open_arg;
	struct zn_comm *b = a->bootstrap;
	const uint64_t start = zn_now_ns();
	const uint64_t deadline = start + (uint64_t)(c->open_timeout * 1e9);

	c->rank = zn_comm_rank(b);
	c->size = zn_comm_size(b);
	c->local_rank = zn_comm_local_rank(b);
	struct nccl_impl *n = calloc(1, sizeof(*n));
	if (!n)
		return zn_error(-ENOMEM, "comm nccl: out of host memory");
	c->impl = n; /* on failure below, the worker calls nccl_close */
	n->device = a->device;
	n->peers = calloc((size_t)c->size, sizeof(bool));
	int32_t *status = calloc((size_t)c->size, sizeof(int32_t));
	if (!n->peers || !status) {
		free(status);
		return zn_error(-ENOMEM, "comm nccl: out of host memory for %d ranks", c->size);
	}

	/* 1. This rank alone.  A failure is kept until every rank has heard
	 *    of it (3): the bootstrap's collectives must stay in step. */
	struct id_msg msg = { .magic = ID_MAGIC, .version = ID_VERSION,
			      .id_bytes = (uint32_t)sizeof(ncclUniqueId) };
	char mine[512] = "";
	int32_t my_rc = local_setup(c, n, &msg);
	if (my_rc)
		snprintf(mine, sizeof(mine), "%s", zn_last_error());
	msg.status = my_rc;

	/* 2. Rank 0's id to every rank. */
	int rc = zn_comm_broadcast(b, &msg, sizeof(msg), 0);
	if (rc) {
		free(status);
		return zn_error(rc, "comm nccl: rank %d: broadcasting NCCL's unique id over the \"%s\" "
				"bootstrap failed: %s", c->rank, zn_comm_backend(b), zn_last_error());
	}
	if (msg.magic != ID_MAGIC || msg.version != ID_VERSION ||
	    msg.id_bytes != sizeof(ncclUniqueId)) {
		free(status);
		return zn_error(-EPROTO, "comm nccl: rank %d: rank 0's unique id message is version %u "
				"with %u id bytes (magic 0x%x), this zinc's is version %u with %zu: "
				"run the same zinc, built with the same NCCL, on every rank", c->rank,
				msg.version, msg.id_bytes, msg.magic, ID_VERSION, sizeof(ncclUniqueId));
	}

	/* 3. Every rank's status to every rank. */
	rc = zn_comm_all_gather(b, &my_rc, status, 1, ZN_DTYPE_I32);
	if (rc) {
		free(status);
		return zn_error(rc, "comm nccl: rank %d: gathering the ranks' set-up status over the "
				"\"%s\" bootstrap failed: %s", c->rank, zn_comm_backend(b),
				zn_last_error());
	}
	struct zn_comm_ranks failed = { 0 };
	for (int p = 0; p < c->size; p++)
		if (status[p])
			zn_comm_ranks_add(&failed, "", p);
	free(status);
	if (my_rc && mine[0])
		return zn_error(my_rc, "%s", mine);
	if (failed.count)
		return zn_error(-ECANCELED, "comm nccl: rank %d: rank%s %s could not set up (%s "
				"message says why), so no rank opens the nccl comm", c->rank,
				failed.count > 1 ? "s" : "", failed.text,
				failed.count > 1 ? "their" : "its");

	/* 4. NCCL's communicator, nonblocking: its set-up runs in the
	 *    background and is polled against the deadline. */
	ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
	cfg.blocking = 0;
	ZN_NCCL(ncclCommInitRankConfig(&n->comm, c->size, msg.id, c->rank, &cfg));
	if (!n->comm)
		return zn_error(-EIO, "comm nccl: ncclCommInitRankConfig returned no communicator");
	return wait_comm(c, n, start, deadline, "set-up", "ncclCommInitRankConfig", __LINE__);
}

static void nccl_close(struct zn_comm *c)
{
	struct nccl_impl *n = c->impl;
	if (!n)
		return;
	if (n->comm) {
		/* Finalize flushes this rank's pending work; it needs no peer
		 * when, as here, the FIFO has drained.  Bounded all the same. */
		bool done = false;
		ncclResult_t r = ncclCommFinalize(n->comm);
		const uint64_t give_up = zn_now_ns() + (uint64_t)(CLOSE_WAIT_S * 1e9);
		for (unsigned spin = 0; (r == ncclSuccess || r == ncclInProgress) && !done; spin++) {
			ncclResult_t st = ncclInProgress;
			r = ncclCommGetAsyncError(n->comm, &st);
			if (r != ncclSuccess)
				break;
			done = st == ncclSuccess;
			r = st;
			if (!done && zn_now_ns() >= give_up)
				break;
			poll_pause(spin);
		}
		if (done) {
			ncclCommDestroy(n->comm);
		} else {
			zn_warn("comm nccl: rank %d: ncclCommFinalize did not complete (%s): aborting "
				"the communicator", c->rank, ncclGetErrorString(r));
			ncclCommAbort(n->comm);
		}
		n->comm = NULL;
	}
	if (n->stream) {
		drain(c, n);
		cudaStreamDestroy(n->stream);
	}
	if (n->scratch)
		cudaFree(n->scratch);
	free(n->peers);
	free(n);
	c->impl = NULL;
}

/* ---- moving bytes ---------------------------------------------------------- */

/* One group of sends and receives, every peer at once: NCCL starts them
 * together, so no order of them can deadlock.  `tag` is not needed: the
 * ranks' operations on one communicator match in the order they are
 * issued, which the worker's FIFO makes the same on every rank. */
static int nccl_exchange(struct zn_comm *c, const struct zn_comm_xfer *x, int tag,
			 uint64_t deadline_ns, const char *what)
{
	struct nccl_impl *n = c->impl;
	int rc = 0;

	(void)tag;
	begin(n);
	ZN_NCCL(ncclGroupStart());
	for (int p = 0; p < c->size && !rc; p++) {
		if (p == c->rank)
			continue;
		if (x[p].send_bytes) {
			n->peers[p] = true;
			ncclResult_t r = ncclSend(x[p].send, x[p].send_bytes, ncclUint8, p, n->comm,
						  n->stream);
			if (r != ncclSuccess && r != ncclInProgress)
				rc = nccl_status(r, "ncclSend", __FILE__, __LINE__);
		}
		if (x[p].recv_bytes && !rc) {
			n->peers[p] = true;
			ncclResult_t r = ncclRecv(x[p].recv, x[p].recv_bytes, ncclUint8, p, n->comm,
						  n->stream);
			if (r != ncclSuccess && r != ncclInProgress)
				rc = nccl_status(r, "ncclRecv", __FILE__, __LINE__);
		}
	}
	/* The group is closed after a failure too: NCCL's group state is
	 * per thread and would swallow the next collective's calls. */
	ncclResult_t r = ncclGroupEnd();
	if (rc)
		return rc;
	if (r != ncclSuccess && r != ncclInProgress)
		return nccl_status(r, "ncclGroupEnd", __FILE__, __LINE__);
	/* Connections to a peer are made on first use, in the background
	 * (they need the peer): wait until the group is enqueued. */
	return wait_comm(c, n, n->op_start_ns, deadline_ns, what, "ncclGroupEnd", __LINE__);
}

/* ---- device buffers (zn_comm_mem_ops) -------------------------------------- */

static int nccl_scratch(struct zn_comm *c, size_t bytes, bool zero, void **out, const char *what)
{
	struct nccl_impl *n = c->impl;

	begin(n);
	if (bytes > n->scratch_bytes) {
		/* Only at the start of a collective (each takes one scratch, before
		 * its first exchange), when the stream
		 * holds nothing that uses the old buffer. */
		if (n->scratch)
			cudaFree(n->scratch);
		n->scratch = NULL;
		n->scratch_bytes = 0;
		const size_t want = ZN_ALIGN_UP(bytes, SCRATCH_STEP);
		cudaError_t e = cudaMalloc(&n->scratch, want);
		if (e != cudaSuccess) {
			char a[32];
			n->scratch = NULL;
			return zn_error(e == cudaErrorMemoryAllocation ? -ENOMEM : -EIO,
					"comm nccl %s: cannot allocate %s of device scratch on cuda:%d "
					"(%s): free device memory or reduce in smaller pieces", what,
					zn_format_size(want, a, sizeof(a)), n->device,
					cudaGetErrorString(e));
		}
		n->scratch_bytes = want;
	}
	if (zero)
		ZN_CUDA(cudaMemsetAsync(n->scratch, 0, bytes, n->stream));
	*out = n->scratch;
	return 0;
}

static int nccl_copy(struct zn_comm *c, void *dst, const void *src, size_t bytes, const char *what)
{
	struct nccl_impl *n = c->impl;

	(void)what;
	begin(n);
	ZN_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, n->stream));
	return 0;
}

static int nccl_reduce(struct zn_comm *c, enum zn_dtype dt, enum zn_comm_redop op, void *out,
		       const void *rows, int size, size_t m, const char *what)
{
	struct nccl_impl *n = c->impl;

	(void)what;
	begin(n);
	ZN_CUDA(zn_comm_nccl_reduce(dt, op, out, rows, size, m, n->stream));
	return 0;
}

static void end_op(struct zn_comm *c, struct nccl_impl *n)
{
	n->in_op = false;
	memset(n->peers, 0, (size_t)c->size * sizeof(bool));
}

static int nccl_finish(struct zn_comm *c, uint64_t deadline_ns, const char *what)
{
	struct nccl_impl *n = c->impl;
	int rc = 0;

	if (!n->in_op)
		return 0; /* nothing was enqueued */
	for (unsigned spin = 0; n->comm; spin++) { /* aborted: drained already */
		ncclResult_t st = ncclSuccess;
		ncclResult_t r = ncclCommGetAsyncError(n->comm, &st);
		if (r != ncclSuccess || (st != ncclSuccess && st != ncclInProgress)) {
			rc = nccl_status(r != ncclSuccess ? r : st, "ncclCommGetAsyncError", __FILE__,
					 __LINE__);
			abort_comm(c, n);
			break;
		}
		cudaError_t e = cudaStreamQuery(n->stream);
		if (e == cudaSuccess)
			break;
		if (e != cudaErrorNotReady) {
			rc = zn_cuda_status(e, ZN_CUDA_WHO, "cudaStreamQuery(stream)", __FILE__,
					    __LINE__);
			break;
		}
		if (zn_now_ns() >= deadline_ns) {
			rc = timed_out(c, n, what, n->op_start_ns);
			break;
		}
		poll_pause(spin);
	}
	end_op(c, n);
	return rc;
}

static const struct zn_comm_mem_ops nccl_mem_ops = {
	.scratch = nccl_scratch,
	.copy = nccl_copy,
	.reduce = nccl_reduce,
	.finish = nccl_finish,
};

static const struct zn_comm_ops nccl_ops = {
	.name = "nccl",
	.open = nccl_open,
	.close = nccl_close,
	.exchange = nccl_exchange,
	.mem = &nccl_mem_ops,
};

struct zn_comm *zn_comm_create_nccl(struct zn_comm *bootstrap, int device)
{
	if (!bootstrap) {
		zn_set_error("comm nccl: the bootstrap comm is NULL: open a \"mpi\" or \"tcp\" comm "
			     "first (zn_comm_create) and pass it");
		return NULL;
	}
	if (bootstrap->ops->mem) {
		zn_set_error("comm nccl: the bootstrap comm is a \"%s\" comm, whose buffers are not "
			     "host memory: pass a \"mpi\", \"tcp\" or \"self\" comm",
			     bootstrap->ops->name);
		return NULL;
	}
	/* A bad device is found in open, where the other ranks hear of it. */
	const struct nccl_open_arg a = { .bootstrap = bootstrap, .device = device };
	return zn_comm_start(&nccl_ops, &a);
}
