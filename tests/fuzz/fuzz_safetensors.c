/* The safetensors reader (engine/io/safetensors.c): the input is a whole
 * file (an 8-byte little-endian header length, the JSON header, the data);
 * every tensor it accepts is found by name and read back, and its metadata
 * looked up. */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "zinc/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *path = fuzz_write("fuzz.safetensors", data, size);
	struct zn_st_file *f;

	if (!path || !(f = zn_st_open(path)))
		return 0;
	for (size_t i = 0; i < zn_st_count(f); i++) {
		const struct zn_st_tensor *t = zn_st_get(f, i);
		if (zn_st_find(f, t->name) != t)
			abort(); /* names are unique: each finds itself */
		void *buf = malloc(t->bytes ? t->bytes : 1);
		if (buf) {
			/* The whole tensor, then past its end (an error). */
			(void)zn_st_read(t, 0, t->bytes, buf);
			(void)zn_st_read(t, t->bytes / 2, t->bytes - t->bytes / 2 + 1, buf);
			free(buf);
		}
	}
	(void)zn_st_metadata(f, "format");
	(void)zn_st_metadata(f, "zinc.model");
	zn_st_close(f);
	return 0;
}
