#pragma once
/// \file moe_block.hpp
/// Mixtral's sparse FFN: the core library's Mixtral layer with top-k taken
/// from the checkpoint's num_experts_per_tok at run time (RuntimeTopK: one
/// layer type for any k). It computes in a workspace the caller keeps
/// (Model keeps one for all its blocks: they run one after another, so one
/// set of buffers serves them all and stays in cache; decoding a token
/// allocates no expert buffers).

#include "moe/layer/presets.hpp"

namespace moe::mixtral {

/// presets::Mixtral with k chosen at run time.
struct MixtralAnyK {
  using router = Router<RuntimeTopK, NoNoise, SoftmaxThenTopK>;
  using expert = Expert<SwiGLU>;
  using capacity = Dropless;
  using loss = SwitchBalanceLoss;
};

template <BackendPolicy B>
class SparseBlock {
 public:
  using Layer = PresetLayer<MixtralAnyK, B>;

  SparseBlock(int k, LayerConfig config, LayerWeights weights, B backend)
      : layer_(config, std::move(weights), typename MixtralAnyK::router(RuntimeTopK{.n = k}), {},
               presets::Mixtral::make_loss(), std::move(backend)) {}

  int k() const noexcept { return layer_.router().selection().n; }
  const Layer& layer() const noexcept { return layer_; }

  /// Packs the experts for the backend's fast kernel; bytes it costs (0 if none).
  std::size_t pack_weights() { return layer_.pack_weights(); }

  /// y (no residual), the routing and its statistics for the rows of x, in
  /// `ws` (valid until its next use).
  const Output& forward(MatrixView<const float> x, typename Layer::workspace_type& ws) const {
    return layer_.forward(x, ws);
  }

 private:
  Layer layer_;
};

}  // namespace moe::mixtral
