#!/usr/bin/env python3
"""moe-mixtral beside llama.cpp on the same GGUF files: a one-layer model of
Mixtral-8x7B's shapes (hidden 4096, 8 experts of 14336, top-2, 32 heads, 8
kv heads; a 400-piece SentencePiece vocabulary, so the layer is nearly all of
the work), random fp16 weights, quantised by llama.cpp's own quantiser
(llama_model_quantize) to Q8_0, Q4_0 and Q4_K_M.

    build/hf-venv/bin/pip install llama-cpp-python gguf numpy
    build/hf-venv/bin/python bench/llama_cpp_peer.py --bin build/default/bin --work /tmp/moe-gguf-bench

For each file and each prompt length T: the prefill time of T tokens
(llama.cpp: one eval of T tokens, n_batch = n_ubatch = 512, logits for
every position so that its one layer runs every row; moe-mixtral generate:
its reported prefill), and the decode time per token after the
prompt (16 tokens, one at a time). Both on the same threads, back to back,
fastest of --repeat runs, moe-mixtral once per --numerics (as-stored and
block-q8 by default) and with --no-mmap unless --mmap. Writes a JSON of
every figure.

This is outside the library's build: llama.cpp comes from PyPI's
llama-cpp-python (it compiles llama.cpp on install).
"""
import argparse
import ctypes
import json
import os
import re
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
VOCAB = os.path.join(HERE, "..", "tests", "data", "cases", "gguf", "spm_vocab.gguf")
H, F, E, K, HEADS, KV, LAYERS = 4096, 14336, 8, 2, 32, 8, 1


