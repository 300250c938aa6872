#!/usr/bin/env python3
"""`zinc prepare-data`: text in, llm.c token shards out (TAP for meson).

The shards are checked here byte by byte with Python's struct, against the
format llm.c's dev/data/data_common.py writes: 256 little-endian int32s
(magic 20240520, version 1, token count), then uint16 tokens.
"""
import glob
import os
import random
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tap import TapRunner  # noqa: E402

ZINC = os.environ.get("ZINC_BIN", "zinc")

t = TapRunner(scratch=True)
check = t.test


def run(*args):
    return subprocess.run([ZINC, "prepare-data", *args], capture_output=True, text=True)


def read_shard(path):
    with open(path, "rb") as f:
        data = f.read()
    assert len(data) >= 1024, f"{path}: {len(data)} bytes"
    magic, version, ntok = struct.unpack_from("<3i", data, 0)
    assert magic == 20240520, f"{path}: magic {magic}"
    assert version == 1, f"{path}: version {version}"
    assert struct.unpack_from("<253i", data, 12) == (0,) * 253, f"{path}: header not zeroed"
    assert len(data) == 1024 + 2 * ntok, f"{path}: {len(data)} bytes for {ntok} tokens"
    return list(struct.unpack_from(f"<{ntok}H", data, 1024))


def shards(d, prefix, split):
    return sorted(glob.glob(os.path.join(d, f"{prefix}_{split}_*.bin")))


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return path


def text_files(d, n=3, size=5000, seed=1):
    rng = random.Random(seed)
    paths = []
    for i in range(n):
        # Every byte value, then random text-like bytes.
        data = bytes(range(256)) + bytes(rng.choice(b"abcdefgh \n\xc3\xa9") for _ in range(size))
        paths.append(write(os.path.join(d, f"in{i}.txt"), data))
    return paths


def one_line_error(p):
    assert p.returncode == 2, f"exit {p.returncode}, stderr: {p.stderr}"
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, f"want one line on stderr, got: {p.stderr!r}"
    assert lines[0].startswith("zinc prepare-data: "), lines[0]
    return lines[0]


