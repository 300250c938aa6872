/* Checkpoint manifests (include/zinc/checkpoint.h): manifest.json, the
 * last file written into a step directory before it is renamed into
 * place, lists every other file with its size and XXH3-64, and for a
 * safetensors file every tensor's XXH3-64 of its data bytes, so that a
 * damaged checkpoint is found before it is trained from and the message
 * names the file and the tensor.  A step directory is complete when its
 * manifest is there and says so.
 *
 * A file is read once, mapped, a CHUNK at a time, into both its own hash
 * and the hash of the tensor the bytes belong to (a safetensors file's
 * tensors lie back to back in data-offset order, so one tensor is open at
 * a time).  Memory: the names and sums, and at most a CHUNK of mapped
 * pages, whatever the checkpoint's size. */
#include "zn_common.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>

#include "io/doc.h"
#include "io/files.h"
#include "io/manifest.h"
#include "zinc/checkpoint.h"
#include "zinc/json.h"
#include "zinc/safetensors.h"

#define FORMAT "zinc-checkpoint-manifest"
#define VERSION 1
#define CHUNK (8u << 20)            /* bytes read and hashed at a time */
#define MAX_MANIFEST (256u << 20)   /* bytes: a 70B model's is well under 1 MiB */

struct mtensor {
	char *name;
	uint64_t sum;
};

struct mfile {
	char *name;
	uint64_t bytes, sum;
	int64_t mtime_ns;       /* hashing: when the file was last written */
	struct mtensor *t;      /* safetensors files only */
	size_t nt;
	char st_error[512];     /* hashing: why its safetensors header did not read */
};

struct manifest {
	struct mfile *f;
	size_t n;
	uint64_t committed_ns;  /* when its step was committed (wall clock) */
};

static void mfile_free(struct mfile *f)
{
	for (size_t i = 0; i < f->nt; i++)
		free(f->t[i].name);
	free(f->t);
	free(f->name);
	memset(f, 0, sizeof(*f));
}

static void manifest_free(struct manifest *m)
{
	for (size_t i = 0; i < m->n; i++)
		mfile_free(&m->f[i]);
	free(m->f);
	m->f = NULL;
	m->n = 0;
}

static bool is_safetensors(const char *name)
{
	size_t n = strlen(name), s = strlen(".safetensors");
	return n > s && strcmp(name + n - s, ".safetensors") == 0;
}

/* A name a manifest lists: 1 to 255 printable ASCII characters.  Others
 * might not read back: the reader takes JSON as YAML, whose keys stop at
 * 1024 characters (a tab is written as 6) and whose text must be valid
 * UTF-8. */
static bool plain_name(const char *s)
{
	size_t n = 0;
	for (; s[n]; n++)
		if ((unsigned char)s[n] < 0x20 || (unsigned char)s[n] > 0x7e)
			return false;
	return n >= 1 && n <= 255;
}

/* Files a manifest covers: every regular file of the directory but the
 * manifest itself (and its temporary), hidden files, and names no zinc
 * writes (plain_name). */
static bool covered(const char *dir, const char *name)
{
	if (name[0] == '.' || strncmp(name, ZN_CKPT_MANIFEST, strlen(ZN_CKPT_MANIFEST)) == 0 ||
	    !plain_name(name))
		return false;
	char path[4400];
	struct stat st;
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return lstat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Hash DIR/NAME into f (name, bytes, sum, and the tensors' sums of a
 * safetensors file whose header reads; one that does not has st_error
 * set and no tensors).  The file is mapped and read a CHUNK at a time,
 * each chunk's pages dropped from this process once hashed: no heap
 * buffer (a save's memory stays the plan's figure) and no more resident
 * memory than a chunk whatever the file's size.  0 or -errno (message
 * set). */
