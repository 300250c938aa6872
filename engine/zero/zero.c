/* ZeRO's rules (see zero.h): the partition of every tensor over the ranks,
 * which tensors stay on the device, where gradients accumulate and
 * optimizer states live, where offload_param's homes go, the sub-groups of
 * NVMe optimizer states, and the bytes each of these costs. */
#include "zn_common.h"

#include <string.h>

#include "model/arch.h"
#include "zero/zero.h"

int zn_zero_check_config(const struct zn_config *c)
{
	bool po = c->zero_optimization.offload_param.device != ZN_OFFLOAD_NONE;
	if (po && c->zero_optimization.stage != 3)
		return zn_error(-EINVAL, "zero_optimization.offload_param needs stage 3");
	if (po && c->zero_optimization.offload_optimizer.device == ZN_OFFLOAD_NONE)
		return zn_error(-EINVAL, "zero_optimization.offload_param: the trainer needs "
					 "offload_optimizer.device cpu or nvme with it");
	return zn_zero_check_optimizer(c);
}

int zn_zero_check_optimizer(const struct zn_config *cfg)
{
	int opt = cfg->optimizer.type, where = cfg->zero_optimization.offload_optimizer.device;
	if ((opt == ZN_OPT_LAMB || opt == ZN_OPT_SGD) && where == ZN_OFFLOAD_NONE)
		return zn_error(-EINVAL, "optimizer.type: %s runs on the CPU optimizer only (the "
					 "device kernels have Adam alone): set "
					 "zero_optimization.offload_optimizer.device cpu or nvme",
				opt == ZN_OPT_LAMB ? "Lamb" : "SGD");
	return 0;
}

void zn_zero_rules_init(struct zn_zero_rules *z, const struct zn_config *cfg, int rank, int world)
{
	const struct zn_zero_config *zc = &cfg->zero_optimization;
	z->rank = rank;
	z->world = world;
	z->stage = zc->stage;
	z->parts = z->stage >= 1 ? (uint64_t)world : 1;
	z->threshold = zc->param_persistence_threshold;
	z->max_in_cpu = zc->offload_param.max_in_cpu;
	z->sub_group_size = zc->sub_group_size;
	z->offload_param = zc->offload_param.device != ZN_OFFLOAD_NONE;
	z->tile_size = world == 1 || z->offload_param ? zc->tile_size : 0;
	z->device_opt = zc->offload_optimizer.device == ZN_OFFLOAD_NONE;
	z->nvme_opt = zc->offload_optimizer.device == ZN_OFFLOAD_NVME;
	z->nvme_homes = zc->offload_param.device == ZN_OFFLOAD_NVME;
	z->overlap = z->offload_param && z->nvme_opt;
	z->partition_params = z->offload_param || (z->stage == 3 && world > 1);
	z->host_grads = !z->device_opt || world > 1;
	z->grads_nvme = z->nvme_opt && z->offload_param &&
			zc->offload_optimizer.gradients != ZN_OFFLOAD_GRADS_HOST;
	z->dtype = cfg->fp16.enabled ? ZN_DTYPE_F16 : cfg->bf16.enabled ? ZN_DTYPE_BF16
									: ZN_DTYPE_F32;
	z->gdt = cfg->data_types.grad_accum_dtype == ZN_GRAD_ACCUM_BF16   ? ZN_DTYPE_BF16
		 : cfg->data_types.grad_accum_dtype == ZN_GRAD_ACCUM_FP16 ? ZN_DTYPE_F16
									  : ZN_DTYPE_F32;
	z->hdt = z->offload_param ? z->dtype : ZN_DTYPE_F32;
	z->dev16 = z->offload_param && zn_config_storage_dtype(cfg) != ZN_DTYPE_F32;
}

bool zn_zero_grad_staging(const struct zn_zero_rules *z, uint32_t accum)
{
	return z->world > 1 ||
	       (z->host_grads && (accum > 1 || (z->dev16 && z->gdt != z->dtype)));
}

