// MoELayer::backward: finite differences for every policy combination the
// golden cases do not cover, Cpu against Reference, frozen parts, dropped
// slots, determinism, errors.
#include "test_support.hpp"

#include <cmath>
#include <functional>

using namespace moe;
using test::require_error;

namespace {

const LayerConfig small{.d_model = 8, .d_ff = 12, .num_experts = 4, .seed = 11};

/// What the routing decided, and which ReLU units are on: the finite
/// differences must not cross a decision or a kink (a piecewise function
/// has no derivative there).
template <class Layer>
std::vector<std::int32_t> decisions(const Layer& layer, MatrixView<const float> x, const Output& o) {
  std::vector<std::int32_t> d(o.routing.expert);
  d.insert(d.end(), o.plan.slot_row.begin(), o.plan.slot_row.end());
  if constexpr (std::is_same_v<typename Layer::expert_type::activation, ReLU>)
    for (index_t row = 0; row < o.plan.rows(); ++row) {
      const index_t t = o.plan.row_token[std::size_t(row)];
      std::int32_t e = 0;
      while (o.plan.offsets[std::size_t(e + 1)] <= row) ++e;
      const WeightMatrix& up = layer.weights().experts[std::size_t(e)].up;
      for (index_t f = 0; f < up.rows; ++f) {
        float z = 0;
        for (index_t i = 0; i < up.cols; ++i) z += up.at(f, i) * x(t, i);
        d.push_back(z > 0.0f);
      }
    }
  return d;
}

/// The objective backward differentiates: Σ dy ⊙ y + weighted balance losses.
double objective(const Output& o, const Matrix& dy) {
  double L = o.stats.weighted_loss;
  for (index_t i = 0; i < dy.size(); ++i) L += double(dy.data()[i]) * double(o.y.data()[i]);
  return L;
}

/// Central differences of the objective along random unit directions, for
/// every weight of the store and for x, against backward's gradient.
template <class Layer>
void check_finite_differences(const Layer& layer, WeightStore& store, Matrix& x, const Matrix& dy, ForwardOptions opt,
                              float h) {
  auto ws = layer.make_workspace();
  layer.forward(x, ws, opt);
  const auto base = decisions(layer, x, ws.out);
  LayerGrads g = layer.make_grads();
  layer.backward(x, ws, dy, g);

  const auto at = [&] {
    auto w = layer.make_workspace();
    const Output& o = layer.forward(x, w, opt);
    REQUIRE_MESSAGE(decisions(layer, x, o) == base, "a decision or kink moved within the step: pick another seed");
    return objective(o, dy);
  };
  // One check: values v (perturbed in place), gradient grad.
  const auto check = [&](const std::string& name, std::span<float> v, std::span<const float> grad) {
    for (std::uint64_t dir = 0; dir < 2; ++dir) {
      std::vector<float> u(v.size());
      double norm = 0, analytic = 0;
      for (std::size_t i = 0; i < v.size(); ++i) {
        u[i] = normal({99, dir}, RngStream::user, i, 0);
        norm += double(u[i]) * u[i];
      }
      for (std::size_t i = 0; i < v.size(); ++i) {
        u[i] = float(u[i] / std::sqrt(norm));
        analytic += double(grad[i]) * u[i];
      }
      const std::vector<float> saved(v.begin(), v.end());
      for (std::size_t i = 0; i < v.size(); ++i) v[i] = saved[i] + h * u[i];
      const double plus = at();
      for (std::size_t i = 0; i < v.size(); ++i) v[i] = saved[i] - h * u[i];
      const double minus = at();
      std::copy(saved.begin(), saved.end(), v.begin());
      const double numeric = (plus - minus) / (2.0 * double(h));
      CAPTURE(name);
      CAPTURE(dir);
      CHECK(std::abs(numeric - analytic) <= 2e-3 * std::max(1.0, std::abs(analytic)));
    }
  };
  for (const train::ParamGroup& group : train::parameter_groups(store, g))
    for (const train::Parameter& p : group.params) check(p.name, p.value, p.grad);
  check("x", {x.data(), std::size_t(x.size())}, {g.x.data(), std::size_t(g.x.size())});

  // A gradient that is identically zero would pass the checks above only if
  // the objective did not move: make sure it does.
  CHECK(g.x.norm() > 0.0f);
  CHECK(g.router_gate.norm() > 0.0f);
}

/// The same layer on Reference and Cpu: finite differences on both, and
/// Cpu's gradients equal Reference's to float rounding.
template <class R, class X, class C, class L>
void check_combination(LayerConfig cfg, R router, C capacity, L loss, ForwardOptions opt,
                       const std::function<void(const Output&)>& expect, bool noise_weight = false, bool bias = false,
                       float h = 1e-2f) {
  const index_t T = 10;
  WeightStore store = WeightStore::random(cfg, X::ffn::gated, DType::F32, 3, noise_weight);
  if (bias) {
    store.with_selection_bias();
    for (std::size_t e = 0; e < store.selection_bias().size(); ++e)
      store.selection_bias()[e] = 0.05f * float(e % 3) - 0.05f;
  }
  Matrix x = random_normal_matrix(T, cfg.d_model, 4);
  const Matrix dy = random_normal_matrix(T, cfg.d_model, 5);
  const MoELayer<R, X, C, L, backend::Reference> ref(cfg, store.view(), router, capacity, loss);
  const MoELayer<R, X, C, L, backend::Cpu<>> cpu(cfg, store.view(), router, capacity, loss, backend::Cpu<>(2));

  auto ws_ref = ref.make_workspace();
  auto ws_cpu = cpu.make_workspace();
  expect(ref.forward(x, ws_ref, opt));
  cpu.forward(x, ws_cpu, opt);
  const LayerGrads a = ref.backward(x, ws_ref, dy), b = cpu.backward(x, ws_cpu, dy);
  const auto close = [](const Matrix& p, const Matrix& q) {
    const float scale = std::max(1.0f, p.size() ? p.cwiseAbs().maxCoeff() : 0.0f);
    return test::max_abs_diff(p, q) <= 1e-5f * scale;
  };
  CHECK(close(a.x, b.x));
  CHECK(close(a.router_gate, b.router_gate));
  CHECK(close(a.router_noise, b.router_noise));
  for (std::size_t e = 0; e < a.experts.size(); ++e) {
    CAPTURE(e);
    CHECK(close(a.experts[e].gate, b.experts[e].gate));
    CHECK(close(a.experts[e].up, b.experts[e].up));
    CHECK(close(a.experts[e].down, b.experts[e].down));
  }
  SUBCASE("reference") { check_finite_differences(ref, store, x, dy, opt, h); }
  SUBCASE("cpu") { check_finite_differences(cpu, store, x, dy, opt, h); }
}

const ForwardOptions train_step{Mode::train, 7};

}  // namespace

