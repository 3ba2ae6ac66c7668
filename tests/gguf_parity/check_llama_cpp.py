#!/usr/bin/env python3
"""moe against llama.cpp itself on GGUF files (run by hand: llama-cpp-python
builds llama.cpp from source, which takes a while).

    build/hf-venv/bin/pip install llama-cpp-python gguf numpy safetensors sentencepiece
    build/hf-venv/bin/python tests/gguf_parity/check_llama_cpp.py --bin build/default/bin

For each GGUF: the one made by the gguf package (tests/data/cases/gguf/
mixtral_spm.gguf: a tiny Mixtral with a SentencePiece vocabulary), the
ones moe-quantize writes from its converted folder (F32, Q8_0, Q5_1, Q5_0,
Q4_1, Q4_0), a frankenMoE: moe-merge builds one from four tiny dense
Mistrals (moe-mixtral make-tiny, `hidden` gates from prompts) and
moe-quantize writes it at F32, Q8_0, Q4_0 and Q4_K_M, and a random
8-expert Mixtral with 256-value rows at the k-quant mixes Q6_K, Q5_K_M,
Q4_K_M, Q3_K_M and Q2_K:
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_quantize import write_model  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = os.path.join(HERE, "..", "data", "cases", "gguf")
GREEDY = 12
STRINGS = ["Hello world", "A mixture of experts routes each token", "Straße über Brücken 🙂", "x = 12345"]


def run(*cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def routing_gaps(router_logits, k):
    """Per position: the smallest gap over layers between the k-th and the
    (k+1)-th router logit (infinite for a dense model)."""
    if router_logits is None or k >= router_logits.shape[2]:  # dense, or every expert chosen
        return np.full(10**4, np.inf)
    top = np.sort(router_logits, axis=2)
    return (top[:, :, -k] - top[:, :, -k - 1]).min(axis=0)


def route_scale(result):
    r = result.get("router_logits")
    return float(np.abs(r).max()) if r is not None else 1.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "..", "build", "default", "bin"))
    ap.add_argument("--numerics", default="as-stored",
                    help="moe-mixtral's: as-stored (fp32 activations) or block-q8 (llama.cpp's 8-bit activations)")
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
        # A frankenMoE as the seed articles build theirs, quantised by moe-quantize.
        merge = os.path.join(a.bin, "moe-merge")
        if os.path.exists(merge):
            for seed in (1, 2, 3, 4):
                run(mixtral, "make-tiny", "--out", os.path.join(tmp, f"dense{seed}"), "--family", "mistral", "--seed",
                    str(seed))
            with open(os.path.join(tmp, "moe.yml"), "w") as f:
                f.write(f"""base_model: {tmp}/dense1
gate_mode: hidden
experts:
  - source_model: {tmp}/dense1
    positive_prompts: ["A router looks at each token", "the experts"]
  - source_model: {tmp}/dense2
    positive_prompts: ["Numbers: 0 1 2 3"]
  - source_model: {tmp}/dense3
    positive_prompts: ["The quick brown fox"]
  - source_model: {tmp}/dense4
    positive_prompts: ["Switch Transformers drop tokens"]
