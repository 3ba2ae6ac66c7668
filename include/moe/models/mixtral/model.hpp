#pragma once
/// \file model.hpp
/// The Mixtral decoder: a Hugging Face checkpoint folder, loaded and run.
///
///   x = embed[ids]                                   (no scaling)
///   for each layer:
///     x = x + Attention(RMSNorm_in(x))               (attention.hpp)
///     x = x + SparseMoE(RMSNorm_post(x))             (moe_block.hpp)
///   logits = RMSNorm_final(x) · lm_headᵀ
///
/// Mistral and Llama, the dense models Mixtral was built from, are the same
/// decoder with one SwiGLU FFN per layer: it runs as a block of one expert
/// that every token reaches with weight softmax([0]) = 1, so the FFN costs
/// what it would alone and no routing is reported.
///
/// Loading maps the files and checks every tensor against config.json before
/// any compute; weights stay where the mapping put them, in their stored
/// dtype. Activations, the KV cache and every accumulation are fp32.

#include <cstdint>
#include <filesystem>
#include <mutex>
#include <span>
#include <vector>

#include "moe/backend/default.hpp"
#include "moe/io/checkpoint.hpp"
#include "moe/loss/switch_balance.hpp"
#include "moe/loss/z_loss.hpp"
#include "moe/models/mixtral/attention.hpp"
#include "moe/models/mixtral/config.hpp"
#include "moe/models/mixtral/kv_cache.hpp"
#include "moe/models/mixtral/moe_block.hpp"
#include "moe/models/mixtral/rms_norm.hpp"
#include "moe/models/mixtral/rope.hpp"
#include "moe/models/mixtral/weights.hpp"

namespace moe::mixtral {

/// Which positions' logits a call computes: the prompt's all (scoring, the
/// golden checks) or the last one only (generation: V·H work instead of S·V·H).
enum class Logits { all, last };

/// Intermediates of one call, recorded when the caller passes a Trace.
struct Trace {
  struct Layer {
    Matrix attn_out;    ///< [S, H] attention output, before the residual add
    Matrix moe_out;     ///< [S, H] sparse block output, before the residual add
    Matrix hidden_out;  ///< [S, H] residual stream after the layer
    AttentionTrace attention;
  };
  Matrix embeddings;  ///< [S, H]
  std::vector<Layer> layers;
  Matrix final_norm;  ///< [S, H]
};

struct StepOutput {
  Matrix logits;                 ///< [S, V], or [1, V] with Logits::last
  std::vector<Routing> routing;  ///< per layer: router logits, chosen experts, weights (none if dense)
};

/// The router losses of one call over all layers, as HF's
/// load_balancing_loss_func computes them: every layer's rows concatenated,
/// then E · Σ_e f_e · P_e with f counting every slot, and the z-loss.
struct RouterLosses {
  float balance = 0;
  float z = 0;
};
inline RouterLosses router_losses(const std::vector<Routing>& per_layer) {
  Routing all;
  for (const Routing& r : per_layer) {
    all.experts = r.experts;
    all.k = r.k;
    all.tokens += r.tokens;
    all.logits.insert(all.logits.end(), r.logits.begin(), r.logits.end());
    all.probs.insert(all.probs.end(), r.probs.begin(), r.probs.end());
    all.expert.insert(all.expert.end(), r.expert.begin(), r.expert.end());
  }
  const RoutingPlan unused;  // every_slot counting reads the routing only
  return {SwitchBalanceLoss{.counting = SlotCounting::every_slot}.value(all, unused), RouterZLoss{}.value(all)};
}

template <LinearBackend B = DefaultBackend>
class Model {
 public:
  /// Opens the checkpoint folder `dir` (config.json plus model.safetensors
  /// or the shards of model.safetensors.index.json), or a GGUF file: its
  /// weights stay in their stored ggml types (block-quantised ones too).
  explicit Model(const std::filesystem::path& dir, B backend = {})
      : config_(load_config(dir)), checkpoint_(dir), weights_(load_weights(checkpoint_, config_)), backend_(backend) {
    const LayerConfig moe_config{
        .d_model = config_.hidden_size, .d_ff = config_.intermediate_size, .num_experts = config_.num_experts};
    for (const DecoderLayerWeights& l : weights_.layers)
      blocks_.emplace_back(int(config_.experts_per_token), moe_config, l.moe, backend_);
  }

  /// Packs every layer's experts into the backend's fast layout (backend::Cpu:
  /// panels, a copy of the expert weights next to the mapped checkpoint).
  /// Returns the bytes it costs; 0 for a backend that runs on the views.
  std::size_t pack_experts() {
    std::size_t bytes = 0;
    for (auto& b : blocks_) bytes += b.pack_weights();
    return bytes;
  }

