/* safetensors files (include/zinc/safetensors.h): the reader (the file
 * mapped, its JSON header read with engine/io/doc.h and checked against the
 * data before any of it is used) and the writer (header through the JSON
 * writer, data streamed to a temporary file renamed into place). */
#include "zn_common.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/doc.h"
#include "io/files.h"
#include "zinc/json.h"
#include "zinc/safetensors.h"

/* The format caps the header at 100 MB; anything larger is not ours. */
#define MAX_HEADER (100u << 20)

static const struct {
	const char *name;
	size_t size;
} dtypes[ZN_ST_DTYPE_COUNT] = {
	[ZN_ST_F64] = { "F64", 8 },  [ZN_ST_F32] = { "F32", 4 }, [ZN_ST_F16] = { "F16", 2 },
	[ZN_ST_BF16] = { "BF16", 2 }, [ZN_ST_I64] = { "I64", 8 }, [ZN_ST_I32] = { "I32", 4 },
	[ZN_ST_I16] = { "I16", 2 },  [ZN_ST_I8] = { "I8", 1 },   [ZN_ST_U8] = { "U8", 1 },
	[ZN_ST_BOOL] = { "BOOL", 1 },
};

const char *zn_st_dtype_name(enum zn_st_dtype d)
{
	return (unsigned)d < ZN_ST_DTYPE_COUNT ? dtypes[d].name : NULL;
}

size_t zn_st_dtype_size(enum zn_st_dtype d)
{
	return (unsigned)d < ZN_ST_DTYPE_COUNT ? dtypes[d].size : 0;
}

struct zn_st_file {
	char *path;
	uint8_t *map;
	size_t map_len;
	const uint8_t *data;     /* start of the tensor bytes */
	uint64_t data_len;
	struct zn_st_tensor *t;
	size_t n;
	char **names;            /* owned copies */
	char **meta_k, **meta_v;
	size_t nmeta;
};

void zn_st_close(struct zn_st_file *f)
{
	if (!f)
		return;
	if (f->map)
		munmap(f->map, f->map_len);
	for (size_t i = 0; i < f->n; i++)
		free(f->names[i]);
	for (size_t i = 0; i < f->nmeta; i++) {
		free(f->meta_k[i]);
		free(f->meta_v[i]);
	}
	free(f->names);
	free(f->meta_k);
	free(f->meta_v);
	free(f->t);
	free(f->path);
	free(f);
}

/* ---- header parsing ------------------------------------------------------ */

static int bad(const struct zn_st_file *f, const char *what, const char *name)
{
	if (name)
		return zn_error(-EINVAL, "'%s': tensor '%s': %s; the file is damaged or not a "
					 "safetensors file", f->path, name, what);
	return zn_error(-EINVAL, "'%s': %s; the file is damaged or not a safetensors file",
			f->path, what);
}

/* A scalar's text, quoted or not; NULL for anything else. */
static const char *scalar(const struct zn_doc_node *n)
{
	return n && n->kind == ZN_DOC_SCALAR ? n->text : NULL;
}

static int parse_u64(const char *s, uint64_t *out)
{
	char *end;
	if (!s || !*s || *s == '-' || *s == '+')
		return -1;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (*end || errno)
		return -1;
	*out = v;
	return 0;
}

static int parse_tensor(struct zn_st_file *f, const char *name, const struct zn_doc_node *v,
			struct zn_st_tensor *t)
{
	bool have_dtype = false, have_shape = false, have_off = false;
	uint64_t begin = 0, end = 0;

