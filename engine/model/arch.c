/* The architectures' registry and the calls the trainer and the plan make
 * (see arch.h): each picks a->ops's function, nothing here knows a model. */
#include "model/arch.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
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
	a->ops->init_tensor(a, d, seed, index, 0, d->numel, out);
}

void zn_arch_init_range(const struct zn_arch *a, const struct zn_param_desc *d, uint64_t seed,
			uint64_t index, uint64_t off, uint64_t n, float *out)
{
	a->ops->init_tensor(a, d, seed, index, off, n, out);
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

/* Each tensor's elements, for the calls' checks, into a writer's or a
 * reader's base: 0 or -ENOMEM. */
static int keep_numels(uint64_t **numel, unsigned *count, const struct zn_param_desc *d,
		       unsigned n)
{
	uint64_t *e = malloc((n ? n : 1) * sizeof(*e));
	if (!e)
		return zn_error(-ENOMEM, "out of memory");
	for (unsigned i = 0; i < n; i++)
		e[i] = d[i].numel;
	*numel = e;
	*count = n;
	return 0;
}

int zn_arch_writer_begin_chunked(const struct zn_arch *a, const char *target,
				 const struct zn_param_desc *d, unsigned n, const char *dtype,
				 uint64_t chunk, struct zn_arch_writer **out)
{
	*out = NULL;
	int rc = a->ops->writer_begin(a, target, d, n, dtype, ZN_MAX(chunk, 1), out);
	if (!rc && (rc = keep_numels(&(*out)->numel, &(*out)->n, d, n))) {
		zn_arch_writer_abort(*out);
		*out = NULL;
	}
	return rc;
}

int zn_arch_writer_begin(const struct zn_arch *a, const char *target,
			 const struct zn_param_desc *d, unsigned n, const char *dtype,
			 struct zn_arch_writer **out)
{
	return zn_arch_writer_begin_chunked(a, target, d, n, dtype, ZN_ARCH_CHUNK, out);
}

uint64_t zn_arch_writer_bytes(const struct zn_arch *a, const struct zn_param_desc *d, unsigned n,
			      uint64_t chunk)
{
	return a->ops->writer_bytes(a, d, n, ZN_MAX(chunk, 1));
}

int zn_arch_writer_put_part(struct zn_arch_writer *w, const float *values, uint64_t n)
{
	while (n) {
		if (w->cur == w->n)
			return zn_error(-EINVAL, "the model's weights: more values put than its "
						 "%u tensors hold", w->n);
		const uint64_t k = ZN_MIN(n, w->numel[w->cur] - w->done);
		int rc = w->ops->writer_put(w, w->cur, w->done, values, k);
		if (rc)
			return rc;
		values += k;
		n -= k;
		if ((w->done += k) == w->numel[w->cur]) {
			w->cur++;
			w->done = 0;
		}
	}
	return 0;
}

int zn_arch_writer_put(struct zn_arch_writer *w, const float *values)
{
	if (w->cur == w->n)
		return zn_error(-EINVAL, "the model's weights: more tensors put than the %u begun",
				w->n);
	return zn_arch_writer_put_part(w, values, w->numel[w->cur] - w->done);
}

int zn_arch_writer_end(struct zn_arch_writer *w)
{
	uint64_t *e = w->numel;
	int rc = w->ops->writer_end(w);
	free(e);
	return rc;
}

void zn_arch_writer_abort(struct zn_arch_writer *w)
{
	if (!w)
		return;
	uint64_t *e = w->numel;
	w->ops->writer_abort(w);
	free(e);
}

int zn_arch_reader_open(const struct zn_arch *a, const char *path,
			const struct zn_param_desc *d, unsigned n, struct zn_arch_reader **out)
{
	*out = NULL;
	int rc = a->ops->reader_open(a, path, d, n, out);
	if (!rc && (rc = keep_numels(&(*out)->numel, &(*out)->n, d, n))) {
		zn_arch_reader_close(*out);
		*out = NULL;
	}
	return rc;
}

int zn_arch_reader_get_range(struct zn_arch_reader *r, unsigned i, uint64_t off, uint64_t n,
			     float *values)
{
	if (i >= r->n || off > r->numel[i] || n > r->numel[i] - off)
		return zn_error(-ERANGE, "the model's weights: elements [%" PRIu64 ", %" PRIu64
					 ") of tensor %u asked for, outside it", off, off + n, i);
	return r->ops->reader_get(r, i, off, n, values);
}

int zn_arch_reader_get(struct zn_arch_reader *r, unsigned i, float *values)
{
	return zn_arch_reader_get_range(r, i, 0, i < r->n ? r->numel[i] : 1, values);
}

void zn_arch_reader_close(struct zn_arch_reader *r)
{
	if (!r)
		return;
	uint64_t *e = r->numel;
	r->ops->reader_close(r);
	free(e);
}
