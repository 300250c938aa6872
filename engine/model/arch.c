/* The architectures' registry and the calls the trainer and the plan make
 * (see arch.h): each picks a->ops's function, nothing here knows a model. */
#include "model/arch.h"

#include <stdio.h>
#include <string.h>

static const struct zn_arch_ops *const archs[] = { &zn_arch_gpt2_ops, &zn_arch_llama_ops };

int zn_arch_from_config(const struct zn_config *cfg, struct zn_arch *a)
{
	memset(a, 0, sizeof(*a));
	for (size_t i = 0; i < ZN_ARRAY_SIZE(archs); i++)
		if ((int)archs[i]->type == cfg->model.type) {
			a->ops = archs[i];
			return a->ops->from_config(cfg, a);
		}
	return zn_error(-EINVAL, "model.type %d is not an architecture this zinc knows",
			cfg->model.type);
}

void zn_arch_describe(const struct zn_arch *a, char *out, size_t len)
{
	a->ops->describe(a, out, len);
}

int zn_arch_parse(const char *s, struct zn_arch *a)
{
	memset(a, 0, sizeof(*a));
	for (size_t i = 0; i < ZN_ARRAY_SIZE(archs); i++) {
		size_t n = strlen(archs[i]->name);
		if (strncmp(s, archs[i]->name, n) == 0 && s[n] == ' ') {
			a->ops = archs[i];
			return a->ops->parse(s, a);
		}
	}
	return zn_error(-EINVAL, "model description '%s' is damaged or of another zinc", s);
}

const char *zn_arch_name(const struct zn_arch *a)
{
	return a->ops->display_name(a);
}

void zn_arch_summary(const struct zn_arch *a, char *out, size_t len)
{
	a->ops->summary(a, out, len);
}

struct zn_arch_dims zn_arch_dims(const struct zn_arch *a)
{
	return a->ops->dims(a);
}

int zn_arch_vocab(const struct zn_arch *a)
{
	return a->ops->dims(a).vocab_size;
}

int zn_arch_max_seq_len(const struct zn_arch *a)
{
	return a->ops->dims(a).max_seq_len;
}

void zn_arch_set_checkpointing(struct zn_arch *a, bool recompute, bool offload_activations)
{
	a->ops->set_checkpointing(a, recompute, offload_activations);
}

unsigned zn_arch_layers(const struct zn_arch *a)
{
	return a->ops->layers(a);
}

unsigned zn_arch_layer_params(const struct zn_arch *a, unsigned layer, struct zn_param_desc *out)
{
	return a->ops->layer_params(a, layer, out);
}

uint64_t zn_arch_num_params(const struct zn_arch *a)
{
	return a->ops->num_params(a);
}

void zn_arch_init_tensor(const struct zn_arch *a, const struct zn_param_desc *d, uint64_t seed,
			 uint64_t index, float *out)
{
	a->ops->init_tensor(a, d, seed, index, out);
}

int zn_arch_activation_estimate(const struct zn_arch *a, int B, int T, size_t align,
				uint64_t *device_bytes, uint64_t *host_bytes)
{
	return a->ops->activation_estimate(a, B, T, align, device_bytes, host_bytes);
}

int zn_arch_model_create(struct zn_arch_model *m, const struct zn_arch *a, int B, int T,
			 const struct zn_kernels *k, struct zn_kctx *ctx,
			 const struct zn_model_mem *mem)
{
	m->a = a;
	m->impl = a->ops->create(a, B, T, k, ctx, mem);
	return m->impl ? 0 : -EINVAL;
}

void zn_arch_model_destroy(struct zn_arch_model *m)
{
	if (m->impl)
		m->a->ops->destroy(m->impl);
	m->impl = NULL;
}

int zn_arch_forward(struct zn_arch_model *m, const struct zn_param_source *src,
		    const int32_t *tokens, const int32_t *targets, bool for_backward,
		    float grad_scale, const float **losses)
{
	return m->a->ops->forward(m->impl, src, tokens, targets, for_backward, grad_scale, losses);
}

int zn_arch_backward(struct zn_arch_model *m, const struct zn_param_source *src,
		     const int32_t *tokens)
{
	return m->a->ops->backward(m->impl, src, tokens);
}

void zn_arch_profile_take(struct zn_arch_model *m, struct zn_model_profile *out)
{
	if (m->impl)
		m->a->ops->profile_take(m->impl, out);
	else
		memset(out, 0, sizeof(*out));
}

const char *zn_arch_weights_name(const struct zn_arch *a)
{
	return a->ops->weights_name;
}

void zn_arch_weights_path(const struct zn_arch *a, const char *dir, char *out, size_t len)
{
	const char *name = a->ops->weights_name;
	snprintf(out, len, "%s%s%s", dir, name[0] ? "/" : "", name);
}

int zn_arch_writer_begin(const struct zn_arch *a, const char *target,
			 const struct zn_param_desc *d, unsigned n, const char *dtype,
			 struct zn_arch_writer **out)
{
	*out = NULL;
	return a->ops->writer_begin(a, target, d, n, dtype, out);
}

int zn_arch_writer_put(struct zn_arch_writer *w, const float *values)
{
	return w->ops->writer_put(w, values);
}

int zn_arch_writer_end(struct zn_arch_writer *w)
{
	return w->ops->writer_end(w);
}

void zn_arch_writer_abort(struct zn_arch_writer *w)
{
	if (w)
		w->ops->writer_abort(w);
}

int zn_arch_reader_open(const struct zn_arch *a, const char *path,
			const struct zn_param_desc *d, unsigned n, struct zn_arch_reader **out)
{
	*out = NULL;
	return a->ops->reader_open(a, path, d, n, out);
}

int zn_arch_reader_get(struct zn_arch_reader *r, unsigned i, float *values)
{
	return r->ops->reader_get(r, i, values);
}

void zn_arch_reader_close(struct zn_arch_reader *r)
{
	if (r)
		r->ops->reader_close(r);
}
