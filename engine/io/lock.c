/* Run locks (include/zinc/checkpoint.h): one run at a time on a
 * checkpoint.dir or an nvme_path.
 *
 * The lock is flock(LOCK_EX) on DIR/NAME, a file holding "PID RUN\n" (the
 * holder's pid, the run's identity) for the message a second run gets.
 * The kernel drops a flock when its holder dies, so a lock file a killed
 * run left behind blocks nobody: the next run takes the flock and writes
 * its own pid over the dead one's.  A holder that ends removes the file
 * before closing it; a process that had opened the file just before and
 * then got the flock would hold a lock on a removed file, so after
 * flock the path is checked to still be the file locked (same inode),
 * else it starts again with the new file.
 *
 * Ranks of one run (processes on one node sharing a directory) pass the
 * same `run`: the first takes the lock, the others see their own run in
 * the file and go on without one. */
#include "zn_common.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "io/files.h"
#include "zinc/checkpoint.h"

struct zn_run_lock {
	int fd;
	char path[];
};

/* The holder's "PID RUN" into pid and run; false when the file is still
 * empty (its holder has not written it yet). */
static bool read_holder(int fd, long *pid, char *run, size_t len)
{
	char text[256];
	ssize_t n = pread(fd, text, sizeof(text) - 1, 0);
	if (n <= 0)
		return false;
	text[n] = 0;
	char *end;
	*pid = strtol(text, &end, 10);
	if (end == text || *end != ' ')
		return false;
	snprintf(run, len, "%s", end + 1);
	run[strcspn(run, "\n")] = 0;
	return true;
}

int zn_run_lock(const char *dir, const char *name, const char *what, const char *run,
		struct zn_run_lock **out)
{
	*out = NULL;
	size_t plen = strlen(dir) + strlen(name) + 2;
	struct zn_run_lock *l = malloc(sizeof(*l) + plen);
	if (!l)
		return zn_error(-ENOMEM, "out of memory");
	snprintf(l->path, plen, "%s/%s", dir, name);
	long pid = 0;
	char holder[200] = "";
	/* A holder between its flock and its write leaves the file empty for
	 * a moment: look again, for about a second. */
	for (int attempt = 0; attempt < 100; attempt++) {
		int fd = open(l->path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
		if (fd < 0) {
			int e = errno;
			free(l);
			return zn_error(-e, "%s '%s': cannot create its lock file '%s%s%s': %s", what,
					dir, dir, "/", name, strerror(e));
		}
		if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
			struct stat a, b;
			if (fstat(fd, &a) != 0 || stat(l->path, &b) != 0 || a.st_ino != b.st_ino ||
			    a.st_dev != b.st_dev) {
				close(fd); /* removed by a holder that ended: again */
				continue;
			}
			char text[256];
			int n = snprintf(text, sizeof(text), "%d %s\n", (int)getpid(), run);
			int rc = ftruncate(fd, 0) == 0 ? zn_io_pwrite_all(fd, text, (size_t)n, 0)
						       : -errno;
			if (rc) {
				zn_error(rc, "%s '%s': cannot write its lock file '%s': %s", what,
					 dir, l->path, strerror(-rc));
				close(fd);
				free(l);
				return rc;
			}
			l->fd = fd;
			*out = l;
			return 0;
		}
		if (errno != EWOULDBLOCK) {
			int e = errno;
			close(fd);
			free(l);
			return zn_error(-e, "%s '%s': cannot lock '%s%s%s': %s", what, dir, dir, "/",
					name, strerror(e));
		}
		bool known = read_holder(fd, &pid, holder, sizeof(holder));
		close(fd);
		if (known)
			break;
		nanosleep(&(struct timespec){ .tv_nsec = 10 * 1000 * 1000 }, NULL);
	}
	if (holder[0] && strcmp(holder, run) == 0) {
		free(l); /* a process of this run holds it */
		return 0;
	}
	const char *at = strchr(holder, '@');
	int rc = zn_error(-EBUSY, "%s '%s' is in use by another run: pid %ld%s%s holds its lock "
				  "'%s'; wait for that run to end, or give this run another %s",
			  what, dir, pid, at ? " on " : "", at ? at + 1 : "", l->path, what);
	if (!pid)
		rc = zn_error(-EBUSY, "%s '%s' is in use by another run (its lock '%s' names no "
				      "pid); wait for that run to end, or give this run another %s",
			      what, dir, l->path, what);
	free(l);
	return rc;
}

const char *zn_run_lock_path(const struct zn_run_lock *l)
{
	return l->path;
}

void zn_run_unlock(struct zn_run_lock *l)
{
	if (!l)
		return;
	/* Removed while still held: nobody takes a lock on a file about to
	 * go (see the inode check above). */
	unlink(l->path);
	close(l->fd);
	free(l);
}
