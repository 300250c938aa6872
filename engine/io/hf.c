/* Hugging Face model folders (see include/zinc/hf.h): config.json read and
 * written, safetensors weights read through the index, and written back in
 * shards, streamed.
 *
 * JSON is read with libyaml (JSON is YAML's flow syntax; zinc has no JSON
 * library): a JSON string is a quoted scalar, a number, true, false or null
 * a plain one, so the scalar's style tells a string "1" from a number 1.
 */
#include "zn_common.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "zn_half.h"
#include "io/doc.h"
#include "zinc/hf.h"
#include "zinc/json.h"

/* Tensor bytes are used in place and written as they are in memory: the
 * safetensors format is little-endian, and so is every host zinc runs on. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors data is little-endian");

#define CONFIG_NAME "config.json"
#define SINGLE_NAME "model.safetensors"
#define INDEX_NAME "model.safetensors.index.json"
/* config.json and the index are small (an index of a 400B-parameter model
 * is under 1 MiB); anything this large is not one of them. */
#define MAX_JSON_BYTES (64u << 20)
#define SUPPORTED_ARCHS "LlamaForCausalLM, MistralForCausalLM and Qwen2ForCausalLM"

static char *join(const char *dir, const char *name)
{
	char *p;
	if (asprintf(&p, "%s/%s", dir, name) < 0)
		return NULL;
	return p;
}

