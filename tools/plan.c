/* zinc plan CONFIG — what a training config needs in each memory tier
 * (device, pinned host, pageable host, each nvme_path) against what this
 * machine has, and what to change when it does not fit.
 *
 * The plan is the library's (include/zinc/plan.h); `zinc train` runs the
 * same check before training.  Exit status: 0 fits, 1 does not fit (the
 * report says what to change), 2 bad input (config errors as `zinc train`
 * reports them).
 */
#include <stdio.h>
#include <stdlib.h>

#include "commands.h"
#include "options.h"
#include "util.h"

#include "zinc/configfile.h"
#include "zinc/json.h"
#include "zinc/plan.h"
#include "zinc/train.h"

struct plan_args {
	bool json;
	unsigned ranks;
};

static const struct opt options[] = {
	OPT_BOOL("json", "print one JSON object instead of the report", struct plan_args, json),
	OPT_NUM("ranks", "N", "none", "also each of N ranks' share of the model states "
		"(ZeRO's partitions; what zinc train's JSON log reports as rank_memory)",
		struct plan_args, ranks, 1, 65536),
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

static void print_json(const struct zn_plan *p, const struct zn_rank_memory *ranks, unsigned n)
{
	struct zn_json j;
	uint64_t tot[3] = { 0, 0, 0 }; /* device, host (pinned + pageable), nvme */

	zn_json_init(&j, stdout, ZN_JSON_LINE);
	zn_json_begin_object(&j);
	zn_json_key(&j, "fits");
	zn_json_bool(&j, zn_plan_fits(p));
	zn_json_key(&j, "summary");
	zn_json_string(&j, p->summary);
	zn_json_key(&j, "params");
	zn_json_uint(&j, p->params);
	zn_json_key(&j, "largest_tensor");
	zn_json_begin_object(&j);
	zn_json_key(&j, "name");
	zn_json_string(&j, p->largest_name);
	zn_json_key(&j, "elements");
	zn_json_uint(&j, p->largest);
	zn_json_end_object(&j);
	zn_json_key(&j, "largest_layer_elements");
	zn_json_uint(&j, p->largest_layer);
	zn_json_key(&j, "tiers");
	zn_json_begin_array(&j);
	for (unsigned i = 0; i < p->ntiers; i++) {
		const struct zn_plan_tier *t = &p->tiers[i];
		tot[t->kind == ZN_PLAN_DEVICE ? 0 : t->kind == ZN_PLAN_NVME ? 2 : 1] += t->needed;
		zn_json_begin_object(&j);
		zn_json_key(&j, "name");
		zn_json_string(&j, t->name);
		zn_json_key(&j, "kind");
		zn_json_string(&j, kind_name(t->kind));
		zn_json_key(&j, "needed");
		zn_json_uint(&j, t->needed);
		/* Capacity: bytes, or null when unknown or checked in another row. */
		zn_json_key(&j, "available");
		if (t->known && !t->counted_elsewhere)
			zn_json_uint(&j, t->available);
		else
			zn_json_null(&j);
		zn_json_key(&j, "total");
		if (t->total)
			zn_json_uint(&j, t->total);
		else
			zn_json_null(&j);
		zn_json_key(&j, "fits");
		zn_json_bool(&j, t->fits);
		zn_json_key(&j, "hard");
		zn_json_bool(&j, t->hard);
		zn_json_key(&j, "known");
		zn_json_bool(&j, t->known);
		zn_json_key(&j, "counted_elsewhere");
		zn_json_bool(&j, t->counted_elsewhere);
		zn_json_key(&j, "source");
		zn_json_string(&j, t->source);
		zn_json_key(&j, "note");
		zn_json_string(&j, t->note);
		zn_json_key(&j, "items");
		zn_json_begin_array(&j);
		for (unsigned k = 0; k < t->nitems; k++) {
			zn_json_begin_object(&j);
			zn_json_key(&j, "name");
			zn_json_string(&j, t->items[k].name);
			zn_json_key(&j, "bytes");
			zn_json_uint(&j, t->items[k].bytes);
			zn_json_end_object(&j);
		}
		zn_json_end_array(&j);
		zn_json_key(&j, "suggestions");
		zn_json_begin_array(&j);
		for (unsigned k = 0; k < t->nadvice; k++)
			zn_json_string(&j, t->advice[k]);
		zn_json_end_array(&j);
		zn_json_end_object(&j);
	}
	zn_json_end_array(&j);
	zn_json_key(&j, "totals");
	zn_json_begin_object(&j);
	zn_json_key(&j, "device");
	zn_json_uint(&j, tot[0]);
	zn_json_key(&j, "host");
	zn_json_uint(&j, tot[1]);
	zn_json_key(&j, "nvme");
	zn_json_uint(&j, tot[2]);
	zn_json_end_object(&j);
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

int cmd_plan(int argc, char **argv)
{
	struct plan_args a = { 0 };
	struct zn_config cfg;
	int rc = opts_parse("zinc plan", options, ARRAY_SIZE(options), argc, argv, &a,
			    "CONFIG [--json] [--ranks N]");
	if (rc == -2)
		return 0;
	if (rc < 0)
		return 2;
	if (rc != argc - 1) {
		fprintf(stderr, "zinc plan: give exactly one config file; see --help\n");
		return 2;
	}
	zn_log_set_sink(zn_log_stderr_sink, NULL, ZN_LOG_WARN);
	if (zn_config_load_file(argv[rc], &cfg) != 0) {
		fprintf(stderr, "zinc plan: %s\n", zn_last_error());
		return 2;
	}
	struct zn_plan *p = malloc(sizeof(*p));
	if (!p) {
		fprintf(stderr, "zinc plan: out of memory\n");
		return 1;
	}
	struct zn_rank_memory *ranks = NULL;
	if (zn_plan_compute(&cfg, p) != 0) {
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
