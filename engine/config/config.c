/* The config file loader: YAML or JSON through libyaml's document API.
 *
 * The whole file is loaded as a node graph first (libyaml keeps each node's
 * start mark), then walked alongside the tree of key tables rooted at the
 * top-level table (engine/config/keys.c): a mapping per section, nested
 * sections recursively, scalar values (and two-number lists) through
 * zn_keys_set.  Working
 * on the graph rather than the event stream makes duplicate detection and
 * "which key made validate() fail" lookups simple, and a config file is
 * small.  Values are applied to a copy of the config, so a failed load
 * leaves the caller's struct untouched.
 */
#include "zn_common.h"

#include <ctype.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "config/keys.h"
#include "zinc/configfile.h"

/* A config file is a few KiB; anything this large is a wrong path (or
 * /dev/zero) and would only make libyaml build a huge graph. */
#define MAX_FILE_BYTES (64u << 20)

/* Top-level keys of DeepSpeed's config (docs/_pages/config-json.md and
 * runtime/constants.py) that zinc accepts without using yet, so that a
 * ds_config.json loads as it is.  Sorted (the tests check it); a key moves
 * out of here when it joins the top-level table (engine/config/keys.c). */
static const char *const ignored_keys[] = {
	"amp",
	"autotuning",
	"comet",
	"comms_logger",
	"communication_data_type",
	"compile",
	"compression_training",
	"csv_monitor",
	"curriculum_learning",
	"data_efficiency",
	"dataloader_drop_last",
	"disable_allgather",
	"dump_state",
	"eigenvalue",
	"elasticity",
	"flops_profiler",
	"fp32_allreduce",
	"gradient_predivide_factor",
	"graph_harvesting",
	"hybrid_engine",
	"memory_breakdown",
	"monitor_config",
	"nebula",
	"pipeline",
	"prescale_gradients",
	"progressive_layer_drop",
	"quantize_training",
	"seq_parallel_communication_data_type",
	"sparse_attention",
	"sparse_gradients",
	"tensor_parallel",
	"tensorboard",
	"timers",
	"torch_autocast",
	"use_data_before_expert_parallelism",
	"vocabulary_size",
	"wall_clock_breakdown",
	"wandb",
	"weight_quantization",
	"zero_allow_untested_optimizer",
	"zero_force_ds_cpu_optimizer",
};

/* One load in progress: what messages need to name positions. */
struct loader {
	const char *name;         /* file name for messages */
	const unsigned char *text;
	size_t len;
	yaml_document_t *doc;
	const char *const *sets;  /* --set KEY=VALUE overrides */
	size_t nsets;
};

/* Nodes an override added carry this line (plus its index) in their marks,
 * so that a message names the override instead of a place in the file. */
#define OVERRIDE_LINE ((size_t)1 << 40)

void zn_config_default(struct zn_config *cfg)
{
	zn_keys_defaults(&zn_config_key_table, cfg);
}

const struct zn_key_table *zn_config_root(void)
{
	return &zn_config_key_table;
}

/* Depth-first walk of the section tree: the section numbered `*n` (counting
 * down), with its offset in struct zn_config and its path. */
struct section_walk {
	size_t n;                          /* sections left to skip */
	const struct zn_key_table *want; /* or find by table */
	const struct zn_key_table *found;
	size_t offset;
	char path[256];
};

static bool walk(struct section_walk *w, const struct zn_key_table *sec, size_t offset,
		 const char *path)
{
	if (w->want ? sec == w->want : w->n-- == 0) {
		w->found = sec;
		w->offset = offset;
		snprintf(w->path, sizeof(w->path), "%s", path);
		return true;
	}
	for (size_t i = 0; i < sec->nkeys; i++) {
		const struct zn_key *k = &sec->keys[i];
		char sub[256];
		if (k->type != ZN_KEY_SECTION)
			continue;
		snprintf(sub, sizeof(sub), "%s%s%s", path, path[0] ? "." : "", k->name);
		if (walk(w, k->sub, offset + k->offset, sub))
			return true;
	}
	return false;
}

const struct zn_key_table *zn_config_section(size_t i, const char **path)
{
	static _Thread_local char path_buf[256];
	struct section_walk w = { .n = i };

	if (!walk(&w, &zn_config_key_table, 0, ""))
		return NULL;
	if (path) {
		memcpy(path_buf, w.path, sizeof(path_buf));
		*path = path_buf;
	}
	return w.found;
}

