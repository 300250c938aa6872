#!/usr/bin/env python3
"""`zinc offload-bench` as a user runs it: bad input, JSON fields, the trace.

TAP output for meson.  Needs $ZINC_BIN and $ZINC_TEST_DIR.
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tap import TapRunner  # noqa: E402

ZINC = os.environ.get("ZINC_BIN", "zinc")
t = TapRunner(scratch=True)
test = t.test


def run(*args):
    return subprocess.run([ZINC, "offload-bench", *args], capture_output=True, text=True,
                          timeout=240)


def swap_files(d):
    return [n for n in os.listdir(d) if n.startswith("zinc-swap-")]


@test
def bad_input_exits_2(d):
    for args in (["--bogus"], [], ["--path", d, "--params", "0"],
                 ["--path", os.path.join(d, "missing")], ["--path", d, "--buffer-count", "2"],
                 ["--path", d + ",,", "--params", "1M"], ["--path", d, "--config", "/nonexistent.yaml"]):
        p = run(*args)
        assert p.returncode == 2, f"{args}: exit {p.returncode}: {p.stderr!r}"
        assert p.stderr.startswith("zinc offload-bench: "), p.stderr
    assert swap_files(d) == []


@test
def json_fields_and_trace(d):
    d2 = os.path.join(d, "second")
    os.mkdir(d2)
    trace = os.path.join(d, "step.json")
    params, sub = 300000, 65536
    p = run("--path", f"{d},{d2}", "--params", str(params), "--sub-group", str(sub),
            "--loops", "1", "--threads", "1", "--json", "--trace", trace)
    assert p.returncode == 0, p.stderr
    o = json.loads(p.stdout)
    for k in ("params", "read_bytes", "write_bytes", "io_s", "adam_s", "bound_s", "step_s",
              "serial_s", "efficiency"):
        assert k in o, k
    assert o["params"] == params and o["paths"] == 2
    groups = -(-params // sub)
    stride = -(-sub * 4 // 4096) * 4096
    assert o["read_bytes"] == o["write_bytes"] == groups * 3 * stride, o
    assert o["bound_s"] == max(o["io_s"], o["adam_s"])
    assert abs(o["efficiency"] - o["bound_s"] / o["step_s"]) < 1e-3 * o["efficiency"]
    t = json.load(open(trace))
    names = {e["name"] for e in t["traceEvents"] if e["ph"] == "X"}
    assert {"read", "update", "write"} <= names, names
    reads = [e for e in t["traceEvents"] if e.get("name") == "read"]
    assert len(reads) == groups, (len(reads), groups)
    assert swap_files(d) == [] and swap_files(d2) == []


if __name__ == "__main__":
    sys.exit(t.main())
