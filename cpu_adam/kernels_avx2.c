/* The optimizers with AVX2 + F16C (+ FMA for the gradient norm): 8 fp32
 * lanes.
 *
 * Compiled with -mavx2 -mfma -mf16c and -ffp-contract=off
 * (cpu_adam/meson.build); only called after the CPU and the OS were found
 * to support them (adam.c).  Each loop does, lane by lane, exactly the
 * operations of kernels_scalar.c in the same order — read that file for the
 * algorithms and their sources — so the results are bit-identical.
 * bf16 is vectorized here too (DeepSpeed's AVX2 build falls back to its
 * scalar loop for bf16).  A tail shorter than a vector is copied into
 * zero-padded buffers on the stack, run through the same vector code and
 * copied back, so no memory outside [i0, i0 + n) is touched.
 */
#include "kernels_dispatch.h"

#include <immintrin.h>
#include <string.h>

#define W 8

AI __m256 load_g(const void *g, int gt)
{
	if (gt == ZN_DTYPE_F16)
		return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)g));
	if (gt == ZN_DTYPE_BF16)
		return _mm256_castsi256_ps(_mm256_slli_epi32(
			_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)g)), 16));
	return _mm256_loadu_ps((const float *)g);
}

/* fp32 -> bf16, round to nearest even, NaN -> 0x7fc0 (common/zn_half.h). */
AI __m128i to_bf16(__m256 x)
{
	__m256i b = _mm256_castps_si256(x);
	__m256i lsb = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
	__m256i r = _mm256_srli_epi32(_mm256_add_epi32(b, _mm256_add_epi32(lsb,
				      _mm256_set1_epi32(0x7fff))), 16);
	__m256i nan = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
	r = _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7fc0), nan);
	/* 32 -> 16 bits: packus works per 128-bit lane, giving quadwords
	 * (r0-3, r0-3 | r4-7, r4-7); gather quadwords 0 and 2. */
	__m256i packed = _mm256_packus_epi32(r, r);
	return _mm256_castsi256_si128(_mm256_permute4x64_epi64(packed, 0x08));
}