	if (v->kind != ZN_DOC_MAP)
		return bad(f, "its entry is not an object", name);
	for (size_t pi = 0; pi < v->n; pi++) {
		const char *k = scalar(v->pairs[pi].key);
		const struct zn_doc_node *val = v->pairs[pi].value;
		if (!k)
			return bad(f, "a key is not a string", name);
		if (strcmp(k, "dtype") == 0) {
			const char *d = scalar(val);
			int found = -1;
			for (int i = 0; d && i < ZN_ST_DTYPE_COUNT; i++)
				if (strcmp(d, dtypes[i].name) == 0)
					found = i;
			if (found < 0) {
				char msg[96];
				snprintf(msg, sizeof(msg), "unsupported dtype '%s'", d ? d : "?");
				return bad(f, msg, name);
			}
			t->dtype = (enum zn_st_dtype)found;
			have_dtype = true;
		} else if (strcmp(k, "shape") == 0 || strcmp(k, "data_offsets") == 0) {
			if (val->kind != ZN_DOC_LIST)
				return bad(f, "shape and data_offsets must be lists", name);
			size_t cnt = val->n;
			bool shape = k[0] == 's';
			if (shape ? cnt > ZN_ST_MAX_DIMS : cnt != 2)
				return bad(f, shape ? "more dimensions than supported (8)"
						    : "data_offsets must have two numbers", name);
			for (size_t i = 0; i < cnt; i++) {
				uint64_t x;
				if (parse_u64(scalar(val->items[i]), &x))
					return bad(f, "a shape or offset is not a non-negative integer",
						   name);
				if (shape)
					t->shape[i] = x;
				else if (i == 0)
					begin = x;
				else
					end = x;
			}
			if (shape) {
				t->ndim = (unsigned)cnt;
				have_shape = true;
			} else {
				have_off = true;
			}
		} else {
			return bad(f, "unknown field in a tensor entry", name);
		}
	}
	if (!have_dtype || !have_shape || !have_off)
		return bad(f, "dtype, shape or data_offsets missing", name);
	uint64_t elems = 1;
	for (unsigned i = 0; i < t->ndim; i++) {
		if (t->shape[i] && elems > UINT64_MAX / t->shape[i])
			return bad(f, "its shape overflows", name);
		elems *= t->shape[i];
	}
	uint64_t es = dtypes[t->dtype].size;
	if (elems > UINT64_MAX / es || end < begin || end - begin != elems * es)
		return bad(f, "its data_offsets disagree with its shape and dtype", name);
	if (end > f->data_len)
		return bad(f, "its data lies past the end of the file (truncated?)", name);
	t->bytes = end - begin;
	t->data = f->data + begin;
	return 0;
}

static int cmp_offset(const void *a, const void *b)
{
	const struct zn_st_tensor *x = a, *y = b;
	return (x->data > y->data) - (x->data < y->data);
}

/* The header's metadata: string keys and values, copied. */
static int parse_metadata(struct zn_st_file *f, const struct zn_doc_node *v)
{
	if (v->kind != ZN_DOC_MAP)
		return bad(f, "__metadata__ is not an object", NULL);
	/* The arrays are sized for one __metadata__ object. */
	if (f->meta_k)
		return bad(f, "__metadata__ appears twice", NULL);
	f->meta_k = calloc(v->n ? v->n : 1, sizeof(char *));
	f->meta_v = calloc(v->n ? v->n : 1, sizeof(char *));
	if (!f->meta_k || !f->meta_v)
		return zn_error(-ENOMEM, "out of memory");
	for (size_t i = 0; i < v->n; i++) {
		const char *mk = scalar(v->pairs[i].key);
		const char *mv = scalar(v->pairs[i].value);
		if (!mk || !mv)
			return bad(f, "__metadata__ values must be strings", NULL);
		f->meta_k[f->nmeta] = strdup(mk);
		f->meta_v[f->nmeta] = strdup(mv);
		f->nmeta++;
		if (!f->meta_k[f->nmeta - 1] || !f->meta_v[f->nmeta - 1])
			return zn_error(-ENOMEM, "out of memory");
	}
	return 0;
}

