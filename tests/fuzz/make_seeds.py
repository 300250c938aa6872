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


if __name__ == "__main__":
    doc()
    config()
    st()
