/* The swap store: preallocated swap files in one or more directories (one
 * per disk), an extent allocator, striping, and XXH3 checksums.
 *
 * Layout of an extent over P paths with stripe unit S: the tensor's padded
 * bytes are cut into chunks of S; chunk i lives on path i % P at offset
 * base[p] + (i / P) * S, so each path holds one contiguous range and a read
 * or write moves through every disk at once (RAID-0).  A tensor of one
 * chunk, or a store of one path, uses a single range on the path with the
 * most free space.
 */
#include "zn_common.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <xxhash.h>

#include "zinc/checksum.h"
#include "zinc/offload.h"

#define ALIGN 4096u                 /* every offset and length; covers any disk */
#define DEFAULT_STRIPE (4u << 20)
#define SWAP_PREFIX "zinc-swap-"
#define SWAP_SUFFIX ".swp"

struct range {
	uint64_t off, len;
};

struct swapfile {
	char *dir;
	char *path;
	struct zn_aio_file *f;
	uint64_t size;
	struct range *free;  /* sorted by offset, coalesced */
	size_t nfree, cap;
	uint64_t used;
};

struct zn_store {
	struct zn_aio *aio;
	unsigned npaths;
	uint64_t stripe;
	bool checksum;
	uint64_t capacity;
	pthread_mutex_t lock;
	struct swapfile files[ZN_STORE_MAX_PATHS];
};

struct zn_extent {
	char name[96];
	uint64_t bytes, padded;
	bool striped;          /* chunks over all paths, else one range on `file` */
	unsigned file;         /* the path (striped: the path of chunk 0) */
	uint64_t off[ZN_STORE_MAX_PATHS], len[ZN_STORE_MAX_PATHS];
	XXH64_hash_t sum;
	bool written;          /* has contents (else reads give zeros) */
	bool bad;              /* the last write failed: contents unknown */
	bool busy;             /* an I/O is in flight */
};

struct zn_store_io {
	struct zn_store *store;
	struct zn_extent *ext;
	bool write;
	uint8_t *buf;
	XXH64_hash_t sum;      /* write: the checksum the extent gets on success */
	int submit_err;        /* a chunk that could not even be submitted */
	unsigned nreq;
	struct {
		size_t expect;     /* bytes the request must move */
		struct zn_aio_req *req;
	} slot[];              /* one per chunk */
};

static atomic_uint store_counter;

/* ---- free-range allocator (per file) ------------------------------------ */

static int ranges_reserve(struct swapfile *sf, size_t n)
{
	if (n <= sf->cap)
		return 0;
	size_t cap = ZN_MAX(n, sf->cap * 2 + 8);
	struct range *r = realloc(sf->free, cap * sizeof(*r));
	if (!r)
		return -ENOMEM;
	sf->free = r;
	sf->cap = cap;
	return 0;
}

/* First fit.  Returns the offset or UINT64_MAX. */
static uint64_t range_alloc(struct swapfile *sf, uint64_t len)
{
	for (size_t i = 0; i < sf->nfree; i++) {
		struct range *r = &sf->free[i];
		if (r->len < len)
			continue;
		uint64_t off = r->off;
		r->off += len;
		r->len -= len;
		if (r->len == 0) {
			memmove(r, r + 1, (sf->nfree - i - 1) * sizeof(*r));
			sf->nfree--;
		}
		sf->used += len;
		return off;
	}
	return UINT64_MAX;
}

static uint64_t largest_free(const struct swapfile *sf)
{
	uint64_t m = 0;
	for (size_t i = 0; i < sf->nfree; i++)
		m = ZN_MAX(m, sf->free[i].len);
	return m;
}

static int range_free(struct swapfile *sf, uint64_t off, uint64_t len)
{
	size_t i = 0;
	while (i < sf->nfree && sf->free[i].off < off)
		i++;
	bool merge_prev = i > 0 && sf->free[i - 1].off + sf->free[i - 1].len == off;
	bool merge_next = i < sf->nfree && off + len == sf->free[i].off;
	sf->used -= len;
	if (merge_prev && merge_next) {
		sf->free[i - 1].len += len + sf->free[i].len;
		memmove(&sf->free[i], &sf->free[i + 1], (sf->nfree - i - 1) * sizeof(struct range));
		sf->nfree--;
	} else if (merge_prev) {
		sf->free[i - 1].len += len;
	} else if (merge_next) {
		sf->free[i].off = off;
		sf->free[i].len += len;
	} else {
		if (ranges_reserve(sf, sf->nfree + 1))
			return -ENOMEM;
		memmove(&sf->free[i + 1], &sf->free[i], (sf->nfree - i) * sizeof(struct range));
		sf->free[i] = (struct range){ off, len };
		sf->nfree++;
	}
	return 0;
}

