// expect: COMPILES
// validate() is optional for every policy: one with no parameters to check needs none.
#include <moe/moe.hpp>
struct PlainScoring {
  static constexpr std::string_view name = "plain";
  void probabilities(const float*, moe::index_t, float*) const {}
  void weights(const float*, const float*, const std::int32_t*, int, float*) const {}
  void weights_backward(const float*, const float*, const std::int32_t*, int, const float*, const float*, float*,
                        float*) const {}
  void probabilities_backward(const float*, const float*, const float*, moe::index_t, float*) const {}
};
struct PlainNoise {
  static constexpr bool perturbs_input = false, perturbs_logits = false, needs_weight = false;
};
struct PlainCapacity {
  std::optional<moe::index_t> capacity(moe::PlanShape, moe::Mode) const { return std::nullopt; }
  moe::Priority priority() const { return moe::Priority::token_order; }
};
struct PlainLoss {
  float evaluate(const moe::Routing&, const moe::RoutingPlan&, moe::LossValues&) const { return 0.0f; }
};
static_assert(moe::ScoringPolicy<PlainScoring> && moe::NoisePolicy<PlainNoise> && moe::CapacityPolicy<PlainCapacity> &&
              moe::BalanceLossPolicy<PlainLoss>);
using Layer = moe::MoELayer<moe::Router<moe::TopK<2>, PlainNoise, PlainScoring>, moe::Expert<moe::SwiGLU>,
                            PlainCapacity, PlainLoss, moe::backend::Reference>;
int main() {
  const moe::LayerConfig c{.d_model = 8, .d_ff = 8, .num_experts = 2};
  const moe::WeightStore store = moe::WeightStore::random(c, true, moe::DType::F32, 1);
  const Layer layer(c, store.view());
  (void)layer;
}
