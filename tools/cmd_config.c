/* `zinc config`: list the config keys, generate docs/config.md, check a file.
 *
 * Everything printed here comes from the section key tables
 * (zn_config_section), so the listing, the reference page and the loader
 * cannot disagree about a key's name, type, default or range.
 */
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "options.h"
#include "zinc/common.h"
#include "zinc/config.h"
#include "zinc/configfile.h"

/* What the command line asked for. */
struct config_args {
	bool markdown;
	const char *check; /* FILE, or NULL */
};

static int set_markdown(void *ctx, const char *arg, const char **why)
{
	(void)arg;
	(void)why;
	((struct config_args *)ctx)->markdown = true;
	return 0;
}

static int set_check(void *ctx, const char *arg, const char **why)
{
	(void)why;
	((struct config_args *)ctx)->check = arg;
	return 0;
}

static const struct opt options[] = {
	{ "markdown", NULL, NULL, "print the configuration reference (docs/config.md)",
	  set_markdown },
	{ "check", "FILE", NULL, "load FILE; print the first error, or the effective config",
	  set_check },
};

static const char *type_name(enum zn_cfg_type t)
{
	/* No default: -Wswitch flags a new type missing here. */
	switch (t) {
	case ZN_CFG_BOOL:
		return "bool";
	case ZN_CFG_UINT:
		return "integer";
	case ZN_CFG_SIZE:
		return "size";
	case ZN_CFG_DOUBLE:
		return "number";
	case ZN_CFG_STRING:
		return "string";
	case ZN_CFG_ENUM:
		return "choice";
	}
	return "?";
}

/* The accepted values of a key, as prose for the reference. */
static char *range_text(const struct zn_cfg_key *k, char *buf, size_t len)
{
	char lo[32], hi[32];

	switch (k->type) {
	case ZN_CFG_BOOL:
		snprintf(buf, len, "true, false");
		break;
	case ZN_CFG_UINT:
	case ZN_CFG_DOUBLE:
		if (k->max >= 1e300)
			snprintf(buf, len, ">= %.17g", k->min);
		else
			snprintf(buf, len, "%.17g to %.17g", k->min, k->max);
		break;
	case ZN_CFG_SIZE:
		zn_format_size((uint64_t)k->min, lo, sizeof(lo));
		if (k->max >= 1e300)
			snprintf(buf, len, ">= %s", lo);
		else
			snprintf(buf, len, "%s to %s", lo,
				 zn_format_size((uint64_t)k->max, hi, sizeof(hi)));
		break;
	case ZN_CFG_STRING:
		snprintf(buf, len, "up to %zu characters", k->size - 1);
		break;
	case ZN_CFG_ENUM:
		buf[0] = '\0';
		for (int i = 0; k->choices[i]; i++)
			snprintf(buf + strlen(buf), len - strlen(buf), "%s%s", i ? ", " : "",
				 k->choices[i]);
		break;
	}
	return buf;
}

/* A key's default as it is stored (the table's text after parsing), so the
 * listing shows what the loader really starts from.  `pretty` gets a
 * human form of byte counts ("1 MiB"), or "". */
static char *default_text(struct zn_config *defaults, const struct zn_cfg_section *sec,
			  const struct zn_cfg_key *k, char *buf, size_t len, char *pretty,
			  size_t plen)
{
	uint64_t v;

	zn_cfg_format(k, zn_config_section_data(defaults, sec), buf, len);
	pretty[0] = '\0';
	if (k->type == ZN_CFG_SIZE && zn_parse_size(buf, &v) == 0 && v >= 1024)
		zn_format_size(v, pretty, plen);
	return buf;
}

/* "1048576 (1 MiB)" for the listing. */
static char *default_cell(struct zn_config *defaults, const struct zn_cfg_section *sec,
			  const struct zn_cfg_key *k, char *buf, size_t len)
{
	char raw[256], pretty[32];

	default_text(defaults, sec, k, raw, sizeof(raw), pretty, sizeof(pretty));
	if (pretty[0])
		snprintf(buf, len, "%s (%s)", raw, pretty);
	else
		snprintf(buf, len, "%s", raw);
	return buf;
}

