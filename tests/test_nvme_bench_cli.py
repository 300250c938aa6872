#!/usr/bin/env python3
"""`zinc nvme-bench` as a user runs it: bad input, JSON, the aio block, cleanup.

TAP output for meson.  Needs $ZINC_BIN (the zinc binary) and $ZINC_TEST_DIR.
"""
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tap import TapRunner  # noqa: E402

ZINC = os.environ.get("ZINC_BIN", "zinc")

t = TapRunner(scratch=True)
test = t.test


def run(*args, timeout=240):
    return subprocess.run([ZINC, "nvme-bench", *args], capture_output=True, text=True,
                          timeout=timeout)


def scratch_files(d):
    return [n for n in os.listdir(d) if n.startswith("zinc-nvme-bench")]


@test
def bad_input_exits_2(d):
    cases = [
        ["--bogus"],
        ["--path", d, "--size", "0"],
        ["--path", d, "--size", "12Q"],
        ["--path", os.path.join(d, "does-not-exist")],
        [],
        ["--path", d, "--block-size", "1000"],
        ["--path", d, "--queue-depth", "0"],
        ["--path", d, "--rw", "sideways"],
        ["--path", d, "--threads"],
        ["--path", d, "extra"],
    ]
    for args in cases:
        p = run(*args)
        assert p.returncode == 2, f"{args}: exit {p.returncode}, stderr {p.stderr!r}"
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1, f"{args}: want one line of error, got {p.stderr!r}"
        assert lines[0].startswith("zinc nvme-bench: "), lines[0]
    assert scratch_files(d) == []


@test
def refuses_without_room(d):
    p = run("--path", d, "--size", "1000T")
    assert p.returncode == 2, p
    assert "free" in p.stderr and "--size" in p.stderr, p.stderr
    assert scratch_files(d) == []


@test
def json_sweep(d):
    p = run("--path", d, "--size", "16M", "--block-size", "128K,1M", "--queue-depth", "4",
            "--threads", "1,2", "--rw", "read,write,rw", "--loops", "2", "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    res = out["results"]
    assert len(res) == 3 * 2 * 1 * 2, len(res)
    keys = {"rw", "block_size", "queue_depth", "threads", "mib_s", "iops", "p50_us", "p99_us"}
    for r in res:
        assert keys <= set(r), r
        assert r["mib_s"] > 0 and r["iops"] > 0, r
        assert 0 < r["p50_us"] <= r["p99_us"], r
        assert r["block_size"] in (131072, 1048576) and r["queue_depth"] == 4
        assert r["threads"] in (1, 2)
    assert {r["rw"] for r in res} == {"read", "write", "rw"}
    for rw in ("read", "write"):
        best = out["best"][rw]
        assert best["mib_s"] == max(r["mib_s"] for r in res if r["rw"] == rw)
    assert out["aio"]["queue_depth"] == 4
    assert scratch_files(d) == [], "scratch file left behind"


@test
def table_and_aio_block_parse_back(d):
    p = run("--path", d, "--size", "8M", "--block-size", "256K", "--queue-depth", "2,4",
            "--threads", "1", "--loops", "1")
    assert p.returncode == 0, p.stderr
    text = p.stdout
    assert "MiB/s" in text and "p99 us" in text, text
    lines = text.splitlines()
    start = lines.index("aio:")
    block = [lines[start]]
    for line in lines[start + 1:]:
        if not line.startswith("  "):
            break
        block.append(line)
    cfg = os.path.join(d, "bench.yaml")
    with open(cfg, "w") as f:
        f.write("\n".join(block) + "\n")
    c = subprocess.run([ZINC, "config", "--check", cfg], capture_output=True, text=True)
    assert c.returncode == 0, f"aio block does not parse: {c.stderr}\n" + "\n".join(block)
    got = dict(l.strip().split(": ", 1) for l in block[1:])
    assert got["block_size"] == "262144" and got["queue_depth"] in ("2", "4"), got
    assert "intra_op_parallelism" in got and "num_threads" not in got
    os.unlink(cfg)
    assert scratch_files(d) == []


@test
def named_file_is_kept(d):
    path = os.path.join(d, "kept.dat")
    p = run("--file", path, "--size", "4M", "--block-size", "1M", "--queue-depth", "4",
            "--threads", "1", "--rw", "read", "--loops", "1", "--json")
    assert p.returncode == 0, p.stderr
    assert os.path.getsize(path) >= 4 << 20
    out = json.loads(p.stdout)
    assert out["settings"]["file"] == path
    os.unlink(path)


@test
def ctrl_c_removes_the_file(d):
    proc = subprocess.Popen([ZINC, "nvme-bench", "--path", d, "--size", "512M", "--block-size",
                             "128K", "--queue-depth", "1", "--threads", "1", "--loops", "20"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not scratch_files(d) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)
    assert proc.poll() is None, "benchmark ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (proc.returncode, err)
    assert "interrupted" in err, err
    assert scratch_files(d) == [], "scratch file left after Ctrl-C"



@test
def a_run_swapping_there_is_said(d):
    """A training run holding the directory's swap lock (a process with
    its flock) shares the disk: the bench says so, names the holder's pid,
    measures anyway and leaves the run's lock alone."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys, time\n"
         "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\n"
         "os.write(fd, b'%d %d@h\\n' % (os.getpid(), os.getpid()))\n"
         "print('locked', flush=True)\n"
         "time.sleep(60)\n", os.path.join(d, "zinc-swap.lock")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        p = run("--path", d, "--size", "4M", "--block-size", "1M", "--queue-depth", "4",
                "--threads", "1", "--rw", "read", "--loops", "1", "--json")
        assert p.returncode == 0, p.stderr
        assert "in use by another run" in p.stderr and str(holder.pid) in p.stderr, p.stderr
        assert "include that run's traffic" in p.stderr, p.stderr
        assert os.path.exists(os.path.join(d, "zinc-swap.lock"))
        json.loads(p.stdout)
    finally:
        holder.kill()
        holder.wait()
    # No holder: nothing said, and no lock file left behind.
    p = run("--path", d, "--size", "4M", "--block-size", "1M", "--queue-depth", "4",
            "--threads", "1", "--rw", "read", "--loops", "1", "--json")
    assert p.returncode == 0 and "in use" not in p.stderr, p.stderr
    assert not os.path.exists(os.path.join(d, "zinc-swap.lock"))


if __name__ == "__main__":
    sys.exit(t.main())
