/* zinc adam-bench — how close does the CPU optimizer run to memory speed?
 *
 * Adam is memory-bound: per fp32 element it reads param, grad, m and v and
 * writes param, m and v in place (28 bytes).  Its ceiling is a stream of
 * the same shape, not a STREAM triad, so one run measures on the same
 * arrays, the same thread pool and the same tiles:
 *   - the optimizer step (best of --reps after a warm-up step), in
 *     elements/s and in GB/s of bytes actually read and written;
 *   - an Adam-shaped stream: 4 reads and 3 in-place writes per element,
 *     trivial arithmetic, fp32 (28 bytes);
 *   - a STREAM triad (a = b + s * c, counted as 12 bytes as STREAM does);
 * and ratio = optimizer GB/s / Adam-shaped stream GB/s.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "options.h"
#include "util.h"
#include "zinc/adam.h"
#include "zinc/dtype.h"
#include "zinc/hostmem.h"
#include "zinc/json.h"
#include "zinc/threadpool.h"

#define MAX_REPS 1000

enum optimizer { OPT_ADAM, OPT_ADAGRAD, OPT_LION, OPT_LAMB, OPT_SGD, OPT_COUNT };
static const char *const opt_names[OPT_COUNT] = { "adam", "adagrad", "lion", "lamb", "sgd" };

struct bench {
	uint64_t n;
	unsigned threads; /* 0: one per core */
	enum zn_dtype grad_dtype;
	int copy_dtype; /* -1: none */
	enum zn_adam_simd simd;
	enum optimizer opt;
	unsigned reps;
	uint64_t tile;
	bool json, no_huge, no_stagger;
};

/* ---- options ------------------------------------------------------------ */

static int set_n(void *c, const char *a, const char **why)
{
	struct bench *b = c;
	if (zn_parse_size(a, &b->n) != 0 || b->n == 0 || b->n > (1ull << 36)) {
		*why = "an element count from 1 to 2^36, e.g. 67108864, 64M or 1e8";
		return -1;
	}
	return 0;
}

static int set_threads(void *c, const char *a, const char **why)
{
	struct bench *b = c;
	unsigned n;
	if (parse_uint_list(a, &b->threads, 1, &n) != 0 || b->threads == 0 || b->threads > 4096) {
		*why = "a thread count from 1 to 4096";
		return -1;
	}
	return 0;
}

static int parse_dtype(const char *a, int *out, bool allow_none, bool allow_fp32)
{
	if (allow_none && strcmp(a, "none") == 0) {
		*out = -1;
		return 0;
	}
	for (int d = 0; d < ZN_DTYPE_COUNT; d++)
		if (zn_dtype_is_float((enum zn_dtype)d) &&
		    strcmp(a, zn_dtype_name((enum zn_dtype)d)) == 0 &&
		    (allow_fp32 || d != ZN_DTYPE_F32)) {
			*out = d;
			return 0;
		}
	return -1;
}

static int set_grad_dtype(void *c, const char *a, const char **why)
{
	struct bench *b = c;
	int d;
	if (parse_dtype(a, &d, false, true) != 0) {
		*why = "fp32, fp16 or bf16";
		return -1;
	}
	b->grad_dtype = (enum zn_dtype)d;
	return 0;
}

static int set_param_copy(void *c, const char *a, const char **why)
{
	struct bench *b = c;
	if (parse_dtype(a, &b->copy_dtype, true, false) != 0) {
		*why = "none, fp16 or bf16";
		return -1;
	}
	return 0;
}

static int set_simd(void *c, const char *a, const char **why)
{
	struct bench *b = c;
	if (zn_adam_simd_parse(a, &b->simd) != 0) {
		*why = "auto, scalar, avx2 or avx512";
		return -1;
	}
	return 0;
}

/* Lamb's two passes over one whole array, as a step function. */
static int lamb_step(const struct zn_adam_hparams *hp, uint64_t step, float scale,
		     const struct zn_adam_tensors *t, const struct zn_adam_exec *ex)
{
	return zn_lamb_step(hp, step, scale, t, ex, NULL);
}

