/* The scratch directory of the fuzz targets (see fuzz.h). */
#include "fuzz.h"

#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[4096];

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void remove_dir(void)
{
	if (dir[0])
		nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

const char *fuzz_dir(void)
{
	if (!dir[0]) {
		const char *tmp = getenv("TMPDIR");
		snprintf(dir, sizeof(dir), "%s/zinc-fuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp");
		if (!mkdtemp(dir)) {
			dir[0] = 0;
			return NULL;
		}
		atexit(remove_dir);
	}
	return dir;
}

const char *fuzz_path(const char *name)
{
	static char path[4200];
	const char *d = fuzz_dir();
	if (!d)
		return NULL;
	snprintf(path, sizeof(path), "%s/%s", d, name);
	return path;
}

const char *fuzz_write(const char *name, const void *data, size_t size)
{
	const char *path = fuzz_path(name);
	if (!path)
		return NULL;
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return NULL;
	const char *p = data;
	while (size) {
		ssize_t w = write(fd, p, size);
		if (w <= 0) {
			close(fd);
			return NULL;
		}
		p += w;
		size -= (size_t)w;
	}
	close(fd);
	return path;
}
