/* The token shard reader: batches, order, splits, resume, and bad files. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "testutil.h"
#include "zinc/data.h"

/* ---- helpers ------------------------------------------------------------ */

#define ZN_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Write a shard with an arbitrary header: magic, version, the header's
 * token count, then `n` tokens (which may disagree with the header). */
static const char *write_raw(const char *name, int32_t magic, int32_t version, int32_t hdr_ntok,
			     const uint16_t *tok, size_t n)
{
	const char *path = tu_path(name);
	int32_t h[ZN_DATA_HEADER_INTS] = { magic, version, hdr_ntok };
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(h, sizeof(h), 1, f), 1);
	if (n)
		assert_int_equal(fwrite(tok, sizeof(*tok), n, f), n);
	assert_int_equal(fclose(f), 0);
	return path;
}

static const char *write_shard(const char *name, const uint16_t *tok, size_t n)
{
	return write_raw(name, ZN_DATA_MAGIC, ZN_DATA_VERSION, (int32_t)n, tok, n);
}

/* Tokens first, first+1, ...: every window's first input names it. */
static uint16_t *counting(uint16_t first, size_t n)
{
	uint16_t *t = malloc(n * sizeof(*t));
	assert_non_null(t);
	for (size_t i = 0; i < n; i++)
		t[i] = (uint16_t)(first + i);
	return t;
}

static struct zn_data_options opts(const char *pattern, uint32_t B, uint32_t T)
{
	return (struct zn_data_options){ .pattern = pattern, .B = B, .T = T, .seed = 1 };
}

/* Open must fail with a message holding every needle (NULL-terminated). */
static void expect_open_error(const struct zn_data_options *o, ...)
{
	va_list ap;
	struct zn_data *d = zn_data_open(o);
	if (d) {
		zn_data_close(d);
		fail_msg("zn_data_open(%s) succeeded", o->pattern);
	}
	const char *msg = zn_last_error();
	va_start(ap, o);
	for (const char *n; (n = va_arg(ap, const char *));)
		if (!strstr(msg, n))
			fail_msg("message lacks '%s': %s", n, msg);
	va_end(ap);
}

/* The first input of the next batch (which names the window). */
static int32_t next_first(struct zn_data *d, uint32_t bt)
{
	int32_t *in = malloc(bt * sizeof(*in)), *tg = malloc(bt * sizeof(*tg));
	assert_non_null(in);
	assert_non_null(tg);
	assert_int_equal(zn_data_next_batch(d, in, tg), 0);
	int32_t v = in[0];
	for (uint32_t i = 0; i + 1 < bt; i++)
		assert_int_equal(tg[i], in[i + 1]);
	free(in);
	free(tg);
	return v;
}

/* ---- batches ------------------------------------------------------------ */

static void test_sequential_batches(void **state)
{
	(void)state;
	const uint32_t B = 2, T = 8, BT = B * T;
	size_t n = 3 * BT + 1 + 5; /* 3 windows and 5 spare tokens */
	uint16_t *tok = counting(100, n);
	const char *path = write_shard("seq.bin", tok, n);
	struct zn_data_options o = opts(path, B, T);
	struct zn_data *d = zn_data_open(&o);
	assert_non_null(d);
	assert_int_equal(zn_data_batches_per_epoch(d), 3);
	assert_int_equal(zn_data_num_shards(d), 1);
	assert_int_equal(zn_data_num_tokens(d), n);
	assert_string_equal(zn_data_current_file(d), path);

	int32_t in[16], tg[16];
	for (int epoch = 0; epoch < 2; epoch++) {
		for (uint32_t k = 0; k < 3; k++) {
			assert_int_equal(zn_data_epoch(d), (uint64_t)epoch);
			assert_int_equal(zn_data_next_batch(d, in, tg), 0);
			for (uint32_t i = 0; i < BT; i++) {
				assert_int_equal(in[i], tok[k * BT + i]);
				assert_int_equal(tg[i], tok[k * BT + i + 1]);
			}
		}
		assert_int_equal(zn_data_epoch(d), (uint64_t)epoch + 1);
	}
	/* The raw window: B*T+1 tokens. */
	uint16_t w[17];
	zn_data_rewind(d);
	assert_int_equal(zn_data_epoch(d), 0);
	assert_int_equal(zn_data_next_window(d, w), 0);
	assert_memory_equal(w, tok, sizeof(w));
	assert_int_equal(zn_data_next_window(d, w), 0);
	assert_memory_equal(w, tok + BT, sizeof(w));
	zn_data_close(d);
	free(tok);
}

