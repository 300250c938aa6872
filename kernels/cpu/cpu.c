/* The "cpu" kernels: OpenBLAS sgemm for the matrix products, vectorized
 * loops (vec.c) for the rest, all run on a zn_threadpool.
 *
 * How the work is split (W = workers of the pool):
 *   matmul         rows of the output split in W contiguous parts, one
 *                  single-threaded sgemm per worker (each packs the whole
 *                  weight once: splitting finer would pack it again per
 *                  piece); the backward splits dinp by rows and
 *                  dweight/dbias by output channel, in the same job.
 *   attention      forward: tasks of (b, h, block of ATT_TB queries); each
 *                  computes its scores against the keys up to its last
 *                  query only (the causal mask's upper triangle is never
 *                  multiplied), softmax, then scores @ v, all in a
 *                  per-worker scratch of ATT_TB x T floats.  backward:
 *                  tasks of (b, h), blocks in order, recomputing the
 *                  probabilities from q, k and the saved log-sum-exp
 *                  (FlashAttention's recomputation), five sgemms a block;
 *                  a (b, h) owns its slice of dqkv, so no two tasks write
 *                  the same element.  Grouped-query attention: tasks of
 *                  (b, key/value head g) instead, running the g's query
 *                  heads one after another, so the heads sharing k and v
 *                  add into dk, dv in head order and never race.
 *   rows           layernorm, rmsnorm, rotary embedding, encoder forward,
 *                  cross-entropy: tasks of whole rows.  The rotary
 *                  embedding's cos/sin table (T, HS/2) is computed once
 *                  per inverse-frequency table and kept in the context.
 *   channels       reductions over rows into a (C) or (V,C) gradient
 *                  (layernorm dweight/dbias, rmsnorm dweight, encoder
 *                  dwte/dwpe): tasks of
 *                  channel slices, each adding the rows in order — no
 *                  races and no dependence on the thread count.
 *   elementwise    tasks of contiguous chunks; the sumsq and nonfinite
 *                  reductions use fixed 64 Ki-element chunks whose partial
 *                  results are combined in order.
 * Ops whose work is small run in the calling thread: waking the pool
 * costs tens of microseconds.
 */
#include "zn_common.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zinc/threadpool.h"
#include "cpu_internal.h"

#define INLINE_WORK ZN_CPU_INLINE_WORK
#define ATT_TB ZN_CPU_ATT_TB
/* Elements per task of the reductions (fixed: the sum's order must not
 * depend on the pool). */
#define RED_CHUNK ((size_t)1 << 16)

/* fp16/bf16 storage: the op runs in cpu16.c */
#define WIDE(ctx) ((ctx)->dtype != ZN_DTYPE_F32)

#define CHECK_CTX(op) ZN_TRY(zn_kcheck_ctx(op, ctx, &zn_kernels_cpu))

int zn_cpu_scratch(struct cpu_ctx *c, size_t floats)
{
	floats = ZN_ALIGN_UP(floats, 16);
	if (c->scratch_per >= floats)
		return 0;
	free(c->scratch);
	c->scratch_per = 0;
	c->scratch = aligned_alloc(64, floats * sizeof(float) * c->workers);
	if (!c->scratch)
		return zn_error(-ENOMEM, "cpu kernels: cannot allocate %zu bytes of scratch",
				floats * sizeof(float) * c->workers);
	c->scratch_per = floats;
	return 0;
}

/* ---- splitting work ------------------------------------------------------------ */

struct range_job {
	zn_cpu_range_fn fn;
	void *arg;
	size_t n, chunk;
};

static void range_task(void *p, size_t task, unsigned worker)
{
	struct range_job *j = p;
	size_t b = task * j->chunk;
	j->fn(j->arg, b, ZN_MIN(j->n, b + j->chunk), worker);
}

/* Run fn over [0, n) in chunks of `chunk` items; `work` is the whole op's
 * work, to decide whether the pool is worth waking. */
void zn_cpu_run_chunks(struct cpu_ctx *c, size_t n, size_t chunk, size_t work, zn_cpu_range_fn fn,
		       void *arg)
{
	struct range_job j = { .fn = fn, .arg = arg, .n = n, .chunk = chunk };
	size_t tasks = ZN_DIV_ROUND_UP(n, chunk);
	zn_threadpool_for(work < INLINE_WORK || tasks < 2 ? NULL : c->pool, tasks, range_task, &j);
}

/* A chunk giving ~4 tasks per worker, at least `min` items, rounded to
 * `align` items (64 floats keep chunks on separate cache lines). */
size_t zn_cpu_chunk_of(const struct cpu_ctx *c, size_t n, size_t min, size_t align)
{
	size_t ch = ZN_DIV_ROUND_UP(n, 4 * (size_t)c->workers);
	ch = ZN_MAX(ch, min);
	return ZN_ALIGN_UP(ch, align);
}

/* Channel slices for the column reductions: ~2 per worker, multiples of
 * 16 floats. */
size_t zn_cpu_slice_of(const struct cpu_ctx *c, size_t C)
{
	return ZN_ALIGN_UP(ZN_DIV_ROUND_UP(C, 2 * (size_t)c->workers), 16);
}

/* Every token (or target) in [0, V); negative ones too when allowed
 * (ignored targets).  T > 0 names the failing position as (b, t). */
static int check_tokens(const char *op, const char *what, const int32_t *tok, size_t n, int V,
			bool allow_negative, int T)
{
	for (size_t i = 0; i < n; i++) {
		if (zn_likely(tok[i] < V && (tok[i] >= 0 || allow_negative)))
			continue;
		if (T > 0)
			return zn_error(-EINVAL, "%s: %s[%zu] (b=%zu, t=%zu) = %d is outside the "
					"vocabulary [0, %d)", op, what, i, i / (size_t)T,
					i % (size_t)T, tok[i], V);
		return zn_error(-EINVAL, "%s: %s[%zu] = %d is outside the vocabulary [0, %d)%s", op,
				what, i, tok[i], V, allow_negative ? " (negative: ignored)" : "");
	}
	return 0;
}

/* ---- context -------------------------------------------------------------------- */

uint64_t zn_kernels_cpu_workspace_bytes(const struct zn_kernels_params *p, unsigned workers,
					const struct zn_kernels_cpu_shape *s)
{
	workers = ZN_MAX(workers, 1u);
	/* per worker: attention's blocks (fp32 ops) */
	uint64_t per = 2 * (uint64_t)ATT_TB * s->T;
	uint64_t wide = 0;
	if (p->dtype != ZN_DTYPE_F32) {
		const uint64_t B = p->workspace_bytes ? ZN_MAX(p->workspace_bytes /
							(ZN_CPU16_BLOCKS * sizeof(float)), (size_t)1)
						      : ZN_CPU16_BLOCK;
		/* cpu16.c: a row of the encoder (2 C) or of the logits (Vp) */
		per = ZN_MAX(per, ZN_MAX(2 * s->width + 32, s->Vp));
		/* three blocks: of at most B floats of what the op takes (rows
		 * of an activation, of a weight, an attention group's T rows),
		 * but at least a row; and a bias or three channel rows */
		uint64_t most = ZN_MAX(ZN_MAX(s->rows * s->width, s->matrix), s->T * s->group);
		uint64_t blk = ZN_MAX(ZN_MIN(B, most), ZN_MAX(s->width, s->T * s->group));
		wide = 3 * blk + ZN_MAX(s->Vp, 3 * s->width);
	}
	return (workers * ZN_ALIGN_UP(per, 16) + ZN_ALIGN_UP(wide, 16)) * sizeof(float);
}

