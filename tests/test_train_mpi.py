#!/usr/bin/env python3
"""`zinc train` on two CPU ranks under mpirun (suite mpi): ZeRO stages 0-3
with every offload placement against one rank with twice the gradient
accumulation, each rank's share of the model states, checkpoints that
resume on another number of ranks, `zinc consolidate`, and the errors of
ranks that disagree or die.

Why "the same losses as one rank with twice the accumulation": the ranks
take turns along the one stream of windows a single rank reads (rank r the
r-th of each round), so the two runs see the same micro-batches in every
step, and the comm adds the ranks' gradients in rank order (g0 + g1).

Where the bits agree and where they cannot:
  - every parameter offloaded (stage 3, persistence threshold 0): both runs
    add whole micro-batch gradients on the host, g0 + g1 -- bit-identical
    losses, and the checkpoints consolidate to the same bytes;
  - tensors resident on the device (stages 0-2, or stage 3 without offload):
    one rank lets the backward kernels add micro-batch 1's contributions
    into micro-batch 0's gradient buffer term by term (a bias gradient is
    ((g0 + r1) + r2) ...), while two ranks sum whole gradients, g0 + g1.
    Floating-point addition is not associative, so the runs drift by
    rounding: losses agree within 1e-6 relative in fp32 (measured 3e-9 over
    8 steps) and 1e-4 in bf16 (measured 7e-6: bf16 rounds each update).

TAP output.  Needs $ZINC_BIN, $ZINC_TEST_DIR and $ZINC_MPIRUN (meson sets
it when Open MPI was found; otherwise every test reports skip).
"""
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shards  # noqa: E402
from tap import Skip, TapRunner  # noqa: E402

ZINC = os.environ.get("ZINC_BIN", "zinc")
MPIRUN = os.environ.get("ZINC_MPIRUN", "")
t = TapRunner(scratch=True)

CONFIG = """
train_micro_batch_size_per_gpu: 4
gradient_accumulation_steps: {acc}
gradient_clipping: 1.0
optimizer: {{type: AdamW, params: {{lr: 0.003, betas: [0.9, 0.95], weight_decay: 0.1}}}}
scheduler: {{type: WarmupDecayLR, params: {{warmup_max_lr: 0.003, warmup_num_steps: 5,
             total_num_steps: 40, warmup_type: linear}}}}
model: {{n_layer: 2, n_head: 2, n_embd: 32, vocab_size: 256, seq_len: 32}}
data: {{train: "{d}/data/t_train_*.bin", seed: 7}}
checkpoint: {{dir: "{ckpt}", every: {every}, keep: 3, resume: {resume}}}
{extra}
"""
BF16 = "bf16: {enabled: true}"


def placements(d):
    o, p = os.path.join(d, "o"), os.path.join(d, "p")
    os.makedirs(o, exist_ok=True)
    os.makedirs(p, exist_ok=True)
    opt_nvme = "offload_optimizer: {device: nvme, nvme_path: \"%s\"}" % o
    par_nvme = "offload_param: {device: nvme, max_in_cpu: 0, nvme_path: \"%s\"}" % p
    return {
        # name: (zero_optimization, exact)
        "s0": ("{stage: 0}", False),
        "s1-none": ("{stage: 1}", False),
        "s1-cpu": ("{stage: 1, offload_optimizer: {device: cpu}}", False),
        "s1-nvme": ("{stage: 1, sub_group_size: 5000, %s}" % opt_nvme, False),
        "s2-none": ("{stage: 2}", False),
        "s2-cpu": ("{stage: 2, offload_optimizer: {device: cpu}}", False),
        "s2-nvme": ("{stage: 2, sub_group_size: 5000, %s}" % opt_nvme, False),
        # Stage 3 without offload: each rank's parts stay on the device.
        "s3-none": ("{stage: 3, stage3_param_persistence_threshold: 0}", False),
        "s3-cpu": ("{stage: 3, stage3_param_persistence_threshold: 0, offload_param: "
                   "{device: cpu}, offload_optimizer: {device: cpu}}", True),
        "s3-nvme": ("{stage: 3, sub_group_size: 7000, stage3_param_persistence_threshold: 0, "
                    "%s, %s}" % (par_nvme, opt_nvme), True),
        # Resident small tensors, host homes and NVMe homes at once.
        "s3-mixed": ("{stage: 3, sub_group_size: 7000, stage3_param_persistence_threshold: 200, "
                     "offload_param: {device: nvme, max_in_cpu: 10000, nvme_path: \"%s\"}, "
                     "%s}" % (p, opt_nvme), False),
    }


def need_mpi():
    if not MPIRUN:
        raise Skip("zinc was built without MPI, or mpirun is missing")


def make_data(d):
    shards.make(d, ZINC, count=40000)


