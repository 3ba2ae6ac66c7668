// 07: Composing a layer.
//
// MoELayer<Router, Expert, Capacity, Loss, Backend> puts the pieces
// together. Each piece is a policy type you can swap without touching the
// others; a published design is just a choice of policies (a preset).
// Here we build Mixtral's block by hand, check it against the preset, then
// build a layer no paper used (sigmoid top-3 GeGLU experts with capacity and
// a z-loss) from the same pieces, and run both backends.
#include <moe/moe.hpp>

#include "../check.hpp"

int main() {
  const moe::LayerConfig config{.d_model = 48, .d_ff = 96, .num_experts = 8, .seed = 5};
  const moe::WeightStore weights = moe::WeightStore::random(config, true, moe::DType::BF16, 11);
  const moe::Matrix x = moe::random_normal_matrix(40, 48, 3);

  // Mixtral by hand...
  using ByHand = moe::MoELayer<moe::Router<moe::TopK<2>, moe::NoNoise, moe::SoftmaxThenTopK>,  // top-2, renormalised
                               moe::Expert<moe::SwiGLU>,  // w2(silu(w1 x) ⊙ w3 x)
                               moe::Dropless,             // no capacity
                               moe::SwitchBalanceLoss>;   // aux loss, all slots
  const ByHand by_hand(config, weights.view(), {}, {}, moe::SwitchBalanceLoss{.alpha = 0.02f});
  // ...and as the preset.
  const auto preset = moe::make_layer<moe::presets::Mixtral>(config, weights.view());
  const moe::Output a = by_hand.forward(x), b = preset.forward(x);
  example::expect(a.y == b.y, "the hand-built Mixtral block equals presets::Mixtral");
  std::printf("Mixtral block: aux loss %.4f, entropy %.4f nats\n", *a.stats.loss("balance"), a.stats.router_entropy);

  // A new design from the same pieces.
  using Custom = moe::MoELayer<moe::Router<moe::TopK<3>, moe::NoNoise, moe::Sigmoid>, moe::Expert<moe::GeGLU>,
                               moe::CapacityFactor, moe::Losses<moe::SwitchBalanceLoss, moe::RouterZLoss>>;
  const Custom::loss_type losses(moe::SwitchBalanceLoss{.alpha = 0.01f}, moe::RouterZLoss{.beta = 1e-3f});
  const moe::CapacityFactor capacity{.train = 1.0, .eval = 1.0, .min = 2};
  const Custom custom(config, weights.view(), {}, capacity, losses);
  const moe::MoELayer<Custom::router_type, Custom::expert_type, Custom::capacity_type, Custom::loss_type,
                      moe::backend::Reference>
      reference(config, weights.view(), {}, capacity, losses);
  const moe::Output c = custom.forward(x), r = reference.forward(x);
  const float diff = (c.y - r.y).cwiseAbs().maxCoeff();
  std::printf("custom layer: capacity %lld, dropped %lld slots, z-loss %.4f, cpu vs reference %.2e\n",
              (long long)*c.stats.capacity, (long long)c.stats.dropped_slots, *c.stats.loss("z"), diff);
  example::expect(c.routing.expert == r.routing.expert, "both backends make the same routing decisions");
  example::expect(diff < 1e-5f, "and compute the same outputs");
  example::expect(c.stats.loss("z").has_value() && c.stats.loss("balance").has_value(), "both losses are reported");
  return example::verdict();
}
