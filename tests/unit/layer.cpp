// MoELayer: composition, hand-checked outputs, drops, presets, every error.
#include "test_support.hpp"

#include <cmath>

using namespace moe;
using test::require_error;

namespace {
const LayerConfig small{.d_model = 12, .d_ff = 20, .num_experts = 6, .seed = 5};
using RefMixtral = PresetLayer<presets::Mixtral, backend::Reference>;
}  // namespace

TEST_CASE("forward equals Σ_j w_j · expert_j(x), by hand") {
  const WeightStore store = WeightStore::random(small, true, DType::F32, 1);
  const auto layer = make_layer<presets::Mixtral, backend::Reference>(small, store.view());
  const Matrix x = random_normal_matrix(9, small.d_model, 2);
  const Output out = layer.forward(x);
  REQUIRE(out.y.rows() == 9);
  for (index_t t = 0; t < 9; ++t) {
    std::vector<float> expected(std::size_t(small.d_model), 0.0f), e_out(std::size_t(small.d_model));
    for (int j = 0; j < 2; ++j) {
      Expert<SwiGLU>::apply(store.view().experts[std::size_t(out.routing.expert_at(t, j))], x.row(t).data(),
                            e_out.data());
      for (index_t i = 0; i < small.d_model; ++i)
        expected[std::size_t(i)] += out.routing.weight_at(t, j) * e_out[std::size_t(i)];
    }
    for (index_t i = 0; i < small.d_model; ++i) CHECK(out.y(t, i) == doctest::Approx(expected[std::size_t(i)]));
  }
  index_t total = 0;
  for (index_t n : out.stats.computed_per_expert) total += n;
  CHECK(total == 9 * 2);
  CHECK(out.stats.dropped_slots == 0);
  CHECK_FALSE(out.stats.capacity.has_value());
  REQUIRE(out.stats.loss("balance"));
  CHECK(out.stats.weighted_loss == doctest::Approx(0.02f * *out.stats.loss("balance")));
  CHECK(out.stats.router_entropy > 0.0f);
  CHECK(out.stats.router_entropy <= std::log(6.0f) + 1e-6f);
}

TEST_CASE("T = 0 and T = 1 work") {
  const WeightStore store = WeightStore::random(small, true, DType::F32, 1);
  const auto layer = make_layer<presets::Mixtral>(small, store.view());
  const Matrix none(0, small.d_model);
  const Output empty = layer.forward(none);
  CHECK(empty.y.rows() == 0);
  CHECK(empty.stats.tokens == 0);
  CHECK(*empty.stats.loss("balance") == 0.0f);
  const Matrix one = random_normal_matrix(1, small.d_model, 3);
  const Output single = layer.forward(one);
  CHECK(single.y.rows() == 1);
  CHECK(single.stats.computed_per_expert[std::size_t(single.routing.expert_at(0, 0))] == 1);
}

TEST_CASE("dropped tokens give exactly zero output, so x + y passes them through") {
  const LayerConfig c{.d_model = 8, .d_ff = 16, .num_experts = 4, .seed = 1};
  const WeightStore store = WeightStore::random(c, false, DType::F32, 4);
  using Layer =
      MoELayer<Router<TopK<1>, NoNoise, SoftmaxTopKRaw>, Expert<MLP<ReLU>>, CapacityFactor, NoLoss, backend::Reference>;
  const Layer layer(c, store.view(), {}, CapacityFactor{.train = 0.25, .eval = 0.25, .min = 1});
  const Matrix x = random_normal_matrix(40, c.d_model, 5);
  const Output out = layer.forward(x);
  CHECK(out.stats.capacity == 3);  // ceil(0.25·40/4)
  CHECK(out.stats.dropped_slots > 0);
  index_t kept = 0, zero_rows = 0;
  for (index_t n : out.stats.computed_per_expert) {
    CHECK(n <= 3);
    kept += n;
  }
  for (index_t t = 0; t < 40; ++t)
    if (out.plan.slot_dropped(t, 0)) {
      CHECK(out.y.row(t).cwiseAbs().maxCoeff() == 0.0f);
      ++zero_rows;
    }
  CHECK(kept + out.stats.dropped_slots == 40);  // nothing lost silently
  CHECK(zero_rows == out.stats.dropped_tokens);
}

