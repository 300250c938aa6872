#!/usr/bin/env python3
"""Documentation and examples stay true: TAP output for meson.

- docs/config.md is exactly `zinc config --markdown` (generated from the key
  tables; regenerate with `build/tools/zinc config --markdown > docs/config.md`);
- every config in examples/ passes `zinc config --check`;
- every aio key the README's table names exists in the config table.
"""
import glob
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tap import TapRunner  # noqa: E402


ZINC = os.environ.get("ZINC_BIN", "zinc")
ROOT = os.environ.get("ZINC_SOURCE_ROOT", os.path.join(os.path.dirname(__file__), ".."))

t = TapRunner(scratch=False)
check = t.test


@check
def config_md_is_generated():
    out = subprocess.run([ZINC, "config", "--markdown"], capture_output=True, text=True,
                         check=True).stdout
    with open(os.path.join(ROOT, "docs", "config.md")) as f:
        doc = f.read()
    assert out == doc, ("docs/config.md is out of date: regenerate it with "
                        "`build/tools/zinc config --markdown > docs/config.md`")


@check
def examples_parse():
    files = sorted(glob.glob(os.path.join(ROOT, "examples", "*.yaml")) +
                   glob.glob(os.path.join(ROOT, "examples", "*.json")))
    assert files, "no examples found"
    for path in files:
        p = subprocess.run([ZINC, "config", "--check", path], capture_output=True, text=True)
        assert p.returncode == 0, f"{path}: {p.stderr.strip()}"
        assert p.stderr.strip() == "", f"{path} warns: {p.stderr.strip()}"


@check
def readme_keys_exist():
    out = subprocess.run([ZINC, "config"], capture_output=True, text=True, check=True).stdout
    known = set(re.findall(r"^\s+([a-z_]+)\s", out, re.MULTILINE))
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    named = set(re.findall(r"^\| `([a-z_]+)`", readme, re.MULTILINE))
    assert named, "README.md has no key table"
    unknown = named - known
    assert not unknown, f"README.md names keys the parser does not know: {sorted(unknown)}"


if __name__ == "__main__":
    sys.exit(t.main())
