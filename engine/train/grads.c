/* Gradients leaving the device for their host accumulators or their sums
 * on NVMe (one rank): synchronously, or in flights on the copy stream
 * (overlap_comm) whose device buffers are freed once their copies are
 * done; and several ranks' reduced parts on their way to NVMe. */
#include "zn_common.h"

#include "train/internal.h"

#include <string.h>

/* Free the buffers of finished gradient copies (all: wait for them). */
int tr_flights_reap(struct zn_trainer *t, bool all)
{
	int rc = 0;
	while (t->flights.n) {
		struct grad_flight *f = &t->flights.f[t->flights.head];
		if (all) {
			int r = zn_device_event_synchronize(f->ev);
			rc = rc ? rc : r;
		} else if (zn_device_event_query(f->ev) != 0) {
			break;
		}
		for (unsigned i = 0; i < f->n; i++)
			zn_device_free(t->dev, f->p[i]);
		f->n = 0;
		t->flights.head = (t->flights.head + 1) % GRAD_FLIGHTS;
		t->flights.n--;
	}
	return rc;
}

/* How a tensor's gradients cross to the host at a release (one rank). */
enum cross {
	CROSS_ACC,  /* in the accumulator's dtype already: straight into it (a
		     * first micro-batch) */
	CROSS_F32,  /* fp32 rounded to the training dtype, staged, then added */
	CROSS_16,   /* a 16-bit layer's own gradients (dev16), staged, then
		     * converted (first) or added */
};

/* Enqueue on the compute stream what a tensor's device gradients need
 * before they cross: rounding to the training dtype, or, for a first
 * micro-batch into a 16-bit accumulator, narrowing into `narrow` (n 16-bit
 * values); a 16-bit layer's final gradients need nothing (fp32 holds
 * them exactly, so they are the values the fp32 path would round to).
 * *src and *bytes say what to copy. */
static enum cross grads_prepare(struct zn_trainer *t, struct tstate *s, bool first, void *narrow,
				uint64_t doff, size_t n, const void **src, size_t *bytes, int *rc)
{
	*rc = 0;
	if (!s->dgrad) { /* dev16: never folded into fp32 */
		*src = (const uint8_t *)s->sgrad + doff * zn_dtype_size(t->sdt);
		*bytes = n * zn_dtype_size(t->sdt);
		return first && t->zr.gdt == t->sdt ? CROSS_ACC : CROSS_16;
	}
	float *g = (float *)s->dgrad + doff;
	if (first && t->zr.gdt != ZN_DTYPE_F32) {
		/* Narrowing to the training dtype itself rounds as
		 * round_to_dtype would (to nearest even, once): that pass is
		 * skipped then. */
		if (t->zr.gdt != t->zr.dtype)
			*rc = tr_round_to_dtype(t, g, n);
		if (!*rc)
			*rc = t->k->cast(t->kctx, narrow, t->zr.gdt, g, ZN_DTYPE_F32, n);
		*src = narrow;
		*bytes = n * 2;
		return CROSS_ACC;
	}
	*rc = tr_round_to_dtype(t, g, n);
	*src = g;
	*bytes = n * 4;
	return first ? CROSS_ACC : CROSS_F32;
}

/* What crossed into the staging buffer (at element `at` of it) lands in
 * acc (n elements): converted or added, as `how` says. */
static void grads_land(struct zn_trainer *t, void *acc, enum cross how, bool first, uint64_t at,
		       size_t n)
{
	if (how == CROSS_F32)
		tr_host_accumulate(acc, t->zr.gdt, t->gstage + at, n);
	else if (how == CROSS_16 && first)
		tr_host_convert(acc, t->zr.gdt, (const uint16_t *)t->gstage + at, t->sdt, n);
	else if (how == CROSS_16)
		tr_host_accumulate_from(acc, t->zr.gdt, (const uint16_t *)t->gstage + at, t->sdt,
					n);
}

/* A backward's gradients of gnvme tensors go to NVMe in one pass of the
 * optimizer swapper: the first micro-batch's start the sums, later ones
 * add to them. */
