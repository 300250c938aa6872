/* zinc plan CONFIG — what a training config needs in each memory tier
 * (device, pinned host, pageable host, each nvme_path) against what this
 * machine has, or a described one (--machine), and what to change when it
 * does not fit; with --largest, the largest model of the config's family
 * that fits instead.
 *
 * The plan is the library's (include/zinc/plan.h); `zinc train` runs the
 * same check before training.  Exit status: 0 fits (--largest: some shape
 * fits), 1 does not fit (the report says what to change; --largest: not
 * even the smallest shape), 2 bad input (config errors as `zinc train`
 * reports them, a malformed --machine).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "options.h"
#include "util.h"

#include "zinc/configfile.h"
#include "zinc/json.h"
#include "zinc/plan.h"
#include "zinc/train.h"

struct plan_args {
	bool json;
	bool largest;
	unsigned ranks;
	struct zn_plan_machine machine;
};

static int set_machine(void *ctx, const char *arg, const char **why)
{
	struct plan_args *a = ctx;
	if (zn_plan_machine_parse(arg, &a->machine) == 0)
		return 0;
	*why = zn_last_error();
	return -1;
}

static const struct opt options[] = {
	OPT_BOOL("json", "print one JSON object instead of the report", struct plan_args, json),
	OPT_NUM("ranks", "N", "none", "also each of N ranks' share of the model states "
		"(ZeRO's partitions; what zinc train's JSON log reports as rank_memory)",
		struct plan_args, ranks, 1, 65536),
	OPT_CALL("machine", "PARTS", "this machine",
		 "plan for a described machine: PARTS is any of device=SIZE, host=SIZE, "
		 "nvme=SIZE (once per disk; one disk holds every nvme_path directory), comma-"
		 "separated, sizes as the config's (24G = 24 GiB); parts not given are measured "
		 "here", set_machine),
	OPT_BOOL("largest", "report the largest model of the config's family (Llama or GPT-2 "
		 "shapes) that fits, and the tier that stops the next size up", struct plan_args,
		 largest),
};

/* Each rank's model states (zn_rank_memory_plan); NULL: none asked.  -1
 * after saying why. */
static int rank_states(const struct zn_config *cfg, unsigned n, struct zn_rank_memory **out)
{
	*out = NULL;
	if (!n)
		return 0;
	struct zn_rank_memory *m = calloc(n, sizeof(*m));
	if (!m) {
		fprintf(stderr, "zinc plan: out of memory\n");
		return -1;
	}
	for (unsigned r = 0; r < n; r++) {
		if (zn_rank_memory_plan(cfg, (int)n, (int)r, &m[r]) != 0) {
			fprintf(stderr, "zinc plan: %s\n", zn_last_error());
			free(m);
			return -1;
		}
	}
	*out = m;
	return 0;
}

static void print_ranks(const struct zn_rank_memory *m, unsigned n)
{
	char a[32], b[32], c[32], d[32];
	printf("\nmodel states per rank (ZeRO stage %u over %u rank%s: optimizer states "
	       "partitioned from stage 1, gradients from stage 2, parameters in stage 3); the "
	       "tiers above hold one rank's whole states\n", m[0].stage, n, n == 1 ? "" : "s");
	for (unsigned r = 0; r < n; r++) {
		/* Ranks alike but the last (the parts' remainders): one line. */
		if (r > 0 && r < n - 1 && m[r].params == m[0].params && m[r].grads == m[0].grads &&
		    m[r].optimizer == m[0].optimizer)
			continue;
		printf("  rank %u%s: parameters %s, gradients %s, optimizer states %s, total %s\n", r,
		       r == 0 && n > 2 && m[1].params == m[0].params && m[1].grads == m[0].grads &&
				       m[1].optimizer == m[0].optimizer
			       ? " (and every rank but the last)" : "",
		       zn_format_size(m[r].params, a, sizeof(a)),
		       zn_format_size(m[r].grads, b, sizeof(b)),
		       zn_format_size(m[r].optimizer, c, sizeof(c)),
		       zn_format_size(m[r].params + m[r].grads + m[r].optimizer, d, sizeof(d)));
	}
}