/* ---- creation ------------------------------------------------------------- */

/* Remove swap files that a crashed run left in `dir`: ours hold an
 * exclusive flock for their whole life, so a file we can lock is orphaned. */
static void remove_stale(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char path[4096];

	if (!d)
		return;
	while ((e = readdir(d))) {
		size_t n = strlen(e->d_name);
		if (strncmp(e->d_name, SWAP_PREFIX, strlen(SWAP_PREFIX)) != 0 ||
		    n < strlen(SWAP_SUFFIX) ||
		    strcmp(e->d_name + n - strlen(SWAP_SUFFIX), SWAP_SUFFIX) != 0)
			continue;
		if (snprintf(path, sizeof(path), "%s/%s", dir, e->d_name) >= (int)sizeof(path))
			continue;
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
			unlink(path);
			zn_info("removed '%s', a swap file left by a run that did not finish", path);
		}
		close(fd);
	}
	closedir(d);
}

/* Room check for all paths before anything is written; paths on the same
 * filesystem share its free space. */
static int check_room(const struct zn_store_config *cfg, uint64_t per_path)
{
	char msg[2048] = "", need[32], have[32];
	struct stat st[ZN_STORE_MAX_PATHS];
	struct statvfs vfs[ZN_STORE_MAX_PATHS];
	bool short_of_room = false;

	for (unsigned i = 0; i < cfg->npaths; i++) {
		if (stat(cfg->paths[i], &st[i]) != 0 || !S_ISDIR(st[i].st_mode)) {
			int e = stat(cfg->paths[i], &st[i]) != 0 ? errno : ENOTDIR;
			return zn_error(-e, "nvme_path '%s': %s; create the directory or fix the path",
					cfg->paths[i], strerror(e));
		}
		if (access(cfg->paths[i], W_OK | X_OK) != 0) {
			int e = errno;
			return zn_error(-e, "nvme_path '%s': cannot create files there: %s",
					cfg->paths[i], strerror(e));
		}
		if (statvfs(cfg->paths[i], &vfs[i]) != 0) {
			int e = errno;
			return zn_error(-e, "nvme_path '%s': %s", cfg->paths[i], strerror(e));
		}
	}
	for (unsigned i = 0; i < cfg->npaths; i++) {
		uint64_t needed = 0;
		for (unsigned k = 0; k < cfg->npaths; k++)
			if (st[k].st_dev == st[i].st_dev)
				needed += per_path;
		uint64_t avail = (uint64_t)vfs[i].f_bavail * vfs[i].f_frsize;
		/* A filesystem that keeps no count (ramfs: 0 blocks in all)
		 * has no limit to check; preallocation finds the truth. */
		if (needed > avail && vfs[i].f_blocks != 0)
			short_of_room = true;
		snprintf(msg + strlen(msg), sizeof(msg) - strlen(msg), "%s'%s' needs %s, %s free",
			 i ? "; " : "", cfg->paths[i], zn_format_size(needed, need, sizeof(need)),
			 zn_format_size(avail, have, sizeof(have)));
	}
	if (short_of_room)
		return zn_error(-ENOSPC, "not enough room for the swap store: %s; free space, add "
					 "nvme paths or lower the offloaded size",
				msg);
	return 0;
}

uint64_t zn_store_path_bytes(const struct zn_store_config *cfg)
{
	uint64_t stripe = cfg->stripe_bytes ? cfg->stripe_bytes : DEFAULT_STRIPE;
	return ZN_ALIGN_UP(ZN_DIV_ROUND_UP(cfg->capacity, cfg->npaths), ALIGN) +
	       (cfg->npaths > 1 ? 2 * stripe : 0);
}

struct zn_store *zn_store_create(const struct zn_store_config *cfg, struct zn_aio *aio)
{
	struct zn_store *s;
	int rc;

