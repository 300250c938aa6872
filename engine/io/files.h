/* File-system steps the engine's file formats share (engine/io/files.c):
 * whole writes (in order or at an offset), whole reads at an offset, a
 * mapping's pages given back once read, durable renames (fsync of the
 * file, then of the directory that holds the new name), mkdir -p and path
 * joining.  0 or -errno, with
 * no message set, unless a function says otherwise. */
#ifndef ZN_IO_FILES_H
#define ZN_IO_FILES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* "dir/name", malloc'd; NULL when out of memory. */
char *zn_io_join(const char *dir, const char *name);

bool zn_io_is_file(const char *path); /* a regular file (links followed) */
bool zn_io_is_dir(const char *path);

/* Write all n bytes at p to fd, through short writes and EINTR: at the
 * file's position, or (pwrite) at byte `off`.  Read n bytes at `off`
 * likewise (-EIO: the file ends first). */
int zn_io_write_all(int fd, const void *p, uint64_t n);
int zn_io_pwrite_all(int fd, const void *p, uint64_t n, uint64_t off);
int zn_io_pread_all(int fd, void *p, uint64_t n, uint64_t off);

/* Bytes [p, p + n) of a read-only file mapping have been read: the pages
 * wholly inside them leave this process (they stay in the page cache, and
 * a later read maps them again), so that reading a file larger than
 * memory piece by piece never holds it whole.  A page the range only
 * touches is kept: its neighbour may still be read. */
void zn_io_drop_pages(const void *p, uint64_t n);

/* open(path, flags) and fsync it: a file, or with O_DIRECTORY a directory
 * (which makes the names created or renamed in it durable). */
int zn_io_fsync_path(const char *path, int flags);

/* Best effort: fsync the directory that holds `path`, after a rename put
 * the file there. */
void zn_io_fsync_parent(const char *path);

/* mkdir -p, mode 0755. */
int zn_io_mkdirs(const char *path);

/* Replace `path` with `len` bytes, atomically: written to PATH.tmp.PID,
 * fsynced, renamed over `path`.  The directory is not fsynced (the caller
 * may have more to rename first).  The message names the file. */
int zn_io_write_file_atomic(const char *path, const void *data, size_t len);

#endif