static int set_optimizer(void *c, const char *a, const char **why)
{
	struct bench *b = c;
	for (int i = 0; i < OPT_COUNT; i++)
		if (strcmp(a, opt_names[i]) == 0) {
			b->opt = (enum optimizer)i;
			return 0;
		}
	*why = "adam, adagrad, lion, lamb or sgd";
	return -1;
}

static const struct opt options[] = {
	OPT_CALL("n", "N", "64M (2^26)", "elements per array (K, M, G are powers of 1024)", set_n),
	OPT_CALL("threads", "T", "one per core", "worker threads, each bound to a core", set_threads),
	OPT_CALL("grad-dtype", "TYPE", "fp32", "gradient type: fp32, fp16 or bf16", set_grad_dtype),
	OPT_CALL("param-copy", "TYPE", "none", "also write the params as fp16 or bf16 (none, fp16, bf16)",
	  set_param_copy),
	OPT_CALL("simd", "PATH", "auto", "auto, scalar, avx2 or avx512 (auto honours ZINC_SIMD)",
	  set_simd),
	OPT_CALL("optimizer", "NAME", "adam", "adam, adagrad, lion, lamb (both passes) or sgd (momentum 0.9)",
		 set_optimizer),
	OPT_NUM("reps", "R", "7", "timed repetitions of each measurement; the best is reported",
		struct bench, reps, 1, MAX_REPS),
	OPT_NUM("tile", "N", "automatic", "elements per tile (0: automatic)", struct bench, tile, 0,
		1ull << 36),
	OPT_BOOL("json", "print one JSON object instead of the table", struct bench, json),
	OPT_BOOL("no-huge-pages", "put the arrays on 4 KiB pages", struct bench, no_huge),
	OPT_BOOL("no-stagger", "lay the arrays out 2 MiB-aligned back to back (2^k elements then "
		 "sit a power of two apart) instead of staggered", struct bench, no_stagger),
};

/* ---- the run --------------------------------------------------------------- */

struct fill {
	struct zn_adam_tensors *t;
	float *g32; /* the fp32 gradient the streams read */
	size_t chunk;
};

static inline uint32_t hash32(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	return (uint32_t)x;
}

static inline float unit(uint64_t i, uint64_t salt) /* [-1, 1) */
{
	return (float)hash32(i * 4 + salt) * 0x1p-31f - 1.0f;
}

/* Values like a model's: params ~1, gradients ~1e-3 (never tiny, so no
 * subnormal arithmetic slows any loop), m ~ g, v ~ g^2 > 0.  Written by
 * the pool, so each page is touched by the core that streams it (first
 * touch decides NUMA placement on multi-node machines). */
