/* Several ranks: ZeRO's collectives -- the gradients' reductions (through
 * NCCL on the device, or the host comm's buckets), the resident
 * parameters' all-gathers after an update, sums of scalars, and the check
 * that every rank was given the same config -- and their staging buffers
 * and buckets, set up and freed here.
 *
 * Every collective is issued by every rank in the same order: the ranks
 * run the same model over the same layers, so the order of fetches,
 * releases and updates is the same everywhere.  The comm's reductions add
 * in rank order, so two ranks with one micro-batch each sum their
 * gradients exactly as one rank accumulating both does (g0 + g1). */
#include "zn_common.h"

#include "train/internal.h"

#include <stdlib.h>
#include <string.h>

#include "zinc/trace.h"

/* What this rank sends: elements (ZeRO's volumes are in elements) and bytes. */
void tr_count_sent(struct zn_trainer *t, uint64_t elems, size_t esz)
{
	t->stats.comm_elems += elems;
	t->stats.comm_bytes += elems * esz;
}

/* Run an enqueued collective to its end, counting the wait. */
int tr_coll_wait(struct zn_trainer *t, int rc, struct zn_comm_op *op)
{
	if (rc)
		return rc;
	uint64_t t0 = zn_now_ns();
	rc = zn_comm_wait(op);
	uint64_t t1 = zn_now_ns();
	t->stats.comm_ns += t1 - t0;
	zn_trace_span(t->trace, "collective", "comm", "comm", t0, t1, 0);
	return rc;
}

/* v[0..n) summed over ranks in rank order, in double (n <= 4). */
int tr_sum_doubles(struct zn_trainer *t, double *v, unsigned n)
{
	if (t->world == 1)
		return 0;
	double *all = (double *)(void *)t->coll.cbuf[1];
	struct zn_comm_op *op = NULL;
	memcpy(t->coll.cbuf[0], v, n * sizeof(double));
	int rc = zn_comm_all_gather_async(t->comm, t->coll.cbuf[0], all, n * sizeof(double),
					  ZN_DTYPE_U8, &op);
	rc = tr_coll_wait(t, rc, op);
	if (rc)
		return rc;
	for (unsigned k = 0; k < n; k++) {
		double s = all[k];
		for (int r = 1; r < t->world; r++)
			s += all[(size_t)r * n + k];
		v[k] = s;
	}
	return 0;
}

int zn_trainer_any(struct zn_trainer *t, bool flag, bool *any)
{
	double v = flag ? 1 : 0;
	int rc = tr_sum_doubles(t, &v, 1);
	*any = v > 0;
	return rc;
}

/* Enqueue the sum over ranks of a staged gradient (piece p's tile, or the
 * tensor) on `c`: stage 0 all-reduces it in place, stages 1-3
 * reduce-scatter it into recv.  *own: where this rank's piece will be. */
static int grads_enqueue(struct zn_trainer *t, struct zn_comm *c, const struct zn_zero_piece *p,
			 void *send, void *recv, struct zn_comm_op **op, const void **own)
{
	const size_t n = p->n, esz = zn_dtype_size(t->zr.gdt);
	if (t->zr.stage == 0) {
		tr_count_sent(t, 2 * (uint64_t)(t->world - 1) * n / (uint64_t)t->world, esz);
		*own = send;
		return zn_comm_all_reduce_async(c, send, n, t->zr.gdt, ZN_COMM_SUM, op);
	}
	tr_count_sent(t, (uint64_t)(t->world - 1) * p->part, esz);
	*own = recv;
	return zn_comm_reduce_scatter_async(c, send, recv, p->part, t->zr.gdt, op);
}

/* Add a settled reduction's piece k (this rank's share of the sum of
 * tile k, or of the tensor) into the tensor's accumulator at the piece's
 * place in its part, or (gnvme) into its sums on NVMe. */
static int grads_accumulate(struct zn_trainer *t, struct tstate *s, unsigned k, const void *own,
			    bool first)
{
	const size_t esz = zn_dtype_size(t->zr.gdt);
	if (s->gnvme)
		return tr_grads_part_to_nvme(t, s, k, own, first);
	struct zn_zero_piece p;
	tr_piece(t, s, k, &p);
	uint8_t *acc = (uint8_t *)s->grad + p.own * esz;
	if (first) {
		memcpy(acc, own, p.len * esz);
	} else if (t->zr.gdt == ZN_DTYPE_F32) {
		tr_host_accumulate(acc, t->zr.gdt, own, p.len);
	} else {
		zn_dtype_to_f32(t->gstage, own, t->zr.gdt, p.len);
		tr_host_accumulate(acc, t->zr.gdt, t->gstage, p.len);
	}
	return 0;
}