static const char *kind_name(int kind)
{
	switch (kind) {
	case ZN_PLAN_DEVICE:
		return "device";
	case ZN_PLAN_PINNED:
		return "pinned_host";
	case ZN_PLAN_PAGEABLE:
		return "pageable_host";
	case ZN_PLAN_NVME:
		return "nvme";
	}
	return "?";
}

/* "key": v, or null when !present. */
static void json_uint_or_null(struct zn_json *j, const char *key, bool present, uint64_t v)
{
	zn_json_key(j, key);
	if (present)
		zn_json_uint(j, v);
	else
		zn_json_null(j);
}

/* What the capacities came from: {"described", "text", "device", "host",
 * "nvme"}, a part null (or nvme []) where it was measured here. */
static void json_machine(struct zn_json *j, const struct zn_plan *p)
{
	const struct zn_plan_machine *m = &p->machine;
	zn_json_key(j, "machine");
	zn_json_begin_object(j);
	zn_json_key(j, "described");
	zn_json_bool(j, p->described);
	zn_json_key(j, "text");
	zn_json_string(j, p->described ? p->machine_text : "this machine, measured");
	json_uint_or_null(j, "device", m->device != 0, m->device);
	json_uint_or_null(j, "host", m->host != 0, m->host);
	zn_json_key(j, "nvme");
	zn_json_begin_array(j);
	for (unsigned i = 0; i < m->ndisks; i++)
		zn_json_uint(j, m->disk[i]);
	zn_json_end_array(j);
	zn_json_end_object(j);
}

static void json_tier(struct zn_json *j, const struct zn_plan_tier *t)
{
	zn_json_begin_object(j);
	zn_json_key(j, "name");
	zn_json_string(j, t->name);
	zn_json_key(j, "kind");
	zn_json_string(j, kind_name(t->kind));
	zn_json_key(j, "needed");
	zn_json_uint(j, t->needed);
	/* Capacity: bytes, or null when unknown or checked in another row. */
	json_uint_or_null(j, "available", t->known && !t->counted_elsewhere, t->available);
	json_uint_or_null(j, "total", t->total != 0, t->total);
	zn_json_key(j, "fits");
	zn_json_bool(j, t->fits);
	zn_json_key(j, "hard");
	zn_json_bool(j, t->hard);
	zn_json_key(j, "known");
	zn_json_bool(j, t->known);
	zn_json_key(j, "counted_elsewhere");
	zn_json_bool(j, t->counted_elsewhere);
	zn_json_key(j, "described");
	zn_json_bool(j, t->described);
	zn_json_key(j, "source");
	zn_json_string(j, t->source);
	zn_json_key(j, "note");
	zn_json_string(j, t->note);
	zn_json_key(j, "items");
	zn_json_begin_array(j);
	for (unsigned k = 0; k < t->nitems; k++) {
		zn_json_begin_object(j);
		zn_json_key(j, "name");
		zn_json_string(j, t->items[k].name);
		zn_json_key(j, "bytes");
		zn_json_uint(j, t->items[k].bytes);
		zn_json_end_object(j);
	}
	zn_json_end_array(j);
	zn_json_key(j, "suggestions");
	zn_json_begin_array(j);
	for (unsigned k = 0; k < t->nadvice; k++)
		zn_json_string(j, t->advice[k]);
	zn_json_end_array(j);
	zn_json_end_object(j);
}

