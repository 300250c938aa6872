/* engine/model/llama.c without PyTorch (the oracle is
 * tests/test_llama_oracle.py): the config check, the tensor list (Hugging
 * Face names and shapes, the parameter counts of released models),
 * initialisation, the rotary frequencies, the order the model fetches and
 * releases layers in, the activation estimate against real models made
 * with counting allocators, and activation checkpointing (with and without
 * offloaded inputs) giving the same bits as the plain model.  Then the
 * architecture tables of both models (engine/model/arch.h): descriptions
 * read back, summaries, and the weights files written and read back (a
 * Llama's Hugging Face folder; GPT-2's model.safetensors with Hugging
 * Face's names and shapes, and an llm.c .bin). */
#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "zinc/device.h"
#include "zinc/hf.h"
#include "zinc/kernels.h"
#include "zinc/llama.h"
#include "zinc/safetensors.h"

#include "model/arch.h"
#include "model_host.h"

static const struct zn_kernels *K;
static struct zn_kctx *ctx;

static struct zn_llama_config tiny(void)
{
	return (struct zn_llama_config){ .n_layer = 2, .n_embd = 24, .n_head = 4, .n_kv_head = 2,
					 .intermediate = 40, .vocab_size = 37, .max_seq_len = 16,
					 .norm_eps = 1e-5f };
}

/* ---- config and tensors --------------------------------------------------------- */

static void test_config_check(void **state)
{
	(void)state;
	struct zn_llama_config c = tiny();
	c.n_kv_head = 0;
	assert_int_equal(zn_llama_config_check(&c), 0);
	assert_int_equal(c.n_kv_head, 4);
	assert_int_equal(c.head_dim, 6);
	assert_true(c.rope_theta == 10000.0f);
	assert_true(c.init_std == 0.02f);

	c = tiny();
	c.n_kv_head = 3;
	assert_int_equal(zn_llama_config_check(&c), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "num_key_value_heads: 3 must divide"));
	c = tiny();
	c.head_dim = 7;
	assert_int_equal(zn_llama_config_check(&c), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "head_dim: 7 must be even"));
	c = tiny();
	c.n_embd = 25;
	assert_int_equal(zn_llama_config_check(&c), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "head_dim is not given"));
	c.head_dim = 8; /* head_dim given: the width need not divide */
	assert_int_equal(zn_llama_config_check(&c), 0);
	c = tiny();
	c.norm_eps = 0;
	assert_int_equal(zn_llama_config_check(&c), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "rms_norm_eps"));
	c = tiny();
	c.rope_type = ZN_ROPE_LLAMA3;
	c.rope_factor = 8;
	c.rope_low_freq_factor = 4;
	c.rope_high_freq_factor = 1;
	c.rope_original_max_pos = 8192;
	assert_int_equal(zn_llama_config_check(&c), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "high_freq_factor"));
	c = tiny();
	c.offload_activations = true;
	assert_int_equal(zn_llama_config_check(&c), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "cpu_checkpointing needs"));
}

static void test_layer_params(void **state)
{
	(void)state;
	struct zn_llama_config c = tiny();
	c.qkv_bias = true;
	assert_int_equal(zn_llama_config_check(&c), 0);
	struct zn_param_desc d[ZN_LLAMA_LAYER_TENSORS_MAX];
	assert_int_equal(zn_llama_layers(&c), 4);
	assert_int_equal(zn_llama_layer_params(&c, 0, d, 16), 1);
	assert_string_equal(d[0].name, "model.embed_tokens.weight");
	assert_true(d[0].shape[0] == 37 && d[0].shape[1] == 24);
	/* a block in transformers' state_dict order */
	static const char *const names[] = {
		"model.layers.1.self_attn.q_proj.weight", "model.layers.1.self_attn.q_proj.bias",
		"model.layers.1.self_attn.k_proj.weight", "model.layers.1.self_attn.k_proj.bias",
		"model.layers.1.self_attn.v_proj.weight", "model.layers.1.self_attn.v_proj.bias",
		"model.layers.1.self_attn.o_proj.weight", "model.layers.1.mlp.gate_proj.weight",
		"model.layers.1.mlp.up_proj.weight", "model.layers.1.mlp.down_proj.weight",
		"model.layers.1.input_layernorm.weight",
		"model.layers.1.post_attention_layernorm.weight",
	};
	static const int64_t shapes[][2] = { { 24, 24 }, { 24, 1 }, { 12, 24 }, { 12, 1 },
					     { 12, 24 }, { 12, 1 }, { 24, 24 }, { 40, 24 },
					     { 40, 24 }, { 24, 40 }, { 24, 1 }, { 24, 1 } };
	unsigned n = zn_llama_layer_params(&c, 2, d, 16);
	assert_int_equal(n, 12);
	for (unsigned i = 0; i < n; i++) {
		assert_string_equal(d[i].name, names[i]);
		assert_true(d[i].shape[0] == shapes[i][0] && d[i].shape[1] == shapes[i][1]);
		assert_false(d[i].hf_transposed);
		assert_int_equal(d[i].decay, d[i].ndim == 2);
		assert_true(d[i].numel == (size_t)(shapes[i][0] * shapes[i][1]));
	}
	/* the head: norm and (untied) lm_head; tied: the norm alone */
	assert_int_equal(zn_llama_layer_params(&c, 3, d, 16), 2);
	assert_string_equal(d[0].name, "model.norm.weight");
	assert_string_equal(d[1].name, "lm_head.weight");
	c.tie_embeddings = true;
	assert_int_equal(zn_llama_layer_params(&c, 3, d, 16), 1);
	assert_int_equal(zn_llama_layer_params(&c, 4, d, 16), 0);
	/* MLP biases */
	c.qkv_bias = false;
	c.mlp_bias = true;
	n = zn_llama_layer_params(&c, 1, d, 16);
	assert_int_equal(n, 12);
	assert_string_equal(d[5].name, "model.layers.0.mlp.gate_proj.bias");
	assert_string_equal(d[9].name, "model.layers.0.mlp.down_proj.bias");
	assert_true(d[9].shape[0] == 24);
	/* a deep model's names fit */
	c.n_layer = 1024;
	n = zn_llama_layer_params(&c, 1024, d, 16);
	assert_string_equal(d[n - 1].name, "model.layers.1023.post_attention_layernorm.weight");
}

