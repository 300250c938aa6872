#!/usr/bin/env python3
"""Fine-tuning a 1B+ Llama with ZeRO-Infinity on this machine, measured in one run.

1. A Llama-3.2-1B-shaped Hugging Face folder (config.json, bf16 shards,
   index; 16 layers, 2048 channels, 32 heads with 8 key/value heads, MLP
   8192, vocabulary 128256, tied embeddings: 1.24 B parameters) with random
   weights, unless --model points at a real one.
2. `zinc nvme-bench` read and write on the swap directory: what the disk
   gives.
3. `zinc train` fine-tuning it for a few steps with parameters and
   optimizer states on NVMe (stage 3), bf16, activation checkpointing:
     load rate   = the folder's bytes / the time to build the trainer
                   (read, converted and written into the tiers), next to
                   nvme-bench's read rate
     tokens/s    per step
     step efficiency = bound / step time, bound = max(compute, NVMe bytes
                   read / read rate + written / write rate), compute = the
                   step's forward and backward less their waits for
                   parameters (compute_s - stall_s): what the step would
                   take with every state resident, which a 1B model's 20 GB
                   of states do not allow on a small machine
with medians over the measured steps (the first records the fetch trace
and is left out), and one JSON object on the last line.

  tools/llama_finetune_bench.py --zinc build/tools/zinc --dir /var/tmp/llama-bench
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys


def run(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        sys.exit("llama_finetune_bench: %s failed (exit %d):\n%s%s"
                 % (" ".join(cmd), p.returncode, p.stdout[-2000:], p.stderr[-4000:]))
    return p


def torch_or_exit():
    try:
        import torch  # noqa: F401
        return torch
    except ImportError:
        sys.exit("llama_finetune_bench: making the synthetic model needs torch "
                 "(python3-torch); or give --model DIR")


def write_model(d, L, C, NH, NKV, I, V):
    """Random bf16 weights in Hugging Face's layout, one shard per 2 GB."""
    torch = torch_or_exit()
    os.makedirs(d, exist_ok=True)
    hs = C // NH
    shapes = [("model.embed_tokens.weight", (V, C))]
    for l in range(L):
        p = f"model.layers.{l}."
        shapes += [(p + "self_attn.q_proj.weight", (NH * hs, C)),
                   (p + "self_attn.k_proj.weight", (NKV * hs, C)),
                   (p + "self_attn.v_proj.weight", (NKV * hs, C)),
                   (p + "self_attn.o_proj.weight", (C, NH * hs)),
                   (p + "mlp.gate_proj.weight", (I, C)), (p + "mlp.up_proj.weight", (I, C)),
                   (p + "mlp.down_proj.weight", (C, I)),
                   (p + "input_layernorm.weight", (C,)),
                   (p + "post_attention_layernorm.weight", (C,))]
    shapes.append(("model.norm.weight", (C,)))
    shards, cur, size = [], [], 0
    for name, shape in shapes:
        n = 2 * (shape[0] * (shape[1] if len(shape) > 1 else 1))
        if cur and size + n > 2 << 30:
            shards.append(cur)
            cur, size = [], 0
        cur.append((name, shape))
        size += n
    shards.append(cur)
    g = torch.Generator().manual_seed(0)
    wm, total = {}, 0
    for k, sh in enumerate(shards):
        fname = "model-%05d-of-%05d.safetensors" % (k + 1, len(shards))
        header, off, blobs = {}, 0, []
        for name, shape in sh:
            x = (torch.ones(shape) if len(shape) == 1 else
                 0.02 * torch.randn(shape, generator=g)).to(torch.bfloat16)
            b = x.view(torch.int16).numpy().tobytes()
            header[name] = {"dtype": "BF16", "shape": list(shape),
                            "data_offsets": [off, off + len(b)]}
            off += len(b)
            blobs.append(b)
            wm[name] = fname
        total += off
        header["__metadata__"] = {"format": "pt"}
        h = json.dumps(header).encode()
        h += b" " * (-len(h) % 8)
        with open(os.path.join(d, fname), "wb") as f:
            f.write(len(h).to_bytes(8, "little") + h)
            for b in blobs:
                f.write(b)
    json.dump({"metadata": {"total_size": total}, "weight_map": wm},
              open(os.path.join(d, "model.safetensors.index.json"), "w"))
    json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
               "hidden_size": C, "num_hidden_layers": L, "num_attention_heads": NH,
               "num_key_value_heads": NKV, "intermediate_size": I, "vocab_size": V,
               "max_position_embeddings": 131072, "rms_norm_eps": 1e-5,
               "rope_theta": 500000.0, "hidden_act": "silu", "tie_word_embeddings": True,
               "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0,
                                "original_max_position_embeddings": 8192},
               "torch_dtype": "bfloat16"}, open(os.path.join(d, "config.json"), "w"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--zinc", default="zinc")
    ap.add_argument("--dir", required=True, help="scratch directory on the NVMe to measure")
    ap.add_argument("--model", help="a Hugging Face Llama folder (default: a synthetic 1.24 B)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--micro", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="passed to zinc train (repeatable): device.type=cuda, "
                         "device.memory_limit=24G, ...")
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    model = a.model or os.path.join(a.dir, "model")
    if not a.model and not os.path.exists(os.path.join(model, "config.json")):
        write_model(model, L=16, C=2048, NH=32, NKV=8, I=8192, V=128256)
    swap = os.path.join(a.dir, "swap")
    os.makedirs(swap, exist_ok=True)
    data = os.path.join(a.dir, "data")
    if not os.path.isdir(data):
        text = os.path.join(a.dir, "text.txt")
        with open(text, "w") as f:
            for name in sorted(os.listdir("/usr/share/common-licenses")):
                p = os.path.join("/usr/share/common-licenses", name)
                if os.path.isfile(p):
                    f.write(open(p, errors="replace").read())
        run([a.zinc, "prepare-data", "--out", data, "--prefix", "t", text])

    nb = run([a.zinc, "nvme-bench", "--path", swap, "--size", "2G", "--json"]).stdout
    nb = json.loads(nb.strip().splitlines()[-1])
    rd = max(r["mib_s"] for r in nb["results"] if r["rw"] == "read") * (1 << 20)
    wr = max(r["mib_s"] for r in nb["results"] if r["rw"] == "write") * (1 << 20)

    cfg = os.path.join(a.dir, "bench.yaml")
    with open(cfg, "w") as f:
        f.write(f"""
train_micro_batch_size_per_gpu: {a.micro}
gradient_accumulation_steps: 1
gradient_clipping: 1.0
bf16: {{enabled: true}}
optimizer: {{type: AdamW, params: {{lr: 2.0e-5, weight_decay: 0.0}}}}
model: {{type: llama, from: "{model}", seq_len: {a.seq}}}
data: {{train: "{data}/t_*.bin"}}
activation_checkpointing: {{enabled: true}}
data_types: {{grad_accum_dtype: bf16}}
zero_optimization: {{stage: 3, sub_group_size: 20000000,
  stage3_param_persistence_threshold: 100000,
  offload_param: {{device: nvme, nvme_path: "{swap}", max_in_cpu: 0}},
  offload_optimizer: {{device: nvme, nvme_path: "{swap}", pipeline_read: true,
                       pipeline_write: true}}}}
""")
    log = os.path.join(a.dir, "steps.jsonl")
    sets = [x for kv in a.set for x in ("--set", kv)]
    p = run([a.zinc, "train", cfg, "--max-steps", str(a.steps), "--json-log", log] + sets)
    m = re.search(r"loaded (\S+ \S+) from .* in ([0-9.]+) s \(([0-9.]+) GB/s\); peak resident "
                  r"memory (\S+ \S+), (\S+ \S+) above", p.stdout)
    params = int(re.search(r"([0-9]+) parameters", p.stdout).group(1))
    steps = [json.loads(x) for x in open(log)][1:]
    eff, tok = [], []
    for s in steps:
        compute = s["compute_s"] - s["stall_s"]
        io = s["nvme_read_bytes"] / rd + s["nvme_write_bytes"] / wr
        eff.append(max(compute, io) / s["step_s"])
        tok.append(s["tokens_per_s"])
    out = {
        "params": params, "load_gb_per_s": float(m.group(3)) if m else None,
        "nvme_read_gb_per_s": rd / 1e9, "nvme_write_gb_per_s": wr / 1e9,
        "load_memory": m.group(5) if m else None,
        "tokens_per_s": statistics.median(tok), "step_s": statistics.median(
            s["step_s"] for s in steps),
        "step_efficiency": statistics.median(eff),
        "compute_s": statistics.median(s["compute_s"] - s["stall_s"] for s in steps),
        "nvme_read_gb_per_step": statistics.median(s["nvme_read_bytes"] for s in steps) / 1e9,
        "nvme_write_gb_per_step": statistics.median(s["nvme_write_bytes"] for s in steps) / 1e9,
    }
    if not a.json:
        print(p.stdout.strip())
        print(f"load: {out['load_gb_per_s']} GB/s of safetensors into the tiers; nvme-bench "
              f"read {out['nvme_read_gb_per_s']:.2f} GB/s, write "
              f"{out['nvme_write_gb_per_s']:.2f} GB/s")
        print(f"{params / 1e9:.2f} B parameters: {out['tokens_per_s']:.1f} tokens/s, step "
              f"{out['step_s']:.2f} s, step efficiency {out['step_efficiency']:.2f}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
