#!/usr/bin/env python3
"""The PyTorch peer of moe-attention-bench: torch.nn.functional.scaled_dot_product_attention
on the CPU, on the same problems (32 query heads, 8 kv heads, head 128, fp32,
q/k/v after RoPE) and the same thread count.

    build/hf-venv/bin/python bench/attention_peer.py [--threads 2] [--out sdpa.json]
    build/hf-venv/bin/python bench/attention_peer.py --moe-bench build/default/bin/moe-attention-bench

With --moe-bench it first runs moe's benchmark (the same problems, its
machine limits in the same run) and prints one markdown table with both and
moe's speed-up.

prefill/S:N  causal (is_causal=True); at 8192 the sliding window of 4096 as a
             boolean mask (SDPA has no window argument).
decode/cache:N  one query over N keys, every key visible; the cache in
             copies (1 GiB in all) taken in turn, as moe-attention-bench does.
GQA through enable_gqa=True (kv heads shared by groups of 4 query heads), as
transformers' sdpa attention calls it.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

HEADS, KV_HEADS, HEAD_DIM = 32, 8, 128


def problem(S, cached):
    g = torch.Generator().manual_seed(1)
    N = cached + S
    q = torch.randn(1, HEADS, S, HEAD_DIM, generator=g)
    k = torch.randn(1, KV_HEADS, N, HEAD_DIM, generator=g)
    v = torch.randn(1, KV_HEADS, N, HEAD_DIM, generator=g)
    return q, k, v


def timed(fn, min_time):
    fn()  # warm-up
    runs, total = 0, 0.0
    while total < min_time or runs < 3:
        t0 = time.perf_counter()
        fn()
        total += time.perf_counter() - t0
        runs += 1
    return total / runs * 1e3, runs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=0, help="default: all cores")
    ap.add_argument("--min-time", type=float, default=1.0)
    ap.add_argument("--out", default="")
    ap.add_argument("--moe-bench", default="", help="moe-attention-bench to run first, for one table")
    a = ap.parse_args()
    moe = run_moe(a.moe_bench) if a.moe_bench else None
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", file=sys.stderr)
    rows = []
    with torch.inference_mode():
        for S in (512, 2048, 8192):
            q, k, v = problem(S, 0)
            if S > 4096:
                i = torch.arange(S)
                mask = (i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - 4096)
                fn = lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
            else:
                fn = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            ms, runs = timed(fn, a.min_time)
            rows.append({"name": f"attention/prefill/S:{S}", "ms": ms, "runs": runs})
        # As moe-attention-bench: copies of the cache, 1 GiB in all, taken in
        # turn, so each call reads its cache from memory.
        q, k, v = problem(1, 8191)
        copies = [(k.clone(), v.clone()) for _ in range(max(1, (1 << 30) // (2 * k.numel() * 4)))]
        turn = [0]

        def decode():
            kc, vc = copies[turn[0] % len(copies)]
            turn[0] += 1
            return F.scaled_dot_product_attention(q, kc, vc, enable_gqa=True)

        ms, runs = timed(decode, a.min_time)
        rows.append({"name": "attention/decode/cache:8192", "ms": ms, "runs": runs})
    for r in rows:
        print(f"{r['name']:30} {r['ms']:10.3f} ms  ({r['runs']} runs)", file=sys.stderr)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(), "results": rows}, f, indent=1)
    if moe:
        print_table(moe, rows, torch.get_num_threads())


def run_moe(path):
    """moe-attention-bench's rows by name (ms and counters), limits included."""
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "moe.json")
        subprocess.run([path, "--benchmark_out_format=json", f"--benchmark_out={out}",
                        "--benchmark_filter=limit/fp32|limit/memory|attention/"], check=True, stdout=sys.stderr)
        with open(out) as f:
            data = json.load(f)
    rows = {}
    for b in data["benchmarks"]:
        name = b["name"].replace("/real_time", "").replace("/iterations:10", "")
        rows[name] = b
    return rows


def print_table(moe, torch_rows, threads):
    fma = moe.get("limit/fp32_fma", {}).get("GFLOP/s", 0)
    read = moe.get("limit/memory_read", {}).get("GB/s", 0)
    print(f"limits: FP32 FMA {fma:.0f} GFLOP/s, read {read:.1f} GB/s; {threads} threads")
    print("| problem | moe ms | moe GFLOP/s (of FMA peak) | moe GB/s (of read) | SDPA ms | moe speed-up |")
    print("|---|---|---|---|---|---|")
    for r in torch_rows:
        m = moe.get(r["name"])
        if not m:
            continue
        ms = m["real_time"]  # milliseconds (the benchmark's unit)
        gflops, gbs = m.get("GFLOP/s", 0), m.get("GB/s", 0)
        print(f"| {r['name'].replace('attention/', '')} | {ms:.2f} | {gflops:.0f} ({gflops / fma:.0%}) | "
              f"{gbs:.1f} ({gbs / read:.0%}) | {r['ms']:.2f} | {r['ms'] / ms:.2f}x |")
    ref = moe.get("attention/reference/S:512")
    if ref:
        print(f"reference loops, S=512: {ref['real_time']:.1f} ms")


if __name__ == "__main__":
    main()