AI __m128i to_half(__m256 x, int dt)
{
	if (dt == ZN_DTYPE_BF16)
		return to_bf16(x);
	return _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

/* The copy is written, never read: streaming stores (when it is 16-byte
 * aligned) save the read for ownership, 2 of 30 bytes per element. */
AI void store_copy(void *copy, int ct, __m256 p, bool nt)
{
	if (ct == NOCOPY)
		return;
	if (nt)
		_mm_stream_si128((__m128i *)copy, to_half(p, ct));
	else
		_mm_storeu_si128((__m128i *)copy, to_half(p, ct));
}

AI size_t gsize(int gt)
{
	return gt == ZN_DTYPE_F32 ? 4 : 2;
}

struct consts {
	__m256 scale, b1, omb1, b2, omb2, eps, step, bc2, decay, l2;
	bool use_l2, use_decay, eps_inside, has_momentum, first, nesterov;
};

AI struct consts broadcast(const struct zn_optim_args *a)
{
	return (struct consts){
		.scale = _mm256_set1_ps(a->scale), .b1 = _mm256_set1_ps(a->b1),
		.omb1 = _mm256_set1_ps(a->omb1),   .b2 = _mm256_set1_ps(a->b2),
		.omb2 = _mm256_set1_ps(a->omb2),   .eps = _mm256_set1_ps(a->eps),
		.step = _mm256_set1_ps(a->step_size), .bc2 = _mm256_set1_ps(a->bc2_rsqrt),
		.decay = _mm256_set1_ps(a->decay), .l2 = _mm256_set1_ps(a->l2),
		.use_l2 = a->use_l2, .use_decay = a->use_decay, .eps_inside = a->eps_inside,
		.has_momentum = a->has_momentum, .first = a->first, .nesterov = a->nesterov,
	};
}

/* One vector of 8 elements at the given pointers (copy: NULL or 8 u16). */
typedef void vec_fn(const struct consts *c, float *p, const void *g, float *m, float *v,
		    void *copy, int gt, int ct, bool nt);

AI void adam_vec(const struct consts *c, float *pp, const void *gp, float *mp, float *vp,
		 void *cp, int gt, int ct, bool nt)
{
	__m256 p = _mm256_loadu_ps(pp), m = _mm256_loadu_ps(mp), v = _mm256_loadu_ps(vp);
	__m256 g = _mm256_mul_ps(load_g(gp, gt), c->scale);
	if (c->use_l2)
		g = _mm256_add_ps(g, _mm256_mul_ps(c->l2, p));
	m = _mm256_add_ps(_mm256_mul_ps(c->b1, m), _mm256_mul_ps(c->omb1, g));
	v = _mm256_add_ps(_mm256_mul_ps(c->b2, v), _mm256_mul_ps(c->omb2, _mm256_mul_ps(g, g)));
	__m256 den = _mm256_add_ps(_mm256_mul_ps(_mm256_sqrt_ps(v), c->bc2), c->eps);
	if (c->use_decay)
		p = _mm256_mul_ps(p, c->decay);
	p = _mm256_add_ps(p, _mm256_mul_ps(c->step, _mm256_div_ps(m, den)));
	_mm256_storeu_ps(pp, p);
	_mm256_storeu_ps(mp, m);
	_mm256_storeu_ps(vp, v);
	store_copy(cp, ct, p, nt);
}

AI void adagrad_vec(const struct consts *c, float *pp, const void *gp, float *mp, float *vp,
		    void *cp, int gt, int ct, bool nt)
{
	(void)mp;
	__m256 p = _mm256_loadu_ps(pp), s = _mm256_loadu_ps(vp);
	__m256 g = _mm256_mul_ps(load_g(gp, gt), c->scale);
	if (c->use_l2)
		g = _mm256_add_ps(g, _mm256_mul_ps(c->l2, p));
	s = _mm256_add_ps(s, _mm256_mul_ps(g, g));
	__m256 den = _mm256_add_ps(_mm256_sqrt_ps(s), c->eps);
	p = _mm256_add_ps(p, _mm256_mul_ps(c->step, _mm256_div_ps(g, den)));
	_mm256_storeu_ps(pp, p);
	_mm256_storeu_ps(vp, s);
	store_copy(cp, ct, p, nt);
}

AI void lion_vec(const struct consts *c, float *pp, const void *gp, float *mp, float *vp,
		 void *cp, int gt, int ct, bool nt)
{
	(void)vp;
	const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
	__m256 p = _mm256_loadu_ps(pp), m = _mm256_loadu_ps(mp);
	__m256 g = _mm256_mul_ps(load_g(gp, gt), c->scale);
	__m256 u = _mm256_add_ps(_mm256_mul_ps(c->b1, m), _mm256_mul_ps(c->omb1, g));
	/* torch.sign: (u > 0) - (u < 0), ordered compares so NaN gives 0 */
	__m256 sgn = _mm256_sub_ps(_mm256_and_ps(_mm256_cmp_ps(u, zero, _CMP_GT_OQ), one),
				   _mm256_and_ps(_mm256_cmp_ps(u, zero, _CMP_LT_OQ), one));
	if (c->use_decay)
		p = _mm256_mul_ps(p, c->decay);
	p = _mm256_add_ps(p, _mm256_mul_ps(c->step, sgn));
	m = _mm256_add_ps(_mm256_mul_ps(c->b2, m), _mm256_mul_ps(c->omb2, g));
	_mm256_storeu_ps(pp, p);
	_mm256_storeu_ps(mp, m);
	store_copy(cp, ct, p, nt);
}

AI void sgd_vec(const struct consts *c, float *pp, const void *gp, float *mp, float *vp,
		void *cp, int gt, int ct, bool nt)
{
	(void)vp;
	__m256 p = _mm256_loadu_ps(pp);
	__m256 d = _mm256_mul_ps(load_g(gp, gt), c->scale);
	if (c->use_l2)
		d = _mm256_add_ps(d, _mm256_mul_ps(c->l2, p));
	if (c->has_momentum) {
		__m256 b = c->first ? d
				    : _mm256_add_ps(_mm256_mul_ps(c->b1, _mm256_loadu_ps(mp)),
						    _mm256_mul_ps(c->omb1, d));
		_mm256_storeu_ps(mp, b);
		d = c->nesterov ? _mm256_add_ps(d, _mm256_mul_ps(c->b1, b)) : b;
	}
	p = _mm256_add_ps(p, _mm256_mul_ps(c->step, d));
	_mm256_storeu_ps(pp, p);
	store_copy(cp, ct, p, nt);
}

AI __m256 lamb_u(const struct consts *c, __m256 p, __m256 m, __m256 v)
{
	__m256 den = c->eps_inside ? _mm256_sqrt_ps(_mm256_add_ps(v, c->eps))
				   : _mm256_add_ps(_mm256_sqrt_ps(v), c->eps);
	__m256 u = _mm256_div_ps(m, den);
	if (c->use_l2)
		u = _mm256_add_ps(u, _mm256_mul_ps(c->l2, p));
	return u;
}

/* Lamb's second pass (the gradient is not read). */
AI void lamb2_vec(const struct consts *c, float *pp, const void *gp, float *mp, float *vp,
		  void *cp, int gt, int ct, bool nt)
{
	(void)gp;
	(void)gt;
	__m256 p = _mm256_loadu_ps(pp);
	p = _mm256_add_ps(p, _mm256_mul_ps(c->step, lamb_u(c, p, _mm256_loadu_ps(mp),
							    _mm256_loadu_ps(vp))));
	_mm256_storeu_ps(pp, p);
	store_copy(cp, ct, p, nt);
}

/* The loop over [i0, i0 + n): whole vectors in place, then the tail
 * through zero-padded stack buffers.  has_g false: no gradient (Lamb's
 * second pass), which may be NULL. */
AI void run_loop_g(const struct zn_optim_args *a, size_t i0, size_t n, int gt, int ct,
		   vec_fn *vec, bool has_m, bool has_v, bool has_g)
{
	const struct consts c = broadcast(a);
	const char *g = a->g;
	uint16_t *copy = a->copy;
	size_t gs = gsize(gt), i = i0, end = i0 + n;
	const bool nt = ct != NOCOPY && ((uintptr_t)(copy + i0) & 15) == 0;
	for (; i + W <= end; i += W)
		vec(&c, a->p + i, has_g ? g + i * gs : NULL, has_m ? a->m + i : NULL,
		    has_v ? a->v + i : NULL, ct != NOCOPY ? copy + i : NULL, gt, ct, nt);
	if (nt) /* streaming stores are weakly ordered: visible before the tile is "done" */
		_mm_sfence();
	if (i < end) {
		size_t r = end - i;
		float p[W] = { 0 }, m[W] = { 0 }, v[W] = { 0 }, gb[W] = { 0 };
		uint16_t cb[W];
		memcpy(p, a->p + i, r * sizeof(float));
		if (has_g)
			memcpy(gb, g + i * gs, r * gs);
		if (has_m)
			memcpy(m, a->m + i, r * sizeof(float));
		if (has_v)
			memcpy(v, a->v + i, r * sizeof(float));
		vec(&c, p, gb, m, v, cb, gt, ct, false);
		memcpy(a->p + i, p, r * sizeof(float));
		if (has_m)
			memcpy(a->m + i, m, r * sizeof(float));
		if (has_v)
			memcpy(a->v + i, v, r * sizeof(float));
		if (ct != NOCOPY)
			memcpy(copy + i, cb, r * sizeof(uint16_t));
	}
}

AI void run_loop(const struct zn_optim_args *a, size_t i0, size_t n, int gt, int ct, vec_fn *vec,
		 bool has_m, bool has_v)
{
	run_loop_g(a, i0, n, gt, ct, vec, has_m, has_v, true);
}

AI void adam_loop(const struct zn_optim_args *a, size_t i0, size_t n, int gt, int ct)
{
	run_loop(a, i0, n, gt, ct, adam_vec, true, true);
}

AI void adagrad_loop(const struct zn_optim_args *a, size_t i0, size_t n, int gt, int ct)
{
	run_loop(a, i0, n, gt, ct, adagrad_vec, false, true);
}

AI void lion_loop(const struct zn_optim_args *a, size_t i0, size_t n, int gt, int ct)
{
	run_loop(a, i0, n, gt, ct, lion_vec, true, false);
}

AI void sgd_loop(const struct zn_optim_args *a, size_t i0, size_t n, int gt, int ct)
{
	run_loop(a, i0, n, gt, ct, sgd_vec, a->has_momentum, false);
}

AI void lamb2_loop(const struct zn_optim_args *a, size_t i0, size_t n, int gt, int ct)
{
	run_loop_g(a, i0, n, gt, ct, lamb2_vec, true, true, false);
}

/* Squares into lanes [4q, 4q + 4) and [4q + 4, 4q + 8) of a norm sum
 * (q = 0 or 2: the first or second 8 of a block of 16), the scalar
 * path's lanes: element i of the tile in lane i mod 16. */
AI void lane_acc(__m256 x, __m256d *lo, __m256d *hi)
{
	__m256d l = _mm256_cvtps_pd(_mm256_castps256_ps128(x));
	__m256d h = _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1));
	*lo = _mm256_add_pd(*lo, _mm256_mul_pd(l, l));
	*hi = _mm256_add_pd(*hi, _mm256_mul_pd(h, h));
}

