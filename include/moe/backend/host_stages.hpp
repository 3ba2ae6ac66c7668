#pragma once
/// \file host_stages.hpp
/// The stages every host backend shares, written once as plain loops:
/// routing and planning (the router policy and the counting sort, on host
/// memory), gather, combine and their backward. A host backend derives from
/// HostStages and replaces what it does faster (backend::Cpu runs gather
/// and combine on its thread pool); a device backend implements them all.

#include <algorithm>
#include <optional>
#include <span>

#include "moe/backend/backend.hpp"
#include "moe/core/linear.hpp"

namespace moe::backend {

/// Grows m to at least [rows, cols] (never shrinks: a smaller call uses the
/// first rows) and returns a view of those rows.
inline MatrixView<float> grow_rows(Matrix& m, index_t rows, index_t cols) {
  if (m.rows() < rows || m.cols() != cols) m.resize(std::max(rows, index_t(m.cols() == cols ? m.rows() : 0)), cols);
  return {m.data(), rows, cols};
}

/// Expert input and output rows in host memory (grown, never shrunk).
struct HostRows {
  Matrix input, output;  ///< [rows, d] each

  MatrixView<float> input_rows(index_t rows, index_t d) { return grow_rows(input, rows, d); }
  MatrixView<float> output_rows(index_t rows, index_t d) { return grow_rows(output, rows, d); }
};

struct HostStages {
  using memory_space = memory::Host;

  /// The router policy, on the host.
  template <RoutingPolicy R, class Ws>
  void route(const R& router, MatrixView<const float> x, const RouterWeights& w, const RouteContext& ctx, Routing& out,
             RouterScratch& scratch, Ws&) const {
    router.route(x, w, ctx, out, scratch);
  }

  /// The counting sort of (token, slot) pairs by expert (capacity/plan.hpp).
  template <class Ws>
  void plan(const Routing& r, std::optional<index_t> capacity, Priority priority, RoutingPlan& out,
            PlanScratch& scratch, Ws&) const {
    build_plan(r, capacity, priority, out, scratch);
  }

  /// rows[row] = x[token of row].
  template <class Ws>
  void gather(const RoutingPlan& plan, MatrixView<const float> x, MatrixView<float> rows, Ws&) const {
    for (index_t row = 0; row < plan.rows(); ++row) gather_row(plan, x, rows, row);
  }

  /// y[t] = Σ_j weight[t, j] · rows_out[row(t, j)], slots in order.
  template <class Ws>
  void combine(const RoutingPlan& plan, MatrixView<const float> rows_out, MatrixView<float> y, Ws&) const {
    for (index_t t = 0; t < plan.tokens; ++t) combine_token(plan, rows_out, y, t);
  }

  /// Backward of combine: d_weight[t, j] = dy[t] · rows_out[row(t, j)] and
  /// d_rows[row(t, j)] = weight[t, j] · dy[t]; slots without a row get 0
  /// (y does not depend on them).
  template <class Ws>
  void combine_backward(const RoutingPlan& plan, MatrixView<const float> rows_out, MatrixView<const float> dy,
                        std::span<float> d_weight, MatrixView<float> d_rows, Ws&) const {
    for (index_t t = 0; t < plan.tokens; ++t) combine_backward_token(plan, rows_out, dy, d_weight, d_rows, t);
  }

  /// Backward of gather: dx[t] += Σ_j d_rows[row(t, j)], slots in order.
  template <class Ws>
  void gather_backward(const RoutingPlan& plan, MatrixView<const float> d_rows, MatrixView<float> dx, Ws&) const {
    for (index_t t = 0; t < plan.tokens; ++t) gather_backward_token(plan, d_rows, dx, t);
  }

 protected:
  static void gather_row(const RoutingPlan& plan, MatrixView<const float> x, MatrixView<float> rows,
                         index_t row) noexcept {
    const float* src = x.row(plan.row_token[std::size_t(row)]);
    std::copy(src, src + x.cols, rows.row(row));
  }

  static void combine_token(const RoutingPlan& plan, MatrixView<const float> rows_out, MatrixView<float> y,
                            index_t t) noexcept {
    float* yt = y.row(t);
    std::fill(yt, yt + y.cols, 0.0f);
    for (int j = 0; j < plan.k; ++j) {
      const std::size_t slot = std::size_t(t * plan.k + j);
      const std::int32_t row = plan.slot_row[slot];
      if (row < 0) continue;  // dropped or empty: contributes nothing, the residual carries it
      const float w = plan.slot_weight[slot];
      const float* src = rows_out.row(row);
      for (index_t i = 0; i < y.cols; ++i) yt[i] += w * src[i];
    }
  }

  static void combine_backward_token(const RoutingPlan& plan, MatrixView<const float> rows_out,
                                     MatrixView<const float> dy, std::span<float> d_weight, MatrixView<float> d_rows,
                                     index_t t) noexcept {
    for (int j = 0; j < plan.k; ++j) {
      const std::size_t slot = std::size_t(t * plan.k + j);
      const std::int32_t row = plan.slot_row[slot];
      if (row < 0) {
        d_weight[slot] = 0.0f;
        continue;
      }
      d_weight[slot] = moe::detail::dot(dy.row(t), rows_out.row(row), dy.cols);
      const float w = plan.slot_weight[slot];
      float* d = d_rows.row(row);
      for (index_t i = 0; i < dy.cols; ++i) d[i] = w * dy(t, i);
    }
  }

  static void gather_backward_token(const RoutingPlan& plan, MatrixView<const float> d_rows, MatrixView<float> dx,
                                    index_t t) noexcept {
    float* d = dx.row(t);
    for (int j = 0; j < plan.k; ++j)
      if (const std::int32_t row = plan.slot_row[std::size_t(t * plan.k + j)]; row >= 0) {
        const float* src = d_rows.row(row);
        for (index_t i = 0; i < dx.cols; ++i) d[i] += src[i];
      }
  }
};

/// The (token, slot) pair of a gathered row, as t·k + j: what keys its
/// dropout mask, whichever row the plan put it in.
inline std::uint64_t row_pair(const RoutingPlan& plan, index_t row) noexcept {
  return std::uint64_t(plan.row_token[std::size_t(row)]) * std::uint64_t(plan.k) +
         std::uint64_t(plan.row_slot[std::size_t(row)]);
}

/// Expert views as prepared by a backend that computes on them directly.
struct PreparedViews {
  PreparedFrom from;
  std::vector<ExpertWeights> experts;
  std::size_t bytes() const noexcept { return 0; }
};

}  // namespace moe::backend
