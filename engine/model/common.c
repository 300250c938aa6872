/* What the models share (see common.h): activation memory, activation
 * checkpointing, the lifecycle around them, the storage-dtype check and the
 * counter-based initialisation. */
#include "zn_common.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/common.h"

/* ---- activation memory ------------------------------------------------------- */

/* counting mode's stand-in for an allocation: never dereferenced */
static char dummy;

static bool grow(void ***arr, size_t *cap, size_t n)
{
	if (n < *cap)
		return true;
	size_t c = *cap ? 2 * *cap : 64;
	void **p = realloc(*arr, c * sizeof(void *));
	if (!p)
		return false;
	*arr = p;
	*cap = c;
	return true;
}

void *zn_acts_dev(struct zn_acts *a, size_t bytes)
{
	if (a->err)
		return NULL;
	if (a->counting) {
		a->count_dev += ZN_ALIGN_UP((uint64_t)bytes, a->align ? a->align : 1);
		return &dummy;
	}
	if (!grow(&a->ptrs, &a->cap, a->nptrs)) {
		a->err = zn_error(-ENOMEM, "out of memory for the activation list");
		return NULL;
	}
	void *p = a->mem.alloc(a->mem.user, bytes);
	if (!p) {
		a->err = -ENOMEM;
		return NULL;
	}
	a->ptrs[a->nptrs++] = p;
	a->bytes += bytes;
	return p;
}

void *zn_acts_host(struct zn_acts *a, size_t bytes)
{
	if (a->err)
		return NULL;
	if (a->counting) {
		a->count_host += bytes;
		return &dummy;
	}
	if (!grow(&a->hptrs, &a->hcap, a->nhptrs)) {
		a->err = zn_error(-ENOMEM, "out of memory for the activation list");
		return NULL;
	}
	void *p = a->mem.host_alloc(a->mem.user, bytes);
	if (!p) {
		a->err = -ENOMEM;
		return NULL;
	}
	a->hptrs[a->nhptrs++] = p;
	return p;
}

void zn_acts_free(struct zn_acts *a)
{
	for (size_t i = 0; i < a->nptrs; i++)
		a->mem.free(a->mem.user, a->ptrs[i]);
	for (size_t i = 0; i < a->nhptrs; i++)
		a->mem.host_free(a->mem.user, a->hptrs[i]);
	free(a->ptrs);
	free(a->hptrs);
	a->ptrs = a->hptrs = NULL;
	a->nptrs = a->nhptrs = a->cap = a->hcap = 0;
}

/* ---- the lifecycle ------------------------------------------------------------ */

void *zn_model_calloc(size_t size)
{
	void *m = calloc(1, size);
	if (!m)
		zn_set_error("out of memory");
	return m;
}

int zn_model_alloc(const struct zn_model_kind *kind, void *m, struct zn_acts *a,
		   bool offload, enum zn_dtype act_dtype, const struct zn_kctx *ctx,
		   const struct zn_model_mem *mem, int B, int T)
{
	if (offload && (!mem->host_alloc || !mem->to_host ||
			(kind->offload_to_device && !mem->to_device)))
		return zn_error(-EINVAL, "%s", kind->offload_error);
	ZN_TRY(zn_model_check_storage(kind->name, act_dtype, ctx));
	a->mem = *mem;
	int rc = kind->alloc_all(m, a);
	if (rc) {
		char sz[32];
		zn_set_error("%s activations for batch %d x %d: %s (%s allocated so far); lower "
			     "the micro-batch size or sequence length%s",
			     kind->name, B, T, zn_last_error(),
			     zn_format_size(a->bytes, sz, sizeof(sz)), kind->alloc_advice);
	}
	return rc;
}

int zn_model_count(const struct zn_model_kind *kind, void *m, struct zn_acts *a, size_t align,
		   uint64_t *device_bytes, uint64_t *host_bytes)
{
	a->counting = true;
	a->align = align ? align : 1;
	ZN_TRY(kind->alloc_all(m, a));
	if (device_bytes)
		*device_bytes = a->count_dev;
	if (host_bytes)
		*host_bytes = a->count_host;
	return 0;
}

void zn_model_free(void *m, struct zn_acts *a, struct zn_actckpt *ck, void *la)
{
	zn_acts_free(a);
	zn_actckpt_free(ck);
	free(la);
	free(m);
}

/* ---- activation checkpointing ------------------------------------------------- */

int zn_actckpt_alloc(struct zn_actckpt *c, struct zn_acts *a, const struct zn_model_mem *mem,
		     int L, size_t in_bytes, bool recompute, bool offload, bool profile)
{
	memset(c, 0, sizeof(*c));
	c->recompute = recompute;
	c->offload = offload;
	c->profile = profile;
	c->L = L;
	c->in_bytes = in_bytes;
	c->mem = mem;
	c->kept = calloc((size_t)L, sizeof(void *));
	if (!c->kept)
		return a->err = zn_error(-ENOMEM, "out of memory");
	for (int l = 0; l < L; l++)
		c->kept[l] = offload ? zn_acts_host(a, in_bytes) : zn_acts_dev(a, in_bytes);
	if (offload) {
		c->rin[0] = zn_acts_dev(a, in_bytes);
		c->rin[1] = zn_acts_dev(a, in_bytes);
	}
	return a->err;
}

