/* offload/: the pinned buffer pool, the swap store, the trace recorder and
 * the offload config sections. */
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zinc/hostmem.h"
#include "zinc/offload.h"
#include "zinc/trace.h"

#define KiB (1024ull)
#define MiB (1024ull * 1024)

static struct zn_aio *make_aio(void)
{
	struct zn_aio_config cfg;
	zn_aio_config_default(&cfg);
	cfg.block_size = 256 * KiB;
	cfg.queue_depth = 16;
	cfg.intra_op_parallelism = 2;
	struct zn_aio *aio = zn_aio_create(&cfg);
	if (!aio)
		fail_msg("zn_aio_create: %s", zn_last_error());
	return aio;
}

static const char *make_dir(const char *name)
{
	const char *p = tu_path(name);
	mkdir(p, 0700);
	return p;
}

static int count_swap_files(const char *dir)
{
	return tu_count_entries(dir, "zinc-swap-", NULL, ".swp");
}

/* ---- buffer pool ---------------------------------------------------------- */

static void test_bufpool(void **state)
{
	(void)state;
	struct zn_aio *aio = make_aio();
	struct zn_bufpool_config cfg = { .buffer_count = 3, .buffer_bytes = 1000000,
					 .pin_memory = true, .numa_node = -1 };
	struct zn_bufpool *p = zn_bufpool_create(&cfg, aio);
	void *b[4];

	assert_non_null(p);
	assert_int_equal(zn_bufpool_buffer_bytes(p), 1003520u);
	assert_int_equal(zn_bufpool_count(p), 3);
	/* What a plan counts for this config is what the pool took. */
	assert_int_equal(zn_bufpool_bytes(&cfg), 3 * 1003520u);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(zn_bufpool_try_acquire(p, &b[i]), 0);
		assert_int_equal((uintptr_t)b[i] % 4096, 0);
		memset(b[i], i + 1, zn_bufpool_buffer_bytes(p)); /* every byte writable */
	}
	assert_int_equal(zn_bufpool_free_count(p), 0);
	assert_int_equal(zn_bufpool_try_acquire(p, &b[3]), -EAGAIN);
	assert_null(b[3]);
	assert_true(b[0] != b[1] && b[1] != b[2]);
	/* Pool buffers are registered: direct I/O through them is fixed I/O. */
	struct zn_aio_file *f;
	assert_int_equal(zn_aio_open(aio, tu_path("pool.dat"), ZN_AIO_RDWR | ZN_AIO_CREATE, 0, &f),
			 0);
	zn_aio_stats_reset(aio);
	assert_int_equal(zn_aio_pwrite(f, b[1], zn_bufpool_buffer_bytes(p), 0),
			 (ssize_t)zn_bufpool_buffer_bytes(p));
	struct zn_aio_stats st;
	zn_aio_stats_get(aio, &st);
	assert_true(st.fixed_ios > 0 && st.fixed_ios == st.ios);
	assert_int_equal(zn_aio_close(f), 0);

	/* A double release is refused (logged), not a corrupted free list. */
	zn_bufpool_release(p, b[0]);
	tu_log_capture_start();
	zn_bufpool_release(p, b[0]);
	zn_bufpool_release(p, (char *)b[1] + 8);
	assert_int_equal(tu_log_count(ZN_LOG_ERROR, "not a buffer in use"), 2);
	tu_log_capture_stop();
	assert_int_equal(zn_bufpool_free_count(p), 1);
	zn_bufpool_release(p, b[1]);
	zn_bufpool_release(p, b[2]);
	assert_int_equal(zn_bufpool_free_count(p), 3);
	zn_bufpool_destroy(p);
	zn_aio_destroy(aio);

	cfg.buffer_count = 0;
	assert_null(zn_bufpool_create(&cfg, NULL));
	assert_non_null(strstr(zn_last_error(), "buffer_count"));
}

struct blocker {
	struct zn_bufpool *p;
	void *got;
	int done;
};

