#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "zinc/checkpoint.h"
#include "zinc/common.h"

uint64_t tool_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

double tool_now_s(void)
{
	return (double)tool_now_ns() / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

double tool_median(const double *v, unsigned n)
{
	double s[256];
	if (n == 0)
		return 0;
	if (n > 256)
		n = 256;
	memcpy(s, v, n * sizeof(*v));
	qsort(s, n, sizeof(*s), cmp_double);
	return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

void tool_warn_if_swapping(const char *tool, const char *dir)
{
	char host[64] = "", run[96];
	gethostname(host, sizeof(host) - 1);
	snprintf(run, sizeof(run), "%d@%s", (int)getpid(), host);
	struct zn_run_lock *lock = NULL;
	if (zn_run_lock(dir, ZN_SWAP_LOCK, "nvme_path", run, &lock) == -EBUSY)
		fprintf(stderr, "zinc %s: warning: %s; the figures below include that run's "
				"traffic\n",
			tool, zn_last_error());
	zn_run_unlock(lock);
}
