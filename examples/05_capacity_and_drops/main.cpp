// 05: Capacity and dropped tokens.
//
// On accelerators each expert gets a fixed-size buffer: its capacity
// C = max(min, ceil(factor · T · k / E)). Switch uses factor 1.0–1.25 in
// training. Tokens beyond an expert's capacity are dropped: the layer's
// output for them is 0, and the residual connection (x + layer(x)) carries
// them through unchanged. Dropping is not an error, but it must never be
// silent: RoutingStats counts every dropped (token, slot) pair.
//
// Which tokens keep their place? Token order (Switch's cumsum) favours the
// start of the sequence; priority by router score (V-MoE) keeps the tokens
// the router is most sure of.
#include <moe/moe.hpp>

#include "../check.hpp"

int main() {
  const moe::LayerConfig config{.d_model = 16, .d_ff = 32, .num_experts = 4, .seed = 9};
  const moe::WeightStore weights = moe::WeightStore::random(config, false, moe::DType::F32, 2);
  const moe::Matrix x = moe::random_normal_matrix(64, 16, 2);

  using Layer = moe::MoELayer<moe::Router<moe::TopK<1>, moe::NoNoise, moe::SoftmaxTopKRaw>,
                              moe::Expert<moe::MLP<moe::ReLU>>, moe::CapacityFactor, moe::NoLoss>;
  for (moe::Priority order : {moe::Priority::token_order, moe::Priority::router_score}) {
    const Layer layer(config, weights.view(), {},
                      moe::CapacityFactor{.train = 1.0, .eval = 1.0, .min = 0, .order = order});
    const moe::Output out = layer.forward(x);
    const moe::RoutingStats& s = out.stats;
    std::printf("%s priority: capacity %lld, routed per expert",
                order == moe::Priority::token_order ? "token-order" : "router-score", (long long)*s.capacity);
    for (auto n : s.routed_per_expert) std::printf(" %lld", (long long)n);
    std::printf(", kept");
    for (auto n : s.computed_per_expert) std::printf(" %lld", (long long)n);
    std::printf(", dropped %lld (%.1f%%)\n", (long long)s.dropped_slots, 100 * s.dropped_fraction());

    moe::index_t kept = 0;
    bool within = true, zero_when_dropped = true;
    double kept_score = 0;
    for (moe::index_t e = 0; e < 4; ++e) {
      kept += s.computed_per_expert[std::size_t(e)];
      within = within && s.computed_per_expert[std::size_t(e)] <= *s.capacity;
    }
    for (int t = 0; t < 64; ++t) {
      if (out.plan.slot_dropped(t, 0))
        zero_when_dropped = zero_when_dropped && out.y.row(t).isZero(0);
      else
        kept_score += out.routing.weight_at(t, 0);
    }
    std::printf("  mean router probability of kept tokens: %.4f\n", kept_score / double(kept));
    example::expect(*s.capacity == 16, "C = ceil(1.0 · 64 · 1 / 4) = 16");
    example::expect(within, "no expert exceeds its capacity");
    example::expect(kept + s.dropped_slots == 64, "kept + dropped = every token: nothing lost silently");
    example::expect(s.dropped_slots > 0, "an uneven router overflows some expert");
    example::expect(zero_when_dropped, "a dropped token's output is exactly 0 (the residual carries it)");
  }
  return example::verdict();
}
