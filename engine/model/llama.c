/* Llama-family decoders on the kernels op table (see include/zinc/llama.h
 * for the equations, shapes and layers).
 *
 * Forward keeps per block what backward needs: the block input res, x1 and
 * its rstd, the rotated packed qkv, the attention output and its
 * log-sum-exp, res2, x2 and its rstd, and the MLP's gate and up
 * projections (the SwiGLU product is recomputed in backward from them: an
 * elementwise pass instead of another (BT, I) per block).  The q, k, v
 * projections land in one scratch buffer (proj) and reach qkv through
 * rope_forward, which rotates q and k and copies v into their places;
 * backward undoes that with rope_backward into the same scratch.  Backward
 * reuses a handful of scratch buffers, zeroed before each use because the
 * kernels' backward ops accumulate.  Activation checkpointing is
 * common.c's struct zn_actckpt, as GPT-2's.
 */
#include "zn_common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zinc/llama.h"
#include "model/common.h"

/* The tensors a block may have, by role; a layer's list holds those the
 * config asks for, in transformers' state_dict order (the order of this
 * enum). */
enum role {
	Q_W, Q_B, K_W, K_B, V_W, V_B, O_W,
	GATE_W, GATE_B, UP_W, UP_B, DOWN_W, DOWN_B,
	IN_NORM, POST_NORM,
	NROLES
};

_Static_assert(NROLES <= ZN_LLAMA_LAYER_TENSORS_MAX, "a block fits the layer maximum");

static bool has_role(const struct zn_llama_config *c, enum role r)
{
	switch (r) {
	case Q_B: case K_B: case V_B:
		return c->qkv_bias;
	case GATE_B: case UP_B: case DOWN_B:
		return c->mlp_bias;
	default:
		return true;
	}
}

int zn_llama_config_check(struct zn_llama_config *c)
{
	if (c->n_layer < 1 || c->n_layer > 1024)
		return zn_error(-EINVAL, "Llama num_hidden_layers: %d must be between 1 and 1024",
				c->n_layer);
	if (c->n_embd < 1 || c->n_head < 1)
		return zn_error(-EINVAL, "Llama hidden_size %d and num_attention_heads %d must be "
				">= 1", c->n_embd, c->n_head);
	if (c->n_kv_head == 0)
		c->n_kv_head = c->n_head;
	if (c->n_kv_head < 1 || c->n_head % c->n_kv_head)
		return zn_error(-EINVAL, "Llama num_key_value_heads: %d must divide "
				"num_attention_heads %d (each key/value head serves a whole "
				"group of query heads)", c->n_kv_head, c->n_head);
	if (c->head_dim == 0) {
		if (c->n_embd % c->n_head)
			return zn_error(-EINVAL, "Llama hidden_size %d is not a multiple of "
					"num_attention_heads %d and head_dim is not given",
					c->n_embd, c->n_head);
		c->head_dim = c->n_embd / c->n_head;
	}
	if (c->head_dim < 2 || c->head_dim % 2 || c->head_dim > ZN_ROPE_MAX_HS)
		return zn_error(-EINVAL, "Llama head_dim: %d must be even (rotary pairs i, i + "
				"head_dim/2) and between 2 and %d", c->head_dim, ZN_ROPE_MAX_HS);
	/* In 64 bits: the heads alone may pass INT_MAX (2^30 + 2 x 2^30). */
	const long long qkv = ((long long)c->n_head + 2LL * c->n_kv_head) * c->head_dim;
	if (qkv > (1 << 24))
		return zn_error(-EINVAL, "Llama: (num_attention_heads + 2 num_key_value_heads) x "
				"head_dim = %lld is too wide", qkv);
	if (c->intermediate < 1)
		return zn_error(-EINVAL, "Llama intermediate_size: %d must be >= 1", c->intermediate);
	if (c->vocab_size < 2)
		return zn_error(-EINVAL, "Llama vocab_size: %d must be at least 2", c->vocab_size);
	if (c->max_seq_len < 1)
		return zn_error(-EINVAL, "Llama max_position_embeddings: %d must be at least 1",
				c->max_seq_len);
	if (!(c->norm_eps > 0.0f && c->norm_eps < 1.0f))
		return zn_error(-EINVAL, "Llama rms_norm_eps: %g must be > 0 and < 1 (1e-5 or 1e-6 "
				"in released models)", (double)c->norm_eps);
	if (c->rope_theta == 0.0f)
		c->rope_theta = 10000.0f;
	if (!(c->rope_theta > 1.0f) || isinf(c->rope_theta))
		return zn_error(-EINVAL, "Llama rope_theta: %g must be a finite number > 1",
				(double)c->rope_theta);
	if (c->rope_type == ZN_ROPE_LLAMA3) {
		if (!(c->rope_factor > 0.0f) || !(c->rope_low_freq_factor > 0.0f) ||
		    !(c->rope_high_freq_factor > c->rope_low_freq_factor) ||
		    c->rope_original_max_pos < 1)
			return zn_error(-EINVAL, "Llama rope_scaling (llama3): factor %g and "
					"low_freq_factor %g must be > 0, high_freq_factor %g above "
					"low_freq_factor, original_max_position_embeddings %d >= 1",
					(double)c->rope_factor, (double)c->rope_low_freq_factor,
					(double)c->rope_high_freq_factor, c->rope_original_max_pos);
	} else if (c->rope_type != ZN_ROPE_DEFAULT) {
		return zn_error(-EINVAL, "Llama rope type %d is not default (0) or llama3 (1)",
				(int)c->rope_type);
	}
	if (c->init_std == 0.0f)
		c->init_std = 0.02f;
	if (!(c->init_std > 0.0f) || isinf(c->init_std))
		return zn_error(-EINVAL, "Llama initializer_range: %g must be > 0",
				(double)c->init_std);
	if (c->offload_activations && !c->recompute)
		return zn_error(-EINVAL, "activation_checkpointing.cpu_checkpointing needs "
				"activation_checkpointing.enabled (and a host-memory interface)");
	return 0;
}

