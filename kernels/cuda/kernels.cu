/* The "cuda" kernels: cuBLASLt / cuBLAS for the matrix products, the rest
 * as CUDA kernels, everything enqueued on the context's stream.
 *
 * Storage dtype T is float, __nv_bfloat16 or __half (the context's); arithmetic
 * and every accumulation is fp32 (double for sumsq).  No floating-point
 * atomics: each sum has one owner thread or a fixed reduction tree, so a
 * rerun gives the same bits.
 *
 *   matmul       forward: cuBLASLt with the bias fused as an epilogue
 *                (plain cublasGemmEx + a bias kernel when cuBLASLt has no
 *                algorithm for the shape); backward: two cublasGemmEx with
 *                beta = 1 (they accumulate) and a column-sum for dbias.
 *   attention    per sequence b and group of heads that fits the
 *                workspace: strided-batched GEMMs over heads read q, k, v
 *                straight out of qkv (B,T,(NH+2NKV)HS) (leading dimension
 *                the row, head stride HS; grouped-query: one call per
 *                query head of a group, batched over the groups, see
 *                att_plan), scores S (T,T) fp32 in the workspace, a
 *                softmax kernel writes P (T,T) in T plus the log-sum-exp,
 *                then P @ v lands in out (B,T,NH*HS).  The backward recomputes
 *                S and P from the saved log-sum-exp.  Full T x T products:
 *                the causal upper triangle is computed and masked (a fused
 *                flash kernel is future work).
 *   encoder      dwte: the tokens are sorted (CUB radix sort, stable) so
 *                each distinct token's rows are summed by one block, in
 *                position order.
 *   rope         one thread per rotated pair; cos/sin of the fp32 angle in
 *                double (the cpu table's values), the inverse frequencies
 *                passed by value with the launch.
 *   column sums  (layernorm dweight/dbias, rmsnorm dweight, matmul dbias): partial sums of
 *                row chunks into the workspace, then one thread per column
 *                adds the chunks in order.
 *
 * cuBLAS and cuBLASLt are not linked: they are loaded (dlopen) when the
 * first context is made.  Loaded, they take about 200 MB of resident
 * memory before doing anything, which every process of zinc's -- the cpu
 * backend's training, `zinc plan` -- would otherwise pay.
 */
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cub/cub.cuh>
#include <dlfcn.h>
#include <pthread.h>

#include <math.h>
#include <stdint.h>
#include <string.h>

extern "C" {
#include "zn_common.h"
}
#include "cuda_ops.h"
#include "zn_cuda.h"

#define ZN_HALF_FN static __host__ __device__ inline
#include "zn_half.h"

typedef __nv_bfloat16 bf16;
typedef __half f16;

/* ---- cuBLAS and cuBLASLt, loaded when first needed ------------------------------------ */

/* The functions used (their exported names: cublas_v2.h maps cublasCreate
 * and friends to their _v2 symbols), as pointers of their own types. */
#define ZN_BLAS_FNS(X)                                                                \
	X(cublasCreate_v2) X(cublasDestroy_v2) X(cublasSetStream_v2) X(cublasSetMathMode) \
	X(cublasGetStatusString)
/* ... and the two GEMMs, which C++ overloads (a compute type given as a
 * cudaDataType): the exported ones, by their C types. */
typedef cublasStatus_t (*zn_gemm_ex_t)(cublasHandle_t, cublasOperation_t, cublasOperation_t,
				       int, int, int, const void *, const void *, cudaDataType,
				       int, const void *, cudaDataType, int, const void *, void *,
				       cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t);
typedef cublasStatus_t (*zn_gemm_sb_ex_t)(cublasHandle_t, cublasOperation_t, cublasOperation_t,
					  int, int, int, const void *, const void *,
					  cudaDataType, int, long long, const void *, cudaDataType,
					  int, long long, const void *, void *, cudaDataType, int,
					  long long, int, cublasComputeType_t, cublasGemmAlgo_t);
#define ZN_BLASLT_FNS(X)                                                              \
	X(cublasLtCreate) X(cublasLtDestroy) X(cublasLtMatmul) X(cublasLtMatmulDescCreate) \
	X(cublasLtMatmulDescDestroy) X(cublasLtMatmulDescSetAttribute)                    \
	X(cublasLtMatrixLayoutCreate) X(cublasLtMatrixLayoutDestroy)                      \
	X(cublasLtMatmulPreferenceCreate) X(cublasLtMatmulPreferenceDestroy)              \
	X(cublasLtMatmulPreferenceSetAttribute) X(cublasLtMatmulAlgoGetHeuristic)
#define ZN_BLAS_MEMBER(f) decltype(&::f) f;
static struct {
	ZN_BLAS_FNS(ZN_BLAS_MEMBER)
	ZN_BLASLT_FNS(ZN_BLAS_MEMBER)
	zn_gemm_ex_t cublasGemmEx;
	zn_gemm_sb_ex_t cublasGemmStridedBatchedEx;
} zn_blas;
#undef ZN_BLAS_MEMBER

#define ZN_STR2(x) #x
#define ZN_STR(x) ZN_STR2(x)
/* The libraries of the toolkit these kernels were built with. */
static const char *const blas_lib = "libcublas.so." ZN_STR(CUBLAS_VER_MAJOR);
static const char *const blaslt_lib = "libcublasLt.so." ZN_STR(CUBLAS_VER_MAJOR);

static pthread_once_t blas_once = PTHREAD_ONCE_INIT;
static char blas_err[512];