/* The plan's members, inside an object the caller opened. */
static void json_plan(struct zn_json *j, const struct zn_plan *p)
{
	uint64_t tot[3] = { 0, 0, 0 }; /* device, host (pinned + pageable), nvme */

	zn_json_key(j, "fits");
	zn_json_bool(j, zn_plan_fits(p));
	zn_json_key(j, "summary");
	zn_json_string(j, p->summary);
	json_machine(j, p);
	zn_json_key(j, "params");
	zn_json_uint(j, p->params);
	zn_json_key(j, "largest_tensor");
	zn_json_begin_object(j);
	zn_json_key(j, "name");
	zn_json_string(j, p->largest_name);
	zn_json_key(j, "elements");
	zn_json_uint(j, p->largest);
	zn_json_end_object(j);
	zn_json_key(j, "largest_layer_elements");
	zn_json_uint(j, p->largest_layer);
	zn_json_key(j, "tiers");
	zn_json_begin_array(j);
	for (unsigned i = 0; i < p->ntiers; i++) {
		const struct zn_plan_tier *t = &p->tiers[i];
		tot[t->kind == ZN_PLAN_DEVICE ? 0 : t->kind == ZN_PLAN_NVME ? 2 : 1] += t->needed;
		json_tier(j, t);
	}
	zn_json_end_array(j);
	zn_json_key(j, "totals");
	zn_json_begin_object(j);
	zn_json_key(j, "device");
	zn_json_uint(j, tot[0]);
	zn_json_key(j, "host");
	zn_json_uint(j, tot[1]);
	zn_json_key(j, "nvme");
	zn_json_uint(j, tot[2]);
	zn_json_end_object(j);
}

static void print_json(const struct zn_plan *p, const struct zn_rank_memory *ranks, unsigned n)
{
	struct zn_json j;

	zn_json_init(&j, stdout, ZN_JSON_LINE);
	zn_json_begin_object(&j);
	json_plan(&j, p);
	if (ranks) {
		zn_json_key(&j, "ranks");
		zn_json_begin_array(&j);
		for (unsigned r = 0; r < n; r++) {
			zn_json_begin_object(&j);
			zn_json_key(&j, "rank");
			zn_json_uint(&j, (uint64_t)r);
			zn_json_key(&j, "params");
			zn_json_uint(&j, ranks[r].params);
			zn_json_key(&j, "grads");
			zn_json_uint(&j, ranks[r].grads);
			zn_json_key(&j, "optimizer");
			zn_json_uint(&j, ranks[r].optimizer);
			zn_json_end_object(&j);
		}
		zn_json_end_array(&j);
	}
	zn_json_end_object(&j);
}

/* ---- --largest ---------------------------------------------------------- */

static const char *row_name(const struct zn_plan_tier *t, char *buf, size_t len)
{
	snprintf(buf, len, "%s%s", t->kind == ZN_PLAN_NVME ? "nvme " : "", t->name);
	return buf;
}

/* "20.1 B" / "350 M" parameters. */
static const char *count_text(uint64_t n, char *buf, size_t len)
{
	if (n >= 1000000000u)
		snprintf(buf, len, "%.1f B", (double)n / 1e9);
	else
		snprintf(buf, len, "%.0f M", (double)n / 1e6);
	return buf;
}

/* The shape in the keys a config gives it with: config.json's for a
 * Llama, the model section's for GPT-2. */
static void print_shape(const struct zn_plan_largest *l, const char *label,
			const struct zn_plan_shape *s)
{
	char a[32];
	if (l->model_type == ZN_MODEL_GPT2)
		printf("%-14s model.n_embd %u, model.n_layer %u, model.n_head %u (head size %u, "
		       "MLP %u, vocab %u)", label, s->n_embd, s->n_layer, s->n_head, s->head_dim,
		       s->intermediate, s->vocab_size);
	else
		printf("%-14s hidden_size %u, num_hidden_layers %u, num_attention_heads %u, "
		       "num_key_value_heads %u, head_dim %u, intermediate_size %u, vocab_size %u",
		       label, s->n_embd, s->n_layer, s->n_head, s->n_kv_head, s->head_dim,
		       s->intermediate, s->vocab_size);
	printf(": %llu parameters (%s)\n", (unsigned long long)s->params,
	       count_text(s->params, a, sizeof(a)));
}

