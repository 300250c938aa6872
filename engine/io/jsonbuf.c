/* A growing string for the JSON zinc writes (see jsonbuf.h). */
#include "io/jsonbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void zn_sb_add(struct zn_sbuf *b, const char *s, size_t n)
{
	if (b->oom)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = (b->len + n + 1) * 2;
		char *q = realloc(b->p, cap);
		if (!q) {
			b->oom = true;
			return;
		}
		b->p = q;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = 0;
}

void zn_sb_puts(struct zn_sbuf *b, const char *s)
{
	zn_sb_add(b, s, strlen(s));
}

void zn_sb_printf(struct zn_sbuf *b, const char *fmt, ...)
{
	char *s;
	va_list ap;
	va_start(ap, fmt);
	int n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0) {
		b->oom = true;
		return;
	}
	zn_sb_add(b, s, (size_t)n);
	free(s);
}

void zn_sb_json_str(struct zn_sbuf *b, const char *s)
{
	zn_sb_add(b, "\"", 1);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			zn_sb_printf(b, "\\%c", c);
		else if (c < 0x20)
			zn_sb_printf(b, "\\u%04x", c);
		else
			zn_sb_add(b, (const char *)&c, 1);
	}
	zn_sb_add(b, "\"", 1);
}
