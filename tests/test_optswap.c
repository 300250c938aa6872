/* The pipelined optimizer swapper: an NVMe-resident optimizer step must
 * give bit-identical states and parameter copies to the same update run in
 * memory, for every pipeline mode, several sub-group sizes (with a partial
 * last group) and 1-3 nvme paths; faults must leave previous states
 * readable. */
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "optimizer_ref.h"
#include "zinc/hostmem.h"
#include "zinc/offload.h"

#define KiB (1024ull)
#define MiB (1024ull * 1024)

struct rig {
	struct zn_aio *aio;
	struct zn_store *store;
	struct zn_optswap *os;
	struct zn_trace *trace;
};

static int rig_up(struct rig *r, uint64_t params, uint64_t sub, unsigned npaths, bool pr,
		  bool pw, unsigned buffers)
{
	struct zn_aio_config ac;
	zn_aio_config_default(&ac);
	ac.block_size = 256 * KiB;
	ac.queue_depth = 16;
	r->aio = zn_aio_create(&ac);
	assert_non_null(r->aio);
	r->trace = zn_trace_create(4096);
	struct zn_optswap_config oc = {
		.aio = r->aio, .params = params, .sub_group_size = sub, .nstates = 3,
		.buffer_count = buffers, .pipeline_read = pr, .pipeline_write = pw,
		.pin_memory = true, .trace = r->trace,
	};
	const char *paths[3];
	for (unsigned i = 0; i < npaths; i++) {
		char name[16];
		snprintf(name, sizeof(name), "os%u", i);
		paths[i] = tu_path(name);
		mkdir(paths[i], 0700);
	}
	struct zn_store_config sc = { .paths = paths, .npaths = npaths,
				      .capacity = zn_optswap_store_bytes(&oc),
				      .stripe_bytes = 64 * KiB, .checksum = true };
	r->store = zn_store_create(&sc, r->aio);
	assert_non_null(r->store);
	oc.store = r->store;
	r->os = zn_optswap_create(&oc);
	if (!r->os)
		fprintf(stderr, "# zn_optswap_create: %s\n", zn_last_error());
	return r->os ? 0 : -1;
}

static void rig_down(struct rig *r)
{
	zn_optswap_destroy(r->os);
	zn_store_destroy(r->store);
	zn_trace_destroy(r->trace);
	zn_aio_destroy(r->aio);
}

/* In-memory reference state and the step's inputs. */
struct run {
	uint64_t n;
	float *param, *m, *v;     /* reference, updated in memory */
	float *grad;
	uint16_t *copy_ref, *copy_nvme; /* bf16 parameter copies */
	struct zn_optim_ref_hp hp;
	int64_t step;
};

static int update_nvme(void *user, uint64_t group, uint64_t first, uint64_t n,
		       float *const *states)
{
	struct run *r = user;
	(void)group;
	zn_optim_ref_adam(&r->hp, r->step, states[0], states[1], states[2], r->grad + first,
			  r->copy_nvme + first, n);
	return 0;
}

static void write_initial(struct rig *rg, struct run *r, uint64_t sub)
{
	for (uint64_t g = 0; g < zn_optswap_groups(rg->os); g++) {
		const float *st[3] = { r->param + g * sub, r->m + g * sub, r->v + g * sub };
		assert_int_equal(zn_optswap_write_group(rg->os, g, st), 0);
	}
}

static void compare_all(struct rig *rg, struct run *r, uint64_t sub)
{
	float *a = malloc(sub * sizeof(float)), *b = malloc(sub * sizeof(float)),
	      *c = malloc(sub * sizeof(float));
	for (uint64_t g = 0; g < zn_optswap_groups(rg->os); g++) {
		float *st[3] = { a, b, c };
		uint64_t len = ZN_MIN_T(sub, r->n - g * sub);
		assert_int_equal(zn_optswap_read_group(rg->os, g, st), 0);
		if (memcmp(a, r->param + g * sub, len * 4) || memcmp(b, r->m + g * sub, len * 4) ||
		    memcmp(c, r->v + g * sub, len * 4))
			fail_msg("sub-group %llu differs from the in-memory step",
				 (unsigned long long)g);
	}
	free(a);
	free(b);
	free(c);
}

static void run_case(uint64_t n, uint64_t sub, unsigned npaths, bool pr, bool pw,
		     unsigned buffers)
{
	struct rig rg;
	struct run r = { .n = n };
	assert_int_equal(rig_up(&rg, n, sub, npaths, pr, pw, buffers), 0);
	r.param = malloc(n * 4);
	r.m = calloc(n, 4);
	r.v = calloc(n, 4);
	r.grad = malloc(n * 4);
	r.copy_ref = calloc(n, 2);
	r.copy_nvme = calloc(n, 2);
	r.hp = (struct zn_optim_ref_hp){ .lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f,
					 .eps = 1e-8f, .weight_decay = 0.01f, .adamw = true,
					 .bias_correction = true };
	uint64_t rs = n ^ sub;
	for (uint64_t i = 0; i < n; i++)
		r.param[i] = (float)((double)(tu_rand(&rs) >> 11) / 9007199254740992.0 - 0.5);
	write_initial(&rg, &r, sub);

	for (r.step = 1; r.step <= 4; r.step++) {
		for (uint64_t i = 0; i < n; i++)
			r.grad[i] = (float)((double)(tu_rand(&rs) >> 11) / 9007199254740992.0 - 0.5) *
				    0.1f;
		/* In memory: one call over everything. */
		zn_optim_ref_adam(&r.hp, r.step, r.param, r.m, r.v, r.grad, r.copy_ref, n);
		assert_int_equal(zn_optswap_step(rg.os, update_nvme, &r), 0);
		if (memcmp(r.copy_ref, r.copy_nvme, n * 2) != 0)
			fail_msg("parameter copies differ after step %lld", (long long)r.step);
	}
	compare_all(&rg, &r, sub);
	struct zn_optswap_stats st;
	zn_optswap_last_stats(rg.os, &st);
	uint64_t groups = zn_optswap_groups(rg.os);
	assert_true(st.bytes_read >= groups * 3 * sub * 4 - 3 * sub * 4);
	assert_int_equal(st.bytes_read, st.bytes_written);
	assert_true(st.step_s > 0 && st.update_s > 0);
	assert_true(zn_trace_count(rg.trace) >= 3 * groups);
	rig_down(&rg);
	free(r.param);
	free(r.m);
	free(r.v);
	free(r.grad);
	free(r.copy_ref);
	free(r.copy_nvme);
}

