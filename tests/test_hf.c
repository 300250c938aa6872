/* Hugging Face model folders: config.json in and out, sharded safetensors
 * written and read back (values exact in F32, correctly rounded in BF16 and
 * F16), folders made by an independent writer (Python's json + struct, and
 * PyTorch's conversions where a python3 with torch is on PATH), and every
 * kind of bad folder, each failing with the right code and a message that
 * names the file and the key or tensor. */
#include "testutil.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "zn_half.h"
#include "zinc/hf.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ---- helpers ------------------------------------------------------------ */

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
	assert_int_equal(fclose(f), 0);
}

static char *read_text(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *p = malloc((size_t)n + 1);
	assert_non_null(p);
	assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
	p[n] = 0;
	fclose(f);
	if (len)
		*len = (size_t)n;
	return p;
}

/* A fresh folder under the scratch directory. */
static const char *folder(const char *name)
{
	const char *p = tu_path(name);
	mkdir(p, 0755);
	return p;
}

static const char *in(const char *dir, const char *name)
{
	static char bufs[4][4096];
	static int next;
	char *b = bufs[next++ % 4];
	if (snprintf(b, sizeof(bufs[0]), "%s/%s", dir, name) >= (int)sizeof(bufs[0]))
		fail_msg("path too long: %s/%s", dir, name);
	return b;
}

/* The call failed with `want` and a message holding every needle. */
static void expect_error(int rc, int want, const char *const *needles)
{
	const char *msg = zn_last_error();
	if (rc != want)
		fail_msg("returned %d, want %d; message: %s", rc, want, msg);
	for (; *needles; needles++)
		if (!strstr(msg, *needles))
			fail_msg("message lacks '%s': %s", *needles, msg);
}
#define EXPECT_ERROR(rc, want, ...) expect_error(rc, want, (const char *const[]){ __VA_ARGS__, NULL })

static bool have_python(void)
{
	return system("python3 -c 'import json, struct' >/dev/null 2>&1") == 0;
}

/* A python3 on PATH that has torch (meson's python3 may be a pyenv or a
 * virtualenv one without it), into buf; false when none has. */
static bool find_torch_python(char *buf, size_t len)
{
	const char *path = getenv("PATH");
	char *copy = strdup(path ? path : ""), *save = NULL;
	bool found = false;
	for (char *d = strtok_r(copy, ":", &save); d && !found; d = strtok_r(NULL, ":", &save)) {
		char cmd[4200];
		snprintf(buf, len, "%s/python3", d);
		if (access(buf, X_OK) != 0)
			continue;
		snprintf(cmd, sizeof(cmd), "'%s' -c 'import torch' >/dev/null 2>&1", buf);
		found = system(cmd) == 0;
	}
	free(copy);
	return found;
}

/* A small Llama 3 shaped model: grouped-query attention, llama3 rope. */
static struct zn_llama_config tiny_cfg(void)
{
	struct zn_llama_config c = {
		.architecture = "LlamaForCausalLM",
		.n_layer = 2, .n_embd = 16, .n_head = 4, .n_kv_head = 2, .head_dim = 4,
		.intermediate = 24, .vocab_size = 40, .max_seq_len = 64, .norm_eps = 1e-5f,
		.rope_theta = 500000.0f, .rope_type = ZN_ROPE_LLAMA3, .rope_factor = 8.0f,
		.rope_low_freq_factor = 1.0f, .rope_high_freq_factor = 4.0f,
		.rope_original_max_pos = 8192, .tie_embeddings = false, .init_std = 0.02f,
		.bos_token_id = 1, .eos_token_id = 2, .torch_dtype = "bfloat16",
	};
	return c;
}

static struct zn_param_desc desc(const char *name, int64_t rows, int64_t cols)
{
	struct zn_param_desc d = { .ndim = cols ? 2 : 1, .shape = { rows, cols } };
	snprintf(d.name, sizeof(d.name), "%s", name);
	d.numel = (size_t)rows * (size_t)(cols ? cols : 1);
	return d;
}

/* LlamaForCausalLM's tensors, in its state_dict order. */
static size_t llama_descs(const struct zn_llama_config *c, struct zn_param_desc *out)
{
	size_t n = 0;
	int64_t C = c->n_embd, q = (int64_t)c->n_head * c->head_dim,
		kv = (int64_t)c->n_kv_head * c->head_dim, I = c->intermediate;
	char name[64];
	out[n++] = desc("model.embed_tokens.weight", c->vocab_size, C);
	for (int l = 0; l < c->n_layer; l++) {
		static const char *const parts[] = {
			"self_attn.q_proj.weight", "self_attn.k_proj.weight",
			"self_attn.v_proj.weight", "self_attn.o_proj.weight", "mlp.gate_proj.weight",
			"mlp.up_proj.weight", "mlp.down_proj.weight", "input_layernorm.weight",
			"post_attention_layernorm.weight",
		};
		const int64_t rows[] = { q, kv, kv, C, I, I, C, C, C };
		const int64_t cols[] = { C, C, C, q, C, C, I, 0, 0 };
		for (size_t k = 0; k < ARRAY_LEN(parts); k++) {
			snprintf(name, sizeof(name), "model.layers.%d.%s", l, parts[k]);
			out[n++] = desc(name, rows[k], cols[k]);
		}
	}
	out[n++] = desc("model.norm.weight", C, 0);
	if (!c->tie_embeddings)
		out[n++] = desc("lm_head.weight", c->vocab_size, C);
	return n;
}

/* Tensor i's values: a spread of magnitudes and signs, some of them
 * exactly halfway between two bf16 or fp16 values. */
static float value(size_t i, size_t k)
{
	uint64_t s = (i + 1) * 0x9e3779b97f4a7c15ull + k;
	uint64_t r = tu_rand(&s);
	float x = (float)((int64_t)(r >> 11) % 200001 - 100000) * 1e-5f;
	switch (r % 5) {
	case 0:
		return x * 1e-3f;
	case 1: /* 1 + (2j+1) 2^-17: a tie for bf16's 8-bit fraction when j is 0 */
		return zn_f32_from_bits(0x3f800000u | (uint32_t)((r >> 20) & 0xff) << 16 | 0x8000u);
	default:
		return x;
	}
}

static float *values(size_t i, size_t n)
{
	float *v = malloc(n * sizeof(*v));
	assert_non_null(v);
	for (size_t k = 0; k < n; k++)
		v[k] = value(i, k);
	return v;
}

/* Write the tiny model's folder. */
static void write_model(const char *dir, const struct zn_llama_config *c, const char *dtype,
			uint64_t shard_bytes)
{
	struct zn_param_desc d[64];
	size_t n = llama_descs(c, d);
	struct zn_hf_writer *w;
	assert_int_equal(zn_hf_writer_begin(dir, c, d, n, dtype, shard_bytes, &w), 0);
	for (size_t i = 0; i < n; i++) {
		float *v = values(i, d[i].numel);
		assert_int_equal(zn_hf_writer_put(w, v), 0);
		free(v);
	}
	if (zn_hf_writer_end(w) != 0)
		fail_msg("end: %s", zn_last_error());
}

static float round_to(const char *dtype, float x)
{
	if (strcmp(dtype, "bfloat16") == 0)
		return zn_bf16_to_f32(zn_f32_to_bf16(x));
	if (strcmp(dtype, "float16") == 0)
		return zn_f16_to_f32(zn_f32_to_f16(x));
	return x;
}

/* Read every tensor back: whole and in slices, each value the input
 * rounded to the folder's dtype. */
