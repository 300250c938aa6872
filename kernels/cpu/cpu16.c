/* The cpu kernels on fp16/bf16 storage: what a 16-bit training run's
 * parameters, gradients and activations are kept in when the model runs
 * on the cpu backend, as on the GPU.  The arithmetic stays fp32: each op
 * widens its 16-bit operands to fp32 a block at a time (the context's
 * widening buffer, at most c->blockS x c->block floats beside
 * the per-worker scratch), runs cpu.c's fp32 body on the block and rounds
 * what it writes to 16 bits once (round to nearest even).  An op that adds
 * into an output (dinp +=, dweight +=) widens that output too, so a
 * gradient is rounded once per op, not once per contribution.
 *
 * Blocks, for a (BT, C) activation and a (OC, C) weight:
 *   rows      Rb = BLOCK / C rows at a time (layernorm, rmsnorm, matmul)
 *   channels  k = BLOCK / C output channels of a weight at a time (matmul)
 *   heads     attention: a sequence's query heads of gc key/value heads
 *             at a time, widened into a compact qkv of gc groups that the
 *             fp32 body runs as a model of gc key/value heads
 *   rows      rope: Rb = BLOCK / (NH HS) rows, told their first position
 *   pieces    elementwise (cpu.c), the encoder's rows and channel slices,
 *             cross-entropy's rows: per worker, on its scratch or stack
 * Every result is the fp32 op's on the widened inputs, rounded, with the
 * same order of additions, except matmul_backward: its dinp adds the
 * output-channel blocks' products in block order, its dweight and dbias
 * the row blocks' in block order (one block each when the shapes fit). */
#include "zn_common.h"

#include <stdlib.h>
#include <string.h>

#include "zinc/threadpool.h"
#include "cpu_internal.h"

void zn_cpu16_free(struct cpu_ctx *c)
{
	free(c->wide);
	c->wide = NULL;
	c->wide_per = 0;
}

/* The widening buffer, `floats` in all (at most c->blockS blocks
 * and a few rows of C). */
static int wide(struct cpu_ctx *c, size_t floats, float **p)
{
	floats = ZN_ALIGN_UP(floats, 16);
	if (c->wide_per < floats) {
		free(c->wide);
		c->wide_per = 0;
		c->wide = aligned_alloc(64, floats * sizeof(float));
		if (!c->wide)
			return zn_error(-ENOMEM, "cpu kernels: cannot allocate %zu bytes to widen "
					"16-bit operands", floats * sizeof(float));
		c->wide_per = floats;
	}
	*p = c->wide;
	return 0;
}

/* At most `block` floats of rows of `width`, at least one row, at most n. */
static size_t rows_in(size_t block, size_t width, size_t n)
{
	return ZN_MIN(n, ZN_MAX((size_t)1, block / ZN_MAX(width, (size_t)1)));
}

/* ---- conversions ------------------------------------------------------------------ */

struct cv_args {
	const struct zn_kvec *v;
	char *dst;
	const char *src;
	size_t dld, sld, dsz, ssz, cols;
	enum zn_dtype dd, sd;
};

static void cv_rows(void *p, size_t r0, size_t r1, unsigned w)
{
	(void)w;
	const struct cv_args *a = p;
	for (size_t r = r0; r < r1; r++)
		a->v->cast(a->dst + r * a->dld * a->dsz, a->dd, a->src + r * a->sld * a->ssz, a->sd,
			   a->cols);
}

static void cv_flat(void *p, size_t i0, size_t i1, unsigned w)
{
	(void)w;
	const struct cv_args *a = p;
	a->v->cast(a->dst + i0 * a->dsz, a->dd, a->src + i0 * a->ssz, a->sd, i1 - i0);
}

