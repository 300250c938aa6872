#!/usr/bin/env python3
"""tools/hf_tokenize.py: a model's tokenizer in, llm.c shards and loss masks
out (TAP for meson).

No tokenizer library is needed: fake `transformers` and `tokenizers`
packages are put first on PYTHONPATH.  Their tokenizer maps character c to
token 3 + ord(c) % 256 (BOS 1, EOS 2; role markers 280..282 in the chat
template), plus 65600 for the tokenizer called "big", whose vocabulary
(70000) needs the uint32 kind of shard.  The shards are read back here by
the rules of include/zinc/data.h, byte by byte.
"""
import glob
import json
import os
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tap import TapRunner  # noqa: E402

ROOT = os.environ.get("ZINC_SOURCE_ROOT", os.path.join(os.path.dirname(__file__), ".."))
SCRIPT = os.path.join(ROOT, "tools", "hf_tokenize.py")

t = TapRunner(scratch=True)
check = t.test

FAKE_TRANSFORMERS = '''
ROLES = {"system": 280, "user": 281, "assistant": 282}

class _Tok:
    def __init__(self, name):
        self.off = 65600 if name == "big" else 0
        self.bos_token_id, self.eos_token_id = 1, 2
        self.chat_template = None if name == "nochat" else "fake"

    def __len__(self):
        return 70000 if self.off else 300

    def _ids(self, text):
        return [self.off + 3 + ord(c) % 256 for c in text]

    def encode(self, text, add_special_tokens=True):
        return ([1] if add_special_tokens else []) + self._ids(text)

    def apply_chat_template(self, messages, tokenize=True, add_generation_prompt=False):
        assert tokenize
        ids = [1]
        for m in messages:
            ids += [ROLES[m["role"]]] + self._ids(m["content"]) + [2]
        return ids + ([ROLES["assistant"]] if add_generation_prompt else [])

class AutoTokenizer:
    @staticmethod
    def from_pretrained(name):
        if name == "missing":
            raise OSError("missing is not a model folder or a hub name")
        return _Tok(name)
'''

FAKE_TOKENIZERS = '''
class _Enc:
    def __init__(self, ids):
        self.ids = ids

class Tokenizer:
    @staticmethod
    def from_file(path):
        assert path.endswith("tokenizer.json"), path
        return Tokenizer()

    def get_vocab_size(self, with_added_tokens=True):
        return 300

    def token_to_id(self, s):
        return {"</s>": 2}.get(s)

    def encode(self, text, add_special_tokens=True):
        return _Enc(([1] if add_special_tokens else []) + [3 + ord(c) % 256 for c in text])
'''

UNINSTALLED = 'raise ImportError("No module named {0!r} (fake)")\n'


def fakes(d, installed=True):
    root = os.path.join(d, "fakes" if installed else "absent")
    for name, body in (("transformers", FAKE_TRANSFORMERS), ("tokenizers", FAKE_TOKENIZERS)):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        with open(os.path.join(root, name, "__init__.py"), "w") as f:
            f.write(body if installed else UNINSTALLED.format(name))
    return root


def run(d, *args, installed=True):
    env = dict(os.environ, PYTHONPATH=fakes(d, installed))
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                          env=env)


def ok(p):
    assert p.returncode == 0, f"exit {p.returncode}: {p.stderr}"
    return p


def error(p, *needles):
    assert p.returncode == 2, f"exit {p.returncode}, stderr: {p.stderr}"
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hf_tokenize: "), p.stderr
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"
    return lines[0]


def ids(text, off=0):
    return [off + 3 + ord(c) % 256 for c in text]


def read_shard(path):
    """Tokens of an llm.c shard, by data.h's rules."""
    with open(path, "rb") as f:
        b = f.read()
    magic, version, n = struct.unpack_from("<3i", b)
    assert struct.unpack_from("<253i", b, 12) == (0,) * 253, f"{path}: header not zeroed"
    if magic == 20240520:
        assert version == 1, f"{path}: version {version}"
        width, kind = 2, "H"
    else:
        assert (magic, version) == (20240801, 7), f"{path}: magic {magic} version {version}"
        width, kind = 4, "I"
    assert len(b) == 1024 + width * n, f"{path}: {len(b)} bytes for {n} tokens"
    return list(struct.unpack_from(f"<{n}{kind}", b, 1024)), width


