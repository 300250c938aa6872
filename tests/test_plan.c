/* The memory plan (include/zinc/plan.h): each tier's need against the
 * formulas restated here from the tensor list, NVMe rows per directory
 * (shared, striped, missing), the suggestions (each one's promised figure is
 * what the plan of the changed config says), the report's snprintf rule and
 * zn_plan_check.  tests/test_plan_cli.py checks the same through `zinc plan`,
 * and that training with exactly the planned device memory runs. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "testutil.h"
#include "zinc/device.h"
#include "zinc/model.h"
#include "zinc/plan.h"

#define A256(x) (((uint64_t)(x) + 255) / 256 * 256)
#define A4K(x) (((uint64_t)(x) + 4095) / 4096 * 4096)

static struct zn_plan plan;

static void base_config(struct zn_config *c)
{
	zn_config_default(c);
	c->model.n_layer = 2;
	c->model.n_head = 2;
	c->model.n_embd = 40;
	c->model.vocab_size = 300;
	c->model.seq_len = 24;
	c->batch.micro_batch = 3;
	c->batch.grad_accum = 1;
	c->batch.train_batch_size = 3;
}

/* The model's numbers, from zn_gpt2_layer_params directly. */
struct sums {
	uint64_t P, largest, dev_all, nvme16, nvme32;
};

static void sums_of(const struct zn_config *c, struct sums *s)
{
	struct zn_gpt2_config m = { .n_layer = (int)c->model.n_layer, .n_head = (int)c->model.n_head,
				    .n_embd = (int)c->model.n_embd,
				    .vocab_size = (int)c->model.vocab_size,
				    .max_seq_len = (int)c->model.seq_len };
	assert_int_equal(zn_gpt2_config_check(&m), 0);
	memset(s, 0, sizeof(*s));
	for (unsigned l = 0; l < zn_gpt2_layers(&m); l++) {
		struct zn_param_desc d[ZN_GPT2_BLOCK_TENSORS];
		unsigned n = zn_gpt2_layer_params(&m, l, d, ZN_GPT2_BLOCK_TENSORS);
		for (unsigned i = 0; i < n; i++) {
			s->P += d[i].numel;
			s->largest = d[i].numel > s->largest ? d[i].numel : s->largest;
			s->dev_all += A256(4 * d[i].numel);
			s->nvme16 += A4K(2 * d[i].numel);
			s->nvme32 += A4K(4 * d[i].numel);
		}
	}
}

static uint64_t activations(const struct zn_config *c, uint64_t *host)
{
	struct zn_gpt2_config m = { .n_layer = (int)c->model.n_layer, .n_head = (int)c->model.n_head,
				    .n_embd = (int)c->model.n_embd,
				    .vocab_size = (int)c->model.vocab_size,
				    .max_seq_len = (int)c->model.seq_len,
				    .recompute = c->activation_checkpointing.enabled,
				    .offload_activations = c->activation_checkpointing.cpu_checkpointing };
	uint64_t dev;
	assert_int_equal(zn_gpt2_activation_estimate(&m, (int)c->batch.micro_batch,
						     (int)c->model.seq_len, ZN_DEVICE_ALIGN, &dev,
						     host),
			 0);
	return dev;
}

static const struct zn_plan_tier *tier(const struct zn_plan *p, const char *name)
{
	for (unsigned i = 0; i < p->ntiers; i++)
		if (strcmp(p->tiers[i].name, name) == 0)
			return &p->tiers[i];
	fail_msg("no tier '%s' in the plan", name);
	return NULL;
}

static uint64_t item_sum(const struct zn_plan_tier *t)
{
	uint64_t s = 0;
	for (unsigned i = 0; i < t->nitems; i++)
		s += t->items[i].bytes;
	return s;
}

