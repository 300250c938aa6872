/* The trainer through its public API alone (zinc/train.h, zinc/configfile.h;
 * the program links libzinc and sees include/ only, so the trainer's parts
 * may change freely beneath it), on the cpu backend and a tiny GPT-2 (2
 * layers, 2 heads, 32 channels, vocab 64, 4 rows of 32 tokens a step):
 *
 * - create, describe, and steps whose loss is finite and falls;
 * - every placement of the model states (one row of `placements`: all on
 *   the device, the optimizer on the host or NVMe, parameters and
 *   optimizer on the host or NVMe), in fp32 and bf16, gives the same
 *   losses and final parameters bit for bit, and zn_trainer_memory says
 *   what zn_rank_memory_plan says;
 * - saved at step K, destroyed and created again from the checkpoint, each
 *   placement continues with the uninterrupted run's losses bit for bit;
 * - a checkpoint consolidates, without a trainer, to the model file the
 *   save wrote, byte for byte, from every placement;
 * - bad input is refused with a message, without a crash or a leak.
 *
 * The token shard is written here: a sequence the model can learn (most
 * tokens follow from the one before), so that the loss falls within a few
 * steps.  tests/test_train_cli.py checks the same and more through `zinc
 * train`. */
#include "testutil.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "zinc/common.h"
#include "zinc/configfile.h"
#include "zinc/data.h"
#include "zinc/plan.h"
#include "zinc/train.h"

enum { L = 2, C = 32, V = 64, T = 32, B = 4 };
#define MAX_STEPS 20

/* The config every test starts from, filled in by base_text(): the sizes
 * above, the checkpoint folder, `resume` and zero_optimization's mapping.
 * No scheduler: a constant lr.  The data comes by --set (it names the
 * scratch folder). */
static const char BASE[] =
	"train_micro_batch_size_per_gpu: %d\n"
	"gradient_accumulation_steps: 1\n"
	"gradient_clipping: 1.0\n"
	"optimizer: {type: AdamW, params: {lr: 0.01, betas: [0.9, 0.95], weight_decay: 0.1}}\n"
	"model: {n_layer: %d, n_head: 2, n_embd: %d, vocab_size: %d, seq_len: %d}\n"
	"data: {seed: 7}\n"
	"checkpoint: {dir: \"%s\", resume: %s}\n"
	"device: {type: cpu}\n"
	"zero_optimization: %s\n";

/* Where the model states live.  SWAP stands for a scratch folder for the
 * swap files.  One micro-batch a step: with accumulation the host adds
 * whole micro-batches' gradients where the device adds contribution by
 * contribution, which agrees to rounding only. */
static const struct placement {
	const char *name;
	const char *zero;
	bool params_offloaded; /* less device memory than "device" */
	bool nvme;             /* reads and writes the swap folder */
} placements[] = {
	{ "device", "{stage: 0}", false, false },
	{ "cpu", "{stage: 2, offload_optimizer: {device: cpu}}", false, false },
	{ "nvme", "{stage: 2, sub_group_size: 5000, offload_optimizer: {device: nvme, "
		  "nvme_path: SWAP, pipeline_read: true, pipeline_write: true}}",
	  false, true },
	{ "cpu3", "{stage: 3, stage3_param_persistence_threshold: 0, offload_param: {device: cpu}, "
		  "offload_optimizer: {device: cpu}}",
	  true, false },
	{ "nvme3", "{stage: 3, sub_group_size: 7000, stage3_param_persistence_threshold: 0, "
		   "offload_param: {device: nvme, max_in_cpu: 0, nvme_path: SWAP}, "
		   "offload_optimizer: {device: nvme, nvme_path: SWAP}}",
	  true, true },
};
#define NPLACEMENTS (sizeof(placements) / sizeof(placements[0]))

/* The training dtypes, as --set lines; stage 3 offload with bf16 adds
 * gradients in 16-bit accumulators (`grad_accum`), as zinc train's users
 * set it. */
static const struct precision {
	const char *name, *set, *grad_accum;
} precisions[] = {
	{ "fp32", NULL, NULL },
	{ "bf16", "bf16={enabled: true}", "data_types={grad_accum_dtype: bf16}" },
};

/* What a run leaves to compare. */
struct run {
	double loss[MAX_STEPS], lr[MAX_STEPS];
	struct zn_step_info last;
	struct zn_rank_memory mem, plan;
	uint64_t params;
};

/* ---- set-up ------------------------------------------------------------- */

static char shard_path[4200];

/* The training data, one llm.c token shard (zinc/data.h): runs of 8
 * tokens, each from a random token on by x -> (5 x + 3) mod V, so that a
 * bigram table predicts 7 targets in 8.  64 windows of B*T tokens. */
