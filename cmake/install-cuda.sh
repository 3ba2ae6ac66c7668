#!/usr/bin/env bash
# Makes a CUDA Toolkit for the CUDA backend's build available at
# hand: nvcc and the libraries the build links (the runtime, cuBLAS, CCCL).
# Keeps a toolkit of CUDA 12.8 or newer that is already there (on PATH or at
# /usr/local/cuda); otherwise installs NVIDIA's CUDA 13.0 wheels from PyPI
# into $MOE_CUDA_PREFIX (default /opt/moe-cuda, then linked from
# /usr/local/cuda). Prints the nvcc to use as its last line, for CUDACXX.
# Compiling needs no GPU.
#
#   export CUDACXX="$(bash cmake/install-cuda.sh | tail -n 1)"
#   bash cmake/install-cuda.sh --wheels    (the wheels even where a toolkit is)
set -euo pipefail
prefix="${MOE_CUDA_PREFIX:-/opt/moe-cuda}"

recent() { "$1" --version 2>/dev/null | grep -Eq "release (12\.[89]|1[3-9]\.)"; }
if [ "${1:-}" != "--wheels" ]; then
  for nvcc in "$(command -v nvcc || true)" /usr/local/cuda/bin/nvcc; do
    if [ -n "$nvcc" ] && [ -x "$nvcc" ] && recent "$nvcc"; then
      echo "CUDA Toolkit: $("$nvcc" --version | grep release)" >&2
      echo "$nvcc"
      exit 0
    fi
  done
fi

if ! python3 -m pip --version > /dev/null 2>&1; then
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >&2
fi
# Debian's Python refuses installs outside a virtual environment (PEP 668);
# these go to a folder of their own, not into Python.
PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet --no-deps --target "$prefix" \
  nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cublas==13.1.0.3
root="$prefix/nvidia/cu13"
# The layout nvcc.profile and CMake's FindCUDAToolkit expect: the target
# folder, lib64, and the unversioned library names the linker asks for.
mkdir -p "$root/targets/x86_64-linux"
ln -sfn ../../include "$root/targets/x86_64-linux/include"
ln -sfn ../../lib "$root/targets/x86_64-linux/lib"
ln -sfn lib "$root/lib64"
for lib in cudart cublas cublasLt; do
  ln -sf "$(cd "$root/lib" && ls lib$lib.so.* | head -n 1)" "$root/lib/lib$lib.so"
done
if [ "$prefix" = /opt/moe-cuda ]; then ln -sfn "$root" /usr/local/cuda; fi
echo "CUDA Toolkit from PyPI: $("$root/bin/nvcc" --version | grep release)" >&2
echo "$root/bin/nvcc"
