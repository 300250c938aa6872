/* The optimizers with AVX-512 (AVX512F + BW + VL): 16 fp32 lanes.
 *
 * Compiled with -mavx512f -mavx512bw -mavx512vl and -ffp-contract=off
 * (cpu_adam/meson.build); only called after the CPU and the OS were found
 * to support them (adam.c).  Each loop does, lane by lane, exactly the
 * operations of kernels_scalar.c in the same order — read that file for the
 * algorithms and their sources — so the results are bit-identical.  Tails
 * use masked loads and stores (BW + VL for the 16-bit ones), so no memory
 * outside [i0, i0 + n) is touched.
 *
 * Params, m and v are written with ordinary stores: the next step reads
 * them back, and they were just read, so their lines are already owned (no
 * read for ownership to save).  The write-only fp16/bf16 copy is written
 * with streaming stores when 32-byte aligned: that saves its read for
 * ownership (2 of 30 bytes per element; the adam-bench ratio went from
 * ~0.90 to ~1.0 with fp16 grads and a bf16 copy), followed by an sfence
 * before the tile counts as done.
 */
#include "kernels_dispatch.h"

#include <immintrin.h>

AI __m512 ld_ps(const float *p, __mmask16 k, bool masked)
{
	return masked ? _mm512_maskz_loadu_ps(k, p) : _mm512_loadu_ps(p);
}

AI void st_ps(float *p, __m512 x, __mmask16 k, bool masked)
{
	if (masked)
		_mm512_mask_storeu_ps(p, k, x);
	else
		_mm512_storeu_ps(p, x);
}

AI __m256i ld_u16(const uint16_t *p, __mmask16 k, bool masked)
{
	return masked ? _mm256_maskz_loadu_epi16(k, p) : _mm256_loadu_si256((const __m256i *)p);
}

AI void st_u16(uint16_t *p, __m256i x, __mmask16 k, bool masked)
{
	if (masked)
		_mm256_mask_storeu_epi16(p, k, x);
	else
		_mm256_storeu_si256((__m256i *)p, x);
}

/* fp16/bf16 -> fp32, both exact. */
AI __m512 load_g(const void *g, int gt, size_t i, __mmask16 k, bool masked)
{
	if (gt == ZN_DTYPE_F16)
		return _mm512_cvtph_ps(ld_u16((const uint16_t *)g + i, k, masked));
	if (gt == ZN_DTYPE_BF16)
		return _mm512_castsi512_ps(_mm512_slli_epi32(
			_mm512_cvtepu16_epi32(ld_u16((const uint16_t *)g + i, k, masked)), 16));
	return ld_ps((const float *)g + i, k, masked);
}

/* fp32 -> bf16, round to nearest even, NaN -> 0x7fc0 (common/zn_half.h). */
AI __m256i to_bf16(__m512 x)
{
	__m512i b = _mm512_castps_si512(x);
	__m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
	__m512i r = _mm512_srli_epi32(_mm512_add_epi32(b, _mm512_add_epi32(lsb,
				      _mm512_set1_epi32(0x7fff))), 16);
	__mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
	r = _mm512_mask_mov_epi32(r, nan, _mm512_set1_epi32(0x7fc0));
	return _mm512_cvtepi32_epi16(r);
}

