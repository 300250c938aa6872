/* A checkpoint's manifest.json, as a resume and `zinc consolidate` read
 * it: the input is the manifest of a step directory holding two small
 * files, one safetensors file (its tensors' checksums are listed) and one
 * other.  zn_ckpt_committed reads the manifest's first bytes, zn_ckpt_verify
 * parses all of it and checks each listed file and tensor, and when the
 * manifest verifies, zn_ckpt_manifest_refresh writes it again (which must
 * verify in turn).  The step directory's files never change. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"
#include "io/manifest.h"
#include "zinc/checkpoint.h"

/* A safetensors file of two tensors, written by hand (8-byte header
 * length, the JSON header, the data). */
static const char st_header[] =
	"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
	"\"b\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[8,16]}}";
static const char other[] = "{\"model_type\": \"gpt2\"}\n";

/* The step directory, made once: "step" under the fuzz directory. */
static const char *step_dir(void)
{
	static int made;
	if (!made) {
		unsigned char st[8 + sizeof(st_header) - 1 + 16];
		uint64_t n = sizeof(st_header) - 1;
		for (int i = 0; i < 8; i++)
			st[i] = (unsigned char)(n >> (8 * i));
		memcpy(st + 8, st_header, n);
		for (int i = 0; i < 16; i++)
			st[8 + n + i] = (unsigned char)(i * 37 + 1);
		const char *dir = fuzz_path("step");
		if (!dir || (mkdir(dir, 0700) != 0 && errno != EEXIST) ||
		    !fuzz_write("step/model.safetensors", st, sizeof(st)) ||
		    !fuzz_write("step/config.json", other, sizeof(other) - 1))
			return NULL;
		made = 1;
	}
	return fuzz_path("step");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char dir[4096];
	const char *d;
	uint64_t ns;

	if (!fuzz_dir() || !(d = step_dir()))
		return 0;
	snprintf(dir, sizeof(dir), "%s", d);
	if (!fuzz_write("step/" ZN_CKPT_MANIFEST, data, size))
		return 0;
	(void)zn_ckpt_committed(dir, &ns);
	if (zn_ckpt_verify(dir) == 0) {
		/* A manifest that verifies is written again as zinc writes
		 * it, and that one verifies too. */
		if (zn_ckpt_manifest_refresh(dir) == 0 && zn_ckpt_verify(dir) != 0)
			abort();
	}
	return 0;
}
