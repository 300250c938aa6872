#include "options.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "zinc/common.h"

void opts_usage(FILE *out, const char *prog, const struct opt *opts, size_t n,
		const char *synopsis)
{
	fprintf(out, "usage: %s %s\n\noptions:\n", prog, synopsis);
	for (size_t i = 0; i < n; i++) {
		char left[64];
		snprintf(left, sizeof(left), "--%s%s%s", opts[i].name, opts[i].metavar ? " " : "",
			 opts[i].metavar ? opts[i].metavar : "");
		fprintf(out, "  %-26s %s", left, opts[i].help);
		if (opts[i].def)
			fprintf(out, " (default: %s)", opts[i].def);
		fputc('\n', out);
	}
	fprintf(out, "  %-26s %s\n", "--help", "show this text");
}

static int store(const struct opt *o, void *ctx, const char *arg, const char **why)
{
	char *field = (char *)ctx + o->offset;
	uint64_t v;

	switch (o->kind) {
	case OPT_FN:
		return o->set(ctx, arg, why);
	case OPT_STRING:
		*(const char **)field = arg;
		return 0;
	case OPT_FLAG:
		*(bool *)field = true;
		return 0;
	case OPT_UINT:
	case OPT_U64:
		if (zn_parse_size(arg, &v) != 0 || v < o->min || v > o->max) {
			static char msg[96];
			snprintf(msg, sizeof(msg), "an integer from %llu to %llu",
				 (unsigned long long)o->min, (unsigned long long)o->max);
			*why = msg;
			return -1;
		}
		if (o->kind == OPT_UINT)
			*(unsigned *)field = (unsigned)v;
		else
			*(uint64_t *)field = v;
		return 0;
	}
	return -1;
}

int opts_command(const char *prog, const struct opt *opts, size_t n, int argc, char **argv,
		 void *ctx, const char *synopsis)
{
	int rc = opts_parse(prog, opts, n, argc, argv, ctx, synopsis);
	if (rc == -2)
		return 0;
	if (rc < 0)
		return 2;
	if (rc < argc) {
		fprintf(stderr, "%s: unexpected argument '%s'; see --help\n", prog, argv[rc]);
		return 2;
	}
	return -1;
}

int opts_parse(const char *prog, const struct opt *opts, size_t n, int argc, char **argv,
	       void *ctx, const char *synopsis)
{
	struct option *lo = calloc(n + 2, sizeof(*lo));
	int rc = -1;

	if (!lo) {
		fprintf(stderr, "%s: out of memory\n", prog);
		return -1;
	}
	for (size_t i = 0; i < n; i++)
		lo[i] = (struct option){ opts[i].name,
					 opts[i].metavar ? required_argument : no_argument, NULL,
					 (int)(i + 1000) };
	lo[n] = (struct option){ "help", no_argument, NULL, 'h' };

	optind = 1;
	opterr = 0;
	for (;;) {
		int prev = optind;
		int c = getopt_long(argc, argv, "h", lo, NULL);
		if (c == -1) {
			rc = optind;
			break;
		}
		if (c == 'h') {
			opts_usage(stdout, prog, opts, n, synopsis);
			rc = -2;
			break;
		}
		if (c == '?' || c == ':') {
			const char *bad = argv[prev] ? argv[prev] : "?";
			if (c == ':' || (optopt >= 1000 && optopt < 1000 + (int)n))
				fprintf(stderr, "%s: option '%s' needs a value; see --help\n", prog,
					bad);
			else
				fprintf(stderr, "%s: unknown option '%s'; see --help\n", prog, bad);
			break;
		}
		const struct opt *o = &opts[c - 1000];
		const char *why = NULL;
		if (store(o, ctx, optarg, &why) != 0) {
			fprintf(stderr, "%s: invalid value '%s' for --%s%s%s\n", prog,
				optarg ? optarg : "", o->name, why ? ": " : "", why ? why : "");
			break;
		}
	}
	free(lo);
	return rc;
}

int parse_size_list(const char *arg, uint64_t *out, unsigned max, unsigned *count)
{
	char buf[512];
	unsigned k = 0;

	snprintf(buf, sizeof(buf), "%s", arg);
	for (char *save, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (k == max || zn_parse_size(tok, &out[k]) != 0)
			return -1;
		k++;
	}
	*count = k;
	return k ? 0 : -1;
}

int parse_uint_list(const char *arg, unsigned *out, unsigned max, unsigned *count)
{
	uint64_t v[64];
	unsigned k;

	if (max > 64 || parse_size_list(arg, v, max, &k) != 0)
		return -1;
	for (unsigned i = 0; i < k; i++) {
		if (v[i] > 1u << 20)
			return -1;
		out[i] = (unsigned)v[i];
	}
	*count = k;
	return 0;
}
