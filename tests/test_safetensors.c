/* safetensors: round trips, files written by an independent writer (Python's
 * json + struct, following the published format), and hostile files. */
#include "testutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "zinc/safetensors.h"

static void write_bytes(const char *path, const void *p, size_t n)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(p, 1, n, f), n);
	fclose(f);
}

static void test_round_trip(void **state)
{
	(void)state;
	float w[6] = { 1, -2, 3.5f, 0, 1e-30f, -0.0f };
	uint16_t h[3] = { 0x3f80, 0xbf80, 0x7fc0 };
	int32_t idx[2 * 2 * 2] = { 1, 2, 3, 4, 5, 6, 7, -8 };
	uint8_t scalar = 42;
	struct zn_st_tensor t[4] = {
		{ .name = "h.0.attn.c_attn.weight", .dtype = ZN_ST_F32, .ndim = 2, .shape = { 2, 3 },
		  .data = w, .bytes = sizeof(w) },
		{ .name = "wte \"quoted\"", .dtype = ZN_ST_BF16, .ndim = 1, .shape = { 3 }, .data = h,
		  .bytes = sizeof(h) },
		{ .name = "idx", .dtype = ZN_ST_I32, .ndim = 3, .shape = { 2, 2, 2 }, .data = idx,
		  .bytes = sizeof(idx) },
		{ .name = "step", .dtype = ZN_ST_U8, .ndim = 0, .data = &scalar, .bytes = 1 },
	};
	struct zn_st_meta meta[2] = { { "format", "pt" }, { "zinc", "step=7" } };
	const char *path = tu_path("rt.safetensors");
	assert_int_equal(zn_st_write(path, t, 4, meta, 2), 0);

	struct zn_st_file *f = zn_st_open(path);
	assert_non_null(f);
	assert_int_equal(zn_st_count(f), 4);
	for (int i = 0; i < 4; i++) {
		const struct zn_st_tensor *r = zn_st_find(f, t[i].name);
		assert_non_null(r);
		assert_int_equal(r->dtype, t[i].dtype);
		assert_int_equal(r->ndim, t[i].ndim);
		for (unsigned d = 0; d < r->ndim; d++)
			assert_int_equal(r->shape[d], t[i].shape[d]);
		assert_int_equal(r->bytes, t[i].bytes);
		assert_memory_equal(r->data, t[i].data, t[i].bytes);
		assert_int_equal((uintptr_t)r->data % 8 == 0 || t[i].dtype != ZN_ST_F32, 1);
	}
	/* File order is data order: as written. */
	assert_string_equal(zn_st_get(f, 0)->name, t[0].name);
	assert_null(zn_st_get(f, 4));
	assert_null(zn_st_find(f, "missing"));
	assert_string_equal(zn_st_metadata(f, "zinc"), "step=7");
	assert_null(zn_st_metadata(f, "nope"));
	zn_st_close(f);

	/* An independent reader agrees: Python parses what we wrote. */
	char cmd[8192];
	snprintf(cmd, sizeof(cmd),
		 "python3 -c \"import json,struct,sys; b=open('%s','rb').read(); "
		 "n=struct.unpack('<Q',b[:8])[0]; h=json.loads(b[8:8+n]); d=b[8+n:]; "
		 "e=h['h.0.attn.c_attn.weight']; s,t=e['data_offsets']; "
		 "v=struct.unpack('<6f',d[s:t]); "
		 "assert e['shape']==[2,3] and v[2]==3.5 and h['__metadata__']['format']=='pt', h; "
		 "assert (8+n)%%8==0\"",
		 path);
	assert_int_equal(system(cmd), 0);

	/* Bad arguments are refused before anything is written. */
	t[1].bytes = 4;
	assert_int_equal(zn_st_write(tu_path("bad.safetensors"), t, 4, NULL, 0), -EINVAL);
	t[1].bytes = sizeof(h);
	t[2].name = t[0].name;
	assert_int_equal(zn_st_write(tu_path("bad.safetensors"), t, 4, NULL, 0), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "twice"));
	assert_int_equal(access(tu_path("bad.safetensors"), F_OK), -1);
	assert_int_equal(zn_st_write(tu_path("no-dir/x.safetensors"), t, 1, NULL, 0), -ENOENT);
}