static int parse_header(struct zn_st_file *f, const uint8_t *json, size_t len)
{
	struct zn_doc *doc;
	struct zn_doc_node *root;
	int rc = 0;

	if (len == 0 || json[0] != '{')
		return bad(f, "its header is not a JSON object", NULL);
	doc = zn_doc_create();
	if (!doc)
		return zn_error(-ENOMEM, "out of memory");
	rc = zn_doc_parse(doc, (const char *)json, len, f->path, 0, &root);
	if (rc == -EINVAL) {
		const struct zn_doc_error *e = zn_doc_last_error(doc);
		rc = zn_error(-EINVAL, "'%s': bad JSON header at byte %zu: %s", f->path, e->offset,
			      e->problem);
		goto out;
	}
	if (rc)
		goto out;
	if (root->kind != ZN_DOC_MAP) {
		rc = bad(f, "its header is not a JSON object", NULL);
		goto out;
	}
	f->t = calloc(root->n ? root->n : 1, sizeof(*f->t));
	f->names = calloc(root->n ? root->n : 1, sizeof(*f->names));
	if (!f->t || !f->names) {
		rc = zn_error(-ENOMEM, "out of memory");
		goto out;
	}
	for (size_t pi = 0; pi < root->n; pi++) {
		const char *k = scalar(root->pairs[pi].key);
		const struct zn_doc_node *v = root->pairs[pi].value;
		if (!k || !*k) {
			rc = bad(f, "a tensor name is empty or not a string", NULL);
			goto out;
		}
		if (strcmp(k, "__metadata__") == 0) {
			rc = parse_metadata(f, v);
			if (rc)
				goto out;
			continue;
		}
		for (size_t i = 0; i < f->n; i++) {
			if (strcmp(f->names[i], k) == 0) {
				rc = bad(f, "it appears twice", k);
				goto out;
			}
		}
		struct zn_st_tensor *t = &f->t[f->n];
		rc = parse_tensor(f, k, v, t);
		if (rc)
			goto out;
		f->names[f->n] = strdup(k);
		if (!f->names[f->n]) {
			rc = zn_error(-ENOMEM, "out of memory");
			goto out;
		}
		f->n++;
	}
	/* Names point at the owned copies; file order is data order. */
	for (size_t i = 0; i < f->n; i++)
		f->t[i].name = f->names[i];
	qsort(f->t, f->n, sizeof(*f->t), cmp_offset);
	for (size_t i = 1; i < f->n; i++) {
		if ((const uint8_t *)f->t[i - 1].data + f->t[i - 1].bytes >
		    (const uint8_t *)f->t[i].data) {
			rc = bad(f, "its data overlaps another tensor's", f->t[i].name);
			goto out;
		}
	}
out:
	zn_doc_destroy(doc);
	return rc;
}

struct zn_st_file *zn_st_open(const char *path)
{
	struct zn_st_file *f = calloc(1, sizeof(*f));
	struct stat st;
	uint64_t hlen;
	int fd = -1;

	if (!f || !(f->path = strdup(path))) {
		free(f);
		zn_set_error("out of memory");
		return NULL;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) != 0) {
		zn_set_error("cannot open '%s': %s", path, strerror(errno));
		goto fail;
	}
	if (!S_ISREG(st.st_mode) || st.st_size < 8) {
		zn_set_error("'%s' is %s, not a safetensors file", path,
			     S_ISREG(st.st_mode) ? "shorter than 8 bytes" : "not a regular file");
		goto fail;
	}
	f->map_len = (size_t)st.st_size;
	f->map = mmap(NULL, f->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
	if (f->map == MAP_FAILED) {
		f->map = NULL;
		zn_set_error("cannot map '%s': %s", path, strerror(errno));
		goto fail;
	}
	close(fd);
	fd = -1;
	memcpy(&hlen, f->map, 8); /* little-endian, as x86 */
	if (hlen > MAX_HEADER || hlen > f->map_len - 8) {
		zn_set_error("'%s': its header length %" PRIu64 " does not fit the file (%zu bytes); "
			     "the file is truncated or not a safetensors file",
			     path, hlen, f->map_len);
		goto fail;
	}
	f->data = f->map + 8 + hlen;
	f->data_len = f->map_len - 8 - hlen;
	if (parse_header(f, f->map + 8, (size_t)hlen))
		goto fail;
	/* Tensors are read once, front to back. */
	madvise(f->map, f->map_len, MADV_SEQUENTIAL);
	return f;
fail:
	if (fd >= 0)
		close(fd);
	zn_st_close(f);
	return NULL;
}