def write_f16(path):
    import gguf

    vocab = gguf.GGUFReader(VOCAB)

    def field(name):
        f = vocab.fields[name]
        return [f.parts[i] for i in f.data]

    tokens = [bytes(t).decode() for t in field("tokenizer.ggml.tokens")]
    scores = [float(s[0]) for s in field("tokenizer.ggml.scores")]
    types = [int(t[0]) for t in field("tokenizer.ggml.token_type")]
    V = len(tokens)
    w = gguf.GGUFWriter(path, "llama")
    w.add_context_length(4096)
    w.add_embedding_length(H)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(F)
    w.add_rope_dimension_count(H // HEADS)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(1e6)
    w.add_expert_count(E)
    w.add_expert_used_count(K)
    w.add_vocab_size(V)
    w.add_file_type(1)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    rng = np.random.default_rng(0)

    def normal(*shape, scale):
        return (rng.standard_normal(shape, dtype=np.float32) * scale).astype(np.float16)

    w.add_tensor("token_embd.weight", normal(V, H, scale=1.0))
    w.add_tensor("output_norm.weight", np.ones(H, np.float32))
    w.add_tensor("output.weight", normal(V, H, scale=H**-0.5))
    for l in range(LAYERS):
        b = f"blk.{l}."
        w.add_tensor(b + "attn_norm.weight", np.ones(H, np.float32))
        w.add_tensor(b + "attn_q.weight", normal(H, H, scale=H**-0.5))
        w.add_tensor(b + "attn_k.weight", normal(KV * H // HEADS, H, scale=H**-0.5))
        w.add_tensor(b + "attn_v.weight", normal(KV * H // HEADS, H, scale=H**-0.5))
        w.add_tensor(b + "attn_output.weight", normal(H, H, scale=H**-0.5))
        w.add_tensor(b + "ffn_norm.weight", np.ones(H, np.float32))
        w.add_tensor(b + "ffn_gate_inp.weight", rng.standard_normal((E, H), dtype=np.float32) * H**-0.5)
        w.add_tensor(b + "ffn_gate_exps.weight", normal(E, F, H, scale=H**-0.5))
        w.add_tensor(b + "ffn_up_exps.weight", normal(E, F, H, scale=H**-0.5))
        w.add_tensor(b + "ffn_down_exps.weight", normal(E, H, F, scale=F**-0.5))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def quantize(src, dst, ftype, threads):
    import llama_cpp

    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = ftype
    p.nthread = threads
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p))
    if rc != 0:
        sys.exit(f"llama_model_quantize failed on {dst}")


def llama_times(path, T, threads, decode_tokens, repeat):
    from llama_cpp import Llama

    # logits_all: llama.cpp otherwise runs the last layer's FFN for the last
    # position only (it skips rows no logit needs), and with one layer that
    # would leave the experts out of the prefill it is compared on.
    llm = Llama(model_path=path, n_ctx=1024, n_batch=512, n_ubatch=512, n_threads=threads,
                n_threads_batch=threads, logits_all=True, verbose=False)
    ids = [3 + (i * 37) % 390 for i in range(T)]
    best_prefill, best_decode = float("inf"), float("inf")
    for _ in range(repeat):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(ids)
        best_prefill = min(best_prefill, time.perf_counter() - t0)
        t0 = time.perf_counter()
        for i in range(decode_tokens):
            llm.eval([5 + i])
        best_decode = min(best_decode, (time.perf_counter() - t0) / decode_tokens)
    return best_prefill, best_decode


def moe_times(mixtral, path, T, threads, decode_tokens, repeat, numerics, mmap):
    ids = ",".join(str(3 + (i * 37) % 390) for i in range(T))
    best_prefill, best_decode = float("inf"), float("inf")
    for _ in range(repeat):
        out = subprocess.run([mixtral, "generate", "--model", path, "--tokens", ids, "--max-new", str(decode_tokens + 1),
                              "--threads", str(threads), "--stop", "-1", "--numerics", numerics]
                             + ([] if mmap else ["--no-mmap"]), check=True,
                             capture_output=True).stdout.decode(errors="replace")  # random text: any bytes
        prefill = float(re.search(r"prefill: \d+ tokens in ([0-9.]+) s", out).group(1))
        m = re.search(r"decode:  (\d+) tokens in ([0-9.]+) s", out)
        best_prefill = min(best_prefill, prefill)
        best_decode = min(best_decode, float(m.group(2)) / int(m.group(1)))
    return best_prefill, best_decode


def read_limit(bin_dir):
    """The machine's DRAM read bandwidth now (GB/s), from moe-bench's limit/memory_read."""
    out = subprocess.run([os.path.join(bin_dir, "moe-bench"), "--benchmark_filter=limit/memory_read"], check=True,
                         capture_output=True, text=True).stdout
    return float(re.search(r"GB/s=([0-9.]+)", out).group(1))


def token_bytes(path):
    """Bytes one decode step reads: the two chosen experts' three matrices (of E) and every
    other matrix of the layer once (the embedding row and the norms are left out)."""
    import gguf

    r = gguf.GGUFReader(path)
    experts = other = 0
    for t in r.tensors:
        if t.name.endswith("_exps.weight"):
            experts += int(t.n_bytes) * K // E
        elif t.name != "token_embd.weight" and len(t.shape) == 2:
            other += int(t.n_bytes)
    return experts, other


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "build", "default", "bin"))
    ap.add_argument("--work", default="/tmp/moe-gguf-bench")
    ap.add_argument("--types", default="q8_0,q4_0,q4_k_m")
    ap.add_argument("--tokens", default="1,32,128,512")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--decode", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", default="llama_cpp_peer.json")
    ap.add_argument("--prepare-only", action="store_true", help="write and quantise the files, time nothing")
    ap.add_argument("--numerics", default="as-stored,block-q8",
                    help="moe-mixtral's numerics to time, each beside llama.cpp (as-stored: fp32 arithmetic on the "
                         "blocks; block-q8: llama.cpp's, activations quantised per block)")
    ap.add_argument("--mmap", action="store_true",
                    help="moe-mixtral reads the weights through the file's map (default: --no-mmap, a copy on huge "
                         "pages, as llama.cpp's repacked Q4_0/Q4_K weights are its own anonymous memory)")
    a = ap.parse_args()
    import llama_cpp

    os.makedirs(a.work, exist_ok=True)
    f16 = os.path.join(a.work, "mixtral-layer.f16.gguf")
    if not os.path.exists(f16):
        print("writing", f16, flush=True)
        write_f16(f16)
    ftypes = {"q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0, "q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0,
              "q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M, "q6_k": llama_cpp.LLAMA_FTYPE_MOSTLY_Q6_K,
              "q5_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_M}
    mixtral = os.path.join(a.bin, "moe-mixtral")
    results = {"threads": a.threads, "llama_cpp": llama_cpp.__version__, "mmap": a.mmap, "rows": []}
    numerics = a.numerics.split(",")
    limit = read_limit(a.bin) if not a.prepare_only else 0.0
    results["read_limit_gbs_before"] = limit
    print(f"read limit (moe-bench limit/memory_read): {limit:.1f} GB/s", flush=True)
    head = f"{'type':8s} {'T':>4s} {'llama.cpp prefill':>17s}" + "".join(f" {n + ' prefill':>18s} {'ratio':>5s}" for n in numerics)
    head += f" {'llama.cpp decode':>16s}" + "".join(f" {n + ' decode':>17s} {'ratio':>5s}" for n in numerics)
    print(head + "   (ms; ratio: llama.cpp / moe)")
    for t in a.types.split(","):
        path = os.path.join(a.work, f"mixtral-layer.{t}.gguf")
        if not os.path.exists(path):
            print("quantising", path, flush=True)
            quantize(f16, path, ftypes[t], a.threads)
        if a.prepare_only:
            continue
        for T in (int(x) for x in a.tokens.split(",")):
            lp, ld = llama_times(path, T, a.threads, a.decode, a.repeat)
            row = {"type": t, "T": T, "llama_prefill_s": lp, "llama_decode_s": ld, "bytes": os.path.getsize(path)}
            ours = {}
            for n in numerics:
                ours[n] = moe_times(mixtral, path, T, a.threads, a.decode, a.repeat, n, a.mmap)
                row[f"moe_{n}_prefill_s"], row[f"moe_{n}_decode_s"] = ours[n]
            results["rows"].append(row)
            line = f"{t:8s} {T:4d} {lp * 1e3:17.1f}" + "".join(
                f" {ours[n][0] * 1e3:18.1f} {lp / ours[n][0]:5.2f}" for n in numerics)
            line += f" {ld * 1e3:16.2f}" + "".join(f" {ours[n][1] * 1e3:17.2f} {ld / ours[n][1]:5.2f}" for n in numerics)
            print(line, flush=True)
            if T == 1:
                experts, other = token_bytes(path)
                for n in numerics:
                    rate = (experts + other) / ours[n][1] / 1e9
                    print(f"         {n}: {(experts + other) / 1e6:.0f} MB per token ({experts / 1e6:.0f} MB the two "
                          f"experts) in {ours[n][1] * 1e3:.2f} ms = {rate:.1f} GB/s, {rate / limit:.0%} of the read "
                          f"limit", flush=True)
                row["token_bytes"], row["expert_bytes"] = experts + other, experts
    if not a.prepare_only:
        results["read_limit_gbs_after"] = read_limit(a.bin)
        print(f"read limit after: {results['read_limit_gbs_after']:.1f} GB/s")
    with open(a.out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
