#!/usr/bin/env python3
"""Log-likelihood cases: transformers scores continuations after contexts on
the golden tiny checkpoints as lm-evaluation-harness's HF model does (one
forward over context + continuation, the continuation's log-softmax
gathered, summed; greedy when each token is the argmax), over seeded random
token ids: several contexts, each with four choices of 1 to 6 tokens.

    build/hf-venv/bin/python tests/cases/make_loglikelihood_cases.py
    python3 tests/cases/make_cases.py     # refreshes MANIFEST.json

Writes tests/data/cases/eval/loglikelihood.json for test-perplexity.
"""
import json
import os

import torch
import transformers

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(HERE, "..", "data", "golden", "models")
OUT = os.path.join(HERE, "..", "data", "cases", "eval")


def main():
    os.makedirs(OUT, exist_ok=True)
    g = torch.Generator().manual_seed(12)
    items = []
    for name in ["mixtral_tiny_f32", "mixtral_tiny_sliding_f32"]:
        model = transformers.AutoModelForCausalLM.from_pretrained(os.path.join(MODELS, name), dtype=torch.float32)
        model.eval()
        vocab = model.config.vocab_size
        for n_context in (1, 5, 20):
            context = torch.randint(0, vocab, (n_context,), generator=g).tolist()
            choices = [torch.randint(0, vocab, (n,), generator=g).tolist() for n in (1, 3, 6, 2)]
            scored = []
            for c in choices:
                with torch.no_grad():
                    logits = model(torch.tensor([context + c])).logits[0].double()
                logp = torch.log_softmax(logits, dim=-1)[len(context) - 1:-1]
                cont = torch.tensor(c)
                scored.append({"sum": float(logp.gather(1, cont[:, None]).sum()),
                               "greedy": bool((logp.argmax(-1) == cont).all())})
            items.append({"model": name, "context": context, "choices": choices, "scores": scored})
    with open(os.path.join(OUT, "loglikelihood.json"), "w") as f:
        json.dump({"generator": "tests/cases/make_loglikelihood_cases.py", "transformers": transformers.__version__,
                   "items": items}, f, indent=1)
        f.write("\n")
    print(len(items), "items")


if __name__ == "__main__":
    main()