AI __m256i to_half(__m512 x, int dt)
{
	if (dt == ZN_DTYPE_BF16)
		return to_bf16(x);
	return _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

AI void store_copy(const struct zn_optim_args *a, int ct, size_t i, __m512 p, __mmask16 k,
		   bool masked, bool nt)
{
	if (ct == NOCOPY)
		return;
	if (nt && !masked)
		_mm256_stream_si256((__m256i *)((uint16_t *)a->copy + i), to_half(p, ct));
	else
		st_u16((uint16_t *)a->copy + i, to_half(p, ct), k, masked);
}

/* The copy is written, never read: streaming stores save the read for
 * ownership (2 of 30 bytes per element) when it is 32-byte aligned. */
AI bool copy_nt(const struct zn_optim_args *a, int ct, size_t i0)
{
	return ct != NOCOPY && ((uintptr_t)((uint16_t *)a->copy + i0) & 31) == 0;
}

struct consts {
	__m512 scale, b1, omb1, b2, omb2, eps, step, bc2, decay, l2;
};

AI struct consts broadcast(const struct zn_optim_args *a)
{
	return (struct consts){
		.scale = _mm512_set1_ps(a->scale), .b1 = _mm512_set1_ps(a->b1),
		.omb1 = _mm512_set1_ps(a->omb1),   .b2 = _mm512_set1_ps(a->b2),
		.omb2 = _mm512_set1_ps(a->omb2),   .eps = _mm512_set1_ps(a->eps),
		.step = _mm512_set1_ps(a->step_size), .bc2 = _mm512_set1_ps(a->bc2_rsqrt),
		.decay = _mm512_set1_ps(a->decay), .l2 = _mm512_set1_ps(a->l2),
	};
}

/* ---- Adam ---------------------------------------------------------------- */

AI void adam_vec(const struct zn_optim_args *a, const struct consts *c, size_t i, int gt, int ct,
		 __mmask16 k, bool masked, bool nt)
{
	__m512 p = ld_ps(a->p + i, k, masked);
	__m512 m = ld_ps(a->m + i, k, masked);
	__m512 v = ld_ps(a->v + i, k, masked);
	__m512 g = _mm512_mul_ps(load_g(a->g, gt, i, k, masked), c->scale);
	if (a->use_l2)
		g = _mm512_add_ps(g, _mm512_mul_ps(c->l2, p));
	m = _mm512_add_ps(_mm512_mul_ps(c->b1, m), _mm512_mul_ps(c->omb1, g));
	v = _mm512_add_ps(_mm512_mul_ps(c->b2, v), _mm512_mul_ps(c->omb2, _mm512_mul_ps(g, g)));
	__m512 den = _mm512_add_ps(_mm512_mul_ps(_mm512_sqrt_ps(v), c->bc2), c->eps);
	if (a->use_decay)
		p = _mm512_mul_ps(p, c->decay);
	p = _mm512_add_ps(p, _mm512_mul_ps(c->step, _mm512_div_ps(m, den)));
	st_ps(a->p + i, p, k, masked);
	st_ps(a->m + i, m, k, masked);
	st_ps(a->v + i, v, k, masked);
	store_copy(a, ct, i, p, k, masked, nt);
}

AI void adam_loop(const struct zn_optim_args *a, size_t i0, size_t n, int gt, int ct)
{
	const struct consts c = broadcast(a);
	const bool nt = copy_nt(a, ct, i0);
	size_t i = i0, end = i0 + n;
	for (; i + 16 <= end; i += 16)
		adam_vec(a, &c, i, gt, ct, 0xffff, false, nt);
	if (i < end)
		adam_vec(a, &c, i, gt, ct, (__mmask16)((1u << (end - i)) - 1), true, nt);
	if (nt) /* streaming stores are weakly ordered: visible before the tile is "done" */
		_mm_sfence();
}

static void adam(const struct zn_optim_args *a, size_t i0, size_t n)
{
	DISPATCH(adam_loop);
}

/* ---- Adagrad ------------------------------------------------------------- */

AI void adagrad_vec(const struct zn_optim_args *a, const struct consts *c, size_t i, int gt,
		    int ct, __mmask16 k, bool masked, bool nt)
{
	__m512 p = ld_ps(a->p + i, k, masked);
	__m512 s = ld_ps(a->v + i, k, masked);
	__m512 g = _mm512_mul_ps(load_g(a->g, gt, i, k, masked), c->scale);
	if (a->use_l2)
		g = _mm512_add_ps(g, _mm512_mul_ps(c->l2, p));
	s = _mm512_add_ps(s, _mm512_mul_ps(g, g));
	__m512 den = _mm512_add_ps(_mm512_sqrt_ps(s), c->eps);
	p = _mm512_add_ps(p, _mm512_mul_ps(c->step, _mm512_div_ps(g, den)));
	st_ps(a->p + i, p, k, masked);
	st_ps(a->v + i, s, k, masked);
	store_copy(a, ct, i, p, k, masked, nt);
}

AI void adagrad_loop(const struct zn_optim_args *a, size_t i0, size_t n, int gt, int ct)
{
	const struct consts c = broadcast(a);
	const bool nt = copy_nt(a, ct, i0);
	size_t i = i0, end = i0 + n;
	for (; i + 16 <= end; i += 16)
		adagrad_vec(a, &c, i, gt, ct, 0xffff, false, nt);
	if (i < end)
		adagrad_vec(a, &c, i, gt, ct, (__mmask16)((1u << (end - i)) - 1), true, nt);
	if (nt) /* streaming stores are weakly ordered: visible before the tile is "done" */
		_mm_sfence();
}

static void adagrad(const struct zn_optim_args *a, size_t i0, size_t n)
{
	DISPATCH(adagrad_loop);
}

/* ---- Lion ---------------------------------------------------------------- */

AI void lion_vec(const struct zn_optim_args *a, const struct consts *c, size_t i, int gt, int ct,
		 __mmask16 k, bool masked, bool nt)
{
	const __m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
	__m512 p = ld_ps(a->p + i, k, masked);
	__m512 m = ld_ps(a->m + i, k, masked);
	__m512 g = _mm512_mul_ps(load_g(a->g, gt, i, k, masked), c->scale);
	__m512 u = _mm512_add_ps(_mm512_mul_ps(c->b1, m), _mm512_mul_ps(c->omb1, g));
	/* torch.sign: (u > 0) - (u < 0), ordered compares so NaN gives 0 */
	__m512 sgn = _mm512_sub_ps(_mm512_maskz_mov_ps(_mm512_cmp_ps_mask(u, zero, _CMP_GT_OQ), one),
				   _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(u, zero, _CMP_LT_OQ), one));
	if (a->use_decay)
		p = _mm512_mul_ps(p, c->decay);
	p = _mm512_add_ps(p, _mm512_mul_ps(c->step, sgn));
	m = _mm512_add_ps(_mm512_mul_ps(c->b2, m), _mm512_mul_ps(c->omb2, g));
	st_ps(a->p + i, p, k, masked);
	st_ps(a->m + i, m, k, masked);
	store_copy(a, ct, i, p, k, masked, nt);
}