def read_mask(shard):
    """The loss mask beside a shard (NAME.bin -> NAME.mask), or None."""
    path = shard[:-4] + ".mask"
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        b = f.read()
    magic, version, n = struct.unpack_from("<3i", b)
    assert (magic, version) == (20240524, 1), f"{path}: {magic} {version}"
    assert len(b) == 1024 + n, f"{path}: {len(b)} bytes for {n}"
    m = list(b[1024:])
    assert set(m) <= {0, 1}, f"{path}: values {set(m)}"
    return m


def shards(d, split="train", prefix="data"):
    return sorted(glob.glob(os.path.join(d, f"{prefix}_{split}_*.bin")))


def stream(d, split="train", prefix="data"):
    toks, masks = [], []
    for s in shards(d, split, prefix):
        tk, _ = read_shard(s)
        m = read_mask(s)
        assert m is not None and len(m) == len(tk), f"{s}: mask {m and len(m)} for {len(tk)}"
        toks += tk
        masks += m
    return toks, masks


def jsonl(d, name, records):
    path = os.path.join(d, name)
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return path


@check
def prompt_response_masks(d):
    src = jsonl(d, "sft.jsonl", [{"prompt": "Hi?", "response": "Yo."},
                                 {"prompt": "2+2", "response": "4"}])
    out = os.path.join(d, "out")
    p = ok(run(d, "--tokenizer", "small", "--out", out, src))
    assert "uint16" in p.stdout, p.stdout
    toks, masks = stream(out)
    want = [1] + ids("Hi?") + ids("Yo.") + [2] + [1] + ids("2+2") + ids("4") + [2]
    wmask = [0] * 4 + [1] * 4 + [0] * 4 + [1] * 2
    assert toks == want, (toks, want)
    assert masks == wmask, (masks, wmask)
    assert read_shard(shards(out)[0])[1] == 2
    # Only the final names remain.
    assert sorted(os.listdir(out)) == ["data_train_000000.bin", "data_train_000000.mask"]


@check
def large_vocabulary_is_uint32(d):
    src = jsonl(d, "sft.jsonl", [{"prompt": "ab", "response": "c"}])
    out = os.path.join(d, "out")
    p = ok(run(d, "--tokenizer", "big", "--out", out, src))
    assert "uint32" in p.stdout, p.stdout
    toks, masks = stream(out)
    assert toks == [1] + ids("ab", 65600) + ids("c", 65600) + [2], toks
    assert masks == [0, 0, 0, 1, 1]
    assert read_shard(shards(out)[0])[1] == 4


@check
def chat_template_masks_assistant_turns(d):
    conv = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q1"},
            {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"},
            {"role": "assistant", "content": "A22"}]
    src = jsonl(d, "chat.jsonl", [{"messages": conv}])
    out = os.path.join(d, "out")
    ok(run(d, "--tokenizer", "small", "--out", out, src))
    toks, masks = stream(out)
    want, wmask = [1], [0]
    for m in conv:
        part = [{"system": 280, "user": 281, "assistant": 282}[m["role"]]] + ids(m["content"]) + [2]
        want += part
        # The role marker is the generation prompt: not counted.
        wmask += [0] + [1] * (len(part) - 1) if m["role"] == "assistant" else [0] * len(part)
    assert toks == want, (toks, want)
    assert masks == wmask, (masks, wmask)
    # Without a chat template: a clear refusal naming the record.
    error(run(d, "--tokenizer", "nochat", "--out", os.path.join(d, "o2"), src),
          "chat.jsonl:1", "no chat template")


@check
def text_files_have_no_masks(d):
    a, b = os.path.join(d, "a.txt"), os.path.join(d, "b.txt")
    for path, text in ((a, "hello"), (b, "héllo wörld")):
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    out = os.path.join(d, "out")
    ok(run(d, "--tokenizer", "small", "--out", out, os.path.join(d, "*.txt")))
    (s,) = shards(out)
    toks, _ = read_shard(s)
    assert toks == [1] + ids("hello") + [2] + [1] + ids("héllo wörld") + [2], toks
    assert read_mask(s) is None
    # --no-eos, and {"text": ...} records mixed with prompts: masks then
    # cover every shard, 1 on the text.
    src = jsonl(d, "mix.jsonl", [{"text": "ab"}, {"prompt": "c", "response": "d"}])
    ok(run(d, "--tokenizer", "small", "--out", out, "--no-eos", "--force", src))
    toks, masks = stream(out)
    assert toks == [1] + ids("ab") + [1] + ids("c") + ids("d"), toks
    assert masks == [1, 1, 1, 0, 0, 1], masks


