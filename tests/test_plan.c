/* The memory plan (include/zinc/plan.h): each tier's need against the
 * formulas restated here from the tensor list, NVMe rows per directory
 * (shared, striped, missing), the suggestions (each one's promised figure is
 * what the plan of the changed config says), the report's snprintf rule and
 * zn_plan_check; a described machine (its parser, each part replacing what
 * is measured, its disks shared by rule); the largest model that fits
 * (its plan is the config's with that shape, the next size up does not
 * fit).  tests/test_plan_cli.py checks the same through `zinc plan`, and
 * that training with exactly the planned device memory runs. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "testutil.h"
#include "zinc/device.h"
#include "zinc/hf.h"
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
	uint64_t P, largest, dev_all, dev16, nvme16, nvme32;
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
			s->dev16 += A256(2 * d[i].numel);
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
				    .offload_activations = c->activation_checkpointing.cpu_checkpointing,
				    /* kept in the training dtype, on either backend */
				    .act_dtype = c->bf16.enabled   ? ZN_DTYPE_BF16
						 : c->fp16.enabled ? ZN_DTYPE_F16
								   : ZN_DTYPE_F32 };
	uint64_t dev;
	assert_int_equal(zn_gpt2_activation_estimate(&m, (int)c->batch.micro_batch,
						     (int)c->model.seq_len, ZN_DEVICE_ALIGN, &dev,
						     host),
			 0);
	return dev;
}

/* The cpu kernels' own scratch (pageable host memory beside the cpu
 * backend's device), as include/zinc/kernels.h bounds it for
 * this GPT-2 (a worker per core): per worker, attention's two blocks of
 * 64 x T floats (16-bit: or a row of 2 C + 32, or of the padded
 * vocabulary); 16-bit storage: the widening buffer, three blocks of the
 * most an op takes (BT rows of the widest row, 4 C or maxT; the largest
 * weight, the padded embedding; T rows of an attention group of 3 HS), and the
 * larger of the padded vocabulary and 3 x that row. */
static uint64_t kernel_ws(const struct zn_config *c)
{
#define AL16(x) (((x) + 15) / 16 * 16)
#define MAX(a, b) ((a) > (b) ? (a) : (b))
	const uint64_t T = c->model.seq_len, C = c->model.n_embd, BT = c->batch.micro_batch * T;
	const uint64_t Vp = (c->model.vocab_size + 127) / 128 * 128;
	const uint64_t row = MAX(4 * C, T), G = 3 * (C / c->model.n_head);
	uint64_t per = 2 * 64 * T, wide = 0;
	if (c->bf16.enabled || c->fp16.enabled) {
		per = MAX(per, MAX(2 * C + 32, Vp));
		uint64_t most = MAX(MAX(BT * row, Vp * C), T * G);
		assert_true(most < ((uint64_t)4 << 20)); /* these models fit a block */
		wide = 3 * most + MAX(Vp, 3 * row);
	}
	return ((uint64_t)sysconf(_SC_NPROCESSORS_ONLN) * AL16(per) + AL16(wide)) * 4;
#undef AL16
#undef MAX
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
	assert_int_equal(pag->needed, 12 * s.P + 12 * BT + want + kernel_ws(&c));
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
	/* (the fp32 parameters and gradients, and their 16-bit copies the
	 * kernels compute with) */
	want = 2 * s.dev_all + 2 * s.dev16 + A256(2 * s.largest) + 2 * A256(4 * BT) + activations(&c, &host_acts);
	assert_true(host_acts > 0);
	assert_int_equal(tier(&plan, "device")->needed, want);
	/* master, m, v; 16-bit accumulators (one micro-batch per step: no
	 * staging buffer to add later ones through). */
	assert_int_equal(tier(&plan, "pageable host")->needed,
			 12 * s.P + 2 * s.P + 12 * BT + host_acts + want + kernel_ws(&c));
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
	/* (the layers' fp16 gradients cross into the fp32 accumulators
	 * through a staging buffer of the largest tensor in fp32) */
	assert_int_equal(tier(&plan, "pageable host")->needed,
			 4 * s.P + 4 * s.largest + 12 * 3 * 24 + tier(&plan, "device")->needed + kernel_ws(&c));
	/* With checkpoints: the model file's writer, a block of the largest
	 * Conv1D weight's rows and a column's run: (4C, C) whole, 4C (C + 1)
	 * elements. */
	snprintf(c.checkpoint.dir, sizeof(c.checkpoint.dir), "%s", tu_path("ckpt"));
	assert_int_equal(zn_plan_compute(&c, &plan), 0);
	assert_int_equal(tier(&plan, "pageable host")->needed,
			 4 * s.P + 4 * s.largest + 4 * (4 * 40 * 41) + 12 * 3 * 24 +
				 tier(&plan, "device")->needed + kernel_ws(&c));
	c.checkpoint.dir[0] = 0;

	/* Gradients on NVMe (auto, one rank): every sub-group's gradients
	 * beside its states, listed apart; each swapper slot holds a group's
	 * gradients too; host memory keeps no accumulator, only the largest
	 * tensor's sums on their way (and the staging buffer its fp16
	 * gradients cross through). */
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
			 2 * 4 * s.largest + 12 * 3 * 24 +
				 tier(&plan, "device")->needed + kernel_ws(&c));

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

