/* Files for the io_uring engine: O_DIRECT with its alignment, the buffered
 * fallback, preallocation and fixed-file registration. */
#include "aio_internal.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "zinc/common.h"

/* Direct-I/O alignment from statx (Linux 6.1).  With kernel headers that
 * know STATX_DIOALIGN, glibc's struct statx is the kernel's and has the
 * fields; with older headers they sit in glibc's padding at the kernel's
 * offsets (stx_dio_mem_align at 0x98, stx_dio_offset_align at 0x9c). */
static bool statx_dio_align(int fd, uint32_t *mem, uint32_t *off)
{
	struct statx st;
	uint32_t v[2];

	memset(&st, 0, sizeof(st));
#ifdef STATX_DIOALIGN
	if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &st) != 0 ||
	    !(st.stx_mask & STATX_DIOALIGN))
		return false;
	v[0] = st.stx_dio_mem_align;
	v[1] = st.stx_dio_offset_align;
#else
	_Static_assert(sizeof(st) >= 0xa0, "struct statx too small");
	if (statx(fd, "", AT_EMPTY_PATH, 0x00002000U, &st) != 0 || !(st.stx_mask & 0x00002000U))
		return false;
	memcpy(v, (const uint8_t *)&st + 0x98, sizeof(v));
#endif
	if (v[1] == 0)
		return false; /* the kernel says: no direct I/O on this file */
	*mem = v[0];
	*off = v[1];
	return true;
}

/* The logical block size of the block device holding `fd`, from sysfs;
 * 0 when unknown (network filesystems, device-mapper without queue...). */
static uint32_t logical_block_size(int fd)
{
	struct stat st;
	char path[128];
	unsigned v = 0;

	if (fstat(fd, &st) != 0)
		return 0;
	dev_t dev = S_ISBLK(st.st_mode) ? st.st_rdev : st.st_dev;
	/* A whole disk has queue/ itself; a partition's is its parent's. */
	static const char *const fmts[] = {
		"/sys/dev/block/%u:%u/queue/logical_block_size",
		"/sys/dev/block/%u:%u/../queue/logical_block_size",
	};
	for (size_t i = 0; i < ZN_ARRAY_SIZE(fmts) && !v; i++) {
		snprintf(path, sizeof(path), fmts[i], major(dev), minor(dev));
		FILE *f = fopen(path, "re");
		if (!f)
			continue;
		if (fscanf(f, "%u", &v) != 1)
			v = 0;
		fclose(f);
	}
	return v;
}

struct file_update {
	int slot;
	int fd; /* -1 clears the slot */
};

static int ring_update_file(struct ring *r, void *arg)
{
	const struct file_update *u = arg;
	int rc = io_uring_register_files_update(zn_aio_ring_uring(r), (unsigned)u->slot, &u->fd, 1);
	return rc < 0 ? rc : 0;
}

/* Fixed files save an fget/fput per I/O (fio's --registerfiles). */
static void register_fixed_file(struct zn_aio_file *f)
{
	f->fixed_slot = -1;
	if (!zn_aio_fixed_files_ok(f->aio))
		return;
	int slot = zn_aio_file_slot_get(f->aio);
	if (slot < 0)
		return; /* table full: plain fd still works */
	struct file_update u = { slot, f->fd };
	if (zn_aio_on_rings(f->aio, ring_update_file, &u) != 0) {
		u.fd = -1;
		zn_aio_on_rings(f->aio, ring_update_file, &u);
		zn_aio_file_slot_put(f->aio, slot);
		zn_debug("'%s': fixed-file registration failed; using the plain descriptor",
			 f->path);
		return;
	}
	f->fixed_slot = slot;
}

static int reserve(struct zn_aio_file *f, uint64_t bytes)
{
	char need[32], avail[32];
	struct statvfs vfs;

	if (fallocate(f->fd, 0, 0, (off_t)bytes) == 0)
		return 0;
	int e = errno;
	if (e == EOPNOTSUPP || e == ENOSYS) {
		/* No preallocation on this filesystem: at least give the file
		 * its size so reads of unwritten parts return zeros. */
		struct stat st;
		if (fstat(f->fd, &st) == 0 && (uint64_t)st.st_size >= bytes)
			return 0;
		if (ftruncate(f->fd, (off_t)bytes) == 0)
			return 0;
		e = errno;
	}
	zn_format_size(bytes, need, sizeof(need));
	if (e == ENOSPC && fstatvfs(f->fd, &vfs) == 0)
		return zn_error(-e, "cannot reserve %s for '%s': no space left on the device "
				    "(%s free); free space or choose another path",
				need, f->path,
				zn_format_size((uint64_t)vfs.f_bavail * vfs.f_frsize, avail,
					       sizeof(avail)));
	return zn_error(-e, "cannot reserve %s for '%s': %s", need, f->path, strerror(e));
}

