/* The parameter source the model runs on: fetch and release of a layer's
 * parameters and gradients, resident or offloaded (offload_param: from
 * their homes, with prefetching along the recorded fetch trace and a
 * cache of released layers that come back soon), their 16-bit copies on
 * the device, and the model's memory callbacks. */
#include "zn_common.h"

#include "train/internal.h"

#include <stdlib.h>

/* Follow (or record) the trace at a fetch of `layer`.  A step that departs
 * from the recorded order drops it; the next step records anew. */
static void trace_fetch(struct zn_trainer *t, unsigned layer)
{
	if (!t->fetch.tracking)
		return;
	if (t->fetch.recording) {
		if (t->fetch.n == t->fetch.cap) {
			size_t cap = t->fetch.cap ? 2 * t->fetch.cap : 64;
			unsigned *q = realloc(t->fetch.order, cap * sizeof(*q));
			if (!q) {
				t->fetch.recording = false; /* no trace: plain prefetching */
				return;
			}
			t->fetch.order = q;
			t->fetch.cap = cap;
		}
		t->fetch.order[t->fetch.n++] = layer;
	} else if (t->fetch.ok) {
		if (t->fetch.pos < t->fetch.n && t->fetch.order[t->fetch.pos] == layer) {
			t->fetch.pos++;
		} else {
			zn_debug("the fetch order changed at fetch %zu (layer %u); recording it "
				 "again", t->fetch.pos, layer);
			t->fetch.ok = false;
		}
	}
}

/* A tensor's home on its way: a tiled one's first tile in the pass's
 * direction -- unless the overlapped update has still to write it (`done`
 * tensors are written): its old bytes would be read for nothing, in the
 * window the update's own traffic fills, and the update's write leaves
 * the new ones in the swapper's buffer, where the fetch finds them. */
static void prefetch_tensor(struct zn_trainer *t, const struct tstate *s, unsigned done)
{
	if (s->home && (unsigned)(s - t->t) < done)
		zn_swapper_prefetch(t->homes.sw,
				    s->home[t->fetch.direction < 0 ? s->ntiles - 1 : 0]);
}

/* Start reading what the next fetches want: along the trace until
 * stage3_prefetch_bucket_size elements are on their way (as many as the
 * buffers allow); without a trace, the next layer in the pass's
 * direction. */
static void prefetch_ahead(struct zn_trainer *t, unsigned layer)
{
	uint64_t bucket = t->cfg.zero_optimization.prefetch_bucket_size;
	if (!bucket)
		return;
	const unsigned done = tr_opt_done(t);
	if (t->fetch.tracking && t->fetch.ok) {
		uint64_t sum = 0;
		for (size_t j = t->fetch.pos; j < t->fetch.n && sum < bucket; j++) {
			unsigned l = t->fetch.order[j];
			if (t->layer[l].fetched || t->layer[l].kept)
				continue;
			const unsigned end = t->tab.first[l] + t->tab.count[l];
			for (unsigned i = t->tab.first[l]; i < end; i++)
				prefetch_tensor(t, &t->t[i], done);
			sum += t->layer[l].elems;
		}
		return;
	}
	long next = (long)layer + t->fetch.direction;
	if (next >= 0 && next < (long)t->tab.nlayers)
		for (unsigned i = 0; i < t->tab.count[next]; i++)
			prefetch_tensor(t, &t->t[t->tab.first[next] + i], done);
}

/* Whether a layer being released comes back within
 * stage3_max_reuse_distance elements of fetches (and fits under
 * stage3_max_live_parameters): then it stays on the device. */
static bool reused_soon(struct zn_trainer *t, unsigned layer)
{
	const struct zn_zero_config *z = &t->cfg.zero_optimization;
	if (!t->fetch.tracking || !t->fetch.ok || t->fetch.live_elems > z->max_live_parameters)
		return false;
	uint64_t dist = 0;
	for (size_t j = t->fetch.pos; j < t->fetch.n && dist < z->max_reuse_distance; j++) {
		if (t->fetch.order[j] == layer)
			return true;
		dist += t->layer[t->fetch.order[j]].elems;
	}
	return false;
}