static int write_data(void **state)
{
	(void)state;
	enum { N = 64 * B * T + 1 };
	int32_t header[ZN_DATA_HEADER_INTS] = { ZN_DATA_MAGIC, ZN_DATA_VERSION, N };
	static uint16_t tok[N];
	uint64_t rng = 11;
	for (unsigned i = 0; i < N; i++)
		tok[i] = (uint16_t)(i % 8 ? (5u * tok[i - 1] + 3) % V : tu_rand(&rng) % V);
	snprintf(shard_path, sizeof(shard_path), "%s", tu_path("tokens_000.bin"));
	FILE *f = fopen(shard_path, "wb");
	if (!f)
		return -1;
	bool ok = fwrite(header, sizeof(header), 1, f) == 1 && fwrite(tok, sizeof(tok), 1, f) == 1;
	return fclose(f) == 0 && ok ? 0 : -1;
}

static int cleanup(void **state)
{
	(void)state;
	tu_scratch_cleanup();
	return 0;
}

/* A folder in the scratch directory (made if missing), named by `fmt`
 * with `name`. */
static const char *folder(const char *fmt, const char *name)
{
	char rel[256];
	snprintf(rel, sizeof(rel), fmt, name);
	const char *path = tu_path(rel);
	mkdir(path, 0755);
	return path;
}

/* BASE for placement `p` (SWAP: its own swap folder, quoted), checkpoints
 * in `ckpt`. */
static void base_text(char *out, size_t len, const struct placement *p, const char *ckpt,
		      bool resume)
{
	char zero[2048];
	const char *swap = folder("swap-%s", p->name), *s = p->zero;
	size_t n = 0;
	for (; *s && n + 1 < sizeof(zero); s++) {
		if (strncmp(s, "SWAP", 4) == 0) {
			n += (size_t)snprintf(zero + n, sizeof(zero) - n, "\"%s\"", swap);
			s += 3;
		} else {
			zero[n++] = *s;
		}
	}
	zero[n < sizeof(zero) ? n : sizeof(zero) - 1] = 0;
	snprintf(out, len, BASE, B, L, C, V, T, ckpt, resume ? "true" : "false", zero);
}

/* BASE for placement `p` and precision `pr`, then `sets` as zinc train's
 * --set gives them; the data is the shard written above. */
static int load(const struct placement *p, const struct precision *pr, const char *ckpt,
		bool resume, const char *const *sets, size_t nsets, struct zn_config *cfg)
{
	char text[8192], data[4300];
	const char *all[8];
	size_t n = 0;
	base_text(text, sizeof(text), p, ckpt, resume);
	snprintf(data, sizeof(data), "data.train=\"%s\"", shard_path);
	all[n++] = data;
	if (pr->set)
		all[n++] = pr->set;
	if (pr->grad_accum && p->params_offloaded)
		all[n++] = pr->grad_accum;
	for (size_t i = 0; i < nsets && n < 8; i++)
		all[n++] = sets[i];
	return zn_config_load_string_set(text, strlen(text), p->name, all, n, cfg);
}

static struct zn_trainer *create(const struct zn_config *cfg)
{
	struct zn_trainer *t = zn_trainer_create(cfg, MAX_STEPS);
	if (!t)
		fail_msg("zn_trainer_create: %s", zn_last_error());
	return t;
}

/* Micro-batches per step of the runs (gradient_accumulation_steps). */
static unsigned accum_steps = 1;

/* Steps until `t` has done `upto`, into r->loss[...] by step number. */
static void steps(struct zn_trainer *t, unsigned upto, struct run *r)
{
	while (zn_trainer_steps_done(t) < upto) {
		struct zn_step_info s;
		int rc = zn_trainer_step(t, &s);
		if (rc)
			fail_msg("step %u: %d %s", (unsigned)zn_trainer_steps_done(t) + 1, rc,
				 zn_last_error());
		assert_true(s.step >= 1 && s.step <= MAX_STEPS);
		assert_int_equal(s.step, zn_trainer_steps_done(t));
		assert_true(isfinite(s.loss) && isfinite(s.grad_norm) && s.lr > 0);
		assert_int_equal(s.tokens, B * T * accum_steps);
		assert_false(s.skipped);
		r->loss[s.step - 1] = s.loss;
		r->lr[s.step - 1] = s.lr;
		r->last = s;
	}
}

/* The whole file at `path`, malloc'ed; its length in *len. */
static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		fail_msg("cannot open %s", path);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	*len = (size_t)ftell(f);
	char *buf = malloc(*len ? *len : 1);
	rewind(f);
	assert_true(buf && fread(buf, 1, *len, f) == *len);
	fclose(f);
	return buf;
}

/* The newest checkpoint's model.safetensors under `ckpt`, malloc'ed; its
 * length in *len. */
static char *saved_model(const char *ckpt, size_t *len)
{
	char path[4400], step[256] = "";
	snprintf(path, sizeof(path), "%s/latest", ckpt);
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	assert_non_null(fgets(step, sizeof(step), f));
	fclose(f);
	step[strcspn(step, "\n")] = 0;
	snprintf(path, sizeof(path), "%s/%s/model.safetensors", ckpt, step);
	return read_file(path, len);
}

