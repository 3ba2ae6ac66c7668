#pragma once
/// \file expert_train_panels.hpp
/// Training on the panel micro-kernel (fp32 weights): every expert's
/// products at once as grouped GEMMs (train_gemm.hpp), tiles over the pool.
///
/// The forward keeps the pre-activations for the backward:
///
///   H_g = X · W_gᵀ, H_u = X · W_uᵀ (one grouped GEMM), A = M ⊙ act(H_g) ⊙ H_u,
///   Out = A · W_dᵀ (a second)
///
/// and the backward starts from them:
///
///   dH      = M ⊙ (dOut · W_d)                       [rows, d_ff]
///   dH_up   = dH ⊙ act(H_g),  dH_gate = dH ⊙ H_u ⊙ act'(H_g)   (plain MLP: dH_up = dH ⊙ act'(H_u))
///   dX      = [dH_up | dH_gate] · [W_u ; W_g]          [rows, d_model]
///   dW_d   += dOutᵀ · A                                [d_model, d_ff]
///   dW_u   += dH_upᵀ · X,  dW_g += dH_gateᵀ · X        [d_ff, d_model]
///
/// in two grouped GEMMs: first dH (with the activation's derivative applied
/// as its tiles are stored) and dW_d, then dX and dW_u, dW_g. Each element
/// of every product is summed in a fixed order by one task: the same bits
/// for any thread count.

#include <span>
#include <vector>

#include "moe/backend/cpu/train_gemm.hpp"
#include "moe/backend/host_stages.hpp"
#include "moe/expert/dropout.hpp"
#include "moe/expert/expert.hpp"
#include "moe/expert/gradients.hpp"

