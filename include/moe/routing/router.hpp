#pragma once
/// \file router.hpp
/// Router<Selection, Noise, Scoring>: token → k experts and their weights.
///
///   r        = x, or x ⊙ jitter in training            [T, d]
///   logits   = r · Wgᵀ (fp32 whatever the weights)     [T, E]
///   logits  += noise (NoisyTopK, training)             [T, E]
///   probs    = softmax or sigmoid(logits)              [T, E]
///   expert   = top-k of logits, best first             [T, k]
///              (BiasedTopK: of probs + bias; ExpertChoice: each expert's
///              top-C tokens, k = E slots per token)
///   weight   = scoring of the chosen                    [T, k]
///
/// backward() runs the same steps in reverse (scoring, noise, the linear
/// maps, jitter), replaying every random draw from the call's key.
///
/// Why fp32: router logits are small numbers compared against each other;
/// bf16 rounding flips top-k choices (Switch Transformers §2.4 "selective
/// precision"; HF computes router softmax in float32 for the same reason).

#include <algorithm>
#include <cmath>
#include <concepts>
#include <span>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/core/linear.hpp"
#include "moe/core/view.hpp"
#include "moe/routing/noise.hpp"
#include "moe/routing/routing.hpp"
#include "moe/routing/routing_grad.hpp"
#include "moe/routing/scoring.hpp"
#include "moe/routing/selection.hpp"

namespace moe {

/// Buffers a route call needs besides its output; reused across calls so a
/// steady-state call allocates nothing.
struct RouterScratch {
  std::vector<float> widened;       ///< the gate (or noise) weight widened to fp32 when stored as BF16/F16
  std::vector<float> noise_logits;  ///< [T, E] x·W_noiseᵀ (NoisyTopK in training)
  std::vector<float> biased;        ///< [E] probs + bias (BiasedTopK)
  Matrix jittered;                  ///< [T, d] the router's jittered copy of x (Jitter in training)
};

/// Weights the router reads.
struct RouterWeights {
  WeightMatrix gate;              ///< [E, d_model] (HF `block_sparse_moe.gate.weight`)
  WeightMatrix noise;             ///< [E, d_model] W_noise of NoisyTopK; empty otherwise
  std::span<const float> bias{};  ///< [E] selection bias of BiasedTopK (DeepSeek `e_score_correction_bias`)
};

namespace detail {
template <class T, class... U>
concept one_of = (std::same_as<T, U> || ...);
/// How often T appears among P.
template <class T, class... P>
inline constexpr int count_of = (0 + ... + int(std::same_as<T, P>));
/// No type appears twice among P.
template <class... P>
inline constexpr bool distinct = ((count_of<P, P...> == 1) && ...);
}  // namespace detail

template <SelectionPolicy S, NoisePolicy N = NoNoise, ScoringPolicy C = SoftmaxThenTopK>
class Router {
 public:
  using selection_type = S;
  using noise_type = N;
  using scoring_type = C;
  /// Slots per token; 0 for a per-call selection (expert choice: E slots).
  static constexpr int top_k = S::k;
  /// Whether the router reads RouterWeights::noise (NoisyTopK's W_noise).
  static constexpr bool needs_noise_weight = N::needs_weight;

  Router() = default;
  /// The policies in the template's order; those left out are default-constructed.
  explicit Router(S selection, N noise = {}, C scoring = {})
      : noise_(noise), scoring_(scoring), selection_(selection) {}
  /// Any of the policies, in any order, each named by its type:
  /// `Router<TopK<1>, Jitter>(Jitter{.eps = 0.01f})`,
  /// `Router<TopK<2>, NoNoise, Sigmoid>(Sigmoid{.scale = 2.5f})`.
  template <class... P>
  requires(sizeof...(P) >= 1 && (detail::one_of<P, S, N, C> && ...) &&
           detail::distinct<P...>) explicit Router(P... policies) {
    (assign(policies), ...);
  }

  const N& noise() const noexcept { return noise_; }
  const C& scoring() const noexcept { return scoring_; }
  const S& selection() const noexcept { return selection_; }

  /// Slots per token for E experts: S::k, or what the selection says when
  /// it decides per call or per layer (ExpertChoice, RuntimeTopK).
  int slots(index_t E) const noexcept {
    if constexpr (requires { selection_.slots(E); })
      return selection_.slots(E);
    else
      return S::k;
  }