/* ---- the tests ---------------------------------------------------------- */

/* Create, describe, train: the loss starts near ln V (a fresh model guesses
 * uniformly) and falls by more than 1.5 in 20 steps (to about 2.0). */
static void test_loss_falls(void **state)
{
	(void)state;
	struct zn_config cfg;
	struct run r = { 0 };
	const char *ckpt = folder("ck-%s", "falls");
	assert_int_equal(load(&placements[0], &precisions[0], ckpt, false, NULL, 0, &cfg), 0);
	struct zn_trainer *t = create(&cfg);
	char s[256];
	zn_trainer_model_summary(t, s, sizeof(s));
	assert_string_equal(s, "GPT-2 2 layers, 2 heads, 32 channels, vocab 64");
	zn_trainer_device_summary(t, s, sizeof(s));
	assert_string_equal(s, "cpu, fp32");
	/* wte Vp C (the vocabulary padded to 128 rows, as llm.c pads it), wpe
	 * T C; per block ln 4 C, attention 4 C^2 + 4 C, MLP 8 C^2 + 5 C; the
	 * final ln 2 C. */
	assert_int_equal(zn_trainer_num_params(t),
			 128 * C + T * C + L * (12 * C * C + 13 * C) + 2 * C);
	assert_int_equal(zn_trainer_rank(t), 0);
	assert_int_equal(zn_trainer_world(t), 1);
	assert_int_equal(zn_trainer_steps_done(t), 0);
	steps(t, MAX_STEPS, &r);
	zn_trainer_destroy(t);
	double first = (r.loss[0] + r.loss[1]) / 2;
	double last = (r.loss[MAX_STEPS - 2] + r.loss[MAX_STEPS - 1]) / 2;
	print_message("loss %.4f -> %.4f over %d steps\n", first, last, MAX_STEPS);
	assert_true(fabs(first - log(V)) < 0.3);
	assert_true(last < first - 1.5);
}

/* Random tokens, no data files (zinc train --bench's trainer); without
 * them zn_trainer_create refuses, naming the key. */
static void test_synthetic(void **state)
{
	(void)state;
	struct zn_config cfg;
	struct run r = { 0 };
	char text[8192];
	base_text(text, sizeof(text), &placements[0], folder("ck-%s", "synthetic"), false);
	assert_int_equal(zn_config_load_string(text, strlen(text), NULL, &cfg), 0);
	struct zn_trainer *t = zn_trainer_create_synthetic(&cfg, 2);
	if (!t)
		fail_msg("zn_trainer_create_synthetic: %s", zn_last_error());
	steps(t, 2, &r);
	zn_trainer_destroy(t);
	assert_null(zn_trainer_create(&cfg, 2));
	assert_non_null(strstr(zn_last_error(), "data.train"));
}

/* One placement's run of `n` steps, saved: its losses, memory figures and
 * final parameters (returned, malloc'ed; length in *len). */
static char *run_placement(const struct placement *p, const struct precision *pr, unsigned n,
			   struct run *r, size_t *len)
{
	struct zn_config cfg;
	char name[64];
	snprintf(name, sizeof(name), "%s-%s", pr->name, p->name);
	const char *ckpt = folder("ck-%s", name);
	assert_int_equal(load(p, pr, ckpt, false, NULL, 0, &cfg), 0);
	struct zn_trainer *t = create(&cfg);
	steps(t, n, r);
	zn_trainer_memory(t, &r->mem);
	r->params = zn_trainer_num_params(t);
	assert_int_equal(zn_rank_memory_plan(&cfg, 1, 0, &r->plan), 0);
	assert_int_equal(zn_trainer_save(t), 0);
	zn_trainer_destroy(t);
	/* The swap files go with the trainer: "." and ".." are left. */
	assert_int_equal(tu_count_entries(folder("swap-%s", p->name), NULL, NULL, NULL), 2);
	return saved_model(ckpt, len);
}

