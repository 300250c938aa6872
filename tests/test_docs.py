#!/usr/bin/env python3
"""Documentation and examples stay true: TAP output for meson.

- docs/config.md is exactly `zinc config --markdown` (generated from the key
  tables; regenerate with `build/tools/zinc config --markdown > docs/config.md`);
- every config in examples/ passes `zinc config --check`;
- every aio key the README's table names exists in the config table;
- docs/guarantees.md: every test a row names exists, is run and asserts
  (and asserts exit status 2 where the row says so), and every message it
  quotes is one zinc's sources print.
"""
import ast
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


def read(*parts):
    with open(os.path.join(ROOT, *parts)) as f:
        return f.read()


def c_function(text, name):
    """The body of C function `name` in `text`, or None."""
    m = re.search(r"^static void %s\(.*?^}$" % re.escape(name), text, re.MULTILINE | re.DOTALL)
    return m.group(0) if m else None


def py_function(text, name):
    """The source of Python test `name` (decorated @t.test) in `text`, or None."""
    for node in ast.parse(text).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            if not any(ast.get_source_segment(text, dec) == "t.test"
                       for dec in node.decorator_list):
                return None
            return ast.get_source_segment(text, node)
    return None


@check
def guarantees_name_tests_that_assert():
    doc = read("docs", "guarantees.md")
    rows = [line for line in doc.splitlines() if line.startswith("| ") and "tests/" in line]
    assert len(rows) >= 8, "docs/guarantees.md: its tables name fewer tests than expected"
    for row in rows:
        for path, name in re.findall(r"`(tests/[\w.]+):(\w+)`", row):
            text = read(path)
            if path.endswith(".c"):
                body = c_function(text, name)
                assert body, f"{path} has no test {name} (named by docs/guarantees.md)"
                assert f"cmocka_unit_test({name})" in text, f"{path}: {name} is not run"
                assert "assert_" in body, f"{path}: {name} asserts nothing"
            else:
                body = py_function(text, name)
                assert body, f"{path} has no @t.test {name} (named by docs/guarantees.md)"
                assert "assert " in body, f"{path}: {name} asserts nothing"
                if "exit 2" in row:
                    assert "returncode == 2" in body, \
                        f"docs/guarantees.md says exit 2; {path}:{name} does not assert it"


def format_strings():
    """Every string literal of the C sources that print what zinc says
    (the engine's and the I/O engine's messages, the command's start-up
    checks), adjacent ones joined, with printf conversions replaced by X."""
    out = []
    paths = [p for part in ("engine", "aio", "tools")
             for p in glob.glob(os.path.join(ROOT, part, "**", "*.c"), recursive=True)]
    for path in paths:
        text = re.sub(r'"\s*\n\s*"', "", open(path).read())
        text = re.sub(r'"\s*PRI[diuxX](?:8|16|32|64)\s*"', "llu", text)  # "%" PRIu64 "
        for lit in re.findall(r'"((?:[^"\\\n]|\\.)*)"', text):
            out.append(re.sub(r"%[-+ #0-9.*]*(?:ll|l|z|h)?[sdiuxXfgc]", "X", lit))
    return out


@check
def guarantees_quote_real_messages():
    doc = read("docs", "guarantees.md")
    section = doc.split("## The messages", 1)[1]
    quoted = re.findall(r"`([^`\n]{20,})`", section)
    assert len(quoted) >= 6, "docs/guarantees.md quotes fewer messages than expected"
    strings = format_strings()
    for msg in quoted:
        # A capitalised word (or step-N) stands for what the message names.
        pattern = re.escape(msg.rstrip(". "))
        pattern = re.sub(r"step\\-[NM]", "X", pattern)
        pattern = re.sub(r"\b[A-Z]+\b", "X", pattern)
        pattern = pattern.replace("X", ".+?").replace(r"\.\.\.", ".*")
        assert any(re.search(pattern, s) for s in strings), \
            f"docs/guarantees.md quotes a message no source prints: {msg}"


if __name__ == "__main__":
    sys.exit(t.main())