/* The published parameter counts of released models. */
static void test_num_params(void **state)
{
	(void)state;
	struct zn_llama_config l32 = { .n_layer = 16, .n_embd = 2048, .n_head = 32, .n_kv_head = 8,
				       .intermediate = 8192, .vocab_size = 128256,
				       .max_seq_len = 131072, .norm_eps = 1e-5f,
				       .rope_theta = 500000, .tie_embeddings = true };
	assert_int_equal(zn_llama_config_check(&l32), 0);
	assert_true(zn_llama_num_params(&l32) == 1235814400ull); /* Llama 3.2 1B */
	struct zn_llama_config l2 = { .n_layer = 32, .n_embd = 4096, .n_head = 32,
				      .intermediate = 11008, .vocab_size = 32000,
				      .max_seq_len = 4096, .norm_eps = 1e-5f };
	assert_int_equal(zn_llama_config_check(&l2), 0);
	assert_true(zn_llama_num_params(&l2) == 6738415616ull); /* Llama 2 7B */
	struct zn_llama_config q2 = { .n_layer = 24, .n_embd = 896, .n_head = 14, .n_kv_head = 2,
				      .intermediate = 4864, .vocab_size = 151936,
				      .max_seq_len = 32768, .norm_eps = 1e-6f,
				      .rope_theta = 1000000, .tie_embeddings = true,
				      .qkv_bias = true };
	assert_int_equal(zn_llama_config_check(&q2), 0);
	assert_true(zn_llama_num_params(&q2) == 494032768ull); /* Qwen2 0.5B */
}

static void test_init(void **state)
{
	(void)state;
	struct zn_llama_config c = tiny();
	c.qkv_bias = true;
	assert_int_equal(zn_llama_config_check(&c), 0);
	struct zn_param_desc d[ZN_LLAMA_LAYER_TENSORS_MAX];
	unsigned n = zn_llama_layer_params(&c, 1, d, 16);
	float *a = malloc(40 * 24 * 4), *b = malloc(40 * 24 * 4);
	assert_true(a && b);
	for (unsigned i = 0; i < n; i++) {
		zn_llama_init_tensor(&c, &d[i], 7, 10 + i, a);
		zn_llama_init_tensor(&c, &d[i], 7, 10 + i, b);
		assert_memory_equal(a, b, d[i].numel * 4); /* counter-based: the same again */
		double s = 0, s2 = 0;
		for (size_t j = 0; j < d[i].numel; j++) {
			s += a[j];
			s2 += (double)a[j] * a[j];
		}
		if (strstr(d[i].name, "norm"))
			assert_true(s == (double)d[i].numel && s2 == s); /* all ones */
		else if (strstr(d[i].name, "bias"))
			assert_true(s2 == 0);
		else /* normal(0, 0.02) */
			assert_true(fabs(sqrt(s2 / d[i].numel) - 0.02) < 0.004);
	}
	zn_llama_init_tensor(&c, &d[0], 7, 11, b);
	assert_memory_not_equal(a, b, 24 * 4); /* another index, other values */
	free(a), free(b);
}

