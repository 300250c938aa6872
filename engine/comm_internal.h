/* The comm ops table (STYLE habit 5) and the state every backend shares.
 * Not installed.
 *
 * comm.c owns what does not depend on the backend: argument checks, the
 * worker thread and its FIFO, the collectives' algorithms and the
 * reductions in rank order.  A backend only starts, stops and moves bytes
 * between this rank and its peers (zn_comm_ops.exchange). */
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

struct zn_comm_ops {
	const char *name; /* "self", "mpi", "tcp" */
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
};

struct zn_comm {
	const struct zn_comm_ops *ops;
	void *impl;
	int rank, size, local_rank;
	/* Seconds open may wait for the other ranks (the tcp rendezvous):
	 * ZINC_COMM_TIMEOUT, else ZN_COMM_TIMEOUT_DEFAULT.  Set by comm.c. */
	double open_timeout;
	/* Everything below is comm.c's. */
	struct zn_comm_worker *w;
};

extern const struct zn_comm_ops zn_comm_self_ops;
extern const struct zn_comm_ops zn_comm_tcp_ops;
#if ZN_HAVE_MPI
extern const struct zn_comm_ops zn_comm_mpi_ops;
#endif

#endif
