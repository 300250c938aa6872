/* The nccl comm backend's reduction in rank order, on the device
 * (nccl_kernels.cu, compiled by nvcc; called from nccl.c).
 * Not installed. */
#ifndef ZN_COMM_NCCL_KERNELS_H
#define ZN_COMM_NCCL_KERNELS_H

#include <stddef.h>

#include <cuda_runtime_api.h>

#include "zinc/comm.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Enqueue on `stream`: out[i] = rows[0][i] op rows[1][i] op ... op
 * rows[size-1][i] for i < m, added in that order, to the bit what
 * zn_comm_reduce_rows (reduce.c) computes on the host (its
 * specification): fp32 adds in fp32; bf16 and fp16 are widened, summed in
 * fp32 and rounded to nearest even once (common/zn_half.h, the
 * conversions every module uses); int32 and uint8 sums wrap; MAX keeps
 * the larger, and a NaN on any rank wins (the first one, in rank order).
 * rows: (size, m) elements of dt, row p from rank p; out: m elements,
 * not overlapping rows.  Device pointers.
 * Returns the launch's status (cudaSuccess when m == 0: nothing runs);
 * cudaErrorInvalidValue for an unknown dt or op or size < 1. */
cudaError_t zn_comm_nccl_reduce(enum zn_dtype dt, enum zn_comm_redop op, void *out,
				const void *rows, int size, size_t m, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif
