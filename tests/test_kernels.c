/* kernels/cpu: every op against a plain scalar reference written here.
 *
 *   forward    against a double-precision reference of the same math;
 *              tolerance: max |got - want| <= TOL_FWD * max |want|
 *              (fp32 rounding over sums of at most a few hundred terms).
 *   backward   against central finite differences of that double
 *              reference, L = sum(out * G) for a random G: the op gets
 *              dout = G and must return dL/dinput.  The reference is
 *              double, so the differences carry only the O(h^2) error
 *              (h = 1e-3, the step measured exactly after rounding x +- h
 *              to fp32); tolerance TOL_BWD relative to max |dL/dx|.
 *              Gradient buffers start with random values: the ops must
 *              add into them (checked by subtracting the start).
 *   exact      encoder gradients (sums) against a double scatter-add; the
 *              casts bit for bit against an independent reference
 *              (nearest representable value by search, ties to even).
 *   paths      the baseline and AVX2 loops give identical bits, and so do
 *              one thread and the pool.
 * Shapes are odd on purpose (T not a multiple of the vector width or of
 * the attention block, C not a multiple of 16, B = 1), and some are large
 * enough that the ops split over the pool rather than run inline.
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "zinc/cpu.h"
#include "zinc/kernels.h"
#include "zinc/threadpool.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MINZ(a, b) ((a) < (b) ? (a) : (b))

#define TOL_FWD 2e-5
#define TOL_BWD 2e-4
/* finite-difference step; cases with small inputs scale it down */
static float fd_h = 1e-3f;

static const struct zn_kernels *K;
static struct zn_threadpool *pool;
static struct zn_kctx *ctx;        /* with the pool, SIMD auto */
static struct zn_kctx *ctx_serial; /* calling thread only */

/* ---- helpers --------------------------------------------------------------------- */

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t rnext(void)
{
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return rng * 0x2545f4914f6cdd1dull;
}

/* uniform in [-a, a) */
static float frand(float a)
{
	return a * (float)((double)(rnext() >> 11) * 0x1p-53 * 2.0 - 1.0);
}

static float *fvec(size_t n, float a)
{
	float *p = malloc(n * sizeof(float) + 1);
	assert_non_null(p);
	for (size_t i = 0; i < n; i++)
		p[i] = frand(a);
	return p;
}

static double *dvec(size_t n)
{
	double *p = calloc(n + 1, sizeof(double));
	assert_non_null(p);
	return p;
}

static float *fdup(const float *a, size_t n)
{
	float *p = malloc(n * sizeof(float) + 1);
	assert_non_null(p);
	memcpy(p, a, n * sizeof(float));
	return p;
}

/* max |got - want| <= tol * max(|want|), with the worst element reported */
static void check_close_(const char *what, const float *got, const double *want, size_t n,
			 double tol, const char *file, int line)
{
	double scale = 0.0, worst = 0.0;
	size_t wi = 0;
	for (size_t i = 0; i < n; i++)
		scale = fmax(scale, fabs(want[i]));
	for (size_t i = 0; i < n; i++) {
		double e = fabs((double)got[i] - want[i]);
		if (!(e <= worst)) { /* NaN counts as worst */
			worst = e;
			wi = i;
		}
	}
	if (!(worst <= tol * (scale > 0 ? scale : 1.0))) {
		print_message("%s:%d: %s: element %zu is %.9g, want %.9g (error %.3g, allowed "
			      "%.3g = %.1g x max |want| %.4g)\n", file, line, what, wi,
			      (double)got[wi], want[wi], worst, tol * scale, tol, scale);
		fail();
	}
}
#define check_close(what, got, want, n, tol) check_close_(what, got, want, n, tol, __FILE__, __LINE__)

/* got - start, the part an accumulating op added */
static float *addedf(const float *got, const float *start, size_t n)
{
	float *d = malloc(n * sizeof(float) + 1);
	assert_non_null(d);
	for (size_t i = 0; i < n; i++)
		d[i] = got[i] - start[i];
	return d;
}

/* The reference loss; `i` is the element being perturbed, so a loss may
 * add up only the terms that depend on it (the others cancel). */
typedef double (*loss_fn)(void *arg, size_t i);

/* Central differences of f with respect to x[idx[k]], k < m (all of x when
 * idx is NULL, m = n), into g[k]. */
static void fd_grad(double *g, float *x, const size_t *idx, size_t m, loss_fn f, void *arg)
{
	for (size_t k = 0; k < m; k++) {
		size_t i = idx ? idx[k] : k;
		float v = x[i], xp = v + fd_h, xm = v - fd_h;
		x[i] = xp;
		double lp = f(arg, i);
		x[i] = xm;
		double lm = f(arg, i);
		x[i] = v;
		g[k] = (lp - lm) / ((double)xp - (double)xm);
	}
}

/* Compare an op's gradient (got - start over n elements) with finite
 * differences at m sampled positions (all when m >= n). */
static void check_grad_(const char *what, const float *got, const float *start, float *x,
			size_t n, size_t m, loss_fn f, void *arg, const char *file, int line)
{
	size_t *idx = NULL;
	if (m < n) {
		idx = malloc(m * sizeof(size_t));
		assert_non_null(idx);
		for (size_t k = 0; k < m; k++)
			idx[k] = (size_t)(rnext() % n);
	} else {
		m = n;
	}
	double *fd = dvec(m);
	float *an = malloc(m * sizeof(float) + 1);
	assert_non_null(an);
	fd_grad(fd, x, idx, m, f, arg);
	for (size_t k = 0; k < m; k++) {
		size_t i = idx ? idx[k] : k;
		an[k] = start ? got[i] - start[i] : got[i];
	}
	check_close_(what, an, fd, m, TOL_BWD, file, line);
	free(an);
	free(fd);
	free(idx);
}
#define check_grad(what, got, start, x, n, m, f, arg) \
	check_grad_(what, got, start, x, n, m, f, arg, __FILE__, __LINE__)

static double dot_g(const double *out, const float *g, size_t n)
{
	double s = 0.0;
	for (size_t i = 0; i < n; i++)
		s += out[i] * g[i];
	return s;
}

static void ok(int rc)
{
	if (rc != 0) {
		print_message("op failed: %d: %s\n", rc, zn_last_error());
		fail();
	}
}

/* ---- references (double) ------------------------------------------------------------- */

static void ref_layernorm(double *out, double *mean, double *rstd, const float *x,
			  const float *w, const float *b, int BT, int C)
{
	for (int r = 0; r < BT; r++) {
		const float *xr = x + (size_t)r * C;
		double m = 0, v = 0;
		for (int i = 0; i < C; i++)
			m += xr[i];
		m /= C;
		for (int i = 0; i < C; i++)
			v += (xr[i] - m) * (xr[i] - m);
		double s = 1.0 / sqrt(v / C + 1e-5);
		for (int i = 0; i < C; i++)
			out[(size_t)r * C + i] = (xr[i] - m) * s * w[i] + b[i];
		if (mean)
			mean[r] = m;
		if (rstd)
			rstd[r] = s;
	}
}

static void ref_matmul(double *out, const float *inp, const float *w, const float *bias, int BT,
		       int C, int OC)
{
	for (int r = 0; r < BT; r++)
		for (int o = 0; o < OC; o++) {
			double s = bias ? bias[o] : 0.0;
			for (int i = 0; i < C; i++)
				s += (double)inp[(size_t)r * C + i] * w[(size_t)o * C + i];
			out[(size_t)r * OC + o] = s;
		}
}

/* llm.c's attention_forward, in double, with the log-sum-exp, generalized
 * to grouped-query attention: query head h reads key/value head
 * h / (NH / NKV) out of qkv rows of (NH + 2 NKV) HS.  Only sequence ob and
 * query head oh when ob >= 0 (the rest of out is left alone). */
static void ref_attention(double *out, double *lse, const float *qkv, int B, int T, int NH,
			  int NKV, int HS, int ob, int oh)
{
	int W = (NH + 2 * NKV) * HS, CO = NH * HS, rep = NH / NKV;
	double scale = 1.0 / sqrt((double)HS);
	double *a = dvec((size_t)T);
	for (int b = 0; b < B; b++)
		for (int h = 0; h < NH; h++)
			for (int t = 0; t < T && (ob < 0 || (b == ob && h == oh)); t++) {
				int g = h / rep;
				const float *q = qkv + ((size_t)b * T + t) * W + h * HS;
				double m = -INFINITY, z = 0;
				for (int u = 0; u <= t; u++) {
					const float *k = qkv + ((size_t)b * T + u) * W + (NH + g) * HS;
					double s = 0;
					for (int i = 0; i < HS; i++)
						s += (double)q[i] * k[i];
					a[u] = s * scale;
					m = fmax(m, a[u]);
				}
				for (int u = 0; u <= t; u++)
					z += exp(a[u] - m);
				if (lse)
					lse[((size_t)b * NH + h) * T + t] = m + log(z);
				double *o = out + ((size_t)b * T + t) * CO + h * HS;
				for (int i = 0; i < HS; i++)
					o[i] = 0;
				for (int u = 0; u <= t; u++) {
					const float *v = qkv + ((size_t)b * T + u) * W + (NH + NKV + g) * HS;
					double p = exp(a[u] - m) / z;
					for (int i = 0; i < HS; i++)
						o[i] += p * v[i];
				}
			}
	free(a);
}

static double ref_gelu(double x)
{
	return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}

static void ref_xent(double *losses, const float *logits, const int32_t *targets,
		     const float *weights, int BT, int V, int Vp)
{
	for (int r = 0; r < BT; r++) {
		const float *x = logits + (size_t)r * Vp;
		double w = weights ? weights[r] : 1.0;
		if (targets[r] < 0 || w == 0.0) {
			losses[r] = 0;
			continue;
		}
		double m = -INFINITY, z = 0;
		for (int j = 0; j < V; j++)
			m = fmax(m, x[j]);
		for (int j = 0; j < V; j++)
			z += exp(x[j] - m);
		losses[r] = w * (m + log(z) - x[targets[r]]);
	}
}

/* ---- setup ------------------------------------------------------------------------------ */

static struct zn_kctx *make_ctx(struct zn_threadpool *p, enum zn_adam_simd simd)
{
	struct zn_kernels_params kp;
	zn_kernels_params_default(&kp);
	kp.pool = p;
	kp.simd = simd;
	return K->ctx_create(&kp);
}

static int setup(void **state)
{
	(void)state;
	K = zn_kernels_get("cpu");
	if (!K)
		return -1;
	pool = zn_threadpool_create(2, -1); /* 2 workers even on one core: splits are exercised */
	if (!pool)
		return -1;
	ctx = make_ctx(pool, ZN_ADAM_SIMD_AUTO);
	ctx_serial = make_ctx(NULL, ZN_ADAM_SIMD_AUTO);
	return ctx && ctx_serial ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	K->ctx_destroy(ctx);
	K->ctx_destroy(ctx_serial);
	zn_threadpool_destroy(pool);
	return 0;
}

