#!/usr/bin/env python3
"""`zinc plan CONFIG` as a user runs it: per-tier bytes equal to the memory
model restated here from GPT-2's tensor list, a device too small (exit 1,
suggestions), a missing nvme_path (exit 2, the key named), --json against
the text, and the plan against training itself: `zinc train` with exactly
the planned device memory runs, and with 256 bytes less it does not.
--machine: each part replaces what this machine has (a described machine
refuses what fits here and the other way round), bad values exit 2.
--largest: the shape it reports plans as fitting through `zinc plan`, the
next size up it reports does not, short in the tier it names; the Llama-3
shapes in tests/data/ have their published parameter counts.

TAP output.  Needs $ZINC_BIN, $ZINC_TEST_DIR and $ZINC_SOURCE_ROOT.
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
ROOT = os.environ.get("ZINC_SOURCE_ROOT", os.path.join(os.path.dirname(__file__), ".."))
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


def activations(recompute=False, offload=False, a=256, e=4):
    """Device and host bytes of the model's activations (engine/model/gpt2.c's
    list): per block its input and its working set, the classifier's and
    backward's buffers; e: bytes of an element in the training dtype."""
    bt = B * SEQ
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


def kernel_ws(bits16):
    """The cpu kernels' scratch in host memory, as include/zinc/kernels.h
    bounds it (a worker per core): attention's two blocks of 64 x T floats a
    worker; 16-bit storage: or a row of 2 C + 32 or of the padded
    vocabulary, and the widening buffer, three blocks of the most an op
    takes (BT rows of the widest row, the padded embedding, T rows of an
    attention group of 3 HS) and the larger of the vocabulary and 3 rows."""
    T, bt, vp = SEQ, B * SEQ, up(V, 128)
    row, group = max(4 * C, SEQ), 3 * (C // NH)
    per, wide = 2 * 64 * T, 0
    if bits16:
        per = max(per, 2 * C + 32, vp)
        wide = 3 * max(bt * row, vp * C, T * group) + max(vp, 3 * row)
    return (os.sysconf("SC_NPROCESSORS_ONLN") * up(per, 16) + up(wide, 16)) * 4


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
    assert got["pageable host"] == (12 * P + 4 * P + 4 * largest + 3 * 4 * bt + device +
                                    kernel_ws(False)), got
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
    layer = [sum(up(2 * n, 256) for n in ts) for ts in tensors()]
    # Layers in use, in bf16 (they visit as the kernels take them): the
    # classifier holds ln_f and wte with gradients; wte's gradients then
    # wait in an fp32 sum (w0) beside a block's backward, itself with
    # gradients.
    w0 = sum(up(4 * n, 256) for n in tensors()[0])
    in_use = max(2 * (layer[0] + layer[-1]) + w0, w0 + 2 * max(layer[1:-1]))
    act, host_act = activations(True, True, e=2)
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
    pageable = 2 * largest + 4 * largest + 3 * 4 * bt + host_act + device + kernel_ws(True)
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
        # The same in tiles of 1024 elements: wte and the larger block
        # matrices have a home per tile, each whole on the device.
        "tiles_nvme": ("bf16: {enabled: true}\nzero_optimization: {stage: 3, sub_group_size: "
                       "9000, tile_size: 1024, stage3_param_persistence_threshold: 0, "
                       "offload_param: {device: nvme, max_in_cpu: 0, nvme_path: \"%s\"}, "
                       "offload_optimizer: {device: nvme, nvme_path: \"%s\"}}"
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


def tier_of(o, kind, name=None):
    return next(x for x in o["tiers"] if x["kind"] == kind and (name is None or x["name"] == name))


@t.test
def machine_parts_replace_what_is_measured(d):
    cfg = config(d, "c.yaml")
    here = json.loads(plan(cfg, "--json").stdout)
    assert here["machine"]["described"] is False and here["machine"]["nvme"] == [], here["machine"]
    pin, pag = tier_of(here, "pinned_host"), tier_of(here, "pageable_host")
    host_need = pin["needed"] + pag["needed"]

    # host: both host rows' capacity; exactly the need fits, a byte less not.
    p = plan(cfg, "--machine", "host=%d" % host_need)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "machine: described, not measured: host " in p.stdout, p.stdout
    assert "measured here: device, nvme" in p.stdout, p.stdout
    p = plan(cfg, "--machine", "host=%d" % (host_need - 1), "--json")
    assert p.returncode == 1, p.stdout + p.stderr
    o = json.loads(p.stdout)
    assert o["machine"]["described"] and o["machine"]["host"] == host_need - 1, o["machine"]
    assert o["machine"]["device"] is None, o["machine"]
    for kind in ("pinned_host", "pageable_host"):
        x = tier_of(o, kind)
        assert x["described"] and x["total"] == host_need - 1, x
    x = tier_of(o, "pageable_host")
    assert x["available"] == host_need - 1 - pin["needed"] and not x["fits"], x
    assert not tier_of(o, "device")["described"]

    # device (cpu backend): a cap on the device's bytes, still counted as
    # host memory in the pageable row.
    dev = tier_of(here, "device")["needed"]
    p = plan(cfg, "--machine", "device=%d" % dev, "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    x = tier_of(json.loads(p.stdout), "device")
    assert x["described"] and x["available"] == dev and not x["counted_elsewhere"], x
    assert "pageable host row counts these bytes too" in x["note"], x
    assert tier_of(json.loads(p.stdout), "pageable_host")["needed"] == pag["needed"]
    p = plan(cfg, "--machine", "device=%d" % (dev - 256))
    assert p.returncode == 1, p.stdout + p.stderr
    assert re.search(r"^device\s.*SHORT by 256 B", p.stdout, re.MULTILINE), p.stdout
    assert "plan for a device with at least" in p.stdout, p.stdout

    # nvme: the directories need not exist; one disk is shared, several
    # take the directories in order.
    o_dir, p_dir = os.path.join(d, "o"), os.path.join(d, "p")
    nv = config(d, "nvme.yaml",
                "zero_optimization: {stage: 3, stage3_param_persistence_threshold: 0, "
                "offload_param: {device: nvme, max_in_cpu: 0, nvme_path: \"%s\"}, "
                "offload_optimizer: {device: nvme, nvme_path: \"%s\"}}" % (p_dir, o_dir))
    p = plan(nv)
    assert p.returncode == 2 and "does not exist" in p.stderr, p.stderr
    p = plan(nv, "--machine", "nvme=1T", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    o = json.loads(p.stdout)
    rows = [x for x in o["tiers"] if x["kind"] == "nvme"]
    assert [x["name"] for x in rows] == [o_dir, p_dir], rows
    assert all(x["described"] and x["available"] == 1 << 40 for x in rows), rows
    assert all(x["source"] == "the described nvme disk" for x in rows), rows
    n1, n2 = rows[0]["needed"], rows[1]["needed"]
    for disks, code in (("nvme=%d" % (n1 + n2), 0), ("nvme=%d" % (n1 + n2 - 1), 1),
                        ("nvme=%d,nvme=%d" % (n1, n2), 0), ("nvme=%d,nvme=%d" % (n1, n2 - 1), 1)):
        p = plan(nv, "--machine", disks)
        assert p.returncode == code, (disks, p.returncode, p.stdout, p.stderr)
    # Parts from two options add up.
    p = plan(nv, "--machine", "nvme=1T", "--machine", "device=1T", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    o = json.loads(p.stdout)["machine"]
    assert o["device"] == 1 << 40 and o["nvme"] == [1 << 40] and o["host"] is None, o


@t.test
def bad_machine_exits_2(d):
    cfg = config(d, "c.yaml")
    cases = {
        "": "empty",
        "gpu=24G": "'gpu=24G': no such part",
        "device": "device: give its size",
        "device=24X": "device: '24X' is not a size",
        "host=1.5G": "host: '1.5G' is not a size",
        "nvme=0": "nvme: 0 bytes",
        "host=1G,host=2G": "host is given twice",
        "device=1G,": "an empty part",
    }
    for value, words in cases.items():
        p = plan(cfg, "--machine", value)
        assert p.returncode == 2, (value, p.returncode, p.stdout, p.stderr)
        assert p.stderr.startswith("zinc plan: invalid value '%s' for --machine: " % value), \
            (value, p.stderr)
        assert words in p.stderr, (value, words, p.stderr)
        assert p.stdout == "", (value, p.stdout)
    p = plan(cfg, "--machine")
    assert p.returncode == 2 and "needs a value" in p.stderr, p.stderr
    p = plan(cfg, "--largest", "--ranks", "2")
    assert p.returncode == 2 and "cannot be combined" in p.stderr, p.stderr


@t.test
def described_machine_refuses_what_fits_here_and_the_other_way_round(d):
    small = config(d, "small.yaml")
    assert plan(small).returncode == 0
    p = plan(small, "--machine", "host=1M")
    assert p.returncode == 1, p.stdout + p.stderr
    assert re.search(r"^pageable host\s.*SHORT by", p.stdout, re.MULTILINE), p.stdout
    # A GPT-2 of 51 B parameters: more than this machine's memory, not more
    # than a described one's.
    with open(config(d, "big.yaml")) as f:
        text = f.read().replace("n_layer: %d, n_head: %d, n_embd: %d" % (L, NH, C),
                                "n_layer: 64, n_head: 64, n_embd: 8192")
    big = os.path.join(d, "big.yaml")
    with open(big, "w") as f:
        f.write(text)
    p = plan(big, "--json")
    assert p.returncode == 1, p.stdout + p.stderr
    o = json.loads(p.stdout)
    assert o["params"] > 50e9 and not tier_of(o, "pageable_host")["fits"], o["params"]
    need = tier_of(o, "pinned_host")["needed"] + tier_of(o, "pageable_host")["needed"]
    assert plan(big, "--machine", "host=%d" % need).returncode == 0
    assert plan(big, "--machine", "host=%d" % (need - 1)).returncode == 1


def largest(cfg, machine):
    p = plan(cfg, "--machine", machine, "--largest", "--json")
    assert p.returncode in (0, 1), p.stdout + p.stderr
    return p.returncode, json.loads(p.stdout)


def short_tiers(o):
    return sorted((x["kind"], x["name"]) for x in o["tiers"] if x["hard"] and not x["fits"])


def check_shape_plans(write, machine, res):
    """The reported shape plans as fitting through `zinc plan`, the next
    size up as not, short in the binding tiers; both plans as --largest
    printed them."""
    assert res["result"] == "found", res["result"]
    fit, nxt = res["largest"], res["next"]
    assert nxt["shape"]["params"] > fit["shape"]["params"], (fit["shape"], nxt["shape"])
    p = plan(write("fit", fit["shape"]), "--machine", machine, "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    o = json.loads(p.stdout)
    assert o["params"] == fit["shape"]["params"], (o["params"], fit["shape"])
    assert [x["needed"] for x in o["tiers"]] == [x["needed"] for x in fit["plan"]["tiers"]]
    p = plan(write("next", nxt["shape"]), "--machine", machine, "--json")
    assert p.returncode == 1, p.stdout + p.stderr
    o = json.loads(p.stdout)
    assert o["params"] == nxt["shape"]["params"]
    assert short_tiers(o) == sorted((b["kind"], b["name"]) for b in res["binding"]), \
        (short_tiers(o), res["binding"])
    assert res["binding"], res


@t.test
def largest_gpt2_fits_and_the_next_size_up_does_not(d):
    cfg = config(d, "c.yaml", OFFLOAD)
    machine = "host=8G"

    def write(name, s):
        with open(cfg) as f:
            text = f.read().replace("n_layer: %d, n_head: %d, n_embd: %d" % (L, NH, C),
                                    "n_layer: %d, n_head: %d, n_embd: %d"
                                    % (s["n_layer"], s["n_head"], s["n_embd"]))
        path = os.path.join(d, name + ".yaml")
        with open(path, "w") as f:
            f.write(text)
        return path

    code, res = largest(cfg, machine)
    assert code == 0 and res["family"] == "GPT-2", (code, res["family"])
    assert res["machine"]["described"] and res["machine"]["host"] == 8 << 30, res["machine"]
    s = res["largest"]["shape"]
    assert s["n_embd"] == 64 * s["n_head"] and s["intermediate"] == 4 * s["n_embd"], s
    assert s["vocab_size"] == V, s
    check_shape_plans(write, machine, res)
    assert [b["kind"] for b in res["binding"]] == ["pageable_host"], res["binding"]
    # The text says the same.
    p = plan(cfg, "--machine", machine, "--largest")
    assert p.returncode == 0, p.stdout + p.stderr
    for words in ("largest GPT-2-shaped model", "machine: described, not measured: host 8 GiB",
                  "fits:          model.n_embd %d, model.n_layer %d" % (s["n_embd"], s["n_layer"]),
                  "next size up:", "binding: pageable host: the next size up needs"):
        assert words in p.stdout, (words, p.stdout)
    assert re.search(r"^pageable host\s.*<- binds$", p.stdout, re.MULTILINE), p.stdout
    # Not even the smallest (exit 1), every shape (exit 0).
    code, res = largest(cfg, "host=64M")
    assert code == 1 and res["result"] == "none" and res["largest"] is None, (code, res)
    assert res["next"]["shape"]["n_embd"] == 768 and res["next"]["shape"]["n_layer"] == 12
    assert [b["kind"] for b in res["binding"]] == ["pageable_host"], res["binding"]
    p = plan(cfg, "--machine", "host=64M", "--largest")
    assert p.returncode == 1 and "none fits" in p.stdout, p.stdout
    code, res = largest(cfg, "host=1T")
    assert code == 0 and res["result"] == "all" and res["next"] is None, (code, res)
    assert res["largest"]["shape"]["n_embd"] == 1600 and res["largest"]["shape"]["n_layer"] == 48


def llama_finetune(d, shape_json):
    """examples/llama-finetune.yaml training from scratch on shape_json's
    shape, every parameter home on NVMe."""
    with open(os.path.join(ROOT, "examples", "llama-finetune.yaml")) as f:
        text = f.read()
    text = re.sub(r"(?m)^  from: .*$", "  config: %s" % shape_json, text)
    text = text.replace("  offload_param:\n", "  offload_param:\n    max_in_cpu: 0\n")
    path = os.path.join(d, "llama-%s.yaml" % os.path.basename(shape_json))
    with open(path, "w") as f:
        f.write(text)
    return path


def data(name):
    return os.path.join(ROOT, "tests", "data", name)


@t.test
def llama_3_shapes_and_the_largest_on_a_workstation(d):
    """The published shapes' parameter counts; the largest Llama for a 24 GB
    GPU, 32 GB of host memory and 1.2 TB of NVMe, checked through config.json
    files of its shape and the next."""
    machine = "device=24G,host=32G,nvme=1.2e12"
    published = {"llama-3.2-3b.json": 3212749824, "llama-3-8b.json": 8030261248,
                 "llama-3-70b.json": 70553706496}
    for name, params in published.items():
        p = plan(llama_finetune(d, data(name)), "--machine", machine, "--json")
        assert p.returncode in (0, 1), p.stdout + p.stderr
        assert json.loads(p.stdout)["params"] == params, (name, p.stdout[:300])
    cfg = llama_finetune(d, data("llama-3-8b.json"))
    with open(data("llama-3-8b.json")) as f:
        base = json.load(f)

    def write(name, s):
        c = dict(base, hidden_size=s["n_embd"], num_hidden_layers=s["n_layer"],
                 num_attention_heads=s["n_head"], num_key_value_heads=s["n_kv_head"],
                 head_dim=s["head_dim"], intermediate_size=s["intermediate"])
        path = os.path.join(d, name + ".json")
        with open(path, "w") as f:
            json.dump(c, f)
        return llama_finetune(d, path)

    code, res = largest(cfg, machine)
    assert code == 0 and res["family"] == "Llama", (code, res["family"])
    s = res["largest"]["shape"]
    assert s["head_dim"] == 128 and s["n_kv_head"] == 8 and s["n_embd"] % 1024 == 0, s
    assert s["vocab_size"] == 128256 and s["params"] > 8030261248, s
    check_shape_plans(write, machine, res)


@t.test
def a_llama_in_tiles_trains_at_the_planned_device_memory(d):
    """The device tier stays exact for a Llama, untied (whose embedding
    comes only to the encoder) and tied (whose classifier part of each
    tile's gradients waits beside the homes), whole and with its
    embedding and classifier in tiles (tile_size), gradients on NVMe: the
    planned need trains, 256 bytes less does not, and tiles need less."""
    make_data(d)
    for sub in ("o", "p"):
        os.mkdir(os.path.join(d, sub))
    for tied in (False, True):
        tiles_at_the_planned_device_memory(d, tied)


def tiles_at_the_planned_device_memory(d, tied):
    cj = os.path.join(d, "llama-%d.json" % tied)
    with open(cj, "w") as f:
        json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
                   "hidden_size": 32, "intermediate_size": 48, "num_attention_heads": 2,
                   "num_key_value_heads": 1, "num_hidden_layers": 2, "vocab_size": 1024,
                   "max_position_embeddings": 64, "rms_norm_eps": 1e-5,
                   "tie_word_embeddings": tied}, f)
    text = ("train_micro_batch_size_per_gpu: 2\ngradient_accumulation_steps: 2\n"
            "bf16: {enabled: true}\ndata_types: {grad_accum_dtype: bf16}\n"
            "model: {type: llama, config: \"%s\", seq_len: 32}\n"
            "data: {train: \"%s/data/t_train_*.bin\", seed: 7}\n"
            "zero_optimization: {stage: 3, sub_group_size: 9000, tile_size: %d, "
            "stage3_param_persistence_threshold: 0, offload_param: {device: nvme, "
            "max_in_cpu: 0, nvme_path: \"%s\"}, offload_optimizer: {device: nvme, "
            "nvme_path: \"%s\"}}\n")
    needs = {}
    for tile in (0, 4096):
        body = text % (cj, d, tile, os.path.join(d, "p"), os.path.join(d, "o"))
        cfg = os.path.join(d, "t%d-%d.yaml" % (tile, tied))
        with open(cfg, "w") as f:
            f.write(body)
        p = plan(cfg, "--json")
        assert p.returncode == 0, p.stdout + p.stderr
        need = json.loads(p.stdout)["tiers"][0]["needed"]
        needs[tile] = need
        for limit in (need, need - 256):
            lc = os.path.join(d, "t%d-%d-%d.yaml" % (tile, tied, limit))
            with open(lc, "w") as f:
                f.write(body + "device: {type: cpu, memory_limit: %d}\n" % limit)
            r = subprocess.run([ZINC, "train", lc, "--max-steps", "2"], capture_output=True,
                               text=True, timeout=300)
            if limit == need:
                assert r.returncode == 0, (tied, tile, need, r.stderr)
            else:
                assert r.returncode != 0 and "memory_limit" in r.stderr, (tied, tile, need,
                                                                           r.stderr)
    assert needs[4096] < needs[0], (tied, needs)


if __name__ == "__main__":
    sys.exit(t.main())
