/* The nccl comm backend's reduction in rank order (nccl_kernels.h).
 *
 * One thread per element (a grid-stride loop), walking the ranks' rows in
 * order: rows is (size, m), so the threads of a warp read consecutive
 * elements of one row at a time (coalesced).  Each step is the one
 * zn_comm_reduce_rows (reduce.c) takes on the host, with the same
 * conversions, so that a reduction gives the same bits on either side:
 *
 *   fp32       acc = acc + x, fp32 round to nearest even (an add alone:
 *              nothing for nvcc to contract into an FMA; subnormals are
 *              kept, as nvcc does without -ftz/--use_fast_math);
 *   bf16/fp16  widened exactly to fp32, summed in fp32, rounded once at
 *              the end (common/zn_half.h: nearest even, NaN rules as on the host);
 *   int32/u8   unsigned arithmetic, wrapping;
 *   MAX        x > acc ? x : acc, and the first NaN in rank order wins.
 *
 * Compiled by nvcc into an object that libzn_engine archives (the way
 * kernels.cu is, see kernels/meson.build): no device linking (-rdc). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <cuda_runtime.h>

#define ZN_HALF_FN static __host__ __device__ __forceinline__
#include "zn_half.h"

#include "comm/nccl_kernels.h"

namespace {

/* How each dtype is loaded into its accumulator and stored back. */
struct f32_t {
	typedef float elem;
	typedef float acc;
	static __host__ __device__ __forceinline__ acc load(elem v) { return v; }
	static __host__ __device__ __forceinline__ elem store(acc a) { return a; }
};
struct bf16_t {
	typedef uint16_t elem;
	typedef float acc;
	static __host__ __device__ __forceinline__ acc load(elem v) { return zn_bf16_to_f32(v); }
	static __host__ __device__ __forceinline__ elem store(acc a) { return zn_f32_to_bf16(a); }
};
struct f16_t {
	typedef uint16_t elem;
	typedef float acc;
	static __host__ __device__ __forceinline__ acc load(elem v) { return zn_f16_to_f32(v); }
	static __host__ __device__ __forceinline__ elem store(acc a) { return zn_f32_to_f16(a); }
};
struct i32_t {
	typedef int32_t elem;
	typedef int32_t acc;
	static __host__ __device__ __forceinline__ acc load(elem v) { return v; }
	static __host__ __device__ __forceinline__ elem store(acc a) { return a; }
};
struct u8_t {
	typedef uint8_t elem;
	typedef uint8_t acc;
	static __host__ __device__ __forceinline__ acc load(elem v) { return v; }
	static __host__ __device__ __forceinline__ elem store(acc a) { return a; }
};

__host__ __device__ __forceinline__ float add(float a, float x)
{
#ifdef __CUDA_ARCH__
	return __fadd_rn(a, x); /* never contracted, whatever the flags */
#else
	return a + x;
#endif
}
__host__ __device__ __forceinline__ int32_t add(int32_t a, int32_t x)
{
	return (int32_t)((uint32_t)a + (uint32_t)x); /* wraps, no UB */
}
__host__ __device__ __forceinline__ uint8_t add(uint8_t a, uint8_t x)
{
	return (uint8_t)(a + x);
}

__host__ __device__ __forceinline__ float max_of(float a, float x)
{
	if (isnan(a) || isnan(x))
		return isnan(a) ? a : x;
	return x > a ? x : a;
}
__host__ __device__ __forceinline__ int32_t max_of(int32_t a, int32_t x)
{
	return x > a ? x : a;
}
__host__ __device__ __forceinline__ uint8_t max_of(uint8_t a, uint8_t x)
{
	return x > a ? x : a;
}

/* Element i: the whole specification, on the host too (where it can be
 * checked without a GPU). */
template <class D, bool MAX>
__host__ __device__ __forceinline__ void reduce_one(typename D::elem *__restrict__ out,
						    const typename D::elem *__restrict__ rows,
						    int size, size_t m, size_t i)
{
	typename D::acc acc = D::load(rows[i]);
	for (int p = 1; p < size; p++) {
		typename D::acc x = D::load(rows[(size_t)p * m + i]);
		acc = MAX ? max_of(acc, x) : add(acc, x);
	}
	out[i] = D::store(acc);
}

template <class D, bool MAX>
__global__ void reduce_kernel(typename D::elem *__restrict__ out,
			      const typename D::elem *__restrict__ rows, int size, size_t m)
{
	const size_t stride = (size_t)gridDim.x * blockDim.x;
	for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < m; i += stride)
		reduce_one<D, MAX>(out, rows, size, m, i);
}

template <class D>
cudaError_t launch(enum zn_comm_redop op, void *out, const void *rows, int size, size_t m,
		   cudaStream_t stream)
{
	/* 256 threads a block; at most 2^16 blocks, each thread then takes
	 * several elements (a grid of 16 M threads fills any current GPU). */
	const unsigned threads = 256;
	const size_t want = (m + threads - 1) / threads;
	const unsigned blocks = want < 65536 ? (unsigned)want : 65536u;
	typedef typename D::elem E;
	if (op == ZN_COMM_MAX)
		reduce_kernel<D, true><<<blocks, threads, 0, stream>>>((E *)out, (const E *)rows,
									size, m);
	else
		reduce_kernel<D, false><<<blocks, threads, 0, stream>>>((E *)out, (const E *)rows,
									 size, m);
	return cudaGetLastError();
}

} // namespace

extern "C" cudaError_t zn_comm_nccl_reduce(enum zn_dtype dt, enum zn_comm_redop op,
					   void *out, const void *rows, int size, size_t m,
					   cudaStream_t stream)
{
	if (size < 1 || (op != ZN_COMM_SUM && op != ZN_COMM_MAX))
		return cudaErrorInvalidValue;
	if (m == 0)
		return cudaSuccess;
	switch (dt) {
	case ZN_DTYPE_F32: return launch<f32_t>(op, out, rows, size, m, stream);
	case ZN_DTYPE_BF16: return launch<bf16_t>(op, out, rows, size, m, stream);
	case ZN_DTYPE_F16: return launch<f16_t>(op, out, rows, size, m, stream);
	case ZN_DTYPE_I32: return launch<i32_t>(op, out, rows, size, m, stream);
	case ZN_DTYPE_U8: return launch<u8_t>(op, out, rows, size, m, stream);
	default: return cudaErrorInvalidValue;
	}
}
