"""A minimal TAP runner for the Python tests (meson `protocol: 'tap'`).

    from tap import TapRunner
    t = TapRunner(scratch=True)   # each test gets a fresh directory argument
    @t.test
    def something(d): assert ...
    sys.exit(t.main())

A test fails by raising (assert); every failure is reported as `not ok` with
its message, and the run goes on.  A test that cannot run here raises
Skip(reason): TAP's `ok N - name # SKIP reason`, counted as skipped.
"""
import os
import shutil
import sys
import tempfile


class Skip(Exception):
    """Raised by a test whose prerequisite is missing on this machine."""


class TapRunner:
    def __init__(self, scratch=False):
        self.tests = []
        self.scratch = scratch

    def test(self, fn):
        self.tests.append(fn)
        return fn

    def main(self):
        base = os.environ.get("ZINC_TEST_DIR", tempfile.gettempdir())
        if self.scratch:
            os.makedirs(base, exist_ok=True)
        print(f"1..{len(self.tests)}")
        failed = 0
        for i, fn in enumerate(self.tests, 1):
            d = tempfile.mkdtemp(prefix=fn.__name__ + ".", dir=base) if self.scratch else None
            try:
                fn(d) if self.scratch else fn()
                print(f"ok {i} - {fn.__name__}")
            except Skip as e:
                print(f"ok {i} - {fn.__name__} # SKIP {e}")
            except Exception as e:  # report every failure as TAP, keep going
                failed += 1
                print(f"not ok {i} - {fn.__name__}")
                for line in (str(e) or repr(e)).splitlines():
                    print(f"# {line}")
            finally:
                if d:
                    shutil.rmtree(d, ignore_errors=True)
            sys.stdout.flush()
        return 1 if failed else 0


def import_torch_or_skip(script):
    """Import torch and numpy, or re-run `script` with another python3 on PATH
    that has them (meson may find a python3 from pyenv or a virtualenv
    first), or print a TAP skip line and exit when none has them."""
    try:
        import numpy  # noqa: F401
        import torch
        return torch
    except ImportError:
        pass
    if os.environ.get("ZINC_ORACLE_REEXEC") != "1":
        import subprocess
        me = os.path.realpath(sys.executable)
        for d in os.get_exec_path():
            cand = os.path.join(d, "python3")
            if not os.access(cand, os.X_OK) or os.path.realpath(cand) == me:
                continue
            r = subprocess.run([cand, "-c", "import torch, numpy"], capture_output=True)
            if r.returncode == 0:
                env = dict(os.environ, ZINC_ORACLE_REEXEC="1")
                os.execve(cand, [cand, os.path.abspath(script)] + sys.argv[1:], env)
    print("1..0 # SKIP PyTorch is not installed for any python3 on PATH: "
          "install python3-torch (Debian) to run the oracle tests")
    sys.exit(0)


def device_from_args(zinc):
    """The compute device a script's trainings use: "cpu", or "cuda" when
    the script was started with `--device cuda` (meson's suite cuda runs the
    trainer scripts again so).  For cuda, prints a TAP skip plan and exits
    unless this zinc has the cuda backend and the machine a CUDA device:
    a two-step `zinc train --bench` of a tiny model tells."""
    dev = "cpu"
    if "--device" in sys.argv:
        i = sys.argv.index("--device")
        dev = sys.argv[i + 1] if i + 1 < len(sys.argv) else ""
        del sys.argv[i:i + 2]
    if dev not in ("cpu", "cuda"):
        print(f"1..0 # SKIP unknown --device {dev!r}: cpu or cuda")
        sys.exit(1)
    if dev == "cuda":
        import subprocess
        d = tempfile.mkdtemp(prefix="device-probe.")
        cfg = os.path.join(d, "probe.yaml")
        with open(cfg, "w") as f:
            f.write("train_micro_batch_size_per_gpu: 1\n"
                    "model: {n_layer: 1, n_head: 1, n_embd: 8, vocab_size: 16, seq_len: 4}\n"
                    "device: {type: cuda}\n")
        r = subprocess.run([zinc, "train", "--bench", cfg, "--max-steps", "2"],
                           capture_output=True, text=True)
        shutil.rmtree(d, ignore_errors=True)
        if r.returncode != 0:
            why = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "no message"
            if "built without the CUDA" in why or "no CUDA device" in why:
                print(f"1..0 # SKIP {why}")
                sys.exit(0)
            print("1..1")
            print("not ok 1 - the cuda backend fails a two-step tiny training")
            for line in (r.stderr or r.stdout).splitlines():
                print(f"# {line}")
            sys.exit(1)
    return dev