AI void lion_loop(const struct zn_optim_args *a, size_t i0, size_t n, int gt, int ct)
{
	const struct consts c = broadcast(a);
	const bool nt = copy_nt(a, ct, i0);
	size_t i = i0, end = i0 + n;
	for (; i + 16 <= end; i += 16)
		lion_vec(a, &c, i, gt, ct, 0xffff, false, nt);
	if (i < end)
		lion_vec(a, &c, i, gt, ct, (__mmask16)((1u << (end - i)) - 1), true, nt);
	if (nt) /* streaming stores are weakly ordered: visible before the tile is "done" */
		_mm_sfence();
}

static void lion(const struct zn_optim_args *a, size_t i0, size_t n)
{
	DISPATCH(lion_loop);
}

/* ---- SGD ----------------------------------------------------------------- */

AI void sgd_vec(const struct zn_optim_args *a, const struct consts *c, size_t i, int gt, int ct,
		__mmask16 k, bool masked, bool nt)
{
	__m512 p = ld_ps(a->p + i, k, masked);
	__m512 d = _mm512_mul_ps(load_g(a->g, gt, i, k, masked), c->scale);
	if (a->use_l2)
		d = _mm512_add_ps(d, _mm512_mul_ps(c->l2, p));
	if (a->has_momentum) {
		__m512 b = a->first ? d
				    : _mm512_add_ps(_mm512_mul_ps(c->b1, ld_ps(a->m + i, k, masked)),
						    _mm512_mul_ps(c->omb1, d));
		st_ps(a->m + i, b, k, masked);
		d = a->nesterov ? _mm512_add_ps(d, _mm512_mul_ps(c->b1, b)) : b;
	}
	p = _mm512_add_ps(p, _mm512_mul_ps(c->step, d));
	st_ps(a->p + i, p, k, masked);
	store_copy(a, ct, i, p, k, masked, nt);
}

AI void sgd_loop(const struct zn_optim_args *a, size_t i0, size_t n, int gt, int ct)
{
	const struct consts c = broadcast(a);
	const bool nt = copy_nt(a, ct, i0);
	size_t i = i0, end = i0 + n;
	for (; i + 16 <= end; i += 16)
		sgd_vec(a, &c, i, gt, ct, 0xffff, false, nt);
	if (i < end)
		sgd_vec(a, &c, i, gt, ct, (__mmask16)((1u << (end - i)) - 1), true, nt);
	if (nt)
		_mm_sfence();
}

static void sgd(const struct zn_optim_args *a, size_t i0, size_t n)
{
	DISPATCH(sgd_loop);
}

/* ---- Lamb ---------------------------------------------------------------- */

AI __m512 lamb_u(const struct zn_optim_args *a, const struct consts *c, __m512 p, __m512 m,
		 __m512 v)
{
	__m512 den = a->eps_inside ? _mm512_sqrt_ps(_mm512_add_ps(v, c->eps))
				   : _mm512_add_ps(_mm512_sqrt_ps(v), c->eps);
	__m512 u = _mm512_div_ps(m, den);
	if (a->use_l2)
		u = _mm512_add_ps(u, _mm512_mul_ps(c->l2, p));
	return u;
}