	if (!cfg || !aio || cfg->npaths == 0 || cfg->npaths > ZN_STORE_MAX_PATHS ||
	    cfg->capacity == 0) {
		zn_set_error("swap store: need an aio handle, 1 to %d paths and a capacity above 0",
			     ZN_STORE_MAX_PATHS);
		return NULL;
	}
	uint64_t stripe = cfg->stripe_bytes ? cfg->stripe_bytes : DEFAULT_STRIPE;
	if (stripe % ALIGN) {
		zn_set_error("swap store: stripe size %" PRIu64 " is not a multiple of %u", stripe,
			     ALIGN);
		return NULL;
	}
	/* Each path takes its share, plus two stripes of slack: extents
	 * start on the emptiest path, which keeps the paths within about a
	 * stripe of each other. */
	uint64_t per_path = zn_store_path_bytes(cfg);
	if (check_room(cfg, per_path))
		return NULL;

	s = calloc(1, sizeof(*s));
	if (!s) {
		zn_set_error("swap store: out of memory");
		return NULL;
	}
	s->aio = aio;
	s->npaths = cfg->npaths;
	s->stripe = stripe;
	s->checksum = cfg->checksum;
	s->capacity = per_path * cfg->npaths;
	pthread_mutex_init(&s->lock, NULL);
	unsigned id = atomic_fetch_add(&store_counter, 1);

	for (unsigned i = 0; i < cfg->npaths; i++) {
		struct swapfile *sf = &s->files[i];
		char path[4096];
		remove_stale(cfg->paths[i]);
		snprintf(path, sizeof(path), "%s/" SWAP_PREFIX "%d-%u-%u" SWAP_SUFFIX,
			 cfg->paths[i], (int)getpid(), id, i);
		sf->dir = strdup(cfg->paths[i]);
		sf->path = strdup(path);
		if (!sf->dir || !sf->path || ranges_reserve(sf, 8)) {
			zn_set_error("swap store: out of memory");
			goto fail;
		}
		rc = zn_aio_open(aio, path, ZN_AIO_RDWR | ZN_AIO_CREATE | ZN_AIO_TRUNC, per_path,
				 &sf->f);
		if (rc)
			goto fail;
		/* Held while the file lives: tells a later run it is not stale. */
		flock(zn_aio_file_fd(sf->f), LOCK_EX | LOCK_NB);
		sf->size = per_path;
		sf->free[0] = (struct range){ 0, per_path };
		sf->nfree = 1;
	}
	return s;

fail:
	zn_store_destroy(s);
	return NULL;
}

void zn_store_destroy(struct zn_store *s)
{
	if (!s)
		return;
	for (unsigned i = 0; i < ZN_STORE_MAX_PATHS; i++) {
		struct swapfile *sf = &s->files[i];
		if (sf->f) {
			zn_aio_close(sf->f);
			unlink(sf->path);
		}
		free(sf->dir);
		free(sf->path);
		free(sf->free);
	}
	pthread_mutex_destroy(&s->lock);
	free(s);
}

uint64_t zn_store_padded(const struct zn_store *s, uint64_t bytes)
{
	(void)s;
	return ZN_ALIGN_UP(bytes, ALIGN);
}

uint64_t zn_store_capacity(const struct zn_store *s)
{
	return s->capacity;
}

uint64_t zn_store_used(struct zn_store *s)
{
	uint64_t u = 0;
	pthread_mutex_lock(&s->lock);
	for (unsigned i = 0; i < s->npaths; i++)
		u += s->files[i].used;
	pthread_mutex_unlock(&s->lock);
	return u;
}

const char *zn_store_file_path(const struct zn_store *s, unsigned i)
{
	return i < s->npaths ? s->files[i].path : NULL;
}

/* ---- extents ------------------------------------------------------------- */

static uint64_t chunks_of(const struct zn_store *s, const struct zn_extent *e)
{
	return ZN_DIV_ROUND_UP(e->padded, s->stripe);
}

