/* Small helpers the benchmark commands share. */
#ifndef ZN_TOOLS_UTIL_H
#define ZN_TOOLS_UTIL_H

#include <stdint.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* CLOCK_MONOTONIC in nanoseconds and in seconds. */
uint64_t tool_now_ns(void);
double tool_now_s(void);

/* The median of v[0..n-1] (n <= 256; v is left as it is). */
double tool_median(const double *v, unsigned n);

/* When a run holds `dir`'s swap lock (a training run swapping there),
 * say so on stderr as `tool`: a benchmark there shares the disk with it.
 * The lock is only tried, never kept. */
void tool_warn_if_swapping(const char *tool, const char *dir);

#endif
