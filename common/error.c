/* Per-thread last-error messages. */
#include "zn_common.h"

#include <stdio.h>
#include <string.h>

#include "zn_build.h"

/* One message per thread: errors are reported by the thread that made the
 * failing call, so no locking is needed. */
static _Thread_local char last_error[4096]; /* a config file's errors at once fit */

const char *zn_version(void)
{
	return ZN_VERSION;
}

const char *zn_last_error(void)
{
	return last_error;
}

void zn_set_error_v(const char *fmt, va_list ap)
{
	char tmp[sizeof(last_error)];

	/* Format into a temporary first: the arguments may point into
	 * last_error itself (a message wrapped with more context). */
	vsnprintf(tmp, sizeof(tmp), fmt, ap);
	memcpy(last_error, tmp, sizeof(last_error));
}

void zn_set_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	zn_set_error_v(fmt, ap);
	va_end(ap);
}

void zn_set_error_str(const char *msg)
{
	zn_set_error("%s", msg);
}

int zn_error(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	zn_set_error_v(fmt, ap);
	va_end(ap);
	return err;
}

unsigned zn_edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	unsigned row[64 + 1];

	/* Keys are short; longer strings are simply "far". */
	if (la > 64 || lb > 64)
		return 1000;
	for (size_t j = 0; j <= lb; j++)
		row[j] = (unsigned)j;
	for (size_t i = 1; i <= la; i++) {
		unsigned diag = row[0];
		row[0] = (unsigned)i;
		for (size_t j = 1; j <= lb; j++) {
			unsigned up = row[j];
			unsigned cost = a[i - 1] == b[j - 1] ? 0 : 1;
			unsigned best = ZN_MIN(up + 1, row[j - 1] + 1);
			row[j] = ZN_MIN(best, diag + cost);
			diag = up;
		}
	}
	return row[lb];
}
