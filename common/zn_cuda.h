/* CUDA runtime statuses as zinc errors: the one mapping of every module
 * that calls the runtime (kernels/cuda/kernels.cu, engine/device/cuda.c,
 * engine/comm/nccl.c).  It lives in common/, the lowest module they all
 * use, so that neither the engine includes a private header of kernels/
 * nor the other way round.  Not installed; built only with the CUDA
 * toolkit (have_cuda).  Included from C and from CUDA C++.
 *
 * cuBLAS and NCCL statuses are converted beside their one user each
 * (kernels.cu's ZN_CUBLAS, nccl.c's ZN_NCCL), in the same form: one macro
 * per library that names the call, its file and line in the last error and
 * returns a negative errno. */
#ifndef ZN_CUDA_H
#define ZN_CUDA_H

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* e as -errno (-ENOMEM, -EINVAL, -ENODEV, -EBUSY for not ready, -EEXIST for
 * memory already registered, else -EIO) with the last error naming `who`
 * (a prefix such as "comm nccl: ", or ""), the call, its file and line and
 * CUDA's own words. */
int zn_cuda_status(cudaError_t e, const char *who, const char *call, const char *file,
		   int line);

#ifdef __cplusplus
}
#endif

/* Evaluate a CUDA runtime call; on failure return its zn error, the prefix
 * being the including file's ZN_CUDA_WHO. */
#define ZN_CUDA(call)                                                                    \
	do {                                                                             \
		cudaError_t zn_cu_e_ = (call);                                           \
		if (zn_cu_e_ != cudaSuccess)                                             \
			return zn_cuda_status(zn_cu_e_, ZN_CUDA_WHO, #call, __FILE__,    \
					      __LINE__);                                 \
	} while (0)

#endif
