/* CUDA runtime statuses as zinc errors (see zn_cuda.h). */
#include "zn_common.h"

#include "zn_cuda.h"

int zn_cuda_status(cudaError_t e, const char *who, const char *call, const char *file, int line)
{
	int err;

	switch (e) {
	case cudaErrorMemoryAllocation:
		err = -ENOMEM;
		break;
	case cudaErrorInvalidValue:
	case cudaErrorInvalidDevice:
	case cudaErrorInvalidResourceHandle:
		err = -EINVAL;
		break;
	case cudaErrorNoDevice:
	case cudaErrorInsufficientDriver:
		err = -ENODEV;
		break;
	case cudaErrorNotReady:
		err = -EBUSY;
		break;
	case cudaErrorHostMemoryAlreadyRegistered:
		err = -EEXIST;
		break;
	default:
		err = -EIO;
		break;
	}
	return zn_error(err, "%s%s failed at %s:%d: %s (%s)", who, call, zn_source_name(file),
			line, cudaGetErrorString(e), cudaGetErrorName(e));
}
