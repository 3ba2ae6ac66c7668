#pragma once
/// \file gguf_hf_names.hpp
/// A GGUF model of llama.cpp's `llama` architecture (Llama, Mistral and
/// Mixtral as llama.cpp's convert_hf_to_gguf.py writes them, frankenMoEs
/// included) seen as the Hugging Face checkpoint it came from: config.json
/// from the metadata, each tensor under its transformers name.
///
///   names      token_embd → model.embed_tokens, blk.N.attn_q → model.layers.N.self_attn.q_proj, …
///   q and k    rows permuted per head from rotate-half pairs (i, i + d/2)
///              to adjacent pairs (2i, 2i + 1) for ggml's RoPE (recorded
///              per tensor: a reader either puts them back or rotates
///              adjacent pairs)
///   experts    stacked per layer, ffn_{gate,down,up}_exps [E, rows, cols]
///              (or one tensor per expert, blk.N.ffn_gate.E): experts.E.w1/w2/w3
///   lm_head    absent when the embeddings are tied: tie_word_embeddings
///
/// A tensor this mapping does not know is an error naming it, never dropped.

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/core/types.hpp"
#include "moe/io/gguf.hpp"

namespace moe::io {

/// One tensor of the Hugging Face checkpoint, and where its values are in the GGUF file.
struct HfTensorFromGguf {
  std::string name;            ///< transformers' name
  std::vector<index_t> shape;  ///< row-major
  const GgufTensor* source = nullptr;
  index_t slice = -1;          ///< the expert of a stacked tensor (ne[2]); -1: the whole tensor
  index_t permuted_heads = 0;  ///< q or k: rows permuted per head for ggml's RoPE (heads of it); 0: none
};

namespace gguf_detail {

inline std::string arch_key(const Gguf& g, const std::string& key) {
  return g.get_string("general.architecture") + "." + key;
}

inline void require_llama(const Gguf& g) {
  const std::string arch = g.get_string("general.architecture");
  detail::require(arch == "llama", ErrorCode::unsupported, g.path().string(), ": architecture '", arch,
                  "' is not supported (expected 'llama': Llama, Mistral, Mixtral as llama.cpp converts them)");
}

}  // namespace gguf_detail

/// The Hugging Face config.json of a GGUF `llama` model.
inline nlohmann::json gguf_hf_config(const Gguf& g) {
  gguf_detail::require_llama(g);
  const auto key = [&](const std::string& k) { return gguf_detail::arch_key(g, k); };
  const std::int64_t heads = g.get_int(key("attention.head_count"));
  const std::int64_t hidden = g.get_int(key("embedding_length"));
  const std::int64_t experts = g.get_int_or(key("expert_count")).value_or(0);
  std::int64_t vocab = g.get_int_or(key("vocab_size")).value_or(0);
  if (vocab == 0 && g.contains("tokenizer.ggml.tokens"))
    vocab = std::int64_t(g.get_strings("tokenizer.ggml.tokens").size());
  if (vocab == 0) vocab = g.tensor("token_embd.weight").ne.at(1);
  nlohmann::json c;
  c["architectures"] = {experts > 0 ? "MixtralForCausalLM" : "LlamaForCausalLM"};
  c["model_type"] = experts > 0 ? "mixtral" : "llama";
  c["vocab_size"] = vocab;
  c["hidden_size"] = hidden;
  c["intermediate_size"] =
      g.get_int_or(key("expert_feed_forward_length")).value_or(g.get_int(key("feed_forward_length")));
  c["num_hidden_layers"] = g.get_int(key("block_count"));
  c["num_attention_heads"] = heads;
  c["num_key_value_heads"] = g.get_int_or(key("attention.head_count_kv")).value_or(heads);
  if (const auto rope_dims = g.get_int_or(key("rope.dimension_count")); rope_dims && *rope_dims != hidden / heads)
    c["head_dim"] = *rope_dims;
  c["hidden_act"] = "silu";
  c["max_position_embeddings"] = g.get_int_or(key("context_length")).value_or(2048);
  c["rms_norm_eps"] = g.get_float_or(key("attention.layer_norm_rms_epsilon")).value_or(1e-5);
  c["rope_theta"] = g.get_float_or(key("rope.freq_base")).value_or(10000.0);
  if (experts > 0) {
    c["num_local_experts"] = experts;
    c["num_experts_per_tok"] = g.get_int(key("expert_used_count"));
  }
  c["tie_word_embeddings"] = g.find_tensor("output.weight") == nullptr;
  if (const auto bos = g.get_int_or("tokenizer.ggml.bos_token_id")) c["bos_token_id"] = *bos;
  if (const auto eos = g.get_int_or("tokenizer.ggml.eos_token_id")) c["eos_token_id"] = *eos;
  return c;
}

/// Every tensor of the Hugging Face checkpoint a GGUF `llama` model holds.
inline std::vector<HfTensorFromGguf> gguf_hf_tensors(const Gguf& g) {
  gguf_detail::require_llama(g);
  const std::int64_t heads = g.get_int(gguf_detail::arch_key(g, "attention.head_count"));
  const std::int64_t kv_heads = g.get_int_or(gguf_detail::arch_key(g, "attention.head_count_kv")).value_or(heads);
  std::vector<HfTensorFromGguf> out;
  const auto fail = [&](const GgufTensor& t, const std::string& why) {
    throw Error(ErrorCode::unsupported, detail::cat(g.path().string(), ": tensor '", t.name, "': ", why));
  };
  for (const GgufTensor& t : g.tensors()) {
    const auto add = [&](std::string name, index_t permuted = 0) {
      if (permuted > 0 && (t.ne.size() != 2 || t.ne[1] % permuted != 0 || (t.ne[1] / permuted) % 2 != 0))
        fail(t, detail::cat("a projection of ", permuted, " heads needs rows in whole heads of even size"));
      out.push_back({std::move(name), t.shape(), &t, -1, permuted});
    };
    if (t.name == "token_embd.weight") {
      add("model.embed_tokens.weight");
      continue;
    }
    if (t.name == "output_norm.weight") {
      add("model.norm.weight");
      continue;
    }
    if (t.name == "output.weight") {
      add("lm_head.weight");
      continue;
    }
    // blk.N.<what>.weight, or blk.N.ffn_<gate|down|up>.E.weight (one tensor per expert)
    const std::string prefix = "blk.";
    std::size_t dot = t.name.find('.', prefix.size());
    if (t.name.rfind(prefix, 0) != 0 || dot == std::string::npos) fail(t, "no Hugging Face name for it");
    const std::string layer = t.name.substr(prefix.size(), dot - prefix.size());
    std::string rest = t.name.substr(dot + 1);
    const std::string p = "model.layers." + layer + ".";
    const std::string suffix = ".weight";
    if (rest.size() <= suffix.size() || rest.compare(rest.size() - suffix.size(), suffix.size(), suffix) != 0)
      fail(t, "no Hugging Face name for it (not a weight)");
    rest.resize(rest.size() - suffix.size());
    if (rest == "attn_norm")
      add(p + "input_layernorm.weight");
    else if (rest == "ffn_norm")
      add(p + "post_attention_layernorm.weight");
    else if (rest == "attn_q")
      add(p + "self_attn.q_proj.weight", heads);
    else if (rest == "attn_k")
      add(p + "self_attn.k_proj.weight", kv_heads);
    else if (rest == "attn_v")
      add(p + "self_attn.v_proj.weight");
    else if (rest == "attn_output")
      add(p + "self_attn.o_proj.weight");
    else if (rest == "ffn_gate_inp")
      add(p + "block_sparse_moe.gate.weight");
    else if (rest == "ffn_gate")
      add(p + "mlp.gate_proj.weight");
    else if (rest == "ffn_up")
      add(p + "mlp.up_proj.weight");
    else if (rest == "ffn_down")
      add(p + "mlp.down_proj.weight");
    else {
      // Experts: stacked (ffn_gate_exps) or one per tensor (ffn_gate.E).
      const auto w = [](const std::string& part) { return part == "gate" ? "w1" : part == "down" ? "w2" : "w3"; };
      bool matched = false;
      for (const std::string part : {"gate", "down", "up"}) {
        if (rest == "ffn_" + part + "_exps") {
          if (t.ne.size() != 3) fail(t, detail::cat("a stack of experts needs 3 dimensions, has ", t.ne.size()));
          for (index_t e = 0; e < t.ne[2]; ++e)
            out.push_back({detail::cat(p, "block_sparse_moe.experts.", e, ".", w(part), ".weight"),
                           {t.ne[1], t.ne[0]},
                           &t,
                           e,
                           0});
          matched = true;
        } else if (rest.rfind("ffn_" + part + ".", 0) == 0) {
          const std::string expert = rest.substr(part.size() + 5);
          if (expert.empty() || expert.find_first_not_of("0123456789") != std::string::npos)
            fail(t, "no Hugging Face name for it");
          add(p + "block_sparse_moe.experts." + expert + "." + w(part) + ".weight");
          matched = true;
        }
      }
      if (!matched) fail(t, "no Hugging Face name for it");
    }
  }
  return out;
}

}  // namespace moe::io