/* Lamb's first pass over 8 elements; w, u: this 8's four lanes each. */
AI void lamb1_vec(const struct consts *c, float *pp, const char *gp, float *mp, float *vp, int gt,
		  __m256d *w, __m256d *u)
{
	__m256 p = _mm256_loadu_ps(pp), m = _mm256_loadu_ps(mp), v = _mm256_loadu_ps(vp);
	__m256 g = _mm256_mul_ps(load_g(gp, gt), c->scale);
	m = _mm256_add_ps(_mm256_mul_ps(c->b1, m), _mm256_mul_ps(c->omb1, g));
	v = _mm256_add_ps(_mm256_mul_ps(c->b2, v), _mm256_mul_ps(c->omb2, _mm256_mul_ps(g, g)));
	__m256 x = lamb_u(c, p, m, v);
	_mm256_storeu_ps(mp, m);
	_mm256_storeu_ps(vp, v);
	lane_acc(p, &w[0], &w[1]);
	lane_acc(x, &u[0], &u[1]);
}

/* Blocks of 16 (two vectors, lanes 0-7 and 8-15), the last one through
 * zero-padded buffers: zeros give u = 0 and add nothing. */
AI void lamb1_loop(const struct zn_optim_args *a, size_t i0, size_t n, int gt, double sums[2])
{
	const struct consts c = broadcast(a);
	const char *g = a->g;
	const size_t gs = gsize(gt);
	__m256d w[4], u[4];
	for (int q = 0; q < 4; q++)
		w[q] = u[q] = _mm256_setzero_pd();
	size_t i = i0, end = i0 + n;
	for (; i + 2 * W <= end; i += 2 * W) {
		lamb1_vec(&c, a->p + i, g + i * gs, a->m + i, a->v + i, gt, &w[0], &u[0]);
		lamb1_vec(&c, a->p + i + W, g + (i + W) * gs, a->m + i + W, a->v + i + W, gt,
			  &w[2], &u[2]);
	}
	if (i < end) {
		size_t r = end - i;
		float p[2 * W] = { 0 }, m[2 * W] = { 0 }, v[2 * W] = { 0 }, gb[2 * W] = { 0 };
		memcpy(p, a->p + i, r * sizeof(float));
		memcpy(m, a->m + i, r * sizeof(float));
		memcpy(v, a->v + i, r * sizeof(float));
		memcpy(gb, g + i * gs, r * gs);
		lamb1_vec(&c, p, (const char *)gb, m, v, gt, &w[0], &u[0]);
		lamb1_vec(&c, p + W, (const char *)gb + W * gs, m + W, v + W, gt, &w[2], &u[2]);
		memcpy(a->m + i, m, r * sizeof(float));
		memcpy(a->v + i, v, r * sizeof(float));
	}
	double lw[ZN_LAMB_LANES], lu[ZN_LAMB_LANES];
	for (int q = 0; q < 4; q++) {
		_mm256_storeu_pd(lw + 4 * q, w[q]);
		_mm256_storeu_pd(lu + 4 * q, u[q]);
	}
	sums[0] = sums[1] = 0.0;
	for (int l = 0; l < ZN_LAMB_LANES; l++) { /* lane order, as the scalar path */
		sums[0] += lw[l];
		sums[1] += lu[l];
	}
}

