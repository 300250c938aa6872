/* The comm API on the tcp backend (engine/comm/tcp*.c), suite `unit`.
 *
 * Each test forks its ranks (2, 3 or 4 processes) on 127.0.0.1 with a free
 * MASTER_PORT and the environment torchrun would give them.  A rank runs
 * its part and exits 0 when every check held; the parent waits for all
 * (killing any still running after 90 s) and fails the test on any other
 * exit.  Ranks do not use cmocka's asserts (they would jump into the
 * parent's copy of the test runner): they print what failed to stderr.
 *
 * The collectives are checked by comm_checks.c, shared with the mpi
 * backend's test: bit for bit against a reduction in rank order that each
 * rank computes alone.  The failures: a rank that exits, a rank that
 * skips a collective, ranks out of step, mismatched WORLD_SIZE, missing or
 * invalid variables, a port in use, no rank 0, a stray connection. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "zn_build.h"
#include "zinc/comm.h"
#include "comm_checks.h"
#include "testutil.h"

#define MAX_RANKS 4

/* In a rank: print and return 1 when cond is false. */
#define RCHECK(cond, ...)                                                            \
	do {                                                                         \
		if (!(cond)) {                                                       \
			fprintf(stderr, "rank %d: test_comm_tcp.c:%d: %s: ", rank,   \
				__LINE__, #cond);                                    \
			fprintf(stderr, __VA_ARGS__);                                \
			fputc('\n', stderr);                                         \
			return 1;                                                    \
		}                                                                    \
	} while (0)

/* What a rank runs; 0 when every check held. */
typedef int (*rank_fn)(int rank, int size);

struct job {
	int size;
	rank_fn fn;
	const int *world;        /* WORLD_SIZE of each rank; NULL: size */
	const char *timeout;     /* ZINC_COMM_TIMEOUT; NULL: 20 s */
	bool local;              /* LOCAL_RANK = size - 1 - rank, LOCAL_WORLD_SIZE = size */
};

static const char *const launcher_vars[] = {
	"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
	"ZINC_COMM_TIMEOUT", "OMPI_COMM_WORLD_SIZE", "TORCHELASTIC_RUN_ID",
};

static void clear_env(void)
{
	for (size_t i = 0; i < sizeof(launcher_vars) / sizeof(launcher_vars[0]); i++)
		unsetenv(launcher_vars[i]);
}

static void setenv_int(const char *name, long v)
{
	char s[32];
	snprintf(s, sizeof(s), "%ld", v);
	setenv(name, s, 1);
}

/* A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks
 * it; another process taking it in between is unlikely). */
static int free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	close(fd);
	return ntohs(a.sin_port);
}

static pid_t spawn(const struct job *j, int rank, int port)
{
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid)
		return pid;
	alarm(80); /* a rank that hangs dies; the parent reports the signal */
	clear_env();
	setenv_int("RANK", rank);
	setenv_int("WORLD_SIZE", j->world ? j->world[rank] : j->size);
	if (j->local) {
		setenv_int("LOCAL_RANK", j->size - 1 - rank);
		setenv_int("LOCAL_WORLD_SIZE", j->size);
	}
	setenv("MASTER_ADDR", "127.0.0.1", 1);
	setenv_int("MASTER_PORT", port);
	setenv("ZINC_COMM_TIMEOUT", j->timeout ? j->timeout : "20", 1);
	int rc = j->fn(rank, j->size);
	fflush(stderr);
	exit(rc ? 1 : 0); /* exit, not _exit: LeakSanitizer checks the rank */
}

/* Wait for every rank; fail unless each exited 0. */
static void wait_ranks(const pid_t *pid, int n)
{
	const uint64_t deadline = cc_now_ns() + 90000000000ull;
	int failed = 0;

	for (int r = 0; r < n; r++) {
		int st = 0;
		pid_t w;
		while ((w = waitpid(pid[r], &st, WNOHANG)) == 0 && cc_now_ns() < deadline)
			cc_sleep_ms(10);
		if (w == 0) {
			kill(pid[r], SIGKILL);
			waitpid(pid[r], &st, 0);
			print_message("rank %d did not finish within 90 s: killed\n", r);
			failed++;
		} else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			print_message("rank %d %s %d (see its messages on stderr)\n", r,
				      WIFEXITED(st) ? "exited with status" : "was killed by signal",
				      WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
			failed++;
		}
	}
	assert_int_equal(failed, 0);
}

