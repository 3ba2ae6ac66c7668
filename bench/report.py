#!/usr/bin/env python3
"""Runs moe-bench and the PyTorch peer on the same shapes and thread count, and
prints one markdown table: time, GFLOP/s, fraction of the FP32 peak and of the
read bandwidth measured in the same moe-bench run, and moe's speed-up over
each peer.

    python3 bench/report.py                                  # everything (about 20 minutes)
    python3 bench/report.py --shapes scaled --tokens 1,8,512
    python3 bench/report.py --python build/hf-venv/bin/python   # torch + transformers live there
    python3 bench/report.py --moe-json m.json --torch-json t.json  # re-print saved runs

The PyTorch peer needs torch and transformers (bench/torch_peer.py); without
them (--no-torch) the torch columns stay empty. Only the standard library is
used here.
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def run_moe(a):
    out = a.moe_json or os.path.join(ROOT, "build", "moe-bench.json")
    if not a.moe_json or not os.path.exists(a.moe_json):
        shapes = "|".join(a.shapes.split(","))
        tokens = "|".join(a.tokens.split(","))
        filt = f"limit/|layer/({shapes})/.*/T:({tokens})/"
        cmd = [a.moe_bench, f"--benchmark_filter={filt}", "--benchmark_out_format=json", f"--benchmark_out={out}",
               f"--benchmark_min_time={a.min_time}", f"--benchmark_repetitions={a.repetitions}"]
        print("running:", " ".join(cmd), file=sys.stderr)
        subprocess.run(cmd, check=True, stdout=sys.stderr)
    with open(out) as f:
        return json.load(f)


def run_torch(a):
    if a.no_torch:
        return None
    out = a.torch_json or os.path.join(ROOT, "build", "torch-peer.json")
    if not a.torch_json or not os.path.exists(a.torch_json):
        cmd = [a.python, os.path.join(HERE, "torch_peer.py"), "--out", out, "--shapes", a.shapes, "--tokens", a.tokens,
               "--min-time", str(a.min_time)]
        if a.threads:
            cmd += ["--threads", str(a.threads)]
        print("running:", " ".join(cmd), file=sys.stderr)
        subprocess.run(cmd, check=True, stdout=sys.stderr)
    with open(out) as f:
        return json.load(f)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--moe-bench", default=os.path.join(ROOT, "build", "default", "bin", "moe-bench"))
    ap.add_argument("--python", default=sys.executable, help="a Python with torch and transformers")
    ap.add_argument("--shapes", default="mixtral,scaled,fine,skewed")
    ap.add_argument("--tokens", default="1,8,32,128,512,2048")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores, as moe)")
    ap.add_argument("--min-time", type=float, default=0.5)
    ap.add_argument("--repetitions", type=int, default=3,
                    help="moe-bench repetitions; the table shows the fastest (the machine is shared and noisy)")
    ap.add_argument("--moe-json", help="reuse (or write) this moe-bench JSON")
    ap.add_argument("--torch-json", help="reuse (or write) this torch_peer JSON")
    ap.add_argument("--no-torch", action="store_true")
    a = ap.parse_args()

    moe = run_moe(a)
    torch = run_torch(a)

    limits, rows = {}, {}
    for b in moe["benchmarks"]:
        if b.get("run_type") == "aggregate":
            continue
        name = b["name"].split("/iterations")[0].split("/real_time")[0]
        parts = name.split("/")
        if parts[0] == "limit":  # keep the best repetition: the ceiling
            rate = next((v for k, v in b.items() if k in ("GFLOP/s", "GOP/s", "GB/s")), 0)
            old = limits.get(parts[1])
            if not old or rate > next((v for k, v in old.items() if k in ("GFLOP/s", "GOP/s", "GB/s")), 0):
                limits[parts[1]] = b
            continue
        _, shape, impl, dtype, t = parts
        key = (shape, dtype, int(t.split(":")[1]), impl)
        if key not in rows or b["real_time"] < rows[key]["real_time"]:  # the fastest repetition
            rows[key] = b
    peers = {}
    if torch:
        for r in torch["results"]:
            key = (r["shape"], r["dtype"], r["T"])
            if key not in peers or r["ms"] < peers[key]["ms"]:
                peers[key] = r

    ctx = moe.get("context", {})
    fma = limits.get("fp32_fma", {}).get("GFLOP/s", 0)
    bw = limits.get("memory_read", {}).get("GB/s", 0)
    # The int8 peak: the faster of the 256-bit and 512-bit measurements (on
    # AVX512-VNNI the kernel issues 512-bit vpdpbusd).
    int8 = max((limits.get(k, {}) for k in ("int8_dot", "int8_dot_512")), key=lambda b: b.get("GOP/s", 0))
    bf16_dot = limits.get("bf16_dot", {}).get("GFLOP/s", 0)
    print(f"Fastest of {a.repetitions} repetitions per row. Machine: {ctx.get('num_cpus', '?')} CPUs at {ctx.get('mhz_per_cpu', '?')} MHz; measured in the same run: "
          f"FP32 FMA peak {fma:.0f} GFLOP/s, int8 dot peak {int8.get('GOP/s', 0):.0f} GOP/s "
          f"({int8.get('label', '')}), read bandwidth {bw:.1f} GB/s; bf16: "
          f"{limits.get('bf16_dot', {}).get('label', 'not measured')}.")
    if torch:
        print(f"PyTorch {torch['torch']} on {torch['threads']} threads, transformers' MixtralSparseMoeBlock "
              "(faster of its eager and grouped_mm expert implementations).")
    print()
    print("numerics: f32 = fp32 weights; bf16 = bf16 weights, fp32 activations and compute; bf16c = bf16 compute "
          "(activations rounded to bf16; % of the bf16 dot peak where the CPU has one); int8 = int8 weights, 7-bit activations, int32 sums (GOP/s, % of the int8 "
          "peak). PyTorch runs its bf16 rows in bf16 compute.")
    print()
    print("| shape | numerics | T | moe packed ms | GFLOP/s | % of peak | weights GB/s (% bw) | moe views ms "
          "| Eigen ms | PyTorch ms | × views | × Eigen | × PyTorch |")
    print("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    order = a.shapes.split(",")
    numerics = ["f32", "bf16", "bf16c", "int8"]
    keys = sorted({k[:3] for k in rows},
                  key=lambda k: (order.index(k[0]) if k[0] in order else 99, numerics.index(k[1]), k[2]))
    for shape, dtype, T in keys:
        p = rows.get((shape, dtype, T, "packed"))
        if not p:
            continue
        ms = p["real_time"]
        other = {impl: rows.get((shape, dtype, T, impl)) for impl in ("views", "eigen")}
        peer = peers.get((shape, "bf16" if dtype == "bf16c" else dtype, T))
        # bf16 compute runs on the bf16 dot instruction where the CPU has one
        # and it beats the FMAs (as on AMD): its peak is then that instruction's.
        peak = int8.get("GOP/s", 0) if dtype == "int8" else bf16_dot if dtype == "bf16c" and bf16_dot > fma else fma

        def t(b):
            return f"{b['real_time']:.2f}" if b else "–"

        def x(b_ms):
            return f"{b_ms / ms:.2f}" if b_ms else "–"

        peer_ms = peer["ms"] if peer else None
        views_ms = other["views"]["real_time"] if other["views"] else None
        eigen_ms = other["eigen"]["real_time"] if other["eigen"] else None
        cells = [shape, dtype, str(T), f"{ms:.2f}", f"{p['GFLOP/s']:.1f}", f"{100 * p['GFLOP/s'] / peak:.0f}%",
                 f"{p['weight_GB/s']:.1f} ({100 * p['weight_GB/s'] / bw:.0f}%)", t(other["views"]), t(other["eigen"]),
                 f"{peer_ms:.2f}" if peer_ms else "–", x(views_ms), x(eigen_ms), x(peer_ms)]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
