/* What the fuzz targets share: libFuzzer's entry points, declared once, and
 * a private scratch directory for the parsers that only take a path.
 *
 * Each target is one file with LLVMFuzzerTestOneInput.  It is linked either
 * with libFuzzer (meson -Dfuzz=enabled, clang) or with replay.c, which feeds
 * it every file of a corpus directory: the corpora run as ordinary tests in
 * every build, gcc's included.  A target returns 0 whatever the parser says:
 * the parser's errors are its answers; only a crash, a sanitizer report or a
 * leak is a finding.
 */
#ifndef ZN_FUZZ_H
#define ZN_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A directory of this process's own, made on the first call under $TMPDIR
 * (or /tmp) and removed with everything in it at exit; NULL when it could
 * not be made (the target then skips the input). */
const char *fuzz_dir(void);

/* Write `size` bytes to fuzz_dir()/name, replacing it; the path (static
 * storage, valid until the next call), or NULL on failure. */
const char *fuzz_write(const char *name, const void *data, size_t size);

/* fuzz_dir()/name, into a static buffer (valid until the next call). */
const char *fuzz_path(const char *name);

#endif
