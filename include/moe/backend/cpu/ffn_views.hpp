#pragma once
/// \file ffn_views.hpp
/// ViewFfn<Isa>: the experts straight on the weight views (an mmap'ed
/// checkpoint, nothing copied): dot products of rows (dot_tile.hpp), BF16
/// and block-quantised weights (block_rows.hpp) widened in registers when
/// few rows stream them (decode) and block by block into a per-thread
/// buffer when many rows reuse them.
/// Tasks are (expert, block of `block` output features). The same gemm
/// runs the dense layers (attention projections, lm_head): linear().

#include <algorithm>
#include <span>
#include <vector>

#include "moe/backend/cpu/block_rows.hpp"
#include "moe/backend/cpu/dot_tile.hpp"
#include "moe/backend/cpu/q8_dot.hpp"
#include "moe/backend/cpu/q8_panels.hpp"
#include "moe/backend/cpu/simd.hpp"
#include "moe/backend/cpu/workspace.hpp"
#include "moe/backend/host_stages.hpp"
#include "moe/capacity/plan.hpp"
#include "moe/expert/dropout.hpp"
#include "moe/detail/thread_pool.hpp"
#include "moe/expert/ffn.hpp"

namespace moe::backend::cpu {

template <class Isa>
struct ViewFfn {
  static constexpr index_t block = 32;  ///< output features per task
  /// Up to this many rows, BF16 and block-quantised weights are widened in
  /// registers as they stream (each weight read once per row group).
  static constexpr index_t stream_rows = 8;
  /// Output features per task for `rows` rows: decode (few rows) takes 128,
  /// long streams of weight rows that the prefetchers keep ahead of (32
  /// measured 20% slower per token on a Mixtral layer); many rows take
  /// `block`, each task's weights reused by every row.
  static constexpr index_t task_outputs(index_t rows) noexcept { return rows <= stream_rows ? 4 * block : block; }

  /// C[m, n] = A[m, K] · (rows [r0, r0+n) of W)ᵀ on the weight view. For a
  /// few rows of A (decode) BF16 weights are widened in registers as they
  /// stream; for many, a block is widened into `buf` once and reused by
  /// every row (cheaper than widening per row group). F32 is read as is.
  static void gemm_rows(const float* A, index_t lda, index_t m, const WeightMatrix& w, index_t r0, index_t n, float* C,
                        index_t ldc, std::vector<float>& buf) {
    if constexpr (has_block_kernels<Isa>)
      if (is_block_quantised(w.dtype)) {
        if (m <= stream_rows) return block_gemm_nt<Isa>(A, lda, m, w, r0, n, C, ldc);
        float* rows = grow(buf, std::size_t(n * w.cols));
        dequantize_rows<Isa>(w, r0, n, rows);
        return gemm_nt<Isa>(A, lda, m, rows, w.cols, n, w.cols, C, ldc);
      }
    if (w.dtype == DType::BF16 && m <= stream_rows) {
      const auto* b = reinterpret_cast<const std::uint16_t*>(w.row_bytes(r0));
      gemm_nt<Isa>(A, lda, m, b, w.cols, n, w.cols, C, ldc);
      return;
    }
    gemm_nt<Isa>(A, lda, m, widen(w, r0, n, buf), w.cols, n, w.cols, C, ldc);
  }

  /// The experts' rows; in training, `drop` masks the hidden units.
  template <FFN F>
  static void run(moe::detail::ThreadPool& pool, const RoutingPlan& plan, MatrixView<const float> rows,
                  std::span<const ExpertWeights> w, MatrixView<float> out, Workspace& ws,
                  const ExpertDropout& drop = {}) {
    const index_t d_ff = w[0].up.rows, d_model = w[0].up.cols;
    const MatrixView<float> hidden(grow(ws.hidden, std::size_t(plan.rows() * d_ff)), plan.rows(), d_ff);
    const index_t step = grow_scratch(pool, plan, ws, std::max(d_model, d_ff), true);

    // Phase 1: hidden = act(X·W1ᵀ) ⊙ (X·W3ᵀ) (gated) or act(X·Wiᵀ).
    run_tiles(
        pool, plan, d_ff, ws,
        [&](index_t e, index_t f0, index_t nf, ThreadScratch& s) {
          const ExpertWeights& we = w[std::size_t(e)];
          const index_t r0 = plan.first_row(e), n = plan.kept(e);
          float* h = hidden.row(r0) + f0;
          gemm_rows(rows.row(r0), rows.row_stride, n, we.up, f0, nf, h, d_ff, s.up);
          const typename F::activation act{};
          float* g = nullptr;
          if constexpr (F::gated) {
            g = grow(s.gated, std::size_t(n * nf));
            gemm_rows(rows.row(r0), rows.row_stride, n, we.gate, f0, nf, g, nf, s.gate);
          }
          for (index_t i = 0; i < n; ++i) {
            if constexpr (F::gated)
              apply_gated(act, g + i * nf, h + i * d_ff, nf);
            else
              apply_act(act, h + i * d_ff, nf);
            if (drop.active()) {
              const std::uint64_t pair = row_pair(plan, r0 + i);
              for (index_t f = 0; f < nf; ++f) h[i * d_ff + f] *= drop.scale(pair, f0 + f);
            }
          }
        },
        step);
    // Phase 2: out = hidden · W2ᵀ.
    run_tiles(
        pool, plan, d_model, ws,
        [&](index_t e, index_t o0, index_t no, ThreadScratch& s) {
          const index_t r0 = plan.first_row(e), n = plan.kept(e);
          gemm_rows(hidden.row(r0), d_ff, n, w[std::size_t(e)].down, o0, no, out.row(r0) + o0, out.row_stride, s.up);
        },
        step);
  }