/* Where piece p's tile (or the tensor) has its final gradients on the
 * device, at element doff of the buffers: a 16-bit layer's own (dev16:
 * rounded already, *own16), else fp32 rounded to the training dtype now
 * (as one rank does).  *ssz: their element size. */
static int grads_source(struct zn_trainer *t, struct tstate *s, const struct zn_zero_piece *p,
			uint64_t doff, const void **src, size_t *ssz, bool *own16)
{
	*own16 = !s->dgrad;
	if (*own16) {
		*ssz = zn_dtype_size(t->sdt);
		*src = (const uint8_t *)s->sgrad + doff * *ssz;
		return 0;
	}
	*ssz = 4;
	*src = (const float *)s->dgrad + doff;
	return tr_round_to_dtype(t, (float *)s->dgrad + doff, p->n);
}

/* A tensor's device gradient (tile k's, or all of it; at element doff of
 * its device buffers), summed over the ranks, into this rank's piece of
 * its accumulator: `first` starts the accumulator, later micro-batches add
 * to it.  The gradient crosses in the accumulators' dtype, padded to
 * world parts for the reduce-scatter; stage 0 all-reduces the whole
 * tensor.  Through NCCL on device buffers: padded in dsend, reduced into
 * drecv; only this rank's piece comes to the host. */
static int grads_reduce_device(struct zn_trainer *t, struct tstate *s, unsigned k, uint64_t doff,
			       bool first)
{
	const size_t esz = zn_dtype_size(t->zr.gdt);
	uint8_t *send = t->coll.dsend;
	struct zn_comm_op *op = NULL;
	struct zn_zero_piece p;
	tr_piece(t, s, k, &p);
	const size_t n = p.n;
	const void *src;
	size_t ssz;
	bool own16;
	int rc = grads_source(t, s, &p, doff, &src, &ssz, &own16);
	if (!rc)
		rc = own16 || t->zr.gdt != ZN_DTYPE_F32
			     ? t->k->cast(t->kctx, send, t->zr.gdt, src,
					  own16 ? t->sdt : ZN_DTYPE_F32, n)
			     : zn_device_copy_async(t->dev, send, src, n * 4,
						    ZN_COPY_DEVICE_TO_DEVICE, t->stream);
	const size_t total = (t->zr.stage == 0 ? n : p.part * (size_t)t->world) * esz;
	if (!rc && total > n * esz)
		rc = zn_device_memset(t->dev, send + n * esz, 0, total - n * esz, t->stream);
	if (!rc) /* NCCL takes the data as it is when the op is enqueued */
		rc = zn_device_stream_synchronize(t->stream);
	if (rc)
		return rc;
	const void *own;
	rc = grads_enqueue(t, t->coll.dcomm, &p, send, t->coll.drecv, &op, &own);
	/* Not into gstage: a 16-bit piece is widened there to be added. */
	uint8_t *host = t->coll.cbuf[0];
	if ((rc = tr_coll_wait(t, rc, op)) ||
	    (p.len && (rc = tr_to_host(t, host, own, p.len * esz))))
		return rc;
	t->stats.d2h_bytes += p.len * esz;
	return grads_accumulate(t, s, k, host, first);
}

/* Wait for bucket k's collective and add every entry's part (this rank's
 * share of the sum) into its tensor's accumulator. */
static int bucket_settle(struct zn_trainer *t, unsigned k)
{
	struct bucket *b = &t->buckets.b[k];
	const size_t esz = zn_dtype_size(t->zr.gdt);
	const size_t chunks = t->zr.stage == 0 ? 1 : (size_t)t->world;
	int rc = 0;
	if (b->inflight) {
		rc = tr_coll_wait(t, 0, b->op);
		const uint8_t *recv =
			t->zr.stage == 0 ? b->buf : b->buf + chunks * t->buckets.cap * esz;
		for (unsigned i = 0; i < b->n && !rc; i++)
			rc = grads_accumulate(t, b->e[i].s, b->e[i].k, recv + b->e[i].off * esz,
					      b->e[i].first);
	}
	b->inflight = false;
	b->n = 0;
	b->used = 0;
	return rc;
}

