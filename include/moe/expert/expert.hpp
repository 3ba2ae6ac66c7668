#pragma once
/// \file expert.hpp
/// Expert<FFN>: the expert policy of a layer, plus a one-token reference
/// application that examples and tests use to check layers by hand.

#include <cstdint>
#include <string_view>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/core/view.hpp"
#include "moe/expert/dropout.hpp"
#include "moe/expert/ffn.hpp"
#include "moe/expert/gradients.hpp"

namespace moe {

/// The per-token buffers Expert<F>::apply needs ([d_ff] each), kept by the
/// caller so that applying an expert row after row allocates nothing.
struct ExpertScratch {
  std::vector<float> pre_gate, pre_up, hidden;
  std::vector<float> row;  ///< one weight row widened to fp32
};

template <FFN F>
struct Expert {
  using ffn = F;
  using activation = typename F::activation;

  /// Checks one expert's weights: shapes, and one dtype for all matrices
  /// (a kernel reads them with one element type), except that block-quantised
  /// down projections may use another block format than gate and up (GGUF's
  /// Q4_K_M mixes stores Q6_K down projections beside Q4_K ones).
  static void validate(const ExpertWeights& w, index_t d_model, index_t d_ff, index_t e) {
    const auto label = [e](std::string_view m) { return detail::cat("expert ", e, " ", m); };
    if constexpr (F::gated) detail::require_weight(w.gate, label("gate (w1)"), d_ff, d_model);
    detail::require_weight(w.up, label(F::gated ? "up (w3)" : "up (wi)"), d_ff, d_model);
    detail::require_weight(w.down, label(F::gated ? "down (w2)" : "down (wo)"), d_model, d_ff);
    if constexpr (F::gated)
      detail::require(w.gate.dtype == w.up.dtype, ErrorCode::dtype_mismatch, label("weights"), ": gate is ",
                      name(w.gate.dtype), " but up is ", name(w.up.dtype));
    detail::require(w.down.dtype == w.up.dtype || (is_block_quantised(w.down.dtype) && is_block_quantised(w.up.dtype)),
                    ErrorCode::dtype_mismatch, label("weights"), ": up is ", name(w.up.dtype), " but down is ",
                    name(w.down.dtype));
  }

  /// out = expert(x) for one token, plain loops in fp32: the readable truth.
  /// `drop` (training) masks the hidden units of (token, slot) pair `pair`.
  static void apply(const ExpertWeights& w, const float* x, float* out, const ExpertDropout& drop = {},
                    std::uint64_t pair = 0) {
    ExpertScratch scratch;
    apply(w, x, out, drop, pair, scratch);
  }
  /// The same with the caller's buffers.
  static void apply(const ExpertWeights& w, const float* x, float* out, const ExpertDropout& drop, std::uint64_t pair,
                    ExpertScratch& scratch) {
    const index_t d_ff = w.up.rows, d_model = w.up.cols;
    std::vector<float>& h = scratch.hidden;
    hidden(w, x, scratch.pre_gate, scratch.pre_up, h, scratch.row);
    for (index_t f = 0; f < d_ff; ++f) h[std::size_t(f)] *= drop.scale(pair, f);
    for (index_t o = 0; o < d_model; ++o) {
      const float* down = row(w.down, o, scratch.row);
      float acc = 0.0f;
      for (index_t f = 0; f < d_ff; ++f) acc += down[f] * h[std::size_t(f)];
      out[o] = acc;
    }
  }