/* A tier's capacity for the table. */
static const char *capacity(const struct zn_plan_tier *t, char *buf, size_t len)
{
	if (t->counted_elsewhere)
		return "host";
	return t->known ? zn_format_size(t->available, buf, len) : "unknown";
}

static bool binds(const struct zn_plan_tier *t)
{
	return t->hard && !t->fits;
}

static void print_largest(const struct zn_plan_largest *l)
{
	const bool fit = l->result != ZN_PLAN_LARGEST_NONE;
	const bool over = l->result != ZN_PLAN_LARGEST_ALL;
	const struct zn_plan *p = fit ? &l->fit_plan : &l->over_plan;
	const bool planned = over && !l->over_error[0]; /* over_plan holds over's plan */
	char a[32], b[32], name[ZN_NVME_PATH_MAX + 8];

	printf("largest %s-shaped model for this config (shapes from %s to %s; %u plan%s)\n",
	       l->family, l->smallest, l->biggest, l->plans, l->plans == 1 ? "" : "s");
	printf("machine: %s\n\n", p->described ? p->machine_text : "this one, measured");
	if (l->result == ZN_PLAN_LARGEST_NONE)
		printf("none fits: even the smallest shape does not\n");
	if (fit)
		print_shape(l, "fits:", &l->fit);
	if (over)
		print_shape(l, fit ? "next size up:" : "smallest:", &l->over);

	int w = 13; /* "pageable host", up to 48 */
	for (unsigned i = 0; i < p->ntiers; i++) {
		int n = (int)strlen(row_name(&p->tiers[i], name, sizeof(name)));
		w = n > w ? (n < 48 ? n : 48) : w;
	}
	/* Each shape's need against its capacity (the pageable row's is what
	 * that shape's pinned tier leaves): fit's columns, then over's. */
	const struct zn_plan *col[2];
	const char *head[2];
	unsigned nc = 0;
	if (fit) {
		col[nc] = &l->fit_plan;
		head[nc++] = "largest";
	}
	if (over) {
		col[nc] = planned ? &l->over_plan : NULL;
		head[nc++] = fit ? "next up" : "smallest";
	}
	printf("\n%-*s", w, "");
	for (unsigned k = 0; k < nc; k++)
		printf("  %-22s", head[k]);
	printf("\n%-*s", w, "tier");
	for (unsigned k = 0; k < nc; k++)
		printf("  %10s  %10s", "needed", "available");
	printf("\n");
	for (unsigned i = 0; i < p->ntiers; i++) {
		printf("%-*s", w, row_name(&p->tiers[i], name, sizeof(name)));
		for (unsigned k = 0; k < nc; k++) {
			const struct zn_plan_tier *t = col[k] ? &col[k]->tiers[i] : NULL;
			printf("  %10s  %10s", t ? zn_format_size(t->needed, a, sizeof(a)) : "-",
			       t ? capacity(t, b, sizeof(b)) : "-");
		}
		printf("%s\n", planned && binds(&l->over_plan.tiers[i]) ? "  <- binds" : "");
	}
	if (l->model_type == ZN_MODEL_GPT2)
		printf("\nshapes: GPT-2's published (n_embd, n_layer), both the same fraction of the "
		       "way between the two around a parameter count; head size 64, so n_embd a "
		       "multiple of %u; MLP 4 n_embd; the config's vocabulary, seq_len and the rest "
		       "kept\n\n", l->step);
	else
		printf("\nshapes: Llama's published (hidden_size, num_hidden_layers), both the same "
		       "fraction of the way between the two around a parameter count; head_dim 128 "
		       "and the config's key/value heads, so hidden_size a multiple of %u; "
		       "intermediate_size 256 x round(3.5 hidden_size / 256); the config's "
		       "vocabulary, tying, the rest of its config.json and its settings kept\n\n",
		       l->step);
	for (unsigned i = 0; i < p->ntiers; i++)
		if (!p->tiers[i].known && !p->tiers[i].counted_elsewhere)
			printf("note: %s capacity %s; it bounds nothing here: describe it with "
			       "--machine %s=SIZE\n", row_name(&p->tiers[i], name, sizeof(name)),
			       p->tiers[i].source,
			       p->tiers[i].kind == ZN_PLAN_DEVICE ? "device" : "nvme");
	if (!over) {
		printf("every %s shape fits, up to %s's; the search goes no further\n", l->family,
		       l->biggest);
		return;
	}
	if (!planned) {
		printf("binding: the %s cannot be planned: %s\n",
		       fit ? "next size up" : "smallest shape", l->over_error);
		return;
	}
	for (unsigned i = 0; i < l->over_plan.ntiers; i++) {
		const struct zn_plan_tier *o = &l->over_plan.tiers[i];
		if (binds(o))
			printf("binding: %s: the %s needs %s, has %s (%s)\n",
			       row_name(o, name, sizeof(name)),
			       fit ? "next size up" : "smallest shape",
			       zn_format_size(o->needed, a, sizeof(a)),
			       zn_format_size(o->available, b, sizeof(b)), o->source);
	}
}

