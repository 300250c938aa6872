/* Loading a config file (include/zinc/configfile.h): YAML or JSON text read
 * into a tree (engine/io/doc.h), --set overrides grafted onto it, then the
 * tree walked alongside the key tables rooted at the top-level table
 * (engine/config/keys.c): a mapping per section, nested sections
 * recursively, scalar values (and two-number lists) through zn_keys_set.
 *
 * Working on a whole tree rather than libyaml's event stream makes the
 * duplicate check and "which key made validate() fail" lookups simple, and
 * a config file is small.  Values are applied to a copy of the config, so
 * a failed load leaves the caller's struct untouched.
 */
#include "zn_common.h"

#include <ctype.h>
#include <strings.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/keys.h"
#include "io/doc.h"
#include "zinc/configfile.h"

/* A config file is a few KiB; anything this large is a wrong path (or
 * /dev/zero) and would only make libyaml build a huge graph. */
#define MAX_FILE_BYTES (64u << 20)

/* Scalars are handed on as C strings; a "\0" escape inside one would
 * silently cut it short (turning "queue_depth\0x" into queue_depth). */
static int check_no_nul(const struct zn_doc_node *n, const char *what)
{
	if (strlen(n->text) != n->len)
		return zn_doc_fail(n, -EINVAL, "%s contains a NUL character", what);
	return 0;
}

/* What one load keeps besides the config: who to tell about each key, the
 * config whose given/autos bits it sets, and the keys that do nothing in
 * zinc, said in one warning at the end. */
struct lctx {
	zn_config_key_fn fn;
	void *fn_ctx;
	struct zn_config *cfg;
	const char *name;  /* the file, for the warning */
	char noop[4096];
	size_t nnoop;
	/* Every key's error, so a file's are said at once: the first's code,
	 * how many, and the first LC_ERRORS messages. */
	int rc;
	unsigned nerr;
	char errs[3800];
};

#define LC_ERRORS 10

/* A key's error (the last error's message) kept; reading goes on with the
 * next key. */
static void keep_error(struct lctx *lc, int rc)
{
	size_t used = strlen(lc->errs);
	if (!lc->rc)
		lc->rc = rc;
	if (lc->nerr++ < LC_ERRORS && used < sizeof(lc->errs))
		snprintf(lc->errs + used, sizeof(lc->errs) - used, "%s  %s", used ? "\n" : "",
			 zn_last_error());
}

static void report(struct lctx *lc, const char *path, enum zn_key_use use, const char *note)
{
	if (lc->fn)
		lc->fn(lc->fn_ctx, path, use, note ? note : "");
}

/* "path=value (why)" into the one list of keys that do nothing. */
static void add_noop(struct lctx *lc, const char *path, const char *value, const char *why)
{
	size_t used = strlen(lc->noop);
	if (used < sizeof(lc->noop))
		snprintf(lc->noop + used, sizeof(lc->noop) - used, "%s%s%s%s (%s)",
			 lc->nnoop ? "; " : "", path, value ? "=" : "", value ? value : "", why);
	lc->nnoop++;
}

static int ignored_index(const char *name)
{
	for (size_t i = 0; zn_config_ignored_key(i); i++)
		if (strcmp(zn_config_ignored_key(i), name) == 0)
			return (int)i;
	return -1;
}

/* Whether an ignored top-level key's value is DeepSpeed's default: a
 * section is off unless it says `enabled: true` (without `enabled`: unless
 * it has keys); a scalar compares as a number or as text. */
static bool ignored_is_default(size_t i, const struct zn_doc_node *val)
{
	const char *def = zn_config_ignored_default(i);

	if (zn_doc_is_null(val))
		return true;
	if (!def) {
		if (val->kind != ZN_DOC_MAP)
			return false;
		for (size_t j = 0; j < val->n; j++) {
			const struct zn_doc_node *k = val->pairs[j].key, *v = val->pairs[j].value;
			if (k->kind == ZN_DOC_SCALAR && strcmp(k->text, "enabled") == 0)
				return v->kind == ZN_DOC_SCALAR &&
				       (strcasecmp(v->text, "false") == 0 || strcmp(v->text, "0") == 0 ||
					strcasecmp(v->text, "auto") == 0);
		}
		return val->n == 0;
	}
	if (val->kind != ZN_DOC_SCALAR)
		return false;
	char *e1, *e2;
	double a = strtod(val->text, &e1), b = strtod(def, &e2);
	if (*val->text && !*e1 && !*e2)
		return a == b;
	return strcasecmp(val->text, def) == 0 || strcasecmp(val->text, "auto") == 0;
}

