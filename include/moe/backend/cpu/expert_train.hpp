#pragma once
/// \file expert_train.hpp
/// One expert's rows in training, as dense GEMMs (Eigen): the forward with
/// expert dropout (backend::EigenGemm), and a backward that recomputes the
/// forward (backend::EigenGemm, and backend::Cpu when its training forward
/// kept nothing: few rows per expert, or non-fp32 weights; otherwise Cpu
/// trains on the panel kernel, expert_train_panels.hpp). One expert per
/// task, so an expert's weight gradients are summed by one thread in row
/// order (the same bits for any thread count).
///
///   forward   H_g = X·W_gᵀ, H_u = X·W_uᵀ, A = M ⊙ act(H_g) ⊙ H_u, Out = A·W_dᵀ
///   backward  dW_d = dOutᵀ·A, dA = M ⊙ (dOut·W_d),
///             dH_u = dA ⊙ act(H_g), dH_g = dA ⊙ H_u ⊙ act'(H_g),
///             dW_u = dH_uᵀ·X, dW_g = dH_gᵀ·X, dX = dH_u·W_u + dH_g·W_g
/// (plain MLP: A = M ⊙ act(H_u), dH_u = dA ⊙ act'(H_u)).

#include <Eigen/Core>

#include <span>
#include <vector>

#include "moe/backend/host_stages.hpp"
#include "moe/core/linear.hpp"
#include "moe/detail/thread_pool.hpp"
#include "moe/expert/expert.hpp"

namespace moe::backend::cpu {

using RowsMap = Eigen::Map<const Matrix, 0, Eigen::OuterStride<>>;
using MutRowsMap = Eigen::Map<Matrix, 0, Eigen::OuterStride<>>;

/// Rows [r0, r0 + n) of a view as an Eigen map.
inline RowsMap rows_of(MatrixView<const float> v, index_t r0, index_t n) {
  return RowsMap(v.row(r0), n, v.cols, Eigen::OuterStride<>(v.row_stride));
}
inline MutRowsMap rows_of(MatrixView<float> v, index_t r0, index_t n) {
  return MutRowsMap(v.row(r0), n, v.cols, Eigen::OuterStride<>(v.row_stride));
}

/// A weight as fp32: mapped when F32, widened once otherwise.
class Fp32Weight {
 public:
  explicit Fp32Weight(const WeightMatrix& w)
      : map_(w.empty() ? nullptr : moe::detail::as_float(w, widened_), w.rows, w.cols, Eigen::OuterStride<>(w.cols)) {}
  Fp32Weight(const Fp32Weight&) = delete;  // the map may point into widened_
  Fp32Weight& operator=(const Fp32Weight&) = delete;
  const RowsMap& operator()() const noexcept { return map_; }

 private:
  std::vector<float> widened_;  // declared before map_: filled before the map is built
  RowsMap map_;
};

/// Pre-activations and masked hidden of one expert's rows.
template <FFN F>
struct ExpertActivations {
  Matrix pre_gate, pre_up, hidden, mask;  // [n, d_ff]

