/* Communication's public entry points (include/zinc/comm.h): the choice
 * of a backend from the launcher's environment (zn_comm_create), the
 * comm's rank and size, and the collectives' argument checks, shared by
 * the blocking calls and the _async ones; and the two helpers lent to the
 * backends (comm/internal.h): launcher variables as numbers, and lists of
 * ranks for messages.
 *
 * The rest of the backend-independent half (comm/core.h): worker.c runs
 * every operation on the comm's own thread, in FIFO order; collectives.c
 * builds the collectives from the backends' one primitive, an exchange of
 * byte ranges with every peer (comm/internal.h); reduce.c adds in rank
 * order.  The backends: self.c, tcp*.c, mpi.c and nccl.c. */
#include "zn_build.h"

#include "comm/core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct zn_comm_ops *const backends[] = {
	&zn_comm_self_ops,
	&zn_comm_tcp_ops,
#if ZN_HAVE_MPI
	&zn_comm_mpi_ops,
#endif
};

int zn_comm_env_long(const char *name, long lo, long hi, long *out)
{
	const char *s = getenv(name);
	char *end;

	if (!s || !*s)
		return -ENOENT;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || *end || v < lo || v > hi)
		return -EINVAL;
	*out = v;
	return 0;
}

void zn_comm_ranks_add(struct zn_comm_ranks *r, const char *label, int rank)
{
	/* 16 bytes hold ", ", any int and the NUL: with the label's, a rank
	 * is added whole or not at all. */
	if (r->used + 16 + strlen(label) < sizeof(r->text))
		r->used += (size_t)snprintf(r->text + r->used, sizeof(r->text) - r->used, "%s%s%d",
					    r->count ? ", " : "", label, rank);
	r->count++;
}

/* A launcher variable as a non-negative int; false when unset or not one. */
static bool env_int(const char *name, long *out)
{
	return zn_comm_env_long(name, 0, INT32_MAX, out) == 0;
}

/* mpirun's ranks use MPI; torchrun's and DeepSpeed's (WORLD_SIZE > 1 with
 * MASTER_ADDR) use tcp; anything else is one rank. */
static const char *auto_backend(void)
{
	long ws;
	const char *ma = getenv("MASTER_ADDR");

	if (ZN_HAVE_MPI && getenv("OMPI_COMM_WORLD_SIZE") != NULL)
		return "mpi";
	if (env_int("WORLD_SIZE", &ws) && ws > 1 && ma && *ma)
		return "tcp";
	return "self";
}

struct zn_comm *zn_comm_create(const char *backend)
{
	const char *name = backend ? backend : auto_backend();
	const struct zn_comm_ops *ops = NULL;
	long ws;

	for (size_t i = 0; i < ZN_ARRAY_SIZE(backends); i++)
		if (strcmp(backends[i]->name, name) == 0)
			ops = backends[i];
	if (!ops) {
		if (strcmp(name, "mpi") == 0)
			zn_set_error("comm backend \"mpi\": this zinc was built without MPI: install "
				     "Open MPI (libopenmpi-dev) and rebuild with -Dmpi=enabled");
		else if (strcmp(name, "nccl") == 0)
			zn_set_error("comm backend \"nccl\" needs a bootstrap comm and a CUDA device: "
				     "open it with zn_comm_create_nccl(bootstrap, device), bootstrap "
				     "being a \"mpi\" or \"tcp\" comm");
		else
			zn_set_error("comm backend \"%s\" is unknown: use \"self\", \"tcp\"%s or "
				     "none for automatic", name, ZN_HAVE_MPI ? ", \"mpi\"" : "");
		return NULL;
	}
	if (ops == &zn_comm_self_ops) {
		if (env_int("OMPI_COMM_WORLD_SIZE", &ws) && ws > 1) {
			zn_set_error("comm: mpirun started %ld ranks (OMPI_COMM_WORLD_SIZE) but the comm "
				     "backend is \"self\", so each would train alone: %s", ws,
				     ZN_HAVE_MPI ? "use the \"mpi\" backend"
						 : "rebuild zinc with MPI (-Dmpi=enabled)");
			return NULL;
		}
		if (env_int("WORLD_SIZE", &ws) && ws > 1) {
			zn_set_error("comm: the launcher asked for %ld ranks (WORLD_SIZE) but the comm "
				     "backend is \"self\", which has one: set MASTER_ADDR and "
				     "MASTER_PORT (as torchrun does) for the \"tcp\" backend, launch "
				     "with mpirun%s, or unset WORLD_SIZE", ws,
				     ZN_HAVE_MPI ? " and the \"mpi\" backend" : " (a zinc built with MPI)");
			return NULL;
		}
	}

