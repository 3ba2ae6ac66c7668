#pragma once
/// \file expert.hpp
/// Expert<FFN>: the expert policy of a layer, plus a one-token reference
/// application that examples and tests use to check layers by hand.

#include <string_view>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/core/view.hpp"
#include "moe/expert/ffn.hpp"

namespace moe {

template <FFN F>
struct Expert {
  using ffn = F;
  using activation = typename F::activation;

  /// Checks one expert's weights: shapes, and one dtype for all matrices
  /// (a kernel reads them with one element type).
  static void validate(const ExpertWeights& w, index_t d_model, index_t d_ff, index_t e) {
    const auto label = [e](std::string_view m) { return detail::cat("expert ", e, " ", m); };
    if constexpr (F::gated) detail::require_weight(w.gate, label("gate (w1)"), d_ff, d_model);
    detail::require_weight(w.up, label(F::gated ? "up (w3)" : "up (wi)"), d_ff, d_model);
    detail::require_weight(w.down, label(F::gated ? "down (w2)" : "down (wo)"), d_model, d_ff);
    if constexpr (F::gated)
      detail::require(w.gate.dtype == w.up.dtype, ErrorCode::dtype_mismatch, label("weights"), ": gate is ",
                      name(w.gate.dtype), " but up is ", name(w.up.dtype));
    detail::require(w.down.dtype == w.up.dtype, ErrorCode::dtype_mismatch, label("weights"), ": up is ",
                    name(w.up.dtype), " but down is ", name(w.down.dtype));
  }

  /// out = expert(x) for one token, plain loops in fp32: the readable truth.
  static void apply(const ExpertWeights& w, const float* x, float* out) {
    const index_t d_ff = w.up.rows, d_model = w.up.cols;
    const activation act{};
    std::vector<float> h(static_cast<std::size_t>(d_ff));
    for (index_t f = 0; f < d_ff; ++f) {
      float up = 0.0f;
      for (index_t i = 0; i < d_model; ++i) up += w.up.at(f, i) * x[i];
      if constexpr (F::gated) {
        float gate = 0.0f;
        for (index_t i = 0; i < d_model; ++i) gate += w.gate.at(f, i) * x[i];
        h[std::size_t(f)] = act(gate) * up;
      } else {
        h[std::size_t(f)] = act(up);
      }
    }
    for (index_t o = 0; o < d_model; ++o) {
      float acc = 0.0f;
      for (index_t f = 0; f < d_ff; ++f) acc += w.down.at(o, f) * h[std::size_t(f)];
      out[o] = acc;
    }
  }
};

template <class X>
concept ExpertPolicy = FFN<typename X::ffn>;

}  // namespace moe