void *zn_config_section_data(struct zn_config *cfg, const struct zn_key_table *sec)
{
	struct section_walk w = { .want = sec };

	if (!sec || !walk(&w, &zn_config_key_table, 0, ""))
		return NULL;
	return (char *)cfg + w.offset;
}

const char *zn_config_ignored_key(size_t i)
{
	return i < ZN_ARRAY_SIZE(ignored_keys) ? ignored_keys[i] : NULL;
}

/* Set the last error to "NAME:LINE:COL: message" and return `err`.
 * libyaml's marks are 0-based; editors and compilers count from 1. */
ZN_PRINTF(4, 5)
static int fail_at(const struct loader *ld, const yaml_mark_t *m, int err, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (m->line >= OVERRIDE_LINE && m->line - OVERRIDE_LINE < ld->nsets)
		return zn_error(err, "--set %s: %s", ld->sets[m->line - OVERRIDE_LINE], msg);
	return zn_error(err, "%s:%zu:%zu: %s", ld->name, m->line + 1, m->column + 1, msg);
}

static const char *kind_name(const yaml_node_t *n)
{
	switch (n->type) {
	case YAML_SCALAR_NODE:
		return "a scalar";
	case YAML_SEQUENCE_NODE:
		return "a sequence";
	case YAML_MAPPING_NODE:
		return "a mapping";
	case YAML_NO_NODE:
		break;
	}
	return "nothing";
}

static const char *scalar_text(const yaml_node_t *n)
{
	return (const char *)n->data.scalar.value;
}

/* A plain null (`~`, `null`, or nothing at all).  libyaml's loader tags every
 * scalar !!str, so YAML's null has to be recognised by its spelling; a
 * quoted "null" stays a string. */
static bool is_null(const yaml_node_t *n)
{
	static const char *const nulls[] = { "", "~", "null", "Null", "NULL" };

	if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	for (size_t i = 0; i < ZN_ARRAY_SIZE(nulls); i++)
		if (strcmp(scalar_text(n), nulls[i]) == 0)
			return true;
	return false;
}

/* Scalars are handed on as C strings; a "\0" escape inside one would
 * silently cut it short (turning "queue_depth\0x" into queue_depth). */
static int check_no_nul(const struct loader *ld, const yaml_node_t *n, const char *what)
{
	if (strlen(scalar_text(n)) != n->data.scalar.length)
		return fail_at(ld, &n->start_mark, -EINVAL, "%s contains a NUL character", what);
	return 0;
}

/* Report a libyaml reader, scanner, parser or composer error. */
static int syntax_error(const struct loader *ld, const yaml_parser_t *p)
{
	if (p->error == YAML_MEMORY_ERROR)
		return zn_error(-ENOMEM, "%s: out of memory while parsing", ld->name);

	if (p->error == YAML_READER_ERROR) {
		/* Encoding errors carry a byte offset, not a mark: count the
		 * lines up to it ourselves. */
		yaml_mark_t m = { 0 };
		size_t end = ZN_MIN(p->problem_offset, ld->len);

		for (size_t i = 0; i < end; i++) {
			if (ld->text[i] == '\n') {
				m.line++;
				m.column = 0;
			} else {
				m.column++;
			}
		}
		if (p->problem_value != -1)
			return fail_at(ld, &m, -EINVAL, "%s (#x%X)", p->problem,
				       (unsigned)p->problem_value);
		return fail_at(ld, &m, -EINVAL, "%s", p->problem);
	}

	if (p->context)
		return fail_at(ld, &p->problem_mark, -EINVAL, "syntax error: %s (%s at %zu:%zu)",
			       p->problem ? p->problem : "unknown problem", p->context,
			       p->context_mark.line + 1, p->context_mark.column + 1);
	return fail_at(ld, &p->problem_mark, -EINVAL, "syntax error: %s",
		       p->problem ? p->problem : "unknown problem");
}

struct key_ref {
	const yaml_node_t *key;
	size_t order; /* position of the pair in its mapping */
};

static bool same_key(const struct key_ref *a, const struct key_ref *b)
{
	return a->key->data.scalar.length == b->key->data.scalar.length &&
	       memcmp(a->key->data.scalar.value, b->key->data.scalar.value,
		      a->key->data.scalar.length) == 0;
}

/* By text, then by position, so repeats end up adjacent and in file order. */
static int key_ref_cmp(const void *pa, const void *pb)
{
	const struct key_ref *a = pa, *b = pb;
	size_t la = a->key->data.scalar.length, lb = b->key->data.scalar.length;
	int c;

	if (la != lb)
		return la < lb ? -1 : 1;
	c = memcmp(a->key->data.scalar.value, b->key->data.scalar.value, la);
	if (c)
		return c;
	return a->order < b->order ? -1 : a->order > b->order;
}

