#!/usr/bin/env python3
"""Faults against a whole `zinc train` (suite slow): what docs/guarantees.md
promises, each checked by breaking a run the way the world does.

  - a kill at each system call of a checkpoint save (strace's fault
    injection: the process gets SIGKILL as it enters the Nth call of a
    kind), then a resume: its losses are those of a run never killed, bit
    for bit, and no half-written directory survives the next save;
  - a `latest` that names no checkpoint: the resume goes on as if it were
    not there;
  - resource limits (prlimit): too few file descriptors, too little address
    space, too small a file-size limit, no locked memory for io_uring --
    each a message naming the limit and the number the run needs, exit 2,
    never a hang (every run here has a timeout);
  - a checkpoint directory without room for one checkpoint (a 256 KiB tmpfs
    in a private mount namespace) or that the user cannot write: refused
    before the first step.

Flipped bytes in checkpoints, two runs on one directory and a second
SIGINT are in tests/test_train_cli.py (damaged_checkpoints_fall_back,
a_second_run_on_the_same_directories_refuses, signals_and_saving_once).

TAP output.  Needs $ZINC_BIN and $ZINC_TEST_DIR; the kills need strace
(tools/setup.sh installs it), the locked-memory and unwritable-directory
cases a way to drop root (setpriv), the full disk a mount namespace: each
reports skip without.
"""
import json
import os
import shutil
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shards  # noqa: E402
from tap import Skip, TapRunner  # noqa: E402

ZINC = os.environ.get("ZINC_BIN", "zinc")
t = TapRunner(scratch=True)
# No run here may take longer: a hang is a failure, not a stuck suite.
TIMEOUT = 120

CONFIG = """
train_micro_batch_size_per_gpu: 4
gradient_accumulation_steps: 1
gradient_clipping: 1.0
optimizer: {{type: AdamW, params: {{lr: 0.003, betas: [0.9, 0.95], weight_decay: 0.1}}}}
scheduler: {{type: WarmupDecayLR, params: {{warmup_max_lr: 0.003, warmup_num_steps: 2,
             total_num_steps: 20, warmup_type: linear}}}}
model: {{n_layer: 2, n_head: 2, n_embd: 32, vocab_size: 256, seq_len: 32}}
data: {{train: "{d}/data/t_train_*.bin", seed: 7}}
checkpoint: {{dir: "{ckpt}", every: 2, keep: 2, resume: true}}
{extra}
"""
NVME = ("zero_optimization: {{stage: 3, stage3_param_persistence_threshold: 0, "
        "sub_group_size: 9000, offload_param: {{device: nvme, max_in_cpu: 0, "
        "nvme_path: \"{swap}\"}}, offload_optimizer: {{device: nvme, nvme_path: \"{swap}\"}}}}")


def make_data(d):
    shards.make(d, ZINC, timeout=TIMEOUT)


def config(d, name, ckpt, extra=""):
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write(CONFIG.format(d=d, ckpt=ckpt, extra=extra))
    return path


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, **kw)


def train(cfg, steps, *args, prefix=(), **kw):
    return run([*prefix, ZINC, "train", cfg, "--max-steps", str(steps), *args], **kw)


def log(path):
    return {s["step"]: s for s in map(json.loads, open(path))}


def need_strace():
    if not shutil.which("strace"):
        raise Skip("strace is not installed (tools/setup.sh installs it)")
    p = run(["strace", "-f", "-qq", "-o", os.devnull, "-e", "trace=getppid", "-e",
             "inject=getppid:signal=KILL", sys.executable, "-c", "import os; os.getppid()"])
    if p.returncode not in (-signal.SIGKILL, 128 + signal.SIGKILL):
        raise Skip("strace cannot inject a signal here: %s" % p.stderr.strip()[:120])


def main_thread_syscalls(trace, pid):
    """The main thread's system calls in order, from an `strace -f` log."""
    calls = []
    for line in open(trace):
        parts = line.split(None, 1)
        if len(parts) < 2 or parts[0] != str(pid) or parts[1].startswith("<..."):
            continue
        name = parts[1].split("(", 1)[0]
        if name.isidentifier():
            calls.append((name, parts[1]))
    return calls


