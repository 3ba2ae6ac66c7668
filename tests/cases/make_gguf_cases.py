#!/usr/bin/env python3
"""Writes tests/data/cases/gguf/: GGUF files made by the `gguf` package from
PyPI (llama.cpp's own Python writer and quantiser), so moe's reader is
checked against an implementation it shares no code with.

    build/hf-venv/bin/pip install gguf numpy safetensors sentencepiece
    build/hf-venv/bin/python tests/cases/make_gguf_cases.py

Writes, per file NAME.gguf, NAME.expected.json: every metadata key with its
GGUF type and value, and every tensor's ggml type, dimensions (ne, fastest
first), byte size, offset in the data section, its bytes in hex, and its
values as the gguf package dequantises them. Then refreshes the files'
sha256 in tests/data/cases/MANIFEST.json. Run by hand; commit the folder.
"""
import hashlib
import importlib.metadata
import json
import os

import numpy as np
import gguf
from gguf.constants import GGMLQuantizationType as Q

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "data", "cases", "gguf")
MANIFEST = os.path.join(HERE, "..", "data", "cases", "MANIFEST.json")


def write_tiny(path):
    rng = np.random.default_rng(20261207)
    w = gguf.GGUFWriter(path, arch="llama")
    w.add_name("tiny")
    w.add_context_length(128)           # uint32
    w.add_embedding_length(64)
    w.add_block_count(2)
    w.add_layer_norm_rms_eps(1e-5)      # float32
    w.add_rope_freq_base(10000.0)
    w.add_uint8("test.u8", 250)
    w.add_int8("test.i8", -7)
    w.add_uint16("test.u16", 65000)
    w.add_int16("test.i16", -32000)
    w.add_int32("test.i32", -123456789)
    w.add_uint64("test.u64", 2**50 + 3)
    w.add_int64("test.i64", -(2**50) - 3)
    w.add_float64("test.f64", 3.141592653589793)
    w.add_bool("test.bool", True)
    w.add_tokenizer_model("llama")
    w.add_token_list(["<unk>", "<s>", "</s>", "▁hello", "wörld", "🙂", ""])
    w.add_token_scores([0.0, -1.0, -2.5, 3.25, -0.125, 1e-3, -1e9])
    w.add_token_types([2, 3, 3, 1, 1, 6, 1])
    tensors = {
        "f32": (rng.standard_normal((3, 5)).astype(np.float32), Q.F32),
        "f16": (rng.standard_normal((2, 32)).astype(np.float32), Q.F16),
        "bf16": (rng.standard_normal((2, 16)).astype(np.float32), Q.BF16),
        "q8_0": (rng.standard_normal((2, 64)).astype(np.float32), Q.Q8_0),
        "q4_0": (rng.standard_normal((3, 32)).astype(np.float32), Q.Q4_0),
        "q4_1": (rng.standard_normal((1, 64)).astype(np.float32), Q.Q4_1),
        "q5_0": (rng.standard_normal((1, 32)).astype(np.float32), Q.Q5_0),
        "q5_1": (rng.standard_normal((1, 32)).astype(np.float32), Q.Q5_1),
        "blk.0.ffn_down_exps.weight": (rng.standard_normal((2, 3, 32)).astype(np.float32), Q.Q8_0),
    }
    for name, (data, qtype) in tensors.items():
        if qtype == Q.F32:
            w.add_tensor(name, data)
        elif qtype == Q.F16:
            w.add_tensor(name, data.astype(np.float16))
        else:
            q = gguf.quants.quantize(data, qtype)
            w.add_tensor(name, q, raw_dtype=qtype)
    # The package quantises no k-quant: Q6_K blocks of random bytes, each
    # block's scale d (its last two bytes, f16) set to a finite value.
    q6k = rng.integers(0, 256, size=(2, 210), dtype=np.uint8)
    q6k[:, 208:210] = np.frombuffer(np.float16(0.0125).tobytes(), dtype=np.uint8)
    w.add_tensor("q6_k", q6k, raw_dtype=Q.Q6_K)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# Where each type keeps its fp16 scales (byte offsets in a block), for
# setting them to chosen finite values in random blocks.
HALF_FIELDS = {
    Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q5_0: [0], Q.Q5_1: [0, 2], Q.Q8_0: [0],
    Q.Q2_K: [80, 82], Q.Q3_K: [108], Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208],
}
EXTREME_HALVES = [65504.0, -65504.0, 6.103515625e-05, -6.103515625e-05, 5.960464477539063e-08, 0.0, -0.0, 1.0, -1.0]


