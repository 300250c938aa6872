#!/usr/bin/env python3
"""`zinc plan CONFIG` as a user runs it: per-tier bytes equal to the memory
model restated here from GPT-2's tensor list, a device too small (exit 1,
suggestions), a missing nvme_path (exit 2, the key named), --json against
the text, and the plan against training itself: `zinc train` with exactly
the planned device memory runs, and with 256 bytes less it does not.

TAP output.  Needs $ZINC_BIN and $ZINC_TEST_DIR.
"""
import json
import os
import random
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tap import TapRunner  # noqa: E402

ZINC = os.environ.get("ZINC_BIN", "zinc")
t = TapRunner(scratch=True)

L, NH, C, V, SEQ, B = 2, 2, 32, 256, 32, 4
BASE = """
train_micro_batch_size_per_gpu: {B}
gradient_accumulation_steps: 2
model: {{n_layer: {L}, n_head: {NH}, n_embd: {C}, vocab_size: {V}, seq_len: {SEQ}}}
data: {{train: "{d}/data/t_train_*.bin", seed: 7}}
{extra}
"""


def up(x, a):
    return -(-x // a) * a


def tensors():
    """Elements of every parameter tensor, as GPT-2 has them: wte (Vp, C)
    with the vocabulary padded to 128, wpe (T, C), 12 per block, ln_f."""
    vp = up(V, 128)
    block = [C, C, 3 * C * C, 3 * C, C * C, C, C, C, 4 * C * C, 4 * C, 4 * C * C, C]
    return [[vp * C, SEQ * C]] + [block] * L + [[C, C]]


def activations(recompute=False, offload=False, a=256):
    """Device and host bytes of the model's activations (engine/model/gpt2.c's
    list): per block its input and its working set, the classifier's and
    backward's buffers."""
    bt, e = B * SEQ, 4
    work = (4 * up(bt * C * e, a) + up(bt * 3 * C * e, a) + 2 * up(bt * 4 * C * e, a) +
            4 * up(bt * 4, a) + up(B * NH * SEQ * 4, a))
    inp = up(bt * C * e, a)
    if not recompute:
        dev = L * (inp + work)
    elif not offload:
        dev = L * inp + work
    else:
        dev = work + 2 * inp
    dev += 2 * up(bt * C * e, a) + 3 * up(bt * 4, a) + up(bt * up(V, 128) * e, a)
    dev += 3 * up(bt * C * e, a) + 2 * up(bt * 4 * C * e, a) + up(bt * 3 * C * e, a)
    return dev, (L * bt * C * e if offload else 0)


def config(d, name, extra=""):
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write(BASE.format(B=B, L=L, NH=NH, C=C, V=V, SEQ=SEQ, d=d, extra=extra))
    return path


def plan(cfg, *args):
    return subprocess.run([ZINC, "plan", cfg, *args], capture_output=True, text=True,
                          timeout=120)


def needs(text):
    """{tier: bytes} from the report's "TIER needs X (N bytes)" lines."""
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"^(\S.*?) needs \S+ \S+ \((\d+) bytes\)", text, re.MULTILINE)}