  /// numerics::BlockQ8 on block-quantised experts: each phase's rows
  /// quantised once for every activation kind its weights take (Q8_0, Q8_1,
  /// Q8_K), then tiles of (expert, block of outputs) by q8_gemm_nt; a
  /// matrix that is not block-quantised runs as AsStored.
  template <FFN F>
  static void run_q8(moe::detail::ThreadPool& pool, const RoutingPlan& plan, MatrixView<const float> rows,
                     std::span<const ExpertWeights> w, MatrixView<float> out, Workspace& ws) {
    const index_t d_ff = w[0].up.rows, d_model = w[0].up.cols;
    const MatrixView<float> hidden(grow(ws.hidden, std::size_t(plan.rows() * d_ff)), plan.rows(), d_ff);
    // Widening buffers only for a matrix that is not block-quantised (the
    // AsStored fallback): at 128 outputs they would be megabytes per thread.
    bool all_blocks = true;
    for (const ExpertWeights& e : w)
      all_blocks = all_blocks && is_block_quantised(e.up.dtype) && is_block_quantised(e.down.dtype) &&
                   (!F::gated || is_block_quantised(e.gate.dtype));
    const index_t step = grow_scratch(pool, plan, ws, std::max(d_model, d_ff), !all_blocks);
    const auto uses = [&](auto matrix) {
      std::array<bool, 3> kinds{};
      for (index_t e = 0; e < plan.experts; ++e)
        if (plan.kept(e) > 0) {
          const WeightMatrix& m = matrix(w[std::size_t(e)]);
          if (is_block_quantised(m.dtype)) kinds[std::size_t(quant::activation_blocks(m.dtype))] = true;
        }
      return kinds;
    };
    // Phase 1: hidden = act(X·W1ᵀ) ⊙ (X·W3ᵀ) (gated) or act(X·Wiᵀ).
    std::array<bool, 3> in_kinds = uses([](const ExpertWeights& e) -> const WeightMatrix& { return e.up; });
    if constexpr (F::gated) {
      const std::array<bool, 3> gate = uses([](const ExpertWeights& e) -> const WeightMatrix& { return e.gate; });
      for (std::size_t k = 0; k < 3; ++k) in_kinds[k] = in_kinds[k] || gate[k];
    }
    quantise_rows(pool, rows, in_kinds, ws.q8_in);
    const auto gemm = [&](const std::array<quant::Q8Rows, 3>& q, const float* x, index_t ldx, index_t r0, index_t n,
                          const WeightMatrix& m, index_t o0, index_t no, float* c, index_t ldc, ThreadScratch& s) {
      if (!is_block_quantised(m.dtype)) return gemm_rows(x, ldx, n, m, o0, no, c, ldc, s.up);
      const Q8Tile a(q[std::size_t(quant::activation_blocks(m.dtype))], r0);
      // Many rows: unpack the weights once into int8 panels; few: stream them.
      if constexpr (has_q8_panels<Isa>)
        if (n > stream_rows && q8_panels_take<Isa>(m))
          return q8_panel_gemm<Isa>(a, n, m, o0, no, c, ldc, s.q8_panels, s.q8_scales);
      q8_gemm_nt<Isa>(a, n, m, o0, no, c, ldc);
    };
    run_tiles(
        pool, plan, d_ff, ws,
        [&](index_t e, index_t f0, index_t nf, ThreadScratch& s) {
          const ExpertWeights& we = w[std::size_t(e)];
          const index_t r0 = plan.first_row(e), n = plan.kept(e);
          float* h = hidden.row(r0) + f0;
          gemm(ws.q8_in, rows.row(r0), rows.row_stride, r0, n, we.up, f0, nf, h, d_ff, s);
          const typename F::activation act{};
          if constexpr (F::gated) {
            float* g = grow(s.gated, std::size_t(n * nf));
            gemm(ws.q8_in, rows.row(r0), rows.row_stride, r0, n, we.gate, f0, nf, g, nf, s);
            for (index_t i = 0; i < n; ++i) apply_gated(act, g + i * nf, h + i * d_ff, nf);
          } else {
            for (index_t i = 0; i < n; ++i) apply_act(act, h + i * d_ff, nf);
          }
        },
        step);
    // Phase 2: out = hidden · W2ᵀ.
    quantise_rows(pool, hidden, uses([](const ExpertWeights& e) -> const WeightMatrix& { return e.down; }),
                  ws.q8_hidden);
    run_tiles(
        pool, plan, d_model, ws,
        [&](index_t e, index_t o0, index_t no, ThreadScratch& s) {
          const index_t r0 = plan.first_row(e), n = plan.kept(e);
          gemm(ws.q8_hidden, hidden.row(r0), d_ff, r0, n, w[std::size_t(e)].down, o0, no, out.row(r0) + o0,
               out.row_stride, s);
        },
        step);
  }

