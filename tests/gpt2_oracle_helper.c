/* Runs a tiny GPT-2 through zinc for tests/test_gpt2_oracle.py: writes the
 * initial parameters, the batch, the loss and every gradient, then the
 * parameters and losses after 3 AdamW steps, as safetensors files in DIR.
 *
 *   gpt2_oracle_helper DIR
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zinc/adam.h"
#include "zinc/kernels.h"
#include "zinc/model.h"
#include "zinc/safetensors.h"

#include "model_host.h"

#define MAXT 64

struct resident {
	struct zn_gpt2_config cfg;
	unsigned nt;                       /* tensors */
	struct zn_param_desc d[MAXT];
	unsigned layer_first[MAXT], layer_count[MAXT];
	float *p[MAXT], *g[MAXT], *m[MAXT], *v[MAXT];
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

static int save(const char *dir, const char *file, struct resident *r, float **arrs,
		const char *extra_name, const float *extra, size_t nextra, const int32_t *tok,
		const int32_t *tgt, int BT)
{
	struct zn_st_tensor t[MAXT + 3];
	unsigned n = 0;
	char path[4096];
	for (unsigned i = 0; i < r->nt; i++)
		t[n++] = (struct zn_st_tensor){ .name = r->d[i].name, .dtype = ZN_ST_F32,
						.ndim = r->d[i].ndim,
						.shape = { (uint64_t)r->d[i].shape[0],
							   (uint64_t)r->d[i].shape[1] },
						.data = arrs[i], .bytes = r->d[i].numel * 4 };
	if (extra)
		t[n++] = (struct zn_st_tensor){ .name = extra_name, .dtype = ZN_ST_F32, .ndim = 1,
						.shape = { nextra }, .data = extra,
						.bytes = nextra * 4 };
	if (tok) {
		t[n++] = (struct zn_st_tensor){ .name = "tokens", .dtype = ZN_ST_I32, .ndim = 1,
						.shape = { (uint64_t)BT }, .data = tok,
						.bytes = (uint64_t)BT * 4 };
		t[n++] = (struct zn_st_tensor){ .name = "targets", .dtype = ZN_ST_I32, .ndim = 1,
						.shape = { (uint64_t)BT }, .data = tgt,
						.bytes = (uint64_t)BT * 4 };
	}
	snprintf(path, sizeof(path), "%s/%s", dir, file);
	return zn_st_write(path, t, n, NULL, 0);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: gpt2_oracle_helper DIR\n");
		return 2;
	}
	struct resident r = { .cfg = { .n_layer = 2, .n_head = 4, .n_embd = 32, .vocab_size = 61,
				       .padded_vocab = 64, .max_seq_len = 16 } };
	const int B = 2, T = 12, BT = B * T;
	for (unsigned l = 0; l < zn_gpt2_layers(&r.cfg); l++) {
		r.layer_first[l] = r.nt;
		r.layer_count[l] = zn_gpt2_layer_params(&r.cfg, l, r.d + r.nt, MAXT - r.nt);
		r.nt += r.layer_count[l];
	}
	for (unsigned i = 0; i < r.nt; i++) {
		r.p[i] = calloc(r.d[i].numel, 4);
		r.g[i] = calloc(r.d[i].numel, 4);
		r.m[i] = calloc(r.d[i].numel, 4);
		r.v[i] = calloc(r.d[i].numel, 4);
		zn_gpt2_init_tensor(&r.cfg, &r.d[i], 1234, i, r.p[i]);
	}
	int32_t tok[24], tgt[24];
	uint64_t s = 77;
	for (int i = 0; i < BT; i++) {
		s = s * 6364136223846793005ull + 1442695040888963407ull;
		tok[i] = (int32_t)((s >> 33) % 61);
		tgt[i] = i % 7 == 3 ? -1 : (int32_t)((s >> 17) % 61); /* some ignored */
	}
	int counted = 0;
	for (int i = 0; i < BT; i++)
		counted += tgt[i] >= 0;

	const struct zn_kernels *k = zn_kernels_get("cpu");
	struct zn_kernels_params kp;
	zn_kernels_params_default(&kp);
	struct zn_kctx *ctx = k->ctx_create(&kp);
	struct zn_model_mem mem = mh_host_mem(NULL);
	struct zn_gpt2 *model = zn_gpt2_create(&r.cfg, B, T, k, ctx, &mem);
	struct zn_param_source src = { .user = &r, .fetch = fetch, .release = release };
	if (!ctx || !model) {
		fprintf(stderr, "gpt2_oracle_helper: %s\n", zn_last_error());
		return 1;
	}
	if (save(argv[1], "init.safetensors", &r, r.p, NULL, NULL, 0, tok, tgt, BT))
		goto fail;

	float losses[4];
	struct zn_adam_hparams hp;
	zn_adam_defaults(&hp);
	hp.lr = 1e-2;
	hp.weight_decay = 0.1;
	for (int step = 0; step <= 3; step++) {
		const float *lp;
		for (unsigned i = 0; i < r.nt; i++)
			memset(r.g[i], 0, r.d[i].numel * 4);
		if (zn_gpt2_forward(model, &src, tok, tgt, NULL, true, 1.0f / (float)counted, &lp) ||
		    zn_gpt2_backward(model, &src, tok))
			goto fail;
		double sum = 0;
		for (int i = 0; i < BT; i++)
			sum += lp[i];
		losses[step] = (float)(sum / counted);
		if (step == 0 &&
		    save(argv[1], "grads.safetensors", &r, r.g, "loss", losses, 1, NULL, NULL, 0))
			goto fail;
		if (step == 3)
			break;
		for (unsigned i = 0; i < r.nt; i++) {
			struct zn_adam_tensors t = { .n = r.d[i].numel, .param = r.p[i],
						     .grad = r.g[i], .grad_dtype = ZN_DTYPE_F32,
						     .exp_avg = r.m[i], .exp_avg_sq = r.v[i] };
			if (zn_adam_step(&hp, (uint64_t)step + 1, 1.0f, &t, NULL))
				goto fail;
		}
	}
	if (save(argv[1], "after3.safetensors", &r, r.p, "losses", losses, 4, NULL, NULL, 0))
		goto fail;
	zn_gpt2_destroy(model);
	k->ctx_destroy(ctx);
	for (unsigned i = 0; i < r.nt; i++) {
		free(r.p[i]);
		free(r.g[i]);
		free(r.m[i]);
		free(r.v[i]);
	}
	return 0;
fail:
	fprintf(stderr, "gpt2_oracle_helper: %s\n", zn_last_error());
	return 1;
}