static void test_rope_inv_freq(void **state)
{
	(void)state;
	struct zn_llama_config c = tiny();
	c.head_dim = 16;
	c.rope_theta = 500000;
	float f[8];
	assert_int_equal(zn_llama_rope_inv_freq(&c, f), 0);
	for (int i = 0; i < 8; i++)
		assert_true(fabs(f[i] - pow(500000.0, -i / 8.0)) <= 2e-7 * f[i]);
	/* llama3: high frequencies kept, low ones divided, the middle blended */
	c.rope_type = ZN_ROPE_LLAMA3;
	c.rope_factor = 8;
	c.rope_low_freq_factor = 1;
	c.rope_high_freq_factor = 4;
	c.rope_original_max_pos = 2048;
	float g[8];
	assert_int_equal(zn_llama_rope_inv_freq(&c, g), 0);
	int kept = 0, divided = 0, blended = 0;
	for (int i = 0; i < 8; i++) {
		double wavelen = 2 * M_PI / f[i];
		if (wavelen < 512) {
			assert_true(g[i] == f[i]);
			kept++;
		} else if (wavelen > 2048) {
			assert_true(g[i] == f[i] / 8);
			divided++;
		} else {
			double s = (2048 / wavelen - 1) / 3;
			assert_true(fabs(g[i] - ((1 - s) * f[i] / 8 + s * f[i])) <= 1e-6 * f[i]);
			blended++;
		}
	}
	assert_true(kept && divided && blended);
	c.head_dim = 7;
	assert_int_equal(zn_llama_rope_inv_freq(&c, g), -EINVAL);
}

/* ---- the model through the seam ----------------------------------------------------- */

#define MAXTENS 128

struct resident {
	struct zn_llama_config cfg;
	unsigned nt, nl;
	struct zn_param_desc d[MAXTENS];
	unsigned first[MAXTENS], count[MAXTENS];
	float *p[MAXTENS], *g[MAXTENS];
	/* the calls, as "f3" (fetch 3 with grads: "F3"), "r3" / "R3" (written),
	 * tiles "t3.1" (fetch tile 1 of layer 3; "T3.1" with grads; "u" after
	 * it: released unwritten though fetched for grads) */
	char log[2048];
	int held[MAXTENS];
	unsigned tile;   /* rows per tile of the tileable tensors; 0: whole */
	int tiles_out;   /* tiles fetched and not released */
	bool tile_want;  /* ... fetched for gradients */
};

static int fetch(void *user, unsigned layer, bool want, void **params, void **grads)
{
	struct resident *r = user;
	assert_true(layer < r->nl);
	char s[16];
	snprintf(s, sizeof(s), "%c%u ", want ? 'F' : 'f', layer);
	strcat(r->log, s);
	r->held[layer]++;
	for (unsigned i = 0; i < r->count[layer]; i++) {
		const bool tiled = r->tile && r->d[r->first[layer] + i].tileable;
		params[i] = tiled ? NULL : r->p[r->first[layer] + i];
		if (want)
			grads[i] = tiled ? NULL : r->g[r->first[layer] + i];
	}
	return 0;
}

static unsigned tile_rows(void *user, unsigned layer, unsigned idx)
{
	struct resident *r = user;
	return r->d[r->first[layer] + idx].tileable ? r->tile : 0;
}

/* A tile: its rows of the whole arrays, while its layer is held. */
static int fetch_tile(void *user, unsigned layer, unsigned idx, unsigned tile, bool want,
		      void **param, void **grad)
{
	struct resident *r = user;
	const struct zn_param_desc *d = &r->d[r->first[layer] + idx];
	assert_true(r->held[layer] > 0 && r->tiles_out == 0 && d->tileable && r->tile);
	assert_true((int64_t)tile * r->tile < d->shape[0]);
	char s[24];
	snprintf(s, sizeof(s), "%c%u.%u ", want ? 'T' : 't', layer, tile);
	strcat(r->log, s);
	r->tiles_out++;
	r->tile_want = want;
	size_t off = (size_t)tile * r->tile * (size_t)d->shape[1];
	*param = r->p[r->first[layer] + idx] + off;
	if (want)
		*grad = r->g[r->first[layer] + idx] + off;
	return 0;
}

static int release_tile(void *user, unsigned layer, unsigned idx, unsigned tile, bool written)
{
	struct resident *r = user;
	(void)layer, (void)idx, (void)tile;
	assert_true(r->tiles_out-- == 1);
	if (r->tile_want && !written) /* its gradients wait for the next fetch */
		strcat(r->log, "u ");
	return 0;
}

static int release(void *user, unsigned layer, bool written)
{
	struct resident *r = user;
	char s[16];
	snprintf(s, sizeof(s), "%c%u ", written ? 'R' : 'r', layer);
	strcat(r->log, s);
	assert_true(r->held[layer]-- > 0);
	return 0;
}

static void resident_init(struct resident *r, const struct zn_llama_config *c)
{
	memset(r, 0, sizeof(*r));
	r->cfg = *c;
	assert_int_equal(zn_llama_config_check(&r->cfg), 0);
	r->nl = zn_llama_layers(&r->cfg);
	for (unsigned l = 0; l < r->nl; l++) {
		r->first[l] = r->nt;
		r->count[l] = zn_llama_layer_params(&r->cfg, l, r->d + r->nt, MAXTENS - r->nt);
		r->nt += r->count[l];
	}
	for (unsigned i = 0; i < r->nt; i++) {
		r->p[i] = malloc(r->d[i].numel * 4);
		r->g[i] = calloc(r->d[i].numel, 4);
		assert_true(r->p[i] && r->g[i]);
		zn_llama_init_tensor(&r->cfg, &r->d[i], 3, i, r->p[i]);
		for (size_t j = 0; j < r->d[i].numel; j++) /* not the constants they start as */
			r->p[i][j] += 0.05f * (float)((j * 7 + i) % 11) - 0.25f;
	}
}

