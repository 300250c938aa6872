#!/usr/bin/env python3
"""ZeRO's communication on CPU ranks, measured: volume per step against the
ZeRO paper's, and the share of collective time hidden behind compute.

For each ZeRO stage it runs `mpirun -np N zinc train` on a GPT-2 for a few
steps with overlap_comm and a trace per rank, then from rank 0:

  volume ratio  = elements this rank sent per step / ((N-1)/N * P)
                  ZeRO (Rajbhandari et al. 2020, sec. 7): stages 1 and 2 move
                  2P per rank per step like data parallelism (reduce-scatter
                  of the gradients, all-gather of the parameters), stage 3
                  3P (parameters gathered for the forward and again for the
                  backward, gradients reduce-scattered); a ring collective
                  sends (N-1)/N of its data from each rank.  Expected 2, 2, 3
                  (stage 3 runs with stage3_max_reuse_distance 0; with the
                  fetch trace keeping layers on the device between their
                  forward and backward use it needs less).
  hidden share  = 1 - (time the training thread waited for collectives,
                  while one ran) / (time collectives ran on the comm thread),
                  from the trace: the comm thread's spans (cat "comm-op") and
                  the training thread's waits (name "collective").

Medians over the steps after the first (which records the fetch trace).
One JSON object per stage, then a summary object on the last line.

  tools/zero_comm_bench.py --zinc build/tools/zinc --ranks 2 --dir /var/tmp/zcb
"""
import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys


def run(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        sys.exit("zero_comm_bench: %s failed (exit %d):\n%s%s"
                 % (" ".join(cmd), p.returncode, p.stdout[-2000:], p.stderr[-4000:]))
    return p


def union(iv):
    out = []
    for a, b in sorted(iv):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


def measure(iv):
    return sum(b - a for a, b in iv)


def intersect(x, y):
    i = j = 0
    tot = 0.0
    while i < len(x) and j < len(y):
        a, b = max(x[i][0], y[j][0]), min(x[i][1], y[j][1])
        if a < b:
            tot += b - a
        if x[i][1] < y[j][1]:
            i += 1
        else:
            j += 1
    return tot


def hidden_share(trace_path, skip_first_step):
    ev = [e for e in json.load(open(trace_path))["traceEvents"] if e.get("ph") == "X"]
    # The first step's spans: up to the end of its first "optimizer" span.
    start = 0.0
    if skip_first_step:
        opt = sorted(e["ts"] + e["dur"] for e in ev if e.get("cat") == "optimizer")
        start = opt[0] if opt else 0.0
    ops = union([(e["ts"], e["ts"] + e["dur"]) for e in ev
                 if e.get("cat") == "comm-op" and e["ts"] >= start])
    waits = union([(e["ts"], e["ts"] + e["dur"]) for e in ev
                   if e.get("name") == "collective" and e["ts"] >= start])
    total = measure(ops)
    exposed = intersect(ops, waits)
    return (1 - exposed / total if total else None), total / 1e6, exposed / 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--zinc", default="zinc")
    ap.add_argument("--mpirun", default=shutil.which("mpirun") or "mpirun")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--embd", type=int, default=512)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--micro", type=int, default=2)
    ap.add_argument("--stages", default="1,2,3")
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    data = os.path.join(a.dir, "data")
    if not os.path.isdir(data):
        rng = random.Random(1)
        text = os.path.join(a.dir, "text.txt")
        with open(text, "w") as f:
            f.write(" ".join(rng.choice(["zero", "rank", "gather", "scatter", "reduce"])
                             for _ in range(400000)))
        run([a.zinc, "prepare-data", "--out", data, "--prefix", "t", text])
    zero = {
        1: "{stage: 1, overlap_comm: true, reduce_bucket_size: auto, "
           "offload_optimizer: {device: cpu}}",
        2: "{stage: 2, overlap_comm: true, reduce_bucket_size: auto, "
           "offload_optimizer: {device: cpu}}",
        # Nothing kept between a layer's forward and backward use
        # (stage3_max_reuse_distance 0): the paper's three passes.
        3: "{stage: 3, overlap_comm: true, reduce_bucket_size: auto, "
           "stage3_param_persistence_threshold: 0, "
           "stage3_max_reuse_distance: 0, offload_param: {device: cpu}, "
           "offload_optimizer: {device: cpu}}",
    }
    expect = {1: 2.0, 2: 2.0, 3: 3.0}
    results = []
    for stage in [int(x) for x in a.stages.split(",")]:
        cfg = os.path.join(a.dir, "stage%d.yaml" % stage)
        with open(cfg, "w") as f:
            f.write(f"""
train_micro_batch_size_per_gpu: {a.micro}
gradient_accumulation_steps: 1
gradient_clipping: 1.0
optimizer: {{type: AdamW, params: {{lr: 0.0003}}}}
model: {{n_layer: {a.layers}, n_head: 8, n_embd: {a.embd}, vocab_size: 256, seq_len: {a.seq}}}
data: {{train: "{data}/t_*.bin"}}
zero_optimization: {zero[stage]}
""")
        log = os.path.join(a.dir, "stage%d.jsonl" % stage)
        trace = os.path.join(a.dir, "stage%d.trace.json" % stage)
        p = run([a.mpirun, "--allow-run-as-root", "--oversubscribe", "-np", str(a.ranks),
                 a.zinc, "train", cfg, "--max-steps", str(a.steps), "--json-log", log,
                 "--trace", trace])
        params = int(p.stdout.split(" parameters")[0].rsplit(" ", 1)[1])
        steps = [json.loads(x) for x in open(log)][1:]
        per_rank = (a.ranks - 1) / a.ranks * params
        vol = statistics.median(s["comm_elems"] for s in steps) / per_rank
        hid, op_s, exp_s = hidden_share(trace, True)
        r = {"stage": stage, "ranks": a.ranks, "params": params,
             "volume_ratio": round(vol, 3), "zero_paper": expect[stage],
             "comm_bytes_per_step": statistics.median(s["comm_bytes"] for s in steps),
             "hidden_share": None if hid is None else round(hid, 3),
             "collective_s": round(op_s, 3), "exposed_s": round(exp_s, 3),
             "step_s": statistics.median(s["step_s"] for s in steps)}
        results.append(r)
        print(json.dumps(r))
        sys.stdout.flush()
    print(json.dumps({"results": results}))


if __name__ == "__main__":
    main()