static int hash_file(const char *dir, const char *name, struct mfile *f)
{
	char path[4400];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	memset(f, 0, sizeof(*f));
	if (!(f->name = strdup(name)))
		return zn_error(-ENOMEM, "out of memory");
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) != 0) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		return zn_error(-e, "cannot read '%s': %s", path, strerror(e));
	}
	f->bytes = (uint64_t)st.st_size;
	const uint8_t *map = NULL;
	if (f->bytes) {
		void *m = mmap(NULL, f->bytes, PROT_READ, MAP_SHARED, fd, 0);
		if (m == MAP_FAILED) {
			int e = errno;
			close(fd);
			return zn_error(-e, "cannot map '%s': %s", path, strerror(e));
		}
		map = m;
		madvise(m, f->bytes, MADV_SEQUENTIAL);
	}
	close(fd);

	/* The tensors' places, in file order (zn_st_get's). */
	struct zn_st_file *sf = NULL;
	if (is_safetensors(name)) {
		char saved[512];
		snprintf(saved, sizeof(saved), "%s", zn_last_error());
		sf = zn_st_open(path);
		if (!sf) {
			snprintf(f->st_error, sizeof(f->st_error), "%s", zn_last_error());
			zn_set_error_str(saved);
		}
	}
	int rc = 0;
	size_t nt = sf ? zn_st_count(sf) : 0;
	/* Tensors listed by name only when every name can be (else the
	 * file's sum alone covers them). */
	for (size_t i = 0; i < nt; i++)
		if (!plain_name(zn_st_get(sf, i)->name))
			nt = 0;
	if (nt && !(f->t = calloc(nt, sizeof(*f->t))))
		rc = zn_error(-ENOMEM, "out of memory");
	for (size_t i = 0; i < nt && !rc; i++) {
		if (!(f->t[i].name = strdup(zn_st_get(sf, i)->name)))
			rc = zn_error(-ENOMEM, "out of memory");
		f->nt = i + 1;
	}

	XXH3_state_t whole, part; /* on the stack: no heap */
	XXH3_INITSTATE(&whole);
	XXH3_INITSTATE(&part);
	XXH3_64bits_reset(&whole);
	XXH3_64bits_reset(&part);
	size_t ti = 0;
	for (uint64_t pos = 0; pos < f->bytes && !rc;) {
		const uint64_t len = ZN_MIN((uint64_t)CHUNK, f->bytes - pos), end = pos + len;
		const uint8_t *buf = map + pos;
		XXH3_64bits_update(&whole, buf, len);
		/* The tensors these bytes belong to: the open one goes on, each
		 * that ends here is finished. */
		while (ti < nt) {
			const struct zn_st_tensor *t = zn_st_get(sf, ti);
			const uint64_t a = zn_st_file_offset(sf, t), b = a + t->bytes;
			if (a >= end)
				break;
			const uint64_t lo = ZN_MAX(a, pos), hi = ZN_MIN(b, end);
			if (lo < hi)
				XXH3_64bits_update(&part, buf + (lo - pos), hi - lo);
			if (b > end)
				break;
			f->t[ti++].sum = XXH3_64bits_digest(&part);
			XXH3_64bits_reset(&part);
		}
		zn_io_drop_pages(buf, len);
		pos = end;
	}
	/* Empty tensors at the very end of the file. */
	for (; ti < nt && !rc; ti++)
		f->t[ti].sum = XXH3_64bits_digest(&part);
	if (!rc)
		f->sum = XXH3_64bits_digest(&whole);
	zn_st_close(sf);
	if (map)
		munmap((void *)map, f->bytes);
	return rc;
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(((const struct mfile *)a)->name, ((const struct mfile *)b)->name);
}

static const struct mfile *find_file(const struct manifest *m, const char *name)
{
	for (size_t i = 0; i < m->n; i++)
		if (strcmp(m->f[i].name, name) == 0)
			return &m->f[i];
	return NULL;
}

static void hex64(uint64_t v, char out[17])
{
	snprintf(out, 17, "%016" PRIx64, v);
}

static int parse_hex64(const char *s, uint64_t *v)
{
	char *end;
	if (!s || strlen(s) != 16)
		return -EINVAL;
	errno = 0;
	*v = strtoull(s, &end, 16);
	return *end || errno ? -EINVAL : 0;
}

/* ---- reading --------------------------------------------------------------- */

/* DIR/manifest.json into m.  -ENODATA when there is none (message set),
 * -EINVAL when it does not read as a manifest (message says what). */
