#!/usr/bin/env python3
"""The layering of zinc's headers and dependencies, checked from the source.

Dependencies point down only:

    tools -> engine -> {offload, kernels} -> {aio, cpu_adam} -> common

and a module's private headers stay its own.  Every `#include` line outside
tests/ (which may include anything) is read and held to these rules:

- tools/ (and any folder outside the library) includes only "zinc/*.h" and
  headers of its own folder;
- a library module (common, aio, cpu_adam, offload, kernels, engine) includes
  only its own headers, common's (common/zn_common.h, zn_half.h, ...), the
  build's generated "zn_build.h" and "zinc/*.h" -- of its own module or of
  one below it (the public headers belong to modules: PUBLIC_OWNER);
- inside engine/, a room (config/, device/, model/, ...) includes another
  room's header only as "room/header.h";
- a public header (include/zinc/) includes only "zinc/*.h", downwards too;
- no include reaches up the tree with "..".

An angle include is checked when it names "zinc/..." or a header of the tree;
others are the system's.  And the build: no module's meson.build lets its
declare_dependency() export anything but public_inc (include/), so that no
private folder leaks to what links against the module (white-box tests name
the private folders themselves: internal_inc in tests/meson.build).

    check_layering.py --root DIR   check the tree at DIR: one line per
                                   violation (FILE:LINE: rule), exit 1 if any
    check_layering.py              the meson test (TAP): the source tree
                                   ($ZINC_SOURCE_ROOT) keeps the rules, and
                                   the checker does fail on trees that break
                                   them
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

# Higher includes lower; modules of one rank do not include each other.
RANK = {"common": 0, "aio": 1, "cpu_adam": 1, "offload": 2, "kernels": 2, "engine": 3}
LIBRARY = tuple(RANK)
ORDER = "tools -> engine -> {offload, kernels} -> {aio, cpu_adam} -> common"

# The module each public header belongs to (include/zinc/NAME).  A new
# public header needs a row: the check refuses one it cannot place.
PUBLIC_OWNER = {
    "common.h": "common", "keys.h": "common", "cpu.h": "common", "dtype.h": "common",
    "json.h": "common", "checksum.h": "common",
    "hostmem.h": "common", "threadpool.h": "common", "trace.h": "common",
    "aio.h": "aio",
    "adam.h": "cpu_adam",
    "offload.h": "offload",
    "kernels.h": "kernels",
    "checkpoint.h": "engine", "comm.h": "engine", "configfile.h": "engine", "data.h": "engine",
    "device.h": "engine", "hf.h": "engine", "llama.h": "engine", "model.h": "engine",
    "plan.h": "engine", "precision.h": "engine", "safetensors.h": "engine",
    "train.h": "engine",
}

SOURCE_EXT = (".c", ".h", ".cu", ".cuh", ".cc", ".cpp")
HEADER_EXT = (".h", ".cuh")
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^">]+)[">]')


def walk(root):
    """Relative paths of the tree's files, without hidden folders and meson
    build folders (they hold a meson-private/)."""
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if not x.startswith(".") and x != "__pycache__" and
                         not os.path.isdir(os.path.join(d, x, "meson-private")))
        rel = os.path.relpath(d, root)
        out += [os.path.normpath(os.path.join(rel, f)) for f in sorted(files)]
    return out


def top(path):
    return path.split("/", 1)[0]


def room(path):
    """The engine room of a path under engine/ ("" for engine/ itself)."""
    parts = path.split("/")
    return parts[1] if len(parts) > 2 else ""


def resolve(headers, src, name):
    """The tree header that `#include "name"` in `src` names, or None: the
    including file's folder first, as the compiler looks, then any header
    whose path ends in `name` (the include folders), the including module's
    own and common's preferred."""
    near = os.path.normpath(os.path.join(os.path.dirname(src), name))
    if near in headers:
        return near
    found = sorted(h for h in headers
                   if (h == name or h.endswith("/" + name)) and top(h) != "include")
    for pick in (lambda h: top(h) == top(src), lambda h: top(h) == "common"):
        for h in found:
            if pick(h):
                return h
    return found[0] if found else None


def check_public(src, mod, name, headers, who=None):
    """A "zinc/..." include from module `mod` (None: anyone may), called
    `who` in the message."""
    if "include/" + name not in headers:
        return "includes \"%s\", which is not a public header (no include/%s)" % (name, name)
    owner = PUBLIC_OWNER.get(name[len("zinc/"):])
    if owner is None:
        return ("includes \"%s\", a public header of no known module: add it to PUBLIC_OWNER "
                "in tests/check_layering.py with the module it belongs to" % name)
    if mod is None or owner == mod or RANK[owner] < RANK[mod]:
        return None
    return ("dependencies point down only (%s): %s includes \"%s\", which belongs to %s"
            % (ORDER, who or mod, name, owner))


