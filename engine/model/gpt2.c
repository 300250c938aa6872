/* GPT-2 on the kernels op table (see include/zinc/model.h).
 *
 * Shapes: B batch, T tokens, C = n_embd, NH heads, L layers, V vocab,
 * Vp padded vocab, BT = B * T.  Per block l (pre-LN):
 *
 *   ln1   = layernorm(res_l)                 (BT, C)   mean, rstd (BT)
 *   qkv   = ln1 @ Wqkv^T + bqkv              (BT, 3C)
 *   atty  = attention(qkv)                   (BT, C)   lse (B, NH, T)
 *   res2  = res_l + atty @ Wproj^T + bproj   (BT, C)
 *   ln2   = layernorm(res2)                  (BT, C)
 *   fch   = ln2 @ Wfc^T + bfc                (BT, 4C)
 *   gelu  = gelu(fch)                        (BT, 4C)
 *   res_{l+1} = res2 + gelu @ Wfcp^T + bfcp  (BT, C)
 *
 * res_0 = wte[tokens] + wpe[0:T]; logits = layernorm_f(res_L) @ wte^T.
 * Forward keeps per layer what backward needs (res_l, ln1, qkv, atty, lse,
 * res2, ln2, fch, gelu and the layernorm statistics); backward reuses a
 * handful of (BT, 4C)-sized scratch buffers, zeroed before each use since
 * the kernels' backward ops accumulate.  This is llm.c's train_gpt2.c
 * arrangement, with the parameters fetched per layer instead of owned.
 */
#include "zn_common.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zinc/model.h"
#include "model/common.h"

enum { LN1W, LN1B, QKVW, QKVB, PROJW, PROJB, LN2W, LN2B, FCW, FCB, FCPW, FCPB };

int zn_gpt2_config_check(struct zn_gpt2_config *c)
{
	if (c->n_layer < 1 || c->n_layer > 1024)
		return zn_error(-EINVAL, "model.n_layer: %d must be between 1 and 1024", c->n_layer);
	if (c->n_head < 1 || c->n_embd < 1 || c->n_embd % c->n_head)
		return zn_error(-EINVAL, "model.n_embd: %d must be a positive multiple of "
					 "model.n_head (%d)", c->n_embd, c->n_head);
	/* The MLP's 4 C and the kernels' dimensions are ints. */
	if (c->n_embd > (1 << 20))
		return zn_error(-EINVAL, "model.n_embd: %d is above the %d channels zinc takes",
				c->n_embd, 1 << 20);
	/* The padding rounds up to a multiple of 128 in an int. */
	if (c->vocab_size < 2 || c->vocab_size > INT_MAX / 128 * 128)
		return zn_error(-EINVAL, "model.vocab_size: %d must be between 2 and %d",
				c->vocab_size, INT_MAX / 128 * 128);
	if (c->padded_vocab == 0)
		c->padded_vocab = (c->vocab_size + 127) / 128 * 128;
	if (c->padded_vocab < c->vocab_size)
		return zn_error(-EINVAL, "model.padded_vocab: %d is below vocab_size %d",
				c->padded_vocab, c->vocab_size);
	if (c->max_seq_len < 1)
		return zn_error(-EINVAL, "model.max_seq_len: %d must be at least 1", c->max_seq_len);
	return 0;
}

unsigned zn_gpt2_layers(const struct zn_gpt2_config *c)
{
	return (unsigned)c->n_layer + 2;
}

static void desc(struct zn_param_desc *d, const char *name, unsigned ndim, int64_t a, int64_t b,
		 bool hf_t, bool decay, float std, float value)
{
	snprintf(d->name, sizeof(d->name), "%s", name);
	d->ndim = ndim;
	d->shape[0] = a;
	d->shape[1] = ndim == 2 ? b : 1;
	d->numel = (size_t)a * (size_t)(ndim == 2 ? b : 1);
	d->hf_transposed = hf_t;
	d->decay = decay;
	d->init_std = std;
	d->init_value = value;
	/* GPT-2's wte is tied and at most 50257 x 1600: it is taken whole
	 * (stored in tiles when larger than one). */
	d->tileable = false;
	d->tied = false;
}

