/* The "cuda" op table (the kernels are in kernels.cu). */
#include "zn_common.h"

#include "cuda_ops.h"

const struct zn_kernels zn_kernels_cuda = {
	.version = ZN_KERNELS_VERSION,
	.name = "cuda",
	.device_memory = true,
	.dtypes = (1u << ZN_DTYPE_F32) | (1u << ZN_DTYPE_F16) | (1u << ZN_DTYPE_BF16),
	.ctx_create = zn_cuda_ctx_create,
	.ctx_destroy = zn_cuda_ctx_destroy,
	.encoder_forward = zn_cuda_encoder_forward,
	.encoder_backward = zn_cuda_encoder_backward,
	.layernorm_forward = zn_cuda_layernorm_forward,
	.layernorm_backward = zn_cuda_layernorm_backward,
	.matmul_forward = zn_cuda_matmul_forward,
	.matmul_backward = zn_cuda_matmul_backward,
	.attention_forward = zn_cuda_attention_forward,
	.attention_backward = zn_cuda_attention_backward,
	.gelu_forward = zn_cuda_gelu_forward,
	.gelu_backward = zn_cuda_gelu_backward,
	.residual_forward = zn_cuda_residual_forward,
	.residual_backward = zn_cuda_residual_backward,
	.softmax_crossentropy = zn_cuda_softmax_crossentropy,
	.cast = zn_cuda_cast,
	.scale = zn_cuda_scale,
	.nonfinite = zn_cuda_nonfinite,
	.sumsq = zn_cuda_sumsq,
	.adam = zn_cuda_adam,
	.rmsnorm_forward = zn_cuda_rmsnorm_forward,
	.rmsnorm_backward = zn_cuda_rmsnorm_backward,
	.rope_forward = zn_cuda_rope_forward,
	.rope_backward = zn_cuda_rope_backward,
	.swiglu_forward = zn_cuda_swiglu_forward,
	.swiglu_backward = zn_cuda_swiglu_backward,
	.accumulate = zn_cuda_accumulate,
};