/* DeepSpeed refuses a ds_config.json with a repeated key at any depth
 * (dict_raise_error_on_duplicate_keys); so does zinc, rather than letting
 * the last one win silently.  Every mapping node of the document is checked,
 * those zinc ignores included.  Sorting keeps a huge mapping from costing
 * quadratic time. */
static int check_duplicates(const struct loader *ld)
{
	yaml_document_t *doc = ld->doc;

	for (yaml_node_t *n = doc->nodes.start; n < doc->nodes.top; n++) {
		const struct key_ref *dup = NULL, *first = NULL;
		yaml_node_pair_t *pairs;
		size_t npairs, nkeys = 0;
		struct key_ref *refs;
		int rc = 0;

		if (n->type != YAML_MAPPING_NODE)
			continue;
		pairs = n->data.mapping.pairs.start;
		npairs = (size_t)(n->data.mapping.pairs.top - pairs);
		if (npairs < 2)
			continue;
		refs = calloc(npairs, sizeof(*refs));
		if (!refs)
			return zn_error(-ENOMEM, "%s: out of memory checking for duplicate keys",
					ld->name);
		for (size_t i = 0; i < npairs; i++) {
			const yaml_node_t *k = yaml_document_get_node(doc, pairs[i].key);
			/* Complex keys are refused where zinc reads the mapping. */
			if (k && k->type == YAML_SCALAR_NODE)
				refs[nkeys++] = (struct key_ref){ k, i };
		}
		qsort(refs, nkeys, sizeof(*refs), key_ref_cmp);
		/* refs[i] is a second occurrence when it equals refs[i - 1] but
		 * refs[i - 2] is another key; of those, report the earliest. */
		for (size_t i = 1; i < nkeys; i++) {
			if (!same_key(&refs[i], &refs[i - 1]))
				continue;
			if (i >= 2 && same_key(&refs[i - 1], &refs[i - 2]))
				continue;
			if (!dup || refs[i].order < dup->order) {
				dup = &refs[i];
				first = &refs[i - 1];
			}
		}
		if (dup)
			rc = fail_at(ld, &dup->key->start_mark, -EINVAL,
				     "duplicate key '%s' (first given at line %zu); remove one",
				     scalar_text(dup->key), first->key->start_mark.line + 1);
		free(refs);
		if (rc)
			return rc;
	}
	return 0;
}

static bool is_ignored_key(const char *name)
{
	for (size_t i = 0; i < ZN_ARRAY_SIZE(ignored_keys); i++)
		if (strcmp(ignored_keys[i], name) == 0)
			return true;
	return false;
}

/* The known top-level key nearest to `name`, with the threshold
 * zn_keys_nearest uses: at most a third of the name wrong. */
static const char *nearest_top_level(const char *name)
{
	const char *best = NULL;
	unsigned best_d = ~0u;

	const struct zn_key_table *root = &zn_config_key_table;

	for (size_t i = 0; i < root->nkeys + ZN_ARRAY_SIZE(ignored_keys); i++) {
		const char *cand = i < root->nkeys ? root->keys[i].name
						   : ignored_keys[i - root->nkeys];
		unsigned d = zn_edit_distance(name, cand);
		if (d < best_d) {
			best_d = d;
			best = cand;
		}
	}
	if (best && best_d <= ZN_MAX(2u, (unsigned)strlen(name) / 3))
		return best;
	return NULL;
}

/* The pair of `map` whose key names table key `k` (by name or alias). */
static const yaml_node_pair_t *pair_for_key(const struct loader *ld, const yaml_node_t *map,
					    const struct zn_key_table *sec,
					    const struct zn_key *k)
{
	for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
	     p++) {
		const yaml_node_t *key = yaml_document_get_node(ld->doc, p->key);
		if (key && key->type == YAML_SCALAR_NODE && zn_keys_find(sec, scalar_text(key)) == k)
			return p;
	}
	return NULL;
}

/* validate() reports a key as "section.key: ..." (the convention of every
 * section table; just "key: ..." at the top level; "section.sub.key: ..."
 * for a key of a nested section); point at that key's value when the file
 * set it, else at the deepest section given, else at the section itself. */
