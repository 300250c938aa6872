/* The "tcp" comm backend: CPU ranks over TCP sockets, for processes started
 * by torchrun or DeepSpeed's launcher (no MPI).  POSIX sockets only.
 *
 * Environment, as torchrun sets it: RANK, WORLD_SIZE, MASTER_ADDR,
 * MASTER_PORT; LOCAL_RANK (else the rank) and LOCAL_WORLD_SIZE when given.
 *
 * Rendezvous (in open, on the comm's worker thread, before one deadline):
 *
 *   1. Rank 0 listens on MASTER_PORT (every interface, SO_REUSEADDR, as
 *      torchrun's store does).  Every other rank opens its own listening
 *      socket on an ephemeral port, connects to MASTER_ADDR:MASTER_PORT
 *      (retrying with back-off, so ranks may start in any order) and sends
 *      a hello: magic, version, world size, its rank, its port and a hash
 *      of the launcher's run id (TORCHELASTIC_RUN_ID, when set).
 *   2. Rank 0 refuses what does not fit (another program, another version,
 *      another WORLD_SIZE or run, a rank twice) with a reason the refused
 *      rank reports, and keeps waiting for the right ones.  Once every rank
 *      has checked in it sends each the table of (address, port) of every
 *      rank and a random 64-bit job id.  The connection to rank 0 stays:
 *      it is the link between rank 0 and that rank.
 *   3. Full mesh: every rank r >= 1 connects to every rank above it and
 *      sends a hello with the job id; it accepts the ranks below it (but
 *      0), checks their hellos (a process of another job has another job
 *      id) and answers each.
 *
 * Exchange: every link is nonblocking with TCP_NODELAY; one poll loop moves
 * the bytes to and from every peer at once, so no order of sends and
 * receives can deadlock, and large messages are streamed straight from and
 * into the caller's buffers.  Every message is framed (marker, tag, bytes)
 * so that ranks out of step are detected (-EPROTO) instead of mixing one
 * collective's bytes into another's.  A message of zero bytes is not sent.
 *
 * Byte order: every integer on the wire is little-endian, written and read
 * with put/get helpers, so that the format does not depend on the host. */
#include "zn_build.h"

#include "comm/internal.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAGIC 0x5a4e5443u   /* "ZNTC": every handshake message starts with it */
#define VERSION 1u          /* of the handshake and frame formats */
#define FRAME_MARK 0x5a4e4652u /* "ZNFR": starts every frame header */

enum hello_kind { HELLO_MASTER = 1, HELLO_MESH = 2 };

/* Why a hello was refused; the refused rank turns it into its message. */
enum reply_status {
	REPLY_OK = 0,
	REPLY_VERSION = 1,   /* another handshake version */
	REPLY_WORLD = 2,     /* another WORLD_SIZE */
	REPLY_RUN = 3,       /* another launcher run id */
	REPLY_RANK = 4,      /* a rank this listener does not expect */
	REPLY_DUPLICATE = 5, /* a rank that has already checked in */
	REPLY_JOB = 6,       /* another job id (mesh) */
};

/* Wire sizes (bytes). */
enum {
	HELLO_BYTES = 40, /* magic, version, kind, world, from, to: u32; job: u64; port, 0: u32 */
	REPLY_BYTES = 24, /* magic, version, status, world: u32; job: u64 */
	ENTRY_BYTES = 20, /* family, port: u16; address: 16 bytes (IPv4: the first 4) */
	FRAME_BYTES = 16, /* mark, tag: u32; bytes: u64 */
};

struct hello {
	uint32_t magic, version, kind, world, from, to;
	uint64_t job;
	uint32_t port;
};

struct reply {
	uint32_t magic, version, status, world;
	uint64_t job;
};

/* Where a rank listens for the mesh. */
struct endpoint {
	uint16_t family; /* AF_INET, AF_INET6 */
	uint16_t port;
	uint8_t addr[16];
};

struct tcp_impl {
	int *fd;          /* (size): the link to each peer; -1 for this rank */
	int listen_fd;    /* during open only */
	uint64_t job;     /* rank 0's random job id */
	uint64_t run;     /* hash of the launcher's run id, 0 without one */
	const char *master_addr, *master_port; /* the environment's strings */
	int port;
};

/* ---- wire encoding ------------------------------------------------------- */

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
	uint32_t v = 0;
	for (int i = 0; i < 4; i++)
		v |= (uint32_t)p[i] << (8 * i);
	return v;
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static void hello_encode(uint8_t *b, const struct hello *h)
{
	put32(b, h->magic);
	put32(b + 4, h->version);
	put32(b + 8, h->kind);
	put32(b + 12, h->world);
	put32(b + 16, h->from);
	put32(b + 20, h->to);
	put64(b + 24, h->job);
	put32(b + 32, h->port);
	put32(b + 36, 0);
}

