/* Key tables (include/zinc/keys.h): defaults, lookup by name or alias with
 * "did you mean", parsing and range-checking a value's text into its field,
 * formatting it back, and the "not supported yet" check. */
#include "zn_common.h"

#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "zinc/keys.h"

/* "section.key" in messages; just "key" at the top level (name ""). */
#define QN(sec, k) (sec)->name, (sec)->name[0] ? "." : "", (k)->name

void zn_keys_defaults(const struct zn_key_table *sec, void *obj)
{
	memset(obj, 0, sec->struct_size);
	for (size_t i = 0; i < sec->nkeys; i++) {
		const struct zn_key *k = &sec->keys[i];
		/* Defaults come from the table and are parsed like user input;
		 * a bad default is a bug caught by the unit tests. */
		if (k->type == ZN_KEY_SECTION)
			zn_keys_defaults(k->sub, (uint8_t *)obj + k->offset);
		else if (k->def)
			zn_keys_set(sec, obj, k->name, k->def);
	}
}

const struct zn_key *zn_keys_find(const struct zn_key_table *sec, const char *name)
{
	for (size_t i = 0; i < sec->nkeys; i++) {
		const struct zn_key *k = &sec->keys[i];
		if (strcmp(k->name, name) == 0 || (k->alias && strcmp(k->alias, name) == 0) ||
		    (k->deprecated && strcmp(k->deprecated, name) == 0))
			return k;
	}
	return NULL;
}

const struct zn_key *zn_keys_nearest(const struct zn_key_table *sec, const char *name)
{
	const struct zn_key *best = NULL;
	unsigned best_d = ~0u;

	for (size_t i = 0; i < sec->nkeys; i++) {
		unsigned d = zn_edit_distance(name, sec->keys[i].name);
		if (d < best_d) {
			best_d = d;
			best = &sec->keys[i];
		}
	}
	/* Close enough to be a typo: at most a third of the name wrong. */
	if (best && best_d <= ZN_MAX(2u, (unsigned)strlen(name) / 3))
		return best;
	return NULL;
}

bool zn_keys_accepts_auto(const struct zn_key_table *sec, const struct zn_key *k)
{
	return k->type != ZN_KEY_SECTION && ((k->flags & ZN_KEY_AUTO) || sec->auto_default);
}

