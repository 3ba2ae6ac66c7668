// 09: Writing your own policy.
//
// Every piece of a layer is a C++20 concept; anything that meets it plugs in.
// A per-token selection policy needs three things (moe::TokenSelection, in
// moe/routing/selection.hpp):
//   static constexpr int k;                          how many slots
//   void select(logits, E, idx) const;               the best k ids, best first
//   void thin(ctx, token, idx, weights) const;       may empty slots afterwards
// and may have `void validate() const` (the layer calls it when built).
//
// Here: "top-2 with a threshold", which drops the second expert when its
// combine weight is below a floor (a deterministic cousin of GShard's random
// second expert). It ranks with moe::top_k_indices, the ranking the built-in
// selections use, and leaves the rest to the layer: capacity, losses,
// statistics and every backend work unchanged.
//
// Leave out a member and the static_assert below names it, at the compiler's
// default diagnostic depth: "the required expression 's.thin(ctx, token,
// idx, w)' is invalid" (tests/compile_fail checks this). Assert the concept
// of the form you write, TokenSelection or CallSelection: SelectionPolicy is
// either of them, and a compiler only says that neither holds.
#include <moe/moe.hpp>

#include "../check.hpp"

/// Top-2, but a second expert with weight below `floor` is not used.
struct TopTwoWithFloor {
  static constexpr int k = 2;
  float floor = 0.2f;
  void select(const float* logits, moe::index_t E, std::int32_t* idx) const noexcept {
    moe::top_k_indices(logits, E, k, idx);
  }
  void thin(const moe::RouteContext&, moe::index_t, std::int32_t* idx, float* w) const noexcept {
    if (w[1] < floor) {
      idx[1] = moe::no_expert;  // an empty slot: counted in stats.empty_slots, not a drop
      w[1] = 0.0f;
    }
  }
};
static_assert(moe::TokenSelection<TopTwoWithFloor>);

int main() {
  const moe::LayerConfig config{.d_model = 32, .d_ff = 64, .num_experts = 8, .seed = 1};
  const moe::WeightStore weights = moe::WeightStore::random(config, true, moe::DType::F32, 6);
  const moe::Matrix x = moe::random_normal_matrix(200, 32, 6, 2.0f);

  // The router takes its policies in the template's order (selection, noise,
  // scoring), or any of them by type; those left out are default-constructed.
  using MyRouter = moe::Router<TopTwoWithFloor, moe::NoNoise, moe::SoftmaxThenTopK>;
  const moe::MoELayer<MyRouter, moe::Expert<moe::SwiGLU>, moe::Dropless, moe::SwitchBalanceLoss> layer(
      config, weights.view(), MyRouter(TopTwoWithFloor{.floor = 0.3f}));
  const moe::Output out = layer.forward(x);

  moe::index_t single = 0;
  bool floors_hold = true;
  for (moe::index_t t = 0; t < 200; ++t) {
    if (out.routing.expert_at(t, 1) == moe::no_expert)
      ++single;
    else
      floors_hold = floors_hold && out.routing.weight_at(t, 1) >= 0.3f;
  }
  moe::index_t computed = 0;
  for (auto n : out.stats.computed_per_expert) computed += n;  // tokens per expert; summed: pairs
  std::printf("%lld of 200 tokens used one expert; %lld (token, slot) pairs computed\n", (long long)single,
              (long long)computed);
  example::expect(single > 0 && single < 200, "the floor removes some second experts, not all");
  example::expect(floors_hold, "every kept second expert has weight >= 0.3");
  example::expect(out.stats.empty_slots == single, "empty slots are counted in the stats");
  example::expect(computed == 2 * 200 - single, "and their compute is saved");
  return example::verdict();
}
