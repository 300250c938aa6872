#!/usr/bin/env python3
"""zinc's training step on a GPU against PyTorch's, same model, same GPU, same run.

For each precision (fp32; bf16) it times `zinc train --bench` on the cuda
backend (GPT-2 of the given shape, random tokens, AdamW on the device,
everything resident) and a PyTorch GPT-2 of the same shape doing the same
work: forward, cross-entropy, backward, gradient clipping and a fused AdamW
step.  The torch model is the usual modern one: nn.Linear/nn.LayerNorm,
F.scaled_dot_product_attention (causal), tanh GELU, tied embeddings, fp32
parameters; bf16 runs under torch.autocast (bf16 matmuls and attention,
fp32 master weights).  TF32 stays off in fp32 on both sides (PyTorch's
default for matmuls; zinc's fp32 products are exact fp32).

Medians over the timed steps (the first steps warm up).  Prints a line per
precision and one JSON object per precision; the last line is a summary
object with each ratio = torch step time / zinc step time (> 1: zinc is
faster).

  tools/train_vs_torch.py --zinc build/tools/zinc [--layers 12 --heads 12
      --embd 768 --vocab 50257 --seq 1024 --batch 4 --steps 10]
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time


def zinc_bench(zinc, a, bf16):
    d = tempfile.mkdtemp(prefix="train-vs-torch.")
    cfg = os.path.join(d, "bench.yaml")
    with open(cfg, "w") as f:
        f.write(f"""train_micro_batch_size_per_gpu: {a.batch}
gradient_accumulation_steps: 1
gradient_clipping: 1.0
optimizer: {{type: AdamW, params: {{lr: 0.0006, betas: [0.9, 0.95], eps: 1.0e-8,
             weight_decay: 0.1}}}}
model: {{type: gpt2, n_layer: {a.layers}, n_head: {a.heads}, n_embd: {a.embd},
        vocab_size: {a.vocab}, seq_len: {a.seq}}}
zero_optimization: {{stage: 0}}
bf16: {{enabled: {"true" if bf16 else "false"}}}
device: {{type: cuda}}
""")
    p = subprocess.run([zinc, "train", "--bench", cfg, "--max-steps", str(a.steps + 1)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"train_vs_torch: zinc train --bench failed:\n{p.stderr}")
    steps = [float(line.split(":")[1].split("s,")[0])
             for line in p.stdout.splitlines() if line.strip().startswith("step ")]
    return statistics.median(steps[1:])


def torch_bench(torch, a, bf16):
    import torch.nn as nn
    import torch.nn.functional as F

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            C = a.embd
            self.ln_1, self.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
            self.c_attn, self.c_proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
            self.c_fc, self.c_proj2 = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

        def forward(self, x):
            B, T, C = x.shape
            q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
            q, k, v = (z.view(B, T, a.heads, C // a.heads).transpose(1, 2) for z in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.c_proj(y.transpose(1, 2).reshape(B, T, C))
            return x + self.c_proj2(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            vp = math.ceil(a.vocab / 128) * 128
            self.wte, self.wpe = nn.Embedding(vp, a.embd), nn.Embedding(a.seq, a.embd)
            self.h = nn.ModuleList(Block() for _ in range(a.layers))
            self.ln_f = nn.LayerNorm(a.embd)

        def forward(self, idx, targets):
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
            for b in self.h:
                x = b(x)
            logits = self.ln_f(x) @ self.wte.weight.T
            return F.cross_entropy(logits[..., :a.vocab].float().reshape(-1, a.vocab),
                                   targets.reshape(-1))

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    dev = torch.device("cuda")
    model = GPT().to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), eps=1e-8,
                            weight_decay=0.1, fused=True)
    x = torch.randint(0, a.vocab, (a.batch, a.seq), device=dev)
    y = torch.randint(0, a.vocab, (a.batch, a.seq), device=dev)
    times = []
    for i in range(a.steps + 2):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zinc", default="zinc")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--embd", type=int, default=768)
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10)
    a = ap.parse_args()
    try:
        import torch
    except ImportError:
        sys.exit("train_vs_torch: needs PyTorch with CUDA")
    if not torch.cuda.is_available():
        sys.exit("train_vs_torch: PyTorch sees no CUDA device")
    tokens = a.batch * a.seq
    summary = {"gpu": torch.cuda.get_device_name(0), "tokens_per_step": tokens}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        z = zinc_bench(a.zinc, a, bf16)
        t = torch_bench(torch, a, bf16)
        print(f"{name}: zinc {z * 1e3:.1f} ms/step ({tokens / z:.0f} tok/s), torch "
              f"{t * 1e3:.1f} ms/step ({tokens / t:.0f} tok/s): ratio {t / z:.2f}")
        o = {"precision": name, "zinc_step_s": round(z, 5), "torch_step_s": round(t, 5),
             "ratio": round(t / z, 3)}
        print(json.dumps(o))
        summary[name] = o["ratio"]
        sys.stdout.flush()
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
