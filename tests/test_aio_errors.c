/* The io_uring engine's failures: full disks, file size limits, bad
 * descriptors, missing files and filesystems that refuse O_DIRECT.  Each
 * must come back as -errno with a message naming the file, and leave data
 * written before intact. */
#include "testutil.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "zinc/aio.h"
#include "zinc/hostmem.h"

#define KiB (1024ull)
#define MiB (1024ull * 1024)

static struct zn_aio *make(unsigned threads, bool fixed)
{
	struct zn_aio_config cfg;
	zn_aio_config_default(&cfg);
	cfg.block_size = 256 * KiB;
	cfg.queue_depth = 8;
	cfg.intra_op_parallelism = threads;
	cfg.use_fixed_buffers = fixed;
	struct zn_aio *aio = zn_aio_create(&cfg);
	if (!aio)
		fail_msg("zn_aio_create: %s", zn_last_error());
	return aio;
}

/* Mount a filesystem of our own in a private mount namespace (gone when
 * the process ends, even if it crashes).  Returns false when this process
 * may not (not root, or a container without CAP_SYS_ADMIN). */
static bool mount_private(const char *type, const char *dir, const char *opts)
{
	static bool unshared;
	if (!unshared) {
		if (unshare(CLONE_NEWNS) != 0)
			return false;
		if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
			return false;
		unshared = true;
	}
	mkdir(dir, 0700);
	return mount(type, dir, type, 0, opts) == 0;
}

/* RLIMIT_FSIZE: a write crossing the limit fails with EFBIG after the part
 * below the limit went through (a short write the engine resubmits); data
 * written earlier is intact. */
static void test_efbig(void **state)
{
	(void)state;
	struct zn_aio *aio = make(2, true);
	struct zn_aio_file *f;
	uint8_t *buf = zn_hostmem_alloc(4 * MiB, 0);
	uint8_t *check = zn_hostmem_alloc(4 * MiB, 0);
	struct rlimit old, lim;

	assert_int_equal(zn_aio_open(aio, tu_path("fsize.dat"), ZN_AIO_RDWR | ZN_AIO_CREATE, 0, &f),
			 0);
	assert_int_equal(zn_aio_register_buffer(aio, buf, 4 * MiB), 0);
	tu_fill_random(buf, 1 * MiB, 11);
	assert_int_equal(zn_aio_pwrite(f, buf, 1 * MiB, 0), (ssize_t)(1 * MiB));

	/* The kernel sends SIGXFSZ to a writer crossing the limit; ignored,
	 * the write returns EFBIG instead of killing the process. */
	signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = 2 * MiB;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	tu_fill_random(buf + 1 * MiB, 3 * MiB, 12);
	ssize_t rc = zn_aio_pwrite(f, buf + 1 * MiB, 3 * MiB, 1 * MiB);
	const char *msg = zn_last_error();
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, SIG_DFL);

	assert_int_equal(rc, -EFBIG);
	assert_non_null(strstr(msg, "fsize.dat"));
	assert_non_null(strstr(msg, "offset"));
	assert_non_null(strstr(msg, "length"));
	assert_non_null(strstr(msg, strerror(EFBIG)));

	/* What was written before is intact; the part below the limit too. */
	assert_int_equal(zn_aio_pread(f, check, 2 * MiB, 0), (ssize_t)(2 * MiB));
	assert_memory_equal(check, buf, 2 * MiB);
	struct zn_aio_stats st;
	zn_aio_stats_get(aio, &st);
	assert_true(st.errors >= 1);

	assert_int_equal(zn_aio_close(f), 0);
	zn_aio_destroy(aio);
	zn_hostmem_free(buf, 4 * MiB);
	zn_hostmem_free(check, 4 * MiB);
}

/* A full filesystem: ENOSPC from a write, earlier data intact; and a
 * reservation that cannot fit fails before anything is written, leaving
 * no file behind. */