TEST_CASE("every preset builds and runs in both modes, and training noise is keyed by the step") {
  const LayerConfig c{.d_model = 16, .d_ff = 24, .num_experts = 8, .seed = 3};
  const Matrix x = random_normal_matrix(50, c.d_model, 6);
  const WeightStore gated = WeightStore::random(c, true, DType::F32, 1);
  const WeightStore plain = WeightStore::random(c, false, DType::F32, 1, /*noise_weight=*/true);
  const auto check = [&](const auto& layer) {
    const Output eval = layer.forward(x);
    const Output train = layer.forward(x, {Mode::train, 1});
    const Output train_again = layer.forward(x, {Mode::train, 1});
    CHECK(eval.y.allFinite());
    CHECK(train.y == train_again.y);
    CHECK(eval.stats.weighted_loss >= 0.0f);
  };
  check(make_layer<presets::Mixtral>(c, gated.view()));
  check(make_layer<presets::Switch>(c, plain.view()));
  check(make_layer<presets::GShard>(c, plain.view()));
  check(make_layer<presets::ShazeerNoisyTopK>(c, plain.view()));

  const auto sw = make_layer<presets::Switch>(c, plain.view());
  CHECK(sw.forward(x, {Mode::train, 1}).routing.logits != sw.forward(x, {Mode::train, 2}).routing.logits);
  CHECK(sw.forward(x).stats.capacity == 13);                   // eval factor 2.0: ceil(2·50/8)
  CHECK(sw.forward(x, {Mode::train, 0}).stats.capacity == 8);  // train 1.25: ceil(1.25·50/8)
  const auto sh = make_layer<presets::ShazeerNoisyTopK>(c, plain.view());
  const Output noisy = sh.forward(x, {Mode::train, 0});
  CHECK(noisy.stats.loss("importance").has_value());
  CHECK(noisy.stats.loss("load").has_value());
  CHECK(noisy.routing.noise_std.size() == 50u * 8u);
}

TEST_CASE("construction errors name what was expected and what came") {
  const WeightStore store = WeightStore::random(small, true, DType::F32, 1);
  require_error([&] { RefMixtral({.d_model = 12, .d_ff = 20, .num_experts = 0}, store.view()); },
                ErrorCode::invalid_argument, {"num_experts", "0"});
  require_error([&] { RefMixtral({.d_model = 0, .d_ff = 20, .num_experts = 6}, store.view()); },
                ErrorCode::invalid_argument, {"d_model"});
  require_error([&] { RefMixtral({.d_model = 12, .d_ff = 20, .num_experts = 5}, store.view()); },
                ErrorCode::shape_mismatch, {"6 expert weight sets", "num_experts is 5"});
  require_error([&] { RefMixtral({.d_model = 13, .d_ff = 20, .num_experts = 6}, store.view()); },
                ErrorCode::shape_mismatch, {"router gate", "[6, 12]", "expected [6, 13]"});
  require_error([&] { RefMixtral({.d_model = 12, .d_ff = 21, .num_experts = 6}, store.view()); },
                ErrorCode::shape_mismatch, {"expert 0", "[20, 12]", "expected [21, 12]"});

  const LayerConfig two{.d_model = 12, .d_ff = 20, .num_experts = 2};
  const WeightStore two_store = WeightStore::random(two, true, DType::F32, 1);
  require_error([&] { MoELayer<Router<TopK<3>>, Expert<SwiGLU>, Dropless, NoLoss>(two, two_store.view()); },
                ErrorCode::invalid_argument, {"k = 3", "only 2 experts"});
  require_error(
      [&] {
        MoELayer<Router<TopK<1>>, Expert<SwiGLU>, CapacityFactor, NoLoss>(two, two_store.view(), {},
                                                                          CapacityFactor{.train = 0.0});
      },
      ErrorCode::invalid_argument, {"train factor", "> 0"});
  require_error(
      [&] {
        MoELayer<Router<TopK<1>>, Expert<SwiGLU>, Dropless, SwitchBalanceLoss>(two, two_store.view(), {}, {},
                                                                               {.alpha = NAN});
      },
      ErrorCode::invalid_argument, {"alpha"});

  // Experts in different dtypes.
  const WeightStore bf = WeightStore::random(small, true, DType::BF16, 1);
  LayerWeights mixed = store.view();
  mixed.experts[4] = bf.view().experts[4];
  require_error([&] { RefMixtral(small, mixed); }, ErrorCode::dtype_mismatch, {"expert 4", "BF16", "F32"});
  // A non-weight dtype for the router.
  LayerWeights bad_gate = store.view();
  bad_gate.router.gate.dtype = DType::I8;
  require_error([&] { RefMixtral(small, bad_gate); }, ErrorCode::dtype_mismatch, {"router gate", "I8"});
}

