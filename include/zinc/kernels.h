/* zinc — compute kernels of pre-norm decoder transformers (GPT-2's
 * LayerNorm/GELU blocks and the Llama family's RMSNorm/RoPE/SwiGLU/GQA
 * blocks), forward and backward: one op table, two implementations.
 *
 *   "cpu"   host memory; OpenBLAS sgemm and vectorized C loops, run on a
 *           zn_threadpool.  Storage dtype fp32.
 *   "cuda"  device memory; cuBLAS / cuBLASLt and .cu kernels, enqueued on
 *           a CUDA stream.  Storage dtype fp32, fp16 or bf16, always with fp32
 *           arithmetic and accumulation.  Present when zinc was built with
 *           the CUDA toolkit.
 *
 * The ops follow llm.c's train_gpt2.c / train_gpt2.cu in shapes and
 * semantics, so its reference code reads as a specification of this file.
 *
 * ---- Shapes: the letters used in every comment below ----------------------
 *
 *   B    batch size (sequences)
 *   T    sequence length; maxT >= T rows in the position table wpe
 *   BT   B * T, the number of token rows
 *   C    channels (n_embd)
 *   NH   attention (query) heads; HS the head size (C / NH in GPT-2;
 *        Llama's head_dim may differ, so attention takes HS itself)
 *   NKV  key/value heads (grouped-query attention: NH % NKV == 0, query
 *        head h reads key/value head h / (NH / NKV)); NKV = NH is plain
 *        multi-head attention
 *   OC   output channels of a matmul (3C for qkv, 4C for the MLP's fc ...)
 *   V    vocabulary size; Vp >= V the row length of the logits (llm.c
 *        pads 50257 to 50304 so the classifier matmul has nice shapes)
 *   N    number of elements of an elementwise op
 *
 * Every tensor is dense and row-major (C order, last index fastest); the
 * shape comments list dimensions outer to inner, e.g. qkv (B, T, 3C).
 * Dimensions are ints > 0; element counts are size_t.
 *
 * ---- Layouts --------------------------------------------------------------
 *
 *   weight of a matmul  (OC, C): out = inp @ weight^T + bias.  This is
 *       PyTorch nn.Linear's layout and llm.c's.  Hugging Face GPT-2 stores
 *       its Conv1D weights (c_attn, c_proj, c_fc) transposed, as (C, OC):
 *       a checkpoint writer/reader transposes those (not lm_head / wte).
 *   qkv (B, T, (NH + 2 NKV) HS): for each token, [q | k | v]: the NH
 *       query heads, then the NKV key heads, then the NKV value heads,
 *       each HS wide, head h of a part at channels h*HS .. h*HS+HS-1 of
 *       it.  With NKV = NH and NH*HS = C that is (B, T, 3C), [q | k | v]
 *       each C wide — what GPT-2's c_attn produces.  Llama's three
 *       projections are put together by rope_forward (below).
 *   attention out (B, T, NH HS): query heads concatenated the same way.
 *   lse (B, NH, T) fp32: the log-sum-exp of each softmax row, saved by
 *       attention_forward for attention_backward (which recomputes the
 *       probabilities from q, k and lse; no (B, NH, T, T) tensor is kept).
 *   mean, rstd (BT) fp32: saved by layernorm_forward for the backward
 *       (rmsnorm_forward saves rstd only).
 *   inv_freq (HS/2) fp32, HOST memory on both backends: the rotary
 *       embedding's inverse frequencies, a parameter of the call like the
 *       scalars (the model computes them: rope_theta, Llama 3's scaling).
 *   tokens, targets (BT) int32; losses (BT) fp32; loss weights (BT) fp32.
 *
 * ---- Dtypes ---------------------------------------------------------------
 *
 * A context has one storage dtype (zn_kernels_params.dtype: fp32, fp16 or
 * bf16 of zinc/dtype.h, on both backends) for every tensor argument typed
 * `void *`:
 * activations, parameters, gradients, logits.  Tensors typed `float *` /
 * `int32_t *` are always fp32 / int32.  The reductions and casts take their
 * dtype explicitly (again fp32, fp16 or bf16), so they also serve gradients
 * kept in another dtype (fp16 with a loss scale).
 *
 * ---- Rules ----------------------------------------------------------------
 *
 *   - Gradients accumulate: every backward op ADDS into its gradient
 *     outputs (dinp +=, dweight +=), as in llm.c, because the residual
 *     stream and tied embeddings receive several contributions and
 *     micro-batches accumulate.  Zero them before the first contribution.
 *     The one exception is softmax_crossentropy, which WRITES dlogits (so
 *     dlogits may be the logits buffer itself).
 *   - Forward outputs are written.  Elementwise ops allow out == inp;
 *     other ops need distinct input and output buffers.
 *   - Memory: cpu ops take host pointers, cuda ops device pointers
 *     (including sumsq's double and nonfinite's int32 flag).  Scalars
 *     (scale factors, dimensions) are host values.
 *   - Synchrony: cpu ops return when done.  cuda ops enqueue work on the
 *     context's stream and return; their return value covers argument
 *     checks and launch errors, not faults found later on the device.
 *   - A context is used by one thread at a time.  Create one per stream.
 *   - Every op returns 0 or a negative errno (-EINVAL for bad arguments,
 *     with a message naming the op, the argument, the value and the rule;
 *     -ENOMEM, -ENOSPC when the workspace is too small, -EIO for a CUDA
 *     or cuBLAS failure, -ENODEV for no GPU at context creation), and
 *     zn_last_error() says what happened.
 *   - Determinism: the same inputs on the same machine give the same bits
 *     (no atomics in floating-point sums; reductions run in a fixed order).
 *     The cpu backend's results do not depend on the number of threads,
 *     except for OpenBLAS's own blocking inside sgemm.
 */