static void test_enospc(void **state)
{
	(void)state;
	const char *dir = tu_path("small-fs");
	char path[4200], big[4200];
	if (!mount_private("tmpfs", dir, "size=4m")) {
		skip(); /* needs CAP_SYS_ADMIN for a private tmpfs */
		return;
	}
	snprintf(path, sizeof(path), "%s/data", dir);
	snprintf(big, sizeof(big), "%s/big", dir);

	struct zn_aio *aio = make(1, false);
	struct zn_aio_file *f;
	uint8_t *buf = zn_hostmem_alloc(8 * MiB, 0);
	uint8_t *check = zn_hostmem_alloc(2 * MiB, 0);

	tu_log_capture_start();
	assert_int_equal(zn_aio_open(aio, path, ZN_AIO_RDWR | ZN_AIO_CREATE, 0, &f), 0);
	tu_fill_random(buf, 8 * MiB, 21);
	assert_int_equal(zn_aio_pwrite(f, buf, 2 * MiB, 0), (ssize_t)(2 * MiB));
	ssize_t rc = zn_aio_pwrite(f, buf + 2 * MiB, 6 * MiB, 2 * MiB);
	assert_int_equal(rc, -ENOSPC);
	assert_non_null(strstr(zn_last_error(), "data"));
	assert_non_null(strstr(zn_last_error(), strerror(ENOSPC)));
	assert_int_equal(zn_aio_pread(f, check, 2 * MiB, 0), (ssize_t)(2 * MiB));
	assert_memory_equal(check, buf, 2 * MiB);
	assert_int_equal(zn_aio_close(f), 0);
	unlink(path);

	/* Preallocation beyond the free space. */
	assert_int_equal(zn_aio_open(aio, big, ZN_AIO_RDWR | ZN_AIO_CREATE, 64 * MiB, &f),
			 -ENOSPC);
	assert_null(f);
	assert_non_null(strstr(zn_last_error(), "free"));
	assert_non_null(strstr(zn_last_error(), "64 MiB"));
	assert_int_equal(access(big, F_OK), -1);
	tu_log_capture_stop();

	zn_aio_destroy(aio);
	zn_hostmem_free(buf, 8 * MiB);
	zn_hostmem_free(check, 2 * MiB);
	umount2(dir, MNT_DETACH);
}

/* ramfs has no direct I/O: the file opens buffered with one warning naming
 * the path, and data still round-trips. */
static void test_odirect_fallback(void **state)
{
	(void)state;
	const char *dir = tu_path("ramfs");
	char path[4200];
	if (!mount_private("ramfs", dir, NULL)) {
		skip();
		return;
	}
	snprintf(path, sizeof(path), "%s/swap", dir);
	struct zn_aio *aio = make(2, true);
	struct zn_aio_file *f;
	uint8_t *buf = zn_hostmem_alloc(3 * MiB, 0);
	uint8_t *check = zn_hostmem_alloc(3 * MiB, 0);

	tu_log_capture_start();
	assert_int_equal(zn_aio_open(aio, path, ZN_AIO_RDWR | ZN_AIO_CREATE, 0, &f), 0);
	assert_false(zn_aio_file_direct(f));
	assert_int_equal(tu_log_count(ZN_LOG_WARN, "O_DIRECT"), 1);
	assert_int_equal(tu_log_count(ZN_LOG_WARN, path), 1);
	/* Buffered files take any alignment. */
	tu_fill_random(buf, 3 * MiB, 31);
	assert_int_equal(zn_aio_pwrite(f, buf + 1, 3 * MiB - 7, 13), (ssize_t)(3 * MiB - 7));
	assert_int_equal(zn_aio_pread(f, check, 3 * MiB - 7, 13), (ssize_t)(3 * MiB - 7));
	assert_memory_equal(check, buf + 1, 3 * MiB - 7);
	assert_int_equal(zn_aio_close(f), 0);
	tu_log_capture_stop();

	zn_aio_destroy(aio);
	zn_hostmem_free(buf, 3 * MiB);
	zn_hostmem_free(check, 3 * MiB);
	umount2(dir, MNT_DETACH);
}

/* Writing to a read-only file: EBADF with the file named. Opening a
 * missing file: ENOENT with the path. */
static void test_bad_descriptor_and_missing(void **state)
{
	(void)state;
	struct zn_aio *aio = make(1, false);
	struct zn_aio_file *f;
	uint8_t *buf = zn_hostmem_alloc(1 * MiB, 0);
	FILE *fp = fopen(tu_path("ro.dat"), "wb");
	assert_non_null(fp);
	assert_int_equal(fwrite(buf, 1, 1 * MiB, fp), 1 * MiB);
	fclose(fp);

	assert_int_equal(zn_aio_open(aio, tu_path("ro.dat"), ZN_AIO_RDONLY, 0, &f), 0);
	assert_int_equal(zn_aio_pwrite(f, buf, 1 * MiB, 0), -EBADF);
	assert_non_null(strstr(zn_last_error(), "write of"));
	assert_non_null(strstr(zn_last_error(), "ro.dat"));
	assert_int_equal(zn_aio_close(f), 0);

	assert_int_equal(zn_aio_open(aio, tu_path("nope/none.dat"), ZN_AIO_RDWR, 0, &f), -ENOENT);
	assert_null(f);
	assert_non_null(strstr(zn_last_error(), "none.dat"));

	zn_aio_destroy(aio);
	zn_hostmem_free(buf, 1 * MiB);
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
		cmocka_unit_test(test_efbig),
		cmocka_unit_test(test_enospc),
		cmocka_unit_test(test_odirect_fallback),
		cmocka_unit_test(test_bad_descriptor_and_missing),
	};
	return tu_run_group_tests(tests, NULL, teardown);
}
