/* zinc — communication between ranks: collectives on host buffers, or on
 * device buffers with the nccl backend.
 *
 * One API, four backends (an ops table chosen once, when the comm is
 * opened):
 *
 *   "self"  one rank.  Every collective is a copy (or nothing); useful so
 *           that the engine has one code path for one and many ranks.
 *   "tcp"   CPU ranks over TCP sockets, launched by torchrun or the
 *           DeepSpeed launcher (their environment variables, below).
 *           Always built.
 *   "mpi"   CPU ranks over MPI (Open MPI), launched with mpirun.  Present
 *           when zinc was built with MPI (meson option mpi).
 *   "nccl"  GPU ranks: the collectives take device pointers and move them
 *           with NCCL.  Opened by zn_comm_create_nccl over a "mpi" or "tcp"
 *           comm (the bootstrap, which hands NCCL's unique id from rank 0 to
 *           every process on every node).  Present when zinc was built with
 *           CUDA and NCCL (meson option nccl).
 *
 * Rank order and reproducibility.  Every reduction sums in rank order,
 * element by element: out = ((x_0 + x_1) + x_2) + ... + x_{size-1}, where
 * x_r is rank r's value, whatever the backend, the transport or the
 * timing.  MPI_Allreduce does not promise this (its algorithm, and so the
 * order of the additions, depends on the message size, the number of ranks
 * and the library's tuning), and floating-point addition is not
 * associative: ZeRO stages must give the same bits from one run to the next
 * and, where the order allows, the same bits as one rank.  The backends
 * therefore only move bytes, point to point, and zinc adds locally.
 * fp16 and bf16 values are summed in fp32 and rounded (nearest even) once
 * at the end; int32 and uint8 sums wrap around (modulo 2^32, 2^8).  The
 * nccl backend is no exception: NCCL's ring and tree reductions do not
 * promise an order either, so it moves the bytes with ncclSend/ncclRecv and
 * adds in rank order with zinc's own kernel; its results are the host
 * backends' bits.
 *
 * Threads.  Every comm has one worker thread, and every operation (the
 * blocking ones too) runs on it, in the order it was enqueued (FIFO).  The
 * blocking calls enqueue and wait; the _async calls return at once with an
 * op handle to pass to zn_comm_wait, so the caller can compute while the
 * bytes move.  All ranks must issue the same collectives in the same order.
 * The mpi backend initialises MPI on that worker thread with
 * MPI_THREAD_FUNNELED and makes every MPI call there (MPI_Finalize too):
 * the application may be multi-threaded, zinc needs no MPI_THREAD_MULTIPLE,
 * which Open MPI builds do not always provide or make fast.
 *
 * The tcp backend.  Rank 0 listens on MASTER_PORT; every other rank
 * connects to MASTER_ADDR:MASTER_PORT, retrying until the rendezvous
 * timeout (so ranks may start in any order), and rank 0 sends each the
 * others' addresses; then every pair of ranks has one TCP connection.
 * Every handshake carries a magic number, a version, WORLD_SIZE and a job
 * id: a connection that does not fit (another program, another version,
 * WORLD_SIZE or job) is refused and logged as a warning, and a refused
 * rank fails saying why.  Every message carries its collective's tag and
 * length.
 *
 * Buffers: host memory, except with nccl: device memory of the comm's CUDA
 * device (cudaMalloc, or zn_device_alloc on that "cuda" device), whose
 * contents must be ready when the operation is enqueued (synchronize the
 * stream that wrote them first: the comm works on a stream of its own).
 * The caller must not touch a buffer that an enqueued operation uses until
 * zn_comm_wait has returned for it; by then its device work has completed.
 * The nccl backend keeps one device scratch buffer as large as the largest
 * reduction has needed (size x the chunk: about n elements for an
 * all_reduce of n, size x n_per_rank for a reduce_scatter) until the comm
 * is destroyed.
 *
 * Timeouts and failures.  A collective that has not completed `timeout`
 * seconds after it started on the worker thread (default
 * ZINC_COMM_TIMEOUT when set, else ZN_COMM_TIMEOUT_DEFAULT) fails with
 * -ETIMEDOUT and a message naming the operation and the ranks whose data
 * never arrived, instead of hanging; the tcp rendezvous in zn_comm_create
 * waits as long.  With tcp, a peer that closed its connection (its process
 * exited) fails the collective with -EPIPE naming that rank, and a message
 * from a rank out of step (another collective or another size) with
 * -EPROTO naming the peer and both tags or sizes.  After any failure the
 * comm is unusable (the ranks disagree about which messages belong to
 * which collective): every later collective fails with -EPIPE; destroy it.
 * A send can complete before its receiver posts a receive (MPI and TCP
 * buffer small messages), so the rank that is waiting for data is the one
 * that reports the timeout.  With nccl the communicator is nonblocking:
 * zinc polls it and its stream until the deadline, then aborts it
 * (ncclCommAbort) and fails with -ETIMEDOUT; NCCL does not say which peer
 * is missing, so the message names every rank the collective waited for.
 * NCCL has no tags: ranks out of step are not told apart (-EPROTO) but
 * hang until the timeout, or exchange the wrong bytes when the sizes agree.
 *
 * Errors: every fallible call returns 0 or a negative errno and sets
 * zn_last_error() on the calling thread (for an _async op, the thread that
 * calls zn_comm_wait); zn_comm_create returns NULL.
 */