static void blas_load(void)
{
	void *h = dlopen(blas_lib, RTLD_NOW | RTLD_LOCAL);
	void *hl = h ? dlopen(blaslt_lib, RTLD_NOW | RTLD_LOCAL) : NULL;
	if (!h || !hl) {
		snprintf(blas_err, sizeof(blas_err), "cannot load %s (%s): install the CUDA "
			 "toolkit's cuBLAS where the loader finds it (LD_LIBRARY_PATH, or "
			 "ldconfig)", h ? blaslt_lib : blas_lib, dlerror());
		return;
	}
	const char *missing = NULL;
#define ZN_BLAS_SYM(lib, f)                                                             \
	if (!missing && !(*(void **)&zn_blas.f = dlsym(lib, #f)))                       \
		missing = #f;
#define ZN_BLAS_GET(f) ZN_BLAS_SYM(h, f)
#define ZN_BLASLT_GET(f) ZN_BLAS_SYM(hl, f)
	ZN_BLAS_FNS(ZN_BLAS_GET)
	ZN_BLAS_GET(cublasGemmEx)
	ZN_BLAS_GET(cublasGemmStridedBatchedEx)
	ZN_BLASLT_FNS(ZN_BLASLT_GET)
#undef ZN_BLAS_GET
#undef ZN_BLASLT_GET
#undef ZN_BLAS_SYM
	if (missing)
		snprintf(blas_err, sizeof(blas_err), "%s or %s has no %s: a cuBLAS older than "
			 "the one zinc was built with", blas_lib, blaslt_lib, missing);
}

/* 0, or -ENOSYS with the message set. */
static int blas_ready(void)
{
	pthread_once(&blas_once, blas_load);
	return blas_err[0] ? zn_error(-ENOSYS, "cuda kernels: %s", blas_err) : 0;
}

/* From here on, every call goes through the loaded pointers. */
#define cublasCreate_v2 (zn_blas.cublasCreate_v2)
#define cublasDestroy_v2 (zn_blas.cublasDestroy_v2)
#define cublasSetStream_v2 (zn_blas.cublasSetStream_v2)
#define cublasSetMathMode (zn_blas.cublasSetMathMode)
#define cublasGemmEx (zn_blas.cublasGemmEx)
#define cublasGemmStridedBatchedEx (zn_blas.cublasGemmStridedBatchedEx)
#define cublasGetStatusString (zn_blas.cublasGetStatusString)
#define cublasLtCreate (zn_blas.cublasLtCreate)
#define cublasLtDestroy (zn_blas.cublasLtDestroy)
#define cublasLtMatmul (zn_blas.cublasLtMatmul)
#define cublasLtMatmulDescCreate (zn_blas.cublasLtMatmulDescCreate)
#define cublasLtMatmulDescDestroy (zn_blas.cublasLtMatmulDescDestroy)
#define cublasLtMatmulDescSetAttribute (zn_blas.cublasLtMatmulDescSetAttribute)
#define cublasLtMatrixLayoutCreate (zn_blas.cublasLtMatrixLayoutCreate)
#define cublasLtMatrixLayoutDestroy (zn_blas.cublasLtMatrixLayoutDestroy)
#define cublasLtMatmulPreferenceCreate (zn_blas.cublasLtMatmulPreferenceCreate)
#define cublasLtMatmulPreferenceDestroy (zn_blas.cublasLtMatmulPreferenceDestroy)
#define cublasLtMatmulPreferenceSetAttribute (zn_blas.cublasLtMatmulPreferenceSetAttribute)
#define cublasLtMatmulAlgoGetHeuristic (zn_blas.cublasLtMatmulAlgoGetHeuristic)

/* ---- error conversion: one macro per library ----------------------------------------- */

/* CUDA statuses: common's zn_cuda.h (ZN_CUDA), as the engine's device and
 * comm convert theirs; cuBLAS statuses here, its one user, the same way. */
#define ZN_CUDA_WHO "cuda kernels: "

static int cublas_status(cublasStatus_t s, const char *call, const char *file, int line)
{
	int err;

	switch (s) {
	case CUBLAS_STATUS_ALLOC_FAILED:
		err = -ENOMEM;
		break;
	case CUBLAS_STATUS_INVALID_VALUE:
		err = -EINVAL;
		break;
	case CUBLAS_STATUS_NOT_SUPPORTED:
	case CUBLAS_STATUS_ARCH_MISMATCH:
		err = -ENOTSUP;
		break;
	default: /* not initialized, execution or internal error, ... */
		err = -EIO;
		break;
	}
	return zn_error(err, "%s%s failed at %s:%d: %s (%d)", ZN_CUDA_WHO, call,
			zn_source_name(file), line, cublasGetStatusString(s), (int)s);
}

#define ZN_CUBLAS(call)                                                               \
	do {                                                                          \
		cublasStatus_t zn_cb_s_ = (call);                                     \
		if (zn_cb_s_ != CUBLAS_STATUS_SUCCESS)                                \
			return cublas_status(zn_cb_s_, #call, __FILE__, __LINE__);    \
	} while (0)
/* After a kernel launch: a bad configuration shows up here. */
#define LAUNCHED() ZN_CUDA(cudaGetLastError())

/* ---- context ------------------------------------------------------------------------- */

#define DEFAULT_WORKSPACE ZN_KCUDA_DEFAULT_WORKSPACE
#define LT_WORKSPACE ZN_KCUDA_LT_WORKSPACE

struct cuda_ctx {
	struct zn_kctx base;
	int device;
	cudaStream_t stream;
	cublasHandle_t blas;
	cublasLtHandle_t lt;
	void *ws;          /* our workspace, ws_bytes */
	size_t ws_bytes;
	void *lt_ws;       /* cuBLASLt's, LT_WORKSPACE */
	bool tf32;
};

static inline cuda_ctx *cuctx(struct zn_kctx *ctx)
{
	return (cuda_ctx *)ctx;
}

#define CHECK_CTX(op) ZN_TRY(zn_kcheck_ctx(op, ctx, &zn_kernels_cuda))

static void ctx_free(cuda_ctx *c)
{
	if (c->blas) /* the context got as far as running work */
		cudaStreamSynchronize(c->stream);
	if (c->lt)
		cublasLtDestroy(c->lt);
	if (c->blas)
		cublasDestroy(c->blas);
	cudaFree(c->ws);
	cudaFree(c->lt_ws);
	free(c);
}

static int ctx_init(cuda_ctx *c, const struct zn_kernels_params *p)
{
	int n = 0;
	cudaError_t e = cudaGetDeviceCount(&n);
	if (e != cudaSuccess || n == 0) {
		(void)cudaGetLastError();
		return zn_error(-ENODEV, "cuda kernels: no CUDA device (%s)",
				e != cudaSuccess ? cudaGetErrorString(e) : "none found");
	}
	if (p->cuda_device >= 0) {
		if (p->cuda_device >= n)
			return zn_error(-ENODEV, "cuda kernels: device %d asked for; this machine has "
					"%d (0 .. %d)", p->cuda_device, n, n - 1);
		ZN_CUDA(cudaSetDevice(p->cuda_device));
	}
	ZN_CUDA(cudaGetDevice(&c->device));
	c->stream = (cudaStream_t)p->cuda_stream;
	c->tf32 = p->tf32;
	c->ws_bytes = p->workspace_bytes ? p->workspace_bytes : DEFAULT_WORKSPACE;
	ZN_CUDA(cudaMalloc(&c->ws, c->ws_bytes));
	ZN_CUDA(cudaMalloc(&c->lt_ws, LT_WORKSPACE));
	ZN_CUBLAS(cublasCreate(&c->blas));
	ZN_CUBLAS(cublasSetStream(c->blas, c->stream));
	/* fp32 contexts get exact fp32 products unless TF32 was asked for;
	 * 16-bit inputs use tensor cores with fp32 accumulation either way */
	ZN_CUBLAS(cublasSetMathMode(c->blas, c->tf32 ? CUBLAS_TF32_TENSOR_OP_MATH
						      : CUBLAS_DEFAULT_MATH));
	ZN_CUBLAS(cublasLtCreate(&c->lt));
	return 0;
}

extern "C" struct zn_kctx *zn_cuda_ctx_create(const struct zn_kernels_params *p)
{
	if (zn_kcheck_params(&zn_kernels_cuda, p) != 0 || blas_ready() != 0)
		return NULL;
	cuda_ctx *c = (cuda_ctx *)calloc(1, sizeof(*c));
	if (!c) {
		zn_set_error("cuda kernels: out of memory for a context");
		return NULL;
	}
	c->base.ops = &zn_kernels_cuda;
	c->base.dtype = p->dtype;
	if (ctx_init(c, p) != 0) {
		ctx_free(c);
		return NULL;
	}
	return &c->base;
}

extern "C" void zn_cuda_ctx_destroy(struct zn_kctx *ctx)
{
	if (ctx)
		ctx_free(cuctx(ctx));
}

/* ---- device helpers ------------------------------------------------------------------- */

__device__ __forceinline__ float ld(const float *p, size_t i)
{
	return p[i];
}
__device__ __forceinline__ float ld(const bf16 *p, size_t i)
{
	return __bfloat162float(p[i]);
}
__device__ __forceinline__ float ld(const f16 *p, size_t i)
{
	return __half2float(p[i]);
}
__device__ __forceinline__ void st(float *p, size_t i, float v)
{
	p[i] = v;
}
__device__ __forceinline__ void st(bf16 *p, size_t i, float v)
{
	p[i] = __float2bfloat16_rn(v);
}
__device__ __forceinline__ void st(f16 *p, size_t i, float v)
{
	p[i] = __float2half_rn(v);
}

/* fn<T>(...) for the context's storage dtype T. */
#define BY_DTYPE(ctx, fn, ...)                                                        \
	((ctx)->dtype == ZN_DTYPE_BF16  ? fn<bf16>(__VA_ARGS__)                       \
	 : (ctx)->dtype == ZN_DTYPE_F16 ? fn<f16>(__VA_ARGS__)                        \
					: fn<float>(__VA_ARGS__))

template <class T> struct dtype_of;
template <> struct dtype_of<float> {
	static constexpr cudaDataType_t value = CUDA_R_32F;
};
template <> struct dtype_of<bf16> {
	static constexpr cudaDataType_t value = CUDA_R_16BF;
};
template <> struct dtype_of<f16> {
	static constexpr cudaDataType_t value = CUDA_R_16F;
};

__device__ __forceinline__ float warp_sum(float v)
{
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

__device__ __forceinline__ float warp_max(float v)
{
	for (int o = 16; o > 0; o >>= 1)
		v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
	return v;
}

/* Sum (or max) over a block of blockDim.x threads (a multiple of 32, at
 * most 1024), returned to every thread; a fixed tree, so deterministic.
 * `sh` holds 32 floats; the block must not use it concurrently. */
__device__ float block_sum(float v, float *sh)
{
	int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
	v = warp_sum(v);
	__syncthreads(); /* sh may still be read from a previous call */
	if (lane == 0)
		sh[warp] = v;
	__syncthreads();
	v = lane < nw ? sh[lane] : 0.0f;
	return warp_sum(v);
}

__device__ float block_max(float v, float *sh)
{
	int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
	v = warp_max(v);
	__syncthreads();
	if (lane == 0)
		sh[warp] = v;
	__syncthreads();
	v = lane < nw ? sh[lane] : -INFINITY;
	return warp_max(v);
}

static unsigned blocks_for(size_t n, unsigned threads)
{
	size_t b = (n + threads - 1) / threads;
	return (unsigned)(b < 65535 * 8 ? (b ? b : 1) : 65535 * 8);
}

#define GRID_STRIDE(i, n)                                                             \
	for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);            \
	     i += (size_t)gridDim.x * blockDim.x)

/* ---- encoder ---------------------------------------------------------------------------- */

template <class T>
__global__ void encoder_fwd_kernel(T *out, const int32_t *tok, const T *wte, const T *wpe,
				   size_t BT, int T_, int C, int V)
{
	GRID_STRIDE(i, BT * (size_t)C) {
		size_t bt = i / (size_t)C, c = i % (size_t)C;
		int t = (int)(bt % (size_t)T_), k = tok[bt];
		/* a token outside the vocabulary poisons its row instead of
		 * reading out of bounds (the host cannot check device tokens
		 * without a synchronization) */
		float v = NAN;
		if ((unsigned)k < (unsigned)V)
			v = wpe ? ld(wte, (size_t)k * C + c) + ld(wpe, (size_t)t * C + c)
				: ld(wte, (size_t)k * C + c); /* no position table (Llama) */
		st(out, i, v);
	}
}

template <class T> static int encoder_fwd(cuda_ctx *c, void *out, const int32_t *tokens,
					  const void *wte, const void *wpe, int B, int T_, int C,
					  int V)
{
	size_t BT = (size_t)B * T_;
	encoder_fwd_kernel<T><<<blocks_for(BT * C, 256), 256, 0, c->stream>>>(
		(T *)out, tokens, (const T *)wte, (const T *)wpe, BT, T_, C, V);
	LAUNCHED();
	return 0;
}

extern "C" int zn_cuda_encoder_forward(struct zn_kctx *ctx, void *out, const int32_t *tokens,
				       const void *wte, const void *wpe, int B, int T, int C,
				       int V)
{
	const char *op = "encoder_forward";
	CHECK_CTX(op);
	ZN_TRY(zn_kcheck_encoder(op, out, tokens, wte, wpe, B, T, C, V, false));
	return BY_DTYPE(ctx, encoder_fwd, cuctx(ctx), out, tokens, wte, wpe, B, T, C, V);
}

/* A tile of the embedding's rows [row0, row0 + rows): the rows of the
 * tokens inside it; other rows of out are left alone. */
template <class T>
__global__ void rows_fwd_kernel(T *out, const int32_t *tok, const T *w, size_t BT, int C,
				int row0, int rows)
{
	GRID_STRIDE(i, BT * (size_t)C) {
		size_t bt = i / (size_t)C, c = i % (size_t)C;
		long k = (long)tok[bt] - row0;
		if (k >= 0 && k < rows)
			st(out, i, ld(w, (size_t)k * C + c));
	}
}

template <class T> static int rows_fwd(cuda_ctx *c, void *out, const int32_t *tokens,
				       const void *w, int row0, int rows, int BT, int C)
{
	rows_fwd_kernel<T><<<blocks_for((size_t)BT * C, 256), 256, 0, c->stream>>>(
		(T *)out, tokens, (const T *)w, (size_t)BT, C, row0, rows);
	LAUNCHED();
	return 0;
}

extern "C" int zn_cuda_embedding_rows_forward(struct zn_kctx *ctx, void *out,
					      const int32_t *tokens, const void *w, int row0,
					      int rows, int BT, int C)
{
	const char *op = "embedding_rows_forward";
	CHECK_CTX(op);
	ZN_TRY(zn_kcheck_rows(op, out, tokens, w, row0, rows, BT, C));
	return BY_DTYPE(ctx, rows_fwd, cuctx(ctx), out, tokens, w, row0, rows, BT, C);
}

/* dwpe[t, c] += sum over b of dout[b, t, c]: one thread per (t, c). */
template <class T>
__global__ void wpe_bwd_kernel(T *dwpe, const T *dout, int B, int T_, int C)
{
	GRID_STRIDE(i, (size_t)T_ * C) {
		float s = 0.0f;
		for (int b = 0; b < B; b++)
			s += ld(dout, (size_t)b * T_ * C + i);
		st(dwpe, i, ld(dwpe, i) + s);
	}
}

/* Keys for the sort: a token's row in rows [row0, row0 + V) of the
 * embedding (the whole: row0 0). */
__global__ void iota_tokens_kernel(uint32_t *keys, int32_t *vals, const int32_t *tok, size_t BT,
				   int row0, int V)
{
	GRID_STRIDE(i, BT) {
		long k = (long)tok[i] - row0;
		/* a token outside the rows becomes V: sorted last, skipped */
		keys[i] = k >= 0 && k < V ? (uint32_t)k : (uint32_t)V;
		vals[i] = (int32_t)i;
	}
}

/* One block per sorted position i that starts a run of equal tokens: the
 * block sums the run's dout rows (in position order: the sort is stable)
 * and adds the sum to that token's dwte row once. */
template <class T>
__global__ void wte_bwd_kernel(T *dwte, const T *dout, const uint32_t *keys, const int32_t *vals,
			       size_t BT, int C, int V)
{
	size_t i = blockIdx.x;
	uint32_t k = keys[i];
	if (k >= (uint32_t)V || (i > 0 && keys[i - 1] == k))
		return;
	for (int ch = threadIdx.x; ch < C; ch += blockDim.x) {
		float s = 0.0f;
		for (size_t j = i; j < BT && keys[j] == k; j++)
			s += ld(dout, (size_t)vals[j] * C + ch);
		st(dwte, (size_t)k * C + ch, ld(dwte, (size_t)k * C + ch) + s);
	}
}

static int bits_for(int V)
{
	int b = 1;
	while (b < 31 && (1ll << b) <= V) /* keys go up to V itself */
		b++;
	return b;
}

/* dwte (rows [row0, row0 + V) of the embedding) += the rows of the
 * tokens in them: sorted by row (stable), each run summed in position
 * order and added once. */
template <class T> static int wte_bwd(cuda_ctx *c, void *dwte, const void *dout,
				      const int32_t *tokens, size_t BT, int C, int row0, int V)
{
	if (BT > (size_t)INT32_MAX)
		return zn_error(-EINVAL, "encoder_backward: B*T = %zu is too many rows", BT);
	/* workspace: keys in/out, positions in/out, then CUB's scratch */
	size_t arr = ZN_ALIGN_UP(BT * sizeof(int32_t), 256), temp = 0;
	ZN_CUDA(cub::DeviceRadixSort::SortPairs(nullptr, temp, (const uint32_t *)nullptr,
					        (uint32_t *)nullptr, (const int32_t *)nullptr,
					        (int32_t *)nullptr, (int)BT, 0, bits_for(V), c->stream));
	if (4 * arr + temp > c->ws_bytes)
		return zn_error(-ENOSPC, "encoder_backward: sorting %zu tokens needs %zu bytes of "
				"workspace; the context has %zu: create it with a larger "
				"workspace_bytes", BT, 4 * arr + temp, c->ws_bytes);
	char *w = (char *)c->ws;
	uint32_t *kin = (uint32_t *)w, *kout = (uint32_t *)(w + arr);
	int32_t *vin = (int32_t *)(w + 2 * arr), *vout = (int32_t *)(w + 3 * arr);
	iota_tokens_kernel<<<blocks_for(BT, 256), 256, 0, c->stream>>>(kin, vin, tokens, BT, row0,
								      V);
	LAUNCHED();
	ZN_CUDA(cub::DeviceRadixSort::SortPairs(w + 4 * arr, temp, kin, kout, vin, vout, (int)BT, 0,
					        bits_for(V), c->stream));
	wte_bwd_kernel<T><<<(unsigned)BT, 256, 0, c->stream>>>((T *)dwte, (const T *)dout, kout,
							      vout, BT, C, V);
	LAUNCHED();
	return 0;
}

template <class T> static int encoder_bwd(cuda_ctx *c, void *dwte, void *dwpe, const void *dout,
					  const int32_t *tokens, int B, int T_, int C, int V)
{
	size_t BT = (size_t)B * T_;
	if (dwpe) {
		wpe_bwd_kernel<T><<<blocks_for((size_t)T_ * C, 256), 256, 0, c->stream>>>(
			(T *)dwpe, (const T *)dout, B, T_, C);
		LAUNCHED();
	}
	return dwte ? wte_bwd<T>(c, dwte, dout, tokens, BT, C, 0, V) : 0;
}

template <class T> static int rows_bwd(cuda_ctx *c, void *dw, const void *dout,
				       const int32_t *tokens, int row0, int rows, int BT, int C)
{
	return wte_bwd<T>(c, dw, dout, tokens, (size_t)BT, C, row0, rows);
}

extern "C" int zn_cuda_embedding_rows_backward(struct zn_kctx *ctx, void *dw, const void *dout,
					       const int32_t *tokens, int row0, int rows, int BT,
					       int C)
{
	const char *op = "embedding_rows_backward";
	CHECK_CTX(op);
	ZN_TRY(zn_kcheck_rows(op, dout, tokens, dw, row0, rows, BT, C));
	return BY_DTYPE(ctx, rows_bwd, cuctx(ctx), dw, dout, tokens, row0, rows, BT, C);
}

extern "C" int zn_cuda_encoder_backward(struct zn_kctx *ctx, void *dwte, void *dwpe,
					const void *dout, const int32_t *tokens, int B, int T,
					int C, int V)
{
	const char *op = "encoder_backward";
	CHECK_CTX(op);
	ZN_TRY(zn_kcheck_encoder(op, dout, tokens, NULL, NULL, B, T, C, V, true));
	return BY_DTYPE(ctx, encoder_bwd, cuctx(ctx), dwte, dwpe, dout, tokens, B, T, C, V);
}

/* ---- column sums (deterministic) --------------------------------------------------------- */

#define COL_ROWS 64 /* rows per partial sum */

/* part[r, c] = sum over rows [r*COL_ROWS, ...) of f(row, c), for
 *   mode 0: dout[row, c]                          (a plain column sum)
 *   mode 1: dout[row, c] * (inp[row, c] - mean[row]) * rstd[row]  (LN dweight)
 *   mode 2: dout[row, c] * (inp[row, c] * rstd[row])             (RMSNorm dweight)
 * Block (32, 8): 32 columns, 8 row lanes combined in a fixed order. */
template <class T>
__global__ void col_partial_kernel(float *part, const T *dout, const T *inp, const float *mean,
				   const float *rstd, size_t rows, int C, int mode)
{
	__shared__ float sh[8][33];
	int c = blockIdx.x * 32 + threadIdx.x;
	size_t r0 = (size_t)blockIdx.y * COL_ROWS, r1 = r0 + COL_ROWS < rows ? r0 + COL_ROWS : rows;
	float s = 0.0f;
	if (c < C)
		for (size_t r = r0 + threadIdx.y; r < r1; r += 8) {
			float d = ld(dout, r * C + c);
			if (mode == 1)
				d *= (ld(inp, r * C + c) - mean[r]) * rstd[r];
			else if (mode == 2)
				d *= ld(inp, r * C + c) * rstd[r];
			s += d;
		}
	sh[threadIdx.y][threadIdx.x] = s;
	__syncthreads();
	if (threadIdx.y == 0 && c < C) {
		float t = 0.0f;
		for (int k = 0; k < 8; k++)
			t += sh[k][threadIdx.x];
		part[(size_t)blockIdx.y * C + c] = t;
	}
}

/* out[c] += sum over the R partials of column c, in order. */
template <class T>
__global__ void col_finish_kernel(T *out, const float *part, size_t R, int C)
{
	GRID_STRIDE(c, (size_t)C) {
		float s = 0.0f;
		for (size_t r = 0; r < R; r++)
			s += part[r * C + c];
		st(out, c, ld(out, c) + s);
	}
}

template <class T> static int col_sum(cuda_ctx *c, const char *op, T *out, const T *dout,
				      const T *inp, const float *mean, const float *rstd,
				      size_t rows, int C, int mode)
{
	size_t R = (rows + COL_ROWS - 1) / COL_ROWS;
	if (R * C * sizeof(float) > c->ws_bytes)
		return zn_error(-ENOSPC, "%s: the column sums need %zu bytes of workspace; the "
				"context has %zu: create it with a larger workspace_bytes", op,
				R * C * sizeof(float), c->ws_bytes);
	if (R > 65535)
		return zn_error(-EINVAL, "%s: %zu rows is more than this kernel handles (%d)", op,
				rows, 65535 * COL_ROWS);
	float *part = (float *)c->ws;
	dim3 grid((unsigned)((C + 31) / 32), (unsigned)R), block(32, 8);
	col_partial_kernel<T><<<grid, block, 0, c->stream>>>(part, dout, inp, mean, rstd, rows, C,
							     mode);
	LAUNCHED();
	col_finish_kernel<T><<<blocks_for((size_t)C, 256), 256, 0, c->stream>>>(out, part, R, C);
	LAUNCHED();
	return 0;
}

/* ---- layernorm --------------------------------------------------------------------------- */

/* One warp per row. */
template <class T>
__global__ void layernorm_fwd_kernel(T *out, float *mean, float *rstd, const T *inp,
				     const T *w, const T *b, int rows, int C)
{
	int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
	if (row >= rows)
		return;
	const T *x = inp + (size_t)row * C;
	float s = 0.0f;
	for (int i = lane; i < C; i += 32)
		s += ld(x, i);
	float m = warp_sum(s) / C;
	float v = 0.0f;
	for (int i = lane; i < C; i += 32) {
		float d = ld(x, i) - m;
		v += d * d;
	}
	float r = rsqrtf(warp_sum(v) / C + 1e-5f);
	T *o = out + (size_t)row * C;
	for (int i = lane; i < C; i += 32)
		st(o, i, (ld(x, i) - m) * r * ld(w, i) + ld(b, i));
	if (lane == 0) {
		if (mean)
			mean[row] = m;
		if (rstd)
			rstd[row] = r;
	}
}

template <class T>
__global__ void layernorm_bwd_kernel(T *dinp, const T *dout, const T *inp, const T *w,
				     const float *mean, const float *rstd, int rows, int C)
{
	int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
	if (row >= rows)
		return;
	size_t off = (size_t)row * C;
	float m = mean[row], r = rstd[row], s1 = 0.0f, s2 = 0.0f;
	for (int i = lane; i < C; i += 32) {
		float dn = ld(w, i) * ld(dout, off + i);
		s1 += dn;
		s2 += dn * (ld(inp, off + i) - m) * r;
	}
	s1 = warp_sum(s1) / C;
	s2 = warp_sum(s2) / C;
	for (int i = lane; i < C; i += 32) {
		float norm = (ld(inp, off + i) - m) * r;
		float dn = ld(w, i) * ld(dout, off + i);
		st(dinp, off + i, ld(dinp, off + i) + (dn - s1 - norm * s2) * r);
	}
}

template <class T> static int layernorm_fwd(cuda_ctx *c, void *out, float *mean, float *rstd,
					    const void *inp, const void *w, const void *b, int BT,
					    int C)
{
	layernorm_fwd_kernel<T><<<(BT + 7) / 8, 256, 0, c->stream>>>(
		(T *)out, mean, rstd, (const T *)inp, (const T *)w, (const T *)b, BT, C);
	LAUNCHED();
	return 0;
}

extern "C" int zn_cuda_layernorm_forward(struct zn_kctx *ctx, void *out, float *mean,
					 float *rstd, const void *inp, const void *weight,
					 const void *bias, int BT, int C)
{
	CHECK_CTX("layernorm_forward");
	ZN_TRY(zn_kcheck_layernorm_fwd(out, inp, weight, bias, BT, C));
	return BY_DTYPE(ctx, layernorm_fwd, cuctx(ctx), out, mean, rstd, inp, weight, bias, BT, C);
}

template <class T> static int layernorm_bwd(cuda_ctx *c, void *dinp, void *dw, void *db,
					    const void *dout, const void *inp, const void *w,
					    const float *mean, const float *rstd, int BT, int C)
{
	const char *op = "layernorm_backward";
	if (dinp) {
		layernorm_bwd_kernel<T><<<(BT + 7) / 8, 256, 0, c->stream>>>(
			(T *)dinp, (const T *)dout, (const T *)inp, (const T *)w, mean, rstd, BT, C);
		LAUNCHED();
	}
	if (dw)
		ZN_TRY(col_sum<T>(c, op, (T *)dw, (const T *)dout, (const T *)inp, mean, rstd,
			          (size_t)BT, C, 1));
	if (db)
		ZN_TRY(col_sum<T>(c, op, (T *)db, (const T *)dout, NULL, NULL, NULL, (size_t)BT, C, 0));
	return 0;
}

extern "C" int zn_cuda_layernorm_backward(struct zn_kctx *ctx, void *dinp, void *dweight,
					  void *dbias, const void *dout, const void *inp,
					  const void *weight, const float *mean, const float *rstd,
					  int BT, int C)
{
	CHECK_CTX("layernorm_backward");
	ZN_TRY(zn_kcheck_layernorm_bwd(dout, inp, weight, mean, rstd, BT, C));
	return BY_DTYPE(ctx, layernorm_bwd, cuctx(ctx), dinp, dweight, dbias, dout, inp, weight, mean,
			rstd, BT, C);
}

/* ---- rmsnorm ----------------------------------------------------------------------------- */

/* One warp per row: rstd = 1 / sqrt(mean(x^2) + eps), out = (x * rstd) * w. */
template <class T>
__global__ void rmsnorm_fwd_kernel(T *out, float *rstd, const T *inp, const T *w, float eps,
				   int rows, int C)
{
	int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
	if (row >= rows)
		return;
	const T *x = inp + (size_t)row * C;
	float s = 0.0f;
	for (int i = lane; i < C; i += 32) {
		float v = ld(x, i);
		s += v * v;
	}
	float r = 1.0f / sqrtf(warp_sum(s) / C + eps);
	T *o = out + (size_t)row * C;
	for (int i = lane; i < C; i += 32)
		st(o, i, (ld(x, i) * r) * ld(w, i));
	if (lane == 0 && rstd)
		rstd[row] = r;
}

/* dinp += rstd * (w dout - norm * mean(w dout norm)), norm = x * rstd. */
template <class T>
__global__ void rmsnorm_bwd_kernel(T *dinp, const T *dout, const T *inp, const T *w,
				   const float *rstd, int rows, int C)
{
	int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
	if (row >= rows)
		return;
	size_t off = (size_t)row * C;
	float r = rstd[row], s = 0.0f;
	for (int i = lane; i < C; i += 32)
		s += (ld(w, i) * ld(dout, off + i)) * (ld(inp, off + i) * r);
	s = warp_sum(s) / C;
	for (int i = lane; i < C; i += 32) {
		float dn = ld(w, i) * ld(dout, off + i);
		st(dinp, off + i, ld(dinp, off + i) + (dn - (ld(inp, off + i) * r) * s) * r);
	}
}

extern "C" int zn_cuda_rmsnorm_forward(struct zn_kctx *ctx, void *out, float *rstd,
				       const void *inp, const void *weight, float eps, int BT,
				       int C)
{
	CHECK_CTX("rmsnorm_forward");
	ZN_TRY(zn_kcheck_rmsnorm_fwd(out, inp, weight, eps, BT, C));
	cuda_ctx *c = cuctx(ctx);
	if (ctx->dtype == ZN_DTYPE_BF16)
		rmsnorm_fwd_kernel<bf16><<<(BT + 7) / 8, 256, 0, c->stream>>>(
			(bf16 *)out, rstd, (const bf16 *)inp, (const bf16 *)weight, eps, BT, C);
	else if (ctx->dtype == ZN_DTYPE_F16)
		rmsnorm_fwd_kernel<f16><<<(BT + 7) / 8, 256, 0, c->stream>>>(
			(f16 *)out, rstd, (const f16 *)inp, (const f16 *)weight, eps, BT, C);
	else
		rmsnorm_fwd_kernel<float><<<(BT + 7) / 8, 256, 0, c->stream>>>(
			(float *)out, rstd, (const float *)inp, (const float *)weight, eps, BT, C);
	LAUNCHED();
	return 0;
}

template <class T> static int rmsnorm_bwd(cuda_ctx *c, void *dinp, void *dw, const void *dout,
					  const void *inp, const void *w, const float *rstd, int BT,
					  int C)
{
	if (dinp) {
		rmsnorm_bwd_kernel<T><<<(BT + 7) / 8, 256, 0, c->stream>>>(
			(T *)dinp, (const T *)dout, (const T *)inp, (const T *)w, rstd, BT, C);
		LAUNCHED();
	}
	if (dw)
		ZN_TRY(col_sum<T>(c, "rmsnorm_backward", (T *)dw, (const T *)dout, (const T *)inp, NULL,
			          rstd, (size_t)BT, C, 2));
	return 0;
}

extern "C" int zn_cuda_rmsnorm_backward(struct zn_kctx *ctx, void *dinp, void *dweight,
					const void *dout, const void *inp, const void *weight,
					const float *rstd, int BT, int C)
{
	CHECK_CTX("rmsnorm_backward");
	ZN_TRY(zn_kcheck_rmsnorm_bwd(dout, inp, weight, rstd, BT, C));
	return BY_DTYPE(ctx, rmsnorm_bwd, cuctx(ctx), dinp, dweight, dout, inp, weight, rstd, BT, C);
}

/* ---- matmul ------------------------------------------------------------------------------ */

/* Row-major X (rows, cols) is column-major X^T (cols x rows) with leading
 * dimension cols; every product below is written in those column-major
 * terms, as cuBLAS sees it. */

static cublasComputeType_t compute_type(const cuda_ctx *c)
{
	return c->base.dtype == ZN_DTYPE_F32 && c->tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32
							 : CUBLAS_COMPUTE_32F;
}

template <class T> __global__ void bias_rows_kernel(T *out, const T *bias, size_t rows, int OC)
{
	GRID_STRIDE(i, rows * (size_t)OC)
		st(out, i, ld(bias, i % (size_t)OC));
}

/* out (BT,OC) = inp (BT,C) @ w^T: out^T (OC x BT) = op(w^T_cm) ...
 * cuBLASLt: D = op(A) B with A = w viewed (C x OC, ld C) and op = T,
 * B = inp (C x BT, ld C), D = out (OC x BT, ld OC); the bias epilogue adds
 * bias[row of D] = bias[oc].  Returns 1 when cuBLASLt has no algorithm
 * (the caller falls back), 0 when done, < 0 on error. */
/* The largest power of two (up to 256) dividing a pointer's address. */
static uint32_t alignment(const void *p)
{
	uintptr_t a = (uintptr_t)p;
	uint32_t al = 256;
	while (al > 1 && a % al)
		al /= 2;
	return al;
}

template <class T> static int matmul_fwd_lt(cuda_ctx *c, T *out, int ldo, const T *inp,
					    const T *w, const T *bias, int BT, int C, int OC)
{
	/* the bias epilogue wants a 16-byte aligned vector */
	if (bias && alignment(bias) < 16)
		return 1;
	uint32_t al_a = alignment(w), al_b = alignment(inp), al_d = alignment(out);
	cudaDataType_t dt = dtype_of<T>::value;
	cublasLtMatmulDesc_t desc = NULL;
	cublasLtMatrixLayout_t la = NULL, lb = NULL, ld_ = NULL;
	cublasLtMatmulPreference_t pref = NULL;
	cublasLtMatmulHeuristicResult_t res;
	int found = 0, rc = 0;
	cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
	cublasLtEpilogue_t epi = bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
	size_t wsb = LT_WORKSPACE;
	const float one = 1.0f, zero = 0.0f;

#define LT(call)                                                                      \
	do {                                                                          \
		cublasStatus_t s_ = (call);                                           \
		if (s_ != CUBLAS_STATUS_SUCCESS) {                                    \
			rc = cublas_status(s_, #call, __FILE__, __LINE__);            \
			goto out;                                                     \
		}                                                                     \
	} while (0)
	LT(cublasLtMatmulDescCreate(&desc, compute_type(c), CUDA_R_32F));
	LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
	LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
	LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
	if (bias) {
		LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
						  sizeof(bias)));
		LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &dt,
						  sizeof(dt)));
	}
	LT(cublasLtMatrixLayoutCreate(&la, dt, (uint64_t)C, (uint64_t)OC, C));
	LT(cublasLtMatrixLayoutCreate(&lb, dt, (uint64_t)C, (uint64_t)BT, C));
	LT(cublasLtMatrixLayoutCreate(&ld_, dt, (uint64_t)OC, (uint64_t)BT, ldo));
	LT(cublasLtMatmulPreferenceCreate(&pref));
	LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
						&wsb, sizeof(wsb)));
	/* the algorithm must suit the pointers we have, not 256-byte ones */
	LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
						&al_a, sizeof(al_a)));
	LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
						&al_b, sizeof(al_b)));
	LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
						&al_d, sizeof(al_d)));
	LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
						&al_d, sizeof(al_d)));
	if (cublasLtMatmulAlgoGetHeuristic(c->lt, desc, la, lb, ld_, ld_, pref, 1, &res, &found) !=
		    CUBLAS_STATUS_SUCCESS ||
	    found == 0) {
		rc = 1;
		goto out;
	}
	LT(cublasLtMatmul(c->lt, desc, &one, w, la, inp, lb, &zero, out, ld_, out, ld_, &res.algo,
			  c->lt_ws, LT_WORKSPACE, c->stream));