/* rows x cols elements: dst (rows dld apart, dtype dd) = src (sld apart). */
static void convert(struct cpu_ctx *c, void *dst, size_t dld, enum zn_dtype dd, const void *src,
		    size_t sld, enum zn_dtype sd, size_t rows, size_t cols)
{
	struct cv_args a = { .v = c->v, .dst = dst, .src = src, .dld = dld, .sld = sld,
			     .dsz = zn_dtype_size(dd), .ssz = zn_dtype_size(sd), .cols = cols,
			     .dd = dd, .sd = sd };
	const size_t n = rows * cols;
	if (rows == 1 || (dld == cols && sld == cols))
		zn_cpu_run_chunks(c, n, zn_cpu_chunk_of(c, n, 4096, 64), n, cv_flat, &a);
	else
		zn_cpu_run_chunks(c, rows, zn_cpu_chunk_of(c, rows, 1, 1), n, cv_rows, &a);
}

/* fp32 dst (rows dld apart) from the context's 16-bit src (sld apart). */
static void widen(struct cpu_ctx *c, float *dst, size_t dld, const void *src, size_t sld,
		  size_t rows, size_t cols)
{
	convert(c, dst, dld, ZN_DTYPE_F32, src, sld, c->base.dtype, rows, cols);
}

static void narrow(struct cpu_ctx *c, void *dst, size_t dld, const float *src, size_t sld,
		   size_t rows, size_t cols)
{
	convert(c, dst, dld, c->base.dtype, src, sld, ZN_DTYPE_F32, rows, cols);
}

/* 16-bit element i of p */
static inline const char *at(const struct cpu_ctx *c, const void *p, size_t i)
{
	return (const char *)p + i * zn_dtype_size(c->base.dtype);
}

static inline char *atw(const struct cpu_ctx *c, void *p, size_t i)
{
	return (char *)p + i * zn_dtype_size(c->base.dtype);
}

/* ---- encoder and embedding tiles --------------------------------------------------- */

struct e16_args {
	struct cpu_ctx *c;
	void *out, *dw, *dwpe;
	const void *w, *wpe, *dout;
	const int32_t *tok;
	const uint64_t *order;  /* backward: (token - row0) << 32 | row, sorted */
	size_t norder, T, C, BT, slice;
};

static void e16_fwd_rows(void *p, size_t r0, size_t r1, unsigned w)
{
	const struct e16_args *a = p;
	struct cpu_ctx *c = a->c;
	float *x = c->scratch + (size_t)w * c->scratch_per, *y = x + a->C;
	for (size_t r = r0; r < r1; r++) {
		c->v->cast(x, ZN_DTYPE_F32, at(c, a->w, (size_t)a->tok[r] * a->C), c->base.dtype,
			   a->C);
		c->v->cast(y, ZN_DTYPE_F32, at(c, a->wpe, (r % a->T) * a->C), c->base.dtype, a->C);
		c->v->add(x, x, y, a->C);
		c->v->cast(atw(c, a->out, r * a->C), c->base.dtype, x, ZN_DTYPE_F32, a->C);
	}
}

int zn_cpu16_encoder_forward(struct cpu_ctx *c, void *out, const int32_t *tokens,
			     const void *wte, const void *wpe, int B, int T, int C)
{
	const size_t BT = (size_t)B * T, sz = zn_dtype_size(c->base.dtype);
	if (!wpe) { /* a copy: widening and rounding back give the same bits */
		for (size_t r = 0; r < BT; r++)
			memcpy(atw(c, out, r * C), at(c, wte, (size_t)tokens[r] * C), (size_t)C * sz);
		return 0;
	}
	ZN_TRY(zn_cpu_scratch(c, 2 * (size_t)C));
	struct e16_args a = { .c = c, .out = out, .w = wte, .wpe = wpe, .tok = tokens,
			      .T = (size_t)T, .C = (size_t)C };
	zn_cpu_run_chunks(c, BT, zn_cpu_chunk_of(c, BT, 1, 1), BT * (size_t)C, e16_fwd_rows, &a);
	return 0;
}

