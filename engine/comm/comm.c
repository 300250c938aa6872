/* Communication: the backend-independent half (include/zinc/comm.h) and
 * the "self" backend.
 *
 * Every operation runs on the comm's worker thread, in FIFO order.  The
 * collectives are built here from one backend primitive, an exchange of
 * byte ranges with every peer (comm/internal.h), and the reductions are
 * done here, in rank order, so that the result does not depend on the
 * transport:
 *
 *   reduce_scatter  rank r receives chunk r from every rank into a scratch
 *                   array (size, chunk), then adds the rows 0, 1, ... in
 *                   that order;
 *   all_reduce      a reduce_scatter over `size` nearly equal chunks (the
 *                   first n % size chunks one element longer), then an
 *                   all_gather of the reduced chunks: each element is added
 *                   in rank order by exactly one rank, and every rank sends
 *                   and receives about 2 n elements, as in a ring;
 *   all_gather      every rank sends its chunk to every peer;
 *   broadcast       the root sends to every peer;
 *   barrier         an all_gather of one byte.
 *
 * The same algorithms serve device buffers (nccl): the scratch rows, the
 * copies and the reduction then go through the backend's zn_comm_mem_ops
 * (buf_* below), which enqueue on its stream, and one finish per
 * collective waits for the whole of it.
 */
#include "zn_build.h"

#include "comm/internal.h"
#include "zn_half.h"
#include "zinc/trace.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct zn_comm_ops *const backends[] = {
	&zn_comm_self_ops,
	&zn_comm_tcp_ops,
#if ZN_HAVE_MPI
	&zn_comm_mpi_ops,
#endif
};

enum op_kind { OP_ALL_REDUCE, OP_REDUCE_SCATTER, OP_ALL_GATHER, OP_BROADCAST, OP_BARRIER };

static const char *const op_names[] = {
	[OP_ALL_REDUCE] = "all_reduce",
	[OP_REDUCE_SCATTER] = "reduce_scatter",
	[OP_ALL_GATHER] = "all_gather",
	[OP_BROADCAST] = "broadcast",
	[OP_BARRIER] = "barrier",
};
_Static_assert(ZN_ARRAY_SIZE(op_names) == OP_BARRIER + 1, "one name per op");

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

/* ---- the self backend --------------------------------------------------- */

static int self_open(struct zn_comm *c)
{
	c->rank = 0;
	c->size = 1;
	c->local_rank = 0;
	return 0;
}

static void self_close(struct zn_comm *c)
{
	(void)c;
}

/* Never called: one rank has no peers. */
static int self_exchange(struct zn_comm *c, const struct zn_comm_xfer *x, int tag,
			 uint64_t deadline_ns, const char *what)
{
	(void)c, (void)x, (void)tag, (void)deadline_ns;
	return zn_error(-EINVAL, "comm self: %s has no peer to exchange with", what);
}

const struct zn_comm_ops zn_comm_self_ops = {
	.name = "self",
	.open = self_open,
	.close = self_close,
	.exchange = self_exchange,
};

/* ---- reductions, in rank order -------------------------------------------
 * rows: `size` rows of m elements each, row p from rank p; out: m elements.
 * out[i] = ((row0[i] op row1[i]) op row2[i]) ...  fp16/bf16 accumulate in
 * fp32 and round once; integers wrap (unsigned arithmetic, no UB). */

static float fmax_nan(float acc, float x)
{
	if (isnan(acc) || isnan(x))
		return isnan(acc) ? acc : x;
	return x > acc ? x : acc;
}

static float load_half(enum zn_dtype dt, const void *p, size_t i)
{
	const uint16_t h = ((const uint16_t *)p)[i];
	return dt == ZN_DTYPE_BF16 ? zn_bf16_to_f32(h) : zn_f16_to_f32(h);
}