unsigned zn_gpt2_layer_params(const struct zn_gpt2_config *c, unsigned layer,
			      struct zn_param_desc *out, unsigned max)
{
	const int64_t C = c->n_embd;
	/* GPT-2's initialisation (Hugging Face GPT2PreTrainedModel): normal
	 * with std 0.02, the projections into the residual stream scaled by
	 * 1/sqrt(2 L); biases 0, layernorm weights 1. */
	const float std = 0.02f, proj_std = 0.02f / sqrtf(2.0f * (float)c->n_layer);
	struct zn_param_desc d[ZN_GPT2_BLOCK_TENSORS];
	unsigned n = 0;
	char name[ZN_PARAM_NAME_MAX];

	if (layer == 0) {
		desc(&d[n++], "wte.weight", 2, c->padded_vocab, C, false, true, std, 0);
		desc(&d[n++], "wpe.weight", 2, c->max_seq_len, C, false, true, std, 0);
	} else if (layer <= (unsigned)c->n_layer) {
		unsigned l = layer - 1;
#define P(suffix, ...)                                                  \
	do {                                                            \
		snprintf(name, sizeof(name), "h.%u.%s", l, suffix);      \
		desc(&d[n++], name, __VA_ARGS__);                        \
	} while (0)
		P("ln_1.weight", 1, C, 0, false, false, 0, 1);
		P("ln_1.bias", 1, C, 0, false, false, 0, 0);
		P("attn.c_attn.weight", 2, 3 * C, C, true, true, std, 0);
		P("attn.c_attn.bias", 1, 3 * C, 0, false, false, 0, 0);
		P("attn.c_proj.weight", 2, C, C, true, true, proj_std, 0);
		P("attn.c_proj.bias", 1, C, 0, false, false, 0, 0);
		P("ln_2.weight", 1, C, 0, false, false, 0, 1);
		P("ln_2.bias", 1, C, 0, false, false, 0, 0);
		P("mlp.c_fc.weight", 2, 4 * C, C, true, true, std, 0);
		P("mlp.c_fc.bias", 1, 4 * C, 0, false, false, 0, 0);
		P("mlp.c_proj.weight", 2, C, 4 * C, true, true, proj_std, 0);
		P("mlp.c_proj.bias", 1, C, 0, false, false, 0, 0);
#undef P
	} else if (layer == (unsigned)c->n_layer + 1) {
		desc(&d[n++], "ln_f.weight", 1, C, 0, false, false, 0, 1);
		desc(&d[n++], "ln_f.bias", 1, C, 0, false, false, 0, 0);
	}
	for (unsigned i = 0; i < n && i < max; i++)
		out[i] = d[i];
	return n;
}

uint64_t zn_gpt2_num_params(const struct zn_gpt2_config *c)
{
	struct zn_param_desc d[ZN_GPT2_BLOCK_TENSORS];
	uint64_t total = 0;
	for (unsigned l = 0; l < zn_gpt2_layers(c); l++) {
		unsigned n = zn_gpt2_layer_params(c, l, d, ZN_GPT2_BLOCK_TENSORS);
		for (unsigned i = 0; i < n; i++)
			total += d[i].numel;
	}
	return total;
}

void zn_gpt2_init_tensor_range(const struct zn_gpt2_config *c, const struct zn_param_desc *d,
			       uint64_t seed, uint64_t tensor_index, uint64_t off, uint64_t n,
			       float *out)
{
	zn_model_init_range(d, seed, tensor_index, off, n, out);
	if (strcmp(d->name, "wte.weight") != 0)
		return;
	/* wte's padded rows: zeros from element V C on */
	const uint64_t pad = (uint64_t)c->vocab_size * (uint64_t)d->shape[1];
	for (uint64_t e = ZN_MAX(off, pad); e < off + n; e++)
		out[e - off] = 0;
}

void zn_gpt2_init_tensor(const struct zn_gpt2_config *c, const struct zn_param_desc *d,
			 uint64_t seed, uint64_t tensor_index, float *out)
{
	zn_gpt2_init_tensor_range(c, d, seed, tensor_index, 0, d->numel, out);
}

/* ---- the model --------------------------------------------------------------- */

struct layer_acts {
	void *ln1, *qkv, *atty, *res2, *ln2, *fch, *gelu;
	float *ln1_mean, *ln1_rstd, *ln2_mean, *ln2_rstd, *lse;
};