/* A file made by an independent writer, following the published format. */
/* The streamed writer: pieces of any size make the same file as the one-call
 * writer; too few or too many bytes fail and leave the old file alone. */
/* Two small files (under 8 KiB) hold the same bytes. */
static void same_files(const char *one, const char *two)
{
	FILE *f1 = fopen(one, "rb"), *f2 = fopen(two, "rb");
	assert_non_null(f1);
	assert_non_null(f2);
	static uint8_t x[8192], y[8192];
	size_t n1 = fread(x, 1, sizeof(x), f1), n2 = fread(y, 1, sizeof(y), f2);
	fclose(f1);
	fclose(f2);
	assert_int_equal(n1, n2);
	assert_memory_equal(x, y, n1);
}

static void test_streamed(void **state)
{
	(void)state;
	float a[1000], b[37];
	for (int i = 0; i < 1000; i++)
		a[i] = (float)i * 0.5f;
	for (int i = 0; i < 37; i++)
		b[i] = -(float)i;
	struct zn_st_tensor t[2] = {
		{ .name = "a", .dtype = ZN_ST_F32, .ndim = 2, .shape = { 10, 100 }, .data = a,
		  .bytes = sizeof(a) },
		{ .name = "b", .dtype = ZN_ST_F32, .ndim = 1, .shape = { 37 }, .data = b,
		  .bytes = sizeof(b) },
	};
	struct zn_st_meta meta[1] = { { "k", "v" } };
	const char *one = tu_path("one.safetensors");
	char streamed[4096];
	snprintf(streamed, sizeof(streamed), "%s", tu_path("streamed.safetensors"));
	assert_int_equal(zn_st_write(one, t, 2, meta, 1), 0);

	struct zn_st_writer *w;
	assert_int_equal(zn_st_writer_begin(streamed, t, 2, meta, 1, &w), 0);
	const uint8_t *p = (const uint8_t *)a;
	for (size_t off = 0; off < sizeof(a); off += 333)
		assert_int_equal(zn_st_writer_put(w, p + off, off + 333 <= sizeof(a) ? 333
										: sizeof(a) - off), 0);
	assert_int_equal(zn_st_writer_put(w, b, sizeof(b)), 0);
	assert_int_equal(zn_st_writer_end(w), 0);

	same_files(one, streamed);

	/* Short: end fails, the earlier file stays. */
	assert_int_equal(zn_st_writer_begin(streamed, t, 2, meta, 1, &w), 0);
	assert_int_equal(zn_st_writer_put(w, a, sizeof(a)), 0);
	assert_int_equal(zn_st_writer_end(w), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "header needs"));
	struct zn_st_file *sf = zn_st_open(streamed);
	assert_non_null(sf);
	assert_int_equal(zn_st_count(sf), 2);
	zn_st_close(sf);
	/* Too long: the put fails at once, and so does end. */
	assert_int_equal(zn_st_writer_begin(streamed, t, 2, meta, 1, &w), 0);
	assert_int_equal(zn_st_writer_put(w, a, sizeof(a)), 0);
	assert_int_equal(zn_st_writer_put(w, a, sizeof(a)), -EINVAL);
	assert_int_equal(zn_st_writer_end(w), -EINVAL);
	/* Abort: nothing left behind but the earlier file. */
	assert_int_equal(zn_st_writer_begin(streamed, t, 2, meta, 1, &w), 0);
	zn_st_writer_abort(w);
	sf = zn_st_open(streamed);
	assert_non_null(sf);
	zn_st_close(sf);
}

