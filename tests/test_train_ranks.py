#!/usr/bin/env python3
"""`zinc train` on two ranks over the tcp comm (torchrun's variables, two
processes on 127.0.0.1: no MPI needed, suite unit) against one rank with
twice the gradient accumulation: the two runs see the same micro-batches
each step (tests/test_train_mpi.py says why), so the global gradient norm
must be the same -- every rank's part summed once over the ranks.  A norm
taken over one rank's part alone, or a replica counted on each rank, is
off by about sqrt(2); with gradient_clipping below the norm the clip
coefficient and so the losses follow it, which is checked too.

TAP output.  Needs $ZINC_BIN and $ZINC_TEST_DIR.
"""
import json
import os
import socket
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shards  # noqa: E402
from tap import TapRunner  # noqa: E402

ZINC = os.environ.get("ZINC_BIN", "zinc")
t = TapRunner(scratch=True)

CONFIG = """
train_micro_batch_size_per_gpu: 4
gradient_accumulation_steps: {acc}
gradient_clipping: 0.5
optimizer: {{type: AdamW, params: {{lr: 0.003, betas: [0.9, 0.95], weight_decay: 0.1}}}}
scheduler: {{type: WarmupDecayLR, params: {{warmup_max_lr: 0.003, warmup_num_steps: 2,
             total_num_steps: 20, warmup_type: linear}}}}
model: {model}
data: {{train: "{d}/data/t_train_*.bin", seed: 7}}
zero_optimization: {zero}
"""

# Stage 1 and 2 partition the optimizer states and the gradients; stage 3
# with host homes the parameters too (bit-identical to one rank there).
PLACEMENTS = {
    "s1": ("{stage: 1, offload_optimizer: {device: cpu}}", 1e-6),
    "s2": ("{stage: 2, offload_optimizer: {device: cpu}}", 1e-6),
    "s3": ("{stage: 3, stage3_param_persistence_threshold: 0, offload_param: "
           "{device: cpu}, offload_optimizer: {device: cpu}}", 0.0),
}


def make_data(d):
    shards.make(d, ZINC)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env():
    env = dict(os.environ)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
              "MASTER_PORT", "OMPI_COMM_WORLD_SIZE", "TORCHELASTIC_RUN_ID", "PMI_SIZE"):
        env.pop(k, None)
    return env


GPT2 = "{n_layer: 2, n_head: 2, n_embd: 32, vocab_size: 256, seq_len: 32}"


def run(d, name, zero, ranks, steps=5, acc=None, sets=(), extra="", model=GPT2):
    cfg = os.path.join(d, name + ".yaml")
    with open(cfg, "w") as f:
        f.write(CONFIG.format(d=d, acc=acc or 2 // ranks, zero=zero, model=model) + extra)
    jl = os.path.join(d, name + ".jsonl")
    cmd = [ZINC, "train", cfg, "--max-steps", str(steps), "--json-log", jl]
    for kv in sets:
        cmd += ["--set", kv]
    if ranks == 1:
        p = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), timeout=300)
        assert p.returncode == 0, (name, p.stderr[-2000:])
    else:
        port = str(free_port())
        procs = []
        for r in range(ranks):
            env = clean_env()
            env.update(RANK=str(r), WORLD_SIZE=str(ranks), LOCAL_RANK=str(r),
                       LOCAL_WORLD_SIZE=str(ranks), MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
                       ZINC_COMM_TIMEOUT="60")
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True, env=env))
        for r, p in enumerate(procs):
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0, (name, "rank", r, err[-2000:])
    return [json.loads(line) for line in open(jl)]


@t.test
def the_gradient_norm_is_summed_over_the_ranks(d):
    make_data(d)
    for name, (zero, tol) in PLACEMENTS.items():
        one = run(d, name + "-1", zero, 1)
        two = run(d, name + "-2", zero, 2)
        assert two[0]["rank_memory"]["world"] == 2, two[0]
        na, nb = [s["grad_norm"] for s in one], [s["grad_norm"] for s in two]
        assert len(na) == len(nb) == 5, (name, na, nb)
        worst = max(abs(a - b) / a for a, b in zip(na, nb))
        assert worst <= max(10 * tol, 1e-12), (name, "grad_norm", worst, na, nb)
        # Clipping is active (norm above gradient_clipping: 0.5), so the
        # coefficient, and with it every later loss, follows the norm.
        assert min(na) > 0.5, (name, "clipping is not active", na)
        la, lb = [s["loss"] for s in one], [s["loss"] for s in two]
        worst = max(abs(a - b) / a for a, b in zip(la, lb))
        assert worst <= max(tol, 1e-12), (name, "loss", worst, la, lb)


# Stage 3 with everything on NVMe: each rank's reduced part of every
# gradient goes to its sums beside its optimizer states (read, added to
# and written back by the second micro-batch), or into host accumulators.
NVME = ("{{stage: 3, stage3_param_persistence_threshold: 0, reduce_bucket_size: 3000, "
        "overlap_comm: {ov}, sub_group_size: 5000, "
        "offload_param: {{device: nvme, nvme_path: {d}/swap-{n}}}, "
        "offload_optimizer: {{device: nvme, nvme_path: {d}/swap-{n}, gradients: {g}}}}}")


