#!/usr/bin/env python3
"""ZeRO-Infinity on one machine, measured in one run.

1. `zinc nvme-bench` on the swap directory, with the config's aio settings:
   the bandwidth the disk gives the pattern the trainer uses.
2. `zinc train CONFIG` (parameters and optimizer states on NVMe) for a few
   steps under /usr/bin/time -v: peak resident memory, and per step the
   time, the compute time and the NVMe bytes moved (--json-log).
3. The same model and batch with everything resident on the device
   (stage 2, no offload): the compute time of the same step -- or, with
   --reference compute (a model too large to be resident: the point of
   the exercise), the out-of-core step's own compute: its forward and
   backward less their waits for parameters and the update (compute_s -
   stall_s of the JSON log).

It prints
  memory ratio     = model-state bytes (16 x parameters) / peak RSS     target >= 10
  step efficiency  = bound / step time, where bound = max(resident step
                     time (or the step's compute), NVMe read bytes / read
                     bandwidth + write bytes / write bandwidth)         target >= 0.8
with medians over the measured steps (the first, which records the fetch
trace, is left out), and one JSON object on the last line.  It also
prints what the overlap costs the compute it hides behind: the
out-of-core step's forward and backward less their waits, over the
resident ones' (compute ratio; 1 when nothing is slowed), and the
parameters' share of the reads.  --runs N alternates N out-of-core and N
resident trainings (the machine's drift falls on both alike) and takes the
medians over all their steps, with each pair's efficiency beside.

  tools/out_of_core_bench.py --config examples/out-of-core.yaml \
      --zinc build/tools/zinc --steps 4
  tools/out_of_core_bench.py --config examples/llama-3b-nvme.yaml \
      --zinc build/tools/zinc --steps 2 --reference compute
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile


def run(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        sys.exit("out_of_core_bench: %s failed (exit %d):\n%s%s"
                 % (" ".join(cmd), p.returncode, p.stdout[-2000:], p.stderr[-4000:]))
    return p


def effective(zinc, config, sets=()):
    """Values of the effective config (`zinc config --check` prints it as
    YAML, one key per line, sections by indentation)."""
    cmd = [zinc, "config", "--check", config]
    for s in sets:
        cmd += ["--set", s]
    out = run(cmd).stdout
    vals, stack = {}, []
    for line in out.splitlines():
        m = re.match(r"^( *)([A-Za-z0-9_]+):(?: (.*))?$", line)
        if not m:
            continue
        depth = len(m.group(1)) // 2
        stack = stack[:depth] + [m.group(2)]
        if m.group(3) is not None:
            vals[".".join(stack)] = m.group(3).strip().strip('"')
    return vals


def own_compute(steps):
    """Median of the steps' forward and backward less their waits."""
    return statistics.median(x["compute_s"] - x["stall_s"] for x in steps)