unsigned zn_llama_layers(const struct zn_llama_config *c)
{
	return (unsigned)c->n_layer + 2;
}

static void desc(struct zn_param_desc *d, const char *name, unsigned ndim, int64_t a, int64_t b,
		 bool decay, float std, float value)
{
	snprintf(d->name, sizeof(d->name), "%s", name);
	d->ndim = ndim;
	d->shape[0] = a;
	d->shape[1] = ndim == 2 ? b : 1;
	d->numel = (size_t)a * (size_t)(ndim == 2 ? b : 1);
	d->hf_transposed = false; /* transformers stores (out, in), as the kernels */
	d->decay = decay;
	d->init_std = std;
	d->init_value = value;
	d->tileable = false;
	d->tied = false;
}

/* One block tensor's description; false when the config has no such tensor. */
static bool block_desc(const struct zn_llama_config *c, unsigned l, enum role r,
		       struct zn_param_desc *d)
{
	static const char *const suffix[NROLES] = {
		[Q_W] = "self_attn.q_proj.weight", [Q_B] = "self_attn.q_proj.bias",
		[K_W] = "self_attn.k_proj.weight", [K_B] = "self_attn.k_proj.bias",
		[V_W] = "self_attn.v_proj.weight", [V_B] = "self_attn.v_proj.bias",
		[O_W] = "self_attn.o_proj.weight",
		[GATE_W] = "mlp.gate_proj.weight", [GATE_B] = "mlp.gate_proj.bias",
		[UP_W] = "mlp.up_proj.weight", [UP_B] = "mlp.up_proj.bias",
		[DOWN_W] = "mlp.down_proj.weight", [DOWN_B] = "mlp.down_proj.bias",
		[IN_NORM] = "input_layernorm.weight",
		[POST_NORM] = "post_attention_layernorm.weight",
	};
	if (!has_role(c, r))
		return false;
	const int64_t C = c->n_embd, QD = (int64_t)c->n_head * c->head_dim;
	const int64_t KD = (int64_t)c->n_kv_head * c->head_dim, I = c->intermediate;
	const float std = c->init_std;
	char name[ZN_PARAM_NAME_MAX];
	snprintf(name, sizeof(name), "model.layers.%u.%s", l, suffix[r]);
	switch (r) {
	case Q_W: desc(d, name, 2, QD, C, true, std, 0); break;
	case K_W: case V_W: desc(d, name, 2, KD, C, true, std, 0); break;
	case Q_B: desc(d, name, 1, QD, 0, false, 0, 0); break;
	case K_B: case V_B: desc(d, name, 1, KD, 0, false, 0, 0); break;
	case O_W: desc(d, name, 2, C, QD, true, std, 0); break;
	case GATE_W: case UP_W: desc(d, name, 2, I, C, true, std, 0); break;
	case GATE_B: case UP_B: desc(d, name, 1, I, 0, false, 0, 0); break;
	case DOWN_W: desc(d, name, 2, C, I, true, std, 0); break;
	case DOWN_B: desc(d, name, 1, C, 0, false, 0, 0); break;
	case IN_NORM: case POST_NORM: desc(d, name, 1, C, 0, false, 0, 1); break;
	default: return false;
	}
	return true;
}

unsigned zn_llama_layer_params(const struct zn_llama_config *c, unsigned layer,
			       struct zn_param_desc *out, unsigned max)
{
	struct zn_param_desc d[ZN_LLAMA_LAYER_TENSORS_MAX];
	unsigned n = 0;
	const int64_t C = c->n_embd, V = c->vocab_size;