int zn_cpu16_embedding_rows_forward(struct cpu_ctx *c, void *out, const int32_t *tokens,
				    const void *w, int row0, int rows, int BT, int C)
{
	const size_t sz = zn_dtype_size(c->base.dtype);
	for (size_t r = 0; r < (size_t)BT; r++) {
		int64_t k = (int64_t)tokens[r] - row0;
		if (k >= 0 && k < rows)
			memcpy(atw(c, out, r * C), at(c, w, (size_t)k * C), (size_t)C * sz);
	}
	return 0;
}

/* One channel slice: each token's rows summed in fp32 in position order
 * onto the widened gradient row, rounded once; then each position's
 * sequences onto dwpe's row -- the fp32 op's order of additions. */
static void e16_bwd_slice(void *p, size_t task, unsigned w)
{
	const struct e16_args *a = p;
	struct cpu_ctx *c = a->c;
	const enum zn_dtype dt = c->base.dtype;
	const size_t c0 = task * a->slice, n = ZN_MIN(a->C, c0 + a->slice) - c0;
	float *acc = c->scratch + (size_t)w * c->scratch_per, *x = acc + a->slice;
	for (size_t i = 0; i < a->norder;) {
		const size_t k = a->order[i] >> 32;
		c->v->cast(acc, ZN_DTYPE_F32, at(c, a->dw, k * a->C + c0), dt, n);
		for (; i < a->norder && a->order[i] >> 32 == k; i++) {
			const size_t r = a->order[i] & 0xffffffffu;
			c->v->cast(x, ZN_DTYPE_F32, at(c, a->dout, r * a->C + c0), dt, n);
			c->v->acc(acc, x, n);
		}
		c->v->cast(atw(c, a->dw, k * a->C + c0), dt, acc, ZN_DTYPE_F32, n);
	}
	if (!a->dwpe)
		return;
	for (size_t t = 0; t < a->T; t++) {
		c->v->cast(acc, ZN_DTYPE_F32, at(c, a->dwpe, t * a->C + c0), dt, n);
		for (size_t r = t; r < a->BT; r += a->T) {
			c->v->cast(x, ZN_DTYPE_F32, at(c, a->dout, r * a->C + c0), dt, n);
			c->v->acc(acc, x, n);
		}
		c->v->cast(atw(c, a->dwpe, t * a->C + c0), dt, acc, ZN_DTYPE_F32, n);
	}
}

static int cmp_u64(const void *x, const void *y)
{
	uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
	return (a > b) - (a < b);
}

/* dw rows [row0, row0 + rows) (rows < 0: every token's) and dwpe. */
static int e16_backward(struct cpu_ctx *c, void *dw, void *dwpe, const void *dout,
			const int32_t *tok, size_t BT, size_t T, size_t C, int64_t row0,
			int64_t rows)
{
	uint64_t *order = NULL;
	size_t n = 0;
	if (dw) {
		order = malloc(ZN_MAX(BT, (size_t)1) * sizeof(*order));
		if (!order)
			return zn_error(-ENOMEM, "encoder_backward: out of memory for %zu token "
					"positions", BT);
		for (size_t r = 0; r < BT; r++) {
			int64_t k = (int64_t)tok[r] - row0;
			if (k >= 0 && (rows < 0 || k < rows))
				order[n++] = (uint64_t)k << 32 | r;
		}
		qsort(order, n, sizeof(*order), cmp_u64);
	}
	struct e16_args a = { .c = c, .dw = dw, .dwpe = dwpe, .dout = dout, .tok = tok,
			      .order = order, .norder = n, .T = T, .C = C, .BT = BT,
			      .slice = zn_cpu_slice_of(c, C) };
	int rc = zn_cpu_scratch(c, 2 * a.slice);
	if (!rc)
		zn_threadpool_for(BT * C < ZN_CPU_INLINE_WORK ? NULL : c->pool,
				  ZN_DIV_ROUND_UP(C, a.slice), e16_bwd_slice, &a);
	free(order);
	return rc;
}