static int manifest_read(const char *dir, struct manifest *m)
{
	char path[4400], where[4600];
	snprintf(path, sizeof(path), "%s/" ZN_CKPT_MANIFEST, dir);
	memset(m, 0, sizeof(*m));
	if (access(path, F_OK) != 0)
		return zn_error(-ENODATA, "'%s' has no " ZN_CKPT_MANIFEST ": it is not a complete "
					  "checkpoint (or one written before zinc kept manifests)",
				dir);
	struct zn_doc *d = zn_doc_create();
	struct zn_doc_node *root = NULL;
	if (!d)
		return zn_error(-ENOMEM, "out of memory");
	int rc = zn_doc_load_json(d, path, MAX_MANIFEST, "a zinc checkpoint manifest", &root);
	const struct zn_doc_node *files = NULL;
	long long version = 0, committed = 0;
	if (!rc) {
		const char *fmt = zn_doc_string(zn_doc_get(root, "format"));
		files = zn_doc_get(root, "files");
		if (!fmt || strcmp(fmt, FORMAT) != 0 ||
		    zn_doc_int(zn_doc_get(root, "version"), &version) != 0)
			rc = zn_error(-EINVAL, "'%s' is not a zinc checkpoint manifest (no \"format\": "
					       "\"" FORMAT "\" and \"version\")", path);
		else if (version > VERSION || version < 1)
			rc = zn_error(-EINVAL, "'%s' is a manifest of version %lld; this zinc reads "
					       "version %d: use the zinc that wrote it, or a newer one",
				      path, version, VERSION);
		else if (zn_doc_int(zn_doc_get(root, "committed_ns"), &committed) != 0 ||
			 committed < 0)
			rc = zn_error(-EINVAL, "'%s' has no \"committed_ns\" (nanoseconds since the "
					       "epoch, not negative)", path);
		else if (!files || files->kind != ZN_DOC_LIST)
			rc = zn_error(-EINVAL, "'%s' has no \"files\" list", path);
	}
	if (!rc)
		m->committed_ns = (uint64_t)committed;
	if (!rc && !(m->f = calloc(files->n ? files->n : 1, sizeof(*m->f))))
		rc = zn_error(-ENOMEM, "out of memory");
	for (size_t i = 0; !rc && i < files->n; i++) {
		const struct zn_doc_node *e = files->items[i], *tn = zn_doc_get(e, "tensors");
		const char *name = zn_doc_string(zn_doc_get(e, "name"));
		long long bytes;
		struct mfile *f = &m->f[m->n++];
		if (!name || !plain_name(name) || strchr(name, '/') ||
		    zn_doc_int(zn_doc_get(e, "bytes"), &bytes) != 0 || bytes < 0 ||
		    parse_hex64(zn_doc_string(zn_doc_get(e, "xxh3")), &f->sum) != 0 ||
		    (tn && tn->kind != ZN_DOC_MAP)) {
			rc = zn_error(-EINVAL, "%s: a file entry needs \"name\" (a file of the "
					       "directory), \"bytes\", \"xxh3\" (16 hex digits) and "
					       "optionally \"tensors\" (name: xxh3)",
				      zn_doc_where(e, where, sizeof(where)));
			break;
		}
		f->bytes = (uint64_t)bytes;
		if (!(f->name = strdup(name)) ||
		    (tn && tn->n && !(f->t = calloc(tn->n, sizeof(*f->t))))) {
			rc = zn_error(-ENOMEM, "out of memory");
			break;
		}
		for (size_t k = 0; tn && k < tn->n && !rc; k++) {
			const char *tname = zn_doc_string(tn->pairs[k].key);
			struct mtensor *t = &f->t[f->nt++];
			if (!tname || !plain_name(tname) ||
			    parse_hex64(zn_doc_string(tn->pairs[k].value), &t->sum) != 0)
				rc = zn_error(-EINVAL, "%s: a tensor's entry is \"name\" (1 to 255 "
						       "printable ASCII characters): \"xxh3 in 16 hex "
						       "digits\"",
					      zn_doc_where(tn->pairs[k].key, where, sizeof(where)));
			else if (!(t->name = strdup(tname)))
				rc = zn_error(-ENOMEM, "out of memory");
		}
	}
	zn_doc_destroy(d);
	if (rc)
		manifest_free(m);
	return rc;
}

/* ---- writing --------------------------------------------------------------- */