	if (layer == 0) {
		desc(&d[n++], "model.embed_tokens.weight", 2, V, C, true, c->init_std, 0);
		d[0].tileable = true;
		d[0].tied = c->tie_embeddings; /* the classifier too */
	} else if (layer <= (unsigned)c->n_layer) {
		for (int r = 0; r < NROLES; r++)
			n += block_desc(c, layer - 1, (enum role)r, &d[n]);
	} else if (layer == (unsigned)c->n_layer + 1) {
		desc(&d[n++], "model.norm.weight", 1, C, 0, false, 0, 1);
		if (!c->tie_embeddings) {
			desc(&d[n++], "lm_head.weight", 2, V, C, true, c->init_std, 0);
			d[n - 1].tileable = true;
		}
	}
	for (unsigned i = 0; i < n && i < max; i++)
		out[i] = d[i];
	return n;
}

uint64_t zn_llama_num_params(const struct zn_llama_config *c)
{
	struct zn_param_desc d[ZN_LLAMA_LAYER_TENSORS_MAX];
	uint64_t total = 0;
	for (unsigned l = 0; l < zn_llama_layers(c); l++) {
		unsigned n = zn_llama_layer_params(c, l, d, ZN_LLAMA_LAYER_TENSORS_MAX);
		for (unsigned i = 0; i < n; i++)
			total += d[i].numel;
	}
	return total;
}

void zn_llama_init_tensor_range(const struct zn_llama_config *c, const struct zn_param_desc *d,
				uint64_t seed, uint64_t tensor_index, uint64_t off, uint64_t n,
				float *out)
{
	(void)c;
	zn_model_init_range(d, seed, tensor_index, off, n, out);
}

void zn_llama_init_tensor(const struct zn_llama_config *c, const struct zn_param_desc *d,
			  uint64_t seed, uint64_t tensor_index, float *out)
{
	zn_llama_init_tensor_range(c, d, seed, tensor_index, 0, d->numel, out);
}

int zn_llama_rope_inv_freq(const struct zn_llama_config *cfg, float *out)
{
	struct zn_llama_config c = *cfg;
	ZN_TRY(zn_llama_config_check(&c));
	const int HS = c.head_dim;
	/* _compute_llama3_parameters' constants: Python floats (double), each
	 * compared with or applied to an fp32 tensor as an fp32 scalar */
	const float lo = c.rope_low_freq_factor, hi = c.rope_high_freq_factor;
	const float old = (float)c.rope_original_max_pos, factor = c.rope_factor;
	const float low_wavelen = (float)((double)c.rope_original_max_pos / (double)lo);
	const float high_wavelen = (float)((double)c.rope_original_max_pos / (double)hi);
	const float span = (float)((double)hi - (double)lo);
	const float two_pi = (float)(2.0 * M_PI);
	for (int i = 0; i < HS / 2; i++) {
		/* _compute_default_rope_parameters:
		 *   1.0 / (base ** (arange(0, dim, 2).float() / dim))
		 * the exponent an fp32 division, base ** x an fp32 pow (here
		 * in double, rounded once), 1.0 / p an fp32 reciprocal */
		float e = (float)(2 * i) / (float)HS;
		float p = (float)pow((double)c.rope_theta, (double)e);
		float f = 1.0f / p;
		if (c.rope_type == ZN_ROPE_LLAMA3) {
			/* wavelen = 2 * math.pi / inv_freq: torch's scalar / tensor
			 * is tensor.reciprocal() * scalar */
			float wavelen = (1.0f / f) * two_pi;
			float g = wavelen > low_wavelen ? f / factor : f;
			if (!(wavelen < high_wavelen) && !(wavelen > low_wavelen)) {
				/* smooth = (old_context_len / wavelen - low) / (high - low) */
				float s = ((1.0f / wavelen) * old - lo) / span;
				g = (1.0f - s) * g / factor + s * g;
			}
			f = g;
		}
		out[i] = f;
	}
	return 0;
}

/* ---- the model --------------------------------------------------------------- */

struct blk_acts {
	void *x1, *qkv, *att, *res2, *x2, *gate, *up;
	float *rstd1, *rstd2, *lse;
};

struct zn_llama {
	struct zn_llama_config cfg;
	int B, T, BT, C, NH, NKV, HS, QD, KD, W, I, V;
	const struct zn_kernels *k;
	struct zn_kctx *ctx;
	struct zn_model_mem mem;
	size_t esz;                 /* bytes per element of the storage dtype */
	struct zn_acts acts;
	struct zn_actckpt ck;       /* block inputs, checkpointing */
	struct blk_acts *la;        /* L working sets (recompute: unused) */
	struct blk_acts sa;         /* recompute: one working set, reused */
	void *res_final, *xf, *logits;
	float *rstdf, *losses;
	/* scratch: proj (BT, W): q | k | v before the rotation, then their
	 * gradients; hbig (BT, I): the SwiGLU product, then dgate */
	void *proj, *hbig;
	void *dres, *dx, *dh, *dup, *dqkv, *datt;
	int role[NROLES];           /* index in a block's tensor list, -1: absent */
	float inv_freq[ZN_ROPE_MAX_HS / 2];
	bool have_backward;
	const struct zn_param_source *src; /* the pass's, for tiles */
};

