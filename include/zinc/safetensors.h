/* zinc — safetensors files: the format checkpoints and Hugging Face models use.
 *
 * Layout (huggingface/safetensors): an 8-byte little-endian header length N,
 * N bytes of JSON {"name": {"dtype": "F32", "shape": [..], "data_offsets":
 * [begin, end]}, ..., "__metadata__": {"key": "value"}}, then the tensor
 * bytes; offsets count from the end of the header.  The reader memory-maps
 * the file and checks every offset, shape and dtype before handing out a
 * pointer, so a truncated or hostile file is an error, never a crash.  The
 * writer writes a temporary file, fsyncs it and renames it into place: a
 * crash leaves the previous file intact.
 */
#ifndef ZINC_SAFETENSORS_H
#define ZINC_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "zinc/common.h"

#ifdef __cplusplus
extern "C" {
#endif

enum zn_st_dtype {
	ZN_ST_F64, ZN_ST_F32, ZN_ST_F16, ZN_ST_BF16,
	ZN_ST_I64, ZN_ST_I32, ZN_ST_I16, ZN_ST_I8, ZN_ST_U8, ZN_ST_BOOL,
	ZN_ST_DTYPE_COUNT
};

#define ZN_ST_MAX_DIMS 8

struct zn_st_tensor {
	const char *name;
	enum zn_st_dtype dtype;
	unsigned ndim;
	uint64_t shape[ZN_ST_MAX_DIMS];
	const void *data;      /* reader: inside the mapping; writer: the caller's bytes */
	uint64_t bytes;        /* product(shape) * element size */
};

/* "F32", "BF16", ...; NULL for an unknown value. */
ZN_API const char *zn_st_dtype_name(enum zn_st_dtype d);
/* Bytes per element (BOOL: 1); 0 for an unknown value. */
ZN_API size_t zn_st_dtype_size(enum zn_st_dtype d);

/* ---- reading ------------------------------------------------------------ */

struct zn_st_file;

/* Map and validate `path`.  NULL + last error naming the file and what is
 * wrong (not a safetensors file, truncated, bad JSON at a position, a
 * tensor whose offsets leave the file or disagree with its shape). */
ZN_API struct zn_st_file *zn_st_open(const char *path);
ZN_API void zn_st_close(struct zn_st_file *f);

ZN_API size_t zn_st_count(const struct zn_st_file *f);
/* The i-th tensor in file order (by data offset). */
ZN_API const struct zn_st_tensor *zn_st_get(const struct zn_st_file *f, size_t i);
/* The tensor called `name`, or NULL. */
ZN_API const struct zn_st_tensor *zn_st_find(const struct zn_st_file *f, const char *name);
/* Bytes [offset, offset + bytes) of tensor t (of an open file) into dst;
 * the pages wholly inside them then leave this process (they stay in the
 * page cache), so that a file larger than memory can be read piece by
 * piece without being held whole.  0, or -ERANGE outside the tensor. */
ZN_API int zn_st_read(const struct zn_st_tensor *t, uint64_t offset, uint64_t bytes, void *dst);
/* Where tensor t's bytes start in its file (bytes from the file's first
 * byte), for a reader that streams the file itself (checksums). */
ZN_API uint64_t zn_st_file_offset(const struct zn_st_file *f, const struct zn_st_tensor *t);
/* A __metadata__ value, or NULL. */
ZN_API const char *zn_st_metadata(const struct zn_st_file *f, const char *key);

/* ---- writing ------------------------------------------------------------ */

struct zn_st_meta {
	const char *key, *value;
};

/* Write `n` tensors (data and bytes as given; bytes must equal the shape's
 * size) and `nmeta` metadata entries to `path`, atomically.  Names must be
 * unique and non-empty.  0 or -errno; on failure `path` is untouched. */
ZN_API int zn_st_write(const char *path, const struct zn_st_tensor *tensors, size_t n,
		       const struct zn_st_meta *meta, size_t nmeta);

/* The same, streamed, for files larger than memory: begin writes the header
 * from `tensors` (their data is not read), put appends data bytes in file
 * order, end checks that exactly the header's bytes came, fsyncs and
 * renames into place.  abort (or a failed end) removes the temporary file,
 * leaving `path` untouched.  0 or -errno with a message. */
struct zn_st_writer;
ZN_API int zn_st_writer_begin(const char *path, const struct zn_st_tensor *tensors, size_t n,
			      const struct zn_st_meta *meta, size_t nmeta,
			      struct zn_st_writer **out);
ZN_API int zn_st_writer_put(struct zn_st_writer *w, const void *data, uint64_t bytes);
/* Or by place, in any order: bytes [offset, offset + bytes) of tensor i
 * (of begin's list), so that a file whose tensors interleave in the
 * order its data comes (a tensor's states, a transposed matrix) is
 * written without holding a tensor whole.  Every byte once: end checks
 * that as many came as the header holds.  A file is written by put or by
 * put_at, not both (-EINVAL). */
ZN_API int zn_st_writer_put_at(struct zn_st_writer *w, size_t i, uint64_t offset,
			       const void *data, uint64_t bytes);
ZN_API int zn_st_writer_end(struct zn_st_writer *w);
ZN_API void zn_st_writer_abort(struct zn_st_writer *w);

#ifdef __cplusplus
}
#endif
#endif