#undef LT
out:
	if (pref)
		cublasLtMatmulPreferenceDestroy(pref);
	if (ld_)
		cublasLtMatrixLayoutDestroy(ld_);
	if (lb)
		cublasLtMatrixLayoutDestroy(lb);
	if (la)
		cublasLtMatrixLayoutDestroy(la);
	if (desc)
		cublasLtMatmulDescDestroy(desc);
	return rc;
}

template <class T> static int matmul_fwd(cuda_ctx *c, void *out, int ldo, const void *inp,
					 const void *w, const void *bias, int BT, int C, int OC)
{
	int rc = matmul_fwd_lt<T>(c, (T *)out, ldo, (const T *)inp, (const T *)w, (const T *)bias,
				  BT, C, OC);
	if (rc <= 0)
		return rc;
	/* fallback: out = bias (broadcast), then out += w^T-product with beta 1 */
	cudaDataType_t dt = dtype_of<T>::value;
	float one = 1.0f, beta = 0.0f;
	if (bias) {
		bias_rows_kernel<T><<<blocks_for((size_t)BT * OC, 256), 256, 0, c->stream>>>(
			(T *)out, (const T *)bias, (size_t)BT, OC);
		LAUNCHED();
		beta = 1.0f;
	}
	ZN_CUBLAS(cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, OC, BT, C, &one, w, dt, C, inp, dt,
			       C, &beta, out, dt, ldo, compute_type(c), CUBLAS_GEMM_DEFAULT));
	return 0;
}

