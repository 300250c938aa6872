/* The pipelined optimizer swapper: an NVMe-resident optimizer step must
 * give bit-identical states and parameter copies to the same update run in
 * memory (one zn_adam_step over all elements), for every pipeline mode,
 * several sub-group sizes (with a partial last group) and 1-3 nvme paths,
 * with the bf16 parameter copy going to host memory or to NVMe-home
 * tensors of a tensor swapper; faults must leave previous states readable. */
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

#include "zinc/adam.h"
#include "zinc/hostmem.h"
#include "zinc/offload.h"
#include "zinc/threadpool.h"

#define ZN_MIN_T(a, b) ((a) < (b) ? (a) : (b))
#define ZN_ALIGN_UP_T(x, a) ((((x) + (a) - 1) / (a)) * (a))

#define KiB (1024ull)
#define MiB (1024ull * 1024)

struct rig {
	struct zn_aio *aio;
	struct zn_store *store;
	struct zn_optswap *os;
	struct zn_trace *trace;
	struct zn_store *copy_store; /* optional second store for parameter copies */
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
	r->copy_store = NULL;
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
	zn_store_destroy(r->copy_store);
	zn_store_destroy(r->store);
	zn_trace_destroy(r->trace);
	zn_aio_destroy(r->aio);
}

/* In-memory reference state and the step's inputs. */
struct run {
	uint64_t n, sub;
	float *param, *m, *v;     /* reference, updated in memory */
	float *grad;
	uint16_t *copy_ref, *copy_nvme; /* bf16 parameter copies */
	struct zn_adam_hparams hp;
	uint64_t step;
	struct zn_threadpool *pool;
	/* With a swapper: each group's bf16 copy is an NVMe-home tensor. */
	struct zn_swapper *sw;
	struct zn_tensor **copy_t;
};

static int adam(const struct run *r, uint64_t n, float *p, float *m, float *v, const float *g,
		uint16_t *copy)
{
	struct zn_adam_tensors t = { .n = n, .param = p, .exp_avg = m, .exp_avg_sq = v,
				     .grad = g, .grad_dtype = ZN_DTYPE_F32,
				     .param_copy = copy, .copy_dtype = ZN_DTYPE_BF16 };
	struct zn_adam_exec ex = { .pool = r->pool };
	return zn_adam_step(&r->hp, r->step, 1.0f, &t, &ex);
}

static int update_nvme(void *user, uint64_t group, uint64_t first, uint64_t n,
		       float *const *states)
{
	struct run *r = user;
	if (!r->sw)
		return adam(r, n, states[0], states[1], states[2], r->grad + first,
			    r->copy_nvme + first);
	/* The copy goes straight into the group's tensor in the swapper. */
	void *copy;
	int rc = zn_swapper_acquire(r->sw, r->copy_t[group], &copy);
	if (rc)
		return rc;
	rc = adam(r, n, states[0], states[1], states[2], r->grad + first, copy);
	zn_swapper_release(r->sw, r->copy_t[group], rc == 0);
	return rc;
}