TEST_CASE("finite differences: noisy top-k (learned noise scale), importance + smooth load losses, tanh-GeLU MLP") {
  check_combination<Router<TopK<2>, NoisyTopK, SoftmaxThenTopK>, Expert<MLP<GeLUTanh>>>(
      small, Router<TopK<2>, NoisyTopK, SoftmaxThenTopK>(NoisyTopK{.min_std = 0.01f}), Dropless{},
      ImportanceLoadLoss{.w_importance = 1.0f, .w_load = 1.0f}, train_step,
      [](const Output& o) {
        REQUIRE(o.routing.noise_std.size() == std::size_t(10 * 4));
        REQUIRE(o.routing.logits != o.routing.clean_logits);
        REQUIRE(o.stats.loss("load").value() > 0.0f);
      },
      true);
}

TEST_CASE("finite differences: Switch jitter, capacity drops, p_max weights, balance + z-loss, GeLU MLP") {
  using R = Router<TopK<1>, Jitter, SoftmaxTopKRaw>;
  using L = Losses<SwitchBalanceLoss, RouterZLoss>;
  check_combination<R, Expert<MLP<GeLU>>>(
      small, R(Jitter{.eps = 0.1f}), CapacityFactor{.train = 0.75, .eval = 0.75, .min = 0},
      L(SwitchBalanceLoss{.alpha = 1.0f, .counting = SlotCounting::top1}, RouterZLoss{.beta = 1.0f}), train_step,
      [](const Output& o) { REQUIRE(o.stats.dropped_slots > 0); });
}

