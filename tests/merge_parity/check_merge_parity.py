#!/usr/bin/env python3
"""moe-merge against mergekit-moe itself.

Makes tiny dense Mistral and Llama models with transformers (a tokenizer.model
trained by SentencePiece's spm_train in every folder, so both tools read the
same one), writes mergekit-moe YAML configs for each gate mode, runs
`mergekit-moe` and `moe-merge` on every config and compares the outputs
tensor by tensor:

* bit-exact: key sets, shapes, dtypes, every tensor copied from the base or
  an expert (residual_scale included), lm_head absent for a tied base, the
  config.json fields mergekit sets, the copied merge config;
* cheap_embed routers: within 2 float32 ulp of each row's largest value
  (bfloat16: exact);
* hidden / hidden_avg routers: per-row cosine >= 0.999 against mergekit
  (which runs the base in bfloat16), and within 1e-5 of mergekit's own
  averaging code run on a float32 transformers forward;
* random / uniform_random: the law (mean, spread, bound), then mergekit's
  routers fed back through --router-weights: the whole file bit-exact;
* the degenerate-gate warning: the same layers flagged;
* the negative configs: both refuse (exit code != 0), with mergekit's words
  where mergekit has a message.

Then `moe-mixtral logits` runs the merged model and agrees with transformers'
MixtralForCausalLM on it, in both expert layouts.

Run by hand with tests/merge_parity/run.sh (it installs mergekit, torch and
transformers from PyPI).
"""
import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

CORPUS = """You are a helpful chat assistant. Tell me more, explain it, I want to know.
Write code in python and javascript; programming an algorithm is fun.
The story has a scene where a character starts storywriting, and I write.
Reason about math and mathematics, solve the problem, count the numbers 1 2 3.
Translate the sentence into French, German and Spanish for me.
"""

PROMPTS = [  # the seed article's experts, one per source model
    (["chat", "assistant", "tell me", "explain", "I want"], []),
    (["code", "python", "javascript", "programming", "algorithm"], []),
    (["storywriting", "write", "scene", "story", "character"], []),
    (["reason", "math", "mathematics", "solve", "count"], ["write a story"]),
]

failures = []


def check(ok, what):
    print(("  ok    " if ok else "  FAIL  ") + what)
    if not ok:
        failures.append(what)


def run(cmd, **kw):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)


# ---- fixtures ------------------------------------------------------------------


def make_tokenizer(work):
    d = os.path.join(work, "tokenizer")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "corpus.txt"), "w") as f:
        f.write(CORPUS * 8)
    # Llama's settings: BPE, byte fallback, no text normalisation, spaces kept.
    r = run(["spm_train", f"--input={d}/corpus.txt", f"--model_prefix={d}/tokenizer", "--vocab_size=400",
             "--model_type=bpe", "--character_coverage=1.0", "--byte_fallback=true", "--num_threads=1",
             "--normalization_rule_name=identity", "--remove_extra_whitespaces=false", "--hard_vocab_limit=false",
             "--unk_id=0", "--bos_id=1", "--eos_id=2", "--pad_id=-1", "--minloglevel=2"])
    if r.returncode:
        sys.exit("spm_train failed: " + r.stderr)
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
                   "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False}, f)
    import sentencepiece
    return d, sentencepiece.SentencePieceProcessor(model_file=f"{d}/tokenizer.model").vocab_size()


def make_model(work, tok, name, family, seed, vocab, layers=3, tied=False, dtype=torch.float32, shard=None):
    d = os.path.join(work, name)
    cfg = dict(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=layers,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5,
               tie_word_embeddings=tied, initializer_range=0.1, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    model = (MistralForCausalLM(MistralConfig(**cfg, sliding_window=None)) if family == "mistral"
             else LlamaForCausalLM(LlamaConfig(**cfg))).eval()
    with torch.no_grad():
        # Dyadic embeddings (k/256): cheap_embed's sums are exact in float32
        # whatever the order, so the comparison tests the ids and the maths.
        g = torch.Generator().manual_seed(seed + 1000)
        model.model.embed_tokens.weight.copy_(torch.randint(-64, 65, (vocab, 64), generator=g) / 256.0)
        for n, p in model.named_parameters():
            if n.endswith("layernorm.weight") or n == "model.norm.weight":
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
    model.to(dtype).save_pretrained(d, max_shard_size=shard or "5GB")
    for f in ("tokenizer.model", "tokenizer_config.json"):
        shutil.copy(os.path.join(tok, f), d)
    return d


# ---- comparing -----------------------------------------------------------------


def tensors(folder):
    out = {}
    for f in sorted(os.listdir(folder)):
        if f.endswith(".safetensors"):
            with safe_open(os.path.join(folder, f), "pt") as s:
                for k in s.keys():
                    out[k] = s.get_tensor(k)
    return out


def is_router(name):
    return name.endswith("mlp.gate.weight") or name.endswith("block_sparse_moe.gate.weight")


def same_bits(a, b):
    return (a.dtype == b.dtype and a.shape == b.shape
            and torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8)))