def write_dequant_cases(path):
    """Random blocks of every type moe dequantises, their fp16 scales set to
    extremes (largest, smallest normal and subnormal, zeros) and random
    values, never NaN; and the values the gguf package dequantises them to."""
    from safetensors.numpy import save_file
    rng = np.random.default_rng(7)
    out = {}
    for qtype, fields in HALF_FIELDS.items():
        block, size = gguf.constants.GGML_QUANT_SIZES[qtype]
        n = 48
        blocks = rng.integers(0, 256, size=(n, size), dtype=np.uint8)
        halves = np.concatenate([np.array(EXTREME_HALVES), rng.standard_normal(n * len(fields)) * 10.0 ** rng.integers(-6, 4, n * len(fields))])
        halves = halves[: n * len(fields)].astype(np.float16).reshape(n, len(fields))
        for k, at in enumerate(fields):
            blocks[:, at:at + 2] = halves[:, k:k + 1].view(np.uint8)
        out[qtype.name + ".blocks"] = blocks.reshape(-1)
        out[qtype.name + ".values"] = gguf.quants.dequantize(blocks.reshape(1, -1), qtype).reshape(-1).astype(np.float32)
    for qtype in (Q.F16, Q.BF16):
        bits = rng.integers(0, 2**16, size=4096, dtype=np.uint16)
        if qtype == Q.F16:
            nan = ((bits >> 10) & 0x1F == 0x1F) & (bits & 0x3FF != 0)
        else:
            nan = ((bits >> 7) & 0xFF == 0xFF) & (bits & 0x7F != 0)
        bits = bits[~nan]
        raw = bits.view(np.uint8).reshape(1, -1)
        out[qtype.name + ".blocks"] = raw.reshape(-1)
        out[qtype.name + ".values"] = gguf.quants.dequantize(raw, qtype).reshape(-1).astype(np.float32)
    save_file(out, path)  # (no metadata: its key order varies between runs, the file would too)


def write_quant_cases(path):
    """fp32 rows and the blocks the gguf package quantises them to, for each
    type it quantises: seeded normals at several scales, and blocks that
    reach the edge cases (all zero, constant, one outlier, the largest
    magnitude negative, ties at the rounding boundaries, tiny values)."""
    from safetensors.numpy import save_file
    rng = np.random.default_rng(11)
    special = [
        np.zeros(32), np.full(32, 0.75), np.r_[100.0, rng.standard_normal(31) * 0.01],
        np.r_[-3.0, rng.uniform(-2.9, 2.9, 31)], np.arange(32) - 15.5, (np.arange(32) - 16) / 8.0,
        rng.standard_normal(32) * 1e-30, np.r_[np.full(16, -1.0), np.full(16, 1.0)],
    ]
    x = np.concatenate(special + [rng.standard_normal(32) * 10.0 ** e for e in rng.integers(-4, 4, 56)])
    x = x.astype(np.float32).reshape(1, -1)
    out = {"input": x.reshape(-1)}
    for qtype in (Q.F16, Q.BF16, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0):
        out[qtype.name + ".blocks"] = np.asarray(gguf.quants.quantize(x, qtype)).view(np.uint8).reshape(-1)
    save_file(out, path)  # (no metadata: its key order varies between runs, the file would too)