static void free_layer_params(struct zn_trainer *t, unsigned layer)
{
	for (unsigned i = 0; i < t->tab.count[layer]; i++) {
		struct tstate *s = &t->t[t->tab.first[layer] + i];
		if (s->resident)
			continue;
		zn_device_free(t->dev, s->dparam);
		zn_device_free(t->dev, s->sparam);
		zn_device_free(t->dev, s->sgrad);
		s->dparam = s->sparam = s->sgrad = NULL;
	}
	t->fetch.live_elems -= t->layer[layer].elems;
	t->layer[layer].kept = false;
}

/* Before the optimizer changes the parameters: nothing stays. */
void tr_drop_kept(struct zn_trainer *t)
{
	for (unsigned l = 0; t->layer && l < t->tab.nlayers; l++)
		if (t->layer[l].kept)
			free_layer_params(t, l);
}

/* Layers kept for reuse are a cache: when the device is full they go
 * first, and only then is the allocation refused. */
int tr_dev_alloc(struct zn_trainer *t, size_t bytes, void **p)
{
	int rc = zn_device_alloc(t->dev, bytes, p);
	bool any = t->flights.n > 0;
	for (unsigned l = 0; rc == -ENOMEM && l < t->tab.nlayers; l++)
		any |= t->layer[l].kept;
	if (rc == -ENOMEM && any) {
		tr_drop_kept(t);
		tr_flights_reap(t, true);
		rc = zn_device_alloc(t->dev, bytes, p);
	}
	return rc;
}

/* What the model gets for a layer: its parameters (and gradients) on the
 * device.  With 16-bit storage (16-bit training on cuda) those are the
 * tensors' 16-bit copies: the fp32 parameters cast now, on the compute
 * stream (so after whatever wrote them last, before the model's kernels),
 * and zeroed gradient buffers the backward adds into, folded into the fp32
 * gradients at the layer's release (fold_grads). */
static int hand_out(struct zn_trainer *t, unsigned layer, bool want, void **params,
		    void **grads)
{
	int rc = 0;
	for (unsigned i = 0; i < t->tab.count[layer] && !rc; i++) {
		struct tstate *s = &t->t[t->tab.first[layer] + i];
		if (s->tiled && s->by_tiles)
			continue; /* its tiles come one at a time */
		if (t->sdt == ZN_DTYPE_F32) {
			params[i] = s->dparam;
			if (want)
				grads[i] = s->dgrad;
			continue;
		}
		const size_t n = s->d->numel, bytes = n * zn_dtype_size(t->sdt);
		const bool own16 = t->zr.dev16 && !s->resident; /* fetched as 16 bits */
		if (!s->sparam && (rc = tr_dev_alloc(t, bytes, &s->sparam)))
			break;
		if (!own16 &&
		    (rc = t->k->cast(t->kctx, s->sparam, t->sdt, s->dparam, ZN_DTYPE_F32, n)))
			break;
		params[i] = s->sparam;
		if (!want)
			continue;
		if (!s->sgrad && ((rc = tr_dev_alloc(t, bytes, &s->sgrad)) ||
				  (rc = zn_device_memset(t->dev, s->sgrad, 0, bytes, TR_KSTREAM(t)))))
			break;
		grads[i] = s->sgrad;
		s->sdirty = true;
	}
	/* A tiled tensor comes by its tiles (fetch_tile): from the buffers
	 * made above when it is on the device whole. */
	for (unsigned i = 0; i < t->tab.count[layer] && !rc; i++)
		if (t->t[t->tab.first[layer] + i].by_tiles) {
			params[i] = NULL;
			if (want)
				grads[i] = NULL;
		}
	return rc;
}