/* What one placement's run must show by itself. */
static void check_run(const char *name, const struct placement *p, const struct run *r)
{
	print_message("%-12s losses %.6f .. %.6f, device %llu bytes, nvme read %llu\n", name,
		      r->loss[0], r->loss[5], (unsigned long long)r->last.device_bytes,
		      (unsigned long long)r->last.nvme_read_bytes);
	/* zn_trainer_memory: ZeRO's figures for one rank, as planned. */
	if (memcmp(&r->mem, &r->plan, sizeof(r->mem)) != 0)
		fail_msg("%s: zn_trainer_memory params %llu grads %llu optimizer %llu, "
			 "zn_rank_memory_plan %llu %llu %llu", name,
			 (unsigned long long)r->mem.params, (unsigned long long)r->mem.grads,
			 (unsigned long long)r->mem.optimizer, (unsigned long long)r->plan.params,
			 (unsigned long long)r->plan.grads, (unsigned long long)r->plan.optimizer);
	assert_int_equal(r->mem.world, 1);
	assert_int_equal(r->mem.optimizer, 12 * r->params); /* fp32 master, m, v */
	if (p->nvme && !(r->last.nvme_read_bytes && r->last.nvme_write_bytes))
		fail_msg("%s: no NVMe traffic in the last step", name);
	if (!p->nvme && (r->last.nvme_read_bytes || r->last.nvme_write_bytes))
		fail_msg("%s: NVMe traffic without NVMe", name);
	/* The parameters' reads are a part of them, there only when the
	 * parameters' homes are on NVMe (the backward's fetches at least:
	 * its layers are not kept from the forward with these buffers). */
	assert_true(r->last.param_read_bytes <= r->last.nvme_read_bytes);
	if (p->nvme && p->params_offloaded && !r->last.param_read_bytes)
		fail_msg("%s: no parameter read from NVMe in the last step", name);
	if (!(p->nvme && p->params_offloaded) && r->last.param_read_bytes)
		fail_msg("%s: parameters read from NVMe that is not their home", name);
}

/* A run against the reference run (all on the device, same precision):
 * the same losses and final parameters, bit for bit. */
static void check_same(const char *name, const struct placement *p, const struct run *r,
		       const char *model, size_t len, const struct run *ref, const char *ref_model,
		       size_t ref_len)
{
	if (memcmp(r->loss, ref->loss, sizeof(r->loss)) != 0)
		fail_msg("%s: losses differ from the device run's (step 1: %.17g against %.17g)",
			 name, r->loss[0], ref->loss[0]);
	if (len != ref_len || memcmp(model, ref_model, len) != 0)
		fail_msg("%s: final parameters differ from the device run's", name);
	if (p->params_offloaded && r->last.device_bytes >= ref->last.device_bytes)
		fail_msg("%s: %llu device bytes, not fewer than the %llu of all resident", name,
			 (unsigned long long)r->last.device_bytes,
			 (unsigned long long)ref->last.device_bytes);
}

/* In each precision, every placement gives the device run's losses and
 * final parameters bit for bit, parameter offload with less device
 * memory. */
static void test_placements_are_bit_identical(void **state)
{
	(void)state;
	enum { N = 6 };
	for (unsigned d = 0; d < sizeof(precisions) / sizeof(precisions[0]); d++) {
		const struct precision *pr = &precisions[d];
		struct run ref = { 0 };
		size_t ref_len = 0;
		char *ref_model = NULL;
		for (unsigned i = 0; i < NPLACEMENTS; i++) {
			const struct placement *p = &placements[i];
			struct run r = { 0 };
			size_t len;
			char name[64];
			snprintf(name, sizeof(name), "%s %s", pr->name, p->name);
			char *model = run_placement(p, pr, N, &r, &len);
			check_run(name, p, &r);
			if (i == 0) {
				ref = r;
				ref_model = model;
				ref_len = len;
				continue;
			}
			check_same(name, p, &r, model, len, &ref, ref_model, ref_len);
			free(model);
		}
		free(ref_model);
	}
}

/* A Llama (2 layers, 32 channels, vocabulary 1024: its embedding and
 * classifier 32768 elements each, or one tensor tied) as a --set line for
 * `model`. */
static const char *llama_model(bool tied)
{
	static char sets[2][4400];
	char *set = sets[tied];
	if (set[0])
		return set;
	const char *path = tu_path(tied ? "llama-tied.json" : "llama-untied.json");
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fprintf(f, "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", "
		   "\"hidden_size\": 32, \"intermediate_size\": 48, \"num_attention_heads\": 2, "
		   "\"num_key_value_heads\": 1, \"num_hidden_layers\": 2, \"vocab_size\": 1024, "
		   "\"max_position_embeddings\": 64, \"rms_norm_eps\": 1e-5, "
		   "\"tie_word_embeddings\": %s}\n", tied ? "true" : "false");
	assert_int_equal(fclose(f), 0);
	snprintf(sets[tied], sizeof(sets[tied]), "model={type: llama, config: \"%s\", seq_len: %d}",
		 path, T);
	return set;
}

static const char *llama_untied(void)
{
	return llama_model(false);
}

/* Gradients of offloaded tensors gather on NVMe beside the optimizer
 * states (offload_optimizer.gradients auto, one rank) or in host
 * accumulators (host): with two micro-batches a step (each read back,
 * added to and written again on NVMe) and clipping on, the two give the
 * same losses and final parameters bit for bit, in fp32 and bf16, with one
 * swap buffer and synchronous copies or pipelined buffers and the copies
 * in flight on a stream of their own (overlap_comm: the pass then runs
 * there), for GPT-2 and for an untied Llama in tiles; NVMe gradients keep no accumulator in host memory and move more
 * NVMe bytes. */
