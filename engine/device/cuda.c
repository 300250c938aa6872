/* The cuda device: the CUDA runtime's C API, no nvcc needed.
 *
 * Streams are cudaStreamNonBlocking streams (they never synchronize with
 * the legacy default stream), events are cudaEventDisableTiming events
 * (cheapest to record and wait for).  Each call makes the device current in
 * the calling thread first, because the engine calls from several threads
 * and the runtime's current device is per thread.
 *
 * CUDA status codes are converted at the call site by ZN_CUDA (common's
 * zn_cuda.h, the mapping every CUDA caller in zinc shares), so each
 * failure returns a negative errno whose message names the call, its file
 * and line and the CUDA error. */
#include "zn_build.h"

#include "device/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "zn_cuda.h"

#include "zinc/kernels.h"

#define ZN_CUDA_WHO ""

static cudaStream_t stream_of(struct zn_stream *s)
{
	return s ? (cudaStream_t)s->impl : NULL;
}

static int cuda_open(struct zn_device *dev, const struct zn_device_params *c)
{
	int count = 0;
	cudaError_t e = cudaGetDeviceCount(&count);
	if (e != cudaSuccess || count == 0)
		return zn_error(-ENODEV, "device cuda:%d: no CUDA device (%s): use device kind \"cpu\"",
				c->ordinal, e != cudaSuccess ? cudaGetErrorString(e) : "none found");
	if (c->ordinal >= count)
		return zn_error(-ENODEV, "device cuda:%d: only %d CUDA device%s (ordinals 0..%d)",
				c->ordinal, count, count == 1 ? "" : "s", count - 1);
	ZN_CUDA(cudaSetDevice(c->ordinal));
	struct cudaDeviceProp prop;
	ZN_CUDA(cudaGetDeviceProperties(&prop, c->ordinal));
	size_t free_b = 0, total_b = 0;
	ZN_CUDA(cudaMemGetInfo(&free_b, &total_b));
	if (dev->limit == 0) {
		dev->limit = free_b;
	} else if (dev->limit > free_b) {
		char a[32], b[32];
		return zn_error(-ENOMEM,
				"device cuda:%d: memory_limit %s is more than the %s free on %s: "
				"lower device_memory_limit",
				c->ordinal, zn_format_size(dev->limit, a, sizeof(a)),
				zn_format_size(free_b, b, sizeof(b)), prop.name);
	}
	snprintf(dev->name, sizeof(dev->name), "cuda:%d (%.100s)", c->ordinal, prop.name);
	return 0;
}

static void cuda_close(struct zn_device *dev)
{
	(void)dev;
}

static int cuda_mem_alloc(struct zn_device *dev, size_t bytes, void **out)
{
	ZN_CUDA(cudaSetDevice(dev->ordinal));
	ZN_CUDA(cudaMalloc(out, bytes));
	return 0;
}

static void cuda_mem_free(struct zn_device *dev, void *p, size_t bytes)
{
	(void)bytes;
	cudaSetDevice(dev->ordinal);
	cudaError_t e = cudaFree(p);
	if (e != cudaSuccess)
		zn_warn("device %s: cudaFree(%p): %s", dev->name, p, cudaGetErrorString(e));
}

static int cuda_memset(struct zn_device *dev, void *p, int value, size_t bytes,
		       struct zn_stream *s)
{
	ZN_CUDA(cudaSetDevice(dev->ordinal));
	if (!s) {
		/* Not cudaMemset: it may return before the device is done. */
		ZN_CUDA(cudaMemsetAsync(p, value, bytes, NULL));
		ZN_CUDA(cudaStreamSynchronize(NULL));
		return 0;
	}
	ZN_CUDA(cudaMemsetAsync(p, value, bytes, stream_of(s)));
	return 0;
}

static int cuda_copy(struct zn_device *dev, void *dst, const void *src, size_t bytes,
		     enum zn_copy_kind kind, struct zn_stream *s)
{
	static const enum cudaMemcpyKind kinds[] = {
		[ZN_COPY_HOST_TO_DEVICE] = cudaMemcpyHostToDevice,
		[ZN_COPY_DEVICE_TO_HOST] = cudaMemcpyDeviceToHost,
		[ZN_COPY_DEVICE_TO_DEVICE] = cudaMemcpyDeviceToDevice,
		[ZN_COPY_HOST_TO_HOST] = cudaMemcpyHostToHost,
	};
	_Static_assert(sizeof(kinds) / sizeof(kinds[0]) == ZN_COPY_KIND_COUNT,
		       "one cudaMemcpyKind per zn_copy_kind");

	ZN_CUDA(cudaSetDevice(dev->ordinal));
	if (!s) {
		/* Not cudaMemcpy: for device-to-device it returns before the
		 * copy is done.  The legacy default stream does not order
		 * against zinc's non-blocking streams. */
		ZN_CUDA(cudaMemcpyAsync(dst, src, bytes, kinds[kind], NULL));
		ZN_CUDA(cudaStreamSynchronize(NULL));
		return 0;
	}
	ZN_CUDA(cudaMemcpyAsync(dst, src, bytes, kinds[kind], stream_of(s)));
	return 0;
}

static int cuda_host_register(struct zn_device *dev, void *p, size_t bytes)
{
	ZN_CUDA(cudaSetDevice(dev->ordinal));
	ZN_CUDA(cudaHostRegister(p, bytes, cudaHostRegisterDefault));
	return 0;
}

