/* Bounded staging, white-box: the trainer's start-up (initialisation, and
 * a checkpoint's states read back) and its checkpoint save allocate no
 * more host memory than the memory plan's staging figure, for models whose
 * largest tensor (a 65536-row embedding: 16 MiB in fp32) is many times
 * that figure -- so a buffer of a whole tensor or a whole sub-group,
 * should one come back, fails here.
 *
 * The heap is counted by a malloc of this program's own (malloc, calloc,
 * realloc, the aligned ones and free, forwarding to glibc's): the live
 * bytes and their peak over a window, against the live bytes at its start.
 * Big pinned arrays come from mmap (zn_hostmem_alloc) and are not counted;
 * the trainer allocates none of those while it stages.  A sanitizer
 * build's allocator is its own: there the test reports skip. */
#include <errno.h>
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "testutil.h"
#include "zinc/configfile.h"
#include "zinc/plan.h"
#include "zinc/train.h"

#include "train/internal.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define COUNTING 0
#else
#define COUNTING 1
#endif

/* ---- the counting heap ---------------------------------------------------- */

static _Atomic long long live, peak;

static void count(long long delta)
{
	long long v = atomic_fetch_add(&live, delta) + delta;
	long long p = atomic_load(&peak);
	while (v > p && !atomic_compare_exchange_weak(&peak, &p, v))
		;
}

#if COUNTING
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t n);
extern void *__libc_memalign(size_t align, size_t n);
extern void *__libc_valloc(size_t n);
extern void *__libc_pvalloc(size_t n);
extern void __libc_free(void *p);

static void *counted(void *p)
{
	if (p)
		count((long long)malloc_usable_size(p));
	return p;
}

void *malloc(size_t n)
{
	return counted(__libc_malloc(n));
}

void *calloc(size_t n, size_t size)
{
	return counted(__libc_calloc(n, size));
}

void *realloc(void *p, size_t n)
{
	long long old = p ? (long long)malloc_usable_size(p) : 0;
	void *q = __libc_realloc(p, n);
	if (q)
		count((long long)malloc_usable_size(q) - old);
	else if (p && !n) /* freed */
		count(-old);
	return q;
}

void *memalign(size_t align, size_t n)
{
	return counted(__libc_memalign(align, n));
}

void *aligned_alloc(size_t align, size_t n)
{
	return counted(__libc_memalign(align, n));
}

int posix_memalign(void **out, size_t align, size_t n)
{
	void *p = counted(__libc_memalign(align, n));
	if (!p)
		return ENOMEM;
	*out = p;
	return 0;
}

void *valloc(size_t n)
{
	return counted(__libc_valloc(n));
}

void *pvalloc(size_t n)
{
	return counted(__libc_pvalloc(n));
}

void free(void *p)
{
	if (p)
		count(-(long long)malloc_usable_size(p));
	__libc_free(p);
}
#endif

/* A window: the peak is the live bytes from now on. */
static long long window_begin(void)
{
	long long v = atomic_load(&live);
	atomic_store(&peak, v);
	return v;
}

static long long window_peak(long long start)
{
	return atomic_load(&peak) - start;
}

/* ---- the models and placements --------------------------------------------- */

enum { C = 64, V = 65536, T = 32 };

/* Small allocations beside the staging a window may see: the checkpoint's
 * tables (names, headers, a writer's lists), the I/O requests. */
#define SLACK (256 * 1024)

static const char GPT2[] = "model: {n_layer: 1, n_head: 2, n_embd: %d, vocab_size: %d, "
			   "seq_len: %d}\n";
static const char LLAMA[] = "model: {type: llama, config: \"%s\", seq_len: %d}\n"
			    "bf16: {enabled: true}\n";

static const char *const zeros[] = {
	"{stage: 0}",
	"{stage: 2, offload_optimizer: {device: cpu}}",
	"{stage: 3, sub_group_size: 1000000, stage3_param_persistence_threshold: 0, "
	"offload_param: {device: nvme, max_in_cpu: 0, nvme_path: \"%s\"}, offload_optimizer: "
	"{device: nvme, nvme_path: \"%s\", pipeline_read: true, pipeline_write: true}}",
};

/* A Llama of the same proportions: one layer, a tied 65536-row embedding. */
static const char *llama_config(void)
{
	const char *path = tu_path("llama.json");
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fprintf(f, "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": %d, "
		   "\"num_hidden_layers\": 1, \"num_attention_heads\": 2, "
		   "\"num_key_value_heads\": 1, \"intermediate_size\": %d, \"vocab_size\": %d, "
		   "\"tie_word_embeddings\": true, \"max_position_embeddings\": %d, "
		   "\"rms_norm_eps\": 1e-5}\n", C, 2 * C, V, T);
	assert_int_equal(fclose(f), 0);
	return path;
}

