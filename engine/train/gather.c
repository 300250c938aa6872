/* Stage 3 on several ranks: a layer's partitioned parameters gathered from
 * every rank's part, ahead of its fetch, in GATHER_SLOTS slots (struct
 * gathers), and the slots' buffers; a tiled tensor's tiles gathered one at
 * a time, as they are wanted, through the collectives' staging. */
#include "zn_common.h"

#include "train/internal.h"

#include <stdlib.h>
#include <string.h>

/* Start the all-gathers of a layer's partitioned tensors into the next free
 * slot: each rank's part (from its home, in the homes' dtype, or from the
 * device), one nonblocking all-gather per tensor on the comm's thread. */
static int gather_start(struct zn_trainer *t, unsigned layer)
{
	const size_t esz = zn_dtype_size(t->zr.hdt);
	struct gather_slot *g = &t->gathers.slot[(t->gathers.head + t->gathers.n++) % GATHER_SLOTS];
	uint8_t *buf = g->buf;
	int rc = 0;
	memset(g->op, 0, sizeof(g->op));
	g->layer = layer;
	for (unsigned i = 0; i < t->tab.count[layer] && !rc; i++) {
		struct tstate *s = &t->t[t->tab.first[layer] + i];
		if (s->resident || s->tiled) /* a tiled one: tile by tile, when wanted */
			continue;
		uint8_t *send = buf, *recv = buf + s->part * esz;
		buf += ZN_ALIGN_UP((size_t)s->part * ((size_t)t->world + 1) * esz, 64);
		g->recv[i] = recv;
		if (s->dhome) {
			if (s->nown && !(rc = zn_device_stream_synchronize(t->stream)))
				rc = tr_to_host(t, send, s->dhome, s->nown * 4);
		} else {
			void *host;
			uint64_t t0 = zn_now_ns();
			if (!(rc = zn_swapper_acquire(t->homes.sw, s->home[0], &host))) {
				memcpy(send, host, s->nown * esz);
				zn_swapper_release(t->homes.sw, s->home[0], false);
			}
			t->stats.stall_ns += zn_now_ns() - t0;
		}
		if (rc)
			break;
		memset(send + s->nown * esz, 0, (s->part - s->nown) * esz);
		rc = zn_comm_all_gather_async(t->comm, send, recv, s->part * esz, ZN_DTYPE_U8,
					      &g->op[i]);
		tr_count_sent(t, (uint64_t)(t->world - 1) * s->part, esz);
	}
	return rc;
}

/* Wait for every gather in flight and drop what they brought (a fetch went
 * elsewhere, or the parameters are about to change). */
int tr_gather_drain(struct zn_trainer *t)
{
	int rc = 0;
	struct gathers *ga = &t->gathers;
	for (; ga->n; ga->n--, ga->head = (ga->head + 1) % GATHER_SLOTS) {
		struct gather_slot *g = &ga->slot[ga->head];
		for (unsigned i = 0; i < ZN_ARCH_LAYER_TENSORS_MAX; i++)
			if (g->op[i]) {
				int r = tr_coll_wait(t, 0, g->op[i]);
				rc = rc ? rc : r;
				g->op[i] = NULL;
			}
	}
	return rc;
}

/* n gathered elements (in the homes' dtype, in order) onto the device at
 * element `at` of a tensor's buffers: 16-bit layers' bytes as they are
 * (the kernels' copy), else in fp32 (16-bit ones widened on the device
 * through the scratch). */
static int gathered_to_device(struct zn_trainer *t, struct tstate *s, const void *recv,
			      uint64_t at, uint64_t n)
{
	const size_t esz = zn_dtype_size(t->zr.hdt);
	int rc;
	t->stats.h2d_bytes += n * esz;
	if (t->zr.dev16)
		return tr_to_device(t, (uint8_t *)s->sparam + at * esz, recv, n * esz);
	if (t->zr.hdt == ZN_DTYPE_F32)
		return tr_to_device(t, (float *)s->dparam + at, recv, n * 4);
	if (!(rc = tr_to_device(t, t->round_buf, recv, n * esz)) &&
	    !(rc = t->k->cast(t->kctx, (float *)s->dparam + at, ZN_DTYPE_F32, t->round_buf,
			      t->zr.hdt, n)))
		rc = zn_device_stream_synchronize(t->stream);
	return rc;
}