/* Stage 3 with the parameters and the optimizer states on NVMe and the
 * small tensors resident (a persistence threshold above 0): every tier's
 * items from the tensor list, walked here as the trainer places them, so
 * that an item counted twice -- a resident tensor's home on NVMe as well,
 * the overlapped update's staging for offloaded tensors too, a pool sized
 * by the largest tensor instead of the largest offloaded one -- is seen. */
static void test_nvme_with_resident_tensors(void **state)
{
	(void)state;
	struct zn_config c;
	base_config(&c);
	struct zn_zero_config *z = &c.zero_optimization;
	z->stage = 3;
	z->sub_group_size = 5000;
	z->param_persistence_threshold = 200;
	z->offload_param.device = ZN_OFFLOAD_NVME;
	z->offload_param.max_in_cpu = 0;
	z->offload_optimizer.device = ZN_OFFLOAD_NVME;
	z->offload_optimizer.pipeline_read = true;
	z->offload_optimizer.buffer_count = 5;
	z->offload_optimizer.gradients = ZN_OFFLOAD_GRADS_HOST;
	snprintf(z->offload_param.nvme_path, ZN_NVME_PATH_MAX, "%s", tu_scratch_dir());
	snprintf(z->offload_optimizer.nvme_path, ZN_NVME_PATH_MAX, "%s", tu_scratch_dir());
	struct zn_gpt2_config m = { .n_layer = 2, .n_head = 2, .n_embd = 40, .vocab_size = 300,
				    .max_seq_len = 24 };
	assert_int_equal(zn_gpt2_config_check(&m), 0);
	uint64_t P = 0, res_elems = 0, res_dev = 0, homes = 0, off_largest = 0;
	uint64_t per_layer[4] = { 0 };
	for (unsigned l = 0; l < zn_gpt2_layers(&m); l++) {
		struct zn_param_desc d[ZN_GPT2_BLOCK_TENSORS];
		unsigned n = zn_gpt2_layer_params(&m, l, d, ZN_GPT2_BLOCK_TENSORS);
		for (unsigned i = 0; i < n; i++) {
			uint64_t e = d[i].numel;
			P += e;
			if (e < 200) { /* resident: parameters and gradients on the device */
				res_elems += e;
				res_dev += A256(4 * e);
				continue;
			}
			per_layer[l] += A256(4 * e);
			homes += A4K(4 * e); /* fp32 training: fp32 homes */
			off_largest = e > off_largest ? e : off_largest;
		}
	}
	assert_true(res_elems > 0 && homes > 0);
	assert_int_equal(zn_plan_compute(&c, &plan), 0);
	assert_int_equal(plan.params, P);

	/* NVMe: every sub-group's master, m and v (ceil(P / 5000) groups and
	 * the 5 slots pipeline_read takes), and a home per offloaded tensor
	 * only. */
	assert_int_equal(plan.ntiers, 4);
	const struct zn_plan_tier *nv = &plan.tiers[3];
	const uint64_t groups = (P + 4999) / 5000;
	const uint64_t opt = (groups + 5) * 3 * A4K(4 * 5000);
	assert_int_equal(nv->nitems, 2);
	assert_int_equal(nv->items[0].bytes, A4K(opt));
	assert_int_equal(nv->items[1].bytes, homes);
	assert_int_equal(nv->needed, A4K(opt) + homes);

	/* Pinned: the optimizer swapper's 5 slots, the parameter pool's 5
	 * buffers of the largest offloaded tensor (resident ones never pass
	 * through it). */
	assert_int_equal(tier(&plan, "pinned host")->needed,
			 5 * 3 * A4K(4 * 5000) + 5 * A4K(4 * off_largest));

	/* Device: the resident tensors' parameters and gradients, the layers
	 * in use (the embedding's and the classifier's, or the first and a
	 * block prefetched), the batch, the activations. */
	const struct zn_plan_tier *dev = tier(&plan, "device");
	uint64_t blk = per_layer[1] > per_layer[2] ? per_layer[1] : per_layer[2];
	uint64_t in_use = 2 * (per_layer[0] + per_layer[3]);
	if (per_layer[0] + 2 * blk > in_use)
		in_use = per_layer[0] + 2 * blk;
	assert_int_equal(dev->needed,
			 2 * res_dev + in_use + 2 * A256(4 * 3 * 24) + activations(&c, NULL));
	assert_int_equal(item_sum(dev), dev->needed);

	/* Pageable: an fp32 gradient accumulator per parameter, the
	 * overlapped update's new values of the resident tensors alone, the
	 * batch, and the cpu backend's device and scratch. */
	const struct zn_plan_tier *pag = tier(&plan, "pageable host");
	assert_int_equal(pag->needed, 4 * P + 4 * res_elems + 12 * 3 * 24 + dev->needed +
					      kernel_ws(&c));
	assert_int_equal(item_sum(pag), pag->needed);
	bool staged = false;
	for (unsigned i = 0; i < pag->nitems; i++)
		staged |= strstr(pag->items[i].name, "overlapped update") &&
			  pag->items[i].bytes == 4 * res_elems;
	assert_true(staged);
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

/* ---- a described machine ------------------------------------------------ */

static bool advised(const struct zn_plan_tier *t, const char *words)
{
	for (unsigned k = 0; k < t->nadvice; k++)
		if (strstr(t->advice[k], words))
			return true;
	return false;
}

static void test_machine_parse(void **state)
{
	(void)state;
	static const struct {
		const char *text;
		uint64_t device, host;
		unsigned ndisks;
		uint64_t disk0, disk1;
	} good[] = {
		{ "device=24G,host=64G,nvme=2T", 24ull << 30, 64ull << 30, 1, 2ull << 40, 0 },
		{ "nvme=2T,nvme=1.2e12", 0, 0, 2, 2ull << 40, 1200000000000ull },
		{ "host=32GiB", 0, 32ull << 30, 0, 0, 0 },
		{ "device=24GB,nvme=512m", 24ull << 30, 0, 1, 512ull << 20, 0 },
		{ "host=4096", 0, 4096, 0, 0, 0 },
	};
	static const struct {
		const char *text, *says;
	} bad[] = {
		{ "", "empty" },
		{ "gpu=24G", "'gpu=24G': no such part" },
		{ "Device=24G", "no such part" },
		{ "device", "device: give its size" },
		{ "device=24X", "device: '24X' is not a size" },
		{ "host=1.5G", "host: '1.5G' is not a size" },
		{ "nvme=-1G", "nvme: '-1G' is not a size" },
		{ "nvme=", "nvme: '' is not a size" },
		{ "nvme=0", "nvme: 0 bytes" },
		{ "host=1G,host=2G", "host is given twice" },
		{ "device=1G,", "an empty part" },
		{ ",device=1G", "an empty part" },
		{ "device=1G,,host=1G", "an empty part" },
	};
	struct zn_plan_machine m;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		memset(&m, 0, sizeof(m));
		assert_int_equal(zn_plan_machine_parse(good[i].text, &m), 0);
		assert_int_equal(m.device, good[i].device);
		assert_int_equal(m.host, good[i].host);
		assert_int_equal(m.ndisks, good[i].ndisks);
		assert_int_equal(m.disk[0], good[i].disk0);
		assert_int_equal(m.disk[1], good[i].disk1);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&m, 0, sizeof(m));
		assert_int_equal(zn_plan_machine_parse(bad[i].text, &m), -EINVAL);
		if (!strstr(zn_last_error(), bad[i].says))
			fail_msg("'%s': '%s' does not say '%s'", bad[i].text, zn_last_error(),
				 bad[i].says);
	}
	/* At most ZN_PLAN_MAX_DISKS disks. */
	char text[512] = "";
	for (int i = 0; i <= ZN_PLAN_MAX_DISKS; i++)
		snprintf(text + strlen(text), sizeof(text) - strlen(text), "%snvme=1G", i ? "," : "");
	memset(&m, 0, sizeof(m));
	assert_int_equal(zn_plan_machine_parse(text, &m), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "more than 16 nvme disks"));
	/* Descriptions add up (two --machine options), a part still once. */
	memset(&m, 0, sizeof(m));
	assert_int_equal(zn_plan_machine_parse("device=1G", &m), 0);
	assert_int_equal(zn_plan_machine_parse("nvme=1T,nvme=2T", &m), 0);
	assert_int_equal(m.device, 1ull << 30);
	assert_int_equal(m.ndisks, 2);
	assert_int_equal(zn_plan_machine_parse("device=2G", &m), -EINVAL);
}

