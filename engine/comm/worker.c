/* The comm's worker thread and its FIFO of operations.
 *
 * zn_comm_start starts the thread, whose first act is the backend's open
 * and whose last is its close: every backend call of a comm is made on
 * that one thread (the mpi backend's MPI "main thread").  The entry points
 * (comm.c) enqueue an operation; the thread runs them one at a time, in
 * FIFO order (collectives.c), so every rank issues its collectives in the
 * order its caller did, and records each as a span of the comm's trace.
 * zn_comm_wait returns an operation's result and frees it.
 *
 * w->mu guards the FIFO, the list of live ops, stop, opened, the timeout
 * and the trace; seq and broken are the thread's alone. */
#include "zn_build.h"

#include "comm/core.h"
#include "zinc/trace.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *worker_main(void *arg)
{
	struct zn_comm *c = arg;
	struct zn_comm_worker *w = c->w;

	int rc = c->ops->open(c);
	if (rc) {
		char msg[sizeof(w->open_err)];
		snprintf(msg, sizeof(msg), "%s", zn_last_error());
		c->ops->close(c); /* undo what open did before it failed */
		pthread_mutex_lock(&w->mu);
		snprintf(w->open_err, sizeof(w->open_err), "%s", msg);
	} else {
		pthread_mutex_lock(&w->mu);
	}
	w->opened = true;
	w->open_rc = rc;
	pthread_cond_broadcast(&w->done);
	pthread_mutex_unlock(&w->mu);
	if (rc)
		return NULL;

	pthread_mutex_lock(&w->mu);
	for (;;) {
		while (!w->head && !w->stop)
			pthread_cond_wait(&w->work, &w->mu);
		struct zn_comm_op *op = w->head;
		if (!op)
			break; /* stop, and the FIFO is drained */
		w->head = op->next;
		if (!w->head)
			w->tail = NULL;
		struct zn_trace *trace = w->trace;
		pthread_mutex_unlock(&w->mu);

		uint64_t t0 = zn_now_ns();
		int r = zn_comm_run_op(c, op);
		/* When the bytes moved: the thread that waits knows only when it
		 * stopped waiting (overlap is the difference). */
		zn_trace_span(trace, zn_comm_op_names[op->kind], "comm-op", "comm thread", t0,
			      zn_now_ns(), 0);

		pthread_mutex_lock(&w->mu);
		op->rc = r;
		if (r)
			snprintf(op->err, sizeof(op->err), "%s", zn_last_error());
		op->done = true;
		pthread_cond_broadcast(&w->done);
	}
	pthread_mutex_unlock(&w->mu);
	c->ops->close(c);
	return NULL;
}

static void free_worker(struct zn_comm_worker *w)
{
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->work);
	pthread_cond_destroy(&w->done);
	free(w);
}

/* A timeout the comm takes: seconds, positive and at most 1e9 (about 30
 * years: deadlines in ns stay far from overflow). */
static bool timeout_ok(double seconds)
{
	return seconds > 0 && isfinite(seconds) && seconds <= 1e9;
}

/* ZINC_COMM_TIMEOUT: seconds, the default timeout of collectives and of
 * the tcp rendezvous.  0, or -EINVAL with the message set. */
static int env_timeout(double *out)
{
	const char *s = getenv("ZINC_COMM_TIMEOUT");
	char *end;

	*out = ZN_COMM_TIMEOUT_DEFAULT;
	if (!s || !*s)
		return 0;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || *end || !timeout_ok(v))
		return zn_error(-EINVAL, "comm: ZINC_COMM_TIMEOUT=\"%s\" is not a positive number of "
				"seconds (at most 1e9): set it to e.g. 600, or unset it for %g s", s,
				ZN_COMM_TIMEOUT_DEFAULT);
	*out = v;
	return 0;
}

struct zn_comm *zn_comm_start(const struct zn_comm_ops *ops, const void *open_arg)
{
	const char *name = ops->name;
	double timeout;