static void resident_free(struct resident *r)
{
	for (unsigned i = 0; i < r->nt; i++) {
		free(r->p[i]);
		free(r->g[i]);
	}
}

/* Losses and gradients of one forward + backward, concatenated. */
static unsigned run_tile; /* rows per tile for run_model's source; 0: whole */

static float *run_model(const struct zn_llama_config *cfg, int B, int T, size_t *len, char *log,
			size_t loglen)
{
	struct resident *r = malloc(sizeof(*r));
	assert_non_null(r);
	resident_init(r, cfg);
	r->tile = run_tile;
	struct mh_counts cnt = { 0 };
	struct zn_model_mem mem = mh_host_mem(&cnt);
	struct zn_llama *m = zn_llama_create(&r->cfg, B, T, K, ctx, &mem);
	assert_non_null(m);
	int BT = B * T;
	int32_t *tok = malloc((size_t)BT * 4), *tgt = malloc((size_t)BT * 4);
	assert_true(tok && tgt);
	for (int i = 0; i < BT; i++) {
		tok[i] = (i * 13 + 5) % r->cfg.vocab_size;
		tgt[i] = i % 5 == 2 ? -1 : (i * 7 + 1) % r->cfg.vocab_size;
	}
	struct zn_param_source src = { .user = r, .fetch = fetch, .release = release,
				       .tile_rows = tile_rows, .fetch_tile = fetch_tile,
				       .release_tile = release_tile };
	const float *losses;
	assert_int_equal(zn_llama_forward(m, &src, tok, tgt, NULL, true, 1.0f / BT, &losses), 0);
	assert_int_equal(zn_llama_backward(m, &src, tok), 0);
	if (log)
		snprintf(log, loglen, "%s", r->log);
	size_t n = (size_t)BT;
	for (unsigned i = 0; i < r->nt; i++)
		n += r->d[i].numel;
	float *out = malloc(n * 4), *o = out;
	assert_non_null(out);
	memcpy(o, losses, (size_t)BT * 4);
	o += BT;
	for (unsigned i = 0; i < r->nt; i++) {
		memcpy(o, r->g[i], r->d[i].numel * 4);
		o += r->d[i].numel;
	}
	*len = n;
	/* a second pass adds the same gradients again (accumulation; sgemm
	 * with beta 1 may add its partial sums to the first pass's one by one,
	 * so to rounding) */
	assert_int_equal(zn_llama_forward(m, &src, tok, tgt, NULL, true, 1.0f / BT, NULL), 0);
	assert_int_equal(zn_llama_backward(m, &src, tok), 0);
	o = out + BT;
	for (unsigned i = 0; i < r->nt; i++) {
		float big = 0;
		for (size_t j = 0; j < r->d[i].numel; j++)
			big = fmaxf(big, fabsf(o[j]));
		assert_true(big > 0); /* every tensor gets a gradient */
		for (size_t j = 0; j < r->d[i].numel; j++)
			assert_true(fabsf(r->g[i][j] - 2 * o[j]) <= 1e-5f * big);
		o += r->d[i].numel;
	}
	/* a backward needs a forward for backward before it */
	assert_int_equal(zn_llama_backward(m, &src, tok), -EINVAL);
	assert_int_equal(zn_llama_forward(m, &src, tok, NULL, NULL, true, 1.0f, NULL), -EINVAL);
	zn_llama_destroy(m);
	resident_free(r);
	free(r), free(tok), free(tgt);
	return out;
}

/* The fetch/release order: forward 0, 1 .. L, then the head (L+1, and 0
 * again when tied); backward the head, L .. 1, 0, each block released with
 * its gradients final, the tied embedding only after the encoder. */
static void test_fetch_order(void **state)
{
	(void)state;
	struct zn_llama_config c = tiny();
	char log[2048];
	size_t n;
	free(run_model(&c, 2, 5, &n, log, sizeof(log)));
	const char *untied = "f0 r0 f1 r1 f2 r2 f3 r3 F3 R3 F2 R2 F1 R1 F0 R0 ";
	assert_string_equal(log, untied);
	c.tie_embeddings = true;
	free(run_model(&c, 2, 5, &n, log, sizeof(log)));
	assert_string_equal(log, "f0 r0 f1 r1 f2 r2 f3 f0 r0 r3 F3 F0 r0 R3 F2 R2 F1 R1 F0 R0 ");
}

/* An untied vocabulary in tiles of 16 rows (37: tiles of 16, 16, 5): the
 * embedding and the classifier fetched tile by tile, backward from the
 * last tile down; the losses and the classifier's gradients are the
 * whole model's bits, the rest (through the classifier's input gradient,
 * a sum over the vocabulary taken tile by tile) the same to rounding. */
