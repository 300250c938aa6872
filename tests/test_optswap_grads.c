/* Gradients on NVMe beside the optimizer states (zn_optswap_grads_*): a
 * pass's gradients, sent tensor by tensor in a backward's order, come back
 * to the step exactly (states[nstates]), a pass that accumulates reads and
 * adds to the previous sums, elements nothing is expected of read as zeros,
 * and every misuse -- more or fewer gradients than expected, a step inside
 * a pass, too many groups open for the buffers -- is an error that says
 * what happened. */
#include "testutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "zinc/offload.h"

#define KiB (1024ull)

struct rig {
	struct zn_aio *aio;
	struct zn_store *store;
	struct zn_optswap *os;
};

static void rig_up(struct rig *r, uint64_t params, uint64_t sub, bool pipeline, unsigned buffers)
{
	struct zn_aio_config ac;
	zn_aio_config_default(&ac);
	ac.block_size = 64 * KiB;
	ac.queue_depth = 8;
	r->aio = zn_aio_create(&ac);
	assert_non_null(r->aio);
	struct zn_optswap_config oc = {
		.aio = r->aio, .params = params, .sub_group_size = sub, .nstates = 3,
		.buffer_count = buffers, .pipeline_read = pipeline, .pipeline_write = pipeline,
		.pin_memory = false, .grad_bytes = 2,
	};
	const char *path = tu_path("grads");
	mkdir(path, 0700);
	struct zn_store_config sc = { .paths = &path, .npaths = 1,
				      .capacity = zn_optswap_store_bytes(&oc),
				      .stripe_bytes = 64 * KiB, .checksum = true };
	r->store = zn_store_create(&sc, r->aio);
	assert_non_null(r->store);
	oc.store = r->store;
	r->os = zn_optswap_create(&oc);
	if (!r->os)
		fprintf(stderr, "# zn_optswap_create: %s\n", zn_last_error());
	assert_non_null(r->os);
	/* Every group's states start at zero. */
	float *z = calloc(sub, sizeof(float));
	const float *st[3] = { z, z, z };
	for (uint64_t g = 0; g < zn_optswap_groups(r->os); g++)
		assert_int_equal(zn_optswap_write_group(r->os, g, st), 0);
	free(z);
}

static void rig_down(struct rig *r)
{
	zn_optswap_destroy(r->os);
	zn_store_destroy(r->store);
	zn_aio_destroy(r->aio);
}

/* A model of "tensors" over N elements: [b[i], b[i + 1]); some are
 * "resident" (their gradients stay elsewhere: nothing expected). */
#define N 10007
#define SUB 1024
static const uint64_t bounds[] = { 0, 700, 703, 2500, 2510, 4096, 6000, 6001, 9000, N };
#define NT (sizeof(bounds) / sizeof(bounds[0]) - 1)
static bool resident(unsigned i)
{
	return i == 1 || i == 6; /* 3 and 1 elements: a bias, a norm */
}

static void expect_all(struct rig *r)
{
	for (unsigned i = 0; i < NT; i++)
		if (!resident(i))
			assert_int_equal(zn_optswap_grads_expect(r->os, bounds[i],
								 bounds[i + 1] - bounds[i]),
					 0);
}

/* One pass: tensors from the last to the first (a backward), each
 * tensor's values v(element, pass); accumulating passes add to what the
 * last pass left. */
static uint16_t value(uint64_t e, unsigned pass)
{
	return (uint16_t)(e * 7 + pass * 13 + 1);
}

static void run_pass(struct rig *r, unsigned pass, bool accumulate)
{
	uint16_t *buf = malloc(N * 2);
	assert_int_equal(zn_optswap_grads_begin(r->os, accumulate), 0);
	for (unsigned i = NT; i-- > 0;) {
		if (resident(i))
			continue;
		/* Sub-group by sub-group from the top, as the trainer does:
		 * each group's previous sums read, added to and sent back
		 * before the next one, so one buffer is enough. */
		for (uint64_t b = bounds[i + 1]; b > bounds[i];) {
			const uint64_t a = ((b - 1) / SUB) * SUB > bounds[i] ? ((b - 1) / SUB) * SUB
									   : bounds[i];
			const uint64_t n = b - a;
			if (accumulate)
				assert_int_equal(zn_optswap_grads_get(r->os, a, n, buf), 0);
			for (uint64_t k = 0; k < n; k++)
				buf[k] = (uint16_t)((accumulate ? buf[k] : 0) + value(a + k, pass));
			assert_int_equal(zn_optswap_grads_put(r->os, a, n, buf), 0);
			b = a;
		}
	}
	assert_int_equal(zn_optswap_grads_end(r->os), 0);
	free(buf);
}

struct seen {
	uint16_t g[N];
	uint64_t elems;
};

static int record(void *user, uint64_t group, uint64_t first, uint64_t n, float *const *st)
{
	struct seen *s = user;
	(void)group;
	memcpy(s->g + first, st[3], n * 2);
	s->elems += n;
	return 0;
}

static void check_step(struct rig *r, unsigned passes)
{
	struct seen *s = calloc(1, sizeof(*s));
	assert_int_equal(zn_optswap_step(r->os, record, s), 0);
	assert_int_equal(s->elems, N);
	for (unsigned i = 0; i < NT; i++)
		for (uint64_t e = bounds[i]; e < bounds[i + 1]; e++) {
			uint16_t want = 0;
			for (unsigned p = 0; p < passes && !resident(i); p++)
				want = (uint16_t)(want + value(e, p));
			if (s->g[e] != want)
				fail_msg("element %llu: %u, want %u", (unsigned long long)e, s->g[e],
					 want);
		}
	free(s);
}