static void adam(const struct zn_optim_args *a, size_t i0, size_t n)
{
	DISPATCH(adam_loop);
}

static void sgd(const struct zn_optim_args *a, size_t i0, size_t n)
{
	DISPATCH(sgd_loop);
}

static void lamb_moments(const struct zn_optim_args *a, size_t i0, size_t n, double sums[2])
{
	DISPATCH_GT(lamb1_loop, sums);
}

static void lamb_apply(const struct zn_optim_args *a, size_t i0, size_t n)
{
	DISPATCH(lamb2_loop);
}

static void adagrad(const struct zn_optim_args *a, size_t i0, size_t n)
{
	DISPATCH(adagrad_loop);
}

static void lion(const struct zn_optim_args *a, size_t i0, size_t n)
{
	DISPATCH(lion_loop);
}

/* ---- gradient check, conversions, benchmark streams ---------------------- */

AI __m256d sq_acc(__m256 x, __m256d acc_lo, __m256d *acc_hi)
{
	/* fp32 -> fp64 is exact and so is the square: FMA or not, the
	 * result is the same. */
	__m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(x));
	__m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1));
	*acc_hi = _mm256_fmadd_pd(hi, hi, *acc_hi);
	return _mm256_fmadd_pd(lo, lo, acc_lo);
}