#ifndef ZINC_COMM_H
#define ZINC_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "zinc/common.h"
#include "zinc/dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

struct zn_comm;
struct zn_comm_op;

/* Seconds a collective may take before it fails with -ETIMEDOUT. */
#define ZN_COMM_TIMEOUT_DEFAULT 300.0

enum zn_comm_redop {
	ZN_COMM_SUM = 0,
	ZN_COMM_MAX = 1, /* NaN wins: a NaN on any rank gives NaN (inf/nan checks) */
	ZN_COMM_REDOP_COUNT
};

/* Open a comm.  backend: "self", "tcp", "mpi", or NULL for automatic:
 * "mpi" when the process was launched by mpirun (OMPI_COMM_WORLD_SIZE is
 * set) and zinc was built with MPI, else "tcp" when WORLD_SIZE > 1 and
 * MASTER_ADDR is set (torchrun, the DeepSpeed launcher), else "self".
 *
 * Launcher variables: RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
 * MASTER_ADDR and MASTER_PORT (torchrun, the DeepSpeed launcher) and
 * OMPI_COMM_WORLD_SIZE (mpirun).  With "self", a launcher that asked for
 * more than one rank is an error (each process would train alone).  With
 * "tcp" they are the values: RANK and WORLD_SIZE are required, MASTER_ADDR
 * and MASTER_PORT too when WORLD_SIZE > 1, the local rank is LOCAL_RANK
 * (else the rank), and LOCAL_WORLD_SIZE, when set, bounds LOCAL_RANK.  With
 * "mpi" the MPI values are authoritative; launcher variables that disagree
 * with them are logged as a warning.  ZINC_COMM_TIMEOUT (seconds, > 0)
 * replaces ZN_COMM_TIMEOUT_DEFAULT for the comm's collectives and the tcp
 * rendezvous.
 *
 * Returns NULL and sets the last error for an unknown backend (-EINVAL), a
 * zinc built without MPI, an MPI that cannot start, a missing or invalid
 * variable (the message names it and what to set), a tcp rendezvous that
 * fails or times out, or no memory. */
ZN_API struct zn_comm *zn_comm_create(const char *backend);

/* Open a "nccl" comm: the same collectives on device buffers of CUDA device
 * `device` (an ordinal of this process, usually zn_comm_local_rank of the
 * bootstrap), one rank per GPU.
 *
 * bootstrap: an open "mpi" or "tcp" comm (or "self" for one rank), used
 * only during this call and still the caller's afterwards (it may be
 * destroyed or kept for host collectives); no other thread may use it
 * during the call.  Every rank calls this together: rank 0 creates NCCL's
 * unique id and broadcasts it over the bootstrap, every rank reports over
 * the bootstrap whether it can take part, and then NCCL opens its
 * communicator.  The comm's rank, size and local rank are the bootstrap's.
 * Its timeout (ZINC_COMM_TIMEOUT, else ZN_COMM_TIMEOUT_DEFAULT) bounds
 * NCCL's set-up as well.
 *
 * Returns NULL and sets the last error for a NULL bootstrap or one whose
 * buffers are not host memory, a zinc built without NCCL (-ENOTSUP), no
 * such CUDA device, a failure on any rank (the message names the ranks and,
 * on the failing rank, the CUDA or NCCL call, file and line), a set-up
 * past the timeout, or no memory. */