/* ---- encoder ------------------------------------------------------------------------------ */

static void encoder_case(struct zn_kctx *c, int B, int T, int C, int V)
{
	size_t BT = (size_t)B * T;
	int32_t *tok = malloc(BT * sizeof(int32_t));
	assert_non_null(tok);
	for (size_t i = 0; i < BT; i++) /* repeated tokens: several rows per dwte row */
		tok[i] = (int32_t)(rnext() % (uint64_t)(V / 3 + 1));
	float *wte = fvec((size_t)V * C, 1), *wpe = fvec((size_t)T * C, 1);
	float *out = fvec(BT * C, 1);
	double *want = dvec(BT * C);
	ok(K->encoder_forward(c, out, tok, wte, wpe, B, T, C, V));
	for (size_t r = 0; r < BT; r++)
		for (int i = 0; i < C; i++)
			want[r * C + i] = (double)(wte[(size_t)tok[r] * C + i] + wpe[(r % T) * C + i]);
	check_close("encoder out", out, want, BT * C, 0); /* one fp32 add: exact */

	float *dout = fvec(BT * C, 1);
	float *dwte = fvec((size_t)V * C, 1), *dwpe = fvec((size_t)T * C, 1);
	float *dwte0 = fdup(dwte, (size_t)V * C), *dwpe0 = fdup(dwpe, (size_t)T * C);
	ok(K->encoder_backward(c, dwte, dwpe, dout, tok, B, T, C, V));
	double *gte = dvec((size_t)V * C), *gpe = dvec((size_t)T * C);
	for (size_t r = 0; r < BT; r++)
		for (int i = 0; i < C; i++) {
			gte[(size_t)tok[r] * C + i] += dout[r * C + i];
			gpe[(r % T) * C + i] += dout[r * C + i];
		}
	float *a = addedf(dwte, dwte0, (size_t)V * C), *p = addedf(dwpe, dwpe0, (size_t)T * C);
	check_close("encoder dwte", a, gte, (size_t)V * C, TOL_FWD);
	check_close("encoder dwpe", p, gpe, (size_t)T * C, TOL_FWD);
	free(a), free(p), free(gte), free(gpe), free(dwte0), free(dwpe0);
	free(dout), free(dwte), free(dwpe), free(want), free(out), free(wte), free(wpe), free(tok);
}

static void test_encoder(void **state)
{
	(void)state;
	encoder_case(ctx, 1, 7, 13, 11);
	encoder_case(ctx, 3, 100, 120, 50); /* over the pool */
	encoder_case(ctx_serial, 2, 33, 40, 7);
}

/* Llama's embedding: no position table (wpe NULL). */
static void test_encoder_no_positions(void **state)
{
	(void)state;
	int B = 2, T = 9, C = 13, V = 17;
	int32_t tok[18];
	for (int i = 0; i < B * T; i++)
		tok[i] = (int32_t)((i * 5) % V);
	float *wte = fvec((size_t)V * C, 1), *out = fvec((size_t)B * T * C, 1);
	ok(K->encoder_forward(ctx, out, tok, wte, NULL, B, T, C, V));
	for (int r = 0; r < B * T; r++)
		assert_memory_equal(out + (size_t)r * C, wte + (size_t)tok[r] * C, C * sizeof(float));
	free(wte), free(out);
}

static void test_encoder_bad_token(void **state)
{
	(void)state;
	int32_t tok[6] = { 0, 1, 2, 3, 9, 1 };
	float wte[8 * 4] = { 0 }, wpe[3 * 4] = { 0 }, out[6 * 4];
	assert_int_equal(K->encoder_forward(ctx, out, tok, wte, wpe, 2, 3, 4, 8), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "tokens[4] (b=1, t=1) = 9"));
	tok[4] = -1;
	assert_int_equal(K->encoder_backward(ctx, wte, NULL, out, tok, 2, 3, 4, 8), -EINVAL);
}

/* ---- a vocabulary in tiles of rows ------------------------------------------------------- */

/* The embedding and the classifier of V rows computed tile by tile (tiles
 * of R rows, the last shorter) against the whole ops: the embedding's
 * forward and backward and the classifier's logits and weight gradients
 * bit for bit (each element is the same sum in the same order); the
 * input gradient, a sum over the vocabulary taken tile by tile, to
 * rounding. */
static void tiles_case(struct zn_kctx *c, int BT, int C, int V, int R)
{
	int32_t *tok = malloc((size_t)BT * sizeof(int32_t));
	for (int i = 0; i < BT; i++)
		tok[i] = (int32_t)(rnext() % (uint64_t)V);
	float *w = fvec((size_t)V * C, 1), *dout = fvec((size_t)BT * C, 1);
	float *out = fvec((size_t)BT * C, 1), *out_t = fvec((size_t)BT * C, 1);
	float *dw = fvec((size_t)V * C, 1), *dw_t = fdup(dw, (size_t)V * C);
	ok(K->encoder_forward(c, out, tok, w, NULL, 1, BT, C, V));
	ok(K->encoder_backward(c, dw, NULL, dout, tok, 1, BT, C, V));
	for (int r0 = 0; r0 < V; r0 += R) {
		int rows = V - r0 < R ? V - r0 : R;
		ok(K->embedding_rows_forward(c, out_t, tok, w + (size_t)r0 * C, r0, rows, BT, C));
		ok(K->embedding_rows_backward(c, dw_t + (size_t)r0 * C, dout, tok, r0, rows, BT, C));
	}
	assert_memory_equal(out_t, out, (size_t)BT * C * sizeof(float));
	assert_memory_equal(dw_t, dw, (size_t)V * C * sizeof(float));

	/* The classifier: logits (BT,V) = x @ w^T. */
	float *x = fvec((size_t)BT * C, 1), *logits = fvec((size_t)BT * V, 1);
	float *logits_t = fvec((size_t)BT * V, 1), *dlogits = fvec((size_t)BT * V, 1);
	float *dx = fvec((size_t)BT * C, 1), *dx_t = fdup(dx, (size_t)BT * C);
	float *gw = fvec((size_t)V * C, 1), *gw_t = fdup(gw, (size_t)V * C);
	ok(K->matmul_forward(c, logits, x, w, NULL, BT, C, V));
	ok(K->matmul_backward(c, dx, gw, NULL, dlogits, x, w, BT, C, V));
	for (int r0 = 0; r0 < V; r0 += R) {
		int rows = V - r0 < R ? V - r0 : R;
		ok(K->matmul_forward_ld(c, logits_t + r0, V, x, w + (size_t)r0 * C, BT, C, rows));
		ok(K->matmul_backward_ld(c, dx_t, gw_t + (size_t)r0 * C, dlogits + r0, V, x,
					 w + (size_t)r0 * C, BT, C, rows));
	}
	assert_memory_equal(logits_t, logits, (size_t)BT * V * sizeof(float));
	assert_memory_equal(gw_t, gw, (size_t)V * C * sizeof(float));
	double *want = dvec((size_t)BT * C);
	for (size_t i = 0; i < (size_t)BT * C; i++)
		want[i] = dx[i];
	check_close("tiled dinp", dx_t, want, (size_t)BT * C, TOL_FWD);
	free(want), free(x), free(logits), free(logits_t), free(dlogits), free(dx), free(dx_t);
	free(gw), free(gw_t), free(tok), free(w), free(dout), free(out), free(out_t), free(dw);
	free(dw_t);
}

static void test_tiles(void **state)
{
	(void)state;
	tiles_case(ctx, 7, 13, 50, 16);
	tiles_case(ctx, 300, 64, 1000, 300); /* over the pool */
	tiles_case(ctx_serial, 33, 8, 17, 17);
	/* Bad arguments are named. */
	float a[16] = { 0 };
	int32_t tok[2] = { 0, 1 };
	assert_int_equal(K->matmul_forward_ld(ctx, a, 1, a, a, 2, 2, 2), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "ldo = 1 is below OC = 2"));
	assert_int_equal(K->embedding_rows_forward(ctx, a, tok, a, -1, 2, 2, 2), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "row0"));
	assert_int_equal(K->embedding_rows_backward(ctx, a, a, tok, 0, 0, 2, 2), -EINVAL);
}

/* ---- layernorm --------------------------------------------------------------------------- */

struct ln_case {
	float *x, *w, *b, *g;
	double *tmp;
	int BT, C;
};

static double ln_loss(void *p, size_t i)
{
	(void)i;
	struct ln_case *c = p;
	ref_layernorm(c->tmp, NULL, NULL, c->x, c->w, c->b, c->BT, c->C);
	return dot_g(c->tmp, c->g, (size_t)c->BT * c->C);
}

static void layernorm_case(struct zn_kctx *k, int BT, int C, float amp, size_t samples)
{
	size_t n = (size_t)BT * C;
	struct ln_case lc = { .x = fvec(n, amp), .w = fvec((size_t)C, 1), .b = fvec((size_t)C, 1),
			      .g = fvec(n, 1), .tmp = dvec(n), .BT = BT, .C = C };
	for (size_t i = 0; i < n; i++) /* rows with an offset: the mean matters */
		lc.x[i] += amp * ((float)(i / (size_t)C % 5) - 2.0f);
	float *out = fvec(n, 1), *mean = fvec((size_t)BT, 1), *rstd = fvec((size_t)BT, 1);
	double *want = dvec(n), *wm = dvec((size_t)BT), *wr = dvec((size_t)BT);
	ok(K->layernorm_forward(k, out, mean, rstd, lc.x, lc.w, lc.b, BT, C));
	ref_layernorm(want, wm, wr, lc.x, lc.w, lc.b, BT, C);
	check_close("layernorm out", out, want, n, TOL_FWD);
	check_close("layernorm mean", mean, wm, (size_t)BT, TOL_FWD);
	check_close("layernorm rstd", rstd, wr, (size_t)BT, TOL_FWD);

	float *dinp = fvec(n, 1), *dw = fvec((size_t)C, 1), *db = fvec((size_t)C, 1);
	float *dinp0 = fdup(dinp, n), *dw0 = fdup(dw, (size_t)C), *db0 = fdup(db, (size_t)C);
	ok(K->layernorm_backward(k, dinp, dw, db, lc.g, lc.x, lc.w, mean, rstd, BT, C));
	fd_h = 1e-3f * amp;
	check_grad("layernorm dinp", dinp, dinp0, lc.x, n, samples, ln_loss, &lc);
	fd_h = 1e-3f;
	check_grad("layernorm dweight", dw, dw0, lc.w, (size_t)C, samples, ln_loss, &lc);
	check_grad("layernorm dbias", db, db0, lc.b, (size_t)C, samples, ln_loss, &lc);

	/* NULL outputs are skipped; NULL mean/rstd is inference */
	ok(K->layernorm_backward(k, NULL, dw, NULL, lc.g, lc.x, lc.w, mean, rstd, BT, C));
	ok(K->layernorm_forward(k, out, NULL, NULL, lc.x, lc.w, lc.b, BT, C));
	check_close("layernorm out without stats", out, want, n, TOL_FWD);

	free(dinp), free(dw), free(db), free(dinp0), free(dw0), free(db0);
	free(out), free(mean), free(rstd), free(want), free(wm), free(wr);
	free(lc.x), free(lc.w), free(lc.b), free(lc.g), free(lc.tmp);
}

