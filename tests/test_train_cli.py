#!/usr/bin/env python3
"""`zinc train` as a user runs it: the loss falls, JSON log fields, checkpoints,
bit-for-bit resume, and bad input (exit 2, nothing overwritten).

TAP output.  Needs $ZINC_BIN and $ZINC_TEST_DIR.
"""
import array
import json
import os
import random
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tap import Skip, TapRunner, device_from_args  # noqa: E402

ZINC = os.environ.get("ZINC_BIN", "zinc")
# cpu, or cuda when meson's suite cuda runs this script with --device cuda:
# every training below then runs on the GPU.
DEVICE = device_from_args(ZINC)
t = TapRunner(scratch=True)

CONFIG = """
train_micro_batch_size_per_gpu: 4
gradient_accumulation_steps: 2
gradient_clipping: 1.0
steps_per_print: 5
optimizer: {{type: AdamW, params: {{lr: 0.003, betas: [0.9, 0.95], weight_decay: 0.1}}}}
scheduler: {{type: WarmupDecayLR, params: {{warmup_max_lr: 0.003, warmup_num_steps: 5,
             total_num_steps: 40, warmup_type: linear}}}}
model: {{n_layer: 2, n_head: 2, n_embd: 32, vocab_size: 256, seq_len: 32}}
data: {{train: "{d}/data/t_train_*.bin", val: "{d}/data/t_val_*.bin", seed: 7,
        val_every: 10, val_steps: 2}}
checkpoint: {{dir: "{ckpt}", every: 10, keep: 3, resume: {resume}}}
device: {{type: {device}}}
{extra}
"""
FP16 = "fp16: {enabled: true, initial_scale_power: 30, hysteresis: 1, loss_scale_window: 10}"
BF16 = "bf16: {enabled: true}"
# ZeRO-Offload: the optimizer on the host (the default, none, keeps it on
# the device and uses the kernels' adam op).
OFFLOAD = "zero_optimization: {stage: 1, offload_optimizer: {device: cpu}}"


# Stage 3 with everything on NVMe at the path given twice (the second %s:
# more offload_param keys).
NVME_FAULTS = ("zero_optimization: {stage: 3, stage3_param_persistence_threshold: 0, "
               "sub_group_size: 9000, offload_param: {device: nvme, max_in_cpu: 0, "
               "nvme_path: \"%s\"%s}, offload_optimizer: {device: nvme, nvme_path: \"%s\"}}")