  /// Checks parameters and weights against (E, d_model); throws moe::Error.
  void validate(const RouterWeights& w, index_t num_experts, index_t d_model) const {
    detail::validate_policy(selection_);
    detail::require(slots(num_experts) <= num_experts, ErrorCode::invalid_argument, "Router: k = ", slots(num_experts),
                    " experts per token, but the layer has only ", num_experts, " experts");
    detail::validate_policy(noise_);
    detail::validate_policy(scoring_);
    detail::require_weight(w.gate, "router gate weight", num_experts, d_model);
    if constexpr (N::needs_weight)
      detail::require_weight(w.noise, "NoisyTopK noise weight (W_noise)", num_experts, d_model);
    if constexpr (selection_uses_bias<S>)
      detail::require(index_t(w.bias.size()) == num_experts, ErrorCode::shape_mismatch,
                      "Router: the selection bias has ", w.bias.size(), " entries, expected one per expert (",
                      num_experts, ")");
  }

  /// Routes the T rows of x. Throws moe::Error(non_finite) naming the first
  /// token whose logits are NaN or infinite: a NaN would otherwise route
  /// silently to an arbitrary expert.
  Routing route(MatrixView<const float> x, const RouterWeights& w, const RouteContext& ctx) const {
    Routing r;
    RouterScratch scratch;
    route(x, w, ctx, r, scratch);
    return r;
  }

  /// The same, into `r` (its buffers reused: no allocation once they have grown).
  void route(MatrixView<const float> x, const RouterWeights& w, const RouteContext& ctx, Routing& r,
             RouterScratch& scratch) const {
    const index_t T = x.rows, E = w.gate.rows;
    const MatrixView<const float> input = router_input(x, ctx, scratch.jittered);
    r.clean_logits.resize(std::size_t(T * E));
    detail::linear_small(input, w.gate, r.clean_logits.data(), scratch.widened);  // [T, E]
    if (noise_logits_needed(ctx)) {
      scratch.noise_logits.resize(std::size_t(T * E));
      detail::linear_small(input, w.noise, scratch.noise_logits.data(), scratch.widened);  // [T, E]
    }
    route_from_logits(T, w, ctx, r, scratch);
  }

  /// Whether a call in this context perturbs the router's input (Jitter in
  /// training): its logits are then those of a jittered copy of x.
  static bool input_perturbed(const RouteContext& ctx) noexcept { return N::perturbs_input && ctx.mode == Mode::train; }
  /// Whether a call in this context needs x·W_noiseᵀ (NoisyTopK in training).
  static bool noise_logits_needed(const RouteContext& ctx) noexcept {
    return N::perturbs_logits && ctx.mode == Mode::train;
  }

  /// The rest of route() once the logits are known, for a backend that
  /// computes them itself (backend::Cuda, on the device, in route()'s
  /// summation order): r.clean_logits holds the T×E logits of the router's
  /// input (x, or its jittered copy when input_perturbed) and, when
  /// noise_logits_needed, scratch.noise_logits holds x·W_noiseᵀ. Noise,
  /// scores, selection and combine weights follow exactly as in route().
  void route_from_logits(index_t T, const RouterWeights& w, const RouteContext& ctx, Routing& r,
                         RouterScratch& scratch) const {
    const index_t E = w.gate.rows;
    const int k = slots(E);
    detail::require(index_t(r.clean_logits.size()) == T * E, ErrorCode::shape_mismatch,
                    "Router: ", r.clean_logits.size(), " clean logits given for ", T, " tokens and ", E, " experts");
    r.tokens = T;
    r.experts = E;
    r.k = k;
    r.noise_std.clear();
    r.logits = r.clean_logits;
    if constexpr (N::perturbs_logits) {
      if (noise_logits_needed(ctx)) {
        r.noise_std.resize(std::size_t(T * E));
        noise_.perturb_logits(scratch.noise_logits.data(), r.logits.data(), r.noise_std.data(), T, E, ctx);
      }
    }

    r.probs.resize(std::size_t(T * E));
    for (index_t t = 0; t < T; ++t) {
      const float* lt = r.logits.data() + t * E;
      for (index_t e = 0; e < E; ++e)
        detail::require(std::isfinite(lt[e]), ErrorCode::non_finite, "Router: logit of token ", t, " for expert ", e,
                        " is ", lt[e], " (check the input row and the gate weight for NaN/Inf)");
      scoring_.probabilities(lt, E, r.probs.data() + t * E);
    }

    r.expert.resize(std::size_t(T * k));
    r.weight.assign(std::size_t(T * k), 0.0f);
    if constexpr (CallSelection<S>) selection_.select_all(r.probs.data(), r.logits.data(), T, E, r.expert.data());
    for (index_t t = 0; t < T; ++t) {
      std::int32_t* it = r.expert.data() + t * k;
      float* wt = r.weight.data() + t * k;
      if constexpr (TokenSelection<S>) select_token(r, t, w, scratch.biased, it);
      const int n = filled(it, k);
      if (n > 0) scoring_.weights(r.logits.data() + t * E, r.probs.data() + t * E, it, n, wt);
      if constexpr (TokenSelection<S>) selection_.thin(ctx, t, it, wt);
    }
  }