static void test_layernorm(void **state)
{
	(void)state;
	layernorm_case(ctx, 5, 13, 2, SIZE_MAX);
	layernorm_case(ctx, 1, 40, 2, SIZE_MAX);
	layernorm_case(ctx, 4, 24, 0.01f, SIZE_MAX); /* variance ~ eps: eps matters */
	layernorm_case(ctx, 300, 120, 2, 300);       /* over the pool */
	layernorm_case(ctx_serial, 7, 33, 2, SIZE_MAX);
}

/* ---- matmul ------------------------------------------------------------------------------- */

/* The products are bilinear, so the double reference's own gradient is
 * exact: dinp = G @ w, dweight = G^T @ inp, dbias = column sums of G. */
static void ref_matmul_bwd(double *dinp, double *dw, double *db, const float *g,
			   const float *inp, const float *w, int BT, int C, int OC)
{
	for (int r = 0; r < BT; r++)
		for (int o = 0; o < OC; o++) {
			double d = g[(size_t)r * OC + o];
			for (int i = 0; i < C; i++) {
				dinp[(size_t)r * C + i] += d * w[(size_t)o * C + i];
				dw[(size_t)o * C + i] += d * inp[(size_t)r * C + i];
			}
			db[o] += d;
		}
}

static void matmul_case(struct zn_kctx *k, int BT, int C, int OC, bool bias)
{
	size_t ni = (size_t)BT * C, nw = (size_t)OC * C, no = (size_t)BT * OC;
	float *inp = fvec(ni, 1), *w = fvec(nw, 1), *b = bias ? fvec((size_t)OC, 1) : NULL;
	float *g = fvec(no, 1), *out = fvec(no, 1);
	double *want = dvec(no);
	ok(K->matmul_forward(k, out, inp, w, b, BT, C, OC));
	ref_matmul(want, inp, w, b, BT, C, OC);
	check_close("matmul out", out, want, no, TOL_FWD);

	float *dinp = fvec(ni, 1), *dw = fvec(nw, 1), *db = fvec((size_t)OC, 1);
	float *dinp0 = fdup(dinp, ni), *dw0 = fdup(dw, nw), *db0 = fdup(db, (size_t)OC);
	double *rdi = dvec(ni), *rdw = dvec(nw), *rdb = dvec((size_t)OC);
	ref_matmul_bwd(rdi, rdw, rdb, g, inp, w, BT, C, OC);
	ok(K->matmul_backward(k, dinp, dw, bias ? db : NULL, g, inp, w, BT, C, OC));
	float *a = addedf(dinp, dinp0, ni);
	check_close("matmul dinp", a, rdi, ni, TOL_FWD);
	free(a);
	a = addedf(dw, dw0, nw);
	check_close("matmul dweight", a, rdw, nw, TOL_FWD);
	free(a);
	if (bias) {
		a = addedf(db, db0, (size_t)OC);
		check_close("matmul dbias", a, rdb, (size_t)OC, TOL_FWD);
		free(a);
	} else {
		assert_memory_equal(db, db0, (size_t)OC * sizeof(float));
	}
	/* each gradient on its own */
	memcpy(dw, dw0, nw * sizeof(float));
	ok(K->matmul_backward(k, NULL, dw, NULL, g, inp, NULL, BT, C, OC));
	a = addedf(dw, dw0, nw);
	check_close("matmul dweight alone", a, rdw, nw, TOL_FWD);
	free(a);
	memcpy(dinp, dinp0, ni * sizeof(float));
	ok(K->matmul_backward(k, dinp, NULL, NULL, g, NULL, w, BT, C, OC));
	a = addedf(dinp, dinp0, ni);
	check_close("matmul dinp alone", a, rdi, ni, TOL_FWD);
	free(a);

	free(rdi), free(rdw), free(rdb), free(dinp), free(dw), free(db), free(dinp0), free(dw0);
	free(db0), free(out), free(want), free(inp), free(w), free(b), free(g);
}

static void test_matmul(void **state)
{
	(void)state;
	matmul_case(ctx, 5, 7, 9, true);
	matmul_case(ctx, 1, 40, 13, true);
	matmul_case(ctx, 13, 24, 72, false);
	matmul_case(ctx, 300, 96, 200, true); /* split over the pool */
	matmul_case(ctx_serial, 37, 40, 52, true);
}

/* ---- attention ----------------------------------------------------------------------------- */

struct att_case {
	float *qkv, *g;
	double *tmp;
	int B, T, NH, NKV, HS;
};

static double att_loss(void *p, size_t i)
{
	struct att_case *c = p;
	/* qkv[i] is in sequence b; a query element moves only its head's
	 * outputs, a key or value element those of its group's query heads */
	size_t W = (size_t)(c->NH + 2 * c->NKV) * c->HS, HS = (size_t)c->HS, CO = c->NH * HS;
	int b = (int)(i / ((size_t)c->T * W)), head = (int)(i % W / HS), rep = c->NH / c->NKV;
	int h0 = head, h1 = head + 1;
	if (head >= c->NH) { /* k or v of group g */
		int g = (head - c->NH) % c->NKV;
		h0 = g * rep;
		h1 = h0 + rep;
	}
	double s = 0;
	for (int h = h0; h < h1; h++) {
		ref_attention(c->tmp, NULL, c->qkv, c->B, c->T, c->NH, c->NKV, c->HS, b, h);
		for (int t = 0; t < c->T; t++)
			for (size_t j = 0; j < HS; j++) {
				size_t o = ((size_t)b * c->T + t) * CO + h * HS + j;
				s += c->tmp[o] * c->g[o];
			}
	}
	return s;
}

static void attention_case(struct zn_kctx *k, int B, int T, int NH, int NKV, int HS,
			   size_t samples)
{
	size_t W = (size_t)(NH + 2 * NKV) * HS, CO = (size_t)NH * HS;
	size_t nq = (size_t)B * T * W, no = (size_t)B * T * CO, nl = (size_t)B * NH * T;
	struct att_case ac = { .qkv = fvec(nq, 1.5f), .g = fvec(no, 1), .tmp = dvec(no), .B = B,
			       .T = T, .NH = NH, .NKV = NKV, .HS = HS };
	float *out = fvec(no, 1), *lse = fvec(nl, 1);
	double *want = dvec(no), *wl = dvec(nl);
	ok(K->attention_forward(k, out, lse, ac.qkv, B, T, NH, NKV, HS));
	ref_attention(want, wl, ac.qkv, B, T, NH, NKV, HS, -1, -1);
	check_close("attention out", out, want, no, TOL_FWD);
	check_close("attention lse", lse, wl, nl, TOL_FWD);

	float *dqkv = fvec(nq, 1), *dqkv0 = fdup(dqkv, nq);
	ok(K->attention_backward(k, dqkv, ac.g, ac.qkv, lse, B, T, NH, NKV, HS));
	check_grad("attention dqkv", dqkv, dqkv0, ac.qkv, nq, samples, att_loss, &ac);
	free(dqkv), free(dqkv0), free(out), free(lse), free(want), free(wl);
	free(ac.qkv), free(ac.g), free(ac.tmp);
}

static void test_attention(void **state)
{
	(void)state;
	attention_case(ctx, 1, 1, 2, 2, 4, SIZE_MAX);  /* one token */
	attention_case(ctx, 2, 13, 3, 3, 8, SIZE_MAX);
	attention_case(ctx, 1, 77, 1, 1, 12, SIZE_MAX); /* two query blocks */
	attention_case(ctx, 2, 150, 4, 4, 16, 1000);    /* over the pool, three blocks */
	attention_case(ctx_serial, 1, 70, 5, 5, 4, SIZE_MAX);
}

/* Grouped-query attention: NKV < NH key/value heads, each serving
 * NH / NKV query heads; the gradients of shared keys and values sum the
 * group's heads.  Head sizes need not be C / NH (Llama's head_dim). */
static void test_attention_gqa(void **state)
{
	(void)state;
	attention_case(ctx, 2, 13, 4, 2, 6, SIZE_MAX);
	attention_case(ctx, 1, 77, 6, 1, 4, SIZE_MAX);  /* one shared head, two blocks */
	attention_case(ctx, 3, 9, 6, 3, 10, SIZE_MAX);
	attention_case(ctx, 2, 130, 8, 2, 8, 1500);     /* over the pool, three blocks */
	attention_case(ctx_serial, 1, 33, 4, 2, 14, SIZE_MAX);
}

/* GPT-2's layout is the NKV = NH case: the same bits with the pool, and
 * with NKV = NH the op is multi-head attention (checked above against the
 * grouped reference, which with rep = 1 is llm.c's). */
static void test_attention_bad_shape(void **state)
{
	(void)state;
	float x[4 * 30] = { 0 }, o[40] = { 0 }, l[8];
	assert_int_equal(K->attention_forward(ctx, o, l, x, 1, 1, 4, 3, 2), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "NH = 4 is not a multiple of NKV = 3"));
	assert_int_equal(K->attention_backward(ctx, x, o, x, NULL, 1, 1, 2, 2, 4), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "lse"));
	assert_int_equal(K->attention_forward(ctx, o, l, x, 1, 0, 2, 2, 4), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "T = 0"));
	assert_int_equal(K->attention_forward(ctx, o, l, x, 1, 1, 2, 0, 4), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "NKV = 0"));
	assert_int_equal(K->attention_forward(ctx, o, l, x, 1, 1, 2, 1, -4), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "HS = -4"));
}

/* ---- rmsnorm ---------------------------------------------------------------------------- */

static void ref_rmsnorm(double *out, double *rstd, const float *x, const float *w, double eps,
			int BT, int C)
{
	for (int r = 0; r < BT; r++) {
		const float *xr = x + (size_t)r * C;
		double ss = 0;
		for (int i = 0; i < C; i++)
			ss += (double)xr[i] * xr[i];
		double s = 1.0 / sqrt(ss / C + eps);
		for (int i = 0; i < C; i++)
			out[(size_t)r * C + i] = xr[i] * s * w[i];
		if (rstd)
			rstd[r] = s;
	}
}

struct rms_case {
	float *x, *w, *g;
	double *tmp;
	float eps;
	int BT, C;
};

static double rms_loss(void *p, size_t i)
{
	(void)i;
	struct rms_case *c = p;
	ref_rmsnorm(c->tmp, NULL, c->x, c->w, c->eps, c->BT, c->C);
	return dot_g(c->tmp, c->g, (size_t)c->BT * c->C);
}

