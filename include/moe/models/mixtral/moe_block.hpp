#pragma once
/// \file moe_block.hpp
/// Mixtral's sparse FFN: the core library's presets::Mixtral layer, with
/// top-k fixed by the checkpoint's num_experts_per_tok at run time.
///
/// A layer's k is a compile-time policy parameter (TopK<K>); a checkpoint's
/// is a number in config.json. SparseBlock holds the layer for the k the
/// config names, one of 1 to 4, and forwards to it.

#include <variant>

#include "moe/layer/presets.hpp"

namespace moe::mixtral {

template <BackendPolicy B>
class SparseBlock {
 public:
  static constexpr int max_k = 4;

  SparseBlock(int k, LayerConfig config, LayerWeights weights, B backend)
      : layer_(make(k, config, std::move(weights), std::move(backend))) {}

  int k() const noexcept {
    return std::visit([](const auto& l) { return l.top_k; }, layer_);
  }

  /// Packs the experts for the backend's fast kernel; bytes it costs (0 if none).
  std::size_t pack_weights() const {
    return std::visit([](const auto& l) { return l.pack_weights(); }, layer_);
  }

  /// y (no residual), the routing and its statistics for the rows of x.
  Output forward(MatrixView<const float> x) const {
    return std::visit([&](const auto& l) { return l.forward(x); }, layer_);
  }

 private:
  template <int K>
  using Layer = PresetLayer<presets::MixtralTopK<K>, B>;
  using Any = std::variant<Layer<1>, Layer<2>, Layer<3>, Layer<4>>;

  static Any make(int k, LayerConfig c, LayerWeights w, B b) {
    switch (k) {
      case 1:
        return make_layer<presets::MixtralTopK<1>, B>(c, std::move(w), std::move(b));
      case 2:
        return make_layer<presets::MixtralTopK<2>, B>(c, std::move(w), std::move(b));
      case 3:
        return make_layer<presets::MixtralTopK<3>, B>(c, std::move(w), std::move(b));
      case 4:
        return make_layer<presets::MixtralTopK<4>, B>(c, std::move(w), std::move(b));
    }
    throw Error(ErrorCode::unsupported,
                moe::detail::cat("Mixtral: num_experts_per_tok = ", k, " is not supported (1 to ", max_k, ")"));
  }

  Any layer_;
};

}  // namespace moe::mixtral
