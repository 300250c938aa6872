/* kernels/cpu on fp16 and bf16 storage (cpu16.c) against the same kernels
 * on fp32 storage: every op gets 16-bit inputs, and the fp32 context gets
 * them widened; the 16-bit op's outputs must be the fp32 op's outputs
 * rounded to 16 bits, bit for bit -- the contract of cpu16.c -- except the
 * matmuls, whose sums may be split into blocks: there within one 16-bit
 * unit in the last place (plus 1e-5 of the largest value for cancellation).
 * fp32 outputs (mean, rstd, lse, losses) must be identical.
 *
 * Each case runs on a context with the default widening buffer (one block
 * for these shapes) and on one of 12 000 bytes (1000 floats a block), so
 * that the ops take rows, output channels, attention heads and rotary rows
 * in many blocks.  Gradient outputs start with random values: the ops add
 * into them. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "zinc/kernels.h"
#include "zinc/threadpool.h"

#define NCTX 2
static const struct zn_kernels *K;
static struct zn_threadpool *pool;
static struct zn_kctx *c32;            /* fp32 storage: the reference */
static struct zn_kctx *c16[2][NCTX];   /* [bf16, fp16][default, small blocks] */
static enum zn_dtype DT;               /* the 16-bit dtype of the case */
static struct zn_kctx *C16;            /* the 16-bit context of the case */
static const char *where;              /* "bf16, small blocks" */

#define ok(x) assert_int_equal((x), 0)

static uint64_t rng = 0x243f6a8885a308d3ull;

static float frand(float a)
{
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	uint64_t r = rng * 0x2545f4914f6cdd1dull;
	return a * (float)((double)(r >> 11) * 0x1p-53 * 2.0 - 1.0);
}

/* A 16-bit tensor (h) and its widened copy (f). */
struct t16 {
	void *h;
	float *f;
	size_t n;
};

static struct t16 mk(size_t n, float a)
{
	struct t16 t = { .h = malloc(2 * n + 2), .f = malloc(4 * n + 4), .n = n };
	assert_non_null(t.h);
	assert_non_null(t.f);
	for (size_t i = 0; i < n; i++)
		t.f[i] = frand(a);
	ok(K->cast(c32, t.h, DT, t.f, ZN_DTYPE_F32, n));
	ok(K->cast(c32, t.f, ZN_DTYPE_F32, t.h, DT, n));
	return t;
}

static void fr(struct t16 *t)
{
	free(t->h);
	free(t->f);
}

/* After a check, the reference goes on from the 16-bit values (an op that
 * adds into an output must start both from the same values). */
static void resync(struct t16 *t)
{
	ok(K->cast(c32, t->f, ZN_DTYPE_F32, t->h, DT, t->n));
}

/* got (16-bit) == ref (fp32) rounded, bit for bit. */
static void same(struct t16 *got, const char *what)
{
	uint16_t *r = malloc(2 * got->n + 2);
	assert_non_null(r);
	ok(K->cast(c32, r, DT, got->f, ZN_DTYPE_F32, got->n));
	const uint16_t *g = got->h;
	for (size_t i = 0; i < got->n; i++)
		if (g[i] != r[i])
			fail_msg("%s (%s): element %zu of %zu is 0x%04x, the fp32 op's rounded is "
				 "0x%04x", what, where, i, got->n, g[i], r[i]);
	free(r);
	resync(got);
}

/* Within one 16-bit ulp of ref plus 1e-5 of its largest value. */
static void near(struct t16 *got, const char *what)
{
	float *g = malloc(4 * got->n + 4), big = 0.0f;
	assert_non_null(g);
	ok(K->cast(c32, g, ZN_DTYPE_F32, got->h, DT, got->n));
	for (size_t i = 0; i < got->n; i++)
		big = fmaxf(big, fabsf(got->f[i]));
	for (size_t i = 0; i < got->n; i++) {
		int e;
		frexpf(got->f[i], &e);
		float ulp = ldexpf(1.0f, e - (DT == ZN_DTYPE_BF16 ? 8 : 11));
		if (!(fabsf(g[i] - got->f[i]) <= ulp + 1e-5f * big))
			fail_msg("%s (%s): element %zu is %g, the fp32 op's %g (ulp %g)", what, where,
				 i, (double)g[i], (double)got->f[i], (double)ulp);
	}
	free(g);
	resync(got);
}

