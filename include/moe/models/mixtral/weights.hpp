#pragma once
/// \file weights.hpp
/// Every tensor of a Mixtral checkpoint (or of a dense Mistral/Llama one),
/// checked against the config before any compute, and held as views into
/// the mapped files.
///
/// Matrices stay in their stored dtype (a BF16 checkpoint runs on BF16
/// views); only the RMSNorm scales, H floats per norm, are widened to fp32
/// copies. Each expected tensor must be present, have a weight dtype (the
/// config's torch_dtype when it names one) and exactly the shape the config
/// implies; a tensor nobody expects is an error too, because it means the
/// checkpoint is not the model the config describes.

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/core/view.hpp"
#include "moe/io/checkpoint.hpp"
#include "moe/layer/moe_layer.hpp"
#include "moe/models/mixtral/config.hpp"

namespace moe::mixtral {

/// Hugging Face tensor names of the Mixtral architecture.
namespace names {
inline std::string layer(index_t l) { return moe::detail::cat("model.layers.", l, "."); }
inline std::string expert(index_t l, index_t e, const char* w) {
  return moe::detail::cat(layer(l), "block_sparse_moe.experts.", e, ".", w, ".weight");
}
inline std::string router(index_t l) { return layer(l) + "block_sparse_moe.gate.weight"; }
/// transformers 5's fused layout of the experts (mergekit-moe 0.1.5 writes
/// it): per layer, [E, 2F, H] with expert e's gate rows then its up rows,
/// [E, H, F] down projections, and the router beside them.
inline std::string fused_gate_up(index_t l) { return layer(l) + "mlp.experts.gate_up_proj"; }
inline std::string fused_down(index_t l) { return layer(l) + "mlp.experts.down_proj"; }
inline std::string fused_router(index_t l) { return layer(l) + "mlp.gate.weight"; }
/// A dense model's FFN: w = "gate_proj" (Mixtral's w1), "up_proj" (w3), "down_proj" (w2).
inline std::string mlp(index_t l, const char* w) { return moe::detail::cat(layer(l), "mlp.", w, ".weight"); }
// Plain literals, not std::string objects: a header's namespace-scope
// object would be built before main in every program that includes it.
inline constexpr const char* embed = "model.embed_tokens.weight";
inline constexpr const char* final_norm = "model.norm.weight";
inline constexpr const char* lm_head = "lm_head.weight";
}  // namespace names

/// One decoder layer's weights.
struct DecoderLayerWeights {
  std::vector<float> input_norm;  ///< [H] RMSNorm before attention
  std::vector<float> post_norm;   ///< [H] RMSNorm before the MoE block
  WeightMatrix q, k, v, o;        ///< [nh·hd, H], [nkv·hd, H] ×2, [H, nh·hd]
  LayerWeights moe;               ///< router gate [E, H]; experts: w1 = gate, w3 = up, w2 = down
                                  ///< (dense: one expert = the FFN, gate = Weights::dense_router)
};

struct Weights {
  WeightMatrix embed;  ///< [V, H]
  std::vector<DecoderLayerWeights> layers;
  std::vector<float> final_norm;  ///< [H]
  WeightMatrix lm_head;           ///< [V, H]; the embedding itself when tied
  /// Dense models: the [1, H] router of the one-expert block, all zeros, so
  /// its single logit is 0 and its weight softmax([0]) = 1 exactly. Shared,
  /// so that the layers' views of it stay valid in a copy of the Weights.
  std::shared_ptr<const std::vector<float>> dense_router;
};

namespace detail {

/// Hands out the checkpoint's tensors by name, checking each, and remembers
/// which were taken so that leftovers can be reported.
class TensorClaims {
 public:
  TensorClaims(const io::Checkpoint& ckpt, const Config& config) : ckpt_(ckpt), config_(config) {}

  const io::TensorView& take(const std::string& name, const std::vector<index_t>& shape) {
    const io::TensorView* t = ckpt_.find(name);
    moe::detail::require(t != nullptr, ErrorCode::bad_file, ckpt_.dir().string(), ": tensor '", name,
                         "' is missing (expected shape ", io::shape_string(shape), ")");
    t->expect_shape(shape);
    moe::detail::require(is_weight_dtype(t->dtype), ErrorCode::dtype_mismatch, t->file, ": tensor '", name,
                         "' has dtype ", moe::name(t->dtype), ", expected F32, BF16 or F16");
    if (config_.dtype)
      moe::detail::require(t->dtype == *config_.dtype, ErrorCode::dtype_mismatch, t->file, ": tensor '", name,
                           "' has dtype ", moe::name(t->dtype), " but config.json says torch_dtype ",
                           moe::name(*config_.dtype));
    taken_.insert(name);
    return *t;
  }
  WeightMatrix matrix(const std::string& name, index_t rows, index_t cols) { return take(name, {rows, cols}).matrix(); }
  /// Rows [first, first + rows) of a taken tensor, seen as a [rows, cols] matrix.
  static WeightMatrix rows_of(const io::TensorView& t, index_t first, index_t rows, index_t cols) {
    return {t.data + std::size_t(bytes_of(t.dtype, first * cols)), t.dtype, rows, cols};
  }
  std::vector<float> vector(const std::string& name, index_t n) {
    const io::TensorView& t = take(name, {n});
    std::vector<float> v(static_cast<std::size_t>(n));
    widen_to_float(t.data, t.dtype, 0, n, v.data());
    return v;
  }