@check
def round_trip_with_val_split(d):
    ins = text_files(d)
    out = os.path.join(d, "out")
    p = run("--out", out, "--shard-tokens", "4000", "--val-fraction", "0.25", *ins)
    assert p.returncode == 0, p.stderr
    want = []
    for path in ins:  # separator 0 before each document
        with open(path, "rb") as f:
            want += [0] + list(f.read())
    nval = -(-len(want) * 25 // 100)  # ceil
    train = [read_shard(s) for s in shards(out, "data", "train")]
    val = [read_shard(s) for s in shards(out, "data", "val")]
    assert sum(train, []) == want[:len(want) - nval]
    assert sum(val, []) == want[len(want) - nval:]
    for split in (train, val):
        assert all(len(s) == 4000 for s in split[:-1]) and 0 < len(split[-1]) <= 4000
    assert os.path.basename(shards(out, "data", "train")[0]) == "data_train_000000.bin"
    assert sorted(os.listdir(out)) == sorted(os.path.basename(s) for s in
                                             shards(out, "data", "train") +
                                             shards(out, "data", "val")), "stray files"
    assert "validation shard" in p.stdout


@check
def separators_and_globs(d):
    write(os.path.join(d, "b.txt"), b"second")
    write(os.path.join(d, "a.txt"), b"first")
    out = os.path.join(d, "o1")
    p = run("--separator", "none", "--out", out, os.path.join(d, "*.txt"))
    assert p.returncode == 0, p.stderr
    assert read_shard(shards(out, "data", "train")[0]) == list(b"firstsecond")
    assert shards(out, "data", "val") == []
    # Options after the inputs, another separator and prefix.
    out = os.path.join(d, "o2")
    p = run(os.path.join(d, "a.txt"), os.path.join(d, "b.txt"), "--out", out,
            "--separator", "10", "--prefix", "tiny")
    assert p.returncode == 0, p.stderr
    assert read_shard(shards(out, "tiny", "train")[0]) == list(b"\nfirst\nsecond")


@check
def refuses_to_overwrite_unless_forced(d):
    ins = text_files(d, n=1, size=3000)
    out = os.path.join(d, "out")
    assert run("--out", out, "--shard-tokens", "1000", *ins).returncode == 0
    before = {s: open(s, "rb").read() for s in shards(out, "data", "train")}
    assert len(before) == 4
    line = one_line_error(run("--out", out, "--shard-tokens", "1000", *ins))
    assert "--force" in line, line
    assert {s: open(s, "rb").read() for s in shards(out, "data", "train")} == before
    # --force replaces, and removes old shards the new set does not cover.
    p = run("--out", out, "--shard-tokens", "2000", "--force", *ins)
    assert p.returncode == 0, p.stderr
    now = shards(out, "data", "train")
    assert [os.path.basename(s) for s in now] == ["data_train_000000.bin", "data_train_000001.bin"]
    assert len(read_shard(now[0])) == 2000
    # A loss mask beside an old shard is refused too, and removed by --force
    # (it would apply to the new shard of the same name).
    write(os.path.join(out, "data_train_000000.mask"), b"old")
    line = one_line_error(run("--out", out, *ins))
    assert "data_train_000000.mask" in line, line
    assert run("--out", out, "--force", *ins).returncode == 0
    assert not os.path.exists(os.path.join(out, "data_train_000000.mask"))
    # Another prefix is another data set: no conflict.
    assert run("--out", out, "--prefix", "other", *ins).returncode == 0


@check
def bad_input_exits_2(d):
    ins = text_files(d, n=1, size=100)
    out = os.path.join(d, "out")
    empty = write(os.path.join(d, "empty.txt"), b"")
    afile = write(os.path.join(d, "afile"), b"x")
    os.mkdir(os.path.join(d, "adir"))
    cases = [
        (["--out", out, os.path.join(d, "missing.txt")], "missing.txt"),
        (["--out", out, os.path.join(d, "nope*.txt")], "no file matches"),
        (["--out", out, os.path.join(d, "adir")], "not a regular file"),
        (["--out", out, "--separator", "none", empty], "no text"),
        (["--out", out, "--val-fraction", "1.5", *ins], "--val-fraction"),
        (["--out", out, "--val-fraction", "x", *ins], "--val-fraction"),
        (["--out", out, "--shard-tokens", "0", *ins], "--shard-tokens"),
        (["--out", out, "--separator", "256", *ins], "--separator"),
        ([*ins], "--out"),
        (["--out", out], "no input"),
        (["--out", out, "--prefix", "a/b", *ins], "--prefix"),
        (["--out", afile, *ins], "not a directory"),
        (["--out", out, "--bogus", *ins], "--bogus"),
    ]
    for args, needle in cases:
        line = one_line_error(run(*args))
        assert needle in line, f"{args}: {line}"
    assert not os.path.exists(out) or os.listdir(out) == [], "files left behind"


@check
def failure_leaves_no_files(d):
    # A file whose size changes between planning and reading (procfs
    # reports 0 bytes, then yields text) fails the run after several
    # shards were written: none may remain, temporary or final.
    big = text_files(d, n=1, size=20000)
    out = os.path.join(d, "out")
    p = run("--out", out, "--shard-tokens", "1000", *big, "/proc/self/status")
    assert p.returncode == 1, f"exit {p.returncode}: {p.stderr}"
    assert "changed while it was read" in p.stderr, p.stderr
    assert os.listdir(out) == [], f"left behind: {os.listdir(out)}"


@check
def help_lists_options(d):
    p = subprocess.run([ZINC, "prepare-data", "--help"], capture_output=True, text=True)
    assert p.returncode == 0
    for opt in ("--out", "--shard-tokens", "--val-fraction", "--prefix", "--force",
                "--separator"):
        assert opt in p.stdout, opt


@check
def system_licenses(d):
    # The README's job: a fresh Debian machine's own text.  (Where the
    # directory does not exist, the generated-text tests above cover it.)
    src = "/usr/share/common-licenses"
    if not os.path.isdir(src):
        print(f"# {src} not present; checked with generated text only")
        return
    out = os.path.join(d, "out")
    p = run("--out", out, "--val-fraction", "0.1", src + "/*")
    assert p.returncode == 0, p.stderr
    train = sum((read_shard(s) for s in shards(out, "data", "train")), [])
    val = sum((read_shard(s) for s in shards(out, "data", "val")), [])
    assert len(train) > 10000 and len(val) > 1000, (len(train), len(val))
    assert max(train + val) < 256


if __name__ == "__main__":
    sys.exit(t.main())