/* The filling bucket's collective is enqueued (its chunks first packed
 * together: reduce_scatter wants chunk r at r x used); without
 * overlap_comm it is waited for at once; the other bucket, older, is
 * settled so it can fill next.  The comm's FIFO and this order keep every
 * tensor's micro-batches in order. */
static int bucket_flush(struct zn_trainer *t)
{
	struct bucket *b = &t->buckets.b[t->buckets.cur];
	const size_t esz = zn_dtype_size(t->zr.gdt);
	int rc = 0;
	if (b->n) {
		if (t->zr.stage == 0) {
			rc = zn_comm_all_reduce_async(t->comm, b->buf, b->used, t->zr.gdt,
						      ZN_COMM_SUM, &b->op);
			tr_count_sent(t, 2 * (uint64_t)(t->world - 1) * b->used / (uint64_t)t->world,
				   esz);
		} else {
			for (int r = 1; r < t->world && b->used < t->buckets.cap; r++)
				memmove(b->buf + (size_t)r * b->used * esz,
					b->buf + (size_t)r * t->buckets.cap * esz, b->used * esz);
			uint8_t *recv = b->buf + (size_t)t->world * t->buckets.cap * esz;
			rc = zn_comm_reduce_scatter_async(t->comm, b->buf, recv, b->used,
							  t->zr.gdt, &b->op);
			tr_count_sent(t, (uint64_t)(t->world - 1) * b->used, esz);
		}
		b->inflight = !rc;
		if (!rc && !t->cfg.zero_optimization.overlap_comm)
			rc = bucket_settle(t, t->buckets.cur);
	}
	t->buckets.cur ^= 1;
	int r = bucket_settle(t, t->buckets.cur);
	return rc ? rc : r;
}

/* A tensor's final gradient (tile k's, or all of it; at element doff of
 * its device buffers) into the filling bucket, each rank's piece into
 * that rank's chunk; a full bucket goes first.  A 16-bit layer's own
 * gradients (dev16: rounded already) cross as they are and are converted
 * on the host when the accumulators' dtype differs. */
static int bucket_add(struct zn_trainer *t, struct tstate *s, unsigned k, uint64_t doff,
		      bool first)
{
	const size_t esz = zn_dtype_size(t->zr.gdt);
	struct zn_zero_piece pc;
	tr_piece(t, s, k, &pc);
	const size_t n = pc.n, part = t->zr.stage == 0 ? n : pc.part;
	int rc = 0;
	if (t->buckets.b[t->buckets.cur].used + part > t->buckets.cap && (rc = bucket_flush(t)))
		return rc;
	struct bucket *b = &t->buckets.b[t->buckets.cur];
	const void *src;
	size_t ssz;
	bool own16;
	rc = grads_source(t, s, &pc, doff, &src, &ssz, &own16);
	if (!rc && !own16 && t->zr.gdt != ZN_DTYPE_F32) {
		rc = t->k->cast(t->kctx, t->round_buf, t->zr.gdt, src, ZN_DTYPE_F32, n);
		src = t->round_buf;
		ssz = esz;
	}
	if (!rc)
		rc = zn_device_stream_synchronize(t->stream);
	const bool convert = own16 && t->sdt != t->zr.gdt;
	const int chunks = t->zr.stage == 0 ? 1 : t->world;
	for (int r = 0; r < chunks && !rc; r++) {
		uint64_t lo = 0, len = n;
		if (t->zr.stage > 0)
			zn_zero_part(n, t->world, r, &lo, &len);
		uint8_t *dst = b->buf + ((size_t)r * t->buckets.cap + b->used) * esz;
		if (len)
			rc = tr_to_host(t, convert ? (void *)t->gstage : dst,
					(const uint8_t *)src + lo * ssz, len * ssz);
		if (!rc && len && convert)
			tr_host_convert(dst, t->zr.gdt, t->gstage, t->sdt, len);
		memset(dst + len * esz, 0, (part - len) * esz);
	}
	if (rc)
		return rc;
	t->stats.d2h_bytes += n * esz;
	b->e[b->n++] = (struct bucket_entry){ .s = s, .k = k, .off = b->used, .first = first };
	b->used += part;
	return 0;
}

/* Tile k's final gradient (or the tensor's: k 0 of an untiled one, at
 * element doff of its device buffers) on its way to being summed over the
 * ranks: through NCCL on the device at once, or into the host comm's
 * buckets (reduced when full, at a backward's end with NVMe gradients,
 * and at the step's end, tr_grads_settle_all). */
