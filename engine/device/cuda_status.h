/* CUDA runtime statuses as zinc errors, for the files that call the runtime
 * (device_cuda.c, comm_nccl.c).  Not installed; include after
 * <cuda_runtime_api.h>. */
#ifndef ZN_CUDA_STATUS_H
#define ZN_CUDA_STATUS_H

#include <cuda_runtime_api.h>

/* e as -errno (-ENOMEM, -EINVAL, -ENODEV, -EBUSY for not ready, -EEXIST for
 * memory already registered, else -EIO) with the last error naming `who`
 * (a prefix such as "comm nccl: ", or ""), the call, its file and line and
 * CUDA's own words. */
int zn_cuda_status(cudaError_t e, const char *who, const char *call, const char *file,
		   int line);

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
