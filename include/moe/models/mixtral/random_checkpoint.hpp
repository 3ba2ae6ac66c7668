#pragma once
/// \file random_checkpoint.hpp
/// Writes a Mixtral checkpoint with seeded random weights, in Hugging Face
/// layout: what tests, benchmarks and the README's first command run on when
/// no real checkpoint has been downloaded.
///
/// Matrices are N(0, 1/fan_in) (activations stay O(1) through the layers),
/// norms are 1. Every value depends only on (seed, tensor, row, column): the
/// same seed writes the same bytes on any machine.

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "moe/io/safetensors_writer.hpp"
#include "moe/io/sharded_writer.hpp"
#include "moe/layer/weight_store.hpp"
#include "moe/models/mixtral/config.hpp"
#include "moe/models/mixtral/weights.hpp"

namespace moe::mixtral {

/// The built-in default: a Mixtral in miniature (8 experts, top-2, GQA).
inline Config tiny_config(index_t vocab_size = 512) {
  Config c;
  c.vocab_size = vocab_size;
  c.hidden_size = 128;
  c.intermediate_size = 256;
  c.num_layers = 4;
  c.num_heads = 8;
  c.num_kv_heads = 2;
  c.head_dim = 16;
  c.num_experts = 8;
  c.experts_per_token = 2;
  c.max_positions = 2048;
  c.dtype = DType::BF16;
  c.bos_token_id = 1;
  c.eos_token_id = 2;
  return c;
}

/// Writes config.json and the weights of `c` (in c.dtype, F32 if unset) into
/// `dir`, as one model.safetensors or as `shards` files plus the index.
inline void write_random_checkpoint(const std::filesystem::path& dir, const Config& c, std::uint64_t seed,
                                    int shards = 1) {
  moe::detail::require(shards >= 1, ErrorCode::invalid_argument, "write_random_checkpoint: shards must be >= 1, got ",
                       shards);
  const DType dtype = c.dtype.value_or(DType::F32);
  std::filesystem::create_directories(dir);

  // Every tensor of the architecture, in checkpoint order.
  struct Spec {
    std::string name;
    std::vector<index_t> shape;
  };
  const index_t H = c.hidden_size, F = c.intermediate_size;
  std::vector<Spec> specs = {{names::embed, {c.vocab_size, H}}};
  for (index_t l = 0; l < c.num_layers; ++l) {
    const std::string p = names::layer(l);
    specs.push_back({p + "input_layernorm.weight", {H}});
    specs.push_back({p + "self_attn.q_proj.weight", {c.q_width(), H}});
    specs.push_back({p + "self_attn.k_proj.weight", {c.kv_width(), H}});
    specs.push_back({p + "self_attn.v_proj.weight", {c.kv_width(), H}});
    specs.push_back({p + "self_attn.o_proj.weight", {H, c.q_width()}});
    specs.push_back({p + "post_attention_layernorm.weight", {H}});
    if (c.dense()) {  // Mistral / Llama: one FFN
      specs.push_back({names::mlp(l, "gate_proj"), {F, H}});
      specs.push_back({names::mlp(l, "up_proj"), {F, H}});
      specs.push_back({names::mlp(l, "down_proj"), {H, F}});
      continue;
    }
    specs.push_back({names::router(l), {c.num_experts, H}});
    for (index_t e = 0; e < c.num_experts; ++e) {
      specs.push_back({names::expert(l, e, "w1"), {F, H}});
      specs.push_back({names::expert(l, e, "w2"), {H, F}});
      specs.push_back({names::expert(l, e, "w3"), {F, H}});
    }
  }
  specs.push_back({names::final_norm, {H}});
  if (!c.tie_word_embeddings) specs.push_back({names::lm_head, {c.vocab_size, H}});

  std::size_t total = 0;
  for (const Spec& s : specs) {
    index_t n = 1;
    for (index_t d : s.shape) n *= d;
    total += std::size_t(n * size_of(dtype));
  }
  const auto shard_name = [&](int i) { return io::shard_file_name(std::size_t(i), std::size_t(shards)); };

  // Fill shards in order, starting a new one when a shard has its share.
  nlohmann::json weight_map = nlohmann::json::object();
  io::SafeTensorsWriter writer;
  int shard = 0;
  std::size_t written = 0;  // bytes in shards already flushed
  const auto flush = [&] {
    written += writer.data_bytes();
    writer.set_metadata("format", "pt");
    writer.write(dir / shard_name(shard));
    writer = io::SafeTensorsWriter();
    ++shard;
  };
  for (std::size_t i = 0; i < specs.size(); ++i) {
    const Spec& s = specs[i];
    std::vector<unsigned char> bytes;
    if (s.shape.size() == 1) {  // an RMSNorm scale: ones
      bytes.resize(std::size_t(s.shape[0] * size_of(dtype)));
      for (index_t j = 0; j < s.shape[0]; ++j) moe::detail::store_as(dtype, 1.0f, bytes.data() + j * size_of(dtype));
    } else {
      bytes = moe::detail::random_weight_bytes(dtype, s.shape[0], s.shape[1], seed, i);
    }
    writer.add(s.name, dtype, s.shape, std::move(bytes));
    weight_map[s.name] = shard_name(shard);
    if (shard + 1 < shards && (written + writer.data_bytes()) * std::size_t(shards) >= total * std::size_t(shard + 1))
      flush();
  }
  while (shard < shards) flush();  // the last shard (and empty ones if tensors ran out)

  if (shards > 1) {
    const nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    std::ofstream(dir / io::Checkpoint::index_file) << index.dump(2) << "\n";
  } else {
    std::filesystem::remove(dir / io::Checkpoint::index_file);
  }
  std::ofstream out(dir / "config.json");
  out << to_json(c).dump(2) << "\n";
  moe::detail::require(bool(out), ErrorCode::bad_file, (dir / "config.json").string(), ": write failed");
}

}  // namespace moe::mixtral
