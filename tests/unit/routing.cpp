// Selection, scoring and noise policies, and the router that composes them.
#include "test_support.hpp"

#include <cmath>
#include <numeric>

using namespace moe;
using test::require_error;

namespace {
std::vector<std::int32_t> topk(std::vector<float> v, int k) {
  std::vector<std::int32_t> idx(static_cast<std::size_t>(k));
  top_k_indices(v.data(), index_t(v.size()), k, idx.data());
  return idx;
}
}  // namespace

TEST_CASE("top-k picks the largest, best first, ties to the lower expert id") {
  CHECK(topk({0.1f, 0.9f, 0.5f, 0.7f}, 2) == std::vector<std::int32_t>{1, 3});
  CHECK(topk({0.1f, 0.9f, 0.5f, 0.7f}, 4) == std::vector<std::int32_t>{1, 3, 2, 0});
  CHECK(topk({1.0f, 1.0f, 1.0f, 1.0f}, 3) == std::vector<std::int32_t>{0, 1, 2});
  CHECK(topk({0.0f, 2.0f, 2.0f, -1.0f, 2.0f}, 2) == std::vector<std::int32_t>{1, 2});
  CHECK(topk({-3.0f, -1.0f, -2.0f}, 1) == std::vector<std::int32_t>{1});
  // Against a full stable sort on random rows, for every k.
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<float> v(13);
    for (std::size_t i = 0; i < v.size(); ++i)
      v[i] = std::round(4 * normal({1, std::uint64_t(trial)}, RngStream::user, i, 0));  // many ties
    std::vector<std::int32_t> order(v.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return v[std::size_t(a)] > v[std::size_t(b)]; });
    for (int k = 1; k <= 13; ++k) CHECK(topk(v, k) == std::vector<std::int32_t>(order.begin(), order.begin() + k));
  }
}

TEST_CASE("SoftmaxThenTopK renormalises over the chosen; Raw keeps p; Sigmoid is independent") {
  const float logits[4] = {1.0f, 3.0f, 2.0f, -1.0f};
  float probs[4], w[2];
  const std::int32_t idx[2] = {1, 2};

  SoftmaxThenTopK mixtral;
  mixtral.probabilities(logits, 4, probs);
  const double z = std::exp(1.0) + std::exp(3.0) + std::exp(2.0) + std::exp(-1.0);
  CHECK(probs[1] == doctest::Approx(std::exp(3.0) / z));
  CHECK(probs[0] + probs[1] + probs[2] + probs[3] == doctest::Approx(1.0));
  mixtral.weights(logits, probs, idx, 2, w);
  CHECK(w[0] == doctest::Approx(std::exp(1.0) / (std::exp(1.0) + 1.0)));  // softmax over {3, 2}
  CHECK(w[0] + w[1] == doctest::Approx(1.0));
  mixtral.weights(logits, probs, idx, 1, w);
  CHECK(w[0] == 1.0f);  // k = 1: exactly 1

  SoftmaxTopKRaw raw;
  raw.weights(logits, probs, idx, 2, w);
  CHECK(w[0] == probs[1]);
  CHECK(w[1] == probs[2]);

  Sigmoid sig{.normalize = false, .scale = 1.0f};
  sig.probabilities(logits, 4, probs);
  CHECK(probs[1] == doctest::Approx(1.0 / (1.0 + std::exp(-3.0))));
  sig.weights(logits, probs, idx, 2, w);
  CHECK(w[1] == probs[2]);
  Sigmoid scaled{.normalize = false, .scale = 2.5f};  // unnormalised, scaled: scale · σ(logit) each
  scaled.weights(logits, probs, idx, 2, w);
  CHECK(w[0] == doctest::Approx(2.5 / (1.0 + std::exp(-3.0))));
  CHECK(w[1] == doctest::Approx(2.5 / (1.0 + std::exp(-2.0))));
  Sigmoid ds{.normalize = true, .scale = 2.5f};
  ds.weights(logits, probs, idx, 2, w);
  CHECK(w[0] + w[1] == doctest::Approx(2.5));
  require_error([] { Sigmoid{.normalize = true, .scale = 0.0f}.validate(); }, ErrorCode::invalid_argument, {"scale"});
}

namespace {
struct RouterFixture {
  index_t T = 64, E = 8, d = 24;
  Matrix x = random_normal_matrix(T, d, 1);
  Matrix gate = random_normal_matrix(E, d, 2, 0.3f);
  Matrix noise = random_normal_matrix(E, d, 3, 0.3f);
  RouterWeights w() const { return {weight_view(gate.data(), E, d), weight_view(noise.data(), E, d)}; }
};
}  // namespace

