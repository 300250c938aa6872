/* A benchmark of the cpu kernels on GPT-2 shapes (not a test: nothing is
 * asserted).  `meson test --benchmark kernels` or run it directly:
 *
 *   kernels_bench [B T C NH V layers dtype]   default 4 1024 768 12 50304 1 fp32
 *
 * dtype bf16 or fp16 runs the ops on 16-bit storage (the cpu kernels widen
 * their operands to fp32 in blocks): run it beside fp32 to see what the
 * conversions cost.
 *
 * It times raw OpenBLAS sgemm with OpenBLAS's own threads on the largest
 * matmul shape (BT x 4C x C), the same product through matmul_forward /
 * matmul_backward on a pool, then one transformer block forward + backward
 * and the classifier (matmul + softmax cross-entropy), op by op, then the
 * Llama family's ops (RMSNorm, the rotary embedding packing q, k, v,
 * grouped-query attention, SwiGLU) on the same shapes, and prints GFLOP/s.  FLOPs count 2 per multiply-add; attention counts the
 * causal half of its T x T products.
 */
#include <cblas.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "zinc/kernels.h"
#include "zinc/threadpool.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static bool bits16; /* 16-bit storage: values written as 16-bit numbers */

static float *buf(size_t n)
{
	float *p = aligned_alloc(64, ((n * sizeof(float)) + 63) / 64 * 64);
	if (!p) {
		fprintf(stderr, "kernels_bench: out of memory (%zu floats)\n", n);
		exit(1);
	}
	for (size_t i = 0; i < n; i++)
		p[i] = (float)((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
	/* finite in both 16-bit types: 0x3c00 + k is about 1 in fp16 and
	 * about 0.008 in bf16 */
	for (size_t i = 0; bits16 && i < n; i++)
		((uint16_t *)p)[i] = (uint16_t)(0x3c00 + (i * 2654435761u) % 256);
	return p;
}

#define CHECK(x)                                                                   \
	do {                                                                       \
		if ((x) != 0) {                                                    \
			fprintf(stderr, "%s: %s\n", #x, zn_last_error());           \
			exit(1);                                                   \
		}                                                                  \
	} while (0)

static double total_flop, total_s;

/* Best of 3 of out (M x N) = a (M x K) @ b^T with `threads` OpenBLAS
 * threads, in GFLOP/s. */
static double raw_sgemm(size_t M, size_t N, int K, int threads)
{
	int keep = openblas_get_num_threads();
	openblas_set_num_threads(threads);
	float *a = buf(M * (size_t)K), *b = buf(N * (size_t)K), *o = buf(M * N);
	double best = 0;
	for (int r = 0; r < 3; r++) {
		double t0 = now();
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)N, K, 1.0f, a, K, b,
			    K, 0.0f, o, (int)N);
		double g = 2.0 * M * N * K / (now() - t0) * 1e-9;
		best = g > best ? g : best;
	}
	free(a), free(b), free(o);
	openblas_set_num_threads(keep);
	return best;
}

static void report(const char *what, double s, double flop)
{
	total_s += s;
	total_flop += flop;
	if (flop > 0)
		printf("  %-28s %9.2f ms %9.1f GFLOP/s\n", what, s * 1e3, flop / s * 1e-9);
	else
		printf("  %-28s %9.2f ms\n", what, s * 1e3);
}

#define TIME(what, flop, call)                                                     \
	do {                                                                       \
		double t0_ = now();                                                \
		CHECK(call);                                                       \
		report(what, now() - t0_, flop);                                   \
	} while (0)

int main(int argc, char **argv)
{
	int B = 4, T = 1024, C = 768, NH = 12, V = 50304, L = 1;
	int *dims[] = { &B, &T, &C, &NH, &V, &L };
	for (int i = 1; i < argc && i <= 6; i++)
		*dims[i - 1] = atoi(argv[i]);
	enum zn_dtype dt = ZN_DTYPE_F32;
	if (argc > 7) {
		if (strcmp(argv[7], "bf16") == 0)
			dt = ZN_DTYPE_BF16;
		else if (strcmp(argv[7], "fp16") == 0)
			dt = ZN_DTYPE_F16;
		else if (strcmp(argv[7], "fp32") != 0) {
			fprintf(stderr, "kernels_bench: dtype '%s': use fp32, bf16 or fp16\n",
				argv[7]);
			return 2;
		}
	}
	size_t BT = (size_t)B * T, C4 = 4 * (size_t)C;
	int nproc = openblas_get_num_threads();

	/* raw sgemm with OpenBLAS's own threads: measured here and again at
	 * the end (the kernels turn OpenBLAS threading off; it is turned back
	 * on for that), the best of both counts: on a shared machine a
	 * neighbour's load should not flatter the ratio */
	double best = raw_sgemm(BT, C4, C, nproc);
	printf("B=%d T=%d C=%d NH=%d V=%d, %s storage, OpenBLAS %d thread(s)\n", B, T, C, NH, V,
	       zn_dtype_name(dt), nproc);
	printf("  %-28s %9s    %9.1f GFLOP/s (best of 3)\n", "raw sgemm (BT x 4C x C)", "", best);
	float *x = buf(BT * C), *w = buf(C4 * C), *y = buf(BT * C4);

	struct zn_threadpool *pool = zn_threadpool_create(0, -1);
	const struct zn_kernels *k = zn_kernels_get("cpu");
	struct zn_kernels_params kp;
	zn_kernels_params_default(&kp);
	kp.pool = pool;
	kp.dtype = dt;
	bits16 = dt != ZN_DTYPE_F32;
	struct zn_kctx *ctx = k ? k->ctx_create(&kp) : NULL;
	if (!ctx) {
		fprintf(stderr, "kernels_bench: %s\n", zn_last_error());
		return 1;
	}
	printf("  pool: %u workers (%s)\n", zn_threadpool_size(pool), zn_threadpool_binding(pool));
	double mm = 2.0 * BT * C4 * C;
	for (int r = 0; r < 2; r++)
		TIME("matmul_forward BT x 4C x C", mm, k->matmul_forward(ctx, y, x, w, NULL, (int)BT, C, (int)C4));
	float *dx = buf(BT * C), *dw = buf(C4 * C), *db = buf(C4);
	TIME("matmul_backward (2 products)", 2 * mm,
	     k->matmul_backward(ctx, dx, dw, db, y, x, w, (int)BT, C, (int)C4));
	free(x), free(w), free(y), free(dx), free(dw), free(db);

	/* one block: activations and parameters */
	size_t n = BT * C;
	float *res = buf(n), *ln1 = buf(n), *m1 = buf(BT), *r1 = buf(BT), *qkv = buf(3 * n),
	      *att = buf(n), *lse = buf((size_t)B * NH * T), *proj = buf(n), *res2 = buf(n),
	      *ln2 = buf(n), *m2 = buf(BT), *r2 = buf(BT), *fc = buf(4 * n), *gl = buf(4 * n),
	      *fcp = buf(n), *out = buf(n);
	float *lw = buf(C), *lb = buf(C), *wqkv = buf(3 * (size_t)C * C), *bqkv = buf(3 * (size_t)C),
	      *wpr = buf((size_t)C * C), *bpr = buf(C), *wfc = buf(C4 * C), *bfc = buf(C4),
	      *wfp = buf(C4 * C), *bfp = buf(C);
	float *g_out = buf(n), *g_res2 = buf(n), *g_fcp = buf(n), *g_gl = buf(4 * n),
	      *g_fc = buf(4 * n), *g_ln2 = buf(n), *g_proj = buf(n), *g_att = buf(n),
	      *g_qkv = buf(3 * n), *g_ln1 = buf(n), *g_res = buf(n);
	float *dlw = buf(C), *dlb = buf(C), *dwqkv = buf(3 * (size_t)C * C), *dbqkv = buf(3 * (size_t)C),
	      *dwpr = buf((size_t)C * C), *dbpr = buf(C), *dwfc = buf(C4 * C), *dbfc = buf(C4),
	      *dwfp = buf(C4 * C), *dbfp = buf(C);
	double lin = 2.0 * BT * C * C; /* one C x C product */
	double attf = 2.0 * 2.0 * B * NH * ((double)T * (T + 1) / 2) * (C / NH);
	total_flop = total_s = 0;
	for (int l = 0; l < L; l++) {
		printf(" block %d forward\n", l);
		TIME("layernorm_forward", 0, k->layernorm_forward(ctx, ln1, m1, r1, res, lw, lb, (int)BT, C));
		TIME("matmul_forward qkv", 3 * lin, k->matmul_forward(ctx, qkv, ln1, wqkv, bqkv, (int)BT, C, 3 * C));
		TIME("attention_forward", attf, k->attention_forward(ctx, att, lse, qkv, B, T, NH, NH, C / NH));
		TIME("matmul_forward proj", lin, k->matmul_forward(ctx, proj, att, wpr, bpr, (int)BT, C, C));
		TIME("residual_forward", 0, k->residual_forward(ctx, res2, res, proj, n));
		TIME("layernorm_forward", 0, k->layernorm_forward(ctx, ln2, m2, r2, res2, lw, lb, (int)BT, C));
		TIME("matmul_forward fc", 4 * lin, k->matmul_forward(ctx, fc, ln2, wfc, bfc, (int)BT, C, (int)C4));
		TIME("gelu_forward", 0, k->gelu_forward(ctx, gl, fc, 4 * n));
		TIME("matmul_forward fcproj", 4 * lin, k->matmul_forward(ctx, fcp, gl, wfp, bfp, (int)BT, (int)C4, C));
		TIME("residual_forward", 0, k->residual_forward(ctx, out, res2, fcp, n));
		printf(" block %d backward\n", l);
		TIME("residual_backward", 0, k->residual_backward(ctx, g_res2, g_fcp, g_out, n));
		TIME("matmul_backward fcproj", 8 * lin, k->matmul_backward(ctx, g_gl, dwfp, dbfp, g_fcp, gl, wfp, (int)BT, (int)C4, C));
		TIME("gelu_backward", 0, k->gelu_backward(ctx, g_fc, g_gl, fc, 4 * n));
		TIME("matmul_backward fc", 8 * lin, k->matmul_backward(ctx, g_ln2, dwfc, dbfc, g_fc, ln2, wfc, (int)BT, C, (int)C4));
		TIME("layernorm_backward", 0, k->layernorm_backward(ctx, g_res2, dlw, dlb, g_ln2, res2, lw, m2, r2, (int)BT, C));
		TIME("residual_backward", 0, k->residual_backward(ctx, g_res, g_proj, g_res2, n));
		TIME("matmul_backward proj", 2 * lin, k->matmul_backward(ctx, g_att, dwpr, dbpr, g_proj, att, wpr, (int)BT, C, C));
		TIME("attention_backward", 2 * attf, k->attention_backward(ctx, g_qkv, g_att, qkv, lse, B, T, NH, NH, C / NH));
		TIME("matmul_backward qkv", 6 * lin, k->matmul_backward(ctx, g_ln1, dwqkv, dbqkv, g_qkv, ln1, wqkv, (int)BT, C, 3 * C));
		TIME("layernorm_backward", 0, k->layernorm_backward(ctx, g_res, dlw, dlb, g_ln1, res, lw, m1, r1, (int)BT, C));
	}
	double bs = total_s, bf = total_flop;
	printf(" blocks: %.1f ms, %.1f GFLOP/s\n", bs * 1e3, bf / bs * 1e-9);

	/* the classifier: logits, fused softmax cross-entropy (in place), back */
	float *wte = buf((size_t)V * C), *dwte = buf((size_t)V * C), *logits = buf(BT * V),
	      *losses = buf(BT);
	int32_t *tg = malloc(BT * sizeof(int32_t));
	for (size_t i = 0; i < BT; i++)
		tg[i] = (int32_t)((i * 7919) % (size_t)V);
	total_flop = total_s = 0;
	double cls = 2.0 * BT * C * V;
	printf(" classifier\n");
	TIME("matmul_forward lm_head", cls, k->matmul_forward(ctx, logits, out, wte, NULL, (int)BT, C, V));
	TIME("softmax_crossentropy", 0, k->softmax_crossentropy(ctx, losses, logits, logits, tg, NULL, 1.0f / (float)BT, (int)BT, V, V));
	TIME("matmul_backward lm_head", 2 * cls, k->matmul_backward(ctx, g_out, dwte, NULL, logits, out, wte, (int)BT, C, V));
	printf(" classifier: %.1f ms, %.1f GFLOP/s\n", total_s * 1e3, total_flop / total_s * 1e-9);
	/* the Llama family's ops on the same shapes: grouped-query attention
	 * with NH / 4 key/value heads (Llama 3's ratio), q, k, v packed by the
	 * rotary embedding, RMSNorm, SwiGLU over (BT, 4C) */
	{
		int NKV = NH % 4 == 0 ? NH / 4 : NH, HS = C / NH, QD = C, KD = NKV * HS;
		int W = QD + 2 * KD;
		double gqaf = 2.0 * 2.0 * B * NH * ((double)T * (T + 1) / 2) * HS;
		float inv[ZN_ROPE_MAX_HS / 2];
		for (int i = 0; i < HS / 2; i++)
			inv[i] = 1.0f / (float)(i + 1);
		total_flop = total_s = 0;
		printf(" llama ops (NKV %d)\n", NKV);
		TIME("rmsnorm_forward", 0, k->rmsnorm_forward(ctx, ln1, r1, res, lw, 1e-5f, (int)BT, C));
		TIME("rope_forward q, k, v -> qkv", 0,
		     k->rope_forward(ctx, qkv, W, g_qkv, QD, inv, B, T, NH, HS) ||
		     k->rope_forward(ctx, qkv + QD, W, g_qkv + BT * QD, KD, inv, B, T, NKV, HS) ||
		     k->rope_forward(ctx, qkv + QD + KD, W, g_qkv + BT * (QD + KD), KD, NULL, B, T, NKV, HS));
		TIME("attention_forward (GQA)", gqaf, k->attention_forward(ctx, att, lse, qkv, B, T, NH, NKV, HS));
		TIME("swiglu_forward", 0, k->swiglu_forward(ctx, gl, fc, g_fc, 4 * n));
		TIME("swiglu_backward", 0, k->swiglu_backward(ctx, g_gl, g_fc, gl, fc, g_fc, 4 * n));
		TIME("attention_backward (GQA)", 2 * gqaf, k->attention_backward(ctx, g_qkv, g_att, qkv, lse, B, T, NH, NKV, HS));
		TIME("rope_backward qkv -> q, k, v", 0,
		     k->rope_backward(ctx, g_ln2, QD, g_qkv, W, inv, B, T, NH, HS) ||
		     k->rope_backward(ctx, g_proj, KD, g_qkv + QD, W, inv, B, T, NKV, HS) ||
		     k->rope_backward(ctx, g_proj + BT * KD, KD, g_qkv + QD + KD, W, NULL, B, T, NKV, HS));
		TIME("rmsnorm_backward", 0, k->rmsnorm_backward(ctx, g_res, dlw, g_ln1, res, lw, r1, (int)BT, C));
		printf(" llama ops: %.1f ms\n", total_s * 1e3);
	}
	double again = raw_sgemm(BT, C4, C, nproc);
	printf("  %-28s %9s    %9.1f GFLOP/s (again, at the end)\n", "raw sgemm (BT x 4C x C)", "",
	       again);
	best = again > best ? again : best;
	printf(" blocks alone: %.2f of raw sgemm\n", bf / bs * 1e-9 / best);
	printf(" 12 blocks + classifier (GPT-2 124M step, no optimizer): %.2f of raw sgemm\n",
	       (12 * bf + total_flop) / (12 * bs + total_s) * 1e-9 / best);
	k->ctx_destroy(ctx);
	zn_threadpool_destroy(pool);
	return 0;
}