def check_line(src, name, angle, headers):
    """What is wrong with `#include name` in `src`, or None."""
    kind = top(src)
    if ".." in name.split("/"):
        return "includes \"%s\": no include reaches up the tree with \"..\"" % name
    if name == "zn_build.h":
        if kind in LIBRARY:
            return None
        return ("includes \"zn_build.h\", the build's generated header: only the library's "
                "modules include it (public headers and tools may not)")
    if kind == "include":
        owner = PUBLIC_OWNER.get(os.path.basename(src))
        if not name.startswith("zinc/"):
            if angle and resolve(headers, src, name) is None:
                return None  # the system's
            return "a public header includes only \"zinc/*.h\": it includes \"%s\"" % name
        if owner is None:
            return None  # itself reported where it is included
        return check_public(src, owner, name, headers,
                            "\"zinc/%s\" (%s's)" % (os.path.basename(src), owner))
    if name.startswith("zinc/"):
        return check_public(src, kind if kind in LIBRARY else None, name, headers)
    h = resolve(headers, src, name)
    if h is None:
        return None if angle else "includes \"%s\", which names no header in the tree" % name
    owner = top(h)
    what = "\"%s\" (%s)" % (name, h)
    if owner == "include":
        return "includes the public header %s by another name than \"zinc/%s\"" % (
            what, os.path.basename(h))
    if kind not in LIBRARY:
        if owner == kind:
            return None
        return ("%s/ includes only \"zinc/*.h\" and its own headers: %s is %s"
                % (kind, what, "a test helper" if owner == "tests" else
                   "a private header of " + owner))
    if owner == kind == "engine":
        if room(h) == room(src) or name == os.path.relpath(h, "engine"):
            return None
        return ("inside engine/, another room's header is included as \"room/header.h\": "
                "%s should be \"%s\"" % (what, os.path.relpath(h, "engine")))
    if owner in (kind, "common"):
        return None
    why = ("%s includes only its own headers, common's, \"zn_build.h\" and \"zinc/*.h\": "
           "%s is %s" % (kind, what, "a test helper" if owner == "tests" else
                         "a private header of " + owner))
    if owner in RANK and RANK[owner] >= RANK[kind]:
        why += ", and %s is not below %s (%s)" % (owner, kind, ORDER)
    return why


def includes(root, files):
    """Every include line outside tests/: (file, line, name, angle)."""
    for f in files:
        if not f.endswith(SOURCE_EXT) or top(f) == "tests":
            continue
        with open(os.path.join(root, f), encoding="utf-8", errors="replace") as fh:
            for n, line in enumerate(fh, 1):
                m = INCLUDE.match(line)
                if m:
                    yield f, n, m.group(2).strip(), m.group(1) == "<"


def blank(text):
    """Meson source with its comments and strings blanked out (spaces, the
    newlines kept), so that brackets and keywords are found by offset."""
    return re.sub(r"'''.*?'''|'(?:\\.|[^'\\\n])*'|#[^\n]*",
                  lambda m: re.sub(r"[^\n]", " ", m.group(0)), text, flags=re.S)


def close_at(code, i, stop=""):
    """The offset of the bracket that closes the one at `i` in blanked
    source (or, with `stop`, of the first character of `stop` outside
    brackets); len(code) when there is none."""
    depth = 0
    for j in range(i, len(code)):
        c = code[j]
        if depth == 0 and c in stop:
            return j
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0 and not stop:
                return j
    return len(code)


def call_keyword(code, fn, key):
    """For each call of `fn` in blanked source: (start, end) offsets of its
    keyword argument `key`'s value, or None where the call has none."""
    for call in re.finditer(r"(?<![\w.])%s\s*\(" % re.escape(fn), code):
        i, last = call.end(), close_at(code, call.end() - 1)
        found = None
        while i < last and not found:
            end = min(close_at(code, i, stop=","), last)  # one argument: [i, end)
            m = re.compile(r"\s*%s\s*:" % re.escape(key)).match(code, i, end)
            found = (m.end(), end) if m else None
            i = end + 1
        yield found


def check_meson(root, files):
    """Violations in the modules' meson.build files: (file, line, message)."""
    out = []
    for f in files:
        if os.path.basename(f) != "meson.build" or top(f) == "tests":
            continue
        with open(os.path.join(root, f), encoding="utf-8") as fh:
            text = fh.read()
        code = blank(text)
        for span in call_keyword(code, "declare_dependency", "include_directories"):
            if span is None or re.sub(r"\s", "", code[span[0]:span[1]]) in (
                    "public_inc", "[public_inc]"):
                continue
            value = " ".join(text[span[0]:span[1]].split())
            out.append((f, text.count("\n", 0, span[0]) + 1,
                        "a module's dependency exports include/ (public_inc) alone: this "
                        "declare_dependency exports include_directories: %s (white-box tests "
                        "name private folders themselves: internal_inc in tests/meson.build)"
                        % value))
    return out