static void test_bit_identical(void **state)
{
	(void)state;
	static const struct {
		uint64_t n, sub;
		unsigned paths, buffers;
		bool pr, pw;
	} cases[] = {
		{ 100003, 100003, 1, 0, false, false }, /* one group, serial */
		{ 100003, 30000, 1, 0, false, false },  /* partial last group */
		{ 100003, 30000, 2, 0, true, false },
		{ 100003, 30000, 3, 0, false, true },
		{ 100003, 16384, 3, 0, true, true },
		{ 100003, 4096, 2, 5, true, true },     /* read-ahead of 3 groups */
		{ 65536, 65536, 2, 4, true, true },
		{ 200000, 7777, 1, 4, true, false },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		run_case(cases[i].n, cases[i].sub, cases[i].paths, cases[i].pr, cases[i].pw,
			 cases[i].buffers);
}

static void test_buffer_count_too_small(void **state)
{
	(void)state;
	struct rig rg;
	assert_int_equal(rig_up(&rg, 1000, 100, 1, true, true, 2), -1);
	assert_non_null(strstr(zn_last_error(), "buffer_count 2"));
	assert_non_null(strstr(zn_last_error(), "at least 3"));
	zn_store_destroy(rg.store);
	zn_trace_destroy(rg.trace);
	zn_aio_destroy(rg.aio);
}

/* A write that fails (here: past RLIMIT_FSIZE, as on a full disk) fails the
 * step, and the previous states stay readable; once the disk has room, the
 * next step continues as if nothing happened. */
static void test_failed_write_keeps_previous_state(void **state)
{
	(void)state;
	const uint64_t n = 50000, sub = 10000;
	struct rig rg;
	struct run r = { .n = n };
	assert_int_equal(rig_up(&rg, n, sub, 1, true, true, 0), 0);
	r.param = malloc(n * 4);
	r.m = calloc(n, 4);
	r.v = calloc(n, 4);
	r.grad = malloc(n * 4);
	r.copy_ref = calloc(n, 2);
	r.copy_nvme = calloc(n, 2);
	r.hp = (struct zn_optim_ref_hp){ .lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.99f, .eps = 1e-6f,
					 .adamw = true, .bias_correction = true };
	for (uint64_t i = 0; i < n; i++) {
		r.param[i] = (float)i * 1e-5f;
		r.grad[i] = 0.01f * (float)((i % 7) - 3);
	}
	write_initial(&rg, &r, sub);

	/* A file size limit of one block fails every write (as a full disk
	 * would), wherever the copy-on-write spares sit in the file. */
	uint64_t stride = ZN_ALIGN_UP_T(sub * 4, 4096);
	uint64_t limit = 4096;
	struct rlimit old, lim;
	signal(SIGXFSZ, SIG_IGN);
	getrlimit(RLIMIT_FSIZE, &old);
	lim = old;
	lim.rlim_cur = limit;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	r.step = 1;
	int rc = zn_optswap_step(rg.os, update_nvme, &r);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, SIG_DFL);
	assert_int_equal(rc, -EFBIG);
	assert_non_null(strstr(zn_last_error(), "sub-group"));
	compare_all(&rg, &r, sub); /* still the initial states */

	zn_optim_ref_adam(&r.hp, 1, r.param, r.m, r.v, r.grad, r.copy_ref, n);
	assert_int_equal(zn_optswap_step(rg.os, update_nvme, &r), 0);
	compare_all(&rg, &r, sub);
	assert_memory_equal(r.copy_ref, r.copy_nvme, n * 2);

	/* A flipped byte in the swap file fails the next step's read. */
	int fd = open(zn_store_file_path(rg.store, 0), O_RDWR);
	assert_true(fd >= 0);
	off_t size = lseek(fd, 0, SEEK_END);
	for (off_t off = 100; off < size; off += 3 * (off_t)stride) {
		uint8_t b;
		assert_int_equal(pread(fd, &b, 1, off), 1);
		b ^= 1;
		assert_int_equal(pwrite(fd, &b, 1, off), 1);
	}
	fsync(fd);
	posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	close(fd);
	r.step = 2;
	assert_int_equal(zn_optswap_step(rg.os, update_nvme, &r), -EBADMSG);
	assert_non_null(strstr(zn_last_error(), "checksum"));
	assert_non_null(strstr(zn_last_error(), "sub-group"));

	rig_down(&rg);
	free(r.param);
	free(r.m);
	free(r.v);
	free(r.grad);
	free(r.copy_ref);
	free(r.copy_nvme);
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
		cmocka_unit_test(test_bit_identical),
		cmocka_unit_test(test_buffer_count_too_small),
		cmocka_unit_test(test_failed_write_keeps_previous_state),
	};
	return cmocka_run_group_tests(tests, NULL, teardown);
}
