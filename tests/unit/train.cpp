// Training pieces around backward: frozen parameter groups, dropped slots,
// determinism across threads, the optimisers, the bias balancer, errors.
#include "test_support.hpp"

#include <cmath>

using namespace moe;
using test::require_error;

namespace {
const LayerConfig small{.d_model = 8, .d_ff = 12, .num_experts = 4, .seed = 11};
using RefMixtral = PresetLayer<presets::Mixtral, backend::Reference>;
}  // namespace

TEST_CASE("frozen groups: backward skips them, the rest is unchanged") {
  WeightStore store = WeightStore::random(small, true, DType::F32, 3);
  const auto layer = make_layer<presets::Mixtral, backend::Reference>(small, store.view());
  const Matrix x = random_normal_matrix(9, small.d_model, 4), dy = random_normal_matrix(9, small.d_model, 5);
  auto ws = layer.make_workspace();
  layer.forward(x, ws, {Mode::train, 1});
  const LayerGrads all = layer.backward(x, ws, dy);

  LayerGrads g = layer.make_grads();
  std::vector<train::ParamGroup> groups = train::parameter_groups(store, g);
  REQUIRE(groups.size() == 2);
  CHECK(groups[0].name == "router");
  CHECK(groups[0].params.size() == 1);
  CHECK(groups[1].name == "experts");
  CHECK(groups[1].params.size() == 4 * 3);
  CHECK(groups[1].params[4].name == "experts.1.up");

  SUBCASE("router frozen") {
    groups[0].frozen = true;
    layer.backward(x, ws, dy, g, train::backward_options(groups));
    CHECK(g.router_gate.norm() == 0.0f);
    CHECK(g.x.norm() == 0.0f);  // input not asked for
    for (std::size_t e = 0; e < 4; ++e) CHECK(test::max_abs_diff(g.experts[e].up, all.experts[e].up) == 0.0f);
  }
  SUBCASE("experts frozen") {
    groups[1].frozen = true;
    layer.backward(x, ws, dy, g, train::backward_options(groups, true));
    CHECK(test::max_abs_diff(g.router_gate, all.router_gate) == 0.0f);
    CHECK(test::max_abs_diff(g.x, all.x) == 0.0f);
    for (const ExpertGrads& e : g.experts) CHECK(e.gate.norm() + e.up.norm() + e.down.norm() == 0.0f);
  }
  SUBCASE("the optimiser leaves a frozen group's weights alone") {
    groups[0].frozen = true;
    layer.backward(x, ws, dy, g, train::backward_options(groups));
    const std::vector<float> router_before(groups[0].params[0].value.begin(), groups[0].params[0].value.end());
    const float expert_before = groups[1].params[0].value[0];
    train::Sgd sgd({.lr = 0.1f});
    sgd.step(groups);
    CHECK(std::equal(router_before.begin(), router_before.end(), groups[0].params[0].value.begin()));
    CHECK(groups[1].params[0].value[0] != expert_before);
  }
}

TEST_CASE("dropped slots give their expert no gradient; a fully dropped token gets dL/dx = 0") {
  // Top-1 with capacity 1: each expert keeps only its first token.
  using R = Router<TopK<1>, NoNoise, SoftmaxTopKRaw>;
  const WeightStore store = WeightStore::random(small, true, DType::F32, 3);
  const MoELayer<R, Expert<SwiGLU>, CapacityFactor, NoLoss, backend::Reference> layer(
      small, store.view(), {}, CapacityFactor{.train = 0.01, .eval = 0.01, .min = 1});
  const Matrix x = random_normal_matrix(12, small.d_model, 4), dy = random_normal_matrix(12, small.d_model, 5);
  auto ws = layer.make_workspace();
  const Output& out = layer.forward(x, ws);
  REQUIRE(out.stats.dropped_slots > 0);
  const LayerGrads g = layer.backward(x, ws, dy);
  const LayerWeights w = store.view();
  for (index_t e = 0; e < small.num_experts; ++e) {
    // The expert's gradient is that of its one kept row, nothing else.
    ExpertGrads expected = ExpertGrads::zeros(true, small.d_model, small.d_ff);
    for (index_t t = 0; t < 12; ++t) {
      if (out.routing.expert_at(t, 0) != e || out.plan.slot_dropped(t, 0)) continue;
      std::vector<float> dout(std::size_t(small.d_model));
      for (index_t i = 0; i < small.d_model; ++i) dout[std::size_t(i)] = out.routing.weight_at(t, 0) * dy(t, i);
      Expert<SwiGLU>::backward(w.experts[std::size_t(e)], x.row(t).data(), dout.data(), &expected, nullptr);
    }
    CAPTURE(e);
    CHECK(test::max_abs_diff(g.experts[std::size_t(e)].up, expected.up) == 0.0f);
    CHECK(test::max_abs_diff(g.experts[std::size_t(e)].down, expected.down) == 0.0f);
  }
  for (index_t t = 0; t < 12; ++t)
    if (out.plan.slot_dropped(t, 0)) CHECK(g.x.row(t).norm() == 0.0f);
}