static void reduce_rows(enum zn_dtype dt, enum zn_comm_redop op, void *out,
			const unsigned char *rows, int size, size_t m)
{
	/* The specification of every backend's reduction (zn_comm_mem_ops.reduce). */
	const size_t row = m * zn_dtype_size(dt);

	for (size_t i = 0; i < m; i++) {
		switch (dt) {
		case ZN_DTYPE_F32: {
			float acc = ((const float *)rows)[i];
			for (int p = 1; p < size; p++) {
				float x = ((const float *)(rows + p * row))[i];
				acc = op == ZN_COMM_SUM ? acc + x : fmax_nan(acc, x);
			}
			((float *)out)[i] = acc;
			break;
		}
		case ZN_DTYPE_BF16:
		case ZN_DTYPE_F16: {
			float acc = load_half(dt, rows, i);
			for (int p = 1; p < size; p++) {
				float x = load_half(dt, rows + p * row, i);
				acc = op == ZN_COMM_SUM ? acc + x : fmax_nan(acc, x);
			}
			((uint16_t *)out)[i] = dt == ZN_DTYPE_BF16 ? zn_f32_to_bf16(acc)
								  : zn_f32_to_f16(acc);
			break;
		}
		case ZN_DTYPE_I32: {
			int32_t acc = ((const int32_t *)rows)[i];
			for (int p = 1; p < size; p++) {
				int32_t x = ((const int32_t *)(rows + p * row))[i];
				acc = op == ZN_COMM_SUM ? (int32_t)((uint32_t)acc + (uint32_t)x)
							: (x > acc ? x : acc);
			}
			((int32_t *)out)[i] = acc;
			break;
		}
		case ZN_DTYPE_U8: {
			uint8_t acc = rows[i];
			for (int p = 1; p < size; p++) {
				uint8_t x = rows[p * row + i];
				acc = op == ZN_COMM_SUM ? (uint8_t)(acc + x) : (x > acc ? x : acc);
			}
			((uint8_t *)out)[i] = acc;
			break;
		}
		default:
			break;
		}
	}
}

/* ---- buffers: host memory, or the backend's (zn_comm_mem_ops) ----------- */

/* Scratch of `bytes`: malloc'd here (release frees it), or the backend's. */
static int buf_scratch(struct zn_comm *c, size_t bytes, bool zero, void **out, const char *what)
{
	if (c->ops->mem)
		return c->ops->mem->scratch(c, bytes, zero, out, what);
	*out = zero ? calloc(bytes + 1, 1) : malloc(bytes + 1);
	if (!*out)
		return zn_error(-ENOMEM, "comm %s: out of host memory for %zu bytes of scratch", what,
				bytes);
	return 0;
}

static void buf_release(struct zn_comm *c, void *p)
{
	if (!c->ops->mem)
		free(p);
}

/* Copy between ranges that are either the same or disjoint (host ones may
 * overlap: memmove). */
static int buf_copy(struct zn_comm *c, void *dst, const void *src, size_t bytes, const char *what)
{
	if (bytes == 0 || dst == src) /* src may be NULL when nothing is copied */
		return 0;
	if (c->ops->mem)
		return c->ops->mem->copy(c, dst, src, bytes, what);
	memmove(dst, src, bytes);
	return 0;
}

static int buf_reduce(struct zn_comm *c, enum zn_dtype dt, enum zn_comm_redop op, void *out,
		      const unsigned char *rows, size_t m, const char *what)
{
	if (m == 0)
		return 0;
	if (c->ops->mem)
		return c->ops->mem->reduce(c, dt, op, out, rows, c->size, m, what);
	reduce_rows(dt, op, out, rows, c->size, m);
	return 0;
}

/* ---- collectives, on the worker thread ----------------------------------- */

/* Elements [off[r], off[r] + cnt[r]) of an array are rank r's chunk. */
struct chunks {
	size_t *off, *cnt;
};

