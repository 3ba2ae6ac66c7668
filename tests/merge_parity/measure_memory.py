#!/usr/bin/env python3
"""Peak resident memory of moe-merge on four larger generated dense models.

Writes four random bfloat16 Mistral models (hidden 2048, FFN 5632, 8 layers,
vocabulary 32000: about 1 GB each) with safetensors, merges them with
moe-merge in the hidden gate mode (the base model runs on the prompts) and
in the random mode, under /usr/bin/time -v, and prints the peak resident
set size against the models' total size.

Usage: build/hf-venv/bin/python tests/merge_parity/measure_memory.py
         --moe-merge build/default/bin/moe-merge --tokenizer DIR_WITH_tokenizer.model --work DIR
"""
import argparse
import json
import os
import re
import shutil
import subprocess

import torch
from safetensors.torch import save_file

H, I, L, V, HEADS, KV = 2048, 5632, 8, 32000, 16, 4


def make_model(d, seed, tokenizer):
    os.makedirs(d, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: (torch.randn(*shape, generator=g) * 0.02).to(torch.bfloat16)
    hd = H // HEADS
    t = {"model.embed_tokens.weight": r(V, H), "model.norm.weight": torch.ones(H, dtype=torch.bfloat16),
         "lm_head.weight": r(V, H)}
    for l in range(L):
        p = f"model.layers.{l}."
        t.update({p + "input_layernorm.weight": torch.ones(H, dtype=torch.bfloat16),
                  p + "post_attention_layernorm.weight": torch.ones(H, dtype=torch.bfloat16),
                  p + "self_attn.q_proj.weight": r(HEADS * hd, H), p + "self_attn.k_proj.weight": r(KV * hd, H),
                  p + "self_attn.v_proj.weight": r(KV * hd, H), p + "self_attn.o_proj.weight": r(H, HEADS * hd),
                  p + "mlp.gate_proj.weight": r(I, H), p + "mlp.up_proj.weight": r(I, H),
                  p + "mlp.down_proj.weight": r(H, I)})
    save_file(t, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({"architectures": ["MistralForCausalLM"], "model_type": "mistral", "vocab_size": V,
                   "hidden_size": H, "intermediate_size": I, "num_hidden_layers": L, "num_attention_heads": HEADS,
                   "num_key_value_heads": KV, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
                   "rope_theta": 10000.0, "sliding_window": None, "tie_word_embeddings": False,
                   "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu"}, f)
    shutil.copy(os.path.join(tokenizer, "tokenizer.model"), d)
    return os.path.getsize(os.path.join(d, "model.safetensors"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moe-merge", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--work", required=True)
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    dirs = [os.path.join(args.work, f"m{i}") for i in range(4)]
    total = sum(make_model(d, i, args.tokenizer) for i, d in enumerate(dirs))
    prompts = [["chat", "assistant", "tell me", "explain", "I want"],
               ["code", "python", "javascript", "programming", "algorithm"],
               ["storywriting", "write", "scene", "story", "character"],
               ["reason", "math", "mathematics", "solve", "count"]]
    print(f"four models, {total / 1e9:.2f} GB in all ({total / 4e9:.2f} GB each)")
    for mode in ("hidden", "random"):
        cfg = os.path.join(args.work, f"{mode}.yml")
        with open(cfg, "w") as f:
            f.write(f"base_model: {dirs[0]}\ngate_mode: {mode}\ndtype: bfloat16\nexperts:\n")
            for d, p in zip(dirs, prompts):
                f.write(f"  - source_model: {d}\n    positive_prompts: {json.dumps(p)}\n")
        out = os.path.join(args.work, f"out-{mode}")
        shutil.rmtree(out, ignore_errors=True)
        r = subprocess.run(["/usr/bin/time", "-v", args.moe_merge, cfg, out, "--out-shard-size", "1B"],
                           capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(r.stdout + r.stderr)
        rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1)) * 1024
        wall = re.search(r"Elapsed \(wall clock\) time.*: (\S+)", r.stderr).group(1)
        written = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out) if f.endswith(".safetensors"))
        print(f"{mode:>6}: peak RSS {rss / 1e6:.0f} MB = {100 * rss / total:.1f}% of the inputs, "
              f"{100 * rss / written:.1f}% of the {written / 1e9:.2f} GB written; wall {wall}")
        shutil.rmtree(out)


if __name__ == "__main__":
    main()
