#include "json.h"

#include <math.h>

void json_init(struct json *j, FILE *out)
{
	j->out = out;
	j->depth = 0;
	j->first[0] = true;
	j->after_key = false;
}

/* Separator before a value or key at the current depth. */
static void sep(struct json *j)
{
	if (j->after_key) {
		j->after_key = false;
		return;
	}
	if (!j->first[j->depth])
		fputc(',', j->out);
	j->first[j->depth] = false;
}

static void open(struct json *j, char c)
{
	sep(j);
	fputc(c, j->out);
	j->first[++j->depth] = true;
}

void json_begin_object(struct json *j) { open(j, '{'); }
void json_begin_array(struct json *j) { open(j, '['); }

void json_end_object(struct json *j)
{
	j->depth--;
	fputc('}', j->out);
	if (j->depth == 0)
		fputc('\n', j->out);
}

void json_end_array(struct json *j)
{
	j->depth--;
	fputc(']', j->out);
}

static void str(struct json *j, const char *s)
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

void json_key(struct json *j, const char *key)
{
	sep(j);
	str(j, key);
	fputc(':', j->out);
	j->after_key = true;
}

void json_string(struct json *j, const char *s)
{
	sep(j);
	str(j, s);
}

void json_uint(struct json *j, uint64_t v)
{
	sep(j);
	fprintf(j->out, "%llu", (unsigned long long)v);
}

/* Every bit of v (17 significant digits round-trip a double): for values
 * that tests compare exactly, such as losses. */
void json_double_exact(struct json *j, double v)
{
	sep(j);
	if (isfinite(v))
		fprintf(j->out, "%.17g", v);
	else
		fputs("null", j->out);
}

void json_double(struct json *j, double v)
{
	sep(j);
	if (isfinite(v))
		fprintf(j->out, "%.6g", v);
	else
		fputs("null", j->out);
}

void json_bool(struct json *j, bool v)
{
	sep(j);
	fputs(v ? "true" : "false", j->out);
}

void json_null(struct json *j)
{
	sep(j);
	fputs("null", j->out);
}
