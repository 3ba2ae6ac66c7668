#!/usr/bin/env python3
"""The token ids of chat prompts: moe-mixtral's against transformers'.

For a model folder (or several), transformers' AutoTokenizer renders each
conversation below with the folder's chat template
(apply_chat_template(..., add_generation_prompt=True)) and tokenises it;
`moe-mixtral tokenize --special --no-bos` tokenises the same rendered text,
as `moe-mixtral chat` does. The ids must be equal. By hand (needs
transformers, e.g. build/hf-venv from tests/hf_parity/run.sh):

    build/default/bin/moe-mixtral make-tiny --out build/tiny-mixtral
    build/hf-venv/bin/python tests/hf_parity/check_chat_tokens.py build/tiny-mixtral
"""
import argparse
import os
import subprocess
import sys

import transformers

HERE = os.path.dirname(os.path.abspath(__file__))
CONVERSATIONS = [
    [{"role": "user", "content": "Tell me about experts"}],
    [{"role": "user", "content": "Hello there"}, {"role": "assistant", "content": "Hi! How are you?"},
     {"role": "user", "content": "What are experts? 123 ünï 🙂"}],
    [{"role": "user", "content": "  spaces  around  "}, {"role": "assistant", "content": "\nnew line\n"},
     {"role": "user", "content": "tabs\tand\ttext"}],
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+", help="Hugging Face folders with a chat template")
    ap.add_argument("--moe-mixtral", default=os.path.join(HERE, "..", "..", "build", "default", "bin", "moe-mixtral"))
    a = ap.parse_args()
    bad = 0
    for model in a.models:
        tok = transformers.AutoTokenizer.from_pretrained(model)
        for i, messages in enumerate(CONVERSATIONS):
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            ids = tok(text, add_special_tokens=False)["input_ids"]
            out = subprocess.run([a.moe_mixtral, "tokenize", "--model", model, "--prompt", text, "--special", "--no-bos"],
                                 capture_output=True, text=True, check=True).stdout
            ours = [int(t) for t in out.strip().rsplit(":", 1)[1].split(",")]
            same = ours == ids
            bad += not same
            print(f"{model} conversation {i}: {len(ids)} tokens, {'same' if same else 'DIFFERENT'}")
            if not same:
                print("  transformers:", ids)
                print("  moe-mixtral: ", ours)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