static struct zn_kctx *cpu_ctx_create(const struct zn_kernels_params *p)
{
	if (zn_kcheck_params(&zn_kernels_cpu, p) != 0)
		return NULL;
	enum zn_adam_simd simd;
	if (zn_adam_simd_select(p->simd, &simd) != 0) {
		char why[256]; /* the message is rewritten below: copy it first */
		snprintf(why, sizeof(why), "%s", zn_last_error());
		zn_set_error("cpu kernels: %s", why);
		return NULL;
	}
	const struct zn_kvec *v = &zn_kvec_base;
#if ZN_KVEC_HAVE_AVX2
	if (simd == ZN_ADAM_SIMD_AVX2 || simd == ZN_ADAM_SIMD_AVX512)
		v = &zn_kvec_avx2;
#else
	if (simd == ZN_ADAM_SIMD_AVX2 || simd == ZN_ADAM_SIMD_AVX512)
		zn_info("cpu kernels: this build has no avx2 loops; using the baseline ones");
#endif
	struct cpu_ctx *c = calloc(1, sizeof(*c));
	if (!c) {
		zn_set_error("cpu kernels: out of memory for a context");
		return NULL;
	}
	c->base.ops = &zn_kernels_cpu;
	c->base.dtype = p->dtype;
	c->pool = p->pool;
	c->workers = p->pool ? zn_threadpool_size(p->pool) : 1;
	c->v = v;
	c->block = p->workspace_bytes ? ZN_MAX(p->workspace_bytes / (ZN_CPU16_BLOCKS * sizeof(float)),
					       (size_t)1)
				      : ZN_CPU16_BLOCK;
	if (c->workers > 1 && openblas_get_num_threads() != 1) {
		/* Several workers call sgemm at once; OpenBLAS's own threads
		 * would serialize them (its level-3 driver takes a global lock)
		 * and compete with the pool for the cores. */
		zn_info("cpu kernels: OpenBLAS threading turned off (%d threads -> 1); sgemm "
			"runs on the pool's %u workers", openblas_get_num_threads(), c->workers);
		openblas_set_num_threads(1);
	}
	zn_debug("cpu kernels: %s loops, %u worker(s)", v->name, c->workers);
	return &c->base;
}

static void cpu_ctx_destroy(struct zn_kctx *ctx)
{
	if (!ctx)
		return;
	free(zn_cpu(ctx)->scratch);
	free(zn_cpu(ctx)->rope_tab);
	zn_cpu16_free(zn_cpu(ctx));
	free(ctx);
}

/* ---- encoder ---------------------------------------------------------------------- */

struct enc_args {
	const struct zn_kvec *v;
	float *out, *dwte, *dwpe;
	const float *wte, *wpe, *dout;
	const int32_t *tok;
	size_t T, C, BT, slice;
	int64_t row0, rows;         /* the rows ops: wte holds rows [row0, row0 + rows) */
};

static void enc_fwd_rows(void *p, size_t r0, size_t r1, unsigned w)
{
	(void)w;
	const struct enc_args *a = p;
	for (size_t r = r0; r < r1; r++) {
		const float *row = a->wte + (size_t)a->tok[r] * a->C;
		if (a->wpe)
			a->v->add(a->out + r * a->C, row, a->wpe + (r % a->T) * a->C, a->C);
		else
			memcpy(a->out + r * a->C, row, a->C * sizeof(float));
	}
}

static int cpu_encoder_forward(struct zn_kctx *ctx, void *out, const int32_t *tokens,
			       const void *wte, const void *wpe, int B, int T, int C, int V)
{
	const char *op = "encoder_forward";
	CHECK_CTX(op);
	ZN_TRY(zn_kcheck_encoder(op, out, tokens, wte, wpe, B, T, C, V, false));
	size_t BT = (size_t)B * T;
	ZN_TRY(check_tokens(op, "tokens", tokens, BT, V, false, T));
	struct cpu_ctx *c = zn_cpu(ctx);
	if (WIDE(ctx))
		return zn_cpu16_encoder_forward(c, out, tokens, wte, wpe, B, T, C);
	struct enc_args a = { .v = c->v, .out = out, .wte = wte, .wpe = wpe, .tok = tokens,
			      .T = (size_t)T, .C = (size_t)C };
	zn_cpu_run_chunks(c, BT, zn_cpu_chunk_of(c, BT, 1, 1), BT * (size_t)C, enc_fwd_rows, &a);
	return 0;
}

static void enc_bwd_slice(void *p, size_t task, unsigned w)
{
	(void)w;
	const struct enc_args *a = p;
	size_t c0 = task * a->slice, n = ZN_MIN(a->C, c0 + a->slice) - c0;
	for (size_t r = 0; r < a->BT; r++) {
		const float *d = a->dout + r * a->C + c0;
		if (a->dwte)
			a->v->acc(a->dwte + (size_t)a->tok[r] * a->C + c0, d, n);
		if (a->dwpe)
			a->v->acc(a->dwpe + (r % a->T) * a->C + c0, d, n);
	}
}

static int cpu_encoder_backward(struct zn_kctx *ctx, void *dwte, void *dwpe, const void *dout,
				const int32_t *tokens, int B, int T, int C, int V)
{
	const char *op = "encoder_backward";
	CHECK_CTX(op);
	ZN_TRY(zn_kcheck_encoder(op, dout, tokens, NULL, NULL, B, T, C, V, true));
	size_t BT = (size_t)B * T;
	if (dwte)
		ZN_TRY(check_tokens(op, "tokens", tokens, BT, V, false, T));
	if (!dwte && !dwpe)
		return 0;
	struct cpu_ctx *c = zn_cpu(ctx);
	if (WIDE(ctx))
		return zn_cpu16_encoder_backward(c, dwte, dwpe, dout, tokens, B, T, C);
	struct enc_args a = { .v = c->v, .dwte = dwte, .dwpe = dwpe, .dout = dout, .tok = tokens,
			      .T = (size_t)T, .C = (size_t)C, .BT = BT, .slice = zn_cpu_slice_of(c, C) };
	size_t tasks = ZN_DIV_ROUND_UP((size_t)C, a.slice);
	zn_threadpool_for(BT * C < INLINE_WORK ? NULL : c->pool, tasks, enc_bwd_slice, &a);
	return 0;
}

/* A tile of the embedding's rows, [row0, row0 + rows): the rows of the
 * tokens inside it, in position order as the whole embedding's ops take
 * them, so that the tiles together give those ops' bits. */
static void rows_fwd(void *p, size_t r0, size_t r1, unsigned w)
{
	(void)w;
	const struct enc_args *a = p;
	for (size_t r = r0; r < r1; r++) {
		int64_t k = (int64_t)a->tok[r] - a->row0;
		if (k >= 0 && k < a->rows)
			memcpy(a->out + r * a->C, a->wte + (size_t)k * a->C, a->C * sizeof(float));
	}
}

static int cpu_embedding_rows_forward(struct zn_kctx *ctx, void *out, const int32_t *tokens,
				      const void *w, int row0, int rows, int BT, int C)
{
	const char *op = "embedding_rows_forward";
	CHECK_CTX(op);
	ZN_TRY(zn_kcheck_rows(op, out, tokens, w, row0, rows, BT, C));
	struct cpu_ctx *c = zn_cpu(ctx);
	if (WIDE(ctx))
		return zn_cpu16_embedding_rows_forward(c, out, tokens, w, row0, rows, BT, C);
	struct enc_args a = { .v = c->v, .out = out, .wte = w, .tok = tokens, .C = (size_t)C,
			      .row0 = row0, .rows = rows };
	zn_cpu_run_chunks(c, (size_t)BT, zn_cpu_chunk_of(c, (size_t)BT, 1, 1), (size_t)BT * (size_t)C, rows_fwd,
		   &a);
	return 0;
}

static void rows_bwd_slice(void *p, size_t task, unsigned w)
{
	(void)w;
	const struct enc_args *a = p;
	size_t c0 = task * a->slice, n = ZN_MIN(a->C, c0 + a->slice) - c0;
	for (size_t r = 0; r < a->BT; r++) {
		int64_t k = (int64_t)a->tok[r] - a->row0;
		if (k >= 0 && k < a->rows)
			a->v->acc(a->dwte + (size_t)k * a->C + c0, a->dout + r * a->C + c0, n);
	}
}

static int cpu_embedding_rows_backward(struct zn_kctx *ctx, void *dw, const void *dout,
				       const int32_t *tokens, int row0, int rows, int BT, int C)
{
	const char *op = "embedding_rows_backward";
	CHECK_CTX(op);
	ZN_TRY(zn_kcheck_rows(op, dout, tokens, dw, row0, rows, BT, C));
	struct cpu_ctx *c = zn_cpu(ctx);
	if (WIDE(ctx))
		return zn_cpu16_embedding_rows_backward(c, dw, dout, tokens, row0, rows, BT, C);
	struct enc_args a = { .v = c->v, .dwte = dw, .dout = dout, .tok = tokens, .C = (size_t)C,
			      .BT = (size_t)BT, .slice = zn_cpu_slice_of(c, C), .row0 = row0,
			      .rows = rows };
	size_t tasks = ZN_DIV_ROUND_UP((size_t)C, a.slice);
	zn_threadpool_for((size_t)BT * C < INLINE_WORK ? NULL : c->pool, tasks, rows_bwd_slice,
			  &a);
	return 0;
}

/* ---- layernorm -------------------------------------------------------------------- */