static int reduce_piece(struct zn_trainer *t, struct tstate *s, unsigned k, uint64_t doff,
			bool first)
{
	return t->coll.dcomm ? grads_reduce_device(t, s, k, doff, first)
			     : bucket_add(t, s, k, doff, first);
}

/* A tensor on the device whole: a tiled one tile by tile from the last
 * (the pass's order, so NVMe gradients stay descending), each tile its
 * own reduction as its pieces are cut. */
int tr_grads_reduce(struct zn_trainer *t, struct tstate *s, bool first)
{
	int rc = 0;
	for (unsigned k = s->ntiles; k-- > 0 && !rc;) {
		struct zn_zero_piece p;
		tr_piece(t, s, k, &p);
		rc = reduce_piece(t, s, k, p.first, first);
	}
	return rc;
}

/* A tile on the device by itself: its buffers hold it from their start. */
int tr_grads_reduce_tile(struct zn_trainer *t, struct tstate *s, unsigned k, bool first)
{
	return reduce_piece(t, s, k, 0, first);
}

/* Every bucket reduced and added in (the step's end). */
int tr_grads_settle_all(struct zn_trainer *t)
{
	int rc = bucket_flush(t);              /* the filling one; settles the older */
	int r = bucket_settle(t, t->buckets.cur ^ 1); /* the one just flushed */
	return rc ? rc : r;
}

/* tr_params_allgather through NCCL: this rank's part (in the training
 * dtype) into dsend, every rank's into drecv, widened into the
 * parameters. */
static int params_allgather_device(struct zn_trainer *t, struct tstate *s)
{
	const size_t n = s->d->numel, esz = zn_dtype_size(t->zr.dtype);
	uint8_t *send = t->coll.dsend;
	float *own = (float *)s->dparam + s->lo;
	struct zn_comm_op *op = NULL;
	int rc = 0;
	if (s->nown && t->zr.dtype == ZN_DTYPE_F32)
		rc = zn_device_copy_async(t->dev, send, own, s->nown * 4, ZN_COPY_DEVICE_TO_DEVICE,
					  t->stream);
	else if (s->nown)
		rc = t->k->cast(t->kctx, send, t->zr.dtype, own, ZN_DTYPE_F32, s->nown);
	if (!rc && s->part > s->nown)
		rc = zn_device_memset(t->dev, send + s->nown * esz, 0, (s->part - s->nown) * esz,
				      t->stream);
	if (!rc)
		rc = zn_device_stream_synchronize(t->stream);
	if (rc)
		return rc;
	rc = zn_comm_all_gather_async(t->coll.dcomm, send, t->coll.drecv, s->part * esz, ZN_DTYPE_U8,
				      &op);
	tr_count_sent(t, (uint64_t)(t->world - 1) * s->part, esz);
	if ((rc = tr_coll_wait(t, rc, op)))
		return rc;
	if (t->zr.dtype == ZN_DTYPE_F32)
		return zn_device_copy_async(t->dev, s->dparam, t->coll.drecv, n * 4,
					    ZN_COPY_DEVICE_TO_DEVICE, NULL);
	return t->k->cast(t->kctx, s->dparam, ZN_DTYPE_F32, t->coll.drecv, t->zr.dtype, n);
}

/* After an update (stage >= 1, several ranks): each rank holds the new
 * values of its part of a resident tensor; every rank gets all of them.
 * They cross in the training dtype (exact: the device copy is rounded to
 * it). */
int tr_params_allgather(struct zn_trainer *t, struct tstate *s)
{
	const size_t n = s->d->numel, esz = zn_dtype_size(t->zr.dtype);
	uint8_t *send = t->coll.cbuf[0], *recv = t->coll.cbuf[1];
	float *own = (float *)s->dparam + s->lo;
	struct zn_comm_op *op = NULL;
	int rc = 0;
	if (t->zr.stage == 0 || t->world == 1)
		return 0;
	if (t->coll.dcomm)
		return params_allgather_device(t, s);
	if (t->zr.dtype != ZN_DTYPE_F32 && s->nown)
		rc = t->k->cast(t->kctx, t->round_buf, t->zr.dtype, own, ZN_DTYPE_F32, s->nown);
	if (!rc)
		rc = zn_device_stream_synchronize(t->stream);
	if (!rc && s->nown)
		rc = tr_to_host(t, send, t->zr.dtype == ZN_DTYPE_F32 ? (void *)own : t->round_buf,
			     s->nown * esz);
	if (rc)
		return rc;
	memset(send + s->nown * esz, 0, (s->part - s->nown) * esz);
	rc = zn_comm_all_gather_async(t->comm, send, recv, s->part * esz, ZN_DTYPE_U8, &op);
	tr_count_sent(t, (uint64_t)(t->world - 1) * s->part, esz);
	if ((rc = tr_coll_wait(t, rc, op)))
		return rc;
	t->stats.d2h_bytes += s->nown * esz;
	t->stats.h2d_bytes += n * esz;
	if (t->zr.dtype == ZN_DTYPE_F32)
		return tr_to_device(t, s->dparam, recv, n * 4);
	if ((rc = tr_to_device(t, t->round_buf, recv, n * esz)))
		return rc;
	return t->k->cast(t->kctx, s->dparam, ZN_DTYPE_F32, t->round_buf, t->zr.dtype, n);
}

