#pragma once
/// \file noise.hpp
/// Noise policies: exploration noise that makes routing trainable. Noise acts
/// in training mode only; inference is always noise-free.
///
/// A policy says where it acts through three constants:
///   perturbs_input  - rescales the router's copy of x (Switch jitter);
///   perturbs_logits - adds noise to the router logits (Shazeer's noisy top-k);
///   needs_weight    - reads a learned [E, d_model] noise weight (W_noise).

#include <cmath>
#include <concepts>

#include "moe/core/error.hpp"
#include "moe/core/rng.hpp"
#include "moe/core/view.hpp"
#include "moe/routing/routing.hpp"

namespace moe {

/// A noise policy: its flags, and for each flag it sets the
/// calls the router then makes (perturb_input; perturb_logits and its
/// backward), so a policy that says it perturbs but lacks the call fails
/// here, not inside Router.
template <class N>
concept NoisePolicy = requires {
  { N::perturbs_input } -> std::convertible_to<bool>;
  { N::perturbs_logits } -> std::convertible_to<bool>;
  { N::needs_weight } -> std::convertible_to<bool>;
}
&&(!N::perturbs_input ||
   requires(const N& n, MatrixView<float> r, const RouteContext& ctx) { n.perturb_input(r, ctx); }) &&
    (!N::perturbs_logits || requires(const N& n, const float* in, float* out, index_t T, const RouteContext& ctx) {
      n.perturb_logits(in, out, out, T, T, ctx);
      n.backward_logits(in, in, out, T, T, ctx);
    });

/// No noise (Mixtral, inference everywhere).
struct NoNoise {
  static constexpr bool perturbs_input = false;
  static constexpr bool perturbs_logits = false;
  static constexpr bool needs_weight = false;
};

/// Switch Transformer jitter (Fedus et al. 2021): the router input is
/// multiplied elementwise by U(1-eps, 1+eps). Only the router's copy is
/// touched; the experts see the plain input (Mesh-TF, Flaxformer; see
/// SEMANTICS.md on why HF's in-place variant is an artefact).
struct Jitter {
  static constexpr bool perturbs_input = true;
  static constexpr bool perturbs_logits = false;
  static constexpr bool needs_weight = false;
  float eps = 0.01f;

  void validate() const {
    detail::require(eps >= 0.0f && eps < 1.0f && std::isfinite(eps), ErrorCode::invalid_argument,
                    "Jitter: eps must be in [0, 1), got ", eps);
  }
  /// r[t, i] *= U(1-eps, 1+eps), each factor keyed by (seed, step, t, i).
  void perturb_input(MatrixView<float> r, const RouteContext& ctx, index_t first_token = 0) const {
    for (index_t t = 0; t < r.rows; ++t)
      for (index_t i = 0; i < r.cols; ++i) {
        const float u = uniform(ctx.key, RngStream::jitter, std::uint64_t(first_token + t), std::uint64_t(i));
        r(t, i) *= (1.0f - eps) + 2.0f * eps * u;
      }
  }
};

/// Jitter with stored factors instead of drawn ones: replays a recorded run
/// (the golden cases store their jitter tensor) or injects custom noise.
struct StoredJitter {
  static constexpr bool perturbs_input = true;
  static constexpr bool perturbs_logits = false;
  static constexpr bool needs_weight = false;
  MatrixView<const float> factors;  ///< [T, d_model] multipliers

  void perturb_input(MatrixView<float> r, const RouteContext&, index_t first_token = 0) const {
    detail::require(factors.rows >= first_token + r.rows && factors.cols == r.cols, ErrorCode::shape_mismatch,
                    "StoredJitter: factors are ", detail::shape_str(factors.rows, factors.cols), ", router input is ",
                    detail::shape_str(r.rows, r.cols));
    for (index_t t = 0; t < r.rows; ++t)
      for (index_t i = 0; i < r.cols; ++i) r(t, i) *= factors(first_token + t, i);
  }
};

/// Noisy top-k gating (Shazeer et al. 2017):
///   H(x)_e = (x·Wg)_e + N(0,1) · (softplus((x·W_noise)_e) + min_std)
/// The noise scale is learned through W_noise, so the router can decide how
/// much to explore per expert. FastMoE adds min_std = 1e-2; the paper uses 0.
struct NoisyTopK {
  static constexpr bool perturbs_input = false;
  static constexpr bool perturbs_logits = true;
  static constexpr bool needs_weight = true;
  float min_std = 0.0f;

  void validate() const {
    detail::require(min_std >= 0.0f && std::isfinite(min_std), ErrorCode::invalid_argument,
                    "NoisyTopK: min_std must be finite and >= 0, got ", min_std);
  }
  static float softplus(float z) noexcept {
    // log1p(exp(z)) overflows for large z, where it equals z to float precision.
    return z > 20.0f ? z : std::log1p(std::exp(z));
  }
  /// softplus'(z) = σ(z).
  static float sigmoid(float z) noexcept { return 1.0f / (1.0f + std::exp(-z)); }
  /// The N(0, 1) draw of (token, expert): replayed, never stored.
  static float draw(const RouteContext& ctx, index_t token, index_t e) noexcept {
    return normal(ctx.key, RngStream::noisy_top_k, std::uint64_t(token), std::uint64_t(e));
  }
  /// logits += N(0,1)·std with std = softplus(noise_logits) + min_std; the
  /// scale is written to `std_out` (needed by the load loss and by backward).
  void perturb_logits(const float* noise_logits, float* logits, float* std_out, index_t T, index_t E,
                      const RouteContext& ctx, index_t first_token = 0) const {
    for (index_t t = 0; t < T; ++t)
      for (index_t e = 0; e < E; ++e) {
        const index_t i = t * E + e;
        std_out[i] = softplus(noise_logits[i]) + min_std;
        logits[i] += draw(ctx, first_token + t, e) * std_out[i];
      }
  }
  /// Backward of perturb_logits: logits = clean + n·std, std = softplus(nl) + min_std.
  /// d_std is the direct gradient on the scale (load loss) and becomes
  /// dL/d noise_logits: (d_std + d_logits·n) · σ(nl). The clean logits get
  /// d_logits unchanged (the caller adds it).
  void backward_logits(const float* noise_logits, const float* d_logits, float* d_std, index_t T, index_t E,
                       const RouteContext& ctx) const {
    for (index_t t = 0; t < T; ++t)
      for (index_t e = 0; e < E; ++e) {
        const index_t i = t * E + e;
        d_std[i] = (d_std[i] + d_logits[i] * draw(ctx, t, e)) * sigmoid(noise_logits[i]);
      }
  }
};

}  // namespace moe
