#pragma once
/// \file eigen_gemm.hpp
/// backend::EigenGemm: each expert's rows as three dense Eigen GEMMs, one
/// task per expert on a thread pool. The plainest fast backend: what a C++
/// engineer would write first with Eigen at hand, kept as a peer to measure
/// the panel kernels against, and as the proof that the execution contract
/// is the whole of what a backend needs: this file is all of it (nothing in
/// layer/ knows it exists).
///
///   H = X·W_upᵀ,  G = X·W_gateᵀ,  H = act(G) ⊙ H (gated) or act(H),  Y = H·W_downᵀ
///
/// Weights: fp32 views are mapped as they are; BF16/F16 experts (or any,
/// with PrepareOptions::pack) are widened once into fp32 matrices the
/// prepared weights own. Training reuses the Eigen expert kernels of
/// cpu/expert_train.hpp.

#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include <Eigen/Core>

#include "moe/backend/backend.hpp"
#include "moe/backend/cpu/expert_train.hpp"
#include "moe/backend/host_stages.hpp"
#include "moe/detail/thread_pool.hpp"

namespace moe::backend {

class EigenGemm : public HostStages {
 public:
  using Map = Eigen::Map<const Matrix>;

  /// The experts as fp32 matrices: maps of the views, or owned widened copies.
  struct Prepared {
    PreparedFrom from;
    std::vector<ExpertWeights> views;                    ///< [E] what it was prepared from
    std::shared_ptr<const std::vector<Matrix>> widened;  ///< [E·3] gate, up, down as fp32 (null: views are F32)

    std::size_t bytes() const noexcept {
      std::size_t b = 0;
      if (widened)
        for (const Matrix& m : *widened) b += std::size_t(m.size()) * sizeof(float);
      return b;
    }
    /// Expert e's matrix i (0 gate, 1 up, 2 down) as fp32.
    Map matrix(std::size_t e, int i) const {
      if (widened) {
        const Matrix& m = (*widened)[3 * e + std::size_t(i)];
        return Map(m.data(), m.rows(), m.cols());
      }
      const ExpertWeights& w = views[e];
      const WeightMatrix& m = i == 0 ? w.gate : i == 1 ? w.up : w.down;
      return Map(static_cast<const float*>(m.data), m.rows, m.cols);
    }
  };

  struct Workspace : HostRows {
    Matrix hidden, gate;  ///< [rows, d_ff] each
  };

  static constexpr std::string_view name() { return "eigen-gemm"; }

  /// Runs on the process-wide pool that backend::Cpu<> shares too.
  EigenGemm() : pool_(moe::detail::shared_pool()) {}
  /// Uses `threads` threads of its own (one expert per task); 0 = the shared pool.
  explicit EigenGemm(int threads)
      : pool_(threads > 0 ? std::make_shared<moe::detail::ThreadPool>(threads) : moe::detail::shared_pool()) {}

  Prepared prepare(std::span<const ExpertWeights> w, PrepareOptions options = {}) const {
    Prepared p;
    p.views.assign(w.begin(), w.end());
    if (w.empty() || (!options.pack && w[0].up.dtype == DType::F32)) return p;
    auto widened = std::make_shared<std::vector<Matrix>>(3 * w.size());
    for (std::size_t e = 0; e < w.size(); ++e) {
      const WeightMatrix* m[3] = {&w[e].gate, &w[e].up, &w[e].down};
      for (int i = 0; i < 3; ++i) {
        if (m[i]->empty()) continue;
        Matrix& dst = (*widened)[3 * e + std::size_t(i)];
        dst.resize(m[i]->rows, m[i]->cols);
        widen_to_float(m[i]->data, m[i]->dtype, 0, m[i]->rows * m[i]->cols, dst.data());
      }
    }
    p.widened = std::move(widened);
    p.from.holds_copy = true;
    return p;
  }

  template <ExpertPolicy X>
  void experts(const RoutingPlan& plan, const Prepared& w, MatrixView<const float> rows, MatrixView<float> out,
               Workspace& ws, const ExpertDropout& drop = {}) const {
    using F = typename X::ffn;
    if (plan.rows() == 0) return;
    if (drop.active()) {  // training with expert dropout: the Eigen training kernels (fp32 views)
      return cpu::train_forward<F>(*pool_, plan, rows, w.views, drop, out);
    }
    const index_t d_ff = w.views[0].up.rows;
    grow_rows(ws.hidden, plan.rows(), d_ff);
    if constexpr (F::gated) grow_rows(ws.gate, plan.rows(), d_ff);
    const typename F::activation act{};
    cpu::for_each_expert(*pool_, plan, [&](index_t e, index_t r0, index_t n) {
      const auto x = cpu::rows_of(rows, r0, n);
      auto h = ws.hidden.middleRows(r0, n);
      h.noalias() = x * w.matrix(std::size_t(e), 1).transpose();
      if constexpr (F::gated) {
        auto g = ws.gate.middleRows(r0, n);
        g.noalias() = x * w.matrix(std::size_t(e), 0).transpose();
        for (index_t i = 0; i < n; ++i)
          for (index_t f = 0; f < d_ff; ++f) h(i, f) = act(g(i, f)) * h(i, f);
      } else {
        for (index_t i = 0; i < n; ++i)
          for (index_t f = 0; f < d_ff; ++f) h(i, f) = act(h(i, f));
      }
      cpu::rows_of(out, r0, n).noalias() = h * w.matrix(std::size_t(e), 2).transpose();
    });
  }

  /// out = x · Wᵀ for the dense layers (attention, lm_head): one Eigen GEMM;
  /// BF16/F16 weights widened into a buffer the calling thread keeps.
  void linear(MatrixView<const float> x, const WeightMatrix& w, MatrixView<float> out) const {
    if (x.rows == 0) return;
    thread_local std::vector<float> widened;
    const Map W(moe::detail::as_float(w, widened), w.rows, w.cols);
    cpu::rows_of(out, 0, x.rows).noalias() = cpu::rows_of(x, 0, x.rows) * W.transpose();
  }

  /// Backward on the fp32 views, one expert per task (cpu/expert_train.hpp).
  template <ExpertPolicy X>
  void experts_backward(const RoutingPlan& plan, const Prepared& w, MatrixView<const float> rows,
                        MatrixView<const float> d_out, Workspace&, const ExpertDropout& drop,
                        std::span<ExpertGrads> grads, MatrixView<float> d_rows) const {
    cpu::train_backward<typename X::ffn>(*pool_, plan, rows, w.views, d_out, drop, grads, d_rows);
  }

 private:
  std::shared_ptr<moe::detail::ThreadPool> pool_;
};

}  // namespace moe::backend
