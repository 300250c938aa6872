#!/bin/sh
# Build the libFuzzer targets of tests/fuzz with clang, AddressSanitizer and
# UndefinedBehaviorSanitizer (build-fuzz/), then run each for a bounded time:
#
#   tools/fuzz.sh [SECONDS_PER_TARGET [TARGET...]]
#
# 20 seconds each by default, every target by default (fuzz_* in
# build-fuzz/tests/fuzz).  Each starts from its seed corpus,
# tests/fuzz/corpus/TARGET/, which it only reads; what it learns goes to
# build-fuzz/fuzz-corpus/TARGET/ (kept between runs).  A crash, leak,
# sanitizer report or timeout stops that target: the input is saved as
# build-fuzz/fuzz-artifacts/TARGET-crash-HASH (or leak-, timeout-, oom-), the
# script goes on with the others and exits 1.  Fix the parser, then copy the
# input into tests/fuzz/corpus/TARGET/ as its regression test.  A target's
# dictionary of format words, tests/fuzz/dict/TARGET.dict, is used when
# there is one.
#
# Needs clang with libFuzzer (Debian: apt-get install clang); without it,
# says so and exits 77 (skip).
set -u
cd "$(dirname "$0")/.."

SECONDS_EACH=${1:-20}
[ $# -gt 0 ] && shift
BUILD=build-fuzz

if ! command -v clang >/dev/null 2>&1; then
	echo "fuzz: no clang (apt-get install clang): the fuzz targets are not run" >&2
	exit 77
fi
if [ ! -f "$BUILD/build.ninja" ]; then
	# The targets need the parsers, not the backends: no CUDA, MPI, NCCL.
	CC=clang meson setup "$BUILD" -Dfuzz=enabled -Db_sanitize=address,undefined \
		-Db_lundef=false -Dcuda=disabled -Dmpi=disabled -Dnccl=disabled || exit 1
fi
targets="$*"
if [ -z "$targets" ]; then
	targets=$(sed -n "s/^  '\([a-z_]*\)': \[.*/\1/p" tests/fuzz/meson.build)
fi
build=""
for t in $targets; do
	build="$build tests/fuzz/fuzz_$t"
done
# shellcheck disable=SC2086
ninja -C "$BUILD" $build || exit 1

status=0
mkdir -p "$BUILD/fuzz-artifacts"
for t in $targets; do
	mkdir -p "$BUILD/fuzz-corpus/$t"
	dict=""
	[ -f "tests/fuzz/dict/$t.dict" ] && dict="-dict=tests/fuzz/dict/$t.dict"
	echo "fuzz: $t for ${SECONDS_EACH}s"
	# -rss_limit_mb: a parser given a damaged length must refuse it, not
	# try to allocate it.  -timeout: seconds one input may take.
	# halt_on_error: the first UBSan report is a finding.
	if ! UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	     ASAN_OPTIONS=detect_leaks=1 \
	     "$BUILD/tests/fuzz/fuzz_$t" -max_total_time="$SECONDS_EACH" \
		-rss_limit_mb=2048 -timeout=10 -print_final_stats=1 $dict \
		-artifact_prefix="$BUILD/fuzz-artifacts/$t-" \
		"$BUILD/fuzz-corpus/$t" "tests/fuzz/corpus/$t" \
		>"$BUILD/fuzz-artifacts/$t.log" 2>&1; then
		echo "fuzz: $t FAILED; its log: $BUILD/fuzz-artifacts/$t.log" >&2
		tail -n 40 "$BUILD/fuzz-artifacts/$t.log" >&2
		status=1
	else
		grep -E '^stat::(number_of_executed_units|new_units_added):' \
			"$BUILD/fuzz-artifacts/$t.log" | sed "s/^/fuzz: $t /"
	fi
done
exit $status