static void test_several_shards_in_glob_order(void **state)
{
	(void)state;
	const uint32_t BT = 4;
	uint16_t *a = counting(1000, 2 * BT + 1), *b = counting(2000, 3 * BT + 1);
	write_shard("multi_b.bin", b, 3 * BT + 1); /* written first, globbed second */
	write_shard("multi_a.bin", a, 2 * BT + 1);
	struct zn_data_options o = opts(tu_path("multi_*.bin"), 1, BT);
	struct zn_data *d = zn_data_open(&o);
	assert_non_null(d);
	assert_int_equal(zn_data_num_shards(d), 2);
	assert_int_equal(zn_data_batches_per_epoch(d), 5);
	const int32_t want[] = { 1000, 1004, 2000, 2004, 2008, 1000 };
	for (size_t i = 0; i < 6; i++) {
		if (i == 2)
			assert_non_null(strstr(zn_data_current_file(d), "multi_b.bin"));
		assert_int_equal(next_first(d, BT), want[i]);
	}
	zn_data_close(d);
	free(a);
	free(b);
}

/* ---- order -------------------------------------------------------------- */

/* Three shards of 4, 5, 6 windows (B*T = 8), tokens unique everywhere. */
static const char *three_shards(void)
{
	const uint32_t BT = 8;
	const unsigned wins[3] = { 4, 5, 6 };
	uint16_t first = 1;
	for (int s = 0; s < 3; s++) {
		char name[32];
		size_t n = wins[s] * BT + 1;
		uint16_t *t = counting(first, n);
		snprintf(name, sizeof(name), "order_%d.bin", s);
		write_shard(name, t, n);
		first = (uint16_t)(first + n);
		free(t);
	}
	return tu_path("order_*.bin");
}

/* First inputs of the next n batches of B*T = bt tokens. */
static void read_firsts(struct zn_data *d, uint32_t bt, int32_t *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		v[i] = next_first(d, bt);
}

static int cmp_i32(const void *a, const void *b)
{
	int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
	return (x > y) - (x < y);
}

static void test_shuffle_determinism(void **state)
{
	(void)state;
	const char *pat = three_shards();
	struct zn_data_options o = opts(pat, 2, 4);
	int32_t seq[15], a[45], b[45], c[45];

	/* Unshuffled: the reference set of windows. */
	struct zn_data *d = zn_data_open(&o);
	assert_non_null(d);
	read_firsts(d, 8, seq, 15);
	zn_data_close(d);

	o.shuffle = true;
	o.seed = 42;
	d = zn_data_open(&o);
	assert_non_null(d);
	read_firsts(d, 8, a, 45); /* three epochs */
	assert_int_equal(zn_data_epoch(d), 3);
	zn_data_close(d);
	d = zn_data_open(&o);
	read_firsts(d, 8, b, 45);
	zn_data_close(d);
	assert_memory_equal(a, b, sizeof(a)); /* same seed, same batches */

	o.seed = 43;
	d = zn_data_open(&o);
	read_firsts(d, 8, c, 45);
	zn_data_close(d);
	assert_memory_not_equal(a, c, sizeof(a)); /* another seed, other batches */

	/* Each epoch is a permutation of all windows, not the plain order,
	 * and epochs differ from each other. */
	for (int e = 0; e < 3; e++) {
		int32_t s[15];
		memcpy(s, a + 15 * e, sizeof(s));
		assert_memory_not_equal(s, seq, sizeof(s));
		qsort(s, 15, sizeof(s[0]), cmp_i32);
		assert_memory_equal(s, seq, sizeof(s)); /* seq is sorted already */
	}
	assert_memory_not_equal(a, a + 15, sizeof(seq));
}

