#pragma once
/// \file reference.hpp
/// backend::Reference: plain loops, one token at a time, written to be read.
/// Every fast backend is tested against it. It runs the expert policy it is
/// given (X::apply, X::backward) on the weight views: nothing is copied, so
/// nothing it prepares can go stale.

#include <span>
#include <string_view>
#include <vector>

#include "moe/backend/backend.hpp"
#include "moe/backend/host_stages.hpp"
#include "moe/core/linear.hpp"

namespace moe::backend {

struct Reference : HostStages {
  using Prepared = PreparedViews;
  struct Workspace : HostRows {
    ExpertScratch expert;  ///< one token's hidden units
  };

  static constexpr std::string_view name() { return "reference"; }

  /// The views themselves (packing has nothing to offer plain loops).
  Prepared prepare(std::span<const ExpertWeights> w, PrepareOptions = {}) const { return {{}, {w.begin(), w.end()}}; }

  /// out[row] = X(rows[row]) for every row expert e owns; `drop` masks the
  /// hidden units in training (expert dropout).
  template <ExpertPolicy X>
  void experts(const RoutingPlan& plan, const Prepared& w, MatrixView<const float> rows, MatrixView<float> out,
               Workspace& ws, const ExpertDropout& drop = {}) const {
    for (index_t e = 0; e < plan.experts; ++e)
      for (index_t row = plan.first_row(e); row < plan.first_row(e + 1); ++row)
        X::apply(w.experts[std::size_t(e)], rows.row(row), out.row(row), drop, row_pair(plan, row), ws.expert);
  }

  /// Backward of experts, row by row: d_out [rows, d] is dL/d out; adds
  /// each expert's weight grads to grads[e] (skipped if grads is empty:
  /// experts frozen) and writes d_rows [rows, d] (skipped if empty).
  template <ExpertPolicy X>
  void experts_backward(const RoutingPlan& plan, const Prepared& w, MatrixView<const float> rows,
                        MatrixView<const float> d_out, Workspace&, const ExpertDropout& drop,
                        std::span<ExpertGrads> grads, MatrixView<float> d_rows) const {
    for (index_t e = 0; e < plan.experts; ++e)
      for (index_t row = plan.first_row(e); row < plan.first_row(e + 1); ++row)
        X::backward(w.experts[std::size_t(e)], rows.row(row), d_out.row(row),
                    grads.empty() ? nullptr : &grads[std::size_t(e)], d_rows.empty() ? nullptr : d_rows.row(row), drop,
                    row_pair(plan, row));
  }

  /// out[t, o] = Σ_i x[t, i] · W[o, i], one output row of W at a time.
  void linear(MatrixView<const float> x, const WeightMatrix& w, MatrixView<float> out) const {
    std::vector<float> row(static_cast<std::size_t>(w.cols));
    for (index_t o = 0; o < w.rows; ++o) {
      widen_to_float(w.data, w.dtype, o * w.cols, w.cols, row.data());
      for (index_t t = 0; t < x.rows; ++t) out(t, o) = moe::detail::dot(x.row(t), row.data(), w.cols);
    }
  }
};

}  // namespace moe::backend
