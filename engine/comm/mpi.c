/* The "mpi" comm backend: CPU ranks over MPI point-to-point messages.
 *
 * Every function here runs on the comm's worker thread (worker.c), which
 * initialises MPI with MPI_THREAD_FUNNELED and so is MPI's "main thread":
 * no other thread of the process may call MPI while the comm is open.
 *
 * Only nonblocking sends and receives are used (reduce.c adds in rank order,
 * see include/zinc/comm.h), and they are polled with MPI_Testall against
 * the collective's deadline, so a rank that never joins makes the others
 * fail with -ETIMEDOUT instead of hanging.  After a timeout the pending
 * receives are cancelled so that MPI_Finalize can still complete. */
#include "zn_build.h"

#include "comm/internal.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An MPI status code to a zinc error, naming the call, file and line. */
#define ZN_MPI(call)                                                                    \
	do {                                                                            \
		int mpi_rc_ = (call);                                                   \
		if (mpi_rc_ != MPI_SUCCESS)                                             \
			return mpi_error(mpi_rc_, #call, __FILE__, __LINE__);           \
	} while (0)

/* One message carries at most this many bytes (MPI counts are int). */
#define PIECE ((size_t)1 << 30)

struct mpi_impl {
	MPI_Comm comm;      /* a dup of MPI_COMM_WORLD that returns errors */
	bool initialised;   /* zinc called MPI_Init_thread, so it finalizes */
};

static int mpi_error(int code, const char *call, const char *file, int line)
{
	char text[MPI_MAX_ERROR_STRING];
	int len = 0;
	if (MPI_Error_string(code, text, &len) != MPI_SUCCESS)
		snprintf(text, sizeof(text), "MPI error %d", code);
	return zn_error(-EIO, "comm mpi: %s failed (%s:%d): %s", call, zn_source_name(file), line,
			text);
}

static int mpi_open(struct zn_comm *c)
{
	int flag = 0, provided = 0;

	ZN_MPI(MPI_Finalized(&flag));
	if (flag)
		return zn_error(-EALREADY, "comm mpi: MPI was already finalized in this process (an "
				"earlier mpi comm was destroyed): open one mpi comm per process");
	struct mpi_impl *m = calloc(1, sizeof(*m));
	if (!m)
		return zn_error(-ENOMEM, "comm mpi: out of host memory");
	m->comm = MPI_COMM_NULL;
	c->impl = m; /* on failure below, the worker calls mpi_close */
	ZN_MPI(MPI_Initialized(&flag));
	if (flag) {
		/* The application started MPI; zinc calls it from its own thread. */
		ZN_MPI(MPI_Query_thread(&provided));
		if (provided < MPI_THREAD_MULTIPLE) {
			free(m);
			c->impl = NULL;
			return zn_error(-ENOTSUP, "comm mpi: the application initialised MPI with "
					"thread level %d, but zinc makes its MPI calls on its own "
					"thread, which needs MPI_THREAD_MULTIPLE (%d): initialise "
					"with MPI_THREAD_MULTIPLE or let zinc initialise MPI",
					provided, MPI_THREAD_MULTIPLE);
		}
	} else {
		ZN_MPI(MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided));
		m->initialised = true;
		if (provided < MPI_THREAD_FUNNELED)
			return zn_error(-ENOTSUP, "comm mpi: MPI provides thread level %d, zinc needs "
					"MPI_THREAD_FUNNELED (%d): use an MPI built with thread "
					"support", provided, MPI_THREAD_FUNNELED);
	}
	ZN_MPI(MPI_Comm_dup(MPI_COMM_WORLD, &m->comm));
	ZN_MPI(MPI_Comm_set_errhandler(m->comm, MPI_ERRORS_RETURN));
	ZN_MPI(MPI_Comm_rank(m->comm, &c->rank));
	ZN_MPI(MPI_Comm_size(m->comm, &c->size));
	/* The local rank: this rank's index among the ranks sharing its node. */
	MPI_Comm node;
	ZN_MPI(MPI_Comm_split_type(m->comm, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &node));
	int lr = 0;
	int rc = MPI_Comm_rank(node, &lr);
	MPI_Comm_free(&node);
	ZN_MPI(rc);
	c->local_rank = lr;
	return 0;
}

static void mpi_close(struct zn_comm *c)
{
	struct mpi_impl *m = c->impl;
	if (!m)
		return;
	if (m->comm != MPI_COMM_NULL)
		MPI_Comm_free(&m->comm);
	if (m->initialised)
		MPI_Finalize();
	free(m);
	c->impl = NULL;
}

struct req_table {
	MPI_Request *req;
	int *peer;      /* the rank each request talks to */
	bool *is_recv;
	int n, cap;
};

static int post(struct req_table *t, MPI_Comm comm, bool recv, void *buf, size_t bytes, int peer,
		int tag)
{
	for (size_t done = 0; done < bytes; done += PIECE) {
		const int len = (int)ZN_MIN(PIECE, bytes - done);
		char *p = (char *)buf + done;
		MPI_Request *r = &t->req[t->n];
		if (recv)
			ZN_MPI(MPI_Irecv(p, len, MPI_BYTE, peer, tag, comm, r));
		else
			ZN_MPI(MPI_Isend(p, len, MPI_BYTE, peer, tag, comm, r));
		t->peer[t->n] = peer;
		t->is_recv[t->n] = recv;
		t->n++;
	}
	return 0;
}