namespace moe::backend::cpu {

/// True when every expert's weights are fp32 (what the panel backward reads).
inline bool all_f32(std::span<const ExpertWeights> w) noexcept {
  for (const ExpertWeights& e : w)
    if (e.up.dtype != DType::F32 || e.down.dtype != DType::F32 || (!e.gate.empty() && e.gate.dtype != DType::F32))
      return false;
  return true;
}

/// An fp32 weight's values (all_f32 checked it).
inline const float* fp32_data(const WeightMatrix& m) noexcept { return static_cast<const float*>(m.data); }

/// Starts a grouped GEMM's list of jobs: clears st.jobs, lists every expert
/// with rows in st.expert_of and calls add(e, first row, rows) for each (it
/// pushes that expert's jobs).
template <class Add>
void jobs_per_expert(const RoutingPlan& plan, TrainState& st, Add&& add) {
  st.jobs.clear();
  st.expert_of.clear();
  for (index_t e = 0; e < plan.experts; ++e) {
    const index_t n = plan.kept(e);
    if (n == 0) continue;
    st.expert_of.push_back(e);
    add(e, plan.first_row(e), n);
  }
}

/// The training forward of every expert with rows on the panel kernel:
/// out = A · W_dᵀ, with st.pre = H_g | H_u and `hidden` = A kept for the
/// backward (`hidden` [rows, d_ff]).
template <FFN F, class Isa>
void experts_forward_panels(moe::detail::ThreadPool& pool, const RoutingPlan& plan, MatrixView<const float> rows,
                            std::span<const ExpertWeights> w, const ExpertDropout& drop, MatrixView<float> hidden,
                            MatrixView<float> out, TrainState& st) {
  using batch = floats<Isa>;
  constexpr index_t W = index_t(batch::size);
  const index_t d_model = w[0].up.cols, d_ff = w[0].up.rows, R = plan.rows(), wide = 2 * d_ff;
  float* pre = grow(st.pre, std::size_t(R * wide));
  const std::vector<std::int64_t>& expert_of = st.expert_of;  // job / 2 → expert
  std::vector<GemmJob>& jobs = st.jobs;
  // H_g (job 2i, empty for a plain MLP) and H_u (job 2i + 1) of each expert with rows.
  jobs_per_expert(plan, st, [&](index_t e, index_t r0, index_t n) {
    const ExpertWeights& we = w[std::size_t(e)];
    const Operand x = Operand::rows(rows.row(r0), rows.row_stride);
    jobs.push_back(
        {F::gated ? n : 0, d_ff, d_model, x, Operand::rows(F::gated ? fp32_data(we.gate) : nullptr, d_model)});
    jobs.push_back({n, d_ff, d_model, x, Operand::rows(fp32_data(we.up), d_model)});
  });
  grouped_gemm<Isa>(
      pool, jobs, st.gemm,
      [&](std::size_t job, index_t row0, index_t col0, const float* tile, index_t ldt, index_t nr, index_t nc) {
        const index_t e = index_t(expert_of[job / 2]), half = job % 2 == 0 ? 0 : d_ff;
        for (index_t i = 0; i < nr; ++i) {
          float* dst = pre + (plan.first_row(e) + row0 + i) * wide + half + col0;
          std::copy(tile + i * ldt, tile + i * ldt + nc, dst);
        }
      });
  // A = M ⊙ act(H_g) ⊙ H_u (plain MLP: M ⊙ act(H_u)), row by row.
  const typename F::activation act{};
  pool.parallel_for(R, [&](std::int64_t r, int) {
    const float *g = pre + r * wide, *u = g + d_ff;
    float* a = hidden.row(index_t(r));
    index_t f = 0;
    for (; f + W <= d_ff; f += W) {
      const batch uv = batch::load_unaligned(u + f);
      if constexpr (F::gated)
        (act(batch::load_unaligned(g + f)) * uv).store_unaligned(a + f);
      else
        act(uv).store_unaligned(a + f);
    }
    for (; f < d_ff; ++f) a[f] = F::gated ? act(g[f]) * u[f] : act(u[f]);
    if (drop.active()) {
      const std::uint64_t pair = row_pair(plan, index_t(r));
      for (f = 0; f < d_ff; ++f) a[f] *= drop.scale(pair, f);
    }
  });
  // out = A · W_dᵀ (job i).
  jobs.clear();
  for (const std::int64_t e : expert_of) {
    const index_t n = plan.kept(index_t(e)), r0 = plan.first_row(index_t(e));
    jobs.push_back({n, d_model, d_ff, Operand::rows(hidden.row(r0), hidden.row_stride),
                    Operand::rows(fp32_data(w[std::size_t(e)].down), d_ff)});
  }
  grouped_gemm<Isa>(
      pool, jobs, st.gemm,
      [&](std::size_t job, index_t row0, index_t col0, const float* tile, index_t ldt, index_t nr, index_t nc) {
        const index_t e = index_t(expert_of[job]);
        for (index_t i = 0; i < nr; ++i) {
          float* dst = out.row(plan.first_row(e) + row0 + i) + col0;
          std::copy(tile + i * ldt, tile + i * ldt + nc, dst);
        }
      });
  st.rows = R;
}

/// The backward of every expert with rows: `rows` are the experts' input
/// rows X, `hidden` the forward's A = M ⊙ act(H_g) ⊙ H_u, `st.pre` its
/// pre-activations. Adds to grads[e] (if not empty), writes d_rows (if not empty).
template <FFN F, class Isa>
void experts_backward_panels(moe::detail::ThreadPool& pool, const RoutingPlan& plan, MatrixView<const float> rows,
                             MatrixView<const float> hidden, std::span<const ExpertWeights> w,
                             MatrixView<const float> d_out, const ExpertDropout& drop, std::span<ExpertGrads> grads,
                             MatrixView<float> d_rows, TrainState& st) {
  const index_t d_model = w[0].up.cols, d_ff = w[0].up.rows, R = plan.rows(), wide = 2 * d_ff;
  const index_t dh_width = F::gated ? 2 * d_ff : d_ff;
  if (st.d_hidden.size() < std::size_t(R * wide)) st.d_hidden.resize(std::size_t(R * wide));
  float* dH = st.d_hidden.data();
  const float* pre = st.pre.data();
  const std::vector<std::int64_t>& expert_of = st.expert_of;  // job / 2 → expert
  std::vector<GemmJob>& jobs = st.jobs;
  // 1. dH (job 2i) and dW_d (job 2i + 1) of each expert with rows.
  jobs_per_expert(plan, st, [&](index_t e, index_t r0, index_t n) {
    jobs.push_back({n, d_ff, d_model, Operand::rows(d_out.row(r0), d_out.row_stride),
                    Operand::transposed(fp32_data(w[std::size_t(e)].down), d_ff)});
    jobs.push_back({d_model, d_ff, n, Operand::transposed(d_out.row(r0), d_out.row_stride),
                    Operand::transposed(hidden.row(r0), hidden.row_stride)});
  });
  const bool want_grads = !grads.empty();
  const typename F::activation act{};
  grouped_gemm<Isa>(
      pool, jobs, st.gemm,
      [&](std::size_t job, index_t row0, index_t col0, const float* tile, index_t ldt, index_t nr, index_t nc) {
        const index_t e = index_t(expert_of[job / 2]);
        if (job % 2 == 0) {  // dH tile: rows of expert e, hidden units col0..
          for (index_t i = 0; i < nr; ++i) {
            const index_t r = plan.first_row(e) + row0 + i;
            const std::uint64_t pair = row_pair(plan, r);
            for (index_t c = 0; c < nc; ++c) {
              const index_t f = col0 + c;
              float dh = tile[i * ldt + c];
              if (drop.active()) dh *= drop.scale(pair, f);
              if constexpr (F::gated) {
                const float gv = pre[r * wide + f], uv = pre[r * wide + d_ff + f];
                dH[r * wide + f] = dh * act(gv);
                dH[r * wide + d_ff + f] = dh * uv * act.derivative(gv);
              } else {
                dH[r * wide + f] = dh * act.derivative(pre[r * wide + d_ff + f]);
              }
            }
          }
        } else if (want_grads) {  // dW_d tile: outputs row0.., hidden units col0..
          Matrix& g = grads[std::size_t(e)].down;
          for (index_t i = 0; i < nr; ++i)
            for (index_t c = 0; c < nc; ++c) g(row0 + i, col0 + c) += tile[i * ldt + c];
        }
      });

  // 2. dX (job 2i) and dW_u | dW_g (job 2i + 1).
  jobs.clear();
  for (const std::int64_t e : expert_of) {
    const index_t n = plan.kept(index_t(e)), r0 = plan.first_row(index_t(e));
    const ExpertWeights& we = w[std::size_t(e)];
    const Operand up_t = Operand::transposed(fp32_data(we.up), d_model);
    const Operand weights =
        F::gated ? Operand::side_by_side(up_t, Operand::transposed(fp32_data(we.gate), d_model), d_ff) : up_t;
    jobs.push_back({d_rows.empty() ? 0 : n, d_model, dh_width, Operand::rows(dH + r0 * wide, wide), weights});
    jobs.push_back({want_grads ? dh_width : 0, d_model, n, Operand::transposed(dH + r0 * wide, wide),
                    Operand::transposed(rows.row(r0), rows.row_stride)});
  }
  grouped_gemm<Isa>(
      pool, jobs, st.gemm,
      [&](std::size_t job, index_t row0, index_t col0, const float* tile, index_t ldt, index_t nr, index_t nc) {
        const index_t e = index_t(expert_of[job / 2]);
        if (job % 2 == 0) {  // dX tile: rows of expert e
          for (index_t i = 0; i < nr; ++i) {
            float* dx = d_rows.row(plan.first_row(e) + row0 + i) + col0;
            for (index_t c = 0; c < nc; ++c) dx[c] = tile[i * ldt + c];
          }
        } else {  // rows < d_ff: dW_u, then dW_g
          ExpertGrads& g = grads[std::size_t(e)];
          for (index_t i = 0; i < nr; ++i) {
            const index_t f = row0 + i;
            float* dst = f < d_ff ? g.up.row(f).data() : g.gate.row(f - d_ff).data();
            for (index_t c = 0; c < nc; ++c) dst[col0 + c] += tile[i * ldt + c];
          }
        }
      });
}

}  // namespace moe::backend::cpu