/* By place: the same file whatever order the pieces come in (here the
 * second tensor first, the first backwards in uneven pieces); out of a
 * tensor, or mixed with put, refused.  Read back by ranges. */
static void test_by_place(void **state)
{
	(void)state;
	static float a[1000], b[37];
	for (int i = 0; i < 1000; i++)
		a[i] = (float)i * 0.25f;
	for (int i = 0; i < 37; i++)
		b[i] = (float)i + 7;
	struct zn_st_tensor t[2] = {
		{ .name = "a", .dtype = ZN_ST_F32, .ndim = 1, .shape = { 1000 }, .data = a,
		  .bytes = sizeof(a) },
		{ .name = "b", .dtype = ZN_ST_F32, .ndim = 1, .shape = { 37 }, .data = b,
		  .bytes = sizeof(b) },
	};
	char whole[4096], placed[4096];
	snprintf(whole, sizeof(whole), "%s", tu_path("whole.safetensors"));
	snprintf(placed, sizeof(placed), "%s", tu_path("placed.safetensors"));
	assert_int_equal(zn_st_write(whole, t, 2, NULL, 0), 0);
	struct zn_st_writer *w;
	assert_int_equal(zn_st_writer_begin(placed, t, 2, NULL, 0, &w), 0);
	assert_int_equal(zn_st_writer_put_at(w, 1, 0, b, sizeof(b)), 0);
	for (uint64_t end = sizeof(a); end > 0;) {
		uint64_t begin = end > 444 ? end - 444 : 0;
		assert_int_equal(zn_st_writer_put_at(w, 0, begin, (const uint8_t *)a + begin,
						     end - begin), 0);
		end = begin;
	}
	assert_int_equal(zn_st_writer_end(w), 0);
	same_files(whole, placed);

	assert_int_equal(zn_st_writer_begin(placed, t, 2, NULL, 0, &w), 0);
	assert_int_equal(zn_st_writer_put_at(w, 1, 4, b, sizeof(b)), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "outside"));
	zn_st_writer_abort(w);
	assert_int_equal(zn_st_writer_begin(placed, t, 2, NULL, 0, &w), 0);
	assert_int_equal(zn_st_writer_put(w, a, 8), 0);
	assert_int_equal(zn_st_writer_put_at(w, 1, 0, b, 8), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "both"));
	zn_st_writer_abort(w);

	struct zn_st_file *f = zn_st_open(placed);
	assert_non_null(f);
	const struct zn_st_tensor *ta = zn_st_find(f, "a");
	float got[300];
	assert_int_equal(zn_st_read(ta, 4 * 500, sizeof(got), got), 0);
	assert_memory_equal(got, a + 500, sizeof(got));
	/* Read again after its pages were given back: the same bytes. */
	assert_int_equal(zn_st_read(ta, 0, sizeof(got), got), 0);
	assert_memory_equal(got, a, sizeof(got));
	assert_int_equal(zn_st_read(ta, 4 * 900, sizeof(got), got), -ERANGE);
	zn_st_close(f);
}

static void test_python_written(void **state)
{
	(void)state;
	const char *path = tu_path("py.safetensors");
	char cmd[8192];
	snprintf(cmd, sizeof(cmd),
		 "python3 -c \"import json,struct; "
		 "a=struct.pack('<4f',1,2,3,4); c=struct.pack('<3h',-1,0,7); "
		 "h={'b':{'dtype':'I16','shape':[3],'data_offsets':[16,22]},"
		 "'a':{'dtype':'F32','shape':[2,2],'data_offsets':[0,16]}}; "
		 "j=json.dumps(h).encode(); "
		 "open('%s','wb').write(struct.pack('<Q',len(j))+j+a+c)\"",
		 path);
	assert_int_equal(system(cmd), 0);
	struct zn_st_file *f = zn_st_open(path);
	assert_non_null(f);
	assert_string_equal(zn_st_get(f, 0)->name, "a"); /* sorted by offset */
	const struct zn_st_tensor *b = zn_st_find(f, "b");
	assert_int_equal(b->dtype, ZN_ST_I16);
	assert_int_equal(((const int16_t *)b->data)[2], 7);
	assert_true(((const float *)zn_st_find(f, "a")->data)[3] == 4.0f);
	zn_st_close(f);
}