  /// Backward of apply for one token: given dout = dL/d out, adds this
  /// token's share to the weight grads and writes dx = dL/dx (if dx is not
  /// null). The hidden activations are recomputed, not stored.
  ///
  ///   gated:  h = act(g) ⊙ u,  g = W_gate·x, u = W_up·x,  out = W_down·(m ⊙ h)
  ///     dW_down += dout ⊗ (m ⊙ h)     dh = m ⊙ W_downᵀ·dout
  ///     du = dh ⊙ act(g)               dg = dh ⊙ u ⊙ act'(g)
  ///     dW_up += du ⊗ x   dW_gate += dg ⊗ x   dx = W_upᵀ·du + W_gateᵀ·dg
  ///   plain:  h = act(u): du = dh ⊙ act'(u), no gate.
  static void backward(const ExpertWeights& w, const float* x, const float* dout, ExpertGrads* g, float* dx,
                       const ExpertDropout& drop = {}, std::uint64_t pair = 0) {
    const index_t d_ff = w.up.rows, d_model = w.up.cols;
    const activation act{};
    std::vector<float> pre_gate, pre_up, h, widened;
    hidden(w, x, pre_gate, pre_up, h, widened);
    std::vector<float> dg(std::size_t(F::gated ? d_ff : 0)), du(static_cast<std::size_t>(d_ff));
    for (index_t f = 0; f < d_ff; ++f) {
      const float m = drop.scale(pair, f);
      float dh = 0.0f;
      for (index_t o = 0; o < d_model; ++o) dh += w.down.at(o, f) * dout[o];
      dh *= m;
      if (g)
        for (index_t o = 0; o < d_model; ++o) g->down(o, f) += dout[o] * m * h[std::size_t(f)];
      if constexpr (F::gated) {
        const float gv = pre_gate[std::size_t(f)];
        du[std::size_t(f)] = dh * act(gv);
        dg[std::size_t(f)] = dh * pre_up[std::size_t(f)] * act.derivative(gv);
      } else {
        du[std::size_t(f)] = dh * act.derivative(pre_up[std::size_t(f)]);
      }
    }
    if (g)
      for (index_t f = 0; f < d_ff; ++f)
        for (index_t i = 0; i < d_model; ++i) {
          g->up(f, i) += du[std::size_t(f)] * x[i];
          if constexpr (F::gated) g->gate(f, i) += dg[std::size_t(f)] * x[i];
        }
    if (dx)
      for (index_t i = 0; i < d_model; ++i) {
        float acc = 0.0f;
        for (index_t f = 0; f < d_ff; ++f) {
          acc += w.up.at(f, i) * du[std::size_t(f)];
          if constexpr (F::gated) acc += w.gate.at(f, i) * dg[std::size_t(f)];
        }
        dx[i] = acc;
      }
  }

 private:
  /// Row r of W as fp32, widened into `buffer` (a block-quantised row is
  /// dequantised once here, not a block per element).
  static const float* row(const WeightMatrix& w, index_t r, std::vector<float>& buffer) {
    buffer.resize(std::size_t(w.cols));
    widen_to_float(w.data, w.dtype, r * w.cols, w.cols, buffer.data());
    return buffer.data();
  }

  /// Pre-activations (gate·x, up·x) and the hidden h = act(gate·x) ⊙ up·x
  /// (gated) or act(up·x) (plain), each [d_ff].
  static void hidden(const ExpertWeights& w, const float* x, std::vector<float>& pre_gate, std::vector<float>& pre_up,
                     std::vector<float>& h, std::vector<float>& buffer) {
    const index_t d_ff = w.up.rows, d_model = w.up.cols;
    const activation act{};
    pre_gate.assign(std::size_t(F::gated ? d_ff : 0), 0.0f);
    pre_up.assign(std::size_t(d_ff), 0.0f);
    h.assign(std::size_t(d_ff), 0.0f);
    for (index_t f = 0; f < d_ff; ++f) {
      const float* up_row = row(w.up, f, buffer);
      float up = 0.0f;
      for (index_t i = 0; i < d_model; ++i) up += up_row[i] * x[i];
      pre_up[std::size_t(f)] = up;
      if constexpr (F::gated) {
        const float* gate_row = row(w.gate, f, buffer);
        float gate = 0.0f;
        for (index_t i = 0; i < d_model; ++i) gate += gate_row[i] * x[i];
        pre_gate[std::size_t(f)] = gate;
        h[std::size_t(f)] = act(gate) * up;
      } else {
        h[std::size_t(f)] = act(up);
      }
    }
  }
};

/// An expert policy: everything MoELayer and the backends call on it.
/// `ffn` names the FFN shape the fast kernels implement; validate checks one
/// expert's weights; apply and backward are the one-token definition that
/// backend::Reference runs (and the fast backends are tested against).
template <class X>
concept ExpertPolicy = FFN<typename X::ffn> &&
    requires(const ExpertWeights& w, const float* x, float* out, const ExpertDropout& drop, std::uint64_t pair,
             ExpertScratch& scratch, ExpertGrads* g, index_t n) {
  X::validate(w, n, n, n);
  X::apply(w, x, out, drop, pair, scratch);
  X::backward(w, x, x, g, out, drop, pair);
};

}  // namespace moe