/* A layer's 16-bit gradients into its fp32 ones (added in fp32), then
 * zeroed for what comes next: on the compute stream, after the backward
 * that wrote them.  At every release, also one saying more gradients are
 * to come (the tied wte between the classifier and the encoder): the fp32
 * gradients stay, the 16-bit buffers may not.  16-bit layers (dev16) have
 * fp32 gradients only for that: their final 16-bit gradients leave as
 * they are (grads.c), and a release before they are final folds them
 * into an fp32 sum made then, as the other placements' fp32 gradients
 * hold them. */
static int fold_grads(struct zn_trainer *t, unsigned layer, bool written)
{
	int rc = 0;
	if (t->sdt == ZN_DTYPE_F32)
		return 0;
	for (unsigned i = 0; i < t->tab.count[layer] && !rc; i++) {
		struct tstate *s = &t->t[t->tab.first[layer] + i];
		const size_t n = s->d->numel;
		if (s->sdirty && s->sgrad && !s->dgrad && t->zr.dev16 && !s->resident && !written &&
		    !(rc = tr_dev_alloc(t, n * 4, &s->dgrad)))
			rc = zn_device_memset(t->dev, s->dgrad, 0, n * 4, TR_KSTREAM(t));
		if (rc || !s->sdirty || !s->sgrad || !s->dgrad)
			continue;
		s->sdirty = false;
		if (!(rc = t->k->accumulate(t->kctx, s->dgrad, ZN_DTYPE_F32, s->sgrad, t->sdt, n)))
			rc = zn_device_memset(t->dev, s->sgrad, 0, n * zn_dtype_size(t->sdt),
					      TR_KSTREAM(t));
	}
	return rc;
}

/* Tile k's home (the whole tensor's when not tiled) into the device
 * buffers at element `at`: 16-bit layers' bytes as they are, else in
 * fp32 (16-bit homes widened on the device through the scratch). */
static int home_to_device(struct zn_trainer *t, struct tstate *s, unsigned k, uint64_t at)
{
	const uint64_t n = tr_tile_span(s, tr_tile_first(s, k), s->nown);
	const size_t hbytes = n * zn_dtype_size(t->zr.hdt);
	void *host;
	uint64_t t0 = zn_now_ns();
	int rc = zn_swapper_acquire(t->homes.sw, s->home[k], &host);
	if (rc)
		return rc;
	t->stats.stall_ns += zn_now_ns() - t0;
	if (t->zr.dev16) {
		rc = zn_device_copy_async(t->dev,
					  (uint8_t *)s->sparam + at * zn_dtype_size(t->zr.hdt), host,
					  hbytes, ZN_COPY_HOST_TO_DEVICE, NULL);
	} else if (t->zr.hdt == ZN_DTYPE_F32) {
		rc = zn_device_copy_async(t->dev, (float *)s->dparam + at, host, hbytes,
					  ZN_COPY_HOST_TO_DEVICE, NULL);
	} else if (!(rc = zn_device_copy_async(t->dev, t->round_buf, host, hbytes,
					       ZN_COPY_HOST_TO_DEVICE, NULL))) {
		rc = t->k->cast(t->kctx, (float *)s->dparam + at, ZN_DTYPE_F32, t->round_buf,
				t->zr.hdt, n);
		if (!rc)
			rc = zn_device_stream_synchronize(t->stream);
	}
	t->stats.h2d_bytes += hbytes;
	zn_swapper_release(t->homes.sw, s->home[k], false);
	return rc;
}

/* offload_param: bring a layer's parameters to the device (and make room for
 * its gradients), prefetching what the next fetches want.  The homes hold
 * the training dtype; 16-bit ones cross as 16 bits and are widened on the
 * device. */
