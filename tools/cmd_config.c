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
#include "zinc/train.h"
#include "zinc/common.h"
#include "zinc/keys.h"
#include "zinc/configfile.h"

#define MAX_SETS 64

/* What the command line asked for. */
struct config_args {
	bool markdown;
	const char *check; /* FILE, or NULL */
	bool keys;
	const char *sets[MAX_SETS];
	size_t nsets;
};

static int add_set(void *ctx, const char *arg, const char **why)
{
	struct config_args *a = ctx;
	if (a->nsets == MAX_SETS) {
		*why = "too many --set options";
		return -1;
	}
	a->sets[a->nsets++] = arg;
	return 0;
}

static const struct opt options[] = {
	OPT_BOOL("markdown", "print the configuration reference (docs/config.md)",
		 struct config_args, markdown),
	OPT_STR("check", "FILE", NULL, "load FILE; print the first error, or the effective config",
		struct config_args, check),
	OPT_BOOL("keys", "with --check: print what was done with each key of the file, one "
		 "line each (read, mapped, auto, no-op, ignored, unknown), instead of the config",
		 struct config_args, keys),
	OPT_CALL("set", "KEY=VALUE", NULL, "with --check: override a config key, as zinc train "
		 "--set does (repeatable)", add_set),
};


static const char *type_name(enum zn_key_type t)
{
	/* No default: -Wswitch flags a new type missing here. */
	switch (t) {
	case ZN_KEY_BOOL:
		return "bool";
	case ZN_KEY_UINT:
		return "integer";
	case ZN_KEY_SIZE:
		return "size";
	case ZN_KEY_DOUBLE:
		return "number";
	case ZN_KEY_STRING:
		return "string";
	case ZN_KEY_ENUM:
		return "choice";
	case ZN_KEY_INT:
		return "integer";
	case ZN_KEY_PAIR:
		return "pair";
	case ZN_KEY_SECTION:
		return "section";
	}
	return "?";
}