static void check_model(const char *dir, const struct zn_llama_config *c, const char *dtype)
{
	struct zn_param_desc d[64];
	size_t n = llama_descs(c, d);
	struct zn_hf_model *m;
	if (zn_hf_open(dir, &m) != 0)
		fail_msg("open: %s", zn_last_error());
	if (zn_hf_check(m, d, n) != 0)
		fail_msg("check: %s", zn_last_error());
	for (size_t i = 0; i < n; i++) {
		float *want = values(i, d[i].numel);
		float *got = malloc(d[i].numel * sizeof(float));
		assert_non_null(got);
		assert_int_equal(zn_hf_numel(m, d[i].name), d[i].numel);
		assert_int_equal(zn_hf_read_f32(m, d[i].name, got), 0);
		for (size_t k = 0; k < d[i].numel; k++) {
			float r = round_to(dtype, want[k]);
			if (zn_f32_bits(got[k]) != zn_f32_bits(r))
				fail_msg("%s[%zu]: read %a, want %a (from %a)", d[i].name, k,
					 (double)got[k], (double)r, (double)want[k]);
		}
		/* A rank's slice is the same values. */
		size_t off = d[i].numel / 3, len = d[i].numel / 2;
		memset(got, 0, d[i].numel * sizeof(float));
		assert_int_equal(zn_hf_read_f32_range(m, d[i].name, off, len, got), 0);
		for (size_t k = 0; k < len; k++)
			assert_true(zn_f32_bits(got[k]) ==
				    zn_f32_bits(round_to(dtype, want[off + k])));
		free(want);
		free(got);
	}
	zn_hf_close(m);
}

/* Python's json and struct check the folder's structure the way a second
 * reader sees it: file names, index, total_size, metadata, dtype. */
static void python_check_structure(const char *dir, int nshards, const char *st_dtype)
{
	if (!have_python())
		return;
	const char *script = tu_path("structure.py");
	write_text(script,
		   "import json, os, re, struct, sys\n"
		   "d, n, dt = sys.argv[1], int(sys.argv[2]), sys.argv[3]\n"
		   "def header(p):\n"
		   "    b = open(p, 'rb').read()\n"
		   "    k = struct.unpack('<Q', b[:8])[0]\n"
		   "    assert (8 + k) % 8 == 0, p\n"
		   "    h = json.loads(b[8:8 + k])\n"
		   "    assert h.pop('__metadata__') == {'format': 'pt'}, p\n"
		   "    assert all(e['dtype'] == dt for e in h.values()), p\n"
		   "    size = sum(e['data_offsets'][1] - e['data_offsets'][0] for e in h.values())\n"
		   "    assert len(b) == 8 + k + size, p\n"
		   "    return h, size\n"
		   "cfg = json.load(open(os.path.join(d, 'config.json')))\n"
		   "assert list(cfg) == sorted(cfg), list(cfg)\n"
		   "files = sorted(f for f in os.listdir(d) if f.endswith('.safetensors'))\n"
		   "assert not [f for f in os.listdir(d) if 'tmp' in f], os.listdir(d)\n"
		   "if n == 1:\n"
		   "    assert files == ['model.safetensors'], files\n"
		   "    assert not os.path.exists(os.path.join(d, 'model.safetensors.index.json'))\n"
		   "    header(os.path.join(d, files[0]))\n"
		   "    sys.exit(0)\n"
		   "assert files == ['model-%05d-of-%05d.safetensors' % (i + 1, n) for i in range(n)], files\n"
		   "ix = json.load(open(os.path.join(d, 'model.safetensors.index.json')))\n"
		   "wm = ix['weight_map']\n"
		   "assert list(wm) == sorted(wm)\n"
		   "total = 0\n"
		   "for f in files:\n"
		   "    h, size = header(os.path.join(d, f))\n"
		   "    total += size\n"
		   "    assert sorted(k for k, v in wm.items() if v == f) == sorted(h), f\n"
		   "assert ix['metadata']['total_size'] == total, (ix['metadata'], total)\n");
	char cmd[8192];
	snprintf(cmd, sizeof(cmd), "python3 '%s' '%s' %d %s", script, dir, nshards, st_dtype);
	assert_int_equal(system(cmd), 0);
}

/* ---- config.json ------------------------------------------------------------ */

/* Llama 3.1 8B's config.json as released. */
static const char llama31_config[] =
	"{\n"
	"  \"architectures\": [\"LlamaForCausalLM\"],\n"
	"  \"attention_bias\": false,\n"
	"  \"attention_dropout\": 0.0,\n"
	"  \"bos_token_id\": 128000,\n"
	"  \"eos_token_id\": [128001, 128008, 128009],\n"
	"  \"hidden_act\": \"silu\",\n"
	"  \"hidden_size\": 4096,\n"
	"  \"initializer_range\": 0.02,\n"
	"  \"intermediate_size\": 14336,\n"
	"  \"max_position_embeddings\": 131072,\n"
	"  \"mlp_bias\": false,\n"
	"  \"model_type\": \"llama\",\n"
	"  \"num_attention_heads\": 32,\n"
	"  \"num_hidden_layers\": 32,\n"
	"  \"num_key_value_heads\": 8,\n"
	"  \"pretraining_tp\": 1,\n"
	"  \"rms_norm_eps\": 1e-05,\n"
	"  \"rope_scaling\": {\n"
	"    \"factor\": 8.0,\n"
	"    \"low_freq_factor\": 1.0,\n"
	"    \"high_freq_factor\": 4.0,\n"
	"    \"original_max_position_embeddings\": 8192,\n"
	"    \"rope_type\": \"llama3\"\n"
	"  },\n"
	"  \"rope_theta\": 500000.0,\n"
	"  \"tie_word_embeddings\": false,\n"
	"  \"torch_dtype\": \"bfloat16\",\n"
	"  \"transformers_version\": \"4.43.0.dev0\",\n"
	"  \"use_cache\": true,\n"
	"  \"vocab_size\": 128256\n"
	"}\n";

static void test_config_llama31(void **state)
{
	(void)state;
	const char *dir = folder("llama31");
	write_text(in(dir, "config.json"), llama31_config);
	struct zn_llama_config c;
	assert_int_equal(zn_hf_read_config(dir, &c), 0);
	assert_string_equal(c.architecture, "LlamaForCausalLM");
	assert_int_equal(c.n_layer, 32);
	assert_int_equal(c.n_embd, 4096);
	assert_int_equal(c.n_head, 32);
	assert_int_equal(c.n_kv_head, 8);
	assert_int_equal(c.head_dim, 128);
	assert_int_equal(c.intermediate, 14336);
	assert_int_equal(c.vocab_size, 128256);
	assert_int_equal(c.max_seq_len, 131072);
	assert_true(c.norm_eps == 1e-5f);
	assert_true(c.rope_theta == 500000.0f);
	assert_int_equal(c.rope_type, ZN_ROPE_LLAMA3);
	assert_true(c.rope_factor == 8.0f && c.rope_low_freq_factor == 1.0f &&
		    c.rope_high_freq_factor == 4.0f);
	assert_int_equal(c.rope_original_max_pos, 8192);
	assert_false(c.tie_embeddings);
	assert_false(c.qkv_bias);
	assert_false(c.mlp_bias);
	assert_true(c.init_std == 0.02f);
	assert_int_equal(c.bos_token_id, 128000);
	assert_int_equal(c.eos_token_id, 128001); /* a list: its first */
	assert_string_equal(c.torch_dtype, "bfloat16");
	/* The file itself, too. */
	struct zn_llama_config c2;
	assert_int_equal(zn_hf_read_config(in(dir, "config.json"), &c2), 0);
	assert_memory_equal(&c, &c2, sizeof(c));
}

