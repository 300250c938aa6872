#!/usr/bin/env python3
"""Fine-tuning a Llama from a Hugging Face folder with `zinc train` (suite
oracle): the folder a user downloads in, the folder transformers loads out.

1. The test writes a tiny random Llama (grouped-query attention, llama3
   rope scaling, untied head) as Hugging Face saves one: config.json, bf16
   safetensors in two shards with model.safetensors.index.json.
2. zinc fine-tunes it for 3 steps with ZeRO-Infinity's placement (stage 3,
   parameters and optimizer states on NVMe), fp32, on byte-level shards.
3. The reference -- the Llama equations in torch.nn, float64, the same
   bf16-rounded starting weights, the same batches, torch.optim.AdamW --
   must match zinc's losses (relative 1e-5) and the parameters in the
   Hugging Face folder zinc saved (config.json + safetensors), within the
   tolerance the GPT-2 oracle states: 1e-4 of each tensor's largest value,
   except the rare elements whose gradient is at rounding-noise level,
   which Adam moves by about lr along the sign of their own noise.
4. The saved folder is itself a model.from for the next run (round trip).
Plus: a folder larger than the process needs in memory loads and trains
with NVMe offload (peak RSS well below the folder's bytes), and broken
folders fail with exit status 2 naming the file and tensor.

TAP output.  Needs $ZINC_BIN and $ZINC_TEST_DIR; torch (else skip).
"""
import json
import math
import os
import random
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tap import Skip, TapRunner, device_from_args, import_torch_or_skip  # noqa: E402

torch = import_torch_or_skip(__file__)
import torch.nn.functional as F  # noqa: E402

ZINC = os.environ.get("ZINC_BIN", "zinc")
# cpu, or cuda under meson's suite cuda (--device cuda): zinc's trainings
# then run on the GPU; the torch reference stays on the CPU in float64.
DEVICE = device_from_args(ZINC)
t = TapRunner(scratch=True)

CFG = dict(L=2, C=32, NH=4, NKV=2, I=48, V=256, maxT=64, theta=500000.0, eps=1e-5,
           factor=8.0, lo=1.0, hi=4.0, orig=32)
B, T, STEPS, LR = 2, 16, 3, 2e-3


def hf_config(c):
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": c["C"], "num_hidden_layers": c["L"], "num_attention_heads": c["NH"],
        "num_key_value_heads": c["NKV"], "intermediate_size": c["I"], "vocab_size": c["V"],
        "max_position_embeddings": c["maxT"], "rms_norm_eps": c["eps"],
        "rope_theta": c["theta"], "hidden_act": "silu", "tie_word_embeddings": False,
        "rope_scaling": {"rope_type": "llama3", "factor": c["factor"],
                         "low_freq_factor": c["lo"], "high_freq_factor": c["hi"],
                         "original_max_position_embeddings": c["orig"]},
        "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2,
    }


def names(c):
    out = [("model.embed_tokens.weight", (c["V"], c["C"]))]
    hs = c["C"] // c["NH"]
    for l in range(c["L"]):
        p = f"model.layers.{l}."
        out += [(p + "self_attn.q_proj.weight", (c["NH"] * hs, c["C"])),
                (p + "self_attn.k_proj.weight", (c["NKV"] * hs, c["C"])),
                (p + "self_attn.v_proj.weight", (c["NKV"] * hs, c["C"])),
                (p + "self_attn.o_proj.weight", (c["C"], c["NH"] * hs)),
                (p + "mlp.gate_proj.weight", (c["I"], c["C"])),
                (p + "mlp.up_proj.weight", (c["I"], c["C"])),
                (p + "mlp.down_proj.weight", (c["C"], c["I"])),
                (p + "input_layernorm.weight", (c["C"],)),
                (p + "post_attention_layernorm.weight", (c["C"],))]
    out += [("model.norm.weight", (c["C"],)), ("lm_head.weight", (c["V"], c["C"]))]
    return out


