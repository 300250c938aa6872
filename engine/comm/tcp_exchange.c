/* The tcp backend's exchange (zn_comm_ops.exchange): one collective's
 * bytes to and from every peer.
 *
 * Every link is nonblocking with TCP_NODELAY; one poll loop moves the
 * bytes to and from every peer at once, so no order of sends and receives
 * can deadlock, and large messages are streamed straight from and into
 * the caller's buffers.  Every message is framed (marker, tag, bytes) so
 * that ranks out of step are detected (-EPROTO) instead of mixing one
 * collective's bytes into another's.  A message of zero bytes is not sent.
 *
 * A frame header (FRAME_BYTES) is the marker and the tag (u32 each; the
 * tag is the collective's sequence number mod 2^15), then the payload's
 * length in bytes (u64), little-endian.  The handshake's VERSION (tcp_rendezvous.c)
 * covers this format too. */
#include "comm/tcp.h"

#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#define FRAME_MARK 0x5a4e4652u /* "ZNFR": starts every frame header */
#define FRAME_BYTES 16         /* mark, tag: u32; bytes: u64 */

/* One peer's progress in an exchange. */
struct flow {
	uint8_t out_hdr[FRAME_BYTES], in_hdr[FRAME_BYTES];
	size_t out_done, in_done; /* bytes, frame header included */
	bool sending, receiving;
	bool closed; /* the peer closed its end (it exited?) */
};

/* The peers whose flow has `receiving` (or `sending`) set. */
static void list_peers(const struct zn_comm *c, const struct flow *f, bool recv_side,
		       struct zn_comm_ranks *r)
{
	for (int p = 0; p < c->size; p++)
		if (p != c->rank && (recv_side ? f[p].receiving : f[p].sending))
			zn_comm_ranks_add(r, "", p);
}

/* Receive what is there from peer p.  0 (progress or none), 1 when the peer
 * closed the connection, or -errno with the message set. */
static int pull(struct zn_comm *c, const struct zn_comm_xfer *x, struct flow *f, int p, int tag,
		const char *what)
{
	int fd = ((struct tcp_impl *)c->impl)->fd[p];

	while (f->receiving) {
		ssize_t n;
		if (f->in_done < FRAME_BYTES)
			n = recv(fd, f->in_hdr + f->in_done, FRAME_BYTES - f->in_done, 0);
		else
			n = recv(fd, (uint8_t *)x->recv + (f->in_done - FRAME_BYTES),
				 x->recv_bytes - (f->in_done - FRAME_BYTES), 0);
		if (n == 0)
			return 1;
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
				return 0;
			if (errno == ECONNRESET)
				return 1;
			return zn_error(-errno, "comm tcp: %s on rank %d: receiving from rank %d: %s",
					what, c->rank, p, strerror(errno));
		}
		const bool header_was_partial = f->in_done < FRAME_BYTES;
		f->in_done += (size_t)n;
		if (header_was_partial && f->in_done == FRAME_BYTES) {
			const uint32_t mark = get32(f->in_hdr), got_tag = get32(f->in_hdr + 4);
			const uint64_t bytes = get64(f->in_hdr + 8);
			if (mark != FRAME_MARK)
				return zn_error(-EPROTO, "comm tcp: %s on rank %d: the stream from rank %d "
						"is corrupt (frame marker 0x%08x, want 0x%08x): the comm is "
						"unusable", what, c->rank, p, mark, FRAME_MARK);
			if (got_tag != (uint32_t)tag)
				return zn_error(-EPROTO, "comm tcp: %s on rank %d (tag %d) received a "
						"message tagged %u from rank %d: the ranks are out of "
						"step (every rank must issue the same collectives in the "
						"same order)", what, c->rank, tag, got_tag, p);
			if (bytes != x->recv_bytes)
				return zn_error(-EPROTO, "comm tcp: %s on rank %d (tag %d): rank %d sent "
						"%llu bytes, this rank expects %zu: the ranks called %s "
						"with different sizes", what, c->rank, tag, p,
						(unsigned long long)bytes, x->recv_bytes, what);
		}
		if (f->in_done == FRAME_BYTES + x->recv_bytes)
			f->receiving = false;
	}
	return 0;
}

/* Send what the socket takes to peer p: the header and the payload in one
 * sendmsg while the header is not out.  0, 1 (closed) or -errno. */
static int push(struct zn_comm *c, const struct zn_comm_xfer *x, struct flow *f, int p,
		const char *what)
{
	int fd = ((struct tcp_impl *)c->impl)->fd[p];

	while (f->sending) {
		struct iovec iov[2];
		int n_iov = 0;
		if (f->out_done < FRAME_BYTES)
			iov[n_iov++] = (struct iovec){ f->out_hdr + f->out_done,
						       FRAME_BYTES - f->out_done };
		const size_t off = f->out_done < FRAME_BYTES ? 0 : f->out_done - FRAME_BYTES;
		iov[n_iov++] = (struct iovec){ (uint8_t *)x->send + off, x->send_bytes - off };
		struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)n_iov };
		ssize_t n = sendmsg(fd, &mh, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
				return 0;
			if (errno == EPIPE || errno == ECONNRESET)
				return 1;
			return zn_error(-errno, "comm tcp: %s on rank %d: sending to rank %d: %s", what,
					c->rank, p, strerror(errno));
		}
		f->out_done += (size_t)n;
		if (f->out_done == FRAME_BYTES + x->send_bytes)
			f->sending = false;
	}
	return 0;
}