static void rmsnorm_case(struct zn_kctx *k, int BT, int C, float amp, float eps, size_t samples)
{
	size_t n = (size_t)BT * C;
	struct rms_case rc = { .x = fvec(n, amp), .w = fvec((size_t)C, 1), .g = fvec(n, 1),
			       .tmp = dvec(n), .eps = eps, .BT = BT, .C = C };
	for (size_t i = 0; i < n; i++) /* rows with an offset: no mean is taken out */
		rc.x[i] += amp * ((float)(i / (size_t)C % 5) - 2.0f);
	float *out = fvec(n, 1), *rstd = fvec((size_t)BT, 1);
	double *want = dvec(n), *wr = dvec((size_t)BT);
	ok(K->rmsnorm_forward(k, out, rstd, rc.x, rc.w, eps, BT, C));
	ref_rmsnorm(want, wr, rc.x, rc.w, eps, BT, C);
	check_close("rmsnorm out", out, want, n, TOL_FWD);
	check_close("rmsnorm rstd", rstd, wr, (size_t)BT, TOL_FWD);

	float *dinp = fvec(n, 1), *dw = fvec((size_t)C, 1);
	float *dinp0 = fdup(dinp, n), *dw0 = fdup(dw, (size_t)C);
	ok(K->rmsnorm_backward(k, dinp, dw, rc.g, rc.x, rc.w, rstd, BT, C));
	fd_h = 1e-3f * amp;
	check_grad("rmsnorm dinp", dinp, dinp0, rc.x, n, samples, rms_loss, &rc);
	fd_h = 1e-3f;
	check_grad("rmsnorm dweight", dw, dw0, rc.w, (size_t)C, samples, rms_loss, &rc);

	/* each gradient on its own; NULL rstd is inference */
	float *dw1 = fdup(dw0, (size_t)C);
	ok(K->rmsnorm_backward(k, NULL, dw1, rc.g, rc.x, rc.w, rstd, BT, C));
	float *a = addedf(dw1, dw0, (size_t)C), *b = addedf(dw, dw0, (size_t)C);
	assert_memory_equal(a, b, (size_t)C * sizeof(float));
	ok(K->rmsnorm_forward(k, out, NULL, rc.x, rc.w, eps, BT, C));
	check_close("rmsnorm out without rstd", out, want, n, TOL_FWD);

	free(a), free(b), free(dw1), free(dinp), free(dw), free(dinp0), free(dw0);
	free(out), free(rstd), free(want), free(wr), free(rc.x), free(rc.w), free(rc.g), free(rc.tmp);
}

static void test_rmsnorm(void **state)
{
	(void)state;
	rmsnorm_case(ctx, 5, 13, 2, 1e-5f, SIZE_MAX);
	rmsnorm_case(ctx, 1, 40, 2, 1e-6f, SIZE_MAX);
	rmsnorm_case(ctx, 4, 24, 0.003f, 1e-5f, SIZE_MAX); /* mean square ~ eps: eps matters */
	rmsnorm_case(ctx, 300, 120, 2, 1e-6f, 300);        /* over the pool */
	rmsnorm_case(ctx_serial, 7, 33, 2, 1e-5f, SIZE_MAX);
	float a[8] = { 0 };
	assert_int_equal(K->rmsnorm_forward(ctx, a, NULL, a, a, 0.0f, 2, 4), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "eps = 0"));
	assert_int_equal(K->rmsnorm_backward(ctx, a, a, a, a, a, NULL, 2, 4), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "rstd"));
}

/* ---- rotary embedding ------------------------------------------------------------------- */

/* transformers' LlamaRotaryEmbedding + apply_rotary_pos_emb, in double
 * after the fp32 angle: rows (b, t) of ld elements, NH heads of HS. */
static void ref_rope(double *out, size_t ldo, const float *x, size_t ldi, const float *inv,
		     int B, int T, int NH, int HS)
{
	int half = HS / 2;
	for (int b = 0; b < B; b++)
		for (int t = 0; t < T; t++)
			for (int h = 0; h < NH; h++) {
				const float *xr = x + ((size_t)b * T + t) * ldi + (size_t)h * HS;
				double *o = out + ((size_t)b * T + t) * ldo + (size_t)h * HS;
				for (int i = 0; i < HS; i++) {
					/* rotate_half(x) = cat(-x2, x1); emb = cat(freqs, freqs) */
					double rot = i < half ? -(double)xr[i + half] : xr[i - half];
					double ang = inv ? (double)((float)t * inv[i % half]) : 0.0;
					o[i] = xr[i] * cos(ang) + rot * sin(ang);
				}
			}
}

struct rope_case {
	float *x, *g, *inv;
	double *tmp;
	int B, T, NH, HS, ldi, ldo;
};

static double rope_loss(void *p, size_t i)
{
	struct rope_case *c = p;
	size_t row = i / (size_t)c->ldi, col = i % (size_t)c->ldi;
	if (col >= (size_t)c->NH * c->HS)
		return 0; /* padding between rows: not read */
	/* only the row's head moves: that head's outputs, at position t */
	int t = (int)(row % (size_t)c->T), h = (int)(col / (size_t)c->HS), half = c->HS / 2;
	const float *xr = c->x + row * c->ldi + (size_t)h * c->HS;
	double s = 0;
	for (int k = 0; k < c->HS; k++) {
		double rot = k < half ? -(double)xr[k + half] : xr[k - half];
		double ang = c->inv ? (double)((float)t * c->inv[k % half]) : 0.0;
		s += (xr[k] * cos(ang) + rot * sin(ang)) * c->g[row * c->ldo + (size_t)h * c->HS + k];
	}
	return s;
}

static void rope_case(struct zn_kctx *k, int B, int T, int NH, int HS, int padi, int pado,
		      bool rotate, size_t samples)
{
	int ldi = NH * HS + padi, ldo = NH * HS + pado;
	size_t BT = (size_t)B * T, ni = BT * ldi, no = BT * ldo;
	struct rope_case rc = { .x = fvec(ni, 2), .g = fvec(no, 1), .tmp = dvec(no), .B = B, .T = T,
				.NH = NH, .HS = HS, .ldi = ldi, .ldo = ldo };
	if (rotate) {
		/* a spread of frequencies, some turning many times over T */
		rc.inv = fvec((size_t)HS / 2, 1);
		for (int i = 0; i < HS / 2; i++)
			rc.inv[i] = powf(10000.0f, -2.0f * (float)i / (float)HS) * (1.0f + 0.1f * rc.inv[i]);
	}
	float *out = fvec(no, 1), *out0 = fdup(out, no);
	double *want = dvec(no);
	ok(K->rope_forward(k, out, ldo, rc.x, ldi, rc.inv, B, T, NH, HS));
	ref_rope(want, (size_t)ldo, rc.x, (size_t)ldi, rc.inv, B, T, NH, HS);
	/* the padding of out rows is left alone: compare it as it was */
	for (size_t r = 0; r < BT; r++)
		for (int j = NH * HS; j < ldo; j++)
			want[r * ldo + j] = out0[r * ldo + j];
	check_close("rope out", out, want, no, rotate ? TOL_FWD : 0);

	float *dinp = fvec(ni, 1), *dinp0 = fdup(dinp, ni);
	ok(K->rope_backward(k, dinp, ldi, rc.g, ldo, rc.inv, B, T, NH, HS));
	check_grad("rope dinp", dinp, dinp0, rc.x, ni, samples, rope_loss, &rc);

	/* in place gives the same bits */
	if (ldi == ldo) {
		float *y = fdup(rc.x, ni);
		ok(K->rope_forward(k, y, ldi, y, ldi, rc.inv, B, T, NH, HS));
		assert_memory_equal(y, out, ni * sizeof(float));
		free(y);
	}
	free(out), free(out0), free(want), free(dinp), free(dinp0);
	free(rc.x), free(rc.g), free(rc.tmp), free(rc.inv);
}

static void test_rope(void **state)
{
	(void)state;
	rope_case(ctx, 1, 1, 1, 2, 0, 0, true, SIZE_MAX);
	rope_case(ctx, 2, 13, 3, 8, 0, 0, true, SIZE_MAX);
	rope_case(ctx, 2, 77, 2, 12, 7, 0, true, 2000);  /* strided input */
	rope_case(ctx, 1, 40, 3, 6, 0, 30, true, SIZE_MAX); /* strided output */
	rope_case(ctx, 3, 200, 4, 32, 16, 48, true, 3000);  /* over the pool, a table for T */
	rope_case(ctx, 2, 20, 2, 8, 5, 9, false, SIZE_MAX); /* no rotation: a strided copy */
	rope_case(ctx_serial, 2, 50, 5, 16, 0, 0, true, 2000);
	/* a shorter T reuses the table for a longer one, another table replaces it */
	rope_case(ctx, 2, 9, 3, 32, 0, 0, true, SIZE_MAX);
	rope_case(ctx, 2, 9, 3, 20, 0, 0, true, SIZE_MAX);
}

/* Three projections into one packed qkv and back, as a Llama block does:
 * q and k rotated into their places, v copied; the backward unpacks. */
static void test_rope_packs_qkv(void **state)
{
	(void)state;
	int B = 2, T = 11, NH = 4, NKV = 2, HS = 8, QD = NH * HS, KD = NKV * HS;
	int W = QD + 2 * KD;
	size_t BT = (size_t)B * T;
	float *q = fvec(BT * QD, 1), *kk = fvec(BT * KD, 1), *v = fvec(BT * KD, 1);
	float *inv = fvec((size_t)HS / 2, 1), *qkv = fvec(BT * W, 1);
	for (int i = 0; i < HS / 2; i++)
		inv[i] = powf(500000.0f, -2.0f * (float)i / (float)HS);
	ok(K->rope_forward(ctx, qkv, W, q, QD, inv, B, T, NH, HS));
	ok(K->rope_forward(ctx, qkv + QD, W, kk, KD, inv, B, T, NKV, HS));
	ok(K->rope_forward(ctx, qkv + QD + KD, W, v, KD, NULL, B, T, NKV, HS));
	double *rq = dvec(BT * QD), *rk = dvec(BT * KD);
	ref_rope(rq, (size_t)QD, q, (size_t)QD, inv, B, T, NH, HS);
	ref_rope(rk, (size_t)KD, kk, (size_t)KD, inv, B, T, NKV, HS);
	for (size_t r = 0; r < BT; r++) {
		float *row = qkv + r * W;
		for (int j = 0; j < QD; j++)
			assert_true(fabs(row[j] - rq[r * QD + j]) <= 1e-6);
		for (int j = 0; j < KD; j++) {
			assert_true(fabs(row[QD + j] - rk[r * KD + j]) <= 1e-6);
			assert_true(row[QD + KD + j] == v[r * KD + j]);
		}
	}
	/* unpack: the backward of each piece, v's a plain add */
	float *dv = fvec(BT * KD, 1), *dv0 = fdup(dv, BT * KD);
	ok(K->rope_backward(ctx, dv, KD, qkv + QD + KD, W, NULL, B, T, NKV, HS));
	for (size_t r = 0; r < BT; r++)
		for (int j = 0; j < KD; j++)
			assert_true(dv[r * KD + j] == dv0[r * KD + j] + v[r * KD + j]);
	/* the rotation is orthogonal: its backward undoes the forward */
	float *dq = calloc(BT * QD, sizeof(float));
	assert_non_null(dq);
	ok(K->rope_backward(ctx, dq, QD, qkv, W, inv, B, T, NH, HS));
	for (size_t i = 0; i < BT * QD; i++)
		assert_true(fabsf(dq[i] - q[i]) <= 1e-6f * 4);
	/* errors: odd HS, a stride below the row, backward in place */
	assert_int_equal(K->rope_forward(ctx, qkv, W, q, QD, inv, B, T, NH, 7), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "HS = 7 must be even"));
	assert_int_equal(K->rope_forward(ctx, qkv, W, q, QD - 1, inv, B, T, NH, HS), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "ldi = 31"));
	assert_int_equal(K->rope_backward(ctx, q, QD, q, QD, inv, B, T, NH, HS), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "same buffer"));
	assert_int_equal(K->rope_forward(ctx, q, QD, q, W, inv, B, T, NH, HS), -EINVAL);
	free(q), free(kk), free(v), free(inv), free(qkv), free(rq), free(rk), free(dv), free(dv0);
	free(dq);
}

