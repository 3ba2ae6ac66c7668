#!/usr/bin/env python3
"""Writes the fuzzers' seed corpora (tests/fuzz/corpus/<harness>/): small,
valid inputs of each kind, so that fuzzing starts from the structure of a
real file. Standard library only; deterministic. Run from anywhere:
    python3 tests/fuzz/make_seeds.py
"""
import json
import os
import random
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "corpus")
rng = random.Random(7)


def safetensors(tensors, metadata=None):
    """tensors: list of (name, dtype, shape); F32 data drawn from the seeded rng."""
    header, blobs, offset = {}, [], 0
    for name, dtype, shape in tensors:
        n = 1
        for d in shape:
            n *= d
        if dtype == "F32":
            blob = struct.pack(f"<{n}f", *[rng.uniform(-0.5, 0.5) for _ in range(n)])
        else:
            size = {"BF16": 2, "F16": 2, "I32": 4, "U8": 1, "I64": 8}[dtype]
            blob = bytes(rng.randrange(256) for _ in range(n * size))
            if dtype == "BF16":  # keep the values finite: small exponents only
                blob = b"".join(bytes([blob[i], 0x3C]) for i in range(0, len(blob), 2))
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def write(harness, name, data):
    os.makedirs(os.path.join(CORPUS, harness), exist_ok=True)
    with open(os.path.join(CORPUS, harness, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def tiny_config(**changes):
    c = {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "vocab_size": 16, "hidden_size": 8,
         "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
         "hidden_act": "silu", "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
         "sliding_window": None, "num_local_experts": 2, "num_experts_per_tok": 2, "tie_word_embeddings": False,
         "torch_dtype": "float32", "bos_token_id": 1, "eos_token_id": 2}
    c.update(changes)
    return c


def tiny_model_tensors(c):
    V, H, F, E = c["vocab_size"], c["hidden_size"], c["intermediate_size"], c["num_local_experts"]
    hd = c.get("head_dim") or H // c["num_attention_heads"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    t = [("model.embed_tokens.weight", "F32", [V, H])]
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}."
        t += [(p + "input_layernorm.weight", "F32", [H]), (p + "post_attention_layernorm.weight", "F32", [H]),
              (p + "self_attn.q_proj.weight", "F32", [q, H]), (p + "self_attn.k_proj.weight", "F32", [kv, H]),
              (p + "self_attn.v_proj.weight", "F32", [kv, H]), (p + "self_attn.o_proj.weight", "F32", [H, q]),
              (p + "block_sparse_moe.gate.weight", "F32", [E, H])]
        for e in range(E):
            x = f"{p}block_sparse_moe.experts.{e}."
            t += [(x + "w1.weight", "F32", [F, H]), (x + "w3.weight", "F32", [F, H]), (x + "w2.weight", "F32", [H, F])]
    t.append(("model.norm.weight", "F32", [H]))
    if not c["tie_word_embeddings"]:
        t.append(("lm_head.weight", "F32", [V, H]))
    return t


def main():
    shutil.rmtree(CORPUS, ignore_errors=True)
    # safetensors: every dtype, a stacked 3-D tensor, metadata, an empty tensor; the golden dtype file.
    write("safetensors", "mixed", safetensors([("a", "F32", [2, 3]), ("b", "BF16", [4]), ("c", "I32", [2]),
                                               ("stack", "F32", [2, 2, 2]), ("empty", "F32", [0, 4])],
                                              {"format": "pt"}))
    write("safetensors", "one", safetensors([("w", "F16", [3, 2])]))
    with open(os.path.join(ROOT, "tests/data/golden/io/dtypes.safetensors"), "rb") as f:
        write("safetensors", "golden_dtypes", f.read())
    # config.json: the golden tiny model's, and variants with the optional keys.
    with open(os.path.join(ROOT, "tests/data/golden/models/mixtral_tiny_f32/config.json")) as f:
        write("config", "golden_tiny", f.read())
    write("config", "variants", json.dumps(tiny_config(head_dim=8, sliding_window=4, eos_token_id=[2, 3],
                                                       torch_dtype="bfloat16", tie_word_embeddings=True)))
    write("config", "rope_parameters", json.dumps(
        tiny_config(rope_parameters={"rope_type": "default", "rope_theta": 5e5}, rope_theta=None)))
    # checkpoint: an index and two shards.
    index = {"metadata": {"total_size": 48},
             "weight_map": {"x": "model-00001-of-00002.safetensors", "y": "model-00001-of-00002.safetensors",
                            "z": "model-00002-of-00002.safetensors"}}
    write("checkpoint", "two_shards", json.dumps(index).encode() + b"\n--shard--\n" +
          safetensors([("x", "F32", [2, 2]), ("y", "BF16", [4])]) + b"\n--shard--\n" +
          safetensors([("z", "F32", [2, 2])]))
    # model: a whole tiny Mixtral (1 layer, 2 experts, GQA 2:1), untied and tied.
    for name, c in (("tiny", tiny_config()), ("tiny_tied", tiny_config(tie_word_embeddings=True, head_dim=4))):
        write("model", name, json.dumps(c).encode() + b"\n--weights--\n" + safetensors(tiny_model_tensors(c)))
    # config.json of the dense families.
    for family in ("mistral", "llama"):
        c = tiny_config(model_type=family, architectures=[family.capitalize() + "ForCausalLM"])
        for key in ("num_local_experts", "num_experts_per_tok"):
            c.pop(key, None)
        write("config", "dense_" + family, json.dumps(c))
    # merge_config: mergekit-moe YAML, the seed article's shape and every key.
    write("merge_config", "beyonder", b"""base_model: mlabonne/AlphaMonarch-7B
experts:
  - source_model: mlabonne/AlphaMonarch-7B
    positive_prompts: ["chat", "assistant", "tell me", "explain", "I want"]
  - source_model: beowolx/CodeNinja-1.0-OpenChat-7B
    positive_prompts:
    - "code"
    - "python"
""")
    write("merge_config", "every_key", b"""base_model: ./base
gate_mode: cheap_embed
dtype: torch.bfloat16
experts_per_token: 1
architecture: mixtral
shared_experts: null
experts:
  - source_model: ./a
    positive_prompts: ["x", 'y']
    negative_prompts: [z]
    noise_scale: 0.01
    residual_scale: 0.5
  - {source_model: ./b, positive_prompts: [w]}
""")


if __name__ == "__main__":
    main()