static void json_shape(struct zn_json *j, const struct zn_plan_shape *s)
{
	zn_json_key(j, "shape");
	zn_json_begin_object(j);
	zn_json_key(j, "n_layer");
	zn_json_uint(j, s->n_layer);
	zn_json_key(j, "n_embd");
	zn_json_uint(j, s->n_embd);
	zn_json_key(j, "n_head");
	zn_json_uint(j, s->n_head);
	zn_json_key(j, "n_kv_head");
	zn_json_uint(j, s->n_kv_head);
	zn_json_key(j, "head_dim");
	zn_json_uint(j, s->head_dim);
	zn_json_key(j, "intermediate");
	zn_json_uint(j, s->intermediate);
	zn_json_key(j, "vocab_size");
	zn_json_uint(j, s->vocab_size);
	zn_json_key(j, "params");
	zn_json_uint(j, s->params);
	zn_json_end_object(j);
}

static void print_largest_json(const struct zn_plan_largest *l)
{
	static const char *const results[] = { "found", "none", "all" };
	const bool fit = l->result != ZN_PLAN_LARGEST_NONE;
	const bool over = l->result != ZN_PLAN_LARGEST_ALL;
	struct zn_json j;

	zn_json_init(&j, stdout, ZN_JSON_LINE);
	zn_json_begin_object(&j);
	zn_json_key(&j, "result");
	zn_json_string(&j, results[l->result]);
	zn_json_key(&j, "family");
	zn_json_string(&j, l->family);
	zn_json_key(&j, "range");
	zn_json_begin_array(&j);
	zn_json_string(&j, l->smallest);
	zn_json_string(&j, l->biggest);
	zn_json_end_array(&j);
	zn_json_key(&j, "step");
	zn_json_uint(&j, l->step);
	zn_json_key(&j, "plans");
	zn_json_uint(&j, l->plans);
	json_machine(&j, fit ? &l->fit_plan : &l->over_plan);
	zn_json_key(&j, "largest");
	if (fit) {
		zn_json_begin_object(&j);
		json_shape(&j, &l->fit);
		zn_json_key(&j, "plan");
		zn_json_begin_object(&j);
		json_plan(&j, &l->fit_plan);
		zn_json_end_object(&j);
		zn_json_end_object(&j);
	} else {
		zn_json_null(&j);
	}
	zn_json_key(&j, "next");
	if (over) {
		zn_json_begin_object(&j);
		json_shape(&j, &l->over);
		zn_json_key(&j, "plan");
		if (l->over_error[0]) {
			zn_json_null(&j);
		} else {
			zn_json_begin_object(&j);
			json_plan(&j, &l->over_plan);
			zn_json_end_object(&j);
		}
		zn_json_key(&j, "error");
		zn_json_string(&j, l->over_error);
		zn_json_end_object(&j);
	} else {
		zn_json_null(&j);
	}
	/* The tiers the next size up (or the smallest) runs out of. */
	zn_json_key(&j, "binding");
	zn_json_begin_array(&j);
	for (unsigned i = 0; over && !l->over_error[0] && i < l->over_plan.ntiers; i++) {
		const struct zn_plan_tier *o = &l->over_plan.tiers[i];
		if (!binds(o))
			continue;
		zn_json_begin_object(&j);
		zn_json_key(&j, "name");
		zn_json_string(&j, o->name);
		zn_json_key(&j, "kind");
		zn_json_string(&j, kind_name(o->kind));
		zn_json_key(&j, "needed");
		zn_json_uint(&j, o->needed);
		zn_json_key(&j, "available");
		zn_json_uint(&j, o->available);
		zn_json_end_object(&j);
	}
	zn_json_end_array(&j);
	zn_json_end_object(&j);
}

