#!/usr/bin/env python3
"""Compare `zinc nvme-bench` with fio on the same file, interleaved.

fio is the reference: io_uring, O_DIRECT, once plain and once with
--fixedbufs --registerfiles (its best io_uring setup).  Each round runs
zinc, fio plain and fio fixed back to back, for sequential read and write
at every block size, so slow drifts of a noisy disk hit all three alike.
The medians are printed with the ratio of zinc to the better fio.  zinc
runs twice per round: with its own huge-page buffers (what users get) and
on 4 KiB pages like fio's malloc'd buffers (the engine alone).

    tools/nvme_vs_fio.py --path /mnt/nvme [--size 4G] [--rounds 7]
        [--block-size 1M,128K] [--queue-depth 32] [--zinc build/tools/zinc] [--json]

Exit status: 0 when every ratio meets --target (default 0.95), 1 when one
does not, 2 on bad usage or a failed run.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys


def parse_size(text):
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    suffix = t[-1] if t and t[-1] in units else ""
    return int(t[: len(t) - len(suffix)]) * units[suffix]


def human(n):
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"nvme_vs_fio: {' '.join(cmd)} failed ({p.returncode}):\n{p.stderr.strip()}")
    return p.stdout


def zinc_run(args, rw, bs, qd, small_pages=False):
    out = run([args.zinc, "nvme-bench", "--file", args.file, "--size", str(args.size),
               "--rw", rw, "--block-size", str(bs), "--queue-depth", str(qd), "--threads", "1",
               "--loops", "1", "--json"] + (["--no-huge-pages"] if small_pages else []))
    o = json.loads(out)
    r = o["results"][0]
    return r["mib_s"], o["settings"]["buffer_huge_fraction"]


def fio_run(args, rw, bs, qd, fixed):
    cmd = ["fio", "--name=zinc-compare", f"--filename={args.file}", "--ioengine=io_uring",
           "--direct=1", f"--rw={rw}", f"--bs={bs}", f"--iodepth={qd}", f"--size={args.size}",
           "--numjobs=1", "--thread", "--output-format=json"]
    if fixed:
        cmd += ["--fixedbufs", "--registerfiles"]
    o = json.loads(run(cmd))
    job = o["jobs"][0]
    return job[rw]["bw_bytes"] / (1 << 20)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--path", required=True, help="directory on the disk to measure")
    ap.add_argument("--size", default="4G", help="bytes per run (default 4G)")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7, min 5)")
    ap.add_argument("--block-size", default="1M,128K", help="block sizes (default 1M,128K)")
    ap.add_argument("--queue-depth", type=int, default=32, help="queue depth (default 32)")
    ap.add_argument("--zinc", default=None, help="the zinc binary (default: build/tools/zinc)")
    ap.add_argument("--target", type=float, default=0.95, help="ratio to meet (default 0.95)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()

    if args.rounds < 5:
        ap.error("--rounds must be at least 5")
    try:
        args.size = parse_size(args.size)
        sizes = [parse_size(b) for b in args.block_size.split(",")]
    except (ValueError, KeyError):
        ap.error("sizes are integers with an optional K, M or G suffix")
    if args.zinc is None:
        here = os.path.dirname(os.path.abspath(__file__))
        args.zinc = os.path.join(here, "..", "build", "tools", "zinc")
    if not os.access(args.zinc, os.X_OK):
        ap.error(f"zinc binary not found at {args.zinc}; build first or pass --zinc")
    if shutil.which("fio") is None:
        ap.error("fio is not installed (apt-get install fio)")
    if not os.path.isdir(args.path):
        ap.error(f"--path {args.path} is not a directory")
    args.file = os.path.join(args.path, f"zinc-vs-fio.{os.getpid()}.dat")

    thp = "unknown"
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            thp = f.read().split("[")[1].split("]")[0]
    except OSError:
        pass
    # fio's buffers come from malloc (iomem=malloc): 4 KiB pages unless THP is "always".
    fio_buffers = "malloc, transparent huge pages" if thp == "always" else "malloc, 4 KiB pages"

    results = []
    try:
        # Write the whole file once so reads find real data.
        fio_run(args, "write", 1 << 20, 32, False)
        for bs in sizes:
            for rw in ("read", "write"):
                z, z4, f0, f1, huge = [], [], [], [], []
                for i in range(args.rounds):
                    mib, frac = zinc_run(args, rw, bs, args.queue_depth)
                    z.append(mib)
                    huge.append(frac)
                    f0.append(fio_run(args, rw, bs, args.queue_depth, False))
                    f1.append(fio_run(args, rw, bs, args.queue_depth, True))
                    # zinc again on 4 KiB pages, fio's kind of buffer: the
                    # engine alone, without the huge-page advantage.
                    z4.append(zinc_run(args, rw, bs, args.queue_depth, True)[0])
                    if not args.json:
                        print(f"  round {i + 1}/{args.rounds} {rw} {human(bs)}: zinc {mib:.0f}, "
                              f"fio {f0[-1]:.0f}, fio fixed {f1[-1]:.0f}, "
                              f"zinc 4K pages {z4[-1]:.0f} MiB/s", file=sys.stderr)
                mz, m4, m0, m1 = (statistics.median(v) for v in (z, z4, f0, f1))
                results.append({
                    "rw": rw, "block_size": bs, "queue_depth": args.queue_depth,
                    "zinc_mib_s": round(mz, 1), "fio_mib_s": round(m0, 1),
                    "fio_fixed_mib_s": round(m1, 1), "ratio": round(mz / max(m0, m1), 3),
                    "zinc_4k_mib_s": round(m4, 1), "ratio_4k": round(m4 / max(m0, m1), 3),
                    "zinc_4k_runs": [round(v, 1) for v in z4],
                    "zinc_runs": [round(v, 1) for v in z], "fio_runs": [round(v, 1) for v in f0],
                    "fio_fixed_runs": [round(v, 1) for v in f1],
                    "zinc_buffer_huge_fraction": min(huge),
                })
    finally:
        if os.path.exists(args.file):
            os.unlink(args.file)

    ok = all(r["ratio"] >= args.target for r in results)
    if args.json:
        print(json.dumps({"size": args.size, "rounds": args.rounds, "target": args.target,
                          "fio_buffers": fio_buffers, "results": results, "pass": ok}))
    else:
        print(f"zinc vs fio: {args.path}, {human(args.size)} per run, {args.rounds} rounds, "
              f"queue depth {args.queue_depth}, medians in MiB/s")
        print(f"buffers: zinc 2 MiB-aligned, huge pages {min(r['zinc_buffer_huge_fraction'] for r in results):.0%}; "
              f"fio {fio_buffers}")
        print(f"{'rw':6} {'block':>6} {'zinc':>9} {'fio':>9} {'fio fixed':>10} {'ratio':>7}"
              f" {'zinc 4K pages':>14} {'ratio':>7}")
        for r in results:
            mark = "ok" if r["ratio"] >= args.target else "BELOW TARGET"
            print(f"{r['rw']:6} {human(r['block_size']):>6} {r['zinc_mib_s']:9.1f} "
                  f"{r['fio_mib_s']:9.1f} {r['fio_fixed_mib_s']:10.1f} {r['ratio']:7.3f} "
                  f"{r['zinc_4k_mib_s']:14.1f} {r['ratio_4k']:7.3f}  {mark}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
