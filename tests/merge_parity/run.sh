#!/usr/bin/env bash
# Checks moe-merge against mergekit-moe (see check_merge_parity.py).
# Installs mergekit, torch and transformers from PyPI into build/hf-venv
# (several GB) and SentencePiece's spm_train from Debian, so it is run by
# hand, not by CI. Usage: bash tests/merge_parity/run.sh [WORK_DIR]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="$root/build/hf-venv"
work="${1:-$root/build/merge-parity}"
command -v spm_train >/dev/null || apt-get install -y sentencepiece
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q torch transformers safetensors sentencepiece "mergekit==0.1.5"
cmake --build --preset default --target moe-merge moe-mixtral
"$venv/bin/pip" freeze | grep -iE "^(mergekit|torch|transformers|safetensors|sentencepiece|tokenizers)==" 
"$venv/bin/python" "$root/tests/merge_parity/check_merge_parity.py" --work "$work" \
  --moe-merge "$root/build/default/bin/moe-merge" --moe-mixtral "$root/build/default/bin/moe-mixtral" \
  --mergekit-moe "$venv/bin/mergekit-moe"