static void same32(const float *a, const float *b, size_t n, const char *what)
{
	for (size_t i = 0; i < n; i++)
		if (memcmp(&a[i], &b[i], 4) != 0)
			fail_msg("%s (%s): element %zu is %.9g, the fp32 op's %.9g", what, where, i,
				 (double)a[i], (double)b[i]);
}

/* Run body for both dtypes and both contexts. */
#define EACH(body)                                                                  \
	for (int d_ = 0; d_ < 2; d_++)                                              \
		for (int k_ = 0; k_ < NCTX; k_++) {                                  \
			DT = d_ ? ZN_DTYPE_F16 : ZN_DTYPE_BF16;                     \
			C16 = c16[d_][k_];                                          \
			where = d_ ? (k_ ? "fp16, small blocks" : "fp16")           \
				   : (k_ ? "bf16, small blocks" : "bf16");          \
			body;                                                       \
		}

/* ---- cases ------------------------------------------------------------------------- */

static void encoder_case(bool positions)
{
	const int B = 3, T = 7, C = 40, V = 11, BT = B * T;
	int32_t tok[21];
	for (int i = 0; i < BT; i++)
		tok[i] = (i * 7 + i / 5) % 5; /* tokens repeat */
	struct t16 wte = mk((size_t)V * C, 1), wpe = mk((size_t)T * C, 1), out = mk((size_t)BT * C, 1);
	ok(K->encoder_forward(C16, out.h, tok, wte.h, positions ? wpe.h : NULL, B, T, C, V));
	ok(K->encoder_forward(c32, out.f, tok, wte.f, positions ? wpe.f : NULL, B, T, C, V));
	same(&out, "encoder_forward out");
	struct t16 dout = mk((size_t)BT * C, 1), dwte = mk((size_t)V * C, 1), dwpe = mk((size_t)T * C, 1);
	ok(K->encoder_backward(C16, dwte.h, positions ? dwpe.h : NULL, dout.h, tok, B, T, C, V));
	ok(K->encoder_backward(c32, dwte.f, positions ? dwpe.f : NULL, dout.f, tok, B, T, C, V));
	same(&dwte, "encoder_backward dwte");
	same(&dwpe, "encoder_backward dwpe");
	/* a tile of the embedding: rows [3, 8) */
	struct t16 tile = mk(5 * (size_t)C, 1), dtile = mk(5 * (size_t)C, 1);
	ok(K->embedding_rows_forward(C16, out.h, tok, tile.h, 3, 5, BT, C));
	ok(K->embedding_rows_forward(c32, out.f, tok, tile.f, 3, 5, BT, C));
	same(&out, "embedding_rows_forward out");
	ok(K->embedding_rows_backward(C16, dtile.h, dout.h, tok, 3, 5, BT, C));
	ok(K->embedding_rows_backward(c32, dtile.f, dout.f, tok, 3, 5, BT, C));
	same(&dtile, "embedding_rows_backward dw");
	fr(&wte), fr(&wpe), fr(&out), fr(&dout), fr(&dwte), fr(&dwpe), fr(&tile), fr(&dtile);
}

static void test_encoder(void **state)
{
	(void)state;
	EACH(encoder_case(true));
	EACH(encoder_case(false));
}

static void norm_case(bool rms)
{
	const int BT = 37, C = 96;
	struct t16 inp = mk((size_t)BT * C, 2), w = mk(C, 1), b = mk(C, 1), out = mk((size_t)BT * C, 1);
	float mean[2][37], rstd[2][37];
	if (rms) {
		ok(K->rmsnorm_forward(C16, out.h, rstd[0], inp.h, w.h, 1e-5f, BT, C));
		ok(K->rmsnorm_forward(c32, out.f, rstd[1], inp.f, w.f, 1e-5f, BT, C));
	} else {
		ok(K->layernorm_forward(C16, out.h, mean[0], rstd[0], inp.h, w.h, b.h, BT, C));
		ok(K->layernorm_forward(c32, out.f, mean[1], rstd[1], inp.f, w.f, b.f, BT, C));
		same32(mean[0], mean[1], BT, "layernorm mean");
	}
	same(&out, rms ? "rmsnorm_forward out" : "layernorm_forward out");
	same32(rstd[0], rstd[1], BT, "rstd");
	struct t16 dout = mk((size_t)BT * C, 1), dinp = mk((size_t)BT * C, 1), dw = mk(C, 1), db = mk(C, 1);
	if (rms) {
		ok(K->rmsnorm_backward(C16, dinp.h, dw.h, dout.h, inp.h, w.h, rstd[1], BT, C));
		ok(K->rmsnorm_backward(c32, dinp.f, dw.f, dout.f, inp.f, w.f, rstd[1], BT, C));
	} else {
		ok(K->layernorm_backward(C16, dinp.h, dw.h, db.h, dout.h, inp.h, w.h, mean[1],
					 rstd[1], BT, C));
		ok(K->layernorm_backward(c32, dinp.f, dw.f, db.f, dout.f, inp.f, w.f, mean[1],
					 rstd[1], BT, C));
		same(&db, "layernorm_backward dbias");
	}
	same(&dinp, "norm backward dinp");
	same(&dw, "norm backward dweight");
	fr(&inp), fr(&w), fr(&b), fr(&out), fr(&dout), fr(&dinp), fr(&dw), fr(&db);
}

