/* The comm ops table: what a backend gives the rest of the comm, and the
 * little the rest lends the backends.  Not installed.
 *
 * Each backend (self.c, tcp*.c, mpi.c, nccl.c) is one const table of
 * functions filled with designated initializers; comm.c picks the table
 * once, when the comm is opened, so no other code asks which backend it
 * runs on and a new backend is a new table.
 *
 * The shared code owns what does not depend on the backend (its own
 * header is comm/core.h, which no backend includes): the entry points and
 * their argument checks (comm.c), the worker thread on which every backend
 * function below is called, and its FIFO (worker.c), the collectives'
 * algorithms (collectives.c) and the reductions in rank order (reduce.c).
 *
 * A backend owns its transport: it starts, stops and moves bytes between
 * this rank and its peers (zn_comm_ops.exchange).  A backend whose buffers
 * are not host memory (nccl: device pointers) also gives the collectives
 * the few things they cannot do there with malloc, memmove and a loop: a
 * scratch buffer, a copy, the reduction in rank order, and a wait for what
 * it enqueued (zn_comm_mem_ops); the algorithms stay the shared code's.
 * The backends' own private headers (tcp.h, nccl_kernels.h) are theirs. */
#ifndef ZN_COMM_INTERNAL_H
#define ZN_COMM_INTERNAL_H

#include "zn_common.h"

#include "zinc/comm.h"

/* What one rank sends to and receives from one peer in an exchange.  Zero
 * bytes: no message in that direction. */
struct zn_comm_xfer {
	const void *send;
	size_t send_bytes;
	void *recv;
	size_t recv_bytes;
};

/* Buffers in a backend's own memory (device memory for nccl).  Every
 * function runs on the worker thread and may only enqueue its work (in
 * order with the exchanges that follow, as on one CUDA stream): each
 * collective calls finish at its end, and has completed when finish
 * returns.  Each returns 0 or -errno with the last error set; `what`
 * names the collective in messages. */
struct zn_comm_mem_ops {
	/* *out: a buffer of at least `bytes` (> 0), zeroed when `zero`, owned
	 * by the backend and valid until the next scratch call or close
	 * (the collectives never need two at once). */
	int (*scratch)(struct zn_comm *c, size_t bytes, bool zero, void **out, const char *what);
	/* Copy `bytes` (> 0) from src to dst; the ranges do not overlap. */
	int (*copy)(struct zn_comm *c, void *dst, const void *src, size_t bytes, const char *what);
	/* out[i] = rows[0][i] op rows[1][i] op ... op rows[size-1][i], added
	 * in that order: exactly zn_comm_reduce_rows (reduce.c): fp16/bf16
	 * in fp32, rounded once; integers wrap; MAX: NaN wins.  rows: (size, m)
	 * elements of dt; out: m elements, not overlapping rows; m > 0. */
	int (*reduce)(struct zn_comm *c, enum zn_dtype dt, enum zn_comm_redop op, void *out,
		      const void *rows, int size, size_t m, const char *what);
	/* Wait until everything enqueued for this collective has completed:
	 * 0, -ETIMEDOUT past deadline_ns naming the collective and the peers
	 * it waited for, or another -errno.  Called after a failure too (the
	 * collective's buffers must be idle when zn_comm_wait returns). */
	int (*finish)(struct zn_comm *c, uint64_t deadline_ns, const char *what);
};

struct zn_comm_ops {
	const char *name; /* "self", "mpi", "tcp", "nccl" */
	/* On the worker thread: set c->rank, c->size, c->local_rank and
	 * c->impl; a backend that waits for its peers gives up after
	 * c->open_timeout.  Returns 0 or -errno with the last error set. */
	int (*open)(struct zn_comm *c);
	/* On the worker thread, after the last operation, or after a failed
	 * open to undo what it did (c->impl may be NULL then). */
	void (*close)(struct zn_comm *c);
	/* On the worker thread: for every peer p != c->rank, send
	 * x[p].send_bytes from x[p].send and receive x[p].recv_bytes into
	 * x[p].recv (x has c->size entries; x[c->rank] is ignored).  `tag`
	 * tells this collective's messages from any other's; `what` names the
	 * collective in messages.  Returns 0, -ETIMEDOUT past deadline_ns
	 * (zn_now_ns clock) naming the peers whose data did not arrive, or
	 * another -errno; the last error is set either way. */
	int (*exchange)(struct zn_comm *c, const struct zn_comm_xfer *x, int tag,
			uint64_t deadline_ns, const char *what);
	/* NULL: buffers are host memory.  Else the backend's (device) memory,
	 * and exchange may return once the transfers are enqueued: finish
	 * waits for them. */
	const struct zn_comm_mem_ops *mem;
};

struct zn_comm {
	const struct zn_comm_ops *ops;
	void *impl;
	int rank, size, local_rank;
	/* Seconds open may wait for the other ranks (the tcp rendezvous):
	 * ZINC_COMM_TIMEOUT, else ZN_COMM_TIMEOUT_DEFAULT.  Set by
	 * zn_comm_start. */
	double open_timeout;
	/* What the backend's constructor passes to open (zn_comm_start);
	 * NULL once open has returned. */
	const void *open_arg;
	/* The shared code's (comm/core.h). */
	struct zn_comm_worker *w;
};

extern const struct zn_comm_ops zn_comm_self_ops;
extern const struct zn_comm_ops zn_comm_tcp_ops;
#if ZN_HAVE_MPI
extern const struct zn_comm_ops zn_comm_mpi_ops;
#endif

/* Start a comm on `ops`: its worker thread, whose first act is ops->open
 * with c->open_arg = open_arg (the caller's, read only during open).  For
 * backends that zn_comm_create cannot open by name alone (nccl needs a
 * bootstrap comm).  Returns NULL with the last error set. */
struct zn_comm *zn_comm_start(const struct zn_comm_ops *ops, const void *open_arg);

/* ---- lent to the backends (comm.c) -------------------------------------- */

/* A launcher variable (RANK, WORLD_SIZE, ...) as an integer in [lo, hi]:
 * 0, -ENOENT when unset or empty, -EINVAL when it is not such a number. */
int zn_comm_env_long(const char *name, long lo, long hi, long *out);

/* The ranks a message names, "1, 3, 4".  Start from { 0 }. */
struct zn_comm_ranks {
	char text[256]; /* as many ranks as fit, each whole */
	size_t used;    /* bytes of text */
	int count;      /* every rank added, those that did not fit too */
};

/* Add `rank` to the list, after `label` ("rank " makes "rank 1, rank 3"). */
void zn_comm_ranks_add(struct zn_comm_ranks *r, const char *label, int rank);

#endif
