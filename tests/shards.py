"""Token shards for the scripts that train: random words from a fixed list,
seeded, through `zinc prepare-data` into D/data/t_{train,val}_*.bin (a tenth
for validation)."""
import os
import random
import subprocess

WORDS = ["zinc", "offload", "tensor", "adam", "swap", "nvme", "ring", "page"]


def make(d, zinc, seed=3, count=20000, words=WORDS, timeout=None):
    """Write D/text.txt (`count` words drawn with `seed`) and its shards;
    the same arguments give the same bytes."""
    rng = random.Random(seed)
    with open(os.path.join(d, "text.txt"), "w") as f:
        f.write(" ".join(rng.choice(words) for _ in range(count)))
    p = subprocess.run([zinc, "prepare-data", "--out", os.path.join(d, "data"), "--prefix", "t",
                        "--val-fraction", "0.1", os.path.join(d, "text.txt")],
                       capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr
