#pragma once
/// \file gguf_from_hf.hpp
/// A Hugging Face Llama, Mistral or Mixtral folder (a frankenMoE from
/// moe-merge included) as a GGUF file the way llama.cpp's
/// convert_hf_to_gguf.py and llama-quantize lay one out: architecture
/// `llama`, its metadata keys, q and k rows permuted per head for ggml's
/// RoPE, experts stacked per layer into ffn_{gate,down,up}_exps, matrices
/// in the types llama-quantize gives them for the chosen file type
/// (gguf_quant_mix.hpp; norms and the router stay F32), a SentencePiece
/// tokenizer.model as the `llama` tokenizer fields, and the folder's chat
/// template as tokenizer.chat_template. Streaming: one tensor in memory at
/// a time.

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/core/types.hpp"
#include "moe/io/checkpoint.hpp"
#include "moe/io/gguf_quant_mix.hpp"
#include "moe/io/gguf_tokenizer.hpp"
#include "moe/io/gguf_writer.hpp"
#include "moe/io/mapped_file.hpp"
#include "moe/models/mixtral/config.hpp"
#include "moe/quant/ggml_blocks.hpp"
#include "moe/text/chat.hpp"

namespace moe::io {

/// Writes the Hugging Face checkpoint in `hf_dir` as the GGUF file `out`,
/// its matrices in the types `mix` gives them (gguf_quant_mix.hpp: "q8_0",
/// "q4_k_m", ...). on_tensor(done, total, name) reports progress as each
/// tensor is written.
inline void write_gguf(const std::filesystem::path& hf_dir, const std::filesystem::path& out, const QuantMix& mix,
                       const std::function<void(std::size_t, std::size_t, const std::string&)>& on_tensor = {}) {
  detail::require(
      !Checkpoint::is_gguf(hf_dir), ErrorCode::invalid_argument, hf_dir.string(),
      ": is a GGUF file; this writes a GGUF from a Hugging Face folder (moe-convert makes one from a GGUF)");
  const mixtral::Config c = mixtral::load_config(hf_dir);
  const Checkpoint ckpt(hf_dir);
  GgufWriter w;
  w.add_string("general.architecture", "llama");
  w.add_string("general.name", hf_dir.filename().string());
  w.add_u32("llama.vocab_size", std::uint32_t(c.vocab_size));
  w.add_u32("llama.context_length", std::uint32_t(c.max_positions));
  w.add_u32("llama.embedding_length", std::uint32_t(c.hidden_size));
  w.add_u32("llama.block_count", std::uint32_t(c.num_layers));
  w.add_u32("llama.feed_forward_length", std::uint32_t(c.intermediate_size));
  w.add_u32("llama.rope.dimension_count", std::uint32_t(c.head_dim));
  w.add_u32("llama.attention.head_count", std::uint32_t(c.num_heads));
  w.add_u32("llama.attention.head_count_kv", std::uint32_t(c.num_kv_heads));
  w.add_f32("llama.attention.layer_norm_rms_epsilon", float(c.rms_norm_eps));
  w.add_f32("llama.rope.freq_base", float(c.rope_theta));
  if (!c.dense()) {
    w.add_u32("llama.expert_count", std::uint32_t(c.num_experts));
    w.add_u32("llama.expert_used_count", std::uint32_t(c.experts_per_token));
  }
  w.add_u32("general.file_type", mix.file_type);
  // The tokenizer, as convert_hf_to_gguf.py stores a SentencePiece one.
  if (std::filesystem::exists(hf_dir / "tokenizer.model")) {
    const MappedFile f(hf_dir / "tokenizer.model");
    const SentencePieceVocab v = read_sentencepiece_model({reinterpret_cast<const char*>(f.data()), f.size()},
                                                          (hf_dir / "tokenizer.model").string());
    w.add_string("tokenizer.ggml.model", "llama");
    w.add_strings("tokenizer.ggml.tokens", v.tokens);
    w.add_f32s("tokenizer.ggml.scores", v.scores);
    w.add_i32s("tokenizer.ggml.token_type", v.types);
    w.add_u32("tokenizer.ggml.bos_token_id", std::uint32_t(v.bos_id));
    w.add_u32("tokenizer.ggml.eos_token_id", std::uint32_t(v.eos_id));
    w.add_u32("tokenizer.ggml.unknown_token_id", std::uint32_t(v.unk_id));
    if (v.pad_id >= 0) w.add_u32("tokenizer.ggml.padding_token_id", std::uint32_t(v.pad_id));
    w.add_bool("tokenizer.ggml.add_space_prefix", v.add_dummy_prefix);
  }
  if (const std::optional<text::ChatTemplate> chat = text::read_chat_template(hf_dir))
    w.add_string("tokenizer.chat_template", chat->source());

  std::size_t total = 0, done = 0;
  // One output tensor: `rows` HF rows (several tensors stacked, or one with
  // its rows permuted per head) of `cols` values.
  const MixModel shape{c.num_layers, c.num_heads, c.num_kv_heads, c.dense() ? 1 : c.num_experts,
                       !c.tie_word_embeddings};
  // A tensor and its role: a matrix gets its type from the mix; anything
  // else (norms, the router) stays F32.
  const auto add = [&](const std::string& name, std::vector<const TensorView*> parts, std::optional<MatrixRole> role,
                       index_t permuted_heads = 0) {
    const TensorView& first = *parts.front();
    const index_t cols = first.shape.back(), rows = first.numel() / std::max<index_t>(cols, 1);
    const std::uint32_t t = role ? matrix_type(mix, *role, shape, cols) : 0;
    std::vector<index_t> ne = {cols};
    if (first.shape.size() > 1) ne.push_back(rows);
    if (parts.size() > 1) ne.push_back(index_t(parts.size()));
    const gguf::TypeTraits tt = *gguf::traits(t);
    ++total;
    w.add_tensor(name, ne, t, [&, parts, rows, cols, t, tt, permuted_heads, name](unsigned char* dst) {
      std::vector<float> row(static_cast<std::size_t>(cols));
      const index_t row_bytes = cols / tt.block * tt.bytes, head = permuted_heads ? rows / permuted_heads : 0;
      for (std::size_t p = 0; p < parts.size(); ++p)
        for (index_t g = 0; g < rows; ++g) {
          index_t r = g;  // ggml row g = (head h, pair j, half s) holds HF row (h, s, j)
          if (head > 0) r = (g / head) * head + (g % head % 2) * (head / 2) + (g % head) / 2;
          for (index_t k = 0; k < cols; ++k)
            row[std::size_t(k)] = load_as_float(parts[p]->data, parts[p]->dtype, r * cols + k);
          quant::quantize(t, tt.name, row.data(), cols, dst + (index_t(p) * rows + g) * row_bytes);
        }
      if (on_tensor) on_tensor(++done, total, name);
    });
  };
  const auto T = [&](const std::string& n) { return &ckpt.tensor(n); };
  using K = MatrixRole::Kind;
  add("token_embd.weight", {T("model.embed_tokens.weight")}, MatrixRole{K::token_embd});
  add("output_norm.weight", {T("model.norm.weight")}, std::nullopt);
  if (!c.tie_word_embeddings) add("output.weight", {T("lm_head.weight")}, MatrixRole{K::output});
  for (index_t l = 0; l < c.num_layers; ++l) {
    const std::string p = detail::cat("model.layers.", l, "."), b = detail::cat("blk.", l, ".");
    add(b + "attn_norm.weight", {T(p + "input_layernorm.weight")}, std::nullopt);
    add(b + "attn_q.weight", {T(p + "self_attn.q_proj.weight")}, MatrixRole{K::attn_q, l}, c.num_heads);
    add(b + "attn_k.weight", {T(p + "self_attn.k_proj.weight")}, MatrixRole{K::attn_k, l}, c.num_kv_heads);
    add(b + "attn_v.weight", {T(p + "self_attn.v_proj.weight")}, MatrixRole{K::attn_v, l});
    add(b + "attn_output.weight", {T(p + "self_attn.o_proj.weight")}, MatrixRole{K::attn_output, l});
    add(b + "ffn_norm.weight", {T(p + "post_attention_layernorm.weight")}, std::nullopt);
    if (c.dense()) {
      add(b + "ffn_gate.weight", {T(p + "mlp.gate_proj.weight")}, MatrixRole{K::ffn_gate, l});
      add(b + "ffn_up.weight", {T(p + "mlp.up_proj.weight")}, MatrixRole{K::ffn_up, l});
      add(b + "ffn_down.weight", {T(p + "mlp.down_proj.weight")}, MatrixRole{K::ffn_down, l});
      continue;
    }
    add(b + "ffn_gate_inp.weight", {T(p + "block_sparse_moe.gate.weight")}, std::nullopt);
    for (const auto& [hf, gg, kind] : {std::tuple{"w1", "gate", K::ffn_gate}, std::tuple{"w2", "down", K::ffn_down},
                                       std::tuple{"w3", "up", K::ffn_up}}) {
      std::vector<const TensorView*> experts;
      for (index_t e = 0; e < c.num_experts; ++e)
        experts.push_back(T(detail::cat(p, "block_sparse_moe.experts.", e, ".", hf, ".weight")));
      add(detail::cat(b, "ffn_", gg, "_exps.weight"), experts, MatrixRole{kind, l});
    }
  }
  w.write(out);
}

/// The same, the mix by its name ("q8_0", "q4_k_m", ...).
inline void write_gguf(const std::filesystem::path& hf_dir, const std::filesystem::path& out, std::string_view mix,
                       const std::function<void(std::size_t, std::size_t, const std::string&)>& on_tensor = {}) {
  write_gguf(hf_dir, out, quant_mix(mix), on_tensor);
}

}  // namespace moe::io