static int manifest_text(const struct manifest *m, char **text, size_t *len)
{
	struct zn_json j;
	char hex[17];
	if (zn_json_open_memory(&j, ZN_JSON_PRETTY | ZN_JSON_LINE) != 0)
		return zn_error(-ENOMEM, "out of memory");
	zn_json_begin_object(&j);
	zn_json_key(&j, "format");
	zn_json_string(&j, FORMAT);
	zn_json_key(&j, "version");
	zn_json_uint(&j, VERSION);
	/* Early in the file: zn_ckpt_committed reads only the first bytes. */
	zn_json_key(&j, "committed_ns");
	zn_json_uint(&j, m->committed_ns);
	zn_json_key(&j, "hash");
	zn_json_string(&j, "XXH3-64 of the bytes, 16 hex digits; tensors: of each tensor's data");
	zn_json_key(&j, "files");
	zn_json_begin_array(&j);
	for (size_t i = 0; i < m->n; i++) {
		const struct mfile *f = &m->f[i];
		zn_json_begin_object(&j);
		zn_json_key(&j, "name");
		zn_json_string(&j, f->name);
		zn_json_key(&j, "bytes");
		zn_json_uint(&j, f->bytes);
		zn_json_key(&j, "xxh3");
		hex64(f->sum, hex);
		zn_json_string(&j, hex);
		if (f->nt) {
			zn_json_key(&j, "tensors");
			zn_json_begin_object(&j);
			for (size_t k = 0; k < f->nt; k++) {
				zn_json_key(&j, f->t[k].name);
				hex64(f->t[k].sum, hex);
				zn_json_string(&j, hex);
			}
			zn_json_end_object(&j);
		}
		zn_json_end_object(&j);
	}
	zn_json_end_array(&j);
	zn_json_end_object(&j);
	return zn_json_close_memory(&j, text, len) ? zn_error(-ENOMEM, "out of memory") : 0;
}

/* Hash every covered file of `dir` and write its manifest, committed at
 * `ns` (0: now).  With `old`, a file older than the manifest it came from
 * (mtime before `old_ns`) and of the size it lists keeps its entry unread,
 * and the manifest keeps old's commit time. */