int tr_grads_pass_begin(struct zn_trainer *t)
{
	return t->zr.grads_nvme ? zn_optswap_grads_begin(t->nvme.os, t->micro_i > 0) : 0;
}

/* Every flight landed (and its error, the copy stream's, returned). */
static int flights_drain(struct zn_trainer *t)
{
	if (!t->flights.copy)
		return 0;
	int rc = tr_flights_reap(t, true);
	int r = zn_device_stream_synchronize(t->flights.copy);
	return rc ? rc : r;
}

int tr_grads_pass_end(struct zn_trainer *t)
{
	if (!t->zr.grads_nvme)
		return 0;
	/* The pass's last puts run on the copy stream (one rank) or as the
	 * last buckets settle (several ranks): in this micro-batch, whose
	 * place in the step they need. */
	int rc = flights_drain(t);
	if (!rc && t->buckets.b[0].buf)
		rc = tr_grads_settle_all(t);
	int r = zn_optswap_grads_end(t->nvme.os);
	return rc ? rc : r;
}

/* A gnvme tensor's gradients of elements [off, off + n) (the whole
 * tensor, or tile k of it; on the host now: in t->gsums when they crossed
 * in the sums' dtype, else staged) into its sums on NVMe, sub-group by
 * sub-group from the top (the pass's order): later micro-batches read
 * each group's sums, add to them (rounded once, as host accumulators are)
 * and send them back before the next group's, so one group is open at a
 * time.  After the step's last micro-batch the sums are in t->gsums: the
 * tile's share of the norm is taken there, as norm_on_host takes a host
 * accumulator's. */
static int grads_to_nvme(struct zn_trainer *t, struct tstate *s, enum cross how, bool first,
			 uint64_t off, uint64_t n, unsigned k)
{
	const uint64_t S = zn_zero_sub_group(&t->zr, t->own_total);
	const size_t esz = zn_dtype_size(t->zr.gdt);
	uint8_t *sums = t->gsums;
	int rc = 0;
	for (uint64_t b = off + n; b > off && !rc;) {
		/* [a, b): the range's piece of one group, in the tensor's part. */
		const uint64_t top = s->oflat + b - 1, gfirst = top - top % S;
		const uint64_t a = ZN_MAX(gfirst > s->oflat ? gfirst - s->oflat : 0, off);
		uint8_t *p = sums + (a - off) * esz;
		if (!first)
			rc = zn_optswap_grads_get(t->nvme.os, s->oflat + a, b - a, p);
		if (!rc) {
			grads_land(t, p, how, first, a - off, b - a);
			rc = zn_optswap_grads_put(t->nvme.os, s->oflat + a, b - a, p);
		}
		b = a;
	}
	if (!rc && t->micro_i + 1 == t->accum) {
		const struct zn_adam_exec ex = { .pool = t->pool };
		struct zn_adam_grad_stats gst;
		if (!(rc = zn_adam_grad_check(sums, t->zr.gdt, n, &ex, &gst))) {
			s->gsq[k] = gst.sumsq;
			s->gfin[k] = gst.finite;
		}
	}
	return rc;
}

/* Several ranks: this rank's piece k of a gnvme tensor's gradients (of
 * tile k, or of the tensor), summed over the ranks (values in the sums'
 * dtype, settled from a reduction in the pass's order), into its sums on
 * NVMe: the first micro-batch's start them, later ones are added as a
 * host accumulator adds a settled piece (widened to fp32, the sum
 * rounded once). */
int tr_grads_part_to_nvme(struct zn_trainer *t, struct tstate *s, unsigned k, const void *own,
			  bool first)
{
	const size_t esz = zn_dtype_size(t->zr.gdt);
	struct zn_zero_piece p;
	tr_piece(t, s, k, &p);
	if (!p.len) { /* an empty piece: nothing expected of it */
		s->gsq[k] = 0;
		s->gfin[k] = true;
		return 0;
	}
	if (first) {
		memcpy(t->gsums, own, p.len * esz);
		return grads_to_nvme(t, s, CROSS_ACC, true, p.own, p.len, k);
	}
	if (t->zr.gdt == ZN_DTYPE_F32)
		memcpy(t->gstage, own, p.len * esz);
	else
		zn_dtype_to_f32(t->gstage, own, t->zr.gdt, p.len);
	return grads_to_nvme(t, s, CROSS_F32, false, p.own, p.len, k);
}

