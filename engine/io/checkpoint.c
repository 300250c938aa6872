/* Checkpoint directories (include/zinc/checkpoint.h): the temporary
 * ROOT/step-N.tmp-PID a save writes into, its commit (every file and the
 * directory fsynced, renamed to ROOT/step-N, `latest` replaced), the
 * removal of what dead saves left, finding the latest one and pruning old
 * ones.  What goes inside a checkpoint is the trainer's business. */
#include "zn_common.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/files.h"
#include "zinc/checkpoint.h"

#define PREFIX "step-"
#define PATH_LEN 4096

struct zn_ckpt {
	char root[PATH_LEN];
	char tmp[PATH_LEN];     /* ROOT/step-N.tmp-PID */
	char final[PATH_LEN];   /* ROOT/step-N */
	char name[64];          /* step-N */
	char file[2 * PATH_LEN]; /* scratch for zn_ckpt_file */
};

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void rm_tree(const char *path)
{
	nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Leftovers of saves that did not finish: ROOT/step-N.tmp-PID, and
 * ROOT/latest.tmp.PID (zn_io_write_file_atomic's), of dead PIDs. */
static void remove_stale(const char *root)
{
	DIR *d = opendir(root);
	struct dirent *e;
	char path[PATH_LEN + 256];
	static const char latest_tmp[] = "latest.tmp.";

	if (!d)
		return;
	while ((e = readdir(d))) {
		const char *t = strstr(e->d_name, ".tmp-");
		if (strncmp(e->d_name, latest_tmp, strlen(latest_tmp)) == 0)
			t = e->d_name + strlen(latest_tmp) - 5; /* its PID, as below */
		else if (strncmp(e->d_name, PREFIX, strlen(PREFIX)) != 0 || !t)
			continue;
		long pid = strtol(t + 5, NULL, 10);
		/* another live process is saving there (EPERM: alive, another
		 * user's) */
		if (pid > 0 && pid != (long)getpid() &&
		    (kill((pid_t)pid, 0) == 0 || errno == EPERM))
			continue;
		if (snprintf(path, sizeof(path), "%s/%s", root, e->d_name) < (int)sizeof(path)) {
			rm_tree(path);
			zn_info("removed '%s', left by a checkpoint save that did not finish", path);
		}
	}
	closedir(d);
}

int zn_ckpt_check_dir(const char *root)
{
	char probe[PATH_LEN + 64];
	struct stat st;
	if (snprintf(probe, sizeof(probe), "%s", root) >= (int)sizeof(probe))
		return zn_error(-ENAMETOOLONG, "checkpoint.dir '%s' is too long", root);
	/* Not there yet: the nearest existing parent must be a directory the
	 * run can create it in (nothing is made before the first save). */
	while (stat(probe, &st) != 0) {
		char *slash = strrchr(probe, '/');
		const bool absent = errno == ENOENT || errno == ENOTDIR; /* or under a file */
		if (!absent || !slash || slash == probe) {
			if (!absent)
				return zn_error(-errno, "checkpoint.dir '%s': %s", root, strerror(errno));
			snprintf(probe, sizeof(probe), "%s", slash == probe ? "/" : ".");
			break;
		}
		*slash = 0;
	}
	if (stat(probe, &st) != 0 || !S_ISDIR(st.st_mode))
		return zn_error(-ENOTDIR, "checkpoint.dir '%s' cannot be made: '%s' is not a "
					  "directory; point checkpoint.dir elsewhere",
				root, probe);
	if (strcmp(probe, root) != 0)
		return access(probe, W_OK | X_OK) == 0
			       ? 0
			       : zn_error(-errno, "checkpoint.dir '%s' cannot be made in '%s': %s; fix "
						  "its permissions or point checkpoint.dir elsewhere",
					  root, probe, strerror(errno));
	/* There: a file is created and removed in it. */
	if (snprintf(probe, sizeof(probe), "%s/.zinc-probe.%d", root, (int)getpid()) >=
	    (int)sizeof(probe))
		return zn_error(-ENAMETOOLONG, "checkpoint.dir '%s' is too long", root);
	int fd = open(probe, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		int e = errno;
		return zn_error(-e, "checkpoint.dir '%s' is not writable: %s; fix its permissions "
				    "or point checkpoint.dir elsewhere",
				root, strerror(e));
	}
	close(fd);
	unlink(probe);
	return 0;
}

struct zn_ckpt *zn_ckpt_begin(const char *root, uint64_t step)
{
	struct zn_ckpt *c = calloc(1, sizeof(*c));
	if (!c) {
		zn_set_error("out of memory");
		return NULL;
	}
	int mrc = zn_io_mkdirs(root);
	if (mrc) {
		zn_set_error("cannot create the checkpoint directory '%s': %s", root,
			     strerror(-mrc));
		free(c);
		return NULL;
	}
	snprintf(c->root, sizeof(c->root), "%s", root);
	snprintf(c->name, sizeof(c->name), PREFIX "%08" PRIu64, step);
	if (snprintf(c->final, sizeof(c->final), "%s/%s", root, c->name) >= (int)sizeof(c->final) ||
	    snprintf(c->tmp, sizeof(c->tmp), "%s/%s.tmp-%d", root, c->name, (int)getpid()) >=
		    (int)sizeof(c->tmp)) {
		zn_set_error("checkpoint path under '%s' is too long", root);
		free(c);
		return NULL;
	}
	remove_stale(root);
	rm_tree(c->tmp);
	if (mkdir(c->tmp, 0755) != 0) {
		zn_set_error("cannot create '%s': %s; check that the checkpoint directory is "
			     "writable and has room", c->tmp, strerror(errno));
		free(c);
		return NULL;
	}
	return c;
}

const char *zn_ckpt_file(struct zn_ckpt *c, const char *name)
{
	if (snprintf(c->file, sizeof(c->file), "%s/%s", c->tmp, name) >= (int)sizeof(c->file))
		c->file[0] = 0; /* too long: opening "" fails with ENOENT */
	return c->file;
}

/* Replace ROOT/latest with `name`, atomically. */
static int write_latest(const char *root, const char *name)
{
	char latest[PATH_LEN + 64], text[128];
	if (snprintf(latest, sizeof(latest), "%s/latest", root) >= (int)sizeof(latest))
		return -ENAMETOOLONG;
	int n = snprintf(text, sizeof(text), "%s\n", name);
	return zn_io_write_file_atomic(latest, text, (size_t)n);
}

int zn_ckpt_commit(struct zn_ckpt *c)
{
	int rc;
	char what[3 * PATH_LEN];

	/* Files first (callers fsync theirs; this also covers ones that did
	 * not), then the directory entries, then the rename, then `latest`. */
	DIR *d = opendir(c->tmp);
	struct dirent *e;
	rc = d ? 0 : -errno;
	while (d && !rc && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		rc = zn_io_fsync_path(zn_ckpt_file(c, e->d_name), O_RDONLY);
		if (rc)
			snprintf(what, sizeof(what), "syncing '%s'", c->file);
	}
	if (d)
		closedir(d);
	if (!rc && (rc = zn_io_fsync_path(c->tmp, O_RDONLY | O_DIRECTORY)) != 0)
		snprintf(what, sizeof(what), "syncing '%s'", c->tmp);
	if (!rc) {
		/* Saving the same step again replaces the older copy. */
		rm_tree(c->final);
		if (rename(c->tmp, c->final) != 0) {
			rc = -errno;
			snprintf(what, sizeof(what), "renaming '%s'", c->tmp);
		}
	}
	if (!rc && (rc = zn_io_fsync_path(c->root, O_RDONLY | O_DIRECTORY)) != 0)
		snprintf(what, sizeof(what), "syncing '%s'", c->root);
	if (!rc && (rc = write_latest(c->root, c->name)) != 0)
		snprintf(what, sizeof(what), "updating '%s/latest'", c->root);
	if (!rc)
		rc = zn_io_fsync_path(c->root, O_RDONLY | O_DIRECTORY);
	if (rc) {
		rc = zn_error(rc, "checkpoint %s failed while %s: %s; the previous checkpoint is "
				  "still the latest", c->name, what, strerror(-rc));
		rm_tree(c->tmp);
	}
	free(c);
	return rc;
}

void zn_ckpt_abort(struct zn_ckpt *c)
{
	if (!c)
		return;
	rm_tree(c->tmp);
	free(c);
}

int zn_ckpt_latest(const char *root, char *out, size_t len)
{
	char path[PATH_LEN + 64], name[256] = "";
	if (snprintf(path, sizeof(path), "%s/latest", root) >= (int)sizeof(path))
		return zn_error(-ENAMETOOLONG, "checkpoint path '%s' is too long", root);
	FILE *f = fopen(path, "re");
	if (!f)
		return zn_error(-ENOENT, "no checkpoint in '%s' (no 'latest' file)", root);
	if (!fgets(name, sizeof(name), f))
		name[0] = 0;
	fclose(f);
	name[strcspn(name, "\r\n")] = 0;
	struct stat st;
	if (!name[0] || strchr(name, '/') || snprintf(out, len, "%s/%s", root, name) >= (int)len ||
	    stat(out, &st) != 0 || !S_ISDIR(st.st_mode))
		return zn_error(-ENOENT, "'%s' names '%s', which is not a checkpoint directory",
				path, name);
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int zn_ckpt_prune(const char *root, unsigned keep)
{
	char latest[PATH_LEN], path[PATH_LEN + 256];
	char *names[4096];
	size_t n = 0;
	int removed = 0;
	DIR *d = opendir(root);
	struct dirent *e;

	if (!d)
		return zn_error(-errno, "cannot read '%s': %s", root, strerror(errno));
	bool have_latest = zn_ckpt_latest(root, latest, sizeof(latest)) == 0;
	while ((e = readdir(d)) && n < ZN_ARRAY_SIZE(names)) {
		if (strncmp(e->d_name, PREFIX, strlen(PREFIX)) == 0 && !strstr(e->d_name, ".tmp-"))
			names[n++] = strdup(e->d_name);
	}
	closedir(d);
	/* Zero-padded step numbers sort by name. */
	qsort(names, n, sizeof(*names), cmp_str);
	for (size_t i = 0; i < n; i++) {
		snprintf(path, sizeof(path), "%s/%s", root, names[i]);
		if (i + keep < n && !(have_latest && strcmp(path, latest) == 0)) {
			rm_tree(path);
			removed++;
		}
		free(names[i]);
	}
	return removed;
}