size_t zn_st_count(const struct zn_st_file *f)
{
	return f->n;
}

const struct zn_st_tensor *zn_st_get(const struct zn_st_file *f, size_t i)
{
	return i < f->n ? &f->t[i] : NULL;
}

const struct zn_st_tensor *zn_st_find(const struct zn_st_file *f, const char *name)
{
	for (size_t i = 0; i < f->n; i++)
		if (strcmp(f->t[i].name, name) == 0)
			return &f->t[i];
	return NULL;
}

int zn_st_read(const struct zn_st_tensor *t, uint64_t offset, uint64_t bytes, void *dst)
{
	if (offset > t->bytes || bytes > t->bytes - offset)
		return zn_error(-ERANGE, "safetensors: bytes [%" PRIu64 ", %" PRIu64 ") of tensor "
					 "'%s' asked for, but it has %" PRIu64,
				offset, offset + bytes, t->name, t->bytes);
	const uint8_t *src = (const uint8_t *)t->data + offset;
	memcpy(dst, src, bytes);
	zn_io_drop_pages(src, bytes);
	return 0;
}

uint64_t zn_st_file_offset(const struct zn_st_file *f, const struct zn_st_tensor *t)
{
	return (uint64_t)((const uint8_t *)t->data - f->map);
}

const char *zn_st_metadata(const struct zn_st_file *f, const char *key)
{
	for (size_t i = 0; i < f->nmeta; i++)
		if (strcmp(f->meta_k[i], key) == 0)
			return f->meta_v[i];
	return NULL;
}

/* ---- writing ---------------------------------------------------------------- */

enum { W_ANY, W_ORDER, W_PLACE };

struct zn_st_writer {
	int fd;
	char path[4096], tmp[4096];
	uint64_t expect, written;   /* data bytes */
	uint64_t data_start;        /* the data's byte offset in the file */
	uint64_t *begin;            /* each tensor's data offset, and the end: n + 1 */
	size_t n;
	int how;                    /* W_ORDER (put) or W_PLACE (put_at), never both */
	int err;                    /* the first failure; later calls do nothing */
};

