#!/bin/sh
# Install, build and run every test zinc has:
#   1. a build with warnings as errors (build-test/): all suites;
#   2. a build with AddressSanitizer + UndefinedBehaviorSanitizer
#      (build-asan/): the unit suite, which replays the fuzz corpora;
#   3. the libFuzzer targets (build-fuzz/, clang, tools/fuzz.sh), each for
#      FUZZ_SECONDS (15 by default; 0 skips them).
# Ends with one line "tests: N passed, N failed" (TAP subtests counted) and
# a non-zero status when anything failed.
set -u
cd "$(dirname "$0")/.."

status=0
./tools/setup.sh build-test -Dwerror=true || exit 1
meson test -C build-test --print-errorlogs --num-processes 2 || status=1

./tools/setup.sh build-asan -Db_sanitize=address,undefined -Db_lundef=false \
	-Dbuildtype=debug || exit 1
# Any sanitizer report fails the test that triggered it.
ASAN_OPTIONS=abort_on_error=1:detect_leaks=1 \
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	meson test -C build-asan --suite unit --print-errorlogs --num-processes 2 || status=1

# Every parser of outside input under libFuzzer for a bounded time: a few
# minutes in all.  tools/fuzz.sh exits 77 without clang.
if [ "${FUZZ_SECONDS:-15}" -gt 0 ]; then
	./tools/fuzz.sh "${FUZZ_SECONDS:-15}"
	rc=$?
	[ $rc -ne 0 ] && [ $rc -ne 77 ] && status=1
fi

python3 tools/test_summary.py build-test build-asan || status=1
exit $status
