/* Runs a tiny Llama through zinc for tests/test_llama_oracle.py: writes
 * the parameters, the batch and the rotary inverse frequencies
 * (init.safetensors), then the loss and every gradient (grads.safetensors)
 * into DIR.
 *
 *   llama_oracle_helper DIR [key=value ...]
 *
 * Keys (defaults in `opts` below): L C NH NKV HS I V maxT B T theta eps
 * rope (default|llama3) factor lo hi orig tied qkv_bias mlp_bias recompute
 * offload seed.  Every parameter is zinc's initialisation plus a uniform
 * perturbation, so that norm weights and biases are not the constants
 * they start as and their part of the model is exercised.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zinc/kernels.h"
#include "zinc/llama.h"
#include "zinc/safetensors.h"

#include "model_host.h"

#define MAXT 256

struct resident {
	unsigned nt;                       /* tensors */
	struct zn_param_desc d[MAXT];
	unsigned layer_first[MAXT], layer_count[MAXT];
	float *p[MAXT], *g[MAXT];
};

static int fetch(void *user, unsigned layer, bool want, void **params, void **grads)
{
	struct resident *r = user;
	for (unsigned i = 0; i < r->layer_count[layer]; i++) {
		params[i] = r->p[r->layer_first[layer] + i];
		if (want)
			grads[i] = r->g[r->layer_first[layer] + i];
	}
	return 0;
}

static int release(void *user, unsigned layer, bool written)
{
	(void)user;
	(void)layer;
	(void)written;
	return 0;
}

static uint64_t lcg(uint64_t *s)
{
	*s = *s * 6364136223846793005ull + 1442695040888963407ull;
	return *s >> 17;
}

/* name=value arguments over these defaults */
static struct {
	const char *key;
	double value;
} opts[] = {
	{ "L", 2 }, { "C", 32 }, { "NH", 4 }, { "NKV", 2 }, { "HS", 0 }, { "I", 48 },
	{ "V", 61 }, { "maxT", 16 }, { "B", 2 }, { "T", 12 }, { "theta", 10000 },
	{ "eps", 1e-5 }, { "rope", 0 }, { "factor", 8 }, { "lo", 1 }, { "hi", 4 },
	{ "orig", 2048 }, { "tied", 0 }, { "qkv_bias", 0 }, { "mlp_bias", 0 },
	{ "recompute", 0 }, { "offload", 0 }, { "seed", 1234 }, { "std", 0.15 },
};

static double opt(const char *key)
{
	for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++)
		if (strcmp(opts[i].key, key) == 0)
			return opts[i].value;
	fprintf(stderr, "llama_oracle_helper: no option %s\n", key);
	exit(2);
}

static int parse(const char *arg)
{
	const char *eq = strchr(arg, '=');
	if (!eq)
		return -1;
	for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++)
		if (strlen(opts[i].key) == (size_t)(eq - arg) &&
		    strncmp(opts[i].key, arg, (size_t)(eq - arg)) == 0) {
			if (strcmp(eq + 1, "llama3") == 0)
				opts[i].value = 1;
			else if (strcmp(eq + 1, "default") == 0)
				opts[i].value = 0;
			else
				opts[i].value = atof(eq + 1);
			return 0;
		}
	return -1;
}