/* Mistral, Qwen2, defaults and transformers 5's spellings. */
static void test_config_variants(void **state)
{
	(void)state;
	const char *p = tu_path("variant.json");
	struct zn_llama_config c;

	/* Mistral v0.2+: no sliding window; defaults for absent keys. */
	write_text(p, "{\"architectures\": [\"MistralForCausalLM\"], \"model_type\": \"mistral\","
		      " \"hidden_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 8,"
		      " \"intermediate_size\": 128, \"vocab_size\": 100,"
		      " \"max_position_embeddings\": 32768, \"rms_norm_eps\": 1e-6,"
		      " \"sliding_window\": null, \"bos_token_id\": null}");
	assert_int_equal(zn_hf_read_config(p, &c), 0);
	assert_string_equal(c.architecture, "MistralForCausalLM");
	assert_int_equal(c.n_kv_head, 8);
	assert_int_equal(c.head_dim, 8);
	assert_true(c.rope_theta == 10000.0f);
	assert_int_equal(c.rope_type, ZN_ROPE_DEFAULT);
	assert_int_equal(c.bos_token_id, -1);
	assert_int_equal(c.eos_token_id, -1);
	assert_string_equal(c.torch_dtype, "");
	/* A window as long as the context is no window. */
	write_text(p, "{\"architectures\": [\"MistralForCausalLM\"], \"hidden_size\": 64,"
		      " \"num_hidden_layers\": 2, \"num_attention_heads\": 8, \"head_dim\": 16,"
		      " \"num_key_value_heads\": 2, \"intermediate_size\": 128,"
		      " \"vocab_size\": 100, \"max_position_embeddings\": 4096,"
		      " \"rms_norm_eps\": 1e-6, \"sliding_window\": 4096}");
	assert_int_equal(zn_hf_read_config(p, &c), 0);
	assert_int_equal(c.head_dim, 16); /* given: not C / NH */
	assert_int_equal(c.n_kv_head, 2);

	/* Qwen2: q/k/v biases, tied embeddings, no architectures (model_type
	 * alone), rope_scaling default, "dtype" (transformers 5). */
	write_text(p, "{\"model_type\": \"qwen2\", \"hidden_size\": 64,"
		      " \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
		      " \"num_key_value_heads\": 2, \"intermediate_size\": 128,"
		      " \"vocab_size\": 151936, \"max_position_embeddings\": 32768,"
		      " \"rms_norm_eps\": 1e-6, \"rope_theta\": 1000000.0,"
		      " \"use_sliding_window\": false, \"sliding_window\": 32768,"
		      " \"tie_word_embeddings\": true, \"rope_scaling\": {\"type\": \"default\"},"
		      " \"dtype\": \"float32\", \"eos_token_id\": 151643}");
	assert_int_equal(zn_hf_read_config(p, &c), 0);
	assert_string_equal(c.architecture, "Qwen2ForCausalLM");
	assert_true(c.qkv_bias);
	assert_true(c.tie_embeddings);
	assert_true(c.rope_theta == 1e6f);
	assert_int_equal(c.rope_type, ZN_ROPE_DEFAULT);
	assert_string_equal(c.torch_dtype, "float32");
	assert_int_equal(c.eos_token_id, 151643);

	/* transformers 5: rope_parameters holds the theta and the type. */
	write_text(p, "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64,"
		      " \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
		      " \"intermediate_size\": 128, \"vocab_size\": 100,"
		      " \"max_position_embeddings\": 4096, \"rms_norm_eps\": 1e-5,"
		      " \"rope_parameters\": {\"rope_type\": \"llama3\", \"rope_theta\": 500000.0,"
		      " \"factor\": 32.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0,"
		      " \"original_max_position_embeddings\": 8192}, \"mlp_bias\": true}");
	assert_int_equal(zn_hf_read_config(p, &c), 0);
	assert_true(c.rope_theta == 500000.0f);
	assert_int_equal(c.rope_type, ZN_ROPE_LLAMA3);
	assert_true(c.rope_factor == 32.0f);
	assert_true(c.mlp_bias);
}

/* A Llama config.json with `key` replaced (value NULL: removed). */
static const char *llama_with(const char *key, const char *value)
{
	static char buf[8192];
	const char *base = llama31_config;
	char pat[128];
	snprintf(pat, sizeof(pat), "\n  \"%s\": ", key);
	const char *at = strstr(base, pat);
	assert_non_null(at);
	const char *end = at + strlen(pat);
	int depth = 0;
	for (; *end && !(depth == 0 && (*end == ',' || *end == '\n')); end++)
		depth += (*end == '{' || *end == '[') - (*end == '}' || *end == ']');
	if (*end == ',')
		end++;
	if (value)
		snprintf(buf, sizeof(buf), "%.*s\n  \"%s\": %s,%s", (int)(at - base), base, key,
			 value, end);
	else
		snprintf(buf, sizeof(buf), "%.*s%s", (int)(at - base), base, end);
	return buf;
}