void zn_zero_part(uint64_t n, int W, int r, uint64_t *lo, uint64_t *len)
{
	uint64_t part = (n + (uint64_t)W - 1) / (uint64_t)W;
	*lo = ZN_MIN(part * (uint64_t)r, n);
	*len = ZN_MIN(part, n - *lo);
}

struct zn_zero_share zn_zero_share_of(const struct zn_zero_rules *z, const struct zn_param_desc *d)
{
	struct zn_zero_share s;
	const uint64_t numel = d->numel;
	const int r = z->parts > 1 ? z->rank : 0;
	zn_zero_part(numel, (int)z->parts, r, &s.lo, &s.nown);
	s.part = (numel + z->parts - 1) / z->parts;
	s.resident = !z->partition_params || numel < z->threshold;
	s.dev_grads = s.resident && (z->world == 1 || z->stage <= 1);
	s.tile_rows = zn_zero_tile_rows(z, d);
	s.tiled = s.tile_rows && !s.resident && z->offload_param;
	if (s.tiled && z->parts > 1) {
		const uint64_t rows = (uint64_t)d->shape[0], cols = (uint64_t)d->shape[1];
		struct zn_zero_piece p;
		zn_zero_piece_of(rows, cols, s.tile_rows, (int)z->parts, r, 0, &p);
		s.lo = 0;
		s.part = p.part;
		s.nown = zn_zero_pieces_own(rows, cols, s.tile_rows, (int)z->parts, r);
	}
	return s;
}

void zn_zero_piece_of(uint64_t rows, uint64_t cols, uint64_t R, int W, int r, uint64_t k,
		      struct zn_zero_piece *p)
{
	if (!R) {
		p->first = 0;
		p->n = rows * cols;
		p->own = 0;
	} else {
		const uint64_t r0 = ZN_MIN(k * R, rows);
		uint64_t flo, flen; /* a full tile's piece: every tile before k is full */
		zn_zero_part(R * cols, W, r, &flo, &flen);
		p->first = r0 * cols;
		p->n = (ZN_MIN(r0 + R, rows) - r0) * cols;
		p->own = k * flen;
	}
	zn_zero_part(p->n, W, r, &p->lo, &p->len);
	p->part = (p->n + (uint64_t)W - 1) / (uint64_t)W;
}

uint64_t zn_zero_pieces_own(uint64_t rows, uint64_t cols, uint64_t R, int W, int r)
{
	const uint64_t tiles = R ? ZN_DIV_ROUND_UP(rows, R) : 1;
	struct zn_zero_piece p;
	zn_zero_piece_of(rows, cols, R, W, r, tiles - 1, &p);
	return p.own + p.len;
}

uint64_t zn_zero_tile_rows(const struct zn_zero_rules *z, const struct zn_param_desc *d)
{
	if (!z->tile_size || d->ndim != 2 || d->numel <= z->tile_size)
		return 0;
	const uint64_t rows = (uint64_t)d->shape[0], cols = (uint64_t)d->shape[1];
	const uint64_t most = ZN_MAX(z->tile_size / cols, 1); /* rows a tile may hold */
	const uint64_t tiles = ZN_DIV_ROUND_UP(rows, most);
	return tiles > 1 ? ZN_DIV_ROUND_UP(rows, tiles) : 0;
}

uint64_t zn_zero_tiles(const struct zn_zero_rules *z, const struct zn_param_desc *d)
{
	const uint64_t R = zn_zero_tile_rows(z, d);
	return R ? ZN_DIV_ROUND_UP((uint64_t)d->shape[0], R) : 1;
}

void zn_zero_tile(const struct zn_zero_rules *z, const struct zn_param_desc *d, uint64_t k,
		  uint64_t *first, uint64_t *n)
{
	const uint64_t R = zn_zero_tile_rows(z, d);
	if (!R) {
		*first = 0;
		*n = d->numel;
		return;
	}
	const uint64_t cols = (uint64_t)d->shape[1], rows = (uint64_t)d->shape[0];
	const uint64_t r0 = ZN_MIN(k * R, rows);
	*first = r0 * cols;
	*n = (ZN_MIN(r0 + R, rows) - r0) * cols;
}

