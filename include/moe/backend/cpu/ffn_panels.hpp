#pragma once
/// \file ffn_panels.hpp
/// PanelFfn<Isa, RoundToBf16>: the experts on fp32 or bf16 panels
/// (numerics::AsStored and numerics::Bf16Compute).
///
///   packing      weights into panels of NR = 2 vectors (panels.hpp), gate
///                and up fused; fp32, or bf16 (as stored, or rounded)
///   micro-kernel the register-blocked broadcast kernel (panel_gemm.hpp);
///                Bf16Compute on AVX512-BF16: vdpbf16ps on k pairs
///                (pair_gemm.hpp), twice the multiply-adds per instruction
///   epilogue     phase 1: act(gate) ⊙ up, applied as each tile leaves the
///                kernel and stored straight in the layout phase 2 reads;
///                phase 2: copy the tile out. With RoundToBf16, activations
///                and hidden units are rounded to bf16 where they are laid out.
///
/// Each block's input rows are packed once for the kernel; tasks are (block
/// of rows, block of panels).

#include <algorithm>

#include "moe/backend/cpu/block_rows.hpp"
#include "moe/backend/cpu/pair_gemm.hpp"
#include "moe/backend/cpu/panel_gemm.hpp"
#include "moe/backend/cpu/prepared.hpp"
#include "moe/backend/cpu/simd.hpp"
#include "moe/backend/cpu/tasks.hpp"
#include "moe/backend/cpu/workspace.hpp"
#include "moe/expert/ffn.hpp"

namespace moe::backend::cpu {

template <class Isa, bool RoundToBf16>
struct PanelFfn {
  static constexpr index_t width = 2 * index_t(floats<Isa>::size);  ///< NR
  /// Bf16Compute where the ISA has vdpbf16ps may run on k pairs (pair_gemm.hpp).
  static constexpr bool can_pair = RoundToBf16 && Isa::bf16;

  /// Whether to pack for vdpbf16ps: where the ISA has it and this CPU runs it
  /// faster than fp32 FMAs (isa::bf16_dot_preferred). The packed panels
  /// record the choice; run() follows them.
  static bool pairs() noexcept { return can_pair && isa::bf16_dot_preferred(); }

  /// The panels' dtype for weights stored as `stored`.
  static DType pack_target(DType stored) noexcept {
    return RoundToBf16 || stored == DType::BF16 ? DType::BF16 : DType::F32;
  }

  /// C = A · Bᵀ for the n rows of depth K at `offset` of the floats `in`,
  /// or of the k pairs `in2` (the buffer of the other layout may be empty).
  static void gemm(bool pairs, const float* in, const std::uint32_t* in2, std::size_t offset, index_t n, index_t K,
                   const PanelMatrix& B, index_t p0, index_t np, float* tile, index_t ldt) noexcept {
    if constexpr (can_pair)
      if (pairs) return pair_gemm<Isa>(in2 + offset, pair_layout(n, K), B, p0, np, tile, ldt);
    panel_gemm<Isa>(in + offset, RowLayout::of(n, K), B, p0, np, tile, ldt);
  }

  template <FFN F>
  static void run(moe::detail::ThreadPool& pool, const RoutingPlan& plan, MatrixView<const float> x,
                  const std::vector<PackedExpert>& experts, MatrixView<float> out, Workspace& ws) {
    const PanelMatrix& up0 = experts[0].up;
    const Shape shape{
        up0.depth, up0.outputs, up0.features_per_panel(), up0.panels, experts[0].down.panels, can_pair && up0.pairs};
    run_on<F>(pool, plan, x, shape, out, ws,
              [&](index_t e, bool down, const float* in, const std::uint32_t* in2, std::size_t offset, index_t n,
                  index_t K, index_t p0, index_t np, float* tile, index_t ldt) {
                const PackedExpert& p = experts[std::size_t(e)];
                gemm(shape.pairs, in, in2, offset, n, K, down ? p.down : p.up, p0, np, tile, ldt);
              });
  }

  /// The same on block-quantised weight views (AsStored only): panels made
  /// from the blocks one depth block at a time as each task runs
  /// (block_panel_gemm), never a dequantised copy of the experts.
  template <FFN F>
  static void run_blocks(moe::detail::ThreadPool& pool, const RoutingPlan& plan, MatrixView<const float> x,
                         std::span<const ExpertWeights> views, MatrixView<float> out,
                         Workspace& ws) requires(!RoundToBf16) {
    const index_t d_model = views[0].up.cols, d_ff = views[0].up.rows, per_panel = F::gated ? width / 2 : width;
    const Shape shape{d_model, d_ff, per_panel, (d_ff + per_panel - 1) / per_panel, (d_model + width - 1) / width,
                      false};
    run_on<F>(pool, plan, x, shape, out, ws,
              [&](index_t e, bool down, const float* in, const std::uint32_t*, std::size_t offset, index_t n, index_t K,
                  index_t p0, index_t np, float* tile, index_t ldt) {
                thread_local std::vector<float> buffer;
                const ExpertWeights& w = views[std::size_t(e)];
                const WeightMatrix& first = down ? w.down : F::gated ? w.gate : w.up;
                block_panel_gemm<Isa>(in + offset, RowLayout::of(n, K), first, !down && F::gated ? &w.up : nullptr,
                                      width, p0, np, tile, ldt, buffer);
              });
  }