TEST_CASE("Router: logits are x·Wgᵀ in fp32, with selection and weights per row") {
  RouterFixture f;
  const Router<TopK<2>> router;
  const Routing r = router.route(f.x, f.w(), {});
  const Matrix logits = f.x * f.gate.transpose();
  for (index_t t = 0; t < f.T; ++t) {
    for (index_t e = 0; e < f.E; ++e) CHECK(r.logit(t, e) == doctest::Approx(logits(t, e)).epsilon(1e-5));
    index_t best;
    logits.row(t).maxCoeff(&best);
    CHECK(r.expert_at(t, 0) == best);
    CHECK(r.weight_at(t, 0) + r.weight_at(t, 1) == doctest::Approx(1.0));
    CHECK(r.weight_at(t, 0) >= r.weight_at(t, 1));
  }
  CHECK(r.noise_std.empty());
}

TEST_CASE("Router rejects k > E and non-finite logits, naming the token") {
  RouterFixture f;
  require_error([&] { Router<TopK<9>>().validate(f.w(), f.E, f.d); }, ErrorCode::invalid_argument,
                {"k = 9", "only 8 experts"});
  f.x(17, 3) = std::nanf("");
  require_error([&] { Router<TopK<2>>().route(f.x, f.w(), {}); }, ErrorCode::non_finite, {"token 17"});
  f.x(17, 3) = 0;
  f.x(5, 0) = INFINITY;
  require_error([&] { Router<TopK<2>>().route(f.x, f.w(), {}); }, ErrorCode::non_finite, {"token 5"});
}

TEST_CASE("Jitter acts in training only, on the router input, within [1-eps, 1+eps]") {
  RouterFixture f;
  const Router<TopK<1>, Jitter> router(Jitter{.eps = 0.1f});
  const Routing eval = router.route(f.x, f.w(), {Mode::eval, {7, 0}});
  const Routing train = router.route(f.x, f.w(), {Mode::train, {7, 0}});
  const Routing train_again = router.route(f.x, f.w(), {Mode::train, {7, 0}});
  const Routing next_step = router.route(f.x, f.w(), {Mode::train, {7, 1}});
  CHECK(eval.logits == Router<TopK<1>>().route(f.x, f.w(), {}).logits);
  CHECK(train.logits != eval.logits);
  CHECK(train.logits == train_again.logits);
  CHECK(train.logits != next_step.logits);
  // Replaying the drawn factors with StoredJitter gives the same logits.
  Matrix factors(f.T, f.d);
  Matrix ones = Matrix::Ones(f.T, f.d);
  Jitter{.eps = 0.1f}.perturb_input(MatrixView<float>(ones), {Mode::train, {7, 0}});
  factors = ones;
  CHECK(factors.minCoeff() >= 0.9f);
  CHECK(factors.maxCoeff() <= 1.1f);
  CHECK(factors.maxCoeff() > 1.09f);  // the range is used
  const Router<TopK<1>, StoredJitter> replay(StoredJitter{factors});
  CHECK(replay.route(f.x, f.w(), {Mode::train, {}}).logits == train.logits);
  require_error([] { Jitter{.eps = 1.5f}.validate(); }, ErrorCode::invalid_argument, {"eps"});
}

TEST_CASE("NoisyTopK: logits + N(0,1)·softplus(x·W_noise), training only, reproducible") {
  RouterFixture f;
  const Router<TopK<2>, NoisyTopK> router;
  require_error([&] { router.validate({f.w().gate, {}}, f.E, f.d); }, ErrorCode::invalid_argument, {"W_noise"});
  router.validate(f.w(), f.E, f.d);
  const Routing eval = router.route(f.x, f.w(), {Mode::eval, {3, 0}});
  CHECK(eval.noise_std.empty());
  const Routing train = router.route(f.x, f.w(), {Mode::train, {3, 0}});
  REQUIRE(train.noise_std.size() == std::size_t(f.T * f.E));
  CHECK(train.clean_logits == eval.logits);
  const Matrix noise_logits = f.x * f.noise.transpose();
  for (index_t t = 0; t < f.T; ++t)
    for (index_t e = 0; e < f.E; ++e) {
      const std::size_t i = std::size_t(t * f.E + e);
      CHECK(train.noise_std[i] == doctest::Approx(std::log1p(std::exp(noise_logits(t, e)))).epsilon(1e-5));
      const float z = normal({3, 0}, RngStream::noisy_top_k, std::uint64_t(t), std::uint64_t(e));
      CHECK(train.logits[i] == doctest::Approx(train.clean_logits[i] + z * train.noise_std[i]).epsilon(1e-5));
    }
  CHECK(router.route(f.x, f.w(), {Mode::train, {3, 0}}).logits == train.logits);
}

