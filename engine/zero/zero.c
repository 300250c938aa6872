/* ZeRO's rules (see zero.h): the partition of every tensor over the ranks,
 * which tensors stay on the device, where gradients accumulate, and the
 * bytes each of these costs. */
#include "zn_common.h"

#include "zero/zero.h"

void zn_zero_rules_init(struct zn_zero_rules *z, const struct zn_config *cfg, int rank, int world)
{
	const struct zn_zero_config *zc = &cfg->zero_optimization;
	z->rank = rank;
	z->world = world;
	z->stage = zc->stage;
	z->parts = z->stage >= 1 ? (uint64_t)world : 1;
	z->threshold = zc->param_persistence_threshold;
	z->offload_param = zc->offload_param.device != ZN_OFFLOAD_NONE;
	z->device_opt = zc->offload_optimizer.device == ZN_OFFLOAD_NONE;
	z->partition_params = z->offload_param || (z->stage == 3 && world > 1);
	z->host_grads = !z->device_opt || world > 1;
	z->dtype = cfg->fp16.enabled ? ZN_DTYPE_F16 : cfg->bf16.enabled ? ZN_DTYPE_BF16
									: ZN_DTYPE_F32;
	z->gdt = cfg->data_types.grad_accum_dtype == ZN_GRAD_ACCUM_BF16   ? ZN_DTYPE_BF16
		 : cfg->data_types.grad_accum_dtype == ZN_GRAD_ACCUM_FP16 ? ZN_DTYPE_F16
									  : ZN_DTYPE_F32;
	z->hdt = z->offload_param ? z->dtype : ZN_DTYPE_F32;
}

void zn_zero_part(uint64_t n, int W, int r, uint64_t *lo, uint64_t *len)
{
	uint64_t part = (n + (uint64_t)W - 1) / (uint64_t)W;
	*lo = ZN_MIN(part * (uint64_t)r, n);
	*len = ZN_MIN(part, n - *lo);
}

struct zn_zero_share zn_zero_share_of(const struct zn_zero_rules *z, uint64_t numel)
{
	struct zn_zero_share s;
	zn_zero_part(numel, (int)z->parts, z->parts > 1 ? z->rank : 0, &s.lo, &s.nown);
	s.part = (numel + z->parts - 1) / z->parts;
	s.resident = !z->partition_params || numel < z->threshold;
	s.dev_grads = s.resident && (z->world == 1 || z->stage <= 1);
	return s;
}

void zn_zero_count(const struct zn_zero_rules *z, uint64_t numel, const struct zn_zero_share *s,
		   struct zn_rank_memory *m)
{
	m->params += s->resident ? 4 * numel : s->nown * zn_dtype_size(z->hdt);
	m->grads += (s->dev_grads ? 4 * numel : 0) +
		    (z->host_grads ? s->nown * zn_dtype_size(z->gdt) : 0);
	m->optimizer += 3 * s->nown * 4;
}
