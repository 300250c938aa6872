/* A Hugging Face folder's index, model.safetensors.index.json
 * (engine/io/hf_read.c): its weight_map (tensor -> shard file) read, and
 * the shards it names opened.  The input is the index; the folder also
 * holds two small valid shards, a.safetensors (tensor "w", F32 [2]) and
 * b.safetensors ("v", BF16 [2, 2]), so an index may name real files as well
 * as missing ones; what it maps is then checked against a model's shapes
 * and read. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"
#include "zinc/hf.h"
#include "zinc/model.h"

static char dir[4200]; /* the folder; "" when it could not be made */

static int put_shard(const char *name, const char *header, const void *bytes, size_t n)
{
	unsigned char buf[256];
	size_t hl = strlen(header);
	char path[64];
	if (8 + hl + n > sizeof(buf))
		return -1;
	for (int i = 0; i < 8; i++) /* little-endian header length */
		buf[i] = (unsigned char)(hl >> (8 * i));
	memcpy(buf + 8, header, hl);
	memcpy(buf + 8 + hl, bytes, n);
	snprintf(path, sizeof(path), "model/%s", name);
	return fuzz_write(path, buf, 8 + hl + n) ? 0 : -1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const float w[2] = { 1.0f, -2.0f };
	static const unsigned char v[8] = { 0x80, 0x3f, 0, 0x40, 0, 0, 0x80, 0xbf };
	(void)argc;
	(void)argv;
	const char *model = fuzz_path("model");
	if (!model || mkdir(model, 0700) != 0)
		return 0;
	char folder[sizeof(dir)];
	snprintf(folder, sizeof(folder), "%s", model);
	if (put_shard("a.safetensors",
		      "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", w, 8) ||
	    put_shard("b.safetensors",
		      "{\"v\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[0,8]}}", v, 8))
		return 0;
	snprintf(dir, sizeof(dir), "%s", folder);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const names[] = { "w", "v", "x" };
	struct zn_hf_model *m;

	if (!dir[0] || !fuzz_write("model/model.safetensors.index.json", data, size))
		return 0;
	if (zn_hf_open(dir, &m) != 0)
		return 0;
	/* The shapes a model would ask for: w as it is, v as [4]. */
	struct zn_param_desc want[2] = {
		{ .name = "w", .ndim = 1, .shape = { 2, 1 }, .numel = 2 },
		{ .name = "v", .ndim = 1, .shape = { 4, 1 }, .numel = 4 },
	};
	(void)zn_hf_check(m, want, 2);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		const struct zn_st_tensor *t;
		float out[4];
		if (zn_hf_find(m, names[i], &t, NULL) == 0 && zn_hf_numel(m, names[i]) <= 4)
			(void)zn_hf_read_f32(m, names[i], out);
	}
	zn_hf_close(m);
	return 0;
}
