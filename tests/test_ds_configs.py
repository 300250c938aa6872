#!/usr/bin/env python3
"""Public DeepSpeed configs (tests/data/ds_configs, origins in its README) read
as DeepSpeed reads them.

Without arguments: every key of every file is accounted for by the loader
(`zinc config --check FILE --keys`): read, mapped (an alias, a deprecated name,
a misplaced section), "auto", a no-op with its reason, a DeepSpeed section zinc
does not use, or an unknown key warned about -- never silent.  A file zinc
refuses must be one of REFUSED below, refused naming the key and why.

With --train: each file zinc accepts trains one step on a tiny GPT-2 (model,
data and a small batch added with --set), and the start-up says what each
"auto" became.

TAP output.  Needs $ZINC_BIN (and $ZINC_TEST_DIR for --train).
"""
import json
import math
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shards  # noqa: E402
from tap import TapRunner  # noqa: E402

ZINC = os.environ.get("ZINC_BIN", "zinc")
HERE = os.path.dirname(os.path.abspath(__file__))
CONFIGS = os.path.join(HERE, "data", "ds_configs")
TRAIN = "--train" in sys.argv[1:]
t = TapRunner(scratch=True)

# The files zinc refuses, and what the refusal must say: the key, by its
# path, and why.  A file refused that is not here, or one here that loads,
# fails the test.
REFUSED = {
    # Parameters offloaded with the optimizer states on the device: the
    # trainer's placement rule, which zinc config --check asks too.
    "axolotl-zero3_bf16_cpuoffload_params.json":
        "zero_optimization.offload_param: the trainer needs offload_optimizer.device cpu or "
        "nvme with it",
    "deepspeedexamples-bing_bert-deepspeed_bsz4k_onebit_config_seq128.json":
        "optimizer.type: OneBitAdam is refused: it compresses the gradients",
    "deepspeedexamples-cifar-ds_config.json":
        "fp16.fp16_master_weights_and_grads: true is not supported yet",
    # A typo DeepSpeed's pydantic model refuses too.
    "deepspeedexamples-Megatron-LM-v1.1.5-ZeRO3-ds_zero_stage_infinity_config.json":
        "unknown key 'stage3_param_persitance_threshold'; did you mean "
        "'stage3_param_persistence_threshold'?",
}


# Files the config check accepts whose training zinc refuses, and why
# (none: the check asks the trainer's own rules).
TRAIN_REFUSED = {}


def files():
    names = sorted(f for f in os.listdir(CONFIGS) if f.endswith(".json"))
    assert len(names) >= 40, "only %d configs" % len(names)
    return names


def leaves(node, prefix=""):
    """Every key path of a JSON document whose value is not a mapping
    (an empty mapping counts as a leaf)."""
    out = []
    for k, v in node.items():
        p = prefix + k
        if isinstance(v, dict) and v:
            out += leaves(v, p + ".")
        else:
            out.append(p)
    return out


def is_auto(v):
    return isinstance(v, str) and v.lower() == "auto"


def batch_sets(doc):
    """What the Hugging Face Trainer fills in before DeepSpeed sees a file
    whose batch sizes are all "auto" or absent: the micro-batch."""
    given = [k for k in ("train_batch_size", "train_micro_batch_size_per_gpu")
             if k in doc and not is_auto(doc[k])]
    return [] if given else ["--set", "train_micro_batch_size_per_gpu=2"]


def check(path, *extra):
    return subprocess.run([ZINC, "config", "--check", path, "--keys", *extra],
                          capture_output=True, text=True, timeout=60)


