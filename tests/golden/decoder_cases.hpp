#pragma once
// Golden runners for the decoder kinds (README §4-6): rmsnorm, attention and
// whole Mixtral checkpoints. Included by golden.hpp, which lists the kinds.

#include <moe/models/mixtral.hpp>

#include <optional>
#include <string>

namespace moe::golden {

inline std::optional<index_t> window_meta(const io::SafeTensors& f) {
  const std::string w = f.meta("sliding_window", "null");
  if (w == "null") return std::nullopt;
  return index_t(std::stoll(w));
}

/// rmsnorm: y = weight ⊙ x / sqrt(mean(x²) + eps).
inline Outputs run_rmsnorm(const io::SafeTensors& f, BackendChoice) {
  const MatrixView<const float> x = input(f, "x");
  const std::vector<float> weight = f.tensor("weight").to_vector<float>();
  Matrix y(x.rows, x.cols);
  mixtral::rms_norm(x, weight, std::stod(f.meta("eps")), y);
  return {{"y", matrix(y)}};
}

/// [S, heads·hd] token-major → [heads, S, hd] head-major, as the golden files store q and k.
inline Tensor head_major(const Matrix& m, index_t heads, index_t hd) {
  const index_t S = m.rows();
  std::vector<float> v(static_cast<std::size_t>(heads * S * hd));
  for (index_t h = 0; h < heads; ++h)
    for (index_t s = 0; s < S; ++s)
      for (index_t i = 0; i < hd; ++i) v[std::size_t((h * S + s) * hd + i)] = m(s, h * hd + i);
  return floats({heads, S, hd}, std::move(v));
}

/// attention: RoPE + GQA + causal/sliding mask on an empty cache at pos0.
inline Outputs run_attention(const io::SafeTensors& f, BackendChoice b) {
  const MatrixView<const float> x = input(f, "x");
  const mixtral::AttentionShape shape{std::stoll(f.meta("num_heads")), std::stoll(f.meta("num_kv_heads")),
                                      std::stoll(f.meta("head_dim")), window_meta(f)};
  const mixtral::AttentionWeights w{f.tensor("wq").matrix(), f.tensor("wk").matrix(), f.tensor("wv").matrix(),
                                    f.tensor("wo").matrix()};
  mixtral::validate(shape, w, x.cols);
  const auto positions = f.tensor("positions").to_vector<std::int32_t>();
  const index_t S = x.rows, pos0 = positions.at(0), hd = shape.head_dim;
  const mixtral::RopeTable rope(std::stod(f.meta("rope_theta")), hd, pos0, S);
  mixtral::LayerKvCache cache(shape.num_kv_heads * hd, shape.window);
  mixtral::AttentionTrace trace;
  Matrix out(S, x.cols);
  with_host_backend(b, [&](auto backend) {
    mixtral::attention(backend, x, w, shape, rope, pos0, cache, out, &trace);
    return 0;
  });
  std::vector<std::uint8_t> mask(static_cast<std::size_t>(S * S));
  for (index_t i = 0; i < S; ++i)
    for (index_t j = 0; j < S; ++j) mask[std::size_t(i * S + j)] = shape.visible(pos0 + i, pos0 + j);
  Outputs o;
  o["out"] = matrix(out);
  o["rope_cos"] = floats({S, hd / 2}, rope.cos);
  o["rope_sin"] = floats({S, hd / 2}, rope.sin);
  o["q_rope"] = head_major(trace.q_rope, shape.num_heads, hd);
  o["k_rope"] = head_major(trace.k_rope, shape.num_kv_heads, hd);
  o["mask"] = ints(DType::U8, {S, S}, mask);
  return o;
}

/// model: the checkpoint (Mixtral, or dense Mistral/Llama, whose layers'
/// moe_out is the FFN's output) in the folder of expected.safetensors, run on
/// input_ids (one prefill with every intermediate), then 16 greedy tokens
/// decoded one at a time with the KV cache.
inline Outputs run_model(const io::SafeTensors& f, BackendChoice b) {
  const std::vector<std::int32_t> ids = f.tensor("input_ids").to_vector<std::int32_t>();
  const index_t new_tokens = f.contains("greedy_ids") ? f.tensor("greedy_ids").numel() : 16;
  return with_host_backend(b, [&](auto backend) {
    const mixtral::Model<decltype(backend)> model(f.path().parent_path(), backend);
    const mixtral::Config& c = model.config();
    const index_t S = index_t(ids.size()), V = c.vocab_size;
    mixtral::KvCache cache = model.new_cache();
    mixtral::Trace trace;
    const mixtral::StepOutput prefill = model.forward(ids, cache, mixtral::Logits::all, &trace);

    Outputs o;
    o["logits"] = matrix(prefill.logits);
    o["embeddings"] = matrix(trace.embeddings);
    o["final_norm"] = matrix(trace.final_norm);
    for (index_t l = 0; l < c.num_layers; ++l) {
      const std::string p = detail::cat("layers.", l, ".");
      const mixtral::Trace::Layer& tl = trace.layers[std::size_t(l)];
      o[p + "attn_out"] = matrix(tl.attn_out);
      o[p + "moe_out"] = matrix(tl.moe_out);
      o[p + "hidden_out"] = matrix(tl.hidden_out);
      if (!c.dense()) o[p + "router_logits"] = floats({S, c.num_experts}, prefill.routing[std::size_t(l)].logits);
    }
    if (!c.dense()) {  // Mistral / Llama have no router
      const mixtral::RouterLosses losses = mixtral::router_losses(prefill.routing);
      o["aux_loss"] = floats({1}, {losses.balance});
      o["z_loss"] = floats({1}, {losses.z});
    }

    std::vector<std::int32_t> greedy;
    std::vector<float> greedy_logits;
    Matrix last = prefill.logits.bottomRows(1);
    for (index_t i = 0; i < new_tokens; ++i) {
      greedy_logits.insert(greedy_logits.end(), last.data(), last.data() + V);
      greedy.push_back(mixtral::argmax({last.data(), std::size_t(V)}));
      if (i + 1 < new_tokens) last = model.forward(std::span(&greedy.back(), 1), cache, mixtral::Logits::last).logits;
    }
    o["greedy_ids"] = ints(DType::I32, {new_tokens}, greedy);
    o["greedy_logits"] = floats({new_tokens, V}, std::move(greedy_logits));
    return o;
  });
}

}  // namespace moe::golden