/* After an update (stage >= 1, several ranks): every resident tensor's new
 * parts to every rank, in buckets of allgather_bucket_size elements over
 * the ranks, one all-gather per bucket, through the gradient buckets'
 * buffers (idle by now): chunk r of a bucket is rank r's parts of its
 * tensors, back to back.  NCCL goes tensor by tensor on the device. */
int tr_params_allgather_all(struct zn_trainer *t)
{
	if (t->zr.stage == 0 || t->world == 1)
		return 0;
	if (t->coll.dcomm || !t->buckets.b[0].buf) {
		int rc = 0;
		for (unsigned i = 0; i < t->tab.nt && !rc; i++)
			if (t->t[i].resident)
				rc = tr_params_allgather(t, &t->t[i]);
		return rc;
	}
	const size_t esz = zn_dtype_size(t->zr.dtype), W = (size_t)t->world;
	const size_t cap = ZN_MAX(ZN_MIN(t->buckets.cap, (size_t)(t->cfg.zero_optimization
								  .allgather_bucket_size / W)),
				  1);
	uint8_t *send = t->buckets.b[0].buf, *recv = t->buckets.b[1].buf;
	int rc = 0;
	for (unsigned i = 0; i < t->tab.nt && !rc;) {
		/* The bucket: tensors i .. j-1 (a tensor larger than the bucket
		 * alone: the buckets' cap holds the largest part). */
		size_t used = 0;
		unsigned j = i;
		for (; j < t->tab.nt; j++) {
			const struct tstate *s = &t->t[j];
			if (!s->resident)
				continue;
			if (used && used + s->part > cap)
				break;
			/* This rank's part, rounded on the device, in the
			 * training dtype. */
			float *own = (float *)s->dparam + s->lo;
			if (s->nown && t->zr.dtype != ZN_DTYPE_F32)
				rc = t->k->cast(t->kctx, t->round_buf, t->zr.dtype, own, ZN_DTYPE_F32,
						s->nown);
			if (!rc)
				rc = zn_device_stream_synchronize(t->stream);
			if (!rc && s->nown)
				rc = tr_to_host(t, send + used * esz,
					     t->zr.dtype == ZN_DTYPE_F32 ? (void *)own : t->round_buf,
					     s->nown * esz);
			if (rc)
				return rc;
			memset(send + (used + s->nown) * esz, 0, (s->part - s->nown) * esz);
			t->stats.d2h_bytes += s->nown * esz;
			used += s->part;
		}
		struct zn_comm_op *op = NULL;
		if (used) {
			rc = zn_comm_all_gather_async(t->comm, send, recv, used * esz, ZN_DTYPE_U8,
						      &op);
			tr_count_sent(t, (uint64_t)(t->world - 1) * used, esz);
			rc = tr_coll_wait(t, rc, op);
		}
		/* Every rank's parts of each tensor onto the device. */
		size_t off = 0;
		for (unsigned k = i; k < j && !rc; k++) {
			struct tstate *s = &t->t[k];
			if (!s->resident)
				continue;
			void *dst = t->zr.dtype == ZN_DTYPE_F32 ? s->dparam : t->round_buf;
			for (size_t r = 0; r < W && !rc; r++) {
				uint64_t lo, len;
				zn_zero_part(s->d->numel, t->world, (int)r, &lo, &len);
				if (len)
					rc = tr_to_device(t, (uint8_t *)dst + lo * esz,
						       recv + (r * used + off) * esz, len * esz);
			}
			if (!rc && t->zr.dtype != ZN_DTYPE_F32)
				rc = t->k->cast(t->kctx, s->dparam, ZN_DTYPE_F32, t->round_buf, t->zr.dtype,
						s->d->numel);
			t->stats.h2d_bytes += s->d->numel * esz;
			off += s->part;
		}
		i = j;
	}
	return rc;
}