/* Every activation, through `a` (allocating or counting).  First the L
 * working-set slots la, in counting mode too: the loop below fills them. */
static int alloc_all(void *model, struct zn_acts *a)
{
	struct zn_llama *m = model;
	const struct zn_llama_config *c = &m->cfg;
	const size_t L = (size_t)c->n_layer, BT = (size_t)m->BT, C = (size_t)m->C, e = m->esz;
	const size_t QD = (size_t)m->QD, W = (size_t)m->W, I = (size_t)m->I, V = (size_t)m->V;
	const size_t lse = (size_t)m->B * (size_t)m->NH * (size_t)m->T * 4;

	m->la = calloc(L, sizeof(*m->la));
	if (!m->la)
		return zn_error(-ENOMEM, "out of memory");
	ZN_TRY(zn_actckpt_alloc(&m->ck, a, &m->mem, c->n_layer, BT * C * e, c->recompute,
				c->offload_activations, c->profile));
	size_t sets = c->recompute ? 1 : L;
	for (size_t l = 0; l < sets; l++) {
		struct blk_acts *s = c->recompute ? &m->sa : &m->la[l];
		s->x1 = zn_acts_dev(a, BT * C * e);
		s->rstd1 = zn_acts_dev(a, BT * 4);
		s->qkv = zn_acts_dev(a, BT * W * e);
		s->att = zn_acts_dev(a, BT * QD * e);
		s->lse = zn_acts_dev(a, lse);
		s->res2 = zn_acts_dev(a, BT * C * e);
		s->x2 = zn_acts_dev(a, BT * C * e);
		s->rstd2 = zn_acts_dev(a, BT * 4);
		s->gate = zn_acts_dev(a, BT * I * e);
		s->up = zn_acts_dev(a, BT * I * e);
	}
	m->res_final = zn_acts_dev(a, BT * C * e);
	m->xf = zn_acts_dev(a, BT * C * e);
	m->rstdf = zn_acts_dev(a, BT * 4);
	m->logits = zn_acts_dev(a, BT * V * e);
	m->losses = zn_acts_dev(a, BT * 4);
	m->proj = zn_acts_dev(a, BT * W * e);
	m->hbig = zn_acts_dev(a, BT * I * e);
	m->dres = zn_acts_dev(a, BT * C * e);
	m->dx = zn_acts_dev(a, BT * C * e);
	m->dh = zn_acts_dev(a, BT * I * e);
	m->dup = zn_acts_dev(a, BT * I * e);
	m->dqkv = zn_acts_dev(a, BT * W * e);
	m->datt = zn_acts_dev(a, BT * QD * e);
	return a->err;
}

static const struct zn_model_kind llama_kind = {
	.name = "Llama",
	.alloc_all = alloc_all,
	.offload_to_device = true,
	.offload_error = "activation_checkpointing.cpu_checkpointing needs a host-memory "
			 "interface (host_alloc, to_host, to_device)",
	.alloc_advice = ", or enable activation_checkpointing",
};

/* The model's fields from a checked config, without allocating. */
static int setup(struct zn_llama *m, const struct zn_llama_config *cfg, int B, int T)
{
	m->cfg = *cfg;
	struct zn_llama_config *c = &m->cfg;
	ZN_TRY(zn_llama_config_check(c));
	if (B < 1 || T < 1 || T > c->max_seq_len)
		return zn_error(-EINVAL, "Llama: batch %d x %d tokens: B must be >= 1 and T between "
				"1 and max_position_embeddings %d", B, T, c->max_seq_len);
	if ((long long)B * T > (1 << 30))
		return zn_error(-EINVAL, "Llama: batch %d x %d tokens is too many rows", B, T);
	m->B = B;
	m->T = T;
	m->BT = B * T;
	m->C = c->n_embd;
	m->NH = c->n_head;
	m->NKV = c->n_kv_head;
	m->HS = c->head_dim;
	m->QD = m->NH * m->HS;
	m->KD = m->NKV * m->HS;
	m->W = m->QD + 2 * m->KD;
	m->I = c->intermediate;
	m->V = c->vocab_size;
	ZN_TRY(zn_model_check_storage("Llama", cfg->act_dtype, NULL));
	m->esz = zn_dtype_size(cfg->act_dtype);
	int n = 0;
	for (int r = 0; r < NROLES; r++)
		m->role[r] = has_role(c, (enum role)r) ? n++ : -1;
	return zn_llama_rope_inv_freq(c, m->inv_freq);
}

void zn_llama_destroy(struct zn_llama *m)
{
	if (m)
		zn_model_free(m, &m->acts, &m->ck, m->la);
}

struct zn_llama *zn_llama_create(const struct zn_llama_config *cfg, int B, int T,
				 const struct zn_kernels *k, struct zn_kctx *ctx,
				 const struct zn_model_mem *mem)
{
	struct zn_llama *m = zn_model_calloc(sizeof(*m));
	if (!m)
		return NULL;
	m->k = k;
	m->ctx = ctx;
	m->mem = *mem;
	if (setup(m, cfg, B, T) || zn_model_alloc(&llama_kind, m, &m->acts,
						  m->cfg.offload_activations, m->cfg.act_dtype,
						  ctx, mem, B, T)) {
		zn_llama_destroy(m);
		return NULL;
	}
	return m;
}