/* ---- SwiGLU ----------------------------------------------------------------------------- */

static double ref_silu(double x)
{
	return x / (1.0 + exp(-x));
}

struct swiglu_case {
	float *g, *u, *dy;
	size_t n;
};

static double swiglu_loss(void *p, size_t i)
{
	struct swiglu_case *c = p; /* elementwise: element i's term only */
	return ref_silu(c->g[i]) * c->u[i] * c->dy[i];
}

static void swiglu_case(struct zn_kctx *k, size_t n, size_t samples)
{
	struct swiglu_case sc = { .g = fvec(n, 6), .u = fvec(n, 2), .dy = fvec(n, 1), .n = n };
	sc.g[0] = 0.0f;
	if (n > 3) {
		sc.g[1] = 30.0f; /* sigmoid saturated */
		sc.g[2] = -30.0f;
		sc.g[3] = 1e-6f;
	}
	float *out = fvec(n, 1);
	double *want = dvec(n);
	ok(K->swiglu_forward(k, out, sc.g, sc.u, n));
	for (size_t i = 0; i < n; i++)
		want[i] = ref_silu(sc.g[i]) * sc.u[i];
	check_close("swiglu out", out, want, n, TOL_FWD);
	double worst = 0; /* each value on its own, too */
	for (size_t i = 0; i < n; i++)
		worst = fmax(worst, fabs(out[i] - want[i]) / (1e-30 + fabs(want[i]) + 1e-7));
	assert_true(worst <= 1e-5);
	float *dg = fvec(n, 1), *du = fvec(n, 1), *dg0 = fdup(dg, n), *du0 = fdup(du, n);
	ok(K->swiglu_backward(k, dg, du, sc.dy, sc.g, sc.u, n));
	check_grad("swiglu dgate", dg, dg0, sc.g, n, samples, swiglu_loss, &sc);
	check_grad("swiglu dup", du, du0, sc.u, n, samples, swiglu_loss, &sc);
	/* one gradient alone adds the same */
	float *dg1 = fdup(dg0, n);
	ok(K->swiglu_backward(k, dg1, NULL, sc.dy, sc.g, sc.u, n));
	assert_memory_equal(dg1, dg, n * sizeof(float));
	/* in place over gate */
	float *y = fdup(sc.g, n);
	ok(K->swiglu_forward(k, y, y, sc.u, n));
	assert_memory_equal(y, out, n * sizeof(float));
	free(y), free(dg1), free(dg), free(du), free(dg0), free(du0), free(out), free(want);
	free(sc.g), free(sc.u), free(sc.dy);
}

static void test_swiglu(void **state)
{
	(void)state;
	swiglu_case(ctx, 1, 1);
	swiglu_case(ctx, 37, SIZE_MAX);
	swiglu_case(ctx, 100003, 3000); /* over the pool, an odd tail */
	swiglu_case(ctx_serial, 999, SIZE_MAX);
}

/* ---- elementwise --------------------------------------------------------------------------- */

struct gelu_case {
	float *x, *g;
	size_t n;
};

static double gelu_loss(void *p, size_t i)
{
	struct gelu_case *c = p;
	return ref_gelu(c->x[i]) * c->g[i]; /* elementwise: the other terms cancel */
}

static void gelu_case(struct zn_kctx *k, size_t n, size_t samples)
{
	struct gelu_case gc = { .x = fvec(n, 6), .g = fvec(n, 1), .n = n };
	gc.x[0] = 0.0f;
	if (n > 3) {
		gc.x[1] = 30.0f; /* tanh saturated */
		gc.x[2] = -30.0f;
		gc.x[3] = 1e-6f;
	}
	float *out = fvec(n, 1);
	double *want = dvec(n);
	ok(K->gelu_forward(k, out, gc.x, n));
	for (size_t i = 0; i < n; i++)
		want[i] = ref_gelu(gc.x[i]);
	/* elementwise: each value within 1e-6 of the largest (tanh is
	 * computed to ~1e-7 absolute) */
	check_close("gelu out", out, want, n, 1e-6);
	/* and each value on its own: tanh to ~1e-7 absolute */
	double worst = 0;
	for (size_t i = 0; i < n; i++)
		worst = fmax(worst, fabs(out[i] - want[i]) / (1.0 + fabs(gc.x[i])));
	assert_true(worst <= 2e-7);
	float *dinp = fvec(n, 1), *dinp0 = fdup(dinp, n);
	ok(K->gelu_backward(k, dinp, gc.g, gc.x, n));
	check_grad("gelu dinp", dinp, dinp0, gc.x, n, samples, gelu_loss, &gc);
	/* in place */
	float *y = fdup(gc.x, n);
	ok(K->gelu_forward(k, y, y, n));
	assert_memory_equal(y, out, n * sizeof(float));
	free(y), free(dinp), free(dinp0), free(out), free(want), free(gc.x), free(gc.g);
}

static void test_gelu(void **state)
{
	(void)state;
	gelu_case(ctx, 1, 1);
	gelu_case(ctx, 37, SIZE_MAX);
	gelu_case(ctx, 100003, SIZE_MAX); /* over the pool, an odd tail */
}

static void test_residual(void **state)
{
	(void)state;
	size_t sizes[] = { 1, 19, 70001 };
	for (size_t s = 0; s < ARRAY_SIZE(sizes); s++) {
		size_t n = sizes[s];
		float *a = fvec(n, 1), *b = fvec(n, 1), *out = fvec(n, 1);
		ok(K->residual_forward(ctx, out, a, b, n));
		for (size_t i = 0; i < n; i++)
			assert_true(out[i] == a[i] + b[i]);
		float *d1 = fvec(n, 1), *d2 = fvec(n, 1), *d10 = fdup(d1, n), *d20 = fdup(d2, n);
		ok(K->residual_backward(ctx, d1, d2, out, n));
		for (size_t i = 0; i < n; i++)
			assert_true(d1[i] == d10[i] + out[i] && d2[i] == d20[i] + out[i]);
		ok(K->residual_backward(ctx, NULL, d2, out, n));
		ok(K->residual_forward(ctx, a, a, b, n)); /* in place */
		for (size_t i = 0; i < n; i++)
			assert_true(a[i] == out[i]);
		free(a), free(b), free(out), free(d1), free(d2), free(d10), free(d20);
	}
}

/* ---- cross-entropy -------------------------------------------------------------------------- */

struct xent_case {
	float *logits, *weights;
	int32_t *targets;
	double *tmp;
	float gscale;
	int BT, V, Vp;
};

static double xent_loss(void *p, size_t i)
{
	struct xent_case *c = p;
	size_t r = i / (size_t)c->Vp; /* only row r depends on logits[i] */
	ref_xent(c->tmp, c->logits + r * c->Vp, c->targets + r, c->weights ? c->weights + r : NULL,
		 1, c->V, c->Vp);
	return c->gscale * c->tmp[0];
}

static void xent_case(struct zn_kctx *k, int BT, int V, int Vp, bool weighted, size_t samples)
{
	size_t n = (size_t)BT * Vp;
	struct xent_case xc = { .logits = fvec(n, 4), .targets = malloc((size_t)BT * 4),
				.weights = weighted ? fvec((size_t)BT, 1) : NULL,
				.tmp = dvec((size_t)BT), .BT = BT, .V = V, .Vp = Vp };
	assert_non_null(xc.targets);
	int counted = 0;
	for (int i = 0; i < BT; i++) {
		xc.targets[i] = (int32_t)(rnext() % (uint64_t)V);
		if (i % 5 == 3)
			xc.targets[i] = -1; /* ignored */
		if (weighted) {
			xc.weights[i] = fabsf(xc.weights[i]);
			if (i % 4 == 1)
				xc.weights[i] = 0.0f; /* masked */
		}
		counted += xc.targets[i] >= 0 && (!weighted || xc.weights[i] != 0.0f);
	}
	for (size_t r = 0; r < (size_t)BT; r++) /* padding holds garbage the op must ignore */
		for (int j = V; j < Vp; j++)
			xc.logits[r * Vp + j] = 1e30f;
	xc.gscale = 1.0f / (float)(counted ? counted : 1);
	float *losses = fvec((size_t)BT, 1), *dl = fvec(n, 1);
	double *want = dvec((size_t)BT);
	ok(K->softmax_crossentropy(k, losses, dl, xc.logits, xc.targets, xc.weights, xc.gscale, BT,
				   V, Vp));
	ref_xent(want, xc.logits, xc.targets, xc.weights, BT, V, Vp);
	check_close("xent losses", losses, want, (size_t)BT, TOL_FWD);
	for (int r = 0; r < BT; r++) {
		if (xc.targets[r] < 0 || (weighted && xc.weights[r] == 0.0f)) {
			assert_true(losses[r] == 0.0f);
			for (int j = 0; j < Vp; j++)
				assert_true(dl[(size_t)r * Vp + j] == 0.0f);
		}
		for (int j = V; j < Vp; j++)
			assert_true(dl[(size_t)r * Vp + j] == 0.0f);
	}
	/* only the first V of each row are inputs: sample those */
	size_t m = MINZ(samples, n);
	size_t *idx = malloc(m * sizeof(size_t));
	float *an = malloc(m * sizeof(float));
	double *fd = dvec(m);
	assert_true(idx && an);
	for (size_t s = 0; s < m; s++) {
		idx[s] = samples >= n ? s : (size_t)(rnext() % n);
		if ((int)(idx[s] % (size_t)Vp) >= V)
			idx[s] -= (size_t)(Vp - V);
		an[s] = dl[idx[s]];
	}
	fd_grad(fd, xc.logits, idx, m, xent_loss, &xc);
	check_close("xent dlogits", an, fd, m, TOL_BWD);

	/* forward only, and in place (dlogits == logits) give the same */
	float *l2 = fvec((size_t)BT, 1), *inpl = fdup(xc.logits, n);
	ok(K->softmax_crossentropy(k, l2, NULL, xc.logits, xc.targets, xc.weights, xc.gscale, BT, V,
				   Vp));
	assert_memory_equal(l2, losses, (size_t)BT * sizeof(float));
	ok(K->softmax_crossentropy(k, l2, inpl, inpl, xc.targets, xc.weights, xc.gscale, BT, V, Vp));
	assert_memory_equal(l2, losses, (size_t)BT * sizeof(float));
	assert_memory_equal(inpl, dl, n * sizeof(float));
	free(l2), free(inpl), free(idx), free(an), free(fd), free(losses), free(dl), free(want);
	free(xc.logits), free(xc.targets), free(xc.weights), free(xc.tmp);
}

