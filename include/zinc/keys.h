/* zinc — key tables: the machinery that describes a struct's fields as
 * named, typed keys with defaults, ranges and help, and sets them from text.
 *
 * Each section of the config file (aio, offload_param, ...) is described
 * once by a table of keys (struct zn_key_table): name (DeepSpeed's), an
 * older accepted alias, type, the field it fills, default, range and help.
 * The YAML/JSON loader (zinc/configfile.h), validation, the `zinc config`
 * listing and docs/config.md all read the same table, so they cannot
 * drift.  The tables themselves live beside the code they configure
 * (zn_aio_key_table, zn_offload_param_key_table, the engine's sections).
 */
#ifndef ZINC_KEYS_H
#define ZINC_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "zinc/common.h"

#ifdef __cplusplus
extern "C" {
#endif

enum zn_key_type {
	ZN_KEY_BOOL,   /* bool; true/false (also yes/no, on/off, 1/0) */
	ZN_KEY_UINT,   /* uint32_t or uint64_t (per key.size); decimal or 1e8 */
	ZN_KEY_SIZE,   /* uint64_t bytes; accepts K/M/G/T suffixes */
	ZN_KEY_DOUBLE, /* double */
	ZN_KEY_STRING, /* char[key.size], NUL-terminated */
	ZN_KEY_ENUM,   /* int index into key.choices */
	ZN_KEY_INT,    /* int32_t or int64_t (per key.size); may be negative */
	ZN_KEY_PAIR,   /* double[2]; a list of two numbers ([0.9, 0.999]) */
	ZN_KEY_SECTION,/* a nested mapping: key.sub describes the struct at offset */
};

enum zn_key_flags {
	ZN_KEY_ZINC_ONLY = 1u << 0, /* zinc's own key, not in DeepSpeed */
	/* "auto" accepted (what Hugging Face's Trainer fills in).  UINT/SIZE
	 * store 0, which the consumer resolves (the batch rule, the model's
	 * sizes); other types store the key's default. */
	ZN_KEY_AUTO = 1u << 1,
	/* Parsed, but the feature is not implemented yet: a value other than
	 * the default (for a SECTION: giving it at all) is refused with a
	 * "not supported yet" message rather than silently ignored. */
	ZN_KEY_UNSUPPORTED = 1u << 2,
	/* With ZN_KEY_AUTO on a UINT/SIZE key whose 0 means something (no
	 * persistence, no prefetch): "auto" is stored as UINT64_MAX instead. */
	ZN_KEY_AUTO_MAX = 1u << 3,
};

struct zn_key {
	const char *name;          /* the key as DeepSpeed spells it */
	const char *alias;         /* an older documented name still accepted, or NULL */
	enum zn_key_type type;
	size_t offset;             /* offsetof(config struct, field) */
	size_t size;               /* sizeof(field) */
	const char *def;           /* default, as text, parsed like user input */
	double min, max;           /* inclusive range for UINT/SIZE/DOUBLE */
	const char *const *choices;/* ENUM: NULL-terminated list */
	unsigned flags;            /* enum zn_key_flags */
	const char *help;          /* one sentence, with units */
	const struct zn_key_table *sub; /* SECTION: the nested table */
	/* A name DeepSpeed marks deprecated but still reads with this key's
	 * meaning: accepted, with a warning naming the key to use, or NULL. */
	const char *deprecated;
	/* Accepted but does nothing in zinc: why (a value other than the
	 * default is listed in the one "do nothing in zinc" warning of a
	 * load), or NULL for a key zinc honours. */
	const char *noop;
};

struct zn_key_table {
	const char *name;          /* "aio"; "" for the top level */
	const char *help;
	const struct zn_key *keys;
	size_t nkeys;
	size_t struct_size;
	/* Checks that involve several keys or refuse a value outright (called
	 * after all keys are set); 0 or -EINVAL with the last error set. */
	int (*validate)(const void *obj);
	/* Optional: checked as soon as the section's "type" key is read,
	 * before its other keys (an optimizer refused by its type, not by a
	 * parameter only that type takes); 0 or -EINVAL with the last error. */
	int (*check_type)(const void *obj);
	/* Optional: maps deprecated keys onto their replacements (DeepSpeed's
	 * new_param_fn) before validate; 0 or -EINVAL with the last error. */
	int (*resolve)(void *obj);
	/* Every key accepts "auto" and keeps its default: DeepSpeed's pydantic
	 * sections (zero_optimization, offload_*, fp16, bf16) drop "auto"
	 * values before reading them. */
	bool auto_default;
};

/* Whether key k of `sec` takes "auto" (flagged so, or its table does). */
ZN_API bool zn_keys_accepts_auto(const struct zn_key_table *sec, const struct zn_key *k);

/* Fill `obj` with the defaults of every key. */
ZN_API void zn_keys_defaults(const struct zn_key_table *sec, void *obj);

/* The key named `name` (or its alias, or its deprecated name) in `sec`,
 * or NULL. */
ZN_API const struct zn_key *zn_keys_find(const struct zn_key_table *sec, const char *name);

/* The key of `sec` nearest to the unknown `name` (edit distance), or NULL
 * when nothing is close. */
ZN_API const struct zn_key *zn_keys_nearest(const struct zn_key_table *sec, const char *name);

/* Parse `value` as the key's type, check its range and store it in `obj`.
 * Returns 0, -ENOENT for an unknown key (the message names the nearest valid
 * key) or -EINVAL for a bad value (the message names the key, the value and
 * what is accepted). */
ZN_API int zn_keys_set(const struct zn_key_table *sec, void *obj, const char *name,
		      const char *value);

/* Whether the key's value in `obj` equals its default (a SECTION key:
 * every key of the nested struct does). */
ZN_API bool zn_keys_is_default(const struct zn_key *key, const void *obj);

/* -EINVAL naming the first ZN_KEY_UNSUPPORTED scalar key of `sec` whose
 * value in `obj` is not the default ("not supported yet"), else 0.
 * `key_out` (if not NULL) gets that key. */
ZN_API int zn_keys_check_unsupported(const struct zn_key_table *sec, const void *obj,
				    const struct zn_key **key_out);

/* Format the key's current value in `obj` as config text (YAML scalar). */
ZN_API char *zn_keys_format(const struct zn_key *key, const void *obj, char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