  const Config& config() const noexcept { return config_; }
  /// Views into the checkpoint's mapping: a temporary model has none to give.
  const Weights& weights() const& noexcept { return weights_; }
  const Weights& weights() const&& = delete;
  const io::Checkpoint& checkpoint() const& noexcept { return checkpoint_; }
  const io::Checkpoint& checkpoint() const&& = delete;
  const B& backend() const noexcept { return backend_; }

  AttentionShape attention_shape() const noexcept {
    return {config_.num_heads, config_.num_kv_heads, config_.head_dim, config_.sliding_window};
  }
  KvCache new_cache() const { return KvCache(config_.num_layers, config_.kv_width(), config_.sliding_window); }

  /// Runs `ids` at the next positions of `cache` (0.. for a new one), adds
  /// their keys and values to it, and returns the logits and the routing.
  /// The sparse blocks compute in one workspace the Model keeps across
  /// calls, so calls on one Model take turns (use one Model per thread, or
  /// batch, to run sequences at once).
  StepOutput forward(std::span<const std::int32_t> ids, KvCache& cache, Logits which = Logits::all,
                     Trace* trace = nullptr) const {
    std::lock_guard lock(forward_mutex_);
    const index_t S = index_t(ids.size()), H = config_.hidden_size, first = cache.next_position();
    check_tokens(ids, first);
    checkpoint_.require_unchanged();  // the weights are views of the mapped files
    Matrix x(S, H);                   // the residual stream
    for (index_t t = 0; t < S; ++t)
      widen_to_float(weights_.embed.data, weights_.embed.dtype, index_t(ids[std::size_t(t)]) * H, H, x.row(t).data());
    if (trace) {
      trace->embeddings = x;
      trace->layers.assign(std::size_t(config_.num_layers), {});
    }

    StepOutput out;
    const RopeTable rope(config_.rope_theta, config_.head_dim, first, S, config_.rope_pairs);
    Matrix normed(S, H), attn(S, H);
    for (index_t l = 0; l < config_.num_layers; ++l) {
      const DecoderLayerWeights& w = weights_.layers[std::size_t(l)];
      Trace::Layer* tl = trace ? &trace->layers[std::size_t(l)] : nullptr;

      rms_norm(x, w.input_norm, config_.rms_norm_eps, normed);
      attention(backend_, normed, {w.q, w.k, w.v, w.o}, attention_shape(), rope, first, cache.layer(l), attn,
                tl ? &tl->attention : nullptr);
      x += attn;

      rms_norm(x, w.post_norm, config_.rms_norm_eps, normed);
      const Output& moe = blocks_[std::size_t(l)].forward(normed, moe_workspace_);
      x += moe.y;
      if (tl) {
        tl->attn_out = attn;
        tl->moe_out = moe.y;
        tl->hidden_out = x;
      }
      if (!config_.dense()) out.routing.push_back(moe.routing);
    }
    cache.advance(S);

    rms_norm(x, weights_.final_norm, config_.rms_norm_eps, normed);
    if (trace) trace->final_norm = normed;
    const MatrixView<const float> head_in = which == Logits::all
                                                ? MatrixView<const float>(normed)
                                                : MatrixView<const float>(normed.row(S - 1).data(), 1, H);
    out.logits.resize(head_in.rows, config_.vocab_size);
    backend_.linear(head_in, weights_.lm_head, out.logits);
    return out;
  }

  /// Bytes of weight data the model reads (the mapped tensors).
  std::size_t weight_bytes() const { return checkpoint_.tensor_bytes(); }

 private:
  void check_tokens(std::span<const std::int32_t> ids, index_t first) const {
    moe::detail::require(!ids.empty(), ErrorCode::invalid_argument, "Mixtral: no tokens to run");
    for (std::size_t i = 0; i < ids.size(); ++i)
      moe::detail::require(ids[i] >= 0 && ids[i] < config_.vocab_size, ErrorCode::invalid_argument,
                           "Mixtral: token id ", ids[i], " at position ", first + index_t(i),
                           " is outside the vocabulary [0, ", config_.vocab_size, ")");
    moe::detail::require(first + index_t(ids.size()) <= config_.max_positions, ErrorCode::invalid_argument,
                         "Mixtral: positions ", first, " to ", first + index_t(ids.size()) - 1,
                         " exceed the model's context of ", config_.max_positions, " (max_position_embeddings)");
  }

  Config config_;
  io::Checkpoint checkpoint_;
  Weights weights_;
  B backend_;
  std::vector<SparseBlock<B>> blocks_;
  mutable
      typename SparseBlock<B>::Layer::workspace_type moe_workspace_;  ///< shared by the blocks, reused by every call
  mutable std::mutex forward_mutex_;
};

}  // namespace moe::mixtral