static void test_norms(void **state)
{
	(void)state;
	EACH(norm_case(false));
	EACH(norm_case(true));
}

static void matmul_case(void)
{
	const int BT = 37, C = 96, OC = 70, ldo = 75;
	struct t16 inp = mk((size_t)BT * C, 1), w = mk((size_t)OC * C, 0.2f), b = mk(OC, 1);
	struct t16 out = mk((size_t)BT * OC, 1), outl = mk((size_t)BT * ldo, 1);
	ok(K->matmul_forward(C16, out.h, inp.h, w.h, b.h, BT, C, OC));
	ok(K->matmul_forward(c32, out.f, inp.f, w.f, b.f, BT, C, OC));
	near(&out, "matmul_forward out");
	ok(K->matmul_forward_ld(C16, outl.h, ldo, inp.h, w.h, BT, C, OC));
	ok(K->matmul_forward_ld(c32, outl.f, ldo, inp.f, w.f, BT, C, OC));
	near(&outl, "matmul_forward_ld out"); /* the columns past OC untouched too */
	struct t16 dout = mk((size_t)BT * ldo, 1), dinp = mk((size_t)BT * C, 1);
	struct t16 dw = mk((size_t)OC * C, 1), db = mk(OC, 1);
	ok(K->matmul_backward(C16, dinp.h, dw.h, db.h, dout.h, inp.h, w.h, BT, C, OC));
	ok(K->matmul_backward(c32, dinp.f, dw.f, db.f, dout.f, inp.f, w.f, BT, C, OC));
	near(&dinp, "matmul_backward dinp");
	near(&dw, "matmul_backward dweight");
	near(&db, "matmul_backward dbias");
	ok(K->matmul_backward_ld(C16, dinp.h, dw.h, dout.h, ldo, inp.h, w.h, BT, C, OC));
	ok(K->matmul_backward_ld(c32, dinp.f, dw.f, dout.f, ldo, inp.f, w.f, BT, C, OC));
	near(&dinp, "matmul_backward_ld dinp");
	near(&dw, "matmul_backward_ld dweight");
	/* dweight only, then dinp only */
	ok(K->matmul_backward(C16, NULL, dw.h, NULL, dout.h, inp.h, NULL, BT, C, OC));
	ok(K->matmul_backward(c32, NULL, dw.f, NULL, dout.f, inp.f, NULL, BT, C, OC));
	near(&dw, "matmul_backward dweight alone");
	ok(K->matmul_backward(C16, dinp.h, NULL, NULL, dout.h, NULL, w.h, BT, C, OC));
	ok(K->matmul_backward(c32, dinp.f, NULL, NULL, dout.f, NULL, w.f, BT, C, OC));
	near(&dinp, "matmul_backward dinp alone");
	fr(&inp), fr(&w), fr(&b), fr(&out), fr(&outl), fr(&dout), fr(&dinp), fr(&dw), fr(&db);
}

static void test_matmul(void **state)
{
	(void)state;
	EACH(matmul_case());
}