static void test_resident_tiers(void **state)
{
	(void)state;
	struct zn_config c;
	struct sums s;
	base_config(&c);
	sums_of(&c, &s);
	const uint64_t BT = 3 * 24;

	/* offload_optimizer none: everything on the device. */
	assert_int_equal(zn_plan_compute(&c, &plan), 0);
	assert_int_equal(plan.params, s.P);
	assert_int_equal(plan.largest, s.largest);
	assert_int_equal(plan.ntiers, 3);
	const struct zn_plan_tier *dev = tier(&plan, "device");
	uint64_t want = 5 * s.dev_all + 2 * 256 + 2 * A256(4 * BT) + activations(&c, NULL);
	assert_int_equal(dev->needed, want);
	assert_int_equal(item_sum(dev), dev->needed);
	assert_true(dev->counted_elsewhere && dev->fits); /* cpu, no memory_limit */
	const struct zn_plan_tier *pag = tier(&plan, "pageable host");
	assert_int_equal(pag->needed, 12 * s.P + 12 * BT + want);
	assert_int_equal(tier(&plan, "pinned host")->needed, 0);
	assert_true(pag->known && pag->available > 0 && pag->total >= pag->available);
	assert_true(zn_plan_fits(&plan));

	/* ZeRO-Offload with bf16 accumulators and activation checkpointing. */
	c.zero_optimization.offload_optimizer.device = ZN_OFFLOAD_CPU;
	c.data_types.grad_accum_dtype = ZN_GRAD_ACCUM_BF16;
	c.bf16.enabled = true;
	c.activation_checkpointing.enabled = true;
	c.activation_checkpointing.cpu_checkpointing = true;
	assert_int_equal(zn_plan_compute(&c, &plan), 0);
	uint64_t host_acts = 0;
	want = 2 * s.dev_all + A256(2 * s.largest) + 2 * A256(4 * BT) + activations(&c, &host_acts);
	assert_true(host_acts > 0);
	assert_int_equal(tier(&plan, "device")->needed, want);
	/* master, m, v; 16-bit accumulators (one micro-batch per step: no
	 * staging buffer to add later ones through). */
	assert_int_equal(tier(&plan, "pageable host")->needed,
			 12 * s.P + 2 * s.P + 12 * BT + host_acts + want);
}

