/* Checkpoint directories (include/zinc/checkpoint.h): the temporary
 * ROOT/step-N.tmp-PID a save writes into, its commit (the manifest written
 * last -- manifest.c --, every file and the directory fsynced, renamed to
 * ROOT/step-N, `latest` replaced as a hint), the removal of what dead
 * saves left, finding the newest complete one (verified, for a resume)
 * and pruning old ones.  What goes inside a checkpoint is the trainer's
 * business. */
#include "zn_common.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/files.h"
#include "io/manifest.h"
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

/* The temporary directory over ROOT/step-N: atomically exchanged with an
 * older copy of the same step when there is one (which is then removed),
 * so that no crash leaves the step without a complete copy; renamed
 * otherwise.  0 or -errno. */
static int put_in_place(struct zn_ckpt *c)
{
	if (renameat2(AT_FDCWD, c->tmp, AT_FDCWD, c->final, RENAME_EXCHANGE) == 0) {
		rm_tree(c->tmp); /* now the older copy */
		return 0;
	}
	if (errno != ENOENT && errno != EINVAL && errno != ENOSYS)
		return -errno;
	/* No older copy (ENOENT), or a file system without exchange. */
	if (errno != ENOENT)
		rm_tree(c->final);
	return rename(c->tmp, c->final) == 0 ? 0 : -errno;
}

/* A step directory under a checkpoint root: complete when its manifest
 * is there, and then ordered by when it was committed. */
struct step {
	char *name;      /* step-N */
	bool complete;
	uint64_t ns;     /* committed, wall clock */
};

static int list_steps(const char *root, struct step **steps, int *ncomplete);
static void free_steps(struct step *v, int n);

/* Now, or just after the newest complete step's commit when the clock
 * says earlier (set back since): the order of commits is the order of
 * their times. */
static uint64_t commit_time(const char *root)
{
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	uint64_t ns = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
	struct step *v;
	int nc, n = list_steps(root, &v, &nc);
	if (n > 0 && nc && v[0].ns >= ns)
		ns = v[0].ns + 1;
	if (n > 0)
		free_steps(v, n);
	return ns;
}