static int chunks_alloc(struct chunks *ch, int size)
{
	ch->off = calloc((size_t)size, sizeof(size_t));
	ch->cnt = calloc((size_t)size, sizeof(size_t));
	if (!ch->off || !ch->cnt) {
		free(ch->off);
		free(ch->cnt);
		return zn_error(-ENOMEM, "comm: out of host memory for %d ranks' chunk table", size);
	}
	return 0;
}

static void chunks_free(struct chunks *ch)
{
	free(ch->off);
	free(ch->cnt);
}

static struct zn_comm_xfer *xfers_alloc(struct zn_comm *c)
{
	struct zn_comm_xfer *x = calloc((size_t)c->size, sizeof(*x));
	if (!x)
		zn_set_error("comm: out of host memory for %d ranks' transfer table", c->size);
	return x;
}

/* Rank r's chunk of `send` (chunks ch) reduced over ranks into recv. */
static int do_reduce_scatter(struct zn_comm *c, const void *send, const struct chunks *ch,
			     void *recv, enum zn_dtype dt, enum zn_comm_redop op, int tag,
			     uint64_t deadline, const char *what)
{
	const size_t es = zn_dtype_size(dt);
	const size_t m = ch->cnt[c->rank];
	const unsigned char *s = send;

	if (c->size == 1)
		return buf_copy(c, recv, s + ch->off[0] * es, m * es, what);
	void *scratch = NULL;
	int rc = buf_scratch(c, (size_t)c->size * m * es, false, &scratch, what);
	if (rc)
		return rc;
	unsigned char *rows = scratch;
	struct zn_comm_xfer *x = xfers_alloc(c);
	if (!x) {
		buf_release(c, rows);
		return -ENOMEM;
	}
	for (int p = 0; p < c->size; p++) {
		x[p] = (struct zn_comm_xfer){
			.send = s + ch->off[p] * es,
			.send_bytes = ch->cnt[p] * es,
			.recv = rows + (size_t)p * m * es,
			.recv_bytes = m * es,
		};
	}
	/* send may be NULL when no element is sent: buf_copy copies nothing then */
	rc = buf_copy(c, rows + (size_t)c->rank * m * es, s + ch->off[c->rank] * es, m * es, what);
	if (rc == 0)
		rc = c->ops->exchange(c, x, tag, deadline, what);
	if (rc == 0)
		rc = buf_reduce(c, dt, op, recv, rows, m, what);
	buf_release(c, rows);
	free(x);
	return rc;
}

/* Every rank's chunk of buf to every rank; rank r's own chunk is in place. */
static int do_all_gather(struct zn_comm *c, void *buf, const struct chunks *ch, size_t es, int tag,
			 uint64_t deadline, const char *what)
{
	unsigned char *b = buf;

	if (c->size == 1)
		return 0;
	struct zn_comm_xfer *x = xfers_alloc(c);
	if (!x)
		return -ENOMEM;
	for (int p = 0; p < c->size; p++) {
		x[p] = (struct zn_comm_xfer){
			.send = b + ch->off[c->rank] * es,
			.send_bytes = ch->cnt[c->rank] * es,
			.recv = b + ch->off[p] * es,
			.recv_bytes = ch->cnt[p] * es,
		};
	}
	int rc = c->ops->exchange(c, x, tag, deadline, what);
	free(x);
	return rc;
}