/* A tiled tensor's tile k from every rank's piece of it (their homes') to
 * element `at` of its device buffers, now: each rank's piece padded to the
 * tile's part, all-gathered in rank order, which is the tile's order. */
int tr_gather_tile(struct zn_trainer *t, struct tstate *s, unsigned k, uint64_t at)
{
	const size_t esz = zn_dtype_size(t->zr.hdt);
	uint8_t *send = t->coll.cbuf[0], *recv = t->coll.cbuf[1];
	struct zn_zero_piece p;
	struct zn_comm_op *op = NULL;
	void *host;
	tr_piece(t, s, k, &p);
	uint64_t t0 = zn_now_ns();
	int rc = zn_swapper_acquire(t->homes.sw, s->home[k], &host);
	t->stats.stall_ns += zn_now_ns() - t0;
	if (rc)
		return rc;
	memcpy(send, host, p.len * esz);
	zn_swapper_release(t->homes.sw, s->home[k], false);
	memset(send + p.len * esz, 0, (p.part - p.len) * esz);
	rc = zn_comm_all_gather_async(t->comm, send, recv, p.part * esz, ZN_DTYPE_U8, &op);
	tr_count_sent(t, (uint64_t)(t->world - 1) * p.part, esz);
	if ((rc = tr_coll_wait(t, rc, op)))
		return rc;
	return gathered_to_device(t, s, recv, at, p.n);
}

/* The layer's tensors onto the device from its gathers: the oldest slot's
 * when it is this layer's, else (the others discarded) started now; a
 * tiled one the model takes whole, tile by tile now (one it takes by
 * tiles comes with them, fetch.c). */
int tr_gather_finish(struct zn_trainer *t, unsigned layer)
{
	const size_t esz = zn_dtype_size(t->zr.hdt);
	int rc = 0;
	if (t->gathers.n && t->gathers.slot[t->gathers.head].layer != layer)
		rc = tr_gather_drain(t);
	if (!rc && !t->gathers.n)
		rc = gather_start(t, layer);
	struct gather_slot *g = &t->gathers.slot[t->gathers.head];
	for (unsigned i = 0; i < t->tab.count[layer]; i++) {
		struct tstate *s = &t->t[t->tab.first[layer] + i];
		const size_t n = s->d->numel, dsz = t->zr.dev16 ? esz : 4;
		if (s->tiled && !s->by_tiles && !rc) {
			if (!(rc = tr_dev_alloc(t, n * dsz, t->zr.dev16 ? &s->sparam : &s->dparam)))
				for (unsigned k = 0; k < s->ntiles && !rc; k++) {
					struct zn_zero_piece p;
					tr_piece(t, s, k, &p);
					if (k + 1 < s->ntiles) /* its home read meanwhile */
						zn_swapper_prefetch(t->homes.sw, s->home[k + 1]);
					rc = tr_gather_tile(t, s, k, p.first);
				}
			continue;
		}
		if (s->resident || !g->op[i])
			continue;
		int r = tr_coll_wait(t, 0, g->op[i]);
		g->op[i] = NULL;
		if (rc || (rc = r))
			continue;
		if (!(rc = tr_dev_alloc(t, n * dsz, t->zr.dev16 ? &s->sparam : &s->dparam)))
			rc = gathered_to_device(t, s, g->recv[i], 0, n);
	}
	if (t->gathers.n) {
		t->gathers.n--;
		t->gathers.head = (t->gathers.head + 1) % GATHER_SLOTS;
	}
	return rc;
}