/* Every word of `abbr` ("seq_parallel_comm_data_type") begins the word in
 * the same place of `full` ("seq_parallel_communication_data_type"). */
static bool abbreviates(const char *abbr, const char *full)
{
	while (*abbr && *full) {
		size_t a = strcspn(abbr, "_"), f = strcspn(full, "_");
		if (a > f || strncmp(abbr, full, a) != 0)
			return false;
		abbr += a + (abbr[a] == '_');
		full += f + (full[f] == '_');
	}
	return !*abbr && !*full;
}

/* The known top-level key nearest to `name`, with the threshold
 * zn_keys_nearest uses: at most a third of the name wrong. */
static const char *nearest_top_level(const char *name)
{
	const struct zn_key_table *root = &zn_config_key_table;
	const char *best = NULL, *cand;
	unsigned best_d = ~0u;

	for (size_t i = 0; i < root->nkeys || zn_config_ignored_key(i - root->nkeys); i++) {
		cand = i < root->nkeys ? root->keys[i].name : zn_config_ignored_key(i - root->nkeys);
		if (abbreviates(name, cand))
			return cand;
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
static const struct zn_doc_pair *pair_for_key(const struct zn_doc_node *map,
					      const struct zn_key_table *sec, const struct zn_key *k)
{
	for (size_t i = 0; i < map->n; i++) {
		const struct zn_doc_node *key = map->pairs[i].key;
		if (key->kind == ZN_DOC_SCALAR && zn_keys_find(sec, key->text) == k)
			return &map->pairs[i];
	}
	return NULL;
}

/* validate() reports a key as "section.key: ..." (the convention of every
 * section table; just "key: ..." at the top level; "section.sub.key: ..."
 * for a key of a nested section); point at that key's value when the file
 * set it, else at the deepest section given, else at the section itself. */
static const struct zn_doc_node *validate_node(const struct zn_key_table *sec,
					       const struct zn_doc_node *key_node,
					       const struct zn_doc_node *map)
{
	const char *s = zn_last_error();
	const struct zn_doc_node *best = key_node ? key_node : map;
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
		const struct zn_doc_pair *p = k ? pair_for_key(map, sec, k) : NULL;
		if (!p)
			return best;
		best = p->value;
		/* "params.warmup_max_lr": go on inside the nested mapping. */
		if (k->type != ZN_KEY_SECTION || s[klen] != '.' || p->value->kind != ZN_DOC_MAP)
			return best;
		sec = k->sub;
		map = p->value;
		s += klen + 1;
	}
}

/* A top-level key zinc does not read.  DeepSpeed's sections zinc does not
 * use are noted (and listed among the keys that do nothing when their
 * value is not DeepSpeed's default).  Anything else is warned about with
 * the nearest known key (a newer DeepSpeed may know it) -- unless that key
 * is one zinc reads: a misspelt zero_optimization would train without
 * ZeRO, so it is an error naming the key meant. */
static int unknown_top_level(struct lctx *lc, const struct zn_doc_node *key,
			     const struct zn_doc_node *val)
{
	const char *name = key->text, *near;
	char where[4200];
	int i = ignored_index(name);

	zn_doc_where(key, where, sizeof(where));
	if (i >= 0) {
		zn_info("%s: '%s' is not used by zinc: %s", where, name, zn_config_ignored_why((size_t)i));
		report(lc, name, ZN_USE_IGNORED, zn_config_ignored_why((size_t)i));
		if (!ignored_is_default((size_t)i, val))
			add_noop(lc, name, val->kind == ZN_DOC_SCALAR ? val->text : NULL,
				 zn_config_ignored_why((size_t)i));
		return 0;
	}
	near = nearest_top_level(name);
	if (near && zn_keys_find(&zn_config_key_table, near))
		return zn_doc_fail(key, -EINVAL, "unknown top-level key '%s'; did you mean '%s'? "
				   "(zinc reads '%s'; as written, the section would be ignored)",
				   name, near, near);
	report(lc, name, ZN_USE_UNKNOWN, near);
	if (near)
		zn_warn("%s: unknown top-level key '%s' is ignored; did you mean '%s'?", where, name,
			near);
	else
		zn_warn("%s: unknown top-level key '%s' is ignored; "
			"run `zinc config` for the keys zinc reads",
			where, name);
	return 0;
}

/* A list of two numbers ([0.9, 0.999]) as the text zn_keys_set parses. */
static int pair_text(const char *path, const struct zn_doc_node *val, char *buf, size_t len)
{
	if (val->n != 2)
		return zn_doc_fail(val, -EINVAL, "%s: expected a list of two numbers, found %zu item%s",
				   path, val->n, val->n == 1 ? "" : "s");
	const struct zn_doc_node *a = val->items[0], *b = val->items[1];
	if (a->kind != ZN_DOC_SCALAR || b->kind != ZN_DOC_SCALAR)
		return zn_doc_fail(val, -EINVAL,
				   "%s: expected a list of two numbers, found a nested %s", path,
				   zn_doc_kind_name(a->kind != ZN_DOC_SCALAR ? a : b));
	ZN_TRY(check_no_nul(a, "value"));
	ZN_TRY(check_no_nul(b, "value"));
	snprintf(buf, len, "%s, %s", a->text, b->text);
	return 0;
}

/* Set key k of `sec` in `obj` from the scalar (or two-number list) `val`. */
static int load_value(const struct zn_key_table *sec, void *obj, const struct zn_key *k,
		      const char *name, const char *prefix, const char *kpath,
		      const struct zn_doc_node *val, bool *is_auto)
{
	const char *text;
	char pair[512];
	int rc;

	if (k->type == ZN_KEY_PAIR && val->kind == ZN_DOC_LIST) {
		ZN_TRY(pair_text(kpath, val, pair, sizeof(pair)));
		text = pair;
	} else if (val->kind != ZN_DOC_SCALAR) {
		return zn_doc_fail(val, -EINVAL, "%s: expected %s, found %s", kpath,
				   k->type == ZN_KEY_PAIR ? "a list of two numbers" : "a single value",
				   zn_doc_kind_name(val));
	} else {
		ZN_TRY(check_no_nul(val, "value"));
		text = val->text;
	}
	rc = zn_keys_set(sec, obj, name, text);
	*is_auto = !rc && strcasecmp(text, "auto") == 0;
	if (rc && strcmp(text, "auto") == 0)
		/* Hugging Face's Trainer fills "auto" in before DeepSpeed
		 * sees the file; zinc resolves it only where it can
		 * (docs/config.md says which keys). */
		return zn_doc_fail(val, rc, "%s%s ('auto' is not accepted for this key: give a value)",
				   prefix, zn_last_error());
	if (rc)
		return zn_doc_fail(val, rc, "%s%s", prefix, zn_last_error());
	return 0;
}

/* DeepSpeed's oldest form, "zero_optimization": true (stage 1) or false,
 * which it still reads with a deprecation warning. */
static int zero_bool(struct lctx *lc, struct zn_config *cfg, const struct zn_doc_node *val)
{
	bool on = strcasecmp(val->text, "true") == 0;
	if (!on && strcasecmp(val->text, "false") != 0)
		return zn_doc_fail(val, -EINVAL, "zero_optimization: expected a mapping of its "
				   "keys (or DeepSpeed's old true/false), found '%s'", val->text);
	char where[4200];
	zn_doc_where(val, where, sizeof(where));
	zn_warn("%s: \"zero_optimization\": %s is DeepSpeed's deprecated form; read as stage %d",
		where, val->text, on ? 1 : 0);
	cfg->zero_optimization.stage = on ? 1 : 0;
	report(lc, "zero_optimization", ZN_USE_MAPPED, on ? "zero_optimization.stage: 1"
							 : "zero_optimization.stage: 0");
	return 0;
}

/* The order a section's pairs are read in: "type" first where the table
 * checks it, so that an optimizer is refused for what it is before its
 * parameters are looked at. */
static size_t pair_order(const struct zn_key_table *sec, const struct zn_doc_node *map, size_t i)
{
	size_t t = map->n;
	if (!sec->check_type)
		return i;
	for (size_t j = 0; j < map->n; j++)
		if (map->pairs[j].key->kind == ZN_DOC_SCALAR &&
		    strcmp(map->pairs[j].key->text, "type") == 0)
			t = j;
	if (t == map->n)
		return i;
	return i == 0 ? t : i <= t ? i - 1 : i;
}

/* Apply one section's mapping to `obj`, nested sections included, then
 * refuse unsupported values and run the section's checks.  `prefix` is the
 * path above the section ("zero_optimization." for offload_param), put in
 * front of the table's "section.key: ..." messages; `key_node` is the key
 * that named the section (NULL at the top level, where unknown keys warn
 * instead of failing). */
static int load_section(struct lctx *lc, const struct zn_key_table *sec, void *obj,
			const char *prefix, const struct zn_doc_node *key_node,
			const struct zn_doc_node *map)
{
	bool root = key_node == NULL;
	char path[256], sub_prefix[258];
	int rc, si = zn_config_section_index(sec);
	const unsigned nerr0 = lc->nerr;

	snprintf(path, sizeof(path), "%s%s", prefix, sec->name);
	snprintf(sub_prefix, sizeof(sub_prefix), "%s%s", path, path[0] ? "." : "");
	if (zn_doc_is_null(map))
		return 0; /* "aio:" with nothing under it: all defaults */
	if (map->kind != ZN_DOC_MAP)
		return zn_doc_fail(map, -EINVAL,
				   "%s: expected a mapping of its keys (`zinc config` lists them), "
				   "found %s",
				   path, zn_doc_kind_name(map));

	for (size_t o = 0; o < map->n; o++) {
		const size_t i = pair_order(sec, map, o);
		const struct zn_doc_node *key = map->pairs[i].key, *val = map->pairs[i].value;
		const struct zn_key *k;
		char kpath[320];

		if (key->kind != ZN_DOC_SCALAR) {
			keep_error(lc, zn_doc_fail(key, -EINVAL, "%s: keys must be scalars, found %s",
						   root ? "the top level" : path,
						   zn_doc_kind_name(key)));
			continue;
		}
		if ((rc = check_no_nul(key, "key"))) {
			keep_error(lc, rc);
			continue;
		}
		k = zn_keys_find(sec, key->text);
		if (!k && root) {
			if ((rc = unknown_top_level(lc, key, val)))
				keep_error(lc, rc);
			continue;
		}
		if (!k) {
			/* zn_keys_set words the "did you mean" message. */
			rc = zn_keys_set(sec, obj, key->text, "");
			keep_error(lc, zn_doc_fail(key, rc ? rc : -ENOENT, "%s%s", prefix,
						   zn_last_error()));
			continue;
		}
		snprintf(kpath, sizeof(kpath), "%s%s", sub_prefix, k->name);
		/* A key and its alias both given: the same field twice, named
		 * at the later one ("type", read first, has no alias). */
		bool twice = false;
		for (size_t j = 0; j < i && !twice; j++) {
			const struct zn_doc_node *prev = map->pairs[j].key;
			if (prev->kind == ZN_DOC_SCALAR && zn_keys_find(sec, prev->text) == k) {
				keep_error(lc, zn_doc_fail(key, -EINVAL,
							   "%s: set twice, as '%s' (line %zu) and "
							   "as '%s'; keep one",
							   kpath, prev->text, prev->line, key->text));
				twice = true;
			}
		}
		if (twice)
			continue;
		if (si >= 0 && (size_t)(k - sec->keys) < 64)
			lc->cfg->given[si] |= 1ull << (k - sec->keys);
		if (k->deprecated && strcmp(key->text, k->deprecated) == 0) {
			char where[4200];
			zn_doc_where(key, where, sizeof(where));
			zn_warn("%s: %s%s is deprecated by DeepSpeed; read as %s", where, sub_prefix,
				key->text, kpath);
		}
		if (strcmp(key->text, k->name) != 0) {
			char spelt[320];
			snprintf(spelt, sizeof(spelt), "%s%s", sub_prefix, key->text);
			report(lc, spelt, ZN_USE_MAPPED, kpath);
		}
		if (zn_doc_is_null(val)) {
			report(lc, kpath, ZN_USE_READ, "null: the default");
			continue; /* `key: ~` keeps the default */
		}
		if (k->type == ZN_KEY_SECTION && val->kind == ZN_DOC_SCALAR && root &&
		    strcmp(k->name, "zero_optimization") == 0) {
			if ((rc = zero_bool(lc, lc->cfg, val)))
				keep_error(lc, rc);
			continue;
		}
		if (k->type != ZN_KEY_SECTION) {
			bool is_auto = false;
			if ((rc = load_value(sec, obj, k, key->text, prefix, kpath, val, &is_auto))) {
				keep_error(lc, rc);
				/* a type zinc cannot read: its parameters mean nothing */
				if (strcmp(k->name, "type") == 0)
					return 0;
				continue;
			}
			if (is_auto && si >= 0 && (size_t)(k - sec->keys) < 64)
				lc->cfg->autos[si] |= 1ull << (k - sec->keys);
			report(lc, kpath, is_auto ? ZN_USE_AUTO : k->noop ? ZN_USE_NOOP : ZN_USE_READ,
			       k->noop);
			if (k->noop && !zn_keys_is_default(k, obj)) {
				char v[128];
				add_noop(lc, kpath, zn_keys_format(k, obj, v, sizeof(v)), k->noop);
			}
			if (strcmp(k->name, "type") == 0 && sec->check_type &&
			    (rc = sec->check_type(obj))) {
				/* refused by its type: its parameters are not read */
				keep_error(lc, zn_doc_fail(val, rc, "%s%s", prefix, zn_last_error()));
				return 0;
			}
			continue;
		}
		if (k->flags & ZN_KEY_UNSUPPORTED) {
			keep_error(lc, zn_doc_fail(key, -EINVAL, "%s: not supported yet (%s); remove it",
						   kpath, k->help));
			continue;
		}
		report(lc, kpath, ZN_USE_READ, "a section");
		if ((rc = load_section(lc, k->sub, (char *)obj + k->offset, sub_prefix, key, val)))
			keep_error(lc, rc);
	}
	/* A section with an error is not checked as a whole: its values are
	 * not all there. */
	if (lc->nerr > nerr0)
		return 0;

	if (sec->resolve) {
		rc = sec->resolve(obj);
		if (rc)
			return zn_doc_fail(validate_node(sec, key_node, map), rc, "%s%s", prefix,
					   zn_last_error());
	}
	const struct zn_key *uk = NULL;
	rc = zn_keys_check_unsupported(sec, obj, &uk);
	if (rc) {
		const struct zn_doc_pair *p = pair_for_key(map, sec, uk);
		return zn_doc_fail(p ? p->value : validate_node(sec, key_node, map), rc, "%s%s",
				   prefix, zn_last_error());
	}
	if (sec->validate) {
		rc = sec->validate(obj);
		if (rc)
			return zn_doc_fail(validate_node(sec, key_node, map), rc, "%s%s", prefix,
					   zn_last_error());
	}
	return 0;
}

/* DeepSpeed reads `aio` at the top level; a file that puts it inside
 * zero_optimization (next to the offload it tunes) is read as if it were
 * at the top, with a warning, unless the top level has its own. */
static int hoist_aio(struct lctx *lc, struct zn_doc *doc, struct zn_doc_node *root)
{
	struct zn_doc_node *zero = NULL;
	size_t at = 0;

	for (size_t i = 0; i < root->n; i++) {
		const struct zn_doc_node *k = root->pairs[i].key;
		if (k->kind == ZN_DOC_SCALAR && strcmp(k->text, "zero_optimization") == 0)
			zero = root->pairs[i].value;
	}
	if (!zero || zero->kind != ZN_DOC_MAP)
		return 0;
	for (at = 0; at < zero->n; at++)
		if (zero->pairs[at].key->kind == ZN_DOC_SCALAR &&
		    strcmp(zero->pairs[at].key->text, "aio") == 0)
			break;
	if (at == zero->n)
		return 0;
	struct zn_doc_pair aio = zero->pairs[at];
	for (size_t i = 0; i < root->n; i++) {
		const struct zn_doc_node *k = root->pairs[i].key;
		if (k->kind == ZN_DOC_SCALAR && strcmp(k->text, "aio") == 0)
			return zn_doc_fail(aio.key, -EINVAL, "zero_optimization.aio: an aio section is "
					   "also at the top level (line %zu); keep one, at the top "
					   "level where DeepSpeed reads it", k->line);
	}
	char where[4200];
	zn_doc_where(aio.key, where, sizeof(where));
	zn_warn("%s: aio belongs at the top level, where DeepSpeed reads it; read from "
		"zero_optimization.aio", where);
	report(lc, "zero_optimization.aio", ZN_USE_MAPPED, "aio");
	memmove(&zero->pairs[at], &zero->pairs[at + 1], (zero->n - at - 1) * sizeof(aio));
	zero->n--;
	if (zn_doc_map_add(doc, root, aio.key, aio.value))
		return zn_error(-ENOMEM, "out of memory");
	return 0;
}

static int load_root(struct lctx *lc, struct zn_doc *doc, struct zn_doc_node *root,
		     struct zn_config *cfg)
{
	/* An empty file (or one holding only comments) sets nothing. */
	if (zn_doc_is_null(root))
		return 0;
	if (root->kind != ZN_DOC_MAP)
		return zn_doc_fail(root, -EINVAL,
				   "the top level must be a mapping of sections (like 'aio:'), "
				   "found %s",
				   zn_doc_kind_name(root));
	ZN_TRY(hoist_aio(lc, doc, root));
	int rc = load_section(lc, &zn_config_key_table, cfg, "", NULL, root);
	if (!rc && lc->nerr == 1)
		rc = zn_error(lc->rc, "%s", lc->errs + 2); /* as it was said */
	else if (!rc && lc->nerr > LC_ERRORS)
		rc = zn_error(lc->rc, "%s: %u errors (the first %d):\n%s", lc->name, lc->nerr,
			      LC_ERRORS, lc->errs);
	else if (!rc && lc->nerr)
		rc = zn_error(lc->rc, "%s: %u errors:\n%s", lc->name, lc->nerr, lc->errs);
	if (rc)
		return rc;
	/* root_validate checked the batch rule; keep what it resolved. */
	ZN_TRY(zn_config_resolve_batch(cfg, 1, &cfg->batch));
	zn_config_resolve_links(cfg);
	/* A model whose shape the file gives resolves its hidden-size
	 * "auto"s now; a Hugging Face config.json's, when it is read. */
	if (cfg->model.type == ZN_MODEL_GPT2)
		zn_config_resolve_auto(cfg);
	if (lc->nnoop)
		zn_warn("%s: %zu key%s do%s nothing in zinc: %s", lc->name, lc->nnoop,
			lc->nnoop == 1 ? "" : "s", lc->nnoop == 1 ? "es" : "", lc->noop);
	return 0;
}

/* ---- --set KEY=VALUE ------------------------------------------------------- */

/* The pair of mapping `map` whose key is the scalar `key` (len bytes). */
static struct zn_doc_pair *find_pair(struct zn_doc_node *map, const char *key, size_t len)
{
	for (size_t i = 0; i < map->n; i++) {
		const struct zn_doc_node *k = map->pairs[i].key;
		if (k->kind == ZN_DOC_SCALAR && k->len == len && memcmp(k->text, key, len) == 0)
			return &map->pairs[i];
	}
	return NULL;
}

/* Apply `--set a.b.c=VALUE` to the parsed file: VALUE is YAML (a scalar, or
 * a flow list or mapping) and replaces or adds key c of section a.b, made
 * if missing.  The keys are then checked like the file's own, and messages
 * about them name the override ("--set a.b.c=VALUE: ..."). */
static int apply_override(struct zn_doc *doc, struct zn_doc_node *root, const char *set)
{
	const char *eq = strchr(set, '=');
	struct zn_doc_node *value, *map = root;
	char name[4200];

	if (!eq || eq == set)
		return zn_error(-EINVAL, "--set %s: give KEY=VALUE, the key as a dotted path "
					 "(e.g. zero_optimization.offload_param.device=nvme)", set);
	snprintf(name, sizeof(name), "--set %s", set);
	int rc = zn_doc_parse(doc, eq + 1, strlen(eq + 1), name, ZN_DOC_NO_LINES, &value);
	if (rc == -EINVAL)
		return zn_error(-EINVAL, "--set %s: the value is not valid YAML", set);
	if (rc)
		return rc;
	for (const char *p = set;;) {
		const char *dot = memchr(p, '.', (size_t)(eq - p));
		size_t len = (size_t)((dot ? dot : eq) - p);
		if (!len)
			return zn_error(-EINVAL, "--set %s: an empty key in the path", set);
		if (map->kind != ZN_DOC_MAP)
			return zn_error(-EINVAL, "--set %s: '%.*s' is not a section", set,
					(int)(p - 1 - set), set);
		struct zn_doc_pair *pair = find_pair(map, p, len);
		if (pair && !dot) {
			pair->value = value;
			return 0;
		}
		if (!pair) {
			/* The key, and for a path's inner part its section. */
			struct zn_doc_node *key = zn_doc_new_scalar(doc, p, len, value);
			struct zn_doc_node *child = dot ? zn_doc_new_map(doc, value) : value;
			if (!key || !child || zn_doc_map_add(doc, map, key, child))
				return zn_error(-ENOMEM, "--set %s: out of memory", set);
			if (!dot)
				return 0;
			map = child;
		} else {
			map = pair->value;
		}
		p = dot + 1;
	}
}

static int load_text(const char *text, size_t len, const char *name,
		     const char *const *sets, size_t nsets, struct zn_config *out,
		     zn_config_key_fn fn, void *fn_ctx)
{
	struct zn_doc *doc = zn_doc_create();
	struct zn_doc_node *root;
	struct zn_config cfg;
	int rc;

	if (!name)
		name = "<string>";
	if (!text && len)
		return zn_error(-EINVAL, "%s: no text given for %zu bytes", name, len);
	if (!doc)
		return zn_error(-ENOMEM, "%s: out of memory", name);
	rc = zn_doc_parse(doc, text, len, name, ZN_DOC_ONE | ZN_DOC_UNIQUE_KEYS, &root);
	/* An empty file is an empty mapping: --set fills it. */
	if (!rc && nsets && root->kind == ZN_DOC_SCALAR && root->len == 0 &&
	    !(root = zn_doc_new_map(doc, root)))
		rc = zn_error(-ENOMEM, "%s: out of memory", name);
	for (size_t i = 0; i < nsets && !rc; i++)
		rc = apply_override(doc, root, sets[i]);
	if (!rc) {
		struct lctx *lc = calloc(1, sizeof(*lc));
		zn_config_default(&cfg);
		if (!lc) {
			rc = zn_error(-ENOMEM, "%s: out of memory", name);
		} else {
			*lc = (struct lctx){ .fn = fn, .fn_ctx = fn_ctx, .cfg = &cfg, .name = name };
			rc = load_root(lc, doc, root, &cfg);
			free(lc);
		}
	}
	zn_doc_destroy(doc);
	if (!rc)
		*out = cfg;
	return rc;
}

int zn_config_load_string(const char *text, size_t len, const char *name, struct zn_config *out)
{
	return load_text(text, len, name, NULL, 0, out, NULL, NULL);
}

int zn_config_load_string_set(const char *text, size_t len, const char *name,
			      const char *const *sets, size_t nsets, struct zn_config *out)
{
	return load_text(text, len, name, sets, nsets, out, NULL, NULL);
}

int zn_config_load_file(const char *path, struct zn_config *out)
{
	return zn_config_load_file_set(path, NULL, 0, out);
}

int zn_config_load_file_set(const char *path, const char *const *sets, size_t nsets,
			    struct zn_config *out)
{
	return zn_config_load_file_explain(path, sets, nsets, out, NULL, NULL);
}

int zn_config_load_file_explain(const char *path, const char *const *sets, size_t nsets,
				struct zn_config *out, zn_config_key_fn fn, void *ctx)
{
	char *buf;
	size_t len;

	ZN_TRY(zn_doc_read_file(path, MAX_FILE_BYTES, "a zinc or DeepSpeed config file", &buf,
				&len));
	int rc = load_text(buf, len, path, sets, nsets, out, fn, ctx);
	free(buf);
	return rc;
}
