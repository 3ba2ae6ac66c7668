#pragma once
/// \file cpu.hpp
/// backend::Cpu: xsimd kernels on all cores.
///
/// Two ways to run the experts:
///   packed    after an explicit `pack(experts)`: weights copied once into
///             panels (cpu/panels.hpp) and run by the register-blocked
///             kernel of cpu/panel_gemm.hpp, SwiGLU applied as gate/up tiles
///             are stored. The fast path, for prefill and decode alike.
///   unpacked  straight on the weight views (an mmap'ed checkpoint, no copy):
///             dot products of rows (cpu/dot_tile.hpp), BF16/F16 weights
///             widened block by block into a per-thread buffer.
/// The numerics (numerics.hpp) are a template parameter: Cpu<> =
/// Cpu<numerics::AsStored> computes in fp32 on the stored weights;
/// Cpu<numerics::Bf16Compute> and Cpu<numerics::Int8> convert the weights
/// when they pack them, so they pack on first use if not packed before.
///
/// Work is split by tiles, not by expert: a task is (expert, block of rows,
/// block of output features), so both cores stay busy even when one expert
/// gets most tokens.
///
/// A Cpu object and its copies share one state: the packed weights and a
/// workspace (hidden activations, per-thread tiles) that grows to the
/// largest call and is then reused, so steady-state calls do not allocate
/// in the expert compute. Calls that share a state run one at a time.

#include <xsimd/xsimd.hpp>

#include <memory>
#include <mutex>
#include <span>
#include <string_view>
#include <thread>
#include <type_traits>
#include <vector>

#include "moe/backend/backend.hpp"
#include "moe/backend/numerics.hpp"
#include "moe/backend/cpu/dot_tile.hpp"
#include "moe/backend/cpu/expert_train.hpp"
#include "moe/backend/cpu/int8_gemm.hpp"
#include "moe/backend/cpu/panel_gemm.hpp"
#include "moe/backend/cpu/panels.hpp"
#include "moe/detail/thread_pool.hpp"

namespace moe::backend {

template <numerics::Numerics N = numerics::AsStored, class Arch = xsimd::default_arch>
class Cpu {
 public:
  using arch = Arch;
  using numerics_type = N;
  static constexpr std::string_view name() {
    if constexpr (std::is_same_v<N, numerics::Bf16Compute>)
      return "cpu-bf16";
    else if constexpr (std::is_same_v<N, numerics::Int8>)
      return "cpu-int8";
    else
      return "cpu";
  }
  static constexpr index_t block = 32;  ///< output features per task (unpacked)
  static constexpr index_t panel_width = 2 * index_t(xsimd::batch<float, Arch>::size);  ///< NR
  static constexpr index_t panels_per_task = 16;
  static constexpr index_t rows_per_task = 96;
  static constexpr index_t int8_width = 16;  ///< NR of int8 panels (the AVX2 kernel's two vectors)
  static constexpr bool is_int8 = std::is_same_v<N, numerics::Int8>;
  static constexpr bool rounds_to_bf16 = std::is_same_v<N, numerics::Bf16Compute>;

  /// Uses a process-wide pool with one thread per hardware thread.
  Cpu() : pool_(default_pool()), state_(std::make_shared<State>()) {}
  /// Uses a pool of its own with `threads` threads (1 = no threading).
  explicit Cpu(int threads) : pool_(std::make_shared<detail::ThreadPool>(threads)), state_(std::make_shared<State>()) {}

  int threads() const noexcept { return pool_->size(); }