static void load(bool llama, unsigned placement, const char *ckpt, struct zn_config *cfg)
{
	char model[4400], zero[9000], text[20000];
	const char *swap = tu_path("swap");
	mkdir(swap, 0755);
	if (llama)
		snprintf(model, sizeof(model), LLAMA, llama_config(), T);
	else
		snprintf(model, sizeof(model), GPT2, C, V, T);
	snprintf(zero, sizeof(zero), zeros[placement], swap, swap);
	snprintf(text, sizeof(text),
		 "train_micro_batch_size_per_gpu: 1\n%s"
		 "checkpoint: {dir: \"%s\"}\ndevice: {type: cpu}\nzero_optimization: %s\n",
		 model, ckpt, zero);
	if (zn_config_load_string(text, strlen(text), "staging", cfg))
		fail_msg("config: %s", zn_last_error());
}

/* The plan's staging item of the pageable tier (0: none). */
static uint64_t planned_staging(const struct zn_config *cfg, uint64_t *largest)
{
	static struct zn_plan plan;
	assert_int_equal(zn_plan_compute(cfg, &plan), 0);
	*largest = plan.largest;
	uint64_t bytes = 0;
	for (unsigned i = 0; i < plan.ntiers; i++)
		for (unsigned k = 0; k < plan.tiers[i].nitems; k++)
			if (strstr(plan.tiers[i].items[k].name, "staging (the model files"))
				bytes += plan.tiers[i].items[k].bytes;
	return bytes;
}

/* ---- the test ----------------------------------------------------------------- */

static void check(bool llama, unsigned placement)
{
	char ckpt[4096];
	snprintf(ckpt, sizeof(ckpt), "%s/ckpt-%d-%u", tu_scratch_dir(), llama, placement);
	struct zn_config cfg;
	load(llama, placement, ckpt, &cfg);
	uint64_t largest;
	const uint64_t staging = planned_staging(&cfg, &largest);
	/* The figure is bounded, and a buffer of the largest tensor (in any
	 * dtype: a byte an element or more) would not fit it: the test can
	 * fail. */
	assert_true(staging + SLACK < largest);
	struct zn_trainer *t = zn_trainer_create_synthetic(&cfg, 10);
	if (!t)
		fail_msg("create: %s", zn_last_error());

	/* A save: the model files' writer's buffer (allocated: the plan's
	 * figure is what it holds) and nothing that grows with the model. */
	long long w = window_begin();
	assert_int_equal(zn_trainer_save(t), 0);
	long long save = window_peak(w);
	/* Start-up, again on the same trainer: initialised... */
	w = window_begin();
	assert_int_equal(tr_materialize(t), 0);
	long long init = window_peak(w);
	/* ... and from the checkpoint just saved. */
	t->cfg.checkpoint.resume = true;
	assert_int_equal(tr_open_weights(t), 0);
	assert_non_null(t->src.ckpt);
	w = window_begin();
	int rc = tr_materialize(t);
	long long resume = window_peak(w);
	tr_sources_close(&t->src);
	assert_int_equal(rc, 0);
	zn_trainer_destroy(t);

	printf("# %s, %s: planned %llu bytes; save %lld, initialise %lld, resume %lld bytes at "
	       "most; largest tensor %llu bytes\n", llama ? "Llama" : "GPT-2",
	       placement == 2 ? "NVMe" : placement == 1 ? "cpu" : "device",
	       (unsigned long long)staging, save, init, resume,
	       (unsigned long long)(4 * largest));
	assert_true(save <= (long long)(staging + SLACK));
	assert_true(init <= SLACK && resume <= SLACK);
	/* GPT-2's writer holds a block of Conv1D rows, a Llama folder's its
	 * conversion buffer: the save allocated them. */
	assert_true(save >= (long long)staging);
}

static void test_staging_is_bounded(void **state)
{
	(void)state;
	for (unsigned p = 0; p < sizeof(zeros) / sizeof(zeros[0]); p++)
		check(false, p);
	check(true, 2);
}

static int teardown(void **state)
{
	(void)state;
	tu_scratch_cleanup();
	return 0;
}

int main(void)
{
	if (!COUNTING) {
		printf("1..0 # SKIP a sanitizer's allocator counts the heap, not this test's\n");
		return 0;
	}
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_staging_is_bounded),
	};
	return cmocka_run_group_tests(tests, NULL, teardown);
}