static int save(const char *dir, const char *file, struct resident *r, float **arrs,
		struct zn_st_tensor *extra, unsigned nextra)
{
	struct zn_st_tensor t[MAXT + 8];
	unsigned n = 0;
	char path[4096];
	for (unsigned i = 0; i < r->nt; i++)
		t[n++] = (struct zn_st_tensor){ .name = r->d[i].name, .dtype = ZN_ST_F32,
						.ndim = r->d[i].ndim,
						.shape = { (uint64_t)r->d[i].shape[0],
							   (uint64_t)r->d[i].shape[1] },
						.data = arrs[i], .bytes = r->d[i].numel * 4 };
	for (unsigned i = 0; i < nextra; i++)
		t[n++] = extra[i];
	snprintf(path, sizeof(path), "%s/%s", dir, file);
	return zn_st_write(path, t, n, NULL, 0);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: llama_oracle_helper DIR [key=value ...]\n");
		return 2;
	}
	for (int i = 2; i < argc; i++)
		if (parse(argv[i])) {
			fprintf(stderr, "llama_oracle_helper: bad argument %s\n", argv[i]);
			return 2;
		}
	struct zn_llama_config cfg = {
		.n_layer = (int)opt("L"), .n_embd = (int)opt("C"), .n_head = (int)opt("NH"),
		.n_kv_head = (int)opt("NKV"), .head_dim = (int)opt("HS"),
		.intermediate = (int)opt("I"), .vocab_size = (int)opt("V"),
		.max_seq_len = (int)opt("maxT"), .norm_eps = (float)opt("eps"),
		.rope_theta = (float)opt("theta"),
		.rope_type = opt("rope") != 0 ? ZN_ROPE_LLAMA3 : ZN_ROPE_DEFAULT,
		.rope_factor = (float)opt("factor"), .rope_low_freq_factor = (float)opt("lo"),
		.rope_high_freq_factor = (float)opt("hi"), .rope_original_max_pos = (int)opt("orig"),
		.tie_embeddings = opt("tied") != 0, .qkv_bias = opt("qkv_bias") != 0,
		.mlp_bias = opt("mlp_bias") != 0, .init_std = (float)opt("std"),
		.recompute = opt("recompute") != 0, .offload_activations = opt("offload") != 0,
	};
	const int B = (int)opt("B"), T = (int)opt("T"), BT = B * T;
	if (zn_llama_config_check(&cfg))
		goto fail;
	struct resident r = { 0 };
	for (unsigned l = 0; l < zn_llama_layers(&cfg); l++) {
		r.layer_first[l] = r.nt;
		r.layer_count[l] = zn_llama_layer_params(&cfg, l, r.d + r.nt, MAXT - r.nt);
		r.nt += r.layer_count[l];
	}
	uint64_t s = 99;
	for (unsigned i = 0; i < r.nt; i++) {
		r.p[i] = calloc(r.d[i].numel, 4);
		r.g[i] = calloc(r.d[i].numel, 4);
		zn_llama_init_tensor(&cfg, &r.d[i], (uint64_t)opt("seed"), i, r.p[i]);
		for (size_t j = 0; j < r.d[i].numel; j++)
			r.p[i][j] += (float)((double)(lcg(&s) % 2001) / 10000.0 - 0.1);
	}
	int32_t *tok = malloc((size_t)BT * 4), *tgt = malloc((size_t)BT * 4);
	int counted = 0;
	for (int i = 0; i < BT; i++) {
		tok[i] = (int32_t)(lcg(&s) % (uint64_t)cfg.vocab_size);
		tgt[i] = i % 7 == 3 ? -1 : (int32_t)(lcg(&s) % (uint64_t)cfg.vocab_size);
		counted += tgt[i] >= 0;
	}
	float inv[ZN_ROPE_MAX_HS / 2];
	if (zn_llama_rope_inv_freq(&cfg, inv))
		goto fail;

	const struct zn_kernels *k = zn_kernels_get("cpu");
	struct zn_kernels_params kp;
	zn_kernels_params_default(&kp);
	struct zn_kctx *ctx = k->ctx_create(&kp);
	struct zn_model_mem mem = mh_host_mem(NULL);
	struct zn_llama *model = ctx ? zn_llama_create(&cfg, B, T, k, ctx, &mem) : NULL;
	struct zn_param_source src = { .user = &r, .fetch = fetch, .release = release };
	if (!model)
		goto fail;
	struct zn_st_tensor ex[3] = {
		{ .name = "tokens", .dtype = ZN_ST_I32, .ndim = 1, .shape = { (uint64_t)BT },
		  .data = tok, .bytes = (uint64_t)BT * 4 },
		{ .name = "targets", .dtype = ZN_ST_I32, .ndim = 1, .shape = { (uint64_t)BT },
		  .data = tgt, .bytes = (uint64_t)BT * 4 },
		{ .name = "inv_freq", .dtype = ZN_ST_F32, .ndim = 1,
		  .shape = { (uint64_t)cfg.head_dim / 2 }, .data = inv,
		  .bytes = (uint64_t)cfg.head_dim / 2 * 4 },
	};
	if (save(argv[1], "init.safetensors", &r, r.p, ex, 3))
		goto fail;

	const float *lp;
	if (zn_llama_forward(model, &src, tok, tgt, NULL, true, 1.0f / (float)counted, &lp) ||
	    zn_llama_backward(model, &src, tok))
		goto fail;
	double sum = 0;
	for (int i = 0; i < BT; i++)
		sum += lp[i];
	float loss = (float)(sum / counted);
	struct zn_st_tensor lt = { .name = "loss", .dtype = ZN_ST_F32, .ndim = 1, .shape = { 1 },
				   .data = &loss, .bytes = 4 };
	if (save(argv[1], "grads.safetensors", &r, r.g, &lt, 1))
		goto fail;
	zn_llama_destroy(model);
	k->ctx_destroy(ctx);
	for (unsigned i = 0; i < r.nt; i++) {
		free(r.p[i]);
		free(r.g[i]);
	}
	free(tok);
	free(tgt);
	return 0;
fail:
	fprintf(stderr, "llama_oracle_helper: %s\n", zn_last_error());
	return 1;
}
