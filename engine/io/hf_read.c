/* Reading a Hugging Face folder's weights (include/zinc/hf.h): the index
 * (tensor -> shard file), the shards memory-mapped and checked, tensors
 * found by name, checked against the model's shapes, and read as fp32
 * (BF16 and F16 widened exactly), one tensor or a slice at a time, with
 * the pages read dropped from this process afterwards (io/files.h).
 */
#include "zn_common.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "zinc/dtype.h"
#include "io/doc.h"
#include "io/files.h"
#include "io/hf_internal.h"
#include "zinc/hf.h"

struct hf_shard {
	char *path;
	struct zn_st_file *f;
};

struct hf_entry {
	char *name;   /* tensor */
	size_t shard; /* index into shards */
};

struct zn_hf_model {
	char *dir;
	char *index_path;        /* NULL: one model.safetensors */
	struct hf_shard *shards;
	size_t nshards;
	struct hf_entry *map;    /* the index's weight_map, sorted by name */
	size_t nmap;
};

void zn_hf_close(struct zn_hf_model *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->nshards; i++) {
		zn_st_close(m->shards[i].f);
		free(m->shards[i].path);
	}
	for (size_t i = 0; i < m->nmap; i++)
		free(m->map[i].name);
	free(m->shards);
	free(m->map);
	free(m->index_path);
	free(m->dir);
	free(m);
}

static int entry_cmp(const void *a, const void *b)
{
	return strcmp(((const struct hf_entry *)a)->name, ((const struct hf_entry *)b)->name);
}

static size_t add_shard(struct zn_hf_model *m, const char *file)
{
	for (size_t i = 0; i < m->nshards; i++)
		if (strcmp(m->shards[i].path + strlen(m->dir) + 1, file) == 0)
			return i;
	m->shards[m->nshards].path = zn_io_join(m->dir, file);
	if (!m->shards[m->nshards].path)
		return SIZE_MAX;
	return m->nshards++;
}

/* Read the index: weight_map (tensor -> shard file), sorted. */
static int read_index(struct zn_hf_model *m)
{
	struct zn_doc *doc = zn_doc_create();
	struct zn_doc_node *root;
	char d[64];
	int rc = doc ? zn_doc_load_json(doc, m->index_path, ZN_HF_MAX_JSON_BYTES, "a safetensors "
					"index (\"weight_map\": {tensor: file})", &root)
		     : zn_error(-ENOMEM, "out of memory");
	if (rc)
		goto out;
	struct zn_doc_node *wm = zn_doc_get(root, "weight_map");
	if (!wm || wm->kind != ZN_DOC_MAP) {
		rc = zn_error(-EINVAL, "'%s': weight_map must be an object {tensor: file}, found "
			      "%s; the index is damaged: download it again", m->index_path,
			      zn_doc_describe(wm, d, sizeof(d)));
		goto out;
	}
	size_t n = wm->n;
	m->map = calloc(n ? n : 1, sizeof(*m->map));
	/* At most one shard per entry. */
	m->shards = calloc(n ? n : 1, sizeof(*m->shards));
	if (!m->map || !m->shards) {
		rc = zn_error(-ENOMEM, "out of memory reading '%s'", m->index_path);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		const char *name = zn_doc_string(wm->pairs[i].key);
		const struct zn_doc_node *fv = wm->pairs[i].value;
		const char *file = zn_doc_string(fv);
		if (!name || !*name) {
			rc = zn_doc_fail(wm->pairs[i].key, -EINVAL, "a weight_map key is not a "
					 "tensor name; the index is damaged: download it again");
			goto out;
		}
		/* A shard is a file beside the index, never a path elsewhere. */
		if (!file || !*file || strchr(file, '/') || strcmp(file, "..") == 0 ||
		    strcmp(file, ".") == 0) {
			rc = zn_doc_fail(fv, -EINVAL, "tensor '%s' maps to %s, not to a file name "
					 "in the folder; the index is damaged: download it again",
					 name, zn_doc_describe(fv, d, sizeof(d)));
			goto out;
		}
		size_t s = add_shard(m, file);
		m->map[m->nmap].name = strdup(name);
		if (s == SIZE_MAX || !m->map[m->nmap].name) {
			free(m->map[m->nmap].name);
			rc = zn_error(-ENOMEM, "out of memory reading '%s'", m->index_path);
			goto out;
		}
		m->map[m->nmap++].shard = s;
	}
	qsort(m->map, m->nmap, sizeof(*m->map), entry_cmp);
	for (size_t i = 1; i < m->nmap; i++) {
		if (strcmp(m->map[i - 1].name, m->map[i].name) == 0) {
			rc = zn_error(-EINVAL, "'%s': tensor '%s' appears twice in weight_map; the "
				      "index is damaged: download it again", m->index_path,
				      m->map[i].name);
			goto out;
		}
	}
out:
	zn_doc_destroy(doc);
	return rc;
}

