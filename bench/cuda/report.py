#!/usr/bin/env python3
"""The CUDA benchmark table: moe-cuda-bench's JSON (Google Benchmark) beside
torch_peers.py's, one row per shape and token count, in Markdown.

    python3 bench/cuda/report.py moe.json torch.json

Columns: moe's ms and TFLOP/s, its % of the same run's cuBLAS 8192³ rate, the
expert-weight GB/s and % of the measured read bandwidth (what bounds small
T), dense GEMMs of the same FLOPs (one expert over T·k rows), each peer's
ms, and the best peer's time over moe's (> 1: moe is faster).
"""
import json
import sys
from collections import defaultdict


def ms_of(b):
    scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b.get("time_unit", "ns")]
    return b["real_time"] * scale


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    moe = json.load(open(sys.argv[1]))["benchmarks"]
    peers = json.load(open(sys.argv[2]))
    gemm_peak = read_gbps = None
    rows = {}
    dense = defaultdict(float)
    for b in moe:
        if b.get("run_type") == "aggregate":
            continue
        parts = b["name"].split("/")
        if parts[0] == "limits" and parts[1] == "gemm_bf16":
            gemm_peak = b["TFLOPs"]
        elif parts[0] == "limits" and parts[1].startswith("read"):
            read_gbps = b["GBps"]
        elif parts[1] == "moe_cuda_bf16":
            rows[(parts[0], int(parts[2]))] = b
        elif parts[1].startswith("dense_equal_flops"):
            k = {"mixtral": 2, "fine": 8}[parts[0]]
            dense[(parts[0], int(parts[2]) // k)] += ms_of(b)
    peer_ms = defaultdict(dict)
    impls = []
    for r in peers["results"]:
        if r["shape"] == "gemm":
            print(f"torch {peers['torch']} on {peers['device']}: cuBLAS 8192³ through torch {r['tflops']:.0f} TFLOP/s")
            continue
        peer_ms[(r["shape"], r["T"])][r["impl"]] = r["ms"]
        if r["impl"] not in impls:
            impls.append(r["impl"])
    print(f"moe-cuda-bench limits: cuBLAS bf16 8192³ {gemm_peak or float('nan'):.0f} TFLOP/s, "
          f"device read {read_gbps or float('nan'):.0f} GB/s\n")
    head = ["shape", "T", "moe ms", "TFLOP/s", "% GEMM peak", "expert GB/s", "% read", "dense equal-FLOPs ms"]
    head += [f"{i} ms" for i in impls] + ["best peer / moe"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for (shape, T), b in sorted(rows.items()):
        ms = ms_of(b)
        cells = [shape, str(T), f"{ms:.3f}", f"{b['TFLOPs']:.0f}",
                 f"{100 * b['TFLOPs'] / gemm_peak:.0f}%" if gemm_peak else "-",
                 f"{b['expert_GBps']:.0f}", f"{100 * b['expert_GBps'] / read_gbps:.0f}%" if read_gbps else "-",
                 f"{dense[(shape, T)]:.3f}" if (shape, T) in dense else "-"]
        p = peer_ms.get((shape, T), {})
        cells += [f"{p[i]:.3f}" if i in p else "-" for i in impls]
        cells.append(f"{min(p.values()) / ms:.2f}" if p else "-")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