static void test_gradients_on_nvme_match_host_accumulators(void **state)
{
	(void)state;
	enum { N = 4 };
	static const struct placement piped = {
		"nvme3p", "{stage: 3, sub_group_size: 7000, stage3_param_persistence_threshold: 0, "
			  "overlap_comm: true, "
			  "offload_param: {device: nvme, max_in_cpu: 0, nvme_path: SWAP}, "
			  "offload_optimizer: {device: nvme, nvme_path: SWAP, pipeline_read: true, "
			  "pipeline_write: true, buffer_count: 5}}",
		true, true };
	const struct placement *ps[] = { &placements[NPLACEMENTS - 1], &piped };
	accum_steps = 2;
	for (unsigned d = 0; d < 2 * sizeof(precisions) / sizeof(precisions[0]); d++) {
		const bool tiles = d >= 2; /* then the untied Llama in tiles */
		for (unsigned k = 0; k < 2; k++) {
			const struct precision *pr = &precisions[d % 2];
			struct run r[2] = { 0 };
			char *model[2];
			size_t len[2];
			for (unsigned h = 0; h < 2; h++) {
				const char *sets[] = {
					"gradient_accumulation_steps=2",
					h ? "zero_optimization.offload_optimizer.gradients=host"
					  : "zero_optimization.offload_optimizer.gradients=auto",
					tiles ? llama_untied() : "zero_optimization.tile_size=0",
					"zero_optimization.tile_size=4096" };
				struct zn_config cfg;
				char name[64];
				snprintf(name, sizeof(name), "g%u%u%u", d, k, h);
				const char *ckpt = folder("ck-%s", name);
				assert_int_equal(load(ps[k], pr, ckpt, false, sets, 4, &cfg), 0);
				struct zn_trainer *t = create(&cfg);
				steps(t, N, &r[h]);
				assert_int_equal(zn_trainer_save(t), 0);
				zn_trainer_destroy(t);
				model[h] = saved_model(ckpt, &len[h]);
			}
			print_message("%s %s %s: losses %.6f .. %.6f, norm %.3f; nvme read %llu "
				      "against %llu with host accumulators\n", tiles ? "llama" : "gpt2",
				      pr->name, ps[k]->name, r[0].loss[0], r[0].loss[N - 1],
				      r[0].last.grad_norm,
				      (unsigned long long)r[0].last.nvme_read_bytes,
				      (unsigned long long)r[1].last.nvme_read_bytes);
			/* Clipping is on: the norm is above gradient_clipping. */
			assert_true(r[0].last.grad_norm > 1.0);
			if (memcmp(r[0].loss, r[1].loss, sizeof(r[0].loss)) != 0)
				fail_msg("%s %s: losses differ (step 2: %.17g against %.17g)", pr->name,
					 ps[k]->name, r[0].loss[1], r[1].loss[1]);
			if (len[0] != len[1] || memcmp(model[0], model[1], len[0]) != 0)
				fail_msg("%s %s: final parameters differ", pr->name, ps[k]->name);
			assert_true(r[0].last.host_bytes < r[1].last.host_bytes);
			assert_true(r[0].last.nvme_read_bytes > r[1].last.nvme_read_bytes);
			assert_true(r[0].last.nvme_write_bytes > r[1].last.nvme_write_bytes);
			free(model[0]);
			free(model[1]);
		}
	}
	accum_steps = 1;
}

/* Memory-centric tiling (an untied Llama whose embedding and classifier,
 * 1024 x 32, come in 8 tiles of 128 rows: the model takes them tile by
 * tile; offloaded, one tile is on the device at a time).  Every placement and precision with the model set by `model` and tiles of
 * `tile` (a --set line): the device run's losses and parameters bit for
 * bit, exact resume; with `by_tiles` (the model takes a tensor tile by
 * tile), a lower device peak offloaded than untiled. */
