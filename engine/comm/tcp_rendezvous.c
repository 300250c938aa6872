/* The tcp backend's rendezvous: the handshake, in open (on the comm's
 * worker thread, before one deadline), that gives every pair of ranks one
 * connection.
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
 * Every handshake message starts with a magic number and the format's
 * version, so that another program on the port, or another zinc, is told
 * apart and named in the refusal. */
#include "comm/tcp.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#define MAGIC 0x5a4e5443u   /* "ZNTC": every handshake message starts with it */
#define VERSION 1u          /* of the handshake and frame formats */

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

/* ---- wire encoding ------------------------------------------------------- */

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
	(void)zn_tcp_xfer_all(fd, b, sizeof(b), true, deadline);
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
		int ms = zn_tcp_ms_until(deadline);
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
				zn_tcp_addr_str((struct sockaddr *)&p->from, peer, sizeof(peer));
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

/* The ranks in [lo, hi) whose link is missing. */
static struct zn_comm_ranks missing_ranks(const struct tcp_impl *t, int lo, int hi)
{
	struct zn_comm_ranks m = { 0 };
	for (int r = lo; r < hi; r++)
		if (t->fd[r] < 0)
			zn_comm_ranks_add(&m, "", r);
	return m;
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
	t->listen_fd = zn_tcp_listen_on(family, t->port, NULL);
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
	char refused[384] = "";
	const struct expect e = { .kind = HELLO_MASTER, .lo = 1, .hi = c->size, .to = 0,
				  .job = t->run };
	rc = collect(c, t, &e, ports, deadline, refused, sizeof(refused));
	close(t->listen_fd);
	t->listen_fd = -1;
	if (rc == -ETIMEDOUT) {
		const struct zn_comm_ranks missing = missing_ranks(t, 1, c->size);
		rc = zn_error(-ETIMEDOUT, "comm tcp: rank 0 waited %.3g s on port %d (MASTER_PORT) "
			      "for the other ranks: rank(s) %s did not check in%s%s: start every rank "
			      "with the same MASTER_ADDR, MASTER_PORT and WORLD_SIZE=%d (ZINC_COMM_TIMEOUT "
			      "sets how long to wait)", seconds, t->port, missing.text,
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
		int e2 = zn_tcp_xfer_all(t->fd[r], msg, bytes, true, deadline);
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
			fd = zn_tcp_connect_once(a->ai_addr, a->ai_addrlen, deadline);
			if (fd < 0)
				last = fd;
		}
		const uint64_t now = zn_now_ns();
		if (fd >= 0 || now >= deadline)
			break;
		zn_tcp_sleep_ns(ZN_MIN(pause, deadline - now));
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
	t->listen_fd = zn_tcp_listen_on(me.ss_family, 0, &me);
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
	rc = zn_tcp_xfer_all(fd, hb, sizeof(hb), true, deadline);
	if (!rc)
		rc = zn_tcp_xfer_all(fd, rb, sizeof(rb), false, deadline);
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
	rc = zn_tcp_xfer_all(fd, tab, bytes, false, deadline);
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
		int fd = zn_tcp_connect_once((struct sockaddr *)&ss, sl, deadline);
		if (fd < 0)
			return zn_error(fd, "comm tcp: rank %d cannot "
					"connect to rank %d at %s: %s", c->rank, q,
					zn_tcp_addr_str((struct sockaddr *)&ss, buf, sizeof(buf)),
					strerror(-fd));
		t->fd[q] = fd;
		uint8_t hb[HELLO_BYTES];
		hello_encode(hb, &(struct hello){ .magic = MAGIC, .version = VERSION,
						  .kind = HELLO_MESH, .world = (uint32_t)c->size,
						  .from = (uint32_t)c->rank, .to = (uint32_t)q,
						  .job = t->job });
		rc = zn_tcp_xfer_all(fd, hb, sizeof(hb), true, deadline);
		if (rc)
			return zn_error(rc, "comm tcp: rank %d could not greet rank %d: %s", c->rank, q,
					rc == -EPIPE ? "it closed the connection (did it exit?)"
						     : strerror(-rc));
	}
	if (c->rank > 1) {
		char refused[384] = "";
		const struct expect e = { .kind = HELLO_MESH, .lo = 1, .hi = c->rank, .to = c->rank,
					  .job = t->job };
		rc = collect(c, t, &e, NULL, deadline, refused, sizeof(refused));
		if (rc == -ETIMEDOUT) {
			const struct zn_comm_ranks missing = missing_ranks(t, 1, c->rank);
			return zn_error(-ETIMEDOUT, "comm tcp: rank %d waited %.3g s for rank(s) %s to "
					"connect%s%s: did they fail? (see their errors; "
					"ZINC_COMM_TIMEOUT sets how long to wait)", c->rank, seconds,
					missing.text, refused[0] ? "; refused " : "", refused);
		}
		if (rc)
			return rc;
	}
	for (int q = c->rank + 1; q < c->size; q++) {
		uint8_t rb[REPLY_BYTES];
		rc = zn_tcp_xfer_all(t->fd[q], rb, sizeof(rb), false, deadline);
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

int zn_tcp_rendezvous(struct zn_comm *c, struct tcp_impl *t)
{
	struct endpoint *eps = calloc((size_t)c->size, sizeof(*eps));
	int rc;

	if (!eps)
		return zn_error(-ENOMEM, "comm tcp: out of host memory for %d ranks", c->size);
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
		int e = zn_tcp_link_options(t->fd[p]);
		if (e)
			rc = zn_error(e, "comm tcp: rank %d: setting up the link to rank %d: %s",
				      c->rank, p, strerror(-e));
	}
	return rc;
}