static void test_resume(void **state)
{
	(void)state;
	const char *pat = three_shards();
	struct zn_data_options o = opts(pat, 2, 4);
	o.shuffle = true;
	o.seed = 7;
	int32_t want[40], got[40];
	struct zn_data_pos pos;

	for (size_t at = 0; at < 32; at += 5) { /* positions inside, at ends of epochs */
		struct zn_data *d = zn_data_open(&o);
		assert_non_null(d);
		int32_t skip[32];
		read_firsts(d, 8, skip, at);
		zn_data_tell(d, &pos);
		read_firsts(d, 8, want, 40);
		zn_data_close(d);

		d = zn_data_open(&o);
		assert_int_equal(zn_data_seek(d, &pos), 0);
		assert_int_equal(zn_data_epoch(d), at / 15);
		read_firsts(d, 8, got, 40);
		assert_memory_equal(want, got, sizeof(want));
		zn_data_close(d);
	}

	/* A position from other options is refused, with the reason. */
	o.seed = 8;
	struct zn_data *d = zn_data_open(&o);
	assert_int_equal(zn_data_seek(d, &pos), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "another data set or other data options"));
	struct zn_data_pos bad = pos;
	bad.magic ^= 1;
	assert_int_equal(zn_data_seek(d, &bad), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "damaged"));
	zn_data_tell(d, &bad);
	bad.version = 99;
	assert_int_equal(zn_data_seek(d, &bad), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "version 99"));
	zn_data_close(d);
}

/* ---- data parallel ranks ------------------------------------------------ */

static void test_ranks(void **state)
{
	(void)state;
	const char *pat = three_shards(); /* windows of 8 tokens */
	/* Ranks take turns along the stream one rank reads: with two ranks,
	 * rank r serves windows 2i + r of it, epochs and shards included. */
	struct zn_data_options o = opts(pat, 2, 4);
	o.shuffle = true;
	o.seed = 3;
	struct zn_data *one = zn_data_open(&o);
	o.world = 2;
	o.rank = 0;
	struct zn_data *r0 = zn_data_open(&o);
	o.rank = 1;
	struct zn_data *r1 = zn_data_open(&o);
	assert_non_null(one);
	assert_non_null(r0);
	assert_non_null(r1);
	assert_int_equal(zn_data_batches_per_epoch(r0), zn_data_batches_per_epoch(one));
	struct zn_data_pos p0, p1, p;
	for (int b = 0; b < 40; b++) {
		int32_t in[2][8], tg[2][8], a_in[8], a_tg[8], b_in[8], b_tg[8];
		for (int k = 0; k < 2; k++)
			assert_int_equal(zn_data_next_batch(one, in[k], tg[k]), 0);
		assert_int_equal(zn_data_next_batch(r0, a_in, a_tg), 0);
		assert_int_equal(zn_data_next_batch(r1, b_in, b_tg), 0);
		assert_memory_equal(in[0], a_in, sizeof(a_in));
		assert_memory_equal(in[1], b_in, sizeof(b_in));
		assert_memory_equal(tg[0], a_tg, sizeof(a_tg));
		assert_memory_equal(tg[1], b_tg, sizeof(b_tg));
		/* One position serves every rank, and means the same as one
		 * rank's: a run resumes on another number of ranks. */
		zn_data_tell(r0, &p0);
		zn_data_tell(r1, &p1);
		zn_data_tell(one, &p);
		assert_memory_equal(&p0, &p1, sizeof(p0));
		assert_memory_equal(&p0, &p, sizeof(p0));
	}
	assert_true(zn_data_epoch(one) > 0); /* the rounds crossed epochs */
	zn_data_close(one);
	zn_data_close(r0);
	zn_data_close(r1);

	o.rank = 2;
	expect_open_error(&o, "rank 2 is not below world 2", NULL);
	o.rank = 0;
	o.world = 3;
	o.B = 4;
	o.T = 16; /* 4*16+1 = 65 tokens, order_0.bin has 4*8+1 = 33 */
	expect_open_error(&o, "order_0.bin", "B*T+1 = 65", NULL);
}

/* ---- validation split --------------------------------------------------- */