int zn_store_alloc(struct zn_store *s, const char *name, uint64_t bytes, struct zn_extent **out)
{
	char b1[32], b2[32], b3[32];
	struct zn_extent *e;
	int rc = 0;

	*out = NULL;
	if (bytes == 0)
		return zn_error(-EINVAL, "swap store: tensor '%s' has zero bytes", name);
	e = calloc(1, sizeof(*e));
	if (!e)
		return zn_error(-ENOMEM, "swap store: out of memory");
	snprintf(e->name, sizeof(e->name), "%s", name);
	e->bytes = bytes;
	e->padded = ZN_ALIGN_UP(bytes, ALIGN);

	pthread_mutex_lock(&s->lock);
	uint64_t n = chunks_of(s, e);
	e->striped = s->npaths > 1 && n > 1;
	/* The path with the most room in one piece: a single range goes
	 * there, and a striped extent starts there, which keeps the paths
	 * within a stripe of each other however extents end. */
	unsigned best = 0;
	uint64_t best_free = 0;
	for (unsigned i = 0; i < s->npaths; i++) {
		uint64_t f = largest_free(&s->files[i]);
		if (f > best_free) {
			best_free = f;
			best = i;
		}
	}
	e->file = best;
	if (!e->striped) {
		e->len[best] = e->padded;
		e->off[best] = range_alloc(&s->files[best], e->padded);
		if (e->off[best] == UINT64_MAX)
			rc = -ENOSPC;
	} else {
		const unsigned P = s->npaths;
		const uint64_t last = e->padded - (n - 1) * s->stripe; /* last chunk's bytes */
		unsigned got = 0;
		for (unsigned p = 0; p < P && !rc; p++) {
			/* Chunks i with (file + i) % P == p: i = q, q + P, ... */
			unsigned q = (p + P - e->file) % P;
			uint64_t count = n > q ? (n - q + P - 1) / P : 0;
			e->len[p] = count * s->stripe;
			if (count && (e->file + n - 1) % P == p)
				e->len[p] -= s->stripe - last;
			if (!e->len[p])
				continue;
			e->off[p] = range_alloc(&s->files[p], e->len[p]);
			if (e->off[p] == UINT64_MAX)
				rc = -ENOSPC;
			else
				got = p + 1;
		}
		if (rc) /* undo the paths that did get their part */
			for (unsigned p = 0; p < got; p++)
				if (e->len[p] && e->off[p] != UINT64_MAX)
					range_free(&s->files[p], e->off[p], e->len[p]);
	}
	uint64_t used = 0;
	for (unsigned i = 0; i < s->npaths; i++)
		used += s->files[i].used;
	pthread_mutex_unlock(&s->lock);

	if (rc) {
		free(e);
		return zn_error(rc, "swap store full: tensor '%s' needs %s, %s of %s in use; "
				    "raise the store's capacity or add nvme paths",
				name, zn_format_size(ZN_ALIGN_UP(bytes, ALIGN), b1, sizeof(b1)),
				zn_format_size(used, b2, sizeof(b2)),
				zn_format_size(s->capacity, b3, sizeof(b3)));
	}
	*out = e;
	return 0;
}

void zn_store_free(struct zn_store *s, struct zn_extent *e)
{
	if (!e)
		return;
	pthread_mutex_lock(&s->lock);
	for (unsigned p = 0; p < s->npaths; p++)
		if (e->len[p])
			range_free(&s->files[p], e->off[p], e->len[p]);
	pthread_mutex_unlock(&s->lock);
	free(e);
}

uint64_t zn_extent_bytes(const struct zn_extent *e)
{
	return e->bytes;
}

const char *zn_extent_name(const struct zn_extent *e)
{
	return e->name;
}

/* ---- I/O ------------------------------------------------------------------- */

static void submit_chunk(struct zn_store_io *op, struct swapfile *sf, uint8_t *buf, uint64_t len,
			 uint64_t off)
{
	int rc;
	if (op->submit_err)
		return;
	rc = op->write ? zn_aio_write(sf->f, buf, len, off, &op->slot[op->nreq].req)
		       : zn_aio_read(sf->f, buf, len, off, &op->slot[op->nreq].req);
	if (rc) {
		op->submit_err = rc;
		return;
	}
	op->slot[op->nreq++].expect = len;
}

static int start_io(struct zn_store *s, struct zn_extent *e, uint8_t *buf, bool write,
		    struct zn_store_io **out)
{
	*out = NULL;
	uint64_t n = e->striped ? chunks_of(s, e) : 1;
	struct zn_store_io *op = calloc(1, sizeof(*op) + n * sizeof(op->slot[0]));
	if (!op)
		return zn_error(-ENOMEM, "swap store: out of memory");
	op->store = s;
	op->ext = e;
	op->write = write;
	op->buf = buf;
	if (write && s->checksum)
		op->sum = zn_checksum64(buf, e->bytes);