def check(root):
    """Every violation in the tree at `root`, as "FILE:LINE: message"."""
    files = walk(root)
    headers = {f for f in files if f.endswith(HEADER_EXT)}
    found = []
    for f, n, name, angle in includes(root, files):
        why = check_line(f, name, angle, headers)
        if why:
            found.append((f, n, why))
    found += check_meson(root, files)
    return ["%s:%d: %s" % v for v in sorted(found)]


def main_root(root):
    bad = check(root)
    for line in bad:
        print(line)
    if bad:
        print("%d violation%s of the layering (%s; private headers stay in their module)"
              % (len(bad), "" if len(bad) == 1 else "s", ORDER))
        return 1
    print("the layering holds: %s" % ORDER)
    return 0


# ---- the meson test --------------------------------------------------------

# A small tree that keeps every rule: one file of each kind of include the
# real tree has, and the modules' dependencies exporting public_inc.
CLEAN = {
    "include/zinc/common.h": "",
    "include/zinc/adam.h": '#include "zinc/common.h"\n',
    "include/zinc/kernels.h": '#include "zinc/adam.h"\n',
    "include/zinc/train.h": '#include "zinc/kernels.h"\n#include <stdint.h>\n',
    "common/zn_common.h": '#include "zinc/common.h"\n',
    "common/zn_half.h": "#include <stdint.h>\n",
    "common/log.c": '#include "zn_common.h"\n#include "zn_build.h"\n',
    "cpu_adam/adam_internal.h": '#include "zinc/adam.h"\n',
    "cpu_adam/adam.c": '#include "adam_internal.h"\n#include "zn_half.h"\n',
    "kernels/kernels_internal.h": '#include "zinc/kernels.h"\n',
    "kernels/cpu/vec.h": "",
    "kernels/cpu/matmul.c": ('#include "vec.h"\n#include "kernels_internal.h"\n'
                             '#include "zn_common.h"\n#include <zinc/adam.h>\n'),
    "engine/model/arch.h": '#include "zinc/train.h"\n',
    "engine/model/gpt2.c": '#include "model/arch.h"\n',
    "engine/train/state.h": '#include "model/arch.h"\n',
    "engine/train/step.c": ('#include "state.h"\n#include "train/state.h"\n'
                            '#include "zinc/kernels.h"\n#include "zn_half.h"\n'),
    "tools/util.h": '#include "zinc/train.h"\n',
    "tools/main.c": '#include "util.h"\n#include <zinc/common.h>\n#include <stdio.h>\n',
    "tests/test_x.c": '#include "adam_internal.h"\n#include "model/arch.h"\n',
    "meson.build": "public_inc = include_directories('include')\nsubdir('common')\n",
    "common/meson.build": ("common_inc = include_directories('.')\n"
                           "common_dep = declare_dependency(\n  link_with: lib, # (a, b)\n"
                           "  include_directories: [public_inc],\n  dependencies: [m])\n"),
    "kernels/meson.build": ("kernels_dep = declare_dependency(link_with: k, "
                            "include_directories: public_inc)\n"
                            "ext = declare_dependency(link_args: ['-lfoo'])\n"),
    "tests/meson.build": ("internal = declare_dependency(include_directories: "
                          "include_directories('../cpu_adam'))\n"),
}

