#pragma once
/// \file reference.hpp
/// backend::Reference: plain loops, one token at a time, written to be read.
/// Every fast backend is tested against it.

#include <span>
#include <string_view>

#include <vector>

#include "moe/backend/backend.hpp"
#include "moe/core/linear.hpp"
#include "moe/expert/expert.hpp"

namespace moe::backend {

struct Reference {
  static constexpr std::string_view name() { return "reference"; }

  void gather(const RoutingPlan& plan, MatrixView<const float> x, MatrixView<float> packed) const {
    for (index_t row = 0; row < plan.rows(); ++row) detail::gather_row(plan, x, packed, row);
  }

  /// out[row] = expert_e(packed[row]) for every row expert e owns; `drop`
  /// masks the hidden units in training (expert dropout).
  template <FFN F>
  void expert_ffn(const RoutingPlan& plan, MatrixView<const float> packed, std::span<const ExpertWeights> w,
                  MatrixView<float> out, const ExpertDropout& drop = {}) const {
    for (index_t e = 0; e < plan.experts; ++e)
      for (index_t row = plan.offsets[std::size_t(e)]; row < plan.offsets[std::size_t(e + 1)]; ++row)
        Expert<F>::apply(w[std::size_t(e)], packed.row(row), out.row(row), drop, detail::row_pair(plan, row));
  }

  /// Backward of expert_ffn, row by row: d_out [rows, d] is dL/d out; adds
  /// each expert's weight grads to grads[e] (skipped if grads is empty:
  /// experts frozen) and writes d_packed [rows, d] (skipped if empty).
  template <FFN F>
  void expert_backward(const RoutingPlan& plan, MatrixView<const float> packed, std::span<const ExpertWeights> w,
                       MatrixView<const float> d_out, const ExpertDropout& drop, std::span<ExpertGrads> grads,
                       MatrixView<float> d_packed) const {
    for (index_t e = 0; e < plan.experts; ++e)
      for (index_t row = plan.offsets[std::size_t(e)]; row < plan.offsets[std::size_t(e + 1)]; ++row)
        Expert<F>::backward(w[std::size_t(e)], packed.row(row), d_out.row(row),
                            grads.empty() ? nullptr : &grads[std::size_t(e)],
                            d_packed.empty() ? nullptr : d_packed.row(row), drop, detail::row_pair(plan, row));
  }

  void combine(const RoutingPlan& plan, const Routing& r, MatrixView<const float> expert_out,
               MatrixView<float> y) const {
    for (index_t t = 0; t < plan.tokens; ++t) detail::combine_token(plan, r, expert_out, y, t);
  }

  /// out[t, o] = Σ_i x[t, i] · W[o, i], one output row of W at a time.
  void linear(MatrixView<const float> x, const WeightMatrix& w, MatrixView<float> out) const {
    std::vector<float> row(static_cast<std::size_t>(w.cols));
    for (index_t o = 0; o < w.rows; ++o) {
      widen_to_float(w.data, w.dtype, o * w.cols, w.cols, row.data());
      for (index_t t = 0; t < x.rows; ++t) out(t, o) = detail::dot(x.row(t), row.data(), w.cols);
    }
  }
};

}  // namespace moe::backend