static void test_config_errors(void **state)
{
	(void)state;
	const char *p = tu_path("bad-config.json");
	struct zn_llama_config c;
	static const struct {
		const char *key, *value; /* replaced in Llama 3.1's config; NULL: removed */
		int rc;
		const char *needle;
	} cases[] = {
		{ "hidden_size", NULL, -EINVAL, "required key 'hidden_size' is missing" },
		{ "num_hidden_layers", NULL, -EINVAL, "'num_hidden_layers'" },
		{ "rms_norm_eps", NULL, -EINVAL, "'rms_norm_eps'" },
		{ "vocab_size", NULL, -EINVAL, "'vocab_size'" },
		{ "hidden_size", "\"4096\"", -EINVAL, "hidden_size must be an integer >= 1, found "
						      "\"4096\" (a string)" },
		{ "hidden_size", "4096.5", -EINVAL, "hidden_size must be an integer" },
		{ "num_attention_heads", "0", -EINVAL, "num_attention_heads must be an integer >= 1" },
		{ "rms_norm_eps", "\"small\"", -EINVAL, "rms_norm_eps must be a number > 0" },
		{ "tie_word_embeddings", "1", -EINVAL, "tie_word_embeddings must be true or false" },
		{ "architectures", "[\"GPT2LMHeadModel\"]", -ENOTSUP,
		  "architecture 'GPT2LMHeadModel' is not supported" },
		{ "architectures", "[\"LlamaForSequenceClassification\"]", -ENOTSUP,
		  "'LlamaForSequenceClassification'" },
		{ "architectures", "[]", -EINVAL, "architectures must be a list of class names" },
		{ "architectures", NULL, -EINVAL, "" }, /* model_type llama alone is fine: see below */
		{ "model_type", "\"mistral\"", -EINVAL, "model_type 'mistral' does not match" },
		{ "rope_scaling", "{\"type\": \"linear\", \"factor\": 2.0}", -ENOTSUP,
		  "rope_scaling type 'linear' is not supported" },
		{ "rope_scaling", "{\"rope_type\": \"dynamic\", \"factor\": 2.0}", -ENOTSUP,
		  "'dynamic'" },
		{ "rope_scaling", "{\"rope_type\": \"yarn\", \"factor\": 4.0}", -ENOTSUP, "'yarn'" },
		{ "rope_scaling", "{\"rope_type\": \"longrope\", \"long_factor\": [1.0]}", -ENOTSUP,
		  "'longrope'" },
		{ "rope_scaling", "{\"factor\": 8.0}", -EINVAL, "rope_scaling has no rope_type" },
		{ "rope_scaling", "[8]", -EINVAL, "rope_scaling must be an object or null" },
		{ "rope_scaling", "{\"rope_type\": \"llama3\", \"factor\": 8.0}", -EINVAL,
		  "rope_scaling.low_freq_factor is missing" },
		{ "rope_scaling", "{\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": "
				  "4.0, \"high_freq_factor\": 4.0, "
				  "\"original_max_position_embeddings\": 8192}",
		  -EINVAL, "high_freq_factor (4) must be larger" },
		{ "hidden_act", "\"gelu\"", -ENOTSUP, "hidden_act 'gelu' is not supported" },
		{ "attention_bias", "true", -ENOTSUP, "attention_bias true" },
		{ "num_key_value_heads", "5", -EINVAL, "not a multiple of num_key_value_heads 5" },
		{ "bos_token_id", "\"<s>\"", -EINVAL, "bos_token_id must be a token id" },
	};
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		write_text(p, llama_with(cases[i].key, cases[i].value));
		int rc = zn_hf_read_config(p, &c);
		if (strcmp(cases[i].key, "architectures") == 0 && !cases[i].value) {
			assert_int_equal(rc, 0); /* model_type names it */
			assert_string_equal(c.architecture, "LlamaForCausalLM");
			continue;
		}
		if (rc != cases[i].rc || !strstr(zn_last_error(), cases[i].needle) ||
		    !strstr(zn_last_error(), p))
			fail_msg("case %zu (%s = %s): rc %d, want %d; message: %s", i,
				 cases[i].key, cases[i].value ? cases[i].value : "(removed)", rc,
				 cases[i].rc, zn_last_error());
	}

	/* A bad value is located, as editors count lines and columns. */
	write_text(p, llama_with("hidden_size", "\"4096\""));
	EXPECT_ERROR(zn_hf_read_config(p, &c), -EINVAL, "bad-config.json:8:18: hidden_size must");

	/* Whole-file problems. */
	write_text(p, "{\"architectures\": [\"MistralForCausalLM\"], \"hidden_size\": 64,"
		      " \"num_hidden_layers\": 2, \"num_attention_heads\": 8,"
		      " \"intermediate_size\": 128, \"vocab_size\": 100,"
		      " \"max_position_embeddings\": 32768, \"rms_norm_eps\": 1e-6,"
		      " \"sliding_window\": 4096}");
	EXPECT_ERROR(zn_hf_read_config(p, &c), -ENOTSUP, p, "sliding_window 4096",
		     "not supported");
	write_text(p, "{\"architectures\": [\"Qwen2ForCausalLM\"], \"hidden_size\": 64,"
		      " \"num_hidden_layers\": 2, \"num_attention_heads\": 8,"
		      " \"intermediate_size\": 128, \"vocab_size\": 100,"
		      " \"max_position_embeddings\": 32768, \"rms_norm_eps\": 1e-6,"
		      " \"use_sliding_window\": true}");
	EXPECT_ERROR(zn_hf_read_config(p, &c), -ENOTSUP, p, "use_sliding_window true");
	write_text(p, "{\"hidden_size\": 64, \"vocab_size\": 100}");
	EXPECT_ERROR(zn_hf_read_config(p, &c), -EINVAL, p, "'architectures' is missing");
	write_text(p, "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64,");
	EXPECT_ERROR(zn_hf_read_config(p, &c), -EINVAL, p, "bad JSON at line");
	write_text(p, "[1, 2]");
	EXPECT_ERROR(zn_hf_read_config(p, &c), -EINVAL, p, "not a JSON object");
	write_text(p, "");
	EXPECT_ERROR(zn_hf_read_config(p, &c), -EINVAL, p, "not a JSON object");
	const char *empty_dir = folder("no-config");
	EXPECT_ERROR(zn_hf_read_config(empty_dir, &c), -ENOENT, "no-config/config.json");
}

/* zn_hf_write_config writes what zn_hf_read_config reads back, as JSON
 * Python parses, with transformers' key order and number spelling. */
static void test_config_write(void **state)
{
	(void)state;
	struct zn_llama_config cfgs[3] = { tiny_cfg(), tiny_cfg(), tiny_cfg() };
	snprintf(cfgs[1].architecture, sizeof(cfgs[1].architecture), "MistralForCausalLM");
	cfgs[1].rope_type = ZN_ROPE_DEFAULT;
	cfgs[1].rope_factor = cfgs[1].rope_low_freq_factor = cfgs[1].rope_high_freq_factor = 0;
	cfgs[1].rope_original_max_pos = 0;
	cfgs[1].bos_token_id = -1;
	snprintf(cfgs[2].architecture, sizeof(cfgs[2].architecture), "Qwen2ForCausalLM");
	cfgs[2].qkv_bias = true;
	cfgs[2].tie_embeddings = true;
	cfgs[2].norm_eps = 1e-6f;
	for (int i = 0; i < 3; i++) {
		const char *p = tu_path("written-config.json");
		struct zn_llama_config back;
		assert_int_equal(zn_hf_write_config(p, &cfgs[i], NULL), 0);
		if (zn_hf_read_config(p, &back) != 0)
			fail_msg("config %d: %s", i, zn_last_error());
		assert_memory_equal(&back, &cfgs[i], sizeof(back));
		char *text = read_text(p, NULL);
		assert_non_null(strstr(text, i == 2 ? "\"rms_norm_eps\": 1e-06" : "\"rms_norm_eps\": 1e-05"));
		assert_non_null(strstr(text, "\"initializer_range\": 0.02,"));
		free(text);
		if (have_python()) {
			char cmd[8192];
			snprintf(cmd, sizeof(cmd),
				 "python3 -c \"import json; c=json.load(open('%s')); "
				 "assert list(c)==sorted(c), list(c); "
				 "assert c['hidden_act']=='silu' and c['num_key_value_heads']==2; "
				 "assert c['rope_theta']==500000.0 and c['torch_dtype']=='bfloat16'\"",
				 p);
			assert_int_equal(system(cmd), 0);
		}
	}
	/* The dtype given wins over the config's. */
	const char *p = tu_path("written-config.json");
	assert_int_equal(zn_hf_write_config(p, &cfgs[0], "float32"), 0);
	struct zn_llama_config back;
	assert_int_equal(zn_hf_read_config(p, &back), 0);
	assert_string_equal(back.torch_dtype, "float32");
	struct zn_llama_config bad = tiny_cfg();
	snprintf(bad.architecture, sizeof(bad.architecture), "GPT2LMHeadModel");
	EXPECT_ERROR(zn_hf_write_config(p, &bad, NULL), -ENOTSUP, "GPT2LMHeadModel");
}

/* ---- weights: round trips ----------------------------------------------------- */

static void test_round_trip_sharded(void **state)
{
	(void)state;
	struct zn_llama_config c = tiny_cfg();
	static const struct {
		const char *dtype, *st;
		uint64_t shard_bytes;
		int nshards;
	} runs[] = {
		/* tensors of 1280 + 256 (q) ... bytes: several shards each */
		{ "float32", "F32", 4000, 0 },
		{ "bfloat16", "BF16", 2000, 0 },
		{ "float16", "F16", 3000, 0 },
	};
	for (size_t r = 0; r < ARRAY_LEN(runs); r++) {
		char name[32];
		snprintf(name, sizeof(name), "sharded-%s", runs[r].dtype);
		const char *dir = folder(name);
		write_model(dir, &c, runs[r].dtype, runs[r].shard_bytes);
		int nshards = tu_count_entries(dir, "model-", "-of-", ".safetensors");
		assert_true(nshards >= 3);
		assert_int_equal(access(in(dir, "model.safetensors"), F_OK), -1);
		assert_int_equal(tu_count_entries(dir, NULL, "tmp", NULL), 0);
		check_model(dir, &c, runs[r].dtype);
		struct zn_llama_config back;
		assert_int_equal(zn_hf_read_config(dir, &back), 0);
		assert_string_equal(back.torch_dtype, runs[r].dtype);
		python_check_structure(dir, nshards, runs[r].st);

		/* Every shard holds at most the limit, unless one tensor
		 * alone is larger; a shard closes only when the next tensor
		 * would not fit. */
		struct zn_hf_model *m;
		assert_int_equal(zn_hf_open(dir, &m), 0);
		struct zn_param_desc d[64];
		size_t n = llama_descs(&c, d);
		const char *prev = NULL;
		uint64_t bytes = 0, prev_bytes = 0;
		for (size_t i = 0; i <= n; i++) {
			const struct zn_st_tensor *t = NULL;
			const char *shard = NULL;
			if (i < n)
				assert_int_equal(zn_hf_find(m, d[i].name, &t, &shard), 0);
			if (shard != prev) {
				if (prev) {
					assert_true(bytes <= runs[r].shard_bytes || bytes == prev_bytes);
					if (t)
						assert_true(bytes + t->bytes > runs[r].shard_bytes);
				}
				bytes = 0;
				prev = shard;
			}
			if (t) {
				bytes += t->bytes;
				prev_bytes = t->bytes;
			}
		}
		zn_hf_close(m);
	}
}