static const yaml_mark_t *validate_mark(const struct loader *ld, const struct zn_key_table *sec,
					const yaml_node_t *key_node, const yaml_node_t *map)
{
	const char *s = zn_last_error();
	const yaml_mark_t *best = key_node ? &key_node->start_mark : &map->start_mark;
	size_t nlen = strlen(sec->name);

	if (nlen) {
		if (strncmp(s, sec->name, nlen) != 0 || s[nlen] != '.')
			return best;
		s += nlen + 1;
	}
	for (;;) {
		char kname[64];
		size_t klen = 0;

		while ((isalnum((unsigned char)s[klen]) || s[klen] == '_') &&
		       klen + 1 < sizeof(kname))
			klen++;
		memcpy(kname, s, klen);
		kname[klen] = '\0';
		const struct zn_key *k = zn_keys_find(sec, kname);
		const yaml_node_pair_t *p = k ? pair_for_key(ld, map, sec, k) : NULL;
		if (!p)
			return best;
		const yaml_node_t *val = yaml_document_get_node(ld->doc, p->value);
		best = &val->start_mark;
		/* "params.warmup_max_lr": go on inside the nested mapping. */
		if (k->type != ZN_KEY_SECTION || s[klen] != '.' || val->type != YAML_MAPPING_NODE)
			return best;
		sec = k->sub;
		map = val;
		s += klen + 1;
	}
}

/* An unknown key at the top level: DeepSpeed's unimplemented sections get
 * an INFO line, anything else a warning naming the nearest known key (a
 * newer DeepSpeed may know it). */
static void unknown_top_level(const struct loader *ld, const yaml_node_t *key)
{
	const char *name = scalar_text(key), *near;
	size_t line = key->start_mark.line + 1, col = key->start_mark.column + 1;

	if (is_ignored_key(name)) {
		zn_info("%s:%zu:%zu: '%s' is not used by zinc yet", ld->name, line, col, name);
		return;
	}
	near = nearest_top_level(name);
	if (near)
		zn_warn("%s:%zu:%zu: unknown top-level key '%s' is ignored; did you mean '%s'?",
			ld->name, line, col, name, near);
	else
		zn_warn("%s:%zu:%zu: unknown top-level key '%s' is ignored; "
			"run `zinc config` for the keys zinc reads",
			ld->name, line, col, name);
}

/* A list of two numbers ([0.9, 0.999]) as the text zn_keys_set parses. */
static int pair_text(const struct loader *ld, const char *path, const yaml_node_t *val,
		     char *buf, size_t len)
{
	yaml_node_item_t *items = val->data.sequence.items.start;
	size_t n = (size_t)(val->data.sequence.items.top - items);
	const yaml_node_t *a, *b;

	if (n != 2)
		return fail_at(ld, &val->start_mark, -EINVAL,
			       "%s: expected a list of two numbers, found %zu item%s", path, n,
			       n == 1 ? "" : "s");
	a = yaml_document_get_node(ld->doc, items[0]);
	b = yaml_document_get_node(ld->doc, items[1]);
	if (a->type != YAML_SCALAR_NODE || b->type != YAML_SCALAR_NODE)
		return fail_at(ld, &val->start_mark, -EINVAL,
			       "%s: expected a list of two numbers, found a nested %s", path,
			       a->type != YAML_SCALAR_NODE ? kind_name(a) : kind_name(b));
	if (check_no_nul(ld, a, "value") || check_no_nul(ld, b, "value"))
		return -EINVAL;
	snprintf(buf, len, "%s, %s", scalar_text(a), scalar_text(b));
	return 0;
}

/* Apply one section's mapping to `obj`, nested sections included, then
 * refuse unsupported values and run the section's checks.  `prefix` is the
 * path above the section ("zero_optimization." for offload_param), put in
 * front of the table's "section.key: ..." messages; `key_node` is the key
 * that named the section (NULL at the top level, where unknown keys warn
 * instead of failing). */