/* Two plans of one config: the same tiers and needs. */
static void assert_same_needs(const struct zn_plan *a, const struct zn_plan *b)
{
	assert_int_equal(a->ntiers, b->ntiers);
	assert_int_equal(a->params, b->params);
	for (unsigned i = 0; i < a->ntiers; i++) {
		assert_string_equal(a->tiers[i].name, b->tiers[i].name);
		assert_int_equal(a->tiers[i].needed, b->tiers[i].needed);
	}
}

static void test_described_host_and_device(void **state)
{
	(void)state;
	struct zn_config c;
	struct zn_plan *here = malloc(sizeof(*here));
	assert_non_null(here);
	base_config(&c);
	assert_int_equal(zn_plan_compute(&c, here), 0);
	assert_false(here->described);
	assert_string_equal(here->machine_text, "");

	/* Host: both host rows' capacity, the needs unchanged. */
	struct zn_plan_machine m = { .host = 1ull << 30 };
	assert_int_equal(zn_plan_compute_on(&c, &m, &plan), 0);
	assert_same_needs(&plan, here);
	assert_true(plan.described);
	assert_int_equal(plan.machine.host, 1ull << 30);
	assert_non_null(strstr(plan.machine_text, "described, not measured: host 1 GiB"));
	assert_non_null(strstr(plan.machine_text, "measured here: device, nvme"));
	const struct zn_plan_tier *pin = tier(&plan, "pinned host");
	const struct zn_plan_tier *pag = tier(&plan, "pageable host");
	const struct zn_plan_tier *dev = tier(&plan, "device");
	assert_true(pin->described && pag->described && !dev->described);
	assert_int_equal(pin->total, 1ull << 30);
	assert_int_equal(pin->available, 1ull << 30);
	assert_int_equal(pag->available, (1ull << 30) - pin->needed);
	assert_non_null(strstr(pag->source, "described host memory"));
	assert_true(dev->counted_elsewhere); /* cpu backend, nothing described for it */
	/* Exactly the need fits; a byte less does not, and says what host
	 * would. */
	uint64_t host_need = pag->needed + pin->needed;
	m.host = host_need;
	assert_int_equal(zn_plan_compute_on(&c, &m, &plan), 0);
	assert_true(zn_plan_fits(&plan));
	m.host = host_need - 1;
	assert_int_equal(zn_plan_compute_on(&c, &m, &plan), 0);
	assert_false(zn_plan_fits(&plan));
	pag = tier(&plan, "pageable host");
	assert_false(pag->fits);
	char a[32], want[96];
	snprintf(want, sizeof(want), "plan for a host with at least %s",
		 zn_format_size(host_need, a, sizeof(a)));
	assert_true(advised(pag, want));

	/* Device, cpu backend: the described device caps the device's
	 * allocations, and the pageable row still counts them. */
	const uint64_t dev_need = tier(here, "device")->needed;
	m = (struct zn_plan_machine){ .device = dev_need };
	assert_int_equal(zn_plan_compute_on(&c, &m, &plan), 0);
	assert_same_needs(&plan, here);
	dev = tier(&plan, "device");
	assert_true(dev->known && dev->described && !dev->counted_elsewhere && dev->fits);
	assert_int_equal(dev->available, dev_need);
	assert_non_null(strstr(dev->note, "pageable host row counts these bytes too"));
	pag = tier(&plan, "pageable host");
	assert_false(pag->described);
	assert_int_equal(pag->items[pag->nitems - 1].bytes, dev_need);
	m.device = dev_need - 1;
	assert_int_equal(zn_plan_compute_on(&c, &m, &plan), 0);
	dev = tier(&plan, "device");
	assert_false(dev->fits);
	assert_false(zn_plan_fits(&plan));
	snprintf(want, sizeof(want), "plan for a device with at least %s",
		 zn_format_size(dev_need, a, sizeof(a)));
	assert_true(advised(dev, want));
	/* device.memory_limit below the described device still applies. */
	c.device.memory_limit = dev_need - 256;
	m.device = 1ull << 40;
	assert_int_equal(zn_plan_compute_on(&c, &m, &plan), 0);
	dev = tier(&plan, "device");
	assert_int_equal(dev->available, dev_need - 256);
	assert_int_equal(dev->total, 1ull << 40);
	assert_non_null(strstr(dev->source, "device.memory_limit (the described device has 1 TiB)"));

	/* A GPU: no GPU needed here to plan for a described one. */
	base_config(&c);
	c.device.type = ZN_DEVICE_CUDA;
	c.device.memory_limit = 32ull << 30;
	m = (struct zn_plan_machine){ .device = 24ull << 30 };
	assert_int_equal(zn_plan_compute_on(&c, &m, &plan), 0);
	dev = tier(&plan, "device");
	assert_true(dev->known && dev->described && dev->fits);
	assert_int_equal(dev->available, 24ull << 30);
	assert_string_equal(dev->source, "the described device's memory");
	assert_non_null(strstr(dev->note, "more than the described device's memory"));
	assert_non_null(strstr(plan.machine_text, "device 24 GiB; measured here: host, nvme"));
	free(here);
}