static void test_tiles(void **state)
{
	(void)state;
	struct zn_llama_config c = tiny();
	char log[2048];
	size_t n1, n2;
	float *a = run_model(&c, 2, 5, &n1, NULL, 0);
	run_tile = 16;
	float *b = run_model(&c, 2, 5, &n2, log, sizeof(log));
	run_tile = 0;
	assert_string_equal(log, "f0 t0.0 t0.1 t0.2 r0 f1 r1 f2 r2 f3 t3.0 t3.1 t3.2 r3 "
				 "F3 T3.2 T3.1 T3.0 R3 F2 R2 F1 R1 F0 T0.2 T0.1 T0.0 R0 ");
	assert_int_equal(n1, n2);
	const int BT = 10;
	assert_memory_equal(a, b, BT * 4); /* losses */
	/* lm_head is the last tensor: its gradients come first from the end */
	const size_t nh = (size_t)c.vocab_size * (size_t)c.n_embd;
	assert_memory_equal(a + n1 - nh, b + n2 - nh, nh * 4);
	double big = 0, worst = 0;
	for (size_t i = BT; i < n1; i++) {
		big = fmax(big, fabs(a[i]));
		worst = fmax(worst, fabs((double)a[i] - b[i]));
	}
	assert_true(big > 0 && worst <= 1e-5 * big);
	/* Tied: the embedding is the classifier too, both tile by tile; in
	 * the backward the classifier's tiles are released unwritten (their
	 * gradients wait in the source, added to by the encoder's). */
	c.tie_embeddings = true;
	float *x = run_model(&c, 2, 5, &n1, NULL, 0);
	run_tile = 16;
	float *y = run_model(&c, 2, 5, &n2, log, sizeof(log));
	run_tile = 0;
	assert_string_equal(log, "f0 t0.0 t0.1 t0.2 r0 f1 r1 f2 r2 f3 f0 t0.0 t0.1 t0.2 r0 r3 "
				 "F3 F0 T0.2 u T0.1 u T0.0 u r0 R3 F2 R2 F1 R1 F0 T0.2 T0.1 T0.0 "
				 "R0 ");
	assert_int_equal(n1, n2);
	assert_memory_equal(x, y, BT * 4); /* losses */
	big = worst = 0;
	for (size_t i = BT; i < n1; i++) {
		big = fmax(big, fabs(x[i]));
		worst = fmax(worst, fabs((double)x[i] - y[i]));
	}
	assert_true(big > 0 && worst <= 1e-5 * big);
	free(a), free(b), free(x), free(y);
}

/* Activation checkpointing, with and without offloaded inputs: the same
 * bits as the plain model (the kernels are deterministic). */
static void test_recompute_same_bits(void **state)
{
	(void)state;
	struct zn_llama_config c = tiny();
	c.n_layer = 3;
	c.qkv_bias = true;
	c.mlp_bias = true;
	c.rope_type = ZN_ROPE_LLAMA3;
	c.rope_factor = 8;
	c.rope_low_freq_factor = 1;
	c.rope_high_freq_factor = 4;
	c.rope_original_max_pos = 64;
	size_t n1, n2, n3;
	float *a = run_model(&c, 2, 11, &n1, NULL, 0);
	c.recompute = true;
	float *b = run_model(&c, 2, 11, &n2, NULL, 0);
	c.offload_activations = true;
	float *d = run_model(&c, 2, 11, &n3, NULL, 0);
	assert_true(n1 == n2 && n1 == n3);
	assert_memory_equal(a, b, n1 * 4);
	assert_memory_equal(a, d, n1 * 4);
	double s = 0;
	for (size_t i = 22; i < n1; i++)
		s += fabs(a[i]);
	assert_true(s > 0); /* there were gradients */
	free(a), free(b), free(d);
}