int zn_cpu16_encoder_backward(struct cpu_ctx *c, void *dwte, void *dwpe, const void *dout,
			      const int32_t *tokens, int B, int T, int C)
{
	return e16_backward(c, dwte, dwpe, dout, tokens, (size_t)B * T, (size_t)T, (size_t)C, 0,
			    -1);
}

int zn_cpu16_embedding_rows_backward(struct cpu_ctx *c, void *dw, const void *dout,
				     const int32_t *tokens, int row0, int rows, int BT, int C)
{
	return e16_backward(c, dw, NULL, dout, tokens, (size_t)BT, 1, (size_t)C, row0, rows);
}

/* ---- layernorm, rmsnorm: blocks of rows ------------------------------------------- */

/* Forward of either norm (bias/mean NULL for rmsnorm: rms true). */
static int norm_forward(struct cpu_ctx *c, bool rms, void *out, float *mean, float *rstd,
			const void *inp, const void *weight, const void *bias, float eps, int BT_,
			int C_)
{
	const size_t BT = (size_t)BT_, C = (size_t)C_, Rb = rows_in(c->block, C, BT);
	float *x, *y, *wb;
	ZN_TRY(wide(c, 2 * Rb * C + 2 * C, &x));
	y = x + Rb * C;
	wb = y + Rb * C;
	widen(c, wb, C, weight, C, 1, C);
	if (bias)
		widen(c, wb + C, C, bias, C, 1, C);
	for (size_t r0 = 0; r0 < BT; r0 += Rb) {
		const size_t rb = ZN_MIN(Rb, BT - r0);
		widen(c, x, C, at(c, inp, r0 * C), C, rb, C);
		if (rms)
			zn_cpu32_rmsnorm_forward(c, y, rstd ? rstd + r0 : NULL, x, wb, eps, rb, C);
		else
			zn_cpu32_layernorm_forward(c, y, mean ? mean + r0 : NULL,
						   rstd ? rstd + r0 : NULL, x, wb,
						   bias ? wb + C : NULL, rb, C);
		narrow(c, atw(c, out, r0 * C), C, y, C, rb, C);
	}
	return 0;
}

/* Backward of either norm: dweight, dbias widened once and every block's
 * rows added onto them in order. */
static int norm_backward(struct cpu_ctx *c, bool rms, void *dinp, void *dweight, void *dbias,
			 const void *dout, const void *inp, const void *weight, const float *mean,
			 const float *rstd, int BT_, int C_)
{
	const size_t BT = (size_t)BT_, C = (size_t)C_, Rb = rows_in(c->block, C, BT);
	float *x, *dy, *dx, *wv, *dwv, *dbv;
	ZN_TRY(wide(c, 3 * Rb * C + 3 * C, &x));
	dy = x + Rb * C;
	dx = dy + Rb * C;
	wv = dx + Rb * C;
	dwv = wv + C;
	dbv = dwv + C;
	widen(c, wv, C, weight, C, 1, C);
	if (dweight)
		widen(c, dwv, C, dweight, C, 1, C);
	if (dbias)
		widen(c, dbv, C, dbias, C, 1, C);
	for (size_t r0 = 0; r0 < BT; r0 += Rb) {
		const size_t rb = ZN_MIN(Rb, BT - r0);
		widen(c, x, C, at(c, inp, r0 * C), C, rb, C);
		widen(c, dy, C, at(c, dout, r0 * C), C, rb, C);
		if (dinp)
			widen(c, dx, C, at(c, dinp, r0 * C), C, rb, C);
		if (rms)
			zn_cpu32_rmsnorm_backward(c, dinp ? dx : NULL, dweight ? dwv : NULL, dy, x, wv,
						  rstd + r0, rb, C);
		else
			zn_cpu32_layernorm_backward(c, dinp ? dx : NULL, dweight ? dwv : NULL,
						    dbias ? dbv : NULL, dy, x, wv, mean + r0,
						    rstd + r0, rb, C);
		if (dinp)
			narrow(c, atw(c, dinp, r0 * C), C, dx, C, rb, C);
	}
	if (dweight)
		narrow(c, dweight, C, dwv, C, 1, C);
	if (dbias)
		narrow(c, dbias, C, dbv, C, 1, C);
	return 0;
}

