/* Byte counts: parsing "1M"/"128K"/"1e8" and formatting "1 GiB". */
#include "zn_common.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "zinc/common.h"

int zn_parse_size(const char *text, uint64_t *out)
{
	const char *s = text;
	char *end;

	while (isspace((unsigned char)*s))
		s++;
	if (!isdigit((unsigned char)*s))
		return -EINVAL;

	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno == ERANGE)
		return -ERANGE;
	if (*end == '.' || *end == 'e' || *end == 'E') {
		/* DeepSpeed configs write element counts as 1e8 or 5e8. */
		double d = strtod(s, &end);
		if (!(d >= 0) || d != floor(d))
			return -EINVAL;
		if (d > 1.8e19) /* a number, past what 64 bits hold */
			return -ERANGE;
		v = (unsigned long long)d;
	}
	while (isspace((unsigned char)*end))
		end++;
	unsigned shift = 0;
	switch (toupper((unsigned char)*end)) {
	case 'K': shift = 10; break;
	case 'M': shift = 20; break;
	case 'G': shift = 30; break;
	case 'T': shift = 40; break;
	case '\0': break;
	default: return -EINVAL;
	}
	if (shift) {
		end++;
		/* Accept K, KB, KiB: all mean 1024 here, as in fio. */
		if (strcasecmp(end, "iB") == 0 || strcasecmp(end, "B") == 0)
			end += strlen(end);
	} else if (strcasecmp(end, "B") == 0) {
		end++;
	}
	while (isspace((unsigned char)*end))
		end++;
	if (*end)
		return -EINVAL;
	if (shift && v > (UINT64_MAX >> shift))
		return -ERANGE;
	*out = (uint64_t)v << shift;
	return 0;
}

char *zn_format_size(uint64_t bytes, char *buf, size_t len)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
	unsigned u = 0;
	double v = (double)bytes;

	while (v >= 1024.0 && u + 1 < ZN_ARRAY_SIZE(units)) {
		v /= 1024.0;
		u++;
	}
	if (u == 0 || v == floor(v))
		snprintf(buf, len, "%.0f %s", v, units[u]);
	else
		snprintf(buf, len, "%.1f %s", v, units[u]);
	return buf;
}