static void test_crossentropy(void **state)
{
	(void)state;
	xent_case(ctx, 1, 5, 5, false, SIZE_MAX);
	xent_case(ctx, 11, 37, 40, true, SIZE_MAX);
	xent_case(ctx, 9, 50, 64, false, SIZE_MAX);
	xent_case(ctx, 64, 1000, 1024, true, 3000); /* over the pool */
	xent_case(ctx_serial, 6, 257, 257, true, SIZE_MAX);
}

static void test_crossentropy_bad_target(void **state)
{
	(void)state;
	float logits[2 * 4] = { 0 }, losses[2];
	int32_t t[2] = { 1, 4 };
	assert_int_equal(K->softmax_crossentropy(ctx, losses, NULL, logits, t, NULL, 1.0f, 2, 4, 4),
			 -EINVAL);
	assert_non_null(strstr(zn_last_error(), "targets[1] = 4"));
	assert_int_equal(K->softmax_crossentropy(ctx, losses, NULL, logits, t, NULL, 1.0f, 2, 4, 3),
			 -EINVAL);
	assert_non_null(strstr(zn_last_error(), "Vp = 3"));
}

/* ---- casts ------------------------------------------------------------------------------------ */

static uint32_t bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	return u;
}

static float from_bits(uint32_t u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}

/* Independent reference: the nearest of the two bf16 values around x
 * (truncation and the next one up), compared in double, ties to even. */
static uint16_t ref_bf16(float x)
{
	if (isnan(x))
		return 0x7fc0;
	uint32_t u = bits(x);
	uint16_t lo = (uint16_t)(u >> 16), hi = (uint16_t)(lo + 1);
	if ((u & 0xffff) == 0)
		return lo;
	double dl = fabs((double)from_bits((uint32_t)lo << 16) - x);
	double dh = isinf(from_bits((uint32_t)hi << 16)) ? INFINITY
							 : fabs((double)from_bits((uint32_t)hi << 16) - x);
	if (isinf(dh) && (lo & 0x7fff) == 0x7f7f) {
		/* above the largest bf16: Inf from the half-way point on */
		double half = ldexp(1.0, 127) * (2.0 - ldexp(1.0, -8));
		return fabs((double)x) >= half ? (uint16_t)((lo & 0x8000) | 0x7f80) : lo;
	}
	if (dl < dh)
		return lo;
	if (dh < dl)
		return hi;
	return (lo & 1) ? hi : lo;
}

static float f16_value(uint16_t h) /* by the definition, not by bit tricks */
{
	int e = (h >> 10) & 0x1f, m = h & 0x3ff;
	double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
	return (float)((h & 0x8000) ? -v : v);
}

/* Independent reference for fp16: search the sorted positive values. */
static uint16_t ref_f16(float x)
{
	if (isnan(x))
		return 0; /* not used for NaN */
	uint16_t sign = signbit(x) ? 0x8000 : 0;
	double a = fabs((double)x);
	if (a >= 65520.0)
		return sign | 0x7c00;
	unsigned lo = 0, hi = 0x7bff; /* the largest finite */
	while (lo < hi) { /* the first h with value >= a */
		unsigned mid = (lo + hi) / 2;
		if (f16_value((uint16_t)mid) < a)
			lo = mid + 1;
		else
			hi = mid;
	}
	unsigned up = lo, down = lo ? lo - 1 : 0;
	double du = fabs(f16_value((uint16_t)up) - a), dd = fabs(f16_value((uint16_t)down) - a);
	unsigned r = du < dd ? up : dd < du ? down : (up & 1) ? down : up;
	return (uint16_t)(sign | r);
}

static void test_cast_special_values(void **state)
{
	(void)state;
	static const struct {
		uint32_t f;
		uint16_t bf, h;
	} cases[] = {
		{ 0x3f800000, 0x3f80, 0x3c00 },  /* 1 */
		{ 0xbf800000, 0xbf80, 0xbc00 },  /* -1 */
		{ 0x00000000, 0x0000, 0x0000 },
		{ 0x80000000, 0x8000, 0x8000 },  /* -0 */
		{ 0x3f808000, 0x3f80, 0x3c04 },  /* 1 + 2^-8: a bf16 tie, to even (down) */
		{ 0x3f818000, 0x3f82, 0x3c0c },  /* bf16 tie, to even (up) */
		{ 0x3f808001, 0x3f81, 0x3c04 },  /* just above the tie */
		{ 0x3f801000, 0x3f80, 0x3c00 },  /* fp16: 1 + 2^-11, a tie, to even (down) */
		{ 0x3f803000, 0x3f80, 0x3c02 },  /* fp16: 1 + 3 * 2^-11, a tie, to even (up) */
		{ 0x477fe000, 0x4780, 0x7bff },  /* 65504, the largest fp16 */
		{ 0x477fefff, 0x4780, 0x7bff },  /* just below 65520 */
		{ 0x477ff000, 0x4780, 0x7c00 },  /* 65520: Inf */
		{ 0x33800000, 0x3380, 0x0001 },  /* 2^-24, the smallest fp16 subnormal */
		{ 0x33000000, 0x3300, 0x0000 },  /* 2^-25: a tie, to even (0) */
		{ 0x33400000, 0x3340, 0x0001 },  /* 1.5 * 2^-25 */
		{ 0x38800000, 0x3880, 0x0400 },  /* 2^-14, the smallest fp16 normal */
		{ 0x387fe000, 0x3880, 0x0400 },  /* rounds up into the normals */
		{ 0x7f7fffff, 0x7f80, 0x7c00 },  /* FLT_MAX: Inf in both */
		{ 0x7f800000, 0x7f80, 0x7c00 },  /* Inf */
		{ 0xff800000, 0xff80, 0xfc00 },  /* -Inf */
		{ 0x7fc00000, 0x7fc0, 0x7e00 },  /* NaN */
		{ 0xffc00001, 0x7fc0, 0xfe00 },  /* -NaN with payload: bf16 canonical, fp16 keeps sign */
		{ 0x7f800001, 0x7fc0, 0x7e00 },  /* signalling NaN: quieted */
		{ 0x00000001, 0x0000, 0x0000 },  /* fp32 subnormal */
		{ 0x00010000, 0x0001, 0x0000 },  /* bf16 keeps fp32 subnormals */
	};
	size_t n = ARRAY_SIZE(cases);
	float f[32];
	uint16_t b[32], h[32];
	for (size_t i = 0; i < n; i++)
		f[i] = from_bits(cases[i].f);
	ok(K->cast(ctx, b, ZN_DTYPE_BF16, f, ZN_DTYPE_F32, n));
	ok(K->cast(ctx, h, ZN_DTYPE_F16, f, ZN_DTYPE_F32, n));
	for (size_t i = 0; i < n; i++) {
		if (b[i] != cases[i].bf || h[i] != cases[i].h)
			print_message("case %zu: 0x%08x -> bf16 0x%04x (want 0x%04x), fp16 0x%04x "
				      "(want 0x%04x)\n", i, cases[i].f, b[i], cases[i].bf, h[i],
				      cases[i].h);
		assert_int_equal(b[i], cases[i].bf);
		assert_int_equal(h[i], cases[i].h);
	}
}

static void test_cast_round_trip(void **state)
{
	(void)state;
	/* every 16-bit pattern: to fp32 is exact, and back gives it again
	 * (NaNs come back quiet: bf16 as 0x7fc0, fp16 with the quiet bit) */
	static uint16_t all[65536], back[65536];
	static float f[65536];
	for (unsigned i = 0; i < 65536; i++)
		all[i] = (uint16_t)i;
	ok(K->cast(ctx, f, ZN_DTYPE_F32, all, ZN_DTYPE_BF16, 65536));
	ok(K->cast(ctx, back, ZN_DTYPE_BF16, f, ZN_DTYPE_F32, 65536));
	for (unsigned i = 0; i < 65536; i++) {
		assert_true(bits(f[i]) == (uint32_t)i << 16);
		bool nan = (i & 0x7f80) == 0x7f80 && (i & 0x7f);
		assert_int_equal(back[i], nan ? 0x7fc0 : i);
	}
	ok(K->cast(ctx, f, ZN_DTYPE_F32, all, ZN_DTYPE_F16, 65536));
	ok(K->cast(ctx, back, ZN_DTYPE_F16, f, ZN_DTYPE_F32, 65536));
	for (unsigned i = 0; i < 65536; i++) {
		bool nan = (i & 0x7c00) == 0x7c00 && (i & 0x3ff);
		if (!nan && !(f[i] == f16_value((uint16_t)i)))
			print_message("fp16 0x%04x -> %.9g, want %.9g\n", i, (double)f[i],
				      (double)f16_value((uint16_t)i));
		if (!nan)
			assert_true(f[i] == f16_value((uint16_t)i) &&
				    !!signbit(f[i]) == !!(i & 0x8000));
		assert_int_equal(back[i], nan ? (i | 0x200) : i);
	}
	/* fp16 <-> bf16 directly is the same as through fp32 */
	static uint16_t direct[65536], via[65536];
	ok(K->cast(ctx, direct, ZN_DTYPE_BF16, all, ZN_DTYPE_F16, 65536));
	ok(K->cast(ctx, f, ZN_DTYPE_F32, all, ZN_DTYPE_F16, 65536));
	ok(K->cast(ctx, via, ZN_DTYPE_BF16, f, ZN_DTYPE_F32, 65536));
	assert_memory_equal(direct, via, sizeof(direct));
	/* in place, same element size */
	memcpy(via, all, sizeof(all));
	ok(K->cast(ctx, via, ZN_DTYPE_F16, via, ZN_DTYPE_BF16, 65536));
	ok(K->cast(ctx, direct, ZN_DTYPE_F16, all, ZN_DTYPE_BF16, 65536));
	assert_memory_equal(direct, via, sizeof(direct));
}