def permute(w, n_head):
    """convert_hf_to_gguf.py's LlamaModel.permute: a q or k projection's rows
    from Hugging Face's rotate-half pairing (i, i + d/2) to ggml's adjacent
    pairs (2i, 2i + 1), head by head."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def add_mixtral_tensors(w, t, layers, n_head, n_kv, experts):
    """A Mixtral's tensors (Hugging Face names in `t`) under llama.cpp's names:
    q and k permuted, each layer's experts stacked."""
    w.add_tensor("token_embd.weight", t["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", t["model.norm.weight"])
    w.add_tensor("output.weight", t["lm_head.weight"])
    for i in range(layers):
        p, b = f"model.layers.{i}.", f"blk.{i}."
        w.add_tensor(b + "attn_norm.weight", t[p + "input_layernorm.weight"])
        w.add_tensor(b + "attn_q.weight", permute(t[p + "self_attn.q_proj.weight"], n_head))
        w.add_tensor(b + "attn_k.weight", permute(t[p + "self_attn.k_proj.weight"], n_kv))
        w.add_tensor(b + "attn_v.weight", t[p + "self_attn.v_proj.weight"])
        w.add_tensor(b + "attn_output.weight", t[p + "self_attn.o_proj.weight"])
        w.add_tensor(b + "ffn_norm.weight", t[p + "post_attention_layernorm.weight"])
        w.add_tensor(b + "ffn_gate_inp.weight", t[p + "block_sparse_moe.gate.weight"])
        for hf, gg in (("w1", "gate"), ("w2", "down"), ("w3", "up")):
            stack = np.stack([t[p + f"block_sparse_moe.experts.{e}.{hf}.weight"] for e in range(experts)])
            w.add_tensor(b + f"ffn_{gg}_exps.weight", stack)


def add_spm_vocab(w, sp):
    """A SentencePiece model's vocabulary as convert_hf_to_gguf.py's
    _set_vocab_sentencepiece stores it."""
    tokens, scores, types = [], [], []
    for i in range(sp.vocab_size()):
        tokens.append(sp.id_to_piece(i).encode("utf-8"))
        scores.append(sp.get_score(i))
        t = gguf.TokenType.NORMAL
        if sp.is_unknown(i):
            t = gguf.TokenType.UNKNOWN
        elif sp.is_control(i):
            t = gguf.TokenType.CONTROL
        elif sp.is_unused(i):
            t = gguf.TokenType.UNUSED
        elif sp.is_byte(i):
            t = gguf.TokenType.BYTE
        types.append(t)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(sp.bos_id())
    w.add_eos_token_id(sp.eos_id())
    w.add_unk_token_id(sp.unk_id())
    w.add_add_space_prefix(True)


def write_mixtral_gguf(src, path):
    """A Hugging Face Mixtral folder as llama.cpp's convert_hf_to_gguf.py
    writes it (architecture `llama`; q and k rows permuted; experts stacked
    per layer into ffn_{gate,down,up}_exps), fp32 tensors (norms and the
    router too). Written here from llama.cpp's conventions, independently of
    moe's reader and converter."""
    from safetensors.numpy import load_file
    with open(os.path.join(src, "config.json")) as f:
        c = json.load(f)
    t = load_file(os.path.join(src, "model.safetensors"))
    n_head, n_kv = c["num_attention_heads"], c["num_key_value_heads"]
    head_dim = c.get("head_dim") or c["hidden_size"] // n_head
    w = gguf.GGUFWriter(path, arch="llama")
    w.add_name(os.path.basename(src))
    w.add_vocab_size(c["vocab_size"])
    w.add_context_length(c["max_position_embeddings"])
    w.add_embedding_length(c["hidden_size"])
    w.add_block_count(c["num_hidden_layers"])
    w.add_feed_forward_length(c["intermediate_size"])
    w.add_rope_dimension_count(head_dim)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_layer_norm_rms_eps(c["rms_norm_eps"])
    w.add_rope_freq_base(c["rope_theta"])
    w.add_expert_count(c["num_local_experts"])
    w.add_expert_used_count(c["num_experts_per_tok"])
    w.add_file_type(0)  # all F32
    add_mixtral_tensors(w, t, c["num_hidden_layers"], n_head, n_kv, c["num_local_experts"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


SPM_CORPUS = """A mixture of experts routes each token to a few of its experts.
Die Straße ist naß, über Brücken fährt der Zug. Ça coûte 5 €.
def route(x): return top_k(softmax(x @ W), k=2)  # routing
The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9 10 100 1000 3.14159
"""
SPM_STRINGS = ["Hello world", " leading space", "double  space", "tabs\tand\nnewlines", "Straße über Brücken",
               "emoji 🙂 and 漢字", "def f(x): return x**2", "12345 + 678 = 13023", "", " ", "ÿ\u0001 control"]


def write_spm_vocab(model_path, gguf_path):
    """A SentencePiece BPE tokenizer with byte fallback and Llama's settings, trained here, and a
    vocab-only GGUF of it written as convert_hf_to_gguf.py's
    _set_vocab_sentencepiece writes one (tokenizer.ggml.model = llama:
    tokens, scores, token types, special ids, add_space_prefix)."""
    import io
    import sentencepiece as spm
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(SPM_CORPUS.splitlines() * 4), model_writer=model,
                                   vocab_size=400, model_type="bpe", byte_fallback=True, character_coverage=1.0,
                                   unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, minloglevel=2,
                                   hard_vocab_limit=False,
                                   # Llama's and Mistral's tokenizer.model settings: no normalisation,
                                   # whitespace kept, digits split, a dummy prefix space
                                   normalization_rule_name="identity", remove_extra_whitespaces=False,
                                   add_dummy_prefix=True, split_digits=True, allow_whitespace_only_pieces=True)
    with open(model_path, "wb") as f:
        f.write(model.getvalue())
    sp = spm.SentencePieceProcessor(model_file=model_path)
    w = gguf.GGUFWriter(gguf_path, arch="llama")
    add_spm_vocab(w, sp)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return {"strings": SPM_STRINGS, "ids": [sp.encode(t) for t in SPM_STRINGS]}


def write_mixtral_with_vocab(spm_model, safetensors_path, gguf_path):
    """A tiny Mixtral with seeded random fp32 weights whose vocabulary is
    spm_model's: its weights (safetensors, Hugging Face names) and the GGUF
    llama.cpp would write of it, weights and tokenizer together."""
    import sentencepiece as spm
    from safetensors.numpy import save_file
    sp = spm.SentencePieceProcessor(model_file=spm_model)
    V, H, F, E, heads, kv = sp.vocab_size(), 32, 64, 2, 4, 2
    hd = H // heads
    rng = np.random.default_rng(3)
    r = lambda *shape: (rng.standard_normal(shape) * 0.1).astype(np.float32)
    t = {"model.embed_tokens.weight": r(V, H), "model.norm.weight": 1 + r(H), "lm_head.weight": r(V, H)}
    p = "model.layers.0."
    t.update({p + "input_layernorm.weight": 1 + r(H), p + "post_attention_layernorm.weight": 1 + r(H),
              p + "self_attn.q_proj.weight": r(heads * hd, H), p + "self_attn.k_proj.weight": r(kv * hd, H),
              p + "self_attn.v_proj.weight": r(kv * hd, H), p + "self_attn.o_proj.weight": r(H, heads * hd),
              p + "block_sparse_moe.gate.weight": r(E, H)})
    for e in range(E):
        t.update({p + f"block_sparse_moe.experts.{e}.w1.weight": r(F, H), p + f"block_sparse_moe.experts.{e}.w2.weight": r(H, F),
                  p + f"block_sparse_moe.experts.{e}.w3.weight": r(F, H)})
    save_file(t, safetensors_path)
    w = gguf.GGUFWriter(gguf_path, arch="llama")
    for k, v in (("vocab_size", V), ("context_length", 256), ("embedding_length", H), ("block_count", 1),
                 ("feed_forward_length", F), ("rope.dimension_count", hd), ("attention.head_count", heads),
                 ("attention.head_count_kv", kv), ("expert_count", E), ("expert_used_count", 2)):
        w.add_uint32("llama." + k, v)
    w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    w.add_float32("llama.rope.freq_base", 10000.0)
    add_spm_vocab(w, sp)
    add_mixtral_tensors(w, t, 1, heads, kv, E)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def describe(path):
    r = gguf.GGUFReader(path)
    meta = {}
    for f in r.fields.values():
        if f.name.startswith("GGUF."):
            continue
        types = [t.name for t in f.types]
        value = f.contents()
        if types[-1] == "FLOAT32":  # as the file holds them (a JSON double is exact for a float32)
            value = [float(np.float32(v)) for v in value] if isinstance(value, list) else float(np.float32(value))
        meta[f.name] = {"types": types, "value": value}
    tensors = []
    for t in r.tensors:
        raw = bytes(np.asarray(t.data).tobytes())
        values = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32).ravel()
        tensors.append({
            "name": t.name,
            "type": int(t.tensor_type),
            "type_name": t.tensor_type.name,
            "ne": [int(n) for n in t.shape],
            "offset": int(t.data_offset - r.data_offset) if hasattr(r, "data_offset") else None,
            "nbytes": int(t.n_bytes),
            "hex": raw.hex(),
            "values": [float(v) for v in values],
        })
    return {"generator": "tests/cases/make_gguf_cases.py", "gguf": importlib.metadata.version("gguf"),
            "alignment": r.alignment, "metadata": meta, "tensors": tensors}


def main():
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "tiny_v3.gguf")
    write_tiny(path)
    with open(os.path.join(OUT, "tiny_v3.expected.json"), "w") as f:
        json.dump(describe(path), f, indent=1, ensure_ascii=False)
        f.write("\n")
    write_dequant_cases(os.path.join(OUT, "dequant.safetensors"))
    write_quant_cases(os.path.join(OUT, "quant.safetensors"))
    spm_expected = write_spm_vocab(os.path.join(OUT, "spm_bpe.model"), os.path.join(OUT, "spm_vocab.gguf"))
    with open(os.path.join(OUT, "spm_vocab.expected.json"), "w") as f:
        json.dump(spm_expected, f, indent=1, ensure_ascii=False)
        f.write("\n")
    write_mixtral_with_vocab(os.path.join(OUT, "spm_bpe.model"), os.path.join(OUT, "mixtral_spm.safetensors"),
                             os.path.join(OUT, "mixtral_spm.gguf"))
    write_mixtral_gguf(os.path.join(HERE, "..", "data", "golden", "models", "mixtral_tiny_f32"),
                       os.path.join(OUT, "mixtral_tiny_f32.gguf"))
    with open(MANIFEST) as f:
        manifest = json.load(f)
    for name in sorted(os.listdir(OUT)):
        with open(os.path.join(OUT, name), "rb") as f:
            manifest["sha256"]["gguf/" + name] = hashlib.sha256(f.read()).hexdigest()
    manifest["sha256"] = dict(sorted(manifest["sha256"].items()))
    with open(MANIFEST, "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
