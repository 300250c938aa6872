#!/usr/bin/env python3
"""tools/out_of_core_bench.py end to end on a small model: it runs nvme-bench,
the out-of-core training under /usr/bin/time and the resident one, and its
report adds up (figures from the runs, not fixed).  Not a performance check:
that is the benchmark's own job on a real model.

TAP output.  Needs $ZINC_BIN and $ZINC_TEST_DIR.
"""
import json
import os
import random
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tap import Skip, TapRunner  # noqa: E402

ZINC = os.environ.get("ZINC_BIN", "zinc")
HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "tools", "out_of_core_bench.py")
t = TapRunner(scratch=True)

CONFIG = """
train_micro_batch_size_per_gpu: 4
gradient_accumulation_steps: 1
gradient_clipping: 1.0
bf16: {{enabled: true}}
data_types: {{grad_accum_dtype: bf16}}
model: {{n_layer: 2, n_head: 2, n_embd: 64, vocab_size: 256, seq_len: 32}}
data: {{train: "{d}/data/t_train_*.bin", seed: 3}}
zero_optimization: {{stage: 3, sub_group_size: 20000, stage3_param_persistence_threshold: 0,
  offload_param: {{device: nvme, max_in_cpu: 0, nvme_path: "{d}/swap"}},
  offload_optimizer: {{device: nvme, nvme_path: "{d}/swap", pipeline_read: true,
                      pipeline_write: true}}}}
aio: {{block_size: 131072, queue_depth: 8, intra_op_parallelism: 1}}
checkpoint: {{dir: "{d}/ck", every: 0}}
"""


@t.test
def report_adds_up(d):
    if not os.access("/usr/bin/time", os.X_OK):
        raise Skip("/usr/bin/time missing (Debian package time)")
    rng = random.Random(5)
    with open(os.path.join(d, "text.txt"), "w") as f:
        f.write(" ".join(rng.choice(["zinc", "nvme", "adam", "swap"]) for _ in range(20000)))
    p = subprocess.run([ZINC, "prepare-data", "--out", os.path.join(d, "data"), "--prefix", "t",
                        os.path.join(d, "text.txt")], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    os.mkdir(os.path.join(d, "swap"))
    cfg = os.path.join(d, "ooc.yaml")
    with open(cfg, "w") as f:
        f.write(CONFIG.format(d=d))
    p = subprocess.run([sys.executable, SCRIPT, "--config", cfg, "--zinc", ZINC, "--steps", "2",
                        "--bench-size", "32M"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert "memory ratio" in p.stdout and "step efficiency" in p.stdout, p.stdout
    assert r["losses_equal"] is True, r
    assert r["model_state_bytes"] == 16 * r["params"], r
    assert abs(r["memory_ratio"] - r["model_state_bytes"] / r["peak_rss_bytes"]) < 1e-9, r
    assert r["nvme_read_bytes"] > 0 and r["nvme_write_bytes"] > 0, r
    io = (r["nvme_read_bytes"] / (r["read_gib_s"] * 2**30) +
          r["nvme_write_bytes"] / (r["write_gib_s"] * 2**30))
    assert abs(io - r["io_bound_s"]) < 1e-6 * max(io, 1), (io, r)
    assert r["bound_s"] == max(r["resident_step_s"], r["io_bound_s"]), r
    assert abs(r["step_efficiency"] - r["bound_s"] / r["step_s"]) < 1e-9, r
    # What the overlap costs the compute, and the parameters' reads.
    assert r["runs"] == 1 and len(r["run_efficiency"]) == 1, r
    assert abs(r["run_efficiency"][0] - r["step_efficiency"]) < 1e-9, r
    assert r["resident_compute_s"] > 0, r
    assert abs(r["compute_ratio"] - r["compute_less_waits_s"] / r["resident_compute_s"]) < 1e-9, r
    assert 0 < r["param_read_bytes"] < r["nvme_read_bytes"], r
    assert "compute (forward and backward less their waits)" in p.stdout, p.stdout
    assert os.listdir(os.path.join(d, "swap")) == [], "swap files left behind"
    assert not os.path.exists(os.path.join(d, "ck")), "the benchmark saves no checkpoint"
    # A model too large to be resident: the bound is the step's own compute.
    # Two runs, one measured step each: their medians over both steps.
    p = subprocess.run([sys.executable, SCRIPT, "--config", cfg, "--zinc", ZINC, "--steps", "1",
                        "--bench-size", "32M", "--reference", "compute", "--runs", "2"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["reference"] == "compute" and r["losses_equal"] is None, r
    assert r["runs"] == 2 and len(r["run_efficiency"]) == 2, r
    assert r["compute_ratio"] is None and "each run's: " in p.stdout, p.stdout
    assert abs(r["resident_step_s"] - r["compute_less_waits_s"]) < 1e-9, r
    assert r["bound_s"] == max(r["resident_step_s"], r["io_bound_s"]), r
    assert "the step's own compute" in p.stdout, p.stdout


@t.test
def refuses_a_config_without_nvme(d):
    cfg = os.path.join(d, "plain.yaml")
    with open(cfg, "w") as f:
        f.write(CONFIG.format(d=d).split("zero_optimization")[0])
    p = subprocess.run([sys.executable, SCRIPT, "--config", cfg, "--zinc", ZINC],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "offload_optimizer.device: nvme" in p.stderr, p.stderr


if __name__ == "__main__":
    sys.exit(t.main())