/* A tensor the index puts in shard s (for messages), and how many. */
static const char *shard_example(const struct zn_hf_model *m, size_t s, size_t *count)
{
	const char *ex = NULL;
	*count = 0;
	for (size_t i = 0; i < m->nmap; i++) {
		if (m->map[i].shard == s) {
			if (!ex)
				ex = m->map[i].name;
			(*count)++;
		}
	}
	return ex ? ex : "?";
}

static int open_shards(struct zn_hf_model *m)
{
	for (size_t i = 0; i < m->nshards; i++) {
		struct hf_shard *s = &m->shards[i];
		size_t count;
		const char *ex = shard_example(m, i, &count);
		struct stat st;
		if (m->index_path && stat(s->path, &st) != 0) {
			int err = errno;
			return zn_error(-err, "shard '%s' %s: the index '%s' puts tensor '%s'%s "
					"there; %s", s->path,
					err == ENOENT ? "is missing" : strerror(err), m->index_path,
					ex, count > 1 ? " and others" : "",
					err == ENOENT ? "the download is incomplete: fetch every "
							"file the index names" :
							"make it readable");
		}
		s->f = zn_st_open(s->path);
		if (!s->f) {
			if (!m->index_path)
				return -EINVAL; /* the message names the file */
			char *why = strdup(zn_last_error());
			int rc = zn_error(-EINVAL, "%s (the index '%s' puts tensor '%s'%s there)",
					  why ? why : "?", m->index_path, ex,
					  count > 1 ? " and others" : "");
			free(why);
			return rc;
		}
	}
	return 0;
}

int zn_hf_open(const char *dir, struct zn_hf_model **out)
{
	struct zn_hf_model *m;
	char *single = NULL, *bin = NULL;
	int rc = 0;

	*out = NULL;
	if (!zn_io_is_dir(dir))
		return zn_error(-ENOENT, "model folder '%s' %s: give the folder that holds "
				"config.json and the .safetensors files", dir,
				access(dir, F_OK) == 0 ? "is not a folder" : "does not exist");
	m = calloc(1, sizeof(*m));
	if (!m || !(m->dir = strdup(dir)) || !(single = zn_io_join(dir, ZN_HF_SINGLE_NAME)) ||
	    !(m->index_path = zn_io_join(dir, ZN_HF_INDEX_NAME)) || !(bin = zn_io_join(dir, "pytorch_model.bin"))) {
		rc = zn_error(-ENOMEM, "out of memory");
		goto out;
	}
	if (zn_io_is_file(single)) {
		free(m->index_path);
		m->index_path = NULL;
		m->shards = calloc(1, sizeof(*m->shards));
		if (!m->shards) {
			rc = zn_error(-ENOMEM, "out of memory");
			goto out;
		}
		m->shards[0].path = single;
		single = NULL;
		m->nshards = 1;
	} else if (zn_io_is_file(m->index_path)) {
		rc = read_index(m);
		if (rc)
			goto out;
	} else {
		bool torch_bin = zn_io_is_file(bin);
		char *bin_index = zn_io_join(dir, "pytorch_model.bin.index.json");
		torch_bin = torch_bin || (bin_index && zn_io_is_file(bin_index));
		free(bin_index);
		rc = zn_error(-ENOENT, "model folder '%s' has neither %s nor %s%s", dir,
			      ZN_HF_SINGLE_NAME, ZN_HF_INDEX_NAME,
			      torch_bin ? ": its weights are PyTorch .bin files, which zinc does "
					  "not read; convert them to safetensors (transformers: "
					  "model.save_pretrained(dir, safe_serialization=True))" :
					  "; download the model's safetensors weights");
		goto out;
	}
	rc = open_shards(m);
out:
	free(single);
	free(bin);
	if (rc)
		zn_hf_close(m);
	else
		*out = m;
	return rc;
}

int zn_hf_find(const struct zn_hf_model *m, const char *name, const struct zn_st_tensor **tensor,
	       const char **shard_path)
{
	const struct hf_shard *s;
	if (!m->index_path) {
		s = &m->shards[0];
	} else {
		struct hf_entry key = { .name = (char *)name };
		const struct hf_entry *e = bsearch(&key, m->map, m->nmap, sizeof(*m->map),
						   entry_cmp);
		if (!e)
			return zn_error(-ENOENT, "'%s' names no shard for tensor '%s', which the "
					"model needs: the folder holds another model or an "
					"incomplete one", m->index_path, name);
		s = &m->shards[e->shard];
	}
	const struct zn_st_tensor *t = zn_st_find(s->f, name);
	if (!t) {
		if (m->index_path)
			return zn_error(-ENOENT, "'%s': the index '%s' puts tensor '%s' in this "
					"shard, but the shard has no such tensor: the index "
					"belongs to other files; download the model again",
					s->path, m->index_path, name);
		return zn_error(-ENOENT, "'%s' has no tensor '%s', which the model needs: the "
				"folder holds another model (check config.json)", s->path, name);
	}
	if (tensor)
		*tensor = t;
	if (shard_path)
		*shard_path = s->path;
	return 0;
}

