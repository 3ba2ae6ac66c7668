#pragma once
/// \file moe_layer.hpp
/// MoELayer<Router, Expert, Capacity, Loss, Backend>: the policies composed.
///
///   x ─► route ─► plan (capacity, counting sort) ─► gather ─► expert FFNs
///     ─► combine (weighted sum per token) ─► y, stats, losses
///
/// and, for training, backward runs the same line in reverse:
///
///   dy ─► combine (d weights, d expert outputs) ─► expert FFNs (dW, d rows)
///      ─► losses (d probs/logits) ─► router (dW_gate, dW_noise, dx) ─► dx
///
/// The layer validates once at construction (weights, policies) and cheaply
/// per call (the input's shape); the policies stay pure and the backend sees
/// only the plan and the weights.

#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "moe/backend/default.hpp"
#include "moe/capacity/capacity.hpp"
#include "moe/core/error.hpp"
#include "moe/core/linear.hpp"
#include "moe/core/weight_version.hpp"
#include "moe/expert/expert.hpp"
#include "moe/layer/stats.hpp"
#include "moe/loss/balance_loss.hpp"
#include "moe/routing/router.hpp"

namespace moe {

/// Sizes and the random seed of one layer.
struct LayerConfig {
  index_t d_model = 0;
  index_t d_ff = 0;
  index_t num_experts = 0;
  std::uint64_t seed = 0;       ///< keys noise, jitter, dropout and random routing (with the step)
  float expert_dropout = 0.0f;  ///< dropout on the experts' hidden units in training (ST-MoE: 0.4); 0 = off
  /// Scan every weight for NaN and infinity when the layer is built and name
  /// the first one found (check_weight_values): one pass over the weights,
  /// off by default. Without it a non-finite expert weight flows into the
  /// output unannounced (a non-finite router logit is always an error).
  bool check_values = false;
};

/// Views of every weight a layer reads (it owns none of them), and the
/// version of their owner (WeightStore: bumped by optimiser steps), which
/// tells a layer whether a copy it prepared (packed panels) is still current.
struct LayerWeights {
  RouterWeights router;
  std::vector<ExpertWeights> experts;  ///< [E]
  WeightVersion version;               ///< untracked (an mmap'ed checkpoint): never stale
};

/// Throws moe::Error(non_finite) naming the first weight that holds NaN or
/// infinity, in the order router gate, noise, bias, then expert 0's gate, up,
/// down, expert 1's ...: "expert 3 down weight [32, 64] BF16: element [12,
/// 40] is nan". One pass over the weights (LayerConfig::check_values runs it
/// when a layer is built).
inline void check_weight_values(const LayerWeights& w) {
  detail::require_finite(w.router.gate, "router gate weight");
  detail::require_finite(w.router.noise, "router noise weight (W_noise)");
  for (std::size_t e = 0; e < w.router.bias.size(); ++e)
    detail::require(std::isfinite(w.router.bias[e]), ErrorCode::non_finite, "router selection bias of expert ", e,
                    " is ", w.router.bias[e]);
  for (std::size_t e = 0; e < w.experts.size(); ++e) {
    const ExpertWeights& x = w.experts[e];
    detail::require_finite(x.gate, detail::cat("expert ", e, " gate weight"));
    detail::require_finite(x.up, detail::cat("expert ", e, " up weight"));
    detail::require_finite(x.down, detail::cat("expert ", e, " down weight"));
  }
}

/// What forward returns. `y` excludes the residual: a dropped slot adds 0,
/// so `x + y` passes a fully dropped token through unchanged. Y is the
/// backend's owning matrix, in its memory space: moe::Matrix for the host
/// backends (Output), a device matrix for backend::Cuda; the routing, the
/// plan and the stats are host data in either case.
template <class Y = Matrix>
struct OutputOf {
  Y y;                     ///< [T, d_model]
  Routing routing;         ///< logits, probabilities, choices and weights
  RoutingPlan plan;        ///< who went where, with what weight, what was dropped
  RoutingStats stats;      ///< counts, entropy, losses
  ForwardOptions options;  ///< the call's mode and step: backward replays its draws from them
};
using Output = OutputOf<>;

/// What a forward call keeps between calls: the output, the routing and
/// plan scratch, and the backend's own buffers (expert rows, hidden
/// activations, per-thread tiles), each grown to the largest call. Passing
/// the same Workspace to every call of a loop (decode, training steps)
/// reuses them: a steady-state call allocates nothing. One Workspace serves
/// one call at a time; threads that call one layer at once each bring
/// their own. backward reads the forward call it holds.
template <class B>
struct Workspace {
  OutputOf<backend_matrix_t<B>> out;
  RouterScratch route;
  PlanScratch plan;
  typename B::Workspace backend;
};

/// What backward computes; a frozen part is skipped (its grads stay zero).
struct BackwardOptions {
  bool input = true;    ///< dL/dx (off when nothing before the layer trains)
  bool router = true;   ///< dL/dW_gate, dL/dW_noise (off: router frozen)
  bool experts = true;  ///< dL/dW of every expert (off: experts frozen)
};

/// Gradients of one backward call, shaped like the layer's weights (fp32).
struct LayerGrads {
  Matrix x;                          ///< [T, d_model] dL/dx
  Matrix router_gate;                ///< [E, d_model] dL/dW_gate
  Matrix router_noise;               ///< [E, d_model] dL/dW_noise (NoisyTopK; empty otherwise)
  std::vector<ExpertGrads> experts;  ///< [E]
  std::vector<float> logits;         ///< [T, E] dL/d router logits (before noise): combine and losses
};

template <RoutingPolicy R, ExpertPolicy X, CapacityPolicy C, BalanceLossPolicy L, BackendPolicy B = DefaultBackend>
class MoELayer {
 public:
  using router_type = R;
  using expert_type = X;
  using capacity_type = C;
  using loss_type = L;
  using backend_type = B;
  using workspace_type = Workspace<B>;
  using space = typename B::memory_space;             ///< where x and y live
  using output_type = OutputOf<backend_matrix_t<B>>;  ///< Output for the host backends
  using prepared_type = typename B::Prepared;
  static constexpr int top_k = R::top_k;