size_t zn_llama_activation_bytes(const struct zn_llama *m)
{
	return m->acts.bytes;
}

int zn_llama_activation_estimate(const struct zn_llama_config *cfg, int B, int T, size_t align,
				 uint64_t *device_bytes, uint64_t *host_bytes)
{
	struct zn_llama *m = zn_model_calloc(sizeof(*m));
	if (!m)
		return -ENOMEM;
	int rc = setup(m, cfg, B, T);
	if (!rc)
		rc = zn_model_count(&llama_kind, m, &m->acts, align, device_bytes, host_bytes);
	zn_llama_destroy(m);
	return rc;
}

void zn_llama_profile_take(struct zn_llama *m, struct zn_model_profile *out)
{
	zn_actckpt_profile_take(&m->ck, out);
}

/* ---- forward --------------------------------------------------------------- */

/* void * arithmetic in elements of the storage dtype */
static void *at(const struct zn_llama *m, const void *p, size_t elems)
{
	return (char *)p + elems * m->esz;
}

/* A block tensor by role: NULL when the config has none (a bias). */
static void *tensor_of(void *const *p, const struct zn_llama *m, enum role r)
{
	return m->role[r] < 0 ? NULL : p[m->role[r]];
}
#define PR(r) tensor_of(p, m, r)
#define GR(r) tensor_of(g, m, r)

static struct blk_acts *acts_of(struct zn_llama *m, int l)
{
	return m->cfg.recompute ? &m->sa : &m->la[l];
}

static int block_forward(struct zn_llama *m, struct blk_acts *a, const void *res,
			 void *const *p, void *out)
{
	const struct zn_kernels *k = m->k;
	struct zn_kctx *x = m->ctx;
	const int B = m->B, T = m->T, BT = m->BT, C = m->C, NH = m->NH, NKV = m->NKV, HS = m->HS;
	const int QD = m->QD, KD = m->KD, W = m->W, I = m->I;
	void *q = m->proj, *kp = at(m, m->proj, (size_t)BT * QD);
	void *v = at(m, kp, (size_t)BT * KD);

	ZN_TRY(k->rmsnorm_forward(x, a->x1, a->rstd1, res, PR(IN_NORM), m->cfg.norm_eps, BT, C));
	ZN_TRY(k->matmul_forward(x, q, a->x1, PR(Q_W), PR(Q_B), BT, C, QD));
	ZN_TRY(k->matmul_forward(x, kp, a->x1, PR(K_W), PR(K_B), BT, C, KD));
	ZN_TRY(k->matmul_forward(x, v, a->x1, PR(V_W), PR(V_B), BT, C, KD));
	/* qkv rows of W = [rope(q) | rope(k) | v] */
	ZN_TRY(k->rope_forward(x, a->qkv, W, q, QD, m->inv_freq, B, T, NH, HS));
	ZN_TRY(k->rope_forward(x, at(m, a->qkv, (size_t)QD), W, kp, KD, m->inv_freq, B, T, NKV,
			       HS));
	ZN_TRY(k->rope_forward(x, at(m, a->qkv, (size_t)QD + KD), W, v, KD, NULL, B, T, NKV, HS));
	ZN_TRY(k->attention_forward(x, a->att, a->lse, a->qkv, B, T, NH, NKV, HS));
	/* res2 = res + att @ Wo^T: the projection lands in res2, the residual
	 * is added in place */
	ZN_TRY(k->matmul_forward(x, a->res2, a->att, PR(O_W), NULL, BT, QD, C));
	ZN_TRY(k->residual_forward(x, a->res2, a->res2, res, (size_t)BT * C));
	ZN_TRY(k->rmsnorm_forward(x, a->x2, a->rstd2, a->res2, PR(POST_NORM), m->cfg.norm_eps, BT,
				  C));
	ZN_TRY(k->matmul_forward(x, a->gate, a->x2, PR(GATE_W), PR(GATE_B), BT, C, I));
	ZN_TRY(k->matmul_forward(x, a->up, a->x2, PR(UP_W), PR(UP_B), BT, C, I));
	ZN_TRY(k->swiglu_forward(x, m->hbig, a->gate, a->up, (size_t)BT * I));
	ZN_TRY(k->matmul_forward(x, out, m->hbig, PR(DOWN_W), PR(DOWN_B), BT, I, C));
	return k->residual_forward(x, out, out, a->res2, (size_t)BT * C);
}

/* ---- a vocabulary's tensors in tiles ---------------------------------------- */

/* Rows per tile of tensor idx of `layer` (0: it comes whole). */
static unsigned tile_rows(const struct zn_param_source *src, unsigned layer, unsigned idx)
{
	return src->tile_rows ? src->tile_rows(src->user, layer, idx) : 0;
}

