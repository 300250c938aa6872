#!/usr/bin/env python3
"""`zinc adam-bench` as a user runs it: bad input, the JSON object, every
SIMD path, ZINC_SIMD.  Small arrays: this checks behaviour, not speed.

TAP output for meson.  Needs $ZINC_BIN (the zinc binary).
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tap import TapRunner  # noqa: E402

ZINC = os.environ.get("ZINC_BIN", "zinc")
t = TapRunner(scratch=False)
test = t.test


def run(*args, env=None, timeout=120):
    e = dict(os.environ)
    e.pop("ZINC_SIMD", None)
    e.update(env or {})
    return subprocess.run([ZINC, "adam-bench", *args], capture_output=True, text=True,
                          timeout=timeout, env=e)


@test
def bad_input_exits_2():
    cases = [["--bogus"], ["--n", "0"], ["--n", "12Q"], ["--threads", "0"],
             ["--grad-dtype", "fp8"], ["--param-copy", "fp32"], ["--simd", "sse9"],
             ["--optimizer", "rmsprop"], ["--reps", "0"], ["extra"], ["--n"],
             ["--n", "60G"]]
    for args in cases:
        p = run(*args)
        assert p.returncode == 2, f"{args}: exit {p.returncode}, stderr {p.stderr!r}"
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1, f"{args}: want one line of error, got {p.stderr!r}"
        assert lines[0].startswith("zinc adam-bench: "), lines[0]
    p = run("--n", "60G")
    assert "memory" in p.stderr and "--n" in p.stderr, p.stderr


@test
def json_object():
    p = run("--n", "100003", "--threads", "2", "--reps", "3", "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    need = {"n", "threads", "simd", "hugepages", "adam_gelem_s", "adam_gb_s", "stream7_gb_s",
            "triad_gb_s", "ratio"}
    assert need <= set(d), sorted(need - set(d))
    assert d["n"] == 100003 and d["threads"] == 2 and d["reps"] == 3
    assert d["simd"] in ("scalar", "avx2", "avx512")
    assert 0 <= d["hugepages"] <= 1
    for k in ("adam_gelem_s", "adam_gb_s", "stream7_gb_s", "triad_gb_s", "ratio"):
        assert d[k] > 0, (k, d)
    assert d["adam_bytes_per_elem"] == 28
    assert abs(d["ratio"] - d["adam_gb_s"] / d["stream7_gb_s"]) < 1e-3 * d["ratio"]
    assert abs(d["adam_gb_s"] / d["adam_gelem_s"] - 28) < 1e-3
    # GB/s are bytes per element x n / time: 28 for Adam and its stream
    assert abs(d["adam_gb_s"] * d["adam_ms"] * 1e6 / (28 * d["n"]) - 1) < 1e-3
    assert abs(d["stream7_gb_s"] * d["stream7_ms"] * 1e6 / (28 * d["n"]) - 1) < 1e-3


@test
def dtypes_and_copy_counted():
    for g, c, bytes_ in (("fp16", "none", 26), ("bf16", "bf16", 28), ("fp32", "fp16", 30)):
        p = run("--n", "50000", "--reps", "1", "--grad-dtype", g, "--param-copy", c, "--json")
        assert p.returncode == 0, p.stderr
        d = json.loads(p.stdout)
        assert d["grad_dtype"] == g and d["param_copy"] == c, d
        assert d["adam_bytes_per_elem"] == bytes_, d
    # Lamb: two passes (24 + 16 bytes), SGD: param and momentum buffer (20)
    for o, bytes_ in (("adagrad", 20), ("lion", 20), ("lamb", 40), ("sgd", 20)):
        p = run("--n", "50000", "--reps", "1", "--optimizer", o, "--json")
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["adam_bytes_per_elem"] == bytes_


@test
def every_simd_path():
    seen = 0
    for simd in ("scalar", "avx2", "avx512"):
        p = run("--n", "40000", "--reps", "1", "--simd", simd, "--json")
        if p.returncode == 2:
            assert "lacks" in p.stderr, p.stderr  # this CPU has no such path
            continue
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["simd"] == simd
        seen += 1
    assert seen >= 1
    # ZINC_SIMD forces a path when --simd is not given, and bad values stop it.
    p = run("--n", "40000", "--reps", "1", "--json", env={"ZINC_SIMD": "scalar"})
    assert p.returncode == 0 and json.loads(p.stdout)["simd"] == "scalar", p.stderr
    p = run("--n", "40000", "--reps", "1", env={"ZINC_SIMD": "neon"})
    assert p.returncode == 2 and "ZINC_SIMD=neon" in p.stderr, p.stderr


@test
def table_and_layouts():
    p = run("--n", "70000", "--reps", "2", "--threads", "1")
    assert p.returncode == 0, p.stderr
    for word in ("adam-shaped stream", "STREAM triad", "ratio adam / adam-shaped stream",
                 "staggered", "1 thread"):
        assert word in p.stdout, (word, p.stdout)
    p = run("--n", "70000", "--reps", "1", "--no-stagger", "--no-huge-pages", "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["staggered"] is False and d["hugepages"] == 0, d
    p = run("--help")
    assert p.returncode == 0 and "--grad-dtype" in p.stdout


if __name__ == "__main__":
    sys.exit(t.main())