/* zn_llama_activation_estimate against real models, byte for byte. */
static void test_activation_estimate(void **state)
{
	(void)state;
	static const struct {
		int L, C, NH, NKV, HS, I, V, B, T;
		bool tied;
	} shapes[] = {
		{ 1, 8, 2, 1, 0, 12, 50, 1, 1, false },
		{ 2, 24, 4, 2, 0, 40, 37, 2, 13, true },
		{ 3, 39, 3, 3, 10, 70, 301, 3, 7, false },
		{ 2, 64, 8, 2, 16, 100, 1000, 2, 16, true },
	};
	for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++)
		for (int mode = 0; mode < 3; mode++) {
			struct zn_llama_config c = {
				.n_layer = shapes[s].L, .n_embd = shapes[s].C, .n_head = shapes[s].NH,
				.n_kv_head = shapes[s].NKV, .head_dim = shapes[s].HS,
				.intermediate = shapes[s].I, .vocab_size = shapes[s].V,
				.max_seq_len = 16, .norm_eps = 1e-5f, .tie_embeddings = shapes[s].tied,
				.recompute = mode > 0, .offload_activations = mode > 1,
			};
			struct mh_counts cnt = { 0 };
			struct zn_model_mem mem = mh_host_mem(&cnt);
			struct zn_llama *m = zn_llama_create(&c, shapes[s].B, shapes[s].T, K, ctx, &mem);
			assert_non_null(m);
			assert_true(zn_llama_activation_bytes(m) == cnt.dev);
			uint64_t dev = 0, dev_al = 0, host = 0;
			assert_int_equal(zn_llama_activation_estimate(&c, shapes[s].B, shapes[s].T, 1,
								      &dev, &host), 0);
			assert_int_equal(zn_llama_activation_estimate(&c, shapes[s].B, shapes[s].T,
								      ZN_DEVICE_ALIGN, &dev_al, NULL),
					 0);
			if (dev != cnt.dev || dev_al != cnt.dev_aligned || host != cnt.host)
				print_message("shape %zu mode %d: estimate %llu/%llu/%llu, made "
					      "%llu/%llu/%llu\n", s, mode, (unsigned long long)dev,
					      (unsigned long long)dev_al, (unsigned long long)host,
					      (unsigned long long)cnt.dev,
					      (unsigned long long)cnt.dev_aligned,
					      (unsigned long long)cnt.host);
			assert_true(dev == cnt.dev && dev_al == cnt.dev_aligned && host == cnt.host);
			assert_true(mode < 2 ? host == 0 : host > 0);
			zn_llama_destroy(m);
		}
	/* recompute holds less than the plain model; offloading less again */
	struct zn_llama_config c = tiny();
	c.n_layer = 8;
	uint64_t plain, rec, off;
	assert_int_equal(zn_llama_activation_estimate(&c, 4, 16, 1, &plain, NULL), 0);
	c.recompute = true;
	assert_int_equal(zn_llama_activation_estimate(&c, 4, 16, 1, &rec, NULL), 0);
	c.offload_activations = true;
	assert_int_equal(zn_llama_activation_estimate(&c, 4, 16, 1, &off, NULL), 0);
	assert_true(off < rec && rec < plain);
	/* what create refuses, the estimate refuses */
	assert_int_equal(zn_llama_activation_estimate(&c, 4, 17, 1, &off, NULL), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "max_position_embeddings 16"));
}

/* ---- the architecture tables (engine/model/arch.h) ------------------------------- */

static struct zn_arch gpt2_arch(void)
{
	struct zn_arch a = { .ops = &zn_arch_gpt2_ops };
	a.g = (struct zn_gpt2_config){ .n_layer = 2, .n_head = 2, .n_embd = 8, .vocab_size = 50,
				       .max_seq_len = 16 };
	assert_int_equal(zn_gpt2_config_check(&a.g), 0);
	return a;
}

static struct zn_arch llama_arch(void)
{
	struct zn_arch a = { .ops = &zn_arch_llama_ops, .l = tiny() };
	snprintf(a.l.architecture, sizeof(a.l.architecture), "LlamaForCausalLM");
	a.l.qkv_bias = true;
	a.l.rope_theta = 500000.0f;
	assert_int_equal(zn_llama_config_check(&a.l), 0);
	return a;
}

static void test_arch_describe(void **state)
{
	(void)state;
	struct zn_arch archs[2] = { gpt2_arch(), llama_arch() };
	for (int i = 0; i < 2; i++) {
		char d1[1024], d2[1024];
		struct zn_arch b;
		zn_arch_describe(&archs[i], d1, sizeof(d1));
		assert_int_equal(zn_arch_parse(d1, &b), 0);
		assert_ptr_equal(b.ops, archs[i].ops);
		zn_arch_describe(&b, d2, sizeof(d2));
		assert_string_equal(d1, d2);
		assert_int_equal(zn_arch_num_params(&b), zn_arch_num_params(&archs[i]));
	}
	struct zn_arch b;
	assert_int_equal(zn_arch_parse("gpt2 n_layer=2 n_head=x", &b), -EINVAL);
	assert_int_equal(zn_arch_parse("mamba d=1", &b), -EINVAL);
	assert_non_null(strstr(zn_last_error(), "of another zinc"));

	char s[256];
	zn_arch_summary(&archs[0], s, sizeof(s));
	assert_string_equal(s, "GPT-2 2 layers, 2 heads, 8 channels, vocab 50");
	zn_arch_summary(&archs[1], s, sizeof(s));
	assert_string_equal(s, "LlamaForCausalLM 2 layers, 4 heads (2 key/value), 24 channels, "
			       "MLP 40, vocab 37");
	struct zn_arch_dims d = zn_arch_dims(&archs[1]);
	assert_true(d.n_layer == 2 && d.n_head == 4 && d.n_embd == 24 && d.vocab_size == 37 &&
		    d.max_seq_len == 16);
	assert_int_equal(zn_arch_vocab(&archs[0]), 50);
	zn_arch_set_checkpointing(&archs[1], true, true);
	assert_true(archs[1].l.recompute && archs[1].l.offload_activations);
	assert_string_equal(zn_arch_name(&archs[0]), "GPT-2");
	assert_string_equal(zn_arch_name(&archs[1]), "LlamaForCausalLM");
}