typedef int (*tile_fn)(struct zn_llama *m, void *w, void *g, int row0, int rows, void *arg);

/* fn over the tiles of R rows of the V-row tensor idx of `layer`, each
 * between its fetch and release: backward passes go from the last tile
 * down, as layers go, so that gradients leave in descending order; with
 * `final` false their gradients are not final yet (a tied embedding's
 * classifier pass: they wait for the encoder's). */
static int over_tiles(struct zn_llama *m, const struct zn_param_source *src, unsigned layer,
		      unsigned idx, unsigned R, bool grads, bool final, tile_fn fn, void *arg)
{
	const unsigned n = ((unsigned)m->V + R - 1) / R;
	for (unsigned k = 0; k < n; k++) {
		const unsigned j = grads ? n - 1 - k : k;
		const int row0 = (int)(j * R), rows = ZN_MIN((int)R, m->V - row0);
		void *w = NULL, *g = NULL;
		ZN_TRY(src->fetch_tile(src->user, layer, idx, j, grads, &w, grads ? &g : NULL));
		int rc = fn(m, w, g, row0, rows, arg);
		int r2 = src->release_tile(src->user, layer, idx, j, grads && final && !rc);
		ZN_TRY(rc);
		ZN_TRY(r2);
	}
	return 0;
}

static int embed_fwd_tile(struct zn_llama *m, void *w, void *g, int row0, int rows, void *arg)
{
	(void)g;
	return m->k->embedding_rows_forward(m->ctx, zn_actckpt_input(&m->ck, 0), arg, w, row0,
					    rows, m->BT, m->C);
}

static int embed_bwd_tile(struct zn_llama *m, void *w, void *g, int row0, int rows, void *arg)
{
	(void)w;
	return m->k->embedding_rows_backward(m->ctx, g, m->dres, arg, row0, rows, m->BT, m->C);
}

/* The embedding (layer 0), whole or tile by tile. */
static int embed(struct zn_llama *m, const struct zn_param_source *src, const int32_t *tokens,
		 bool backward)
{
	void *pe[1] = { NULL }, *ge[1] = { NULL };
	const unsigned R = tile_rows(src, 0, 0);
	ZN_TRY(src->fetch(src->user, 0, backward, pe, backward ? ge : NULL));
	int rc;
	if (R)
		rc = over_tiles(m, src, 0, 0, R, backward, true,
				backward ? embed_bwd_tile : embed_fwd_tile, (void *)tokens);
	else if (backward)
		rc = m->k->encoder_backward(m->ctx, ge[0], NULL, m->dres, tokens, m->B, m->T, m->C,
					    m->V);
	else
		rc = m->k->encoder_forward(m->ctx, zn_actckpt_input(&m->ck, 0), tokens, pe[0], NULL,
					   m->B, m->T, m->C, m->V);
	int r2 = src->release(src->user, 0, backward && !rc);
	ZN_TRY(rc);
	return r2;
}

/* A classifier tile's columns of the logits, and its gradients. */
static int head_fwd_tile(struct zn_llama *m, void *w, void *g, int row0, int rows, void *arg)
{
	(void)g;
	(void)arg;
	return m->k->matmul_forward_ld(m->ctx, (char *)m->logits + (size_t)row0 * m->esz, m->V,
				       m->xf, w, m->BT, m->C, rows);
}

static int head_bwd_tile(struct zn_llama *m, void *w, void *g, int row0, int rows, void *arg)
{
	(void)arg;
	return m->k->matmul_backward_ld(m->ctx, m->dx, g, (char *)m->logits + (size_t)row0 * m->esz,
					m->V, m->xf, w, m->BT, m->C, rows);
}

/* Where the classifier's tensor is: lm_head (layer L+1's second), or tied
 * the embedding (layer 0's only one). */
static void classifier_at(const struct zn_llama *m, unsigned *layer, unsigned *idx)
{
	*layer = m->cfg.tie_embeddings ? 0 : (unsigned)m->cfg.n_layer + 1;
	*idx = m->cfg.tie_embeddings ? 0 : 1;
}

/* logits = xf @ lm_head^T, whole or tile by tile (lm_head NULL: tiled). */
static int classify(struct zn_llama *m, const void *lm_head)
{
	unsigned l, i;
	if (lm_head)
		return m->k->matmul_forward(m->ctx, m->logits, m->xf, lm_head, NULL, m->BT, m->C,
					    m->V);
	classifier_at(m, &l, &i);
	return over_tiles(m, m->src, l, i, tile_rows(m->src, l, i), false, false, head_fwd_tile,
			  NULL);
}

