/* Inner loops of the cpu kernels (see vec.h), compiled once per vector
 * path: ZN_KVEC_NAME names the table this build defines.
 *
 * How the loops are kept vectorizable:
 *   - exp is computed here (exp_f below, Cephes' expf: range reduction
 *     by ln 2 and a degree-6 polynomial, ~2 ulp), not by libm, so that a
 *     loop calling it is straight-line code;
 *   - float sums and maxima go through LANES independent accumulators
 *     combined in a fixed tree: the compiler vectorizes that without
 *     reassociating anything, and every vector width adds in the same
 *     order, so the baseline and AVX2 builds agree to the bit;
 *   - conditions are written as selects (a ? b : c on values).
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "zn_half.h"
#include "vec.h"

#ifndef ZN_KVEC_NAME
#error "build vec.c with -DZN_KVEC_NAME=zn_kvec_<path>"
#endif

#define LANES 16

/* ---- scalar building blocks (inlined into the loops) ------------------------ */

static inline uint32_t f2u(float f)
{
	uint32_t u;
	memcpy(&u, &f, sizeof(u));
	return u;
}

static inline float u2f(uint32_t u)
{
	float f;
	memcpy(&f, &u, sizeof(f));
	return f;
}

/* e^x.  x = n ln2 + r with n = round(x / ln2) (the 1.5 * 2^23 trick rounds
 * to nearest in one add and leaves n in the low mantissa bits) and
 * |r| <= ln2 / 2 (ln 2 split in two constants so n * ln2 stays exact);
 * e^r from Cephes' expf polynomial; 2^n built in the exponent field.
 * Inputs below ln(FLT_MIN) give 0 (no subnormal results), above 88 give
 * e^88 (only softmax, x <= 0, and tanh, which saturates, call this);
 * NaN gives NaN. */
static inline float exp_f(float x)
{
	const float lo = -87.33654475f; /* ln(FLT_MIN): 2^n stays normal */
	const float hi = 88.0f;
	float xc = x < lo ? lo : x;
	xc = xc > hi ? hi : xc;
	float t = xc * 1.44269504088896341f + 12582912.0f;
	float n = t - 12582912.0f;
	int32_t ni = (int32_t)(f2u(t) - 0x4b400000u);
	float r = xc - n * 0.693359375f;
	r = r - n * -2.12194440e-4f;
	float p = 1.9875691500e-4f;
	p = p * r + 1.3981999507e-3f;
	p = p * r + 8.3334519073e-3f;
	p = p * r + 4.1665795894e-2f;
	p = p * r + 1.6666665459e-1f;
	p = p * r + 5.0000001201e-1f;
	p = p * (r * r) + r + 1.0f;
	float y = p * u2f((uint32_t)(ni + 127) << 23);
	return x < lo ? 0.0f : y;
}

/* tanh(u) = 1 - 2 / (e^{2u} + 1): saturates to +-1 without overflow;
 * absolute error ~1e-7 (relative error grows near 0, where GELU
 * multiplies it by x and adds 1, so only the absolute error matters). */
static inline float tanh_f(float u)
{
	return 1.0f - 2.0f / (exp_f(2.0f * u) + 1.0f);
}

#define GELU_S 0.7978845608028654f /* sqrt(2 / pi) */
#define GELU_K 0.044715f

static inline float sum_lanes(const float *s)
{
	/* a fixed pairwise tree: 16 -> 8 -> 4 -> 2 -> 1 */
	float a[8];
	for (int j = 0; j < 8; j++)
		a[j] = s[j] + s[j + 8];
	for (int j = 0; j < 4; j++)
		a[j] = a[j] + a[j + 4];
	return (a[0] + a[2]) + (a[1] + a[3]);
}

static inline double sum_lanes_d(const double *s)
{
	double a[4];
	for (int j = 0; j < 4; j++)
		a[j] = s[j] + s[j + 4];
	return (a[0] + a[2]) + (a[1] + a[3]);
}

/* ---- elementwise -------------------------------------------------------------- */

static void add(float *out, const float *a, const float *b, size_t n)
{
	/* out may equal a or b: every element is read before it is written,
	 * and `restrict` is not promised for the inputs */
	for (size_t i = 0; i < n; i++)
		out[i] = a[i] + b[i];
}