static void test_val_split(void **state)
{
	(void)state;
	const uint32_t BT = 4;
	uint16_t *t = counting(1, 10 * BT + 1); /* 10 windows */
	const char *path = write_shard("split.bin", t, 10 * BT + 1);
	struct zn_data_options o = opts(path, 1, BT);
	o.val_fraction = 0.15; /* ceil(1.5) = 2 windows */

	o.split = ZN_DATA_TRAIN;
	struct zn_data *tr = zn_data_open(&o);
	assert_non_null(tr);
	assert_int_equal(zn_data_batches_per_epoch(tr), 8);
	for (uint32_t k = 0; k < 8; k++)
		assert_int_equal(next_first(tr, BT), 1 + k * BT);
	assert_int_equal(zn_data_epoch(tr), 1);
	zn_data_close(tr);

	o.split = ZN_DATA_VAL;
	struct zn_data *va = zn_data_open(&o);
	assert_non_null(va);
	assert_int_equal(zn_data_batches_per_epoch(va), 2);
	assert_int_equal(next_first(va, BT), 1 + 8 * BT);
	assert_int_equal(next_first(va, BT), 1 + 9 * BT);
	assert_int_equal(next_first(va, BT), 1 + 8 * BT); /* wraps */
	zn_data_close(va);

	/* Shuffled, the splits still partition the windows. */
	o.shuffle = true;
	o.split = ZN_DATA_TRAIN;
	tr = zn_data_open(&o);
	int32_t v[10];
	read_firsts(tr, BT, v, 8);
	zn_data_close(tr);
	o.split = ZN_DATA_VAL;
	va = zn_data_open(&o);
	v[8] = next_first(va, BT);
	v[9] = next_first(va, BT);
	zn_data_close(va);
	qsort(v, 8, sizeof(v[0]), cmp_i32);
	for (int k = 0; k < 8; k++)
		assert_int_equal(v[k], 1 + k * (int)BT);
	assert_true((v[8] == 33 && v[9] == 37) || (v[8] == 37 && v[9] == 33));

	/* ALL ignores the fraction. */
	o.split = ZN_DATA_ALL;
	struct zn_data *all = zn_data_open(&o);
	assert_int_equal(zn_data_batches_per_epoch(all), 10);
	zn_data_close(all);

	/* The validation split needs a fraction; a one-window shard has no
	 * validation window (training keeps at least one). */
	o.split = ZN_DATA_VAL;
	o.val_fraction = 0;
	expect_open_error(&o, "val_fraction > 0", NULL);
	const char *one = write_shard("one.bin", t, BT + 1);
	o = opts(one, 1, BT);
	o.split = ZN_DATA_VAL;
	o.val_fraction = 0.5;
	expect_open_error(&o, one, "no window", "validation", NULL);
	o.val_fraction = 1.0;
	expect_open_error(&o, "outside [0, 1)", NULL);
	free(t);
}

/* ---- bad input ---------------------------------------------------------- */

static void test_bad_files(void **state)
{
	(void)state;
	const uint32_t BT = 4;
	uint16_t *t = counting(1, 64);
	struct zn_data_options o;
	const char *p;

	o = opts(tu_path("nothing_*.bin"), 1, BT);
	expect_open_error(&o, "no data shard matches", "nothing_*.bin", "zinc prepare-data", NULL);
	o = opts(tu_path("missing.bin"), 1, BT);
	expect_open_error(&o, "no data shard matches", "missing.bin", NULL);

	p = write_raw("badmagic.bin", 0x464c457f, 1, 20, t, 20);
	o = opts(p, 1, BT);
	expect_open_error(&o, p, "not an llm.c token shard", "1179403647", "20240520",
			  "zinc prepare-data", NULL);

	p = write_raw("llama3v6.bin", ZN_DATA_MAGIC_U32, 6, 20, t, 40);
	o = opts(p, 1, BT);
	expect_open_error(&o, p, "version 6", "version 7 (uint32 tokens)", NULL);

	p = write_raw("llama3trunc.bin", ZN_DATA_MAGIC_U32, 7, 20, t, 20); /* 20 uint32 = 80 B */
	o = opts(p, 1, BT);
	expect_open_error(&o, p, "header says 20 tokens (1104 bytes", "truncated", NULL);

	p = write_raw("v2.bin", ZN_DATA_MAGIC, 2, 20, t, 20);
	o = opts(p, 1, BT);
	expect_open_error(&o, p, "version 2", "zinc reads version 1", NULL);

	p = write_raw("trunc.bin", ZN_DATA_MAGIC, 1, 40, t, 30);
	o = opts(p, 1, BT);
	expect_open_error(&o, p, "header says 40 tokens", "1104 bytes", "truncated", NULL);

	p = write_raw("trail.bin", ZN_DATA_MAGIC, 1, 20, t, 21);
	o = opts(p, 1, BT);
	expect_open_error(&o, p, "trailing bytes", NULL);

	p = write_raw("zero.bin", ZN_DATA_MAGIC, 1, 0, t, 0);
	o = opts(p, 1, BT);
	expect_open_error(&o, p, "header says 0 tokens", NULL);

	p = write_raw("neg.bin", ZN_DATA_MAGIC, 1, -5, t, 0);
	o = opts(p, 1, BT);
	expect_open_error(&o, p, "header says -5 tokens", NULL);

	p = tu_path("short.bin");
	FILE *f = fopen(p, "wb");
	fputs("hello, world\n", f);
	fclose(f);
	o = opts(p, 1, BT);
	expect_open_error(&o, p, "not an llm.c token shard", "13 bytes", "zinc prepare-data", NULL);

	p = write_shard("small.bin", t, 2 * BT); /* one window needs 2*BT+1 at B=2 */
	o = opts(p, 2, BT);
	expect_open_error(&o, p, "fewer than one window", "B*T+1 = 9", NULL);
	o = opts(p, 1, BT);
	struct zn_data *d = zn_data_open(&o);
	assert_non_null(d); /* but fine at B=1 */
	zn_data_close(d);

	/* A bad shard among good ones is named. */
	write_shard("mixed_0.bin", t, 20);
	p = write_raw("mixed_1.bin", 12345, 1, 20, t, 20);
	o = opts(tu_path("mixed_*.bin"), 1, BT);
	expect_open_error(&o, p, "12345", NULL);

	/* A directory caught by the glob. */
	assert_int_equal(mkdir(tu_path("dir_x.bin"), 0755), 0);
	o = opts(tu_path("dir_*.bin"), 1, BT);
	expect_open_error(&o, "dir_x.bin", "not a regular file", NULL);

	/* Bad options. */
	o = opts(tu_path("small.bin"), 0, BT);
	expect_open_error(&o, "B=0", NULL);
	o = opts(NULL, 1, BT);
	expect_open_error(&o, "no data pattern", NULL);
	free(t);
}

