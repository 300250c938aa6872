/* Helpers shared by the C tests. */
#ifndef ZN_TESTUTIL_H
#define ZN_TESTUTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

/* A fresh directory under $ZINC_TEST_DIR (or the working directory) for
 * this test program; removed with everything in it by tu_scratch_cleanup.
 * Returns its path (static storage). */
const char *tu_scratch_dir(void);
void tu_scratch_cleanup(void);
/* Path of `name` inside the scratch directory (static rotating storage). */
const char *tu_path(const char *name);

/* Entries of directory `dir` whose names contain `needle` (and start with
 * `prefix` and end with `suffix` when those are not NULL); -1 when the
 * directory cannot be read. */
int tu_count_entries(const char *dir, const char *prefix, const char *needle,
		     const char *suffix);

/* Deterministic pseudo-random bytes (xorshift64*) from `seed`. */
void tu_fill_random(void *buf, size_t len, uint64_t seed);
uint64_t tu_rand(uint64_t *state);

/* Messages the library logged while a capture was active. */
void tu_log_capture_start(void);
/* Count of captured messages at `level` containing `needle` (NULL: any). */
int tu_log_count(int level, const char *needle);
void tu_log_capture_stop(void);

/* cmocka_run_group_tests, with TAP that meson reads right.  cmocka 1.1
 * writes a skipped test as "not ok N # SKIP name", which TAP consumers
 * (meson among them) count as a failure, and print_message text as bare
 * lines.  With CMOCKA_MESSAGE_OUTPUT=TAP this runs the group with standard
 * output through a filter that writes "ok N - name # SKIP" and turns any
 * line that is not TAP into a "# " comment; otherwise it is cmocka's own
 * run.  Returns what cmocka returns (the number of failed tests). */
int tu_run_group(const char *name, const struct CMUnitTest *tests, size_t n,
		 CMFixtureFunction setup, CMFixtureFunction teardown);
#define tu_run_group_tests(tests, setup, teardown)                                    \
	tu_run_group(#tests, tests, sizeof(tests) / sizeof((tests)[0]), setup, teardown)

#endif