int zn_cpu16_layernorm_forward(struct cpu_ctx *c, void *out, float *mean, float *rstd,
			       const void *inp, const void *weight, const void *bias, int BT,
			       int C)
{
	return norm_forward(c, false, out, mean, rstd, inp, weight, bias, 0.0f, BT, C);
}

int zn_cpu16_layernorm_backward(struct cpu_ctx *c, void *dinp, void *dweight, void *dbias,
				const void *dout, const void *inp, const void *weight,
				const float *mean, const float *rstd, int BT, int C)
{
	return norm_backward(c, false, dinp, dweight, dbias, dout, inp, weight, mean, rstd, BT, C);
}

int zn_cpu16_rmsnorm_forward(struct cpu_ctx *c, void *out, float *rstd, const void *inp,
			     const void *weight, float eps, int BT, int C)
{
	return norm_forward(c, true, out, NULL, rstd, inp, weight, NULL, eps, BT, C);
}

int zn_cpu16_rmsnorm_backward(struct cpu_ctx *c, void *dinp, void *dweight, const void *dout,
			      const void *inp, const void *weight, const float *rstd, int BT,
			      int C)
{
	return norm_backward(c, true, dinp, dweight, NULL, dout, inp, weight, NULL, rstd, BT, C);
}

/* ---- matmul: blocks of rows x blocks of output channels ---------------------------- */

struct mm16 {
	size_t BT, C, OC, k, Rb;   /* k channels a block, Rb rows a block */
};

static struct mm16 mm16_of(const struct cpu_ctx *c, int BT, int C, int OC)
{
	struct mm16 m = { .BT = (size_t)BT, .C = (size_t)C, .OC = (size_t)OC };
	m.k = rows_in(c->block, m.C, m.OC);
	m.Rb = rows_in(c->block, ZN_MAX(m.C, m.k), m.BT);
	return m;
}

int zn_cpu16_matmul_forward(struct cpu_ctx *c, void *out, int ldo_, const void *inp,
			    const void *weight, const void *bias, int BT, int C_, int OC)
{
	const struct mm16 m = mm16_of(c, BT, C_, OC);
	const size_t C = m.C, ldo = (size_t)ldo_;
	float *x, *wf, *y, *bf;
	ZN_TRY(wide(c, m.Rb * C + m.k * C + m.Rb * m.k + (bias ? m.OC : 0), &x));
	wf = x + m.Rb * C;
	y = wf + m.k * C;
	bf = y + m.Rb * m.k;
	if (bias)
		widen(c, bf, m.OC, bias, m.OC, 1, m.OC);
	const bool one_chunk = m.k == m.OC;
	if (one_chunk)
		widen(c, wf, C, weight, C, m.OC, C);
	for (size_t r0 = 0; r0 < m.BT; r0 += m.Rb) {
		const size_t rb = ZN_MIN(m.Rb, m.BT - r0);
		widen(c, x, C, at(c, inp, r0 * C), C, rb, C);
		for (size_t o0 = 0; o0 < m.OC; o0 += m.k) {
			const size_t kk = ZN_MIN(m.k, m.OC - o0);
			if (!one_chunk)
				widen(c, wf, C, at(c, weight, o0 * C), C, kk, C);
			zn_cpu32_matmul_forward(c, y, kk, x, wf, bias ? bf + o0 : NULL, rb, C, kk);
			narrow(c, atw(c, out, r0 * ldo + o0), ldo, y, kk, rb, kk);
		}
	}
	return 0;
}

