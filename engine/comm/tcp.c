/* The "tcp" comm backend: CPU ranks over TCP sockets, for processes started
 * by torchrun or DeepSpeed's launcher (no MPI).  POSIX sockets only.
 *
 * This file owns the launcher's environment, as torchrun sets it (RANK,
 * WORLD_SIZE, MASTER_ADDR, MASTER_PORT; LOCAL_RANK, else the rank, and
 * LOCAL_WORLD_SIZE when given), open, close and the ops table.  The rest:
 *
 *   tcp_rendezvous.c  connecting the ranks: rank 0 listens on MASTER_PORT,
 *                     every other rank checks in there and receives the
 *                     table of every rank's address, then every pair of
 *                     ranks connects once;
 *   tcp_exchange.c    a collective's bytes: one poll loop over every
 *                     peer's link, each message framed with its tag;
 *   tcp_socket.c      the socket calls both make, bounded by a deadline.
 *
 * tcp.h holds what the files share. */
#include "zn_build.h"

#include "comm/tcp.h"

#include <stdlib.h>
#include <unistd.h>

/* FNV-1a, 64 bits: the launcher's run id as a number for the hello. */
static uint64_t hash_str(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
	return h;
}

/* ---- environment --------------------------------------------------------- */

static int env_error(int rc, const char *name, const char *want)
{
	if (rc == -ENOENT)
		return zn_error(-EINVAL, "comm tcp: %s is not set: set it to %s, as torchrun and "
				"the DeepSpeed launcher do", name, want);
	return zn_error(-EINVAL, "comm tcp: %s=\"%s\" is not valid: set it to %s", name,
			getenv(name), want);
}

/* RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT. */
static int read_env(struct zn_comm *c, struct tcp_impl *t)
{
	long rank, size, lr, lws, port;
	int rc;

	rc = zn_comm_env_long("WORLD_SIZE", 1, 65536, &size);
	if (rc)
		return env_error(rc, "WORLD_SIZE", "the number of ranks (1 ... 65536)");
	rc = zn_comm_env_long("RANK", 0, size - 1, &rank);
	if (rc)
		return env_error(rc, "RANK", "this process's rank, 0 ... WORLD_SIZE - 1");
	c->rank = (int)rank;
	c->size = (int)size;
	c->local_rank = (int)rank;
	rc = zn_comm_env_long("LOCAL_WORLD_SIZE", 1, size, &lws);
	if (rc == -EINVAL)
		return env_error(rc, "LOCAL_WORLD_SIZE",
				 "the number of ranks on this node (1 ... WORLD_SIZE), or unset it");
	rc = zn_comm_env_long("LOCAL_RANK", 0, rc == 0 ? lws - 1 : size - 1, &lr);
	if (rc == -EINVAL)
		return env_error(rc, "LOCAL_RANK", "this process's rank on its node, 0 ... "
				 "LOCAL_WORLD_SIZE - 1 (or WORLD_SIZE - 1), or unset it");
	if (rc == 0)
		c->local_rank = (int)lr;
	if (size == 1)
		return 0; /* nothing to connect */

	const char *addr = getenv("MASTER_ADDR");
	if (!addr || !*addr)
		return env_error(-ENOENT, "MASTER_ADDR",
				 "rank 0's host name or address (127.0.0.1 on one node)");
	rc = zn_comm_env_long("MASTER_PORT", 1, 65535, &port);
	if (rc)
		return env_error(rc, "MASTER_PORT", "a free TCP port on rank 0's host, the same on "
				 "every rank (1 ... 65535; torchrun's default is 29500)");
	t->master_addr = addr;
	t->master_port = getenv("MASTER_PORT");
	t->port = (int)port;
	const char *run = getenv("TORCHELASTIC_RUN_ID");
	t->run = run && *run ? hash_str(run) : 0;
	return 0;
}

static void tcp_close(struct zn_comm *c)
{
	struct tcp_impl *t = c->impl;
	if (!t)
		return;
	if (t->listen_fd >= 0)
		close(t->listen_fd);
	for (int p = 0; t->fd && p < c->size; p++)
		if (t->fd[p] >= 0)
			zn_tcp_close_link(t->fd[p]);
	free(t->fd);
	free(t);
	c->impl = NULL;
}

static int tcp_open(struct zn_comm *c)
{
	struct tcp_impl *t = calloc(1, sizeof(*t));
	if (!t)
		return zn_error(-ENOMEM, "comm tcp: out of host memory");
	t->listen_fd = -1;
	c->impl = t; /* on failure below, the worker calls tcp_close */
	int rc = read_env(c, t);
	if (rc || c->size == 1)
		return rc;
	t->fd = malloc((size_t)c->size * sizeof(*t->fd));
	if (!t->fd)
		return zn_error(-ENOMEM, "comm tcp: out of host memory for %d ranks", c->size);
	for (int p = 0; p < c->size; p++)
		t->fd[p] = -1;
	return zn_tcp_rendezvous(c, t);
}

const struct zn_comm_ops zn_comm_tcp_ops = {
	.name = "tcp",
	.open = tcp_open,
	.close = tcp_close,
	.exchange = zn_tcp_exchange,
};
