#!/usr/bin/env python3
"""Activation blocks and block dot products from llama.cpp itself: the
Q8_0, Q8_1 and Q8_K blocks that ggml's CPU backend quantises a matrix
product's fp32 input to (each weight type's `vec_dot_type`, through its
`from_float`), and the dot products (`vec_dot`) of those blocks with
weight rows of every block type. ggml comes from llama-cpp-python's build
(libggml-base, libggml-cpu), loaded through ctypes:

    build/hf-venv/bin/pip install llama-cpp-python safetensors numpy
    build/hf-venv/bin/python tests/cases/make_q8_dot_cases.py

writes tests/data/cases/gguf/q8_dot.safetensors:
  input           [A, 512] fp32 activation rows
  Q8_0, Q8_1, Q8_K  their blocks as ggml's CPU backend makes them (bytes)
  TYPE.weights    [W, 512] rows of TYPE blocks (ggml_quantize_chunk)
  TYPE.dots       [A, W] fp32: vec_dot of activation row a with weight row w
"""
import ctypes
import glob
import os

import llama_cpp
import numpy as np
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "data", "cases", "gguf", "q8_dot.safetensors")
WEIGHTS = {"Q4_0": 2, "Q4_1": 3, "Q5_0": 6, "Q5_1": 7, "Q8_0": 8, "Q2_K": 10, "Q3_K": 11, "Q4_K": 12,
           "Q5_K": 13, "Q6_K": 14}
ACTIVATIONS = {"Q8_0": (8, 34, 32), "Q8_1": (9, 36, 32), "Q8_K": (15, 292, 256)}
K = 512


class TraitsCpu(ctypes.Structure):
    _fields_ = [("from_float", ctypes.c_void_p), ("vec_dot", ctypes.c_void_p), ("vec_dot_type", ctypes.c_int),
                ("nrows", ctypes.c_int64)]


def activation_rows():
    """Rows of 512 that reach the quantisers' edges, then seeded normals."""
    rng = np.random.default_rng(7)
    n = rng.standard_normal
    ties = np.tile(np.r_[127.0, np.arange(31) - 15.5], 16)  # x · 127/amax lands on .5: ties to even
    special = [
        np.zeros(K), np.r_[np.zeros(256), n(256)], np.r_[n(256), np.zeros(32), n(224)], ties, -ties,
        np.r_[-50.0, n(511)], np.r_[50.0, n(511)], n(K) * 1e-30, np.full(K, 0.3), np.full(K, -0.3),
        np.concatenate([n(32) * 10.0 ** e for e in range(-8, 8)]), np.repeat(n(32), 16),
    ]
    x = np.stack(special + [n(K) * 10.0 ** e for e in rng.integers(-3, 3, 12)])
    return x.astype(np.float32)


def weight_rows(rng):
    n = rng.standard_normal
    rows = [n(K) * 0.05, np.r_[np.zeros(256), n(256)], np.abs(n(K)), -np.abs(n(K)), n(K) * 3.0]
    return np.stack(rows + [n(K) * 10.0 ** e for e in rng.integers(-2, 1, 5)]).astype(np.float32)


def main():
    lib_dir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    base = ctypes.CDLL(glob.glob(os.path.join(lib_dir, "libggml-base.so*"))[0], mode=ctypes.RTLD_GLOBAL)
    cpu = ctypes.CDLL(glob.glob(os.path.join(lib_dir, "libggml-cpu.so*"))[0])
    cpu.ggml_cpu_init()
    cpu.ggml_get_type_traits_cpu.restype = ctypes.POINTER(TraitsCpu)
    base.ggml_quantize_chunk.restype = ctypes.c_size_t
    base.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                         ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    from_float_t = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
    vec_dot_t = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p,
                                 ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)

    x = np.ascontiguousarray(activation_rows())
    out = {"input": x}
    quantised = {}
    for name, (code, block_bytes, block) in ACTIVATIONS.items():
        from_float = from_float_t(cpu.ggml_get_type_traits_cpu(code).contents.from_float)
        blocks = np.zeros((x.shape[0], K // block * block_bytes), dtype=np.uint8)
        for a in range(x.shape[0]):
            from_float(x[a].ctypes.data, blocks[a].ctypes.data, K)
        out[name] = blocks
        quantised[code] = blocks
    rng = np.random.default_rng(8)
    for name, code in WEIGHTS.items():
        traits = cpu.ggml_get_type_traits_cpu(code).contents
        w = np.ascontiguousarray(weight_rows(rng))
        blocks = np.zeros(w.size * 4, dtype=np.uint8)  # more than any type needs
        size = base.ggml_quantize_chunk(code, w.ctypes.data, blocks.ctypes.data, 0, w.shape[0], K, None)
        blocks = blocks[:size].reshape(w.shape[0], -1).copy()
        acts = quantised[traits.vec_dot_type]
        vec_dot = vec_dot_t(traits.vec_dot)
        dots = np.zeros((x.shape[0], w.shape[0]), dtype=np.float32)
        s = ctypes.c_float()
        for a in range(x.shape[0]):
            for r in range(w.shape[0]):
                vec_dot(K, ctypes.addressof(s), 0, blocks[r].ctypes.data, 0, acts[a].ctypes.data, 0, 1)
                dots[a, r] = s.value
        out[name + ".weights"] = blocks
        out[name + ".dots"] = dots
    save_file(out, OUT)
    print(f"wrote {OUT}: {x.shape[0]} activation rows of {K}; llama-cpp-python {llama_cpp.__version__}")


if __name__ == "__main__":
    main()