/* Squares into lanes 0-7 (lo) and 8-15 (hi) of a norm sum: the scalar
 * path's lanes, element i of the tile in lane i mod 16. */
AI void lane_acc(__m512 x, __m512d *lo, __m512d *hi)
{
	__m512d l = _mm512_cvtps_pd(_mm512_castps512_ps256(x));
	__m512d h = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
	*lo = _mm512_add_pd(*lo, _mm512_mul_pd(l, l));
	*hi = _mm512_add_pd(*hi, _mm512_mul_pd(h, h));
}

AI void lamb1_vec(const struct zn_optim_args *a, const struct consts *c, size_t i, int gt,
		  __mmask16 k, bool masked, __m512d acc[4])
{
	/* Masked lanes load as 0 and add 0 to their sums. */
	__m512 p = ld_ps(a->p + i, k, masked);
	__m512 m = ld_ps(a->m + i, k, masked);
	__m512 v = ld_ps(a->v + i, k, masked);
	__m512 g = _mm512_mul_ps(load_g(a->g, gt, i, k, masked), c->scale);
	m = _mm512_add_ps(_mm512_mul_ps(c->b1, m), _mm512_mul_ps(c->omb1, g));
	v = _mm512_add_ps(_mm512_mul_ps(c->b2, v), _mm512_mul_ps(c->omb2, _mm512_mul_ps(g, g)));
	__m512 u = lamb_u(a, c, p, m, v);
	st_ps(a->m + i, m, k, masked);
	st_ps(a->v + i, v, k, masked);
	lane_acc(p, &acc[0], &acc[1]);
	lane_acc(u, &acc[2], &acc[3]);
}

AI void lamb1_loop(const struct zn_optim_args *a, size_t i0, size_t n, int gt, double sums[2])
{
	const struct consts c = broadcast(a);
	__m512d acc[4] = { _mm512_setzero_pd(), _mm512_setzero_pd(), _mm512_setzero_pd(),
			   _mm512_setzero_pd() };
	size_t i = i0, end = i0 + n;
	for (; i + 16 <= end; i += 16)
		lamb1_vec(a, &c, i, gt, 0xffff, false, acc);
	if (i < end)
		lamb1_vec(a, &c, i, gt, (__mmask16)((1u << (end - i)) - 1), true, acc);
	double lanes[4][8];
	for (int q = 0; q < 4; q++)
		_mm512_storeu_pd(lanes[q], acc[q]);
	sums[0] = sums[1] = 0.0;
	for (int l = 0; l < ZN_LAMB_LANES; l++) { /* lane order, as the scalar path */
		sums[0] += lanes[l / 8][l % 8];
		sums[1] += lanes[2 + l / 8][l % 8];
	}
}

static void lamb_moments(const struct zn_optim_args *a, size_t i0, size_t n, double sums[2])
{
	DISPATCH_GT(lamb1_loop, sums);
}

AI void lamb2_vec(const struct zn_optim_args *a, const struct consts *c, size_t i, int ct,
		  __mmask16 k, bool masked, bool nt)
{
	__m512 p = ld_ps(a->p + i, k, masked);
	__m512 u = lamb_u(a, c, p, ld_ps(a->m + i, k, masked), ld_ps(a->v + i, k, masked));
	p = _mm512_add_ps(p, _mm512_mul_ps(c->step, u));
	st_ps(a->p + i, p, k, masked);
	store_copy(a, ct, i, p, k, masked, nt);
}

AI void lamb2_loop(const struct zn_optim_args *a, size_t i0, size_t n, int gt, int ct)
{
	(void)gt; /* the gradient is not read */
	const struct consts c = broadcast(a);
	const bool nt = copy_nt(a, ct, i0);
	size_t i = i0, end = i0 + n;
	for (; i + 16 <= end; i += 16)
		lamb2_vec(a, &c, i, ct, 0xffff, false, nt);
	if (i < end)
		lamb2_vec(a, &c, i, ct, (__mmask16)((1u << (end - i)) - 1), true, nt);
	if (nt)
		_mm_sfence();
}

static void lamb_apply(const struct zn_optim_args *a, size_t i0, size_t n)
{
	DISPATCH(lamb2_loop);
}

/* ---- gradient check, conversions, benchmark streams ---------------------- */