uint64_t zn_zero_unit(const struct zn_param_desc *d, const struct zn_zero_share *s)
{
	return s->tiled ? s->tile_rows * (uint64_t)d->shape[1] : d->numel;
}

/* Bytes of an array of this rank's part in dtype dt (at least one element). */
static uint64_t part_bytes(uint64_t nown, enum zn_dtype dt)
{
	return ZN_MAX(nown, 1) * zn_dtype_size(dt);
}

void zn_zero_arrays_of(const struct zn_zero_rules *z, const struct zn_param_desc *d,
		       const struct zn_zero_share *s, struct zn_zero_arrays *a)
{
	const uint64_t numel = d->numel, unit = zn_zero_unit(d, s);
	const uint64_t whole = numel * zn_dtype_size(ZN_DTYPE_F32);
	const uint64_t fp32 = part_bytes(s->nown, ZN_DTYPE_F32);
	a->dparam = s->resident ? whole : 0;
	a->dgrad = s->dev_grads ? whole : 0;
	/* On the device a tile at a time when the model takes it so. */
	const uint64_t on_device = d->tileable ? unit : numel;
	const uint64_t fetched = on_device * zn_dtype_size(z->dev16 ? z->dtype : ZN_DTYPE_F32);
	a->fparam = s->resident ? 0 : fetched;
	a->fgrad = s->dev_grads ? 0 : fetched;
	/* A tiled tied embedding folds a tile at a time, its fold then leaving
	 * the device (zn_zero_fold). */
	a->ffold = z->dev16 && !s->resident ? (d->tileable ? unit * 4 : whole) : 0;
	a->dpart = !s->resident && !z->offload_param ? fp32 : 0;
	a->dstate = z->device_opt ? fp32 : 0;
	a->hstate = z->nvme_opt ? 0 : fp32;
	a->nvme_grad = z->grads_nvme && !s->dev_grads;
	a->hgrad = z->host_grads && !a->nvme_grad ? part_bytes(s->nown, z->gdt) : 0;
	a->staged = z->overlap && s->resident ? fp32 : 0;
	a->home = !s->resident && z->offload_param ? part_bytes(s->nown, z->hdt) : 0;
}

void zn_zero_count(const struct zn_zero_rules *z, uint64_t numel, const struct zn_zero_share *s,
		   struct zn_rank_memory *m)
{
	m->params += s->resident ? 4 * numel : s->nown * zn_dtype_size(z->hdt);
	m->grads += (s->dev_grads ? 4 * numel : 0) +
		    (z->host_grads ? s->nown * zn_dtype_size(z->gdt) : 0);
	m->optimizer += ZN_ZERO_STATES * s->nown * 4;
}

int zn_zero_rank_memory(const struct zn_config *cfg, int world, int rank,
			struct zn_rank_memory *out)
{
	struct zn_arch arch;
	if (world < 1 || rank < 0 || rank >= world)
		return zn_error(-EINVAL, "rank %d of %d ranks: ranks are 0 .. world - 1, world >= 1",
				rank, world);
	int rc = zn_arch_from_config(cfg, &arch);
	if (rc)
		return rc;
	struct zn_zero_rules zr;
	zn_zero_rules_init(&zr, cfg, rank, world);
	memset(out, 0, sizeof(*out));
	out->rank = rank;
	out->world = world;
	out->stage = zr.stage;
	for (unsigned l = 0; l < zn_arch_layers(&arch); l++) {
		struct zn_param_desc d[ZN_ARCH_LAYER_TENSORS_MAX];
		unsigned n = zn_arch_layer_params(&arch, l, d);
		for (unsigned i = 0; i < n; i++) {
			const struct zn_zero_share sh = zn_zero_share_of(&zr, &d[i]);
			zn_zero_count(&zr, d[i].numel, &sh, out);
		}
	}
	return 0;
}