static void run_job(const struct job *j)
{
	pid_t pid[MAX_RANKS];
	const int port = free_port();
	for (int r = 0; r < j->size; r++)
		pid[r] = spawn(j, r, port);
	wait_ranks(pid, j->size);
}

static struct zn_comm *open_comm(int rank, const char *backend)
{
	struct zn_comm *c = zn_comm_create(backend);
	if (!c)
		fprintf(stderr, "rank %d: zn_comm_create(%s): %s\n", rank,
			backend ? backend : "NULL", zn_last_error());
	return c;
}

/* ---- every collective ----------------------------------------------------- */

static int ranks_collectives(int rank, int size)
{
	struct zn_comm *c = open_comm(rank, NULL); /* automatic: WORLD_SIZE + MASTER_ADDR */
	RCHECK(c, "no comm");
	const char *lr = getenv("LOCAL_RANK");
	int bad = 0;
	bad |= strcmp(zn_comm_backend(c), "tcp") != 0;
	bad |= zn_comm_rank(c) != rank || zn_comm_size(c) != size;
	bad |= zn_comm_local_rank(c) != (lr ? atoi(lr) : rank);
	if (bad)
		fprintf(stderr, "rank %d: backend %s rank %d size %d local rank %d\n", rank,
			zn_comm_backend(c), zn_comm_rank(c), zn_comm_size(c),
			zn_comm_local_rank(c));
	bad |= cc_all_reduce(c) != 0;
	bad |= cc_reduce_scatter(c) != 0;
	bad |= cc_all_gather(c) != 0;
	bad |= cc_broadcast(c) != 0;
	bad |= cc_barrier(c) != 0;
	bad |= cc_async_together(c) != 0;
	bad |= cc_async_overlap(c) != 0;
	zn_comm_destroy(c);
	return bad;
}

static void test_collectives_2(void **state)
{
	(void)state;
	run_job(&(struct job){ .size = 2, .fn = ranks_collectives, .local = true });
}

/* Without LOCAL_RANK the local rank is the rank. */
static void test_collectives_3(void **state)
{
	(void)state;
	run_job(&(struct job){ .size = 3, .fn = ranks_collectives });
}

static void test_collectives_4(void **state)
{
	(void)state;
	run_job(&(struct job){ .size = 4, .fn = ranks_collectives, .local = true });
}

/* ---- failures --------------------------------------------------------------- */

/* The last rank exits (without closing its comm) after a barrier: the
 * others' next collective fails at once with -EPIPE naming it (or, at
 * worst, with -ETIMEDOUT after 5 s naming it); the comm is unusable. */
static int ranks_exit_early(int rank, int size)
{
	struct zn_comm *c = open_comm(rank, "tcp");
	RCHECK(c, "no comm");
	RCHECK(zn_comm_barrier(c) == 0, "%s", zn_last_error());
	if (rank == size - 1) {
		cc_sleep_ms(200); /* the barrier's bytes are delivered */
		_exit(0);         /* as if it crashed: no destroy */
	}
	RCHECK(zn_comm_set_timeout(c, 5.0) == 0, "%s", zn_last_error());
	float v[16] = { 1 };
	const uint64_t t0 = cc_now_ns();
	int rc = zn_comm_all_reduce(c, v, 16, ZN_DTYPE_F32, ZN_COMM_SUM);
	const double dt = (double)(cc_now_ns() - t0) / 1e9;
	/* "rank 2 closed its ..."; "ranks 0, 2 closed their ..." when a
	 * survivor had closed too by then; "rank 2 did not take part" after a
	 * timeout. */
	char closed[32], skipped[32];
	snprintf(closed, sizeof(closed), "%d closed", size - 1);
	snprintf(skipped, sizeof(skipped), "rank %d did not", size - 1);
	fprintf(stderr, "# rank %d after %.3f s: %s\n", rank, dt, zn_last_error());
	RCHECK(rc == -EPIPE || rc == -ETIMEDOUT, "all_reduce returned %d", rc);
	if (rc == -EPIPE)
		RCHECK(strstr(zn_last_error(), closed) && strstr(zn_last_error(), "exit?"),
		       "the message does not name rank %d: %s", size - 1, zn_last_error());
	else
		RCHECK(strstr(zn_last_error(), skipped), "%s", zn_last_error());
	RCHECK(strstr(zn_last_error(), "all_reduce"), "%s", zn_last_error());
	RCHECK(rc == -ETIMEDOUT || dt < 4.0, "-EPIPE took %.3f s", dt);
	rc = zn_comm_barrier(c);
	RCHECK(rc == -EPIPE && strstr(zn_last_error(), "unusable"), "%d: %s", rc, zn_last_error());
	/* Stay a moment, so that this rank's own exit is not what a slower
	 * survivor sees first. */
	cc_sleep_ms(500);
	zn_comm_destroy(c);
	return 0;
}