/* The accepted values of a key, as prose for the reference. */
static char *range_text(const struct zn_key *k, char *buf, size_t len)
{
	char lo[32], hi[32];

	switch (k->type) {
	case ZN_KEY_BOOL:
		snprintf(buf, len, "true, false");
		break;
	case ZN_KEY_PAIR:
		snprintf(buf, len, "two numbers, each %.17g to %.17g", k->min, k->max);
		break;
	case ZN_KEY_SECTION:
		snprintf(buf, len, "a mapping");
		break;
	case ZN_KEY_UINT:
	case ZN_KEY_INT:
	case ZN_KEY_DOUBLE:
		if (k->max >= 1e300)
			snprintf(buf, len, ">= %.17g", k->min);
		else
			snprintf(buf, len, "%.17g to %.17g", k->min, k->max);
		break;
	case ZN_KEY_SIZE:
		zn_format_size((uint64_t)k->min, lo, sizeof(lo));
		if (k->max >= 1e300)
			snprintf(buf, len, ">= %s", lo);
		else
			snprintf(buf, len, "%s to %s", lo,
				 zn_format_size((uint64_t)k->max, hi, sizeof(hi)));
		break;
	case ZN_KEY_STRING:
		snprintf(buf, len, "up to %zu characters", k->size - 1);
		break;
	case ZN_KEY_ENUM:
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
static char *default_text(struct zn_config *defaults, const struct zn_key_table *sec,
			  const struct zn_key *k, char *buf, size_t len, char *pretty,
			  size_t plen)
{
	uint64_t v;

	zn_keys_format(k, zn_config_section_data(defaults, sec), buf, len);
	pretty[0] = '\0';
	if (k->type == ZN_KEY_SIZE && zn_parse_size(buf, &v) == 0 && v >= 1024)
		zn_format_size(v, pretty, plen);
	return buf;
}

/* "1048576 (1 MiB)" for the listing. */
static char *default_cell(struct zn_config *defaults, const struct zn_key_table *sec,
			  const struct zn_key *k, char *buf, size_t len)
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
	const char *path;

	for (size_t s = 0; zn_config_section(s, &path); s++) {
		const struct zn_key_table *sec = zn_config_section(s, &path);
		int wk = 3, wt = 4, wd = 7, wn = 9;
		char def[320], ds[128];

		/* Column widths from the data, so a long key does not skew them. */
		for (size_t i = 0; i < sec->nkeys; i++) {
			const struct zn_key *k = &sec->keys[i];
			int n = (int)strlen(k->name);
			wk = n > wk ? n : wk;
			n = (int)strlen(type_name(k->type));
			wt = n > wt ? n : wt;
			n = (int)strlen(default_cell(&defaults, sec, k, def, sizeof(def)));
			wd = n > wd ? n : wd;
			n = (int)(strlen(path) + 1 + strlen(k->name));
			wn = n > wn ? n : wn;
		}
		printf("%s%s: %s\n", s ? "\n" : "", path[0] ? path : "(top level)", sec->help);
		printf("  %-*s  %-*s  %-*s  %-*s  %s\n", wk, "key", wt, "type", wd, "default", wn,
		       "deepspeed", "meaning");
		for (size_t i = 0; i < sec->nkeys; i++) {
			const struct zn_key *k = &sec->keys[i];
			if (k->type == ZN_KEY_SECTION)
				continue; /* listed as a section of its own */
			if (k->flags & ZN_KEY_ZINC_ONLY)
				snprintf(ds, sizeof(ds), "zinc");
			else
				snprintf(ds, sizeof(ds), "%s%s%s", path, path[0] ? "." : "", k->name);
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

static int print_deepspeed_guide(struct zn_config *defaults);

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
	       "the top-level sections DeepSpeed documents that zinc does not use are accepted\n"
	       "(listed, with why, in \"Coming from DeepSpeed\" at the end). An unknown\n"
	       "top-level key is a warning that names the nearest known key -- an error when\n"
	       "that key is one zinc reads (`zero_optimisation`); an unknown key or a bad value\n"
	       "inside a section zinc reads is an error. Every message starts with\n"
	       "`FILE:LINE:COLUMN:`.\n"
	       "\n"
	       "A key set to `null` (or `~`, or nothing) keeps its default. Sizes accept `K`,\n"
	       "`M`, `G` and `T` suffixes (powers of 1024) and DeepSpeed's `1e8` notation.\n"
	       "DeepSpeed's `\"auto\"` means what it means to a Hugging Face Trainer user (see\n"
	       "\"Coming from DeepSpeed\"). A section given as a mapping is nested under its\n"
	       "parent, and messages name keys by their path\n"
	       "(`zero_optimization.offload_param.buffer_count`). Check a file with\n"
	       "`zinc config --check FILE`; `--keys` lists what was done with each of its keys.\n");

	const char *path;

	for (size_t s = 0; zn_config_section(s, &path); s++) {
		const struct zn_key_table *sec = zn_config_section(s, &path);
		bool any_zinc = false, any_unsup = false, any_noop = false;
		char buf[256], pretty[32];

		/* Section help is a sentence fragment ("the io_uring engine ..."). */
		if (path[0])
			printf("\n## `%s`\n\n%c", path, toupper((unsigned char)sec->help[0]));
		else
			printf("\n## Top level\n\n%c", toupper((unsigned char)sec->help[0]));
		md_cell(sec->help + 1);
		printf(".\n\n| key | alias | type | default | range | meaning |\n"
		       "| --- | --- | --- | --- | --- | --- |\n");
		for (size_t i = 0; i < sec->nkeys; i++) {
			const struct zn_key *k = &sec->keys[i];

			if (k->type == ZN_KEY_SECTION && !(k->flags & ZN_KEY_UNSUPPORTED))
				continue; /* a section of its own below */
			printf("| `%s` | ", k->name);
			if (k->alias)
				printf("`%s`", k->alias);
			if (k->deprecated)
				printf("%s`%s` (deprecated)", k->alias ? ", " : "", k->deprecated);
			printf(" | %s | `", type_name(k->type));
			md_cell(default_text(&defaults, sec, k, buf, sizeof(buf), pretty,
					     sizeof(pretty)));
			printf("`%s%s%s | ", pretty[0] ? " (" : "", pretty, pretty[0] ? ")" : "");
			md_cell(range_text(k, buf, sizeof(buf)));
			printf(" | ");
			if (k->flags & ZN_KEY_ZINC_ONLY) {
				printf("(zinc) ");
				any_zinc = true;
			}
			if (k->flags & ZN_KEY_UNSUPPORTED) {
				printf("(not supported yet) ");
				any_unsup = true;
			}
			if (k->noop) {
				printf("(no-op) ");
				any_noop = true;
			}
			md_cell(k->help);
			if (k->noop) {
				printf("; does nothing in zinc: ");
				md_cell(k->noop);
			}
			if (zn_keys_accepts_auto(sec, k) && !sec->auto_default)
				printf(" (accepts `auto`)");
			printf(" |\n");
		}
		if (any_zinc)
			printf("\nKeys marked (zinc) are zinc's own; DeepSpeed does not have "
			       "them.\n");
		if (any_unsup)
			printf("\nKeys marked (not supported yet) load only with their default "
			       "value; any other value is an error.\n");
		if (any_noop)
			printf("\nKeys marked (no-op) are accepted and do nothing in zinc; a value "
			       "other than the default is listed, with the reason, in the one "
			       "warning a load gives about such keys.\n");
		if (sec->auto_default)
			printf("\nEvery key of this section accepts `\"auto\"`: DeepSpeed drops "
			       "`\"auto\"` values here, so the default stands unless a rule above "
			       "says otherwise.\n");
	}

	return print_deepspeed_guide(&defaults);
}

/* "path" of key k in section `path` (the top level: just the name). */
static void key_path(char *buf, size_t len, const char *path, const char *name)
{
	snprintf(buf, len, "%s%s%s", path, path[0] ? "." : "", name);
}

/* The guide for DeepSpeed users: what zinc does with their keys, from the
 * same tables the loader reads (aliases, deprecated names, no-ops and
 * their reasons, refused keys, the "auto" rules, the unused sections). */
static int print_deepspeed_guide(struct zn_config *defaults)
{
	const char *path, *from;
	char kp[320];

	printf("\n## Coming from DeepSpeed\n\n"
	       "A `ds_config.json` is read as DeepSpeed reads it. Each of its keys is one of:\n"
	       "read (it does in zinc what it does in DeepSpeed), mapped (another spelling of\n"
	       "a key zinc reads), a no-op (accepted, does nothing in zinc, for the reason\n"
	       "given), unused (a DeepSpeed section zinc does not use), or refused (an error\n"
	       "naming the key and why). Nothing is silent: a load gives one warning listing\n"
	       "every no-op key and unused section whose value is not DeepSpeed's default, with\n"
	       "the reasons, and `zinc config --check FILE --keys` prints what was done with\n"
	       "each key. The tests read 56 public DeepSpeed configs (tests/data/ds_configs)\n"
	       "this way and train a step with each one zinc accepts.\n");

	printf("\n### Mapped\n\n"
	       "| as the file spells it | read as |\n| --- | --- |\n");
	for (size_t s = 0; zn_config_section(s, &path); s++) {
		const struct zn_key_table *sec = zn_config_section(s, &path);
		for (size_t i = 0; i < sec->nkeys; i++) {
			const struct zn_key *k = &sec->keys[i];
			key_path(kp, sizeof(kp), path, k->name);
			if (k->alias)
				printf("| `%s%s%s` | `%s` |\n", path, path[0] ? "." : "", k->alias, kp);
			if (k->deprecated)
				printf("| `%s%s%s` (deprecated by DeepSpeed: a warning) | `%s` |\n", path,
				       path[0] ? "." : "", k->deprecated, kp);
		}
	}
	printf("| `\"zero_optimization\": true` / `false` (DeepSpeed's oldest form: a "
	       "warning) | `zero_optimization.stage` 1 / 0 |\n"
	       "| `zero_optimization.cpu_offload: true` (deprecated: a warning) | "
	       "`zero_optimization.offload_optimizer.device: cpu` |\n"
	       "| `zero_optimization.cpu_offload_param: true` (deprecated: a warning) | "
	       "`zero_optimization.offload_param.device: cpu` |\n"
	       "| `zero_optimization.aio` (a warning: DeepSpeed reads it at the top level) | "
	       "`aio` |\n"
	       "| `zero_optimization.offload_param` below stage 3 (a warning) | nothing: "
	       "DeepSpeed does not use it there either |\n"
	       "| `zero_optimization.stage3_model_persistence_threshold: 0` | "
	       "`zero_optimization.stage3_param_persistence_threshold: 0` |\n"
	       "| `zero_optimization.sub_group_size: 0` (a parameter per sub-group) | "
	       "sub-groups of the largest tensor's elements |\n");

	printf("\n### \"auto\"\n\n"
	       "`\"auto\"` is filled as the Hugging Face Trainer fills it\n"
	       "(`trainer_config_process` and `trainer_config_finalize` in transformers'\n"
	       "DeepSpeed integration), zinc's run standing in for TrainingArguments, and the\n"
	       "start-up prints one line saying what each `\"auto\"` became. The keys of\n"
	       "`zero_optimization`, its offload sections, `fp16` and `bf16` all take\n"
	       "`\"auto\"`, since DeepSpeed drops it there: a key without a rule below keeps\n"
	       "its default.\n\n| key | `\"auto\"` becomes |\n| --- | --- |\n");
	for (size_t i = 0; zn_config_auto_rule(i, &from); i++)
		printf("| `%s` | %s |\n", zn_config_auto_rule(i, NULL), from);
	printf("\nLinked values follow what they are linked to wherever it is set: with\n"
	       "`warmup_max_lr: \"auto\"`, `--set optimizer.params.lr=3e-5` moves the\n"
	       "schedule's peak too. The hidden size is the model's: `model.n_embd` for\n"
	       "gpt2, a Hugging Face config.json's `hidden_size` for llama (resolved when the\n"
	       "model is built).\n");

	printf("\n### No-ops\n\n"
	       "| key | default | why it does nothing in zinc |\n| --- | --- | --- |\n");
	for (size_t s = 0; zn_config_section(s, &path); s++) {
		const struct zn_key_table *sec = zn_config_section(s, &path);
		char def[256], pretty[32];
		for (size_t i = 0; i < sec->nkeys; i++) {
			const struct zn_key *k = &sec->keys[i];
			if (!k->noop)
				continue;
			key_path(kp, sizeof(kp), path, k->name);
			printf("| `%s` | `%s` | ", kp,
			       default_text(defaults, sec, k, def, sizeof(def), pretty, sizeof(pretty)));
			md_cell(k->noop);
			printf(" |\n");
		}
	}
	printf("\nThe defaults are DeepSpeed's, except `bf16.check_grad_overflow` (DeepSpeed:\n"
	       "true; zinc's false is what it does, see below) and\n"
	       "`activation_checkpointing.number_checkpoints` (DeepSpeed: none).\n");

	printf("\n### Top-level sections zinc does not use\n\n"
	       "Each loads with an INFO line; one that is switched on (`enabled: true`, or a\n"
	       "value other than DeepSpeed's default) is listed in the load's warning.\n\n"
	       "| key | why |\n| --- | --- |\n");
	for (size_t i = 0; zn_config_ignored_key(i); i++) {
		printf("| `%s` | ", zn_config_ignored_key(i));
		md_cell(zn_config_ignored_why(i));
		printf(" |\n");
	}

	printf("\n### Refused\n\n"
	       "These DeepSpeed features are not in zinc; each loads at its default value\n"
	       "(a `ds_config.json` often spells defaults out) and any other value is an\n"
	       "error naming the key:\n\n");
	for (size_t s = 0; zn_config_section(s, &path); s++) {
		const struct zn_key_table *sec = zn_config_section(s, &path);
		for (size_t i = 0; i < sec->nkeys; i++) {
			const struct zn_key *k = &sec->keys[i];
			if (!(k->flags & ZN_KEY_UNSUPPORTED))
				continue;
			key_path(kp, sizeof(kp), path, k->name);
			printf("- `%s`: ", kp);
			md_cell(k->help);
			printf("\n");
		}
	}
	printf("\nThe optimizer and the schedule are checked by their type before their\n"
	       "parameters, and a parameter the type does not take is an error (DeepSpeed\n"
	       "passes them as keyword arguments: a TypeError there). zinc runs Adam,\n"
	       "AdamW, Lamb (DeepSpeed's FusedLamb) and SGD (torch.optim.SGD) -- the\n"
	       "last two on the CPU optimizer (`offload_optimizer.device` cpu or nvme;\n"
	       "Lamb on NVMe streams the states twice a step for its trust ratio) --\n"
	       "and the schedules WarmupLR, WarmupDecayLR, WarmupCosineLR,\n"
	       "OneCycle and LRRangeTest. OneCycle with `cycle_momentum` sets the\n"
	       "optimizer's betas to (momentum, 0.99) each step, as DeepSpeed's does: beta2\n"
	       "becomes 0.99 whatever `optimizer.params.betas` says; with SGD, which has no\n"
	       "betas, it cycles nothing (DeepSpeed warns and turns it off). The 1-bit\n"
	       "optimizers (OneBitAdam, ZeroOneAdam, OneBitLamb) are refused for what they\n"
	       "are: they compress the gradients ranks exchange to 1 bit with error\n"
	       "feedback, a saving in communication between GPUs that zinc's offload does\n"
	       "not have.\n");
	printf("\nOne placement DeepSpeed runs and zinc refuses: `offload_param` without\n"
	       "`offload_optimizer` (DeepSpeed keeps the optimizer states on the GPUs then);\n"
	       "zinc's trainer updates offloaded parameters with the CPU optimizer, so set\n"
	       "`offload_optimizer.device` cpu (or nvme) beside it. `zinc config --check`\n"
	       "and `zinc plan` refuse it as `zinc train` does.\n");

	printf("\n### Defaults unlike DeepSpeed's\n\n"
	       "zinc train prints the ones that apply to a run, once, at start-up\n"
	       "(`zinc config --check` too).\n\n"
	       "| key | zinc | DeepSpeed |\n| --- | --- | --- |\n"
	       "| `zero_optimization.overlap_comm` | false | true at stage 3 |\n"
	       "| `gradient_clipping` | 0 (no clipping) | 1.0 (since 0.19) |\n"
	       "| `bf16.check_grad_overflow` | false (inf/nan gradients stop the run) | true (the "
	       "step is skipped) |\n"
	       "| `optimizer.params.weight_decay_params` (zinc's) | `matrices` | every parameter "
	       "the script passes |\n");

	printf("\n### Weight decay\n\n"
	       "zinc decays 2-D tensors only by default (`optimizer.params.weight_decay_params:\n"
	       "matrices`): not biases, norms' gains or other vectors, the rule of the Hugging\n"
	       "Face Trainer and of nanoGPT. DeepSpeed's optimizer decays every parameter the\n"
	       "training script passes it; `weight_decay_params: all` does that. The start-up\n"
	       "says which applies when `weight_decay` is not 0.\n");
	return 0;
}

/* A config value as a YAML scalar that reads back as the same value. */
static void print_value(const struct zn_key *k, const char *text)
{
	if (k->type != ZN_KEY_STRING) {
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

/* One section's keys as YAML at `depth` (two spaces a level), nested
 * sections after its scalars, so the output reads back as the same config. */
static void print_section(const struct zn_key_table *sec, const void *data, int depth)
{
	char buf[256];

	for (size_t i = 0; i < sec->nkeys; i++) {
		const struct zn_key *k = &sec->keys[i];
		if (k->type == ZN_KEY_SECTION)
			continue;
		printf("%*s%s: ", 2 * depth, "", k->name);
		print_value(k, zn_keys_format(k, data, buf, sizeof(buf)));
		putchar('\n');
	}
	for (size_t i = 0; i < sec->nkeys; i++) {
		const struct zn_key *k = &sec->keys[i];
		/* An unsupported section can only be absent: nothing to show. */
		if (k->type != ZN_KEY_SECTION || (k->flags & ZN_KEY_UNSUPPORTED))
			continue;
		printf("%*s%s:\n", 2 * depth, "", k->name);
		print_section(k->sub, (const char *)data + k->offset, depth + 1);
	}
}

static void print_use(void *ctx, const char *path, enum zn_key_use use, const char *note)
{
	static const char *const names[] = {
		[ZN_USE_READ] = "read",       [ZN_USE_MAPPED] = "mapped",
		[ZN_USE_AUTO] = "auto",       [ZN_USE_NOOP] = "no-op",
		[ZN_USE_IGNORED] = "ignored", [ZN_USE_UNKNOWN] = "unknown",
	};
	(void)ctx;
	printf("%s\t%s\t%s\n", path, names[use], note);
}

static int check_file(const struct config_args *a)
{
	const char *path = a->check;
	struct zn_config cfg;
	char line[8192];

	zn_log_set_sink(zn_log_stderr_sink, NULL, ZN_LOG_WARN);
	/* Bad input: status 2, as zinc train and zinc plan say it. */
	if (zn_config_load_file_explain(path, a->sets, a->nsets, &cfg, a->keys ? print_use : NULL,
					NULL)) {
		fprintf(stderr, "zinc: %s\n", zn_last_error());
		return 2;
	}
	/* What zinc train would refuse of it before its model and data. */
	if (zn_trainer_check_config(&cfg)) {
		fprintf(stderr, "zinc: %s: %s\n", path, zn_last_error());
		return 2;
	}
	if (a->keys)
		return 0;
	printf("%s: ok\n", path);
	if (zn_config_auto_report(&cfg, line, sizeof(line)))
		printf("# %s\n", line);
	if (zn_config_defaults_report(&cfg, line, sizeof(line)))
		printf("# %s\n", line);
	if (cfg.batch.train_batch_size)
		printf("# batch: %u samples per step = %u per micro-batch x %u accumulation "
		       "steps x %u rank%s\n",
		       cfg.batch.train_batch_size, cfg.batch.micro_batch, cfg.batch.grad_accum,
		       cfg.batch.world_size, cfg.batch.world_size == 1 ? "" : "s");
	else
		printf("# batch: not configured (give train_batch_size or "
		       "train_micro_batch_size_per_gpu to train)\n");
	print_section(zn_config_root(), &cfg, 0);
	return 0;
}

int cmd_config(int argc, char **argv)
{
	static const char synopsis[] =
		"[--markdown | --check FILE [--keys] [--set KEY=VALUE]...]  (no option: list the "
		"keys)";
	struct config_args args = { 0 };
	int rc;

	rc = opts_command("zinc config", options, sizeof(options) / sizeof(options[0]), argc, argv,
			  &args, synopsis);
	if (rc >= 0)
		return rc;
	if (args.markdown && args.check) {
		fprintf(stderr, "zinc config: --markdown and --check do not go together\n");
		return 2;
	}

	if ((args.keys || args.nsets) && !args.check) {
		fprintf(stderr, "zinc config: --keys and --set go with --check FILE\n");
		return 2;
	}
	if (args.check)
		rc = check_file(&args);
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
