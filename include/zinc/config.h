/* zinc — configuration key tables.
 *
 * Each config section (aio, offload_param, ...) is described once by a table
 * of keys: name (DeepSpeed's), an older accepted alias, type, the field it
 * fills, default, range and help.  The YAML/JSON loader, validation, the
 * `zinc config` listing and docs/config.md all read the same table, so they
 * cannot drift.
 */
#ifndef ZINC_CONFIG_H
#define ZINC_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "zinc/common.h"

#ifdef __cplusplus
extern "C" {
#endif

enum zn_cfg_type {
	ZN_CFG_BOOL,   /* bool; true/false (also yes/no, on/off, 1/0) */
	ZN_CFG_UINT,   /* uint32_t or uint64_t (per key.size); decimal or 1e8 */
	ZN_CFG_SIZE,   /* uint64_t bytes; accepts K/M/G/T suffixes */
	ZN_CFG_DOUBLE, /* double */
	ZN_CFG_STRING, /* char[key.size], NUL-terminated */
	ZN_CFG_ENUM,   /* int index into key.choices */
	ZN_CFG_INT,    /* int32_t or int64_t (per key.size); may be negative */
	ZN_CFG_PAIR,   /* double[2]; a list of two numbers ([0.9, 0.999]) */
	ZN_CFG_SECTION,/* a nested mapping: key.sub describes the struct at offset */
};

enum zn_cfg_key_flags {
	ZN_CFG_ZINC_ONLY = 1u << 0, /* zinc's own key, not in DeepSpeed */
	/* "auto" accepted (what Hugging Face's Trainer fills in).  UINT/SIZE
	 * store 0, which the consumer resolves (the batch rule, the model's
	 * sizes); other types store the key's default. */
	ZN_CFG_AUTO = 1u << 1,
	/* Parsed, but the feature is not implemented yet: a value other than
	 * the default (for a SECTION: giving it at all) is refused with a
	 * "not supported yet" message rather than silently ignored. */
	ZN_CFG_UNSUPPORTED = 1u << 2,
	/* With ZN_CFG_AUTO on a UINT/SIZE key whose 0 means something (no
	 * persistence, no prefetch): "auto" is stored as UINT64_MAX instead. */
	ZN_CFG_AUTO_MAX = 1u << 3,
};

struct zn_cfg_key {
	const char *name;          /* the key as DeepSpeed spells it */
	const char *alias;         /* an older documented name still accepted, or NULL */
	enum zn_cfg_type type;
	size_t offset;             /* offsetof(config struct, field) */
	size_t size;               /* sizeof(field) */
	const char *def;           /* default, as text, parsed like user input */
	double min, max;           /* inclusive range for UINT/SIZE/DOUBLE */
	const char *const *choices;/* ENUM: NULL-terminated list */
	unsigned flags;            /* enum zn_cfg_key_flags */
	const char *help;          /* one sentence, with units */
	const struct zn_cfg_section *sub; /* SECTION: the nested table */
};

struct zn_cfg_section {
	const char *name;          /* "aio"; "" for the top level */
	const char *help;
	const struct zn_cfg_key *keys;
	size_t nkeys;
	size_t struct_size;
	/* Checks that involve several keys or refuse a value outright (called
	 * after all keys are set); 0 or -EINVAL with the last error set. */
	int (*validate)(const void *obj);
};

/* Fill `obj` with the defaults of every key. */
ZN_API void zn_cfg_defaults(const struct zn_cfg_section *sec, void *obj);

/* The key named `name` (or its alias) in `sec`, or NULL. */
ZN_API const struct zn_cfg_key *zn_cfg_find(const struct zn_cfg_section *sec, const char *name);

/* The key of `sec` nearest to the unknown `name` (edit distance), or NULL
 * when nothing is close. */
ZN_API const struct zn_cfg_key *zn_cfg_nearest(const struct zn_cfg_section *sec, const char *name);

/* Parse `value` as the key's type, check its range and store it in `obj`.
 * Returns 0, -ENOENT for an unknown key (the message names the nearest valid
 * key) or -EINVAL for a bad value (the message names the key, the value and
 * what is accepted). */
ZN_API int zn_cfg_set(const struct zn_cfg_section *sec, void *obj, const char *name,
		      const char *value);

/* Whether the key's value in `obj` equals its default (a SECTION key:
 * every key of the nested struct does). */
ZN_API bool zn_cfg_is_default(const struct zn_cfg_key *key, const void *obj);

/* -EINVAL naming the first ZN_CFG_UNSUPPORTED scalar key of `sec` whose
 * value in `obj` is not the default ("not supported yet"), else 0.
 * `key_out` (if not NULL) gets that key. */
ZN_API int zn_cfg_check_unsupported(const struct zn_cfg_section *sec, const void *obj,
				    const struct zn_cfg_key **key_out);

/* Format the key's current value in `obj` as config text (YAML scalar). */
ZN_API char *zn_cfg_format(const struct zn_cfg_key *key, const void *obj, char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