# A file for each rule broken, then the line the checker must print for it.
BROKEN = {
    "tools/x.c": '#include <stdio.h>\n#include "adam_internal.h"\n',
    "tools/y.c": '#include "zn_build.h"\n#include "zn_half.h"\n',
    "kernels/cpu/x.c": '#include "vec.h"\n#include "model/arch.h"\n',
    "kernels/cpu/y.c": '#include "zinc/train.h"\n',
    "cpu_adam/z.c": '#include "zinc/kernels.h"\n',
    "include/zinc/adam.h": '#include "zinc/kernels.h"\n',
    "include/zinc/bad.h": '#include "zn_common.h"\n',
    "engine/io/x.c": '#include "zinc/bad.h"\n#include "zinc/nothere.h"\n',
    "engine/train/bare.c": '#include "arch.h"\n#include "nothere.h"\n',
    "engine/train/long.c": '#include "engine/model/arch.h"\n',
    "engine/model/up.c": '#include "../../cpu_adam/adam_internal.h"\n',
    "common/x.c": '#include "testutil.h"\n',
    "tests/testutil.h": "",
    "engine/meson.build": ("engine_inc = include_directories('.')\n"
                           "engine_dep = declare_dependency(\n  link_with: e,\n"
                           "  include_directories: [public_inc, engine_inc],\n"
                           "  dependencies: [kernels_dep])\n"),
}
PRIVATE = "only \"zinc/*.h\" and its own headers: "
MODULE = "includes only its own headers, common's, \"zn_build.h\" and \"zinc/*.h\": "
DOWN = "dependencies point down only (" + ORDER + "): "
ROOM = "inside engine/, another room's header is included as \"room/header.h\": "
BROKEN_LINES = [
    "tools/x.c:2: tools/ includes " + PRIVATE +
    "\"adam_internal.h\" (cpu_adam/adam_internal.h) is a private header of cpu_adam",
    "tools/y.c:1: includes \"zn_build.h\", the build's generated header",
    "tools/y.c:2: tools/ includes " + PRIVATE +
    "\"zn_half.h\" (common/zn_half.h) is a private header of common",
    "kernels/cpu/x.c:2: kernels " + MODULE + "\"model/arch.h\" (engine/model/arch.h) is a "
    "private header of engine, and engine is not below kernels",
    "kernels/cpu/y.c:1: " + DOWN + "kernels includes \"zinc/train.h\", which belongs to engine",
    "cpu_adam/z.c:1: " + DOWN + "cpu_adam includes \"zinc/kernels.h\", which belongs to kernels",
    "include/zinc/adam.h:1: " + DOWN + "\"zinc/adam.h\" (cpu_adam's) includes "
    "\"zinc/kernels.h\"",
    "include/zinc/bad.h:1: a public header includes only \"zinc/*.h\": it includes "
    "\"zn_common.h\"",
    "engine/io/x.c:1: includes \"zinc/bad.h\", a public header of no known module: add it to "
    "PUBLIC_OWNER",
    "engine/io/x.c:2: includes \"zinc/nothere.h\", which is not a public header",
    "engine/train/bare.c:1: " + ROOM + "\"arch.h\" (engine/model/arch.h) should be "
    "\"model/arch.h\"",
    "engine/train/bare.c:2: includes \"nothere.h\", which names no header in the tree",
    "engine/train/long.c:1: " + ROOM + "\"engine/model/arch.h\" (engine/model/arch.h) should "
    "be \"model/arch.h\"",
    "engine/model/up.c:1: includes \"../../cpu_adam/adam_internal.h\": no include reaches up "
    "the tree",
    "common/x.c:1: common " + MODULE + "\"testutil.h\" (tests/testutil.h) is a test helper",
    "engine/meson.build:4: a module's dependency exports include/ (public_inc) alone: "
    "this declare_dependency exports include_directories: [public_inc, engine_inc]",
]


def write_tree(root, files):
    for path, text in files.items():
        full = os.path.join(root, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as f:
            f.write(text)


def run_checker(root):
    return subprocess.run([sys.executable, os.path.abspath(__file__), "--root", root],
                          capture_output=True, text=True)


def tap_tests():
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from tap import TapRunner

    src = os.environ.get("ZINC_SOURCE_ROOT",
                         os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    t = TapRunner(scratch=False)

    @t.test
    def the_source_tree_keeps_the_layering():
        bad = check(src)
        assert not bad, "\n".join(bad + ["%d violation(s): fix the include lines or the "
                                         "meson.build named above" % len(bad)])

    @t.test
    def a_tree_that_keeps_every_rule_passes():
        d = tempfile.mkdtemp(prefix="layering-clean.")
        try:
            write_tree(d, CLEAN)
            os.makedirs(os.path.join(d, "build", "meson-private"))  # a build folder: skipped
            write_tree(d, {"build/gen.c": '#include "adam_internal.h"\n'})
            p = run_checker(d)
            assert p.returncode == 0 and "the layering holds" in p.stdout, p.stdout + p.stderr
        finally:
            shutil.rmtree(d, ignore_errors=True)

    @t.test
    def each_broken_rule_fails_naming_file_line_and_rule():
        d = tempfile.mkdtemp(prefix="layering-broken.")
        try:
            write_tree(d, CLEAN)
            write_tree(d, BROKEN)
            p = run_checker(d)
            assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
            lines = p.stdout.splitlines()
            for want in BROKEN_LINES:
                assert any(line.startswith(want) for line in lines), (
                    "expected a line starting: %s\ngot:\n%s" % (want, p.stdout))
            n = len(BROKEN_LINES)
            assert len(lines) == n + 1, ("one line per violation and a summary", p.stdout)
            assert lines[-1].startswith("%d violations of the layering" % n), lines[-1]
        finally:
            shutil.rmtree(d, ignore_errors=True)

    return t.main()


if __name__ == "__main__":
    if "--root" in sys.argv:
        i = sys.argv.index("--root")
        if i + 1 >= len(sys.argv):
            sys.exit("check_layering.py: --root needs a folder")
        sys.exit(main_root(sys.argv[i + 1]))
    sys.exit(tap_tests())
