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
  for (index_t n : out.stats.tokens_per_expert) total += n;
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
  CHECK(single.stats.tokens_per_expert[std::size_t(single.routing.expert_at(0, 0))] == 1);
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
  for (index_t n : out.stats.tokens_per_expert) {
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