  /// Throws if the checkpoint holds tensors no one took.
  void require_all_taken() const {
    std::vector<std::string> left;
    for (const std::string& n : ckpt_.names())
      if (!taken_.count(n) && !ignorable(n)) left.push_back(n);
    if (left.empty()) return;
    std::string list;
    for (std::size_t i = 0; i < left.size() && i < 5; ++i) list += (i ? ", '" : "'") + left[i] + "'";
    if (left.size() > 5) list += moe::detail::cat(" and ", left.size() - 5, " more");
    throw Error(ErrorCode::bad_file,
                moe::detail::cat(ckpt_.dir().string(), ": ", left.size(),
                                 " tensor(s) that a Mixtral with this config.json does not have: ", list));
  }

 private:
  /// Old transformers versions saved RoPE's inverse frequencies, a buffer
  /// computed from rope_theta; it carries nothing we do not recompute.
  static bool ignorable(const std::string& n) {
    const std::string suffix = "rotary_emb.inv_freq";
    return n.size() >= suffix.size() && n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0;
  }

  const io::Checkpoint& ckpt_;
  const Config& config_;
  std::set<std::string> taken_;
};

}  // namespace detail

/// Views every weight of the checkpoint, checked against `c`.
inline Weights load_weights(const io::Checkpoint& ckpt, const Config& c) {
  detail::TensorClaims claims(ckpt, c);
  const index_t H = c.hidden_size, F = c.intermediate_size;
  Weights w;
  w.embed = claims.matrix(names::embed, c.vocab_size, H);
  for (index_t l = 0; l < c.num_layers; ++l) {
    const std::string p = names::layer(l);
    DecoderLayerWeights d;
    d.input_norm = claims.vector(p + "input_layernorm.weight", H);
    d.post_norm = claims.vector(p + "post_attention_layernorm.weight", H);
    d.q = claims.matrix(p + "self_attn.q_proj.weight", c.q_width(), H);
    d.k = claims.matrix(p + "self_attn.k_proj.weight", c.kv_width(), H);
    d.v = claims.matrix(p + "self_attn.v_proj.weight", c.kv_width(), H);
    d.o = claims.matrix(p + "self_attn.o_proj.weight", H, c.q_width());
    if (c.dense()) {
      if (!w.dense_router) w.dense_router = std::make_shared<const std::vector<float>>(std::size_t(H), 0.0f);
      d.moe.router.gate = weight_view(w.dense_router->data(), 1, H);
      d.moe.experts.push_back({.gate = claims.matrix(names::mlp(l, "gate_proj"), F, H),
                               .up = claims.matrix(names::mlp(l, "up_proj"), F, H),
                               .down = claims.matrix(names::mlp(l, "down_proj"), H, F)});
    } else if (ckpt.find(names::fused_gate_up(l))) {
      const index_t E = c.num_experts;
      const io::TensorView& gate_up = claims.take(names::fused_gate_up(l), {E, 2 * F, H});
      const io::TensorView& down = claims.take(names::fused_down(l), {E, H, F});
      d.moe.router.gate = claims.matrix(names::fused_router(l), E, H);
      for (index_t e = 0; e < E; ++e)
        d.moe.experts.push_back({.gate = claims.rows_of(gate_up, 2 * F * e, F, H),
                                 .up = claims.rows_of(gate_up, 2 * F * e + F, F, H),
                                 .down = claims.rows_of(down, H * e, H, F)});
    } else {
      d.moe.router.gate = claims.matrix(names::router(l), c.num_experts, H);
      for (index_t e = 0; e < c.num_experts; ++e)
        d.moe.experts.push_back({.gate = claims.matrix(names::expert(l, e, "w1"), F, H),
                                 .up = claims.matrix(names::expert(l, e, "w3"), F, H),
                                 .down = claims.matrix(names::expert(l, e, "w2"), H, F)});
    }
    w.layers.push_back(std::move(d));
  }
  w.final_norm = claims.vector(names::final_norm, H);
  if (c.tie_word_embeddings) {
    // Tied: the output projection is the embedding. A stored lm_head is
    // checked but not used, as transformers overwrites it when it ties.
    if (ckpt.find(names::lm_head)) claims.matrix(names::lm_head, c.vocab_size, H);
    w.lm_head = w.embed;
  } else {
    w.lm_head = claims.matrix(names::lm_head, c.vocab_size, H);
  }
  claims.require_all_taken();
  return w;
}

}  // namespace moe::mixtral