struct ln_args {
	const struct zn_kvec *v;
	float *out, *mean, *rstd, *dinp, *dweight, *dbias;
	const float *inp, *weight, *bias, *dout, *smean, *srstd;
	size_t C, BT, rows_per_task, row_tasks, slice;
};

static void ln_fwd_rows(void *p, size_t r0, size_t r1, unsigned w)
{
	(void)w;
	const struct ln_args *a = p;
	for (size_t r = r0; r < r1; r++) {
		float m, s;
		a->v->ln_fwd(a->out + r * a->C, &m, &s, a->inp + r * a->C, a->weight, a->bias,
			     a->C);
		if (a->mean)
			a->mean[r] = m;
		if (a->rstd)
			a->rstd[r] = s;
	}
}

void zn_cpu32_layernorm_forward(struct cpu_ctx *c, float *out, float *mean, float *rstd,
				const float *inp, const float *weight, const float *bias,
				size_t BT, size_t C)
{
	struct ln_args a = { .v = c->v, .out = out, .mean = mean, .rstd = rstd, .inp = inp,
			     .weight = weight, .bias = bias, .C = C };
	zn_cpu_run_chunks(c, BT, zn_cpu_chunk_of(c, BT, 1, 1), BT * C, ln_fwd_rows, &a);
}

static int cpu_layernorm_forward(struct zn_kctx *ctx, void *out, float *mean, float *rstd,
				 const void *inp, const void *weight, const void *bias, int BT,
				 int C)
{
	CHECK_CTX("layernorm_forward");
	ZN_TRY(zn_kcheck_layernorm_fwd(out, inp, weight, bias, BT, C));
	if (WIDE(ctx))
		return zn_cpu16_layernorm_forward(zn_cpu(ctx), out, mean, rstd, inp, weight, bias,
						  BT, C);
	zn_cpu32_layernorm_forward(zn_cpu(ctx), out, mean, rstd, inp, weight, bias, (size_t)BT,
				   (size_t)C);
	return 0;
}

static void ln_bwd_task(void *p, size_t task, unsigned w)
{
	(void)w;
	const struct ln_args *a = p;
	if (task < a->row_tasks) {
		size_t r0 = task * a->rows_per_task, r1 = ZN_MIN(a->BT, r0 + a->rows_per_task);
		for (size_t r = r0; r < r1; r++)
			a->v->ln_bwd(a->dinp + r * a->C, a->dout + r * a->C, a->inp + r * a->C,
				     a->weight, a->smean[r], a->srstd[r], a->C);
		return;
	}
	size_t c0 = (task - a->row_tasks) * a->slice, n = ZN_MIN(a->C, c0 + a->slice) - c0;
	for (size_t r = 0; r < a->BT; r++)
		a->v->ln_bwd_wb(a->dweight ? a->dweight + c0 : NULL, a->dbias ? a->dbias + c0 : NULL,
				a->dout + r * a->C + c0, a->inp + r * a->C + c0, a->smean[r],
				a->srstd[r], n);
}

static int cpu_layernorm_backward(struct zn_kctx *ctx, void *dinp, void *dweight, void *dbias,
				  const void *dout, const void *inp, const void *weight,
				  const float *mean, const float *rstd, int BT, int C)
{
	CHECK_CTX("layernorm_backward");
	ZN_TRY(zn_kcheck_layernorm_bwd(dout, inp, weight, mean, rstd, BT, C));
	if (WIDE(ctx))
		return zn_cpu16_layernorm_backward(zn_cpu(ctx), dinp, dweight, dbias, dout, inp,
						   weight, mean, rstd, BT, C);
	zn_cpu32_layernorm_backward(zn_cpu(ctx), dinp, dweight, dbias, dout, inp, weight, mean,
				    rstd, (size_t)BT, (size_t)C);
	return 0;
}

void zn_cpu32_layernorm_backward(struct cpu_ctx *c, float *dinp, float *dweight, float *dbias,
				 const float *dout, const float *inp, const float *weight,
				 const float *mean, const float *rstd, size_t BT, size_t C)
{
	struct ln_args a = { .v = c->v, .dinp = dinp, .dweight = dweight, .dbias = dbias,
			     .dout = dout, .inp = inp, .weight = weight, .smean = mean,
			     .srstd = rstd, .C = C, .BT = BT };
	/* one job: row tasks for dinp, then channel-slice tasks for the
	 * parameter gradients (they read the same inputs and write
	 * different outputs) */
	if (dinp) {
		a.rows_per_task = zn_cpu_chunk_of(c, a.BT, 1, 1);
		a.row_tasks = ZN_DIV_ROUND_UP(a.BT, a.rows_per_task);
	}
	size_t slice_tasks = 0;
	if (dweight || dbias) {
		a.slice = zn_cpu_slice_of(c, a.C);
		slice_tasks = ZN_DIV_ROUND_UP(a.C, a.slice);
	}
	zn_threadpool_for(a.BT * a.C < INLINE_WORK ? NULL : c->pool, a.row_tasks + slice_tasks,
			  ln_bwd_task, &a);
}

/* ---- matmul ------------------------------------------------------------------------ */

struct mm_args {
	const struct zn_kvec *v;
	float *out, *dinp, *dweight, *dbias;
	const float *inp, *weight, *bias, *dout;
	size_t BT, C, OC;
	size_t ldo;                 /* elements between rows of out / dout (>= OC) */
	unsigned parts;
};

static void part_of(size_t n, unsigned parts, unsigned i, size_t *b, size_t *e)
{
	*b = n * i / parts;
	*e = n * (i + 1) / parts;
}

static void mm_fwd_part(void *p, unsigned w, unsigned workers)
{
	(void)workers;
	const struct mm_args *a = p;
	if (w >= a->parts)
		return;
	size_t r0, r1;
	part_of(a->BT, a->parts, w, &r0, &r1);
	if (r1 == r0)
		return;
	float beta = 0.0f;
	if (a->bias) {
		for (size_t r = r0; r < r1; r++)
			memcpy(a->out + r * a->ldo, a->bias, a->OC * sizeof(float));
		beta = 1.0f;
	}
	/* out[r0:r1] (M x OC) = inp[r0:r1] (M x C) @ weight^T (C x OC) */
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)(r1 - r0), (int)a->OC, (int)a->C,
		    1.0f, a->inp + r0 * a->C, (int)a->C, a->weight, (int)a->C, beta,
		    a->out + r0 * a->ldo, (int)a->ldo);
}

static unsigned mm_parts(const struct cpu_ctx *c, size_t rows, size_t flops)
{
	if (!c->pool || flops < 64 * INLINE_WORK)
		return 1;
	/* at least 16 rows a part, so sgemm keeps its register blocking */
	return (unsigned)ZN_MAX((size_t)1, ZN_MIN((size_t)c->workers, rows / 16));
}

static void run_parts(struct cpu_ctx *c, unsigned parts, zn_threadpool_fn fn, void *arg)
{
	if (parts <= 1)
		fn(arg, 0, 1);
	else
		zn_threadpool_run(c->pool, fn, arg);
}

void zn_cpu32_matmul_forward(struct cpu_ctx *c, float *out, size_t ldo, const float *inp,
			     const float *weight, const float *bias, size_t BT, size_t C,
			     size_t OC)
{
	struct mm_args a = { .v = c->v, .out = out, .inp = inp, .weight = weight, .bias = bias,
			     .BT = BT, .C = C, .OC = OC, .ldo = ldo };
	a.parts = mm_parts(c, a.BT, a.BT * a.C * a.OC);
	run_parts(c, a.parts, mm_fwd_part, &a);
}

static int matmul_forward(struct zn_kctx *ctx, void *out, int ldo, const void *inp,
			  const void *weight, const void *bias, int BT, int C, int OC)
{
	if (WIDE(ctx))
		return zn_cpu16_matmul_forward(zn_cpu(ctx), out, ldo, inp, weight, bias, BT, C, OC);
	zn_cpu32_matmul_forward(zn_cpu(ctx), out, (size_t)ldo, inp, weight, bias, (size_t)BT,
				(size_t)C, (size_t)OC);
	return 0;
}

static int cpu_matmul_forward(struct zn_kctx *ctx, void *out, const void *inp,
			      const void *weight, const void *bias, int BT, int C, int OC)
{
	CHECK_CTX("matmul_forward");
	ZN_TRY(zn_kcheck_matmul_fwd(out, inp, weight, BT, C, OC));
	return matmul_forward(ctx, out, OC, inp, weight, bias, BT, C, OC);
}