def routers(t):
    return {k: v for k, v in t.items() if is_router(k)}


def row_scale_ulps(a, b):
    """Largest |a - b| per row, in float32 ulps of the row's largest |value|."""
    a, b = a.double(), b.double()
    worst = 0.0
    for ra, rb in zip(a, b):
        scale = float(ra.abs().max())
        ulp = math.ldexp(1.0, math.frexp(scale)[1] - 24) if scale > 0 else 1e-45
        worst = max(worst, float((ra - rb).abs().max()) / ulp)
    return worst


def min_cosine(a, b):
    a, b = a.double(), b.double()
    return float(torch.nn.functional.cosine_similarity(a, b, dim=1).min())


def compare_configs(ours, theirs, label):
    with open(os.path.join(ours, "config.json")) as f:
        a = json.load(f)
    with open(os.path.join(theirs, "config.json")) as f:
        b = json.load(f)
    keys = ["architectures", "model_type", "num_local_experts", "num_experts_per_tok", "sliding_window", "vocab_size",
            "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "rms_norm_eps", "bos_token_id", "eos_token_id", "tie_word_embeddings", "max_position_embeddings",
            "hidden_act", "router_aux_loss_coef", "output_router_logits", "router_jitter_noise"]
    rope = lambda c: c.get("rope_theta", (c.get("rope_parameters") or {}).get("rope_theta"))
    dtype = lambda c: c.get("dtype", c.get("torch_dtype"))
    diff = [k for k in keys if a.get(k) != b.get(k)]
    diff += ["rope_theta"] if rope(a) != rope(b) else []
    diff += ["dtype"] if dtype(a) != dtype(b) else []
    check(not diff, f"{label}: config.json fields equal" + (f" (differ: {diff}: ours "
                                                            f"{[a.get(k) for k in diff]}, mergekit "
                                                            f"{[b.get(k) for k in diff]})" if diff else ""))


def fused_view(t, L, E):
    """Our per-expert layout turned into transformers 5's fused one."""
    out = {}
    for k, v in t.items():
        if ".block_sparse_moe." not in k:
            out[k] = v
    for l in range(L):
        p = f"model.layers.{l}."
        w = lambda e, n: t[f"{p}block_sparse_moe.experts.{e}.{n}.weight"]
        out[p + "mlp.experts.gate_up_proj"] = torch.stack([torch.cat([w(e, "w1"), w(e, "w3")]) for e in range(E)])
        out[p + "mlp.experts.down_proj"] = torch.stack([w(e, "w2") for e in range(E)])
        out[p + "mlp.gate.weight"] = t[p + "block_sparse_moe.gate.weight"]
    return out


def degenerate_line(stderr):
    m = re.search(r"(\S.*) degenerate routing parameters", stderr)
    if not m:
        return None
    line = m.group(1)
    return line[line.find("layer") if "layer" in line and not line.startswith("ALL") else 0:]


# ---- the cases -----------------------------------------------------------------


def yaml_text(base, experts, gate_mode=None, dtype=None, k=None, extra=""):
    lines = [f"base_model: {base}"]
    if gate_mode:
        lines.append(f"gate_mode: {gate_mode}")
    if dtype:
        lines.append(f"dtype: {dtype}")
    if k:
        lines.append(f"experts_per_token: {k}")
    lines.append("experts:")
    for e in experts:
        lines.append(f"  - source_model: {e['model']}")
        if e.get("pos") is not None:
            lines.append("    positive_prompts: " + json.dumps(e["pos"]))
        if e.get("neg"):
            lines.append("    negative_prompts: " + json.dumps(e["neg"]))
        for key in ("noise_scale", "residual_scale"):
            if key in e:
                lines.append(f"    {key}: {e[key]}")
    return "\n".join(lines) + "\n" + extra