static int manifest_build(const char *dir, const struct manifest *old, int64_t old_ns,
			  uint64_t ns)
{
	struct manifest m = { 0 };
	size_t cap = 0;
	int rc = 0;
	DIR *d = opendir(dir);
	struct dirent *e;
	if (!d)
		return zn_error(-errno, "cannot read '%s': %s", dir, strerror(errno));
	while (!rc && (e = readdir(d))) {
		if (!covered(dir, e->d_name))
			continue;
		if (m.n == cap) {
			struct mfile *nf = realloc(m.f, (cap = cap ? 2 * cap : 16) * sizeof(*nf));
			if (!nf) {
				rc = zn_error(-ENOMEM, "out of memory");
				break;
			}
			m.f = nf;
		}
		const struct mfile *of = old ? find_file(old, e->d_name) : NULL;
		char path[4400];
		struct stat st;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (of && stat(path, &st) == 0 && (uint64_t)st.st_size == of->bytes &&
		    (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec < old_ns) {
			struct mfile *f = &m.f[m.n++];
			memset(f, 0, sizeof(*f));
			f->bytes = of->bytes;
			f->sum = of->sum;
			if (!(f->name = strdup(of->name)) ||
			    (of->nt && !(f->t = calloc(of->nt, sizeof(*f->t)))))
				rc = zn_error(-ENOMEM, "out of memory");
			for (size_t k = 0; k < of->nt && !rc; k++, f->nt++)
				if (!(f->t[k].name = strdup(of->t[k].name)))
					rc = zn_error(-ENOMEM, "out of memory");
				else
					f->t[k].sum = of->t[k].sum;
			continue;
		}
		rc = hash_file(dir, e->d_name, &m.f[m.n]);
		m.n++;
	}
	closedir(d);
	char *text = NULL;
	size_t len = 0;
	if (!rc) {
		struct timespec now;
		clock_gettime(CLOCK_REALTIME, &now);
		/* A refreshed manifest keeps its step's place in the order. */
		m.committed_ns = old  ? old->committed_ns
				 : ns ? ns
				      : (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
		if (m.n)
			qsort(m.f, m.n, sizeof(*m.f), cmp_name);
		rc = manifest_text(&m, &text, &len);
	}
	char path[4400];
	snprintf(path, sizeof(path), "%s/" ZN_CKPT_MANIFEST, dir);
	if (!rc)
		rc = zn_io_write_file_atomic(path, text, len);
	free(text);
	manifest_free(&m);
	return rc;
}

bool zn_ckpt_committed(const char *dir, uint64_t *ns)
{
	char path[4400], head[512];
	snprintf(path, sizeof(path), "%s/" ZN_CKPT_MANIFEST, dir);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	ssize_t n = read(fd, head, sizeof(head) - 1);
	close(fd);
	if (n <= 0)
		return false;
	head[n] = 0;
	const char *at = strstr(head, "\"committed_ns\": ");
	if (!strstr(head, "\"" FORMAT "\"") || !at)
		return false;
	/* digits only, as the full reader takes them (strtoull would read
	 * "-1" as the largest number) */
	const char *num = at + strlen("\"committed_ns\": ");
	if (*num < '0' || *num > '9')
		return false;
	char *end;
	*ns = strtoull(num, &end, 10);
	return end != num;
}

int zn_ckpt_manifest_write(const char *dir)
{
	return manifest_build(dir, NULL, 0, 0);
}

int zn_ckpt_manifest_write_at(const char *dir, uint64_t committed_ns)
{
	return manifest_build(dir, NULL, 0, committed_ns);
}

int zn_ckpt_manifest_refresh(const char *dir)
{
	struct manifest old;
	char path[4400];
	struct stat st;
	snprintf(path, sizeof(path), "%s/" ZN_CKPT_MANIFEST, dir);
	int rc = manifest_read(dir, &old);
	if (rc == -ENODATA)
		return 0; /* nothing vouched for before: nothing to vouch for now */
	if (rc)
		return rc;
	rc = stat(path, &st) != 0 ? zn_error(-errno, "'%s': %s", path, strerror(errno))
				  : manifest_build(dir, &old,
						   (int64_t)st.st_mtim.tv_sec * 1000000000 +
							   st.st_mtim.tv_nsec,
						   0);
	manifest_free(&old);
	return rc;
}

/* ---- verifying ------------------------------------------------------------- */

int zn_ckpt_verify(const char *dir)
{
	struct manifest m;
	int rc = manifest_read(dir, &m);
	if (rc)
		return rc;
	char have[17], want[17];
	for (size_t i = 0; i < m.n && !rc; i++) {
		const struct mfile *w = &m.f[i];
		struct mfile f;
		char path[4400];
		snprintf(path, sizeof(path), "%s/%s", dir, w->name);
		if (access(path, F_OK) != 0) {
			rc = zn_error(-ENOENT, "'%s' is missing: the manifest lists it (%" PRIu64
					       " bytes); the checkpoint is incomplete",
				      path, w->bytes);
			break;
		}
		rc = hash_file(dir, w->name, &f);
		if (rc) {
			mfile_free(&f);
			break;
		}
		if (f.bytes != w->bytes) {
			rc = zn_error(-EBADMSG, "'%s' is %" PRIu64 " bytes, the manifest says %" PRIu64
						": the file was truncated or replaced",
				      path, f.bytes, w->bytes);
		} else if (f.sum != w->sum) {
			/* Name the tensor when one is at fault. */
			const char *bad = NULL;
			uint64_t bs = 0, ws = 0;
			for (size_t k = 0; k < w->nt && !bad; k++)
				for (size_t q = 0; q < f.nt; q++)
					if (strcmp(f.t[q].name, w->t[k].name) == 0) {
						if (f.t[q].sum != w->t[k].sum) {
							bad = w->t[k].name;
							bs = f.t[q].sum;
							ws = w->t[k].sum;
						}
						break;
					}
			hex64(bad ? bs : f.sum, have);
			hex64(bad ? ws : w->sum, want);
			if (bad)
				rc = zn_error(-EBADMSG, "'%s': tensor '%s' is damaged (XXH3 %s, the "
							"manifest says %s)",
					      path, bad, have, want);
			else
				rc = zn_error(-EBADMSG, "'%s' is damaged outside its tensors' data "
							"(XXH3 %s, the manifest says %s)%s%s",
					      path, have, want, f.st_error[0] ? ": " : "",
					      f.st_error);
		}
		mfile_free(&f);
	}
	manifest_free(&m);
	return rc;
}
