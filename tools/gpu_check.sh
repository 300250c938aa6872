#!/bin/sh
# The checks that need a GPU, as one script for a GPU machine one has for a
# short while (a rented or shared one): build with the CUDA backend (against .devdeps/, the unpacked
# Debian libraries tools/devdeps.sh makes, when the machine has none of
# its own), run the cuda suite, the kernels' benchmark, and a Llama
# fine-tune with everything on NVMe and device.memory_limit emulating a
# 24 GB card; every output goes to $OUT (default gpu-figures/).
#
#   tools/devdeps.sh                      (here, once)
#   OUT=... tools/gpu_check.sh            (there)
#
# Each part runs with a time limit and the next one runs whatever the last
# one did; the exit status is the cuda suite's.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-figures}
mkdir -p "$OUT"
D=$PWD/.devdeps
LIB=$D/usr/lib/x86_64-linux-gnu
if [ -d "$D" ]; then
	export PKG_CONFIG_SYSROOT_DIR="$D"
	export PKG_CONFIG_LIBDIR="$LIB/pkgconfig:$LIB/openblas-pthread/pkgconfig:$D/usr/share/pkgconfig"
	export LD_LIBRARY_PATH="$LIB:$LIB/openblas-pthread${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
	export LIBRARY_PATH="$LIB:$LIB/openblas-pthread${LIBRARY_PATH:+:$LIBRARY_PATH}"
fi
log() { echo "gpu_check: $*" | tee -a "$OUT/summary.txt"; }
{ nvidia-smi; nvcc --version; } > "$OUT/machine.txt" 2>&1
git log -1 --format='commit %H %s' > "$OUT/commit.txt" 2>/dev/null || true

start=$(date +%s)
if ! timeout 900 sh -c 'meson setup build-gpu -Dcuda=enabled -Dmpi=disabled -Dbuildtype=release \
		>"$0/setup.txt" 2>&1 && ninja -C build-gpu >"$0/build.txt" 2>&1' "$OUT"; then
	log "build failed: see setup.txt and build.txt"
	exit 1
fi
log "built in $(($(date +%s) - start)) s"

start=$(date +%s)
timeout 600 meson test -C build-gpu --suite cuda --num-processes 1 --print-errorlogs \
	>"$OUT/cuda-suite.txt" 2>&1
suite=$?
cp build-gpu/meson-logs/testlog.txt "$OUT/cuda-testlog.txt" 2>/dev/null
log "cuda suite: exit $suite in $(($(date +%s) - start)) s; $(grep -E '^(Ok|Fail|Skipped):' "$OUT/cuda-suite.txt" | tr -s ' ' | tr '\n' ' ')"

timeout 180 build-gpu/tests/kernels_bench >"$OUT/kernels-bench-cpu.txt" 2>&1
log "cpu kernels bench: exit $?"

# A 1.24B Llama-3.2-1B-shaped fine-tune, parameters and optimizer states on
# NVMe, the device capped at 24 GB: tokens/s and the step's breakdown.
dir=$(mktemp -d /tmp/zinc-gpu-bench.XXXXXX)
timeout 900 python3 tools/llama_finetune_bench.py --zinc build-gpu/tools/zinc --dir "$dir" \
	--steps 4 --seq 1024 --set device.type=cuda --set device.memory_limit=24G \
	>"$OUT/llama-finetune-24g.txt" 2>&1
log "llama fine-tune (device.memory_limit 24G): exit $?; $(tail -1 "$OUT/llama-finetune-24g.txt")"
cp "$dir/steps.jsonl" "$OUT/llama-finetune-24g-steps.jsonl" 2>/dev/null
rm -rf "$dir"
exit $suite