static int run_largest(const struct zn_config *cfg, const struct plan_args *a)
{
	struct zn_plan_largest *l = malloc(sizeof(*l));
	if (!l) {
		fprintf(stderr, "zinc plan: out of memory\n");
		return 1;
	}
	if (zn_plan_largest(cfg, &a->machine, l) != 0) {
		fprintf(stderr, "zinc plan: %s\n", zn_last_error());
		free(l);
		return 2;
	}
	if (a->json)
		print_largest_json(l);
	else
		print_largest(l);
	int rc = l->result == ZN_PLAN_LARGEST_NONE ? 1 : 0;
	free(l);
	return rc;
}

int cmd_plan(int argc, char **argv)
{
	struct plan_args a = { 0 };
	struct zn_config cfg;
	int rc = opts_parse("zinc plan", options, ARRAY_SIZE(options), argc, argv, &a,
			    "CONFIG [--json] [--ranks N] [--machine device=S,host=S,nvme=S] "
			    "[--largest]");
	if (rc == -2)
		return 0;
	if (rc < 0)
		return 2;
	if (rc != argc - 1) {
		fprintf(stderr, "zinc plan: give exactly one config file; see --help\n");
		return 2;
	}
	if (a.largest && a.ranks) {
		fprintf(stderr, "zinc plan: --largest and --ranks cannot be combined: the ranks' "
				"shares are of the config's own model; run them apart\n");
		return 2;
	}
	zn_log_set_sink(zn_log_stderr_sink, NULL, ZN_LOG_WARN);
	if (zn_config_load_file(argv[rc], &cfg) != 0) {
		fprintf(stderr, "zinc plan: %s\n", zn_last_error());
		return 2;
	}
	if (a.largest)
		return run_largest(&cfg, &a);
	struct zn_plan *p = malloc(sizeof(*p));
	if (!p) {
		fprintf(stderr, "zinc plan: out of memory\n");
		return 1;
	}
	struct zn_rank_memory *ranks = NULL;
	if (zn_plan_compute_on(&cfg, &a.machine, p) != 0) {
		fprintf(stderr, "zinc plan: %s\n", zn_last_error());
		free(p);
		return 2;
	}
	if (rank_states(&cfg, a.ranks, &ranks) != 0) {
		free(p);
		return 2;
	}
	if (a.json) {
		print_json(p, ranks, a.ranks);
	} else {
		int n = zn_plan_format(p, NULL, 0);
		char *text = n >= 0 ? malloc((size_t)n + 1) : NULL;
		if (!text) {
			fprintf(stderr, "zinc plan: out of memory\n");
			free(p);
			return 1;
		}
		zn_plan_format(p, text, (size_t)n + 1);
		fputs(text, stdout);
		free(text);
		if (ranks)
			print_ranks(ranks, a.ranks);
	}
	rc = zn_plan_fits(p) ? 0 : 1;
	free(ranks);
	free(p);
	return rc;
}