  /// Packs these experts' weights into panels, once: from now on
  /// expert_ffn on the same weight views runs the packed kernel. Returns the
  /// packed set (its bytes() is the memory it costs); packing the same
  /// views again returns the cached set.
  std::shared_ptr<const cpu::PackedExperts> pack(std::span<const ExpertWeights> w) const {
    std::lock_guard lock(state_->mutex);
    if (auto found = find_packed(w)) return found;
    auto set = std::make_shared<cpu::PackedExperts>();
    set->source.assign(w.begin(), w.end());
    const auto for_each_panel = [this](index_t n, const auto& fn) {
      pool_->parallel_for(n, [&](std::int64_t p, int) { fn(index_t(p)); });
    };
    const DType stored = w.empty() ? DType::F32 : w[0].up.dtype;
    const DType target = is_int8 ? DType::I8 : rounds_to_bf16 || stored == DType::BF16 ? DType::BF16 : DType::F32;
    const index_t width = is_int8 ? int8_width : panel_width;
    for (const ExpertWeights& e : w) {
      cpu::PackedExpert packed;
      packed.up = cpu::pack_panels(e.gate.empty() ? e.up : e.gate, e.gate.empty() ? nullptr : &e.up, width, target,
                                   for_each_panel);
      packed.down = cpu::pack_panels(e.down, nullptr, width, target, for_each_panel);
      set->experts.push_back(std::move(packed));
    }
    state_->packed.push_back(set);
    return set;
  }

  /// Forgets every packed set (their memory is freed once no one holds them).
  void drop_packed() const {
    std::lock_guard lock(state_->mutex);
    state_->packed.clear();
  }

  /// Bytes held by packed weights.
  std::size_t packed_bytes() const {
    std::lock_guard lock(state_->mutex);
    std::size_t b = 0;
    for (const auto& p : state_->packed) b += p->bytes();
    return b;
  }

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
    std::lock_guard lock(state_->mutex);
    auto& scratch = this->scratch();
    pool_->parallel_for(blocks, [&](std::int64_t b, int thread) {
      const index_t o0 = index_t(b) * block, n = std::min(block, w.rows - o0);
      gemm_rows(x.data, x.row_stride, x.rows, w, o0, n, out.row(0) + o0, out.row_stride,
                scratch[std::size_t(thread)].up);
    });
  }

  template <FFN F>
  void expert_ffn(const RoutingPlan& plan, MatrixView<const float> packed, std::span<const ExpertWeights> w,
                  MatrixView<float> out) const {
    if (plan.rows() == 0) return;
    constexpr bool must_pack = !std::is_same_v<N, numerics::AsStored>;  // the numerics live in the packed weights
    if constexpr (must_pack) pack(w);
    std::lock_guard lock(state_->mutex);
    const auto set = find_packed(w);
    const bool layout_fits = set && (set->experts[0].up.layout == cpu::PanelLayout::gate_up) == F::gated;
    if constexpr (must_pack)
      moe::detail::require(layout_fits, ErrorCode::invalid_argument, "backend::", name(), ": expert weights ",
                           F::gated ? "lack" : "have", " a gate matrix but the FFN is ", F::gated ? "" : "not ",
                           "gated");
    if (layout_fits && is_int8)
      int8_ffn<F>(plan, packed, *set, out);
    else if (layout_fits)
      packed_ffn<F>(plan, packed, *set, out);
    else
      unpacked_ffn<F>(plan, packed, w, out);
  }

  /// Training forward: with expert dropout active, each expert's rows run as
  /// dense GEMMs with the mask applied to the hidden units (cpu/expert_train.hpp);
  /// without it, the inference path above.
  template <FFN F>
  void expert_ffn(const RoutingPlan& plan, MatrixView<const float> packed, std::span<const ExpertWeights> w,
                  MatrixView<float> out,
                  const ExpertDropout& drop) const requires std::is_same_v<N, numerics::AsStored> {
    if (!drop.active()) return expert_ffn<F>(plan, packed, w, out);
    for_each_expert(plan, [&](index_t e, index_t r0, index_t n) {
      cpu::expert_forward<F>(plan, r0, n, packed, w[std::size_t(e)], drop, out);
    });
  }

  /// Backward of the experts (fp32 numerics only: the gradient of a
  /// quantised forward is not what this computes). One task per expert.
  template <FFN F>
  void expert_backward(const RoutingPlan& plan, MatrixView<const float> packed, std::span<const ExpertWeights> w,
                       MatrixView<const float> d_out, const ExpertDropout& drop, std::span<ExpertGrads> grads,
                       MatrixView<float> d_packed) const requires std::is_same_v<N, numerics::AsStored> {
    for_each_expert(plan, [&](index_t e, index_t r0, index_t n) {
      cpu::expert_backward<F>(plan, r0, n, packed, w[std::size_t(e)], d_out, drop,
                              grads.empty() ? nullptr : &grads[std::size_t(e)], d_packed);
    });
  }

