/* zinc — checkpoint directories, written atomically.
 *
 *   ROOT/step-00000100/      one complete checkpoint (model.safetensors,
 *                            optimizer state, metadata ...)
 *   ROOT/latest              "step-00000100": the newest complete one
 *
 * A checkpoint is written into ROOT/step-N.tmp-PID/; its manifest.json is
 * written last (every file's size and XXH3-64, and every safetensors
 * tensor's), every file fsynced, then the directory is renamed to
 * ROOT/step-N/ and `latest` replaced (a temporary file renamed over it),
 * each step fsynced.  A crash at any point leaves the previous checkpoint
 * intact; leftovers of a crashed save are removed by the next
 * zn_ckpt_begin.
 *
 * A step directory is complete when its manifest is there; `latest` is a
 * hint for people and older tools: zn_ckpt_latest and zn_ckpt_find look
 * for the newest complete step themselves.  Only a root that an older
 * zinc wrote (no manifest in any step directory) is read through
 * `latest`, with a warning that it cannot be verified.
 *
 * Runs take locks (zn_run_lock): one on checkpoint.dir (ROOT/zinc.lock)
 * and one on each nvme_path (zinc-swap.lock), so that a second run on the
 * same directories refuses to start instead of overwriting the first
 * one's checkpoints or swap space.
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

/* The directory of the newest complete checkpoint under `root` (a step
 * directory with a manifest; not verified), written to `out`; -ENOENT
 * when there is none. */
ZN_API int zn_ckpt_latest(const char *root, char *out, size_t len);

/* The directory of the newest complete checkpoint under `root` whose
 * files all match its manifest, written to `out`.  Each damaged one on
 * the way is a warning naming its file and tensor, and when an older one
 * is chosen, a warning names both steps.  0; -ENOENT when there is no
 * complete checkpoint; -EBADMSG when there are some and none verifies
 * (message names the newest and what is wrong with it). */
ZN_API int zn_ckpt_find(const char *root, char *out, size_t len);

/* ---- manifests ------------------------------------------------------------ */

#define ZN_CKPT_MANIFEST "manifest.json"

/* Hash every file of the step directory `dir` (regular files, not hidden
 * ones, not the manifest) and write DIR/manifest.json atomically: per
 * file its size and XXH3-64, per tensor of a safetensors file the
 * XXH3-64 of its data bytes.  zn_ckpt_commit calls it; a test or tool
 * that builds a step directory by hand may too.  0 or -errno. */
ZN_API int zn_ckpt_manifest_write(const char *dir);

/* After files of a verified step directory were written or removed
 * (zinc consolidate writes the model's files into it): the manifest
 * again, files older than it kept as listed, newer ones hashed.  No
 * manifest: nothing is written (0).  0 or -errno. */
ZN_API int zn_ckpt_manifest_refresh(const char *dir);

/* Check the step directory `dir` against its manifest: every listed file
 * present, of its size and checksum (read once, in 8 MiB pieces).  0;
 * -ENODATA: no manifest (incomplete, or an older zinc's); -ENOENT: a
 * listed file is missing; -EBADMSG: a file differs (the message names the
 * file and, when one is at fault, the tensor); -EINVAL: the manifest does
 * not read. */
ZN_API int zn_ckpt_verify(const char *dir);

/* ---- run locks ------------------------------------------------------------ */

#define ZN_CKPT_LOCK "zinc.lock"      /* in checkpoint.dir */
#define ZN_SWAP_LOCK "zinc-swap.lock" /* in each nvme_path */

struct zn_run_lock;

/* Take the exclusive lock DIR/NAME (flock, created when missing; DIR
 * must exist) for run `run` (an identity all the processes of one run
 * share: rank 0's "PID@HOST").  The lock file holds the holder's pid and
 * run.  When another process of the same run holds it, nothing is taken
 * (*out NULL, 0): ranks of one run share the directory.  A lock file a
 * dead process left is taken over (the kernel released its flock).
 * `what` names the directory in messages ("checkpoint.dir").  0; -EBUSY
 * when another run holds it (the message names its pid and host, and
 * what to do); other -errno. */
ZN_API int zn_run_lock(const char *dir, const char *name, const char *what, const char *run,
		       struct zn_run_lock **out);

/* The lock file's path. */
ZN_API const char *zn_run_lock_path(const struct zn_run_lock *l);

/* Release (and remove) a lock; NULL is a no-op. */
ZN_API void zn_run_unlock(struct zn_run_lock *l);

/* Before a run trains: a file created and removed in `root`, or, when it
 * is not there yet, its nearest existing parent checked to be a directory
 * it can be made in (nothing is made), so that a directory the run cannot
 * write is said at the start, not after hours of training.  0 or -errno
 * (message set). */
ZN_API int zn_ckpt_check_dir(const char *root);

/* Keep the `keep` (at least 1) newest complete checkpoints under `root`
 * and remove every step directory older than the oldest of them; nothing
 * newer is removed, so a complete checkpoint goes only once `keep` newer
 * ones are complete.  Returns how many were removed, or -errno. */
ZN_API int zn_ckpt_prune(const char *root, unsigned keep);

#ifdef __cplusplus
}
#endif
#endif
