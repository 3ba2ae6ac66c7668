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

#include <cstdint>
#include <span>
#include <vector>

#include "moe/backend/default.hpp"
#include "moe/capacity/capacity.hpp"
#include "moe/core/error.hpp"
#include "moe/core/linear.hpp"
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
};

/// Views of every weight a layer reads (it owns none of them).
struct LayerWeights {
  RouterWeights router;
  std::vector<ExpertWeights> experts;  ///< [E]
};

/// What forward returns. `y` excludes the residual: a dropped slot adds 0,
/// so `x + y` passes a fully dropped token through unchanged.
struct Output {
  Matrix y;                ///< [T, d_model]
  Routing routing;         ///< logits, probabilities, choices and weights
  RoutingPlan plan;        ///< who went where, what was dropped
  RoutingStats stats;      ///< counts, entropy, losses
  ForwardOptions options;  ///< the call's mode and step: backward replays its draws from them
};

/// What a forward call keeps between calls: the output and the row buffers.
/// Passing the same Workspace to every call of a loop (decode, training
/// steps) reuses them: once they have grown to the largest call, no buffer
/// that scales with tokens × d_model is allocated again (the backend keeps
/// its own workspace for hidden activations). Not shared between threads.
struct Workspace {
  Output out;
  Matrix packed;      ///< [rows, d_model] tokens grouped by expert
  Matrix expert_out;  ///< [rows, d_model] each row's expert output
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
  static constexpr int top_k = R::top_k;