extern "C" int zn_cuda_matmul_forward(struct zn_kctx *ctx, void *out, const void *inp,
				      const void *weight, const void *bias, int BT, int C, int OC)
{
	CHECK_CTX("matmul_forward");
	ZN_TRY(zn_kcheck_matmul_fwd(out, inp, weight, BT, C, OC));
	return BY_DTYPE(ctx, matmul_fwd, cuctx(ctx), out, OC, inp, weight, bias, BT, C, OC);
}

extern "C" int zn_cuda_matmul_forward_ld(struct zn_kctx *ctx, void *out, int ldo, const void *inp,
					 const void *weight, int BT, int C, int OC)
{
	CHECK_CTX("matmul_forward_ld");
	ZN_TRY(zn_kcheck_matmul_fwd(out, inp, weight, BT, C, OC));
	ZN_TRY(zn_kcheck_ld("matmul_forward_ld", ldo, OC));
	return BY_DTYPE(ctx, matmul_fwd, cuctx(ctx), out, ldo, inp, weight, (const void *)NULL, BT,
			C, OC);
}

template <class T> static int matmul_bwd(cuda_ctx *c, void *dinp, void *dw, void *db,
					 const void *dout, int ldo, const void *inp, const void *w,
					 int BT, int C, int OC)
{
	cudaDataType_t dt = dtype_of<T>::value;
	const float one = 1.0f;
	if (dinp)
		/* dinp^T (C x BT) += w_cm (C x OC, ld C) @ dout^T (OC x BT, ld ldo) */
		ZN_CUBLAS(cublasGemmEx(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, C, BT, OC, &one, w, dt, C,
				       dout, dt, ldo, &one, dinp, dt, C, compute_type(c),
				       CUBLAS_GEMM_DEFAULT));
	if (dw)
		/* dw^T (C x OC, ld C) += inp^T (C x BT, ld C) @ (dout^T)^T (BT x OC) */
		ZN_CUBLAS(cublasGemmEx(c->blas, CUBLAS_OP_N, CUBLAS_OP_T, C, OC, BT, &one, inp, dt, C,
				       dout, dt, ldo, &one, dw, dt, C, compute_type(c),
				       CUBLAS_GEMM_DEFAULT));
	if (db)
		ZN_TRY(col_sum<T>(c, "matmul_backward", (T *)db, (const T *)dout, NULL, NULL, NULL,
			          (size_t)BT, OC, 0));
	return 0;
}