static void fmt_shape(char *buf, size_t len, unsigned ndim, const uint64_t *shape)
{
	size_t o = (size_t)snprintf(buf, len, "[");
	for (unsigned i = 0; i < ndim && o < len; i++)
		o += (size_t)snprintf(buf + o, len - o, "%s%" PRIu64, i ? ", " : "", shape[i]);
	if (o < len)
		snprintf(buf + o, len - o, "]");
}

static bool convertible(enum zn_st_dtype d)
{
	return d == ZN_ST_F32 || d == ZN_ST_F16 || d == ZN_ST_BF16;
}

static int bad_dtype(const char *path, const struct zn_st_tensor *t)
{
	return zn_error(-ENOTSUP, "'%s': tensor '%s' is %s; zinc converts F32, F16 and BF16 "
			"(a quantized model must be dequantized first)", path, t->name,
			zn_st_dtype_name(t->dtype));
}

int zn_hf_check(const struct zn_hf_model *m, const struct zn_param_desc *descs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const struct zn_param_desc *d = &descs[i];
		const struct zn_st_tensor *t;
		const char *path;
		uint64_t want[2] = { 0, 0 };
		char a[96], b[96];

		if (d->hf_transposed)
			return zn_error(-ENOTSUP, "tensor '%s' is stored transposed (GPT-2's Conv1D); "
					"zn_hf_* read Llama-family folders only", d->name);
		int rc = zn_hf_find(m, d->name, &t, &path);
		if (rc)
			return rc;
		bool same = t->ndim == d->ndim && d->ndim <= 2;
		for (unsigned k = 0; k < d->ndim && k < 2; k++) {
			want[k] = d->shape[k] < 0 ? 0 : (uint64_t)d->shape[k];
			same = same && t->shape[k] == want[k];
		}
		if (!same) {
			fmt_shape(a, sizeof(a), t->ndim, t->shape);
			fmt_shape(b, sizeof(b), d->ndim > 2 ? 2 : d->ndim, want);
			return zn_error(-EINVAL, "'%s': tensor '%s' has shape %s but the model "
					"config.json describes needs %s: the weights and "
					"config.json disagree", path, d->name, a, b);
		}
		if (!convertible(t->dtype))
			return bad_dtype(path, t);
	}
	return 0;
}

uint64_t zn_hf_numel(const struct zn_hf_model *m, const char *name)
{
	const struct zn_st_tensor *t;
	if (zn_hf_find(m, name, &t, NULL))
		return 0;
	return t->bytes / zn_st_dtype_size(t->dtype);
}

/* Widen n elements of type dt at src (any alignment) to fp32. */
static void widen(enum zn_st_dtype dt, const uint8_t *src, uint64_t n, float *dst)
{
	uint16_t h[2048];
	if (dt == ZN_ST_F32) {
		memcpy(dst, src, n * sizeof(float));
		return;
	}
	while (n) {
		size_t k = n < ZN_ARRAY_SIZE(h) ? (size_t)n : ZN_ARRAY_SIZE(h);
		memcpy(h, src, k * 2); /* the mapping need not be 2-byte aligned */
		zn_dtype_to_f32(dst, h, dt == ZN_ST_BF16 ? ZN_DTYPE_BF16 : ZN_DTYPE_F16, k);
		src += k * 2;
		dst += k;
		n -= k;
	}
}

int zn_hf_read_f32_range(const struct zn_hf_model *m, const char *name, uint64_t off,
			 uint64_t n, float *dst)
{
	const struct zn_st_tensor *t;
	const char *path;
	int rc = zn_hf_find(m, name, &t, &path);
	if (rc)
		return rc;
	if (!convertible(t->dtype))
		return bad_dtype(path, t);
	size_t es = zn_st_dtype_size(t->dtype);
	uint64_t numel = t->bytes / es;
	if (off > numel || n > numel - off)
		return zn_error(-ERANGE, "'%s': elements [%" PRIu64 ", %" PRIu64 ") of tensor '%s' "
				"asked for, but it has %" PRIu64, path, off, off + n, name, numel);
	const uint8_t *src = (const uint8_t *)t->data + off * es;
	widen(t->dtype, src, n, dst);
	/* Done with these pages: loading a model larger than memory never
	 * holds it whole. */
	zn_io_drop_pages(src, n * es);
	return 0;
}

int zn_hf_read_f32(const struct zn_hf_model *m, const char *name, float *dst)
{
	const struct zn_st_tensor *t;
	int rc = zn_hf_find(m, name, &t, NULL);
	if (rc)
		return rc;
	size_t es = zn_st_dtype_size(t->dtype);
	return zn_hf_read_f32_range(m, name, 0, es ? t->bytes / es : 0, dst);
}