static void *block_acquire(void *arg)
{
	struct blocker *b = arg;
	zn_bufpool_acquire(b->p, &b->got);
	__atomic_store_n(&b->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/* acquire waits for a release instead of failing or spinning. */
static void test_bufpool_blocks(void **state)
{
	(void)state;
	struct zn_bufpool_config cfg = { .buffer_count = 1, .buffer_bytes = 4096, .numa_node = -1 };
	struct zn_bufpool *p = zn_bufpool_create(&cfg, NULL);
	void *mine;
	pthread_t th;
	struct blocker b = { p, NULL, 0 };

	assert_int_equal(zn_bufpool_acquire(p, &mine), 0);
	assert_int_equal(pthread_create(&th, NULL, block_acquire, &b), 0);
	usleep(50 * 1000);
	assert_int_equal(__atomic_load_n(&b.done, __ATOMIC_ACQUIRE), 0);
	zn_bufpool_release(p, mine);
	pthread_join(th, NULL);
	assert_ptr_equal(b.got, mine);
	zn_bufpool_release(p, b.got);
	zn_bufpool_destroy(p);
}

/* Without CAP_IPC_LOCK and with a small RLIMIT_MEMLOCK, pinning is a clear
 * warning and the pool works unpinned.  Runs in a child that drops root. */
static void test_bufpool_memlock_warning(void **state)
{
	(void)state;
	if (geteuid() != 0) {
		skip(); /* needs root to drop to another user in a child */
		return;
	}
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct rlimit rl = { 64 * 1024, 64 * 1024 };
		if (setrlimit(RLIMIT_MEMLOCK, &rl) != 0 || setgid(65534) != 0 || setuid(65534) != 0)
			_exit(3);
		tu_log_capture_start();
		struct zn_bufpool_config cfg = { .buffer_count = 2, .buffer_bytes = 4 * MiB,
						 .pin_memory = true, .numa_node = -1 };
		struct zn_bufpool *p = zn_bufpool_create(&cfg, NULL);
		if (!p)
			_exit(4);
		if (zn_bufpool_pinned(p))
			_exit(5);
		if (tu_log_count(ZN_LOG_WARN, "ulimit -l") != 1)
			_exit(6);
		void *b;
		if (zn_bufpool_acquire(p, &b) != 0)
			_exit(7);
		memset(b, 1, 4 * MiB);
		zn_bufpool_release(p, b);
		zn_bufpool_destroy(p);
		_exit(0);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* ---- swap store -------------------------------------------------------- */

static struct zn_store *make_store(struct zn_aio *aio, const char **paths, unsigned n,
				   uint64_t cap, uint64_t stripe, bool checksum)
{
	struct zn_store_config cfg = { .paths = paths, .npaths = n, .capacity = cap,
				       .stripe_bytes = stripe, .checksum = checksum };
	struct zn_store *s = zn_store_create(&cfg, aio);
	if (!s)
		fail_msg("zn_store_create: %s", zn_last_error());
	return s;
}

/* Random tensors over 1-3 paths: write, read back, free, reuse. */
static void test_store_round_trips(void **state)
{
	(void)state;
	struct zn_aio *aio = make_aio();
	const char *paths[3] = { make_dir("p0"), make_dir("p1"), make_dir("p2") };
	uint8_t *w = zn_hostmem_alloc(16 * MiB, ZN_HOSTMEM_HUGE);
	uint8_t *r = zn_hostmem_alloc(16 * MiB, ZN_HOSTMEM_HUGE);
	uint64_t rs = 5;

	for (unsigned np = 1; np <= 3; np++) {
		struct zn_store *s = make_store(aio, paths, np, 96 * MiB, 256 * KiB, true);
		struct zn_extent *ext[12] = { 0 };
		uint64_t seed[12], len[12];
		for (unsigned i = 0; i < np; i++)
			assert_int_equal(count_swap_files(paths[i]), 1);
		for (int round = 0; round < 4; round++) {
			for (int i = 0; i < 12; i++) {
				if (ext[i] && tu_rand(&rs) % 3 == 0) {
					zn_store_free(s, ext[i]);
					ext[i] = NULL;
				}
				if (!ext[i]) {
					len[i] = 1 + tu_rand(&rs) % (6 * MiB);
					char name[32];
					snprintf(name, sizeof(name), "t%d", i);
					assert_int_equal(zn_store_alloc(s, name, len[i], &ext[i]), 0);
					assert_int_equal(zn_extent_bytes(ext[i]), len[i]);
				}
				seed[i] = tu_rand(&rs);
				tu_fill_random(w, len[i], seed[i]);
				struct zn_store_io *op;
				assert_int_equal(zn_store_write(s, ext[i], w, &op), 0);
				assert_int_equal(zn_store_wait(op), 0);
			}
			for (int i = 0; i < 12; i++) {
				struct zn_store_io *op;
				memset(r, 0xee, 8 * MiB);
				assert_int_equal(zn_store_read(s, ext[i], r, &op), 0);
				assert_int_equal(zn_store_wait(op), 0);
				tu_fill_random(w, len[i], seed[i]);
				assert_memory_equal(r, w, len[i]);
			}
		}
		assert_true(zn_store_used(s) > 0);
		for (int i = 0; i < 12; i++)
			zn_store_free(s, ext[i]);
		assert_int_equal(zn_store_used(s), 0);
		zn_store_destroy(s);
		for (unsigned i = 0; i < np; i++)
			assert_int_equal(count_swap_files(paths[i]), 0);
	}
	zn_hostmem_free(w, 16 * MiB);
	zn_hostmem_free(r, 16 * MiB);
	zn_aio_destroy(aio);
}

/* A striped tensor's chunk i sits on path i % P: read the raw files. */
static void test_store_striping_layout(void **state)
{
	(void)state;
	struct zn_aio *aio = make_aio();
	const char *paths[3] = { make_dir("s0"), make_dir("s1"), make_dir("s2") };
	const uint64_t stripe = 64 * KiB, len = 10 * stripe + 5000; /* 11 chunks */
	struct zn_store *s = make_store(aio, paths, 3, 8 * MiB, stripe, false);
	uint8_t *w = zn_hostmem_alloc(len + stripe, 0);
	/* Each path's file is the size zn_store_path_bytes says (what the
	 * memory plan counts per directory): a third of 8 MiB rounded up to
	 * 4 KiB, plus two stripes. */
	const struct zn_store_config sc = { .npaths = 3, .capacity = 8 * MiB,
					    .stripe_bytes = stripe };
	assert_int_equal(zn_store_path_bytes(&sc), 2797568 + 2 * stripe);
	for (unsigned i = 0; i < 3; i++) {
		struct stat st;
		assert_int_equal(stat(zn_store_file_path(s, i), &st), 0);
		assert_int_equal((uint64_t)st.st_size, zn_store_path_bytes(&sc));
	}
	struct zn_extent *e;
	struct zn_store_io *op;

	assert_int_equal(zn_store_alloc(s, "striped", len, &e), 0);
	tu_fill_random(w, len, 99);
	assert_int_equal(zn_store_write(s, e, w, &op), 0);
	assert_int_equal(zn_store_wait(op), 0);
	uint8_t chunk[64 * 1024];
	for (uint64_t i = 0; i * stripe < len; i++) {
		int fd = open(zn_store_file_path(s, (unsigned)(i % 3)), O_RDONLY);
		assert_true(fd >= 0);
		uint64_t n = len - i * stripe < stripe ? len - i * stripe : stripe;
		/* The first extent of a fresh store starts at offset 0 of each file. */
		assert_int_equal(pread(fd, chunk, n, (off_t)((i / 3) * stripe)), (ssize_t)n);
		close(fd);
		assert_memory_equal(chunk, w + i * stripe, n);
	}
	zn_store_free(s, e);
	zn_store_destroy(s);
	zn_hostmem_free(w, len + stripe);
	zn_aio_destroy(aio);
}

/* Never-written extents read as zeros; a flipped byte on disk is caught. */
static void test_store_checksum(void **state)
{
	(void)state;
	struct zn_aio *aio = make_aio();
	const char *paths[1] = { make_dir("ck") };
	struct zn_store *s = make_store(aio, paths, 1, 16 * MiB, 0, true);
	uint8_t *w = zn_hostmem_alloc(4 * MiB, 0), *r = zn_hostmem_alloc(4 * MiB, 0);
	struct zn_extent *e;
	struct zn_store_io *op;

	assert_int_equal(zn_store_alloc(s, "layer7.weight", 3 * MiB + 10, &e), 0);
	memset(r, 0x77, 4 * MiB);
	assert_int_equal(zn_store_read(s, e, r, &op), 0);
	assert_int_equal(zn_store_wait(op), 0);
	for (size_t i = 0; i < 3 * MiB + 10; i++)
		if (r[i])
			fail_msg("unwritten extent byte %zu is %u, not 0", i, r[i]);

	tu_fill_random(w, 3 * MiB + 10, 1);
	assert_int_equal(zn_store_write(s, e, w, &op), 0);
	/* One I/O per extent at a time. */
	struct zn_store_io *op2;
	assert_int_equal(zn_store_read(s, e, r, &op2), -EBUSY);
	assert_int_equal(zn_store_wait(op), 0);

	/* Flip one byte in the swap file, behind the store's back. */
	int fd = open(zn_store_file_path(s, 0), O_RDWR);
	assert_true(fd >= 0);
	uint8_t byte;
	assert_int_equal(pread(fd, &byte, 1, 123457), 1);
	byte ^= 0x10;
	assert_int_equal(pwrite(fd, &byte, 1, 123457), 1);
	fsync(fd);
	/* O_DIRECT reads bypass the page cache the pwrite went through. */
	posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	close(fd);
	assert_int_equal(zn_store_read(s, e, r, &op), 0);
	assert_int_equal(zn_store_wait(op), -EBADMSG);
	assert_non_null(strstr(zn_last_error(), "layer7.weight"));
	assert_non_null(strstr(zn_last_error(), "checksum"));

	zn_store_free(s, e);
	zn_store_destroy(s);
	zn_hostmem_free(w, 4 * MiB);
	zn_hostmem_free(r, 4 * MiB);
	zn_aio_destroy(aio);
}

static void test_store_full_and_errors(void **state)
{
	(void)state;
	struct zn_aio *aio = make_aio();
	const char *paths[2] = { make_dir("full"), tu_path("no-such-dir") };
	struct zn_store *s = make_store(aio, paths, 1, 4 * MiB, 0, false);
	struct zn_extent *a, *b;

	assert_int_equal(zn_store_alloc(s, "a", 3 * MiB, &a), 0);
	assert_int_equal(zn_store_alloc(s, "b", 2 * MiB, &b), -ENOSPC);
	assert_null(b);
	assert_non_null(strstr(zn_last_error(), "'b'"));
	assert_non_null(strstr(zn_last_error(), "4 MiB"));
	zn_store_free(s, a);
	assert_int_equal(zn_store_alloc(s, "b", 2 * MiB, &b), 0);
	zn_store_free(s, b);
	zn_store_destroy(s);

	struct zn_store_config cfg = { .paths = &paths[1], .npaths = 1, .capacity = MiB };
	assert_null(zn_store_create(&cfg, aio));
	assert_non_null(strstr(zn_last_error(), "no-such-dir"));
	cfg.stripe_bytes = 1000;
	cfg.paths = paths;
	assert_null(zn_store_create(&cfg, aio));
	assert_non_null(strstr(zn_last_error(), "stripe"));
	zn_aio_destroy(aio);
}

/* Files a crashed run left are removed at the next start; files a live
 * store holds (flock) are not. */
static void test_store_stale_files(void **state)
{
	(void)state;
	struct zn_aio *aio = make_aio();
	const char *dir = make_dir("stale");
	char stale[4200], live[4200];
	snprintf(stale, sizeof(stale), "%s/zinc-swap-999999-0-0.swp", dir);
	snprintf(live, sizeof(live), "%s/zinc-swap-999998-0-0.swp", dir);
	FILE *f = fopen(stale, "w");
	fputs("left over", f);
	fclose(f);
	int lfd = open(live, O_CREAT | O_RDWR, 0600);
	assert_true(lfd >= 0);
	assert_int_equal(flock(lfd, LOCK_EX), 0);

	const char *paths[1] = { dir };
	struct zn_store *s = make_store(aio, paths, 1, MiB, 0, false);
	assert_int_equal(access(stale, F_OK), -1);
	assert_int_equal(access(live, F_OK), 0);
	zn_store_destroy(s);
	close(lfd);
	unlink(live);
	assert_int_equal(count_swap_files(dir), 0);
	zn_aio_destroy(aio);
}

/* Not enough room: fails before anything is written, naming needed and
 * free bytes per path. */
static void test_store_no_room(void **state)
{
	(void)state;
	const char *dir = make_dir("tiny");
	if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
	    mount("tmpfs", dir, "tmpfs", 0, "size=2m") != 0) {
		skip(); /* needs CAP_SYS_ADMIN for a private tmpfs */
		return;
	}
	struct zn_aio *aio = make_aio();
	const char *paths[1] = { dir };
	struct zn_store_config cfg = { .paths = paths, .npaths = 1, .capacity = 64 * MiB };
	assert_null(zn_store_create(&cfg, aio));
	assert_non_null(strstr(zn_last_error(), "needs 64 MiB"));
	assert_non_null(strstr(zn_last_error(), "free"));
	assert_non_null(strstr(zn_last_error(), dir));
	assert_int_equal(count_swap_files(dir), 0);
	zn_aio_destroy(aio);
	umount2(dir, MNT_DETACH);
}

/* ---- trace ----------------------------------------------------------------- */

static void test_trace(void **state)
{
	(void)state;
	struct zn_trace *t = zn_trace_create(3);
	assert_non_null(t);
	uint64_t now = zn_trace_now();
	zn_trace_span(t, "read", "nvme", "nvme read", now, now + 1500, 4096);
	zn_trace_span(t, "adam", "cpu", "adam \"tile\"", now + 100, now + 900, 0);
	zn_trace_span(t, "write", "nvme", "nvme write", now + 200, now + 2000, 8192);
	zn_trace_span(t, "dropped", "nvme", "nvme write", now, now, 0);
	zn_trace_span(NULL, "ignored", "x", "y", 0, 1, 0);
	assert_int_equal(zn_trace_count(t), 3);
	assert_int_equal(zn_trace_dropped(t), 1);
	const char *path = tu_path("trace.json");
	assert_int_equal(zn_trace_write(t, path), 0);

	/* Valid JSON with the fields viewers need: python3 is a build tool. */
	char cmd[4300];
	snprintf(cmd, sizeof(cmd),
		 "python3 -c \"import json,sys; d=json.load(open('%s')); "
		 "x=[e for e in d['traceEvents'] if e['ph']=='X']; "
		 "m=[e for e in d['traceEvents'] if e['ph']=='M']; "
		 "assert len(x)==3 and len(m)==3, d; "
		 "assert x[0]['dur']==1.5 and x[0]['args']['bytes']==4096; "
		 "assert d['otherData']['dropped_spans']==1\"",
		 path);
	assert_int_equal(system(cmd), 0);
	zn_trace_reset(t);
	assert_int_equal(zn_trace_count(t), 0);
	assert_int_equal(zn_trace_dropped(t), 0);
	zn_trace_destroy(t);
	assert_null(zn_trace_create(0));
}

/* ---- config sections --------------------------------------------------------- */

static void test_offload_config(void **state)
{
	(void)state;
	struct zn_offload_param_config p;
	struct zn_offload_optimizer_config o;
	zn_keys_defaults(&zn_offload_param_key_table, &p);
	zn_keys_defaults(&zn_offload_optimizer_key_table, &o);
	assert_int_equal(p.device, ZN_OFFLOAD_NONE);
	assert_int_equal(p.buffer_count, 5);
	assert_int_equal(p.buffer_size, 0); /* auto */
	assert_int_equal(p.max_in_cpu, 1000000000);
	assert_true(p.pin_memory);
	assert_int_equal(o.buffer_count, 4);
	assert_false(o.pipeline_read);
	assert_false(o.pipeline_write);
	assert_true(o.ratio == 1.0);

	assert_int_equal(zn_keys_set(&zn_offload_param_key_table, &p, "buffer_size", "1e8"), 0);
	assert_int_equal(p.buffer_size, 100000000);
	assert_int_equal(zn_keys_set(&zn_offload_param_key_table, &p, "buffer_size", "auto"), 0);
	assert_int_equal(p.buffer_size, 0);
	char v[64];
	assert_string_equal(zn_keys_format(zn_keys_find(&zn_offload_param_key_table, "buffer_size"), &p,
					  v, sizeof(v)),
			    "auto");
	assert_int_equal(zn_keys_set(&zn_offload_param_key_table, &p, "device", "nvme"), 0);
	assert_int_equal(zn_offload_param_key_table.validate(&p), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "offload_param.nvme_path"));
	assert_int_equal(zn_keys_set(&zn_offload_param_key_table, &p, "nvme_path", "/a, /b,/c"), 0);
	assert_int_equal(zn_offload_param_key_table.validate(&p), 0);
	char buf[ZN_NVME_PATH_MAX];
	const char *paths[4];
	assert_int_equal(zn_nvme_paths_split(p.nvme_path, buf, paths, 4), 3);
	assert_string_equal(paths[1], "/b");
	assert_int_equal(zn_nvme_paths_split("/a,,/b", buf, paths, 4), -EINVAL);
	/* Pool sizing: auto from the largest tensor and the prefetch depth. */
	struct zn_bufpool_config pc;
	assert_int_equal(zn_keys_set(&zn_offload_param_key_table, &p, "buffer_count", "auto"), 0);
	assert_int_equal(zn_offload_param_pool(&p, 5000000, "wte", 2, 4, &pc), 0);
	assert_int_equal(pc.buffer_bytes, 10000000);
	assert_int_equal(pc.buffer_count, 6);
	assert_null(pc.near_path); /* three paths: no single nearest node */
	assert_int_equal(zn_keys_set(&zn_offload_param_key_table, &p, "buffer_size", "1e6"), 0);
	assert_int_equal(zn_offload_param_pool(&p, 5000000, "wte", 2, 4, &pc), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "'wte'"));
	assert_non_null(strstr(zn_last_error(), "at least 5000000"));
	assert_int_equal(zn_keys_set(&zn_offload_optimizer_key_table, &o, "ratio", "0.5"), 0);
	assert_int_equal(zn_offload_optimizer_key_table.validate(&o), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "not supported yet"));
	assert_int_equal(zn_keys_set(&zn_offload_optimizer_key_table, &o, "device", "disk"), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "none, cpu, nvme"));
}

static int teardown(void **state)
{
	(void)state;
	tu_scratch_cleanup();
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bufpool),
		cmocka_unit_test(test_bufpool_blocks),
		cmocka_unit_test(test_bufpool_memlock_warning),
		cmocka_unit_test(test_store_round_trips),
		cmocka_unit_test(test_store_striping_layout),
		cmocka_unit_test(test_store_checksum),
		cmocka_unit_test(test_store_full_and_errors),
		cmocka_unit_test(test_store_stale_files),
		cmocka_unit_test(test_trace),
		cmocka_unit_test(test_offload_config),
		/* Last: it moves the process into a private mount namespace. */
		cmocka_unit_test(test_store_no_room),
	};
	return tu_run_group_tests(tests, NULL, teardown);
}