static void tiles_case(const char *model, const char *tile, const char *tag, bool by_tiles)
{
	enum { N = 4, K = 2 };
	for (unsigned d = 0; d < sizeof(precisions) / sizeof(precisions[0]); d++) {
		const struct precision *pr = &precisions[d];
		struct run ref = { 0 };
		char *ref_model = NULL;
		size_t ref_len = 0;
		for (unsigned i = 0; i < NPLACEMENTS; i++) {
			const struct placement *p = &placements[i];
			const char *sets[] = { model, tile };
			struct zn_config cfg;
			struct run r = { 0 }, whole = { 0 };
			char name[64];
			snprintf(name, sizeof(name), "%s-%s-%s", tag, pr->name, p->name);
			const char *ckpt = folder("ck-%s", name);
			assert_int_equal(load(p, pr, ckpt, false, sets, 2, &cfg), 0);
			struct zn_trainer *t = create(&cfg);
			steps(t, N, &r);
			assert_int_equal(zn_trainer_save(t), 0);
			zn_trainer_destroy(t);
			size_t len;
			char *saved = saved_model(ckpt, &len);
			if (i == 0) {
				ref = r;
				ref_model = saved;
				ref_len = len;
			} else {
				check_same(name, p, &r, saved, len, &ref, ref_model, ref_len);
				free(saved);
			}
			/* Resumed after step K: the same steps K+1 .. N. */
			struct run part = { 0 };
			snprintf(name, sizeof(name), "%s-part-%s-%s", tag, pr->name, p->name);
			ckpt = folder("ck-%s", name);
			assert_int_equal(load(p, pr, ckpt, false, sets, 2, &cfg), 0);
			t = create(&cfg);
			steps(t, K, &part);
			assert_int_equal(zn_trainer_save(t), 0);
			zn_trainer_destroy(t);
			assert_int_equal(load(p, pr, ckpt, true, sets, 2, &cfg), 0);
			t = create(&cfg);
			steps(t, N, &part);
			zn_trainer_destroy(t);
			if (memcmp(&part.loss[K], &r.loss[K], (N - K) * sizeof(double)) != 0)
				fail_msg("%s: resumed losses differ", name);
			if (!p->params_offloaded || !by_tiles)
				continue;
			/* The same placement untiled holds the classifier whole. */
			sets[1] = "zero_optimization.tile_size=0";
			snprintf(name, sizeof(name), "%s-whole-%s-%s", tag, pr->name, p->name);
			assert_int_equal(load(p, pr, folder("ck-%s", name), false, sets, 2, &cfg), 0);
			t = create(&cfg);
			steps(t, N, &whole);
			zn_trainer_destroy(t);
			print_message("%s %s: device peak %llu bytes in tiles, %llu whole\n", pr->name,
				      p->name, (unsigned long long)r.last.device_peak,
				      (unsigned long long)whole.last.device_peak);
			assert_true(r.last.device_peak < whole.last.device_peak);
		}
		free(ref_model);
	}
}

static void test_tiles_in_every_placement(void **state)
{
	(void)state;
	tiles_case(llama_untied(), "zero_optimization.tile_size=4096", "tiles", true);
}

/* A tied Llama's embedding, the classifier too, in the same 8 tiles: the
 * classifier's part of each tile's gradients waits beside the homes
 * (fp32) until the encoder's fetch of the tile adds to it. */
static void test_tied_tiles_in_every_placement(void **state)
{
	(void)state;
	tiles_case(llama_model(true), "zero_optimization.tile_size=4096", "ttiles", true);
}

/* Tiles of storage only: GPT-2's tied wte (128 x 32) and its larger block
 * matrices in tiles of 1024 elements, homes and gradients tile by tile,
 * each whole on the device while its layer is. */
static void test_storage_tiles_in_every_placement(void **state)
{
	(void)state;
	tiles_case("zero_optimization.tile_size=1024", "zero_optimization.tile_size=1024", "stiles",
		   false);
}

/* Stopped after step K, saved, destroyed, and created again from the
 * checkpoint: in every placement, steps K+1 .. N give the uninterrupted
 * run's losses and lr bit for bit (states and parameters come back from
 * the checkpoint into their homes, host memory or NVMe). */
static void test_resume_is_exact(void **state)
{
	(void)state;
	enum { K = 3, N = 7 };
	const struct precision *pr = &precisions[0];
	for (unsigned i = 0; i < NPLACEMENTS; i++) {
		const struct placement *p = &placements[i];
		struct zn_config cfg;
		struct run full = { 0 }, part = { 0 };
		const char *ckpt = folder("ck-full-%s", p->name);
		assert_int_equal(load(p, pr, ckpt, false, NULL, 0, &cfg), 0);
		struct zn_trainer *t = create(&cfg);
		steps(t, N, &full);
		zn_trainer_destroy(t);

		ckpt = folder("ck-part-%s", p->name);
		assert_int_equal(load(p, pr, ckpt, false, NULL, 0, &cfg), 0);
		t = create(&cfg);
		steps(t, K, &part);
		assert_int_equal(zn_trainer_save(t), 0);
		zn_trainer_destroy(t);
		assert_int_equal(load(p, pr, ckpt, true, NULL, 0, &cfg), 0);
		t = create(&cfg);
		assert_int_equal(zn_trainer_steps_done(t), K);
		steps(t, N, &part);
		zn_trainer_destroy(t);
		for (unsigned s = K; s < N; s++)
			if (memcmp(&part.loss[s], &full.loss[s], sizeof(double)) != 0 ||
			    memcmp(&part.lr[s], &full.lr[s], sizeof(double)) != 0)
				fail_msg("%s: step %u resumed: loss %.17g lr %.17g, uninterrupted: "
					 "loss %.17g lr %.17g", p->name, s + 1, part.loss[s],
					 part.lr[s], full.loss[s], full.lr[s]);
	}
}

