#pragma once
/// \file tasks.hpp
/// How backend::Cpu cuts the experts' work into tasks for its pool: by
/// tiles, not by expert. A task is (expert, block of rows, block of output
/// panels), so both cores stay busy even when one expert gets most tokens.
/// Each task writes its own outputs with a fixed arithmetic order: the
/// result does not depend on which thread ran what.

#include <algorithm>
#include <vector>

#include "moe/backend/cpu/panel_gemm.hpp"
#include "moe/backend/cpu/workspace.hpp"
#include "moe/capacity/plan.hpp"
#include "moe/detail/thread_pool.hpp"

namespace moe::backend::cpu {

inline constexpr index_t panels_per_task = 16;
/// Up to this many rows an expert's rows are one block, so its weights are
/// streamed from memory once per call (a prompt of 512 tokens gives Mixtral's
/// experts about 130 rows each). Measured on a 2-core Zen 5, Mixtral layer:
/// 96 rows per block took 821-836 ms at T = 512 (fp32), 384 took 776-805.
inline constexpr index_t rows_per_task = 384;

/// Experts that got at least one row: the divisor of the rows-per-expert
/// thresholds that pick a kernel.
inline index_t experts_with_rows(const RoutingPlan& plan) noexcept {
  index_t n = 0;
  for (index_t e = 0; e < plan.experts; ++e) n += plan.kept(e) > 0;
  return n;
}

/// Splits each expert's rows evenly into blocks of at most rows_per_task
/// (rounded to the kernel's row group) into `blocks`; records where each
/// block's rows sit in the packed input ([rows, d_model]) and hidden
/// ([rows, d_ff]) buffers.
inline void row_blocks(const RoutingPlan& plan, index_t d_model, index_t d_ff, std::vector<RowBlock>& blocks) {
  blocks.clear();
  std::size_t in = 0, hidden = 0;
  for (index_t e = 0; e < plan.experts; ++e) {
    const index_t rows = plan.kept(e);
    if (rows == 0) continue;
    const index_t count = (rows + rows_per_task - 1) / rows_per_task;
    const index_t per_block = (rows + count - 1) / count;
    const index_t step = (per_block + panel_rows - 1) / panel_rows * panel_rows;
    for (index_t r = 0; r < rows; r += step) {
      const index_t n = std::min(step, rows - r);
      blocks.push_back({e, plan.first_row(e) + r, n, in, hidden});
      in += RowLayout::of(n, d_model).size();
      hidden += RowLayout::of(n, d_ff).size();
    }
  }
}

/// Runs fn(block index, first panel, panels, tile) over every (row block,
/// block of panels_per_task panels) in parallel; `tile` is the thread's
/// [rows, panels · width] buffer: fp32 (&ThreadScratch::tile) or int32
/// (&ThreadScratch::itile).
template <class T, class Fn>
void run_panel_tasks(moe::detail::ThreadPool& pool, Workspace& ws, index_t panels, index_t width,
                     std::vector<T> ThreadScratch::*tile, Fn&& fn) {
  const index_t per_block = (panels + panels_per_task - 1) / panels_per_task;
  std::vector<ThreadScratch>& scratch = ws.per_thread(pool.size());
  const std::size_t tile_size = std::size_t(rows_per_task + panel_rows) * panels_per_task * width;
  for (ThreadScratch& s : scratch) grow(s.*tile, tile_size);
  pool.parallel_for(std::int64_t(ws.blocks.size()) * per_block, [&](std::int64_t i, int thread) {
    const index_t p0 = index_t(i % per_block) * panels_per_task;
    fn(std::size_t(i / per_block), p0, std::min(panels_per_task, panels - p0),
       (scratch[std::size_t(thread)].*tile).data());
  });
}

}  // namespace moe::backend::cpu