/* Cancel what is still pending after a failure, so that neither a late
 * message lands in a freed buffer nor MPI_Finalize waits for it. */
static void cancel_pending(struct req_table *t)
{
	for (int i = 0; i < t->n; i++) {
		if (t->req[i] == MPI_REQUEST_NULL)
			continue;
		MPI_Cancel(&t->req[i]);
	}
	/* A cancelled receive completes at once; a send may not (it may be
	 * on the wire): give it a moment, then let MPI finish it alone. */
	const uint64_t give_up = zn_now_ns() + 1000000000ull;
	for (int i = 0; i < t->n; i++) {
		int flag = 0;
		while (t->req[i] != MPI_REQUEST_NULL && zn_now_ns() < give_up) {
			if (MPI_Test(&t->req[i], &flag, MPI_STATUS_IGNORE) != MPI_SUCCESS)
				break;
		}
		if (t->req[i] != MPI_REQUEST_NULL)
			MPI_Request_free(&t->req[i]);
	}
}

static int timed_out(struct zn_comm *c, struct req_table *t, const char *what, double seconds)
{
	/* Which requests are still pending: the ranks that did not deliver. */
	struct zn_comm_ranks missing = { 0 };
	bool *seen = calloc((size_t)c->size, sizeof(bool));
	for (int i = 0; i < t->n; i++) {
		int flag = 0;
		if (t->req[i] != MPI_REQUEST_NULL)
			MPI_Test(&t->req[i], &flag, MPI_STATUS_IGNORE);
		if (t->req[i] == MPI_REQUEST_NULL || (seen && seen[t->peer[i]]))
			continue;
		if (seen)
			seen[t->peer[i]] = true;
		zn_comm_ranks_add(&missing, "", t->peer[i]);
	}
	free(seen);
	cancel_pending(t);
	return zn_error(-ETIMEDOUT, "comm mpi: %s on rank %d timed out (waited %.3g s for its messages): "
			"rank%s %s did not take part (every rank must issue the same collectives in "
			"the same order; raise the timeout with zn_comm_set_timeout if they are only "
			"slow)", what, c->rank, seconds, missing.count > 1 ? "s" : "",
			missing.count ? missing.text : "(unknown)");
}

static int mpi_exchange(struct zn_comm *c, const struct zn_comm_xfer *x, int tag,
			uint64_t deadline_ns, const char *what)
{
	struct mpi_impl *m = c->impl;
	struct req_table t = { 0 };
	int rc = 0;

	for (int p = 0; p < c->size; p++) {
		if (p == c->rank)
			continue;
		t.cap += (int)(ZN_DIV_ROUND_UP(x[p].send_bytes, PIECE) +
			       ZN_DIV_ROUND_UP(x[p].recv_bytes, PIECE));
	}
	if (t.cap == 0)
		return 0;
	t.req = malloc((size_t)t.cap * sizeof(*t.req));
	t.peer = malloc((size_t)t.cap * sizeof(*t.peer));
	t.is_recv = malloc((size_t)t.cap * sizeof(*t.is_recv));
	if (!t.req || !t.peer || !t.is_recv) {
		rc = zn_error(-ENOMEM, "comm mpi %s: out of host memory for %d requests", what, t.cap);
		goto out;
	}
	/* Receives first, so that messages land in place, not in MPI's buffers. */
	for (int p = 0; p < c->size && !rc; p++)
		if (p != c->rank && x[p].recv_bytes)
			rc = post(&t, m->comm, true, x[p].recv, x[p].recv_bytes, p, tag);
	for (int p = 0; p < c->size && !rc; p++)
		if (p != c->rank && x[p].send_bytes)
			rc = post(&t, m->comm, false, (void *)x[p].send, x[p].send_bytes, p, tag);
	if (rc) {
		cancel_pending(&t);
		goto out;
	}

	const uint64_t start = zn_now_ns();
	for (unsigned spin = 0;; spin++) {
		int flag = 0;
		int e = MPI_Testall(t.n, t.req, &flag, MPI_STATUSES_IGNORE);
		if (e != MPI_SUCCESS) {
			rc = mpi_error(e, "MPI_Testall", __FILE__, __LINE__);
			cancel_pending(&t);
			break;
		}
		if (flag)
			break;
		const uint64_t now = zn_now_ns();
		if (now >= deadline_ns) {
			rc = timed_out(c, &t, what, (double)(deadline_ns - start) / 1e9);
			break;
		}
		/* Spin briefly for small, fast collectives, then yield the core
		 * to the compute threads: 50 us of latency against seconds. */
		if (spin > 1000) {
			struct timespec ts = { 0, 50000 };
			nanosleep(&ts, NULL);
		}
	}
out:
	free(t.req);
	free(t.peer);
	free(t.is_recv);
	return rc;
}

const struct zn_comm_ops zn_comm_mpi_ops = {
	.name = "mpi",
	.open = mpi_open,
	.close = mpi_close,
	.exchange = mpi_exchange,
};