/* FNV-1a over the config (64 bits): the ranks compare theirs. */
static uint64_t config_hash(const struct zn_config *c)
{
	struct zn_config x = *c;
	x.device.index = 0; /* ranks pick their own GPU */
	uint64_t h = 0xcbf29ce484222325ull;
	const uint8_t *p = (const uint8_t *)&x;
	for (size_t i = 0; i < sizeof(x); i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	return h;
}

/* Every rank must train the same thing: a rank whose config differs from
 * rank 0's is named on every rank. */
int tr_check_same_config(struct zn_trainer *t)
{
	uint64_t h = config_hash(&t->cfg), *all = calloc((size_t)t->world, sizeof(*all));
	if (!all)
		return zn_error(-ENOMEM, "out of memory");
	int rc = zn_comm_all_gather(t->comm, &h, all, sizeof(h), ZN_DTYPE_U8);
	for (int r = 1; r < t->world && !rc; r++)
		if (all[r] != all[0])
			rc = zn_error(-EINVAL, "rank %d was given another configuration than rank 0 "
					       "(the config files or --set options differ): give "
					       "every rank the same ones", r);
	free(all);
	return rc;
}

/* The ranks' staging, sized by the largest part: collectives stage
 * through host buffers (W parts of the largest tensor, fp32, two so one
 * can fill while the other moves), or NCCL's device buffers; and the
 * gradient buckets (host comm; NCCL reduces tensor by tensor on the
 * device): reduce_bucket_size elements over the W chunks, at most 2^26
 * (the staging is host memory), at least the largest part. */
int tr_collectives_setup(struct zn_trainer *t)
{
	uint64_t maxpart = 0;
	for (unsigned i = 0; i < t->tab.nt; i++)
		maxpart = ZN_MAX(maxpart, t->t[i].part);
	t->coll.cbuf_bytes = ZN_ALIGN_UP((size_t)maxpart * (size_t)t->world * 4 + 64, 4096);
	for (int k = 0; k < 2; k++)
		if (posix_memalign((void **)&t->coll.cbuf[k], 4096, t->coll.cbuf_bytes))
			return zn_error(-ENOMEM, "out of memory for the collectives' staging "
						 "(%zu bytes)", t->coll.cbuf_bytes);
	const size_t dbytes = (size_t)maxpart * (size_t)t->world * 4;
	if (t->coll.dcomm && (zn_device_alloc(t->dev, dbytes, &t->coll.dsend) ||
			      zn_device_alloc(t->dev, dbytes, &t->coll.drecv)))
		return -ENOMEM;
	const uint64_t chunks = t->zr.stage == 0 ? 1 : (uint64_t)t->world;
	uint64_t want = ZN_MIN(ZN_MIN(t->cfg.zero_optimization.reduce_bucket_size, t->tab.total),
			       (uint64_t)1 << 26);
	t->buckets.cap = (size_t)ZN_MAX(want / chunks, t->zr.stage == 0 ? t->tab.largest : maxpart);
	const size_t bytes = t->buckets.cap * ((size_t)chunks + 1) * 4;
	size_t entries = 0; /* a tensor's, or each of its tiles' */
	for (unsigned i = 0; i < t->tab.nt; i++)
		entries += t->t[i].ntiles;
	for (int k = 0; k < 2 && !t->coll.dcomm; k++) {
		struct bucket *b = &t->buckets.b[k];
		if (!(b->e = calloc(ZN_MAX(entries, 1), sizeof(*b->e))) ||
		    posix_memalign((void **)&b->buf, 4096, bytes))
			return zn_error(-ENOMEM, "out of memory for the gradient buckets (2 x %zu "
						 "bytes; lower zero_optimization.reduce_bucket_size)",
					bytes);
	}
	return 0;
}

/* What tr_collectives_setup made, once the collectives in flight are over. */
void tr_collectives_close(struct zn_trainer *t)
{
	if (t->coll.dsend)
		zn_device_free(t->dev, t->coll.dsend);
	if (t->coll.drecv)
		zn_device_free(t->dev, t->coll.drecv);
	free(t->coll.cbuf[0]);
	free(t->coll.cbuf[1]);
	for (int k = 0; k < 2; k++) {
		struct bucket *b = &t->buckets.b[k];
		if (b->inflight)
			zn_comm_wait(b->op);
		free(b->buf);
		free(b->e);
	}
}