  /// Validates everything up front (throws moe::Error naming the bad piece),
  /// then has the backend prepare the experts (views; no copy unless its
  /// numerics convert the weights).
  MoELayer(LayerConfig config, LayerWeights weights, R router = {}, C capacity = {}, L loss = {}, B backend = {})
      : config_(config),
        weights_(std::move(weights)),
        router_(std::move(router)),
        capacity_(std::move(capacity)),
        loss_(std::move(loss)),
        backend_(std::move(backend)) {
    detail::require(config_.d_model > 0 && config_.d_ff > 0, ErrorCode::invalid_argument,
                    "MoELayer: d_model and d_ff must be > 0, got d_model = ", config_.d_model,
                    ", d_ff = ", config_.d_ff);
    detail::require(config_.num_experts > 0, ErrorCode::invalid_argument, "MoELayer: num_experts must be > 0, got ",
                    config_.num_experts);
    detail::require(index_t(weights_.experts.size()) == config_.num_experts, ErrorCode::shape_mismatch,
                    "MoELayer: ", weights_.experts.size(), " expert weight sets given, num_experts is ",
                    config_.num_experts);
    router_.validate(weights_.router, config_.num_experts, config_.d_model);
    for (index_t e = 0; e < config_.num_experts; ++e) {
      const ExpertWeights& w = weights_.experts[std::size_t(e)];
      X::validate(w, config_.d_model, config_.d_ff, e);
      detail::require(w.up.dtype == weights_.experts[0].up.dtype, ErrorCode::dtype_mismatch, "MoELayer: expert ", e,
                      " weights are ", name(w.up.dtype), " but expert 0's are ", name(weights_.experts[0].up.dtype),
                      " (one dtype for all experts)");
    }
    detail::validate_policy(capacity_);
    detail::validate_policy(loss_);
    ExpertDropout::validate(config_.expert_dropout);
    if (config_.check_values) check_weight_values(weights_);
    detail::require(config_.expert_dropout == 0.0f || TrainableBackend<B>, ErrorCode::unsupported, "MoELayer: backend ",
                    B::name(), " cannot train, but expert_dropout is ", config_.expert_dropout);
    prepare({});
  }

  const LayerConfig& config() const noexcept { return config_; }
  const LayerWeights& weights() const noexcept { return weights_; }
  const R& router() const noexcept { return router_; }
  const C& capacity() const noexcept { return capacity_; }
  const L& loss() const noexcept { return loss_; }
  const B& backend() const noexcept { return backend_; }
  /// The experts as the backend computes with them (owned by the layer).
  const prepared_type& prepared() const noexcept { return prepared_; }

  /// (Re)prepares the experts from the current weights: after the weights
  /// changed under a packed copy, or to pack or unpack.
  void prepare(PrepareOptions options) {
    prepared_ = backend_.prepare(std::span<const ExpertWeights>(weights_.experts), options);
    prepared_.from.version = weights_.version.value();
  }

