/* Writing a Hugging Face folder (include/zinc/hf.h): tensors cut into
 * shards of at most max_shard_bytes, values streamed in as fp32 and
 * rounded to the output dtype, each shard written under a temporary name
 * and fsynced; at the end the shards are renamed into place, then the
 * index and config.json are written, and model files of an earlier save
 * that the new set does not replace are removed.
 */
#include "zn_common.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "zinc/dtype.h"
#include "io/files.h"
#include "io/hf_internal.h"
#include "zinc/hf.h"
#include "zinc/json.h"

struct wtensor {
	const char *name;  /* the desc's */
	unsigned ndim;
	uint64_t shape[2];
	uint64_t numel;
	size_t shard;
};

struct wshard {
	size_t first, count; /* tensors */
	uint64_t bytes;      /* tensor data */
	char *final;         /* DIR/model-00001-of-00003.safetensors */
	char *tmp;           /* DIR/.model-00001-of-00003.safetensors.zinc-tmp-PID */
	bool complete;       /* tmp is written and fsynced */
};

struct zn_hf_writer {
	char *dir;
	struct zn_llama_config cfg;
	enum zn_st_dtype dtype;
	const char *torch_dtype;
	struct zn_param_desc *descs; /* a copy: names live here */
	struct wtensor *t;
	size_t n;
	struct wshard *s;
	size_t ns;
	size_t cur;                  /* tensor being put */
	uint64_t done;               /* its values put so far */
	struct zn_st_writer *sw;     /* the shard of t[cur] */
	uint16_t *stage;             /* STAGE converted values */
	int err;                     /* first failure; sticky */
};

#define STAGE (1u << 16) /* values converted per write: 128 KiB of 16-bit */

uint64_t zn_hf_writer_buffer_bytes(void)
{
	return STAGE * sizeof(uint16_t);
}

static int open_shard(struct zn_hf_writer *w, size_t si)
{
	struct wshard *s = &w->s[si];
	struct zn_st_tensor *tt = calloc(s->count, sizeof(*tt));
	static const struct zn_st_meta meta[] = { { "format", "pt" } }; /* transformers checks it */
	int rc;

	if (!tt)
		return zn_error(-ENOMEM, "out of memory");
	for (size_t i = 0; i < s->count; i++) {
		const struct wtensor *t = &w->t[s->first + i];
		tt[i] = (struct zn_st_tensor){
			.name = t->name, .dtype = w->dtype, .ndim = t->ndim,
			.shape = { t->shape[0], t->shape[1] },
			.bytes = t->numel * zn_st_dtype_size(w->dtype),
		};
	}
	rc = zn_st_writer_begin(s->tmp, tt, s->count, meta, ZN_ARRAY_SIZE(meta), &w->sw);
	free(tt);
	return rc;
}

void zn_hf_writer_abort(struct zn_hf_writer *w)
{
	if (!w)
		return;
	zn_st_writer_abort(w->sw);
	for (size_t i = 0; i < w->ns; i++) {
		if (w->s[i].complete)
			unlink(w->s[i].tmp);
		free(w->s[i].final);
		free(w->s[i].tmp);
	}
	free(w->s);
	free(w->t);
	free(w->descs);
	free(w->stage);
	free(w->dir);
	free(w);
}

