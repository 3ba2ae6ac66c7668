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
  // A second Cpu layer with packed weights: the panel kernel.
  MoELayer<R, Expert<F>, Capacity, SwitchBalanceLoss, backend::Cpu<>> packed(c, store.view(), router, capacity);
  CHECK(packed.pack_weights() >= std::size_t(s.E * s.f * s.d * (F::gated ? 3 : 2)) * (dtype == DType::BF16 ? 2 : 4));
  const Matrix x = random_normal_matrix(s.T, s.d, seed + 1);
  for (Mode mode : {Mode::eval, Mode::train}) {
    const Output a = ref.forward(x, {mode, 3});
    for (const auto* layer : {&cpu, static_cast<const decltype(cpu)*>(&packed)}) {
      CAPTURE(layer == &packed);
      const Output b = layer->forward(x, {mode, 3});
      // Identical routing decisions (routing is backend-independent by design).
      CHECK(a.routing.expert == b.routing.expert);
      CHECK(a.plan.slot_row == b.plan.slot_row);
      CHECK(a.stats.computed_per_expert == b.stats.computed_per_expert);
      CHECK(a.stats.dropped_slots == b.stats.dropped_slots);
      const float scale = std::max(1.0f, a.y.size() ? a.y.cwiseAbs().maxCoeff() : 0.0f);
      CHECK(test::max_abs_diff(a.y, b.y) <= 2e-5f * scale);
    }
    // backend::EigenGemm, the backend in one file: the same contract, the same answers.
    const MoELayer<R, Expert<F>, Capacity, SwitchBalanceLoss, backend::EigenGemm> eigen(
        c, store.view(), router, capacity, {}, backend::EigenGemm(2));
    const Output b = eigen.forward(x, {mode, 3});
    CHECK(a.plan.slot_row == b.plan.slot_row);
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

TEST_CASE("packed kernel: several depth blocks, panel blocks and row blocks, skewed routing") {
  // d_model 300 > 256 (two depth blocks in phase 1), d_ff 520 (phase 2 has
  // three depth blocks; 65 gate/up panels = 5 panel blocks, the last partial),
  // 260 tokens top-2 over 3 experts (row blocks of at most 96, uneven).
  compare<2, SwiGLU>({260, 300, 520, 3}, DType::F32, Dropless{}, 901);
  compare<2, SwiGLU>({260, 300, 520, 3}, DType::BF16, Dropless{}, 902);
  compare<1, MLP<GeLU>>({150, 270, 300, 2}, DType::F16, Dropless{}, 903);
}

TEST_CASE("pack: the layer owns its panels, reports their memory, unpacks on request") {
  const LayerConfig c{.d_model = 24, .d_ff = 40, .num_experts = 4, .seed = 1};
  const WeightStore store = WeightStore::random(c, true, DType::BF16, 5);
  const backend::Cpu<> cpu(2);
  auto layer = make_layer<presets::Mixtral>(c, store.view(), cpu);
  CHECK(layer.prepared().bytes() == 0);  // views: nothing copied
  CHECK(!layer.prepared().from.holds_copy);
  const std::size_t bytes = layer.pack_weights();
  // gate/up: ceil(40 / W) panels of 2W bf16 × 24; down: ceil(24 / 2W) panels of 2W × 40.
  constexpr index_t NR = backend::Cpu<>::panel_width, W = NR / 2;
  const index_t per_expert = ((40 + W - 1) / W) * NR * 24 + ((24 + NR - 1) / NR) * NR * 40;
  CHECK(bytes == std::size_t(4 * per_expert * 2));
  CHECK(layer.prepared().bytes() == bytes);
  CHECK(layer.prepared().from.holds_copy);
  // A second layer on the same backend and weights prepares its own: nothing is shared by address.
  const auto other = make_layer<presets::Mixtral>(c, store.view(), cpu);
  CHECK(other.prepared().bytes() == 0);
  const Matrix x = random_normal_matrix(9, c.d_model, 2);
  const Matrix packed_y = layer.forward(x).y;
  CHECK(test::max_abs_diff(packed_y, other.forward(x).y) <= 1e-5f * std::max(1.0f, packed_y.cwiseAbs().maxCoeff()));
  layer.prepare({.pack = false});
  CHECK(layer.prepared().bytes() == 0);
  const Matrix unpacked_y = layer.forward(x).y;
  CHECK(test::max_abs_diff(packed_y, unpacked_y) <= 1e-5f * std::max(1.0f, unpacked_y.cwiseAbs().maxCoeff()));
  CHECK(packed_y != unpacked_y);  // two kernels, two summation orders: it really ran packed
}

TEST_CASE("forward into a reused Workspace equals a fresh forward, for growing and shrinking T") {
  const LayerConfig c{.d_model = 32, .d_ff = 48, .num_experts = 4, .seed = 3};
  const WeightStore store = WeightStore::random(c, true, DType::F32, 8);
  auto layer = make_layer<presets::Mixtral>(c, store.view(), backend::Cpu<>(2));
  layer.pack_weights();
  auto ws = layer.make_workspace();
  for (index_t T : {5, 40, 1, 40, 17}) {
    CAPTURE(T);
    const Matrix x = random_normal_matrix(T, c.d_model, std::uint64_t(T));
    const Output fresh = layer.forward(x);
    const Output& reused = layer.forward(x, ws);
    CHECK(&reused == &ws.out);
    CHECK(reused.y == fresh.y);
    CHECK(reused.plan.slot_row == fresh.plan.slot_row);
    CHECK(ws.backend.input.rows() >= reused.plan.rows());
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
  for (int threads : {1, 2, 3, 7}) {  // packed: a second kernel, equally deterministic
    auto layer = make_layer<P>(c, store.view(), backend::Cpu<>(threads));
    layer.pack_weights();
    outs.push_back(layer.forward(x, {Mode::train, 4}));
  }
  for (std::size_t i = 1; i < outs.size(); ++i) {
    if (i == 4) continue;  // packed vs unpacked differ in rounding; packed compared among itself
    const Output& base = i < 4 ? outs[0] : outs[4];
    CHECK(outs[i].routing.logits == base.routing.logits);
    CHECK(outs[i].routing.expert == base.routing.expert);
    CHECK(outs[i].y == base.y);  // exact equality, not a tolerance
  }
  // A different seed changes the noise and so the output.
  const Output other = make_layer<P>({.d_model = 40, .d_ff = 72, .num_experts = 8, .seed = 78}, store.view())
                           .forward(x, {Mode::train, 4});
  CHECK(other.routing.logits != outs[0].routing.logits);
}

TEST_CASE("EigenGemm trains like the Reference: same gradients within fp32 rounding") {
  const LayerConfig c{.d_model = 24, .d_ff = 40, .num_experts = 4, .seed = 6, .expert_dropout = 0.25f};
  const WeightStore store = WeightStore::random(c, true, DType::F32, 2);
  const auto ref = make_layer<presets::Mixtral, backend::Reference>(c, store.view());
  const auto eigen = make_layer<presets::Mixtral>(c, store.view(), backend::EigenGemm(2));
  const Matrix x = random_normal_matrix(19, c.d_model, 3), dy = random_normal_matrix(19, c.d_model, 4);
  auto ws_ref = ref.make_workspace();
  auto ws_eigen = eigen.make_workspace();
  const Matrix y_ref = ref.forward(x, ws_ref, {Mode::train, 2}).y;
  const Matrix y_eigen = eigen.forward(x, ws_eigen, {Mode::train, 2}).y;
  CHECK(test::max_abs_diff(y_ref, y_eigen) <= 2e-5f * std::max(1.0f, y_ref.cwiseAbs().maxCoeff()));
  const LayerGrads a = ref.backward(x, ws_ref, dy), b = eigen.backward(x, ws_eigen, dy);
  CHECK(test::max_abs_diff(a.x, b.x) <= 1e-4f);
  CHECK(test::max_abs_diff(a.router_gate, b.router_gate) <= 1e-4f);
  for (std::size_t e = 0; e < a.experts.size(); ++e) {
    CHECK(test::max_abs_diff(a.experts[e].gate, b.experts[e].gate) <= 1e-4f);
    CHECK(test::max_abs_diff(a.experts[e].down, b.experts[e].down) <= 1e-4f);
  }
  // bf16 experts are widened once into the prepared weights (a copy, so it records its version).
  const WeightStore bf16 = WeightStore::random({.d_model = 24, .d_ff = 40, .num_experts = 4}, true, DType::BF16, 2);
  const auto widened =
      make_layer<presets::Mixtral>({.d_model = 24, .d_ff = 40, .num_experts = 4}, bf16.view(), backend::EigenGemm(1));
  CHECK(widened.prepared().from.holds_copy);
  CHECK(widened.prepared().bytes() == std::size_t(4 * 3 * 24 * 40 * 4));
  const auto bf16_ref =
      make_layer<presets::Mixtral, backend::Reference>({.d_model = 24, .d_ff = 40, .num_experts = 4}, bf16.view());
  const Matrix yb = bf16_ref.forward(x).y;
  CHECK(test::max_abs_diff(widened.forward(x).y, yb) <= 2e-5f * std::max(1.0f, yb.cwiseAbs().maxCoeff()));
}