AI double sumsq_loop(const void *gv, int gt, size_t n)
{
	const char *g = gv;
	size_t gs = gsize(gt), i = 0;
	__m256d a0 = _mm256_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
	for (; i + 2 * W <= n; i += 2 * W) {
		a0 = sq_acc(load_g(g + i * gs, gt), a0, &a1);
		a2 = sq_acc(load_g(g + (i + W) * gs, gt), a2, &a3);
	}
	for (; i + W <= n; i += W)
		a0 = sq_acc(load_g(g + i * gs, gt), a0, &a1);
	if (i < n) {
		float gb[W] = { 0 };
		memcpy(gb, g + i * gs, (n - i) * gs);
		a0 = sq_acc(load_g(gb, gt), a0, &a1);
	}
	__m256d s = _mm256_add_pd(_mm256_add_pd(a0, a1), _mm256_add_pd(a2, a3));
	__m128d h = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd(s, 1));
	return _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
}

static double sumsq(const void *g, enum zn_dtype gt, size_t n)
{
	return DISPATCH_G(sumsq_loop, g, gt, n);
}

static void from_f32(const float *src, void *dst, enum zn_dtype dt, size_t n)
{
	uint16_t *d = dst;
	size_t i = 0;
	for (; i + W <= n; i += W)
		_mm_storeu_si128((__m128i *)(d + i), to_half(_mm256_loadu_ps(src + i), (int)dt));
	if (i < n) {
		float b[W] = { 0 };
		uint16_t o[W];
		memcpy(b, src + i, (n - i) * sizeof(float));
		_mm_storeu_si128((__m128i *)o, to_half(_mm256_loadu_ps(b), (int)dt));
		memcpy(d + i, o, (n - i) * sizeof(uint16_t));
	}
}

static void to_f32(const void *src, enum zn_dtype st, float *dst, size_t n)
{
	const char *s = src;
	size_t gs = gsize((int)st), i = 0;
	for (; i + W <= n; i += W)
		_mm256_storeu_ps(dst + i, st == ZN_DTYPE_F16   ? load_g(s + i * gs, ZN_DTYPE_F16)
					  : st == ZN_DTYPE_BF16 ? load_g(s + i * gs, ZN_DTYPE_BF16)
							       : load_g(s + i * gs, ZN_DTYPE_F32));
	if (i < n) {
		float b[W] = { 0 }, o[W];
		memcpy(b, s + i * gs, (n - i) * gs);
		_mm256_storeu_ps(o, load_g(b, (int)st));
		memcpy(dst + i, o, (n - i) * sizeof(float));
	}
}

static void stream7(float *p, const float *g, float *m, float *v, size_t n)
{
	const __m256 half = _mm256_set1_ps(0.5f), lr = _mm256_set1_ps(1e-3f);
	size_t i = 0;
	for (; i + W <= n; i += W) {
		__m256 gi = _mm256_loadu_ps(g + i);
		__m256 mi = _mm256_mul_ps(half, _mm256_add_ps(_mm256_loadu_ps(m + i), gi));
		__m256 vi = _mm256_mul_ps(half, _mm256_add_ps(_mm256_loadu_ps(v + i),
							      _mm256_mul_ps(gi, gi)));
		_mm256_storeu_ps(m + i, mi);
		_mm256_storeu_ps(v + i, vi);
		_mm256_storeu_ps(p + i, _mm256_sub_ps(_mm256_loadu_ps(p + i), _mm256_mul_ps(lr, mi)));
	}
	for (; i < n; i++) {
		float mi = 0.5f * (m[i] + g[i]);
		float vi = 0.5f * (v[i] + g[i] * g[i]);
		m[i] = mi;
		v[i] = vi;
		p[i] = p[i] - 1e-3f * mi;
	}
}

static void triad(float *a, const float *b, const float *c, float s, size_t n)
{
	const __m256 sv = _mm256_set1_ps(s);
	size_t i = 0;
	for (; i + W <= n; i += W)
		_mm256_storeu_ps(a + i, _mm256_add_ps(_mm256_loadu_ps(b + i),
						      _mm256_mul_ps(sv, _mm256_loadu_ps(c + i))));
	for (; i < n; i++)
		a[i] = b[i] + s * c[i];
}

const struct zn_optim_isa zn_optim_avx2 = {
	.name = "avx2",
	.adam = adam,
	.adagrad = adagrad,
	.lion = lion,
	.sgd = sgd,
	.lamb_moments = lamb_moments,
	.lamb_apply = lamb_apply,
	.sumsq = sumsq,
	.from_f32 = from_f32,
	.to_f32 = to_f32,
	.stream7 = stream7,
	.triad = triad,
};