	pthread_mutex_lock(&s->lock);
	if (e->busy) {
		pthread_mutex_unlock(&s->lock);
		free(op);
		return zn_error(-EBUSY, "tensor '%s' already has an I/O in flight", e->name);
	}
	e->busy = true;
	bool unwritten = !e->written && !e->bad;
	pthread_mutex_unlock(&s->lock);

	if (!write && unwritten) {
		/* Never written: its contents are zeros, no disk needed.  (A
		 * reused range could hold another tensor's old bytes.) */
		memset(buf, 0, e->padded);
		*out = op;
		return 0;
	}
	/* Chunks in order of their file offsets per path, so each disk sees
	 * sequential I/O; a striped extent keeps all disks busy at once. */
	if (!e->striped) {
		submit_chunk(op, &s->files[e->file], buf, e->padded, e->off[e->file]);
	} else {
		for (uint64_t i = 0; i < n; i++) {
			unsigned p = (unsigned)((e->file + i) % s->npaths);
			uint64_t len = ZN_MIN(s->stripe, e->padded - i * s->stripe);
			submit_chunk(op, &s->files[p], buf + i * s->stripe, len,
				     e->off[p] + (i / s->npaths) * s->stripe);
		}
	}
	*out = op;
	return 0;
}

int zn_store_write(struct zn_store *s, struct zn_extent *e, const void *buf,
		   struct zn_store_io **op)
{
	return start_io(s, e, (uint8_t *)(uintptr_t)buf, true, op);
}

int zn_store_read(struct zn_store *s, struct zn_extent *e, void *buf, struct zn_store_io **op)
{
	return start_io(s, e, buf, false, op);
}

bool zn_store_io_done(const struct zn_store_io *op)
{
	for (unsigned i = 0; i < op->nreq; i++)
		if (!zn_aio_done(op->slot[i].req))
			return false;
	return true;
}

int zn_store_wait(struct zn_store_io *op)
{
	return zn_store_wait_timed(op, NULL);
}

int zn_store_wait_timed(struct zn_store_io *op, uint64_t *done_ns)
{
	uint64_t last = 0;
	struct zn_store *s = op->store;
	struct zn_extent *e = op->ext;
	int rc = op->submit_err;
	char msg[1024] = "";

	if (rc)
		snprintf(msg, sizeof(msg), "%s", zn_last_error());
	/* Every request must be waited for, even after a failure. */
	for (unsigned i = 0; i < op->nreq; i++) {
		uint64_t t;
		ssize_t got = zn_aio_wait_timed(op->slot[i].req, &t);
		last = ZN_MAX(last, t);
		if (rc)
			continue;
		if (got < 0) {
			rc = (int)got;
			snprintf(msg, sizeof(msg), "tensor '%s': %s", e->name, zn_last_error());
		} else if ((size_t)got != op->slot[i].expect) {
			rc = -EIO;
			snprintf(msg, sizeof(msg),
				 "tensor '%s': short %s (%zd of %zu bytes): was the swap file "
				 "truncated?",
				 e->name, op->write ? "write" : "read", got, op->slot[i].expect);
		}
	}

	pthread_mutex_lock(&s->lock);
	bool bad = e->bad, written = e->written;
	XXH64_hash_t sum = e->sum;
	if (op->write) {
		/* A failed write leaves the range half old, half new. */
		e->bad = rc != 0;
		e->written = rc == 0;
		e->sum = op->sum;
	}
	e->busy = false;
	pthread_mutex_unlock(&s->lock);
	if (done_ns)
		*done_ns = last ? last : zn_now_ns(); /* no disk I/O (unwritten): now */

	if (!rc && !op->write) {
		if (bad) {
			rc = -EIO;
			snprintf(msg, sizeof(msg), "tensor '%s': its last write failed, so its "
				 "contents are unknown", e->name);
		} else if (written && s->checksum && zn_checksum64(op->buf, e->bytes) != sum) {
			rc = -EBADMSG;
			snprintf(msg, sizeof(msg),
				 "tensor '%s': checksum mismatch on read from the swap store "
				 "(%s): the data on disk is corrupted", e->name,
				 s->files[e->file].path);
		}
	}
	free(op);
	if (rc)
		return zn_error(rc, "%s", msg);
	return 0;
}