static struct hello hello_decode(const uint8_t *b)
{
	return (struct hello){
		.magic = get32(b), .version = get32(b + 4), .kind = get32(b + 8),
		.world = get32(b + 12), .from = get32(b + 16), .to = get32(b + 20),
		.job = get64(b + 24), .port = get32(b + 32),
	};
}

static void reply_encode(uint8_t *b, const struct reply *r)
{
	put32(b, r->magic);
	put32(b + 4, r->version);
	put32(b + 8, r->status);
	put32(b + 12, r->world);
	put64(b + 16, r->job);
}

static struct reply reply_decode(const uint8_t *b)
{
	return (struct reply){ .magic = get32(b), .version = get32(b + 4), .status = get32(b + 8),
			       .world = get32(b + 12), .job = get64(b + 16) };
}

/* FNV-1a, 64 bits: the launcher's run id as a number for the hello. */
static uint64_t hash_str(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
	return h;
}

/* ---- environment --------------------------------------------------------- */

/* A launcher variable as an integer in [lo, hi]: 0, -ENOENT when unset or
 * empty, -EINVAL when it is not such a number. */
static int env_long(const char *name, long lo, long hi, long *out)
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

	rc = env_long("WORLD_SIZE", 1, 65536, &size);
	if (rc)
		return env_error(rc, "WORLD_SIZE", "the number of ranks (1 ... 65536)");
	rc = env_long("RANK", 0, size - 1, &rank);
	if (rc)
		return env_error(rc, "RANK", "this process's rank, 0 ... WORLD_SIZE - 1");
	c->rank = (int)rank;
	c->size = (int)size;
	c->local_rank = (int)rank;
	rc = env_long("LOCAL_WORLD_SIZE", 1, size, &lws);
	if (rc == -EINVAL)
		return env_error(rc, "LOCAL_WORLD_SIZE",
				 "the number of ranks on this node (1 ... WORLD_SIZE), or unset it");
	rc = env_long("LOCAL_RANK", 0, rc == 0 ? lws - 1 : size - 1, &lr);
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
	rc = env_long("MASTER_PORT", 1, 65535, &port);
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

/* ---- sockets ------------------------------------------------------------- */

static int set_nonblocking(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	return 0;
}

static int ms_until(uint64_t deadline_ns)
{
	const uint64_t now = zn_now_ns();
	if (now >= deadline_ns)
		return 0;
	const uint64_t ms = (deadline_ns - now + 999999) / 1000000;
	return ms > INT_MAX ? INT_MAX : (int)ms;
}

static void sleep_ns(uint64_t ns)
{
	struct timespec ts = { (time_t)(ns / 1000000000u), (long)(ns % 1000000000u) };
	nanosleep(&ts, NULL);
}

/* "host:port" of a socket address, for messages. */
static const char *addr_str(const struct sockaddr *sa, char *buf, size_t len)
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

static struct endpoint endpoint_of(const struct sockaddr_storage *ss, uint16_t port)
{
	struct endpoint e = { .family = (uint16_t)ss->ss_family, .port = port };
	if (ss->ss_family == AF_INET)
		memcpy(e.addr, &((const struct sockaddr_in *)ss)->sin_addr, 4);
	else
		memcpy(e.addr, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
	return e;
}

static socklen_t sockaddr_of(const struct endpoint *e, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (e->family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)ss;
		in->sin_family = AF_INET;
		in->sin_port = htons(e->port);
		memcpy(&in->sin_addr, e->addr, 4);
		return sizeof(*in);
	}
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
	in6->sin6_family = AF_INET6;
	in6->sin6_port = htons(e->port);
	memcpy(&in6->sin6_addr, e->addr, 16);
	return sizeof(*in6);
}

/* Send or receive exactly `len` bytes on a nonblocking socket before the
 * deadline.  0, -ETIMEDOUT, -EPIPE (the peer closed) or another -errno;
 * the caller writes the message. */
static int xfer_all(int fd, void *buf, size_t len, bool out, uint64_t deadline_ns)
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
		int ms = ms_until(deadline_ns);
		if (ms == 0)
			return -ETIMEDOUT;
		if (poll(&pfd, 1, ms) < 0 && errno != EINTR)
			return -errno;
	}
	return 0;
}

/* One nonblocking connect to `sa`, waited for until the deadline.  Returns
 * the connected socket (nonblocking) or -errno. */