static void fill_task(void *arg, size_t task, unsigned worker)
{
	struct fill *f = arg;
	struct zn_adam_tensors *t = f->t;
	size_t i0 = task * f->chunk, i1 = i0 + f->chunk < t->n ? i0 + f->chunk : t->n;
	(void)worker;
	for (size_t i = i0; i < i1; i++) {
		float u = unit(i, 1);
		float g = 1e-3f * (u < 0 ? -0.5f + 0.5f * u : 0.5f + 0.5f * u);
		t->param[i] = unit(i, 0);
		f->g32[i] = g;
		t->exp_avg[i] = 1e-3f * unit(i, 2);
		t->exp_avg_sq[i] = 1e-6f * (1.0f + unit(i, 3));
	}
	/* the gradient the optimizer reads; fp32: the streams' array itself */
	if (t->grad_dtype != ZN_DTYPE_F32)
		(void)zn_dtype_from_f32((char *)t->grad + i0 * zn_dtype_size(t->grad_dtype),
					t->grad_dtype, f->g32 + i0, i1 - i0);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

struct timing {
	uint64_t ns[MAX_REPS];
	unsigned count;
	uint64_t best, median;
};

static void summarize(struct timing *t)
{
	qsort(t->ns, t->count, sizeof(t->ns[0]), cmp_u64);
	t->best = t->ns[0];
	t->median = t->ns[t->count / 2];
}

static double gbs(uint64_t bytes, uint64_t ns)
{
	return (double)bytes / (double)ns;
}

int cmd_adam_bench(int argc, char **argv)
{
	struct bench b = {
		.n = 1ull << 26,
		.grad_dtype = ZN_DTYPE_F32,
		.copy_dtype = -1,
		.simd = ZN_ADAM_SIMD_AUTO,
		.opt = OPT_ADAM,
		.reps = 7,
	};
	static const char synopsis[] = "[--n N] [--threads T] [--grad-dtype fp32|fp16|bf16] "
				       "[--param-copy none|fp16|bf16] [--simd PATH] [--json] "
				       "[options]";
	int rc = opts_command("zinc adam-bench", options, ARRAY_SIZE(options), argc, argv, &b,
			      synopsis);
	if (rc >= 0)
		return rc;
	zn_log_set_sink(zn_log_stderr_sink, NULL, ZN_LOG_WARN);

	/* The SIMD path first: a path this CPU lacks is bad input. */
	enum zn_adam_simd simd;
	if (zn_adam_simd_select(b.simd, &simd) != 0) {
		fprintf(stderr, "zinc adam-bench: %s\n", zn_last_error());
		return 2;
	}

	/* Arrays: param, fp32 grad, m, v (what Adam and both streams use),
	 * then the copy and the fp16/bf16 grad when asked for. */
	size_t n = (size_t)b.n;
	size_t sizes[6] = { n * 4, n * 4, n * 4, n * 4 }, narrays = 4;
	int copy_at = -1, g16_at = -1;
	if (b.copy_dtype >= 0) {
		copy_at = (int)narrays;
		sizes[narrays++] = n * 2;
	}
	if (b.grad_dtype != ZN_DTYPE_F32) {
		g16_at = (int)narrays;
		sizes[narrays++] = n * 2;
	}
	uint64_t need = 0;
	for (size_t k = 0; k < narrays; k++)
		need += sizes[k] + (2u << 20);
	long pages = sysconf(_SC_AVPHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
	if (pages > 0 && psz > 0 && need > (uint64_t)pages * (uint64_t)psz / 10 * 9) {
		char s1[32], s2[32];
		fprintf(stderr, "zinc adam-bench: --n %llu needs %s of memory and %s is free; "
				"lower --n\n", (unsigned long long)b.n,
			zn_format_size(need, s1, sizeof(s1)),
			zn_format_size((uint64_t)pages * (uint64_t)psz, s2, sizeof(s2)));
		return 2;
	}
	unsigned flags = ZN_HOSTMEM_PREFAULT | (b.no_huge ? ZN_HOSTMEM_NOHUGE : ZN_HOSTMEM_HUGE);
	void *arr[6] = { NULL };
	size_t region_bytes = 0;
	void *region;
	if (b.no_stagger) {
		/* Each array at a 2 MiB boundary, back to back: with n = 2^k
		 * they sit exactly a power of two apart. */
		size_t off = 0;
		for (size_t k = 0; k < narrays; k++)
			off += (sizes[k] + ZN_HOSTMEM_ALIGN - 1) / ZN_HOSTMEM_ALIGN * ZN_HOSTMEM_ALIGN;
		region_bytes = off;
		region = zn_hostmem_alloc(region_bytes, flags);
		off = 0;
		for (size_t k = 0; region && k < narrays; k++) {
			arr[k] = (char *)region + off;
			off += (sizes[k] + ZN_HOSTMEM_ALIGN - 1) / ZN_HOSTMEM_ALIGN * ZN_HOSTMEM_ALIGN;
		}
	} else {
		region = zn_hostmem_alloc_arrays(narrays, sizes, flags, arr, &region_bytes);
	}
	if (!region) {
		fprintf(stderr, "zinc adam-bench: %s\n", zn_last_error());
		return 1;
	}

	struct zn_threadpool *pool = zn_threadpool_create_near(b.threads, region, region_bytes);
	if (!pool) {
		fprintf(stderr, "zinc adam-bench: %s\n", zn_last_error());
		zn_hostmem_free(region, region_bytes);
		return 1;
	}
	struct zn_adam_tensors t = {
		.n = n,
		.param = arr[0],
		.grad = g16_at >= 0 ? arr[g16_at] : arr[1],
		.grad_dtype = b.grad_dtype,
		.exp_avg = arr[2],
		.exp_avg_sq = arr[3],
		.param_copy = copy_at >= 0 ? arr[copy_at] : NULL,
		.copy_dtype = b.copy_dtype >= 0 ? (enum zn_dtype)b.copy_dtype : ZN_DTYPE_F16,
	};
	/* The streams: same param, m, v; always the fp32 gradient. */
	struct zn_adam_tensors ts = t;
	ts.grad = arr[1];
	ts.grad_dtype = ZN_DTYPE_F32;
	struct zn_adam_exec ex = { .pool = pool, .tile = (size_t)b.tile, .simd = simd };
	struct fill f = { .t = &t, .g32 = arr[1], .chunk = 1u << 20 };
	zn_threadpool_for(pool, (n + f.chunk - 1) / f.chunk, fill_task, &f);
	double huge = zn_hostmem_huge_fraction(region, region_bytes);

	struct zn_adam_hparams hp;
	int (*step_fn)(const struct zn_adam_hparams *, uint64_t, float,
		       const struct zn_adam_tensors *, const struct zn_adam_exec *);
	/* Bytes read and written per element: p, m, v (or the two of them
	 * an optimizer has) read and written, g read, the copy written. */
	size_t gs = zn_dtype_size(b.grad_dtype), cs = b.copy_dtype >= 0 ? 2 : 0;
	size_t per_elem = (b.opt == OPT_ADAM ? 3 : 2) * 8 + gs + cs;
	switch (b.opt) {
	case OPT_LAMB:
		/* First pass: p read, m and v read and written, g read; the
		 * second: p, m, v read, p and the copy written. */
		zn_lamb_defaults(&hp);
		hp.weight_decay = 0.01;
		step_fn = lamb_step;
		per_elem = 4 + 16 + gs + 12 + 4 + cs;
		break;
	case OPT_SGD:
		zn_sgd_defaults(&hp);
		hp.momentum = 0.9;
		step_fn = zn_sgd_step;
		break;
	case OPT_ADAGRAD:
		zn_adagrad_defaults(&hp);
		step_fn = zn_adagrad_step;
		break;
	case OPT_LION:
		zn_lion_defaults(&hp);
		step_fn = zn_lion_step;
		break;
	default:
		zn_adam_defaults(&hp);
		hp.weight_decay = 0.01; /* AdamW as people run it */
		step_fn = zn_adam_step;
		break;
	}
	uint64_t opt_bytes = (uint64_t)n * per_elem;

	/* Warm-up, then interleaved repetitions: a disturbance hits all three
	 * measurements alike. */
	static struct timing topt, ts7, ttri;
	uint64_t stepno = 1;
	int err = step_fn(&hp, stepno++, 1.0f, &t, &ex);
	if (!err)
		err = zn_adam_stream7(&ts, &ex);
	if (!err)
		err = zn_adam_triad(&ts, &ex);
	for (unsigned r = 0; r < b.reps && !err; r++) {
		uint64_t t0 = tool_now_ns();
		err = step_fn(&hp, stepno++, 1.0f, &t, &ex);
		uint64_t t1 = tool_now_ns();
		if (!err)
			err = zn_adam_stream7(&ts, &ex);
		uint64_t t2 = tool_now_ns();
		if (!err)
			err = zn_adam_triad(&ts, &ex);
		uint64_t t3 = tool_now_ns();
		topt.ns[topt.count++] = t1 - t0;
		ts7.ns[ts7.count++] = t2 - t1;
		ttri.ns[ttri.count++] = t3 - t2;
	}
	if (err) {
		fprintf(stderr, "zinc adam-bench: %s\n", zn_last_error());
		zn_threadpool_destroy(pool);
		zn_hostmem_free(region, region_bytes);
		return 1;
	}
	summarize(&topt);
	summarize(&ts7);
	summarize(&ttri);

	double opt_gelem = (double)n / (double)topt.best;
	double opt_gbs = gbs(opt_bytes, topt.best);
	double s7_gbs = gbs((uint64_t)n * 28, ts7.best);
	double tri_gbs = gbs((uint64_t)n * 12, ttri.best);
	double ratio = opt_gbs / s7_gbs;
	size_t tile = zn_adam_tile_size(n, &ex);
	const char *copy_name = b.copy_dtype >= 0 ? zn_dtype_name(t.copy_dtype) : "none";

	if (b.json) {
		struct zn_json j;
		zn_json_init(&j, stdout, ZN_JSON_LINE);
		zn_json_begin_object(&j);
		zn_json_key(&j, "n");
		zn_json_uint(&j, n);
		zn_json_key(&j, "threads");
		zn_json_uint(&j, zn_threadpool_size(pool));
		zn_json_key(&j, "simd");
		zn_json_string(&j, zn_adam_simd_name(simd));
		zn_json_key(&j, "optimizer");
		zn_json_string(&j, opt_names[b.opt]);
		zn_json_key(&j, "grad_dtype");
		zn_json_string(&j, zn_dtype_name(b.grad_dtype));
		zn_json_key(&j, "param_copy");
		zn_json_string(&j, copy_name);
		zn_json_key(&j, "tile");
		zn_json_uint(&j, tile);
		zn_json_key(&j, "reps");
		zn_json_uint(&j, b.reps);
		zn_json_key(&j, "hugepages");
		zn_json_double(&j, huge);
		zn_json_key(&j, "staggered");
		zn_json_bool(&j, !b.no_stagger);
		zn_json_key(&j, "binding");
		zn_json_string(&j, zn_threadpool_binding(pool));
		zn_json_key(&j, "adam_bytes_per_elem");
		zn_json_uint(&j, opt_bytes / n);
		zn_json_key(&j, "adam_ms");
		zn_json_double(&j, (double)topt.best / 1e6);
		zn_json_key(&j, "adam_ms_median");
		zn_json_double(&j, (double)topt.median / 1e6);
		zn_json_key(&j, "adam_gelem_s");
		zn_json_double(&j, opt_gelem);
		zn_json_key(&j, "adam_gb_s");
		zn_json_double(&j, opt_gbs);
		zn_json_key(&j, "stream7_ms");
		zn_json_double(&j, (double)ts7.best / 1e6);
		zn_json_key(&j, "stream7_gb_s");
		zn_json_double(&j, s7_gbs);
		zn_json_key(&j, "triad_gb_s");
		zn_json_double(&j, tri_gbs);
		zn_json_key(&j, "ratio");
		zn_json_double(&j, ratio);
		zn_json_end_object(&j);
		putchar('\n');
	} else {
		char sz[32];
		printf("zinc adam-bench: n %zu, %s, %u thread%s (%s), simd %s, grad %s, param copy "
		       "%s, tile %zu\n", n, opt_names[b.opt], zn_threadpool_size(pool),
		       zn_threadpool_size(pool) == 1 ? "" : "s", zn_threadpool_binding(pool),
		       zn_adam_simd_name(simd), zn_dtype_name(b.grad_dtype), copy_name, tile);
		printf("arrays: %s, %s, %s; best of %u after a warm-up\n\n",
		       zn_format_size(region_bytes, sz, sizeof(sz)),
		       huge < 0 ? "huge pages unknown"
		       : huge >= 0.99 ? "transparent huge pages"
		       : huge > 0.01 ? "partly huge pages" : "4 KiB pages",
		       b.no_stagger ? "back to back" : "staggered", b.reps);
		printf("%-28s %9s %9s %9s\n", "", "ms", "Gelem/s", "GB/s");
		printf("%-28s %9.2f %9.3f %9.1f   (%llu B/elem)\n", opt_names[b.opt],
		       (double)topt.best / 1e6, opt_gelem, opt_gbs,
		       (unsigned long long)(opt_bytes / n));
		printf("%-28s %9.2f %9.3f %9.1f   (28 B/elem)\n", "adam-shaped stream (4r+3w)",
		       (double)ts7.best / 1e6, (double)n / (double)ts7.best, s7_gbs);
		printf("%-28s %9.2f %9.3f %9.1f   (12 B/elem)\n", "STREAM triad",
		       (double)ttri.best / 1e6, (double)n / (double)ttri.best, tri_gbs);
		printf("\nratio %s / adam-shaped stream: %.3f\n", opt_names[b.opt], ratio);
	}
	zn_threadpool_destroy(pool);
	zn_hostmem_free(region, region_bytes);
	return 0;
}