#ifndef ZINC_KERNELS_H
#define ZINC_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "zinc/adam.h"
#include "zinc/common.h"
#include "zinc/dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

struct zn_threadpool;

/* Version of struct zn_kernels, bumped whenever an op is added or changes;
 * a caller built against another layout can tell by comparing. */
#define ZN_KERNELS_VERSION 5

/* How a context runs.  Start from zn_kernels_params_default(). */
struct zn_kernels_params {
	enum zn_dtype dtype;        /* storage of `void *` tensors: F32, F16 or
	                             * BF16 (cpu: computed in fp32 on widened
	                             * copies, results rounded once) */
	struct zn_threadpool *pool; /* cpu: the workers of every op; NULL: the
	                             * calling thread does all the work.  With
	                             * more than one worker, sgemm pieces run on
	                             * the workers and OpenBLAS's own threading
	                             * is turned off for the process
	                             * (openblas_set_num_threads(1)). */
	enum zn_adam_simd simd;     /* cpu: vector path of the loops (AUTO:
	                             * $ZINC_SIMD, else the best the CPU has);
	                             * avx512 runs the avx2 loops */
	void *cuda_stream;          /* cuda: the cudaStream_t ops are enqueued on
	                             * (NULL: the legacy default stream) */
	int cuda_device;            /* cuda: device ordinal (made current in the
	                             * creating thread), -1: the current one.
	                             * Call the ops with that device current. */
	size_t workspace_bytes;     /* cuda: device scratch for attention scores
	                             * and reductions; 0: 64 MiB.  cpu, 16-bit
	                             * storage: the buffer ops widen blocks of
	                             * their operands into; 0: 48 MiB (an op
	                             * takes at least a row of each at once) */
	bool tf32;                  /* cuda, fp32 storage: let cuBLAS use TF32
	                             * tensor cores (faster, ~1e-3 relative) */
};

/* Fill *p with the defaults: fp32, no pool, SIMD auto, default stream,
 * current device, 64 MiB workspace, no TF32. */
ZN_API void zn_kernels_params_default(struct zn_kernels_params *p);

/* Device bytes a cuda context made with *p takes for its own workspaces
 * (attention and reductions, cuBLASLt's), outside what the caller
 * allocates: what a memory plan must leave free beside the model. */
