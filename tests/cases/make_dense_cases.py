#!/usr/bin/env python3
"""Writes tests/data/cases/models/: tiny dense Mistral and Llama checkpoints
saved by transformers itself, each with an expected.safetensors in the
golden `model` format (../golden/README.md section 6) computed by
transformers' MistralForCausalLM / LlamaForCausalLM in float32, eager
attention: input_ids, embeddings, per layer attn_out / moe_out (the FFN's
output) / hidden_out, final_norm, logits, and 16 greedy tokens with their
logits (recomputed over the whole prefix at each step, no KV cache).

Needs torch and transformers (tests/hf_parity/run.sh installs them into
build/hf-venv); run by hand, then commit the folder and the MANIFEST.json
that tests/cases/make_cases.py rewrites:
    build/hf-venv/bin/python tests/cases/make_dense_cases.py
    python3 tests/cases/make_cases.py    # (numpy) refreshes MANIFEST.json
"""
import json
import os
import shutil

import torch
import transformers
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(os.path.dirname(HERE), "data", "cases", "models")

CASES = [
    # name, class, config, stored dtype, prompt length, seed
    ("mistral_tiny_window8_f32", MistralConfig, MistralForCausalLM,
     dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
          num_key_value_heads=2, sliding_window=8, max_position_embeddings=256), torch.float32, 20, 7),
    ("llama_tiny_tied_bf16", LlamaConfig, LlamaForCausalLM,
     dict(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
          num_key_value_heads=1, tie_word_embeddings=True, max_position_embeddings=256), torch.bfloat16, 16, 8),
]
NEW_TOKENS = 16


def build(config_cls, model_cls, overrides, dtype, seed):
    torch.manual_seed(seed)
    config = config_cls(**overrides, initializer_range=0.1, attn_implementation="eager", bos_token_id=1,
                        eos_token_id=2)
    model = model_cls(config).eval()
    with torch.no_grad():  # non-trivial norms, so that a skipped or transposed scale would show
        for name, p in model.named_parameters():
            if name.endswith("layernorm.weight") or name == "model.norm.weight":
                p.copy_(1 + 0.1 * torch.randn_like(p))
    return model.to(dtype)


def trace(model, ids):
    """One float32 forward with every intermediate the golden format names."""
    layers = model.model.layers
    seen = {}
    hooks = []
    for l, layer in enumerate(layers):
        hooks.append(layer.self_attn.register_forward_hook(
            lambda m, i, o, l=l: seen.__setitem__(f"layers.{l}.attn_out", o[0] if isinstance(o, tuple) else o)))
        hooks.append(layer.mlp.register_forward_hook(lambda m, i, o, l=l: seen.__setitem__(f"layers.{l}.moe_out", o)))
        hooks.append(layer.register_forward_hook(
            lambda m, i, o, l=l: seen.__setitem__(f"layers.{l}.hidden_out", o[0] if isinstance(o, tuple) else o)))
    hooks.append(model.model.norm.register_forward_hook(lambda m, i, o: seen.__setitem__("final_norm", o)))
    hooks.append(model.model.embed_tokens.register_forward_hook(lambda m, i, o: seen.__setitem__("embeddings", o)))
    with torch.no_grad():
        out = model(torch.tensor([ids]), use_cache=False)
    for h in hooks:
        h.remove()
    result = {k: v[0].float().contiguous() for k, v in seen.items()}
    result["logits"] = out.logits[0].float().contiguous()
    return result


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, config_cls, model_cls, overrides, dtype, seq, seed in CASES:
        stored = build(config_cls, model_cls, overrides, dtype, seed)
        folder = os.path.join(OUT, name)
        shutil.rmtree(folder, ignore_errors=True)
        stored.save_pretrained(folder)
        # Loaded back as a user would, in float32: the stored weights upcast
        # exactly, and RoPE's inverse frequencies computed afresh in float32
        # (a model cast to bf16 and back carries bf16-rounded ones).
        model = model_cls.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(3, overrides["vocab_size"], (seq,), generator=g).tolist()
        expected = trace(model, ids)
        greedy, greedy_logits, prefix, gap = [], [], list(ids), float("inf")
        for _ in range(NEW_TOKENS):
            with torch.no_grad():
                last = model(torch.tensor([prefix]), use_cache=False).logits[0, -1].float()
            top = torch.topk(last, 2).values
            gap = min(gap, float(top[0] - top[1]))
            greedy_logits.append(last)
            greedy.append(int(torch.argmax(last)))
            prefix.append(greedy[-1])
        assert gap >= 1e-3, (name, gap)  # no near-tie in any greedy step
        expected["input_ids"] = torch.tensor(ids, dtype=torch.int32)
        expected["greedy_ids"] = torch.tensor(greedy, dtype=torch.int32)
        expected["greedy_logits"] = torch.stack(greedy_logits).contiguous()
        c = stored.config
        metadata = {"kind": "model", "seed": str(seed), "generator": "tests/cases/make_dense_cases.py (transformers "
                    + transformers.__version__ + ", torch " + torch.__version__ + ", float32 eager)",
                    "model_type": c.model_type, "weight_dtype": str(dtype).replace("torch.", ""),
                    "seq": str(seq), "new_tokens": str(NEW_TOKENS), "min_greedy_gap": repr(gap)}
        save_file(expected, os.path.join(folder, "expected.safetensors"), metadata=metadata)
        for extra in ("generation_config.json",):
            if os.path.exists(os.path.join(folder, extra)):
                os.remove(os.path.join(folder, extra))
        print(name, sorted(os.listdir(folder)), "min greedy gap", gap)


if __name__ == "__main__":
    main()