static int load_section(const struct loader *ld, const struct zn_key_table *sec, void *obj,
			const char *prefix, const yaml_node_t *key_node, const yaml_node_t *map)
{
	bool root = key_node == NULL;
	char path[256], sub_prefix[258];
	yaml_node_pair_t *pairs;
	size_t npairs;
	int rc;

	snprintf(path, sizeof(path), "%s%s", prefix, sec->name);
	snprintf(sub_prefix, sizeof(sub_prefix), "%s%s", path, path[0] ? "." : "");
	if (is_null(map))
		return 0; /* "aio:" with nothing under it: all defaults */
	if (map->type != YAML_MAPPING_NODE)
		return fail_at(ld, &map->start_mark, -EINVAL,
			       "%s: expected a mapping of its keys (`zinc config` lists them), "
			       "found %s",
			       path, kind_name(map));

	pairs = map->data.mapping.pairs.start;
	npairs = (size_t)(map->data.mapping.pairs.top - pairs);
	for (size_t i = 0; i < npairs; i++) {
		const yaml_node_t *key = yaml_document_get_node(ld->doc, pairs[i].key);
		const yaml_node_t *val = yaml_document_get_node(ld->doc, pairs[i].value);
		const struct zn_key *k;
		const char *name, *text;
		char kpath[320], pair[512];

		if (key->type != YAML_SCALAR_NODE)
			return fail_at(ld, &key->start_mark, -EINVAL, "%s: keys must be scalars, found %s",
				       root ? "the top level" : path, kind_name(key));
		rc = check_no_nul(ld, key, "key");
		if (rc)
			return rc;
		name = scalar_text(key);
		k = zn_keys_find(sec, name);
		if (!k && root) {
			unknown_top_level(ld, key);
			continue;
		}
		if (!k) {
			/* zn_keys_set words the "did you mean" message. */
			rc = zn_keys_set(sec, obj, name, "");
			return fail_at(ld, &key->start_mark, rc ? rc : -ENOENT, "%s%s", prefix,
				       zn_last_error());
		}
		snprintf(kpath, sizeof(kpath), "%s%s", sub_prefix, k->name);
		/* A key and its alias both given: the same field twice. */
		for (size_t j = 0; j < i; j++) {
			const yaml_node_t *prev = yaml_document_get_node(ld->doc, pairs[j].key);
			if (prev->type == YAML_SCALAR_NODE && zn_keys_find(sec, scalar_text(prev)) == k)
				return fail_at(ld, &key->start_mark, -EINVAL,
					       "%s: set twice, as '%s' (line %zu) and as '%s'; "
					       "keep one",
					       kpath, scalar_text(prev), prev->start_mark.line + 1,
					       name);
		}
		if (is_null(val))
			continue; /* `key: ~` keeps the default */
		if (k->type == ZN_KEY_SECTION) {
			if (k->flags & ZN_KEY_UNSUPPORTED)
				return fail_at(ld, &key->start_mark, -EINVAL,
					       "%s: not supported yet (%s); remove it", kpath,
					       k->help);
			rc = load_section(ld, k->sub, (char *)obj + k->offset, sub_prefix, key,
					  val);
			if (rc)
				return rc;
			continue;
		}
		if (k->type == ZN_KEY_PAIR && val->type == YAML_SEQUENCE_NODE) {
			rc = pair_text(ld, kpath, val, pair, sizeof(pair));
			if (rc)
				return rc;
			text = pair;
		} else if (val->type != YAML_SCALAR_NODE) {
			return fail_at(ld, &val->start_mark, -EINVAL,
				       "%s: expected %s, found %s", kpath,
				       k->type == ZN_KEY_PAIR ? "a list of two numbers"
							      : "a single value",
				       kind_name(val));
		} else {
			rc = check_no_nul(ld, val, "value");
			if (rc)
				return rc;
			text = scalar_text(val);
		}
		rc = zn_keys_set(sec, obj, name, text);
		if (rc && strcmp(text, "auto") == 0)
			/* Hugging Face's Trainer fills "auto" in before
			 * DeepSpeed sees the file; zinc resolves it only
			 * where it can (docs/config.md says which keys). */
			return fail_at(ld, &val->start_mark, rc,
				       "%s%s ('auto' is not accepted for this key: give a value)",
				       prefix, zn_last_error());
		if (rc)
			return fail_at(ld, &val->start_mark, rc, "%s%s", prefix, zn_last_error());
	}

	{
		const struct zn_key *uk = NULL;
		rc = zn_keys_check_unsupported(sec, obj, &uk);
		if (rc) {
			const yaml_node_pair_t *p = pair_for_key(ld, map, sec, uk);
			const yaml_mark_t *m =
				p ? &yaml_document_get_node(ld->doc, p->value)->start_mark
				  : validate_mark(ld, sec, key_node, map);
			return fail_at(ld, m, rc, "%s%s", prefix, zn_last_error());
		}
	}
	if (sec->validate) {
		rc = sec->validate(obj);
		if (rc)
			return fail_at(ld, validate_mark(ld, sec, key_node, map), rc, "%s%s",
				       prefix, zn_last_error());
	}
	return 0;
}