 private:
  /// The experts' sizes as the panels see them.
  struct Shape {
    index_t d_model = 0, d_ff = 0;
    index_t per_panel = 0;    ///< output features of one phase-1 panel (NR/2 for gate/up)
    index_t up_panels = 0;    ///< phase 1 (gate/up) panels per expert
    index_t down_panels = 0;  ///< phase 2 panels per expert
    bool pairs = false;       ///< bf16 k pairs (vdpbf16ps)
  };

  /// Both phases over tasks of (row block, panels); gemm_b(expert, down,
  /// in, in2, offset, n, K, p0, np, tile, ldt) multiplies a row block's
  /// packed rows by panels [p0, p0 + np) of the expert's gate/up or down.
  template <FFN F, class GemmB>
  static void run_on(moe::detail::ThreadPool& pool, const RoutingPlan& plan, MatrixView<const float> x,
                     const Shape& shape, MatrixView<float> out, Workspace& ws, GemmB&& gemm_b) {
    using batch = floats<Isa>;
    constexpr index_t W = index_t(batch::size);
    const index_t d_ff = shape.d_ff, d_model = shape.d_model, per_panel = shape.per_panel;
    const bool pairs = shape.pairs;
    row_blocks(plan, d_model, d_ff, ws.blocks);
    const RowBlock& last = ws.blocks.back();
    // A block's rows take at most RowLayout::of(n, K).size() slots in either
    // layout (k pairs: half as many), so the offsets serve both.
    const std::size_t in_size = last.in_offset + RowLayout::of(last.n, d_model).size();
    const std::size_t hidden_size = last.hidden_offset + RowLayout::of(last.n, d_ff).size();
    float* in = pairs ? ws.in.data() : grow(ws.in, in_size);
    float* hidden = pairs ? ws.hidden.data() : grow(ws.hidden, hidden_size);
    std::uint32_t* in2 = pairs ? grow(ws.pair_in, in_size) : ws.pair_in.data();
    std::uint32_t* hidden2 = pairs ? grow(ws.pair_hidden, hidden_size) : ws.pair_hidden.data();
    const std::vector<RowBlock>& blocks = ws.blocks;
    const typename F::activation act{};

    pool.parallel_for(std::int64_t(blocks.size()), [&](std::int64_t b, int) {
      const RowBlock& rb = blocks[std::size_t(b)];
      if (pairs)
        pack_row_pairs(x.row(rb.r0), x.row_stride, d_model, pair_layout(rb.n, d_model), in2 + rb.in_offset);
      else
        pack_rows(x.row(rb.r0), x.row_stride, RowLayout::of(rb.n, d_model), in + rb.in_offset, RoundToBf16);
    });
    run_panel_tasks(pool, ws, shape.up_panels, width, &ThreadScratch::tile,
                    [&](std::size_t b, index_t p0, index_t np, float* tile) {
                      const RowBlock& rb = blocks[b];
                      const index_t ldt = np * width;
                      gemm_b(rb.expert, false, in, in2, rb.in_offset, rb.n, d_model, p0, np, tile, ldt);
                      const RowLayout H = pairs ? pair_layout(rb.n, d_ff) : RowLayout::of(rb.n, d_ff);
                      alignas(64) float h[2 * W] = {};  // (zeroed: GCC cannot see that j < W)
                      for (index_t i = 0; i < rb.n; ++i)
                        for (index_t p = 0; p < np; ++p) {
                          const float* t = tile + i * ldt + p * width;
                          const index_t f0 = (p0 + p) * per_panel, nf = std::min(per_panel, d_ff - f0);
                          if constexpr (F::gated) {
                            (act(batch::load_unaligned(t)) * batch::load_unaligned(t + W)).store_aligned(h);
                          } else {
                            act(batch::load_unaligned(t)).store_aligned(h);
                            act(batch::load_unaligned(t + W)).store_aligned(h + W);
                          }
                          if (pairs) {
                            // f0 is even (a multiple of W): the chunk's pairs are whole, but for
                            // an odd d_ff's last, whose missing half is the zero padding.
                            std::uint32_t* h_block = hidden2 + rb.hidden_offset;
                            for (index_t j = 0; j < nf; j += 2)
                              h_block[H.at(i, (f0 + j) / 2)] = bf16_pair(h[j], j + 1 < nf ? h[j + 1] : 0.0f);
                          } else {
                            // A chunk of W features never crosses a depth block (KC is a multiple of W).
                            float* dst = hidden + rb.hidden_offset + H.at(i, f0);
                            for (index_t j = 0; j < nf; ++j)
                              dst[j * panel_rows] = RoundToBf16 ? round_to_bf16(h[j]) : h[j];
                          }
                        }
                    });
    run_panel_tasks(pool, ws, shape.down_panels, width, &ThreadScratch::tile,
                    [&](std::size_t b, index_t p0, index_t np, float* tile) {
                      const RowBlock& rb = blocks[b];
                      const index_t ldt = np * width;
                      gemm_b(rb.expert, true, hidden, hidden2, rb.hidden_offset, rb.n, d_ff, p0, np, tile, ldt);
                      const index_t o0 = p0 * width, no = std::min(np * width, d_model - o0);
                      for (index_t i = 0; i < rb.n; ++i)
                        std::copy(tile + i * ldt, tile + i * ldt + no, out.row(rb.r0 + i) + o0);
                    });
  }
};

}  // namespace moe::backend::cpu
