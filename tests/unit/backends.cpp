// backend::Cpu against backend::Reference on random shapes, and determinism
// across thread counts.
#include "test_support.hpp"

using namespace moe;

namespace {

struct Shape {
  index_t T, d, f, E;
};

template <int K, class F, class Capacity>
void compare(const Shape& s, DType dtype, Capacity capacity, std::uint64_t seed) {
  CAPTURE(s.T);
  CAPTURE(s.d);
  CAPTURE(s.f);
  CAPTURE(s.E);
  CAPTURE(K);
  CAPTURE(name(dtype));
  const LayerConfig c{.d_model = s.d, .d_ff = s.f, .num_experts = s.E, .seed = seed};
  const WeightStore store = WeightStore::random(c, F::gated, dtype, seed);
  using R = Router<TopK<K>, Jitter, SoftmaxThenTopK>;
  const R router(Jitter{.eps = 0.05f});
  const MoELayer<R, Expert<F>, Capacity, SwitchBalanceLoss, backend::Reference> ref(c, store.view(), router, capacity);
  const MoELayer<R, Expert<F>, Capacity, SwitchBalanceLoss, backend::Cpu<>> cpu(c, store.view(), router, capacity);
  const Matrix x = random_normal_matrix(s.T, s.d, seed + 1);
  for (Mode mode : {Mode::eval, Mode::train}) {
    const Output a = ref.forward(x, {mode, 3});
    const Output b = cpu.forward(x, {mode, 3});
    // Identical routing decisions (routing is backend-independent by design).
    CHECK(a.routing.expert == b.routing.expert);
    CHECK(a.plan.slot_row == b.plan.slot_row);
    CHECK(a.stats.tokens_per_expert == b.stats.tokens_per_expert);
    CHECK(a.stats.dropped_slots == b.stats.dropped_slots);
    const float scale = std::max(1.0f, a.y.size() ? a.y.cwiseAbs().maxCoeff() : 0.0f);
    CHECK(test::max_abs_diff(a.y, b.y) <= 2e-5f * scale);
  }
}

}  // namespace

TEST_CASE("Cpu matches Reference: odd sizes, many experts, k up to 8, T = 0 and 1") {
  const std::vector<Shape> shapes = {{0, 16, 32, 4},  {1, 16, 32, 4},   {1, 7, 5, 8},     {5, 1, 3, 2},
                                     {33, 13, 29, 8}, {17, 67, 45, 64}, {64, 33, 70, 16}, {100, 24, 40, 64}};
  std::uint64_t seed = 10;
  for (const Shape& s : shapes) {
    for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
      compare<1, MLP<ReLU>>(s, dt, Dropless{}, ++seed);
      compare<2, SwiGLU>(s, dt, Dropless{}, ++seed);
      if (s.E >= 3) compare<3, GeGLU>(s, dt, CapacityFactor{.train = 0.5, .eval = 1.0, .min = 1}, ++seed);
      if (s.E >= 8) compare<8, MLP<GeLU>>(s, dt, CapacityFactor{.train = 0.75, .eval = 1.0, .min = 0}, ++seed);
    }
  }
}

TEST_CASE("same seed, same output, whatever the thread count (bitwise)") {
  const LayerConfig c{.d_model = 40, .d_ff = 72, .num_experts = 8, .seed = 77};
  const WeightStore store = WeightStore::random(c, false, DType::BF16, 2, /*noise_weight=*/true);
  const Matrix x = random_normal_matrix(129, c.d_model, 3);
  using P = presets::ShazeerNoisyTopK;
  std::vector<Output> outs;
  for (int threads : {1, 2, 3, 7})
    outs.push_back(make_layer<P>(c, store.view(), backend::Cpu<>(threads)).forward(x, {Mode::train, 4}));
  for (std::size_t i = 1; i < outs.size(); ++i) {
    CHECK(outs[i].routing.logits == outs[0].routing.logits);
    CHECK(outs[i].routing.expert == outs[0].routing.expert);
    CHECK(outs[i].y == outs[0].y);  // exact equality, not a tolerance
  }
  // A different seed changes the noise and so the output.
  const Output other = make_layer<P>({.d_model = 40, .d_ff = 72, .num_experts = 8, .seed = 78}, store.view())
                           .forward(x, {Mode::train, 4});
  CHECK(other.routing.logits != outs[0].routing.logits);
}