static int fetch_offloaded(struct zn_trainer *t, unsigned layer, bool want, void **params,
			   void **grads)
{
	int rc = 0;
	if (t->opt.running && (rc = tr_opt_wait_layer(t, layer)))
		return rc;
	trace_fetch(t, layer);
	if (t->layer[layer].fetched++ == 0 && t->layer[layer].kept) {
		t->layer[layer].kept = false; /* still on the device from its last use */
	} else if (t->layer[layer].fetched == 1 && t->gathers.buf) {
		/* Several ranks: every rank's parts, gathered ahead or now. */
		t->fetch.live_elems += t->layer[layer].elems;
		if (!(rc = tr_gather_finish(t, layer))) {
			prefetch_ahead(t, layer); /* NVMe reads for what comes next */
			rc = tr_gather_ahead(t, layer);
		}
	} else if (t->layer[layer].fetched == 1) {
		t->fetch.live_elems += t->layer[layer].elems;
		for (unsigned i = 0; i < t->tab.count[layer] && !rc; i++) {
			struct tstate *s = &t->t[t->tab.first[layer] + i];
			if (s->resident || s->by_tiles)
				continue;
			/* 16-bit layers: the home's bytes are the kernels' copy. */
			if ((rc = t->zr.dev16
					  ? tr_dev_alloc(t, s->d->numel * zn_dtype_size(t->zr.hdt),
							 &s->sparam)
					  : tr_dev_alloc(t, s->d->numel * 4, &s->dparam)))
				break;
			/* Whole on the device, from its tiles' homes (one home
			 * when it is not tiled), the next one read meanwhile. */
			for (unsigned k = 0; k < s->ntiles && !rc; k++) {
				if (k + 1 < s->ntiles)
					zn_swapper_prefetch(t->homes.sw, s->home[k + 1]);
				rc = home_to_device(t, s, k, tr_tile_first(s, k));
			}
		}
		if (!rc)
			prefetch_ahead(t, layer);
	}
	if (!rc && want && !t->layer[layer].has_grads) {
		for (unsigned i = 0; i < t->tab.count[layer] && !rc; i++) {
			struct tstate *s = &t->t[t->tab.first[layer] + i];
			/* 16-bit layers: the kernels' 16-bit buffers (hand_out)
			 * are the gradients until they leave (not a resident
			 * tensor's: several ranks reduce them at each release,
			 * folded into fp32 as one rank's stay); a tiled
			 * tensor's come with its tiles. */
			if (s->dev_grads || (t->zr.dev16 && !s->resident) ||
			    (s->by_tiles && s->tiled))
				continue;
			if (!(rc = tr_dev_alloc(t, s->d->numel * 4, &s->dgrad)))
				rc = zn_device_memset(t->dev, s->dgrad, 0, s->d->numel * 4, NULL);
		}
		t->layer[layer].has_grads = true;
	}
	return rc ? rc : hand_out(t, layer, want, params, grads);
}

/* The layer leaves the device; with final gradients, those start their
 * way to the host accumulators first. */
static int release_offloaded(struct zn_trainer *t, unsigned layer, bool written)
{
	int rc = zn_device_stream_synchronize(t->stream);
	/* Gradients in flight on the copy stream, but not a tiled tensor's,
	 * which leave tile by tile below. */
	const bool flights = t->flights.copy && t->world == 1;
	if (!rc && written && t->layer[layer].has_grads && flights)
		rc = tr_grads_leave(t, layer);
	if (!rc && written && t->layer[layer].has_grads) {
		/* NVMe gradients go in descending order, as the layers do
		 * (grads.c), so that one sub-group is open at a time. */
		const unsigned cnt = t->tab.count[layer];
		for (unsigned k = 0; k < cnt && !rc; k++) {
			const unsigned i = t->zr.grads_nvme ? cnt - 1 - k : k;
			struct tstate *s = &t->t[t->tab.first[layer] + i];
			if (s->dev_grads || (s->by_tiles && s->tiled) || (flights && !s->tiled))
				continue; /* on the device, at their tiles' release, in flight */
			rc = t->world > 1 ? tr_grads_reduce(t, s, t->micro_i == 0)
					  : tr_grads_tiles_to_host(t, s, t->micro_i == 0);
			zn_device_free(t->dev, s->dgrad);
			s->dgrad = NULL;
			if (t->world > 1 && t->zr.dev16 && !s->resident) {
				/* Reduced: the next backward gets new 16-bit
				 * buffers, as one rank's (grads.c). */
				zn_device_free(t->dev, s->sgrad);
				s->sgrad = NULL;
				s->sdirty = false;
			}
		}
	}
	if (written)
		t->layer[layer].has_grads = false;
	if (t->layer[layer].fetched && --t->layer[layer].fetched == 0) {
		if (reused_soon(t, layer))
			t->layer[layer].kept = true;
		else
			free_layer_params(t, layer);
	}
	return rc;
}

