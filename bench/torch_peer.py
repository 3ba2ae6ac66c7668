#!/usr/bin/env python3
"""The PyTorch peer: Hugging Face transformers' own MixtralSparseMoeBlock on the
CPU, on the shapes and thread count of moe-bench (bench/layer_bench.cpp).

It builds the real module from transformers (not a re-implementation), with
random weights, and times forward() under torch.inference_mode(). transformers
5 offers several expert implementations (`config._experts_implementation`):
"eager" (the per-expert loop of modeling_mixtral.py) and "grouped_mm" are
timed; "batched_mm" copies each token's expert weights and runs out of memory
on these shapes. The table uses the faster of the two for each row.

dtypes: f32 (weights and activations fp32) and bf16 (module and input in
bfloat16: PyTorch then computes in bf16 with fp32 accumulation, as oneDNN
does).

    python3 bench/torch_peer.py --out torch.json [--shapes scaled,fine] [--tokens 1,8,32]
    python3 bench/torch_peer.py --train --out train.json --shapes scaled --dtypes f32 --tokens 128,512

--train times a training step instead: forward with autograd, then
backward of (y * dy).sum() into the input and every weight (the peer of
moe-train-bench).

Writes a JSON list of {shape, dtype, impl, T, ms, runs}.
"""
import argparse
import json
import sys
import time

import torch
from transformers import MixtralConfig
from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

SHAPES = {  # name: (d_model, d_ff, experts, k, skewed), as in layer_bench.cpp
    "mixtral": (4096, 14336, 8, 2, False),
    "scaled": (1024, 3584, 8, 2, False),
    "fine": (1024, 896, 64, 8, False),
    "skewed": (1024, 3584, 8, 2, True),
}
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}


def make_block(shape, dtype, impl):
    d, ff, e, k, skewed = SHAPES[shape]
    config = MixtralConfig(hidden_size=d, intermediate_size=ff, num_local_experts=e, num_experts_per_tok=k)
    config._experts_implementation = impl
    torch.manual_seed(0)
    block = MixtralSparseMoeBlock(config).eval()
    with torch.no_grad():
        for name, p in block.named_parameters():
            fan_in = p.shape[-1]
            p.uniform_(-(3.0 / fan_in) ** 0.5, (3.0 / fan_in) ** 0.5)
        if skewed:  # x[:, 0] = 1 below: expert 0's logit gains 20, it wins every token
            block.gate.weight[0, 0] += 20.0
    return block.to(DTYPES[dtype])


def tokens(shape, T, dtype):
    d, _, _, _, skewed = SHAPES[shape]
    g = torch.Generator().manual_seed(7)
    x = torch.randn(1, T, d, generator=g)
    if skewed:
        x[:, :, 0] = 1.0
    return x.to(DTYPES[dtype])


def time_forward(block, x, min_time):
    with torch.inference_mode():
        block(x)  # warm-up
        runs, total, best = 0, 0.0, float("inf")
        while total < min_time or runs < 2:
            t0 = time.perf_counter()
            block(x)
            dt = time.perf_counter() - t0
            runs += 1
            total += dt
            best = min(best, dt)
            if runs >= 1 and dt > 4 * min_time:
                break  # one long call is measurement enough
    return total / runs * 1e3, runs


def time_train_step(block, x, min_time):
    block.train()
    x = x.clone().requires_grad_(True)
    dy = torch.randn(x.shape, generator=torch.Generator().manual_seed(8)).to(x.dtype)

    def step():
        block.zero_grad(set_to_none=False)
        x.grad = None
        out = block(x)
        y = out[0] if isinstance(out, tuple) else out
        (y * dy).sum().backward()

    step()  # warm-up
    runs, total = 0, 0.0
    while total < min_time or runs < 2:
        t0 = time.perf_counter()
        step()
        total += time.perf_counter() - t0
        runs += 1
    return total / runs * 1e3, runs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--shapes", default="mixtral,scaled,fine,skewed")
    ap.add_argument("--dtypes", default="f32,bf16")
    ap.add_argument("--tokens", default="1,8,32,128,512,2048")
    ap.add_argument("--impls", default="eager,grouped_mm")
    ap.add_argument("--threads", type=int, default=0, help="default: all cores")
    ap.add_argument("--min-time", type=float, default=0.5, help="seconds per measurement")
    ap.add_argument("--train", action="store_true", help="time forward + backward instead of inference")
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", file=sys.stderr)
    results = []
    for shape in a.shapes.split(","):
        for dtype in a.dtypes.split(","):
            for impl in a.impls.split(","):
                block = make_block(shape, dtype, impl)
                for T in [int(t) for t in a.tokens.split(",")]:
                    try:
                        timer = time_train_step if a.train else time_forward
                        ms, runs = timer(block, tokens(shape, T, dtype), a.min_time)
                    except RuntimeError as e:  # e.g. an implementation that runs out of memory
                        print(f"{shape} {dtype} {impl} T={T}: {e}", file=sys.stderr)
                        continue
                    results.append({"shape": shape, "dtype": dtype, "impl": impl, "T": T, "ms": ms, "runs": runs})
                    print(f"{shape:8} {dtype:5} {impl:11} T={T:5}  {ms:10.2f} ms", file=sys.stderr)
                del block
    with open(a.out, "w") as f:
        json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
