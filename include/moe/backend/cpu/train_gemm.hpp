#pragma once
/// \file train_gemm.hpp
/// The products of an expert's backward on the panel micro-kernel (fp32):
/// many small GEMMs at once, cut into tiles for the pool.
///
/// Every product is C[m, N] = A · Bᵀ over a depth K, with A and B read
/// through an Operand: a row-major matrix or a transposed view of one (the
/// backward needs dOutᵀ, hiddenᵀ, Xᵀ, W_downᵀ, …), or two of them side by
/// side along k. A is packed once per product (in chunks of rows, the
/// layout panel_gemm reads); each task packs the panels of B it needs and
/// multiplies them by one chunk of A's rows, then hands its tile of C to
/// the caller's `store`. Each element of C is computed by one task, with a
/// depth blocking fixed by the product's shape: the same bits whatever the
/// thread count.

#include <algorithm>
#include <limits>
#include <span>
#include <vector>

#include "moe/backend/cpu/gemm_job.hpp"
#include "moe/backend/cpu/panel_gemm.hpp"
#include "moe/backend/cpu/panels.hpp"
#include "moe/backend/cpu/workspace.hpp"
#include "moe/detail/thread_pool.hpp"

namespace moe::backend::cpu {

/// Rows [row0, row0 + L.rows) of A into layout L (what pack_rows does for a
/// row-major A), walking the operand in its own memory order.
inline void pack_operand_rows(const Operand& a, index_t row0, const RowLayout& L, float* dst) noexcept {
  // (A operands are single matrices: `split` is for B.)
  for (index_t k0 = 0; k0 < L.depth; k0 += L.block) {
    const index_t kc = std::min(L.block, L.depth - k0);
    float* block = dst + k0 * L.padded;
    const float* src = a.data + row0 * a.row_step + k0 * a.k_step;
    for (index_t i = 0; i < L.rows; ++i) {
      float* d = block + (i / panel_rows) * kc * panel_rows + i % panel_rows;
      const float* s = src + i * a.row_step;
      if (a.k_step == 1)
        for (index_t k = 0; k < kc; ++k) d[k * panel_rows] = s[k];
      else
        for (index_t k = 0; k < kc; ++k) d[k * panel_rows] = s[k * a.k_step];
    }
  }
}

/// Rows [row0, row0 + np·NR) of B [n, K] (zero past n) as np fp32 panels
/// of NR columns in `out` (storage grown as needed).
inline void pack_operand_panels(const Operand& b, index_t n, index_t K, index_t row0, index_t np, index_t NR,
                                PanelMatrix& out) {
  const std::size_t bytes = std::size_t(np * K * NR) * sizeof(float);
  if (out.storage.size() < bytes) out.storage = AlignedBytes(bytes);
  out.dtype = DType::F32;
  out.layout = PanelLayout::single;
  out.pairs = false;
  out.width = NR;
  out.depth = K;
  out.outputs = np * NR;
  out.panels = np;
  auto* dst = reinterpret_cast<float*>(out.storage.data());
  if (b.k_step == 1 && b.split >= K) {  // B's rows are contiguous: read each once, front to back
    for (index_t p = 0; p < np; ++p) {
      const index_t first = row0 + p * NR, cols = std::clamp<index_t>(n - first, 0, NR);
      float* d = dst + p * K * NR;
      for (index_t j = 0; j < cols; ++j) {
        const float* src = b.data + (first + j) * b.row_step;
        for (index_t k = 0; k < K; ++k) d[k * NR + j] = src[k];
      }
      for (index_t j = cols; j < NR; ++j)
        for (index_t k = 0; k < K; ++k) d[k * NR + j] = 0.0f;
    }
    return;
  }
  for (index_t p = 0; p < np; ++p) {  // B is a transposed view: NR contiguous values per k
    const index_t first = row0 + p * NR, cols = std::clamp<index_t>(n - first, 0, NR);
    for (index_t k = 0; k < K; ++k) {
      float* d = dst + (p * K + k) * NR;
      const bool second = k >= b.split;
      const float* src = second ? b.data2 + first * b.row_step2 + (k - b.split) * b.k_step2
                                : b.data + first * b.row_step + k * b.k_step;
      const index_t step = second ? b.row_step2 : b.row_step;
      if (step == 1)
        std::copy(src, src + cols, d);
      else
        for (index_t j = 0; j < cols; ++j) d[j] = src[j * step];
      std::fill(d + cols, d + NR, 0.0f);
    }
  }
}

/// For every job, C = A·Bᵀ in tiles of (chunk of A's rows, panels of B's
/// rows); store(job, row0, col0, tile, ldt, rows, cols) receives each tile
/// (ldt floats between its rows). `g`'s buffers are reused: a steady-state
/// call allocates nothing.
template <class Isa, class Store>
void grouped_gemm(moe::detail::ThreadPool& pool, std::span<const GemmJob> jobs, GemmBuffers& g, Store&& store) {
  constexpr index_t NR = 2 * index_t(floats<Isa>::size);
  // A in chunks of rows, each in the layout panel_gemm reads.
  g.chunks.clear();
  g.first_chunk.clear();
  std::size_t packed = 0;
  for (std::size_t j = 0; j < jobs.size(); ++j) {
    g.first_chunk.push_back(g.chunks.size());
    for (index_t r = 0; r < jobs[j].m; r += train_chunk_rows) {
      const index_t rows = std::min(train_chunk_rows, jobs[j].m - r);
      g.chunks.push_back({j, r, rows, packed});
      packed += RowLayout::of(rows, jobs[j].depth).size();
    }
  }
  g.first_chunk.push_back(g.chunks.size());
  float* packed_a = grow(g.packed_a, packed);
  pool.parallel_for(std::int64_t(g.chunks.size()), [&](std::int64_t c, int) {
    const GemmBuffers::Chunk& ch = g.chunks[std::size_t(c)];
    const GemmJob& job = jobs[ch.job];
    pack_operand_rows(job.a, ch.row0, RowLayout::of(ch.rows, job.depth), packed_a + ch.offset);
  });

  // Tasks: (job, block of train_chunk_panels panels of B): the panels are
  // packed once and multiplied by every chunk of the job's rows.
  g.tasks.clear();
  for (std::size_t j = 0; j < jobs.size(); ++j) {
    if (jobs[j].m == 0) continue;
    const index_t panels = (jobs[j].n + NR - 1) / NR;
    for (index_t p = 0; p < panels; p += train_chunk_panels)
      g.tasks.push_back({j, p, std::min(train_chunk_panels, panels - p)});
  }
  // Every thread's buffers grown here, before the tasks: which thread runs
  // which task changes from call to call.
  std::size_t panel_bytes = 0;
  for (const GemmBuffers::Task& t : g.tasks)
    panel_bytes = std::max(panel_bytes, std::size_t(t.np * jobs[t.job].depth * NR) * sizeof(float));
  if (g.scratch.size() < std::size_t(pool.size())) g.scratch.resize(std::size_t(pool.size()));
  for (TrainScratch& s : g.scratch) {
    grow(s.tile, std::size_t(train_chunk_rows * train_chunk_panels * NR));
    if (s.panels.storage.size() < panel_bytes) s.panels.storage = AlignedBytes(panel_bytes);
  }
  pool.parallel_for(std::int64_t(g.tasks.size()), [&](std::int64_t t, int thread) {
    const GemmBuffers::Task& task = g.tasks[std::size_t(t)];
    const GemmJob& job = jobs[task.job];
    TrainScratch& s = g.scratch[std::size_t(thread)];
    pack_operand_panels(job.b, job.n, job.depth, task.p0 * NR, task.np, NR, s.panels);
    const index_t ldt = task.np * NR, col0 = task.p0 * NR;
    for (std::size_t c = g.first_chunk[task.job]; c < g.first_chunk[task.job + 1]; ++c) {
      const GemmBuffers::Chunk& ch = g.chunks[c];
      panel_gemm<Isa, DType::F32>(packed_a + ch.offset, RowLayout::of(ch.rows, job.depth), s.panels, 0, task.np,
                                  s.tile.data(), ldt);
      store(task.job, ch.row0, col0, s.tile.data(), ldt, ch.rows, std::min(ldt, job.n - col0));
    }
  });
}

}  // namespace moe::backend::cpu
