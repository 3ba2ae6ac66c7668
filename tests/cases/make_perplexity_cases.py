#!/usr/bin/env python3
"""Perplexity cases: transformers computes sliding-window perplexity on the
golden tiny checkpoints exactly as its documentation's recipe does
("Perplexity of fixed-length models": windows of max_length tokens every
`stride`, labels masked to the tokens the previous window did not reach,
each window's loss weighted by its valid labels less one), over seeded
random token ids, for several (context, stride) pairs.

    build/hf-venv/bin/python tests/cases/make_perplexity_cases.py
    python3 tests/cases/make_cases.py     # refreshes MANIFEST.json

Writes tests/data/cases/perplexity/cases.json; test-perplexity checks
moe::mixtral::perplexity against it (1e-4 relative).
"""
import json
import os

import torch
import transformers

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(HERE, "..", "data", "golden", "models")
OUT = os.path.join(HERE, "..", "data", "cases", "perplexity")


def docs_perplexity(model, ids, max_length, stride):
    """The recipe of transformers' docs/source/en/perplexity.md, unchanged."""
    encodings = torch.tensor([ids])
    seq_len = encodings.size(1)
    nll_sum, n_tokens, prev_end_loc = 0.0, 0, 0
    for begin_loc in range(0, seq_len, stride):
        end_loc = min(begin_loc + max_length, seq_len)
        trg_len = end_loc - prev_end_loc
        input_ids = encodings[:, begin_loc:end_loc]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            neg_log_likelihood = model(input_ids, labels=target_ids).loss
        num_valid_tokens = (target_ids != -100).sum().item()
        num_loss_tokens = num_valid_tokens - target_ids.size(0)
        nll_sum += neg_log_likelihood.double() * num_loss_tokens
        n_tokens += num_loss_tokens
        prev_end_loc = end_loc
        if end_loc == seq_len:
            break
    return float(torch.exp(nll_sum / n_tokens)), float(nll_sum / n_tokens)


def main():
    os.makedirs(OUT, exist_ok=True)
    g = torch.Generator().manual_seed(11)
    cases = []
    for name in ["mixtral_tiny_f32", "mixtral_tiny_sliding_f32"]:
        model = transformers.AutoModelForCausalLM.from_pretrained(os.path.join(MODELS, name), dtype=torch.float32)
        model.eval()
        vocab = model.config.vocab_size
        ids = torch.randint(0, vocab, (45,), generator=g).tolist()
        for context, stride in [(45, 45), (16, 16), (16, 8), (16, 5), (12, 12)]:
            ppl, nll = docs_perplexity(model, ids, context, stride)
            cases.append({"model": name, "ids": ids, "context": context, "stride": stride, "perplexity": ppl,
                          "mean_nll": nll})
            print(name, context, stride, ppl)
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump({"generator": "tests/cases/make_perplexity_cases.py", "transformers": transformers.__version__,
                   "torch": torch.__version__, "cases": cases}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
