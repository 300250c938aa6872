#!/usr/bin/env python3
"""Write the hand-made seed inputs of tests/fuzz/corpus/ (run from anywhere;
existing files of the same names are replaced, others -- crash regressions
among them -- are left alone).  The seeds copied from examples/ and
tests/data/ are copied here too, so that one command remakes them all:

    python3 tests/fuzz/make_seeds.py
"""
import json
import os
import shutil
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def copy(target, src, name=None):
    with open(os.path.join(ROOT, src), "rb") as f:
        put(target, name or os.path.basename(src), f.read())


def safetensors(tensors, metadata=None, pad=b""):
    """tensors: [(name, dtype, shape, bytes)] -> a safetensors file."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode() + pad
    return struct.pack("<Q", len(h)) + h + data


EXAMPLES = ["examples/ds_config.json", "examples/gpt2-124m.yaml", "examples/llama-3b-nvme.yaml",
            "examples/llama-finetune.yaml", "examples/nvme-aio.yaml", "examples/out-of-core.yaml",
            "examples/tiny.yaml"]
HF_CONFIGS = ["tests/data/llama-3-70b.json", "tests/data/llama-3-8b.json",
              "tests/data/llama-3.2-3b.json", "examples/models/llama-3b-untied.json"]


def doc():
    for src in EXAMPLES + HF_CONFIGS:
        copy("doc", src)
    put("doc", "anchors.yaml", "a: &x {b: [1, 2, *x]}\nc: *x\nd: !!str 3\n? [k]\n: v\n")
    put("doc", "scalars.json", '{"s": "a\\u0000b\\n", "i": -12, "f": 1.5e-3, "t": true, '
        '"n": null, "e": "", "l": [[], {}, [1, [2, [3]]]]}')
    put("doc", "two-docs.yaml", "a: 1\n---\nb: 2\n")
    put("doc", "dup-keys.json", '{"a": 1, "a": 2}')
    put("doc", "comment.json", '{\n  // not JSON\n  "a": 1\n}\n')
    put("doc", "bom.json", b'\xef\xbb\xbf{"a": 1}')
    put("doc", "bad-utf8.yaml", b"a: \xff\xfe\n")
    put("doc", "deep.json", "[" * 99 + "]" * 99)
    put("doc", "block.yaml", "a: |\n  line\n  line\nb: >-\n  folded\n  text\n- x\n")


def config():
    for src in EXAMPLES:
        copy("config", src)
    put("config", "sets.yaml", "train_micro_batch_size_per_gpu: 2\n\0"
        "zero_optimization.stage=3\0zero_optimization.offload_param.device=nvme\0"
        "model.n_layer=2\0optimizer={type: AdamW, params: {lr: 0.001}}\0a.b.c=[1]")
    put("config", "empty-set", "\0train_batch_size=8")
    put("config", "set-not-section", "fp16: 1\n\0fp16.enabled=true")
    put("config", "set-bad", "{}\0=1\0a..b=2\0novalue\0x=[")
    put("config", "sizes", "aio: {block_size: 1M}\0aio.block_size=128KiB\0"
        "zero_optimization.sub_group_size=5e8\0x= 16 GB \0y=1.5e400\0z=17179869184T")
    put("config", "huge-number.json", '{"train_batch_size": 1e300, "gradient_clipping": 2e308}')
    put("config", "types.yaml", "fp16: {enabled: yes, loss_scale: -1}\nbf16: []\n"
        "zero_optimization: {stage: '3', sub_group_size: 0x10}\n")


def st():
    f32 = struct.pack("<4f", 1, 2, 3, 4)
    put("safetensors", "two.safetensors", safetensors(
        [("a", "F32", [2, 2], f32), ("b", "BF16", [3], b"\x80\x3f" * 3)],
        metadata={"format": "pt", "zinc.model": "gpt2 n_layer=1"}))
    put("safetensors", "all-dtypes.safetensors", safetensors(
        [(d, d, [1], b"\0" * s) for d, s in [("F64", 8), ("F32", 4), ("F16", 2), ("BF16", 2),
                                             ("I64", 8), ("I32", 4), ("I16", 2), ("I8", 1),
                                             ("U8", 1), ("BOOL", 1)]], pad=b"   "))
    put("safetensors", "empty.safetensors", safetensors([]))
    put("safetensors", "scalar.safetensors", safetensors([("s", "F16", [], b"\0\x3c")]))
    put("safetensors", "zero-size.safetensors", safetensors([("z", "F32", [0, 5], b"")]))
    put("safetensors", "bad-length", struct.pack("<Q", 1 << 40) + b"{}")
    put("safetensors", "short", b"\x02\0\0")
    h = (b'{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},'
         b'"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}')
    put("safetensors", "overlap.safetensors", struct.pack("<Q", len(h)) + h + b"abc")



def hf_config():
    for src in HF_CONFIGS:
        copy("hf_config", src)
    base = {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "intermediate_size": 128, "vocab_size": 256, "max_position_embeddings": 128,
            "rms_norm_eps": 1e-6, "sliding_window": None, "bos_token_id": [1, 2],
            "eos_token_id": None, "hidden_act": "silu", "dtype": "float16"}
    put("hf_config", "mistral.json", json.dumps(base))
    qwen = dict(base, architectures=["Qwen2ForCausalLM"], model_type="qwen2",
                use_sliding_window=False, rope_parameters={"rope_theta": 1e6, "rope_type": "default"},
                tie_word_embeddings=True, head_dim=None)
    put("hf_config", "qwen2.json", json.dumps(qwen))
    put("hf_config", "model-type-only.json", json.dumps(
        {k: v for k, v in base.items() if k != "architectures"}))
    put("hf_config", "rope-bad.json", json.dumps(dict(
        base, rope_scaling={"type": "llama3", "factor": 8, "low_freq_factor": 4,
                            "high_freq_factor": 1, "original_max_position_embeddings": 8192})))
    put("hf_config", "not-object.json", "[1, 2]")
    put("hf_config", "yaml-not-json", "hidden_size: 4\n")
    put("hf_config", "heads.json", json.dumps(dict(base, hidden_size=65, head_dim=0,
                                                   num_key_value_heads=3)))


def hf_index():
    idx = {"metadata": {"total_size": 16}, "weight_map": {"w": "a.safetensors", "v": "b.safetensors"}}
    put("hf_index", "two-shards.json", json.dumps(idx, indent=2))
    put("hf_index", "swapped.json", json.dumps({"weight_map": {"w": "b.safetensors",
                                                                "v": "a.safetensors"}}))
    put("hf_index", "missing-shard.json", json.dumps({"weight_map": {
        "w": "a.safetensors", "x": "model-00002-of-00002.safetensors"}}))
    put("hf_index", "path.json", json.dumps({"weight_map": {"w": "../a.safetensors"}}))
    put("hf_index", "dup.json", '{"weight_map": {"w": "a.safetensors", "w": "a.safetensors"}}')
    put("hf_index", "empty.json", '{"weight_map": {}}')
    put("hf_index", "no-map.json", '{"metadata": {}}')
    put("hf_index", "not-strings.json", '{"weight_map": {"w": 1, "2": ["a"]}}')


def data():
    def shard(tokens, magic=20240520, version=1, width=2, count=None):
        h = [0] * 256
        h[0], h[1], h[2] = magic, version, len(tokens) if count is None else count
        fmt = "<%d%s" % (len(tokens), "H" if width == 2 else "I")
        return struct.pack("<256i", *h) + struct.pack(fmt, *tokens)

    def mask(values, count=None, magic=20240524, version=1):
        h = [0] * 256
        h[0], h[1], h[2] = magic, version, len(values) if count is None else count
        return struct.pack("<256i", *h) + bytes(values)

    def inp(b, t, flags, seed, s, m=b""):
        return bytes([b, t, flags, seed]) + struct.pack("<I", len(s)) + s + m

    toks = list(range(1, 40))
    put("data", "u16", inp(1, 3, 0, 0, shard(toks)))
    put("data", "u16-shuffle-val", inp(2, 3, 1 | 8, 7, shard(toks)))
    put("data", "u16-train-vocab", inp(0, 7, 4 | 16, 1, shard(toks[:20] + [60000] + toks)))
    put("data", "u32", inp(1, 4, 0, 0, shard([70000, 1, 2, 3] * 10, 20240801, 7, 4)))
    put("data", "u32-window", inp(0, 2, 0, 3, shard([1, 2, 3, 4, 5, 6], 20240801, 7, 4)))
    put("data", "masked", inp(1, 3, 2, 0, shard(toks), mask([0, 1] * 19 + [1])))
    put("data", "mask-bad-value", inp(1, 3, 2 | 1, 5, shard(toks), mask([2] * len(toks))))
    put("data", "mask-wrong-count", inp(1, 3, 2, 0, shard(toks), mask([1] * 5, count=39)))
    put("data", "bad-count", inp(1, 3, 0, 0, shard(toks, count=1 << 30)))
    put("data", "short", inp(1, 3, 0, 0, shard([1, 2])))
    put("data", "mask-as-shard", inp(1, 3, 0, 0, mask([1] * 10)))


def llmc():
    L, NH, C, V, Vp, T = 1, 1, 4, 8, 128, 4
    numel = Vp * C + T * C + L * (C + C + 3 * C * C + 3 * C + C * C + C + C + C + 4 * C * C
                                  + 4 * C + C * 4 * C + C) + C + C
    h = [0] * 256
    h[:8] = [20240326, 3, T, V, L, NH, C, Vp]
    good = struct.pack("<256i", *h) + struct.pack("<%df" % numel, *[i / 64 for i in range(numel)])
    put("llmc", "tiny.bin", good)
    put("llmc", "truncated.bin", good[:2048])
    h2 = list(h)
    h2[1] = 5
    put("llmc", "bf16-version.bin", struct.pack("<256i", *h2) + good[1024:])
    h3 = list(h)
    h3[6] = 768
    put("llmc", "other-shape.bin", struct.pack("<256i", *h3))
    put("llmc", "header-only", good[:1024])


def ckpt_meta():
    put("ckpt_meta", "gpt2", "gpt2 n_layer=2 n_head=2 n_embd=8 vocab_size=64 seq_len=16")
    put("ckpt_meta", "gpt2-huge", "gpt2 n_layer=1024 n_head=1 n_embd=2147483647 "
        "vocab_size=2147483647 seq_len=2147483647")
    put("ckpt_meta", "gpt2-wide", "gpt2 n_layer=1024 n_head=1 n_embd=2147483647 vocab_size=50257 "
        "seq_len=2147483647")
    put("ckpt_meta", "llama",
        "llama arch=LlamaForCausalLM L=2 C=64 NH=4 NKV=2 HS=16 I=128 V=256 maxT=128 "
        "eps=0x1.4f8b58p-17 theta=0x1.e848p+18 rope=1 factor=0x1p+5 low=0x1p+0 high=0x1p+2 "
        "orig=8192 tie=1 qkv_bias=0 mlp_bias=0 std=0x1.47ae14p-6 bos=1 eos=-1 dtype=bfloat16")
    put("ckpt_meta", "llama-dashes",
        "llama arch=- L=1 C=8 NH=1 NKV=1 HS=8 I=16 V=32 maxT=8 eps=0x1p-20 theta=0x1.388p+13 "
        "rope=0 factor=0x0p+0 low=0x0p+0 high=0x0p+0 orig=0 tie=0 qkv_bias=1 mlp_bias=1 "
        "std=0x0p+0 bos=-1 eos=-1 dtype=-")
    put("ckpt_meta", "data-pos-hex", "6e706f73010000000123456789abcdef" + "00" * 24)
    put("ckpt_meta", "other", "mamba n_layer=2")
    put("ckpt_meta", "tile-rows", "model.embed_tokens.weight:7;lm_head.weight:32")
    put("ckpt_meta", "tile-rows-bad", "lm_head.weight:33;model.norm.weight:1;x:;:4;lm_head.weight")


if __name__ == "__main__":
    doc()
    config()
    st()
    hf_config()
    hf_index()
    data()
    llmc()
    ckpt_meta()
