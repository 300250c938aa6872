/* zn_gpt2_activation_estimate against the model itself: real models are
 * created with counting allocators, for several shapes and the three
 * activation modes (plain, recompute, recompute + offload_activations), and
 * the estimate must equal what zn_gpt2_create allocated, byte for byte, on
 * the device (as asked and rounded to ZN_DEVICE_ALIGN) and on the host.
 * The memory plan (engine/plan/plan.c) builds its activation rows on this. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "zinc/device.h"
#include "zinc/kernels.h"
#include "zinc/model.h"

#include "model_host.h"

/* Shapes chosen to make rounding matter: C, T and NH such that many
 * buffers are not multiples of 256 bytes. */
static const struct shape {
	int L, NH, C, V, maxT, B, T;
} shapes[] = {
	{ 1, 1, 8, 50, 16, 1, 1 },
	{ 2, 2, 32, 256, 32, 4, 32 },
	{ 3, 3, 39, 301, 40, 3, 13 },
	{ 4, 4, 64, 1000, 128, 2, 77 },
	{ 6, 2, 10, 130, 20, 5, 20 },
};

static void check(const struct shape *s, bool recompute, bool offload)
{
	struct zn_gpt2_config cfg = { .n_layer = s->L, .n_head = s->NH, .n_embd = s->C,
				      .vocab_size = s->V, .max_seq_len = s->maxT,
				      .recompute = recompute, .offload_activations = offload };
	struct mh_counts c = { 0 };
	struct zn_model_mem mem = mh_host_mem(&c);
	const struct zn_kernels *k = zn_kernels_get("cpu");
	assert_non_null(k);
	struct zn_gpt2 *m = zn_gpt2_create(&cfg, s->B, s->T, k, NULL, &mem);
	assert_non_null(m);
	assert_int_equal(zn_gpt2_activation_bytes(m), c.dev);

	uint64_t dev = 1, host = 1;
	assert_int_equal(zn_gpt2_activation_estimate(&cfg, s->B, s->T, 1, &dev, &host), 0);
	if (dev != c.dev || host != c.host)
		fail_msg("L %d C %d B %d T %d recompute %d offload %d: estimate device %llu host %llu, "
			 "allocated %llu and %llu", s->L, s->C, s->B, s->T, recompute, offload,
			 (unsigned long long)dev, (unsigned long long)host,
			 (unsigned long long)c.dev, (unsigned long long)c.host);
	assert_int_equal(zn_gpt2_activation_estimate(&cfg, s->B, s->T, ZN_DEVICE_ALIGN, &dev, NULL),
			 0);
	assert_int_equal(dev, c.dev_aligned);
	/* align 0 means "as asked", like 1. */
	assert_int_equal(zn_gpt2_activation_estimate(&cfg, s->B, s->T, 0, &dev, NULL), 0);
	assert_int_equal(dev, c.dev);
	/* The modes differ as documented: host memory only with offload. */
	if (offload)
		assert_int_equal(c.host, (uint64_t)s->L * s->B * s->T * s->C * 4);
	else
		assert_int_equal(c.host, 0);
	zn_gpt2_destroy(m);
}

static void test_estimate_equals_allocations(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
		check(&shapes[i], false, false);
		check(&shapes[i], true, false);
		check(&shapes[i], true, true);
	}
}

/* Recompute keeps one working set instead of L; offload keeps two inputs
 * on the device instead of L.  With L = 6 both must save memory. */
static void test_modes_order(void **state)
{
	(void)state;
	struct zn_gpt2_config cfg = { .n_layer = 6, .n_head = 2, .n_embd = 16, .vocab_size = 64,
				      .max_seq_len = 16 };
	uint64_t plain, rec, off, host;
	assert_int_equal(zn_gpt2_activation_estimate(&cfg, 2, 16, 1, &plain, NULL), 0);
	cfg.recompute = true;
	assert_int_equal(zn_gpt2_activation_estimate(&cfg, 2, 16, 1, &rec, NULL), 0);
	cfg.offload_activations = true;
	assert_int_equal(zn_gpt2_activation_estimate(&cfg, 2, 16, 1, &off, &host), 0);
	assert_true(off < rec && rec < plain);
	/* Offload moves L inputs to the host and keeps two on the device. */
	assert_int_equal(host, 6ull * 2 * 16 * 16 * 4);
	assert_int_equal(rec - off, (6ull - 2) * 2 * 16 * 16 * 4);
}

static void test_estimate_refuses_what_create_refuses(void **state)
{
	(void)state;
	struct zn_gpt2_config cfg = { .n_layer = 2, .n_head = 2, .n_embd = 8, .vocab_size = 50,
				      .max_seq_len = 16 };
	uint64_t dev;
	assert_int_equal(zn_gpt2_activation_estimate(&cfg, 0, 4, 1, &dev, NULL), -EINVAL);
	assert_int_equal(zn_gpt2_activation_estimate(&cfg, 1, 17, 1, &dev, NULL), -EINVAL);
	cfg.offload_activations = true; /* without recompute */
	assert_int_equal(zn_gpt2_activation_estimate(&cfg, 1, 4, 1, &dev, NULL), -EINVAL);
	cfg.offload_activations = false;
	cfg.n_embd = 9; /* not a multiple of n_head */
	assert_int_equal(zn_gpt2_activation_estimate(&cfg, 1, 4, 1, &dev, NULL), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_estimate_equals_allocations),
		cmocka_unit_test(test_modes_order),
		cmocka_unit_test(test_estimate_refuses_what_create_refuses),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