  /// Packs the experts into the backend's fast layout: an explicit copy
  /// (the views stay as they are), held by the layer. Returns the bytes it
  /// costs; 0 for a backend that runs on the views. Once the weights change
  /// (an optimiser step), forward refuses the stale copy until this is
  /// called again.
  std::size_t pack_weights() {
    prepare({.pack = true});
    return prepared_.bytes();
  }

  /// A workspace for this layer's calls.
  workspace_type make_workspace() const { return {}; }

  /// Routes only (no expert compute): what examples and routing tests need.
  Routing route(MatrixView<const float> x, ForwardOptions opt = {}) const {
    check_input(x);
    return router_.route(x, weights_.router, {opt.mode, {config_.seed, opt.step}});
  }

  /// y = Σ_j w_j · expert_j(x) for the T rows of x ([T, d_model], fp32, in
  /// the backend's memory space).
  output_type forward(MatrixView<const float, space> x, ForwardOptions opt = {}) const {
    workspace_type ws;
    forward(x, ws, opt);
    return std::move(ws.out);
  }

  /// The same, into `ws` (reused across calls): returns ws.out.
  ///   route → plan → stats, losses → gather → experts → combine
  const output_type& forward(MatrixView<const float, space> x, workspace_type& ws, ForwardOptions opt = {}) const {
    check_input(x);
    check_prepared("forward");
    output_type& out = ws.out;
    out.options = opt;
    backend_.route(router_, x, weights_.router, {opt.mode, {config_.seed, opt.step}}, out.routing, ws.route,
                   ws.backend);
    const PlanShape shape{x.rows, config_.num_experts, out.routing.k};
    backend_.plan(out.routing, capacity_.capacity(shape, opt.mode), capacity_.priority(), out.plan, ws.plan,
                  ws.backend);
    make_stats(out.routing, out.plan, out.stats);
    out.stats.weighted_loss = loss_.evaluate(out.routing, out.plan, out.stats.losses);

    const index_t rows = out.plan.rows(), d = config_.d_model;
    if (out.y.rows() != x.rows || out.y.cols() != d) out.y.resize(x.rows, d);  // [T, d]
    const MatrixView<float, space> in = ws.backend.input_rows(rows, d), expert_out = ws.backend.output_rows(rows, d);
    backend_.gather(out.plan, x, in, ws.backend);
    backend_.template experts<X>(out.plan, prepared_, in, expert_out, ws.backend, dropout(opt));
    backend_.combine(out.plan, expert_out, out.y, ws.backend);
    return out;
  }

  /// Zeroed gradients shaped for this layer and T tokens.
  LayerGrads make_grads(index_t T = 0) const {
    LayerGrads g;
    shape_grads(g, T);
    return g;
  }

  /// Backward of the forward call that filled `ws` (same x): given
  /// dy = dL/dy [T, d_model], writes into g (resized, zeroed first):
  ///   - dL/dx: through the experts and through the router's combine weights;
  ///   - dL/dW for the router (gate, and NoisyTopK's noise weight) and every
  ///     expert; an expert's dropped slots give it no gradient;
  ///   - the balance losses' gradients (coefficient × d value), added to the
  ///     router's: the objective is  Σ dy ⊙ y + stats.weighted_loss.
  /// Expert choice is piecewise constant: no gradient through it. Training
  /// noise, jitter and dropout are replayed from the forward call's step.
  ///   combine → experts → losses → router → gather (dx)
  void backward(MatrixView<const float> x, workspace_type& ws, MatrixView<const float> dy, LayerGrads& g,
                BackwardOptions opt = {}) const requires TrainableBackend<B> && TrainableRouter<R> && TrainableLoss<L> {
    const Output& out = ws.out;
    const Routing& r = out.routing;
    const RoutingPlan& plan = out.plan;
    const index_t T = r.tokens, E = config_.num_experts, d = config_.d_model;
    const int k = r.k;
    check_input(x);
    check_prepared("backward");
    detail::require(k > 0, ErrorCode::invalid_argument,
                    "MoELayer::backward: no forward call recorded in this workspace (run forward(x, ws, {Mode::train, "
                    "step}) with it first)");
    detail::require(x.rows == T && index_t(out.y.rows()) == T, ErrorCode::shape_mismatch, "MoELayer::backward: x has ",
                    x.rows, " rows but the forward call in the workspace saw ", T, " tokens");
    detail::require(dy.rows == T && dy.cols == d, ErrorCode::shape_mismatch, "MoELayer::backward: dy is ",
                    detail::shape_str(dy.rows, dy.cols), ", expected ", detail::shape_str(T, d));
    shape_grads(g, T);

    // Combine: y[t] = Σ_j w[t, j] · out[row(t, j)]  ⇒  dw = dy·out, d out = w·dy.
    RoutingGrad rg;
    rg.reset(T, E, k);
    const index_t rows = plan.rows();
    const MatrixView<const float> in = ws.backend.input_rows(rows, d), expert_out = ws.backend.output_rows(rows, d);
    Matrix d_out(rows, d), d_in(opt.input ? rows : 0, d);
    backend_.combine_backward(plan, expert_out, dy, std::span<float>(rg.weight), d_out, ws.backend);

    if (rows > 0 && (opt.experts || opt.input))
      backend_.template experts_backward<X>(plan, prepared_, in, d_out, ws.backend, dropout(out.options),
                                            opt.experts ? std::span<ExpertGrads>(g.experts) : std::span<ExpertGrads>(),
                                            opt.input ? MatrixView<float>(d_in) : MatrixView<float>());

    if (opt.router || opt.input) {
      loss_.backward(r, plan, rg);
      const RouteContext ctx{out.options.mode, {config_.seed, out.options.step}};
      router_.backward(x, weights_.router, ctx, r, rg, opt.router ? &g.router_gate : nullptr,
                       opt.router && g.router_noise.size() > 0 ? &g.router_noise : nullptr,
                       opt.input ? MatrixView<float>(g.x) : MatrixView<float>());
      g.logits = rg.clean_logits;
    }
    if (opt.input) backend_.gather_backward(plan, d_in, g.x, ws.backend);
  }

