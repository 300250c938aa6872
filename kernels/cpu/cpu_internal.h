/* Private to kernels/cpu: the context and the work-splitting helpers that
 * cpu.c (fp32 storage) and cpu16.c (fp16/bf16 storage) share, and the fp32
 * bodies of the ops cpu16.c runs on widened copies of its operands.  The
 * bodies take fp32 pointers and checked arguments. */
#ifndef ZN_KERNELS_CPU_INTERNAL_H
#define ZN_KERNELS_CPU_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "zinc/kernels.h"
#include "kernels_internal.h"
#include "vec.h"

/* Work (elements touched, or multiply-adds / 64 for products) below which
 * an op stays in the calling thread. */
#define ZN_CPU_INLINE_WORK ((size_t)1 << 15)
/* Query rows per attention block (cpu.c). */
#define ZN_CPU_ATT_TB 64
/* 16-bit storage: the default floats in each of the (at most three) fp32
 * copies of operands an op widens at once (cpu16.c), 3 x 16 MiB in all;
 * zn_kernels_params.workspace_bytes sets another. */
#define ZN_CPU16_BLOCK ((size_t)4 << 20)
#define ZN_CPU16_BLOCKS 3

struct cpu_ctx {
	struct zn_kctx base;
	struct zn_threadpool *pool;
	unsigned workers;          /* >= 1 */
	const struct zn_kvec *v;   /* the vector path's loops */
	float *scratch;            /* workers x scratch_per floats */
	size_t scratch_per;        /* floats per worker, a multiple of 16 */
	size_t block;              /* 16-bit storage: floats an operand's block
	                            * widens into (cpu16.c) */
	float *wide;               /* the widening buffer, wide_per floats */
	size_t wide_per;
	/* rope: cos (rope_T, rope_half) then sin, for the inverse
	 * frequencies rope_inv; rope_T = 0 until the first rope call */
	float *rope_tab;
	int rope_T, rope_half;
	float rope_inv[ZN_ROPE_MAX_HS / 2];
};

static inline struct cpu_ctx *zn_cpu(struct zn_kctx *ctx)
{
	return (struct cpu_ctx *)ctx;
}

/* Grow the per-worker scratch to `floats` floats a worker. */
int zn_cpu_scratch(struct cpu_ctx *c, size_t floats);

typedef void (*zn_cpu_range_fn)(void *arg, size_t begin, size_t end, unsigned worker);
/* Run fn over [0, n) in chunks of `chunk` items; `work` is the whole op's
 * work, to decide whether the pool is worth waking. */
void zn_cpu_run_chunks(struct cpu_ctx *c, size_t n, size_t chunk, size_t work,
		       zn_cpu_range_fn fn, void *arg);
/* A chunk giving ~4 tasks per worker, at least `min` items, rounded to
 * `align` items. */
size_t zn_cpu_chunk_of(const struct cpu_ctx *c, size_t n, size_t min, size_t align);
/* Channel slices for the column reductions: ~2 per worker, multiples of
 * 16 floats. */
size_t zn_cpu_slice_of(const struct cpu_ctx *c, size_t C);

/* fp32 bodies (cpu.c). */
void zn_cpu32_layernorm_forward(struct cpu_ctx *c, float *out, float *mean, float *rstd,
				const float *inp, const float *weight, const float *bias,
				size_t BT, size_t C);
void zn_cpu32_layernorm_backward(struct cpu_ctx *c, float *dinp, float *dweight, float *dbias,
				 const float *dout, const float *inp, const float *weight,
				 const float *mean, const float *rstd, size_t BT, size_t C);
void zn_cpu32_rmsnorm_forward(struct cpu_ctx *c, float *out, float *rstd, const float *inp,
			      const float *weight, float eps, size_t BT, size_t C);
void zn_cpu32_rmsnorm_backward(struct cpu_ctx *c, float *dinp, float *dweight,
			       const float *dout, const float *inp, const float *weight,
			       const float *rstd, size_t BT, size_t C);
/* out (BT rows, ldo apart) = inp @ weight^T + bias. */
void zn_cpu32_matmul_forward(struct cpu_ctx *c, float *out, size_t ldo, const float *inp,
			     const float *weight, const float *bias, size_t BT, size_t C,
			     size_t OC);
/* dout's rows ldo apart. */
void zn_cpu32_matmul_backward(struct cpu_ctx *c, float *dinp, float *dweight, float *dbias,
			      const float *dout, size_t ldo, const float *inp,
			      const float *weight, size_t BT, size_t C, size_t OC);
