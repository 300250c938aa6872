/* The collectives, run one at a time on the comm's worker thread
 * (worker.c).  They are built here from one backend primitive, an exchange
 * of byte ranges with every peer (comm/internal.h), and the reductions are
 * done here, in rank order (reduce.c), so that the result does not depend
 * on the transport:
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
#include "comm/core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const zn_comm_op_names[] = {
	[OP_ALL_REDUCE] = "all_reduce",
	[OP_REDUCE_SCATTER] = "reduce_scatter",
	[OP_ALL_GATHER] = "all_gather",
	[OP_BROADCAST] = "broadcast",
	[OP_BARRIER] = "barrier",
};
_Static_assert(ZN_ARRAY_SIZE(zn_comm_op_names) == OP_BARRIER + 1, "one name per op");

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
	zn_comm_reduce_rows(dt, op, out, rows, c->size, m);
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

int zn_comm_run_op(struct zn_comm *c, struct zn_comm_op *op)
{
	struct zn_comm_worker *w = c->w;
	const char *what = zn_comm_op_names[op->kind];
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
