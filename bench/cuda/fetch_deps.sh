#!/usr/bin/env bash
# Fetches, on a Debian machine with its package archive, the packages a GPU
# machine without network lacks for bench/cuda/device_check.sh: xsimd,
# doctest, CLI11 and Google Benchmark as .deb files in build/device-deps/debs
# (git-ignored; bring that folder along). device_check.sh unpacks them.
set -euo pipefail
dest="$(cd "$(dirname "$0")/../.." && pwd)/build/device-deps/debs"
mkdir -p "$dest"
cd "$dest"
apt-get download libxsimd-dev doctest-dev libcli11-dev libbenchmark-dev libbenchmark1debian
ls -l "$dest"
