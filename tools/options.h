/* Command-line options declared once as a table: the parser and --help
 * both read it (fio's options.c habit), so usage text cannot drift. */
#ifndef ZN_TOOLS_OPTIONS_H
#define ZN_TOOLS_OPTIONS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct opt {
	const char *name;    /* long option, without "--" */
	const char *metavar; /* NULL: a flag without argument */
	const char *def;     /* default shown in --help, or NULL */
	const char *help;
	/* Store the argument (NULL for flags); 0, or -1 after printing
	 * nothing: the parser prints "invalid value" with `why` if set. */
	int (*set)(void *ctx, const char *arg, const char **why);
};

/* Parse argv[1..] against the table.  Returns the index of the first
 * non-option argument, or -1 after printing a one-line error to stderr,
 * or -2 when --help was given and usage printed to stdout. */
int opts_parse(const char *prog, const struct opt *opts, size_t n, int argc, char **argv,
	       void *ctx, const char *synopsis);

void opts_usage(FILE *out, const char *prog, const struct opt *opts, size_t n,
		const char *synopsis);

/* Value parsers for comma-separated lists of sizes / integers. */
int parse_size_list(const char *arg, uint64_t *out, unsigned max, unsigned *count);
int parse_uint_list(const char *arg, unsigned *out, unsigned max, unsigned *count);

#endif
