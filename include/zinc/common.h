/* zinc — shared definitions of the public API: errors, logging, versions.
 *
 * Error rule, everywhere in zinc: a fallible call returns 0 (or a count) on
 * success and a negative errno value on failure; a constructor returns NULL.
 * Either way the calling thread's last-error message (zn_last_error) says what
 * was asked, what was found and what to do.  The library never prints and
 * never exits: warnings go to the log sink installed with zn_log_set_sink().
 */
#ifndef ZINC_COMMON_H
#define ZINC_COMMON_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(ZN_BUILDING_LIBRARY)
#define ZN_API __attribute__((visibility("default")))
#else
#define ZN_API
#endif

/* The library's version, "MAJOR.MINOR.PATCH". */
ZN_API const char *zn_version(void);

/* The calling thread's message for the most recent failure of a zinc call.
 * Never NULL; "" when nothing failed yet on this thread.  The text stays
 * valid until the next failing zinc call on the same thread. */
ZN_API const char *zn_last_error(void);

enum zn_log_level {
	ZN_LOG_ERROR = 0,
	ZN_LOG_WARN = 1,
	ZN_LOG_INFO = 2,
	ZN_LOG_DEBUG = 3,
};

/* Where log messages go.  `msg` has no trailing newline.  The sink may be
 * called from any zinc thread, concurrently; it must be thread-safe. */
typedef void (*zn_log_sink)(enum zn_log_level level, const char *msg, void *user);

/* Install a sink (NULL: messages are dropped, the default) and the most
 * verbose level passed to it.  Returns the previous sink. */
ZN_API zn_log_sink zn_log_set_sink(zn_log_sink sink, void *user, enum zn_log_level max_level);

/* A ready-made sink that writes "zinc: warning: msg" lines to stderr. */
ZN_API void zn_log_stderr_sink(enum zn_log_level level, const char *msg, void *user);

/* Parse a byte count: a decimal integer with an optional K, M, G or T suffix
 * (powers of 1024; "KiB", "MB"... are accepted, all binary) or a float with an
 * exponent ("1e8") when it is an integral value.  Returns 0 or -EINVAL
 * (malformed) / -ERANGE (overflow). */
ZN_API int zn_parse_size(const char *text, uint64_t *out);

/* Format bytes as "1 GiB", "128 KiB", "1.5 MiB" into buf; returns buf. */
ZN_API char *zn_format_size(uint64_t bytes, char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
