#!/usr/bin/env python3
"""moe-mixtral against Hugging Face transformers itself.

Builds several tiny random MixtralForCausalLM models (head counts, kv heads,
sliding windows, dtypes, tied or not, sharded, explicit head_dim, top-k),
saves each with save_pretrained, runs `moe-mixtral logits` on the folder and
compares with transformers' own forward pass and greedy generate().

Transformers runs in float32 on the saved weights (bf16/f16 weights upcast
exactly), eager attention: the same maths moe computes. Run by hand with
tests/hf_parity/run.sh (it installs torch and transformers from PyPI).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import load_file
from transformers import MixtralConfig, MixtralForCausalLM

VARIANTS = [
    # name, config overrides, dtype, seq, shard size
    ("f32_h4_kv2", dict(num_attention_heads=4, num_key_value_heads=2), torch.float32, 20, None),
    ("bf16_h8_kv2_window8", dict(num_attention_heads=8, num_key_value_heads=2, sliding_window=8), torch.bfloat16, 30, None),
    ("f16_tied_h4_kv1_e8", dict(num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=True,
                                num_local_experts=8), torch.float16, 16, None),
    ("bf16_sharded_mha_k1", dict(num_attention_heads=4, num_key_value_heads=4, num_experts_per_tok=1), torch.bfloat16,
     18, "200KB"),
    ("f32_headdim32_theta1e4_k3", dict(num_attention_heads=4, num_key_value_heads=2, head_dim=32, rope_theta=10000.0,
                                       num_experts_per_tok=3), torch.float32, 12, None),
    ("f32_window4_long", dict(num_attention_heads=4, num_key_value_heads=2, sliding_window=4), torch.float32, 40, None),
]


def make_model(overrides, dtype, seed):
    base = dict(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=256,
                rms_norm_eps=1e-5, rope_theta=1e6, sliding_window=None, tie_word_embeddings=False,
                initializer_range=0.1, attn_implementation="eager")
    base.update(overrides)
    torch.manual_seed(seed)
    config = MixtralConfig(**base)
    model = MixtralForCausalLM(config).eval()
    with torch.no_grad():  # non-trivial norms, so that a transposed or skipped scale would show
        for name, p in model.named_parameters():
            if name.endswith("layernorm.weight") or name == "model.norm.weight":
                p.copy_(1 + 0.1 * torch.randn_like(p))
    return model.to(dtype)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moe-mixtral", required=True)
    ap.add_argument("--new-tokens", type=int, default=16)
    args = ap.parse_args()
    worst = 0.0
    failed = 0
    print(f"transformers parity, torch {torch.__version__}")
    for i, (name, overrides, dtype, seq, shard) in enumerate(VARIANTS):
        with tempfile.TemporaryDirectory() as d:
            model = make_model(overrides, dtype, 100 + i)
            kwargs = {"max_shard_size": shard} if shard else {}
            model.save_pretrained(d, safe_serialization=True, **kwargs)
            files = sorted(f for f in os.listdir(d) if f.endswith(".safetensors"))
            ref = MixtralForCausalLM.from_pretrained(d, torch_dtype=torch.float32, attn_implementation="eager").eval()
            g = torch.Generator().manual_seed(7 + i)
            ids = torch.randint(3, ref.config.vocab_size, (1, seq), generator=g)
            with torch.no_grad():
                hf_logits = ref(ids).logits[0]
                hf_greedy = ref.generate(ids, max_new_tokens=args.new_tokens, do_sample=False, eos_token_id=None,
                                         pad_token_id=0, min_new_tokens=args.new_tokens)[0, seq:]
            out = os.path.join(d, "moe.safetensors")
            subprocess.run([args.moe_mixtral, "logits", "--model", d, "--tokens", ",".join(map(str, ids[0].tolist())),
                            "--greedy", str(args.new_tokens), "--out", out], check=True, capture_output=True)
            moe = load_file(out)
            err = ((moe["logits"] - hf_logits).abs().max() / max(1.0, hf_logits.abs().max().item())).item()
            same = moe["greedy_ids"].tolist() == hf_greedy.tolist()
            top2 = hf_logits[-1].topk(2).values
            ok = err <= 1e-4 and same
            failed += not ok
            worst = max(worst, err)
            print(f"{'PASS' if ok else 'FAIL'}  {name:28s} {str(dtype).split('.')[-1]:9s} S={seq:3d} files={len(files)} "
                  f"logits rel err {err:.2e}  greedy {args.new_tokens} ids {'identical' if same else 'DIFFER'}"
                  f"  (last-step top-2 gap {(top2[0] - top2[1]).item():.3g})")
            if not same:
                print("      moe:", moe["greedy_ids"].tolist())
                print("      hf: ", hf_greedy.tolist())
    print(f"{len(VARIANTS) - failed} of {len(VARIANTS)} variants match; worst logits rel err {worst:.2e}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