static void test_single_file(void **state)
{
	(void)state;
	struct zn_llama_config c = tiny_cfg();
	c.tie_embeddings = true; /* no lm_head.weight */
	const char *dir = tu_path("single/model"); /* created, parents too */
	write_model(dir, &c, "bfloat16", 0);
	assert_int_equal(access(in(dir, "model.safetensors"), F_OK), 0);
	assert_int_equal(access(in(dir, "model.safetensors.index.json"), F_OK), -1);
	assert_int_equal(tu_count_entries(dir, NULL, NULL, NULL), 4); /* . .. config model */
	check_model(dir, &c, "bfloat16");
	python_check_structure(dir, 1, "BF16");
	struct zn_hf_model *m;
	assert_int_equal(zn_hf_open(dir, &m), 0);
	EXPECT_ERROR(zn_hf_find(m, "lm_head.weight", NULL, NULL), -ENOENT, "model.safetensors",
		     "'lm_head.weight'");
	zn_hf_close(m);
}

/* Rounding, checked on values whose results are known, not only against
 * common/zn_half.h: ties go to even, overflow to infinity, NaN stays NaN. */
static void test_rounding(void **state)
{
	(void)state;
	static const struct {
		float in, bf16, f16;
	} v[] = {
		{ 1.0f, 1.0f, 1.0f },
		{ 1.0f + 0x1p-8f, 1.0f, 1.0f + 0x1p-8f },                   /* bf16 tie -> even */
		{ 1.0f + 3 * 0x1p-8f, 1.0f + 0x1p-6f, 1.0f + 3 * 0x1p-8f }, /* bf16 tie -> even (up) */
		{ 1.0f + 0x1p-8f + 0x1p-20f, 1.0f + 0x1p-7f, 1.0f + 0x1p-8f },
		{ 1.0f + 0x1p-11f, 1.0f, 1.0f },                            /* f16 tie -> even */
		{ 1.0f + 3 * 0x1p-11f, 1.0f, 1.0f + 0x1p-9f },              /* f16 tie -> even (up) */
		{ -2.5f, -2.5f, -2.5f },
		{ 65520.0f, 65536.0f, INFINITY },                           /* f16 overflows */
		{ 6e-8f, 6e-8f, 0x1p-24f },                                 /* f16 subnormal */
		{ 1e-8f, 1e-8f, 0.0f },
		{ 3.4028235e38f, INFINITY, INFINITY },
	};
	struct zn_llama_config c = tiny_cfg();
	for (int which = 0; which < 2; which++) {
		const char *dtype = which ? "float16" : "bfloat16";
		struct zn_param_desc d = desc("model.norm.weight", (int64_t)ARRAY_LEN(v) + 1, 0);
		float x[ARRAY_LEN(v) + 1], got[ARRAY_LEN(v) + 1];
		for (size_t i = 0; i < ARRAY_LEN(v); i++)
			x[i] = v[i].in;
		x[ARRAY_LEN(v)] = NAN;
		const char *dir = folder(which ? "round-f16" : "round-bf16");
		struct zn_hf_writer *w;
		assert_int_equal(zn_hf_writer_begin(dir, &c, &d, 1, dtype, 0, &w), 0);
		assert_int_equal(zn_hf_writer_put(w, x), 0);
		assert_int_equal(zn_hf_writer_end(w), 0);
		struct zn_hf_model *m;
		assert_int_equal(zn_hf_open(dir, &m), 0);
		assert_int_equal(zn_hf_read_f32(m, "model.norm.weight", got), 0);
		for (size_t i = 0; i < ARRAY_LEN(v); i++) {
			float want = which ? v[i].f16 : v[i].bf16;
			if (!which && i >= 8 && i <= 9) /* bf16 keeps fp32's range */
				want = zn_bf16_to_f32(zn_f32_to_bf16(v[i].in));
			if (got[i] != want)
				fail_msg("%s: %a became %a, want %a", dtype, (double)v[i].in,
					 (double)got[i], (double)want);
		}
		assert_true(isnan(got[ARRAY_LEN(v)]));
		zn_hf_close(m);
	}
}

/* Values put in pieces of any size, across tensors and shards, make the
 * same files as whole tensors. */
static void test_put_part(void **state)
{
	(void)state;
	struct zn_llama_config c = tiny_cfg();
	struct zn_param_desc d[64];
	size_t n = llama_descs(&c, d), total = 0;
	for (size_t i = 0; i < n; i++)
		total += d[i].numel;
	float *all = malloc(total * sizeof(float));
	assert_non_null(all);
	for (size_t i = 0, o = 0; i < n; o += d[i].numel, i++)
		for (size_t k = 0; k < d[i].numel; k++)
			all[o + k] = value(i, k);
	const char *whole = folder("whole"), *parts = folder("parts");
	write_model(whole, &c, "bfloat16", 3000);
	struct zn_hf_writer *w;
	assert_int_equal(zn_hf_writer_begin(parts, &c, d, n, "bf16", 3000, &w), 0);
	for (size_t o = 0; o < total; o += 77)
		assert_int_equal(zn_hf_writer_put_part(w, all + o, o + 77 <= total ? 77 : total - o), 0);
	/* Past the end. */
	assert_int_equal(zn_hf_writer_put_part(w, all, 1), -EINVAL);
	assert_int_equal(zn_hf_writer_end(w), -EINVAL);
	assert_int_equal(tu_count_entries(parts, NULL, "safetensors", NULL), 0);
	assert_int_equal(zn_hf_writer_begin(parts, &c, d, n, "bf16", 3000, &w), 0);
	for (size_t o = 0; o < total; o += 77)
		assert_int_equal(zn_hf_writer_put_part(w, all + o, o + 77 <= total ? 77 : total - o), 0);
	assert_int_equal(zn_hf_writer_end(w), 0);
	int nshards = tu_count_entries(whole, "model-", NULL, ".safetensors");
	assert_int_equal(tu_count_entries(parts, "model-", NULL, ".safetensors"), nshards);
	for (int i = 1; i <= nshards; i++) {
		char name[64];
		size_t la, lb;
		snprintf(name, sizeof(name), "model-%05d-of-%05d.safetensors", i, nshards);
		char *a = read_text(in(whole, name), &la), *b = read_text(in(parts, name), &lb);
		assert_int_equal(la, lb);
		assert_memory_equal(a, b, la);
		free(a);
		free(b);
	}
	free(all);
}