  /// Carries the gradients on the router's outputs (g: combine weights,
  /// probs, logits, and the load loss's direct terms) back to the gate
  /// weight, the noise weight and the input. Replays the forward call's
  /// jitter, noise and selection from `ctx` (the same counter-based draws).
  /// Expert choice is piecewise constant: no gradient flows through it.
  /// Adds dL/dW_gate to *d_gate and dL/dW_noise to *d_noise (either may be
  /// null: frozen), and the router's share of dL/dx to dx (if not empty).
  /// On return g.clean_logits holds the total dL/d clean logits.
  void backward(MatrixView<const float> x, const RouterWeights& w, const RouteContext& ctx, const Routing& r,
                RoutingGrad& g, Matrix* d_gate, Matrix* d_noise, MatrixView<float> dx) const {
    const index_t T = r.tokens, E = r.experts;
    const int k = r.k;
    std::vector<std::int32_t> idx(static_cast<std::size_t>(k));
    std::vector<float> w_full(static_cast<std::size_t>(k)), dw(static_cast<std::size_t>(k)), biased;
    for (index_t t = 0; t < T; ++t) {
      const float* lt = r.logits.data() + t * E;
      const float* pt = r.probs.data() + t * E;
      // The selection before thinning (a thinned slot's weight is constant 0,
      // but the kept slots' weights were computed with it).
      if constexpr (TokenSelection<S>)
        select_token(r, t, w, biased, idx.data());
      else
        std::copy_n(r.expert.data() + t * k, k, idx.data());
      const int n = filled(idx.data(), k);
      if (n == 0) continue;
      scoring_.weights(lt, pt, idx.data(), n, w_full.data());
      for (int j = 0; j < n; ++j)
        dw[std::size_t(j)] = r.expert_at(t, j) == no_expert ? 0.0f : g.weight[std::size_t(t * k + j)];
      scoring_.weights_backward(lt, pt, idx.data(), n, w_full.data(), dw.data(), g.logits.data() + t * E,
                                g.probs.data() + t * E);
    }
    for (index_t t = 0; t < T; ++t)
      scoring_.probabilities_backward(r.logits.data() + t * E, r.probs.data() + t * E, g.probs.data() + t * E, E,
                                      g.logits.data() + t * E);
    for (std::size_t i = 0; i < g.logits.size(); ++i) g.clean_logits[i] += g.logits[i];  // logits = clean + noise

    std::vector<float> scratch, scratch_noise;
    Matrix jittered;
    const MatrixView<const float> input = router_input(x, ctx, jittered);
    const float* wg = detail::as_float(w.gate, scratch);
    const bool noisy = N::perturbs_logits && ctx.mode == Mode::train;
    const float* wn = nullptr;
    if (noisy) {
      // g.noise_std becomes dL/d noise logits.
      std::vector<float> noise_logits(std::size_t(T * E));
      detail::linear_small(input, w.noise, noise_logits.data(), scratch_noise);
      if constexpr (N::perturbs_logits)
        noise_.backward_logits(noise_logits.data(), g.logits.data(), g.noise_std.data(), T, E, ctx);
      wn = detail::as_float(w.noise, scratch_noise);
    }

    // Linear maps: dW = dlogitsᵀ · input, dinput = dlogits · W.
    const index_t d = x.cols;
    for (index_t t = 0; t < T; ++t) {
      const float* in = input.row(t);
      for (index_t e = 0; e < E; ++e) {
        const float dc = g.clean_logits[std::size_t(t * E + e)];
        if (d_gate)
          for (index_t i = 0; i < d; ++i) (*d_gate)(e, i) += dc * in[i];
        if (noisy && d_noise)
          for (index_t i = 0; i < d; ++i) (*d_noise)(e, i) += g.noise_std[std::size_t(t * E + e)] * in[i];
      }
    }
    if (dx.empty()) return;
    Matrix factors;  // jitter: r = x ⊙ J, so dx = dr ⊙ J
    const bool jitter = N::perturbs_input && ctx.mode == Mode::train;
    if (jitter) {
      factors = Matrix::Ones(T, d);
      if constexpr (N::perturbs_input) noise_.perturb_input(MatrixView<float>(factors), ctx);
    }
    std::vector<float> dr(static_cast<std::size_t>(d));
    for (index_t t = 0; t < T; ++t) {
      std::fill(dr.begin(), dr.end(), 0.0f);
      for (index_t e = 0; e < E; ++e) {
        const float dc = g.clean_logits[std::size_t(t * E + e)];
        for (index_t i = 0; i < d; ++i) dr[std::size_t(i)] += dc * wg[e * d + i];
        if (noisy) {
          const float dn = g.noise_std[std::size_t(t * E + e)];
          for (index_t i = 0; i < d; ++i) dr[std::size_t(i)] += dn * wn[e * d + i];
        }
      }
      for (index_t i = 0; i < d; ++i) dx(t, i) += jitter ? dr[std::size_t(i)] * factors(t, i) : dr[std::size_t(i)];
    }
  }