int zn_cpu16_matmul_backward(struct cpu_ctx *c, void *dinp, void *dweight, void *dbias,
			     const void *dout, int ldo_, const void *inp, const void *weight,
			     int BT, int C_, int OC)
{
	const struct mm16 m = mm16_of(c, BT, C_, OC);
	const size_t C = m.C, ldo = (size_t)ldo_;
	const bool one_chunk = m.k == m.OC, one_block = m.Rb == m.BT;
	float *b0, *b1, *b2, *b3;
	ZN_TRY(wide(c, m.Rb * C + m.k * C + m.Rb * m.k + m.k, &b0));
	b1 = b0 + m.Rb * C; /* (k, C) */
	b2 = b1 + m.k * C;  /* (Rb, k) */
	b3 = b2 + m.Rb * m.k;
	/* dinp: each block of rows, the channel blocks' products added in
	 * order */
	if (dinp) {
		float *dx = b0, *wf = b1, *dy = b2;
		if (one_chunk)
			widen(c, wf, C, weight, C, m.OC, C);
		for (size_t r0 = 0; r0 < m.BT; r0 += m.Rb) {
			const size_t rb = ZN_MIN(m.Rb, m.BT - r0);
			widen(c, dx, C, at(c, dinp, r0 * C), C, rb, C);
			for (size_t o0 = 0; o0 < m.OC; o0 += m.k) {
				const size_t kk = ZN_MIN(m.k, m.OC - o0);
				if (!one_chunk)
					widen(c, wf, C, at(c, weight, o0 * C), C, kk, C);
				widen(c, dy, kk, at(c, dout, r0 * ldo + o0), ldo, rb, kk);
				zn_cpu32_matmul_backward(c, dx, NULL, NULL, dy, kk, NULL, wf, rb, C,
							 kk);
			}
			narrow(c, atw(c, dinp, r0 * C), C, dx, C, rb, C);
		}
	}
	if (!dweight && !dbias)
		return 0;
	/* dweight, dbias: each block of channels, the row blocks' products
	 * added in order */
	float *x = b0, *dwf = b1, *dy = b2, *dbf = b3;
	if (dweight && one_block)
		widen(c, x, C, inp, C, m.BT, C);
	for (size_t o0 = 0; o0 < m.OC; o0 += m.k) {
		const size_t kk = ZN_MIN(m.k, m.OC - o0);
		if (dweight)
			widen(c, dwf, C, at(c, dweight, o0 * C), C, kk, C);
		if (dbias)
			widen(c, dbf, kk, at(c, dbias, o0), kk, 1, kk);
		for (size_t r0 = 0; r0 < m.BT; r0 += m.Rb) {
			const size_t rb = ZN_MIN(m.Rb, m.BT - r0);
			if (dweight && !one_block)
				widen(c, x, C, at(c, inp, r0 * C), C, rb, C);
			widen(c, dy, kk, at(c, dout, r0 * ldo + o0), ldo, rb, kk);
			zn_cpu32_matmul_backward(c, NULL, dweight ? dwf : NULL, dbias ? dbf : NULL, dy,
						 kk, dweight ? x : NULL, NULL, rb, C, kk);
		}
		if (dweight)
			narrow(c, atw(c, dweight, o0 * C), C, dwf, C, kk, C);
		if (dbias)
			narrow(c, atw(c, dbias, o0), kk, dbf, kk, 1, kk);
	}
	return 0;
}

/* ---- attention: a sequence's heads of gc key/value heads at a time ------------------ */

/* Query heads of key/value heads [g0, g0 + n) of sequence b, with their k
 * and v, as a compact qkv row of (n rep + 2 n) HS: [q | k | v] as the
 * kernels' layout for a model of n rep query heads and n key/value ones. */
struct att16 {
	size_t T, NH, NKV, HS, rep, W, CO, gc;
};

