#!/usr/bin/env python3
"""The GPU peers of moe-cuda-bench (bench/cuda/layer_bench.cu), on its shapes
and token counts, in bf16 on the first CUDA device:

  transformers_eager       transformers' own MixtralSparseMoeBlock, expert
                           implementation "eager" (the per-expert loop)
  transformers_grouped_mm  the same module, implementation "grouped_mm"
  torch_grouped_mm         a plain pipeline: router GEMM, softmax, top-k,
                           renormalise, sort (token, slot) pairs by expert,
                           torch._grouped_mm gate|up, SwiGLU, torch._grouped_mm
                           down, weighted index_add_
  cublas_gemm_8192         torch.matmul of two bf16 8192x8192 matrices (cuBLAS)

Times are CUDA-event milliseconds, the median of several calls after a
warm-up. Writes {"torch", "device", "results": [{shape, impl, T, ms}]}.

    python3 bench/cuda/torch_peers.py --out torch.json [--tokens 1,8,64,512,4096,16384]
"""
import argparse
import json
import statistics
import sys

import torch

SHAPES = {  # name: (d_model, d_ff, experts, k), as in layer_bench.cu
    "mixtral": (4096, 14336, 8, 2),
    "fine": (2048, 768, 128, 8),
}


def median_ms(fn, runs):
    fn()  # warm-up
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def transformers_block(shape, impl):
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    d, f, e, k = SHAPES[shape]
    config = MixtralConfig(hidden_size=d, intermediate_size=f, num_local_experts=e, num_experts_per_tok=k)
    config._experts_implementation = impl
    torch.manual_seed(0)
    with torch.device("cuda"):
        block = MixtralSparseMoeBlock(config).to(torch.bfloat16).eval()
    return block


class GroupedMM:
    """Mixtral's sparse block as a user of torch._grouped_mm writes it."""

    def __init__(self, shape):
        d, f, e, k = SHAPES[shape]
        g = torch.Generator(device="cuda").manual_seed(0)
        opts = dict(device="cuda", dtype=torch.bfloat16, generator=g)
        self.k, self.e = k, e
        self.gate = torch.randn(e, d, **opts) / d**0.5
        self.w_gate_up = torch.randn(e, d, 2 * f, **opts) / d**0.5  # [E, K, N] as _grouped_mm takes it
        self.w_down = torch.randn(e, f, d, **opts) / f**0.5

    def __call__(self, x):
        logits = (x @ self.gate.t()).float()
        weights, experts = torch.topk(torch.softmax(logits, dim=-1), self.k, dim=-1)
        weights = (weights / weights.sum(dim=-1, keepdim=True)).to(x.dtype)
        flat = experts.reshape(-1)
        order = torch.argsort(flat, stable=True)
        token = order // self.k
        counts = torch.bincount(flat, minlength=self.e)
        offs = torch.cumsum(counts, 0, dtype=torch.int32)
        rows = x[token]
        gu = torch._grouped_mm(rows, self.w_gate_up, offs=offs)
        g, u = gu.chunk(2, dim=-1)
        h = torch.nn.functional.silu(g) * u
        out = torch._grouped_mm(h, self.w_down, offs=offs)
        out = out * weights.reshape(-1)[order].unsqueeze(-1)
        y = torch.zeros_like(x)
        y.index_add_(0, token, out)
        return y


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--shapes", default="mixtral,fine")
    ap.add_argument("--tokens", default="1,8,64,512,4096,16384")
    ap.add_argument("--impls", default="transformers_eager,transformers_grouped_mm,torch_grouped_mm")
    a = ap.parse_args()
    props = torch.cuda.get_device_properties(0)
    print(f"torch {torch.__version__} on {props.name}", file=sys.stderr)
    results = []
    a8192 = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    ms = median_ms(lambda: a8192 @ a8192, 20)
    results.append({"shape": "gemm", "impl": "cublas_gemm_8192", "T": 8192, "ms": ms,
                    "tflops": 2 * 8192**3 / ms / 1e9})
    del a8192
    for shape in a.shapes.split(","):
        d = SHAPES[shape][0]
        for impl in a.impls.split(","):
            try:
                if impl == "torch_grouped_mm":
                    module = GroupedMM(shape)
                else:
                    module = transformers_block(shape, impl.removeprefix("transformers_"))
            except Exception as e:  # noqa: BLE001 - an implementation this torch lacks
                print(f"{shape} {impl}: {e}", file=sys.stderr)
                continue
            for T in [int(t) for t in a.tokens.split(",")]:
                x = torch.randn(T, d, device="cuda", dtype=torch.bfloat16)
                if impl != "torch_grouped_mm":
                    x = x.unsqueeze(0)
                try:
                    with torch.inference_mode():
                        ms = median_ms(lambda: module(x), 5 if T >= 4096 else 20)
                except (RuntimeError, torch.cuda.OutOfMemoryError) as e:
                    print(f"{shape} {impl} T={T}: {e}", file=sys.stderr)
                    torch.cuda.empty_cache()
                    continue
                results.append({"shape": shape, "impl": impl, "T": T, "ms": ms})
                print(f"{shape:8} {impl:24} T={T:6}  {ms:9.3f} ms", file=sys.stderr)
            del module
            torch.cuda.empty_cache()
    with open(a.out, "w") as f:
        json.dump({"torch": torch.__version__, "device": props.name, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