static void test_cast_random(void **state)
{
	(void)state;
	size_t n = 200003;
	float *f = malloc(n * sizeof(float));
	uint16_t *b = malloc(n * 2), *h = malloc(n * 2);
	assert_true(f && b && h);
	for (size_t i = 0; i < n; i++) {
		uint32_t u = (uint32_t)rnext();
		if (i % 2) /* half in fp16's range, where its rounding is interesting */
			u = (u & 0x807fffffu) | ((uint32_t)(100 + rnext() % 45) << 23);
		f[i] = from_bits(u);
		if (isnan(f[i]))
			f[i] = 1.0f;
	}
	ok(K->cast(ctx, b, ZN_DTYPE_BF16, f, ZN_DTYPE_F32, n));
	ok(K->cast(ctx, h, ZN_DTYPE_F16, f, ZN_DTYPE_F32, n));
	for (size_t i = 0; i < n; i++) {
		if (b[i] != ref_bf16(f[i]) || h[i] != ref_f16(f[i]))
			print_message("0x%08x: bf16 0x%04x want 0x%04x, fp16 0x%04x want 0x%04x\n",
				      bits(f[i]), b[i], ref_bf16(f[i]), h[i], ref_f16(f[i]));
		assert_int_equal(b[i], ref_bf16(f[i]));
		assert_int_equal(h[i], ref_f16(f[i]));
	}
	/* overlapping buffers are refused; fp32 <-> 16 bits in place too */
	assert_int_equal(K->cast(ctx, (char *)f + 2, ZN_DTYPE_F32, f, ZN_DTYPE_F32, 10), -EINVAL);
	assert_int_equal(K->cast(ctx, f, ZN_DTYPE_BF16, f, ZN_DTYPE_F32, 10), -EINVAL);
	assert_int_equal(K->cast(ctx, f, (enum zn_dtype)7, b, ZN_DTYPE_F32, 10), -EINVAL);
	free(f), free(b), free(h);
}

/* ---- scale, nonfinite, sumsq ------------------------------------------------------------------- */

static void test_scale(void **state)
{
	(void)state;
	size_t n = 100001;
	float *x = fvec(n, 100), *x0 = fdup(x, n);
	ok(K->scale(ctx, x, ZN_DTYPE_F32, 0.125f, n));
	for (size_t i = 0; i < n; i++)
		assert_true(x[i] == x0[i] * 0.125f);
	uint16_t *b = malloc(n * 2), *b0 = malloc(n * 2);
	assert_true(b && b0);
	for (enum zn_dtype d = ZN_DTYPE_F16; d <= ZN_DTYPE_BF16; d++) {
		ok(K->cast(ctx, b, d, x0, ZN_DTYPE_F32, n));
		memcpy(b0, b, n * 2);
		ok(K->scale(ctx, b, d, 3.0f, n));
		for (size_t i = 0; i < n; i += 97) {
			float v = d == ZN_DTYPE_F16 ? f16_value(b0[i]) : from_bits((uint32_t)b0[i] << 16);
			uint16_t want = d == ZN_DTYPE_F16 ? ref_f16(v * 3.0f) : ref_bf16(v * 3.0f);
			assert_int_equal(b[i], want);
		}
	}
	free(x), free(x0), free(b), free(b0);
}

/* accumulate: dst += src in fp32, rounded to dst's dtype, for every pair
 * of dtypes, against the same arithmetic written out here. */
static void test_accumulate(void **state)
{
	(void)state;
	size_t n = 70001; /* several chunks */
	float *a = fvec(n, 3), *b = fvec(n, 2), *d32 = malloc(n * 4), *s32 = malloc(n * 4);
	uint16_t *d16 = malloc(n * 2), *s16 = malloc(n * 2);
	assert_true(d32 && s32 && d16 && s16);
	for (enum zn_dtype dd = ZN_DTYPE_F32; dd <= ZN_DTYPE_BF16; dd++) {
		for (enum zn_dtype sd = ZN_DTYPE_F32; sd <= ZN_DTYPE_BF16; sd++) {
			void *dst = dd == ZN_DTYPE_F32 ? (void *)d32 : d16;
			void *src = sd == ZN_DTYPE_F32 ? (void *)s32 : s16;
			ok(K->cast(ctx, dst, dd, a, ZN_DTYPE_F32, n));
			ok(K->cast(ctx, src, sd, b, ZN_DTYPE_F32, n));
			ok(K->accumulate(ctx, dst, dd, src, sd, n));
			for (size_t i = 0; i < n; i++) {
				float x = dd == ZN_DTYPE_F32 ? a[i]
					  : dd == ZN_DTYPE_F16 ? f16_value(ref_f16(a[i]))
							       : from_bits((uint32_t)ref_bf16(a[i]) << 16);
				float y = sd == ZN_DTYPE_F32 ? b[i]
					  : sd == ZN_DTYPE_F16 ? f16_value(ref_f16(b[i]))
							       : from_bits((uint32_t)ref_bf16(b[i]) << 16);
				float sum = x + y;
				if (dd == ZN_DTYPE_F32)
					assert_true(d32[i] == sum);
				else
					assert_int_equal(d16[i], dd == ZN_DTYPE_F16 ? ref_f16(sum)
										     : ref_bf16(sum));
			}
		}
	}
	assert_int_equal(K->accumulate(ctx, d32, ZN_DTYPE_F32, (char *)d32 + 4, ZN_DTYPE_F32, 8),
			 -EINVAL);
	assert_int_equal(K->accumulate(ctx, d32, (enum zn_dtype)9, s32, ZN_DTYPE_F32, 8), -EINVAL);
	free(a), free(b), free(d32), free(s32), free(d16), free(s16);
}

static void test_nonfinite(void **state)
{
	(void)state;
	size_t n = 300007; /* several reduction chunks */
	float *x = fvec(n, 1e30f);
	uint16_t *h = malloc(n * 2);
	assert_non_null(h);
	int32_t flag = 0;
	ok(K->nonfinite(ctx, &flag, x, ZN_DTYPE_F32, n));
	assert_int_equal(flag, 0);
	float bad[] = { INFINITY, -INFINITY, NAN };
	size_t where[] = { 0, 131072 + 5, n - 1 };
	for (size_t k = 0; k < 3; k++)
		for (size_t w = 0; w < 3; w++) {
			float keep = x[where[w]];
			x[where[w]] = bad[k];
			flag = 0;
			ok(K->nonfinite(ctx, &flag, x, ZN_DTYPE_F32, n));
			assert_int_equal(flag, 1);
			x[where[w]] = keep;
		}
	/* the flag is only ever set: a clean tensor leaves a 1 alone */
	flag = 1;
	ok(K->nonfinite(ctx, &flag, x, ZN_DTYPE_F32, n));
	assert_int_equal(flag, 1);
	/* 16-bit: 1e30 overflows fp16 to Inf, not bf16 */
	for (size_t i = 0; i < n; i++)
		x[i] = frand(1000);
	x[77777] = 1e30f;
	ok(K->cast(ctx, h, ZN_DTYPE_F16, x, ZN_DTYPE_F32, n));
	flag = 0;
	ok(K->nonfinite(ctx, &flag, h, ZN_DTYPE_F16, n));
	assert_int_equal(flag, 1);
	ok(K->cast(ctx, h, ZN_DTYPE_BF16, x, ZN_DTYPE_F32, n));
	flag = 0;
	ok(K->nonfinite(ctx, &flag, h, ZN_DTYPE_BF16, n));
	assert_int_equal(flag, 0);
	h[n - 1] = 0x7fc1;
	ok(K->nonfinite(ctx, &flag, h, ZN_DTYPE_BF16, n));
	assert_int_equal(flag, 1);
	free(x), free(h);
}

/* The op table's Adam (the on-device optimizer's entry point) is the CPU
 * optimizer on the context's workers: the same bits as zn_adam_step. */
static void test_adam_op(void **state)
{
	(void)state;
	const size_t n = 50021;
	float *p1 = malloc(n * 4), *p2 = malloc(n * 4), *g = malloc(n * 4);
	float *m1 = calloc(n, 4), *m2 = calloc(n, 4), *v1 = calloc(n, 4), *v2 = calloc(n, 4);
	assert_true(p1 && p2 && g && m1 && m2 && v1 && v2);
	for (size_t i = 0; i < n; i++) {
		p1[i] = p2[i] = (float)((double)(i % 977) / 977.0 - 0.5);
		g[i] = (float)((double)(i % 131) / 131.0 - 0.5) * 0.01f;
	}
	struct zn_adam_hparams hp;
	zn_adam_defaults(&hp);
	hp.weight_decay = 0.1;
	for (uint64_t step = 1; step <= 3; step++) {
		struct zn_adam_tensors t = { .n = n, .param = p1, .grad = g,
					     .grad_dtype = ZN_DTYPE_F32, .exp_avg = m1,
					     .exp_avg_sq = v1 };
		assert_int_equal(zn_adam_step(&hp, step, 0.25f, &t, NULL), 0);
		assert_int_equal(K->adam(ctx, &hp, step, 0.25f, p2, g, m2, v2, n), 0);
	}
	assert_memory_equal(p1, p2, n * 4);
	assert_memory_equal(m1, m2, n * 4);
	assert_memory_equal(v1, v2, n * 4);
	assert_true(p1[7] != (float)((double)7 / 977.0 - 0.5)); /* it did move */
	hp.eps = 0;
	assert_int_equal(K->adam(ctx, &hp, 4, 1.0f, p2, g, m2, v2, n), -EINVAL);
	free(p1), free(p2), free(g), free(m1), free(m2), free(v1), free(v2);
}

static void test_sumsq(void **state)
{
	(void)state;
	size_t n = 300007;
	float *x = fvec(n, 3);
	double want = 0, got = 1.5, got1 = 1.5;
	for (size_t i = 0; i < n; i++)
		want += (double)x[i] * x[i];
	ok(K->sumsq(ctx, &got, x, ZN_DTYPE_F32, n));
	assert_true(fabs(got - 1.5 - want) <= 1e-12 * want);
	/* the same bits with one thread: the sum's order is fixed by n */
	ok(K->sumsq(ctx_serial, &got1, x, ZN_DTYPE_F32, n));
	assert_true(got == got1);
	uint16_t *h = malloc(n * 2);
	assert_non_null(h);
	for (enum zn_dtype d = ZN_DTYPE_F16; d <= ZN_DTYPE_BF16; d++) {
		ok(K->cast(ctx, h, d, x, ZN_DTYPE_F32, n));
		want = 0;
		for (size_t i = 0; i < n; i++) {
			double v = d == ZN_DTYPE_F16 ? f16_value(h[i]) : from_bits((uint32_t)h[i] << 16);
			want += v * v;
		}
		got = 0;
		ok(K->sumsq(ctx, &got, h, d, n));
		assert_true(fabs(got - want) <= 1e-12 * want);
	}
	x[12345] = INFINITY;
	got = 0;
	ok(K->sumsq(ctx, &got, x, ZN_DTYPE_F32, n));
	assert_true(isinf(got));
	x[12345] = NAN;
	ok(K->sumsq(ctx, &got, x, ZN_DTYPE_F32, n));
	assert_true(isnan(got));
	got = 2;
	ok(K->sumsq(ctx, &got, x, ZN_DTYPE_F32, 0));
	assert_true(got == 2);
	free(x), free(h);
}