static int run_op(struct zn_comm *c, struct zn_comm_op *op)
{
	struct zn_comm_worker *w = c->w;
	const char *what = op_names[op->kind];
	const int tag = (int)(w->seq++ & 0x7fff); /* MPI promises tags up to 32767 */
	const uint64_t deadline = zn_now_ns() + (uint64_t)(op->timeout * 1e9);
	const size_t es = op->kind == OP_BROADCAST || op->kind == OP_BARRIER ? 1
										 : zn_dtype_size(op->dtype);
	struct chunks ch;
	int rc;

	if (w->broken)
		return zn_error(-EPIPE, "comm %s: the comm is unusable after an earlier failure (%s): "
				"destroy it", what, w->broken_msg);
	rc = chunks_alloc(&ch, c->size);
	if (rc)
		return rc;

	switch (op->kind) {
	case OP_ALL_REDUCE: {
		const size_t base = op->n / (size_t)c->size, rem = op->n % (size_t)c->size;
		size_t off = 0;
		for (int p = 0; p < c->size; p++) {
			ch.off[p] = off;
			ch.cnt[p] = base + ((size_t)p < rem);
			off += ch.cnt[p];
		}
		unsigned char *mine = (unsigned char *)op->buf + ch.off[c->rank] * es;
		rc = do_reduce_scatter(c, op->buf, &ch, mine, op->dtype, op->redop, tag, deadline,
				       what);
		if (rc == 0)
			rc = do_all_gather(c, op->buf, &ch, es, tag, deadline, what);
		break;
	}
	case OP_REDUCE_SCATTER:
		for (int p = 0; p < c->size; p++) {
			ch.off[p] = (size_t)p * op->n;
			ch.cnt[p] = op->n;
		}
		rc = do_reduce_scatter(c, op->send, &ch, op->recv, op->dtype, ZN_COMM_SUM, tag,
				       deadline, what);
		break;
	case OP_ALL_GATHER: {
		for (int p = 0; p < c->size; p++) {
			ch.off[p] = (size_t)p * op->n;
			ch.cnt[p] = op->n;
		}
		unsigned char *slot = (unsigned char *)op->recv + (size_t)c->rank * op->n * es;
		rc = buf_copy(c, slot, op->send, op->n * es, what);
		if (rc == 0)
			rc = do_all_gather(c, op->recv, &ch, es, tag, deadline, what);
		break;
	}
	case OP_BROADCAST: {
		if (c->size == 1)
			break;
		struct zn_comm_xfer *x = xfers_alloc(c);
		if (!x) {
			rc = -ENOMEM;
			break;
		}
		for (int p = 0; p < c->size; p++) {
			if (c->rank == op->root)
				x[p] = (struct zn_comm_xfer){ .send = op->buf, .send_bytes = op->n };
			else if (p == op->root)
				x[p] = (struct zn_comm_xfer){ .recv = op->buf, .recv_bytes = op->n };
		}
		rc = c->ops->exchange(c, x, tag, deadline, what);
		free(x);
		break;
	}
	case OP_BARRIER: {
		if (c->size == 1)
			break;
		void *bytes = NULL;
		rc = buf_scratch(c, (size_t)c->size, true, &bytes, what);
		if (rc)
			break;
		for (int p = 0; p < c->size; p++) {
			ch.off[p] = (size_t)p;
			ch.cnt[p] = 1;
		}
		rc = do_all_gather(c, bytes, &ch, 1, tag, deadline, what);
		buf_release(c, bytes);
		break;
	}
	}
	chunks_free(&ch);
	if (c->ops->mem) {
		/* Wait for what was enqueued, after a failure too: the caller may
		 * reuse the buffers once zn_comm_wait returns. */
		int f = c->ops->mem->finish(c, deadline, what);
		if (rc == 0)
			rc = f;
	}
	/* A collective that failed part-way leaves messages in flight that the
	 * next one would take for its own. */
	if (rc && c->size > 1) {
		w->broken = rc;
		snprintf(w->broken_msg, sizeof(w->broken_msg), "%s", zn_last_error());
	}
	return rc;
}

/* ---- the worker thread and its FIFO --------------------------------------- */

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
		int r = run_op(c, op);
		/* When the bytes moved: the thread that waits knows only when it
		 * stopped waiting (overlap is the difference). */
		zn_trace_span(trace, op_names[op->kind], "comm-op", "comm thread", t0, zn_now_ns(),
			      0);

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

/* A launcher variable as a non-negative int; false when unset. */
static bool env_int(const char *name, long *out)
{
	const char *s = getenv(name);
	char *end;

	if (!s || !*s)
		return false;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || *end || v < 0 || v > INT32_MAX)
		return false;
	*out = v;
	return true;
}