static void test_offloaded_parameters_on_nvme(void **state)
{
	(void)state;
	struct zn_config c;
	struct sums s;
	base_config(&c);
	sums_of(&c, &s);
	const char *dir = tu_scratch_dir();
	struct zn_zero_config *z = &c.zero_optimization;
	z->stage = 3;
	z->sub_group_size = 5000;
	z->param_persistence_threshold = 0; /* every tensor offloaded */
	z->offload_param.max_in_cpu = 0;    /* every home on NVMe */
	z->offload_param.device = ZN_OFFLOAD_NVME;
	z->offload_optimizer.device = ZN_OFFLOAD_NVME;
	z->offload_optimizer.pipeline_read = true;
	z->offload_optimizer.buffer_count = 5;
	snprintf(z->offload_param.nvme_path, sizeof(z->offload_param.nvme_path), "%s", dir);
	/* The same directory spelt differently: still one row. */
	snprintf(z->offload_optimizer.nvme_path, sizeof(z->offload_optimizer.nvme_path), "%s/.",
		 dir);
	c.fp16.enabled = true;
	/* First with host accumulators for the gradients. */
	z->offload_optimizer.gradients = ZN_OFFLOAD_GRADS_HOST;
	assert_int_equal(zn_plan_compute(&c, &plan), 0);
	assert_int_equal(plan.ntiers, 4);
	const struct zn_plan_tier *nv = &plan.tiers[3];
	assert_int_equal(nv->kind, ZN_PLAN_NVME);
	assert_int_equal(nv->nitems, 2);
	/* Optimizer store: ceil(P / sub) groups + 5 slots (pipeline_read takes
	 * buffer_count), 3 arrays of A4K(4 sub) each. */
	uint64_t groups = (s.P + 4999) / 5000;
	uint64_t opt = (groups + 5) * 3 * A4K(4 * 5000);
	assert_int_equal(nv->needed, A4K(opt) + s.nvme16);
	/* Pinned: 5 optimizer slots, and the parameter pool (DeepSpeed's 5
	 * buffers, auto size: the largest tensor in 16-bit). */
	assert_int_equal(tier(&plan, "pinned host")->needed,
			 5 * 3 * A4K(4 * 5000) + 5 * A4K(2 * s.largest));
	assert_true(nv->available > 0 && nv->total >= nv->available);
	/* Host: fp32 accumulators, the batch, the device's bytes; no staging
	 * (start-up makes the states in the swapper's buffers). */
	assert_int_equal(tier(&plan, "pageable host")->needed,
			 4 * s.P + 12 * 3 * 24 + tier(&plan, "device")->needed);
	/* With checkpoints: the model file's writer, a block of the largest
	 * Conv1D weight's rows and a column's run: (4C, C) whole, 4C (C + 1)
	 * elements. */
	snprintf(c.checkpoint.dir, sizeof(c.checkpoint.dir), "%s", tu_path("ckpt"));
	assert_int_equal(zn_plan_compute(&c, &plan), 0);
	assert_int_equal(tier(&plan, "pageable host")->needed,
			 4 * s.P + 4 * (4 * 40 * 41) + 12 * 3 * 24 +
				 tier(&plan, "device")->needed);
	c.checkpoint.dir[0] = 0;

	/* Gradients on NVMe (auto, one rank): every sub-group's gradients
	 * beside its states, listed apart; each swapper slot holds a group's
	 * gradients too; host memory keeps no accumulator, only the largest
	 * tensor's sums on their way. */
	z->offload_optimizer.gradients = ZN_OFFLOAD_GRADS_AUTO;
	assert_int_equal(zn_plan_compute(&c, &plan), 0);
	nv = &plan.tiers[3];
	assert_int_equal(nv->nitems, 3);
	assert_non_null(strstr(nv->items[1].name, "gradients (fp32"));
	assert_int_equal(nv->items[1].bytes, groups * A4K(4 * 5000));
	assert_int_equal(nv->needed, A4K(opt + groups * A4K(4 * 5000)) + s.nvme16);
	assert_int_equal(tier(&plan, "pinned host")->needed,
			 5 * 4 * A4K(4 * 5000) + 5 * A4K(2 * s.largest));
	assert_int_equal(tier(&plan, "pageable host")->needed,
			 4 * s.largest + 12 * 3 * 24 +
				 tier(&plan, "device")->needed);

	/* Two directories: each gets half, rounded, plus two stripes. */
	char two[ZN_NVME_PATH_MAX];
	mkdir(tu_path("a"), 0755);
	mkdir(tu_path("b"), 0755);
	snprintf(two, sizeof(two), "%s,%s", tu_path("a"), tu_path("b"));
	snprintf(z->offload_param.nvme_path, sizeof(z->offload_param.nvme_path), "%s", two);
	z->offload_optimizer.device = ZN_OFFLOAD_CPU;
	assert_int_equal(zn_plan_compute(&c, &plan), 0);
	assert_int_equal(plan.ntiers, 5);
	for (unsigned i = 3; i < 5; i++)
		assert_int_equal(plan.tiers[i].needed,
				 A4K((s.nvme16 + 1) / 2) + 2 * z->offload_param.stripe_size);
	/* Both on one filesystem: noted. */
	assert_non_null(strstr(plan.tiers[3].note, "shares its filesystem"));

	/* A buffer_size below the largest tensor is a plan error. */
	z->offload_param.buffer_size = s.largest - 1;
	assert_int_equal(zn_plan_compute(&c, &plan), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "buffer_size"));
}

/* Persistence and max_in_cpu: small tensors stay on the device, the first
 * offloaded elements keep host homes, the rest go to NVMe -- walked here
 * tensor by tensor as the trainer does. */