static int list_keys(void)
{
	struct zn_config defaults;

	zn_config_default(&defaults);
	for (size_t s = 0; zn_config_section(s); s++) {
		const struct zn_cfg_section *sec = zn_config_section(s);
		int wk = 3, wt = 4, wd = 7, wn = 9;
		char def[320], ds[128];

		/* Column widths from the data, so a long key does not skew them. */
		for (size_t i = 0; i < sec->nkeys; i++) {
			const struct zn_cfg_key *k = &sec->keys[i];
			int n = (int)strlen(k->name);
			wk = n > wk ? n : wk;
			n = (int)strlen(type_name(k->type));
			wt = n > wt ? n : wt;
			n = (int)strlen(default_cell(&defaults, sec, k, def, sizeof(def)));
			wd = n > wd ? n : wd;
			n = (int)(strlen(sec->name) + 1 + strlen(k->name));
			wn = n > wn ? n : wn;
		}
		printf("%s%s: %s\n", s ? "\n" : "", sec->name, sec->help);
		printf("  %-*s  %-*s  %-*s  %-*s  %s\n", wk, "key", wt, "type", wd, "default", wn,
		       "deepspeed", "meaning");
		for (size_t i = 0; i < sec->nkeys; i++) {
			const struct zn_cfg_key *k = &sec->keys[i];
			if (k->flags & ZN_CFG_ZINC_ONLY)
				snprintf(ds, sizeof(ds), "zinc");
			else
				snprintf(ds, sizeof(ds), "%s.%s", sec->name, k->name);
			printf("  %-*s  %-*s  %-*s  %-*s  %s\n", wk, k->name, wt,
			       type_name(k->type), wd,
			       default_cell(&defaults, sec, k, def, sizeof(def)), wn, ds, k->help);
		}
	}
	return 0;
}

/* Table cells may not contain '|' or a line break. */
static void md_cell(const char *s)
{
	for (; *s; s++) {
		if (*s == '|')
			fputs("\\|", stdout);
		else if (*s == '\n')
			putchar(' ');
		else
			putchar(*s);
	}
}

static int print_markdown(void)
{
	struct zn_config defaults;

	zn_config_default(&defaults);
	printf("# Configuration reference\n"
	       "\n"
	       "<!-- Generated by `zinc config --markdown` from the key tables in the source;\n"
	       "     do not edit by hand. -->\n"
	       "\n"
	       "zinc reads one configuration file, YAML or JSON. A DeepSpeed `ds_config.json`\n"
	       "is valid input as it is: the key names and defaults below are DeepSpeed's, and\n"
	       "the top-level sections DeepSpeed documents that zinc does not implement yet are\n"
	       "accepted and ignored (listed at the end). An unknown top-level key is a warning\n"
	       "that names the nearest known key; an unknown key or a bad value inside a section\n"
	       "zinc reads is an error. Every message starts with `FILE:LINE:COLUMN:`.\n"
	       "\n"
	       "A key set to `null` (or `~`, or nothing) keeps its default. Sizes accept `K`,\n"
	       "`M`, `G` and `T` suffixes (powers of 1024) and DeepSpeed's `1e8` notation.\n"
	       "DeepSpeed's `\"auto\"` is not accepted: the Hugging Face integration fills it\n"
	       "in, and nothing does that for zinc. Check a file with\n"
	       "`zinc config --check FILE`.\n");

	for (size_t s = 0; zn_config_section(s); s++) {
		const struct zn_cfg_section *sec = zn_config_section(s);
		bool any_zinc = false;
		char buf[256], pretty[32];

		/* Section help is a sentence fragment ("the io_uring engine ..."). */
		printf("\n## `%s`\n\n%c", sec->name, toupper((unsigned char)sec->help[0]));
		md_cell(sec->help + 1);
		printf(".\n\n| key | alias | type | default | range | meaning |\n"
		       "| --- | --- | --- | --- | --- | --- |\n");
		for (size_t i = 0; i < sec->nkeys; i++) {
			const struct zn_cfg_key *k = &sec->keys[i];

			printf("| `%s` | ", k->name);
			if (k->alias)
				printf("`%s`", k->alias);
			printf(" | %s | `", type_name(k->type));
			md_cell(default_text(&defaults, sec, k, buf, sizeof(buf), pretty,
					     sizeof(pretty)));
			printf("`%s%s%s | ", pretty[0] ? " (" : "", pretty, pretty[0] ? ")" : "");
			md_cell(range_text(k, buf, sizeof(buf)));
			printf(" | ");
			if (k->flags & ZN_CFG_ZINC_ONLY) {
				printf("(zinc) ");
				any_zinc = true;
			}
			md_cell(k->help);
			printf(" |\n");
		}
		if (any_zinc)
			printf("\nKeys marked (zinc) are zinc's own; DeepSpeed does not have "
			       "them.\n");
	}

	printf("\n## DeepSpeed keys accepted but not used yet\n\n"
	       "These top-level keys load without a warning (an INFO log line says they are\n"
	       "not used); their contents are only checked for duplicate keys.\n\n");
	/* Wrapped at 80 columns, like the prose above. */
	size_t col = 0;
	for (size_t i = 0; zn_config_ignored_key(i); i++) {
		const char *k = zn_config_ignored_key(i);
		bool last = !zn_config_ignored_key(i + 1);
		size_t w = strlen(k) + 3; /* `k` and the comma or full stop */

		if (col && col + 1 + w > 80) {
			putchar('\n');
			col = 0;
		} else if (col) {
			putchar(' ');
			col++;
		}
		printf("`%s`%c", k, last ? '.' : ',');
		col += w;
	}
	printf("\n");
	return 0;
}