def train(zinc, config, steps, sets, log):
    cmd = ["/usr/bin/time", "-v", zinc, "train", config, "--max-steps", str(steps),
           "--json-log", log, "--set", "checkpoint.dir=", "--set", "steps_per_print=1"]
    for s in sets:
        cmd += ["--set", s]
    p = run(cmd)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    params = re.search(r"(\d+) parameters", p.stdout)
    if not rss or not params:
        sys.exit("out_of_core_bench: cannot read the peak RSS or the parameter count:\n"
                 + p.stdout[-1000:] + p.stderr[-2000:])
    steps_log = [json.loads(line) for line in open(log)]
    return int(rss.group(1)) * 1024, int(params.group(1)), steps_log


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="examples/out-of-core.yaml")
    ap.add_argument("--zinc", default="build/tools/zinc")
    ap.add_argument("--steps", type=int, default=4, help="measured steps (after the first)")
    ap.add_argument("--bench-size", default="2G", help="bytes per nvme-bench pass")
    ap.add_argument("--json", action="store_true", help="only the JSON object")
    ap.add_argument("--reference", choices=("resident", "compute"), default="resident",
                    help="the compute bound: the same step resident, or the out-of-core "
                         "step's own compute (for a model that cannot be resident)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for every run, as zinc train's --set")
    ap.add_argument("--runs", type=int, default=1,
                    help="out-of-core and resident trainings, alternated")
    a = ap.parse_args()
    if a.runs < 1 or a.steps < 1:
        sys.exit("out_of_core_bench: --runs and --steps take 1 or more")

    cfg = effective(a.zinc, a.config, a.set)
    swap = cfg.get("zero_optimization.offload_optimizer.nvme_path", "")
    if cfg.get("zero_optimization.offload_optimizer.device") != "nvme" or not swap:
        sys.exit("out_of_core_bench: %s does not put the optimizer states on NVMe "
                 "(zero_optimization.offload_optimizer.device: nvme)" % a.config)
    swap = swap.split(",")[0]
    if not os.path.isdir(swap):
        sys.exit("out_of_core_bench: the swap directory %s does not exist; create it" % swap)

    # 1. The disk, with the trainer's aio settings.
    nb = json.loads(run([a.zinc, "nvme-bench", "--path", swap, "--size", a.bench_size,
                         "--block-size", cfg["aio.block_size"],
                         "--queue-depth", cfg["aio.queue_depth"],
                         "--threads", cfg["aio.intra_op_parallelism"],
                         "--rw", "read,write", "--loops", "3", "--json"]).stdout)
    read_bw = nb["best"]["read"]["mib_s"] * 2**20
    write_bw = nb["best"]["write"]["mib_s"] * 2**20

    runs = []  # (out-of-core log, resident log or None) per run
    rss = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(a.runs):
            # 2. Out of core.
            r, params, ooc = train(a.zinc, a.config, a.steps + 1, a.set,
                                   os.path.join(tmp, "o%d.jsonl" % i))
            rss = max(rss, r)
            # 3. Everything resident, the same model and batch.
            res = None
            if a.reference == "resident":
                resident_sets = ["zero_optimization.stage=2",
                                 "zero_optimization.offload_param.device=none",
                                 "zero_optimization.offload_optimizer.device=none"]
                _, _, res = train(a.zinc, a.config, a.steps + 1, a.set + resident_sets,
                                  os.path.join(tmp, "r%d.jsonl" % i))
            runs.append((ooc, res))
    m_ooc = [x for ooc, _ in runs for x in ooc[1:]]
    res = [x for _, r in runs for x in r[1:]] if a.reference == "resident" else None
    med = lambda xs, k: statistics.median(x[k] for x in xs)  # noqa: E731
    step = med(m_ooc, "step_s")
    read_b, write_b = med(m_ooc, "nvme_read_bytes"), med(m_ooc, "nvme_write_bytes")
    io_s = read_b / read_bw + write_b / write_bw
    own = own_compute(m_ooc)
    resident = med(res, "step_s") if res else own
    bound = max(resident, io_s)
    per_run = []
    for ooc, r in runs:
        rs = med(r[1:], "step_s") if r else own_compute(ooc[1:])
        per_run.append(max(rs, io_s) / med(ooc[1:], "step_s"))
    states = 16 * params
    out = {
        "params": params, "model_state_bytes": states, "peak_rss_bytes": rss,
        "memory_ratio": states / rss,
        "step_s": step, "compute_s": med(m_ooc, "compute_s"),
        "optimizer_s": med(m_ooc, "optimizer_s"), "stall_s": med(m_ooc, "stall_s"),
        "nvme_read_bytes": read_b, "nvme_write_bytes": write_b,
        "read_gib_s": read_bw / 2**30, "write_gib_s": write_bw / 2**30,
        "io_bound_s": io_s, "resident_step_s": resident, "bound_s": bound,
        "step_efficiency": bound / step,
        "reference": a.reference,
        "losses_equal": (all([s["loss"] for s in o] == [s["loss"] for s in r] for o, r in runs)
                         if res else None),
        "runs": a.runs, "run_efficiency": per_run,
        "compute_less_waits_s": own,
        "resident_compute_s": med(res, "compute_s") if res else None,
        "compute_ratio": own / med(res, "compute_s") if res else None,
        "param_read_bytes": med(m_ooc, "param_read_bytes"),
    }
    if not a.json:
        g = 2**30
        print("nvme-bench %s (block %s, qd %s, %s rings): read %.2f GiB/s, write %.2f GiB/s"
              % (swap, cfg["aio.block_size"], cfg["aio.queue_depth"],
                 cfg["aio.intra_op_parallelism"], out["read_gib_s"], out["write_gib_s"]))
        print("model: %d parameters, model states %.2f GiB; peak RSS %.2f GiB"
              % (params, states / g, rss / g))
        print("memory ratio: %.2f  (target >= 10: %s)"
              % (out["memory_ratio"], "met" if out["memory_ratio"] >= 10 else "NOT met"))
        print("out of core, median of %d steps: %.2f s (compute %.2f s, optimizer %.2f s, "
              "stalls %.2f s); NVMe %.2f GiB read + %.2f GiB written = %.2f s at the "
              "measured bandwidth" % (len(m_ooc), step, out["compute_s"], out["optimizer_s"],
                                       out["stall_s"], read_b / g, write_b / g, io_s))
        print("%s: %.2f s; bound max(%.2f, %.2f) = %.2f s"
              % ("resident, median step" if res else "the step's own compute, median",
                 resident, resident, io_s, bound))
        if not res:
            print("(the step's compute: its forward and backward less their waits, "
                  "%.2f s - %.2f s)" % (out["compute_s"], out["stall_s"]))
        print("of the reads, the parameters' fetches: %.2f GiB" % (out["param_read_bytes"] / g))
        if res:
            print("compute (forward and backward less their waits): %.2f s out of core, "
                  "%.2f s resident: ratio %.2f" % (own, out["resident_compute_s"],
                                                   out["compute_ratio"]))
        print("step efficiency: %.2f  (target >= 0.8: %s)"
              % (out["step_efficiency"], "met" if out["step_efficiency"] >= 0.8 else "NOT met"))
        if a.runs > 1:
            print("each run's: %s" % ", ".join("%.2f" % e for e in per_run))
        if res:
            print("losses of the out-of-core and resident runs equal bit for bit: %s"
                  % out["losses_equal"])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