static void attention_case(int NH, int NKV)
{
	const int B = 2, T = 37, HS = 16, W = (NH + 2 * NKV) * HS, CO = NH * HS;
	struct t16 qkv = mk((size_t)B * T * W, 1), out = mk((size_t)B * T * CO, 1);
	float *lse[2];
	for (int i = 0; i < 2; i++)
		assert_non_null(lse[i] = malloc((size_t)B * NH * T * sizeof(float)));
	ok(K->attention_forward(C16, out.h, lse[0], qkv.h, B, T, NH, NKV, HS));
	ok(K->attention_forward(c32, out.f, lse[1], qkv.f, B, T, NH, NKV, HS));
	same(&out, "attention_forward out");
	same32(lse[0], lse[1], (size_t)B * NH * T, "attention_forward lse");
	struct t16 dout = mk((size_t)B * T * CO, 1), dqkv = mk((size_t)B * T * W, 1);
	ok(K->attention_backward(C16, dqkv.h, dout.h, qkv.h, lse[1], B, T, NH, NKV, HS));
	ok(K->attention_backward(c32, dqkv.f, dout.f, qkv.f, lse[1], B, T, NH, NKV, HS));
	same(&dqkv, "attention_backward dqkv");
	free(lse[0]), free(lse[1]);
	fr(&qkv), fr(&out), fr(&dout), fr(&dqkv);
}

static void test_attention(void **state)
{
	(void)state;
	EACH(attention_case(4, 4));
	EACH(attention_case(6, 2));
}

/* Rotary embedding of q in place inside a packed qkv (ld W), and its
 * backward, over rows that cross sequences. */
static void rope_case(void)
{
	const int B = 2, T = 37, NH = 4, HS = 16, W = 3 * NH * HS;
	float inv[8];
	for (int i = 0; i < HS / 2; i++)
		inv[i] = powf(10000.0f, -2.0f * (float)i / HS);
	struct t16 qkv = mk((size_t)B * T * W, 1), dqkv = mk((size_t)B * T * W, 1);
	struct t16 dq = mk((size_t)B * T * NH * HS, 1);
	ok(K->rope_forward(C16, qkv.h, W, qkv.h, W, inv, B, T, NH, HS));
	ok(K->rope_forward(c32, qkv.f, W, qkv.f, W, inv, B, T, NH, HS));
	same(&qkv, "rope_forward (in place in qkv)");
	ok(K->rope_backward(C16, dqkv.h, W, dq.h, NH * HS, inv, B, T, NH, HS));
	ok(K->rope_backward(c32, dqkv.f, W, dq.f, NH * HS, inv, B, T, NH, HS));
	same(&dqkv, "rope_backward dinp");
	fr(&qkv), fr(&dqkv), fr(&dq);
}

static void test_rope(void **state)
{
	(void)state;
	EACH(rope_case());
}

static void elementwise_case(void)
{
	const size_t N = 5000; /* pieces of 1024 and a partial one */
	struct t16 a = mk(N, 3), b = mk(N, 3), o = mk(N, 1), o2 = mk(N, 1);
	ok(K->gelu_forward(C16, o.h, a.h, N));
	ok(K->gelu_forward(c32, o.f, a.f, N));
	same(&o, "gelu_forward");
	ok(K->gelu_backward(C16, o.h, b.h, a.h, N));
	ok(K->gelu_backward(c32, o.f, b.f, a.f, N));
	same(&o, "gelu_backward");
	ok(K->residual_forward(C16, o.h, a.h, b.h, N));
	ok(K->residual_forward(c32, o.f, a.f, b.f, N));
	same(&o, "residual_forward");
	ok(K->residual_backward(C16, o.h, o2.h, a.h, N));
	ok(K->residual_backward(c32, o.f, o2.f, a.f, N));
	same(&o, "residual_backward dinp1");
	same(&o2, "residual_backward dinp2");
	ok(K->swiglu_forward(C16, o.h, a.h, b.h, N));
	ok(K->swiglu_forward(c32, o.f, a.f, b.f, N));
	same(&o, "swiglu_forward");
	struct t16 dy = mk(N, 1);
	ok(K->swiglu_backward(C16, o.h, o2.h, dy.h, a.h, b.h, N));
	ok(K->swiglu_backward(c32, o.f, o2.f, dy.f, a.f, b.f, N));
	same(&o, "swiglu_backward dgate");
	same(&o2, "swiglu_backward dup");
	fr(&a), fr(&b), fr(&o), fr(&o2), fr(&dy);
}

static void test_elementwise(void **state)
{
	(void)state;
	EACH(elementwise_case());
}

