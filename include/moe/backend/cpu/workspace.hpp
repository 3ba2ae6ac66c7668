#pragma once
/// \file workspace.hpp
/// cpu::Workspace: everything one call of backend::Cpu writes besides its
/// output, owned by the caller (inside the layer's Workspace) and grown to
/// the largest call: the experts' input and output rows, the hidden
/// activations between the two halves of the FFN, the row blocks of the
/// call, per-thread tiles and the int8 path's quantised rows. A steady-state
/// call (same or smaller shapes) allocates nothing. One workspace serves one
/// call at a time; two threads calling at once each pass their own.

#include <array>
#include <cstdint>
#include <utility>
#include <vector>

#include "moe/backend/cpu/gemm_job.hpp"
#include "moe/backend/cpu/panels.hpp"
#include "moe/backend/host_stages.hpp"
#include "moe/quant/q8_activations.hpp"

namespace moe::backend::cpu {

/// A buffer of at least n elements (grown, never shrunk).
template <class T>
T* grow(std::vector<T>& buffer, std::size_t n) {
  if (buffer.size() < n) buffer.resize(n);
  return buffer.data();
}

/// One pool thread's buffers.
struct ThreadScratch {
  std::vector<float> up, gate, gated;   ///< views path: a widened weight block, gate outputs
  std::vector<float> tile;              ///< panel path: [rows, panels · NR] fp32 results
  std::vector<std::int32_t> itile;      ///< int8 path: [rows, panels · NR] int32 results
  std::vector<std::uint8_t> q8_panels;  ///< BlockQ8 prefill: a task's int8 panels (q8_panels.hpp)
  std::vector<float> q8_scales;         ///< and their scales and minimums
};

/// A block of one expert's rows, and where its rows sit in the packed
/// activations of either phase (one after another).
struct RowBlock {
  index_t expert, r0, n;
  std::size_t in_offset, hidden_offset;
};

/// Per-thread buffers of the training GEMMs (train_gemm.hpp).
struct TrainScratch {
  PanelMatrix panels;       ///< a task's panels of B
  std::vector<float> tile;  ///< a task's tile of C
};

/// Rows of A per chunk (a multiple of the tile height) and B panels per
/// task of the training GEMMs.
inline constexpr index_t train_chunk_rows = 96;
inline constexpr index_t train_chunk_panels = 8;
/// Rows per expert (on average) from which training runs on the panel
/// kernel: below, packing the weights costs more than it saves.
inline constexpr index_t train_panel_rows = 64;

/// The reusable buffers of a grouped GEMM (train_gemm.hpp).
struct GemmBuffers {
  struct Chunk {
    std::size_t job;
    index_t row0, rows;
    std::size_t offset;  ///< into packed_a
  };
  struct Task {
    std::size_t job;
    index_t p0, np;  ///< panels of B
  };
  std::vector<Chunk> chunks;
  std::vector<std::size_t> first_chunk;  ///< per job, and one past the last
  std::vector<Task> tasks;
  std::vector<float> packed_a;
  std::vector<TrainScratch> scratch;  ///< per thread
};

/// What a training forward keeps for the backward, and the training GEMMs'
/// buffers (expert_train_panels.hpp).
struct TrainState {
  index_t rows = -1;                    ///< rows of the training forward that filled `pre`; −1: none kept
  std::vector<float> pre;               ///< [rows, 2·d_ff]: H_g (gated FFNs) | H_u, before the activation
  std::vector<float> d_hidden;          ///< [rows, 2·d_ff]: dH_up | dH_gate
  std::vector<std::int64_t> expert_of;  ///< a grouped GEMM's job → expert
  std::vector<GemmJob> jobs;
  GemmBuffers gemm;
};

struct Workspace : HostRows {
  std::vector<float> in;                            ///< panel path: the experts' input rows, laid out for the kernel
  std::vector<float> hidden;                        ///< hidden activations between the two halves of the FFN
  std::vector<std::uint32_t> pair_in, pair_hidden;  ///< the same as bf16 k pairs (vdpbf16ps: pair_gemm.hpp)
  std::vector<ThreadScratch> threads;               ///< one per pool thread
  std::vector<RowBlock> blocks;                     ///< the call's row blocks
  std::vector<std::pair<index_t, index_t>> tiles;   ///< views path: (expert, first output) tasks
  std::vector<std::uint8_t> q_in, q_hidden;         ///< int8 path: quantised rows, per row block
  std::vector<std::size_t> q_in_at, q_hidden_at;    ///< int8 path: where each block's quantised rows start
  std::vector<float> row_scale;                     ///< int8 path: per-row scales (input rows, then hidden rows)
  std::vector<std::int32_t> row_zero;               ///< int8 path: per-row zero points
  TrainState train;                                 ///< training: the forward's pre-activations, backward buffers
  std::array<quant::Q8Rows, 3> q8_in, q8_hidden;    ///< BlockQ8: the phases' rows per activation kind (q8_dot.hpp)

  std::vector<ThreadScratch>& per_thread(int n) {
    if (threads.size() < std::size_t(n)) threads.resize(std::size_t(n));
    return threads;
  }
};

}  // namespace moe::backend::cpu