AI __m512d sq_acc(__m512 x, __m512d acc_lo, __m512d *acc_hi)
{
	/* fp32 -> fp64 is exact and so is the square: FMA or not, the
	 * result is the same. */
	__m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(x));
	__m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
	*acc_hi = _mm512_fmadd_pd(hi, hi, *acc_hi);
	return _mm512_fmadd_pd(lo, lo, acc_lo);
}

AI double sumsq_loop(const void *g, int gt, size_t n)
{
	__m512d a0 = _mm512_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
	size_t i = 0;
	for (; i + 32 <= n; i += 32) {
		a0 = sq_acc(load_g(g, gt, i, 0xffff, false), a0, &a1);
		a2 = sq_acc(load_g(g, gt, i + 16, 0xffff, false), a2, &a3);
	}
	for (; i < n; i += 16) {
		size_t r = n - i < 16 ? n - i : 16;
		a0 = sq_acc(load_g(g, gt, i, (__mmask16)((1u << r) - 1), true), a0, &a1);
	}
	return _mm512_reduce_add_pd(_mm512_add_pd(_mm512_add_pd(a0, a1), _mm512_add_pd(a2, a3)));
}

static double sumsq(const void *g, enum zn_dtype gt, size_t n)
{
	return DISPATCH_G(sumsq_loop, g, gt, n);
}

static void from_f32(const float *src, void *dst, enum zn_dtype dt, size_t n)
{
	uint16_t *d = dst;
	for (size_t i = 0; i < n; i += 16) {
		bool masked = n - i < 16;
		__mmask16 k = masked ? (__mmask16)((1u << (n - i)) - 1) : 0xffff;
		__m512 x = ld_ps(src + i, k, masked);
		st_u16(d + i, dt == ZN_DTYPE_BF16 ? to_bf16(x) : to_half(x, ZN_DTYPE_F16), k, masked);
	}
}

static void to_f32(const void *src, enum zn_dtype st, float *dst, size_t n)
{
	for (size_t i = 0; i < n; i += 16) {
		bool masked = n - i < 16;
		__mmask16 k = masked ? (__mmask16)((1u << (n - i)) - 1) : 0xffff;
		__m512 x = st == ZN_DTYPE_F16   ? load_g(src, ZN_DTYPE_F16, i, k, masked)
			   : st == ZN_DTYPE_BF16 ? load_g(src, ZN_DTYPE_BF16, i, k, masked)
						: load_g(src, ZN_DTYPE_F32, i, k, masked);
		st_ps(dst + i, x, k, masked);
	}
}

AI void stream7_vec(float *p, const float *g, float *m, float *v, size_t i, __mmask16 k,
		    bool masked)
{
	const __m512 half = _mm512_set1_ps(0.5f), lr = _mm512_set1_ps(1e-3f);
	__m512 gi = ld_ps(g + i, k, masked);
	__m512 mi = _mm512_mul_ps(half, _mm512_add_ps(ld_ps(m + i, k, masked), gi));
	__m512 vi = _mm512_mul_ps(half, _mm512_add_ps(ld_ps(v + i, k, masked), _mm512_mul_ps(gi, gi)));
	st_ps(m + i, mi, k, masked);
	st_ps(v + i, vi, k, masked);
	st_ps(p + i, _mm512_sub_ps(ld_ps(p + i, k, masked), _mm512_mul_ps(lr, mi)), k, masked);
}

static void stream7(float *p, const float *g, float *m, float *v, size_t n)
{
	size_t i = 0;
	for (; i + 16 <= n; i += 16)
		stream7_vec(p, g, m, v, i, 0xffff, false);
	if (i < n)
		stream7_vec(p, g, m, v, i, (__mmask16)((1u << (n - i)) - 1), true);
}

static void triad(float *a, const float *b, const float *c, float s, size_t n)
{
	const __m512 sv = _mm512_set1_ps(s);
	size_t i = 0;
	for (; i + 16 <= n; i += 16)
		_mm512_storeu_ps(a + i, _mm512_add_ps(_mm512_loadu_ps(b + i),
						      _mm512_mul_ps(sv, _mm512_loadu_ps(c + i))));
	if (i < n) {
		__mmask16 k = (__mmask16)((1u << (n - i)) - 1);
		_mm512_mask_storeu_ps(a + i, k, _mm512_add_ps(_mm512_maskz_loadu_ps(k, b + i),
							      _mm512_mul_ps(sv, _mm512_maskz_loadu_ps(k, c + i))));
	}
}

const struct zn_optim_isa zn_optim_avx512 = {
	.name = "avx512",
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
