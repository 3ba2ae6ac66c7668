// One layer, one model, several threads at once: a layer is const in
// forward and each caller brings its own workspace, so concurrent calls must
// give exactly what the same calls give one at a time (and, under the tsan
// preset, no data race). The decoder serialises calls on one Model; several
// threads generating from one Model must each get their own sequence.
#include "test_support.hpp"

#include <moe/models/mixtral.hpp>

#include <filesystem>
#include <thread>
#include <vector>

using namespace moe;
namespace mx = moe::mixtral;

namespace {
constexpr int threads = 4, rounds = 3;

/// Runs every (thread, round) call of `fn` at once, then one at a time; the results must be equal.
template <class Fn>
void same_at_once_as_in_turn(Fn&& fn) {
  using Result = decltype(fn(0, 0));
  std::vector<std::vector<Result>> at_once(threads, std::vector<Result>(rounds));
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      for (int r = 0; r < rounds; ++r) at_once[std::size_t(t)][std::size_t(r)] = fn(t, r);
    });
  for (auto& th : pool) th.join();
  for (int t = 0; t < threads; ++t)
    for (int r = 0; r < rounds; ++r) {
      CAPTURE(t);
      CAPTURE(r);
      CHECK(fn(t, r) == at_once[std::size_t(t)][std::size_t(r)]);
    }
}

template <class B>
void layer_at_once(bool pack, B backend = {}) {
  const LayerConfig c{.d_model = 48, .d_ff = 80, .num_experts = 8, .seed = 5};
  const WeightStore store = WeightStore::random(c, true, DType::BF16, 5);
  auto layer = make_layer<presets::Mixtral, B>(c, store.view(), std::move(backend));
  if (pack) layer.pack_weights();
  std::vector<Matrix> inputs;
  for (int t = 0; t < threads; ++t) inputs.push_back(random_normal_matrix(7 + 13 * t, c.d_model, 100 + t));
  same_at_once_as_in_turn([&](int t, int r) {
    auto ws = layer.make_workspace();  // each call its own workspace
    const Output& out = layer.forward(inputs[std::size_t(t)], ws, {Mode::eval, std::uint64_t(r)});
    return std::vector<float>(out.y.data(), out.y.data() + out.y.size());
  });
}
}  // namespace

TEST_CASE("one layer, several threads, a workspace each: the same as one at a time, bit for bit") {
  SUBCASE("Reference") { layer_at_once<backend::Reference>(false); }
  SUBCASE("Cpu on the views") { layer_at_once<backend::Cpu<>>(false); }
  SUBCASE("Cpu packed") { layer_at_once<backend::Cpu<>>(true); }
  SUBCASE("Cpu with a pool of its own") { layer_at_once(true, backend::Cpu<>(2)); }
  SUBCASE("EigenGemm") { layer_at_once<backend::EigenGemm>(false); }
}

TEST_CASE("one model, several threads generating: each gets the sequence it gets alone") {
  const mx::Model<backend::Cpu<>> model(std::filesystem::path(MOE_TEST_DATA_DIR) / "golden" / "models" /
                                        "mixtral_tiny_f32");
  same_at_once_as_in_turn([&](int t, int r) {
    const std::vector<std::int32_t> prompt = {1, std::int32_t(10 + t), std::int32_t(20 + r)};
    return mx::generate(model, prompt,
                        {.max_new_tokens = 6,
                         .sampling = {.temperature = 0.8f, .seed = std::uint64_t(t)},
                         .stop_tokens = {},
                         .stop_at_eos = false})
        .tokens;
  });
}
