/* kernels/cuda against kernels/cpu on random data (suite `cuda`).
 *
 * Without a CUDA build or without a GPU the program prints a TAP plan of
 * zero tests with "# SKIP" and the reason, which meson reports as skipped.
 *
 * Each op runs on the cpu kernels and on the cuda kernels with the same
 * inputs; for a 16-bit context the inputs are rounded to it first, so
 * both sides see the same values, and the cpu side computes in fp32.
 * Tolerances, as max |cuda - cpu| <= TOL * max |cpu| over the output:
 *   fp32 storage  TOL_F32 = 1e-4   (cuBLAS sums in another order; no TF32)
 *   fp16 storage  TOL_F16 = 4e-3   (11 bits of mantissa, likewise)
 *   bf16 storage  TOL_BF16 = 3e-2  (outputs and attention probabilities
 *                                   rounded to 8 bits of mantissa)
 * The casts and the fp32 scale are compared bit for bit; sumsq to 1e-12.
 * Every cuda op also runs twice and must give the same bits (no atomics).
 * The Llama ops (RMSNorm, the rotary embedding packing q, k, v into qkv,
 * SwiGLU, grouped-query attention, the embedding without positions) are
 * compared the same way.
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

#include "zn_build.h"
#include "zinc/kernels.h"

#if ZN_HAVE_CUDA
#include <cuda_runtime.h>

#define TOL_F32 1e-4
#define TOL_F16 4e-3
#define TOL_BF16 3e-2

static const struct zn_kernels *KC, *KH;
static struct zn_kctx *cctx[ZN_DTYPE_COUNT]; /* cuda, by storage dtype */
static struct zn_kctx *hctx;                 /* cpu, fp32 */
static cudaStream_t stream;

static uint64_t rng = 0x243f6a8885a308d3ull;

static float frand(float a)
{
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	uint64_t r = rng * 0x2545f4914f6cdd1dull;
	return a * (float)((double)(r >> 11) * 0x1p-53 * 2.0 - 1.0);
}

static void ok(int rc)
{
	if (rc != 0) {
		print_message("op failed: %d: %s\n", rc, zn_last_error());
		fail();
	}
}

static void cuda_ok(cudaError_t e, const char *what)
{
	if (e != cudaSuccess) {
		print_message("%s: %s\n", what, cudaGetErrorString(e));
		fail();
	}
}

/* Random values in [-a, a), representable in dt (rounded through it). */
static float *rnd(size_t n, float a, enum zn_dtype dt)
{
	float *p = malloc(n * sizeof(float) + 4);
	uint16_t *h = malloc(n * 2 + 4);
	assert_true(p && h);
	for (size_t i = 0; i < n; i++)
		p[i] = frand(a);
	if (dt != ZN_DTYPE_F32) {
		ok(KH->cast(hctx, h, dt, p, ZN_DTYPE_F32, n));
		ok(KH->cast(hctx, p, ZN_DTYPE_F32, h, dt, n));
	}
	free(h);
	return p;
}

static float *hcopy(const float *a, size_t n)
{
	float *p = malloc(n * sizeof(float) + 4);
	assert_non_null(p);
	memcpy(p, a, n * sizeof(float));
	return p;
}

/* A device copy of n host floats, stored as dt. */
static void *dev(const void *host, size_t n, enum zn_dtype dt)
{
	size_t bytes = n * zn_dtype_size(dt);
	void *d = NULL;
	cuda_ok(cudaMalloc(&d, bytes ? bytes : 4), "cudaMalloc");
	if (!host || !n)
		return d;
	void *tmp = malloc(bytes);
	assert_non_null(tmp);
	ok(KH->cast(hctx, tmp, dt, host, ZN_DTYPE_F32, n));
	cuda_ok(cudaMemcpy(d, tmp, bytes, cudaMemcpyHostToDevice), "cudaMemcpy to device");
	free(tmp);
	return d;
}