/* A tensor's device gradients of its elements [off, off + n) (at element
 * doff of the device buffers) into its host accumulator, synchronously:
 * prepared as above, then across; the first micro-batch's gradients start
 * the accumulator (16-bit accumulators: narrowed on the device, so half
 * the bytes cross), later ones are added to it.  gnvme: the same, on
 * their way to NVMe.  With `last`, a 16-bit layer's gradient buffer goes
 * with them. */
static int grads_range_to_host(struct zn_trainer *t, struct tstate *s, bool first, uint64_t off,
			       uint64_t n, unsigned k, uint64_t doff, bool last)
{
	const void *src;
	size_t bytes;
	int rc;
	/* What is in flight lands first: its host side shares the staging
	 * and runs the NVMe pass, which one thread runs at a time. */
	if ((rc = flights_drain(t)))
		return rc;
	enum cross how = grads_prepare(t, s, first, t->round_buf, doff, n, &src, &bytes, &rc);
	if (!rc)
		rc = zn_device_stream_synchronize(t->stream);
	if (rc)
		return rc;
	t->stats.d2h_bytes += bytes;
	void *acc = s->gnvme ? t->gsums : (uint8_t *)s->grad + off * zn_dtype_size(t->zr.gdt);
	rc = zn_device_copy_async(t->dev, how == CROSS_ACC ? acc : (void *)t->gstage, src, bytes,
				  ZN_COPY_DEVICE_TO_HOST, NULL);
	if (!s->dgrad && last) {
		zn_device_free(t->dev, s->sgrad);
		s->sgrad = NULL;
		s->sdirty = false;
	}
	if (rc || s->gnvme)
		return rc ? rc : grads_to_nvme(t, s, how, first, off, n, k);
	grads_land(t, acc, how, first, 0, n);
	return 0;
}

int tr_grads_to_host(struct zn_trainer *t, struct tstate *s, bool first)
{
	return grads_range_to_host(t, s, first, 0, s->d->numel, 0, 0, true);
}

/* A tile on the device by itself (the model's tiles): its buffers hold it
 * from their start. */
int tr_grads_tile_to_host(struct zn_trainer *t, struct tstate *s, bool first, unsigned k)
{
	const uint64_t off = tr_tile_first(s, k);
	return grads_range_to_host(t, s, first, off, tr_tile_span(s, off, s->nown), k, 0, true);
}

/* A whole tensor on the device, tile by tile from the last (the pass's
 * order), as its homes and the norm's shares are cut. */
int tr_grads_tiles_to_host(struct zn_trainer *t, struct tstate *s, bool first)
{
	int rc = 0;
	for (unsigned k = s->ntiles; k-- > 0 && !rc;) {
		const uint64_t off = tr_tile_first(s, k);
		rc = grads_range_to_host(t, s, first, off, tr_tile_span(s, off, s->nown), k, off,
					 k == 0);
	}
	return rc;
}

/* What crossed on the copy stream lands on the host after it, in order
 * (one function per way, so that nothing is read that a later release
 * may have changed by then). */
static int land_f32_fn(void *arg)
{
	struct tstate *s = arg;
	grads_land(s->owner, s->grad, CROSS_F32, false, 0, s->d->numel);
	return 0;
}

static int land_add16_fn(void *arg)
{
	struct tstate *s = arg;
	grads_land(s->owner, s->grad, CROSS_16, false, 0, s->d->numel);
	return 0;
}

static int land_convert16_fn(void *arg)
{
	struct tstate *s = arg;
	grads_land(s->owner, s->grad, CROSS_16, true, 0, s->d->numel);
	return 0;
}

/* NVMe gradients' part of the pass, in the pass's order on the copy
 * stream (how and first were fixed when they left). */
static int land_nvme_fn(void *arg)
{
	struct tstate *s = arg;
	return grads_to_nvme(s->owner, s, (enum cross)s->fl_how, s->fl_first, 0, s->d->numel, 0);
}