static int load_root(const struct loader *ld, struct zn_config *cfg)
{
	const yaml_node_t *root = yaml_document_get_root_node(ld->doc);
	int rc;

	/* An empty file (or one holding only comments) sets nothing. */
	if (!root || is_null(root))
		return 0;
	if (root->type != YAML_MAPPING_NODE)
		return fail_at(ld, &root->start_mark, -EINVAL,
			       "the top level must be a mapping of sections (like 'aio:'), "
			       "found %s",
			       kind_name(root));
	rc = load_section(ld, &zn_config_key_table, cfg, "", NULL, root);
	if (rc)
		return rc;
	/* root_validate checked the batch rule; keep what it resolved. */
	rc = zn_config_resolve_batch(cfg, 1, &cfg->batch);
	if (rc)
		return rc;
	zn_config_resolve_auto(cfg);
	return 0;
}

/* ---- --set KEY=VALUE ------------------------------------------------------- */

static void mark_override(yaml_document_t *doc, int idx, size_t which)
{
	yaml_node_t *n = yaml_document_get_node(doc, idx);
	n->start_mark.line = n->end_mark.line = OVERRIDE_LINE + which;
	n->start_mark.column = n->end_mark.column = 0;
}

/* Copy node n of src (a parsed VALUE) into dst; its new index, or 0. */
static int copy_node(yaml_document_t *dst, yaml_document_t *src, yaml_node_t *n, size_t which)
{
	int idx = 0;
	switch (n->type) {
	case YAML_SCALAR_NODE:
		idx = yaml_document_add_scalar(dst, NULL, n->data.scalar.value,
					       (int)n->data.scalar.length, n->data.scalar.style);
		break;
	case YAML_SEQUENCE_NODE:
		idx = yaml_document_add_sequence(dst, NULL, YAML_FLOW_SEQUENCE_STYLE);
		for (yaml_node_item_t *it = n->data.sequence.items.start;
		     idx && it < n->data.sequence.items.top; it++) {
			int c = copy_node(dst, src, yaml_document_get_node(src, *it), which);
			if (!c || !yaml_document_append_sequence_item(dst, idx, c))
				idx = 0;
		}
		break;
	case YAML_MAPPING_NODE:
		idx = yaml_document_add_mapping(dst, NULL, YAML_FLOW_MAPPING_STYLE);
		for (yaml_node_pair_t *pr = n->data.mapping.pairs.start;
		     idx && pr < n->data.mapping.pairs.top; pr++) {
			int k = copy_node(dst, src, yaml_document_get_node(src, pr->key), which);
			int v = k ? copy_node(dst, src, yaml_document_get_node(src, pr->value), which)
				  : 0;
			if (!v || !yaml_document_append_mapping_pair(dst, idx, k, v))
				idx = 0;
		}
		break;
	default:
		break;
	}
	if (idx)
		mark_override(dst, idx, which);
	return idx;
}

/* The pair of mapping `map` whose key is the scalar `key` (len bytes); its
 * value's index, or 0. */
static int find_pair(yaml_document_t *doc, int map, const char *key, size_t len, int *pair)
{
	yaml_node_t *m = yaml_document_get_node(doc, map);
	for (yaml_node_pair_t *pr = m->data.mapping.pairs.start; pr < m->data.mapping.pairs.top;
	     pr++) {
		yaml_node_t *k = yaml_document_get_node(doc, pr->key);
		if (k->type == YAML_SCALAR_NODE && k->data.scalar.length == len &&
		    memcmp(k->data.scalar.value, key, len) == 0) {
			*pair = (int)(pr - m->data.mapping.pairs.start);
			return pr->value;
		}
	}
	return 0;
}

/* Apply `--set a.b.c=VALUE` to the parsed file: VALUE is YAML (a scalar, or
 * a flow list or mapping) and replaces or adds key c of section a.b, made
 * if missing.  The keys are then checked like the file's own. */