 private:
  struct Scratch {
    std::vector<float> up, gate, gated, tile;
    std::vector<std::int32_t> itile;
  };
  struct State {
    std::mutex mutex;
    std::vector<std::shared_ptr<const cpu::PackedExperts>> packed;
    std::vector<float> in;                     ///< packed path: the experts' input rows, packed for the kernel
    std::vector<float> hidden;                 ///< [rows, d_ff] between the two halves of the FFN
    std::vector<Scratch> scratch;              ///< one per pool thread
    std::vector<std::uint8_t> q_in, q_hidden;  ///< int8 path: quantised rows, per row block
    std::vector<float> row_scale;              ///< int8 path: per-row scales (input rows, then hidden rows)
    std::vector<std::int32_t> row_zero;        ///< int8 path: per-row zero points
  };

  /// Runs fn(e, first row, rows) for every expert with rows, one task each.
  template <class Fn>
  void for_each_expert(const RoutingPlan& plan, Fn&& fn) const {
    pool_->parallel_for(plan.experts, [&](std::int64_t e, int) {
      const index_t r0 = plan.offsets[std::size_t(e)], n = plan.kept(index_t(e));
      if (n > 0) fn(index_t(e), r0, n);
    });
  }

  std::shared_ptr<const cpu::PackedExperts> find_packed(std::span<const ExpertWeights> w) const {
    for (const auto& p : state_->packed)
      if (p->packs(w)) return p;
    return nullptr;
  }

  /// A workspace buffer of at least n floats (grown, never shrunk).
  static float* grow(std::vector<float>& buffer, std::size_t n) {
    if (buffer.size() < n) buffer.resize(n);
    return buffer.data();
  }
  std::vector<Scratch>& scratch() const {
    state_->scratch.resize(std::size_t(pool_->size()));
    return state_->scratch;
  }

  /// A block of one expert's rows, and where its rows sit in the packed
  /// activations of either phase (cpu::RowLayout, one after another).
  struct RowBlock {
    index_t expert, r0, n;
    std::size_t in_offset, hidden_offset;
  };

  /// Splits each expert's rows evenly into blocks of at most rows_per_task
  /// (rounded to the kernel's row group).
  static std::vector<RowBlock> row_blocks(const RoutingPlan& plan, index_t d_model, index_t d_ff) {
    std::vector<RowBlock> blocks;
    std::size_t in = 0, hidden = 0;
    for (index_t e = 0; e < plan.experts; ++e) {
      const index_t rows = plan.kept(e);
      if (rows == 0) continue;
      const index_t count = (rows + rows_per_task - 1) / rows_per_task;
      const index_t per_block = (rows + count - 1) / count;
      const index_t step = (per_block + cpu::panel_rows - 1) / cpu::panel_rows * cpu::panel_rows;
      for (index_t r = 0; r < rows; r += step) {
        const index_t n = std::min(step, rows - r);
        blocks.push_back({e, plan.offsets[std::size_t(e)] + r, n, in, hidden});
        in += cpu::RowLayout::of(n, d_model).size();
        hidden += cpu::RowLayout::of(n, d_ff).size();
      }
    }
    return blocks;
  }