static int cuda_host_unregister(struct zn_device *dev, void *p)
{
	ZN_CUDA(cudaSetDevice(dev->ordinal));
	ZN_CUDA(cudaHostUnregister(p));
	return 0;
}

static int cuda_stream_create(struct zn_stream *s)
{
	cudaStream_t cs = NULL;
	ZN_CUDA(cudaSetDevice(s->dev->ordinal));
	ZN_CUDA(cudaStreamCreateWithFlags(&cs, cudaStreamNonBlocking));
	s->impl = cs;
	return 0;
}

static void cuda_stream_destroy(struct zn_stream *s)
{
	cudaSetDevice(s->dev->ordinal);
	cudaError_t e = cudaStreamSynchronize(stream_of(s));
	if (e != cudaSuccess)
		zn_warn("device %s: stream \"%s\" at destroy: %s", s->dev->name, s->name,
			cudaGetErrorString(e));
	cudaStreamDestroy(stream_of(s));
}

static int cuda_stream_synchronize(struct zn_stream *s)
{
	ZN_CUDA(cudaStreamSynchronize(stream_of(s)));
	return 0;
}

static int cuda_stream_query(struct zn_stream *s)
{
	cudaError_t st = cudaStreamQuery(stream_of(s));
	if (st == cudaErrorNotReady) {
		if (cudaPeekAtLastError() == cudaErrorNotReady)
			(void)cudaGetLastError(); /* see cuda_event_query */
		return -EBUSY;
	}
	ZN_CUDA(st);
	return 0;
}

/* cudaLaunchHostFunc takes void (*)(void *): carry the zinc function and
 * its stream (for the sticky error) in a heap record the callback frees. */
struct host_call {
	zn_device_host_fn fn;
	void *arg;
	struct zn_stream *s;
};

static void CUDART_CB host_trampoline(void *p)
{
	struct host_call hc = *(struct host_call *)p;
	free(p);
	int rc = hc.fn(hc.arg);
	if (rc != 0)
		zn_stream_fail(hc.s, rc);
}

static int cuda_launch_host(struct zn_stream *s, zn_device_host_fn fn, void *arg)
{
	struct host_call *hc = malloc(sizeof(*hc));
	if (!hc)
		return zn_error(-ENOMEM, "stream \"%s\": out of host memory for a host function",
				s->name);
	hc->fn = fn;
	hc->arg = arg;
	hc->s = s;
	cudaError_t e = cudaLaunchHostFunc(stream_of(s), host_trampoline, hc);
	if (e != cudaSuccess) {
		free(hc);
		return zn_cuda_status(e, ZN_CUDA_WHO,
				      "cudaLaunchHostFunc(stream, host_trampoline, hc)", __FILE__,
				      __LINE__);
	}
	return 0;
}

static int cuda_event_create(struct zn_event *e)
{
	cudaEvent_t ev = NULL;
	ZN_CUDA(cudaSetDevice(e->dev->ordinal));
	ZN_CUDA(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
	e->impl = ev;
	return 0;
}

static void cuda_event_destroy(struct zn_event *e)
{
	cudaEventDestroy((cudaEvent_t)e->impl);
}

static int cuda_event_record(struct zn_event *e, struct zn_stream *s)
{
	ZN_CUDA(cudaEventRecord((cudaEvent_t)e->impl, stream_of(s)));
	return 0;
}

static int cuda_stream_wait_event(struct zn_stream *s, struct zn_event *e)
{
	ZN_CUDA(cudaStreamWaitEvent(stream_of(s), (cudaEvent_t)e->impl, 0));
	return 0;
}

static int cuda_event_synchronize(struct zn_event *e)
{
	ZN_CUDA(cudaEventSynchronize((cudaEvent_t)e->impl));
	return 0;
}

static int cuda_event_query(struct zn_event *e)
{
	cudaError_t st = cudaEventQuery((cudaEvent_t)e->impl);
	if (st == cudaErrorNotReady) {
		/* Not an error: no message.  Clear it from the runtime's
		 * last-error slot in case it was left there, so a later
		 * cudaGetLastError after a kernel launch does not see it. */
		if (cudaPeekAtLastError() == cudaErrorNotReady)
			(void)cudaGetLastError();
		return -EBUSY;
	}
	ZN_CUDA(st);
	return 0;
}

static void cuda_kernels_params(struct zn_device *dev, struct zn_stream *s,
				struct zn_kernels_params *p)
{
	p->cuda_stream = stream_of(s);
	p->cuda_device = dev->ordinal;
}

const struct zn_device_ops zn_device_cuda_ops = {
	.kind = "cuda",
	.host_accessible = false,
	.open = cuda_open,
	.close = cuda_close,
	.mem_alloc = cuda_mem_alloc,
	.mem_free = cuda_mem_free,
	.memset = cuda_memset,
	.copy = cuda_copy,
	.host_register = cuda_host_register,
	.host_unregister = cuda_host_unregister,
	.stream_create = cuda_stream_create,
	.stream_destroy = cuda_stream_destroy,
	.stream_synchronize = cuda_stream_synchronize,
	.stream_query = cuda_stream_query,
	.launch_host = cuda_launch_host,
	.event_create = cuda_event_create,
	.event_destroy = cuda_event_destroy,
	.event_record = cuda_event_record,
	.stream_wait_event = cuda_stream_wait_event,
	.event_synchronize = cuda_event_synchronize,
	.event_query = cuda_event_query,
	.kernels_params = cuda_kernels_params,
};