int zn_aio_open(struct zn_aio *aio, const char *path, unsigned flags, uint64_t prealloc,
		struct zn_aio_file **out)
{
	struct zn_aio_file *f;
	int oflags = O_CLOEXEC | ((flags & ZN_AIO_RDWR) ? O_RDWR : O_RDONLY);
	bool created = false;
	int rc;

	*out = NULL;
	if (flags & ZN_AIO_CREATE)
		oflags |= O_CREAT;
	if (flags & ZN_AIO_TRUNC)
		oflags |= O_TRUNC;
	f = calloc(1, sizeof(*f) + strlen(path) + 1);
	if (!f)
		return zn_error(-ENOMEM, "out of memory");
	strcpy(f->path, path);
	f->aio = aio;
	f->fixed_slot = -1;

	if ((flags & ZN_AIO_CREATE) && access(path, F_OK) != 0)
		created = true;
	f->direct = !(flags & ZN_AIO_BUFFERED);
	f->fd = open(path, oflags | (f->direct ? O_DIRECT : 0), 0600);
	if (f->fd < 0 && f->direct && errno == EINVAL) {
		/* The filesystem refuses O_DIRECT (tmpfs before 6.6, some
		 * overlays, FUSE): buffered I/O still works, but the page cache
		 * is in the way of every figure, so say so once. */
		f->direct = false;
		f->fd = open(path, oflags, 0600);
		if (f->fd >= 0)
			zn_warn("'%s': the filesystem refuses O_DIRECT; using buffered I/O "
				"(throughput includes the page cache; put swap files on a "
				"local disk filesystem such as ext4 or xfs)",
				path);
	}
	if (f->fd < 0) {
		int e = errno;
		rc = zn_error(-e, "cannot open '%s': %s", path, strerror(e));
		free(f);
		return rc;
	}

	if (f->direct) {
		uint32_t mem = 0, off = 0;
		if (!statx_dio_align(f->fd, &mem, &off)) {
			/* Older kernel: the device's logical block size for both,
			 * or 4096, which is enough for every common device. */
			off = logical_block_size(f->fd);
			if (off == 0)
				off = 4096;
			mem = off;
		}
		f->align = off;
		f->mem_align = mem ? mem : off;
		uint64_t bs = zn_aio_get_config(aio)->block_size;
		if (bs % f->align) {
			rc = zn_error(-EINVAL,
				      "'%s' needs direct I/O aligned to %u bytes, but aio.block_size "
				      "%" PRIu64 " is not a multiple of it; raise block_size",
				      path, f->align, bs);
			goto fail;
		}
	} else {
		f->align = 1;
		f->mem_align = 1;
	}

	if (prealloc) {
		rc = reserve(f, prealloc);
		if (rc)
			goto fail;
	}
	register_fixed_file(f);
	*out = f;
	return 0;

fail:
	close(f->fd);
	/* Leave nothing behind that we made. */
	if (created)
		unlink(path);
	free(f);
	return rc;
}

int zn_aio_close(struct zn_aio_file *f)
{
	int rc = 0;

	if (!f)
		return 0;
	if (f->fixed_slot >= 0) {
		struct file_update u = { f->fixed_slot, -1 };
		zn_aio_on_rings(f->aio, ring_update_file, &u);
		zn_aio_file_slot_put(f->aio, f->fixed_slot);
	}
	if (close(f->fd) != 0) {
		int e = errno;
		rc = zn_error(-e, "closing '%s' failed: %s", f->path, strerror(e));
	}
	free(f);
	return rc;
}

const char *zn_aio_file_path(const struct zn_aio_file *f)
{
	return f->path;
}

bool zn_aio_file_direct(const struct zn_aio_file *f)
{
	return f->direct;
}

uint32_t zn_aio_file_align(const struct zn_aio_file *f)
{
	return f->align;
}

uint32_t zn_aio_file_mem_align(const struct zn_aio_file *f)
{
	return f->mem_align;
}

int zn_aio_file_fd(const struct zn_aio_file *f)
{
	return f->fd;
}