TEST_CASE("forward errors: wrong input width, non-finite input") {
  const WeightStore store = WeightStore::random(small, true, DType::F32, 1);
  const RefMixtral layer(small, store.view());
  const Matrix wide = random_normal_matrix(3, 13, 1);
  require_error([&] { layer.forward(wide); }, ErrorCode::shape_mismatch, {"13 columns", "d_model is 12"});
  Matrix x = random_normal_matrix(4, 12, 1);
  x(2, 5) = NAN;
  require_error([&] { layer.forward(x); }, ErrorCode::non_finite, {"token 2"});
  require_error([&] { layer.forward(MatrixView<const float>(nullptr, 2, 12)); }, ErrorCode::invalid_argument,
                {"no data"});
}

TEST_CASE("inputs: blocks, maps and refs of row-major matrices are views, with their row stride") {
  const WeightStore store = WeightStore::random(small, true, DType::F32, 1);
  const auto layer = make_layer<presets::Mixtral, backend::Reference>(small, store.view());
  const Matrix wide = random_normal_matrix(10, small.d_model + 5, 3);
  const Matrix x = wide.middleCols(2, small.d_model);  // a packed copy of the same numbers
  const Matrix expected = layer.forward(x).y;

  CHECK(layer.forward(wide.middleCols(2, small.d_model)).y == expected);  // row stride d_model + 5
  CHECK(layer.forward(x.topRows(4)).y == expected.topRows(4));
  CHECK(layer.forward(x.row(7)).y == expected.row(7));
  const Eigen::Map<const Matrix, 0, Eigen::OuterStride<>> map(wide.data() + 2, 10, small.d_model,
                                                              Eigen::OuterStride<>(wide.cols()));
  CHECK(layer.forward(map).y == expected);
  CHECK(layer.forward(Eigen::Ref<const Matrix>(x)).y == expected);

  const MatrixView<const float> v = wide.middleCols(2, small.d_model);
  CHECK(v.row_stride == small.d_model + 5);
  CHECK(v(3, 0) == wide(3, 2));

  // Writable views of a block write into the matrix.
  Matrix target = Matrix::Zero(4, 6);
  MatrixView<float> corner = target.bottomRightCorner(2, 3);
  corner(1, 2) = 5.0f;
  CHECK(target(3, 5) == 5.0f);

  // Elements not contiguous within a row: refused, not read with the wrong stride.
  using Strided = Eigen::Map<const Matrix, 0, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>>;
  const Strided every_other(wide.data(), 10, 6, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>(wide.cols(), 2));
  require_error([&] { (void)MatrixView<const float>(every_other); }, ErrorCode::invalid_argument,
                {"2 apart within a row", "inner stride 1"});
}

namespace {
struct CountingCapacity {
  inline static int validated = 0;
  bool fail = false;
  std::optional<index_t> capacity(PlanShape, Mode) const { return std::nullopt; }
  Priority priority() const { return Priority::token_order; }
  void validate() const {
    ++validated;
    detail::require(!fail, ErrorCode::invalid_argument, "CountingCapacity: asked to fail");
  }
};
}  // namespace

