#!/bin/sh
# Unpack the Debian packages of zinc's C libraries (liburing, hwloc, libyaml,
# OpenBLAS, xxHash, cmocka and what they load) into .devdeps/, without
# installing them: for a machine that has a compiler, meson, ninja and the
# CUDA toolkit but none of these libraries and no package archive to fetch
# them from (a rented or shared GPU machine).  Static libraries and documentation are
# left out, so the folder stays small enough to travel with the tree
# (about 50 MB).  tools/gpu_check.sh builds against it.
#
#   tools/devdeps.sh            (on a Debian 12 machine with apt)
set -eu
cd "$(dirname "$0")/.."
pkgs="liburing-dev liburing2 libhwloc-dev libhwloc15 libudev1 libyaml-dev libyaml-0-2
libopenblas-dev libopenblas-pthread-dev libopenblas0-pthread libgfortran5 libquadmath0
libxxhash-dev libxxhash0 libcmocka-dev libcmocka0"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 0777 "$tmp" # apt downloads as its own user
(cd "$tmp" && apt-get download $pkgs >/dev/null)
rm -rf .devdeps.new
mkdir -p .devdeps.new
for f in "$tmp"/*.deb; do
	dpkg -x "$f" .devdeps.new
done
find .devdeps.new -name '*.a' -delete
rm -rf .devdeps.new/usr/share/doc .devdeps.new/usr/share/man .devdeps.new/usr/share/lintian
rm -rf .devdeps
mv .devdeps.new .devdeps
du -sh .devdeps