ZN_API uint64_t zn_kernels_cuda_workspace_bytes(const struct zn_kernels_params *p);

/* The shape a cpu context's scratch depends on (elements). */
struct zn_kernels_cpu_shape {
	uint64_t rows;    /* B T: the rows of an activation */
	uint64_t T;       /* the sequence */
	uint64_t width;   /* the widest row an op takes (the model's channels,
	                   * its MLP's, its qkv's) */
	uint64_t group;   /* attention: a key/value head with its query heads,
	                   * (NH / NKV + 2) HS */
	uint64_t matrix;  /* the largest weight an op takes (a tensor, or a tile
	                   * of one) */
	uint64_t Vp;      /* the padded vocabulary (a row of logits) */
};

/* Host bytes a cpu context made with *p takes at most for its own scratch
 * (outside the caller's tensors) running a model of shape *s: attention's
 * per-worker blocks, and with 16-bit storage the widening buffer and
 * per-worker rows.  `workers`: the pool's size (1 without one). */
ZN_API uint64_t zn_kernels_cpu_workspace_bytes(const struct zn_kernels_params *p,
					       unsigned workers,
					       const struct zn_kernels_cpu_shape *s);

/* A backend's execution context: the thread pool and scratch memory (cpu),
 * or the stream, cuBLAS handles and workspace (cuda). */
struct zn_kctx;

/* The op table.  Pointer arguments marked "or NULL" may be NULL; every
 * other pointer is required.  See the rules at the top of this file. */
struct zn_kernels {
	unsigned version;    /* ZN_KERNELS_VERSION */
	const char *name;    /* "cpu", "cuda" */
	bool device_memory;  /* tensors are CUDA device memory */
	unsigned dtypes;     /* storage dtypes it offers: bit (1u << dtype) */

	/* A context, or NULL with the last error set (an unsupported dtype,
	 * no CUDA device, out of memory). */
	struct zn_kctx *(*ctx_create)(const struct zn_kernels_params *p);
	/* Free a context (NULL allowed); cuda: waits for its stream first. */
	void (*ctx_destroy)(struct zn_kctx *ctx);

	/* out[b,t,:] = wte[tokens[b,t],:] + wpe[t,:].
	 * out (B,T,C), tokens (B,T) in [0, V), wte (V,C), wpe (maxT,C) or NULL,
	 * T <= maxT.
	 * The cpu backend checks the tokens (-EINVAL naming the first bad one);
	 * the cuda one cannot without a synchronization and writes NaN rows.
	 * (version 3) wpe may be NULL: no position term (Llama's embedding). */
	int (*encoder_forward)(struct zn_kctx *ctx, void *out, const int32_t *tokens,
			       const void *wte, const void *wpe, int B, int T, int C, int V);
	/* dwte[tokens[b,t],:] += dout[b,t,:]; dwpe[t,:] += dout[b,t,:].
	 * dwte (V,C) or NULL, dwpe (maxT,C) or NULL, dout (B,T,C). */
	int (*encoder_backward)(struct zn_kctx *ctx, void *dwte, void *dwpe, const void *dout,
				const int32_t *tokens, int B, int T, int C, int V);

	/* out = (inp - mean) * rstd * weight + bias over each row of C, with
	 * rstd = 1 / sqrt(var + 1e-5) (biased variance), as torch.nn.LayerNorm.
	 * out, inp (BT,C); mean, rstd (BT) fp32 or NULL (inference);
	 * weight, bias (C). */
	int (*layernorm_forward)(struct zn_kctx *ctx, void *out, float *mean, float *rstd,
				 const void *inp, const void *weight, const void *bias, int BT, int C);
	/* dinp += d/dinp, dweight += d/dweight, dbias += d/dbias of
	 * sum(out * dout), from the mean and rstd saved by the forward.
	 * dinp (BT,C) or NULL, dweight (C) or NULL, dbias (C) or NULL. */
	int (*layernorm_backward)(struct zn_kctx *ctx, void *dinp, void *dweight, void *dbias,
				  const void *dout, const void *inp, const void *weight,
				  const float *mean, const float *rstd, int BT, int C);

