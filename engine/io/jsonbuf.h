/* A growing string for the JSON zinc writes (safetensors headers, Hugging
 * Face config.json and index files).  Not installed.  Appends never fail
 * one by one: the first allocation failure sets `oom` and later appends do
 * nothing, so a writer checks once at the end.  p is NUL-terminated (or
 * NULL when nothing was added); free(p) when done. */
#ifndef ZN_JSONBUF_H
#define ZN_JSONBUF_H

#include <stdbool.h>
#include <stddef.h>

#include "zn_common.h"

struct zn_sbuf {
	char *p;
	size_t len, cap;
	bool oom;
};

void zn_sb_add(struct zn_sbuf *b, const char *s, size_t n);
void zn_sb_puts(struct zn_sbuf *b, const char *s);
void zn_sb_printf(struct zn_sbuf *b, const char *fmt, ...) ZN_PRINTF(2, 3);
/* s as a JSON string, quoted: '"' and '\' escaped, control characters as \uXXXX. */
void zn_sb_json_str(struct zn_sbuf *b, const char *s);

#endif