/* ---- tiles ------------------------------------------------------------------ */

static unsigned tile_rows(void *user, unsigned layer, unsigned idx)
{
	struct zn_trainer *t = user;
	const struct tstate *s = &t->t[t->tab.first[layer] + idx];
	return s->by_tiles ? (unsigned)s->tile_rows : 0;
}

/* A tied embedding's tile k (of n elements): the classifier's part of its
 * gradients (the tile's fp32 buffer) out to its fold beside the homes, in
 * s->fold_parts pieces, and back into the buffer at the encoder's
 * fetch.  Piece j: its swap tensor and its elements [*lo, *lo + *len). */
static struct zn_tensor *fold_piece(const struct tstate *s, unsigned k, uint64_t n, unsigned j,
				    uint64_t *lo, uint64_t *len)
{
	zn_zero_part(n, (int)s->fold_parts, (int)j, lo, len);
	return s->fold[k * s->fold_parts + j];
}

static int fold_put(struct zn_trainer *t, struct tstate *s, unsigned k, uint64_t n)
{
	int rc = zn_device_stream_synchronize(t->stream);
	for (unsigned j = 0; j < s->fold_parts && !rc; j++) {
		uint64_t lo, len;
		void *host;
		struct zn_tensor *f = fold_piece(s, k, n, j, &lo, &len);
		if ((rc = zn_swapper_acquire_overwrite(t->homes.sw, f, &host)))
			break;
		rc = tr_to_host(t, host, (float *)s->dgrad + lo, len * 4);
		t->stats.d2h_bytes += len * 4;
		int r = zn_swapper_release(t->homes.sw, f, true);
		rc = rc ? rc : r;
	}
	s->folded[k] = !rc;
	return rc;
}

static int fold_get(struct zn_trainer *t, struct tstate *s, unsigned k, uint64_t n)
{
	int rc = 0;
	for (unsigned j = 0; j < s->fold_parts && !rc; j++) {
		uint64_t lo, len;
		void *host;
		struct zn_tensor *f = fold_piece(s, k, n, j, &lo, &len);
		uint64_t t0 = zn_now_ns();
		rc = zn_swapper_acquire(t->homes.sw, f, &host);
		t->stats.stall_ns += zn_now_ns() - t0;
		if (rc)
			break;
		rc = tr_to_device(t, (float *)s->dgrad + lo, host, len * 4);
		t->stats.h2d_bytes += len * 4;
		zn_swapper_release(t->homes.sw, f, false);
	}
	s->folded[k] = false;
	return rc;
}

/* Tile k of a tensor of a fetched layer on the device: a whole tensor's
 * rows when it stays there (the buffers hand_out made), else the tile's
 * own buffers, as a fetched layer's are made (its home's bytes: 16-bit
 * layers as they are, else widened to fp32 and cast for the kernels;
 * zeroed gradients), the next tile's home read meanwhile. */
