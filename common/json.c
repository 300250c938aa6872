/* The JSON writer (include/zinc/json.h): separators, indentation, string
 * escapes and number formats, to a FILE or to memory (open_memstream). */
#include "zn_common.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>

#include "zinc/json.h"

void zn_json_init(struct zn_json *j, FILE *out, unsigned flags)
{
	*j = (struct zn_json){ .out = out, .flags = flags };
	j->first[0] = true;
}

int zn_json_open_memory(struct zn_json *j, unsigned flags)
{
	zn_json_init(j, NULL, flags);
	j->out = open_memstream(&j->mem, &j->mem_len);
	return j->out ? 0 : -ENOMEM;
}

int zn_json_close_memory(struct zn_json *j, char **text, size_t *len)
{
	int rc = ferror(j->out) ? -ENOMEM : 0;

	if (fclose(j->out) != 0 && !rc)
		rc = -ENOMEM;
	if (!rc && (j->stopped || j->depth != 0))
		rc = -EINVAL;
	j->out = NULL;
	if (rc) {
		free(j->mem);
		j->mem = NULL;
	}
	*text = j->mem;
	*len = rc ? 0 : j->mem_len;
	return rc;
}

/* Pretty layout: a new line indented two spaces per open container. */
static void newline(struct zn_json *j, int depth)
{
	fputc('\n', j->out);
	for (int i = 0; i < depth; i++)
		fputs("  ", j->out);
}

/* What goes before a value or key: nothing after a key, else a comma
 * unless it is the first at its depth, then (pretty) its own line. */
static void sep(struct zn_json *j)
{
	if (j->after_key) {
		j->after_key = false;
		return;
	}
	if (!j->first[j->depth])
		fputc(',', j->out);
	if ((j->flags & ZN_JSON_PRETTY) && j->depth > 0)
		newline(j, j->depth);
	j->first[j->depth] = false;
}

static void open_container(struct zn_json *j, char c)
{
	if (j->stopped)
		return;
	if (j->depth == ZN_JSON_MAX_DEPTH) {
		j->stopped = true;
		return;
	}
	sep(j);
	fputc(c, j->out);
	j->first[++j->depth] = true;
}

static void close_container(struct zn_json *j, char c)
{
	if (j->stopped)
		return;
	if (j->depth == 0) {
		j->stopped = true;
		return;
	}
	if ((j->flags & ZN_JSON_PRETTY) && !j->first[j->depth])
		newline(j, j->depth - 1);
	fputc(c, j->out);
	if (--j->depth == 0 && (j->flags & ZN_JSON_LINE))
		fputc('\n', j->out);
}

void zn_json_begin_object(struct zn_json *j) { open_container(j, '{'); }
void zn_json_end_object(struct zn_json *j) { close_container(j, '}'); }
void zn_json_begin_array(struct zn_json *j) { open_container(j, '['); }
void zn_json_end_array(struct zn_json *j) { close_container(j, ']'); }

static void quoted(struct zn_json *j, const char *s)
{
	fputc('"', j->out);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			fprintf(j->out, "\\%c", c);
		else if (c < 0x20)
			fprintf(j->out, "\\u%04x", c);
		else
			fputc(c, j->out);
	}
	fputc('"', j->out);
}

void zn_json_key(struct zn_json *j, const char *key)
{
	if (j->stopped)
		return;
	sep(j);
	quoted(j, key);
	fputs(j->flags & ZN_JSON_PRETTY ? ": " : ":", j->out);
	j->after_key = true;
}

void zn_json_printf(struct zn_json *j, const char *fmt, ...)
{
	va_list ap;

	if (j->stopped)
		return;
	sep(j);
	va_start(ap, fmt);
	vfprintf(j->out, fmt, ap);
	va_end(ap);
}

void zn_json_string(struct zn_json *j, const char *s)
{
	if (j->stopped)
		return;
	sep(j);
	quoted(j, s);
}

void zn_json_uint(struct zn_json *j, uint64_t v)
{
	zn_json_printf(j, "%llu", (unsigned long long)v);
}

void zn_json_int(struct zn_json *j, int64_t v)
{
	zn_json_printf(j, "%lld", (long long)v);
}

void zn_json_double(struct zn_json *j, double v)
{
	if (isfinite(v))
		zn_json_printf(j, "%.6g", v);
	else
		zn_json_null(j);
}

/* 17 significant digits read back as the same double: for values that
 * are compared exactly, such as losses. */
void zn_json_double_exact(struct zn_json *j, double v)
{
	if (isfinite(v))
		zn_json_printf(j, "%.17g", v);
	else
		zn_json_null(j);
}

void zn_json_bool(struct zn_json *j, bool v)
{
	zn_json_printf(j, "%s", v ? "true" : "false");
}

void zn_json_null(struct zn_json *j)
{
	zn_json_printf(j, "null");
}