/* A layer's final gradients leave the device on the copy stream: rounded
 * (or narrowed to a 16-bit accumulator's dtype) on the compute stream,
 * then copied, and added on the host for later micro-batches, in tensor
 * order, while the compute stream goes on with the next layer's backward.
 * Their device buffers are freed once the copies are done. */
int tr_grads_leave(struct zn_trainer *t, unsigned layer)
{
	const bool first = t->micro_i == 0;
	int rc = tr_flights_reap(t, false);
	if (!rc && t->flights.n == GRAD_FLIGHTS) {
		struct grad_flight *o = &t->flights.f[t->flights.head];
		rc = zn_device_event_synchronize(o->ev);
		if (!rc)
			rc = tr_flights_reap(t, false);
	}
	struct grad_flight *f = &t->flights.f[(t->flights.head + t->flights.n) % GRAD_FLIGHTS];
	f->n = 0;
	/* NVMe gradients in descending order, as the layers go (fetch.c);
	 * each tensor's copy is queued as soon as it is prepared, so that one
	 * crossing synchronously (no room to narrow it in flight) follows the
	 * ones before it. */
	const unsigned cnt = t->tab.count[layer];
	for (unsigned j = 0; j < cnt && !rc; j++) {
		const unsigned i = t->zr.grads_nvme ? cnt - 1 - j : j;
		struct tstate *s = &t->t[t->tab.first[layer] + i];
		const size_t n = s->d->numel;
		const bool own16 = !s->dgrad; /* dev16: the gradients are sgrad */
		if (s->dev_grads || s->tiled) /* tiles' left at their release */
			continue;
		f->p[f->n++] = own16 ? s->sgrad : s->dgrad;
		void *narrow = NULL;
		if (!own16 && first && t->zr.gdt != ZN_DTYPE_F32) {
			rc = tr_dev_alloc(t, n * 2, &narrow);
			if (!rc) {
				f->p[f->n++] = narrow;
			} else if (rc == -ENOMEM) {
				/* No room for a 16-bit copy in flight: this one
				 * crosses synchronously, through the scratch
				 * (after what is in flight, for NVMe ones). */
				rc = tr_grads_to_host(t, s, first);
				s->dgrad = NULL;
				continue;
			}
		}
		const void *src = NULL;
		size_t bytes = 0;
		enum cross how = CROSS_ACC;
		if (!rc)
			how = grads_prepare(t, s, first, narrow, 0, n, &src, &bytes, &rc);
		if (own16) { /* the flight frees it; the next backward gets a new one */
			s->sgrad = NULL;
			s->sdirty = false;
		}
		s->dgrad = NULL;
		if (rc || (rc = zn_device_event_record(t->flights.ev_compute, t->stream)) ||
		    (rc = zn_device_stream_wait_event(t->flights.copy, t->flights.ev_compute)))
			break;
		t->stats.d2h_bytes += bytes;
		if (s->gnvme) {
			s->fl_how = (uint8_t)how;
			s->fl_first = first;
			rc = zn_device_copy_async(t->dev, how == CROSS_ACC ? t->gsums : t->gstage, src,
						  bytes, ZN_COPY_DEVICE_TO_HOST, t->flights.copy);
			if (!rc)
				rc = zn_device_launch_host(t->flights.copy, land_nvme_fn, s);
		} else if (how == CROSS_ACC) {
			rc = zn_device_copy_async(t->dev, s->grad, src, bytes, ZN_COPY_DEVICE_TO_HOST,
						  t->flights.copy);
		} else if (!(rc = zn_device_copy_async(t->dev, t->gstage, src, bytes,
						       ZN_COPY_DEVICE_TO_HOST, t->flights.copy))) {
			rc = zn_device_launch_host(t->flights.copy,
						   how == CROSS_F32 ? land_f32_fn
						   : first	    ? land_convert16_fn
								    : land_add16_fn,
						   s);
		}
	}
	if (!rc)
		rc = zn_device_event_record(f->ev, t->flights.copy);
	t->flights.n++;
	if (rc) /* what was queued finishes; then everything is freed */
		tr_flights_reap(t, true);
	return rc;
}