/* After a fetch: gather ahead what the next fetches want (along the trace,
 * or the next layers in the pass's direction), layers that are not on the
 * device and not on their way already, while fewer than
 * stage3_prefetch_bucket_size elements are in flight and a slot is free
 * (0: none ahead).  With the overlapped update running, a layer's new
 * values must be in first. */
int tr_gather_ahead(struct zn_trainer *t, unsigned layer)
{
	const uint64_t bucket = t->cfg.zero_optimization.prefetch_bucket_size;
	uint64_t inflight = 0;
	unsigned last = layer;
	int rc = 0;
	for (unsigned k = 0; k < t->gathers.n; k++) {
		unsigned l = t->gathers.slot[(t->gathers.head + k) % GATHER_SLOTS].layer;
		inflight += t->layer[l].elems;
	}
	/* Predictions continue after what is already on its way. */
	const bool traced = t->fetch.tracking && t->fetch.ok;
	size_t pos = t->fetch.pos + t->gathers.n;
	if (t->gathers.n)
		last = t->gathers.slot[(t->gathers.head + t->gathers.n - 1) % GATHER_SLOTS].layer;
	while (!rc && t->gathers.n < GATHER_SLOTS && inflight < bucket) {
		long next;
		if (traced)
			next = pos < t->fetch.n ? (long)t->fetch.order[pos++] : -1;
		else
			next = (long)last + t->fetch.direction;
		if (next < 0 || next >= (long)t->tab.nlayers)
			break;
		last = (unsigned)next;
		if (t->layer[next].fetched || t->layer[next].kept || !t->layer[next].parts)
			break; /* on the device already: the chain of predictions ends */
		if (t->opt.running && (rc = tr_opt_wait_layer(t, (unsigned)next)))
			break;
		rc = gather_start(t, (unsigned)next);
		inflight += t->layer[next].elems;
	}
	return rc;
}

/* Which layers have partitioned tensors (and their elements, which visit
 * the device; tr_param_homes_setup counts offload_param's), and the
 * slots' buffers when parameters are partitioned (stage 3): each as large
 * as the largest layer's parts to send and receive, in the homes' dtype. */
int tr_gathers_setup(struct zn_trainer *t, bool partition_params)
{
	const size_t esz = zn_dtype_size(t->zr.hdt);
	size_t glay = 0;
	for (unsigned l = 0; l < t->tab.nlayers; l++) {
		size_t b = 0;
		for (unsigned i = t->tab.first[l]; i < t->tab.first[l] + t->tab.count[l]; i++) {
			/* A tiled tensor's tiles pass through the collectives'
			 * staging instead, one at a time. */
			if (!t->t[i].tiled)
				b += ZN_ALIGN_UP((size_t)t->t[i].part * ((size_t)t->world + 1) * esz,
						 64);
			if (t->t[i].resident)
				continue;
			t->layer[l].parts = true;
			if (!t->zr.offload_param)
				t->layer[l].elems += t->t[i].d->numel;
		}
		if (partition_params)
			glay = ZN_MAX(glay, b);
	}
	if (glay && posix_memalign((void **)&t->gathers.buf, 4096, GATHER_SLOTS * glay))
		return zn_error(-ENOMEM, "out of memory for stage 3's gather buffers (%u x %zu "
					 "bytes)", GATHER_SLOTS, glay);
	for (unsigned k = 0; k < GATHER_SLOTS && t->gathers.buf; k++)
		t->gathers.slot[k].buf = t->gathers.buf + k * glay;
	return 0;
}

/* The slots' buffers, once the gathers in flight are over. */
void tr_gathers_close(struct zn_trainer *t)
{
	for (unsigned k = 0; k < t->gathers.n; k++) {
		struct gather_slot *g = &t->gathers.slot[(t->gathers.head + k) % GATHER_SLOTS];
		for (unsigned i = 0; i < ZN_ARCH_LAYER_TENSORS_MAX; i++)
			if (g->op[i])
				zn_comm_wait(g->op[i]);
	}
	free(t->gathers.buf);
}