int zn_hf_writer_begin(const char *dir, const struct zn_llama_config *cfg,
		       const struct zn_param_desc *descs, size_t n, const char *dtype,
		       uint64_t max_shard_bytes, struct zn_hf_writer **out)
{
	struct zn_hf_writer *w;
	int rc;

	*out = NULL;
	if (!zn_hf_arch_supported(cfg->architecture))
		return zn_error(-ENOTSUP, "'%s': architecture '%s' is not one zinc writes (%s)",
				dir, cfg->architecture, ZN_HF_SUPPORTED_ARCHS);
	w = calloc(1, sizeof(*w));
	if (!w)
		return zn_error(-ENOMEM, "out of memory");
	w->torch_dtype = zn_hf_torch_dtype(dtype, &w->dtype);
	if (!w->torch_dtype) {
		free(w);
		return zn_error(-EINVAL, "'%s': dtype '%s' is not one zinc writes: use bfloat16, "
				"float16 or float32", dir, dtype ? dtype : "(null)");
	}
	if (!n) {
		free(w);
		return zn_error(-EINVAL, "'%s': a model with no tensors", dir);
	}
	if (!max_shard_bytes)
		max_shard_bytes = ZN_HF_DEFAULT_SHARD_BYTES;
	w->cfg = *cfg;
	w->n = n;
	w->dir = strdup(dir);
	w->descs = malloc(n * sizeof(*w->descs));
	w->t = calloc(n, sizeof(*w->t));
	w->s = calloc(n, sizeof(*w->s)); /* at most one shard per tensor */
	w->stage = malloc(STAGE * sizeof(*w->stage));
	if (!w->dir || !w->descs || !w->t || !w->s || !w->stage) {
		zn_hf_writer_abort(w);
		return zn_error(-ENOMEM, "out of memory");
	}
	memcpy(w->descs, descs, n * sizeof(*descs));

	/* The tensors, checked, and cut into shards in order: a shard closes
	 * when the next tensor would take it past the limit. */
	size_t es = zn_st_dtype_size(w->dtype);
	for (size_t i = 0; i < n; i++) {
		struct zn_param_desc *d = &w->descs[i];
		struct wtensor *t = &w->t[i];
		d->name[sizeof(d->name) - 1] = 0;
		t->name = d->name;
		t->ndim = d->ndim;
		t->numel = 1;
		const char *why = NULL;
		if (!d->name[0])
			why = "has no name";
		else if (d->hf_transposed)
			why = "is marked transposed (GPT-2's Conv1D), which a Llama folder never is";
		else if (d->ndim < 1 || d->ndim > 2)
			why = "does not have 1 or 2 dimensions";
		for (unsigned k = 0; !why && k < d->ndim; k++) {
			if (d->shape[k] <= 0 || (uint64_t)d->shape[k] > UINT64_MAX / es / t->numel)
				why = "has a dimension that is not positive, or too large";
			else
				t->shape[k] = (uint64_t)d->shape[k];
			t->numel *= t->shape[k];
		}
		for (size_t k = 0; !why && k < i; k++)
			if (strcmp(w->t[k].name, t->name) == 0)
				why = "has a name already used";
		if (why) {
			rc = zn_error(-EINVAL, "'%s': tensor %zu ('%s') %s", dir, i, d->name, why);
			zn_hf_writer_abort(w);
			return rc;
		}
		uint64_t bytes = t->numel * es;
		if (w->ns == 0 || (w->s[w->ns - 1].bytes + bytes > max_shard_bytes &&
				   w->s[w->ns - 1].count > 0)) {
			w->s[w->ns].first = i;
			w->ns++;
		}
		struct wshard *s = &w->s[w->ns - 1];
		t->shard = w->ns - 1;
		s->count++;
		s->bytes += bytes;
	}
	for (size_t i = 0; i < w->ns; i++) {
		char name[64];
		if (w->ns == 1)
			snprintf(name, sizeof(name), ZN_HF_SINGLE_NAME);
		else
			snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", i + 1, w->ns);
		w->s[i].final = zn_io_join(dir, name);
		if (asprintf(&w->s[i].tmp, "%s/.%s.zinc-tmp-%d", dir, name, (int)getpid()) < 0)
			w->s[i].tmp = NULL;
		if (!w->s[i].final || !w->s[i].tmp) {
			zn_hf_writer_abort(w);
			return zn_error(-ENOMEM, "out of memory");
		}
	}
	rc = zn_io_mkdirs(dir);
	if (rc) {
		zn_hf_writer_abort(w);
		return zn_error(rc, "cannot create model folder '%s': %s", dir, strerror(-rc));
	}
	rc = open_shard(w, 0);
	if (rc) {
		zn_hf_writer_abort(w);
		return rc;
	}
	*out = w;
	return 0;
}

/* Append n values of the current tensor, converted. */
static int put_values(struct zn_hf_writer *w, const float *v, uint64_t n)
{
	if (w->dtype == ZN_ST_F32)
		return zn_st_writer_put(w->sw, v, n * sizeof(float));
	while (n) {
		size_t k = n < STAGE ? (size_t)n : STAGE;
		zn_dtype_from_f32(w->stage, w->dtype == ZN_ST_BF16 ? ZN_DTYPE_BF16 : ZN_DTYPE_F16, v, k);
		int rc = zn_st_writer_put(w->sw, w->stage, k * sizeof(uint16_t));
		if (rc)
			return rc;
		v += k;
		n -= k;
	}
	return 0;
}

int zn_hf_writer_put_part(struct zn_hf_writer *w, const float *data, uint64_t n)
{
	if (w->err)
		return w->err;
	while (n) {
		if (w->cur == w->n)
			return w->err = zn_error(-EINVAL, "'%s': more values put than the %zu tensors "
						 "hold", w->dir, w->n);
		const struct wtensor *t = &w->t[w->cur];
		uint64_t k = ZN_MIN(n, t->numel - w->done);
		int rc = put_values(w, data, k);
		if (rc)
			return w->err = rc;
		data += k;
		n -= k;
		w->done += k;
		if (w->done < t->numel)
			continue;
		w->cur++;
		w->done = 0;
		struct wshard *s = &w->s[t->shard];
		if (w->cur < s->first + s->count)
			continue;
		/* The shard's last tensor: close it (fsynced), open the next. */
		rc = zn_st_writer_end(w->sw);
		w->sw = NULL;
		if (rc)
			return w->err = rc;
		s->complete = true;
		if (w->cur < w->n && (rc = open_shard(w, t->shard + 1)))
			return w->err = rc;
	}
	return 0;
}

int zn_hf_writer_put(struct zn_hf_writer *w, const float *data)
{
	if (w->err)
		return w->err;
	if (w->cur == w->n)
		return w->err = zn_error(-EINVAL, "'%s': more tensors put than the %zu given to "
					 "zn_hf_writer_begin", w->dir, w->n);
	return zn_hf_writer_put_part(w, data, w->t[w->cur].numel - w->done);
}

