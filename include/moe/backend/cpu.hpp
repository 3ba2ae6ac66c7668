#pragma once
/// \file cpu.hpp
/// backend::Cpu<Numerics, Isa>: xsimd kernels on all cores. A thin driver:
/// the numerics policy (cpu::Kernels below) says how weights are packed and
/// which micro-kernel and epilogue run them; the ISA type (cpu/isa.hpp)
/// picks every kernel's instructions; the driver prepares, schedules on its
/// thread pool and hands each stage its workspace.
///
/// Two ways to run the experts:
///   packed  `prepare(w, {.pack = true})` (layer.pack_weights()): weights
///           copied once into panels and run by the register-blocked kernel
///           (cpu/ffn_panels.hpp, cpu/ffn_int8.hpp). The fast path, for
///           prefill and decode alike. Numerics other than AsStored always
///           pack: their arithmetic lives in the converted weights.
///   views   straight on the weight views (an mmap'ed checkpoint, nothing
///           copied; cpu/ffn_views.hpp). Training runs here: the views are
///           the weights an optimiser updates. Block-quantised weights (a
///           GGUF's) always stay on their views: streamed block by block
///           for few rows per expert, turned into panels one depth block at
///           a time as tasks run for many (cpu/block_rows.hpp).
///
/// A Cpu object holds only its thread pool (shared by its copies); the
/// prepared weights belong to the layer and the per-call buffers to the
/// caller's Workspace, so one backend serves any number of layers and
/// threads.

#include <memory>
#include <span>
#include <string_view>
#include <type_traits>

#include "moe/backend/backend.hpp"
#include "moe/backend/cpu/attention.hpp"
#include "moe/backend/cpu/expert_train_panels.hpp"
#include "moe/backend/cpu/expert_train.hpp"
#include "moe/backend/cpu/ffn_int8.hpp"
#include "moe/backend/cpu/ffn_panels.hpp"
#include "moe/backend/cpu/ffn_views.hpp"
#include "moe/backend/cpu/isa.hpp"
#include "moe/backend/cpu/prepared.hpp"
#include "moe/backend/cpu/workspace.hpp"
#include "moe/backend/host_stages.hpp"
#include "moe/backend/numerics.hpp"
#include "moe/detail/thread_pool.hpp"

namespace moe::backend {

namespace cpu {
/// A numerics' kernels: `packed` (the policy: pack_target, width, run) and
/// whether the views path computes the same numerics (then packing is optional).
template <class N, class Isa>
struct Kernels;
template <class Isa>
struct Kernels<numerics::AsStored, Isa> {
  using packed = PanelFfn<Isa, false>;
  static constexpr bool runs_on_views = true;
  static constexpr std::string_view name = "cpu";
};
template <class Isa>
struct Kernels<numerics::Bf16Compute, Isa> {
  using packed = PanelFfn<Isa, true>;
  static constexpr bool runs_on_views = false;
  static constexpr std::string_view name = "cpu-bf16";
};
template <class Isa>
struct Kernels<numerics::Int8, Isa> {
  using packed = Int8Ffn<Isa>;
  static constexpr bool runs_on_views = false;
  static constexpr std::string_view name = "cpu-int8";
};

template <class Isa>
struct Kernels<numerics::BlockQ8, Isa> {
  using packed = PanelFfn<Isa, false>;  // weights that are not block-quantised run as AsStored
  static constexpr bool runs_on_views = true;
  static constexpr std::string_view name = "cpu-q8";
};
}  // namespace cpu

template <numerics::Numerics N = numerics::AsStored, isa::Isa I = isa::Native>
class Cpu : public HostStages {
  using kernels = cpu::Kernels<N, I>;
  using packed_kernel = typename kernels::packed;

 public:
  using isa_type = I;
  using numerics_type = N;
  using Prepared = cpu::Prepared;
  using Workspace = cpu::Workspace;
  static constexpr std::string_view name() { return kernels::name; }
  static constexpr index_t panel_width = packed_kernel::width;  ///< NR of the packed layout