static int head_forward(struct zn_llama *m, const void *norm_w, const void *lm_head,
			const int32_t *targets, const float *weights, bool for_backward,
			float grad_scale)
{
	const struct zn_kernels *k = m->k;
	ZN_TRY(k->rmsnorm_forward(m->ctx, m->xf, m->rstdf, m->res_final, norm_w, m->cfg.norm_eps,
				  m->BT, m->C));
	ZN_TRY(classify(m, lm_head));
	if (!targets)
		return 0;
	/* dlogits overwrite the logits in place when a backward follows */
	return k->softmax_crossentropy(m->ctx, m->losses, for_backward ? m->logits : NULL,
				       m->logits, targets, weights, grad_scale, m->BT, m->V, m->V);
}

/* The classifier's layers: L+1 (norm [, lm_head]) and, tied, 0 again. */
static int with_head(struct zn_llama *m, const struct zn_param_source *src, bool grads,
		     int (*fn)(struct zn_llama *, void *const *, void *const *, void *, void *,
			       void *),
		     void *arg)
{
	const unsigned L = (unsigned)m->cfg.n_layer;
	void *pf[2] = { NULL, NULL }, *gf[2] = { NULL, NULL }, *pe[1], *ge[1] = { NULL };
	ZN_TRY(src->fetch(src->user, L + 1, grads, pf, grads ? gf : NULL));
	int rc = 0;
	if (m->cfg.tie_embeddings) {
		rc = src->fetch(src->user, 0, grads, pe, grads ? ge : NULL);
		if (!rc) {
			rc = fn(m, pf, gf, pe[0], ge[0], arg);
			/* the embedding's own contribution comes last: not final */
			int r2 = src->release(src->user, 0, false);
			rc = rc ? rc : r2;
		}
	} else {
		rc = fn(m, pf, gf, pf[1], gf[1], arg);
	}
	int r3 = src->release(src->user, L + 1, grads && !rc);
	ZN_TRY(rc);
	return r3;
}

struct fwd_args {
	const int32_t *targets;
	const float *weights;
	bool for_backward;
	float grad_scale;
};

static int head_fwd_cb(struct zn_llama *m, void *const *pf, void *const *gf, void *w, void *gw,
		       void *arg)
{
	(void)gf;
	(void)gw;
	const struct fwd_args *f = arg;
	return head_forward(m, pf[0], w, f->targets, f->weights, f->for_backward, f->grad_scale);
}

int zn_llama_forward(struct zn_llama *m, const struct zn_param_source *src,
		     const int32_t *tokens, const int32_t *targets, const float *weights,
		     bool for_backward, float grad_scale, const float **losses_out)
{
	const int L = m->cfg.n_layer;
	void *p[ZN_LLAMA_LAYER_TENSORS_MAX];

	if (for_backward && !targets)
		return zn_error(-EINVAL, "Llama forward for backward needs targets");
	m->have_backward = false;
	m->src = src;
	ZN_TRY(embed(m, src, tokens, false));
	for (int l = 0; l < L; l++) {
		void *out = zn_actckpt_output(&m->ck, l, m->res_final);
		ZN_WITH_LAYER(src, (unsigned)l + 1, false, p, NULL,
			      block_forward(m, acts_of(m, l), zn_actckpt_input(&m->ck, l), p, out));
		ZN_TRY(zn_actckpt_keep(&m->ck, l));
	}
	struct fwd_args f = { targets, weights, for_backward, grad_scale };
	ZN_TRY(with_head(m, src, false, head_fwd_cb, &f));
	m->have_backward = for_backward;
	if (losses_out)
		*losses_out = m->losses;
	return 0;
}

/* ---- backward -------------------------------------------------------------- */

static int zero(struct zn_llama *m, void *p, size_t elems)
{
	return m->mem.memset0(m->mem.user, p, elems * m->esz);
}