static struct att16 att16_of(const struct cpu_ctx *c, int T, int NH, int NKV, int HS)
{
	struct att16 g = { .T = (size_t)T, .NH = (size_t)NH, .NKV = (size_t)NKV,
			   .HS = (size_t)HS };
	g.rep = g.NH / g.NKV;
	g.W = (g.NH + 2 * g.NKV) * g.HS;
	g.CO = g.NH * g.HS;
	/* (the backward runs a task per key/value head of the call: the
	 * default block holds several of a model's with T in the thousands) */
	g.gc = rows_in(c->block, g.T * (g.rep + 2) * g.HS, g.NKV);
	return g;
}

/* dir 0: widen qkv's (or dqkv's) part into the compact row q16 -> qf;
 * dir 1: round it back. */
static void att16_part(struct cpu_ctx *c, const struct att16 *g, bool back, void *qkv, float *qf,
		       size_t b, size_t g0, size_t n)
{
	const size_t HS = g->HS, Wc = n * (g->rep + 2) * HS;
	const size_t src[3] = { g0 * g->rep * HS, (g->NH + g0) * HS, (g->NH + g->NKV + g0) * HS };
	const size_t dst[3] = { 0, n * g->rep * HS, n * (g->rep + 1) * HS };
	const size_t cols[3] = { n * g->rep * HS, n * HS, n * HS };
	for (int k = 0; k < 3; k++) {
		char *q = atw(c, qkv, b * g->T * g->W + src[k]);
		if (back)
			narrow(c, q, g->W, qf + dst[k], Wc, g->T, cols[k]);
		else
			widen(c, qf + dst[k], Wc, q, g->W, g->T, cols[k]);
	}
}

int zn_cpu16_attention_forward(struct cpu_ctx *c, void *out, float *lse, const void *qkv,
			       int B, int T, int NH, int NKV, int HS)
{
	const struct att16 g = att16_of(c, T, NH, NKV, HS);
	const size_t Wc = g.gc * (g.rep + 2) * g.HS, Oc = g.gc * g.rep * g.HS;
	float *qf, *of;
	ZN_TRY(wide(c, g.T * (Wc + Oc), &qf));
	of = qf + g.T * Wc;
	for (size_t b = 0; b < (size_t)B; b++)
		for (size_t g0 = 0; g0 < g.NKV; g0 += g.gc) {
			const size_t n = ZN_MIN(g.gc, g.NKV - g0), on = n * g.rep * g.HS;
			att16_part(c, &g, false, (void *)qkv, qf, b, g0, n);
			ZN_TRY(zn_cpu32_attention_forward(c, of, lse + (b * g.NH + g0 * g.rep) * g.T,
							  qf, 1, T, (int)(n * g.rep), (int)n, HS));
			narrow(c, atw(c, out, b * g.T * g.CO + g0 * g.rep * g.HS), g.CO, of, on, g.T,
			       on);
		}
	return 0;
}

int zn_cpu16_attention_backward(struct cpu_ctx *c, void *dqkv, const void *dout,
				const void *qkv, const float *lse, int B, int T, int NH, int NKV,
				int HS)
{
	const struct att16 g = att16_of(c, T, NH, NKV, HS);
	const size_t Wc = g.gc * (g.rep + 2) * g.HS, Oc = g.gc * g.rep * g.HS;
	float *qf, *dqf, *dof;
	ZN_TRY(wide(c, g.T * (2 * Wc + Oc), &qf));
	dqf = qf + g.T * Wc;
	dof = dqf + g.T * Wc;
	for (size_t b = 0; b < (size_t)B; b++)
		for (size_t g0 = 0; g0 < g.NKV; g0 += g.gc) {
			const size_t n = ZN_MIN(g.gc, g.NKV - g0), on = n * g.rep * g.HS;
			att16_part(c, &g, false, (void *)qkv, qf, b, g0, n);
			att16_part(c, &g, false, dqkv, dqf, b, g0, n);
			widen(c, dof, on, at(c, dout, b * g.T * g.CO + g0 * g.rep * g.HS), g.CO, g.T,
			      on);
			ZN_TRY(zn_cpu32_attention_backward(c, dqf, dof, qf,
							   lse + (b * g.NH + g0 * g.rep) * g.T, 1, T,
							   (int)(n * g.rep), (int)n, HS));
			att16_part(c, &g, true, dqkv, dqf, b, g0, n);
		}
	return 0;
}

