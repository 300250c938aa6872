#!/usr/bin/env python3
"""zinc's CPU AdamW against torch.optim.AdamW on the same machine, same run.

    tools/adam_vs_torch.py [--zinc build/tools/zinc] [--n 67108864]
                           [--threads 1,2] [--rounds 5] [--reps 7] [--json]

For each thread count, `--rounds` rounds alternate: `zinc adam-bench --n N
--threads T --json` (AdamW, lr 1e-3, weight_decay 0.01, fp32, best of
--reps after a warm-up), then torch.optim.AdamW(foreach=True, same
hyperparameters) on one fp32 tensor of N elements with
torch.set_num_threads(T) (best of --reps steps after a warm-up step).
Prints the medians over rounds and the speedup (torch time / zinc time),
with zinc's Adam GB/s and its ratio to the Adam-shaped stream.

Needs PyTorch (Debian: python3-torch); when this python3 lacks it, another
python3 on PATH that has it is used.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def import_torch():
    try:
        import torch
        return torch
    except ImportError:
        pass
    if os.environ.get("ZINC_TORCH_REEXEC") != "1":
        me = os.path.realpath(sys.executable)
        for d in os.get_exec_path():
            cand = os.path.join(d, "python3")
            if not os.access(cand, os.X_OK) or os.path.realpath(cand) == me:
                continue
            if subprocess.run([cand, "-c", "import torch"], capture_output=True).returncode == 0:
                env = dict(os.environ, ZINC_TORCH_REEXEC="1")
                os.execve(cand, [cand, os.path.abspath(__file__)] + sys.argv[1:], env)
    sys.exit("adam_vs_torch: PyTorch is not installed for any python3 on PATH "
             "(Debian: apt-get install python3-torch)")


def torch_best_ms(torch, n, threads, reps):
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(1)
    p = torch.nn.Parameter(torch.rand(n, generator=g) * 2 - 1)
    p.grad = (torch.rand(n, generator=g) * 2 - 1) * 1e-3
    opt = torch.optim.AdamW([p], lr=1e-3, weight_decay=0.01, foreach=True)
    opt.step()  # warm-up: allocates exp_avg, exp_avg_sq
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        opt.step()
        best = min(best, time.perf_counter() - t0)
    del opt, p
    return best * 1e3


def zinc_run(zinc, n, threads, reps):
    out = subprocess.run([zinc, "adam-bench", "--n", str(n), "--threads", str(threads),
                          "--reps", str(reps), "--json"], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"adam_vs_torch: zinc adam-bench failed: {out.stderr.strip()}")
    return json.loads(out.stdout)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--zinc", default=os.path.join(here, "..", "build", "tools", "zinc"))
    ap.add_argument("--n", type=int, default=1 << 26)
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.reps < 5 or a.rounds < 1:
        sys.exit("adam_vs_torch: --reps must be at least 5 and --rounds at least 1")
    torch = import_torch()
    results = []
    for t in [int(x) for x in a.threads.split(",")]:
        rows = []
        for _ in range(a.rounds):
            z = zinc_run(a.zinc, a.n, t, a.reps)
            tm = torch_best_ms(torch, a.n, t, a.reps)
            rows.append((z, tm))
        med = statistics.median
        r = {
            "threads": t,
            "n": a.n,
            "simd": rows[0][0]["simd"],
            "hugepages": rows[0][0]["hugepages"],
            "zinc_ms": med(z["adam_ms"] for z, _ in rows),
            "torch_ms": med(tm for _, tm in rows),
            "speedup": med(tm / z["adam_ms"] for z, tm in rows),
            "zinc_gb_s": med(z["adam_gb_s"] for z, _ in rows),
            "stream7_gb_s": med(z["stream7_gb_s"] for z, _ in rows),
            "triad_gb_s": med(z["triad_gb_s"] for z, _ in rows),
            "ratio": med(z["ratio"] for z, _ in rows),
            "rounds": [{"zinc_ms": z["adam_ms"], "torch_ms": tm, "ratio": z["ratio"]}
                       for z, tm in rows],
        }
        results.append(r)
    if a.json:
        print(json.dumps({"torch": torch.__version__, "results": results}))
        return 0
    print(f"AdamW, n {a.n}, fp32; torch {torch.__version__} foreach=True; medians of "
          f"{a.rounds} rounds, each the best of {a.reps} steps")
    print(f"{'threads':>7} {'zinc ms':>9} {'torch ms':>9} {'speedup':>8} {'zinc GB/s':>10} "
          f"{'stream7':>8} {'triad':>7} {'ratio':>6}")
    for r in results:
        print(f"{r['threads']:>7} {r['zinc_ms']:>9.2f} {r['torch_ms']:>9.1f} "
              f"{r['speedup']:>7.1f}x {r['zinc_gb_s']:>10.1f} {r['stream7_gb_s']:>8.1f} "
              f"{r['triad_gb_s']:>7.1f} {r['ratio']:>6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