static int block_backward(struct zn_llama *m, struct blk_acts *a, const void *res,
			  void *const *p, void *const *g)
{
	const struct zn_kernels *k = m->k;
	struct zn_kctx *x = m->ctx;
	const int B = m->B, T = m->T, BT = m->BT, C = m->C, NH = m->NH, NKV = m->NKV, HS = m->HS;
	const int QD = m->QD, KD = m->KD, W = m->W, I = m->I;
	const size_t nC = (size_t)BT * C, nI = (size_t)BT * I;

	/* m->dres holds d(loss)/d(out); the residual passes it on, each
	 * branch adds its part. */
	/* MLP: h = silu(gate) * up, again from the kept gate and up */
	ZN_TRY(k->swiglu_forward(x, m->hbig, a->gate, a->up, nI));
	ZN_TRY(zero(m, m->dh, nI));
	ZN_TRY(k->matmul_backward(x, m->dh, GR(DOWN_W), GR(DOWN_B), m->dres, m->hbig, PR(DOWN_W),
				  BT, I, C));
	ZN_TRY(zero(m, m->hbig, nI)); /* now dgate */
	ZN_TRY(zero(m, m->dup, nI));
	ZN_TRY(k->swiglu_backward(x, m->hbig, m->dup, m->dh, a->gate, a->up, nI));
	ZN_TRY(zero(m, m->dx, nC));
	ZN_TRY(k->matmul_backward(x, m->dx, GR(GATE_W), GR(GATE_B), m->hbig, a->x2, PR(GATE_W), BT,
				  C, I));
	ZN_TRY(k->matmul_backward(x, m->dx, GR(UP_W), GR(UP_B), m->dup, a->x2, PR(UP_W), BT, C, I));
	ZN_TRY(k->rmsnorm_backward(x, m->dres, GR(POST_NORM), m->dx, a->res2, PR(POST_NORM),
				   a->rstd2, BT, C));
	/* m->dres is now d/d(res2).  Attention: */
	ZN_TRY(zero(m, m->datt, (size_t)BT * QD));
	ZN_TRY(k->matmul_backward(x, m->datt, GR(O_W), NULL, m->dres, a->att, PR(O_W), BT, QD, C));
	ZN_TRY(zero(m, m->dqkv, (size_t)BT * W));
	ZN_TRY(k->attention_backward(x, m->dqkv, m->datt, a->qkv, a->lse, B, T, NH, NKV, HS));
	/* unpack: dq, dk rotated back, dv copied, into proj */
	void *dq = m->proj, *dk = at(m, m->proj, (size_t)BT * QD), *dv = at(m, dk, (size_t)BT * KD);
	ZN_TRY(zero(m, m->proj, (size_t)BT * W));
	ZN_TRY(k->rope_backward(x, dq, QD, m->dqkv, W, m->inv_freq, B, T, NH, HS));
	ZN_TRY(k->rope_backward(x, dk, KD, at(m, m->dqkv, (size_t)QD), W, m->inv_freq, B, T, NKV,
				HS));
	ZN_TRY(k->rope_backward(x, dv, KD, at(m, m->dqkv, (size_t)QD + KD), W, NULL, B, T, NKV,
				HS));
	ZN_TRY(zero(m, m->dx, nC));
	ZN_TRY(k->matmul_backward(x, m->dx, GR(Q_W), GR(Q_B), dq, a->x1, PR(Q_W), BT, C, QD));
	ZN_TRY(k->matmul_backward(x, m->dx, GR(K_W), GR(K_B), dk, a->x1, PR(K_W), BT, C, KD));
	ZN_TRY(k->matmul_backward(x, m->dx, GR(V_W), GR(V_B), dv, a->x1, PR(V_W), BT, C, KD));
	/* m->dres becomes d/d(res) of the block's input */
	return k->rmsnorm_backward(x, m->dres, GR(IN_NORM), m->dx, res, PR(IN_NORM), a->rstd1, BT,
				   C);
}

/* Block l's backward; with recompute, its forward runs again first from
 * the kept input (writing the same bits to its output buffer). */
static int block_backward_at(struct zn_llama *m, int l, void *const *p, void *const *g)
{
	ZN_TRY(zn_actckpt_restore(&m->ck, l));
	struct blk_acts *a = acts_of(m, l);
	const void *res = zn_actckpt_input(&m->ck, l);
	ZN_ACTCKPT_RECOMPUTE(&m->ck, block_forward(m, a, res, p,
						   zn_actckpt_output(&m->ck, l, m->res_final)));
	return block_backward(m, a, res, p, g);
}

static int head_bwd_cb(struct zn_llama *m, void *const *pf, void *const *gf, void *w, void *gw,
		       void *arg)
{
	(void)arg;
	const struct zn_kernels *k = m->k;
	ZN_TRY(zero(m, m->dx, (size_t)m->BT * m->C));
	/* the logits buffer holds dlogits since the forward */
	if (w)
		ZN_TRY(k->matmul_backward(m->ctx, m->dx, gw, NULL, m->logits, m->xf, w, m->BT, m->C,
					  m->V));
	else { /* the classifier in tiles (tied: not final, the encoder's come) */
		unsigned l, i;
		classifier_at(m, &l, &i);
		ZN_TRY(over_tiles(m, m->src, l, i, tile_rows(m->src, l, i), true,
				  !m->cfg.tie_embeddings, head_bwd_tile, NULL));
	}
	ZN_TRY(zero(m, m->dres, (size_t)m->BT * m->C));
	return k->rmsnorm_backward(m->ctx, m->dres, gf[0], m->dx, m->res_final, pf[0], m->rstdf,
				   m->BT, m->C);
}

int zn_llama_backward(struct zn_llama *m, const struct zn_param_source *src,
		      const int32_t *tokens)
{
	const int L = m->cfg.n_layer;
	void *p[ZN_LLAMA_LAYER_TENSORS_MAX], *g[ZN_LLAMA_LAYER_TENSORS_MAX];

	if (!m->have_backward)
		return zn_error(-EINVAL, "Llama backward without a forward for backward before it");
	m->have_backward = false;
	m->src = src;
	ZN_TRY(with_head(m, src, true, head_bwd_cb, NULL));
	for (int l = L - 1; l >= 0; l--)
		ZN_WITH_LAYER(src, (unsigned)l + 1, true, p, g, block_backward_at(m, l, p, g));
	return embed(m, src, tokens, true);
}