/* mpirun's ranks use MPI; torchrun's and DeepSpeed's (WORLD_SIZE > 1 with
 * MASTER_ADDR) use tcp; anything else is one rank. */
static const char *auto_backend(void)
{
	long ws;
	const char *ma = getenv("MASTER_ADDR");

	if (ZN_HAVE_MPI && getenv("OMPI_COMM_WORLD_SIZE") != NULL)
		return "mpi";
	if (env_int("WORLD_SIZE", &ws) && ws > 1 && ma && *ma)
		return "tcp";
	return "self";
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
	if (errno || *end || !(v > 0) || !isfinite(v) || v > 1e9)
		return zn_error(-EINVAL, "comm: ZINC_COMM_TIMEOUT=\"%s\" is not a positive number of "
				"seconds (at most 1e9): set it to e.g. 600, or unset it for %g s", s,
				ZN_COMM_TIMEOUT_DEFAULT);
	*out = v;
	return 0;
}

struct zn_comm *zn_comm_create(const char *backend)
{
	const char *name = backend ? backend : auto_backend();
	const struct zn_comm_ops *ops = NULL;
	long ws;

	for (size_t i = 0; i < ZN_ARRAY_SIZE(backends); i++)
		if (strcmp(backends[i]->name, name) == 0)
			ops = backends[i];
	if (!ops) {
		if (strcmp(name, "mpi") == 0)
			zn_set_error("comm backend \"mpi\": this zinc was built without MPI: install "
				     "Open MPI (libopenmpi-dev) and rebuild with -Dmpi=enabled");
		else if (strcmp(name, "nccl") == 0)
			zn_set_error("comm backend \"nccl\" needs a bootstrap comm and a CUDA device: "
				     "open it with zn_comm_create_nccl(bootstrap, device), bootstrap "
				     "being a \"mpi\" or \"tcp\" comm");
		else
			zn_set_error("comm backend \"%s\" is unknown: use \"self\", \"tcp\"%s or "
				     "none for automatic", name, ZN_HAVE_MPI ? ", \"mpi\"" : "");
		return NULL;
	}
	if (ops == &zn_comm_self_ops) {
		if (env_int("OMPI_COMM_WORLD_SIZE", &ws) && ws > 1) {
			zn_set_error("comm: mpirun started %ld ranks (OMPI_COMM_WORLD_SIZE) but the comm "
				     "backend is \"self\", so each would train alone: %s", ws,
				     ZN_HAVE_MPI ? "use the \"mpi\" backend"
						 : "rebuild zinc with MPI (-Dmpi=enabled)");
			return NULL;
		}
		if (env_int("WORLD_SIZE", &ws) && ws > 1) {
			zn_set_error("comm: the launcher asked for %ld ranks (WORLD_SIZE) but the comm "
				     "backend is \"self\", which has one: set MASTER_ADDR and "
				     "MASTER_PORT (as torchrun does) for the \"tcp\" backend, launch "
				     "with mpirun%s, or unset WORLD_SIZE", ws,
				     ZN_HAVE_MPI ? " and the \"mpi\" backend" : " (a zinc built with MPI)");
			return NULL;
		}
	}