ZN_API struct zn_comm *zn_comm_create_nccl(struct zn_comm *bootstrap, int device);

/* Wait for every enqueued operation, shut the backend down (the mpi backend
 * finalizes MPI, which then cannot be initialised again in this process) and
 * free the comm.  NULL is a no-op.  Ops not yet waited for are freed. */
ZN_API void zn_comm_destroy(struct zn_comm *c);

/* "self", "tcp", "mpi" or "nccl". */
ZN_API const char *zn_comm_backend(const struct zn_comm *c);
/* This process's rank, 0 <= rank < size. */
ZN_API int zn_comm_rank(const struct zn_comm *c);
/* The number of ranks. */
ZN_API int zn_comm_size(const struct zn_comm *c);
/* This process's rank among the ranks on its node (selects its GPU): MPI's
 * for "mpi", LOCAL_RANK (else the rank) for "tcp" and "self", the
 * bootstrap's for "nccl". */
ZN_API int zn_comm_local_rank(const struct zn_comm *c);

struct zn_trace;
/* Record one span per operation as the comm's thread runs it (category
 * "comm-op", named after the operation, track "comm thread") into `trace`
 * (include/zinc/trace.h; NULL stops).  The trace must outlive the comm or
 * be unset first.  Set from any thread. */
ZN_API void zn_comm_set_trace(struct zn_comm *c, struct zn_trace *trace);

/* Set the timeout of collectives enqueued from now on, in seconds (> 0,
 * finite).  Returns 0 or -EINVAL. */
ZN_API int zn_comm_set_timeout(struct zn_comm *c, double seconds);

/* Every collective takes any dtype of zinc/dtype.h (-EINVAL for an unknown
 * value); n and n_per_rank count elements of it.
 *
 * buf: n elements of dtype on every rank; on return every rank holds the
 * elementwise reduction over ranks, in rank order (see above). */
ZN_API int zn_comm_all_reduce(struct zn_comm *c, void *buf, size_t n, enum zn_dtype dtype,
			      enum zn_comm_redop op);
/* send: size * n_per_rank elements; recv: n_per_rank elements.  Rank r
 * receives the sum, in rank order, of every rank's chunk r
 * (send[r * n_per_rank ...]).  send and recv must not overlap. */
ZN_API int zn_comm_reduce_scatter(struct zn_comm *c, const void *send, void *recv,
				  size_t n_per_rank, enum zn_dtype dtype);
/* send: n_per_rank elements; recv: size * n_per_rank elements, rank r's
 * send at recv[r * n_per_rank ...].  send may be that slot of recv itself
 * (in place); otherwise they must not overlap. */
ZN_API int zn_comm_all_gather(struct zn_comm *c, const void *send, void *recv, size_t n_per_rank,
			      enum zn_dtype dtype);
/* Copy `bytes` bytes from rank root's buf into every rank's buf. */
ZN_API int zn_comm_broadcast(struct zn_comm *c, void *buf, size_t bytes, int root);
/* Return once every rank has entered the barrier. */
ZN_API int zn_comm_barrier(struct zn_comm *c);

/* The same operations, enqueued: on success *op is a handle that must be
 * passed to zn_comm_wait exactly once.  Argument errors are returned at
 * once (and *op is NULL); failures while running are returned by
 * zn_comm_wait. */
ZN_API int zn_comm_all_reduce_async(struct zn_comm *c, void *buf, size_t n,
				    enum zn_dtype dtype, enum zn_comm_redop redop,
				    struct zn_comm_op **op);
ZN_API int zn_comm_reduce_scatter_async(struct zn_comm *c, const void *send, void *recv,
					size_t n_per_rank, enum zn_dtype dtype,
					struct zn_comm_op **op);
ZN_API int zn_comm_all_gather_async(struct zn_comm *c, const void *send, void *recv,
				    size_t n_per_rank, enum zn_dtype dtype,
				    struct zn_comm_op **op);
ZN_API int zn_comm_broadcast_async(struct zn_comm *c, void *buf, size_t bytes, int root,
				   struct zn_comm_op **op);
ZN_API int zn_comm_barrier_async(struct zn_comm *c, struct zn_comm_op **op);

/* Wait for an enqueued operation, free the handle and return its result
 * (0 or -errno, with its message as the calling thread's last error). */
ZN_API int zn_comm_wait(struct zn_comm_op *op);

#ifdef __cplusplus
}
#endif
#endif