static int connect_once(const struct sockaddr *sa, socklen_t len, uint64_t deadline_ns)
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
			n = poll(&pfd, 1, ms_until(deadline_ns));
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

/* A listening socket on the wildcard address of `family` (port > 0, with
 * SO_REUSEADDR so that a port in TIME_WAIT from an earlier job can be
 * taken at once) or on `bind_to` with an ephemeral port.  Returns the
 * socket or -errno. */
static int listen_on(int family, int port, const struct sockaddr_storage *bind_to)
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

/* The link options of a mesh socket: nonblocking (the exchange polls),
 * no Nagle delay (a barrier is one byte each way). */
static int link_options(int fd)
{
	int one = 1;
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
		return -errno;
	return set_nonblocking(fd);
}

/* ---- accepting hellos ---------------------------------------------------- */

/* A connection accepted whose hello is not complete yet. */
struct pending {
	int fd;
	size_t got;
	uint8_t buf[HELLO_BYTES];
	struct sockaddr_storage from;
};

/* What a listener expects: hellos of `kind` from the ranks in [lo, hi)
 * with this world size and job (run hash for the master, job id for the
 * mesh), addressed to rank `to`. */
struct expect {
	enum hello_kind kind;
	int lo, hi, to;
	uint64_t job;
};

#define MAX_PENDING 64 /* connections mid-hello; a flood of strays drops the oldest */

static const char *status_text(uint32_t status)
{
	switch (status) {
	case REPLY_VERSION: return "another handshake version";
	case REPLY_WORLD: return "another WORLD_SIZE";
	case REPLY_RUN: return "another launcher run (TORCHELASTIC_RUN_ID)";
	case REPLY_RANK: return "a rank this listener does not expect";
	case REPLY_DUPLICATE: return "a rank that had already checked in";
	case REPLY_JOB: return "another job";
	default: return "an unknown reason";
	}
}

static void send_reply(int fd, uint32_t status, int world, uint64_t job, uint64_t deadline)
{
	uint8_t b[REPLY_BYTES];
	reply_encode(b, &(struct reply){ .magic = MAGIC, .version = VERSION, .status = status,
					 .world = (uint32_t)world, .job = job });
	(void)xfer_all(fd, b, sizeof(b), true, deadline);
}

/* Judge a complete hello: REPLY_OK, a refusal, or -1 for "not zinc" (no
 * reply).  `why` gets the refusal for messages. */
static int judge(const struct zn_comm *c, const struct expect *e, const int *fd,
		 const struct hello *h, char *why, size_t len)
{
	if (h->magic != MAGIC || h->kind != (uint32_t)e->kind) {
		snprintf(why, len, "it did not start with zinc's handshake (magic 0x%08x kind %u, "
			 "zinc sends 0x%08x kind %d): is another program using this port?",
			 h->magic, h->kind, MAGIC, (int)e->kind);
		return -1;
	}
	if (h->version != VERSION) {
		snprintf(why, len, "it speaks handshake version %u, this zinc %u: run the same "
			 "zinc on every rank", h->version, VERSION);
		return REPLY_VERSION;
	}
	if (h->world != (uint32_t)c->size) {
		snprintf(why, len, "rank %u has WORLD_SIZE=%u, rank %d has %d: launch every rank "
			 "with the same WORLD_SIZE", h->from, h->world, c->rank, c->size);
		return REPLY_WORLD;
	}
	if (h->job != e->job) {
		snprintf(why, len, "rank %u belongs to another %s", h->from,
			 e->kind == HELLO_MASTER ? "launcher run (TORCHELASTIC_RUN_ID differs)"
						 : "job (its job id differs: a process left over "
						   "from an earlier job?)");
		return e->kind == HELLO_MASTER ? REPLY_RUN : REPLY_JOB;
	}
	if (h->from < (uint32_t)e->lo || h->from >= (uint32_t)e->hi || h->to != (uint32_t)e->to) {
		snprintf(why, len, "it says it is rank %u, for rank %u; rank %d expects ranks %d "
			 "... %d here: check RANK", h->from, h->to, c->rank, e->lo, e->hi - 1);
		return REPLY_RANK;
	}
	if (fd[h->from] >= 0) {
		snprintf(why, len, "rank %u has already checked in: two processes have RANK=%u",
			 h->from, h->from);
		return REPLY_DUPLICATE;
	}
	return REPLY_OK;
}

/* Accept on t->listen_fd until every rank in [e->lo, e->hi) has sent a
 * good hello (its socket goes to t->fd[rank], its port to ports[rank] when
 * ports is not NULL), refusing and logging the others.  A good mesh hello
 * is answered at once; rank 0 answers with the table once all are in.
 * Connections are read as their bytes come, so a stray that connects and
 * says nothing holds up no one.  Returns 0, -ETIMEDOUT (no message set;
 * `refused` holds the last refusal for the caller's) or another -errno
 * with its message. */
