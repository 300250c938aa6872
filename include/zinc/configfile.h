/* zinc — the configuration file: YAML or JSON, DeepSpeed's key names.
 *
 * A config file is a mapping of sections.  A DeepSpeed ds_config.json is
 * valid input as it is: JSON is YAML's flow syntax, and the top-level keys
 * DeepSpeed documents that zinc does not implement yet are accepted with an
 * INFO log line.  Each section zinc reads (see zn_config_section) is a
 * mapping of scalar keys described by a zn_cfg_section table (zinc/config.h);
 * values are parsed, range-checked and validated by that table.
 *
 * Every failure message starts with "FILE:LINE:COLUMN: " (1-based), so
 * editors can jump to it; warnings (an unknown top-level key, with the
 * nearest known key) go to the log sink with the same prefix.
 */
#ifndef ZINC_CONFIGFILE_H
#define ZINC_CONFIGFILE_H

#include <stddef.h>

#include "zinc/aio.h"
#include "zinc/common.h"
#include "zinc/config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Everything a config file sets, one member per section. */
struct zn_config {
	struct zn_aio_config aio; /* section "aio" */
};

/* Fill `cfg` with every section's defaults (DeepSpeed's where it has one). */
ZN_API void zn_config_default(struct zn_config *cfg);

/* Read the YAML or JSON file at `path` into `out`: every section starts
 * from its defaults and takes the values the file gives.  Returns 0, or
 * -errno when the file cannot be read (the message names the path),
 * -EINVAL for a syntax error or a bad value, -ENOENT for an unknown key
 * inside a section zinc reads (the message names the nearest valid key),
 * -EFBIG for a file over 64 MiB, -ENOMEM.  On failure `out` is unchanged. */
ZN_API int zn_config_load_file(const char *path, struct zn_config *out);

/* The same for `len` bytes of `text` (need not be NUL-terminated).
 * `name` stands for the file name in messages; NULL means "<string>". */
ZN_API int zn_config_load_string(const char *text, size_t len, const char *name,
				 struct zn_config *out);

/* The i-th section zinc reads (0-based, in struct zn_config order), or NULL
 * past the last one: for listings, docs and printing a whole config. */
ZN_API const struct zn_cfg_section *zn_config_section(size_t i);

/* The member of `cfg` that `sec` describes (e.g. &cfg->aio for the aio
 * table), or NULL when `sec` is not one of zn_config_section()'s. */
ZN_API void *zn_config_section_data(struct zn_config *cfg, const struct zn_cfg_section *sec);

/* The i-th top-level key that DeepSpeed documents and zinc accepts without
 * using yet (0-based, sorted), or NULL past the last one. */
ZN_API const char *zn_config_ignored_key(size_t i);

#ifdef __cplusplus
}
#endif
#endif