/* Both sections on NVMe, every home there: two nvme rows. */
static void nvme_config(struct zn_config *c, const char *opt_path, const char *param_path)
{
	base_config(c);
	struct zn_zero_config *z = &c->zero_optimization;
	z->stage = 3;
	z->sub_group_size = 5000;
	z->param_persistence_threshold = 0;
	z->offload_param.max_in_cpu = 0;
	z->offload_param.device = ZN_OFFLOAD_NVME;
	z->offload_optimizer.device = ZN_OFFLOAD_NVME;
	snprintf(z->offload_optimizer.nvme_path, ZN_NVME_PATH_MAX, "%s", opt_path);
	snprintf(z->offload_param.nvme_path, ZN_NVME_PATH_MAX, "%s", param_path);
}

static void test_described_disks(void **state)
{
	(void)state;
	struct zn_config c;
	char o[ZN_NVME_PATH_MAX], p[ZN_NVME_PATH_MAX];
	snprintf(o, sizeof(o), "%s", tu_path("nowhere-o"));
	snprintf(p, sizeof(p), "%s", tu_path("nowhere-p"));
	nvme_config(&c, o, p);
	/* Measured: the directories must exist. */
	assert_int_equal(zn_plan_compute(&c, &plan), -ENOENT);
	/* Described: they need not; one disk holds both, shared. */
	struct zn_plan_machine m = { .ndisks = 1, .disk = { 1ull << 40 } };
	assert_int_equal(zn_plan_compute_on(&c, &m, &plan), 0);
	assert_int_equal(plan.ntiers, 5);
	const uint64_t n1 = plan.tiers[3].needed, n2 = plan.tiers[4].needed;
	assert_true(n1 > 0 && n2 > 0);
	for (unsigned i = 3; i < 5; i++) {
		assert_true(plan.tiers[i].described && plan.tiers[i].known);
		assert_int_equal(plan.tiers[i].available, 1ull << 40);
		assert_string_equal(plan.tiers[i].source, "the described nvme disk");
		assert_non_null(strstr(plan.tiers[i].note, "shares the described disk with 1 other"));
	}
	assert_string_equal(plan.tiers[3].name, o);
	assert_non_null(strstr(plan.machine_text, "nvme 1 TiB; measured here: device, host"));
	/* The same needs as on existing directories here. */
	struct zn_plan *here = malloc(sizeof(*here));
	assert_non_null(here);
	mkdir(o, 0755);
	mkdir(p, 0755);
	assert_int_equal(zn_plan_compute(&c, here), 0);
	assert_same_needs(&plan, here);
	free(here);
	/* Shared: both fit in n1 + n2 together, neither in a byte less. */
	m.disk[0] = n1 + n2;
	assert_int_equal(zn_plan_compute_on(&c, &m, &plan), 0);
	assert_true(plan.tiers[3].fits && plan.tiers[4].fits);
	m.disk[0] = n1 + n2 - 1;
	assert_int_equal(zn_plan_compute_on(&c, &m, &plan), 0);
	assert_false(plan.tiers[3].fits || plan.tiers[4].fits);
	assert_true(advised(&plan.tiers[3], "plan for a larger disk"));
	/* Two disks: one directory each, in order. */
	m = (struct zn_plan_machine){ .ndisks = 2, .disk = { n1, n2 } };
	assert_int_equal(zn_plan_compute_on(&c, &m, &plan), 0);
	assert_true(zn_plan_fits(&plan));
	assert_string_equal(plan.tiers[4].source, "the described nvme disk 2 of 2");
	assert_string_equal(plan.tiers[3].note, "");
	m.disk[1] = n2 - 1;
	assert_int_equal(zn_plan_compute_on(&c, &m, &plan), 0);
	assert_true(plan.tiers[3].fits);
	assert_false(plan.tiers[4].fits);
	/* A disk more than directories: said. */
	m = (struct zn_plan_machine){ .ndisks = 3, .disk = { n1, n2, 1 } };
	assert_int_equal(zn_plan_compute_on(&c, &m, &plan), 0);
	assert_non_null(strstr(plan.machine_text, "1 described disk holds no nvme_path directory"));
	/* One directory spelt two ways is one row; three directories on two
	 * disks: the third shares the last. */
	char spelt[ZN_NVME_PATH_MAX + 8], three[3 * ZN_NVME_PATH_MAX];
	snprintf(spelt, sizeof(spelt), "%s/", o);
	nvme_config(&c, spelt, o);
	m = (struct zn_plan_machine){ .ndisks = 1, .disk = { 1ull << 40 } };
	assert_int_equal(zn_plan_compute_on(&c, &m, &plan), 0);
	assert_int_equal(plan.ntiers, 4);
	snprintf(three, sizeof(three), "%s,%s", tu_path("x"), tu_path("y"));
	nvme_config(&c, three, tu_path("z"));
	m = (struct zn_plan_machine){ .ndisks = 2, .disk = { 1ull << 40, 1ull << 41 } };
	assert_int_equal(zn_plan_compute_on(&c, &m, &plan), 0);
	assert_int_equal(plan.ntiers, 6);
	assert_int_equal(plan.tiers[3].available, 1ull << 40);
	assert_int_equal(plan.tiers[4].available, 1ull << 41);
	assert_int_equal(plan.tiers[5].available, 1ull << 41);
	assert_string_equal(plan.tiers[5].name, tu_path("z"));
	assert_string_equal(plan.tiers[3].note, "");
	assert_non_null(strstr(plan.tiers[5].note, "shares the described disk with 1 other"));
}