@check
def shards_and_val_split(d):
    recs = [{"prompt": "p" * (i % 5 + 1), "response": "r" * (i % 3 + 1)} for i in range(40)]
    src = jsonl(d, "sft.jsonl", recs)
    whole = os.path.join(d, "whole")
    ok(run(d, "--tokenizer", "small", "--out", whole, src))
    all_t, all_m = stream(whole)
    out = os.path.join(d, "out")
    ok(run(d, "--tokenizer", "small", "--out", out, "--shard-tokens", "50",
           "--val-fraction", "0.25", "--prefix", "sft", src))
    tr, trm = stream(out, "train", "sft")
    va, vam = stream(out, "val", "sft")
    nval = -(-len(all_t) * 25 // 100)  # ceil
    assert len(va) == nval, (len(va), nval)
    assert tr + va == all_t and trm + vam == all_m
    for s in shards(out, "train", "sft")[:-1]:
        assert len(read_shard(s)[0]) == 50, s
    assert len(shards(out, "train", "sft")) == -(-(len(all_t) - nval) // 50)


@check
def existing_shards_need_force(d):
    src = jsonl(d, "sft.jsonl", [{"prompt": "a" * 30, "response": "b" * 30}])
    out = os.path.join(d, "out")
    ok(run(d, "--tokenizer", "small", "--out", out, "--shard-tokens", "10", src))
    n = len(shards(out))
    assert n == 7, n
    before = sorted(os.listdir(out))
    error(run(d, "--tokenizer", "small", "--out", out, src), "data_train_000000", "--force")
    assert sorted(os.listdir(out)) == before
    # --force: the new set, and the old shards (and masks) it does not replace are gone.
    ok(run(d, "--tokenizer", "small", "--out", out, "--force", src))
    assert sorted(os.listdir(out)) == ["data_train_000000.bin", "data_train_000000.mask"]
    # Other prefixes are not ours.
    ok(run(d, "--tokenizer", "small", "--out", out, "--prefix", "other", src))
    assert len(os.listdir(out)) == 4


@check
def tokenizers_backend(d):
    tokdir = os.path.join(d, "tok")
    os.makedirs(tokdir)
    open(os.path.join(tokdir, "tokenizer.json"), "w").write("{}")
    with open(os.path.join(tokdir, "tokenizer_config.json"), "w") as f:
        json.dump({"eos_token": {"content": "</s>"}}, f)
    src = jsonl(d, "sft.jsonl", [{"prompt": "x", "response": "y"}])
    out = os.path.join(d, "out")
    ok(run(d, "--tokenizer", tokdir, "--backend", "tokenizers", "--out", out, src))
    toks, masks = stream(out)
    assert toks == [1] + ids("x") + ids("y") + [2] and masks == [0, 0, 1, 1], (toks, masks)
    os.unlink(os.path.join(tokdir, "tokenizer_config.json"))
    error(run(d, "--tokenizer", tokdir, "--backend", "tokenizers", "--out", out, "--force",
              src), "no EOS token", "--eos-id")
    ok(run(d, "--tokenizer", tokdir, "--backend", "tokenizers", "--out", out, "--force",
           "--eos-id", "7", src))
    assert stream(out)[0][-1] == 7


@check
def bad_input(d):
    out = os.path.join(d, "out")
    src = jsonl(d, "sft.jsonl", [{"prompt": "x", "response": "y"}])
    with open(src, "a") as f:
        f.write("{not json\n")
    error(run(d, "--tokenizer", "small", "--out", out, src), "sft.jsonl:2", "not JSON")
    bad = jsonl(d, "bad.jsonl", [{"prompt": "x"}])
    error(run(d, "--tokenizer", "small", "--out", out, bad), "bad.jsonl:1",
          "prompt and response must both be strings")
    bad = jsonl(d, "other.jsonl", [{"question": "x"}])
    error(run(d, "--tokenizer", "small", "--out", out, bad), "other.jsonl:1", "needs")
    error(run(d, "--tokenizer", "small", "--out", out, os.path.join(d, "nothing*.txt")),
          "matches no file")
    error(run(d, "--tokenizer", "missing", "--out", out, src), "could not load", "missing")
    error(run(d, "--tokenizer", "small", "--out", out, "--val-fraction", "1", src),
          "--val-fraction")
    # No library at all: exit 2 naming both.
    error(run(d, "--tokenizer", "small", "--out", out, src, installed=False),
          "no tokenizer library", "transformers", "tokenizers")
    assert not os.path.exists(out) or not os.listdir(out), os.listdir(out)


if __name__ == "__main__":
    sys.exit(t.main())
