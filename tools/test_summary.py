#!/usr/bin/env python3
"""Count test results from meson's logs: TAP subtests, not just programs.

    tools/test_summary.py BUILDDIR [BUILDDIR ...]

Prints "tests: N passed, N failed, N skipped" and exits 1 when anything
failed.  A program that failed without a failing subtest (a crash, a
sanitizer report at exit, a timeout) counts as one more failure.
"""
import json
import os
import re
import sys

OK = re.compile(r"^ok\b")
NOT_OK = re.compile(r"^not ok\b")
SKIP = re.compile(r"#\s*skip", re.IGNORECASE)


def count(logfile):
    passed = failed = skipped = 0
    with open(logfile) as f:
        for line in f:
            t = json.loads(line)
            p = fl = s = 0
            for out in t.get("stdout", "").splitlines():
                if NOT_OK.match(out):
                    fl += 1
                elif OK.match(out):
                    if SKIP.search(out):
                        s += 1
                    else:
                        p += 1
            result = t.get("result", "")
            if result == "SKIP" and p + fl + s == 0:
                s = 1
            elif result not in ("OK", "EXPECTEDFAIL", "SKIP") and fl == 0:
                fl = 1  # died, timed out or leaked without a TAP failure line
            elif p + fl + s == 0:
                p = 1  # a plain exit-code test
            passed, failed, skipped = passed + p, failed + fl, skipped + s
    return passed, failed, skipped


def main():
    total = [0, 0, 0]
    for d in sys.argv[1:]:
        log = os.path.join(d, "meson-logs", "testlog.json")
        if not os.path.exists(log):
            print(f"test_summary: no test log in {d}", file=sys.stderr)
            total[1] += 1
            continue
        for i, v in enumerate(count(log)):
            total[i] += v
    print(f"tests: {total[0]} passed, {total[1]} failed, {total[2]} skipped")
    return 1 if total[1] else 0


if __name__ == "__main__":
    sys.exit(main())