def config(d, name, acc, extra, ckpt=None, resume=False, every=0):
    path = os.path.join(d, name + ".yaml")
    with open(path, "w") as f:
        f.write(CONFIG.format(d=d, acc=acc, extra=extra, ckpt=ckpt or os.path.join(d, "ck-" + name),
                              resume="true" if resume else "false", every=every))
    return path


def mpi(np_):
    return [MPIRUN, "--allow-run-as-root", "--oversubscribe", "-np", str(np_)]


def train(cfg, ranks, steps, jl=None, timeout=600):
    cmd = [ZINC, "train", cfg, "--max-steps", str(steps)]
    if jl:
        cmd += ["--json-log", jl]
    if ranks > 1:
        cmd = mpi(ranks) + cmd
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def log(path):
    return [json.loads(line) for line in open(path)]


def run_pair(d, name, zero, prec, steps=8):
    """One rank with accumulation 2, two ranks with 1: their step logs."""
    extra = "zero_optimization: " + zero + ("\n" + prec if prec else "")
    out = []
    for ranks, acc in ((1, 2), (2, 1)):
        tag = "%s-%d" % (name, ranks)
        jl = os.path.join(d, tag + ".jsonl")
        r = train(config(d, tag, acc, extra), ranks, steps, jl)
        assert r.returncode == 0, (tag, r.stderr[-2000:])
        out.append(log(jl))
    return out


@t.test
def two_ranks_match_one_rank_with_twice_the_accumulation(d):
    need_mpi()
    make_data(d)
    for prec, tol in (("", 1e-6), (BF16, 1e-4)):
        for name, (zero, exact) in placements(d).items():
            one, two = run_pair(d, name + ("-bf16" if prec else ""), zero, prec)
            la, lb = [s["loss"] for s in one], [s["loss"] for s in two]
            assert len(la) == len(lb) == 8, (name, len(la), len(lb))
            # The same tokens per step: 4 x 32 x 2.
            assert one[0]["tokens_per_s"] > 0 and two[0]["rank_memory"]["world"] == 2
            if exact:
                assert la == lb, (name, prec, la, lb)
            else:
                worst = max(abs(a - b) / abs(a) for a, b in zip(la, lb))
                assert worst <= tol, (name, prec, worst, la, lb)
            # The gradient norm is every rank's part once (a replica
            # counted twice would be sqrt(2) too large and clip wrongly).
            na, nb = [s["grad_norm"] for s in one], [s["grad_norm"] for s in two]
            worst = max(abs(a - b) / abs(a) for a, b in zip(na, nb))
            assert worst <= 10 * tol, (name, prec, "grad_norm", worst, na, nb)
            assert la[-1] < la[0] - 0.3, (name, "the loss does not fall", la)


@t.test
def lamb_and_sgd_over_ranks(d):
    """Lamb's trust ratio is each whole tensor's: with its parts on two
    ranks the norm sums are added over the ranks, so two ranks track one
    (the sums' rounding differs: 5e-9 relative over 8 steps measured, 1e-7
    allowed; ratios from each rank's part alone measured 1e-5).  SGD is
    elementwise."""
    need_mpi()
    make_data(d)
    # No clamping (at min_coeff 0.01 most tensors' ratios would be the
    # bound, the same with any sums), and a peak lr that moves them.
    lamb = "optimizer: {type: Lamb, params: {lr: 0.1, weight_decay: 0.01, min_coeff: 0, " \
        "max_coeff: 100}}"
    sgd = "optimizer: {type: SGD, params: {lr: 0.1, momentum: 0.9}}"
    cases = [(lamb, "s1-cpu"), (lamb, "s2-cpu"), (lamb, "s3-cpu"), (lamb, "s3-nvme"),
             (sgd, "s2-cpu"), (sgd, "s3-nvme")]
    adamw = CONFIG.splitlines()[4]
    assert adamw.startswith("optimizer:"), adamw
    for k, (opt, name) in enumerate(cases):
        zero, _ = placements(d)[name]
        out = []
        for ranks, acc in ((1, 2), (2, 1)):
            tag = "opt%d-%s-%d" % (k, name, ranks)
            cfg = config(d, tag, acc, "zero_optimization: " + zero)
            text = open(cfg).read()
            assert adamw.replace("{{", "{").replace("}}", "}") in text
            with open(cfg, "w") as f:
                f.write(text.replace(adamw.replace("{{", "{").replace("}}", "}"), opt)
                        .replace("warmup_max_lr: 0.003", "warmup_max_lr: 0.1"))
            jl = os.path.join(d, tag + ".jsonl")
            r = train(cfg, ranks, 8, jl)
            assert r.returncode == 0, (tag, r.stderr[-2000:])
            out.append(log(jl))
        la, lb = [s["loss"] for s in out[0]], [s["loss"] for s in out[1]]
        assert len(la) == len(lb) == 8, (name, len(la), len(lb))
        worst = max(abs(a - b) / abs(a) for a, b in zip(la, lb))
        assert worst <= 1e-7, (opt, name, worst, la, lb)
        assert la[-1] < la[0], (opt, name, "the loss does not fall", la)