static void test_mixed_placement(void **state)
{
	(void)state;
	struct zn_config c;
	base_config(&c);
	struct zn_zero_config *z = &c.zero_optimization;
	z->stage = 3;
	z->param_persistence_threshold = 200;
	z->offload_param.device = ZN_OFFLOAD_NVME;
	z->offload_param.max_in_cpu = 3000;
	z->offload_optimizer.device = ZN_OFFLOAD_CPU;
	snprintf(z->offload_param.nvme_path, ZN_NVME_PATH_MAX, "%s", tu_scratch_dir());
	struct zn_gpt2_config m = { .n_layer = 2, .n_head = 2, .n_embd = 40, .vocab_size = 300,
				    .max_seq_len = 24 };
	assert_int_equal(zn_gpt2_config_check(&m), 0);
	uint64_t resident = 0, in_cpu = 0, nvme = 0, nvme_largest = 0, per_layer[4] = { 0 };
	for (unsigned l = 0; l < zn_gpt2_layers(&m); l++) {
		struct zn_param_desc d[ZN_GPT2_BLOCK_TENSORS];
		unsigned n = zn_gpt2_layer_params(&m, l, d, ZN_GPT2_BLOCK_TENSORS);
		for (unsigned i = 0; i < n; i++) {
			uint64_t e = d[i].numel;
			if (e < 200) {
				resident += A256(4 * e);
				continue;
			}
			per_layer[l] += A256(4 * e);
			if (in_cpu + e > 3000) {
				nvme += A4K(4 * e);
				nvme_largest = e > nvme_largest ? e : nvme_largest;
			} else {
				in_cpu += e;
			}
		}
	}
	assert_true(resident && in_cpu && nvme); /* all three homes in use */
	assert_int_equal(zn_plan_compute(&c, &plan), 0);
	const struct zn_plan_tier *dev = tier(&plan, "device");
	uint64_t blk = per_layer[1] > per_layer[2] ? per_layer[1] : per_layer[2];
	uint64_t in_use = 2 * (per_layer[0] + per_layer[3]);
	if (per_layer[0] + 2 * blk > in_use)
		in_use = per_layer[0] + 2 * blk;
	assert_int_equal(dev->needed, 2 * resident + in_use + 2 * A256(4 * 3 * 24) +
					      activations(&c, NULL));
	assert_int_equal(plan.ntiers, 4);
	assert_int_equal(plan.tiers[3].needed, A4K(nvme));
	assert_int_equal(tier(&plan, "pinned host")->needed, 5 * A4K(4 * nvme_largest));
	bool homes = false;
	const struct zn_plan_tier *pag = tier(&plan, "pageable host");
	for (unsigned i = 0; i < pag->nitems; i++)
		homes |= strstr(pag->items[i].name, "parameter homes") &&
			 pag->items[i].bytes == 4 * in_cpu;
	assert_true(homes);

	/* Everything within max_in_cpu: no NVMe row, nvme_path not even
	 * looked at (the trainer never opens it), and a note says why. */
	z->offload_param.max_in_cpu = 1000000000;
	snprintf(z->offload_param.nvme_path, ZN_NVME_PATH_MAX, "%s", tu_path("absent"));
	assert_int_equal(zn_plan_compute(&c, &plan), 0);
	assert_int_equal(plan.ntiers, 3);
	assert_non_null(strstr(tier(&plan, "pageable host")->note, "max_in_cpu"));
}

static void test_bad_paths_name_the_key(void **state)
{
	(void)state;
	struct zn_config c;
	base_config(&c);
	c.zero_optimization.offload_optimizer.device = ZN_OFFLOAD_NVME;
	snprintf(c.zero_optimization.offload_optimizer.nvme_path, ZN_NVME_PATH_MAX, "%s",
		 tu_path("missing"));
	assert_int_equal(zn_plan_compute(&c, &plan), -ENOENT);
	assert_non_null(strstr(zn_last_error(), "zero_optimization.offload_optimizer.nvme_path: '"));
	assert_non_null(strstr(zn_last_error(), "does not exist"));
	assert_non_null(strstr(zn_last_error(), tu_path("missing")));
	FILE *f = fopen(tu_path("file"), "w");
	assert_non_null(f);
	fclose(f);
	snprintf(c.zero_optimization.offload_optimizer.nvme_path, ZN_NVME_PATH_MAX, "%s",
		 tu_path("file"));
	assert_int_equal(zn_plan_compute(&c, &plan), -ENOTDIR);

	/* offload_param outside stage 3, no batch: refused as zinc train does. */
	base_config(&c);
	c.zero_optimization.offload_param.device = ZN_OFFLOAD_CPU;
	c.zero_optimization.offload_optimizer.device = ZN_OFFLOAD_CPU;
	assert_int_equal(zn_plan_compute(&c, &plan), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "stage 3"));
	base_config(&c);
	c.batch.micro_batch = 0;
	assert_int_equal(zn_plan_compute(&c, &plan), -EINVAL);
	base_config(&c);
	c.model.n_embd = 41;
	assert_int_equal(zn_plan_compute(&c, &plan), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "model.n_embd"));
}