static int fetch_tile(void *user, unsigned layer, unsigned idx, unsigned k, bool want,
		      void **param, void **grad)
{
	struct zn_trainer *t = user;
	struct tstate *s = &t->t[t->tab.first[layer] + idx];
	const uint64_t first = (uint64_t)k * s->tile_rows * (uint64_t)s->d->shape[1];
	const size_t sz = zn_dtype_size(t->sdt);
	if (!s->by_tiles || k >= zn_zero_tiles(&t->zr, s->d) ||
	    (s->tiled && !t->layer[layer].fetched))
		return zn_error(-EINVAL, "%s: tile %u fetched outside its layer", s->d->name, k);
	if (!s->tiled) {
		*param = (uint8_t *)(t->sdt == ZN_DTYPE_F32 ? s->dparam : s->sparam) + first * sz;
		if (want)
			*grad = (uint8_t *)(t->sdt == ZN_DTYPE_F32 ? s->dgrad : s->sgrad) + first * sz;
		return 0;
	}
	if (s->tile_on >= 0)
		return zn_error(-EPROTO, "%s: tile %u fetched while tile %d is out", s->d->name, k,
				s->tile_on);
	struct zn_zero_piece pc;
	tr_piece(t, s, k, &pc);
	const uint64_t n = pc.n; /* the tile's elements (several ranks: every piece) */
	int rc = t->zr.dev16 ? tr_dev_alloc(t, n * zn_dtype_size(t->zr.hdt), &s->sparam)
			     : tr_dev_alloc(t, n * 4, &s->dparam);
	if (rc)
		return rc;
	s->tile_on = (int)k;
	/* The buffers hold the tile alone: from its home, or every rank's
	 * piece of it (several ranks). */
	rc = t->world > 1 ? tr_gather_tile(t, s, k, 0) : home_to_device(t, s, k, 0);
	/* The next tile in this pass's order (backward: downwards). */
	const unsigned next = want ? k - 1 : k + 1;
	if (!rc && next < s->ntiles)
		zn_swapper_prefetch(t->homes.sw, s->home[next]);
	if (!rc && t->sdt != ZN_DTYPE_F32 && !t->zr.dev16 &&
	    !(rc = tr_dev_alloc(t, n * sz, &s->sparam)))
		rc = t->k->cast(t->kctx, s->sparam, t->sdt, s->dparam, ZN_DTYPE_F32, n);
	/* A tied embedding's tile whose classifier part waits: the fp32
	 * gradients start from it (16-bit layers: the sum the encoder's
	 * 16-bit ones fold into at the release). */
	const bool resume = want && s->folded && s->folded[k];
	if (!rc && want && (!t->zr.dev16 || resume) && !(rc = tr_dev_alloc(t, n * 4, &s->dgrad)))
		rc = resume ? fold_get(t, s, k, n) : zn_device_memset(t->dev, s->dgrad, 0, n * 4, NULL);
	if (!rc && want && t->sdt != ZN_DTYPE_F32 && !(rc = tr_dev_alloc(t, n * sz, &s->sgrad)))
		rc = zn_device_memset(t->dev, s->sgrad, 0, n * sz, TR_KSTREAM(t));
	s->sdirty = want;
	*param = t->sdt == ZN_DTYPE_F32 ? s->dparam : s->sparam;
	if (want)
		*grad = t->sdt == ZN_DTYPE_F32 ? s->dgrad : s->sgrad;
	return rc;
}

/* The tile leaves the device; with final gradients (its 16-bit ones
 * folded into fp32 first where there are both), those go where the
 * tensor's gradients gather, synchronously. */
static int release_tile(void *user, unsigned layer, unsigned idx, unsigned k, bool written)
{
	struct zn_trainer *t = user;
	struct tstate *s = &t->t[t->tab.first[layer] + idx];
	if (!s->tiled)
		return 0;
	int rc = 0;
	if (s->tile_on != (int)k)
		rc = zn_error(-EPROTO, "%s: tile %u released but tile %d is out", s->d->name, k,
			      s->tile_on);
	struct zn_zero_piece pc;
	tr_piece(t, s, k, &pc);
	const uint64_t n = pc.n;
	if (!rc)
		rc = zn_device_stream_synchronize(t->stream);
	/* Not final (a tied embedding's classifier part): kept for the
	 * encoder's fetch of the tile, in fp32 as a whole tensor folds it. */
	const bool keep = !written && s->sdirty && s->folded;
	if (!rc && keep && !s->dgrad && !(rc = tr_dev_alloc(t, n * 4, &s->dgrad)))
		rc = zn_device_memset(t->dev, s->dgrad, 0, n * 4, TR_KSTREAM(t));
	if (!rc && (written || keep) && s->sdirty && s->sgrad && s->dgrad)
		rc = t->k->accumulate(t->kctx, s->dgrad, ZN_DTYPE_F32, s->sgrad, t->sdt, n);
	if (!rc && keep)
		rc = fold_put(t, s, k, n);
	if (!rc && written && (s->dgrad || s->sgrad))
		rc = t->world > 1 ? tr_grads_reduce_tile(t, s, k, t->micro_i == 0)
				  : tr_grads_tile_to_host(t, s, t->micro_i == 0, k);
	zn_device_free(t->dev, s->dparam);
	zn_device_free(t->dev, s->sparam);
	zn_device_free(t->dev, s->dgrad);
	zn_device_free(t->dev, s->sgrad);
	s->dparam = s->sparam = s->dgrad = s->sgrad = NULL;
	s->sdirty = false;
	s->tile_on = -1;
	return rc;
}