struct zn_gpt2 {
	struct zn_gpt2_config cfg;
	int B, T;
	const struct zn_kernels *k;
	struct zn_kctx *ctx;
	struct zn_model_mem mem;
	size_t esz;                    /* bytes per element of the storage dtype */
	struct zn_acts acts;           /* every activation allocation */
	struct zn_actckpt ck;          /* block inputs (the residual stream), checkpointing */
	struct layer_acts *la;         /* L working sets (recompute: unused) */
	struct layer_acts sa;          /* recompute: one block's activations, reused */
	void *res_final, *lnf, *logits;
	float *lnf_mean, *lnf_rstd, *losses;
	/* backward scratch */
	void *dres, *dln, *dbig, *dbig2, *dqkv, *datty;
	bool have_backward;            /* the last forward kept what backward needs */
};

/* Every activation, through `a` (allocating, or counting for the
 * estimate: one list, so the two cannot drift).  Per block: its input
 * (BT, C) (ck), and unless recompute shares one, its working set: ln1,
 * atty, res2, ln2 (BT, C); qkv (BT, 3C); fch, gelu (BT, 4C); four
 * layernorm statistics (BT); lse (B, NH, T).  Then res_final, lnf, the
 * final statistics, logits (BT, Vp), losses, and backward's scratch. */
static int alloc_all(void *model, struct zn_acts *a)
{
	struct zn_gpt2 *m = model;
	const struct zn_gpt2_config *c = &m->cfg;
	const size_t L = (size_t)c->n_layer, BT = (size_t)m->B * (size_t)m->T;
	const size_t C = (size_t)c->n_embd, NH = (size_t)c->n_head, Vp = (size_t)c->padded_vocab;
	const size_t e = m->esz;

	ZN_TRY(zn_actckpt_alloc(&m->ck, a, &m->mem, c->n_layer, BT * C * e, c->recompute,
				c->offload_activations, c->profile));
	for (size_t l = 0; l < (c->recompute ? 1 : L); l++) {
		struct layer_acts *s = c->recompute ? &m->sa : &m->la[l];
		s->ln1 = zn_acts_dev(a, BT * C * e);
		s->qkv = zn_acts_dev(a, BT * 3 * C * e);
		s->atty = zn_acts_dev(a, BT * C * e);
		s->res2 = zn_acts_dev(a, BT * C * e);
		s->ln2 = zn_acts_dev(a, BT * C * e);
		s->fch = zn_acts_dev(a, BT * 4 * C * e);
		s->gelu = zn_acts_dev(a, BT * 4 * C * e);
		s->ln1_mean = zn_acts_dev(a, BT * 4);
		s->ln1_rstd = zn_acts_dev(a, BT * 4);
		s->ln2_mean = zn_acts_dev(a, BT * 4);
		s->ln2_rstd = zn_acts_dev(a, BT * 4);
		s->lse = zn_acts_dev(a, (size_t)m->B * NH * (size_t)m->T * 4);
	}
	m->res_final = zn_acts_dev(a, BT * C * e);
	m->lnf = zn_acts_dev(a, BT * C * e);
	m->lnf_mean = zn_acts_dev(a, BT * 4);
	m->lnf_rstd = zn_acts_dev(a, BT * 4);
	m->logits = zn_acts_dev(a, BT * Vp * e);
	m->losses = zn_acts_dev(a, BT * 4);
	m->dres = zn_acts_dev(a, BT * C * e);
	m->dln = zn_acts_dev(a, BT * C * e);
	m->dbig = zn_acts_dev(a, BT * 4 * C * e);
	m->dbig2 = zn_acts_dev(a, BT * 4 * C * e);
	m->dqkv = zn_acts_dev(a, BT * 3 * C * e);
	m->datty = zn_acts_dev(a, BT * C * e);
	return a->err;
}

static const struct zn_model_kind gpt2_kind = {
	.name = "GPT-2",
	.alloc_all = alloc_all,
	.offload_error = "activation_checkpointing.cpu_checkpointing needs "
			 "activation_checkpointing.enabled (and a host-memory interface)",
	.alloc_advice = "",
};

/* The model's fields from a checked config, without allocating. */
static int setup(struct zn_gpt2 *m, const struct zn_gpt2_config *cfg, int B, int T)
{
	m->cfg = *cfg;
	if (zn_gpt2_config_check(&m->cfg))
		return -EINVAL;
	if (B < 1 || T < 1 || T > m->cfg.max_seq_len)
		return zn_error(-EINVAL, "GPT-2: batch %d x %d tokens: B must be >= 1 and T between "
					 "1 and max_seq_len %d", B, T, m->cfg.max_seq_len);
	if (m->cfg.offload_activations && !m->cfg.recompute)
		return zn_error(-EINVAL, "activation_checkpointing.cpu_checkpointing needs "
					 "activation_checkpointing.enabled (and a host-memory "
					 "interface)");
	m->B = B;
	m->T = T;
	ZN_TRY(zn_model_check_storage("GPT-2", cfg->act_dtype, NULL));
	m->esz = zn_dtype_size(cfg->act_dtype);
	m->la = calloc((size_t)m->cfg.n_layer, sizeof(*m->la));
	if (!m->la)
		return zn_error(-ENOMEM, "out of memory");
	return 0;
}

