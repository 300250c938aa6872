/* Where model states live off the device: the parameters' homes
 * (offload_param, host or NVMe through the tensor swapper) and the
 * optimizer states on NVMe in sub-groups (offload_optimizer: nvme),
 * walked in flat order in the optimizer swapper's lent buffers (struct
 * groups) when the states are made at the start or written at a save,
 * and where a piece of a tensor's states is (host arrays or a lent
 * group). */
#include "zn_common.h"

#include "train/internal.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* Tiles of a tensor's part (one rank: the whole tensor); whole: one.
 * Its pieces of the tiles lie back to back, every one but the last's
 * tile_step long (engine/zero's zn_zero_piece). */
unsigned tr_tile_of(const struct tstate *s, uint64_t off)
{
	if (!s->tiled)
		return 0;
	const uint64_t k = s->tile_step ? off / s->tile_step : s->ntiles - 1;
	return (unsigned)ZN_MIN(k, (uint64_t)s->ntiles - 1);
}

uint64_t tr_tile_first(const struct tstate *s, unsigned k)
{
	return s->tiled ? (uint64_t)k * s->tile_step : 0;
}

uint64_t tr_tile_span(const struct tstate *s, uint64_t off, uint64_t n)
{
	if (!s->tiled)
		return n;
	const unsigned k = tr_tile_of(s, off);
	const uint64_t end = k + 1 == s->ntiles ? s->nown : tr_tile_first(s, k) + s->tile_step;
	return ZN_MIN(n, end - off);
}

void tr_piece(const struct zn_trainer *t, const struct tstate *s, unsigned k,
	      struct zn_zero_piece *p)
{
	const struct zn_param_desc *d = s->d;
	if (!s->tiled) {
		*p = (struct zn_zero_piece){ .first = 0, .n = d->numel, .lo = s->lo,
					     .len = s->nown, .own = 0, .part = s->part };
		return;
	}
	zn_zero_piece_of((uint64_t)d->shape[0], (uint64_t)d->shape[1], s->tile_rows,
			 (int)t->zr.parts, t->zr.parts > 1 ? t->rank : 0, k, p);
}
/* Elements [off, off + n) of a tensor's new parameters go into its home
 * buffer (its tile's), in the home dtype.  The buffer is taken (without
 * reading the old bytes) when the tile's first element comes and given
 * back, to be written home, after its last: the optimizer's sub-groups
 * cut tensors. */
int tr_home_open(struct zn_trainer *t, struct tstate *s, uint64_t off)
{
	const unsigned k = tr_tile_of(s, off);
	if (s->hbuf && s->htile == k)
		return 0;
	if (s->hbuf)
		return zn_error(-EPROTO, "%s: tile %u's home opened while tile %u's is held",
				s->d->name, k, s->htile);
	s->htile = k;
	return zn_swapper_acquire_overwrite(t->homes.sw, s->home[k], &s->hbuf);
}

/* Elements up to `end` are in: after the tile's last, its home is written. */
int tr_home_close(struct zn_trainer *t, struct tstate *s, uint64_t end)
{
	const uint64_t last = tr_tile_first(s, s->htile) +
			      tr_tile_span(s, tr_tile_first(s, s->htile), s->nown);
	if (end < last)
		return 0;
	s->hbuf = NULL;
	return zn_swapper_release(t->homes.sw, s->home[s->htile], true);
}

/* An empty piece still has its (one-element) home written once. */
int tr_home_put_empty(struct zn_trainer *t, struct tstate *s, unsigned k)
{
	if (s->dhome)
		return 0;
	if (s->hbuf)
		return zn_error(-EPROTO, "%s: tile %u's home written while tile %u's is held",
				s->d->name, k, s->htile);
	s->htile = k;
	int rc = zn_swapper_acquire_overwrite(t->homes.sw, s->home[k], &s->hbuf);
	if (rc)
		return rc;
	s->hbuf = NULL;
	return zn_swapper_release(t->homes.sw, s->home[k], true);
}

int tr_home_put(struct zn_trainer *t, struct tstate *s, uint64_t off, const float *src,
		    uint64_t n)
{
	if (s->dhome) { /* a part kept on the device: rounded as parameters are */
		int r = n ? tr_to_device(t, s->dhome + off, src, n * 4) : 0;
		return r ? r : tr_round_to_dtype(t, s->dhome + off, n);
	}
	size_t esz = zn_dtype_size(t->zr.hdt);
	int rc = 0;
	for (uint64_t done = 0; done < n && !rc;) {
		const uint64_t o = off + done, k = tr_tile_span(s, o, n - done);
		if (!(rc = tr_home_open(t, s, o))) {
			zn_dtype_from_f32((uint8_t *)s->hbuf + (o - tr_tile_first(s, s->htile)) * esz,
					  t->zr.hdt, src + done, k);
			rc = tr_home_close(t, s, o + k);
		}
		done += k;
	}
	return rc;
}

int tr_param_homes_setup(struct zn_trainer *t)
{
	const struct zn_offload_param_config *pc = &t->cfg.zero_optimization.offload_param;
	struct zn_swapper_config swc = { .trace = t->trace };
	size_t esz = zn_dtype_size(t->zr.hdt);
	int rc;

	/* overlap_comm (DeepSpeed: overlap the gradient reduction with the
	 * backward; on one rank the reduction is the way to the host): a
	 * stream of their own, up to GRAD_FLIGHTS layers in flight (bound for
	 * NVMe too: the copy stream then runs their pass). */
	if (t->cfg.zero_optimization.overlap_comm) {
		t->flights.copy = zn_device_stream_create(t->dev, "gradients");
		t->flights.ev_compute = t->flights.copy ? zn_device_event_create(t->dev) : NULL;
		if (!t->flights.ev_compute)
			return -ENOMEM;
		for (unsigned i = 0; i < GRAD_FLIGHTS; i++)
			if (!(t->flights.f[i].ev = zn_device_event_create(t->dev)))
				return -ENOMEM;
	}
	for (unsigned l = 0; l < t->tab.nlayers; l++)
		for (unsigned i = 0; i < t->tab.count[l]; i++)
			if (!t->t[t->tab.first[l] + i].resident)
				t->layer[l].elems += t->t[t->tab.first[l] + i].d->numel;
	/* Each offloaded tensor's home (this rank's part: one rank's homes
	 * hold whole tensors), by engine/zero's rule: host memory for all with
	 * device cpu; with nvme, DeepSpeed's max_in_cpu. */
	/* A tiled tensor has a home per tile. */
	unsigned nhomes = 0;
	for (unsigned i = 0; i < t->tab.nt; i++)
		nhomes += t->t[i].ntiles;
	enum zn_tier *tier = calloc(nhomes, sizeof(*tier));
	if (!tier)
		return zn_error(-ENOMEM, "out of memory");
	struct zn_zero_homes homes = { 0 };
	for (unsigned i = 0, h = 0; i < t->tab.nt; h += t->t[i++].ntiles) {
		const struct tstate *s = &t->t[i];
		for (unsigned k = 0; k < s->ntiles && !s->resident; k++)
			tier[h + k] = zn_zero_home(&t->zr, &homes, tr_tile_span(s, tr_tile_first(s, k),
										s->nown),
						   s->d->name);
	}
	/* The folds of a tiled tied embedding: a whole tile's fp32 each, in
	 * parts the homes' buffers hold. */
	enum zn_tier ftier = ZN_TIER_HOST;
	for (unsigned i = 0; i < t->tab.nt; i++) {
		struct tstate *s = &t->t[i];
		struct zn_zero_piece p;
		if (!s->folded)
			continue;
		tr_piece(t, s, 0, &p);
		s->fold_parts = zn_zero_fold_parts(&t->zr, &homes, p.n);
		for (unsigned k = 0; k < s->ntiles; k++) {
			tr_piece(t, s, k, &p);
			ftier = zn_zero_fold(&t->zr, &homes, p.n, s->fold_parts, s->d->name);
		}
	}
	t->host_bytes += homes.host_elems * esz + homes.host_fold_bytes;
	if (homes.nvme_bytes) {
		char buf[ZN_NVME_PATH_MAX];
		const char *paths[ZN_STORE_MAX_PATHS];
		int np = zn_nvme_paths_split(pc->nvme_path, buf, paths, ZN_STORE_MAX_PATHS);
		struct zn_bufpool_config bc;
		if (np < 1)
			rc = zn_error(-EINVAL, "zero_optimization.offload_param.nvme_path: give the "
					       "directory for the parameters' swap files");
		else
			rc = zn_zero_homes_pool(&t->zr, pc, &homes, &bc);
		if (rc) {
			free(tier);
			return rc;
		}
		t->homes.aio = zn_aio_create(&t->cfg.aio);
		struct zn_store_config sc = { .paths = paths, .npaths = (unsigned)np,
					      .capacity = homes.nvme_bytes, .stripe_bytes = pc->stripe_size,
					      .checksum = pc->checksum };
		t->homes.store = t->homes.aio ? zn_store_create(&sc, t->homes.aio) : NULL;
		t->homes.pool = t->homes.store ? zn_bufpool_create(&bc, t->homes.aio) : NULL;
		if (!t->homes.pool) {
			free(tier);
			return -EINVAL;
		}
		swc.store = t->homes.store;
		swc.pool = t->homes.pool;
	}
	t->homes.sw = zn_swapper_create(&swc);
	rc = 0;
	for (unsigned i = 0, h = 0; t->homes.sw && i < t->tab.nt && !rc; h += t->t[i++].ntiles) {
		struct tstate *s = &t->t[i];
		if (s->resident)
			continue;
		if (!(s->home = calloc(s->ntiles, sizeof(*s->home))))
			rc = zn_error(-ENOMEM, "out of memory");
		for (unsigned k = 0; k < s->ntiles && !rc; k++) {
			const uint64_t n = tr_tile_span(s, tr_tile_first(s, k), s->nown);
			rc = zn_swapper_add(t->homes.sw, s->d->name, ZN_MAX(n, 1) * esz, tier[h + k],
					    &s->home[k]);
		}
		const unsigned fp = s->fold_parts;
		if (!rc && s->folded && !(s->fold = calloc((size_t)s->ntiles * fp, sizeof(*s->fold))))
			rc = zn_error(-ENOMEM, "out of memory");
		for (unsigned k = 0; s->folded && k < s->ntiles && !rc; k++) {
			struct zn_zero_piece p;
			tr_piece(t, s, k, &p);
			for (unsigned j = 0; j < fp && !rc; j++) {
				uint64_t lo, len;
				zn_zero_part(p.n, (int)fp, (int)j, &lo, &len);
				rc = zn_swapper_add(t->homes.sw, s->d->name, ZN_MAX(len, 1) * 4, ftier,
						    &s->fold[k * fp + j]);
			}
		}
	}
	free(tier);
	return !t->homes.sw ? -EINVAL : rc;
}

int tr_nvme_setup(struct zn_trainer *t)
{
	const struct zn_offload_optimizer_config *oc =
		&t->cfg.zero_optimization.offload_optimizer;
	char buf[ZN_NVME_PATH_MAX];
	const char *paths[ZN_STORE_MAX_PATHS];
	int np = zn_nvme_paths_split(oc->nvme_path, buf, paths, ZN_STORE_MAX_PATHS);
	if (np < 1)
		return zn_error(-EINVAL, "zero_optimization.offload_optimizer.nvme_path: give the "
					 "directory (or directories, separated by ',') for the "
					 "optimizer states");
	t->nvme.aio = zn_aio_create(&t->cfg.aio);
	if (!t->nvme.aio)
		return -EINVAL;
	struct zn_optswap_config c;
	zn_zero_optswap_config(&t->zr, oc, t->own_total, &c);
	c.aio = t->nvme.aio;
	c.trace = t->trace;
	struct zn_store_config sc = { .paths = paths, .npaths = (unsigned)np,
				      .capacity = zn_optswap_store_bytes(&c),
				      .stripe_bytes = oc->stripe_size, .checksum = oc->checksum };
	t->nvme.store = zn_store_create(&sc, t->nvme.aio);
	if (!t->nvme.store)
		return -EINVAL;
	c.store = t->nvme.store;
	t->nvme.os = zn_optswap_create(&c);
	if (!t->nvme.os)
		return -EINVAL;
	/* Every backward sends the gradients of the tensors whose sums live
	 * beside their states. */
	int rc = 0;
	for (unsigned i = 0; i < t->tab.nt && !rc; i++)
		if (t->t[i].gnvme && t->t[i].nown)
			rc = zn_optswap_grads_expect(t->nvme.os, t->t[i].oflat, t->t[i].nown);
	return rc;
}

/* The group holding flat element p lent (put: to fill; else read), the
 * one lent before given back first (put: written, behind the filling of
 * the next). */
int tr_groups_at(struct groups *g, uint64_t p, float **a, uint64_t *left)
{
	const uint64_t gi = p / g->sub, gfirst = gi * g->sub;
	int rc = 0;
	if (g->cur != gi) {
		if ((rc = tr_groups_close(g)))
			return rc;
		if (g->put)
			rc = zn_optswap_group_fill(g->t->nvme.os, gi, g->st);
		else
			rc = zn_optswap_group_read(g->t->nvme.os, gi, (const float **)g->st);
		if (rc)
			return rc;
		g->cur = gi;
	}
	for (int k = 0; k < ZN_ZERO_STATES; k++)
		a[k] = g->st[k] + (p - gfirst);
	*left = ZN_MIN(gfirst + g->sub, g->t->own_total) - p;
	return 0;
}

void tr_groups_open(struct groups *g, struct zn_trainer *t, bool put)
{
	memset(g, 0, sizeof(*g));
	g->t = t;
	g->put = put;
	g->sub = zn_zero_sub_group(&t->zr, t->own_total);
	g->cur = UINT64_MAX;
}

/* The lent group given back (put: its write started); 0 or -errno. */
int tr_groups_close(struct groups *g)
{
	if (g->cur == UINT64_MAX)
		return 0;
	const uint64_t gi = g->cur;
	g->cur = UINT64_MAX;
	if (!g->put) {
		zn_optswap_group_release(g->t->nvme.os, gi);
		return 0;
	}
	return zn_optswap_group_write(g->t->nvme.os, gi);
}

/* Putting: the last group written and every write waited for; after a
 * failure (rc, returned) the group being filled is given back unwritten,
 * so that NVMe keeps whole groups only. */
int tr_groups_finish(struct groups *g, int rc)
{
	if (rc && g->cur != UINT64_MAX) {
		zn_optswap_group_release(g->t->nvme.os, g->cur);
		g->cur = UINT64_MAX;
	}
	int r = tr_groups_close(g);
	int w = zn_optswap_group_sync(g->t->nvme.os);
	return rc ? rc : r ? r : w;
}

/* Where element o of tensor s's part has its states, in a[]: the host
 * arrays, or (NVMe states) the sub-group lent in g; *n, the elements
 * wanted from there, is cut at the group's end. */
int tr_states_at(struct groups *g, const struct tstate *s, uint64_t o, float **a, uint64_t *n)
{
	struct zn_trainer *t = s->owner;
	if (t->zr.nvme_opt) {
		uint64_t left;
		int rc = tr_groups_at(g, s->oflat + o, a, &left);
		*n = ZN_MIN(*n, left);
		return rc;
	}
	float *host[ZN_ZERO_STATES] = { s->master, s->m, s->v };
	for (int k = 0; k < ZN_ZERO_STATES; k++)
		a[k] = host[k] + o;
	return 0;
}