/* ---- the largest model -------------------------------------------------- */

/* The plan of c with shape s, through the config as a user would write it:
 * GPT-2's model keys, or a config.json for a Llama. */
static int plan_of_shape(const struct zn_config *c, const struct zn_plan_shape *s,
			 const struct zn_plan_machine *m, struct zn_plan *out)
{
	struct zn_config v = *c;
	if (c->model.type == ZN_MODEL_GPT2) {
		v.model.n_layer = s->n_layer;
		v.model.n_head = s->n_head;
		v.model.n_embd = s->n_embd;
	} else {
		struct zn_llama_config l;
		assert_int_equal(zn_hf_read_config(c->model.config, &l), 0);
		l.n_layer = (int)s->n_layer;
		l.n_embd = (int)s->n_embd;
		l.n_head = (int)s->n_head;
		l.n_kv_head = (int)s->n_kv_head;
		l.head_dim = (int)s->head_dim;
		l.intermediate = (int)s->intermediate;
		snprintf(v.model.config, sizeof(v.model.config), "%s", tu_path("shape.json"));
		assert_int_equal(zn_hf_write_config(v.model.config, &l, NULL), 0);
	}
	return zn_plan_compute_on(&v, m, out);
}

/* A FOUND search: its two shapes' plans are the config's with them, the
 * first fits, the next size up does not and is larger. */