/* A new save replaces the model files of the old one and nothing else. */
static void test_overwrite(void **state)
{
	(void)state;
	struct zn_llama_config c = tiny_cfg();
	const char *dir = folder("overwrite");
	write_text(in(dir, "tokenizer.json"), "{}");
	write_model(dir, &c, "float32", 3000);
	int before = tu_count_entries(dir, "model-", NULL, ".safetensors");
	assert_true(before > 2);
	write_model(dir, &c, "bfloat16", 0);
	assert_int_equal(tu_count_entries(dir, "model-", NULL, NULL), 0);
	assert_int_equal(access(in(dir, "model.safetensors.index.json"), F_OK), -1);
	assert_int_equal(access(in(dir, "tokenizer.json"), F_OK), 0);
	check_model(dir, &c, "bfloat16");
	write_model(dir, &c, "bfloat16", 4000);
	assert_int_equal(access(in(dir, "model.safetensors"), F_OK), -1);
	check_model(dir, &c, "bfloat16");

	/* Aborted or failed saves leave the folder as it was. */
	char *index = read_text(in(dir, "model.safetensors.index.json"), NULL);
	struct zn_param_desc d[64];
	size_t n = llama_descs(&c, d);
	struct zn_hf_writer *w;
	assert_int_equal(zn_hf_writer_begin(dir, &c, d, n, "float32", 1000, &w), 0);
	float *v = values(0, d[0].numel);
	assert_int_equal(zn_hf_writer_put(w, v), 0);
	assert_int_equal(zn_hf_writer_put(w, v), 0);
	zn_hf_writer_abort(w);
	assert_int_equal(zn_hf_writer_begin(dir, &c, d, n, "float32", 1000, &w), 0);
	assert_int_equal(zn_hf_writer_put(w, v), 0);
	EXPECT_ERROR(zn_hf_writer_end(w), -EINVAL, "1 of", "'model.layers.0.self_attn.q_proj.weight'");
	free(v);
	assert_int_equal(tu_count_entries(dir, NULL, "tmp", NULL), 0);
	char *again = read_text(in(dir, "model.safetensors.index.json"), NULL);
	assert_string_equal(index, again);
	free(index);
	free(again);
	check_model(dir, &c, "bfloat16");
}

static void test_writer_errors(void **state)
{
	(void)state;
	struct zn_llama_config c = tiny_cfg();
	struct zn_param_desc d[64];
	size_t n = llama_descs(&c, d);
	struct zn_hf_writer *w = (struct zn_hf_writer *)1;
	const char *dir = tu_path("writer-errors");

	EXPECT_ERROR(zn_hf_writer_begin(dir, &c, d, n, "int8", 0, &w), -EINVAL, "dtype 'int8'");
	assert_null(w);
	EXPECT_ERROR(zn_hf_writer_begin(dir, &c, d, 0, "float32", 0, &w), -EINVAL, "no tensors");
	struct zn_param_desc dup[2] = { d[0], d[0] };
	EXPECT_ERROR(zn_hf_writer_begin(dir, &c, dup, 2, "float32", 0, &w), -EINVAL,
		     "'model.embed_tokens.weight'", "already used");
	struct zn_param_desc tr = d[1];
	tr.hf_transposed = true;
	EXPECT_ERROR(zn_hf_writer_begin(dir, &c, &tr, 1, "float32", 0, &w), -EINVAL, "transposed (GPT-2");
	struct zn_llama_config g = c;
	snprintf(g.architecture, sizeof(g.architecture), "GPT2LMHeadModel");
	EXPECT_ERROR(zn_hf_writer_begin(dir, &g, d, n, "float32", 0, &w), -ENOTSUP,
		     "'GPT2LMHeadModel'");
	/* The folder cannot be made: its parent is a file. */
	write_text(tu_path("a-file"), "x");
	EXPECT_ERROR(zn_hf_writer_begin(tu_path("a-file/model"), &c, d, n, "float32", 0, &w),
		     -ENOTDIR, "a-file/model");
	assert_int_equal(access(dir, F_OK), -1); /* nothing was made */
	/* Too many tensors put. */
	assert_int_equal(zn_hf_writer_begin(dir, &c, d, 1, "float32", 0, &w), 0);
	float *v = values(0, d[0].numel);
	assert_int_equal(zn_hf_writer_put(w, v), 0);
	EXPECT_ERROR(zn_hf_writer_put(w, v), -EINVAL, "more tensors");
	assert_int_equal(zn_hf_writer_end(w), -EINVAL);
	assert_int_equal(tu_count_entries(dir, NULL, "safetensors", NULL), 0);
	free(v);
	zn_hf_writer_abort(NULL);
}

/* ---- weights: folders made by others ------------------------------------------ */

/* A folder written by Python's json and struct, as the published format
 * says: keys in another order, no __metadata__, no padding (so the data is
 * not aligned), an extra tensor the model does not use, known bit patterns
 * of each dtype. */
static void test_python_folder(void **state)
{
	(void)state;
	if (!have_python())
		skip();
	const char *dir = folder("python");
	const char *script = tu_path("make.py");
	write_text(script,
		   "import json, os, struct, sys\n"
		   "d = sys.argv[1]\n"
		   "def shard(name, tensors):\n"
		   "    h, data = {}, b''\n"
		   "    for tname, dt, shape, raw in tensors:\n"
		   "        h[tname] = {'shape': shape, 'data_offsets': [len(data), len(data) + len(raw)],"
		   " 'dtype': dt}\n"
		   "        data += raw\n"
		   "    j = json.dumps(h).encode()\n"
		   "    open(os.path.join(d, name), 'wb').write(struct.pack('<Q', len(j)) + j + data)\n"
		   "a = [('model.norm.weight', 'BF16', [4], struct.pack('<4H', 0x3f80, 0xc000, 0x0001, 0x7f80)),\n"
		   "     ('model.layers.0.self_attn.rotary_emb.inv_freq', 'F32', [1], struct.pack('<f', 1))]\n"
		   "b = [('lm_head.weight', 'F16', [2, 3], struct.pack('<6H', 0x3c00, 0xbc00, 0x0001, 0x7bff, 0x3555, 0)),\n"
		   "     ('model.embed_tokens.weight', 'F32', [2, 2], struct.pack('<4f', 0.1, -2, 3e-40, 1e30))]\n"
		   "shard('w-a.safetensors', a)\n"
		   "shard('w-b.safetensors', b)\n"
		   "wm = {t[0]: 'w-a.safetensors' for t in a}\n"
		   "wm.update({t[0]: 'w-b.safetensors' for t in b})\n"
		   "json.dump({'weight_map': wm, 'metadata': {'total_size': 0}},\n"
		   "          open(os.path.join(d, 'model.safetensors.index.json'), 'w'))\n");
	char cmd[8192];
	snprintf(cmd, sizeof(cmd), "python3 '%s' '%s'", script, dir);
	assert_int_equal(system(cmd), 0);

	struct zn_hf_model *m;
	if (zn_hf_open(dir, &m) != 0)
		fail_msg("%s", zn_last_error());
	struct zn_param_desc d[3] = {
		desc("model.norm.weight", 4, 0), desc("lm_head.weight", 2, 3),
		desc("model.embed_tokens.weight", 2, 2),
	};
	assert_int_equal(zn_hf_check(m, d, 3), 0);
	float got[6];
	assert_int_equal(zn_hf_read_f32(m, "model.norm.weight", got), 0);
	assert_true(got[0] == 1.0f && got[1] == -2.0f && got[2] == 0x1p-133f && isinf(got[3]));
	assert_int_equal(zn_hf_read_f32(m, "lm_head.weight", got), 0);
	assert_true(got[0] == 1.0f && got[1] == -1.0f && got[2] == 0x1p-24f &&
		    got[3] == 65504.0f && got[4] == 0x1.554p-2f && got[5] == 0.0f);
	assert_int_equal(zn_hf_read_f32(m, "model.embed_tokens.weight", got), 0);
	assert_true(got[0] == 0.1f && got[1] == -2.0f && got[2] == 3e-40f && got[3] == 1e30f);
	assert_int_equal(zn_hf_read_f32_range(m, "lm_head.weight", 3, 3, got), 0);
	assert_true(got[0] == 65504.0f && got[2] == 0.0f);
	EXPECT_ERROR(zn_hf_read_f32_range(m, "lm_head.weight", 4, 3, got), -ERANGE, "w-b.safetensors",
		     "'lm_head.weight'", "[4, 7)", "has 6");
	zn_hf_close(m);
}