	/* out = inp @ weight^T + bias.
	 * out (BT,OC), inp (BT,C), weight (OC,C), bias (OC) or NULL. */
	int (*matmul_forward)(struct zn_kctx *ctx, void *out, const void *inp, const void *weight,
			      const void *bias, int BT, int C, int OC);
	/* dinp += dout @ weight; dweight += dout^T @ inp; dbias += column sums
	 * of dout.  dinp (BT,C) or NULL, dweight (OC,C) or NULL, dbias (OC) or
	 * NULL, dout (BT,OC), inp (BT,C) (may be NULL when dweight is),
	 * weight (OC,C) (may be NULL when dinp is). */
	int (*matmul_backward)(struct zn_kctx *ctx, void *dinp, void *dweight, void *dbias,
			       const void *dout, const void *inp, const void *weight, int BT, int C,
			       int OC);

	/* Causal self-attention, multi-head or grouped-query: for each
	 * sequence b, query head h with key/value head g = h / (NH / NKV), and
	 * query t,
	 *   out[b,t,h] = softmax_{t2 <= t}(q_t,h . k_t2,g / sqrt(HS)) @ v_g.
	 * out (B,T,NH*HS), lse (B,NH,T) fp32 (saved for the backward),
	 * qkv (B,T,(NH+2*NKV)*HS) in the layout above.  (version 3: NKV and HS
	 * replace C; GPT-2 passes NKV = NH, HS = C / NH.) */
	int (*attention_forward)(struct zn_kctx *ctx, void *out, float *lse, const void *qkv,
				 int B, int T, int NH, int NKV, int HS);
	/* dqkv += the gradient of sum(out * dout) with respect to qkv.
	 * dqkv (B,T,(NH+2*NKV)*HS), dout (B,T,NH*HS), qkv as given to the
	 * forward, lse (B,NH,T) from that forward.  The NH / NKV query heads
	 * of a group add into their shared key/value gradient in head order. */
	int (*attention_backward)(struct zn_kctx *ctx, void *dqkv, const void *dout,
				  const void *qkv, const float *lse, int B, int T, int NH, int NKV,
				  int HS);

	/* GELU, tanh approximation (GPT-2's):
	 * out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).  out, inp (N). */
	int (*gelu_forward)(struct zn_kctx *ctx, void *out, const void *inp, size_t N);
	/* dinp += gelu'(inp) * dout.  dinp, dout, inp (N). */
	int (*gelu_backward)(struct zn_kctx *ctx, void *dinp, const void *dout, const void *inp,
			     size_t N);

	/* out = inp1 + inp2.  (N) each. */
	int (*residual_forward)(struct zn_kctx *ctx, void *out, const void *inp1, const void *inp2,
				size_t N);
	/* dinp1 += dout; dinp2 += dout (either may be NULL).  (N) each. */
	int (*residual_backward)(struct zn_kctx *ctx, void *dinp1, void *dinp2, const void *dout,
				 size_t N);

	/* Softmax over the first V of each row of logits, cross-entropy
	 * against targets, and (when dlogits is not NULL) its gradient, fused:
	 *   losses[i]     = w_i * (logsumexp(logits[i, 0:V]) - logits[i, targets[i]])
	 *   dlogits[i, j] = grad_scale * w_i * (softmax(logits[i])_j - [j == targets[i]])
	 *                   for j < V, and 0 for V <= j < Vp,
	 * where w_i = weights[i] (1 when weights is NULL), and a row with
	 * targets[i] < 0 is ignored (w_i = 0: loss 0, gradient 0).
	 * grad_scale is d(total loss)/d(losses[i]): 1 / (number of counted
	 * tokens) for a mean, times the loss scale in fp16 training.
	 * losses (BT) fp32, written; dlogits (BT,Vp) or NULL, WRITTEN (may equal
	 * logits); logits (BT,Vp); targets (BT) int32 < V (cpu: -EINVAL
	 * otherwise; cuda: a NaN loss); weights (BT) fp32 or NULL. */
	int (*softmax_crossentropy)(struct zn_kctx *ctx, float *losses, void *dlogits,
				    const void *logits, const int32_t *targets, const float *weights,
				    float grad_scale, int BT, int V, int Vp);