static void test_rank_exits(void **state)
{
	(void)state;
	run_job(&(struct job){ .size = 3, .fn = ranks_exit_early });
}

/* The last rank is alive but skips a collective: -ETIMEDOUT naming it. */
static int ranks_timeout(int rank, int size)
{
	(void)size;
	struct zn_comm *c = open_comm(rank, "tcp");
	RCHECK(c, "no comm");
	int rc = cc_timeout(c);
	zn_comm_destroy(c);
	return rc;
}

static void test_timeout(void **state)
{
	(void)state;
	run_job(&(struct job){ .size = 3, .fn = ranks_timeout });
}

/* Out of step: each rank broadcasts as its own root (sends only), so the
 * barrier after it receives the broadcast's message: -EPROTO naming the
 * peer and both tags.  Then sizes that differ between ranks. */
static int ranks_out_of_step(int rank, int size)
{
	(void)size;
	struct zn_comm *c = open_comm(rank, "tcp");
	RCHECK(c, "no comm");
	char msg[64] = "x", want[32];
	RCHECK(zn_comm_broadcast(c, msg, sizeof(msg), rank) == 0, "%s", zn_last_error());
	int rc = zn_comm_barrier(c);
	fprintf(stderr, "# rank %d: %s\n", rank, zn_last_error());
	snprintf(want, sizeof(want), "from rank %d", 1 - rank);
	RCHECK(rc == -EPROTO, "barrier returned %d: %s", rc, zn_last_error());
	RCHECK(strstr(zn_last_error(), "out of step") && strstr(zn_last_error(), "tagged") &&
	       strstr(zn_last_error(), want), "%s", zn_last_error());
	zn_comm_destroy(c);

	c = open_comm(rank, "tcp");
	RCHECK(c, "no comm");
	float v[12] = { 0 };
	rc = zn_comm_all_reduce(c, v, rank ? 12 : 10, ZN_DTYPE_F32, ZN_COMM_SUM);
	fprintf(stderr, "# rank %d: %s\n", rank, zn_last_error());
	RCHECK(rc == -EPROTO && strstr(zn_last_error(), "different sizes"), "%d: %s", rc,
	       zn_last_error());
	zn_comm_destroy(c);
	return 0;
}

static void test_out_of_step(void **state)
{
	(void)state;
	run_job(&(struct job){ .size = 2, .fn = ranks_out_of_step });
}

/* Rank 1 was launched with WORLD_SIZE=3, rank 0 with 2: rank 0 refuses it,
 * rank 1 fails at once saying so, and rank 0 gives up after its 2 s
 * rendezvous timeout naming rank 1 and why it was refused. */
static int ranks_world_mismatch(int rank, int size)
{
	(void)size;
	struct zn_comm *c = zn_comm_create(NULL);
	RCHECK(!c, "the comm opened");
	const char *e = zn_last_error();
	fprintf(stderr, "# rank %d: %s\n", rank, e);
	if (rank == 1)
		RCHECK(strstr(e, "WORLD_SIZE=3") && strstr(e, "WORLD_SIZE=2") &&
		       strstr(e, "same WORLD_SIZE"), "%s", e);
	else
		RCHECK(strstr(e, "rank(s) 1 did not check in") && strstr(e, "WORLD_SIZE=3"), "%s", e);
	return 0;
}