	struct zn_comm *c = zn_comm_start(ops, NULL);
	if (!c)
		return NULL;
	if (ops != &zn_comm_self_ops) {
		/* The backend's values are authoritative; say when the launcher's
		 * differ (tcp takes them from the launcher: they agree). */
		long v;
		if (env_int("RANK", &v) && v != c->rank)
			zn_warn("comm %s: RANK=%ld but this process is rank %d", name, v, c->rank);
		if (env_int("WORLD_SIZE", &v) && v != c->size)
			zn_warn("comm %s: WORLD_SIZE=%ld but there are %d ranks", name, v, c->size);
		if (env_int("LOCAL_RANK", &v) && v != c->local_rank)
			zn_warn("comm %s: LOCAL_RANK=%ld but this process is local rank %d", name, v,
				c->local_rank);
	} else if (env_int("LOCAL_RANK", &ws)) {
		c->local_rank = (int)ws; /* one rank, but which GPU it uses is the launcher's */
	}
	return c;
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

#if !ZN_HAVE_NCCL
struct zn_comm *zn_comm_create_nccl(struct zn_comm *bootstrap, int device)
{
	(void)bootstrap, (void)device;
	zn_set_error("comm nccl: this zinc was built without NCCL: install NCCL (nccl.h and "
		     "libnccl, e.g. into the CUDA toolkit) and rebuild with -Dnccl=enabled");
	return NULL;
}
#endif

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

const char *zn_comm_backend(const struct zn_comm *c)
{
	return c->ops->name;
}

int zn_comm_rank(const struct zn_comm *c)
{
	return c->rank;
}

int zn_comm_size(const struct zn_comm *c)
{
	return c->size;
}

int zn_comm_local_rank(const struct zn_comm *c)
{
	return c->local_rank;
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
	if (!(seconds > 0) || !isfinite(seconds) || seconds > 1e9)
		return zn_error(-EINVAL, "comm timeout %g s is not a positive number of seconds "
				"(at most 1e9)", seconds);
	pthread_mutex_lock(&c->w->mu);
	c->w->timeout = seconds;
	pthread_mutex_unlock(&c->w->mu);
	return 0;
}

static int enqueue(struct zn_comm *c, const struct zn_comm_op *tmpl, struct zn_comm_op **out)
{
	struct zn_comm_worker *w = c->w;

	*out = NULL;
	struct zn_comm_op *op = malloc(sizeof(*op));
	if (!op)
		return zn_error(-ENOMEM, "comm %s: out of host memory", op_names[tmpl->kind]);
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

/* ---- argument checks, shared by the blocking and the _async calls -------- */

static int check_dtype(const char *what, enum zn_dtype dt)
{
	if ((unsigned)dt >= ZN_DTYPE_COUNT)
		return zn_error(-EINVAL, "comm %s: dtype %d is unknown", what, (int)dt);
	return 0;
}

static int check_buf(const char *what, const char *name, const void *p, size_t n)
{
	if (!p && n)
		return zn_error(-EINVAL, "comm %s: %s is NULL for %zu elements", what, name, n);
	return 0;
}

int zn_comm_all_reduce_async(struct zn_comm *c, void *buf, size_t n, enum zn_dtype dtype,
			     enum zn_comm_redop redop, struct zn_comm_op **op)
{
	int rc = check_dtype("all_reduce", dtype);
	if (!rc)
		rc = check_buf("all_reduce", "buf", buf, n);
	if (!rc && (unsigned)redop >= ZN_COMM_REDOP_COUNT)
		rc = zn_error(-EINVAL, "comm all_reduce: reduction %d is unknown: use ZN_COMM_SUM "
			      "or ZN_COMM_MAX", (int)redop);
	if (rc) {
		*op = NULL;
		return rc;
	}
	return enqueue(c, &(struct zn_comm_op){ .kind = OP_ALL_REDUCE, .buf = buf, .n = n,
						 .dtype = dtype, .redop = redop }, op);
}

int zn_comm_reduce_scatter_async(struct zn_comm *c, const void *send, void *recv,
				 size_t n_per_rank, enum zn_dtype dtype, struct zn_comm_op **op)
{
	int rc = check_dtype("reduce_scatter", dtype);
	if (!rc)
		rc = check_buf("reduce_scatter", "send", send, n_per_rank);
	if (!rc)
		rc = check_buf("reduce_scatter", "recv", recv, n_per_rank);
	/* One rank's host reduce_scatter is a memmove; device copies must not
	 * overlap. */
	if (!rc && n_per_rank && (c->size > 1 || c->ops->mem)) {
		const size_t es = zn_dtype_size(dtype);
		const char *s = send, *r = recv;
		if (r < s + (size_t)c->size * n_per_rank * es && s < r + n_per_rank * es)
			rc = zn_error(-EINVAL, "comm reduce_scatter: send and recv overlap: use "
				      "separate buffers");
	}
	if (rc) {
		*op = NULL;
		return rc;
	}
	return enqueue(c, &(struct zn_comm_op){ .kind = OP_REDUCE_SCATTER, .send = send,
						 .recv = recv, .n = n_per_rank, .dtype = dtype }, op);
}

int zn_comm_all_gather_async(struct zn_comm *c, const void *send, void *recv, size_t n_per_rank,
			     enum zn_dtype dtype, struct zn_comm_op **op)
{
	int rc = check_dtype("all_gather", dtype);
	if (!rc)
		rc = check_buf("all_gather", "send", send, n_per_rank);
	if (!rc)
		rc = check_buf("all_gather", "recv", recv, n_per_rank);
	if (!rc && n_per_rank) {
		const size_t es = zn_dtype_size(dtype);
		const char *s = send, *r = recv, *slot = r + (size_t)c->rank * n_per_rank * es;
		if (s != slot && s < r + (size_t)c->size * n_per_rank * es && r < s + n_per_rank * es)
			rc = zn_error(-EINVAL, "comm all_gather: send overlaps recv without being this "
				      "rank's slot of it (rank %d): use separate buffers or send "
				      "from the slot", c->rank);
	}
	if (rc) {
		*op = NULL;
		return rc;
	}
	return enqueue(c, &(struct zn_comm_op){ .kind = OP_ALL_GATHER, .send = send, .recv = recv,
						 .n = n_per_rank, .dtype = dtype }, op);
}

int zn_comm_broadcast_async(struct zn_comm *c, void *buf, size_t bytes, int root,
			    struct zn_comm_op **op)
{
	int rc = check_buf("broadcast", "buf", buf, bytes);
	if (!rc && (root < 0 || root >= c->size))
		rc = zn_error(-EINVAL, "comm broadcast: root %d is not a rank (0 ... %d)", root,
			      c->size - 1);
	if (rc) {
		*op = NULL;
		return rc;
	}
	return enqueue(c, &(struct zn_comm_op){ .kind = OP_BROADCAST, .buf = buf, .n = bytes,
						 .root = root }, op);
}

int zn_comm_barrier_async(struct zn_comm *c, struct zn_comm_op **op)
{
	return enqueue(c, &(struct zn_comm_op){ .kind = OP_BARRIER }, op);
}

/* The blocking calls: enqueue behind whatever is in flight, then wait. */
static int blocking(int rc, struct zn_comm_op **op)
{
	return rc ? rc : zn_comm_wait(*op);
}

int zn_comm_all_reduce(struct zn_comm *c, void *buf, size_t n, enum zn_dtype dtype,
		       enum zn_comm_redop redop)
{
	struct zn_comm_op *op;
	return blocking(zn_comm_all_reduce_async(c, buf, n, dtype, redop, &op), &op);
}

int zn_comm_reduce_scatter(struct zn_comm *c, const void *send, void *recv, size_t n_per_rank,
			   enum zn_dtype dtype)
{
	struct zn_comm_op *op;
	return blocking(zn_comm_reduce_scatter_async(c, send, recv, n_per_rank, dtype, &op), &op);
}

int zn_comm_all_gather(struct zn_comm *c, const void *send, void *recv, size_t n_per_rank,
		       enum zn_dtype dtype)
{
	struct zn_comm_op *op;
	return blocking(zn_comm_all_gather_async(c, send, recv, n_per_rank, dtype, &op), &op);
}

int zn_comm_broadcast(struct zn_comm *c, void *buf, size_t bytes, int root)
{
	struct zn_comm_op *op;
	return blocking(zn_comm_broadcast_async(c, buf, bytes, root, &op), &op);
}

int zn_comm_barrier(struct zn_comm *c)
{
	struct zn_comm_op *op;
	return blocking(zn_comm_barrier_async(c, &op), &op);
}