	/* dst = src converted, n elements, any pair of dtypes (the same dtype
	 * copies).  Rounding to nearest even; NaN stays NaN (bf16: 0x7fc0),
	 * overflow becomes Inf.  dst and src must not overlap unless equal
	 * (in place, same element size). */
	int (*cast)(struct zn_kctx *ctx, void *dst, enum zn_dtype dst_dtype, const void *src,
		    enum zn_dtype src_dtype, size_t n);
	/* x *= s in place, n elements of dtype, computed in fp32 and rounded.
	 * A NaN stays the NaN it was (fp32, fp16; bf16: 0x7fc0, as cast). */
	int (*scale)(struct zn_kctx *ctx, void *x, enum zn_dtype dtype, float s, size_t n);
	/* *flag = 1 when some element of x is Inf or NaN; *flag is left alone
	 * otherwise, so one flag can collect several tensors.  flag: int32_t
	 * in the backend's memory. */
	int (*nonfinite)(struct zn_kctx *ctx, int32_t *flag, const void *x, enum zn_dtype dtype,
			 size_t n);
	/* *acc += sum of x[i]^2 over n elements, accumulated in double (Inf or
	 * NaN when x holds one).  acc: a double in the backend's memory. */
	int (*sumsq)(struct zn_kctx *ctx, double *acc, const void *x, enum zn_dtype dtype,
		     size_t n);

	/* (version 2) One Adam/AdamW step on the backend's memory: the
	 * optimizer of `offload_optimizer: none`, where master weights and
	 * moments stay on the device.  zn_adam_step's semantics (DeepSpeedCPUAdam)
	 * and its IEEE operations in its order, without contraction, so both
	 * give the same bits.  param, m, v (n) fp32, updated in place; grad (n)
	 * fp32, multiplied by grad_scale (1/loss_scale x clip coefficient);
	 * step counts from 1. */
	int (*adam)(struct zn_kctx *ctx, const struct zn_adam_hparams *hp, uint64_t step,
		    float grad_scale, float *param, const float *grad, float *m, float *v,
		    size_t n);

	/* ---- (version 3) the Llama family's ops ---- */

	/* RMSNorm (Llama's LlamaRMSNorm, Qwen2's): over each row of C,
	 *   rstd = 1 / sqrt(mean(inp^2) + eps),  out = (inp * rstd) * weight.
	 * out, inp (BT,C); rstd (BT) fp32 or NULL (inference); weight (C);
	 * eps > 0 (config.json's rms_norm_eps). */
	int (*rmsnorm_forward)(struct zn_kctx *ctx, void *out, float *rstd, const void *inp,
			       const void *weight, float eps, int BT, int C);
	/* dinp += d/dinp, dweight += d/dweight of sum(out * dout), from the
	 * rstd saved by the forward.  dinp (BT,C) or NULL, dweight (C) or NULL,
	 * dout, inp (BT,C), weight (C). */
	int (*rmsnorm_backward)(struct zn_kctx *ctx, void *dinp, void *dweight, const void *dout,
				const void *inp, const void *weight, const float *rstd, int BT,
				int C);