static int collect(struct zn_comm *c, struct tcp_impl *t, const struct expect *e,
		   uint16_t *ports, uint64_t deadline, char *refused, size_t refused_len)
{
	struct pending *pend = calloc(MAX_PENDING, sizeof(*pend));
	struct pollfd *pfd = calloc(MAX_PENDING + 1, sizeof(*pfd));
	int npend = 0, joined = 0, rc = 0;
	char why[256], peer[64];

	if (!pend || !pfd) {
		free(pend);
		free(pfd);
		return zn_error(-ENOMEM, "comm tcp: out of host memory for the rendezvous");
	}
	for (int r = e->lo; r < e->hi; r++)
		joined += t->fd[r] >= 0;
	while (joined < e->hi - e->lo) {
		pfd[0] = (struct pollfd){ .fd = t->listen_fd, .events = POLLIN };
		for (int i = 0; i < npend; i++)
			pfd[i + 1] = (struct pollfd){ .fd = pend[i].fd, .events = POLLIN };
		int ms = ms_until(deadline);
		if (ms == 0) {
			rc = -ETIMEDOUT;
			break;
		}
		int n = poll(pfd, (nfds_t)npend + 1, ms);
		if (n < 0 && errno != EINTR) {
			rc = zn_error(-errno, "comm tcp: rank %d: poll during the rendezvous: %s",
				      c->rank, strerror(errno));
			break;
		}
		if (n <= 0)
			continue;
		/* Read what the pending connections sent; the loop runs backwards
		 * so that removing entry i keeps the unread ones in place. */
		for (int i = npend - 1; i >= 0; i--) {
			struct pending *p = &pend[i];
			if (!pfd[i + 1].revents)
				continue;
			ssize_t got = recv(p->fd, p->buf + p->got, HELLO_BYTES - p->got, 0);
			if (got < 0 && (errno == EAGAIN || errno == EINTR))
				continue;
			bool drop = got <= 0;
			if (got > 0 && (p->got += (size_t)got) == HELLO_BYTES) {
				struct hello h = hello_decode(p->buf);
				int verdict = judge(c, e, t->fd, &h, why, sizeof(why));
				addr_str((struct sockaddr *)&p->from, peer, sizeof(peer));
				if (verdict == REPLY_OK) {
					t->fd[h.from] = p->fd;
					if (ports)
						ports[h.from] = (uint16_t)h.port;
					if (e->kind == HELLO_MESH)
						send_reply(p->fd, REPLY_OK, c->size, t->job, deadline);
					p->fd = -1;
					joined++;
				} else {
					if (verdict > 0)
						send_reply(p->fd, (uint32_t)verdict, c->size, 0,
							   deadline);
					zn_warn("comm tcp: rank %d refused a connection from %s on "
						"%s: %s", c->rank, peer,
						e->kind == HELLO_MASTER ? "MASTER_PORT"
									: "its mesh port", why);
					snprintf(refused, refused_len, "%s: %s", peer, why);
					drop = true;
				}
			}
			if (drop || p->fd < 0) {
				if (p->fd >= 0)
					close(p->fd);
				pend[i] = pend[--npend];
			}
		}
		if (pfd[0].revents) {
			struct sockaddr_storage from;
			socklen_t fl = sizeof(from);
			int fd = accept4(t->listen_fd, (struct sockaddr *)&from, &fl,
					 SOCK_NONBLOCK | SOCK_CLOEXEC);
			if (fd < 0)
				continue; /* EAGAIN, or a connection already reset */
			if (npend == MAX_PENDING) {
				close(pend[0].fd);
				pend[0] = pend[--npend];
			}
			pend[npend++] = (struct pending){ .fd = fd, .from = from };
		}
	}
	for (int i = 0; i < npend; i++)
		close(pend[i].fd);
	free(pend);
	free(pfd);
	return rc;
}

/* "1, 3, 4" from the ranks in [lo, hi) whose link is missing. */
static void missing_ranks(const struct tcp_impl *t, int lo, int hi, char *buf, size_t len)
{
	size_t used = 0;
	int count = 0;
	buf[0] = '\0';
	for (int r = lo; r < hi && used + 16 < len; r++) {
		if (t->fd[r] >= 0)
			continue;
		used += (size_t)snprintf(buf + used, len - used, "%s%d", count++ ? ", " : "", r);
	}
}

/* ---- rendezvous ---------------------------------------------------------- */