extern "C" int zn_cuda_matmul_backward(struct zn_kctx *ctx, void *dinp, void *dweight,
				       void *dbias, const void *dout, const void *inp,
				       const void *weight, int BT, int C, int OC)
{
	CHECK_CTX("matmul_backward");
	ZN_TRY(zn_kcheck_matmul_bwd(dinp, dweight, dout, inp, weight, BT, C, OC));
	return BY_DTYPE(ctx, matmul_bwd, cuctx(ctx), dinp, dweight, dbias, dout, OC, inp, weight,
			BT, C, OC);
}

extern "C" int zn_cuda_matmul_backward_ld(struct zn_kctx *ctx, void *dinp, void *dweight,
					  const void *dout, int ldo, const void *inp,
					  const void *weight, int BT, int C, int OC)
{
	CHECK_CTX("matmul_backward_ld");
	ZN_TRY(zn_kcheck_matmul_bwd(dinp, dweight, dout, inp, weight, BT, C, OC));
	ZN_TRY(zn_kcheck_ld("matmul_backward_ld", ldo, OC));
	return BY_DTYPE(ctx, matmul_bwd, cuctx(ctx), dinp, dweight, (void *)NULL, dout, ldo, inp,
			weight, BT, C, OC);
}

/* ---- attention --------------------------------------------------------------------------- */

/* Rows of S (fp32) and P (T) for nh heads: row (hl, i) at (hl*T + i)*T;
 * one warp per row.  Forward: P = softmax over keys [0, i] with the
 * log-sum-exp saved; backward (recompute): P = exp(S - lse). */
