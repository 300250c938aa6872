/* Command-line options declared once as a table: the parser and --help
 * both read it (fio's options.c habit), so usage text cannot drift. */
#ifndef ZN_TOOLS_OPTIONS_H
#define ZN_TOOLS_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* How an option stores its value: through `set`, or straight into the
 * field at `offset` of the command's context struct. */
enum opt_kind {
	OPT_FN = 0,  /* call set() */
	OPT_STRING,  /* const char *field = the argument */
	OPT_FLAG,    /* bool field = true; no argument */
	OPT_UINT,    /* unsigned field; an integer in [min, max] (K/M/G, 1e8 accepted) */
	OPT_U64,     /* uint64_t field; the same */
};

struct opt {
	const char *name;    /* long option, without "--" */
	const char *metavar; /* NULL: a flag without argument */
	const char *def;     /* default shown in --help, or NULL */
	const char *help;
	/* Store the argument (NULL for flags); 0, or -1 after printing
	 * nothing: the parser prints "invalid value" with `why` if set. */
	int (*set)(void *ctx, const char *arg, const char **why);
	enum opt_kind kind;
	size_t offset;       /* of the field, for kinds other than OPT_FN */
	uint64_t min, max;   /* OPT_UINT, OPT_U64 */
};

/* Table rows: a setter function, or one of the declarative kinds. */
#define OPT_CALL(n, mv, d, h, fn) { .name = n, .metavar = mv, .def = d, .help = h, .set = fn }
#define OPT_STR(n, mv, d, h, type, field) \
	{ .name = n, .metavar = mv, .def = d, .help = h, .kind = OPT_STRING, \
	  .offset = offsetof(type, field) }
#define OPT_BOOL(n, h, type, field) \
	{ .name = n, .help = h, .kind = OPT_FLAG, .offset = offsetof(type, field) }
#define OPT_NUM(n, mv, d, h, type, field, lo, hi) \
	{ .name = n, .metavar = mv, .def = d, .help = h, \
	  .kind = sizeof(((type *)0)->field) == sizeof(uint64_t) ? OPT_U64 : OPT_UINT, \
	  .offset = offsetof(type, field), .min = lo, .max = hi }

/* Parse argv[1..] against the table.  Returns the index of the first
 * non-option argument, or -1 after printing a one-line error to stderr,
 * or -2 when --help was given and usage printed to stdout. */
int opts_parse(const char *prog, const struct opt *opts, size_t n, int argc, char **argv,
	       void *ctx, const char *synopsis);

/* opts_parse for a subcommand that takes no positional arguments: returns
 * -1 to go on, or the exit status to return (0 after --help, 2 after a
 * one-line error on stderr). */
int opts_command(const char *prog, const struct opt *opts, size_t n, int argc, char **argv,
		 void *ctx, const char *synopsis);

void opts_usage(FILE *out, const char *prog, const struct opt *opts, size_t n,
		const char *synopsis);

/* Value parsers for comma-separated lists of sizes / integers. */
int parse_size_list(const char *arg, uint64_t *out, unsigned max, unsigned *count);
int parse_uint_list(const char *arg, unsigned *out, unsigned max, unsigned *count);

#endif