static uint64_t new_job_id(void)
{
	uint64_t id = 0;
	if (getrandom(&id, sizeof(id), 0) != (ssize_t)sizeof(id))
		id = zn_now_ns() ^ ((uint64_t)getpid() << 32); /* unique enough on one node */
	return id;
}

static int resolve_master(const struct tcp_impl *t, struct addrinfo **out)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	int e = getaddrinfo(t->master_addr, t->master_port, &hints, out);
	if (e)
		return zn_error(-EINVAL, "comm tcp: MASTER_ADDR=%s does not resolve (%s): set it to "
				"rank 0's host name or address", t->master_addr, gai_strerror(e));
	return 0;
}

/* Rank 0: take every rank's hello on MASTER_PORT, then send each the table. */
static int rendezvous_master(struct zn_comm *c, struct tcp_impl *t, double seconds,
			     uint64_t deadline)
{
	struct addrinfo *ai;
	int rc = resolve_master(t, &ai);
	if (rc)
		return rc;
	const int family = ai->ai_family;
	freeaddrinfo(ai);
	t->listen_fd = listen_on(family, t->port, NULL);
	if (t->listen_fd < 0)
		return zn_error(t->listen_fd, "comm tcp: rank 0 cannot listen on port %d "
				"(MASTER_PORT): %s: %s", t->port, strerror(-t->listen_fd),
				t->listen_fd == -EADDRINUSE
					? "another program or job uses it; choose another "
					  "MASTER_PORT for this job"
					: "choose another MASTER_PORT");
	t->job = new_job_id();

	uint16_t *ports = calloc((size_t)c->size, sizeof(*ports));
	if (!ports)
		return zn_error(-ENOMEM, "comm tcp: out of host memory for %d ranks", c->size);
	char refused[384] = "", missing[256];
	const struct expect e = { .kind = HELLO_MASTER, .lo = 1, .hi = c->size, .to = 0,
				  .job = t->run };
	rc = collect(c, t, &e, ports, deadline, refused, sizeof(refused));
	close(t->listen_fd);
	t->listen_fd = -1;
	if (rc == -ETIMEDOUT) {
		missing_ranks(t, 1, c->size, missing, sizeof(missing));
		rc = zn_error(-ETIMEDOUT, "comm tcp: rank 0 waited %.3g s on port %d (MASTER_PORT) "
			      "for the other ranks: rank(s) %s did not check in%s%s: start every rank "
			      "with the same MASTER_ADDR, MASTER_PORT and WORLD_SIZE=%d (ZINC_COMM_TIMEOUT "
			      "sets how long to wait)", seconds, t->port, missing,
			      refused[0] ? "; refused " : "", refused, c->size);
	}
	if (rc) {
		free(ports);
		return rc;
	}

	/* The table: (address, port) of every rank, as rank 0 sees it. */
	const size_t bytes = REPLY_BYTES + (size_t)c->size * ENTRY_BYTES;
	uint8_t *msg = calloc(1, bytes);
	if (!msg) {
		free(ports);
		return zn_error(-ENOMEM, "comm tcp: out of host memory for the rank table");
	}
	reply_encode(msg, &(struct reply){ .magic = MAGIC, .version = VERSION, .status = REPLY_OK,
					   .world = (uint32_t)c->size, .job = t->job });
	for (int r = 1; r < c->size; r++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		if (getpeername(t->fd[r], (struct sockaddr *)&ss, &sl) < 0) {
			rc = zn_error(-errno, "comm tcp: rank 0 cannot get rank %d's address: %s", r,
				      strerror(errno));
			break;
		}
		struct endpoint ep = endpoint_of(&ss, ports[r]);
		uint8_t *p = msg + REPLY_BYTES + (size_t)r * ENTRY_BYTES;
		p[0] = (uint8_t)ep.family;
		p[1] = (uint8_t)(ep.family >> 8);
		p[2] = (uint8_t)ep.port;
		p[3] = (uint8_t)(ep.port >> 8);
		memcpy(p + 4, ep.addr, 16);
	}
	for (int r = 1; r < c->size && !rc; r++) {
		int e2 = xfer_all(t->fd[r], msg, bytes, true, deadline);
		if (e2)
			rc = zn_error(e2, "comm tcp: rank 0 could not send the rank table to rank %d: "
				      "%s", r, e2 == -EPIPE ? "it closed its connection (did it exit?)"
							    : strerror(-e2));
	}
	free(msg);
	free(ports);
	return rc;
}

/* Rank r > 0: connect to rank 0 (retrying until the deadline), send the
 * hello, receive the table into eps. */
