/* The comm's shared code, private to it: what its entry points (comm.c),
 * its worker thread (worker.c), its collectives (collectives.c) and its
 * reductions (reduce.c) pass between them.  Backends include only
 * comm/internal.h: they never see an operation or the worker. */
#ifndef ZN_COMM_CORE_H
#define ZN_COMM_CORE_H

#include "comm/internal.h"

#include <pthread.h>

enum op_kind { OP_ALL_REDUCE, OP_REDUCE_SCATTER, OP_ALL_GATHER, OP_BROADCAST, OP_BARRIER };

/* The collectives' names, for messages and the trace (collectives.c). */
extern const char *const zn_comm_op_names[];

struct zn_comm_op {
	struct zn_comm *c;
	struct zn_comm_op *next;        /* the FIFO */
	struct zn_comm_op *prev_live, *next_live; /* every op not yet waited for */
	enum op_kind kind;
	void *buf;        /* all_reduce, broadcast */
	const void *send; /* reduce_scatter, all_gather */
	void *recv;
	size_t n;         /* elements (all_reduce) or per rank; bytes (broadcast) */
	enum zn_dtype dtype;
	enum zn_comm_redop redop;
	int root;
	double timeout;   /* seconds */
	bool done;
	int rc;
	char err[512];
};

struct zn_comm_worker {
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t work; /* the FIFO is not empty, or stop */
	pthread_cond_t done; /* an op completed, or the backend opened */
	struct zn_comm_op *head, *tail;
	struct zn_comm_op *live;
	bool stop;
	bool opened; /* open has returned; open_rc is its result */
	int open_rc;
	char open_err[512];
	double timeout;
	struct zn_trace *trace; /* spans of the ops as they run (under mu) */
	/* The worker thread's own. */
	unsigned seq;          /* collectives run so far: the message tag */
	int broken;            /* 0, or the error that left the comm unusable */
	char broken_msg[512];
};

/* worker.c: append a copy of *tmpl (kind and arguments, checked) to the
 * FIFO; *out: the op for zn_comm_wait, NULL on failure.  0 or -ENOMEM. */
int zn_comm_enqueue(struct zn_comm *c, const struct zn_comm_op *tmpl, struct zn_comm_op **out);

/* collectives.c: run one operation on the worker thread.  0 or -errno with
 * the last error set; with peers, a failure leaves the comm unusable
 * (w->broken: messages may still be in flight). */
int zn_comm_run_op(struct zn_comm *c, struct zn_comm_op *op);

/* reduce.c: out[i] = rows[0][i] op rows[1][i] op ... op rows[size-1][i],
 * in that order (rows: (size, m) elements of dt; out: m elements).  The
 * specification of zn_comm_mem_ops.reduce. */
void zn_comm_reduce_rows(enum zn_dtype dt, enum zn_comm_redop op, void *out,
			 const unsigned char *rows, int size, size_t m);

#endif