	struct zn_comm *c = zn_comm_start(ops, NULL);
	if (!c)
		return NULL;
	if (ops != &zn_comm_self_ops) {
		/* The backend's values are authoritative; say when the launcher's
		 * differ (tcp takes them from the launcher: they agree). */
		long v;
		if (env_int("RANK", &v) && v != c->rank)
			zn_warn("comm %s: RANK=%ld but this process is rank %d", name, v, c->rank);
		if (env_int("WORLD_SIZE", &v) && v != c->size)
			zn_warn("comm %s: WORLD_SIZE=%ld but there are %d ranks", name, v, c->size);
		if (env_int("LOCAL_RANK", &v) && v != c->local_rank)
			zn_warn("comm %s: LOCAL_RANK=%ld but this process is local rank %d", name, v,
				c->local_rank);
	} else if (env_int("LOCAL_RANK", &ws)) {
		c->local_rank = (int)ws; /* one rank, but which GPU it uses is the launcher's */
	}
	return c;
}

#if !ZN_HAVE_NCCL
struct zn_comm *zn_comm_create_nccl(struct zn_comm *bootstrap, int device)
{
	(void)bootstrap, (void)device;
	zn_set_error("comm nccl: this zinc was built without NCCL: install NCCL (nccl.h and "
		     "libnccl, e.g. into the CUDA toolkit) and rebuild with -Dnccl=enabled");
	return NULL;
}
#endif

const char *zn_comm_backend(const struct zn_comm *c)
{
	return c->ops->name;
}

int zn_comm_rank(const struct zn_comm *c)
{
	return c->rank;
}

int zn_comm_size(const struct zn_comm *c)
{
	return c->size;
}

int zn_comm_local_rank(const struct zn_comm *c)
{
	return c->local_rank;
}

/* ---- argument checks, shared by the blocking and the _async calls -------- */

static int check_dtype(const char *what, enum zn_dtype dt)
{
	if ((unsigned)dt >= ZN_DTYPE_COUNT)
		return zn_error(-EINVAL, "comm %s: dtype %d is unknown", what, (int)dt);
	return 0;
}

static int check_buf(const char *what, const char *name, const void *p, size_t n)
{
	if (!p && n)
		return zn_error(-EINVAL, "comm %s: %s is NULL for %zu elements", what, name, n);
	return 0;
}

int zn_comm_all_reduce_async(struct zn_comm *c, void *buf, size_t n, enum zn_dtype dtype,
			     enum zn_comm_redop redop, struct zn_comm_op **op)
{
	int rc = check_dtype("all_reduce", dtype);
	if (!rc)
		rc = check_buf("all_reduce", "buf", buf, n);
	if (!rc && (unsigned)redop >= ZN_COMM_REDOP_COUNT)
		rc = zn_error(-EINVAL, "comm all_reduce: reduction %d is unknown: use ZN_COMM_SUM "
			      "or ZN_COMM_MAX", (int)redop);
	if (rc) {
		*op = NULL;
		return rc;
	}
	return zn_comm_enqueue(c, &(struct zn_comm_op){ .kind = OP_ALL_REDUCE, .buf = buf, .n = n,
						 .dtype = dtype, .redop = redop }, op);
}