/* model-00001-of-00003.safetensors (any number of digits) */
static bool is_shard_name(const char *s)
{
	const char *p = s;
	if (strncmp(p, "model-", 6) != 0)
		return false;
	p += 6;
	if (!strchr("0123456789", *p) || !*p)
		return false;
	while (*p >= '0' && *p <= '9')
		p++;
	if (strncmp(p, "-of-", 4) != 0)
		return false;
	p += 4;
	if (!(*p >= '0' && *p <= '9'))
		return false;
	while (*p >= '0' && *p <= '9')
		p++;
	return strcmp(p, ".safetensors") == 0;
}

/* Remove model files of an earlier save that the new set does not
 * replace, so that the folder holds one model. */
static void remove_stale(struct zn_hf_writer *w)
{
	DIR *d = opendir(w->dir);
	if (!d)
		return;
	for (struct dirent *e; (e = readdir(d));) {
		bool ours = false, model = is_shard_name(e->d_name) ||
					   strcmp(e->d_name, ZN_HF_SINGLE_NAME) == 0 ||
					   strcmp(e->d_name, ZN_HF_INDEX_NAME) == 0;
		if (!model)
			continue;
		if (w->ns > 1 && strcmp(e->d_name, ZN_HF_INDEX_NAME) == 0)
			continue;
		for (size_t i = 0; i < w->ns && !ours; i++)
			ours = strcmp(strrchr(w->s[i].final, '/') + 1, e->d_name) == 0;
		if (!ours) {
			char *p = zn_io_join(w->dir, e->d_name);
			if (p && unlink(p) != 0)
				zn_warn("cannot remove '%s' of an earlier save: %s", p,
					strerror(errno));
			free(p);
		}
	}
	closedir(d);
}

static int write_index(struct zn_hf_writer *w)
{
	struct zn_json j;
	char *text = NULL;
	size_t len;
	uint64_t total = 0;
	size_t *order = malloc(w->n * sizeof(*order));
	int rc;

	if (!order || zn_json_open_memory(&j, ZN_JSON_PRETTY | ZN_JSON_LINE)) {
		free(order);
		return zn_error(-ENOMEM, "out of memory");
	}
	for (size_t i = 0; i < w->ns; i++)
		total += w->s[i].bytes;
	/* weight_map sorted by name, as transformers writes it (sort_keys). */
	for (size_t i = 0; i < w->n; i++) {
		size_t k = i;
		while (k > 0 && strcmp(w->t[order[k - 1]].name, w->t[i].name) > 0) {
			order[k] = order[k - 1];
			k--;
		}
		order[k] = i;
	}
	zn_json_begin_object(&j);
	zn_json_key(&j, "metadata");
	zn_json_begin_object(&j);
	zn_json_key(&j, "total_size");
	zn_json_uint(&j, total);
	zn_json_end_object(&j);
	zn_json_key(&j, "weight_map");
	zn_json_begin_object(&j);
	for (size_t i = 0; i < w->n; i++) {
		const struct wtensor *t = &w->t[order[i]];
		zn_json_key(&j, t->name);
		zn_json_string(&j, strrchr(w->s[t->shard].final, '/') + 1);
	}
	zn_json_end_object(&j);
	zn_json_end_object(&j);
	free(order);
	char *path = zn_io_join(w->dir, ZN_HF_INDEX_NAME);
	if (zn_json_close_memory(&j, &text, &len) || !path)
		rc = zn_error(-ENOMEM, "out of memory");
	else
		rc = zn_io_write_file_atomic(path, text, len);
	free(path);
	free(text);
	return rc;
}

int zn_hf_writer_end(struct zn_hf_writer *w)
{
	int rc = w->err;
	if (!rc && w->cur != w->n)
		rc = zn_error(-EINVAL, "'%s': %zu of %zu tensors were put (the next, '%s', has "
			      "%" PRIu64 " of %" PRIu64 " values): put every tensor before "
			      "zn_hf_writer_end", w->dir, w->cur, w->n, w->t[w->cur].name, w->done,
			      w->t[w->cur].numel);
	if (rc) {
		zn_hf_writer_abort(w);
		return rc;
	}
	/* Publish: shards, then the index, then config.json. */
	for (size_t i = 0; i < w->ns; i++) {
		if (rename(w->s[i].tmp, w->s[i].final) != 0) {
			rc = zn_error(-errno, "cannot rename '%s' to '%s': %s", w->s[i].tmp,
				      w->s[i].final, strerror(errno));
			zn_hf_writer_abort(w);
			return rc;
		}
		w->s[i].complete = false;
	}
	if (w->ns > 1)
		rc = write_index(w);
	if (!rc) {
		char *path = zn_io_join(w->dir, ZN_HF_CONFIG_NAME);
		rc = path ? zn_hf_write_config(path, &w->cfg, w->torch_dtype)
			  : zn_error(-ENOMEM, "out of memory");
		free(path);
	}
	if (!rc)
		remove_stale(w);
	zn_io_fsync_path(w->dir, O_RDONLY | O_DIRECTORY);
	zn_hf_writer_abort(w);
	return rc;
}