def every_key_is_accounted_for(d):
    refused = set()
    for name in files():
        path = os.path.join(CONFIGS, name)
        doc = json.load(open(path))
        sets = batch_sets(doc)
        p = check(path, *sets)
        if p.returncode != 0:
            assert p.returncode == 2, "%s: status %d: %s" % (name, p.returncode, p.stderr)
            assert name in REFUSED, "%s is refused: %s" % (name, p.stderr)
            msg = p.stderr.strip().splitlines()[-1]
            assert msg.startswith("zinc: " + path + ":"), "%s: not located: %s" % (name, msg)
            assert REFUSED[name] in msg, "%s: expected '%s' in: %s" % (name, REFUSED[name], msg)
            refused.add(name)
            continue
        assert name not in REFUSED, "%s loads, but should be refused: %s" % (name, REFUSED[name])
        uses = {}
        mapped = {}
        for line in p.stdout.splitlines():
            key, use, note = line.split("\t")
            uses[key] = (use, note)
            if use == "mapped":
                mapped[key] = note
        for leaf in leaves(doc):
            # The file's spelling to zinc's path, section by section
            # (bfloat16.enabled -> bf16.enabled, zero_optimization.aio.x -> aio.x).
            parts = leaf.split(".")
            canon = ""
            for part in parts:
                spelt = (canon + "." if canon else "") + part
                canon = mapped.get(spelt, spelt)
                if spelt in uses and uses[spelt][0] in ("ignored", "unknown"):
                    canon = None
                    break
            if canon is None:
                continue  # inside a DeepSpeed section zinc does not use, reported whole
            assert canon in uses or leaf in uses, "%s: key '%s' was not accounted for" % (
                name, leaf)
            use, note = uses.get(canon) or uses[leaf]
            assert use in ("read", "mapped", "auto", "no-op", "ignored", "unknown"), use
            if use == "no-op":
                assert note, "%s: %s is a no-op without a reason" % (name, leaf)
            if is_auto(doc_value(doc, leaf)) and not any(x.startswith(leaf + "=") for x in sets):
                assert use in ("auto", "mapped"), "%s: %s is auto, reported %s" % (
                    name, leaf, use)
    assert refused == set(REFUSED), "not found: %s" % (set(REFUSED) - refused)


def doc_value(doc, leaf):
    v = doc
    for part in leaf.split("."):
        v = v[part]
    return v


def no_op_keys_are_said_once(d):
    """A key that does nothing, set away from its default, is named in the one
    warning line with its reason; a file of defaults has no such line."""
    name = "deepspeed-model-Megatron_GPT2-ds_config_func_bs8_zero2.json"
    p = check(os.path.join(CONFIGS, name))
    assert p.returncode == 0, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if "do nothing in zinc" in ln]
    assert len(lines) == 1, p.stderr
    assert "activation_checkpointing.partition_activations=true (" in lines[0], lines[0]
    p = check(os.path.join(CONFIGS, "deepspeed-unit-ds_batch_config.json"))
    assert p.returncode == 0 and "nothing in zinc" not in p.stderr, p.stderr


def make_data(d):
    shards.make(d, ZINC, seed=5)


def train_sets(d, doc):
    sets = {
        "model": "{type: gpt2, n_layer: 2, n_head: 2, n_embd: 32, vocab_size: 256, seq_len: 32}",
        "data": "{train: \"%s/data/t_train_*.bin\", seed: 3}" % d,
        "device": "{type: cpu}",
        # One short step: the files' batch sizes are checked above.
        "train_batch_size": "2", "train_micro_batch_size_per_gpu": "2",
        "gradient_accumulation_steps": "1",
    }
    zero = doc.get("zero_optimization")
    if isinstance(zero, dict):
        for part in ("offload_param", "offload_optimizer"):
            if isinstance(zero.get(part), dict) and zero[part].get("device") == "nvme":
                os.makedirs(os.path.join(d, "swap"), exist_ok=True)
                sets["zero_optimization.%s.nvme_path" % part] = os.path.join(d, "swap")
    out = []
    for k, v in sets.items():
        out += ["--set", "%s=%s" % (k, v)]
    return out


def accepted_configs_train_a_step(d):
    make_data(d)
    trained = 0
    bad = []
    for name in files():
        if name in REFUSED:
            continue
        path = os.path.join(CONFIGS, name)
        doc = json.load(open(path))
        log = os.path.join(d, name + ".jsonl")
        p = subprocess.run([ZINC, "train", path, "--max-steps", "1", "--json-log", log,
                            *train_sets(d, doc)], capture_output=True, text=True, timeout=300)
        if name in TRAIN_REFUSED:
            assert p.returncode == 2 and TRAIN_REFUSED[name] in p.stderr, "%s: %s" % (
                name, p.stderr)
            continue
        if p.returncode != 0:
            bad.append("%s: status %d: %s" % (name, p.returncode, p.stderr.strip()[-400:]))
            continue
        steps = [json.loads(line) for line in open(log)]
        assert len(steps) == 1 and math.isfinite(steps[0]["loss"]), "%s: %s" % (name, steps)
        if any(is_auto(doc_value(doc, leaf)) for leaf in leaves(doc)):
            assert '"auto": ' in p.stdout, "%s: no line says what \"auto\" became:\n%s" % (
                name, p.stdout)
        trained += 1
    assert not bad, "\n".join(bad)
    assert trained >= 40, "only %d configs trained" % trained


if TRAIN:
    t.test(accepted_configs_train_a_step)
else:
    t.test(every_key_is_accounted_for)
    t.test(no_op_keys_are_said_once)
sys.exit(t.main())