  /// out = x · Wᵀ under numerics::BlockQ8: x quantised once for W's format,
  /// then blocks of output features by q8_gemm_nt (AsStored's linear for a
  /// W that is not block-quantised).
  static void linear_q8(moe::detail::ThreadPool& pool, MatrixView<const float> x, const WeightMatrix& w,
                        MatrixView<float> out) {
    if (x.rows == 0) return;
    if (!is_block_quantised(w.dtype)) return linear(pool, x, w, out);
    thread_local std::array<quant::Q8Rows, 3> q;  // the caller's: read by every task, alive until they end
    std::array<bool, 3> kinds{};
    kinds[std::size_t(quant::activation_blocks(w.dtype))] = true;
    quantise_rows(pool, MatrixView<const float>(x.data, x.rows, x.cols, x.row_stride), kinds, q);
    const quant::Q8Rows& rows = q[std::size_t(quant::activation_blocks(w.dtype))];
    const bool panels = x.rows > stream_rows && q8_panels_take<Isa>(w);
    const index_t step = task_outputs(x.rows);
    const index_t blocks = (w.rows + step - 1) / step;
    pool.parallel_for(blocks, [&](std::int64_t b, int) {
      const index_t o0 = index_t(b) * step, n = std::min(step, w.rows - o0);
      if constexpr (has_q8_panels<Isa>)
        if (panels) {
          thread_local std::vector<std::uint8_t> bytes;
          thread_local std::vector<float> floats;
          return q8_panel_gemm<Isa>(Q8Tile(rows, 0), x.rows, w, o0, n, out.row(0) + o0, out.row_stride, bytes, floats);
        }
      q8_gemm_nt<Isa>(Q8Tile(rows, 0), x.rows, w, o0, n, out.row(0) + o0, out.row_stride);
    });
  }

  /// out = x · Wᵀ: tasks are blocks of output features, each widened once
  /// and applied to every row of x. Each pool thread widens into a buffer of
  /// its own that lives as long as the thread (grown to the largest block,
  /// then reused): no workspace to pass, no allocation in steady state.
  static void linear(moe::detail::ThreadPool& pool, MatrixView<const float> x, const WeightMatrix& w,
                     MatrixView<float> out) {
    if (x.rows == 0) return;
    if constexpr (has_block_kernels<Isa>)
      if (is_block_quantised(w.dtype) && x.rows > stream_rows) return block_linear(pool, x, w, out);
    const index_t step = task_outputs(x.rows), blocks = (w.rows + step - 1) / step;
    pool.parallel_for(blocks, [&](std::int64_t b, int) {
      thread_local std::vector<float> widened;
      const index_t o0 = index_t(b) * step, n = std::min(step, w.rows - o0);
      gemm_rows(x.data, x.row_stride, x.rows, w, o0, n, out.row(0) + o0, out.row_stride, widened);
    });
  }

 private:
  /// out = x · Wᵀ for many rows of x and a block-quantised W: x packed once
  /// for the panel micro-kernel, tasks of a few panels of W, each made from
  /// the blocks as it runs (block_panel_gemm) into the task's tile.
  static void block_linear(moe::detail::ThreadPool& pool, MatrixView<const float> x, const WeightMatrix& w,
                           MatrixView<float> out) {
    constexpr index_t width = 2 * index_t(floats<Isa>::size), per_task = 4;
    const RowLayout L = RowLayout::of(x.rows, w.cols);
    thread_local std::vector<float> packed;  // the caller's: read by every task, alive until they end
    float* a = grow(packed, L.size());
    pack_rows(x.data, x.row_stride, L, a);
    const index_t panels = (w.rows + width - 1) / width, tasks = (panels + per_task - 1) / per_task;
    pool.parallel_for(tasks, [&](std::int64_t task, int) {
      thread_local std::vector<float> tile, buffer;
      const index_t p0 = index_t(task) * per_task, np = std::min(per_task, panels - p0), ld = np * width;
      float* t = grow(tile, std::size_t(x.rows * ld));
      block_panel_gemm<Isa>(a, L, w, nullptr, width, p0, np, t, ld, buffer);
      const index_t o0 = p0 * width, no = std::min(ld, w.rows - o0);
      for (index_t i = 0; i < x.rows; ++i) std::copy(t + i * ld, t + i * ld + no, out.row(i) + o0);
    });
  }