static void test_vocab_check(void **state)
{
	(void)state;
	const uint32_t BT = 4;
	uint16_t t[3 * 4 + 1];
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		t[i] = (uint16_t)(i * 7 % 256);
	t[9] = 300; /* windows are t[0..4], t[4..8], t[8..12]: the third */
	const char *p = write_shard("vocab.bin", t, 3 * BT + 1);
	struct zn_data_options o = opts(p, 1, BT);
	o.vocab_size = 256;
	/* Found when the loader opens, though the first two windows are
	 * good: named by the shard and the position, not at the step that
	 * reaches it. */
	expect_open_error(&o, p, "token 300 at index 9", "vocab_size 256", NULL);
	/* A bad token in a window served later is found the same way: the
	 * check reads the whole shard, not the windows the position reaches. */
	uint16_t big[40000 + 1];
	for (size_t i = 0; i < ZN_ARRAY_LEN(big); i++)
		big[i] = (uint16_t)(i % 256);
	big[37137] = 256;
	const char *pb = write_shard("vocab_big.bin", big, ZN_ARRAY_LEN(big));
	struct zn_data_options ob = opts(pb, 1, BT);
	ob.vocab_size = 256;
	expect_open_error(&ob, pb, "token 256 at index 37137", NULL);
	int32_t in[4], tg[4];
	struct zn_data *d;

	o.vocab_size = 301; /* fits */
	d = zn_data_open(&o);
	for (int k = 0; k < 3; k++)
		assert_int_equal(zn_data_next_batch(d, in, tg), 0);
	assert_int_equal(tg[0], 300);
	zn_data_close(d);
}

/* ---- uint32 (llm.c llama-3) shards ---------------------------------------- */

