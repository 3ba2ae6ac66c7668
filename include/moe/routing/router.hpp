#pragma once
/// \file router.hpp
/// Router<Selection, Noise, Scoring>: token → k experts and their weights.
///
///   r        = x, or x ⊙ jitter in training            [T, d]
///   logits   = r · Wgᵀ (fp32 whatever the weights)     [T, E]
///   logits  += noise (NoisyTopK, training)             [T, E]
///   probs    = softmax or sigmoid(logits)              [T, E]
///   expert   = top-k of logits, best first             [T, k]
///   weight   = scoring of the chosen                    [T, k]
///
/// Why fp32: router logits are small numbers compared against each other;
/// bf16 rounding flips top-k choices (Switch Transformers §2.4 "selective
/// precision"; HF computes router softmax in float32 for the same reason).

#include <cmath>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/core/linear.hpp"
#include "moe/core/view.hpp"
#include "moe/routing/noise.hpp"
#include "moe/routing/routing.hpp"
#include "moe/routing/scoring.hpp"
#include "moe/routing/selection.hpp"

namespace moe {

/// Weights the router reads.
struct RouterWeights {
  WeightMatrix gate;   ///< [E, d_model] (HF `block_sparse_moe.gate.weight`)
  WeightMatrix noise;  ///< [E, d_model] W_noise of NoisyTopK; empty otherwise
};

template <SelectionPolicy S, NoisePolicy N = NoNoise, ScoringPolicy C = SoftmaxThenTopK>
class Router {
 public:
  using selection_type = S;
  using noise_type = N;
  using scoring_type = C;
  static constexpr int top_k = S::k;

  Router() = default;
  explicit Router(N noise, C scoring = {}, S selection = {})
      : noise_(noise), scoring_(scoring), selection_(selection) {}

  const N& noise() const noexcept { return noise_; }
  const C& scoring() const noexcept { return scoring_; }
  const S& selection() const noexcept { return selection_; }

  /// Checks parameters and weights against (E, d_model); throws moe::Error.
  void validate(const RouterWeights& w, index_t num_experts, index_t d_model) const {
    detail::require(top_k <= num_experts, ErrorCode::invalid_argument, "Router: k = ", top_k,
                    " experts per token, but the layer has only ", num_experts, " experts");
    noise_.validate();
    scoring_.validate();
    detail::require_weight(w.gate, "router gate weight", num_experts, d_model);
    if constexpr (N::needs_weight)
      detail::require_weight(w.noise, "NoisyTopK noise weight (W_noise)", num_experts, d_model);
  }

  /// Routes the T rows of x. Throws moe::Error(non_finite) naming the first
  /// token whose logits are NaN or infinite: a NaN would otherwise route
  /// silently to an arbitrary expert.
  Routing route(MatrixView<const float> x, const RouterWeights& w, const RouteContext& ctx) const {
    const index_t T = x.rows, E = w.gate.rows;
    constexpr int k = top_k;
    Routing r;
    r.tokens = T;
    r.experts = E;
    r.k = k;
    r.clean_logits.resize(std::size_t(T * E));
    std::vector<float> scratch;

    // Router input: the experts keep the plain x; only the router's copy is jittered.
    Matrix jittered;
    MatrixView<const float> input = x;
    if constexpr (N::perturbs_input) {
      if (ctx.mode == Mode::train) {
        jittered.resize(T, x.cols);
        for (index_t t = 0; t < T; ++t)
          for (index_t i = 0; i < x.cols; ++i) jittered(t, i) = x(t, i);
        noise_.perturb_input(MatrixView<float>(jittered), ctx);
        input = jittered;
      }
    }
    detail::linear_small(input, w.gate, r.clean_logits.data(), scratch);  // [T, E]
    r.logits = r.clean_logits;
    if constexpr (N::perturbs_logits) {
      if (ctx.mode == Mode::train) {
        std::vector<float> noise_logits(std::size_t(T * E));
        detail::linear_small(input, w.noise, noise_logits.data(), scratch);  // [T, E]
        r.noise_std.resize(std::size_t(T * E));
        noise_.perturb_logits(noise_logits.data(), r.logits.data(), r.noise_std.data(), T, E, ctx);
      }
    }

    r.probs.resize(std::size_t(T * E));
    r.expert.resize(std::size_t(T * k));
    r.weight.resize(std::size_t(T * k));
    for (index_t t = 0; t < T; ++t) {
      const float* lt = r.logits.data() + t * E;
      for (index_t e = 0; e < E; ++e)
        detail::require(std::isfinite(lt[e]), ErrorCode::non_finite, "Router: logit of token ", t, " for expert ", e,
                        " is ", lt[e], " (check the input row and the gate weight for NaN/Inf)");
      float* pt = r.probs.data() + t * E;
      std::int32_t* it = r.expert.data() + t * k;
      float* wt = r.weight.data() + t * k;
      scoring_.probabilities(lt, E, pt);
      selection_.select(lt, E, it);
      scoring_.weights(lt, pt, it, k, wt);
      selection_.thin(ctx, t, it, wt);
    }
    return r;
  }

 private:
  [[no_unique_address]] N noise_{};
  [[no_unique_address]] C scoring_{};
  [[no_unique_address]] S selection_{};
};

/// A routing policy: what MoELayer needs of a router.
template <class R>
concept RoutingPolicy = requires(const R& r, MatrixView<const float> x, const RouterWeights& w, const RouteContext& ctx,
                                 index_t n) {
  { R::top_k } -> std::convertible_to<int>;
  { r.route(x, w, ctx) } -> std::same_as<Routing>;
  r.validate(w, n, n);
};

}  // namespace moe