TEST_CASE("Cpu backward is bitwise identical on 1, 2, 3 and 7 threads, with dropout and noise") {
  LayerConfig cfg = small;
  cfg.num_experts = 6;
  cfg.expert_dropout = 0.3f;
  using R = Router<TopK<2>, NoisyTopK, SoftmaxThenTopK>;
  const WeightStore store = WeightStore::random(cfg, true, DType::F32, 3, true);
  const Matrix x = random_normal_matrix(40, cfg.d_model, 4), dy = random_normal_matrix(40, cfg.d_model, 5);
  std::vector<LayerGrads> runs;
  for (int threads : {1, 2, 3, 7}) {
    const MoELayer<R, Expert<SwiGLU>, Dropless, ImportanceLoadLoss, backend::Cpu<>> layer(cfg, store.view(), {}, {}, {},
                                                                                          backend::Cpu<>(threads));
    auto ws = layer.make_workspace();
    layer.forward(x, ws, {Mode::train, 3});
    runs.push_back(layer.backward(x, ws, dy));
  }
  for (std::size_t i = 1; i < runs.size(); ++i) {
    CHECK(test::max_abs_diff(runs[0].x, runs[i].x) == 0.0f);
    CHECK(test::max_abs_diff(runs[0].router_gate, runs[i].router_gate) == 0.0f);
    CHECK(test::max_abs_diff(runs[0].router_noise, runs[i].router_noise) == 0.0f);
    for (std::size_t e = 0; e < 6; ++e) {
      CHECK(test::max_abs_diff(runs[0].experts[e].gate, runs[i].experts[e].gate) == 0.0f);
      CHECK(test::max_abs_diff(runs[0].experts[e].up, runs[i].experts[e].up) == 0.0f);
      CHECK(test::max_abs_diff(runs[0].experts[e].down, runs[i].experts[e].down) == 0.0f);
    }
  }
}

/// Gradients of the same training step on Reference and on Cpu with
/// `threads` threads.
template <class X>
std::pair<LayerGrads, LayerGrads> panel_step(const LayerConfig& cfg, index_t T, int threads, DType dtype = DType::F32) {
  using R = Router<TopK<2>, NoNoise, SoftmaxThenTopK>;
  const WeightStore store = WeightStore::random(cfg, X::ffn::gated, dtype, 3);
  const Matrix x = random_normal_matrix(T, cfg.d_model, 4), dy = random_normal_matrix(T, cfg.d_model, 5);
  const MoELayer<R, X, Dropless, SwitchBalanceLoss, backend::Reference> ref(cfg, store.view());
  const MoELayer<R, X, Dropless, SwitchBalanceLoss, backend::Cpu<>> cpu(cfg, store.view(), {}, {}, {},
                                                                        backend::Cpu<>(threads));
  auto ws_ref = ref.make_workspace();
  auto ws_cpu = cpu.make_workspace();
  ref.forward(x, ws_ref, {Mode::train, 3});
  cpu.forward(x, ws_cpu, {Mode::train, 3});
  return {ref.backward(x, ws_ref, dy), cpu.backward(x, ws_cpu, dy)};
}