static void test_uint32_shards(void **state)
{
	(void)state;
	const uint32_t BT = 4;
	uint32_t t[2 * 4 + 1];
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		t[i] = 100000 + (uint32_t)i * 1000; /* beyond uint16 */
	const char *p = write_raw("l3_0.bin", ZN_DATA_MAGIC_U32, ZN_DATA_VERSION_U32,
				  (int32_t)ZN_ARRAY_LEN(t), (const uint16_t *)t,
				  2 * ZN_ARRAY_LEN(t));
	uint16_t *small = counting(7, BT + 1);
	write_shard("l3_1.bin", small, BT + 1); /* uint16 and uint32 shards mix */
	struct zn_data_options o = opts(tu_path("l3_*.bin"), 1, BT);
	o.vocab_size = 128256; /* Llama 3 */
	struct zn_data *d = zn_data_open(&o);
	assert_non_null(d);
	assert_int_equal(zn_data_batches_per_epoch(d), 3);
	int32_t in[4], tg[4];
	for (uint32_t k = 0; k < 2; k++) {
		assert_int_equal(zn_data_next_batch(d, in, tg), 0);
		for (uint32_t i = 0; i < BT; i++) {
			assert_int_equal(in[i], t[k * BT + i]);
			assert_int_equal(tg[i], t[k * BT + i + 1]);
		}
	}
	assert_int_equal(zn_data_next_batch(d, in, tg), 0);
	assert_int_equal(in[0], 7);
	/* The uint16 window cannot carry these tokens: refused, not cut. */
	uint16_t w[5];
	assert_int_equal(zn_data_next_window(d, w), -ERANGE);
	assert_non_null(strstr(zn_last_error(), "zn_data_next_batch"));
	zn_data_close(d);

	o.vocab_size = 50257; /* GPT-2: too small */
	expect_open_error(&o, "token 100000 at index 0 is >= vocab_size 50257", NULL);

	/* Without a vocabulary, tokens >= 2^31 still cannot become int32. */
	t[3] = 0x80000000u;
	write_raw("l3_0.bin", ZN_DATA_MAGIC_U32, ZN_DATA_VERSION_U32, (int32_t)ZN_ARRAY_LEN(t),
		  (const uint16_t *)t, 2 * ZN_ARRAY_LEN(t));
	o.vocab_size = 0;
	expect_open_error(&o, "token 2147483648 at index 3", NULL);
	free(small);
	(void)p;
}

/* ---- loss mask ---------------------------------------------------------- */

static const char *write_mask(const char *name, int32_t magic, int32_t version, int32_t hdr_ntok,
			      const uint8_t *m, size_t n)
{
	const char *path = tu_path(name);
	int32_t h[ZN_DATA_HEADER_INTS] = { magic, version, hdr_ntok };
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(h, sizeof(h), 1, f), 1);
	if (n)
		assert_int_equal(fwrite(m, 1, n, f), n);
	assert_int_equal(fclose(f), 0);
	return path;
}

static void test_loss_mask(void **state)
{
	(void)state;
	const uint32_t BT = 8;
	const size_t n = 2 * BT + 1;
	uint16_t *t = counting(10, n);
	uint8_t m[2 * 8 + 1];
	for (size_t j = 0; j < n; j++)
		m[j] = (uint8_t)((j / 3) % 2); /* prompt / answer stripes */
	write_shard("masked_0.bin", t, n);
	write_mask("masked_0.mask", ZN_DATA_MASK_MAGIC, 1, (int32_t)n, m, n);
	write_shard("masked_1.bin", t, n); /* no sidecar: every target counts */
	struct zn_data_options o = opts(tu_path("masked_*.bin"), 1, BT);
	struct zn_data *d = zn_data_open(&o);
	assert_non_null(d);
	assert_int_equal(zn_data_num_masked_shards(d), 1);
	int32_t in[8], tg[8];
	for (uint32_t k = 0; k < 2; k++) {
		assert_int_equal(zn_data_next_batch(d, in, tg), 0);
		for (uint32_t i = 0; i < BT; i++) {
			size_t j = k * BT + i + 1; /* the predicted token */
			assert_int_equal(in[i], t[j - 1]);
			assert_int_equal(tg[i], m[j] ? t[j] : -1);
		}
	}
	for (uint32_t k = 0; k < 2; k++) {
		assert_int_equal(zn_data_next_batch(d, in, tg), 0);
		for (uint32_t i = 0; i < BT; i++)
			assert_int_equal(tg[i], t[k * BT + i + 1]);
	}
	uint16_t w[9];
	assert_int_equal(zn_data_next_window(d, w), 0); /* raw: no mask */
	assert_memory_equal(w, t, sizeof(w));
	zn_data_close(d);

	/* A glob that catches the masks says what they are. */
	o.pattern = tu_path("masked_*");
	expect_open_error(&o, "masked_0.mask", "is a zinc loss mask, not a token shard", NULL);

	/* Bad sidecars, each named. */
	const char *shard = write_shard("mbad.bin", t, n);
	o = opts(shard, 1, BT);
	const char *mp = write_mask("mbad.mask", 1234, 1, (int32_t)n, m, n);
	expect_open_error(&o, mp, "not a zinc loss mask", "20240524", NULL);
	write_mask("mbad.mask", ZN_DATA_MASK_MAGIC, 3, (int32_t)n, m, n);
	expect_open_error(&o, mp, "version 3", NULL);
	write_mask("mbad.mask", ZN_DATA_MASK_MAGIC, 1, (int32_t)n - 1, m, n - 1);
	expect_open_error(&o, mp, "another shard", NULL);
	write_mask("mbad.mask", ZN_DATA_MASK_MAGIC, 1, (int32_t)n, m, n - 1);
	expect_open_error(&o, mp, "truncated", NULL);
	m[5] = 2;
	write_mask("mbad.mask", ZN_DATA_MASK_MAGIC, 1, (int32_t)n, m, n);
	d = zn_data_open(&o);
	assert_non_null(d);
	assert_int_equal(zn_data_next_batch(d, in, tg), -ERANGE);
	assert_non_null(strstr(zn_last_error(), "value 2 at index 5"));
	assert_non_null(strstr(zn_last_error(), shard));
	zn_data_close(d);
	free(t);
}

