/* The training config's section tables (engine/config_keys.c). */
#ifndef ZN_ENGINE_CONFIG_KEYS_H
#define ZN_ENGINE_CONFIG_KEYS_H

#include "zinc/config.h"

extern const struct zn_cfg_section zn_config_root_section;
extern const struct zn_cfg_section zn_optimizer_section;
extern const struct zn_cfg_section zn_scheduler_section;
extern const struct zn_cfg_section zn_fp16_section;
extern const struct zn_cfg_section zn_bf16_section;
extern const struct zn_cfg_section zn_actckpt_section;
extern const struct zn_cfg_section zn_data_types_section;
extern const struct zn_cfg_section zn_zero_section;
extern const struct zn_cfg_section zn_model_section;
extern const struct zn_cfg_section zn_data_section;
extern const struct zn_cfg_section zn_checkpoint_section;
extern const struct zn_cfg_section zn_device_section;

#endif