def make_data(d):
    rng = random.Random(3)
    words = ["zinc", "offload", "tensor", "adam", "swap", "nvme", "ring", "page"]
    text = " ".join(rng.choice(words) for _ in range(40000))
    with open(os.path.join(d, "text.txt"), "w") as f:
        f.write(text)
    p = subprocess.run([ZINC, "prepare-data", "--out", os.path.join(d, "data"), "--prefix", "t",
                        "--val-fraction", "0.1", os.path.join(d, "text.txt")],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def config(d, name, ckpt, resume=False, extra=""):
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write(CONFIG.format(d=d, ckpt=ckpt, resume="true" if resume else "false", device=DEVICE,
                              extra=extra))
    return path


def train(cfg, *args):
    return subprocess.run([ZINC, "train", cfg, *args], capture_output=True, text=True, timeout=600)


def log(path):
    return [json.loads(line) for line in open(path)]


@t.test
def loss_falls_and_resume_is_exact(d):
    make_data(d)
    full = config(d, "full.yaml", os.path.join(d, "ck-full"))
    p = train(full, "--json-log", os.path.join(d, "full.jsonl"), "--trace",
              os.path.join(d, "trace.json"))
    assert p.returncode == 0, p.stderr
    spans = json.load(open(os.path.join(d, "trace.json")))["traceEvents"]
    names = {e["name"] for e in spans if e["ph"] == "X"}
    assert {"forward", "backward", "gradients to host"} <= names, names
    assert sum(e.get("name") == "forward" for e in spans) == 40 * 2  # 2 micro-batches
    steps = log(os.path.join(d, "full.jsonl"))
    assert len(steps) == 40 and steps[-1]["step"] == 40
    for k in ("step", "loss", "lr", "tokens_per_s", "step_s"):
        assert k in steps[0], k
    first = sum(s["loss"] for s in steps[:3]) / 3
    last = sum(s["loss"] for s in steps[-3:]) / 3
    assert first > 5.0 and last < first - 1.5, (first, last)
    assert any("val_loss" in s for s in steps)
    assert "checkpoint: step 40" in p.stdout
    want = "device: cuda:" if DEVICE == "cuda" else "device: cpu, fp32"
    assert want in p.stdout, p.stdout[:500]

    # Stop at 20, then resume to 40: the same losses, bit for bit.
    part = config(d, "part.yaml", os.path.join(d, "ck-part"))
    p = train(part, "--max-steps", "20")
    assert p.returncode == 0, p.stderr
    again = config(d, "again.yaml", os.path.join(d, "ck-part"), resume=True)
    p = train(again, "--json-log", os.path.join(d, "resumed.jsonl"))
    assert p.returncode == 0, p.stderr
    assert "resumed from a checkpoint" in p.stdout
    resumed = log(os.path.join(d, "resumed.jsonl"))
    assert [s["step"] for s in resumed] == list(range(21, 41))
    for a, b in zip(resumed, steps[20:]):
        assert a["loss"] == b["loss"] and a["lr"] == b["lr"], (a, b)

    # The checkpoint is a Hugging Face GPT-2 state dict by name and shape.
    latest = open(os.path.join(d, "ck-full", "latest")).read().strip()
    b = open(os.path.join(d, "ck-full", latest, "model.safetensors"), "rb").read()
    n = int.from_bytes(b[:8], "little")
    h = json.loads(b[8:8 + n])
    assert h["transformer.h.1.attn.c_attn.weight"]["shape"] == [32, 96]
    assert h["transformer.wte.weight"]["shape"] == [256, 32]


@t.test
def fp16_bf16_offload_train_and_resume_exactly(d):
    make_data(d)
    for tag, extra in (("fp16", FP16), ("bf16", BF16), ("offload", OFFLOAD)):
        full = config(d, tag + "-full.yaml", os.path.join(d, tag + "-ck-full"), extra=extra)
        p = train(full, "--json-log", os.path.join(d, tag + ".jsonl"))
        assert p.returncode == 0, (tag, p.stderr)
        if tag != "offload":  # 16 bits computed in 16 bits, on either backend
            assert "%s computed in %s, fp32 master weights" % (tag, tag) in p.stdout, \
                p.stdout[:500]
        steps = log(os.path.join(d, tag + ".jsonl"))
        assert steps[-1]["loss"] < steps[0]["loss"] - 1.5, (tag, steps[0], steps[-1])
        if tag == "fp16":
            # 2^30 overflows at first: skipped steps, each halving the scale.
            skipped = [s for s in steps if s["skipped"]]
            assert skipped and steps[0]["skipped"], steps[:3]
            half = steps[0]["loss_scale"] / 2
            assert abs(steps[1]["loss_scale"] - half) <= 1e-5 * half, steps[:2]
            assert not steps[-1]["skipped"]
        else:
            assert all(s["loss_scale"] == 1 and not s["skipped"] for s in steps)
        part = config(d, tag + "-part.yaml", os.path.join(d, tag + "-ck"), extra=extra)
        assert train(part, "--max-steps", "20").returncode == 0
        again = config(d, tag + "-again.yaml", os.path.join(d, tag + "-ck"), resume=True,
                       extra=extra)
        p = train(again, "--json-log", os.path.join(d, tag + "-resumed.jsonl"))
        assert p.returncode == 0, (tag, p.stderr)
        resumed = log(os.path.join(d, tag + "-resumed.jsonl"))
        for a, b in zip(resumed, steps[20:]):
            assert (a["loss"], a["loss_scale"]) == (b["loss"], b["loss_scale"]), (tag, a, b)


def to_llmc(model_st, out, L, C, V, Vp, maxT):
    """Write zinc's Hugging Face model.safetensors as llm.c's gpt2 .bin (v3)."""
    import struct
    b = open(model_st, "rb").read()
    n = int.from_bytes(b[:8], "little")
    h = json.loads(b[8:8 + n])
    data = b[8 + n:]

    def arr(name, transpose=False):
        e = h["transformer." + name]
        s, end = e["data_offsets"]
        v = list(struct.unpack("<%df" % ((end - s) // 4), data[s:end]))
        if transpose:  # HF Conv1D (C, OC) -> llm.c (OC, C)
            r, c = e["shape"]
            v = [v[i * c + j] for j in range(c) for i in range(r)]
        return v
    hdr = [20240326, 3, maxT, V, L, 2, C, Vp] + [0] * 248
    out_f = open(out, "wb")
    out_f.write(struct.pack("<256i", *hdr))
    wte = arr("wte.weight") + [0.0] * ((Vp - V) * C)
    vals = wte + arr("wpe.weight")
    kinds = [("ln_1.weight", 0), ("ln_1.bias", 0), ("attn.c_attn.weight", 1),
             ("attn.c_attn.bias", 0), ("attn.c_proj.weight", 1), ("attn.c_proj.bias", 0),
             ("ln_2.weight", 0), ("ln_2.bias", 0), ("mlp.c_fc.weight", 1), ("mlp.c_fc.bias", 0),
             ("mlp.c_proj.weight", 1), ("mlp.c_proj.bias", 0)]
    for name, tr in kinds:
        for layer in range(L):
            vals += arr("h.%d.%s" % (layer, name), tr)
    vals += arr("ln_f.weight") + arr("ln_f.bias")
    out_f.write(struct.pack("<%df" % len(vals), *vals))
    out_f.close()


@t.test
def nvme_optimizer_states_match_host_ones(d):
    """ZeRO-Infinity's optimizer placement: master, m and v on NVMe in
    sub-groups through the pipelined swapper; per element the same AdamW,
    so the losses equal the host-offloaded run's exactly, and a resume
    continues bit for bit."""
    make_data(d)
    os.mkdir(os.path.join(d, "swap"))
    nvme = ("zero_optimization: {stage: 1, sub_group_size: 7000, offload_optimizer: "
            "{device: nvme, nvme_path: \"%s\", pipeline_read: true, pipeline_write: true}}"
            % os.path.join(d, "swap"))
    host = config(d, "host.yaml", os.path.join(d, "ck-host"), extra=OFFLOAD)
    assert train(host, "--json-log", os.path.join(d, "host.jsonl")).returncode == 0
    full = config(d, "nvme.yaml", os.path.join(d, "ck-nvme-full"), extra=nvme)
    p = train(full, "--json-log", os.path.join(d, "nvme.jsonl"))
    assert p.returncode == 0, p.stderr
    a, b = log(os.path.join(d, "host.jsonl")), log(os.path.join(d, "nvme.jsonl"))
    assert [s["loss"] for s in a] == [s["loss"] for s in b], (a[:3], b[:3])
    assert b[0]["host_bytes"] < a[0]["host_bytes"]  # no moments in host memory
    assert os.listdir(os.path.join(d, "swap")) == [], "swap files left behind"
    part = config(d, "nvme-part.yaml", os.path.join(d, "ck-nvme"), extra=nvme)
    assert train(part, "--max-steps", "20").returncode == 0
    again = config(d, "nvme-again.yaml", os.path.join(d, "ck-nvme"), resume=True, extra=nvme)
    p = train(again, "--json-log", os.path.join(d, "nvme-resumed.jsonl"))
    assert p.returncode == 0, p.stderr
    resumed = log(os.path.join(d, "nvme-resumed.jsonl"))
    assert [s["loss"] for s in resumed] == [s["loss"] for s in b[20:]]


@t.test
def offloaded_parameters_match_resident_ones(d):
    """ZeRO-3 offload_param: parameters live on host or NVMe and visit the
    device layer by layer, gradients leave it at each release.  With one
    micro-batch per step the arithmetic is the same, so the losses equal the
    resident run's exactly; with accumulation the host adds each
    micro-batch's gradient as a whole (the resident run adds contribution by
    contribution), so they agree to rounding.  Less device memory either
    way."""
    make_data(d)
    os.mkdir(os.path.join(d, "p"))
    os.mkdir(os.path.join(d, "o"))
    variants = {
        "cpu": "zero_optimization: {stage: 3, stage3_param_persistence_threshold: 0, "
               "offload_param: {device: cpu}, offload_optimizer: {device: cpu}}",
        "nvme": "zero_optimization: {stage: 3, sub_group_size: 9000, "
                "stage3_param_persistence_threshold: 0, offload_param: "
                "{device: nvme, max_in_cpu: 0, nvme_path: \"%s\"}, offload_optimizer: {device: nvme, "
                "nvme_path: \"%s\", pipeline_read: true, pipeline_write: true}}"
                % (os.path.join(d, "p"), os.path.join(d, "o")),
    }

    def run(name, extra, accum):
        cfg = config(d, name + ".yaml", os.path.join(d, "ck-" + name), extra=extra)
        with open(cfg) as f:
            text = f.read().replace("gradient_accumulation_steps: 2",
                                    "gradient_accumulation_steps: %d" % accum)
        with open(cfg, "w") as f:
            f.write(text)
        p = train(cfg, "--max-steps", "25", "--json-log", os.path.join(d, name + ".jsonl"))
        assert p.returncode == 0, (name, p.stderr)
        return log(os.path.join(d, name + ".jsonl"))

    variants["overlap"] = variants["nvme"].replace("stage: 3,", "stage: 3, overlap_comm: true,")
    runs = {}
    for accum in (1, 2):
        ref = run("host%d" % accum, OFFLOAD, accum)
        for tag, extra in variants.items():
            got = runs[tag, accum] = run(tag + str(accum), extra, accum)
            a, b = [s["loss"] for s in got], [s["loss"] for s in ref]
            if accum == 1:
                assert a == b, (tag, got[:2], ref[:2])
            else:
                assert max(abs(x - y) for x, y in zip(a, b)) < 1e-3, (tag, a, b)
            assert got[-1]["device_bytes"] < ref[-1]["device_bytes"], (tag, got[-1], ref[-1])
    # Gradients on their own stream (overlap_comm), added on the host for the
    # second micro-batch there: the same bits as without.
    for accum in (1, 2):
        assert ([s["loss"] for s in runs["overlap", accum]] ==
                [s["loss"] for s in runs["nvme", accum]]), accum
    assert os.listdir(os.path.join(d, "p")) == [] and os.listdir(os.path.join(d, "o")) == []

    # A device smaller than the resident model needs: the resident run is
    # refused before training, the offloaded one trains.
    limit = (ref[-1]["device_bytes"] + got[-1]["device_bytes"]) // 2
    if DEVICE == "cuda":  # the plan counts the kernels' workspaces (cuda) too
        limit += (64 << 20) + (32 << 20)
    dev = "device.memory_limit=%d" % limit
    small = config(d, "small.yaml", os.path.join(d, "ck-small"), extra=OFFLOAD)
    p = train(small, "--max-steps", "2", "--set", dev)
    assert p.returncode == 2 and "memory_limit" in p.stderr.replace("device_memory_limit",
                                                                    "memory_limit"), p.stderr
    fits = config(d, "fits.yaml", os.path.join(d, "ck-fits"), extra=variants["nvme"])
    p = train(fits, "--max-steps", "2", "--set", dev)
    assert p.returncode == 0, p.stderr


@t.test
def every_placement_is_bit_identical(d):
    """Issue 6's equivalence: in fp32 and in bf16, the per-step losses and
    the final parameters are bit-identical over 20 steps whatever the
    placement: everything on the device; optimizer on the host or NVMe
    (stage 2); parameters and optimizer on the host or NVMe (stage 3, with
    16-bit gradient accumulators for bf16) -- each with activation
    checkpointing off, on, and with cpu_checkpointing.  One micro-batch per
    step (with accumulation the summation order differs, see
    offloaded_parameters_match_resident_ones).  Then a stage-3 NVMe run
    stopped at 10 and resumed continues bit for bit."""
    make_data(d)
    for sub in ("p", "o"):
        os.mkdir(os.path.join(d, sub))
    p, o = os.path.join(d, "p"), os.path.join(d, "o")
    placements = {
        "device": "zero_optimization: {stage: 2}",
        "cpu2": "zero_optimization: {stage: 2, offload_optimizer: {device: cpu}}",
        "nvme2": "zero_optimization: {stage: 2, sub_group_size: 5000, offload_optimizer: "
                 "{device: nvme, nvme_path: \"%s\", pipeline_read: true, "
                 "pipeline_write: true}}" % o,
        "cpu3": "zero_optimization: {stage: 3, stage3_param_persistence_threshold: 0, "
                "offload_param: {device: cpu}, offload_optimizer: {device: cpu}}",
        "nvme3": "zero_optimization: {stage: 3, sub_group_size: 7000, "
                 "stage3_param_persistence_threshold: 0, offload_param: "
                 "{device: nvme, max_in_cpu: 0, nvme_path: \"%s\"}, offload_optimizer: "
                 "{device: nvme, nvme_path: \"%s\", pipeline_read: true, "
                 "pipeline_write: true}}" % (p, o),
        # DeepSpeed's overlap_comm: gradients cross on their own stream.
        "overlap3": "zero_optimization: {stage: 3, sub_group_size: 7000, overlap_comm: true, "
                    "stage3_param_persistence_threshold: 0, offload_param: "
                    "{device: nvme, max_in_cpu: 0, nvme_path: \"%s\"}, offload_optimizer: "
                    "{device: nvme, nvme_path: \"%s\"}}" % (p, o),
        # All three homes at once: small tensors resident on the device
        # (persistence), the first 10000 offloaded elements in host memory
        # (max_in_cpu), the rest on NVMe.
        "mixed3": "zero_optimization: {stage: 3, sub_group_size: 7000, "
                  "stage3_param_persistence_threshold: 200, offload_param: "
                  "{device: nvme, max_in_cpu: 10000, nvme_path: \"%s\"}, offload_optimizer: "
                  "{device: nvme, nvme_path: \"%s\"}}" % (p, o),
    }
    recompute = {
        "plain": "",
        "ac": "activation_checkpointing: {enabled: true}",
        "accpu": "activation_checkpointing: {enabled: true, cpu_checkpointing: true}",
    }

    def run(name, extra, steps=20, resume=False, ck=None):
        ck = ck or os.path.join(d, "ck-" + name)
        cfg = config(d, name + ".yaml", ck, resume=resume, extra=extra)
        with open(cfg) as f:
            text = f.read().replace("gradient_accumulation_steps: 2",
                                    "gradient_accumulation_steps: 1")
        with open(cfg, "w") as f:
            f.write(text)
        jl = os.path.join(d, name + ".jsonl")
        r = train(cfg, "--max-steps", str(steps), "--json-log", jl)
        assert r.returncode == 0, (name, r.stderr)
        latest = open(os.path.join(ck, "latest")).read().strip()
        with open(os.path.join(ck, latest, "model.safetensors"), "rb") as f:
            weights = f.read()
        return [(s["loss"], s["grad_norm"]) for s in log(jl)], weights, log(jl)

    for dtype in ("fp32", "bf16"):
        prec = BF16 if dtype == "bf16" else ""
        ref, resident_bytes = None, 0
        for pname, pextra in placements.items():
            for rname, rextra in recompute.items():
                extra = "\n".join(x for x in (prec, pextra, rextra) if x)
                if dtype == "bf16" and pname.endswith("3"):
                    extra += "\ndata_types: {grad_accum_dtype: bf16}"
                name = "%s-%s-%s" % (dtype, pname, rname)
                losses, weights, steps = run(name, extra)
                dev = steps[-1]["device_bytes"]
                if pname == "device" and rname == "plain":
                    resident_bytes = dev
                elif pname.endswith("3") and rname == "plain":
                    assert dev < resident_bytes, (name, dev, resident_bytes)
                if ref is None:
                    ref = (name, losses, weights)
                    continue
                # Losses bit for bit; the reported norm is summed by the
                # device's kernel or the host's check, in different orders
                # (the update does not depend on it unless it clips, and
                # then the final weights below are compared).
                assert [x[0] for x in losses] == [x[0] for x in ref[1]], (
                    name, ref[0], losses[:3], ref[1][:3])
                for x, y in zip(losses, ref[1]):
                    assert abs(x[1] - y[1]) <= 1e-12 * abs(y[1]), (name, x, y)
                assert weights == ref[2], (name, ref[0], "final parameters differ")
                if pname.startswith("nvme") or pname == "mixed3":
                    assert steps[-1]["nvme_read_bytes"] > 0, (name, steps[-1])
                    assert steps[-1]["nvme_write_bytes"] > 0, (name, steps[-1])
    assert os.listdir(p) == [] and os.listdir(o) == [], "swap files left behind"

    # Resume with everything on NVMe: states and parameters come back from
    # the swap store into the checkpoint and out again.
    extra = BF16 + "\n" + placements["nvme3"] + "\ndata_types: {grad_accum_dtype: bf16}"
    full, _, _ = run("full", extra, steps=20)
    ck = os.path.join(d, "ck-part")
    run("part", extra, steps=10, ck=ck)
    resumed, _, _ = run("resumed", extra, steps=20, resume=True, ck=ck)
    assert resumed == full[10:], (resumed[:2], full[10:12])


@t.test
def fetch_trace_keeps_reused_layers(d):
    """DeepSpeed's stage-3 trace: the first step records the fetch order,
    later ones follow it to prefetch stage3_prefetch_bucket_size elements
    ahead and to keep a released layer on the device when it comes back
    within stage3_max_reuse_distance elements (under
    stage3_max_live_parameters).  Keeping saves copies, never changes a
    bit, and gives way when the device is full."""
    make_data(d)
    os.mkdir(os.path.join(d, "p"))
    base = ("zero_optimization: {stage: 3, stage3_param_persistence_threshold: 0, %s "
            "offload_param: {device: nvme, max_in_cpu: 0, nvme_path: \"%s\"}, "
            "offload_optimizer: {device: cpu}}")
    runs = {
        "none": "stage3_max_reuse_distance: 0, stage3_prefetch_bucket_size: 0,",
        "reuse": "stage3_max_reuse_distance: 1e9, stage3_max_live_parameters: 1e9,",
        "capped": "stage3_max_reuse_distance: 1e9, stage3_max_live_parameters: 0,",
    }
    got = {}
    for name, keys in runs.items():
        cfg = config(d, name + ".yaml", os.path.join(d, "ck-" + name),
                     extra=base % (keys, os.path.join(d, "p")))
        jl = os.path.join(d, name + ".jsonl")
        p = train(cfg, "--max-steps", "6", "--json-log", jl)
        assert p.returncode == 0, (name, p.stderr)
        got[name] = log(jl)
    losses = {k: [s["loss"] for s in v] for k, v in got.items()}
    assert losses["none"] == losses["reuse"] == losses["capped"], losses
    # Step 1 records; from step 2 on, reuse copies fewer parameters in.
    h2d = {k: v[-1]["h2d_bytes"] for k, v in got.items()}
    assert got["reuse"][0]["h2d_bytes"] == got["none"][0]["h2d_bytes"], got["reuse"][0]
    assert h2d["reuse"] < h2d["none"], h2d
    assert h2d["capped"] == h2d["none"], h2d  # nothing may stay live


@t.test
def activation_checkpointing_is_bit_identical(d):
    """Recompute is deterministic: the same losses bit for bit with and
    without it (DeepSpeed's activation_checkpointing section), with less
    device memory."""
    make_data(d)
    plain = config(d, "plain.yaml", os.path.join(d, "ck-a"))
    ckpt = config(d, "ckpt.yaml", os.path.join(d, "ck-b"),
                  extra="activation_checkpointing: {enabled: true, "
                        "contiguous_memory_optimization: true}")
    # ZeRO-Infinity's activation offload: the kept inputs in host memory.
    cpu = config(d, "cpu.yaml", os.path.join(d, "ck-c"),
                 extra="activation_checkpointing: {enabled: true, cpu_checkpointing: true}")
    for cfg, name in ((plain, "plain"), (ckpt, "ckpt"), (cpu, "cpu")):
        p = train(cfg, "--max-steps", "15", "--json-log", os.path.join(d, name + ".jsonl"))
        assert p.returncode == 0, p.stderr
    a, b, c = (log(os.path.join(d, n + ".jsonl")) for n in ("plain", "ckpt", "cpu"))
    key = [(s["loss"], s["grad_norm"]) for s in a]
    assert key == [(s["loss"], s["grad_norm"]) for s in b]
    assert key == [(s["loss"], s["grad_norm"]) for s in c]
    assert c[-1]["device_bytes"] <= b[-1]["device_bytes"] < a[-1]["device_bytes"], (a[-1], b[-1])
    bad = config(d, "bad.yaml", os.path.join(d, "ck-d"),
                 extra="activation_checkpointing: {cpu_checkpointing: true}")
    p = train(bad, "--max-steps", "1")
    assert p.returncode == 2 and "needs activation_checkpointing.enabled" in p.stderr, p.stderr
    # profile: the checkpointing's time, per step, without changing a bit.
    prof = config(d, "prof.yaml", os.path.join(d, "ck-e"),
                  extra="activation_checkpointing: {enabled: true, cpu_checkpointing: true, "
                        "profile: true}")
    p = train(prof, "--max-steps", "15", "--json-log", os.path.join(d, "prof.jsonl"))
    assert p.returncode == 0, p.stderr
    e = log(os.path.join(d, "prof.jsonl"))
    assert key == [(s["loss"], s["grad_norm"]) for s in e]
    assert all(s["recompute_s"] > 0 and s["act_offload_s"] > 0 for s in e), e[:2]
    assert all(s["recompute_s"] == 0 for s in c), c[:2]
    assert "recompute" in p.stdout and "kept inputs" in p.stdout, p.stdout


@t.test
def the_gpu_trains_as_the_cpu_does(d):
    """Suite cuda (--device cuda) only: the same 20 steps on the cpu backend
    and on the cuda backend agree, everything on the device (fp32, bf16)
    and with ZeRO-3 NVMe offload (fp32).  The two backends sum in different
    orders (OpenBLAS against cuBLAS, threaded loops against CUDA blocks),
    so the figures agree to rounding, not bit for bit: the first step's
    loss and gradient norm to 1e-5 (fp32), every loss to 1e-3, and the
    final parameters to 1e-3 of their tensor's largest, save a few elements
    whose gradients are noise (AdamW steps them by ~lr along the sign of
    that noise).  bf16 stores activations and products in bf16 on both
    backends, but a GPU's tensor cores and cuBLAS round inside the products
    where the cpu backend rounds an op's fp32 result once, so there the
    first step agrees to 1e-2 and the parameters to 3e-2 of the largest,
    save 3% of them (20 steps of lr 3e-3 move an element up to 6e-2)."""
    if DEVICE != "cuda":
        raise Skip("compares the cuda backend with the cpu one: run by the cuda suite")
    make_data(d)
    for sub in ("p", "o"):
        os.mkdir(os.path.join(d, sub))
    nvme = ("zero_optimization: {stage: 3, sub_group_size: 7000, "
            "stage3_param_persistence_threshold: 0, offload_param: "
            "{device: nvme, max_in_cpu: 0, nvme_path: \"%s\"}, offload_optimizer: "
            "{device: nvme, nvme_path: \"%s\"}}" % (os.path.join(d, "p"), os.path.join(d, "o")))

    def run(name, extra, dev):
        ck = os.path.join(d, "ck-" + name)
        cfg = config(d, name + ".yaml", ck, extra=extra)
        jl = os.path.join(d, name + ".jsonl")
        r = train(cfg, "--max-steps", "20", "--json-log", jl, "--set", "device.type=" + dev)
        assert r.returncode == 0, (name, r.stderr)
        latest = open(os.path.join(ck, "latest")).read().strip()
        b = open(os.path.join(ck, latest, "model.safetensors"), "rb").read()
        n = int.from_bytes(b[:8], "little")
        h = json.loads(b[8:8 + n])
        w = {}
        for k, e in h.items():
            if k != "__metadata__":
                a = array.array("f")
                a.frombytes(b[8 + n + e["data_offsets"][0]:8 + n + e["data_offsets"][1]])
                w[k] = a
        return log(jl), w

    for tag, extra, tol in (("fp32", "", 1e-3), ("bf16", BF16, 1e-3), ("nvme", nvme, 1e-3)):
        (a, wa), (b, wb) = run(tag + "-cpu", extra, "cpu"), run(tag + "-cuda", extra, "cuda")
        first = 1e-5 if tag != "bf16" else 1e-2
        near, share = (1e-3, 0.01) if tag != "bf16" else (3e-2, 0.03)
        assert abs(a[0]["loss"] - b[0]["loss"]) <= first * a[0]["loss"], (tag, a[0], b[0])
        assert abs(a[0]["grad_norm"] - b[0]["grad_norm"]) <= first * a[0]["grad_norm"], (
            tag, a[0], b[0])
        worst = max(abs(x["loss"] - y["loss"]) / x["loss"] for x, y in zip(a, b))
        assert worst <= tol, (tag, worst, [(x["loss"], y["loss"]) for x, y in zip(a, b)])
        off, total, big = 0, 0, 0.0
        for k in wa:
            top = max(abs(v) for v in wa[k])
            diffs = [abs(x - y) for x, y in zip(wa[k], wb[k])]
            off += sum(1 for e in diffs if e > near * top + 1e-6)
            total += len(diffs)
            big = max(big, max(diffs) / (top or 1))
        print("# %s: losses within %.2e relative; %d of %d parameters beyond %g of their "
              "tensor's largest (worst %.2e)" % (tag, worst, off, total, near, big))
        assert off <= share * total, (tag, off, total)
    assert os.listdir(os.path.join(d, "p")) == [] and os.listdir(os.path.join(d, "o")) == []


@t.test
def a_busy_gpu_trains_as_an_idle_one(d):
    """Suite cuda only: the GPU's streams run behind the host, the more so
    when other work shares it, and copies ordered wrongly against them show
    only then (the cpu backend cannot show them).  Three trainings at once
    of each configuration -- resident gradients accumulated over two
    micro-batches with the optimizer on the host, and ZeRO-3 with the
    parameters and optimizer on the host -- each give the cpu backend's
    losses to 1e-6 over 25 steps (a token copy that overtook the previous
    backward made them drift by 1e-2)."""
    if DEVICE != "cuda":
        raise Skip("needs a GPU's asynchronous streams: run by the cuda suite")
    make_data(d)
    variants = {
        "host": OFFLOAD,
        "cpu3": "zero_optimization: {stage: 3, stage3_param_persistence_threshold: 0, "
                "offload_param: {device: cpu}, offload_optimizer: {device: cpu}}",
    }

    def start(name, extra, dev):
        cfg = config(d, name + ".yaml", os.path.join(d, "ck-" + name), extra=extra)
        jl = os.path.join(d, name + ".jsonl")
        p = subprocess.Popen([ZINC, "train", cfg, "--max-steps", "25", "--json-log", jl,
                              "--set", "device.type=" + dev], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
        return jl, p

    ref = {}
    for k, v in variants.items():
        jl, p = start(k + "-cpu", v, "cpu")
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, (k, err)
        ref[k] = [s["loss"] for s in log(jl)]
    runs = [(k, i) + start("%s-gpu%d" % (k, i), v, "cuda")
            for k, v in variants.items() for i in range(3)]
    for k, i, jl, p in runs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, (k, i, err)
        got = [s["loss"] for s in log(jl)]
        worst = max(abs(x - y) / y for x, y in zip(got, ref[k]))
        assert len(got) == 25 and worst <= 1e-6, (k, i, worst, got[:4], ref[k][:4])


@t.test
def starts_from_safetensors_and_llmc(d):
    make_data(d)
    base = config(d, "base.yaml", os.path.join(d, "ck"))
    assert train(base, "--max-steps", "10").returncode == 0
    latest = open(os.path.join(d, "ck", "latest")).read().strip()
    st = os.path.join(d, "ck", latest, "model.safetensors")
    binf = os.path.join(d, "gpt2.bin")
    to_llmc(st, binf, 2, 32, 256, 256, 32)
    losses = []
    for src in (st, binf):
        cfg = config(d, "ft.yaml", os.path.join(d, "ck-ft"))
        with open(cfg) as f:
            text = f.read().replace("seq_len: 32}", "seq_len: 32, from: \"%s\"}" % src)
        with open(cfg, "w") as f:
            f.write(text)
        p = train(cfg, "--max-steps", "1", "--json-log", os.path.join(d, "ft.jsonl"))
        assert p.returncode == 0, p.stderr
        losses.append(log(os.path.join(d, "ft.jsonl"))[0]["loss"])
    # Both start from the trained weights: the same loss, far below a fresh
    # model's ln(256) = 5.5.
    assert losses[0] == losses[1] and losses[0] < 5.0, losses
    with open(binf, "r+b") as f:
        f.truncate(5000)
    p = train(cfg, "--max-steps", "1")
    assert p.returncode == 2 and "truncated" in p.stderr, p.stderr


@t.test
def bench_reports_a_ratio(d):
    cfg = os.path.join(d, "bench.yaml")
    with open(cfg, "w") as f:
        f.write("train_micro_batch_size_per_gpu: 2\n"
                "model: {n_layer: 2, n_head: 2, n_embd: 64, vocab_size: 300, seq_len: 64}\n"
                "device: {type: %s}\n" % DEVICE)
    p = train(cfg, "--bench", "--max-steps", "3")
    assert p.returncode == 0, p.stderr
    o = json.loads(p.stdout.strip().splitlines()[-1])
    # The reference: OpenBLAS's sgemm on the cpu backend (the target's), the
    # device's own matmul on a GPU; the device's is measured on both.
    assert o["reference"] == ("device_gemm" if DEVICE == "cuda" else "openblas_sgemm"), o
    ref = o["device_gemm_gflops"] if DEVICE == "cuda" else o["sgemm_gflops"]
    assert o["gflops"] > 0 and ref > 0 and o["device_gemm_gflops"] > 0, o
    assert abs(o["ratio"] - o["gflops"] / ref) < 0.01, o
    # 3 (24 BT C^2 + 2 B T^2 C) per layer + 3 * 2 BT C Vp, Vp = 384.
    BT, B, T, C, L, Vp = 128, 2, 64, 64, 2, 384
    want = 3 * (L * (24 * BT * C * C + 2 * B * T * T * C) + 2 * BT * C * Vp)
    assert abs(o["flops_per_step"] - want) < 1e-3 * want, (o, want)
    # Without a config: GPT-2 124M at batch 4 x 1024, which --set changes.
    p = subprocess.run([ZINC, "train", "--bench", "--max-steps", "2", "--set", "model.n_layer=1",
                        "--set", "model.n_embd=32", "--set", "model.n_head=2", "--set",
                        "model.seq_len=16", "--set", "device.type=" + DEVICE],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    o = json.loads(p.stdout.strip().splitlines()[-1])
    BT, B, T, C, L, Vp = 64, 4, 16, 32, 1, 50304
    want = 3 * (L * (24 * BT * C * C + 2 * B * T * T * C) + 2 * BT * C * Vp)
    assert abs(o["flops_per_step"] - want) < 1e-3 * want, (o, want)
    p = subprocess.run([ZINC, "train", "--bench", "--set", "model.nlayer=1"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "did you mean 'n_layer'" in p.stderr, p.stderr


@t.test
def offload_faults_are_clear(d):
    """NVMe offload's usual troubles, each a clear message before training
    (exit 2) or a working fallback: a missing or non-directory nvme_path,
    a disk without room (zinc plan's report), a buffer_size below the
    largest tensor (naming the size that works)."""
    make_data(d)
    swap = os.path.join(d, "swap")
    os.mkdir(swap)
    nvme = NVME_FAULTS

    def run(name, path, extra_param="", more="", *args):
        cfg = config(d, name + ".yaml", os.path.join(d, "ck-" + name),
                     extra=nvme % (path, extra_param, path) + "\n" + more)
        return train(cfg, "--max-steps", "2", *args)

    p = run("missing", os.path.join(d, "nowhere"))
    assert p.returncode == 2 and "nvme_path" in p.stderr and "nowhere" in p.stderr, p.stderr
    open(os.path.join(d, "afile"), "w").close()
    p = run("notdir", os.path.join(d, "afile"))
    assert p.returncode == 2 and "afile" in p.stderr, p.stderr
    # 2e12 parameters' states: no disk has that room; refused with the plan.
    p = run("huge", swap, "", "", "--set", "model.n_layer=1000", "--set", "model.n_embd=12800",
            "--set", "model.n_head=100")
    assert p.returncode == 2 and "nvme" in p.stderr and swap in p.stderr, p.stderr[-2000:]
    assert os.listdir(swap) == [], "nothing is made before the check"
    # buffer_size (elements) below the largest tensor (wte: 256 x 32).
    p = run("small-buffer", swap, ", buffer_size: 1000")
    assert p.returncode == 2 and "buffer_size" in p.stderr and "8192" in p.stderr, p.stderr


@t.test
def filesystem_faults_in_a_mount_namespace(d):
    """Faults that need a filesystem of their own (a private mount namespace,
    root): ramfs has no O_DIRECT -- buffered I/O with a warning, and training
    works; a disk under the checkpoint directory (a 2 MiB tmpfs) that fills
    up after the start-up check (which refuses a directory without room for
    one checkpoint: tests/test_faults.py) fails the save saying so, the last
    checkpoint stays as it was, and training resumes from it."""
    ram = os.path.join(d, "ram")
    os.mkdir(ram)
    mount = 'mount -t ramfs none "$1" && shift && exec "$@"'
    probe = subprocess.run(["unshare", "-m", "sh", "-c", mount, "sh", ram, "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        raise Skip("no private mount namespace here: %s" % probe.stderr.strip()[:80])
    make_data(d)
    swap = os.path.join(d, "swap")
    os.mkdir(swap)
    nvme = NVME_FAULTS
    cfg = config(d, "ramfs.yaml", os.path.join(d, "ck-ramfs"), extra=nvme % (ram, "", ram))
    p = subprocess.run(["unshare", "-m", "sh", "-c", mount, "sh", ram, ZINC, "train", cfg,
                        "--max-steps", "2"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert "refuses O_DIRECT" in p.stderr, p.stderr
    ck = os.path.join(d, "ck-full")
    os.mkdir(ck)
    first = config(d, "full1.yaml", ck, extra=nvme % (swap, "", swap))
    again = config(d, "full2.yaml", ck, resume=True, extra=nvme % (swap, "", swap))
    out = os.path.join(d, "seen")
    script = """
mount -t tmpfs -o size=2m none "$CK" || exit 90
"$ZINC" train "$FIRST" --max-steps 2 > "$OUT.1" 2>&1 || exit 91
cp -a "$CK" "$OUT.before"
"$ZINC" train "$AGAIN" --max-steps 4 --set gradient_accumulation_steps=200 > "$OUT.2" 2>&1 &
pid=$!
# Trained past the start-up checks (the summary is out): fill the disk.
n=0
while ! grep -q "^device:" "$OUT.2" && [ $n -lt 600 ]; do sleep 0.05; n=$((n + 1)); done
dd if=/dev/zero of="$CK/ballast" bs=4k 2>/dev/null
wait $pid
echo $? > "$OUT.rc"
rm -f "$CK/ballast"
cp -a "$CK" "$OUT.after"
"$ZINC" train "$AGAIN" --max-steps 3 > "$OUT.3" 2>&1
true
"""
    env = dict(os.environ, CK=ck, ZINC=ZINC, FIRST=first, AGAIN=again, OUT=out)
    p = subprocess.run(["unshare", "-m", "sh", "-c", script], env=env, capture_output=True,
                       text=True, timeout=600)
    logs = "".join(open(out + "." + k).read() for k in "123" if os.path.exists(out + "." + k))
    assert p.returncode == 0, (p.returncode, p.stderr, logs)
    second = open(out + ".2").read()
    assert open(out + ".rc").read().strip() != "0", second
    assert "No space left on device" in second, second
    # It resumes from the intact checkpoint.
    third = open(out + ".3").read()
    assert "resumed" in third and "step      3/3" in third, third

    def tree(root):
        return {os.path.relpath(os.path.join(a, f), root): open(os.path.join(a, f), "rb").read()
                for a, _, fs in os.walk(root) for f in fs}
    assert tree(out + ".before") == tree(out + ".after"), "the last checkpoint changed"


@t.test
def bad_input_exits_2(d):
    make_data(d)
    ck = os.path.join(d, "ck")
    good = config(d, "good.yaml", ck)
    cases = {
        "missing.yaml": None,
        "syntax.yaml": "model: {n_layer: 2\n",
        "shape.yaml": open(good).read().replace("n_embd: 32", "n_embd: 31"),
        "nodata.yaml": open(good).read().replace("t_train_*.bin", "nothing_*.bin"),
        "both.yaml": open(good).read() + "fp16: {enabled: true}\nbf16: {enabled: true}\n",
        # a checkpoint.dir that cannot be made: said before training
        "ckfile.yaml": open(good).read().replace(ck, os.path.join(d, "good.yaml", "ck")),
    }
    for name, text in cases.items():
        path = os.path.join(d, name)
        if text is not None:
            with open(path, "w") as f:
                f.write(text)
        p = train(path, "--max-steps", "2")
        assert p.returncode == 2, (name, p.returncode, p.stderr)
        assert p.stderr.startswith("zinc train: "), (name, p.stderr)
        assert not os.path.exists(ck), name
        if name == "ckfile.yaml":
            assert "is not a directory" in p.stderr and "step" not in p.stdout, p.stderr
    # A checkpoint of another shape is refused, not overwritten.
    p = train(good, "--max-steps", "2")
    assert p.returncode == 0, p.stderr
    before = sorted(os.listdir(ck))
    other = config(d, "other.yaml", ck, resume=True)
    with open(other) as f:
        text = f.read().replace("n_layer: 2", "n_layer: 3")
    with open(other, "w") as f:
        f.write(text)
    p = train(other, "--max-steps", "4")
    assert p.returncode == 2 and "different model" in p.stderr, p.stderr
    assert sorted(os.listdir(ck)) == before


@t.test
def signals_and_saving_once(d):
    """A run whose last step is a checkpoint step saves it once (the second
    save of a step used to remove the first before its own was in place);
    the first SIGINT finishes the step, saves and exits 130; a second one
    stops at once, exit 130, naming the checkpoint a resume will use."""
    import signal
    import time
    make_data(d)
    ck = os.path.join(d, "ck")
    cfg = config(d, "c.yaml", ck)
    p = train(cfg, "--max-steps", "4", "--set", "checkpoint.every=2")
    assert p.returncode == 0, p.stderr
    steps = sorted(x for x in os.listdir(ck) if x.startswith("step-"))
    assert len(steps) == 2 and steps[-1].endswith("4"), steps
    assert "checkpoint: step 4 saved" in p.stdout, p.stdout
    # Many micro-batches a step: the first signal waits for the step's end,
    # the second does not.  Signalled once two checkpoints are there (the
    # first's save has surely returned).
    ck2 = os.path.join(d, "ck2")
    proc = subprocess.Popen([ZINC, "train", cfg, "--max-steps", "100000", "--set",
                             "gradient_accumulation_steps=3000", "--set",
                             "checkpoint.every=1", "--set", "checkpoint.dir=%s" % ck2],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (
            os.path.isdir(ck2) and
            len([x for x in os.listdir(ck2) if x.startswith("step-")]) >= 2):
        time.sleep(0.05)
    time.sleep(0.5)  # into the next step (1.5 s or more), not between two
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    t0 = time.time()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (proc.returncode, err)
    assert time.time() - t0 < 5, "the second signal did not stop the run at once"
    assert "stopped at once; a resume starts from the checkpoint of step" in err, err
    # What it named is there and resumes.
    named = err.split("checkpoint of step ")[1].split()[0]
    assert int(named) >= 1, err
    r = train(cfg, "--max-steps", str(int(named) + 1), "--set", "checkpoint.resume=true",
              "--set", "checkpoint.dir=%s" % ck2, "--set", "gradient_accumulation_steps=3000")
    assert r.returncode == 0, r.stderr
    assert "resumed from a checkpoint" in r.stdout + r.stderr, r.stdout


def flip_tensor_byte(path, name):
    """Flip one bit inside tensor `name`'s data in the safetensors file."""
    with open(path, "r+b") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        at = 8 + n + header[name]["data_offsets"][0] + 3
        f.seek(at)
        b = f.read(1)[0]
        f.seek(at)
        f.write(bytes([b ^ 0x04]))


@t.test
def damaged_checkpoints_fall_back(d):
    """A flipped byte in the newest checkpoint's optimizer.safetensors: the
    resume says which file and tensor, falls back to the step before with
    a warning naming both steps, and trains to the losses, bit for bit, of
    a run resumed from that step; `zinc consolidate` names the damage too.
    When no checkpoint verifies, the run refuses (exit 2); when there is
    none, it says it starts from scratch."""
    import shutil
    make_data(d)
    ck = os.path.join(d, "ck")
    p = train(config(d, "a.yaml", ck), "--max-steps", "20")
    assert p.returncode == 0, p.stderr
    for step in ("step-00000010", "step-00000020"):
        m = json.load(open(os.path.join(ck, step, "manifest.json")))
        names = {f["name"] for f in m["files"]}
        assert {"model.safetensors", "optimizer.safetensors"} <= names, names
    # The reference: the same checkpoints without step 20.
    ref = os.path.join(d, "ck-ref")
    shutil.copytree(ck, ref)
    shutil.rmtree(os.path.join(ref, "step-00000020"))
    bad = os.path.join(d, "ck-bad")
    shutil.copytree(ref, bad)
    tensor = "h.1.mlp.c_fc.weight.exp_avg"
    flip_tensor_byte(os.path.join(ck, "step-00000020", "optimizer.safetensors"), tensor)

    # consolidate: the step itself is refused, naming file and tensor...
    c = subprocess.run([ZINC, "consolidate", os.path.join(ck, "step-00000020"), "--out",
                        os.path.join(d, "x.safetensors")], capture_output=True, text=True)
    assert c.returncode == 2, c.stderr
    assert "optimizer.safetensors" in c.stderr and tensor in c.stderr, c.stderr
    assert not os.path.exists(os.path.join(d, "x.safetensors"))
    # ... the checkpoint directory gives the step before, with a warning.
    c = subprocess.run([ZINC, "consolidate", ck, "--out", os.path.join(d, "y.safetensors")],
                       capture_output=True, text=True)
    assert c.returncode == 0, c.stderr
    assert "using step-00000010 instead of step-00000020" in c.stderr, c.stderr

    p = train(config(d, "b.yaml", ck, resume=True), "--max-steps", "30", "--json-log",
              os.path.join(d, "fallback.jsonl"))
    assert p.returncode == 0, p.stderr
    assert tensor in p.stderr and "optimizer.safetensors" in p.stderr, p.stderr
    assert "using step-00000010 instead of step-00000020" in p.stderr, p.stderr
    r = train(config(d, "c.yaml", ref, resume=True), "--max-steps", "30", "--json-log",
              os.path.join(d, "ref.jsonl"))
    assert r.returncode == 0, r.stderr
    assert "failed verification" not in r.stderr, r.stderr
    got, want = log(os.path.join(d, "fallback.jsonl")), log(os.path.join(d, "ref.jsonl"))
    assert [s["step"] for s in got] == list(range(11, 31)), [s["step"] for s in got]
    assert [s["loss"] for s in got] == [s["loss"] for s in want]

    # Every complete checkpoint damaged: refused, nothing trained.
    flip_tensor_byte(os.path.join(bad, "step-00000010", "optimizer.safetensors"), tensor)
    before = sorted(os.listdir(bad))
    p = train(config(d, "d.yaml", bad, resume=True), "--max-steps", "12")
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "verifies" in p.stderr and tensor in p.stderr, p.stderr
    assert sorted(os.listdir(bad)) == before
    # No checkpoint at all: said, and the run starts from scratch.
    p = train(config(d, "e.yaml", os.path.join(d, "ck-none"), resume=True), "--max-steps", "1")
    assert p.returncode == 0, p.stderr
    assert "no complete checkpoint" in p.stderr and "from scratch" in p.stderr, p.stderr


@t.test
def a_second_run_on_the_same_directories_refuses(d):
    """Two runs on one checkpoint.dir, or one nvme_path: the second exits 2
    naming the first one's pid (and so does a consolidation into the first
    one's checkpoints); once the first is killed (its lock files left
    behind), a run starts there."""
    import signal
    import time
    make_data(d)
    ck, swap = os.path.join(d, "ck"), os.path.join(d, "swap")
    os.mkdir(swap)
    nvme = NVME_FAULTS % (swap, "", swap)
    first = config(d, "first.yaml", ck, extra=nvme)
    proc = subprocess.Popen([ZINC, "train", first, "--max-steps", "100000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        locks = [os.path.join(ck, "zinc.lock"), os.path.join(swap, "zinc-swap.lock")]
        while time.time() < deadline and not all(os.path.exists(x) for x in locks):
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.05)
        time.sleep(0.2)
        # The same checkpoint.dir (its own swap path)...
        other = os.path.join(d, "swap2")
        os.mkdir(other)
        p = train(config(d, "second.yaml", ck, extra=NVME_FAULTS % (other, "", other)),
                  "--max-steps", "1")
        assert p.returncode == 2, (p.returncode, p.stderr)
        assert "checkpoint.dir" in p.stderr and "pid %d" % proc.pid in p.stderr, p.stderr
        # ... or the same nvme_path (its own checkpoint.dir).
        p = train(config(d, "third.yaml", os.path.join(d, "ck3"), extra=nvme), "--max-steps", "1")
        assert p.returncode == 2, (p.returncode, p.stderr)
        assert "nvme_path" in p.stderr and "pid %d" % proc.pid in p.stderr, p.stderr
        # Consolidating into the run's own checkpoints waits for it too.
        c = subprocess.run([ZINC, "consolidate", ck], capture_output=True, text=True)
        assert c.returncode == 2 and "pid %d" % proc.pid in c.stderr, c.stderr
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    # Killed: its lock files stay, and block nobody.
    assert os.path.exists(os.path.join(ck, "zinc.lock"))
    p = train(config(d, "fourth.yaml", ck, extra=nvme), "--max-steps", "1")
    assert p.returncode == 0, p.stderr
    # A run that ends removes its locks.
    assert not os.path.exists(os.path.join(ck, "zinc.lock"))
    assert not os.path.exists(os.path.join(swap, "zinc-swap.lock"))


if __name__ == "__main__":
    sys.exit(t.main())