  ExpertActivations(const RoutingPlan& plan, index_t r0, const RowsMap& x, const Fp32Weight* gate, const Fp32Weight& up,
                    const ExpertDropout& drop) {
    const typename F::activation act{};
    const index_t n = x.rows(), d_ff = up().rows();
    pre_up.noalias() = x * up().transpose();
    if constexpr (F::gated) pre_gate.noalias() = x * (*gate)().transpose();
    hidden.resize(n, d_ff);
    mask.resize(drop.active() ? n : 0, d_ff);
    for (index_t i = 0; i < n; ++i) {
      const std::uint64_t pair = row_pair(plan, r0 + i);
      for (index_t f = 0; f < d_ff; ++f) {
        float h;
        if constexpr (F::gated)
          h = act(pre_gate(i, f)) * pre_up(i, f);
        else
          h = act(pre_up(i, f));
        if (drop.active()) h *= (mask(i, f) = drop.scale(pair, f));
        hidden(i, f) = h;
      }
    }
  }
};

/// out rows [r0, r0 + n) = expert(packed rows), with dropout.
template <FFN F>
void expert_forward(const RoutingPlan& plan, index_t r0, index_t n, MatrixView<const float> packed,
                    const ExpertWeights& w, const ExpertDropout& drop, MatrixView<float> out) {
  const Fp32Weight up(w.up), down(w.down), gate(w.gate);
  const RowsMap x = rows_of(packed, r0, n);
  const ExpertActivations<F> a(plan, r0, x, &gate, up, drop);
  rows_of(out, r0, n).noalias() = a.hidden * down().transpose();
}

/// Backward of one expert's rows: adds to g (if not null), writes d_packed
/// rows (if not empty).
template <FFN F>
void expert_backward(const RoutingPlan& plan, index_t r0, index_t n, MatrixView<const float> packed,
                     const ExpertWeights& w, MatrixView<const float> d_out, const ExpertDropout& drop, ExpertGrads* g,
                     MatrixView<float> d_packed) {
  const typename F::activation act{};
  const Fp32Weight up(w.up), down(w.down), gate(w.gate);
  const RowsMap x = rows_of(packed, r0, n), dout = rows_of(d_out, r0, n);
  const ExpertActivations<F> a(plan, r0, x, &gate, up, drop);
  if (g) g->down.noalias() += dout.transpose() * a.hidden;
  Matrix dh = dout * down();  // [n, d_ff]
  if (drop.active()) dh.array() *= a.mask.array();
  Matrix d_up(n, dh.cols()), d_gate(F::gated ? n : 0, dh.cols());
  for (index_t i = 0; i < n; ++i)
    for (index_t f = 0; f < dh.cols(); ++f) {
      if constexpr (F::gated) {
        const float gv = a.pre_gate(i, f);
        d_up(i, f) = dh(i, f) * act(gv);
        d_gate(i, f) = dh(i, f) * a.pre_up(i, f) * act.derivative(gv);
      } else {
        d_up(i, f) = dh(i, f) * act.derivative(a.pre_up(i, f));
      }
    }
  if (g) {
    g->up.noalias() += d_up.transpose() * x;
    if constexpr (F::gated) g->gate.noalias() += d_gate.transpose() * x;
  }
  if (!d_packed.empty()) {
    auto dx = rows_of(d_packed, r0, n);
    dx.noalias() = d_up * up();
    if constexpr (F::gated) dx.noalias() += d_gate * gate();
  }
}

/// Runs fn(e, first row, rows) for every expert with rows, one task each.
template <class Fn>
void for_each_expert(moe::detail::ThreadPool& pool, const RoutingPlan& plan, Fn&& fn) {
  pool.parallel_for(plan.experts, [&](std::int64_t e, int) {
    const index_t n = plan.kept(index_t(e));
    if (n > 0) fn(index_t(e), plan.first_row(index_t(e)), n);
  });
}

/// The training forward of every expert (with dropout), one task per expert.
template <FFN F>
void train_forward(moe::detail::ThreadPool& pool, const RoutingPlan& plan, MatrixView<const float> rows,
                   std::span<const ExpertWeights> w, const ExpertDropout& drop, MatrixView<float> out) {
  for_each_expert(pool, plan, [&](index_t e, index_t r0, index_t n) {
    expert_forward<F>(plan, r0, n, rows, w[std::size_t(e)], drop, out);
  });
}

/// The backward of every expert, one task per expert: each expert's weight
/// gradients summed in row order by one thread (the same bits on any thread count).
template <FFN F>
void train_backward(moe::detail::ThreadPool& pool, const RoutingPlan& plan, MatrixView<const float> rows,
                    std::span<const ExpertWeights> w, MatrixView<const float> d_out, const ExpertDropout& drop,
                    std::span<ExpertGrads> grads, MatrixView<float> d_rows) {
  for_each_expert(pool, plan, [&](index_t e, index_t r0, index_t n) {
    expert_backward<F>(plan, r0, n, rows, w[std::size_t(e)], d_out, drop,
                       grads.empty() ? nullptr : &grads[std::size_t(e)], d_rows);
  });
}

}  // namespace moe::backend::cpu