  /// The same, returning fresh gradients.
  LayerGrads backward(MatrixView<const float> x, workspace_type& ws, MatrixView<const float> dy,
                      BackwardOptions opt = {}) const requires TrainableBackend<B> && TrainableRouter<R> &&
      TrainableLoss<L> {
    LayerGrads g;
    backward(x, ws, dy, g, opt);
    return g;
  }

 private:
  /// Expert dropout of a call: active in training only.
  ExpertDropout dropout(const ForwardOptions& opt) const noexcept {
    return {opt.mode == Mode::train ? config_.expert_dropout : 0.0f, {config_.seed, opt.step}, opt.mode == Mode::train};
  }

  /// A prepared copy of the weights is only as good as the version it was made from.
  void check_prepared(const char* call) const {
    if (!prepared_.from.holds_copy) return;
    const std::uint64_t now = weights_.version.value();
    detail::require(prepared_.from.version == now, ErrorCode::invalid_argument, "MoELayer::", call, ": backend ",
                    B::name(), " prepared a copy of the experts at weight version ", prepared_.from.version,
                    ", but the weights are now at version ", now,
                    " (an optimiser step or WeightStore::touch() changed them); call layer.pack_weights() or "
                    "layer.prepare() again, or train on the unpacked views");
  }

  /// Sizes g for T tokens (keeping its buffers when they fit) and zeroes it.
  void shape_grads(LayerGrads& g, index_t T) const {
    const index_t E = config_.num_experts, d = config_.d_model;
    const auto zero = [](Matrix& m, index_t rows, index_t cols) {
      if (m.rows() != rows || m.cols() != cols) m.resize(rows, cols);
      m.setZero();
    };
    zero(g.x, T, d);
    zero(g.router_gate, E, d);
    zero(g.router_noise, R::needs_noise_weight ? E : 0, d);
    g.experts.resize(std::size_t(E));
    for (ExpertGrads& e : g.experts) {
      zero(e.gate, X::ffn::gated ? config_.d_ff : 0, d);
      zero(e.up, config_.d_ff, d);
      zero(e.down, d, config_.d_ff);
    }
    g.logits.assign(std::size_t(T * E), 0.0f);
  }

  template <class Space>
  void check_input(MatrixView<const float, Space> x) const {
    detail::require(x.cols == config_.d_model, ErrorCode::shape_mismatch, "MoELayer::forward: x has ", x.cols,
                    " columns, layer d_model is ", config_.d_model);
    detail::require(x.rows >= 0 && (x.rows == 0 || x.data != nullptr), ErrorCode::invalid_argument,
                    "MoELayer::forward: x has ", x.rows, " rows and ", x.data ? "data" : "no data");
    detail::require(x.row_stride >= x.cols, ErrorCode::shape_mismatch, "MoELayer::forward: x row stride ", x.row_stride,
                    " is smaller than its ", x.cols, " columns");
  }

  LayerConfig config_;
  LayerWeights weights_;
  [[no_unique_address]] R router_;
  [[no_unique_address]] C capacity_;
  [[no_unique_address]] L loss_;
  [[no_unique_address]] B backend_;
  prepared_type prepared_;
};

}  // namespace moe