static void xent_case(void)
{
	const int BT = 9, V = 50, Vp = 56;
	int32_t tgt[9] = { 3, 49, -1, 0, 7, 7, 12, 30, 1 };
	float wts[9] = { 1, 0.5f, 1, 0, 1, 2, 1, 1, 1 }, loss[2][9];
	struct t16 logits = mk((size_t)BT * Vp, 4), dl = mk((size_t)BT * Vp, 1);
	ok(K->softmax_crossentropy(C16, loss[0], dl.h, logits.h, tgt, wts, 0.25f, BT, V, Vp));
	ok(K->softmax_crossentropy(c32, loss[1], dl.f, logits.f, tgt, wts, 0.25f, BT, V, Vp));
	same32(loss[0], loss[1], BT, "softmax_crossentropy losses");
	same(&dl, "softmax_crossentropy dlogits");
	/* in place, and losses only */
	ok(K->softmax_crossentropy(C16, loss[0], logits.h, logits.h, tgt, NULL, 1.0f, BT, V, Vp));
	ok(K->softmax_crossentropy(c32, loss[1], logits.f, logits.f, tgt, NULL, 1.0f, BT, V, Vp));
	same32(loss[0], loss[1], BT, "softmax_crossentropy losses (in place)");
	same(&logits, "softmax_crossentropy dlogits (in place)");
	ok(K->softmax_crossentropy(C16, loss[0], NULL, dl.h, tgt, NULL, 1.0f, BT, V, Vp));
	ok(K->softmax_crossentropy(c32, loss[1], NULL, dl.f, tgt, NULL, 1.0f, BT, V, Vp));
	same32(loss[0], loss[1], BT, "softmax_crossentropy losses only");
	fr(&logits), fr(&dl);
}

static void test_crossentropy(void **state)
{
	(void)state;
	EACH(xent_case());
}

/* The backend offers both 16-bit dtypes, and the widening buffer's bound
 * grows with the block size and only for 16-bit storage. */
static void test_offered_and_bound(void **state)
{
	(void)state;
	assert_true(K->dtypes & (1u << ZN_DTYPE_BF16));
	assert_true(K->dtypes & (1u << ZN_DTYPE_F16));
	struct zn_kernels_params p;
	zn_kernels_params_default(&p);
	/* a 3B Llama's shape: BT 1024, T 1024, MLP 8192, groups of (3 + 2) 128 */
	const struct zn_kernels_cpu_shape sh = { .rows = 1024, .T = 1024, .width = 8192,
						 .group = 640, .matrix = 8192 * 3072,
						 .Vp = 128256 };
	uint64_t f32 = zn_kernels_cpu_workspace_bytes(&p, 2, &sh);
	assert_int_equal(f32, 2 * 2 * 64 * 1024 * 4);
	p.dtype = ZN_DTYPE_BF16;
	uint64_t b16 = zn_kernels_cpu_workspace_bytes(&p, 2, &sh);
	assert_true(b16 >= f32 + 3 * ((uint64_t)4 << 20) * 4);
	assert_true(b16 <= f32 + 4 * ((uint64_t)4 << 20) * 4 + 2 * 128256 * 4);
	p.workspace_bytes = 12000;
	uint64_t small = zn_kernels_cpu_workspace_bytes(&p, 2, &sh);
	assert_true(small < b16);
	/* a block holds an attention group's T rows at least */
	assert_true(small >= f32 + 3 * (uint64_t)1024 * 640 * 4);
}

static int setup(void **state)
{
	(void)state;
	K = zn_kernels_get("cpu");
	pool = zn_threadpool_create(3, -1);
	if (!K || !pool)
		return -1;
	struct zn_kernels_params p;
	zn_kernels_params_default(&p);
	p.pool = pool;
	if (!(c32 = K->ctx_create(&p)))
		return -1;
	for (int d = 0; d < 2; d++)
		for (int k = 0; k < NCTX; k++) {
			p.dtype = d ? ZN_DTYPE_F16 : ZN_DTYPE_BF16;
			p.workspace_bytes = k ? 12000 : 0;
			if (!(c16[d][k] = K->ctx_create(&p)))
				return -1;
		}
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	K->ctx_destroy(c32);
	for (int d = 0; d < 2; d++)
		for (int k = 0; k < NCTX; k++)
			K->ctx_destroy(c16[d][k]);
	zn_threadpool_destroy(pool);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_offered_and_bound),
		cmocka_unit_test(test_encoder),
		cmocka_unit_test(test_norms),
		cmocka_unit_test(test_matmul),
		cmocka_unit_test(test_attention),
		cmocka_unit_test(test_rope),
		cmocka_unit_test(test_elementwise),
		cmocka_unit_test(test_crossentropy),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