int zn_cpu32_attention_forward(struct cpu_ctx *c, float *out, float *lse, const float *qkv,
			       int B, int T, int NH, int NKV, int HS);
int zn_cpu32_attention_backward(struct cpu_ctx *c, float *dqkv, const float *dout,
				const float *qkv, const float *lse, int B, int T, int NH,
				int NKV, int HS);
/* `rows` rows of NH heads, row r at position (pos0 + r) % T. */
int zn_cpu32_rope(struct cpu_ctx *c, bool backward, float *out, size_t ldo, const float *inp,
		  size_t ldi, const float *inv_freq, size_t rows, size_t pos0, int T, int NH,
		  int HS);

/* 16-bit storage (cpu16.c): the same ops on fp16/bf16 tensors (the
 * context's dtype), arguments already checked.  Each widens its operands
 * to fp32 in blocks, runs the fp32 body and rounds what it writes once, so
 * its result is the fp32 op's on the widened inputs, rounded -- except
 * where a sum runs over blocks (matmul_backward's dinp over output
 * channels, its dweight over rows), which then adds the blocks' partial
 * sums in a fixed order. */
void zn_cpu16_free(struct cpu_ctx *c);
int zn_cpu16_encoder_forward(struct cpu_ctx *c, void *out, const int32_t *tokens,
			     const void *wte, const void *wpe, int B, int T, int C);
int zn_cpu16_encoder_backward(struct cpu_ctx *c, void *dwte, void *dwpe, const void *dout,
			      const int32_t *tokens, int B, int T, int C);
int zn_cpu16_embedding_rows_forward(struct cpu_ctx *c, void *out, const int32_t *tokens,
				    const void *w, int row0, int rows, int BT, int C);
int zn_cpu16_embedding_rows_backward(struct cpu_ctx *c, void *dw, const void *dout,
				     const int32_t *tokens, int row0, int rows, int BT, int C);
int zn_cpu16_layernorm_forward(struct cpu_ctx *c, void *out, float *mean, float *rstd,
			       const void *inp, const void *weight, const void *bias, int BT,
			       int C);
int zn_cpu16_layernorm_backward(struct cpu_ctx *c, void *dinp, void *dweight, void *dbias,
				const void *dout, const void *inp, const void *weight,
				const float *mean, const float *rstd, int BT, int C);
int zn_cpu16_rmsnorm_forward(struct cpu_ctx *c, void *out, float *rstd, const void *inp,
			     const void *weight, float eps, int BT, int C);
int zn_cpu16_rmsnorm_backward(struct cpu_ctx *c, void *dinp, void *dweight, const void *dout,
			      const void *inp, const void *weight, const float *rstd, int BT,
			      int C);
int zn_cpu16_matmul_forward(struct cpu_ctx *c, void *out, int ldo, const void *inp,
			    const void *weight, const void *bias, int BT, int C, int OC);
int zn_cpu16_matmul_backward(struct cpu_ctx *c, void *dinp, void *dweight, void *dbias,
			     const void *dout, int ldo, const void *inp, const void *weight,
			     int BT, int C, int OC);
int zn_cpu16_attention_forward(struct cpu_ctx *c, void *out, float *lse, const void *qkv,
			       int B, int T, int NH, int NKV, int HS);
int zn_cpu16_attention_backward(struct cpu_ctx *c, void *dqkv, const void *dout,
				const void *qkv, const float *lse, int B, int T, int NH, int NKV,
				int HS);
int zn_cpu16_rope(struct cpu_ctx *c, bool backward, void *out, int ldo, const void *inp,
		  int ldi, const float *inv_freq, int B, int T, int NH, int HS);
/* The elementwise ops (cpu.c, both storages). */
enum zn_cpu_ew { ZN_EW_GELU_FWD, ZN_EW_GELU_BWD, ZN_EW_ADD, ZN_EW_ACC2, ZN_EW_SWIGLU_FWD,
		 ZN_EW_SWIGLU_BWD };
struct zn_cpu_ew_args {
	const struct zn_kvec *v;
	enum zn_cpu_ew kind;
	enum zn_dtype dt;          /* storage of o1, o2, a, b, c */
	void *o1, *o2;
	const void *a, *b, *c;
};
int zn_cpu16_softmax_crossentropy(struct cpu_ctx *c, float *losses, void *dlogits,
				  const void *logits, const int32_t *targets, const float *weights,
				  float grad_scale, int BT, int V, int Vp);

#endif
