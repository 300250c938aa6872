/* What checkpoint.c asks of a step directory's manifest beyond
 * include/zinc/checkpoint.h (engine/io/manifest.c). */
#ifndef ZN_IO_MANIFEST_H
#define ZN_IO_MANIFEST_H

#include <stdbool.h>
#include <stdint.h>

/* When the step directory `dir` was committed (its manifest's
 * "committed_ns", nanoseconds since the epoch), read from the manifest's
 * first bytes without parsing it all; false when it has no manifest (not
 * complete) or the manifest does not start as zinc writes it. */
bool zn_ckpt_committed(const char *dir, uint64_t *ns);

#endif
