/* The key table of the training config's top level (engine/config/keys.c),
 * whose section keys lead to every other section's table. */
#ifndef ZN_ENGINE_CONFIG_KEYS_H
#define ZN_ENGINE_CONFIG_KEYS_H

#include "zinc/keys.h"

struct zn_config;

extern const struct zn_key_table zn_config_key_table;

/* The i-th ignored top-level key's DeepSpeed default as text; NULL for a
 * section (engine/config/config.c). */
const char *zn_config_ignored_default(size_t i);

/* The index of `sec` in zn_config_section's order, or -1. */
int zn_config_section_index(const struct zn_key_table *sec);

/* The "auto" values linked to others (warmup_max_lr to lr) and the
 * Trainer's defaults (lr, gradient_clipping), from cfg->autos. */
void zn_config_resolve_links(struct zn_config *cfg);

#endif