@t.test
def buckets_and_overlap_do_not_change_a_bit(d):
    """reduce_bucket_size decides how many gradients one collective sums,
    allgather_bucket_size how many parameters one collective gathers,
    overlap_comm whether the sums run beside the backward: none may change a
    result.  Two ranks with accumulation 2 (so buckets mix micro-batches)."""
    need_mpi()
    make_data(d)
    pl = placements(d)
    for name, variants in (
            ("s2-cpu", ["reduce_bucket_size: 1000, overlap_comm: true",
                        "reduce_bucket_size: 50000, allgather_bucket_size: 2000",
                        "overlap_comm: false"]),
            ("s3-nvme", ["reduce_bucket_size: 3000, overlap_comm: true",
                         "overlap_comm: false"])):
        runs = []
        for k, v in enumerate(variants):
            zero = pl[name][0].replace("{stage: ", "{%s, stage: " % v, 1)
            tag = "%s-%d" % (name, k)
            jl = os.path.join(d, tag + ".jsonl")
            r = train(config(d, tag, 2, "zero_optimization: " + zero), 2, 5, jl)
            assert r.returncode == 0, (tag, r.stderr[-2000:])
            runs.append([s["loss"] for s in log(jl)])
        for other in runs[1:]:
            assert other == runs[0], (name, runs)


@t.test
def each_rank_holds_its_share(d):
    """ZeRO's memory: stage 1 partitions the optimizer states, stage 2 also
    the gradients, stage 3 also the parameters -- each rank holds about
    half of those on two ranks (by the engine's own accounting; parts are
    rounded up, so slightly more than half), and `zinc plan --ranks N`
    gives rank 0's figures, byte for byte, before training."""
    need_mpi()
    make_data(d)
    pl = placements(d)
    for name, kinds in (("s1-cpu", ["optimizer"]), ("s2-none", ["optimizer", "grads"]),
                        ("s2-nvme", ["optimizer", "grads"]),
                        ("s3-nvme", ["optimizer", "grads", "params"]),
                        ("s3-none", ["optimizer", "grads", "params"]),
                        ("s3-cpu", ["optimizer", "grads", "params"])):
        one, two = run_pair(d, name, pl[name][0], "", steps=2)
        m1, m2 = one[-1]["rank_memory"], two[-1]["rank_memory"]
        assert (m1["world"], m2["world"]) == (1, 2), (m1, m2)
        # zinc plan --ranks N says the same from the config alone.
        for ranks, m in ((1, m1), (2, m2)):
            cfg = os.path.join(d, "%s-%d.yaml" % (name, ranks))
            r = subprocess.run([ZINC, "plan", cfg, "--ranks", str(ranks), "--json"],
                               capture_output=True, text=True)
            assert r.returncode in (0, 1), (name, r.stderr)
            planned = json.loads(r.stdout)["ranks"][0]
            assert all(planned[k] == m[k] for k in ("params", "grads", "optimizer")), (
                name, ranks, planned, m)
        for k in kinds:
            assert 0 < m2[k] <= 0.5 * m1[k] * 1.01, (name, k, m1[k], m2[k])
        for k in set(("optimizer", "grads", "params")) - set(kinds):
            assert m2[k] >= 0.5 * m1[k], (name, k, "not partitioned at this stage", m1, m2)