template <class X>
void check_panel_training(LayerConfig cfg) {
  CAPTURE(X::ffn::activation::name);
  CAPTURE(cfg.expert_dropout);
  // 4 experts, top-2, 200 tokens: about 100 rows per expert, enough for the
  // panel path (cpu::train_panel_rows); d_ff 70 and d_model 40 leave tails
  // in every panel and row group.
  const index_t T = 200;
  const auto [ref, one] = panel_step<X>(cfg, T, 1);
  const auto close = [](const Matrix& p, const Matrix& q) {
    const float scale = std::max(1.0f, p.size() ? p.cwiseAbs().maxCoeff() : 0.0f);
    return test::max_abs_diff(p, q) <= 2e-5f * scale;
  };
  CHECK(close(ref.x, one.x));
  for (std::size_t e = 0; e < ref.experts.size(); ++e) {
    CAPTURE(e);
    CHECK(close(ref.experts[e].gate, one.experts[e].gate));
    CHECK(close(ref.experts[e].up, one.experts[e].up));
    CHECK(close(ref.experts[e].down, one.experts[e].down));
    CHECK(one.experts[e].down.cwiseAbs().maxCoeff() > 0.0f);  // every expert got rows
  }
  for (int threads : {2, 3, 7}) {
    CAPTURE(threads);
    const LayerGrads other = panel_step<X>(cfg, T, threads).second;
    CHECK(test::max_abs_diff(one.x, other.x) == 0.0f);
    for (std::size_t e = 0; e < ref.experts.size(); ++e) {
      CHECK(test::max_abs_diff(one.experts[e].gate, other.experts[e].gate) == 0.0f);
      CHECK(test::max_abs_diff(one.experts[e].up, other.experts[e].up) == 0.0f);
      CHECK(test::max_abs_diff(one.experts[e].down, other.experts[e].down) == 0.0f);
    }
  }
}

TEST_CASE(
    "Cpu trains on the panel kernel with many rows per expert: Reference's gradients, the same bits on 1/2/3/7 "
    "threads") {
  LayerConfig cfg{.d_model = 40, .d_ff = 70, .num_experts = 4, .seed = 5};
  check_panel_training<Expert<SwiGLU>>(cfg);
  check_panel_training<Expert<MLP<GeLU>>>(cfg);
  cfg.expert_dropout = 0.25f;  // the mask replayed in the backward
  check_panel_training<Expert<SwiGLU>>(cfg);
}

TEST_CASE("expert dropout: training only, a fresh mask per step, the expected fraction dropped") {
  LayerConfig cfg = small;
  cfg.expert_dropout = 0.4f;
  const WeightStore store = WeightStore::random(cfg, true, DType::F32, 3);
  const auto drop = make_layer<presets::Mixtral, backend::Reference>(cfg, store.view());
  const auto plain = make_layer<presets::Mixtral, backend::Reference>(small, store.view());
  const Matrix x = random_normal_matrix(16, cfg.d_model, 4);
  CHECK(test::max_abs_diff(drop.forward(x).y, plain.forward(x).y) == 0.0f);  // eval: off
  const Matrix a = drop.forward(x, {Mode::train, 1}).y, b = drop.forward(x, {Mode::train, 2}).y;
  CHECK(test::max_abs_diff(a, plain.forward(x).y) > 1e-3f);
  CHECK(test::max_abs_diff(a, b) > 1e-3f);
  CHECK(test::max_abs_diff(a, drop.forward(x, {Mode::train, 1}).y) == 0.0f);  // replayable
  // The Cpu backend applies the same mask.
  const auto cpu = make_layer<presets::Mixtral, backend::Cpu<>>(cfg, store.view());
  CHECK(test::max_abs_diff(a, cpu.forward(x, {Mode::train, 1}).y) <= 1e-5f);

  const ExpertDropout d{.rate = 0.4f, .key = {1, 2}};
  int dropped = 0;
  for (std::uint64_t pair = 0; pair < 100; ++pair)
    for (index_t f = 0; f < 100; ++f) dropped += d.scale(pair, f) == 0.0f;
  CHECK(dropped == doctest::Approx(4000).epsilon(0.05));
  const float s00 = d.scale(0, 0);
  CHECK((s00 == 0.0f || std::abs(s00 - 1.0f / 0.6f) < 1e-6f));
  require_error(
      [&] {
        (void)make_layer<presets::Mixtral>(LayerConfig{8, 12, 4, 0, 1.0f}, store.view());
      },
      ErrorCode::invalid_argument, {"expert dropout rate", "[0, 1)", "1"});
}

