#!/usr/bin/env bash
# Checks moe-merge against mergekit-moe (see check_merge_parity.py).
# Installs mergekit 0.1.5, torch and transformers from PyPI into build/hf-venv
# (several GB), mergekit 0.1.4 with transformers 4 into build/mergekit-0.1.4,
# and SentencePiece's spm_train from Debian, so it is run by hand, not by CI. Usage: bash tests/merge_parity/run.sh [WORK_DIR]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="$root/build/hf-venv"
work="${1:-$root/build/merge-parity}"
command -v spm_train >/dev/null || apt-get install -y sentencepiece
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q torch transformers safetensors sentencepiece "mergekit==0.1.5"
# mergekit 0.1.4 (per-expert names, transformers 4) beside it, with the
# exact versions it needs, reusing the venv's torch.
legacy="$root/build/mergekit-0.1.4"
[ -d "$legacy/mergekit" ] || "$venv/bin/pip" install -q --no-deps --target "$legacy" "mergekit==0.1.4" \
  "transformers==4.57.6" "tokenizers>=0.22,<0.23" "huggingface_hub>=0.34,<1.0" "pydantic==2.10.6" \
  "pydantic_core==2.27.2" "safetensors==0.5.3" "accelerate==1.6.0" "click==8.2.1" "tqdm==4.67.1" "peft==0.15.2" \
  requests urllib3 idna charset_normalizer certifi
cmake --build --preset default --target moe-merge moe-mixtral
"$venv/bin/pip" freeze | grep -iE "^(mergekit|torch|transformers|safetensors|sentencepiece|tokenizers)==" 
"$venv/bin/python" "$root/tests/merge_parity/check_merge_parity.py" --work "$work" \
  --moe-merge "$root/build/default/bin/moe-merge" --moe-mixtral "$root/build/default/bin/moe-mixtral" \
  --mergekit-moe "$venv/bin/mergekit-moe" --mergekit-0.1.4 "$legacy"
