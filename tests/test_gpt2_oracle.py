#!/usr/bin/env python3
"""Oracle (suite `oracle`): zinc's GPT-2 against a PyTorch GPT-2 written here.

tests/gpt2_oracle_helper.c initialises a small GPT-2 (2 layers, 4 heads,
C 32, vocab 61 padded to 64), runs a batch with some ignored targets, and
writes the initial parameters, the loss, every gradient, and the parameters
and losses after 3 AdamW steps.  The model below follows the published
GPT-2 equations with torch.nn in float64 (pre-LN blocks, causal attention,
tanh GELU, tied embeddings); zinc (fp32) must agree on the loss (relative
1e-5), every gradient (1e-4 of the tensor's largest) and the parameters
after 3 AdamW steps (torch.optim.AdamW in fp32, same hyperparameters; the
tolerance and the treatment of noise-level gradients are explained below).

A second check runs `zinc train` itself: torch's GPT-2 built from the
model.safetensors it writes (Hugging Face names and layouts) computes the
loss zinc logged for the same batch (relative 1e-5).

TAP output.  Needs $ZINC_GPT2_ORACLE_HELPER, $ZINC_BIN and $ZINC_TEST_DIR.
"""
import json
import math
import os
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tap import TapRunner, import_torch_or_skip  # noqa: E402

torch = import_torch_or_skip(__file__)
import torch.nn.functional as F  # noqa: E402

HELPER = os.environ.get("ZINC_GPT2_ORACLE_HELPER", "gpt2_oracle_helper")
L, NH, C, V, VP, MAXT, B, T = 2, 4, 32, 61, 64, 16, 2, 12
t = TapRunner(scratch=True)


def load(path):
    """A safetensors file, read with nothing but json and struct."""
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    data = b[8 + n:]
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        s, end = e["data_offsets"]
        dt = {"F32": torch.float32, "I32": torch.int32}[e["dtype"]]
        out[name] = torch.frombuffer(bytearray(data[s:end]), dtype=dt).reshape(e["shape"]).clone()
    return out