	/* Rotary position embedding, Hugging Face's rotate_half convention
	 * (GPT-NeoX's, Llama's in transformers): within each head, element i
	 * pairs with i + HS/2 (not 2i with 2i+1), and at position t (0 .. T-1
	 * in every sequence), for i < HS/2,
	 *   a = fp32(t * inv_freq[i]),  c = cos(a),  s = sin(a)
	 *   out[i]        = x[i] c - x[i + HS/2] s
	 *   out[i + HS/2] = x[i + HS/2] c + x[i] s
	 * (the angle rounded to fp32 as transformers rounds it; cos and sin
	 * of it to nearest fp32).  Rows may be strided so that the heads can
	 * be read from or written into the packed qkv: token (b, t)'s NH heads
	 * are the NH*HS elements from row (b*T + t) * ld of their buffer.
	 * inv_freq NULL: no rotation, a strided copy (how v joins qkv).
	 * out, inp: rows of ldo, ldi >= NH*HS elements; out may equal inp
	 * when ldo == ldi (in place); HS even, at most ZN_ROPE_MAX_HS;
	 * inv_freq (HS/2) host fp32 or NULL. */
	int (*rope_forward)(struct zn_kctx *ctx, void *out, int ldo, const void *inp, int ldi,
			    const float *inv_freq, int B, int T, int NH, int HS);
	/* dinp += the rotation's transpose applied to dout (a plain add when
	 * inv_freq is NULL): the gradient of sum(out * dout).  dinp rows of
	 * ldi, dout rows of ldo, as in the forward; dinp must not overlap dout. */
	int (*rope_backward)(struct zn_kctx *ctx, void *dinp, int ldi, const void *dout, int ldo,
			     const float *inv_freq, int B, int T, int NH, int HS);

	/* SwiGLU (Llama's MLP activation): out = silu(gate) * up, with
	 * silu(x) = x / (1 + e^-x).  out, gate, up (N); out may equal gate or up. */
	int (*swiglu_forward)(struct zn_kctx *ctx, void *out, const void *gate, const void *up,
			      size_t N);
	/* dgate += dout * up * silu'(gate); dup += dout * silu(gate) (either
	 * may be NULL).  (N) each. */
	int (*swiglu_backward)(struct zn_kctx *ctx, void *dgate, void *dup, const void *dout,
			       const void *gate, const void *up, size_t N);

	/* (version 4) dst += src, n elements of any pair of dtypes: src and
	 * dst widened to fp32, added in fp32, the sum rounded to dst's dtype
	 * (as cast rounds).  dst and src must not overlap.  The trainer folds
	 * a layer's 16-bit gradients into its fp32 accumulators with it. */
	int (*accumulate)(struct zn_kctx *ctx, void *dst, enum zn_dtype dst_dtype,
			  const void *src, enum zn_dtype src_dtype, size_t n);

	/* ---- (version 5) a vocabulary's tensors in tiles of rows ---- */

	/* matmul_forward / matmul_backward without a bias, out and dout
	 * (BT,OC) being columns of rows `ldo` >= OC elements apart: a tile of
	 * OC rows of the classifier computes its columns of the logits. */
	int (*matmul_forward_ld)(struct zn_kctx *ctx, void *out, int ldo, const void *inp,
				 const void *weight, int BT, int C, int OC);
	int (*matmul_backward_ld)(struct zn_kctx *ctx, void *dinp, void *dweight,
				  const void *dout, int ldo, const void *inp, const void *weight,
				  int BT, int C, int OC);
	/* The embedding's rows [row0, row0 + rows) held in w (rows,C):
	 * out[i,:] = w[tokens[i] - row0,:] for the tokens in the tile (other
	 * rows of out untouched); backward dw[tokens[i] - row0,:] += dout[i,:]
	 * for them, added in position order as encoder_backward adds, so
	 * that the tiles together give encoder_forward's and
	 * encoder_backward's bits.  out, dout (BT,C), tokens (BT). */
	int (*embedding_rows_forward)(struct zn_kctx *ctx, void *out, const int32_t *tokens,
				      const void *w, int row0, int rows, int BT, int C);
	int (*embedding_rows_backward)(struct zn_kctx *ctx, void *dw, const void *dout,
				       const int32_t *tokens, int row0, int rows, int BT, int C);
};

/* The largest head size rope_forward/backward take (the inverse
 * frequencies travel with the call: HS/2 floats). */
#define ZN_ROPE_MAX_HS 512

/* The storage dtype of a context (zn_kernels_params.dtype when it was made). */
ZN_API enum zn_dtype zn_kernels_ctx_dtype(const struct zn_kctx *ctx);

/* The op table named `name` ("cpu" or "cuda"), or NULL with the last error
 * set when it is unknown or not in this build. */
ZN_API const struct zn_kernels *zn_kernels_get(const char *name);

#ifdef __cplusplus
}
#endif
#endif