static int apply_override(struct loader *ld, size_t which)
{
	const char *set = ld->sets[which], *eq = strchr(set, '=');
	yaml_document_t *doc = ld->doc;
	if (!eq || eq == set)
		return zn_error(-EINVAL, "--set %s: give KEY=VALUE, the key as a dotted path "
					 "(e.g. zero_optimization.offload_param.device=nvme)", set);
	yaml_parser_t vp;
	yaml_document_t vdoc;
	const char *val = eq + 1;
	if (!yaml_parser_initialize(&vp))
		return zn_error(-ENOMEM, "out of memory");
	yaml_parser_set_input_string(&vp, (const unsigned char *)val, strlen(val));
	if (!yaml_parser_load(&vp, &vdoc)) {
		yaml_parser_delete(&vp);
		return zn_error(-EINVAL, "--set %s: the value is not valid YAML", set);
	}
	yaml_parser_delete(&vp);
	yaml_node_t *vroot = yaml_document_get_root_node(&vdoc);
	int value = vroot ? copy_node(doc, &vdoc, vroot, which)
			  : yaml_document_add_scalar(doc, NULL, (yaml_char_t *)"", 0,
						     YAML_PLAIN_SCALAR_STYLE);
	yaml_document_delete(&vdoc);
	if (!value)
		return zn_error(-ENOMEM, "--set %s: out of memory", set);
	if (!vroot)
		mark_override(doc, value, which);

	int map = 1; /* the root */
	yaml_node_t *root = yaml_document_get_root_node(doc);
	if (!root || (root->type == YAML_SCALAR_NODE && root->data.scalar.length == 0))
		return zn_error(-EINVAL, "--set %s: the config file is empty; give the key in the "
					 "file", set);
	for (const char *p = set;;) {
		const char *dot = memchr(p, '.', (size_t)(eq - p));
		size_t len = (size_t)((dot ? dot : eq) - p);
		if (!len)
			return zn_error(-EINVAL, "--set %s: an empty key in the path", set);
		if (yaml_document_get_node(doc, map)->type != YAML_MAPPING_NODE)
			return zn_error(-EINVAL, "--set %s: '%.*s' is not a section", set,
					(int)(p - 1 - set), set);
		int pair = -1;
		int child = find_pair(doc, map, p, len, &pair);
		if (!dot) {
			if (child) {
				yaml_node_t *m = yaml_document_get_node(doc, map);
				m->data.mapping.pairs.start[pair].value = value;
				return 0;
			}
			int k = yaml_document_add_scalar(doc, NULL, (yaml_char_t *)p, (int)len,
							 YAML_PLAIN_SCALAR_STYLE);
			if (!k || !yaml_document_append_mapping_pair(doc, map, k, value))
				return zn_error(-ENOMEM, "--set %s: out of memory", set);
			mark_override(doc, k, which);
			return 0;
		}
		if (!child) {
			int k = yaml_document_add_scalar(doc, NULL, (yaml_char_t *)p, (int)len,
							 YAML_PLAIN_SCALAR_STYLE);
			child = yaml_document_add_mapping(doc, NULL, YAML_BLOCK_MAPPING_STYLE);
			if (!k || !child || !yaml_document_append_mapping_pair(doc, map, k, child))
				return zn_error(-ENOMEM, "--set %s: out of memory", set);
			mark_override(doc, k, which);
			mark_override(doc, child, which);
		}
		map = child;
		p = dot + 1;
	}
}

static int load_text(const char *text, size_t len, const char *name,
		     const char *const *sets, size_t nsets, struct zn_config *out);

int zn_config_load_string(const char *text, size_t len, const char *name, struct zn_config *out)
{
	return load_text(text, len, name, NULL, 0, out);
}

int zn_config_load_string_set(const char *text, size_t len, const char *name,
			      const char *const *sets, size_t nsets, struct zn_config *out)
{
	return load_text(text, len, name, sets, nsets, out);
}

static int load_text(const char *text, size_t len, const char *name,
		     const char *const *sets, size_t nsets, struct zn_config *out)
{
	struct loader ld = { .name = name ? name : "<string>", .len = len, .sets = sets,
			     .nsets = nsets };
	yaml_parser_t parser;
	yaml_document_t doc, extra;
	struct zn_config cfg;
	int rc;

	if (!text && len)
		return zn_error(-EINVAL, "%s: no text given for %zu bytes", ld.name, len);
	/* libyaml asserts on a NULL input even when it is empty. */
	ld.text = (const unsigned char *)(text ? text : "");
	if (!yaml_parser_initialize(&parser))
		return zn_error(-ENOMEM, "%s: out of memory creating the YAML parser", ld.name);
	yaml_parser_set_input_string(&parser, ld.text, len);

	if (!yaml_parser_load(&parser, &doc)) {
		/* yaml_parser_load frees the partial document itself. */
		rc = syntax_error(&ld, &parser);
		yaml_parser_delete(&parser);
		return rc;
	}
	ld.doc = &doc;

	/* One config per file: a second document ("---") would otherwise be
	 * ignored without a word. */
	if (!yaml_parser_load(&parser, &extra)) {
		rc = syntax_error(&ld, &parser);
	} else {
		const yaml_node_t *r = yaml_document_get_root_node(&extra);
		rc = 0;
		if (r)
			rc = fail_at(&ld, &r->start_mark, -EINVAL,
				     "a second YAML document; a config file holds exactly one");
		yaml_document_delete(&extra);
	}

	if (!rc)
		rc = check_duplicates(&ld);
	for (size_t i = 0; i < nsets && !rc; i++)
		rc = apply_override(&ld, i);
	if (!rc) {
		zn_config_default(&cfg);
		rc = load_root(&ld, &cfg);
	}
	yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
	if (!rc)
		*out = cfg;
	return rc;
}