static void acc(float *out, const float *restrict a, size_t n)
{
	for (size_t i = 0; i < n; i++)
		out[i] += a[i];
}

static void gelu_fwd(float *out, const float *x, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		float v = x[i];
		float u = GELU_S * (v + GELU_K * v * v * v);
		out[i] = 0.5f * v * (1.0f + tanh_f(u));
	}
}

static void gelu_bwd(float *dx, const float *x, const float *dy, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		float v = x[i];
		float u = GELU_S * (v + GELU_K * v * v * v);
		float th = tanh_f(u);
		float sech2 = 1.0f - th * th; /* 1 / cosh^2 */
		float g = 0.5f * (1.0f + th) +
			  0.5f * v * sech2 * GELU_S * (1.0f + 3.0f * GELU_K * v * v);
		dx[i] += g * dy[i];
	}
}

/* ---- layernorm ---------------------------------------------------------------- */

static float row_sum(const float *x, size_t n)
{
	float s[LANES] = { 0 };
	size_t i = 0;
	for (; i + LANES <= n; i += LANES)
		for (int j = 0; j < LANES; j++)
			s[j] += x[i + j];
	for (int j = 0; i < n; i++, j++)
		s[j] += x[i];
	return sum_lanes(s);
}

static void ln_fwd(float *restrict out, float *mean, float *rstd, const float *restrict x,
		   const float *restrict w, const float *restrict b, size_t C)
{
	/* two passes, as llm.c: the mean, then the biased variance around it */
	float m = row_sum(x, C) / (float)C;
	float s[LANES] = { 0 };
	size_t i = 0;
	for (; i + LANES <= C; i += LANES)
		for (int j = 0; j < LANES; j++) {
			float d = x[i + j] - m;
			s[j] += d * d;
		}
	for (int j = 0; i < C; i++, j++) {
		float d = x[i] - m;
		s[j] += d * d;
	}
	float r = 1.0f / sqrtf(sum_lanes(s) / (float)C + ZN_LN_EPS);
	for (i = 0; i < C; i++)
		out[i] = (x[i] - m) * r * w[i] + b[i];
	*mean = m;
	*rstd = r;
}

static void ln_bwd(float *restrict dx, const float *restrict dy, const float *restrict x,
		   const float *restrict w, float mean, float rstd, size_t C)
{
	/* with norm = (x - mean) * rstd and dnorm = w * dy:
	 * dx = rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm)) */
	float s1[LANES] = { 0 }, s2[LANES] = { 0 };
	size_t i = 0;
	for (; i + LANES <= C; i += LANES)
		for (int j = 0; j < LANES; j++) {
			float norm = (x[i + j] - mean) * rstd;
			float dn = w[i + j] * dy[i + j];
			s1[j] += dn;
			s2[j] += dn * norm;
		}
	for (int j = 0; i < C; i++, j++) {
		float norm = (x[i] - mean) * rstd;
		float dn = w[i] * dy[i];
		s1[j] += dn;
		s2[j] += dn * norm;
	}
	float a = sum_lanes(s1) / (float)C, b = sum_lanes(s2) / (float)C;
	for (i = 0; i < C; i++) {
		float norm = (x[i] - mean) * rstd;
		float dn = w[i] * dy[i];
		dx[i] += (dn - a - norm * b) * rstd;
	}
}

static void ln_bwd_wb(float *restrict dw, float *restrict db, const float *restrict dy,
		      const float *restrict x, float mean, float rstd, size_t n)
{
	if (dw)
		for (size_t i = 0; i < n; i++)
			dw[i] += dy[i] * ((x[i] - mean) * rstd);
	if (db)
		for (size_t i = 0; i < n; i++)
			db[i] += dy[i];
}

/* ---- RMSNorm (Llama's LlamaRMSNorm) ---------------------------------------------- */

static void rms_fwd(float *restrict out, float *rstd, const float *restrict x,
		    const float *restrict w, float eps, size_t C)
{
	/* variance = mean(x^2); x * rsqrt(variance + eps), then * weight, in
	 * transformers' order */
	float s[LANES] = { 0 };
	size_t i = 0;
	for (; i + LANES <= C; i += LANES)
		for (int j = 0; j < LANES; j++)
			s[j] += x[i + j] * x[i + j];
	for (int j = 0; i < C; i++, j++)
		s[j] += x[i] * x[i];
	float r = 1.0f / sqrtf(sum_lanes(s) / (float)C + eps);
	for (i = 0; i < C; i++)
		out[i] = (x[i] * r) * w[i];
	*rstd = r;
}