static void check_found(const struct zn_config *c, const struct zn_plan_machine *m,
			const struct zn_plan_largest *l)
{
	struct zn_plan *alt = malloc(sizeof(*alt));
	assert_non_null(alt);
	assert_int_equal(l->result, ZN_PLAN_LARGEST_FOUND);
	assert_true(l->plans >= 3);
	assert_true(zn_plan_fits(&l->fit_plan));
	assert_false(zn_plan_fits(&l->over_plan));
	assert_string_equal(l->over_error, "");
	assert_true(l->over.params > l->fit.params);
	assert_true(l->over.n_embd >= l->fit.n_embd && l->over.n_layer >= l->fit.n_layer);
	assert_int_equal(plan_of_shape(c, &l->fit, m, alt), 0);
	assert_same_needs(alt, &l->fit_plan);
	assert_int_equal(alt->params, l->fit.params);
	assert_true(zn_plan_fits(alt));
	assert_int_equal(plan_of_shape(c, &l->over, m, alt), 0);
	assert_same_needs(alt, &l->over_plan);
	assert_false(zn_plan_fits(alt));
	free(alt);
}

static void test_largest_gpt2(void **state)
{
	(void)state;
	struct zn_config c;
	struct zn_plan_largest *l = malloc(sizeof(*l));
	assert_non_null(l);
	base_config(&c);
	c.zero_optimization.offload_optimizer.device = ZN_OFFLOAD_CPU;
	/* A host of 8 GiB: somewhere between GPT-2 124M and 1558M. */
	struct zn_plan_machine m = { .host = 8ull << 30 };
	assert_int_equal(zn_plan_largest(&c, &m, l), 0);
	assert_int_equal(l->model_type, ZN_MODEL_GPT2);
	assert_string_equal(l->family, "GPT-2");
	assert_int_equal(l->step, 64);
	check_found(&c, &m, l);
	assert_int_equal(l->fit.n_embd % 64, 0);
	assert_int_equal(l->fit.n_head, l->fit.n_embd / 64);
	assert_int_equal(l->fit.intermediate, 4 * l->fit.n_embd);
	assert_int_equal(l->fit.vocab_size, 300);
	/* The cpu backend's device is host memory: the host binds. */
	assert_false(tier(&l->over_plan, "pageable host")->fits);
	assert_true(l->fit_plan.described);

	/* Not even GPT-2 124M's shape: said, with its plan. */
	m.host = 64ull << 20;
	assert_int_equal(zn_plan_largest(&c, &m, l), 0);
	assert_int_equal(l->result, ZN_PLAN_LARGEST_NONE);
	assert_int_equal(l->over.n_embd, 768);
	assert_int_equal(l->over.n_layer, 12);
	assert_int_equal(l->over.n_head, 12);
	assert_false(zn_plan_fits(&l->over_plan));
	assert_string_equal(l->smallest, "GPT-2 124M");
	/* Every shape up to GPT-2 1558M's. */
	m.host = 1ull << 40;
	assert_int_equal(zn_plan_largest(&c, &m, l), 0);
	assert_int_equal(l->result, ZN_PLAN_LARGEST_ALL);
	assert_int_equal(l->fit.n_embd, 1600);
	assert_int_equal(l->fit.n_layer, 48);
	assert_int_equal(l->fit.n_head, 25);
	assert_true(zn_plan_fits(&l->fit_plan));
	/* A config that cannot be planned at its own shape: its error. */
	c.model.n_embd = 41;
	assert_int_equal(zn_plan_largest(&c, &m, l), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "model.n_embd"));
	free(l);
}

