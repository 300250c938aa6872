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

/* zn_ckpt_manifest_write with the commit time given (nanoseconds since
 * the epoch): a commit makes it later than every complete step's in its
 * root, so that a clock set back cannot reorder the steps. */
int zn_ckpt_manifest_write_at(const char *dir, uint64_t committed_ns);

#endif