static void rms_bwd(float *restrict dx, const float *restrict dy, const float *restrict x,
		    const float *restrict w, float rstd, size_t C)
{
	/* with norm = x * rstd and dnorm = w * dy:
	 * dx = rstd * (dnorm - norm * mean(dnorm * norm))
	 * (layernorm's without the mean terms: d rstd / dx = -rstd^3 x / C) */
	float s[LANES] = { 0 };
	size_t i = 0;
	for (; i + LANES <= C; i += LANES)
		for (int j = 0; j < LANES; j++)
			s[j] += (w[i + j] * dy[i + j]) * (x[i + j] * rstd);
	for (int j = 0; i < C; i++, j++)
		s[j] += (w[i] * dy[i]) * (x[i] * rstd);
	float b = sum_lanes(s) / (float)C;
	for (i = 0; i < C; i++)
		dx[i] += (w[i] * dy[i] - (x[i] * rstd) * b) * rstd;
}

static void rms_bwd_w(float *restrict dw, const float *restrict dy, const float *restrict x,
		      float rstd, size_t n)
{
	for (size_t i = 0; i < n; i++)
		dw[i] += dy[i] * (x[i] * rstd);
}

/* ---- rotary embedding -------------------------------------------------------------- */

/* x1 = x[i], x2 = x[i + half]: (x1, x2) -> (x1 c - x2 s, x2 c + x1 s).
 * out may equal x: each pair is read before it is written. */
static void rope_fwd(float *out, const float *x, const float *restrict cs,
		     const float *restrict sn, size_t half)
{
	for (size_t i = 0; i < half; i++) {
		float x1 = x[i], x2 = x[i + half], c = cs[i], s = sn[i];
		out[i] = x1 * c - x2 * s;
		out[i + half] = x2 * c + x1 * s;
	}
}

/* The transpose: (d1, d2) -> (d1 c + d2 s, d2 c - d1 s), added. */
static void rope_bwd(float *restrict dx, const float *restrict dy, const float *restrict cs,
		     const float *restrict sn, size_t half)
{
	for (size_t i = 0; i < half; i++) {
		float d1 = dy[i], d2 = dy[i + half], c = cs[i], s = sn[i];
		dx[i] += d1 * c + d2 * s;
		dx[i + half] += d2 * c - d1 * s;
	}
}

/* ---- SwiGLU ------------------------------------------------------------------------- */

/* sigmoid(g) = 1 / (1 + e^-g); for g < -88 exp_f saturates and the
 * result is a tiny positive number instead of a smaller one. */
static void swiglu_fwd(float *out, const float *g, const float *u, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		float x = g[i], s = 1.0f / (1.0f + exp_f(-x));
		out[i] = (x * s) * u[i];
	}
}

static void swiglu_bwd(float *dg, float *du, const float *restrict dy, const float *restrict g,
		       const float *restrict u, size_t n)
{
	/* silu'(x) = s (1 + x (1 - s)) */
	if (dg)
		for (size_t i = 0; i < n; i++) {
			float x = g[i], s = 1.0f / (1.0f + exp_f(-x));
			dg[i] += dy[i] * u[i] * (s * (1.0f + x * (1.0f - s)));
		}
	if (du)
		for (size_t i = 0; i < n; i++) {
			float x = g[i], s = 1.0f / (1.0f + exp_f(-x));
			du[i] += dy[i] * (x * s);
		}
}

/* ---- softmax ------------------------------------------------------------------- */

static float row_max(const float *x, size_t n)
{
	float m[LANES];
	for (int j = 0; j < LANES; j++)
		m[j] = -INFINITY;
	size_t i = 0;
	for (; i + LANES <= n; i += LANES)
		for (int j = 0; j < LANES; j++)
			m[j] = x[i + j] > m[j] ? x[i + j] : m[j];
	for (int j = 0; i < n; i++, j++)
		m[j] = x[i] > m[j] ? x[i] : m[j];
	for (int k = LANES / 2; k > 0; k /= 2)
		for (int j = 0; j < k; j++)
			m[j] = m[j + k] > m[j] ? m[j + k] : m[j];
	return m[0];
}