/* ---- rotary embedding: blocks of rows ---------------------------------------------- */

int zn_cpu16_rope(struct cpu_ctx *c, bool backward, void *out, int ldo, const void *inp,
		  int ldi, const float *inv_freq, int B, int T, int NH, int HS)
{
	const size_t width = (size_t)NH * HS, BT = (size_t)B * T;
	const size_t Rb = rows_in(c->block, width, BT);
	float *x, *y;
	ZN_TRY(wide(c, 2 * Rb * width, &x));
	y = x + Rb * width;
	for (size_t r0 = 0; r0 < BT; r0 += Rb) {
		const size_t rb = ZN_MIN(Rb, BT - r0);
		widen(c, x, width, at(c, inp, r0 * ldi), (size_t)ldi, rb, width);
		if (backward) /* out is dinp: added into */
			widen(c, y, width, at(c, out, r0 * ldo), (size_t)ldo, rb, width);
		ZN_TRY(zn_cpu32_rope(c, backward, y, width, x, width, inv_freq, rb, r0, T, NH, HS));
		narrow(c, atw(c, out, r0 * ldo), (size_t)ldo, y, width, rb, width);
	}
	return 0;
}

/* ---- softmax cross-entropy: a row per worker at a time ------------------------------ */

struct x16_args {
	struct cpu_ctx *c;
	float *losses;
	void *dlogits;
	const void *logits;
	const float *weights;
	const int32_t *targets;
	float grad_scale;
	size_t V, Vp;
};

static void x16_rows(void *p, size_t r0, size_t r1, unsigned w)
{
	const struct x16_args *a = p;
	struct cpu_ctx *c = a->c;
	const enum zn_dtype dt = c->base.dtype;
	const size_t sz = zn_dtype_size(dt);
	float *x = c->scratch + (size_t)w * c->scratch_per;
	for (size_t r = r0; r < r1; r++) {
		float wt = a->weights ? a->weights[r] : 1.0f;
		int32_t t = a->targets[r];
		char *dl = a->dlogits ? atw(c, a->dlogits, r * a->Vp) : NULL;
		if (t < 0 || wt == 0.0f) {
			a->losses[r] = 0.0f;
			if (dl)
				memset(dl, 0, a->Vp * sz);
			continue;
		}
		c->v->cast(x, ZN_DTYPE_F32, at(c, a->logits, r * a->Vp), dt, a->V);
		float l = c->v->xent(dl ? x : NULL, x, a->V, t, a->grad_scale * wt);
		a->losses[r] = wt * l;
		if (dl) {
			c->v->cast(dl, dt, x, ZN_DTYPE_F32, a->V);
			memset(dl + a->V * sz, 0, (a->Vp - a->V) * sz);
		}
	}
}

int zn_cpu16_softmax_crossentropy(struct cpu_ctx *c, float *losses, void *dlogits,
				  const void *logits, const int32_t *targets, const float *weights,
				  float grad_scale, int BT, int V, int Vp)
{
	ZN_TRY(zn_cpu_scratch(c, (size_t)V));
	struct x16_args a = { .c = c, .losses = losses, .dlogits = dlogits, .logits = logits,
			      .weights = weights, .targets = targets, .grad_scale = grad_scale,
			      .V = (size_t)V, .Vp = (size_t)Vp };
	size_t rows = ZN_MAX((size_t)1, ((size_t)1 << 15) / (size_t)V);
	zn_cpu_run_chunks(c, (size_t)BT, rows, (size_t)BT * (size_t)Vp, x16_rows, &a);
	return 0;
}