static int cpu_matmul_forward_ld(struct zn_kctx *ctx, void *out, int ldo, const void *inp,
				 const void *weight, int BT, int C, int OC)
{
	CHECK_CTX("matmul_forward_ld");
	ZN_TRY(zn_kcheck_matmul_fwd(out, inp, weight, BT, C, OC));
	ZN_TRY(zn_kcheck_ld("matmul_forward_ld", ldo, OC));
	return matmul_forward(ctx, out, ldo, inp, weight, NULL, BT, C, OC);
}

static void mm_bwd_part(void *p, unsigned w, unsigned workers)
{
	(void)workers;
	const struct mm_args *a = p;
	if (w >= a->parts)
		return;
	size_t b, e;
	if (a->dinp) {
		/* dinp[b:e] (M x C) += dout[b:e] (M x OC) @ weight (OC x C) */
		part_of(a->BT, a->parts, w, &b, &e);
		if (e > b)
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(e - b),
				    (int)a->C, (int)a->OC, 1.0f, a->dout + b * a->ldo, (int)a->ldo,
				    a->weight, (int)a->C, 1.0f, a->dinp + b * a->C, (int)a->C);
	}
	part_of(a->OC, a->parts, w, &b, &e);
	if (e == b)
		return;
	if (a->dweight)
		/* dweight[b:e] (M x C) += dout[:, b:e]^T (M x BT) @ inp (BT x C) */
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)(e - b), (int)a->C,
			    (int)a->BT, 1.0f, a->dout + b, (int)a->ldo, a->inp, (int)a->C, 1.0f,
			    a->dweight + b * a->C, (int)a->C);
	if (a->dbias)
		for (size_t r = 0; r < a->BT; r++)
			a->v->acc(a->dbias + b, a->dout + r * a->ldo + b, e - b);
}

static int matmul_backward(struct zn_kctx *ctx, void *dinp, void *dweight, void *dbias,
			   const void *dout, int ldo, const void *inp, const void *weight, int BT,
			   int C, int OC)
{
	if (!dinp && !dweight && !dbias)
		return 0;
	if (WIDE(ctx))
		return zn_cpu16_matmul_backward(zn_cpu(ctx), dinp, dweight, dbias, dout, ldo, inp,
						weight, BT, C, OC);
	zn_cpu32_matmul_backward(zn_cpu(ctx), dinp, dweight, dbias, dout, (size_t)ldo, inp, weight,
				 (size_t)BT, (size_t)C, (size_t)OC);
	return 0;
}

void zn_cpu32_matmul_backward(struct cpu_ctx *c, float *dinp, float *dweight, float *dbias,
			      const float *dout, size_t ldo, const float *inp,
			      const float *weight, size_t BT, size_t C, size_t OC)
{
	if (!dinp && !dweight && !dbias)
		return;
	struct mm_args a = { .v = c->v, .dinp = dinp, .dweight = dweight, .dbias = dbias,
			     .dout = dout, .inp = inp, .weight = weight, .BT = BT, .C = C, .OC = OC,
			     .ldo = ldo };
	a.parts = mm_parts(c, ZN_MIN(a.BT, a.OC), a.BT * a.C * a.OC);
	run_parts(c, a.parts, mm_bwd_part, &a);
}

static int cpu_matmul_backward(struct zn_kctx *ctx, void *dinp, void *dweight, void *dbias,
			       const void *dout, const void *inp, const void *weight, int BT,
			       int C, int OC)
{
	CHECK_CTX("matmul_backward");
	ZN_TRY(zn_kcheck_matmul_bwd(dinp, dweight, dout, inp, weight, BT, C, OC));
	return matmul_backward(ctx, dinp, dweight, dbias, dout, OC, inp, weight, BT, C, OC);
}

static int cpu_matmul_backward_ld(struct zn_kctx *ctx, void *dinp, void *dweight,
				  const void *dout, int ldo, const void *inp, const void *weight,
				  int BT, int C, int OC)
{
	CHECK_CTX("matmul_backward_ld");
	ZN_TRY(zn_kcheck_matmul_bwd(dinp, dweight, dout, inp, weight, BT, C, OC));
	ZN_TRY(zn_kcheck_ld("matmul_backward_ld", ldo, OC));
	return matmul_backward(ctx, dinp, dweight, NULL, dout, ldo, inp, weight, BT, C, OC);
}

/* ---- attention ---------------------------------------------------------------------- */

/* For query head h of sequence b, with key/value head g = h / rep
 * (rep = NH / NKV) and W = (NH + 2 NKV) HS the qkv row:
 *   q_t = qkv[b, t, h*HS ...],  k_t = qkv[b, t, (NH+g)*HS ...],
 *   v_t = qkv[b, t, (NH+NKV+g)*HS ...]                      (rows of W)
 *   out_t = out[b, t, h*HS ...]                             (rows of CO = NH*HS)
 * A block is queries [i0, i1); it sees keys [0, i1), query t the keys
 * [0, t]. */
struct att_args {
	const struct zn_kvec *v;
	float *out, *lse, *dqkv, *scratch;
	const float *qkv, *dout, *slse;
	size_t B, T, NH, NKV, HS, rep, W, CO, nblk, scratch_per;
	float scale;
};

static void att_fwd_task(void *p, size_t task, unsigned w)
{
	const struct att_args *a = p;
	size_t blk = task % a->nblk, bh = task / a->nblk, b = bh / a->NH, h = bh % a->NH;
	size_t g = h / a->rep, W = a->W, i0 = blk * ATT_TB, i1 = ZN_MIN(a->T, i0 + ATT_TB);
	int M = (int)(i1 - i0), nk = (int)i1;
	const float *row0 = a->qkv + b * a->T * W;
	const float *q = row0 + h * a->HS, *k = row0 + (a->NH + g) * a->HS;
	const float *vv = row0 + (a->NH + a->NKV + g) * a->HS;
	float *s = a->scratch + (size_t)w * a->scratch_per; /* (M, nk) */
	float *lse = a->lse + bh * a->T;

	/* s = scale * q[i0:i1] @ k[0:i1]^T */
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, nk, (int)a->HS, a->scale,
		    q + i0 * W, (int)W, k, (int)W, 0.0f, s, nk);
	for (size_t r = 0; r < (size_t)M; r++) {
		size_t t = i0 + r, n = t + 1;
		float *row = s + r * (size_t)nk;
		lse[t] = a->v->softmax(row, n);
		memset(row + n, 0, ((size_t)nk - n) * sizeof(float)); /* the causal mask */
	}
	/* out[i0:i1] = s @ v[0:i1] */
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, (int)a->HS, nk, 1.0f, s, nk, vv,
		    (int)W, 0.0f, a->out + (b * a->T + i0) * a->CO + h * a->HS, (int)a->CO);
}

static void att_dims(struct att_args *a, int B, int T, int NH, int NKV, int HS)
{
	a->B = (size_t)B;
	a->T = (size_t)T;
	a->NH = (size_t)NH;
	a->NKV = (size_t)NKV;
	a->HS = (size_t)HS;
	a->rep = (size_t)(NH / NKV);
	a->W = (size_t)(NH + 2 * NKV) * a->HS;
	a->CO = a->NH * a->HS;
	a->nblk = ZN_DIV_ROUND_UP(a->T, ATT_TB);
	a->scale = 1.0f / sqrtf((float)a->HS);
}

static int cpu_attention_forward(struct zn_kctx *ctx, void *out, float *lse, const void *qkv,
				 int B, int T, int NH, int NKV, int HS)
{
	CHECK_CTX("attention_forward");
	ZN_TRY(zn_kcheck_attention_fwd(out, lse, qkv, B, T, NH, NKV, HS));
	if (WIDE(ctx))
		return zn_cpu16_attention_forward(zn_cpu(ctx), out, lse, qkv, B, T, NH, NKV, HS);
	return zn_cpu32_attention_forward(zn_cpu(ctx), out, lse, qkv, B, T, NH, NKV, HS);
}

int zn_cpu32_attention_forward(struct cpu_ctx *c, float *out, float *lse, const float *qkv,
			       int B, int T, int NH, int NKV, int HS)
{
	struct att_args a = { .v = c->v, .out = out, .lse = lse, .qkv = qkv };
	att_dims(&a, B, T, NH, NKV, HS);
	ZN_TRY(zn_cpu_scratch(c, (size_t)ATT_TB * a.T));
	a.scratch = c->scratch;
	a.scratch_per = c->scratch_per;
	size_t work = a.B * a.T * a.T * a.CO / 64;
	zn_threadpool_for(work < INLINE_WORK ? NULL : c->pool, a.B * a.NH * a.nblk, att_fwd_task,
			  &a);
	return 0;
}

