#pragma once
/// \file backend.hpp
/// The Backend concept and the per-row data movement every backend shares.
///
/// A backend sees only the RoutingPlan, activations and expert weights, never
/// the routing policies. It does three things:
///   gather     x[token of row] → packed[row]                     [rows, d]
///   expert_ffn packed rows of expert e → expert e's FFN → out    [rows, d]
///   combine    y[t] = Σ_j weight[t, j] · out[row of (t, j)]      [T, d]
/// combine sums each token's slots in slot order, so y does not depend on
/// how rows were scheduled: no atomics, the same bits on any thread count.

#include <concepts>
#include <cstdint>
#include <span>
#include <string_view>

#include "moe/capacity/plan.hpp"
#include "moe/core/view.hpp"
#include "moe/expert/dropout.hpp"
#include "moe/expert/ffn.hpp"
#include "moe/expert/gradients.hpp"
#include "moe/routing/routing.hpp"

namespace moe {

template <class B>
concept BackendPolicy = requires(const B& b, const RoutingPlan& plan, const Routing& r, MatrixView<const float> in,
                                 MatrixView<float> out, std::span<const ExpertWeights> w) {
  { B::name() } -> std::convertible_to<std::string_view>;
  b.gather(plan, in, out);
  b.template expert_ffn<SwiGLU>(plan, in, w, out);
  b.combine(plan, r, in, out);
};

/// A backend that can train: expert FFNs with expert dropout, and their
/// backward (weight grads per expert, input grads per row).
template <class B>
concept TrainableBackend = BackendPolicy<B> &&
    requires(const B& b, const RoutingPlan& plan, MatrixView<const float> in, MatrixView<float> out,
             std::span<const ExpertWeights> w, const ExpertDropout& drop, std::span<ExpertGrads> g) {
  b.template expert_ffn<SwiGLU>(plan, in, w, out, drop);
  b.template expert_backward<SwiGLU>(plan, in, w, in, drop, g, out);
};

/// A backend that also runs dense layers (attention projections, lm_head):
/// out[T, N] = x[T, K] · Wᵀ for W [N, K] of any weight dtype.
template <class B>
concept LinearBackend = BackendPolicy<B> &&
    requires(const B& b, MatrixView<const float> x, const WeightMatrix& w, MatrixView<float> out) {
  b.linear(x, w, out);
};

namespace detail {

/// The (token, slot) pair of a gathered row, as t·k + j: what keys its
/// dropout mask, whichever row the plan put it in.
inline std::uint64_t row_pair(const RoutingPlan& plan, index_t row) noexcept {
  return std::uint64_t(plan.row_token[std::size_t(row)]) * std::uint64_t(plan.k) +
         std::uint64_t(plan.row_slot[std::size_t(row)]);
}

/// Copies token row_token[row]'s activations into packed row `row`.
inline void gather_row(const RoutingPlan& plan, MatrixView<const float> x, MatrixView<float> packed,
                       index_t row) noexcept {
  const float* src = x.row(plan.row_token[std::size_t(row)]);
  std::copy(src, src + x.cols, packed.row(row));
}

/// y[t] = Σ_j weight[t, j] · out[row(t, j)], slots in order; 0 if all dropped.
inline void combine_token(const RoutingPlan& plan, const Routing& r, MatrixView<const float> expert_out,
                          MatrixView<float> y, index_t t) noexcept {
  float* yt = y.row(t);
  std::fill(yt, yt + y.cols, 0.0f);
  for (int j = 0; j < plan.k; ++j) {
    const std::int32_t row = plan.slot_row[std::size_t(t * plan.k + j)];
    if (row < 0) continue;  // dropped or empty: contributes nothing, the residual carries it
    const float w = r.weight_at(t, j);
    const float* src = expert_out.row(row);
    for (index_t i = 0; i < y.cols; ++i) yt[i] += w * src[i];
  }
}

}  // namespace detail
}  // namespace moe
