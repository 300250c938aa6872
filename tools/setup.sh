#!/bin/sh
# Install what zinc needs on Debian 12 (as root, or with sudo), then
# configure and build it in ./build (or the directory given as $1, with any
# further arguments passed to `meson setup`).  Safe to run again: installs
# only what is missing and rebuilds only what changed.
set -eu
cd "$(dirname "$0")/.."

BUILD=${1:-build}
[ $# -gt 0 ] && shift

# Build tools, the required libraries, and what the tests and benchmarks run
# (python3 for meson and the CLI tests, fio as the I/O reference).
PKGS="gcc libc6-dev meson ninja-build pkg-config python3
liburing-dev libhwloc-dev libyaml-dev libopenblas-dev libxxhash-dev libcmocka-dev fio"
# /usr/bin/time: peak memory in tools/out_of_core_bench.py.
PKGS="$PKGS time"
# Open MPI: the mpi comm backend and its tests (suite mpi, run by mpirun).
PKGS="$PKGS openmpi-bin libopenmpi-dev"
# clang with libFuzzer: the fuzz targets of tests/fuzz (tools/fuzz.sh).
PKGS="$PKGS clang"
# PyTorch, the oracle the CPU optimizers are checked against (suite oracle).
PKGS="$PKGS python3-torch"
# strace: the fault suite kills a save at each of its system calls (suite
# slow, tests/test_faults.py); util-linux's prlimit and setpriv, there too.
PKGS="$PKGS strace util-linux"

missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	echo "zinc setup: installing$missing"
	SUDO=""
	[ "$(id -u)" -ne 0 ] && SUDO=sudo
	$SUDO apt-get update -q
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing
fi

if [ ! -f "$BUILD/build.ninja" ]; then
	meson setup "$BUILD" "$@"
elif [ $# -gt 0 ]; then
	meson configure "$BUILD" "$@"
fi
meson compile -C "$BUILD"