void zn_gpt2_destroy(struct zn_gpt2 *m)
{
	if (m)
		zn_model_free(m, &m->acts, &m->ck, m->la);
}

struct zn_gpt2 *zn_gpt2_create(const struct zn_gpt2_config *cfg, int B, int T,
			       const struct zn_kernels *k, struct zn_kctx *ctx,
			       const struct zn_model_mem *mem)
{
	struct zn_gpt2 *m = zn_model_calloc(sizeof(*m));
	if (!m)
		return NULL;
	m->k = k;
	m->ctx = ctx;
	m->mem = *mem;
	if (setup(m, cfg, B, T) || zn_model_alloc(&gpt2_kind, m, &m->acts, m->cfg.offload_activations,
						  m->cfg.act_dtype, ctx, mem, B, T)) {
		zn_gpt2_destroy(m);
		return NULL;
	}
	return m;
}

size_t zn_gpt2_activation_bytes(const struct zn_gpt2 *m)
{
	return m->acts.bytes;
}

/* What zn_gpt2_create allocates, without allocating: the same alloc_all,
 * counting.  test_gpt2_memory creates real models with counting
 * allocators and compares. */
int zn_gpt2_activation_estimate(const struct zn_gpt2_config *cfg, int B, int T, size_t align,
				uint64_t *device_bytes, uint64_t *host_bytes)
{
	struct zn_gpt2 *m = zn_model_calloc(sizeof(*m));
	if (!m)
		return -ENOMEM;
	int rc = setup(m, cfg, B, T);
	if (!rc)
		rc = zn_model_count(&gpt2_kind, m, &m->acts, align, device_bytes, host_bytes);
	zn_gpt2_destroy(m);
	return rc;
}

static struct layer_acts *acts_of(struct zn_gpt2 *m, int l)
{
	return m->cfg.recompute ? &m->sa : &m->la[l];
}

void zn_gpt2_profile_take(struct zn_gpt2 *m, struct zn_model_profile *out)
{
	zn_actckpt_profile_take(&m->ck, out);
}

static int block_forward(struct zn_gpt2 *m, struct layer_acts *a, const void *res,
			 void *const *p, void *out)
{
	const struct zn_kernels *k = m->k;
	const int B = m->B, T = m->T, BT = B * T, C = m->cfg.n_embd, NH = m->cfg.n_head;
	ZN_TRY(k->layernorm_forward(m->ctx, a->ln1, a->ln1_mean, a->ln1_rstd, res, p[LN1W],
				    p[LN1B], BT, C));
	ZN_TRY(k->matmul_forward(m->ctx, a->qkv, a->ln1, p[QKVW], p[QKVB], BT, C, 3 * C));
	ZN_TRY(k->attention_forward(m->ctx, a->atty, a->lse, a->qkv, B, T, NH, NH, C / NH));
	/* res2 = res + atty @ Wproj^T + b: the projection lands in res2, then
	 * the residual is added in place. */
	ZN_TRY(k->matmul_forward(m->ctx, a->res2, a->atty, p[PROJW], p[PROJB], BT, C, C));
	ZN_TRY(k->residual_forward(m->ctx, a->res2, a->res2, res, (size_t)BT * C));
	ZN_TRY(k->layernorm_forward(m->ctx, a->ln2, a->ln2_mean, a->ln2_rstd, a->res2, p[LN2W],
				    p[LN2B], BT, C));
	ZN_TRY(k->matmul_forward(m->ctx, a->fch, a->ln2, p[FCW], p[FCB], BT, C, 4 * C));
	ZN_TRY(k->gelu_forward(m->ctx, a->gelu, a->fch, (size_t)BT * 4 * C));
	ZN_TRY(k->matmul_forward(m->ctx, out, a->gelu, p[FCPW], p[FCPB], BT, 4 * C, C));
	ZN_TRY(k->residual_forward(m->ctx, out, out, a->res2, (size_t)BT * C));
	return 0;
}

