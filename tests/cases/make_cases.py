#!/usr/bin/env python3
"""Writes tests/data/cases/: moe_block cases (the format of the golden
cases, tests/data/golden/README.md section 2) for what the golden set does
not hold, computed here in float64 with numpy, independently of the C++:

  * wide: d_model and d_ff above 256 and not multiples of it, so a packed
    kernel's depth tail (the K loop's remainder after whole 256-blocks) and
    its column tails are reached, in F32 and BF16 weights;
  * ties: router rows that are exact copies, so router logits tie exactly
    inside the top k and at its edge (k-th and (k+1)-th). Ties go to the lower
    expert index (golden README: "Ties ... should go to the lower expert /
    token index"); the experts behind the copied rows differ, so choosing the
    wrong one changes y.

Deterministic (seeded). numpy only; run from anywhere:
    python3 tests/cases/make_cases.py
then commit the files and the MANIFEST.json it writes.
"""
import hashlib
import json
import os
import struct

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(os.path.dirname(HERE), "data", "cases")


def bf16_round(a):
    """float32 -> bf16 bits, round to nearest even (as torch does)."""
    bits = np.asarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def bf16_value(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def write_safetensors(path, tensors, metadata):
    """tensors: name -> (dtype, numpy array already in that dtype's storage)."""
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name, (dtype, array) in sorted(tensors.items()):
        blob = np.ascontiguousarray(array).tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def silu(z):
    return z / (1.0 + np.exp(-z))


def moe_block(x, gate_w, w1, w2, w3, k):
    """README section 2, in float64. Top k by descending logit, ties to the lower index."""
    logits = x @ gate_w.T
    T, E = logits.shape
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = shifted / shifted.sum(axis=1, keepdims=True)
    idx = np.stack([np.argsort(-logits[t], kind="stable")[:k] for t in range(T)])
    chosen = np.take_along_axis(logits, idx, axis=1)
    weight = np.exp(chosen - chosen.max(axis=1, keepdims=True))
    weight /= weight.sum(axis=1, keepdims=True)
    y = np.zeros_like(x)
    for t in range(T):
        for j in range(k):
            e = idx[t, j]
            y[t] += weight[t, j] * (w2[e] @ (silu(w1[e] @ x[t]) * (w3[e] @ x[t])))
    counts = np.bincount(idx.ravel(), minlength=E)
    aux = E * np.sum(counts / T * probs.mean(axis=0))
    lse = logits.max(axis=1) + np.log(shifted.sum(axis=1))
    z = np.mean(lse**2)
    return dict(y=y, router_logits=logits, router_probs=probs, topk_idx=idx, topk_weight=weight,
                tokens_per_expert=counts, aux_loss=np.array([aux]), z_loss=np.array([z]))


def ranked_gaps(logits, k):
    """(ties inside the top k, ties at its edge, smallest non-zero edge gap)."""
    inside = edge = 0
    gap = np.inf
    for row in logits:
        s = np.sort(row)[::-1]
        inside += int(np.any(s[: k - 1] == s[1:k]))
        edge += int(s[k - 1] == s[k])
        if s[k - 1] != s[k]:
            gap = min(gap, s[k - 1] - s[k])
    return inside, edge, gap


def make_case(name, seed, d_model, d_ff, E, k, T, dtype, copies=()):
    """copies: (source, destination) router rows; destination becomes an exact copy."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, d_model)).astype(np.float32)
    scale_in, scale_out = 1 / np.sqrt(d_model), 1 / np.sqrt(d_ff)
    gate_w = (rng.standard_normal((E, d_model)) * scale_in).astype(np.float32)
    for src, dst in copies:
        gate_w[dst] = gate_w[src]
    w1 = (rng.standard_normal((E, d_ff, d_model)) * scale_in).astype(np.float32)
    w3 = (rng.standard_normal((E, d_ff, d_model)) * scale_in).astype(np.float32)
    w2 = (rng.standard_normal((E, d_model, d_ff)) * scale_out).astype(np.float32)
    stored = {}
    weights = {}
    for wname, w in (("gate_w", gate_w), ("w1", w1), ("w2", w2), ("w3", w3)):
        if dtype == "BF16":
            bits = bf16_round(w)
            stored[wname] = ("BF16", bits)
            weights[wname] = bf16_value(bits).astype(np.float64)
        else:
            stored[wname] = ("F32", w)
            weights[wname] = w.astype(np.float64)
    stored["x"] = ("F32", x)
    out = moe_block(x.astype(np.float64), weights["gate_w"], weights["w1"], weights["w2"], weights["w3"], k)
    for key, value in out.items():
        if key in ("topk_idx", "tokens_per_expert"):
            stored[key] = ("I32", value.astype(np.int32))
        else:
            stored[key] = ("F32", value.astype(np.float32))
    inside, edge, gap = ranked_gaps(out["router_logits"], k)
    if not copies:
        # More than 6 rows (a packed kernel's row group) per expert, so
        # prefill takes the depth-blocked path.
        assert out["tokens_per_expert"].min() > 6, (name, out["tokens_per_expert"])
        assert inside == 0 and edge == 0 and gap >= 1e-3, (name, gap)
    else:
        assert edge > 0 and inside > 0, (name, inside, edge)  # the case must hold both kinds of tie
    metadata = {
        "kind": "moe_block", "seed": str(seed), "generator": "tests/cases/make_cases.py (numpy float64)",
        "d_model": str(d_model), "d_ff": str(d_ff), "num_experts": str(E), "top_k": str(k), "tokens": str(T),
        "weight_dtype": dtype, "has_grads": "false", "ties_inside_top_k": str(inside),
        "ties_at_k_edge": str(edge), "min_router_gap": repr(float(gap)),
    }
    os.makedirs(os.path.join(OUT, "moe_block"), exist_ok=True)
    path = os.path.join("moe_block", name + ".safetensors")
    write_safetensors(os.path.join(OUT, path), stored, metadata)
    return path, {"kind": "moe_block", "path": path, "seed": seed,
                  "params": {"d_model": d_model, "d_ff": d_ff, "num_experts": E, "top_k": k, "tokens": T,
                             "weight_dtype": dtype, "copied_router_rows": [list(c) for c in copies]}}


def main():
    cases = [
        make_case("wide_d300_f280_e2_k1_t24_f32", 101, 300, 280, 2, 1, 24, "F32"),
        make_case("wide_d270_f290_e3_k2_t16_bf16", 102, 270, 290, 3, 2, 16, "BF16"),
        # Rows 1 and 2 equal: whenever they are the top two, a tie inside the
        # top 2; whenever they are second and third, a tie at its edge.
        make_case("ties_d32_f64_e4_k2_t48_f32", 103, 32, 64, 4, 2, 48, "F32", copies=[(1, 2)]),
        # Three equal rows among eight, top 2 and top 3 of them.
        make_case("ties_d48_f96_e8_k2_t64_f32", 104, 48, 96, 8, 2, 64, "F32", copies=[(2, 5), (2, 6)]),
        make_case("ties_d48_f96_e8_k3_t64_bf16", 105, 48, 96, 8, 3, 64, "BF16", copies=[(0, 3), (0, 7)]),
    ]
    # models/ is written by make_dense_cases.py (transformers); listed here too.
    models = os.path.join(OUT, "models")
    for name in sorted(os.listdir(models)) if os.path.isdir(models) else []:
        cases.append((None, {"kind": "model", "path": "models/" + name,
                             "generator": "tests/cases/make_dense_cases.py (transformers)"}))
    # chat/ is written by make_chat_cases.py (transformers' apply_chat_template).
    if os.path.isdir(os.path.join(OUT, "chat")):
        cases.append((None, {"kind": "chat", "path": "chat/renders.json",
                             "generator": "tests/cases/make_chat_cases.py (transformers)"}))
    # perplexity/ is written by make_perplexity_cases.py (transformers and torch).
    if os.path.isdir(os.path.join(OUT, "perplexity")):
        cases.append((None, {"kind": "perplexity", "path": "perplexity/cases.json",
                             "generator": "tests/cases/make_perplexity_cases.py (transformers)"}))
    # eval/ is written by make_loglikelihood_cases.py (transformers and torch).
    if os.path.isdir(os.path.join(OUT, "eval")):
        cases.append((None, {"kind": "loglikelihood", "path": "eval/loglikelihood.json",
                             "generator": "tests/cases/make_loglikelihood_cases.py (transformers)"}))
    manifest = {"generator": "tests/cases/make_cases.py (numpy float64)", "numpy": np.__version__,
                "cases": [c for _, c in cases], "sha256": {}}
    for root, _, files in sorted(os.walk(OUT)):
        for file in sorted(files):
            path = os.path.relpath(os.path.join(root, file), OUT)
            if path in ("MANIFEST.json", "README.md"):
                continue
            with open(os.path.join(OUT, path), "rb") as f:
                manifest["sha256"][path] = hashlib.sha256(f.read()).hexdigest()
    with open(os.path.join(OUT, "MANIFEST.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    for path, c in cases:
        print(c["path"], c.get("params", ""))


if __name__ == "__main__":
    main()
