/* zinc — checkpoint directories, written atomically.
 *
 *   ROOT/step-00000100/      one complete checkpoint (model.safetensors,
 *                            optimizer state, metadata ...)
 *   ROOT/latest              "step-00000100": the newest complete one
 *
 * A checkpoint is written into ROOT/step-N.tmp-PID/, every file fsynced,
 * then the directory is renamed to ROOT/step-N/ and `latest` replaced (a
 * temporary file renamed over it), each step fsynced.  A crash at any point
 * leaves the previous checkpoint and `latest` intact; leftovers of a crashed
 * save are removed by the next zn_ckpt_begin.
 */
#ifndef ZINC_CHECKPOINT_H
#define ZINC_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "zinc/common.h"

#ifdef __cplusplus
extern "C" {
#endif

struct zn_ckpt;

/* Start checkpoint `step` under `root` (created if missing).  Returns NULL
 * and sets the last error (e.g. the root is not writable). */
ZN_API struct zn_ckpt *zn_ckpt_begin(const char *root, uint64_t step);

/* The path of file `name` inside the checkpoint being written (valid until
 * commit or abort).  Write it completely (and fsync it) before committing. */
ZN_API const char *zn_ckpt_file(struct zn_ckpt *c, const char *name);

/* Make the checkpoint complete and the latest; frees c.  0 or -errno (then
 * the previous checkpoint is still the latest and this one is removed). */
ZN_API int zn_ckpt_commit(struct zn_ckpt *c);

/* Throw the checkpoint being written away; frees c. */
ZN_API void zn_ckpt_abort(struct zn_ckpt *c);

/* The directory of the newest complete checkpoint under `root`, written to
 * `out`; -ENOENT when there is none. */
ZN_API int zn_ckpt_latest(const char *root, char *out, size_t len);

/* Before a run trains: a file created and removed in `root`, or, when it
 * is not there yet, its nearest existing parent checked to be a directory
 * it can be made in (nothing is made), so that a directory the run cannot
 * write is said at the start, not after hours of training.  0 or -errno
 * (message set). */
ZN_API int zn_ckpt_check_dir(const char *root);

/* Remove complete checkpoints under `root` except the `keep` newest (and
 * the latest).  Returns how many were removed, or -errno. */
ZN_API int zn_ckpt_prune(const char *root, unsigned keep);

#ifdef __cplusplus
}
#endif
#endif
