#!/usr/bin/env python3
"""k-quant cases from llama.cpp itself: fp32 rows and the Q2_K, Q3_K, Q4_K,
Q5_K and Q6_K blocks that ggml's own quantiser makes of them
(ggml_quantize_chunk without an importance matrix, which is what
llama-quantize runs; the gguf package quantises no k-quant). ggml comes from
llama-cpp-python's build (its libggml-base), loaded through ctypes:

    build/hf-venv/bin/pip install llama-cpp-python safetensors numpy
    build/hf-venv/bin/python tests/cases/make_k_quant_cases.py

writes tests/data/cases/gguf/k_quant.safetensors (`input`, `TYPE.blocks`).
"""
import ctypes
import glob
import os

import llama_cpp
import numpy as np
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "data", "cases", "gguf", "k_quant.safetensors")
TYPES = {"Q2_K": (10, 84), "Q3_K": (11, 110), "Q4_K": (12, 144), "Q5_K": (13, 176), "Q6_K": (14, 210)}


def rows():
    """Super-blocks of 256 that reach the edge cases, then seeded normals."""
    rng = np.random.default_rng(12)
    n = rng.standard_normal
    special = [
        np.zeros(256), np.full(256, 0.75), np.full(256, -0.75), np.r_[100.0, n(255) * 0.01],
        np.r_[-3.0, rng.uniform(-2.9, 2.9, 255)], np.arange(256) - 127.5, np.abs(n(256)), -np.abs(n(256)),
        n(256) * 1e-30, np.r_[np.zeros(128), n(128)], np.r_[n(16) * 1e3, n(240) * 1e-3],
        np.concatenate([n(32) * 10.0 ** e for e in range(-4, 4)]), np.r_[np.full(128, -1.0), np.full(128, 1.0)],
        np.repeat(n(16), 16), np.r_[np.zeros(255), 1e-3],
    ]
    x = np.concatenate(special + [n(256) * 10.0 ** e for e in rng.integers(-4, 4, 49)])
    return x.astype(np.float32).reshape(-1, 512)  # rows of two super-blocks


def main():
    lib_dir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    ggml = ctypes.CDLL(glob.glob(os.path.join(lib_dir, "libggml-base.so*"))[0])
    ggml.ggml_quantize_chunk.restype = ctypes.c_size_t
    ggml.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                         ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    x = np.ascontiguousarray(rows())
    out = {"input": x.reshape(-1)}
    for name, (code, block_bytes) in TYPES.items():
        dst = np.zeros(x.size // 256 * block_bytes, dtype=np.uint8)
        size = ggml.ggml_quantize_chunk(code, x.ctypes.data, dst.ctypes.data, 0, x.shape[0], x.shape[1], None)
        assert size == dst.size, (name, size, dst.size)
        out[name + ".blocks"] = dst
    save_file(out, OUT)  # (no metadata: its key order varies between runs, the file would too)
    print(f"wrote {OUT}: {x.shape[0]} rows of {x.shape[1]}; llama-cpp-python {llama_cpp.__version__}")


if __name__ == "__main__":
    main()
