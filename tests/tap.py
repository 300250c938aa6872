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