TEST_CASE("policies: the router takes them in the template's order or by type; validate() is optional") {
  const WeightStore store = WeightStore::random(small, true, DType::F32, 1);
  const Matrix x = random_normal_matrix(16, small.d_model, 4);
  using R = Router<TopK<2>, Jitter, Sigmoid>;
  const R positional(TopK<2>{}, Jitter{.eps = 0.2f}, Sigmoid{.normalize = true, .scale = 1.5f});
  const R by_type(Sigmoid{.normalize = true, .scale = 1.5f}, Jitter{.eps = 0.2f});
  CHECK(by_type.noise().eps == 0.2f);
  CHECK(by_type.scoring().scale == 1.5f);
  const Routing a = positional.route(x, store.view().router, {Mode::train, {1, 3}});
  const Routing b = by_type.route(x, store.view().router, {Mode::train, {1, 3}});
  CHECK(a.expert == b.expert);
  CHECK(a.weight == b.weight);
  CHECK(R(Jitter{.eps = 0.3f}).noise().eps == 0.3f);  // the others default

  // A capacity policy's validate() runs when the layer is built; one without is fine.
  using Layer = MoELayer<Router<TopK<2>>, Expert<SwiGLU>, CountingCapacity, NoLoss, backend::Reference>;
  CountingCapacity::validated = 0;
  const Layer ok(small, store.view());
  CHECK(CountingCapacity::validated == 1);
  require_error([&] { Layer bad(small, store.view(), {}, CountingCapacity{.fail = true}); },
                ErrorCode::invalid_argument, {"asked to fail"});

  // A layer's losses as a braced list.
  using Switchy =
      MoELayer<Router<TopK<1>>, Expert<SwiGLU>, Dropless, Losses<SwitchBalanceLoss, RouterZLoss>, backend::Reference>;
  const Switchy s(small, store.view(), {}, {}, {SwitchBalanceLoss{.alpha = 0.5f}, RouterZLoss{.beta = 0.25f}});
  const Output out = s.forward(x);
  CHECK(out.stats.weighted_loss == doctest::Approx(0.5f * *out.stats.loss("balance") + 0.25f * *out.stats.loss("z")));
}

TEST_CASE("stats: computed_per_expert counts tokens per expert; summed, the slots computed") {
  const WeightStore store = WeightStore::random(small, true, DType::F32, 1);
  using Capped = MoELayer<Router<TopK<2>>, Expert<SwiGLU>, CapacityFactor, NoLoss, backend::Reference>;
  const Capped layer(small, store.view(), {}, CapacityFactor{.train = 0.5, .eval = 0.5, .min = 1});
  const Matrix x = random_normal_matrix(30, small.d_model, 8);
  const Output out = layer.forward(x);
  REQUIRE(out.stats.dropped_slots > 0);
  index_t computed = 0, routed = 0;
  for (std::size_t e = 0; e < out.stats.computed_per_expert.size(); ++e) {
    index_t tokens = 0;  // distinct tokens whose kept slot names e
    for (index_t t = 0; t < 30; ++t)
      for (int j = 0; j < 2; ++j) tokens += out.routing.expert_at(t, j) == index_t(e) && !out.plan.slot_dropped(t, j);
    CHECK(out.stats.computed_per_expert[e] == tokens);
    computed += out.stats.computed_per_expert[e];
    routed += out.stats.routed_per_expert[e];
  }
  CHECK(computed == 30 * 2 - out.stats.dropped_slots - out.stats.empty_slots);
  CHECK(routed == 30 * 2);
}

TEST_CASE("values: check_values names the first non-finite weight; first_non_finite per dtype") {
  LayerConfig checked = small;
  checked.check_values = true;
  WeightStore store = WeightStore::random(small, true, DType::F32, 1);
  CHECK_NOTHROW(make_layer<presets::Mixtral, backend::Reference>(checked, store.view()));
  for (auto& p : store.parameters())
    if (p.name == "experts.3.down") p.value[std::size_t(4 * p.cols + 7)] = std::nanf("");
  require_error([&] { make_layer<presets::Mixtral, backend::Reference>(checked, store.view()); }, ErrorCode::non_finite,
                {"expert 3 down weight", "[12, 20] F32", "element [4, 7] is nan"});
  // Off by default: the layer builds, and the NaN reaches the output of the tokens that use expert 3.
  const auto unchecked = make_layer<presets::Mixtral, backend::Reference>(small, store.view());
  CHECK_FALSE(unchecked.forward(random_normal_matrix(40, small.d_model, 2)).y.allFinite());

  const std::vector<float> f{1.0f, -0.0f, 3.0f, -INFINITY, NAN};
  CHECK(first_non_finite(f.data(), DType::F32, 5) == 3);
  CHECK(first_non_finite(f.data(), DType::F32, 3) == -1);
  const std::vector<Eigen::bfloat16> b{Eigen::bfloat16(2.0f), Eigen::bfloat16(NAN)};
  CHECK(first_non_finite(b.data(), DType::BF16, 2) == 1);
  std::vector<Eigen::half> h(10000, Eigen::half(65504.0f));  // the largest finite half
  CHECK(first_non_finite(h.data(), DType::F16, 10000) == -1);
  h[9000] = Eigen::half(INFINITY);
  CHECK(first_non_finite(h.data(), DType::F16, 10000) == 9000);
}
