/* What the tcp comm backend's files share; nothing else includes it.
 *
 *   tcp.c             the launcher's environment, open and close
 *   tcp_rendezvous.c  the handshake that connects every pair of ranks
 *   tcp_socket.c      socket calls bounded by a deadline
 *   tcp_exchange.c    a collective's bytes to and from every peer at once
 *
 * Byte order: every integer on the wire is little-endian, written and read
 * with the put/get helpers below, so that the format does not depend on
 * the host. */
#ifndef ZN_COMM_TCP_H
#define ZN_COMM_TCP_H

#include "comm/internal.h"

#include <sys/socket.h>

struct tcp_impl {
	int *fd;          /* (size): the link to each peer; -1 for this rank */
	int listen_fd;    /* during open only */
	uint64_t job;     /* rank 0's random job id */
	uint64_t run;     /* hash of the launcher's run id, 0 without one */
	const char *master_addr, *master_port; /* the environment's strings */
	int port;
};

static inline void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint32_t get32(const uint8_t *p)
{
	uint32_t v = 0;
	for (int i = 0; i < 4; i++)
		v |= (uint32_t)p[i] << (8 * i);
	return v;
}

static inline uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/* ---- tcp_socket.c -------------------------------------------------------- */

/* Milliseconds from now until deadline_ns (zn_now_ns clock), rounded up;
 * 0 once it has passed. */
int zn_tcp_ms_until(uint64_t deadline_ns);
void zn_tcp_sleep_ns(uint64_t ns);
/* "host:port" of a socket address, for messages. */
const char *zn_tcp_addr_str(const struct sockaddr *sa, char *buf, size_t len);
/* Send or receive exactly `len` bytes on a nonblocking socket before the
 * deadline.  0, -ETIMEDOUT, -EPIPE (the peer closed) or another -errno;
 * the caller writes the message. */
int zn_tcp_xfer_all(int fd, void *buf, size_t len, bool out, uint64_t deadline_ns);
/* One nonblocking connect to `sa`, waited for until the deadline.  Returns
 * the connected socket (nonblocking) or -errno. */
int zn_tcp_connect_once(const struct sockaddr *sa, socklen_t len, uint64_t deadline_ns);
/* A listening socket on the wildcard address of `family` (port > 0, with
 * SO_REUSEADDR so that a port in TIME_WAIT from an earlier job can be
 * taken at once) or on `bind_to` with an ephemeral port.  Returns the
 * socket or -errno. */
int zn_tcp_listen_on(int family, int port, const struct sockaddr_storage *bind_to);
/* The link options of a mesh socket: nonblocking (the exchange polls),
 * no Nagle delay (a barrier is one byte each way).  0 or -errno. */
int zn_tcp_link_options(int fd);
/* Close a link so that the peer reads everything this rank sent, then
 * end-of-file: a socket closed with unread bytes in its receive queue
 * sends a reset instead, and the reset makes the peer's kernel drop the
 * bytes it has not read yet (after a failure, those hold the peer's
 * reason, e.g. a frame whose tag shows the ranks out of step). */
void zn_tcp_close_link(int fd);

/* ---- tcp_rendezvous.c ---------------------------------------------------- */

/* Connect this rank with every other (t->fd[p] for every p != c->rank,
 * links ready for tcp_exchange.c) before c->open_timeout has passed.  0 or
 * -errno with the last error set. */
int zn_tcp_rendezvous(struct zn_comm *c, struct tcp_impl *t);

/* ---- tcp_exchange.c ------------------------------------------------------ */

/* zn_comm_ops.exchange (comm/internal.h). */
int zn_tcp_exchange(struct zn_comm *c, const struct zn_comm_xfer *x, int tag, uint64_t deadline_ns,
		    const char *what);

#endif