int zn_tcp_exchange(struct zn_comm *c, const struct zn_comm_xfer *x, int tag, uint64_t deadline_ns,
		    const char *what)
{
	struct flow *f = calloc((size_t)c->size, sizeof(*f));
	struct pollfd *pfd = calloc((size_t)c->size, sizeof(*pfd));
	const struct tcp_impl *t = c->impl;
	const uint64_t start = zn_now_ns();
	int rc = 0, active = 0;

	if (!f || !pfd) {
		free(f);
		free(pfd);
		return zn_error(-ENOMEM, "comm tcp: %s: out of host memory for %d ranks", what, c->size);
	}
	for (int p = 0; p < c->size; p++) {
		if (p == c->rank)
			continue;
		f[p].sending = x[p].send_bytes > 0;
		f[p].receiving = x[p].recv_bytes > 0;
		put32(f[p].out_hdr, FRAME_MARK);
		put32(f[p].out_hdr + 4, (uint32_t)tag);
		put64(f[p].out_hdr + 8, x[p].send_bytes);
		active += f[p].sending || f[p].receiving;
	}
	for (bool first = true; active > 0; first = false) {
		for (int p = 0; p < c->size; p++) {
			short ev = (short)((f[p].receiving ? POLLIN : 0) | (f[p].sending ? POLLOUT : 0));
			pfd[p] = (struct pollfd){ .fd = ev ? t->fd[p] : -1, .events = ev,
						  .revents = first ? ev : 0 };
		}
		const int ms = zn_tcp_ms_until(deadline_ns);
		if (ms == 0) {
			/* The peers whose data did not arrive; failing that, those
			 * that took none of ours (they are not reading). */
			struct zn_comm_ranks late = { 0 };
			list_peers(c, f, true, &late);
			if (late.count == 0)
				list_peers(c, f, false, &late);
			rc = zn_error(-ETIMEDOUT, "comm tcp: %s on rank %d timed out (waited %.3g s for "
				      "its messages): rank%s %s did not take part (every rank must "
				      "issue the same collectives in the same order; raise the timeout "
				      "with zn_comm_set_timeout if they are only slow)", what, c->rank,
				      (double)(deadline_ns - start) / 1e9, late.count > 1 ? "s" : "",
				      late.count ? late.text : "(unknown)");
			break;
		}
		/* The first round tries every peer without waiting: the sockets
		 * usually take a small message at once. */
		if (!first && poll(pfd, (nfds_t)c->size, ms) < 0) {
			if (errno == EINTR)
				continue;
			rc = zn_error(-errno, "comm tcp: %s on rank %d: poll: %s", what, c->rank,
				      strerror(errno));
			break;
		}
		/* Every peer that closed in this round is named, not only the
		 * first: when one rank dies, the others may close after their own
		 * failure, and the dead one is the rank to look at. */
		int closed = 0;
		for (int p = 0; p < c->size && !rc; p++) {
			if (!pfd[p].revents)
				continue;
			const bool was_active = f[p].sending || f[p].receiving;
			/* Send first: a rank that finds the ranks out of step in what
			 * it receives has then already sent what shows the peer the
			 * same. */
			int e = 0;
			if (f[p].sending)
				e = push(c, &x[p], &f[p], p, what);
			if (e == 0 && f[p].receiving)
				e = pull(c, &x[p], &f[p], p, tag, what);
			if (e == 0 && (pfd[p].revents & (POLLERR | POLLHUP)) &&
			    (f[p].sending || f[p].receiving))
				e = 1; /* the socket can make no more progress */
			if (e < 0)
				rc = e;
			else if (e == 1)
				closed += f[p].closed = true;
			else if (was_active && !f[p].sending && !f[p].receiving)
				active--;
		}
		if (!rc && closed) {
			struct zn_comm_ranks gone = { 0 };
			for (int p = 0; p < c->size; p++)
				if (f[p].closed)
					zn_comm_ranks_add(&gone, "", p);
			const bool many = closed > 1;
			rc = zn_error(-EPIPE, "comm tcp: %s on rank %d: rank%s %s closed %s "
				      "connection%s (did %s exit?): the comm is unusable; look for "
				      "%s own error", what, c->rank, many ? "s" : "", gone.text,
				      many ? "their" : "its", many ? "s" : "", many ? "they" : "it",
				      many ? "their" : "its");
		}
		if (rc)
			break;
	}
	free(f);
	free(pfd);
	return rc;
}