@t.test
def gradients_on_nvme_over_two_ranks_are_the_host_accumulators_bits(d):
    make_data(d)
    runs = {}
    for g, ov in (("host", "false"), ("nvme", "false"), ("nvme", "true")):
        n = g + "-" + ov
        os.makedirs(os.path.join(d, "swap-" + n))
        runs[n] = run(d, n, NVME.format(d=d, n=n, g=g, ov=ov), 2, acc=2)
    ref = runs["host-false"]
    keys = ("loss", "grad_norm")
    for n, log in runs.items():
        assert len(log) == 5, (n, log)
        for k in keys:
            a, b = [s[k] for s in ref], [s[k] for s in log]
            assert a == b, (n, k, a, b)
    # The gradients took the NVMe way: more bytes there, none accumulated
    # in host memory (the step's NVMe traffic includes their reads and
    # writes: the second micro-batch reads the sums back).
    wh = sum(s["nvme_write_bytes"] for s in ref)
    wn = sum(s["nvme_write_bytes"] for s in runs["nvme-false"])
    rh = sum(s["nvme_read_bytes"] for s in ref)
    rn = sum(s["nvme_read_bytes"] for s in runs["nvme-false"])
    assert wn > wh and rn > rh, ("no gradient traffic on NVMe", wh, wn, rh, rn)
    # Host memory holds no gradient accumulators: this rank's model
    # states there are less by exactly its part of the gradients.
    hh, hn = ref[0]["host_bytes"], runs["nvme-false"][0]["host_bytes"]
    grads = ref[0]["rank_memory"]["grads"]
    assert hh - hn == grads > 0, ("host accumulators left", hh, hn, grads)


# bf16 with offload_param: offloaded layers visit the device in 16 bits
# only, on two ranks as on one (gathered into the kernels' copy, their
# 16-bit gradients reduced as they are), accumulated in fp32 (converted
# on the host) and in bf16 (crossing as they are).
BF16 = ("{stage: 3, stage3_param_persistence_threshold: 0, offload_param: {device: cpu}, "
        "offload_optimizer: {device: cpu}}\nbf16: {enabled: true}\n"
        "data_types: {grad_accum_dtype: %s}")


@t.test
def sixteen_bit_layers_on_two_ranks_are_one_ranks_bits(d):
    make_data(d)
    for gdt in ("fp32", "bf16"):
        # Wide enough for the layers, not the activations, to set the
        # device's peak.
        wide = ("model.n_embd=192", "train_micro_batch_size_per_gpu=1")
        one = run(d, "bf16-%s-1" % gdt, BF16 % gdt, 1, sets=wide)
        two = run(d, "bf16-%s-2" % gdt, BF16 % gdt, 2, sets=wide)
        la, lb = [s["loss"] for s in one], [s["loss"] for s in two]
        assert len(la) == 5 and la == lb, (gdt, "loss", la, lb)
        # The norm's squares are summed per rank, then over the ranks.
        na, nb = [s["grad_norm"] for s in one], [s["grad_norm"] for s in two]
        assert max(abs(a - b) / a for a, b in zip(na, nb)) <= 1e-12, (gdt, na, nb)
        # The device holds what one rank's does: the layers in 16 bits
        # (fp32 beside 16-bit copies would be three times their bytes).
        da, db = one[-1]["device_peak"], two[-1]["device_peak"]
        print("# %s: device peak %d bytes on one rank, %d on two" % (gdt, da, db))
        assert db <= da * 1.02, (gdt, "device peak", da, db)


# Tiles on several ranks: each tile is partitioned over the ranks as a
# tensor of its own (DeepSpeed's TiledLinear makes each tile a
# parameter), gathered and reduced tile by tile.  A Llama whose 1024-row
# embedding and classifier (or the one tied tensor) come in 7 tiles of
# 147 rows (the last 142), computed tile by tile, and GPT-2, whose tied
# wte and 4096-element matrices are stored in tiles of 1000 elements and
# visit whole.
LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 32,
         "intermediate_size": 48, "num_attention_heads": 2, "num_key_value_heads": 1,
         "num_hidden_layers": 2, "vocab_size": 1024, "max_position_embeddings": 64,
         "rms_norm_eps": 1e-5, "tie_word_embeddings": False}
TILED = ("{{stage: 3, stage3_param_persistence_threshold: 0, tile_size: {tile}, "
         "sub_group_size: 6000, offload_param: {{device: nvme, max_in_cpu: 0, "
         "nvme_path: {d}/{n}-p}}, offload_optimizer: {{device: nvme, nvme_path: {d}/{n}-o}}}}")