/* One buffer (no pipelining) up to several: a pass, then two that
 * accumulate, each read back by a step. */
static void test_passes_reach_the_step(void **state)
{
	(void)state;
	const struct { bool pipeline; unsigned buffers; } modes[] = {
		{ false, 0 }, { true, 0 }, { true, 6 } };
	for (unsigned m = 0; m < 3; m++) {
		struct rig r;
		rig_up(&r, N, SUB, modes[m].pipeline, modes[m].buffers);
		expect_all(&r);
		/* Before any pass the step sees no gradients. */
		check_step(&r, 0);
		run_pass(&r, 0, false);
		check_step(&r, 1);
		run_pass(&r, 1, true);
		check_step(&r, 2);
		run_pass(&r, 2, true);
		check_step(&r, 3);
		/* A pass that starts afresh forgets the sums. */
		run_pass(&r, 0, false);
		check_step(&r, 1);
		struct zn_optswap_grad_stats gs;
		zn_optswap_grads_stats(r.os, &gs);
		/* 4 passes write the 10 groups; 2 of them read them. */
		assert_int_equal(gs.bytes_written, 4 * 10 * ((SUB * 2 + 4095) / 4096 * 4096));
		assert_int_equal(gs.bytes_read, 2 * 10 * ((SUB * 2 + 4095) / 4096 * 4096));
		rig_down(&r);
	}
}

static void test_misuse_is_refused(void **state)
{
	(void)state;
	struct rig r;
	uint16_t *buf = calloc(N, 2);
	rig_up(&r, N, SUB, false, 0);
	expect_all(&r);
	/* Outside a pass. */
	assert_int_equal(zn_optswap_grads_put(r.os, 0, 10, buf), -EINVAL);
	assert_int_equal(zn_optswap_grads_end(r.os), -EINVAL);
	/* Expected twice. */
	assert_int_equal(zn_optswap_grads_expect(r.os, 0, 10), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "twice"));
	/* Out of range. */
	assert_int_equal(zn_optswap_grads_begin(r.os, false), 0);
	assert_int_equal(zn_optswap_grads_put(r.os, N - 5, 10, buf), -EINVAL);
	/* A step inside a pass; previous sums in a pass that starts afresh. */
	assert_int_equal(zn_optswap_step(r.os, record, NULL), -EBUSY);
	assert_int_equal(zn_optswap_grads_get(r.os, 0, 10, buf), -EINVAL);
	/* The last tensor twice. */
	assert_int_equal(zn_optswap_grads_put(r.os, 9000, N - 9000, buf), 0);
	assert_int_equal(zn_optswap_grads_put(r.os, 9000, N - 9000, buf), -EPROTO);
	/* A pass short of gradients: named, and its groups read as none. */
	int rc = zn_optswap_grads_end(r.os);
	assert_int_equal(rc, -EPROTO);
	assert_non_null(strstr(zn_last_error(), "sub-group"));
	check_step(&r, 0);
	/* One buffer, tensors in ascending order: the first tensor's group
	 * stays open (its other elements come later) when the next one
	 * needs another. */
	assert_int_equal(zn_optswap_grads_begin(r.os, false), 0);
	assert_int_equal(zn_optswap_grads_put(r.os, 0, 700, buf), 0);
	assert_int_equal(zn_optswap_grads_put(r.os, 703, 2500 - 703, buf), -EDEADLK);
	assert_non_null(strstr(zn_last_error(), "descending"));
	assert_int_equal(zn_optswap_grads_end(r.os), -EPROTO);
	rig_down(&r);
	free(buf);
}

/* Without gradients configured, the calls say so. */
static void test_no_gradients_configured(void **state)
{
	(void)state;
	struct zn_aio_config ac;
	zn_aio_config_default(&ac);
	struct zn_aio *aio = zn_aio_create(&ac);
	struct zn_optswap_config oc = { .aio = aio, .params = 100, .sub_group_size = 50,
					.nstates = 3 };
	const char *path = tu_path("nograds");
	mkdir(path, 0700);
	struct zn_store_config sc = { .paths = &path, .npaths = 1,
				      .capacity = zn_optswap_store_bytes(&oc),
				      .stripe_bytes = 64 * KiB, .checksum = true };
	struct zn_store *st = zn_store_create(&sc, aio);
	oc.store = st;
	struct zn_optswap *os = zn_optswap_create(&oc);
	assert_non_null(os);
	assert_int_equal(zn_optswap_grads_store_bytes(&oc), 0);
	assert_int_equal(zn_optswap_grads_begin(os, false), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "without gradients"));
	oc.grad_bytes = 3;
	assert_null(zn_optswap_create(&oc));
	zn_optswap_destroy(os);
	zn_store_destroy(st);
	zn_aio_destroy(aio);
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
		cmocka_unit_test(test_passes_reach_the_step),
		cmocka_unit_test(test_misuse_is_refused),
		cmocka_unit_test(test_no_gradients_configured),
	};
	return cmocka_run_group_tests(tests, NULL, teardown);
}