/* PyTorch as the oracle for the conversions, both ways: zinc reads what
 * torch wrote in bf16 and fp16 exactly as torch widens it, and writes from
 * fp32 exactly the bits torch's .to(bfloat16/float16) gives. */
static void test_torch_oracle(void **state)
{
	(void)state;
	char py[4096];
	if (!find_torch_python(py, sizeof(py)))
		skip();
	struct zn_llama_config c = tiny_cfg();
	const char *dir = folder("torch");
	const char *script = tu_path("torch_oracle.py");
	write_text(script,
		   "import json, os, struct, sys, torch\n"
		   "d, mode = sys.argv[1], sys.argv[2]\n"
		   "def raw(t):\n"
		   "    return t.contiguous().view(torch.uint8).numpy().tobytes() if t.dtype != torch.bfloat16 \\\n"
		   "        else t.view(torch.int16).numpy().tobytes()\n"
		   "if mode == 'write':\n"
		   "    g = torch.Generator().manual_seed(0)\n"
		   "    ts = {'a.bf16': torch.randn(64, 3, generator=g).to(torch.bfloat16),\n"
		   "          'b.f16': (torch.randn(100, generator=g) * 1e-5).to(torch.float16),\n"
		   "          'c.f32': torch.randn(5, 7, generator=g)}\n"
		   "    h, data = {'__metadata__': {'format': 'pt'}}, b''\n"
		   "    for k, t in ts.items():\n"
		   "        r = raw(t)\n"
		   "        h[k] = {'dtype': {torch.bfloat16: 'BF16', torch.float16: 'F16', torch.float32: 'F32'}[t.dtype],\n"
		   "                'shape': list(t.shape), 'data_offsets': [len(data), len(data) + len(r)]}\n"
		   "        data += r\n"
		   "        open(os.path.join(d, k + '.expect'), 'wb').write(raw(t.float()))\n"
		   "    j = json.dumps(h).encode()\n"
		   "    open(os.path.join(d, 'model.safetensors'), 'wb').write(struct.pack('<Q', len(j)) + j + data)\n"
		   "else:\n"
		   "    dt = {'BF16': torch.bfloat16, 'F16': torch.float16}[mode]\n"
		   "    b = open(os.path.join(d, 'model.safetensors'), 'rb').read()\n"
		   "    n = struct.unpack('<Q', b[:8])[0]\n"
		   "    h = json.loads(b[8:8 + n])\n"
		   "    bad = 0\n"
		   "    for k, e in h.items():\n"
		   "        if k == '__metadata__': continue\n"
		   "        s, t = e['data_offsets']\n"
		   "        src = torch.frombuffer(bytearray(open(os.path.join(d, k + '.in'), 'rb').read()), dtype=torch.float32)\n"
		   "        want = raw(src.to(dt))\n"
		   "        got = b[8 + n + s:8 + n + t]\n"
		   "        if want != got: print('#', k, 'differs from torch'); bad += 1\n"
		   "    sys.exit(1 if bad else 0)\n");
	char cmd[8192];
	snprintf(cmd, sizeof(cmd), "'%s' '%s' '%s' write", py, script, dir);
	assert_int_equal(system(cmd), 0);
	struct zn_hf_model *m;
	assert_int_equal(zn_hf_open(dir, &m), 0);
	static const char *const names[] = { "a.bf16", "b.f16", "c.f32" };
	for (size_t i = 0; i < ARRAY_LEN(names); i++) {
		size_t len;
		char *want = read_text(in(dir, (snprintf(py, sizeof(py), "%s.expect", names[i]), py)),
				       &len);
		float *got = malloc(len);
		assert_int_equal(zn_hf_numel(m, names[i]) * 4, len);
		assert_int_equal(zn_hf_read_f32(m, names[i], got), 0);
		assert_memory_equal(got, want, len);
		free(got);
		free(want);
	}
	zn_hf_close(m);

	/* fp32 in, each tensor's inputs saved for torch to convert. */
	for (int which = 0; which < 2; which++) {
		struct zn_param_desc d[64];
		size_t n = llama_descs(&c, d);
		struct zn_hf_writer *w;
		assert_int_equal(zn_hf_writer_begin(dir, &c, d, n, which ? "float16" : "bfloat16", 0,
						    &w), 0);
		for (size_t i = 0; i < n; i++) {
			float *v = values(i, d[i].numel);
			char name[ZN_PARAM_NAME_MAX + 8];
			if (snprintf(name, sizeof(name), "%.*s.in", ZN_PARAM_NAME_MAX - 1, d[i].name) >=
			    (int)sizeof(name))
				fail();
			FILE *f = fopen(in(dir, name), "wb");
			assert_non_null(f);
			assert_int_equal(fwrite(v, sizeof(float), d[i].numel, f), d[i].numel);
			fclose(f);
			assert_int_equal(zn_hf_writer_put(w, v), 0);
			free(v);
		}
		assert_int_equal(zn_hf_writer_end(w), 0);
		find_torch_python(py, sizeof(py));
		snprintf(cmd, sizeof(cmd), "'%s' '%s' '%s' %s", py, script, dir,
			 which ? "F16" : "BF16");
		assert_int_equal(system(cmd), 0);
	}
}

/* ---- bad folders ---------------------------------------------------------------- */