def tiled_run(d, n, model, ranks, acc, steps=5, extra="", tile=5000):
    for sub in ("p", "o"):
        os.makedirs(os.path.join(d, "%s-%s" % (n, sub)), exist_ok=True)
    zero = TILED.format(d=d, n=n, tile=tile)
    spec = GPT2
    if model.startswith("llama"):
        cj = os.path.join(d, model + ".json")
        with open(cj, "w") as f:
            json.dump(dict(LLAMA, tie_word_embeddings=model == "llama-tied"), f)
        spec = "{type: llama, config: \"%s\", seq_len: 32}" % cj
        extra = "bf16: {enabled: true}\n" + extra
    return run(d, n, zero, ranks, steps=steps, acc=acc, extra=extra, model=spec)


def safetensors_metadata(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(n)).get("__metadata__", {})


def safetensors_bf16(path):
    """Every tensor of a file as bf16 bit patterns (fp32 rounded to
    nearest even, as zinc rounds)."""
    out = {}
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        head = json.loads(f.read(n))
        data = f.read()
    for name, x in head.items():
        if name == "__metadata__":
            continue
        b = data[x["data_offsets"][0]:x["data_offsets"][1]]
        if x["dtype"] == "BF16":
            out[name] = list(struct.unpack("<%dH" % (len(b) // 2), b))
        else:
            assert x["dtype"] == "F32", (name, x["dtype"])
            u = struct.unpack("<%dI" % (len(b) // 4), b)
            out[name] = [((v + 0x7fff + ((v >> 16) & 1)) >> 16) & 0xffff for v in u]
    return out


@t.test
def tiles_on_several_ranks_are_one_ranks_bits(d):
    make_data(d)
    for model, tile in (("llama", 5000), ("llama-tied", 5000), ("gpt2", 1000)):
        for ranks in (2, 3):
            one = tiled_run(d, "%s-1of%d" % (model, ranks), model, 1, ranks, tile=tile)
            many = tiled_run(d, "%s-%d" % (model, ranks), model, ranks, 1, tile=tile)
            la, lb = [s["loss"] for s in one], [s["loss"] for s in many]
            assert len(la) == 5 and la == lb, (model, ranks, la, lb)
            na, nb = [s["grad_norm"] for s in one], [s["grad_norm"] for s in many]
            assert max(abs(a - b) / a for a, b in zip(na, nb)) <= 1e-12, (model, na, nb)
            assert la[-1] < la[0], (model, "the loss does not fall", la)


@t.test
def tiled_checkpoints_resume_on_another_number_of_ranks(d):
    """Parts of tiled tensors hold a piece of every tile, and say so in
    their metadata: 2 or 3 ranks' parts resume on one rank, one rank's
    checkpoint on two, each continuing the run that never stopped."""
    make_data(d)
    for saved, acc in ((2, 2), (3, 3), (1, 2)):
        ckref = os.path.join(d, "ckref%d" % saved)
        ref = tiled_run(d, "ref%d" % saved, "llama", 1, acc, steps=6,
                        extra="checkpoint: {dir: \"%s\", every: 3}\n" % ckref)
        ck = os.path.join(d, "ck%d" % saved)
        every = "checkpoint: {dir: \"%s\", every: 3}\n" % ck
        tiled_run(d, "a%d" % saved, "llama", saved, acc // saved, steps=3, extra=every)
        step = os.path.join(ck, open(os.path.join(ck, "latest")).read().strip())
        if saved > 1:
            meta = safetensors_metadata(os.path.join(
                step, "optimizer-00001-of-%05d.safetensors" % saved))
            tiled = dict(x.split(":") for x in meta.get("zinc.tile_rows", "").split(";") if x)
            assert tiled == {"model.embed_tokens.weight": "147", "lm_head.weight": "147"}, meta
            # The parts joined: the Hugging Face folder one rank saves.
            out = os.path.join(d, "joined%d" % saved)
            c = subprocess.run([ZINC, "consolidate", ck, "--out", out], capture_output=True,
                               text=True)
            assert c.returncode == 0, c.stderr
            # One rank saves them in bf16, the training dtype; the
            # consolidation in fp32, which rounds to those bits.
            one = os.path.join(ckref, "step-00000003")
            names = [f for f in os.listdir(out) if f.endswith(".safetensors")]
            assert names, os.listdir(out)
            for f in names:
                a = safetensors_bf16(os.path.join(out, f))
                b = safetensors_bf16(os.path.join(one, f))
                assert a == b and "lm_head.weight" in a, (saved, f, "consolidated parameters differ")
        then = 2 if saved == 1 else 1
        resumed = tiled_run(d, "b%d" % saved, "llama", then, acc // then, steps=6,
                            extra="checkpoint: {dir: \"%s\", resume: true}\n" % ck)
        assert [s["step"] for s in resumed] == [4, 5, 6], resumed
        assert [s["loss"] for s in resumed] == [s["loss"] for s in ref[3:]], (saved, resumed, ref)


if __name__ == "__main__":
    sys.exit(t.main())
