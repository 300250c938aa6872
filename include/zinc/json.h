/* zinc — the JSON writer: every JSON text zinc writes goes through it (the
 * tools' --json output and --json-log lines, safetensors headers, Hugging
 * Face config.json and index files).
 *
 * A streaming writer: values are written as they are given, to a FILE or to
 * a growing buffer in memory, with the commas, quoting and escaping done
 * here.  Two layouts:
 *
 *   compact (flags 0)   {"a":1,"b":[true,null]}
 *   ZN_JSON_PRETTY      one member or element per line, indented by two
 *                       spaces, ": " after a key: the bytes Python's
 *                       json.dump(obj, f, indent=2) writes, so files zinc
 *                       writes for the Python ecosystem (config.json) read
 *                       as that ecosystem writes them.  Empty objects and
 *                       lists stay "{}" and "[]", as Python's do.
 *
 * ZN_JSON_LINE ends the top-level object or list with a newline (JSON
 * Lines: one object per line for the tools' output and logs).
 *
 * Strings are written as given (UTF-8 passes through); '"' and '\' are
 * escaped and control characters written as \u00XX.  Numbers: integers
 * exactly; doubles with 6 significant digits (zn_json_double, for
 * measurements) or 17 (zn_json_double_exact, which reads back as the same
 * double); non-finite doubles, which JSON cannot hold, as null.
 *
 * Write errors of a FILE are the FILE's (check ferror as for any other
 * output).  Objects and lists nest at most ZN_JSON_MAX_DEPTH deep: opening
 * a deeper one, or closing more than were opened, stops the writer (nothing
 * more is written, and zn_json_close_memory returns -EINVAL).
 */
#ifndef ZINC_JSON_H
#define ZINC_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "zinc/common.h"

#ifdef __cplusplus
extern "C" {
#endif

enum zn_json_flags {
	ZN_JSON_PRETTY = 1u << 0, /* Python's json.dump(indent=2) layout */
	ZN_JSON_LINE = 1u << 1,   /* a newline after the top-level value */
};

#define ZN_JSON_MAX_DEPTH 32

/* The writer's state; its fields are the implementation's. */
struct zn_json {
	FILE *out;
	unsigned flags;
	int depth;                       /* containers open */
	bool first[ZN_JSON_MAX_DEPTH + 1]; /* nothing written yet at this depth */
	bool after_key;                  /* the next value is a member's */
	bool stopped;                    /* nested too deep, or closed too often */
	char *mem;                       /* zn_json_open_memory's buffer */
	size_t mem_len;
};

/* Write to `out` (not closed by the writer). */
ZN_API void zn_json_init(struct zn_json *j, FILE *out, unsigned flags);

/* Write to a buffer in memory; zn_json_close_memory hands it over.
 * 0 or -ENOMEM. */
ZN_API int zn_json_open_memory(struct zn_json *j, unsigned flags);

/* The text written since zn_json_open_memory, NUL-terminated, in *text
 * (free() it) and its length in bytes in *len.  0, -ENOMEM, or -EINVAL
 * when containers were nested deeper than ZN_JSON_MAX_DEPTH or left open;
 * on failure *text is NULL and nothing needs freeing. */
ZN_API int zn_json_close_memory(struct zn_json *j, char **text, size_t *len);

ZN_API void zn_json_begin_object(struct zn_json *j);
ZN_API void zn_json_end_object(struct zn_json *j);
ZN_API void zn_json_begin_array(struct zn_json *j);
ZN_API void zn_json_end_array(struct zn_json *j);

/* A member's key; the next value (or container) is its value. */
ZN_API void zn_json_key(struct zn_json *j, const char *key);

ZN_API void zn_json_string(struct zn_json *j, const char *s);
ZN_API void zn_json_uint(struct zn_json *j, uint64_t v);
ZN_API void zn_json_int(struct zn_json *j, int64_t v);
ZN_API void zn_json_double(struct zn_json *j, double v);       /* %.6g */
ZN_API void zn_json_double_exact(struct zn_json *j, double v); /* %.17g: round-trips */
ZN_API void zn_json_bool(struct zn_json *j, bool v);
ZN_API void zn_json_null(struct zn_json *j);

/* A value formatted by the caller with printf's `fmt` (a number in a
 * chosen precision, such as "%.3f"); the caller makes it valid JSON. */
ZN_API void zn_json_printf(struct zn_json *j, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#ifdef __cplusplus
}
#endif
#endif