static void test_largest_llama(void **state)
{
	(void)state;
	struct zn_config c;
	struct zn_plan_largest *l = malloc(sizeof(*l));
	assert_non_null(l);
	/* A small Llama with grouped-query attention (4 heads, 2 key/value). */
	struct zn_llama_config lc = { .architecture = "LlamaForCausalLM", .n_layer = 2,
				      .n_embd = 256, .n_head = 4, .n_kv_head = 2,
				      .intermediate = 512, .vocab_size = 1000,
				      .max_seq_len = 2048, .norm_eps = 1e-5f,
				      .rope_theta = 10000.0f, .init_std = 0.02f,
				      .bos_token_id = -1, .eos_token_id = -1 };
	assert_int_equal(zn_llama_config_check(&lc), 0);
	base_config(&c);
	c.model.type = ZN_MODEL_LLAMA;
	snprintf(c.model.config, sizeof(c.model.config), "%s", tu_path("llama.json"));
	assert_int_equal(zn_hf_write_config(c.model.config, &lc, "bfloat16"), 0);
	c.bf16.enabled = true;
	c.activation_checkpointing.enabled = true;
	c.zero_optimization.offload_optimizer.device = ZN_OFFLOAD_CPU;
	/* The device binds: 24 GiB against a roomy host. */
	struct zn_plan_machine m = { .device = 24ull << 30, .host = 1ull << 40 };
	assert_int_equal(zn_plan_largest(&c, &m, l), 0);
	assert_string_equal(l->family, "Llama");
	assert_int_equal(l->step, 256); /* head_dim 128 x 2 key/value heads */
	check_found(&c, &m, l);
	const struct zn_plan_shape *s = &l->fit;
	assert_int_equal(s->head_dim, 128);
	assert_int_equal(s->n_kv_head, 2);
	assert_int_equal(s->n_embd % 256, 0);
	assert_int_equal(s->n_head, s->n_embd / 128);
	assert_int_equal(s->intermediate, (7 * s->n_embd / 2 + 128) / 256 * 256);
	assert_int_equal(s->vocab_size, 1000);
	assert_false(tier(&l->over_plan, "device")->fits);
	assert_true(tier(&l->over_plan, "pageable host")->fits);

	/* The ends: Llama-3.2-1B's shape (2048 x 16; MLP 3.5 x 2048) and
	 * Llama-3.1-405B's (16384 x 126; MLP 57344 by the 3.5 rule). */
	m.device = 1ull << 20;
	assert_int_equal(zn_plan_largest(&c, &m, l), 0);
	assert_int_equal(l->result, ZN_PLAN_LARGEST_NONE);
	assert_int_equal(l->over.n_embd, 2048);
	assert_int_equal(l->over.n_layer, 16);
	assert_int_equal(l->over.intermediate, 7168);
	assert_string_equal(l->smallest, "Llama-3.2-1B");
	m.device = m.host = 1ull << 44; /* the cpu backend's device is host memory too */
	assert_int_equal(zn_plan_largest(&c, &m, l), 0);
	assert_int_equal(l->result, ZN_PLAN_LARGEST_ALL);
	assert_int_equal(l->fit.n_embd, 16384);
	assert_int_equal(l->fit.n_layer, 126);
	assert_int_equal(l->fit.intermediate, 57344);
	assert_string_equal(l->biggest, "Llama-3.1-405B");

	/* One key/value head per query head in the config: so in the shapes. */
	lc.n_kv_head = lc.n_head;
	assert_int_equal(zn_hf_write_config(c.model.config, &lc, "bfloat16"), 0);
	m = (struct zn_plan_machine){ .device = 24ull << 30, .host = 1ull << 40 };
	assert_int_equal(zn_plan_largest(&c, &m, l), 0);
	assert_int_equal(l->step, 128);
	assert_int_equal(l->fit.n_kv_head, l->fit.n_head);
	check_found(&c, &m, l);
	free(l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_resident_tiers),
		cmocka_unit_test(test_offloaded_parameters_on_nvme),
		cmocka_unit_test(test_mixed_placement),
		cmocka_unit_test(test_nvme_with_resident_tensors),
		cmocka_unit_test(test_bad_paths_name_the_key),
		cmocka_unit_test(test_device_short_and_suggestions),
		cmocka_unit_test(test_machine_parse),
		cmocka_unit_test(test_described_host_and_device),
		cmocka_unit_test(test_described_disks),
		cmocka_unit_test(test_largest_gpt2),
		cmocka_unit_test(test_largest_llama),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	tu_scratch_cleanup();
	return rc;
}