  /// Validates everything up front; throws moe::Error naming the bad piece.
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
    capacity_.validate();
    loss_.validate();
    ExpertDropout::validate(config_.expert_dropout);
    detail::require(config_.expert_dropout == 0.0f || TrainableBackend<B>, ErrorCode::unsupported, "MoELayer: backend ",
                    B::name(), " cannot train, but expert_dropout is ", config_.expert_dropout);
  }

  const LayerConfig& config() const noexcept { return config_; }
  const LayerWeights& weights() const noexcept { return weights_; }
  const R& router() const noexcept { return router_; }
  const C& capacity() const noexcept { return capacity_; }
  const L& loss() const noexcept { return loss_; }
  const B& backend() const noexcept { return backend_; }

  /// Packs the experts' weights into the backend's fast layout: an explicit,
  /// one-time copy (the views stay as they are). Returns the bytes it costs;
  /// 0 for a backend that runs on the views directly.
  std::size_t pack_weights() const {
    const std::span<const ExpertWeights> experts(weights_.experts);
    if constexpr (requires { backend_.pack(experts); })
      return backend_.pack(experts)->bytes();
    else
      return 0;
  }

  /// Routes only (no expert compute): what examples and routing tests need.
  Routing route(MatrixView<const float> x, ForwardOptions opt = {}) const {
    check_input(x);
    return router_.route(x, weights_.router, {opt.mode, {config_.seed, opt.step}});
  }

  /// y = Σ_j w_j · expert_j(x) for the T rows of x ([T, d_model], fp32).
  Output forward(MatrixView<const float> x, ForwardOptions opt = {}) const {
    Workspace ws;
    forward(x, ws, opt);
    return std::move(ws.out);
  }

  /// The same, into `ws` (reused across calls): returns ws.out.
  const Output& forward(MatrixView<const float> x, Workspace& ws, ForwardOptions opt = {}) const {
    Output& out = ws.out;
    out.options = opt;
    out.routing = route(x, opt);
    const PlanShape shape{x.rows, config_.num_experts, out.routing.k};
    out.plan = build_plan(out.routing, capacity_.capacity(shape, opt.mode), capacity_.priority());
    out.stats = make_stats(out.routing, out.plan);
    out.stats.weighted_loss = loss_.evaluate(out.routing, out.plan, out.stats);

    reserve_rows(ws.packed, out.plan.rows());
    reserve_rows(ws.expert_out, out.plan.rows());
    out.y.resize(x.rows, config_.d_model);  // [T, d]
    const MatrixView<float> packed(ws.packed.data(), out.plan.rows(), config_.d_model);
    const MatrixView<float> expert_out(ws.expert_out.data(), out.plan.rows(), config_.d_model);
    const std::span<const ExpertWeights> experts(weights_.experts);
    backend_.gather(out.plan, x, packed);
    const ExpertDropout drop = dropout(opt);
    if constexpr (TrainableBackend<B>) {
      if (drop.active()) {
        backend_.template expert_ffn<typename X::ffn>(out.plan, packed, experts, expert_out, drop);
        backend_.combine(out.plan, out.routing, expert_out, out.y);
        return out;
      }
    }
    backend_.template expert_ffn<typename X::ffn>(out.plan, packed, experts, expert_out);
    backend_.combine(out.plan, out.routing, expert_out, out.y);
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
  void backward(MatrixView<const float> x, const Workspace& ws, MatrixView<const float> dy, LayerGrads& g,
                BackwardOptions opt = {}) const requires TrainableBackend<B> && TrainableLoss<L> {
    const Output& out = ws.out;
    const Routing& r = out.routing;
    const RoutingPlan& plan = out.plan;
    const index_t T = r.tokens, E = config_.num_experts, d = config_.d_model;
    const int k = r.k;
    check_input(x);
    detail::require(x.rows == T && index_t(out.y.rows()) == T, ErrorCode::shape_mismatch, "MoELayer::backward: x has ",
                    x.rows, " rows but the forward call in the workspace saw ", T, " tokens");
    detail::require(dy.rows == T && dy.cols == d, ErrorCode::shape_mismatch, "MoELayer::backward: dy is ",
                    detail::shape_str(dy.rows, dy.cols), ", expected ", detail::shape_str(T, d));
    shape_grads(g, T);

    // Combine: y[t] = Σ_j w[t, j] · out[row(t, j)]  ⇒  dw = dy·out, d out = w·dy.
    RoutingGrad rg;
    rg.reset(T, E, k);
    const index_t rows = plan.rows();
    Matrix d_out(rows, d), d_packed(opt.input ? rows : 0, d);
    const MatrixView<const float> expert_out(ws.expert_out.data(), rows, d);
    for (index_t t = 0; t < T; ++t)
      for (int j = 0; j < k; ++j) {
        const std::int32_t row = plan.slot_row[std::size_t(t * k + j)];
        if (row < 0) continue;  // dropped or empty: y does not depend on it
        rg.weight[std::size_t(t * k + j)] = detail::dot(dy.row(t), expert_out.row(row), d);
        const float w = r.weight_at(t, j);
        for (index_t i = 0; i < d; ++i) d_out(row, i) = w * dy(t, i);
      }

    if (rows > 0 && (opt.experts || opt.input)) {
      const MatrixView<const float> packed(ws.packed.data(), rows, d);
      backend_.template expert_backward<typename X::ffn>(
          plan, packed, std::span<const ExpertWeights>(weights_.experts), d_out, dropout(out.options),
          opt.experts ? std::span<ExpertGrads>(g.experts) : std::span<ExpertGrads>(),
          opt.input ? MatrixView<float>(d_packed) : MatrixView<float>());
    }

    if (opt.router || opt.input) {
      loss_.backward(r, plan, rg);
      const RouteContext ctx{out.options.mode, {config_.seed, out.options.step}};
      router_.backward(x, weights_.router, ctx, r, rg, opt.router ? &g.router_gate : nullptr,
                       opt.router && g.router_noise.size() > 0 ? &g.router_noise : nullptr,
                       opt.input ? MatrixView<float>(g.x) : MatrixView<float>());
      g.logits = rg.clean_logits;
    }
    if (opt.input)
      for (index_t t = 0; t < T; ++t)
        for (int j = 0; j < k; ++j)
          if (const std::int32_t row = plan.slot_row[std::size_t(t * k + j)]; row >= 0)
            for (index_t i = 0; i < d; ++i) g.x(t, i) += d_packed(row, i);
  }

  /// The same, returning fresh gradients.
  LayerGrads backward(MatrixView<const float> x, const Workspace& ws, MatrixView<const float> dy,
                      BackwardOptions opt = {}) const requires TrainableBackend<B> && TrainableLoss<L> {
    LayerGrads g;
    backward(x, ws, dy, g, opt);
    return g;
  }

 private:
  /// Grows m to at least `rows` rows of d_model (never shrinks: a smaller
  /// call uses the first rows).
  void reserve_rows(Matrix& m, index_t rows) const {
    if (m.rows() < rows || m.cols() != config_.d_model) m.resize(std::max(rows, index_t(m.rows())), config_.d_model);
  }

  /// Expert dropout of a call: active in training only.
  ExpertDropout dropout(const ForwardOptions& opt) const noexcept {
    return {opt.mode == Mode::train ? config_.expert_dropout : 0.0f, {config_.seed, opt.step}};
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
    zero(g.router_noise, R::noise_type::needs_weight ? E : 0, d);
    g.experts.resize(std::size_t(E));
    for (ExpertGrads& e : g.experts) {
      zero(e.gate, X::ffn::gated ? config_.d_ff : 0, d);
      zero(e.up, config_.d_ff, d);
      zero(e.down, d, config_.d_ff);
    }
    g.logits.assign(std::size_t(T * E), 0.0f);
  }

  void check_input(MatrixView<const float> x) const {
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
};

}  // namespace moe
