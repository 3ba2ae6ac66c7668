#!/usr/bin/env python3
"""moe-quantize against llama-quantize itself (run by hand; llama-cpp-python
builds llama.cpp from source):

    build/hf-venv/bin/pip install llama-cpp-python gguf numpy safetensors
    build/hf-venv/bin/python tests/gguf_parity/check_quantize.py --bin build/default/bin

Two random checkpoints with rows of whole k-quant blocks (256 values): a
Mixtral (8 layers, 8 experts: llama.cpp's rules for 8-expert models) and a
dense Mistral (8 layers, grouped-query attention 4:1). moe-quantize writes
each as F32 and as every k-quant mix and legacy type; llama.cpp's own
llama_model_quantize quantises the F32 file to the same file type. Every
tensor must have the same ggml type and the same bytes, and the files the
same general.file_type. --keep DIR keeps the files (check_llama_cpp.py
--extra DIR then runs them beside llama.cpp).
"""
import argparse
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import llama_cpp
from gguf import GGUFReader
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
SPM = os.path.join(HERE, "..", "data", "cases", "gguf", "spm_bpe.model")  # 400 pieces, byte fallback
MIXES = ["q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "q6_k", "q5_k_m", "q5_k_s", "q4_k_m", "q4_k_s", "q3_k_l",
         "q3_k_m", "q3_k_s", "q2_k"]


def write_model(path, seed, experts, heads, kv_heads, layers=8, hidden=256, ffn=256, vocab=400):
    """A Hugging Face folder of random weights (HF's init: normal(0, 0.02))."""
    rng = np.random.default_rng(seed)
    w = lambda *s: (rng.standard_normal(s) * 0.02).astype(np.float32)
    head_dim = hidden // heads
    t = {"model.embed_tokens.weight": w(vocab, hidden), "model.norm.weight": np.ones(hidden, np.float32),
         "lm_head.weight": w(vocab, hidden) * 10}  # logits of a few units, as a trained model's
    for i in range(layers):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = (1 + rng.standard_normal(hidden) * 0.1).astype(np.float32)
        t[p + "post_attention_layernorm.weight"] = (1 + rng.standard_normal(hidden) * 0.1).astype(np.float32)
        t[p + "self_attn.q_proj.weight"] = w(heads * head_dim, hidden)
        t[p + "self_attn.k_proj.weight"] = w(kv_heads * head_dim, hidden)
        t[p + "self_attn.v_proj.weight"] = w(kv_heads * head_dim, hidden)
        t[p + "self_attn.o_proj.weight"] = w(hidden, heads * head_dim)
        if experts > 1:
            t[p + "block_sparse_moe.gate.weight"] = w(experts, hidden) * 10
            for e in range(experts):
                q = f"{p}block_sparse_moe.experts.{e}."
                t[q + "w1.weight"], t[q + "w3.weight"], t[q + "w2.weight"] = w(ffn, hidden), w(ffn, hidden), w(hidden, ffn)
        else:
            t[p + "mlp.gate_proj.weight"], t[p + "mlp.up_proj.weight"] = w(ffn, hidden), w(ffn, hidden)
            t[p + "mlp.down_proj.weight"] = w(hidden, ffn)
    os.makedirs(path, exist_ok=True)
    save_file(t, os.path.join(path, "model.safetensors"))
    config = {"architectures": ["MixtralForCausalLM" if experts > 1 else "MistralForCausalLM"],
              "model_type": "mixtral" if experts > 1 else "mistral", "vocab_size": vocab, "hidden_size": hidden,
              "intermediate_size": ffn, "num_hidden_layers": layers, "num_attention_heads": heads,
              "num_key_value_heads": kv_heads, "head_dim": head_dim, "hidden_act": "silu",
              "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 1e6, "tie_word_embeddings": False,
              "torch_dtype": "float32", "bos_token_id": 1, "eos_token_id": 2}
    if experts > 1:
        config.update(num_local_experts=experts, num_experts_per_tok=2)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    shutil.copy(SPM, os.path.join(path, "tokenizer.model"))


def tensors(path):
    r = GGUFReader(path)
    ftype = int(r.fields["general.file_type"].parts[-1][0])
    return ftype, {t.name: (t.tensor_type.name, bytes(np.asarray(t.data).view(np.uint8).reshape(-1))) for t in r.tensors}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "..", "build", "default", "bin"))
    ap.add_argument("--mixes", default=",".join(MIXES))
    ap.add_argument("--keep", help="keep the files in this folder")
    a = ap.parse_args()
    quantize = os.path.join(a.bin, "moe-quantize")
    failures = 0
    tmp = a.keep or tempfile.mkdtemp()
    os.makedirs(tmp, exist_ok=True)
    for model, kw in (("mixtral-8x", dict(seed=1, experts=8, heads=4, kv_heads=2)),
                      ("mistral", dict(seed=2, experts=1, heads=8, kv_heads=2))):
        folder = os.path.join(tmp, model)
        write_model(folder, **kw)
        f32 = os.path.join(tmp, f"{model}.f32.gguf")
        subprocess.run([quantize, folder, f32, "--type", "f32"], check=True, stdout=subprocess.DEVNULL)
        for mix in a.mixes.split(","):
            ours, theirs = (os.path.join(tmp, f"{model}.{mix}.{who}.gguf") for who in ("moe", "llama"))
            subprocess.run([quantize, folder, ours, "--type", mix], check=True, stdout=subprocess.DEVNULL)
            params = llama_cpp.llama_model_quantize_default_params()
            params.ftype = getattr(llama_cpp, "LLAMA_FTYPE_MOSTLY_" + mix.upper())
            params.nthread = 2
            rc = llama_cpp.llama_model_quantize(f32.encode(), theirs.encode(), ctypes.byref(params))
            assert rc == 0, f"llama_model_quantize failed on {mix}"
            (ft_ours, ours_t), (ft_theirs, theirs_t) = tensors(ours), tensors(theirs)
            types = {}
            differ = []
            for name, (ty, data) in theirs_t.items():
                types[ty] = types.get(ty, 0) + 1
                got = ours_t.get(name)
                if got is None or got[0] != ty or got[1] != data:
                    differ.append(f"{name}: llama.cpp {ty}, moe {got[0] if got else 'missing'}"
                                  f"{'' if got is None or got[0] != ty else ' (bytes differ)'}")
            differ += [f"{n}: only in moe" for n in ours_t if n not in theirs_t]
            ok = not differ and ft_ours == ft_theirs
            failures += not ok
            summary = ", ".join(f"{n} {t}" for t, n in sorted(types.items()))
            print(f"{model:11s} {mix:7s} file_type {ft_ours}/{ft_theirs}  {len(theirs_t)} tensors ({summary}): "
                  f"{'same types and bytes' if ok else 'DIFFER'}")
            for d in differ[:6]:
                print("    ", d)
    if not a.keep:
        shutil.rmtree(tmp)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
