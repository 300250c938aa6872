/* A minimal streaming JSON writer for the tools' --json output. */
#ifndef ZN_TOOLS_JSON_H
#define ZN_TOOLS_JSON_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct json {
	FILE *out;
	int depth;
	bool first[32]; /* no element written yet at this depth */
	bool after_key;
};

void json_init(struct json *j, FILE *out);
void json_begin_object(struct json *j);
void json_end_object(struct json *j);
void json_begin_array(struct json *j);
void json_end_array(struct json *j);
void json_key(struct json *j, const char *key);
void json_string(struct json *j, const char *s);
void json_uint(struct json *j, uint64_t v);
void json_double(struct json *j, double v); /* 6 digits; non-finite values become null */
void json_double_exact(struct json *j, double v); /* all 17 digits (round-trip) */
void json_bool(struct json *j, bool v);
void json_null(struct json *j);

#endif