/* p = exp(p - m) in place; returns the sum. */
static float exp_sum_inplace(float *p, float m, size_t n)
{
	float s[LANES] = { 0 };
	size_t i = 0;
	for (; i + LANES <= n; i += LANES)
		for (int j = 0; j < LANES; j++) {
			float e = exp_f(p[i + j] - m);
			p[i + j] = e;
			s[j] += e;
		}
	for (int j = 0; i < n; i++, j++) {
		float e = exp_f(p[i] - m);
		p[i] = e;
		s[j] += e;
	}
	return sum_lanes(s);
}

/* The same from x into a distinct p; p == NULL only sums. */
static float exp_sum_to(float *restrict p, const float *restrict x, float m, size_t n)
{
	float s[LANES] = { 0 };
	size_t i = 0;
	if (!p) {
		for (; i + LANES <= n; i += LANES)
			for (int j = 0; j < LANES; j++)
				s[j] += exp_f(x[i + j] - m);
		for (int j = 0; i < n; i++, j++)
			s[j] += exp_f(x[i] - m);
		return sum_lanes(s);
	}
	for (; i + LANES <= n; i += LANES)
		for (int j = 0; j < LANES; j++) {
			float e = exp_f(x[i + j] - m);
			p[i + j] = e;
			s[j] += e;
		}
	for (int j = 0; i < n; i++, j++) {
		float e = exp_f(x[i] - m);
		p[i] = e;
		s[j] += e;
	}
	return sum_lanes(s);
}

/* A row of -Inf (or one holding NaN) gives NaN, which the loss scaler
 * and the nonfinite check then see. */
static float softmax(float *p, size_t n)
{
	float m = row_max(p, n);
	float s = exp_sum_inplace(p, m, n);
	float inv = 1.0f / s;
	for (size_t i = 0; i < n; i++)
		p[i] *= inv;
	return m + logf(s);
}

static void softmax_recompute(float *p, float lse, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = exp_f(p[i] - lse);
}

static void softmax_bwd(float *restrict p, const float *restrict dp, size_t n)
{
	float s[LANES] = { 0 };
	size_t i = 0;
	for (; i + LANES <= n; i += LANES)
		for (int j = 0; j < LANES; j++)
			s[j] += p[i + j] * dp[i + j];
	for (int j = 0; i < n; i++, j++)
		s[j] += p[i] * dp[i];
	float d = sum_lanes(s);
	for (i = 0; i < n; i++)
		p[i] = p[i] * (dp[i] - d);
}

static float xent(float *dl, const float *x, size_t V, int target, float gscale)
{
	float xt = x[target]; /* read first: dl may be x */
	float m = row_max(x, V);
	float s = dl == x ? exp_sum_inplace(dl, m, V) : exp_sum_to(dl, x, m, V);
	if (dl) {
		float k = gscale / s;
		for (size_t i = 0; i < V; i++)
			dl[i] *= k;
		dl[target] -= gscale;
	}
	return logf(s) + m - xt;
}

/* ---- casts, scaling, reductions ------------------------------------------------ */

static void cast(void *dst, enum zn_dtype dd, const void *src, enum zn_dtype sd, size_t n)
{
	if (dd == sd) {
		if (dst != src)
			memcpy(dst, src, n * zn_dtype_size(dd));
		return;
	}
	/* to fp32 */
	if (dd == ZN_DTYPE_F32) {
		float *d = dst;
		const uint16_t *s = src;
		if (sd == ZN_DTYPE_BF16)
			for (size_t i = 0; i < n; i++)
				d[i] = u2f((uint32_t)s[i] << 16);
		else
			for (size_t i = 0; i < n; i++)
				d[i] = zn_f16_to_f32(s[i]);
		return;
	}
	/* from fp32 */
	if (sd == ZN_DTYPE_F32) {
		uint16_t *d = dst;
		const float *s = src;
		if (dd == ZN_DTYPE_BF16)
			for (size_t i = 0; i < n; i++) {
				uint32_t x = f2u(s[i]);
				uint32_t r = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
				d[i] = (uint16_t)((x & 0x7fffffffu) > 0x7f800000u ? 0x7fc0u : r);
			}
		else
			for (size_t i = 0; i < n; i++)
				d[i] = zn_f32_to_f16(s[i]);
		return;
	}
	/* fp16 <-> bf16: through fp32, exactly as two casts */
	uint16_t *d = dst;
	const uint16_t *s = src;
	for (size_t i = 0; i < n; i++) {
		float f = sd == ZN_DTYPE_F16 ? zn_f16_to_f32(s[i]) : zn_bf16_to_f32(s[i]);
		d[i] = dd == ZN_DTYPE_F16 ? zn_f32_to_f16(f) : zn_f32_to_bf16(f);
	}
}