def make_data(d):
    rng = random.Random(3)
    words = ["zinc", "offload", "tensor", "adam", "swap", "nvme", "ring", "page"]
    with open(os.path.join(d, "text.txt"), "w") as f:
        f.write(" ".join(rng.choice(words) for _ in range(20000)))
    p = subprocess.run([ZINC, "prepare-data", "--out", os.path.join(d, "data"), "--prefix", "t",
                        os.path.join(d, "text.txt")], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


OFFLOAD = "zero_optimization: {stage: 1, offload_optimizer: {device: cpu}}"


@t.test
def fits_with_the_formula_s_numbers(d):
    flat = [n for layer in tensors() for n in layer]
    P, dev_all, bt = sum(flat), sum(up(4 * n, 256) for n in flat), B * SEQ
    act, _ = activations()
    # ZeRO-Offload, fp32: fp32 parameters and gradients on the device;
    # master, m, v (12 P) and fp32 accumulators (4 P) on the host, with the
    # cpu backend's device memory, which is host memory.
    p = plan(config(d, "offload.yaml", OFFLOAD))
    assert p.returncode == 0, p.stdout + p.stderr
    for row in ("device", "pinned host", "pageable host"):
        assert re.search(r"^%s\s" % row, p.stdout, re.MULTILINE), (row, p.stdout)
    got = needs(p.stdout)
    device = 2 * dev_all + 2 * up(4 * bt, 256) + act
    assert got["device"] == device, (got, device)
    largest = max(flat)
    # ... and a fp32 buffer the size of the largest tensor, gradients
    # pass through it on their way into the accumulators.
    assert got["pageable host"] == 12 * P + 4 * P + 4 * largest + 3 * 4 * bt + device, got
    assert got["pinned host"] == 0, got
    assert "fits: yes" in p.stdout

    # ZeRO-Infinity, bf16, bf16 accumulators, activation checkpointing
    # with the inputs in host memory: parameters (all of them: no
    # persistence threshold, max_in_cpu 0) and optimizer states on NVMe,
    # one directory each.
    for sub in ("o", "p"):
        os.mkdir(os.path.join(d, sub))
    inf = ("bf16: {enabled: true}\ndata_types: {grad_accum_dtype: bf16}\n"
           "activation_checkpointing: {enabled: true, cpu_checkpointing: true}\n"
           "zero_optimization: {stage: 3, sub_group_size: 5000, "
           "stage3_param_persistence_threshold: 0, offload_param: {device: nvme, max_in_cpu: 0, "
           "nvme_path: \"%s\", buffer_count: 4}, offload_optimizer: {device: nvme, nvme_path: "
           "\"%s\", pipeline_read: true, pipeline_write: true, buffer_count: 6}}"
           % (os.path.join(d, "p"), os.path.join(d, "o")))
    p = plan(config(d, "inf.yaml", inf))
    assert p.returncode == 0, p.stdout + p.stderr
    got = needs(p.stdout)
    largest = max(flat)
    layer = [sum(up(4 * n, 256) for n in ts) for ts in tensors()]
    # Layers in use: the classifier holds ln_f and wte with gradients; a
    # block's backward holds itself with gradients beside wte's gradients.
    in_use = max(2 * (layer[0] + layer[-1]), layer[0] + 2 * max(layer[1:-1]))
    act, host_act = activations(True, True)
    device = in_use + up(2 * largest, 256) + 2 * up(4 * bt, 256) + act
    assert got["device"] == device, (got, device)
    # Pinned: 6 optimizer slots of 3 arrays of 5000 fp32 and the group's
    # bf16 gradients (pipeline_read takes buffer_count), 4 parameter
    # buffers of the largest tensor in bf16.
    pinned = 6 * (3 * up(4 * 5000, 4096) + up(2 * 5000, 4096)) + 4 * up(2 * largest, 4096)
    assert got["pinned host"] == pinned, (got, pinned)
    # Host: no accumulators (the gradients gather on NVMe beside the
    # optimizer states), the largest tensor's bf16 sums on their way and
    # the fp32 staging buffer later micro-batches add through; the batch;
    # the kept block inputs; the cpu backend's device memory.  No start-up
    # staging: the states are made in the optimizer swap buffers.
    pageable = 2 * largest + 4 * largest + 3 * 4 * bt + host_act + device
    assert got["pageable host"] == pageable, (got, pageable)
    # With checkpoints, the model file's writer: a block of each Conv1D
    # weight's rows, (OC, IC) in zinc's layout, at most 2^22 elements, and
    # one column's run -- bounded, whatever the model.
    chunk = 1 << 22
    conv = [(3 * C, C), (C, C), (4 * C, C), (C, 4 * C)]
    writer = max(min(oc, max(chunk // ic, 1)) * (ic + 1) for oc, ic in conv)
    p = plan(config(d, "inf-ckpt.yaml", inf + "\ncheckpoint: {dir: \"%s\"}"
                    % os.path.join(d, "ckpt")))
    assert p.returncode == 0, p.stdout + p.stderr
    got = needs(p.stdout)
    assert got["pageable host"] == pageable + 4 * writer, (got, pageable, writer)
    groups = -(-P // 5000)
    assert got["nvme " + os.path.join(d, "o")] == up((groups + 6) * 3 * up(4 * 5000, 4096) +
                                                     groups * up(2 * 5000, 4096), 4096), got
    assert got["nvme " + os.path.join(d, "p")] == sum(up(2 * n, 4096) for n in flat), got


@t.test
def device_too_small_exits_1_with_suggestions(d):
    cfg = config(d, "c.yaml")
    need = json.loads(plan(cfg, "--json").stdout)["tiers"][0]["needed"]
    small = config(d, "small.yaml", "device: {type: cpu, memory_limit: %d}" % (need - 256))
    p = plan(small)
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    assert re.search(r"^device\s.*SHORT by 256 B", p.stdout, re.MULTILINE), p.stdout
    advice = p.stdout.split("what to change:")[1]
    for want in ("offload_optimizer.device: cpu", "offload_param.device: cpu or nvme",
                 "activation_checkpointing", "train_micro_batch_size_per_gpu",
                 "raise device.memory_limit to at least"):
        assert want in advice, (want, advice)
    assert "fits: NO" in p.stdout
    exact = config(d, "exact.yaml", "device: {type: cpu, memory_limit: %d}" % need)
    assert plan(exact).returncode == 0


@t.test
def bad_input_exits_2(d):
    missing = os.path.join(d, "nowhere")
    cases = {
        "nvme.yaml": ("zero_optimization: {stage: 1, offload_optimizer: {device: nvme, "
                      "nvme_path: \"%s\"}}" % missing,
                      ["zero_optimization.offload_optimizer.nvme_path: '%s' does not exist"
                       % missing]),
        "param.yaml": ("zero_optimization: {stage: 3, stage3_param_persistence_threshold: 0, "
                       "offload_optimizer: {device: cpu}, offload_param: {device: nvme, "
                       "max_in_cpu: 0, nvme_path: \"%s,%s\"}}" % (d, missing),
                       ["zero_optimization.offload_param.nvme_path", missing]),
        "ckpt.yaml": ("activation_checkpointing: {cpu_checkpointing: true}",
                      ["needs activation_checkpointing.enabled"]),
        "shape.yaml": ("", ["model.n_embd"]),
    }
    for name, (extra, words) in cases.items():
        path = config(d, name, extra)
        if name == "shape.yaml":
            with open(path) as f:
                text = f.read().replace("n_embd: 32", "n_embd: 31")
            with open(path, "w") as f:
                f.write(text)
        p = plan(path)
        assert p.returncode == 2, (name, p.returncode, p.stdout, p.stderr)
        assert p.stderr.startswith("zinc plan: "), (name, p.stderr)
        for w in words:
            assert w in p.stderr, (name, w, p.stderr)
        assert p.stdout == "", (name, p.stdout)
    with open(os.path.join(d, "syntax.yaml"), "w") as f:
        f.write("model: {n_layer: 2\n")
    p = plan(os.path.join(d, "syntax.yaml"))
    assert p.returncode == 2 and "syntax.yaml:" in p.stderr, p.stderr
    assert plan(os.path.join(d, "absent.yaml")).returncode == 2
    p = subprocess.run([ZINC, "plan"], capture_output=True, text=True)
    assert p.returncode == 2, p.stderr


@t.test
def json_matches_the_text(d):
    os.mkdir(os.path.join(d, "o"))
    extra = ("zero_optimization: {stage: 1, offload_optimizer: {device: nvme, nvme_path: \"%s\"}}"
             "\ndevice: {type: cpu, memory_limit: 100000}" % os.path.join(d, "o"))
    cfg = config(d, "c.yaml", extra)
    text, js = plan(cfg), plan(cfg, "--json")
    assert text.returncode == js.returncode == 1, (text.returncode, js.returncode)
    o = json.loads(js.stdout)
    got = needs(text.stdout)
    assert [x["name"] if x["kind"] != "nvme" else "nvme " + x["name"] for x in o["tiers"]] == \
        list(got), (o["tiers"], got)
    assert o["fits"] is False
    for tier in o["tiers"]:
        name = tier["name"] if tier["kind"] != "nvme" else "nvme " + tier["name"]
        assert tier["needed"] == got[name], (name, tier["needed"], got)
        assert tier["needed"] == sum(i["bytes"] for i in tier["items"]), tier
        assert tier["kind"] != "device" or (tier["available"] == 100000 and not tier["fits"]
                                            and tier["suggestions"]), tier
    totals = {"device": 0, "host": 0, "nvme": 0}
    for tier in o["tiers"]:
        totals["device" if tier["kind"] == "device" else
               "nvme" if tier["kind"] == "nvme" else "host"] += tier["needed"]
    assert o["totals"] == totals, (o["totals"], totals)
    m = re.search(r"^totals: device .*?\((\d+) bytes\), host .*?\((\d+) bytes\), nvme .*?"
                  r"\((\d+) bytes\)", text.stdout, re.MULTILINE)
    assert m and [int(x) for x in m.groups()] == [totals["device"], totals["host"],
                                                  totals["nvme"]], text.stdout
    flat = [n for layer in tensors() for n in layer]
    assert o["params"] == sum(flat) and o["largest_tensor"]["elements"] == max(flat), o


@t.test
def training_uses_what_the_plan_says(d):
    """The device tier is exact: training with memory_limit = the planned
    need runs, 256 bytes less does not; for resident parameters the device
    memory in use after a step is the planned need itself."""
    make_data(d)
    for sub in ("o", "p"):
        os.mkdir(os.path.join(d, sub))
    variants = {
        "offload": (OFFLOAD, True),
        "device_adam": ("zero_optimization: {stage: 1}", True),
        "bf16_recompute": ("bf16: {enabled: true}\nactivation_checkpointing: {enabled: true}\n" +
                           OFFLOAD, True),
        "param_cpu": ("activation_checkpointing: {enabled: true, cpu_checkpointing: true}\n"
                      "zero_optimization: {stage: 3, stage3_param_persistence_threshold: 0, "
                      "offload_param: {device: cpu}, offload_optimizer: {device: cpu}}", False),
        "param_nvme": ("fp16: {enabled: true}\nzero_optimization: {stage: 3, sub_group_size: "
                       "9000, stage3_param_persistence_threshold: 0, offload_param: {device: "
                       "nvme, max_in_cpu: 0, nvme_path: \"%s\"}, offload_optimizer: {device: "
                       "nvme, nvme_path: \"%s\", pipeline_read: true}}"
                       % (os.path.join(d, "p"), os.path.join(d, "o")), False),
        # Small tensors resident, the first 10000 offloaded elements with
        # host homes, the rest on NVMe.
        "mixed": ("bf16: {enabled: true}\ndata_types: {grad_accum_dtype: bf16}\n"
                  "zero_optimization: {stage: 3, sub_group_size: 7000, "
                  "stage3_param_persistence_threshold: 200, offload_param: {device: nvme, "
                  "max_in_cpu: 10000, nvme_path: \"%s\"}, offload_optimizer: {device: nvme, "
                  "nvme_path: \"%s\"}}" % (os.path.join(d, "p"), os.path.join(d, "o")), False),
    }
    for name, (extra, resident) in variants.items():
        need = json.loads(plan(config(d, name + ".yaml", extra), "--json").stdout)["tiers"][0]
        assert need["kind"] == "device", need
        need = need["needed"]
        runs = {}
        for limit in (need, need - 256):
            cfg = config(d, "%s-%d.yaml" % (name, limit),
                         extra + "\ndevice: {type: cpu, memory_limit: %d}" % limit)
            log = os.path.join(d, "%s-%d.jsonl" % (name, limit))
            runs[limit] = subprocess.run([ZINC, "train", cfg, "--max-steps", "2", "--json-log",
                                          log], capture_output=True, text=True, timeout=300)
            if limit == need:
                assert runs[limit].returncode == 0, (name, need, runs[limit].stderr)
                if resident:
                    with open(log) as f:
                        used = json.loads(f.readlines()[-1])["device_bytes"]
                    assert used == need, (name, used, need)
        assert runs[need - 256].returncode != 0, (name, need, runs[need - 256].stdout)
        assert "memory_limit" in runs[need - 256].stderr, (name, runs[need - 256].stderr)


if __name__ == "__main__":
    sys.exit(t.main())