static void expect_bad(const char *name, const void *bytes, size_t n, const char *needle)
{
	const char *path = tu_path(name);
	write_bytes(path, bytes, n);
	struct zn_st_file *f = zn_st_open(path);
	if (f) {
		zn_st_close(f);
		fail_msg("%s: opened a bad file", name);
	}
	if (needle && !strstr(zn_last_error(), needle))
		fail_msg("%s: message '%s' lacks '%s'", name, zn_last_error(), needle);
	assert_non_null(strstr(zn_last_error(), name));
}

static void with_header(char *out, size_t *n, const char *json, size_t data)
{
	uint64_t hl = strlen(json);
	memcpy(out, &hl, 8);
	memcpy(out + 8, json, hl);
	memset(out + 8 + hl, 0x11, data);
	*n = 8 + hl + data;
}

static void test_hostile_files(void **state)
{
	(void)state;
	char buf[1024];
	size_t n;

	expect_bad("short.st", "abc", 3, "shorter than 8 bytes");
	uint64_t huge = 1ull << 40;
	memcpy(buf, &huge, 8);
	expect_bad("huge.st", buf, 16, "header length");
	with_header(buf, &n, "[1,2]", 0);
	expect_bad("array.st", buf, n, "not a JSON object");
	with_header(buf, &n, "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], ", 0);
	expect_bad("badjson.st", buf, n, "bad JSON header");
	with_header(buf, &n, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8);
	expect_bad("truncated.st", buf, n, "past the end");
	with_header(buf, &n, "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,16]}}", 16);
	expect_bad("shape.st", buf, n, "disagree");
	with_header(buf, &n, "{\"a\":{\"dtype\":\"Q7\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16);
	expect_bad("dtype.st", buf, n, "unsupported dtype 'Q7'");
	with_header(buf, &n,
		    "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
		    "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
		    16);
	expect_bad("overlap.st", buf, n, "overlaps");
	with_header(buf, &n, "{\"a\":{\"dtype\":\"F32\",\"shape\":[-4],\"data_offsets\":[0,16]}}",
		    16);
	expect_bad("negative.st", buf, n, "non-negative");
	with_header(buf, &n, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4]}}", 16);
	expect_bad("nooffsets.st", buf, n, "missing");
	with_header(buf, &n,
		    "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
		    "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
		    2);
	expect_bad("dup.st", buf, n, "twice");
	assert_null(zn_st_open(tu_path("does-not-exist.st")));
	assert_non_null(strstr(zn_last_error(), "does-not-exist.st"));

	/* Random garbage after a plausible length never crashes. */
	uint64_t rs = 99;
	for (int i = 0; i < 300; i++) {
		uint64_t hl = tu_rand(&rs) % 200;
		memcpy(buf, &hl, 8);
		buf[8] = '{';
		for (size_t k = 9; k < 8 + hl + 64 && k < sizeof(buf); k++)
			buf[k] = "{}[]\":,0123456789aFds_ \\"[tu_rand(&rs) % 25];
		write_bytes(tu_path("fuzz.st"), buf, 8 + hl + 64);
		struct zn_st_file *f = zn_st_open(tu_path("fuzz.st"));
		zn_st_close(f);
	}
}

static int teardown(void **state)
{
	(void)state;
	tu_scratch_cleanup();
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_streamed),
		cmocka_unit_test(test_by_place),
		cmocka_unit_test(test_python_written),
		cmocka_unit_test(test_hostile_files),
	};
	return cmocka_run_group_tests(tests, NULL, teardown);
}