enum zn_tier zn_zero_home(const struct zn_zero_rules *z, struct zn_zero_homes *h, uint64_t nown,
			  const char *name)
{
	if (!z->nvme_homes || h->host_elems + nown <= z->max_in_cpu) {
		h->host_elems += nown;
		return ZN_TIER_HOST;
	}
	/* The swap store gives every extent whole 4 KiB blocks (O_DIRECT). */
	h->nvme_bytes += ZN_ALIGN_UP(part_bytes(nown, z->hdt), 4096);
	if (nown > h->nvme_largest) {
		h->nvme_largest = nown;
		h->nvme_largest_name = name;
	}
	return ZN_TIER_NVME;
}

bool zn_zero_has_folds(const struct zn_param_desc *d, const struct zn_zero_share *s)
{
	return s->tiled && d->tileable && d->tied;
}

unsigned zn_zero_fold_parts(const struct zn_zero_rules *z, const struct zn_zero_homes *h,
			    uint64_t n_full)
{
	if (!z->nvme_homes)
		return 1;
	const uint64_t esz = zn_dtype_size(z->hdt);
	/* fp32 elements a buffer holds */
	const uint64_t fits = ZN_MAX((h->nvme_largest ? h->nvme_largest : n_full) * esz / 4, 1);
	return (unsigned)ZN_MAX(ZN_DIV_ROUND_UP(n_full, fits), 1);
}

enum zn_tier zn_zero_fold(const struct zn_zero_rules *z, struct zn_zero_homes *h, uint64_t n,
			  unsigned parts, const char *name)
{
	for (unsigned j = 0; j < parts; j++) {
		uint64_t lo, len;
		zn_zero_part(n, (int)parts, (int)j, &lo, &len);
		const uint64_t bytes = ZN_MAX(len, 1) * 4;
		if (!z->nvme_homes) {
			h->host_fold_bytes += bytes;
			continue;
		}
		h->nvme_bytes += ZN_ALIGN_UP(bytes, 4096);
		/* The buffers hold the largest home or fold part, in homes'
		 * elements. */
		const uint64_t as_homes = ZN_DIV_ROUND_UP(bytes, zn_dtype_size(z->hdt));
		if (as_homes > h->nvme_largest) {
			h->nvme_largest = as_homes;
			h->nvme_largest_name = name;
		}
	}
	return z->nvme_homes ? ZN_TIER_NVME : ZN_TIER_HOST;
}

int zn_zero_homes_pool(const struct zn_zero_rules *z, const struct zn_offload_param_config *pc,
		       const struct zn_zero_homes *h, struct zn_bufpool_config *out)
{
	return zn_offload_param_pool(pc, h->nvme_largest,
				     h->nvme_largest_name ? h->nvme_largest_name : "",
				     zn_dtype_size(z->hdt), 1, out);
}

uint64_t zn_zero_sub_group(const struct zn_zero_rules *z, uint64_t own)
{
	own = ZN_MAX(own, 1);
	/* DeepSpeed's 0 gives each parameter a sub-group of its own; zinc's
	 * sub-groups are runs of elements, so the nearest is runs of the
	 * largest tensor's size. */
	const uint64_t sg = z->sub_group_size ? z->sub_group_size : z->largest;
	return !sg || sg > own ? own : sg;
}

void zn_zero_optswap_config(const struct zn_zero_rules *z,
			    const struct zn_offload_optimizer_config *oc, uint64_t own,
			    struct zn_optswap_config *out)
{
	*out = (struct zn_optswap_config){
		.params = ZN_MAX(own, 1), .sub_group_size = zn_zero_sub_group(z, own),
		.nstates = ZN_ZERO_STATES, .buffer_count = oc->buffer_count,
		.pipeline_read = oc->pipeline_read, .pipeline_write = oc->pipeline_write,
		.pin_memory = oc->pin_memory,
		.grad_bytes = z->grads_nvme ? (unsigned)zn_dtype_size(z->gdt) : 0,
	};
}
