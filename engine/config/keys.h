/* The key table of the training config's top level (engine/config/keys.c),
 * whose section keys lead to every other section's table. */
#ifndef ZN_ENGINE_CONFIG_KEYS_H
#define ZN_ENGINE_CONFIG_KEYS_H

#include "zinc/keys.h"

extern const struct zn_key_table zn_config_key_table;

#endif
