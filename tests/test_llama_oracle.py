#!/usr/bin/env python3
"""Oracle (suite `oracle`): zinc's Llama against a PyTorch Llama written here.

tests/llama_oracle_helper.c builds a tiny Llama in zinc (fp32, cpu
kernels), runs a batch with some ignored targets, and writes the
parameters, the batch, zinc's rotary inverse frequencies, the loss and
every gradient.  The model below follows the published equations
(Touvron et al. 2023; Su et al.'s rotary embedding in transformers'
rotate_half form; Ainslie et al.'s grouped-query attention; Shazeer's
SwiGLU) with torch.nn in float64:

  x = embed[tokens]
  per layer:  h = rmsnorm(x) * w_in
              q, k, v = h Wq^T (+bq), h Wk^T (+bk), h Wv^T (+bv)
              q, k = rope(q), rope(k)      (pairs i, i + HS/2; angle t f_i)
              k, v repeated NH / NKV times (each key/value head serves a group)
              x = x + softmax(q k^T / sqrt(HS), causal) v Wo^T
              h = rmsnorm(x) * w_post
              x = x + (silu(h Wg^T) * (h Wu^T)) Wd^T      (+ biases with mlp_bias)
  logits = (rmsnorm(x) * w_norm) W^T,  W = lm_head or embed (tied)
  loss = mean cross-entropy over the counted targets

The rotary frequencies come from transformers' formulas (default and
llama3 scaling, modeling_rope_utils.py) computed here in fp32 as it does;
zinc's own table must agree with them (relative 1e-6), and the model
uses these, not zinc's.  zinc must agree on the loss (relative 1e-5) and
every gradient (1e-4 of the tensor's largest) in each case: GQA with
llama3 scaling and head_dim != hidden/heads, untied; multi-query with the
default rope, tied; Qwen2-style q/k/v biases; MLP biases with activation
checkpointing (and its inputs offloaded).

TAP output.  Needs $ZINC_LLAMA_ORACLE_HELPER and $ZINC_TEST_DIR.
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
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

HELPER = os.environ.get("ZINC_LLAMA_ORACLE_HELPER", "llama_oracle_helper")
t = TapRunner(scratch=True)

# The helper's defaults (llama_oracle_helper.c), overridden per case.
DEFAULTS = dict(L=2, C=32, NH=4, NKV=2, HS=0, I=48, V=61, maxT=16, B=2, T=12, theta=10000.0,
                eps=1e-5, rope="default", factor=8.0, lo=1.0, hi=4.0, orig=2048, tied=0,
                qkv_bias=0, mlp_bias=0, recompute=0, offload=0)


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


def hf_inv_freq(c):
    """transformers' _compute_default_rope_parameters and
    _compute_llama3_parameters, the same tensor operations in fp32."""
    dim = c["HS"]
    base = float(c["theta"])
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    if c["rope"] != "llama3":
        return inv_freq
    factor, low_freq_factor, high_freq_factor = c["factor"], c["lo"], c["hi"]
    old_context_len = c["orig"]
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth_factor = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor -
                                                                     low_freq_factor)
    smoothed_inv_freq = (1 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama
    is_medium_freq = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium_freq, smoothed_inv_freq, inv_freq_llama)


class RMSNorm(nn.Module):
    def __init__(self, w, eps):
        super().__init__()
        self.weight = nn.Parameter(w)
        self.eps = eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Block(nn.Module):
    def __init__(self, c, p, l, cos, sin):
        super().__init__()
        pre = f"model.layers.{l}."
        self.c, self.cos, self.sin = c, cos, sin

        def lin(name, bias):
            w = p[pre + name + ".weight"]
            m = nn.Linear(w.shape[1], w.shape[0], bias=bias, dtype=torch.float64)
            m.weight = nn.Parameter(w)
            if bias:
                m.bias = nn.Parameter(p[pre + name + ".bias"])
            return m
        qb, mb = bool(c["qkv_bias"]), bool(c["mlp_bias"])
        self.q, self.k, self.v = (lin(f"self_attn.{n}_proj", qb) for n in "qkv")
        self.o = lin("self_attn.o_proj", False)
        self.gate, self.up, self.down = (lin(f"mlp.{n}_proj", mb) for n in ("gate", "up", "down"))
        self.ln_in = RMSNorm(p[pre + "input_layernorm.weight"], c["eps"])
        self.ln_post = RMSNorm(p[pre + "post_attention_layernorm.weight"], c["eps"])

    def forward(self, x):
        c = self.c
        B, T, _ = x.shape
        NH, NKV, HS = c["NH"], c["NKV"], c["HS"]
        h = self.ln_in(x)
        q = self.q(h).view(B, T, NH, HS).transpose(1, 2)
        k = self.k(h).view(B, T, NKV, HS).transpose(1, 2)
        v = self.v(h).view(B, T, NKV, HS).transpose(1, 2)
        q = q * self.cos + rotate_half(q) * self.sin
        k = k * self.cos + rotate_half(k) * self.sin
        k = k.repeat_interleave(NH // NKV, dim=1)  # transformers' repeat_kv
        v = v.repeat_interleave(NH // NKV, dim=1)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(HS)
        att = att.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
        y = (att.softmax(-1) @ v).transpose(1, 2).reshape(B, T, NH * HS)
        x = x + self.o(y)
        h = self.ln_post(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Llama(nn.Module):
    def __init__(self, c, p):
        super().__init__()
        T = c["T"]
        pos = torch.arange(T, dtype=torch.float32)
        freqs = torch.outer(pos, hf_inv_freq(c))  # fp32 angles, as transformers
        emb = torch.cat((freqs, freqs), dim=-1).double()
        cos, sin = emb.cos(), emb.sin()
        self.embed = nn.Parameter(p["model.embed_tokens.weight"])
        self.blocks = nn.ModuleList(Block(c, p, l, cos, sin) for l in range(c["L"]))
        self.norm = RMSNorm(p["model.norm.weight"], c["eps"])
        self.lm_head = None if c["tied"] else nn.Parameter(p["lm_head.weight"])

    def forward(self, tokens, targets):
        x = self.embed[tokens]
        for b in self.blocks:
            x = b(x)
        w = self.embed if self.lm_head is None else self.lm_head
        logits = self.norm(x) @ w.T
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                               ignore_index=-1)

    def grads(self, c):
        """Gradients by Hugging Face name."""
        g = {"model.embed_tokens.weight": self.embed.grad, "model.norm.weight": self.norm.weight.grad}
        if self.lm_head is not None:
            g["lm_head.weight"] = self.lm_head.grad
        for l, b in enumerate(self.blocks):
            pre = f"model.layers.{l}."
            mods = {"self_attn.q_proj": b.q, "self_attn.k_proj": b.k, "self_attn.v_proj": b.v,
                    "self_attn.o_proj": b.o, "mlp.gate_proj": b.gate, "mlp.up_proj": b.up,
                    "mlp.down_proj": b.down}
            for n, m in mods.items():
                g[pre + n + ".weight"] = m.weight.grad
                if m.bias is not None:
                    g[pre + n + ".bias"] = m.bias.grad
            g[pre + "input_layernorm.weight"] = b.ln_in.weight.grad
            g[pre + "post_attention_layernorm.weight"] = b.ln_post.weight.grad
        return g


def rel(a, b):
    return (a - b).abs().max().item() / max(b.abs().max().item(), 1e-30)


def check(d, **case):
    c = dict(DEFAULTS, **case)
    if not c["HS"]:
        c["HS"] = c["C"] // c["NH"]
    args = [f"{k}={v}" for k, v in c.items()]
    r = subprocess.run([HELPER, d] + args, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    init = load(os.path.join(d, "init.safetensors"))
    B, T = c["B"], c["T"]
    tokens = init.pop("tokens").long().view(B, T)
    targets = init.pop("targets").long().view(B, T)
    assert (targets < 0).any(), "the batch should ignore some targets"
    inv = init.pop("inv_freq")
    want = hf_inv_freq(c)
    assert rel(inv.double(), want.double()) <= 1e-6, (inv, want)
    grads = load(os.path.join(d, "grads.safetensors"))
    zinc_loss = grads.pop("loss")[0].item()
    assert set(grads) == set(init), "gradients for every parameter"

    model = Llama(c, {k: v.double() for k, v in init.items()})
    names = set(model.grads(c).keys())
    assert names == set(init), f"zinc's tensors {sorted(set(init) ^ names)} differ from the model's"
    loss = model(tokens, targets)
    loss.backward()
    assert abs(zinc_loss - loss.item()) <= 1e-5 * abs(loss.item()), (zinc_loss, loss.item())
    ref = model.grads(c)
    worst = max((rel(grads[k].double(), ref[k]), k) for k in ref)
    assert worst[0] <= 1e-4, f"gradient of {worst[1]} off by {worst[0]:.2e} (relative)"
    # A gradient that is zero in both would pass trivially: every tensor moves.
    quiet = [k for k in ref if ref[k].abs().max().item() == 0]
    assert not quiet, f"no gradient at all for {quiet}"
    print(f"# loss {zinc_loss:.7f} vs {loss.item():.7f}; worst gradient {worst[1]} "
          f"{worst[0]:.1e}")


@t.test
def gqa_llama3_rope_untied(d):
    """Llama 3 style: 4 query heads on 2 key/value heads, llama3 frequency
    scaling with all three bands present (head_dim 16: wavelengths 6 to
    2e4 against 512 and 2048), head_dim != hidden / heads."""
    check(d, rope="llama3", HS=16, orig=2048, factor=8.0, lo=1.0, hi=4.0)


@t.test
def mqa_default_rope_tied(d):
    """One key/value head for all queries, default rope with Llama 3's
    theta, the classifier tied to the embedding."""
    check(d, NKV=1, theta=500000.0, tied=1, eps=1e-6)


@t.test
def qwen2_qkv_bias(d):
    """Qwen2: biases on q, k and v only, theta 1e6, tied."""
    check(d, qkv_bias=1, theta=1000000.0, tied=1, eps=1e-6, L=3)


@t.test
def mlp_bias_recompute_offload(d):
    """Multi-head (NKV = NH), MLP biases, activation checkpointing with its
    inputs in host memory: the same numbers."""
    check(d, NKV=4, mlp_bias=1, recompute=1, offload=1, B=3, T=9)


@t.test
def llama3_table_matches_transformers_at_real_sizes(d):
    """zinc's inverse frequencies for Llama 3.1/3.2's settings (head_dim
    128 and 64, theta 5e5, factor 8 and 32, 8192 original positions)."""
    for hs, factor in ((128, 8.0), (64, 32.0)):
        c = dict(DEFAULTS, rope="llama3", HS=hs, C=hs * 4, theta=500000.0, factor=factor,
                 orig=8192, L=1, V=11, I=8, B=1, T=2, maxT=2)
        args = [f"{k}={v}" for k, v in c.items()]
        r = subprocess.run([HELPER, d] + args, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        inv = load(os.path.join(d, "init.safetensors"))["inv_freq"]
        want = hf_inv_freq(c)
        assert rel(inv.double(), want.double()) <= 1e-6, (hs, inv, want)
        # the three bands: kept, blended, divided by the factor
        plain = hf_inv_freq(dict(c, rope="default"))
        ratio = plain / inv
        assert (ratio == 1).any() and (ratio == factor).any() and \
            ((ratio > 1) & (ratio < factor)).any(), ratio


if __name__ == "__main__":
    sys.exit(t.main())