int zn_st_writer_begin(const char *path, const struct zn_st_tensor *t, size_t n,
		       const struct zn_st_meta *meta, size_t nmeta, struct zn_st_writer **out)
{
	struct zn_json j;
	char *grown;
	uint64_t off = 0;
	int rc = 0;

	*out = NULL;
	for (size_t i = 0; i < n; i++) {
		uint64_t elems = 1;
		if (!t[i].name || !*t[i].name || (unsigned)t[i].dtype >= ZN_ST_DTYPE_COUNT ||
		    t[i].ndim > ZN_ST_MAX_DIMS)
			return zn_error(-EINVAL, "safetensors: tensor %zu ('%s') has no name, a bad "
						 "dtype or too many dimensions",
					i, t[i].name ? t[i].name : "");
		for (unsigned d = 0; d < t[i].ndim; d++)
			elems *= t[i].shape[d];
		if (elems * dtypes[t[i].dtype].size != t[i].bytes)
			return zn_error(-EINVAL, "safetensors: tensor '%s' has %" PRIu64 " bytes "
						 "but its shape needs %" PRIu64,
					t[i].name, t[i].bytes, elems * dtypes[t[i].dtype].size);
		for (size_t k = 0; k < i; k++)
			if (strcmp(t[k].name, t[i].name) == 0)
				return zn_error(-EINVAL, "safetensors: tensor name '%s' appears twice",
						t[i].name);
	}
	if (zn_json_open_memory(&j, 0))
		return zn_error(-ENOMEM, "safetensors: out of memory for the header");

	zn_json_begin_object(&j);
	if (nmeta) {
		zn_json_key(&j, "__metadata__");
		zn_json_begin_object(&j);
		for (size_t i = 0; i < nmeta; i++) {
			zn_json_key(&j, meta[i].key);
			zn_json_string(&j, meta[i].value);
		}
		zn_json_end_object(&j);
	}
	for (size_t i = 0; i < n; i++) {
		zn_json_key(&j, t[i].name);
		zn_json_begin_object(&j);
		zn_json_key(&j, "dtype");
		zn_json_string(&j, dtypes[t[i].dtype].name);
		zn_json_key(&j, "shape");
		zn_json_begin_array(&j);
		for (unsigned d = 0; d < t[i].ndim; d++)
			zn_json_uint(&j, t[i].shape[d]);
		zn_json_end_array(&j);
		zn_json_key(&j, "data_offsets");
		zn_json_begin_array(&j);
		zn_json_uint(&j, off);
		zn_json_uint(&j, off + t[i].bytes);
		zn_json_end_array(&j);
		zn_json_end_object(&j);
		off += t[i].bytes;
	}
	zn_json_end_object(&j);
	/* Pad with spaces so the data starts 8-byte aligned, as the
	 * reference writer does. */
	char *h;
	size_t len, padded;
	if (zn_json_close_memory(&j, &h, &len))
		return zn_error(-ENOMEM, "safetensors: out of memory for the header");
	padded = ZN_ALIGN_UP(len, 8); /* the header follows its 8-byte length */
	grown = realloc(h, padded);
	if (!grown) {
		free(h);
		return zn_error(-ENOMEM, "safetensors: out of memory for the header");
	}
	h = grown;
	memset(h + len, ' ', padded - len);

	struct zn_st_writer *w = calloc(1, sizeof(*w));
	uint64_t *begin = malloc((n + 1) * sizeof(*begin));
	if (!w || !begin) {
		free(h);
		free(w);
		free(begin);
		return zn_error(-ENOMEM, "safetensors: out of memory");
	}
	begin[0] = 0;
	for (size_t i = 0; i < n; i++)
		begin[i + 1] = begin[i] + t[i].bytes;
	w->begin = begin;
	w->n = n;
	w->data_start = 8 + padded;
	w->expect = off;
	if (snprintf(w->path, sizeof(w->path), "%s", path) >= (int)sizeof(w->path) ||
	    snprintf(w->tmp, sizeof(w->tmp), "%s.tmp.%d", path, (int)getpid()) >=
		    (int)sizeof(w->tmp)) {
		free(h);
		free(w->begin);
		free(w);
		return zn_error(-ENAMETOOLONG, "safetensors: path '%s' is too long", path);
	}
	w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (w->fd < 0) {
		rc = -errno;
		free(h);
		zn_error(rc, "cannot create '%s': %s", w->tmp, strerror(-rc));
		free(w->begin);
		free(w);
		return rc;
	}
	uint64_t hlen = padded;
	rc = zn_io_write_all(w->fd, &hlen, 8);
	if (!rc)
		rc = zn_io_write_all(w->fd, h, padded);
	free(h);
	if (rc) {
		w->err = rc;
		zn_st_writer_abort(w);
		return zn_error(rc, "cannot write '%s': %s", path, strerror(-rc));
	}
	*out = w;
	return 0;
}

/* Puts go in order (put) or by place (put_at) in one file, not both. */
static int writer_how(struct zn_st_writer *w, int how)
{
	if (w->how != W_ANY && w->how != how)
		return w->err = zn_error(-EINVAL, "safetensors '%s': data put both in order and "
						  "by place", w->path);
	w->how = how;
	return 0;
}