TEST_CASE("Sgd with momentum and Adam take the textbook steps") {
  std::vector<float> w = {1.0f, -2.0f};
  const std::vector<float> grad = {0.5f, -1.0f};
  std::vector<train::ParamGroup> groups = {{.name = "g", .params = {{"w", w, grad}}, .version = {}}};
  SUBCASE("sgd") {
    train::Sgd sgd({.lr = 0.1f, .momentum = 0.9f});
    sgd.step(groups);  // v = g
    CHECK(w[0] == doctest::Approx(1.0f - 0.1f * 0.5f));
    sgd.step(groups);  // v = 0.9 g + g
    CHECK(w[0] == doctest::Approx(1.0f - 0.05f - 0.1f * 1.9f * 0.5f));
    groups[0].lr_scale = 0.0f;
    sgd.step(groups);
    CHECK(w[0] == doctest::Approx(1.0f - 0.05f - 0.095f));
  }
  SUBCASE("adam") {
    train::Adam adam({.lr = 0.01f});
    adam.step(groups);  // first step: m̂ = g, v̂ = g², so the step is lr · sign(g)
    CHECK(w[0] == doctest::Approx(1.0f - 0.01f).epsilon(1e-6));
    CHECK(w[1] == doctest::Approx(-2.0f + 0.01f).epsilon(1e-6));
    CHECK(adam.steps() == 1);
    train::Adam decay({.lr = 0.01f, .weight_decay = 0.5f});
    std::vector<float> z = {2.0f};
    const std::vector<float> zero_grad = {0.0f};
    std::vector<train::ParamGroup> zg = {{.name = "z", .params = {{"z", z, zero_grad}}, .version = {}}};
    decay.step(zg);  // decoupled: w -= lr · wd · w even with g = 0
    CHECK(z[0] == doctest::Approx(2.0f - 0.01f * 0.5f * 2.0f));
  }
  SUBCASE("groups that change shape between steps are an error") {
    train::Sgd sgd;
    sgd.step(groups);
    std::vector<float> other(3), other_grad(3);
    groups[0].params[0] = {"w", other, other_grad};
    require_error([&] { sgd.step(groups); }, ErrorCode::shape_mismatch, {"parameter w", "3 values", "state has 2"});
  }
}

TEST_CASE("training a layer lowers its loss (SGD and Adam, both backends)") {
  // Regress y onto a fixed target: 30 steps must cut the loss well down.
  const auto run = [](auto backend, auto optimiser) {
    WeightStore store = WeightStore::random(small, true, DType::F32, 3);
    const auto layer = make_layer<presets::Mixtral>(small, store.view(), backend);
    LayerGrads g = layer.make_grads();
    auto groups = train::parameter_groups(store, g);
    const Matrix x = random_normal_matrix(32, small.d_model, 4), target = random_normal_matrix(32, small.d_model, 6);
    auto ws = layer.make_workspace();
    double first = 0, last = 0;
    for (std::uint64_t step = 0; step < 30; ++step) {
      const Output& out = layer.forward(x, ws, {Mode::train, step});
      const Matrix dy = (out.y - target) / 32.0f;
      last = 0.5 * (out.y - target).squaredNorm() / 32.0;
      if (step == 0) first = last;
      layer.backward(x, ws, dy, g, train::backward_options(groups));
      optimiser.step(groups);
    }
    CHECK(last < 0.8 * first);
    return last;
  };
  const double sgd_ref = run(backend::Reference{}, train::Sgd({.lr = 0.5f}));
  const double sgd_cpu = run(backend::Cpu<>{}, train::Sgd({.lr = 0.5f}));
  CHECK(sgd_cpu == doctest::Approx(sgd_ref).epsilon(1e-4));
  run(backend::Reference{}, train::Adam({.lr = 0.02f}));
}

TEST_CASE("BiasBalancer moves the bias against the load; BiasedTopK ranks by probs + bias") {
  RoutingStats s;
  s.routed_per_expert = {10, 2, 4, 4};  // mean 5
  std::vector<float> bias(4, 0.0f);
  train::BiasBalancer{.gamma = 0.01f}.update(bias, s);
  CHECK(bias == std::vector<float>{-0.01f, 0.01f, 0.01f, 0.01f});
  std::vector<float> wrong(3);
  require_error([&] { train::BiasBalancer{}.update(wrong, s); }, ErrorCode::shape_mismatch,
                {"bias has 3 entries", "4 experts"});

  // A large bias on expert 3 puts it first for every token, without changing
  // the weights it gets (those come from the unbiased scores).
  WeightStore store = WeightStore::random(small, true, DType::F32, 3);
  store.with_selection_bias();
  using R = Router<BiasedTopK<1>, NoNoise, Sigmoid>;
  const MoELayer<R, Expert<SwiGLU>, Dropless, NoLoss, backend::Reference> layer(
      small, store.view(), R(NoNoise{}, Sigmoid{.normalize = false}));
  const Matrix x = random_normal_matrix(6, small.d_model, 4);
  const Routing before = layer.route(x);
  store.selection_bias()[3] = 10.0f;
  const Routing after = layer.route(x);
  for (index_t t = 0; t < 6; ++t) {
    CHECK(after.expert_at(t, 0) == 3);
    CHECK(after.weight_at(t, 0) == after.prob(t, 3));
    CHECK(before.prob(t, 3) == after.prob(t, 3));
  }
  const WeightStore no_bias_store = WeightStore::random(small, true, DType::F32, 3);
  LayerWeights no_bias = no_bias_store.view();
  require_error([&] { (void)MoELayer<R, Expert<SwiGLU>, Dropless, NoLoss>(small, no_bias); }, ErrorCode::shape_mismatch,
                {"selection bias has 0 entries", "one per expert (4)"});
}

