#pragma once
/// \file ffn_panels.hpp
/// PanelFfn<Isa, RoundToBf16>: the experts on fp32 or bf16 panels
/// (numerics::AsStored and numerics::Bf16Compute).
///
///   packing      weights into panels of NR = 2 vectors (panels.hpp), gate
///                and up fused; fp32, or bf16 (as stored, or rounded)
///   micro-kernel the register-blocked broadcast kernel (panel_gemm.hpp)
///   epilogue     phase 1: act(gate) ⊙ up, applied as each tile leaves the
///                kernel and stored straight in the layout phase 2 reads;
///                phase 2: copy the tile out. With RoundToBf16, activations
///                and hidden units are rounded to bf16 where they are laid out.
///
/// Each block's input rows are packed once for the kernel; tasks are (block
/// of rows, block of panels).

#include <algorithm>

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

  /// The panels' dtype for weights stored as `stored`.
  static DType pack_target(DType stored) noexcept {
    return RoundToBf16 || stored == DType::BF16 ? DType::BF16 : DType::F32;
  }

  template <FFN F>
  static void run(moe::detail::ThreadPool& pool, const RoutingPlan& plan, MatrixView<const float> x,
                  const std::vector<PackedExpert>& experts, MatrixView<float> out, Workspace& ws) {
    using batch = floats<Isa>;
    constexpr index_t W = index_t(batch::size);
    const PanelMatrix& up0 = experts[0].up;
    const index_t d_ff = up0.outputs, d_model = up0.depth;
    row_blocks(plan, d_model, d_ff, ws.blocks);
    const RowBlock& last = ws.blocks.back();
    float* in = grow(ws.in, last.in_offset + RowLayout::of(last.n, d_model).size());
    float* hidden = grow(ws.hidden, last.hidden_offset + RowLayout::of(last.n, d_ff).size());
    const std::vector<RowBlock>& blocks = ws.blocks;
    const typename F::activation act{};

    pool.parallel_for(std::int64_t(blocks.size()), [&](std::int64_t b, int) {
      const RowBlock& rb = blocks[std::size_t(b)];
      pack_rows(x.row(rb.r0), x.row_stride, RowLayout::of(rb.n, d_model), in + rb.in_offset, RoundToBf16);
    });
    run_panel_tasks(pool, ws, up0.panels, width, &ThreadScratch::tile,
                    [&](std::size_t b, index_t p0, index_t np, float* tile) {
                      const RowBlock& rb = blocks[b];
                      const PanelMatrix& B = experts[std::size_t(rb.expert)].up;
                      const index_t ldt = np * width, per_panel = B.features_per_panel();
                      panel_gemm<Isa>(in + rb.in_offset, RowLayout::of(rb.n, d_model), B, p0, np, tile, ldt);
                      const RowLayout H = RowLayout::of(rb.n, d_ff);
                      float* h_block = hidden + rb.hidden_offset;
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
                          // A chunk of W features never crosses a depth block (KC is a multiple of W).
                          float* dst = h_block + H.at(i, f0);
                          for (index_t j = 0; j < nf; ++j)
                            dst[j * panel_rows] = RoundToBf16 ? round_to_bf16(h[j]) : h[j];
                        }
                    });
    run_panel_tasks(pool, ws, experts[0].down.panels, width, &ThreadScratch::tile,
                    [&](std::size_t b, index_t p0, index_t np, float* tile) {
                      const RowBlock& rb = blocks[b];
                      const PanelMatrix& B = experts[std::size_t(rb.expert)].down;
                      const index_t ldt = np * width;
                      panel_gemm<Isa>(hidden + rb.hidden_offset, RowLayout::of(rb.n, d_ff), B, p0, np, tile, ldt);
                      const index_t o0 = p0 * width, no = std::min(np * width, d_model - o0);
                      for (index_t i = 0; i < rb.n; ++i)
                        std::copy(tile + i * ldt, tile + i * ldt + no, out.row(rb.r0 + i) + o0);
                    });
  }
};

}  // namespace moe::backend::cpu
