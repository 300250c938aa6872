/* Private to kernels/: what both backends share.  Not installed.
 * Included from C and from CUDA C++ (the .cu files). */
#ifndef ZN_KERNELS_INTERNAL_H
#define ZN_KERNELS_INTERNAL_H

#include "zinc/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The head of every backend's context; a backend's own struct starts with
 * it, so a struct zn_kctx * converts to and from the backend's type. */
struct zn_kctx {
	const struct zn_kernels *ops;
	enum zn_dtype dtype; /* storage of the `void *` tensors */
};

/* The cuda context's device workspaces, allocated with cudaMalloc beside
 * the caller's memory (zn_kernels_cuda_workspace_bytes): attention scores
 * and reductions (zn_kernels_params.workspace_bytes, 0: the default), and
 * cuBLASLt's own (32 MiB is what Hopper wants). */
#define ZN_KCUDA_DEFAULT_WORKSPACE ((size_t)64 << 20)
#define ZN_KCUDA_LT_WORKSPACE ((size_t)32 << 20)

extern const struct zn_kernels zn_kernels_cpu;
#if ZN_HAVE_CUDA
extern const struct zn_kernels zn_kernels_cuda;
#endif

/* Argument checks shared by the backends, so both say the same thing.
 * Each returns 0 or -EINVAL with a message "OP: what is wrong". */
int zn_kcheck_ctx(const char *op, const struct zn_kctx *ctx, const struct zn_kernels *ops);
int zn_kcheck_encoder(const char *op, const void *out, const int32_t *tokens, const void *a,
		      const void *b, int B, int T, int C, int V, bool backward);
int zn_kcheck_layernorm_fwd(const void *out, const void *inp, const void *weight,
			    const void *bias, int BT, int C);
int zn_kcheck_layernorm_bwd(const void *dout, const void *inp, const void *weight,
			    const float *mean, const float *rstd, int BT, int C);
int zn_kcheck_matmul_fwd(const void *out, const void *inp, const void *weight, int BT, int C,
			 int OC);
int zn_kcheck_matmul_bwd(const void *dinp, const void *dweight, const void *dout,
			 const void *inp, const void *weight, int BT, int C, int OC);
/* A leading dimension ldo of rows of OC elements: ldo >= OC. */
int zn_kcheck_ld(const char *op, int ldo, int OC);
/* The embedding_rows ops: x = out (forward) or dout, w = the tile. */
int zn_kcheck_rows(const char *op, const void *x, const int32_t *tokens, const void *w,
		   int row0, int rows, int BT, int C);
int zn_kcheck_attention_fwd(const void *out, const float *lse, const void *qkv, int B, int T,
			    int NH, int NKV, int HS);
int zn_kcheck_attention_bwd(const void *dqkv, const void *dout, const void *qkv,
			    const float *lse, int B, int T, int NH, int NKV, int HS);
int zn_kcheck_rmsnorm_fwd(const void *out, const void *inp, const void *weight, float eps,
			  int BT, int C);
int zn_kcheck_rmsnorm_bwd(const void *dout, const void *inp, const void *weight,
			  const float *rstd, int BT, int C);
/* rope_forward (backward false: out, ldo = the output; inp, ldi = the
 * input) or rope_backward (backward true: out = dinp, inp = dout). */
int zn_kcheck_rope(bool backward, const void *out, int ldo, const void *inp, int ldi, int B,
		   int T, int NH, int HS);
int zn_kcheck_elementwise(const char *op, const void *a, const void *b, const void *c);
int zn_kcheck_xent(const float *losses, const void *logits, const int32_t *targets, int BT,
		   int V, int Vp);
int zn_kcheck_dtype(const char *op, const char *what, enum zn_dtype dtype);
/* cast (in_place true: dst may equal src when the element sizes match) or
 * accumulate (dst and src must not overlap): dtypes, pointers, overlap. */
int zn_kcheck_convert(const char *op, void *dst, enum zn_dtype dst_dtype, const void *src,
		      enum zn_dtype src_dtype, size_t n, bool in_place);
int zn_kcheck_ptr(const char *op, const char *what, const void *p);
/* The storage dtype must be one the backend offers. */
int zn_kcheck_params(const struct zn_kernels *ops, const struct zn_kernels_params *p);

#ifdef __cplusplus
}
#endif
#endif