static int rendezvous_rank(struct zn_comm *c, struct tcp_impl *t, struct endpoint *eps,
			   double seconds, uint64_t deadline)
{
	struct addrinfo *ai;
	int rc = resolve_master(t, &ai);
	if (rc)
		return rc;
	/* Back-off: 10 ms doubling to 1 s, so that a rank started long before
	 * rank 0 neither spins nor waits long once rank 0 is up; the last try
	 * is at the deadline. */
	uint64_t pause = 10000000u;
	int fd = -1, last = 0;
	for (;;) {
		for (struct addrinfo *a = ai; a && fd < 0; a = a->ai_next) {
			fd = connect_once(a->ai_addr, a->ai_addrlen, deadline);
			if (fd < 0)
				last = fd;
		}
		const uint64_t now = zn_now_ns();
		if (fd >= 0 || now >= deadline)
			break;
		sleep_ns(ZN_MIN(pause, deadline - now));
		pause = ZN_MIN(pause * 2, 1000000000u);
	}
	freeaddrinfo(ai);
	if (fd < 0)
		return zn_error(-ETIMEDOUT, "comm tcp: rank %d could not connect to rank 0 at "
				"MASTER_ADDR=%s MASTER_PORT=%d within %.3g s (last error: %s): start "
				"rank 0, check MASTER_ADDR and MASTER_PORT (ZINC_COMM_TIMEOUT sets how "
				"long to wait)", c->rank, t->master_addr, t->port, seconds,
				strerror(-last));
	t->fd[0] = fd;

	/* This rank's mesh listener, on the address it reaches rank 0 from. */
	struct sockaddr_storage me;
	socklen_t ml = sizeof(me);
	if (getsockname(fd, (struct sockaddr *)&me, &ml) < 0)
		return zn_error(-errno, "comm tcp: rank %d: getsockname: %s", c->rank,
				strerror(errno));
	t->listen_fd = listen_on(me.ss_family, 0, &me);
	if (t->listen_fd < 0)
		return zn_error(t->listen_fd, "comm tcp: rank %d cannot listen for its peers: %s",
				c->rank, strerror(-t->listen_fd));
	ml = sizeof(me);
	if (getsockname(t->listen_fd, (struct sockaddr *)&me, &ml) < 0)
		return zn_error(-errno, "comm tcp: rank %d: getsockname: %s", c->rank,
				strerror(errno));
	const uint16_t port = ntohs(me.ss_family == AF_INET
					    ? ((struct sockaddr_in *)&me)->sin_port
					    : ((struct sockaddr_in6 *)&me)->sin6_port);

	uint8_t hb[HELLO_BYTES], rb[REPLY_BYTES];
	hello_encode(hb, &(struct hello){ .magic = MAGIC, .version = VERSION, .kind = HELLO_MASTER,
					  .world = (uint32_t)c->size, .from = (uint32_t)c->rank,
					  .to = 0, .job = t->run, .port = port });
	rc = xfer_all(fd, hb, sizeof(hb), true, deadline);
	if (!rc)
		rc = xfer_all(fd, rb, sizeof(rb), false, deadline);
	if (rc == -ETIMEDOUT)
		return zn_error(rc, "comm tcp: rank %d reached rank 0 at %s:%d but got no rank table "
				"within %.3g s: are all WORLD_SIZE=%d ranks started? (ZINC_COMM_TIMEOUT "
				"sets how long to wait)", c->rank, t->master_addr, t->port, seconds,
				c->size);
	if (rc == -EPIPE)
		return zn_error(rc, "comm tcp: rank %d: the process at %s:%d (MASTER_ADDR, MASTER_PORT) "
				"closed the connection during the rendezvous: did rank 0 exit, or does "
				"another program use that port?", c->rank, t->master_addr, t->port);
	if (rc)
		return zn_error(rc, "comm tcp: rank %d: rendezvous with %s:%d: %s", c->rank,
				t->master_addr, t->port, strerror(-rc));
	struct reply r = reply_decode(rb);
	if (r.magic != MAGIC)
		return zn_error(-EPROTO, "comm tcp: rank %d: the process at %s:%d (MASTER_ADDR, "
				"MASTER_PORT) is not a zinc rank 0 (magic 0x%08x): choose another "
				"MASTER_PORT", c->rank, t->master_addr, t->port, r.magic);
	if (r.status == REPLY_WORLD)
		return zn_error(-EINVAL, "comm tcp: rank %d has WORLD_SIZE=%d but rank 0 at %s:%d has "
				"WORLD_SIZE=%u: launch every rank with the same WORLD_SIZE", c->rank,
				c->size, t->master_addr, t->port, r.world);
	if (r.status != REPLY_OK || r.version != VERSION)
		return zn_error(-EINVAL, "comm tcp: rank 0 at %s:%d refused rank %d: %s (rank 0 runs "
				"handshake version %u, this rank %u): launch every rank of one job with "
				"the same zinc, RANK values 0 ... WORLD_SIZE - 1 each once, and the same "
				"launcher run", t->master_addr, t->port, c->rank,
				status_text(r.status), r.version, VERSION);
	t->job = r.job;

	const size_t bytes = (size_t)c->size * ENTRY_BYTES;
	uint8_t *tab = malloc(bytes);
	if (!tab)
		return zn_error(-ENOMEM, "comm tcp: out of host memory for the rank table");
	rc = xfer_all(fd, tab, bytes, false, deadline);
	for (int q = 0; q < c->size && !rc; q++) {
		const uint8_t *p = tab + (size_t)q * ENTRY_BYTES;
		eps[q].family = (uint16_t)(p[0] | p[1] << 8);
		eps[q].port = (uint16_t)(p[2] | p[3] << 8);
		memcpy(eps[q].addr, p + 4, 16);
	}
	free(tab);
	if (rc)
		return zn_error(rc, "comm tcp: rank %d: receiving the rank table from rank 0: %s",
				c->rank, rc == -EPIPE ? "rank 0 closed its connection (did it exit?)"
						      : strerror(-rc));
	return 0;
}