@t.test
def checkpoints_resume_on_another_number_of_ranks(d):
    """2 ranks -> 1 rank and 1 -> 2 continue the loss curve of the run that
    never stopped (one rank, accumulation 2), bit for bit with every
    parameter offloaded; the parts consolidate to the bytes one rank
    saves."""
    need_mpi()
    make_data(d)
    zero = "zero_optimization: " + placements(d)["s3-nvme"][0]
    ref_jl = os.path.join(d, "ref.jsonl")
    ck_ref = os.path.join(d, "ck-ref")
    r = train(config(d, "ref", 2, zero, ckpt=ck_ref, every=4), 1, 8, ref_jl)
    assert r.returncode == 0, r.stderr
    ref = [s["loss"] for s in log(ref_jl)]

    for first, then in ((2, 1), (1, 2)):
        ck = os.path.join(d, "ck-%d-%d" % (first, then))
        r = train(config(d, "a%d" % first, 3 - first, zero, ckpt=ck), first, 4)
        assert r.returncode == 0, r.stderr
        step = os.path.join(ck, open(os.path.join(ck, "latest")).read().strip())
        files = sorted(os.listdir(step))
        if first == 2:
            assert files == ["manifest.json", "optimizer-00000-of-00002.safetensors",
                             "optimizer-00001-of-00002.safetensors"], files
            # The manifest, written by rank 0, lists both ranks' parts.
            manifest = json.load(open(os.path.join(step, "manifest.json")))
            listed = {f["name"] for f in manifest["files"]}
            assert listed == set(files) - {"manifest.json"}, listed
            # The parts joined: the bytes one rank's save has at step 4.
            out = os.path.join(d, "joined.safetensors")
            c = subprocess.run([ZINC, "consolidate", ck, "--out", out], capture_output=True,
                               text=True)
            assert c.returncode == 0, c.stderr
            with open(out, "rb") as f1, open(os.path.join(
                    ck_ref, "step-00000004", "model.safetensors"), "rb") as f2:
                assert f1.read() == f2.read(), "consolidated parameters differ"
        else:
            assert "optimizer.safetensors" in files and "model.safetensors" in files, files
        jl = os.path.join(d, "resumed-%d-%d.jsonl" % (first, then))
        r = train(config(d, "b%d" % then, 3 - then, zero, ckpt=ck, resume=True), then, 8, jl)
        assert r.returncode == 0, r.stderr
        assert "resumed from a checkpoint" in r.stdout, r.stdout
        resumed = log(jl)
        assert [s["step"] for s in resumed] == [5, 6, 7, 8], resumed
        assert [s["loss"] for s in resumed] == ref[4:], (first, then, resumed, ref)


@t.test
def broken_checkpoints_and_consolidation_errors_are_clear(d):
    need_mpi()
    make_data(d)
    zero = "zero_optimization: " + placements(d)["s2-cpu"][0]
    ck = os.path.join(d, "ck")
    r = train(config(d, "a", 1, zero, ckpt=ck), 2, 2)
    assert r.returncode == 0, r.stderr
    step = os.path.join(ck, open(os.path.join(ck, "latest")).read().strip())
    os.remove(os.path.join(step, "optimizer-00001-of-00002.safetensors"))
    r = train(config(d, "b", 2, zero, ckpt=ck, resume=True), 1, 4)
    # The manifest lists the part: the checkpoint is found incomplete
    # before anything is read, and, being the only one, refused.
    part = "optimizer-00001-of-00002.safetensors"
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert part in r.stderr and "missing" in r.stderr, r.stderr
    c = subprocess.run([ZINC, "consolidate", ck, "--out", os.path.join(d, "x.safetensors")],
                       capture_output=True, text=True)
    assert c.returncode == 2 and part in c.stderr and "missing" in c.stderr, c.stderr
    assert not os.path.exists(os.path.join(d, "x.safetensors"))


@t.test
def the_batch_follows_deepspeeds_rule_for_the_ranks(d):
    """train_batch_size = micro x accumulation x ranks: 16 = 4 x 2 x 2."""
    need_mpi()
    make_data(d)
    cfg = config(d, "b", 2, "train_batch_size: 16")
    with open(cfg) as f:
        text = f.read().replace("gradient_accumulation_steps: 2\n", "")
    with open(cfg, "w") as f:
        f.write(text)
    r = train(cfg, 2, 1)
    assert r.returncode == 0, r.stderr
    assert "4 x 32 tokens x 2 accumulation x 2 ranks" in r.stdout, r.stdout


@t.test
def ranks_that_disagree_or_die_end_the_job(d):
    need_mpi()
    make_data(d)
    a = config(d, "a", 1, "")
    b = config(d, "b", 1, "zero_optimization: {stage: 2}")
    # Different configs on the ranks (mpirun's MPMD form): refused, naming
    # the rank, before anything trains.
    cmd = [MPIRUN, "--allow-run-as-root", "--oversubscribe", "-np", "1", ZINC, "train", a,
           "--max-steps", "2", ":", "-np", "1", ZINC, "train", b, "--max-steps", "2"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0, r.stdout
    assert "rank 1 was given another configuration" in r.stderr, r.stderr
    # A rank killed mid-run: the job ends (no hang), non-zero.
    c = config(d, "c", 1, "")
    p = subprocess.Popen(mpi(2) + [ZINC, "train", c, "--max-steps", "100000"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    # The ranks' command lines start with zinc's path (mpirun's does not).
    pids = subprocess.run(["pgrep", "-f", "^%s train %s" % (ZINC, c)], capture_output=True,
                          text=True).stdout.split()
    assert len(pids) == 2, pids
    os.kill(int(pids[-1]), signal.SIGKILL)
    try:
        out, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        raise AssertionError("the job hung after a rank died")
    assert p.returncode != 0, (p.returncode, err)


sys.exit(t.main())