  /// The packed path. Each block's input rows are packed once for the
  /// kernel. Phase 1: hidden = act(X·W1ᵀ) ⊙ (X·W3ᵀ), each gate/up tile
  /// reduced to W hidden features as it leaves the kernel and stored
  /// straight in the layout phase 2 reads. Phase 2: out = hidden · W2ᵀ.
  /// Tasks are (block of rows, block of panels).
  template <FFN F>
  void packed_ffn(const RoutingPlan& plan, MatrixView<const float> x, const cpu::PackedExperts& set,
                  MatrixView<float> out) const {
    using batch = xsimd::batch<float, Arch>;
    constexpr index_t W = index_t(batch::size);
    const cpu::PanelMatrix& up0 = set.experts[0].up;
    const index_t d_ff = up0.outputs, d_model = up0.depth;
    const std::vector<RowBlock> blocks = row_blocks(plan, d_model, d_ff);
    const RowBlock& last = blocks.back();
    float* in = grow(state_->in, last.in_offset + cpu::RowLayout::of(last.n, d_model).size());
    float* hidden = grow(state_->hidden, last.hidden_offset + cpu::RowLayout::of(last.n, d_ff).size());
    const typename F::activation act{};

    pool_->parallel_for(std::int64_t(blocks.size()), [&](std::int64_t b, int) {
      const RowBlock& rb = blocks[std::size_t(b)];
      cpu::pack_rows(x.row(rb.r0), x.row_stride, cpu::RowLayout::of(rb.n, d_model), in + rb.in_offset, rounds_to_bf16);
    });
    run_panel_tasks(blocks, up0.panels, panel_width, &Scratch::tile,
                    [&](std::size_t b, index_t p0, index_t np, float* tile) {
                      const RowBlock& rb = blocks[b];
                      const cpu::PanelMatrix& B = set.experts[std::size_t(rb.expert)].up;
                      const index_t ldt = np * panel_width, per_panel = B.features_per_panel();
                      cpu::panel_gemm<Arch>(in + rb.in_offset, cpu::RowLayout::of(rb.n, d_model), B, p0, np, tile, ldt);
                      const cpu::RowLayout H = cpu::RowLayout::of(rb.n, d_ff);
                      float* h_block = hidden + rb.hidden_offset;
                      alignas(64) float h[2 * W];
                      for (index_t i = 0; i < rb.n; ++i)
                        for (index_t p = 0; p < np; ++p) {
                          const float* t = tile + i * ldt + p * panel_width;
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
                            dst[j * cpu::panel_rows] = rounds_to_bf16 ? cpu::round_to_bf16(h[j]) : h[j];
                        }
                    });
    run_panel_tasks(blocks, set.experts[0].down.panels, panel_width, &Scratch::tile,
                    [&](std::size_t b, index_t p0, index_t np, float* tile) {
                      const RowBlock& rb = blocks[b];
                      const cpu::PanelMatrix& B = set.experts[std::size_t(rb.expert)].down;
                      const index_t ldt = np * panel_width;
                      cpu::panel_gemm<Arch>(hidden + rb.hidden_offset, cpu::RowLayout::of(rb.n, d_ff), B, p0, np, tile,
                                            ldt);
                      const index_t o0 = p0 * panel_width, no = std::min(np * panel_width, d_model - o0);
                      for (index_t i = 0; i < rb.n; ++i)
                        std::copy(tile + i * ldt, tile + i * ldt + no, out.row(rb.r0 + i) + o0);
                    });
  }

  /// Runs fn(block index, first panel, panels, tile) over every (row block,
  /// block of panels_per_task panels), in parallel; `tile` is the thread's
  /// [rows, panels · width] buffer: fp32 (`&Scratch::tile`) or int32
  /// (`&Scratch::itile`).
  template <class T, class Fn>
  void run_panel_tasks(const std::vector<RowBlock>& blocks, index_t panels, index_t width,
                       std::vector<T> Scratch::*tile, Fn&& fn) const {
    const index_t per_block = (panels + panels_per_task - 1) / panels_per_task;
    auto& scratch = this->scratch();
    const std::size_t tile_size = std::size_t(rows_per_task + cpu::panel_rows) * panels_per_task * width;
    for (auto& s : scratch)
      if ((s.*tile).size() < tile_size) (s.*tile).resize(tile_size);
    pool_->parallel_for(std::int64_t(blocks.size()) * per_block, [&](std::int64_t i, int thread) {
      const index_t p0 = index_t(i % per_block) * panels_per_task;
      fn(std::size_t(i / per_block), p0, std::min(panels_per_task, panels - p0),
         (scratch[std::size_t(thread)].*tile).data());
    });
  }