int zn_st_writer_put_at(struct zn_st_writer *w, size_t i, uint64_t offset, const void *data,
			uint64_t bytes)
{
	if (w->err || writer_how(w, W_PLACE))
		return w->err;
	if (i >= w->n || offset > w->begin[i + 1] - w->begin[i] ||
	    bytes > w->begin[i + 1] - w->begin[i] - offset)
		return w->err = zn_error(-EINVAL, "safetensors '%s': bytes [%" PRIu64 ", %" PRIu64
						  ") of tensor %zu put, outside it (%zu tensors)",
					 w->path, offset, offset + bytes, i, w->n);
	if (w->written + bytes > w->expect)
		return w->err = zn_error(-EINVAL, "safetensors '%s': %" PRIu64 " data bytes "
						  "given, more than the header's %" PRIu64,
					 w->path, w->written + bytes, w->expect);
	int rc = zn_io_pwrite_all(w->fd, data, bytes, w->data_start + w->begin[i] + offset);
	if (rc)
		return w->err = zn_error(rc, "cannot write '%s': %s", w->path, strerror(-rc));
	w->written += bytes;
	return 0;
}

int zn_st_writer_put(struct zn_st_writer *w, const void *data, uint64_t bytes)
{
	if (w->err || writer_how(w, W_ORDER))
		return w->err;
	if (w->written + bytes > w->expect)
		return w->err = zn_error(-EINVAL, "safetensors '%s': %" PRIu64 " data bytes "
						  "given, more than the header's %" PRIu64,
					 w->path, w->written + bytes, w->expect);
	int rc = zn_io_write_all(w->fd, data, bytes);
	if (rc)
		return w->err = zn_error(rc, "cannot write '%s': %s", w->path, strerror(-rc));
	w->written += bytes;
	return 0;
}

void zn_st_writer_abort(struct zn_st_writer *w)
{
	if (!w)
		return;
	close(w->fd);
	unlink(w->tmp);
	free(w->begin);
	free(w);
}

int zn_st_writer_end(struct zn_st_writer *w)
{
	int rc = w->err;
	if (!rc && w->written != w->expect)
		rc = zn_error(-EINVAL, "safetensors '%s': %" PRIu64 " data bytes given, the header "
				       "needs %" PRIu64, w->path, w->written, w->expect);
	if (!rc && fsync(w->fd) != 0)
		rc = zn_error(-errno, "cannot write '%s': %s", w->path, strerror(errno));
	if (close(w->fd) != 0 && !rc)
		rc = zn_error(-errno, "cannot write '%s': %s", w->path, strerror(errno));
	w->fd = -1;
	if (!rc && rename(w->tmp, w->path) != 0)
		rc = zn_error(-errno, "cannot write '%s': %s", w->path, strerror(errno));
	if (rc) {
		unlink(w->tmp);
		free(w->begin);
		free(w);
		return rc;
	}
	zn_io_fsync_parent(w->path); /* the rename itself must reach the disk too */
	free(w->begin);
	free(w);
	return 0;
}

int zn_st_write(const char *path, const struct zn_st_tensor *t, size_t n,
		const struct zn_st_meta *meta, size_t nmeta)
{
	for (size_t i = 0; i < n; i++)
		if (!t[i].data && t[i].bytes)
			return zn_error(-EINVAL, "safetensors: tensor %zu ('%s') has no data", i,
					t[i].name ? t[i].name : "");
	struct zn_st_writer *w;
	int rc = zn_st_writer_begin(path, t, n, meta, nmeta, &w);
	for (size_t i = 0; i < n && !rc; i++)
		rc = zn_st_writer_put(w, t[i].data, t[i].bytes);
	if (rc) {
		zn_st_writer_abort(w);
		return rc;
	}
	return zn_st_writer_end(w);
}
