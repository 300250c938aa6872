/* The cuda kernels' entry points (defined in kernels.cu with C linkage),
 * gathered into the op table by cuda_ops.c: designated initializers are C,
 * not the C++ nvcc compiles by default.  Arguments as in zinc/kernels.h. */
#ifndef ZN_KERNELS_CUDA_OPS_H
#define ZN_KERNELS_CUDA_OPS_H

#include "kernels_internal.h"

#ifdef __cplusplus
extern "C" {
#endif

struct zn_kctx *zn_cuda_ctx_create(const struct zn_kernels_params *p);
void zn_cuda_ctx_destroy(struct zn_kctx *ctx);
int zn_cuda_encoder_forward(struct zn_kctx *ctx, void *out, const int32_t *tokens,
			    const void *wte, const void *wpe, int B, int T, int C, int V);
int zn_cuda_encoder_backward(struct zn_kctx *ctx, void *dwte, void *dwpe, const void *dout,
			     const int32_t *tokens, int B, int T, int C, int V);
int zn_cuda_layernorm_forward(struct zn_kctx *ctx, void *out, float *mean, float *rstd,
			      const void *inp, const void *weight, const void *bias, int BT, int C);
int zn_cuda_layernorm_backward(struct zn_kctx *ctx, void *dinp, void *dweight, void *dbias,
			       const void *dout, const void *inp, const void *weight,
			       const float *mean, const float *rstd, int BT, int C);
int zn_cuda_matmul_forward(struct zn_kctx *ctx, void *out, const void *inp, const void *weight,
			   const void *bias, int BT, int C, int OC);
int zn_cuda_matmul_backward(struct zn_kctx *ctx, void *dinp, void *dweight, void *dbias,
			    const void *dout, const void *inp, const void *weight, int BT, int C,
			    int OC);
int zn_cuda_matmul_forward_ld(struct zn_kctx *ctx, void *out, int ldo, const void *inp,
			      const void *weight, int BT, int C, int OC);
int zn_cuda_matmul_backward_ld(struct zn_kctx *ctx, void *dinp, void *dweight, const void *dout,
			       int ldo, const void *inp, const void *weight, int BT, int C,
			       int OC);
int zn_cuda_embedding_rows_forward(struct zn_kctx *ctx, void *out, const int32_t *tokens,
				   const void *w, int row0, int rows, int BT, int C);
int zn_cuda_embedding_rows_backward(struct zn_kctx *ctx, void *dw, const void *dout,
				    const int32_t *tokens, int row0, int rows, int BT, int C);
int zn_cuda_attention_forward(struct zn_kctx *ctx, void *out, float *lse, const void *qkv, int B,
			      int T, int NH, int NKV, int HS);
int zn_cuda_attention_backward(struct zn_kctx *ctx, void *dqkv, const void *dout,
			       const void *qkv, const float *lse, int B, int T, int NH, int NKV,
			       int HS);
int zn_cuda_gelu_forward(struct zn_kctx *ctx, void *out, const void *inp, size_t N);
int zn_cuda_gelu_backward(struct zn_kctx *ctx, void *dinp, const void *dout, const void *inp,
			  size_t N);
int zn_cuda_residual_forward(struct zn_kctx *ctx, void *out, const void *inp1,
			     const void *inp2, size_t N);
int zn_cuda_residual_backward(struct zn_kctx *ctx, void *dinp1, void *dinp2, const void *dout,
			      size_t N);
int zn_cuda_softmax_crossentropy(struct zn_kctx *ctx, float *losses, void *dlogits,
				 const void *logits, const int32_t *targets, const float *weights,
				 float grad_scale, int BT, int V, int Vp);
int zn_cuda_accumulate(struct zn_kctx *ctx, void *dst, enum zn_dtype dst_dtype,
		       const void *src, enum zn_dtype src_dtype, size_t n);
int zn_cuda_cast(struct zn_kctx *ctx, void *dst, enum zn_dtype dst_dtype, const void *src,
		 enum zn_dtype src_dtype, size_t n);
int zn_cuda_scale(struct zn_kctx *ctx, void *x, enum zn_dtype dtype, float s, size_t n);
int zn_cuda_nonfinite(struct zn_kctx *ctx, int32_t *flag, const void *x, enum zn_dtype dtype,
		      size_t n);
int zn_cuda_adam(struct zn_kctx *ctx, const struct zn_adam_hparams *hp, uint64_t step,
		 float grad_scale, float *param, const float *grad, float *m, float *v, size_t n);
int zn_cuda_sumsq(struct zn_kctx *ctx, double *acc, const void *x, enum zn_dtype dtype,
		  size_t n);
int zn_cuda_rmsnorm_forward(struct zn_kctx *ctx, void *out, float *rstd, const void *inp,
			    const void *weight, float eps, int BT, int C);
int zn_cuda_rmsnorm_backward(struct zn_kctx *ctx, void *dinp, void *dweight, const void *dout,
			     const void *inp, const void *weight, const float *rstd, int BT, int C);
int zn_cuda_rope_forward(struct zn_kctx *ctx, void *out, int ldo, const void *inp, int ldi,
			 const float *inv_freq, int B, int T, int NH, int HS);
int zn_cuda_rope_backward(struct zn_kctx *ctx, void *dinp, int ldi, const void *dout, int ldo,
			  const float *inv_freq, int B, int T, int NH, int HS);
int zn_cuda_swiglu_forward(struct zn_kctx *ctx, void *out, const void *gate, const void *up,
			   size_t N);
int zn_cuda_swiglu_backward(struct zn_kctx *ctx, void *dgate, void *dup, const void *dout,
			    const void *gate, const void *up, size_t N);

#ifdef __cplusplus
}
#endif
#endif