@t.test
def a_kill_at_each_call_of_a_save_resumes_bit_identically(d):
    """The save of step 4 (resumed from step 2) is traced once to list the
    main thread's system calls from the temporary directory's mkdir to the
    last fsync after `latest` (those of the file system: a lock's or the
    allocator's depend on other threads); then for each of them (every call of the
    rare kinds, a sample of the writes and opens) a run is killed as it
    enters that call, and resumed to step 6: every step it logs is the
    uninterrupted run's, bit for bit, and no step-N.tmp-PID is left.  With
    the states on the device, and with parameters and optimizer states on
    NVMe (whose save reads them back through io_uring)."""
    need_strace()
    make_data(d)
    swap = os.path.join(d, "swap")
    os.mkdir(swap)
    for name, extra in (("device", ""), ("nvme", NVME.format(swap=swap))):
        kills = kill_each_call_of_a_save(os.path.join(d, name), d, extra)
        assert kills >= 30, (name, "the save was hardly aimed at", kills)


def kill_each_call_of_a_save(d, data, extra):
    """Kill a save at each of its calls and resume each (asserting as the
    test says); the number of kills."""
    os.mkdir(d)
    os.symlink(os.path.join(data, "data"), os.path.join(d, "data"))
    # The run never killed: steps 1-6, saved at 2, 4 and 6.
    ref_ck = os.path.join(d, "ck-ref")
    cfg = config(d, "ref.yaml", ref_ck, extra)
    p = train(cfg, 6, "--json-log", os.path.join(d, "ref.jsonl"))
    assert p.returncode == 0, p.stderr
    ref = log(os.path.join(d, "ref.jsonl"))
    assert sorted(ref) == [1, 2, 3, 4, 5, 6], sorted(ref)
    # Step 2's checkpoint, the starting point of every killed run.
    base = os.path.join(d, "ck-base")
    p = train(config(d, "base.yaml", base, extra), 2)
    assert p.returncode == 0, p.stderr

    # The save's system calls, as the main thread makes them.
    ck = os.path.join(d, "ck")
    shutil.copytree(base, ck)
    trace = os.path.join(d, "trace.txt")
    cfg = config(d, "c.yaml", ck, extra)
    p = run(["strace", "-f", "-qq", "-o", trace, ZINC, "train", cfg, "--max-steps", "4"])
    assert p.returncode == 0, p.stderr
    pid = int(open(trace).readline().split()[0])
    calls = main_thread_syscalls(trace, pid)
    first = next(i for i, (n, a) in enumerate(calls) if n == "mkdir" and ".tmp-" in a)
    last = max(i for i, (n, a) in enumerate(calls) if n in ("rename", "renameat2") and
               "latest" in a)
    last = next(i for i in range(last, len(calls)) if calls[i][0] == "fsync")
    # Calls whose count before the save depends on other threads' timing
    # (locks, yields, the allocator's) cannot be aimed at: the file
    # system's are.
    timing = {"futex", "sched_yield", "nanosleep", "clock_nanosleep", "brk", "mmap", "munmap",
              "madvise", "mprotect", "rt_sigprocmask"}
    seen, targets = {}, []
    for i, (name, _) in enumerate(calls[:last + 1]):
        seen[name] = seen.get(name, 0) + 1
        if i >= first and name not in timing:
            targets.append((name, seen[name]))
    kinds = {}
    for name, nth in targets:
        kinds.setdefault(name, []).append(nth)
    plan = []
    for name, nths in sorted(kinds.items()):
        if len(nths) > 6:  # the many writes and opens: first, last, between
            nths = sorted({nths[int(k * (len(nths) - 1) / 5)] for k in range(6)})
        plan += [(name, n) for n in nths]
    assert {"mkdir", "fsync", "rename", "pwrite64"} <= set(kinds), sorted(kinds)
    print("# %d calls in the save (%s); killing at %d of them" %
          (len(targets), ", ".join("%s x%d" % (k, len(v)) for k, v in sorted(kinds.items())),
           len(plan)))

    for name, nth in plan:
        shutil.rmtree(ck)
        shutil.copytree(base, ck)
        # (strace injects only into calls it traces: this one, to nowhere)
        p = run(["strace", "-f", "-qq", "-o", os.devnull, "-e", "trace=" + name, "-e",
                 "inject=%s:signal=KILL:when=%d" % (name, nth), ZINC, "train", cfg,
                 "--max-steps", "4"])
        assert p.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL), \
            (name, nth, "not killed", p.returncode, p.stderr[-500:])
        jl = os.path.join(d, "resume.jsonl")
        if os.path.exists(jl):
            os.unlink(jl)
        r = train(cfg, 6, "--json-log", jl)
        assert r.returncode == 0, (name, nth, r.stderr[-2000:])
        got = log(jl)
        assert got and max(got) == 6 and min(got) in (3, 5), (name, nth, sorted(got))
        for step, s in got.items():
            for key in ("loss", "grad_norm", "lr"):
                assert s[key] == ref[step][key], (name, nth, step, key, s[key], ref[step][key])
        left = [x for x in os.listdir(ck) if ".tmp" in x]
        assert not left, (name, nth, "left behind", left)
    return len(plan)


