#pragma once
/// \file cpu.hpp
/// backend::Cpu: xsimd kernels on all cores.
///
/// Work is split by tiles, not by expert: a task is (expert, block of 32
/// output features), so both cores stay busy even when one expert gets most
/// tokens. BF16/F16 weights are widened block by block into a per-thread
/// fp32 buffer and reused for all of that expert's rows.

#include <xsimd/xsimd.hpp>

#include <memory>
#include <span>
#include <string_view>
#include <thread>
#include <vector>

#include "moe/backend/backend.hpp"
#include "moe/backend/cpu/dot_tile.hpp"
#include "moe/detail/thread_pool.hpp"

namespace moe::backend {

template <class Arch = xsimd::default_arch>
class Cpu {
 public:
  using arch = Arch;
  static constexpr std::string_view name() { return "cpu"; }
  static constexpr index_t block = 32;  ///< output features per task

  /// Uses a process-wide pool with one thread per hardware thread.
  Cpu() : pool_(default_pool()) {}
  /// Uses a pool of its own with `threads` threads (1 = no threading).
  explicit Cpu(int threads) : pool_(std::make_shared<detail::ThreadPool>(threads)) {}

  int threads() const noexcept { return pool_->size(); }

  void gather(const RoutingPlan& plan, MatrixView<const float> x, MatrixView<float> packed) const {
    pool_->parallel_for(plan.rows(), [&](std::int64_t row, int) { detail::gather_row(plan, x, packed, row); });
  }

  void combine(const RoutingPlan& plan, const Routing& r, MatrixView<const float> expert_out,
               MatrixView<float> y) const {
    pool_->parallel_for(plan.tokens, [&](std::int64_t t, int) { detail::combine_token(plan, r, expert_out, y, t); });
  }

  /// out = x · Wᵀ: tasks are blocks of output features, each widened once
  /// and applied to every row of x.
  void linear(MatrixView<const float> x, const WeightMatrix& w, MatrixView<float> out) const {
    if (x.rows == 0) return;
    const index_t blocks = (w.rows + block - 1) / block;
    std::vector<Scratch> scratch(std::size_t(pool_->size()));
    pool_->parallel_for(blocks, [&](std::int64_t b, int thread) {
      const index_t o0 = index_t(b) * block, n = std::min(block, w.rows - o0);
      const float* wb = widen(w, o0, n, scratch[std::size_t(thread)].up);
      cpu::gemm_nt<Arch>(x.data, x.row_stride, x.rows, wb, w.cols, n, w.cols, out.row(0) + o0, out.row_stride);
    });
  }

  template <FFN F>
  void expert_ffn(const RoutingPlan& plan, MatrixView<const float> packed, std::span<const ExpertWeights> w,
                  MatrixView<float> out) const {
    if (plan.rows() == 0) return;
    const index_t d_ff = w[0].up.rows, d_model = w[0].up.cols;
    Matrix hidden(plan.rows(), d_ff);  // [rows, d_ff] act(gate·x) ⊙ up·x

    // Phase 1: hidden = act(X·W1ᵀ) ⊙ (X·W3ᵀ) (gated) or act(X·Wiᵀ).
    run_tiles(plan, d_ff, [&](index_t e, index_t f0, index_t nf, Scratch& s) {
      const ExpertWeights& we = w[std::size_t(e)];
      const index_t r0 = plan.offsets[std::size_t(e)], n = plan.kept(e);
      float* h = hidden.data() + r0 * d_ff + f0;
      const float* up = widen(we.up, f0, nf, s.up);
      cpu::gemm_nt<Arch>(packed.row(r0), packed.row_stride, n, up, d_model, nf, d_model, h, d_ff);
      const typename F::activation act{};
      if constexpr (F::gated) {
        s.gated.resize(std::size_t(n * nf));
        const float* gate = widen(we.gate, f0, nf, s.gate);
        cpu::gemm_nt<Arch>(packed.row(r0), packed.row_stride, n, gate, d_model, nf, d_model, s.gated.data(), nf);
        for (index_t i = 0; i < n; ++i) apply_gated(act, s.gated.data() + i * nf, h + i * d_ff, nf);
      } else {
        for (index_t i = 0; i < n; ++i) apply_act(act, h + i * d_ff, nf);
      }
    });
    // Phase 2: out = hidden · W2ᵀ.
    run_tiles(plan, d_model, [&](index_t e, index_t o0, index_t no, Scratch& s) {
      const index_t r0 = plan.offsets[std::size_t(e)], n = plan.kept(e);
      const float* down = widen(w[std::size_t(e)].down, o0, no, s.up);
      cpu::gemm_nt<Arch>(hidden.data() + r0 * d_ff, d_ff, n, down, d_ff, no, d_ff, out.row(r0) + o0, out.row_stride);
    });
  }

 private:
  struct Scratch {
    std::vector<float> up, gate, gated;
  };

  static std::shared_ptr<detail::ThreadPool> default_pool() {
    static const auto pool =
        std::make_shared<detail::ThreadPool>(int(std::max(1u, std::thread::hardware_concurrency())));
    return pool;
  }

  /// Rows [r0, r0+n) of a weight as fp32: the weight itself when F32,
  /// otherwise widened into `buf`.
  static const float* widen(const WeightMatrix& w, index_t r0, index_t n, std::vector<float>& buf) {
    if (w.dtype == DType::F32) return static_cast<const float*>(w.data) + r0 * w.cols;
    buf.resize(std::size_t(n * w.cols));
    widen_to_float(w.data, w.dtype, r0 * w.cols, n * w.cols, buf.data());
    return buf.data();
  }

  /// h = act(g) ⊙ h over n values, vectorised with a scalar tail.
  template <class Act>
  static void apply_gated(const Act& act, const float* g, float* h, index_t n) noexcept {
    using batch = xsimd::batch<float, Arch>;
    constexpr index_t W = index_t(batch::size);
    index_t i = 0;
    for (; i + W <= n; i += W)
      (act(batch::load_unaligned(g + i)) * batch::load_unaligned(h + i)).store_unaligned(h + i);
    for (; i < n; ++i) h[i] = act(g[i]) * h[i];
  }
  template <class Act>
  static void apply_act(const Act& act, float* h, index_t n) noexcept {
    using batch = xsimd::batch<float, Arch>;
    constexpr index_t W = index_t(batch::size);
    index_t i = 0;
    for (; i + W <= n; i += W) act(batch::load_unaligned(h + i)).store_unaligned(h + i);
    for (; i < n; ++i) h[i] = act(h[i]);
  }

  /// Runs fn(expert, first, count, scratch) over every (expert with rows,
  /// block of `width` outputs), in parallel.
  template <class Fn>
  void run_tiles(const RoutingPlan& plan, index_t width, Fn&& fn) const {
    std::vector<std::pair<index_t, index_t>> tiles;  // (expert, first output)
    for (index_t e = 0; e < plan.experts; ++e)
      if (plan.kept(e) > 0)
        for (index_t f = 0; f < width; f += block) tiles.emplace_back(e, f);
    std::vector<Scratch> scratch(std::size_t(pool_->size()));
    pool_->parallel_for(std::int64_t(tiles.size()), [&](std::int64_t i, int thread) {
      const auto [e, f0] = tiles[std::size_t(i)];
      fn(e, f0, std::min(block, width - f0), scratch[std::size_t(thread)]);
    });
  }

  std::shared_ptr<detail::ThreadPool> pool_;
};

}  // namespace moe::backend