static void test_bad_folders(void **state)
{
	(void)state;
	struct zn_llama_config c = tiny_cfg();
	struct zn_param_desc d[64];
	size_t n = llama_descs(&c, d);
	struct zn_hf_model *m = (struct zn_hf_model *)1;
	char path[4096];

	/* Not a folder, an empty one, PyTorch .bin weights. */
	EXPECT_ERROR(zn_hf_open(tu_path("nowhere"), &m), -ENOENT, "nowhere", "does not exist");
	assert_null(m);
	const char *empty = folder("empty");
	EXPECT_ERROR(zn_hf_open(empty, &m), -ENOENT, "empty", "model.safetensors.index.json");
	write_text(in(empty, "pytorch_model.bin"), "x");
	EXPECT_ERROR(zn_hf_open(empty, &m), -ENOENT, "PyTorch .bin", "safe_serialization");

	/* A missing shard: open fails naming it, the index and a tensor. */
	const char *dir = folder("missing-shard");
	write_model(dir, &c, "bfloat16", 2000);
	snprintf(path, sizeof(path), "%s", in(dir, "model-00002-of-00009.safetensors"));
	int nshards = tu_count_entries(dir, "model-", NULL, ".safetensors");
	snprintf(path, sizeof(path), "%s/model-00002-of-%05d.safetensors", dir, nshards);
	assert_int_equal(unlink(path), 0);
	EXPECT_ERROR(zn_hf_open(dir, &m), -ENOENT, path, "is missing",
		     "model.safetensors.index.json", "'model.layers.");

	/* The index puts a tensor in a shard that does not hold it. */
	dir = folder("wrong-shard");
	write_model(dir, &c, "bfloat16", 2000);
	char *index = read_text(in(dir, "model.safetensors.index.json"), NULL);
	char *at = strstr(index, "\"model.norm.weight\": \"model-");
	assert_non_null(at);
	at += strlen("\"model.norm.weight\": \"model-");
	at[4] = at[4] == '1' ? '2' : '1'; /* 00001 <-> 00002 */
	write_text(in(dir, "model.safetensors.index.json"), index);
	assert_int_equal(zn_hf_open(dir, &m), 0);
	EXPECT_ERROR(zn_hf_check(m, d, n), -ENOENT, "'model.norm.weight'", "-of-",
		     "the shard has no such tensor");
	EXPECT_ERROR(zn_hf_read_f32(m, "model.norm.weight", (float *)path), -ENOENT,
		     "'model.norm.weight'");
	zn_hf_close(m);
	/* The index has no entry for a tensor the model needs. */
	at = strstr(index, "    \"model.norm.weight\"");
	memmove(at, strchr(at, '\n') + 1, strlen(strchr(at, '\n') + 1) + 1);
	write_text(in(dir, "model.safetensors.index.json"), index);
	assert_int_equal(zn_hf_open(dir, &m), 0);
	EXPECT_ERROR(zn_hf_check(m, d, n), -ENOENT, "model.safetensors.index.json",
		     "names no shard for tensor 'model.norm.weight'");
	assert_int_equal(zn_hf_numel(m, "model.norm.weight"), 0);
	zn_hf_close(m);
	free(index);

	/* Damaged indexes. */
	write_text(in(dir, "model.safetensors.index.json"), "{\"weight_map\": [1]}");
	EXPECT_ERROR(zn_hf_open(dir, &m), -EINVAL, "model.safetensors.index.json", "weight_map");
	write_text(in(dir, "model.safetensors.index.json"),
		   "{\"weight_map\": {\"x\": \"../../etc/passwd\"}}");
	EXPECT_ERROR(zn_hf_open(dir, &m), -EINVAL, "'x'", "not to a file name");
	write_text(in(dir, "model.safetensors.index.json"),
		   "{\"weight_map\": {\"x\": \"a.safetensors\", \"x\": \"b.safetensors\"}}");
	EXPECT_ERROR(zn_hf_open(dir, &m), -EINVAL, "'x' appears twice");
	write_text(in(dir, "model.safetensors.index.json"), "{\"weight_map\": {\"x\": ");
	EXPECT_ERROR(zn_hf_open(dir, &m), -EINVAL, "model.safetensors.index.json", "bad JSON");

	/* Shapes that disagree with config.json. */
	dir = folder("shapes");
	write_model(dir, &c, "float32", 0);
	assert_int_equal(zn_hf_open(dir, &m), 0);
	struct zn_param_desc wrong[64];
	memcpy(wrong, d, sizeof(wrong));
	wrong[2].shape[0] = 3; /* k_proj of 3 rows */
	EXPECT_ERROR(zn_hf_check(m, wrong, n), -EINVAL, "model.safetensors",
		     "'model.layers.0.self_attn.k_proj.weight'", "shape [8, 16]", "needs [3, 16]");
	memcpy(wrong, d, sizeof(wrong));
	wrong[n - 2] = desc("model.norm.weight", 16, 1);
	EXPECT_ERROR(zn_hf_check(m, wrong, n), -EINVAL, "'model.norm.weight'", "[16]", "[16, 1]");
	memcpy(wrong, d, sizeof(wrong));
	wrong[0].hf_transposed = true;
	EXPECT_ERROR(zn_hf_check(m, wrong, n), -ENOTSUP, "transposed");
	zn_hf_close(m);

	/* A dtype zinc does not convert, beside a tensor it does. */
	dir = folder("dtype");
	int32_t q[16 * 40] = { 0 };
	float norm[16] = { 0 };
	struct zn_st_tensor st[2] = {
		{ .name = "model.embed_tokens.weight", .dtype = ZN_ST_I32, .ndim = 2,
		  .shape = { 40, 16 }, .data = q, .bytes = sizeof(q) },
		{ .name = "model.norm.weight", .dtype = ZN_ST_F32, .ndim = 1, .shape = { 16 },
		  .data = norm, .bytes = sizeof(norm) },
	};
	assert_int_equal(zn_st_write(in(dir, "model.safetensors"), st, 2, NULL, 0), 0);
	assert_int_equal(zn_hf_open(dir, &m), 0);
	EXPECT_ERROR(zn_hf_check(m, d, 1), -ENOTSUP, "model.safetensors",
		     "'model.embed_tokens.weight'", "is I32");
	EXPECT_ERROR(zn_hf_read_f32(m, "model.embed_tokens.weight", (float *)q), -ENOTSUP,
		     "'model.embed_tokens.weight'");
	assert_int_equal(zn_hf_check(m, &d[n - 2], 1), 0);
	zn_hf_close(m);

	/* Truncated shards: inside the 8-byte length, inside the header
	 * (its length beyond the file), inside the data. */
	static const struct {
		long keep; /* bytes kept; < 0: from the end */
		const char *needle;
	} cuts[] = {
		{ 5, "shorter than 8 bytes" },
		{ 40, "header length" },
		{ -10, "past the end of the file" },
	};
	for (size_t i = 0; i < ARRAY_LEN(cuts); i++) {
		dir = folder("truncated");
		write_model(dir, &c, "bfloat16", 2000);
		nshards = tu_count_entries(dir, "model-", NULL, ".safetensors");
		snprintf(path, sizeof(path), "%s/model-00003-of-%05d.safetensors", dir, nshards);
		struct stat sb;
		assert_int_equal(stat(path, &sb), 0);
		assert_int_equal(truncate(path, cuts[i].keep >= 0 ? cuts[i].keep
								   : sb.st_size + cuts[i].keep), 0);
		EXPECT_ERROR(zn_hf_open(dir, &m), -EINVAL, path, cuts[i].needle,
			     "model.safetensors.index.json", "'model.layers.");
		/* The single-file kind names its file. */
		dir = folder("truncated-single");
		write_model(dir, &c, "bfloat16", 0);
		snprintf(path, sizeof(path), "%s/model.safetensors", dir);
		assert_int_equal(stat(path, &sb), 0);
		assert_int_equal(truncate(path, cuts[i].keep >= 0 ? cuts[i].keep
								   : sb.st_size + cuts[i].keep), 0);
		EXPECT_ERROR(zn_hf_open(dir, &m), -EINVAL, path, cuts[i].needle);
	}
	/* A header length far beyond the file. */
	dir = folder("huge-header");
	uint64_t huge[3] = { 1ull << 20, 0, 0 };
	FILE *f = fopen(in(dir, "model.safetensors"), "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(huge, sizeof(huge), 1, f), 1);
	fclose(f);
	EXPECT_ERROR(zn_hf_open(dir, &m), -EINVAL, "huge-header/model.safetensors",
		     "header length 1048576 does not fit the file (24 bytes)");
}

static int teardown(void **state)
{
	(void)state;
	tu_scratch_cleanup();
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_config_llama31),
		cmocka_unit_test(test_config_variants),
		cmocka_unit_test(test_config_errors),
		cmocka_unit_test(test_config_write),
		cmocka_unit_test(test_round_trip_sharded),
		cmocka_unit_test(test_single_file),
		cmocka_unit_test(test_rounding),
		cmocka_unit_test(test_put_part),
		cmocka_unit_test(test_overwrite),
		cmocka_unit_test(test_writer_errors),
		cmocka_unit_test(test_python_folder),
		cmocka_unit_test(test_torch_oracle),
		cmocka_unit_test(test_bad_folders),
	};
	return tu_run_group_tests(tests, NULL, teardown);
}