def forward(p, tokens, targets, vocab=V):
    x = p["wte.weight"][tokens] + p["wpe.weight"][:T]
    for l in range(L):
        h = f"h.{l}."
        a = F.layer_norm(x, (C,), p[h + "ln_1.weight"], p[h + "ln_1.bias"], 1e-5)
        qkv = a @ p[h + "attn.c_attn.weight"].T + p[h + "attn.c_attn.bias"]
        q, k, v = qkv.split(C, dim=-1)
        q, k, v = (z.view(B, T, NH, C // NH).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-1, -2)) / math.sqrt(C // NH)
        att = att.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
        y = (att.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
        x = x + y @ p[h + "attn.c_proj.weight"].T + p[h + "attn.c_proj.bias"]
        a = F.layer_norm(x, (C,), p[h + "ln_2.weight"], p[h + "ln_2.bias"], 1e-5)
        f = F.gelu(a @ p[h + "mlp.c_fc.weight"].T + p[h + "mlp.c_fc.bias"], approximate="tanh")
        x = x + f @ p[h + "mlp.c_proj.weight"].T + p[h + "mlp.c_proj.bias"]
    x = F.layer_norm(x, (C,), p["ln_f.weight"], p["ln_f.bias"], 1e-5)
    logits = x @ p["wte.weight"].T
    return F.cross_entropy(logits[..., :vocab].reshape(-1, vocab), targets.reshape(-1),
                           ignore_index=-1)


def rel(a, b):
    return (a - b).abs().max().item() / max(b.abs().max().item(), 1e-30)


@t.test
def loss_gradients_and_adamw_agree(d):
    r = subprocess.run([HELPER, d], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    init = load(os.path.join(d, "init.safetensors"))
    tokens = init.pop("tokens").long().view(B, T)
    targets = init.pop("targets").long().view(B, T)
    assert (targets < 0).any(), "the batch should ignore some targets"
    grads = load(os.path.join(d, "grads.safetensors"))
    zinc_loss = grads.pop("loss")[0].item()

    p = {k: v.double().requires_grad_() for k, v in init.items()}
    loss = forward(p, tokens, targets)
    loss.backward()
    assert abs(zinc_loss - loss.item()) <= 1e-5 * abs(loss.item()), (zinc_loss, loss.item())
    worst = max((rel(grads[k].double(), p[k].grad), k) for k in p)
    assert worst[0] <= 1e-4, f"gradient of {worst[1]} off by {worst[0]:.2e} (relative)"
    print(f"# loss {zinc_loss:.6f} vs {loss.item():.6f}; worst gradient {worst[1]} "
          f"{worst[0]:.1e}")

    after = load(os.path.join(d, "after3.safetensors"))
    zinc_losses = after.pop("losses")
    q = {k: v.clone().requires_grad_() for k, v in init.items()}  # fp32, as zinc
    opt = torch.optim.AdamW(list(q.values()), lr=1e-2, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=0.1)
    for step in range(3):
        opt.zero_grad()
        ls = forward(q, tokens, targets)
        assert abs(ls.item() - zinc_losses[step].item()) <= 1e-4 * abs(ls.item()), step
        ls.backward()
        opt.step()
    # Adam divides by sqrt(v): where a gradient is at rounding-noise level
    # (the key bias gets none at all in exact arithmetic: softmax is
    # shift-invariant) both implementations step by about lr along the sign
    # of their own noise.  Those elements, |g| < 1e-4 of the tensor's
    # largest in the float64 reference, may differ by up to 3 lr; they must
    # be rare.  Every other element must agree to 1e-4 of the tensor's
    # largest parameter.
    worst, noisy, total = (0.0, ""), 0, 0
    for k in q:
        g = p[k].grad.abs()
        quiet = (g > 0) & (g < 1e-4 * g.max())  # exact zeros step identically
        if k.endswith("attn.c_attn.bias"):
            quiet[C:2 * C] = True  # the key bias: no gradient in exact arithmetic
        a, b = after[k].double(), q[k].detach().double()
        assert (a - b)[quiet].abs().max().item() <= 3 * 1e-2 * 1.01 if quiet.any() else True, k
        noisy += int(quiet.sum())
        total += quiet.numel()
        # Tolerance: 1e-4 of the tensor's largest parameter, plus 1e-3 of
        # the most 3 steps of lr can move an element (biases start at 0).
        tol = 1e-4 * b.abs().max().item() + 1e-3 * 3 * 1e-2
        worst = max(worst, ((a - b)[~quiet].abs().max().item() / tol, k))
    assert noisy <= 0.03 * total, f"{noisy} of {total} elements have noise-level gradients"
    assert worst[0] <= 1, f"{worst[1]} after 3 AdamW steps off by {worst[0]:.2f} x tolerance"
    print(f"# after 3 AdamW steps: worst {worst[1]} at {worst[0]:.2f} of the tolerance; "
          f"{noisy} of {total} elements with noise-level gradients")


def hf_load(path):
    """A checkpoint's Hugging Face GPT-2 model.safetensors as zinc-layout
    tensors: Conv1D weights transposed back, names without "transformer."."""
    out = {}
    for k, v in load(path).items():
        name = k[len("transformer."):]
        if any(name.endswith(x) for x in ("c_attn.weight", "c_proj.weight", "c_fc.weight")):
            v = v.T.contiguous()
        out[name] = v
    return out


@t.test
def trainer_checkpoint_loads_into_torch(d):
    """End to end: `zinc train` writes model.safetensors; torch's GPT-2 built
    from it computes the loss zinc logged for the same batch."""
    zinc = os.environ.get("ZINC_BIN", "zinc")
    import random
    rng = random.Random(5)
    with open(os.path.join(d, "t.txt"), "w") as f:
        f.write(" ".join(rng.choice(["zinc", "swap", "adam", "nvme", "ring"])
                         for _ in range(5000)))
    r = subprocess.run([zinc, "prepare-data", "--out", os.path.join(d, "data"), "--prefix", "o",
                        os.path.join(d, "t.txt")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    cfg = os.path.join(d, "o.yaml")
    with open(cfg, "w") as f:
        f.write(f"""train_micro_batch_size_per_gpu: {B}
optimizer: {{type: AdamW, params: {{lr: 0}}}}
model: {{n_layer: {L}, n_head: {NH}, n_embd: {C}, vocab_size: 256, seq_len: {T}}}
data: {{train: "{d}/data/o_train_*.bin", shuffle: false, seed: 11}}
checkpoint: {{dir: "{d}/ck"}}
""")
    r = subprocess.run([zinc, "train", cfg, "--max-steps", "1", "--json-log",
                        os.path.join(d, "log.jsonl")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    zinc_loss = json.loads(open(os.path.join(d, "log.jsonl")).readline())["loss"]
    latest = open(os.path.join(d, "ck", "latest")).read().strip()
    p = hf_load(os.path.join(d, "ck", latest, "model.safetensors"))
    # The first batch of an unshuffled shard: window 0, B*T+1 tokens.
    b = open(os.path.join(d, "data", "o_train_000000.bin"), "rb").read()
    toks = torch.tensor(list(struct.unpack("<%dH" % (B * T + 1), b[1024:1024 + 2 * (B * T + 1)])))
    pd = {k: v.double() for k, v in p.items()}
    loss = forward(pd, toks[:-1].view(B, T), toks[1:].view(B, T), vocab=256).item()
    assert abs(loss - zinc_loss) <= 1e-5 * abs(loss), (zinc_loss, loss)


def oracle_data(d, prefix):
    """An unshuffled shard of a few words; its first window's tokens."""
    zinc = os.environ.get("ZINC_BIN", "zinc")
    import random
    rng = random.Random(5)
    with open(os.path.join(d, "t.txt"), "w") as f:
        f.write(" ".join(rng.choice(["zinc", "swap", "adam", "nvme", "ring"])
                         for _ in range(5000)))
    r = subprocess.run([zinc, "prepare-data", "--out", os.path.join(d, "data"), "--prefix",
                        prefix, os.path.join(d, "t.txt")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    b = open(os.path.join(d, "data", prefix + "_train_000000.bin"), "rb").read()
    return torch.tensor(list(struct.unpack("<%dH" % (B * T + 1),
                                           b[1024:1024 + 2 * (B * T + 1)])))


@t.test
def a_clipped_step_matches_clip_grad_norm_and_adamw(d):
    """One step of `zinc train` with gradient_clipping active (max_norm far
    below the norm) against torch: the norm it logs is
    torch.nn.utils.clip_grad_norm_'s, and the parameters after the step are
    those of clip_grad_norm_ then torch.optim.AdamW (weight decay on the
    matrices, zinc's default rule).  Adam's first step divides the
    gradient by its own magnitude, so the clip coefficient shows only next
    to eps: eps is set to the size of the clipped gradients, where a
    coefficient applied twice (or not at all) moves every element by a
    large part of lr."""
    zinc = os.environ.get("ZINC_BIN", "zinc")
    toks = oracle_data(d, "c")
    lr, wd, eps, max_norm = 1e-2, 0.1, 1e-4, 0.01

    def run(name, lr_, clip):
        cfg = os.path.join(d, name + ".yaml")
        with open(cfg, "w") as f:
            f.write(f"""train_micro_batch_size_per_gpu: {B}
gradient_clipping: {clip}
optimizer: {{type: AdamW, params: {{lr: {lr_}, eps: {eps}, weight_decay: {wd},
             betas: [0.9, 0.999]}}}}
model: {{n_layer: {L}, n_head: {NH}, n_embd: {C}, vocab_size: 256, seq_len: {T}}}
data: {{train: "{d}/data/c_train_*.bin", shuffle: false, seed: 11}}
checkpoint: {{dir: "{d}/ck-{name}"}}
""")
        jl = os.path.join(d, name + ".jsonl")
        r = subprocess.run([zinc, "train", cfg, "--max-steps", "1", "--json-log", jl],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        latest = open(os.path.join(d, "ck-" + name, "latest")).read().strip()
        return (hf_load(os.path.join(d, "ck-" + name, latest, "model.safetensors")),
                json.loads(open(jl).readline()))

    # lr 0 keeps the initial weights (the same seed starts both runs).
    init, _ = run("init", 0, 0)
    after, s = run("clipped", lr, max_norm)

    p = {k: v.double().requires_grad_() for k, v in init.items()}
    forward(p, toks[:-1].view(B, T), toks[1:].view(B, T), vocab=256).backward()
    q = {k: v.clone().requires_grad_() for k, v in init.items()}  # fp32, as zinc
    for k in q:
        q[k].grad = p[k].grad.float()
    norm = torch.nn.utils.clip_grad_norm_(list(q.values()), max_norm).item()
    assert abs(s["grad_norm"] - norm) <= 1e-5 * norm, (s["grad_norm"], norm)
    assert norm > 20 * max_norm, ("clipping is not active", norm)
    clipped = max(q[k].grad.abs().max().item() for k in q)
    assert eps / 100 < clipped < 100 * eps, ("eps is not near the clipped gradients", clipped)
    decay = [q[k] for k in q if q[k].dim() == 2]
    rest = [q[k] for k in q if q[k].dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": wd},
                             {"params": rest, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.999), eps=eps)
    opt.step()
    # Every element to 1e-3 of lr: a coefficient applied twice moves them
    # by up to lr (g / (|g| + eps) with g 30 times smaller).
    worst = max(((after[k].double() - q[k].detach().double()).abs().max().item() / lr, k)
                for k in q)
    assert worst[0] <= 1e-3, f"{worst[1]} after the clipped step off by {worst[0]:.2e} lr"
    print(f"# norm {s['grad_norm']:.6f} vs {norm:.6f}; clipped to {max_norm}; worst "
          f"parameter {worst[1]} {worst[0]:.1e} lr")


if __name__ == "__main__":
    sys.exit(t.main())