TEST_CASE("backward rejects a dy or x that does not match the forward call, and non-F32 training weights") {
  const WeightStore store = WeightStore::random(small, true, DType::F32, 3);
  const RefMixtral layer = make_layer<presets::Mixtral, backend::Reference>(small, store.view());
  const Matrix x = random_normal_matrix(5, small.d_model, 4);
  auto ws = layer.make_workspace();
  layer.forward(x, ws);
  require_error([&] { (void)layer.backward(x, ws, Matrix(5, 3)); }, ErrorCode::shape_mismatch,
                {"dy is [5, 3]", "expected [5, 8]"});
  const Matrix x6 = random_normal_matrix(6, small.d_model, 4);
  require_error([&] { (void)layer.backward(x6, ws, Matrix(6, 8)); }, ErrorCode::shape_mismatch,
                {"x has 6 rows", "saw 5 tokens"});
  auto never = layer.make_workspace();
  require_error([&] { (void)layer.backward(x, never, Matrix(5, 8)); }, ErrorCode::invalid_argument,
                {"no forward call recorded in this workspace", "forward(x, ws"});

  WeightStore bf16 = WeightStore::random(small, true, DType::BF16, 3);
  require_error([&] { (void)bf16.parameters(); }, ErrorCode::dtype_mismatch, {"experts.0.gate", "BF16", "needs F32"});
}

TEST_CASE("packed weights never go stale: an optimiser step makes the packed copy an error until re-packed") {
  const LayerConfig c{.d_model = 16, .d_ff = 24, .num_experts = 4, .seed = 5};
  WeightStore store = WeightStore::random(c, true, DType::F32, 3);
  auto cpu = make_layer<presets::Mixtral>(c, store.view(), backend::Cpu<>(2));
  const auto ref = make_layer<presets::Mixtral, backend::Reference>(c, store.view());
  cpu.pack_weights();
  const Matrix x = random_normal_matrix(20, c.d_model, 4), dy = random_normal_matrix(20, c.d_model, 5);
  const float bound = 2e-5f;

  // One training step on the Reference layer (it reads the views).
  auto ws = ref.make_workspace();
  LayerGrads g = ref.make_grads();
  auto groups = train::parameter_groups(store, g);
  ref.forward(x, ws, {Mode::train, 0});
  ref.backward(x, ws, dy, g);
  const std::uint64_t before = store.version().value();
  train::Adam({.lr = 0.05f}).step(groups);
  CHECK(store.version().value() > before);

  // The panels were packed from the old weights: refused, with a message that says what to do.
  require_error([&] { (void)cpu.forward(x); }, ErrorCode::invalid_argument,
                {"cpu", "prepared a copy of the experts at weight version 0", "pack_weights()"});
  // Re-packed: equal to the Reference on the new weights.
  cpu.pack_weights();
  const Matrix y_new = ref.forward(x).y;
  CHECK(test::max_abs_diff(cpu.forward(x).y, y_new) <= bound * std::max(1.0f, y_new.cwiseAbs().maxCoeff()));

  // On the views (unpacked), a step is seen at once: nothing was copied.
  cpu.prepare({.pack = false});
  ref.forward(x, ws, {Mode::train, 1});
  ref.backward(x, ws, dy, g);
  train::Sgd({.lr = 0.1f}).step(groups);
  const Matrix y_after = ref.forward(x).y;
  CHECK(test::max_abs_diff(cpu.forward(x).y, y_after) <= bound * std::max(1.0f, y_after.cwiseAbs().maxCoeff()));
  CHECK(test::max_abs_diff(y_after, y_new) > 1e-3f);  // the step really changed the output

  // Writing through parameters() by hand: touch() says so.
  cpu.pack_weights();
  store.parameters()[2].value[0] += 1.0f;
  store.touch();
  require_error([&] { (void)cpu.forward(x); }, ErrorCode::invalid_argument, {"weight version"});
  // A frozen group is not written, so it does not bump the version.
  cpu.pack_weights();
  for (auto& group : groups) group.frozen = true;
  train::Sgd({.lr = 0.1f}).step(groups);
  CHECK_NOTHROW((void)cpu.forward(x));
}