int zn_comm_reduce_scatter_async(struct zn_comm *c, const void *send, void *recv,
				 size_t n_per_rank, enum zn_dtype dtype, struct zn_comm_op **op)
{
	int rc = check_dtype("reduce_scatter", dtype);
	if (!rc)
		rc = check_buf("reduce_scatter", "send", send, n_per_rank);
	if (!rc)
		rc = check_buf("reduce_scatter", "recv", recv, n_per_rank);
	/* One rank's host reduce_scatter is a memmove; device copies must not
	 * overlap. */
	if (!rc && n_per_rank && (c->size > 1 || c->ops->mem)) {
		const size_t es = zn_dtype_size(dtype);
		const char *s = send, *r = recv;
		if (r < s + (size_t)c->size * n_per_rank * es && s < r + n_per_rank * es)
			rc = zn_error(-EINVAL, "comm reduce_scatter: send and recv overlap: use "
				      "separate buffers");
	}
	if (rc) {
		*op = NULL;
		return rc;
	}
	return zn_comm_enqueue(c, &(struct zn_comm_op){ .kind = OP_REDUCE_SCATTER, .send = send,
						 .recv = recv, .n = n_per_rank, .dtype = dtype }, op);
}

int zn_comm_all_gather_async(struct zn_comm *c, const void *send, void *recv, size_t n_per_rank,
			     enum zn_dtype dtype, struct zn_comm_op **op)
{
	int rc = check_dtype("all_gather", dtype);
	if (!rc)
		rc = check_buf("all_gather", "send", send, n_per_rank);
	if (!rc)
		rc = check_buf("all_gather", "recv", recv, n_per_rank);
	if (!rc && n_per_rank) {
		const size_t es = zn_dtype_size(dtype);
		const char *s = send, *r = recv, *slot = r + (size_t)c->rank * n_per_rank * es;
		if (s != slot && s < r + (size_t)c->size * n_per_rank * es && r < s + n_per_rank * es)
			rc = zn_error(-EINVAL, "comm all_gather: send overlaps recv without being this "
				      "rank's slot of it (rank %d): use separate buffers or send "
				      "from the slot", c->rank);
	}
	if (rc) {
		*op = NULL;
		return rc;
	}
	return zn_comm_enqueue(c, &(struct zn_comm_op){ .kind = OP_ALL_GATHER, .send = send, .recv = recv,
						 .n = n_per_rank, .dtype = dtype }, op);
}

int zn_comm_broadcast_async(struct zn_comm *c, void *buf, size_t bytes, int root,
			    struct zn_comm_op **op)
{
	int rc = check_buf("broadcast", "buf", buf, bytes);
	if (!rc && (root < 0 || root >= c->size))
		rc = zn_error(-EINVAL, "comm broadcast: root %d is not a rank (0 ... %d)", root,
			      c->size - 1);
	if (rc) {
		*op = NULL;
		return rc;
	}
	return zn_comm_enqueue(c, &(struct zn_comm_op){ .kind = OP_BROADCAST, .buf = buf, .n = bytes,
						 .root = root }, op);
}

int zn_comm_barrier_async(struct zn_comm *c, struct zn_comm_op **op)
{
	return zn_comm_enqueue(c, &(struct zn_comm_op){ .kind = OP_BARRIER }, op);
}

/* The blocking calls: enqueue behind whatever is in flight, then wait. */
static int blocking(int rc, struct zn_comm_op **op)
{
	return rc ? rc : zn_comm_wait(*op);
}

int zn_comm_all_reduce(struct zn_comm *c, void *buf, size_t n, enum zn_dtype dtype,
		       enum zn_comm_redop redop)
{
	struct zn_comm_op *op;
	return blocking(zn_comm_all_reduce_async(c, buf, n, dtype, redop, &op), &op);
}

int zn_comm_reduce_scatter(struct zn_comm *c, const void *send, void *recv, size_t n_per_rank,
			   enum zn_dtype dtype)
{
	struct zn_comm_op *op;
	return blocking(zn_comm_reduce_scatter_async(c, send, recv, n_per_rank, dtype, &op), &op);
}

int zn_comm_all_gather(struct zn_comm *c, const void *send, void *recv, size_t n_per_rank,
		       enum zn_dtype dtype)
{
	struct zn_comm_op *op;
	return blocking(zn_comm_all_gather_async(c, send, recv, n_per_rank, dtype, &op), &op);
}

int zn_comm_broadcast(struct zn_comm *c, void *buf, size_t bytes, int root)
{
	struct zn_comm_op *op;
	return blocking(zn_comm_broadcast_async(c, buf, bytes, root, &op), &op);
}

int zn_comm_barrier(struct zn_comm *c)
{
	struct zn_comm_op *op;
	return blocking(zn_comm_barrier_async(c, &op), &op);
}