int zn_ckpt_commit(struct zn_ckpt *c)
{
	int rc;
	char what[3 * PATH_LEN];

	/* The manifest, written last: every file's size and checksum, read
	 * back from what was written.  Then the files (callers fsync theirs;
	 * this also covers ones that did not), the directory entries, the
	 * rename, `latest`. */
	rc = zn_ckpt_manifest_write_at(c->tmp, commit_time(c->root));
	if (rc)
		snprintf(what, sizeof(what), "writing its manifest (%s)", zn_last_error());
	DIR *d = rc ? NULL : opendir(c->tmp);
	struct dirent *e;
	if (!rc && !d) {
		rc = -errno;
		snprintf(what, sizeof(what), "reading '%s'", c->tmp);
	}
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
	if (!rc && (rc = put_in_place(c)) != 0)
		snprintf(what, sizeof(what), "renaming '%s'", c->tmp);
	if (rc) {
		rc = zn_error(rc, "checkpoint %s failed while %s: %s; the previous checkpoint is "
				  "still the latest", c->name, what, strerror(-rc));
		rm_tree(c->tmp);
		free(c);
		return rc;
	}
	/* In place and complete: what follows makes the rename durable and
	 * the hint current. */
	if ((rc = zn_io_fsync_path(c->root, O_RDONLY | O_DIRECTORY)) != 0)
		rc = zn_error(rc, "checkpoint %s is in place, but syncing '%s' failed: %s; a crash "
				  "now may lose it (the previous checkpoint stays)",
			      c->name, c->root, strerror(-rc));
	/* `latest` is a hint (resume finds the newest complete step itself):
	 * failing to write it loses nothing. */
	if (!rc && write_latest(c->root, c->name) != 0)
		zn_warn("checkpoint %s is complete, but '%s/latest' could not be updated (%s); "
			"resume finds the newest complete checkpoint without it",
			c->name, c->root, zn_last_error());
	else if (!rc)
		zn_io_fsync_path(c->root, O_RDONLY | O_DIRECTORY);
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

/* Complete ones first, the most recently committed first (a run that
 * started again from scratch saves steps numbered lower than an older
 * run's: the newest is the last committed, not the largest number), then
 * the rest by step, newest first (zero-padded numbers sort by name). */
static int cmp_step(const void *pa, const void *pb)
{
	const struct step *a = pa, *b = pb;
	if (a->complete != b->complete)
		return a->complete ? -1 : 1;
	if (a->complete && a->ns != b->ns)
		return a->ns > b->ns ? -1 : 1;
	return strcmp(b->name, a->name);
}

static void free_steps(struct step *v, int n)
{
	for (int i = 0; i < n; i++)
		free(v[i].name);
	free(v);
}

/* The step directories under `root` (ROOT/step-N, no temporary ones) in
 * cmp_step's order, in *steps (free_steps), and in *ncomplete how many are
 * complete.  How many, or -errno (message set); a root that is not there
 * has none. */
static int list_steps(const char *root, struct step **steps, int *ncomplete)
{
	DIR *d = opendir(root);
	struct dirent *e;
	size_t n = 0, cap = 0;
	struct step *v = NULL;
	char dir[PATH_LEN + 300];
	*steps = NULL;
	*ncomplete = 0;
	if (!d)
		return errno == ENOENT ? 0 : zn_error(-errno, "cannot read '%s': %s", root,
						      strerror(errno));
	while ((e = readdir(d))) {
		if (strncmp(e->d_name, PREFIX, strlen(PREFIX)) != 0 || strchr(e->d_name, '.'))
			continue;
		if (n == cap) {
			struct step *nv = realloc(v, (cap = cap ? 2 * cap : 64) * sizeof(*v));
			if (!nv)
				break;
			v = nv;
		}
		if (!(v[n].name = strdup(e->d_name)))
			break;
		snprintf(dir, sizeof(dir), "%s/%s", root, e->d_name);
		v[n].complete = zn_ckpt_committed(dir, &v[n].ns);
		*ncomplete += v[n].complete;
		n++;
	}
	closedir(d);
	if (e) { /* stopped early: out of memory */
		free_steps(v, (int)n);
		return zn_error(-ENOMEM, "out of memory");
	}
	if (n) /* (qsort's array may not be NULL, even empty) */
		qsort(v, n, sizeof(*v), cmp_step);
	*steps = v;
	return (int)n;
}

/* What `latest` names, when it names a step directory (a checkpoint of a
 * zinc that kept no manifests is found through it alone). */
static bool read_latest(const char *root, char *name, size_t len)
{
	char path[PATH_LEN + 64], full[PATH_LEN + 300];
	struct stat st;
	snprintf(path, sizeof(path), "%s/latest", root);
	FILE *f = fopen(path, "re");
	if (!f)
		return false;
	if (!fgets(name, (int)len, f))
		name[0] = 0;
	fclose(f);
	name[strcspn(name, "\r\n")] = 0;
	snprintf(full, sizeof(full), "%s/%s", root, name);
	return name[0] && !strchr(name, '/') && stat(full, &st) == 0 && S_ISDIR(st.st_mode);
}

static int put_path(char *out, size_t len, const char *root, const char *name)
{
	return snprintf(out, len, "%s/%s", root, name) >= (int)len
		       ? zn_error(-ENAMETOOLONG, "checkpoint path under '%s' is too long", root)
		       : 0;
}

int zn_ckpt_latest(const char *root, char *out, size_t len)
{
	struct step *v;
	char legacy[256];
	int nc, n = list_steps(root, &v, &nc);
	if (n < 0)
		return n;
	int rc;
	if (nc)
		rc = put_path(out, len, root, v[0].name);
	else if (read_latest(root, legacy, sizeof(legacy)))
		rc = put_path(out, len, root, legacy);
	else
		rc = zn_error(-ENOENT, "no complete checkpoint in '%s' (no step-N directory with a "
				       "%s)", root, ZN_CKPT_MANIFEST);
	free_steps(v, n);
	return rc;
}

int zn_ckpt_find(const char *root, char *out, size_t len)
{
	struct step *v;
	char legacy[256], dir[PATH_LEN + 300];
	char first_bad[64] = "", why[1024] = "";
	int nc, n = list_steps(root, &v, &nc);
	if (n < 0)
		return n;
	int rc = -ENOENT, bad = 0;
	for (int i = 0; i < nc && rc; i++) {
		snprintf(dir, sizeof(dir), "%s/%s", root, v[i].name);
		int vrc = zn_ckpt_verify(dir);
		if (vrc == -ENOMEM) {
			rc = vrc;
			break;
		}
		if (vrc == 0) {
			rc = put_path(out, len, root, v[i].name);
			if (!rc && bad)
				zn_warn("using %s instead of %s, which is damaged: %s is the "
					"newest complete checkpoint in '%s' that verifies",
					v[i].name, first_bad, v[i].name, root);
			break;
		}
		zn_warn("checkpoint %s in '%s' is damaged: %s", v[i].name, root, zn_last_error());
		if (!bad++) {
			snprintf(first_bad, sizeof(first_bad), "%s", v[i].name);
			snprintf(why, sizeof(why), "%s", zn_last_error());
		}
	}
	if (rc == -ENOENT && bad) {
		rc = zn_error(-EBADMSG, "no checkpoint in '%s' verifies (%d complete, all damaged; "
					"the newest, %s: %s): restore the damaged files, or set "
					"checkpoint.resume: false to start from scratch",
			      root, bad, first_bad, why);
	} else if (rc == -ENOENT && !nc && read_latest(root, legacy, sizeof(legacy))) {
		/* A zinc that kept no manifests wrote this root: its `latest`
		 * is all there is to go by. */
		rc = put_path(out, len, root, legacy);
		if (!rc)
			zn_warn("checkpoint '%s/%s' has no manifest.json (written by a zinc before "
				"checksums): it cannot be verified; using it as it is",
				root, legacy);
	} else if (rc == -ENOENT) {
		rc = zn_error(-ENOENT, "no complete checkpoint in '%s'%s", root,
			      n ? " (step directories without a manifest are saves that did not "
				  "finish)"
				: "");
	}
	free_steps(v, n);
	return rc;
}

/* After a commit: the `keep` most recently committed complete checkpoints
 * stay; older complete ones go, and so do step directories without a
 * manifest numbered below every one kept (a newer one is not ours to
 * judge).  The commit just made is the first kept, so a complete
 * checkpoint is removed only once `keep` newer ones are complete.  A root
 * an older zinc wrote (no manifests at all) is pruned by step number, its
 * `latest` kept. */
int zn_ckpt_prune(const char *root, unsigned keep)
{
	struct step *v;
	char legacy[256] = "", path[PATH_LEN + 300];
	int nc, n = list_steps(root, &v, &nc);
	if (n < 0)
		return n;
	if (keep == 0)
		keep = 1;
	const bool have_legacy = !nc && read_latest(root, legacy, sizeof(legacy));
	/* The lowest step kept (names sort as numbers). */
	const char *lowest = NULL;
	for (int i = 0; i < nc && i < (int)keep; i++)
		if (!lowest || strcmp(v[i].name, lowest) < 0)
			lowest = v[i].name;
	int removed = 0;
	for (int i = 0; i < n; i++) {
		bool go;
		if (!nc) /* no manifests: by step number */
			go = i >= (int)keep && !(have_legacy && strcmp(v[i].name, legacy) == 0);
		else if (v[i].complete)
			go = i >= (int)keep;
		else
			go = strcmp(v[i].name, lowest) < 0;
		if (!go)
			continue;
		snprintf(path, sizeof(path), "%s/%s", root, v[i].name);
		rm_tree(path);
		removed++;
	}
	free_steps(v, n);
	return removed;
}