static void test_world_size_mismatch(void **state)
{
	(void)state;
	static const int world[] = { 2, 3 };
	run_job(&(struct job){ .size = 2, .fn = ranks_world_mismatch, .world = world,
			       .timeout = "2" });
}

/* A stray connection to MASTER_PORT that does not speak zinc's handshake
 * is closed and logged; rank 0 keeps waiting and the real rank 1 joins. */
static int rank0_with_stray(int rank, int size)
{
	(void)size;
	tu_log_capture_start();
	struct zn_comm *c = open_comm(rank, "tcp");
	RCHECK(c, "no comm");
	RCHECK(zn_comm_barrier(c) == 0, "%s", zn_last_error());
	zn_comm_destroy(c);
	RCHECK(tu_log_count(ZN_LOG_WARN, "refused a connection") == 1 &&
	       tu_log_count(ZN_LOG_WARN, "zinc's handshake") == 1, "no warning about the stray");
	tu_log_capture_stop();
	return 0;
}

static int rank_barrier(int rank, int size)
{
	(void)size;
	struct zn_comm *c = open_comm(rank, "tcp");
	RCHECK(c, "no comm");
	RCHECK(zn_comm_barrier(c) == 0, "%s", zn_last_error());
	zn_comm_destroy(c);
	return 0;
}

static void test_stray_connection(void **state)
{
	(void)state;
	const int port = free_port();
	pid_t pid[2];
	pid[0] = spawn(&(struct job){ .size = 2, .fn = rank0_with_stray }, 0, port);

	/* The stray: connects once rank 0 listens, sends 40 bytes that are
	 * not a hello, and must see the connection closed without an answer. */
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = -1;
	for (int i = 0; i < 1000 && fd < 0; i++) {
		fd = socket(AF_INET, SOCK_STREAM, 0);
		assert_true(fd >= 0);
		if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
			close(fd);
			fd = -1;
			cc_sleep_ms(10);
		}
	}
	assert_true(fd >= 0);
	char junk[40];
	memset(junk, 'x', sizeof(junk));
	assert_int_equal(send(fd, junk, sizeof(junk), MSG_NOSIGNAL), (ssize_t)sizeof(junk));
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	assert_int_equal(poll(&pfd, 1, 10000), 1);
	char b[64];
	ssize_t n = recv(fd, b, sizeof(b), 0);
	assert_true(n == 0 || (n < 0 && errno == ECONNRESET));
	close(fd);

	pid[1] = spawn(&(struct job){ .size = 2, .fn = rank_barrier }, 1, port);
	wait_ranks(pid, 2);
}

/* ---- the environment, in this process (no peer needed) ------------------------ */

static void expect_refused(const char *backend, const char *needle)
{
	struct zn_comm *c = zn_comm_create(backend);
	if (c) {
		zn_comm_destroy(c);
		print_message("zn_comm_create(%s) succeeded; want an error naming %s\n",
			      backend ? backend : "NULL", needle);
		fail();
	}
	if (!strstr(zn_last_error(), needle)) {
		print_message("error \"%s\" does not contain \"%s\"\n", zn_last_error(), needle);
		fail();
	}
}