@t.test
def a_dangling_latest_is_ignored(d):
    """`latest` naming a step that is not there (a copy that lost it, a
    hand edit): the resume takes the newest complete checkpoint anyway."""
    make_data(d)
    ck = os.path.join(d, "ck")
    cfg = config(d, "c.yaml", ck)
    p = train(cfg, 6, "--json-log", os.path.join(d, "ref.jsonl"))
    assert p.returncode == 0, p.stderr
    ref = log(os.path.join(d, "ref.jsonl"))
    shutil.rmtree(ck)
    p = train(cfg, 4)
    assert p.returncode == 0, p.stderr
    with open(os.path.join(ck, "latest"), "w") as f:
        f.write("step-00000099\n")
    jl = os.path.join(d, "resume.jsonl")
    p = train(cfg, 6, "--json-log", jl)
    assert p.returncode == 0, p.stderr
    got = log(jl)
    assert sorted(got) == [5, 6], sorted(got)
    assert all(got[s]["loss"] == ref[s]["loss"] for s in got), (got, ref)


def limited(d, name, limit, extra=""):
    """A run under `prlimit LIMIT`: its result."""
    ck = os.path.join(d, "ck-" + name)
    return train(config(d, name + ".yaml", ck, extra), 2, prefix=("prlimit", limit))


@t.test
def resource_limits_are_named_before_training(d):
    """Each limit too low for the run: a message naming the limit, what the
    run needs and how to raise it, exit 2 before the first step, within
    the timeout (an address-space limit used to make OpenBLAS's allocator
    retry for ever); a soft limit below the need with a hard one above it
    is raised and the run trains."""
    if not shutil.which("prlimit"):
        raise Skip("prlimit (util-linux) is not installed")
    make_data(d)
    swap = os.path.join(d, "swap")
    os.mkdir(swap)
    nvme = NVME.format(swap=swap)
    cases = [
        ("nofile", "--nofile=24", nvme, "open-file limit (ulimit -n) is 24", "ulimit -n "),
        ("as", "--as=%d" % (300 << 20), "", "address-space limit (ulimit -v)", "ulimit -v "),
        ("fsize", "--fsize=%d" % (64 << 10), nvme, "file-size limit (ulimit -f)", "ulimit -f "),
    ]
    for name, limit, extra, what, how in cases:
        p = limited(d, name, limit, extra)
        assert p.returncode == 2, (name, p.returncode, p.stderr[-2000:])
        assert what in p.stderr and how in p.stderr, (name, p.stderr)
        assert "step " not in p.stdout, (name, p.stdout)
        # The advice works: the limit it names (KiB for -v and -f, as bash
        # counts them) lets the same run train.
        n = int(p.stderr.split("`" + how, 1)[1].split("`", 1)[0])
        scale = 1 if name == "nofile" else 1024
        p = limited(d, name + "-advised", limit.split("=")[0] + "=%d" % (n * scale), extra)
        assert p.returncode == 0, (name, "with the advised limit", p.stderr[-2000:])
    # Soft limits below, hard ones above: raised, and the run trains.
    for name, limit, extra in (("nofile-soft", "--nofile=24:4096", nvme),
                               ("fsize-soft", "--fsize=%d:unlimited" % (64 << 10), nvme)):
        p = limited(d, name, limit, extra)
        assert p.returncode == 0, (name, p.stderr[-2000:])