  /// Every thread's buffers grown before the tasks (which thread runs which
  /// task changes from call to call, so growing inside a task would
  /// allocate whenever a thread first meets a larger task): gate outputs
  /// for a task's rows, and with `widen` a task's weights widened to fp32
  /// (depth up to `depth`). Returns the outputs per task.
  static index_t grow_scratch(moe::detail::ThreadPool& pool, const RoutingPlan& plan, Workspace& ws, index_t depth,
                              bool widen) {
    index_t most_rows = 0;
    for (index_t e = 0; e < plan.experts; ++e) most_rows = std::max(most_rows, plan.kept(e));
    const index_t step = task_outputs(most_rows);
    const std::size_t widened = widen ? std::size_t(step * depth) : 0;
    for (ThreadScratch& s : ws.per_thread(pool.size())) {
      grow(s.up, widened);
      grow(s.gate, widened);
      grow(s.gated, std::size_t(most_rows * step));
    }
    return step;
  }

  /// The rows of x quantised (in parallel, row by row) into out[k] for each
  /// activation kind k marked in `kinds`.
  static void quantise_rows(moe::detail::ThreadPool& pool, MatrixView<const float> x, const std::array<bool, 3>& kinds,
                            std::array<quant::Q8Rows, 3>& out) {
    for (std::size_t k = 0; k < 3; ++k) {
      if (!kinds[k]) continue;
      quant::shape_activations(out[k], quant::ActivationBlocks(k), x.rows, x.cols);
      pool.parallel_for(x.rows, [&](std::int64_t r, int) { quant::quantize_activation_row(x.row(r), out[k], r); });
    }
  }

  /// Rows [r0, r0+n) of a weight as fp32: the weight itself when F32,
  /// otherwise widened into `buf`.
  static const float* widen(const WeightMatrix& w, index_t r0, index_t n, std::vector<float>& buf) {
    if (w.dtype == DType::F32) return static_cast<const float*>(w.data) + r0 * w.cols;
    float* dst = grow(buf, std::size_t(n * w.cols));
    widen_to_float(w.data, w.dtype, r0 * w.cols, n * w.cols, dst);
    return dst;
  }

  /// h = act(g) ⊙ h over n values, vectorised with a scalar tail.
  template <class Act>
  static void apply_gated(const Act& act, const float* g, float* h, index_t n) noexcept {
    using batch = floats<Isa>;
    constexpr index_t W = index_t(batch::size);
    index_t i = 0;
    for (; i + W <= n; i += W)
      (act(batch::load_unaligned(g + i)) * batch::load_unaligned(h + i)).store_unaligned(h + i);
    for (; i < n; ++i) h[i] = act(g[i]) * h[i];
  }
  template <class Act>
  static void apply_act(const Act& act, float* h, index_t n) noexcept {
    using batch = floats<Isa>;
    constexpr index_t W = index_t(batch::size);
    index_t i = 0;
    for (; i + W <= n; i += W) act(batch::load_unaligned(h + i)).store_unaligned(h + i);
    for (; i < n; ++i) h[i] = act(h[i]);
  }

  /// Runs fn(expert, first, count, scratch) over every (expert with rows,
  /// block of `width` outputs), in parallel.
  template <class Fn>
  static void run_tiles(moe::detail::ThreadPool& pool, const RoutingPlan& plan, index_t width, Workspace& ws, Fn&& fn,
                        index_t step = block) {
    ws.tiles.clear();
    for (index_t e = 0; e < plan.experts; ++e)
      if (plan.kept(e) > 0)
        for (index_t f = 0; f < width; f += step) ws.tiles.emplace_back(e, f);
    std::vector<ThreadScratch>& scratch = ws.per_thread(pool.size());
    pool.parallel_for(std::int64_t(ws.tiles.size()), [&](std::int64_t i, int thread) {
      const auto [e, f0] = ws.tiles[std::size_t(i)];
      fn(e, f0, std::min(step, width - f0), scratch[std::size_t(thread)]);
    });
  }
};

}  // namespace moe::backend::cpu