static void test_environment(void **state)
{
	(void)state;
	clear_env();
	setenv("RANK", "0", 1);
	setenv("WORLD_SIZE", "2", 1);
	setenv("MASTER_ADDR", "127.0.0.1", 1);
	/* No MASTER_PORT: automatic selection picks tcp, which names it. */
	expect_refused("tcp", "MASTER_PORT is not set");
	expect_refused(NULL, "MASTER_PORT is not set");
	setenv("MASTER_PORT", "http", 1);
	expect_refused("tcp", "MASTER_PORT=\"http\" is not valid");
	setenv("MASTER_PORT", "70000", 1);
	expect_refused("tcp", "MASTER_PORT=\"70000\" is not valid");
	setenv_int("MASTER_PORT", free_port());

	setenv("RANK", "2", 1);
	expect_refused("tcp", "RANK=\"2\" is not valid");
	unsetenv("RANK");
	expect_refused("tcp", "RANK is not set");
	setenv("RANK", "0", 1);
	setenv("WORLD_SIZE", "two", 1);
	expect_refused("tcp", "WORLD_SIZE=\"two\" is not valid");
	setenv("WORLD_SIZE", "2", 1);
	setenv("LOCAL_WORLD_SIZE", "2", 1);
	setenv("LOCAL_RANK", "2", 1);
	expect_refused("tcp", "LOCAL_RANK=\"2\" is not valid");
	unsetenv("LOCAL_WORLD_SIZE");
	unsetenv("LOCAL_RANK");
	setenv("ZINC_COMM_TIMEOUT", "-1", 1);
	expect_refused("tcp", "ZINC_COMM_TIMEOUT=\"-1\"");
	unsetenv("ZINC_COMM_TIMEOUT");

	/* Without MASTER_ADDR: tcp names it; automatic falls back to self,
	 * which refuses two ranks and says how to get them. */
	unsetenv("MASTER_ADDR");
	expect_refused("tcp", "MASTER_ADDR is not set");
	expect_refused(NULL, "set MASTER_ADDR and MASTER_PORT");

	/* One rank needs no rendezvous (nor MASTER_ADDR). */
	setenv("WORLD_SIZE", "1", 1);
	struct zn_comm *c = zn_comm_create("tcp");
	assert_non_null(c);
	assert_string_equal(zn_comm_backend(c), "tcp");
	assert_int_equal(zn_comm_size(c), 1);
	assert_int_equal(zn_comm_local_rank(c), 0);
	float v[3] = { 1, 2, 3 };
	assert_int_equal(zn_comm_all_reduce(c, v, 3, ZN_DTYPE_F32, ZN_COMM_SUM), 0);
	assert_true(v[2] == 3.0f);
	assert_int_equal(zn_comm_barrier(c), 0);
	zn_comm_destroy(c);
	clear_env();
}

/* MASTER_PORT taken by another program: rank 0 says so at once. */
static void test_port_in_use(void **state)
{
	(void)state;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(fd, 1), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	clear_env();
	setenv("RANK", "0", 1);
	setenv("WORLD_SIZE", "2", 1);
	setenv("MASTER_ADDR", "127.0.0.1", 1);
	setenv_int("MASTER_PORT", ntohs(a.sin_port));
	expect_refused("tcp", "another program or job uses it");
	close(fd);
	clear_env();
}

/* No rank 0: rank 1 retries until ZINC_COMM_TIMEOUT, then says whom it
 * could not reach. */
static void test_no_master(void **state)
{
	(void)state;
	clear_env();
	setenv("RANK", "1", 1);
	setenv("WORLD_SIZE", "2", 1);
	setenv("MASTER_ADDR", "127.0.0.1", 1);
	setenv_int("MASTER_PORT", free_port());
	setenv("ZINC_COMM_TIMEOUT", "0.5", 1);
	const uint64_t t0 = cc_now_ns();
	expect_refused("tcp", "could not connect to rank 0 at MASTER_ADDR=127.0.0.1");
	const uint64_t dt = cc_now_ns() - t0;
	assert_true(dt >= 400000000ull && dt < 5000000000ull);
	clear_env();
}

int main(void)
{
	/* A rank that dies must not kill the others with SIGPIPE; the library
	 * sends with MSG_NOSIGNAL, and this makes sure nothing else does. */
	signal(SIGPIPE, SIG_DFL);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_environment),
		cmocka_unit_test(test_port_in_use),
		cmocka_unit_test(test_no_master),
		cmocka_unit_test(test_collectives_2),
		cmocka_unit_test(test_collectives_3),
		cmocka_unit_test(test_collectives_4),
		cmocka_unit_test(test_rank_exits),
		cmocka_unit_test(test_timeout),
		cmocka_unit_test(test_out_of_step),
		cmocka_unit_test(test_world_size_mismatch),
		cmocka_unit_test(test_stray_connection),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
