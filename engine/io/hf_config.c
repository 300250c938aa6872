/* Hugging Face config.json (include/zinc/hf.h): read into struct
 * zn_llama_config, with every key zinc does not implement refused by name,
 * and written back as transformers writes it (keys sorted, two-space
 * indent, floats as Python prints them).  The architectures zinc knows
 * (Llama, Mistral, Qwen2) and the torch dtype names are here too.
 */
#include "zn_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/doc.h"
#include "io/files.h"
#include "io/hf_internal.h"
#include "zinc/hf.h"
#include "zinc/json.h"

/* config.json being read: its tree and its path, for messages. */
struct json {
	const char *path;
	struct zn_doc *doc;
	struct zn_doc_node *root; /* an object */
};

/* ---- reading --------------------------------------------------------------------- */

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

bool zn_hf_arch_supported(const char *name)
{
	return find_arch(name) != NULL;
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
					ZN_HF_SUPPORTED_ARCHS);
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
					"loads %s models", j->path, model_type, ZN_HF_SUPPORTED_ARCHS);
	} else {
		return zn_error(-EINVAL, "'%s': required key 'architectures' is missing; is this "
				"the config.json of a Hugging Face %s model?", j->path,
				ZN_HF_SUPPORTED_ARCHS);
	}
	*arch = find_arch(name);
	if (!*arch)
		return zn_error(-ENOTSUP, "'%s': architecture '%s' is not supported: zinc loads %s",
				j->path, name, ZN_HF_SUPPORTED_ARCHS);
	if (model_type && strcmp(model_type, (*arch)->model_type) != 0)
		return zn_error(-EINVAL, "'%s': model_type '%s' does not match architectures[0] "
				"'%s' (model_type '%s'); fix config.json", j->path, model_type,
				name, (*arch)->model_type);
	return 0;
}

/* An optional true/false key: false when absent or null. */
static int read_flag(const struct zn_doc_node *root, const char *key, bool *out)
{
	struct zn_doc_node *v = zn_doc_get(root, key);

	*out = false;
	if (v && !zn_doc_is_null(v) && zn_doc_bool(v, out))
		return cfg_bad(key, v, "true or false");
	return 0;
}

/* Mistral's and Qwen2's sliding windows, Llama's biases: what the
 * architecture adds to the plain keys. */
static int read_arch_keys(struct json *j, const struct arch *arch, struct zn_llama_config *out)
{
	long long n;
	bool b;

	out->qkv_bias = arch->qkv_bias;
	if (is_llama(arch)) {
		ZN_TRY(read_flag(j->root, "attention_bias", &b));
		/* LlamaAttention's attention_bias puts a bias on o_proj too,
		 * which the Llama model here does not have. */
		if (b)
			return zn_error(-ENOTSUP, "'%s': attention_bias true (biases on "
					"q/k/v/o_proj) is not supported; zinc's Llama has no "
					"attention biases", j->path);
		ZN_TRY(read_flag(j->root, "mlp_bias", &out->mlp_bias));
	}
	if (strcmp(arch->model_type, "mistral") == 0) {
		struct zn_doc_node *v = zn_doc_get(j->root, "sliding_window");
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
		ZN_TRY(read_flag(j->root, "use_sliding_window", &b));
		if (b)
			return zn_error(-ENOTSUP, "'%s': use_sliding_window true: sliding-window "
					"attention is not supported", j->path);
	}
	return 0;
}

int zn_hf_read_config(const char *path, struct zn_llama_config *out)
{
	struct json j = { 0 };
	const struct arch *arch = NULL;
	char *file = NULL;
	int rc;

	if (zn_io_is_dir(path)) {
		file = zn_io_join(path, ZN_HF_CONFIG_NAME);
		if (!file)
			return zn_error(-ENOMEM, "out of memory");
		path = file;
	}
	memset(out, 0, sizeof(*out));
	out->rope_theta = 10000.0f;
	out->init_std = 0.02f;
	j.path = path;
	j.doc = zn_doc_create();
	rc = j.doc ? zn_doc_load_json(j.doc, path, ZN_HF_MAX_JSON_BYTES, "a Hugging Face "
				      "config.json", &j.root)
		   : zn_error(-ENOMEM, "out of memory");
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
	zn_doc_destroy(j.doc);
	free(file);
	return rc;
}

/* ---- writing ------------------------------------------------------------------- */

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

const char *zn_hf_torch_dtype(const char *s, enum zn_st_dtype *dt)
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
				"writes (%s)", path, cfg->architecture, ZN_HF_SUPPORTED_ARCHS);
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
	rc = zn_io_write_file_atomic(path, text, len);
	free(text);
	if (!rc)
		zn_io_fsync_parent(path); /* the rename must reach the disk too */
	return rc;
}