/* ---- the vector paths and the pool give the same bits ------------------------------------------- */

/* Run every op except matmul on c and return all outputs, concatenated. */
static float *run_all(struct zn_kctx *c, size_t *len)
{
	uint64_t keep = rng;
	rng = 12345;
	int B = 2, T = 70, C = 48, NH = 4, V = 300;
	size_t BT = (size_t)B * T, n = BT * C, nq = 3 * n;
	size_t total = n * 3 + nq * 2 + BT * 2 + (size_t)V * C + (size_t)T * C + 2 * C + BT * V + BT +
		       B * NH * T + 8 + (B * NH * T + BT * 96) + (BT + 2 * n + C) + 4 * n;
	float *o = calloc(total, sizeof(float)), *p = o;
	assert_non_null(o);
	int32_t tok[140];
	for (size_t i = 0; i < BT; i++)
		tok[i] = (int32_t)(rnext() % (uint64_t)V);
	float *wte = fvec((size_t)V * C, 1), *wpe = fvec((size_t)T * C, 1), *x = fvec(n, 2);
	float *w = fvec((size_t)C, 1), *b = fvec((size_t)C, 1), *g = fvec(n, 1);
	float *qkv = fvec(nq, 1), *gq = fvec(n, 1), *logits = fvec(BT * V, 3);
	ok(K->encoder_forward(c, p, tok, wte, wpe, B, T, C, V));
	p += n;
	ok(K->encoder_backward(c, p, p + (size_t)V * C, g, tok, B, T, C, V));
	p += (size_t)V * C + (size_t)T * C;
	float *mean = p, *rstd = p + BT;
	ok(K->layernorm_forward(c, p + 2 * BT, mean, rstd, x, w, b, (int)BT, C));
	p += 2 * BT + n;
	ok(K->layernorm_backward(c, p, p + n, p + n + C, g, x, w, mean, rstd, (int)BT, C));
	p += n + 2 * C;
	float *lse = p;
	ok(K->attention_forward(c, p + B * NH * T, lse, qkv, B, T, NH, NH, C / NH));
	p += B * NH * T + n;
	ok(K->attention_backward(c, p, gq, qkv, lse, B, T, NH, NH, C / NH));
	p += nq;
	/* grouped-query: NH 4, NKV 2, HS 8 on the first 2/3 of qkv's rows'
	 * worth of elements (rows of 64) */
	float *glse = p;
	ok(K->attention_forward(c, p + B * NH * T, glse, qkv, B, T, NH, 2, 8));
	p += B * NH * T + BT * 32;
	ok(K->attention_backward(c, p, gq, qkv, glse, B, T, NH, 2, 8));
	p += BT * 64;
	float *rms_rstd = p;
	ok(K->rmsnorm_forward(c, p + BT, rms_rstd, x, w, 1e-5f, (int)BT, C));
	p += BT + n;
	ok(K->rmsnorm_backward(c, p, p + n, g, x, w, rms_rstd, (int)BT, C));
	p += n + C;
	float inv[6] = { 1.0f, 0.3f, 0.1f, 0.03f, 0.01f, 0.003f };
	ok(K->rope_forward(c, p, C, x, C, inv, B, T, 4, 12));
	p += n;
	ok(K->rope_backward(c, p, C, g, C, inv, B, T, 4, 12));
	p += n;
	ok(K->swiglu_forward(c, p, x, g, n));
	ok(K->swiglu_backward(c, p, p + n, qkv, x, g, n)); /* onto the forward's output */
	p += 2 * n;
	ok(K->gelu_forward(c, p, x, n));
	ok(K->gelu_backward(c, p, g, x, n)); /* accumulates onto the forward's output */
	p += n;
	int32_t tg[140];
	for (size_t i = 0; i < BT; i++)
		tg[i] = i % 7 == 0 ? -1 : tok[(i + 1) % BT];
	ok(K->softmax_crossentropy(c, p, p + BT, logits, tg, NULL, 0.01f, (int)BT, V, V));
	p += BT + BT * V;
	double s = 0;
	ok(K->sumsq(c, &s, x, ZN_DTYPE_F32, n));
	memcpy(p, &s, sizeof(s));
	p += 2;
	assert_true((size_t)(p - o) <= total);
	*len = (size_t)(p - o);
	free(wte), free(wpe), free(x), free(w), free(b), free(g), free(qkv), free(gq), free(logits);
	rng = keep;
	return o;
}

static void test_paths_agree(void **state)
{
	(void)state;
	size_t n1, n2, n3;
	struct zn_kctx *scalar = make_ctx(pool, ZN_ADAM_SIMD_SCALAR);
	assert_non_null(scalar);
	float *a = run_all(scalar, &n1);
	float *b = run_all(ctx_serial, &n2);
	assert_int_equal(n1, n2);
	/* the pool and one thread: same bits */
	float *c = run_all(ctx, &n3);
	assert_memory_equal(b, c, n2 * sizeof(float));
	if (zn_cpu_has(ZN_CPU_AVX2) && zn_cpu_has(ZN_CPU_FMA)) {
		struct zn_kctx *avx2 = make_ctx(NULL, ZN_ADAM_SIMD_AVX2);
		if (avx2) { /* absent when this build has no AVX2 path */
			float *d = run_all(avx2, &n3);
			/* the baseline and AVX2 loops: same bits */
			assert_memory_equal(a, d, n1 * sizeof(float));
			free(d);
			K->ctx_destroy(avx2);
		}
	} else {
		assert_memory_equal(a, b, n1 * sizeof(float));
	}
	free(a), free(b), free(c);
	K->ctx_destroy(scalar);
}

/* ---- the table and its errors ---------------------------------------------------------------------- */

static void test_table(void **state)
{
	(void)state;
	assert_int_equal(K->version, ZN_KERNELS_VERSION);
	assert_string_equal(K->name, "cpu");
	assert_false(K->device_memory);
	/* every op is there */
	const void *const *fn = (const void *const *)&K->ctx_create;
	size_t nfn = (sizeof(*K) - offsetof(struct zn_kernels, ctx_create)) / sizeof(void *);
	for (size_t i = 0; i < nfn; i++)
		assert_non_null(fn[i]);
	assert_null(zn_kernels_get("tpu"));
	assert_non_null(strstr(zn_last_error(), "\"tpu\""));
	const struct zn_kernels *cu = zn_kernels_get("cuda");
	if (!cu) {
		assert_non_null(strstr(zn_last_error(), "without the CUDA toolkit"));
	} else {
		assert_true(cu->device_memory);
		/* cuBLAS is loaded by the first context, before the device is
		 * looked for: without a GPU the context fails for want of a
		 * device, never of cuBLAS's functions. */
		struct zn_kernels_params kp;
		zn_kernels_params_default(&kp);
		struct zn_kctx *c = cu->ctx_create(&kp);
		if (c)
			cu->ctx_destroy(c);
		else
			assert_null(strstr(zn_last_error(), "cuBLAS"));
	}
	assert_string_equal(zn_dtype_name(ZN_DTYPE_BF16), "bf16");
	assert_int_equal(zn_dtype_size(ZN_DTYPE_F16), 2);
	assert_int_equal(zn_dtype_size(ZN_DTYPE_F32), 4);
	assert_int_equal(zn_dtype_size((enum zn_dtype)9), 0);
}

static void test_errors(void **state)
{
	(void)state;
	struct zn_kernels_params kp;
	zn_kernels_params_default(&kp);
	kp.dtype = (enum zn_dtype)ZN_DTYPE_COUNT;
	assert_null(K->ctx_create(&kp));
	assert_non_null(strstr(zn_last_error(), "is not offered; use fp32, fp16, bf16"));
	assert_null(K->ctx_create(NULL));
	float a[4] = { 0 }, b[4] = { 0 };
	assert_int_equal(K->gelu_forward(NULL, a, b, 4), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "context is NULL"));
	/* a context of another table (faked: only its head is read) */
	struct { const struct zn_kernels *ops; enum zn_dtype d; } fake = { NULL, ZN_DTYPE_F32 };
	static const struct zn_kernels other = { .name = "other" };
	fake.ops = &other;
	assert_int_equal(K->gelu_forward((struct zn_kctx *)&fake, a, b, 4), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "belongs to the \"other\" kernels"));
	assert_int_equal(K->matmul_forward(ctx, a, b, NULL, NULL, 1, 2, 2), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "weight is NULL"));
	assert_int_equal(K->matmul_forward(ctx, a, b, b, NULL, 1, -2, 2), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "C = -2"));
	assert_int_equal(K->layernorm_backward(ctx, a, a, a, b, b, b, NULL, NULL, 1, 4), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "mean"));
	int32_t flag;
	assert_int_equal(K->nonfinite(ctx, &flag, a, (enum zn_dtype)3, 4), -EINVAL);
	assert_int_equal(K->sumsq(ctx, NULL, a, ZN_DTYPE_F32, 4), -EINVAL);
	/* an empty elementwise op is fine */
	ok(K->gelu_forward(ctx, a, b, 0));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_encoder),
		cmocka_unit_test(test_encoder_bad_token),
		cmocka_unit_test(test_encoder_no_positions),
		cmocka_unit_test(test_tiles),
		cmocka_unit_test(test_layernorm),
		cmocka_unit_test(test_matmul),
		cmocka_unit_test(test_attention),
		cmocka_unit_test(test_attention_gqa),
		cmocka_unit_test(test_attention_bad_shape),
		cmocka_unit_test(test_rmsnorm),
		cmocka_unit_test(test_rope),
		cmocka_unit_test(test_rope_packs_qkv),
		cmocka_unit_test(test_swiglu),
		cmocka_unit_test(test_gelu),
		cmocka_unit_test(test_residual),
		cmocka_unit_test(test_crossentropy),
		cmocka_unit_test(test_crossentropy_bad_target),
		cmocka_unit_test(test_cast_special_values),
		cmocka_unit_test(test_cast_round_trip),
		cmocka_unit_test(test_cast_random),
		cmocka_unit_test(test_scale),
		cmocka_unit_test(test_accumulate),
		cmocka_unit_test(test_nonfinite),
		cmocka_unit_test(test_sumsq),
		cmocka_unit_test(test_adam_op),
		cmocka_unit_test(test_paths_agree),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
