#!/usr/bin/env bash
# Checks moe-mixtral against Hugging Face transformers (see check_hf_parity.py).
# Installs torch, transformers and safetensors from PyPI into build/hf-venv
# (several GB: PyPI's Linux torch wheel pulls the CUDA runtime libraries), so
# it is run by hand, not by CI. Usage: bash tests/hf_parity/run.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="$root/build/hf-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q torch transformers safetensors
cmake --build --preset default --target moe-mixtral
"$venv/bin/python" "$root/tests/hf_parity/check_hf_parity.py" --moe-mixtral "$root/build/default/bin/moe-mixtral" "$@"