/* Task (b, g): the rep query heads of key/value head g, in order; with
 * NKV = NH a task is one (b, h), as in multi-head attention. */
static void att_bwd_task(void *p, size_t bg, unsigned w)
{
	const struct att_args *a = p;
	size_t b = bg / a->NKV, g = bg % a->NKV, W = a->W;
	const float *row0 = a->qkv + b * a->T * W;
	float *drow0 = a->dqkv + b * a->T * W;
	const float *k = row0 + (a->NH + g) * a->HS, *vv = row0 + (a->NH + a->NKV + g) * a->HS;
	float *dk = drow0 + (a->NH + g) * a->HS, *dv = drow0 + (a->NH + a->NKV + g) * a->HS;
	float *s = a->scratch + (size_t)w * a->scratch_per; /* P, then dS: (M, nk) */
	float *dp = s + (size_t)ATT_TB * a->T;              /* dP: (M, nk) */
	int HS = (int)a->HS, ldq = (int)W, ldo = (int)a->CO;

	for (size_t h = g * a->rep; h < (g + 1) * a->rep; h++) {
		const float *q = row0 + h * a->HS;
		float *dq = drow0 + h * a->HS;
		const float *dout = a->dout + b * a->T * a->CO + h * a->HS;
		const float *lse = a->slse + (b * a->NH + h) * a->T;
		for (size_t blk = 0; blk < a->nblk; blk++) {
			size_t i0 = blk * ATT_TB, i1 = ZN_MIN(a->T, i0 + ATT_TB);
			int M = (int)(i1 - i0), nk = (int)i1;
			/* P = exp(scale * q k^T - lse), zero above the diagonal */
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, nk, HS, a->scale,
				    q + i0 * W, ldq, k, ldq, 0.0f, s, nk);
			for (size_t r = 0; r < (size_t)M; r++) {
				size_t t = i0 + r, n = t + 1;
				float *row = s + r * (size_t)nk;
				a->v->softmax_recompute(row, lse[t], n);
				memset(row + n, 0, ((size_t)nk - n) * sizeof(float));
			}
			/* dP = dout[i0:i1] @ v[0:i1]^T */
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, nk, HS, 1.0f,
				    dout + i0 * a->CO, ldo, vv, ldq, 0.0f, dp, nk);
			/* dv[0:i1] += P^T @ dout[i0:i1] */
			cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, HS, M, 1.0f, s, nk,
				    dout + i0 * a->CO, ldo, 1.0f, dv, ldq);
			/* dS = P * (dP - rowsum(P * dP)), in place of P (zero where P is) */
			for (size_t r = 0; r < (size_t)M; r++)
				a->v->softmax_bwd(s + r * (size_t)nk, dp + r * (size_t)nk, i0 + r + 1);
			/* dq[i0:i1] += scale * dS @ k[0:i1];  dk[0:i1] += scale * dS^T @ q[i0:i1] */
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, HS, nk, a->scale, s,
				    nk, k, ldq, 1.0f, dq + i0 * W, ldq);
			cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, HS, M, a->scale, s,
				    nk, q + i0 * W, ldq, 1.0f, dk, ldq);
		}
	}
}

static int cpu_attention_backward(struct zn_kctx *ctx, void *dqkv, const void *dout,
				  const void *qkv, const float *lse, int B, int T, int NH, int NKV,
				  int HS)
{
	CHECK_CTX("attention_backward");
	ZN_TRY(zn_kcheck_attention_bwd(dqkv, dout, qkv, lse, B, T, NH, NKV, HS));
	if (WIDE(ctx))
		return zn_cpu16_attention_backward(zn_cpu(ctx), dqkv, dout, qkv, lse, B, T, NH, NKV,
						   HS);
	return zn_cpu32_attention_backward(zn_cpu(ctx), dqkv, dout, qkv, lse, B, T, NH, NKV, HS);
}

int zn_cpu32_attention_backward(struct cpu_ctx *c, float *dqkv, const float *dout,
				const float *qkv, const float *lse, int B, int T, int NH,
				int NKV, int HS)
{
	struct att_args a = { .v = c->v, .dqkv = dqkv, .dout = dout, .qkv = qkv, .slse = lse };
	att_dims(&a, B, T, NH, NKV, HS);
	ZN_TRY(zn_cpu_scratch(c, 2 * (size_t)ATT_TB * a.T));
	a.scratch = c->scratch;
	a.scratch_per = c->scratch_per;
	size_t work = a.B * a.T * a.T * a.CO / 16;
	zn_threadpool_for(work < INLINE_WORK ? NULL : c->pool, a.B * a.NKV, att_bwd_task, &a);
	return 0;
}

/* ---- rmsnorm ------------------------------------------------------------------------ */

struct rms_args {
	const struct zn_kvec *v;
	float *out, *rstd, *dinp, *dweight;
	const float *inp, *weight, *dout, *srstd;
	float eps;
	size_t C, BT, rows_per_task, row_tasks, slice;
};

static void rms_fwd_rows(void *p, size_t r0, size_t r1, unsigned w)
{
	(void)w;
	const struct rms_args *a = p;
	for (size_t r = r0; r < r1; r++) {
		float s;
		a->v->rms_fwd(a->out + r * a->C, &s, a->inp + r * a->C, a->weight, a->eps, a->C);
		if (a->rstd)
			a->rstd[r] = s;
	}
}

static int cpu_rmsnorm_forward(struct zn_kctx *ctx, void *out, float *rstd, const void *inp,
			       const void *weight, float eps, int BT, int C)
{
	CHECK_CTX("rmsnorm_forward");
	ZN_TRY(zn_kcheck_rmsnorm_fwd(out, inp, weight, eps, BT, C));
	if (WIDE(ctx))
		return zn_cpu16_rmsnorm_forward(zn_cpu(ctx), out, rstd, inp, weight, eps, BT, C);
	zn_cpu32_rmsnorm_forward(zn_cpu(ctx), out, rstd, inp, weight, eps, (size_t)BT, (size_t)C);
	return 0;
}

void zn_cpu32_rmsnorm_forward(struct cpu_ctx *c, float *out, float *rstd, const float *inp,
			      const float *weight, float eps, size_t BT, size_t C)
{
	struct rms_args a = { .v = c->v, .out = out, .rstd = rstd, .inp = inp, .weight = weight,
			      .eps = eps, .C = C };
	zn_cpu_run_chunks(c, BT, zn_cpu_chunk_of(c, BT, 1, 1), BT * C, rms_fwd_rows, &a);
}

static void rms_bwd_task(void *p, size_t task, unsigned w)
{
	(void)w;
	const struct rms_args *a = p;
	if (task < a->row_tasks) {
		size_t r0 = task * a->rows_per_task, r1 = ZN_MIN(a->BT, r0 + a->rows_per_task);
		for (size_t r = r0; r < r1; r++)
			a->v->rms_bwd(a->dinp + r * a->C, a->dout + r * a->C, a->inp + r * a->C,
				      a->weight, a->srstd[r], a->C);
		return;
	}
	size_t c0 = (task - a->row_tasks) * a->slice, n = ZN_MIN(a->C, c0 + a->slice) - c0;
	for (size_t r = 0; r < a->BT; r++)
		a->v->rms_bwd_w(a->dweight + c0, a->dout + r * a->C + c0, a->inp + r * a->C + c0,
				a->srstd[r], n);
}

static int cpu_rmsnorm_backward(struct zn_kctx *ctx, void *dinp, void *dweight,
				const void *dout, const void *inp, const void *weight,
				const float *rstd, int BT, int C)
{
	CHECK_CTX("rmsnorm_backward");
	ZN_TRY(zn_kcheck_rmsnorm_bwd(dout, inp, weight, rstd, BT, C));
	if (WIDE(ctx))
		return zn_cpu16_rmsnorm_backward(zn_cpu(ctx), dinp, dweight, dout, inp, weight, rstd,
						 BT, C);
	zn_cpu32_rmsnorm_backward(zn_cpu(ctx), dinp, dweight, dout, inp, weight, rstd, (size_t)BT,
				  (size_t)C);
	return 0;
}