static int head_forward(struct zn_gpt2 *m, void *const *pf, const void *wte,
			const int32_t *targets, const float *weights, bool for_backward,
			float grad_scale)
{
	const struct zn_kernels *k = m->k;
	const int BT = m->B * m->T, C = m->cfg.n_embd;
	ZN_TRY(k->layernorm_forward(m->ctx, m->lnf, m->lnf_mean, m->lnf_rstd, m->res_final, pf[0],
				    pf[1], BT, C));
	ZN_TRY(k->matmul_forward(m->ctx, m->logits, m->lnf, wte, NULL, BT, C, m->cfg.padded_vocab));
	if (!targets)
		return 0;
	/* dlogits overwrite the logits in place when a backward follows. */
	return k->softmax_crossentropy(m->ctx, m->losses, for_backward ? m->logits : NULL,
				       m->logits, targets, weights, grad_scale, BT,
				       m->cfg.vocab_size, m->cfg.padded_vocab);
}

int zn_gpt2_forward(struct zn_gpt2 *m, const struct zn_param_source *src, const int32_t *tokens,
		    const int32_t *targets, const float *weights, bool for_backward,
		    float grad_scale, const float **losses_out)
{
	const struct zn_kernels *k = m->k;
	const int B = m->B, T = m->T, C = m->cfg.n_embd, L = m->cfg.n_layer;
	void *p[ZN_GPT2_BLOCK_TENSORS];
	void *pf[2], *pe[2];

	if (for_backward && !targets)
		return zn_error(-EINVAL, "GPT-2 forward for backward needs targets");
	m->have_backward = false;
	ZN_WITH_LAYER(src, 0, false, pe, NULL,
		      k->encoder_forward(m->ctx, zn_actckpt_input(&m->ck, 0), tokens, pe[0],
				      pe[1], B, T, C, m->cfg.padded_vocab));
	for (int l = 0; l < L; l++) {
		void *out = zn_actckpt_output(&m->ck, l, m->res_final);
		ZN_WITH_LAYER(src, (unsigned)l + 1, false, p, NULL,
			      block_forward(m, acts_of(m, l), zn_actckpt_input(&m->ck, l), p, out));
		ZN_TRY(zn_actckpt_keep(&m->ck, l));
	}
	/* The classifier: ln_f, then wte again (tied). */
	ZN_TRY(src->fetch(src->user, (unsigned)L + 1, false, pf, NULL));
	int rc = src->fetch(src->user, 0, false, pe, NULL);
	if (!rc) {
		rc = head_forward(m, pf, pe[0], targets, weights, for_backward, grad_scale);
		int r2 = src->release(src->user, 0, false);
		rc = rc ? rc : r2;
	}
	int r3 = src->release(src->user, (unsigned)L + 1, false);
	ZN_TRY(rc);
	ZN_TRY(r3);
	m->have_backward = for_backward;
	if (losses_out)
		*losses_out = m->losses;
	return 0;
}

static int zero(struct zn_gpt2 *m, void *p, size_t bytes)
{
	return m->mem.memset0(m->mem.user, p, bytes);
}