/* 3 steps of placement `p` with `sets`, checkpointed in ck-`name`; the
 * saved model, malloc'ed. */
static char *run_with(const struct placement *p, const char *name, const char *const *sets,
		      size_t nsets, size_t *len)
{
	struct zn_config cfg;
	struct run r = { 0 };
	const char *ckpt = folder("ck-%s", name);
	assert_int_equal(load(p, &precisions[0], ckpt, false, sets, nsets, &cfg), 0);
	struct zn_trainer *t = create(&cfg);
	steps(t, 3, &r);
	assert_int_equal(zn_trainer_save(t), 0);
	zn_trainer_destroy(t);
	return saved_model(ckpt, len);
}

/* optimizer.params.weight_decay_params: all decays biases and norms too,
 * as DeepSpeed decays every parameter a script passes: the same in every
 * place the update runs (the device's Adam, the host's CPU Adam, NVMe
 * sub-groups), bit for bit, and other weights than the default's
 * (matrices only). */
static void test_weight_decay_params(void **state)
{
	(void)state;
	static const unsigned which[] = { 0, 1, 4 }; /* device, cpu, nvme3 */
	const char *all[] = { "optimizer.params.weight_decay_params=all" };
	char *first = NULL, name[64];
	size_t first_len = 0;
	for (size_t i = 0; i < sizeof(which) / sizeof(which[0]); i++) {
		const struct placement *p = &placements[which[i]];
		size_t len;
		snprintf(name, sizeof(name), "wd-all-%s", p->name);
		char *m = run_with(p, name, all, 1, &len);
		if (!first) {
			first = m;
			first_len = len;
			continue;
		}
		if (len != first_len || memcmp(m, first, len) != 0)
			fail_msg("%s: weight decay on all parameters gives other weights than on "
				 "the device", p->name);
		free(m);
	}
	size_t len;
	char *matrices = run_with(&placements[0], "wd-matrices", NULL, 0, &len);
	assert_true(len == first_len && memcmp(matrices, first, len) != 0);
	free(matrices);
	free(first);
}

/* sub_group_size 0, DeepSpeed's one parameter per sub-group: NVMe states
 * in sub-groups of the largest tensor's size, training as the device does,
 * bit for bit (and not one sub-group of everything, which needs the most
 * memory). */
static void test_sub_group_size_zero(void **state)
{
	(void)state;
	const char *zero[] = { "zero_optimization.sub_group_size=0" };
	size_t len, dev_len;
	char *dev = run_with(&placements[0], "sg0-device", NULL, 0, &dev_len);
	char *nvme = run_with(&placements[2], "sg0-nvme", zero, 1, &len);
	if (len != dev_len || memcmp(nvme, dev, len) != 0)
		fail_msg("sub_group_size 0 on NVMe trains other weights than the device");
	/* Smaller sub-groups than one of everything (sub_group_size 1e9 for
	 * this model): less pinned host memory in the plan. */
	uint64_t pinned[2] = { 0, 0 };
	const char *whole[] = { "zero_optimization.sub_group_size=1e9" };
	for (int i = 0; i < 2; i++) {
		struct zn_config cfg;
		assert_int_equal(load(&placements[2], &precisions[0], folder("ck-%s", "sg0-plan"),
				      false, i ? whole : zero, 1, &cfg),
				 0);
		struct zn_plan *plan = calloc(1, sizeof(*plan));
		assert_non_null(plan);
		if (zn_plan_compute(&cfg, plan) != 0)
			fail_msg("zn_plan_compute: %s", zn_last_error());
		for (unsigned k = 0; k < plan->ntiers; k++)
			if (plan->tiers[k].kind == ZN_PLAN_PINNED)
				pinned[i] += plan->tiers[k].needed;
		free(plan);
	}
	print_message("pinned: sub_group_size 0 %llu bytes, 1e9 %llu\n",
		      (unsigned long long)pinned[0], (unsigned long long)pinned[1]);
	assert_true(pinned[0] > 0 && pinned[0] < pinned[1]);
	free(nvme);
	free(dev);
}

/* zn_checkpoint_consolidate reads a checkpoint without a trainer: from
 * every placement (fp32), the model file it writes is the one the save
 * wrote, byte for byte; a folder without a checkpoint is refused. */