template <class T>
__global__ void att_softmax_kernel(T *P, float *lse, const float *S, int nh, int T_,
				   bool recompute)
{
	size_t row = (size_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
	int lane = threadIdx.x % 32;
	if (row >= (size_t)nh * T_)
		return;
	int i = (int)(row % (size_t)T_);
	const float *s = S + row * T_;
	T *p = P + row * T_;
	float l;
	if (recompute) {
		l = lse[row];
	} else {
		float m = -INFINITY;
		for (int j = lane; j <= i; j += 32)
			m = fmaxf(m, s[j]);
		m = warp_max(m);
		float z = 0.0f;
		for (int j = lane; j <= i; j += 32)
			z += expf(s[j] - m);
		l = m + logf(warp_sum(z));
		if (lane == 0)
			lse[row] = l;
	}
	for (int j = lane; j < T_; j += 32)
		st(p, j, j <= i ? expf(s[j] - l) : 0.0f);
}

/* dS = P * (dP - sum_j P dP), row by row, in place of P (zeros above the
 * diagonal stay). */
template <class T> __global__ void att_softmax_bwd_kernel(T *P, const float *dP, int nh, int T_)
{
	size_t row = (size_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
	int lane = threadIdx.x % 32;
	if (row >= (size_t)nh * T_)
		return;
	int i = (int)(row % (size_t)T_);
	T *p = P + row * T_;
	const float *dp = dP + row * T_;
	float d = 0.0f;
	for (int j = lane; j <= i; j += 32)
		d += ld(p, j) * dp[j];
	d = warp_sum(d);
	for (int j = lane; j <= i; j += 32)
		st(p, j, ld(p, j) * (dp[j] - d));
}

/* C = alpha op(A) op(B) + beta C, batched over `batch` heads. */
static int gemm_batched(cuda_ctx *c, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
			int k, float alpha, const void *A, cudaDataType_t at, int lda, long long sa,
			const void *B, cudaDataType_t bt, int ldb, long long sb, float beta,
			void *Cm, cudaDataType_t ct, int ldc, long long sc, int batch)
{
	ZN_CUBLAS(cublasGemmStridedBatchedEx(c->blas, ta, tb, m, n, k, &alpha, A, at, lda, sa, B, bt,
					     ldb, sb, &beta, Cm, ct, ldc, sc, batch, compute_type(c),
					     CUBLAS_GEMM_DEFAULT));
	return 0;
}

/* Grouped-query attention in chunks that fit the workspace.  A chunk is
 * key/value heads [g0, g0+ng) times the query heads [i0, i0+ni) of each
 * (query head h = g*rep + i, rep = NH / NKV), its nh = ng*ni heads' S and P
 * in the workspace at local index l = (g-g0)*ni + (i-i0).  Either a chunk
 * holds whole groups (ni = rep) or one group's part (ng = 1): in both
 * cases its query heads are consecutive, h = hs + l with hs = g0*rep + i0,
 * so their lse rows are too.  Every product runs once per i, batched over
 * the chunk's groups: q and the output heads step by rep*HS, k, v and their
 * gradients by HS, S and P by ni*TT.  With NKV = NH (rep = 1) that is one
 * call batched over the chunk's heads, as in multi-head attention.  A key
 * head's gradient gets its query heads' contributions in the order i = 0,
 * 1, .. (stream order), whatever the chunking. */
struct att_plan {
	int NH, NKV, HS, rep, W, CO; /* W = (NH + 2 NKV) HS: a qkv row; CO = NH HS */
	int ng_step, ni_step;        /* chunk size in groups and in heads of a group */
	float scale;
};

template <class T> static int att_plan_make(cuda_ctx *c, const char *op, int T_, int NH, int NKV,
					    int HS, att_plan *p)
{
	size_t per = (size_t)T_ * T_ * (sizeof(float) + sizeof(T));
	size_t n = c->ws_bytes / per;
	if (n == 0)
		return zn_error(-ENOSPC, "%s: one head's scores need %zu bytes of workspace at "
				"T = %d; the context has %zu: create it with workspace_bytes >= "
				"%zu", op, per, T_, c->ws_bytes, per);
	p->NH = NH;
	p->NKV = NKV;
	p->HS = HS;
	p->rep = NH / NKV;
	p->W = (NH + 2 * NKV) * HS;
	p->CO = NH * HS;
	p->scale = 1.0f / sqrtf((float)HS);
	if (n >= (size_t)p->rep) {
		size_t ng = n / (size_t)p->rep;
		p->ng_step = (int)(ng < (size_t)NKV ? ng : (size_t)NKV);
		p->ni_step = p->rep;
	} else {
		p->ng_step = 1;
		p->ni_step = (int)n;
	}
	return 0;
}

/* The workspace for a plan: S (fp32) then P (T), each nh_max x T x T. */
template <class T> static void att_ws(cuda_ctx *c, const att_plan *p, int T_, float **S, T **P)
{
	*S = (float *)c->ws;
	*P = (T *)((char *)c->ws + (size_t)p->ng_step * p->ni_step * T_ * T_ * sizeof(float));
}

/* S (rows of keys per query, row-major (T_q, T_k)) = scale * q k^T for the
 * chunk's heads: per i, S^T (T_k x T_q, ld T) = k_cm^T (T_k x HS) q_cm (HS x T_q). */
template <class T> static int att_scores(cuda_ctx *c, const att_plan *p, const T *qkv_b, float *S,
					 int T_, int g0, int ng, int i0, int ni)
{
	cudaDataType_t dt = dtype_of<T>::value;
	long long TT = (long long)T_ * T_;
	for (int i = i0; i < i0 + ni; i++) {
		const T *q = qkv_b + (size_t)(g0 * p->rep + i) * p->HS;
		const T *k = qkv_b + (size_t)(p->NH + g0) * p->HS;
		ZN_TRY(gemm_batched(c, CUBLAS_OP_T, CUBLAS_OP_N, T_, T_, p->HS, p->scale, k, dt, p->W,
				    p->HS, q, dt, p->W, (long long)p->rep * p->HS, 0.0f,
				    S + (size_t)(i - i0) * TT, CUDA_R_32F, T_, (long long)ni * TT, ng));
	}
	return 0;
}

template <class T> static int attention_fwd(cuda_ctx *c, void *out_, float *lse,
					    const void *qkv_, int B, int T_, int NH, int NKV, int HS)
{
	const char *op = "attention_forward";
	cudaDataType_t dt = dtype_of<T>::value;
	att_plan p = {};
	ZN_TRY(att_plan_make<T>(c, op, T_, NH, NKV, HS, &p));
	float *S;
	T *P;
	att_ws<T>(c, &p, T_, &S, &P);
	long long TT = (long long)T_ * T_;
	for (int b = 0; b < B; b++)
		for (int g0 = 0; g0 < NKV; g0 += p.ng_step)
			for (int i0 = 0; i0 < p.rep; i0 += p.ni_step) {
				int ng = NKV - g0 < p.ng_step ? NKV - g0 : p.ng_step;
				int ni = p.rep - i0 < p.ni_step ? p.rep - i0 : p.ni_step;
				int nh = ng * ni, hs = g0 * p.rep + i0;
				const T *qkv_b = (const T *)qkv_ + (size_t)b * T_ * p.W;
				T *out_b = (T *)out_ + (size_t)b * T_ * p.CO;
				ZN_TRY(att_scores<T>(c, &p, qkv_b, S, T_, g0, ng, i0, ni));
				size_t rows = (size_t)nh * T_;
				att_softmax_kernel<T><<<(unsigned)((rows + 7) / 8), 256, 0, c->stream>>>(
					P, lse + ((size_t)b * NH + hs) * T_, S, nh, T_, false);
				LAUNCHED();
				/* out^T (HS x T_q, ld CO) = v_cm (HS x T_k) @ P^T_cm (T_k x T_q) */
				const T *v = qkv_b + (size_t)(NH + NKV + g0) * HS;
				for (int i = i0; i < i0 + ni; i++)
					ZN_TRY(gemm_batched(c, CUBLAS_OP_N, CUBLAS_OP_N, HS, T_, T_, 1.0f, v, dt,
							    p.W, HS, P + (size_t)(i - i0) * TT, dt, T_,
							    (long long)ni * TT, 0.0f,
							    out_b + (size_t)(g0 * p.rep + i) * HS, dt, p.CO,
							    (long long)p.rep * HS, ng));
			}
	return 0;
}

extern "C" int zn_cuda_attention_forward(struct zn_kctx *ctx, void *out, float *lse,
					 const void *qkv, int B, int T, int NH, int NKV, int HS)
{
	CHECK_CTX("attention_forward");
	ZN_TRY(zn_kcheck_attention_fwd(out, lse, qkv, B, T, NH, NKV, HS));
	return BY_DTYPE(ctx, attention_fwd, cuctx(ctx), out, lse, qkv, B, T, NH, NKV, HS);
}

template <class T> static int attention_bwd(cuda_ctx *c, void *dqkv_, const void *dout_,
					    const void *qkv_, const float *lse, int B, int T_, int NH,
					    int NKV, int HS)
{
	const char *op = "attention_backward";
	cudaDataType_t dt = dtype_of<T>::value;
	att_plan p = {};
	ZN_TRY(att_plan_make<T>(c, op, T_, NH, NKV, HS, &p));
	float *S; /* S, then dP */
	T *P;     /* P, then dS */
	att_ws<T>(c, &p, T_, &S, &P);
	long long TT = (long long)T_ * T_, qs = (long long)p.rep * HS;
	for (int b = 0; b < B; b++)
		for (int g0 = 0; g0 < NKV; g0 += p.ng_step)
			for (int i0 = 0; i0 < p.rep; i0 += p.ni_step) {
				int ng = NKV - g0 < p.ng_step ? NKV - g0 : p.ng_step;
				int ni = p.rep - i0 < p.ni_step ? p.rep - i0 : p.ni_step;
				int nh = ng * ni, hs = g0 * p.rep + i0;
				size_t boff = (size_t)b * T_ * p.W;
				const T *qkv_b = (const T *)qkv_ + boff;
				T *dqkv_b = (T *)dqkv_ + boff;
				const T *k = qkv_b + (size_t)(NH + g0) * HS;
				const T *v = qkv_b + (size_t)(NH + NKV + g0) * HS;
				T *dk = dqkv_b + (size_t)(NH + g0) * HS;
				T *dv = dqkv_b + (size_t)(NH + NKV + g0) * HS;
				const T *dout_b = (const T *)dout_ + (size_t)b * T_ * p.CO;
				size_t rows = (size_t)nh * T_;
				unsigned blocks = (unsigned)((rows + 7) / 8);
				/* P, recomputed */
				ZN_TRY(att_scores<T>(c, &p, qkv_b, S, T_, g0, ng, i0, ni));
				att_softmax_kernel<T><<<blocks, 256, 0, c->stream>>>(
					P, (float *)(lse + ((size_t)b * NH + hs) * T_), S, nh, T_, true);
				LAUNCHED();
				for (int i = i0; i < i0 + ni; i++) {
					size_t hoff = (size_t)(g0 * p.rep + i) * HS, loff = (size_t)(i - i0) * TT;
					/* dP^T (T_k x T_q) = v_cm^T (T_k x HS) @ dout_cm (HS x T_q) */
					ZN_TRY(gemm_batched(c, CUBLAS_OP_T, CUBLAS_OP_N, T_, T_, HS, 1.0f, v, dt,
							    p.W, HS, dout_b + hoff, dt, p.CO, qs, 0.0f, S + loff,
							    CUDA_R_32F, T_, (long long)ni * TT, ng));
					/* dv^T (HS x T_k) += dout_cm (HS x T_q) @ P_rowmajor (T_q x T_k) */
					ZN_TRY(gemm_batched(c, CUBLAS_OP_N, CUBLAS_OP_T, HS, T_, T_, 1.0f,
							    dout_b + hoff, dt, p.CO, qs, P + loff, dt, T_,
							    (long long)ni * TT, 1.0f, dv, dt, p.W, HS, ng));
				}
				att_softmax_bwd_kernel<T><<<blocks, 256, 0, c->stream>>>(P, S, nh, T_);
				LAUNCHED();
				for (int i = i0; i < i0 + ni; i++) {
					size_t hoff = (size_t)(g0 * p.rep + i) * HS, loff = (size_t)(i - i0) * TT;
					/* dq^T (HS x T_q) += scale * k_cm (HS x T_k) @ dS^T_cm (T_k x T_q) */
					ZN_TRY(gemm_batched(c, CUBLAS_OP_N, CUBLAS_OP_N, HS, T_, T_, p.scale, k, dt,
							    p.W, HS, P + loff, dt, T_, (long long)ni * TT, 1.0f,
							    dqkv_b + hoff, dt, p.W, qs, ng));
					/* dk^T (HS x T_k) += scale * q_cm (HS x T_q) @ dS_rowmajor (T_q x T_k) */
					ZN_TRY(gemm_batched(c, CUBLAS_OP_N, CUBLAS_OP_T, HS, T_, T_, p.scale,
							    qkv_b + hoff, dt, p.W, qs, P + loff, dt, T_,
							    (long long)ni * TT, 1.0f, dk, dt, p.W, HS, ng));
				}
			}
	return 0;
}

extern "C" int zn_cuda_attention_backward(struct zn_kctx *ctx, void *dqkv, const void *dout,
					  const void *qkv, const float *lse, int B, int T, int NH,
					  int NKV, int HS)
{
	CHECK_CTX("attention_backward");
	ZN_TRY(zn_kcheck_attention_bwd(dqkv, dout, qkv, lse, B, T, NH, NKV, HS));
	return BY_DTYPE(ctx, attention_bwd, cuctx(ctx), dqkv, dout, qkv, lse, B, T, NH, NKV, HS);
}

/* ---- elementwise ------------------------------------------------------------------------- */

#define GELU_S 0.7978845608028654f /* sqrt(2 / pi) */

template <class T> __global__ void gelu_fwd_kernel(T *out, const T *inp, size_t n)
{
	GRID_STRIDE(i, n) {
		float x = ld(inp, i);
		float u = GELU_S * (x + 0.044715f * x * x * x);
		st(out, i, 0.5f * x * (1.0f + tanhf(u)));
	}
}

template <class T> __global__ void gelu_bwd_kernel(T *dinp, const T *dout, const T *inp, size_t n)
{
	GRID_STRIDE(i, n) {
		float x = ld(inp, i);
		float u = GELU_S * (x + 0.044715f * x * x * x);
		float th = tanhf(u), sech2 = 1.0f - th * th;
		float g = 0.5f * (1.0f + th) +
			  0.5f * x * sech2 * GELU_S * (1.0f + 3.0f * 0.044715f * x * x);
		st(dinp, i, ld(dinp, i) + g * ld(dout, i));
	}
}

template <class T> __global__ void add_kernel(T *out, const T *a, const T *b, size_t n)
{
	GRID_STRIDE(i, n)
		st(out, i, ld(a, i) + ld(b, i));
}

template <class T> __global__ void acc2_kernel(T *o1, T *o2, const T *a, size_t n)
{
	GRID_STRIDE(i, n) {
		float v = ld(a, i);
		if (o1)
			st(o1, i, ld(o1, i) + v);
		if (o2)
			st(o2, i, ld(o2, i) + v);
	}
}

extern "C" int zn_cuda_gelu_forward(struct zn_kctx *ctx, void *out, const void *inp, size_t N)
{
	CHECK_CTX("gelu_forward");
	ZN_TRY(zn_kcheck_elementwise("gelu_forward", out, inp, inp));
	cuda_ctx *c = cuctx(ctx);
	if (N == 0)
		return 0;
	if (ctx->dtype == ZN_DTYPE_BF16)
		gelu_fwd_kernel<bf16><<<blocks_for(N, 256), 256, 0, c->stream>>>((bf16 *)out,
										 (const bf16 *)inp, N);
	else if (ctx->dtype == ZN_DTYPE_F16)
		gelu_fwd_kernel<f16><<<blocks_for(N, 256), 256, 0, c->stream>>>((f16 *)out,
										 (const f16 *)inp, N);
	else
		gelu_fwd_kernel<float><<<blocks_for(N, 256), 256, 0, c->stream>>>(
			(float *)out, (const float *)inp, N);
	LAUNCHED();
	return 0;
}

extern "C" int zn_cuda_gelu_backward(struct zn_kctx *ctx, void *dinp, const void *dout,
				     const void *inp, size_t N)
{
	CHECK_CTX("gelu_backward");
	ZN_TRY(zn_kcheck_elementwise("gelu_backward", dinp, dout, inp));
	cuda_ctx *c = cuctx(ctx);
	if (N == 0)
		return 0;
	if (ctx->dtype == ZN_DTYPE_BF16)
		gelu_bwd_kernel<bf16><<<blocks_for(N, 256), 256, 0, c->stream>>>(
			(bf16 *)dinp, (const bf16 *)dout, (const bf16 *)inp, N);
	else if (ctx->dtype == ZN_DTYPE_F16)
		gelu_bwd_kernel<f16><<<blocks_for(N, 256), 256, 0, c->stream>>>(
			(f16 *)dinp, (const f16 *)dout, (const f16 *)inp, N);
	else
		gelu_bwd_kernel<float><<<blocks_for(N, 256), 256, 0, c->stream>>>(
			(float *)dinp, (const float *)dout, (const float *)inp, N);
	LAUNCHED();
	return 0;
}

extern "C" int zn_cuda_residual_forward(struct zn_kctx *ctx, void *out, const void *inp1,
					const void *inp2, size_t N)
{
	CHECK_CTX("residual_forward");
	ZN_TRY(zn_kcheck_elementwise("residual_forward", out, inp1, inp2));
	cuda_ctx *c = cuctx(ctx);
	if (N == 0)
		return 0;
	if (ctx->dtype == ZN_DTYPE_BF16)
		add_kernel<bf16><<<blocks_for(N, 256), 256, 0, c->stream>>>(
			(bf16 *)out, (const bf16 *)inp1, (const bf16 *)inp2, N);
	else if (ctx->dtype == ZN_DTYPE_F16)
		add_kernel<f16><<<blocks_for(N, 256), 256, 0, c->stream>>>(
			(f16 *)out, (const f16 *)inp1, (const f16 *)inp2, N);
	else
		add_kernel<float><<<blocks_for(N, 256), 256, 0, c->stream>>>(
			(float *)out, (const float *)inp1, (const float *)inp2, N);
	LAUNCHED();
	return 0;
}

extern "C" int zn_cuda_residual_backward(struct zn_kctx *ctx, void *dinp1, void *dinp2,
					 const void *dout, size_t N)
{
	CHECK_CTX("residual_backward");
	ZN_TRY(zn_kcheck_ptr("residual_backward", "dout", dout));
	cuda_ctx *c = cuctx(ctx);
	if (N == 0 || (!dinp1 && !dinp2))
		return 0;
	if (ctx->dtype == ZN_DTYPE_BF16)
		acc2_kernel<bf16><<<blocks_for(N, 256), 256, 0, c->stream>>>(
			(bf16 *)dinp1, (bf16 *)dinp2, (const bf16 *)dout, N);
	else if (ctx->dtype == ZN_DTYPE_F16)
		acc2_kernel<f16><<<blocks_for(N, 256), 256, 0, c->stream>>>(
			(f16 *)dinp1, (f16 *)dinp2, (const f16 *)dout, N);
	else
		acc2_kernel<float><<<blocks_for(N, 256), 256, 0, c->stream>>>(
			(float *)dinp1, (float *)dinp2, (const float *)dout, N);
	LAUNCHED();
	return 0;
}

/* ---- rotary embedding --------------------------------------------------------------------- */

/* The inverse frequencies travel by value with the launch (kernel
 * parameter space), so the caller's host table needs no copy. */
struct rope_freqs {
	float f[ZN_ROPE_MAX_HS / 2];
};

/* One thread per pair (row r = b*T + t, head h, i < HS/2): the angle
 * rounded to fp32 (__fmul_rn: never contracted), cos and sin in double,
 * rounded once: the cpu table's values. */
template <class T>
__global__ void rope_kernel(T *out, int ldo, const T *inp, int ldi, rope_freqs fr, bool rotate,
			    bool backward, int T_, int NH, int half, size_t n)
{
	GRID_STRIDE(idx, n) {
		int i = (int)(idx % (size_t)half);
		size_t rh = idx / (size_t)half;
		int h = (int)(rh % (size_t)NH);
		size_t r = rh / (size_t)NH;
		size_t oo = r * (size_t)ldo + (size_t)h * 2 * half + i;
		size_t io = r * (size_t)ldi + (size_t)h * 2 * half + i;
		float x1 = ld(inp, io), x2 = ld(inp, io + half);
		if (!rotate) {
			if (backward) {
				st(out, oo, ld(out, oo) + x1);
				st(out, oo + half, ld(out, oo + half) + x2);
			} else {
				st(out, oo, x1);
				st(out, oo + half, x2);
			}
			continue;
		}
		float ang = __fmul_rn((float)(r % (size_t)T_), fr.f[i]);
		double sd, cd;
		sincos((double)ang, &sd, &cd);
		float cs = (float)cd, sn = (float)sd;
		if (backward) {
			st(out, oo, ld(out, oo) + (x1 * cs + x2 * sn));
			st(out, oo + half, ld(out, oo + half) + (x2 * cs - x1 * sn));
		} else {
			st(out, oo, x1 * cs - x2 * sn);
			st(out, oo + half, x2 * cs + x1 * sn);
		}
	}
}

static int cuda_rope(struct zn_kctx *ctx, bool backward, void *out, int ldo, const void *inp,
		     int ldi, const float *inv_freq, int B, int T, int NH, int HS)
{
	cuda_ctx *c = cuctx(ctx);
	rope_freqs fr;
	memset(&fr, 0, sizeof(fr));
	if (inv_freq)
		memcpy(fr.f, inv_freq, (size_t)(HS / 2) * sizeof(float));
	size_t n = (size_t)B * T * NH * (HS / 2);
	if (out == inp && !backward && !inv_freq)
		return 0; /* a copy onto itself */
	if (ctx->dtype == ZN_DTYPE_BF16)
		rope_kernel<bf16><<<blocks_for(n, 256), 256, 0, c->stream>>>(
			(bf16 *)out, ldo, (const bf16 *)inp, ldi, fr, inv_freq != NULL, backward, T,
			NH, HS / 2, n);
	else if (ctx->dtype == ZN_DTYPE_F16)
		rope_kernel<f16><<<blocks_for(n, 256), 256, 0, c->stream>>>(
			(f16 *)out, ldo, (const f16 *)inp, ldi, fr, inv_freq != NULL, backward, T,
			NH, HS / 2, n);
	else
		rope_kernel<float><<<blocks_for(n, 256), 256, 0, c->stream>>>(
			(float *)out, ldo, (const float *)inp, ldi, fr, inv_freq != NULL, backward, T,
			NH, HS / 2, n);
	LAUNCHED();
	return 0;
}

extern "C" int zn_cuda_rope_forward(struct zn_kctx *ctx, void *out, int ldo, const void *inp,
				    int ldi, const float *inv_freq, int B, int T, int NH, int HS)
{
	CHECK_CTX("rope_forward");
	ZN_TRY(zn_kcheck_rope(false, out, ldo, inp, ldi, B, T, NH, HS));
	return cuda_rope(ctx, false, out, ldo, inp, ldi, inv_freq, B, T, NH, HS);
}

extern "C" int zn_cuda_rope_backward(struct zn_kctx *ctx, void *dinp, int ldi, const void *dout,
				     int ldo, const float *inv_freq, int B, int T, int NH, int HS)
{
	CHECK_CTX("rope_backward");
	ZN_TRY(zn_kcheck_rope(true, dinp, ldi, dout, ldo, B, T, NH, HS));
	/* the rows: dinp (stride ldi) gets dout (stride ldo) */
	return cuda_rope(ctx, true, dinp, ldi, dout, ldo, inv_freq, B, T, NH, HS);
}

/* ---- SwiGLU ------------------------------------------------------------------------------- */

template <class T> __global__ void swiglu_fwd_kernel(T *out, const T *g, const T *u, size_t n)
{
	GRID_STRIDE(i, n) {
		float x = ld(g, i), s = 1.0f / (1.0f + expf(-x));
		st(out, i, (x * s) * ld(u, i));
	}
}

template <class T>
__global__ void swiglu_bwd_kernel(T *dg, T *du, const T *dy, const T *g, const T *u, size_t n)
{
	GRID_STRIDE(i, n) {
		float x = ld(g, i), s = 1.0f / (1.0f + expf(-x)), d = ld(dy, i);
		if (dg)
			st(dg, i, ld(dg, i) + d * ld(u, i) * (s * (1.0f + x * (1.0f - s))));
		if (du)
			st(du, i, ld(du, i) + d * (x * s));
	}
}

extern "C" int zn_cuda_swiglu_forward(struct zn_kctx *ctx, void *out, const void *gate,
				      const void *up, size_t N)
{
	CHECK_CTX("swiglu_forward");
	ZN_TRY(zn_kcheck_elementwise("swiglu_forward", out, gate, up));
	cuda_ctx *c = cuctx(ctx);
	if (N == 0)
		return 0;
	if (ctx->dtype == ZN_DTYPE_BF16)
		swiglu_fwd_kernel<bf16><<<blocks_for(N, 256), 256, 0, c->stream>>>(
			(bf16 *)out, (const bf16 *)gate, (const bf16 *)up, N);
	else if (ctx->dtype == ZN_DTYPE_F16)
		swiglu_fwd_kernel<f16><<<blocks_for(N, 256), 256, 0, c->stream>>>(
			(f16 *)out, (const f16 *)gate, (const f16 *)up, N);
	else
		swiglu_fwd_kernel<float><<<blocks_for(N, 256), 256, 0, c->stream>>>(
			(float *)out, (const float *)gate, (const float *)up, N);
	LAUNCHED();
	return 0;
}

extern "C" int zn_cuda_swiglu_backward(struct zn_kctx *ctx, void *dgate, void *dup,
				       const void *dout, const void *gate, const void *up, size_t N)
{
	CHECK_CTX("swiglu_backward");
	ZN_TRY(zn_kcheck_elementwise("swiglu_backward", dout, gate, up));
	cuda_ctx *c = cuctx(ctx);
	if (N == 0 || (!dgate && !dup))
		return 0;
	if (ctx->dtype == ZN_DTYPE_BF16)
		swiglu_bwd_kernel<bf16><<<blocks_for(N, 256), 256, 0, c->stream>>>(
			(bf16 *)dgate, (bf16 *)dup, (const bf16 *)dout, (const bf16 *)gate,
			(const bf16 *)up, N);
	else if (ctx->dtype == ZN_DTYPE_F16)
		swiglu_bwd_kernel<f16><<<blocks_for(N, 256), 256, 0, c->stream>>>(
			(f16 *)dgate, (f16 *)dup, (const f16 *)dout, (const f16 *)gate,
			(const f16 *)up, N);
	else
		swiglu_bwd_kernel<float><<<blocks_for(N, 256), 256, 0, c->stream>>>(
			(float *)dgate, (float *)dup, (const float *)dout, (const float *)gate,
			(const float *)up, N);
	LAUNCHED();
	return 0;
}

/* ---- softmax cross-entropy ---------------------------------------------------------------- */

/* One block per row.  A target >= V (the host does not look at device
 * targets) gives a NaN loss and a zero gradient row, so it cannot pass
 * unnoticed. */
template <class T>
__global__ void xent_kernel(float *losses, T *dl, const T *x, const int32_t *targets,
			    const float *weights, float gscale, int V, int Vp)
{
	__shared__ float sh[32];
	size_t row = blockIdx.x;
	const T *xr = x + row * Vp;
	T *dr = dl ? dl + row * Vp : NULL;
	int t = targets[row];
	float w = weights ? weights[row] : 1.0f;
	if (t < 0 || t >= V || w == 0.0f) {
		if (threadIdx.x == 0)
			losses[row] = t >= V ? NAN : 0.0f;
		if (dr)
			for (int j = threadIdx.x; j < Vp; j += blockDim.x)
				st(dr, j, 0.0f);
		return;
	}
	float xt = ld(xr, t); /* read before any thread writes dr (== xr in place) */
	float m = -INFINITY;
	for (int j = threadIdx.x; j < V; j += blockDim.x)
		m = fmaxf(m, ld(xr, j));
	m = block_max(m, sh);
	float z = 0.0f;
	for (int j = threadIdx.x; j < V; j += blockDim.x)
		z += expf(ld(xr, j) - m);
	z = block_sum(z, sh);
	float lse = m + logf(z);
	if (threadIdx.x == 0)
		losses[row] = w * (lse - xt);
	if (!dr)
		return;
	float k = gscale * w;
	for (int j = threadIdx.x; j < Vp; j += blockDim.x) {
		float g = j < V ? k * (expf(ld(xr, j) - lse) - (j == t ? 1.0f : 0.0f)) : 0.0f;
		st(dr, j, g);
	}
}

extern "C" int zn_cuda_softmax_crossentropy(struct zn_kctx *ctx, float *losses, void *dlogits,
					    const void *logits, const int32_t *targets,
					    const float *weights, float grad_scale, int BT, int V,
					    int Vp)
{
	CHECK_CTX("softmax_crossentropy");
	ZN_TRY(zn_kcheck_xent(losses, logits, targets, BT, V, Vp));
	cuda_ctx *c = cuctx(ctx);
	if (ctx->dtype == ZN_DTYPE_BF16)
		xent_kernel<bf16><<<(unsigned)BT, 512, 0, c->stream>>>(
			losses, (bf16 *)dlogits, (const bf16 *)logits, targets, weights, grad_scale, V,
			Vp);
	else if (ctx->dtype == ZN_DTYPE_F16)
		xent_kernel<f16><<<(unsigned)BT, 512, 0, c->stream>>>(
			losses, (f16 *)dlogits, (const f16 *)logits, targets, weights, grad_scale, V,
			Vp);
	else
		xent_kernel<float><<<(unsigned)BT, 512, 0, c->stream>>>(
			losses, (float *)dlogits, (const float *)logits, targets, weights, grad_scale,
			V, Vp);
	LAUNCHED();
	return 0;
}

/* ---- casts and reductions ------------------------------------------------------------------ */

__device__ __forceinline__ float load_any(const void *p, int d, size_t i)
{
	if (d == ZN_DTYPE_F32)
		return ((const float *)p)[i];
	uint16_t h = ((const uint16_t *)p)[i];
	return d == ZN_DTYPE_BF16 ? zn_bf16_to_f32(h) : zn_f16_to_f32(h);
}

__device__ __forceinline__ void store_any(void *p, int d, size_t i, float v)
{
	if (d == ZN_DTYPE_F32)
		((float *)p)[i] = v;
	else
		((uint16_t *)p)[i] = d == ZN_DTYPE_BF16 ? zn_f32_to_bf16(v) : zn_f32_to_f16(v);
}

/* Conversions with the same bits as the cpu path (common/zn_half.h), not the CUDA
 * intrinsics: those map NaN to another pattern. */
__global__ void cast_kernel(void *dst, int dd, const void *src, int sd, size_t n)
{
	GRID_STRIDE(i, n)
		store_any(dst, dd, i, load_any(src, sd, i));
}

__global__ void accumulate_kernel(void *dst, int dd, const void *src, int sd, size_t n)
{
	GRID_STRIDE(i, n)
		store_any(dst, dd, i, load_any(dst, dd, i) + load_any(src, sd, i));
}

/* A NaN stays the NaN it was (fp32, fp16), as on the cpu: the GPU's
 * multiply would give its canonical NaN instead.  bf16 NaNs become 0x7fc0
 * on both (the cast's rule). */
__global__ void scale_kernel(void *x, int d, float s, size_t n)
{
	GRID_STRIDE(i, n) {
		float v = load_any(x, d, i);
		if (!isnan(v) || d == ZN_DTYPE_BF16)
			store_any(x, d, i, v * s);
	}
}

__global__ void nonfinite_kernel(int32_t *flag, const void *x, int d, size_t n)
{
	GRID_STRIDE(i, n)
		if (!isfinite(load_any(x, d, i)))
			*flag = 1; /* every writer writes 1: the result is the same */
}

#define SUMSQ_BLOCKS 1024u

/* part[block] = sum of squares over a fixed grid-stride share, in double. */
__global__ void sumsq_kernel(double *part, const void *x, int d, size_t n)
{
	__shared__ double sh[256];
	double s = 0.0;
	GRID_STRIDE(i, n) {
		double v = load_any(x, d, i);
		s += v * v;
	}
	sh[threadIdx.x] = s;
	__syncthreads();
	for (unsigned k = blockDim.x / 2; k > 0; k /= 2) {
		if (threadIdx.x < k)
			sh[threadIdx.x] += sh[threadIdx.x + k];
		__syncthreads();
	}
	if (threadIdx.x == 0)
		part[blockIdx.x] = sh[0];
}

__global__ void sumsq_finish_kernel(double *acc, const double *part, unsigned nb)
{
	if (threadIdx.x == 0 && blockIdx.x == 0) {
		double s = 0.0;
		for (unsigned i = 0; i < nb; i++)
			s += part[i];
		*acc += s;
	}
}

extern "C" int zn_cuda_accumulate(struct zn_kctx *ctx, void *dst, enum zn_dtype dst_dtype,
				  const void *src, enum zn_dtype src_dtype, size_t n)
{
	CHECK_CTX("accumulate");
	ZN_TRY(zn_kcheck_convert("accumulate", dst, dst_dtype, src, src_dtype, n, false));
	if (n == 0)
		return 0;
	accumulate_kernel<<<blocks_for(n, 256), 256, 0, cuctx(ctx)->stream>>>(
		dst, (int)dst_dtype, src, (int)src_dtype, n);
	LAUNCHED();
	return 0;
}

extern "C" int zn_cuda_cast(struct zn_kctx *ctx, void *dst, enum zn_dtype dst_dtype,
			    const void *src, enum zn_dtype src_dtype, size_t n)
{
	CHECK_CTX("cast");
	ZN_TRY(zn_kcheck_convert("cast", dst, dst_dtype, src, src_dtype, n, true));
	cuda_ctx *c = cuctx(ctx);
	size_t dsz = zn_dtype_size(dst_dtype);
	if (n == 0)
		return 0;
	if (dst_dtype == src_dtype) {
		if (dst != src)
			ZN_CUDA(cudaMemcpyAsync(dst, src, n * dsz, cudaMemcpyDeviceToDevice, c->stream));
		return 0;
	}
	cast_kernel<<<blocks_for(n, 256), 256, 0, c->stream>>>(dst, (int)dst_dtype, src,
								(int)src_dtype, n);
	LAUNCHED();
	return 0;
}

extern "C" int zn_cuda_scale(struct zn_kctx *ctx, void *x, enum zn_dtype dtype, float s,
			     size_t n)
{
	CHECK_CTX("scale");
	ZN_TRY(zn_kcheck_dtype("scale", "tensor", dtype));
	ZN_TRY(zn_kcheck_ptr("scale", "x", x));
	if (n == 0)
		return 0;
	scale_kernel<<<blocks_for(n, 256), 256, 0, cuctx(ctx)->stream>>>(x, (int)dtype, s, n);
	LAUNCHED();
	return 0;
}

extern "C" int zn_cuda_nonfinite(struct zn_kctx *ctx, int32_t *flag, const void *x,
				 enum zn_dtype dtype, size_t n)
{
	CHECK_CTX("nonfinite");
	ZN_TRY(zn_kcheck_dtype("nonfinite", "tensor", dtype));
	ZN_TRY(zn_kcheck_ptr("nonfinite", "flag", flag));
	ZN_TRY(zn_kcheck_ptr("nonfinite", "x", x));
	if (n == 0)
		return 0;
	nonfinite_kernel<<<blocks_for(n, 256), 256, 0, cuctx(ctx)->stream>>>(flag, x, (int)dtype,
									     n);
	LAUNCHED();
	return 0;
}

extern "C" int zn_cuda_sumsq(struct zn_kctx *ctx, double *acc, const void *x,
			     enum zn_dtype dtype, size_t n)
{
	CHECK_CTX("sumsq");
	ZN_TRY(zn_kcheck_dtype("sumsq", "tensor", dtype));
	ZN_TRY(zn_kcheck_ptr("sumsq", "acc", acc));
	ZN_TRY(zn_kcheck_ptr("sumsq", "x", x));
	if (n == 0)
		return 0;
	cuda_ctx *c = cuctx(ctx);
	/* the block count depends on n only, so the sum's order does too */
	unsigned nb = blocks_for(n, 256 * 8);
	nb = nb < SUMSQ_BLOCKS ? nb : SUMSQ_BLOCKS;
	if (nb * sizeof(double) > c->ws_bytes)
		return zn_error(-ENOSPC, "sumsq: %zu bytes of workspace needed; the context has "
				"%zu", nb * sizeof(double), c->ws_bytes);
	double *part = (double *)c->ws;
	sumsq_kernel<<<nb, 256, 0, c->stream>>>(part, x, (int)dtype, n);
	LAUNCHED();
	sumsq_finish_kernel<<<1, 32, 0, c->stream>>>(acc, part, nb);
	LAUNCHED();
	return 0;
}

/* ---- Adam/AdamW (offload_optimizer: none) -------------------------------
 * cpu_adam/kernels_scalar.c's loop, element per thread, with explicit
 * round-to-nearest intrinsics so nvcc cannot contract a multiply and an add
 * into an FMA (the CPU paths are built with -ffp-contract=off): the same
 * IEEE operations in the same order give the same bits. */
struct adam_coef {
	float scale, b1, omb1, b2, omb2, eps, step_size, bc2_rsqrt, decay, l2;
	int use_decay, use_l2;
};

__global__ void adam_kernel(float *__restrict__ p, const float *__restrict__ g,
			    float *__restrict__ m, float *__restrict__ v, adam_coef c, size_t n)
{
	size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n)
		return;
	float pi = p[i], mi = m[i], vi = v[i];
	float gi = __fmul_rn(g[i], c.scale);
	if (c.use_l2)
		gi = __fadd_rn(gi, __fmul_rn(c.l2, pi));
	mi = __fadd_rn(__fmul_rn(c.b1, mi), __fmul_rn(c.omb1, gi));
	vi = __fadd_rn(__fmul_rn(c.b2, vi), __fmul_rn(c.omb2, __fmul_rn(gi, gi)));
	float den = __fadd_rn(__fmul_rn(__fsqrt_rn(vi), c.bc2_rsqrt), c.eps);
	if (c.use_decay)
		pi = __fmul_rn(pi, c.decay);
	pi = __fadd_rn(pi, __fmul_rn(c.step_size, __fdiv_rn(mi, den)));
	p[i] = pi;
	m[i] = mi;
	v[i] = vi;
}

extern "C" int zn_cuda_adam(struct zn_kctx *ctx, const struct zn_adam_hparams *hp,
			    uint64_t step, float grad_scale, float *param, const float *grad,
			    float *m, float *v, size_t n)
{
	CHECK_CTX("adam");
	ZN_TRY(zn_kcheck_ptr("adam", "hp", hp));
	if (n == 0)
		return 0;
	ZN_TRY(zn_kcheck_ptr("adam", "param", param));
	ZN_TRY(zn_kcheck_ptr("adam", "grad", grad));
	ZN_TRY(zn_kcheck_ptr("adam", "m", m));
	ZN_TRY(zn_kcheck_ptr("adam", "v", v));
	if (step == 0 || !(hp->beta1 >= 0 && hp->beta1 < 1) || !(hp->beta2 >= 0 && hp->beta2 < 1) ||
	    !(hp->eps > 0) || !(hp->lr >= 0) || !(hp->weight_decay >= 0))
		return zn_error(-EINVAL, "adam: step must be >= 1, betas in [0, 1), eps > 0, lr and "
				"weight_decay >= 0");
	/* Coefficients exactly as cpu_adam/adam.c computes them. */
	adam_coef c;
	c.scale = grad_scale;
	c.b1 = (float)hp->beta1;
	c.omb1 = (float)(1.0 - hp->beta1);
	c.b2 = (float)hp->beta2;
	c.omb2 = (float)(1.0 - hp->beta2);
	c.eps = (float)hp->eps;
	c.step_size = (float)-hp->lr;
	c.bc2_rsqrt = 1.0f;
	c.decay = (float)(1.0 - hp->lr * hp->weight_decay);
	c.l2 = (float)hp->weight_decay;
	if (hp->bias_correction) {
		double bc1 = 1.0 - pow(hp->beta1, (double)step);
		double bc2 = 1.0 - pow(hp->beta2, (double)step);
		c.step_size = (float)(-hp->lr / bc1);
		c.bc2_rsqrt = (float)(1.0 / sqrt(bc2));
	}
	bool wd = hp->weight_decay > 0.0;
	c.use_decay = wd && hp->adamw_mode;
	c.use_l2 = wd && !hp->adamw_mode;
	cuda_ctx *cc = cuctx(ctx);
	adam_kernel<<<blocks_for(n, 256), 256, 0, cc->stream>>>(param, grad, m, v, c, n);
	LAUNCHED();
	return 0;
}