TEST_CASE("finite differences: top-2 with drops by router score, GeGLU, every-slot balance + z-loss") {
  using L = Losses<SwitchBalanceLoss, RouterZLoss>;
  check_combination<Router<TopK<2>>, Expert<GeGLU>>(
      small, Router<TopK<2>>{}, CapacityFactor{.train = 0.5, .eval = 0.5, .min = 0, .order = Priority::router_score},
      L(SwitchBalanceLoss{.alpha = 1.0f, .counting = SlotCounting::every_slot}, RouterZLoss{.beta = 1.0f}), train_step,
      [](const Output& o) { REQUIRE(o.stats.dropped_slots > 0); });
}

TEST_CASE("finite differences: GShard random second expert (thinned slots), ReLU MLP") {
  using L = Losses<SwitchBalanceLoss, RouterZLoss>;
  check_combination<Router<GShardTop2>, Expert<MLP<ReLU>>>(
      small, Router<GShardTop2>{}, CapacityFactor{.train = 1.0, .eval = 1.0, .min = 0},
      L(SwitchBalanceLoss{.alpha = 1.0f, .counting = SlotCounting::top1}, RouterZLoss{.beta = 1.0f}), train_step,
      [](const Output& o) { REQUIRE(o.stats.empty_slots > 0); }, false, false, 1e-3f);  // small step: ReLU kinks
}

TEST_CASE("finite differences: sigmoid scores with a selection bias (DeepSeek-V3), SwiGLU") {
  using R = Router<BiasedTopK<2>, NoNoise, Sigmoid>;
  check_combination<R, Expert<SwiGLU>>(
      small, R(NoNoise{}, Sigmoid{.normalize = true, .scale = 2.5f}), Dropless{}, RouterZLoss{.beta = 1.0f}, train_step,
      [](const Output& o) { REQUIRE(o.routing.weight_at(0, 0) + o.routing.weight_at(0, 1) > 2.49f); }, false, true);
}

TEST_CASE("finite differences: unnormalised sigmoid scores, capacity drops") {
  using R = Router<TopK<2>, NoNoise, Sigmoid>;
  check_combination<R, Expert<SwiGLU>>(small, R(NoNoise{}, Sigmoid{.normalize = false, .scale = 1.0f}),
                                       CapacityFactor{.train = 0.5, .eval = 0.5, .min = 0},
                                       SwitchBalanceLoss{.alpha = 1.0f}, train_step,
                                       [](const Output& o) { REQUIRE(o.stats.dropped_slots > 0); });
}

TEST_CASE("finite differences: expert choice, with raw and renormalised weights") {
  const auto expect = [](const Output& o) {
    // Every expert takes C = ceil(2 · 10 / 4) = 5 tokens; some token got
    // several experts, so (10 · 2 = 20 pairs over 10 tokens) ...
    for (index_t n : o.stats.computed_per_expert) REQUIRE(n == 5);
    REQUIRE(o.routing.k == 4);
  };
  SUBCASE("raw") {
    using R = Router<ExpertChoice, NoNoise, SoftmaxTopKRaw>;
    check_combination<R, Expert<SwiGLU>>(small, R{}, Dropless{}, RouterZLoss{.beta = 1.0f}, train_step, expect);
  }
  SUBCASE("renormalised") {
    using R = Router<ExpertChoice, NoNoise, SoftmaxThenTopK>;
    check_combination<R, Expert<SwiGLU>>(small, R{}, Dropless{}, RouterZLoss{.beta = 1.0f}, train_step, expect);
  }
}

TEST_CASE("finite differences: expert dropout (mask replayed in backward)") {
  LayerConfig cfg = small;
  cfg.expert_dropout = 0.4f;
  check_combination<Router<TopK<2>>, Expert<SwiGLU>>(cfg, Router<TopK<2>>{}, Dropless{}, SwitchBalanceLoss{},
                                                     train_step, [](const Output&) {});
}