	if (env_timeout(&timeout))
		return NULL;
	struct zn_comm *c = calloc(1, sizeof(*c));
	struct zn_comm_worker *w = calloc(1, sizeof(*w));
	if (!c || !w) {
		free(c);
		free(w);
		zn_set_error("comm: out of host memory");
		return NULL;
	}
	c->ops = ops;
	c->w = w;
	c->open_timeout = timeout;
	c->open_arg = open_arg;
	w->timeout = timeout;
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->work, NULL);
	pthread_cond_init(&w->done, NULL);
	int err = pthread_create(&w->thread, NULL, worker_main, c);
	if (err) {
		free_worker(w);
		free(c);
		zn_set_error("comm %s: cannot start the worker thread: %s", name, strerror(err));
		return NULL;
	}
	pthread_mutex_lock(&w->mu);
	while (!w->opened)
		pthread_cond_wait(&w->done, &w->mu);
	pthread_mutex_unlock(&w->mu);
	c->open_arg = NULL; /* the caller's, gone when it returns */
	if (w->open_rc) {
		pthread_join(w->thread, NULL);
		zn_set_error_str(w->open_err);
		free_worker(w);
		free(c);
		return NULL;
	}
	return c;
}

void zn_comm_destroy(struct zn_comm *c)
{
	if (!c)
		return;
	struct zn_comm_worker *w = c->w;
	pthread_mutex_lock(&w->mu);
	w->stop = true;
	pthread_cond_signal(&w->work);
	pthread_mutex_unlock(&w->mu);
	pthread_join(w->thread, NULL);
	while (w->live) {
		struct zn_comm_op *op = w->live;
		w->live = op->next_live;
		free(op);
	}
	free_worker(w);
	free(c);
}

void zn_comm_set_trace(struct zn_comm *c, struct zn_trace *trace)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->w->mu);
	c->w->trace = trace;
	pthread_mutex_unlock(&c->w->mu);
}

int zn_comm_set_timeout(struct zn_comm *c, double seconds)
{
	if (!timeout_ok(seconds))
		return zn_error(-EINVAL, "comm timeout %g s is not a positive number of seconds "
				"(at most 1e9)", seconds);
	pthread_mutex_lock(&c->w->mu);
	c->w->timeout = seconds;
	pthread_mutex_unlock(&c->w->mu);
	return 0;
}

int zn_comm_enqueue(struct zn_comm *c, const struct zn_comm_op *tmpl, struct zn_comm_op **out)
{
	struct zn_comm_worker *w = c->w;

	*out = NULL;
	struct zn_comm_op *op = malloc(sizeof(*op));
	if (!op)
		return zn_error(-ENOMEM, "comm %s: out of host memory", zn_comm_op_names[tmpl->kind]);
	*op = *tmpl;
	op->c = c;
	op->next = NULL;
	op->done = false;
	op->rc = 0;
	op->err[0] = '\0';
	pthread_mutex_lock(&w->mu);
	op->timeout = w->timeout;
	op->prev_live = NULL;
	op->next_live = w->live;
	if (w->live)
		w->live->prev_live = op;
	w->live = op;
	if (w->tail)
		w->tail->next = op;
	else
		w->head = op;
	w->tail = op;
	pthread_cond_signal(&w->work);
	pthread_mutex_unlock(&w->mu);
	*out = op;
	return 0;
}

int zn_comm_wait(struct zn_comm_op *op)
{
	if (!op)
		return zn_error(-EINVAL, "comm wait: op is NULL");
	struct zn_comm_worker *w = op->c->w;
	pthread_mutex_lock(&w->mu);
	while (!op->done)
		pthread_cond_wait(&w->done, &w->mu);
	if (op->prev_live)
		op->prev_live->next_live = op->next_live;
	else
		w->live = op->next_live;
	if (op->next_live)
		op->next_live->prev_live = op->prev_live;
	pthread_mutex_unlock(&w->mu);
	int rc = op->rc;
	if (rc)
		zn_set_error_str(op->err);
	free(op);
	return rc;
}