/* ---- shards made by `zinc prepare-data` --------------------------------- */

static void test_prepared_by_zinc(void **state)
{
	(void)state;
	const char *zinc = getenv("ZINC_BIN");
	if (!zinc || access(zinc, X_OK) != 0)
		skip(); /* run through meson, which sets ZINC_BIN */
	char text[3000], cmd[8192];
	for (size_t i = 0; i < sizeof(text); i++)
		text[i] = (char)('a' + i * 7 % 26);
	const char *in = tu_path("prep.txt");
	FILE *f = fopen(in, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, sizeof(text), f), sizeof(text));
	fclose(f);
	snprintf(cmd, sizeof(cmd), "'%s' prepare-data --out '%s' --shard-tokens 1000 "
		 "--val-fraction 0.1 '%s' >/dev/null", zinc, tu_path("prep"), in);
	assert_int_equal(system(cmd), 0);

	/* 3001 tokens (separator 0, then the text): val is the last 301,
	 * train 2700 in shards of 1000, 1000, 700. */
	struct zn_data_options o = opts(tu_path("prep/data_train_*.bin"), 2, 16);
	o.vocab_size = 256;
	struct zn_data *d = zn_data_open(&o);
	assert_non_null(d);
	assert_int_equal(zn_data_num_shards(d), 3);
	assert_int_equal(zn_data_num_tokens(d), 2700);
	assert_int_equal(zn_data_batches_per_epoch(d), 31 + 31 + 21);
	int32_t in32[32], tg[32];
	assert_int_equal(zn_data_next_batch(d, in32, tg), 0);
	assert_int_equal(in32[0], 0);
	for (int i = 1; i < 32; i++)
		assert_int_equal(in32[i], text[i - 1]);
	assert_int_equal(tg[31], text[31]);
	zn_data_close(d);

	o.pattern = tu_path("prep/data_val_*.bin");
	d = zn_data_open(&o);
	assert_non_null(d);
	assert_int_equal(zn_data_num_tokens(d), 301);
	assert_int_equal(zn_data_next_batch(d, in32, tg), 0);
	assert_int_equal(in32[0], text[2699]); /* token 2700 of the stream */
	zn_data_close(d);
}

/* ---- hostile files ------------------------------------------------------ */