/* A config value as a YAML scalar that reads back as the same value. */
static void print_value(const struct zn_cfg_key *k, const char *text)
{
	if (k->type != ZN_CFG_STRING) {
		fputs(text, stdout);
		return;
	}
	/* Strings always quoted: "" or "yes" would otherwise change meaning. */
	putchar('"');
	for (const char *c = text; *c; c++) {
		if (*c == '"' || *c == '\\')
			putchar('\\');
		putchar(*c);
	}
	putchar('"');
}

static int check_file(const char *path)
{
	struct zn_config cfg;
	char buf[256];

	zn_log_set_sink(zn_log_stderr_sink, NULL, ZN_LOG_WARN);
	if (zn_config_load_file(path, &cfg)) {
		fprintf(stderr, "zinc: %s\n", zn_last_error());
		return 1;
	}
	printf("%s: ok\n", path);
	for (size_t s = 0; zn_config_section(s); s++) {
		const struct zn_cfg_section *sec = zn_config_section(s);
		void *data = zn_config_section_data(&cfg, sec);

		printf("%s:\n", sec->name);
		for (size_t i = 0; i < sec->nkeys; i++) {
			printf("  %s: ", sec->keys[i].name);
			print_value(&sec->keys[i],
				    zn_cfg_format(&sec->keys[i], data, buf, sizeof(buf)));
			putchar('\n');
		}
	}
	return 0;
}

int cmd_config(int argc, char **argv)
{
	static const char synopsis[] = "[--markdown | --check FILE]  (no option: list the keys)";
	struct config_args args = { 0 };
	int rc;

	rc = opts_parse("zinc config", options, sizeof(options) / sizeof(options[0]), argc, argv,
			&args, synopsis);
	if (rc == -2)
		return 0; /* --help */
	if (rc < 0)
		return 2;
	if (rc < argc) {
		fprintf(stderr, "zinc config: unexpected argument '%s'; see --help\n", argv[rc]);
		return 2;
	}
	if (args.markdown && args.check) {
		fprintf(stderr, "zinc config: --markdown and --check do not go together\n");
		return 2;
	}

	if (args.check)
		rc = check_file(args.check);
	else if (args.markdown)
		rc = print_markdown();
	else
		rc = list_keys();
	/* Output redirected to a full disk must not look like success. */
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "zinc config: writing the output failed: %s\n", strerror(errno));
		return 1;
	}
	return rc;
}
