/* File-system steps the file formats share (see files.h). */
#include "io/files.h"

#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "zn_common.h"

char *zn_io_join(const char *dir, const char *name)
{
	char *p;
	if (asprintf(&p, "%s/%s", dir, name) < 0)
		return NULL;
	return p;
}

bool zn_io_is_file(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

bool zn_io_is_dir(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Linux moves at most ~2 GiB per call; ask for 1 GiB. */
#define IO_MAX (1u << 30)

/* n bytes between q and fd: read or written at `off`, or (off < 0)
 * written at the file's position; through short transfers and EINTR. */
static int move_all(int fd, uint8_t *q, uint64_t n, int64_t off, bool rd)
{
	while (n) {
		size_t k = n > IO_MAX ? IO_MAX : (size_t)n;
		ssize_t r = rd ? pread(fd, q, k, (off_t)off)
			       : off < 0 ? write(fd, q, k) : pwrite(fd, q, k, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r < 0 ? -errno : -EIO;
		q += r;
		n -= (uint64_t)r;
		if (off >= 0)
			off += r;
	}
	return 0;
}

int zn_io_write_all(int fd, const void *p, uint64_t n)
{
	return move_all(fd, (uint8_t *)p, n, -1, false);
}

int zn_io_pwrite_all(int fd, const void *p, uint64_t n, uint64_t off)
{
	return move_all(fd, (uint8_t *)p, n, (int64_t)off, false);
}

int zn_io_pread_all(int fd, void *p, uint64_t n, uint64_t off)
{
	return move_all(fd, p, n, (int64_t)off, true);
}

void zn_io_drop_pages(const void *p, uint64_t n)
{
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
	uintptr_t lo = ZN_ALIGN_UP((uintptr_t)p, page);
	uintptr_t hi = ((uintptr_t)p + n) / page * page;
	if (hi > lo)
		madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

int zn_io_fsync_path(const char *path, int flags)
{
	int fd = open(path, flags | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int rc = fsync(fd) ? -errno : 0;
	close(fd);
	return rc;
}

void zn_io_fsync_parent(const char *path)
{
	char *dir = strdup(path);
	if (dir)
		zn_io_fsync_path(dirname(dir), O_RDONLY | O_DIRECTORY);
	free(dir);
}

int zn_io_mkdirs(const char *path)
{
	char *p = strdup(path);
	int rc = 0;
	if (!p)
		return -ENOMEM;
	for (char *c = p + 1; *c && !rc; c++) {
		if (*c != '/')
			continue;
		*c = 0;
		if (mkdir(p, 0755) != 0 && errno != EEXIST)
			rc = -errno;
		*c = '/';
	}
	if (!rc && mkdir(p, 0755) != 0 && errno != EEXIST)
		rc = -errno;
	free(p);
	return rc;
}

int zn_io_write_file_atomic(const char *path, const void *data, size_t len)
{
	char *tmp;
	int rc = 0;
	if (asprintf(&tmp, "%s.tmp.%d", path, (int)getpid()) < 0)
		return zn_error(-ENOMEM, "out of memory");
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		rc = zn_error(-errno, "cannot create '%s': %s", tmp, strerror(errno));
		free(tmp);
		return rc;
	}
	rc = zn_io_write_all(fd, data, len);
	if (!rc && fsync(fd) != 0)
		rc = -errno;
	if (close(fd) != 0 && !rc)
		rc = -errno;
	if (!rc && rename(tmp, path) != 0)
		rc = -errno;
	if (rc) {
		unlink(tmp);
		zn_error(rc, "cannot write '%s': %s", path, strerror(-rc));
	}
	free(tmp);
	return rc;
}