/* Read a whole file into a malloc'd buffer. */
static int read_file(const char *path, char **buf_out, size_t *len_out)
{
	size_t cap = 16384, len = 0;
	struct stat st;
	char *buf;
	int fd, err;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		err = errno;
		return zn_error(-err, "cannot open config file %s: %s", path, strerror(err));
	}
	if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
		close(fd);
		return zn_error(-EISDIR, "config file %s is a directory", path);
	}
	buf = malloc(cap);
	if (!buf) {
		close(fd);
		return zn_error(-ENOMEM, "out of memory reading config file %s", path);
	}
	for (;;) {
		ssize_t n;

		if (len == cap) {
			char *bigger;
			if (cap >= MAX_FILE_BYTES) {
				free(buf);
				close(fd);
				return zn_error(-EFBIG, "config file %s is larger than %u MiB; "
							"is it the right file?",
						path, MAX_FILE_BYTES >> 20);
			}
			bigger = realloc(buf, cap * 2);
			if (!bigger) {
				free(buf);
				close(fd);
				return zn_error(-ENOMEM, "out of memory reading config file %s",
						path);
			}
			buf = bigger;
			cap *= 2;
		}
		n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			err = errno;
			free(buf);
			close(fd);
			return zn_error(-err, "cannot read config file %s: %s", path,
					strerror(err));
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	*buf_out = buf;
	*len_out = len;
	return 0;
}

int zn_config_load_file(const char *path, struct zn_config *out)
{
	return zn_config_load_file_set(path, NULL, 0, out);
}

int zn_config_load_file_set(const char *path, const char *const *sets, size_t nsets,
			    struct zn_config *out)
{
	char *buf = NULL;
	size_t len = 0;
	int rc;

	rc = read_file(path, &buf, &len);
	if (rc)
		return rc;
	rc = load_text(buf, len, path, sets, nsets, out);
	free(buf);
	return rc;
}

/* "{rank}" and "{local_rank}" in `path` (ZN_NVME_PATH_MAX bytes) become the
 * numbers. */
static int expand_rank(char *path, int rank, int local_rank)
{
	char out[ZN_NVME_PATH_MAX];
	size_t o = 0;
	for (const char *p = path; *p;) {
		const char *key = strncmp(p, "{rank}", 6) == 0         ? "{rank}"
				  : strncmp(p, "{local_rank}", 12) == 0 ? "{local_rank}"
									 : NULL;
		int n = key ? snprintf(out + o, sizeof(out) - o, "%d",
				       key[1] == 'r' ? rank : local_rank)
			    : snprintf(out + o, sizeof(out) - o, "%c", *p);
		if (n < 0 || (size_t)n >= sizeof(out) - o)
			return zn_error(-ENAMETOOLONG, "nvme_path is too long with the rank put "
						       "in (at most %d bytes): '%s'",
					ZN_NVME_PATH_MAX - 1, path);
		o += (size_t)n;
		p += key ? strlen(key) : 1;
	}
	memcpy(path, out, o + 1);
	return 0;
}

enum zn_dtype zn_config_storage_dtype(const struct zn_config *cfg)
{
	if (cfg->device.type != ZN_DEVICE_CUDA)
		return ZN_DTYPE_F32;
	return cfg->bf16.enabled ? ZN_DTYPE_BF16 : cfg->fp16.enabled ? ZN_DTYPE_F16 : ZN_DTYPE_F32;
}

int zn_config_expand_rank(struct zn_config *cfg, int rank, int local_rank)
{
	int rc = expand_rank(cfg->zero_optimization.offload_param.nvme_path, rank, local_rank);
	return rc ? rc
		  : expand_rank(cfg->zero_optimization.offload_optimizer.nvme_path, rank,
				local_rank);
}