  /// The int8 path (numerics::Int8). Each block's input rows are quantised
  /// per token; phase 1 multiplies them with the int8 gate/up panels,
  /// dequantises and applies the activation into fp32 hidden rows; those are
  /// quantised per row in turn for phase 2. Tasks as in packed_ffn.
  template <FFN F>
  void int8_ffn(const RoutingPlan& plan, MatrixView<const float> x, const cpu::PackedExperts& set,
                MatrixView<float> out) const {
    const cpu::PanelMatrix& up0 = set.experts[0].up;
    const index_t d_ff = up0.outputs, d_model = up0.depth, NR = up0.width;
    const std::vector<RowBlock> blocks = row_blocks(plan, d_model, d_ff);
    std::vector<std::size_t> q_in(blocks.size() + 1, 0), q_hidden(blocks.size() + 1, 0);
    for (std::size_t b = 0; b < blocks.size(); ++b) {
      q_in[b + 1] = q_in[b] + cpu::QuantRows::of(blocks[b].n, d_model).bytes();
      q_hidden[b + 1] = q_hidden[b] + cpu::QuantRows::of(blocks[b].n, d_ff).bytes();
    }
    State& st = *state_;
    if (st.q_in.size() < q_in.back()) st.q_in.resize(q_in.back());
    if (st.q_hidden.size() < q_hidden.back()) st.q_hidden.resize(q_hidden.back());
    const std::size_t rows = std::size_t(plan.rows());
    if (st.row_scale.size() < 2 * rows) st.row_scale.resize(2 * rows);
    if (st.row_zero.size() < 2 * rows) st.row_zero.resize(2 * rows);
    float* in_scale = st.row_scale.data();  // [rows] per input row, then [rows] per hidden row
    std::int32_t* in_zero = st.row_zero.data();
    float* hidden = grow(st.hidden, rows * std::size_t(d_ff));  // [rows, d_ff] fp32
    const typename F::activation act{};

    pool_->parallel_for(std::int64_t(blocks.size()), [&](std::int64_t b, int) {
      const RowBlock& rb = blocks[std::size_t(b)];
      cpu::quantize_rows(x.row(rb.r0), x.row_stride, cpu::QuantRows::of(rb.n, d_model), st.q_in.data() + q_in[b],
                         in_scale + rb.r0, in_zero + rb.r0);
    });
    run_panel_tasks(blocks, up0.panels, int8_width, &Scratch::itile,
                    [&](std::size_t b, index_t p0, index_t np, std::int32_t* tile) {
                      const RowBlock& rb = blocks[b];
                      const cpu::PanelMatrix& B = set.experts[std::size_t(rb.expert)].up;
                      const index_t ldt = np * NR, per_panel = B.features_per_panel();
                      cpu::int8_gemm(st.q_in.data() + q_in[b], cpu::QuantRows::of(rb.n, d_model), B, p0, np, tile, ldt);
                      for (index_t i = 0; i < rb.n; ++i) {
                        const index_t r = rb.r0 + i;
                        for (index_t p = 0; p < np; ++p) {
                          const std::int32_t* t = tile + i * ldt + p * NR;
                          const auto column = [&](index_t j) {
                            const std::size_t c = std::size_t((p0 + p) * NR + j);
                            return cpu::dequantize(t[j], in_scale[r], in_zero[r], B.scale[c], B.sums[c]);
                          };
                          const index_t f0 = (p0 + p) * per_panel, nf = std::min(per_panel, d_ff - f0);
                          float* h = hidden + r * d_ff + f0;
                          for (index_t j = 0; j < nf; ++j)
                            h[j] = F::gated ? act(column(j)) * column(per_panel + j) : act(column(j));
                        }
                      }
                    });
    float* hid_scale = in_scale + rows;
    std::int32_t* hid_zero = in_zero + rows;
    pool_->parallel_for(std::int64_t(blocks.size()), [&](std::int64_t b, int) {
      const RowBlock& rb = blocks[std::size_t(b)];
      cpu::quantize_rows(hidden + rb.r0 * d_ff, d_ff, cpu::QuantRows::of(rb.n, d_ff), st.q_hidden.data() + q_hidden[b],
                         hid_scale + rb.r0, hid_zero + rb.r0);
    });
    run_panel_tasks(
        blocks, set.experts[0].down.panels, int8_width, &Scratch::itile,
        [&](std::size_t b, index_t p0, index_t np, std::int32_t* tile) {
          const RowBlock& rb = blocks[b];
          const cpu::PanelMatrix& B = set.experts[std::size_t(rb.expert)].down;
          const index_t ldt = np * NR;
          cpu::int8_gemm(st.q_hidden.data() + q_hidden[b], cpu::QuantRows::of(rb.n, d_ff), B, p0, np, tile, ldt);
          for (index_t i = 0; i < rb.n; ++i) {
            const index_t r = rb.r0 + i;
            float* o = out.row(r);
            for (index_t j = 0; j < np * NR && p0 * NR + j < d_model; ++j) {
              const std::size_t c = std::size_t(p0 * NR + j);
              o[p0 * NR + j] = cpu::dequantize(tile[i * ldt + j], hid_scale[r], hid_zero[r], B.scale[c], B.sums[c]);
            }
          }
        });
  }