static bool is_file(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static bool is_dir(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int write_all(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n) {
		ssize_t w = write(fd, c, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

static void fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
}

/* Write `len` bytes to `path` through a temporary name, fsynced, then
 * renamed over it; the directory is fsynced by the caller. */
static int write_file_atomic(const char *path, const char *data, size_t len)
{
	char *tmp;
	int rc = 0;
	if (asprintf(&tmp, "%s.tmp.%d", path, (int)getpid()) < 0)
		return zn_error(-ENOMEM, "out of memory");
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		rc = zn_error(-errno, "cannot create '%s': %s", tmp, strerror(errno));
		free(tmp);
		return rc;
	}
	rc = write_all(fd, data, len);
	if (!rc && fsync(fd) != 0)
		rc = -errno;
	if (close(fd) != 0 && !rc)
		rc = -errno;
	if (!rc && rename(tmp, path) != 0)
		rc = -errno;
	if (rc) {
		unlink(tmp);
		zn_error(rc, "cannot write '%s': %s", path, strerror(-rc));
	}
	free(tmp);
	return rc;
}

/* ---- reading JSON ------------------------------------------------------------ */

/* A JSON file read whole (engine/io/doc.h). */
struct json {
	const char *path;
	struct zn_doc *doc;
	struct zn_doc_node *root; /* an object */
};

/* Read and parse `path`, whose root must be a JSON object.  `what` says
 * what the file should be, for messages. */
static int json_load(struct json *j, const char *path, const char *what)
{
	char *buf;
	size_t len;
	int rc;

	j->path = path;
	j->root = NULL;
	ZN_TRY(zn_doc_read_file(path, MAX_JSON_BYTES, what, &buf, &len));
	/* YAML would take "a: 1" too; JSON's object starts with a brace. */
	size_t first = strspn(buf, " \t\r\n");
	j->doc = zn_doc_create();
	if (!j->doc) {
		rc = zn_error(-ENOMEM, "out of memory");
	} else if (first == len || buf[first] != '{') {
		rc = zn_error(-EINVAL, "'%s' is not a JSON object; it should be %s", path, what);
	} else {
		rc = zn_doc_parse(j->doc, buf, len, path, 0, &j->root);
		const struct zn_doc_error *e = zn_doc_last_error(j->doc);
		if (rc == -EINVAL)
			rc = zn_error(-EINVAL, "'%s': bad JSON at line %zu, column %zu: %s; it should "
				      "be %s", path, e->line, e->column, e->problem, what);
		else if (!rc && j->root->kind != ZN_DOC_MAP)
			rc = zn_error(-EINVAL, "'%s' is not a JSON object; it should be %s", path,
				      what);
	}
	free(buf);
	if (rc) {
		zn_doc_destroy(j->doc);
		j->doc = NULL;
	}
	return rc;
}

static void json_free(struct json *j)
{
	zn_doc_destroy(j->doc);
	j->doc = NULL;
}

/* ---- config.json ------------------------------------------------------------ */

static const struct arch {
	const char *name;       /* architectures[0] */
	const char *model_type; /* config.json's model_type */
	bool qkv_bias;          /* q/k/v projections always have biases */
} archs[] = {
	{ "LlamaForCausalLM", "llama", false },
	{ "MistralForCausalLM", "mistral", false },
	{ "Qwen2ForCausalLM", "qwen2", true },
};

static const struct arch *find_arch(const char *name)
{
	for (size_t i = 0; i < ZN_ARRAY_SIZE(archs); i++)
		if (strcmp(archs[i].name, name) == 0)
			return &archs[i];
	return NULL;
}

static bool is_llama(const struct arch *a)
{
	return a == &archs[0];
}

enum ckind { C_INT, C_FLOAT, C_BOOL };

/* The plain keys: read by one loop, written back by another.  Keys with
 * rules of their own (architectures, rope_scaling, token ids, biases,
 * sliding windows, hidden_act, torch_dtype) are handled in code. */
static const struct ckey {
	const char *name;
	enum ckind kind;
	size_t offset;     /* in struct zn_llama_config */
	bool required;
	bool may_be_zero;  /* C_FLOAT: >= 0 (else > 0); C_INT: >= 0 (else >= 1) */
	bool null_ok;      /* null means "the default" */
} config_keys[] = {
#define K(n, k, f, ...) { n, k, offsetof(struct zn_llama_config, f), __VA_ARGS__ }
	K("hidden_size", C_INT, n_embd, true, false, false),
	K("num_hidden_layers", C_INT, n_layer, true, false, false),
	K("num_attention_heads", C_INT, n_head, true, false, false),
	K("num_key_value_heads", C_INT, n_kv_head, false, false, true),
	K("head_dim", C_INT, head_dim, false, false, true),
	K("intermediate_size", C_INT, intermediate, true, false, false),
	K("vocab_size", C_INT, vocab_size, true, false, false),
	K("max_position_embeddings", C_INT, max_seq_len, true, false, false),
	K("rms_norm_eps", C_FLOAT, norm_eps, true, false, false),
	K("rope_theta", C_FLOAT, rope_theta, false, false, true),
	K("initializer_range", C_FLOAT, init_std, false, true, true),
	K("tie_word_embeddings", C_BOOL, tie_embeddings, false, false, true),
#undef K
};

/* "FILE:LINE:COL: KEY must be WANT, found VALUE; fix config.json" */
static int cfg_bad(const char *key, const struct zn_doc_node *v, const char *want)
{
	char d[64];
	return zn_doc_fail(v, -EINVAL, "%s must be %s, found %s; fix config.json", key, want,
			   zn_doc_describe(v, d, sizeof(d)));
}

static int read_key(struct json *j, const struct ckey *k, struct zn_llama_config *out)
{
	struct zn_doc_node *v = zn_doc_get(j->root, k->name);
	char *field = (char *)out + k->offset;
	long long i;
	double x;

	if (!v) {
		if (k->required)
			return zn_error(-EINVAL, "'%s': required key '%s' is missing; is this the "
					"config.json of a Hugging Face %s model?", j->path, k->name,
					SUPPORTED_ARCHS);
		return 0;
	}
	if (k->null_ok && zn_doc_is_null(v))
		return 0;
	switch (k->kind) {
	case C_INT:
		if (zn_doc_int(v, &i) || i < (k->may_be_zero ? 0 : 1) || i > INT32_MAX)
			return cfg_bad(k->name, v,
				       k->may_be_zero ? "an integer >= 0" : "an integer >= 1");
		*(int *)field = (int)i;
		return 0;
	case C_FLOAT:
		if (zn_doc_number(v, &x) || x < 0 || (!k->may_be_zero && x == 0) || x > 3.4e38)
			return cfg_bad(k->name, v,
				       k->may_be_zero ? "a number >= 0" : "a number > 0");
		*(float *)field = (float)x;
		return 0;
	case C_BOOL: {
		bool b;
		if (zn_doc_bool(v, &b))
			return cfg_bad(k->name, v, "true or false");
		*(bool *)field = b;
		return 0;
	}
	}
	return 0;
}

/* bos_token_id / eos_token_id: an integer, a list (its first element), or
 * null; -1 when absent. */
static int read_token_id(struct json *j, const char *key, int *out)
{
	struct zn_doc_node *v = zn_doc_get(j->root, key);
	long long i;

	*out = -1;
	if (!v || zn_doc_is_null(v))
		return 0;
	if (v->kind == ZN_DOC_LIST) {
		if (!v->n)
			return 0;
		v = v->items[0];
	}
	if (zn_doc_int(v, &i) || i < 0 || i > INT32_MAX)
		return cfg_bad(key, v, "a token id (an integer >= 0), a list of them or null");
	*out = (int)i;
	return 0;
}

static int read_rope(struct json *j, struct zn_llama_config *out)
{
	const char *key = "rope_scaling";
	struct zn_doc_node *v = zn_doc_get(j->root, key);
	char d[64];

	if (!v) {
		/* transformers 5 moved rope_theta and the scaling into one
		 * object, rope_parameters, of the same shape. */
		key = "rope_parameters";
		v = zn_doc_get(j->root, key);
		struct zn_doc_node *theta = zn_doc_get(v, "rope_theta");
		double x;
		if (theta) {
			if (zn_doc_number(theta, &x) || x <= 0)
				return cfg_bad("rope_parameters.rope_theta", theta,
					       "a number > 0");
			out->rope_theta = (float)x;
		}
	}
	out->rope_type = ZN_ROPE_DEFAULT;
	if (!v || zn_doc_is_null(v))
		return 0;
	if (v->kind != ZN_DOC_MAP)
		return cfg_bad(key, v, "an object or null");
	struct zn_doc_node *t = zn_doc_get(v, "rope_type");
	if (!t)
		t = zn_doc_get(v, "type");
	const char *type = zn_doc_string(t);
	if (!type)
		return zn_doc_fail(t ? t : v, -EINVAL, "%s has no rope_type (or type) string, "
				   "found %s; fix config.json", key, zn_doc_describe(t, d, sizeof(d)));
	if (strcmp(type, "default") == 0)
		return 0;
	if (strcmp(type, "llama3") != 0)
		return zn_error(-ENOTSUP, "'%s': %s type '%s' is not supported: zinc implements "
				"rotary embeddings without scaling ('default') and Llama 3's "
				"('llama3'); choose a model that uses one of them", j->path, key,
				type);
	static const struct {
		const char *name;
		size_t offset;
		bool is_int;
	} fields[] = {
		{ "factor", offsetof(struct zn_llama_config, rope_factor), false },
		{ "low_freq_factor", offsetof(struct zn_llama_config, rope_low_freq_factor), false },
		{ "high_freq_factor", offsetof(struct zn_llama_config, rope_high_freq_factor), false },
		{ "original_max_position_embeddings",
		  offsetof(struct zn_llama_config, rope_original_max_pos), true },
	};
	for (size_t i = 0; i < ZN_ARRAY_SIZE(fields); i++) {
		struct zn_doc_node *f = zn_doc_get(v, fields[i].name);
		char name[96];
		long long n;
		double x;
		snprintf(name, sizeof(name), "%s.%s", key, fields[i].name);
		if (!f)
			return zn_error(-EINVAL, "'%s': %s is missing (rope_type llama3 needs "
					"factor, low_freq_factor, high_freq_factor and "
					"original_max_position_embeddings); fix config.json",
					j->path, name);
		if (fields[i].is_int) {
			if (zn_doc_int(f, &n) || n < 1 || n > INT32_MAX)
				return cfg_bad(name, f, "an integer >= 1");
			*(int *)((char *)out + fields[i].offset) = (int)n;
		} else {
			if (zn_doc_number(f, &x) || x <= 0 || x > 3.4e38)
				return cfg_bad(name, f, "a number > 0");
			*(float *)((char *)out + fields[i].offset) = (float)x;
		}
	}
	/* Llama 3's smoothing interpolates between the two wavelengths
	 * original_max / low and original_max / high: they must differ. */
	if (!(out->rope_high_freq_factor > out->rope_low_freq_factor))
		return zn_error(-EINVAL, "'%s': %s.high_freq_factor (%g) must be larger than "
				"low_freq_factor (%g); fix config.json", j->path, key,
				(double)out->rope_high_freq_factor, (double)out->rope_low_freq_factor);
	out->rope_type = ZN_ROPE_LLAMA3;
	return 0;
}

static int read_arch(struct json *j, const struct arch **arch)
{
	const struct zn_doc_node *root = j->root;
	struct zn_doc_node *a = zn_doc_get(root, "architectures");
	struct zn_doc_node *mt = zn_doc_get(root, "model_type");
	const char *model_type = zn_doc_string(mt);
	const char *name = NULL;

	if (mt && !model_type && !zn_doc_is_null(mt))
		return cfg_bad("model_type", mt, "a string");
	if (a && !zn_doc_is_null(a)) {
		struct zn_doc_node *first = NULL;
		if (a->kind == ZN_DOC_LIST && a->n)
			first = a->items[0];
		name = zn_doc_string(first);
		if (!name)
			return cfg_bad("architectures", a, "a list of class names");
	} else if (model_type) {
		/* Some configs name only the model type. */
		for (size_t i = 0; i < ZN_ARRAY_SIZE(archs); i++)
			if (strcmp(archs[i].model_type, model_type) == 0)
				name = archs[i].name;
		if (!name)
			return zn_error(-ENOTSUP, "'%s': model_type '%s' is not supported: zinc "
					"loads %s models", j->path, model_type, SUPPORTED_ARCHS);
	} else {
		return zn_error(-EINVAL, "'%s': required key 'architectures' is missing; is this "
				"the config.json of a Hugging Face %s model?", j->path,
				SUPPORTED_ARCHS);
	}
	*arch = find_arch(name);
	if (!*arch)
		return zn_error(-ENOTSUP, "'%s': architecture '%s' is not supported: zinc loads %s",
				j->path, name, SUPPORTED_ARCHS);
	if (model_type && strcmp(model_type, (*arch)->model_type) != 0)
		return zn_error(-EINVAL, "'%s': model_type '%s' does not match architectures[0] "
				"'%s' (model_type '%s'); fix config.json", j->path, model_type,
				name, (*arch)->model_type);
	return 0;
}

/* Mistral's and Qwen2's sliding windows, Llama's biases: what the
 * architecture adds to the plain keys. */
static int read_arch_keys(struct json *j, const struct arch *arch, struct zn_llama_config *out)
{
	const struct zn_doc_node *root = j->root;
	long long n;
	bool b;

	out->qkv_bias = arch->qkv_bias;
	if (is_llama(arch)) {
		struct zn_doc_node *v = zn_doc_get(root, "attention_bias");
		if (v && !zn_doc_is_null(v)) {
			if (zn_doc_bool(v, &b))
				return cfg_bad("attention_bias", v, "true or false");
			/* LlamaAttention's attention_bias puts a bias on o_proj
			 * too, which the Llama model here does not have. */
			if (b)
				return zn_error(-ENOTSUP, "'%s': attention_bias true (biases on "
						"q/k/v/o_proj) is not supported; zinc's Llama has "
						"no attention biases", j->path);
		}
		v = zn_doc_get(root, "mlp_bias");
		if (v && !zn_doc_is_null(v)) {
			if (zn_doc_bool(v, &b))
				return cfg_bad("mlp_bias", v, "true or false");
			out->mlp_bias = b;
		}
	}
	if (strcmp(arch->model_type, "mistral") == 0) {
		struct zn_doc_node *v = zn_doc_get(root, "sliding_window");
		if (v && !zn_doc_is_null(v)) {
			if (zn_doc_int(v, &n) || n < 0)
				return cfg_bad("sliding_window", v, "an integer or null");
			if (n < out->max_seq_len)
				return zn_error(-ENOTSUP, "'%s': sliding_window %lld is shorter than "
						"max_position_embeddings %d: sliding-window "
						"attention is not supported; use a Mistral "
						"without it (sliding_window null, as v0.2 and "
						"later)", j->path, n, out->max_seq_len);
		}
	}
	if (strcmp(arch->model_type, "qwen2") == 0) {
		struct zn_doc_node *v = zn_doc_get(root, "use_sliding_window");
		if (v && !zn_doc_is_null(v)) {
			if (zn_doc_bool(v, &b))
				return cfg_bad("use_sliding_window", v, "true or false");
			if (b)
				return zn_error(-ENOTSUP, "'%s': use_sliding_window true: "
						"sliding-window attention is not supported", j->path);
		}
	}
	return 0;
}

int zn_hf_read_config(const char *path, struct zn_llama_config *out)
{
	struct json j = { 0 };
	const struct arch *arch = NULL;
	char *file = NULL;
	int rc;

	if (is_dir(path)) {
		file = join(path, CONFIG_NAME);
		if (!file)
			return zn_error(-ENOMEM, "out of memory");
		path = file;
	}
	memset(out, 0, sizeof(*out));
	out->rope_theta = 10000.0f;
	out->init_std = 0.02f;
	rc = json_load(&j, path, "a Hugging Face config.json");
	if (rc)
		goto out;
	const struct zn_doc_node *root = j.root;
	rc = read_arch(&j, &arch);
	for (size_t i = 0; !rc && i < ZN_ARRAY_SIZE(config_keys); i++)
		rc = read_key(&j, &config_keys[i], out);
	if (!rc)
		rc = read_arch_keys(&j, arch, out);
	if (!rc)
		rc = read_rope(&j, out);
	if (!rc)
		rc = read_token_id(&j, "bos_token_id", &out->bos_token_id);
	if (!rc)
		rc = read_token_id(&j, "eos_token_id", &out->eos_token_id);
	if (rc)
		goto out;
	snprintf(out->architecture, sizeof(out->architecture), "%s", arch->name);

	struct zn_doc_node *v = zn_doc_get(root, "hidden_act");
	if (v && !zn_doc_is_null(v)) {
		const char *act = zn_doc_string(v);
		if (!act) {
			rc = cfg_bad("hidden_act", v, "a string");
			goto out;
		}
		if (strcmp(act, "silu") != 0) {
			rc = zn_error(-ENOTSUP, "'%s': hidden_act '%s' is not supported: zinc's "
				      "SwiGLU MLP uses silu", path, act);
			goto out;
		}
	}
	v = zn_doc_get(root, "torch_dtype");
	if (!v)
		v = zn_doc_get(root, "dtype"); /* transformers 5's name */
	if (v && !zn_doc_is_null(v)) {
		const char *dt = zn_doc_string(v);
		if (!dt || strlen(dt) >= sizeof(out->torch_dtype)) {
			rc = cfg_bad("torch_dtype", v, "a dtype name such as \"bfloat16\"");
			goto out;
		}
		snprintf(out->torch_dtype, sizeof(out->torch_dtype), "%s", dt);
	}

	/* Shapes: heads split the width unless head_dim says otherwise. */
	if (!out->n_kv_head)
		out->n_kv_head = out->n_head;
	if (!out->head_dim) {
		if (out->n_embd % out->n_head) {
			rc = zn_error(-EINVAL, "'%s': hidden_size %d is not a multiple of "
				      "num_attention_heads %d and head_dim is not given; fix "
				      "config.json", path, out->n_embd, out->n_head);
			goto out;
		}
		out->head_dim = out->n_embd / out->n_head;
	}
	if (out->n_head % out->n_kv_head) {
		rc = zn_error(-EINVAL, "'%s': num_attention_heads %d is not a multiple of "
			      "num_key_value_heads %d; fix config.json", path, out->n_head,
			      out->n_kv_head);
		goto out;
	}
out:
	json_free(&j);
	free(file);
	return rc;
}

/* ---- writing JSON ---------------------------------------------------------------- */

/* The shortest decimal that reads back as the same float (1e-05, not
 * 9.99999975e-06), written as a JSON float ("10000.0"), as Python would. */
static void fmt_float(float v, char *buf, size_t len)
{
	for (int prec = 1; prec <= 9; prec++) {
		snprintf(buf, len, "%.*g", prec, (double)v);
		if (strtof(buf, NULL) == v)
			break;
	}
	if (!strpbrk(buf, ".en"))
		strncat(buf, ".0", len - strlen(buf) - 1);
}

/* One config.json entry: its key and its value, written by put_entry.
 * Entries are sorted by key, as transformers writes them. */
struct centry {
	const char *key;
	enum { V_INT, V_FLOAT, V_BOOL, V_STRING, V_NULL, V_NAMES, V_LLAMA3_ROPE } kind;
	int i;
	float f;
	bool b;
	const char *s; /* V_STRING; V_NAMES: the list's one name */
};

static int centry_cmp(const void *a, const void *b)
{
	return strcmp(((const struct centry *)a)->key, ((const struct centry *)b)->key);
}

static void put_float(struct zn_json *j, float v)
{
	char num[32];
	fmt_float(v, num, sizeof(num));
	zn_json_printf(j, "%s", num);
}

static void put_entry(struct zn_json *j, const struct centry *e, const struct zn_llama_config *cfg)
{
	zn_json_key(j, e->key);
	switch (e->kind) {
	case V_INT:
		zn_json_int(j, e->i);
		break;
	case V_FLOAT:
		put_float(j, e->f);
		break;
	case V_BOOL:
		zn_json_bool(j, e->b);
		break;
	case V_STRING:
		zn_json_string(j, e->s);
		break;
	case V_NULL:
		zn_json_null(j);
		break;
	case V_NAMES:
		zn_json_begin_array(j);
		zn_json_string(j, e->s);
		zn_json_end_array(j);
		break;
	case V_LLAMA3_ROPE: /* its keys sorted too */
		zn_json_begin_object(j);
		zn_json_key(j, "factor");
		put_float(j, cfg->rope_factor);
		zn_json_key(j, "high_freq_factor");
		put_float(j, cfg->rope_high_freq_factor);
		zn_json_key(j, "low_freq_factor");
		put_float(j, cfg->rope_low_freq_factor);
		zn_json_key(j, "original_max_position_embeddings");
		zn_json_int(j, cfg->rope_original_max_pos);
		zn_json_key(j, "rope_type");
		zn_json_string(j, "llama3");
		zn_json_end_object(j);
		break;
	}
}

static const char *torch_dtype_name(const char *s, enum zn_st_dtype *dt)
{
	static const struct {
		const char *name, *torch;
		enum zn_st_dtype dt;
	} names[] = {
		{ "bfloat16", "bfloat16", ZN_ST_BF16 }, { "bf16", "bfloat16", ZN_ST_BF16 },
		{ "float16", "float16", ZN_ST_F16 },    { "fp16", "float16", ZN_ST_F16 },
		{ "float32", "float32", ZN_ST_F32 },    { "fp32", "float32", ZN_ST_F32 },
	};
	for (size_t i = 0; s && i < ZN_ARRAY_SIZE(names); i++) {
		if (strcmp(s, names[i].name) == 0) {
			if (dt)
				*dt = names[i].dt;
			return names[i].torch;
		}
	}
	return NULL;
}

int zn_hf_write_config(const char *path, const struct zn_llama_config *cfg,
		       const char *torch_dtype)
{
	const struct arch *arch = find_arch(cfg->architecture);
	struct centry e[40];
	size_t n = 0;
	struct zn_json j;
	char *text;
	size_t len;
	int rc;

	if (!arch)
		return zn_error(-ENOTSUP, "config.json '%s': architecture '%s' is not one zinc "
				"writes (%s)", path, cfg->architecture, SUPPORTED_ARCHS);
	if (!torch_dtype)
		torch_dtype = cfg->torch_dtype;
#define ADD(k, kind_, ...) (e[n++] = (struct centry){ .key = k, .kind = kind_, __VA_ARGS__ })
	ADD("architectures", V_NAMES, .s = arch->name);
	ADD("model_type", V_STRING, .s = arch->model_type);
	for (size_t i = 0; i < ZN_ARRAY_SIZE(config_keys); i++) {
		const struct ckey *k = &config_keys[i];
		const char *field = (const char *)cfg + k->offset;
		if (k->kind == C_INT) {
			int v = *(const int *)field;
			if (strcmp(k->name, "num_key_value_heads") == 0 && !v)
				v = cfg->n_head;
			if (strcmp(k->name, "head_dim") == 0 && !v)
				v = cfg->n_head ? cfg->n_embd / cfg->n_head : 0;
			ADD(k->name, V_INT, .i = v);
		} else if (k->kind == C_FLOAT) {
			ADD(k->name, V_FLOAT, .f = *(const float *)field);
		} else {
			ADD(k->name, V_BOOL, .b = *(const bool *)field);
		}
	}
	ADD("hidden_act", V_STRING, .s = "silu");
	ADD("attention_dropout", V_FLOAT, .f = 0.0f);
	ADD("use_cache", V_BOOL, .b = true);
	if (is_llama(arch)) {
		ADD("attention_bias", V_BOOL, .b = false);
		ADD("mlp_bias", V_BOOL, .b = cfg->mlp_bias);
		ADD("pretraining_tp", V_INT, .i = 1);
	}
	if (strcmp(arch->model_type, "mistral") == 0)
		ADD("sliding_window", V_NULL);
	if (strcmp(arch->model_type, "qwen2") == 0) {
		ADD("use_sliding_window", V_BOOL, .b = false);
		ADD("sliding_window", V_NULL);
	}
	if (cfg->rope_type == ZN_ROPE_LLAMA3)
		ADD("rope_scaling", V_LLAMA3_ROPE);
	else
		ADD("rope_scaling", V_NULL);
	if (cfg->bos_token_id >= 0)
		ADD("bos_token_id", V_INT, .i = cfg->bos_token_id);
	if (cfg->eos_token_id >= 0)
		ADD("eos_token_id", V_INT, .i = cfg->eos_token_id);
	if (torch_dtype && *torch_dtype)
		ADD("torch_dtype", V_STRING, .s = torch_dtype);
#undef ADD
	qsort(e, n, sizeof(e[0]), centry_cmp);

	if (zn_json_open_memory(&j, ZN_JSON_PRETTY | ZN_JSON_LINE))
		return zn_error(-ENOMEM, "out of memory writing '%s'", path);
	zn_json_begin_object(&j);
	for (size_t i = 0; i < n; i++)
		put_entry(&j, &e[i], cfg);
	zn_json_end_object(&j);
	if (zn_json_close_memory(&j, &text, &len))
		return zn_error(-ENOMEM, "out of memory writing '%s'", path);
	rc = write_file_atomic(path, text, len);
	free(text);
	if (!rc) {
		/* The rename must reach the disk too. */
		char *dir = strdup(path);
		if (dir)
			fsync_dir(dirname(dir));
		free(dir);
	}
	return rc;
}

/* ---- reading the weights --------------------------------------------------------- */

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
	m->shards[m->nshards].path = join(m->dir, file);
	if (!m->shards[m->nshards].path)
		return SIZE_MAX;
	return m->nshards++;
}

/* Read the index: weight_map (tensor -> shard file), sorted. */
static int read_index(struct zn_hf_model *m)
{
	struct json j = { 0 };
	char d[64];
	int rc = json_load(&j, m->index_path, "a safetensors index (\"weight_map\": {tensor: file})");
	if (rc)
		return rc;
	struct zn_doc_node *wm = zn_doc_get(j.root, "weight_map");
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
	json_free(&j);
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
	if (!is_dir(dir))
		return zn_error(-ENOENT, "model folder '%s' %s: give the folder that holds "
				"config.json and the .safetensors files", dir,
				access(dir, F_OK) == 0 ? "is not a folder" : "does not exist");
	m = calloc(1, sizeof(*m));
	if (!m || !(m->dir = strdup(dir)) || !(single = join(dir, SINGLE_NAME)) ||
	    !(m->index_path = join(dir, INDEX_NAME)) || !(bin = join(dir, "pytorch_model.bin"))) {
		rc = zn_error(-ENOMEM, "out of memory");
		goto out;
	}
	if (is_file(single)) {
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
	} else if (is_file(m->index_path)) {
		rc = read_index(m);
		if (rc)
			goto out;
	} else {
		bool torch_bin = is_file(bin);
		char *bin_index = join(dir, "pytorch_model.bin.index.json");
		torch_bin = torch_bin || (bin_index && is_file(bin_index));
		free(bin_index);
		rc = zn_error(-ENOENT, "model folder '%s' has neither %s nor %s%s", dir,
			      SINGLE_NAME, INDEX_NAME,
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
		if (dt == ZN_ST_BF16)
			for (size_t i = 0; i < k; i++)
				dst[i] = zn_bf16_to_f32(h[i]);
		else
			for (size_t i = 0; i < k; i++)
				dst[i] = zn_f16_to_f32(h[i]);
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
	/* Done with these pages: drop them from this process so that
	 * loading a model larger than memory never holds it whole (they
	 * are clean, so a later read maps them again from the page cache
	 * or the file).  Only pages wholly inside the range; a neighbour
	 * may still be read. */
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
	uintptr_t lo = ZN_ALIGN_UP((uintptr_t)src, page);
	uintptr_t hi = ((uintptr_t)src + n * es) / page * page;
	if (hi > lo)
		madvise((void *)lo, hi - lo, MADV_DONTNEED);
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

/* ---- writing a folder ------------------------------------------------------------ */

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

static int mkdir_p(const char *path)
{
	char *p = strdup(path);
	int rc = 0;
	if (!p)
		return -ENOMEM;
	for (char *c = p + 1; *c && !rc; c++) {
		if (*c != '/')
			continue;
		*c = 0;
		if (mkdir(p, 0755) != 0 && errno != EEXIST)
			rc = -errno;
		*c = '/';
	}
	if (!rc && mkdir(p, 0755) != 0 && errno != EEXIST)
		rc = -errno;
	free(p);
	return rc;
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
	if (!find_arch(cfg->architecture))
		return zn_error(-ENOTSUP, "'%s': architecture '%s' is not one zinc writes (%s)",
				dir, cfg->architecture, SUPPORTED_ARCHS);
	w = calloc(1, sizeof(*w));
	if (!w)
		return zn_error(-ENOMEM, "out of memory");
	w->torch_dtype = torch_dtype_name(dtype, &w->dtype);
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
			snprintf(name, sizeof(name), SINGLE_NAME);
		else
			snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", i + 1, w->ns);
		w->s[i].final = join(dir, name);
		if (asprintf(&w->s[i].tmp, "%s/.%s.zinc-tmp-%d", dir, name, (int)getpid()) < 0)
			w->s[i].tmp = NULL;
		if (!w->s[i].final || !w->s[i].tmp) {
			zn_hf_writer_abort(w);
			return zn_error(-ENOMEM, "out of memory");
		}
	}
	rc = mkdir_p(dir);
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
		if (w->dtype == ZN_ST_BF16)
			for (size_t i = 0; i < k; i++)
				w->stage[i] = zn_f32_to_bf16(v[i]);
		else
			for (size_t i = 0; i < k; i++)
				w->stage[i] = zn_f32_to_f16(v[i]);
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
					   strcmp(e->d_name, SINGLE_NAME) == 0 ||
					   strcmp(e->d_name, INDEX_NAME) == 0;
		if (!model)
			continue;
		if (w->ns > 1 && strcmp(e->d_name, INDEX_NAME) == 0)
			continue;
		for (size_t i = 0; i < w->ns && !ours; i++)
			ours = strcmp(strrchr(w->s[i].final, '/') + 1, e->d_name) == 0;
		if (!ours) {
			char *p = join(w->dir, e->d_name);
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
	char *path = join(w->dir, INDEX_NAME);
	if (zn_json_close_memory(&j, &text, &len) || !path)
		rc = zn_error(-ENOMEM, "out of memory");
	else
		rc = write_file_atomic(path, text, len);
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
		char *path = join(w->dir, CONFIG_NAME);
		rc = path ? zn_hf_write_config(path, &w->cfg, w->torch_dtype)
			  : zn_error(-ENOMEM, "out of memory");
		free(path);
	}
	if (!rc)
		remove_stale(w);
	fsync_dir(w->dir);
	zn_hf_writer_abort(w);
	return rc;
}