/* Ranks >= 1: connect to every higher rank, accept every lower one but 0,
 * then read the higher ranks' answers. */
static int mesh(struct zn_comm *c, struct tcp_impl *t, const struct endpoint *eps,
		double seconds, uint64_t deadline)
{
	char buf[128];
	int rc = 0;

	for (int q = c->rank + 1; q < c->size; q++) {
		struct sockaddr_storage ss;
		socklen_t sl = sockaddr_of(&eps[q], &ss);
		int fd = connect_once((struct sockaddr *)&ss, sl, deadline);
		if (fd < 0)
			return zn_error(fd, "comm tcp: rank %d cannot "
					"connect to rank %d at %s: %s", c->rank, q,
					addr_str((struct sockaddr *)&ss, buf, sizeof(buf)),
					strerror(-fd));
		t->fd[q] = fd;
		uint8_t hb[HELLO_BYTES];
		hello_encode(hb, &(struct hello){ .magic = MAGIC, .version = VERSION,
						  .kind = HELLO_MESH, .world = (uint32_t)c->size,
						  .from = (uint32_t)c->rank, .to = (uint32_t)q,
						  .job = t->job });
		rc = xfer_all(fd, hb, sizeof(hb), true, deadline);
		if (rc)
			return zn_error(rc, "comm tcp: rank %d could not greet rank %d: %s", c->rank, q,
					rc == -EPIPE ? "it closed the connection (did it exit?)"
						     : strerror(-rc));
	}
	if (c->rank > 1) {
		char refused[384] = "", missing[256];
		const struct expect e = { .kind = HELLO_MESH, .lo = 1, .hi = c->rank, .to = c->rank,
					  .job = t->job };
		rc = collect(c, t, &e, NULL, deadline, refused, sizeof(refused));
		if (rc == -ETIMEDOUT) {
			missing_ranks(t, 1, c->rank, missing, sizeof(missing));
			return zn_error(-ETIMEDOUT, "comm tcp: rank %d waited %.3g s for rank(s) %s to "
					"connect%s%s: did they fail? (see their errors; "
					"ZINC_COMM_TIMEOUT sets how long to wait)", c->rank, seconds,
					missing, refused[0] ? "; refused " : "", refused);
		}
		if (rc)
			return rc;
	}
	for (int q = c->rank + 1; q < c->size; q++) {
		uint8_t rb[REPLY_BYTES];
		rc = xfer_all(t->fd[q], rb, sizeof(rb), false, deadline);
		if (rc)
			return zn_error(rc, "comm tcp: rank %d got no answer from rank %d within %.3g s: "
					"%s", c->rank, q, seconds,
					rc == -EPIPE ? "it closed the connection (did it exit?)"
					: rc == -ETIMEDOUT ? "did it fail? (see its error)"
							   : strerror(-rc));
		struct reply r = reply_decode(rb);
		if (r.magic != MAGIC || r.status != REPLY_OK)
			return zn_error(-EPROTO, "comm tcp: rank %d refused rank %d's connection: %s",
					q, c->rank, status_text(r.status));
	}
	return 0;
}

/* Close a link so that the peer reads everything this rank sent, then
 * end-of-file: a socket closed with unread bytes in its receive queue
 * sends a reset instead, and the reset makes the peer's kernel drop the
 * bytes it has not read yet (after a failure, those hold the peer's
 * reason, e.g. a frame whose tag shows the ranks out of step). */