static int fetch(void *user, unsigned layer, bool want, void **params, void **grads)
{
	struct zn_trainer *t = user;
	if (t->layered)
		return fetch_offloaded(t, layer, want, params, grads);
	return hand_out(t, layer, want, params, grads);
}

static int release(void *user, unsigned layer, bool written)
{
	struct zn_trainer *t = user;
	int rc = fold_grads(t, layer, written);
	if (!rc && t->layered)
		rc = release_offloaded(t, layer, written);
	return rc;
}

/* The model's memory callbacks (user: the trainer).  The model enqueues
 * its kernels on the compute stream and reuses its buffers layer after
 * layer, so what these do to device memory is ordered after that stream's
 * work: zeroing is enqueued on it, the synchronous copies wait for it. */
static void *dalloc(void *user, size_t bytes)
{
	struct zn_trainer *t = user;
	void *p = NULL;
	return zn_device_alloc(t->dev, bytes, &p) ? NULL : p;
}

static void dfree(void *user, void *p)
{
	struct zn_trainer *t = user;
	zn_device_free(t->dev, p);
}

static int dzero(void *user, void *p, size_t bytes)
{
	struct zn_trainer *t = user;
	return zn_device_memset(t->dev, p, 0, bytes, TR_KSTREAM(t));
}

static void *halloc(void *user, size_t bytes)
{
	(void)user;
	/* Page-aligned, so the copies can use DMA once pinned. */
	void *p = NULL;
	if (posix_memalign(&p, 4096, bytes ? bytes : 1) != 0) {
		zn_set_error("out of host memory for %zu bytes of kept activations", bytes);
		return NULL;
	}
	return p;
}

static void hfree(void *user, void *p)
{
	(void)user;
	free(p);
}

static int dto_host(void *user, void *dst, const void *src, size_t bytes)
{
	struct zn_trainer *t = user;
	int rc = zn_device_stream_synchronize(t->stream);
	return rc ? rc : zn_device_copy_async(t->dev, dst, src, bytes, ZN_COPY_DEVICE_TO_HOST, NULL);
}

static int dsync(void *user)
{
	struct zn_trainer *t = user;
	return zn_device_synchronize(t->dev);
}

static int dto_device(void *user, void *dst, const void *src, size_t bytes)
{
	struct zn_trainer *t = user;
	int rc = zn_device_stream_synchronize(t->stream);
	return rc ? rc : zn_device_copy_async(t->dev, dst, src, bytes, ZN_COPY_HOST_TO_DEVICE, NULL);
}

/* What the model is given (user: the trainer): its parameter source and
 * the memory callbacks above. */
struct zn_param_source tr_param_source(struct zn_trainer *t)
{
	return (struct zn_param_source){ .user = t, .fetch = fetch, .release = release,
					 .tile_rows = tile_rows, .fetch_tile = fetch_tile,
					 .release_tile = release_tile };
}

struct zn_model_mem tr_model_mem(struct zn_trainer *t)
{
	return (struct zn_model_mem){ t, dalloc, dfree, dzero, halloc, hfree, dto_host,
				      dto_device, dsync };
}
