#pragma once
/// \file ffn_int8.hpp
/// Int8Ffn<Isa>: the experts in w8a8 (numerics::Int8).
///
///   packing      weights into int8 panels of NR = 16 columns (AVX-512: 32) with per-column
///                scales and sums (panels.hpp)
///   micro-kernel u7 × s8 into exact int32 sums (int8_gemm.hpp): vpmaddubsw
///                on AVX2, 512-bit vpdpbusd on AVX512-VNNI
///   epilogue     dequantise (a vector of columns at a time); phase 1 applies the activation into fp32 hidden
///                rows, which are quantised per row in turn for phase 2
///
/// Each block's input rows are quantised per token; tasks as in PanelFfn.

#include <algorithm>

#include "moe/backend/cpu/int8_gemm.hpp"
#include "moe/backend/cpu/prepared.hpp"
#include "moe/backend/cpu/tasks.hpp"
#include "moe/backend/cpu/workspace.hpp"
#include "moe/expert/ffn.hpp"

namespace moe::backend::cpu {

template <class Isa>
struct Int8Ffn {
  /// NR: two vectors of int32 columns (AVX-512: 32, AVX2 and the portable loop: 16)
  static constexpr index_t width = Isa::avx512 ? 32 : 16;
  static constexpr index_t max_int8_width = 32;

  static DType pack_target(DType) noexcept { return DType::I8; }
  static bool pairs() noexcept { return false; }

  template <FFN F>
  static void run(moe::detail::ThreadPool& pool, const RoutingPlan& plan, MatrixView<const float> x,
                  const std::vector<PackedExpert>& experts, MatrixView<float> out, Workspace& ws) {
    using batch = floats<Isa>;
    constexpr index_t W = index_t(batch::size);
    const PanelMatrix& up0 = experts[0].up;
    const index_t d_ff = up0.outputs, d_model = up0.depth, NR = up0.width;
    row_blocks(plan, d_model, d_ff, ws.blocks);
    const std::vector<RowBlock>& blocks = ws.blocks;
    std::vector<std::size_t>& q_in = ws.q_in_at;
    std::vector<std::size_t>& q_hidden = ws.q_hidden_at;
    q_in.assign(blocks.size() + 1, 0);
    q_hidden.assign(blocks.size() + 1, 0);
    for (std::size_t b = 0; b < blocks.size(); ++b) {
      q_in[b + 1] = q_in[b] + QuantRows::of(blocks[b].n, d_model).bytes();
      q_hidden[b + 1] = q_hidden[b] + QuantRows::of(blocks[b].n, d_ff).bytes();
    }
    std::uint8_t* qi = grow(ws.q_in, q_in.back());
    std::uint8_t* qh = grow(ws.q_hidden, q_hidden.back());
    const std::size_t rows = std::size_t(plan.rows());
    float* in_scale = grow(ws.row_scale, 2 * rows);  // [rows] per input row, then [rows] per hidden row
    std::int32_t* in_zero = grow(ws.row_zero, 2 * rows);
    float* hidden = grow(ws.hidden, rows * std::size_t(d_ff));  // [rows, d_ff] fp32
    const typename F::activation act{};

    pool.parallel_for(std::int64_t(blocks.size()), [&](std::int64_t b, int) {
      const RowBlock& rb = blocks[std::size_t(b)];
      quantize_rows(x.row(rb.r0), x.row_stride, QuantRows::of(rb.n, d_model), qi + q_in[std::size_t(b)],
                    in_scale + rb.r0, in_zero + rb.r0);
    });
    run_panel_tasks(pool, ws, up0.panels, width, &ThreadScratch::itile,
                    [&](std::size_t b, index_t p0, index_t np, std::int32_t* tile) {
                      const RowBlock& rb = blocks[b];
                      const PanelMatrix& B = experts[std::size_t(rb.expert)].up;
                      const index_t ldt = np * NR, per_panel = B.features_per_panel();
                      int8_gemm<Isa>(qi + q_in[b], QuantRows::of(rb.n, d_model), B, p0, np, tile, ldt);
                      alignas(64) float y[max_int8_width];  // one panel's columns, dequantised
                      for (index_t i = 0; i < rb.n; ++i) {
                        const index_t r = rb.r0 + i;
                        for (index_t p = 0; p < np; ++p) {
                          const std::size_t c0 = std::size_t((p0 + p) * NR);
                          dequantize_row<Isa>(tile + i * ldt + p * NR, in_scale[r], in_zero[r], B.scale.data() + c0,
                                              B.sums.data() + c0, NR, y);
                          const index_t f0 = (p0 + p) * per_panel, nf = std::min(per_panel, d_ff - f0);
                          float* h = hidden + r * d_ff + f0;
                          const float *g = y, *u = y + per_panel;  // gated: gate columns, then up columns
                          index_t j = 0;
                          for (; j + W <= nf; j += W) {
                            if constexpr (F::gated)
                              (act(batch::load_aligned(g + j)) * batch::load_unaligned(u + j)).store_unaligned(h + j);
                            else
                              act(batch::load_aligned(y + j)).store_unaligned(h + j);
                          }
                          for (; j < nf; ++j) h[j] = F::gated ? act(g[j]) * u[j] : act(y[j]);
                        }
                      }
                    });
    float* hid_scale = in_scale + rows;
    std::int32_t* hid_zero = in_zero + rows;
    pool.parallel_for(std::int64_t(blocks.size()), [&](std::int64_t b, int) {
      const RowBlock& rb = blocks[std::size_t(b)];
      quantize_rows(hidden + rb.r0 * d_ff, d_ff, QuantRows::of(rb.n, d_ff), qh + q_hidden[std::size_t(b)],
                    hid_scale + rb.r0, hid_zero + rb.r0);
    });
    run_panel_tasks(pool, ws, experts[0].down.panels, width, &ThreadScratch::itile,
                    [&](std::size_t b, index_t p0, index_t np, std::int32_t* tile) {
                      const RowBlock& rb = blocks[b];
                      const PanelMatrix& B = experts[std::size_t(rb.expert)].down;
                      const index_t ldt = np * NR;
                      int8_gemm<Isa>(qh + q_hidden[b], QuantRows::of(rb.n, d_ff), B, p0, np, tile, ldt);
                      const index_t o0 = p0 * NR, no = std::min(np * NR, d_model - o0);
                      for (index_t i = 0; i < rb.n; ++i) {
                        const index_t r = rb.r0 + i;
                        dequantize_row<Isa>(tile + i * ldt, hid_scale[r], hid_zero[r], B.scale.data() + o0,
                                            B.sums.data() + o0, no, out.row(r) + o0);
                      }
                    });
  }
};

}  // namespace moe::backend::cpu