void zn_cpu32_rmsnorm_backward(struct cpu_ctx *c, float *dinp, float *dweight,
			       const float *dout, const float *inp, const float *weight,
			       const float *rstd, size_t BT, size_t C)
{
	struct rms_args a = { .v = c->v, .dinp = dinp, .dweight = dweight, .dout = dout,
			      .inp = inp, .weight = weight, .srstd = rstd, .C = C, .BT = BT };
	/* one job, as layernorm's: row tasks for dinp, channel slices for
	 * dweight (each adds the rows in order) */
	if (dinp) {
		a.rows_per_task = zn_cpu_chunk_of(c, a.BT, 1, 1);
		a.row_tasks = ZN_DIV_ROUND_UP(a.BT, a.rows_per_task);
	}
	size_t slice_tasks = 0;
	if (dweight) {
		a.slice = zn_cpu_slice_of(c, a.C);
		slice_tasks = ZN_DIV_ROUND_UP(a.C, a.slice);
	}
	zn_threadpool_for(a.BT * a.C < INLINE_WORK ? NULL : c->pool, a.row_tasks + slice_tasks,
			  rms_bwd_task, &a);
}

/* ---- rotary embedding ---------------------------------------------------------------- */

struct rope_args {
	const struct zn_kvec *v;
	float *out;
	const float *inp, *cs, *sn; /* cs, sn NULL: no rotation */
	size_t T, NH, HS, half, ldo, ldi;
	size_t pos0;                /* row r is at position (pos0 + r) % T */
	bool backward;
};

/* cos and sin of fp32(t * inv_freq[i]): the angle rounded to fp32 as
 * transformers computes it (inv_freq @ position_ids in fp32), its cosine
 * and sine in double, rounded once. */
struct rope_tab_args {
	const float *inv;
	float *cs, *sn;
	size_t half;
};

static void rope_tab_rows(void *p, size_t t0, size_t t1, unsigned w)
{
	(void)w;
	const struct rope_tab_args *a = p;
	for (size_t t = t0; t < t1; t++)
		for (size_t i = 0; i < a->half; i++) {
			float ang = (float)t * a->inv[i];
			a->cs[t * a->half + i] = (float)cos((double)ang);
			a->sn[t * a->half + i] = (float)sin((double)ang);
		}
}

/* The context's table for (T, inv_freq), computed when it does not hold
 * it yet (a table for more positions serves fewer). */
static int rope_table(struct cpu_ctx *c, const float *inv, int T, int half, const float **cs,
		      const float **sn)
{
	size_t hb = (size_t)half * sizeof(float);
	if (c->rope_T < T || c->rope_half != half || memcmp(c->rope_inv, inv, hb) != 0) {
		int T2 = c->rope_half == half && c->rope_T > T ? c->rope_T : T;
		float *tab = malloc(2 * (size_t)T2 * hb);
		if (!tab)
			return zn_error(-ENOMEM, "rope: cannot allocate the %d x %d cos/sin table", T2,
					half);
		free(c->rope_tab);
		c->rope_tab = tab;
		c->rope_T = 0; /* not valid until filled */
		memcpy(c->rope_inv, inv, hb);
		c->rope_half = half;
		struct rope_tab_args a = { .inv = c->rope_inv, .cs = tab,
					   .sn = tab + (size_t)T2 * half, .half = (size_t)half };
		zn_cpu_run_chunks(c, (size_t)T2, zn_cpu_chunk_of(c, (size_t)T2, 1, 1), (size_t)T2 * half * 16,
			   rope_tab_rows, &a);
		c->rope_T = T2;
	}
	*cs = c->rope_tab;
	*sn = c->rope_tab + (size_t)c->rope_T * half;
	return 0;
}

static void rope_rows(void *p, size_t r0, size_t r1, unsigned w)
{
	(void)w;
	const struct rope_args *a = p;
	for (size_t r = r0; r < r1; r++) {
		float *o = a->out + r * a->ldo;
		const float *x = a->inp + r * a->ldi;
		if (!a->cs) { /* no rotation: copy, or add for the backward */
			if (a->backward)
				a->v->acc(o, x, a->NH * a->HS);
			else if (o != x)
				memcpy(o, x, a->NH * a->HS * sizeof(float));
			continue;
		}
		const size_t t = (a->pos0 + r) % a->T;
		const float *cs = a->cs + t * a->half, *sn = a->sn + t * a->half;
		for (size_t h = 0; h < a->NH; h++)
			if (a->backward)
				a->v->rope_bwd(o + h * a->HS, x + h * a->HS, cs, sn, a->half);
			else
				a->v->rope_fwd(o + h * a->HS, x + h * a->HS, cs, sn, a->half);
	}
}

int zn_cpu32_rope(struct cpu_ctx *c, bool backward, float *out, size_t ldo, const float *inp,
		  size_t ldi, const float *inv_freq, size_t rows, size_t pos0, int T, int NH,
		  int HS)
{
	struct rope_args a = { .v = c->v, .out = out, .inp = inp, .T = (size_t)T, .NH = (size_t)NH,
			       .HS = (size_t)HS, .half = (size_t)HS / 2, .ldo = ldo, .ldi = ldi,
			       .pos0 = pos0, .backward = backward };
	if (inv_freq)
		ZN_TRY(rope_table(c, inv_freq, T, HS / 2, &a.cs, &a.sn));
	zn_cpu_run_chunks(c, rows, zn_cpu_chunk_of(c, rows, 1, 1), rows * NH * HS, rope_rows, &a);
	return 0;
}

static int cpu_rope_forward(struct zn_kctx *ctx, void *out, int ldo, const void *inp, int ldi,
			    const float *inv_freq, int B, int T, int NH, int HS)
{
	CHECK_CTX("rope_forward");
	ZN_TRY(zn_kcheck_rope(false, out, ldo, inp, ldi, B, T, NH, HS));
	if (WIDE(ctx))
		return zn_cpu16_rope(zn_cpu(ctx), false, out, ldo, inp, ldi, inv_freq, B, T, NH, HS);
	return zn_cpu32_rope(zn_cpu(ctx), false, out, (size_t)ldo, inp, (size_t)ldi, inv_freq,
			     (size_t)B * T, 0, T, NH, HS);
}

static int cpu_rope_backward(struct zn_kctx *ctx, void *dinp, int ldi, const void *dout, int ldo,
			     const float *inv_freq, int B, int T, int NH, int HS)
{
	CHECK_CTX("rope_backward");
	ZN_TRY(zn_kcheck_rope(true, dinp, ldi, dout, ldo, B, T, NH, HS));
	/* the rows: dinp (stride ldi) gets dout (stride ldo) */
	if (WIDE(ctx))
		return zn_cpu16_rope(zn_cpu(ctx), true, dinp, ldi, dout, ldo, inv_freq, B, T, NH, HS);
	return zn_cpu32_rope(zn_cpu(ctx), true, dinp, (size_t)ldi, dout, (size_t)ldo, inv_freq,
			     (size_t)B * T, 0, T, NH, HS);
}

/* ---- elementwise -------------------------------------------------------------------- */

/* fp32: the loop on the range.  fp16/bf16: pieces of EW_PIECE elements
 * widened into fp32 on the stack -- the inputs, and the outputs the op adds
 * into -- computed by the same loop and rounded back once. */
#define EW_PIECE 1024

static void ew_f32(const struct zn_cpu_ew_args *e, float *o1, float *o2, const float *a,
		   const float *b, const float *c, size_t n)
{
	switch (e->kind) {
	case ZN_EW_GELU_FWD:
		e->v->gelu_fwd(o1, a, n);
		break;
	case ZN_EW_GELU_BWD: /* o1 = dinp, a = inp, b = dout */
		e->v->gelu_bwd(o1, a, b, n);
		break;
	case ZN_EW_ADD:
		e->v->add(o1, a, b, n);
		break;
	case ZN_EW_ACC2:
		if (o1)
			e->v->acc(o1, a, n);
		if (o2)
			e->v->acc(o2, a, n);
		break;
	case ZN_EW_SWIGLU_FWD: /* o1 = out, a = gate, b = up */
		e->v->swiglu_fwd(o1, a, b, n);
		break;
	case ZN_EW_SWIGLU_BWD: /* o1 = dgate, o2 = dup, a = dout, b = gate, c = up */
		e->v->swiglu_bwd(o1, o2, a, b, c, n);
		break;
	}
}