def as_nobody(d):
    """A command prefix that runs as an unprivileged user without
    capabilities (root ignores permissions and RLIMIT_MEMLOCK), or Skip."""
    if not shutil.which("setpriv"):
        raise Skip("setpriv (util-linux) is not installed")
    if os.geteuid() == 0:
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                  "--inh-caps=-all", "--bounding-set=-all"]
    else:
        prefix = []
    p = run(prefix + [ZINC, "--version"])
    if p.returncode != 0:
        raise Skip("cannot run zinc as an unprivileged user here: %s" % p.stderr.strip()[:120])
    # The scratch tree must be theirs to read and write.
    for root, dirs, files in os.walk(d):
        for x in dirs + files:
            os.chmod(os.path.join(root, x), 0o777 if x in dirs else 0o666)
    os.chmod(d, 0o777)
    return prefix


@t.test
def locked_memory_and_permissions_as_a_user(d):
    """As an unprivileged user: with no locked memory (ulimit -l 0) a
    kernel that counts io_uring's rings against it cannot make one, and
    the run says so, naming the limit (exit 2; where the kernel does not
    count them, the run trains with unpinned buffers and one warning); with
    room for the rings but not the swap buffers, it trains on unpinned
    buffers with one warning; a checkpoint directory the user cannot write
    is refused before training, naming it."""
    make_data(d)
    swap = os.path.join(d, "swap")
    os.mkdir(swap)
    prefix = as_nobody(d)
    cfg = config(d, "memlock.yaml", os.path.join(d, "ck-memlock"), NVME.format(swap=swap))
    os.chmod(cfg, 0o666)
    p = train(cfg, 2, prefix=prefix + ["prlimit", "--memlock=0"])
    if p.returncode == 0:
        assert "locked-memory limit" in p.stderr, p.stderr  # the plan's warning
    else:
        assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
        assert "locked-memory limit (ulimit -l) is 0 KiB" in p.stderr, p.stderr
        assert "raise it" in p.stderr, p.stderr
    # Room for the rings, not for the swap buffers: the run trains on
    # unpinned buffers, saying so once (not once per pool and again for
    # the fixed-buffer registration).
    cfg = config(d, "memlock64k.yaml", os.path.join(d, "ck-memlock64k"), NVME.format(swap=swap))
    os.chmod(cfg, 0o666)
    p = train(cfg, 2, prefix=prefix + ["prlimit", "--memlock=%d" % (256 << 10)])
    assert p.returncode == 0, (p.returncode, p.stderr[-2000:])
    warnings = [x for x in p.stderr.splitlines()
                if "warning" in x and ("memory plan" in x or "pin_memory" in x or
                                       "buffer pool" in x)]
    assert len(warnings) == 1 and "unpinned" in warnings[0], warnings
    ro = os.path.join(d, "readonly")
    os.mkdir(ro)
    os.chmod(ro, 0o555)
    cfg = config(d, "ro.yaml", os.path.join(ro, "ck"))
    os.chmod(cfg, 0o666)
    p = train(cfg, 2, prefix=prefix)
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    assert ro in p.stderr and "step " not in p.stdout, p.stderr


@t.test
def a_checkpoint_directory_without_room_is_refused(d):
    """checkpoint.dir on a 256 KiB tmpfs (a private mount namespace) cannot
    hold one checkpoint of this model (about 570 KiB): refused before the
    first step, naming the directory, what is free and what one needs."""
    make_data(d)
    ck = os.path.join(d, "ck")
    os.mkdir(ck)
    probe = run(["unshare", "-m", "sh", "-c", 'mount -t tmpfs -o size=256k none "$1"', "sh", ck])
    if probe.returncode != 0:
        raise Skip("no private mount namespace here: %s" % probe.stderr.strip()[:80])
    cfg = config(d, "c.yaml", ck)
    script = 'mount -t tmpfs -o size=256k none "$1" && shift && exec "$@"'
    p = run(["unshare", "-m", "sh", "-c", script, "sh", ck, ZINC, "train", cfg, "--max-steps",
             "2"])
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    assert "checkpoint.dir '%s' has" % ck in p.stderr and "one checkpoint" in p.stderr, p.stderr
    assert "step " not in p.stdout, p.stdout


if __name__ == "__main__":
    sys.exit(t.main())
