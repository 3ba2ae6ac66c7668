#!/usr/bin/env python3
"""A byte-level BPE vocabulary (GPT-2's scheme, SmolLM's pre-tokenizer) as
a vocab-only GGUF, and how llama.cpp tokenises a set of strings with it:

    build/hf-venv/bin/pip install tokenizers gguf llama-cpp-python numpy
    build/hf-venv/bin/python tests/cases/make_bpe_cases.py

HF `tokenizers` trains the vocabulary (600 tokens: 256 bytes, merges, and
three control tokens) on a small mixed text, with the pre-tokenizer
SmolLM2's tokenizer.json has (digits one by one, then GPT-2's byte-level
split); the gguf package writes it as convert_hf_to_gguf.py writes a `gpt2`
vocabulary (tokenizer.ggml.pre = smollm); llama.cpp (llama-cpp-python,
vocab only) gives the token ids of each string, plain and with special
tokens parsed, and `tokenizers` gives its own for comparison. Writes
tests/data/cases/gguf/bpe_vocab.gguf, bpe_vocab.tokenizer.json (the
tokenizer as HF saves it) and bpe_vocab.expected.json.
"""
import json
import os

import gguf
import numpy as np
from llama_cpp import Llama
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "data", "cases", "gguf")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = """A mixture of experts layer replaces the dense feed forward network of a transformer.
A router looks at each token and sends it to two of eight experts; don't worry, it'll learn.
def route(x):\n    return softmax(x @ W_g.T)[:, :2]  # top-2 of 8
Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 3.14159 2026-12-07 42%
Straße über Brücken, naïve café, 東京 中文 日本語, Ελληνικά, русский текст, emoji 🙂🚀👍🏽
Tabs\tand  double  spaces,\r\nnewlines\n\nand trailing spaces   
"""
STRINGS = ["Hello world", "  two  spaces\tand\nnewline", "x = 12345 + 6.78", "Straße über 🙂 中文",
           "don't I'll WE'RE", "   leading and trailing   ", "\n\n\n", "a\u00a0b\u3000c", "ǅ𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
           "<|im_start|>user\nhi<|im_end|>", "<|endoftext|>", "", "x" * 40, "tiếng Việt, العربية, हिन्दी"]


def main():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([CORPUS] * 20, trainer)
    vocab = tok.get_vocab()
    tokens = [None] * len(vocab)
    for t, i in vocab.items():
        tokens[i] = t
    merges = [" ".join(m) for m in json.loads(tok.to_str())["model"]["merges"]]
    types = [gguf.TokenType.CONTROL if t in SPECIALS else gguf.TokenType.NORMAL for t in tokens]

    tok.save(os.path.join(OUT, "bpe_vocab.tokenizer.json"))  # the same vocabulary as transformers ships it
    path = os.path.join(OUT, "bpe_vocab.gguf")
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_embedding_length(64)
    w.add_feed_forward_length(64)
    w.add_head_count(1)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(vocab["<|im_start|>"])
    w.add_eos_token_id(vocab["<|im_end|>"])
    w.add_unk_token_id(vocab["<|endoftext|>"])
    w.add_add_bos_token(False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    llm = Llama(model_path=path, vocab_only=True, verbose=False)
    cases = []
    for s in STRINGS:
        plain = llm.tokenize(s.encode(), add_bos=False, special=False)
        special = llm.tokenize(s.encode(), add_bos=False, special=True)
        hf = tok.encode(s).ids  # tokenizers parses its special tokens always
        cases.append({"text": s, "ids": plain, "ids_special": special, "tokenizers_ids": hf,
                      "decoded": llm.detokenize(plain).decode("utf-8", "replace")})
    with open(os.path.join(OUT, "bpe_vocab.expected.json"), "w") as f:
        json.dump({"vocab_size": len(tokens), "merges": len(merges), "cases": cases}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    agree = sum(c["ids_special"] == c["tokenizers_ids"] for c in cases)
    print(f"wrote {path}: {len(tokens)} tokens, {len(merges)} merges; llama.cpp and tokenizers agree on "
          f"{agree} of {len(cases)} strings")




def write_spm_json_cases():
    """spm_bpe.model (SentencePiece BPE, byte fallback) as the tokenizer.json
    transformers 5 saves for it, and the ids HF tokenizers gives a set of
    strings under that file and under the two older layouts of the same
    tokenizer (Metaspace with prepend_scheme "first"; Prepend and Replace
    normalizers), and SentencePiece's own ids."""
    import tempfile
    import shutil
    import sentencepiece as spm
    import transformers
    from tokenizers import Tokenizer as Tk
    model = os.path.join(OUT, "spm_bpe.model")
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(model, os.path.join(tmp, "tokenizer.model"))
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump({"model_type": "llama"}, f)
        transformers.AutoTokenizer.from_pretrained(tmp).save_pretrained(os.path.join(tmp, "out"))
        with open(os.path.join(tmp, "out", "tokenizer.json")) as f:
            saved = json.load(f)
    with open(os.path.join(OUT, "spm_bpe.tokenizer.json"), "w") as f:
        json.dump(saved, f, ensure_ascii=False, indent=1)
        f.write("\n")
    first = json.loads(json.dumps(saved))
    first["normalizer"] = None
    first["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False}
    legacy = json.loads(json.dumps(saved))
    legacy["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"}, {
        "type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}
    legacy["pre_tokenizer"] = None
    layouts = {"saved": saved, "metaspace_first": first, "prepend_replace": legacy}
    sp = spm.SentencePieceProcessor(model_file=model)
    strings = STRINGS + ["<s>Hi</s> there", "\nnewline first", " one leading space", "Ünïcödé ⅷ 𝔘"]
    cases = []
    for s in strings:
        c = {"text": s, "sentencepiece": sp.encode(s)}
        for name, layout in layouts.items():
            c[name] = Tk.from_str(json.dumps(layout)).encode(s).ids
        cases.append(c)
    with open(os.path.join(OUT, "spm_bpe.tokenizer.expected.json"), "w") as f:
        json.dump({"layouts": {k: {"normalizer": v["normalizer"], "pre_tokenizer": v["pre_tokenizer"]}
                               for k, v in layouts.items()}, "cases": cases}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    same = sum(c["saved"] == c["sentencepiece"] for c in cases)
    print(f"wrote spm_bpe.tokenizer.json: transformers' layout gives SentencePiece's ids on {same} of {len(cases)}")


if __name__ == "__main__":
    main()
    write_spm_json_cases()