static void ew_range(void *p, size_t i0, size_t i1, unsigned w)
{
	(void)w;
	const struct zn_cpu_ew_args *e = p;
	if (e->dt == ZN_DTYPE_F32) {
#define AT(x, T) ((x) ? (T *)(x) + i0 : NULL)
		ew_f32(e, AT(e->o1, float), AT(e->o2, float), AT(e->a, const float),
		       AT(e->b, const float), AT(e->c, const float), i1 - i0);
#undef AT
		return;
	}
	/* outputs the op adds into (the others it writes) */
	const bool acc = e->kind == ZN_EW_GELU_BWD || e->kind == ZN_EW_ACC2 ||
			 e->kind == ZN_EW_SWIGLU_BWD;
	const size_t sz = zn_dtype_size(e->dt);
	float o1[EW_PIECE], o2[EW_PIECE], x[3][EW_PIECE];
	const void *in[3] = { e->a, e->b, e->c };
	for (size_t i = i0; i < i1; i += EW_PIECE) {
		const size_t n = ZN_MIN(i1 - i, (size_t)EW_PIECE), off = i * sz;
		for (int k = 0; k < 3; k++)
			if (in[k])
				e->v->cast(x[k], ZN_DTYPE_F32, (const char *)in[k] + off, e->dt, n);
		if (acc && e->o1)
			e->v->cast(o1, ZN_DTYPE_F32, (char *)e->o1 + off, e->dt, n);
		if (acc && e->o2)
			e->v->cast(o2, ZN_DTYPE_F32, (char *)e->o2 + off, e->dt, n);
		ew_f32(e, e->o1 ? o1 : NULL, e->o2 ? o2 : NULL, x[0], x[1], x[2], n);
		if (e->o1)
			e->v->cast((char *)e->o1 + off, e->dt, o1, ZN_DTYPE_F32, n);
		if (e->o2)
			e->v->cast((char *)e->o2 + off, e->dt, o2, ZN_DTYPE_F32, n);
	}
}

static void run_ew(struct zn_kctx *ctx, struct zn_cpu_ew_args *e, size_t N)
{
	struct cpu_ctx *c = zn_cpu(ctx);
	e->v = c->v;
	e->dt = ctx->dtype;
	zn_cpu_run_chunks(c, N, zn_cpu_chunk_of(c, N, 4096, 64), N, ew_range, e);
}

static int cpu_gelu_forward(struct zn_kctx *ctx, void *out, const void *inp, size_t N)
{
	CHECK_CTX("gelu_forward");
	ZN_TRY(zn_kcheck_elementwise("gelu_forward", out, inp, inp));
	run_ew(ctx, &(struct zn_cpu_ew_args){ .kind = ZN_EW_GELU_FWD, .o1 = out, .a = inp }, N);
	return 0;
}

static int cpu_gelu_backward(struct zn_kctx *ctx, void *dinp, const void *dout, const void *inp,
			     size_t N)
{
	CHECK_CTX("gelu_backward");
	ZN_TRY(zn_kcheck_elementwise("gelu_backward", dinp, dout, inp));
	run_ew(ctx, &(struct zn_cpu_ew_args){ .kind = ZN_EW_GELU_BWD, .o1 = dinp, .a = inp, .b = dout },
	       N);
	return 0;
}

static int cpu_residual_forward(struct zn_kctx *ctx, void *out, const void *inp1,
				const void *inp2, size_t N)
{
	CHECK_CTX("residual_forward");
	ZN_TRY(zn_kcheck_elementwise("residual_forward", out, inp1, inp2));
	run_ew(ctx, &(struct zn_cpu_ew_args){ .kind = ZN_EW_ADD, .o1 = out, .a = inp1, .b = inp2 }, N);
	return 0;
}

static int cpu_residual_backward(struct zn_kctx *ctx, void *dinp1, void *dinp2,
				 const void *dout, size_t N)
{
	CHECK_CTX("residual_backward");
	ZN_TRY(zn_kcheck_ptr("residual_backward", "dout", dout));
	run_ew(ctx, &(struct zn_cpu_ew_args){ .kind = ZN_EW_ACC2, .o1 = dinp1, .o2 = dinp2, .a = dout },
	       N);
	return 0;
}

static int cpu_swiglu_forward(struct zn_kctx *ctx, void *out, const void *gate, const void *up,
			      size_t N)
{
	CHECK_CTX("swiglu_forward");
	ZN_TRY(zn_kcheck_elementwise("swiglu_forward", out, gate, up));
	run_ew(ctx, &(struct zn_cpu_ew_args){ .kind = ZN_EW_SWIGLU_FWD, .o1 = out, .a = gate, .b = up },
	       N);
	return 0;
}

static int cpu_swiglu_backward(struct zn_kctx *ctx, void *dgate, void *dup, const void *dout,
			       const void *gate, const void *up, size_t N)
{
	CHECK_CTX("swiglu_backward");
	ZN_TRY(zn_kcheck_elementwise("swiglu_backward", dout, gate, up));
	if (!dgate && !dup)
		return 0;
	run_ew(ctx, &(struct zn_cpu_ew_args){ .kind = ZN_EW_SWIGLU_BWD, .o1 = dgate, .o2 = dup,
					    .a = dout, .b = gate, .c = up }, N);
	return 0;
}

/* ---- softmax cross-entropy --------------------------------------------------------- */

struct xent_args {
	const struct zn_kvec *v;
	float *losses, *dlogits;
	const float *logits, *weights;
	const int32_t *targets;
	float grad_scale;
	size_t V, Vp;
};

static void xent_rows(void *p, size_t r0, size_t r1, unsigned w)
{
	(void)w;
	const struct xent_args *a = p;
	for (size_t r = r0; r < r1; r++) {
		float wt = a->weights ? a->weights[r] : 1.0f;
		int32_t t = a->targets[r];
		float *dl = a->dlogits ? a->dlogits + r * a->Vp : NULL;
		if (t < 0 || wt == 0.0f) {
			a->losses[r] = 0.0f;
			if (dl)
				memset(dl, 0, a->Vp * sizeof(float));
			continue;
		}
		float l = a->v->xent(dl, a->logits + r * a->Vp, a->V, t, a->grad_scale * wt);
		a->losses[r] = wt * l;
		if (dl && a->Vp > a->V)
			memset(dl + a->V, 0, (a->Vp - a->V) * sizeof(float));
	}
}

static int cpu_softmax_crossentropy(struct zn_kctx *ctx, float *losses, void *dlogits,
				    const void *logits, const int32_t *targets,
				    const float *weights, float grad_scale, int BT, int V, int Vp)
{
	const char *op = "softmax_crossentropy";
	CHECK_CTX(op);
	ZN_TRY(zn_kcheck_xent(losses, logits, targets, BT, V, Vp));
	ZN_TRY(check_tokens(op, "targets", targets, (size_t)BT, V, true, 0));
	struct cpu_ctx *c = zn_cpu(ctx);
	if (WIDE(ctx))
		return zn_cpu16_softmax_crossentropy(c, losses, dlogits, logits, targets, weights,
						     grad_scale, BT, V, Vp);
	struct xent_args a = { .v = c->v, .losses = losses, .dlogits = dlogits, .logits = logits,
			       .weights = weights, .targets = targets, .grad_scale = grad_scale,
			       .V = (size_t)V, .Vp = (size_t)Vp };
	/* rows per task: ~32 Ki logits, so a small vocabulary still makes
	 * tasks worth handing out */
	size_t rows = ZN_MAX((size_t)1, ((size_t)1 << 15) / (size_t)V);
	zn_cpu_run_chunks(c, (size_t)BT, rows, (size_t)BT * (size_t)Vp, xent_rows, &a);
	return 0;
}

/* ---- casts and reductions -------------------------------------------------------------- */

struct red_args {
	const struct zn_kvec *v;
	void *dst;
	const void *src;
	enum zn_dtype dd, sd;
	float s;
	size_t n, esz, dsz;
	double *part;   /* sumsq: one partial sum per chunk */
	uint8_t *flag;  /* nonfinite: one flag per chunk */
	int kind;
};

enum { RED_CAST, RED_SCALE, RED_SUMSQ, RED_NONFINITE };

static void red_range(void *p, size_t i0, size_t i1, unsigned w)
{
	(void)w;
	const struct red_args *a = p;
	const char *src = (const char *)a->src + i0 * a->esz;
	size_t n = i1 - i0;
	switch (a->kind) {
	case RED_CAST:
		a->v->cast((char *)a->dst + i0 * a->dsz, a->dd, src, a->sd, n);
		break;
	case RED_SCALE:
		a->v->scale((char *)a->dst + i0 * a->dsz, a->dd, a->s, n);
		break;
	case RED_SUMSQ:
		a->part[i0 / RED_CHUNK] = a->v->sumsq(src, a->sd, n);
		break;
	case RED_NONFINITE:
		a->flag[i0 / RED_CHUNK] = a->v->nonfinite(src, a->sd, n);
		break;
	}
}