/* Each suggestion's "then needs X" is the plan of the changed config. */
static void test_device_short_and_suggestions(void **state)
{
	(void)state;
	struct zn_config c, v;
	char a[32];
	base_config(&c);
	assert_int_equal(zn_plan_compute(&c, &plan), 0);
	uint64_t need = tier(&plan, "device")->needed;
	c.device.memory_limit = need - 256;
	assert_int_equal(zn_plan_compute(&c, &plan), 0);
	const struct zn_plan_tier *dev = tier(&plan, "device");
	assert_false(dev->fits);
	assert_false(dev->counted_elsewhere);
	assert_int_equal(dev->available, need - 256);
	assert_false(zn_plan_fits(&plan));
	assert_true(dev->nadvice >= 4);

	static const char *const wanted[] = { "offload_optimizer.device: cpu", "offload_param",
					      "activation_checkpointing",
					      "train_micro_batch_size_per_gpu",
					      "device.memory_limit" };
	for (size_t w = 0; w < sizeof(wanted) / sizeof(wanted[0]); w++) {
		bool found = false;
		for (unsigned k = 0; k < dev->nadvice; k++)
			found |= strstr(dev->advice[k], wanted[w]) != NULL;
		if (!found)
			fail_msg("no suggestion mentions '%s'", wanted[w]);
	}
	struct zn_plan *alt = malloc(sizeof(*alt));
	assert_non_null(alt);
	v = c;
	v.zero_optimization.offload_optimizer.device = ZN_OFFLOAD_CPU;
	assert_int_equal(zn_plan_compute(&v, alt), 0);
	zn_format_size(tier(alt, "device")->needed, a, sizeof(a));
	assert_non_null(strstr(dev->advice[0], a));
	assert_true(tier(alt, "device")->needed < need);
	v = c;
	v.activation_checkpointing.enabled = true;
	assert_int_equal(zn_plan_compute(&v, alt), 0);
	assert_true(tier(alt, "device")->needed < need);
	free(alt);

	/* The report: table, parts with exact bytes, what to change. */
	int n = zn_plan_format(&plan, NULL, 0);
	assert_true(n > 0);
	char *full = malloc((size_t)n + 1);
	assert_int_equal(zn_plan_format(&plan, full, (size_t)n + 1), n);
	assert_int_equal(strlen(full), (size_t)n);
	char exact[64];
	snprintf(exact, sizeof(exact), "device needs %s (%llu bytes)",
		 zn_format_size(need, a, sizeof(a)), (unsigned long long)need);
	assert_non_null(strstr(full, exact));
	assert_non_null(strstr(full, "what to change"));
	assert_non_null(strstr(full, "SHORT by 256 B"));
	assert_non_null(strstr(full, "fits: NO"));
	/* Truncation keeps the snprintf rule. */
	char small[40];
	assert_int_equal(zn_plan_format(&plan, small, sizeof(small)), n);
	assert_int_equal(strlen(small), sizeof(small) - 1);
	assert_memory_equal(small, full, sizeof(small) - 1);

	/* zn_plan_check: -ENOMEM, a summary naming the limit, the report. */
	char *report = malloc(65536);
	assert_int_equal(zn_plan_check(&c, report, 65536), -ENOMEM);
	assert_non_null(strstr(zn_last_error(), "device.memory_limit"));
	/* (host figures move between calls; the device's do not) */
	assert_non_null(strstr(report, exact));
	assert_non_null(strstr(report, dev->advice[0]));
	c.device.memory_limit = need;
	assert_int_equal(zn_plan_check(&c, report, 65536), 0);
	c.model.n_embd = 41;
	assert_int_equal(zn_plan_check(&c, report, 65536), -EINVAL);
	assert_string_equal(report, "");
	free(report);
	free(full);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_resident_tiers),
		cmocka_unit_test(test_offloaded_parameters_on_nvme),
		cmocka_unit_test(test_mixed_placement),
		cmocka_unit_test(test_bad_paths_name_the_key),
		cmocka_unit_test(test_device_short_and_suggestions),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	tu_scratch_cleanup();
	return rc;
}
