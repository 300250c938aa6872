/* The config loader (engine/config/load.c): a YAML or JSON config file with
 * `--set KEY=VALUE` overrides.  The input is the file's text, then, after
 * each NUL byte, one override: "text\0a.b=1\0c=[2]" is the file "text" with
 * --set a.b=1 --set c=[2].  Each override's value is also read as a size
 * (zn_parse_size: "16MiB", "5e8"), as the command line's options are. */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "zinc/common.h"
#include "zinc/configfile.h"

#define MAX_SETS 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *copy = malloc(size + 1);
	const char *sets[MAX_SETS];
	size_t nsets = 0, text_len;
	struct zn_config cfg;

	if (!copy)
		return 0;
	memcpy(copy, data, size);
	copy[size] = 0;
	text_len = strlen(copy);
	for (size_t i = text_len; i < size && nsets < MAX_SETS; i++)
		if (copy[i] == 0)
			sets[nsets++] = copy + i + 1;
	/* The file's text alone, exactly as read (no NUL inside), then with
	 * the overrides. */
	(void)zn_config_load_string(copy, text_len, "fuzz.yaml", &cfg);
	if (nsets)
		(void)zn_config_load_string_set(copy, text_len, "fuzz.yaml", sets, nsets, &cfg);
	for (size_t i = 0; i < nsets; i++) {
		const char *eq = strchr(sets[i], '=');
		uint64_t v;
		(void)zn_parse_size(eq ? eq + 1 : sets[i], &v);
	}
	free(copy);
	return 0;
}
