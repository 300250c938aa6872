/* The start-up checks of `zinc train` (tools/preflight.c). */
#ifndef ZN_TOOLS_PREFLIGHT_H
#define ZN_TOOLS_PREFLIGHT_H

#include <stddef.h>
#include <stdint.h>

#include "zinc/configfile.h"
#include "zinc/plan.h"

/* Compare the process's RLIMIT_NOFILE, RLIMIT_AS, RLIMIT_FSIZE and
 * RLIMIT_MEMLOCK with what the run of `cfg` (planned as `plan`, NULL when
 * there is none; `params` parameters, 0 when not known yet) will use,
 * raising soft limits up to the hard ones where that covers it.  0 when
 * every limit covers the run (`msg` may still hold a warning: "" when
 * none), or -errno with `msg` saying which limit, what the run needs and
 * how to raise it. */
int train_check_limits(const struct zn_config *cfg, const struct zn_plan *plan, uint64_t params,
		       char *msg, size_t len);

/* Bytes one checkpoint of a model of `params` parameters takes at most. */
uint64_t train_checkpoint_bytes(uint64_t params);

/* 0 when `dir` has `need` bytes free (or cannot be asked), else -ENOSPC
 * with `msg` naming the directory, what is free and what to do. */
int train_check_space(const char *dir, uint64_t need, char *msg, size_t len);

#endif