static void close_link(int fd)
{
	uint8_t sink[4096];
	shutdown(fd, SHUT_WR);
	while (recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0)
		;
	close(fd);
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
			close_link(t->fd[p]);
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
	c->impl = t; /* on failure below, comm.c calls tcp_close */
	int rc = read_env(c, t);
	if (rc || c->size == 1)
		return rc;
	t->fd = malloc((size_t)c->size * sizeof(*t->fd));
	struct endpoint *eps = calloc((size_t)c->size, sizeof(*eps));
	if (!t->fd || !eps) {
		free(eps);
		return zn_error(-ENOMEM, "comm tcp: out of host memory for %d ranks", c->size);
	}
	for (int p = 0; p < c->size; p++)
		t->fd[p] = -1;

	const double seconds = c->open_timeout;
	const uint64_t deadline = zn_now_ns() + (uint64_t)(seconds * 1e9);
	if (c->rank == 0)
		rc = rendezvous_master(c, t, seconds, deadline);
	else
		rc = rendezvous_rank(c, t, eps, seconds, deadline);
	if (!rc && c->rank > 0)
		rc = mesh(c, t, eps, seconds, deadline);
	free(eps);
	if (t->listen_fd >= 0) {
		close(t->listen_fd);
		t->listen_fd = -1;
	}
	for (int p = 0; p < c->size && !rc; p++) {
		if (p == c->rank)
			continue;
		int e = link_options(t->fd[p]);
		if (e)
			rc = zn_error(e, "comm tcp: rank %d: setting up the link to rank %d: %s",
				      c->rank, p, strerror(-e));
	}
	return rc;
}

/* ---- exchange ------------------------------------------------------------ */

/* One peer's progress in an exchange. */
struct flow {
	uint8_t out_hdr[FRAME_BYTES], in_hdr[FRAME_BYTES];
	size_t out_done, in_done; /* bytes, frame header included */
	bool sending, receiving;
	bool closed; /* the peer closed its end (it exited?) */
};

/* "1, 3" from the peers whose flow has `receiving` (or `sending`) set. */
static int list_peers(const struct zn_comm *c, const struct flow *f, bool recv_side, char *buf,
		      size_t len)
{
	size_t used = 0;
	int count = 0;
	buf[0] = '\0';
	for (int p = 0; p < c->size; p++) {
		if (p == c->rank || !(recv_side ? f[p].receiving : f[p].sending))
			continue;
		if (used + 16 < len)
			used += (size_t)snprintf(buf + used, len - used, "%s%d", count ? ", " : "", p);
		count++;
	}
	return count;
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

static int tcp_exchange(struct zn_comm *c, const struct zn_comm_xfer *x, int tag,
			uint64_t deadline_ns, const char *what)
{
	struct flow *f = calloc((size_t)c->size, sizeof(*f));
	struct pollfd *pfd = calloc((size_t)c->size, sizeof(*pfd));
	const struct tcp_impl *t = c->impl;
	const uint64_t start = zn_now_ns();
	char list[256];
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
		const int ms = ms_until(deadline_ns);
		if (ms == 0) {
			/* The peers whose data did not arrive; failing that, those
			 * that took none of ours (they are not reading). */
			int n = list_peers(c, f, true, list, sizeof(list));
			if (n == 0)
				n = list_peers(c, f, false, list, sizeof(list));
			rc = zn_error(-ETIMEDOUT, "comm tcp: %s on rank %d timed out (waited %.3g s for "
				      "its messages): rank%s %s did not take part (every rank must "
				      "issue the same collectives in the same order; raise the timeout "
				      "with zn_comm_set_timeout if they are only slow)", what, c->rank,
				      (double)(deadline_ns - start) / 1e9, n > 1 ? "s" : "",
				      n ? list : "(unknown)");
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
			size_t used = 0;
			for (int p = 0, k = 0; p < c->size; p++)
				if (f[p].closed && used + 16 < sizeof(list))
					used += (size_t)snprintf(list + used, sizeof(list) - used,
								 "%s%d", k++ ? ", " : "", p);
			const bool many = closed > 1;
			rc = zn_error(-EPIPE, "comm tcp: %s on rank %d: rank%s %s closed %s "
				      "connection%s (did %s exit?): the comm is unusable; look for "
				      "%s own error", what, c->rank, many ? "s" : "", list,
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

const struct zn_comm_ops zn_comm_tcp_ops = {
	.name = "tcp",
	.open = tcp_open,
	.close = tcp_close,
	.exchange = tcp_exchange,
};