/* Every tensor of `a` in model order, initialised from seed 7. */
struct all_tensors {
	struct zn_param_desc d[64];
	float *v[64];
	unsigned n;
};

static void all_tensors(const struct zn_arch *a, struct all_tensors *t)
{
	t->n = 0;
	for (unsigned l = 0; l < zn_arch_layers(a); l++)
		t->n += zn_arch_layer_params(a, l, t->d + t->n);
	assert_true(t->n <= 64);
	for (unsigned i = 0; i < t->n; i++) {
		t->v[i] = malloc(t->d[i].numel * sizeof(float));
		zn_arch_init_tensor(a, &t->d[i], 7, i, t->v[i]);
		/* Made in pieces of 7 (odd offsets: a pair's sine first), the
		 * same bits. */
		float piece[7];
		for (uint64_t off = 0; off < t->d[i].numel; off += 7) {
			uint64_t n = t->d[i].numel - off < 7 ? t->d[i].numel - off : 7;
			zn_arch_init_range(a, &t->d[i], 7, i, off, n, piece);
			assert_memory_equal(piece, t->v[i] + off, n * sizeof(float));
		}
	}
}

static void all_tensors_free(struct all_tensors *t)
{
	for (unsigned i = 0; i < t->n; i++)
		free(t->v[i]);
}

/* Every tensor of t read back from `path` through a's table: the same bits. */
static void read_back(const struct zn_arch *a, const char *path, const struct all_tensors *t)
{
	struct zn_arch_reader *r;
	assert_int_equal(zn_arch_reader_open(a, path, t->d, t->n, &r), 0);
	for (unsigned i = 0; i < t->n; i++) {
		float *got = malloc(t->d[i].numel * sizeof(float));
		assert_int_equal(zn_arch_reader_get(r, i, got), 0);
		assert_memory_equal(got, t->v[i], t->d[i].numel * sizeof(float));
		/* ... and in pieces of 5, the last first. */
		memset(got, 0, t->d[i].numel * sizeof(float));
		for (uint64_t end = t->d[i].numel; end > 0;) {
			uint64_t off = end > 5 ? end - 5 : 0;
			assert_int_equal(zn_arch_reader_get_range(r, i, off, end - off, got + off), 0);
			end = off;
		}
		assert_memory_equal(got, t->v[i], t->d[i].numel * sizeof(float));
		free(got);
	}
	float one;
	assert_int_equal(zn_arch_reader_get_range(r, 0, t->d[0].numel, 1, &one), -ERANGE);
	zn_arch_reader_close(r);
}

/* Two files hold the same bytes. */
static void same_bytes(const char *a, const char *b)
{
	FILE *f = fopen(a, "rb"), *g = fopen(b, "rb");
	assert_true(f && g);
	int x, y;
	do {
		x = fgetc(f);
		y = fgetc(g);
		assert_int_equal(x, y);
	} while (x != EOF);
	fclose(f);
	fclose(g);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path);
}

/* Write `a`'s tensors to `target` in its format, read them back and
 * compare, bit for bit. */
static void weights_round_trip(const struct zn_arch *a, const char *target)
{
	struct all_tensors t;
	all_tensors(a, &t);
	struct zn_arch_writer *w;
	assert_int_equal(zn_arch_writer_begin(a, target, t.d, t.n, "float32", &w), 0);
	for (unsigned i = 0; i < t.n; i++)
		assert_int_equal(zn_arch_writer_put(w, t.v[i]), 0);
	assert_int_equal(zn_arch_writer_end(w), 0);
	read_back(a, target, &t);
	/* Again in pieces of 13 across the tensors, through buffers of 20
	 * elements: the same file. */
	char again[4200], file1[4300], file2[4300];
	snprintf(again, sizeof(again), "%s.pieces", target);
	assert_int_equal(zn_arch_writer_begin_chunked(a, again, t.d, t.n, "float32", 20, &w), 0);
	uint64_t total = 0;
	for (unsigned i = 0; i < t.n; i++)
		total += t.d[i].numel;
	float *all = malloc(total * sizeof(float));
	for (unsigned i = 0, at = 0; i < t.n; at += (unsigned)t.d[i].numel, i++)
		memcpy(all + at, t.v[i], t.d[i].numel * sizeof(float));
	for (uint64_t off = 0; off < total; off += 13)
		assert_int_equal(zn_arch_writer_put_part(w, all + off, total - off < 13 ? total - off
											   : 13), 0);
	assert_int_equal(zn_arch_writer_put_part(w, all, 1), -EINVAL);
	assert_int_equal(zn_arch_writer_end(w), 0);
	free(all);
	const char *name = zn_arch_weights_name(a)[0] ? "" : "/model.safetensors";
	snprintf(file1, sizeof(file1), "%s%s", target, name);
	snprintf(file2, sizeof(file2), "%s%s", again, name);
	same_bytes(file1, file2);
	struct zn_arch_reader *r;
	/* a model of another shape is refused before anything is read */
	struct zn_param_desc wrong = t.d[t.n - 1];
	wrong.shape[0] += 1;
	wrong.numel += wrong.ndim == 2 ? (size_t)wrong.shape[1] : 1;
	assert_int_not_equal(zn_arch_reader_open(a, target, &wrong, 1, &r), 0);
	all_tensors_free(&t);
}