static int cpu_cast(struct zn_kctx *ctx, void *dst, enum zn_dtype dst_dtype, const void *src,
		    enum zn_dtype src_dtype, size_t n)
{
	CHECK_CTX("cast");
	ZN_TRY(zn_kcheck_convert("cast", dst, dst_dtype, src, src_dtype, n, true));
	size_t dsz = zn_dtype_size(dst_dtype), ssz = zn_dtype_size(src_dtype);
	struct cpu_ctx *c = zn_cpu(ctx);
	struct red_args a = { .v = c->v, .dst = dst, .src = src, .dd = dst_dtype, .sd = src_dtype,
			      .esz = ssz, .dsz = dsz, .kind = RED_CAST };
	zn_cpu_run_chunks(c, n, zn_cpu_chunk_of(c, n, 4096, 64), n, red_range, &a);
	return 0;
}

struct acc_args {
	const struct zn_kvec *v;
	void *dst;
	const void *src;
	enum zn_dtype dd, sd;
};

/* Chunks of 1024: each widened into two fp32 scratch rows on the stack. */
static void acc_range(void *arg, size_t i0, size_t i1, unsigned w)
{
	const struct acc_args *a = arg;
	float x[1024], y[1024];
	(void)w;
	const size_t dsz = zn_dtype_size(a->dd), ssz = zn_dtype_size(a->sd);
	for (size_t i = i0; i < i1; i += 1024) {
		size_t n = ZN_MIN(i1 - i, (size_t)1024);
		a->v->cast(x, ZN_DTYPE_F32, (const char *)a->dst + i * dsz, a->dd, n);
		a->v->cast(y, ZN_DTYPE_F32, (const char *)a->src + i * ssz, a->sd, n);
		for (size_t j = 0; j < n; j++)
			x[j] += y[j];
		a->v->cast((char *)a->dst + i * dsz, a->dd, x, ZN_DTYPE_F32, n);
	}
}

static int cpu_accumulate(struct zn_kctx *ctx, void *dst, enum zn_dtype dst_dtype,
			  const void *src, enum zn_dtype src_dtype, size_t n)
{
	CHECK_CTX("accumulate");
	ZN_TRY(zn_kcheck_convert("accumulate", dst, dst_dtype, src, src_dtype, n, false));
	struct cpu_ctx *c = zn_cpu(ctx);
	struct acc_args a = { .v = c->v, .dst = dst, .src = src, .dd = dst_dtype, .sd = src_dtype };
	zn_cpu_run_chunks(c, n, zn_cpu_chunk_of(c, n, 4096, 64), n, acc_range, &a);
	return 0;
}

static int cpu_scale(struct zn_kctx *ctx, void *x, enum zn_dtype dtype, float s, size_t n)
{
	CHECK_CTX("scale");
	ZN_TRY(zn_kcheck_dtype("scale", "tensor", dtype));
	ZN_TRY(zn_kcheck_ptr("scale", "x", x));
	struct cpu_ctx *c = zn_cpu(ctx);
	size_t sz = zn_dtype_size(dtype);
	struct red_args a = { .v = c->v, .dst = x, .src = x, .dd = dtype, .sd = dtype, .s = s,
			      .esz = sz, .dsz = sz, .kind = RED_SCALE };
	zn_cpu_run_chunks(c, n, zn_cpu_chunk_of(c, n, 4096, 64), n, red_range, &a);
	return 0;
}

static int cpu_sumsq(struct zn_kctx *ctx, double *acc, const void *x, enum zn_dtype dtype,
		     size_t n)
{
	CHECK_CTX("sumsq");
	ZN_TRY(zn_kcheck_dtype("sumsq", "tensor", dtype));
	ZN_TRY(zn_kcheck_ptr("sumsq", "acc", acc));
	ZN_TRY(zn_kcheck_ptr("sumsq", "x", x));
	if (n == 0)
		return 0;
	struct cpu_ctx *c = zn_cpu(ctx);
	size_t chunks = ZN_DIV_ROUND_UP(n, RED_CHUNK);
	double one, *part = chunks == 1 ? &one : malloc(chunks * sizeof(double));
	if (!part)
		return zn_error(-ENOMEM, "sumsq: out of memory for %zu partial sums", chunks);
	struct red_args a = { .v = c->v, .src = x, .sd = dtype, .esz = zn_dtype_size(dtype),
			      .part = part, .kind = RED_SUMSQ };
	zn_cpu_run_chunks(c, n, RED_CHUNK, n, red_range, &a);
	double s = 0.0;
	for (size_t i = 0; i < chunks; i++)
		s += part[i];
	*acc += s;
	if (part != &one)
		free(part);
	return 0;
}

static int cpu_nonfinite(struct zn_kctx *ctx, int32_t *flag, const void *x, enum zn_dtype dtype,
			 size_t n)
{
	CHECK_CTX("nonfinite");
	ZN_TRY(zn_kcheck_dtype("nonfinite", "tensor", dtype));
	ZN_TRY(zn_kcheck_ptr("nonfinite", "flag", flag));
	ZN_TRY(zn_kcheck_ptr("nonfinite", "x", x));
	if (n == 0)
		return 0;
	struct cpu_ctx *c = zn_cpu(ctx);
	size_t chunks = ZN_DIV_ROUND_UP(n, RED_CHUNK);
	uint8_t one, *f = chunks == 1 ? &one : malloc(chunks);
	if (!f)
		return zn_error(-ENOMEM, "nonfinite: out of memory for %zu flags", chunks);
	struct red_args a = { .v = c->v, .src = x, .sd = dtype, .esz = zn_dtype_size(dtype),
			      .flag = f, .kind = RED_NONFINITE };
	zn_cpu_run_chunks(c, n, RED_CHUNK, n, red_range, &a);
	for (size_t i = 0; i < chunks; i++)
		if (f[i])
			*flag = 1;
	if (f != &one)
		free(f);
	return 0;
}

static int cpu_adam(struct zn_kctx *ctx, const struct zn_adam_hparams *hp, uint64_t step,
		    float grad_scale, float *param, const float *grad, float *m, float *v, size_t n)
{
	CHECK_CTX("adam");
	/* The CPU optimizer itself, on this context's workers. */
	struct zn_adam_tensors t = { .n = n, .param = param, .grad = grad,
				     .grad_dtype = ZN_DTYPE_F32, .exp_avg = m, .exp_avg_sq = v };
	struct zn_adam_exec ex = { .pool = zn_cpu(ctx)->pool };
	return zn_adam_step(hp, step, grad_scale, &t, &ex);
}

const struct zn_kernels zn_kernels_cpu = {
	.version = ZN_KERNELS_VERSION,
	.name = "cpu",
	.device_memory = false,
	.dtypes = (1u << ZN_DTYPE_F32) | (1u << ZN_DTYPE_F16) | (1u << ZN_DTYPE_BF16),
	.ctx_create = cpu_ctx_create,
	.ctx_destroy = cpu_ctx_destroy,
	.encoder_forward = cpu_encoder_forward,
	.encoder_backward = cpu_encoder_backward,
	.layernorm_forward = cpu_layernorm_forward,
	.layernorm_backward = cpu_layernorm_backward,
	.matmul_forward = cpu_matmul_forward,
	.matmul_backward = cpu_matmul_backward,
	.matmul_forward_ld = cpu_matmul_forward_ld,
	.matmul_backward_ld = cpu_matmul_backward_ld,
	.embedding_rows_forward = cpu_embedding_rows_forward,
	.embedding_rows_backward = cpu_embedding_rows_backward,
	.attention_forward = cpu_attention_forward,
	.attention_backward = cpu_attention_backward,
	.gelu_forward = cpu_gelu_forward,
	.gelu_backward = cpu_gelu_backward,
	.residual_forward = cpu_residual_forward,
	.residual_backward = cpu_residual_backward,
	.softmax_crossentropy = cpu_softmax_crossentropy,
	.cast = cpu_cast,
	.scale = cpu_scale,
	.nonfinite = cpu_nonfinite,
	.sumsq = cpu_sumsq,
	.adam = cpu_adam,
	.rmsnorm_forward = cpu_rmsnorm_forward,
	.rmsnorm_backward = cpu_rmsnorm_backward,
	.rope_forward = cpu_rope_forward,
	.rope_backward = cpu_rope_backward,
	.swiglu_forward = cpu_swiglu_forward,
	.swiglu_backward = cpu_swiglu_backward,
	.accumulate = cpu_accumulate,
};
