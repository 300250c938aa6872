/* The tcp backend's socket calls, each bounded by a deadline (zn_now_ns
 * clock): connect, listen, send or receive exactly n bytes, set a link's
 * options, close a link gracefully; and the time helpers they share with
 * the rendezvous and the exchange.  Every socket is nonblocking and
 * close-on-exec; a wait is a poll with what is left of the deadline. */
#include "comm/tcp.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int set_nonblocking(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	return 0;
}

int zn_tcp_ms_until(uint64_t deadline_ns)
{
	const uint64_t now = zn_now_ns();
	if (now >= deadline_ns)
		return 0;
	const uint64_t ms = (deadline_ns - now + 999999) / 1000000;
	return ms > INT_MAX ? INT_MAX : (int)ms;
}

void zn_tcp_sleep_ns(uint64_t ns)
{
	struct timespec ts = { (time_t)(ns / 1000000000u), (long)(ns % 1000000000u) };
	nanosleep(&ts, NULL);
}

/* "host:port" of a socket address, for messages. */
const char *zn_tcp_addr_str(const struct sockaddr *sa, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN] = "?";
	int port = 0;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		port = ntohs(in->sin_port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		port = ntohs(in6->sin6_port);
	}
	snprintf(buf, len, "%s:%d", host, port);
	return buf;
}

int zn_tcp_xfer_all(int fd, void *buf, size_t len, bool out, uint64_t deadline_ns)
{
	uint8_t *p = buf;
	size_t done = 0;

	while (done < len) {
		ssize_t n = out ? send(fd, p + done, len - done, MSG_NOSIGNAL)
				: recv(fd, p + done, len - done, 0);
		if (n > 0) {
			done += (size_t)n;
			continue;
		}
		if (n == 0)
			return -EPIPE;
		if (errno == EPIPE || errno == ECONNRESET)
			return -EPIPE;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		struct pollfd pfd = { .fd = fd, .events = out ? POLLOUT : POLLIN };
		int ms = zn_tcp_ms_until(deadline_ns);
		if (ms == 0)
			return -ETIMEDOUT;
		if (poll(&pfd, 1, ms) < 0 && errno != EINTR)
			return -errno;
	}
	return 0;
}

int zn_tcp_connect_once(const struct sockaddr *sa, socklen_t len, uint64_t deadline_ns)
{
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, sa, len) == 0)
		return fd;
	int err = errno;
	if (err == EINPROGRESS) {
		struct pollfd pfd = { .fd = fd, .events = POLLOUT };
		int n;
		do
			n = poll(&pfd, 1, zn_tcp_ms_until(deadline_ns));
		while (n < 0 && errno == EINTR);
		socklen_t sl = sizeof(err);
		if (n == 0)
			err = ETIMEDOUT;
		else if (n < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl) < 0)
			err = errno;
		if (err == 0)
			return fd;
	}
	close(fd);
	return -err;
}

int zn_tcp_listen_on(int family, int port, const struct sockaddr_storage *bind_to)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int one = 1, zero = 0;

	int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind_to) {
		ss = *bind_to;
		if (family == AF_INET)
			((struct sockaddr_in *)&ss)->sin_port = 0;
		else
			((struct sockaddr_in6 *)&ss)->sin6_port = 0;
	} else {
		memset(&ss, 0, sizeof(ss));
		ss.ss_family = (sa_family_t)family;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (family == AF_INET) {
			((struct sockaddr_in *)&ss)->sin_addr.s_addr = htonl(INADDR_ANY);
			((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)port);
		} else {
			/* IPv4 clients too: MASTER_ADDR may resolve to either. */
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
			((struct sockaddr_in6 *)&ss)->sin6_addr = in6addr_any;
			((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)port);
		}
	}
	len = family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
	if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, SOMAXCONN) < 0) {
		int err = errno;
		close(fd);
		return -err;
	}
	return fd;
}

int zn_tcp_link_options(int fd)
{
	int one = 1;
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
		return -errno;
	return set_nonblocking(fd);
}

void zn_tcp_close_link(int fd)
{
	uint8_t sink[4096];
	shutdown(fd, SHUT_WR);
	while (recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0)
		;
	close(fd);
}
