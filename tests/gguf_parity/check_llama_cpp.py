#!/usr/bin/env python3
"""moe against llama.cpp itself on GGUF files (run by hand: llama-cpp-python
builds llama.cpp from source, which takes a while).

    build/hf-venv/bin/pip install llama-cpp-python gguf numpy safetensors sentencepiece
    build/hf-venv/bin/python tests/gguf_parity/check_llama_cpp.py --bin build/default/bin

For each GGUF: the one made by the gguf package (tests/data/cases/gguf/
mixtral_spm.gguf: a tiny Mixtral with a SentencePiece vocabulary) and the
ones moe-quantize writes from its converted folder (F32, Q8_0, Q4_0):
llama.cpp loads it, tokenises a set of strings and computes the logits of
every position of a prompt and 8 greedy tokens; moe-mixtral runs the same
GGUF file directly (its weights in their stored blocks) and computes the
logits of the same token ids and 8 greedy tokens; moe-convert turns the
file into a folder, whose tokenizer.model must tokenise as llama.cpp does.
Tokens must be identical, greedy ones too, and logits agree within the
numerics' bound (llama.cpp's fp16 KV cache and its 8-bit activations for
quantised matrices set it).
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import sentencepiece as spm
from llama_cpp import Llama
from safetensors.numpy import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = os.path.join(HERE, "..", "data", "cases", "gguf")
STRINGS = ["Hello world", "A mixture of experts routes each token", "Straße über Brücken 🙂", "x = 12345"]


def run(*cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "..", "build", "default", "bin"))
    a = ap.parse_args()
    convert, quantize, mixtral = (os.path.join(a.bin, n) for n in ("moe-convert", "moe-quantize", "moe-mixtral"))
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(CASES, "mixtral_spm.gguf")
        run(convert, source, os.path.join(tmp, "hf"), "--dtype", "f32")
        # Tolerances, relative to the largest logit: llama.cpp keeps its KV
        # cache in fp16 (1e-3 even for F32 weights) and quantises the
        # activations of quantised matrices to 8 bits (Q8_0, Q4_0).
        files = {"gguf package, F32": (source, 1e-3)}
        for t, tol in (("f32", 1e-3), ("q8_0", 2e-2), ("q5_1", 3e-2), ("q5_0", 3e-2), ("q4_1", 5e-2), ("q4_0", 5e-2)):
            out = os.path.join(tmp, f"moe-{t}.gguf")
            run(quantize, os.path.join(tmp, "hf"), out, "--type", t)
            files[f"moe-quantize {t}"] = (out, tol)
        for what, (path, tol) in files.items():
            llm = Llama(model_path=path, n_ctx=128, logits_all=True, verbose=False, n_threads=2)
            ids = [llm.tokenize(s.encode(), add_bos=True) for s in STRINGS]
            prompt = ids[1]
            llm.reset()
            llm.eval(prompt)
            theirs = np.array(llm.scores[: len(prompt)], dtype=np.float32)
            folder = os.path.join(tmp, what.replace(" ", "_").replace(",", ""))
            run(convert, path, folder, "--dtype", "f32")
            # moe-convert's tokenizer.model must tokenise as llama.cpp does.
            sp = spm.SentencePieceProcessor(model_file=os.path.join(folder, "tokenizer.model"))
            ours_ids = [[sp.bos_id()] + sp.encode(s) for s in STRINGS]
            if ours_ids != ids:
                failures += 1
                print(f"{what}: tokens differ: llama.cpp {ids}, moe {ours_ids}")
            out = os.path.join(tmp, "logits.safetensors")
            run(mixtral, "logits", "--model", path, "--tokens", ",".join(map(str, prompt)), "--greedy", "8", "--out", out)
            result = load_file(out)
            ours = result["logits"]
            # 8 greedy tokens on both (llama.cpp: argmax, one token at a time)
            greedy = []
            for _ in range(8):
                greedy.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
                llm.eval([greedy[-1]])
            same_greedy = greedy == [int(t) for t in result["greedy_ids"]]
            failures += not same_greedy
            diff = float(np.abs(ours - theirs).max())
            scale = float(np.abs(theirs).max())
            ok = diff <= tol * max(1.0, scale)
            failures += not ok
            print(f"{what:20s} tokens {'same' if ours_ids == ids else 'DIFFER'} {[len(i) for i in ids]}"
                  f"  greedy {'same' if same_greedy else 'differ'}  max |logit diff| {diff:.3g} (of {scale:.3g})"
                  f"  {'ok' if ok else 'FAILED'}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
