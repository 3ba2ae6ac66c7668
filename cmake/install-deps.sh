#!/usr/bin/env bash
# Installs what building moe, its tests, examples and benchmarks needs on
# Debian 12 (bookworm); with --fuzz, also Clang for the fuzz preset. Uses
# sudo when not run as root.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
packages=(cmake make g++ git
          libeigen3-dev libxsimd-dev nlohmann-json3-dev   # the library's dependencies
          libcli11-dev libsentencepiece-dev pkg-config      # moe-mixtral: command line, tokenizer
          libpcre2-dev                                      # byte-level BPE tokenizers: Unicode-class regexes
          libyaml-cpp-dev                                   # moe-merge: mergekit-moe's YAML configs
          doctest-dev libbenchmark-dev)                   # tests and benchmarks
if [ "${1:-}" = "--fuzz" ]; then
  packages+=(clang libclang-rt-14-dev)                    # the fuzz preset: Clang's libFuzzer
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
