#pragma once
/// \file moe_block.hpp
/// Mixtral's sparse FFN: the core library's Mixtral layer with top-k taken
/// from the checkpoint's num_experts_per_tok at run time (RuntimeTopK: one
/// layer type for any k), and a workspace of its own, reused by every call
/// (decoding a token allocates no expert buffers).

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
      : layer_(config, std::move(weights), typename MixtralAnyK::router({}, {}, RuntimeTopK{.n = k}), {},
               presets::Mixtral::make_loss(), std::move(backend)) {}

  int k() const noexcept { return layer_.router().selection().n; }
  const Layer& layer() const noexcept { return layer_; }

  /// Packs the experts for the backend's fast kernel; bytes it costs (0 if none).
  std::size_t pack_weights() { return layer_.pack_weights(); }

  /// y (no residual), the routing and its statistics for the rows of x, in
  /// the block's workspace (valid until the next call). One call at a time:
  /// Model serialises its forward calls.
  const Output& forward(MatrixView<const float> x) const { return layer_.forward(x, ws_); }

 private:
  Layer layer_;
  mutable typename Layer::workspace_type ws_;
};

}  // namespace moe::mixtral