""")
            run(merge, os.path.join(tmp, "moe.yml"), os.path.join(tmp, "franken"))
            for t, tol in (("f32", 1e-3), ("q8_0", 2e-2), ("q4_0", 5e-2), ("q4_k_m", 5e-2)):
                out = os.path.join(tmp, f"franken-{t}.gguf")
                run(quantize, os.path.join(tmp, "franken"), out, "--type", t)
                files[f"frankenMoE {t}"] = (out, tol)
        # The k-quant mixes on a Mixtral whose rows are whole 256-value
        # blocks (8 experts: llama.cpp's Q8_0 attention k and v too).
        write_model(os.path.join(tmp, "kq"), seed=3, experts=8, heads=4, kv_heads=2, layers=4)
        for t, tol in (("q6_k", 3e-2), ("q5_k_m", 3e-2), ("q4_k_m", 5e-2), ("q3_k_m", 8e-2), ("q2_k", 0.15)):
            out = os.path.join(tmp, f"kq-{t}.gguf")
            run(quantize, os.path.join(tmp, "kq"), out, "--type", t)
            files[f"Mixtral 8x {t}"] = (out, tol)
        for what, (path, tol) in files.items():
            llm = Llama(model_path=path, n_ctx=128, logits_all=True, verbose=False, n_threads=2)
            ids = [llm.tokenize(s.encode(), add_bos=True) for s in STRINGS]
            folder = os.path.join(tmp, what.replace(" ", "_").replace(",", ""))
            run(convert, path, folder, "--dtype", "f32")
            # moe-convert's tokenizer.model must tokenise as llama.cpp does.
            sp = spm.SentencePieceProcessor(model_file=os.path.join(folder, "tokenizer.model"))
            ours_ids = [[sp.bos_id()] + sp.encode(s) for s in STRINGS]
            if ours_ids != ids:
                failures += 1
                print(f"{what}: tokens differ: llama.cpp {ids}, moe {ours_ids}")
            # llama.cpp: the prompt, then GREEDY tokens by argmax one at a time.
            prompt = ids[1]
            llm.reset()
            llm.eval(prompt)
            greedy = []
            for _ in range(GREEDY):
                greedy.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
                llm.eval([greedy[-1]])
            theirs = np.array(llm.scores[: llm.n_tokens], dtype=np.float32)  # every position of prompt + greedy
            # moe: its own greedy tokens from the prompt, and the logits (and
            # router logits) of every position of llama.cpp's sequence.
            out = os.path.join(tmp, "logits.safetensors")
            run(mixtral, "logits", "--model", path, "--tokens", ",".join(map(str, prompt)), "--greedy", str(GREEDY),
                "--out", out, "--numerics", a.numerics)
            ours_greedy = [int(t) for t in load_file(out)["greedy_ids"]]
            run(mixtral, "logits", "--model", path, "--tokens", ",".join(map(str, prompt + greedy)), "--out", out,
                "--numerics", a.numerics)
            result = load_file(out)
            ours = result["logits"]
            scale = float(np.abs(theirs).max())
            bound = tol * max(1.0, scale)
            diff = np.abs(ours - theirs).max(axis=1)  # per position
            # A near tie: where the two best tokens, or a router's k-th and
            # (k+1)-th experts, are closer than the numerics' bound, either
            # choice is right. A routing choice that went the other way changes
            # its position's logits by more than the bound, and its keys and
            # values too: the first position past the bound is excused only at
            # such a tie, and no later position is judged.
            route_gap = routing_gaps(result.get("router_logits"), int(llm.metadata.get("llama.expert_used_count", 0)))
            route_bound = tol * max(1.0, route_scale(result))
            over = [p for p in range(len(diff)) if diff[p] > bound]
            tied = bool(over) and route_gap[over[0]] <= route_bound
            judged = over[0] if tied else len(diff)
            bad = over if not tied else []
            top2 = np.sort(theirs, axis=1)[:, -2:]
            step = next((i for i, (a, b) in enumerate(zip(greedy, ours_greedy)) if a != b), None)
            greedy_verdict = "same"
            if step is not None:
                p = len(prompt) - 1 + step
                if top2[p, 1] - top2[p, 0] <= bound:
                    greedy_verdict = f"tie at {step}"
                elif p >= judged or route_gap[p] <= route_bound:
                    greedy_verdict = f"routing tie at {step}"
                else:
                    greedy_verdict = f"DIFFER at {step}"
                    failures += 1
            # Text in, text out, as a user runs both (llama-cpp-python goes on
            # past max_tokens until its text is whole UTF-8).
            done = llm.create_completion(STRINGS[1], max_tokens=GREEDY - 4, temperature=0.0)
            theirs_text, n = done["choices"][0]["text"], done["usage"]["completion_tokens"]
            shown = subprocess.run([mixtral, "generate", "--model", path, "--prompt", STRINGS[1], "--max-new", str(n),
                                    "--stop", "-1", "--numerics", a.numerics], check=True, capture_output=True).stdout.decode("utf-8", "replace")
            ours_text = shown.split(f"\n\n{n} new tokens")[0][len(STRINGS[1]):]
            # llama-cpp-python drops bytes that make no character; moe prints U+FFFD.
            same_text = ours_text.replace("\ufffd", "") == theirs_text
            # (Judged over the tokens the greedy check covers; a tie past them
            # may part the texts.)
            text_verdict = ("same" if same_text else "differs (a tie above)" if step is not None else
                            f"differs past the {GREEDY} checked tokens" if n > GREEDY else "DIFFERS")
            failures += not same_text and step is None and n <= GREEDY
            failures += bool(bad)
            print(f"{what:20s} tokens {'same' if ours_ids == ids else 'DIFFER'}  greedy {greedy_verdict}"
                  f"  text {text_verdict}  max |logit diff| {diff[:judged].max():.3g} (of {scale:.3g}) over"
                  f" {judged} of {len(diff)} positions{f' (routing tie at {judged})' if tied else ''}"
                  f"  {'FAILED at ' + str(bad) if bad else 'ok'}")
            if os.environ.get("MOE_PARITY_DEBUG"):
                print("  per position", np.round(diff, 4), "routing gaps", np.round(route_gap, 4), repr(ours_text),
                      repr(theirs_text))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