static void *dev_raw(const void *host, size_t bytes)
{
	void *d = NULL;
	cuda_ok(cudaMalloc(&d, bytes ? bytes : 4), "cudaMalloc");
	if (host && bytes)
		cuda_ok(cudaMemcpy(d, host, bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
	return d;
}

/* n values of dt on the device, back as host floats (malloc'ed). */
static float *host(const void *d, size_t n, enum zn_dtype dt)
{
	size_t bytes = n * zn_dtype_size(dt);
	cuda_ok(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
	void *tmp = malloc(bytes + 4);
	float *h = malloc(n * sizeof(float) + 4);
	assert_true(tmp && h);
	cuda_ok(cudaMemcpy(tmp, d, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy to host");
	ok(KH->cast(hctx, h, ZN_DTYPE_F32, tmp, dt, n));
	free(tmp);
	return h;
}

static void check_(const char *what, enum zn_dtype dt, const float *got, const float *want,
		   size_t n, const char *file, int line)
{
	double tol = dt == ZN_DTYPE_BF16 ? TOL_BF16 : dt == ZN_DTYPE_F16 ? TOL_F16 : TOL_F32;
	double scale = 0, worst = 0;
	size_t wi = 0;
	for (size_t i = 0; i < n; i++)
		scale = fmax(scale, fabs((double)want[i]));
	for (size_t i = 0; i < n; i++) {
		double e = fabs((double)got[i] - want[i]);
		if (!(e <= worst)) {
			worst = e;
			wi = i;
		}
	}
	if (!(worst <= tol * (scale > 0 ? scale : 1))) {
		print_message("%s:%d: %s (%s): element %zu is %.8g on cuda, %.8g on cpu (error "
			      "%.3g, allowed %.3g)\n", file, line, what, zn_dtype_name(dt), wi,
			      (double)got[wi], (double)want[wi], worst, tol * scale);
		fail();
	}
}
#define check(what, dt, got, want, n) check_(what, dt, got, want, n, __FILE__, __LINE__)

/* The device buffer d (n of dt) compared with the host result want, then
 * freed on the host side. */
static void check_dev_(const char *what, enum zn_dtype dt, const void *d, const float *want,
		       size_t n, const char *file, int line)
{
	float *got = host(d, n, dt);
	check_(what, dt, got, want, n, file, line);
	free(got);
}
#define check_dev(what, dt, d, want, n) check_dev_(what, dt, d, want, n, __FILE__, __LINE__)

/* Two device buffers hold the same bytes. */
static void same_bits(const void *a, const void *b, size_t bytes)
{
	cuda_ok(cudaStreamSynchronize(stream), "sync");
	void *ha = malloc(bytes + 4), *hb = malloc(bytes + 4);
	assert_true(ha && hb);
	cuda_ok(cudaMemcpy(ha, a, bytes, cudaMemcpyDeviceToHost), "copy");
	cuda_ok(cudaMemcpy(hb, b, bytes, cudaMemcpyDeviceToHost), "copy");
	assert_memory_equal(ha, hb, bytes);
	free(ha), free(hb);
}

static const enum zn_dtype dtypes[] = { ZN_DTYPE_F32, ZN_DTYPE_F16, ZN_DTYPE_BF16 };
#define NDT (sizeof(dtypes) / sizeof(dtypes[0]))

/* ---- ops --------------------------------------------------------------------------------- */

static void test_encoder(void **state)
{
	(void)state;
	int B = 3, T = 37, C = 40, V = 61;
	size_t BT = (size_t)B * T;
	int32_t *tok = malloc(BT * sizeof(int32_t));
	assert_non_null(tok);
	for (size_t i = 0; i < BT; i++) /* many repeats: the sorted path sums runs */
		tok[i] = (int32_t)((i * 7) % 13);
	int32_t *dtok = dev_raw(tok, BT * sizeof(int32_t));
	for (size_t di = 0; di < NDT; di++) {
		enum zn_dtype dt = dtypes[di];
		struct zn_kctx *c = cctx[dt];
		float *wte = rnd((size_t)V * C, 1, dt), *wpe = rnd((size_t)T * C, 1, dt);
		float *out = malloc(BT * C * sizeof(float));
		ok(KH->encoder_forward(hctx, out, tok, wte, wpe, B, T, C, V));
		void *dwte_ = dev(wte, (size_t)V * C, dt), *dwpe_ = dev(wpe, (size_t)T * C, dt);
		void *dout = dev(NULL, BT * C, dt);
		ok(KC->encoder_forward(c, dout, dtok, dwte_, dwpe_, B, T, C, V));
		check_dev("encoder out", dt, dout, out, BT * C);

		float *g = rnd(BT * C, 1, dt), *gte = rnd((size_t)V * C, 1, dt),
		      *gpe = rnd((size_t)T * C, 1, dt);
		void *dg = dev(g, BT * C, dt), *dgte = dev(gte, (size_t)V * C, dt),
		     *dgpe = dev(gpe, (size_t)T * C, dt), *dgte2 = dev(gte, (size_t)V * C, dt);
		ok(KH->encoder_backward(hctx, gte, gpe, g, tok, B, T, C, V));
		ok(KC->encoder_backward(c, dgte, dgpe, dg, dtok, B, T, C, V));
		ok(KC->encoder_backward(c, dgte2, NULL, dg, dtok, B, T, C, V));
		check_dev("encoder dwte", dt, dgte, gte, (size_t)V * C);
		check_dev("encoder dwpe", dt, dgpe, gpe, (size_t)T * C);
		same_bits(dgte, dgte2, (size_t)V * C * zn_dtype_size(dt));
		cudaFree(dwte_), cudaFree(dwpe_), cudaFree(dout), cudaFree(dg), cudaFree(dgte);
		cudaFree(dgpe), cudaFree(dgte2);
		free(wte), free(wpe), free(out), free(g), free(gte), free(gpe);
	}
	cudaFree(dtok);
	free(tok);
}

static void test_layernorm(void **state)
{
	(void)state;
	int BT = 129, C = 88;
	size_t n = (size_t)BT * C;
	for (size_t di = 0; di < NDT; di++) {
		enum zn_dtype dt = dtypes[di];
		struct zn_kctx *c = cctx[dt];
		float *x = rnd(n, 2, dt), *w = rnd((size_t)C, 1, dt), *b = rnd((size_t)C, 1, dt);
		float *out = malloc(n * 4), *mean = malloc((size_t)BT * 4), *rstd = malloc((size_t)BT * 4);
		ok(KH->layernorm_forward(hctx, out, mean, rstd, x, w, b, BT, C));
		void *dx = dev(x, n, dt), *dw = dev(w, (size_t)C, dt), *db = dev(b, (size_t)C, dt);
		void *dout = dev(NULL, n, dt);
		float *dmean = dev(NULL, (size_t)BT, ZN_DTYPE_F32), *drstd = dev(NULL, (size_t)BT, ZN_DTYPE_F32);
		ok(KC->layernorm_forward(c, dout, dmean, drstd, dx, dw, db, BT, C));
		check_dev("layernorm out", dt, dout, out, n);
		check_dev("layernorm mean", ZN_DTYPE_F32, dmean, mean, (size_t)BT);
		check_dev("layernorm rstd", ZN_DTYPE_F32, drstd, rstd, (size_t)BT);

		float *g = rnd(n, 1, dt), *gi = rnd(n, 1, dt), *gw = rnd((size_t)C, 1, dt),
		      *gb = rnd((size_t)C, 1, dt);
		void *dg = dev(g, n, dt), *dgi = dev(gi, n, dt), *dgw = dev(gw, (size_t)C, dt),
		     *dgb = dev(gb, (size_t)C, dt), *dgw2 = dev(gw, (size_t)C, dt);
		/* the cpu backward from the cpu statistics, the cuda one from its own */
		ok(KH->layernorm_backward(hctx, gi, gw, gb, g, x, w, mean, rstd, BT, C));
		ok(KC->layernorm_backward(c, dgi, dgw, dgb, dg, dx, dw, dmean, drstd, BT, C));
		ok(KC->layernorm_backward(c, NULL, dgw2, NULL, dg, dx, dw, dmean, drstd, BT, C));
		check_dev("layernorm dinp", dt, dgi, gi, n);
		check_dev("layernorm dweight", dt, dgw, gw, (size_t)C);
		check_dev("layernorm dbias", dt, dgb, gb, (size_t)C);
		same_bits(dgw, dgw2, (size_t)C * zn_dtype_size(dt));
		cudaFree(dx), cudaFree(dw), cudaFree(db), cudaFree(dout), cudaFree(dmean), cudaFree(drstd);
		cudaFree(dg), cudaFree(dgi), cudaFree(dgw), cudaFree(dgb), cudaFree(dgw2);
		free(x), free(w), free(b), free(out), free(mean), free(rstd), free(g), free(gi), free(gw);
		free(gb);
	}
}

static void matmul_case(enum zn_dtype dt, int BT, int C, int OC, bool bias)
{
	struct zn_kctx *c = cctx[dt];
	size_t ni = (size_t)BT * C, nw = (size_t)OC * C, no = (size_t)BT * OC;
	float *x = rnd(ni, 1, dt), *w = rnd(nw, 1, dt), *b = bias ? rnd((size_t)OC, 1, dt) : NULL;
	float *out = malloc(no * 4);
	ok(KH->matmul_forward(hctx, out, x, w, b, BT, C, OC));
	void *dx = dev(x, ni, dt), *dw = dev(w, nw, dt), *db = bias ? dev(b, (size_t)OC, dt) : NULL;
	void *dout = dev(NULL, no, dt);
	ok(KC->matmul_forward(c, dout, dx, dw, db, BT, C, OC));
	check_dev("matmul out", dt, dout, out, no);

	float *g = rnd(no, 1, dt), *gi = rnd(ni, 1, dt), *gw = rnd(nw, 1, dt),
	      *gb = rnd((size_t)OC, 1, dt);
	void *dg = dev(g, no, dt), *dgi = dev(gi, ni, dt), *dgw = dev(gw, nw, dt),
	     *dgb = dev(gb, (size_t)OC, dt);
	ok(KH->matmul_backward(hctx, gi, gw, bias ? gb : NULL, g, x, w, BT, C, OC));
	ok(KC->matmul_backward(c, dgi, dgw, bias ? dgb : NULL, dg, dx, dw, BT, C, OC));
	check_dev("matmul dinp", dt, dgi, gi, ni);
	check_dev("matmul dweight", dt, dgw, gw, nw);
	check_dev("matmul dbias", dt, dgb, gb, (size_t)OC);
	cudaFree(dx), cudaFree(dw), cudaFree(db), cudaFree(dout), cudaFree(dg), cudaFree(dgi);
	cudaFree(dgw), cudaFree(dgb);
	free(x), free(w), free(b), free(out), free(g), free(gi), free(gw), free(gb);
}

/* A vocabulary in tiles of R rows: the embedding's tiles give the whole
 * ops' bits on the device too; the classifier's tiles (logits columns,
 * weight rows) match the cpu's whole ops to the dtype's tolerance. */
static void test_tiles(void **state)
{
	(void)state;
	const int BT = 70, C = 48, V = 203, R = 64;
	int32_t *tok = malloc(BT * sizeof(int32_t));
	assert_non_null(tok);
	for (int i = 0; i < BT; i++)
		tok[i] = (int32_t)((i * 37) % V);
	int32_t *dtok = dev_raw(tok, BT * sizeof(int32_t));
	for (size_t di = 0; di < NDT; di++) {
		enum zn_dtype dt = dtypes[di];
		struct zn_kctx *c = cctx[dt];
		const size_t esz = zn_dtype_size(dt), nw = (size_t)V * C, nx = (size_t)BT * C;
		float *w = rnd(nw, 1, dt), *x = rnd(nx, 1, dt), *g = rnd(nx, 1, dt);
		float *dl = rnd((size_t)BT * V, 1, dt);
		void *d_w = dev(w, nw, dt), *d_x = dev(x, nx, dt), *d_g = dev(g, nx, dt);
		void *d_dl = dev(dl, (size_t)BT * V, dt);
		void *out = dev(NULL, nx, dt), *out_t = dev(NULL, nx, dt);
		void *dw = dev(NULL, nw, dt), *dw_t = dev(NULL, nw, dt);
		cuda_ok(cudaMemset(dw, 0, nw * esz), "memset");
		cuda_ok(cudaMemset(dw_t, 0, nw * esz), "memset");
		ok(KC->encoder_forward(c, out, dtok, d_w, NULL, 1, BT, C, V));
		ok(KC->encoder_backward(c, dw, NULL, d_g, dtok, 1, BT, C, V));
		for (int r0 = 0; r0 < V; r0 += R) {
			int rows = V - r0 < R ? V - r0 : R;
			const char *wr = (const char *)d_w + (size_t)r0 * C * esz;
			ok(KC->embedding_rows_forward(c, out_t, dtok, wr, r0, rows, BT, C));
			ok(KC->embedding_rows_backward(c, (char *)dw_t + (size_t)r0 * C * esz, d_g,
						       dtok, r0, rows, BT, C));
		}
		same_bits(out, out_t, nx * esz);
		same_bits(dw, dw_t, nw * esz);

		float *logits = malloc((size_t)BT * V * 4), *hx = calloc(nx, 4), *hw = calloc(nw, 4);
		ok(KH->matmul_forward(hctx, logits, x, w, NULL, BT, C, V));
		ok(KH->matmul_backward(hctx, hx, hw, NULL, dl, x, w, BT, C, V));
		void *lg = dev(NULL, (size_t)BT * V, dt), *gx = dev(NULL, nx, dt);
		void *gw = dev(NULL, nw, dt);
		cuda_ok(cudaMemset(gx, 0, nx * esz), "memset");
		cuda_ok(cudaMemset(gw, 0, nw * esz), "memset");
		for (int r0 = 0; r0 < V; r0 += R) {
			int rows = V - r0 < R ? V - r0 : R;
			const char *wr = (const char *)d_w + (size_t)r0 * C * esz;
			ok(KC->matmul_forward_ld(c, (char *)lg + (size_t)r0 * esz, V, d_x, wr, BT, C,
						 rows));
			ok(KC->matmul_backward_ld(c, gx, (char *)gw + (size_t)r0 * C * esz,
						  (const char *)d_dl + (size_t)r0 * esz, V, d_x, wr,
						  BT, C, rows));
		}
		check_dev("tiled logits", dt, lg, logits, (size_t)BT * V);
		check_dev("tiled dinp", dt, gx, hx, nx);
		check_dev("tiled dweight", dt, gw, hw, nw);
		cudaFree(d_w), cudaFree(d_x), cudaFree(d_g), cudaFree(d_dl), cudaFree(out);
		cudaFree(out_t), cudaFree(dw), cudaFree(dw_t), cudaFree(lg), cudaFree(gx);
		cudaFree(gw);
		free(w), free(x), free(g), free(dl), free(logits), free(hx), free(hw);
	}
	cudaFree(dtok);
	free(tok);
}

static void test_matmul(void **state)
{
	(void)state;
	for (size_t di = 0; di < NDT; di++) {
		enum zn_dtype dt = dtypes[di];
		matmul_case(dt, 64, 96, 288, true);
		matmul_case(dt, 37, 40, 52, true);  /* odd shapes */
		matmul_case(dt, 1, 24, 9, false);
	}
}

static void attention_case(enum zn_dtype dt, int B, int T, int NH, int NKV, int HS)
{
	struct zn_kctx *c = cctx[dt];
	size_t W = (size_t)(NH + 2 * NKV) * HS;
	size_t nq = (size_t)B * T * W, no = (size_t)B * T * NH * HS, nl = (size_t)B * NH * T;
	float *qkv = rnd(nq, 1.5f, dt), *out = malloc(no * 4), *lse = malloc(nl * 4);
	ok(KH->attention_forward(hctx, out, lse, qkv, B, T, NH, NKV, HS));
	void *dq = dev(qkv, nq, dt), *dout = dev(NULL, no, dt);
	float *dlse = dev(NULL, nl, ZN_DTYPE_F32);
	ok(KC->attention_forward(c, dout, dlse, dq, B, T, NH, NKV, HS));
	check_dev("attention out", dt, dout, out, no);
	check_dev("attention lse", ZN_DTYPE_F32, dlse, lse, nl);

	float *g = rnd(no, 1, dt), *gq = rnd(nq, 1, dt);
	void *dg = dev(g, no, dt), *dgq = dev(gq, nq, dt), *dgq2 = dev(gq, nq, dt);
	ok(KH->attention_backward(hctx, gq, g, qkv, lse, B, T, NH, NKV, HS));
	ok(KC->attention_backward(c, dgq, dg, dq, dlse, B, T, NH, NKV, HS));
	ok(KC->attention_backward(c, dgq2, dg, dq, dlse, B, T, NH, NKV, HS));
	check_dev("attention dqkv", dt, dgq, gq, nq);
	same_bits(dgq, dgq2, nq * zn_dtype_size(dt));
	cudaFree(dq), cudaFree(dout), cudaFree(dlse), cudaFree(dg), cudaFree(dgq), cudaFree(dgq2);
	free(qkv), free(out), free(lse), free(g), free(gq);
}

static void test_attention(void **state)
{
	(void)state;
	for (size_t di = 0; di < NDT; di++) {
		enum zn_dtype dt = dtypes[di];
		attention_case(dt, 2, 64, 4, 4, 16);
		attention_case(dt, 1, 77, 3, 3, 8); /* odd */
		attention_case(dt, 3, 1, 2, 2, 8);  /* one token */
		/* grouped-query */
		attention_case(dt, 2, 64, 8, 2, 16);
		attention_case(dt, 1, 77, 6, 3, 12);
		attention_case(dt, 2, 33, 4, 1, 10);
	}
}

/* Grouped-query attention in workspace-sized chunks: whole groups at a
 * time, and (a workspace below one group) part of a group at a time; the
 * gradients are the same either way. */
static void test_attention_gqa_small_workspace(void **state)
{
	(void)state;
	int B = 2, T = 96, NH = 8, NKV = 2, HS = 16;
	size_t W = (size_t)(NH + 2 * NKV) * HS;
	size_t nq = (size_t)B * T * W, no = (size_t)B * T * NH * HS, nl = (size_t)B * NH * T;
	float *qkv = rnd(nq, 1, ZN_DTYPE_F32), *out = malloc(no * 4), *lse = malloc(nl * 4);
	float *g = rnd(no, 1, ZN_DTYPE_F32), *gq = calloc(nq, 4);
	assert_true(out && lse && gq);
	ok(KH->attention_forward(hctx, out, lse, qkv, B, T, NH, NKV, HS));
	ok(KH->attention_backward(hctx, gq, g, qkv, lse, B, T, NH, NKV, HS));
	void *dq = dev(qkv, nq, ZN_DTYPE_F32), *dout = dev(NULL, no, ZN_DTYPE_F32);
	void *dg = dev(g, no, ZN_DTYPE_F32), *dgq = dev(NULL, nq, ZN_DTYPE_F32);
	float *dlse = dev(NULL, nl, ZN_DTYPE_F32);
	const int heads[] = { 5, 3 }; /* a group and a part of one; a part of a group */
	for (size_t k = 0; k < 2; k++) {
		struct zn_kernels_params kp;
		zn_kernels_params_default(&kp);
		kp.cuda_stream = stream;
		kp.workspace_bytes = (size_t)heads[k] * T * T * (4 + 4) + 100;
		struct zn_kctx *c = KC->ctx_create(&kp);
		assert_non_null(c);
		cuda_ok(cudaMemset(dgq, 0, nq * 4), "cudaMemset");
		ok(KC->attention_forward(c, dout, dlse, dq, B, T, NH, NKV, HS));
		ok(KC->attention_backward(c, dgq, dg, dq, dlse, B, T, NH, NKV, HS));
		check_dev("gqa out (chunks)", ZN_DTYPE_F32, dout, out, no);
		check_dev("gqa lse (chunks)", ZN_DTYPE_F32, dlse, lse, nl);
		check_dev("gqa dqkv (chunks)", ZN_DTYPE_F32, dgq, gq, nq);
		KC->ctx_destroy(c);
	}
	cudaFree(dq), cudaFree(dout), cudaFree(dlse), cudaFree(dg), cudaFree(dgq);
	free(qkv), free(out), free(lse), free(g), free(gq);
}

static void test_rmsnorm(void **state)
{
	(void)state;
	int BT = 129, C = 88;
	size_t n = (size_t)BT * C;
	for (size_t di = 0; di < NDT; di++) {
		enum zn_dtype dt = dtypes[di];
		struct zn_kctx *c = cctx[dt];
		float *x = rnd(n, 2, dt), *w = rnd((size_t)C, 1, dt);
		float *out = malloc(n * 4), *rstd = malloc((size_t)BT * 4);
		ok(KH->rmsnorm_forward(hctx, out, rstd, x, w, 1e-6f, BT, C));
		void *dx = dev(x, n, dt), *dw = dev(w, (size_t)C, dt), *dout = dev(NULL, n, dt);
		float *drstd = dev(NULL, (size_t)BT, ZN_DTYPE_F32);
		ok(KC->rmsnorm_forward(c, dout, drstd, dx, dw, 1e-6f, BT, C));
		check_dev("rmsnorm out", dt, dout, out, n);
		check_dev("rmsnorm rstd", ZN_DTYPE_F32, drstd, rstd, (size_t)BT);

		float *g = rnd(n, 1, dt), *gi = rnd(n, 1, dt), *gw = rnd((size_t)C, 1, dt);
		void *dg = dev(g, n, dt), *dgi = dev(gi, n, dt), *dgw = dev(gw, (size_t)C, dt),
		     *dgw2 = dev(gw, (size_t)C, dt);
		ok(KH->rmsnorm_backward(hctx, gi, gw, g, x, w, rstd, BT, C));
		ok(KC->rmsnorm_backward(c, dgi, dgw, dg, dx, dw, drstd, BT, C));
		ok(KC->rmsnorm_backward(c, NULL, dgw2, dg, dx, dw, drstd, BT, C));
		check_dev("rmsnorm dinp", dt, dgi, gi, n);
		check_dev("rmsnorm dweight", dt, dgw, gw, (size_t)C);
		same_bits(dgw, dgw2, (size_t)C * zn_dtype_size(dt));
		cudaFree(dx), cudaFree(dw), cudaFree(dout), cudaFree(drstd), cudaFree(dg);
		cudaFree(dgi), cudaFree(dgw), cudaFree(dgw2);
		free(x), free(w), free(out), free(rstd), free(g), free(gi), free(gw);
	}
}

/* q, k and v into one packed qkv (rotating q and k), then back. */
static void test_rope(void **state)
{
	(void)state;
	int B = 2, T = 45, NH = 4, NKV = 2, HS = 32, QD = NH * HS, KD = NKV * HS;
	int W = QD + 2 * KD;
	size_t BT = (size_t)B * T;
	float inv[16];
	for (int i = 0; i < HS / 2; i++)
		inv[i] = powf(10000.0f, -2.0f * (float)i / (float)HS);
	for (size_t di = 0; di < NDT; di++) {
		enum zn_dtype dt = dtypes[di];
		struct zn_kctx *c = cctx[dt];
		float *q = rnd(BT * QD, 2, dt), *k = rnd(BT * KD, 2, dt), *v = rnd(BT * KD, 2, dt);
		float *qkv = calloc(BT * W, 4);
		assert_non_null(qkv);
		ok(KH->rope_forward(hctx, qkv, W, q, QD, inv, B, T, NH, HS));
		ok(KH->rope_forward(hctx, qkv + QD, W, k, KD, inv, B, T, NKV, HS));
		ok(KH->rope_forward(hctx, qkv + QD + KD, W, v, KD, NULL, B, T, NKV, HS));
		size_t es = zn_dtype_size(dt);
		void *dq = dev(q, BT * QD, dt), *dk = dev(k, BT * KD, dt), *dv = dev(v, BT * KD, dt);
		void *dqkv = dev(NULL, BT * W, dt);
		ok(KC->rope_forward(c, dqkv, W, dq, QD, inv, B, T, NH, HS));
		ok(KC->rope_forward(c, (char *)dqkv + QD * es, W, dk, KD, inv, B, T, NKV, HS));
		ok(KC->rope_forward(c, (char *)dqkv + (QD + KD) * es, W, dv, KD, NULL, B, T, NKV, HS));
		check_dev("rope qkv", dt, dqkv, qkv, BT * W);
		/* in place */
		ok(KH->rope_forward(hctx, q, QD, q, QD, inv, B, T, NH, HS));
		ok(KC->rope_forward(c, dq, QD, dq, QD, inv, B, T, NH, HS));
		check_dev("rope in place", dt, dq, q, BT * QD);
		/* backward: gradients added into random values, k's from the packed rows */
		float *gq = rnd(BT * W, 1, dt), *gk = rnd(BT * KD, 1, dt), *gv = rnd(BT * KD, 1, dt);
		void *dgq = dev(gq, BT * W, dt), *dgk = dev(gk, BT * KD, dt), *dgv = dev(gv, BT * KD, dt);
		ok(KH->rope_backward(hctx, gk, KD, gq + QD, W, inv, B, T, NKV, HS));
		ok(KH->rope_backward(hctx, gv, KD, gq + QD + KD, W, NULL, B, T, NKV, HS));
		ok(KC->rope_backward(c, dgk, KD, (char *)dgq + QD * es, W, inv, B, T, NKV, HS));
		ok(KC->rope_backward(c, dgv, KD, (char *)dgq + (QD + KD) * es, W, NULL, B, T, NKV, HS));
		check_dev("rope dk", dt, dgk, gk, BT * KD);
		check_dev("rope dv", dt, dgv, gv, BT * KD);
		cudaFree(dq), cudaFree(dk), cudaFree(dv), cudaFree(dqkv), cudaFree(dgq), cudaFree(dgk);
		cudaFree(dgv);
		free(q), free(k), free(v), free(qkv), free(gq), free(gk), free(gv);
	}
}

static void test_swiglu(void **state)
{
	(void)state;
	size_t n = 100003;
	for (size_t di = 0; di < NDT; di++) {
		enum zn_dtype dt = dtypes[di];
		struct zn_kctx *c = cctx[dt];
		float *g = rnd(n, 6, dt), *u = rnd(n, 2, dt), *dy = rnd(n, 1, dt);
		float *dg = rnd(n, 1, dt), *du = rnd(n, 1, dt), *out = malloc(n * 4);
		ok(KH->swiglu_forward(hctx, out, g, u, n));
		void *d_g = dev(g, n, dt), *d_u = dev(u, n, dt), *d_dy = dev(dy, n, dt);
		void *d_dg = dev(dg, n, dt), *d_du = dev(du, n, dt), *d_out = dev(NULL, n, dt);
		ok(KC->swiglu_forward(c, d_out, d_g, d_u, n));
		check_dev("swiglu out", dt, d_out, out, n);
		ok(KH->swiglu_backward(hctx, dg, du, dy, g, u, n));
		ok(KC->swiglu_backward(c, d_dg, d_du, d_dy, d_g, d_u, n));
		check_dev("swiglu dgate", dt, d_dg, dg, n);
		check_dev("swiglu dup", dt, d_du, du, n);
		cudaFree(d_g), cudaFree(d_u), cudaFree(d_dy), cudaFree(d_dg), cudaFree(d_du);
		cudaFree(d_out);
		free(g), free(u), free(dy), free(dg), free(du), free(out);
	}
}

/* Llama's embedding: no position table. */
static void test_encoder_no_positions(void **state)
{
	(void)state;
	int B = 2, T = 19, C = 24, V = 31;
	size_t BT = (size_t)B * T;
	int32_t tok[38];
	for (size_t i = 0; i < BT; i++)
		tok[i] = (int32_t)((i * 11) % (size_t)V);
	int32_t *dtok = dev_raw(tok, sizeof(tok));
	for (size_t di = 0; di < NDT; di++) {
		enum zn_dtype dt = dtypes[di];
		float *wte = rnd((size_t)V * C, 1, dt), *out = malloc(BT * C * 4);
		ok(KH->encoder_forward(hctx, out, tok, wte, NULL, B, T, C, V));
		void *dwte = dev(wte, (size_t)V * C, dt), *dout = dev(NULL, BT * C, dt);
		ok(KC->encoder_forward(cctx[dt], dout, dtok, dwte, NULL, B, T, C, V));
		check_dev("encoder out without wpe", dt, dout, out, BT * C);
		cudaFree(dwte), cudaFree(dout);
		free(wte), free(out);
	}
	cudaFree(dtok);
}

static void test_attention_small_workspace(void **state)
{
	(void)state;
	/* a workspace for two heads at a time: the op loops over head groups */
	struct zn_kernels_params kp;
	zn_kernels_params_default(&kp);
	kp.cuda_stream = stream;
	int B = 2, T = 96, C = 96, NH = 6;
	kp.workspace_bytes = (size_t)2 * T * T * (4 + 4) + 100;
	struct zn_kctx *c = KC->ctx_create(&kp);
	assert_non_null(c);
	size_t nq = (size_t)B * T * 3 * C, no = (size_t)B * T * C, nl = (size_t)B * NH * T;
	float *qkv = rnd(nq, 1, ZN_DTYPE_F32), *out = malloc(no * 4), *lse = malloc(nl * 4);
	ok(KH->attention_forward(hctx, out, lse, qkv, B, T, NH, NH, C / NH));
	void *dq = dev(qkv, nq, ZN_DTYPE_F32), *dout = dev(NULL, no, ZN_DTYPE_F32);
	float *dlse = dev(NULL, nl, ZN_DTYPE_F32);
	ok(KC->attention_forward(c, dout, dlse, dq, B, T, NH, NH, C / NH));
	check_dev("attention out (head groups)", ZN_DTYPE_F32, dout, out, no);
	/* too small for even one head */
	kp.workspace_bytes = 1000;
	struct zn_kctx *tiny = KC->ctx_create(&kp);
	assert_non_null(tiny);
	assert_int_equal(KC->attention_forward(tiny, dout, dlse, dq, B, T, NH, NH, C / NH), -ENOSPC);
	assert_non_null(strstr(zn_last_error(), "workspace_bytes >="));
	KC->ctx_destroy(tiny);
	KC->ctx_destroy(c);
	cudaFree(dq), cudaFree(dout), cudaFree(dlse);
	free(qkv), free(out), free(lse);
}

static void test_elementwise(void **state)
{
	(void)state;
	size_t n = 100003;
	for (size_t di = 0; di < NDT; di++) {
		enum zn_dtype dt = dtypes[di];
		struct zn_kctx *c = cctx[dt];
		float *x = rnd(n, 5, dt), *y = rnd(n, 5, dt), *g = rnd(n, 1, dt), *gi = rnd(n, 1, dt);
		float *out = malloc(n * 4), *sum = malloc(n * 4), *gi2 = hcopy(gi, n);
		ok(KH->gelu_forward(hctx, out, x, n));
		ok(KH->gelu_backward(hctx, gi, g, x, n));
		ok(KH->residual_forward(hctx, sum, x, y, n));
		void *dx = dev(x, n, dt), *dy = dev(y, n, dt), *dg = dev(g, n, dt), *dgi = dev(gi2, n, dt);
		void *dout = dev(NULL, n, dt), *dsum = dev(NULL, n, dt);
		ok(KC->gelu_forward(c, dout, dx, n));
		ok(KC->gelu_backward(c, dgi, dg, dx, n));
		ok(KC->residual_forward(c, dsum, dx, dy, n));
		check_dev("gelu out", dt, dout, out, n);
		check_dev("gelu dinp", dt, dgi, gi, n);
		check_dev("residual out", dt, dsum, sum, n);
		/* residual backward: both gradients += dout */
		float *a = rnd(n, 1, dt), *b = rnd(n, 1, dt);
		void *da = dev(a, n, dt), *db = dev(b, n, dt);
		ok(KH->residual_backward(hctx, a, b, g, n));
		ok(KC->residual_backward(c, da, db, dg, n));
		check_dev("residual dinp1", dt, da, a, n);
		check_dev("residual dinp2", dt, db, b, n);
		cudaFree(dx), cudaFree(dy), cudaFree(dg), cudaFree(dgi), cudaFree(dout), cudaFree(dsum);
		cudaFree(da), cudaFree(db);
		free(x), free(y), free(g), free(gi), free(gi2), free(out), free(sum), free(a), free(b);
	}
}

static void test_crossentropy(void **state)
{
	(void)state;
	int BT = 33, V = 1000, Vp = 1024;
	size_t n = (size_t)BT * Vp;
	int32_t t[33];
	float w[33];
	for (int i = 0; i < BT; i++) {
		t[i] = i % 5 == 3 ? -1 : (int32_t)((i * 37) % V);
		w[i] = i % 4 == 1 ? 0.0f : 0.5f + (float)i / BT;
	}
	int32_t *dt_ = dev_raw(t, sizeof(t));
	float *dwt = dev_raw(w, sizeof(w));
	for (size_t di = 0; di < NDT; di++) {
		enum zn_dtype dt = dtypes[di];
		struct zn_kctx *c = cctx[dt];
		float *x = rnd(n, 4, dt), *losses = malloc((size_t)BT * 4), *dl = malloc(n * 4);
		ok(KH->softmax_crossentropy(hctx, losses, dl, x, t, w, 0.03f, BT, V, Vp));
		void *dx = dev(x, n, dt), *ddl = dev(NULL, n, dt);
		float *dloss = dev(NULL, (size_t)BT, ZN_DTYPE_F32);
		ok(KC->softmax_crossentropy(c, dloss, ddl, dx, dt_, dwt, 0.03f, BT, V, Vp));
		check_dev("xent losses", ZN_DTYPE_F32, dloss, losses, (size_t)BT);
		check_dev("xent dlogits", dt, ddl, dl, n);
		/* in place gives the same */
		ok(KC->softmax_crossentropy(c, dloss, dx, dx, dt_, dwt, 0.03f, BT, V, Vp));
		same_bits(dx, ddl, n * zn_dtype_size(dt));
		cudaFree(dx), cudaFree(ddl), cudaFree(dloss);
		free(x), free(losses), free(dl);
	}
	cudaFree(dt_), cudaFree(dwt);
}

static void test_casts_and_reductions(void **state)
{
	(void)state;
	struct zn_kctx *c = cctx[ZN_DTYPE_F32];
	static uint16_t all[65536], hb[65536], cb[65536];
	static float hf[65536], cf[65536];
	for (unsigned i = 0; i < 65536; i++)
		all[i] = (uint16_t)i;
	void *d16 = dev_raw(all, sizeof(all)), *d32 = dev_raw(NULL, sizeof(hf)),
	     *o16 = dev_raw(NULL, sizeof(all));
	for (enum zn_dtype d = ZN_DTYPE_F16; d <= ZN_DTYPE_BF16; d++) {
		/* every 16-bit pattern to fp32 and back, bit for bit as the cpu */
		ok(KH->cast(hctx, hf, ZN_DTYPE_F32, all, d, 65536));
		ok(KC->cast(c, d32, ZN_DTYPE_F32, d16, d, 65536));
		cuda_ok(cudaMemcpy(cf, d32, sizeof(cf), cudaMemcpyDeviceToHost), "copy");
		assert_memory_equal(hf, cf, sizeof(hf));
		/* random fp32 (and every fp32 the 16-bit patterns give, +- an ulp) */
		for (unsigned i = 0; i < 65536; i++) {
			uint32_t u;
			memcpy(&u, &hf[i], 4);
			u += (i % 3) - 1u;
			memcpy(&hf[i], &u, 4);
		}
		cuda_ok(cudaMemcpy(d32, hf, sizeof(hf), cudaMemcpyHostToDevice), "copy");
		ok(KH->cast(hctx, hb, d, hf, ZN_DTYPE_F32, 65536));
		ok(KC->cast(c, o16, d, d32, ZN_DTYPE_F32, 65536));
		cuda_ok(cudaMemcpy(cb, o16, sizeof(cb), cudaMemcpyDeviceToHost), "copy");
		assert_memory_equal(hb, cb, sizeof(hb));
		/* scale, in place */
		ok(KH->scale(hctx, hb, d, 0.37f, 65536));
		ok(KC->scale(c, o16, d, 0.37f, 65536));
		cuda_ok(cudaMemcpy(cb, o16, sizeof(cb), cudaMemcpyDeviceToHost), "copy");
		assert_memory_equal(hb, cb, sizeof(hb));
	}
	/* accumulate, every pair of dtypes, bit for bit as the cpu */
	{
		const size_t m = 65536;
		float *a = rnd(m, 2, ZN_DTYPE_F32), *b = rnd(m, 3, ZN_DTYPE_F32);
		static uint8_t hd[65536 * 4], hs[65536 * 4], cd[65536 * 4];
		void *dd_ = dev_raw(NULL, sizeof(hd)), *ds_ = dev_raw(NULL, sizeof(hs));
		for (enum zn_dtype dd = ZN_DTYPE_F32; dd <= ZN_DTYPE_BF16; dd++)
			for (enum zn_dtype sd = ZN_DTYPE_F32; sd <= ZN_DTYPE_BF16; sd++) {
				ok(KH->cast(hctx, hd, dd, a, ZN_DTYPE_F32, m));
				ok(KH->cast(hctx, hs, sd, b, ZN_DTYPE_F32, m));
				cuda_ok(cudaMemcpy(dd_, hd, m * zn_dtype_size(dd), cudaMemcpyHostToDevice),
					"copy");
				cuda_ok(cudaMemcpy(ds_, hs, m * zn_dtype_size(sd), cudaMemcpyHostToDevice),
					"copy");
				ok(KH->accumulate(hctx, hd, dd, hs, sd, m));
				ok(KC->accumulate(c, dd_, dd, ds_, sd, m));
				cuda_ok(cudaMemcpy(cd, dd_, m * zn_dtype_size(dd), cudaMemcpyDeviceToHost),
					"copy");
				assert_memory_equal(hd, cd, m * zn_dtype_size(dd));
			}
		cudaFree(dd_), cudaFree(ds_);
		free(a), free(b);
	}
	/* sumsq and nonfinite */
	size_t n = 1000003;
	float *x = rnd(n, 3, ZN_DTYPE_F32);
	void *dx = dev(x, n, ZN_DTYPE_F32);
	double hs = 0, *ds = dev_raw(&hs, sizeof(double)), cs = 0, cs2 = 0;
	int32_t zero = 0, *dflag = dev_raw(&zero, sizeof(zero)), flag = 0;
	ok(KH->sumsq(hctx, &hs, x, ZN_DTYPE_F32, n));
	ok(KC->sumsq(c, ds, dx, ZN_DTYPE_F32, n));
	ok(KC->nonfinite(c, dflag, dx, ZN_DTYPE_F32, n));
	cuda_ok(cudaStreamSynchronize(stream), "sync");
	cuda_ok(cudaMemcpy(&cs, ds, sizeof(cs), cudaMemcpyDeviceToHost), "copy");
	cuda_ok(cudaMemcpy(&flag, dflag, sizeof(flag), cudaMemcpyDeviceToHost), "copy");
	assert_true(fabs(cs - hs) <= 1e-12 * hs);
	assert_int_equal(flag, 0);
	ok(KC->sumsq(c, ds, dx, ZN_DTYPE_F32, n)); /* accumulates: now twice */
	cuda_ok(cudaStreamSynchronize(stream), "sync");
	cuda_ok(cudaMemcpy(&cs2, ds, sizeof(cs2), cudaMemcpyDeviceToHost), "copy");
	assert_true(cs2 == cs + cs);
	x[n / 2] = NAN;
	cuda_ok(cudaMemcpy((float *)dx + n / 2, &x[n / 2], 4, cudaMemcpyHostToDevice), "copy");
	ok(KC->nonfinite(c, dflag, dx, ZN_DTYPE_F32, n));
	cuda_ok(cudaStreamSynchronize(stream), "sync");
	cuda_ok(cudaMemcpy(&flag, dflag, sizeof(flag), cudaMemcpyDeviceToHost), "copy");
	assert_int_equal(flag, 1);
	cudaFree(d16), cudaFree(d32), cudaFree(o16), cudaFree(dx), cudaFree(ds), cudaFree(dflag);
	free(x);
}

/* The on-device Adam gives zn_adam_step's bits: same IEEE operations in the
 * same order, no contraction, over 5 steps with AdamW and with L2 Adam. */
static void test_adam(void **state)
{
	(void)state;
	const size_t n = 100003;
	float *p = rnd(n, 1.0f, ZN_DTYPE_F32), *g = rnd(n, 0.1f, ZN_DTYPE_F32), *m = calloc(n, 4),
	      *v = calloc(n, 4);
	assert_true(m && v);
	float *dp = dev_raw(p, n * 4), *dg = dev_raw(g, n * 4), *dm = dev_raw(m, n * 4),
	      *dv = dev_raw(v, n * 4);
	for (int mode = 0; mode < 2; mode++) {
		struct zn_adam_hparams hp;
		zn_adam_defaults(&hp);
		hp.weight_decay = 0.05;
		hp.adamw_mode = mode == 0;
		for (uint64_t step = 1; step <= 5; step++) {
			struct zn_adam_tensors t = { .n = n, .param = p, .grad = g,
						     .grad_dtype = ZN_DTYPE_F32, .exp_avg = m,
						     .exp_avg_sq = v };
			ok(zn_adam_step(&hp, step, 0.5f, &t, NULL));
			ok(KC->adam(cctx[ZN_DTYPE_F32], &hp, step, 0.5f, dp, dg, dm, dv, n));
		}
		cuda_ok(cudaStreamSynchronize(stream), "sync");
		float *hp_ = malloc(n * 4), *hm = malloc(n * 4), *hv = malloc(n * 4);
		cuda_ok(cudaMemcpy(hp_, dp, n * 4, cudaMemcpyDeviceToHost), "copy");
		cuda_ok(cudaMemcpy(hm, dm, n * 4, cudaMemcpyDeviceToHost), "copy");
		cuda_ok(cudaMemcpy(hv, dv, n * 4, cudaMemcpyDeviceToHost), "copy");
		assert_memory_equal(hp_, p, n * 4);
		assert_memory_equal(hm, m, n * 4);
		assert_memory_equal(hv, v, n * 4);
		free(hp_), free(hm), free(hv);
	}
	cudaFree(dp), cudaFree(dg), cudaFree(dm), cudaFree(dv);
	free(p), free(g), free(m), free(v);
}

static void test_errors(void **state)
{
	(void)state;
	struct zn_kernels_params kp;
	zn_kernels_params_default(&kp);
	kp.dtype = (enum zn_dtype)ZN_DTYPE_COUNT; /* every dtype there is is offered */
	assert_null(KC->ctx_create(&kp));
	assert_non_null(strstr(zn_last_error(), "is not offered; use fp32, fp16, bf16"));
	/* a cpu context handed to the cuda table */
	float a[4] = { 0 };
	assert_int_equal(KC->gelu_forward(hctx, a, a, 4), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "belongs to the \"cpu\" kernels"));
	assert_int_equal(KC->attention_forward(cctx[ZN_DTYPE_F32], a, a, a, 1, 1, 3, 2, 4), -EINVAL);
}

static int setup(void **state)
{
	(void)state;
	struct zn_kernels_params kp;
	zn_kernels_params_default(&kp);
	KH = zn_kernels_get("cpu");
	hctx = KH ? KH->ctx_create(&kp) : NULL;
	if (!hctx || cudaStreamCreate(&stream) != cudaSuccess)
		return -1;
	kp.cuda_stream = stream;
	for (size_t i = 0; i < NDT; i++) {
		kp.dtype = dtypes[i];
		cctx[dtypes[i]] = KC->ctx_create(&kp);
		if (!cctx[dtypes[i]]) {
			fprintf(stderr, "cuda context: %s\n", zn_last_error());
			return -1;
		}
	}
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	for (size_t i = 0; i < NDT; i++)
		KC->ctx_destroy(cctx[dtypes[i]]);
	KH->ctx_destroy(hctx);
	cudaStreamDestroy(stream);
	return 0;
}
#endif /* ZN_HAVE_CUDA */

int main(void)
{
#if !ZN_HAVE_CUDA
	printf("1..0 # SKIP this zinc was built without the CUDA toolkit\n");
	return 0;
#else
	int n = 0;
	cudaError_t e = cudaGetDeviceCount(&n);
	if (e != cudaSuccess || n == 0) {
		printf("1..0 # SKIP no CUDA device (%s)\n",
		       e != cudaSuccess ? cudaGetErrorString(e) : "none found");
		return 0;
	}
	KC = zn_kernels_get("cuda");
	if (!KC) {
		printf("1..0 # SKIP %s\n", zn_last_error());
		return 0;
	}
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_encoder),
		cmocka_unit_test(test_layernorm),
		cmocka_unit_test(test_matmul),
		cmocka_unit_test(test_tiles),
		cmocka_unit_test(test_attention),
		cmocka_unit_test(test_attention_small_workspace),
		cmocka_unit_test(test_attention_gqa_small_workspace),
		cmocka_unit_test(test_rmsnorm),
		cmocka_unit_test(test_rope),
		cmocka_unit_test(test_swiglu),
		cmocka_unit_test(test_encoder_no_positions),
		cmocka_unit_test(test_elementwise),
		cmocka_unit_test(test_crossentropy),
		cmocka_unit_test(test_casts_and_reductions),
		cmocka_unit_test(test_adam),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
#endif
}