static int block_backward(struct zn_gpt2 *m, struct layer_acts *a, const void *res,
			  void *const *p, void *const *g)
{
	const struct zn_kernels *k = m->k;
	const int B = m->B, T = m->T, BT = B * T, C = m->cfg.n_embd, NH = m->cfg.n_head;
	const size_t e = m->esz, nC = (size_t)BT * C;

	/* m->dres holds d(loss)/d(out) of the block; the residual passes it on
	 * unchanged, and each branch adds its own contribution to it. */
	ZN_TRY(zero(m, m->dbig, nC * 4 * e));
	ZN_TRY(k->matmul_backward(m->ctx, m->dbig, g[FCPW], g[FCPB], m->dres, a->gelu, p[FCPW], BT,
				  4 * C, C));
	ZN_TRY(zero(m, m->dbig2, nC * 4 * e));
	ZN_TRY(k->gelu_backward(m->ctx, m->dbig2, m->dbig, a->fch, nC * 4));
	ZN_TRY(zero(m, m->dln, nC * e));
	ZN_TRY(k->matmul_backward(m->ctx, m->dln, g[FCW], g[FCB], m->dbig2, a->ln2, p[FCW], BT, C,
				  4 * C));
	ZN_TRY(k->layernorm_backward(m->ctx, m->dres, g[LN2W], g[LN2B], m->dln, a->res2, p[LN2W],
				     a->ln2_mean, a->ln2_rstd, BT, C));
	/* m->dres is now d/d(res2). */
	ZN_TRY(zero(m, m->datty, nC * e));
	ZN_TRY(k->matmul_backward(m->ctx, m->datty, g[PROJW], g[PROJB], m->dres, a->atty, p[PROJW],
				  BT, C, C));
	ZN_TRY(zero(m, m->dqkv, nC * 3 * e));
	ZN_TRY(k->attention_backward(m->ctx, m->dqkv, m->datty, a->qkv, a->lse, B, T, NH, NH,
				     C / NH));
	ZN_TRY(zero(m, m->dln, nC * e));
	ZN_TRY(k->matmul_backward(m->ctx, m->dln, g[QKVW], g[QKVB], m->dqkv, a->ln1, p[QKVW], BT, C,
				  3 * C));
	ZN_TRY(k->layernorm_backward(m->ctx, m->dres, g[LN1W], g[LN1B], m->dln, res, p[LN1W],
				     a->ln1_mean, a->ln1_rstd, BT, C));
	/* m->dres is now d/d(res) of the block's input. */
	return 0;
}

/* Backward of block l; with recompute, its forward runs again first from
 * the kept input (writing the same bits to its output buffer). */
static int block_backward_at(struct zn_gpt2 *m, int l, void *const *p, void *const *g)
{
	ZN_TRY(zn_actckpt_restore(&m->ck, l)); /* offload_activations: the kept input comes back */
	struct layer_acts *a = acts_of(m, l);
	const void *res = zn_actckpt_input(&m->ck, l);
	ZN_ACTCKPT_RECOMPUTE(&m->ck, block_forward(m, a, res, p,
						   zn_actckpt_output(&m->ck, l, m->res_final)));
	return block_backward(m, a, res, p, g);
}

static int head_backward(struct zn_gpt2 *m, void *const *pf, void *const *gf, const void *wte,
			 void *dwte)
{
	const struct zn_kernels *k = m->k;
	const int BT = m->B * m->T, C = m->cfg.n_embd, Vp = m->cfg.padded_vocab;
	ZN_TRY(zero(m, m->dln, (size_t)BT * C * m->esz));
	/* The logits buffer holds dlogits since the forward. */
	ZN_TRY(k->matmul_backward(m->ctx, m->dln, dwte, NULL, m->logits, m->lnf, wte, BT, C, Vp));
	ZN_TRY(zero(m, m->dres, (size_t)BT * C * m->esz));
	return k->layernorm_backward(m->ctx, m->dres, gf[0], gf[1], m->dln, m->res_final, pf[0],
				     m->lnf_mean, m->lnf_rstd, BT, C);
}

int zn_gpt2_backward(struct zn_gpt2 *m, const struct zn_param_source *src, const int32_t *tokens)
{
	const int L = m->cfg.n_layer;
	void *p[ZN_GPT2_BLOCK_TENSORS], *g[ZN_GPT2_BLOCK_TENSORS];
	void *pf[2], *gf[2], *pe[2], *ge[2];

	if (!m->have_backward)
		return zn_error(-EINVAL, "GPT-2 backward without a forward for backward before it");
	m->have_backward = false;
	/* Classifier and ln_f; wte's gradient from the classifier is the first
	 * contribution to it, the encoder's comes last. */
	ZN_TRY(src->fetch(src->user, (unsigned)L + 1, true, pf, gf));
	int rc = src->fetch(src->user, 0, true, pe, ge);
	if (!rc) {
		rc = head_backward(m, pf, gf, pe[0], ge[0]);
		int r2 = src->release(src->user, 0, false); /* more to come into wte */
		rc = rc ? rc : r2;
	}
	int r3 = src->release(src->user, (unsigned)L + 1, !rc);
	ZN_TRY(rc);
	ZN_TRY(r3);
	for (int l = L - 1; l >= 0; l--)
		ZN_WITH_LAYER(src, (unsigned)l + 1, true, p, g, block_backward_at(m, l, p, g));
	ZN_WITH_LAYER(src, 0, true, pe, ge,
		      m->k->encoder_backward(m->ctx, ge[0], ge[1], m->dres, tokens, m->B, m->T,
					  m->cfg.n_embd, m->cfg.padded_vocab));
	return 0;
}