static void test_consolidate(void **state)
{
	(void)state;
	const struct precision *pr = &precisions[0];
	for (unsigned i = 0; i < NPLACEMENTS; i++) {
		const struct placement *p = &placements[i];
		struct run r = { 0 };
		size_t len, got_len;
		char name[64], out[4400];
		snprintf(name, sizeof(name), "%s-%s", pr->name, p->name);
		char *saved = run_placement(p, pr, 2, &r, &len);
		snprintf(out, sizeof(out), "%s/consolidated-%s.safetensors", tu_path(""), p->name);
		if (zn_checkpoint_consolidate(folder("ck-%s", name), out) != 0)
			fail_msg("%s: zn_checkpoint_consolidate: %s", p->name, zn_last_error());
		char *got = read_file(out, &got_len);
		if (got_len != len || memcmp(got, saved, len) != 0)
			fail_msg("%s: the consolidated model (%zu bytes) is not the saved one (%zu)",
				 p->name, got_len, len);
		free(got);
		free(saved);
	}
	assert_int_not_equal(zn_checkpoint_consolidate(folder("empty-%s", "ck"), NULL), 0);
	assert_non_null(strstr(zn_last_error(), "optimizer"));
}

/* Bad input: an error code or NULL with a message naming what is wrong,
 * and no crash (nor leak, under the sanitizers). */
static void test_bad_input(void **state)
{
	(void)state;
	const struct placement *dev = &placements[0];
	const struct precision *fp32 = &precisions[0];
	struct zn_config cfg;
	static const char syntax[] = "model: {n_layer: 2\n";
	assert_int_equal(zn_config_load_string(syntax, sizeof(syntax) - 1, "bad.yaml", &cfg),
			 -EINVAL);
	assert_true(strncmp(zn_last_error(), "bad.yaml:", 9) == 0);
	static const char unknown[] = "model: {nlayer: 2}\n";
	assert_int_equal(zn_config_load_string(unknown, sizeof(unknown) - 1, NULL, &cfg), -ENOENT);
	assert_non_null(strstr(zn_last_error(), "n_layer"));

	/* Each: --set lines on the base config (refused by the loader or by
	 * zn_trainer_create), and what the message names. */
	char nowhere[4400];
	snprintf(nowhere, sizeof(nowhere),
		 "zero_optimization={stage: 3, stage3_param_persistence_threshold: 0, "
		 "offload_optimizer: {device: cpu}, offload_param: {device: nvme, max_in_cpu: 0, "
		 "nvme_path: \"%s\"}}",
		 tu_path("nowhere"));
	const struct {
		const char *sets[3];
		const char *needle;
	} refused[] = {
		{ { "optimizer={type: OneBitAdam, params: {freeze_step: 10}}" }, "OneBitAdam" },
		{ { "zero_optimization.stage=3", "zero_optimization.offload_param={device: cpu}" },
		  "offload_optimizer" },
		{ { nowhere }, "nowhere" },
		{ { "model.n_embd=31" }, "n_embd" },
		{ { "bf16={enabled: true}", "fp16={enabled: true}" }, "bf16" },
	};
	const char *ckpt = folder("ck-%s", "refused");
	for (unsigned i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		size_t n = 0;
		while (n < 3 && refused[i].sets[n])
			n++;
		struct zn_trainer *t = NULL;
		if (load(dev, fp32, ckpt, false, refused[i].sets, n, &cfg) == 0)
			t = zn_trainer_create(&cfg, 2);
		if (t) {
			zn_trainer_destroy(t);
			fail_msg("%s: created", refused[i].sets[n - 1]);
		}
		const char *msg = zn_last_error();
		print_message("refused: %s\n", msg);
		if (!strstr(msg, refused[i].needle))
			fail_msg("%s: message '%s' should name '%s'", refused[i].sets[n - 1], msg,
				 refused[i].needle);
	}
	assert_int_equal(tu_count_entries(ckpt, NULL, NULL, NULL), 2); /* nothing saved */

	/* A checkpoint of another shape is refused, not trained over. */
	ckpt = folder("ck-%s", "shape");
	struct run r = { 0 };
	assert_int_equal(load(dev, fp32, ckpt, false, NULL, 0, &cfg), 0);
	struct zn_trainer *t = create(&cfg);
	steps(t, 1, &r);
	assert_int_equal(zn_trainer_save(t), 0);
	zn_trainer_destroy(t);
	static const char *const deeper[] = { "model.n_layer=3" };
	assert_int_equal(load(dev, fp32, ckpt, true, deeper, 1, &cfg), 0);
	assert_null(zn_trainer_create(&cfg, 2));
	assert_non_null(strstr(zn_last_error(), "different model"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_loss_falls),
		cmocka_unit_test(test_synthetic),
		cmocka_unit_test(test_placements_are_bit_identical),
		cmocka_unit_test(test_gradients_on_nvme_match_host_accumulators),
		cmocka_unit_test(test_tiles_in_every_placement),
		cmocka_unit_test(test_storage_tiles_in_every_placement),
		cmocka_unit_test(test_tied_tiles_in_every_placement),
		cmocka_unit_test(test_resume_is_exact),
		cmocka_unit_test(test_consolidate),
		cmocka_unit_test(test_weight_decay_params),
		cmocka_unit_test(test_sub_group_size_zero),
		cmocka_unit_test(test_bad_input),
	};
	return tu_run_group_tests(tests, write_data, cleanup);
}
