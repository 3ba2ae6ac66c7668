#pragma once
/// \file ffn.hpp
/// The feed-forward networks an expert can be, and the weights each reads.
///
///   gated (SwiGLU, GeGLU):  out = down( act(gate·x) ⊙ (up·x) )   3 matrices
///   plain MLP:              out = down( act(up·x) )               2 matrices
///
/// Names map to checkpoints: Mixtral w1 = gate, w3 = up, w2 = down;
/// Switch/T5 wi = up, wo = down.

#include <concepts>
#include <string_view>

#include "moe/core/view.hpp"
#include "moe/expert/activation.hpp"

namespace moe {

/// One expert's weights, as views. `gate` is unused (empty) for a plain MLP.
struct ExpertWeights {
  WeightMatrix gate;  ///< [d_ff, d_model]  Mixtral w1 (gated FFNs only)
  WeightMatrix up;    ///< [d_ff, d_model]  Mixtral w3, T5 wi
  WeightMatrix down;  ///< [d_model, d_ff]  Mixtral w2, T5 wo
};

/// act(gate·x) ⊙ (up·x), then down: the GLU family (Shazeer 2020).
template <Activation A>
struct GatedFFN {
  using activation = A;
  static constexpr bool gated = true;
  static constexpr int num_projections = 3;
};

/// act(up·x), then down: the classic two-matrix FFN.
template <Activation A>
struct MLP {
  using activation = A;
  static constexpr bool gated = false;
  static constexpr int num_projections = 2;
};

using SwiGLU = GatedFFN<SiLU>;  ///< Mixtral: w2(silu(w1 x) * w3 x)
using GeGLU = GatedFFN<GeLU>;   ///< GeLU-gated (Shazeer 2020)

template <class F>
concept FFN = Activation<typename F::activation> && requires {
  { F::gated } -> std::convertible_to<bool>;
  { F::num_projections } -> std::convertible_to<int>;
};

}  // namespace moe