def hf_float32_gates(base, experts, mode):
    """mergekit's own gate code, on a float32 transformers forward of the base."""
    import transformers
    from mergekit.moe import router
    tok = transformers.AutoTokenizer.from_pretrained(base)
    tok.padding_side = "left"
    tok.pad_token_id = tok.bos_token_id
    model = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    rows = []
    for e in experts:
        h = router.get_hidden_states(model, router.tokenize_prompts(e["pos"], tok), average=mode == "hidden_avg")
        if e.get("neg"):
            h = h - router.get_hidden_states(model, router.tokenize_prompts(e["neg"], tok),
                                             average=mode == "hidden_avg")
        rows.append(h / h.norm(p=2, dim=-1, keepdim=True).clamp(min=1e-8))
    return torch.stack(rows).permute(1, 0, 2)  # [L, E, H]


def merge_both(args, work, name, text, flags=()):
    d = os.path.join(work, "cases", name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    cfg = os.path.join(d, "config.yml")
    with open(cfg, "w") as f:
        f.write(text)
    mk = run([args.mergekit_moe, cfg, f"{d}/mergekit", "--random-seed", "0", "--device", "cpu", *flags])
    ours = run([args.moe_merge, cfg, f"{d}/moe", "--random-seed", "0", "--fused-experts", *flags])
    ours_pe = run([args.moe_merge, cfg, f"{d}/moe-per-expert", "--random-seed", "0", *flags])
    return d, mk, ours, ours_pe


def positive_case(args, work, name, text, router_rule, flags=(), hf_gates=None):
    print(f"{name}:")
    d, mk, ours, ours_pe = merge_both(args, work, name, text, flags)
    check(mk.returncode == 0, f"{name}: mergekit-moe ran" + ("" if mk.returncode == 0 else ": " + mk.stderr[-2000:]))
    check(ours.returncode == 0 and ours_pe.returncode == 0,
          f"{name}: moe-merge ran" + ("" if ours.returncode == 0 else ": " + ours.stderr[-2000:]))
    if mk.returncode or ours.returncode or ours_pe.returncode:
        return None
    a, b = tensors(f"{d}/moe"), tensors(f"{d}/mergekit")
    check(sorted(a) == sorted(b), f"{name}: same tensor names ({len(a)}) in the fused layout"
          + ("" if sorted(a) == sorted(b) else f": only ours {sorted(set(a) - set(b))[:4]}, "
             f"only mergekit's {sorted(set(b) - set(a))[:4]}"))
    copied = [k for k in b if not is_router(k)]
    bad = [k for k in copied if k in a and not same_bits(a[k], b[k])]
    check(not bad, f"{name}: {len(copied) - len(bad)} of {len(copied)} copied tensors bit-identical"
          + (f" (first differing: {bad[:3]})" if bad else ""))
    pe = tensors(f"{d}/moe-per-expert")
    with open(os.path.join(d, "moe", "config.json")) as f:
        c = json.load(f)
    L, E = c["num_hidden_layers"], c["num_local_experts"]
    fused = fused_view(pe, L, E)
    same = sorted(fused) == sorted(a) and all(same_bits(fused[k], a[k]) for k in a)
    check(same, f"{name}: the per-expert output holds the same bits as the fused one")
    compare_configs(f"{d}/moe", f"{d}/mergekit", name)
    check(open(f"{d}/moe/mergekit_moe_config.yml").read() == open(f"{d}/mergekit/mergekit_moe_config.yml").read(),
          f"{name}: mergekit_moe_config.yml identical")
    check(os.path.exists(f"{d}/moe/tokenizer.model"), f"{name}: tokenizer.model copied")
    pads = [json.load(open(f"{d}/{x}/tokenizer_config.json")).get("pad_token") for x in ("moe", "mergekit")]
    check(pads[0] == pads[1], f"{name}: pad_token as mergekit's ({pads[0]!r}, mergekit {pads[1]!r})")
    check(degenerate_line(ours.stderr) == degenerate_line(mk.stderr),
          f"{name}: degenerate-gate warning the same (ours: {degenerate_line(ours.stderr)}, "
          f"mergekit: {degenerate_line(mk.stderr)})")
    ra, rb = routers(a), routers(b)
    router_rule(name, ra, rb, c)
    if args.legacy and not name.startswith("llama"):
        legacy_case(args, d, name, pe, router_rule, c, flags)
    if hf_gates is not None:
        g = hf_gates()
        worst = max(float((ra[f"model.layers.{l}.mlp.gate.weight"].float() - g[l]).abs().max()) for l in range(L))
        check(worst <= 1e-5, f"{name}: routers within {worst:.2e} of mergekit's gate code on a float32 "
              "transformers forward (bound 1e-5)")
        # Layer 0's stream is the embedding itself, the same floats on both
        # sides: there the averaging and normalising alone are compared.
        ulps = row_scale_ulps(ra["model.layers.0.mlp.gate.weight"].float(), g[0])
        check(ulps <= 1.0, f"{name}: layer 0 (the embedding stream) within {ulps:.2f} ulp of mergekit's float32 "
              "averaging and normalising")
    return d


def legacy_case(args, d, name, pe, router_rule, c, flags):
    """Our per-expert layout against mergekit 0.1.4 (transformers 4), which writes the same names."""
    env = dict(os.environ, PYTHONPATH=args.legacy)
    r = run([sys.executable, "-c", "import sys; from mergekit.scripts.moe import main; sys.argv[0] = 'mergekit-moe'; "
             "main()", f"{d}/config.yml", f"{d}/mergekit-0.1.4", "--random-seed", "0", "--device", "cpu", *flags],
            env=env)
    check(r.returncode == 0, f"{name}: mergekit 0.1.4 ran" + ("" if r.returncode == 0 else ": " + r.stderr[-1500:]))
    if r.returncode:
        return
    b = tensors(f"{d}/mergekit-0.1.4")
    check(sorted(pe) == sorted(b), f"{name}: per-expert names equal mergekit 0.1.4's ({len(b)})")
    # mergekit 0.1.4 never applies residual_scale to a Mixtral: it looks for
    # "down_proj" in the output name, which is ...w2.weight by then (0.1.5
    # applies it, and so does moe-merge). Those w2 are the unscaled source.
    import yaml
    cfg = yaml.safe_load(open(f"{d}/config.yml"))
    scaled = {f"model.layers.{l}.block_sparse_moe.experts.{e}.w2.weight" for e, x in enumerate(cfg["experts"])
              if x.get("residual_scale") not in (None, 1) for l in range(c["num_hidden_layers"])}
    copied = [k for k in b if not is_router(k)]
    bad = [k for k in copied if k in pe and not same_bits(pe[k], b[k])]
    check(set(bad) == scaled, f"{name}: {len(copied) - len(bad)} of {len(copied)} copied tensors bit-identical to "
          f"mergekit 0.1.4" + (f"; the other {len(bad)} are the w2 that 0.1.4 leaves unscaled (residual_scale)"
                               if bad and set(bad) == scaled else f" (differing: {bad[:3]})" if bad else ""))
    for k in scaled:
        e, l = int(k.split(".experts.")[1].split(".")[0]), int(k.split(".")[2])
        src = tensors(cfg["experts"][e]["source_model"])[f"model.layers.{l}.mlp.down_proj.weight"]
        check(torch.equal(b[k].float(), src.to(b[k].dtype).float()), f"{name}: 0.1.4's {k} is the unscaled source")
    if router_rule in (exact_rule, cosine_rule):
        router_rule(name + " vs 0.1.4", routers(pe), routers(b), c)


def exact_rule(name, ra, rb, c):
    if c.get("dtype", c.get("torch_dtype")) == "bfloat16":
        ok = all(torch.equal(ra[k], rb[k]) for k in ra)
        check(ok, f"{name}: bfloat16 routers bit-identical")
    else:
        worst = max(row_scale_ulps(ra[k], rb[k]) for k in ra)
        check(worst <= 2.0, f"{name}: float32 routers within {worst:.2f} ulp at row scale (bound 2)")


def cosine_rule(name, ra, rb, c):
    worst = min(min_cosine(ra[k], rb[k]) for k in ra)
    check(worst >= 0.999, f"{name}: routers' per-row cosine against mergekit's bfloat16 pass >= 0.999 "
          f"(lowest {worst:.6f})")


def law_rule(mode):
    def rule(name, ra, rb, c):
        ours = torch.cat([v.float().flatten() for v in ra.values()])
        if mode == "random":
            ok = abs(float(ours.mean())) < 0.1 and abs(float(ours.std()) - 1) < 0.1
            check(ok, f"{name}: N(0,1) routers (mean {float(ours.mean()):.3f}, std {float(ours.std()):.3f})")
        else:
            bound = 1 / math.sqrt(c["hidden_size"])
            ok = float(ours.abs().max()) <= bound and float(ours.abs().max()) > 0.9 * bound
            check(ok, f"{name}: U(±1/√H) routers (max |w| {float(ours.abs().max()):.4f}, bound {bound:.4f})")
    return rule


def injected_routers(args, d, name, flags=()):
    """mergekit's routers fed to moe-merge: every byte of every tensor equal."""
    b = tensors(f"{d}/mergekit")
    rw = {k.replace("mlp.gate.weight", "block_sparse_moe.gate.weight"): v.contiguous() for k, v in b.items()
          if is_router(k)}
    save_file(rw, f"{d}/routers.safetensors")
    r = run([args.moe_merge, f"{d}/config.yml", f"{d}/moe-injected", "--fused-experts", "--router-weights",
             f"{d}/routers.safetensors", *flags])
    check(r.returncode == 0, f"{name}: moe-merge --router-weights ran" + ("" if r.returncode == 0 else r.stderr))
    if r.returncode == 0:
        a = tensors(f"{d}/moe-injected")
        check(sorted(a) == sorted(b) and all(same_bits(a[k], b[k]) for k in a),
              f"{name}: with mergekit's routers injected, all {len(b)} tensors bit-identical")


def logits_match(args, d, name, ids):
    """moe-mixtral on our merge (both layouts) and on mergekit's, against transformers."""
    import transformers
    for folder in ("moe-per-expert", "moe", "mergekit"):
        r = run([args.moe_mixtral, "logits", "--model", f"{d}/{folder}", "--tokens", ",".join(map(str, ids)),
                 "--out", f"{d}/{folder}-logits.safetensors"])
        if r.returncode:
            check(False, f"{name}: moe-mixtral logits on {folder}: {r.stderr[-500:]}")
            continue
        with safe_open(f"{d}/{folder}-logits.safetensors", "np") as f:
            ours = f.get_tensor("logits").ravel()
        model = transformers.AutoModelForCausalLM.from_pretrained(f"{d}/{folder}", dtype=torch.float32,
                                                                  attn_implementation="eager").eval()
        with torch.no_grad():
            ref = model(torch.tensor([ids])).logits[0].float().numpy().ravel()
        err = float(np.abs(ours - ref).max()) if ours.size == ref.size else float("inf")
        check(err < 1e-4, f"{name}: moe-mixtral logits on the {folder} layout match transformers' "
              f"MixtralForCausalLM (max |diff| {err:.2e})")


def negative_case(args, work, name, text, want, flags=()):
    d, mk, ours, _ = merge_both(args, work, name, text, flags)
    both = mk.returncode != 0 and ours.returncode != 0
    said = want is None or want in ours.stderr
    check(both and said, f"refused: {name} (mergekit exit {mk.returncode}, moe-merge exit {ours.returncode}"
          + ("" if said else f"; moe-merge said: {ours.stderr.strip()[-300:]}") + ")")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moe-merge", required=True)
    ap.add_argument("--moe-mixtral", required=True)
    ap.add_argument("--mergekit-moe", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--mergekit-0.1.4", dest="legacy", help="a folder holding mergekit 0.1.4 and transformers 4 "
                    "(pip install --target), to check the per-expert layout against it too")
    args = ap.parse_args()
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    tok, vocab = make_tokenizer(work)
    m = lambda *a, **k: make_model(work, tok, *a, vocab=vocab, **k)
    base, e1 = m("base", "mistral", 0), m("e1", "mistral", 1)
    e2 = m("e2", "mistral", 2, dtype=torch.bfloat16)  # a bfloat16 expert
    e3 = m("e3", "mistral", 3, shard="60KB")  # a sharded expert
    lbase, l1, l2 = m("llama_base", "llama", 10, tied=True), m("llama1", "llama", 11), m("llama2", "llama", 12)
    short = m("short", "mistral", 20, layers=2)

    four = [dict(model=x, pos=p, neg=n) for x, (p, n) in zip([base, e1, e2, e3], PROMPTS)]
    four[1]["residual_scale"] = 0.5
    cases = [
        ("cheap_embed_f32", yaml_text(base, four, "cheap_embed", "float32", 2), exact_rule, None),
        ("cheap_embed_bf16", yaml_text(base, four, "cheap_embed", "bfloat16", 2), exact_rule, None),
        ("hidden_f32_k3", yaml_text(base, four, "hidden", "float32", 3), cosine_rule,
         lambda: hf_float32_gates(base, four, "hidden")),
        ("hidden_avg_f32", yaml_text(base, four, "hidden_avg", "float32", 2), cosine_rule,
         lambda: hf_float32_gates(base, four, "hidden_avg")),
        ("llama_tied_hidden", yaml_text(lbase, [dict(model=x, pos=p, neg=n) for x, (p, n) in
                                                zip([lbase, l1, l2, lbase], PROMPTS)], "hidden", "float32", 1),
         cosine_rule, None),
        ("beyonder_shaped", yaml_text(base, [dict(model=x, pos=p) for x, (p, _) in zip([base, e1, e2, e3], PROMPTS)]),
         cosine_rule, None),
        ("random", yaml_text(base, [dict(model=base)] * 4, "random", "bfloat16", 2), law_rule("random"), None),
        ("uniform_random", yaml_text(base, four, "uniform_random", "float32", 2), law_rule("uniform"), None),
    ]
    merged = {}
    for name, text, rule, hf in cases:
        flags = ("--out-shard-size", "200K") if name == "beyonder_shaped" else ()
        merged[name] = positive_case(args, work, name, text, rule, flags, hf)
        if merged[name] and name in ("random", "uniform_random", "hidden_f32_k3"):
            injected_routers(args, merged[name], name, flags)
    ids = [1, 17, 40, 99, 120, 7, 250, 3]
    for name in ("cheap_embed_f32", "llama_tied_hidden"):
        if merged.get(name):
            logits_match(args, merged[name], name, ids)

    print("negative configs:")
    same = [dict(model=x, pos=["chat"]) for x in (base, e1, e2, e3)]
    negative_case(args, work, "identical_prompts", yaml_text(base, same, "cheap_embed"),
                  "Your positive and negative prompts are identical for all experts")
    negative_case(args, work, "same_models_hidden", yaml_text(base, [dict(model=base, pos=p) for p, _ in PROMPTS]),
                  "All of your expert models are the same")
    negative_case(args, work, "k_above_experts", yaml_text(base, four, "cheap_embed", k=5),
                  "Must include at least as many experts as experts_per_token.")
    negative_case(args, work, "missing_prompts", yaml_text(base, [dict(model=x) for x in (base, e1)], "cheap_embed"),
                  "Expert 0 has no positive prompts.")
    negative_case(args, work, "llama_mistral_mix", yaml_text(base, [dict(model=base, pos=["chat"]),
                                                                    dict(model=l1, pos=["code"])], "cheap_embed"),
                  "is a llama model and base_model a mistral one")
    negative_case(args, work, "shared_experts_mixtral", yaml_text(base, four[:2], "cheap_embed", extra=(
        f"architecture: mixtral\nshared_experts:\n  - source_model: {e1}\n")), "shared_experts")
    negative_case(args, work, "two_layer_expert", yaml_text(base, [dict(model=base, pos=["chat"]),
                                                                   dict(model=short, pos=["code"])], "cheap_embed"),
                  "has num_hidden_layers 2, base_model 3")

    print(f"\n{len(failures)} failure(s)" if failures else "\nall checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