void zn_actckpt_free(struct zn_actckpt *c)
{
	free(c->kept);
	c->kept = NULL;
}

void *zn_actckpt_input(struct zn_actckpt *c, int l)
{
	return c->offload ? c->rin[l % 2] : c->kept[l];
}

void *zn_actckpt_output(struct zn_actckpt *c, int l, void *last)
{
	return l + 1 < c->L ? zn_actckpt_input(c, l + 1) : last;
}

uint64_t zn_actckpt_prof_start(struct zn_actckpt *c)
{
	if (!c->profile)
		return 0;
	if (c->mem->sync)
		c->mem->sync(c->mem->user);
	return zn_now_ns();
}

void zn_actckpt_prof_end(struct zn_actckpt *c, int which, uint64_t t0)
{
	if (!c->profile)
		return;
	if (c->mem->sync)
		c->mem->sync(c->mem->user);
	c->prof_ns[which] += zn_now_ns() - t0;
}

int zn_actckpt_keep(struct zn_actckpt *c, int l)
{
	if (!c->offload)
		return 0;
	uint64_t t0 = zn_actckpt_prof_start(c);
	int rc = c->mem->to_host(c->mem->user, c->kept[l], c->rin[l % 2], c->in_bytes);
	zn_actckpt_prof_end(c, 1, t0);
	return rc;
}

int zn_actckpt_restore(struct zn_actckpt *c, int l)
{
	if (!c->offload)
		return 0;
	uint64_t t0 = zn_actckpt_prof_start(c);
	int rc = c->mem->to_device(c->mem->user, c->rin[l % 2], c->kept[l], c->in_bytes);
	zn_actckpt_prof_end(c, 2, t0);
	return rc;
}

void zn_actckpt_profile_take(struct zn_actckpt *c, struct zn_model_profile *out)
{
	out->recompute_s = (double)c->prof_ns[0] / 1e9;
	out->keep_s = (double)c->prof_ns[1] / 1e9;
	out->restore_s = (double)c->prof_ns[2] / 1e9;
	memset(c->prof_ns, 0, sizeof(c->prof_ns));
}

/* ---- initialisation ------------------------------------------------------------ */

/* splitmix64: a counter-based stream, so tensor k's values do not depend on
 * which other tensors were initialised before it. */
static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Element e of the tensor is the cosine (e even) or sine (e odd) of pair
 * e / 2, whose two uniforms are the stream's draws 2 (e / 2) + 1 and
 * 2 (e / 2) + 2: splitmix64 adds a constant to its state per draw, so
 * draw k's state is the start plus k times it -- any range begins where
 * it is without drawing what comes before. */
void zn_model_normal(uint64_t seed, uint64_t index, float std, uint64_t off, float *out,
		     size_t n)
{
	const uint64_t gamma = 0x9e3779b97f4a7c15ull;
	uint64_t s = seed * 0x2545f4914f6cdd1dull + index * gamma + (off / 2) * 2 * gamma;
	/* Box-Muller, in double, two normals per pair of uniforms; an odd
	 * `off` starts with its pair's sine. */
	for (size_t i = 0, e = off; i < n; e += 2) {
		double u1 = ((double)(splitmix(&s) >> 11) + 1.0) / 9007199254740993.0;
		double u2 = (double)(splitmix(&s) >> 11) / 9007199254740992.0;
		double r = sqrt(-2.0 * log(u1)) * std;
		if (e % 2 == 0)
			out[i++] = (float)(r * cos(2 * M_PI * u2));
		else
			e--; /* the pair's cosine lies before the range */
		if (i < n)
			out[i++] = (float)(r * sin(2 * M_PI * u2));
	}
}

void zn_model_init_range(const struct zn_param_desc *d, uint64_t seed, uint64_t index,
			 uint64_t off, uint64_t n, float *out)
{
	if (d->init_std == 0) {
		for (uint64_t i = 0; i < n; i++)
			out[i] = d->init_value;
		return;
	}
	zn_model_normal(seed, index, d->init_std, off, out, n);
}

int zn_model_check_storage(const char *model, enum zn_dtype act_dtype,
			   const struct zn_kctx *ctx)
{
	if (!zn_dtype_is_float(act_dtype))
		return zn_error(-EINVAL, "%s: activation dtype %d: fp32, fp16 or bf16", model,
				(int)act_dtype);
	if (ctx && zn_kernels_ctx_dtype(ctx) != act_dtype)
		return zn_error(-EINVAL, "%s: the kernels' context stores %s, the model was "
				"configured for %s", model, zn_dtype_name(zn_kernels_ctx_dtype(ctx)),
				zn_dtype_name(act_dtype));
	return 0;
}