  /// Uses a process-wide pool with one thread per hardware thread.
  Cpu() : pool_(detail::shared_pool()) {}
  /// Uses a pool of its own with `threads` threads (1 = no threading).
  explicit Cpu(int threads) : pool_(std::make_shared<detail::ThreadPool>(threads)) {}

  int threads() const noexcept { return pool_->size(); }

  /// The experts as this backend computes with them: the views, or panels
  /// when asked to pack (or when the numerics convert the weights).
  Prepared prepare(std::span<const ExpertWeights> w, PrepareOptions options = {}) const {
    Prepared p;
    p.views.assign(w.begin(), w.end());
    if (w.empty() || (!options.pack && kernels::runs_on_views)) return p;
    // Block-quantised weights (GGUF) stay in their blocks: fp32 panels would
    // be a dequantised copy several times their size. The views path
    // dequantises them block by block as it runs.
    if (kernels::runs_on_views && is_block_quantised(w[0].up.dtype)) return p;
    const auto for_each_panel = [this](index_t n, const auto& fn) {
      pool_->parallel_for(n, [&](std::int64_t i, int) { fn(index_t(i)); });
    };
    p.packed = cpu::pack_experts(w, packed_kernel::width, packed_kernel::pack_target(w[0].up.dtype), for_each_panel,
                                 packed_kernel::pairs());
    p.from.holds_copy = true;
    return p;
  }

  void gather(const RoutingPlan& plan, MatrixView<const float> x, MatrixView<float> rows, Workspace&) const {
    pool_->parallel_for(plan.rows(), [&](std::int64_t row, int) { gather_row(plan, x, rows, row); });
  }

  void combine(const RoutingPlan& plan, MatrixView<const float> rows_out, MatrixView<float> y, Workspace&) const {
    pool_->parallel_for(plan.tokens, [&](std::int64_t t, int) { combine_token(plan, rows_out, y, t); });
  }

  void gather_backward(const RoutingPlan& plan, MatrixView<const float> d_rows, MatrixView<float> dx,
                       Workspace&) const {
    pool_->parallel_for(plan.tokens, [&](std::int64_t t, int) { gather_backward_token(plan, d_rows, dx, t); });
  }

  /// out = x · Wᵀ for the dense layers, on the weight view.
  void linear(MatrixView<const float> x, const WeightMatrix& w, MatrixView<float> out) const {
    if constexpr (std::is_same_v<N, numerics::BlockQ8>) return cpu::ViewFfn<I>::linear_q8(*pool_, x, w, out);
    cpu::ViewFfn<I>::linear(*pool_, x, w, out);
  }

  /// Attention's scores, softmax and weighted sum (moe/core/attention.hpp)
  /// in blocks over the pool: moe/backend/cpu/attention.hpp.
  void attend(const AttentionProblem& p) const { cpu::attend<I>(*pool_, p); }