static int parse_bool(const char *v, bool *out)
{
	static const char *const yes[] = { "true", "yes", "on", "1" };
	static const char *const no[] = { "false", "no", "off", "0" };
	for (size_t i = 0; i < ZN_ARRAY_SIZE(yes); i++) {
		if (strcasecmp(v, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(v, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -EINVAL;
}

static int range_error(const struct zn_key_table *sec, const struct zn_key *k,
		       const char *value)
{
	if (k->max >= 1e300)
		return zn_error(-EINVAL, "%s%s%s: %s is out of range: it must be at least %.17g",
				QN(sec, k), value, k->min);
	return zn_error(-EINVAL, "%s%s%s: %s is out of range: it must be between %.17g and %.17g",
			QN(sec, k), value, k->min, k->max);
}

int zn_keys_set(const struct zn_key_table *sec, void *obj, const char *name, const char *value)
{
	const struct zn_key *k = zn_keys_find(sec, name);
	uint8_t *field;

	if (!k) {
		const struct zn_key *near = zn_keys_nearest(sec, name);
		if (near)
			return zn_error(-ENOENT, "%s: unknown key '%s'; did you mean '%s'?",
					sec->name, name, near->name);
		return zn_error(-ENOENT, "%s: unknown key '%s'; run `zinc config` for the valid keys",
				sec->name, name);
	}
	field = (uint8_t *)obj + k->offset;

	/* "auto" for a number, bool, choice or pair, or for any key of a
	 * section that takes "auto" everywhere: the default stands (UINT/SIZE
	 * keys marked ZN_KEY_AUTO handle it below: 0, resolved by the
	 * consumer). */
	if (zn_keys_accepts_auto(sec, k) && strcasecmp(value, "auto") == 0 && k->def &&
	    !((k->flags & ZN_KEY_AUTO) && (k->type == ZN_KEY_UINT || k->type == ZN_KEY_SIZE)) &&
	    strcasecmp(k->def, "auto") != 0)
		return zn_keys_set(sec, obj, k->name, k->def);

	switch (k->type) {
	case ZN_KEY_SECTION:
		return zn_error(-EINVAL, "%s%s%s: is a section: give a mapping of its keys",
				QN(sec, k));
	case ZN_KEY_INT: {
		char *end;
		errno = 0;
		long long v = strtoll(value, &end, 10);
		if (end == value || *end || errno)
			return zn_error(-EINVAL, "%s%s%s: '%s' is not an integer", QN(sec, k), value);
		if ((double)v < k->min || (double)v > k->max)
			return range_error(sec, k, value);
		if (k->size == sizeof(int32_t))
			*(int32_t *)field = (int32_t)v;
		else
			*(int64_t *)field = v;
		return 0;
	}
	case ZN_KEY_PAIR: {
		/* "a, b", optionally in brackets: the loader turns a YAML list
		 * of two numbers into this text. */
		double d[2];
		const char *p = value;
		char *end;
		while (isspace((unsigned char)*p))
			p++;
		bool bracket = *p == '[';
		p += bracket;
		for (int i = 0; i < 2; i++) {
			errno = 0;
			d[i] = strtod(p, &end);
			if (end == p || errno || !isfinite(d[i]))
				goto bad_pair;
			p = end;
			while (isspace((unsigned char)*p))
				p++;
			if (i == 0 && *p++ != ',')
				goto bad_pair;
		}
		if (bracket && *p++ != ']')
			goto bad_pair;
		while (isspace((unsigned char)*p))
			p++;
		if (*p)
			goto bad_pair;
		for (int i = 0; i < 2; i++)
			if (d[i] < k->min || d[i] > k->max)
				return range_error(sec, k, value);
		memcpy(field, d, sizeof(d));
		return 0;
	bad_pair:
		return zn_error(-EINVAL, "%s%s%s: '%s' is not a list of two numbers (like "
					 "[0.9, 0.999])",
				QN(sec, k), value);
	}
	case ZN_KEY_BOOL: {
		bool b;
		if (parse_bool(value, &b))
			return zn_error(-EINVAL, "%s%s%s: '%s' is not a boolean: use true or false",
					QN(sec, k), value);
		*(bool *)field = b;
		return 0;
	}
	case ZN_KEY_UINT:
	case ZN_KEY_SIZE: {
		uint64_t v;
		if ((k->flags & ZN_KEY_AUTO) && strcasecmp(value, "auto") == 0) {
			/* 0 (or the maximum) stands for "auto": the consumer
			 * sizes it. */
			bool max = k->flags & ZN_KEY_AUTO_MAX;
			if (k->size == sizeof(uint32_t))
				*(uint32_t *)field = max ? UINT32_MAX : 0;
			else
				*(uint64_t *)field = max ? UINT64_MAX : 0;
			return 0;
		}
		int rc = zn_parse_size(value, &v);
		bool suffix = false;
		for (const char *c = value; *c; c++)
			suffix |= isalpha((unsigned char)*c) && *c != 'e' && *c != 'E';
		if (rc == -ERANGE) /* digits past 2^64: a number, far too large */
			return range_error(sec, k, value);
		if (rc || (k->type == ZN_KEY_UINT && suffix))
			return zn_error(-EINVAL, "%s%s%s: '%s' is not %s", QN(sec, k), value,
					k->type == ZN_KEY_SIZE
						? "a byte count (an integer, optionally with K, M or G)"
						: "a non-negative integer");
		if ((double)v < k->min || (double)v > k->max)
			return range_error(sec, k, value);
		if (k->size == sizeof(uint32_t)) {
			if (v > UINT32_MAX)
				return range_error(sec, k, value);
			*(uint32_t *)field = (uint32_t)v;
		} else {
			*(uint64_t *)field = v;
		}
		return 0;
	}
	case ZN_KEY_DOUBLE: {
		char *end;
		errno = 0;
		double d = strtod(value, &end);
		if (end == value || *end || errno || !isfinite(d))
			return zn_error(-EINVAL, "%s%s%s: '%s' is not a number", QN(sec, k),
					value);
		if (d < k->min || d > k->max)
			return range_error(sec, k, value);
		*(double *)field = d;
		return 0;
	}
	case ZN_KEY_STRING:
		if (strlen(value) >= k->size)
			return zn_error(-EINVAL, "%s%s%s: value is longer than %zu characters",
					QN(sec, k), k->size - 1);
		memcpy(field, value, strlen(value) + 1);
		return 0;
	case ZN_KEY_ENUM: {
		char list[256] = "";
		for (int i = 0; k->choices[i]; i++) {
			if (strcasecmp(value, k->choices[i]) == 0) {
				*(int *)field = i;
				return 0;
			}
			snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s",
				 i ? ", " : "", k->choices[i]);
		}
		return zn_error(-EINVAL, "%s%s%s: '%s' is not one of: %s", QN(sec, k),
				value, list);
	}
	}
	return zn_error(-EINVAL, "%s%s%s: key has an unknown type", QN(sec, k));
}

/* The shortest text that reads back as exactly `d` ("0.0003", not
 * "0.00029999999999999997"). */
static char *shortest(double d, char *buf, size_t len)
{
	for (int prec = 1; prec <= 17; prec++) {
		snprintf(buf, len, "%.*g", prec, d);
		if (strtod(buf, NULL) == d)
			break;
	}
	return buf;
}

char *zn_keys_format(const struct zn_key *k, const void *obj, char *buf, size_t len)
{
	const uint8_t *field = (const uint8_t *)obj + k->offset;

	switch (k->type) {
	case ZN_KEY_BOOL:
		snprintf(buf, len, "%s", *(const bool *)field ? "true" : "false");
		break;
	case ZN_KEY_UINT:
	case ZN_KEY_SIZE: {
		uint64_t v = k->size == sizeof(uint32_t) ? (uint64_t)*(const uint32_t *)field
							 : *(const uint64_t *)field;
		uint64_t autov = !(k->flags & ZN_KEY_AUTO_MAX) ? 0
				 : k->size == sizeof(uint32_t) ? UINT32_MAX : UINT64_MAX;
		if (v == autov && (k->flags & ZN_KEY_AUTO))
			snprintf(buf, len, "auto");
		else
			snprintf(buf, len, "%" PRIu64, v);
		break;
	}
	case ZN_KEY_DOUBLE:
		shortest(*(const double *)field, buf, len);
		break;
	case ZN_KEY_STRING:
		snprintf(buf, len, "%s", (const char *)field);
		break;
	case ZN_KEY_ENUM:
		snprintf(buf, len, "%s", k->choices[*(const int *)field]);
		break;
	case ZN_KEY_INT:
		snprintf(buf, len, "%lld",
			 k->size == sizeof(int32_t) ? (long long)*(const int32_t *)field
						   : (long long)*(const int64_t *)field);
		break;
	case ZN_KEY_PAIR: {
		const double *d = (const double *)field;
		char a[32], b[32];
		snprintf(buf, len, "[%s, %s]", shortest(d[0], a, sizeof(a)),
			 shortest(d[1], b, sizeof(b)));
		break;
	}
	case ZN_KEY_SECTION:
		snprintf(buf, len, "~"); /* a section's value is its keys */
		break;
	}
	return buf;
}

bool zn_keys_is_default(const struct zn_key *k, const void *obj)
{
	const uint8_t *field = (const uint8_t *)obj + k->offset;
	uint8_t *def;
	bool same;

	if (k->type == ZN_KEY_SECTION) {
		for (size_t i = 0; i < k->sub->nkeys; i++)
			if (!zn_keys_is_default(&k->sub->keys[i], field))
				return false;
		return true;
	}
	/* Set the default into a scratch struct of the field's size placed
	 * at the same offset: cheap, and parsed exactly like the default. */
	def = calloc(1, k->offset + k->size);
	if (!def)
		return false;
	struct zn_key_table one = { .name = "", .keys = k, .nkeys = 1,
				      .struct_size = k->offset + k->size };
	if (k->def)
		zn_keys_set(&one, def, k->name, k->def);
	if (k->type == ZN_KEY_STRING)
		same = strcmp((const char *)field, (const char *)def + k->offset) == 0;
	else
		same = memcmp(field, def + k->offset, k->size) == 0;
	free(def);
	return same;
}

int zn_keys_check_unsupported(const struct zn_key_table *sec, const void *obj,
			     const struct zn_key **key_out)
{
	char buf[128];

	for (size_t i = 0; i < sec->nkeys; i++) {
		const struct zn_key *k = &sec->keys[i];
		if (!(k->flags & ZN_KEY_UNSUPPORTED) || k->type == ZN_KEY_SECTION ||
		    zn_keys_is_default(k, obj))
			continue;
		if (key_out)
			*key_out = k;
		return zn_error(-EINVAL, "%s%s%s: %s is not supported yet (%s); remove the key or "
					 "set it to %s",
				QN(sec, k), zn_keys_format(k, obj, buf, sizeof(buf)), k->help,
				k->def ? k->def : "its default");
	}
	return 0;
}