static void scale(void *x, enum zn_dtype d, float k, size_t n)
{
	if (d == ZN_DTYPE_F32) {
		float *p = x;
		for (size_t i = 0; i < n; i++)
			p[i] = p[i] != p[i] ? p[i] : p[i] * k; /* NaN: as it was */
	} else if (d == ZN_DTYPE_BF16) {
		uint16_t *p = x;
		for (size_t i = 0; i < n; i++) {
			uint32_t v = f2u(u2f((uint32_t)p[i] << 16) * k);
			uint32_t r = (v + 0x7fffu + ((v >> 16) & 1u)) >> 16;
			p[i] = (uint16_t)((v & 0x7fffffffu) > 0x7f800000u ? 0x7fc0u : r);
		}
	} else {
		uint16_t *p = x;
		for (size_t i = 0; i < n; i++)
			if ((p[i] & 0x7fffu) <= 0x7c00u) /* NaN: as it was */
				p[i] = zn_f32_to_f16(zn_f16_to_f32(p[i]) * k);
	}
}

static double sumsq(const void *x, enum zn_dtype d, size_t n)
{
	double s[8] = { 0 };
	size_t i = 0;
	if (d == ZN_DTYPE_F32) {
		const float *p = x;
		for (; i + 8 <= n; i += 8)
			for (int j = 0; j < 8; j++)
				s[j] += (double)p[i + j] * (double)p[i + j];
		for (int j = 0; i < n; i++, j++)
			s[j] += (double)p[i] * (double)p[i];
	} else if (d == ZN_DTYPE_BF16) {
		const uint16_t *p = x;
		for (; i + 8 <= n; i += 8)
			for (int j = 0; j < 8; j++) {
				double v = u2f((uint32_t)p[i + j] << 16);
				s[j] += v * v;
			}
		for (int j = 0; i < n; i++, j++) {
			double v = u2f((uint32_t)p[i] << 16);
			s[j] += v * v;
		}
	} else {
		const uint16_t *p = x;
		for (int j = 0; i < n; i++, j = (j + 1) & 7) {
			double v = zn_f16_to_f32(p[i]);
			s[j] += v * v;
		}
	}
	return sum_lanes_d(s);
}

static bool nonfinite(const void *x, enum zn_dtype d, size_t n)
{
	/* all exponent bits set: Inf or NaN */
	uint32_t any = 0;
	if (d == ZN_DTYPE_F32) {
		const float *p = x;
		for (size_t i = 0; i < n; i++)
			any |= (f2u(p[i]) & 0x7f800000u) == 0x7f800000u;
	} else {
		const uint16_t *p = x;
		uint16_t e = d == ZN_DTYPE_BF16 ? 0x7f80u : 0x7c00u;
		for (size_t i = 0; i < n; i++)
			any |= (uint32_t)((p[i] & e) == e);
	}
	return any != 0;
}

const struct zn_kvec ZN_KVEC_NAME = {
	.name = ZN_KVEC_PATH,
	.add = add,
	.acc = acc,
	.gelu_fwd = gelu_fwd,
	.gelu_bwd = gelu_bwd,
	.ln_fwd = ln_fwd,
	.ln_bwd = ln_bwd,
	.ln_bwd_wb = ln_bwd_wb,
	.rms_fwd = rms_fwd,
	.rms_bwd = rms_bwd,
	.rms_bwd_w = rms_bwd_w,
	.rope_fwd = rope_fwd,
	.rope_bwd = rope_bwd,
	.swiglu_fwd = swiglu_fwd,
	.swiglu_bwd = swiglu_bwd,
	.softmax = softmax,
	.softmax_recompute = softmax_recompute,
	.softmax_bwd = softmax_bwd,
	.xent = xent,
	.cast = cast,
	.scale = scale,
	.sumsq = sumsq,
	.nonfinite = nonfinite,
};