TEST_CASE("GShardTop2 keeps the second expert with probability min(1, 2·w2)") {
  RouterFixture f;
  f.T = 4000;
  f.x = random_normal_matrix(f.T, f.d, 11);
  const Router<GShardTop2, NoNoise, SoftmaxThenTopK> router;
  const Routing r = router.route(f.x, f.w(), {Mode::train, {9, 0}});
  double expected = 0;
  index_t kept = 0;
  const Routing plain = Router<TopK<2>>().route(f.x, f.w(), {});
  for (index_t t = 0; t < f.T; ++t) {
    expected += std::min(1.0f, 2.0f * plain.weight_at(t, 1));
    CHECK(r.expert_at(t, 0) == plain.expert_at(t, 0));
    CHECK(r.weight_at(t, 0) == plain.weight_at(t, 0));  // not renormalised
    if (r.expert_at(t, 1) == no_expert) {
      CHECK(r.weight_at(t, 1) == 0.0f);
    } else {
      ++kept;
      CHECK(r.expert_at(t, 1) == plain.expert_at(t, 1));
    }
  }
  // Binomial: within 4 standard deviations of the expected count.
  CHECK(std::abs(double(kept) - expected) < 4 * std::sqrt(f.T * 0.25));
  CHECK(kept < f.T);
}

TEST_CASE("ExpertChoice: each expert takes its C best tokens by probability; tokens list their experts by logit") {
  // 5 tokens, 3 experts, factor 1.2 → C = ceil(1.2 · 5 / 3) = 2.
  const std::vector<float> logits = {
      3.0f,  0.0f, 0.0f,  // t0: loves e0
      2.0f,  2.5f, 0.0f,  // t1: e1 over e0
      0.0f,  0.0f, 0.0f,  // t2: indifferent
      1.0f,  0.0f, 4.0f,  // t3: loves e2
      -1.0f, 3.0f, 2.9f,  // t4: e1, e2
  };
  std::vector<float> probs(logits.size());
  for (int t = 0; t < 5; ++t) detail::softmax_row(logits.data() + 3 * t, 3, probs.data() + 3 * t);
  const ExpertChoice ec{.capacity_factor = 1.2};
  CHECK(ec.capacity(5, 3) == 2);
  CHECK(ec.capacity(2, 3) == 1);
  CHECK(ExpertChoice{.capacity_factor = 10.0}.capacity(5, 3) == 5);  // never more than T
  std::vector<std::int32_t> idx(15);
  ec.select_all(probs.data(), logits.data(), 5, 3, idx.data());
  // Per expert, the two highest probabilities: e0 ← t0, t1 · e1 ← t4, t1 · e2 ← t3, t4.
  const std::vector<std::int32_t> expected = {
      0,         no_expert, no_expert,  // t0
      1,         0,         no_expert,  // t1: both, by logit (2.5 > 2.0)
      no_expert, no_expert, no_expert,  // t2: nobody chose it
      2,         no_expert, no_expert,  // t3
      1,         2,         no_expert,  // t4
  };
  CHECK(idx == expected);

  // In a layer: exactly C rows per expert, unchosen tokens counted as dropped tokens, y = 0 for them.
  const LayerConfig c{.d_model = 6, .d_ff = 8, .num_experts = 4, .seed = 1};
  const WeightStore store = WeightStore::random(c, true, DType::F32, 2);
  using R = Router<ExpertChoice, NoNoise, SoftmaxTopKRaw>;
  const MoELayer<R, Expert<SwiGLU>, Dropless, NoLoss, backend::Reference> layer(c, store.view(), R(ExpertChoice{1.0}));
  const Matrix x = random_normal_matrix(16, 6, 3);
  const Output out = layer.forward(x);
  CHECK(out.routing.k == 4);
  for (index_t n : out.stats.computed_per_expert) CHECK(n == 4);
  CHECK(out.stats.dropped_slots == 0);
  index_t unchosen = 0;
  for (index_t t = 0; t < 16; ++t) {
    const bool none = out.routing.expert_at(t, 0) == no_expert;
    unchosen += none;
    if (none) CHECK(out.y.row(t).norm() == 0.0f);
    for (int j = 0; j < 4; ++j)
      if (out.routing.expert_at(t, j) != no_expert)
        CHECK(out.routing.weight_at(t, j) == out.routing.prob(t, out.routing.expert_at(t, j)));
  }
  CHECK(unchosen > 0);
  CHECK(out.stats.dropped_tokens == unchosen);
  require_error([] { (void)Router<ExpertChoice>(ExpertChoice{0.0}).validate({}, 4, 6); }, ErrorCode::invalid_argument,
                {"ExpertChoice", "capacity_factor", "> 0"});
}