 private:
  void assign(const S& s) { selection_ = s; }
  void assign(const N& n) { noise_ = n; }
  void assign(const C& c) { scoring_ = c; }

  /// The router's input: x, or a jittered copy in training (the experts
  /// keep the plain x; only the router's copy is jittered).
  MatrixView<const float> router_input(MatrixView<const float> x, const RouteContext& ctx, Matrix& jittered) const {
    if constexpr (N::perturbs_input) {
      if (ctx.mode == Mode::train) {
        if (jittered.rows() != x.rows || jittered.cols() != x.cols) jittered.resize(x.rows, x.cols);
        for (index_t t = 0; t < x.rows; ++t)
          for (index_t i = 0; i < x.cols; ++i) jittered(t, i) = x(t, i);
        noise_.perturb_input(MatrixView<float>(jittered), ctx);
        return jittered;
      }
    }
    return x;
  }

  /// Token t's experts, best first (before thinning).
  void select_token(const Routing& r, index_t t, const RouterWeights& w, std::vector<float>& biased,
                    std::int32_t* it) const requires TokenSelection<S> {
    const index_t E = r.experts;
    if constexpr (selection_uses_bias<S>) {
      biased.resize(std::size_t(E));
      for (index_t e = 0; e < E; ++e) biased[std::size_t(e)] = r.probs[std::size_t(t * E + e)] + w.bias[std::size_t(e)];
      selection_.select(biased.data(), E, it);
    } else {
      selection_.select(r.logits.data() + t * E, E, it);
    }
  }

  /// Slots before the first no_expert (a per-call selection fills a prefix).
  static int filled(const std::int32_t* it, int k) noexcept {
    int n = 0;
    while (n < k && it[n] != no_expert) ++n;
    return n;
  }

  [[no_unique_address]] N noise_{};
  [[no_unique_address]] C scoring_{};
  [[no_unique_address]] S selection_{};
};

/// A routing policy: everything MoELayer calls on its router. `top_k` is
/// the slots per token (0: decided per call, see slots(E)); the layer sizes
/// the noise weight's gradient by `needs_noise_weight`.
template <class R>
concept RoutingPolicy = requires(const R& r, MatrixView<const float> x, const RouterWeights& w, const RouteContext& ctx,
                                 index_t n, Routing& out, RouterScratch& scratch) {
  { R::top_k } -> std::convertible_to<int>;
  { R::needs_noise_weight } -> std::convertible_to<bool>;
  { r.slots(n) } -> std::convertible_to<int>;
  r.route(x, w, ctx, out, scratch);
  r.validate(w, n, n);
};

/// A router the layer can train through: backward carries the gradients on
/// its outputs to its weights and its input.
template <class R>
concept TrainableRouter = RoutingPolicy<R> &&
    requires(const R& r, MatrixView<const float> x, const RouterWeights& w, const RouteContext& ctx,
             const Routing& routing, RoutingGrad& g, Matrix* dw, MatrixView<float> dx) {
  r.backward(x, w, ctx, routing, g, dw, dw, dx);
};

}  // namespace moe