def write_safetensors(path, tensors):
    """name -> bf16 or fp32 torch tensor, as the safetensors format says."""
    header, blobs, off = {}, [], 0
    for name, x in tensors.items():
        raw = x.contiguous().view(torch.uint8 if x.dtype != torch.bfloat16 else torch.int16)
        b = raw.numpy().tobytes()
        header[name] = {"dtype": {torch.bfloat16: "BF16", torch.float32: "F32"}[x.dtype],
                        "shape": list(x.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        s, end = e["data_offsets"]
        raw = bytearray(b[8 + n + s:8 + n + end])
        if e["dtype"] == "BF16":
            x = torch.frombuffer(raw, dtype=torch.bfloat16)
        else:
            x = torch.frombuffer(raw, dtype=torch.float32)
        out[name] = x.reshape(e["shape"]).float().clone()
    return out


def read_folder(d):
    idx = os.path.join(d, "model.safetensors.index.json")
    files = sorted(set(json.load(open(idx))["weight_map"].values())) if os.path.exists(idx) \
        else ["model.safetensors"]
    out = {}
    for f in files:
        out.update(read_safetensors(os.path.join(d, f)))
    return out


def write_folder(d, c, seed=0, std=0.05):
    """A random Llama in bf16, two shards and an index, as transformers saves."""
    os.makedirs(d, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    params = {}
    for name, shape in names(c):
        if len(shape) == 1:
            x = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            x = std * torch.randn(shape, generator=g)
        params[name] = x.to(torch.bfloat16)
    keys = list(params)
    half = len(keys) // 2
    shards = {"model-00001-of-00002.safetensors": keys[:half],
              "model-00002-of-00002.safetensors": keys[half:]}
    wm = {}
    for f, ks in shards.items():
        write_safetensors(os.path.join(d, f), {k: params[k] for k in ks})
        wm.update({k: f for k in ks})
    total = sum(x.numel() * 2 for x in params.values())
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": wm}, f)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(hf_config(c), f)
    return params


# ---- the reference: the Llama equations in float64 -------------------------

def inv_freq(c):
    dim = c["C"] // c["NH"]
    f = 1.0 / (c["theta"] ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    lo_w, hi_w = c["orig"] / c["lo"], c["orig"] / c["hi"]
    wl = 2 * math.pi / f
    fl = torch.where(wl > lo_w, f / c["factor"], f)
    sm = (c["orig"] / wl - c["lo"]) / (c["hi"] - c["lo"])
    smoothed = (1 - sm) * fl / c["factor"] + sm * fl
    mid = ~(wl < hi_w) * ~(wl > lo_w)
    return torch.where(mid, smoothed, fl)


def rms(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rot(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def forward(p, c, tokens, targets):
    Bn, Tn = tokens.shape
    NH, NKV, HS = c["NH"], c["NKV"], c["C"] // c["NH"]
    freqs = torch.outer(torch.arange(Tn, dtype=torch.float32), inv_freq(c))
    emb = torch.cat((freqs, freqs), -1).double()
    cos, sin = emb.cos(), emb.sin()
    x = p["model.embed_tokens.weight"][tokens]
    for l in range(c["L"]):
        q_ = f"model.layers.{l}."
        h = rms(x, p[q_ + "input_layernorm.weight"], c["eps"])
        q = (h @ p[q_ + "self_attn.q_proj.weight"].T).view(Bn, Tn, NH, HS).transpose(1, 2)
        k = (h @ p[q_ + "self_attn.k_proj.weight"].T).view(Bn, Tn, NKV, HS).transpose(1, 2)
        v = (h @ p[q_ + "self_attn.v_proj.weight"].T).view(Bn, Tn, NKV, HS).transpose(1, 2)
        q, k = q * cos + rot(q) * sin, k * cos + rot(k) * sin
        k, v = k.repeat_interleave(NH // NKV, 1), v.repeat_interleave(NH // NKV, 1)
        a = (q @ k.transpose(-1, -2)) / math.sqrt(HS)
        a = a.masked_fill(torch.triu(torch.ones(Tn, Tn, dtype=torch.bool), 1), float("-inf"))
        y = (a.softmax(-1) @ v).transpose(1, 2).reshape(Bn, Tn, NH * HS)
        x = x + y @ p[q_ + "self_attn.o_proj.weight"].T
        h = rms(x, p[q_ + "post_attention_layernorm.weight"], c["eps"])
        m = F.silu(h @ p[q_ + "mlp.gate_proj.weight"].T) * (h @ p[q_ + "mlp.up_proj.weight"].T)
        x = x + m @ p[q_ + "mlp.down_proj.weight"].T
    logits = rms(x, p["model.norm.weight"], c["eps"]) @ p["lm_head.weight"].T
    return F.cross_entropy(logits.reshape(-1, c["V"]), targets.reshape(-1))


# ---- zinc ---------------------------------------------------------------------

def make_data(d):
    rng = random.Random(5)
    words = ["zinc", "llama", "rope", "adam", "swap", "nvme", "ring", "gqa", "norm"]
    with open(os.path.join(d, "text.txt"), "w") as f:
        f.write(" ".join(rng.choice(words) for _ in range(20000)))
    p = subprocess.run([ZINC, "prepare-data", "--out", os.path.join(d, "data"), "--prefix", "t",
                        os.path.join(d, "text.txt")], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def config(d, name, src, extra="", steps=STEPS, micro=B, seq=T, ckpt=True):
    os.makedirs(os.path.join(d, "p"), exist_ok=True)
    os.makedirs(os.path.join(d, "o"), exist_ok=True)
    text = f"""
train_micro_batch_size_per_gpu: {micro}
gradient_accumulation_steps: 1
optimizer: {{type: AdamW, params: {{lr: {LR}, betas: [0.9, 0.95], eps: 1.0e-8,
             weight_decay: 0.1}}}}
model: {{type: llama, from: "{src}", seq_len: {seq}}}
data: {{train: "{d}/data/t_*.bin", shuffle: false}}
checkpoint: {{dir: "{d + '/ck-' + name if ckpt else ''}", resume: false}}
zero_optimization: {{stage: 3, stage3_param_persistence_threshold: 0, sub_group_size: 100000,
  offload_param: {{device: nvme, nvme_path: "{d}/p", max_in_cpu: 0}},
  offload_optimizer: {{device: nvme, nvme_path: "{d}/o"}}}}
device: {{type: {DEVICE}}}
{extra}
"""
    path = os.path.join(d, name + ".yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


def train(cfg, *args):
    return subprocess.run([ZINC, "train", cfg, "--max-steps", str(STEPS), *args],
                          capture_output=True, text=True, timeout=900)


def latest(ck):
    return os.path.join(ck, open(os.path.join(ck, "latest")).read().strip())


@t.test
def finetunes_a_hugging_face_folder_like_torch(d):
    c = CFG
    src = os.path.join(d, "hf")
    init = write_folder(src, c)
    make_data(d)
    jl = os.path.join(d, "log.jsonl")
    r = train(config(d, "ft", src), "--json-log", jl)
    assert r.returncode == 0, r.stderr
    assert "LlamaForCausalLM" in r.stdout, r.stdout
    losses = [json.loads(line)["loss"] for line in open(jl)]

    # The batches zinc read: windows of B*T+1 tokens in order (shuffle off).
    shard = open(os.path.join(d, "data", "t_train_000000.bin"), "rb").read()
    if not os.path.exists(os.path.join(d, "data", "t_train_000000.bin")):
        raise AssertionError("prepare-data wrote no t_train_000000.bin")
    tok = torch.frombuffer(bytearray(shard[1024:]), dtype=torch.int16).long() & 0xffff
    p = {k: v.double().clone().requires_grad_() for k, v in init.items()}
    decay = [v for k, v in p.items() if v.dim() == 2]
    rest = [v for k, v in p.items() if v.dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": rest, "weight_decay": 0.0}],
                            lr=LR, betas=(0.9, 0.95), eps=1e-8)
    grads0 = None
    for s in range(STEPS):
        w = tok[s * B * T: s * B * T + B * T + 1]
        x, y = w[:-1].view(B, T), w[1:].view(B, T)
        opt.zero_grad()
        loss = forward(p, c, x, y)
        assert abs(loss.item() - losses[s]) <= 1e-5 * abs(loss.item()), (s, loss.item(), losses)
        loss.backward()
        if grads0 is None:
            grads0 = {k: v.grad.clone() for k, v in p.items()}
        opt.step()

    # zinc's saved folder: config.json as transformers wrote it, the weights.
    out = latest(os.path.join(d, "ck-ft"))
    saved_cfg = json.load(open(os.path.join(out, "config.json")))
    for k, v in hf_config(c).items():
        if k != "torch_dtype":
            assert saved_cfg.get(k) == v, (k, saved_cfg.get(k), v)
    saved = read_folder(out)
    assert set(saved) == set(init), set(saved) ^ set(init)
    worst, noisy, total = (0.0, ""), 0, 0
    for k in init:
        a, b = saved[k].double(), p[k].detach()
        g = grads0[k].abs()
        quiet = (g > 0) & (g < 1e-4 * g.max())
        if quiet.any():
            assert (a - b)[quiet].abs().max().item() <= 2 * STEPS * LR, k
        noisy += int(quiet.sum())
        total += quiet.numel()
        tol = 1e-4 * b.abs().max().item() + 1e-3 * STEPS * LR
        worst = max(worst, ((a - b)[~quiet].abs().max().item() / tol, k))
        moved = (b - init[k].double()).abs().max().item()
        assert moved > 10 * tol, (k, "did not move", moved, tol)
    assert noisy <= 0.03 * total, (noisy, total)
    assert worst[0] <= 1, f"{worst[1]} after {STEPS} steps off by {worst[0]:.2f} x tolerance"
    print(f"# losses {losses}; parameters: worst {worst[1]} at {worst[0]:.2f} of the "
          f"tolerance, {noisy} of {total} elements with noise-level gradients")

    # Round trip: the saved folder is a model.from (one more step from it).
    r = subprocess.run([ZINC, "train", config(d, "again", out), "--max-steps", "1"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr


@t.test
def two_ranks_fine_tune_as_one_with_twice_the_accumulation(d):
    """Issue 7 meets issue 8: a Llama on two ranks (stage 3, NVMe), every
    parameter offloaded, gives one rank's losses with accumulation 2 bit
    for bit, and `zinc consolidate` turns the two ranks' parts into the
    Hugging Face folder one rank saves, byte for byte."""
    mpirun = os.environ.get("ZINC_MPIRUN", "")
    if DEVICE != "cpu":
        raise Skip("two ranks on one GPU: the nccl backend needs a GPU per rank")
    if not mpirun:
        raise Skip("zinc was built without MPI, or mpirun is missing")
    src = os.path.join(d, "hf")
    write_folder(src, CFG)
    make_data(d)
    logs = {}
    for name, acc, ranks in (("one", 2, 1), ("two", 1, 2)):
        cfg = config(d, name, src)
        with open(cfg) as f:
            text = f.read().replace("gradient_accumulation_steps: 1",
                                    "gradient_accumulation_steps: %d" % acc)
        with open(cfg, "w") as f:
            f.write(text)
        jl = os.path.join(d, name + ".jsonl")
        cmd = [ZINC, "train", cfg, "--max-steps", str(STEPS), "--json-log", jl]
        if ranks > 1:
            cmd = [mpirun, "--allow-run-as-root", "--oversubscribe", "-np", "2"] + cmd
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, (name, r.stderr[-2000:])
        logs[name] = [json.loads(line)["loss"] for line in open(jl)]
    assert logs["one"] == logs["two"], logs
    out = os.path.join(d, "joined")
    r = subprocess.run([ZINC, "consolidate", os.path.join(d, "ck-two"), "--out", out],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    one = latest(os.path.join(d, "ck-one"))
    for f in ("model.safetensors", "config.json"):
        with open(os.path.join(out, f), "rb") as a, open(os.path.join(one, f), "rb") as b:
            assert a.read() == b.read(), f


@t.test
def a_folder_larger_than_memory_needs_streams_through(d):
    """ZeRO-Infinity's point: the model never has to be whole in host memory.
    A 90M-parameter bf16 folder (~180 MB) loads, with parameters and
    optimizer states going to NVMe, taking less than half the folder's
    size of memory beyond what zinc held before (its libraries), then
    trains a step."""
    c = dict(CFG, L=32, C=512, NH=8, NKV=2, I=1408, maxT=64)
    src = os.path.join(d, "big")
    write_folder(src, c, std=0.02)
    del c
    folder = sum(os.path.getsize(os.path.join(src, f)) for f in os.listdir(src))
    make_data(d)
    cfg = config(d, "big", src, micro=1, seq=16, ckpt=False,
                 extra="data_types: {grad_accum_dtype: bf16}")
    # meson sets MALLOC_PERTURB_, which makes malloc write every block it
    # hands out: the gradient accumulators (touched by the first backward,
    # not by loading) would count as loaded.
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_PERTURB_"}
    r = subprocess.run([ZINC, "train", cfg, "--max-steps", "1"], capture_output=True,
                       text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stderr
    line = [x for x in r.stdout.splitlines() if x.startswith("loaded ")]
    assert line, r.stdout
    # "loaded 173 MiB from DIR in 1.2 s (0.14 GB/s); peak resident memory 191 MiB,
    # 42 MiB above what zinc held before loading"
    units = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
    grew = line[0].rsplit(", ", 1)[1].split()
    grew = float(grew[0]) * units[grew[1]]
    assert grew < folder / 2, (f"loading a {folder / 1e6:.0f} MB folder took "
                               f"{grew / 1e6:.0f} MB of memory", line[0])
    assert "loss" in r.stdout
    print(f"# {line[0]}")


@t.test
def broken_folders_fail_naming_file_and_tensor(d):
    c = CFG
    make_data(d)

    def fresh(name):
        src = os.path.join(d, name)
        write_folder(src, c)
        return src

    def expect(src, *words):
        r = train(config(d, os.path.basename(src), src))
        assert r.returncode == 2, (src, r.returncode, r.stderr)
        for w in words:
            assert w in r.stderr, (w, r.stderr)

    src = fresh("missing-shard")
    os.remove(os.path.join(src, "model-00002-of-00002.safetensors"))
    expect(src, "model-00002-of-00002.safetensors")

    src = fresh("not-in-shard")
    idx = os.path.join(src, "model.safetensors.index.json")
    j = json.load(open(idx))
    j["weight_map"]["lm_head.weight"] = "model-00001-of-00002.safetensors"
    json.dump(j, open(idx, "w"))
    expect(src, "lm_head.weight", "model-00001-of-00002.safetensors")

    src = fresh("shape")
    cj = os.path.join(src, "config.json")
    j = json.load(open(cj))
    j["intermediate_size"] = 64
    json.dump(j, open(cj, "w"))
    expect(src, "mlp.gate_proj.weight")

    src = fresh("arch")
    j = json.load(open(os.path.join(src, "config.json")))
    j["architectures"] = ["GPTNeoXForCausalLM"]
    json.dump(j, open(os.path.join(src, "config.json"), "w"))
    expect(src, "GPTNeoXForCausalLM")

    src = fresh("rope")
    j = json.load(open(os.path.join(src, "config.json")))
    j["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0}
    json.dump(j, open(os.path.join(src, "config.json"), "w"))
    expect(src, "yarn")

    src = fresh("truncated")
    f = os.path.join(src, "model-00001-of-00002.safetensors")
    with open(f, "r+b") as fh:
        fh.truncate(5)
    expect(src, "model-00001-of-00002.safetensors")

    src = fresh("header-beyond")
    f = os.path.join(src, "model-00002-of-00002.safetensors")
    with open(f, "r+b") as fh:
        fh.write(struct.pack("<Q", 1 << 40))
    expect(src, "model-00002-of-00002.safetensors")


sys.exit(t.main())
