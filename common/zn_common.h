/* Private helpers every zinc module uses.  Not installed. */
#ifndef ZN_COMMON_PRIVATE_H
#define ZN_COMMON_PRIVATE_H

#define ZN_BUILDING_LIBRARY 1
#include "zinc/common.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#define ZN_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define ZN_MIN(a, b) ((a) < (b) ? (a) : (b))
#define ZN_MAX(a, b) ((a) > (b) ? (a) : (b))
#define ZN_DIV_ROUND_UP(n, d) (((n) + (d) - 1) / (d))
#define ZN_ALIGN_UP(x, a) ((((x) + (a) - 1) / (a)) * (a))
#define ZN_IS_POW2(x) ((x) != 0 && ((x) & ((x) - 1)) == 0)
#define ZN_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define ZN_UNUSED __attribute__((unused))
#define zn_likely(x) __builtin_expect(!!(x), 1)
#define zn_unlikely(x) __builtin_expect(!!(x), 0)

/* Return from the calling function with x's status when it is an error:
 * `ZN_TRY(zn_aio_wait(a, r));` for a call returning 0 or -errno. */
#define ZN_TRY(x)                               \
	do {                                    \
		int zn_try_rc_ = (x);           \
		if (zn_try_rc_)                 \
			return zn_try_rc_;      \
	} while (0)

/* Set the calling thread's last-error message and return `err` (a negative
 * errno), so failures read `return zn_error(-EINVAL, "...", ...);`. */
int zn_error(int err, const char *fmt, ...) ZN_PRINTF(2, 3);
/* The same, as a plain setter for constructors that return NULL. */
void zn_set_error(const char *fmt, ...) ZN_PRINTF(1, 2);
void zn_set_error_v(const char *fmt, va_list ap);
/* Copy a complete message (e.g. one recorded by a worker thread). */
void zn_set_error_str(const char *msg);

void zn_log(enum zn_log_level level, const char *fmt, ...) ZN_PRINTF(2, 3);
#define zn_warn(...) zn_log(ZN_LOG_WARN, __VA_ARGS__)
#define zn_info(...) zn_log(ZN_LOG_INFO, __VA_ARGS__)
#define zn_debug(...) zn_log(ZN_LOG_DEBUG, __VA_ARGS__)

/* One warning per cause and process: several modules meet the same limit
 * (the memory plan and each buffer pool say that buffers go unpinned under
 * RLIMIT_MEMLOCK), and the user needs to read it once.  True for the
 * first call with `topic`, false after (thread-safe); the others log at
 * info level. */
enum zn_once_topic { ZN_ONCE_UNPINNED, ZN_ONCE_TOPICS };
bool zn_log_first(enum zn_once_topic topic);

/* Monotonic clock in nanoseconds. */
static inline uint64_t zn_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* A source path (__FILE__, which the build gives relative to its own
 * folder: "../engine/device/cuda.c") as its last two parts,
 * "device/cuda.c": what the messages of the library-status macros (CUDA,
 * cuBLAS, NCCL, MPI) name, short and still unambiguous. */
static inline const char *zn_source_name(const char *file)
{
	const char *last = NULL, *prev = NULL;
	for (const char *p = file; *p; p++)
		if (*p == '/') {
			prev = last;
			last = p;
		}
	return prev ? prev + 1 : file;
}

/* Levenshtein distance, for "did you mean" suggestions on unknown keys. */
unsigned zn_edit_distance(const char *a, const char *b);

#endif