static void test_fuzz(void **state)
{
	(void)state;
	uint64_t rng = 12345;
	const char *p = tu_path("fuzz.bin");
	char mp[4096];
	snprintf(mp, sizeof(mp), "%s", tu_path("fuzz.mask"));
	uint8_t buf[4096 + 64];
	int opened = 0, masked = 0, wide = 0;

	for (int it = 0; it < 2000; it++) {
		size_t len = tu_rand(&rng) % sizeof(buf);
		tu_fill_random(buf, len, tu_rand(&rng));
		/* Most iterations look nearly right, to reach the deeper checks. */
		unsigned kind = (unsigned)(tu_rand(&rng) % 4);
		bool u32_file = false;
		if (kind >= 1 && len >= 12) {
			bool u32 = tu_rand(&rng) % 3 == 0;
			int32_t h[3] = { u32 ? ZN_DATA_MAGIC_U32 : ZN_DATA_MAGIC,
					 kind == 1 ? (int32_t)tu_rand(&rng) : u32 ? 7 : 1, 0 };
			if (kind == 3 && len >= ZN_DATA_HEADER_BYTES)
				h[2] = (int32_t)((len - ZN_DATA_HEADER_BYTES) / (u32 ? 4 : 2));
			else
				h[2] = (int32_t)tu_rand(&rng);
			if (kind == 3)
				len = len < ZN_DATA_HEADER_BYTES
					      ? len
					      : ZN_DATA_HEADER_BYTES + (u32 ? 4 : 2) * (size_t)h[2];
			memcpy(buf, h, sizeof(h));
			u32_file = u32;
		}
		/* The loader checks every token at open: most well-formed
		 * files get tokens below the vocabulary, to reach the windows. */
		const uint32_t vocab = (uint32_t)(tu_rand(&rng) % 70000);
		if (kind == 3 && vocab && (tu_rand(&rng) % 4) && len > ZN_DATA_HEADER_BYTES) {
			for (size_t j = ZN_DATA_HEADER_BYTES; j + (u32_file ? 4 : 2) <= len;
			     j += u32_file ? 4 : 2) {
				uint32_t v = 0;
				memcpy(&v, buf + j, u32_file ? 4 : 2);
				v %= vocab;
				memcpy(buf + j, &v, u32_file ? 4 : 2);
			}
		}
		FILE *f = fopen(p, "wb");
		assert_non_null(f);
		if (len)
			assert_int_equal(fwrite(buf, 1, len, f), len);
		fclose(f);
		/* Half the time a sidecar mask: random, or well-formed with
		 * random values (mostly 0 and 1). */
		unlink(mp);
		if (tu_rand(&rng) & 1) {
			size_t mlen = tu_rand(&rng) % sizeof(buf);
			if ((tu_rand(&rng) & 1) && len >= ZN_DATA_HEADER_BYTES)
				mlen = ZN_DATA_HEADER_BYTES + (len - ZN_DATA_HEADER_BYTES) / 2;
			uint8_t mb[sizeof(buf)];
			tu_fill_random(mb, mlen, tu_rand(&rng));
			for (size_t j = ZN_DATA_HEADER_BYTES; j < mlen; j++)
				mb[j] = mb[j] % 5 == 0 ? mb[j] : mb[j] & 1;
			if (mlen >= 12 && (tu_rand(&rng) & 3)) {
				int32_t h[3] = { ZN_DATA_MASK_MAGIC, 1,
						 (int32_t)(mlen - ZN_DATA_HEADER_BYTES) };
				memcpy(mb, h, sizeof(h));
			}
			f = fopen(mp, "wb");
			assert_non_null(f);
			if (mlen)
				assert_int_equal(fwrite(mb, 1, mlen, f), mlen);
			fclose(f);
		}
		struct zn_data_options o = opts(p, 1 + (uint32_t)(tu_rand(&rng) % 3),
						1 + (uint32_t)(tu_rand(&rng) % 16));
		o.shuffle = tu_rand(&rng) & 1;
		o.vocab_size = vocab;
		o.val_fraction = (double)(tu_rand(&rng) % 3) / 4;
		o.split = (enum zn_data_split)(tu_rand(&rng) % 3);
		struct zn_data *d = zn_data_open(&o);
		if (!d) {
			assert_true(zn_last_error()[0] != '\0');
			continue;
		}
		opened++;
		masked += zn_data_num_masked_shards(d);
		wide += u32_file;
		uint16_t w[3 * 16 + 1];
		for (int b = 0; b < 10; b++)
			if (zn_data_next_window(d, w) != 0)
				assert_true(strstr(zn_last_error(), "vocab_size") ||
					    strstr(zn_last_error(), "does not fit"));
		int32_t in[48], tg[48];
		for (int b = 0; b < 10; b++)
			if (zn_data_next_batch(d, in, tg) != 0)
				assert_true(strstr(zn_last_error(), "vocab_size") ||
					    strstr(zn_last_error(), "loss mask"));
		zn_data_close(d);
	}
	/* The deep paths ran: shards of both widths, with masks. */
	print_message("# fuzz: %d opened, %d of them uint32, %d with a mask\n", opened, wide,
		      masked);
	assert_true(opened > 50 && wide > 10 && masked > 10);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sequential_batches),
		cmocka_unit_test(test_several_shards_in_glob_order),
		cmocka_unit_test(test_shuffle_determinism),
		cmocka_unit_test(test_resume),
		cmocka_unit_test(test_ranks),
		cmocka_unit_test(test_val_split),
		cmocka_unit_test(test_bad_files),
		cmocka_unit_test(test_vocab_check),
		cmocka_unit_test(test_uint32_shards),
		cmocka_unit_test(test_loss_mask),
		cmocka_unit_test(test_prepared_by_zinc),
		cmocka_unit_test(test_fuzz),
	};
	int rc = tu_run_group_tests(tests, NULL, NULL);
	tu_scratch_cleanup();
	return rc;
}
