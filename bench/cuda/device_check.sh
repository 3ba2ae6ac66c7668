#!/usr/bin/env bash
# The CUDA device check, on a GPU machine without network (fits in about 8
# minutes on an H100/H200 with 16 cores), from a checkout that carries
# build/device-deps (bench/cuda/fetch_deps.sh):
#
#   bash bench/cuda/device_check.sh LOG_DIR
#
# Unpacks xsimd, doctest, CLI11 and Google Benchmark from build/device-deps,
# configures and builds the CUDA targets for sm_90a, runs the CUDA tests, the
# golden layer cases through `moe-golden --backend cuda` and `cuda-bf16`,
# compute-sanitizer's memcheck and racecheck on a small case, moe-cuda-bench
# and the PyTorch peers (torch_peers.py), and prints the table last. Each
# step's full log is LOG_DIR/<step>.log; a failed step prints its tail and
# the rest still run. Exit status 0 when every step passed.
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
mkdir -p "${1:?usage: bash bench/cuda/device_check.sh LOG_DIR}"
log="$(cd "$1" && pwd)"
deps="$root/build/device-deps"
prefix="$deps/prefix"
build="$root/build/device"
jobs="$(nproc)"
status=0

step() {
  local name="$1" t0=$SECONDS
  shift
  echo "== $name"
  if "$@" > "$log/$name.log" 2>&1; then
    echo "   ok ($((SECONDS - t0)) s)"
  else
    echo "   FAILED ($((SECONDS - t0)) s); the end of $log/$name.log:"
    tail -n 25 "$log/$name.log" | sed 's/^/   | /'
    status=1
  fi
}

unpack() {
  mkdir -p "$prefix"
  for deb in "$deps"/debs/*.deb; do dpkg -x "$deb" "$prefix"; done
  ls "$prefix/usr/include"
}

configure() {
  cmake -S "$root" -B "$build" -DMOE_ENABLE_CUDA=ON -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a \
    -DCMAKE_PREFIX_PATH="$prefix/usr" -DMOE_ISA_UNITS=native -DCMAKE_POLICY_VERSION_MINIMUM=3.5 \
    -DMOE_BUILD_EXAMPLES=OFF
}

golden() {
  for b in cuda cuda-bf16; do
    "$build/bin/moe-golden" check --backend "$b" "$root/tests/data/golden/moe_block" "$root/tests/data/golden/switch" ||
      return 1
  done
}

sanitize() {
  local cs
  cs="$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)"
  for tool in memcheck racecheck; do
    echo "-- $tool"
    "$cs" --tool "$tool" --error-exitcode 1 "$build/bin/test-cuda-layer" --test-case="a workspace*" || return 1
  done
}

echo "device check: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)"
step unpack unpack
step configure configure
step build cmake --build "$build" -j "$jobs" --target test-cuda-check test-cuda-layer moe-golden moe-cuda-bench
step tests ctest --test-dir "$build" -L cuda --output-on-failure
step golden golden
step sanitizers sanitize
step bench "$build/bin/moe-cuda-bench" --benchmark_out="$log/moe.json" --benchmark_out_format=json
step peers python3 "$root/bench/cuda/torch_peers.py" --out "$log/torch.json"
step report python3 "$root/bench/cuda/report.py" "$log/moe.json" "$log/torch.json"
cat "$log/report.log"
echo "device check: $([ $status -eq 0 ] && echo PASSED || echo FAILED), ${SECONDS} s; logs in $log"
exit $status