  /// The unpacked path: dot products straight on the weight views.
  template <FFN F>
  void unpacked_ffn(const RoutingPlan& plan, MatrixView<const float> packed, std::span<const ExpertWeights> w,
                    MatrixView<float> out) const {
    const index_t d_ff = w[0].up.rows, d_model = w[0].up.cols;
    MatrixView<float> hidden(grow(state_->hidden, std::size_t(plan.rows() * d_ff)), plan.rows(), d_ff);

    // Phase 1: hidden = act(X·W1ᵀ) ⊙ (X·W3ᵀ) (gated) or act(X·Wiᵀ).
    run_tiles(plan, d_ff, [&](index_t e, index_t f0, index_t nf, Scratch& s) {
      const ExpertWeights& we = w[std::size_t(e)];
      const index_t r0 = plan.offsets[std::size_t(e)], n = plan.kept(e);
      float* h = hidden.row(r0) + f0;
      gemm_rows(packed.row(r0), packed.row_stride, n, we.up, f0, nf, h, d_ff, s.up);
      const typename F::activation act{};
      if constexpr (F::gated) {
        s.gated.resize(std::size_t(n * nf));
        gemm_rows(packed.row(r0), packed.row_stride, n, we.gate, f0, nf, s.gated.data(), nf, s.gate);
        for (index_t i = 0; i < n; ++i) apply_gated(act, s.gated.data() + i * nf, h + i * d_ff, nf);
      } else {
        for (index_t i = 0; i < n; ++i) apply_act(act, h + i * d_ff, nf);
      }
    });
    // Phase 2: out = hidden · W2ᵀ.
    run_tiles(plan, d_model, [&](index_t e, index_t o0, index_t no, Scratch& s) {
      const index_t r0 = plan.offsets[std::size_t(e)], n = plan.kept(e);
      gemm_rows(hidden.row(r0), d_ff, n, w[std::size_t(e)].down, o0, no, out.row(r0) + o0, out.row_stride, s.up);
    });
  }

  static std::shared_ptr<detail::ThreadPool> default_pool() {
    static const auto pool =
        std::make_shared<detail::ThreadPool>(int(std::max(1u, std::thread::hardware_concurrency())));
    return pool;
  }

  /// C[m, n] = A[m, K] · (rows [r0, r0+n) of W)ᵀ on the weight view. For a
  /// few rows of A (decode) BF16 weights are widened in registers as they
  /// stream; for many, a block is widened into `buf` once and reused by
  /// every row (cheaper than widening per row group). F32 is read as is.
  static void gemm_rows(const float* A, index_t lda, index_t m, const WeightMatrix& w, index_t r0, index_t n, float* C,
                        index_t ldc, std::vector<float>& buf) {
    constexpr index_t stream_rows = 8;
    if (w.dtype == DType::BF16 && m <= stream_rows) {
      const auto* b = reinterpret_cast<const std::uint16_t*>(w.row_bytes(r0));
      cpu::gemm_nt<Arch>(A, lda, m, b, w.cols, n, w.cols, C, ldc);
      return;
    }
    cpu::gemm_nt<Arch>(A, lda, m, widen(w, r0, n, buf), w.cols, n, w.cols, C, ldc);
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
    auto& scratch = this->scratch();
    pool_->parallel_for(std::int64_t(tiles.size()), [&](std::int64_t i, int thread) {
      const auto [e, f0] = tiles[std::size_t(i)];
      fn(e, f0, std::min(block, width - f0), scratch[std::size_t(thread)]);
    });
  }

  std::shared_ptr<detail::ThreadPool> pool_;
  std::shared_ptr<State> state_;
};

}  // namespace moe::backend