  /// Expert X on each expert's rows. A training call (drop.for_backward, or
  /// expert dropout active) runs on the views, with dropout's mask applied
  /// to the hidden units; with fp32 weights and enough rows per expert it
  /// runs on the panel kernel and keeps the pre-activations in the
  /// workspace for experts_backward.
  template <ExpertPolicy X>
  void experts(const RoutingPlan& plan, const Prepared& w, MatrixView<const float> rows, MatrixView<float> out,
               Workspace& ws, const ExpertDropout& drop = {}) const {
    using F = typename X::ffn;
    ws.train.rows = -1;  // nothing kept unless this is a training call on the views
    if (plan.rows() == 0) return;
    if (drop.active())
      moe::detail::require(kernels::runs_on_views && !std::is_same_v<N, numerics::BlockQ8>, ErrorCode::unsupported,
                           "backend::", name(), ": expert dropout (training) needs fp32 numerics");
    if constexpr (std::is_same_v<N, numerics::BlockQ8>)
      if (!w.is_packed() && is_block_quantised(w.views[0].up.dtype))
        return cpu::ViewFfn<I>::template run_q8<F>(*pool_, plan, rows, w.views, out, ws);
    if constexpr (std::is_same_v<N, numerics::AsStored>) {
      if (drop.active() || (drop.for_backward && !w.is_packed())) {
        // Training. With enough rows per expert to pay for packing the
        // weights into panels (twice a step: forward and backward layouts),
        // grouped GEMMs on the panel kernel keeping the pre-activations for
        // experts_backward; else the views kernel, and a backward that
        // recomputes them (the measured crossover lies between 32 and 128
        // rows per expert: bench/train_bench.cpp).
        const index_t R = plan.rows(), d_ff = w.views[0].up.rows;
        if (cpu::all_f32(w.views) && R >= cpu::train_panel_rows * cpu::experts_with_rows(plan)) {
          const MatrixView<float> hidden(cpu::grow(ws.hidden, std::size_t(R * d_ff)), R, d_ff);
          return cpu::experts_forward_panels<F, I>(*pool_, plan, rows, w.views, drop, hidden, out, ws.train);
        }
        return cpu::ViewFfn<I>::template run<F>(*pool_, plan, rows, w.views, out, ws, drop);
      }
    }
    if (!w.is_packed()) {
      if constexpr (std::is_same_v<N, numerics::AsStored> && cpu::has_block_kernels<I>) {
        // Block-quantised views with many rows per expert (prefill): panels
        // made from the blocks as tasks run. Few rows (decode): the views
        // kernel streams the blocks.
        if (is_block_quantised(w.views[0].up.dtype) &&
            plan.rows() > cpu::ViewFfn<I>::stream_rows * cpu::experts_with_rows(plan))
          return packed_kernel::template run_blocks<F>(*pool_, plan, rows, w.views, out, ws);
      }
      return cpu::ViewFfn<I>::template run<F>(*pool_, plan, rows, w.views, out, ws);
    }
    const bool gated_panels = (*w.packed)[0].up.layout == cpu::PanelLayout::gate_up;
    moe::detail::require(gated_panels == F::gated, ErrorCode::invalid_argument, "backend::", name(),
                         ": the prepared experts ", gated_panels ? "have" : "lack", " a gate matrix but the FFN is ",
                         F::gated ? "" : "not ", "gated");
    packed_kernel::template run<F>(*pool_, plan, rows, *w.packed, out, ws);
  }

  /// Backward of the experts on the views (fp32 numerics only: the gradient
  /// of a quantised forward is not what this computes). After a training
  /// forward on fp32 views: two grouped GEMMs on the panel kernel from the
  /// kept pre-activations, tiles over all experts (cpu/expert_train_panels.hpp);
  /// otherwise the forward is recomputed and each expert runs as Eigen GEMMs,
  /// one task per expert (cpu/expert_train.hpp). Either way each gradient
  /// element is summed in row order by one task: the same bits on any
  /// thread count.
  template <ExpertPolicy X>
  void experts_backward(const RoutingPlan& plan, const Prepared& w, MatrixView<const float> rows,
                        MatrixView<const float> d_out, Workspace& ws, const ExpertDropout& drop,
                        std::span<ExpertGrads> grads,
                        MatrixView<float> d_rows) const requires std::is_same_v<N, numerics::AsStored> {
    using F = typename X::ffn;
    if (ws.train.rows == plan.rows() && plan.rows() > 0 && cpu::all_f32(w.views)) {
      // The forward kept its pre-activations (and ws.hidden its activations).
      const index_t d_ff = w.views[0].up.rows;
      const MatrixView<const float> hidden(ws.hidden.data(), plan.rows(), d_ff);
      return cpu::experts_backward_panels<F, I>(*pool_, plan, rows, hidden, w.views, d_out, drop, grads, d_rows,
                                                ws.train);
    }
    cpu::train_backward<F>(*pool_, plan, rows, w.views, d_out, drop, grads, d_rows);
  }

 private:
  std::shared_ptr<detail::ThreadPool> pool_;
};

}  // namespace moe::backend