/* The bf16 copies, wherever the step put them. */
static void copies_of(struct run *r, uint64_t groups)
{
	if (!r->sw)
		return;
	for (uint64_t g = 0; g < groups; g++) {
		void *buf;
		assert_int_equal(zn_swapper_acquire(r->sw, r->copy_t[g], &buf), 0);
		memcpy(r->copy_nvme + g * r->sub, buf, ZN_MIN_T(r->sub, r->n - g * r->sub) * 2);
		assert_int_equal(zn_swapper_release(r->sw, r->copy_t[g], false), 0);
	}
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
		     unsigned buffers, bool copy_to_swapper, unsigned threads)
{
	struct rig rg;
	struct run r = { .n = n, .sub = sub };
	struct zn_bufpool *copy_pool = NULL;
	assert_int_equal(rig_up(&rg, n, sub, npaths, pr, pw, buffers), 0);
	r.param = malloc(n * 4);
	r.m = calloc(n, 4);
	r.v = calloc(n, 4);
	r.grad = malloc(n * 4);
	r.copy_ref = calloc(n, 2);
	r.copy_nvme = calloc(n, 2);
	zn_adam_defaults(&r.hp);
	r.hp.weight_decay = 0.01;
	r.pool = threads > 1 ? zn_threadpool_create(threads, -1) : NULL;
	uint64_t groups = zn_optswap_groups(rg.os);
	if (copy_to_swapper) {
		/* Its own store region: the optimizer's store is sized exactly. */
		const char *dir = tu_path("copies");
		mkdir(dir, 0700);
		struct zn_bufpool_config pc = { .buffer_count = 2, .buffer_bytes = sub * 2,
						.numa_node = -1 };
		copy_pool = zn_bufpool_create(&pc, rg.aio);
		struct zn_store_config sc = { .paths = &dir, .npaths = 1, .capacity = n * 2 + groups * 8192,
					      .checksum = true };
		struct zn_store *cs = zn_store_create(&sc, rg.aio);
		assert_non_null(cs);
		struct zn_swapper_config swc = { cs, copy_pool, NULL };
		r.sw = zn_swapper_create(&swc);
		r.copy_t = calloc(groups, sizeof(*r.copy_t));
		for (uint64_t g = 0; g < groups; g++) {
			char name[32];
			snprintf(name, sizeof(name), "bf16 copy %llu", (unsigned long long)g);
			assert_int_equal(zn_swapper_add(r.sw, name, ZN_MIN_T(sub, n - g * sub) * 2,
							ZN_TIER_NVME, &r.copy_t[g]),
					 0);
		}
		rg.copy_store = cs;
	}
	uint64_t rs = n ^ sub;
	for (uint64_t i = 0; i < n; i++)
		r.param[i] = (float)((double)(tu_rand(&rs) >> 11) / 9007199254740992.0 - 0.5);
	write_initial(&rg, &r, sub);

	for (r.step = 1; r.step <= 4; r.step++) {
		for (uint64_t i = 0; i < n; i++)
			r.grad[i] = (float)((double)(tu_rand(&rs) >> 11) / 9007199254740992.0 - 0.5) *
				    0.1f;
		/* In memory: one call over everything. */
		assert_int_equal(adam(&r, n, r.param, r.m, r.v, r.grad, r.copy_ref), 0);
		assert_int_equal(zn_optswap_step(rg.os, update_nvme, &r), 0);
		copies_of(&r, groups);
		if (memcmp(r.copy_ref, r.copy_nvme, n * 2) != 0)
			fail_msg("parameter copies differ after step %llu", (unsigned long long)r.step);
	}
	compare_all(&rg, &r, sub);
	struct zn_optswap_stats st;
	zn_optswap_last_stats(rg.os, &st);
	assert_true(st.bytes_read >= groups * 3 * sub * 4 - 3 * sub * 4);
	assert_int_equal(st.bytes_read, st.bytes_written);
	assert_true(st.step_s > 0 && st.update_s > 0);
	assert_true(zn_trace_count(rg.trace) >= 3 * groups);
	if (r.sw) {
		for (uint64_t g = 0; g < groups; g++)
			assert_int_equal(zn_swapper_remove(r.sw, r.copy_t[g]), 0);
		zn_swapper_destroy(r.sw);
		zn_bufpool_destroy(copy_pool);
		free(r.copy_t);
	}
	zn_threadpool_destroy(r.pool);
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
		bool pr, pw, to_swapper;
		unsigned threads;
	} cases[] = {
		{ 100003, 100003, 1, 0, false, false, false, 1 }, /* one group, serial */
		{ 100003, 30000, 1, 0, false, false, false, 2 },  /* partial last group */
		{ 100003, 30000, 2, 0, true, false, true, 1 },
		{ 100003, 30000, 3, 0, false, true, false, 2 },
		{ 100003, 16384, 3, 0, true, true, true, 2 },
		{ 100003, 4096, 2, 5, true, true, false, 1 },     /* read-ahead of 3 groups */
		{ 65536, 65536, 2, 4, true, true, true, 2 },
		{ 200000, 7777, 1, 4, true, false, false, 2 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		run_case(cases[i].n, cases[i].sub, cases[i].paths, cases[i].pr, cases[i].pw,
			 cases[i].buffers, cases[i].to_swapper, cases[i].threads);
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
	struct run r = { .n = n, .sub = sub };
	assert_int_equal(rig_up(&rg, n, sub, 1, true, true, 0), 0);
	r.param = malloc(n * 4);
	r.m = calloc(n, 4);
	r.v = calloc(n, 4);
	r.grad = malloc(n * 4);
	r.copy_ref = calloc(n, 2);
	r.copy_nvme = calloc(n, 2);
	zn_adam_defaults(&r.hp);
	r.hp.lr = 1e-2;
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

	/* So does a lent group's write: its error comes at the sync. */
	float *st[3];
	assert_int_equal(zn_optswap_group_fill(rg.os, 1, st), 0);
	for (unsigned k = 0; k < 3; k++)
		memset(st[k], 0x7f, sub * 4);
	signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	rc = zn_optswap_group_write(rg.os, 1);
	if (!rc)
		rc = zn_optswap_group_sync(rg.os);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, SIG_DFL);
	assert_int_equal(rc, -EFBIG);
	assert_non_null(strstr(zn_last_error(), "sub-group 1"));
	compare_all(&rg, &r, sub);

	assert_int_equal(adam(&r, n, r.param, r.m, r.v, r.grad, r.copy_ref), 0);
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

/* A step's update that checks it finds the states the test filled in
 * (value i + k / 4 for element i of array k) and leaves them as they are. */
static int update_check(void *user, uint64_t group, uint64_t first, uint64_t n,
			float *const *states)
{
	(void)group;
	unsigned *bad = user;
	for (uint64_t i = 0; i < n; i++)
		for (unsigned k = 0; k < 3; k++)
			*bad += states[k][i] != (float)(first + i) + (float)k / 4;
	return 0;
}

/* Sub-groups lent between steps: filled in place and written behind, read
 * back in order (each read starting the next ones'), mixed with the
 * copying calls, with every buffer count and a short last group; a group
 * whose buffer is lent is refused, and so is a step; a step afterwards
 * finds what was filled. */
static void test_lent_groups(void **state)
{
	(void)state;
	static const struct {
		uint64_t n, sub;
		unsigned buffers;
		bool pr, pw;
	} cases[] = {
		{ 10000, 3000, 0, false, false }, /* one buffer */
		{ 10000, 3000, 0, true, false },
		{ 10000, 2500, 0, true, true },
		{ 20001, 1000, 5, true, true },
	};
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		struct rig rg;
		const uint64_t n = cases[c].n, sub = cases[c].sub;
		assert_int_equal(rig_up(&rg, n, sub, 2, cases[c].pr, cases[c].pw,
					cases[c].buffers), 0);
		const uint64_t G = zn_optswap_groups(rg.os);
		for (uint64_t g = 0; g < G; g++) {
			float *st[3];
			uint64_t len = ZN_MIN_T(sub, n - g * sub);
			assert_int_equal(zn_optswap_group_fill(rg.os, g, st), 0);
			for (uint64_t i = 0; i < len; i++)
				for (unsigned k = 0; k < 3; k++)
					st[k][i] = (float)(g * sub + i) + (float)k / 4;
			if (g == 0) { /* its buffer is lent: refused, also to a step */
				const float *ro[3];
				unsigned dummy = 0;
				/* the buffers: 1 + pipeline_read + pipeline_write, or
				 * buffer_count when reading ahead */
				unsigned need = 1 + cases[c].pr + cases[c].pw;
				uint64_t same = cases[c].pr && cases[c].buffers > need
							? cases[c].buffers
							: need;
				assert_true(same < G);
				assert_int_equal(zn_optswap_group_read(rg.os, same, ro), -EBUSY);
				assert_non_null(strstr(zn_last_error(), "share its buffer"));
				assert_int_equal(zn_optswap_step(rg.os, update_check, &dummy),
						 -EBUSY);
				assert_non_null(strstr(zn_last_error(), "lent"));
			}
			assert_int_equal(zn_optswap_group_write(rg.os, g), 0);
		}
		assert_int_equal(zn_optswap_group_sync(rg.os), 0);
		/* Writing a group not lent is refused. */
		assert_int_equal(zn_optswap_group_write(rg.os, 0), -EINVAL);
		for (int pass = 0; pass < 2; pass++) {
			for (uint64_t g = 0; g < G; g++) {
				const float *st[3];
				uint64_t len = ZN_MIN_T(sub, n - g * sub);
				assert_int_equal(zn_optswap_group_read(rg.os, g, st), 0);
				for (uint64_t i = 0; i < len; i++)
					for (unsigned k = 0; k < 3; k++)
						if (st[k][i] != (float)(g * sub + i) + (float)k / 4)
							fail_msg("case %zu: group %llu element %llu "
								 "array %u", c, (unsigned long long)g,
								 (unsigned long long)i, k);
				zn_optswap_group_release(rg.os, g);
			}
		}
		/* The copying calls between lent reads: a group rewritten with
		 * its own values, read back through a copy. */
		float *a = malloc(sub * 4), *b = malloc(sub * 4), *v = malloc(sub * 4);
		float *cp[3] = { a, b, v };
		const float *ro[3];
		assert_int_equal(zn_optswap_group_read(rg.os, 0, ro), 0);
		zn_optswap_group_release(rg.os, 0);
		assert_int_equal(zn_optswap_read_group(rg.os, G - 1, cp), 0);
		assert_int_equal(zn_optswap_write_group(rg.os, G - 1, (const float *const *)cp), 0);
		assert_true(a[0] == (float)((G - 1) * sub) && v[0] == a[0] + 0.5f);
		free(a);
		free(b);
		free(v);
		unsigned bad = 0;
		assert_int_equal(zn_optswap_step(rg.os, update_check, &bad), 0);
		assert_int_equal(bad, 0);
		rig_down(&rg);
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
		cmocka_unit_test(test_bit_identical),
		cmocka_unit_test(test_buffer_count_too_small),
		cmocka_unit_test(test_failed_write_keeps_previous_state),
		cmocka_unit_test(test_lent_groups),
	};
	return cmocka_run_group_tests(tests, NULL, teardown);
}