/* GPT-2's tensors in llm.c's layout (a 256-int32 header, then wte, wpe,
 * each of the 12 block kinds over all layers, ln_f, as train_gpt2.c
 * writes them), read back through the table. */
static void write_llmc(const struct zn_arch *a, const char *path)
{
	const struct zn_gpt2_config *c = &a->g;
	struct all_tensors t;
	all_tensors(a, &t);
	int32_t h[256] = { 20240326, 3, c->max_seq_len, c->vocab_size, c->n_layer, c->n_head,
			   c->n_embd, c->padded_vocab };
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(h, 4, 256, f), 256);
	unsigned order[64], n = 0, L = (unsigned)c->n_layer;
	order[n++] = 0, order[n++] = 1;
	for (unsigned k = 0; k < ZN_GPT2_BLOCK_TENSORS; k++)
		for (unsigned l = 0; l < L; l++)
			order[n++] = 2 + ZN_GPT2_BLOCK_TENSORS * l + k;
	order[n++] = t.n - 2, order[n++] = t.n - 1;
	assert_int_equal(n, t.n);
	for (unsigned i = 0; i < n; i++)
		assert_int_equal(fwrite(t.v[order[i]], 4, t.d[order[i]].numel, f),
				 t.d[order[i]].numel);
	fclose(f);
	read_back(a, path, &t);
	all_tensors_free(&t);
}

static void test_arch_weights(void **state)
{
	(void)state;
	const char *base = getenv("ZINC_TEST_DIR");
	char dir[4096], path[4200];
	snprintf(dir, sizeof(dir), "%s/llama.XXXXXX", base && *base ? base : ".");
	if (base && *base)
		mkdir(base, 0755);
	assert_non_null(mkdtemp(dir));

	struct zn_arch g = gpt2_arch(), l = llama_arch();
	assert_string_equal(zn_arch_weights_name(&g), "model.safetensors");
	zn_arch_weights_path(&g, dir, path, sizeof(path));
	assert_true(strlen(path) == strlen(dir) + 18 && strstr(path, "/model.safetensors"));
	weights_round_trip(&g, path);
	/* Hugging Face's names and shapes: Conv1D (C, OC), wte's real rows */
	struct zn_st_file *f = zn_st_open(path);
	assert_non_null(f);
	const struct zn_st_tensor *x = zn_st_find(f, "transformer.h.1.attn.c_attn.weight");
	assert_non_null(x);
	assert_true(x->ndim == 2 && x->shape[0] == 8 && x->shape[1] == 24);
	x = zn_st_find(f, "transformer.wte.weight");
	assert_true(x && x->shape[0] == 50 && x->shape[1] == 8);
	assert_string_equal(zn_st_metadata(f, "format"), "pt");
	zn_st_close(f);
	snprintf(path, sizeof(path), "%s/gpt2.bin", dir);
	write_llmc(&g, path);
	/* The writer's buffer: rows of the Conv1D weights, and one column's
	 * run -- the whole of the largest, (4C, C) = (32, 8): 32 x (8 + 1)
	 * elements; with 20 elements a block, 2 of c_fc's rows or (the
	 * least) 1 of the MLP's projection (C, 4C): 1 x (32 + 1). */
	struct all_tensors t;
	all_tensors(&g, &t);
	assert_int_equal(zn_arch_writer_bytes(&g, t.d, t.n, ZN_ARCH_CHUNK), 32 * 9 * 4);
	assert_int_equal(zn_arch_writer_bytes(&g, t.d, t.n, 20), 33 * 4);
	assert_int_equal(zn_arch_writer_bytes(&l, t.d, t.n, 20), zn_hf_writer_buffer_bytes());
	all_tensors_free(&t);

	assert_string_equal(zn_arch_weights_name(&l), "");
	snprintf(path, sizeof(path), "%s/llama", dir);
	weights_round_trip(&l, path);
	snprintf(path, sizeof(path), "%s/llama/config.json", dir);
	assert_int_equal(access(path, F_OK), 0);

	nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int setup(void **state)
{
	(void)state;
	K = zn_kernels_get("cpu");
	struct zn_kernels_params kp;
	zn_kernels_params_default(&kp);
	ctx = K ? K->ctx_create(&kp) : NULL;
	return ctx ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	K->ctx_destroy(ctx);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_config_check),
		cmocka_unit_test(test_layer_params),
		cmocka_unit_test(test_num_params),
		cmocka_unit_test(test_init),
		cmocka_unit_test(test_rope_inv_freq),
		cmocka_unit_test(test_fetch_order),
		cmocka_unit_test(test_tiles),
		cmocka_unit_test(test_recompute_same_bits),
		cmocka_unit_test(test_activation_estimate),
		cmocka_unit_test(test_arch_describe),
		cmocka_unit_test(test_arch_weights),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
